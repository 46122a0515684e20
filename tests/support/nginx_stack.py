"""nginx in front of extauthz and the echo upstream (forward-auth through ``auth_request``):
``deploy/nginx/nginx.conf`` on free ports, extauthz with ``auth.forward_auth`` on, the demo's
settings otherwise."""

from __future__ import annotations

import os
import tomllib
from dataclasses import dataclass
from pathlib import Path

from harness.extauthz import EchoUpstreamProcess, ExtauthzProcess, ensure_signing_key
from harness.nginx import NginxProcess, render_nginx_conf
from harness.ports import LOOPBACK, free_port
from harness.process import ManagedProcess
from harness.stack import DEMO_SETTINGS


@dataclass
class NginxStack:
    """One running stack; stop it with :meth:`stop`."""

    extauthz: ExtauthzProcess
    echo: EchoUpstreamProcess
    nginx: NginxProcess

    @property
    def port(self) -> int:
        return self.nginx.port

    @property
    def base_url(self) -> str:
        return f"http://{LOOPBACK}:{self.port}"

    def create_session(self, sub: str, *args: str) -> str:
        """``extauthz sessions create --sub SUB ARGS`` against this node; the opaque token."""
        return self.extauthz.create_session(sub, *args)

    def processes(self) -> list[ManagedProcess]:
        return [self.extauthz, self.echo, self.nginx]

    def stop(self) -> None:
        for proc in reversed(self.processes()):
            proc.stop()


def start_nginx_stack(nginx_binary: str, work_dir: Path, *, redis_url: str) -> NginxStack:
    """Start extauthz (``demo/extauthz.toml``, the Redis store at ``redis_url``), the echo
    upstream and nginx running ``deploy/nginx/nginx.conf`` moved onto free ports.

    :raises ProcessError: a part did not start; the parts already started are stopped.
    """
    log_dir, keys_dir = work_dir / "logs", work_dir / "keys"
    overrides = {
        "EXTAUTHZ_JWT_KEYS_DIR": str(keys_dir),
        "EXTAUTHZ_STORE_BACKEND": "redis",
        "EXTAUTHZ_STORE_REDIS_URL": redis_url,
        "EXTAUTHZ_AUTH_FORWARD_AUTH": "true",
    }
    ensure_signing_key(keys_dir, env=dict(os.environ) | overrides)
    with open(DEMO_SETTINGS, "rb") as fh:
        jwt_table = tomllib.load(fh)["jwt"]
    started: list[ManagedProcess] = []
    try:
        extauthz = ExtauthzProcess(DEMO_SETTINGS, log_dir, env=overrides)
        started.append(extauthz.start())
        echo = EchoUpstreamProcess(
            log_dir, jwks_url=extauthz.jwks_url, issuer=jwt_table["issuer"],
            audience=jwt_table["audience"],
        )  # fmt: skip
        started.append(echo.start())
        port = free_port()
        prefix = work_dir / "nginx"
        config = render_nginx_conf(
            prefix, listen=port, extauthz=extauthz.http_port, upstream=echo.port
        )
        nginx = NginxProcess(nginx_binary, prefix, config, log_dir, port=port)
        started.append(nginx.start())
    except BaseException:
        for proc in reversed(started):
            proc.stop()
        raise
    return NginxStack(extauthz, echo, nginx)
