"""``labpcu budget``: the operators' error budget on the simulated wafer (:mod:`labpcu.budget`)."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from pathlib import Path

from labpcu.budget import DOCUMENT, ENTRIES, OPERATORS, budget_settings, error_budget, format_budget


def add_parser(sub: argparse._SubParsersAction, seed_type: Callable[[str], int]) -> None:
    p = sub.add_parser("budget", help="error budget of the analog operators on the simulated wafer: the error with "
                                      "each mechanism switched off in turn")
    p.add_argument("--seed", type=seed_type, default=0, help="wafer seed (default 0)")
    p.add_argument("--operator", action="append", choices=OPERATORS, default=None,
                   help="operator to budget (repeatable; default: all)")
    p.add_argument("--entry", action="append", choices=list(ENTRIES), default=None,
                   help="budget entry to switch off (repeatable; default: all)")
    p.add_argument("--full", action="store_true",
                   help="the demo's full settings (10 units, every repeat); default: a quick budget on 3 units")
    p.add_argument("--store", default=None, help="also keep the budget in this store (the report shows it)")


def cmd_budget(args: argparse.Namespace) -> int:
    from rich.console import Console

    from labpcu.cli_runs import EXIT_OK

    console = Console(stderr=True)
    devices, params = budget_settings(full=args.full)
    budget = error_budget(args.seed, devices, params, operators=args.operator or OPERATORS, entries=args.entry,
                          on_step=lambda op, entry: console.print(f"{op}: {entry}"))
    for line in format_budget(budget):
        print(line)
    if args.store:
        from labpcu.data.store import Store

        Store(Path(args.store)).write_document(DOCUMENT, budget.to_dict())
    return EXIT_OK
