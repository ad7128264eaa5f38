"""Keysight (Agilent) B1500A semiconductor parameter analyzer, FLEX command set.

The B1500A fills the multi-channel analyzer role (VMM needs at least four SMUs). This
driver gives each installed SMU module a pymeasure :class:`~pymeasure.instruments.Channel`
whose id is its slot, which is also its FLEX channel number (1-10); the modules are
discovered from ``UNT?`` unless the caller names them (``modules=``).

What it sends (numbers in :func:`flex_number` form, no spaces after commas)::

    identity, errors   *IDN?   *RST   UNT?   ERRX?   *OPC?
    outputs            CN [ch,...]   CL [ch,...]   DZ [ch,...]
    force              DV ch,range,V,Icomp[,0,irange]   DI ch,range,I,Vcomp[,0,vrange]
    spot               TI ch[,range]   TV ch[,range]   TIV ch[,irange,vrange]
    set-up             CMM ch,mode   AAD ch,adc   RI/RV ch,range   FL 0|1,ch   AIT   AZ   TSC
    staircase sweep    WV|WI ch,mode,range,start,stop,steps,comp[,pcomp]   WT hold,delay[,sdelay]
                       WM abort,post   MM 2,ch...   FMT 1,1   XE  -> one data line
    pulsed spot        PT hold,width[,period]   PV|PI ch,range,base,pulse,comp   MM 3,ch   XE
    shutdown           DZ   CL

Rules it keeps, and why:

* Every value is checked against the module's limits *before* anything is sent, and
  a bad one raises :class:`~labpcu.instruments.errors.LimitError` naming the value: a
  command the instrument rejects half-way leaves a half-configured measurement.
* Compliance is always part of the force command (``DV``/``DI``/``WV``/``PV``), so no
  level is ever live without the compliance the caller chose.
* After each configuration command the driver asks ``ERRX?`` (pymeasure's
  ``check_set_errors`` hook) and raises :class:`~labpcu.instruments.errors.InstrumentError`
  with the instrument's own code and text. A FLEX command that fails sends no data, so
  when a measurement read times out the driver asks ``ERRX?`` for the cause before
  calling it a communication failure.
* Data are parsed from ``FMT 1`` elements (status letter, channel letter, type letter,
  12-character number ``sddd.dddEsdd``). Status letters are kept per point: compliance
  (``C``/``T``) and overflow (``V``, value ``199.999E+99`` -> NaN) are reported in the
  result objects, never silently turned into numbers. Anything malformed raises
  :class:`DataFormatError`.
* VISA errors (timeout, lost connection, closed session) and ``OSError`` become
  :class:`~labpcu.instruments.errors.InstrumentCommunicationError`.
* :meth:`KeysightB1500A.shutdown` sends ``DZ`` then ``CL``: levels to 0 V, then every
  output relay open.

Relation to pymeasure's ``AgilentB1500`` (pymeasure 0.16): reused are the
``Instrument``/``Channel`` machinery, ``setting``/``measurement`` with validators, the
``check_set_errors`` hook, ``pymeasure.test.expected_protocol`` for the tests, and its
per-module range tables (:class:`SMUVoltageRanging`/:class:`SMUCurrentRanging`, facts
from the manual: which range codes each SMU type accepts, and their names such as
``"1 nA"``). Not reused, because it is wrong for this bench: its ``read_data`` calls
``DataFrame.applymap`` (removed in pandas 3) and returns overflow as 1.99999e101; status
letters are only logged; ``check_errors`` raises ``OSError`` and its reply pattern stops
at the first character that is not a letter, digit, space or dot, so texts like
``Excess current; SLOT1`` are cut; the class mixes in ``SCPIMixin`` although FLEX has no
``SYST:ERR?``; ``force`` sends compliance only when given and validates no level; SMUs
are numbered by order instead of slot; and it has no pulsed spot measurement.
"""

from __future__ import annotations

import logging
import math
import operator
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
import pandas as pd
from pymeasure.instruments import Channel, Instrument
from pymeasure.instruments.agilent.agilentB1500 import SMUCurrentRanging, SMUVoltageRanging
from pymeasure.instruments.validators import strict_discrete_set

from labpcu.instruments.base import GuardedInstrument, PlainAttributes
from labpcu.instruments.base import is_timeout as _is_timeout
from labpcu.instruments.errors import DataFormatError, InstrumentCommunicationError, InstrumentError, LimitError

__all__ = [
    "DataFormatError",
    "Element",
    "KeysightB1500A",
    "Reading",
    "SMU",
    "SMUModel",
    "SMU_MODELS",
    "SweepResult",
    "flex_number",
    "format_fmt1_number",
    "parse_data",
    "parse_element",
    "parse_sweep",
]

log = logging.getLogger(__name__)
log.addHandler(logging.NullHandler())

# ------------------------------------------------------------------------- modules


@dataclass(frozen=True, slots=True)
class SMUModel:
    """Output limits of one SMU module model (datasheet figures)."""

    model: str
    #: pymeasure SMU type, selects the range tables (``HRSMU``, ``MPSMU``, ``HPSMU``)
    family: str
    v_max: float  # V
    i_max: float  # A
    #: ascending (|V| up to, |I| max) pairs: the current the module can deliver at a voltage
    envelope: tuple[tuple[float, float], ...]
    p_max: float  # W, largest power compliance of a sweep

    def i_capability(self, volts: float) -> float:
        """Largest current the module can deliver at ``|volts|`` (0 beyond ``v_max``)."""
        for v_top, i_top in self.envelope:
            if abs(volts) <= v_top * (1 + 1e-12):
                return i_top
        return 0.0


