"""Keithley 2600A/B System SourceMeter family (2612A first), over TSP.

One :class:`Keithley2600` per mainframe; each SMU channel is a pymeasure
:class:`~pymeasure.instruments.Channel` (:class:`SMUChannel`) reached as ``inst.smua``
and, on two-channel models, ``inst.smub``. The model comes from ``*IDN?`` (or is given
with ``model=``); every 2600A/B model is accepted with its own ranges (:data:`MODELS`),
anything else is refused with :class:`UnsupportedModelError` before any setting is
sent.

What goes on the wire (``smua`` stands for either channel)::

    settings   smua.source.func = 1          smua.source.levelv = 0.1   smua.source.limiti = 0.001
               smua.source.rangev = 2        smua.source.autorangev = 1 smua.source.output = 1
               smua.source.offmode = 2       smua.measure.nplc = 0.5    smua.measure.autozero = 1
               smua.measure.rangei = 1e-06   smua.measure.autorangei = 0
    queries    print(smua.source.levelv)     print(smua.measure.i())    print(smua.measure.iv())
    errors     print(errorqueue.count)       print(errorqueue.next())   errorqueue.clear()
    sourcing   smua.source.func = 1 if errorqueue.count == 0 then smua.source.limiti = 0.001 end
               if errorqueue.count == 0 then smua.source.levelv = 0.1 end print(errorqueue.count)
               smua.source.output = 1 print(errorqueue.count)
    reading    local i, v = smua.measure.iv() print(i, v, smua.source.compliance)
    buffers    smua.nvbuffer1.clear()  smua.measure.count = n  smua.measure.i(smua.nvbuffer1)
               printbuffer(1, n, smua.nvbuffer1.readings)       -> one reply for n readings
    sweeps     smua.trigger.source.listv({0, 0.1, 0.2})  smua.trigger.measure.iv(...)
               smua.trigger.initiate()  waitcomplete()
               printbuffer(1, n, smua.nvbuffer1.readings, smua.nvbuffer2.readings,
                           smua.nvbuffer1.sourcevalues)           -> one reply for the sweep
    pulses     trigger.timer[1] period, trigger.timer[2] measure delay, trigger.timer[3] width,
               smua.trigger.endpulse.action = smua.SOURCE_IDLE
    scripts    loadscript name / <lines> / endscript   name.run()
    ISPP       labpcu_ispp_program(smua, smub, target, tol, ...)  -> one reply for the trace
    shutdown   smua.source.levelv = 0  smua.source.leveli = 0  (each channel), then
               smua.source.output = 0  (each channel)

Rules it keeps, and why:

* **Validation before sending.** Every level, limit, range, NPLC and count is checked
  against the model's ranges *and* the channel's software limits
  (:meth:`SMUChannel.set_limits`) before a byte is written; a bad value raises
  :class:`~labpcu.instruments.errors.LimitError` naming the value and the bound, and
  the instrument sees nothing.
* **Compliance before output.** ``channel.output = True`` is refused (nothing sent)
  until the compliance that matters for the source function (``limiti`` when sourcing
  voltage, ``limitv`` when sourcing current) has been set *on this connection*: a limit
  left by an earlier session or the reset default (100 mA) is not trusted.
  :meth:`SMUChannel.source_voltage` writes the limit first, then the level.
* **Errors are exceptions.** After each configuration write the driver reads
  ``print(errorqueue.count)`` and, if non-zero, drains ``print(errorqueue.next())`` and
  raises :class:`~labpcu.instruments.errors.InstrumentError` with the instrument's own
  code and text. What runs once a reading (the source level with its function and
  limit, the output switch) carries that check at the end of its own message, one
  round trip instead of two. A Lua runtime error inside ``print(...)`` prints nothing, so a query
  that times out is first put to the error queue: its error is raised if there is one,
  otherwise the timeout stands.
* **Transport failures** (``VisaIOError``, any pyvisa error, ``OSError``) become
  :class:`~labpcu.instruments.errors.InstrumentCommunicationError`.
* **Bulk data.** Buffers are read with one ``printbuffer`` per operation, never one
  reading per query. Numbers are parsed from the comma+space list; the overflow value
  ``9.91e37`` becomes NaN and is flagged in the result (``overflow`` masks), never
  passed on as a number. A reply with the wrong count raises :class:`DataFormatError`.

Sweeps and pulse trains are sent as short sequences of one-statement TSP lines
(readable in the wire log and in the tests, each a complete Lua chunk, no state left
behind on the instrument, nothing to upload first) followed by one error check before
``initiate()``. They use the manual's named constants (``smua.ENABLE``,
``smua.SOURCE_IDLE``) for readability; settings and :meth:`Keithley2600.shutdown` send
plain numbers (what the instrument prints back, and nothing to resolve when the
instrument is in a bad state). Sweeps and pulse trains turn the output off afterwards
unless ``keep_output=True``; program-and-verify leaves both channels on at 0 V. Program-and-verify is different: its loop must decide on the
instrument between pulses (round trips would stretch the 20 ms scheme), so it is one TSP
script, uploaded once per connection and then called with arguments; the whole trace
comes back in a single ``print``. The script sticks to Lua 5.0 (the 2600A's TSP
version): no ``#``, ``%``, ``goto`` or integer division.

pymeasure's own ``Keithley2600`` (0.16) is not used: its ``measure_nplc`` maps values
through ``values=[0.001, 25], map_values=True`` (so it sends the list *index* of the
value, or fails), it validates no level, has no sweeps, pulses, buffers or scripts, and
does not check the error queue after settings. Only the pymeasure
``Instrument``/``Channel``/``control`` machinery and ``expected_protocol`` are reused.
"""

from __future__ import annotations

import logging
import math
import operator
import re
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from pymeasure.instruments import Channel, Instrument

from labpcu.instruments.base import PlainAttributes, TspInstrument
from labpcu.instruments.errors import DataFormatError, InstrumentCommunicationError, InstrumentError, LimitError

__all__ = [
    "BufferResult",
    "DataFormatError",
    "ISPP_FUNCTION",
    "ISPP_SCRIPT",
    "ISPP_SCRIPT_NAME",
    "Keithley2600",
    "MODELS",
    "OVERFLOW",
    "ProgramResult",
    "PulseTrainResult",
    "Reading",
    "SMUChannel",
    "SMUModel",
    "Span",
    "SweepResult",
    "UnsupportedModelError",
    "model_from_identity",
    "parse_numbers",
    "tsp_number",
]

log = logging.getLogger(__name__)
log.addHandler(logging.NullHandler())

# ----------------------------------------------------------------------- models


@dataclass(frozen=True, slots=True)
class SMUModel:
    """Source/measure capabilities of one 2600A/B model (datasheet figures)."""

    model: str
    channels: tuple[str, ...]  # channel ids: ("a",) or ("a", "b")
    voltage_ranges: tuple[float, ...]  # V, ascending (source and measure)
    current_ranges: tuple[float, ...]  # A, ascending (source and measure)
    #: ascending (|V| up to, |I| max) pairs: the DC current deliverable at a voltage
    envelope: tuple[tuple[float, float], ...]

    @property
    def v_max(self) -> float:
        return self.voltage_ranges[-1]

    @property
    def i_max(self) -> float:
        return self.current_ranges[-1]

    @property
    def limitv_min(self) -> float:
        """Smallest voltage limit: 10 % of the lowest voltage range."""
        return 0.1 * self.voltage_ranges[0]

    @property
    def limiti_min(self) -> float:
        """Smallest current limit: 10 % of the lowest current range."""
        return 0.1 * self.current_ranges[0]

    def i_capability(self, volts: float) -> float:
        """Largest DC current at ``|volts|`` (0 beyond the top voltage range)."""
        for v_top, i_top in self.envelope:
            if abs(volts) <= v_top * (1 + 1e-12):
                return i_top
        return 0.0


_V_LOW = (0.1, 1.0, 6.0, 40.0)  # 2601/2602/2604: 100 mV, 1 V, 6 V, 40 V
_V_HIGH = (0.2, 2.0, 20.0, 200.0)  # 2611/2612/2614/2634-2636: 200 mV … 200 V
_I_BASE = (1e-7, 1e-6, 1e-5, 1e-4, 1e-3, 1e-2, 0.1, 1.0)  # 100 nA … 1 A
_I_3A = (*_I_BASE, 3.0)
_I_1A5 = (*_I_BASE, 1.5)
_I_1NA = (1e-9, 1e-8, *_I_1A5)  # 2634B: from 1 nA
_I_100PA = (1e-10, *_I_1NA)  # 2635A/B, 2636A/B: from 100 pA
_ENV_LOW = ((6.0, 3.0), (40.0, 1.0))  # 3 A up to 6 V, 1 A up to 40 V
_ENV_HIGH = ((20.0, 1.5), (200.0, 0.1))  # 1.5 A up to 20 V, 100 mA up to 200 V
_ONE, _TWO = ("a",), ("a", "b")


