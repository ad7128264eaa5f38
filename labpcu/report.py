"""The wafer's figures-of-merit report: every band of pcu.md, measured, judged, plotted.

::

    runs = {"diode": "00001-iv_sweep", "hysteresis": "00002-hysteresis",
            "m1_retention": ["00005-retention", "00006-retention"], "vmm": "00009-vmm", ...}
    paths = write_report(Store("wafer.h5"), runs, "report/", seed=0)
    print(format_table(paths.rows)); paths.all_passed

Figures come from the results each protocol's ``analyze`` stored (no re-analysis, so
the report says what the runs said); plots come from the runs' data columns. A role
without a run is "not measured", never an error: a campaign may measure part of the
table. A run that is there but cannot give its figure (missing result, failed fit,
wrong protocol, a definition not met such as a 300 s retention for a 600 s band) fails
its row and the note says why, so ``all_passed`` is never true by omission.
"""

from __future__ import annotations

import base64
import html
import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from labpcu.bands import BANDS, Band
from labpcu.data.errors import StoreError
from labpcu.energy import PAPER_BLOCK_ENERGY, BlockDims, block_energy, implied_op_time, operation_counts, total
from labpcu.data.store import RunInfo, Store, now_iso
from labpcu.protocols.operator_units import relative_error
from labpcu.protocols.programming import IsppScheme, SwitchScheme, summarize_attempts
from labpcu.units import format_quantity

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

#: every role a run can play in the report, in the order of pcu.md's tables
ROLES = ("diode", "hysteresis", "m2_retention", "m1_retention", "ispp", "weight_statistics",
         "vmm", "multiplier", "divider", "softmax", "activation", "screen")
#: roles that may take several runs (states programmed and read in separate runs)
MULTI_RUN_ROLES = frozenset({"m1_retention", "m2_retention"})
#: the protocol each role's run must come from (the operator protocols are not pinned)
EXPECTED_PROTOCOL = {"diode": "iv_sweep", "hysteresis": "hysteresis", "m2_retention": "retention",
                     "m1_retention": "retention", "ispp": "ispp", "weight_statistics": "weight_statistics",
                     "screen": "screen"}
#: the operator roles and how the report names them
OPERATORS = {"vmm": "VMM", "multiplier": "Multiplier", "divider": "Divider", "softmax": "Softmax",
             "activation": "Activation"}
#: operators whose output the paper judges by the average relative error
ERROR_OPERATORS = ("vmm", "multiplier", "divider", "softmax")

M1_READ = 0.01  # V, pcu.md's M1 retention read
M1_DURATION = 600.0  # s
M2_READ = 0.1  # V, pcu.md's M2 read
M2_DURATION = 1000.0  # s
DIODE_BIAS = 1.0  # V, the rectification band's ±1 V
#: pass/fail texts, shared by every output
VERDICT = {True: "pass", False: "FAIL", None: "not measured"}
#: more traces than this and a legend hides the data
MAX_LEGEND = 10
NAN = float("nan")


# ====================================================================== rows
@dataclass(frozen=True)
class FigureRow:
    """One line of the report. ``passed`` is None when not judged (not measured, or an
    informational row without a band)."""

    key: str
    label: str
    published: str
    band_text: str  # "" for informational rows
    measured: float  # NaN when there is no value
    measured_text: str
    passed: bool | None
    run_id: str  # the run(s) it came from, comma-separated; "" when not measured
    note: str  # how it was computed, and why it failed when it did

    @property
    def verdict(self) -> str:
        """pass / FAIL / not measured, or "—" for a row without a band."""
        if not self.band_text:
            return "—"
        return VERDICT[self.passed]


@dataclass(frozen=True)
class ReportPaths:
    """What :func:`write_report` wrote, and its verdict."""

    markdown: Path
    html: Path
    pngs: list[Path]
    all_passed: bool
    rows: list[FigureRow]
    skipped_plots: list[str] = field(default_factory=list)  # "name: reason"
    sections: list[Section] = field(default_factory=list)  # text sections after the table (energy)


@dataclass(frozen=True)
class Section:
    """A text section of the report: paragraphs, then an optional table."""

    title: str
    paragraphs: tuple[str, ...]
    header: tuple[str, ...] = ()
    table: tuple[tuple[str, ...], ...] = ()


class _Unusable(Exception):
    """The run is there but cannot give the figure; the message says why."""


class _Missing(Exception):
    """No run was given for the role."""


@dataclass(frozen=True)
class _Value:
    """A figure taken from results: the value, how, from which runs, and any part of
    the band's definition the runs do not meet."""

    value: float
    note: str
    run_ids: tuple[str, ...]
    problems: tuple[str, ...] = ()
    text: str = ""  # how an informational row shows the value, when more than the number


# ====================================================================== run access
def _normalize(runs: Mapping[str, str | Sequence[str]]) -> dict[str, tuple[str, ...]]:
    """role -> run ids; an unknown role or a non-text id is a mistake in the call."""
    out: dict[str, tuple[str, ...]] = {}
    for role, ids in runs.items():
        if role not in ROLES:
            raise ValueError(f"unknown role {role!r}; roles are {', '.join(ROLES)}")
        ids_t = (ids,) if isinstance(ids, str) else tuple(ids)
        if not all(isinstance(i, str) and i for i in ids_t):
            raise ValueError(f"role {role!r}: run ids must be non-empty strings, not {ids!r}")
        if len(ids_t) > 1 and role not in MULTI_RUN_ROLES:
            raise ValueError(f"role {role!r} takes one run id, got {len(ids_t)}")
        if ids_t:
            out[role] = ids_t
    return out


class _Runs:
    """The runs of each role, read from the store once."""

    def __init__(self, store: Store, ids: dict[str, tuple[str, ...]]) -> None:
        self.store = store
        self.ids = ids
        self._info: dict[str, RunInfo] = {}

    def has(self, role: str) -> bool:
        return role in self.ids

    def info(self, run_id: str) -> RunInfo:
        if run_id not in self._info:
            try:
                self._info[run_id] = self.store.info(run_id)
            except StoreError as exc:
                raise _Unusable(str(exc)) from None
        return self._info[run_id]

    def infos(self, role: str) -> list[RunInfo]:
        """The role's runs, checked to come from the right protocol."""
        if role not in self.ids:
            raise _Missing(role)
        out = [self.info(i) for i in self.ids[role]]
        want = EXPECTED_PROTOCOL.get(role)
        for info in out:
            if want and info.protocol != want:
                raise _Unusable(f"run {info.run_id} is a {info.protocol} run; role {role} needs {want}")
        return out

    def one(self, role: str) -> RunInfo:
        return self.infos(role)[0]

    def data(self, run_id: str, columns: Sequence[str]) -> pd.DataFrame:
        return self.store.read(run_id, columns)


def _get(results: Mapping[str, Any], path: str, run_id: str) -> Any:
    """``results["a"]["b"]`` for path "a.b"; a missing key makes the run unusable."""
    node: Any = results
    for part in path.split("."):
        if not isinstance(node, Mapping) or part not in node:
            raise _Unusable(f"run {run_id} has no result {path}")
        node = node[part]
    return node


def _number(results: Mapping[str, Any], path: str, run_id: str) -> float:
    """A result that must be a real number (None, text or a flag is not)."""
    value = _get(results, path, run_id)
    if value is None:
        raise _Unusable(f"run {run_id}: result {path} is empty (the analysis found no value)")
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise _Unusable(f"run {run_id}: result {path} is {value!r}, not a number")
    return float(value)


