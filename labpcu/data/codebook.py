"""Operator codebooks: what each analog operator really outputs for each input.

Hardware-aware fine-tuning replaces an operator ``y = f(x)`` by
``y = codebook(x) + f(x) - stopgrad(f(x))`` (shared/reference/codebook.md). This module
builds the tables from measured samples; :mod:`labpcu.data.codebook_io` writes and reads
them (HDF5, or npz + JSON), :mod:`labpcu.data.lookup` evaluates them with numpy and
:mod:`labpcu.data.codebook_torch` with PyTorch.

Where the samples come from: an operator run (protocols ``multiplier``, ``divider``,
``softmax``, ``activation``, ``vmm``) stores rows ``device, repeat, t, y, y_ideal,
energy`` plus its input columns, and ``results["codebook"]`` describes each operator it
measured (its ``spec``: kind, ideal function, input columns, grid, units...). Two kinds
of table:

* elementwise (1-D ``softplus``..., 2-D ``multiply``/``divide``): the inputs were set
  exactly on the spec's grid, with repeats, so binning is exact: a sample more than
  1e-9 of the axis span away from every grid point is refused, not rounded.
* vector (softmax) and vmm: the inputs are vectors, so the table is a transfer curve,
  measured output against the *ideal output*, binned to the nearest of the spec's bin
  centres. Its ideal function on that axis is the identity; ``ideal`` names the network
  operation the curve belongs to.

The VMM table also carries an :class:`EffectiveWeightMap` (``table.effective_weight``),
from the run's ``results["effective_weight"]``: the weight the crossbar really gives for
each programmed weight, before any calibration (D1 in series makes it far from
proportional). A trainer applies it to its weights (``lookup.EffectiveWeight``).

Statistics per grid point: mean, sample std (ddof=1; 0 for a single sample), count, and
quantiles at :data:`QUANTILE_LEVELS` with numpy's default ("linear") method. Levels 0 and
1 are the bin's min and max, so quantile sampling spans the measured range. A grid
point without samples gets values interpolated from its measured neighbours and keeps
``count == 0``, so a reader can tell.

Speed (10 M samples in well under 2 s): binning is arithmetic or ``searchsorted``,
sums are ``np.bincount``, and quantiles come from one stable radix sort by bin followed
by row sorts of the bins padded to equal length; no Python loop touches a sample.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field, fields
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from labpcu import __version__
from labpcu.data.errors import StoreError
from labpcu.data.ideal import get_ideal

if TYPE_CHECKING:
    import pandas as pd

SCHEMA = "labpcu-codebook"
#: the codebook file format's version (docs/codebook-format.md); labpcu.data.codebook_io also reads 1 and 2
#: (version 3 added the VMM's effective-weight map)
SCHEMA_VERSION = 3
KINDS = ("elementwise1d", "elementwise2d", "vector", "vmm")
#: kinds whose table is a transfer curve over the ideal output
TRANSFER_KINDS = ("vector", "vmm")
NOISE_SCOPES = ("per_call", "per_device")
OPERATOR_PROTOCOLS = ("multiplier", "divider", "softmax", "activation", "vmm")
WEIGHT_PROTOCOL = "weight_statistics"
#: quantile levels of every table (0 and 1 are the min and the max)
QUANTILE_LEVELS = (0.0, 0.01, 0.05, 0.1, 0.25, 0.5, 0.75, 0.9, 0.95, 0.99, 1.0)
#: the weight variation σ (relative to the conductance range) of the paper
PAPER_WEIGHT_SIGMA = 0.027367
#: a sample further than this fraction of the axis span from every grid point is refused
GRID_TOLERANCE = 1e-9
#: elements per chunk of the chained binning passes (fits a core's L2 cache)
_CHUNK = 1 << 15
#: bins with at least this many samples are sorted one by one, smaller ones in padded rows
_BIG_BIN = 256
#: dataset names of an operator group, which an axis may not take
RESERVED_NAMES = frozenset({"mean", "std", "count", "ideal", "quantiles", "level", "samples"})


def now_iso() -> str:
    return datetime.now(timezone.utc).astimezone().isoformat(timespec="seconds")


# ====================================================================== the tables
@dataclass(eq=False)
class Samples:
    """The raw samples behind a table: ``x`` (N, d) in network units (for transfer
    kinds, the ideal output), measured ``y`` (N,), device of each sample as an index
    into ``devices`` (N,), repeat index and bench time (s)."""

    x: np.ndarray
    y: np.ndarray
    device_index: np.ndarray
    devices: tuple[str, ...]
    repeat: np.ndarray
    time: np.ndarray

    def __len__(self) -> int:
        return len(self.y)

    @property
    def device(self) -> np.ndarray:
        """Each sample's device id (fixed-width unicode)."""
        names = np.array(self.devices or ("",), dtype=str)
        return names[self.device_index]


