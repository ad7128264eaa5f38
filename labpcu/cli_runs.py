"""``labpcu run``, ``labpcu list`` and ``labpcu show``: protocols, devices and runs
from the command line. Each command is a few calls into the Python API; the flags of
``labpcu run PROTOCOL`` are generated from the protocol's parameter dataclass.

A request is validated against an offline view of the bench (:meth:`Bench.offline`)
before any instrument is opened, so bad input sends nothing.
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from labpcu.paths import check_store_path
from labpcu.protocols.params import ParameterError, ParamSpec, show_value

#: the run store used when --out/--file is not given (or $LABPCU_FILE)
DEFAULT_FILE = "labpcu.h5"
EXIT_OK, EXIT_FAILED, EXIT_BAD_INPUT = 0, 1, 2


class UsageError(Exception):
    """Bad input from the user: reported as one line, exit code 2."""


def default_file() -> str:
    return os.environ.get("LABPCU_FILE", DEFAULT_FILE)


# ---------------------------------------------------------------------- parsers
def add_parsers(sub: Any, seed_type: Any, *, protocols: bool = True) -> None:
    """Add ``run``, ``list`` and ``show`` to the top-level subparsers. ``protocols``:
    give ``run`` a subcommand per protocol, which imports every protocol module (and
    with them pandas and scipy), so other commands skip it to start fast."""
    from labpcu.protocols import registry

    run = sub.add_parser("run", help="run a protocol on one or more devices",
                         description="Run a protocol; `labpcu run PROTOCOL --help` lists its parameters "
                                     "with units, limits and defaults.")
    psub = run.add_subparsers(dest="protocol", metavar="PROTOCOL")
    for name, cls in (registry.protocols() if protocols else {}).items():
        p = psub.add_parser(name, help=cls.title, description=cls.title)
        p.add_argument("--device", action="append", required=True, metavar="ID",
                       help="device id (e.g. S01, A1-R2C3), a site (all its devices), or a comma list; repeatable")
        p.add_argument("--bench", default=None, help="bench file (default: the simulated bench)")
        p.add_argument("--out", default=None, help=f"run store (HDF5) to write (default {DEFAULT_FILE} or $LABPCU_FILE)")
        p.add_argument("--seed", type=seed_type, default=None, help="simulated wafer seed (default: the bench file's)")
        p.add_argument("--fresh-wafer", action="store_true",
                       help="start the simulated wafer afresh instead of continuing the one the store's runs left")
        p.add_argument("--sample", default=None, help="the sample or wafer measured (stored on the run)")
        p.add_argument("--operator", default=None, help="who measured (stored on the run)")
        p.add_argument("--note", default=None, help="a note stored on the run")
        group = p.add_argument_group("parameters")
        for spec in cls.Params.specs():
            _add_param_flag(group, spec)

    lst = sub.add_parser("list", help="list protocols, devices or runs",
                         description="List protocols, devices or runs: a table on a terminal, plain aligned "
                                     "columns (nothing cut) in a pipe, or --json / --csv for programs.")
    lst.add_argument("what", choices=("protocols", "devices", "runs"), help="what to list")
    fmt = lst.add_mutually_exclusive_group()
    fmt.add_argument("--json", action="store_true", help="a JSON array of objects on stdout")
    fmt.add_argument("--csv", action="store_true", help="CSV with a header row on stdout")
    lst.add_argument("--file", default=None, help=f"run store for `list runs` (default {DEFAULT_FILE})")
    lst.add_argument("--bench", default=None, help="bench file for `list devices` (default: the simulated bench)")
    lst.add_argument("--protocol", default=None, help="runs of this protocol only")
    lst.add_argument("--status", default=None, help="runs with this status only")
    lst.add_argument("--device", default=None, help="runs that measured this device only")
    lst.add_argument("--sample", default=None, help="runs of this sample or wafer only")
    lst.add_argument("--operator", default=None, help="runs by this operator only")

    show = sub.add_parser("show", help="a run's summary and results; --plot renders its standard plot")
    show.add_argument("run", help="run id, or its number (e.g. 3 for 00003-iv_sweep)")
    show.add_argument("--file", default=None, help=f"run store (default {DEFAULT_FILE})")
    show.add_argument("--plot", default=None, metavar="PNG", help="write the run's standard plot to this image file")
    show.add_argument("--csv", default=None, metavar="CSV", help="write the run's data to this CSV file")
    show.add_argument("--json", action="store_true",
                      help="the run's metadata, parameters, results and columns (units) as JSON on stdout "
                           "(arrays as lists, NaN and infinities as null)")


def _add_param_flag(group: Any, spec: ParamSpec) -> None:
    flag = "--" + spec.name.replace("_", "-")
    text = spec.describe().replace("%", "%%")
    if spec.kind is bool and not spec.is_list:
        group.add_argument(flag, dest=spec.name, action=argparse.BooleanOptionalAction, default=None, help=text)
    else:
        metavar = spec.unit or {int: "N", float: "X", str: "TEXT"}.get(spec.kind, "VALUE")
        if spec.is_list:
            metavar = f"{metavar},..."
        group.add_argument(flag, dest=spec.name, default=None, metavar=metavar, help=text)


# --------------------------------------------------------------------- commands
def cmd_run(args: argparse.Namespace) -> int:
    from labpcu.bench import SafeStateError
    from labpcu.data.store import Store, StoreError
    from labpcu.instruments.errors import LimitError
    from labpcu.probers import check_reachable
    from labpcu.progress import ProgressBar
    from labpcu.protocols import registry
    from labpcu.runner import Runner, prepare
    from labpcu.sim_state import check_wafer, restore_wafer, wafer_documents

    # everything that can be wrong with the request is found before a bench opens:
    # the store first (a run that cannot be stored must not program a device), then
    # the bench file, the devices and every level against the bench's limits
    out = Path(args.out or default_file())
    _check_path(lambda: check_store_path(out, create=True))
    cls = registry.get(args.protocol)
    values = {s.name: getattr(args, s.name) for s in cls.Params.specs() if getattr(args, s.name) is not None}
    offline = offline_bench(args.bench, args.seed)
    devices = expand_devices(args.device, offline)
    proto, params, devs = prepare(cls, values, devices, offline)  # nothing sent yet
    try:  # a fixed-site bench reaches only the devices under its probes
        check_reachable(offline.config, offline.layout, devs)
    except LimitError as exc:
        raise UsageError(str(exc)) from None
    try:
        Store(out).run_ids()  # not a labpcu store, or a newer schema: one line, still before any I/O
    except StoreError as exc:
        raise UsageError(str(exc)) from None
    check_wafer(Store(out), offline_seed(offline), fresh=args.fresh_wafer)  # another wafer's store: refused now
    bench = open_bench(args.bench, args.seed)
    try:
        store = Store(out)
        restore_wafer(bench, store, fresh=args.fresh_wafer)  # continue on the wafer the store's runs left
        runner = Runner(bench, store)
        runner.documents_at_finish = lambda: wafer_documents(bench)  # stored with the run's end
        if not getattr(args, "quiet", False):
            runner.subscribe(ProgressBar())
        outcome = runner.run(proto, params, devs, metadata=run_metadata(args))
    except BaseException as exc:
        try:
            bench.close()
        except Exception as close_exc:  # noqa: BLE001 - the first error is the one to report
            exc.add_note(f"and closing the bench failed: {close_exc}")
        raise
    unsafe = None
    try:
        bench.close()
    except SafeStateError as exc:  # reported after the run's outcome, which is stored
        unsafe = exc
    print(f"{outcome.run_id} {outcome.status}: {outcome.n_points} points in {out}"
          + (f"\n  reason: {outcome.error}" if outcome.error else ""))
    for device, reason in outcome.failed_devices.items():
        print(f"  device {device} failed: {reason}")
    for line in list(format_results(outcome.results))[:20]:
        print(f"  {line}")
    if unsafe is not None:  # the operator must know before touching the probes
        raise SafeStateError(f"the bench could not be put in its safe state: {unsafe}") from unsafe
    verdict = proto.passed(outcome.results) if outcome.ok else None
    if verdict is False:
        print(f"  {proto.name}: the measurement missed its pass criterion (see the results above)")
    return EXIT_OK if outcome.ok and verdict is not False else EXIT_FAILED


def run_metadata(args: argparse.Namespace) -> dict[str, Any]:
    """``--sample``, ``--operator``, ``--note`` as a run's metadata (as a campaign's
    ``[sample]`` table stores them)."""
    sample = {k: v for k, v in (("name", getattr(args, "sample", None)), ("operator", getattr(args, "operator", None)),
                                ("notes", getattr(args, "note", None))) if v}
    return {"sample": sample} if sample else {}


def offline_seed(offline: Any) -> int | None:
    """The simulated wafer's seed an offline bench stands for (None: a real bench)."""
    return offline.layout.seed if offline.config.simulated else None


