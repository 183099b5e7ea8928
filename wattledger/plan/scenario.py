"""The plan's scenario (YAML): what the site will run, from when, at what price.

Every problem with a scenario is an :class:`Issue` — the field's path (``fleet[1].servers``) and
a reason — found once by :func:`scenario_from` (types and ranges) and :func:`cross_check`
(against the collector's sites and the ledger's history), so that the command line prints the
first as one line (exit 2) and an HTTP endpoint answers it as a 422 with the field.
docs/planning.md, "The scenario", lists every key.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Discriminator,
    Field,
    StringConstraints,
    Tag,
    ValidationError,
    model_validator,
)

from wattledger.collector.accounting.siteclock import month_text, next_month, parse_month
from wattledger.config import ConfigError, load_yaml
from wattledger.wire import plain_file_reason

MAX_MONTHS = 600  # fifty years: a horizon, not a typo's 36000
#: fleet entries of one scenario: groups of servers, not servers (a plan of 600 months with this
#: many entries takes seconds, not the minutes a megabyte of entries would: POST /v1/plan)
MAX_FLEET_ENTRIES = 100


def _month_text(value: Any) -> Any:
    """YAML reads an unquoted 2027-01 as text but 2027-01-01 as a date: the first of a month is
    that month; any other day is refused by the pattern below."""
    if isinstance(value, date) and value.day == 1:
        return value.strftime("%Y-%m")
    if isinstance(value, date):
        return value.isoformat()
    return value


Month = Annotated[str, BeforeValidator(_month_text), StringConstraints(pattern=r"^\d{4}-(0[1-9]|1[0-2])$")]
Name = Annotated[str, StringConstraints(min_length=1, max_length=200)]
NonNegative = Annotated[float, Field(ge=0, allow_inf_nan=False)]


class _Strict(BaseModel):
    # strict: `servers: "10"` or `servers: true` is a mistake to point at, not to coerce
    model_config = ConfigDict(extra="forbid", frozen=True, strict=True, populate_by_name=True)


class ExplicitPower(_Strict):
    """``power: {idle_w, max_w, node_overhead_w}``: a GPU's power at 0 % and 100 % utilization and
    the rest of its server's power (CPUs, fans, NICs, storage, PSU losses), in W."""

    idle_w: NonNegative
    max_w: NonNegative
    node_overhead_w: NonNegative

    @model_validator(mode="after")
    def _max_above_idle(self) -> ExplicitPower:
        if self.max_w < self.idle_w:
            raise ValueError(f"[max_w] {self.max_w:g} W is below idle_w {self.idle_w:g} W")
        return self


class MeasuredEntry(_Strict):
    """``{name, measured: true}``: the ledger's fleet as measured over its last 30 days."""

    name: Name
    measured: Literal[True]


def _power_kind(value: Any) -> str:
    return "power:explicit" if isinstance(value, Mapping | ExplicitPower) else "power:measured"


#: ``power: measured`` or ``power: {idle_w, max_w, node_overhead_w}``, told apart by their shape so
#: that a mistake in the mapping is reported as that mapping's (not as "should be 'measured'")
Power = Annotated[
    Annotated[Literal["measured"], Tag("power:measured")] | Annotated[ExplicitPower, Tag("power:explicit")],
    Discriminator(_power_kind),
]


class ProjectedEntry(_Strict):
    """Servers that will run from ``from`` (default: the plan's start) to the plan's end."""

    name: Name
    measured: Literal[False] = False
    from_: Month | None = Field(default=None, alias="from")
    servers: Annotated[int, Field(ge=0)]
    gpus_per_server: Annotated[int, Field(ge=1, le=1024)]
    model: Name
    utilization: Annotated[float, Field(ge=0, le=1, allow_inf_nan=False)]
    power: Power
    capex_per_server: NonNegative = 0.0
    depreciation_months: Annotated[int, Field(ge=1, le=MAX_MONTHS)] | None = None

    @model_validator(mode="after")
    def _depreciation_with_capex(self) -> ProjectedEntry:
        if self.capex_per_server > 0 and self.depreciation_months is None:
            raise ValueError(
                "[depreciation_months] needed with capex_per_server (the months over "
                "which the servers' price is written off)"
            )
        return self


