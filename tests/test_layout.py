"""The architecture rules that keep the layout readable (docs/architecture.md), checked on the
package's source: module size, which modules may speak Redis, Envoy's protobuf (one adapter
module per Envoy service, ext_authz and ext_proc, and the config generator), aiohttp, and the
settings types."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import extauthz

PACKAGE = Path(extauthz.__file__).resolve().parent
MAX_LINES = 400


def _modules() -> list[Path]:
    return sorted(p for p in PACKAGE.rglob("*.py") if "_proto" not in p.relative_to(PACKAGE).parts)


def _name(path: Path) -> str:
    return path.relative_to(PACKAGE.parent).with_suffix("").as_posix().replace("/", ".")


def _imports(path: Path) -> set[str]:
    """Every module name ``path`` imports (``import a.b`` and ``from a.b import c`` give
    ``a.b``; relative imports are resolved against the package)."""
    found: set[str] = set()
    tree = ast.parse(path.read_text(), filename=str(path))
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = _name(path).split(".")[: -node.level]
                found.add(".".join([*base, node.module] if node.module else base))
            elif node.module:
                found.add(node.module)
    return found


def _importers(prefix: str) -> set[str]:
    return {
        _name(p)
        for p in _modules()
        if any(m == prefix or m.startswith(prefix + ".") for m in _imports(p))
    }


def test_the_rules_see_the_package() -> None:
    """The checks below would pass on an empty list: make sure they read the real modules."""
    names = {_name(p) for p in _modules()}
    assert {"extauthz.check.envoy_adapter", "extauthz.server.app"} <= names
    assert "extauthz.store.redis.store" in _importers("redis")


@pytest.mark.parametrize("path", _modules(), ids=_name)
def test_no_module_is_over_the_size_limit(path: Path) -> None:
    lines = len(path.read_text().splitlines())
    assert lines <= MAX_LINES, f"{_name(path)} has {lines} lines (at most {MAX_LINES}): split it"


def test_only_the_store_package_speaks_redis() -> None:
    outside = {m for m in _importers("redis") if not m.startswith("extauthz.store.redis")}
    assert outside == set(), f"redis imported outside extauthz.store.redis: {sorted(outside)}"


ENVOY_ADAPTERS = {
    "extauthz.check.envoy_adapter",  # ext_authz: CheckRequest / CheckResponse
    "extauthz.response.ext_proc_adapter",  # ext_proc: ProcessingRequest / ProcessingResponse
}


# A third role, not a run-time adapter: ``extauthz envoy-config`` builds Envoy's bootstrap from
# the typed config messages (envoy.config.*, envoy.extensions.*, xds.type.matcher) and never
# sees a request. It must not import the run-time adapters, nor they it.
ENVOY_CONFIG_GENERATOR = {
    "extauthz.envoy_config.bootstrap",  # listener, routes, clusters
    "extauthz.envoy_config.filters",  # the HTTP filters and the access log
}


def test_only_the_envoy_adapters_speak_envoys_protobuf() -> None:
    allowed = ENVOY_ADAPTERS | ENVOY_CONFIG_GENERATOR | {"extauthz.server.grpc_server"}
    assert _importers("envoy") <= allowed, sorted(_importers("envoy") - allowed)
    assert _importers("xds") <= ENVOY_CONFIG_GENERATOR
    # the server registers the generated servicers; every message is built by an adapter
    assert _importers("envoy") >= ENVOY_ADAPTERS | ENVOY_CONFIG_GENERATOR


def test_the_config_generator_and_the_run_time_adapters_are_apart() -> None:
    own = {_name(p) for p in (PACKAGE / "envoy_config").glob("*.py")}
    # only the command line uses the generator ...
    assert _importers("extauthz.envoy_config") <= own | {"extauthz.cli"}
    # ... and the generator uses nothing of the run-time pipeline
    used = {m for p in (PACKAGE / "envoy_config").glob("*.py") for m in _imports(p)}
    package = {m for m in used if m.startswith("extauthz.") and m not in own}
    assert package <= {"extauthz.errors", "extauthz.envoy_config"}, sorted(package)


def test_the_domain_does_not_know_the_web_framework() -> None:
    # extauthz.oauth.http: the OAuth 2.0 authorization server's aiohttp adapter;
    # extauthz.login.mfa.http, .passkey_http: the second-factor and passkey pages' adapters
    allowed = {
        "extauthz.login.http", "extauthz.login.mfa.http", "extauthz.login.mfa.passkey_http",
        "extauthz.oauth.http", "extauthz.server.http_server", "extauthz.server.app",
    }
    assert _importers("aiohttp") <= allowed, sorted(_importers("aiohttp") - allowed)


def test_only_the_composition_root_and_the_cli_read_settings_types() -> None:
    readers = {m for m in _importers("extauthz.settings") if not m.startswith("extauthz.settings")}
    # the composition root is app.py, with the settings-to-store conversion beside it
    # oauth_wiring and auth_wiring: the OAuth and the login/[mfa] parts of the root (app.py is
    # at the module size limit); worker_wiring: each worker's settings (server.workers)
    root = {
        "extauthz.server.app", "extauthz.server.store_wiring", "extauthz.server.oauth_wiring",
        "extauthz.server.auth_wiring", "extauthz.server.worker_wiring",
    }
    assert readers <= root | {"extauthz.cli"}, sorted(readers)