def offline_bench(path: str | None, seed: int | None) -> Any:
    """The bench file's offline view (nothing opened); a bad file (its ``[prober]``
    table included) is bad input."""
    from labpcu.bench import Bench
    from labpcu.benchfile import BenchFileError

    try:
        return Bench.offline(path, seed=seed)
    except (BenchFileError, OSError) as exc:
        raise UsageError(_one_line(exc)) from None


def open_bench(path: str | None, seed: int | None, operator: Any = None) -> Any:
    """Open the bench's instruments. A failure of the VISA layer (bad or unreachable
    address, refused connection, missing VISA backend) becomes one
    :class:`InstrumentOpenError`; anything else (a bug) keeps its traceback.

    A manual prober asks ``operator`` (default: on the terminal, stderr and stdin,
    :func:`labpcu.probers.console_operator`) to move the probes."""
    from labpcu.bench import Bench
    from labpcu.instruments.errors import InstrumentOpenError
    from labpcu.probers import console_operator

    try:
        return Bench.from_file(path, seed=seed, operator=operator or console_operator)
    except Exception as exc:
        if not (isinstance(exc, OSError) or _from_visa(exc)):
            raise
        raise InstrumentOpenError(f"cannot open the bench's instruments ({path or 'the simulated bench'}): "
                                  f"{_one_line(exc)}") from exc


