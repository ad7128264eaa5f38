"""Keithley 2600A/B System SourceMeter emulator (the 2612A by default).

Each SMU channel (``smua``, ``smub``) drives one source terminal of the simulated bench,
named ``"<emulator name>.smua"`` / ``".smub"`` (default emulator name ``k2612a``), so
what it measures depends on the relays the 3706A emulator has closed. Model data
(ranges, identity) live in :data:`MODELS`, so other 2600A/B models are one table row.

Implemented (TSP names as on the instrument):

* ``smuX.source``: ``func``, ``levelv/leveli``, ``limitv/limiti/limitp``,
  ``rangev/rangei`` (a value selects the smallest range that holds it and turns
  autorange off), ``autorangev/autorangei``, ``lowrangev/lowrangei``, ``output``,
  ``offmode``, ``offlimiti``, ``compliance`` (read-only), ``delay``, ``settling``,
  ``highc``, ``sink``; ``smuX.sense``.
* ``smuX.measure``: ``nplc`` (0.001–25), ``autozero``, ranges and autoranges,
  ``delay``, ``delayfactor``, ``count``, ``interval``, ``filter.*``, ``rel.*``, and
  ``i() v() iv() r() p()`` with optional buffer arguments.
* Reading buffers: ``nvbuffer1/2``, ``makebuffer(n)``; ``n``, ``capacity``,
  ``appendmode``, ``collecttimestamps``, ``collectsourcevalues``, ``fillmode``,
  ``basetimestamp``, ``clear()``, ``clearcache()``, columns ``readings``,
  ``timestamps``, ``sourcevalues``, ``statuses``, ``measureranges``; ``buf[i]``, ``#buf``.
* Trigger model: ``smuX.trigger.source.listv/linearv/logv`` (and ``…i``),
  ``limitv/limiti``, ``action``/``stimulus`` of source, measure, endpulse, arm;
  ``endsweep.action``, ``count``, ``arm.count``, ``trigger.measure.i/v/iv/r/p(buf…)``,
  ``initiate()``, ``abort()``; the global ``trigger.timer[1..8]`` (``delay``,
  ``delaylist``, ``count``, ``passthrough``, ``stimulus``, ``EVENT_ID``) and
  ``trigger.EVENT_ID``.
* ``status.operation.sweeping.condition``, ``status.measurement.instrument.smuX.condition``
  (bit 0 voltage limit, bit 1 current limit), ``display.*`` and ``beeper.*`` accepted.
* KISweep/KIPulse factory functions: ``SweepV{Lin,Log,List}MeasureI``,
  ``SweepI{Lin,Log,List}MeasureV``, ``PulseVMeasureI``, ``PulseIMeasureV``.

Simplifications (documented, on purpose):

* ``smuX.trigger.initiate()`` runs the whole sweep synchronously in simulated time as
  a small discrete-event simulation (timers, event detectors that latch, source →
  measure → end-pulse stages), then returns; ``waitcomplete()`` has nothing to wait
  for and ``status.operation.sweeping.condition`` reads 0 afterwards. Two channels are
  never swept concurrently; event blenders, digital I/O and TSP-Link triggers are
  absent. A stage waiting for an event that can never come ends the sweep with
  ``-200 Execution error`` instead of hanging.
* An output that is off is disconnected from the circuit whatever ``offmode`` says
  (the 0 V clamp of the NORMAL/ZERO off states is not modelled), so relays never see
  a "live" off channel. A measurement with the output off reads the bench as is.
* ``measure.delay = DELAY_AUTO`` adds no time; autozero AUTO costs two extra
  conversions per reading (3 × nplc/linefreq), ONCE costs two conversions once.
* Instrument noise per reading: σ = (1e-5·range + 1 pA)/√nplc for current,
  1e-5·range/√nplc for voltage (the factor clipped to 0.2–30, divided by √count of
  an enabled filter), plus a fixed per-channel offset (≈1e-5·range, seeded from the
  bench), on top of the device read noise the bench already adds. Autorange picks
  the smallest range holding the reading; a fixed range smaller than the reading
  gives the overflow value 9.91e37.
* ``limitp``, ``offlimiti``, ``sense``, ``settling``, ``highc`` and ``sink`` are
  stored and reported but do not change the physics; the power envelope (e.g. 100 mA
  on the 200 V range) is not enforced. An enabled filter of any type divides the
  noise by √count; only the repeat filter also multiplies the integration time.
* Out-of-range settings queue ``-222 Parameter data out of range; <what> <value>``
  and keep the old value (the chunk goes on, as on the instrument).
"""

