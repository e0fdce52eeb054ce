"""A fork server for the doc tests' ``gigavision`` commands (tests/docblocks.py).

A doc file runs dozens of ``gigavision`` commands; each would spend 1–9 s importing the CLI, torch and
Lightning before doing a fraction of a second of work. ``serve(path)`` imports them once, then listens on
the Unix socket ``path``; the client (``python -S tests/gvfork.py SOCKET ARG…``, what the tutorial shell's
``gigavision`` function runs) sends its argv, working folder and environment as JSON with its stdin, stdout
and stderr as file descriptors (SCM_RIGHTS). The server forks a child that takes those descriptors, folder
and environment and runs ``gigavision.cli.main:entry``; the client gets the child's pid (it forwards
SIGINT/SIGTERM/SIGHUP to it) and then its exit status, which it exits with. A client that goes away kills
its child. When the socket does not answer, the client runs the real ``gigavision`` instead, so a broken
server makes the tests slower, never different.

The server is single-threaded (a selector over the listening socket, the clients and a SIGCHLD wake-up
pipe), so forking it is safe; the preloaded modules start no threads (checked at start).
"""

from __future__ import annotations

import array
import contextlib
import json
import os
import signal
import socket
import struct
import sys

PRELOAD = (
    "gigavision.cli.main",
    "torch",
    "lightning",
    "gigavision.train.trainer",
    "gigavision.train.evaluate",
    "gigavision.train.sweep",
    "gigavision.models.predict",
    "gigavision.infer.engine",
    "gigavision.infer.run",
    "optuna",
    "onnx",
    "sklearn.metrics",
)
STATUS = struct.Struct("!q")  # the child's pid, then its wait status


# -- client (runs with `python -S`: stdlib only, a few milliseconds) ----------------------------------------
def client(sock_path: str, args: list[str]) -> None:
    try:
        conn = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        conn.connect(sock_path)
    except OSError:
        _exec_real(args)
    payload = json.dumps({"argv": ["gigavision", *args], "cwd": os.getcwd(), "env": dict(os.environ)}).encode()
    fds = array.array("i", [0, 1, 2])
    conn.sendmsg([struct.pack("!I", len(payload)), payload], [(socket.SOL_SOCKET, socket.SCM_RIGHTS, fds)])
    pid = _read_int(conn)
    if pid is None:
        _exec_real(args)

    def forward(signum: int, _frame: object) -> None:
        with contextlib.suppress(OSError):
            os.kill(pid, signum)

    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, forward)
    status = _read_int(conn)
    if status is None:  # the server died: the child was killed with it
        sys.exit(1)
    if os.WIFSIGNALED(status):
        signal.signal(os.WTERMSIG(status), signal.SIG_DFL)
        os.kill(os.getpid(), os.WTERMSIG(status))
    sys.exit(os.waitstatus_to_exitcode(status))


def _exec_real(args: list[str]) -> None:
    real = os.path.join(os.path.dirname(sys.executable), "gigavision")
    os.execv(real, [real, *args])


def _read_int(conn: socket.socket) -> int | None:
    data = b""
    while len(data) < STATUS.size:
        try:
            chunk = conn.recv(STATUS.size - len(data))
        except InterruptedError:
            continue
        if not chunk:
            return None
        data += chunk
    return int(STATUS.unpack(data)[0])