def _from_visa(exc: BaseException) -> bool:
    """Did ``exc`` start in the VISA layer (pyvisa, pyvisa-py, pymeasure's adapters)?
    They raise ValueError, plain Exception or their own classes for an address they
    cannot use, so the origin, not the class, says it is an instrument problem."""
    if type(exc).__module__.split(".")[0] in ("pyvisa", "pyvisa_py"):
        return True
    tb = exc.__traceback__
    last = None
    while tb is not None:
        last = tb.tb_frame.f_code.co_filename
        tb = tb.tb_next
    return last is not None and any(part in last.replace("\\", "/") for part in
                                    ("/pyvisa/", "/pyvisa_py/", "/pymeasure/adapters/"))


def _check_plot_format(path: str) -> None:
    """The plot's suffix must be an image format matplotlib writes (else it raises
    ValueError deep in savefig, after the data were read)."""
    from matplotlib.backend_bases import FigureCanvasBase

    suffix = Path(path).suffix.lower().lstrip(".")
    formats = FigureCanvasBase.get_supported_filetypes()
    if suffix and suffix not in formats:
        raise UsageError(f"cannot write the plot {path}: {suffix!r} is not an image format; use "
                         f"{', '.join(sorted(formats))}")


def _check_path(check: Any) -> Any:
    from labpcu.paths import PathError

    try:
        return check()
    except PathError as exc:
        raise UsageError(str(exc)) from None


