"""Nested results (fits, figures of merit) to and from an HDF5 group.

Scalars become attributes, arrays become datasets, dicts become subgroups, so any HDF5
tool shows a run's results without labpcu. ``None`` is stored as an empty attribute.
JSON helpers for metadata attributes live here too (NaN and infinities allowed, as
Python's json writes them).
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
    """Write ``tree`` under ``group``: str/int/float/bool/None to attributes, lists and
    arrays to datasets, mappings to subgroups."""
    for key, value in tree.items():
        check_name(str(key), "result")
        key = str(key)
        if isinstance(value, Mapping):
            write_tree(group.require_group(key), value)
        elif value is None:
            group.attrs[key] = h5py.Empty("f8")
        elif isinstance(value, str):
            group.attrs.create(key, value, dtype=_STR)
        elif isinstance(value, (bool, np.bool_, int, float, np.integer, np.floating)):
            group.attrs[key] = value
        else:
            arr = np.asarray(value)
            if arr.dtype.kind in "OUS":
                flat = arr.ravel()
                if arr.dtype.kind == "O" and not all(isinstance(v, str) for v in flat):
                    raise TypeError(f"result {key!r}: cannot store {type(value).__name__} values")
                arr = np.asarray([str(v) for v in flat], dtype=object).reshape(arr.shape)
                group.create_dataset(key, data=arr, dtype=_STR)
            elif arr.dtype.kind in "biuf":
                group.create_dataset(key, data=arr)
            else:
                raise TypeError(f"result {key!r}: cannot store {arr.dtype} values")


def read_tree(group: h5py.Group) -> dict[str, Any]:
    """The inverse of :func:`write_tree` (tuples come back as arrays)."""
    out: dict[str, Any] = {}
    for key, value in group.attrs.items():
        out[key] = _attr_value(value)
    for key, item in group.items():
        if isinstance(item, h5py.Group):
            out[key] = read_tree(item)
        elif h5py.check_string_dtype(item.dtype) is not None:
            out[key] = item.asstr()[()]
        else:
            out[key] = item[()]
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
