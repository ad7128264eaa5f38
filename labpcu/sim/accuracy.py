"""Instrument accuracy, noise and settling per range, as the data sheets give them.

A source-measure unit is not exact: each range has a gain error (a fraction of the
reading) and an offset (amps or volts), both guaranteed only as bounds, and a noise
floor. On the low current ranges the offset is what limits a measurement: the 2612A's
lowest range (100 nA) carries ±100 pA, a hundred times its noise. The emulators look
their ranges up here (:func:`k2600_table`, :func:`b1500_table`), draw per channel and
range a fixed error inside the bounds (:class:`ChannelErrors`) and add the noise per
range; ``bench.physics`` switches both (``instrument_accuracy``, ``instrument_noise``).
The source accuracy is tabulated but not applied: the bench gets the programmed level
(an output's error would move every sourced level by up to its bound; left out).

Sources of the figures (facts carried over, 1-year, 23 °C ± 5 °C, 1 PLC):

* Keithley 2601B/2602B/2604B data sheet (SPEC-2602B Rev. B), "Current accuracy
  specifications" and "Voltage accuracy specifications": per range the source accuracy
  ±(% setting + A), the typical source noise peak to peak 0.1–10 Hz, the measure
  accuracy ±(% reading + A); "Current source output settling time" per current range
  and "Voltage source output settling time" per voltage range. The 2611/2612 current
  ranges share the 2602's current rows (the 2606B data sheet gives the same rows);
  1.5 A takes the 3 A row.
* Keithley 2611B/2612B/2614B data sheet, "Voltage accuracy specifications" (200 mV to
  200 V) and the 200 V settling time: from memory of that data sheet, not found by the
  searches here ([unverified]); the 2612A's specifications match the 2612B's.
* 2634B/2635B/2636B low current ranges (100 pA, 1 nA, 10 nA): [unverified] memory of
  the 2636B data sheet; used only by those models.
* Measure autodelay per current range: the Model 2657A Reference Manual, "Measure auto
  delay" (same TSP SMU family; the 2600A/B table was not found): 1 nA 1 s, 10 nA
  150 ms, 100 nA 15 ms, 1 µA 2 ms, 10 µA and 100 µA 1 ms, 1 mA 0.5 ms, 10 mA and up
  0.1 ms. The 100 pA range takes the 1 nA value ([unverified]).
* Keysight (Agilent) B1500A User's Guide (Edition 10, "Specifications", tables
  "Current range, resolution, and accuracy (high speed ADC)" and "Voltage range,
  resolution, and accuracy"): 1 nA to 100 mA force accuracy ±(% + A + Vo·A/V) and
  measurement accuracy; 2 V to 100 V force and measurement accuracy. The same rows are
  used for the high-resolution ADC (its own, tighter rows were not found: the
  emulator errs on the safe side). The B1517A HRSMU's 10 pA and 100 pA rows and its
  0.5 V and 5 V rows are [unverified] memory of the B1500A data sheet. The B1511B
  MPSMU has no 10 pA/100 pA ranges (its smallest is 1 nA).

Noise: the 2600 figures are peak-to-peak (0.1–10 Hz), taken as 6σ, so the rms noise at
1 PLC is p-p/6; the B1500A's is one high-speed-ADC resolution step (5e-5 of range, at
least 10 fA) at 1 ms of integration, as the emulator had it. Both scale as
√(reference/integration).
"""

from __future__ import annotations

import zlib
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

__all__ = [
    "AccuracyTable",
    "ChannelErrors",
    "DRAW_CLIP",
    "DRAW_SIGMA",
    "RangeAccuracy",
    "RangeError",
    "b1500_table",
    "k2600_table",
    "seed_of",
]

#: systematic errors are drawn as normal with this σ, as a fraction of the data-sheet
#: bound (*model*: a calibrated unit sits well inside its 1-year specification) ...
DRAW_SIGMA = 0.25
#: ... and clipped here, so that the noise fits inside the bound too
DRAW_CLIP = 0.75


