"""Bench files: one TOML file describes a bench (which instrument plays which role,
how the matrix is wired, which probe pin reaches which pad, and the limits).

Loading validates everything before any instrument is contacted and reports *every*
mistake at once, each with the file and line it comes from, so an operator fixes a
file in one pass. The format is documented field by field in the README; the
simulated bench's file, :data:`DEFAULT_SIM_BENCH`, is the worked example.
"""

from __future__ import annotations

import math
import re
import tomllib
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Any

from labpcu.instruments.models import MODELS, ModelInfo

if TYPE_CHECKING:
    from labpcu.sim.physics import Physics

DEVICE_TYPES = ("diode", "m1", "m2")
MATRIX_SLOTS = range(1, 7)
MATRIX_ROWS = range(1, 7)
MATRIX_COLUMNS = range(1, 17)
ARRAY_PADS = ("WL", "BL", "CL1", "CL2")
QUAD_PINS = 16

Crosspoint = tuple[int, int, int]


def default_sim_bench_path() -> Path:
    """The bench file of the simulated bench, shipped with labpcu."""
    return Path(str(resources.files("labpcu") / "benches" / "sim.toml"))


# ------------------------------------------------------------------ the result
@dataclass(frozen=True)
class InstrumentSpec:
    name: str
    model: str
    address: str  # VISA resource string, or "sim"
    visa_library: str | None = None  # e.g. "@py"; None = pyvisa's default
    timeout: float = 5.0  # s
    max_voltage: float | None = None  # V, an extra cap below the model's range
    max_current: float | None = None  # A

    @property
    def simulated(self) -> bool:
        return self.address.lower() == "sim"

    @property
    def info(self) -> ModelInfo:
        return MODELS[self.model]


@dataclass(frozen=True)
class Limits:
    """Largest magnitudes a device type may see (V across it, A through it)."""

    voltage: float
    current: float


@dataclass(frozen=True)
class MatrixSpec:
    instrument: str
    slots: tuple[int, ...]  # slots holding 3730 cards
    rows: dict[int, str]  # matrix row -> "instrument.channel" (same on every card)
    columns: dict[tuple[int, int], int]  # (slot, column) -> probe pin
    forbidden: frozenset[Crosspoint] = frozenset()

    def column_of_pin(self, pin: int) -> tuple[int, int]:
        for key, p in self.columns.items():
            if p == pin:
                return key
        raise KeyError(f"probe pin {pin} is on no matrix column")

    def row_of(self, terminal: str) -> int:
        for row, t in self.rows.items():
            if t == terminal:
                return row
        raise KeyError(f"{terminal} is on no matrix row")


@dataclass(frozen=True)
class FixtureSpec:
    """Probe pins per pad at each kind of site."""

    array: dict[str, tuple[int, ...]]  # WL/BL: 3 pins (lines 1-3); CL1/CL2: 9 pins (R1C1..R3C3)
    quad: tuple[int, ...]  # 16 pins: WL, BL, CL1, CL2 of each of 4 single PCUs


@dataclass(frozen=True)
class ProberSpec:
    """How the probes reach a site (the ``[prober]`` table).

    ``kind`` is ``"manual"`` (an operator moves them and confirms), ``"fixed"`` (one
    mounted ``site``), or the name of a prober driver registered under the entry-point
    group ``labpcu.probers`` (``"sim"``: the simulated wafer's prober), built with
    ``options`` (the table's other keys) as keyword arguments. ``given`` is False when
    the file has no ``[prober]`` table and the kind is the default (``"sim"`` on a
    simulated bench, ``"manual"`` on a real one).
    """

    kind: str
    site: str | None = None  # "fixed" only
    options: dict[str, Any] = field(default_factory=dict)
    given: bool = True


@dataclass(frozen=True)
class Conditions:
    """What the devices sit in, stored with every run: the stage (chuck) temperature and
    the light on the wafer. ``None``: not stated (a real bench without a thermal chuck
    records it as unknown; a simulated one uses the physics defaults)."""

    temperature_K: float | None = None
    light_lux: float | None = None

    def to_dict(self) -> dict[str, float | None]:
        return {"temperature_K": self.temperature_K, "light_lux": self.light_lux}


