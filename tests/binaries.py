"""The real third-party binaries the integration tests start (Prometheus, promtool, Alertmanager,
amtool, VictoriaMetrics), found on PATH.

Where one is missing a test skips, saying what to install, so that a developer without them can
still run the rest. Under CI (``CI`` set, as ``.ci/run`` is run) it fails instead:
``scripts/ensure-system-packages`` installs these packages before the tests there, so a missing
one is a broken set-up, and a suite that skipped every Prometheus test would pass while checking
none of the rules, dashboards or alerts.
"""

from __future__ import annotations

import os
import shutil

import pytest

#: binary -> the Debian package that ships it (the ones scripts/ensure-system-packages installs)
PACKAGES: dict[str, str] = {
    "prometheus": "prometheus",
    "promtool": "prometheus",
    "alertmanager": "prometheus-alertmanager",
    "prometheus-alertmanager": "prometheus-alertmanager",
    "amtool": "prometheus-alertmanager",
    "victoria-metrics": "victoria-metrics",
    "victoria-metrics-prod": "victoria-metrics",
}


def on_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() not in ("", "0", "false", "no")


def missing(names: tuple[str, ...]) -> str:
    """What to say about binaries none of which is on PATH."""
    packages = sorted({PACKAGES[n] for n in names if n in PACKAGES})
    how = f"apt-get install {' '.join(packages)}" if packages else "see scripts/ensure-system-packages"
    return f"{' / '.join(names)} not installed ({how})"


def find(*names: str) -> str | None:
    """The first of ``names`` on PATH; None where none is, except under CI for a binary that
    the set-up installs (then the test fails). For tests that run with or without it."""
    for name in names:
        found = shutil.which(name)
        if found:
            return found
    if on_ci() and any(n in PACKAGES for n in names):
        pytest.fail(f"{missing(names)}, which CI must have: scripts/ensure-system-packages installs it")
    return None


def binary(*names: str) -> str:
    """The first of ``names`` on PATH; without it the test skips (fails under CI for the
    binaries the set-up installs)."""
    found = find(*names)
    if found is None:
        pytest.skip(missing(names))
    return found
