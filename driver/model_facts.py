"""Published facts about ZWO camera models that the SDK does not report.

The core reads this table for real and simulated cameras alike (it never reads the simulator's
catalog): the sensor part number (ASCOM SensorName), the full-well capacity (ASCOM FullWellCapacity,
the FITS header) and size rules the SDK enforces without describing them (the ASI120 family wants
width x height a multiple of 1024). What the SDK does report (sensor size, pixel size, ST4, cooler,
bit depth, Bayer pattern) comes from the SDK, not from here.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

ZWO_SPECS = "ZWO product specifications"
#: Resolution, pixel size and full-well figures collected (and audited against ZWO's product pages) in
#: github.com/pozar87/apts apts/opticalequipment/camera/vendors/zwo.py; the simulator's catalog
#: (driver/simulator/catalog.py) cites the same figures, and tests/simulator/test_catalog.py keeps the
#: two tables equal for every simulated model.


@dataclass(frozen=True)
class ModelFacts:
    """What is published about one model; None where nothing is known."""

    sensor: str = ""
    full_well_e: float | None = None
    #: width x height of the SDK region must be a multiple of this (1: no rule beyond 8 x 2). ZWO's
    #: ASICamera2.h (ASISetROIFormat): "for USB2.0 camera ASI120, please make sure that
    #: iWidth*iHeight%1024=0"; the USB 3.0 ASI120 -S models keep the rule here to be safe.
    area_multiple: int = 1
    source: str = ZWO_SPECS


def _f(sensor: str, full_well_e: float | None = None, area_multiple: int = 1) -> ModelFacts:
    return ModelFacts(sensor, full_well_e, area_multiple)


# Keys are model names as the SDK reports them without the leading "ZWO ".
_FACTS: dict[str, ModelFacts] = {
    "ASI120MM": _f("AR0130CS", 13_000, 1024),
    "ASI120MC": _f("AR0130CS", 13_000, 1024),
    "ASI120MM Mini": _f("AR0130CS", 13_000, 1024),
    "ASI120MC Mini": _f("AR0130CS", 13_000, 1024),
    "ASI120MM-S": _f("AR0130CS", 13_000, 1024),
    "ASI120MC-S": _f("AR0130CS", 13_000, 1024),
    "ASI130MM": _f("MT9M001"),
    "ASI174MM": _f("IMX174", 32_000),
    "ASI174MC": _f("IMX174", 32_000),
    "ASI174MM Mini": _f("IMX174", 32_000),
    "ASI178MM": _f("IMX178", 15_000),
    "ASI178MC": _f("IMX178", 15_000),
    "ASI183MM Pro": _f("IMX183", 15_000),
    "ASI183MC Pro": _f("IMX183", 15_000),
    "ASI224MC": _f("IMX224", 19_200),
    "ASI290MM Mini": _f("IMX290", 14_600),
    "ASI290MM": _f("IMX290", 14_600),
    "ASI290MC": _f("IMX290", 14_600),
    "ASI294MM Pro": _f("IMX492", 66_000),
    "ASI294MC Pro": _f("IMX294", 63_700),
    "ASI294MC": _f("IMX294", 63_700),
    "ASI432MM": _f("IMX432", 97_000),
    "ASI462MC": _f("IMX462", 11_200),
    "ASI462MM": _f("IMX462"),
    "ASI482MC": _f("IMX482"),
    "ASI485MC": _f("IMX485"),
    "ASI533MM Pro": _f("IMX533", 50_000),
    "ASI533MC Pro": _f("IMX533", 50_000),
    "ASI585MC": _f("IMX585", 40_000),
    "ASI585MC Pro": _f("IMX585", 40_000),
    "ASI678MC": _f("IMX678", 11_270),
    "ASI715MC": _f("IMX715", 6_030),
    "ASI1600MM Pro": _f("MN34230", 20_000),
    "ASI1600MC Pro": _f("MN34230", 20_000),
    "ASI2600MM Pro": _f("IMX571", 50_000),
    "ASI2600MC Pro": _f("IMX571", 50_000),
    "ASI2600MC Duo": _f("IMX571", 50_000),
    "ASI2600MM Duo": _f("IMX571", 50_000),
    "ASI2400MC Pro": _f("IMX410", 100_000),
    "ASI6200MM Pro": _f("IMX455", 51_400),
    "ASI6200MC Pro": _f("IMX455", 51_400),
    "ASI071MC Pro": _f("IMX071", 46_000),
    "ASI676MC": _f("IMX676", 10_550),
}

_UNKNOWN = ModelFacts()


def _norm(model: str) -> str:
    n = re.sub(r"[^a-z0-9]", "", model.lower())
    return n[3:] if n.startswith("zwo") else n


_BY_NORM = {_norm(k): v for k, v in _FACTS.items()}


def facts(model: str) -> ModelFacts:
    """The facts for `model` ("ASI294MC Pro" or "ZWO ASI294MC Pro"); empty facts when unknown."""
    return _BY_NORM.get(_norm(model), _UNKNOWN)
