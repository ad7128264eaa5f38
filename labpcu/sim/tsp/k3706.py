"""Keithley 3706A switch mainframe with 3730 6×16 matrix cards (TSP), emulated.

The crosspoints this emulator closes are the bench's relays: what an SMU measures
depends on them. The emulator keeps what the instrument keeps (closed channels as the
card believes them, close counts, forbidden list, user delays, backplane assignments,
connect rule) and reports as the instrument reports; a stuck relay
(:meth:`SimBench.stick_relay`) is invisible here, as on the real card.

Channel lists (fact sheet, section B): comma-separated items, each ``SRCC`` (slot,
row, two-digit column), a rectangular range ``SRCC:SRCC`` within one slot, ``slotN``,
``allslots``, or a backplane relay ``S91R``. Bad lists raise a TSP runtime error
(-286) naming the bad item; closing a forbidden channel does too, and nothing of that
call is switched.

Timing (*model*, the 3730 actuation time is not in the sources): each close or open
call takes :data:`RELAY_SETTLE_S` of virtual time, plus, for ``close``, the largest user
delay of the channels it closes.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any

from labpcu.sim.tsp.runtime import TspEmulator, TspError, TspObject, TspTable, as_number, as_text
from labpcu.sim.wiring import MATRIX_COLUMNS, MATRIX_ROWS

if TYPE_CHECKING:
    from labpcu.sim.bench import SimBench

Channel = tuple[int, int, int]  # (slot, row, column); row 9 marks a backplane relay
N_SLOTS = 6
RELAY_SETTLE_S = 0.004
CARD_IDN = "3730,6x16 High Density Matrix,01.40h,{serial}"
BACKPLANE_ROW = 9

BREAK_BEFORE_MAKE, MAKE_BEFORE_BREAK, RULE_OFF = 1, 2, 0

_ITEM = re.compile(r"^\s*(\d{4})\s*(?::\s*(\d{4})\s*)?$")
_SLOT = re.compile(r"^\s*slot(\d+)\s*$", re.I)


def channel_name(ch: Channel) -> str:
    slot, row, col = ch
    if row == BACKPLANE_ROW:
        return f"{slot}9{col // 10}{col % 10}"[:4]
    return f"{slot}{row}{col:02d}"


class _Slot(TspObject):
    """``slot[N]``: card identity and geometry."""

    lua_get = frozenset({"idn"})
    lua_static = frozenset({"rows", "columns", "interlock"})

    def __init__(self, n: int, card: bool, serial: str) -> None:
        super().__init__(f"slot[{n}]")
        self.card = card
        self.idn = CARD_IDN.format(serial=serial) if card else "Empty Slot"
        self.rows = TspTable(f"slot[{n}].rows", constants={"matrix": MATRIX_ROWS} if card else {})
        self.columns = TspTable(f"slot[{n}].columns", constants={"matrix": MATRIX_COLUMNS} if card else {})
        self.interlock = TspTable(f"slot[{n}].interlock", readonly={"state": lambda: 1 if card else None})


class _Slots(TspObject):
    def __init__(self, slots: dict[int, _Slot]) -> None:
        super().__init__("slot")
        self.slots = slots

    def lua_item(self, index: Any) -> Any:
        if isinstance(index, (int, float)) and int(index) == index:
            return self.slots.get(int(index))
        return None


class _ChannelApi(TspObject):
    """The ``channel`` table: the switching functions."""

    lua_call = frozenset({
        "close", "open", "exclusiveclose", "exclusiveslotclose", "getclose", "getcount",
        "setdelay", "getdelay", "setbackplane", "getbackplane", "setforbidden",
        "getforbidden", "clearforbidden", "reset",
    })
    lua_static = frozenset({"BREAK_BEFORE_MAKE", "MAKE_BEFORE_BREAK", "OFF"})
    lua_get = frozenset({"connectrule"})
    lua_set = frozenset({"connectrule"})
    BREAK_BEFORE_MAKE, MAKE_BEFORE_BREAK, OFF = BREAK_BEFORE_MAKE, MAKE_BEFORE_BREAK, RULE_OFF

    def __init__(self, emu: K3706AEmulator) -> None:
        super().__init__("channel")
        self.emu = emu
        self._rule = BREAK_BEFORE_MAKE

    @property
    def connectrule(self) -> int:
        return self._rule

    @connectrule.setter
    def connectrule(self, value: Any) -> None:
        rule = as_number(value, "channel.connectrule")
        if rule not in (BREAK_BEFORE_MAKE, MAKE_BEFORE_BREAK, RULE_OFF):
            raise TspError(f"channel.connectrule: {rule:g} is not BREAK_BEFORE_MAKE, MAKE_BEFORE_BREAK or OFF")
        self._rule = int(rule)

    # -- switching
    def close(self, chlist: Any = None) -> None:
        chans = self.emu.parse(chlist, "channel.close", allow_slots=False)
        self.emu.check_not_forbidden(chans, "channel.close")
        self.emu.switch(close=chans)

    def open(self, chlist: Any = None) -> None:
        self.emu.switch(open_=self.emu.parse(chlist, "channel.open", allow_slots=True))

    def exclusiveclose(self, chlist: Any = None) -> None:
        text = as_text(chlist, "channel.exclusiveclose")
        chans = self.emu.parse(text, "channel.exclusiveclose", allow_slots=False) if text.strip() else []
        self.emu.check_not_forbidden(chans, "channel.exclusiveclose")
        others = [c for c in self.emu.closed if c not in set(chans)]
        self.emu.switch(open_=others, close=chans)

    def exclusiveslotclose(self, chlist: Any = None) -> None:
        chans = self.emu.parse(chlist, "channel.exclusiveslotclose", allow_slots=False)
        self.emu.check_not_forbidden(chans, "channel.exclusiveslotclose")
        slots = {c[0] for c in chans}
        others = [c for c in self.emu.closed if c[0] in slots and c not in set(chans)]
        self.emu.switch(open_=others, close=chans)

    # -- queries
    def getclose(self, chlist: Any = None) -> str | tuple[None]:
        scope = set(self.emu.parse(chlist, "channel.getclose", allow_slots=True))
        closed = sorted(c for c in self.emu.closed if c in scope)
        # an explicit nil (a 1-tuple) so that print() shows "nil" as the instrument does
        return ";".join(channel_name(c) for c in closed) if closed else (None,)

    def getcount(self, chlist: Any = None) -> str:
        chans = self.emu.parse(chlist, "channel.getcount", allow_slots=True)
        return ",".join(str(self.emu.counts.get(c, 0)) for c in chans)

    def setdelay(self, chlist: Any = None, seconds: Any = None) -> None:
        chans = self.emu.parse(chlist, "channel.setdelay", allow_slots=True)
        if any(c[1] == BACKPLANE_ROW for c in chans):
            raise TspError("channel.setdelay: a delay cannot be set on backplane relays")
        s = as_number(seconds, "channel.setdelay delay")
        if not 0 <= s <= 60:
            raise TspError(f"channel.setdelay: delay {s:g} s outside 0..60 s")
        for c in chans:
            self.emu.delays[c] = s

    def getdelay(self, chlist: Any = None) -> str:
        chans = self.emu.parse(chlist, "channel.getdelay", allow_slots=True)
        return ",".join(self.emu.format_number(self.emu.delays.get(c, 0.0)) for c in chans)

    def setbackplane(self, chlist: Any = None, mask: Any = None) -> None:
        chans = self.emu.parse(chlist, "channel.setbackplane", allow_slots=True)
        text = as_text(mask, "channel.setbackplane mask")
        planes = self.emu.parse(text, "channel.setbackplane mask", allow_slots=False) if text.strip() else []
        if any(p[1] != BACKPLANE_ROW for p in planes):
            raise TspError("channel.setbackplane: the mask may hold only backplane relays (S91x)")
        for c in chans:
            self.emu.backplane[c] = [channel_name(p) for p in planes]

    def getbackplane(self, chlist: Any = None) -> str:
        chans = self.emu.parse(chlist, "channel.getbackplane", allow_slots=True)
        return ";".join(",".join(self.emu.backplane.get(c, [])) for c in chans)

    def setforbidden(self, chlist: Any = None) -> None:
        self.emu.forbidden.update(self.emu.parse(chlist, "channel.setforbidden", allow_slots=True))

    def getforbidden(self, chlist: Any = None) -> str | tuple[None]:
        scope = set(self.emu.parse(chlist, "channel.getforbidden", allow_slots=True))
        chans = sorted(c for c in self.emu.forbidden if c in scope)
        return ",".join(channel_name(c) for c in chans) if chans else (None,)

    def clearforbidden(self, chlist: Any = None) -> None:
        for c in self.emu.parse(chlist, "channel.clearforbidden", allow_slots=True):
            self.emu.forbidden.discard(c)

    def reset(self, chlist: Any = None) -> None:
        for c in self.emu.parse(chlist, "channel.reset", allow_slots=True):
            self.emu.delays.pop(c, None)
            self.emu.backplane.pop(c, None)


class K3706AEmulator(TspEmulator):
    """Keithley 3706A with 3730 cards in the bench's matrix slots (default 1 and 2)."""

    model = "3706A"
    vendor = "Keithley Instruments Inc."
    firmware = "01.56a"
    description = "Keithley 3706A System Switch (emulated)"

    def __init__(self, bench: SimBench | None = None, name: str | None = "k3706a", **kwargs: Any) -> None:
        super().__init__(bench, name, **kwargs)
        card_slots = set(bench.wiring.slots) if bench is not None else {1, 2}
        self.card_slots = card_slots
        self.slots = {n: _Slot(n, n in card_slots, f"{4447330 + n}") for n in range(1, N_SLOTS + 1)}
        self.channel = _ChannelApi(self)
        self.closed: set[Channel] = set()
        self.counts: dict[Channel, int] = {}
        self.delays: dict[Channel, float] = {}
        self.backplane: dict[Channel, list[str]] = {}
        self.forbidden: set[Channel] = set()

    def identity(self) -> str:
        return f"KEITHLEY INSTRUMENTS INC.,MODEL {self.model},{self.serial},{self.firmware}"

    def lua_globals(self) -> dict[str, Any]:
        return {
            **super().lua_globals(),
            "channel": self.channel,
            "slot": _Slots(self.slots),
            "memory": TspTable("memory", functions={"available": lambda: "69.12,68.28,70.00,95.31"}),
        }

    def reset(self) -> None:
        super().reset()
        if getattr(self, "closed", None) is None:  # called by the base before __init__ ends
            return
        self.switch(open_=sorted(self.closed))
        self.channel._rule = BREAK_BEFORE_MAKE
        self.delays.clear()
        self.backplane.clear()
        self.forbidden.clear()

    # ---------------------------------------------------------------- parsing
    def parse(self, chlist: Any, where: str, allow_slots: bool) -> list[Channel]:
        """Channels named by a channel list, in order, without duplicates."""
        text = as_text(chlist, f"{where} channel list")
        out: list[Channel] = []
        for item in text.split(","):
            if not item.strip():
                raise TspError(f"{where}: empty item in channel list {text!r}")
            out.extend(self._parse_item(item, where, allow_slots))
        seen: set[Channel] = set()
        return [c for c in out if not (c in seen or seen.add(c))]

    def _parse_item(self, item: str, where: str, allow_slots: bool) -> list[Channel]:
        low = item.strip().lower()
        if low == "allslots" or _SLOT.match(low):
            if not allow_slots:
                raise TspError(f"{where}: {item.strip()!r} is not allowed here; name the channels")
            slots = sorted(self.card_slots) if low == "allslots" else [int(_SLOT.match(low).group(1))]
            for s in slots:
                if s not in self.card_slots:
                    raise TspError(f"{where}: slot {s} holds no card")
            return [(s, r, c) for s in slots for r in range(1, MATRIX_ROWS + 1) for c in range(1, MATRIX_COLUMNS + 1)]
        m = _ITEM.match(item)
        if not m:
            raise TspError(f"{where}: invalid channel {item.strip()!r}")
        first = self._channel(m.group(1), where)
        if m.group(2) is None:
            return [first]
        last = self._channel(m.group(2), where)
        if first[0] != last[0] or (first[1] == BACKPLANE_ROW) != (last[1] == BACKPLANE_ROW):
            raise TspError(f"{where}: range {item.strip()!r} must stay within one slot and one kind of relay")
        rows = range(min(first[1], last[1]), max(first[1], last[1]) + 1)
        cols = range(min(first[2], last[2]), max(first[2], last[2]) + 1)
        return [(first[0], r, c) for r in rows for c in cols]

    def _channel(self, text: str, where: str) -> Channel:
        slot, row, col = int(text[0]), int(text[1]), int(text[2:])
        if slot not in self.card_slots:
            raise TspError(f"{where}: invalid channel {text} (slot {slot} holds no card)")
        if row == BACKPLANE_ROW:
            bank, relay = divmod(col, 10)
            if bank != 1 or not 1 <= relay <= 6:
                raise TspError(f"{where}: invalid backplane relay {text} (3730: S911..S916)")
            return (slot, BACKPLANE_ROW, col)
        if not (1 <= row <= MATRIX_ROWS and 1 <= col <= MATRIX_COLUMNS):
            raise TspError(f"{where}: invalid channel {text} (rows 1..{MATRIX_ROWS}, columns 01..{MATRIX_COLUMNS})")
        return (slot, row, col)

    def check_not_forbidden(self, chans: list[Channel], where: str) -> None:
        bad = [channel_name(c) for c in chans if c in self.forbidden]
        if bad:
            raise TspError(f"{where}: forbidden channel(s) {','.join(bad)}; nothing was closed")

    # -------------------------------------------------------------- switching
    def switch(self, open_: list[Channel] = (), close: list[Channel] = ()) -> None:
        """Open then close (break before make), or close then open (make before
        break), updating the bench's relays and the virtual clock."""
        to_open = [c for c in open_ if c in self.closed]
        to_close = [c for c in close if c not in self.closed]
        steps = [("close", to_close), ("open", to_open)] if self.channel._rule == MAKE_BEFORE_BREAK else [("open", to_open), ("close", to_close)]
        for action, chans in steps:
            if not chans:
                continue
            self.charge(50 * len(chans))
            matrix = [c for c in chans if c[1] != BACKPLANE_ROW]
            if action == "close":
                self.closed.update(chans)
                for c in chans:
                    self.counts[c] = self.counts.get(c, 0) + 1
                if self.bench is not None and matrix:
                    self.bench.close_relays(matrix)
                extra = max((self.delays.get(c, 0.0) for c in chans), default=0.0)
            else:
                self.closed.difference_update(chans)
                if self.bench is not None and matrix:
                    self.bench.open_relays(matrix)
                extra = 0.0
            self.clock.advance(RELAY_SETTLE_S + extra)
