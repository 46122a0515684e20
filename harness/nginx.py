"""nginx for the forward-auth tests: ``deploy/nginx/nginx.conf`` moved onto chosen ports and run
in the foreground with its own prefix (pid file, temporary files), so no root and no system
service are needed."""

from __future__ import annotations

import shutil
from pathlib import Path

from . import REPO_ROOT
from .ports import LOOPBACK
from .process import ManagedProcess

NGINX_CONF = REPO_ROOT / "deploy" / "nginx" / "nginx.conf"
# the addresses written in deploy/nginx/nginx.conf: listener, extauthz HTTP, upstream
DEFAULT_LISTEN = f"{LOOPBACK}:8081"
DEFAULT_EXTAUTHZ = f"{LOOPBACK}:9002"
DEFAULT_UPSTREAM = f"{LOOPBACK}:9003"


def find_nginx() -> str | None:
    """``nginx`` on PATH or in ``/usr/sbin`` (Debian's package; ``make nginx`` installs it)."""
    return shutil.which("nginx") or shutil.which("nginx", path="/usr/sbin:/sbin")


def render_nginx_conf(
    prefix: Path, *, listen: int, extauthz: int, upstream: int, source: Path = NGINX_CONF
) -> Path:
    """Write ``source`` into ``prefix/nginx.conf`` with its three addresses moved to these
    loopback ports; return its path.

    :raises ValueError: an address is not written exactly once in ``source`` (the rewrite
        would test something other than what ships).
    """
    text = source.read_text()
    for old, port in (
        (DEFAULT_LISTEN, listen),
        (DEFAULT_EXTAUTHZ, extauthz),
        (DEFAULT_UPSTREAM, upstream),
    ):
        if text.count(f"{old};") != 1:
            raise ValueError(f"{source}: expected {old}; exactly once")
        text = text.replace(f"{old};", f"{LOOPBACK}:{port};")
    prefix.mkdir(parents=True, exist_ok=True)
    out = prefix / "nginx.conf"
    out.write_text(text)
    return out


class NginxProcess(ManagedProcess):
    """``nginx -p PREFIX -e stderr -c CONF`` (the configuration says ``daemon off``); ready
    when ``port`` accepts. Its error log is the process's stderr log."""

    def __init__(self, binary: str, prefix: Path, config: Path, log_dir: Path, *, port: int):
        argv = [binary, "-p", f"{prefix}/", "-e", "stderr", "-c", str(config)]
        super().__init__("nginx", argv, log_dir, ready_port=port)
        self.port = port
