"""The ``labpcu`` command line. Thin: every command is a few calls into the Python API.

Exit codes: 0 done, 1 measurement failed, 2 bad input.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from labpcu import __version__

from labpcu.cli_runs import EXIT_BAD_INPUT, EXIT_FAILED, EXIT_OK, UsageError


class _Parser(argparse.ArgumentParser):
    """argparse, but a mistake is one line (``labpcu: error: ...``), exit code 2."""

    def error(self, message: str) -> None:  # type: ignore[override]
        raise UsageError(f"{message} (see `{self.prog} --help`)")


def _port_spec(text: str) -> tuple[str, int]:
    name, sep, port = text.partition("=")
    if not sep or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise argparse.ArgumentTypeError(f"expected NAME=PORT with PORT in 0..65535, got {text!r}")
    return name, int(port)


def _seed(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"seed must be a whole number, got {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"seed must be >= 0, got {value}")
    return value


def build_parser(with_protocols: bool = True) -> argparse.ArgumentParser:
    from labpcu.cli_budget import add_parser as add_budget_parser
    from labpcu.cli_campaign import add_parser as add_campaign_parser
    from labpcu.gui.app import add_parser as add_gui_parser
    from labpcu.cli_codebook import add_parser as add_codebook_parser
    from labpcu.cli_runs import add_parsers
    from labpcu.cli_store import add_parser as add_store_parser

    parser = _Parser(prog="labpcu", description="Bench software for perovskite computing units.")
    parser.add_argument("--version", action="version", version=f"labpcu {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    demo = sub.add_parser("demo", help="characterize the simulated wafer: every protocol, codebook export and report (no hardware)")
    demo.add_argument("--seed", type=_seed, default=0, help="wafer seed (default 0)")
    demo.add_argument("--out", default=None, help="folder for the demo output (default: labpcu-demo)")
    add_physics_flags(demo)
    demo.add_argument("--budget", action="store_true",
                      help="also measure each operator's error budget (each mechanism off in turn) for the report")

    sim = sub.add_parser("sim", help="the simulated bench")
    simsub = sim.add_subparsers(dest="sim_command", metavar="SIM_COMMAND")
    serve = simsub.add_parser("serve", help="expose every simulated instrument as a raw TCP socket on loopback")
    serve.add_argument("--seed", type=_seed, default=0, help="wafer seed (default 0)")
    serve.add_argument("--site", default=None, help="probe site to start on (A1..A9, Q1..Q5; default A1)")
    serve.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    serve.add_argument(
        "--port", type=_port_spec, action="append", default=[], metavar="NAME=PORT",
        help="fix an instrument's port, e.g. k2612a=5025 (default: free ports)",
    )
    sites = simsub.add_parser("sites", help="list the simulated wafer's probe sites and their devices")
    sites.add_argument("--seed", type=_seed, default=0)
    add_parsers(sub, _seed, protocols=with_protocols)
    add_codebook_parser(sub)
    add_store_parser(sub)
    add_campaign_parser(sub, _seed)
    add_gui_parser(sub, _seed)
    add_budget_parser(sub, _seed)
    add_common_flags(parser)
    return parser


# ------------------------------------------------------------ simulated physics
def add_physics_flags(parser: argparse.ArgumentParser) -> None:
    """Conditions and mechanism switches of the simulated wafer (labpcu.sim.physics)."""
    from labpcu.sim.physics import MECHANISMS

    parser.add_argument("--temperature", type=float, default=None, metavar="K",
                        help="stage temperature in kelvin (default 298.15)")
    parser.add_argument("--light", type=float, default=None, metavar="LUX",
                        help="microscope lamp on the wafer in lux (default 0: dark)")
    parser.add_argument("--without", action="append", default=[], metavar="MECHANISM", choices=sorted(MECHANISMS),
                        help="switch a mechanism of the simulated wafer off (repeatable): " + ", ".join(MECHANISMS))


def physics_from_args(args: argparse.Namespace) -> Any:
    """The Physics the flags ask for (None: the bench file's own)."""
    from labpcu.benchfile import load_bench

    if args.temperature is None and args.light is None and not args.without:
        return None
    conditions = {k: v for k, v in (("temperature_K", args.temperature), ("light_lux", args.light)) if v is not None}
    try:
        return load_bench(None).physics(**conditions).without(*args.without)
    except ValueError as exc:  # PhysicsError: one line, exit 2
        raise UsageError(str(exc)) from None


# ------------------------------------------------------------ -v, -q, --log-file
def add_common_flags(parser: argparse.ArgumentParser, depth: int = 0) -> None:
    """``-v``/``-q``/``--log-file`` on the command and on every subcommand, so they go
    before or after it (``labpcu -v list runs`` and ``labpcu list runs -v``). Each level
    has its own destination (a subcommand's namespace overwrites its parent's), and
    :func:`log_options` adds them up."""
    own = parser._option_string_actions
    default = 0 if depth == 0 else argparse.SUPPRESS
    if "-v" not in own and "--verbose" not in own:
        parser.add_argument("-v", "--verbose", action="count", dest=f"_verbose{depth}", default=default,
                            help="more log lines on stderr: -v info, -vv debug (default: warnings)")
    if "-q" not in own and "--quiet" not in own:
        parser.add_argument("-q", "--quiet", action="count", dest=f"_quiet{depth}", default=default,
                            help="only errors on stderr, and no progress display")
    if "--log-file" not in own:
        parser.add_argument("--log-file", dest=f"_log_file{depth}", metavar="FILE",
                            default=None if depth == 0 else argparse.SUPPRESS,
                            help="append a debug log with timestamps to FILE")
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for child in {id(p): p for p in action.choices.values()}.values():
                add_common_flags(child, depth + 1)


def log_options(args: argparse.Namespace) -> tuple[int, str | None]:
    """(verbosity, log file) from the flags at every level: verbosity is the number of
    -v less the number of -q (0: the default, warnings)."""
    values = vars(args)
    verbose = sum(v for k, v in values.items() if k.startswith("_verbose") and v)
    quiet = sum(v for k, v in values.items() if k.startswith("_quiet") and v)
    files = [values[k] for k in sorted(values) if k.startswith("_log_file") and values[k]]
    return verbose - quiet, (files[-1] if files else None)


#: stderr level by verbosity (-q and below: errors only; -vv and above: debug)
_LEVELS = {-1: logging.ERROR, 0: logging.WARNING, 1: logging.INFO, 2: logging.DEBUG}
#: lines of library log kept for the end of a command at the default verbosity
MAX_DEFERRED_LINES = 20


class _StderrHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """Writes to whatever ``sys.stderr`` is when a record comes (a progress display or
    pytest's capture replaces it after the handler is made)."""

    @property  # type: ignore[override]
    def stream(self) -> Any:
        return sys.stderr

    @stream.setter
    def stream(self, value: Any) -> None:
        pass


class _DeferredHandler(logging.Handler):
    """Keeps the records for the end of the command: printed after its output when
    it succeeds (or its measurement fails), dropped when it ends in an error line,
    which stays the one line on stderr."""

    def __init__(self, level: int) -> None:
        super().__init__(level)
        self.lines: list[str] = []
        self.dropped = 0

    def emit(self, record: logging.LogRecord) -> None:
        if len(self.lines) < MAX_DEFERRED_LINES:
            self.lines.append(self.format(record))
        else:
            self.dropped += 1


class _LineFormatter(logging.Formatter):
    """``labpcu.bench: warning: message``: the logger, so that a logged error is never
    mistaken for the command's own ``labpcu: error:`` line; an exception as one line,
    or its traceback with ``traceback`` (-vv)."""

    def __init__(self, traceback: bool = False) -> None:
        super().__init__()
        self.traceback = traceback

    def format(self, record: logging.LogRecord) -> str:
        text = f"{record.name}: {record.levelname.lower()}: {record.getMessage()}"
        if record.exc_info and record.exc_info[1] is not None:
            if self.traceback:
                text += "\n" + self.formatException(record.exc_info)
            else:
                text += f" ({type(record.exc_info[1]).__name__}: {error_line(record.exc_info[1])})"
        return text


class CommandLogging:
    """The ``labpcu`` logger for one command: a stderr handler at the level -v/-q ask
    for, and a DEBUG file handler with timestamps for --log-file. :meth:`close` puts
    the logger back as it was (``main`` may run many times in one process)."""

    def __init__(self, verbosity: int, log_file: str | None, *, live: bool = False) -> None:
        self.logger = logging.getLogger("labpcu")
        self.level = self.logger.level
        self.stderr_level = _LEVELS[max(-1, min(2, verbosity))]
        self.file: logging.FileHandler | None = None
        if log_file is not None:
            from labpcu.cli_runs import _check_path
            from labpcu.paths import check_output_file

            _check_path(lambda: check_output_file(log_file, "log file"))
            try:
                self.file = logging.FileHandler(log_file, mode="a", encoding="utf-8")
            except OSError as exc:
                raise UsageError(f"cannot write the log file {log_file}: {exc.strerror or exc}") from None
            self.file.setLevel(logging.DEBUG)
            self.file.setFormatter(logging.Formatter("%(asctime)s %(levelname)-8s %(name)s: %(message)s"))
        # at the default verbosity and below, what the library logs waits for the end of
        # the command: no line around its one error line (-v and -vv show it as it comes)
        self.deferred = None if live or verbosity > 0 else _DeferredHandler(self.stderr_level)
        self.stderr: logging.Handler = self.deferred or _StderrHandler()
        self.stderr.setLevel(self.stderr_level)
        self.stderr.setFormatter(_LineFormatter(traceback=verbosity >= 2))
        self.handlers = [h for h in (self.stderr, self.file) if h is not None]
        for handler in self.handlers:
            self.logger.addHandler(handler)
        self.logger.setLevel(logging.DEBUG if self.file is not None else self.stderr_level)

    def finish(self, error: str | None = None) -> None:
        """The command is over: print what was deferred, unless it ended in the error
        line ``error`` (which the log file gets)."""
        if self.file is not None and error is not None:
            self.file.handle(logging.makeLogRecord({"name": "labpcu.cli", "levelno": logging.ERROR,
                                                    "levelname": "ERROR", "msg": "%s", "args": (error,)}))
        if self.deferred is not None:
            if error is None:
                for line in self.deferred.lines:
                    print(line, file=sys.stderr)
                if self.deferred.dropped:
                    print(f"labpcu: ({self.deferred.dropped} more log lines; --log-file keeps them all)",
                          file=sys.stderr)
            self.deferred.lines, self.deferred.dropped = [], 0

    def close(self) -> None:
        for handler in self.handlers:
            self.logger.removeHandler(handler)
            handler.close()
        self.logger.setLevel(self.level)


def _cmd_sim_serve(args: argparse.Namespace) -> int:
    from labpcu.sim.rig import SimRig

    rig = SimRig.default(seed=args.seed, site=_check_site(args.site))
    ports = dict(args.port)
    unknown = set(ports) - set(rig.emulators)
    if unknown:
        raise UsageError(f"unknown instrument(s) in --port: {', '.join(sorted(unknown))}; have {', '.join(rig.emulators)}")
    try:
        server = rig.server(ports=ports, host=args.host)
        print(f"labpcu simulated bench, seed {args.seed}, site {rig.bench.site.id}; Ctrl-C stops", flush=True)
        server.serve_forever_until_interrupt(lambda line: print(line, flush=True))
    except OSError as exc:
        raise UsageError(f"cannot listen on {args.host}: {exc.strerror or exc}") from None
    return EXIT_OK


def _check_site(site: str | None) -> str | None:
    from labpcu.sim.wafer import N_ARRAYS, N_SINGLES, SINGLES_PER_QUAD

    valid = [f"A{k + 1}" for k in range(N_ARRAYS)] + [f"Q{k + 1}" for k in range(N_SINGLES // SINGLES_PER_QUAD)]
    if site is not None and site not in valid:
        raise UsageError(f"no probe site {site!r}; sites are {', '.join(valid)}")
    return site


def _cmd_sim_sites(args: argparse.Namespace) -> int:
    from labpcu.sim.wafer import make_wafer

    wafer = make_wafer(args.seed)
    for site in wafer.sites.values():
        print(f"{site.id:4s} {site.kind:6s} {' '.join(site.devices)}")
    return EXIT_OK


def _cmd_demo(args: argparse.Namespace) -> int:
    from labpcu.cli_runs import _check_path
    from labpcu.demo import DEFAULT_FOLDER, STORE_NAME, run_demo
    from labpcu.paths import check_output_folder, check_store_path

    folder = Path(args.out or DEFAULT_FOLDER)  # before the bench opens: a bad folder wastes no run
    _check_path(lambda: check_output_folder(folder, "demo folder"))
    store = folder / STORE_NAME  # the demo replaces a previous store: only a regular file can be replaced
    if (store.exists() or store.is_symlink()) and not store.is_file():
        _check_path(lambda: check_store_path(store, create=True))
    return run_demo(seed=args.seed, out=folder, physics=physics_from_args(args), budget=args.budget)


# ------------------------------------------------------------------- arguments
def values_may_be_negative(parser: argparse.ArgumentParser, argv: Sequence[str]) -> list[str]:
    """``--start -500mV`` as ``--start=-500mV``: argparse takes a token starting with
    '-' for a flag unless it looks like a plain negative number, so ``-500mV`` and
    ``-1e-1`` were refused ("expected one argument"). A flag that takes a value, seen
    in the (sub)parser it belongs to, takes the next token as that value whatever it
    starts with, unless it is itself one of that parser's flags."""
    out: list[str] = []
    current = parser
    k = 0
    while k < len(argv):
        token = argv[k]
        if token == "--":
            out.extend(argv[k:])
            break
        options = {o: a for a in current._actions for o in a.option_strings}
        action = options.get(token)
        if action is not None and action.nargs is None and k + 1 < len(argv):
            value = argv[k + 1]
            if value.startswith("-") and value != "--" and value not in options:
                out.append(f"{token}={value}")
            else:  # a plain value, or a flag where a value belongs: argparse says so
                out.extend((token, value))
            k += 2
            continue
        for sub in (a for a in current._actions if isinstance(a, argparse._SubParsersAction)):
            if token in sub.choices:
                current = sub.choices[token]
        out.append(token)
        k += 1
    return out


# ----------------------------------------------------------------------- errors
#: the longest error line printed; a message quoting a long input is cut in the middle
MAX_ERROR_CHARS = 400


def error_exit_code(exc: BaseException) -> int | None:
    """The exit code of a labpcu error: 2 for bad input (the request, the bench file,
    a path, a level beyond a limit), 1 when the measurement could not be made
    (instruments unreachable or lost, the bench not provably safe). None: not a
    labpcu error, i.e. a bug, whose traceback must stay visible. Modules are looked
    up, not imported: an error class whose module never loaded cannot be raised."""
    from labpcu.cli_runs import UsageError
    from labpcu.data.errors import StoreError
    from labpcu.instruments.errors import InstrumentCommunicationError, InstrumentError, LimitError
    from labpcu.protocols.params import ParameterError

    bad_input: list[type] = [UsageError, ParameterError, StoreError, LimitError]
    failed: list[type] = [InstrumentCommunicationError, InstrumentError]
    if (benchfile := sys.modules.get("labpcu.benchfile")) is not None:
        bad_input.append(benchfile.BenchFileError)
    if (paths := sys.modules.get("labpcu.paths")) is not None:
        bad_input.append(paths.PathError)
    if (bench := sys.modules.get("labpcu.bench")) is not None:
        failed.append(bench.SafeStateError)
    if (base := sys.modules.get("labpcu.protocols.base")) is not None:
        failed.append(base.DeviceFailure)
    for module, names in (("labpcu.campaign.loader", ("CampaignError",)), ("labpcu.campaign.select", ("SelectionError",)),
                          ("labpcu.campaign.engine", ("CampaignRefused",)), ("labpcu.sim_state", ("WaferStateError",))):
        if (mod := sys.modules.get(module)) is not None:
            bad_input.extend(getattr(mod, n) for n in names)
    if isinstance(exc, tuple(bad_input)):
        return EXIT_BAD_INPUT
    if isinstance(exc, tuple(failed)):
        return EXIT_FAILED
    return None


def error_line(exc: BaseException) -> str:
    """One line for any error: several lines (a bench file's problems) are joined,
    and a very long one is cut in the middle, keeping its start and end."""
    lines = [ln.strip() for ln in str(exc).splitlines() if ln.strip()] or [type(exc).__name__]
    text = lines[0] if len(lines) == 1 else f"{lines[0]} (+{len(lines) - 1} more: {'; '.join(lines[1:4])})"
    if len(text) > MAX_ERROR_CHARS:
        keep = MAX_ERROR_CHARS // 2
        text = f"{text[:keep]} … ({len(text) - 2 * keep} characters) … {text[-keep:]}"
    return text


def quiet_library_logs() -> None:
    """The command reports through its own lines (and a run's store keeps its errors):
    labpcu's warnings must not reach stderr through logging's last-resort handler as
    extra lines around the one error line. Records still propagate to any handler an
    application or a test configured."""
    logger = logging.getLogger("labpcu")
    if not any(isinstance(h, logging.NullHandler) for h in logger.handlers):
        logger.addHandler(logging.NullHandler())


def main(argv: Sequence[str] | None = None) -> int:
    quiet_library_logs()
    logs: CommandLogging | None = None
    try:
        args_list = sys.argv[1:] if argv is None else list(argv)
        parser = build_parser(with_protocols=_command_of(args_list) == "run")
        args = parser.parse_args(values_may_be_negative(parser, args_list))
        verbosity, log_file = log_options(args)
        args.verbosity, args.quiet = verbosity, verbosity < 0  # -q: no progress display either
        logs = CommandLogging(verbosity, log_file, live=args.command in ("sim", "gui"))  # long sessions: as it comes
        logging.getLogger("labpcu.cli").debug("labpcu %s: labpcu %s", __version__, " ".join(args_list))
        code = _dispatch(parser, args)
        logs.finish()
        return code
    except KeyboardInterrupt:
        if logs is not None:
            logs.finish()
        print("labpcu: interrupted", file=sys.stderr)
        return EXIT_FAILED
    except BrokenPipeError:  # `labpcu show 3 | head`: the reader left; not an error
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_OK
    except Exception as exc:
        code = error_exit_code(exc)
        if code is None:
            if logs is not None:
                logs.finish()  # what led to the bug, before its traceback
            raise  # a bug: its traceback stays visible
        problems = getattr(exc, "problems", None)  # a campaign file: every mistake, one line each
        lines = list(problems) if problems else [error_line(exc)]
        if logs is not None:
            logs.finish(error="; ".join(lines))
        for line in lines:
            print(f"labpcu: error: {line}", file=sys.stderr)
        return code
    finally:
        if logs is not None:
            logs.close()


def _command_of(argv: Sequence[str]) -> str | None:
    """The subcommand, past any global flag (``labpcu -v --log-file x.log run ...``)."""
    tokens = iter(argv)
    for token in tokens:
        if token == "--log-file":
            next(tokens, None)
        elif not token.startswith("-"):
            return token
    return None


def _dispatch(parser: argparse.ArgumentParser, args: argparse.Namespace) -> int:
    from labpcu.cli_runs import cmd_list, cmd_run, cmd_show

    if args.command == "run" and args.protocol:
        return cmd_run(args)
    if args.command == "list":
        return cmd_list(args)
    if args.command == "show":
        return cmd_show(args)
    if args.command == "codebook":
        from labpcu.cli_codebook import cmd_codebook

        return cmd_codebook(args)
    if args.command == "store":
        from labpcu.cli_store import cmd_store

        return cmd_store(args)
    if args.command == "campaign":
        from labpcu.cli_campaign import cmd_campaign

        return cmd_campaign(args)
    if args.command == "gui":
        from labpcu.gui.app import cmd_gui

        return cmd_gui(args)
    if args.command == "demo":
        return _cmd_demo(args)
    if args.command == "budget":
        from labpcu.cli_budget import cmd_budget

        return cmd_budget(args)
    if args.command == "sim" and args.sim_command == "serve":
        return _cmd_sim_serve(args)
    if args.command == "sim" and args.sim_command == "sites":
        return _cmd_sim_sites(args)
    parser.print_help()
    return EXIT_BAD_INPUT


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