@dataclass(eq=False)
class OperatorTable:
    """One operator's codebook: statistics of the measured output on a grid of inputs.

    Arrays: ``axes[j]`` (1-D, increasing, network units), ``mean``/``std``/``count``/
    ``ideal_values`` (grid shape), ``quantiles`` (grid shape + (Q,), non-decreasing along
    the last axis). Normalization: physical = network · scale + offset, per input
    (``input_scale``, ``input_offset``) and for the output. ``clip`` is the valid range of
    each input in network units. ``noise_scale`` multiplies the spread in noisy lookups
    (1 = as measured; an optimizer may tune it).
    """

    name: str
    kind: str
    ideal: str
    axis_names: tuple[str, ...]
    axes: tuple[np.ndarray, ...]
    mean: np.ndarray
    std: np.ndarray
    count: np.ndarray
    quantiles: np.ndarray
    ideal_values: np.ndarray
    quantile_levels: np.ndarray = field(default_factory=lambda: np.array(QUANTILE_LEVELS))
    ideal_params: dict[str, float] = field(default_factory=dict)
    samples: Samples | None = None
    inputs: tuple[str, ...] = ()
    output: str = "y"
    ideal_column: str = "y_ideal"
    input_units: tuple[str, ...] = ()
    output_unit: str = ""
    input_scale: np.ndarray = field(default_factory=lambda: np.ones(0))
    input_offset: np.ndarray = field(default_factory=lambda: np.zeros(0))
    output_scale: float = 1.0
    output_offset: float = 0.0
    clip: np.ndarray = field(default_factory=lambda: np.zeros((0, 2)))
    interpolation: str = "linear"
    extrapolation: str = "clip"
    noise_scope: str = "per_call"
    notes: str = ""
    where: dict[str, Any] = field(default_factory=dict)
    devices: tuple[str, ...] = ()
    n_repeats: int = 0
    noise_scale: float = 1.0
    source_run: str = ""
    energy_per_op: float = math.nan  # J, mean over the samples (NaN: not recorded)
    dropped: int = 0  # samples left out because y was not finite
    tile_size: tuple[int, ...] = ()  # vmm: crossbar tile (rows, columns), if known
    effective_weight: EffectiveWeightMap | None = None  # vmm: requested -> effective weight

    @property
    def ndim(self) -> int:
        return len(self.axes)

    @property
    def grid_shape(self) -> tuple[int, ...]:
        return tuple(len(a) for a in self.axes)

    @property
    def n_devices(self) -> int:
        return len(self.devices)

    @property
    def is_transfer(self) -> bool:
        """A transfer curve (measured vs ideal output), not a function of the inputs."""
        return self.kind in TRANSFER_KINDS

    def ideal_function(self, *xs: Any) -> np.ndarray:
        """The ideal output on this table's axes (the identity for transfer curves)."""
        if self.is_transfer:
            return np.asarray(xs[0], dtype=float)
        return get_ideal(self.ideal)(*xs, params=self.ideal_params)

    def errors(self) -> tuple[float, float]:
        """(mean |y − ideal|, mean relative error) over the raw samples (else over the
        grid means, weighted by count). Relative error is |y − ideal| / |ideal| as the
        paper defines it, averaged over samples whose ideal output is not 0."""
        if self.samples is not None and len(self.samples):
            x, y = self.samples.x, self.samples.y
            ideal = self.ideal_function(*(x[:, j] for j in range(x.shape[1])))
            w = None
        else:
            y, ideal, w = self.mean.ravel(), self.ideal_values.ravel(), self.count.ravel().astype(float)
            y, ideal, w = y[w > 0], ideal[w > 0], w[w > 0]
        if len(y) == 0:
            return math.nan, math.nan
        err = np.abs(y - ideal)
        nonzero = np.abs(ideal) > 0
        rel = err[nonzero] / np.abs(ideal[nonzero])
        mean_abs = float(np.average(err, weights=w))
        mean_rel = float(np.average(rel, weights=None if w is None else w[nonzero])) if rel.size else math.nan
        return mean_abs, mean_rel

    def equals(self, other: object) -> bool:
        """Field-by-field equality (arrays exactly, NaN equal to NaN)."""
        return isinstance(other, OperatorTable) and _fields_equal(self, other)


#: what the effective-weight map's numbers mean (stored with it)
EFFECTIVE_WEIGHT_DEFINITION = (
    "weights are fractions of full scale: requested w = G/G_ref (G the programmed M1 conductance, G_ref the "
    "map's top level), effective w_eff = I/I_ref (I the row current at v_read alone, offset removed, no "
    "calibration; I_ref/G_ref the mean I/G of the cells at full scale); gain = w_eff/w. Apply as "
    "w_eff = w * gain(|w|), interpolated linearly in requested and clipped to the measured levels; the sign of "
    "w is kept (differential pairs)")


@dataclass(eq=False)
class EffectiveWeightMap:
    """What a VMM crossbar gives for each programmed weight, before any calibration.

    D1 sits in series with every M1, so a row's current at the read pulse is far from
    proportional to its conductance: small weights come out too large relative to full
    scale. Per level ``k`` (K levels, the last full scale): ``requested[k]`` (the target
    as a fraction of ``g_ref``), the mean programmed fraction, the effective weight's
    mean and std and the gain's (w_eff/w of each cell; ddof=1), the cells measured.
    ``noise_scope`` is per_device: a cell's deviation from the mean gain is its own
    diode's, drawn once per weight. Raw samples: ``device``, ``target`` and
    ``programmed`` (S), ``current`` (A). ``error_*``: |gain − 1| over the samples below
    full scale (mean, min, max).
    """

    requested: np.ndarray
    programmed_mean: np.ndarray
    effective_mean: np.ndarray
    effective_std: np.ndarray
    gain_mean: np.ndarray
    gain_std: np.ndarray
    count: np.ndarray
    g_ref: float  # S
    i_ref: float  # A
    v_read: float  # V
    device: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=str))
    target: np.ndarray = field(default_factory=lambda: np.zeros(0))  # S
    programmed: np.ndarray = field(default_factory=lambda: np.zeros(0))  # S
    current: np.ndarray = field(default_factory=lambda: np.zeros(0))  # A
    error_mean: float = math.nan
    error_min: float = math.nan
    error_max: float = math.nan
    noise_scope: str = "per_device"
    definition: str = EFFECTIVE_WEIGHT_DEFINITION
    source_run: str = ""

    def equals(self, other: object) -> bool:
        return isinstance(other, EffectiveWeightMap) and _fields_equal(self, other)


