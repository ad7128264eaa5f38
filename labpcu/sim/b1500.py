"""Keysight B1500A emulator: the FLEX commands standard clients send, on the shared bench.

The multi-channel analyzer role is filled by a B1500A with four B1517A HR-SMUs. This
module answers FLEX messages the way the instrument does (see
``shared/reference/instruments.md`` section C) so that drivers can be tested without
hardware: it keeps each channel's force settings, pushes them to the simulated bench
terminal ``f"{name}.{slot}"``, reads the bench back, adds range-dependent instrument
noise and formats the data in every ASCII ``FMT``. Clients checked against it: labpcu's
driver, pymeasure's ``AgilentB1500`` unmodified (``tests/test_pymeasure_b1500.py``) and
guide-style FLEX scripts (``tests/test_sim_b1500_conformance.py``).

Implemented commands (case-insensitive; several per message joined by ``;``):

=====================  ==============================================================
common                 ``*IDN?`` ``*RST`` ``*OPC?`` ``*OPC`` ``*WAI`` ``*CLS`` ``*STB?``
                       ``*SRE`` ``*SRE?`` ``*ESE`` ``*ESE?`` ``*ESR?`` ``*TST?`` ``*CAL?``
system                 ``UNT? [0]`` ``ERRX? [0|1]`` ``ERR? [0|1]`` ``LOP?`` ``DIAG?``
                       ``CA`` ``CM`` ``RCV`` ``ACH`` ``TM`` ``PA`` ``PAD``
learn                  ``*LRN?`` types 0, 1-10, 30, 31, 32, 33, 34, 46, 53, 54, 55, 56,
                       57, 60, 110
outputs                ``CN`` ``CL`` ``DZ`` ``RZ`` (no argument = all channels) ``SSR``
force                  ``DV`` ``DI``
spot (immediate)       ``TI`` ``TV`` ``TIV`` ``TTI`` ``TTV`` ``TTIV``
measurement set-up     ``MM`` (1 spot, 2 staircase, 3 pulsed spot) ``CMM`` ``RI`` ``RV``
                       ``RM`` ``AAD`` ``AIT`` ``AV`` ``AZ`` ``FL`` ``FMT`` ``WAT``
staircase sweep        ``WV`` ``WI`` ``WSV`` ``WSI`` ``WT`` ``WM``
pulsed spot            ``PT`` ``PV`` ``PI``
trigger and buffer     ``XE`` ``AB`` ``BC`` ``NUB?`` ``RMD?`` ``TSC`` ``TSR`` ``TSQ``
=====================  ==============================================================

Not emulated (error 100 "Undefined GPIB command", or 120 for an unknown ``*LRN?``
type): sampling (``MM 10``, ``MV``, ``MI``, ``ML``, ``MT``, ``MSC``, ``*LRN? 47``),
pulsed sweep and the other ``MM`` modes, search (``LGI``, ``LGV``, ``LSV``, ...), CMU,
SPGU, WGFMU and selector commands (``ERMOD``, ``ERSSP``), binary formats ``FMT 3/4/13/14``,
``*OPT?``, ``SYST:ERR?`` (not FLEX), ``UNT? 1``, ``ERRX? 2``, ``*LRN?`` types 37, 38,
40, 47, 49-51, 58, 59, 61-64, 70, 71, trigger ports (``TGP`` ...), digital I/O.

Choices where the manual could not be checked (fact sheet: [unverified]) — each is
the most plausible behaviour and is pinned by ``tests/test_sim_b1500.py`` and
``tests/test_sim_b1500_conformance.py``:

* Errors. Codes 100, 102, 103, 120–124 and 200 and their texts are those of the FLEX
  error table of the sibling E5270B (public drivers and tests). The text of 121 is
  adapted to ten slots. A channel number that names an empty slot gives 126
  "Specified channel is not installed." (code and text not verified). Errors about
  one channel carry the ``; SLOTn`` suffix that ``ERRX?`` shows for module errors.
  A wrong number of parameters is 103, as the E5270B table says ("the number of
  parameters will be incorrect"). ``XE`` without the set-up it needs (no ``MM``, no
  ``WV``/``WI`` for ``MM 2``, no ``PV``/``PI`` for ``MM 3``) gives 120.
* ``ERRX?`` returns ``+0,"No Error."`` when empty and ``+code,"text"`` otherwise
  (signed, as QCoDeS's simulation and PyMeasure's tests show). ``ERR?`` returns four
  codes padded with 0 (``100,0,0,0``) and empties the queue; ``ERR? 1`` returns and
  removes one code. The queue holds 30 entries (Emulator base behaviour).
* A message stops at the first command that errs; the commands after it in the same
  ``;``-joined message are not executed. Every command validates all of its
  parameters before it changes anything, so a failing command changes nothing.
* Each query in a ``;``-joined message gives its own CR/LF-terminated reply line.
* Status byte (``*STB?``): bit 4 (16) set ready, bit 5 (32) error, bit 6 (64) RQS and
  bit 7 always 0 are the Programming Guide's (Edition 11, "Status Byte"); bit 0 (1)
  data ready (unread output when ``*STB?`` arrives) and bits 1 (wait) and 3 (interlock
  open), never set here, are the FLEX family's [unverified]. The error bit is set by
  any error and cleared by ``*RST``, ``ERR?``, ``ERRX?``, ``CA``, ``*TST?``, ``*CAL?``,
  ``DIAG?`` and ``*CLS`` (the guide's list, plus ``*CLS``); RQS = any bit enabled by
  ``*SRE``. ``*ESR?`` uses IEEE 488.2 bits [unverified for FLEX]: 1 ``*OPC``, 16
  errors from 120 up (execution), 32 errors below 120 (command), 128 power on; read
  clears it. ``*CLS`` clears the error bit, ``*ESR?`` and the error queue. ``*SRE``,
  ``*ESE`` and ``*ESR?`` survive ``*RST``.
* ``*TST? [slot[,option]]``, ``*CAL? [slot]``, ``CA [slot]`` always pass (``0``) and open
  every output switch first, as the instrument needs the outputs off for them.
  ``DIAG? item`` (items 1, 3, 4, 5, 7, 8) always answers 0. ``RCV`` is accepted
  (no module ever fails). ``CM``, ``TM``, ``PAD``, ``SSR``, ``RM`` and ``WAT`` are
  kept and reported by ``*LRN?`` but change nothing: auto calibration, triggers,
  parallel measurement, the series resistor, auto ranging rates and wait times do
  not alter the simulated readings or timing. ``PA s`` (0–655.35 s) moves the
  simulated clock.
* ``LOP?``: ``LOP`` then one 2-digit state per slot: 00 off or empty, 01 forcing V,
  02/03 forcing +I/−I, 11 in voltage compliance, 12/13 in +/− current compliance.
* ``ACH actual,program`` makes channel number ``program`` address slot ``actual`` in
  every later command; ``ACH`` alone clears the mappings (``*RST`` too).
* ``TSQ`` answers one time element (channel letter ``Z``, in the current ``FMT``).
* ``RMD? [count]`` answers the first ``count`` unread data elements (0 or none: all)
  as one line and leaves the rest unread behind it; it assumes the unread output is
  measurement data (it is after ``XE``). Not confirmed in the Programming Guide.
* ``*LRN?`` replies. Type 0: ``CN1,2`` or ``CL``. Types 1–10: ``DVn,vrange,V,Icomp,
  pol,irange`` / ``DIn,irange,I,Vcomp,pol,vrange`` with the ranges in use (the output
  range holding the level, at least the commanded one; the compliance-side range
  holding the compliance), or ``CLn``; numbers as in the one public transcript
  ``DV1,200,+00.0000E+00,+100.000E-06,0,16`` (voltages ``sdd.ddddE+00``, currents
  engineering ``sddd.dddEsdd``). 30: ``FL0``, ``FL1`` or ``FL0,a,b;FL1,c``. 31:
  ``TMn;AVn,m;CMn;FMTf,m[;MMm,ch...]`` (AV mirrors AIT 0: auto/manual N, PLC as −N).
  32: ``RIn,r;RVn,r`` per SMU. 33: ``WMa,p;WTh,d,s,t,m`` then ``WVn,...``/``WSVn,...``
  when set (times with a decimal point, ``WT0.0,0.0,...`` as QCoDeS's simulation).
  34: ``PTh,w,p,t[;PVn,range,base,pulse,comp]``. 46: ``CMMn,m``. 53: ``SSRn,s``. 54:
  ``RMn,mode,rate``. 55: ``AADn,a;AADn,2;`` per SMU joined by ``;`` (the doubled ``;``
  a B1500A sends). 56: ``AIT0,m,N;AIT1,m,N;AIT2,m,N;AZn``. 57: ``WAT1,N,offset;WAT2,...``.
  60: ``TSCn``. 110: ``PADn`` (the type pymeasure reads PAD from). Type 47 and the
  other types are not emulated (120); an empty slot gives 126.
* Compliance defaults when omitted: 100 µA for ``DV``/``PV``/``WV``/``WSV``, 2 V for
  ``DI``/``PI``/``WI``/``WSI``. ``CN`` sets 0 V with 100 µA compliance. Compliance
  polarity (``pol``) is kept and reported, but the bench limits the magnitude only. A
  compliance above what the module can deliver at the output level (B1517A: 100 mA up
  to 20 V, 50 mA up to 40 V, 20 mA up to 100 V) gives 123.
* Range codes follow the global FLEX table; a code below the module's smallest range
  means its smallest range (the B1517A has no 0.2 V range and, without an ASU, no
  1 pA range), a code above its largest gives 124. Output ranges are limited auto.
  Measurement ranges: 0 auto (smallest range holding the value), ``+code`` limited
  auto, ``-code`` fixed. A reading beyond 1.15 × the range is an overflow: status
  ``V`` and value ``199.999E+99``.
* Data formats. FMT 1/5: ``SCT`` header (status, channel, type letter) and the
  12-character number ``sddd.dddEsdd``; FMT 2: the number only; FMT 11/15: header and
  a 13-character number ``sddd.ddddEsdd`` (one more decimal; layout [unverified]);
  FMT 12 and 22: that number only; FMT 21/25: 3-digit numeric status (0 normal, 1
  overflow, 4 other channel in compliance, 8 this channel in compliance, 128 last
  sweep step), channel letter, type letter (lower case ``v``/``i`` for source data),
  13-character number. The 13-digit overflow is ``+199.9990E+99``. ``FMT 5/15/25``
  (comma terminator) are treated like 1/11/21: a reply ending in ``,`` cannot be
  framed by a line-based transport. ``FMT`` modes 0–2: mode 1 adds the primary sweep
  source, mode 2 the synchronous source (nothing without one).
* Element number: exponent = the engineering exponent of the measurement range
  (1 nA → E-09, 100 µA → E-06, 0.5 V → E-03, 2–100 V → E+00), raised by 3 while the
  mantissa would reach 1000. This reproduces ``NAI+000.005E-09`` for 5 pA on the 1 nA
  range and shows the 12-digit format's limited resolution on purpose. Source elements
  use the sweep's output range, time elements E+00.
* Status letters, highest priority first: ``V`` overflow, ``C`` this channel in
  compliance, ``T`` another enabled channel in compliance, ``N``. Sweep source data is
  ``W`` for intermediate steps and ``E`` for the last.
* Staircase: two-way sweeps measure the stop value twice (2·N steps). With ``WM 2``
  (auto abort, the default) a step with status C/T/V ends the sweep; the remaining
  steps are returned as ``V`` / ``199.999E+99`` so that the element count stays
  fixed, and the source returns to the start value. ``WT`` trigger and measure
  delays (``tdelay``/``mdelay``) are accepted and ignored (no trigger ports). The
  synchronous source (``WSV``/``WSI``) steps with the primary one (same mode and step
  count, its own start/stop, compliance and power compliance); it must be another
  channel and on, and goes to its start or stop value after the sweep as ``WM`` says.
* Pulsed spot: the bench sees base during hold, pulse during width, base again for
  the rest of the period (auto period = width + 2 ms, or + 10 ms above 100 ms, at
  least 5 ms). The reading integrates over the last min(width/4, 1 ms) of the pulse.
  The pulse channel is the one named by ``PV``/``PI``; ``MM 3,ch`` names the channel
  that is read (normally the same one).
* Timing model of the ADCs (simulated clock, not instrument specifications): high
  speed auto N → N ms, manual N → N × 20 µs, PLC N → N/line frequency, time mode N →
  N s; high resolution auto N → N/6 PLC, manual N → N × 80 µs, PLC N → N PLC, and
  auto-zero (``AZ 1``, default) doubles the high-resolution conversion time. ``AV n``
  maps to ``AIT 0``. A reading is the bench at the middle of its integration (the
  window's average to first order), after ``WT`` hold and delay in a staircase.
  Errors per module and range (:mod:`labpcu.sim.accuracy`, data-sheet tables of the
  B1517A and B1511B): a fixed gain, offset and output-voltage term per channel and
  range (``instrument_accuracy``) and the range's noise × k, k = sqrt(1 ms /
  integration time) (clipped to 0.1–30), halved on the high-resolution ADC
  (``instrument_noise``). The output is the programmed level (force accuracy is
  tabulated, not applied). ``WAT`` (the instrument's automatic wait times, whose base
  values are not published) adds no time.
* With ``TSC 1`` every channel's data in an ``XE`` result is preceded by a time
  element; the timer starts at power-on, ``*RST`` and ``TSR``. ``TI``/``TV``/``TIV``
  ignore ``TSC`` (their ``TT…`` forms carry the time). ``FMT`` modes 1/2 add source data
  to staircase results only (spot and pulsed spot have no sweep source).
* Power compliance (``WV``/``WI``/``WSV``/``WSI`` ``Pcomp``, 1 mW–2 W) lowers each step's
  compliance to Pcomp/|output|.
* ``*RST`` turns every output off, restores defaults, clears the output buffer and
  the error bit, and keeps the error queue. ``AB`` is a no-op (measurements here
  complete inside ``XE``).
* ``NUB?`` counts the data elements (measured, source and time) still unread.
* Over a TCP socket each reply leaves as soon as it is made, as from a LAN
  instrument: ``BC`` after ``XE`` clears nothing there, the data are already sent.
"""