def _m(model: str, channels: tuple[str, ...], v: tuple[float, ...], i: tuple[float, ...],
       env: tuple[tuple[float, float], ...]) -> SMUModel:
    return SMUModel(model, channels, v, i, env)


#: every 2600A/B System SourceMeter model, by its model number
MODELS: dict[str, SMUModel] = {
    m.model: m
    for m in (
        _m("2601A", _ONE, _V_LOW, _I_3A, _ENV_LOW),
        _m("2602A", _TWO, _V_LOW, _I_3A, _ENV_LOW),
        _m("2611A", _ONE, _V_HIGH, _I_1A5, _ENV_HIGH),
        _m("2612A", _TWO, _V_HIGH, _I_1A5, _ENV_HIGH),
        _m("2635A", _ONE, _V_HIGH, _I_100PA, _ENV_HIGH),
        _m("2636A", _TWO, _V_HIGH, _I_100PA, _ENV_HIGH),
        _m("2601B", _ONE, _V_LOW, _I_3A, _ENV_LOW),
        _m("2602B", _TWO, _V_LOW, _I_3A, _ENV_LOW),
        _m("2604B", _TWO, _V_LOW, _I_3A, _ENV_LOW),
        _m("2611B", _ONE, _V_HIGH, _I_1A5, _ENV_HIGH),
        _m("2612B", _TWO, _V_HIGH, _I_1A5, _ENV_HIGH),
        _m("2614B", _TWO, _V_HIGH, _I_1A5, _ENV_HIGH),
        _m("2634B", _TWO, _V_HIGH, _I_1NA, _ENV_HIGH),
        _m("2635B", _ONE, _V_HIGH, _I_100PA, _ENV_HIGH),
        _m("2636B", _TWO, _V_HIGH, _I_100PA, _ENV_HIGH),
    )
}


class UnsupportedModelError(ValueError):
    """The instrument (or the ``model=`` argument) is not a 2600A/B SourceMeter."""


# "Model 2612A" in *IDN?, or a bare "2612A" from print(localnode.model); the whole
# token is taken, so 2601B-PULSE (a different instrument) is not read as a 2601B
_MODEL_TOKEN = re.compile(r"(?:^|\bmodel\s+)(\d[\w-]*)", re.I)


def model_from_identity(identity: str) -> str:
    """The model number in an ``*IDN?`` reply (``Keithley Instruments Inc., Model 2612A,
    4498311, 3.3.5``) or a ``localnode.model`` reply (``2612A``).

    :raises UnsupportedModelError: no model in the text, or not a 2600A/B model.
    """
    text = identity.strip()
    m = _MODEL_TOKEN.search(text)
    if m is None:
        raise UnsupportedModelError(
            f"cannot find a model number in the identity {identity!r}; expected e.g. "
            f"'Keithley Instruments Inc., Model 2612A, 4498311, 3.3.5'")
    model = m.group(1).upper()
    if model not in MODELS:
        raise UnsupportedModelError(
            f"{model} (identity {identity!r}) is not a supported Keithley 2600A/B "
            f"SourceMeter; supported: {', '.join(MODELS)}")
    return model


# ------------------------------------------------------------------ number formats
#: what a 2600 reads when the signal exceeds the measurement range
OVERFLOW = 9.91e37
_OVERFLOW_MIN = 9.9e37


def tsp_number(value: float) -> str:
    """A float as written into a TSP chunk: the shortest text that reads back as the same
    float (``0.1``, ``1e-05``), integers without ``.0``, never ``-0``.

    Shortest round-trip text means the instrument gets exactly the value asked for and
    the wire log stays readable; ``%g`` would round to six digits.
    """
    x = float(value)
    if not math.isfinite(x):
        raise LimitError(f"cannot send {value!r} to the instrument: not a finite number")
    if x == 0.0:
        return "0"
    if x.is_integer() and abs(x) < 1e16:
        return str(int(x))
    return repr(x)


def _lua_table(values: Iterable[float]) -> str:
    return "{" + ", ".join(tsp_number(v) for v in values) + "}"



_SEPARATOR = re.compile(r"\s*[,\t]\s*")


def parse_numbers(reply: str, count: int | None = None, what: str = "reply") -> np.ndarray:
    """Numbers of a ``printbuffer``/``print`` reply (comma+space or tab separated).

    The overflow value (|x| >= 9.9e37) stays in the array; callers turn it into NaN
    with a flag (:func:`_overflow_mask`).

    :raises DataFormatError: an item is not a number, or there are not ``count`` items.
    """
    text = reply.strip()
    items = _SEPARATOR.split(text) if text else []
    try:
        values = np.array([float(s) for s in items], dtype=float)
    except ValueError:
        raise DataFormatError(f"{what}: not a list of numbers: {reply[:120]!r}") from None
    if count is not None and len(values) != count:
        raise DataFormatError(f"{what}: {len(values)} numbers, expected {count}: {reply[:120]!r}")
    return values


def _spot_reading(reply: str, what: str) -> Reading:
    """Current and voltage of a ``print`` reply, as :func:`parse_numbers` reads them
    (overflow becomes NaN and is flagged), without numpy: this runs once a reading."""
    text = reply.strip()
    items = _SEPARATOR.split(text) if text else []
    if len(items) != 2:
        raise DataFormatError(f"{what}: {len(items)} numbers, expected 2: {reply[:120]!r}")
    try:
        i, v = float(items[0]), float(items[1])
    except ValueError:
        raise DataFormatError(f"{what}: not a list of numbers: {reply[:120]!r}") from None
    over_i, over_v = abs(i) >= _OVERFLOW_MIN, abs(v) >= _OVERFLOW_MIN
    return Reading(math.nan if over_i else i, math.nan if over_v else v, over_i or over_v)


def _overflow_mask(values: np.ndarray) -> np.ndarray:
    return np.abs(values) >= _OVERFLOW_MIN


def _without_overflow(values: np.ndarray) -> np.ndarray:
    out = values.astype(float, copy=True)
    out[_overflow_mask(values)] = np.nan
    return out


def _boolean(reply: Any) -> bool:
    """A Lua boolean as ``print`` writes it."""
    text = str(reply).strip()
    if text not in ("true", "false"):
        raise DataFormatError(f"expected true or false, got {reply!r}")
    return text == "true"


def _reading(value: float) -> float:
    """One reading as returned by a measurement property: overflow becomes NaN."""
    x = float(value)
    if abs(x) >= _OVERFLOW_MIN:
        log.warning("measurement overflow (%g): reported as NaN", x)
        return math.nan
    return x


# ------------------------------------------------------------------ validation


def _number(name: str, value: Any) -> float:
    if isinstance(value, bool):
        raise LimitError(f"{name} must be a number, got {value!r}")
    try:
        x = float(value)
    except (TypeError, ValueError):
        raise LimitError(f"{name} must be a number, got {value!r}") from None
    if not math.isfinite(x):
        raise LimitError(f"{name} must be finite, got {value!r}")
    return x


def _integer(name: str, value: Any, low: int, high: int) -> int:
    if isinstance(value, bool):
        raise LimitError(f"{name} must be an integer, got {value!r}")
    try:
        n = operator.index(value)
    except TypeError:
        raise LimitError(f"{name} must be an integer, got {value!r}") from None
    if not low <= n <= high:
        raise LimitError(f"{name} {n} is outside {low}..{high}")
    return n


@dataclass(frozen=True, slots=True)
class Span:
    """Allowed values of one setting, with the reason for each bound (for messages).

    Used as the (per-channel, dynamic) ``values`` of a pymeasure control and checked by
    :func:`_in_span`.
    """

    name: str
    low: float
    high: float
    unit: str = ""
    reason: str = ""

    def check(self, value: Any) -> float:
        x = _number(self.name, value)
        if not self.low <= x <= self.high:
            unit = f" {self.unit}" if self.unit else ""
            why = f" ({self.reason})" if self.reason else ""
            raise LimitError(f"{self.name} {x:g}{unit} is outside {self.low:g}..{self.high:g}{unit}{why}")
        return x


def _in_span(value: Any, span: Span) -> float:
    return span.check(value)


def _range_up(value: Any, spec: tuple[str, str, tuple[float, ...]]) -> float:
    """A range request → the smallest range of the model that holds it."""
    name, unit, ranges = spec
    x = _number(name, value)
    if x <= 0:
        raise LimitError(f"{name} {x:g} {unit} must be > 0 (a range is a magnitude)")
    for r in ranges:
        if x <= r * (1 + 1e-9):
            return r
    raise LimitError(f"{name} {x:g} {unit} exceeds the largest range {ranges[-1]:g} {unit}")


def _choice(value: Any, choices: dict[Any, int]) -> Any:
    """One of the keys of ``choices``; booleans only match boolean keys."""
    for key in choices:
        if type(key) is type(value) and key == value:
            return key
    raise LimitError(f"must be one of {', '.join(map(repr, choices))}, got {value!r}")


