"""The simulated 4-inch wafer: 101 PCUs with seeded device-to-device variation.

Nine 3×3 arrays (A1–A9, 81 cells, cells of a row share the word line and cells of a
column share the bit line) and 20 single PCUs (S01–S20). The prober reaches one *site*
at a time: an array site (one 3×3 array) or a quad site (Q1–Q5, four single PCUs).

Every device draws its parameters from its own random stream, derived from the wafer
seed and the device index, so a device's parameters do not depend on which other
devices were drawn or in which order.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from labpcu.sim.defects import apply_defects
from labpcu.sim.diode import DiodeParams
from labpcu.sim.memristor import BinaryMemristor, M1Params, M2Params, MultiStateMemristor
from labpcu.sim.pcu import PCU
from labpcu.sim.physics import DEFAULT_PHYSICS, Physics

WAFER_DIAMETER_MM = 101.6
ARRAY_PITCH_MM = 24.0  # distance between array centres
CELL_PITCH_MM = 1.5
SINGLE_RING_RADIUS_MM = 41.0
N_ARRAYS = 9
N_SINGLES = 20
SINGLES_PER_QUAD = 4


def array_cell_id(array: int | str, row: int, col: int) -> str:
    """Device id of an array cell, e.g. ``A3-R2C1``."""
    a = array if isinstance(array, str) else f"A{array}"
    return f"{a}-R{row}C{col}"


@dataclass(frozen=True, slots=True)
class Site:
    """What the probe card touches at once."""

    id: str
    kind: str  # "array" or "quad"
    devices: tuple[str, ...]


@dataclass
class Wafer:
    """All PCUs of the wafer, by id, and the probe sites."""

    seed: int
    devices: dict[str, PCU] = field(default_factory=dict)
    sites: dict[str, Site] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.devices)

    def device(self, device_id: str) -> PCU:
        try:
            return self.devices[device_id]
        except KeyError:
            raise KeyError(f"no device {device_id!r} on the simulated wafer (ids look like A1-R1C1 or S01)") from None

    def site_of(self, device_id: str) -> Site:
        return self.sites[self.device(device_id).site]


def _spatial_factor(x_mm: float, y_mm: float) -> float:
    """Smooth radial film-thickness gradient (a few percent centre to edge)."""
    r2 = (x_mm**2 + y_mm**2) / (WAFER_DIAMETER_MM / 2) ** 2
    return 1.0 + 0.03 * r2


#: diode constants of the default wafer (means; each device draws its own around them).
#: I0 and the soft leakage follow the paper's circuits rather than a textbook junction:
#: the back-to-back pair (sigmoid mode) saturates at I0, so I0 must stand well above
#: M2's off-state leakage and the instruments' floor (the paper: "M2 off has no
#: influence"), and below what keeps M2's LRS/HRS read ratio at +0.1 V above 10^6
#: (D2 is reverse biased in parallel with M2). The leakage sets the rectification at
#: ±1 V to ~10^4, the order of the paper's I–V, while staying soft at ±0.2 V.
DIODE_I0 = 5e-11  # A at 25 °C
DIODE_N = 1.8
DIODE_N_SIGMA = 0.07
DIODE_RS = 300.0  # Ω
DIODE_RSH = 1e12  # Ω, ohmic shunt
DIODE_I_LEAK = 0.5e-12  # A, soft leakage prefactor: I = i_leak·sinh(V/v_leak)
DIODE_V_LEAK = 0.08  # V
DIODE_EA = 0.95  # eV: forward voltage moves ≈ −2 mV/K at constant current
#: A/lux: ~0.3 A/W over a 0.1 mm² device, ~4 W/m² per 1,000 lux of white light
DIODE_RESPONSIVITY = 1.2e-10


def _draw_diode(rng: np.random.Generator, thickness: float, physics: Physics) -> DiodeParams:
    normal = rng.standard_normal(6)  # always six draws: switching spreads off keeps the rest
    spread = 1.0 if physics.on("device_spread") else 0.0
    n_spread = DIODE_N_SIGMA if physics.on("ideality_spread") else 0.0
    return DiodeParams(
        i0=DIODE_I0 * thickness * float(np.exp(0.25 * spread * normal[0])),
        n=float(np.clip(DIODE_N + n_spread * normal[1], 1.5, 2.2)),
        rs=DIODE_RS * float(np.exp(0.08 * spread * normal[2])),
        rsh=DIODE_RSH * float(np.exp(0.3 * spread * normal[3])),
        i_leak=DIODE_I_LEAK * float(np.exp(0.3 * spread * normal[4])),
        v_leak=DIODE_V_LEAK,
        ea=DIODE_EA,
        responsivity=DIODE_RESPONSIVITY * thickness * float(np.exp(0.1 * spread * normal[5])),
    )


def _draw_m1(rng: np.random.Generator, thickness: float, physics: Physics = DEFAULT_PHYSICS) -> MultiStateMemristor:
    base = M1Params()
    # the mechanisms' constants from a child stream: the draws above stay as they were
    dyn = rng.spawn(1)[0].standard_normal(5) * (1.0 if physics.on("device_spread") else 0.0)
    p = M1Params(
        g_min=base.g_min * float(np.exp(0.1 * rng.standard_normal())),
        g_max=base.g_max / thickness * float(np.exp(0.04 * rng.standard_normal())),
        v_th_p=base.v_th_p + 0.01 * float(rng.standard_normal()),
        v_th_d=base.v_th_d + 0.01 * float(rng.standard_normal()),
        v0=base.v0,
        rate=base.rate * float(np.exp(0.15 * rng.standard_normal())),
        c2c_sigma=base.c2c_sigma,
        read_noise=base.read_noise,
        drift_nu=float(np.clip(base.drift_nu + 0.0008 * rng.standard_normal(), 0.0005, 0.006))
        * (1.0 if physics.on("drift") else 0.0),
        drift_tau=base.drift_tau,
        vol_fraction=base.vol_fraction * float(np.exp(0.25 * dyn[0])),
        vol_fast_share=base.vol_fast_share,
        tau_fast=base.tau_fast * float(np.exp(0.3 * dyn[1])),
        tau_slow=base.tau_slow * float(np.exp(0.3 * dyn[2])),
        rd_rate=base.rd_rate * float(np.exp(0.5 * dyn[3])),
        rd_slope=base.rd_slope,
        v_nl=base.v_nl * float(np.exp(0.1 * dyn[4])),
    )
    # as fabricated: low in the range, with spread
    x0 = float(np.clip(0.15 + 0.05 * rng.standard_normal(), 0.02, 0.5))
    return MultiStateMemristor(p, g_prog=p.g_min + x0 * p.g_range, t_prog=-1e6)


def _draw_m2(rng: np.random.Generator, physics: Physics = DEFAULT_PHYSICS) -> BinaryMemristor:
    base = M2Params()
    spread = 1.0 if physics.on("device_spread") else 0.0
    dyn = rng.spawn(1)[0].standard_normal(3) * spread  # child stream, as in _draw_m1
    p = M2Params(
        v_set=base.v_set + 0.04 * float(rng.standard_normal()),
        v_reset=base.v_reset + 0.02 * float(rng.standard_normal()),
        r_off=base.r_off * float(np.exp(0.4 * rng.standard_normal())),
        k_on=base.k_on * float(np.exp(0.1 * rng.standard_normal())),
        r_on_min=base.r_on_min,
        r_on_max=base.r_on_max,
        filament_tau=base.filament_tau,
        read_noise=base.read_noise,
        v_set_c2c=base.v_set_c2c,
        v_reset_c2c=base.v_reset_c2c,
        r_on_c2c=base.r_on_c2c,
        # forming at 1.3-2.0 × the set voltage; endurance log-normal around 1,500
        # cycles (Ag/MAPbI3 cells: 10^2-10^4); worn out, most stick in LRS
        form_ratio=float(np.clip(base.form_ratio + 0.1 * dyn[0], 1.3, 2.0)),
        endurance=max(1, round(base.endurance * float(np.exp(0.5 * dyn[1])))),
        stuck_lrs=bool(dyn[2] > -0.52) if spread else base.stuck_lrs,  # P = 0.7
    )
    return BinaryMemristor(p)


def _make_pcu(index: int, seed: int, physics: Physics, device_id: str, site: str, x: float, y: float,
              **where) -> PCU:
    rng = np.random.default_rng(np.random.SeedSequence([seed, index]))
    thickness = _spatial_factor(x, y)
    return PCU(
        id=device_id,
        site=site,
        x_mm=x,
        y_mm=y,
        d1=_draw_diode(rng, thickness, physics),
        d2=_draw_diode(rng, thickness, physics),
        m1=_draw_m1(rng, thickness, physics),
        m2=_draw_m2(rng, physics),
        **where,
    )


def make_wafer(seed: int = 0, physics: Physics | None = None) -> Wafer:
    """Build the default wafer layout with seeded variation (drawn as ``physics`` says)."""
    physics = physics if physics is not None else DEFAULT_PHYSICS
    wafer = Wafer(seed=seed)
    index = 0
    for a in range(N_ARRAYS):
        aid = f"A{a + 1}"
        ax = (a % 3 - 1) * ARRAY_PITCH_MM
        ay = (1 - a // 3) * ARRAY_PITCH_MM
        ids = []
        for r in range(1, 4):
            for c in range(1, 4):
                did = array_cell_id(aid, r, c)
                x = ax + (c - 2) * CELL_PITCH_MM
                y = ay - (r - 2) * CELL_PITCH_MM
                wafer.devices[did] = _make_pcu(index, seed, physics, did, aid, x, y, array=aid, row=r, col=c)
                ids.append(did)
                index += 1
        wafer.sites[aid] = Site(aid, "array", tuple(ids))
    for s in range(N_SINGLES):
        did = f"S{s + 1:02d}"
        q = f"Q{s // SINGLES_PER_QUAD + 1}"
        angle = 2 * math.pi * s / N_SINGLES
        x = SINGLE_RING_RADIUS_MM * math.cos(angle)
        y = SINGLE_RING_RADIUS_MM * math.sin(angle)
        wafer.devices[did] = _make_pcu(index, seed, physics, did, q, x, y)
        index += 1
        if q in wafer.sites:
            old = wafer.sites[q]
            wafer.sites[q] = Site(q, "quad", old.devices + (did,))
        else:
            wafer.sites[q] = Site(q, "quad", (did,))
    apply_defects(wafer.devices, wafer.seed, physics, WAFER_DIAMETER_MM / 2)  # opens, shorts, stuck devices (physics "defects")
    return wafer
