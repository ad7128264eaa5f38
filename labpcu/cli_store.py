"""``labpcu store check|repair FILE``: the run store's fsck.

    labpcu store check FILE     report; exit 0 clean, 1 problems found
    labpcu store repair FILE    fix them (never losing a flushed point); exit 0 when repaired

``check`` changes nothing. ``repair`` takes the store's writer lock, so it waits for a
live writer (``--wait`` seconds) and then refuses with one line.
"""

from __future__ import annotations

import argparse
from typing import Any

EXIT_OK, EXIT_PROBLEMS = 0, 1


def add_parser(sub: Any) -> None:
    """Add ``store`` and its subcommands to the top-level subparsers."""
    st = sub.add_parser("store", help="check or repair a run store (after a crash)",
                        description="Check a run store's integrity, or repair it.")
    stsub = st.add_subparsers(dest="store_command", metavar="STORE_COMMAND")
    check = stsub.add_parser("check", help="report problems: plain-reader access, open-for-write flags, dead "
                                           "running runs, truncated columns, n_points mismatches (exit 1 if any)")
    check.add_argument("file", help="run store (HDF5)")
    repair = stsub.add_parser("repair", help="fix what check reports, keeping every flushed point")
    repair.add_argument("file", help="run store (HDF5)")
    repair.add_argument("--wait", type=float, default=5.0, metavar="S",
                        help="seconds to wait for a live writer before refusing (default 5)")


def cmd_store(args: argparse.Namespace) -> int:
    from labpcu.cli_runs import UsageError
    from labpcu.data.store import check_store, repair_store

    if args.store_command == "check":
        report = check_store(args.file)
        print(f"{report.path}:")
        for line in report.summary():
            print(f"  {line}")
        for line in report.problems:
            print(f"  problem: {line}")
        print("  clean" if report.clean else f"  {len(report.problems)} problem(s): `labpcu store repair` fixes them")
        return EXIT_OK if report.clean else EXIT_PROBLEMS
    if args.store_command == "repair":
        before, actions, after = repair_store(args.file, timeout=args.wait)
        print(f"{after.path}:")
        for line in actions or ["nothing to repair"]:
            print(f"  {line}")
        for line in after.problems:
            print(f"  still a problem: {line}")
        print("  clean" if after.clean else "  not repaired")
        return EXIT_OK if after.clean else EXIT_PROBLEMS
    raise UsageError("store needs a subcommand: check or repair (see `labpcu store --help`)")
