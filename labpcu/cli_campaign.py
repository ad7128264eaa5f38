"""``labpcu campaign validate|run|resume|status|pause|unpause|abort FILE``: scripted,
resumable measurement campaigns from the command line. Each command is a few calls
into :mod:`labpcu.campaign`.

``validate``, ``run`` and ``resume`` check the whole campaign before any instrument is
opened and report every mistake with its file and line (exit 2). ``run`` starts a
campaign; ``resume`` continues one after kill -9, Ctrl-C, a power loss or a failed
instrument, at the first unfinished task. ``status --json`` is for other programs.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import time
from pathlib import Path
from typing import Any

from labpcu.cli_runs import EXIT_BAD_INPUT, EXIT_FAILED, EXIT_OK, UsageError, default_file

COMMANDS = ("validate", "run", "resume", "status", "pause", "unpause", "abort")


def add_parser(sub: Any, seed_type: Any) -> None:
    camp = sub.add_parser("campaign", help="scripted, resumable campaigns: validate, run, resume, status",
                          description="Run a campaign file (TOML): an ordered list of steps, each a protocol, "
                                      "its devices and its parameters.")
    csub = camp.add_subparsers(dest="campaign_command", metavar="CAMPAIGN_COMMAND")
    for name, text in (("validate", "check the whole campaign (nothing is opened or sent)"),
                       ("run", "start the campaign"),
                       ("resume", "continue the campaign at its first unfinished task"),
                       ("status", "which tasks are done, with their runs"),
                       ("pause", "pause a running campaign before its next task (from another terminal)"),
                       ("unpause", "let a paused campaign go on"),
                       ("abort", "abort a running campaign (its current run ends in the safe state)")):
        p = csub.add_parser(name, help=text, description=text)
        p.add_argument("file", help="the campaign file (TOML)")
        p.add_argument("--store", default=None, help="run store, when the file names none "
                                                     f"(default {default_file()})")
        if name in ("validate", "run", "resume"):
            p.add_argument("--seed", type=seed_type, default=None, help="simulated wafer seed (default: the file's)")
        if name in ("run", "resume"):
            p.add_argument("--json", action="store_true", help="stream every event as a JSON line on stdout")
            p.add_argument("--fresh-wafer", action="store_true",
                           help="start the simulated wafer afresh instead of continuing the store's")
            p.add_argument("--sample", default=None, help="the sample or wafer (stored on every run, beside [sample])")
            p.add_argument("--operator", default=None, help="who runs it (stored on every run)")
            p.add_argument("--note", default=None, help="a note stored on every run")
        if name == "resume":
            p.add_argument("--force", action="store_true",
                           help="go on even if the file changed steps that have completed runs")
        if name == "status":
            p.add_argument("--json", action="store_true", help="machine-readable output")


def cmd_campaign(args: argparse.Namespace) -> int:
    command = getattr(args, "campaign_command", None)
    if command not in COMMANDS:
        raise UsageError("campaign needs a command: " + ", ".join(COMMANDS))
    campaign = _load(args.file)
    store_path = campaign.store_path(default=args.store or default_file())
    if command in ("pause", "unpause", "abort"):
        from labpcu.campaign.engine import CampaignControl

        control = CampaignControl(store_path)
        {"pause": control.pause, "unpause": control.resume, "abort": control.abort}[command]()
        print(f"{campaign.name}: asked to {command}")
        return EXIT_OK
    if command == "status":
        return _status(campaign, store_path, args)
    from labpcu.campaign.validate import check_campaign

    campaign = check_campaign(args.file, _offline(campaign, args.seed))  # the file's shape and every task
    if command == "validate":
        print(f"{args.file}: campaign {campaign.name!r} is valid: {len(campaign.steps)} steps")
        return EXIT_OK
    return _run(campaign, store_path, args, resume=command == "resume")


# --------------------------------------------------------------------- helpers
def _load(path: str) -> Any:
    """The campaign, for its store, bench and seed; with every mistake of its shape
    and its tasks found together later (:func:`check_campaign`)."""
    from labpcu.campaign.loader import load_text, parse_partial

    return parse_partial(load_text(path), path)[0]


def _offline(campaign: Any, seed: int | None) -> Any:
    from labpcu.cli_runs import offline_bench

    bench_file = campaign.bench_path()
    return offline_bench(str(bench_file) if bench_file else None, seed if seed is not None else campaign.seed)


def _run(campaign: Any, store_path: Path, args: argparse.Namespace, *, resume: bool) -> int:
    from labpcu.bench import SafeStateError
    from labpcu.campaign.engine import CampaignEngine, campaign_runs
    from labpcu.cli_runs import _check_path, offline_seed, open_bench, run_metadata
    from labpcu.sim_state import check_wafer
    from labpcu.data.store import Store
    from labpcu.paths import check_store_path

    _check_path(lambda: check_store_path(store_path, create=True))
    store = Store(store_path)
    check_wafer(store, offline_seed(_offline(campaign, args.seed)), fresh=args.fresh_wafer)  # before the bench opens
    started = campaign_runs(campaign, store)
    if started and not resume:
        raise UsageError(f"campaign {campaign.name!r} has already run into {store_path} "
                         f"({len(started)} tasks); continue it with `labpcu campaign resume {args.file}`")
    metadata = run_metadata(args)  # --sample/--operator/--note, over the file's [sample]
    bench_file = campaign.bench_path()
    seed = args.seed if args.seed is not None else campaign.seed
    bench = open_bench(str(bench_file) if bench_file else None, seed)
    unsafe = None
    try:
        engine = CampaignEngine(campaign, bench, store, force=getattr(args, "force", False),
                                fresh_wafer=args.fresh_wafer, metadata=metadata)
        if args.json:
            engine.subscribe(_json_line)
        elif not args.quiet:  # -q: errors only, no progress display
            from rich.console import Console

            from labpcu.progress import display_mode

            # a terminal or a notebook gets the bar; a pipe or a file only the failed tasks
            engine.subscribe(CampaignProgress() if display_mode(Console(stderr=True)) else _failed_task_line)
        outcome = engine.run()
    finally:
        try:
            bench.close()
        except SafeStateError as exc:
            unsafe = exc
    if not args.json:
        print(f"campaign {campaign.name!r} {outcome.state}: {len(outcome.runs)} runs this time, "
              f"{outcome.skipped} tasks already done, in {store_path}"
              + (f"\n  reason: {outcome.reason}" if outcome.reason else ""))
    if unsafe is not None:
        raise SafeStateError(f"the bench could not be put in its safe state: {unsafe}") from unsafe
    return EXIT_OK if outcome.ok else EXIT_FAILED


def status_document(campaign: Any, store_path: Path, bench: Any) -> dict[str, Any]:
    """The campaign's progress: name, complete, and per step its devices' statuses
    and runs (what ``status --json`` prints)."""
    from labpcu.campaign.engine import campaign_runs, step_devices
    from labpcu.campaign.plan import tasks_of
    from labpcu.campaign.validate import together
    from labpcu.data.store import Store

    store = Store(store_path)
    done = campaign_runs(campaign, store)
    steps = []
    complete = True
    for index, step in enumerate(campaign.steps):
        devices: dict[str, dict[str, Any]] = {}
        for task in tasks_of(step, index, step_devices(campaign, step, done, store, bench), together(step)):
            record = done.get(task.key)
            status = record.status if record is not None else "pending"
            if record is None or not record.done:
                complete = False
            for device in task.devices:
                key = device if task.key.count("/") == 1 else f"{device} ({task.key.split('/', 2)[2]})"
                devices[key] = {"status": status, "run": record.run_id if record is not None else None}
        steps.append({"name": step.name, "protocol": step.protocol, "devices": devices})
    return {"campaign": campaign.name, "store": str(store_path), "complete": complete, "steps": steps}


def _status(campaign: Any, store_path: Path, args: argparse.Namespace) -> int:
    doc = status_document(campaign, store_path, _offline(campaign, None))
    if args.json:
        print(json.dumps(doc, indent=2))
        return EXIT_OK
    print(f"campaign {doc['campaign']!r} in {doc['store']}: {'complete' if doc['complete'] else 'not complete'}")
    for step in doc["steps"]:
        counts: dict[str, int] = {}
        for entry in step["devices"].values():
            counts[entry["status"]] = counts.get(entry["status"], 0) + 1
        summary = ", ".join(f"{n} {s}" for s, n in sorted(counts.items())) or "no devices yet"
        print(f"  {step['name']:<20} {step['protocol']:<18} {summary}")
    return EXIT_OK


class CampaignProgress:
    """One overall bar: tasks done of the campaign's total, the task running, and an
    ETA from the protocols' estimates of the bench time still to go, scaled by the
    wall-to-bench time ratio seen so far. Failed tasks are printed above the bar."""

    def __init__(self, console: Any = None) -> None:
        from rich.console import Console
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

        self.console = console or Console(stderr=True)
        self._bar = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                             TimeElapsedColumn(), TextColumn("{task.fields[eta]}"), console=self.console)
        self._task: Any = None
        self._t0 = time.monotonic()
        self._bench_done = 0.0
        self._current: Any = None
        self._remaining: dict[str, float] = {}

    def __call__(self, event: Any) -> None:
        from labpcu.campaign.engine import CampaignState, DevicesExcluded, TaskFinished, TaskStarted

        if isinstance(event, DevicesExcluded):
            defective = {d: r for d, r in event.excluded.items() if not r.startswith("a spare")}
            if defective:
                self.console.print(f"[yellow]{event.step}: left out {excluded_text(defective)}[/yellow]")
        elif isinstance(event, TaskStarted):
            if self._task is None:
                self._bar.start()
                self._task = self._bar.add_task("", total=event.total, completed=event.number - 1, eta="")
            self._current = event
            eta = ""
            if event.estimate and self._bench_done > 0:
                ratio = (time.monotonic() - self._t0) / self._bench_done
                left = event.estimate * (event.total - event.number + 1)
                eta = f"about {_duration(left * ratio)} left"
            self._bar.update(self._task, total=event.total, completed=event.number - 1,
                             description=f"{event.task} ({event.protocol})", eta=eta)
        elif isinstance(event, TaskFinished):
            if self._current is not None and self._current.estimate:
                self._bench_done += self._current.estimate
            if event.status != "completed":
                self.console.print(f"[yellow]{event.task}: {event.status} ({event.run_id}) {event.error}[/yellow]")
            if self._task is not None:
                self._bar.advance(self._task)
        elif isinstance(event, CampaignState) and event.state == "paused":
            if self._task is not None:
                self._bar.update(self._task, eta="paused: `labpcu campaign unpause FILE` goes on")
        elif isinstance(event, CampaignState) and event.state != "running":
            self._bar.stop()


def excluded_text(excluded: dict[str, str]) -> str:
    """``S18 (screened open in step 'screen'), ...``: the devices a step left out."""
    return ", ".join(f"{d} ({r})" for d, r in excluded.items())


def _failed_task_line(event: Any) -> None:
    """Without a bar (stderr is a pipe or a file): a task that did not complete, or a
    defective device a step left out, as a line."""
    import sys

    from labpcu.campaign.engine import DevicesExcluded, TaskFinished

    if isinstance(event, TaskFinished) and event.status != "completed":
        print(f"{event.task}: {event.status} ({event.run_id}) {event.error}", file=sys.stderr, flush=True)
    if isinstance(event, DevicesExcluded):
        defective = {d: r for d, r in event.excluded.items() if not r.startswith("a spare")}
        if defective:
            print(f"{event.step}: left out {excluded_text(defective)}", file=sys.stderr, flush=True)


def _duration(seconds: float) -> str:
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 5400:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


def _json_line(event: Any) -> None:
    """An event as one JSON line: its type and its fields (arrays as lists)."""
    fields = dataclasses.asdict(event) if dataclasses.is_dataclass(event) else {"value": repr(event)}
    print(json.dumps({"event": type(event).__name__, **fields}, default=_plain), flush=True)


def _plain(value: Any) -> Any:
    if hasattr(value, "tolist"):
        return value.tolist()
    if dataclasses.is_dataclass(value):
        return dataclasses.asdict(value)
    return str(value)