#: SMU modules this driver knows; other modules (CMU, SPGU, ...) get no SMU channel.
SMU_MODELS: dict[str, SMUModel] = {
    # B1517A HR-SMU: ±100 V, ±100 mA (50 mA above 20 V, 20 mA above 40 V)
    "B1517A": SMUModel("B1517A", "HRSMU", 100.0, 0.1, ((20.0, 0.1), (40.0, 0.05), (100.0, 0.02)), 2.0),
    # B1511A/B MP-SMU: same output envelope as the HR-SMU, fewer low-current ranges
    "B1511A": SMUModel("B1511A", "MPSMU", 100.0, 0.1, ((20.0, 0.1), (40.0, 0.05), (100.0, 0.02)), 2.0),
    "B1511B": SMUModel("B1511B", "MPSMU", 100.0, 0.1, ((20.0, 0.1), (40.0, 0.05), (100.0, 0.02)), 2.0),
    # B1510A HP-SMU: ±200 V, ±1 A
    "B1510A": SMUModel(
        "B1510A", "HPSMU", 200.0, 1.0, ((20.0, 1.0), (40.0, 0.5), (100.0, 0.125), (200.0, 0.05)), 20.0
    ),
}

#: FLEX voltage range codes 11-15 are aliases of 20, 200, 400, 1000, 2000; the driver
#: always sends the canonical code so that one setting has one spelling on the wire.
_V_ALIASES = {11: 20, 12: 200, 13: 400, 14: 1000, 15: 2000}

N_SLOTS = 10
MAX_SWEEP_STEPS = 1001

# ------------------------------------------------------------------ number formats


def flex_number(value: float) -> str:
    """A float as sent in a FLEX command: the shortest text that reads back as the same
    float (Python's ``repr``), integers without ``.0``, never ``-0``.

    Shortest round-trip text means the instrument receives exactly the value the caller
    asked for (``0.0001``, ``1e-05``, ``0.30000000000000004``) and the wire log is
    readable; a fixed ``%g`` would round to six digits.
    """
    x = float(value)
    if not math.isfinite(x):
        raise LimitError(f"cannot send {value!r} to the instrument: not a finite number")
    if x == 0.0:
        return "0"
    if x.is_integer() and abs(x) < 1e16:  # repr switches to "1e+16" there
        return str(int(x))
    return repr(x)


#: the FMT 1 number of an overflow; the instrument sends it with status ``V``
OVERFLOW_TEXT = "+199.999E+99"
_OVERFLOW_MIN = 1e101  # any FMT 1 number this large is the overflow marker
_NUMBER = r"[+-]\d{3}\.\d{3}E[+-]\d{2}"
_ELEMENT = re.compile(rf"([A-Z])([A-Za-z])([A-Z])({_NUMBER})")
#: status letters of FMT 1 elements (manual: data output format, status)
STATUS_LETTERS = "NCTVXFGSUDWE"
#: most severe first: used to give one status to a reading made of several elements
_SEVERITY = "VCTXFGSUDN"
_CHANNEL_LETTERS = {**{c: i + 1 for i, c in enumerate("ABCDEFGHIJ")},
                    **{c: (i + 1) * 100 + 2 for i, c in enumerate("abcdefghij")}}
_KINDS = "IVT"


def format_fmt1_number(value: float) -> str:
    """``value`` as the 12-character FMT 1 number ``sddd.dddEsdd``, with an engineering
    exponent and a mantissa in [1, 1000). NaN and infinities give the overflow text.

    The resolution is 0.0005 × 10^exponent. Used by tests and by anything that has to
    produce instrument-shaped data (the instrument chooses the exponent from its range,
    this picks the smallest exponent that fits, i.e. the best resolution).
    """
    x = float(value)
    if not math.isfinite(x):
        return OVERFLOW_TEXT
    if x == 0.0:
        return "+000.000E+00"
    e = 3 * math.floor(math.log10(abs(x)) / 3)
    e = max(e, -99)
    mantissa = round(x / 10.0**e, 3)
    while abs(mantissa) >= 1000.0:
        e += 3
        mantissa = round(x / 10.0**e, 3)
    if e > 99:
        return OVERFLOW_TEXT
    if mantissa == 0.0:
        mantissa, e = 0.0, 0
    return f"{mantissa:+08.3f}E{e:+03d}"



@dataclass(frozen=True, slots=True)
class Element:
    """One FMT 1 datum: ``NAI+000.005E-09`` -> status N, channel 1, kind I, 5e-12 A."""

    status: str
    channel: int  # slot 1-10, or 102-1002 for the second channel of a dual module
    kind: str  # "I" current (A), "V" voltage (V), "T" time (s)
    value: float  # NaN when the instrument flags an overflow
    text: str

    @property
    def overflow(self) -> bool:
        """Measurement beyond the range (status ``V``): the value means nothing."""
        return self.status == "V" or math.isnan(self.value)

    @property
    def compliance(self) -> bool:
        """This channel (``C``) or another one (``T``) was in compliance."""
        return self.status in "CT"

    @property
    def is_source(self) -> bool:
        """Sweep source data (``W`` intermediate step, ``E`` last step)."""
        return self.status in "WE"


def parse_element(text: str) -> Element:
    """Parse one FMT 1 element; anything but exactly that layout raises DataFormatError."""
    stripped = text.strip()
    m = _ELEMENT.fullmatch(stripped)
    if m is None:
        raise DataFormatError(
            f"malformed FMT 1 data element {text!r}: expected status letter, channel "
            "letter, type letter and a 12-character number such as 'NAI+000.005E-09'"
        )
    status, letter, kind, number = m.groups()
    if status not in STATUS_LETTERS:
        raise DataFormatError(f"unknown status letter {status!r} in data element {text!r}")
    channel = _CHANNEL_LETTERS.get(letter)
    if channel is None:
        raise DataFormatError(f"channel letter {letter!r} in {text!r} is not an SMU channel (A-J, a-j)")
    if kind not in _KINDS:
        raise DataFormatError(f"data type {kind!r} in {text!r} is not I, V or T")
    value = float(number)
    if abs(value) >= _OVERFLOW_MIN or (status == "V" and kind != "T"):
        value = math.nan
    return Element(status, channel, kind, value, stripped)