from __future__ import annotations

import math
import re
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, NamedTuple

from labpcu.sim.accuracy import AccuracyTable, ChannelErrors, b1500_table, seed_of
from labpcu.sim.emulator import Emulator
from labpcu.sim.physics import DEFAULT_PHYSICS, Physics

# --------------------------------------------------------------------------- tables
#: FLEX voltage range codes → full scale (V)
V_RANGES: dict[int, float] = {
    2: 0.2, 5: 0.5, 20: 2.0, 50: 5.0, 200: 20.0, 400: 40.0, 1000: 100.0, 2000: 200.0,
}
#: FLEX current range codes → full scale (A)
I_RANGES: dict[int, float] = {
    8: 1e-12, 9: 1e-11, 10: 1e-10, 11: 1e-9, 12: 1e-8, 13: 1e-7, 14: 1e-6,
    15: 1e-5, 16: 1e-4, 17: 1e-3, 18: 1e-2, 19: 0.1, 20: 1.0,
}
OVERRANGE = 1.15  # a reading up to 115 % of the range is still valid [unverified]
OVERFLOW_TEXT = "+199.999E+99"
OVERFLOW_TEXT13 = "+199.9990E+99"  # [unverified] the 13-digit form of the same value
DEFAULT_ICOMP = 1e-4  # A, when DV/PV/WV omit it
DEFAULT_VCOMP = 2.0  # V, when DI/PI/WI omit it
LINE_FREQUENCY = 50.0  # Hz, for PLC-based integration times

NOISE_REF_APERTURE = 1e-3  # s, integration time at which the data-sheet noise figures apply


@dataclass(frozen=True, slots=True)
class ModuleSpec:
    """What one SMU module model can do (ranges, output envelope)."""

    model: str
    v_codes: tuple[int, ...]
    i_codes: tuple[int, ...]
    v_max: float
    i_max: float
    #: (|V| up to, |I| max) pairs, ascending: the output power envelope
    envelope: tuple[tuple[float, float], ...]

    @property
    def v_ranges(self) -> list[float]:
        return [V_RANGES[c] for c in self.v_codes]

    @property
    def i_ranges(self) -> list[float]:
        return [I_RANGES[c] for c in self.i_codes]

    def i_capability(self, volts: float) -> float:
        """Largest current the module can deliver at ``|volts|``."""
        for v_top, i_top in self.envelope:
            if abs(volts) <= v_top * (1 + 1e-12):
                return i_top
        return 0.0


#: Installable modules. The B1517A HR-SMU: ±100 V, ±100 mA (50 mA above 20 V,
#: 20 mA above 40 V), ranges 0.5 V–100 V and 10 pA–100 mA (1 pA needs an ASU). The
#: B1511B MP-SMU: the same envelope, current ranges from 1 nA.
_HRSMU = ModuleSpec(
    "B1517A",
    v_codes=(5, 20, 50, 200, 400, 1000),
    i_codes=tuple(range(9, 20)),
    v_max=100.0,
    i_max=0.1,
    envelope=((20.0, 0.1), (40.0, 0.05), (100.0, 0.02)),
)
MODULES: dict[str, ModuleSpec] = {
    "B1517A": _HRSMU,
    "B1511B": replace(_HRSMU, model="B1511B", i_codes=tuple(range(11, 20))),
}
DEFAULT_MODULES: tuple[str | None, ...] = ("B1517A",) * 4 + (None,) * 6
SLOT_LETTERS = "ABCDEFGHIJ"


class FlexError(Exception):
    """A command failed; ``handle`` puts it in the error queue and stops the message."""

    def __init__(self, code: int, message: str, slot: int | None = None) -> None:
        text = message if slot is None else f"{message}; SLOT{slot}"
        super().__init__(code, text)
        self.code = code
        self.text = text


# FLEX error table. Verified for the E5270B (same FLEX family) unless marked.
E_UNDEFINED = (100, "Undefined GPIB command.")
E_NUMERIC = (102, "Incorrect numeric data syntax.")
E_TERMINATOR = (103, "Incorrect terminator position.")  # wrong parameter count
E_PARAM = (120, "Incorrect parameter value.")
E_CHANNEL = (121, "Channel number must be 1 to 10, or 101 to 1002.")  # text adapted
E_NCHANNELS = (122, "Number of channels must be corrected.")
E_COMPLIANCE = (123, "Compliance must be set correctly.")
E_RANGE = (124, "Incorrect range value for this channel.")
E_NOT_INSTALLED = (126, "Specified channel is not installed.")  # [unverified] pick
E_OUTPUT_OFF = (200, "Channel output switch must be ON.")

