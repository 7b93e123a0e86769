"""A safe, incremental parser for the INDI client-to-server XML stream.

INDI is an endless sequence of top-level XML elements with no enclosing document. We feed expat a
synthetic root (``<indi>``) first, then the client's bytes as they arrive, and hand every completed
top-level element to the caller as a small `Element` tree.

Why it is safe:
* Entity expansion is impossible: a DOCTYPE can only appear before the root element, and the
  synthetic root is already open, so ``<!DOCTYPE``/``<!ENTITY`` are syntax errors for expat. As a
  second line of defence the DOCTYPE/entity-declaration handlers abort the parse, external entity
  references are refused, and parameter-entity parsing is off.
* Everything is bounded: bytes per top-level element (`max_element_bytes`), nesting depth
  (`max_depth`), children per vector (`max_children`), attribute count and length.
* Errors never propagate as crashes: a malformed, truncated, binary or oversized element yields a
  `ParseError` item (with a human sentence saying what was wrong) and the parser *resynchronises*: it
  drops input up to the next plausible INDI command tag and carries on with a fresh expat parser, so
  one bad message costs only that message, not the connection.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from xml.parsers import expat

#: Top-level tags a client may send; resynchronisation looks for the next of these.
CLIENT_TAGS = (
    "getProperties", "newSwitchVector", "newNumberVector", "newTextVector", "newBLOBVector",
    "enableBLOB", "pingReply", "pingRequest",
)
_RESYNC_RE = re.compile(rb"<(?:" + b"|".join(t.encode() for t in CLIENT_TAGS) + rb")[\s/>]")
_ROOT = b"<indi>"


@dataclass
class Element:
    """A parsed XML element: tag, attributes, text content (stripped at the ends), children."""

    tag: str
    attrib: dict[str, str]
    text: str = ""
    children: list[Element] = field(default_factory=list)

    def get(self, key: str, default: str | None = None) -> str | None:
        return self.attrib.get(key, default)


@dataclass
class ParseError:
    """A rejected piece of input; `message` says what was wrong, for an INDI message to the client."""

    message: str


class _Abort(Exception):
    """Raised inside expat handlers to stop parsing the current element."""


class IndiStreamParser:
    """Feed bytes with `feed()`; it returns the completed top-level elements and errors in order."""

    def __init__(self, *, max_element_bytes: int = 1 << 20, max_depth: int = 4, max_children: int = 1024,
                 max_attrs: int = 32, max_attr_len: int = 4096) -> None:
        self.max_element_bytes = max_element_bytes
        self.max_depth = max_depth
        self.max_children = max_children
        self.max_attrs = max_attrs
        self.max_attr_len = max_attr_len
        self.errors = 0
        self._out: list[Element | ParseError] = []
        # Bytes fed to the current expat parser since the last completed top-level element; kept so
        # that after an error we can search them for the next command to resume at. Bounded, because
        # exceeding max_element_bytes is itself an error.
        self._pending = bytearray()
        self._first = True
        self._new_parser()

    # -------------------------------------------------------------- expat plumbing
    def _new_parser(self) -> None:
        p = expat.ParserCreate()
        p.buffer_text = True
        p.ordered_attributes = False
        p.StartElementHandler = self._start
        p.EndElementHandler = self._end
        p.CharacterDataHandler = self._chars
        # Defence in depth; with the synthetic root open these cannot legally occur anyway.
        p.StartDoctypeDeclHandler = self._forbid_doctype
        p.EntityDeclHandler = self._forbid_entity
        p.ExternalEntityRefHandler = self._forbid_external
        try:
            p.SetParamEntityParsing(expat.XML_PARAM_ENTITY_PARSING_NEVER)
        except AttributeError:  # pragma: no cover - very old pyexpat
            pass
        self._parser = p
        self._stack: list[Element] = []
        self._text_len = 0
        self._element_start = 0  # stream offset (bytes fed to this parser) where the element began
        self._fed = 0  # bytes of client data fed to this parser
        self._in_root = False
        p.Parse(_ROOT, False)

    def _forbid_doctype(self, *args: object) -> None:
        raise _Abort("a DOCTYPE declaration is not allowed in INDI")

    def _forbid_entity(self, *args: object) -> None:
        raise _Abort("entity declarations are not allowed in INDI")

    def _forbid_external(self, *args: object) -> int:
        raise _Abort("external entities are not allowed in INDI")

    def _start(self, tag: str, attrs: dict[str, str]) -> None:
        if not self._in_root:  # our own synthetic root element
            self._in_root = True
            return
        depth = len(self._stack)
        if depth == 0:
            # CurrentByteIndex counts from the start of the parser's input, which includes _ROOT.
            self._element_start = max(0, self._parser.CurrentByteIndex - len(_ROOT))  # stream offset
        if depth >= self.max_depth:
            raise _Abort(f"elements nested deeper than {self.max_depth} levels")
        if len(attrs) > self.max_attrs:
            raise _Abort(f"<{tag}> has more than {self.max_attrs} attributes")
        for value in attrs.values():
            if len(value) > self.max_attr_len:
                raise _Abort(f"an attribute of <{tag}> is longer than {self.max_attr_len} characters")
        el = Element(tag, dict(attrs))
        if self._stack:
            parent = self._stack[-1]
            if len(parent.children) >= self.max_children:
                raise _Abort(f"<{parent.tag}> has more than {self.max_children} members")
            parent.children.append(el)
        self._stack.append(el)

    def _end(self, tag: str) -> None:
        if not self._stack:  # the client closed our synthetic root; what follows will be junk
            self._in_root = False
            return
        el = self._stack.pop()
        el.text = el.text.strip()
        if not self._stack:
            self._out.append(el)
            self._text_len = 0
            # Everything up to the end of this element is consumed; forget it. For an end tag
            # expat's CurrentByteIndex points at its "</"; for an empty-element tag ("<x/>") it
            # already points just past the "/>".
            rel = max(0, self._parser.CurrentByteIndex - len(_ROOT) - self._base())
            if self._pending[rel:rel + 2] == b"</":
                close = self._pending.find(b">", rel)
                if close >= 0:
                    del self._pending[:close + 1]
                else:  # cannot happen with well-formed input; keep memory bounded regardless
                    self._pending.clear()
            else:
                del self._pending[:rel]

    def _chars(self, data: str) -> None:
        if not self._stack:
            # Text between top-level elements (e.g. newlines) is legal and ignored; anything else is
            # noise we tolerate, as libindi does.
            return
        self._text_len += len(data)
        if self._text_len > self.max_element_bytes:
            raise _Abort(f"element content exceeds {self.max_element_bytes} bytes")
        self._stack[-1].text += data

    # -------------------------------------------------------------- public API
    def feed(self, data: bytes) -> list[Element | ParseError]:
        """Parse `data`; returns the elements completed and errors met, in stream order."""
        if self._first and data:
            self._first = False
            stripped = data.lstrip()
            if stripped.startswith(b"<?xml"):  # a declaration at the very start: tolerate and drop it
                end = stripped.find(b"?>")
                data = stripped[end + 2:] if end >= 0 else b""
        if self._held:
            data, self._held = self._held + data, b""
        self._feed(data)
        out, self._out = self._out, []
        return out

    def _base(self) -> int:
        """Stream offset of `_pending[0]`."""
        return self._fed - len(self._pending)

    def _feed(self, data: bytes) -> None:
        while data:
            self._pending += data
            self._fed += len(data)
            try:
                self._parser.Parse(data, False)
            except (expat.ExpatError, _Abort) as exc:
                data = self._recover(self._describe(exc))
                continue
            if self._stack and self._fed - self._element_start > self.max_element_bytes:
                data = self._recover(f"an XML element larger than {self.max_element_bytes} bytes")
                continue
            if not self._stack and len(self._pending) > 4096:
                # Only inter-element noise is held; keep a small tail in case a tag is split.
                del self._pending[:-64]
            data = b""

    def _describe(self, exc: Exception) -> str:
        if isinstance(exc, _Abort):
            return str(exc)
        code = getattr(exc, "code", None)
        text = expat.ErrorString(code) if code is not None else str(exc)
        return f"malformed XML ({text})"

    def _recover(self, why: str) -> bytes:
        """Report `why`, discard the broken element, and return the input to resume parsing with."""
        self.errors += 1
        self._out.append(ParseError(why))
        start = max(0, self._element_start - self._base()) if self._stack else 0
        tail = bytes(self._pending[start + 1:])
        self._pending.clear()
        self._new_parser()
        m = _RESYNC_RE.search(tail)
        if m:
            return tail[m.start():]
        # No command start yet: hold back only what could be the beginning of one split across
        # reads, unparsed, so it joins the next read.
        lt = tail.rfind(b"<")
        if lt >= 0 and len(tail) - lt < 32 and tail.find(b">", lt) < 0:  # an unfinished tag only
            self._held = tail[lt:]
        return b""

    _held = b""

    def close(self) -> list[Element | ParseError]:
        """End of stream: a partly received element is reported as truncated."""
        out, self._out = self._out, []
        if self._stack:
            out.append(ParseError("the connection closed in the middle of an XML element (truncated input)"))
        return out
