"""The Envoy settings README.md gives for draining ('Shutdown and draining') are valid on every
supported Envoy: spliced into envoy/front-proxy.yaml and run through ``envoy --mode validate``."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.support import FRONT_PROXY, REPO_ROOT, validate_envoy_config


def readme_draining_snippet() -> dict[str, Any]:
    text = (REPO_ROOT / "README.md").read_text()
    section = text[text.index("**Shutdown and draining.**") :]
    match = re.search(r"```yaml\n(.*?)```", section, re.S)
    assert match, "README.md: no yaml block after 'Shutdown and draining'"
    snippet: dict[str, Any] = yaml.safe_load(match.group(1))
    return snippet


@pytest.mark.e2e
def test_readme_draining_settings_are_valid_envoy_config(
    envoy_binary: str, tmp_path: Path
) -> None:
    snippet = readme_draining_snippet()
    doc = yaml.safe_load(FRONT_PROXY.read_text())
    listener = doc["static_resources"]["listeners"][0]
    hcm = listener["filter_chains"][0]["filters"][0]["typed_config"]
    (ext_authz,) = [f for f in hcm["http_filters"] if f["name"].endswith("ext_authz")]
    ext_authz["typed_config"]["grpc_service"] = snippet["grpc_service"]
    (cluster,) = [c for c in doc["static_resources"]["clusters"] if c["name"] == "extauthz_grpc"]
    cluster["health_checks"] = snippet["health_checks"]
    config = tmp_path / "front-proxy-draining.yaml"
    config.write_text(yaml.safe_dump(doc, sort_keys=False))
    result = validate_envoy_config(envoy_binary, config)
    assert result.returncode == 0, result.stdout + result.stderr
