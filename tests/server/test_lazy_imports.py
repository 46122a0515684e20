"""What a serving process loads at start-up: the heavy optional libraries stay out while their
feature is off (issue 13: the resident memory of a worker). Each case runs in a fresh
interpreter, which builds what ``extauthz serve`` builds before it serves: the command line's
parser (every subcommand's), the settings and the components."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from tests.support.extauthz_nodes import node_settings

MEMORY = {"strategy": "sticky", "backend": "memory"}

# what each feature loads, and where the lazy import is
LAZY = {
    "authlib": "oauth.enabled (extauthz.server.oauth_wiring.build_oauth)",
    "extauthz.oauth.server": "oauth.enabled (extauthz.server.oauth_wiring.build_oauth)",
    "segno": "the first TOTP enrolment (extauthz.login.mfa.totp.TotpKind.qr_svg)",
    "yaml": "extauthz envoy-config (extauthz.envoy_config.command)",
    "envoy.config.bootstrap": "extauthz envoy-config (extauthz.envoy_config.command)",
    "envoy.config.listener": "extauthz envoy-config (extauthz.envoy_config.command)",
    "extauthz.envoy_config": "the parser of every subcommand (extauthz.cli.build_parser)",
    "extauthz.oauth.clients_cli": "the parser of every subcommand (extauthz.cli.build_parser)",
    "multiprocessing": "server.workers > 1 (extauthz.server.worker_wiring)",
}


def _loaded_at_start_up(settings_file: Path) -> set[str]:
    """``sys.modules`` of a fresh interpreter once it has parsed ``serve``'s command line the
    way ``extauthz serve`` does (``extauthz.cli.main``, stopped by ``--help``) and built the
    components of ``settings_file``."""
    code = textwrap.dedent(
        f"""
        import contextlib, io, sys
        from extauthz.cli import main
        from extauthz.server.app import build_components
        from extauthz.settings import load_settings
        with contextlib.suppress(SystemExit), contextlib.redirect_stdout(io.StringIO()):
            main(["serve", "--help"])
        build_components(load_settings({str(settings_file)!r}, environ={{}}))
        print("\\n".join(sys.modules))
        """
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=60, check=False)  # fmt: skip
    assert done.returncode == 0, done.stderr
    return set(done.stdout.split())


def _watched(loaded: set[str]) -> set[str]:
    """The entries of :data:`LAZY` that ``loaded`` holds (or a submodule of)."""
    return {w for w in LAZY if any(m == w or m.startswith(w + ".") for m in loaded)}


@pytest.mark.e2e
def test_features_that_are_off_load_none_of_their_libraries(tmp_path: Path) -> None:
    node_settings(tmp_path, "n1", MEMORY)  # the defaults: no OAuth, nobody enrolled
    loaded = _watched(_loaded_at_start_up(tmp_path / "n1.toml"))
    assert loaded == set(), {m: LAZY[m] for m in sorted(loaded)}


@pytest.mark.e2e
def test_oauth_on_loads_authlib(tmp_path: Path) -> None:
    """The other side: the check above sees a library that is loaded."""
    node_settings(tmp_path, "n1", MEMORY, oauth={"enabled": True, "issuer": "https://auth.example"})
    loaded = _watched(_loaded_at_start_up(tmp_path / "n1.toml"))
    assert loaded == {"authlib", "extauthz.oauth.server"}


@pytest.mark.e2e
def test_a_supervisor_does_not_load_the_node(tmp_path: Path) -> None:
    """With ``server.workers`` > 1 the process ``extauthz serve`` started only supervises:
    the node (``extauthz.server.app`` and what it imports) is loaded by each worker."""
    redis = {"strategy": "central", "backend": "redis", "redis_url": "redis://127.0.0.1:1/0"}
    node_settings(tmp_path, "n1", redis, server={"node_id": "n1", "workers": 2,
                                                 "grpc_listen": "127.0.0.1:9101"})  # no I/O
    code = textwrap.dedent(
        f"""
        import sys
        from extauthz.server import worker_wiring
        worker_wiring.serve_workers = lambda settings, log_level: 0  # no workers started
        from extauthz.cli import main
        assert main(["serve", "--config", {str(tmp_path / "n1.toml")!r}]) == 0
        print("\\n".join(m for m in ("extauthz.server.app", "aiohttp")
                         if m in sys.modules))
        """
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=60, check=False)  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == []
