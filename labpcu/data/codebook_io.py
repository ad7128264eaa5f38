"""Codebook files: a standalone HDF5 file, a group in a run store, or a folder of npz.

The format is specified in docs/codebook-format.md (schema ``labpcu-codebook``,
version 3; versions 1 and 2 still load). HDF5 layout (the same under a file's root and
under ``/codebooks/<name>/`` of a store)::

    /                         attrs: schema="labpcu-codebook", schema_version, labpcu_version,
                                     devices, wafer, source_runs (JSON), created,
                                     temperature (K, if known), tile_size, operators
    /operators/<op>/          attrs: every spec field (kind, ideal, ideal_params (JSON),
                                     inputs, units, scale/offset, clip, noise_scope, ...)
    /operators/<op>/<axis>    grid axis, an HDF5 dimension scale (so xarray opens the group)
    /operators/<op>/level     quantile levels, a dimension scale
    /operators/<op>/mean, std, count, ideal      grid shape, dims attached
    /operators/<op>/quantiles                    grid shape + (level,)
    /operators/<op>/samples/x, y, device, repeat, time    raw samples, gzip; dims
                              (sample,) and x (sample, input): ``sample`` is a netCDF
                              dimension without a variable, ``input`` the axis names
    /operators/vmm/effective_weight/      the VMM's requested -> effective weight map
                              (version 3): attrs g_ref (S), i_ref (A), v_read (V),
                              definition, noise_scope, error_mean/min/max, source_run;
                              requested (level scale), programmed_mean, effective_mean,
                              effective_std, gain_mean, gain_std, count; samples/device,
                              target (S), programmed (S), current (A)
    /weight_noise             attrs: sigma, reference, resample, distribution, ...
    /programming/             level (scale), target_fraction, achieved_mean, ... (VMM)

Every array carries a ``units`` attribute (tables are in network units; ``physical_units``,
``physical_scale`` and ``physical_offset`` give physical = value · scale + offset).
Version 2 added the samples' dimensions and the ``units`` attributes; version 1 files
lack them and read the same. Version 3 added the VMM's effective-weight map; older
files read with ``effective_weight = None``.

The npz twin: ``manifest.json`` (every attribute, and each file's sha256) plus one
``.npz`` per operator with the same datasets (samples as ``samples_x``..., the
effective-weight map as ``effective_weight_<key>`` with its attributes in the
operator's manifest entry under ``effective_weight``; strings
as fixed-width unicode, nothing needs pickle) and ``programming.npz``. Both forms
read back with h5py or numpy alone; :func:`load_codebook` reads either.
"""

from __future__ import annotations

import json
import math
import re
import zipfile
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from labpcu import __version__
from labpcu.data.codebook import (
    SCHEMA,
    SCHEMA_VERSION,
    Codebook,
    EffectiveWeightMap,
    OperatorTable,
    ProgrammingTable,
    Samples,
    WeightNoise,
    _factorize,
    file_sha256,
)
from labpcu.data.columns import ColumnError, check_name
from labpcu.data.errors import SchemaError, StoreError
from labpcu.data.tree import make_dimension

MANIFEST = "manifest.json"
#: schema versions this labpcu reads (it writes SCHEMA_VERSION)
READ_VERSIONS = (1, 2, 3)
FORMATS = ("hdf5", "npz", "both")
_STR = h5py.string_dtype()
#: how each operator attribute is stored and read back (JSON for mappings)
_OP_ATTRS: dict[str, str] = {
    "name": "str", "kind": "str", "ideal": "str", "ideal_params": "json", "inputs": "strs", "output": "str",
    "ideal_column": "str", "axis_names": "strs", "input_units": "strs", "output_unit": "str",
    "input_scale": "floats", "input_offset": "floats", "output_scale": "float", "output_offset": "float",
    "clip": "floats2", "interpolation": "str", "extrapolation": "str", "noise_scope": "str", "notes": "str",
    "where": "json", "devices": "strs", "n_repeats": "int", "noise_scale": "float", "source_run": "str",
    "energy_per_op": "float", "dropped": "int", "tile_size": "ints",
}
#: written for readers, derived on loading
_OP_INFO = {
    "n_devices": "number of devices (operator units) measured",
    "quantile_method": "numpy 'linear' (type 7); levels 0 and 1 are the min and max of the bin",
    "std_ddof": 1,
    "normalization": "physical = network * scale + offset (inputs and output)",
    "empty_bins": "count == 0: values interpolated from measured neighbours",
}
_WN_ATTRS = {"sigma": "float", "reference": "str", "resample": "str", "distribution": "str", "source_run": "str",
             "attempts": "int", "n_devices": "int", "sigma_rel_gmax": "float", "sigma_abs": "float",
             "sigma_proportional": "float"}
_ROOT_ATTRS = {"devices": "strs", "operators": "strs", "tile_size": "ints", "source_runs": "json"}
_PROG_ARRAYS = ("level", "target_fraction", "achieved_mean", "achieved_std", "count", "target_conductance",
                "achieved_conductance_mean", "achieved_conductance_std")
#: rows per HDF5 chunk of the raw samples
_SAMPLE_CHUNK = 1 << 18
_SAMPLE_KEYS = ("x", "y", "device", "repeat", "time")
#: the effective-weight map: arrays per level, raw samples, attributes
_EW_LEVEL = ("requested", "programmed_mean", "effective_mean", "effective_std", "gain_mean", "gain_std", "count")
_EW_SAMPLES = ("device", "target", "programmed", "current")
_EW_ATTRS = {"g_ref": "float", "i_ref": "float", "v_read": "float", "error_mean": "float", "error_min": "float",
             "error_max": "float", "noise_scope": "str", "definition": "str", "source_run": "str"}
#: units of each map array: (unit, physical unit, scale attribute) -- fractions of g_ref or i_ref
_EW_UNITS = {"requested": "g_ref", "programmed_mean": "g_ref", "effective_mean": "i_ref", "effective_std": "i_ref"}


# ====================================================================== attributes
def _operator_attrs(t: OperatorTable) -> dict[str, Any]:
    """Every spec field as plain Python values (lists, floats, str, dicts)."""
    out: dict[str, Any] = {}
    for key, how in _OP_ATTRS.items():
        v = getattr(t, key)
        if how in ("strs", "ints"):
            v = [str(s) if how == "strs" else int(s) for s in v]
        elif how in ("floats", "floats2"):
            v = np.asarray(v, dtype=float).tolist()
        elif how == "json":
            v = dict(v)
        elif how == "float":
            v = float(v)
        elif how == "int":
            v = int(v)
        out[key] = v
    return out


def _root_attrs(cb: Codebook) -> dict[str, Any]:
    return {
        "schema": cb.schema,
        "schema_version": SCHEMA_VERSION,  # the layout written is always the current one
        "labpcu_version": cb.labpcu_version,
        "devices": list(cb.devices),
        "wafer": cb.wafer,
        "source_runs": [dict(s) for s in cb.source_runs],
        "created": cb.created,
        "temperature": cb.temperature,
        "tile_size": [int(v) for v in cb.tile_size],
        "operators": list(cb.operators),
    }


def _parse(value: Any, how: str) -> Any:
    """An attribute as stored (HDF5 or JSON) back to its Python form."""
    if isinstance(value, bytes):
        value = value.decode("utf-8")
    if how == "str":
        return str(value)
    if how == "strs":
        return tuple(v.decode("utf-8") if isinstance(v, bytes) else str(v) for v in np.atleast_1d(value).tolist())
    if how == "ints":
        return tuple(int(v) for v in np.atleast_1d(np.asarray(value, dtype=np.int64)))
    if how == "json":
        return json.loads(value) if isinstance(value, str) else dict(value)
    if how == "float":
        return _float(value)
    if how == "int":
        return int(value)
    arr = np.array([_float(v) for v in np.ravel(np.asarray(value, dtype=object))], dtype=np.float64)
    return arr.reshape(-1, 2) if how == "floats2" else arr


def _float(v: Any) -> float:
    return math.nan if v is None else float(v)


