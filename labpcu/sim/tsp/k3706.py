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

What drivers read at connect, beyond the switching functions (README, "Emulator
conformance"):

* the IEEE-488.2 status model: ``*STB?`` (EAV, MAV, ESB, MSS), ``*ESR?`` (read clears),
  ``*ESE``/``*ESE?``, ``*SRE``/``*SRE?``, ``*CLS``, ``*OPC``/``*OPC?``, and the TSP
  ``status`` table over the same registers (``status.condition``,
  ``status.standard.*``, ``status.request_enable``, ``status.reset()``, and the
  operation/questionable/measurement/system registers, which never set a bit here).
  Every queued error latches its class bit in the standard event register (command
  error -1xx, execution error -2xx, device-dependent -3xx and positive codes, query
  error -4xx); power-on sets PON;
* ``comm`` (GPIB and LAN enable states, booleans), ``gpib.address``, ``lan`` (config,
  status, ports, ``lan.applysettings()``/``reset()``/``restoredefaults()``, nagle);
* ``setup.save()``/``setup.recall(id)``/``setup.poweron``: one user setup in
  nonvolatile memory (id 1; 0 recalls the factory defaults). A saved setup holds the
  closed relays, connect rule, delays, backplane assignments, forbidden list and
  number format; recalling resets the instrument first, then switches the saved
  relays closed (through the connect rule, so the bench sees them). A string id names
  a file on a USB flash drive, which this emulator has not: the call fails;
* ``localnode`` (model, serial number, revision, a writable description, line
  frequency, prompts), ``slot[N]`` identity and matrix size, ``channel.getstate``.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any

from labpcu.sim.emulator import ErrorQueue, InstrumentError
from labpcu.sim.tsp.stdlib import StdlibEmulator
from labpcu.sim.tsp.runtime import (
    TspError,
    TspObject,
    TspParameterError,
    TspTable,
    as_flag,
    as_number,
    as_text,
)
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
        "getforbidden", "clearforbidden", "reset", "getstate",
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

    def getstate(self, chlist: Any = None, index: Any = None) -> str:
        """Per channel, comma-separated: 1 when the card has it closed, else 0
        (*model*: the manual's other state bits are not in the sources)."""
        chans = self.emu.parse(chlist, "channel.getstate", allow_slots=True)
        if index is not None:
            as_number(index, "channel.getstate index")
        return ",".join("1" if c in self.emu.closed else "0" for c in chans)

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


# ------------------------------------------------------------------ status model
#: status byte bits (IEEE-488.2 and the TSP names for them)
STB_BITS = {"MEASUREMENT_SUMMARY_BIT": 1, "MSB": 1, "SYSTEM_SUMMARY_BIT": 2, "SSB": 2,
            "ERROR_AVAILABLE": 4, "EAV": 4, "QUESTIONABLE_SUMMARY_BIT": 8, "QSB": 8,
            "MESSAGE_AVAILABLE": 16, "MAV": 16, "EVENT_SUMMARY_BIT": 32, "ESB": 32,
            "MASTER_SUMMARY_STATUS": 64, "MSS": 64, "OPERATION_SUMMARY_BIT": 128, "OSB": 128}
#: standard event register bits
ESR_BITS = {"OPERATION_COMPLETE": 1, "OPC": 1, "QUERY_ERROR": 4, "QYE": 4,
            "DEVICE_DEPENDENT_ERROR": 8, "DDE": 8, "EXECUTION_ERROR": 16, "EXE": 16,
            "COMMAND_ERROR": 32, "CME": 32, "USER_REQUEST": 64, "URQ": 64, "POWER_ON": 128, "PON": 128}
OPC_BIT, QYE_BIT, DDE_BIT, EXE_BIT, CME_BIT, PON_BIT = 1, 4, 8, 16, 32, 128
ESB_BIT, EAV_BIT, MAV_BIT, MSS_BIT = 32, 4, 16, 64


def error_class_bit(code: int) -> int:
    """The standard-event bit an error of ``code`` latches."""
    if -199 <= code <= -100:
        return CME_BIT
    if -299 <= code <= -200:
        return EXE_BIT
    if -499 <= code <= -400:
        return QYE_BIT
    return DDE_BIT  # -3xx, and the instrument's own positive codes


def _register_value(value: Any, what: str) -> int:
    v = as_number(value, what)
    if v != int(v) or not 0 <= v <= 65535:
        raise TspParameterError(f"Parameter data out of range; {what} {v:g}")
    return int(v)


class _Register(TspObject):
    """One TSP status register: condition (read only), event (read clears), enable,
    ntr, ptr. Nothing in this emulator sets its condition bits except the standard
    event register's events."""

    lua_get = frozenset({"condition", "event", "enable", "ntr", "ptr"})
    lua_set = frozenset({"enable", "ntr", "ptr"})

    def __init__(self, path: str, constants: dict[str, int] | None = None) -> None:
        super().__init__(path)
        self.consts = dict(constants or {})
        self.events = 0
        self._enable = 0
        self._ntr = 0
        self._ptr = 0

    def lua_getattr(self, key: Any) -> Any:
        if isinstance(key, str) and key in self.consts:
            return self.consts[key]
        return super().lua_getattr(key)

    @property
    def condition(self) -> int:
        return 0

    @property
    def event(self) -> int:
        value, self.events = self.events, 0
        return value

    @property
    def enable(self) -> int:
        return self._enable

    @enable.setter
    def enable(self, value: Any) -> None:
        self._enable = _register_value(value, f"{self.lua_path}.enable")

    @property
    def ntr(self) -> int:
        return self._ntr

    @ntr.setter
    def ntr(self, value: Any) -> None:
        self._ntr = _register_value(value, f"{self.lua_path}.ntr")

    @property
    def ptr(self) -> int:
        return self._ptr

    @ptr.setter
    def ptr(self, value: Any) -> None:
        self._ptr = _register_value(value, f"{self.lua_path}.ptr")

    def clear_events(self) -> None:
        self.events = 0

    def clear_all(self) -> None:
        self.events = self._enable = self._ntr = self._ptr = 0


class _OperationRegister(_Register):
    """``status.operation``, with its ``user`` register."""

    lua_static = frozenset({"user"})

    def __init__(self, path: str) -> None:
        super().__init__(path)
        self.user = _Register(f"{path}.user")


class StatusModel(TspObject):
    """The ``status`` table and the registers ``*STB?``/``*ESR?``/``*SRE``/``*ESE``
    read and write (one set of registers behind both)."""

    lua_static = frozenset({"standard", "operation", "questionable", "measurement", "system",
                            "system2", "system3", "system4", "system5"})
    lua_call = frozenset({"reset"})
    lua_get = frozenset({"condition", "request_enable", "request_event", "node_enable", "node_event"})
    lua_set = frozenset({"request_enable", "node_enable"})

    def __init__(self, emu: K3706AEmulator) -> None:
        super().__init__("status")
        self.emu = emu
        self.standard = _Register("status.standard", ESR_BITS)
        self.standard.events = PON_BIT  # the instrument was just switched on
        self.operation = _OperationRegister("status.operation")
        self.questionable = _Register("status.questionable")
        self.measurement = _Register("status.measurement")
        self.system = _Register("status.system")
        self.system2 = _Register("status.system2")
        self.system3 = _Register("status.system3")
        self.system4 = _Register("status.system4")
        self.system5 = _Register("status.system5")
        self._sre = 0
        self._node_enable = 0

    def lua_getattr(self, key: Any) -> Any:
        if isinstance(key, str) and key in STB_BITS:
            return STB_BITS[key]
        return super().lua_getattr(key)

    def registers(self) -> list[_Register]:
        return [self.standard, self.operation, self.operation.user, self.questionable,
                self.measurement, self.system, self.system2, self.system3, self.system4, self.system5]

    # -- the status byte
    def status_byte(self) -> int:
        stb = 0
        if len(self.emu.errors):
            stb |= EAV_BIT
        if self.emu.pending_output():
            stb |= MAV_BIT
        if self.standard.events & self.standard.enable:
            stb |= ESB_BIT
        if stb & self._sre & ~MSS_BIT:
            stb |= MSS_BIT
        return stb

    @property
    def condition(self) -> int:
        return self.status_byte()

    @property
    def request_event(self) -> int:
        return self.status_byte()

    @property
    def request_enable(self) -> int:
        return self._sre

    @request_enable.setter
    def request_enable(self, value: Any) -> None:
        self._sre = _register_value(value, "status.request_enable") & 0xFF & ~MSS_BIT

    @property
    def node_enable(self) -> int:
        return self._node_enable

    @node_enable.setter
    def node_enable(self, value: Any) -> None:
        self._node_enable = _register_value(value, "status.node_enable") & 0xFF & ~MSS_BIT

    @property
    def node_event(self) -> int:
        return self.status_byte()

    def reset(self) -> None:
        """``status.reset()``: every event and enable register cleared."""
        for reg in self.registers():
            reg.clear_all()
        self._sre = self._node_enable = 0

    # -- what the common commands and the error queue do
    def latch(self, bits: int) -> None:
        self.standard.events |= bits

    def clear(self) -> None:
        """``*CLS``: event registers cleared (enables kept); the queue is cleared too."""
        for reg in self.registers():
            reg.clear_events()


class _LatchingErrorQueue(ErrorQueue):
    """The error queue; each error also latches its class bit in the standard event
    register."""

    def __init__(self, capacity: int, overflow: InstrumentError, latch: Any) -> None:
        super().__init__(capacity, overflow)
        self._latch = latch

    def push(self, code: int, message: str, severity: int = 30) -> None:
        super().push(code, message, severity)
        self._latch(error_class_bit(int(code)))


# ----------------------------------------------------------- comm, gpib and lan
_DOTTED = re.compile(r"^(\d{1,3})\.(\d{1,3})\.(\d{1,3})\.(\d{1,3})$")


def _dotted(value: Any, what: str) -> str:
    text = as_text(value, what)
    m = _DOTTED.match(text.strip())
    if not m or any(int(g) > 255 for g in m.groups()):
        raise TspParameterError(f"Parameter data out of range; {what} {text!r} is not a dotted-decimal address")
    return text.strip()


def _flag(what: str) -> Any:
    return lambda value: as_flag(value, what)


def _make_comm() -> TspTable:
    """``comm``: which interfaces accept commands (booleans, all enabled). *Model*:
    the emulator keeps the settings but never closes an interface because of them."""
    lan = TspTable("comm.lan", fields={"enable": True}, validators={"enable": _flag("comm.lan.enable")})
    for sub in ("rawsockets", "telnet", "vxi11", "web"):
        lan.constants[sub] = TspTable(f"comm.lan.{sub}", fields={"enable": True},
                                      validators={"enable": _flag(f"comm.lan.{sub}.enable")})
    gpib = TspTable("comm.gpib", fields={"enable": True}, validators={"enable": _flag("comm.gpib.enable")})
    return TspTable("comm", constants={"gpib": gpib, "lan": lan, "ENABLE": 1, "DISABLE": 0})


def _gpib_address(value: Any) -> int:
    v = as_number(value, "gpib.address")
    if v != int(v) or not 0 <= v <= 30:
        raise TspParameterError(f"Parameter data out of range; gpib.address {v:g}")
    return int(v)


LAN_DEFAULTS = {"method": 0, "ipaddress": "192.168.0.2", "subnetmask": "255.255.255.0",
                "gateway": "192.168.0.1"}


class _Lan:
    """``lan``: configuration (applied by ``lan.applysettings()``), status, ports."""

    AUTO, MANUAL = 0, 1

    def __init__(self, serial: str) -> None:
        n = int(serial) if serial.isdigit() else 0
        self.mac = "08:00:11:{:02X}:{:02X}:{:02X}".format((n >> 16) & 0xFF, (n >> 8) & 0xFF, n & 0xFF)
        self.hostname = f"K-3706A-{serial}"
        self.dns = TspTable("lan.config.dns", fields={"domain": "", "dynamic": 1, "hostname": self.hostname,
                                                      "verify": 1},
                            validators={"domain": lambda v: as_text(v, "lan.config.dns.domain"),
                                        "hostname": lambda v: as_text(v, "lan.config.dns.hostname"),
                                        "dynamic": lambda v: 1 if as_flag(v, "lan.config.dns.dynamic") else 0,
                                        "verify": lambda v: 1 if as_flag(v, "lan.config.dns.verify") else 0},
                            constants={"address": TspTable("lan.config.dns.address")})
        self.config = TspTable(
            "lan.config", fields=dict(LAN_DEFAULTS),
            validators={"method": self._method, "ipaddress": lambda v: _dotted(v, "lan.config.ipaddress"),
                        "subnetmask": lambda v: _dotted(v, "lan.config.subnetmask"),
                        "gateway": lambda v: _dotted(v, "lan.config.gateway")},
            constants={"dns": self.dns})
        self.applied = dict(LAN_DEFAULTS)
        ports = TspTable("lan.status.port", constants={"rawsocket": 5025, "telnet": 23, "vxi11": 1024, "dst": 5030})
        status_dns = TspTable("lan.status.dns", readonly={"name": lambda: self.dns.fields["hostname"]},
                              constants={"address": TspTable("lan.status.dns.address")})
        self.status = TspTable(
            "lan.status",
            readonly={"ipaddress": lambda: self.applied["ipaddress"] if self.applied["method"] == 1 else "127.0.0.1",
                      "subnetmask": lambda: self.applied["subnetmask"] if self.applied["method"] == 1 else "255.0.0.0",
                      "gateway": lambda: self.applied["gateway"] if self.applied["method"] == 1 else "0.0.0.0",
                      "macaddress": lambda: self.mac, "duplex": lambda: 1, "speed": lambda: 100},
            constants={"port": ports, "dns": status_dns})
        self.table = TspTable(
            "lan",
            constants={"config": self.config, "status": self.status, "AUTO": 0, "MANUAL": 1, "ENABLE": 1,
                       "DISABLE": 0, "FULL": 1, "HALF": 0},
            fields={"nagle": False, "lxidomain": 0},
            validators={"nagle": _flag("lan.nagle"), "lxidomain": self._lxidomain},
            functions={"applysettings": self.applysettings, "reset": self.applysettings,
                       "restoredefaults": self.restoredefaults})

    @staticmethod
    def _method(value: Any) -> int:
        v = as_number(value, "lan.config.method")
        if v not in (0, 1):
            raise TspParameterError(f"Parameter data out of range; lan.config.method {v:g}")
        return int(v)

    @staticmethod
    def _lxidomain(value: Any) -> int:
        v = as_number(value, "lan.lxidomain")
        if v != int(v) or not 0 <= v <= 255:
            raise TspParameterError(f"Parameter data out of range; lan.lxidomain {v:g}")
        return int(v)

    def applysettings(self) -> None:
        """``lan.applysettings()``/``lan.reset()``: the configuration takes effect."""
        self.applied = {k: self.config.fields[k] for k in LAN_DEFAULTS}

    def restoredefaults(self) -> None:
        self.config.reset_fields()
        self.dns.reset_fields()
        self.table.reset_fields()
        self.applysettings()


# ---------------------------------------------------------------------- setups
class _Setup(TspObject):
    """``setup``: one user setup in nonvolatile memory (id 1), factory defaults (0)."""

    lua_call = frozenset({"save", "recall"})
    lua_get = frozenset({"poweron"})
    lua_set = frozenset({"poweron"})

    def __init__(self, emu: K3706AEmulator) -> None:
        super().__init__("setup")
        self.emu = emu
        self.saved: dict[str, Any] | None = None
        self._poweron = 0

    @property
    def poweron(self) -> int:
        return self._poweron

    @poweron.setter
    def poweron(self, value: Any) -> None:
        v = as_number(value, "setup.poweron")
        if v not in (0, 1):
            raise TspParameterError(f"Parameter data out of range; setup.poweron {v:g}")
        self._poweron = int(v)

    def _location(self, ident: Any, where: str, allow_default: bool) -> int:
        if isinstance(ident, str):
            raise TspError(f"{where}: no USB flash drive is inserted (cannot use file {ident!r})")
        if ident is None and allow_default:
            return 1
        n = as_number(ident, f"{where} id")
        if n not in ((1,) if where == "setup.save" else (0, 1)):
            raise TspError(f"{where}: setup id {n:g} is not available "
                           f"({'1' if where == 'setup.save' else '0 (factory) or 1'})")
        return int(n)

    def save(self, ident: Any = None) -> None:
        self._location(ident, "setup.save", allow_default=True)
        self.saved = self.emu.capture_setup()

    def recall(self, ident: Any = None) -> None:
        n = self._location(ident, "setup.recall", allow_default=False)
        if n == 1 and self.saved is None:
            raise TspError("setup.recall: no setup has been saved at id 1")
        self.emu.reset()
        if n == 1:
            assert self.saved is not None
            self.emu.apply_setup(self.saved)


class K3706AEmulator(StdlibEmulator):
    """Keithley 3706A with 3730 cards in the bench's matrix slots (default 1 and 2)."""

    model = "3706A"
    vendor = "Keithley Instruments Inc."
    firmware = "01.56a"
    description = "Keithley 3706A System Switch (emulated)"

    #: GPIB address after a factory reset of the communication settings
    DEFAULT_GPIB_ADDRESS = 16

    def __init__(self, bench: SimBench | None = None, name: str | None = "k3706a", **kwargs: Any) -> None:
        super().__init__(bench, name, **kwargs)
        # the description is the instrument's own LXI name: writable, kept over a reset
        self.localnode.readonly.pop("description", None)
        self.localnode.fields["description"] = self.localnode.defaults["description"] = (
            f"Keithley Instruments Inc. Model {self.model} - {self.serial}")
        self.localnode.validators["description"] = lambda v: as_text(v, "localnode.description")[:63]
        self.comm = _make_comm()
        self.gpib = TspTable("gpib", fields={"address": self.DEFAULT_GPIB_ADDRESS},
                             validators={"address": _gpib_address})
        self.lan = _Lan(self.serial)
        self.setup = _Setup(self)
        self.dmm = TspTable("dmm", fields={"func": "dcvolts", "nplc": 1.0},
                            constants={"DC_VOLTS": "dcvolts"}, functions={"reset": self._dmm_reset})
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
            "status": self.status,
            "comm": self.comm,
            "gpib": self.gpib,
            "lan": self.lan.table,
            "setup": self.setup,
            "dmm": self.dmm,
        }

    # ------------------------------------------------------------ status model
    def _make_error_queue(self) -> ErrorQueue:
        # called by Emulator.__init__, before anything of this class exists
        self.status = StatusModel(self)
        return _LatchingErrorQueue(30, InstrumentError(-350, "Queue overflow"), self.status.latch)

    def _common_command(self, text: str) -> None:
        head, _, arg = text.partition(" ")
        cmd = head.upper()
        status = self.status
        if cmd == "*STB?":
            self.reply(str(status.status_byte()))
        elif cmd == "*ESR?":
            self.reply(str(status.standard.event))
        elif cmd == "*ESE?":
            self.reply(str(status.standard.enable))
        elif cmd == "*SRE?":
            self.reply(str(status.request_enable))
        elif cmd in ("*ESE", "*SRE"):
            try:
                value = float(arg)
                if value != int(value) or not 0 <= value <= 255:
                    raise ValueError
            except ValueError:
                self.push_error(-222, f"Parameter data out of range; {head} {arg.strip()!r}")
                return
            if cmd == "*ESE":
                status.standard.enable = value
            else:
                status.request_enable = value
        elif cmd == "*CLS":
            self.errors.clear()
            status.clear()
        elif cmd == "*OPC":
            status.latch(OPC_BIT)  # every operation here completes before the next message
        else:
            super()._common_command(text)

    def power_cycle(self) -> None:
        """Power off and on: Lua state and settings lost, PON latched, the power-on
        setup (``setup.poweron``) applied; saved setups, GPIB address and LAN
        settings are nonvolatile and kept."""
        super().power_cycle()
        with self._lock:
            self.status.clear()
            self.status.reset()
            self.status.latch(PON_BIT)
            if self.setup.poweron == 1 and self.setup.saved is not None:
                self.apply_setup(self.setup.saved)

    # ----------------------------------------------------------------- setups
    def capture_setup(self) -> dict[str, Any]:
        """What ``setup.save()`` keeps."""
        return {
            "closed": sorted(self.closed),
            "rule": self.channel._rule,
            "delays": dict(self.delays),
            "backplane": {c: list(v) for c, v in self.backplane.items()},
            "forbidden": set(self.forbidden),
            "format": (self.format.data, self.format.byteorder, self.format.asciiprecision),
        }

    def apply_setup(self, saved: dict[str, Any]) -> None:
        """Restore a saved setup over a reset instrument: settings first, then the
        relays (switched as any close is, so the bench follows)."""
        self.channel._rule = saved["rule"]
        self.delays = dict(saved["delays"])
        self.backplane = {c: list(v) for c, v in saved["backplane"].items()}
        self.forbidden = set(saved["forbidden"])
        self.format.data, self.format.byteorder, self.format.asciiprecision = saved["format"]
        self.switch(close=[c for c in saved["closed"] if c not in self.forbidden])

    def _dmm_reset(self, *_args: Any) -> None:
        self.dmm.reset_fields()

    def reset(self) -> None:
        super().reset()
        if getattr(self, "closed", None) is None:  # called by the base before __init__ ends
            return
        self.switch(open_=sorted(self.closed))
        self.channel._rule = BREAK_BEFORE_MAKE
        self.delays.clear()
        self.backplane.clear()
        self.forbidden.clear()
        self.dmm.reset_fields()

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
