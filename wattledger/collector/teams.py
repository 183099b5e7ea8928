"""``teams:`` of the collector configuration: whose allocation is whose team (DESIGN.md, "Teams,
budgets and chargeback"; docs/chargeback.md, "Teams").

An allocation's team is its owner's ``team``, else the first configured team one of whose rules
matches the owner (a rule matches when every key it names is in the owner and its value matches
the rule's glob, ``fnmatch`` style, case-sensitive), else ``unassigned``. Time nobody held is team
``idle``. The team is decided when the collector first books an allocation and stays with it.
"""

from __future__ import annotations

from collections.abc import Mapping
from fnmatch import fnmatchcase
from typing import Annotated, Any

from pydantic import BeforeValidator, Field, StringConstraints

from wattledger.contract import OWNER_KEY_PATTERN, OWNER_VALUE_MAX_LENGTH

IDLE = "idle"
UNASSIGNED = "unassigned"
#: a chiller's or metered site's cooling of minutes not yet shared out among teams by IT
#: (ingest/sharing.py): a transient team, no counter of /metrics
UNSHARED = "unshared"
RESERVED = frozenset({IDLE, UNASSIGNED, UNSHARED})

TeamName = Annotated[str, StringConstraints(min_length=1, max_length=OWNER_VALUE_MAX_LENGTH)]
RuleKey = Annotated[str, StringConstraints(pattern=OWNER_KEY_PATTERN)]
Rule = Annotated[dict[RuleKey, Annotated[str, StringConstraints(max_length=OWNER_VALUE_MAX_LENGTH)]],
                 Field(min_length=1)]


def _no_reserved(value: Any) -> Any:
    if isinstance(value, Mapping):
        for name in value:
            if name in RESERVED:
                what = {IDLE: "time nobody held", UNASSIGNED: "allocations no rule matches",
                        UNSHARED: "cooling not yet shared out by IT"}[name]
                raise ValueError(f"{name!r} is the team of {what}; name the team otherwise")
    return value


#: ``teams:``: team name -> its rules, tried in the order given (teams in the order given too)
TeamRules = Annotated[dict[TeamName, list[Rule]], BeforeValidator(_no_reserved)]


def team_of(owner: Mapping[str, str], rules: Mapping[str, list[dict[str, str]]]) -> str:
    """The team of an allocation's owner (see the module's docstring)."""
    team = owner.get("team")
    if team:
        return team
    for name, team_rules in rules.items():
        for rule in team_rules:
            if all(key in owner and fnmatchcase(owner[key], pattern) for key, pattern in rule.items()):
                return name
    return UNASSIGNED