def build_effective_weight(result: Mapping[str, Any], source_run: str = "") -> EffectiveWeightMap:
    """The map from a vmm run's ``results["effective_weight"]`` (arrays ``target``,
    ``programmed``, ``current``, ``cell``; ``g_ref``, ``i_ref``, ``v_read``): samples
    grouped by target level, statistics per level."""
    try:
        target = np.asarray(result["target"], dtype=np.float64).ravel()
        programmed = np.asarray(result["programmed"], dtype=np.float64).ravel()
        current = np.asarray(result["current"], dtype=np.float64).ravel()
        g_ref, i_ref = float(result["g_ref"]), float(result["i_ref"])
        v_read = float(result["v_read"])
    except (KeyError, TypeError, ValueError) as exc:
        raise ValueError(f"effective_weight result is incomplete or not numbers: {exc}") from None
    if not (len(target) == len(programmed) == len(current)) or len(target) < 2:
        raise ValueError("effective_weight needs target, programmed and current of equal length (>= 2 samples)")
    if not (g_ref > 0 and i_ref > 0):
        raise ValueError(f"effective_weight: g_ref and i_ref must be > 0, not {g_ref!r}, {i_ref!r}")
    cells = np.asarray(result.get("cell", np.full(len(target), "")), dtype=object).ravel()
    device = np.array([c.decode("utf-8") if isinstance(c, bytes) else str(c) for c in cells], dtype=str)
    levels, k = np.unique(target, return_inverse=True)
    w, w_eff = programmed / g_ref, current / i_ref
    gain = w_eff / w
    stats = [bin_statistics(k, v, len(levels), np.array([0.5]))[:3] for v in (w, w_eff, gain)]
    full = k == len(levels) - 1
    err = np.abs(gain[~full & np.isfinite(gain)] - 1.0)
    return EffectiveWeightMap(
        requested=levels / g_ref, programmed_mean=stats[0][0], effective_mean=stats[1][0], effective_std=stats[1][1],
        gain_mean=stats[2][0], gain_std=stats[2][1], count=stats[2][2], g_ref=g_ref, i_ref=i_ref, v_read=v_read,
        device=device, target=target, programmed=programmed, current=current,
        error_mean=float(err.mean()) if err.size else math.nan, error_min=float(err.min()) if err.size else math.nan,
        error_max=float(err.max()) if err.size else math.nan, source_run=source_run)


@dataclass(eq=False)
class WeightNoise:
    """Weight variation a trainer injects: w + sigma · reference · N(0, 1), drawn once
    per device when it is programmed and kept across calls."""

    sigma: float = PAPER_WEIGHT_SIGMA
    reference: str = "conductance range (g_max - g_min) of each device"
    resample: str = "on reprogramming (drawn once per device, kept across calls)"
    distribution: str = "normal, zero mean"
    source_run: str = ""  # empty: the paper's value
    attempts: int = 0
    n_devices: int = 0
    sigma_rel_gmax: float = math.nan  # the same errors relative to G_max (CrossSim's reference)
    sigma_abs: float = math.nan  # S (aihwkit works in µS)
    sigma_proportional: float = math.nan  # relative to the target conductance

    def equals(self, other: object) -> bool:
        return isinstance(other, WeightNoise) and _fields_equal(self, other)


@dataclass(eq=False)
class ProgrammingTable:
    """VMM weight programming: for each target level, what was achieved. Fractions are
    of each device's measured range (G − G_min)/(G_max − G_min); conductances in S."""

    level: np.ndarray  # (K,) int64
    target_fraction: np.ndarray
    achieved_mean: np.ndarray  # fraction of the range
    achieved_std: np.ndarray  # ddof=1
    count: np.ndarray  # int64
    target_conductance: np.ndarray  # S, mean over devices
    achieved_conductance_mean: np.ndarray  # S
    achieved_conductance_std: np.ndarray  # S
    source_run: str = ""

    def equals(self, other: object) -> bool:
        return isinstance(other, ProgrammingTable) and _fields_equal(self, other)


@dataclass(eq=False)
class Codebook:
    """Every operator's table, the weight noise, and where they came from.

    ``devices``: the PCUs the runs measured (each table's ``devices`` are its operator
    units). ``source_runs``: one dict per run (run_id, protocol, store file, its sha256
    when the codebook was built, started). ``temperature`` (K) when the runs recorded
    one. ``tile_size``: the VMM crossbar tile (rows, columns), if known.
    """

    operators: dict[str, OperatorTable]
    weight_noise: WeightNoise | None = None
    programming: ProgrammingTable | None = None
    tile_size: tuple[int, ...] = ()
    devices: tuple[str, ...] = ()
    wafer: str = ""
    source_runs: tuple[dict[str, str], ...] = ()
    created: str = field(default_factory=now_iso)
    temperature: float | None = None
    labpcu_version: str = __version__
    schema: str = SCHEMA
    schema_version: int = SCHEMA_VERSION

    def __getitem__(self, name: str) -> OperatorTable:
        try:
            return self.operators[name]
        except KeyError:
            raise KeyError(f"no operator {name!r} in the codebook; it has {', '.join(self.operators) or 'none'}") from None

    def __iter__(self) -> Iterator[str]:
        """Operator names, like a mapping."""
        return iter(self.operators)

    def __len__(self) -> int:
        return len(self.operators)

    @classmethod
    def from_store(cls, store_path: str | Path, run_ids: Sequence[str] | None = None) -> Codebook:
        return build_codebook(store_path, run_ids)

    def equals(self, other: object) -> bool:
        if not isinstance(other, Codebook) or set(self.operators) != set(other.operators):
            return False
        if not all(self.operators[k].equals(other.operators[k]) for k in self.operators):
            return False
        for f in fields(self):
            if f.name == "operators":
                continue
            a, b = getattr(self, f.name), getattr(other, f.name)
            if hasattr(a, "equals") or hasattr(b, "equals"):
                if (a is None) != (b is None) or (a is not None and not a.equals(b)):
                    return False
            elif not _value_equal(a, b):
                return False
        return True


def _fields_equal(a: Any, b: Any) -> bool:
    return all(_value_equal(getattr(a, f.name), getattr(b, f.name)) for f in fields(a))


