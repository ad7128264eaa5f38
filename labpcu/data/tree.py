"""Nested results (fits, figures of merit) to and from an HDF5 group.

Scalars become attributes, arrays become datasets, dicts become subgroups, so any HDF5
tool shows a run's results without labpcu. ``None`` is stored as an empty attribute.
JSON helpers for metadata attributes live here too (NaN and infinities allowed, as
Python's json writes them).

So that netCDF readers (xarray's ``open_datatree(path, engine="h5netcdf")``) show the
results as variables and not only as group attributes, each scalar (number, bool,
string) is *also* written as a 0-d dataset of the same name, and every array gets
HDF5 dimension scales: in a group, the arrays' axes of equal length share one
dimension, named after a 1-D string array of that length when the group has one (it
becomes the coordinate, e.g. ``unit`` for ``per_unit/mean_relative_error``), else
``n<length>`` (a netCDF "dimension without a variable": a scale dataset HDF5 never
allocates, marked by its ``NAME`` attribute). Booleans are stored as uint8 with the
attribute ``dtype="bool"`` (the netCDF/xarray convention), since HDF5 has no bool.
:func:`read_tree` skips the 0-d twins and the dimensions, so the tree reads back as
it was written; files written before these additions read the same way.
"""
from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

import h5py
import numpy as np

from labpcu.data.columns import check_name

_STR = h5py.string_dtype()


def to_json(value: Any) -> str:
    """JSON for metadata attributes; numpy scalars and arrays become plain values."""
    return json.dumps(value, default=_json_default, ensure_ascii=False, sort_keys=False)


def from_json(text: str | bytes) -> Any:
    if isinstance(text, bytes):
        text = text.decode("utf-8")
    return json.loads(text)


def _json_default(obj: Any) -> Any:
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, (set, frozenset, tuple)):
        return list(obj)
    raise TypeError(f"cannot store {type(obj).__name__} in run metadata")


def write_tree(group: h5py.Group, tree: Mapping[str, Any]) -> None:
    """Write ``tree`` under ``group``: str/int/float/bool/None to attributes (and a 0-d
    dataset each, except None), lists and arrays to datasets with dimension scales,
    mappings to subgroups."""
    arrays: dict[str, np.ndarray] = {}
    for key, value in tree.items():
        check_name(str(key), "result")
        key = str(key)
        if isinstance(value, Mapping):
            write_tree(group.require_group(key), value)
        elif value is None:
            group.attrs[key] = h5py.Empty("f8")
        elif isinstance(value, str):
            group.attrs.create(key, value, dtype=_STR)
            group.create_dataset(key, data=value, dtype=_STR)
        elif isinstance(value, (bool, np.bool_, int, float, np.integer, np.floating)):
            group.attrs[key] = value
            _create(group, key, np.asarray(value))
        else:
            arr = np.asarray(value)
            if arr.dtype.kind in "OUS":
                flat = arr.ravel()
                if arr.dtype.kind == "O" and not all(isinstance(v, str) for v in flat):
                    raise TypeError(f"result {key!r}: cannot store {type(value).__name__} values")
                arr = np.asarray([str(v) for v in flat], dtype=object).reshape(arr.shape)
            elif arr.dtype.kind not in "biuf":
                raise TypeError(f"result {key!r}: cannot store {arr.dtype} values")
            arrays[key] = arr
    for key, arr in arrays.items():
        _create(group, key, arr)
    if arrays:
        attach_dimensions(group, arrays, taken=set(tree))


def _create(group: h5py.Group, key: str, arr: np.ndarray) -> h5py.Dataset:
    if arr.dtype.kind == "O":
        return group.create_dataset(key, data=arr, dtype=_STR)
    if arr.dtype.kind == "b":
        ds = group.create_dataset(key, data=arr.astype(np.uint8))
        ds.attrs["dtype"] = "bool"
        return ds
    return group.create_dataset(key, data=arr)


