"""Run the fenced command blocks of README.md and docs/*.md as tutorials (tests/test_docs.py).

Every ```bash, ```console and ```python block of one Markdown file runs in order, in one shell state (the
variables a block exports and the folder it `cd`s to carry over to the next block), against one temporary
workspace: ``HOME`` is a temporary folder (so ``~/scans`` works), ``GIGAVISION_WORKSPACE`` is set, and the
project's virtual environment is first on ``PATH``. The files the docs name are prepared by ``prepare``.

Each command of a bash block runs as written, except for what cannot run in a test, which is still checked:

- ``gigavision serve …`` starts in the background on a free port and must answer ``/healthz``;
- ``gigavision worker …`` starts in the background and must still be running after a few seconds;
- ``make TARGET…`` must name existing targets (``make -n``), from the repository root;
- ``pip install …`` is not run (it would change the environment under test); the line is reported;
- ``localhost:8000`` / ``127.0.0.1:8000`` in a command (curl) is a ``gigavision serve`` the harness starts on a
  free port, for the workspace the tutorial's shell has exported, before the block runs.

A here-document (``cat > recipe.toml <<'EOF'`` … ``EOF``) is one command with its lines.
A block opts out only with ``<!-- doctest: skip — REASON -->`` on the line right before its fence.
A failing command is reported with the file, its line, the command and its stderr.
"""

from __future__ import annotations

import contextlib
import os
import re
import shlex
import shutil
import signal
import socket
import subprocess
import textwrap
import time
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
VENV_BIN = REPO / ".venv" / "bin"
LANGUAGES = ("bash", "console", "python")
FENCE = re.compile(r"^(?P<indent> *)```(?P<lang>[A-Za-z0-9_+-]*)\s*$")
SKIP = re.compile(r"^\s*<!--\s*doctest:\s*skip\b\s*(?:[—–:-]+\s*)?(?P<reason>.*?)\s*-->\s*$")
DOCTEST_COMMENT = re.compile(r"^\s*<!--\s*doctest:")
LOCAL_SERVER = re.compile(r"\b(localhost|127\.0\.0\.1):8000\b")
HEREDOC = re.compile(r"<<-?\s*(?P<q>['\"]?)(?P<word>[A-Za-z_][A-Za-z0-9_]*)(?P=q)")


@dataclass
class Command:
    line: int  # 1-based line in the Markdown file
    text: str  # as written (continuation lines joined with their backslash-newlines)


@dataclass
class Block:
    path: Path
    line: int  # 1-based line of the opening fence
    lang: str
    body: str
    skip: str | None = None  # the reason given in <!-- doctest: skip — REASON -->

    @property
    def where(self) -> str:
        return f"{self.path.relative_to(REPO)}:{self.line}"

    def commands(self) -> list[Command]:
        """The commands of a bash/console block (a console block's commands are its ``$ `` lines)."""
        out: list[Command] = []
        lines = self.body.splitlines()
        i = 0
        while i < len(lines):
            line, start = lines[i], i
            i += 1
            if self.lang == "console":
                if not line.startswith("$ "):
                    continue
                line = line[2:]
            if not line.strip() or line.lstrip().startswith("#"):
                continue
            text = line
            while text.endswith("\\") and i < len(lines):
                text += "\n" + lines[i]
                i += 1
            heredoc = HEREDOC.search(text)
            if heredoc:  # `cat > recipe.toml <<'EOF'`: the lines up to the delimiter belong to the command
                while i < len(lines):
                    body = lines[i][2:] if self.lang == "console" and lines[i].startswith("> ") else lines[i]
                    text += "\n" + body
                    i += 1
                    if body.strip() == heredoc["word"]:
                        break
            out.append(Command(self.line + 1 + start, text))
        return out


@dataclass
class Failure:
    block: Block
    line: int
    command: str
    returncode: int
    stderr: str

    def __str__(self) -> str:
        where = f"{self.block.path.relative_to(REPO)}:{self.line}"
        err = self.stderr.strip()[-3000:] or "(no stderr)"
        return f"{where}: exit {self.returncode}\n  $ {self.command}\n" + textwrap.indent(err, "  | ")