def parse_data(line: str) -> list[Element]:
    """Parse a reply of comma-separated FMT 1 elements (one ``XE``/spot reply)."""
    body = line.strip()
    if not body:
        raise DataFormatError("empty data reply: the measurement returned no elements")
    return [parse_element(part) for part in body.split(",")]


def _worst(statuses: Iterable[str]) -> str:
    letters = list(statuses)
    for s in _SEVERITY:
        if s in letters:
            return s
    return "N"


# ---------------------------------------------------------------------- results


@dataclass(frozen=True, slots=True)
class Reading:
    """One spot or pulsed-spot measurement of one channel.

    ``current``/``voltage`` are NaN when not measured or on overflow; ``status`` is the
    most severe status letter of the reading's elements (V > C > T > X > F > ... > N).
    """

    channel: int
    current: float
    voltage: float
    status: str
    time: float | None = None
    elements: tuple[Element, ...] = ()

    @property
    def compliance(self) -> bool:
        """True if this channel (C) or another one (T) was in compliance: the value is a
        limit, not the device's response."""
        return any(e.compliance for e in self.elements)

    @property
    def overflow(self) -> bool:
        return any(e.overflow for e in self.elements if e.kind != "T")

    @property
    def ok(self) -> bool:
        return self.status == "N"

    @classmethod
    def from_elements(cls, elements: Sequence[Element], channel: int | None = None) -> Reading:
        """Build a reading from the elements of one channel (at most one I, V and T)."""
        if not elements:
            raise DataFormatError("no data elements for a reading")
        ch = elements[0].channel if channel is None else channel
        values: dict[str, float] = {}
        for e in elements:
            if e.channel != ch:
                raise DataFormatError(f"data element {e.text!r} is from channel {e.channel}, expected {ch}")
            if e.is_source:
                raise DataFormatError(f"unexpected sweep source element {e.text!r} in a spot reading")
            if e.kind in values:
                raise DataFormatError(f"two {e.kind} elements for channel {ch} in one reading")
            values[e.kind] = e.value
        if "I" not in values and "V" not in values:
            raise DataFormatError(f"reading of channel {ch} has neither current nor voltage")
        return cls(
            channel=ch,
            current=values.get("I", math.nan),
            voltage=values.get("V", math.nan),
            status=_worst(e.status for e in elements if e.kind != "T"),
            time=values.get("T"),
            elements=tuple(elements),
        )


@dataclass(frozen=True)
class SweepResult:
    """A staircase sweep read with ``FMT 1,1``: per step, every measured channel's data
    and the source value the instrument reports.

    Arrays are per measured channel (dict key = channel). ``status[ch][k]`` is the most
    severe status letter of channel ``ch`` at step ``k``; overflowed values (and the
    dummy data after an automatic abort) are NaN with status ``V``.
    """

    source_channel: int
    source_kind: str  # "V" voltage sweep, "I" current sweep
    source: np.ndarray
    current: dict[int, np.ndarray]
    voltage: dict[int, np.ndarray]
    status: dict[int, np.ndarray]
    time: dict[int, np.ndarray] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.source)

    @property
    def channels(self) -> list[int]:
        return list(self.status)

    @property
    def compliance(self) -> np.ndarray:
        """Per step: any measured channel in compliance (C or T)."""
        flags = [np.isin(s, ["C", "T"]) for s in self.status.values()]
        return np.logical_or.reduce(flags) if flags else np.zeros(len(self), bool)

    @property
    def overflow(self) -> np.ndarray:
        """Per step: any measured channel overflowed (V), including aborted steps."""
        flags = [s == "V" for s in self.status.values()]
        return np.logical_or.reduce(flags) if flags else np.zeros(len(self), bool)

    @property
    def ok(self) -> np.ndarray:
        """Per step: every measured channel reported N."""
        return np.logical_and.reduce([s == "N" for s in self.status.values()])

    def to_dataframe(self) -> pd.DataFrame:
        """Columns ``source`` (V or A, see ``attrs``), ``I<ch>``/``V<ch>``/``t<ch>``,
        ``status<ch>``, ``compliance``, ``overflow``; one row per step."""
        cols: dict[str, Any] = {"source": self.source}
        for ch in self.channels:
            if ch in self.current:
                cols[f"I{ch}"] = self.current[ch]
            if ch in self.voltage:
                cols[f"V{ch}"] = self.voltage[ch]
            if ch in self.time:
                cols[f"t{ch}"] = self.time[ch]
            cols[f"status{ch}"] = self.status[ch]
        cols["compliance"] = self.compliance
        cols["overflow"] = self.overflow
        df = pd.DataFrame(cols)
        df.attrs.update(source_channel=self.source_channel, source_kind=self.source_kind)
        return df


