"""A :class:`~labpcu.campaign.plan.Campaign` as campaign-file TOML: what the GUI's
queue saves, and what :func:`~labpcu.campaign.loader.parse_campaign` reads back to
the same campaign (same name, store, bench, seed, sample, and steps with the same
names, ``on_fail`` and fingerprints).

Values are written so that they parse back: numbers as numbers (floats exactly, by
their ``repr``; ``inf``/``nan`` as TOML's), booleans as ``true``/``false``, lists as
arrays, texts quoted with TOML's escapes. TOML has no null: a ``None`` value is
refused with one line naming it.

The loader reads an array of texts as one comma list (``["20u", "50u"]`` is
``"20u,50u"``, which the parameter parses with its unit); :func:`loaded_value` gives
a value in that form, so a step built in Python compares equal to the same step
saved and loaded again.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from typing import Any

from labpcu.campaign.plan import Campaign, Selection, Step

__all__ = ["campaign_to_toml", "loaded_value", "toml_value"]

_BARE_KEY = re.compile(r"[A-Za-z0-9_-]+")
_ESCAPES = {'"': '\\"', "\\": "\\\\", "\b": "\\b", "\t": "\\t", "\n": "\\n", "\f": "\\f", "\r": "\\r"}
_INT64 = (-(2**63), 2**63 - 1)


def campaign_to_toml(campaign: Campaign) -> str:
    """The campaign file for ``campaign``: ``[campaign]``, ``[sample]`` (when it has
    one) and one ``[[step]]`` per step, keys left out where they hold their default."""
    out = ["[campaign]", f"name = {toml_value(campaign.name)}"]
    for key in ("store", "bench"):
        value = getattr(campaign, key)
        if value is not None:
            out.append(f"{key} = {toml_value(str(value))}")
    if campaign.seed is not None:
        out.append(f"seed = {toml_value(campaign.seed, 'seed')}")
    if campaign.sample:
        out += ["", "[sample]"]
        out += [f"{_key(k)} = {toml_value(v, f'sample.{k}')}" for k, v in campaign.sample.items()]
    for step in campaign.steps:
        out += ["", *_step_lines(step)]
    return "\n".join(out) + "\n"


def _step_lines(step: Step) -> list[str]:
    where = f"step {step.name!r}"
    lines = ["[[step]]", f"name = {toml_value(step.name)}", f"protocol = {toml_value(step.protocol)}"]
    if isinstance(step.devices, Selection):
        devices = {"from": step.devices.from_step, "where": step.devices.where}
        lines.append(f"devices = {toml_value(devices, where + ' devices')}")
    else:
        lines.append(f"devices = {toml_value(list(step.devices), where + ' devices')}")
    if step.params:
        lines.append(f"params = {toml_value(dict(step.params), where + ' params')}")
    if step.grid:
        grid = {k: list(v) for k, v in step.grid.items()}
        lines.append(f"grid = {toml_value(grid, where + ' grid')}")
    if step.repeat != 1:
        lines.append(f"repeat = {toml_value(step.repeat, where + ' repeat')}")
    if step.on_fail != "stop":
        lines.append(f"on_fail = {toml_value(step.on_fail)}")
    if step.together is not None:
        lines.append(f"together = {toml_value(bool(step.together))}")
    if step.working_only:
        lines.append("working_only = true")
    if step.count is not None:
        lines.append(f"count = {toml_value(step.count)}")
    return lines


def toml_value(value: Any, where: str = "value") -> str:
    """One value as TOML text (inline: arrays and inline tables for lists and maps)."""
    if value is None:
        raise ValueError(f"{where}: TOML has no empty value (None); leave the key out instead")
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        if not _INT64[0] <= value <= _INT64[1]:
            raise ValueError(f"{where}: {value} does not fit TOML's 64-bit integers")
        return str(value)
    if isinstance(value, float):
        if math.isnan(value):
            return "nan"
        if math.isinf(value):
            return "inf" if value > 0 else "-inf"
        return repr(value)  # shortest text that reads back to the same float
    if isinstance(value, str):
        return _string(value)
    if isinstance(value, Mapping):
        items = [f"{_key(str(k))} = {toml_value(v, f'{where}.{k}')}" for k, v in value.items()]
        return "{ " + ", ".join(items) + " }" if items else "{}"
    if isinstance(value, Sequence) or hasattr(value, "tolist"):
        seq = value.tolist() if hasattr(value, "tolist") else value
        return "[" + ", ".join(toml_value(v, where) for v in seq) + "]"
    if hasattr(value, "item"):  # a numpy scalar
        return toml_value(value.item(), where)
    raise ValueError(f"{where}: cannot write {type(value).__name__} {value!r} in a campaign file")


def loaded_value(value: Any) -> Any:
    """``value`` as the campaign loader gives it back: a list of texts becomes one
    comma list, any other list a tuple."""
    if isinstance(value, (list, tuple)) and value and all(isinstance(v, str) for v in value):
        return ",".join(value)
    if isinstance(value, list):
        return tuple(value)
    return value


def _string(text: str) -> str:
    out = []
    for ch in text:
        if ch in _ESCAPES:
            out.append(_ESCAPES[ch])
        elif ord(ch) < 0x20 or ord(ch) == 0x7F:
            out.append(f"\\u{ord(ch):04X}")
        elif 0xD800 <= ord(ch) <= 0xDFFF:  # a lone surrogate is no character TOML can hold
            raise ValueError(f"text {text!r} holds a lone surrogate (U+{ord(ch):04X})")
        else:
            out.append(ch)
    return '"' + "".join(out) + '"'


def _key(key: str) -> str:
    return key if _BARE_KEY.fullmatch(key) else _string(key)