def expand_devices(items: list[str], bench: Any) -> list[str]:
    """``--device`` values: ids, sites (all their devices), comma lists."""
    out: list[str] = []
    for item in items:
        for token in (t.strip() for t in item.split(",")):
            if not token:
                continue
            if token in bench.layout.sites and token not in bench.layout.devices:
                out.extend(bench.layout.sites[token].devices)
            elif token in bench.layout.devices:
                out.append(token)
            else:
                raise UsageError(f"no device or site {show_value(token)} on the wafer "
                                 "(devices like S01, A1-R2C3; sites A1..A9, Q1..Q5)")
    seen: set[str] = set()
    for device in out:  # name the device, not the whole list (a site list runs to hundreds)
        if device in seen:
            raise UsageError(f"device {device} is given twice in --device ({len(out)} devices in all)")
        seen.add(device)
    return out


def cmd_list(args: argparse.Namespace) -> int:
    fmt = "json" if getattr(args, "json", False) else "csv" if getattr(args, "csv", False) else None
    if args.what == "protocols":
        from labpcu.protocols import registry

        header = ["protocol", "what it measures", "parameters"]
        records = [{"protocol": name, "title": cls.title,
                    "parameters": [{"name": s.name, "unit": s.unit, "default": s.default, "help": s.help}
                                   for s in cls.Params.specs()]}
                   for name, cls in registry.protocols().items()]
        rows = [[r["protocol"], r["title"], ", ".join(p["name"] for p in r["parameters"])] for r in records]
        csv_rows = [{"protocol": r["protocol"], "title": r["title"], "parameters": " ".join(
            p["name"] for p in r["parameters"])} for r in records]
        return _emit(fmt, header, rows, records, csv_rows)
    if args.what == "devices":
        header = ["device", "site", "where", "x (mm)", "y (mm)"]
        layout = offline_bench(args.bench, None).layout
        records = [{"device": did, "site": dev.site, "array": dev.array or None, "row": dev.row if dev.array else None,
                    "col": dev.col if dev.array else None, "x_mm": dev.x_mm, "y_mm": dev.y_mm}
                   for did, dev in layout.devices.items()]
        rows = [[r["device"], r["site"], f"array {r['array']} row {r['row']} col {r['col']}" if r["array"] else "single",
                 f"{r['x_mm']:.1f}", f"{r['y_mm']:.1f}"] for r in records]
        return _emit(fmt, header, rows, records, records, right=(3, 4))
    store = _store(args.file)
    filters = {k: getattr(args, k) for k in ("protocol", "status", "device", "sample", "operator")}
    if filters["status"] is not None:
        from labpcu.data.store import STATUSES

        _check_known("status", filters["status"], STATUSES)
    df = store.runs(**filters)
    if df.empty and any(v is not None for v in filters.values()):
        _check_filters(store, filters, args.bench)  # a value no run could match is a mistake, not "no runs"
    records = [_run_record(run_id, row) for run_id, row in df.iterrows()]
    header = ["run", "protocol", "status", "started", "points", "devices", "error"]
    rows = [[r["run_id"], r["protocol"], r["status"], row["started"].strftime("%Y-%m-%d %H:%M:%S"), str(r["n_points"]),
             ", ".join(r["devices"]), r["error"]] for r, (_, row) in zip(records, df.iterrows())]
    csv_rows = [{**{k: r[k] for k in ("run_id", "protocol", "status", "started", "finished", "duration_s", "n_points")},
                 "devices": " ".join(r["devices"]), "sample": r["sample"], "operator": r["operator"], "error": r["error"]}
                for r in records]
    return _emit(fmt, header, rows, records, csv_rows, right=(4,), cut={5: 40, 6: 60}, whole=(0, 1, 2, 3))