def parse_sweep(
    line: str,
    *,
    source_channel: int,
    source_kind: str,
    measure_channels: Sequence[int] | None = None,
    steps: int | None = None,
) -> SweepResult:
    """Parse ``FMT 1,1`` staircase data: each step is the measured elements followed by
    one source element (status ``W``, ``E`` on the last step).

    The layout of every step must equal the first one's, the source element must come
    from ``source_channel`` and be of ``source_kind``, the measured channels must be
    ``measure_channels`` (in that order) and the step count ``steps`` when given;
    otherwise the reply is out of step with the request and DataFormatError is raised.
    """
    elements = parse_data(line)
    groups: list[tuple[list[Element], Element]] = []
    pending: list[Element] = []
    for el in elements:
        if el.is_source:
            groups.append((pending, el))
            pending = []
        else:
            pending.append(el)
    if pending:
        raise DataFormatError(
            f"sweep data ends with {len(pending)} element(s) after the last source value "
            f"({pending[-1].text!r}): not FMT 1,1 staircase data, or truncated"
        )
    layout = [(e.channel, e.kind) for e in groups[0][0]] if groups else []
    if not layout:
        raise DataFormatError(f"sweep step 1 holds no measured data: {line[:80]!r}")
    if len(set(layout)) != len(layout):
        raise DataFormatError(f"sweep step 1 repeats a channel/type pair: {layout}")
    last = len(groups) - 1
    for k, (meas, src) in enumerate(groups):
        got = [(e.channel, e.kind) for e in meas]
        if got != layout:
            raise DataFormatError(f"sweep step {k + 1} has elements {got}, step 1 had {layout}")
        if src.channel != source_channel or src.kind != source_kind:
            raise DataFormatError(
                f"sweep step {k + 1}: source element {src.text!r} is not channel "
                f"{source_channel} type {source_kind}"
            )
        if src.status != ("E" if k == last else "W"):
            raise DataFormatError(
                f"sweep step {k + 1} of {last + 1}: source status {src.status!r}, expected "
                f"{'E' if k == last else 'W'} (data out of step)"
            )
    channels = list(dict.fromkeys(ch for ch, _ in layout))
    if measure_channels is not None and channels != list(measure_channels):
        raise DataFormatError(f"sweep data holds channels {channels}, asked for {list(measure_channels)}")
    if steps is not None and len(groups) != steps:
        raise DataFormatError(f"sweep returned {len(groups)} steps, expected {steps}")

    current: dict[int, np.ndarray] = {}
    voltage: dict[int, np.ndarray] = {}
    times: dict[int, np.ndarray] = {}
    status: dict[int, np.ndarray] = {}
    for ch in channels:
        for kind, target in (("I", current), ("V", voltage), ("T", times)):
            if (ch, kind) in layout:
                j = layout.index((ch, kind))
                target[ch] = np.array([meas[j].value for meas, _ in groups], dtype=float)
        idx = [j for j, (c, kind) in enumerate(layout) if c == ch and kind != "T"]
        status[ch] = np.array([_worst(meas[j].status for j in idx) for meas, _ in groups], dtype="<U1")
    return SweepResult(
        source_channel=source_channel,
        source_kind=source_kind,
        source=np.array([src.value for _, src in groups], dtype=float),
        current=current,
        voltage=voltage,
        status=status,
        time=times,
    )


# --------------------------------------------------------------------- validation


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


def _integer(name: str, value: Any) -> int:
    if isinstance(value, bool):
        raise LimitError(f"{name} must be an integer, got {value!r}")
    try:
        return operator.index(value)
    except TypeError:
        raise LimitError(f"{name} must be an integer, got {value!r}") from None


def _within(name: str, value: Any, low: float, high: float, unit: str) -> float:
    x = _number(name, value)
    if not low <= x <= high:
        u = f" {unit}" if unit else ""
        raise LimitError(f"{name} {x:g}{u} is outside {low:g}..{high:g}{u}")
    return x


def _choice(name: str, value: Any, choices: Mapping[str, int]) -> int:
    try:
        return choices[value]
    except (KeyError, TypeError):
        raise LimitError(f"{name} must be one of {', '.join(map(repr, choices))}, got {value!r}") from None


_SWEEP_MODES = {"linear": 1, "log": 2, "linear_two_way": 3, "log_two_way": 4}
_SOURCE = {"voltage": "V", "current": "I"}
_ADC = {"high_speed": 0, "high_resolution": 1, "pulsed": 2}
_ADC_MODES = {"auto": 0, "manual": 1, "plc": 2, "time": 3}



_ERRX = re.compile(r'\s*([+-]?\d+)\s*,\s*"(.*)"\s*', re.S)


def _parse_errx(reply: str) -> tuple[int, str]:
    m = _ERRX.fullmatch(reply)
    if m is None:
        raise DataFormatError(f"unexpected reply to ERRX?: {reply!r} (expected code,\"text\")")
    return int(m.group(1)), m.group(2)


def _parse_unt(reply: str) -> dict[int, str]:
    """``UNT?``: ``model,rev`` per slot joined by ``;``, ``0,0`` for an empty slot."""
    modules: dict[int, str] = {}
    parts = reply.strip().split(";")
    if not 1 <= len(parts) <= N_SLOTS:
        raise DataFormatError(f"unexpected reply to UNT?: {reply!r}")
    for slot, part in enumerate(parts, start=1):
        model = part.split(",")[0].strip()
        if not model:
            raise DataFormatError(f"unexpected reply to UNT?: {reply!r}")
        if model != "0":
            modules[slot] = model
    return modules


# --------------------------------------------------------------------------- SMU


