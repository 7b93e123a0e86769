"""INDI property vectors and their XML forms (def*, set*, delProperty, message).

The model mirrors libindi's: a vector has a device, name, label, group, state (Idle/Ok/Busy/Alert),
permission (ro/wo/rw), timeout and a list of members; switch vectors also have a rule. Every string
that can come from a client (property names in error messages, upload paths, FITS keywords) goes
through `attr()`/`text()`, which escape XML metacharacters and drop characters XML cannot carry, so
nothing a client sends can break another client's stream.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Literal, TypeVar

IDLE, OK, BUSY, ALERT = "Idle", "Ok", "Busy", "Alert"
STATES = (IDLE, OK, BUSY, ALERT)
Perm = Literal["ro", "wo", "rw"]

# Characters XML 1.0 cannot carry at all (C0 controls except tab/newline/CR, surrogates, FFFE/FFFF).
_INVALID_XML = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ud800-\udfff\ufffe\uffff]")


def _clean(s: str) -> str:
    return _INVALID_XML.sub("?", s)


def attr(s: object) -> str:
    """A value for a double-quoted XML attribute."""
    return (_clean(str(s)).replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
            .replace('"', "&quot;").replace("\n", "&#10;").replace("\r", "&#13;").replace("\t", "&#9;"))


def text(s: object) -> str:
    """Element character content."""
    return _clean(str(s)).replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def timestamp(when: datetime | None = None) -> str:
    """INDI timestamps: UTC, ISO 8601, whole seconds, no zone suffix (as libindi's timestamp())."""
    when = when or datetime.now(UTC)
    return when.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S")


def fmt_number(v: float) -> str:
    """Numbers on the wire: shortest round-trippable form libindi's atof/f_scansexa accept."""
    if isinstance(v, bool):
        v = int(v)
    if isinstance(v, int):
        return str(v)
    if not math.isfinite(v):
        return "0"
    if v == int(v) and abs(v) < 1e15:
        return str(int(v))
    return repr(float(v))


_SEXA = re.compile(r"^\s*([+-])?\s*(\d+(?:\.\d*)?)(?:[:\s]+(\d+(?:\.\d*)?))?(?:[:\s]+(\d+(?:\.\d*)?))?\s*$")


def parse_number(s: str) -> float:
    """Parse an INDI number: decimal, exponent, or sexagesimal "d:m:s" / "d m s" (as f_scansexa).

    Raises ValueError with a sentence saying what was received.
    """
    t = s.strip()
    try:
        v = float(t)
    except ValueError:
        m = _SEXA.match(t)
        if not m or (m.group(3) is None):
            raise ValueError(f"{s!r} is not a number") from None
        deg = float(m.group(2)) + float(m.group(3) or 0) / 60 + float(m.group(4) or 0) / 3600
        v = -deg if m.group(1) == "-" else deg
    if not math.isfinite(v):
        raise ValueError(f"{s!r} is not a finite number")
    return v


@dataclass
class Number:
    name: str
    label: str
    format: str
    min: float
    max: float
    step: float
    value: float


@dataclass
class Switch:
    name: str
    label: str
    on: bool = False


@dataclass
class Text:
    name: str
    label: str
    value: str = ""


@dataclass
class Light:
    name: str
    label: str
    state: str = IDLE


@dataclass
class BLOB:
    name: str
    label: str


Member = Number | Switch | Text | Light | BLOB
_M = TypeVar("_M", Number, Switch, Text)


def _kind(member: Member, kind: type[_M]) -> _M:
    if not isinstance(member, kind):
        raise TypeError(f"member {member.name!r} is a {type(member).__name__}, not a {kind.__name__}")
    return member


@dataclass
class Vector:
    """One INDI property. `kind` is Number/Switch/Text/Light/BLOB (the XML element infix)."""

    kind: str
    device: str
    name: str
    label: str
    group: str
    perm: Perm = "rw"
    state: str = IDLE
    timeout: float = 60
    rule: str | None = None  # switches: OneOfMany, AtMostOne, AnyOfMany
    members: list[Member] = field(default_factory=list)
    # The device core validates this property's values (and says what is valid when it refuses
    # one), so the INDI layer does not check numbers against the members' min/max: a second
    # bound would differ from the core's and hide its message.
    core_validated: bool = False

    # ---- lookup helpers
    def member(self, name: str) -> Member | None:
        for m in self.members:
            if m.name == name:
                return m
        return None

    def __getitem__(self, name: str) -> Member:
        m = self.member(name)
        if m is None:
            raise KeyError(name)
        return m

    def number(self, name: str) -> Number:
        """The Number member `name` (KeyError if there is none, TypeError if it is another kind)."""
        return _kind(self[name], Number)

    def switch(self, name: str) -> Switch:
        """The Switch member `name` (KeyError if there is none, TypeError if it is another kind)."""
        return _kind(self[name], Switch)

    def text(self, name: str) -> Text:
        """The Text member `name` (KeyError if there is none, TypeError if it is another kind)."""
        return _kind(self[name], Text)

    def on_switch(self) -> str | None:
        """Name of the first switch that is On (switch vectors)."""
        for m in self.members:
            if isinstance(m, Switch) and m.on:
                return m.name
        return None

    def set_one(self, name: str) -> None:
        """Turn `name` On and every other switch Off (OneOfMany)."""
        for m in self.members:
            if isinstance(m, Switch):
                m.on = m.name == name

    def values(self) -> dict[str, object]:
        out: dict[str, object] = {}
        for m in self.members:
            if isinstance(m, Number):
                out[m.name] = m.value
            elif isinstance(m, Switch):
                out[m.name] = m.on
            elif isinstance(m, Text):
                out[m.name] = m.value
            elif isinstance(m, Light):
                out[m.name] = m.state
        return out

    # ---- XML
    def _head(self, prefix: str, message: str | None, defining: bool) -> list[str]:
        parts = [f'<{prefix}{self.kind}Vector device="{attr(self.device)}" name="{attr(self.name)}"']
        if defining:
            parts.append(f' label="{attr(self.label)}" group="{attr(self.group)}"')
        parts.append(f' state="{self.state}"')
        if defining and self.kind != "Light":
            parts.append(f' perm="{self.perm}"')
        if defining and self.kind == "Switch":
            parts.append(f' rule="{self.rule or "OneOfMany"}"')
        if self.kind != "Light":
            parts.append(f' timeout="{fmt_number(self.timeout)}"')
        parts.append(f' timestamp="{timestamp()}"')
        if message:
            parts.append(f' message="{attr(message)}"')
        parts.append(">\n")
        return parts

    def def_xml(self, message: str | None = None) -> bytes:
        """The defXXXVector element announcing this property."""
        parts = self._head("def", message, True)
        for m in self.members:
            if isinstance(m, Number):
                parts.append(f'  <defNumber name="{attr(m.name)}" label="{attr(m.label)}" format="{attr(m.format)}"'
                             f' min="{fmt_number(m.min)}" max="{fmt_number(m.max)}" step="{fmt_number(m.step)}">'
                             f"{fmt_number(m.value)}</defNumber>\n")
            elif isinstance(m, Switch):
                parts.append(f'  <defSwitch name="{attr(m.name)}" label="{attr(m.label)}">'
                             f"{'On' if m.on else 'Off'}</defSwitch>\n")
            elif isinstance(m, Text):
                parts.append(f'  <defText name="{attr(m.name)}" label="{attr(m.label)}">{text(m.value)}</defText>\n')
            elif isinstance(m, Light):
                parts.append(f'  <defLight name="{attr(m.name)}" label="{attr(m.label)}">{m.state}</defLight>\n')
            elif isinstance(m, BLOB):
                parts.append(f'  <defBLOB name="{attr(m.name)}" label="{attr(m.label)}"/>\n')
        parts.append(f"</def{self.kind}Vector>\n")
        return "".join(parts).encode("utf-8")

    def set_xml(self, message: str | None = None, *, state: str | None = None,
                only: list[str] | None = None) -> bytes:
        """The setXXXVector element with the current values (optionally a different state or a
        subset of members). BLOB vectors are sent by the server's BLOB path, not here."""
        saved = self.state
        if state is not None:
            self.state = state
        try:
            parts = self._head("set", message, False)
        finally:
            self.state = saved
        for m in self.members:
            if only is not None and m.name not in only:
                continue
            if isinstance(m, Number):
                parts.append(f'  <oneNumber name="{attr(m.name)}">{fmt_number(m.value)}</oneNumber>\n')
            elif isinstance(m, Switch):
                parts.append(f'  <oneSwitch name="{attr(m.name)}">{"On" if m.on else "Off"}</oneSwitch>\n')
            elif isinstance(m, Text):
                parts.append(f'  <oneText name="{attr(m.name)}">{text(m.value)}</oneText>\n')
            elif isinstance(m, Light):
                parts.append(f'  <oneLight name="{attr(m.name)}">{m.state}</oneLight>\n')
        parts.append(f"</set{self.kind}Vector>\n")
        return "".join(parts).encode("utf-8")


def del_property_xml(device: str, name: str | None = None, message: str | None = None) -> bytes:
    """delProperty for one property, or the whole device when `name` is None."""
    s = f'<delProperty device="{attr(device)}"'
    if name:
        s += f' name="{attr(name)}"'
    s += f' timestamp="{timestamp()}"'
    if message:
        s += f' message="{attr(message)}"'
    return (s + "/>\n").encode("utf-8")


def message_xml(message: str, device: str | None = None) -> bytes:
    """A <message>; without a device it is a server-wide ("universal") message."""
    s = "<message"
    if device:
        s += f' device="{attr(device)}"'
    s += f' timestamp="{timestamp()}" message="{attr(message)}"/>\n'
    return s.encode("utf-8")


def blob_head(device: str, name: str, member: str, size: int, enclen: int, fmt: str, state: str = OK,
              message: str | None = None) -> bytes:
    """Everything of a setBLOBVector before the base64 payload (libindi's layout; see blob.py on why
    ``enclen`` obliges the payload to come in 72-character lines)."""
    msg = f' message="{attr(message)}"' if message else ""
    return (f'<setBLOBVector device="{attr(device)}" name="{attr(name)}" state="{state}" timeout="60"'
            f' timestamp="{timestamp()}"{msg}>\n'
            f'  <oneBLOB name="{attr(member)}" size="{size}" enclen="{enclen}" format="{attr(fmt)}">\n').encode()


BLOB_TAIL = b"  </oneBLOB>\n</setBLOBVector>\n"