def _value_equal(a: Any, b: Any) -> bool:
    if isinstance(a, Samples) or isinstance(b, Samples):
        return isinstance(a, Samples) and isinstance(b, Samples) and _fields_equal(a, b)
    if isinstance(a, EffectiveWeightMap) or isinstance(b, EffectiveWeightMap):
        return isinstance(a, EffectiveWeightMap) and a.equals(b)
    if isinstance(a, np.ndarray) or isinstance(b, np.ndarray):
        a, b = np.asarray(a), np.asarray(b)
        if a.shape != b.shape:
            return False
        if a.dtype.kind in "fc" and b.dtype.kind in "fc":
            return bool(np.array_equal(a, b, equal_nan=True))
        return bool(np.array_equal(a, b))
    if isinstance(a, (tuple, list)) and isinstance(b, (tuple, list)):
        return len(a) == len(b) and all(_value_equal(x, y) for x, y in zip(a, b))
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(_value_equal(a[k], b[k]) for k in a)
    if isinstance(a, float) and isinstance(b, float) and math.isnan(a) and math.isnan(b):
        return True
    return bool(a == b)


# ====================================================================== the spec
def parse_spec(name: str, spec: Mapping[str, Any]) -> dict[str, Any]:
    """An operator spec (from ``results["codebook"]``, where lists come back as arrays)
    checked and normalized into :class:`OperatorTable` keyword arguments (no data yet)."""
    where = f"operator {name!r}"
    if not isinstance(spec, Mapping):
        raise ValueError(f"{where}: spec must be a mapping, not {type(spec).__name__}")
    kind = _text(spec.get("kind"), f"{where}: kind")
    if kind not in KINDS:
        raise ValueError(f"{where}: kind must be one of {', '.join(KINDS)}, not {kind!r}")
    grid = spec.get("grid")
    if not isinstance(grid, Mapping) or not grid:
        raise ValueError(f"{where}: spec needs a grid (axis name -> grid points)")
    axis_names = tuple(str(k) for k in grid)
    axes = tuple(_axis(grid[k], f"{where}: grid axis {k!r}") for k in grid)
    inputs = _texts(spec.get("inputs", axis_names), f"{where}: inputs")
    want = {"elementwise1d": 1, "elementwise2d": 2}.get(kind, 1)
    if len(axes) != want:
        raise ValueError(f"{where}: a {kind} table has {want} grid axis/axes, the spec gives {len(axes)}")
    if kind in ("elementwise1d", "elementwise2d") and len(inputs) != want:
        raise ValueError(f"{where}: a {kind} operator has {want} input column(s), the spec gives {len(inputs)}")
    for a in axis_names:
        if a in RESERVED_NAMES or a.startswith("samples"):
            raise ValueError(f"{where}: grid axis name {a!r} is reserved; rename it")
    ideal = _text(spec.get("ideal", "identity"), f"{where}: ideal")
    ideal_params = {str(k): float(v) for k, v in dict(spec.get("ideal_params") or {}).items()}
    if kind not in TRANSFER_KINDS:
        get_ideal(ideal).params(ideal_params)  # unknown names and parameters fail here
    d = len(inputs)
    noise_scope = _text(spec.get("noise_scope", "per_call"), f"{where}: noise_scope")
    if noise_scope not in NOISE_SCOPES:
        raise ValueError(f"{where}: noise_scope must be one of {', '.join(NOISE_SCOPES)}, not {noise_scope!r}")
    interpolation = _text(spec.get("interpolation", "linear"), f"{where}: interpolation")
    extrapolation = _text(spec.get("extrapolation", "clip"), f"{where}: extrapolation")
    if interpolation != "linear" or extrapolation != "clip":
        raise ValueError(f"{where}: only interpolation='linear' with extrapolation='clip' is supported")
    clip = spec.get("clip")
    clip_arr = (np.array([[a[0], a[-1]] for a in axes], dtype=float) if clip is None and kind not in TRANSFER_KINDS
                else np.asarray(clip if clip is not None else np.empty((0, 2)), dtype=float).reshape(-1, 2))
    if clip_arr.shape[0] not in (0, d):
        raise ValueError(f"{where}: clip needs one [lo, hi] per input ({d}), got {clip_arr.shape[0]}")
    tile = spec.get("tile_size")
    return {
        "name": name,
        "kind": kind,
        "ideal": ideal,
        "ideal_params": ideal_params,
        "axis_names": axis_names,
        "axes": axes,
        "inputs": inputs,
        "output": _text(spec.get("output", "y"), f"{where}: output"),
        "ideal_column": _text(spec.get("ideal_column", "y_ideal"), f"{where}: ideal_column"),
        "input_units": _texts(spec.get("input_units", [""] * d), f"{where}: input_units"),
        "output_unit": _text(spec.get("output_unit", ""), f"{where}: output_unit"),
        "input_scale": _floats(spec.get("input_scale", [1.0] * d), d, f"{where}: input_scale"),
        "input_offset": _floats(spec.get("input_offset", [0.0] * d), d, f"{where}: input_offset"),
        "output_scale": float(spec.get("output_scale", 1.0)),
        "output_offset": float(spec.get("output_offset", 0.0)),
        "clip": clip_arr,
        "interpolation": interpolation,
        "extrapolation": extrapolation,
        "noise_scope": noise_scope,
        "notes": _text(spec.get("notes", ""), f"{where}: notes"),
        "where": dict(spec.get("where") or {}),
        "tile_size": tuple(int(v) for v in np.atleast_1d(tile)) if tile is not None else (),
    }


def _text(value: Any, what: str) -> str:
    if isinstance(value, np.ndarray) and value.ndim == 0:
        value = value.item()
    if not isinstance(value, str):
        raise ValueError(f"{what} must be a string, not {value!r}")
    return value


def _texts(value: Any, what: str) -> tuple[str, ...]:
    items = [value] if isinstance(value, str) else list(np.atleast_1d(np.asarray(value, dtype=object)))
    return tuple(_text(v, what) for v in items)


def _floats(value: Any, n: int, what: str) -> np.ndarray:
    arr = np.atleast_1d(np.asarray(value, dtype=float))
    if arr.shape != (n,):
        raise ValueError(f"{what} needs {n} value(s), got {arr.size}")
    return arr