# ====================================================================== HDF5
def write_group(group: h5py.Group, cb: Codebook, *, compression: str | None = "gzip") -> None:
    """Write ``cb`` under an open HDF5 group (a file's root, or a store's /codebooks/<name>)."""
    for key, value in _root_attrs(cb).items():
        if key == "temperature" and value is None:
            continue  # unknown: no attribute
        _set_attr(group, key, value, _ROOT_ATTRS.get(key))
    ops = group.create_group("operators", track_order=True)
    for name, table in cb.operators.items():
        _write_operator(ops.create_group(name), table, compression)
    if cb.weight_noise is not None:
        wn = group.create_group("weight_noise")
        for key in _WN_ATTRS:
            _set_attr(wn, key, getattr(cb.weight_noise, key))
    if cb.programming is not None:
        pg = group.create_group("programming")
        pg.attrs["source_run"] = cb.programming.source_run
        pg.attrs["description"] = ("fractions are of each device's range (G - G_min)/(G_max - G_min); "
                                   "conductances in S")
        level = pg.create_dataset("level", data=cb.programming.level)
        level.make_scale("level")
        level.attrs["units"] = "1"
        for key in _PROG_ARRAYS[1:]:
            ds = pg.create_dataset(key, data=getattr(cb.programming, key))
            ds.dims[0].attach_scale(level)
            ds.attrs["units"] = "S" if "conductance" in key else "1"


def _write_operator(g: h5py.Group, t: OperatorTable, compression: str | None) -> None:
    for key, value in _operator_attrs(t).items():
        _set_attr(g, key, value, _OP_ATTRS[key])
    for key, value in _OP_INFO.items():
        g.attrs[key] = value
    g.attrs["n_devices"] = t.n_devices
    scales = []
    for j, (name, axis) in enumerate(zip(t.axis_names, t.axes)):
        ds = g.create_dataset(name, data=axis)
        ds.make_scale(name)
        _set_units(ds, *_input_unit(t, j))
        scales.append(ds)
    level = g.create_dataset("level", data=t.quantile_levels)
    level.make_scale("level")
    level.attrs["units"] = "1"
    level.attrs["long_name"] = "quantile level (0: min, 1: max of the grid point's samples)"
    arrays = {"mean": t.mean, "std": t.std, "count": t.count, "ideal": t.ideal_values, "quantiles": t.quantiles}
    out = (t.output_unit, t.output_scale, t.output_offset)
    units = {"mean": out, "ideal": out, "quantiles": out, "std": (t.output_unit, t.output_scale, 0.0)}
    for key, value in arrays.items():
        ds = g.create_dataset(key, data=value)
        for j, scale in enumerate(scales):
            ds.dims[j].attach_scale(scale)
        if key == "quantiles":
            ds.dims[len(scales)].attach_scale(level)
        if key in units:
            _set_units(ds, *units[key])
        else:
            ds.attrs["units"] = "1"
    if t.samples is not None:
        s = g.create_group("samples")
        s.attrs["description"] = "raw samples: x (N, d) in network units, y measured, device, repeat, time (s)"
        n = len(t.samples)
        sample = make_dimension(s, "sample", n)
        inputs = s.create_dataset("input", data=np.array(list(t.axis_names), dtype=object), dtype=_STR)
        inputs.make_scale("input")
        arrays = {"x": t.samples.x, "y": t.samples.y, "device": _encode_devices(t.samples),
                  "repeat": t.samples.repeat, "time": t.samples.time}
        for key, value in arrays.items():
            opts: dict[str, Any] = {}
            if compression and len(value):  # level 1: noisy floats barely shrink more at 4, at twice the time
                opts = {"compression": compression, "compression_opts": 1 if compression == "gzip" else None,
                        "shuffle": True, "chunks": (min(len(value), _SAMPLE_CHUNK),) + value.shape[1:]}
            ds = s.create_dataset(key, data=value, **opts)
            ds.dims[0].attach_scale(sample)
            if key == "x":
                ds.dims[1].attach_scale(inputs)
        x_units = [_input_unit(t, j) for j in range(t.ndim)]
        if len({u for u in x_units}) == 1:
            _set_units(s["x"], *x_units[0])
        else:  # one unit per input: the lists, in the order of `input`
            s["x"].attrs["units"] = "1"
            for k, key in enumerate(("physical_units", "physical_scale", "physical_offset")):
                s["x"].attrs[key] = np.array([u[k] for u in x_units], dtype=object if k == 0 else float)
        _set_units(s["y"], *out)
        s["device"].attrs["_Encoding"] = "utf-8"  # fixed-width UTF-8: netCDF readers decode it to text
        s["repeat"].attrs["units"] = "1"
        s["time"].attrs["units"] = "s"
    if t.effective_weight is not None:
        _write_effective_weight(g.create_group("effective_weight"), t.effective_weight)


