"""The collector's ledger as a plan's measured history.

A plan reads the ledger through :class:`wattledger.plan.history.MeasuredHistory`: additive
per-(site, GPU model, day) statistics that the ledger keeps at ingest. This version's ledger
does not keep them yet (its store is being reorganised into a store interface and a read model,
which is where they belong), so a plan that needs them stops here with one line instead of
guessing: explicit ``power:`` entries plan fully without a ledger. When the read model
implements the protocol, :func:`open_ledger_history` returns it.
"""

from __future__ import annotations

from pathlib import Path

from wattledger.config import ConfigError
from wattledger.plan.history import MeasuredHistory


class HistoryUnavailable(ConfigError):
    """The plan needs measured history that it cannot have; one line."""


def ledger_path(db_url: str) -> Path:
    return Path(db_url.removeprefix("sqlite:///")).expanduser()


def open_ledger_history(db_url: str, configured: bool) -> MeasuredHistory:
    """The ledger at ``db_url`` as measured history; HistoryUnavailable (one line) when there is
    none, and — in this version — when there is one, since it keeps no profiles yet."""
    hint = (
        "give each fleet entry an explicit power: {idle_w, max_w, node_overhead_w} instead of "
        "power: measured, and leave out measured: true entries"
    )
    if not configured:
        raise HistoryUnavailable(
            f"measured entries need the collector's ledger: give --config COLLECTOR_YAML, or {hint}"
        )
    path = ledger_path(db_url)
    if not path.is_file():
        raise HistoryUnavailable(
            f"no ledger at {str(path)!r} (config key db): measured entries need one; or {hint}"
        )
    raise HistoryUnavailable(
        f"the ledger at {str(path)!r} cannot provide measured profiles yet (this version's "
        f"ledger keeps no power-vs-utilization statistics); {hint}"
    )
