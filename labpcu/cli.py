"""The ``labpcu`` command line. Thin: every command is a few calls into the Python API.

Exit codes: 0 done, 1 measurement failed, 2 bad input.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence

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
    from labpcu.cli_codebook import add_parser as add_codebook_parser
    from labpcu.cli_runs import add_parsers

    parser = _Parser(prog="labpcu", description="Bench software for perovskite computing units.")
    parser.add_argument("--version", action="version", version=f"labpcu {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    demo = sub.add_parser("demo", help="characterize the simulated wafer: every protocol, codebook export and report (no hardware)")
    demo.add_argument("--seed", type=_seed, default=0, help="wafer seed (default 0)")
    demo.add_argument("--out", default=None, help="folder for the demo output (default: labpcu-demo)")

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
    return parser


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
    from labpcu.demo import run_demo

    return run_demo(seed=args.seed, out=args.out)


def main(argv: Sequence[str] | None = None) -> int:
    from labpcu.cli_runs import cmd_list, cmd_run, cmd_show
    from labpcu.data.errors import StoreError
    from labpcu.protocols.params import ParameterError

    try:
        args_list = sys.argv[1:] if argv is None else list(argv)
        parser = build_parser(with_protocols=bool(args_list) and args_list[0] == "run")
        args = parser.parse_args(argv)
        if args.command == "run" and args.protocol:
            return cmd_run(args)
        if args.command == "list":
            return cmd_list(args)
        if args.command == "show":
            return cmd_show(args)
        if args.command == "codebook":
            from labpcu.cli_codebook import cmd_codebook

            return cmd_codebook(args)
        if args.command == "demo":
            return _cmd_demo(args)
        if args.command == "sim" and args.sim_command == "serve":
            return _cmd_sim_serve(args)
        if args.command == "sim" and args.sim_command == "sites":
            return _cmd_sim_sites(args)
        parser.print_help()
        return EXIT_BAD_INPUT
    except (UsageError, ParameterError, StoreError) as exc:
        print(f"labpcu: error: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except KeyboardInterrupt:
        print("labpcu: interrupted", file=sys.stderr)
        return EXIT_FAILED
    except BrokenPipeError:  # `labpcu show 3 | head`: the reader left; not an error
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_OK


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