def _devices(info: RunInfo) -> dict[str, Mapping[str, Any]]:
    devices = _get(info.results, "devices", info.run_id)
    if not isinstance(devices, Mapping) or not devices:
        raise _Unusable(f"run {info.run_id} has no device results")
    return {str(k): v for k, v in devices.items() if isinstance(v, Mapping)}


def _finite(x: Any) -> float:
    """A device-level value as a float; NaN when absent or not a number."""
    try:
        return float(x)
    except (TypeError, ValueError):
        return NAN


def _failed_devices(info: RunInfo) -> list[str]:
    failed = info.results.get("failed_devices") or {}
    return [f"{info.run_id}: device {d} failed ({why})" for d, why in failed.items()] if isinstance(failed, Mapping) \
        else []


def _extreme(values: Mapping[str, float], lowest: bool) -> str:
    """The name of the lowest (or highest) finite value; "?" when there is none."""
    finite = {k: v for k, v in values.items() if math.isfinite(v)}
    if not finite:
        return "?"
    return (min if lowest else max)(finite, key=lambda k: finite[k])


def _ohms(g: float) -> str:
    """A conductance read as the resistance it means ("∞" for no current)."""
    return format_quantity(1.0 / g, "Ohm") if g else "∞ Ω"


def _close(a: float, b: float) -> bool:
    return math.isclose(a, b, rel_tol=1e-6, abs_tol=1e-12)


def _pct(x: float) -> str:
    return f"{100 * x:.3g} %"


# ====================================================================== figures
def _m2_on_off(r: _Runs) -> _Value:
    """Worst LRS/HRS read ratio of every cycle of every device: "every cycle" is what a
    binary switch must deliver, so the weakest cycle is the figure."""
    info = r.one("hysteresis")
    rid = info.run_id
    value = _number(info.results, "summary.on_off_min", rid)
    devices = _devices(info)
    worst = _extreme({d: _finite(res.get("on_off_min")) for d, res in devices.items()}, lowest=True)
    cycles = info.results.get("summary", {}).get("cycles", "?")
    v_read = float(info.parameters.get("v_read", M2_READ))
    problems = [*_failed_devices(info)]
    if not _close(v_read, M2_READ):
        problems.append(f"read at {v_read:+g} V, not {M2_READ:+g} V")
    note = (f"lowest I_LRS/I_HRS of the +{v_read:g} V reads over {cycles} cycle(s) of {len(devices)} device(s) "
            f"(summary.on_off_min); worst device {worst}")
    return _Value(value, note, (rid,), tuple(problems))


def _retention_checks(info: RunInfo, component: str, v_read: float, duration: float) -> list[str]:
    """What keeps a retention run from meeting pcu.md's definition (component, read
    voltage, duration)."""
    problems = [*_failed_devices(info)]
    summary = info.results.get("summary", {})
    if summary.get("component", component) != component:
        problems.append(f"run {info.run_id} reads {summary.get('component')}, not {component}")
    for dev, res in _devices(info).items():
        t_end, v = _finite(res.get("t_end")), _finite(res.get("v_read", v_read))
        if not t_end >= duration * (1 - 1e-9):
            problems.append(f"{dev} in {info.run_id} was read for {t_end:g} s, not {duration:g} s")
        if not _close(v, v_read):
            problems.append(f"{dev} in {info.run_id} was read at {v:+g} V, not {v_read:+g} V")
    return problems


def _m2_retention(r: _Runs) -> _Value:
    """The on/off ratio left after 1,000 s of reads: the weakest LRS over the strongest
    HRS at the last read. States are told apart by SwitchScheme's thresholds (LRS
    ≤ 10 kΩ, HRS ≥ 1 MΩ at +0.1 V); a device whose last read left its state fails
    "unchanged". Without an HRS device among the runs, the HRS comes from the
    hysteresis run's HRS reads (worst cycle)."""
    s = SwitchScheme()
    g_lrs, g_hrs = 1.0 / s.r_lrs_max, 1.0 / s.r_hrs_min
    lrs: dict[str, float] = {}
    hrs: dict[str, float] = {}
    problems: list[str] = []
    infos = r.infos("m2_retention")
    for info in infos:
        problems += _retention_checks(info, "m2", M2_READ, M2_DURATION)
        for dev, res in _devices(info).items():
            first, last = abs(_finite(res.get("g_first"))), abs(_finite(res.get("g_last")))
            name = f"{dev} in {info.run_id}"
            if first >= g_lrs:
                lrs[name] = last
                if not last >= g_lrs:
                    problems.append(f"{name} left the LRS: {_ohms(last)} at the end")
            elif first <= g_hrs:
                hrs[name] = last
                if not last <= g_hrs:
                    problems.append(f"{name} left the HRS: {_ohms(last)} at the end")
            else:
                problems.append(f"{name} starts at {_ohms(first)}: neither LRS nor HRS")
    if not lrs:
        raise _Unusable("no M2 in the LRS among the m2_retention runs: set one and measure its retention")
    ids = tuple(i.run_id for i in infos)
    lrs_worst = min(lrs, key=lambda k: lrs[k])  # NaN cannot be here: it is neither LRS nor HRS
    if hrs:
        hrs_worst = max(hrs, key=lambda k: hrs[k])
        g_off, source = hrs[hrs_worst], f"HRS {hrs_worst} at its last read"
    else:
        g_off, source, hrs_id = _hysteresis_hrs(r)
        ids += (hrs_id,)
    ratio = lrs[lrs_worst] / g_off if g_off > 0 else math.inf
    note = (f"weakest LRS ({lrs_worst}) at its last read after ≥ {M2_DURATION:g} s of +{M2_READ:g} V reads, "
            f"divided by the {source}; {len(lrs)} LRS and {len(hrs)} HRS device(s) followed")
    return _Value(ratio, note, ids, tuple(problems))


def _hysteresis_hrs(r: _Runs) -> tuple[float, str, str]:
    """The largest HRS conductance the hysteresis run read, for a retention of LRS
    devices only: (G, how, run id)."""
    try:
        info = r.one("hysteresis")
    except _Missing:
        raise _Unusable("no M2 in the HRS among the m2_retention runs and no hysteresis run to take the HRS from") \
            from None
    g = [abs(1.0 / x) for res in _devices(info).values() for x in np.ravel(res.get("r_hrs", []))
         if _finite(x) != 0 and math.isfinite(_finite(x))]
    if not g:
        raise _Unusable(f"no M2 in the HRS among the m2_retention runs, and run {info.run_id} read no HRS")
    return max(g), f"highest HRS conductance read by the hysteresis run {info.run_id} (no HRS device followed)", \
        info.run_id