def _write_effective_weight(g: h5py.Group, m: EffectiveWeightMap) -> None:
    """The map under its own group: per-level arrays on the ``requested`` scale (network
    units, physical = value · g_ref or · i_ref), raw samples in SI units."""
    for key, how in _EW_ATTRS.items():
        _set_attr(g, key, getattr(m, key), how)
    g.attrs["units_of_attributes"] = "g_ref: S, i_ref: A, v_read: V, error_*: 1 (|gain - 1|)"
    scale = None
    for key in _EW_LEVEL:
        ds = g.create_dataset(key, data=getattr(m, key))
        if scale is None:
            ds.make_scale("requested")
            scale = ds
        else:
            ds.dims[0].attach_scale(scale)
        ref = _EW_UNITS.get(key)
        if ref is not None:
            _set_units(ds, "S" if ref == "g_ref" else "A", getattr(m, ref), 0.0)
        else:
            ds.attrs["units"] = "1"
    s = g.create_group("samples")
    s.attrs["description"] = "one row per cell and level: device, target and programmed conductance (S), row current (A)"
    sample = make_dimension(s, "sample", len(m.target))
    ds = s.create_dataset("device", data=np.array([str(d) for d in m.device], dtype=object), dtype=_STR)
    ds.dims[0].attach_scale(sample)
    for key, unit in (("target", "S"), ("programmed", "S"), ("current", "A")):
        ds = s.create_dataset(key, data=getattr(m, key))
        ds.dims[0].attach_scale(sample)
        ds.attrs["units"] = unit


def _read_effective_weight(g: h5py.Group) -> EffectiveWeightMap:
    s = g["samples"]
    device = np.array([v.decode("utf-8") if isinstance(v, bytes) else str(v) for v in s["device"][()]], dtype=str)
    return EffectiveWeightMap(**{k: g[k][()] for k in _EW_LEVEL}, **{k: s[k][()] for k in _EW_SAMPLES[1:]},
                              device=device, **{k: _parse(g.attrs[k], how) for k, how in _EW_ATTRS.items()})


def _encode_devices(s: Samples) -> np.ndarray:
    """Fixed-width UTF-8 device ids, one per sample (readable by any HDF5 tool)."""
    names = np.char.encode(np.array(s.devices or ("",), dtype=str), "utf-8")
    width = max(1, names.dtype.itemsize)
    return names.astype(h5py.string_dtype("utf-8", width))[s.device_index]


def _input_unit(t: OperatorTable, j: int) -> tuple[str, float, float]:
    """(physical unit, scale, offset) of input ``j`` (an empty list means 1 and 0)."""
    unit = t.input_units[j] if j < len(t.input_units) else ""
    scale = float(t.input_scale[j]) if j < len(t.input_scale) else 1.0
    offset = float(t.input_offset[j]) if j < len(t.input_offset) else 0.0
    return unit, scale, offset


def network_units(unit: str, scale: float, offset: float) -> str:
    """The ``units`` of values in network units: the physical unit itself when scale is
    1 and offset 0, a scaled unit (``"3.2e-06 A"``, UDUNITS syntax) when only the
    offset is 0, else ``"1"`` (the physical_* attributes say how to convert)."""
    unit = unit or "1"
    if scale == 1.0 and offset == 0.0:
        return unit
    if offset == 0.0:
        return repr(float(scale)) if unit == "1" else f"{float(scale)!r} {unit}"
    return "1"