#: the NAME of a netCDF dimension scale that is not a variable (as netCDF-4 writes it)
NOT_A_VARIABLE = "This is a netCDF dimension but not a netCDF variable."


def make_dimension(group: h5py.Group, name: str, size: int) -> h5py.Dataset:
    """A netCDF dimension without a coordinate variable: a dimension scale of ``size``
    that is never written (HDF5 allocates no storage for it). netCDF readers list it as
    a dimension only; :func:`is_dimension_only` tells h5py readers to skip it."""
    ds = group.create_dataset(name, shape=(int(size),), dtype=">f4")
    ds.make_scale(f"{NOT_A_VARIABLE}{int(size):10d}")
    return ds


def is_dimension_only(ds: h5py.Dataset) -> bool:
    """True for a dimension made by :func:`make_dimension` (or by netCDF-4)."""
    name = ds.attrs.get("NAME", b"")
    if isinstance(name, bytes):
        name = name.decode("ascii", "replace")
    return isinstance(name, str) and name.startswith(NOT_A_VARIABLE)


def attach_dimensions(group: h5py.Group, arrays: Mapping[str, np.ndarray], taken: set[str] = frozenset()) -> None:
    """Give every dataset ``arrays`` names in ``group`` dimension scales (see the module
    docstring): one dimension per axis length, named after the first 1-D string array of
    that length, else ``n<length>`` (``taken``: names not to use)."""
    labels: dict[int, str] = {}
    for key, arr in arrays.items():
        if arr.ndim == 1 and arr.dtype.kind == "O" and len(arr) not in labels:
            labels[len(arr)] = key
    used = set(taken) | set(group)
    scales: dict[tuple[int, int], h5py.Dataset] = {}

    def scale(length: int, repeat: int) -> h5py.Dataset:
        """The dimension for the ``repeat``-th axis of this length within one array."""
        if (length, repeat) not in scales:
            if repeat == 0 and length in labels:
                ds = group[labels[length]]
                ds.make_scale(labels[length])
            else:
                name = f"n{length}" if repeat == 0 else f"n{length}_{repeat}"
                while name in used:
                    name += "_"
                used.add(name)
                ds = make_dimension(group, name, length)
            scales[(length, repeat)] = ds
        return scales[(length, repeat)]

    for key, arr in arrays.items():
        ds = group[key]
        seen: dict[int, int] = {}
        for axis, length in enumerate(arr.shape):
            repeat = seen.get(length, 0)
            seen[length] = repeat + 1
            if ds.ndim == 1 and repeat == 0 and labels.get(length) == key:
                continue  # the coordinate itself
            ds.dims[axis].attach_scale(scale(length, repeat))


def read_tree(group: h5py.Group) -> dict[str, Any]:
    """The inverse of :func:`write_tree` (tuples come back as arrays)."""
    out: dict[str, Any] = {}
    for key, value in group.attrs.items():
        out[key] = _attr_value(value)
    for key, item in group.items():
        if isinstance(item, h5py.Group):
            out[key] = read_tree(item)
        elif not isinstance(item, h5py.Dataset) or is_dimension_only(item):
            continue
        elif item.ndim == 0 and key in group.attrs:
            continue  # the 0-d twin of a scalar attribute
        elif h5py.check_string_dtype(item.dtype) is not None:
            out[key] = item.asstr()[()]
        else:
            value = item[()]
            flag = item.attrs.get("dtype")
            if flag in ("bool", b"bool"):
                value = np.asarray(value).astype(bool)
            out[key] = value
    return out


def _attr_value(value: Any) -> Any:
    if isinstance(value, h5py.Empty):
        return None
    if isinstance(value, bytes):
        return value.decode("utf-8")
    if isinstance(value, np.bool_):
        return bool(value)
    if isinstance(value, np.integer):
        return int(value)
    if isinstance(value, np.floating):
        return float(value)
    return value
