"""Keithley 2600A/B System SourceMeter emulator (the 2612A by default).

Each SMU channel (``smua``, ``smub``) drives one source terminal of the simulated bench,
named ``"<emulator name>.smua"`` / ``".smub"`` (default emulator name ``k2612a``), so
what it measures depends on the relays the 3706A emulator has closed. Model data
(ranges, identity) live in :data:`MODELS`, so other 2600A/B models are one table row.

Implemented (TSP names as on the instrument):

* ``smuX.source``: ``func``, ``levelv/leveli``, ``limitv/limiti/limitp``,
  ``rangev/rangei`` (a value selects the smallest range that holds it and turns
  autorange off), ``autorangev/autorangei``, ``lowrangev/lowrangei``, ``output``
  (``OUTPUT_OFF/ON/HIGH_Z``), ``offmode``, ``offfunc``, ``offlimiti``, ``offlimitv``,
  ``compliance`` (read-only), ``delay``, ``settling``, ``highc``, ``sink``; ``smuX.sense``.
* Output-off states in the circuit (2600B manual, "Output-off modes"): an output that
  is off is a terminal of the bench's circuit. ``OUTPUT_NORMAL`` (the reset default)
  with ``offfunc = OUTPUT_DCVOLTS`` (default) holds 0 V up to ``offlimiti`` (1 mA), with
  ``offfunc = OUTPUT_DCAMPS`` it sources 0 A up to ``offlimitv`` (40 V); ``OUTPUT_ZERO``
  holds 0 V with the present current limit (sourcing current: the larger of
  ``leveli`` and 10 % of ``rangei``); ``OUTPUT_HIGH_Z`` (or ``output = OUTPUT_HIGH_Z``)
  opens the output relay. An off output is never *live* for the bench
  (``SimBench.live_outputs``, relay events), whatever its off-mode.
* ``smuX.measure``: ``nplc`` (0.001–25), ``autozero``, ranges and autoranges,
  ``delay``, ``delayfactor``, ``count``, ``interval``, ``filter.*``, ``rel.*``, and
  ``i() v() iv() r() p()`` with optional buffer arguments.
* Reading buffers: ``nvbuffer1/2``, ``makebuffer(n)``; ``n``, ``capacity``,
  ``appendmode``, ``collecttimestamps``, ``collectsourcevalues``, ``fillmode``,
  ``basetimestamp``, ``clear()``, ``clearcache()``, columns ``readings``,
  ``timestamps``, ``sourcevalues``, ``statuses``, ``measureranges``; ``buf[i]``, ``#buf``.
* Trigger model, in bench time: ``smuX.trigger.initiate()`` returns at once and the
  sweep runs on as the bench clock advances (whoever advances it: ``delay()``, a
  measurement, ``waitcomplete()``, another instrument, a protocol's clock), through
  the arm layer (``arm.count``, ``arm.stimulus``) and the trigger layer (``count``;
  source → ``source.delay`` → measure (``measure.delay``, the readings of
  ``trigger.measure.i/v/iv/r/p(buf…)``) → end pulse; ``endpulse.action``,
  ``endsweep.action``, ``autoclear``), each stage waiting at its event detector for its
  ``stimulus`` (0 = none). Detectors latch events whenever they occur and
  ``initiate()`` clears them; ``smuX.trigger.{arm,source,measure,endpulse}.set()``
  latch one. Events: ``smuX.trigger.*_EVENT_ID`` (SWEEPING, ARMED, SOURCE_COMPLETE,
  MEASURE_COMPLETE, PULSE_COMPLETE, SWEEP_COMPLETE, IDLE), ``trigger.EVENT_ID``
  (``*TRG``), ``trigger.timer[1..8]`` (``delay``, ``delaylist``, ``count``,
  ``passthrough``, ``stimulus``, ``overrun``, ``wait``, ``clear``, ``reset``),
  ``trigger.blender[1..6]`` (``orenable``, ``stimulus[1..4]``, ``overrun``, ``wait``,
  ``clear``, ``reset``), ``trigger.generator[1..2].assert()``; ``trigger.wait`` and
  ``trigger.clear``. ``smuX.trigger.abort()`` / ``smuX.abort()`` stop a sweep at the
  idle level. ``status.operation.sweeping`` and ``status.operation.instrument.smuX``
  show it running. ``waitcomplete()``, ``*WAI`` and ``*OPC?`` advance the bench clock
  until every sweep has ended; ``opc()``/``*OPC`` set the OPC bit then.
* Status model (2600B manual, "Status model"): ``status.condition`` (the status byte:
  MSB, SSB, EAV, QSB, MAV, ESB, MSS, OSB), ``status.request_enable``/``request_event``,
  ``node_enable``/``node_event``, ``status.reset()``; register sets with ``condition``,
  ``event`` (latched through ``ptr``/``ntr``, cleared when read), ``enable``, and
  their bit constants: ``status.standard``, ``status.operation`` (``calibrating``,
  ``sweeping``, ``measuring``, ``trigger_overrun``, ``remote``, ``user`` (writable
  condition), ``instrument`` → ``smuX``), ``status.measurement`` (``voltage_limit``,
  ``current_limit``, ``reading_overflow``, ``buffer_available``, ``instrument`` →
  ``smuX``, bit 0 voltage limit, bit 1 current limit), ``status.questionable``,
  ``status.system``. IEEE-488.2: ``*STB?``, ``*ESR?``, ``*ESE``/``*ESE?``,
  ``*SRE``/``*SRE?``, ``*CLS``, ``*OPC``/``*OPC?``, ``*WAI``, ``*TRG``, ``*RST``; each
  queued error sets its class bit (CME, EXE, DDE, QYE); PON is set at power-on. A
  service request (status byte & request_enable turning non-zero) is counted in
  ``status_model.srq_count`` and passed to ``status_model.on_srq`` (there is no SRQ
  line on a socket).
* ``localnode.model/serialno/revision/linefreq/description``, ``localnode.status``
  (the same ``status`` table), ``node[1]`` (= ``localnode``); ``getmetatable(x)`` of an
  instrument object is a table of its members (functions, constants, sub-objects,
  each attribute's value) with ``__index``/``__newindex`` reading and writing the
  object.
* Factory scripts: KISweep ``SweepV{Lin,Log,List}MeasureI``,
  ``SweepI{Lin,Log,List}MeasureV``; KIPulse ``PulseVMeasureI``, ``PulseIMeasureV``,
  ``ConfigPulseVMeasureI``, ``ConfigPulseIMeasureV``,
  ``ConfigPulse{VMeasureI,IMeasureV}Sweep{Lin,Log}`` (``f, msg`` back; the train is
  stored under its tag), ``InitiatePulseTest(tag)``, ``InitiatePulseTestDual(t1, t2)``
  (two trains on two SMUs at once), ``QueryPulseConfig(tag)`` (a table with
  ``tostring()``); all run in bench time and return when done.
* Models: every 2600A/B (2601A/02A/11A/12A/35A/36A, 2601B/02B/04B/11B/12B/14B/34B/
  35B/36B) with its datasheet ranges (the driver's table).

Simplifications (documented, on purpose):

* Time passes only when somebody advances the bench clock: between two messages no
  time passes, so a ``*TRG`` sent while a measurement is still integrating is latched
  (a second one is an overrun), as on an instrument sent triggers faster than it
  measures. ``waitcomplete()``/``*WAI`` return when a sweep is left waiting for an
  event nothing scheduled will produce (a later ``*TRG``, ``arm.set()``): the instrument
  would block until then. ``*OPC?`` then answers ``1`` only when the sweep ends, as
  the instrument does. A wait gives up after 100,000 clock stops (an endless sweep);
  inside a TSP chunk the instruction budget ends it first.
* A reading is the bench at the middle of its integration (an integrating converter
  averages its window; its timestamp is the start); measurements are never overlapped (``status.operation.measuring`` stays 0),
  ``measure.action = ASYNC`` is taken as ENABLE; digital I/O, TSP-Link and LAN
  triggers, and KIPulse ``sync_out`` are absent (a KIPulse ``sync_in`` never sees a
  trigger: each pulse waits ``sync_in_timeout``, then the train aborts or goes on per
  ``sync_in_abort``). An endless timer (``count = 0``) stops with the last sweep.
* Settling (bench time, before the reading): ``measure.delay`` (reset: DELAY_OFF on
  the 2601-2614, DELAY_AUTO on the 2634-2636) once before the first reading of
  ``measure.count``; DELAY_AUTO is the current range's autodelay × ``delayfactor`` for
  a current reading, none for a voltage one. ``source.delay`` after each source change
  with the output on (a level, ``output``, ``func``; in sweeps at each point);
  DELAY_AUTO is the output settling time of the current range in use (sourcing
  voltage: or of the voltage range, if longer). The range a current reading starts on
  under autorange is the last one used. Figures: :mod:`labpcu.sim.accuracy`.
  Autozero AUTO costs two extra conversions per reading (3 × nplc/linefreq), ONCE
  costs two conversions once.
* Readings carry the data sheet's errors of their range (:mod:`labpcu.sim.accuracy`):
  a fixed gain and offset per channel and range, drawn from the bench seed and the
  names (``instrument_accuracy``), and the range's noise (p-p/6 at 1 PLC) × 1/√nplc
  (clipped to 0.2–30, divided by √count of an enabled filter; ``instrument_noise``),
  on top of the device read noise the bench adds. The output is the programmed level
  (source accuracy is tabulated, not applied). Autorange picks the smallest range
  holding the reading; a fixed range smaller than the reading gives the overflow
  value 9.91e37.
* ``limitp``, ``sense``, ``settling``, ``highc`` and ``sink`` are stored and reported
  but do not change the physics; the power envelope (e.g. 100 mA on the 200 V range)
  is not enforced. An enabled filter of any type divides the noise by √count; only
  the repeat filter also multiplies the integration time. Status registers' default
  enables are 0 and default PTRs all ones.
* Out-of-range settings queue ``-222 Parameter data out of range; <what> <value>``
  and keep the old value (the chunk goes on, as on the instrument).
"""

from __future__ import annotations

import heapq
import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np

from labpcu.sim.tsp.stdlib import StdlibEmulator
from labpcu.sim.tsp.runtime import (
    OVERFLOW_READING,
    TspError,
    TspObject,
    TspParameterError,
    TspTable,
    as_flag,
    as_int,
    as_number,
    check_range,
    lua_sequence,
)

from labpcu.sim.accuracy import ChannelErrors, k2600_table, seed_of
from labpcu.sim.bench import OFF_HIGH_Z, OFF_ZERO_I, OFF_ZERO_V
from labpcu.sim.physics import DEFAULT_PHYSICS, Physics

if TYPE_CHECKING:
    from labpcu.sim.bench import SimBench

__all__ = ["K2612AEmulator", "MODELS", "ReadingBuffer", "SmuChannel", "SmuModel"]

#: instruction-equivalents charged per A/D conversion and per trigger event: with the
#: default budget one message may take 20,000 conversions (each a bench solve, ~0.1 ms),
#: so a runaway measuring loop ends within seconds; raise ``instruction_budget`` for
#: larger single-message sweeps
MEASURE_COST = 500
EVENT_COST = 10
#: how far above a range a reading may go before it overflows (the 2600 over-ranges 1 %)
OVERRANGE = 1.01
#: events closer than this to the clock count as due (float rounding of summed delays)
_TIME_TOLERANCE = 1e-9

VOLTS, AMPS = 1, 0  # smuX.OUTPUT_DCVOLTS, smuX.OUTPUT_DCAMPS
#: models whose ``measure.delay`` resets to DELAY_AUTO (the others: DELAY_OFF)
AUTODELAY_MODELS = frozenset({"2634B", "2635A", "2636A", "2635B", "2636B"})


@dataclass(frozen=True)
class SmuModel:
    """What differs between 2600A/B models."""

    model: str
    channels: tuple[str, ...]
    v_ranges: tuple[float, ...]
    i_ranges: tuple[float, ...]
    firmware: str
    #: readings a nonvolatile buffer holds (approximate; the manuals quote ">100,000")
    nvbuffer_capacity: int = 100_000

    @property
    def v_max(self) -> float:
        return self.v_ranges[-1]

    @property
    def i_max(self) -> float:
        return self.i_ranges[-1]


_I_2612 = (1e-7, 1e-6, 1e-5, 1e-4, 1e-3, 1e-2, 0.1, 1.0, 1.5)
_V_2612 = (0.2, 2.0, 20.0, 200.0)
_I_2602 = (1e-7, 1e-6, 1e-5, 1e-4, 1e-3, 1e-2, 0.1, 1.0, 3.0)
_V_2602 = (0.1, 1.0, 6.0, 40.0)
_I_2634 = (1e-9, 1e-8, *_I_2612)  # 2634B: from 1 nA
_I_2636 = (1e-10, *_I_2634)  # 2635A/B, 2636A/B: from 100 pA
_A, _B = "3.3.5", "4.0.4"  # firmware revisions reported by *IDN? and localnode.revision
_AB = ("smua", "smub")


def _models(*rows: tuple[str, tuple[str, ...], tuple[float, ...], tuple[float, ...], str]) -> dict[str, SmuModel]:
    return {m: SmuModel(m, ch, v, i, fw, 100_000 if fw == _A else 140_000) for m, ch, v, i, fw in rows}


#: every 2600A/B System SourceMeter, with the datasheet ranges (the driver's table)
MODELS: dict[str, SmuModel] = _models(
    ("2612A", _AB, _V_2612, _I_2612, _A),
    ("2611A", ("smua",), _V_2612, _I_2612, _A),
    ("2602A", _AB, _V_2602, _I_2602, _A),
    ("2601A", ("smua",), _V_2602, _I_2602, _A),
    ("2635A", ("smua",), _V_2612, _I_2636, _A),
    ("2636A", _AB, _V_2612, _I_2636, _A),
    ("2612B", _AB, _V_2612, _I_2612, _B),
    ("2611B", ("smua",), _V_2612, _I_2612, _B),
    ("2614B", _AB, _V_2612, _I_2612, _B),
    ("2602B", _AB, _V_2602, _I_2602, _B),
    ("2601B", ("smua",), _V_2602, _I_2602, _B),
    ("2604B", _AB, _V_2602, _I_2602, _B),
    ("2634B", _AB, _V_2612, _I_2634, _B),
    ("2635B", ("smua",), _V_2612, _I_2636, _B),
    ("2636B", _AB, _V_2612, _I_2636, _B),
)