def _set_units(ds: h5py.Dataset, unit: str, scale: float, offset: float) -> None:
    ds.attrs.create("units", network_units(unit, scale, offset), dtype=_STR)
    ds.attrs.create("physical_units", unit or "1", dtype=_STR)
    ds.attrs["physical_scale"] = float(scale)
    ds.attrs["physical_offset"] = float(offset)


def _set_attr(obj: Any, key: str, value: Any, how: str | None = None) -> None:
    if how == "json" or isinstance(value, Mapping) or (isinstance(value, list) and value and isinstance(value[0], Mapping)):
        obj.attrs[key] = json.dumps(value, ensure_ascii=False)
    elif how == "strs" or (isinstance(value, list) and value and isinstance(value[0], str)):
        obj.attrs.create(key, data=np.array([str(v) for v in value], dtype=object), dtype=_STR)
    elif isinstance(value, str):
        obj.attrs.create(key, data=value, dtype=_STR)
    elif how == "ints":
        obj.attrs[key] = np.asarray(value, dtype=np.int64)
    elif isinstance(value, list):
        obj.attrs[key] = np.asarray(value, dtype=np.float64)
    else:
        obj.attrs[key] = value


def read_group(group: h5py.Group, where: str = "codebook") -> Codebook:
    """The codebook stored under ``group`` (see :func:`write_group`)."""
    a = group.attrs
    _check_version(a.get("schema"), a.get("schema_version"), where, a.get("labpcu_version"))
    operators: dict[str, OperatorTable] = {}
    ops = group.get("operators", {})
    for name in _parse(a.get("operators", []), "strs"):
        if name not in ops:
            raise SchemaError(f"{where}: operator {name!r} is listed but has no group")
        operators[name] = _read_operator(ops[name], f"{where}: operator {name!r}")
    wn = None
    if "weight_noise" in group:
        wa = group["weight_noise"].attrs
        wn = WeightNoise(**{k: _parse(wa[k], how) for k, how in _WN_ATTRS.items() if k in wa})
    prog = None
    if "programming" in group:
        pg = group["programming"]
        prog = ProgrammingTable(**{k: pg[k][()] for k in _PROG_ARRAYS}, source_run=_parse(pg.attrs["source_run"], "str"))
    return Codebook(
        operators=operators,
        weight_noise=wn,
        programming=prog,
        tile_size=_parse(a.get("tile_size", []), "ints"),
        devices=_parse(a.get("devices", []), "strs"),
        wafer=_parse(a.get("wafer", ""), "str"),
        source_runs=tuple(json.loads(_parse(a.get("source_runs", "[]"), "str"))),
        created=_parse(a.get("created", ""), "str"),
        temperature=_float(a["temperature"]) if "temperature" in a else None,
        labpcu_version=_parse(a.get("labpcu_version", ""), "str"),
        schema=SCHEMA,
        schema_version=int(a["schema_version"]),
    )


def _read_operator(g: h5py.Group, where: str) -> OperatorTable:
    kw = _attrs_to_fields({k: g.attrs[k] for k in _OP_ATTRS if k in g.attrs}, where)
    axes = tuple(g[a][()] for a in kw["axis_names"])
    samples = None
    if "samples" in g:
        s = g["samples"]
        samples = _samples({k: s[k][()] for k in _SAMPLE_KEYS})
    ew = _read_effective_weight(g["effective_weight"]) if "effective_weight" in g else None
    return OperatorTable(**kw, axes=axes, quantile_levels=g["level"][()], mean=g["mean"][()], std=g["std"][()],
                         count=g["count"][()], ideal_values=g["ideal"][()], quantiles=g["quantiles"][()], samples=samples,
                         effective_weight=ew)


def _attrs_to_fields(attrs: Mapping[str, Any], where: str) -> dict[str, Any]:
    missing = [k for k in ("name", "kind", "ideal", "axis_names") if k not in attrs]
    if missing:
        raise SchemaError(f"{where}: missing attribute(s) {', '.join(missing)}")
    return {k: _parse(v, _OP_ATTRS[k]) for k, v in attrs.items() if k in _OP_ATTRS}