def _run_record(run_id: str, row: Any) -> dict[str, Any]:
    """A row of ``Store.runs()`` as plain values: ISO times, devices as a list."""
    metadata = row["metadata"] if isinstance(row["metadata"], dict) else {}
    sample = metadata.get("sample") if isinstance(metadata.get("sample"), dict) else {}
    finished = row["finished"]
    return {"run_id": str(run_id), "protocol": row["protocol"], "status": row["status"],
            "started": row["started"].isoformat(), "finished": None if finished is None or finished != finished
            else finished.isoformat(), "duration_s": row["duration"], "n_points": int(row["n_points"]),
            "devices": [d for d in row["devices"].split(", ") if d], "error": row["error"],
            "sample": sample.get("name"), "operator": sample.get("operator"), "metadata": metadata}


def _check_known(what: str, value: str, known: Any, plural: str | None = None, where: str = "", hint: str = "") -> None:
    """``value`` must be one of ``known`` (a set is sorted, a sequence keeps its order):
    else one line naming them, and the closest."""
    import difflib

    known = sorted(map(str, known)) if isinstance(known, (set, frozenset)) else list(dict.fromkeys(map(str, known)))
    if value in known:
        return
    close = difflib.get_close_matches(value, known, n=1)
    close_hint = f" (did you mean {close[0]!r}?)" if close else ""
    shown = ", ".join(known[:25]) + (f", … ({len(known)} in all)" if len(known) > 25 else "")
    plural = plural or (what + "es" if what.endswith("s") else what + "s")
    listing = f"{plural}{where}: {shown}" if known else f"no run{where} has a {what}"
    raise UsageError(f"unknown {what} {show_value(value)}{close_hint}{hint}; {listing}")


def _check_filters(store: Any, filters: dict[str, Any], bench: str | None) -> None:
    """Which filter of an empty `list runs` names nothing that exists: an unknown
    protocol, a device on no wafer and in no run, a sample or operator no run has."""
    everything = store.runs()
    where = f" in {store.path}"
    if filters["protocol"] is not None:
        from labpcu.protocols import registry

        _check_known("protocol", filters["protocol"], set(registry.names()) | set(everything["protocol"]))
    if filters["device"] is not None:
        measured = {d for ds in everything["devices"] for d in ds.split(", ") if d}
        try:
            on_wafer = set(offline_bench(bench, None).layout.devices)
        except UsageError:  # a bad bench file: the runs' devices are still known
            on_wafer = set()
        if filters["device"] not in measured | on_wafer:
            _check_known("device", filters["device"], measured, where=where,
                         hint=" (not on the wafer: devices like S01, A1-R2C3)")
    samples, operators, any_sample = set(), set(), set()
    for metadata in everything["metadata"]:
        sample = metadata.get("sample") if isinstance(metadata, dict) else None
        if isinstance(sample, dict):
            any_sample |= {str(v) for v in sample.values()}
            samples |= {str(v) for k, v in sample.items() if k not in ("operator", "notes")}
            if sample.get("operator") is not None:
                operators.add(str(sample["operator"]))
    if filters["sample"] is not None and filters["sample"] not in any_sample:
        _check_known("sample", filters["sample"], samples, where=where)
    if filters["operator"] is not None:
        _check_known("operator", filters["operator"], operators, where=where)


def _emit(fmt: str | None, header: list[str], rows: list[list[str]], records: list[dict[str, Any]],
          csv_rows: list[dict[str, Any]], right: tuple[int, ...] = (), cut: Mapping[int, int] | None = None,
          whole: tuple[int, ...] = (0,)) -> int:
    """A listing as JSON, CSV, a rich table (terminal, notebook) or plain columns."""
    if fmt == "json":
        print_json(records)
    elif fmt == "csv":
        import csv
        import sys

        fields = list(csv_rows[0]) if csv_rows else header
        writer = csv.DictWriter(sys.stdout, fieldnames=fields, lineterminator="\n")
        writer.writeheader()
        writer.writerows({k: "" if v is None or v != v else v for k, v in r.items()} for r in csv_rows)
    else:
        print_table(header, rows, right=right, cut=cut, whole=whole)
    return EXIT_OK


