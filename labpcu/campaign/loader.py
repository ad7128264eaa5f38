"""Campaign files (TOML) → :class:`~labpcu.campaign.plan.Campaign`, with every mistake
reported at once, each with its file and line.

::

    [campaign]
    name = "screen and program W7"
    store = "w7.h5"                 # relative to this file
    # bench = "bench.toml"          # default: the simulated bench
    # seed = 0

    [sample]                         # stored on every run of the campaign
    wafer = "W7"
    operator = "ana"

    [[step]]
    name = "screen"
    protocol = "iv_sweep"
    devices = ["Q1"]                 # device ids or whole sites
    params = { points = 41 }

    [[step]]
    name = "program"
    protocol = "ispp"
    devices = { from = "screen", where = "status == 'completed' and rectification_ratio > 1e3" }
    params = { targets = ["50u"] }
    on_fail = "continue"             # or "stop" (the default)
    # repeat = 2, grid = { v_read = [0.01, 0.02] }, together = true

    # screen first, then use only working devices, the first few of a list with spares:
    #   [[step]] name = "screen", protocol = "screen", devices = ["Q1", "Q2"]
    #   [[step]] protocol = "ispp", devices = ["Q1", "Q2"], working_only = true, count = 4
    # (for protocols that take units of three PCUs, count counts units, and a unit
    # with one defective PCU is left out whole)

This module checks the file's shape (tables, keys, types, names, the selection
expressions); :func:`labpcu.campaign.validate.validate` then checks every task
against its protocol and the bench, still before any instrument is opened.
"""

from __future__ import annotations

import difflib
import re
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from labpcu.campaign.plan import ON_FAIL, Campaign, Selection, Step
from labpcu.campaign.select import SelectionError, parse

CAMPAIGN_KEYS = ("name", "store", "bench", "seed")
STEP_KEYS = ("name", "protocol", "devices", "params", "grid", "repeat", "on_fail", "together", "working_only", "count")


class CampaignError(ValueError):
    """Everything wrong with a campaign, one ``file:line: message`` per mistake."""

    def __init__(self, problems: list[str]) -> None:
        self.problems = list(problems)
        super().__init__("\n".join(self.problems))


class _Lines:
    """Line numbers of a TOML text's tables and keys (tomllib gives none)."""

    def __init__(self, text: str) -> None:
        self.lines = text.splitlines()
        self.steps = [i + 1 for i, ln in enumerate(self.lines) if re.match(r"\s*\[\[\s*step\s*\]\]", ln)]
        self.tables = {m.group(1).strip(): i + 1 for i, ln in enumerate(self.lines)
                       if (m := re.match(r"\s*\[([^\[\]]+)\]\s*(#.*)?$", ln))}

    def step(self, index: int) -> int:
        return self.steps[index] if index < len(self.steps) else 0

    def _block_end(self, start: int) -> int:
        for i in range(start, len(self.lines)):
            if re.match(r"\s*\[", self.lines[i]):
                return i
        return len(self.lines)

    def key(self, start: int, key: str) -> int:
        """The line of ``key = ...`` in the table starting at line ``start``."""
        if start <= 0:
            return 0
        for i in range(start, self._block_end(start)):
            if re.match(rf"\s*[\"']?{re.escape(key)}[\"']?\s*=", self.lines[i]):
                return i + 1
        return start


def load_campaign(path: str | Path) -> Campaign:
    """Read and check a campaign file's shape; :class:`CampaignError` lists every
    mistake (:func:`labpcu.campaign.validate.check_campaign` checks the tasks too)."""
    return parse_campaign(load_text(path), str(path))


def load_text(path: str | Path) -> str:
    path = Path(path)
    try:
        return path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        reason = getattr(exc, "strerror", None) or exc
        raise CampaignError([f"{path}: cannot read the campaign file: {reason}"]) from None


def parse_campaign(text: str, source: str = "<campaign>") -> Campaign:
    """A campaign from TOML text; ``source`` names it in messages and anchors its
    relative paths."""
    campaign, problems = parse_partial(text, source)
    if problems:
        raise CampaignError(problems)
    return campaign


