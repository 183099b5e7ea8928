"""GET /v1/spend: energy, cost and carbon by site, cluster, node, device, team or owner key, JSON
or CSV; GET /v1/jobs: the allocations of a time window with what each cost (docs/chargeback.md)."""

from __future__ import annotations

import csv
import io
import math
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Query, Request
from fastapi.responses import Response
from pydantic import AfterValidator

from wattledger.collector.accounting.siteclock import SiteClock, month_text
from wattledger.collector.api.errors import error_response, json_response
from wattledger.collector.api.httpstats import ServiceStats
from wattledger.collector.api.runtime import RuntimeHolder
from wattledger.collector.ingest.checks import why
from wattledger.collector.sites import Month, SiteConfig

GroupBy = Literal["site", "cluster", "node", "device", "team", "job", "namespace", "account", "user"]


def _plausible_month(month: str) -> str:
    # the pattern allows year 0000, which no calendar (or datetime) in the ledger can place
    if not 1970 <= int(month[:4]) <= 9998:
        raise ValueError("the year must be between 1970 and 9998")
    return month


QueryMonth = Annotated[Month, AfterValidator(_plausible_month)]


def current_site_month(site: SiteConfig, now: float) -> str:
    """The month (YYYY-MM) that ``now`` falls in on the site's local clock."""
    return month_text(SiteClock(site).month_at(now))


def rows_to_csv(rows: list[dict[str, Any]]) -> str:
    """Rows as CSV, columns in first-seen order (finance tools open it as is), money rounded to
    each row's currency's minor unit (``wattledger.collector.accounting.money``)."""
    from wattledger.collector.accounting.money import for_csv

    columns: dict[str, None] = {}
    for row in rows:
        columns.update(dict.fromkeys(row))
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=list(columns), lineterminator="\r\n")
    if columns:
        writer.writeheader()
        writer.writerows(for_csv(row) for row in rows)
    return out.getvalue()


def instant(text: str, name: str) -> float:
    """``from``/``to`` of /v1/jobs: unix seconds, or RFC 3339 with an offset; ValueError otherwise."""
    try:
        value = float(text)
    except ValueError:
        try:
            moment = datetime.fromisoformat(text)
        except ValueError:
            raise ValueError(f"{name} must be unix seconds or an RFC 3339 time such as "
                             f"2026-12-01T00:00:00Z (not {text!r})") from None
        if moment.tzinfo is None:
            raise ValueError(f"{name} {text!r} has no UTC offset (add Z or +01:00)") from None
        return moment.timestamp()
    if not math.isfinite(value) or not 0 <= value < 253402300800:  # before year 10000
        raise ValueError(f"{name} must be unix seconds between 0 and year 9999 (not {text!r})")
    return value


def _utc_text(ts: float | None) -> str | None:
    return None if ts is None else datetime.fromtimestamp(ts, UTC).isoformat().replace("+00:00", "Z")


def jobs_csv(rows: list[dict[str, Any]]) -> str:
    """Jobs as CSV: the owner's keys as ``owner_<key>`` columns, devices space-separated, times
    RFC 3339 (UTC), money rounded to the currency's minor unit."""
    keys = sorted({key for row in rows for key in row["owner"]})
    flat = []
    for row in rows:
        out = {k: v for k, v in row.items() if k not in ("owner", "devices", "start", "end")}
        out.update({f"owner_{k}": row["owner"].get(k) for k in keys})
        out.update(devices=" ".join(row["devices"]), start=_utc_text(row["start"]), end=_utc_text(row["end"]))
        flat.append(out)
    return rows_to_csv(flat)


def wants_csv(request: Request, format: str | None) -> bool:
    return format == "csv" or (format is None and "text/csv" in request.headers.get("accept", ""))


def finance_router(holder: RuntimeHolder, sites: dict[str, SiteConfig], clock: Callable[[], float],
                   stats: ServiceStats) -> APIRouter:
    router = APIRouter(tags=["finance"])

    @router.get("/v1/spend", response_model=None,
                summary="Energy, cost and carbon by site, cluster, node or device")
    def get_spend(
        request: Request,
        site: Annotated[str | None, Query(max_length=256, description="one site (default: all)")] = None,
        month: Annotated[QueryMonth | None, Query(description="YYYY-MM (default: this month)")] = None,
        group_by: GroupBy = "site",
        format: Literal["json", "csv"] | None = None,
    ) -> Response:
        started = time.perf_counter()
        rt = holder.get()
        if site is not None and site not in sites:
            return error_response(404, "unknown site", why("site", f"{site!r} is not configured"))
        # the month of each site decided here, so the answer can say which it is: without
        # `month`, each site's current month on its own clock (two sites may differ at midnight)
        names = [site] if site is not None else sorted(sites)
        months = {name: month or current_site_month(sites[name], clock()) for name in names}
        rows = [row for name in names
                for row in rt.ledger.spend(site=name, month=months[name], group_by=group_by)]
        want_csv = wants_csv(request, format)
        stats.observe("/v1/spend", time.perf_counter() - started)
        one_month = month or (next(iter(months.values())) if len(set(months.values())) == 1 else None)
        if want_csv:
            name = f"wattledger-spend-{one_month or 'current'}-{group_by}.csv"
            return Response(rows_to_csv(rows), 200, {"Content-Disposition": f'attachment; filename="{name}"'},
                            media_type="text/csv; charset=utf-8")
        return json_response({"site": names[0] if len(names) == 1 else None, "sites": names,
                              "month": one_month, "months": months, "group_by": group_by, "rows": rows})

    @router.get("/v1/jobs", response_model=None,
                summary="Allocations (jobs, pods) held within a time window, with their energy and cost")
    def get_jobs(
        request: Request,
        site: Annotated[str | None, Query(max_length=256, description="one site (default: all)")] = None,
        from_: Annotated[str | None, Query(
            alias="from", max_length=64, description="unix seconds or RFC 3339 (default: to - 30 d)")] = None,
        to: Annotated[str | None, Query(max_length=64,
                                        description="unix seconds or RFC 3339 (default: now)")] = None,
        team: Annotated[str | None, Query(max_length=256, description="one team's allocations")] = None,
        format: Literal["json", "csv"] | None = None,
    ) -> Response:
        started = time.perf_counter()
        rt = holder.get()
        if site is not None and site not in sites:
            return error_response(404, "unknown site", why("site", f"{site!r} is not configured"))
        now = clock()
        try:
            until = now if to is None else instant(to, "to")
        except ValueError as exc:
            return error_response(422, "invalid query", why("to", str(exc)))
        try:
            since = until - 30 * 86400.0 if from_ is None else instant(from_, "from")
        except ValueError as exc:
            return error_response(422, "invalid query", why("from", str(exc)))
        if since > until:
            return error_response(422, "invalid query",
                                  why("from", f"from ({since:g}) is after to ({until:g})"))
        names = [site] if site is not None else sorted(sites)
        rows = [row for name in names
                for row in rt.ledger.jobs(site=name, since=since, until=until, team=team)]
        want_csv = wants_csv(request, format)
        stats.observe("/v1/jobs", time.perf_counter() - started)
        if want_csv:
            return Response(jobs_csv(rows), 200,
                            {"Content-Disposition": 'attachment; filename="wattledger-jobs.csv"'},
                            media_type="text/csv; charset=utf-8")
        return json_response({"sites": names, "from": since, "to": until, "team": team, "jobs": rows})

    return router