def print_table(header: list[str], rows: list[list[str]], *, right: tuple[int, ...] = (),
                cut: Mapping[int, int] | None = None, whole: tuple[int, ...] = (0,)) -> None:
    """On a terminal (or in a notebook): a rich table, long cells cut to ``cut[column]``
    characters. Otherwise (a pipe, a file): plain columns two spaces apart, a header
    line, no box drawing, nothing cut, lines as long as they need."""
    from rich.console import Console

    console = Console()
    if console.is_terminal or console.is_jupyter:
        from rich.table import Table

        table = Table(*header)
        for k in right:
            table.columns[k].justify = "right"
        for k in whole:  # ids and times are not folded (other columns wrap)
            table.columns[k].no_wrap = True
        for row in rows:
            table.add_row(*(_short(c, (cut or {}).get(k, len(c))) for k, c in enumerate(row)))
        console.print(table)
        return
    widths = [max(len(r[k]) for r in [header, *rows]) for k in range(len(header))]
    for row in [header, *rows]:
        cells = [c.rjust(w) if k in right and row is not header else c.ljust(w) for k, (c, w) in enumerate(zip(row, widths))]
        print("  ".join(cells).rstrip())


def print_json(value: Any) -> None:
    """``value`` as JSON on stdout: numpy arrays and scalars as plain lists and
    numbers, NaN and infinities as null (strict JSON any reader takes)."""
    import json

    print(json.dumps(plain_json(value), indent=2, allow_nan=False, ensure_ascii=False))


def plain_json(value: Any) -> Any:
    """``value`` with only JSON types: dicts, lists, str, int, finite float, bool, None."""
    if isinstance(value, Mapping):
        return {str(k): plain_json(v) for k, v in value.items()}
    if isinstance(value, np.ndarray):
        return plain_json(value.tolist())
    if isinstance(value, (list, tuple, set, frozenset)):
        return [plain_json(v) for v in value]
    if isinstance(value, np.generic):
        return plain_json(value.item())
    if isinstance(value, bool) or value is None or isinstance(value, (int, str)):
        return value
    if isinstance(value, float):
        return value if np.isfinite(value) else None
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    if isinstance(value, complex):
        return {"real": plain_json(value.real), "imag": plain_json(value.imag)}
    if hasattr(value, "isoformat"):
        return value.isoformat()
    return str(value)


def cmd_show(args: argparse.Namespace) -> int:
    from labpcu.protocols import registry

    store = _store(args.file)
    run_id = resolve_run(store, args.run)
    info = store.info(run_id)
    say = print
    if getattr(args, "json", False):
        say = _to_stderr  # stdout holds the JSON document only
        print_json(run_document(info))
    else:
        _show_text(info)
    if args.plot or args.csv:
        from labpcu.paths import check_output_file

        for path, what in ((args.csv, "CSV file"), (args.plot, "plot")):
            if path:  # before reading the data: a bad path is known at once
                _check_path(lambda: check_output_file(path, what))
        if args.plot:
            _check_plot_format(args.plot)
        df = store.read(run_id)
        if args.csv:
            from labpcu.data.export import write_csv

            try:
                write_csv(df, info, args.csv)
            except OSError as exc:
                raise UsageError(f"cannot write the CSV file {args.csv}: {exc.strerror or exc}") from None
            say(f"  data written to {args.csv}")
        if args.plot:
            from labpcu.data.plot import render_plot

            cls = registry.get(info.protocol)
            try:
                render_plot(df, cls.plot, args.plot, title=f"{run_id} · {', '.join(info.devices[:4])}")
            except OSError as exc:
                raise UsageError(f"cannot write the plot {args.plot}: {exc.strerror or exc}") from None
            say(f"  plot written to {args.plot}")
    return EXIT_OK


def _to_stderr(line: str) -> None:
    import sys

    print(line, file=sys.stderr)