def _entry_kind(value: Any) -> str:
    if isinstance(value, MeasuredEntry) or (isinstance(value, Mapping) and value.get("measured") is True):
        return "entry:measured"
    return "entry:projected"


FleetEntry = Annotated[
    Annotated[MeasuredEntry, Tag("entry:measured")] | Annotated[ProjectedEntry, Tag("entry:projected")],
    Discriminator(_entry_kind),
]
#: the tags of the unions above: they name the member pydantic tried, never a key of the file
UNION_TAGS = frozenset({"power:measured", "power:explicit", "entry:measured", "entry:projected"})


class Scenario(_Strict):
    site: Name
    start: Month
    months: Annotated[int, Field(ge=1, le=MAX_MONTHS)]
    price_escalation_per_year: Annotated[float, Field(gt=-1, le=10, allow_inf_nan=False)] = 0.0
    cloud_price_per_gpu_hour: NonNegative | None = None
    fleet: Annotated[list[FleetEntry], Field(min_length=1, max_length=MAX_FLEET_ENTRIES)]

    @property
    def start_id(self) -> int:
        return parse_month(self.start)

    def month_ids(self) -> list[int]:
        months, mid = [], self.start_id
        for _ in range(self.months):
            months.append(mid)
            mid = next_month(mid)
        return months

    @property
    def end(self) -> str:
        return month_text(self.month_ids()[-1])

    def needs_profiles(self) -> bool:
        return any(isinstance(e, MeasuredEntry) or e.power == "measured" for e in self.fleet)


# ---------------------------------------------------------------------------- issues


@dataclass(frozen=True, slots=True)
class Issue:
    field: str  # "fleet[1].servers"; "" for the scenario as a whole
    reason: str

    def __str__(self) -> str:
        return f"scenario field {self.field}: {self.reason}" if self.field else f"scenario: {self.reason}"


class ScenarioError(ConfigError):
    """A scenario that cannot be planned; ``issues`` holds every problem found, the message the
    first as one line."""

    def __init__(self, issues: Sequence[Issue]) -> None:
        self.issues = tuple(issues)
        more = f" (and {len(self.issues) - 1} more problems)" if len(self.issues) > 1 else ""
        super().__init__(f"{self.issues[0]}{more}".replace("\n", " "))


def _path(loc: Sequence[int | str]) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{'from' if part == 'from_' else part}" if out else str(part)
    return out


def _untagged(loc: Sequence[int | str], tags: Collection[str]) -> list[int | str]:
    """``loc`` without the unions' tags: the scenario's own (anywhere), and ``tags`` where they
    stand first (a cooling model's name, which may also be a key: ``cooling.pue``)."""
    return [part for n, part in enumerate(loc) if part not in UNION_TAGS and not (n == 0 and part in tags)]


def issues_of(
    exc: ValidationError, prefix: Sequence[int | str] = (), tags: Collection[str] = ()
) -> list[Issue]:
    """pydantic's errors as issues: the key's path, and a reason a planner reads (a cross-check
    that knows its key says so as ``[key] reason``)."""
    issues = []
    for error in exc.errors(include_url=False):
        loc = [*prefix, *_untagged(error["loc"], tags)]
        kind = error["type"]
        if kind == "extra_forbidden":
            reason = "unknown key (see docs/planning.md for the scenario's keys)"
        elif kind == "missing":
            reason = "missing (required)"
        elif kind in ("value_error", "assertion_error"):  # the scenario's own checks
            reason = str(error["msg"]).removeprefix("Value error, ").removeprefix("Assertion failed, ")
            key, marked, rest = reason.partition("] ")
            if reason.startswith("[") and marked:
                loc, reason = [*loc, key[1:]], rest
        else:  # pydantic's own errors in plain words (no regex, no "Input should be")
            reason = plain_file_reason(error)
        issues.append(Issue(_path(loc), reason))
    # a union tried both members: keep one problem per path
    seen: dict[str, Issue] = {}
    for issue in issues:
        seen.setdefault(issue.field, issue)
    return list(seen.values())


