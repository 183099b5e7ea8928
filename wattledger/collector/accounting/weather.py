"""Outdoor temperatures from an EnergyPlus weather (EPW) file, read with ladybug-core.

An EPW file is one typical year of hourly weather for a place (TMY3, IWEC, …: 8,760 rows); the
chiller model takes its dry-bulb temperature as the air-cooled condenser's entering temperature.
Hours that the file marks missing (dry-bulb 99.9, the format's missing value) are left out of a
month's mean.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

#: the EPW format's "missing" dry-bulb value
EPW_MISSING_DRY_BULB = 99.9


def _epw(path: Path | None) -> Any:
    """ladybug's EPW of the file (None: an empty year to fill in); ladybug's own INFO line at
    import ("Successfully imported Ladybug plugin") is kept off the caller's log (a command's
    stderr is for its errors)."""
    logging.getLogger("ladybug").setLevel(logging.WARNING)
    from ladybug.epw import EPW

    return EPW.from_missing_values() if path is None else EPW(str(path.expanduser()))


def write_epw(path: Path, dry_bulb_c: Callable[[int, int, int], float]) -> None:
    """An EPW file whose hour (month, day, hour 0-23, local) has dry-bulb ``dry_bulb_c(m, d, h)``."""
    epw = _epw(None)
    temps = epw.dry_bulb_temperature
    temps.values = [round(dry_bulb_c(m.month, m.day, m.hour), 1) for m in temps.datetimes]
    epw.save(str(path))


class WeatherError(ValueError):
    """A weather file that cannot be used; the message is one line."""


def epw_dry_bulb(path: Path) -> list[tuple[int, float]]:
    """(month 1-12, dry-bulb °C) of every hour of the file that has a value."""
    try:  # ladybug is heavy: imported only for a site that has a weather file
        data = _epw(path).dry_bulb_temperature
        hours = [
            (int(moment.month), float(value))
            for moment, value in zip(data.datetimes, data.values, strict=True)
        ]
    except Exception as exc:
        reason = " ".join(str(exc).split())[:200] or type(exc).__name__
        raise WeatherError(f"weather file {str(path)!r} is not a readable EPW file ({reason})") from None
    return [(month, value) for month, value in hours if value < EPW_MISSING_DRY_BULB - 1e-6]


def epw_monthly_mean_c(path: Path) -> dict[int, float]:
    """Mean dry-bulb temperature (°C) of each calendar month (1-12) of the weather file.
    WeatherError when the file cannot be read or a month has no hour with a value."""
    sums: dict[int, float] = {}
    counts: dict[int, int] = {}
    for month, value in epw_dry_bulb(path):
        sums[month] = sums.get(month, 0.0) + value
        counts[month] = counts.get(month, 0) + 1
    missing = [m for m in range(1, 13) if not counts.get(m)]
    if missing:
        raise WeatherError(f"weather file {str(path)!r} has no dry-bulb temperature for month {missing[0]}")
    return {month: sums[month] / counts[month] for month in range(1, 13)}


def epw_hourly_c(path: Path) -> dict[tuple[int, int, int], float]:
    """Dry-bulb °C of every hour the file has a value for, by (month, day, hour 0-23) of the
    site's local clock: hour h is the hour that begins at h:00 (the EPW file's hour h + 1)."""
    try:
        data = _epw(path).dry_bulb_temperature
        hours = {(int(m.month), int(m.day), int(m.hour)): float(v)
                 for m, v in zip(data.datetimes, data.values, strict=True)}
    except Exception as exc:
        reason = " ".join(str(exc).split())[:200] or type(exc).__name__
        raise WeatherError(f"weather file {str(path)!r} is not a readable EPW file ({reason})") from None
    return {key: value for key, value in hours.items() if value < EPW_MISSING_DRY_BULB - 1e-6}
