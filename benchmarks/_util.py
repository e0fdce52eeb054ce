"""Shared helpers for the benchmarks: scratch folder, child processes with exact peak RSS, ports, health
checks, cached fixtures, and the one-JSON-line output convention.

Every ``bench_*.py`` prints exactly one JSON line on stdout; progress and notes go to stderr.
"""

from __future__ import annotations

import json
import os
import platform
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
BENCH = Path(os.environ.get("GIGAVISION_BENCH_DIR", ROOT / ".bench"))
PY = sys.executable
VENV_BIN = Path(sys.executable).parent
GIGAVISION = str(VENV_BIN / "gigavision") if (VENV_BIN / "gigavision").exists() else "gigavision"
LOOPBACK = "127.0.0.1"  # the only address any benchmark ever talks to


def log(*parts: object) -> None:
    print("[bench]", *parts, file=sys.stderr, flush=True)


def emit(result: dict[str, Any]) -> None:
    """The benchmark's single line of output."""
    print(json.dumps(result, sort_keys=False, default=str), flush=True)


def quick_requested(argv: list[str] | None = None) -> bool:
    argv = sys.argv[1:] if argv is None else argv
    return "--quick" in argv or os.environ.get("BENCH_QUICK", "") not in ("", "0", "false", "no")


def machine() -> dict[str, Any]:
    info: dict[str, Any] = {
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
        "platform": platform.platform(),
    }
    try:
        import psutil

        info["ram_gb"] = round(psutil.virtual_memory().total / 1024**3, 1)
    except ImportError:
        pass
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                info["cpu"] = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return info


def require_tools(*names: str) -> None:
    missing = [n for n in names if shutil.which(n) is None]
    if missing:
        sys.exit(f"missing {', '.join(missing)}: run `make bench-tools` (Debian: libvips-tools nginx-light wrk)")


def vips_cli_version() -> str:
    out = subprocess.run(["vips", "--version"], capture_output=True, text=True, check=False)
    return out.stdout.strip() or out.stderr.strip()


def pyvips_version() -> str:
    import pyvips

    return f"{pyvips.version(0)}.{pyvips.version(1)}.{pyvips.version(2)} (pyvips {pyvips.__version__})"


@dataclass
class ChildResult:
    cmd: list[str]
    returncode: int
    wall_s: float
    user_s: float
    sys_s: float
    peak_rss_mb: float  # the child's high-water mark (and any of its waited-for descendants), from wait4()
    stdout: str
    stderr: str

    def check(self) -> ChildResult:
        if self.returncode != 0:
            sys.stderr.write(self.stderr[-4000:])
            raise SystemExit(f"command failed ({self.returncode}): {' '.join(self.cmd)}")
        return self


def run_child(cmd: list[str], *, env: dict[str, str] | None = None, cwd: Path | None = None) -> ChildResult:
    """Run ``cmd`` to completion; wall time and the kernel's exact peak RSS of that child (``wait4``).

    ``wait4`` returns the rusage of that one child (plus its own waited-for children), so the peak is the
    child's, never the benchmark driver's nor an earlier child's, unlike ``getrusage(RUSAGE_CHILDREN)``.
    stdout/stderr go to temporary files, so a chatty child never blocks on a full pipe.
    """
    BENCH.mkdir(parents=True, exist_ok=True)
    out_path, err_path = BENCH / f".child-{os.getpid()}.out", BENCH / f".child-{os.getpid()}.err"
    with out_path.open("wb") as out, err_path.open("wb") as err:
        t0 = time.perf_counter()
        proc = subprocess.Popen(cmd, stdout=out, stderr=err, env=env, cwd=cwd)
        _, status, usage = os.wait4(proc.pid, 0)
        wall = time.perf_counter() - t0
    proc.returncode = os.waitstatus_to_exitcode(status)
    stdout = out_path.read_text(errors="replace")
    stderr = err_path.read_text(errors="replace")
    out_path.unlink(missing_ok=True)
    err_path.unlink(missing_ok=True)
    return ChildResult(
        cmd=cmd,
        returncode=proc.returncode,
        wall_s=wall,
        user_s=usage.ru_utime,
        sys_s=usage.ru_stime,
        peak_rss_mb=usage.ru_maxrss / 1024.0,
        stdout=stdout,
        stderr=stderr,
    )


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((LOOPBACK, 0))
        return int(s.getsockname()[1])


def http_get(path: str, port: int, timeout: float = 10.0) -> tuple[int, dict[str, str], bytes]:
    """GET http://127.0.0.1:port/path; (status, lower-cased headers, body). Non-2xx is returned, not raised."""
    url = f"http://{LOOPBACK}:{port}{path}"
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp:  # only ever loopback
            return resp.status, {k.lower(): v for k, v in resp.headers.items()}, resp.read()
    except urllib.error.HTTPError as exc:
        return exc.code, {k.lower(): v for k, v in exc.headers.items()}, exc.read()


def wait_http(path: str, port: int, proc: subprocess.Popen[Any] | None = None, timeout: float = 60.0) -> None:
    """Wait until GET ``path`` answers 200 (or fail when ``proc`` died first)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise SystemExit(f"server exited with {proc.returncode} before answering {path}")
        try:
            if http_get(path, port, timeout=2.0)[0] == 200:
                return
        except OSError:
            pass
        time.sleep(0.1)
    raise SystemExit(f"no answer on 127.0.0.1:{port}{path} after {timeout:.0f}s")


def stop(proc: subprocess.Popen[Any], timeout: float = 10.0) -> None:
    """Stop a child we started (SIGTERM, then SIGKILL), by its own handle only."""
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def warm_page_cache(path: Path) -> None:
    """Read a file (or every file under a folder) once, so every contender starts from a warm page cache."""
    files = [path] if path.is_file() else [p for p in path.rglob("*") if p.is_file()]
    for f in files:
        with f.open("rb") as fh:
            while fh.read(8 << 20):
                pass


def slide_path(width: int, height: int) -> Path:
    """The ``make_slide`` fixture (tiled pyramidal JPEG TIFF of real IHC texture), built once and cached."""
    from gigavision.demo import make_slide

    out = BENCH / f"slide_{width}x{height}.tif"
    if not out.exists():
        log(f"building {width}x{height} slide with gigavision.demo.make_slide (once; cached in {BENCH}) ...")
        t0 = time.perf_counter()
        make_slide(out, width, height)
        log(f"  slide ready in {time.perf_counter() - t0:.0f}s ({out.stat().st_size / 1e6:.0f} MB)")
    return out


def percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    s = sorted(values)
    k = (len(s) - 1) * q / 100.0
    lo, hi = int(k), min(int(k) + 1, len(s) - 1)
    return s[lo] + (s[hi] - s[lo]) * (k - lo)


def rnd(x: float, digits: int = 3) -> float:
    return round(float(x), digits)