# ------------------------------------------------------------------ settings
Check = Callable[[Any, Any, str], Any]


_UNSET = object()


class _Setting:
    """A validated instrument attribute: Lua assignments go through ``check``
    (which raises TspParameterError for out-of-range values, so the old value stays),
    then the owner's ``_changed(name)`` runs (e.g. to update the bench)."""

    def __init__(self, default: Any, check: Check) -> None:
        self.default = default
        self.check = check
        # a default computed from the owner (e.g. its model's range) is only computed
        # when the attribute was never set; settings are read ~15 times a message
        self._computed = callable(default)

    def __set_name__(self, owner: type, name: str) -> None:
        self.name = name
        self.attr = "_" + name

    def __get__(self, obj: Any, objtype: type | None = None) -> Any:
        if obj is None:
            return self
        if not self._computed:
            return obj.__dict__.get(self.attr, self.default)
        value = obj.__dict__.get(self.attr, _UNSET)
        return self.default(obj) if value is _UNSET else value

    def __set__(self, obj: Any, value: Any) -> None:
        obj.__dict__[self.attr] = self.check(obj, value, f"{obj.lua_path}.{self.name}")
        obj._changed(self.name)


def _reset_settings(obj: Any) -> None:
    for name in [k for k in obj.__dict__ if k.startswith("_") and isinstance(getattr(type(obj), k[1:], None), _Setting)]:
        del obj.__dict__[name]


def _number(lo: float, hi: float) -> Check:
    def check(obj: Any, value: Any, what: str) -> float:
        return check_range(as_number(value, what), lo, hi, what)

    return check


def _delay_value(obj: Any, value: Any, what: str) -> float:
    x = as_number(value, what)
    if x == -1.0:
        return -1.0
    return check_range(x, 0.0, 100_000.0, what)


def _choice(*allowed: int) -> Check:
    def check(obj: Any, value: Any, what: str) -> int:
        if isinstance(value, bool):
            v: int | None = int(value)
        else:
            x = as_number(value, what)
            v = int(x) if math.isfinite(x) and x == int(x) else None
        if v not in allowed:
            raise TspParameterError(f"Parameter data out of range; {what} {value!r}")
        return v

    return check


def _flag(obj: Any, value: Any, what: str) -> int:
    return 1 if as_flag(value, what) else 0


#: the most points a sweep or pulse train may have: what the largest reading buffer
#: holds (140,000 on the 2600B). Without a bound, a stray "points = 3e38" would make
#: the emulator allocate until the machine runs out of memory.
MAX_POINTS = 140_000


def _points(value: Any, what: str, lo: int, error: type[Exception] = TspParameterError) -> int:
    """A point count from Lua, ``lo`` … :data:`MAX_POINTS`. Settings queue a parameter
    error; the factory-script functions raise a Lua runtime error (``TspError``)."""
    n = as_int(value, what)
    if not lo <= n <= MAX_POINTS:
        raise error(f"Parameter data out of range; {what} {n} (must be {lo} to {MAX_POINTS})")
    return n


def _count(lo: int, hi: int) -> Check:
    def check(obj: Any, value: Any, what: str) -> int:
        v = as_number(value, what)
        check_range(v, lo, hi, what)
        if v != int(v):
            raise TspParameterError(f"Parameter data out of range; {what} {v:g}")
        return int(v)

    return check


def _pick_range(ranges: tuple[float, ...], x: float) -> float | None:
    """The smallest range that holds ``|x|`` (None above the largest)."""
    a = abs(x)
    for r in ranges:
        if a <= r * (1 + 1e-9):
            return r
    return None


def _range_check(kind: str) -> Check:
    def check(obj: Any, value: Any, what: str) -> float:
        x = as_number(value, what)
        ranges = obj.spec.v_ranges if kind == "v" else obj.spec.i_ranges
        r = _pick_range(ranges, x) if x == x else None
        if r is None:
            raise TspParameterError(f"Parameter data out of range; {what} {x:g}")
        return r

    return check


def _level_check(kind: str) -> Check:
    def check(obj: Any, value: Any, what: str) -> float:
        x = as_number(value, what)
        top = obj.spec.v_max if kind == "v" else obj.spec.i_max
        return check_range(x, -top * OVERRANGE, top * OVERRANGE, what)

    return check


def _limit_check(kind: str) -> Check:
    def check(obj: Any, value: Any, what: str) -> float:
        x = as_number(value, what)
        ranges = obj.spec.v_ranges if kind == "v" else obj.spec.i_ranges
        return check_range(x, 0.1 * ranges[0], ranges[-1] * OVERRANGE, what)

    return check


# -------------------------------------------------------------------- buffers
class _BufferColumn(TspObject):
    """One column of a reading buffer (``buf.readings``), 1-based."""

    def __init__(self, buf: ReadingBuffer, name: str, store: list[float], enabled: Callable[[], bool]) -> None:
        super().__init__(f"{buf.lua_path}.{name}")
        self._buf = buf
        self._store = store
        self._enabled = enabled
        self._name = name

    def _value(self, k: int) -> float:
        if self._name == "timestamps":
            return self._store[k] - self._store[0]
        return self._store[k]

    def lua_item(self, index: Any) -> Any:
        if not isinstance(index, (int, float)) or isinstance(index, bool) or not self._enabled():
            return None
        k = int(index)
        if k != index or not 1 <= k <= len(self._buf._readings):
            return None
        return self._value(k - 1)

    def lua_length(self) -> int:
        return len(self._buf._readings)

    def print_values(self, start: int, stop: int) -> list[float]:
        if not self._enabled():
            raise TspError(f"{self.lua_path} were not collected (collect{self._name} is off)")
        self._buf._check_span(start, stop)
        return [self._value(k) for k in range(start - 1, stop)]


class ReadingBuffer(TspObject):
    """A reading buffer (``smua.nvbuffer1`` or ``smua.makebuffer(n)``).

    With ``appendmode`` off each measurement command (or sweep) starts the buffer over;
    with ``fillmode`` FILL_ONCE a full buffer ignores new readings, FILL_WINDOW drops
    the oldest. Timestamps are relative to the first reading (``basetimestamp``).
    """

    lua_static = frozenset({"readings", "timestamps", "sourcevalues", "statuses", "measureranges"})
    lua_get = frozenset({"n", "capacity", "appendmode", "collecttimestamps", "collectsourcevalues",
                         "fillmode", "basetimestamp", "timestampresolution", "cachemode"})
    lua_set = frozenset({"appendmode", "collecttimestamps", "collectsourcevalues", "fillmode",
                         "timestampresolution", "cachemode"})
    lua_call = frozenset({"clear", "clearcache"})

    appendmode = _Setting(0, _flag)
    collecttimestamps = _Setting(1, _flag)
    collectsourcevalues = _Setting(0, _flag)
    fillmode = _Setting(0, _choice(0, 1))
    timestampresolution = _Setting(1e-6, _number(1e-6, 1.0))
    cachemode = _Setting(1, _flag)

    def __init__(self, path: str, capacity: int) -> None:
        super().__init__(path)
        self.capacity = capacity
        self._readings: list[float] = []
        self._times: list[float] = []
        self._sources: list[float] = []
        self._statuses: list[float] = []
        self._ranges: list[float] = []
        self.readings = _BufferColumn(self, "readings", self._readings, lambda: True)
        self.timestamps = _BufferColumn(self, "timestamps", self._times, lambda: bool(self.collecttimestamps))
        self.sourcevalues = _BufferColumn(self, "sourcevalues", self._sources, lambda: bool(self.collectsourcevalues))
        self.statuses = _BufferColumn(self, "statuses", self._statuses, lambda: True)
        self.measureranges = _BufferColumn(self, "measureranges", self._ranges, lambda: True)

    def _changed(self, name: str) -> None:
        pass

    @property
    def n(self) -> int:
        return len(self._readings)

    @property
    def basetimestamp(self) -> float:
        return self._times[0] if self._times else 0.0

    def clear(self) -> None:
        for column in (self._readings, self._times, self._sources, self._statuses, self._ranges):
            column.clear()

    def clearcache(self) -> None:
        """Nothing is cached here: readings are always current."""

    def reset(self) -> None:
        self.clear()
        _reset_settings(self)

    def begin(self) -> None:
        """A new measurement command writes here: start over unless appending."""
        if not self.appendmode:
            self.clear()

    def append(self, value: float, t: float, source: float, status: int, rng: float) -> None:
        if len(self._readings) >= self.capacity:
            if not self.fillmode:
                return
            for column in (self._readings, self._times, self._sources, self._statuses, self._ranges):
                del column[0]
        self._readings.append(value)
        self._times.append(t)
        self._sources.append(source)
        self._statuses.append(float(status))
        self._ranges.append(rng)

    def lua_item(self, index: Any) -> Any:
        return self.readings.lua_item(index)

    def lua_length(self) -> int:
        return self.n

    def print_values(self, start: int, stop: int) -> list[float]:
        return self.readings.print_values(start, stop)

    def _check_span(self, start: int, stop: int) -> None:
        if stop > self.n:
            raise TspError(f"printbuffer: index {stop} out of range ({self.lua_path} holds {self.n} readings)")


# ------------------------------------------------------------ trigger objects
class _Detector:
    """An event detector: latched by an event, cleared when used or cleared."""

    __slots__ = ("detected", "overrun")

    def __init__(self) -> None:
        self.detected = False
        self.overrun = False

    def latch(self) -> None:
        if self.detected:
            self.overrun = True
        self.detected = True

    def clear(self) -> None:
        self.detected = False
        self.overrun = False


class TriggerTimer(TspObject):
    """``trigger.timer[N]``: when its stimulus event occurs it emits its own event
    immediately if ``passthrough``, then ``count`` more times, ``delay`` (or the
    ``delaylist`` in turn) apart, in bench time. A stimulus while it is still running
    is an overrun and is ignored. ``count = 0`` runs while any channel sweeps."""

    lua_static = frozenset({"EVENT_ID"})
    lua_get = frozenset({"count", "delay", "delaylist", "passthrough", "stimulus", "overrun"})
    lua_set = frozenset({"count", "delay", "delaylist", "passthrough", "stimulus"})
    lua_call = frozenset({"clear", "reset", "wait"})

    def __init__(self, emu: K2612AEmulator, index: int, event_id: int) -> None:
        super().__init__(f"trigger.timer[{index}]")
        self._emu = emu
        self.EVENT_ID = event_id
        self.detector = _Detector()  # what wait() sees: this timer's own events
        self.reset()

    def reset(self) -> None:
        self._count = 1
        self._delays = [10e-6]
        self._passthrough = False
        self._stimulus = 0
        self.overrun = False
        self.remaining = 0  # events still to come from the present start
        self.detector.clear()

    def clear(self) -> None:
        self.overrun = False
        self.detector.clear()

    def wait(self, timeout: Any = None) -> bool:
        """Wait (bench time) up to ``timeout`` s for this timer's event; True if it came."""
        return self._emu.bus.wait_for(self.detector, as_number(timeout, f"{self.lua_path}.wait"))

    @property
    def count(self) -> int:
        return self._count

    @count.setter
    def count(self, value: Any) -> None:
        self._count = int(check_range(float(as_int(value, f"{self.lua_path}.count")), 0, 1_048_575, f"{self.lua_path}.count"))

    @property
    def delay(self) -> float:
        return self._delays[0]

    @delay.setter
    def delay(self, value: Any) -> None:
        what = f"{self.lua_path}.delay"
        self._delays = [check_range(as_number(value, what), 1e-6, 100_000.0, what)]

    @property
    def delaylist(self) -> list[float]:
        return list(self._delays)

    @delaylist.setter
    def delaylist(self, value: Any) -> None:
        what = f"{self.lua_path}.delaylist"
        delays = lua_sequence(value, what)
        if not delays:
            raise TspParameterError(f"Parameter data out of range; {what} (empty)")
        self._delays = [check_range(d, 1e-6, 100_000.0, what) for d in delays]

    @property
    def passthrough(self) -> bool:
        return self._passthrough

    @passthrough.setter
    def passthrough(self, value: Any) -> None:
        self._passthrough = as_flag(value, f"{self.lua_path}.passthrough")

    @property
    def stimulus(self) -> int:
        return self._stimulus

    @stimulus.setter
    def stimulus(self, value: Any) -> None:
        self._stimulus = as_int(value, f"{self.lua_path}.stimulus")


class _Stimuli(TspObject):
    """``trigger.blender[N].stimulus[M]`` (M = 1..4)."""

    def __init__(self, blender: TriggerBlender) -> None:
        super().__init__(f"{blender.lua_path}.stimulus")
        self._blender = blender

    def _index(self, index: Any) -> int:
        if isinstance(index, (int, float)) and not isinstance(index, bool) and index == int(index) and 1 <= index <= 4:
            return int(index)
        raise TspError(f"{self.lua_path}[{index!r}]: index must be 1 to 4")

    def lua_item(self, index: Any) -> Any:
        return self._blender.stimuli[self._index(index) - 1]

    def lua_setattr(self, key: Any, value: Any) -> None:
        if isinstance(key, str):
            super().lua_setattr(key, value)
        self._blender.stimuli[self._index(key) - 1] = as_int(value, f"{self.lua_path}[{key}]")

    def lua_length(self) -> int:
        return 4


class TriggerBlender(TspObject):
    """``trigger.blender[N]``: emits its event when any (``orenable``) or all of its
    four stimuli (0 = unused) have occurred; an AND blender starts over after firing."""

    lua_static = frozenset({"EVENT_ID", "stimulus"})
    lua_get = frozenset({"orenable", "overrun"})
    lua_set = frozenset({"orenable"})
    lua_call = frozenset({"clear", "reset", "wait"})

    def __init__(self, emu: K2612AEmulator, index: int, event_id: int) -> None:
        super().__init__(f"trigger.blender[{index}]")
        self._emu = emu
        self.EVENT_ID = event_id
        self.detector = _Detector()
        self.stimulus = _Stimuli(self)
        self.reset()

    def reset(self) -> None:
        self.stimuli = [0, 0, 0, 0]
        self._orenable = False
        self.overrun = False
        self.seen: set[int] = set()
        self.detector.clear()

    def clear(self) -> None:
        self.overrun = False
        self.seen.clear()
        self.detector.clear()

    def wait(self, timeout: Any = None) -> bool:
        return self._emu.bus.wait_for(self.detector, as_number(timeout, f"{self.lua_path}.wait"))

    @property
    def orenable(self) -> bool:
        return self._orenable

    @orenable.setter
    def orenable(self, value: Any) -> None:
        self._orenable = as_flag(value, f"{self.lua_path}.orenable")

    def offer(self, event_id: int) -> bool:
        """An event occurred: True if the blender fires now."""
        used = [s for s in self.stimuli if s != 0]
        if event_id not in used:
            return False
        if self._orenable:
            return True
        self.seen.add(event_id)
        if all(s in self.seen for s in used):
            self.seen.clear()
            return True
        return False