def _m1_drift(r: _Runs) -> _Value:
    """The largest |fitted drift| G(t_end)/G0 − 1 of every state in every M1 retention
    run: the band holds for every programmed state, so the worst one is the figure."""
    drifts: dict[str, float] = {}
    deviations: list[float] = []
    problems: list[str] = []
    infos = r.infos("m1_retention")
    for info in infos:
        problems += _retention_checks(info, "m1", M1_READ, M1_DURATION)
        for dev, res in _devices(info).items():
            name = f"{dev} in {info.run_id}"
            if "fit_error" in res or res.get("drift") is None:
                problems.append(f"{name}: no drift fit ({res.get('fit_error', 'no drift result')})")
                continue
            drifts[name] = abs(_finite(res["drift"]))
            deviations.append(abs(_finite(res.get("max_deviation"))))
    worst = _extreme(drifts, lowest=False)
    if worst == "?":
        raise _Unusable("no M1 state of the m1_retention runs has a drift fit")
    note = (f"largest |G(t_end)/G0 − 1| of the fit G0·(1 + ν·log10(1 + t/t1)) over {len(drifts)} state(s) in "
            f"{len(infos)} run(s) (devices.*.drift), worst {worst}; largest deviation of a single read from G0 "
            f"{_pct(float(np.nanmax(deviations))) if np.isfinite(deviations).any() else 'n/a'}")
    return _Value(drifts[worst], note, tuple(i.run_id for i in infos), tuple(problems))


def _diode_checks(info: RunInfo) -> list[str]:
    summary = info.results.get("summary", {})
    problems = [*_failed_devices(info)]
    if summary.get("component", "d1") != "d1":
        problems.append(f"run {info.run_id} swept {summary.get('component')}, not d1")
    return problems


def _diode_rectification(r: _Runs) -> _Value:
    """The worst device's |I(+1 V)| / |I(−1 V)|."""
    info = r.one("diode")
    rid = info.run_id
    value = _number(info.results, "summary.rectification_min", rid)
    devices = _devices(info)
    problems = _diode_checks(info)
    bias = _finite(info.results.get("summary", {}).get("rectification_bias", DIODE_BIAS))
    if not _close(bias, DIODE_BIAS):
        problems.append(f"ratio taken at ±{bias:g} V, not ±{DIODE_BIAS:g} V")
    problems += [f"{d}: {res['rectification_error']}" for d, res in devices.items() if "rectification_error" in res]
    worst = _extreme({d: _finite(res.get("rectification_ratio")) for d, res in devices.items()}, lowest=True)
    note = (f"lowest |I(+{bias:g} V)|/|I(−{bias:g} V)| of {len(devices)} device(s) (summary.rectification_min); "
            f"worst {worst}")
    return _Value(value, note, (rid,), tuple(problems))


def _diode_fit(r: _Runs) -> _Value:
    """The worst device's R² of the Shockley fit with series resistance (forward
    branch, points not in compliance)."""
    info = r.one("diode")
    rid = info.run_id
    value = _number(info.results, "summary.r2_min", rid)
    devices = _devices(info)
    problems = _diode_checks(info) + [f"{d}: {res['fit_error']}" for d, res in devices.items() if "fit_error" in res]
    worst = _extreme({d: _finite(res.get("r2")) for d, res in devices.items()}, lowest=True)
    summary = info.results.get("summary", {})
    note = (f"lowest R² of the Shockley fit I = I0·(exp(q(V − I·Rs)/(n·k·T)) − 1) over {len(devices)} device(s) "
            f"(summary.r2_min); worst {worst}; n mean {_finite(summary.get('n_mean')):.3g}")
    return _Value(value, note, (rid,), tuple(problems))


def _ispp(r: _Runs) -> _Value:
    """Fraction of ISPP attempts that reached their target within the pulse bound,
    with the paper's scheme (first ±0.2 V, step ±0.1 V, 20 ms, +0.01 V reads)."""
    info = r.one("ispp")
    rid = info.run_id
    value = _number(info.results, "success_rate", rid)
    paper = IsppScheme()
    problems = [*_failed_devices(info)]
    for name in ("v_start", "v_step", "width", "v_read"):
        used = _finite(info.parameters.get(name, getattr(paper, name)))
        if not _close(used, getattr(paper, name)):
            problems.append(f"not the paper's scheme: {name} = {used:g}, not {getattr(paper, name):g}")
    res = info.results
    note = (f"{res.get('reached', '?')} of {res.get('attempts', '?')} attempts reached their target within "
            f"{res.get('pulse_bound', '?')} pulses (success_rate); mean {_finite(res.get('pulses_mean')):.3g} "
            f"pulses per attempt")
    return _Value(value, note, (rid,), tuple(problems))


def _weight_sigma(r: _Runs) -> _Value:
    """σ of (achieved − target)/(G_max − G_min) over every attempt and device."""
    info = r.one("weight_statistics")
    rid = info.run_id
    res = info.results
    value = _number(res, "sigma_rel_range", rid)
    method = res.get("method", "")
    note = (f"sample σ of (achieved − target)/(G_max − G_min) over {res.get('attempts', '?')} attempts on "
            f"{res.get('devices', '?')} device(s) (sigma_rel_range)" + (f"; {method}" if isinstance(method, str)
                                                                          and method else ""))
    return _Value(value, note, (rid,), tuple(_failed_devices(info)))


def _operator_error(role: str) -> Callable[[_Runs], _Value]:
    """The operator run's own average relative error (pcu.md's metric)."""
    def compute(r: _Runs) -> _Value:
        info = r.one(role)
        value = _number(info.results, "summary.mean_relative_error", info.run_id)
        note = (f"mean of |y − y_ideal|/|y_ideal| over every output as the {info.protocol} run reports it "
                f"(summary.mean_relative_error)")
        method = info.results.get("summary", {}).get("method")
        if isinstance(method, str) and method:
            note += f"; {method}"
        return _Value(value, note, (info.run_id,), tuple(_failed_devices(info)))
    return compute


def _summary_value(role: str, key: str, how: str) -> Callable[[_Runs], _Value]:
    """A figure the run's summary states directly."""
    def compute(r: _Runs) -> _Value:
        info = r.one(role)
        value = _number(info.results, f"summary.{key}", info.run_id)
        return _Value(value, f"{how} (summary.{key})", (info.run_id,), tuple(_failed_devices(info)))
    return compute


# ---------------------------------------------------------------------- VMM weights
def _vmm_summary(r: _Runs, key: str) -> tuple[RunInfo, Mapping[str, Any], float]:
    info = r.one("vmm")
    return info, info.results.get("summary", {}), _number(info.results, f"summary.{key}", info.run_id)


def _vmm_effective_weight(r: _Runs) -> _Value:
    """How far the weight the crossbar gives is from the one programmed, before any
    calibration (D1 in series with M1): the vmm run's effective-weight map."""
    info, s, value = _vmm_summary(r, "effective_weight_error_mean")
    note = (f"mean |w_eff/w − 1| over the effective-weight map below full scale ({s.get('effective_weight_levels', '?')} "
            f"levels × 3 cells, range {_pct(_finite(s.get('effective_weight_error_min')))} – "
            f"{_pct(_finite(s.get('effective_weight_error_max')))}): each row read alone at v_read = "
            f"{_finite(s.get('v_read')):g} V, no calibration, weights as fractions of full scale. The VMM's own three "
            f"cells (G_i/ΣG against I_i/ΣI): mean {_pct(_finite(s.get('column_weight_error_mean')))}, max "
            f"{_pct(_finite(s.get('column_weight_error_max')))}. D1 in series takes part of each pulse, more of it at "
            "small weights; the VMM figure hides this by calibrating on the measured row currents, and the codebook "
            "gives trainers the map (the vmm table's effective_weight)")
    return _Value(value, note, (info.run_id,), tuple(_failed_devices(info)))


