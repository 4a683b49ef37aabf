"""A tiny fake single-user server, and process helpers for the spawning and proxy tests.

Run as a script (what the tests configure as ``singleuser_cmd``), it reads the ``JUPYTERHUB_*``
environment like a real single-user server and behaves according to ``--mode``:

- ``normal``: serves under ``JUPYTERHUB_SERVICE_PREFIX`` at once: ``<prefix>api`` answers 200,
  ``<prefix>env`` returns its environment as JSON, anything else under the prefix a small JSON;
- ``slow``: the same after sleeping ``--delay`` seconds;
- ``crash``: exits with status 3 at once;
- ``never-answers``: listens on its port but never answers a request;
- ``ignore-term``: ``normal``, but ignores SIGTERM (to test the SIGKILL that follows).

Imported, it offers helpers that use only the standard library (the script must start fast and
must not depend on the hub): :func:`command`, :class:`RealProxy` (``python -m proxy`` on
ephemeral ports), :func:`http_get`, :func:`kill_pid`.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent.parent
MODES = ("normal", "slow", "crash", "never-answers", "ignore-term")


def command(mode: str = "normal", delay: float = 2.0) -> tuple[list[str], list[str]]:
    """``(singleuser_cmd, singleuser_args)`` running this script in ``mode``."""
    return [sys.executable, str(Path(__file__).resolve())], ["--mode", mode, "--delay", str(delay)]


# --- the fake server ---------------------------------------------------------------------------
class _Handler(BaseHTTPRequestHandler):
    prefix = "/"

    def do_GET(self) -> None:
        path = self.path.split("?", 1)[0]
        if path == self.prefix + "api":
            self._json(200, {"version": "mock"})
        elif path == self.prefix + "env":
            self._json(200, dict(os.environ))
        elif path.startswith(self.prefix):
            self._json(200, {"mock": True, "path": path, "user": os.environ.get("JUPYTERHUB_USER")})
        else:
            self._json(404, {"path": path})

    def _json(self, status: int, body: Any) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, format: str, *args: Any) -> None:
        sys.stderr.write("mockserver: " + (format % args) + "\n")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--mode", choices=MODES, default="normal")
    parser.add_argument("--delay", type=float, default=2.0)
    args = parser.parse_args(argv)
    url = urlsplit(os.environ["JUPYTERHUB_SERVICE_URL"])
    host, port = url.hostname or "127.0.0.1", url.port or 80
    prefix = os.environ.get("JUPYTERHUB_SERVICE_PREFIX", url.path or "/")
    print(f"mockserver: mode {args.mode} on {host}:{port}{prefix}", file=sys.stderr, flush=True)
    if args.mode == "crash":
        sys.exit(3)
    if args.mode == "slow":
        time.sleep(args.delay)
    if args.mode == "ignore-term":
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
    if args.mode == "never-answers":
        sock = socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
        sock.listen(16)  # connections complete in the kernel; nobody ever reads them
        while True:
            time.sleep(3600)
    _Handler.prefix = prefix
    server = ThreadingHTTPServer((host, port), _Handler)
    server.daemon_threads = True
    server.serve_forever()


# --- helpers for the tests --------------------------------------------------------------------
def http_get(url: str, timeout: float = 5.0) -> tuple[int, bytes]:
    """``(status, body)`` of a GET; status 0 when nothing answered."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp:
            return resp.status, resp.read()
    except urllib.error.HTTPError as e:
        body = e.read()
        e.close()
        return e.code, body
    except (urllib.error.URLError, OSError):
        return 0, b""


def _stat(pid: int) -> tuple[str, int] | None:
    """(state, ppid) of ``pid``, or None."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat[stat.rfind(")") + 2 :].split()
    return fields[0], int(fields[1])


def pid_alive(pid: int) -> bool:
    """Whether ``pid`` exists and is not a zombie."""
    stat = _stat(pid)
    return stat is not None and stat[0] not in "ZX"


def kill_pid(pid: int | None, sig: int = signal.SIGKILL) -> None:
    """Kill one process (and its group, if it leads one) that a test started; reap if a child."""
    if not pid:
        return
    for kill in (os.killpg, os.kill):
        with contextlib.suppress(OSError):
            kill(pid, sig)
    # Until it is gone, or a zombie someone else must collect (a zombie child of ours is
    # reapable only once all its threads have exited: keep trying).
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        with contextlib.suppress(ChildProcessError):
            os.waitpid(pid, os.WNOHANG)
        stat = _stat(pid)
        if stat is None or (stat[0] in "ZX" and stat[1] != os.getpid()):
            return
        time.sleep(0.02)


LISTENING = re.compile(r"himalia-proxy: listening on (\S+?),? api on (\S+)")


class RealProxy:
    """``python -m proxy`` on ephemeral ports with a random token; :meth:`stop` kills its PID."""

    def __init__(self, workdir: Path, token: str, default_target: str = "") -> None:
        self.workdir = workdir
        self.token = token
        self.default_target = default_target
        self.proc: subprocess.Popen[bytes] | None = None
        self.public_url = ""
        self.api_url = ""

    def start(self, port: int = 0, api_port: int = 0, timeout: float = 15.0) -> RealProxy:
        self.workdir.mkdir(parents=True, exist_ok=True)
        log = self.workdir / "proxy-test.log"
        offset = log.stat().st_size if log.exists() else 0
        cmd = [sys.executable, "-m", "proxy", "--ip", "127.0.0.1", "--port", str(port),
               "--api-ip", "127.0.0.1", "--api-port", str(api_port),
               "--routes-file", str(self.workdir / "routes.jsonl")]
        if self.default_target:
            cmd += ["--default-target", self.default_target]
        env = {**os.environ, "CONFIGPROXY_AUTH_TOKEN": self.token}
        with log.open("ab") as out:
            self.proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=out, stderr=out,
                                         stdin=subprocess.DEVNULL, start_new_session=True)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with log.open("rb") as f:
                f.seek(offset)
                text = f.read().decode(errors="replace")
            found = LISTENING.search(text)
            if found:
                self.public_url, self.api_url = found.group(1), found.group(2)
                return self
            if self.proc.poll() is not None:
                raise RuntimeError(f"proxy exited: {text[-2000:]}")
            time.sleep(0.02)
        self.stop()
        raise RuntimeError("proxy did not start listening")

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc else None

    def stop(self) -> None:
        if self.proc is not None:
            kill_pid(self.proc.pid)
            self.proc.wait(timeout=5)
            self.proc = None


if __name__ == "__main__":
    main()
