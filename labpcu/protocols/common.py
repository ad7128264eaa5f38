"""Wiring helpers every device-level protocol shares: which pads reach a component of
a PCU, which terminals drive it, and the bench limit a level must respect.

PCU topology (pcu.md, *model*): ``WL —D1▶— n1 —M1— n2 —[M2 ∥ D2◀]— BL`` with CL1 on
n1 and CL2 on n2. So each component sits between two pads:

==========  ==========  ===========================================
component   pads         notes
==========  ==========  ===========================================
``d1``      WL → CL1     forward from WL to CL1
``m1``      CL1 → CL2    multi-state memristor (weights)
``m2``      CL2 → BL     binary memristor (the reconfiguration switch)
``d2``      BL → CL2     forward from BL to CL2; shorted while M2 is in LRS
``path``    WL → BL      the whole cell, as an operator uses it
==========  ==========  ===========================================
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import TYPE_CHECKING

from labpcu.protocols.params import ParameterError

if TYPE_CHECKING:
    from labpcu.bench import Bench
    from labpcu.instruments.roles import SourceMeasureUnit

#: component -> (pad driven by the force terminal, pad held at 0 V by the ground terminal)
COMPONENT_PADS: dict[str, tuple[str, str]] = {
    "d1": ("WL", "CL1"),
    "m1": ("CL1", "CL2"),
    "m2": ("CL2", "BL"),
    "d2": ("BL", "CL2"),
    "path": ("WL", "BL"),
}
#: component -> further pads the ground terminal holds at 0 V with the component's own.
#: M1's programming pulses reach ±1 V on CL1; a floating bit line is pulled by the
#: neighbouring cells' diodes (on an array, far enough that M2 sees its set voltage and
#: forms a weak, accidental filament), so BL is held at CL2's potential: M2 and D2 see 0 V
GUARDED_PADS: dict[str, tuple[str, ...]] = {"m1": ("BL",)}
#: component -> device type of the bench file's [limits]; None: the strictest applies
DEVICE_TYPE: dict[str, str | None] = {"d1": "diode", "d2": "diode", "m1": "m1", "m2": "m2", "path": None}
COMPONENTS = tuple(COMPONENT_PADS)


def default_terminals(bench: Bench) -> tuple[str, str]:
    """(force, ground): the two channels of the bench's first source meter, the usual
    pair for device-level work (the analyzer's SMUs are kept for the operators).
    Read from the bench file's matrix rows, so it works on an offline bench too."""
    wired = [bench.config.matrix.rows[r] for r in sorted(bench.config.matrix.rows)]
    for name, spec in bench.config.instruments.items():
        if spec.info.role == "smu":
            channels = [t for t in wired if t.startswith(f"{name}.")]
            if len(channels) >= 2:
                return channels[0], channels[1]
    if len(wired) < 2:
        raise ParameterError("this bench has fewer than two source-measure units on the matrix")
    return wired[0], wired[1]


def component_limits(bench: Bench, component: str) -> tuple[float, float]:
    """(max |V|, max |I|) the bench file allows across ``component``."""
    if component not in COMPONENT_PADS:
        raise ParameterError(f"component must be one of {', '.join(COMPONENTS)}, not {component!r}")
    kind = DEVICE_TYPE[component]
    lims = bench.config.limits
    if kind is not None and kind in lims:
        return lims[kind].voltage, lims[kind].current
    if not lims:
        return float("inf"), float("inf")
    return min(x.voltage for x in lims.values()), min(x.current for x in lims.values())


def instrument_caps(bench: Bench, terminals: Sequence[str]) -> tuple[float, float, str, str]:
    """(max |V|, max |A|, and the terminal setting each) over the instruments behind
    ``terminals``, as the bench file gives them (its ``max_voltage``/``max_current``,
    else the model's range). Read from the file, not a driver, so it works on an
    offline bench, before anything is opened."""
    vcap, icap, vwho, iwho = math.inf, math.inf, "", ""
    for terminal in terminals:
        spec = bench.config.instruments.get(terminal.partition(".")[0])
        if spec is None:
            continue
        v = spec.max_voltage or spec.info.max_voltage or math.inf
        i = spec.max_current or spec.info.max_current or math.inf
        if v < vcap:
            vcap, vwho = v, terminal
        if i < icap:
            icap, iwho = i, terminal
    return vcap, icap, vwho, iwho


def check_levels(bench: Bench, component: str, protocol: str, *, terminals: Sequence[str] = (),
                 **levels: float | Sequence[float] | None) -> None:
    """Refuse (before any I/O) a voltage or current above the bench limit of the
    component, or above the range of an instrument behind ``terminals``, e.g.
    ``check_levels(bench, "m2", "hysteresis", v_set=2.5)``. Names starting with ``i_``
    or ``compliance`` are currents; the rest voltages (so ``v_compliance`` is a
    voltage). Every protocol's ``validate`` goes through here, so a level the bench
    would refuse mid-run is refused before the first message is sent."""
    vmax, imax = component_limits(bench, component)
    vinst, iinst, vwho, iwho = instrument_caps(bench, terminals or default_terminals(bench))
    kind = DEVICE_TYPE[component] or "every device type"
    for name, value in levels.items():
        if value is None:
            continue
        values = [value] if isinstance(value, (int, float)) else list(value)
        is_current = name.startswith("i_") or name.startswith("compliance")
        cap, inst, who, unit = (imax, iinst, iwho, "A") if is_current else (vmax, vinst, vwho, "V")
        for v in values:
            if abs(v) > cap:
                raise ParameterError(f"{protocol}: {name} = {v:g} {unit} exceeds the bench limit of {cap:g} {unit} "
                                     f"for {kind} ({component})")
            if abs(v) > inst:
                raise ParameterError(f"{protocol}: {name} = {v:g} {unit} exceeds the bench limit of {inst:g} {unit} "
                                     f"of {who} (the bench file's instrument range)")


def connect_component(
    bench: Bench,
    device: str,
    component: str,
    terminals: tuple[str, str] | None = None,
) -> tuple[SourceMeasureUnit, SourceMeasureUnit]:
    """Probe ``device``, route the component's pads to (force, ground) terminals, hold
    ground at 0 V (output on, compliance at the component's current limit), and
    return (force, ground) SMUs. The force SMU is left for the caller to set."""
    if component not in COMPONENT_PADS:
        raise ParameterError(f"component must be one of {', '.join(COMPONENTS)}, not {component!r}")
    force_t, ground_t = terminals or default_terminals(bench)
    hi, lo = COMPONENT_PADS[component]
    bench.move_to(device)
    held = [bench.pad(device, lo), *(bench.pad(device, pad) for pad in GUARDED_PADS.get(component, ()))]
    bench.connect({force_t: bench.pad(device, hi), ground_t: held if len(held) > 1 else held[0]},
                  device_type=DEVICE_TYPE[component])
    force, ground = bench.smu(force_t), bench.smu(ground_t)
    ground.source_voltage(0.0, ground.limits[1])
    ground.output_on()
    return force, ground


@contextmanager
def settling(smus: Sequence[SourceMeasureUnit], seconds: float) -> Iterator[None]:
    """Let every reading of ``smus`` wait ``seconds`` after its level (the device's and
    the cables' capacitance), and give them back the settle time they had, error or not."""
    before = [smu.settle for smu in smus]
    for smu in smus:
        smu.settle = seconds
    try:
        yield
    finally:
        for smu, old in zip(smus, before):
            smu.settle = old
