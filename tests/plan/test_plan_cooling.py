"""The chiller formula against hand-computed values (the rating point, the curves' ends, clamping,
a tiny load, a load over capacity, no load) and the cooling configuration's parser."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from plankit import write_epw
from pydantic import ValidationError

from wattledger.collector.accounting.cooling import (
    ASHRAE_90_1_2010_AIR_COOLED,
    ChillerCooling,
    MeteredCooling,
    PueCooling,
    chiller_cooling,
    site_cooling,
)
from wattledger.collector.accounting.weather import WeatherError, epw_monthly_mean_c

# ASHRAE 90.1-2010 air-cooled Path A, as written in openstudio-standards' curves file
C = (1.0433825, 0.0407073, 0.0004506, -0.0041514, -8.86e-05, -0.0003467)
E = (0.5961915, -0.0099496, 0.0007888, 0.0004506, 0.0004875, -0.0007623)
P = (0.141, 0.655, 0.203)
CHILLER: dict[str, Any] = {
    "model": "chiller",
    "curves": "ashrae-90.1-2010-air-cooled",
    "cop_ref": 2.8,
    "capacity_kw": 100.0,
    "aux_ratio": 0.05,
    "outdoor": {"fixed_c": 35},
}


def hand(
    x: float, y: float, load: float, capacity: float = 100.0, cop: float = 2.8, aux: float = 0.05
) -> tuple[float, float, float]:
    """Q_avail, PLR and cooling kW written out term by term (x, y already within the limits)."""
    capft = C[0] + C[1] * x + C[2] * x * x + C[3] * y + C[4] * y * y + C[5] * x * y
    eirft = E[0] + E[1] * x + E[2] * x * x + E[3] * y + E[4] * y * y + E[5] * x * y
    q_avail = capacity * capft
    plr = min(load / q_avail, 1.0)
    chiller = q_avail / cop * eirft * (P[0] + P[1] * plr + P[2] * plr * plr)
    return q_avail, plr, chiller + aux * load


def chiller(**changes: Any) -> ChillerCooling:
    model = site_cooling({"cooling": {**CHILLER, **changes}})
    assert isinstance(model, ChillerCooling)
    return model


def test_the_preset_is_the_published_curves_and_rates_at_ahri_conditions() -> None:
    assert (ASHRAE_90_1_2010_AIR_COOLED.capft, ASHRAE_90_1_2010_AIR_COOLED.eirft) == (C, E)
    assert ASHRAE_90_1_2010_AIR_COOLED.eirfplr == P
    assert ASHRAE_90_1_2010_AIR_COOLED.chilled_water_c == (5.0, 10.0)
    assert ASHRAE_90_1_2010_AIR_COOLED.condenser_c == (12.7, 51.67)
    point = chiller_cooling(chiller(), 50.0, 35.0)
    assert point.capft == pytest.approx(1.0002, abs=1e-4)  # 44 °F water, 95 °F air: the rating point
    assert point.eirft == pytest.approx(1.0000, abs=1e-4)


def test_rated_point_half_load() -> None:
    q_avail, plr, cooling = hand(6.67, 35.0, 50.0)
    point = chiller_cooling(chiller(), 50.0, 35.0)
    assert point.q_avail_kw == pytest.approx(q_avail, rel=1e-12)
    assert point.plr == pytest.approx(plr, rel=1e-12)
    assert point.cooling_kw == pytest.approx(cooling, rel=1e-12)
    # about 0.5 / 2.8 of the capacity's worth of power x the part-load curve: a sanity figure
    assert 10.0 < point.chiller_kw < 20.0
    assert point.aux_kw == pytest.approx(2.5)


@pytest.mark.parametrize(("water", "outdoor"), [(5.0, 12.7), (5.0, 51.67), (10.0, 12.7), (10.0, 51.67)])
def test_the_curves_ends(water: float, outdoor: float) -> None:
    _, _, cooling = hand(water, outdoor, 40.0)
    assert chiller_cooling(chiller(chilled_water_c=water), 40.0, outdoor).cooling_kw == pytest.approx(
        cooling, rel=1e-12
    )


@pytest.mark.parametrize(
    ("water", "outdoor", "as_water", "as_outdoor"),
    [(6.67, 60.0, 6.67, 51.67), (6.67, -20.0, 6.67, 12.7), (3.0, 35.0, 5.0, 35.0), (14.0, 8.0, 10.0, 12.7)],
)
def test_inputs_outside_the_curve_limits_are_clamped(
    water: float, outdoor: float, as_water: float, as_outdoor: float
) -> None:
    point = chiller_cooling(chiller(chilled_water_c=water), 40.0, outdoor)
    assert (point.chilled_water_c, point.condenser_c) == (as_water, as_outdoor)
    _, _, cooling = hand(as_water, as_outdoor, 40.0)
    assert point.cooling_kw == pytest.approx(cooling, rel=1e-12)


def test_a_tiny_load_costs_the_part_load_curves_constant() -> None:
    """No minimum unloading, no cycling: at PLR -> 0 the chiller draws c1 of its full-load EIR."""
    q_avail, plr, _ = hand(6.67, 35.0, 1e-6)
    point = chiller_cooling(chiller(aux_ratio=0.0), 1e-6, 35.0)
    assert point.plr == pytest.approx(plr) and plr < 1e-7
    full_load_power = q_avail / 2.8 * point.eirft
    assert point.chiller_kw == pytest.approx(full_load_power * 0.141, rel=1e-6)


def test_no_load_no_cooling() -> None:
    point = chiller_cooling(chiller(), 0.0, 35.0)
    assert (point.plr, point.chiller_kw, point.aux_kw, point.cooling_kw) == (0.0, 0.0, 0.0, 0.0)
    with pytest.raises(ValueError, match="negative"):
        chiller_cooling(chiller(), -1.0, 35.0)


def test_a_load_over_capacity_runs_the_chiller_at_full_load() -> None:
    q_avail, plr, _ = hand(6.67, 40.0, 500.0)
    point = chiller_cooling(chiller(), 500.0, 40.0)
    assert plr == 1.0 and point.plr == 1.0 and point.over_capacity
    assert point.chiller_kw == pytest.approx(q_avail / 2.8 * point.eirft * (0.141 + 0.655 + 0.203), rel=1e-12)
    assert point.aux_kw == pytest.approx(25.0)  # aux follows the whole load
    assert not chiller_cooling(chiller(), 50.0, 40.0).over_capacity


def test_hotter_air_costs_more() -> None:
    powers = [chiller_cooling(chiller(), 60.0, t).cooling_kw for t in (15.0, 25.0, 35.0, 45.0)]
    assert powers == sorted(powers) and powers[0] < powers[-1]


def test_the_site_parser() -> None:
    assert site_cooling({}) == PueCooling(pue=1.5)
    assert site_cooling({"pue": 1.3}) == PueCooling(pue=1.3)
    assert site_cooling({"cooling": {"model": "pue", "pue": 1.2}}) == PueCooling(pue=1.2)
    assert isinstance(site_cooling({"cooling": {"model": "metered"}}), MeteredCooling)
    own = chiller(capft=[1.0, 0, 0, 0, 0, 0])  # a curve beside the preset overrides it
    assert own.capft == (1.0, 0, 0, 0, 0, 0) and own.eirft == E
    with pytest.raises(ValueError, match="either pue or cooling"):
        site_cooling({"pue": 1.4, "cooling": {"model": "pue", "pue": 1.4}})


@pytest.mark.parametrize(
    ("changes", "where"),
    [
        ({"cop_ref": None}, "cop_ref"),
        ({"cop_ref": 0}, "cop_ref"),
        ({"capacity_kw": -5}, "capacity_kw"),
        ({"curves": "no-such-curves"}, "curves"),
        ({"outdoor": {}}, "outdoor"),
        ({"colour": "blue"}, "colour"),
        ({"capft": [-5.0, 0, 0, 0, 0, 0]}, "capft"),
        ({"eirfplr": [0.1, 0.2]}, "eirfplr"),
        ({"curve_limits": {"chilled_water_c": [10, 5], "condenser_c": [12.7, 51.67]}}, "chilled_water_c"),
    ],
)
def test_bad_chillers_are_refused_naming_the_key(changes: dict[str, Any], where: str) -> None:
    raw = {k: v for k, v in {**CHILLER, **changes}.items() if v is not None}
    with pytest.raises(ValidationError) as caught:
        site_cooling({"cooling": raw})
    text = str(caught.value)
    assert where in text


def test_without_a_preset_every_curve_is_needed() -> None:
    raw = {k: v for k, v in CHILLER.items() if k != "curves"}
    with pytest.raises(ValidationError, match="capft"):
        site_cooling({"cooling": raw})


def test_epw_monthly_means(tmp_path: Path) -> None:
    temps = {m: -5.0 + 3.0 * m for m in range(1, 13)}
    path = write_epw(tmp_path / "site.epw", temps)
    assert epw_monthly_mean_c(path) == pytest.approx(temps)
    assert chiller(outdoor={"epw": str(path)}).outdoor.epw == path
    with pytest.raises(ValidationError, match="no such file"):
        chiller(outdoor={"epw": str(tmp_path / "missing.epw")})
    broken = tmp_path / "broken.epw"
    broken.write_text("LOCATION,nowhere\nnot an epw\n")
    with pytest.raises(WeatherError, match="not a readable EPW file"):
        epw_monthly_mean_c(broken)