def _samples(arrays: Mapping[str, np.ndarray]) -> Samples:
    codes, names = _factorize(arrays["device"], len(arrays["y"]), "samples")
    return Samples(x=np.asarray(arrays["x"], dtype=np.float64), y=np.asarray(arrays["y"], dtype=np.float64),
                   device_index=codes, devices=names, repeat=np.asarray(arrays["repeat"], dtype=np.int64),
                   time=np.asarray(arrays["time"], dtype=np.float64))


def _check_version(schema: Any, version: Any, where: str, writer: Any = None) -> None:
    if isinstance(schema, bytes):
        schema = schema.decode("utf-8")
    if schema != SCHEMA:
        raise SchemaError(f"{where} is not a labpcu codebook (schema {schema!r}, expected {SCHEMA!r})")
    try:
        v = int(version)
    except (TypeError, ValueError):
        raise SchemaError(f"{where} has no valid schema_version ({version!r})") from None
    if v not in READ_VERSIONS:
        by = f", written by labpcu {writer}" if writer else ""
        raise SchemaError(f"{where} is codebook schema version {v}{by}; this labpcu {__version__} reads versions "
                          f"{', '.join(map(str, READ_VERSIONS))}")


def save_hdf5(cb: Codebook, path: str | Path) -> Path:
    """Write a standalone codebook file (replaced if it exists)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    with h5py.File(tmp, "w") as f:
        write_group(f, cb)
    tmp.replace(path)
    return path


def save_to_store(cb: Codebook, store_path: str | Path, name: str) -> str:
    """Write ``cb`` into a run store under ``/codebooks/<name>`` (replacing one of that
    name). Returns the group's path."""
    from labpcu.data.store import Store

    _check_codebook_name(name)
    store = Store(store_path)
    if not store.path.exists():
        raise StoreError(f"no run store at {store.path}")
    with store.writable() as f:
        books = f.require_group("codebooks")
        if name in books:
            del books[name]
        write_group(books.create_group(name), cb)
    return f"/codebooks/{name}"


def _check_codebook_name(name: str) -> None:
    try:
        check_name(name, "codebook")
    except ColumnError as exc:
        raise ValueError(str(exc)) from None


@contextmanager
def _open_h5(path: Path) -> Iterator[h5py.File]:
    """Read-only; a run store may be in SWMR mode, a codebook file is not."""
    try:
        f = h5py.File(path, "r", swmr=True)
    except OSError:
        try:
            f = h5py.File(path, "r")
        except OSError as exc:
            raise StoreError(f"cannot open {path}: {str(exc).splitlines()[0]}") from None
    try:
        yield f
    finally:
        f.close()


def list_codebooks(path: str | Path) -> list[str]:
    """Names of the codebooks stored in a run store."""
    with _open_h5(Path(path)) as f:
        return sorted(f.get("codebooks", {}))


