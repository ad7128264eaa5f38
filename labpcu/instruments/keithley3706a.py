"""Keithley 3706A system switch with 3730 6×16 matrix cards, over TSP.

The bench wires SMU channels to matrix rows and probe pads to matrix columns, so a
crosspoint ``(slot, row, column)`` joins one SMU to one pad. This driver closes and
opens crosspoints, keeps the instrument's forbidden list and connect rule, reads relay
close counts and card identities, and turns every instrument error into an exception.

Conventions:

* A crosspoint is a ``(slot, row, column)`` tuple or its instrument name ``"SRCC"``
  (``"1203"`` = slot 1, row 2, column 3). Slots 1–6, rows 1–6, columns 1–16 are
  checked *before* anything is sent: bad input raises :class:`LimitError` (value out
  of range) or :class:`ValueError` (malformed), and the instrument sees nothing.
* Channel lists go out comma-separated in double quotes:
  ``channel.close("1101,1203")``. Every query is ``print(...)``.
* After every configuration write the driver reads ``print(errorqueue.count)``; if it
  is not zero it drains the queue (``print(errorqueue.next())``) and raises
  :class:`InstrumentError` with the instrument's own code and text, so a forbidden
  close or a bad list can never go unnoticed.
* A timeout or a lost connection raises :class:`InstrumentCommunicationError`: the
  relay state is then unknown and the caller must treat the bench as unsafe.

Break-before-make: the driver never opens and closes relays in two calls to emulate an
exclusive close (that would leave a window in which the old and the new path are both
closed, or depend on the driver's order). :meth:`Keithley3706A.exclusive_close` sends one
``channel.exclusiveclose`` and the instrument sequences it with its connect rule, which
is ``break_before_make`` after a reset. Only set :attr:`Keithley3706A.connect_rule` to
``make_before_break`` or ``off`` if the wiring makes a momentary double connection
harmless.
"""

from __future__ import annotations

import logging
import operator
import re
from collections.abc import Iterable
from typing import Any, Union

from pymeasure.instruments import Channel, Instrument
from pymeasure.instruments.validators import strict_discrete_set

from labpcu.instruments.base import PlainAttributes, TspInstrument
from labpcu.instruments.errors import InstrumentCommunicationError, LimitError

__all__ = [
    "CARD_MODEL",
    "COLUMNS",
    "CONNECT_RULES",
    "Crosspoint",
    "CrosspointSpec",
    "Keithley3706A",
    "ROWS",
    "SLOTS",
    "SlotChannel",
    "crosspoint",
    "crosspoints",
    "format_channels",
    "parse_channels",
]

log = logging.getLogger(__name__)
log.addHandler(logging.NullHandler())

Crosspoint = tuple[int, int, int]
"""``(slot, row, column)``, all 1-based as on the card's front panel."""
CrosspointSpec = Union[Crosspoint, str]
"""A crosspoint as a tuple or as its ``"SRCC"`` name."""

SLOTS = range(1, 7)
ROWS = range(1, 7)
COLUMNS = range(1, 17)
CARD_MODEL = "3730"
#: connect-rule names and the numbers the instrument uses for them
CONNECT_RULES = {"break_before_make": 1, "make_before_break": 2, "off": 0}
#: row digit of a backplane relay (``S91R``) in replies; never accepted as input
BACKPLANE_ROW = 9

_NAME = re.compile(r"^(\d)(\d)(\d\d)$")


# ----------------------------------------------------------------- channel lists
def _integer(value: Any, what: str) -> int:
    """``value`` as an int; floats and bools are refused (``1.5`` is not a row)."""
    if isinstance(value, bool):
        raise ValueError(f"{what} must be an integer, got {value!r}")
    try:
        return operator.index(value)
    except TypeError:
        raise ValueError(f"{what} must be an integer, got {value!r}") from None


def _in_range(value: int, allowed: range, what: str, where: object) -> int:
    if value not in allowed:
        raise LimitError(
            f"{what} {value} of crosspoint {where!r} is outside {allowed.start}..{allowed.stop - 1}")
    return value


