"""What the simulated wafer suffers from: the bench conditions and a switch per mechanism.

A real wafer does not let anyone switch its physics off; the simulated one does, so that
an error budget can name the physics behind each figure (the error with one mechanism
switched off in turn), and so that a test can isolate the mechanism it checks. Every
mechanism is on by default where a lab meets it; the conditions default to a dark probe
station at 25 °C.

:class:`Physics` is immutable: ``physics.without("read_noise")`` is a copy. The simulated
bench holds one (``SimBench.physics``); the wafer draws its devices with it.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any

#: every switchable mechanism and what it is (the README's model table follows this)
MECHANISMS: dict[str, str] = {
    "ideality_spread": "device-to-device spread of the diodes' ideality factor n",
    "device_spread": "device-to-device spread of every other device parameter (I0, Rs, M1 range, M2 thresholds)",
    "defects": "opens, shorts, stuck-on and stuck-off devices placed on the wafer with a spatial pattern",
    "m1_series": "M1's on-state resistance in series with the diodes (off: an M1 in its LRS conducts 100× better in exp mode)",
    "read_noise": "device read noise: conductance fluctuation of M1 and M2 at each reading",
    "instrument_noise": "instrument noise per range and integration time (data-sheet noise floor)",
    "instrument_accuracy": "instrument offset and gain error per range (data-sheet accuracy)",
    "drift": "M1 retention drift (detrapping) after programming",
    "temperature": "stage temperature wander around its set point during a run",
    "diode_leakage": "field-enhanced reverse leakage of the diodes (soft, non-ohmic)",
    "m1_kinetics": "volatile M1 component: relaxation after pulses (ms to s)",
    "m1_read_disturb": "sub-threshold M1 state change under larger read voltages",
    "m1_nonohmic": "non-ohmic (sinh) M1 current-voltage characteristic",
    "m2_stochastics": "cycle-to-cycle spread of M2 set/reset voltage and on-resistance, forming, endurance",
    "capacitance": "device and cabling capacitance: transients after a step",
    "series_resistance": "resistance of lines, probe contacts and relays",
    "relay_leakage": "leakage through open matrix crosspoints",
}

#: the stage temperature the device constants refer to
T_REF_K = 298.15


class PhysicsError(ValueError):
    """A physics setting that cannot be."""


@dataclass(frozen=True)
class Physics:
    """Bench conditions and switched-off mechanisms of the simulated wafer.

    ``temperature_K``: the stage (chuck) set point. ``temperature_wander_K``: the rms
    wander of the stage around it while the ``temperature`` mechanism is on (a good
    thermal chuck holds ±0.1 K). ``light_lux``: the microscope lamp on the wafer
    (0: the station's dark enclosure is closed). ``defect_rate``: the fraction of PCUs
    with a defect while ``defects`` is on.
    """

    temperature_K: float = T_REF_K
    temperature_wander_K: float = 0.05
    light_lux: float = 0.0
    defect_rate: float = 0.04
    off: frozenset[str] = field(default_factory=frozenset)

    def __post_init__(self) -> None:
        unknown = sorted(set(self.off) - set(MECHANISMS))
        if unknown:
            raise PhysicsError(f"unknown mechanism(s) {', '.join(unknown)}; known: {', '.join(MECHANISMS)}")
        if not 200.0 <= self.temperature_K <= 400.0:
            raise PhysicsError(f"stage temperature must be 200-400 K, not {self.temperature_K:g} K")
        if not 0.0 <= self.temperature_wander_K <= 5.0:
            raise PhysicsError(f"temperature wander must be 0-5 K rms, not {self.temperature_wander_K:g} K")
        if not 0.0 <= self.light_lux <= 1e5:
            raise PhysicsError(f"light must be 0-100000 lux, not {self.light_lux:g}")
        if not 0.0 <= self.defect_rate <= 0.5:
            raise PhysicsError(f"defect rate must be 0-0.5, not {self.defect_rate:g}")
        object.__setattr__(self, "off", frozenset(self.off))

    def on(self, mechanism: str) -> bool:
        """True if ``mechanism`` acts (it must be one of :data:`MECHANISMS`)."""
        if mechanism not in MECHANISMS:
            raise PhysicsError(f"unknown mechanism {mechanism!r}; known: {', '.join(MECHANISMS)}")
        return mechanism not in self.off

    def without(self, *mechanisms: str) -> Physics:
        """A copy with ``mechanisms`` switched off."""
        return replace(self, off=self.off | frozenset(mechanisms))

    def with_conditions(self, **conditions: float) -> Physics:
        """A copy with other conditions (``temperature_K``, ``light_lux``, ...)."""
        return replace(self, **conditions)

    @classmethod
    def ideal(cls) -> Physics:
        """Every mechanism off: the textbook wafer (tests of one mechanism start here)."""
        return cls(off=frozenset(MECHANISMS))

    def only(self, *mechanisms: str) -> Physics:
        """A copy with only ``mechanisms`` on."""
        return replace(self, off=frozenset(MECHANISMS) - frozenset(mechanisms))

    def to_dict(self) -> dict[str, Any]:
        """Plain data, stored with every run of a simulated bench."""
        return {"temperature_K": self.temperature_K, "temperature_wander_K": self.temperature_wander_K,
                "light_lux": self.light_lux, "defect_rate": self.defect_rate, "off": sorted(self.off)}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Physics:
        known = {"temperature_K", "temperature_wander_K", "light_lux", "defect_rate", "off"}
        unknown = sorted(set(data) - known)
        if unknown:
            raise PhysicsError(f"unknown physics setting(s) {', '.join(unknown)}; known: {', '.join(sorted(known))}")
        kw: dict[str, Any] = {k: float(v) for k, v in data.items() if k != "off"}
        return cls(off=frozenset(_names(data.get("off", ()))), **kw)


def _names(value: Iterable[str] | str) -> list[str]:
    return [value] if isinstance(value, str) else [str(v) for v in value]


DEFAULT_PHYSICS = Physics()
