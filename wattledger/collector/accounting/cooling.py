"""A site's cooling: its configuration (``sites.<name>.cooling``) and the chiller formula.

Three models (docs/planning.md and docs/accounting.md, "Cooling"):

- ``pue`` (the default; a bare ``pue:`` key of a site means this): cooling = IT x (pue - 1).
- ``chiller``: an air-cooled electric chiller as EnergyPlus' ``Chiller:Electric:EIR`` (DOE-2)
  models it, from its rated capacity and COP and three performance curves; the entering
  condenser temperature is the outdoor dry-bulb. :func:`chiller_cooling` is the formula.
- ``metered``: cooling is what the site's ``cooling`` meters measured.

The configuration models are pydantic (unknown keys refused) so that the collector's site
settings can hold a ``cooling: CoolingModel`` field as they are; :func:`site_cooling` reads a
site's raw mapping (its ``cooling`` key, else its bare ``pue``). The collector's own chiller
accounting and ``wattledger plan`` both call :func:`chiller_cooling`: one formula, not two.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, field_validator, model_validator

Finite = Annotated[float, Field(allow_inf_nan=False)]
BiQuadCoefficients = tuple[Finite, Finite, Finite, Finite, Finite, Finite]
QuadCoefficients = tuple[Finite, Finite, Finite]
Span = tuple[Finite, Finite]

#: the chilled-water supply temperature of the curves' rating point (44 °F)
DEFAULT_CHILLED_WATER_C = 6.67
DEFAULT_PUE = 1.5


def biquadratic(k: BiQuadCoefficients, x: float, y: float) -> float:
    """``BQ(k; x, y) = k1 + k2 x + k3 x² + k4 y + k5 y² + k6 x y``."""
    return k[0] + k[1] * x + k[2] * x * x + k[3] * y + k[4] * y * y + k[5] * x * y


def quadratic(c: QuadCoefficients, x: float) -> float:
    """``c1 + c2 x + c3 x²``."""
    return c[0] + c[1] * x + c[2] * x * x


def clamp(value: float, span: Span) -> float:
    return min(max(value, span[0]), span[1])


class CurveLimits(BaseModel):
    """The temperatures the curves were fitted over (°C); inputs are clamped to them because a
    biquadratic extrapolates badly."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    chilled_water_c: Span
    condenser_c: Span

    @field_validator("chilled_water_c", "condenser_c")
    @classmethod
    def _ordered(cls, span: Span) -> Span:
        if not span[0] < span[1]:
            raise ValueError(f"[{span[0]:g}, {span[1]:g}] must be [low, high] with low < high")
        return span


@dataclass(frozen=True, slots=True)
class ChillerCurves:
    """A named set of performance curves (``curves: NAME``), with where its numbers come from."""

    capft: BiQuadCoefficients
    eirft: BiQuadCoefficients
    eirfplr: QuadCoefficients
    chilled_water_c: Span
    condenser_c: Span
    source: str


#: ASHRAE 90.1-2010 air-cooled chiller, Path A, as openstudio-standards ships them (NREL,
#: lib/openstudio-standards/standards/ashrae_90_1/data/ashrae_90_1.curves.json, curves
#: ``AirCooled_Chiller_2010_PathA_CAPFT``, ``AirCooled_Chiller_2010_PathA_EIRFT`` and
#: ``AirCooled_Chiller_AllCapacities_2004_2010_EIRFPLR``; there "based on Dick Lord's study dated
#: January 17, 2010"). x = chilled-water supply °C (5-10), y = outdoor dry-bulb °C (12.7-51.67);
#: CAPFT(6.67, 35) = 1.0002, EIRFT(6.67, 35) = 1.0000: the rating point is AHRI's 44 °F / 95 °F.
ASHRAE_90_1_2010_AIR_COOLED = ChillerCurves(
    capft=(1.0433825, 0.0407073, 0.0004506, -0.0041514, -8.86e-05, -0.0003467),
    eirft=(0.5961915, -0.0099496, 0.0007888, 0.0004506, 0.0004875, -0.0007623),
    eirfplr=(0.141, 0.655, 0.203),
    chilled_water_c=(5.0, 10.0),
    condenser_c=(12.7, 51.67),
    source="ASHRAE 90.1-2010 air-cooled chiller, Path A (openstudio-standards ashrae_90_1.curves.json)",
)
CURVE_PRESETS: dict[str, ChillerCurves] = {"ashrae-90.1-2010-air-cooled": ASHRAE_90_1_2010_AIR_COOLED}
CurvePreset = Literal["ashrae-90.1-2010-air-cooled"]