_ON_OFF = {True: 1, False: 0}
_FUNCTIONS = {"voltage": 1, "current": 0}  # smua.OUTPUT_DCVOLTS, smua.OUTPUT_DCAMPS
_AUTOZERO = {"off": 0, "once": 1, "auto": 2}  # AUTOZERO_OFF/ONCE/AUTO
_OFFMODES = {"normal": 0, "zero": 1, "high_z": 2}  # OUTPUT_NORMAL/ZERO/HIGH_Z
_NPLC = Span("NPLC", 0.001, 25.0, "", "2600 integration time range")
#: largest sweep/pulse/buffer length this driver asks for (nonvolatile buffers hold
#: > 60,000 readings on every 2600A/B model)
MAX_POINTS = 60_000
#: values per message when a long sweep list is sent in pieces
LIST_CHUNK = 100
#: line frequency assumed for timeouts before it is known (the slower one)
_SLOW_LINE = 50.0
_TIMEOUT_MARGIN = 5.0



# --------------------------------------------------------------------- results


@dataclass(frozen=True, slots=True)
class Reading:
    """One spot measurement; NaN with ``overflow`` set when the range was exceeded."""

    current: float
    voltage: float
    overflow: bool


@dataclass(frozen=True)
class BufferResult:
    """``count`` readings taken into ``nvbuffer1`` (and ``nvbuffer2`` for ``iv``).

    Arrays not measured are ``None``; overflowed readings are NaN and set in ``overflow``.
    ``timestamps`` (s, from the first reading) only when asked for.
    """

    current: np.ndarray | None
    voltage: np.ndarray | None
    overflow: np.ndarray
    timestamps: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.overflow)


@dataclass(frozen=True)
class SweepResult:
    """A list sweep: per point the programmed source value, the measured voltage and
    current; overflowed readings are NaN and flagged."""

    source: np.ndarray
    voltage: np.ndarray
    current: np.ndarray
    overflow: np.ndarray

    def __len__(self) -> int:
        return len(self.source)


@dataclass(frozen=True)
class PulseTrainResult:
    """A pulse train: per pulse its amplitude, the current measured at the end of the
    pulse, and the reading's time (s, from the first reading)."""

    amplitude: np.ndarray
    current: np.ndarray
    time: np.ndarray
    overflow: np.ndarray

    def __len__(self) -> int:
        return len(self.amplitude)


#: ISPP outcome codes printed by the script
_ISPP_STATUS = {1: "reached", 0: "max_pulses", -1: "overflow"}


@dataclass(frozen=True)
class ProgramResult:
    """Outcome of :meth:`Keithley2600.program_and_verify`.

    ``trace`` has one row per verify read (the first one before any pulse) and the
    columns amplitude (V, 0 for the first read), read current (A) and conductance (S).
    """

    reached: bool
    status: str  # "reached", "max_pulses" or "overflow"
    pulses: int
    conductance: float  # S, from the last verify read
    target: float
    tolerance: float
    v_read: float
    trace: np.ndarray = field(repr=False)

    @property
    def amplitudes(self) -> np.ndarray:
        return self.trace[:, 0]

    @property
    def currents(self) -> np.ndarray:
        return self.trace[:, 1]

    @property
    def conductances(self) -> np.ndarray:
        return self.trace[:, 2]


# ---------------------------------------------------------------- ISPP script
ISPP_SCRIPT_NAME = "labpcu_ispp"
ISPP_FUNCTION = "labpcu_ispp_program"

#: The program-and-verify loop, as run on the instrument. Running the script defines
#: the function; it is then called with arguments (see :meth:`Keithley2600.program_and_verify`).
ISPP_SCRIPT: tuple[str, ...] = (
    "-- labpcu: incremental step pulse programming with verify (ISPP)",
    "-- " + ISPP_FUNCTION + "(smu, other, target, tol, vstart, vstep, vmax, width, vread,",
    "--   maxpulses, limiti, nplc): pulses on smu (other held at 0 V, or nil) of growing",
    "--   amplitude, a verify read at vread after each; the polarity follows the sign of",
    "--   target - G and the amplitude restarts at vstart when it flips (overshoot).",
    "-- Prints one line: status, pulses, rows, then amplitude, current for each read.",
    "-- status 1 reached, 0 pulse limit, -1 read overflow. Lua 5.0 syntax only.",
    "function " + ISPP_FUNCTION + "(smu, other, target, tol, vstart, vstep, vmax, width, vread, "
    "maxpulses, limiti, nplc)",
    "  local rows = {}",
    "  local nrows = 0",
    "  local function fmt(x) return string.format(\"%.6e\", x) end",
    "  local function setup(s)",
    "    if s.source.func ~= s.OUTPUT_DCVOLTS then",
    "      s.source.output = s.OUTPUT_OFF",
    "      s.source.func = s.OUTPUT_DCVOLTS",
    "    end",
    "    s.source.limiti = limiti",
    "    s.source.levelv = 0",
    "    s.measure.nplc = nplc",
    "    s.source.output = s.OUTPUT_ON",
    "  end",
    "  local function read()",
    "    smu.source.levelv = vread",
    "    local i = smu.measure.i()",
    "    smu.source.levelv = 0",
    "    return i",
    "  end",
    "  local function record(a, i)",
    "    nrows = nrows + 1",
    "    rows[nrows] = fmt(a) .. \", \" .. fmt(i)",
    "  end",
    "  local function side(g)",
    "    if g < target then return 1 end",
    "    return -1",
    "  end",
    "  local function run()",
    "    if other ~= nil then setup(other) end",
    "    setup(smu)",
    "    local i = read()",
    "    record(0, i)",
    "    if math.abs(i) >= 9.9e37 then return -1, 0 end",
    "    local g = i / vread",
    "    if math.abs(g - target) <= tol then return 1, 0 end",
    "    local dir = side(g)",
    "    local amp = vstart",
    "    local pulses = 0",
    "    while pulses < maxpulses do",
    "      smu.source.levelv = dir * amp",
    "      delay(width)",
    "      smu.source.levelv = 0",
    "      pulses = pulses + 1",
    "      i = read()",
    "      record(dir * amp, i)",
    "      if math.abs(i) >= 9.9e37 then return -1, pulses end",
    "      g = i / vread",
    "      if math.abs(g - target) <= tol then return 1, pulses end",
    "      if side(g) ~= dir then",
    "        dir = side(g)",
    "        amp = vstart",
    "      else",
    "        amp = math.min(amp + vstep, vmax)",
    "      end",
    "    end",
    "    return 0, pulses",
    "  end",
    "  local ok, status, pulses = pcall(run)",
    "  smu.source.levelv = 0",
    "  if other ~= nil then other.source.levelv = 0 end",
    "  if not ok then error(status, 0) end",
    "  print(fmt(status) .. \", \" .. fmt(pulses) .. \", \" .. fmt(nrows) .. \", \" .. table.concat(rows, \", \"))",
    "end",
)

_IDENTIFIER = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_LUA_KEYWORDS = frozenset(
    "and break do else elseif end false for function goto if in local nil not or repeat "
    "return then true until while".split())
#: globals a user script must not replace
_RESERVED_GLOBALS = frozenset({
    "smua", "smub", "print", "printbuffer", "printnumber", "errorqueue", "format", "trigger",
    "timer", "localnode", "delay", "reset", "waitcomplete", "opc", "status", "display",
    "script", "string", "math", "table", "os", "io", "node", "beeper", "digio", "tsplink",
    "_G", "makegetter", "makesetter", "bit", "loadscript", "endscript", "loadandrunscript",
})


def _script_name(name: Any) -> str:
    if not isinstance(name, str) or not _IDENTIFIER.match(name):
        raise ValueError(f"script name must be a Lua identifier (letters, digits, _), got {name!r}")
    if name in _LUA_KEYWORDS or name in _RESERVED_GLOBALS:
        raise ValueError(f"script name {name!r} is reserved (Lua keyword or instrument global)")
    return name


def _script_lines(source_lines: str | Iterable[str]) -> list[str]:
    if isinstance(source_lines, str):
        raw = [source_lines]
    else:
        raw = list(source_lines)
    lines: list[str] = []
    for item in raw:
        if not isinstance(item, str):
            raise ValueError(f"script lines must be strings, got {item!r}")
        lines.extend(re.split(r"\r\n|\r|\n", item))
    while lines and not lines[-1].strip():
        lines.pop()
    if not any(line.strip() for line in lines):
        raise ValueError("script source is empty")
    for k, line in enumerate(lines, start=1):
        word = line.strip().split(" ", 1)[0]
        if word in ("endscript", "loadscript", "loadandrunscript"):
            raise ValueError(f"script line {k} {line!r} would end or restart the upload ({word})")
    return lines


# ------------------------------------------------------------------------ channel


