"""``labpcu codebook build|export|show``: operator codebooks from the command line.

    labpcu codebook build STORE [RUN_ID ...] --name NAME    into STORE under /codebooks/NAME
    labpcu codebook export STORE --name NAME --out PATH [--format hdf5|npz|both]
    labpcu codebook show PATH [--name NAME]                  a codebook file, npz folder or store

Without RUN_IDs, build takes every completed operator run and the newest
weight_statistics run. numpy and h5py are imported inside the handler, so
``labpcu --version`` stays fast.
"""

from __future__ import annotations

import argparse
import math
from typing import Any

DEFAULT_NAME = "default"


def add_parser(sub: Any) -> None:
    """Add ``codebook`` and its subcommands to the top-level subparsers."""
    cb = sub.add_parser("codebook", help="build, export and show operator codebooks",
                        description="Operator codebooks for hardware-aware fine-tuning.")
    cbsub = cb.add_subparsers(dest="codebook_command", metavar="CODEBOOK_COMMAND")
    build = cbsub.add_parser("build", help="build a codebook from operator runs into the store",
                             description="Build a codebook from completed operator runs (default: all of them and "
                                         "the newest weight_statistics run) and store it under /codebooks/NAME.")
    build.add_argument("store", help="run store (HDF5)")
    build.add_argument("run_ids", nargs="*", default=[], metavar="RUN_ID",
                       help="runs to use: ids or numbers (default: all)")
    build.add_argument("--name", default=DEFAULT_NAME, help=f"codebook name (default {DEFAULT_NAME})")
    export = cbsub.add_parser("export", help="write a stored codebook as a standalone file or npz folder")
    export.add_argument("store", help="run store (HDF5)")
    export.add_argument("--name", default=DEFAULT_NAME, help=f"codebook name (default {DEFAULT_NAME})")
    export.add_argument("--out", required=True, metavar="DIR_OR_FILE",
                        help="a .h5 file (hdf5), or a folder: NAME.h5 and/or the npz files go there")
    export.add_argument("--format", default="hdf5", choices=("hdf5", "npz", "both"), help="default hdf5")
    show = cbsub.add_parser("show", help="summarize a codebook: operators, grids, devices, errors")
    show.add_argument("path", help="codebook file (.h5), npz folder or manifest.json, or a run store")
    show.add_argument("--name", default=None, help="codebook name, when PATH is a run store holding several")


def cmd_codebook(args: argparse.Namespace) -> int:
    """Run ``labpcu codebook ...``; bad input raises UsageError (exit 2)."""
    from labpcu.cli_runs import UsageError

    command = getattr(args, "codebook_command", None)
    handlers = {"build": _build, "export": _export, "show": _show}
    if command not in handlers:
        raise UsageError("codebook needs a command: build, export or show (see `labpcu codebook --help`)")
    try:
        return handlers[command](args)
    except (ValueError, KeyError, OSError) as exc:
        raise UsageError(_one_line(exc)) from None


def _build(args: argparse.Namespace) -> int:
    from pathlib import Path

    from labpcu.cli_runs import EXIT_OK, UsageError, resolve_run
    from labpcu.data.codebook import build_codebook
    from labpcu.data.codebook_io import save_to_store
    from labpcu.data.store import Store

    store = _existing_store(args.store)
    run_ids = [resolve_run(store, r) for r in args.run_ids] or None
    cb = build_codebook(Path(args.store), run_ids)
    if not cb.operators:  # pragma: no cover - build_codebook refuses first
        raise UsageError("no operator tables")
    where = save_to_store(cb, args.store, args.name)
    runs = ", ".join(s["run_id"] for s in cb.source_runs)
    print(f"codebook {args.name!r}: {len(cb)} operator(s) ({', '.join(cb.operators)}) from {runs}")
    if cb.weight_noise is not None:
        print(f"  weight noise sigma {cb.weight_noise.sigma:.6g} of the conductance range "
              f"(from {cb.weight_noise.source_run or 'the paper'})")
    print(f"  written to {Store(args.store).path}:{where}")
    return EXIT_OK