# -- server ---------------------------------------------------------------------------------------------------
def serve(sock_path: str) -> None:
    import importlib
    import selectors
    import threading

    for name in PRELOAD:
        with contextlib.suppress(ImportError):
            importlib.import_module(name)
    if threading.active_count() != 1 or len(os.listdir("/proc/self/task")) != 1:
        sys.exit(f"gvfork: preloading started threads ({threading.enumerate()}); not serving")
    sys.stdout.flush()
    sys.stderr.flush()

    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(sock_path + ".tmp")
    os.rename(sock_path + ".tmp", sock_path)  # appears ready, never half-made
    listener.listen(64)
    wake_r, wake_w = os.pipe()
    os.set_blocking(wake_w, False)
    signal.set_wakeup_fd(wake_w)
    signal.signal(signal.SIGCHLD, lambda *_: None)
    sel = selectors.DefaultSelector()
    sel.register(listener, selectors.EVENT_READ, "accept")
    sel.register(wake_r, selectors.EVENT_READ, "child")
    children: dict[int, socket.socket] = {}  # pid -> its client's connection

    while True:
        for key, _ in sel.select():
            if key.data == "accept":
                conn, _ = listener.accept()
                pid = _start(conn, [listener, *children.values()], [wake_r, wake_w])
                if pid is None:
                    conn.close()
                    continue
                children[pid] = conn
                sel.register(conn, selectors.EVENT_READ, pid)
            elif key.data == "child":
                os.read(wake_r, 4096)
                while children:
                    pid, status = os.waitpid(-1, os.WNOHANG)
                    if pid == 0:
                        break
                    conn = children.pop(pid, None)
                    if conn is not None:
                        if conn.fileno() in sel.get_map():
                            sel.unregister(conn)
                        with contextlib.suppress(OSError):
                            conn.sendall(STATUS.pack(status))
                        conn.close()
            else:  # a client's connection is readable: the client went away; its child goes too
                sel.unregister(key.fileobj)
                with contextlib.suppress(OSError):
                    os.kill(key.data, signal.SIGKILL)


def _start(conn: socket.socket, sockets: list[socket.socket], pipe: list[int]) -> int | None:
    """Receive one request and fork its child; the child's pid (sent to the client too)."""
    header, fds = _recv_fds(conn, 4)
    if len(header) < 4 or len(fds) != 3:
        for fd in fds:
            os.close(fd)
        return None
    (size,) = struct.unpack("!I", header)
    payload = b""
    while len(payload) < size:
        chunk = conn.recv(size - len(payload))
        if not chunk:
            return None
        payload += chunk
    request = json.loads(payload)
    pid = os.fork()
    if pid == 0:
        _child(request, fds, [conn, *sockets], pipe)
    for fd in fds:
        os.close(fd)
    conn.sendall(STATUS.pack(pid))
    return pid


def _recv_fds(conn: socket.socket, size: int) -> tuple[bytes, list[int]]:
    fds = array.array("i")
    msg, ancdata, _flags, _addr = conn.recvmsg(size, socket.CMSG_LEN(3 * fds.itemsize))
    for level, kind, data in ancdata:
        if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
            fds.frombytes(data[: len(data) - (len(data) % fds.itemsize)])
    return msg, list(fds)


def _child(request: dict[str, object], fds: list[int], sockets: list[socket.socket], pipe: list[int]) -> None:
    code = 1
    try:
        signal.set_wakeup_fd(-1)
        for sig in (signal.SIGCHLD, signal.SIGTERM, signal.SIGHUP, signal.SIGPIPE):
            signal.signal(sig, signal.SIG_DFL)
        signal.signal(signal.SIGINT, signal.default_int_handler)
        for sock in sockets:  # the listener and the clients' connections are the server's
            sock.close()
        for fd in pipe:
            os.close(fd)
        for target, fd in enumerate(fds):
            os.dup2(fd, target)
            os.close(fd)
        os.chdir(str(request["cwd"]))
        os.environ.clear()
        os.environ.update(request["env"])  # type: ignore[arg-type]
        sys.argv = list(request["argv"])  # type: ignore[call-overload]
        from gigavision.cli.main import entry

        try:
            entry()
            code = 0
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
            if not isinstance(exc.code, int | None):
                print(exc.code, file=sys.stderr)
        except KeyboardInterrupt:
            code = 130
        except BaseException:
            import traceback

            traceback.print_exc()
            code = 1
        import atexit

        atexit._run_exitfuncs()
    finally:
        for stream in (sys.stdout, sys.stderr):
            with contextlib.suppress(Exception):
                stream.flush()
        os._exit(code)


if __name__ == "__main__":
    if sys.argv[1:2] == ["--serve"]:
        serve(sys.argv[2])
    else:
        client(sys.argv[1], sys.argv[2:])