from __future__ import annotations

import heapq
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from labpcu.sim.tsp.runtime import (
    OVERFLOW_READING,
    TspEmulator,
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
_I_2636 = (1e-9, 1e-8, *_I_2612)

MODELS: dict[str, SmuModel] = {
    "2612A": SmuModel("2612A", ("smua", "smub"), _V_2612, _I_2612, "3.3.5"),
    "2611A": SmuModel("2611A", ("smua",), _V_2612, _I_2612, "3.3.5"),
    "2602A": SmuModel("2602A", ("smua", "smub"), _V_2602, _I_2602, "3.3.5"),
    "2601A": SmuModel("2601A", ("smua",), _V_2602, _I_2602, "3.3.5"),
    "2612B": SmuModel("2612B", ("smua", "smub"), _V_2612, _I_2612, "4.0.4", 140_000),
    "2611B": SmuModel("2611B", ("smua",), _V_2612, _I_2612, "4.0.4", 140_000),
    "2602B": SmuModel("2602B", ("smua", "smub"), _V_2602, _I_2602, "4.0.4", 140_000),
    "2601B": SmuModel("2601B", ("smua",), _V_2602, _I_2602, "4.0.4", 140_000),
    "2636B": SmuModel("2636B", ("smua", "smub"), _V_2612, _I_2636, "4.0.4", 140_000),
}


# ------------------------------------------------------------------ settings
Check = Callable[[Any, Any, str], Any]


class _Setting:
    """A validated instrument attribute: Lua assignments go through ``check``
    (which raises TspParameterError for out-of-range values, so the old value stays),
    then the owner's ``_changed(name)`` runs (e.g. to update the bench)."""

    def __init__(self, default: Any, check: Check) -> None:
        self.default = default
        self.check = check

    def __set_name__(self, owner: type, name: str) -> None:
        self.name = name
        self.attr = "_" + name

    def __get__(self, obj: Any, objtype: type | None = None) -> Any:
        if obj is None:
            return self
        default = self.default(obj) if callable(self.default) else self.default
        return obj.__dict__.get(self.attr, default)

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


# ------------------------------------------------------------ trigger timers
class TriggerTimer(TspObject):
    """``trigger.timer[N]``: when its stimulus event occurs it emits its own event
    immediately if ``passthrough``, then ``count`` more times, ``delay`` (or the
    ``delaylist`` in turn) apart. A stimulus while it is still running is an overrun
    and is ignored."""

    lua_static = frozenset({"EVENT_ID"})
    lua_get = frozenset({"count", "delay", "delaylist", "passthrough", "stimulus", "overrun"})
    lua_set = frozenset({"count", "delay", "delaylist", "passthrough", "stimulus"})
    lua_call = frozenset({"clear", "reset", "wait"})

    def __init__(self, emu: K2612AEmulator, index: int, event_id: int) -> None:
        super().__init__(f"trigger.timer[{index}]")
        self._emu = emu
        self.EVENT_ID = event_id
        self.reset()

    def reset(self) -> None:
        self._count = 1
        self._delays = [10e-6]
        self._passthrough = False
        self._stimulus = 0
        self.overrun = False

    def clear(self) -> None:
        self.overrun = False

    def wait(self, timeout: Any = None) -> bool:
        """Nothing is pending between messages in a synchronous emulator."""
        return False

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


class _TimerArray(TspObject):
    def __init__(self, timers: list[TriggerTimer]) -> None:
        super().__init__("trigger.timer")
        self._timers = timers

    def lua_item(self, index: Any) -> Any:
        if isinstance(index, (int, float)) and not isinstance(index, bool) and index == int(index):
            if 1 <= int(index) <= len(self._timers):
                return self._timers[int(index) - 1]
        return None

    def lua_length(self) -> int:
        return len(self._timers)


class _TriggerRun:
    """The discrete-event simulation behind one ``initiate()``.

    Events are (time, id) in a heap. Dispatching an event latches every detector of
    the sweeping channel whose stimulus is that id and starts every timer whose
    stimulus it is. The channel's stages wait on their detectors; waiting advances the
    virtual clock to the next event. Only SMU actions change the bench, so handling
    events after a measurement (at their own timestamps) is exact.
    """

    def __init__(self, emu: K2612AEmulator, detectors: dict[str, int]) -> None:
        self.emu = emu
        self.clock = emu.clock
        self.heap: list[tuple[float, int, int, TriggerTimer | None, int]] = []
        self.seq = 0
        self.stimulus = detectors  # stage → event id (0 = immediate)
        self.latched: dict[str, bool] = dict.fromkeys(detectors, False)
        self.active: dict[int, int] = {}  # id(timer) → events still to come

    def _push(self, t: float, event_id: int, timer: TriggerTimer | None = None, k: int = 0) -> None:
        self.seq += 1
        heapq.heappush(self.heap, (t, self.seq, event_id, timer, k))

    def emit(self, event_id: int) -> None:
        """The channel emits an event now (handled before the next stage)."""
        self._push(self.clock.now(), event_id)
        self.process_due()

    def _dispatch(self, t: float, event_id: int) -> None:
        self.emu.charge(EVENT_COST)
        for stage, stim in self.stimulus.items():
            if stim == event_id and stim != 0:
                self.latched[stage] = True
        for timer in self.emu.timers:
            if timer.stimulus == event_id and timer.stimulus != 0:
                self._start_timer(timer, t)

    def _start_timer(self, timer: TriggerTimer, t: float) -> None:
        if self.active.get(id(timer), 0):
            timer.overrun = True
            return
        remaining = timer.count if timer.count > 0 else -1  # 0: runs until the sweep ends
        self.active[id(timer)] = remaining
        if timer.passthrough:
            self._dispatch(t, timer.EVENT_ID)
        if remaining:
            self._push(t + timer._delays[0], timer.EVENT_ID, timer, 0)
        else:
            self.active[id(timer)] = 0

    def process_due(self) -> None:
        now = self.clock.now()
        while self.heap and self.heap[0][0] <= now + _TIME_TOLERANCE:
            t, _, event_id, timer, k = heapq.heappop(self.heap)
            if timer is not None:
                left = self.active.get(id(timer), 0)
                left = left - 1 if left > 0 else left
                self.active[id(timer)] = left
                if left != 0:
                    delays = timer._delays
                    self._push(t + delays[(k + 1) % len(delays)], event_id, timer, k + 1)
            self._dispatch(t, event_id)

    def wait(self, stage: str) -> bool:
        """Block (in simulated time) until the stage's detector is set; False if no
        event can ever set it."""
        if self.stimulus[stage] == 0:
            return True
        while True:
            self.process_due()
            if self.latched[stage]:
                self.latched[stage] = False
                return True
            if not self.heap:
                return False
            # process_due left only events later than now + tolerance: dt > 0
            self.clock.advance(self.heap[0][0] - self.clock.now())

    def set(self, stage: str) -> None:
        self.latched[stage] = True


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
        self.reset()

    def reset(self) -> None:
        self._action = self._action_default
        self._stimulus = 0
        self.pending = False

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
        """Sets the event detector (it stays latched until the next initiate uses it)."""
        self.pending = True

    def release(self) -> None:
        self.pending = True


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

    def initiate(self) -> None:
        self._ch.run_trigger_model()

    def abort(self) -> None:
        """Sweeps complete inside ``initiate()``; nothing is left to abort."""


class SmuSource(TspObject):
    """``smua.source``. Every change that affects the output updates the bench."""

    lua_get = frozenset({"func", "levelv", "leveli", "limitv", "limiti", "limitp", "rangev", "rangei",
                         "autorangev", "autorangei", "lowrangev", "lowrangei", "output", "offmode",
                         "offlimiti", "compliance", "delay", "settling", "highc", "sink", "offfunc"})
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
    delay = _Setting(-1.0, _delay_value)
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
        # fixed instrument offsets of this channel: fraction of range, and absolute (A)
        self._offset = {"i": (float(rng.normal(0, 1e-5)), float(rng.normal(0, 0.3e-12))),
                        "v": (float(rng.normal(0, 1e-5)), 0.0)}
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

    def _changed(self, name: str) -> None:
        pass

    # -- state ----------------------------------------------------------------
    def reset(self) -> None:
        """``smua.reset()``: defaults, output off, buffers cleared, trigger model reset."""
        _reset_settings(self.source)
        _reset_settings(self)
        self.measure.reset()
        self.trigger.reset()
        self.nvbuffer1.reset()
        self.nvbuffer2.reset()
        self._status = 0
        self.apply_source()

    def abort(self) -> None:
        """Sweeps complete inside ``initiate()``; nothing is left to abort."""

    def makebuffer(self, n: Any = None) -> ReadingBuffer:
        size = as_int(n, f"{self.lua_path}.makebuffer")
        check_range(size, 1, 1_000_000, f"{self.lua_path}.makebuffer")
        self._nbuffers += 1
        return ReadingBuffer(f"{self.lua_path}.buffer{self._nbuffers}", size)

    @property
    def bench(self) -> SimBench | None:
        return self.emu.bench

    def apply_source(self, func: int | None = None, level: float | None = None, limit: float | None = None) -> None:
        """Tell the bench what the output does now (``level`` overrides during a sweep)."""
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
        self.bench.set_source(self.terminal, output=on, mode="v" if f == VOLTS else "i", level=level, limit=limit)

    def in_compliance(self) -> bool:
        if self.bench is None or self.source.output != 1:
            return False
        return bool(self.bench.measure(self.terminal, 0.0).compliance)

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

    def _convert(self) -> _Conversion:
        """One A/D conversion at the bench: measure.delay, then the integration."""
        self.emu.charge(MEASURE_COST)
        m = self.measure
        if m.delay > 0:
            self.emu.clock.advance(m.delay * m.delayfactor)
        t = self.emu.clock.now()
        dur = self._conversion_time()
        if self.bench is None:
            self.emu.clock.advance(dur)
            return _Conversion(t, 0.0, 0.0, False)
        r = self.bench.measure(self.terminal, duration=dur)
        return _Conversion(t, r.i, r.v, r.compliance)

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
        if abs(x) > rng * OVERRANGE:
            return OVERFLOW_READING, rng
        frac, absolute = self._offset[kind]
        base = 1e-5 * rng + (1e-12 if kind == "i" else 0.0)
        value = x + frac * rng + absolute + base * self._noise_factor() * float(self._rng.standard_normal())
        rel = m.rel.fields
        if rel[f"enable{kind}"]:
            value -= rel[f"level{kind}"]
        return value, rng

    def take_readings(self, kinds: tuple[str, ...], buffers: tuple[ReadingBuffer | None, ...]) -> list[float]:
        """``measure.count`` conversions, ``measure.interval`` apart; each stores into
        its buffers. Returns the last reading of each kind."""
        m = self.measure
        out: list[float] = []
        t_prev: float | None = None
        for _ in range(m.count):
            if t_prev is not None and m.interval > 0:
                wait = t_prev + m.interval - self.emu.clock.now()
                if wait > 0:
                    self.emu.clock.advance(wait)
            c = self._convert()
            t_prev = c.t
            i, irng = self._instrument("i", c.i)
            v, vrng = self._instrument("v", c.v)
            status = 0
            if c.compliance:
                status = 2 if self._applied_func == VOLTS else 1
            self._status = status
            out = []
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
        return out

    # -- trigger model -----------------------------------------------------------
    def run_trigger_model(self) -> None:
        """``smua.trigger.initiate()``: the whole sweep, synchronously in simulated time.

        Arm layer (``arm.count`` passes, each waiting for ``arm.stimulus``), trigger
        layer (``trigger.count`` points): source stage (next sweep value if
        ``source.action``), ``source.delay``, measure stage (``measure.delay``, then
        the readings chosen by ``trigger.measure.*`` into their buffers if
        ``measure.action``), end-pulse stage (``SOURCE_IDLE`` returns to the idle
        level, i.e. ``source.levelv``/``leveli``). After the trigger layer,
        ``endsweep.action`` decides between idle level and hold. Each stage first waits
        for its stimulus event (0 = go on at once).
        """
        trig = self.trigger
        if trig.measure.action and not trig.measure.kinds:
            raise TspError(f"{trig.lua_path}.measure: no measurement configured (use trigger.measure.i(buf) first)")
        if trig.source.action and not trig.source.points:
            raise TspError(f"{trig.lua_path}.source: no sweep list configured (use trigger.source.listv first)")
        stages = {"arm": trig.arm, "source": trig.source, "measure": trig.measure, "endpulse": trig.endpulse}
        run = _TriggerRun(self.emu, {k: s.stimulus for k, s in stages.items()})
        for name, stage in stages.items():
            if stage.pending:
                run.set(name)
                stage.pending = False
        for b in dict.fromkeys(b for b in trig.measure.buffers if b is not None):
            b.begin()
        src = trig.source
        sweep_limit = (src._limiti if src.func == VOLTS else src._limitv)
        step = 0
        arm_passes = trig.arm.count if trig.arm.count > 0 else -1
        try:
            run.emit(trig.SWEEPING_EVENT_ID)
            while arm_passes != 0:
                arm_passes -= 1
                self._wait(run, "arm")
                run.emit(trig.ARMED_EVENT_ID)
                points = trig.count if trig.count > 0 else -1
                while points != 0:
                    points -= 1
                    self._wait(run, "source")
                    if src.action:
                        level = src.points[step % len(src.points)]
                        step += 1
                        self.apply_source(func=src.func, level=level, limit=sweep_limit)
                    if self.source.delay > 0:
                        self.emu.clock.advance(self.source.delay)
                    run.emit(trig.SOURCE_COMPLETE_EVENT_ID)
                    self._wait(run, "measure")
                    if trig.measure.action:
                        self.take_readings(trig.measure.kinds, trig.measure.buffers)
                    run.emit(trig.MEASURE_COMPLETE_EVENT_ID)
                    self._wait(run, "endpulse")
                    if trig.endpulse.action == 0:
                        self.apply_source()
                    run.emit(trig.PULSE_COMPLETE_EVENT_ID)
                run.emit(trig.SWEEP_COMPLETE_EVENT_ID)
                if trig.endsweep.action == 0:
                    self.apply_source()
            run.emit(trig.IDLE_EVENT_ID)
        except _Stalled as stall:
            self.apply_source()
            self.emu.push_error(-200, f"Execution error; {trig.lua_path} stalled: {stall} never occurs")

    def _wait(self, run: _TriggerRun, stage: str) -> None:
        if not run.wait(stage):
            raise _Stalled(f"{stage} stimulus event {run.stimulus[stage]}")


class _Stalled(Exception):
    pass


# ------------------------------------------------------------------- emulator
class K2612AEmulator(TspEmulator):
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
        self.timers = [TriggerTimer(self, k, next(self._event_ids)) for k in range(1, 9)]
        self.trigger = TspTable(
            "trigger",
            constants={"timer": _TimerArray(self.timers), "EVENT_ID": next(self._event_ids)},
            functions={"wait": lambda timeout=None: False, "clear": lambda: None},
        )
        self.status = self._make_status()
        self.display = self._make_display()
        self.beeper = TspTable("beeper", fields={"enable": 1}, functions={"beep": lambda d=None, f=None: None},
                               constants={"ON": 1, "OFF": 0})
        self.reset()

    def __getattr__(self, name: str) -> Any:
        # emu.smua / emu.smub for Python-side inspection in tests
        channels = self.__dict__.get("channels")
        if channels is not None and name in channels:
            return channels[name]
        raise AttributeError(name)

    def _make_status(self) -> TspTable:
        def register(path: str, condition: Callable[[], int] = lambda: 0, **children: Any) -> TspTable:
            return TspTable(path, constants=children, fields={"enable": 0, "ntr": 0, "ptr": 0},
                            readonly={"condition": condition, "event": lambda: 0})

        sweeping = register("status.operation.sweeping", lambda: 0)
        sweeping.constants.update({name.upper(): 2 << k for k, name in enumerate(self.spec.channels)})
        instrument = register(
            "status.measurement.instrument",
            **{n: register(f"status.measurement.instrument.{n}", (lambda ch=ch: ch.status_condition))
               for n, ch in self.channels.items()},
        )
        return TspTable(
            "status",
            constants={
                "operation": register("status.operation", sweeping=sweeping),
                "measurement": register("status.measurement", instrument=instrument),
                "questionable": register("status.questionable"),
                "standard": register("status.standard"),
                "system": register("status.system"),
            },
            functions={"reset": lambda: None},
            fields={"request_enable": 0, "node_enable": 0},
            readonly={"condition": lambda: 4 if len(self.errors) else 0},
        )

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
        }

    def reset(self) -> None:
        """``reset()``/``*RST``: every channel to defaults with its output off."""
        super().reset()
        for ch in self.channels.values():
            ch.reset()
        for timer in self.timers:
            timer.reset()
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