class TriggerGenerator(TspObject):
    """``trigger.generator[N]``: ``assert()`` emits its event (2600B)."""

    lua_static = frozenset({"EVENT_ID"})
    lua_call = frozenset({"assert"})

    def __init__(self, emu: K2612AEmulator, index: int, event_id: int) -> None:
        super().__init__(f"trigger.generator[{index}]")
        self._emu = emu
        self.EVENT_ID = event_id

    def lua_statics(self) -> dict[Any, Any]:
        return {"EVENT_ID": self.EVENT_ID, "assert": self._assert}

    def _assert(self) -> None:
        self._emu.bus.emit(self.EVENT_ID)


class _ObjectArray(TspObject):
    def __init__(self, path: str, items: list[Any]) -> None:
        super().__init__(path)
        self._items = items

    def lua_item(self, index: Any) -> Any:
        if isinstance(index, (int, float)) and not isinstance(index, bool) and index == int(index):
            if 1 <= int(index) <= len(self._items):
                return self._items[int(index) - 1]
        return None

    def lua_length(self) -> int:
        return len(self._items)


#: how many events one instant may dispatch before the bus gives up (a loop of
#: blenders/timers feeding each other at zero delay)
_MAX_CASCADE = 10_000


class _TriggerBus:
    """The instrument's trigger events, in bench time (a :class:`~labpcu.clock.TimedAgent`).

    ``emit(id)`` dispatches an event now: it latches the event detectors of every SMU
    stage whose stimulus it is (and the blenders', timers' own ``wait`` detectors),
    starts the timers it stimulates and feeds the blenders; then every sweeping
    channel runs on as far as it can at this instant. Timer events and the end of each
    sweep step are due at later times; the bench clock stops there (``next_due`` /
    ``fire``), whoever advances it.
    """

    def __init__(self, emu: K2612AEmulator) -> None:
        self.emu = emu
        self.heap: list[tuple[float, int, TriggerTimer, int]] = []
        self.seq = 0
        self._pumping = False
        self._depth = 0
        self.command_trigger = _Detector()  # *TRG / trigger.wait()

    # -- agent protocol ------------------------------------------------------------
    def next_due(self) -> float | None:
        times = [self.heap[0][0]] if self.heap else []
        for ch in self.emu.channels.values():
            t = ch.sweep.wake_at if ch.sweep is not None else None
            if t is not None:
                times.append(t)
        return min(times) if times else None

    def fire(self, now: float) -> None:
        with self.emu._lock:
            while self.heap and self.heap[0][0] <= now + _TIME_TOLERANCE:
                t, _, timer, k = heapq.heappop(self.heap)
                self._timer_tick(timer, k, t)
            self.pump()

    # -- events --------------------------------------------------------------------
    def emit(self, event_id: int) -> None:
        """An event occurs now (from a command, a sweep, a timer or a blender)."""
        with self.emu._lock:
            self._dispatch(event_id)
            self.pump()

    def _dispatch(self, event_id: int) -> None:
        if event_id == 0:
            return
        self._depth += 1
        try:
            if self._depth > _MAX_CASCADE:
                raise TspError(f"trigger events feed each other endlessly (event {event_id})")
            self.emu.charge(EVENT_COST)
            for ch in self.emu.channels.values():
                ch.trigger.on_event(event_id)
            for timer in self.emu.timers:
                if timer.EVENT_ID == event_id:
                    timer.detector.latch()
                if timer.stimulus == event_id:
                    self._start_timer(timer)
            for blender in self.emu.blenders:
                if blender.EVENT_ID == event_id:
                    blender.detector.latch()
                elif blender.offer(event_id):
                    self._dispatch(blender.EVENT_ID)
            if event_id == self.emu.trigger_event_id:
                self.command_trigger.latch()
        finally:
            self._depth -= 1

    def _start_timer(self, timer: TriggerTimer) -> None:
        if timer.remaining:
            timer.overrun = True
            return
        timer.remaining = timer.count if timer.count > 0 else -1  # -1: while sweeping
        if timer.passthrough:
            self._dispatch(timer.EVENT_ID)
        self._push(self.emu.clock.now() + timer._delays[0], timer, 0)

    def _push(self, t: float, timer: TriggerTimer, k: int) -> None:
        self.seq += 1
        heapq.heappush(self.heap, (t, self.seq, timer, k))

    def _timer_tick(self, timer: TriggerTimer, k: int, t: float) -> None:
        if timer.remaining == 0:
            return  # reset or cleared meanwhile
        if timer.remaining < 0 and not self.emu.sweeping():
            timer.remaining = 0  # an endless timer stops with the last sweep
            return
        if timer.remaining > 0:
            timer.remaining -= 1
        if timer.remaining != 0:
            delays = timer._delays
            self._push(t + delays[(k + 1) % len(delays)], timer, k + 1)
        self._dispatch(timer.EVENT_ID)

    def pump(self) -> None:
        """Let every sweeping channel run on as far as it can at this instant."""
        if self._pumping:
            return
        self._pumping = True
        try:
            progress = True
            while progress:
                progress = False
                for ch in self.emu.channels.values():
                    if ch.sweep is not None and ch.sweep.resume():
                        progress = True
        finally:
            self._pumping = False

    def reset(self) -> None:
        self.heap.clear()
        self.command_trigger.clear()

    # -- waiting -------------------------------------------------------------------
    def wait_for(self, detector: _Detector, timeout: float) -> bool:
        """``trigger.wait``/``timer.wait``: advance the bench clock until the detector
        latches or ``timeout`` s pass; True (and cleared) if it latched."""
        clock = self.emu.clock
        deadline = clock.now() + max(timeout, 0.0)
        while not detector.detected:
            due = clock.next_due()
            if due is None or due > deadline:
                clock.advance(max(deadline - clock.now(), 0.0))
                break
            clock.advance(max(due - clock.now(), 0.0))
        hit = detector.detected
        detector.clear()
        return hit


class _Sweep:
    """One ``initiate()`` of one channel: a generator of steps driven by the bus.

    The steps yield ``("wait", stage)`` (an event detector), ``("sleep", dt)`` (bench
    time passes: a delay, an integration) or ``("emit", id)``; :meth:`resume` runs them
    until the sweep must wait for an event or for the clock.
    """

    def __init__(self, ch: SmuChannel) -> None:
        self.ch = ch
        self.gen = ch._sweep_steps()
        self.wake_at: float | None = None
        self.waiting: str | None = None
        self.done = False

    def resume(self) -> bool:
        ch, bus, clock = self.ch, self.ch.emu.bus, self.ch.emu.clock
        progressed = False
        while not self.done:
            if self.wake_at is not None:
                if self.wake_at > clock.now() + _TIME_TOLERANCE:
                    return progressed
                self.wake_at = None
            if self.waiting is not None:
                det = ch.trigger.detector(self.waiting)
                if not det.detected:
                    return progressed
                det.detected = False
                self.waiting = None
            progressed = True
            try:
                kind, arg = next(self.gen)
            except StopIteration:
                ch._sweep_finished(self)
                return True
            if kind == "sleep":
                if arg > 0:
                    self.wake_at = clock.now() + arg
            elif kind == "wait":
                if ch.trigger.stage(arg).stimulus != 0:
                    self.waiting = arg
            else:  # emit
                bus._dispatch(arg)
        return progressed


# ------------------------------------------------------------- SMU sub-objects
class _Stage(TspObject):
    """``smua.trigger.{arm,source,measure,endpulse,endsweep}``: common parts."""

    lua_get = frozenset({"action", "stimulus"})
    lua_set = lua_get
    lua_call = frozenset({"set", "release"})

    def __init__(self, ch: SmuChannel, name: str, action_default: int, actions: tuple[int, ...]) -> None:
        super().__init__(f"{ch.lua_path}.trigger.{name}")
        self._ch = ch
        self._stage = name
        self._action_default = action_default
        self._actions = actions
        self.det = _Detector()
        self.reset()

    def reset(self) -> None:
        self._action = self._action_default
        self._stimulus = 0
        self.det.clear()

    @property
    def action(self) -> int:
        return self._action

    @action.setter
    def action(self, value: Any) -> None:
        self._action = _choice(*self._actions)(self, value, f"{self.lua_path}.action")

    @property
    def stimulus(self) -> int:
        return self._stimulus

    @stimulus.setter
    def stimulus(self, value: Any) -> None:
        self._stimulus = as_int(value, f"{self.lua_path}.stimulus")

    def set(self) -> None:
        """Sets the event detector (``initiate()`` clears it: call after initiating)."""
        self.det.latch()
        self._ch.emu.bus.pump()

    def release(self) -> None:
        """Releases a stage held by the trigger model (here: the same as ``set``)."""
        self.set()


class _ArmStage(_Stage):
    lua_get = frozenset({"action", "stimulus", "count"})
    lua_set = lua_get

    def reset(self) -> None:
        super().reset()
        self._count = 1

    @property
    def count(self) -> int:
        return self._count

    @count.setter
    def count(self, value: Any) -> None:
        self._count = _count(0, 268_435_455)(self, value, f"{self.lua_path}.count")


class _SourceStage(_Stage):
    """``smua.trigger.source``: the sweep list and its limits."""

    lua_get = frozenset({"action", "stimulus", "limitv", "limiti"})
    lua_set = lua_get
    lua_call = frozenset({"set", "release", "listv", "listi", "linearv", "lineari", "logv", "logi"})

    def reset(self) -> None:
        super().reset()
        self.points: list[float] = []
        self.func = VOLTS
        self._limitv: float | None = None
        self._limiti: float | None = None

    @property
    def spec(self) -> SmuModel:
        return self._ch.spec

    def _changed(self, name: str) -> None:
        pass

    @property
    def limitv(self) -> float:
        return self._limitv if self._limitv is not None else self._ch.source.limitv

    @limitv.setter
    def limitv(self, value: Any) -> None:
        x = as_number(value, f"{self.lua_path}.limitv")
        self._limitv = None if x in (0.0, -1.0) else _limit_check("v")(self, x, f"{self.lua_path}.limitv")

    @property
    def limiti(self) -> float:
        return self._limiti if self._limiti is not None else self._ch.source.limiti

    @limiti.setter
    def limiti(self, value: Any) -> None:
        x = as_number(value, f"{self.lua_path}.limiti")
        self._limiti = None if x in (0.0, -1.0) else _limit_check("i")(self, x, f"{self.lua_path}.limiti")

    def _set_points(self, func: int, values: list[float]) -> None:
        kind = "v" if func == VOLTS else "i"
        top = (self.spec.v_max if kind == "v" else self.spec.i_max) * OVERRANGE
        if not values:
            raise TspParameterError(f"Parameter data out of range; {self.lua_path}.list{kind} (empty)")
        for x in values:
            check_range(x, -top, top, f"{self.lua_path}.list{kind}")
        self.func = func
        self.points = values

    def listv(self, values: Any = None) -> None:
        self._set_points(VOLTS, lua_sequence(values, f"{self.lua_path}.listv"))

    def listi(self, values: Any = None) -> None:
        self._set_points(AMPS, lua_sequence(values, f"{self.lua_path}.listi"))

    def _linear(self, func: int, start: Any, stop: Any, points: Any, name: str) -> None:
        a, b = as_number(start, f"{name} start"), as_number(stop, f"{name} stop")
        n = _points(points, f"{name} points", 1)
        values = [a] if n == 1 else [a + (b - a) * k / (n - 1) for k in range(n)]
        self._set_points(func, values)

    def linearv(self, start: Any = None, stop: Any = None, points: Any = None) -> None:
        self._linear(VOLTS, start, stop, points, f"{self.lua_path}.linearv")

    def lineari(self, start: Any = None, stop: Any = None, points: Any = None) -> None:
        self._linear(AMPS, start, stop, points, f"{self.lua_path}.lineari")

    def _log(self, func: int, start: Any, stop: Any, points: Any, asymptote: Any, name: str) -> None:
        a, b = as_number(start, f"{name} start"), as_number(stop, f"{name} stop")
        n = _points(points, f"{name} points", 2)
        c = 0.0 if asymptote is None else as_number(asymptote, f"{name} asymptote")
        lo, hi = a - c, b - c
        if n < 2 or lo == 0 or hi == 0 or (lo > 0) != (hi > 0):
            raise TspParameterError(f"Parameter data out of range; {name} {a:g}, {b:g}, {n}, {c:g}")
        ratio = hi / lo
        self._set_points(func, [c + lo * ratio ** (k / (n - 1)) for k in range(n)])

    def logv(self, start: Any = None, stop: Any = None, points: Any = None, asymptote: Any = None) -> None:
        self._log(VOLTS, start, stop, points, asymptote, f"{self.lua_path}.logv")

    def logi(self, start: Any = None, stop: Any = None, points: Any = None, asymptote: Any = None) -> None:
        self._log(AMPS, start, stop, points, asymptote, f"{self.lua_path}.logi")


class _MeasureStage(_Stage):
    """``smua.trigger.measure``: which readings a sweep takes, into which buffers."""

    lua_call = frozenset({"set", "release", "i", "v", "iv", "r", "p"})

    def reset(self) -> None:
        super().reset()
        self.kinds: tuple[str, ...] = ()
        self.buffers: tuple[ReadingBuffer | None, ...] = ()

    def _configure(self, kinds: tuple[str, ...], buffers: tuple[Any, ...]) -> None:
        for b in buffers:
            if not isinstance(b, ReadingBuffer):
                raise TspError(f"{self.lua_path}.{''.join(kinds)}: reading buffer expected")
        self.kinds, self.buffers = kinds, buffers

    def i(self, buf: Any = None) -> None:
        self._configure(("i",), (buf,))

    def v(self, buf: Any = None) -> None:
        self._configure(("v",), (buf,))

    def r(self, buf: Any = None) -> None:
        self._configure(("r",), (buf,))

    def p(self, buf: Any = None) -> None:
        self._configure(("p",), (buf,))

    def iv(self, ibuf: Any = None, vbuf: Any = None) -> None:
        self._configure(("i", "v"), (ibuf, vbuf))


