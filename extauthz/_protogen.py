"""Generate ``extauthz._proto`` from ``protos/`` with grpcio-tools.

``python -m extauthz._protogen [OUT_DIR]`` — OUT_DIR defaults to this package's ``_proto``.
The generated files are committed and never edited by hand; a test regenerates them into a
temporary directory and fails when the committed copy differs.
"""

from __future__ import annotations

import sys
from importlib import resources
from pathlib import Path

PROTO_FILES = ["extauthz/v1/admin.proto"]
DEFAULT_OUT = Path(__file__).resolve().parent / "_proto"


def find_proto_root(start: Path | None = None) -> Path:
    """The ``protos/`` directory of the checkout: the nearest one at or above ``start``
    (default: the current directory, then this file's directory) that holds ``PROTO_FILES``.

    :raises FileNotFoundError: no such directory (e.g. run from an installed wheel outside a
        checkout, which ships no ``.proto`` sources).
    """
    starts = [start] if start is not None else [Path.cwd(), Path(__file__).resolve().parent]
    for origin in starts:
        for directory in (origin.resolve(), *origin.resolve().parents):
            candidate = directory / "protos"
            if all((candidate / f).is_file() for f in PROTO_FILES):
                return candidate
    raise FileNotFoundError("no protos/ directory with " + ", ".join(PROTO_FILES))


def generate(out_dir: Path = DEFAULT_OUT, proto_root: Path | None = None) -> list[Path]:
    """Run protoc on ``proto_root`` (default: :func:`find_proto_root`); return the generated
    files. :raises RuntimeError: protoc failed. :raises FileNotFoundError: no ``protos/``."""
    from grpc_tools import protoc

    root = proto_root if proto_root is not None else find_proto_root()
    out_dir.mkdir(parents=True, exist_ok=True)
    include = str(resources.files("grpc_tools") / "_proto")
    args = [
        "protoc",
        f"-I{root}",
        f"-I{include}",
        f"--python_out={out_dir}",
        f"--pyi_out={out_dir}",
        f"--grpc_python_out={out_dir}",
        *(str(root / f) for f in PROTO_FILES),
    ]
    if protoc.main(args) != 0:
        raise RuntimeError("protoc failed")
    generated = sorted(p for p in out_dir.rglob("*") if p.is_file() and p.suffix in (".py", ".pyi"))
    for path in generated:
        for pkg in path.relative_to(out_dir).parents:
            init = out_dir / pkg / "__init__.py"
            if not init.exists():
                init.write_text("")
    # protoc writes absolute imports from the proto root; make them package-relative
    for path in generated:
        if path.name.endswith("_pb2_grpc.py"):
            text = path.read_text()
            path.write_text(
                text.replace(
                    "from extauthz.v1 import admin_pb2",
                    "from extauthz._proto.extauthz.v1 import admin_pb2",
                )
            )
    return sorted(p for p in out_dir.rglob("*") if p.is_file() and p.suffix in (".py", ".pyi"))


if __name__ == "__main__":
    target = Path(sys.argv[1]) if len(sys.argv) > 1 else DEFAULT_OUT
    for path in generate(target):
        print(path)