class SMUChannel(PlainAttributes, Channel):
    """One SMU channel, ``smua`` or ``smub`` (``id`` is ``"a"``/``"b"``).

    Settings are pymeasure controls named after the TSP attributes they drive
    (``levelv`` is ``smua.source.levelv``); their limits depend on the model and on
    :meth:`set_limits`, so they are dynamic per channel.
    """

    # -- source ---------------------------------------------------------------
    _func = Channel.control(
        "print(smu{ch}.source.func)",
        "smu{ch}.source.func = %d",
        """Source function (internal; see :attr:`source_function`).""",
        validator=_choice,
        values=_FUNCTIONS,
        map_values=True,
        check_set_errors=True,
    )

    levelv = Channel.control(
        "print(smu{ch}.source.levelv)",
        "smu{ch}.source.levelv = %s",
        """Control the voltage source level in V (``smuX.source.levelv``), within
        ± the model's top range and the software limit (:meth:`set_limits`).""",
        validator=_in_span,
        values=Span("source voltage", -200.0, 200.0, "V"),
        set_process=tsp_number,
        check_set_errors=True,
        dynamic=True,
    )

    leveli = Channel.control(
        "print(smu{ch}.source.leveli)",
        "smu{ch}.source.leveli = %s",
        """Control the current source level in A (``smuX.source.leveli``), within
        ± the model's top range and the software limit (:meth:`set_limits`).""",
        validator=_in_span,
        values=Span("source current", -1.5, 1.5, "A"),
        set_process=tsp_number,
        check_set_errors=True,
        dynamic=True,
    )

    _limitv = Channel.control(
        "print(smu{ch}.source.limitv)",
        "smu{ch}.source.limitv = %s",
        """Voltage limit (internal; see :attr:`limitv`).""",
        validator=_in_span,
        values=Span("voltage limit", 0.02, 200.0, "V"),
        set_process=tsp_number,
        check_set_errors=True,
        dynamic=True,
    )

    _limiti = Channel.control(
        "print(smu{ch}.source.limiti)",
        "smu{ch}.source.limiti = %s",
        """Current limit (internal; see :attr:`limiti`).""",
        validator=_in_span,
        values=Span("current limit", 1e-8, 1.5, "A"),
        set_process=tsp_number,
        check_set_errors=True,
        dynamic=True,
    )

    rangev = Channel.control(
        "print(smu{ch}.source.rangev)",
        "smu{ch}.source.rangev = %s",
        """Control the voltage source range in V (``smuX.source.rangev``). A value is
        rounded up to the smallest range of the model that holds it (``5`` gives 20 V on
        a 2612A); setting it turns source autorange off on the instrument.""",
        validator=_range_up,
        values=("source voltage range", "V", (0.2, 2.0, 20.0, 200.0)),
        set_process=tsp_number,
        check_set_errors=True,
        dynamic=True,
    )

    rangei = Channel.control(
        "print(smu{ch}.source.rangei)",
        "smu{ch}.source.rangei = %s",
        """Control the current source range in A (``smuX.source.rangei``), rounded up
        to the smallest range of the model that holds the value.""",
        validator=_range_up,
        values=("source current range", "A", (1e-7, 1e-6, 1e-5, 1e-4, 1e-3, 1e-2, 0.1, 1.0, 1.5)),
        set_process=tsp_number,
        check_set_errors=True,
        dynamic=True,
    )

    autorangev = Channel.control(
        "print(smu{ch}.source.autorangev)",
        "smu{ch}.source.autorangev = %d",
        """Control voltage source autorange (``smuX.source.autorangev``): True/False.""",
        validator=_choice,
        values=_ON_OFF,
        map_values=True,
        check_set_errors=True,
    )

    autorangei = Channel.control(
        "print(smu{ch}.source.autorangei)",
        "smu{ch}.source.autorangei = %d",
        """Control current source autorange (``smuX.source.autorangei``): True/False.""",
        validator=_choice,
        values=_ON_OFF,
        map_values=True,
        check_set_errors=True,
    )

    _output = Channel.control(
        "print(smu{ch}.source.output)",
        "smu{ch}.source.output = %d",
        """Output state (internal; see :attr:`output`).""",
        validator=_choice,
        values=_ON_OFF,
        map_values=True,
        check_set_errors=True,
    )

    offmode = Channel.control(
        "print(smu{ch}.source.offmode)",
        "smu{ch}.source.offmode = %d",
        """Control what the output does when off (``smuX.source.offmode``): 'normal'
        (0), 'zero' (1, 0 V source) or 'high_z' (2, output relay open).""",
        validator=_choice,
        values=_OFFMODES,
        map_values=True,
        check_set_errors=True,
    )

    in_compliance = Channel.measurement(
        "print(smu{ch}.source.compliance)",
        """Get whether the source is in its limit now (``smuX.source.compliance``).""",
        cast=str,
        get_process=_boolean,
    )

    # -- measure --------------------------------------------------------------
    nplc = Channel.control(
        "print(smu{ch}.measure.nplc)",
        "smu{ch}.measure.nplc = %s",
        """Control the integration time in power-line cycles (``smuX.measure.nplc``),
        0.001 to 25, sent as the number itself (not pymeasure's list index).""",
        validator=_in_span,
        values=_NPLC,
        set_process=tsp_number,
        check_set_errors=True,
    )

    autozero = Channel.control(
        "print(smu{ch}.measure.autozero)",
        "smu{ch}.measure.autozero = %d",
        """Control autozero (``smuX.measure.autozero``): 'off' (0), 'once' (1) or
        'auto' (2). Auto may add two conversions to a reading; use off/once where timing
        matters.""",
        validator=_choice,
        values=_AUTOZERO,
        map_values=True,
        check_set_errors=True,
    )

    measure_rangev = Channel.control(
        "print(smu{ch}.measure.rangev)",
        "smu{ch}.measure.rangev = %s",
        """Control the voltage measurement range in V (``smuX.measure.rangev``), rounded
        up to a range of the model; turns measure autorange off.""",
        validator=_range_up,
        values=("measure voltage range", "V", (0.2, 2.0, 20.0, 200.0)),
        set_process=tsp_number,
        check_set_errors=True,
        dynamic=True,
    )

    measure_rangei = Channel.control(
        "print(smu{ch}.measure.rangei)",
        "smu{ch}.measure.rangei = %s",
        """Control the current measurement range in A (``smuX.measure.rangei``), rounded
        up to a range of the model; turns measure autorange off.""",
        validator=_range_up,
        values=("measure current range", "A", (1e-7, 1e-6, 1e-5, 1e-4, 1e-3, 1e-2, 0.1, 1.0, 1.5)),
        set_process=tsp_number,
        check_set_errors=True,
        dynamic=True,
    )

    measure_autorangev = Channel.control(
        "print(smu{ch}.measure.autorangev)",
        "smu{ch}.measure.autorangev = %d",
        """Control voltage measure autorange (``smuX.measure.autorangev``): True/False.""",
        validator=_choice,
        values=_ON_OFF,
        map_values=True,
        check_set_errors=True,
    )

    measure_autorangei = Channel.control(
        "print(smu{ch}.measure.autorangei)",
        "smu{ch}.measure.autorangei = %d",
        """Control current measure autorange (``smuX.measure.autorangei``): True/False.""",
        validator=_choice,
        values=_ON_OFF,
        map_values=True,
        check_set_errors=True,
    )

    current = Channel.measurement(
        "print(smu{ch}.measure.i())",
        """Get one current reading in A (``smuX.measure.i()``); NaN on overflow.""",
        get_process=_reading,
    )

    voltage = Channel.measurement(
        "print(smu{ch}.measure.v())",
        """Get one voltage reading in V (``smuX.measure.v()``); NaN on overflow.""",
        get_process=_reading,
    )

    # -- life cycle -------------------------------------------------------------
    def __init__(self, parent: Keithley2600, id: str, spec: SMUModel, **kwargs: Any) -> None:
        super().__init__(parent, id, **kwargs)
        self.spec = spec
        self.tsp = f"smu{id}"
        self.max_voltage: float | None = None
        self.max_current: float | None = None
        #: limits set on this connection: "v" → limitv (V), "i" → limiti (A)
        self._limits_set: dict[str, float] = {}
        #: source function set on this connection ("voltage"/"current"), None if unknown
        self._function: str | None = None
        v_ranges = ("voltage range", "V", spec.voltage_ranges)
        i_ranges = ("current range", "A", spec.current_ranges)
        self.rangev_values = ("source " + v_ranges[0], "V", spec.voltage_ranges)
        self.rangei_values = ("source " + i_ranges[0], "A", spec.current_ranges)
        self.measure_rangev_values = ("measure " + v_ranges[0], "V", spec.voltage_ranges)
        self.measure_rangei_values = ("measure " + i_ranges[0], "A", spec.current_ranges)
        self._update_spans()

    def __repr__(self) -> str:
        return f"<SMUChannel {self.tsp} of a {self.spec.model}>"

    def insert_id(self, command: str) -> str:
        # literal replacement: TSP commands contain Lua table braces that str.format
        # would take for fields
        return command.replace("{ch}", str(self.id))

    def ask(self, command: str, query_delay: float | None = None) -> str:
        # through the parent, so that a silent (failed) query is diagnosed there
        return self.parent.ask(self.insert_id(command), query_delay)

    # -- limits -----------------------------------------------------------------
    def _bound(self, kind: str) -> tuple[float, str]:
        """Largest |V| or |I| allowed now, and why."""
        spec = self.spec
        top = spec.v_max if kind == "v" else spec.i_max
        unit = "V" if kind == "v" else "A"
        soft = self.max_voltage if kind == "v" else self.max_current
        if soft is not None and soft < top:
            return soft, f"software limit {soft:g} {unit} of {self.tsp}, see set_limits()"
        return top, f"top range of the {spec.model}"

    def _update_spans(self) -> None:
        """Recompute what levels and limits may be sent (model ranges and software
        limits) and hand them to the dynamic controls as their ``values``."""
        v, v_why = self._bound("v")
        i, i_why = self._bound("i")
        self.spans = {
            "levelv": Span(f"{self.tsp} source voltage", -v, v, "V", v_why),
            "leveli": Span(f"{self.tsp} source current", -i, i, "A", i_why),
            "limitv": Span(f"{self.tsp} voltage limit", min(self.spec.limitv_min, v), v, "V", v_why),
            "limiti": Span(f"{self.tsp} current limit", min(self.spec.limiti_min, i), i, "A", i_why),
        }
        # pymeasure reads these (write-only from here) when the controls are used
        self.levelv_values = self.spans["levelv"]
        self.leveli_values = self.spans["leveli"]
        self._limitv_values = self.spans["limitv"]
        self._limiti_values = self.spans["limiti"]

    def set_limits(self, max_voltage: float | None = None, max_current: float | None = None) -> None:
        """Software limits for this channel: every level and limit sent afterwards must
        stay within ±``max_voltage`` (V) and ±``max_current`` (A); ``None`` leaves only
        the model's ranges. Sends nothing.

        A compliance already set above a new limit no longer counts as set: the output
        cannot be turned on until a compliance within the limit is sent.
        """
        mv = None if max_voltage is None else _number("max_voltage", max_voltage)
        mi = None if max_current is None else _number("max_current", max_current)
        if mv is not None and not 0 < mv <= self.spec.v_max:
            raise LimitError(f"max_voltage {mv:g} V must be in (0, {self.spec.v_max:g}] V for the {self.spec.model}")
        if mi is not None and not 0 < mi <= self.spec.i_max:
            raise LimitError(f"max_current {mi:g} A must be in (0, {self.spec.i_max:g}] A for the {self.spec.model}")
        self.max_voltage, self.max_current = mv, mi
        self._update_spans()
        if mv is not None and self._limits_set.get("v", 0.0) > mv:
            del self._limits_set["v"]
        if mi is not None and self._limits_set.get("i", 0.0) > mi:
            del self._limits_set["i"]

    @property
    def limits(self) -> tuple[float | None, float | None]:
        """The software limits ``(max_voltage, max_current)``; ``None`` = none set."""
        return self.max_voltage, self.max_current

    def _renamed(self, key: str, name: str) -> Span:
        span = self.spans[key]
        return Span(f"{self.tsp} {name}", span.low, span.high, span.unit, span.reason)

    def check_voltage(self, name: str, value: Any) -> float:
        """A source voltage checked against the model and the software limit."""
        return self._renamed("levelv", name).check(value)

    def check_current(self, name: str, value: Any) -> float:
        """A source current checked against the model and the software limit."""
        return self._renamed("leveli", name).check(value)

    def check_current_limit(self, value: Any, at_volts: float = 0.0) -> float:
        """A current limit (A): within the model and the software limit, and one the
        model can deliver while sourcing ``at_volts``."""
        limit = self.spans["limiti"].check(value)
        top = self.spec.i_capability(at_volts)
        if limit > top:
            raise LimitError(f"{self.tsp} current limit {limit:g} A exceeds the {top:g} A a "
                             f"{self.spec.model} delivers at {abs(at_volts):g} V")
        return limit

    def check_voltage_limit(self, value: Any, at_amps: float = 0.0) -> float:
        limit = self.spans["limitv"].check(value)
        top = self.spec.i_capability(limit)
        if abs(at_amps) > top:
            raise LimitError(f"{self.tsp} current {abs(at_amps):g} A exceeds the {top:g} A a "
                             f"{self.spec.model} delivers with a {limit:g} V limit")
        return limit

    # -- compliance-tracked settings ------------------------------------------------
    @property
    def limitv(self) -> float:
        """Control the voltage limit in V (``smuX.source.limitv``), the compliance when
        sourcing current; within the model and the software limit."""
        return self._limitv

    @limitv.setter
    def limitv(self, volts: float) -> None:
        self._limitv = volts
        self._limits_set["v"] = float(volts)

    @property
    def limiti(self) -> float:
        """Control the current limit in A (``smuX.source.limiti``), the compliance when
        sourcing voltage; within the model and the software limit."""
        return self._limiti

    @limiti.setter
    def limiti(self, amps: float) -> None:
        self._limiti = amps
        self._limits_set["i"] = float(amps)

    @property
    def source_function(self) -> str:
        """Control the source function (``smuX.source.func``): 'voltage'
        (``OUTPUT_DCVOLTS`` = 1) or 'current' (``OUTPUT_DCAMPS`` = 0)."""
        value = self._func
        self._function = value
        return value

    @source_function.setter
    def source_function(self, function: str) -> None:
        self._func = function
        self._function = function

    @property
    def output(self) -> bool:
        """Control the output (``smuX.source.output``): True on, False off.

        Turning it on is refused (:class:`LimitError`, nothing sent) unless the
        compliance for the source function has been set on this connection
        (:attr:`limiti` for a voltage source, :attr:`limitv` for a current source).
        """
        return bool(self._output)

    @output.setter
    def output(self, on: bool) -> None:
        state = _choice(on, _ON_OFF)
        if state:
            self._require_compliance()
        # the setting and its error check in one message (a write and a query before)
        self.parent.write_checked(f"{self.tsp}.source.output = {_ON_OFF[state]}")

    def _require_compliance(self) -> None:
        if not self._limits_set:
            raise LimitError(
                f"{self.tsp}: refusing to turn the output on: no compliance has been set on "
                "this connection (set limiti for a voltage source or limitv for a current "
                "source, or use source_voltage(level, compliance))")
        function = self._function if self._function is not None else self.source_function
        kind = "i" if function == "voltage" else "v"
        if kind not in self._limits_set:
            what = "current limit (limiti)" if kind == "i" else "voltage limit (limitv)"
            raise LimitError(
                f"{self.tsp}: refusing to turn the output on: it sources {function} and no "
                f"{what} has been set on this connection")

    def forget_state(self) -> None:
        """Forget what this connection set (after a reset, the instrument's defaults
        apply again and are not trusted)."""
        self._limits_set.clear()
        self._function = None

    # -- convenience ----------------------------------------------------------------
    def source_voltage(self, level: float, compliance: float) -> None:
        """Source ``level`` V with a ``compliance`` A current limit: function, limit,
        then level, in one message with one error check (:meth:`_source`). Everything
        is validated first; the output state is not changed."""
        v = self.check_voltage("source voltage", level)
        comp = self.check_current_limit(compliance, v)
        self._source("voltage", comp, v)

    def source_current(self, level: float, compliance: float) -> None:
        """Source ``level`` A with a ``compliance`` V voltage limit: function, limit,
        then level, in one message (:meth:`_source`)."""
        i = self.check_current("source current", level)
        comp = self.check_voltage_limit(compliance, i)
        self._source("current", comp, i)

    def _source(self, function: str, limit: float, level: float) -> None:
        """Send function, limit and level (already validated) as one TSP chunk ending in
        its error check (:meth:`~TspInstrument.write_checked`): one round trip instead of
        three writes and three checks.

        A refused setting (a parameter error) does not stop a TSP chunk, it only
        queues an error (2600B manual, "Effects of errors on scripts"), so the chunk
        itself stops there: the limit is sent only if the queue is still empty after
        the function, and the level only if it is still empty after the limit. The
        instrument thus ends as the three separate writes left it (a level never
        follows a refused limit); a stale error already queued stops it after the
        function, where the old first check would have raised. On an error the
        driver forgets the function and this kind of compliance (sent again before
        the output may go on), since it does not know which statement failed.
        """
        kind = "v" if function == "current" else "i"
        smu = self.tsp
        clean = "if errorqueue.count == 0 then"
        try:
            self.parent.write_checked(
                f"{smu}.source.func = {_FUNCTIONS[function]} "
                f"{clean} {smu}.source.limit{kind} = {tsp_number(limit)} end "
                f"{clean} {smu}.source.level{'v' if kind == 'i' else 'i'} = {tsp_number(level)} end")
        except InstrumentError:
            self._function = None
            self._limits_set.pop(kind, None)
            raise
        self._function = function
        self._limits_set[kind] = float(limit)

    def enable(self) -> None:
        """Turn the output on (same checks as ``output = True``)."""
        self.output = True

    def disable(self) -> None:
        """Turn the output off."""
        self.output = False

    def reset(self) -> None:
        """``smuX.reset()``: channel defaults, output off; forgets the tracked limits."""
        self.write("smu{ch}.reset()")
        self.forget_state()
        self.check_set_errors()

    # -- measurements ---------------------------------------------------------------
    def measure_iv(self) -> Reading:
        """Current and voltage of one conversion (``print(smuX.measure.iv())``)."""
        query = f"print({self.tsp}.measure.iv())"
        return _spot_reading(self.parent.ask(query), query)

    def measure_iv_compliance(self) -> tuple[Reading, bool]:
        """One conversion and whether the source is in its limit just after it, in one
        query (``local i, v = smuX.measure.iv() print(i, v, smuX.source.compliance)``):
        what :meth:`measure_iv` then :attr:`in_compliance` give, for one round trip."""
        smu = self.tsp
        query = f"local i, v = {smu}.measure.iv() print(i, v, {smu}.source.compliance)"
        reply = self.parent.ask(query)
        numbers, tab, flag = reply.rpartition("\t")
        if not tab:
            raise DataFormatError(f"{query}: expected current, voltage and compliance: {reply[:120]!r}")
        return _spot_reading(numbers, query), _boolean(flag)

    def measure_buffer(self, count: int, quantity: str = "i", *, timestamps: bool = False) -> BufferResult:
        """Take ``count`` readings into the channel's buffer and read them in one
        transfer (``printbuffer(1, n, smuX.nvbuffer1.readings)``).

        :param quantity: ``"i"``, ``"v"`` or ``"iv"`` (current into ``nvbuffer1``,
            voltage into ``nvbuffer2``).
        :param timestamps: also return the reading times (same transfer).
        """
        n = _integer("count", count, 1, MAX_POINTS)
        if quantity not in ("i", "v", "iv"):
            raise LimitError(f"quantity must be 'i', 'v' or 'iv', got {quantity!r}")
        smu = self.tsp
        b1, b2 = f"{smu}.nvbuffer1", f"{smu}.nvbuffer2"
        lines = [f"{b1}.clear()", f"{b1}.collecttimestamps = {1 if timestamps else 0}"]
        if quantity == "iv":
            lines.append(f"{b2}.clear()")
        lines.append(f"{smu}.measure.count = {n}")
        self.parent.configure(lines)
        measure = f"{smu}.measure.iv({b1}, {b2})" if quantity == "iv" else f"{smu}.measure.{quantity}({b1})"
        self.parent.write(measure)
        self.parent.write(f"{smu}.measure.count = 1")
        columns = [f"{b1}.readings"] + ([f"{b2}.readings"] if quantity == "iv" else [])
        if timestamps:
            columns.append(f"{b1}.timestamps")
        seconds = n * self._conversion_estimate() * (2 if quantity == "iv" else 1)
        data = self.parent.read_buffers(n, columns, seconds)
        self.parent.check_set_errors()
        over = np.zeros(n, dtype=bool)
        arrays: dict[str, np.ndarray] = {}
        for name, col in zip(columns, data.T, strict=True):
            if name.endswith(".timestamps"):
                continue
            over |= _overflow_mask(col)
            arrays[name] = _without_overflow(col)
        first = arrays[f"{b1}.readings"]
        return BufferResult(
            current=first if quantity in ("i", "iv") else None,
            voltage=arrays[f"{b2}.readings"] if quantity == "iv" else (first if quantity == "v" else None),
            overflow=over,
            timestamps=data[:, -1].copy() if timestamps else None,
        )

    def _conversion_estimate(self, nplc: float = 1.0) -> float:
        """Seconds one reading may take (slow line, autozero auto): for timeouts only."""
        return 3.0 * nplc / _SLOW_LINE + 1e-3

    # -- sweeps and pulses -----------------------------------------------------------
    def _send_list(self, method: str, values: Sequence[float]) -> list[str]:
        """Lines that hand ``values`` to ``smuX.trigger.source.<method>``; a long list
        is built in a temporary global in pieces of :data:`LIST_CHUNK` values."""
        target = f"{self.tsp}.trigger.source.{method}"
        if len(values) <= LIST_CHUNK:
            return [f"{target}({_lua_table(values)})"]
        name = "labpcu_list"
        lines = [f"{name} = {_lua_table(values[:LIST_CHUNK])}"]
        for k in range(LIST_CHUNK, len(values), LIST_CHUNK):
            lines.append(f"for _, x in ipairs({_lua_table(values[k:k + LIST_CHUNK])}) do "
                         f"table.insert({name}, x) end")
        lines += [f"{target}({name})", f"{name} = nil"]
        return lines

    def _levels(self, values: Any, name: str) -> list[float]:
        if isinstance(values, (str, bytes)):
            raise LimitError(f"{name} must be a sequence of numbers, got {values!r}")
        try:
            items = values.tolist() if isinstance(values, np.ndarray) else list(values)
        except TypeError:
            raise LimitError(f"{name} must be a sequence of numbers, got {values!r}") from None
        if not items:
            raise LimitError(f"{name} is empty: nothing to sweep")
        if len(items) > MAX_POINTS:
            raise LimitError(f"{name} has {len(items)} points, more than {MAX_POINTS}")
        return [self.check_voltage(f"{name}[{k}]", v) for k, v in enumerate(items)]

    def sweep_voltage_list(
        self,
        levels: Sequence[float],
        compliance: float,
        nplc: float = 1.0,
        settle: float = 0.0,
        *,
        keep_output: bool = False,
    ) -> SweepResult:
        """Source each voltage of ``levels`` in turn through the trigger model and
        measure current and voltage at each, then read everything in one transfer.

        :param compliance: current limit (A) for the whole sweep (sent before the
            output turns on).
        :param nplc: integration time per point.
        :param settle: extra delay before each measurement (s, ``smuX.measure.delay``).
        :param keep_output: leave the output on at 0 V afterwards (default: off).
        :returns: programmed source values, measured voltages and currents (numpy).
        """
        volts = self._levels(levels, "levels")
        peak = max(abs(v) for v in volts)
        comp = self.check_current_limit(compliance, peak)
        n_plc = _NPLC.check(nplc)
        delay = Span("settle", 0.0, 100.0, "s").check(settle)
        n = len(volts)
        smu = self.tsp
        b1, b2 = f"{smu}.nvbuffer1", f"{smu}.nvbuffer2"
        c = tsp_number(comp)
        lines = [
            f"{smu}.source.func = {smu}.OUTPUT_DCVOLTS",
            f"{smu}.source.limiti = {c}",
            f"{smu}.source.levelv = 0",
            f"{smu}.measure.nplc = {tsp_number(n_plc)}",
            f"{smu}.measure.delay = {tsp_number(delay)}",
            f"{b1}.clear()",
            f"{b1}.collectsourcevalues = 1",
            f"{b2}.clear()",
            *self._send_list("listv", volts),
            f"{smu}.trigger.source.limiti = {c}",
            f"{smu}.trigger.source.action = {smu}.ENABLE",
            f"{smu}.trigger.measure.action = {smu}.ENABLE",
            f"{smu}.trigger.measure.iv({b1}, {b2})",
            f"{smu}.trigger.endpulse.action = {smu}.SOURCE_HOLD",
            f"{smu}.trigger.endsweep.action = {smu}.SOURCE_IDLE",
            f"{smu}.trigger.count = {n}",
            f"{smu}.trigger.arm.count = 1",
            f"{smu}.trigger.arm.stimulus = 0",
            f"{smu}.trigger.source.stimulus = 0",
            f"{smu}.trigger.measure.stimulus = 0",
            f"{smu}.trigger.endpulse.stimulus = 0",
        ]
        self.parent.configure(lines)
        self._function = "voltage"
        self._limits_set["i"] = comp
        data = self._run_trigger_model(
            [f"{b1}.readings", f"{b2}.readings", f"{b1}.sourcevalues"], n,
            n * (delay + 2 * self._conversion_estimate(n_plc)), keep_output)
        current, voltage, source = data.T
        over = _overflow_mask(current) | _overflow_mask(voltage)
        return SweepResult(source=source.copy(), voltage=_without_overflow(voltage),
                           current=_without_overflow(current), overflow=over)

    def pulse_train_voltage(
        self,
        amplitudes: float | Sequence[float],
        width: float,
        period: float,
        bias: float = 0.0,
        compliance: float = 1e-3,
        *,
        count: int | None = None,
        nplc: float | None = None,
        keep_output: bool = False,
    ) -> PulseTrainResult:
        """Voltage pulses from ``bias`` through the trigger model, timed by the
        instrument: ``trigger.timer[1]`` starts a pulse every ``period`` s,
        ``trigger.timer[3]`` ends it after ``width`` s (``endpulse.action =
        SOURCE_IDLE`` returns to the bias) and ``trigger.timer[2]`` places the current
        reading at the end of the pulse. All readings come back in one transfer.

        :param amplitudes: one amplitude (then ``count`` pulses) or one per pulse (V).
        :param nplc: integration per reading; default: the largest up to 1 PLC that
            fits in 80 % of the pulse. Needs the line frequency (asked once).
        :param keep_output: leave the output on at the bias afterwards (default: off).

        The trigger timers are shared by both channels: do not run two pulse trains at
        once.
        """
        if isinstance(amplitudes, (int, float)) and not isinstance(amplitudes, bool):
            if count is None:
                raise LimitError("count is required with a single amplitude (how many pulses?)")
            n = _integer("count", count, 1, MAX_POINTS)
            levels = [self.check_voltage("pulse amplitude", amplitudes)] * n
        else:
            if count is not None:
                raise LimitError("count must not be given with a list of amplitudes")
            levels = self._levels(amplitudes, "amplitudes")
            n = len(levels)
        b = self.check_voltage("pulse bias", bias)
        comp = self.check_current_limit(compliance, max(abs(b), *(abs(v) for v in levels)))
        w = Span("pulse width", 1e-4, 100.0, "s").check(width)
        p = Span("pulse period", 1e-4, 1e4, "s").check(period)
        if p < w + 1e-4 - 1e-12:
            raise LimitError(f"pulse period {p:g} s must exceed the width {w:g} s by at least 100 µs")
        if nplc is not None:
            # checked before the line frequency is asked: even at 60 Hz (the shorter
            # cycle) the reading must fit in the pulse
            n_plc = _NPLC.check(nplc)
            if n_plc / 60.0 + 60e-6 >= w:
                raise LimitError(f"the reading ({n_plc:g} PLC, at least {n_plc / 60.0 * 1e3:g} ms) does "
                                 f"not fit in a {w * 1e3:g} ms pulse; lower nplc")
        line = self.parent.line_frequency
        if nplc is None:
            n_plc = max(0.001, min(1.0, math.floor(0.8 * w * line * 1000) / 1000))
        integration = n_plc / line
        # timers count in µs: rounding also keeps float noise off the wire
        measure_delay = round(w - integration - 60e-6, 6)
        if measure_delay < 1e-6:
            raise LimitError(
                f"the reading ({n_plc:g} PLC = {integration * 1e3:g} ms at {line:g} Hz, plus 60 µs) "
                f"does not fit in a {w * 1e3:g} ms pulse; lower nplc")
        smu = self.tsp
        b1 = f"{smu}.nvbuffer1"
        c = tsp_number(comp)
        timers = "trigger.timer"
        lines = [
            f"{smu}.source.func = {smu}.OUTPUT_DCVOLTS",
            f"{smu}.source.limiti = {c}",
            f"{smu}.source.levelv = {tsp_number(b)}",
            f"{smu}.measure.nplc = {tsp_number(n_plc)}",
            f"{smu}.measure.delay = 0",
            f"{b1}.clear()",
            f"{b1}.collecttimestamps = 1",
            f"{b1}.collectsourcevalues = 1",
            *self._send_list("listv", levels),
            f"{smu}.trigger.source.limiti = {c}",
            f"{smu}.trigger.source.action = {smu}.ENABLE",
            f"{smu}.trigger.measure.action = {smu}.ENABLE",
            f"{smu}.trigger.measure.i({b1})",
            f"{smu}.trigger.endpulse.action = {smu}.SOURCE_IDLE",
            f"{smu}.trigger.endsweep.action = {smu}.SOURCE_IDLE",
            f"{smu}.trigger.count = {n}",
            f"{smu}.trigger.arm.count = 1",
            f"{smu}.trigger.arm.stimulus = 0",
            f"{timers}[1].delay = {tsp_number(p)}",
            f"{timers}[1].count = {max(n - 1, 1)}",
            f"{timers}[1].passthrough = true",
            f"{timers}[1].stimulus = {smu}.trigger.ARMED_EVENT_ID",
            f"{timers}[2].delay = {tsp_number(measure_delay)}",
            f"{timers}[2].count = 1",
            f"{timers}[2].passthrough = false",
            f"{timers}[2].stimulus = {timers}[1].EVENT_ID",
            f"{timers}[3].delay = {tsp_number(w)}",
            f"{timers}[3].count = 1",
            f"{timers}[3].passthrough = false",
            f"{timers}[3].stimulus = {timers}[1].EVENT_ID",
            f"{smu}.trigger.source.stimulus = {timers}[1].EVENT_ID",
            f"{smu}.trigger.measure.stimulus = {timers}[2].EVENT_ID",
            f"{smu}.trigger.endpulse.stimulus = {timers}[3].EVENT_ID",
        ]
        self.parent.configure(lines)
        self._function = "voltage"
        self._limits_set["i"] = comp
        data = self._run_trigger_model(
            [f"{b1}.readings", f"{b1}.sourcevalues", f"{b1}.timestamps"], n, n * p + w, keep_output)
        current, amplitude, times = data.T
        return PulseTrainResult(amplitude=amplitude.copy(), current=_without_overflow(current),
                                time=times.copy(), overflow=_overflow_mask(current))

    def _run_trigger_model(self, columns: list[str], n: int, seconds: float, keep_output: bool) -> np.ndarray:
        """Output on (compliance already set), initiate, wait, output off unless kept,
        then read every column in one ``printbuffer`` and check the error queue."""
        smu = self.tsp
        self.output = True
        self.parent.write(f"{smu}.trigger.initiate()")
        self.parent.write("waitcomplete()")
        if not keep_output:
            self.parent.write(f"{smu}.source.output = {smu}.OUTPUT_OFF")
        data = self.parent.read_buffers(n, columns, seconds)
        self.parent.check_set_errors()
        return data