class SmuTrigger(TspObject):
    """``smua.trigger``: the channel's trigger model (see :meth:`SmuChannel.initiate`)."""

    lua_static = frozenset({"arm", "source", "measure", "endpulse", "endsweep",
                            "ARMED_EVENT_ID", "SWEEPING_EVENT_ID", "SWEEP_COMPLETE_EVENT_ID",
                            "SOURCE_COMPLETE_EVENT_ID", "MEASURE_COMPLETE_EVENT_ID",
                            "PULSE_COMPLETE_EVENT_ID", "IDLE_EVENT_ID"})
    lua_get = frozenset({"count", "autoclear"})
    lua_set = lua_get
    lua_call = frozenset({"initiate", "abort"})

    def __init__(self, ch: SmuChannel, first_event_id: int) -> None:
        super().__init__(f"{ch.lua_path}.trigger")
        self._ch = ch
        (self.ARMED_EVENT_ID, self.SWEEPING_EVENT_ID, self.SWEEP_COMPLETE_EVENT_ID,
         self.SOURCE_COMPLETE_EVENT_ID, self.MEASURE_COMPLETE_EVENT_ID,
         self.PULSE_COMPLETE_EVENT_ID, self.IDLE_EVENT_ID) = range(first_event_id, first_event_id + 7)
        self.arm = _ArmStage(ch, "arm", 0, (0, 1))
        self.source = _SourceStage(ch, "source", 0, (0, 1))
        self.measure = _MeasureStage(ch, "measure", 0, (0, 1, 2))
        self.endpulse = _Stage(ch, "endpulse", 1, (0, 1))
        self.endsweep = _Stage(ch, "endsweep", 0, (0, 1))
        self.reset()

    def reset(self) -> None:
        self._count = 1
        self._autoclear = 0
        for stage in (self.arm, self.source, self.measure, self.endpulse, self.endsweep):
            stage.reset()

    @property
    def count(self) -> int:
        return self._count

    @count.setter
    def count(self, value: Any) -> None:
        self._count = _count(0, 268_435_455)(self, value, f"{self.lua_path}.count")

    @property
    def autoclear(self) -> int:
        return self._autoclear

    @autoclear.setter
    def autoclear(self, value: Any) -> None:
        self._autoclear = _flag(self, value, f"{self.lua_path}.autoclear")

    STAGES = ("arm", "source", "measure", "endpulse")

    def stage(self, name: str) -> _Stage:
        return getattr(self, name)

    def detector(self, name: str) -> _Detector:
        return self.stage(name).det

    def on_event(self, event_id: int) -> None:
        """An event occurred: latch the detectors it stimulates."""
        for name in self.STAGES:
            st = self.stage(name)
            if st.stimulus == event_id:
                st.det.latch()

    def clear_detectors(self, names: tuple[str, ...] = STAGES) -> None:
        for name in names:
            self.stage(name).det.clear()

    def initiate(self) -> None:
        """Starts the sweep and returns at once; it runs on in bench time."""
        self._ch.initiate()

    def abort(self) -> None:
        """Stops a running sweep (the output goes to its idle level)."""
        self._ch.abort()


class SmuSource(TspObject):
    """``smua.source``. Every change that affects the output updates the bench."""

    lua_get = frozenset({"func", "levelv", "leveli", "limitv", "limiti", "limitp", "rangev", "rangei",
                         "autorangev", "autorangei", "lowrangev", "lowrangei", "output", "offmode",
                         "offlimiti", "offlimitv", "compliance", "delay", "settling", "highc", "sink",
                         "offfunc"})
    lua_set = lua_get - {"compliance"}

    func = _Setting(VOLTS, _choice(AMPS, VOLTS))
    levelv = _Setting(0.0, _level_check("v"))
    leveli = _Setting(0.0, _level_check("i"))
    limitv = _Setting(20.0, _limit_check("v"))
    limiti = _Setting(0.1, _limit_check("i"))
    limitp = _Setting(0.0, _number(0.0, 1e4))
    rangev = _Setting(lambda self: self.spec.v_ranges[0], _range_check("v"))
    rangei = _Setting(lambda self: self.spec.i_ranges[0], _range_check("i"))
    autorangev = _Setting(1, _flag)
    autorangei = _Setting(1, _flag)
    lowrangev = _Setting(lambda self: self.spec.v_ranges[0], _range_check("v"))
    lowrangei = _Setting(lambda self: self.spec.i_ranges[0], _range_check("i"))
    output = _Setting(0, _choice(0, 1, 2))
    offmode = _Setting(0, _choice(0, 1, 2))
    offfunc = _Setting(VOLTS, _choice(AMPS, VOLTS))
    offlimiti = _Setting(1e-3, _limit_check("i"))
    offlimitv = _Setting(40.0, _limit_check("v"))
    delay = _Setting(0.0, _delay_value)
    settling = _Setting(0, _choice(0, 1, 2, 3, 4, 128))
    highc = _Setting(0, _flag)
    sink = _Setting(0, _flag)

    def __init__(self, ch: SmuChannel) -> None:
        super().__init__(f"{ch.lua_path}.source")
        self._ch = ch

    @property
    def spec(self) -> SmuModel:
        return self._ch.spec

    def __setattr__(self, name: str, value: Any) -> None:
        if name in ("levelv", "leveli"):
            self._check_level_fits(name, value)
        object.__setattr__(self, name, value)

    def _check_level_fits(self, name: str, value: Any) -> None:
        """With autorange off a level must fit the fixed source range."""
        kind = name[-1]
        x = as_number(value, f"{self.lua_path}.{name}")
        if not getattr(self, f"autorange{kind}"):
            rng = getattr(self, f"range{kind}")
            if abs(x) > rng * OVERRANGE:
                raise TspParameterError(f"Parameter data out of range; {self.lua_path}.{name} {x:g} "
                                        f"exceeds range{kind} {rng:g}")

    def _changed(self, name: str) -> None:
        if name in ("levelv", "leveli", "autorangev", "autorangei"):
            kind = name[-1]
            name = f"level{kind}"
            if getattr(self, f"autorange{kind}"):
                ranges = self.spec.v_ranges if kind == "v" else self.spec.i_ranges
                r = _pick_range(ranges, getattr(self, name)) or ranges[-1]
                low = getattr(self, f"lowrange{kind}")
                self.__dict__[f"_range{kind}"] = max(r, low)
        elif name in ("rangev", "rangei"):
            self.__dict__[f"_autorange{name[-1]}"] = 0
        self._ch.apply_source()
        if name in ("levelv", "leveli", "output", "func"):
            self._ch.settle_source()

    @property
    def compliance(self) -> bool:
        return self._ch.in_compliance()


class SmuMeasure(TspObject):
    """``smua.measure``: settings and the single-shot ``i() v() iv() r() p()``."""

    lua_static = frozenset({"filter", "rel"})
    lua_get = frozenset({"nplc", "autozero", "rangev", "rangei", "autorangev", "autorangei",
                         "lowrangev", "lowrangei", "delay", "delayfactor", "count", "interval"})
    lua_set = lua_get
    lua_call = frozenset({"i", "v", "iv", "r", "p"})

    nplc = _Setting(1.0, _number(0.001, 25.0))
    autozero = _Setting(2, _choice(0, 1, 2))
    rangev = _Setting(lambda self: self.spec.v_ranges[0], _range_check("v"))
    rangei = _Setting(lambda self: self.spec.i_ranges[0], _range_check("i"))
    autorangev = _Setting(1, _choice(0, 1, 2))
    autorangei = _Setting(1, _choice(0, 1, 2))
    lowrangev = _Setting(lambda self: self.spec.v_ranges[0], _range_check("v"))
    lowrangei = _Setting(lambda self: self.spec.i_ranges[0], _range_check("i"))
    #: 2600A/B manuals: DELAY_OFF on 2601-2614, DELAY_AUTO on the low-current 2634-2636
    delay = _Setting(lambda self: -1.0 if self.spec.model in AUTODELAY_MODELS else 0.0, _delay_value)
    delayfactor = _Setting(1.0, _number(0.0, 1000.0))
    count = _Setting(1, _count(1, 268_435_455))
    interval = _Setting(0.0, _number(0.0, 1.0))

    def __init__(self, ch: SmuChannel) -> None:
        super().__init__(f"{ch.lua_path}.measure")
        self._ch = ch
        self.filter = TspTable(
            f"{ch.lua_path}.measure.filter",
            fields={"enable": 0, "count": 1, "type": 1},
            validators={"enable": lambda v: _flag(None, v, "filter.enable"),
                        "count": lambda v: _count(1, 100)(None, v, f"{ch.lua_path}.measure.filter.count"),
                        "type": lambda v: _choice(0, 1, 2)(None, v, f"{ch.lua_path}.measure.filter.type")},
        )
        self.rel = TspTable(
            f"{ch.lua_path}.measure.rel",
            fields={"enablei": 0, "enablev": 0, "enabler": 0, "enablep": 0,
                    "leveli": 0.0, "levelv": 0.0, "levelr": 0.0, "levelp": 0.0},
            validators={**{f"enable{k}": (lambda v: _flag(None, v, "rel.enable")) for k in "ivrp"},
                        **{f"level{k}": (lambda v: as_number(v, "rel.level")) for k in "ivrp"}},
        )

    @property
    def spec(self) -> SmuModel:
        return self._ch.spec

    def _changed(self, name: str) -> None:
        if name in ("rangev", "rangei"):
            self.__dict__[f"_autorange{name[-1]}"] = 0
        elif name == "autozero" and self.autozero == 1:
            # ONCE: one reference and one zero conversion now, then autozero is off
            self._ch.emu.clock.advance(2 * self.nplc / self._ch.emu.linefreq)
            self.__dict__["_autozero"] = 0

    def reset(self) -> None:
        _reset_settings(self)
        self.filter.reset_fields()
        self.rel.reset_fields()

    def _direct(self, kinds: tuple[str, ...], buffers: tuple[Any, ...]) -> Any:
        given = [b for b in buffers if b is not None]
        for b in given:
            if not isinstance(b, ReadingBuffer):
                raise TspError(f"{self.lua_path}.{''.join(kinds)}: reading buffer expected")
        if given:
            for b in dict.fromkeys(given):
                b.begin()
            self._ch.take_readings(kinds, buffers)
            return None
        values = self._ch.take_readings(kinds, (None,) * len(kinds))
        return values[0] if len(values) == 1 else tuple(values)

    def i(self, buf: Any = None) -> Any:
        return self._direct(("i",), (buf,))

    def v(self, buf: Any = None) -> Any:
        return self._direct(("v",), (buf,))

    def r(self, buf: Any = None) -> Any:
        return self._direct(("r",), (buf,))

    def p(self, buf: Any = None) -> Any:
        return self._direct(("p",), (buf,))

    def iv(self, ibuf: Any = None, vbuf: Any = None) -> Any:
        return self._direct(("i", "v"), (ibuf, vbuf))


@dataclass
class _Conversion:
    t: float
    i: float
    v: float
    compliance: bool