def _axis(value: Any, what: str) -> np.ndarray:
    try:
        a = np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError):
        raise ValueError(f"{what} must be numbers") from None
    if a.ndim != 1 or a.size < 2:
        raise ValueError(f"{what} needs at least 2 points in a 1-D list, got shape {a.shape}")
    if not np.all(np.isfinite(a)) or not np.all(np.diff(a) > 0):
        raise ValueError(f"{what} must be finite and strictly increasing")
    return a


# ====================================================================== building
def build_table(
    name: str,
    spec: Mapping[str, Any],
    x: Any,
    y: Any,
    device: Any = None,
    repeat: Any = None,
    time: Any = None,
    *,
    source_run: str = "",
    energy: Any = None,
    keep_samples: bool = True,
) -> OperatorTable:
    """Bin samples onto the spec's grid and take their statistics.

    ``x``: the binned values, (N,) or (N, d) or a list of d arrays: the inputs in
    network units (elementwise kinds) or the ideal output (vector, vmm). ``y``: the
    measured output. ``device`` (str per sample, or a pandas Categorical), ``repeat``
    and ``time`` (s) are kept with the raw samples. Samples whose ``y`` is not finite are
    left out and counted in ``dropped``.
    """
    kw = parse_spec(name, spec)
    axes: tuple[np.ndarray, ...] = kw["axes"]
    xs = _as_columns(x, len(axes), name)
    yv = np.asarray(y, dtype=np.float64).ravel()
    n = len(yv)
    if any(len(c) != n for c in xs):
        raise ValueError(f"operator {name!r}: x and y have different lengths ({', '.join(str(len(c)) for c in xs)} vs {n})")
    codes, devices = _factorize(device, n, name)
    rep = np.zeros(n, np.int64) if repeat is None else np.asarray(repeat).astype(np.int64, copy=False).ravel()
    tv = np.full(n, np.nan) if time is None else np.asarray(time, dtype=np.float64).ravel()
    if len(rep) != n or len(tv) != n:
        raise ValueError(f"operator {name!r}: repeat and time need one value per sample ({n})")
    finite = np.isfinite(yv)
    dropped = int(n - np.count_nonzero(finite))
    if dropped:
        xs = [c[finite] for c in xs]
        yv, codes, rep, tv = yv[finite], codes[finite], rep[finite], tv[finite]
    if len(yv) == 0:
        raise ValueError(f"operator {name!r}: no samples with a finite output")

    exact = kw["kind"] not in TRANSFER_KINDS
    idx = [_bin(c, a, exact, f"operator {name!r}, axis {an!r}") for c, a, an in zip(xs, axes, kw["axis_names"])]
    shape = tuple(len(a) for a in axes)
    flat = idx[0] if len(idx) == 1 else np.ravel_multi_index(tuple(idx), shape)
    mean, std, count, quant = bin_statistics(flat, yv, int(np.prod(shape)), np.asarray(QUANTILE_LEVELS))
    measured = count > 0
    if not measured.all():
        mean, std, quant = (_fill_empty(v.reshape(shape + v.shape[1:]), measured.reshape(shape), axes).reshape(v.shape)
                            for v in (mean, std, quant))

    mesh = np.meshgrid(*axes, indexing="ij")
    ideal_values = mesh[0].copy() if not exact else np.asarray(get_ideal(kw["ideal"])(*mesh, params=kw["ideal_params"]),
                                                               dtype=np.float64)
    e = np.asarray(energy, dtype=np.float64).ravel() if energy is not None else np.empty(0)
    if dropped and len(e) == n:
        e = e[finite]
    samples = None
    if keep_samples:
        samples = Samples(x=np.stack(xs, axis=1) if len(xs) > 1 else xs[0].reshape(-1, 1), y=yv,
                          device_index=codes, devices=devices, repeat=rep, time=tv)
    return OperatorTable(
        **kw,
        mean=mean.reshape(shape),
        std=std.reshape(shape),
        count=count.reshape(shape),
        quantiles=quant.reshape(shape + (len(QUANTILE_LEVELS),)),
        ideal_values=ideal_values,
        quantile_levels=np.array(QUANTILE_LEVELS),
        samples=samples,
        devices=devices,
        n_repeats=_n_unique(rep),
        source_run=source_run,
        energy_per_op=float(np.nanmean(e)) if e.size and np.isfinite(e).any() else math.nan,
        dropped=dropped,
    )


def _as_columns(x: Any, d: int, name: str) -> list[np.ndarray]:
    if isinstance(x, (list, tuple)) and len(x) == d and all(np.ndim(c) == 1 for c in x):
        cols = [np.asarray(c, dtype=np.float64) for c in x]
    else:
        arr = np.asarray(x, dtype=np.float64)
        if arr.ndim == 1 and d == 1:
            cols = [arr]
        elif arr.ndim == 2 and arr.shape[1] == d:
            cols = [arr[:, j] for j in range(d)]
        else:
            raise ValueError(f"operator {name!r}: x must be (N,) or (N, {d}) for {d} axis/axes, got shape {arr.shape}")
    return cols