def parse_blocks(path: Path) -> list[Block]:
    """The fenced blocks of ``path`` in the runnable languages, with their skip reasons."""
    lines = path.read_text(encoding="utf-8").splitlines()
    blocks: list[Block] = []
    i = 0
    while i < len(lines):
        m = FENCE.match(lines[i])
        if not m:
            i += 1
            continue
        indent, lang, start = m["indent"], m["lang"], i
        body: list[str] = []
        i += 1
        while i < len(lines) and not re.match(rf"^ {{0,{len(indent)}}}```\s*$", lines[i]):
            body.append(lines[i][len(indent) :] if lines[i].startswith(indent) else lines[i].lstrip())
            i += 1
        i += 1
        if lang not in LANGUAGES:
            continue
        prev = lines[start - 1] if start else ""
        skip = None
        if DOCTEST_COMMENT.match(prev):
            sm = SKIP.match(prev)
            if not sm:
                raise ValueError(f"{path}:{start}: unknown doctest comment {prev.strip()!r}")
            skip = sm["reason"]
        blocks.append(Block(path, start + 1, lang, "\n".join(body) + "\n", skip))
    return blocks


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


# The shell functions the rewritten commands call. $__DOC is the harness's state folder.
# With a fork server (tests/gvfork.py) `gigavision` is a shell function that hands the command to it; `setsid
# gigavision serve …` and anything else that execs the program by name gets the real one.
PRELUDE = r"""
if [ -n "${__DOC_GVFORK:-}" ] && [ -S "$__DOC_GVFORK" ]; then
  gigavision() { "$__DOC_PY" -S "$__DOC_REPO/tests/gvfork.py" "$__DOC_GVFORK" "$@"; }
fi
__doc_wait_http() {  # URL PID LOG: wait until URL answers 200, or fail if PID died
  local url=$1 pid=$2 log=$3 i
  for i in $(seq 1 150); do
    if python -c "import sys,urllib.request; urllib.request.urlopen(sys.argv[1], timeout=2)" "$url" 2>/dev/null; then
      return 0
    fi
    if ! kill -0 "$pid" 2>/dev/null; then
      echo "the server exited before answering $url:" >&2; tail -n 30 "$log" >&2; return 1
    fi
    sleep 0.2
  done
  echo "no answer from $url after 30 s:" >&2; tail -n 30 "$log" >&2; return 1
}
__doc_stop() {  # PID: stop a process group started with setsid
  kill -TERM -- "-$1" 2>/dev/null; for _ in $(seq 1 50); do kill -0 "$1" 2>/dev/null || return 0; sleep 0.1; done
  kill -KILL -- "-$1" 2>/dev/null; return 0
}
__doc_server() {  # gigavision [opts] serve ARGS: serve on a free port, fetch /healthz, stop
  local port; port=$(python -c "import socket; s=socket.socket(); s.bind(('127.0.0.1',0)); print(s.getsockname()[1])")
  setsid "$@" --port "$port" >"$__DOC/server.log" 2>&1 &
  local pid=$!
  __doc_wait_http "http://127.0.0.1:$port/healthz" "$pid" "$__DOC/server.log"; local rc=$?
  __doc_stop "$pid"; return $rc
}
__doc_worker() {  # gigavision [opts] worker ARGS: must still be running after 3 s
  setsid "$@" >"$__DOC/worker.log" 2>&1 &
  local pid=$!
  sleep 3
  if ! kill -0 "$pid" 2>/dev/null; then echo "the worker exited:" >&2; tail -n 30 "$__DOC/worker.log" >&2; return 1; fi
  __doc_stop "$pid"
}
__doc_make() {  # make TARGET...: the targets must exist (dry run from the repository root)
  make -n -C "$__DOC_REPO" "$@" >/dev/null
}
__doc_not_run() {  # REASON: a line the harness does not run
  echo "not run: $1" >>"$__DOC/not_run.log"
}
"""


