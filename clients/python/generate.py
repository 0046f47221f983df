#!/usr/bin/env python3
"""Regenerates the committed gRPC stubs of eye_client from the repository's proto files.

    python generate.py            # rewrites eye_client/_proto/ in place
    python generate.py --check    # exits 1 if the committed stubs differ from fresh ones

The output depends on the grpcio-tools version, so it is pinned (GRPCIO_TOOLS_VERSION); the test
suite regenerates the stubs into a temporary directory and fails when they differ from the
committed ones.
"""

from __future__ import annotations

import argparse
import difflib
import os
import re
import shutil
import sys
import tempfile
from pathlib import Path

GRPCIO_TOOLS_VERSION = "1.76.0"

HERE = Path(__file__).resolve().parent
REPO_ROOT = HERE.parent.parent
PROTO_ROOT = REPO_ROOT / "proto"
PROTOS = ["eye/v1/ingest.proto", "eye/v1/query.proto"]
PACKAGE_DIR = HERE / "eye_client" / "_proto"

INIT_FILES = {
    "__init__.py": '"""Generated gRPC stubs of The Eye (see generate.py); do not edit."""\n',
    "eye/__init__.py": "",
    "eye/v1/__init__.py": "",
}

# protoc writes absolute imports (`from eye.v1 import ingest_pb2`); inside eye_client they must be
# relative, or they would need a top-level `eye` package.
_ABSOLUTE_IMPORT = re.compile(r"^from eye\.v1 import ", re.MULTILINE)


def _check_tools_version() -> None:
    from importlib import metadata

    try:
        installed = metadata.version("grpcio-tools")
    except metadata.PackageNotFoundError:
        sys.exit(f"grpcio-tools is not installed: pip install grpcio-tools=={GRPCIO_TOOLS_VERSION}")
    if installed != GRPCIO_TOOLS_VERSION:
        sys.exit(
            f"grpcio-tools {installed} is installed but the stubs are generated with "
            f"{GRPCIO_TOOLS_VERSION}: pip install grpcio-tools=={GRPCIO_TOOLS_VERSION}"
        )


def generate(target: Path) -> list[Path]:
    """Writes the stub package (`eye_client/_proto` layout) into `target`; returns the files."""
    _check_tools_version()
    import grpc_tools
    from grpc_tools import protoc

    well_known = Path(grpc_tools.__file__).resolve().parent / "_proto"
    with tempfile.TemporaryDirectory() as raw:
        args = [
            "grpc_tools.protoc",
            f"-I{PROTO_ROOT}",
            f"-I{well_known}",
            f"--python_out={raw}",
            f"--grpc_python_out={raw}",
            *[str(PROTO_ROOT / proto) for proto in PROTOS],
        ]
        code = protoc.main(args)
        if code != 0:
            raise RuntimeError(f"protoc failed (exit {code}): {' '.join(args)}")
        target.mkdir(parents=True, exist_ok=True)
        written = []
        for name, text in INIT_FILES.items():
            path = target / name
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text)
            written.append(path)
        for generated in sorted(Path(raw).rglob("*.py")):
            relative = generated.relative_to(raw)
            text = _ABSOLUTE_IMPORT.sub("from . import ", generated.read_text())
            path = target / relative
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text)
            written.append(path)
    return written


def stub_files(root: Path) -> dict[str, str]:
    """The stub package's Python files under `root`, by relative path."""
    return {
        str(path.relative_to(root)): path.read_text()
        for path in sorted(root.rglob("*.py"))
        if "__pycache__" not in path.parts
    }


def diff(committed_root: Path, fresh_root: Path) -> str:
    """A unified diff between two stub trees; empty when they are identical."""
    committed, fresh = stub_files(committed_root), stub_files(fresh_root)
    out = []
    for name in sorted(set(committed) | set(fresh)):
        a, b = committed.get(name), fresh.get(name)
        if a == b:
            continue
        if a is None:
            out.append(f"missing from the committed stubs: {name}\n")
        elif b is None:
            out.append(f"committed but no longer generated: {name}\n")
        else:
            out.extend(
                difflib.unified_diff(
                    a.splitlines(True), b.splitlines(True), f"committed/{name}", f"fresh/{name}"
                )
            )
    return "".join(out)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="compare only; write nothing")
    options = parser.parse_args()
    if options.check:
        with tempfile.TemporaryDirectory() as tmp:
            generate(Path(tmp))
            difference = diff(PACKAGE_DIR, Path(tmp))
        if difference:
            sys.stdout.write(difference)
            print("the committed stubs are stale: run clients/python/generate.sh", file=sys.stderr)
            return 1
        print("the committed stubs are up to date")
        return 0
    with tempfile.TemporaryDirectory() as tmp:
        generate(Path(tmp))
        if PACKAGE_DIR.exists():
            shutil.rmtree(PACKAGE_DIR)
        shutil.copytree(tmp, PACKAGE_DIR)
    print(f"wrote {os.path.relpath(PACKAGE_DIR)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