class OutdoorSource(BaseModel):
    """Where a minute's (or a month's) outdoor temperature comes from, in this order: the
    ``sensor`` device's readings, the ``epw`` weather file, ``fixed_c``. At least one."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    sensor: Annotated[str, Field(min_length=1)] | None = None
    epw: Path | None = None
    fixed_c: Annotated[float, Field(ge=-90, le=60, allow_inf_nan=False)] | None = None

    @model_validator(mode="after")
    def _one_at_least(self) -> OutdoorSource:
        if self.sensor is None and self.epw is None and self.fixed_c is None:
            raise ValueError("needs at least one of sensor, epw or fixed_c")
        if self.epw is not None and not self.epw.expanduser().is_file():
            raise ValueError(f"[epw] {str(self.epw)!r}: no such file")
        return self


class PueCooling(BaseModel):
    """cooling = IT x (pue - 1)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    model: Literal["pue"] = "pue"
    pue: Annotated[float, Field(ge=1, allow_inf_nan=False)] = DEFAULT_PUE


class ChillerCooling(BaseModel):
    """An air-cooled ``Chiller:Electric:EIR``: rated capacity and COP, three curves, their limits.

    ``curves: NAME`` fills ``capft``, ``eirft``, ``eirfplr`` and ``curve_limits`` from a preset;
    any of them given beside it overrides the preset's.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    model: Literal["chiller"]
    curves: CurvePreset | None = None
    cop_ref: Annotated[float, Field(gt=0, le=20, allow_inf_nan=False)]
    capacity_kw: Annotated[float, Field(gt=0, allow_inf_nan=False)]
    chilled_water_c: Annotated[float, Field(ge=-10, le=30, allow_inf_nan=False)] = DEFAULT_CHILLED_WATER_C
    capft: BiQuadCoefficients
    eirft: BiQuadCoefficients
    eirfplr: QuadCoefficients
    curve_limits: CurveLimits
    aux_ratio: Annotated[float, Field(ge=0, le=1, allow_inf_nan=False)] = 0.0
    outdoor: OutdoorSource

    @model_validator(mode="before")
    @classmethod
    def _preset(cls, value: Any) -> Any:
        if not isinstance(value, Mapping) or value.get("curves") not in CURVE_PRESETS:
            return value
        preset = CURVE_PRESETS[str(value["curves"])]
        limits = {"chilled_water_c": preset.chilled_water_c, "condenser_c": preset.condenser_c}
        return {
            "capft": preset.capft,
            "eirft": preset.eirft,
            "eirfplr": preset.eirfplr,
            "curve_limits": limits,
            **value,
        }

    @model_validator(mode="after")
    def _curves_positive(self) -> ChillerCooling:
        # a curve that reaches 0 inside its own limits would give a chiller without capacity or
        # one that cools for free: refused here rather than booked as nonsense later
        (x0, x1), (y0, y1) = self.curve_limits.chilled_water_c, self.curve_limits.condenser_c
        steps = 10
        for i in range(steps + 1):
            for j in range(steps + 1):
                x, y = x0 + (x1 - x0) * i / steps, y0 + (y1 - y0) * j / steps
                for name in ("capft", "eirft"):
                    if biquadratic(getattr(self, name), x, y) <= 0:
                        raise ValueError(
                            f"[{name}] the curve is 0 or less at chilled water {x:.2f} °C, "
                            f"condenser {y:.2f} °C, inside curve_limits"
                        )
        for plr in (0.0, 0.5, 1.0):
            if quadratic(self.eirfplr, plr) <= 0:
                raise ValueError(f"[eirfplr] the curve is 0 or less at part load {plr:g}")
        return self


class MeteredCooling(BaseModel):
    """Cooling = the energy of the site's ``meter`` devices with role ``cooling``."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    model: Literal["metered"]