def _export(args: argparse.Namespace) -> int:
    from labpcu.cli_runs import EXIT_OK
    from labpcu.data.codebook_io import export_codebook, load_codebook

    from pathlib import Path

    from labpcu.cli_runs import _check_path
    from labpcu.paths import check_output_file, check_output_folder

    _existing_store(args.store)
    out = Path(args.out)  # a .h5 file, or a folder (see the flag's help)
    if out.suffix.lower() in (".h5", ".hdf5") and not out.is_dir():
        _check_path(lambda: check_output_file(out, "codebook file"))
    else:
        _check_path(lambda: check_output_folder(out, "export folder"))
    cb = load_codebook(args.store, args.name)
    for path in export_codebook(cb, args.out, format=args.format, name=args.name):
        print(f"wrote {path}")
    return EXIT_OK


def _show(args: argparse.Namespace) -> int:
    from pathlib import Path

    from labpcu.cli_runs import EXIT_OK, UsageError
    from labpcu.data.codebook_io import load_codebook

    from labpcu.cli_runs import _check_path
    from labpcu.paths import check_store_path

    path = Path(args.path)
    if not path.exists():
        raise UsageError(f"no codebook at {path}")
    if not path.is_dir() and path.suffix.lower() != ".json":  # an HDF5 file: a FIFO or a cut file would hang
        _check_path(lambda: check_store_path(path, create=False, what="codebook or run store"))
    cb = load_codebook(path, args.name)
    print(f"codebook {path}: schema {cb.schema} v{cb.schema_version}, labpcu {cb.labpcu_version}, created {cb.created}")
    print(f"  devices: {', '.join(cb.devices) or '-'}; wafer: {cb.wafer or '-'}"
          + (f"; temperature {cb.temperature:g} K" if cb.temperature is not None else ""))
    print(f"  runs: {', '.join(s.get('run_id', '?') for s in cb.source_runs) or '-'}")
    if cb.weight_noise is not None:
        wn = cb.weight_noise
        print(f"  weight noise: sigma {wn.sigma:.6g} of the {wn.reference}; {wn.distribution}; resampled {wn.resample}")
    header = ["operator", "kind", "ideal", "grid", "devices", "repeats", "mean |y-ideal|", "mean rel. error"]
    rows = []
    for name, t in cb.operators.items():
        mean_abs, mean_rel = t.errors()
        rows.append([name, t.kind, t.ideal, "x".join(str(n) for n in t.grid_shape), str(t.n_devices),
                     str(t.n_repeats), _fmt(mean_abs), "-" if math.isnan(mean_rel) else f"{100 * mean_rel:.3g} %"])
    _table(header, rows)
    print("  rel. error = |y - ideal| / |ideal| averaged over the raw samples with ideal != 0")
    return EXIT_OK


def _existing_store(path: str) -> Any:
    from pathlib import Path

    from labpcu.cli_runs import UsageError, _check_path
    from labpcu.data.store import Store
    from labpcu.paths import check_store_path

    if not Path(path).exists():
        raise UsageError(f"no run store at {path}")
    store = Store(_check_path(lambda: check_store_path(path, create=False)))
    store.run_ids()  # not a run store: SchemaError, one line
    return store


def _table(header: list[str], rows: list[list[str]]) -> None:
    """A rich table on a terminal (or in a notebook), plain aligned columns otherwise
    (pipes, grep): the same output as ``labpcu list``."""
    from labpcu.cli_runs import print_table

    print_table(header, rows, right=(4, 5))


def _fmt(value: float) -> str:
    return "-" if math.isnan(value) else f"{value:.4g}"


def _one_line(exc: BaseException) -> str:
    text = str(exc.args[0]) if isinstance(exc, KeyError) and exc.args else str(exc)
    return text.splitlines()[0] if text else type(exc).__name__
