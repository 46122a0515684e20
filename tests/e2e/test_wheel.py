"""Packaging: the wheel built from this checkout installs into a fresh virtual environment and
its ``extauthz`` command runs there, outside the checkout (so nothing is imported from it)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from extauthz import __version__
from tests.support import REPO_ROOT

pytestmark = pytest.mark.e2e

INSTALL_TIMEOUT = 600.0  # seconds: a cold pip cache downloads grpcio, cryptography, ...


def _run(argv: list[str], cwd: Path, timeout: float = 120.0) -> str:
    # without PYTHONPATH: a checkout on it (a worktree's test run) would make pip take the
    # checkout's extauthz.egg-info for an installed extauthz and skip the wheel
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    proc = subprocess.run(
        argv, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout, check=False
    )
    assert proc.returncode == 0, f"{argv} exited {proc.returncode}:\n{proc.stdout}\n{proc.stderr}"
    return proc.stdout


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Built from a copy of the checkout's files: setuptools leaves ``build/`` and
    ``*.egg-info`` in the source tree, and a stale ``build/lib`` would ship deleted modules."""
    out = tmp_path_factory.mktemp("wheel")
    source = tmp_path_factory.mktemp("source") / "extauthz"
    shutil.copytree(
        REPO_ROOT,
        source,
        ignore=shutil.ignore_patterns(
            ".git", ".venv", ".demo", "build", "*.egg-info", "__pycache__", ".*_cache"
        ),
    )
    pip_wheel = [sys.executable, "-m", "pip", "wheel", "--no-deps", "--quiet"]
    _run([*pip_wheel, "-w", str(out), str(source)], cwd=out, timeout=INSTALL_TIMEOUT)
    (built,) = out.glob("extauthz-*.whl")
    return built


def test_the_wheel_holds_the_package_and_nothing_else(wheel: Path) -> None:
    names = zipfile.ZipFile(wheel).namelist()
    tops = {name.split("/", 1)[0] for name in names if not name.startswith("extauthz-")}
    assert tops == {"extauthz"}, f"the wheel ships more than the package: {sorted(tops)}"
    for needed in (
        "extauthz/_proto/extauthz/v1/admin_pb2.py",
        "extauthz/_proto/extauthz/v1/admin_pb2_grpc.py",
        "extauthz/check/authorizer.py",
        "extauthz/store/redis/store.py",
        "extauthz/py.typed",
        "extauthz/login/mfa/static/passkeys.js",  # served by the passkey pages
    ):
        assert needed in names, f"{needed} is missing from the wheel"


def test_the_installed_wheel_runs_outside_the_checkout(wheel: Path, tmp_path: Path) -> None:
    venv = tmp_path / "venv"
    _run([sys.executable, "-m", "venv", str(venv)], cwd=tmp_path)
    python = venv / "bin" / "python"
    _run(
        [str(python), "-m", "pip", "install", "--quiet", "--disable-pip-version-check", str(wheel)],
        cwd=tmp_path,
        timeout=INSTALL_TIMEOUT,
    )
    extauthz = venv / "bin" / "extauthz"
    assert _run([str(extauthz), "--version"], cwd=tmp_path).strip() == f"extauthz {__version__}"

    keys = tmp_path / "keys"
    path = Path(_run([str(extauthz), "keys", "generate", "--dir", str(keys)], cwd=tmp_path).strip())
    assert path.parent == keys and path.is_file()
    # the key loads in the installed package, which is not the checkout's
    where = _run(
        [
            str(python),
            "-c",
            "import sys, extauthz; from extauthz.keys.keyring import KeyRing; "
            f"ring = KeyRing.from_directory({str(keys)!r}); "
            "print(extauthz.__file__); print(ring.signing_key.kid)",
        ],
        cwd=tmp_path,
    ).split()
    assert Path(where[0]).is_relative_to(venv), f"imported {where[0]}, not the installed wheel"
    assert not Path(where[0]).is_relative_to(REPO_ROOT)
    assert len(where[1]) == 43  # RFC 7638 thumbprint: base64url of SHA-256, no padding