def crosspoint(spec: CrosspointSpec) -> Crosspoint:
    """One crosspoint, checked, as ``(slot, row, column)``.

    :raises LimitError: slot, row or column out of range (names the value).
    :raises ValueError: not a 3-tuple of integers nor an ``"SRCC"`` name.
    """
    if isinstance(spec, str):
        m = _NAME.match(spec.strip())
        if not m:
            raise ValueError(f"{spec!r} is not a crosspoint name 'SRCC' (e.g. '1203')")
        slot, row, col = (int(g) for g in m.groups())
    elif isinstance(spec, tuple):
        if len(spec) != 3:
            raise ValueError(f"crosspoint {spec!r} must be (slot, row, column)")
        slot, row, col = (_integer(v, name) for v, name in zip(spec, ("slot", "row", "column")))
    else:
        raise ValueError(
            f"crosspoint must be a (slot, row, column) tuple or an 'SRCC' name, got {spec!r}")
    _in_range(slot, SLOTS, "slot", spec)
    _in_range(row, ROWS, "row", spec)
    _in_range(col, COLUMNS, "column", spec)
    return (slot, row, col)


def _is_single(specs: object) -> bool:
    """One crosspoint: a name, or a tuple none of whose items is itself a crosspoint."""
    if isinstance(specs, str):
        return True
    return isinstance(specs, tuple) and bool(specs) and not any(
        isinstance(v, (tuple, list, str)) for v in specs)


def crosspoints(
    specs: CrosspointSpec | Iterable[CrosspointSpec], allow_empty: bool = False
) -> list[Crosspoint]:
    """Crosspoints in the given order, checked, without duplicates.

    ``specs`` is one crosspoint (tuple or name) or an iterable of them; a set is sorted
    so that the message sent does not depend on hashing.
    """
    if _is_single(specs):
        items: list[Any] = [specs]
    elif isinstance(specs, (set, frozenset)):
        items = sorted(specs, key=lambda s: crosspoint(s))
    else:
        try:
            items = list(specs)
        except TypeError:
            raise ValueError(f"expected crosspoints, got {specs!r}") from None
    if not items and not allow_empty:
        raise ValueError("no crosspoints given")
    out: list[Crosspoint] = []
    for item in items:
        xp = crosspoint(item)
        if xp not in out:
            out.append(xp)
    return out


def format_channels(
    specs: CrosspointSpec | Iterable[CrosspointSpec], allow_empty: bool = False
) -> str:
    """The TSP channel list (without quotes) for ``specs``: ``"1101,1203"``."""
    return ",".join(f"{s}{r}{c:02d}" for s, r, c in crosspoints(specs, allow_empty))


def parse_channels(reply: str) -> set[Crosspoint]:
    """Channels in a ``getclose``/``getforbidden`` reply.

    Accepts ``nil`` / empty (nothing), ``;`` (current manuals) and ``,`` (Rev C
    manual) separators, and the 4-pole form ``3003(3033)`` (the paired channel is
    dropped). A backplane relay ``S91R`` comes back as ``(S, 9, 10 + R)``.

    :raises ValueError: an item is not a 4-digit channel name.
    """
    text = reply.strip()
    if text in ("", "nil"):
        return set()
    out: set[Crosspoint] = set()
    for item in re.split(r"[;,]", text):
        name = item.split("(", 1)[0].strip()
        m = _NAME.match(name)
        if not m:
            raise ValueError(f"unexpected channel {item!r} in reply {reply!r}")
        out.add((int(m.group(1)), int(m.group(2)), int(m.group(3))))
    return out


def _slot_scope(slot: int | None) -> str:
    """``"allslots"`` or ``"slotN"`` for a query, slot checked first."""
    if slot is None:
        return "allslots"
    n = _integer(slot, "slot")
    if n not in SLOTS:
        raise LimitError(f"slot {n} is outside {SLOTS.start}..{SLOTS.stop - 1}")
    return f"slot{n}"


def _nil_or_int(value: Any) -> int | None:
    """Card geometry: a number, or ``nil`` for an empty slot."""
    return int(value) if isinstance(value, float) else None