class SmuChannel(TspObject):
    """One SMU channel (``smua``) bound to the bench terminal ``<emulator>.smua``."""

    lua_static = frozenset({
        "source", "measure", "trigger", "nvbuffer1", "nvbuffer2",
        "OUTPUT_DCAMPS", "OUTPUT_DCVOLTS", "OUTPUT_OFF", "OUTPUT_ON", "OUTPUT_HIGH_Z",
        "OUTPUT_NORMAL", "OUTPUT_ZERO", "SENSE_LOCAL", "SENSE_REMOTE", "SENSE_CALA",
        "AUTORANGE_OFF", "AUTORANGE_ON", "AUTORANGE_FOLLOW_LIMIT", "AUTOZERO_OFF",
        "AUTOZERO_ONCE", "AUTOZERO_AUTO", "DELAY_OFF", "DELAY_AUTO", "ENABLE", "DISABLE",
        "ASYNC", "SOURCE_IDLE", "SOURCE_HOLD", "FILTER_MOVING_AVG", "FILTER_REPEAT_AVG",
        "FILTER_MEDIAN", "FILL_ONCE", "FILL_WINDOW", "SETTLE_SMOOTH", "SETTLE_FAST_RANGE",
        "SETTLE_FAST_POLARITY", "SETTLE_DIRECT_IRANGE", "SETTLE_SMOOTH_100NA",
        "SETTLE_FAST_ALL", "LIMIT_AUTO",
    })
    lua_get = frozenset({"sense"})
    lua_set = lua_get
    lua_call = frozenset({"reset", "makebuffer", "abort"})

    OUTPUT_DCAMPS, OUTPUT_DCVOLTS = AMPS, VOLTS
    OUTPUT_OFF, OUTPUT_ON, OUTPUT_HIGH_Z = 0, 1, 2
    OUTPUT_NORMAL, OUTPUT_ZERO = 0, 1
    SENSE_LOCAL, SENSE_REMOTE, SENSE_CALA = 0, 1, 3
    AUTORANGE_OFF, AUTORANGE_ON, AUTORANGE_FOLLOW_LIMIT = 0, 1, 2
    AUTOZERO_OFF, AUTOZERO_ONCE, AUTOZERO_AUTO = 0, 1, 2
    DELAY_OFF, DELAY_AUTO = 0, -1
    DISABLE, ENABLE, ASYNC = 0, 1, 2
    SOURCE_IDLE, SOURCE_HOLD = 0, 1
    FILTER_MOVING_AVG, FILTER_REPEAT_AVG, FILTER_MEDIAN = 0, 1, 2
    FILL_ONCE, FILL_WINDOW = 0, 1
    SETTLE_SMOOTH, SETTLE_FAST_RANGE, SETTLE_FAST_POLARITY = 0, 1, 2
    SETTLE_DIRECT_IRANGE, SETTLE_SMOOTH_100NA, SETTLE_FAST_ALL = 3, 4, 128
    LIMIT_AUTO = -1

    sense = _Setting(0, _choice(0, 1, 3))

    def __init__(self, emu: K2612AEmulator, name: str, first_event_id: int, rng: np.random.Generator) -> None:
        super().__init__(name)
        self.emu = emu
        self.spec = emu.spec
        #: the bench terminal this channel drives
        self.terminal = f"{emu.name}.{name}"
        self._rng = rng
        self._errors: ChannelErrors | None = None
        #: the current range of the last current reading (where autorange starts from)
        self._last_irange = self.spec.i_ranges[0]
        self.source = SmuSource(self)
        self.measure = SmuMeasure(self)
        self.trigger = SmuTrigger(self, first_event_id)
        cap = self.spec.nvbuffer_capacity
        self.nvbuffer1 = ReadingBuffer(f"{name}.nvbuffer1", cap)
        self.nvbuffer2 = ReadingBuffer(f"{name}.nvbuffer2", cap)
        self._applied_level = 0.0
        self._applied_func = VOLTS
        self._status = 0
        self._nbuffers = 0
        #: the running sweep (None when the channel is idle)
        self.sweep: _Sweep | None = None

    def _changed(self, name: str) -> None:
        pass

    # -- state ----------------------------------------------------------------
    def reset(self) -> None:
        """``smua.reset()``: defaults, output off, buffers cleared, trigger model reset."""
        self.abort()
        _reset_settings(self.source)
        _reset_settings(self)
        self.measure.reset()
        self.trigger.reset()
        self.nvbuffer1.reset()
        self.nvbuffer2.reset()
        self._status = 0
        self.apply_source()

    def makebuffer(self, n: Any = None) -> ReadingBuffer:
        size = as_int(n, f"{self.lua_path}.makebuffer")
        check_range(size, 1, 1_000_000, f"{self.lua_path}.makebuffer")
        self._nbuffers += 1
        return ReadingBuffer(f"{self.lua_path}.buffer{self._nbuffers}", size)

    @property
    def bench(self) -> SimBench | None:
        return self.emu.bench

    def apply_source(self, func: int | None = None, level: float | None = None, limit: float | None = None) -> None:
        """Tell the bench what the output does now (``level`` overrides during a sweep),
        and what it does while off (``source.offmode``, see :meth:`off_state`)."""
        src = self.source
        f = src.func if func is None else func
        if level is None:
            level = src.levelv if f == VOLTS else src.leveli
        if limit is None:
            limit = src.limiti if f == VOLTS else src.limitv
        self._applied_level = level
        self._applied_func = f
        if self.bench is None:
            return
        on = src.output == 1
        off_mode, off_limit = self.off_state()
        self.bench.set_source(self.terminal, output=on, mode="v" if f == VOLTS else "i", level=level, limit=limit,
                              off_mode=off_mode, off_limit=off_limit)

    @property
    def physics(self) -> Physics:
        return self.bench.physics if self.bench is not None else DEFAULT_PHYSICS

    @property
    def errors(self) -> ChannelErrors:
        """This channel's fixed errors per range, drawn from the bench seed and the
        instrument and channel names (reproducible; another instrument differs)."""
        if self._errors is None:
            seed = self.bench.seed if self.bench is not None else 0
            self._errors = ChannelErrors(k2600_table(self.spec.model), seed_of(seed, self.emu.name, self.lua_path))
        return self._errors

    def source_range(self, kind: str) -> float:
        """The source range in use for the applied level (``kind`` "v"/"i")."""
        src = self.source
        ranges = self.spec.v_ranges if kind == "v" else self.spec.i_ranges
        if getattr(src, f"autorange{kind}"):
            return max(_pick_range(ranges, self._applied_level) or ranges[-1], getattr(src, f"lowrange{kind}"))
        return getattr(src, f"range{kind}")

    def _measure_irange(self) -> float:
        """The current range a current reading will start on: the source range when
        sourcing current, the fixed measure range, or (autorange) the range of the
        last current reading, at least ``lowrangei``."""
        m = self.measure
        if self._applied_func == AMPS:
            return self.source_range("i")
        if not m.autorangei:
            return m.rangei
        return max(self._last_irange, m.lowrangei)

    def source_delay(self) -> float:
        """``source.delay`` in seconds; DELAY_AUTO is the output settling time of the
        ranges in use (data sheet, :mod:`labpcu.sim.accuracy`): of the current range,
        and sourcing voltage also of the voltage range, whichever is longer (*model*:
        into a capacitive load the current range's loop sets the settling)."""
        d = self.source.delay
        if d != -1.0:
            return d
        table = self.errors.table
        settle = table.at("i", self._measure_irange()).source_settling
        if self._applied_func == VOLTS:
            settle = max(settle, table.at("v", self.source_range("v")).source_settling)
        return settle

    def measure_delay(self, kinds: tuple[str, ...]) -> float:
        """``measure.delay`` in seconds before the first reading of a measurement;
        DELAY_AUTO: the current range's autodelay × ``delayfactor`` when a current
        is measured (i, r, p), none for a voltage reading (2600 manual)."""
        m = self.measure
        if m.delay != -1.0:
            return m.delay
        if not any(k in "irp" for k in kinds):
            return 0.0
        return self.errors.table.at("i", self._measure_irange()).measure_autodelay * m.delayfactor

    def settle_source(self) -> None:
        """A source change outside a sweep: the instrument waits ``source.delay``
        before it takes the next command (the bench clock advances)."""
        if self.source.output != 1 or self.sweep is not None:
            return
        d = self.source_delay()
        if d > 0:
            self.emu.clock.advance(d)

    def off_state(self) -> tuple[str, float]:
        """What the output does while off, as (bench off mode, limit), per the 2600B
        manual's output-off modes:

        * ``OUTPUT_NORMAL`` (the default): ``offfunc`` VOLTS sources 0 V with the
          current limit ``offlimiti`` (1 mA at reset); ``offfunc`` AMPS sources 0 A
          with the voltage limit ``offlimitv`` (40 V);
        * ``OUTPUT_ZERO``: a 0 V voltage source; sourcing voltage it keeps the
          present current limit, sourcing current the limit is the programmed current
          or 10 % of the present current range, whichever is greater;
        * ``OUTPUT_HIGH_Z`` (or ``source.output = OUTPUT_HIGH_Z``): the output relay
          opens.
        """
        src = self.source
        if src.output == 2 or src.offmode == 2:
            return OFF_HIGH_Z, 1e-3
        if src.offmode == 1:
            if src.func == VOLTS:
                return OFF_ZERO_V, src.limiti
            return OFF_ZERO_V, max(abs(src.leveli), 0.1 * src.rangei)
        if src.offfunc == AMPS:
            return OFF_ZERO_I, src.offlimitv
        return OFF_ZERO_V, src.offlimiti

    def in_compliance(self) -> bool:
        if self.bench is None or self.source.output != 1:
            return False  # an output that is off reports no compliance
        return self.bench.in_limit(self.terminal)

    def buffer_available(self) -> bool:
        return self.nvbuffer1.n > 0 or self.nvbuffer2.n > 0

    @property
    def status_condition(self) -> int:
        """``status.measurement.instrument.smua.condition``: bit 0 V limit, bit 1 I limit."""
        return self._status

    # -- measuring --------------------------------------------------------------
    def _conversion_time(self) -> float:
        m = self.measure
        t = m.nplc / self.emu.linefreq
        if m.autozero == 2:
            t *= 3.0
        if m.filter.fields["enable"] and m.filter.fields["type"] == 1:
            t *= m.filter.fields["count"]
        return t

    def _convert_steps(self, out: list[_Conversion]) -> Iterator[tuple[str, Any]]:
        """One A/D conversion at the bench: the integration, read at its middle (an
        integrating converter averages the window; the middle is that average to first
        order, e.g. of a settling transient). The conversion's timestamp is its start.
        Appends to ``out``; yields the waits."""
        self.emu.charge(MEASURE_COST)
        t = self.emu.clock.now()
        dur = self._conversion_time()
        yield ("sleep", dur / 2)
        if self.bench is None:
            out.append(_Conversion(t, 0.0, 0.0, False))
        else:
            r = self.bench.measure(self.terminal, duration=0.0)
            out.append(_Conversion(t, r.i, r.v, r.compliance))
        yield ("sleep", dur - dur / 2)

    def _noise_factor(self) -> float:
        m = self.measure
        f = min(max(1.0 / math.sqrt(m.nplc), 0.2), 30.0)
        if m.filter.fields["enable"]:
            f /= math.sqrt(m.filter.fields["count"])
        return f

    def _instrument(self, kind: str, x: float) -> tuple[float, float]:
        """Reading and range of ``x`` (A or V) as the instrument reports it."""
        src, m = self.source, self.measure
        ranges = self.spec.v_ranges if kind == "v" else self.spec.i_ranges
        sourcing = (self._applied_func == VOLTS) == (kind == "v")
        if sourcing and getattr(src, f"autorange{kind}"):
            # source autorange follows the level actually applied (sweep points too)
            rng = max(_pick_range(ranges, self._applied_level) or ranges[-1], getattr(src, f"lowrange{kind}"))
        elif sourcing:
            rng = getattr(src, f"range{kind}")
        elif getattr(m, f"autorange{kind}"):
            rng = max(_pick_range(ranges, x) or ranges[-1], getattr(m, f"lowrange{kind}"))
        else:
            rng = getattr(m, f"range{kind}")
        if kind == "i":
            self._last_irange = rng
        value = self._as_read(kind, rng, x)
        if abs(value) > rng * OVERRANGE:
            return OVERFLOW_READING, rng
        rel = m.rel.fields
        if rel[f"enable{kind}"]:
            value -= rel[f"level{kind}"]
        return value, rng

    def _as_read(self, kind: str, rng: float, x: float) -> float:
        """The true value ``x`` as this channel reads it on range ``rng``: its fixed
        gain and offset error on that range (``instrument_accuracy``) and the range's
        noise at the present NPLC and filter (``instrument_noise``)."""
        if self.bench is None:
            return x
        physics = self.physics
        if physics.on("instrument_accuracy"):
            x = self.errors.measured(kind, rng, x)
        if physics.on("instrument_noise"):
            x += self.errors.table.at(kind, rng).noise_rms * self._noise_factor() * float(self._rng.standard_normal())
        return x

    def take_readings(self, kinds: tuple[str, ...], buffers: tuple[ReadingBuffer | None, ...]) -> list[float]:
        """``measure.count`` conversions, ``measure.interval`` apart, now (the bench
        clock advances through them); each stores into its buffers. Returns the last
        reading of each kind."""
        out: list[float] = []
        self._run_now(self._reading_steps(kinds, buffers, out))
        return out

    def _run_now(self, steps: Iterator[tuple[str, Any]]) -> None:
        """Drive a step generator synchronously: its sleeps advance the bench clock."""
        for kind, arg in steps:
            if kind == "sleep" and arg > 0:
                self.emu.clock.advance(arg)
            elif kind == "emit":
                self.emu.bus.emit(arg)

    def _reading_steps(self, kinds: tuple[str, ...], buffers: tuple[ReadingBuffer | None, ...],
                       out: list[float]) -> Iterator[tuple[str, Any]]:
        m = self.measure
        t_prev: float | None = None
        delay = self.measure_delay(kinds)
        if delay > 0:  # before the first reading of the count only (2600 manual)
            yield ("sleep", delay)
        for _ in range(m.count):
            if t_prev is not None and m.interval > 0:
                wait = t_prev + m.interval - self.emu.clock.now()
                if wait > 0:
                    yield ("sleep", wait)
            conv: list[_Conversion] = []
            # the reading is computed before the integration time passes
            steps = self._convert_steps(conv)
            for step in steps:
                if conv:
                    self._store(conv[0], kinds, buffers, out)
                    yield step
                    yield from steps
                    break
                yield step
            c = conv[0]
            t_prev = c.t

    def _instant_reading(self, kind: str, buf: ReadingBuffer | None) -> None:
        """The bench at the middle of a conversion, now, stored at once with the
        conversion's start as its timestamp (a timeline drives the clock)."""
        self.emu.charge(MEASURE_COST)
        t = self.emu.clock.now() - self._conversion_time() / 2
        if self.bench is None:
            c = _Conversion(t, 0.0, 0.0, False)
        else:
            r = self.bench.measure(self.terminal, duration=0.0)
            c = _Conversion(t, r.i, r.v, r.compliance)
        self._store(c, (kind,), (buf,), [])

    def _store(self, c: _Conversion, kinds: tuple[str, ...], buffers: tuple[ReadingBuffer | None, ...],
               out: list[float]) -> None:
        m = self.measure
        i, irng = self._instrument("i", c.i)
        v, vrng = self._instrument("v", c.v)
        status = 0
        if c.compliance:
            status = 2 if self._applied_func == VOLTS else 1
        self._status = status
        self.emu.status_model.measured(self, status, max(abs(i), abs(v)) >= OVERFLOW_READING)
        out.clear()
        for kind, buf in zip(kinds, buffers, strict=True):
            if kind == "i":
                value, rng = i, irng
            elif kind == "v":
                value, rng = v, vrng
            elif kind == "r":
                value, rng = (v / i if i != 0 and abs(i) < OVERFLOW_READING and abs(v) < OVERFLOW_READING
                              else OVERFLOW_READING), vrng / irng
            else:
                value, rng = (v * i if abs(i) < OVERFLOW_READING and abs(v) < OVERFLOW_READING
                              else OVERFLOW_READING), vrng * irng
            out.append(value)
            if buf is not None:
                buf_status = (64 if c.compliance else 0) | (128 if m.filter.fields["enable"] else 0)
                if getattr(m, f"autorange{kind}", 0) if kind in "iv" else 0:
                    buf_status |= 4
                if self.sense == 1:
                    buf_status |= 16
                buf.append(value, c.t, self._applied_level, buf_status, rng)

    # -- trigger model -----------------------------------------------------------
    @property
    def sweeping(self) -> bool:
        return self.sweep is not None

    def initiate(self) -> None:
        """``smua.trigger.initiate()``: start the sweep and return at once.

        Arm layer (``arm.count`` passes, each waiting for ``arm.stimulus``), trigger
        layer (``trigger.count`` points): source stage (next sweep value if
        ``source.action``), ``source.delay``, measure stage (``measure.delay``, then
        the readings chosen by ``trigger.measure.*`` into their buffers if
        ``measure.action``), end-pulse stage (``SOURCE_IDLE`` returns to the idle
        level, i.e. ``source.levelv``/``leveli``). After the trigger layer,
        ``endsweep.action`` decides between idle level and hold. Each stage first waits
        for its stimulus event (0 = go on at once). Everything runs in bench time.
        """
        trig = self.trigger
        if self.sweep is not None:
            raise TspError(f"{trig.lua_path}.initiate: a sweep is already running on {self.lua_path}")
        if trig.measure.action and not trig.measure.kinds:
            raise TspError(f"{trig.lua_path}.measure: no measurement configured (use trigger.measure.i(buf) first)")
        if trig.source.action and not trig.source.points:
            raise TspError(f"{trig.lua_path}.source: no sweep list configured (use trigger.source.listv first)")
        trig.clear_detectors()
        for b in dict.fromkeys(b for b in trig.measure.buffers if b is not None):
            b.begin()
        self.sweep = _Sweep(self)
        self.emu.status_model.update()
        self.emu.bus.pump()

    def abort(self) -> None:
        """``smua.abort()`` / ``smua.trigger.abort()``: stop a sweep where it is."""
        sweep = self.sweep
        if sweep is None:
            return
        sweep.done = True
        sweep.gen.close()
        self.apply_source()
        self._sweep_finished(sweep, emit_idle=True)

    def _sweep_finished(self, sweep: _Sweep, emit_idle: bool = False) -> None:
        sweep.done = True
        if self.sweep is sweep:
            self.sweep = None
        if emit_idle:
            self.emu.bus._dispatch(self.trigger.IDLE_EVENT_ID)
        self.emu.sweep_ended()

    def _sweep_steps(self) -> Iterator[tuple[str, Any]]:
        trig = self.trigger
        src = trig.source
        sweep_limit = (src._limiti if src.func == VOLTS else src._limitv)
        step = 0
        arm_passes = trig.arm.count if trig.arm.count > 0 else -1
        yield ("emit", trig.SWEEPING_EVENT_ID)
        while arm_passes != 0:
            arm_passes -= 1
            yield ("wait", "arm")
            if trig.autoclear:
                trig.clear_detectors(("source", "measure", "endpulse"))
            yield ("emit", trig.ARMED_EVENT_ID)
            points = trig.count if trig.count > 0 else -1
            while points != 0:
                points -= 1
                yield ("wait", "source")
                if src.action:
                    level = src.points[step % len(src.points)]
                    step += 1
                    self.apply_source(func=src.func, level=level, limit=sweep_limit)
                delay = self.source_delay()
                if delay > 0:
                    yield ("sleep", delay)
                yield ("emit", trig.SOURCE_COMPLETE_EVENT_ID)
                yield ("wait", "measure")
                if trig.measure.action:
                    yield from self._reading_steps(trig.measure.kinds, trig.measure.buffers, [])
                yield ("emit", trig.MEASURE_COMPLETE_EVENT_ID)
                yield ("wait", "endpulse")
                if trig.endpulse.action == 0:
                    self.apply_source()
                yield ("emit", trig.PULSE_COMPLETE_EVENT_ID)
            yield ("emit", trig.SWEEP_COMPLETE_EVENT_ID)
            if trig.endsweep.action == 0:
                self.apply_source()
        # the channel is idle before its idle event goes out
        if self.sweep is not None:
            self.sweep.done = True
            self.sweep = None
        self.emu.bus._dispatch(trig.IDLE_EVENT_ID)


