"""The Kubernetes install as a cluster gets it: each overlay rendered by the real kustomize
(kustomize v5, standalone or inside kubectl), and every object checked against its schema.

Built-in kinds go to kubernetes-validate in strict mode (unknown fields refused, as the API
server's strict field validation does). ServiceMonitor and PrometheusRule go to the Prometheus
Operator's published CRD schemas (tests/observability/data/crds/, v0.93.0), made strict the
same way: an object schema that lists its properties and neither allows additional ones nor
preserves unknown fields refuses any other field (the API server would prune it: a typo there
is a setting silently dropped). Their metadata goes to kubernetes-validate's ObjectMeta.
"""

from __future__ import annotations

import functools
import os
import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

from .support import ROOT

K8S = ROOT / "deploy" / "kubernetes"
CRD_DIR = Path(__file__).resolve().parent / "data" / "crds"
#: the oldest Kubernetes the manifests are for, and the newest kubernetes-validate knows
K8S_VERSIONS = ("1.30.0", "1.37.0")
#: overlay name -> its folder under deploy/kubernetes, or the folders a kustomization made for
#: the test puts together (an overlay with an optional component)
OVERLAYS: dict[str, tuple[str, ...]] = {
    "sqlite": ("overlays/sqlite",),
    "postgresql": ("overlays/postgresql",),
    "sqlite+teams": ("overlays/sqlite", "components/kubernetes-teams"),
    "postgresql+teams": ("overlays/postgresql", "components/kubernetes-teams"),
}


def find_kustomize() -> list[str] | None:
    """kustomize v5 as found here: the standalone binary, else kubectl's built-in one (the
    google-cloud-cli's kubectl on this project's machines; Debian's kubernetes-client 1.20
    carries kustomize v2, which has no components); None without either."""
    for name, command in (("kustomize", ["build"]), ("kubectl", ["kustomize"])):
        found = shutil.which(name)
        if found:
            return [found, *command]
    return None


def kustomize_command() -> list[str]:
    command = find_kustomize()
    if command is None:
        pytest.skip("no kustomize: install kustomize v5 or kubectl >= 1.27 to render the overlays")
    return command


@functools.cache
def _rendered(overlay: str) -> str:
    folders = OVERLAYS[overlay]
    command = kustomize_command()
    if len(folders) == 1:
        target = K8S / folders[0]
        done = subprocess.run([*command, str(target)], capture_output=True, text=True, timeout=120)
    else:
        # as an operator adds a component: a kustomization of the overlay plus the component
        with tempfile.TemporaryDirectory(prefix="wattledger-kustomize-") as tmp:
            where = Path(tmp)
            rel = [os.path.relpath(K8S / f, where) for f in folders]
            (where / "kustomization.yaml").write_text(yaml.safe_dump({
                "apiVersion": "kustomize.config.k8s.io/v1beta1", "kind": "Kustomization",
                "resources": [rel[0]], "components": rel[1:]}))
            done = subprocess.run([*command, str(where)], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, f"kustomize {overlay}: {done.stderr[-2000:]}"
    return done.stdout


def render(overlay: str) -> list[dict[str, Any]]:
    """The objects of one overlay, fresh copies (tests may change them)."""
    return [doc for doc in yaml.safe_load_all(_rendered(overlay)) if doc]


def one(objects: list[dict[str, Any]], kind: str, name: str | None = None) -> dict[str, Any]:
    found = [o for o in objects if o["kind"] == kind and (name is None or o["metadata"]["name"] == name)]
    assert len(found) == 1, f"{len(found)} {kind} {name or ''}"
    return found[0]


def all_of(objects: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [o for o in objects if o["kind"] == kind]


# ---------------------------------------------------------------------------- CRD schemas

def _strict(schema: dict[str, Any]) -> dict[str, Any]:
    """An OpenAPI v3 structural schema as JSON Schema, refusing the fields it does not list."""
    out: dict[str, Any] = {}
    for key, value in schema.items():
        if key in ("properties", "patternProperties"):
            out[key] = {k: _strict(v) for k, v in value.items()}
        elif key in ("items", "not", "additionalProperties") and isinstance(value, dict):
            out[key] = _strict(value)
        elif key in ("anyOf", "allOf", "oneOf"):
            out[key] = [_strict(v) for v in value]
        elif key == "format" and value == "int":
            continue  # an OpenAPI hint, no JSON Schema format
        elif key == "pattern" and value.startswith("^(?i)"):
            out[key] = "(?i)^" + value[5:]  # Go's RE2 takes a flag anywhere, Python's re at the start
        else:
            out[key] = value
    if (schema.get("type") == "object" and "properties" in schema and "additionalProperties" not in schema
            and not schema.get("x-kubernetes-preserve-unknown-fields")):
        out["additionalProperties"] = False
    if schema.get("x-kubernetes-int-or-string"):
        out.pop("type", None)
        out.setdefault("anyOf", [{"type": "integer"}, {"type": "string"}])
    return out


@functools.cache
def crd_schemas() -> dict[tuple[str, str], dict[str, Any]]:
    """(apiVersion, kind) -> the strict JSON Schema of that custom resource."""
    schemas = {}
    for path in sorted(CRD_DIR.glob("*.yaml")):
        crd = yaml.safe_load(path.read_text())
        group, kind = crd["spec"]["group"], crd["spec"]["names"]["kind"]
        for version in crd["spec"]["versions"]:
            schema = _strict(version["schema"]["openAPIV3Schema"])
            schema["properties"]["metadata"] = {"type": "object"}  # ObjectMeta: checked apart
            schema["required"] = sorted({*schema.get("required", []), "apiVersion", "kind", "metadata"})
            schemas[(f"{group}/{version['name']}", kind)] = schema
    return schemas


def validate(obj: dict[str, Any]) -> None:
    """Raise when the API server would refuse (or silently prune part of) ``obj``."""
    kubernetes_validate = pytest.importorskip("kubernetes_validate")
    schema = crd_schemas().get((obj["apiVersion"], obj["kind"]))
    for version in K8S_VERSIONS:
        if schema is None:
            kubernetes_validate.validate(obj, version, strict=True)
        else:
            carrier = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": obj["metadata"]}
            kubernetes_validate.validate(carrier, version, strict=True)
    if schema is not None:
        jsonschema.Draft7Validator(schema).validate(obj)