def needs_server(command: str) -> bool:
    """A command (not serve itself) that talks to localhost:8000 outside its comments."""
    code = "\n".join(re.sub(r"(^|\s)#.*$", "", line) for line in command.splitlines())
    return code.split()[:1] not in (["gigavision"], ["make"]) and bool(LOCAL_SERVER.search(code))


def rewrite(command: str, port: int) -> str:
    """The shell text that runs (or checks) one documented command."""
    try:
        words = shlex.split(command, comments=True)
    except ValueError:
        words = command.split()
    if words[:1] == ["make"]:
        return "__doc_make " + command[len("make") :]
    if words[:2] == ["pip", "install"] or words[:3] == ["python", "-m", "pip"] or ".venv/bin/pip" in words[:1]:
        return f"__doc_not_run {shlex.quote(command)}"
    if words[:1] == ["gigavision"]:
        after = zip(words[1:], words, strict=False)
        verb = next((w for w, prev in after if not w.startswith("-") and prev not in ("-w", "--workspace")), "")
        if verb == "serve":
            return "__doc_server " + command
        if verb == "worker":
            return "__doc_worker " + command
    if needs_server(command):
        return LOCAL_SERVER.sub(f"127.0.0.1:{port}", command)
    return command


class Tutorial:
    """One Markdown file's blocks, run in order in one temporary home, workspace and shell state."""

    def __init__(
        self,
        path: Path,
        tmp: Path,
        prepare: Callable[[Path, Path], None] | None = None,
        fork_server: Path | None = None,
    ) -> None:
        self.path = path
        self.fork_server = fork_server  # the socket of a tests/gvfork.py server running `gigavision` commands
        self.blocks = parse_blocks(path)
        self.home = tmp / "home"
        self.cwd = tmp / "work"  # where the tutorial's commands run (a project folder with .venv)
        self.state = tmp / "state"
        self.workspace = self.home / "workspace"
        for d in (self.home, self.cwd, self.state):
            d.mkdir(parents=True, exist_ok=True)
        (self.cwd / ".venv").symlink_to(REPO / ".venv")
        self.port = free_port()
        self.env = self._env()
        (self.state / "cwd").write_text(str(self.cwd))
        (self.state / "env.sh").write_text("")
        if prepare is not None:
            prepare(self.home, self.cwd)
        self.not_run: list[str] = []
        self.server: subprocess.Popen[bytes] | None = None
        self.seconds: dict[int, float] = {}  # block line -> seconds

    def _env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("GIGAVISION_") and k != "VIRTUAL_ENV"}
        env.update(
            HOME=str(self.home),
            PATH=f"{VENV_BIN}{os.pathsep}{env.get('PATH', '')}",
            GIGAVISION_WORKSPACE=str(self.workspace),
            PYTHONUNBUFFERED="1",
            COLUMNS="200",
            NO_COLOR="1",
            __DOC=str(self.state),
            __DOC_REPO=str(REPO),
            __DOC_PORT=str(self.port),
            __DOC_PY=str(VENV_BIN / "python"),
        )
        if self.fork_server is not None:
            env["__DOC_GVFORK"] = str(self.fork_server)
        return env

    def script(self, block: Block) -> tuple[str, list[Command]]:
        """The bash script of one block: each command's stderr captured, its line recorded before it runs."""
        st = shlex.quote(str(self.state))
        parts = [
            "set -o pipefail",
            PRELUDE,
            f"source {st}/env.sh",
            f'cd "$(cat {st}/cwd)"',
            f"trap 'export -p >{st}/env.sh; pwd >{st}/cwd' EXIT",
        ]
        if block.lang == "python":
            commands = [Command(block.line + 1, "python - <<'__DOC_PYTHON__'\n" + block.body + "__DOC_PYTHON__")]
        else:
            commands = block.commands()
        for n, cmd in enumerate(commands):
            parts.append(f"echo {n} >{st}/current")
            parts.append(f"{{ {rewrite(cmd.text, self.port)}\n}} 2> >(tee {st}/stderr >&2)")
            parts.append("__rc=$?; sleep 0.05; [ $__rc -eq 0 ] || exit $__rc")
        return "\n".join(parts) + "\n", commands

    def shell_env(self) -> dict[str, str]:
        """The environment the tutorial's shell has now (variables exported by earlier blocks included)."""
        out = subprocess.run(
            ["bash", "-c", f"source {shlex.quote(str(self.state))}/env.sh; env -0"],
            env=self.env,
            capture_output=True,
            check=True,
        ).stdout.decode()
        return dict(item.split("=", 1) for item in out.split("\0") if "=" in item)

    def start_server(self) -> str | None:
        """Start ``gigavision serve`` on ``self.port`` (once per file); an error message if it does not answer."""
        if self.server is not None:
            return None
        log = (self.state / "local_server.log").open("wb")
        self.server = subprocess.Popen(
            ["gigavision", "serve", "--port", str(self.port)],
            env=self.shell_env(),
            cwd=self.cwd,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{self.port}/healthz", timeout=2)
                return None
            except OSError:
                if self.server.poll() is not None:
                    break
                time.sleep(0.2)
        return "gigavision serve did not answer /healthz:\n" + (self.state / "local_server.log").read_text()[-3000:]

    def run_block(self, block: Block, timeout: float = 300) -> Failure | None:
        text, commands = self.script(block)
        if any(needs_server(c.text) for c in commands):
            problem = self.start_server()
            if problem:
                return Failure(block, block.line, "gigavision serve (for the curl examples)", -1, problem)
        (self.state / "current").unlink(missing_ok=True)
        (self.state / "stderr").write_text("")
        try:
            proc = subprocess.run(["bash", "-c", text], env=self.env, capture_output=True, text=True, timeout=timeout)
        except subprocess.TimeoutExpired:
            return Failure(block, block.line, "(the whole block)", -1, f"timed out after {timeout} s")
        if proc.returncode == 0:
            return None
        current = self.state / "current"
        if current.exists() and commands:
            cmd = commands[int(current.read_text().strip() or 0)]
            err = (self.state / "stderr").read_text(errors="replace")
            return Failure(block, cmd.line, cmd.text, proc.returncode, err or proc.stderr)
        return Failure(block, block.line, "(block set-up)", proc.returncode, proc.stderr)

    def run(self) -> list[Failure]:
        """Run every block that is not skipped, in order; the failures (all blocks run even after one fails)."""
        failures = []
        try:
            for block in self.blocks:
                if block.skip is None:
                    t0 = time.monotonic()
                    failure = self.run_block(block)
                    self.seconds[block.line] = time.monotonic() - t0
                    if failure is not None:
                        failures.append(failure)
        finally:
            self.close()
        log = self.state / "not_run.log"
        self.not_run = log.read_text().splitlines() if log.exists() else []
        return failures

    def close(self) -> None:
        if self.server is not None and self.server.poll() is None:
            os.killpg(self.server.pid, signal.SIGTERM)
            try:
                self.server.wait(10)
            except subprocess.TimeoutExpired:
                os.killpg(self.server.pid, signal.SIGKILL)
                self.server.wait()


@contextmanager
def fork_server(folder: Path) -> Iterator[Path | None]:
    """A tests/gvfork.py server (CLI, torch and Lightning imported once) on ``folder/gv.sock`` while the block
    runs; None (the real program runs) when it does not come up in 60 s or GIGAVISION_DOCTEST_FORK=0."""
    if os.environ.get("GIGAVISION_DOCTEST_FORK", "1") == "0":
        yield None
        return
    sock = folder / "gv.sock"
    log = (folder / "gvfork.log").open("wb")
    env = {k: v for k, v in os.environ.items() if k != "VIRTUAL_ENV"}
    env.update(PYTHONUNBUFFERED="1", COLUMNS="200", NO_COLOR="1")
    proc = subprocess.Popen(
        [str(VENV_BIN / "python"), str(REPO / "tests" / "gvfork.py"), "--serve", str(sock)],
        cwd=REPO,
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        deadline = time.monotonic() + 60
        while not sock.exists() and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.1)
        yield sock if sock.exists() else None
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        log.close()


def copy_files(files: dict[str, Path], folder: Path) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for name, src in files.items():
        shutil.copyfile(src, folder / name)