def _vmm_uncalibrated(r: _Runs) -> _Value:
    info, s, value = _vmm_summary(r, "mean_relative_error_uncalibrated")
    note = (f"the VMM error had the expected output used the programmed conductances instead of the measured row "
            f"currents (same inputs, same output normalization); calibrated: {_pct(_finite(s.get('mean_relative_error')))}")
    return _Value(value, note, (info.run_id,), tuple(_failed_devices(info)))


def _vmm_quantization(r: _Runs) -> _Value:
    """The same vectors at one more input bit: what the input quantization costs."""
    info, s, value = _vmm_summary(r, "mean_relative_error_6bit")
    bits = int(_finite(s.get("input_bits", 5)))
    own = _finite(s.get(f"mean_relative_error_{bits}bit"))
    analog = _finite(s.get("mean_relative_error_quantized_ideal"))
    note = (f"the first {s.get('compare_vectors', '?')} vectors of the large matrix again at 6-bit inputs: "
            f"{_pct(value)}, against {_pct(own)} at {bits} bits on the same vectors; against the quantized inputs "
            f"(no rounding error) the {bits}-bit error is {_pct(analog)}")
    if math.isfinite(own) and math.isfinite(analog) and analog < 0.5 * own:
        note += f". So the VMM figure is set by the {bits}-bit input quantization, not by the analog multiply"
    return _Value(value, note, (info.run_id,), tuple(_failed_devices(info)))


#: band key -> (role, how its value is found)
BAND_SOURCES: dict[str, tuple[str, Callable[[_Runs], _Value]]] = {
    "m2_on_off": ("hysteresis", _m2_on_off),
    "m2_retention_ratio": ("m2_retention", _m2_retention),
    "m1_drift": ("m1_retention", _m1_drift),
    "diode_rectification": ("diode", _diode_rectification),
    "diode_fit_r2": ("diode", _diode_fit),
    "ispp_success": ("ispp", _ispp),
    "weight_sigma": ("weight_statistics", _weight_sigma),
    "vmm_error": ("vmm", _operator_error("vmm")),
    "divider_error": ("divider", _operator_error("divider")),
    "multiplier_error": ("multiplier", _operator_error("multiplier")),
    "softmax_error": ("softmax", _operator_error("softmax")),
    "softplus_r2": ("activation", _summary_value("activation", "softplus_r2",
                                                 "R² of the fit f(x) = A·softplus(K·x)")),
    "sigmoid_r2": ("activation", _summary_value("activation", "sigmoid_r2",
                                                "R² of the worst unit's fit of A·sigmoid(K·(V − V0)) + offset to its "
                                                "D1–D2 back-to-back sweep (pcu.md: f(x) = 2·sigmoid(K·x) − 1)")),
    "sigmoid_b2b_k": ("activation", lambda r: _back_to_back_k(r)),
}


def _back_to_back_k(r: _Runs) -> _Value:
    """K of the back-to-back diodes: every unit's must lie in the band, so the figure
    is the unit K farthest from the band's centre."""
    info = r.one("activation")
    s = info.results.get("summary", {})
    if s.get("sigmoid_circuit", "diodes") != "diodes":
        raise _Unusable("the activation run measured the sigmoid through the softmax unit (sigmoid_circuit), "
                        "not the back-to-back diodes")
    lo = _number(info.results, "summary.sigmoid_k_min", info.run_id)
    hi = _number(info.results, "summary.sigmoid_k_max", info.run_id)
    centre = 22.5
    value = lo if abs(lo - centre) > abs(hi - centre) else hi
    note = (f"K per unit from the back-to-back fit, in 1/V: {lo:.3g} – {hi:.3g} (mean "
            f"{_finite(s.get('sigmoid_k')):.3g}); an ideal pair gives 1/(n·kT/q) ≈ 21 /V at n = 1.8")
    return _Value(value, note, (info.run_id,), tuple(_failed_devices(info)))


@dataclass(frozen=True)
class _Info:
    """An informational row: no band, just the value and how to show it."""

    key: str
    label: str
    published: str
    role: str
    compute: Callable[[_Runs], _Value]
    show: Callable[[float], str]


def _plain(value: float) -> str:
    return format(value, ".4g")


def _info_rows() -> list[_Info]:
    energy = [_Info(f"{role}_energy_per_op", f"{name} energy per operation", "—", role,
                    _summary_value(role, "energy_per_op", "device energy of one scalar operation: Σ|V·I| of the "
                                   "biased terminals × the run's op_time, at its unit currents; not the paper's "
                                   "per-Transformer-block system figure (see Energy)"),
                    lambda v: format_quantity(v, "J", 3))
              for role, name in OPERATORS.items()]
    fits = [_Info(f"{fn}_{p.lower()}", f"{fn.capitalize()} fit {p}", "fit of A, K", "activation",
                  _summary_value("activation", f"{fn}_{p.lower()}", f"fitted {p}"), _plain)
            for fn in ("softplus", "sigmoid") for p in ("A", "K")]
    gelu = _Info("gelu_mean_abs_error", "GELU mean absolute error", "GELU(x) ≈ x·sigmoid(1.702x)", "activation",
                 _summary_value("activation", "gelu_mean_abs_error", "mean |y − GELU(x)|"), _plain)
    vmm = [_Info("vmm_effective_weight_error", "VMM effective-weight error (D1 in series, before calibration)", "—",
                 "vmm", _vmm_effective_weight, _pct),
           _Info("vmm_error_uncalibrated", "VMM average relative error against the programmed weights", "—", "vmm",
                 _vmm_uncalibrated, _pct),
           _Info("vmm_error_6bit", "VMM average relative error at 6-bit inputs", "—", "vmm", _vmm_quantization,
                 _pct)]
    screen = _Info("screen_yield", "Wafer yield from screening (figures above use working devices only)",
                   "—", "screen", _screen_yield, _pct)
    return [*energy, *fits, gelu, *vmm, screen]


def _screen_yield(r: _Runs) -> _Value:
    """Working / screened PCUs, and how many of each defect class the screening found."""
    info = r.one("screen")
    res = info.results
    value = _number(res, "yield", info.run_id)
    counts = {k: int(v) for k, v in (res.get("counts") or {}).items() if v}
    n = int(res.get("screened", 0))
    defects = ", ".join(f"{k} {v}" for k, v in counts.items() if k != "working") or "no defects"
    by_class = res.get("by_class") or {}
    left_out = "; ".join(f"{k}: {', '.join(map(str, v))}" for k, v in by_class.items() if k != "working")
    note = (f"{counts.get('working', 0)} of {n} screened PCUs working (yield); {defects}"
            + (f"; not working (a campaign with working_only leaves them out): {left_out}" if left_out else "")
            + f"; {res.get('method', '')}")
    text = f"{_pct(value)} ({counts.get('working', 0)}/{n}; {defects})"
    return _Value(value, note, (info.run_id,), tuple(_failed_devices(info)), text)


def _judge(r: _Runs, role: str, compute: Callable[[_Runs], _Value]) -> tuple[_Value | None, str, str]:
    """(value, note, run ids) of one row; value None with the reason when unusable.
    A run that did not complete is a problem of its figure."""
    ids = ", ".join(r.ids.get(role, ()))
    try:
        v = compute(r)
    except _Unusable as exc:
        return None, str(exc), ids
    except _Missing as exc:
        return None, f"no {exc.args[0]} run given", ids
    problems = list(v.problems)
    for rid in v.run_ids:
        status = r.info(rid).status
        if status != "completed":
            problems.append(f"run {rid} is {status}, not completed")
    return _Value(v.value, v.note, v.run_ids, tuple(problems), v.text), v.note, ", ".join(v.run_ids)