# ------------------------------------------------------------------------ slots
class SlotChannel(PlainAttributes, Channel):
    """One card slot (``slot[N]``): what is plugged in and its matrix size."""

    idn = Channel.measurement(
        "print(slot[{ch}].idn)",
        """Get the card identity, e.g. ``3730,6x16 High Density Matrix,01.40h,4447332``,
        or ``Empty Slot``.""",
        cast=str,
        maxsplit=0,  # the identity is one string, commas included
    )
    rows = Channel.measurement(
        "print(slot[{ch}].rows.matrix)",
        """Get the number of matrix rows (6 on a 3730), ``None`` for an empty slot.""",
        get_process=_nil_or_int,
    )
    columns = Channel.measurement(
        "print(slot[{ch}].columns.matrix)",
        """Get the number of matrix columns (16 on a 3730), ``None`` for an empty slot.""",
        get_process=_nil_or_int,
    )

    def ask(self, command: str, query_delay: float | None = None) -> str:
        # through the parent so that a silent (failed) query is diagnosed the same way
        return self.parent.ask(self.insert_id(command), query_delay)


# ------------------------------------------------------------------- instrument
class Keithley3706A(TspInstrument):
    """Keithley 3706A mainframe with 3730 matrix cards.

    :param adapter: a pymeasure adapter, or a VISA resource string (then ``kwargs`` go
        to :class:`~pymeasure.adapters.VISAAdapter`; terminations default to ``"\\n"``).
    :param name: used in log lines and in :class:`InstrumentError`.
    """

    slots = Instrument.MultiChannelCreator(SlotChannel, tuple(SLOTS), prefix="slot_")

    def __init__(self, adapter: Any, name: str = "Keithley 3706A", **kwargs: Any) -> None:
        if isinstance(adapter, (str, int)):
            kwargs.setdefault("read_termination", "\n")
            kwargs.setdefault("write_termination", "\n")
        with self._link(f"opening {adapter!r}", name):
            super().__init__(adapter, name, includeSCPI=False, **kwargs)

    # -- communication ------------------------------------------------------------






    # -- errors -------------------------------------------------------------------





    def clear(self) -> None:
        """Same as :meth:`clear_errors` (pymeasure's name for it)."""
        self.clear_errors()


    def _configure(self, command: str) -> None:
        """A configuration write followed by the error check."""
        self.write(command)
        self.check_set_errors()

    # -- identity and settings ----------------------------------------------------
    id = Instrument.measurement(
        "*IDN?",
        """Get the mainframe identity (``KEITHLEY INSTRUMENTS INC.,MODEL 3706A,...``).""",
        cast=str,
        maxsplit=0,
    )

    connect_rule = Instrument.control(
        "print(channel.connectrule)",
        "channel.connectrule = %d",
        """Control how the instrument sequences relays when one call opens some and
        closes others: ``"break_before_make"`` (default after reset; opens first),
        ``"make_before_break"`` or ``"off"`` (no ordering).""",
        validator=strict_discrete_set,
        values=CONNECT_RULES,
        map_values=True,
        check_set_errors=True,
    )

    def slot_idn(self, slot: int) -> str:
        """Identity string of the card in ``slot`` (``Empty Slot`` if none)."""
        return self.slots[self._slot(slot)].idn

    def cards(self) -> dict[int, str]:
        """``{slot: identity}`` of every slot holding a 3730 matrix card.

        Other card models are left out (logged): this driver addresses them with the
        3730's ``SRCC`` scheme, which would be wrong for them.
        """
        out: dict[int, str] = {}
        for n in SLOTS:
            idn = self.slot_idn(n).strip()
            if idn.split(",", 1)[0].strip() == CARD_MODEL:
                out[n] = idn
            elif idn != "Empty Slot":
                log.warning("%s: slot %d holds %r, not a %s; ignored", self.name, n, idn, CARD_MODEL)
        return out

    def matrix_size(self, slot: int) -> tuple[int, int] | None:
        """``(rows, columns)`` of the matrix in ``slot``; ``None`` for an empty slot."""
        ch = self.slots[self._slot(slot)]
        rows = ch.rows
        if rows is None:
            return None
        cols = ch.columns
        return (rows, cols) if cols is not None else None

    @staticmethod
    def _slot(slot: int) -> int:
        n = _integer(slot, "slot")
        if n not in SLOTS:
            raise LimitError(f"slot {n} is outside {SLOTS.start}..{SLOTS.stop - 1}")
        return n

    # -- switching ----------------------------------------------------------------
    def close(self, specs: CrosspointSpec | Iterable[CrosspointSpec]) -> None:
        """Close crosspoints in addition to those already closed (one call; the
        instrument refuses it whole if any is forbidden)."""
        self._configure(f'channel.close("{format_channels(specs)}")')

    def open(self, specs: CrosspointSpec | Iterable[CrosspointSpec]) -> None:
        """Open crosspoints; the others stay as they are."""
        self._configure(f'channel.open("{format_channels(specs)}")')

    def open_all(self) -> None:
        """Open every relay of every card."""
        self._configure('channel.open("allslots")')

    def exclusive_close(self, specs: CrosspointSpec | Iterable[CrosspointSpec] = ()) -> None:
        """Close exactly these crosspoints and open every other one; empty opens all.

        One ``channel.exclusiveclose`` call: the instrument orders the opens and closes
        with its :attr:`connect_rule` (break before make by default), never the driver.
        """
        self._configure(f'channel.exclusiveclose("{format_channels(specs, allow_empty=True)}")')

    def exclusive_slot_close(self, specs: CrosspointSpec | Iterable[CrosspointSpec]) -> None:
        """Like :meth:`exclusive_close`, but only the slots named in ``specs`` are
        touched; other slots keep their relays."""
        self._configure(f'channel.exclusiveslotclose("{format_channels(specs)}")')

    def closed(self, slot: int | None = None) -> set[Crosspoint]:
        """Crosspoints the card reports closed (all slots, or one slot).

        This is what the card commanded; a welded relay is invisible here.
        """
        return self._ask_channels(f'print(channel.getclose("{_slot_scope(slot)}"))')

    def _ask_channels(self, query: str) -> set[Crosspoint]:
        """A query whose reply is a channel list (or ``nil``), parsed."""
        reply = self.ask(query)
        try:
            return parse_channels(reply)
        except ValueError as exc:
            raise InstrumentCommunicationError(f"{self.name}: reply to {query!r}: {exc}") from None

    def close_counts(self, specs: CrosspointSpec | Iterable[CrosspointSpec]) -> dict[Crosspoint, int]:
        """Lifetime close count of each relay (contact wear), by crosspoint."""
        chans = crosspoints(specs)
        query = f'print(channel.getcount("{format_channels(chans)}"))'
        reply = self.ask(query)
        fields = [f.strip() for f in reply.strip().split(",")]
        if len(fields) != len(chans):
            raise InstrumentCommunicationError(
                f"{self.name}: {len(fields)} counts in reply {reply!r} to {query!r}, expected {len(chans)}")
        return {xp: int(self._number(f, query)) for xp, f in zip(chans, fields)}

    # -- forbidden list -----------------------------------------------------------
    def set_forbidden(self, specs: CrosspointSpec | Iterable[CrosspointSpec]) -> None:
        """Add crosspoints to the instrument's forbidden list: it will refuse to close
        them (whole call refused) until they are cleared. Does not open them."""
        self._configure(f'channel.setforbidden("{format_channels(specs)}")')

    def get_forbidden(self, slot: int | None = None) -> set[Crosspoint]:
        """Forbidden crosspoints (all slots, or one slot)."""
        return self._ask_channels(f'print(channel.getforbidden("{_slot_scope(slot)}"))')

    def clear_forbidden(self, specs: CrosspointSpec | Iterable[CrosspointSpec] | None = None) -> None:
        """Remove crosspoints from the forbidden list; ``None`` clears it entirely
        (an empty list is refused, so that it cannot clear everything by accident)."""
        chlist = "allslots" if specs is None else format_channels(specs)
        self._configure(f'channel.clearforbidden("{chlist}")')

    # -- whole instrument ---------------------------------------------------------
    def reset(self) -> None:
        """``reset()``: all relays open, connect rule break-before-make, forbidden list,
        delays and backplane settings back to defaults."""
        self._configure("reset()")

    def shutdown(self) -> None:
        """Safe state: every relay open. Raises if that could not be confirmed."""
        try:
            self.open_all()
        finally:
            super().shutdown()