# ====================================================================== npz
def save_npz(cb: Codebook, folder: str | Path) -> Path:
    """Write the portable twin into ``folder``: one .npz per operator, programming.npz,
    and manifest.json (written last, so a folder with a manifest is complete)."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    manifest: dict[str, Any] = {**_root_attrs(cb), "operators": [], "weight_noise": None, "programming": None}
    used: set[str] = set()
    for name, t in cb.operators.items():
        file = _file_name(name, used)
        arrays = {a: ax for a, ax in zip(t.axis_names, t.axes)}
        arrays.update(level=t.quantile_levels, mean=t.mean, std=t.std, count=t.count, ideal=t.ideal_values,
                      quantiles=t.quantiles)
        if t.samples is not None:
            arrays.update(samples_x=t.samples.x, samples_y=t.samples.y, samples_device=t.samples.device,
                          samples_repeat=t.samples.repeat, samples_time=t.samples.time)
        ew = t.effective_weight
        if ew is not None:
            arrays.update({f"effective_weight_{k}": getattr(ew, k) for k in (*_EW_LEVEL, *_EW_SAMPLES)})
        _write_npz(folder / file, arrays)
        attrs = {**_operator_attrs(t), **_OP_INFO, "n_devices": t.n_devices, "has_samples": t.samples is not None}
        entry = {"name": name, "file": file, "sha256": file_sha256(folder / file), "attrs": _json_safe(attrs)}
        if ew is not None:
            entry["effective_weight"] = _json_safe({k: getattr(ew, k) for k in _EW_ATTRS})
        manifest["operators"].append(entry)
    if cb.weight_noise is not None:
        manifest["weight_noise"] = _json_safe({k: getattr(cb.weight_noise, k) for k in _WN_ATTRS})
    if cb.programming is not None:
        _write_npz(folder / "programming.npz", {k: getattr(cb.programming, k) for k in _PROG_ARRAYS})
        manifest["programming"] = {"file": "programming.npz", "sha256": file_sha256(folder / "programming.npz"),
                                   "source_run": cb.programming.source_run}
    path = folder / MANIFEST
    path.write_text(json.dumps(_json_safe(manifest), indent=1, ensure_ascii=False, allow_nan=False), encoding="utf-8")
    return path


def _write_npz(path: Path, arrays: Mapping[str, np.ndarray]) -> None:
    """A standard .npz (what ``np.savez_compressed`` writes), deflated at level 1: the
    raw samples are noisy floats, which level 6 barely shrinks more at twice the time."""
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED, compresslevel=1, allowZip64=True) as zf:
        for key, value in arrays.items():
            with zf.open(f"{key}.npy", "w", force_zip64=True) as f:
                np.lib.format.write_array(f, np.asarray(value), allow_pickle=False)


def _file_name(name: str, used: set[str]) -> str:
    stem = "op-" + (re.sub(r"[^A-Za-z0-9_.-]", "_", name) or "operator")
    file, k = f"{stem}.npz", 1
    while file.lower() in used:
        k += 1
        file = f"{stem}-{k}.npz"
    used.add(file.lower())
    return file


def _json_safe(value: Any) -> Any:
    """Strict JSON: NaN becomes null, ±inf the strings "inf"/"-inf" (read back by float())."""
    if isinstance(value, float):
        return None if math.isnan(value) else (("inf" if value > 0 else "-inf") if math.isinf(value) else value)
    if isinstance(value, Mapping):
        return {str(k): _json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(v) for v in value]
    return value


def load_npz(folder: str | Path) -> Codebook:
    """Read a folder written by :func:`save_npz`, checking every file's sha256."""
    folder = Path(folder)
    path = folder / MANIFEST if folder.is_dir() else folder
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise StoreError(f"no {MANIFEST} in {path.parent}") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise SchemaError(f"{path} is not valid JSON: {exc}") from None
    if not isinstance(manifest, dict):
        raise SchemaError(f"{path} is not a codebook manifest")
    _check_version(manifest.get("schema"), manifest.get("schema_version"), str(path), manifest.get("labpcu_version"))
    operators: dict[str, OperatorTable] = {}
    for entry in manifest.get("operators", []):
        where = f"{path}: operator {entry.get('name')!r}"
        arrays = _load_checked(path.parent, entry, where)
        kw = _attrs_to_fields(entry.get("attrs", {}), where)
        samples = None
        if "samples_y" in arrays:
            samples = _samples({k: arrays[f"samples_{k}"] for k in _SAMPLE_KEYS})
        ew = None
        if entry.get("effective_weight"):
            attrs = entry["effective_weight"]
            ew = EffectiveWeightMap(**{k: arrays[f"effective_weight_{k}"] for k in (*_EW_LEVEL, *_EW_SAMPLES)},
                                    **{k: _parse(attrs[k], how) for k, how in _EW_ATTRS.items()})
        operators[kw["name"]] = OperatorTable(
            **kw, axes=tuple(arrays[a] for a in kw["axis_names"]), quantile_levels=arrays["level"],
            mean=arrays["mean"], std=arrays["std"], count=arrays["count"], ideal_values=arrays["ideal"],
            quantiles=arrays["quantiles"], samples=samples, effective_weight=ew)
    wn = None
    if manifest.get("weight_noise"):
        w = manifest["weight_noise"]
        wn = WeightNoise(**{k: _parse(w[k], how) for k, how in _WN_ATTRS.items() if k in w})
    prog = None
    if manifest.get("programming"):
        arrays = _load_checked(path.parent, manifest["programming"], f"{path}: programming")
        prog = ProgrammingTable(**{k: arrays[k] for k in _PROG_ARRAYS},
                                source_run=str(manifest["programming"].get("source_run", "")))
    temp = manifest.get("temperature")
    return Codebook(
        operators=operators, weight_noise=wn, programming=prog,
        tile_size=_parse(manifest.get("tile_size", []), "ints"),
        devices=_parse(manifest.get("devices", []), "strs"),
        wafer=str(manifest.get("wafer", "")),
        source_runs=tuple(manifest.get("source_runs", [])),
        created=str(manifest.get("created", "")),
        temperature=None if temp is None else float(temp),
        labpcu_version=str(manifest.get("labpcu_version", "")),
        schema=SCHEMA, schema_version=int(manifest["schema_version"]),
    )