# --------------------------------------------------------------- status model
class StatusRegister(TspObject):
    """One register set of the status model (``status.operation.sweeping`` …):
    ``condition`` (live), ``event`` (latched by transitions through ``ptr``/``ntr``,
    cleared when read), ``enable``; its summary (``event & enable`` non-zero) sets a bit
    of its parent's condition. Bit names are static members (``SMUA``, ``SWE`` …)."""

    lua_get = frozenset({"condition", "event", "enable", "ntr", "ptr"})

    def __init__(self, model: StatusModel, path: str, bits: dict[str, int], *,
                 source: Callable[[], int] | None = None, writable_condition: bool = False,
                 ptr: int | None = None) -> None:
        super().__init__(path)
        object.__setattr__(self, "_model", model)
        self.bits = dict(bits)
        self.children: dict[str, tuple[int, StatusRegister]] = {}
        self.source = source
        self.writable_condition = writable_condition
        self.used = 0
        for v in self.bits.values():
            self.used |= v
        self._ptr_default = self.used if ptr is None else ptr
        self.user_condition = 0
        self.clear_all()

    #: what :meth:`refresh` reads besides the sources and the children: a change to any
    #: of them tells the model that its registers may have moved (see StatusModel.update)
    _TRACKED = frozenset({"cond", "ev", "enable", "ntr", "ptr", "user_condition", "source"})

    def __setattr__(self, name: str, value: Any) -> None:
        object.__setattr__(self, name, value)
        if name in self._TRACKED:
            self._model.version += 1

    def child(self, name: str, bit: int, reg: StatusRegister) -> StatusRegister:
        self.children[name] = (bit, reg)
        self._model.version += 1
        self.used |= bit
        self._ptr_default |= bit
        self.ptr = self._ptr_default
        return reg

    def clear_all(self) -> None:
        self.cond = 0
        self.ev = 0
        self.enable = 0
        self.ntr = 0
        self.ptr = self._ptr_default

    def lua_statics(self) -> dict[Any, Any]:
        return {**self.bits, **{n: reg for n, (_, reg) in self.children.items()}}

    def lua_getattr(self, key: Any) -> Any:
        self._model.update()
        if key == "condition":
            return self.cond
        if key == "event":
            value, self.ev = self.ev, 0
            self._model.update()
            return value
        if key in ("enable", "ntr", "ptr"):
            return getattr(self, key)
        return None

    def lua_setattr(self, key: Any, value: Any) -> None:
        if key in ("enable", "ntr", "ptr") or (key == "condition" and self.writable_condition):
            x = as_int(value, f"{self.lua_path}.{key}")
            if not 0 <= x <= 65535:
                raise TspParameterError(f"Parameter data out of range; {self.lua_path}.{key} {x}")
            if key == "condition":
                self.user_condition = x
            else:
                setattr(self, key, x)
            self._model.update()
            return
        super().lua_setattr(key, value)

    def refresh(self) -> bool:
        """Recompute the condition (children first), latch transitions; the summary."""
        new = self.user_condition
        if self.source is not None:
            new |= self.source()
        for bit, reg in self.children.values():
            if reg.refresh():
                new |= bit
        rising, falling = new & ~self.cond, self.cond & ~new
        self.ev |= (rising & self.ptr) | (falling & self.ntr)
        self.cond = new
        return bool(self.ev & self.enable)

    def walk(self) -> Iterator[StatusRegister]:
        yield self
        for _, reg in self.children.values():
            yield from reg.walk()


#: status byte bits (``status.condition``, ``*STB?``)
MSB, SSB, EAV, QSB, MAV, ESB, MSS, OSB = 1, 2, 4, 8, 16, 32, 64, 128
#: standard event register bits (``*ESR?``)
OPC_BIT, QYE, DDE, EXE, CME, URQ, PON = 1, 4, 8, 16, 32, 64, 128


class StatusModel(TspObject):
    """``status``: the 2600 status model (status byte, service request enable, the
    standard event, operation, measurement and questionable register sets)."""

    lua_get = frozenset({"condition", "request_enable", "request_event", "node_enable", "node_event"})
    lua_set = frozenset({"request_enable", "node_enable"})
    lua_call = frozenset({"reset"})

    def __init__(self, emu: K2612AEmulator) -> None:
        super().__init__("status")
        self._emu = emu
        #: bumped by every change to a register (condition, event, enable, transition
        #: filters, user condition, tree); with the sources it keys :meth:`update`
        self.version = 0
        #: what the last refresh of the register sets saw, and their summary bits
        self._seen: tuple[Any, ...] | None = None
        self._summary = 0
        chans = list(emu.channels)
        ch_bits = {n.upper(): 2 << k for k, n in enumerate(chans)}
        R = StatusRegister

        self.standard = R(self, "status.standard", {"OPERATION_COMPLETE": OPC_BIT, "OPC": OPC_BIT,
                                                    "QUERY_ERROR": QYE, "QYE": QYE,
                                                    "DEVICE_DEPENDENT_ERROR": DDE, "DDE": DDE,
                                                    "EXECUTION_ERROR": EXE, "EXE": EXE,
                                                    "COMMAND_ERROR": CME, "CME": CME,
                                                    "USER_REQUEST": URQ, "URQ": URQ,
                                                    "POWER_ON": PON, "PON": PON}, ptr=0)
        op_bits = {"CALIBRATING": 1, "CAL": 1, "SWEEPING": 8, "SWE": 8, "MEASURING": 16, "MEAS": 16,
                   "TRIGGER_OVERRUN": 1024, "TRGOVR": 1024, "REMOTE_SUMMARY": 2048, "REM": 2048,
                   "USER": 4096, "INSTRUMENT_SUMMARY": 8192, "INST": 8192,
                   "PROGRAM_RUNNING": 16384, "PROG": 16384}
        self.operation = R(self, "status.operation", op_bits)
        sweeping = lambda: sum(2 << k for k, ch in enumerate(emu.channels.values()) if ch.sweeping)  # noqa: E731
        self.operation.child("calibrating", 1, R(self, "status.operation.calibrating", ch_bits))
        self.operation.child("sweeping", 8, R(self, "status.operation.sweeping", ch_bits, source=sweeping))
        self.operation.child("measuring", 16, R(self, "status.operation.measuring", ch_bits))
        self.operation.child("trigger_overrun", 1024, R(self, "status.operation.trigger_overrun",
                                                        {**ch_bits, "TRGBLND": 1024, "TRGTMR": 2048}))
        self.operation.child("remote", 2048, R(self, "status.operation.remote", {"CAV": 2, "LSE": 4}))
        self.operation.child("user", 4096, R(self, "status.operation.user",
                                             {f"BIT{k}": 1 << k for k in range(15)}, writable_condition=True))
        inst = R(self, "status.operation.instrument", {**ch_bits, "TRIGGER_BLENDER": 1024, "TRGBLND": 1024,
                                                       "TRIGGER_TIMER": 2048, "TRGTMR": 2048, "DIGITAL_IO": 4096,
                                                       "DIGIO": 4096, "TSPLINK": 8192, "LAN": 16384})
        self.operation.child("instrument", 8192, inst)
        for k, (n, ch) in enumerate(emu.channels.items()):
            inst.child(n, 2 << k, R(self, f"status.operation.instrument.{n}",
                                    {"CALIBRATING": 1, "CAL": 1, "SWEEPING": 8, "SWE": 8, "MEASURING": 16,
                                     "MEAS": 16, "TRIGGER_OVERRUN": 1024, "TRGOVR": 1024},
                                    source=lambda ch=ch: 8 if ch.sweeping else 0))

        meas_bits = {"VOLTAGE_LIMIT": 1, "VLMT": 1, "CURRENT_LIMIT": 2, "ILMT": 2, "READING_OVERFLOW": 128,
                     "ROF": 128, "BUFFER_AVAILABLE": 256, "BAV": 256, "INSTRUMENT_SUMMARY": 8192, "INST": 8192}
        self.measurement = R(self, "status.measurement", meas_bits)
        self._overflow = dict.fromkeys(chans, False)
        chan_list = list(emu.channels.values())

        def per_channel(test: Callable[[SmuChannel], bool]) -> Callable[[], int]:
            return lambda: sum(2 << k for k, ch in enumerate(chan_list) if test(ch))

        self.measurement.child("voltage_limit", 1, R(self, "status.measurement.voltage_limit", ch_bits,
                                                     source=per_channel(lambda ch: bool(ch._status & 1))))
        self.measurement.child("current_limit", 2, R(self, "status.measurement.current_limit", ch_bits,
                                                     source=per_channel(lambda ch: bool(ch._status & 2))))
        self.measurement.child("reading_overflow", 128, R(self, "status.measurement.reading_overflow", ch_bits,
                                                          source=per_channel(lambda ch: self._overflow[ch.lua_path])))
        self.measurement.child("buffer_available", 256, R(self, "status.measurement.buffer_available", ch_bits,
                                                          source=per_channel(lambda ch: ch.buffer_available())))
        minst = R(self, "status.measurement.instrument", ch_bits)
        self.measurement.child("instrument", 8192, minst)
        for k, ch in enumerate(chan_list):
            minst.child(ch.lua_path, 2 << k, R(
                self, f"status.measurement.instrument.{ch.lua_path}",
                {"VOLTAGE_LIMIT": 1, "VLMT": 1, "CURRENT_LIMIT": 2, "ILMT": 2, "READING_OVERFLOW": 128,
                 "ROF": 128, "BUFFER_AVAILABLE": 256, "BAV": 256},
                source=lambda ch=ch: ch.status_condition | (128 if self._overflow[ch.lua_path] else 0)
                | (256 if ch.buffer_available() else 0)))
        self.questionable = R(self, "status.questionable", {"CALIBRATION": 256, "CAL": 256,
                                                            "UNSTABLE_OUTPUT": 512, "UO": 512,
                                                            "OVER_TEMPERATURE": 4096, "OTEMP": 4096,
                                                            "INSTRUMENT_SUMMARY": 8192, "INST": 8192})
        self.system = R(self, "status.system", {f"NODE{k}": 1 << k for k in range(1, 15)})
        self.registers = [self.standard, self.operation, self.measurement, self.questionable, self.system]
        self.request_enable = 0
        self.node_enable = 0
        self.stb = 0
        self.srq = False
        #: service requests asserted so far (the SRQ line has no wire in the simulator)
        self.srq_count = 0
        self.on_srq: Callable[[int], None] | None = None

    CONSTANTS = {"MEASUREMENT_SUMMARY_BIT": MSB, "MSB": MSB, "SYSTEM_SUMMARY_BIT": SSB, "SSB": SSB,
                 "ERROR_AVAILABLE": EAV, "EAV": EAV, "QUESTIONABLE_SUMMARY_BIT": QSB, "QSB": QSB,
                 "MESSAGE_AVAILABLE": MAV, "MAV": MAV, "EVENT_SUMMARY_BIT": ESB, "ESB": ESB,
                 "MASTER_SUMMARY_STATUS": MSS, "MSS": MSS, "OPERATION_SUMMARY_BIT": OSB, "OSB": OSB}

    def lua_statics(self) -> dict[Any, Any]:
        return {**self.CONSTANTS, "standard": self.standard, "operation": self.operation,
                "measurement": self.measurement, "questionable": self.questionable,
                "system": self.system, "reset": self.reset}

    def lua_setattr(self, key: Any, value: Any) -> None:
        if key in ("request_enable", "node_enable"):
            x = as_int(value, f"status.{key}")
            if not 0 <= x <= 255:
                raise TspParameterError(f"Parameter data out of range; status.{key} {x}")
            setattr(self, key, x & ~MSS)
            self.update()
            return
        super().lua_setattr(key, value)

    @property
    def condition(self) -> int:
        self.update()
        return self.stb

    @property
    def request_event(self) -> int:
        self.update()
        return self.stb & self.request_enable

    @property
    def node_event(self) -> int:
        self.update()
        return self.stb & self.node_enable

    def reset(self) -> None:
        """``status.reset()``: every register set to its defaults, events cleared."""
        for top in self.registers:
            for reg in top.walk():
                reg.clear_all()
        self.request_enable = 0
        self.node_enable = 0
        self.update()

    def clear_events(self) -> None:
        """``*CLS``: clear every event register (enables stay)."""
        for top in self.registers:
            for reg in top.walk():
                reg.ev = 0
        self.update()

    def measured(self, ch: SmuChannel, status: int, overflow: bool) -> None:
        self._overflow[ch.lua_path] = overflow
        self.update()

    def _inputs(self) -> tuple[Any, ...]:
        """Everything the register sets are computed from besides the registers
        themselves (whose changes count in :attr:`version`): per channel what the
        sources read (sweeping, limit status, overflow, buffer readings)."""
        overflow = self._overflow
        key: list[Any] = [self.version]
        for name, ch in self._emu.channels.items():
            key += (ch.sweep is not None, ch._status, overflow[name], ch.buffer_available())
        return tuple(key)

    def _recompute(self) -> int:
        """Refresh every register set (latching transitions); their summary bits."""
        summary = 0
        if self.measurement.refresh():
            summary |= MSB
        if self.system.refresh():
            summary |= SSB
        if self.questionable.refresh():
            summary |= QSB
        if self.standard.refresh():
            summary |= ESB
        if self.operation.refresh():
            summary |= OSB
        return summary

    def update(self, mav: bool | None = None) -> int:
        """Recompute every register and the status byte; assert SRQ on a new request.

        It runs after every message and at every internal event, and most of the time
        nothing the register sets read has changed. Then they are not refreshed: a
        refresh from the same inputs moves nothing (every condition already equals
        what its source and children give, so there is no transition to latch, and
        every summary stays). Their inputs are the sources' values (:meth:`_inputs`)
        and every register attribute (counted in :attr:`version` by
        :class:`StatusRegister`); the key is taken after the refresh, so its own writes
        do not count as a change. The error and message bits, the request and the SRQ
        are computed every time, as before.
        """
        emu = self._emu
        if self._inputs() != self._seen:
            self._summary = self._recompute()
            self._seen = self._inputs()
        stb = self._summary
        if len(emu.errors):
            stb |= EAV
        if mav if mav is not None else emu.pending_output() > 0:
            stb |= MAV
        request = bool(stb & self.request_enable)
        if request:
            stb |= MSS
        if request and not self.srq:
            self.srq_count += 1
            if self.on_srq is not None:
                self.on_srq(stb)
        self.srq = request
        self.stb = stb
        return stb


