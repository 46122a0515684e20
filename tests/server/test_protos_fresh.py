"""The committed gRPC code in extauthz/_proto is what protos/ generates today."""

from __future__ import annotations

from pathlib import Path

from extauthz import _protogen

COMMITTED = Path(_protogen.__file__).resolve().parent / "_proto"


def _files(root: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(root)): p.read_bytes()
        for p in sorted(root.rglob("*"))
        if p.is_file() and p.suffix in (".py", ".pyi")
    }


def test_generated_code_is_fresh(tmp_path: Path) -> None:
    generated = _protogen.generate(tmp_path / "out")
    assert generated, "protoc generated nothing"
    fresh, committed = _files(tmp_path / "out"), _files(COMMITTED)
    assert sorted(fresh) == sorted(committed), "file lists differ: run `make protos` and commit"
    stale = [name for name in fresh if fresh[name] != committed[name]]
    assert stale == [], f"stale generated files {stale}: run `make protos` and commit"


def test_the_check_notices_a_stale_file(tmp_path: Path) -> None:
    """The comparison above fails when one byte of a generated file differs."""
    out = tmp_path / "out"
    _protogen.generate(out)
    target = out / "extauthz" / "v1" / "admin_pb2.py"
    target.write_bytes(target.read_bytes() + b"\n")
    assert _files(out) != _files(COMMITTED)
