"""The collector configuration as a plan reads it: sites (with their cooling) and the ledger.

Only ``sites`` and ``db`` are read; the rest of the file (tokens, TLS files, limits) is the
collector's business and is not checked here, so a planner can run against a copy of the
production configuration on a laptop. Each site is validated by the collector's own
``SiteConfig`` (the same one-line errors), its ``cooling`` by
:func:`wattledger.collector.accounting.cooling.site_cooling`. Until the collector's settings
hold ``cooling`` themselves, it is taken out of the site's mapping here before the collector's
model sees it; the collector is to reuse that parser when it gains the key.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import TypeAdapter, ValidationError

from wattledger.collector.accounting.cooling import Cooling, PueCooling, site_cooling
from wattledger.collector.settings import DEFAULT_SITE, db_url, default_db_url, describe
from wattledger.collector.sites import SiteConfig, Sites
from wattledger.config import ConfigError, load_yaml
from wattledger.plan.scenario import issues_of

_SITES: TypeAdapter[dict[str, SiteConfig]] = TypeAdapter(Sites)


@dataclass(frozen=True)
class PlanSites:
    """What the plan takes from the collector configuration."""

    sites: Mapping[str, SiteConfig]
    cooling: Mapping[str, Cooling]
    db: str  # the ledger's URL
    source: str  # the file it came from, or "the collector's defaults"


def _validated_sites(raw: Any) -> dict[str, SiteConfig]:
    try:
        return _SITES.validate_python(raw)
    except ValidationError as exc:
        # the collector's own wording: "config key sites.dc1.timezone: unknown timezone ..."
        line = describe(exc)
        raise ConfigError(
            line.replace("config key ", "config key sites.", 1) if line.startswith("config key ") else line
        ) from None


def plan_sites(values: Mapping[str, Any], source: str) -> PlanSites:
    """Sites and ledger from the collector configuration's keys (a parsed YAML mapping)."""
    raw_sites = values.get("sites")
    if raw_sites is None:
        raw_sites = {"default": dict(DEFAULT_SITE)}
    if not isinstance(raw_sites, Mapping) or not raw_sites:
        raise ConfigError("config key sites: must map site names to their settings")
    bare: dict[str, Any] = {}
    cooling: dict[str, Cooling] = {}
    for name, site in raw_sites.items():
        if not isinstance(site, Mapping):
            raise ConfigError(f"config key sites.{name}: must be a mapping of the site's settings")
        try:
            cooling[str(name)] = site_cooling(site)
        except ValidationError as exc:
            first = issues_of(exc, ("sites", str(name), "cooling"), tags=("pue", "chiller", "metered"))[0]
            raise ConfigError(f"config key {first.field}: {first.reason}") from None
        except ValueError as exc:
            raise ConfigError(f"config key sites.{name}: {exc}") from None
        bare[str(name)] = {k: v for k, v in site.items() if k != "cooling"}
        if isinstance(cooling[str(name)], PueCooling):
            bare[str(name)]["pue"] = cooling[str(name)].pue  # type: ignore[union-attr]
    sites = _validated_sites(bare)
    try:
        db = db_url(values["db"]) if values.get("db") is not None else default_db_url()
    except ValueError as exc:
        raise ConfigError(f"config key db: {exc}") from None
    return PlanSites(sites=sites, cooling=cooling, db=db, source=source)


def load_plan_sites(path: Path | None) -> PlanSites:
    """From the collector YAML at ``path``; without one, the collector's default site (UTC, USD,
    PUE 1.5, 0.12 per kWh, 400 g/kWh) and its default ledger."""
    if path is None:
        return plan_sites({}, "the collector's defaults (no --config)")
    return plan_sites(load_yaml(path), str(path))
