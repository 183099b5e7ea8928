#!/usr/bin/env python3
"""Generate the Python modules of the project's .proto files.

    .venv/bin/python scripts/generate_protos.py [--out DIR]

For each .proto of :data:`PROTOS` (the kubelet's PodResources API, a gRPC service; Prometheus'
remote-write messages), writes beside it (or under ``DIR``, with the same relative paths):
``NAME_pb2.py`` (grpcio-tools), ``NAME_pb2_grpc.py`` for a service, and their typed stubs
``.pyi`` (mypy-protobuf), which mypy reads in place of the untyped modules. The versions of
grpcio-tools and mypy-protobuf are pinned in pyproject.toml's dev extra, so that the same .proto
always gives the same files (a test regenerates them and compares).
"""

from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
#: each .proto, and whether it defines a gRPC service (then the _grpc modules are made too)
PROTOS: dict[Path, bool] = {
    Path("wattledger/agent/sources/podresources/api.proto"): True,
    Path("wattledger/collector/ingest/prompb/remote.proto"): False,
}


def _plugin(name: str) -> str:
    """A protoc plugin installed with this interpreter (the venv's bin), else on PATH."""
    beside = Path(sys.executable).parent / name
    found = str(beside) if beside.exists() else shutil.which(name)
    if found is None:
        raise SystemExit(f"{name} not found: install the dev extra (pip install -e '.[dev]')")
    return found


def generate(out: Path) -> list[Path]:
    from grpc_tools import protoc  # dev-only dependency

    made: list[Path] = []
    for proto, service in PROTOS.items():
        (out / proto.parent).mkdir(parents=True, exist_ok=True)
        args = ["grpc_tools.protoc", f"--proto_path={ROOT}",
                f"--plugin=protoc-gen-mypy={_plugin('protoc-gen-mypy')}",
                f"--python_out={out}", f"--mypy_out={out}"]
        if service:
            args += [f"--plugin=protoc-gen-mypy_grpc={_plugin('protoc-gen-mypy_grpc')}",
                     f"--grpc_python_out={out}", f"--mypy_grpc_out={out}"]
        if protoc.main([*args, str(ROOT / proto)]) != 0:
            raise SystemExit(f"protoc failed on {proto}")
        made += sorted((out / proto.parent).glob(f"{proto.stem}_pb2*"))
    return made


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=ROOT, help="root to write under (default: repository)")
    for path in generate(parser.parse_args().out):
        print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
