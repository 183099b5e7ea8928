"""GET /v1/spend: energy, cost and carbon by site, cluster, node or device, JSON or CSV."""

from __future__ import annotations

import csv
import io
import time
from collections.abc import Callable
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

GroupBy = Literal["site", "cluster", "node", "device"]


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
        want_csv = format == "csv" or (format is None and "text/csv" in request.headers.get("accept", ""))
        stats.observe("/v1/spend", time.perf_counter() - started)
        one_month = month or (next(iter(months.values())) if len(set(months.values())) == 1 else None)
        if want_csv:
            name = f"wattledger-spend-{one_month or 'current'}-{group_by}.csv"
            return Response(rows_to_csv(rows), 200, {"Content-Disposition": f'attachment; filename="{name}"'},
                            media_type="text/csv; charset=utf-8")
        return json_response({"site": names[0] if len(names) == 1 else None, "sites": names,
                              "month": one_month, "months": months, "group_by": group_by, "rows": rows})

    return router