class _PulseAbort(Exception):
    """A KIPulse train gave up (no sync_in trigger before its timeout)."""


# ------------------------------------------------------------------- emulator
class K2612AEmulator(StdlibEmulator):
    """Keithley 2612A (or another 2600A/B model from :data:`MODELS`)."""

    model = "2612A"
    description = "Keithley Instruments SMU 2612A"

    def __init__(
        self,
        bench: SimBench | None = None,
        name: str | None = None,
        *,
        model: str = "2612A",
        **kwargs: Any,
    ) -> None:
        key = model.upper()
        if key not in MODELS:
            raise ValueError(f"unknown 2600 model {model!r}; known: {', '.join(MODELS)}")
        self.spec = MODELS[key]
        self.model = self.spec.model
        self.firmware = self.spec.firmware
        self.description = f"Keithley Instruments SMU {self.spec.model}"
        super().__init__(bench, name or "k2612a", **kwargs)
        rng = bench.rng if bench is not None else np.random.default_rng(0x2612)
        self._event_ids = iter(range(1, 10_000))
        self.channels: dict[str, SmuChannel] = {}
        for ch_name in self.spec.channels:
            first = next(self._event_ids)
            for _ in range(6):
                next(self._event_ids)
            self.channels[ch_name] = SmuChannel(self, ch_name, first, rng)
        ids = self._event_ids
        self.timers = [TriggerTimer(self, k, next(ids)) for k in range(1, 9)]
        self.trigger_event_id = next(ids)  # trigger.EVENT_ID: *TRG, GET
        self.blenders = [TriggerBlender(self, k, next(ids)) for k in range(1, 7)]
        self.generators = [TriggerGenerator(self, k, next(ids)) for k in range(1, 3)]
        self.bus = _TriggerBus(self)
        self.trigger = TspTable(
            "trigger",
            constants={"timer": _ObjectArray("trigger.timer", self.timers),
                       "blender": _ObjectArray("trigger.blender", self.blenders),
                       "generator": _ObjectArray("trigger.generator", self.generators),
                       "EVENT_ID": self.trigger_event_id},
            functions={"wait": self._trigger_wait, "clear": self.bus.command_trigger.clear},
        )
        self.status_model = StatusModel(self)
        self.status = self.status_model
        self.localnode.constants["status"] = self.status
        self.node = _ObjectArray("node", [self.localnode])
        self._opc_replies = 0  # *OPC? queries answered when the running sweeps end
        self._opc_flag = False  # *OPC / opc(): set the OPC bit when they end
        self.pulse_configs: dict[int, dict[str, Any]] = {}
        self.display = self._make_display()
        self.beeper = TspTable("beeper", fields={"enable": 1}, functions={"beep": lambda d=None, f=None: None},
                               constants={"ON": 1, "OFF": 0})
        self.reset()
        self.status_model.standard.ev |= PON  # the power-on bit, until *ESR? or *CLS
        self.clock.add_agent(self.bus)

    def __getattr__(self, name: str) -> Any:
        # emu.smua / emu.smub for Python-side inspection in tests
        channels = self.__dict__.get("channels")
        if channels is not None and name in channels:
            return channels[name]
        raise AttributeError(name)

    # -- sweeps, waiting, status --------------------------------------------------
    def sweeping(self) -> bool:
        return any(ch.sweeping for ch in self.channels.values())

    def sweep_ended(self) -> None:
        """A channel went idle: complete ``*OPC``/``*OPC?`` when none sweeps any more."""
        if not self.sweeping():
            if self._opc_flag:
                self._opc_flag = False
                self.status_model.standard.ev |= OPC_BIT
            while self._opc_replies:
                self._opc_replies -= 1
                self.reply("1")
        self.status_model.update()

    #: a wait gives up after this many clock stops (a sweep that never ends would
    #: otherwise hold the emulator forever; the instrument would hang instead)
    MAX_WAIT_STEPS = 100_000

    def wait_sweeps(self) -> bool:
        """Advance the bench clock until no channel sweeps. False if a sweep is left
        waiting for an event nothing scheduled will produce (e.g. a later ``*TRG``)."""
        clock = self.clock
        for _ in range(self.MAX_WAIT_STEPS):
            if not self.sweeping():
                return True
            due = self.bus.next_due()
            if due is None:
                return False
            clock.advance(max(due - clock.now(), 0.0))
        return not self.sweeping()

    def _waitcomplete(self, group: Any = None) -> None:
        """``waitcomplete()``: returns when every sweep has ended (bench time). A sweep
        still waiting for an event from a later command is left running."""
        self.wait_sweeps()

    def _opc(self) -> None:
        """``opc()`` / ``*OPC``: the OPC bit is set once every sweep has ended."""
        if self.sweeping():
            self._opc_flag = True
        else:
            self.status_model.standard.ev |= OPC_BIT
        self.status_model.update()

    def _trigger_wait(self, timeout: Any = None) -> bool:
        """``trigger.wait(timeout)``: a command-interface trigger (``*TRG``) seen?"""
        return self.bus.wait_for(self.bus.command_trigger, as_number(timeout, "trigger.wait"))

    def push_error(self, code: int, message: str, severity: int = 30) -> None:
        super().push_error(code, message, severity)
        c = int(code)
        bit = CME if -199 <= c <= -100 else EXE if -299 <= c <= -200 else QYE if -499 <= c <= -400 else DDE
        self.status_model.standard.ev |= bit
        self.status_model.update()

    def handle(self, message: str) -> None:
        super().handle(message)
        self.status_model.update()

    def _common_command(self, text: str) -> None:
        head, _, arg = text.partition(" ")
        cmd = head.upper()
        sm = self.status_model
        if cmd == "*OPC?":
            if self.wait_sweeps():
                self.reply("1")
            else:
                self._opc_replies += 1  # answered when the sweep ends (after a *TRG …)
        elif cmd == "*OPC":
            self._opc()
        elif cmd == "*WAI":
            self.wait_sweeps()
        elif cmd == "*TRG":
            self.bus.emit(self.trigger_event_id)
        elif cmd == "*CLS":
            self.errors.clear()
            sm.clear_events()
        elif cmd == "*RST":
            self.reset()
        elif cmd == "*STB?":
            self.reply(str(sm.update(mav=self.pending_output() > 0)))
        elif cmd == "*ESR?":
            sm.update()
            value, sm.standard.ev = sm.standard.ev, 0
            self.reply(str(value))
        elif cmd in ("*ESE", "*SRE"):
            try:
                x = int(float(arg.strip()))
            except ValueError:
                self.push_error(-104, f"Data type error; {text}")
                return
            if not 0 <= x <= 255:
                self.push_error(-222, f"Parameter data out of range; {text}")
                return
            if cmd == "*ESE":
                sm.standard.enable = x
            else:
                sm.request_enable = x & ~MSS
            sm.update()
        elif cmd == "*ESE?":
            self.reply(str(sm.standard.enable))
        elif cmd == "*SRE?":
            self.reply(str(sm.request_enable))
        else:
            super()._common_command(text)

    def _make_display(self) -> TspTable:
        def channel_display(n: str) -> TspTable:
            return TspTable(f"display.{n}", constants={"measure": TspTable(f"display.{n}.measure", fields={"func": 0})})

        return TspTable(
            "display",
            constants={"SMUA": 0, "SMUB": 1, "SMUA_SMUB": 2, "USER": 3, "MEASURE_DCAMPS": 0,
                       "MEASURE_DCVOLTS": 1, "MEASURE_OHMS": 2, "MEASURE_WATTS": 3,
                       **{n: channel_display(n) for n in self.channels}},
            functions={"clear": lambda: None, "settext": lambda text=None: None,
                       "setcursor": lambda row=None, col=None, style=None: None},
            fields={"screen": 0},
        )

    def lua_globals(self) -> dict[str, Any]:
        return {
            **super().lua_globals(),
            **self.channels,
            "trigger": self.trigger,
            "status": self.status,
            "node": self.node,
            "waitcomplete": self._waitcomplete,
            "opc": self._opc,
            "_k2600_metatable": self._metatable_of,
            "display": self.display,
            "beeper": self.beeper,
            "SweepVLinMeasureI": self._sweep_factory(VOLTS, "lin"),
            "SweepVLogMeasureI": self._sweep_factory(VOLTS, "log"),
            "SweepVListMeasureI": self._sweep_factory(VOLTS, "list"),
            "SweepILinMeasureV": self._sweep_factory(AMPS, "lin"),
            "SweepILogMeasureV": self._sweep_factory(AMPS, "log"),
            "SweepIListMeasureV": self._sweep_factory(AMPS, "list"),
            "PulseVMeasureI": self._pulse_factory(VOLTS),
            "PulseIMeasureV": self._pulse_factory(AMPS),
            "ConfigPulseVMeasureI": self._config_pulse(VOLTS, "fixed"),
            "ConfigPulseIMeasureV": self._config_pulse(AMPS, "fixed"),
            "ConfigPulseVMeasureISweepLin": self._config_pulse(VOLTS, "lin"),
            "ConfigPulseIMeasureVSweepLin": self._config_pulse(AMPS, "lin"),
            "ConfigPulseVMeasureISweepLog": self._config_pulse(VOLTS, "log"),
            "ConfigPulseIMeasureVSweepLog": self._config_pulse(AMPS, "log"),
            "InitiatePulseTest": self._initiate_pulse_test,
            "InitiatePulseTestDual": self._initiate_pulse_test_dual,
            "QueryPulseConfig": self._query_pulse_config,
        }

    lua_prelude: ClassVar[str] = """
do
  local describe, base = _k2600_metatable, getmetatable
  _k2600_metatable = nil
  getmetatable = function(o)
    local mt = describe(o)
    if mt ~= nil then return mt end
    return base(o)
  end
end
"""

    def _metatable_of(self, obj: Any) -> Any:
        """What ``getmetatable(x)`` gives for an instrument object: a table of its
        members (functions, constants, sub-objects and each attribute's value), with
        ``__index``/``__newindex`` reading and writing the object, as on the instrument
        where TSP objects are tables whose metatables hold their members. None for
        anything else (Lua's own answer then)."""
        if not isinstance(obj, TspObject):
            return None
        members: dict[Any, Any] = dict(obj.lua_statics())
        names = set(getattr(obj, "lua_get", ())) | set(getattr(obj, "fields", {})) | set(getattr(obj, "readonly", {}))
        for name in sorted(names - set(members)):
            try:
                members[name] = obj.lua_getattr(name)
            except Exception:  # noqa: BLE001 - an unreadable attribute is listed as false
                members[name] = False
        rt = self.runtime
        table = rt.lua.table_from({k: self._to_lua(v) for k, v in members.items() if v is not None})
        proxy = self._proxy(obj)
        table["__index"] = rt.lua.eval("function(p) return function(_, k) return p[k] end end")(proxy)
        table["__newindex"] = rt.lua.eval("function(p) return function(_, k, v) p[k] = v end end")(proxy)
        table["__name"] = obj.lua_path
        return table

    def reset(self) -> None:
        """``reset()``/``*RST``: every channel to defaults with its output off, the
        trigger objects to their defaults. The status model keeps its enables and
        transition filters (IEEE-488.2 ``*RST`` leaves them; ``status.reset()`` and
        ``*CLS`` are the ways to clear it)."""
        super().reset()
        for ch in self.channels.values():
            ch.reset()
        for timer in self.timers:
            timer.reset()
        for blender in self.blenders:
            blender.reset()
        self.bus.reset()
        if hasattr(self, "status_model"):
            self.status_model.update()
        self.beeper.reset_fields()
        self.display.reset_fields()

    # -- KISweep / KIPulse factory functions ---------------------------------------
    def _channel_arg(self, smu: Any, fname: str) -> SmuChannel:
        if not isinstance(smu, SmuChannel):
            raise TspError(f"{fname}: SMU expected (smua or smub)")
        return smu

    def _sweep_factory(self, func: int, kind: str) -> Callable[..., None]:
        src, meas = ("V", "I") if func == VOLTS else ("I", "V")
        fname = f"Sweep{src}{kind.capitalize()}Measure{meas}"

        def sweep(smu: Any = None, a: Any = None, b: Any = None, c: Any = None, d: Any = None) -> None:
            """Results (readings, source values, timestamps) land in ``smu.nvbuffer1``;
            the output is turned on for the sweep and off afterwards."""
            ch = self._channel_arg(smu, fname)
            if kind == "list":
                values = lua_sequence(a, f"{fname} list")
                stime, points = as_number(b, f"{fname} stime"), as_int(c, f"{fname} points")
                if not 1 <= points <= len(values):
                    raise TspError(f"{fname}: points must be 1..{len(values)}")
                values = values[:points]
            else:
                start, stop = as_number(a, f"{fname} start"), as_number(b, f"{fname} stop")
                stime, points = as_number(c, f"{fname} stime"), _points(d, f"{fname} points", 2, TspError)
                if kind == "lin":
                    values = [start + (stop - start) * k / (points - 1) for k in range(points)]
                else:
                    if start <= 0 or stop <= 0:
                        raise TspError(f"{fname}: start and stop must be > 0")
                    values = [start * (stop / start) ** (k / (points - 1)) for k in range(points)]
            check_range(stime, 0.0, 100_000.0, f"{fname} stime")
            self._run_points(ch, func, values, settle=stime, back_to=None, what=fname)

        sweep.__name__ = fname
        return sweep

    def _pulse_factory(self, func: int) -> Callable[..., None]:
        fname = "PulseVMeasureI" if func == VOLTS else "PulseIMeasureV"

        def pulse(smu: Any = None, bias: Any = None, level: Any = None, ton: Any = None,
                  toff: Any = None, points: Any = None) -> None:
            """``points`` pulses from ``bias`` to ``level``, ``ton`` long (reading at the
            end of each pulse), ``toff`` at bias between; results in ``smu.nvbuffer1``.
            The output stays on at the bias level afterwards."""
            ch = self._channel_arg(smu, fname)
            b, lv = as_number(bias, f"{fname} bias"), as_number(level, f"{fname} level")
            t_on, t_off = as_number(ton, f"{fname} ton"), as_number(toff, f"{fname} toff")
            n = _points(points, f"{fname} points", 1, TspError)
            check_range(t_on, 0.0, 100_000.0, f"{fname} ton")
            check_range(t_off, 0.0, 100_000.0, f"{fname} toff")
            self._run_points(ch, func, [lv] * n, settle=t_on, back_to=(b, t_off), measure_at_end=True, what=fname)

        pulse.__name__ = fname
        return pulse

    # -- KIPulse: configured pulse trains ------------------------------------------
    def _config_pulse(self, func: int, kind: str) -> Callable[..., tuple[bool, str]]:
        src, meas = ("V", "I") if func == VOLTS else ("I", "V")
        fname = f"ConfigPulse{src}Measure{meas}" + ("" if kind == "fixed" else f"Sweep{kind.capitalize()}")

        def config(smu: Any = None, bias: Any = None, *args: Any) -> tuple[bool, str]:
            """``f, msg = ConfigPulseVMeasureI(smu, bias, level, limit, ton, toff, points,
            buffer, tag[, sync_in, sync_out, sync_in_timeout, sync_in_abort])`` (the
            ``…Sweep{Lin,Log}`` forms take ``start, stop`` for ``level``). Stores the
            train under ``tag``; nothing is sourced until ``InitiatePulseTest(tag)``.
            Errors come back as ``false, message``, as from the factory script."""
            try:
                cfg = self._pulse_config(func, kind, fname, smu, bias, args)
            except (TspError, TspParameterError) as exc:
                return False, f"{fname}: {getattr(exc, 'message', None) or exc}"
            self.pulse_configs[cfg["tag"]] = cfg
            return True, "OK"

        config.__name__ = fname
        return config

    def _pulse_config(self, func: int, kind: str, fname: str, smu: Any, bias: Any,
                      args: tuple[Any, ...]) -> dict[str, Any]:
        ch = self._channel_arg(smu, fname)
        n_levels = 1 if kind == "fixed" else 2
        need = n_levels + 6
        if len(args) < need or any(a is None for k, a in enumerate(args[:need]) if k != n_levels + 4):
            raise TspError("missing parameters")
        levels = [as_number(a, f"{fname} level") for a in args[:n_levels]]
        limit, ton, toff = (as_number(a, f"{fname} {w}") for w, a in zip(("limit", "ton", "toff"),
                                                                           args[n_levels:n_levels + 3]))
        points = _points(args[n_levels + 3], f"{fname} points", 1, TspError)
        buf, tag = args[n_levels + 4], as_int(args[n_levels + 5], f"{fname} tag")
        extra = list(args[need:]) + [None] * 4
        sync_in, sync_out, sync_timeout, sync_abort = extra[:4]
        b = as_number(bias, f"{fname} bias")
        top = (self.spec.v_max if func == VOLTS else self.spec.i_max) * OVERRANGE
        for x in [b, *levels]:
            check_range(x, -top, top, f"{fname} level")
        lim_ranges = self.spec.i_ranges if func == VOLTS else self.spec.v_ranges
        check_range(limit, 0.1 * lim_ranges[0], lim_ranges[-1] * OVERRANGE, f"{fname} limit")
        check_range(ton, 20e-6, 100_000.0, f"{fname} ton")
        check_range(toff, 0.0, 100_000.0, f"{fname} toff")
        if buf is not None and not isinstance(buf, ReadingBuffer):
            raise TspError("buffer must be a reading buffer or nil")
        if tag < 1:
            raise TspParameterError(f"tag {tag} must be a positive integer")
        for name, line in (("sync_in", sync_in), ("sync_out", sync_out)):
            if line is not None:
                check_range(float(as_int(line, f"{fname} {name}")), 1, 14, f"{fname} {name}")
        t_conv = ch._conversion_time()
        if buf is not None and t_conv > ton:
            raise TspError(f"ton {ton:g} s is shorter than one measurement ({t_conv:g} s at "
                           f"{ch.measure.nplc:g} PLC)")
        if kind == "fixed":
            values = levels * points
        elif kind == "lin":
            a, z = levels
            values = [a] if points == 1 else [a + (z - a) * k / (points - 1) for k in range(points)]
        else:
            a, z = levels
            if a == 0 or z == 0 or (a > 0) != (z > 0):
                raise TspParameterError(f"log sweep from {a:g} to {z:g} must not cross or touch 0")
            values = [a] if points == 1 else [a * (z / a) ** (k / (points - 1)) for k in range(points)]
        return {"tag": tag, "smu": ch, "func": func, "kind": kind, "name": fname, "bias": b, "levels": levels,
                "values": values, "limit": limit, "ton": ton, "toff": toff, "points": points, "buffer": buf,
                "sync_in": sync_in, "sync_out": sync_out,
                "sync_in_timeout": 10.0 if sync_timeout is None else as_number(sync_timeout, f"{fname} timeout"),
                "sync_in_abort": True if sync_abort is None else bool(sync_abort)}

    def _pulse_actions(self, cfg: dict[str, Any]) -> list[tuple[float, Callable[[], None]]]:
        """The timed actions of one configured train, from its start: the output turns
        on at the bias; each pulse is ``ton`` at its level with the reading ending with
        the pulse, then ``toff`` at the bias. With ``sync_in`` each pulse first waits
        for a digital trigger the simulated bench never sends: after
        ``sync_in_timeout`` the train aborts (``sync_in_abort``) or goes on."""
        ch: SmuChannel = cfg["smu"]
        func, buf = cfg["func"], cfg["buffer"]
        kind = "i" if func == VOLTS else "v"
        src = ch.source

        def start() -> None:
            src.func = func
            if func == VOLTS:
                src.limiti = cfg["limit"]
                src.levelv = cfg["bias"]
            else:
                src.limitv = cfg["limit"]
                src.leveli = cfg["bias"]
            if buf is not None:
                buf.begin()
            src.output = 1

        def give_up() -> None:
            raise _PulseAbort("timer timeout: no sync_in trigger")

        acts: list[tuple[float, Callable[[], None]]] = [(0.0, start)]
        t = 0.0
        t_conv = ch._conversion_time()
        for level in cfg["values"]:
            if cfg["sync_in"] is not None:
                t += cfg["sync_in_timeout"]
                if cfg["sync_in_abort"]:
                    acts.append((t, give_up))
                    return acts
            acts.append((t, lambda lv=level: ch.apply_source(level=lv)))
            if buf is not None:
                # read at the middle of the conversion that ends with the pulse
                acts.append((t + cfg["ton"] - t_conv / 2, lambda: ch._instant_reading(kind, buf)))
            acts.append((t + cfg["ton"], lambda: ch.apply_source()))
            t += cfg["ton"] + cfg["toff"]
        acts.append((t, lambda: None))  # the last toff at the bias belongs to the train
        return acts

    def _run_pulse_tests(self, tags: list[Any], fname: str) -> tuple[bool, str]:
        cfgs = []
        for tag in tags:
            cfg = self.pulse_configs.get(as_int(tag, f"{fname} tag"))
            if cfg is None:
                return False, f"{fname}: no pulse train configured with tag {tag!r}"
            cfgs.append(cfg)
        if len({id(c["smu"]) for c in cfgs}) != len(cfgs):
            return False, f"{fname}: the pulse trains must use different SMUs"
        t0 = self.clock.now()
        timeline = sorted(((t, k, i, fn) for k, c in enumerate(cfgs) for i, (t, fn) in
                           enumerate(self._pulse_actions(c))), key=lambda x: (x[0], x[1], x[2]))
        try:
            for t, _, _, fn in timeline:
                wait = t0 + t - self.clock.now()
                if wait > 0:
                    self.clock.advance(wait)
                fn()
        except _PulseAbort as exc:
            for c in cfgs:
                c["smu"].apply_source()
            return False, f"{fname}: {exc}"
        except TspParameterError as exc:
            for c in cfgs:
                c["smu"].apply_source()
            return False, f"{fname}: {exc.message}"
        return True, "OK"

    def _initiate_pulse_test(self, tag: Any = None) -> tuple[bool, str]:
        """``f, msg = InitiatePulseTest(tag)``: run the configured train (bench time);
        the output stays on at the bias afterwards."""
        return self._run_pulse_tests([tag], "InitiatePulseTest")

    def _initiate_pulse_test_dual(self, tag1: Any = None, tag2: Any = None) -> tuple[bool, str]:
        """``f, msg = InitiatePulseTestDual(tag1, tag2)``: two trains on two SMUs at once."""
        return self._run_pulse_tests([tag1, tag2], "InitiatePulseTestDual")

    def _query_pulse_config(self, tag: Any = None) -> Any:
        """``tbl = QueryPulseConfig(tag)``: the train's settings, with ``tbl.tostring()``."""
        cfg = self.pulse_configs.get(as_int(tag, "QueryPulseConfig tag"))
        if cfg is None:
            return None
        ch: SmuChannel = cfg["smu"]
        unit, lunit = ("V", "A") if cfg["func"] == VOLTS else ("A", "V")
        level_text = (f"level = {cfg['levels'][0]:g} {unit}" if cfg["kind"] == "fixed"
                      else f"start = {cfg['levels'][0]:g} {unit}, stop = {cfg['levels'][1]:g} {unit} ({cfg['kind']})")
        text = "\n".join([
            f"tag = {cfg['tag']}", f"smu = {ch.lua_path}", f"func = {cfg['name']}",
            f"bias = {cfg['bias']:g} {unit}", level_text, f"limit = {cfg['limit']:g} {lunit}",
            f"ton = {cfg['ton']:g} s", f"toff = {cfg['toff']:g} s", f"points = {cfg['points']}",
            f"buffer = {cfg['buffer'].lua_path if cfg['buffer'] is not None else 'nil'}",
            f"sync_in = {cfg['sync_in']}", f"sync_out = {cfg['sync_out']}",
            f"sync_in_timeout = {cfg['sync_in_timeout']:g}", f"sync_in_abort = {str(cfg['sync_in_abort']).lower()}"])
        fields: dict[str, Any] = {"tag": cfg["tag"], "smu": ch, "func": cfg["name"], "bias": cfg["bias"],
                                  "limit": cfg["limit"], "ton": cfg["ton"], "toff": cfg["toff"],
                                  "points": cfg["points"], "buffer": cfg["buffer"],
                                  "sync_in_timeout": cfg["sync_in_timeout"], "sync_in_abort": cfg["sync_in_abort"],
                                  "tostring": lambda: text}
        if cfg["kind"] == "fixed":
            fields["level"] = cfg["levels"][0]
        else:
            fields["start"], fields["stop"] = cfg["levels"]
        rt = self.runtime
        return rt.lua.table_from({k: self._to_lua(v) for k, v in fields.items() if v is not None})

    def _run_points(self, ch: SmuChannel, func: int, values: list[float], *, settle: float,
                    back_to: tuple[float, float] | None, measure_at_end: bool = False, what: str) -> None:
        """Source each value, wait ``settle``, read the other quantity into nvbuffer1;
        with ``back_to = (bias, toff)`` return to the bias for ``toff`` after each point."""
        src = ch.source
        top = (self.spec.v_max if func == VOLTS else self.spec.i_max) * OVERRANGE
        for x in values + ([back_to[0]] if back_to else []):
            check_range(x, -top, top, f"{what} level")
        src.func = func
        buf = ch.nvbuffer1
        buf.clear()
        buf.collectsourcevalues = 1
        if back_to is not None:
            setattr(src, "levelv" if func == VOLTS else "leveli", back_to[0])  # the idle level
        src.output = 1
        kind = "i" if func == VOLTS else "v"
        t_conv = ch._conversion_time()
        for x in values:
            ch.apply_source(level=x)
            wait = settle - t_conv if measure_at_end else settle
            if wait > 0:
                self.clock.advance(wait)
            ch.take_readings((kind,), (buf,))
            if back_to is not None:
                ch.apply_source()
                if back_to[1] > 0:
                    self.clock.advance(back_to[1])
        if back_to is None:
            src.output = 0