@dataclass(frozen=True)
class BenchConfig:
    name: str
    wafer: str  # "sim" or a wafer-map file
    seed: int
    instruments: dict[str, InstrumentSpec]
    matrix: MatrixSpec
    fixture: FixtureSpec
    limits: dict[str, Limits]
    source: str = "<string>"
    text: str = field(default="", repr=False)
    prober: ProberSpec | None = None  # None: built without a file; the default kind applies
    conditions: Conditions = field(default_factory=lambda: Conditions())
    sim: dict[str, Any] = field(default_factory=dict)  # the [sim] table: Physics settings

    def physics(self, **override: Any) -> Physics:
        """The simulated wafer's physics: the ``[sim]`` table with the ``[conditions]``
        (a simulated stage sits at the stated temperature, under the stated light)."""
        from labpcu.sim.physics import Physics

        data = dict(self.sim)
        if self.conditions.temperature_K is not None:
            data["temperature_K"] = self.conditions.temperature_K
        if self.conditions.light_lux is not None:
            data["light_lux"] = self.conditions.light_lux
        data.update(override)
        return Physics.from_dict(data)

    @property
    def simulated(self) -> bool:
        return all(i.simulated for i in self.instruments.values())

    @property
    def prober_spec(self) -> ProberSpec:
        """The ``[prober]`` table, or the default: the simulated prober on a simulated
        bench, an operator (``manual``) on a real one."""
        if self.prober is not None:
            return self.prober
        return ProberSpec("sim" if self.simulated else "manual", given=False)


# ------------------------------------------------------------------ problems
@dataclass(frozen=True)
class Problem:
    line: int | None
    where: str
    message: str

    def format(self, source: str) -> str:
        at = f"{source}:{self.line}" if self.line else source
        return f"{at}: {self.where}: {self.message}" if self.where else f"{at}: {self.message}"


class BenchFileError(ValueError):
    """Everything wrong with a bench file, one line per problem."""

    def __init__(self, source: str, problems: list[Problem]) -> None:
        self.source = source
        self.problems = problems
        super().__init__("\n".join(p.format(source) for p in problems))


class _Locator:
    """Finds the line of a key path in TOML text (tomllib keeps no positions).

    Understands ``[table]``, ``[[array]]`` headers and ``key =`` lines; anything it
    cannot place is reported at its table's header, which is still the right place
    to look.
    """

    _HEADER = re.compile(r"^\s*(\[\[?)\s*([^\]]+?)\s*\]\]?\s*(#.*)?$")
    _KEY = re.compile(r'^\s*("(?:[^"\\]|\\.)*"|\'[^\']*\'|[A-Za-z0-9_\-]+)\s*=')

    def __init__(self, text: str) -> None:
        self.headers: dict[tuple[str, ...], int] = {}
        self.keys: dict[tuple[str, ...], int] = {}
        counts: dict[tuple[str, ...], int] = {}
        table: tuple[str, ...] = ()
        for n, line in enumerate(text.splitlines(), start=1):
            m = self._HEADER.match(line)
            if m:
                path = tuple(_unquote(p) for p in _split_dotted(m.group(2)))
                if m.group(1) == "[[":
                    k = counts.get(path, 0)
                    counts[path] = k + 1
                    path = path + (str(k),)
                table = path
                self.headers.setdefault(table, n)
                continue
            m = self._KEY.match(line)
            if m:
                self.keys.setdefault(table + (_unquote(m.group(1)),), n)

    def line(self, path: tuple[str, ...]) -> int | None:
        for k in range(len(path), 0, -1):
            p = path[:k]
            if p in self.keys:
                return self.keys[p]
            if p in self.headers:
                return self.headers[p]
        return None


def _split_dotted(text: str) -> list[str]:
    return [p.strip() for p in re.findall(r'"(?:[^"\\]|\\.)*"|\'[^\']*\'|[^.]+', text)]


def _unquote(s: str) -> str:
    s = s.strip()
    return s[1:-1] if len(s) >= 2 and s[0] == s[-1] and s[0] in "\"'" else s


