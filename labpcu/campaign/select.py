"""Device selection from an earlier step's results: the screening-then-use pattern.

``where`` is a small boolean expression over one device's results, e.g.
``status == 'completed' and rectification_ratio > 1e3``. Only comparisons, ``and``,
``or``, ``not``, numbers, strings, ``True``/``False``/``None`` and names are allowed
(parsed with :mod:`ast`, never ``eval``): a campaign file cannot run code.

Names, per device of the earlier step:

* ``status``: the run's status (``completed``, ``failed``, ...);
* ``failed``: the device failed in that run (a :class:`DeviceFailure`), bool;
* ``passed``: the protocol's pass verdict for the run, or None;
* every scalar of the device's results (``results["devices"][device]`` when the
  protocol reports per device, else the run's top-level results).
"""

from __future__ import annotations

import ast
import operator
from collections.abc import Mapping
from typing import Any

_COMPARE = {
    ast.Eq: operator.eq, ast.NotEq: operator.ne, ast.Lt: operator.lt, ast.LtE: operator.le,
    ast.Gt: operator.gt, ast.GtE: operator.ge, ast.In: lambda a, b: a in b, ast.NotIn: lambda a, b: a not in b,
}
BUILTIN_NAMES = ("status", "failed", "passed")


class SelectionError(ValueError):
    """A ``where`` expression that cannot be parsed or evaluated; one line."""


def parse(where: str) -> ast.Expression:
    """Parse and check an expression; :class:`SelectionError` names what is not allowed."""
    try:
        tree = ast.parse(where, mode="eval")
    except SyntaxError as exc:
        raise SelectionError(f"where {where!r}: not an expression ({exc.msg})") from None
    for node in ast.walk(tree):
        if isinstance(node, (ast.Expression, ast.BoolOp, ast.And, ast.Or, ast.UnaryOp, ast.Not, ast.USub,
                             ast.Compare, ast.Name, ast.Load, ast.Constant, ast.Tuple, ast.List)):
            continue
        if type(node) in _COMPARE:
            continue
        raise SelectionError(f"where {where!r}: {type(node).__name__} is not allowed (use comparisons, "
                             f"and/or/not, numbers and strings)")
    return tree


def names(where: str) -> set[str]:
    return {n.id for n in ast.walk(parse(where)) if isinstance(n, ast.Name)} - {"True", "False", "None"}


def matches(where: str, values: Mapping[str, Any], device: str = "") -> bool:
    """Evaluate ``where`` for one device's ``values``."""
    tree = parse(where)
    return bool(_eval(tree.body, values, where, device))


def _eval(node: ast.AST, values: Mapping[str, Any], where: str, device: str) -> Any:
    if isinstance(node, ast.Constant):
        return node.value
    if isinstance(node, ast.Name):
        if node.id in ("True", "False", "None"):
            return {"True": True, "False": False, "None": None}[node.id]
        if node.id not in values:
            have = ", ".join(sorted(values)) or "nothing"
            raise SelectionError(f"where {where!r}: no {node.id!r} for device {device}; it has {have}")
        return values[node.id]
    if isinstance(node, (ast.Tuple, ast.List)):
        return tuple(_eval(e, values, where, device) for e in node.elts)
    if isinstance(node, ast.UnaryOp):
        value = _eval(node.operand, values, where, device)
        return (not value) if isinstance(node.op, ast.Not) else -value
    if isinstance(node, ast.BoolOp):
        results = (_eval(v, values, where, device) for v in node.values)
        return all(results) if isinstance(node.op, ast.And) else any(results)
    if isinstance(node, ast.Compare):
        left = _eval(node.left, values, where, device)
        for op, comp in zip(node.ops, node.comparators):
            right = _eval(comp, values, where, device)
            try:
                ok = _COMPARE[type(op)](left, right)
            except TypeError:
                raise SelectionError(f"where {where!r}: cannot compare {left!r} with {right!r} "
                                     f"for device {device}") from None
            if not ok:
                return False
            left = right
        return True
    raise SelectionError(f"where {where!r}: {type(node).__name__} is not allowed")  # parse() rejects it first


def device_values(device: str, status: str, results: Mapping[str, Any], failed: bool,
                  passed: bool | None) -> dict[str, Any]:
    """The names a ``where`` sees for one device of an earlier run."""
    per_device = results.get("devices")
    source = per_device.get(device, {}) if isinstance(per_device, Mapping) and device in per_device else results
    values = {k: v for k, v in source.items() if isinstance(v, (int, float, str, bool)) or v is None}
    values.update(status=status, failed=failed, passed=passed)
    return values
