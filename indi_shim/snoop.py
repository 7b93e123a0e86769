"""Snooping, as libindi's CCD does it: what the mount, filter wheel, focuser, rotator and sky-quality
meter publish goes into the FITS header of every image.

How INDI snooping works (libindi's ``IDSnoopDevice`` and ``indiserver``): a driver writes
``<getProperties version="1.7" device="Telescope Simulator" name="EQUATORIAL_EOD_COORD"/>`` on its
own output; indiserver takes a getProperties *from a driver* as "send me that device's property",
forwards it to the driver of that device, and from then on copies that property's def/set messages
to the snooping driver. It does the same for a remote driver (``"ZWO CCD ..."@host:port``: our
TCP server chained into indiserver), because it reads that connection like a driver's. So:

* the device asks for the snooped properties on every connection that asks for the device
  (``<getProperties>``): in driver mode that is indiserver on stdin/stdout, chained it is
  indiserver's connection to our port; a plain client gets the same lines and ignores them
  (libindi's BaseClient drops any getProperties it receives; tests/indi/test_indi_snoop.py checks
  pyindi-client and indipyclient);
* def/set messages of the active devices, whatever connection they come on, update the values
  here; a delProperty forgets them (a mount that disconnected no longer says where it points);
* ACTIVE_DEVICES (always defined, as in libindi) names the five devices, with libindi's defaults;
  changing a name asks for the new device's properties and forgets the old one's values;
* SCOPE_INFO (FOCAL_LENGTH, APERTURE; defined while connected) is what Ekos sets from its optical
  train; as in libindi it wins over the mount's TELESCOPE_INFO.

The values become header cards in one place, `zwo_common.fits.observation_cards`; the mount's JNow
becomes J2000, altitude and airmass in `zwo_common.sky`.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol

from zwo_common import sky
from zwo_common.fits import Observation

from . import protocol as P
from .protocol import OK, Number, Text, Vector
from .xmlparse import Element

OPTIONS = "Options"


@dataclass(frozen=True)
class Role:
    """One ACTIVE_DEVICES member: the device it names and the properties snooped from it."""

    member: str
    label: str
    default: str
    properties: tuple[str, ...]


#: libindi's INDI::CCD members, labels, defaults and snooped properties, in its order.
ROLES = (
    Role("ACTIVE_TELESCOPE", "Telescope", "Telescope Simulator",
         ("EQUATORIAL_EOD_COORD", "EQUATORIAL_COORD", "TELESCOPE_INFO", "GEOGRAPHIC_COORD", "TELESCOPE_PIER_SIDE")),
    Role("ACTIVE_ROTATOR", "Rotator", "Rotator Simulator", ("ABS_ROTATOR_ANGLE",)),
    Role("ACTIVE_FOCUSER", "Focuser", "Focuser Simulator", ("ABS_FOCUS_POSITION", "FOCUS_TEMPERATURE")),
    Role("ACTIVE_FILTER", "Filter", "CCD Simulator", ("FILTER_SLOT", "FILTER_NAME")),
    Role("ACTIVE_SKYQUALITY", "Sky Quality", "SQM", ("SKY_QUALITY",)),
)
#: SCOPE_INFO's members and their ranges (mm), libindi's.
SCOPE_RANGES = {"FOCAL_LENGTH": (0.0, 10000.0), "APERTURE": (0.0, 3000.0)}
_BY_PROPERTY = {(r.member, p): r for r in ROLES for p in r.properties}
_SNOOPED_TAGS = frozenset(f"{verb}{kind}Vector" for verb in ("def", "set")
                          for kind in ("Number", "Switch", "Text", "Light", "BLOB"))


def request_xml(device: str, prop: str) -> bytes:
    """The snoop request libindi's IDSnoopDevice writes."""
    return f'<getProperties version="1.7" device="{P.attr(device)}" name="{P.attr(prop)}"/>\n'.encode()


class SnoopHost(Protocol):
    """What the snooping needs of its CCD device."""

    name: str
    server: Any  # the DeviceHost: broadcast()

    def make_vector(self, kind: str, name: str, label: str, group: str, perm: P.Perm, members: list[Any], *,
                    rule: str | None = None, timeout: float = 60, state: str = P.IDLE,
                    core_validated: bool = False) -> Vector:
        """A new vector of the device."""

    def publish(self, vec: Vector, message: str | None = None, **kw: Any) -> None:
        """Send a vector's values to interested clients."""


def _members(el: Element) -> dict[str, str]:
    """Member name -> text of a def/set vector (defNumber, oneNumber, defText ...)."""
    return {c.get("name") or "": c.text for c in el.children if c.get("name")}


def _number(text: str) -> float | None:
    try:
        v = P.parse_number(text)
    except ValueError:
        return None
    return v if math.isfinite(v) else None