# Status byte (*STB?, serial poll). Bits 4-7 as the B1500A Programming Guide (Edition 11,
# "Status Byte") describes them; bits 0-3 [unverified] from the FLEX family.
STB_DATA_READY = 1  # the output buffer holds something to read
STB_WAIT = 2  # waiting for a trigger (never here: no trigger ports)
STB_INTERLOCK_OPEN = 8  # never here: the simulated interlock is closed
STB_SET_READY = 16  # the last command has completed (always, when *STB? is answered)
STB_ERROR = 32  # an error occurred; cleared by *RST, ERR?, ERRX?, CA, *TST?, *CAL?, DIAG?, *CLS
STB_RQS = 64  # an unmasked bit is set (*SRE mask)
# Standard event status register (*ESR?), IEEE 488.2 bit meanings [unverified for FLEX]
ESR_OPC = 1
ESR_EXECUTION_ERROR = 16  # errors 120 and above
ESR_COMMAND_ERROR = 32  # errors below 120 (undefined command, syntax, parameter count)
ESR_POWER_ON = 128


def _fail(err: tuple[int, str], slot: int | None = None) -> FlexError:
    return FlexError(err[0], err[1], slot)


# ------------------------------------------------------------------------ formatting
def eng_exponent(full_scale: float) -> int:
    """Engineering exponent (multiple of 3) of a range's full scale: 1e-8 → -9."""
    return 3 * math.floor(math.log10(full_scale) / 3 + 1e-9)


def format_number(value: float | None, exponent: int) -> str:
    """The 12-character FMT 1 number ``sddd.dddEsdd``; None or non-finite = overflow."""
    if value is None or not math.isfinite(value):
        return OVERFLOW_TEXT
    e = exponent
    while True:
        mantissa = round(value / 10.0**e, 3)
        if abs(mantissa) < 1000.0:
            break
        e += 3
    if e > 99:
        return OVERFLOW_TEXT
    if mantissa == 0.0:
        mantissa = 0.0  # no "-000.000"
    return f"{mantissa:+08.3f}E{e:+03d}"


def format_number13(value: float | None, exponent: int) -> str:
    """The 13-character number of FMT 11/12/21/22 ``sddd.ddddEsdd``: FMT 1's layout with
    one more decimal; None or non-finite = overflow ``+199.9990E+99``."""
    if value is None or not math.isfinite(value):
        return OVERFLOW_TEXT13
    e = exponent
    while True:
        mantissa = round(value / 10.0**e, 4)
        if abs(mantissa) < 1000.0:
            break
        e += 3
    if e > 99:
        return OVERFLOW_TEXT13
    if mantissa == 0.0:
        mantissa = 0.0
    return f"{mantissa:+09.4f}E{e:+03d}"


def lrn_number(value: float, kind: str) -> str:
    """A value in a ``*LRN?`` reply, as in the one public instrument transcript
    (``DV1,200,+00.0000E+00,+100.000E-06,0,16``): voltages ``sdd.ddddE+00`` (``sddd.dddE+00``
    from 100 V), currents and powers ``sddd.dddEsdd`` with an engineering exponent."""
    if kind == "V":
        return f"{value:+08.4f}E+00" if abs(value) < 99.99995 else f"{value:+08.3f}E+00"
    if value == 0.0:
        return "+000.000E+00"
    return format_number(value, 3 * math.floor(math.log10(abs(value)) / 3))


def plain(value: float) -> str:
    """A time in a ``*LRN?`` reply: up to 6 significant digits with a decimal point and
    an upper-case E (``WT1.0,0.0,...`` as QCoDeS's simulation of the instrument shows)."""
    text = f"{float(value):.6G}"
    return text if ("." in text or "E" in text) else text + ".0"


#: FMT number -> how elements are written: (header style, digits). Header "letter" is
#: status letter + channel letter + type letter, "numeric" the 4155-compatible 3-digit
#: status + channel + type (lower case for source data), None no header.
FORMATS: dict[int, tuple[str | None, int]] = {
    1: ("letter", 12), 2: (None, 12), 5: ("letter", 12),
    11: ("letter", 13), 12: (None, 13), 15: ("letter", 13),
    21: ("numeric", 13), 22: (None, 13), 25: ("numeric", 13),
}
#: FMT 21 status codes of the status letters (sums of bits: 1 overflow, 2 oscillation,
#: 4 other channel in compliance, 8 this channel in compliance, 128 last sweep step)
NUMERIC_STATUS = {"N": 0, "V": 1, "X": 2, "T": 4, "C": 8, "W": 0, "E": 128}


class Element(NamedTuple):
    """One datum of a reply: status letter, slot (0 = no channel, letter ``Z``), type
    letter (I, V, T), value, exponent."""

    status: str
    slot: int
    kind: str
    value: float | None
    exponent: int

    def text(self, fmt: int = 1) -> str:
        style, digits = FORMATS[int(fmt)]
        number = (format_number if digits == 12 else format_number13)(self.value, self.exponent)
        if style is None:
            return number
        letter = "Z" if self.slot == 0 else SLOT_LETTERS[self.slot - 1]
        if style == "letter":
            return f"{self.status}{letter}{self.kind}{number}"
        kind = self.kind.lower() if self.status in "WE" else self.kind
        return f"{NUMERIC_STATUS[self.status]:03d}{letter}{kind}{number}"


class _Reading(NamedTuple):
    i: float
    v: float
    compliance: bool


# --------------------------------------------------------------------------- state
@dataclass(slots=True)
class _Channel:
    """Settings of one SMU channel, as the instrument keeps them."""

    slot: int
    spec: ModuleSpec
    terminal: str
    enabled: bool = False
    mode: str = "v"  # what it forces
    level: float = 0.0
    comp: float = DEFAULT_ICOMP  # A in "v" mode, V in "i" mode
    ri: int = 0  # current measurement range code (signed)
    rv: int = 0  # voltage measurement range code (signed)
    cmm: int = 0
    adc: int = 0
    filt: int = 0
    ssr: int = 0  # 1 MOhm series resistor (SSR): kept and reported, not put in the circuit
    rm: tuple[int, int] = (1, 50)  # auto ranging mode and rate (RM)
    out_code: int = 0  # output range code of the last DV/DI (0 auto)
    pol: int = 0  # compliance polarity mode of the last DV/DI
    comp_code: int = 0  # compliance-side range code of the last DV/DI (0 auto)
    saved: tuple[str, float, float] | None = None  # settings kept by DZ

    def reset(self) -> None:
        self.enabled, self.mode, self.level, self.comp = False, "v", 0.0, DEFAULT_ICOMP
        self.ri = self.rv = self.cmm = self.adc = self.filt = self.ssr = 0
        self.out_code = self.pol = self.comp_code = 0
        self.rm = (1, 50)
        self.saved = None

    def default_force(self) -> None:
        """What CN and CL leave: 0 V, 100 uA compliance, automatic ranges."""
        self.mode, self.level, self.comp, self.saved = "v", 0.0, DEFAULT_ICOMP, None
        self.out_code = self.pol = self.comp_code = 0


@dataclass(frozen=True, slots=True)
class _Sweep:
    slot: int
    kind: str  # "v" (WV) or "i" (WI)
    mode: int
    range_code: int
    start: float
    stop: float
    steps: int
    comp: float
    pcomp: float | None

    def points(self) -> list[float]:
        return staircase(self.mode, self.start, self.stop, self.steps)


def staircase(mode: int, start: float, stop: float, n: int) -> list[float]:
    """Output values of a staircase: linear (1, 3) or log (2, 4), two-way for 3 and 4."""
    if n == 1:
        fwd = [start]
    elif mode in (1, 3):
        fwd = [start + k * (stop - start) / (n - 1) for k in range(n)]
    else:
        ratio = stop / start
        fwd = [start * ratio ** (k / (n - 1)) for k in range(n)]
    return fwd + fwd[::-1] if mode in (3, 4) else fwd


@dataclass(frozen=True, slots=True)
class _Sync:
    """The synchronous sweep source (WSV/WSI): steps with the primary sweep."""

    slot: int
    kind: str
    range_code: int
    start: float
    stop: float
    comp: float
    pcomp: float | None


@dataclass(frozen=True, slots=True)
class _Pulse:
    slot: int
    kind: str
    base: float
    pulse: float
    comp: float


@dataclass(slots=True)
class _Settings:
    """Instrument-wide settings that ``*RST`` restores."""

    fmt: int = 1
    fmt_mode: int = 0
    mm: tuple[int, tuple[int, ...]] | None = None
    wt: tuple[float, float, float, float, float] = (0.0, 0.0, 0.0, 0.0, 0.0)
    wm: tuple[int, int] = (2, 1)
    pt: tuple[float, float, float, float] = (0.0, 1e-3, 0.0, 0.0)
    sweep: _Sweep | None = None
    pulse: _Pulse | None = None
    tsc: int = 0
    az: int = 1
    #: ADC type (0 high speed, 1 high resolution, 2 pulsed) → (mode, N)
    ait: dict[int, tuple[int, float]] = field(
        default_factory=lambda: {0: (0, 1.0), 1: (0, 6.0), 2: (3, 1e-3)}
    )
    av: tuple[int, int] = (1, 0)  # AV number, mode (the high-speed ADC seen the AV way)
    sync: _Sync | None = None
    tm: int = 1  # trigger mode (TM), kept and reported only
    cm: int = 1  # auto calibration (CM), kept and reported only
    pad: int = 0  # parallel measurement (PAD), kept and reported only
    #: wait time type (1 source, 2 measurement, 3 CMU) -> (N, offset) (WAT), kept and reported
    wat: dict[int, tuple[float, float]] = field(
        default_factory=lambda: {1: (1.0, 0.0), 2: (1.0, 0.0), 3: (1.0, 0.0)}
    )
    #: channel mapping program channel -> actual channel (ACH)
    ach: dict[int, int] = field(default_factory=dict)