# ---------------------------------------------------------------------- instrument




class Keithley2600(TspInstrument):
    """Keithley 2600A/B SourceMeter (2612A and its family), over TSP.

    :param adapter: a pymeasure adapter, or a VISA resource string (then ``kwargs`` go
        to :class:`~pymeasure.adapters.VISAAdapter`; terminations default to ``"\\n"``).
    :param model: the model number (``"2612A"``); ``None`` asks ``*IDN?``. Either way an
        unknown model raises :class:`UnsupportedModelError`.
    :param name: used in log lines and in :class:`InstrumentError`.
    """


    def __init__(self, adapter: Any, name: str = "Keithley 2600", model: str | None = None, **kwargs: Any) -> None:
        if isinstance(adapter, (str, int)):
            kwargs.setdefault("read_termination", "\n")
            kwargs.setdefault("write_termination", "\n")
        if model is not None:
            model = model_from_identity(str(model))  # refuse before opening anything
        with self._link(f"opening {adapter!r}", name):
            super().__init__(adapter, name, includeSCPI=False, **kwargs)
        self._line_frequency: float | None = None
        self._ispp_loaded = False
        self._scripts: set[str] = set()
        if model is None:
            try:
                model = self._identify()
            except BaseException:
                self.adapter.close()  # a half-opened link must not hold the instrument's one session
                raise
        self.spec: SMUModel = MODELS[model]
        self.model = model
        self.smus: dict[str, SMUChannel] = {}
        for ch in self.spec.channels:
            self.smus[ch] = self.add_child(SMUChannel, ch, collection="channels", attr_name=f"smu{ch}",
                                           spec=self.spec)

    def __repr__(self) -> str:
        return f"<Keithley2600 {getattr(self, 'model', '?')} {self.name!r}>"

    def _identify(self) -> str:
        idn = self.ask("*IDN?")
        try:
            return model_from_identity(idn)
        except UnsupportedModelError:
            if re.search(r"\bmodel\b", idn, re.I):
                raise  # it named a model, and not one of ours
        # no "Model" field: ask the TSP node itself
        return model_from_identity(self.ask("print(localnode.model)"))

    def smu(self, channel: str) -> SMUChannel:
        """The channel ``"a"``/``"smua"`` or ``"b"``/``"smub"``; LimitError if absent."""
        key = str(channel).lower()
        key = key[3:] if key.startswith("smu") else key
        try:
            return self.smus[key]
        except KeyError:
            raise LimitError(f"the {self.model} has no channel {channel!r}; it has "
                             f"{', '.join('smu' + c for c in self.smus)}") from None

    # -- communication ------------------------------------------------------------






    @contextmanager
    def _timeout_at_least(self, seconds: float) -> Iterator[None]:
        """Raise the link's read timeout to ``seconds`` for a long operation (VISA and
        the simulator's adapter keep it in ms on ``adapter.connection.timeout``)."""
        conn = getattr(self.adapter, "connection", None)
        old = getattr(conn, "timeout", None)
        if isinstance(old, bool) or not isinstance(old, (int, float)) or old >= seconds * 1000.0:
            yield
            return
        try:
            conn.timeout = seconds * 1000.0
        except Exception:  # noqa: BLE001 - a dead link fails at the next I/O anyway
            yield
            return
        try:
            yield
        finally:
            try:
                conn.timeout = old
            except Exception:  # noqa: BLE001
                log.warning("%s: could not restore the timeout of %g ms", self.name, old)

    # -- errors -------------------------------------------------------------------






    def configure(self, lines: Iterable[str]) -> None:
        """Send TSP lines (one message each), then one error check."""
        for line in lines:
            self.write(line)
        self.check_set_errors()

    def read_buffers(self, n: int, columns: Sequence[str], seconds: float = 0.0) -> np.ndarray:
        """``printbuffer(1, n, col1, col2, ...)`` in one query; returns an (n, k) array
        (overflow values left as they are). ``seconds`` is how long the instrument may
        still be busy before it answers (the timeout is raised to that plus 5 s)."""
        query = f"printbuffer(1, {n}, {', '.join(columns)})"
        with self._timeout_at_least(seconds + _TIMEOUT_MARGIN):
            reply = self.ask(query)
        values = parse_numbers(reply, n * len(columns), query)
        return values.reshape(n, len(columns))

    # -- identity and system --------------------------------------------------------
    id = Instrument.measurement(
        "*IDN?",
        """Get the identity (``Keithley Instruments Inc., Model 2612A, 4498311, 3.3.5``).""",
        cast=str,
        maxsplit=0,
    )

    localnode_model = Instrument.measurement(
        "print(localnode.model)",
        """Get the model number as the TSP node reports it (``2612A``).""",
        cast=str,
        maxsplit=0,
    )

    @property
    def line_frequency(self) -> float:
        """Power-line frequency in Hz (``print(localnode.linefreq)``), asked once."""
        if self._line_frequency is None:
            query = "print(localnode.linefreq)"
            f = self._number(self.ask(query), query)
            if f not in (50.0, 60.0):
                raise DataFormatError(f"{self.name}: line frequency {f:g} Hz is neither 50 nor 60")
            self._line_frequency = f
        return self._line_frequency

    def reset(self) -> None:
        """``reset()``: every channel to defaults with its output off; the compliance
        limits set on this connection are forgotten (they must be set again)."""
        self.write("reset()")
        for ch in self.smus.values():
            ch.forget_state()
        self.check_set_errors()

    # -- scripts ------------------------------------------------------------------
    def upload_script(self, name: str, source_lines: str | Iterable[str]) -> None:
        """Load a named TSP script: ``loadscript name``, the lines (one message each),
        ``endscript``; then the error check (a syntax error raises InstrumentError
        -285). The script is compiled, not run; a script of that name is replaced."""
        script = _script_name(name)
        lines = _script_lines(source_lines)
        self.write(f"loadscript {script}")
        for line in lines:
            self.write(line)
        self.write("endscript")
        self.check_set_errors()
        self._scripts.add(script)
        if script == ISPP_SCRIPT_NAME:
            self._ispp_loaded = False  # replaced: its function is not defined yet

    def run_script(self, name: str) -> None:
        """Run a loaded script (``name.run()``), then the error check."""
        script = _script_name(name)
        self.write(f"{script}.run()")
        self.check_set_errors()

    # -- program and verify ---------------------------------------------------------
    def _ensure_ispp(self) -> None:
        if not self._ispp_loaded:
            self.upload_script(ISPP_SCRIPT_NAME, ISPP_SCRIPT)
            self.run_script(ISPP_SCRIPT_NAME)
            self._ispp_loaded = True

    def program_and_verify(
        self,
        target_s: float,
        tolerance_s: float,
        *,
        channel: str = "a",
        ground: str | None = "b",
        v_start: float = 0.2,
        v_step: float = 0.1,
        v_max: float = 1.0,
        width: float = 0.02,
        v_read: float = 0.01,
        max_pulses: int = 100,
        compliance: float = 1e-3,
        nplc: float = 1.0,
    ) -> ProgramResult:
        """Program a conductance by ISPP with verify, run on the instrument.

        Pulses on ``channel`` (the other terminal held at 0 V by ``ground``, or
        ``None``): first ±``v_start``, each next pulse ``v_step`` larger (at most
        ``v_max``), ``width`` s long, each followed by a read at ``v_read``; the
        polarity follows the sign of target − G and the amplitude restarts at
        ``v_start`` when it flips (overshoot). It stops when |G − target| ≤
        ``tolerance_s`` or after ``max_pulses``. Both channels end at 0 V, outputs on.

        The TSP script is uploaded once per connection; each call is one message and
        the whole trace comes back in one reply.
        """
        smu = self.smu(channel)
        other = None if ground is None else self.smu(ground)
        if other is smu:
            raise LimitError(f"channel and ground are both {smu.tsp}")
        target = Span("target conductance", 0.0, 1e3, "S").check(target_s)
        if target <= 0:
            raise LimitError("target conductance must be > 0 S")
        tol = Span("tolerance", 0.0, 1e3, "S").check(tolerance_s)
        if tol <= 0:
            raise LimitError("tolerance must be > 0 S")
        start = smu.check_voltage("v_start", v_start)
        if start <= 0:
            raise LimitError(f"v_start {start:g} V must be > 0 (a magnitude; the sign follows the target)")
        step = Span("v_step", 0.0, smu.spec.v_max, "V").check(v_step)
        top = smu.check_voltage("v_max", v_max)
        if top < start:
            raise LimitError(f"v_max {top:g} V is below v_start {start:g} V")
        smu.check_voltage("-v_max", -top)
        read = smu.check_voltage("v_read", v_read)
        if not 0 < read < start:
            raise LimitError(f"v_read {read:g} V must be > 0 and below v_start {start:g} V (a read must not program)")
        w = Span("pulse width", 1e-4, 100.0, "s").check(width)
        pulses = _integer("max_pulses", max_pulses, 1, 10_000)
        comp = smu.check_current_limit(compliance, top)
        if other is not None:
            other.check_current_limit(compliance, 0.0)
        n_plc = _NPLC.check(nplc)

        self._ensure_ispp()
        args = ", ".join([
            smu.tsp, "nil" if other is None else other.tsp, tsp_number(target), tsp_number(tol),
            tsp_number(start), tsp_number(step), tsp_number(top), tsp_number(w), tsp_number(read),
            str(pulses), tsp_number(comp), tsp_number(n_plc)])
        call = f"{ISPP_FUNCTION}({args})"
        seconds = (pulses + 1) * (w + 2 * smu._conversion_estimate(n_plc) + 0.005)
        with self._timeout_at_least(seconds + _TIMEOUT_MARGIN):
            reply = self.ask(call)
        for ch in (smu, other):
            if ch is not None:
                ch._function = "voltage"
                ch._limits_set["i"] = comp
        self.check_set_errors()
        return _parse_ispp(reply, call, target, tol, read)

    # -- shutdown -------------------------------------------------------------------
    def outputs_on(self, *channels: SMUChannel) -> set[str]:
        """Channel ids (``"a"``, ``"b"``) whose output the instrument reports on, read
        back in one query: the proof a safe state needs, not the driver's belief."""
        chans = channels or tuple(self.smus.values())
        query = "print(" + ", ".join(f"{ch.tsp}.source.output" for ch in chans) + ")"
        values = parse_numbers(self.ask(query), len(chans), query)
        return {ch.id for ch, v in zip(chans, values) if v != 0}

    def safe_off(self, *channels: SMUChannel) -> None:
        """Levels to 0, then outputs off, on ``channels`` (default: every channel).

        No error check in between (an old error must not keep an output on); every step
        is attempted even if one fails, and the first communication failure is raised
        afterwards, because the caller must know the safe state is unproven.
        """
        chans = channels or tuple(self.smus.values())
        steps = []
        for ch in chans:
            steps += [f"{ch.tsp}.source.levelv = 0", f"{ch.tsp}.source.leveli = 0"]
        steps += [f"{ch.tsp}.source.output = 0" for ch in chans]
        failure: InstrumentCommunicationError | None = None
        for command in steps:
            try:
                self.write(command)
            except InstrumentCommunicationError as exc:
                log.error("%s: safe-off step %r failed: %s", self.name, command, exc)
                failure = failure or exc
        if failure is not None:
            raise failure

    def shutdown(self) -> None:
        """Safe state of every channel (:meth:`safe_off`), then pymeasure's shutdown."""
        try:
            self.safe_off()
        finally:
            super().shutdown()


def _parse_ispp(reply: str, call: str, target: float, tol: float, v_read: float) -> ProgramResult:
    values = parse_numbers(reply, None, call)
    if len(values) < 5:
        raise DataFormatError(f"program-and-verify reply too short: {reply[:120]!r}")
    status_code, pulses, rows = (int(round(x)) for x in values[:3])
    if status_code not in _ISPP_STATUS or rows != pulses + 1 or len(values) != 3 + 2 * rows:
        raise DataFormatError(
            f"program-and-verify reply out of step (status {status_code}, {pulses} pulses, "
            f"{rows} rows, {len(values)} numbers): {reply[:120]!r}")
    table = values[3:].reshape(rows, 2)
    current = _without_overflow(table[:, 1])
    trace = np.column_stack([table[:, 0], current, current / v_read])
    return ProgramResult(
        reached=status_code == 1,
        status=_ISPP_STATUS[status_code],
        pulses=pulses,
        conductance=float(trace[-1, 2]),
        target=target,
        tolerance=tol,
        v_read=v_read,
        trace=trace,
    )