class SMU(PlainAttributes, Channel):
    """One SMU module; ``id`` is its slot, which is its FLEX channel number."""

    output_enabled = Channel.setting(
        "%s",
        """Set the output switch: True closes it (``CN``; 0 V, 100 µA compliance),
        False opens it (``CL``).""",
        validator=strict_discrete_set,
        values={True: "CN {ch}", False: "CL {ch}"},
        map_values=True,
        check_set_errors=True,
    )

    measurement_mode = Channel.setting(
        "CMM {ch},%d",
        """Set what spot/sweep measurements read on this channel (``CMM``):
        'compliance_side' (the non-forced quantity, default), 'current', 'voltage',
        'force_side', 'current_voltage'.""",
        validator=strict_discrete_set,
        values={"compliance_side": 0, "current": 1, "voltage": 2, "force_side": 3, "current_voltage": 4},
        map_values=True,
        check_set_errors=True,
    )

    adc = Channel.setting(
        "AAD {ch},%d",
        """Set the A/D converter of this channel (``AAD``): 'high_speed',
        'high_resolution' or 'pulsed'.""",
        validator=strict_discrete_set,
        values=_ADC,
        map_values=True,
        check_set_errors=True,
    )

    filter_enabled = Channel.setting(
        "FL %d,{ch}",
        """Set the output filter (``FL``): True on, False off.""",
        validator=strict_discrete_set,
        values={True: 1, False: 0},
        map_values=True,
        check_set_errors=True,
    )

    current_range = Channel.setting(
        "RI {ch},%d",
        """Set the current measurement range code (``RI``): 0 auto, +code limited auto,
        -code fixed (e.g. -11 = 1 nA fixed). Codes depend on the module.""",
        validator=strict_discrete_set,
        values=(0,),
        check_set_errors=True,
        dynamic=True,
    )

    voltage_range = Channel.setting(
        "RV {ch},%d",
        """Set the voltage measurement range code (``RV``): 0 auto, +code limited auto,
        -code fixed (e.g. -20 = 2 V fixed). Codes depend on the module.""",
        validator=strict_discrete_set,
        values=(0,),
        set_process=lambda code: int(math.copysign(_V_ALIASES.get(abs(code), abs(code)), code)),
        check_set_errors=True,
        dynamic=True,
    )

    def __init__(self, parent: KeysightB1500A, id: int, model: str, **kwargs: Any) -> None:
        super().__init__(parent, id, **kwargs)
        self.model: SMUModel = SMU_MODELS[model]
        self._v_ranging = SMUVoltageRanging(self.model.family)
        self._i_ranging = SMUCurrentRanging(self.model.family)
        self.current_range_values = sorted(self._i_ranging.meas.ranges)
        self.voltage_range_values = sorted(self._v_ranging.meas.ranges)

    def __repr__(self) -> str:
        return f"<SMU slot {self.id} {self.model.model}>"

    # -- outputs -----------------------------------------------------------------
    def enable(self) -> None:
        """Close the output switch (``CN ch``)."""
        self.output_enabled = True

    def disable(self) -> None:
        """Open the output switch (``CL ch``)."""
        self.output_enabled = False

    def zero(self) -> None:
        """Force 0 V now, keeping the settings for ``RZ`` (``DZ ch``)."""
        self.write("DZ {ch}")
        self.check_set_errors()

    # -- force ---------------------------------------------------------------------
    def force_voltage(
        self,
        voltage: float,
        compliance: float,
        *,
        output_range: int | str = 0,
        compliance_range: int | str | None = None,
    ) -> None:
        """Force ``voltage`` (V) with current ``compliance`` (A) in one ``DV`` command.

        :param output_range: range code or name (0 = auto; a code is the lowest range used).
        :param compliance_range: current range code or name for the compliance side.
        """
        v = self.check_voltage("voltage", voltage)
        comp = self.check_current_compliance(compliance, abs(v))
        command = f"DV {self.id},{self.range_code('V', output_range)},{flex_number(v)},{flex_number(comp)}"
        if compliance_range is not None:
            command += f",0,{self.range_code('I', compliance_range)}"
        self.write(command)
        self.check_set_errors()

    def force_current(
        self,
        current: float,
        compliance: float,
        *,
        output_range: int | str = 0,
        compliance_range: int | str | None = None,
    ) -> None:
        """Force ``current`` (A) with voltage ``compliance`` (V) in one ``DI`` command."""
        i = self.check_current("current", current)
        comp = self.check_voltage_compliance(compliance, abs(i))
        command = f"DI {self.id},{self.range_code('I', output_range)},{flex_number(i)},{flex_number(comp)}"
        if compliance_range is not None:
            command += f",0,{self.range_code('V', compliance_range)}"
        self.write(command)
        self.check_set_errors()

    # -- spot measurements ---------------------------------------------------------
    def measure_current(self, range: int | str | None = None) -> Reading:
        """High-speed spot current (``TI ch[,range]``); the output must be on."""
        suffix = "" if range is None else f",{self.range_code('I', range, measure=True)}"
        return self._spot(f"TI {self.id}{suffix}")

    def measure_voltage(self, range: int | str | None = None) -> Reading:
        """High-speed spot voltage (``TV ch[,range]``)."""
        suffix = "" if range is None else f",{self.range_code('V', range, measure=True)}"
        return self._spot(f"TV {self.id}{suffix}")

    def measure(self, current_range: int | str | None = None, voltage_range: int | str | None = None) -> Reading:
        """High-speed spot current and voltage (``TIV ch[,irange,vrange]``); giving one
        range sends the other as 0 (auto), since FLEX takes both or none."""
        suffix = ""
        if current_range is not None or voltage_range is not None:
            ir = self.range_code("I", 0 if current_range is None else current_range, measure=True)
            vr = self.range_code("V", 0 if voltage_range is None else voltage_range, measure=True)
            suffix = f",{ir},{vr}"
        return self._spot(f"TIV {self.id}{suffix}")

    def _spot(self, command: str) -> Reading:
        line = self.parent.query_data(command)
        return Reading.from_elements(parse_data(line), channel=self.id)

    # -- limits (public so that the instrument's sweeps share them) -----------------
    def _where(self) -> str:
        return f"{self.model.model} in slot {self.id}"

    def check_voltage(self, name: str, value: Any) -> float:
        v = _number(name, value)
        if abs(v) > self.model.v_max:
            raise LimitError(f"{name} {v:g} V is outside ±{self.model.v_max:g} V of the {self._where()}")
        return v

    def check_current(self, name: str, value: Any) -> float:
        i = _number(name, value)
        if abs(i) > self.model.i_max:
            raise LimitError(f"{name} {i:g} A is outside ±{self.model.i_max:g} A of the {self._where()}")
        return i

    def check_current_compliance(self, value: Any, at_volts: float) -> float:
        """Current compliance (A) for forcing up to ``at_volts``: > 0 and deliverable."""
        comp = _number("current compliance", value)
        if comp <= 0:
            raise LimitError(f"current compliance {comp:g} A must be > 0 (magnitude)")
        top = self.model.i_capability(at_volts)
        if comp > top:
            raise LimitError(
                f"current compliance {comp:g} A exceeds the {top:g} A the {self._where()} "
                f"delivers at {at_volts:g} V"
            )
        return comp

    def check_voltage_compliance(self, value: Any, at_amps: float) -> float:
        """Voltage compliance (V) for forcing up to ``at_amps``: > 0, within the module,
        and low enough that the module can still deliver ``at_amps``."""
        comp = _number("voltage compliance", value)
        if comp <= 0:
            raise LimitError(f"voltage compliance {comp:g} V must be > 0 (magnitude)")
        if comp > self.model.v_max:
            raise LimitError(f"voltage compliance {comp:g} V is outside ±{self.model.v_max:g} V of the {self._where()}")
        top = self.model.i_capability(comp)
        if at_amps > top:
            raise LimitError(
                f"current {at_amps:g} A exceeds the {top:g} A the {self._where()} delivers "
                f"with a {comp:g} V compliance"
            )
        return comp

    def range_code(self, kind: str, value: int | str, measure: bool = False) -> int:
        """FLEX range code for ``value`` (a code or a name such as ``"1 nA"``), checked
        against this module with pymeasure's range tables; ``measure`` allows negative
        (fixed) codes. Voltage alias codes 11-15 are sent as their canonical codes."""
        ranging = self._v_ranging if kind == "V" else self._i_ranging
        table = ranging.meas if measure else ranging.output
        if isinstance(value, bool) or not isinstance(value, (int, str)):
            raise LimitError(f"{'voltage' if kind == 'V' else 'current'} range must be a code or a name, got {value!r}")
        try:
            code = int(table(value).index)
        except ValueError:
            raise LimitError(
                f"{'voltage' if kind == 'V' else 'current'} range {value!r} is not available "
                f"{'for measuring' if measure else 'for output'} on the {self._where()}"
            ) from None
        if kind == "V":
            code = int(math.copysign(_V_ALIASES.get(abs(code), abs(code)), code)) if code else 0
        return code