@dataclass(frozen=True, slots=True)
class RangeAccuracy:
    """One range of one instrument: accuracy bounds, noise, settling.

    ``*_gain`` are fractions of the reading (0.0005 = 0.05 %), ``*_offset`` in A or V;
    ``offset_per_volt`` (A/V) is the B1500A's output-voltage-proportional offset of the
    current ranges. ``noise_rms`` is at the table's reference integration time.
    ``source_settling`` (s): output settling on this range (the 2600's source
    autodelay); ``measure_autodelay`` (s): the 2600's measure autodelay (current ranges).
    """

    full_scale: float
    measure_gain: float
    measure_offset: float
    source_gain: float
    source_offset: float
    noise_rms: float
    offset_per_volt: float = 0.0
    source_settling: float = 0.0
    measure_autodelay: float = 0.0

    def measure_bound(self, reading: float, volts: float = 0.0) -> float:
        """The data sheet's ±bound of a reading (A or V) on this range."""
        return self.measure_gain * abs(reading) + self.measure_offset + self.offset_per_volt * abs(volts)

    def source_bound(self, level: float, volts: float = 0.0) -> float:
        """The data sheet's ±bound of an output level on this range."""
        return self.source_gain * abs(level) + self.source_offset + self.offset_per_volt * abs(volts)


@dataclass(frozen=True, slots=True)
class AccuracyTable:
    """The ranges of one instrument model or module; ``citation`` names the data sheet."""

    name: str
    citation: str
    current: tuple[RangeAccuracy, ...]
    voltage: tuple[RangeAccuracy, ...]
    #: integration time the noise figures refer to, in the instrument's own unit
    #: (2600: NPLC; B1500A: seconds)
    noise_reference: float = 1.0

    def at(self, kind: str, full_scale: float) -> RangeAccuracy:
        """The row of the range ``full_scale`` (``kind`` "i"/"I" or "v"/"V"); a range the
        table lacks takes the nearest row above it (or the largest)."""
        rows = self.current if kind in ("i", "I") else self.voltage
        for row in rows:
            if row.full_scale >= full_scale * (1 - 1e-9):
                return row
        return rows[-1]


def _pct(x: float) -> float:
    return x / 100.0


def _row(fs: float, m: tuple[float, float], s: tuple[float, float], pp: float, **kw: float) -> RangeAccuracy:
    """A 2600 row: measure (%, offset), source (%, offset), noise peak to peak."""
    return RangeAccuracy(fs, _pct(m[0]), m[1], _pct(s[0]), s[1], pp / 6.0, **kw)


def _i2600(fs: float, m: tuple[float, float], s: tuple[float, float], pp: float, settle: float,
           autodelay: float) -> RangeAccuracy:
    return _row(fs, m, s, pp, source_settling=settle, measure_autodelay=autodelay)


# 2602B data sheet current rows (shared by the 2611/2612 families); settling per range
_I_2600 = (
    _i2600(1e-7, (0.05, 100e-12), (0.06, 100e-12), 5e-12, 20e-3, 15e-3),
    _i2600(1e-6, (0.025, 500e-12), (0.03, 800e-12), 25e-12, 2e-3, 2e-3),
    _i2600(1e-5, (0.025, 1.5e-9), (0.03, 5e-9), 60e-12, 500e-6, 1e-3),
    _i2600(1e-4, (0.02, 25e-9), (0.03, 60e-9), 3e-9, 150e-6, 1e-3),
    _i2600(1e-3, (0.02, 200e-9), (0.03, 300e-9), 6e-9, 100e-6, 0.5e-3),
    _i2600(1e-2, (0.02, 2.5e-6), (0.03, 6e-6), 200e-9, 80e-6, 0.1e-3),
    _i2600(0.1, (0.02, 20e-6), (0.03, 30e-6), 600e-9, 80e-6, 0.1e-3),
    _i2600(1.0, (0.03, 1.5e-3), (0.05, 1.8e-3), 70e-6, 80e-6, 0.1e-3),
)
_I_2602 = (*_I_2600, _i2600(3.0, (0.05, 3.5e-3), (0.06, 4e-3), 150e-6, 80e-6, 0.1e-3))
_I_2612 = (*_I_2600, _i2600(1.5, (0.05, 3.5e-3), (0.06, 4e-3), 150e-6, 80e-6, 0.1e-3))
# [unverified] 2636B low current ranges
_I_LOW = (
    _i2600(1e-10, (0.15, 120e-15), (0.15, 120e-15), 2e-15, 1.0, 1.0),
    _i2600(1e-9, (0.15, 240e-15), (0.15, 240e-15), 5e-15, 1.0, 1.0),
    _i2600(1e-8, (0.15, 3e-12), (0.15, 3e-12), 50e-15, 150e-3, 150e-3),
)

