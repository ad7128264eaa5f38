"""Small protocols for testing the runner: periodic reads of an M2 on the simulated
bench, and variants that fail in chosen ways. Also a script: ``python
tests/toy_protocols.py FILE`` runs reads until killed, printing each flush."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from dataclasses import dataclass

from labpcu.data.columns import Column
from labpcu.protocols.base import DEVICE_COLUMN, DeviceFailure, PlotSpec, Protocol
from labpcu.protocols.params import Params, param

A, B = "k2612a.smua", "k2612a.smub"


@dataclass(frozen=True)
class ReadParams(Params):
    v_read: float = param(0.1, unit="V", limits=(-0.5, 0.5), help="read voltage")
    reads: int = param(20, limits=(1, 10**9), help="number of reads")
    every: float = param(10.0, unit="s", limits=(0.0, 1e6), help="time between reads")
    fail_at: int = param(-1, limits=(-1, None), help="raise ZeroDivisionError at this read (-1: never)")


class Reads(Protocol):
    """Read a device's M2 every ``every`` s of bench time."""

    name = "toy_reads"
    title = "toy: periodic M2 reads"
    Params = ReadParams
    columns = (Column("index", "", "int64"), Column("t", "s"), Column("v", "V"), Column("i", "A"),
               DEVICE_COLUMN)
    plot = PlotSpec("t", ("i",), yscale="log", abs_y=True)

    def measure(self, ctx, p: ReadParams, device: str) -> Iterator[dict]:
        bench = ctx.bench
        bench.move_to(device)
        bench.connect({A: bench.pad(device, "CL2"), B: bench.pad(device, "BL")}, device_type="m2")
        ground = bench.smu(B)
        ground.source_voltage(0.0, 1e-3)
        ground.output_on()
        smu = bench.smu(A)
        smu.source_voltage(p.v_read, 1e-3)
        smu.output_on()
        for k in range(p.reads):
            if k == p.fail_at:
                1 / 0  # a protocol bug
            ctx.clock.sleep(p.every)
            smu.source_voltage(p.v_read, 1e-3)  # re-set each read: the error queue is checked on sets
            r = smu.measure()
            yield {"index": k, "t": ctx.clock.now(), "v": r.voltage, "i": r.current}
            ctx.progress(k + 1, p.reads)

    def analyze(self, data, p: ReadParams) -> dict:
        return {"mean_current": float(data["i"].mean()), "reads": len(data)}


class BrokenAnalysis(Reads):
    name = "toy_broken_analysis"

    def analyze(self, data, p):
        raise ValueError("cannot fit an empty curve")


class FailsOnS03(Reads):
    """Reads, except that device S03 'does not switch'."""

    name = "toy_fails_on_s03"

    def measure(self, ctx, p, device):
        if device == "S03":
            raise DeviceFailure("M2 did not set within 2 V")
        return super().measure(ctx, p, device)


def main(path: str) -> None:
    """Read forever (well, 10**9 times) into ``path``; print rows on disk at each flush."""
    from labpcu.bench import Bench
    from labpcu.data.store import Store
    from labpcu.runner import Flushed, Runner

    bench = Bench.from_file(seed=0)
    runner = Runner(bench, Store(path, flush_interval=0.05))
    runner.subscribe(lambda e: print(f"flushed {e.rows}", flush=True) if isinstance(e, Flushed) else None)
    runner.run(Reads, {"reads": 10**9, "every": 1.0}, ["S02"])


if __name__ == "__main__":
    main(sys.argv[1])
