"""Reading a site's measured history for a plan, with a progress bar on a terminal.

The ledger is asked five questions
(:class:`wattledger.collector.accounting.history.MeasuredHistory`); on a big site each can take a
while, so a rich progress bar shows them on standard error — only when standard error is a
terminal: on a pipe or in a file nothing but the report (and, on failure, the one error line) is
written.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import IO, Any
from zoneinfo import ZoneInfo

from wattledger.collector.accounting.history import LedgerSpan, MeasuredFleet, MeasuredHistory, SiteMonth
from wattledger.plan.profile import MIN_METERED_NODE_HOURS, PowerProfile, profiles_of
from wattledger.plan.scenario import LedgerFacts

#: the measured entry's window: the 30 days before the ledger's last reading
FLEET_WINDOW_S = 30 * 86400.0


@dataclass(frozen=True)
class ReadHistory:
    """What the plan read of one site's history."""

    span: LedgerSpan | None
    profiles: dict[str, PowerProfile]
    fleet: MeasuredFleet | None
    months: tuple[SiteMonth, ...]

    def facts(self, zone: ZoneInfo) -> LedgerFacts:
        first = (
            datetime.fromtimestamp(self.span.first, UTC).astimezone(zone).strftime("%Y-%m")
            if self.span is not None
            else None
        )
        reasons = {
            model: ("; ".join(p.problems) if p.problems else None) for model, p in self.profiles.items()
        }
        overhead = [
            m
            for m, p in self.profiles.items()
            if p.node_overhead is not None and p.node_overhead.metered_node_hours >= MIN_METERED_NODE_HOURS
        ]
        return LedgerFacts(
            first_month=first,
            models=reasons,
            overhead_models=overhead,
            fleet_gpus=self.fleet.gpus if self.fleet is not None else 0,
        )


@contextmanager
def progress_steps(
    stream: IO[str] | None = None, total: int = 5
) -> Iterator[Callable[[str, Callable[[], Any]], Any]]:
    """A function ``step(label, call)`` that runs ``call`` and advances a progress bar on
    ``stream`` (standard error) when it is a terminal; silent otherwise."""
    stream = sys.stderr if stream is None else stream
    if not stream.isatty():
        yield lambda _label, call: call()
        return
    from rich.console import Console
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    console = Console(file=stream)
    with Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        TextColumn("{task.completed}/{task.total}"),
        TimeElapsedColumn(),
        console=console,
        transient=True,
    ) as bar:
        task = bar.add_task("reading the ledger", total=total)

        def step(label: str, call: Callable[[], Any]) -> Any:
            bar.update(task, description=f"reading the ledger: {label}")
            result = call()
            bar.advance(task)
            return result

        yield step


def read_history(history: MeasuredHistory, site: str, stream: IO[str] | None = None) -> ReadHistory:
    with progress_steps(stream) as step:
        span: LedgerSpan | None = step("span", lambda: history.span(site))
        days = step("power statistics", lambda: tuple(history.model_days(site)))
        overhead = step("node meters", lambda: tuple(history.node_overhead_days(site)))
        fleet: MeasuredFleet | None = None
        if span is not None:
            until = span.last
            fleet = step("fleet", lambda: history.fleet(site, max(span.first, until - FLEET_WINDOW_S), until))
        else:
            step("fleet", lambda: None)
        months = step("months", lambda: tuple(history.site_months(site)))
    return ReadHistory(span=span, profiles=profiles_of(days, overhead), fleet=fleet, months=months)