def _band_row(r: _Runs, band: Band) -> FigureRow:
    role, compute = BAND_SOURCES[band.key]
    if not r.has(role):
        return FigureRow(band.key, band.label, band.published, band.text, NAN, "not measured", None, "",
                         f"no {role} run given")
    v, note, ids = _judge(r, role, compute)
    if v is None:
        return FigureRow(band.key, band.label, band.published, band.text, NAN, "no value", False, ids, note)
    passed = band.contains(v.value) and not v.problems
    if v.problems:
        note += "; FAILS the definition: " + "; ".join(v.problems)
    return FigureRow(band.key, band.label, band.published, band.text, v.value, band.format(v.value), passed, ids,
                     note)


def _info_row(r: _Runs, spec: _Info) -> FigureRow:
    if not r.has(spec.role):
        return FigureRow(spec.key, spec.label, spec.published, "", NAN, "not measured", None, "",
                         f"no {spec.role} run given")
    v, note, ids = _judge(r, spec.role, spec.compute)
    if v is None:
        return FigureRow(spec.key, spec.label, spec.published, "", NAN, "no value", None, ids, note)
    if v.problems:  # no band to fail, but the reader should know
        note += "; caution: " + "; ".join(v.problems)
    return FigureRow(spec.key, spec.label, spec.published, "", v.value, v.text or spec.show(v.value), None, ids,
                     note)


def _rows(r: _Runs) -> list[FigureRow]:
    return [*(_band_row(r, b) for b in BANDS), *(_info_row(r, s) for s in _info_rows())]


def collect_figures(store: Store, runs: Mapping[str, str | Sequence[str]]) -> list[FigureRow]:
    """One row per band of pcu.md (in its order), then the informational rows (energy
    per operation of each operator, activation fit parameters). ``runs`` maps a role
    (:data:`ROLES`) to its run id, or several for m1_retention and m2_retention; a role
    left out (or given no id) is "not measured"."""
    return _rows(_Runs(store, _normalize(runs)))


def all_passed(rows: Iterable[FigureRow]) -> bool:
    """True if every band row that was measured passed, and at least one was: a report
    with nothing measured proves nothing."""
    judged = [row.passed for row in rows if row.band_text and row.passed is not None]
    return bool(judged) and all(judged)


# ====================================================================== energy
def _per_op_energy(r: _Runs) -> dict[str, tuple[float, float]]:
    """role -> (measured energy per operation J, op_time s) of each operator run given."""
    out = {}
    for role in OPERATORS:
        if not r.has(role):
            continue
        try:
            info = r.one(role)
        except _Unusable:
            continue
        e = _finite(info.results.get("summary", {}).get("energy_per_op"))
        if math.isfinite(e) and info.status == "completed":
            out[role] = (e, _finite(info.parameters.get("op_time", 20e-3)))
    return out


def energy_section(r: _Runs, dims: BlockDims | None = None) -> Section | None:
    """What the nJ per-operation figures are, why they are not the paper's mJ per block,
    and a block rebuilt from them (an estimate for stated dimensions); None without any
    operator energy."""
    per_op = _per_op_energy(r)
    if not per_op:
        return None
    dims = dims or BlockDims()
    vmm_rows = softmax_len = None
    if r.has("vmm") and "vmm" in per_op:
        vmm_rows = int(_finite(r.one("vmm").results.get("summary", {}).get("tile_rows", 3)))
    if r.has("softmax") and "softmax" in per_op:
        softmax_len = int(_finite(r.one("softmax").results.get("summary", {}).get("length", 4)))
    rows = block_energy(operation_counts(dims, vmm_rows=vmm_rows or 3, softmax_length=softmax_len or 4), per_op)
    block = total(rows)
    times = sorted({t for _, t in per_op.values()})
    t_text = ", ".join(format_quantity(t, "s", 3) for t in times)
    paragraphs = [
        "The energy rows of the table are device energies of one scalar operation: Σ|V·I| of the terminals biased "
        f"for it, times the run's op_time ({t_text}, one reading at 1 PLC), at the unit currents each protocol "
        "chose. One VMM operation is one dot product of a 1×3 column (three multiply-accumulates), one softmax "
        "operation one vector. Nothing else is in them: no drivers, converters, wires or data movement.",
        "The paper's 0.09 mJ (PCU), 0.32 mJ (memristive MAC accelerator) and 5.37 mJ (GPU) are per execution of a "
        "whole Transformer block: a system estimate, for a model size, operating speed and peripherals that pcu.md "
        "does not give. The two must not be compared directly.",
        f"Below, an estimate only: one block rebuilt from the measured per-operation energies times the operations "
        f"it needs. Block dimensions: {dims.source}. Each count's formula is given so that other dimensions can be "
        "put in; LayerNorm sums and square roots, and all peripherals, are left out (no measured operator).",
    ]
    if math.isfinite(block):
        paper = ", ".join(f"{k} {format_quantity(v, 'J', 3)}" for k, v in PAPER_BLOCK_ENERGY.items())
        t_paper = implied_op_time(rows, PAPER_BLOCK_ENERGY["PCU"])
        pace = ("far faster operation than the bench's readings" if t_paper < 0.1 * min(times)
                else "an operation time like the bench's" if t_paper < 10 * max(times) else "slower operation")
        paragraphs.append(
            f"Rebuilt device energy per block (estimate): {format_quantity(block, 'J', 3)} at the bench's op_time, "
            f"against the paper's {paper}. The same devices at the same currents would spend the paper's PCU figure "
            f"if each operation lasted {format_quantity(t_paper, 's', 3)} (device energy scales with the time an "
            f"operation is held), so the paper's figure corresponds to {pace}, peripherals aside.")
    else:
        missing = sorted({row.count.role for row in rows if not math.isfinite(row.energy_per_op)})
        paragraphs.append(f"No block total: no energy was measured for {', '.join(missing)}.")
    table = tuple((row.count.operation, OPERATORS[row.count.role], row.count.formula, f"{row.count.count:.4g}",
                   format_quantity(row.energy_per_op, "J", 3) if math.isfinite(row.energy_per_op) else "not measured",
                   format_quantity(row.energy, "J", 3) if math.isfinite(row.energy) else "—") for row in rows)
    table += (("total per block (estimate)", "", "", "", "", format_quantity(block, "J", 3) if math.isfinite(block)
               else "incomplete"),)
    table += tuple((f"paper: {k}", "", "per block, system estimate", "", "", format_quantity(v, "J", 3))
                   for k, v in PAPER_BLOCK_ENERGY.items())
    return Section("Energy", tuple(paragraphs),
                   ("operation", "operator", "count per block", "count", "measured energy per operation",
                    "energy per block"), table)


# ====================================================================== plots
def _new_figure(ncols: int = 1) -> tuple[Figure, list[Axes]]:
    """A figure not registered with pyplot (Agg canvas), so nothing is left open."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    from matplotlib.figure import Figure

    fig = Figure(figsize=(6.4 if ncols == 1 else 4.6 * ncols, 4.4), layout="constrained")
    axes = [fig.add_subplot(1, ncols, k + 1) for k in range(ncols)]
    return fig, axes


def _save(fig: Figure, path: Path) -> Path:
    fig.savefig(path, dpi=110)
    fig.clear()
    return path


def _legend(ax: Axes, traces: int, **kw: Any) -> None:
    if 1 < traces <= MAX_LEGEND:
        ax.legend(fontsize="small", **kw)


def _positive(x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Points a log axis can show."""
    keep = np.isfinite(x) & np.isfinite(y) & (y > 0)
    return x[keep], y[keep]