# -------------------------------------------------------------------- instrument


class KeysightB1500A(GuardedInstrument):
    """Keysight B1500A with SMU modules, FLEX over any pymeasure adapter.

    :param adapter: VISA resource string or pymeasure adapter.
    :param name: name used in messages and :class:`InstrumentError`.
    :param modules: slot -> model (or a sequence in slot order, ``None`` for empty
        slots); ``None`` asks the instrument (``UNT?``).
    :param kwargs: passed to pymeasure's ``VISAAdapter`` when ``adapter`` is a string;
        read/write termination default to CR/LF, what FLEX uses.
    """

    smus: dict[int, SMU]

    def __init__(
        self,
        adapter: Any,
        name: str = "Keysight B1500A",
        modules: Mapping[int, str] | Sequence[str | None] | None = None,
        **kwargs: Any,
    ) -> None:
        kwargs.setdefault("read_termination", "\r\n")
        kwargs.setdefault("write_termination", "\r\n")
        super().__init__(adapter, name, includeSCPI=False, **kwargs)
        self.smus = {}
        try:
            found = self.installed_modules if modules is None else self._normalize_modules(modules)
        except BaseException:
            self.adapter.close()  # a half-opened link must not hold the instrument's one session
            raise
        self.modules: dict[int, str] = found
        for slot, model in sorted(found.items()):
            if model in SMU_MODELS:
                self.add_child(SMU, slot, collection="smus", prefix="smu", model=model)
            else:
                log.info("%s: slot %d holds %s, not an SMU this driver knows", name, slot, model)

    @staticmethod
    def _normalize_modules(modules: Mapping[int, str] | Sequence[str | None]) -> dict[int, str]:
        items = modules.items() if isinstance(modules, Mapping) else enumerate(modules, start=1)
        out: dict[int, str] = {}
        for slot, model in items:
            slot = _integer("slot", slot)
            if not 1 <= slot <= N_SLOTS:
                raise LimitError(f"slot {slot} does not exist: a B1500A has slots 1-{N_SLOTS}")
            if model:
                out[slot] = str(model)
        return out

    # ------------------------------------------------------------- properties
    id = Instrument.measurement(
        "*IDN?", """Get the identity string (``*IDN?``).""", cast=str, maxsplit=0, get_process=str.strip
    )

    complete = Instrument.measurement(
        "*OPC?", """Get '1' once pending operations are complete (``*OPC?``).""",
        cast=str, maxsplit=0, get_process=str.strip,
    )

    installed_modules = Instrument.measurement(
        "UNT?",
        """Get the installed modules as {slot: model} (``UNT?``), empty slots left out.""",
        cast=str,
        maxsplit=0,
        get_process=_parse_unt,
    )

    next_error = Instrument.measurement(
        "ERRX?",
        """Get the oldest error as (code, text) and remove it from the queue (``ERRX?``);
        (0, 'No Error.') when the queue is empty.""",
        cast=str,
        maxsplit=0,
        get_process=_parse_errx,
    )

    auto_zero = Instrument.setting(
        "AZ %d",
        """Set the auto-zero of the high-resolution ADC (``AZ``): True doubles its
        conversion time and removes offset drift.""",
        validator=strict_discrete_set,
        values={True: 1, False: 0},
        map_values=True,
        check_set_errors=True,
    )

    timestamps = Instrument.setting(
        "TSC %d",
        """Set whether ``XE`` results carry a time element per channel (``TSC``).""",
        validator=strict_discrete_set,
        values={True: 1, False: 0},
        map_values=True,
        check_set_errors=True,
    )

    # ------------------------------------------------------ communication guard





    # ----------------------------------------------------------------- errors
    def clear_errors(self) -> list[tuple[int, str]]:
        """Read ``ERRX?`` until the queue is empty; return what was there (oldest first)."""
        errors: list[tuple[int, str]] = []
        for _ in range(31):  # the queue holds 30 entries
            # what next_error reads, without pymeasure's generic reply processing:
            # this check follows every setting (~10k times in the demo)
            code, text = _parse_errx(self.ask("ERRX?").strip())
            if code == 0:
                break
            errors.append((code, text))
        return errors

    def drain_errors(self) -> list[tuple[int, str]]:
        """Empty the error queue and return what was there (no raise)."""
        return self.clear_errors()

    def check_errors(self) -> list:
        """Empty the error queue; raise InstrumentError with the first error's code and
        text (the others are logged), else return []. pymeasure calls this after every
        setting declared with ``check_set_errors=True``."""
        errors = self.clear_errors()
        if not errors:
            return []
        for code, text in errors[1:]:
            log.error("%s: further error %d: %s", self.name, code, text)
        raise InstrumentError(self.name, *errors[0])

    def query_data(self, command: str) -> str:
        """Send a measurement command and read its data line.

        A FLEX command that fails produces no data, so a read timeout is first put to
        ``ERRX?``: an instrument error becomes InstrumentError with its text, otherwise
        the timeout stands as InstrumentCommunicationError.
        """
        self.write(command)
        try:
            return self.read()
        except InstrumentCommunicationError as exc:
            if not _is_timeout(exc.__cause__):
                raise
            try:
                errors = self.clear_errors()
            except InstrumentCommunicationError:
                raise exc from exc.__cause__
            if errors:
                raise InstrumentError(self.name, *errors[0]) from exc
            raise

    def _configure(self, command: str) -> None:
        self.write(command)
        self.check_set_errors()

    # ----------------------------------------------------------------- system
    def reset(self) -> None:
        """``*RST``: outputs off, defaults back. FLEX keeps the error queue across
        ``*RST``, so it is emptied afterwards; errors found there belong to earlier
        commands and are logged, not raised, so that a reset always gives a clean start."""
        self.write("*RST")
        for code, text in self.clear_errors():
            log.warning("%s: error left from before *RST: %d: %s", self.name, code, text)

    def smu(self, channel: int) -> SMU:
        """The SMU in slot ``channel``; LimitError if there is none."""
        n = _integer("channel", channel)
        if not 1 <= n <= N_SLOTS:
            raise LimitError(f"channel {n} does not exist: B1500A channels are slots 1-{N_SLOTS}")
        smu = self.smus.get(n)
        if smu is None:
            held = self.modules.get(n, "nothing")
            raise LimitError(
                f"channel {n} is not an SMU (slot {n} holds {held}); SMUs are in slots "
                f"{', '.join(map(str, self.smus)) or 'none'}"
            )
        return smu

    def _channel_list(self, channels: Iterable[int], what: str = "channels") -> list[int]:
        chans = [self.smu(c).id for c in channels]
        if len(set(chans)) != len(chans):
            raise LimitError(f"{what} {chans} name a channel twice")
        return chans

    def _all_or(self, mnemonic: str, channels: Sequence[int]) -> None:
        chans = self._channel_list(channels)
        self._configure(mnemonic + (" " + ",".join(map(str, chans)) if chans else ""))

    def enable_outputs(self, *channels: int) -> None:
        """Close output switches (``CN``); no argument: all channels."""
        self._all_or("CN", channels)

    def disable_outputs(self, *channels: int) -> None:
        """Open output switches (``CL``); no argument: all channels."""
        self._all_or("CL", channels)

    def enabled_channels(self) -> set[int]:
        """Channels whose output switch is closed, read back from the instrument
        (``*LRN? 0`` answers ``CN1,2,...`` or ``CL``): the proof that outputs are off."""
        reply = self.ask("*LRN? 0").strip()
        if reply.upper().startswith("CL") and len(reply) <= 3:
            return set()
        if not reply.upper().startswith("CN"):
            raise DataFormatError(f"{self.name}: unexpected reply {reply!r} to '*LRN? 0'")
        try:
            return {int(x) for x in reply[2:].split(",") if x.strip()}
        except ValueError:
            raise DataFormatError(f"{self.name}: unexpected reply {reply!r} to '*LRN? 0'") from None

    def zero_outputs(self, *channels: int) -> None:
        """Force 0 V on enabled channels (``DZ``); no argument: all channels."""
        self._all_or("DZ", channels)

    def abort(self) -> None:
        """Abort a running measurement (``AB``); outputs keep their levels."""
        self._configure("AB")

    def set_integration(
        self,
        adc: Literal["high_speed", "high_resolution", "pulsed"],
        mode: Literal["auto", "manual", "plc", "time"],
        value: float | None = None,
    ) -> None:
        """Integration time of an ADC type (``AIT adc,mode[,N]``). ``plc`` takes a number
        of power-line cycles, ``time`` seconds, ``auto``/``manual`` an averaging count."""
        a = _choice("adc", adc, _ADC)
        m = _choice("adc mode", mode, _ADC_MODES)
        allowed = {
            (0, 0): (1, 1023), (0, 1): (1, 1023), (0, 2): (1, 100), (0, 3): (2e-6, 20e-3),
            (1, 0): (1, 127), (1, 1): (1, 127), (1, 2): (1, 100), (2, 3): (2e-6, 20e-3),
        }.get((a, m))
        if allowed is None:
            raise LimitError(f"the {adc} ADC has no {mode!r} mode")
        command = f"AIT {a},{m}"
        if value is not None:
            n = _within("integration value", value, *allowed, "s" if m == 3 else "")
            if m != 3 and not float(n).is_integer():
                raise LimitError(f"integration value {n:g} must be an integer in {mode!r} mode")
            command += f",{flex_number(n)}"
        self._configure(command)

    # -------------------------------------------------------- staircase sweep
    def staircase_sweep(
        self,
        channel: int,
        start: float,
        stop: float,
        steps: int,
        compliance: float,
        *,
        measure: Sequence[int] | None = None,
        source: Literal["voltage", "current"] = "voltage",
        mode: Literal["linear", "log", "linear_two_way", "log_two_way"] = "linear",
        output_range: int | str = 0,
        power_compliance: float | None = None,
        hold: float = 0.0,
        delay: float = 0.0,
        step_delay: float | None = None,
        abort_on_compliance: bool = True,
        end_at: Literal["start", "stop"] = "start",
    ) -> SweepResult:
        """Run a staircase sweep on ``channel`` and return every step.

        Sends ``WV``/``WI``, ``WT``, ``WM``, ``MM 2``, ``FMT 1,1`` (each checked with
        ``ERRX?``), then ``XE`` and reads one data line. The measured channels (default:
        the source channel) and the source must already be enabled; fixed levels on other
        channels are set beforehand with ``force_voltage``.

        :param steps: number of steps from start to stop (1-1001); two-way modes return
            ``2 * steps`` points.
        :param compliance: current (A) for a voltage sweep, voltage (V) for a current sweep.
        :param abort_on_compliance: ``WM 2``: stop at the first step in compliance or
            overflow; the remaining steps come back as status V, NaN.
        :param end_at: where the source stays after the sweep (``WM`` post).
        """
        smu = self.smu(channel)
        kind = _SOURCE.get(source) if isinstance(source, str) else None
        if kind is None:
            raise LimitError(f"source must be 'voltage' or 'current', got {source!r}")
        sweep_mode = _choice("sweep mode", mode, _SWEEP_MODES)
        n = _integer("steps", steps)
        if not 1 <= n <= MAX_SWEEP_STEPS:
            raise LimitError(f"steps {n} is outside 1..{MAX_SWEEP_STEPS}: an empty or too long sweep")
        check_level = smu.check_voltage if kind == "V" else smu.check_current
        a, b = check_level("sweep start", start), check_level("sweep stop", stop)
        if sweep_mode in (2, 4) and (a == 0 or b == 0 or (a > 0) != (b > 0)):
            raise LimitError(f"a log sweep needs start and stop of one sign and non-zero, got {a:g}..{b:g}")
        peak = max(abs(a), abs(b))
        comp = (smu.check_current_compliance(compliance, peak) if kind == "V"
                else smu.check_voltage_compliance(compliance, peak))
        code = smu.range_code(kind, output_range)
        meas = self._channel_list([channel] if measure is None else measure, "measure channels")
        if not meas:
            raise LimitError("measure names no channel: a sweep must measure at least one")
        pcomp = None if power_compliance is None else _within(
            "power compliance", power_compliance, 1e-3, smu.model.p_max, "W")
        hold_s = _within("hold time", hold, 0.0, 655.35, "s")
        delay_s = _within("step delay", delay, 0.0, 65.535, "s")
        sdelay = None if step_delay is None else _within("step measurement delay", step_delay, 0.0, 1.0, "s")
        if end_at not in ("start", "stop"):
            raise LimitError(f"end_at must be 'start' or 'stop', got {end_at!r}")

        wv = (f"W{kind} {smu.id},{sweep_mode},{code},{flex_number(a)},{flex_number(b)},{n},"
              f"{flex_number(comp)}" + ("" if pcomp is None else f",{flex_number(pcomp)}"))
        wt = f"WT {flex_number(hold_s)},{flex_number(delay_s)}" + ("" if sdelay is None else f",{flex_number(sdelay)}")
        wm = f"WM {2 if abort_on_compliance else 1},{1 if end_at == 'start' else 2}"
        mm = "MM 2," + ",".join(map(str, meas))
        for command in (wv, wt, wm, mm, "FMT 1,1"):
            self._configure(command)
        line = self.query_data("XE")
        return parse_sweep(
            line,
            source_channel=smu.id,
            source_kind=kind,
            measure_channels=meas,
            steps=n * (2 if sweep_mode in (3, 4) else 1),
        )

    # ------------------------------------------------------------ pulsed spot
    def pulsed_spot(
        self,
        channel: int,
        base: float,
        pulse: float,
        width: float,
        compliance: float,
        *,
        source: Literal["voltage", "current"] = "voltage",
        hold: float = 0.0,
        period: float | None = None,
        output_range: int | str = 0,
        measure_channel: int | None = None,
    ) -> Reading:
        """One pulse from ``base`` to ``pulse`` on ``channel``, measured during the pulse.

        Sends ``PT hold,width[,period]``, ``PV``/``PI``, ``MM 3,ch`` (each checked), then
        ``XE`` and reads the reading. ``period=None`` lets the instrument choose it.
        """
        smu = self.smu(channel)
        kind = _SOURCE.get(source) if isinstance(source, str) else None
        if kind is None:
            raise LimitError(f"source must be 'voltage' or 'current', got {source!r}")
        check_level = smu.check_voltage if kind == "V" else smu.check_current
        b, p = check_level("pulse base", base), check_level("pulse level", pulse)
        peak = max(abs(b), abs(p))
        comp = (smu.check_current_compliance(compliance, peak) if kind == "V"
                else smu.check_voltage_compliance(compliance, peak))
        w = _within("pulse width", width, 5e-4, 2.0, "s")
        hold_s = _within("hold time", hold, 0.0, 655.35, "s")
        if period is not None:
            per = _within("pulse period", period, 5e-3, 5.0, "s")
            margin = 2e-3 if w <= 0.1 else 10e-3
            if per < w + margin - 1e-12:
                raise LimitError(f"pulse period {per:g} s must be at least width + {margin:g} s = {w + margin:g} s")
        code = smu.range_code(kind, output_range)
        target = smu.id if measure_channel is None else self.smu(measure_channel).id

        pt = f"PT {flex_number(hold_s)},{flex_number(w)}" + ("" if period is None else f",{flex_number(per)}")
        pv = f"P{kind} {smu.id},{code},{flex_number(b)},{flex_number(p)},{flex_number(comp)}"
        for command in (pt, pv, f"MM 3,{target}"):
            self._configure(command)
        return Reading.from_elements(parse_data(self.query_data("XE")), channel=target)

    # ---------------------------------------------------------------- shutdown
    def safe_off(self) -> None:
        """Safe state: ``DZ`` (every level to 0 V) then ``CL`` (every output open).

        No ``ERRX?`` in between: an old error must not stop the outputs from going off.
        Both commands are attempted even if the first fails; a communication failure is
        re-raised afterwards, because the caller must know the safe state is unproven.
        """
        failure: InstrumentCommunicationError | None = None
        for command in ("DZ", "CL"):
            try:
                self.write(command)
            except InstrumentCommunicationError as exc:
                log.error("%s: safe-off %s failed: %s", self.name, command, exc)
                failure = failure or exc
        if failure is not None:
            raise failure

    def shutdown(self) -> None:
        """:meth:`safe_off`, then pymeasure's shutdown."""
        try:
            self.safe_off()
        finally:
            super().shutdown()