_V_2602 = (  # 2602B data sheet, voltage rows and voltage source settling
    _row(0.1, (0.015, 150e-6), (0.02, 250e-6), 20e-6, source_settling=50e-6),
    _row(1.0, (0.015, 200e-6), (0.02, 400e-6), 50e-6, source_settling=50e-6),
    _row(6.0, (0.015, 1e-3), (0.02, 1.8e-3), 100e-6, source_settling=110e-6),
    _row(40.0, (0.015, 8e-3), (0.02, 12e-3), 500e-6, source_settling=150e-6),
)
_V_2612 = (  # [unverified] 2612B data sheet, voltage rows
    _row(0.2, (0.015, 225e-6), (0.02, 375e-6), 20e-6, source_settling=50e-6),
    _row(2.0, (0.02, 350e-6), (0.02, 600e-6), 50e-6, source_settling=50e-6),
    _row(20.0, (0.015, 5e-3), (0.02, 5e-3), 300e-6, source_settling=110e-6),
    _row(200.0, (0.015, 50e-3), (0.02, 50e-3), 2e-3, source_settling=700e-6),
)

_CITE_2602 = "Keithley 2601B/2602B/2604B data sheet (SPEC-2602B): current and voltage accuracy specifications"
_CITE_2612 = ("Keithley 2602B data sheet: current accuracy specifications (shared by the 2611/2612); "
              "2612B data sheet: voltage accuracy specifications [unverified]")
_CITE_2636 = _CITE_2612 + "; 2636B data sheet: 100 pA-10 nA ranges [unverified]"

_K2602 = AccuracyTable("2602", _CITE_2602, _I_2602, _V_2602)
_K2612 = AccuracyTable("2612", _CITE_2612, _I_2612, _V_2612)
_K2636 = AccuracyTable("2636", _CITE_2636, (*_I_LOW, *_I_2612), _V_2612)

_K2600_BY_MODEL = {
    **dict.fromkeys(("2601A", "2602A", "2601B", "2602B", "2604B"), _K2602),
    **dict.fromkeys(("2611A", "2612A", "2611B", "2612B", "2614B"), _K2612),
    **dict.fromkeys(("2634B", "2635A", "2636A", "2635B", "2636B"), _K2636),
}


def k2600_table(model: str) -> AccuracyTable:
    """The accuracy table of a 2600A/B model (its channels share it)."""
    try:
        return _K2600_BY_MODEL[model.upper()]
    except KeyError:
        raise ValueError(f"no accuracy table for 2600 model {model!r}; known: {', '.join(_K2600_BY_MODEL)}") from None


# ----------------------------------------------------------------- B1500A modules
def _b1500_i(fs: float, force: tuple[float, float], meas: tuple[float, float]) -> RangeAccuracy:
    """A B1500A current row: force (%, A), measure (%, A); the output-voltage term is
    range × 1e-6 per volt on every row of the tables found (1 nA: 1e-15 A/V)."""
    return RangeAccuracy(fs, _pct(meas[0]), meas[1], _pct(force[0]), force[1],
                         noise_rms=max(5e-5 * fs, 10e-15), offset_per_volt=fs * 1e-6)


def _b1500_v(fs: float, force: tuple[float, float], meas: tuple[float, float]) -> RangeAccuracy:
    return RangeAccuracy(fs, _pct(meas[0]), meas[1], _pct(force[0]), force[1], noise_rms=5e-5 * fs + 2e-6)