def parse_partial(text: str, source: str = "<campaign>") -> tuple[Campaign, list[str]]:
    """The campaign made of the steps that are well formed, and the problems of the
    others: validation can then check the good steps too and report every mistake
    at once. A file that is not TOML at all raises :class:`CampaignError`."""
    try:
        doc = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        m = re.search(r"\(at line (\d+)", str(exc))
        where = f"{source}:{m.group(1)}" if m else source
        raise CampaignError([f"{where}: not valid TOML: {str(exc).split(' (at line')[0]}"]) from None
    lines = _Lines(text)
    problems: list[str] = []

    def bad(line: int, message: str) -> None:
        problems.append(f"{source}:{line}: {message}" if line else f"{source}: {message}")

    for key in doc:
        if key not in ("campaign", "sample", "step"):
            bad(lines.tables.get(key, 0), f"unknown table or key {key!r}{_hint(key, ('campaign', 'sample', 'step'))}")
    head = doc.get("campaign")
    name, store, bench, seed = "", None, None, None
    hline = lines.tables.get("campaign", 0)
    if not isinstance(head, Mapping):
        bad(0, "no [campaign] table (it names the campaign)")
    else:
        for key in head:
            if key not in CAMPAIGN_KEYS:
                bad(lines.key(hline, key), f"[campaign]: unknown key {key!r}{_hint(key, CAMPAIGN_KEYS)}")
        name = head.get("name", "")
        if not isinstance(name, str) or not name.strip() or "/" in name:
            bad(lines.key(hline, "name"), "[campaign]: name must be a non-empty text without '/'")
            name = ""
        store = _opt_str(head, "store", lines.key(hline, "store"), bad)
        bench = _opt_str(head, "bench", lines.key(hline, "bench"), bad)
        seed = head.get("seed")
        if seed is not None and (not isinstance(seed, int) or isinstance(seed, bool) or seed < 0):
            bad(lines.key(hline, "seed"), f"[campaign]: seed must be a whole number >= 0, not {seed!r}")
            seed = None
    sample = doc.get("sample", {})
    if not isinstance(sample, Mapping):
        bad(lines.tables.get("sample", 0), "[sample] must be a table of key = value")
        sample = {}
    raw_steps = doc.get("step", [])
    if not isinstance(raw_steps, list) or not raw_steps:
        bad(0, "no [[step]] tables: a campaign needs at least one step")
        raw_steps = []
    steps: list[Step] = []
    seen: dict[str, int] = {}
    protocols: list[str] = []  # of the steps so far (a working_only step needs a screen before it)
    for index, raw in enumerate(raw_steps):
        step = _step(raw, index, lines, bad, seen, protocols)
        if step is not None:
            steps.append(step)
    return Campaign(name=name or "unnamed", steps=tuple(steps), store=store, bench=bench, seed=seed,
                    sample=dict(sample), source=source), problems