# ----------------------------------------------------------------------- parsing
_NUMBER = re.compile(r"[+-]?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?")
_COMMAND = re.compile(r"(\*?[A-Za-z]+\??)(.*)", re.S)


def parse_float(text: str) -> float:
    if not _NUMBER.fullmatch(text):
        raise _fail(E_NUMERIC)
    value = float(text)
    if not math.isfinite(value):
        raise _fail(E_PARAM)
    return value


def parse_int(text: str) -> int:
    value = parse_float(text)
    if value != int(value):
        raise _fail(E_PARAM)
    return int(value)


def _check(cond: bool, err: tuple[int, str] = E_PARAM, slot: int | None = None) -> None:
    if not cond:
        raise _fail(err, slot)


Handler = Callable[[list[str]], None]


class B1500AEmulator(Emulator):
    """Keysight B1500A with B1517A HR-SMUs, speaking FLEX over CR/LF."""

    model = "B1500A"
    reply_termination = b"\r\n"
    write_termination = b"\r\n"
    idn = "Agilent Technologies,B1500A,0,A.06.01.2019.0807"

    def __init__(
        self,
        bench: Any = None,
        name: str = "b1500a",
        modules: Sequence[str | None] | None = None,
        line_frequency: float = LINE_FREQUENCY,
    ) -> None:
        super().__init__(bench, name)
        self._errors: dict[int, ChannelErrors] = {}
        slots = list(DEFAULT_MODULES if modules is None else modules)
        if len(slots) > 10:
            raise ValueError(f"a B1500A has 10 slots, got {len(slots)} modules")
        slots += [None] * (10 - len(slots))
        self.modules: list[str | None] = []
        self.channels: dict[int, _Channel] = {}
        for slot, model in enumerate(slots, start=1):
            if not model:
                self.modules.append(None)
                continue
            if model not in MODULES:
                raise ValueError(f"unknown module {model!r} in slot {slot}; known: {', '.join(MODULES)}")
            self.modules.append(model)
            self.channels[slot] = _Channel(slot, MODULES[model], f"{self.name}.{slot}")
        self.line_frequency = float(line_frequency)
        self.settings = _Settings()
        self._timer_origin = self.now()
        self._consumed = 0  # reply bytes read or cleared since power-on
        self._data_ends: deque[int] = deque()  # stream offsets where unread data elements end
        # status reporting (not changed by *RST)
        self._error_bit = False  # status byte bit 5: an error occurred since it was cleared
        self._esr = ESR_POWER_ON  # standard event status register
        self._ese = 0  # its enable mask (*ESE)
        self._sre = 0  # service request enable mask (*SRE)
        self._commands: dict[str, tuple[Handler, int, int]] = {
            "*IDN?": (lambda a: self.reply(self.idn), 0, 0),
            "*OPC?": (lambda a: self.reply("1"), 0, 0),
            "*OPC": (self._opc, 0, 0),
            "*WAI": (lambda a: None, 0, 0),
            "*RST": (lambda a: self.reset(), 0, 0),
            "*CLS": (self._cls, 0, 0),
            "*STB?": (lambda a: self.reply(str(self.status_byte())), 0, 0),
            "*SRE": (lambda a: self._mask(a, "_sre"), 1, 1),
            "*SRE?": (lambda a: self.reply(str(self._sre)), 0, 0),
            "*ESE": (lambda a: self._mask(a, "_ese"), 1, 1),
            "*ESE?": (lambda a: self.reply(str(self._ese)), 0, 0),
            "*ESR?": (self._esr_query, 0, 0),
            "*TST?": (self._self_test, 0, 2),
            "*CAL?": (self._self_test, 0, 1),
            "CA": (self._calibrate, 0, 1),
            "CM": (lambda a: self._flag(a, "cm"), 1, 1),
            "DIAG?": (self._diag, 1, 1),
            "RCV": (self._rcv, 0, 1),
            "LOP?": (self._lop, 0, 0),
            "TM": (self._tm, 1, 1),
            "PA": (self._pa, 1, 1),
            "PAD": (lambda a: self._flag(a, "pad"), 1, 1),
            "SSR": (self._ssr, 2, 2),
            "RM": (self._rm, 2, 3),
            "WAT": (self._wat, 2, 3),
            "ACH": (self._ach, 0, 2),
            "TSQ": (self._tsq, 0, 0),
            "RMD?": (self._rmd, 0, 1),
            "WSV": (lambda a: self._sync_cmd(a, "v"), 4, 6),
            "WSI": (lambda a: self._sync_cmd(a, "i"), 4, 6),
            "UNT?": (self._unt, 0, 1),
            "*LRN?": (self._lrn, 1, 1),
            "ERRX?": (self._errx, 0, 1),
            "ERR?": (self._err, 0, 1),
            "CN": (self._cn, 0, 15),
            "CL": (self._cl, 0, 15),
            "DZ": (self._dz, 0, 15),
            "RZ": (self._rz, 0, 15),
            "DV": (lambda a: self._force_cmd(a, "v"), 3, 6),
            "DI": (lambda a: self._force_cmd(a, "i"), 3, 6),
            "TI": (lambda a: self._spot_cmd(a, ("I",), False), 1, 2),
            "TV": (lambda a: self._spot_cmd(a, ("V",), False), 1, 2),
            "TIV": (lambda a: self._spot_cmd(a, ("I", "V"), False), 1, 3),
            "TTI": (lambda a: self._spot_cmd(a, ("I",), True), 1, 2),
            "TTV": (lambda a: self._spot_cmd(a, ("V",), True), 1, 2),
            "TTIV": (lambda a: self._spot_cmd(a, ("I", "V"), True), 1, 3),
            "MM": (self._mm, 1, 11),
            "CMM": (self._cmm, 2, 2),
            "RI": (lambda a: self._meas_range_cmd(a, "I"), 2, 2),
            "RV": (lambda a: self._meas_range_cmd(a, "V"), 2, 2),
            "AAD": (self._aad, 2, 2),
            "AIT": (self._ait, 2, 3),
            "AV": (self._av, 1, 2),
            "AZ": (self._az, 1, 1),
            "FL": (self._fl, 1, 16),
            "FMT": (self._fmt, 1, 2),
            "WV": (lambda a: self._sweep_cmd(a, "v"), 6, 8),
            "WI": (lambda a: self._sweep_cmd(a, "i"), 6, 8),
            "WT": (self._wt, 2, 5),
            "WM": (self._wm, 1, 2),
            "PT": (self._pt, 2, 4),
            "PV": (lambda a: self._pulse_cmd(a, "v"), 4, 5),
            "PI": (lambda a: self._pulse_cmd(a, "i"), 4, 5),
            "XE": (self._xe, 0, 0),
            "AB": (lambda a: None, 0, 0),
            "BC": (lambda a: self.clear_output(), 0, 0),
            "NUB?": (lambda a: self.reply(str(len(self._data_ends))), 0, 0),
            "TSC": (self._tsc, 1, 1),
            "TSR": (self._tsr, 0, 1),
        }

    # ================================================================ wire level
    def handle(self, message: str) -> None:
        """Run each ``;``-separated command; stop the message at the first error."""
        for part in message.split(";"):
            part = part.strip()
            if not part:
                continue
            try:
                self._run(part)
            except FlexError as err:
                self._record_error(err.code, err.text)
                return

    def _record_error(self, code: int, text: str) -> None:
        self.errors.push(code, text)
        self._error_bit = True
        self._esr |= ESR_COMMAND_ERROR if code < 120 else ESR_EXECUTION_ERROR

    def inject_error(self, code: int, message: str) -> None:
        with self._lock:
            self._record_error(code, message)

    def _run(self, command: str) -> None:
        m = _COMMAND.fullmatch(command)
        if m is None:
            raise _fail(E_UNDEFINED)
        mnemonic, rest = m.group(1).upper(), m.group(2).strip()
        entry = self._commands.get(mnemonic)
        if entry is None:
            raise _fail(E_UNDEFINED)
        handler, n_min, n_max = entry
        args = [a.strip() for a in rest.split(",")] if rest else []
        if not n_min <= len(args) <= n_max:
            raise _fail(E_TERMINATOR)
        if any(a == "" for a in args):
            raise _fail(E_NUMERIC)
        handler(args)

    def take_output(self, count: int = -1, until: bytes | None = None) -> bytes:
        with self._lock:
            data = super().take_output(count, until)
            self._consumed += len(data)
            while self._data_ends and self._data_ends[0] <= self._consumed:
                self._data_ends.popleft()
            return data

    def clear_output(self) -> None:
        """``BC``/device clear: drop every unread reply, measurement data included."""
        with self._lock:
            self._consumed += self.pending_output()
            self._data_ends.clear()
            super().clear_output()

    def _emit(self, elements: Sequence[Element]) -> None:
        """Put one data line in the output buffer and account its elements for NUB?."""
        self._emit_texts([e.text(self.settings.fmt) for e in elements])

    def _emit_texts(self, texts: Sequence[str]) -> None:
        pos = self._consumed + self.pending_output()
        for t in texts:
            self._data_ends.append(pos + len(t))
            pos += len(t) + 1
        self.reply(",".join(texts))

    # =============================================================== bench glue
    @property
    def physics(self) -> Physics:
        return self.bench.physics if self.bench is not None else DEFAULT_PHYSICS

    def channel_errors(self, ch: _Channel) -> ChannelErrors:
        """The channel's fixed errors per range (module table; seeded from the bench
        seed, the emulator name and the slot: reproducible, each channel its own)."""
        err = self._errors.get(ch.slot)
        if err is None:
            seed = self.bench.seed if self.bench is not None else 0
            err = ChannelErrors(b1500_table(ch.spec.model), seed_of(seed, self.name, ch.slot))
            self._errors[ch.slot] = err
        return err

    def table(self, ch: _Channel) -> AccuracyTable:
        return b1500_table(ch.spec.model)

    def _push(self, ch: _Channel) -> None:
        """Tell the bench what the channel applies now."""
        if self.bench is None:
            return
        self.bench.set_source(
            ch.terminal, output=ch.enabled, mode=ch.mode, level=ch.level, limit=abs(ch.comp)
        )
        settle = getattr(self.bench, "settle", None)
        if settle is not None and ch.enabled:
            settle()

    def _advance(self, seconds: float) -> None:
        if self.bench is not None and seconds > 0:
            self.bench.advance(seconds)

    def _bench_read(self, ch: _Channel, duration: float) -> _Reading:
        if self.bench is None:  # nothing connected: an open circuit
            return _Reading(0.0, ch.level if ch.mode == "v" else 0.0, False)
        # an integrating ADC averages its window: read at its middle (first order)
        self._advance(duration / 2)
        r = self.bench.measure(ch.terminal, duration - duration / 2)
        return _Reading(float(r.i), float(r.v), bool(r.compliance))

    def _timer(self) -> float:
        return self.now() - self._timer_origin

    # ================================================================== helpers
    def _channel(self, text: str) -> _Channel:
        """Parse a channel number and return the installed channel."""
        n = parse_int(text)
        n = self.settings.ach.get(n, n)
        if 1 <= n <= 10:
            slot, sub = n, 1
        elif 101 <= n <= 1002 and n % 100 == 2 and 1 <= n // 100 <= 10:
            slot, sub = n // 100, 2
        else:
            raise _fail(E_CHANNEL)
        ch = self.channels.get(slot)
        if ch is None or sub != 1:  # every installed module is single-channel
            raise _fail(E_NOT_INSTALLED, slot)
        return ch

    def _channels(self, args: list[str], default_all: bool = True) -> list[_Channel]:
        chans = [self._channel(a) for a in args] if args else (
            list(self.channels.values()) if default_all else []
        )
        _check(len({c.slot for c in chans}) == len(chans), E_NCHANNELS)
        return chans

    @staticmethod
    def _require_on(*chans: _Channel) -> None:
        for ch in chans:
            _check(ch.enabled, E_OUTPUT_OFF, ch.slot)

    @staticmethod
    def _range_code(ch: _Channel, text: str, kind: str, signed: bool) -> int:
        """Validate a range code for this module (0 = auto; negative = fixed if ``signed``)."""
        code = parse_int(text)
        if code == 0:
            return 0
        table = V_RANGES if kind == "V" else I_RANGES
        if abs(code) not in table or (code < 0 and not signed):
            raise _fail(E_RANGE, ch.slot)
        top = ch.spec.v_ranges[-1] if kind == "V" else ch.spec.i_ranges[-1]
        if table[abs(code)] > top * (1 + 1e-9):
            raise _fail(E_RANGE, ch.slot)
        return code

    @staticmethod
    def _range_for(ch: _Channel, kind: str, code: int, value: float) -> float:
        """Full scale of the range used to measure ``value`` under range ``code``."""
        avail = ch.spec.v_ranges if kind == "V" else ch.spec.i_ranges
        table = V_RANGES if kind == "V" else I_RANGES
        floor = avail[0]
        if code:
            wanted = table[abs(code)]
            floor = next((r for r in avail if r >= wanted * (1 - 1e-9)), avail[-1])
            if code < 0:
                return floor
        return next((r for r in avail if r >= floor and abs(value) <= r), avail[-1])

    def _check_level(self, ch: _Channel, kind: str, levels: Sequence[float], comp: float) -> None:
        """Output values within the module, compliance within the output envelope."""
        spec = ch.spec
        peak = max(abs(x) for x in levels)
        if kind == "v":
            _check(peak <= spec.v_max * (1 + 1e-12), E_PARAM)
            _check(0.0 < abs(comp) <= spec.i_capability(peak), E_COMPLIANCE, ch.slot)
        else:
            _check(peak <= spec.i_max * (1 + 1e-12), E_PARAM)
            _check(0.0 < abs(comp) <= spec.v_max, E_COMPLIANCE, ch.slot)
            _check(peak <= spec.i_capability(abs(comp)), E_COMPLIANCE, ch.slot)

    def _aperture(self, ch: _Channel) -> tuple[float, float]:
        """(time the conversion takes, noise factor) for the channel's ADC settings."""
        adc = ch.adc
        mode, n = self.settings.ait[adc]
        plc = 1.0 / self.line_frequency
        if adc == 1:  # high resolution
            t = {0: n * plc / 6.0, 1: n * 80e-6, 2: n * plc}[mode]
            duration = t * (2.0 if self.settings.az else 1.0)
        else:
            t = {0: n * 1e-3, 1: n * 20e-6, 2: n * plc, 3: n}[mode]
            duration = t
        k = min(30.0, max(0.1, math.sqrt(NOISE_REF_APERTURE / t)))
        if adc == 1:
            k *= 0.5
        return duration, k

    def _quantities(self, ch: _Channel) -> tuple[str, ...]:
        """What ``CMM`` says to read on this channel."""
        side = "I" if ch.mode == "v" else "V"
        force = "V" if ch.mode == "v" else "I"
        return {0: (side,), 1: ("I",), 2: ("V",), 3: (force,), 4: ("I", "V")}[ch.cmm]

    def _value(self, ch: _Channel, kind: str, raw: float, code: int, k: float,
               volts: float = 0.0) -> tuple[float | None, int]:
        """Instrument view of a bench value: range, the range's fixed gain and offset
        error (``instrument_accuracy``; ``volts``, the output voltage, for the current
        ranges' voltage term), its noise × ``k`` (``instrument_noise``), overflow.
        Returns (value, exp)."""
        r = self._range_for(ch, kind, code, raw)
        value = raw
        if self.bench is not None:
            physics = self.physics
            if physics.on("instrument_accuracy"):
                value = self.channel_errors(ch).measured(kind, r, value, volts if kind == "I" else 0.0)
            if physics.on("instrument_noise"):
                value += float(self.bench.rng.normal(0.0, self.table(ch).at(kind, r).noise_rms * k))
        exp = eng_exponent(r)
        if abs(value) > OVERRANGE * r:
            return None, exp
        return value, exp

    def _others_in_compliance(self, measured: dict[int, bool]) -> dict[int, bool]:
        """Compliance state of every enabled channel (reading the unmeasured ones)."""
        states = dict(measured)
        for slot, ch in self.channels.items():
            if ch.enabled and slot not in states:
                states[slot] = self._bench_read(ch, 0.0).compliance
        return states

    def _read_channels(
        self,
        chans: Sequence[_Channel],
        quantities: Callable[[_Channel], tuple[str, ...]],
        codes: Callable[[_Channel, str], int],
        timestamps: bool,
        aperture: float | None = None,
    ) -> list[Element]:
        """Measure channels one after another and turn the readings into elements."""
        taken: list[tuple[_Channel, float, _Reading, float]] = []
        for ch in chans:
            duration, k = self._aperture(ch)
            if aperture is not None:
                duration, k = aperture, min(30.0, max(0.1, math.sqrt(NOISE_REF_APERTURE / aperture)))
            t = self._timer()
            taken.append((ch, t, self._bench_read(ch, duration), k))
        comp = self._others_in_compliance({ch.slot: rd.compliance for ch, _, rd, _ in taken})
        elements: list[Element] = []
        for ch, t, rd, k in taken:
            if timestamps:
                elements.append(Element("N", ch.slot, "T", t, 0))
            other = any(v for s, v in comp.items() if s != ch.slot)
            for q in quantities(ch):
                value, exp = self._value(ch, q, rd.i if q == "I" else rd.v, codes(ch, q), k, rd.v)
                status = "V" if value is None else "C" if comp[ch.slot] else "T" if other else "N"
                elements.append(Element(status, ch.slot, q, value, exp))
        return elements

    @staticmethod
    def _channel_code(ch: _Channel, q: str) -> int:
        return ch.ri if q == "I" else ch.rv

    # ================================================================== system
    def reset(self) -> None:
        """``*RST``: outputs off, defaults back, buffer cleared, error queue kept."""
        for ch in self.channels.values():
            ch.reset()
            self._push(ch)
        self.settings = _Settings()
        self._timer_origin = self.now()
        self._error_bit = False
        self.clear_output()

    def _unt(self, args: list[str]) -> None:
        if args:
            _check(parse_int(args[0]) == 0)
        self.reply(";".join(f"{m},0" if m else "0,0" for m in self.modules))

    def _errx(self, args: list[str]) -> None:
        mode = parse_int(args[0]) if args else 0
        _check(mode in (0, 1))
        self._error_bit = False
        err = self.errors.pop()
        code, text = (0, "No Error.") if err is None else (err.code, err.message)
        self.reply(f"{code:+d}" if mode == 1 else f'{code:+d},"{text}"')

    def _err(self, args: list[str]) -> None:
        mode = parse_int(args[0]) if args else 0
        _check(mode in (0, 1))
        self._error_bit = False
        if mode == 1:
            err = self.errors.pop()
            self.reply(str(err.code if err else 0))
            return
        codes = [e.code for e in self.errors][:4]
        self.errors.clear()
        self.reply(",".join(str(c) for c in codes + [0] * (4 - len(codes))))

    # ================================================================= outputs
    def _lrn(self, args: list[str]) -> None:
        """``*LRN? type``: the settings of one group as the commands that would set them,
        ``;``-joined (formats in the module docstring)."""
        kind = parse_int(args[0])
        if 1 <= kind <= 10:
            self.reply(self._lrn_slot(self._channel(str(kind))))
            return
        builder = self._LRN.get(kind)
        _check(builder is not None)
        assert builder is not None
        self.reply(builder(self))

    def _lrn_switches(self) -> str:
        on = [str(slot) for slot, ch in self.channels.items() if ch.enabled]
        return "CN" + ",".join(on) if on else "CL"

    def _active_code(self, ch: _Channel, kind: str, code: int, value: float) -> int:
        """Code of the range in use for ``value`` under range code ``code`` (0 auto)."""
        full = self._range_for(ch, kind, code, value)
        table = V_RANGES if kind == "V" else I_RANGES
        return next(c for c in (ch.spec.v_codes if kind == "V" else ch.spec.i_codes) if table[c] == full)

    def _lrn_slot(self, ch: _Channel) -> str:
        """``DVn,vrange,V,Icomp,pol,irange`` / ``DIn,irange,I,Vcomp,pol,vrange`` with the
        ranges in use, or ``CLn`` for an open output switch."""
        if not ch.enabled:
            return f"CL{ch.slot}"
        out, comp = ("V", "I") if ch.mode == "v" else ("I", "V")
        out_code = self._active_code(ch, out, ch.out_code, ch.level)
        comp_code = self._active_code(ch, comp, ch.comp_code, ch.comp)
        return (f"D{out}{ch.slot},{out_code},{lrn_number(ch.level, out)},{lrn_number(ch.comp, comp)},"
                f"{ch.pol},{comp_code}")

    def _lrn_filter(self) -> str:
        off = [str(s) for s, ch in self.channels.items() if not ch.filt]
        on = [str(s) for s, ch in self.channels.items() if ch.filt]
        if not on:
            return "FL0"
        if not off:
            return "FL1"
        return "FL0," + ",".join(off) + ";FL1," + ",".join(on)

    def _lrn_31(self) -> str:
        st = self.settings
        text = f"TM{st.tm};AV{st.av[0]},{st.av[1]};CM{st.cm};FMT{st.fmt},{st.fmt_mode}"
        if st.mm is not None:
            text += f";MM{st.mm[0]}," + ",".join(map(str, st.mm[1]))
        return text

    def _lrn_32(self) -> str:
        return ";".join(f"RI{s},{ch.ri};RV{s},{ch.rv}" for s, ch in self.channels.items())

    def _lrn_33(self) -> str:
        st = self.settings
        text = f"WM{st.wm[0]},{st.wm[1]};WT" + ",".join(plain(x) for x in st.wt)
        sw = st.sweep
        if sw is not None:
            ch = self.channels[sw.slot]
            q = "V" if sw.kind == "v" else "I"
            c = "I" if q == "V" else "V"
            code = self._active_code(ch, q, sw.range_code, max(abs(sw.start), abs(sw.stop)))
            text += (f";W{q}{sw.slot},{sw.mode},{code},{lrn_number(sw.start, q)},{lrn_number(sw.stop, q)},"
                     f"{sw.steps},{lrn_number(sw.comp, c)}")
            if sw.pcomp is not None:
                text += f",{lrn_number(sw.pcomp, 'P')}"
        sy = st.sync
        if sy is not None:
            ch = self.channels[sy.slot]
            q = "V" if sy.kind == "v" else "I"
            c = "I" if q == "V" else "V"
            code = self._active_code(ch, q, sy.range_code, max(abs(sy.start), abs(sy.stop)))
            text += f";WS{q}{sy.slot},{code},{lrn_number(sy.start, q)},{lrn_number(sy.stop, q)},{lrn_number(sy.comp, c)}"
            if sy.pcomp is not None:
                text += f",{lrn_number(sy.pcomp, 'P')}"
        return text

    def _lrn_34(self) -> str:
        st = self.settings
        text = "PT" + ",".join(plain(x) for x in st.pt)
        p = st.pulse
        if p is not None:
            ch = self.channels[p.slot]
            q = "V" if p.kind == "v" else "I"
            c = "I" if q == "V" else "V"
            code = self._active_code(ch, q, 0, max(abs(p.base), abs(p.pulse)))
            text += (f";P{q}{p.slot},{code},{lrn_number(p.base, q)},{lrn_number(p.pulse, q)},"
                     f"{lrn_number(p.comp, c)}")
        return text

    def _lrn_55(self) -> str:
        # as a B1500A answers (seen by a public driver): each channel's ADC, then the
        # pulsed ADC (always 2), each pair ended by ";" and the pairs joined by ";"
        return ";".join(f"AAD{s},{ch.adc};AAD{s},2;" for s, ch in self.channels.items())

    def _lrn_56(self) -> str:
        ait = self.settings.ait
        def n(mode: int, value: float) -> str:  # counts as integers (AIT0,0,1), times as times
            return plain(value) if mode == 3 else str(int(value))

        return ";".join(f"AIT{a},{ait[a][0]},{n(*ait[a])}" for a in (0, 1, 2)) + f";AZ{self.settings.az}"

    def _lrn_57(self) -> str:
        wat = self.settings.wat
        return ";".join(f"WAT{t},{wat[t][0]:.1f},{wat[t][1]:.4f}" for t in (1, 2))

    _LRN: dict[int, Callable[[B1500AEmulator], str]] = {
        0: _lrn_switches,
        30: _lrn_filter,
        31: _lrn_31,
        32: _lrn_32,
        33: _lrn_33,
        34: _lrn_34,
        46: lambda self: ";".join(f"CMM{s},{ch.cmm}" for s, ch in self.channels.items()),
        53: lambda self: ";".join(f"SSR{s},{ch.ssr}" for s, ch in self.channels.items()),
        54: lambda self: ";".join(f"RM{s},{ch.rm[0]},{ch.rm[1]}" for s, ch in self.channels.items()),
        55: _lrn_55,
        56: _lrn_56,
        57: _lrn_57,
        60: lambda self: f"TSC{self.settings.tsc}",
        110: lambda self: f"PAD{self.settings.pad}",
    }

    # ======================================================= status and service
    def status_byte(self) -> int:
        """The status byte as ``*STB?`` reads it (before its own reply is queued)."""
        stb = STB_SET_READY
        if self.pending_output():
            stb |= STB_DATA_READY
        if self._error_bit:
            stb |= STB_ERROR
        if stb & self._sre & ~STB_RQS:
            stb |= STB_RQS
        return stb

    def _mask(self, args: list[str], attr: str) -> None:
        value = parse_int(args[0])
        _check(0 <= value <= 255)
        setattr(self, attr, value & ~STB_RQS if attr == "_sre" else value)

    def _opc(self, args: list[str]) -> None:
        self._esr |= ESR_OPC  # every command has completed by the time *OPC is read

    def _cls(self, args: list[str]) -> None:
        """``*CLS``: clear the status byte, the event register and the error queue."""
        self._error_bit = False
        self._esr = 0
        self.errors.clear()

    def _esr_query(self, args: list[str]) -> None:
        value, self._esr = self._esr, 0
        self.reply(str(value))

    def _self_test(self, args: list[str]) -> None:
        """``*TST? [slot[,option]]`` / ``*CAL? [slot]``: pass (0). As on the instrument the
        outputs must be open for it, so every output switch opens."""
        if args:
            self._slot_arg(args[0])
        if len(args) > 1:
            _check(parse_int(args[1]) in (0, 1))
        self._cl([])
        self._error_bit = False
        self.reply("0")

    def _calibrate(self, args: list[str]) -> None:
        if args:
            self._slot_arg(args[0])
        self._cl([])
        self._error_bit = False

    def _slot_arg(self, text: str) -> int:
        slot = parse_int(text)
        _check(0 <= slot <= 10, E_CHANNEL)
        return slot

    def _diag(self, args: list[str]) -> None:
        """``DIAG? item``: every diagnosis passes (0)."""
        _check(parse_int(args[0]) in (1, 3, 4, 5, 7, 8))
        self._error_bit = False
        self.reply("0")

    def _rcv(self, args: list[str]) -> None:
        """``RCV [slot]``: re-enable modules that failed self-test; none ever fails here."""
        if args:
            self._slot_arg(args[0])

    def _lop(self, args: list[str]) -> None:
        """``LOP?``: one 2-digit state per slot: 00 off, 01 forcing V, 02/03 forcing +I/-I,
        11 in voltage compliance, 12/13 in +/- current compliance; empty slots 00."""
        codes = []
        for slot in range(1, 11):
            ch = self.channels.get(slot)
            if ch is None or not ch.enabled:
                codes.append("00")
                continue
            rd = self._bench_read(ch, 0.0)
            if ch.mode == "v":
                state = (12 if rd.i >= 0 else 13) if rd.compliance else 1
            else:
                state = 11 if rd.compliance else (2 if ch.level >= 0 else 3)
            codes.append(f"{state:02d}")
        self.reply("LOP" + ",".join(codes))

    def _flag(self, args: list[str], attr: str) -> None:
        value = parse_int(args[0])
        _check(value in (0, 1))
        setattr(self.settings, attr, value)

    def _tm(self, args: list[str]) -> None:
        value = parse_int(args[0])
        _check(value in (1, 2, 3, 4))
        self.settings.tm = value

    def _pa(self, args: list[str]) -> None:
        """``PA seconds``: wait (the simulated clock moves)."""
        t = parse_float(args[0])
        _check(0.0 <= t <= 655.35)
        self._advance(t)

    def _ssr(self, args: list[str]) -> None:
        ch = self._channel(args[0])
        value = parse_int(args[1])
        _check(value in (0, 1))
        ch.ssr = value

    def _rm(self, args: list[str]) -> None:
        ch = self._channel(args[0])
        mode = parse_int(args[1])
        rate = parse_int(args[2]) if len(args) > 2 else 50
        _check(mode in (1, 2, 3) and 11 <= rate <= 100)
        ch.rm = (mode, rate)

    def _wat(self, args: list[str]) -> None:
        kind = parse_int(args[0])
        n = parse_float(args[1])
        offset = parse_float(args[2]) if len(args) > 2 else 0.0
        _check(kind in (1, 2, 3) and 0.0 <= n <= 10.0 and 0.0 <= offset <= 1.0)
        self.settings.wat[kind] = (n, offset)

    def _ach(self, args: list[str]) -> None:
        """``ACH [actual[,program]]``: program channel -> actual channel; no argument
        clears every mapping, one argument maps that channel to itself."""
        if not args:
            self.settings.ach.clear()
            return
        actual = parse_int(args[0])
        program = parse_int(args[1]) if len(args) > 1 else actual
        _check(1 <= actual <= 10 and 1 <= program <= 10, E_CHANNEL)
        _check(actual in self.channels, E_NOT_INSTALLED, actual)
        if program == actual:
            self.settings.ach.pop(program, None)
        else:
            self.settings.ach[program] = actual

    def _tsq(self, args: list[str]) -> None:
        """``TSQ``: the time since ``TSR``/power-on as one time element (channel ``Z``)."""
        self.reply(Element("N", 0, "T", self._timer(), 0).text(self.settings.fmt))

    def _rmd(self, args: list[str]) -> None:
        """``RMD? [count]``: the first ``count`` unread data elements (all: 0 or none) as
        one reply; the rest stay unread behind it. Assumes the unread output is data."""
        count = parse_int(args[0]) if args else 0
        _check(count >= 0)
        text = self.take_output().decode("latin-1")
        elements = [e for line in text.split("\r\n") if line for e in line.split(",")]
        n = len(elements) if count == 0 else min(count, len(elements))
        self._emit_texts(elements[:n])
        if elements[n:]:
            self._emit_texts(elements[n:])

    def _cn(self, args: list[str]) -> None:
        """Close the output switch: 0 V, 100 µA compliance."""
        for ch in self._channels(args):
            if not ch.enabled:
                ch.enabled = True
                ch.default_force()
                self._push(ch)

    def _cl(self, args: list[str]) -> None:
        """Open the output switch; the bench terminal goes high-impedance."""
        for ch in self._channels(args):
            ch.enabled = False
            ch.default_force()
            self._push(ch)

    def _dz(self, args: list[str]) -> None:
        """Remember the settings, then force 0 V (compliance kept when forcing V)."""
        for ch in self._channels(args):
            if not ch.enabled:
                continue
            ch.saved = (ch.mode, ch.level, ch.comp)
            comp = ch.comp if ch.mode == "v" else DEFAULT_ICOMP
            ch.mode, ch.level, ch.comp = "v", 0.0, comp
            self._push(ch)

    def _rz(self, args: list[str]) -> None:
        for ch in self._channels(args):
            if ch.enabled and ch.saved is not None:
                ch.mode, ch.level, ch.comp = ch.saved
                ch.saved = None
                self._push(ch)

    # =================================================================== force
    def _force_cmd(self, args: list[str], kind: str) -> None:
        """``DV ch,vrange,V[,Icomp[,pol[,irange]]]`` / ``DI ch,irange,I[,Vcomp[,pol[,vrange]]]``."""
        ch = self._channel(args[0])
        out_kind, comp_kind = ("V", "I") if kind == "v" else ("I", "V")
        out_code = self._range_code(ch, args[1], out_kind, signed=False)
        level = parse_float(args[2])
        comp = parse_float(args[3]) if len(args) > 3 else (DEFAULT_ICOMP if kind == "v" else DEFAULT_VCOMP)
        pol = parse_int(args[4]) if len(args) > 4 else 0
        _check(pol in (0, 1))
        comp_code = self._range_code(ch, args[5], comp_kind, signed=False) if len(args) > 5 else 0
        self._check_level(ch, kind, [level], comp)
        self._require_on(ch)
        ch.mode, ch.level, ch.comp, ch.saved = kind, level, abs(comp), None
        ch.out_code, ch.pol, ch.comp_code = out_code, pol, comp_code
        self._push(ch)

    # ==================================================================== spot
    def _spot_cmd(self, args: list[str], quantities: tuple[str, ...], timed: bool) -> None:
        """High-speed spot: measure now, whatever ``MM`` says; the channel must be on."""
        ch = self._channel(args[0])
        if len(quantities) == 2:
            _check(len(args) in (1, 3), E_TERMINATOR)
        codes = {"I": ch.ri, "V": ch.rv}
        for q, text in zip(quantities, args[1:]):
            codes[q] = self._range_code(ch, text, q, signed=True)
        self._require_on(ch)
        elements = self._read_channels([ch], lambda c: quantities, lambda c, q: codes[q], timed)
        self._emit(elements)

    # ============================================================ measure set-up
    def _mm(self, args: list[str]) -> None:
        mode = parse_int(args[0])
        _check(mode in (1, 2, 3))
        chans = self._channels(args[1:], default_all=False)
        _check(len(chans) >= 1 and (mode != 3 or len(chans) == 1), E_NCHANNELS)
        self.settings.mm = (mode, tuple(c.slot for c in chans))

    def _cmm(self, args: list[str]) -> None:
        ch = self._channel(args[0])
        mode = parse_int(args[1])
        _check(mode in (0, 1, 2, 3, 4))
        ch.cmm = mode

    def _meas_range_cmd(self, args: list[str], kind: str) -> None:
        ch = self._channel(args[0])
        code = self._range_code(ch, args[1], kind, signed=True)
        if kind == "I":
            ch.ri = code
        else:
            ch.rv = code

    def _aad(self, args: list[str]) -> None:
        ch = self._channel(args[0])
        adc = parse_int(args[1])
        _check(adc in (0, 1, 2))
        ch.adc = adc

    _AIT_LIMITS: dict[tuple[int, int], tuple[float, float]] = {
        (0, 0): (1, 1023), (0, 1): (1, 1023), (0, 2): (1, 100), (0, 3): (2e-6, 20e-3),
        (1, 0): (1, 127), (1, 1): (1, 127), (1, 2): (1, 100),
        (2, 3): (2e-6, 20e-3),
    }

    def _ait(self, args: list[str]) -> None:
        adc, mode = parse_int(args[0]), parse_int(args[1])
        limits = self._AIT_LIMITS.get((adc, mode))
        _check(limits is not None)
        assert limits is not None
        if len(args) > 2:
            n = parse_float(args[2])
        else:
            n = {0: 6.0 if adc == 1 else 1.0, 1: 1.0, 2: 1.0, 3: 1e-3}[mode]
        if mode != 3:
            _check(n == int(n))
        _check(limits[0] <= n <= limits[1])
        self.settings.ait[adc] = (mode, n)
        if adc == 0 and mode in (0, 1):
            self.settings.av = (int(n), mode)
        elif adc == 0 and mode == 2:
            self.settings.av = (-int(n), 0)

    def _av(self, args: list[str]) -> None:
        """``AV number[,mode]``: the older way to set the high-speed ADC (→ ``AIT 0``)."""
        n = parse_int(args[0])
        mode = parse_int(args[1]) if len(args) > 1 else 0
        _check(mode in (0, 1) and (1 <= n <= 1023 or -100 <= n <= -1))
        self.settings.ait[0] = (2, float(-n)) if n < 0 else (0 if mode == 0 else 1, float(n))
        self.settings.av = (n, mode)

    def _az(self, args: list[str]) -> None:
        value = parse_int(args[0])
        _check(value in (0, 1))
        self.settings.az = value

    def _fl(self, args: list[str]) -> None:
        value = parse_int(args[0])
        _check(value in (0, 1))
        for ch in self._channels(args[1:]):
            ch.filt = value

    def _fmt(self, args: list[str]) -> None:
        f = parse_int(args[0])
        mode = parse_int(args[1]) if len(args) > 1 else 0
        _check(f in FORMATS and mode in (0, 1, 2))
        self.settings.fmt, self.settings.fmt_mode = f, mode

    def _tsc(self, args: list[str]) -> None:
        value = parse_int(args[0])
        _check(value in (0, 1))
        self.settings.tsc = value

    def _tsr(self, args: list[str]) -> None:
        if args:
            self._channel(args[0])
        self._timer_origin = self.now()

    # =========================================================== staircase sweep
    def _sweep_cmd(self, args: list[str], kind: str) -> None:
        """``WV ch,mode,range,start,stop,nsteps[,Icomp[,Pcomp]]`` and the ``WI`` form."""
        ch = self._channel(args[0])
        mode = parse_int(args[1])
        _check(mode in (1, 2, 3, 4))
        code = self._range_code(ch, args[2], "V" if kind == "v" else "I", signed=False)
        start, stop = parse_float(args[3]), parse_float(args[4])
        steps = parse_int(args[5])
        _check(1 <= steps <= 1001)
        if mode in (2, 4):
            _check(start != 0.0 and stop != 0.0 and (start > 0) == (stop > 0))
        comp = parse_float(args[6]) if len(args) > 6 else (DEFAULT_ICOMP if kind == "v" else DEFAULT_VCOMP)
        pcomp = parse_float(args[7]) if len(args) > 7 else None
        if pcomp is not None:
            _check(1e-3 <= pcomp <= 2.0, E_COMPLIANCE, ch.slot)
        self._check_level(ch, kind, [start, stop], comp)
        self.settings.sweep = _Sweep(ch.slot, kind, mode, code, start, stop, steps, abs(comp), pcomp)

    def _sync_cmd(self, args: list[str], kind: str) -> None:
        """``WSV ch,range,start,stop[,comp[,Pcomp]]`` and the ``WSI`` form: a source that
        steps with the primary sweep (same mode and step count, checked at ``XE``)."""
        ch = self._channel(args[0])
        code = self._range_code(ch, args[1], "V" if kind == "v" else "I", signed=False)
        start, stop = parse_float(args[2]), parse_float(args[3])
        comp = parse_float(args[4]) if len(args) > 4 else (DEFAULT_ICOMP if kind == "v" else DEFAULT_VCOMP)
        pcomp = parse_float(args[5]) if len(args) > 5 else None
        if pcomp is not None:
            _check(1e-3 <= pcomp <= 2.0, E_COMPLIANCE, ch.slot)
        self._check_level(ch, kind, [start, stop], comp)
        self.settings.sync = _Sync(ch.slot, kind, code, start, stop, abs(comp), pcomp)

    def _wt(self, args: list[str]) -> None:
        values = [parse_float(a) for a in args] + [0.0] * (5 - len(args))
        hold, delay, sdelay, tdelay, mdelay = values
        _check(0 <= hold <= 655.35 and 0 <= delay <= 65.535 and 0 <= sdelay <= 1.0)
        _check(0 <= tdelay <= delay and 0 <= mdelay <= 65.535)
        self.settings.wt = (hold, delay, sdelay, tdelay, mdelay)

    def _wm(self, args: list[str]) -> None:
        abort = parse_int(args[0])
        post = parse_int(args[1]) if len(args) > 1 else 1
        _check(abort in (1, 2) and post in (1, 2))
        self.settings.wm = (abort, post)

    # ============================================================== pulsed spot
    def _pt(self, args: list[str]) -> None:
        """``PT hold,width[,period[,Tdelay]]`` (limits from the E5260/E5270 guide)."""
        values = [parse_float(a) for a in args] + [0.0] * (4 - len(args))
        hold, width, period, tdelay = values
        _check(0 <= hold <= 655.35 and 5e-4 <= width <= 2.0)
        if period != 0.0:
            margin = 2e-3 if width <= 0.1 else 10e-3
            _check(5e-3 <= period <= 5.0 and period >= width + margin - 1e-12)
        _check(0 <= tdelay <= width)
        self.settings.pt = (hold, width, period, tdelay)

    def _pulse_cmd(self, args: list[str], kind: str) -> None:
        """``PV ch,range,base,pulse[,Icomp]`` and the ``PI`` form."""
        ch = self._channel(args[0])
        self._range_code(ch, args[1], "V" if kind == "v" else "I", signed=False)
        base, pulse = parse_float(args[2]), parse_float(args[3])
        comp = parse_float(args[4]) if len(args) > 4 else (DEFAULT_ICOMP if kind == "v" else DEFAULT_VCOMP)
        self._check_level(ch, kind, [base, pulse], comp)
        self.settings.pulse = _Pulse(ch.slot, kind, base, pulse, abs(comp))

    def pulse_period(self) -> float:
        """The period ``XE`` will use (resolving ``0`` = automatic)."""
        _, width, period, _ = self.settings.pt
        if period:
            return period
        return max(5e-3, width + (2e-3 if width <= 0.1 else 10e-3))

    # ====================================================================== XE
    def _xe(self, args: list[str]) -> None:
        mm = self.settings.mm
        _check(mm is not None)
        assert mm is not None
        mode, slots = mm
        chans = [self.channels[s] for s in slots]
        if mode == 1:
            self._require_on(*chans)
            timestamps = bool(self.settings.tsc)
            self._emit(self._read_channels(chans, self._quantities, self._channel_code, timestamps))
        elif mode == 2:
            self._run_sweep(chans)
        else:
            self._run_pulsed(chans[0])

    def _set_force(self, ch: _Channel, kind: str, level: float, comp: float) -> None:
        ch.mode, ch.level, ch.comp, ch.saved = kind, level, comp, None
        self._push(ch)

    def _run_sweep(self, chans: list[_Channel]) -> None:
        sw = self.settings.sweep
        _check(sw is not None)
        assert sw is not None
        src = self.channels[sw.slot]
        self._require_on(src, *chans)
        points = sw.points()
        sy = self.settings.sync
        sync_ch: _Channel | None = None
        sync_points: list[float] = []
        if sy is not None:
            sync_ch = self.channels[sy.slot]
            _check(sy.slot != sw.slot)
            if sw.mode in (2, 4):
                _check(sy.start != 0.0 and sy.stop != 0.0 and (sy.start > 0) == (sy.stop > 0))
            self._require_on(sync_ch)
            sync_points = staircase(sw.mode, sy.start, sy.stop, sw.steps)
            sync_type = "V" if sy.kind == "v" else "I"
            sync_exp = eng_exponent(self._range_for(sync_ch, sync_type, sy.range_code, max(abs(sy.start), abs(sy.stop))))
        src_type = "V" if sw.kind == "v" else "I"
        # output ranges are limited auto: one range holding both start and stop
        out_range = self._range_for(src, src_type, sw.range_code, max(abs(sw.start), abs(sw.stop)))
        src_exp = eng_exponent(out_range)
        hold, delay, sdelay, _, _ = self.settings.wt
        abort_enabled, post = self.settings.wm
        fmt_mode = self.settings.fmt_mode
        timestamps = bool(self.settings.tsc)
        elements: list[Element] = []
        aborted = False

        def source_data(k: int, end: str) -> list[Element]:
            if fmt_mode == 1:
                return [Element(end, src.slot, src_type, points[k], src_exp)]
            if fmt_mode == 2 and sy is not None:
                return [Element(end, sy.slot, sync_type, sync_points[k], sync_exp)]
            return []

        for k, level in enumerate(points):
            end = "E" if k == len(points) - 1 else "W"
            if aborted:  # dummy data keeps the element count fixed
                for ch in chans:
                    if timestamps:
                        elements.append(Element("N", ch.slot, "T", self._timer(), 0))
                    elements += [Element("V", ch.slot, q, None, 0) for q in self._quantities(ch)]
                elements += source_data(k, end)
                continue
            comp = sw.comp
            if sw.pcomp is not None and level != 0.0:
                comp = min(comp, sw.pcomp / abs(level))
            self._set_force(src, sw.kind, level, comp)
            if sy is not None and sync_ch is not None:
                sync_comp = sy.comp
                if sy.pcomp is not None and sync_points[k] != 0.0:
                    sync_comp = min(sync_comp, sy.pcomp / abs(sync_points[k]))
                self._set_force(sync_ch, sy.kind, sync_points[k], sync_comp)
            self._advance(delay + (hold if k == 0 else 0.0))
            t0 = self.now()
            step = self._read_channels(chans, self._quantities, self._channel_code, timestamps)
            self._advance(sdelay - (self.now() - t0))
            elements += step
            elements += source_data(k, end)
            if abort_enabled == 2 and any(e.status in "CTV" for e in step if e.kind != "T"):
                aborted = True
        back = aborted or post == 1
        self._set_force(src, sw.kind, sw.start if back else sw.stop, sw.comp)
        if sy is not None and sync_ch is not None:
            self._set_force(sync_ch, sy.kind, sy.start if back else sy.stop, sy.comp)
        self._emit(elements)

    def _run_pulsed(self, ch: _Channel) -> None:
        p = self.settings.pulse
        _check(p is not None)
        assert p is not None
        src = self.channels[p.slot]
        self._require_on(src, ch)
        hold, width, _, _ = self.settings.pt
        period = self.pulse_period()
        aperture = min(width / 4.0, 1e-3)
        self._set_force(src, p.kind, p.base, p.comp)
        self._advance(hold)
        self._set_force(src, p.kind, p.pulse, p.comp)
        self._advance(width - aperture)
        elements = self._read_channels(
            [ch], self._quantities, self._channel_code, bool(self.settings.tsc), aperture=aperture
        )
        self._set_force(src, p.kind, p.base, p.comp)
        self._advance(period - width)
        self._emit(elements)


__all__ = ["B1500AEmulator", "Element", "FlexError", "MODULES", "ModuleSpec", "format_number", "eng_exponent"]
