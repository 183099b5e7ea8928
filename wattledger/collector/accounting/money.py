"""Money as finance reads it: amounts rounded to their currency's minor unit (ISO 4217: cents for
USD and EUR, none for JPY, three decimals for BHD, KWD, OMR…).

The ledger keeps full precision everywhere (a minute's cost is a fraction of a cent) and JSON
answers carry it with the currency; only the CSV report, which goes into spreadsheets and
invoices as it is, rounds. The minor units come from the ``iso4217`` package, which ships the
ISO 4217 maintenance agency's own table (not CLDR's display digits, which differ for a few
currencies: IQD is 3 in ISO 4217, 0 in CLDR).
"""

from __future__ import annotations

from collections.abc import Mapping
from decimal import ROUND_HALF_UP, Decimal, localcontext
from functools import cache
from typing import Any

from iso4217 import Currency

#: the spend rows' columns that hold money in the row's ``currency``
MONEY_COLUMNS = frozenset({
    "it_cost", "cooling_cost", "energy_cost", "demand_charge", "total_cost", "plan_cost",
    "plan_to_date", "forecast_cost", "plan_energy_cost", "plan_energy_to_date", "plan_demand_charge",
    "other_cost", "overhead_cost", "gpu_cost", "cpu_cost", "capex", "cloud_cost", "idle_cost", "waste_cost",
})


@cache
def minor_units(currency: str) -> int | None:
    """Decimals of the currency's minor unit; None where ISO 4217 gives none (gold, SDR: "N.A.").
    ValueError for a code that is not in ISO 4217."""
    try:
        found = Currency(currency.upper())
    except ValueError:
        raise ValueError(f"{currency!r} is not an ISO 4217 currency code (such as USD, EUR, JPY)") from None
    exponent = found.exponent
    return None if exponent is None else int(exponent)


def is_currency(code: str) -> bool:
    try:
        minor_units(code)
    except ValueError:
        return False
    return True


def round_money(amount: float, currency: str) -> str:
    """``amount`` to the currency's minor unit, half away from zero, as fixed-point text
    ("12.30", "1235", "1.235"); full precision where the currency has no minor unit."""
    exact = Decimal(repr(float(amount)))
    places = minor_units(currency)
    if places is None:
        return str(exact)
    # quantize needs every digit of the result within the context's precision (28 by default:
    # 1e27 dollars to the cent would raise); a float has at most 309 integer digits
    with localcontext(prec=400):
        return str(exact.quantize(Decimal(1).scaleb(-places), rounding=ROUND_HALF_UP))


def for_csv(row: Mapping[str, Any]) -> dict[str, Any]:
    """A spend row with its money columns rounded for the CSV report (others as they are)."""
    currency = row.get("currency")
    if not isinstance(currency, str):
        return dict(row)
    return {key: round_money(value, currency)
            if key in MONEY_COLUMNS and isinstance(value, int | float) and not isinstance(value, bool)
            else value for key, value in row.items()}
