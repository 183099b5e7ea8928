#!/usr/bin/env python3
"""Generate the Python modules of the kubelet's PodResources API from its .proto.

    .venv/bin/python scripts/generate_podresources.py [--out DIR]

Writes, beside ``wattledger/agent/sources/podresources/api.proto`` (or under ``DIR``, with
the same relative paths): ``api_pb2.py`` and ``api_pb2_grpc.py`` (grpcio-tools), and their
typed stubs ``api_pb2.pyi`` and ``api_pb2_grpc.pyi`` (mypy-protobuf), which mypy reads in
place of the untyped modules. The versions of grpcio-tools and mypy-protobuf are pinned in
pyproject.toml's dev extra, so that the same .proto always gives the same files (a test
regenerates them and compares).
"""

from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PROTO = Path("wattledger/agent/sources/podresources/api.proto")


def _plugin(name: str) -> str:
    """A protoc plugin installed with this interpreter (the venv's bin), else on PATH."""
    beside = Path(sys.executable).parent / name
    found = str(beside) if beside.exists() else shutil.which(name)
    if found is None:
        raise SystemExit(f"{name} not found: install the dev extra (pip install -e '.[dev]')")
    return found


def generate(out: Path) -> list[Path]:
    from grpc_tools import protoc  # dev-only dependency

    out.mkdir(parents=True, exist_ok=True)
    (out / PROTO.parent).mkdir(parents=True, exist_ok=True)
    args = [
        "grpc_tools.protoc",
        f"--proto_path={ROOT}",
        f"--plugin=protoc-gen-mypy={_plugin('protoc-gen-mypy')}",
        f"--plugin=protoc-gen-mypy_grpc={_plugin('protoc-gen-mypy_grpc')}",
        f"--python_out={out}",
        f"--grpc_python_out={out}",
        f"--mypy_out={out}",
        f"--mypy_grpc_out={out}",
        str(ROOT / PROTO),
    ]
    if protoc.main(args) != 0:
        raise SystemExit("protoc failed")
    return sorted((out / PROTO.parent).glob("api_pb2*"))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=ROOT, help="root to write under (default: repository)")
    for path in generate(parser.parse_args().out):
        print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