# ------------------------------------------------------------------ loading
def load_bench(path: str | Path | None = None) -> BenchConfig:
    """Load and validate a bench file (default: the simulated bench)."""
    p = Path(path) if path is not None else default_sim_bench_path()
    try:
        text = p.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise BenchFileError(str(p), [Problem(None, "", "bench file not found")]) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise BenchFileError(str(p), [Problem(None, "", f"cannot read the bench file: {exc}")]) from None
    return parse_bench(text, str(p))


def parse_bench(text: str, source: str = "<string>") -> BenchConfig:
    """Parse and validate bench-file text; raise :class:`BenchFileError` listing every problem."""
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        m = re.search(r"\(at line (\d+), column \d+\)", str(exc))
        msg = re.sub(r"\s*\(at line \d+, column \d+\)", "", str(exc))
        raise BenchFileError(source, [Problem(int(m.group(1)) if m else None, "", f"malformed TOML: {msg}")]) from None
    v = _Validator(data, _Locator(text))
    cfg = v.run(source, text)
    if v.problems:
        raise BenchFileError(source, v.problems)
    assert cfg is not None
    return cfg


class _Validator:
    """Walks the parsed TOML, collecting problems instead of stopping at the first."""

    def __init__(self, data: dict[str, Any], loc: _Locator) -> None:
        self.data = data
        self.loc = loc
        self.problems: list[Problem] = []

    def bad(self, path: tuple[str, ...], message: str) -> None:
        self.problems.append(Problem(self.loc.line(path), ".".join(path), message))

    # -- typed getters: report and return None on a wrong type
    def get(self, table: dict, path: tuple[str, ...], kind: type | tuple[type, ...], required: bool = True, default: Any = None) -> Any:
        key = path[-1]
        if key not in table:
            if required:
                self.bad(path, "missing")
            return default
        value = table[key]
        kinds = kind if isinstance(kind, tuple) else (kind,)
        if isinstance(value, bool) and bool not in kinds or not isinstance(value, kinds):
            names = " or ".join(_type_name(k) for k in kinds)
            self.bad(path, f"must be {names}, not {_type_name(type(value))} {value!r}")
            return default
        return value

    def positive(self, table: dict, path: tuple[str, ...], required: bool = True, default: float | None = None) -> float | None:
        value = self.get(table, path, (int, float), required, default)
        if value is None or value is default:
            return value
        if not (math.isfinite(value) and value > 0):
            self.bad(path, f"must be a positive number, not {value!r}")
            return default
        return float(value)

    def unknown_keys(self, table: dict, path: tuple[str, ...], allowed: set[str]) -> None:
        for key in table:
            if key not in allowed:
                self.bad(path + (key,), f"unknown field; expected one of {', '.join(sorted(allowed))}")

    # -- sections
    def run(self, source: str, text: str) -> BenchConfig | None:
        self.unknown_keys(self.data, (), {"bench", "instruments", "matrix", "fixture", "limits", "prober",
                                          "conditions", "sim"})
        bench = self.get(self.data, ("bench",), dict, default={}) or {}
        self.unknown_keys(bench, ("bench",), {"name", "wafer", "seed"})
        name = self.get(bench, ("bench", "name"), str, default="bench")
        wafer = self.get(bench, ("bench", "wafer"), str, default="sim")
        seed = self.get(bench, ("bench", "seed"), int, required=False, default=0)
        if isinstance(seed, int) and seed < 0:
            self.bad(("bench", "seed"), f"must be >= 0, not {seed}")
        instruments = self.instruments()
        matrix = self.matrix(instruments)
        fixture = self.fixture(matrix)
        limits = self.limits(instruments, matrix)
        prober = self.prober(instruments)
        conditions = self.conditions()
        sim = self.sim_table(instruments, conditions)
        if self.problems:
            return None
        return BenchConfig(name, wafer, seed, instruments, matrix, fixture, limits, source, text, prober,
                           conditions, sim)

    def conditions(self) -> Conditions:
        """``[conditions]``: temperature_K (stage set point) and light_lux (lamp)."""
        table = self.get(self.data, ("conditions",), dict, required=False, default={}) or {}
        self.unknown_keys(table, ("conditions",), {"temperature_K", "light_lux"})
        t = self.get(table, ("conditions", "temperature_K"), (int, float), required=False, default=None)
        if t is not None and not 200.0 <= t <= 400.0:
            self.bad(("conditions", "temperature_K"), f"must be 200-400 K, not {t!r}")
            t = None
        lux = self.get(table, ("conditions", "light_lux"), (int, float), required=False, default=None)
        if lux is not None and not 0.0 <= lux <= 1e5:
            self.bad(("conditions", "light_lux"), f"must be 0-100000 lux, not {lux!r}")
            lux = None
        return Conditions(None if t is None else float(t), None if lux is None else float(lux))

    def sim_table(self, instruments: dict[str, InstrumentSpec], conditions: Conditions) -> dict[str, Any]:
        """``[sim]``: the simulated wafer's physics (mechanisms switched off, defect
        rate, stage temperature wander). A real bench ignores it (bench files start
        as copies of the simulated one)."""
        if "sim" not in self.data:
            return {}
        from labpcu.sim.physics import Physics, PhysicsError

        table = self.get(self.data, ("sim",), dict, required=False, default={}) or {}
        if instruments and not all(i.simulated for i in instruments.values()):
            return {}  # a real bench copied from the simulated one: the table has nothing to act on
        self.unknown_keys(table, ("sim",), {"off", "defect_rate", "temperature_wander_K"})
        off = self.get(table, ("sim", "off"), list, required=False, default=[])
        data: dict[str, Any] = {k: v for k, v in table.items() if k != "off"}
        data["off"] = off or []
        try:
            Physics.from_dict({**data, **{k: v for k, v in conditions.to_dict().items() if v is not None}})
        except (PhysicsError, TypeError, ValueError) as exc:
            self.bad(("sim",), str(exc))
            return {}
        return data

    def instruments(self) -> dict[str, InstrumentSpec]:
        table = self.get(self.data, ("instruments",), dict, default={}) or {}
        out: dict[str, InstrumentSpec] = {}
        if not table and "instruments" in self.data:
            self.bad(("instruments",), "no instrument is described")
        for name, spec in table.items():
            path = ("instruments", name)
            if not re.fullmatch(r"[A-Za-z][A-Za-z0-9_]*", name):
                self.bad(path, "instrument names are letters, digits and _ (starting with a letter)")
            if not isinstance(spec, dict):
                self.bad(path, "must be a table with model and address")
                continue
            self.unknown_keys(spec, path, {"model", "address", "visa_library", "timeout", "max_voltage", "max_current"})
            model = self.get(spec, path + ("model",), str)
            address = self.get(spec, path + ("address",), str)
            lib = self.get(spec, path + ("visa_library",), str, required=False)
            timeout = self.positive(spec, path + ("timeout",), required=False, default=5.0)
            vmax = self.positive(spec, path + ("max_voltage",), required=False)
            imax = self.positive(spec, path + ("max_current",), required=False)
            if model is not None and model.upper() not in MODELS:
                self.bad(path + ("model",), f"unknown model {model!r}; known: {', '.join(MODELS)}")
                continue
            if address is not None and not address.strip():
                self.bad(path + ("address",), 'empty; give a VISA resource string or "sim"')
            if model is None or address is None:
                continue
            info = MODELS[model.upper()]
            if vmax is not None and vmax > info.max_voltage:
                self.bad(path + ("max_voltage",), f"{vmax:g} V is above the {info.model}'s range ({info.max_voltage:g} V)")
            if imax is not None and imax > info.max_current:
                self.bad(path + ("max_current",), f"{imax:g} A is above the {info.model}'s range ({info.max_current:g} A)")
            out[name] = InstrumentSpec(name, info.model, address, lib, timeout or 5.0, vmax, imax)
        simulated = [n for n, spec in out.items() if spec.simulated]
        if simulated and len(simulated) < len(out):  # the simulated wafer cannot sit under real probes
            real = next(n for n, spec in out.items() if not spec.simulated)
            self.bad(("instruments", simulated[0], "address"),
                     f'a bench is all simulated (address "sim") or all real, but {simulated[0]} is "sim" '
                     f"and {real} is {out[real].address!r}")
        return out

    def prober(self, instruments: dict[str, InstrumentSpec]) -> ProberSpec:
        simulated = bool(instruments) and all(i.simulated for i in instruments.values())
        if "prober" not in self.data:
            return ProberSpec("sim" if simulated else "manual", given=False)
        table = self.get(self.data, ("prober",), dict, default=None)
        if table is None:
            return ProberSpec("manual")
        kind = self.get(table, ("prober", "kind"), str)
        if kind is None:
            return ProberSpec("manual")
        if kind == "manual":
            self.unknown_keys(table, ("prober",), {"kind"})
            return ProberSpec("manual")
        if kind == "fixed":
            self.unknown_keys(table, ("prober",), {"kind", "site"})
            site = self.get(table, ("prober", "site"), str)
            sites = wafer_sites()
            if site is not None and site not in sites:
                self.bad(("prober", "site"), f"no site {site!r} on the wafer; sites are {', '.join(sites)}")
                site = None
            return ProberSpec("fixed", site=site)
        from labpcu.probers import ProberDriverError, check_driver  # the drivers' registry

        options = {k: v for k, v in table.items() if k != "kind"}
        try:
            unknown = check_driver(kind, options, simulated=simulated)
        except ProberDriverError as exc:
            self.bad(("prober", "kind"), str(exc))
        else:
            for key, message in unknown.items():
                self.bad(("prober", key), message)
        return ProberSpec(kind, options=options)

    def _terminal(self, value: Any, path: tuple[str, ...], instruments: dict[str, InstrumentSpec]) -> str | None:
        if not isinstance(value, str) or "." not in value:
            self.bad(path, f'must be "instrument.channel", e.g. "k2612a.smua", not {value!r}')
            return None
        inst, _, ch = value.partition(".")
        spec = instruments.get(inst)
        if spec is None:
            if inst not in self.data.get("instruments", {}):
                self.bad(path, f"no instrument {inst!r} in [instruments]")
            return None
        if ch not in spec.info.channels:
            self.bad(path, f"{spec.model} has no source channel {ch!r}; channels: {', '.join(spec.info.channels) or 'none'}")
            return None
        return value

    def matrix(self, instruments: dict[str, InstrumentSpec]) -> MatrixSpec:
        table = self.get(self.data, ("matrix",), dict, default={}) or {}
        self.unknown_keys(table, ("matrix",), {"instrument", "slots", "rows", "columns", "forbidden"})
        inst = self.get(table, ("matrix", "instrument"), str)
        if inst is not None and inst in instruments and instruments[inst].info.role != "switch":
            self.bad(("matrix", "instrument"), f"{inst} is a {instruments[inst].model}, not a switch matrix")
        elif inst is not None and inst not in instruments and inst not in self.data.get("instruments", {}):
            self.bad(("matrix", "instrument"), f"no instrument {inst!r} in [instruments]")
        slots = self.get(table, ("matrix", "slots"), list, default=[]) or []
        good_slots: list[int] = []
        for k, s in enumerate(slots):
            if isinstance(s, bool) or not isinstance(s, int) or s not in MATRIX_SLOTS:
                self.bad(("matrix", "slots"), f"item {k + 1}: slot must be a whole number 1..6, not {s!r}")
            elif s in good_slots:
                self.bad(("matrix", "slots"), f"slot {s} listed twice")
            else:
                good_slots.append(s)
        rows: dict[int, str] = {}
        seen_terminals: dict[str, int] = {}
        row_key: dict[int, str] = {}
        for key, value in (self.get(table, ("matrix", "rows"), dict, default={}) or {}).items():
            path = ("matrix", "rows", key)
            if not re.fullmatch(r"[0-9]+", key) or int(key) not in MATRIX_ROWS:
                self.bad(path, "matrix rows are 1..6")
                continue
            if int(key) in row_key:  # "1" and "01" are one row: the second would silently replace the first
                self.bad(path, f"row {int(key)} is already given as {row_key[int(key)]!r}")
                continue
            row_key[int(key)] = key
            term = self._terminal(value, path, instruments)
            if term is None:
                continue
            if term in seen_terminals:
                self.bad(path, f"{term} is already on row {seen_terminals[term]}")
                continue
            seen_terminals[term] = int(key)
            rows[int(key)] = term
        columns = self.columns(table.get("columns"), good_slots)
        forbidden: set[Crosspoint] = set()
        for k, item in enumerate(self.get(table, ("matrix", "forbidden"), list, required=False, default=[]) or []):
            cp = _crosspoint(item)
            if cp is None or cp[0] not in good_slots:
                self.bad(("matrix", "forbidden"), f"item {k + 1}: {item!r} is not a crosspoint SRCC on a listed card")
            else:
                forbidden.add(cp)
        return MatrixSpec(inst or "", tuple(good_slots), rows, columns, frozenset(forbidden))

    def columns(self, blocks: Any, slots: list[int]) -> dict[tuple[int, int], int]:
        out: dict[tuple[int, int], int] = {}
        pin_at: dict[int, tuple[int, int]] = {}
        if blocks is None:
            self.bad(("matrix", "columns"), "missing: add [[matrix.columns]] blocks (slot, columns, pins)")
            return out
        if not isinstance(blocks, list):
            self.bad(("matrix", "columns"), "must be an array of tables: [[matrix.columns]]")
            return out
        for k, block in enumerate(blocks):
            path = ("matrix", "columns", str(k))
            if not isinstance(block, dict):
                self.bad(path, "must be a table with slot, columns and pins")
                continue
            self.unknown_keys(block, path, {"slot", "columns", "pins"})
            slot = self.get(block, path + ("slot",), int)
            cols = _int_list(block.get("columns"), MATRIX_COLUMNS)
            pins = _int_list(block.get("pins"), range(1, 1000))
            if slot is not None and slot not in slots:
                self.bad(path + ("slot",), f"slot {slot} is not in matrix.slots {slots}")
                continue
            if cols is None:
                self.bad(path + ("columns",), 'must be columns 1..16 as a list or a range "a-b"')
                continue
            if pins is None:
                self.bad(path + ("pins",), 'must be positive pin numbers as a list or a range "a-b"')
                continue
            if len(cols) != len(pins):
                self.bad(path + ("pins",), f"{len(pins)} pins for {len(cols)} columns")
                continue
            if slot is None:
                continue
            for c, p in zip(cols, pins):
                if (slot, c) in out:
                    self.bad(path + ("columns",), f"column {c} of slot {slot} is wired twice (pins {out[(slot, c)]} and {p})")
                elif p in pin_at:
                    s2, c2 = pin_at[p]
                    self.bad(path + ("pins",), f"pin {p} is on two columns (slot {s2} column {c2} and slot {slot} column {c})")
                else:
                    out[(slot, c)] = p
                    pin_at[p] = (slot, c)
        return out

    def fixture(self, matrix: MatrixSpec) -> FixtureSpec:
        table = self.get(self.data, ("fixture",), dict, default={}) or {}
        self.unknown_keys(table, ("fixture",), {"array", "quad"})
        wired = set(matrix.columns.values())
        array: dict[str, tuple[int, ...]] = {}
        arr = self.get(table, ("fixture", "array"), dict, default={}) or {}
        self.unknown_keys(arr, ("fixture", "array"), set(ARRAY_PADS))
        used: dict[int, str] = {}
        for pad, count in (("WL", 3), ("BL", 3), ("CL1", 9), ("CL2", 9)):
            path = ("fixture", "array", pad)
            if pad not in arr:
                self.bad(path, "missing")
                continue
            pins = _int_list(arr[pad], range(1, 1000))
            if pins is None or len(pins) != count:
                self.bad(path, f"must be {count} pin numbers (list or range)")
                continue
            array[pad] = self._pins(pins, path, wired, used, pad)
        quad_raw = self.get(table, ("fixture", "quad"), dict, default={}) or {}
        self.unknown_keys(quad_raw, ("fixture", "quad"), {"pins"})
        qpins = _int_list(quad_raw.get("pins"), range(1, 1000))
        quad: tuple[int, ...] = ()
        if qpins is None or len(qpins) != QUAD_PINS:
            self.bad(("fixture", "quad", "pins"), f"must be {QUAD_PINS} pin numbers: WL, BL, CL1, CL2 of each of 4 PCUs")
        else:
            quad = self._pins(qpins, ("fixture", "quad", "pins"), wired, {}, "quad")
        return FixtureSpec(array, quad)

    def _pins(self, pins: list[int], path: tuple[str, ...], wired: set[int], used: dict[int, str], what: str) -> tuple[int, ...]:
        for p in pins:
            if wired and p not in wired:
                self.bad(path, f"pin {p} reaches no matrix column")
            if p in used:
                self.bad(path, f"pin {p} is already used for {used[p]}")
            used[p] = what
        return tuple(pins)

    def limits(self, instruments: dict[str, InstrumentSpec], matrix: MatrixSpec) -> dict[str, Limits]:
        table = self.get(self.data, ("limits",), dict, default={}) or {}
        self.unknown_keys(table, ("limits",), set(DEVICE_TYPES))
        sources = [instruments[t.partition(".")[0]] for t in matrix.rows.values() if t.partition(".")[0] in instruments]
        vcap = max((s.max_voltage or s.info.max_voltage for s in sources), default=math.inf)
        icap = max((s.max_current or s.info.max_current for s in sources), default=math.inf)
        out: dict[str, Limits] = {}
        for dtype in DEVICE_TYPES:
            path = ("limits", dtype)
            lim = self.get(table, path, dict, default=None)
            if lim is None:
                continue
            self.unknown_keys(lim, path, {"voltage", "current"})
            v = self.positive(lim, path + ("voltage",))
            i = self.positive(lim, path + ("current",))
            if v is not None and v > vcap:
                self.bad(path + ("voltage",), f"{v:g} V is above every wired SMU's range (largest {vcap:g} V)")
            if i is not None and i > icap:
                self.bad(path + ("current",), f"{i:g} A is above every wired SMU's range (largest {icap:g} A)")
            if v is not None and i is not None:
                out[dtype] = Limits(v, i)
        return out