def _bin(values: np.ndarray, axis: np.ndarray, exact: bool, what: str) -> np.ndarray:
    """Index of the nearest grid point of each value; with ``exact``, a value further
    than GRID_TOLERANCE·span from it is an error (the inputs were set on the grid).
    Works in cache-sized chunks: it is a chain of cheap passes over the data."""
    n = len(axis)
    step = (axis[-1] - axis[0]) / (n - 1)
    uniform = bool(np.all(np.abs(np.diff(axis) - step) <= 1e-9 * step))
    tol = GRID_TOLERANCE * (axis[-1] - axis[0])
    idx = np.empty(len(values), dtype=np.intp)
    n_bad = 0
    first_bad = -1
    for lo in range(0, len(values), _CHUNK):
        v = values[lo:lo + _CHUNK]
        if uniform:  # rounding is the nearest point
            t = v - axis[0]
            t *= 1.0 / step
            np.rint(t, out=t)
            np.clip(t, 0, n - 1, out=t)
            i = idx[lo:lo + _CHUNK]
            i[:] = t
        else:
            i = np.searchsorted(axis, v)
            np.clip(i, 1, n - 1, out=i)
            i -= (v - axis[i - 1]) <= (axis[i] - v)
            idx[lo:lo + _CHUNK] = i
        off = axis[i]
        off -= v
        np.abs(off, out=off)
        bad = ~(off <= tol) if exact else ~np.isfinite(off)  # NaN inputs fail either way
        if bad.any():
            n_bad += int(np.count_nonzero(bad))
            first_bad = lo + int(np.argmax(bad)) if first_bad < 0 else first_bad
    if n_bad:
        k = first_bad
        if not np.isfinite(values[k]):
            raise ValueError(f"{what}: input values are not finite (e.g. {values[k]!r} at sample {k})")
        raise ValueError(f"{what}: {n_bad} input values are off the grid (e.g. {values[k]!r}, nearest grid point "
                         f"{axis[idx[k]]!r}; tolerance {tol:.3g})")
    return idx