def _load_checked(folder: Path, entry: Mapping[str, Any], where: str) -> dict[str, np.ndarray]:
    file = folder / str(entry.get("file", ""))
    if not file.is_file():
        raise StoreError(f"{where}: file {file.name} is missing")
    digest = file_sha256(file)
    if digest != entry.get("sha256"):
        raise StoreError(f"{where}: {file.name} has sha256 {digest[:12]}…, the manifest says "
                         f"{str(entry.get('sha256'))[:12]}…: the file changed after export")
    with np.load(file, allow_pickle=False) as z:
        return {k: z[k] for k in z.files}


# ====================================================================== either form
def load_codebook(path: str | Path, name: str | None = None) -> Codebook:
    """Read a codebook: an HDF5 codebook file, a run store (``name`` picks one of its
    /codebooks; optional when it holds one), or an npz folder / its manifest.json."""
    path = Path(path)
    if path.is_dir() or path.suffix.lower() == ".json":
        return load_npz(path)
    if not path.exists():
        raise StoreError(f"no codebook at {path}")
    with _open_h5(path) as f:
        schema = f.attrs.get("schema")
        schema = schema.decode("utf-8") if isinstance(schema, bytes) else schema
        if schema == "labpcu":  # a run store
            books = sorted(f.get("codebooks", {}))
            if name is None:
                if len(books) != 1:
                    raise StoreError(f"{path} holds {len(books)} codebooks ({', '.join(books) or 'none'}); name one")
                name = books[0]
            if name not in books:
                raise StoreError(f"no codebook {name!r} in {path}; it has {', '.join(books) or 'none'}")
            return read_group(f["codebooks"][name], f"{path}:/codebooks/{name}")
        return read_group(f, str(path))


def export_codebook(cb: Codebook, out: str | Path, *, format: str = "hdf5", name: str = "codebook") -> list[Path]:
    """Write ``cb`` as ``format`` (hdf5, npz or both). ``out``: for hdf5, a file ending
    in .h5/.hdf5, else a folder that receives ``<name>.h5``; for npz, the folder to fill
    (with both, ``out`` is a folder: ``<name>.h5`` and ``<name>/``). Returns what was written."""
    if format not in FORMATS:
        raise ValueError(f"format must be one of {', '.join(FORMATS)}, not {format!r}")
    out = Path(out)
    is_file = out.suffix.lower() in (".h5", ".hdf5")
    if format == "both" and is_file:
        raise ValueError(f"--format both writes a file and a folder: give a folder, not {out}")
    written = []
    if format in ("hdf5", "both"):
        written.append(save_hdf5(cb, out if is_file else out / f"{name}.h5"))
    if format in ("npz", "both"):
        if is_file:
            raise ValueError(f"the npz form is a folder: give a folder, not {out}")
        written.append(save_npz(cb, out / name if format == "both" else out).parent)
    return written