def wafer_sites() -> tuple[str, ...]:
    """The probe sites of the standard wafer layout: A1..A9 (arrays), Q1..Q5 (quads)."""
    from labpcu.sim.wafer import N_ARRAYS, N_SINGLES, SINGLES_PER_QUAD

    quads = -(-N_SINGLES // SINGLES_PER_QUAD)
    return tuple(f"A{k}" for k in range(1, N_ARRAYS + 1)) + tuple(f"Q{k}" for k in range(1, quads + 1))


def _type_name(t: type) -> str:
    return {str: "text", int: "a whole number", float: "a number", dict: "a table", list: "a list", bool: "true/false"}.get(t, t.__name__)


def _int_list(value: Any, allowed: range) -> list[int] | None:
    """A list of ints, or a range written "a-b" (inclusive); None if malformed."""
    if isinstance(value, str):
        m = re.fullmatch(r"\s*(\d+)\s*-\s*(\d+)\s*", value)
        if not m or int(m.group(1)) > int(m.group(2)):
            return None
        items = list(range(int(m.group(1)), int(m.group(2)) + 1))
    elif isinstance(value, list) and value and all(isinstance(x, int) and not isinstance(x, bool) for x in value):
        items = list(value)
    else:
        return None
    if any(x not in allowed for x in items) or len(set(items)) != len(items):
        return None
    return items


def _crosspoint(item: Any) -> Crosspoint | None:
    text = str(item) if isinstance(item, (str, int)) and not isinstance(item, bool) else ""
    if not re.fullmatch(r"\d{4}", text):
        return None
    slot, row, col = int(text[0]), int(text[1]), int(text[2:])
    if slot in MATRIX_SLOTS and row in MATRIX_ROWS and col in MATRIX_COLUMNS:
        return (slot, row, col)
    return None
