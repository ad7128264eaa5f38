"""The simulated wafer remembers: its state is kept with the run store.

A real wafer keeps what was done to it: program an M1 today, read it tomorrow. The
simulated one starts fresh in every process, so ``labpcu run ispp`` followed by
``labpcu run retention`` would read an unprogrammed device. After every run the
front ends (``labpcu run``, campaigns) store the simulated bench's state with the run's
end, in the same write (``/documents/sim_state``): every device's M1 and M2 state and
drift reference, the probe site, the bench clock and the random stream. The next run on that store restores
it, so a campaign resumed in a new process measures exactly what an uninterrupted one
would. A store made with another wafer seed is refused with one line; ``fresh=True``
(``--fresh-wafer``) starts over.
"""

from __future__ import annotations

from typing import Any

DOCUMENT = "sim_state"
VERSION = 1


class WaferStateError(RuntimeError):
    """The store's simulated wafer is not this bench's (another seed); one line."""


def wafer_state(sim_bench: Any) -> dict[str, Any]:
    """Everything of the simulated bench that measurements change."""
    devices = {}
    for did, dev in sim_bench.wafer.devices.items():
        m1, m2 = dev.m1, dev.m2
        devices[did] = [m1.g_prog, m1.t_prog, bool(m2.lrs), m2.r_on, m2.t_set, int(m2.switch_count),
                        m1.dynamic_state(), m2.dynamic_state()]  # volatile M1, M2 forming and cycle draws
    return {
        "version": VERSION,
        "seed": sim_bench.seed,
        "site": sim_bench.site.id,
        "clock": sim_bench.clock.now(),
        "rng": sim_bench.rng.bit_generator.state,
        "devices": devices,
    }


def apply_state(sim_bench: Any, state: dict[str, Any]) -> None:
    """Put a saved state back into a simulated bench of the same seed."""
    with sim_bench.lock:
        for did, (g_prog, t_prog, lrs, r_on, t_set, count, *dynamic) in state["devices"].items():
            dev = sim_bench.wafer.device(did)
            dev.m1.g_prog, dev.m1.t_prog = float(g_prog), float(t_prog)
            dev.m2.lrs, dev.m2.r_on, dev.m2.t_set, dev.m2.switch_count = bool(lrs), float(r_on), float(t_set), int(count)
            if dynamic:  # absent in states saved before the mechanisms existed
                dev.m1.set_dynamic_state(dynamic[0])
                dev.m2.set_dynamic_state(dynamic[1])
        sim_bench.rng.bit_generator.state = state["rng"]
        sim_bench.clock.set_time(float(state["clock"]))
        sim_bench.move_to(state["site"])
        sim_bench._invalidate()


def wafer_documents(bench: Any) -> dict[str, Any]:
    """What a run's end stores beside it (:attr:`Runner.documents_at_finish`): the
    simulated wafer's state, in the same write as the run's status, so a crash keeps
    both or neither. Real benches keep their state on the chuck: nothing."""
    if getattr(bench, "sim", None) is None:
        return {}
    return {DOCUMENT: wafer_state(bench.sim.bench)}


def save_wafer(bench: Any, store: Any) -> None:
    """Keep the simulated wafer's state with the store now (outside a run)."""
    for name, value in wafer_documents(bench).items():
        store.write_document(name, value)


def check_wafer(store: Any, seed: int | None, *, fresh: bool = False) -> None:
    """Before any instrument opens: refuse a store whose simulated wafer has another
    seed (``seed`` None: not a simulated bench)."""
    if seed is None or fresh or not store.path.exists():
        return
    _check_seed(store.read_document(DOCUMENT), seed, store)


def _check_seed(state: dict[str, Any] | None, seed: int, store: Any) -> None:
    if state is not None and int(state.get("seed", -1)) != seed:
        raise WaferStateError(f"{store.path} holds the simulated wafer of seed {state.get('seed')}, not {seed}: "
                              f"use --seed {state.get('seed')}, another store, or --fresh-wafer")


def restore_wafer(bench: Any, store: Any, *, fresh: bool = False) -> bool:
    """Before a run: continue on the wafer the store's earlier runs left. True if a
    state was restored."""
    if getattr(bench, "sim", None) is None or fresh or not store.path.exists():
        return False
    state = store.read_document(DOCUMENT)
    if state is None:
        return False
    _check_seed(state, bench.sim.bench.seed, store)  # the state just read, not a second read
    apply_state(bench.sim.bench, state)
    bench.move_to(state["site"])
    return True