def scenario_from(raw: Any) -> Scenario:
    """A scenario from its parsed YAML (or JSON); ScenarioError with every issue."""
    try:
        return Scenario.model_validate(raw)
    except ValidationError as exc:
        raise ScenarioError(issues_of(exc)) from None


def load_scenario_file(path: Path) -> Any:
    """The scenario file's YAML; a missing, unreadable or malformed file is one ConfigError line."""
    try:
        data = load_yaml(path)
    except ConfigError as exc:
        raise ConfigError(str(exc).replace("config file", "scenario file", 1)) from None
    if not data:
        raise ConfigError(f"scenario file {str(path)!r} is empty: it needs site, start, months and fleet")
    return data


@dataclass(frozen=True)
class LedgerFacts:
    """What the cross-check needs to know of the ledger's history of the scenario's site."""

    first_month: str | None  # the first local month with a reading; None: no reading
    #: per model seen: None when its profile is usable, else why not
    models: Mapping[str, str | None]
    #: models whose node overhead the node meters measured
    overhead_models: Collection[str]
    fleet_gpus: int  # GPUs in the measured window


def cross_check(scenario: Scenario, sites: Collection[str], ledger: LedgerFacts | None) -> list[Issue]:
    """The scenario against the collector's sites, its own horizon and the ledger's history
    (``ledger`` None: no history is read, because no entry needs one)."""
    issues: list[Issue] = []
    if scenario.site not in sites:
        known = ", ".join(sorted(sites))
        issues.append(
            Issue(
                "site", f"{scenario.site!r} is not a site of the collector configuration (its sites: {known})"
            )
        )
    if ledger is not None and ledger.first_month is not None and scenario.start < ledger.first_month:
        issues.append(
            Issue(
                "start",
                f"{scenario.start} is before the ledger's first month "
                f"({ledger.first_month}): a plan starts where the history ends",
            )
        )
    names: dict[str, int] = {}
    for i, entry in enumerate(scenario.fleet):
        if entry.name in names:
            issues.append(
                Issue(f"fleet[{i}].name", f"{entry.name!r} is also the name of fleet[{names[entry.name]}]")
            )
        names.setdefault(entry.name, i)
        if isinstance(entry, MeasuredEntry):
            if ledger is not None and ledger.fleet_gpus == 0:
                issues.append(
                    Issue(
                        f"fleet[{i}].measured",
                        "the ledger has no GPU readings of this site in the 30 days before its last reading",
                    )
                )
            continue
        if entry.from_ is not None and not scenario.start <= entry.from_ <= scenario.end:
            issues.append(
                Issue(
                    f"fleet[{i}].from",
                    f"{entry.from_} is outside the plan's months ({scenario.start} to {scenario.end})",
                )
            )
        if entry.power != "measured" or ledger is None:
            continue
        explicit = "give power: {idle_w, max_w, node_overhead_w} instead of power: measured"
        if entry.model not in ledger.models:
            seen = ", ".join(sorted(ledger.models)) or "none"
            issues.append(
                Issue(
                    f"fleet[{i}].model",
                    f"the ledger has no readings of {entry.model!r} (models it has: {seen}); {explicit}",
                )
            )
        elif ledger.models[entry.model] is not None:
            issues.append(
                Issue(
                    f"fleet[{i}].power",
                    f"too little data for {entry.model!r}: {ledger.models[entry.model]}; {explicit}",
                )
            )
        elif entry.model not in ledger.overhead_models:
            issues.append(
                Issue(
                    f"fleet[{i}].power",
                    f"the ledger has no node meter readings of "
                    f"{entry.model!r} servers, so their node overhead is "
                    f"unknown; {explicit}",
                )
            )
    return issues