_I_B1500 = (  # User's Guide Ed. 10: high speed ADC current rows, 1 nA-100 mA
    _b1500_i(1e-9, (0.1, 300e-15), (0.25, 300e-15)),
    _b1500_i(1e-8, (0.1, 3e-12), (0.25, 2e-12)),
    _b1500_i(1e-7, (0.05, 30e-12), (0.1, 20e-12)),
    _b1500_i(1e-6, (0.05, 300e-12), (0.1, 200e-12)),
    _b1500_i(1e-5, (0.05, 3e-9), (0.05, 2e-9)),
    _b1500_i(1e-4, (0.035, 15e-9), (0.05, 20e-9)),
    _b1500_i(1e-3, (0.04, 150e-9), (0.04, 200e-9)),
    _b1500_i(1e-2, (0.04, 1.5e-6), (0.04, 2e-6)),
    _b1500_i(0.1, (0.045, 15e-6), (0.1, 20e-6)),
)
_I_HRSMU_LOW = (  # [unverified] B1517A 10 pA and 100 pA rows
    _b1500_i(1e-11, (0.46, 15e-15), (0.4, 15e-15)),
    _b1500_i(1e-10, (0.3, 15e-15), (0.3, 20e-15)),
)
_V_B1500 = (  # User's Guide Ed. 10: 2 V-100 V; 0.5 V and 5 V [unverified]
    _b1500_v(0.5, (0.018, 150e-6), (0.01, 250e-6)),
    _b1500_v(2.0, (0.018, 400e-6), (0.01, 700e-6)),
    _b1500_v(5.0, (0.018, 750e-6), (0.01, 2e-3)),
    _b1500_v(20.0, (0.018, 3e-3), (0.01, 4e-3)),
    _b1500_v(40.0, (0.018, 6e-3), (0.015, 8e-3)),
    _b1500_v(100.0, (0.018, 15e-3), (0.02, 20e-3)),
)
_CITE_B1500 = ("Agilent B1500A User's Guide Ed. 10, Specifications: current and voltage range, resolution "
               "and accuracy (high speed ADC)")

_B1500_BY_MODULE = {
    "B1517A": AccuracyTable("B1517A HRSMU", _CITE_B1500 + "; 10 pA/100 pA/0.5 V/5 V rows [unverified]",
                            (*_I_HRSMU_LOW, *_I_B1500), _V_B1500, noise_reference=1e-3),
    "B1511B": AccuracyTable("B1511B MPSMU", _CITE_B1500, _I_B1500, _V_B1500, noise_reference=1e-3),
}


def b1500_table(module: str) -> AccuracyTable:
    """The accuracy table of a B1500A SMU module."""
    try:
        return _B1500_BY_MODULE[module.upper()]
    except KeyError:
        raise ValueError(f"no accuracy table for B1500A module {module!r}; known: {', '.join(_B1500_BY_MODULE)}") from None


# ------------------------------------------------------------ one channel's errors
@dataclass(frozen=True, slots=True)
class RangeError:
    """The fixed measure errors one channel has on one range (fraction, A or V, A/V)."""

    gain: float
    offset: float
    offset_per_volt: float


def seed_of(*parts: int | str) -> tuple[int, ...]:
    """Integers for a SeedSequence from seeds and names (names by CRC-32: stable across runs)."""
    return tuple(p if isinstance(p, int) else zlib.crc32(p.encode()) for p in parts)


@dataclass
class ChannelErrors:
    """The systematic errors of one instrument channel, one draw per range.

    Each range's draw has its own seed (the channel's seed, the quantity, the range), so
    it does not depend on which ranges were used first, and it is the same reading to
    reading: an offset is systematic. ``seed`` comes from the bench seed and the
    instrument and channel names (:func:`seed_of`), so two instruments differ and a run
    is reproducible.
    """

    table: AccuracyTable
    seed: Sequence[int]
    _drawn: dict[tuple[str, float], RangeError] = field(default_factory=dict)

    def error(self, kind: str, full_scale: float) -> RangeError:
        key = (kind.lower(), full_scale)
        err = self._drawn.get(key)
        if err is None:
            row = self.table.at(kind, full_scale)
            rng = np.random.default_rng(np.random.SeedSequence([*self.seed, ord(key[0]), round(full_scale * 1e15)]))
            z = np.clip(rng.standard_normal(3) * DRAW_SIGMA, -DRAW_CLIP, DRAW_CLIP)
            err = RangeError(float(z[0]) * row.measure_gain, float(z[1]) * row.measure_offset,
                             float(z[2]) * row.offset_per_volt)
            self._drawn[key] = err
        return err

    def measured(self, kind: str, full_scale: float, value: float, volts: float = 0.0) -> float:
        """``value`` as read on this range: gain, offset and the output-voltage term."""
        e = self.error(kind, full_scale)
        return value * (1.0 + e.gain) + e.offset + e.offset_per_volt * volts