def _plot_diode(r: _Runs, path: Path) -> Path:
    rid = r.ids["diode"][0]
    df = r.data(rid, ["v", "i", "device"])
    fig, (ax,) = _new_figure()
    groups = list(df.groupby("device", sort=False))
    for dev, g in groups:
        v, i = _positive(g["v"].to_numpy(float), np.abs(g["i"].to_numpy(float)))
        ax.plot(v, i, marker=".", markersize=3, linewidth=1, label=str(dev))
    ax.set(yscale="log", xlabel="V (V)", ylabel="|I| (A)", title=f"Diode D1 I–V ({rid})")
    ax.grid(True, which="both", alpha=0.3)
    _legend(ax, len(groups))
    return _save(fig, path)


def _plot_hysteresis(r: _Runs, path: Path) -> Path:
    rid = r.ids["hysteresis"][0]
    df = r.data(rid, ["cycle", "phase", "v", "i", "device"])
    sweeps = df[df["phase"].isin(["set", "reset"]) & (df["cycle"] >= 1)]
    fig, (ax,) = _new_figure()
    groups = list(sweeps.groupby(["device", "cycle"], sort=False))
    for (dev, cycle), g in groups:
        v, i = _positive(g["v"].to_numpy(float), np.abs(g["i"].to_numpy(float)))
        ax.plot(v, i, linewidth=1, label=f"{dev} cycle {cycle}")
    reads = df[df["phase"].isin(["read_set", "read_reset"])]
    v, i = _positive(reads["v"].to_numpy(float), np.abs(reads["i"].to_numpy(float)))
    ax.scatter(v, i, s=14, color="black", zorder=3, label="reads")
    ax.set(yscale="log", xlabel="V (V)", ylabel="|I| (A)", title=f"M2 hysteresis ({rid})")
    ax.grid(True, which="both", alpha=0.3)
    _legend(ax, len(groups) + 1)
    return _save(fig, path)


def _retention_traces(r: _Runs, role: str) -> list[tuple[str, np.ndarray, np.ndarray]]:
    """(label, t, g) per device of every run of the role."""
    out = []
    for rid in r.ids[role]:
        df = r.data(rid, ["t", "g", "device"])
        for dev, g in df.groupby("device", sort=False):
            out.append((f"{dev} ({rid})", g["t"].to_numpy(float), g["g"].to_numpy(float)))
    return out


def _plot_m1_retention(r: _Runs, path: Path) -> Path:
    traces = _retention_traces(r, "m1_retention")
    fig, (ax,) = _new_figure()
    for label, t, g in traces:
        keep = t > 0  # log time: the first read is t = 0
        ax.plot(t[keep], 100 * (g[keep] / g[0] - 1), marker=".", markersize=3, linewidth=1, label=label)
    for limit in (-2, 2):
        ax.axhline(limit, color="red", linestyle="--", linewidth=0.8)
    ax.set(xscale="log", xlabel="t (s)", ylabel="G/G(first read) − 1 (%)",
           title="M1 retention at +0.01 V (band ±2 %)")
    ax.grid(True, which="both", alpha=0.3)
    _legend(ax, len(traces))
    return _save(fig, path)


def _plot_m2_retention(r: _Runs, path: Path) -> Path:
    traces = _retention_traces(r, "m2_retention")
    fig, (ax,) = _new_figure()
    for label, t, g in traces:
        tt, gg = _positive(t, np.abs(g))
        keep = tt > 0
        ax.plot(tt[keep], gg[keep], marker=".", markersize=3, linewidth=1, label=label)
    ax.set(xscale="log", yscale="log", xlabel="t (s)", ylabel="|G| at +0.1 V (S)", title="M2 retention")
    ax.grid(True, which="both", alpha=0.3)
    _legend(ax, len(traces))
    return _save(fig, path)