def run_document(info: Any) -> dict[str, Any]:
    """What ``show --json`` prints: a run's metadata, parameters (with their units),
    results and columns (name -> unit), as plain JSON values."""
    return plain_json({
        "run_id": info.run_id, "protocol": info.protocol, "status": info.status, "error": info.error,
        "devices": list(info.devices), "started": info.started, "finished": info.finished or None,
        "n_points": info.n_points, "labpcu_version": info.labpcu_version, "uuid": info.uuid, "bench": info.bench,
        "bench_time_start": info.bench_time_start, "bench_time_end": info.bench_time_end,
        "metadata": info.metadata, "parameters": info.parameters, "parameter_units": info.parameter_units,
        "results": info.results, "columns": info.columns,
    })


def _show_text(info: Any) -> None:
    run_id = info.run_id
    print(f"run {run_id}: {info.protocol}, {info.status}" + (f" ({info.error})" if info.error else ""))
    print(f"  devices: {', '.join(info.devices)}")
    print(f"  started {info.started}, finished {info.finished or '-'}; {info.n_points} points; labpcu {info.labpcu_version}")
    bench = info.bench
    if bench:
        print(f"  bench: {bench.get('name', '?')}" + (f" (simulated, seed {bench.get('seed')})" if bench.get("simulated") else ""))
    print("  parameters:")
    for name, value in info.parameters.items():
        unit = info.parameter_units.get(name, "")
        print(f"    {name} = {value}{' ' + unit if unit else ''}")
    print("  columns: " + ", ".join(f"{n} ({u})" if u else n for n, u in info.columns.items()))
    if info.results:
        print("  results:")
        for line in format_results(info.results):
            print(f"    {line}")


# ----------------------------------------------------------------------- helpers
def _store(path: str | None) -> Any:
    from labpcu.data.store import Store

    p = Path(path or default_file())
    if not p.exists() and not p.is_symlink():
        raise UsageError(f"no run store at {p} (pass --file)")
    return Store(_check_path(lambda: check_store_path(p, create=False)))


def resolve_run(store: Any, text: str) -> str:
    """A run id from its full id or its number."""
    ids = store.run_ids()
    if text in ids:
        return text
    if text.isdigit():
        matches = [r for r in ids if r.split("-", 1)[0].isdigit() and int(r.split("-", 1)[0]) == int(text)]
        if matches:
            return matches[0]
    raise UsageError(f"no run {text!r} in {store.path} ({len(ids)} runs; `labpcu list runs` lists them)")


def format_results(results: Mapping[str, Any], prefix: str = "") -> Iterator[str]:
    """Nested results as ``a.b: value`` lines; arrays summarized."""
    for key, value in results.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            yield from format_results(value, f"{name}.")
        elif isinstance(value, np.ndarray) and value.size > 6:
            if value.dtype.kind in "biuf":
                yield f"{name}: array[{value.size}] mean {np.nanmean(value):.4g}, min {np.nanmin(value):.4g}, max {np.nanmax(value):.4g}"
            else:
                yield f"{name}: array[{value.size}]"
        elif isinstance(value, float):
            yield f"{name}: {value:.6g}"
        elif isinstance(value, (list, tuple, np.ndarray)):
            items = value.tolist() if isinstance(value, np.ndarray) else list(value)
            yield f"{name}: [{', '.join(f'{v:.4g}' if isinstance(v, float) else str(v) for v in items)}]"
        else:
            yield f"{name}: {value}"


def _one_line(exc: BaseException) -> str:
    lines = [ln for ln in str(exc).splitlines() if ln.strip()]
    if len(lines) <= 1:
        return lines[0] if lines else type(exc).__name__
    return f"{lines[0]} (+{len(lines) - 1} more: {'; '.join(l.strip() for l in lines[1:4])})"


def _short(text: str, n: int) -> str:
    return text if len(text) <= n else text[: n - 1] + "…"


__all__ = ["ParameterError", "UsageError", "add_parsers", "cmd_list", "cmd_run", "cmd_show", "plain_json", "print_json",
           "print_table", "run_document"]