def bin_statistics(
    flat: np.ndarray, y: np.ndarray, n_bins: int, levels: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Mean, std (ddof=1; 0 for one sample), count and quantiles (n_bins, Q) of ``y``
    per bin ``flat`` (0 <= flat < n_bins). Empty bins give NaN."""
    count = np.bincount(flat, minlength=n_bins)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = np.bincount(flat, weights=y, minlength=n_bins) / count
        dev = y - mean[flat]  # two passes: no cancellation for large means
        dev *= dev
        var = np.bincount(flat, weights=dev, minlength=n_bins) / (count - 1)
    std = np.sqrt(var)
    std[count == 1] = 0.0
    return mean, std, count.astype(np.int64), _bin_quantiles(flat, y, count, levels)


def _bin_quantiles(flat: np.ndarray, y: np.ndarray, count: np.ndarray, levels: np.ndarray) -> np.ndarray:
    """Per-bin quantiles, numpy's "linear" method, exactly (no rounding of y).

    One stable sort by bin (a radix sort for up to 65536 bins) makes each bin a
    contiguous segment; big segments are sorted in place one by one (a loop over bins,
    not samples), small ones padded with +inf into rows of similar length and sorted
    row-wise (at most twice their memory). Quantiles are then gathers."""
    n_bins = len(count)
    key = flat.astype(np.uint16 if n_bins <= 1 << 16 else np.uint32)
    ys = y[np.argsort(key, kind="stable")]
    starts = np.cumsum(count) - count
    for b in np.flatnonzero(count >= _BIG_BIN):
        ys[starts[b]:starts[b] + count[b]].sort()
    small = (count > 1) & (count < _BIG_BIN)
    klass = np.zeros(n_bins, dtype=np.int64)
    klass[small] = np.floor(np.log2(count[small])).astype(np.int64)
    for k in np.unique(klass[small]):
        bins = np.flatnonzero(small & (klass == k))
        cnt = count[bins]
        cols = np.arange(int(cnt.max()))
        inside = cols < cnt[:, None]
        pos = (starts[bins, None] + cols)[inside]
        rows = np.full(inside.shape, np.inf)
        rows[inside] = ys[pos]
        rows.sort(axis=1)
        ys[pos] = rows[inside]
    filled = count > 0
    c = count[filled][:, None]
    s = starts[filled][:, None]
    h = (c - 1) * levels[None, :]
    lo = np.floor(h).astype(np.intp)
    out = np.full((n_bins, len(levels)), np.nan)
    out[filled] = _lerp(ys[s + lo], ys[s + np.minimum(lo + 1, c - 1)], h - lo)
    np.maximum.accumulate(out, axis=1, out=out)  # rounding never breaks monotonicity
    return out


def _lerp(a: np.ndarray, b: np.ndarray, t: np.ndarray) -> np.ndarray:
    """numpy's quantile interpolation (from the nearer end, so t=1 gives b exactly)."""
    diff = b - a
    out = a + diff * t
    upper = t >= 0.5
    out[upper] = (b - diff * (1.0 - t))[upper]
    same = a == b
    out[same] = a[same]
    return out


def _fill_empty(values: np.ndarray, measured: np.ndarray, axes: Sequence[np.ndarray]) -> np.ndarray:
    """Values at unmeasured grid points interpolated from measured ones: along the last
    axis first, then (2-D) along the first for rows with no measured point."""
    v = values.reshape(measured.shape + (-1,)).copy()
    if measured.ndim == 1:
        return _fill_line(v, measured, axes[0]).reshape(values.shape)
    rows = measured.any(axis=1)
    if not rows.any():
        raise ValueError("no grid point has a sample")
    for i in np.flatnonzero(rows):
        v[i] = _fill_line(v[i], measured[i], axes[1])
    for j in range(v.shape[1]):
        v[:, j] = _fill_line(v[:, j], rows, axes[0])
    return v.reshape(values.shape)


def _fill_line(v: np.ndarray, ok: np.ndarray, axis: np.ndarray) -> np.ndarray:
    """(n, K) values: rows where ``ok`` is False replaced by np.interp over the rest."""
    out = v.copy()
    if ok.all() or not ok.any():
        return out
    for q in range(v.shape[1]):
        out[~ok, q] = np.interp(axis[~ok], axis[ok], v[ok, q])
    return out


def _factorize(device: Any, n: int, name: str) -> tuple[np.ndarray, tuple[str, ...]]:
    """Device ids as int32 codes into sorted names. Runs store one device after the
    other, so only the first row of each run of equal ids is hashed."""
    if device is None:
        return np.zeros(n, np.int32), ("",)
    if hasattr(device, "codes") and hasattr(device, "categories"):  # pandas Categorical
        names_in = [str(c) for c in device.categories]
        codes_in = np.asarray(device.codes)
        if len(codes_in) != n or (codes_in < 0).any():
            raise ValueError(f"operator {name!r}: device needs one id per sample ({n}), none missing")
        heads, runs = codes_in, None
    else:
        arr = np.asarray(device)
        if arr.ndim != 1 or len(arr) != n:
            raise ValueError(f"operator {name!r}: device needs one id per sample ({n}), got shape {arr.shape}")
        if n == 0:
            return np.zeros(0, np.int32), ()
        change = np.flatnonzero(arr[1:] != arr[:-1]) + 1
        starts = np.concatenate(([0], change))
        runs = np.diff(np.concatenate((starts, [n])))
        head_values = [v.decode("utf-8") if isinstance(v, bytes) else str(v) for v in arr[starts]]
        names_in = sorted(set(head_values))
        lut = {v: i for i, v in enumerate(names_in)}
        heads = np.fromiter((lut[v] for v in head_values), dtype=np.int32, count=len(head_values))
    order = np.argsort(np.array(names_in, dtype=object)) if names_in else np.zeros(0, np.intp)
    rank = np.empty(len(names_in), np.int32)
    rank[order] = np.arange(len(names_in), dtype=np.int32)
    codes = rank[heads] if runs is None else np.repeat(rank[heads], runs)
    used = np.flatnonzero(np.bincount(codes if runs is None else rank[heads], minlength=len(names_in)))
    names = tuple(sorted(names_in))
    if len(used) != len(names):  # a Categorical with unused categories: drop them
        remap = np.full(len(names), -1, np.int32)
        remap[used] = np.arange(len(used), dtype=np.int32)
        codes, names = remap[codes], tuple(names[i] for i in used)
    return codes.astype(np.int32, copy=False), names


def _n_unique(values: np.ndarray) -> int:
    if len(values) == 0:
        return 0
    lo, hi = int(values.min()), int(values.max())
    if hi - lo < 4 * len(values) + 1024:
        return int(np.count_nonzero(np.bincount(values - lo)))
    return len(np.unique(values))


# ====================================================================== from the store
def build_codebook(store_path: str | Path, run_ids: Sequence[str] | None = None) -> Codebook:
    """A codebook from operator runs (and a ``weight_statistics`` run) of a run store.

    Without ``run_ids``: every completed operator run, the newest one winning when two
    measured the same operator, plus the newest completed weight_statistics run. A
    given run that is not an operator or weight_statistics run, is not completed, or
    has no ``results["codebook"]``, is refused with a one-line error.
    """
    from labpcu.data.store import Store

    store = Store(store_path)
    if not store.path.exists():
        raise StoreError(f"no run store at {store.path}")
    chosen = _default_runs(store) if run_ids is None else _check_runs(store, list(run_ids))
    if not chosen:
        raise StoreError(f"{store.path} has no completed operator runs to build a codebook from")
    sha = file_sha256(store.path)
    operators: dict[str, OperatorTable] = {}
    origin: dict[str, str] = {}
    weight_noise = programming = None
    sources, devices, wafers, temps, tile = [], set(), [], [], ()
    for run_id, info in chosen:
        sources.append({"run_id": run_id, "protocol": info.protocol, "store": str(store.path.resolve()),
                        "sha256": sha, "started": info.started})
        devices.update(info.devices)
        wafers.append(_wafer(info.bench))
        temps.append(info.parameters.get("temperature", info.bench.get("temperature")))
        if info.protocol == WEIGHT_PROTOCOL:
            weight_noise, programming = _weight_tables(store, info)
            continue
        for op_name, table in _run_tables(store, info).items():
            if op_name in operators and run_ids is not None:
                raise StoreError(f"operator {op_name!r} is in both run {origin[op_name]} and run {run_id}; pass one of them")
            operators[op_name], origin[op_name] = table, run_id
            tile = table.tile_size or tile
    if not operators:
        raise StoreError(f"the runs given hold no operator tables ({', '.join(r for r, _ in chosen)})")
    used_runs = set(origin.values()) | {r for r, i in chosen if i.protocol == WEIGHT_PROTOCOL}
    known = [float(t) for t in temps if isinstance(t, (int, float)) and not isinstance(t, bool)]
    return Codebook(
        operators=dict(sorted(operators.items())),
        weight_noise=weight_noise,
        programming=programming,
        tile_size=tile,
        devices=tuple(sorted(devices)),
        wafer="; ".join(dict.fromkeys(w for w in wafers if w)),
        source_runs=tuple(s for s in sources if s["run_id"] in used_runs),
        temperature=known[0] if known and all(t == known[0] for t in known) else None,
    )


def _default_runs(store: Any) -> list[tuple[str, Any]]:
    runs = store.runs(status="completed")
    ops = [r for r in runs.index if runs.loc[r, "protocol"] in OPERATOR_PROTOCOLS]
    weights = [r for r in runs.index if runs.loc[r, "protocol"] == WEIGHT_PROTOCOL]
    chosen = [(r, store.info(r)) for r in ops]
    chosen = [(r, i) for r, i in chosen if isinstance(i.results.get("codebook"), Mapping)]
    if weights:
        latest = max(weights, key=lambda r: (runs.loc[r, "started"], r))
        chosen.append((latest, store.info(latest)))
    return chosen


def _check_runs(store: Any, run_ids: list[str]) -> list[tuple[str, Any]]:
    if len(set(run_ids)) != len(run_ids):
        raise StoreError(f"a run is given twice: {', '.join(run_ids)}")
    out = []
    for run_id in run_ids:
        info = store.info(run_id)
        if info.protocol not in (*OPERATOR_PROTOCOLS, WEIGHT_PROTOCOL):
            raise StoreError(f"run {run_id} is a {info.protocol} run, not an operator run "
                             f"({', '.join(OPERATOR_PROTOCOLS)}) or {WEIGHT_PROTOCOL}")
        if info.status != "completed":
            raise StoreError(f"run {run_id} is {info.status}, not completed; a codebook uses completed runs only")
        if info.protocol != WEIGHT_PROTOCOL and not isinstance(info.results.get("codebook"), Mapping):
            raise StoreError(f"run {run_id} has no results['codebook'] (re-analyze it with this labpcu)")
        out.append((run_id, info))
    if sum(i.protocol == WEIGHT_PROTOCOL for _, i in out) > 1:
        raise StoreError("give at most one weight_statistics run")
    return out


def _run_tables(store: Any, info: Any) -> dict[str, OperatorTable]:
    """Every operator table of one operator run (its data read once)."""
    specs = {name: parse_spec(name, spec) for name, spec in info.results["codebook"].items()}
    cols = ["device", "repeat", "t"]
    for kw in specs.values():
        need = [kw["ideal_column"]] if kw["kind"] in TRANSFER_KINDS else list(kw["inputs"])
        cols += need + [kw["output"], *kw["where"]]
    if "energy" in info.columns:
        cols.append("energy")
    missing = [c for c in dict.fromkeys(cols) if c not in info.columns]
    if missing:
        raise StoreError(f"run {info.run_id}: its codebook spec names column(s) {', '.join(missing)}, which it does not have")
    df = store.read(info.run_id, columns=list(dict.fromkeys(cols)))
    tables = {}
    for name, spec in info.results["codebook"].items():
        kw = specs[name]
        rows = _select(df, kw["where"])
        part = df[rows] if rows is not None else df
        if part.empty:
            raise StoreError(f"run {info.run_id}: operator {name!r} selects no rows (where={kw['where']})")
        xcols = [kw["ideal_column"]] if kw["kind"] in TRANSFER_KINDS else list(kw["inputs"])
        try:
            tables[name] = build_table(
                name, spec, [part[c].to_numpy(np.float64) for c in xcols], part[kw["output"]].to_numpy(np.float64),
                part["device"].to_numpy(), part["repeat"].to_numpy(), part["t"].to_numpy(np.float64),
                source_run=info.run_id, energy=part["energy"].to_numpy(np.float64) if "energy" in part else None)
        except ValueError as exc:
            raise StoreError(f"run {info.run_id}: {exc}") from None
        if kw["kind"] == "vmm" and not tables[name].tile_size:
            tables[name].tile_size = _tile_size(info.results.get("summary"))
        if kw["kind"] == "vmm" and isinstance(info.results.get("effective_weight"), Mapping):
            try:
                tables[name].effective_weight = build_effective_weight(info.results["effective_weight"], info.run_id)
            except ValueError as exc:
                raise StoreError(f"run {info.run_id}: {exc}") from None
    return tables


def _tile_size(summary: Any) -> tuple[int, ...]:
    """(rows, columns) of a VMM run's crossbar tile, from its summary (``tile_rows``,
    ``tile_columns`` defaulting to 1: the paper's 1×3 crossbar is one column of 3)."""
    if not isinstance(summary, Mapping) or "tile_rows" not in summary:
        return ()
    return int(summary["tile_rows"]), int(summary.get("tile_columns", 1))


def _select(df: pd.DataFrame, where: Mapping[str, Any]) -> np.ndarray | None:
    if not where:
        return None
    keep = np.ones(len(df), dtype=bool)
    for col, value in where.items():
        keep &= (df[col] == value).to_numpy()
    return keep


def _weight_tables(store: Any, info: Any) -> tuple[WeightNoise, ProgrammingTable]:
    """σ and the level table of a weight_statistics run (same definitions as its analyze:
    error = achieved − target, σ = sample std relative to each device's range)."""
    need = ["device", "level", "fraction", "target", "achieved", "g_min", "g_max"]
    missing = [c for c in need if c not in info.columns]
    if missing:
        raise StoreError(f"run {info.run_id}: a weight_statistics run needs column(s) {', '.join(missing)}")
    df = store.read(info.run_id, columns=need)
    g_range = (df["g_max"] - df["g_min"]).to_numpy()
    target, achieved = df["target"].to_numpy(), df["achieved"].to_numpy()
    err = achieved - target
    res = info.results

    def sd(v: np.ndarray) -> float:
        v = v[np.isfinite(v)]
        return float(np.std(v, ddof=1)) if len(v) > 1 else math.nan

    sigma = res.get("sigma_rel_range")
    noise = WeightNoise(
        sigma=float(sigma) if isinstance(sigma, (int, float)) and math.isfinite(sigma) else sd(err / g_range),
        source_run=info.run_id,
        attempts=len(df),
        n_devices=int(df["device"].nunique()),
        sigma_rel_gmax=sd(err / df["g_max"].to_numpy()),
        sigma_abs=sd(err),
        sigma_proportional=sd(err / target),
    )
    level = df["level"].to_numpy(np.int64)
    levels = np.unique(level)
    k = np.searchsorted(levels, level)
    frac_achieved = (achieved - df["g_min"].to_numpy()) / g_range
    ok = np.isfinite(frac_achieved)
    cnt = np.bincount(k[ok], minlength=len(levels))

    def per_level(v: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        mean, std, _, _ = bin_statistics(k[ok], v[ok], len(levels), np.array([0.5]))
        return mean, std

    a_mean, a_std = per_level(frac_achieved)
    g_mean, g_std = per_level(achieved)
    t_mean, _ = per_level(target)
    f_mean, _ = per_level(df["fraction"].to_numpy(np.float64))
    table = ProgrammingTable(level=levels.astype(np.int64), target_fraction=f_mean, achieved_mean=a_mean,
                             achieved_std=a_std, count=cnt.astype(np.int64), target_conductance=t_mean,
                             achieved_conductance_mean=g_mean, achieved_conductance_std=g_std, source_run=info.run_id)
    return noise, table


def _wafer(bench: Mapping[str, Any]) -> str:
    if bench.get("wafer"):
        return str(bench["wafer"])
    if bench.get("simulated"):
        return f"simulated wafer, seed {bench.get('seed')}"
    return str(bench.get("name", ""))


def file_sha256(path: str | Path) -> str:
    """The sha256 of a file, read in 1 MiB blocks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()