class Snooping:
    """ACTIVE_DEVICES, SCOPE_INFO and what the active devices said, for one CCD device."""

    def __init__(self, device: SnoopHost) -> None:
        self.dev = device
        self.active: dict[str, str] = {r.member: r.default for r in ROLES}
        self._values: dict[tuple[str, str], Any] = {}  # (property, what) -> value
        self._heard: set[str] = set()  # roles whose device has published something
        self.scope = (0.0, 0.0)  # SCOPE_INFO (focal length, aperture) in mm; 0: not set
        self._scope_vector: Vector | None = None
        self.vector = device.make_vector("Text", "ACTIVE_DEVICES", "Snoop devices", OPTIONS, "rw",
                                         [Text(r.member, r.label, r.default) for r in ROLES])

    # ================================================================== properties
    def scope_vector(self) -> Vector:
        """SCOPE_INFO as libindi's CCD defines it (while connected); keeps its values across connections."""
        fl, ap = self.scope
        self._scope_vector = self.dev.make_vector("Number", "SCOPE_INFO", "Scope", OPTIONS, "rw", [
            Number("FOCAL_LENGTH", "Focal Length (mm)", "%g", *SCOPE_RANGES["FOCAL_LENGTH"], 1, fl),
            Number("APERTURE", "Aperture (mm)", "%g", *SCOPE_RANGES["APERTURE"], 1, ap)])
        return self._scope_vector

    def handler(self, name: str) -> Callable[..., Any] | None:
        """The coroutine for a client's new ACTIVE_DEVICES or SCOPE_INFO."""
        handlers: dict[str, Callable[..., Any]] = {"ACTIVE_DEVICES": self._new_active_devices,
                                                   "SCOPE_INFO": self._new_scope_info}
        return handlers.get(name)

    async def _new_active_devices(self, client: Any, vec: Vector, values: dict[str, str]) -> None:
        self.set_active(values)

    async def _new_scope_info(self, client: Any, vec: Vector, values: dict[str, float]) -> None:
        self.set_scope(values)

    def set_active(self, values: dict[str, str]) -> None:
        """New ACTIVE_DEVICES names (by member; a client's or a saved configuration's), published."""
        vec = self.vector
        changed = []
        for member, text in values.items():
            name = text.strip()
            vec.text(member).value = name
            if self.active.get(member) != name:
                self.active[member] = name
                changed.append(member)
                self._forget(member)
        vec.state = OK
        self.dev.publish(vec)
        # Ask for the newly named devices' properties on every connection that watches this device:
        # indiserver (driver mode, or chained) registers the snoop; plain clients ignore it.
        for payload in self.requests(changed):
            self.dev.server.broadcast(payload, self.dev.name)

    def set_scope(self, values: dict[str, float]) -> None:
        """New SCOPE_INFO values (mm, by member), published while the property is defined."""
        fl = float(values.get("FOCAL_LENGTH", self.scope[0]))
        ap = float(values.get("APERTURE", self.scope[1]))
        self.scope = (fl, ap)
        vec = self._scope_vector  # the last one defined; publish() sends it only while it is
        if vec is not None:
            vec.number("FOCAL_LENGTH").value, vec.number("APERTURE").value = fl, ap
            vec.state = OK
            self.dev.publish(vec)

    # ================================================================== requests and snooped traffic
    def requests(self, members: Iterable[str] | None = None) -> list[bytes]:
        """The snoop requests (getProperties) for the named roles' devices (all roles by default)."""
        wanted = set(members) if members is not None else None
        out: list[bytes] = []
        for role in ROLES:
            device = self.active.get(role.member, "")
            if device and (wanted is None or role.member in wanted):
                out.extend(request_xml(device, prop) for prop in role.properties)
        return out

    def feed(self, el: Element) -> bool:
        """A message of another device (def/set/delProperty); True if it changed what is known."""
        device = el.get("device") or ""
        prop = el.get("name") or ""
        roles = [m for m, d in self.active.items() if d and d == device]
        if not roles:
            return False
        if el.tag == "delProperty":
            for member in roles:
                self._forget(member, prop or None)
            return True
        if el.tag not in _SNOOPED_TAGS:
            return False
        used = False
        for member in roles:
            if (member, prop) in _BY_PROPERTY:
                self._heard.add(member)
                self._take(prop, _members(el))
                used = True
        return used

    def _forget(self, member: str, prop: str | None = None) -> None:
        role = next(r for r in ROLES if r.member == member)
        for p in role.properties if prop is None else (prop,):
            for key in [k for k in self._values if k[0] == p]:
                del self._values[key]
        if prop is None:
            self._heard.discard(member)

    def _take(self, prop: str, m: dict[str, str]) -> None:
        now = time.monotonic()
        v = self._values
        if prop in ("EQUATORIAL_EOD_COORD", "EQUATORIAL_COORD"):
            ra, dec = _number(m.get("RA", "")), _number(m.get("DEC", ""))
            if ra is not None and dec is not None:
                v[(prop, "pos")] = (ra, dec, now)
        elif prop == "TELESCOPE_INFO":
            for key, member in (("aperture", "TELESCOPE_APERTURE"), ("focal", "TELESCOPE_FOCAL_LENGTH")):
                x = _number(m.get(member, ""))
                if x is not None:
                    v[(prop, key)] = x
        elif prop == "GEOGRAPHIC_COORD":
            lat, lon = _number(m.get("LAT", "")), _number(m.get("LONG", ""))
            if lat is not None:
                v[(prop, "lat")] = lat
            if lon is not None:
                v[(prop, "long")] = lon - 360.0 if lon > 180 else lon  # INDI: 0-360 east; FITS: -180-180
        elif prop == "TELESCOPE_PIER_SIDE":
            side = "EAST" if m.get("PIER_EAST", "").strip() == "On" else \
                "WEST" if m.get("PIER_WEST", "").strip() == "On" else None
            v[(prop, "side")] = side
        elif prop == "ABS_ROTATOR_ANGLE":
            self._store(prop, "angle", _number(m.get("ANGLE", "")))
        elif prop == "ABS_FOCUS_POSITION":
            pos = _number(m.get("FOCUS_ABSOLUTE_POSITION", ""))
            self._store(prop, "pos", None if pos is None else int(round(pos)))
        elif prop == "FOCUS_TEMPERATURE":
            self._store(prop, "temp", _number(m.get("TEMPERATURE", "")))
        elif prop == "FILTER_SLOT":
            slot = _number(m.get("FILTER_SLOT_VALUE", ""))
            self._store(prop, "slot", None if slot is None else int(round(slot)))
        elif prop == "FILTER_NAME":
            # members FILTER_SLOT_NAME_1, _2 ...: ordered by their number, not by arrival
            names = sorted(((int(k.rsplit("_", 1)[1]), t.strip()) for k, t in m.items()
                            if k.startswith("FILTER_SLOT_NAME_") and k.rsplit("_", 1)[1].isdigit()))
            if names:
                v[(prop, "names")] = [t for _, t in names]
        elif prop == "SKY_QUALITY":
            self._store(prop, "mpsas", _number(m.get("SKY_BRIGHTNESS", "")))

    def _store(self, prop: str, key: str, value: Any) -> None:
        if value is not None:
            self._values[(prop, key)] = value

    # ================================================================== what goes into the header
    def observation(self, when: datetime) -> Observation:
        """What the active devices said, for an exposure starting at `when` (UTC)."""
        v = self._values
        focal = self.scope[0] if self.scope[0] > 0 else v.get(("TELESCOPE_INFO", "focal"))
        aperture = self.scope[1] if self.scope[1] > 0 else v.get(("TELESCOPE_INFO", "aperture"))
        slot, names = v.get(("FILTER_SLOT", "slot")), v.get(("FILTER_NAME", "names"))
        filter_name = names[slot - 1] if slot is not None and names and 1 <= slot <= len(names) else None
        ra = dec = lat = lon = az = alt = mass = None
        eod, j2k = v.get(("EQUATORIAL_EOD_COORD", "pos")), v.get(("EQUATORIAL_COORD", "pos"))
        # The mount's own J2000 when it published one more recently than its JNow, else JNow converted.
        if j2k is not None and (eod is None or j2k[2] >= eod[2]):
            ra, dec = j2k[0], j2k[1]
        elif eod is not None:
            ra, dec = sky.jnow_to_j2000(eod[0], eod[1], when)
        lat, lon = v.get(("GEOGRAPHIC_COORD", "lat")), v.get(("GEOGRAPHIC_COORD", "long"))
        if ra is not None and dec is not None and lat is not None and lon is not None:
            app_ra, app_dec = sky.j2000_to_jnow(ra, dec, when)
            az, alt = sky.horizontal(app_ra, app_dec, lat, lon, when)
            mass = sky.airmass(alt)
        focal = focal if focal is not None and focal > 0 else None  # a mount's 0 means "not set"
        aperture = aperture if aperture is not None and aperture > 0 else None
        return Observation(
            telescope=self.active["ACTIVE_TELESCOPE"] if "ACTIVE_TELESCOPE" in self._heard else None,
            focal_length_mm=focal, aperture_mm=aperture, filter_name=filter_name or None,
            focus_position=v.get(("ABS_FOCUS_POSITION", "pos")), focus_temperature=v.get(("FOCUS_TEMPERATURE", "temp")),
            rotator_angle=v.get(("ABS_ROTATOR_ANGLE", "angle")), sky_quality=v.get(("SKY_QUALITY", "mpsas")),
            ra_hours=ra, dec_deg=dec, site_lat=lat, site_long=lon, azimuth=az, altitude=alt, airmass=mass,
            pier_side=v.get(("TELESCOPE_PIER_SIDE", "side")))
