"""``python -m singleuser.batch CMD...``: start a single-user server inside a batch job.

A batch job's port is chosen on its compute node, not by the hub. This wrapper, run by the job's
script: binds a free port on the address of ``JUPYTERHUB_SERVICE_URL`` (``0.0.0.0`` by default,
so the hub can reach the node), reports it to the hub with the server's own token —
``POST $HIMALIA_BATCH_REPORT_URL`` (``<api>/batchspawner``) with ``{"port": N}``, the same call
batchspawner's ``batchspawner-singleuser`` makes — retrying while the hub is away (it may be
restarting), then puts the port into ``JUPYTERHUB_SERVICE_URL`` and execs ``CMD``. Standard
library only: it runs before anything else on the node.
"""

from __future__ import annotations

import json
import os
import socket
import sys
import time
import urllib.error
import urllib.request
from urllib.parse import urlsplit, urlunsplit

#: How long to keep trying to reach the hub, in seconds.
REPORT_PATIENCE = 300.0


def free_port(ip: str) -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((ip, 0))
        port: int = sock.getsockname()[1]
        return port


def with_port(service_url: str, port: int) -> str:
    parts = urlsplit(service_url)
    host = parts.hostname or "0.0.0.0"
    return urlunsplit((parts.scheme, f"{host}:{port}", parts.path, "", ""))


def report(url: str, token: str, port: int, patience: float = REPORT_PATIENCE) -> None:
    """POST the port until the hub takes it (2xx); a 4xx other than 429 is final."""
    if urlsplit(url).scheme not in ("http", "https"):
        raise SystemExit(f"singleuser.batch: the report URL must be http(s), got {url!r}")
    body = json.dumps({"port": port, "host": socket.gethostname()}).encode()
    deadline = time.monotonic() + patience
    delay = 0.2
    while True:
        headers = {"Authorization": f"token {token}", "Content-Type": "application/json"}
        req = urllib.request.Request(url, data=body, method="POST", headers=headers)  # noqa: S310
        try:
            with urllib.request.urlopen(req, timeout=10) as answer:  # noqa: S310
                answer.read()
                return
        except urllib.error.HTTPError as e:
            if 400 <= e.code < 500 and e.code != 429:
                raise SystemExit(f"singleuser.batch: the hub refused the port report "
                                 f"(HTTP {e.code})") from None
            problem = f"HTTP {e.code}"
        except OSError as e:
            problem = str(e)
        if time.monotonic() > deadline:
            raise SystemExit(f"singleuser.batch: cannot reach the hub at {url}: {problem}")
        print(f"singleuser.batch: hub not reachable ({problem}); retrying", file=sys.stderr)
        time.sleep(delay)
        delay = min(delay * 2, 5.0)


def main(argv: list[str] | None = None) -> None:
    args = sys.argv[1:] if argv is None else argv
    if args and args[0] == "--":
        args = args[1:]
    if not args:
        raise SystemExit("usage: python -m singleuser.batch CMD [ARGS...]")
    env = os.environ
    service_url = env.get("JUPYTERHUB_SERVICE_URL", "http://0.0.0.0:0/")
    token = env.get("JUPYTERHUB_API_TOKEN", "")
    url = env.get("HIMALIA_BATCH_REPORT_URL") or (
        env.get("JUPYTERHUB_API_URL", "").rstrip("/") + "/batchspawner")
    port = free_port(urlsplit(service_url).hostname or "0.0.0.0")
    report(url, token, port)
    env["JUPYTERHUB_SERVICE_URL"] = with_port(service_url, port)
    env.pop("HIMALIA_BATCH_REPORT_URL", None)
    print(f"singleuser.batch: serving on port {port} of {socket.gethostname()}", flush=True)
    os.execvp(args[0], args)  # noqa: S606 (the server replaces this process, as exec does)


if __name__ == "__main__":
    main()
