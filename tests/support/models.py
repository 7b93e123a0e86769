"""Which simulated camera models the model-dependent tests run against (``--models`` / ``$ZWO_TEST_MODELS``).

* ``fast`` (the default run): a representative subset, :data:`FAST`.
* ``all`` (``scripts/sweep``): every model of the simulator's catalog, ``catalog.model_names()``.
* a comma list of catalog keys (any spelling ``catalog.lookup`` accepts), e.g. ``asi676mc,asi120mc``.

Tests take the ``sweep_model`` argument (parametrised per selected model, module scope, by
``tests/conftest.py``) and start whatever server they need with it.
"""

from __future__ import annotations

from driver.simulator import catalog

#: The default run's subset: the original pair (cooled USB 3.0 colour RGGB without ST4, 14-bit; USB 2.0
#: mono with ST4 and the ASI120 area rule, 12-bit), an uncooled USB 3.0 colour camera with ST4 and a
#: square sensor, and a cooled 16-bit mono camera with HardwareBin.
FAST = ("asi294mc-pro", "asi120mm-mini", "asi676mc", "asi2600mm-pro")
ENV = "ZWO_TEST_MODELS"


def resolve(spec: str) -> list[str]:
    """The catalog keys `spec` names: "fast", "all" or a comma list (ValueError naming the valid keys)."""
    spec = spec.strip().lower()
    if spec in ("", "fast"):
        return list(FAST)
    if spec == "all":
        return catalog.model_names()
    keys: list[str] = []
    for name in spec.split(","):
        if name.strip():
            key = catalog.lookup(name).key
            if key not in keys:
                keys.append(key)
    return keys


def model(key: str) -> catalog.CameraModel:
    """The catalog model behind `key`."""
    return catalog.lookup(key)


def indi_device(key: str) -> str:
    """The INDI device name the shim gives a camera of this model, as indi_asi does: "ZWO CCD ASI294MC Pro"."""
    return "ZWO CCD " + model(key).name.removeprefix("ZWO ")