def _step(raw: Any, index: int, lines: _Lines, bad: Any, seen: dict[str, int],
          seen_protocols: list[str]) -> Step | None:
    start = lines.step(index)
    label = f"step {index + 1}"
    if not isinstance(raw, Mapping):
        bad(start, f"{label} must be a table")
        return None
    ok = True

    def fail(key: str, message: str) -> None:
        nonlocal ok
        ok = False
        bad(lines.key(start, key) if key else start, f"{label}: {message}")

    name = raw.get("name")
    if not isinstance(name, str) or not name.strip() or "/" in name:
        fail("name", "name must be a non-empty text without '/'")
        name = f"step{index + 1}"
    else:
        label = f"step {name!r}"
        if name in seen:
            fail("name", f"name {name!r} is used by an earlier step (line {seen[name]})")
    for key in raw:
        if key not in STEP_KEYS:
            fail(key, f"unknown key {key!r}{_hint(key, STEP_KEYS)}")
    protocol = raw.get("protocol")
    if not isinstance(protocol, str):
        fail("protocol", "protocol must name a protocol, e.g. \"iv_sweep\"")
        protocol = ""
    else:
        from labpcu.protocols import registry

        known = list(registry.protocols())
        if protocol not in known:
            fail("protocol", f"no protocol {protocol!r}{_hint(protocol, known)}; have {', '.join(known)}")
    devices: tuple[str, ...] | Selection = ()
    spec = raw.get("devices")
    if isinstance(spec, list) and spec and all(isinstance(d, str) and d.strip() for d in spec):
        devices = tuple(d.strip() for d in spec)
    elif isinstance(spec, Mapping):
        unknown = [k for k in spec if k not in ("from", "where")]
        src, where = spec.get("from"), spec.get("where", "status == 'completed'")
        if unknown:
            fail("devices", f"devices: unknown key {unknown[0]!r} (a selection has 'from' and 'where')")
        elif not isinstance(src, str) or src not in seen or src == name:
            fail("devices", f"devices: 'from' must name an earlier step, not {src!r}")
        elif not isinstance(where, str):
            fail("devices", "devices: 'where' must be an expression in quotes")
        else:
            try:
                parse(where)
                devices = Selection(src, where)
            except SelectionError as exc:
                fail("devices", f"devices: {exc}")
    else:
        fail("devices", "devices must be a list of device ids or sites, or { from = \"step\", where = \"...\" }")
    params = raw.get("params", {})
    if not isinstance(params, Mapping):
        fail("params", "params must be a table, e.g. { points = 41 }")
        params = {}
    grid = raw.get("grid", {})
    if not isinstance(grid, Mapping) or any(not isinstance(v, list) or not v for v in grid.values()):
        fail("grid", "grid must be a table of non-empty lists, e.g. { v_read = [0.01, 0.02] }")
        grid = {}
    for key in set(grid) & set(params):
        fail("grid", f"grid: {key!r} is also in params: give it in one place")
    repeat = raw.get("repeat", 1)
    if not isinstance(repeat, int) or isinstance(repeat, bool) or repeat < 1:
        fail("repeat", f"repeat must be a whole number >= 1, not {repeat!r}")
        repeat = 1
    on_fail = raw.get("on_fail", "stop")
    if on_fail not in ON_FAIL:
        fail("on_fail", f"on_fail must be \"stop\" or \"continue\", not {on_fail!r}")
        on_fail = "stop"
    together = raw.get("together")
    if together is not None and not isinstance(together, bool):
        fail("together", f"together must be true or false, not {together!r}")
        together = None
    working_only = raw.get("working_only", False)
    if not isinstance(working_only, bool):
        fail("working_only", f"working_only must be true or false, not {working_only!r}")
        working_only = False
    elif working_only and not any(p == "screen" for p in seen_protocols):
        fail("working_only", "working_only needs an earlier step with protocol \"screen\" (it classifies the devices)")
    count = raw.get("count")
    if count is not None and (not isinstance(count, int) or isinstance(count, bool) or count < 1):
        fail("count", f"count must be a whole number >= 1 (devices, or units of PCUs), not {count!r}")
        count = None
    seen.setdefault(name, start)
    seen_protocols.append(protocol)
    if not ok:
        return None
    return Step(name=name, protocol=protocol, devices=devices, params={k: _value(v) for k, v in params.items()},
                grid={k: [_value(x) for x in v] for k, v in grid.items()}, repeat=repeat, on_fail=on_fail,
                together=together, working_only=working_only, count=count, line=start,
                key_lines={k: lines.key(start, k) for k in raw})


def _value(value: Any) -> Any:
    """A TOML value as a protocol parameter: a list of texts ("50u") is one comma list,
    which the parameter parses with its units."""
    if isinstance(value, list) and value and all(isinstance(v, str) for v in value):
        return ",".join(value)
    if isinstance(value, list):
        return tuple(value)
    return value


def _opt_str(table: Mapping[str, Any], key: str, line: int, bad: Any) -> str | None:
    value = table.get(key)
    if value is None:
        return None
    if not isinstance(value, str) or not value.strip():
        bad(line, f"[campaign]: {key} must be a path in quotes")
        return None
    return value


def _hint(word: str, choices: Any) -> str:
    close = difflib.get_close_matches(word, list(choices), n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""