#: a site's cooling model, parsed
Cooling = PueCooling | ChillerCooling | MeteredCooling
#: the same as a configuration field (``cooling: CoolingModel``): the ``model`` key picks the member
CoolingModel = Annotated[Cooling, Field(discriminator="model")]
COOLING_ADAPTER: TypeAdapter[Cooling] = TypeAdapter(CoolingModel)


def site_cooling(site: Mapping[str, Any]) -> Cooling:
    """The cooling model of one site's raw configuration mapping: its ``cooling`` key, else its
    bare ``pue`` (default 1.5). ``pydantic.ValidationError`` for a bad ``cooling`` (locations
    relative to it), ValueError when both ``cooling`` and ``pue`` are given."""
    raw = site.get("cooling")
    if raw is None:
        return PueCooling(pue=site.get("pue", DEFAULT_PUE))
    if "pue" in site:
        raise ValueError(
            "give either pue or cooling, not both (cooling: {model: pue, pue: 1.4} "
            "is the long form of pue: 1.4)"
        )
    return COOLING_ADAPTER.validate_python(raw)


# ---------------------------------------------------------------------------- the chiller formula


@dataclass(frozen=True, slots=True)
class ChillerPoint:
    """The chiller's state for one load and outdoor temperature; every intermediate, so that a
    report (or a test) can show how the cooling power came about."""

    q_load_kw: float
    chilled_water_c: float  # clamped to the curve limits
    condenser_c: float  # the outdoor dry-bulb, clamped
    capft: float
    eirft: float
    q_avail_kw: float
    plr: float
    eirfplr: float
    chiller_kw: float
    aux_kw: float

    @property
    def cooling_kw(self) -> float:
        return self.chiller_kw + self.aux_kw

    @property
    def over_capacity(self) -> bool:
        """The load is more than the chiller can carry at this temperature (PLR held at 1: the
        power is the chiller's full-load power, and the heat above it is not removed)."""
        return self.q_load_kw > self.q_avail_kw


def chiller_cooling(chiller: ChillerCooling, q_load_kw: float, outdoor_c: float) -> ChillerPoint:
    """EnergyPlus ``Chiller:Electric:EIR`` (air-cooled) at a heat load and an outdoor temperature.

    ``Q_avail = capacity_kw x CAPFT(x, y)``, ``PLR = min(Q_load / Q_avail, 1)``,
    ``P_chiller = Q_avail / cop_ref x EIRFT(x, y) x EIRFPLR(PLR)``, cooling power =
    ``P_chiller + aux_ratio x Q_load``, with x = chilled-water temperature and y = outdoor
    dry-bulb both clamped to ``curve_limits``. No minimum unloading ratio and no cycling
    (EnergyPlus with both at 0): the part-load curve is taken at PLR itself. No load, no
    cooling: a minute (or month) without IT energy books none.
    """
    if q_load_kw < 0:
        raise ValueError(f"a heat load cannot be negative ({q_load_kw:g} kW)")
    x = clamp(chiller.chilled_water_c, chiller.curve_limits.chilled_water_c)
    y = clamp(outdoor_c, chiller.curve_limits.condenser_c)
    capft = biquadratic(chiller.capft, x, y)
    eirft = biquadratic(chiller.eirft, x, y)
    q_avail = chiller.capacity_kw * capft
    if q_load_kw == 0:
        return ChillerPoint(0.0, x, y, capft, eirft, q_avail, 0.0, 0.0, 0.0, 0.0)
    plr = min(q_load_kw / q_avail, 1.0)
    eirfplr = quadratic(chiller.eirfplr, plr)
    chiller_kw = q_avail / chiller.cop_ref * eirft * eirfplr
    return ChillerPoint(
        q_load_kw, x, y, capft, eirft, q_avail, plr, eirfplr, chiller_kw, chiller.aux_ratio * q_load_kw
    )