def _plot_weight_errors(r: _Runs, path: Path) -> Path:
    rid = r.ids["weight_statistics"][0]
    df = r.data(rid, ["target", "achieved", "g_min", "g_max"])
    rel = ((df["achieved"] - df["target"]) / (df["g_max"] - df["g_min"])).to_numpy(float)
    rel = rel[np.isfinite(rel)]
    if len(rel) < 2:
        raise ValueError("fewer than 2 programmed weights")
    sigma = float(np.std(rel, ddof=1))
    fig, (ax,) = _new_figure()
    ax.hist(rel, bins=min(40, max(5, len(rel) // 5)), color="tab:blue", alpha=0.8)
    for x in (-sigma, sigma):
        ax.axvline(x, color="black", linestyle="--", linewidth=0.8)
    ax.set(xlabel="(achieved − target) / (G_max − G_min)", ylabel="attempts",
           title=f"Programmed-weight error, σ = {sigma:.4f} ({rid})")
    return _save(fig, path)


def _plot_ispp_pulses(r: _Runs, path: Path) -> Path:
    rid = r.ids["ispp"][0]
    att = summarize_attempts(r.data(rid, ["device", "attempt", "target", "pulse", "conductance", "status"]))
    if att.empty:
        raise ValueError("no ISPP attempts")
    fig, (ax,) = _new_figure()
    top = int(att["pulses"].max())
    width = max(1, math.ceil((top + 1) / 40))
    bins = -0.5 + width * np.arange(math.ceil((top + 1) / width) + 1)  # the last edge is past top
    missed = int((~att["reached"]).sum())
    ax.hist(att.loc[att["reached"], "pulses"], bins=bins, label=f"reached ({len(att) - missed})", color="tab:green")
    ax.hist(att.loc[~att["reached"], "pulses"], bins=bins, label=f"not reached ({missed})", color="tab:red")
    ax.set(xlabel="pulses per attempt", ylabel="attempts",
           title=f"ISPP: {att['reached'].mean():.1%} of {len(att)} attempts reached ({rid})")
    ax.legend(fontsize="small")
    return _save(fig, path)


def _relative_error(df: pd.DataFrame) -> np.ndarray:
    """The paper's metric of the outputs whose ideal is not 0 (as the operator
    protocols compute it)."""
    rel = relative_error(df["y"].to_numpy(float), df["y_ideal"].to_numpy(float))
    return rel[np.isfinite(rel)]


def _plot_measured_vs_ideal(r: _Runs, role: str, path: Path) -> Path:
    rid = r.ids[role][0]
    df = r.data(rid, ["y", "y_ideal", "device"])
    fig, (ax,) = _new_figure()
    groups = list(df.groupby("device", sort=False))
    for dev, g in groups:
        ax.scatter(g["y_ideal"], g["y"], s=6, label=str(dev))
    finite = df[["y", "y_ideal"]].to_numpy(float)
    finite = finite[np.isfinite(finite)]
    if finite.size:
        lo, hi = float(finite.min()), float(finite.max())
        ax.plot([lo, hi], [lo, hi], color="black", linewidth=0.8, label="ideal")
    ax.set(xlabel="ideal output", ylabel="measured output", title=f"{OPERATORS[role]}: measured vs ideal ({rid})")
    ax.grid(True, alpha=0.3)
    _legend(ax, len(groups) + 1, markerscale=2)
    return _save(fig, path)


def _plot_error_histogram(r: _Runs, role: str, path: Path) -> Path:
    rid = r.ids[role][0]
    rel = _relative_error(r.data(rid, ["y", "y_ideal"]))
    if not len(rel):
        raise ValueError("no output with a non-zero ideal value")
    fig, (ax,) = _new_figure()
    ax.hist(100 * rel, bins=min(50, max(5, len(rel) // 10)), color="tab:blue", alpha=0.8)
    mean = 100 * float(np.mean(rel))
    ax.axvline(mean, color="black", linestyle="--", linewidth=0.8, label=f"mean {mean:.3g} %")
    ax.set(xlabel="|y − y_ideal| / |y_ideal| (%)", ylabel="outputs",
           title=f"{OPERATORS[role]}: relative error, mean {mean:.3g} % ({rid})")
    ax.legend(fontsize="small")
    return _save(fig, path)


def _plot_activation(r: _Runs, path: Path) -> Path:
    rid = r.ids["activation"][0]
    df = r.data(rid, ["x", "y", "y_ideal", "function"])
    functions = [f for f in ("softplus", "sigmoid", "gelu") if (df["function"] == f).any()]
    functions += [f for f in pd.unique(df["function"]) if f not in functions]
    if not functions:
        raise ValueError("no activation data")
    fig, axes = _new_figure(len(functions))
    for ax, fn in zip(axes, functions):
        g = df[df["function"] == fn].sort_values("x")
        ax.scatter(g["x"], g["y"], s=6, label="measured")
        ideal = g.drop_duplicates("x")
        ax.plot(ideal["x"], ideal["y_ideal"], color="black", linewidth=1, label="ideal")
        ax.set(xlabel="x", ylabel="y", title=str(fn))
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize="small")
    fig.suptitle(f"Activation functions ({rid})")
    return _save(fig, path)


def _plot_specs() -> list[tuple[str, str, str, Callable[[_Runs, Path], Path]]]:
    """(file name, caption, role, how): every plot the report can draw."""
    specs: list[tuple[str, str, str, Callable[[_Runs, Path], Path]]] = [
        ("diode_iv.png", "Diode D1 I–V (|I|, log scale)", "diode", _plot_diode),
        ("m2_hysteresis.png", "M2 hysteresis", "hysteresis", _plot_hysteresis),
        ("m1_retention.png", "M1 retention: relative drift vs time", "m1_retention", _plot_m1_retention),
        ("m2_retention.png", "M2 retention: conductance vs time", "m2_retention", _plot_m2_retention),
        ("ispp_pulses.png", "ISPP: pulses per attempt", "ispp", _plot_ispp_pulses),
        ("weight_errors.png", "Programmed-weight error histogram", "weight_statistics", _plot_weight_errors),
    ]
    for role in ERROR_OPERATORS:
        name = OPERATORS[role]
        specs.append((f"{role}_measured_vs_ideal.png", f"{name}: measured vs ideal", role,
                      lambda r, p, role=role: _plot_measured_vs_ideal(r, role, p)))
        specs.append((f"{role}_relative_error.png", f"{name}: relative-error histogram", role,
                      lambda r, p, role=role: _plot_error_histogram(r, role, p)))
    specs.append(("activation.png", "Activation functions: measured and ideal vs x", "activation", _plot_activation))
    specs.append(("yield_map.png", "Wafer yield map: each screened PCU by class", "screen", _plot_yield_map))
    return specs


def _plot_yield_map(r: _Runs, path: Path) -> Path:
    """The screened PCUs at their wafer positions, coloured by class."""
    rid = r.ids["screen"][0]
    df = r.data(rid, ["device", "classification", "x_mm", "y_mm"])
    fig, (ax,) = _new_figure()
    from matplotlib.patches import Circle

    ax.add_patch(Circle((0, 0), 50.8, fill=False, color="0.6"))  # the 4-inch wafer
    for cls, part in df.groupby("classification", sort=True):
        working = cls == "working"
        ax.scatter(part["x_mm"], part["y_mm"], s=14 if working else 40, marker="o" if working else "X",
                   label=f"{cls} ({len(part)})", alpha=0.6 if working else 1.0)
    ax.set(xlabel="x (mm)", ylabel="y (mm)", aspect="equal", xlim=(-55, 55), ylim=(-55, 55),
           title=f"Wafer yield map ({rid})")
    ax.legend(fontsize="small", loc="upper right")
    return _save(fig, path)


def _draw_plots(r: _Runs, out_dir: Path) -> tuple[list[tuple[Path, str]], list[str]]:
    """Draw every plot whose run was given: ([(path, caption)], ["file: why skipped"]).
    A plot that cannot be drawn is listed, not raised: the table matters more."""
    drawn: list[tuple[Path, str]] = []
    skipped: list[str] = []
    for name, caption, role, draw in _plot_specs():
        if not r.has(role):
            continue
        try:
            drawn.append((draw(r, out_dir / name), caption))
        except (StoreError, KeyError, ValueError, TypeError) as exc:
            skipped.append(f"{name}: {exc}")
    return drawn, skipped


# ====================================================================== outputs
def _md_cell(text: str) -> str:
    """Text a Markdown table cell shows as is (pipes and line breaks would split it)."""
    return text.replace("\\", "\\\\").replace("|", "\\|").replace("\n", " ")


def _md_verdict(row: FigureRow) -> str:
    return "**FAIL**" if row.passed is False and row.band_text else row.verdict


def _counts(rows: Sequence[FigureRow]) -> tuple[int, int, int]:
    """(passed, failed, not measured) over the band rows."""
    band = [row for row in rows if row.band_text]
    return (sum(row.passed is True for row in band), sum(row.passed is False for row in band),
            sum(row.passed is None for row in band))


def _headline(rows: Sequence[FigureRow]) -> str:
    ok, bad, missing = _counts(rows)
    verdict = "PASS" if all_passed(rows) else "FAIL"
    return f"{verdict}: {ok} figure(s) in their band, {bad} outside or not computable, {missing} not measured"


def _header_lines(store: Store, title: str, seed: int | None) -> list[str]:
    facts = [f"store: {store.path}", f"generated: {now_iso()}"]
    if seed is not None:
        facts.insert(1, f"wafer seed: {seed}")
    return [title, " · ".join(facts)]


def render_markdown(rows: Sequence[FigureRow], plots: Sequence[tuple[str, str]], skipped: Sequence[str],
                    header: Sequence[str], sections: Sequence[Section] = ()) -> str:
    """The report as Markdown: table, text sections (energy), plots (relative links),
    how each figure was computed. ``plots`` are (relative path, caption)."""
    lines = [f"# {header[0]}", "", *header[1:], "", f"**{_headline(rows)}**", "",
             "| figure | published | band | measured | pass/fail |", "|---|---|---|---|---|"]
    for row in rows:
        cells = (row.label, row.published, row.band_text or "—", row.measured_text, _md_verdict(row))
        lines.append("| " + " | ".join(_md_cell(c) for c in cells) + " |")
    for sec in sections:
        lines += ["", f"## {sec.title}", ""]
        for text in sec.paragraphs:
            lines += [text, ""]
        if sec.header:
            lines += ["| " + " | ".join(_md_cell(c) for c in sec.header) + " |", "|" + "---|" * len(sec.header)]
            lines += ["| " + " | ".join(_md_cell(c) for c in cells) + " |" for cells in sec.table]
    lines += ["", "## Plots", ""]
    lines += [f"- [{caption}]({rel})" for rel, caption in plots] or ["- none"]
    if skipped:
        lines += ["", "Plots not drawn:", "", *(f"- {s}" for s in skipped)]
    lines += ["", "## How each figure was computed", "", _METHOD, ""]
    for row in rows:
        source = f" (run {row.run_id})" if row.run_id else ""
        lines.append(f"- **{row.label}**{source}: {row.note}")
    return "\n".join(lines) + "\n"


_METHOD = ("Relative error is |measured − expected| / |expected|, averaged over all outputs measured (pcu.md). "
           "Every figure is the value the run's own analysis stored; a figure that must hold for every device "
           "or state is the worst one.")

_CSS = """body{font-family:sans-serif;margin:2em;max-width:70em}
table{border-collapse:collapse}th,td{border:1px solid #bbb;padding:.3em .6em;text-align:left}
th{background:#eee}td.pass{background:#c8f0c8}td.fail{background:#f5b5b5;font-weight:bold}
td.none{background:#f0f0f0;color:#666}figure{display:inline-block;margin:1em}
img{max-width:40em}.headline{font-size:1.2em;font-weight:bold}"""


def render_html(rows: Sequence[FigureRow], plots: Sequence[tuple[str, str]], skipped: Sequence[str],
                header: Sequence[str], sections: Sequence[Section] = ()) -> str:
    """The same report as one HTML page; every text is escaped. ``plots`` are (image
    source, caption): :func:`write_report` passes ``data:`` URIs (:func:`png_data_uri`),
    so the page is self-contained (inline style, embedded images, no link to any file)."""
    e = html.escape
    css_class = {True: "pass", False: "fail", None: "none"}
    out = ["<!DOCTYPE html>", '<html lang="en"><head><meta charset="utf-8">', f"<title>{e(header[0])}</title>",
           f"<style>{_CSS}</style></head><body>", f"<h1>{e(header[0])}</h1>",
           *(f"<p>{e(line)}</p>" for line in header[1:]), f'<p class="headline">{e(_headline(rows))}</p>',
           "<table><thead><tr><th>figure</th><th>published</th><th>band</th><th>measured</th><th>pass/fail</th>"
           "</tr></thead><tbody>"]
    for row in rows:
        cls = css_class[row.passed] if row.band_text else "none"
        out.append(f"<tr><td>{e(row.label)}</td><td>{e(row.published)}</td><td>{e(row.band_text or '—')}</td>"
                   f"<td>{e(row.measured_text)}</td><td class=\"{cls}\">{e(row.verdict)}</td></tr>")
    out.append("</tbody></table>")
    for sec in sections:
        out += [f"<h2>{e(sec.title)}</h2>", *(f"<p>{e(text)}</p>" for text in sec.paragraphs)]
        if sec.header:
            out.append("<table><thead><tr>" + "".join(f"<th>{e(c)}</th>" for c in sec.header) + "</tr></thead><tbody>")
            out += ["<tr>" + "".join(f"<td>{e(c)}</td>" for c in cells) + "</tr>" for cells in sec.table]
            out.append("</tbody></table>")
    out.append("<h2>Plots</h2>")
    out += [f'<figure><img src="{e(rel)}" alt="{e(caption)}"><figcaption>{e(caption)}</figcaption></figure>'
            for rel, caption in plots]
    if skipped:
        out += ["<p>Plots not drawn:</p><ul>", *(f"<li>{e(s)}</li>" for s in skipped), "</ul>"]
    out += ["<h2>How each figure was computed</h2>",
            f"<p>{e(_METHOD)}</p><ul>"]
    for row in rows:
        source = f" (run {row.run_id})" if row.run_id else ""
        out.append(f"<li><b>{e(row.label)}</b>{e(source)}: {e(row.note)}</li>")
    out += ["</ul>", "</body></html>"]
    return "\n".join(out) + "\n"


def budget_section(store: Store) -> Section | None:
    """The operators' error budget (:mod:`labpcu.budget`), if one was measured into
    ``store`` (``labpcu demo --budget``, ``labpcu budget --store``)."""
    from labpcu.budget import DOCUMENT, Budget, budget_table

    doc = store.read_document(DOCUMENT)
    if not doc:
        return None
    budget = Budget.from_dict(doc)
    header, table = budget_table(budget)
    quick = {op: len(devs) // 3 for op, devs in budget.devices.items() if op != "vmm"}
    text = ("Each operator's average relative error with every mechanism of the simulated wafer on ('all on'), and "
            "again with one mechanism switched off at a time, on a fresh copy of the same wafer (seed "
            f"{budget.seed}, same devices and inputs). The drop from 'all on', in percentage points (pp), is what "
            "that mechanism costs; mechanisms interact, so the drops need not add up. 'Input quantization' is the "
            "VMM's 5-bit pulse-width code (16 bits: off); the log-domain operators take analog currents. "
            f"Units per operator: {', '.join(f'{k} {v}' for k, v in quick.items())}; 'all on' here is measured with "
            "the budget's own settings, so it can differ from the table above.")
    return Section("Error budget (simulated wafer)", (text,), header, table)


def png_data_uri(path: Path) -> str:
    """A PNG file as a ``data:image/png;base64,...`` URI, for embedding in HTML."""
    return "data:image/png;base64," + base64.b64encode(Path(path).read_bytes()).decode("ascii")


def write_report(
    store: Store,
    runs: Mapping[str, str | Sequence[str]],
    out_dir: str | Path,
    title: str = "PCU wafer figures of merit",
    seed: int | None = None,
) -> ReportPaths:
    """Write ``report.md`` (plots by relative link), ``report.html`` (self-contained:
    plots embedded as base64 data URIs) and the PNG plots into ``out_dir``.
    ``seed`` is the simulated wafer's seed, shown in the header when given."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    r = _Runs(store, _normalize(runs))
    rows = _rows(r)
    drawn, skipped = _draw_plots(r, out)
    plots = [(p.name, caption) for p, caption in drawn]
    header = _header_lines(store, title, seed)
    energy = energy_section(r)
    sections = [sec for sec in (energy, budget_section(store)) if sec is not None]
    md, page = out / "report.md", out / "report.html"
    md.write_text(render_markdown(rows, plots, skipped, header, sections), encoding="utf-8")
    embedded = [(png_data_uri(p), caption) for p, caption in drawn]
    page.write_text(render_html(rows, embedded, skipped, header, sections), encoding="utf-8")
    return ReportPaths(md, page, [p for p, _ in drawn], all_passed(rows), rows, skipped, sections)


def format_table(rows: Sequence[FigureRow]) -> str:
    """The rows as an aligned plain-text table for a terminal."""
    head = ("figure", "published", "band", "measured", "result")
    body = [(row.label, row.published, row.band_text or "—", row.measured_text, row.verdict) for row in rows]
    widths = [max(len(r[k]) for r in (head, *body)) for k in range(len(head))]

    def line(cells: Sequence[str]) -> str:
        return "  ".join(c.ljust(w) for c, w in zip(cells, widths)).rstrip()

    return "\n".join([line(head), line(["-" * w for w in widths]), *(line(b) for b in body)])
