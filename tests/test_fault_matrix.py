"""The fault matrix (issue 11, "Faults"): every injected fault, on every instrument, at
the start, the middle and the end of a run, for a protocol on the 2612A alone and for an
operator protocol that drives the B1500A too.

Faults are injected deterministically from a runner subscriber when the run's n-th
``Points`` event arrives (a dry run on the same seed says how many blocks a run yields),
never by sleeping. Each case is judged from the simulator, not from the drivers:

* no relay moved while any output anywhere was live;
* every output off, every relay open, except what a fault makes impossible: a source
  unreachable for good keeps its outputs as they were and the relays on its rows closed
  (opening them would arc); a matrix unreachable for good cannot open anything, so its
  relays stay as they were (and every source is off); a welded relay stays closed;
* every element stayed within its bench-file voltage limit (``SimBench.stress``);
* the run is stored ``failed`` with a reason naming the fault, never ``completed``;
* after a transient fault (late reply, one dropped connection, an instrument error) the
  same bench runs the protocol again to ``completed``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

import pytest

from labpcu.bench import Bench, SafeStateError
from labpcu.data.store import Store
from labpcu.runner import Points, Runner

pytestmark = pytest.mark.slow

INSTRUMENTS = ("k2612a", "k3706a", "b1500a")
PHASES = ("start", "middle", "end")
PROTOCOLS = {
    # the 2612A alone: five M1 reads held at the read bias, one block per read
    "retention": ("retention", {"component": "m1", "duration": "40 s", "interval": "10 s"}, ["S01"]),
    # an operator unit: 2612A log stages, B1500A antilog stage and ground; one block per x1
    "multiplier": ("multiplier", {"grid_points": 3, "repeats": 1}, ["A1-R1C1", "A1-R2C1", "A1-R3C1"]),
}
INJECTED_TEXT = "Hardware error injected by the fault matrix"
KIND = {"D1": "diode", "D2": "diode", "M1": "m1", "M2": "m2"}

_blocks: dict[str, int] = {}


def blocks_of(protocol: str, tmp_path) -> int:
    """How many blocks a fault-free run yields on seed 0 (the same on every fresh bench)."""
    if protocol not in _blocks:
        name, params, devices = PROTOCOLS[protocol]
        with Bench.from_file(seed=0) as bench:
            runner = Runner(bench, tmp_path / "dry.h5", handle_sigint=False)
            seen: list[Points] = []
            runner.subscribe(lambda e: seen.append(e) if isinstance(e, Points) else None)
            out = runner.run(name, params, devices)
            assert out.status == "completed", out.error
            _blocks[protocol] = len(seen)
    return _blocks[protocol]


@dataclass
class Injected:
    """What the subscriber did, for the assertions."""

    done: bool = False
    welded: tuple[int, int, int] | None = None
    live_before: set[str] = field(default_factory=set)
    closed_before: set[tuple[int, int, int]] = field(default_factory=set)


def inject(bench: Bench, fault: str, where: str | None, note: Injected) -> None:
    sim = bench.sim.bench
    note.live_before = set(sim.live_outputs())
    note.closed_before = sim.physically_closed()
    if fault == "welded":
        closed = sorted(sim.closed_relays())
        assert closed, "no relay is closed at the moment of the fault"
        note.welded = closed[0]
        sim.stick_relay(note.welded, closed=True)
    else:
        emu = bench.sim[where]
        if fault == "late_reply":
            emu.faults.delay_replies(1e6, count=1)  # far beyond any timeout the drivers set
        elif fault == "dropped_once":
            emu.faults.drop_connection(count=1)
        elif fault == "dropped_forever":
            emu.faults.drop_connection(count=None)
        elif fault == "instrument_error":
            emu.inject_error(-240, INJECTED_TEXT)
        else:  # pragma: no cover
            raise AssertionError(fault)
    note.done = True


def source_terminals(bench: Bench, instrument: str) -> set[str]:
    return {t for t in bench.config.matrix.rows.values() if t.partition(".")[0] == instrument}


def rows_of(bench: Bench, instrument: str) -> set[int]:
    return {r for r, t in bench.config.matrix.rows.items() if t.partition(".")[0] == instrument}


def assert_within_limits(bench: Bench) -> None:
    limits = bench.config.limits
    over = []
    for label, (v, _i) in bench.sim.bench.stress.items():
        kind = KIND[label.rsplit(".", 1)[1]]
        if v > limits[kind].voltage * (1 + 1e-9):
            over.append(f"{label}: {v:.4g} V > {limits[kind].voltage:g} V")
    assert over == [], "elements beyond their voltage limit: " + "; ".join(over)


REASONS = {
    "late_reply": r"timeout",
    "dropped_once": r"connection",
    "instrument_error": re.escape(INJECTED_TEXT),
    "welded": r"welded",
}


CASES = [pytest.param(f, w, ph, pr, id=f"{f}-{w}-{ph}-{pr}")
         for pr in PROTOCOLS
         for f in ("late_reply", "dropped_once", "dropped_forever", "instrument_error")
         for w in INSTRUMENTS
         for ph in PHASES]
CASES += [pytest.param("welded", None, ph, pr, id=f"welded-{ph}-{pr}") for pr in PROTOCOLS for ph in PHASES]


@pytest.mark.parametrize("fault, where, phase, protocol", CASES)
def test_fault_ends_safe_and_is_reported(fault, where, phase, protocol, tmp_path):
    n = blocks_of(protocol, tmp_path)
    at = {"start": 1, "middle": n // 2 + 1, "end": n}[phase]  # inject at this Points event (1-based)
    assert n >= 3, "the phases need at least three blocks"
    name, params, devices = PROTOCOLS[protocol]
    bench = Bench.from_file(seed=0)
    try:
        sim = bench.sim.bench
        sim.track_stress = True
        path = tmp_path / "runs.h5"
        runner = Runner(bench, path, handle_sigint=False)
        note = Injected()
        count = 0

        def on_event(event):
            nonlocal count
            if isinstance(event, Points) and not note.done:
                count += 1
                if count == at:
                    inject(bench, fault, where, note)

        unsubscribe = runner.subscribe(on_event)
        out = runner.run(name, params, devices)
        unsubscribe()
        assert note.done, f"the run ended after {count} blocks, before the fault"

        # ---- judged from the simulator
        assert [e for e in sim.relay_events if e.any_live] == [], "a relay moved under a live output"
        assert_within_limits(bench)
        live = set(sim.live_outputs())
        closed = sim.physically_closed()
        if fault == "dropped_forever" and where != "k3706a":
            lost = source_terminals(bench, where)
            assert live - lost == set(), "a reachable source was left on"
            assert live == note.live_before & lost, "the unreachable source's outputs changed"
            if any(cp[1] in rows_of(bench, where) for cp in note.closed_before):
                # its current may flow through any closed relay of the site: none moves
                assert closed == note.closed_before, "a relay moved while an unreachable source reached the site"
            else:  # it reaches nothing through the matrix: the relays open as usual
                assert closed == set(), f"relays still closed: {sorted(closed)}"
        elif fault == "dropped_forever":  # the matrix is gone: every source off, relays as they were
            assert live == set()
            assert closed == note.closed_before
        else:
            assert live == set(), f"outputs still on: {sorted(live)}"
            assert closed == ({note.welded} if note.welded else set()), f"relays still closed: {sorted(closed)}"

        # ---- the run's stored status and reason
        assert out.status == "failed", f"{out.status}: {out.error}"
        if fault == "dropped_forever":
            assert where in out.error and re.search("connection", out.error), out.error
        else:
            assert re.search(REASONS[fault], out.error, re.IGNORECASE), out.error
        info = Store(path).info(out.run_id)
        assert (info.status, info.error) == (out.status, out.error)

        # ---- recovery on the same bench after a transient fault
        if fault in ("late_reply", "dropped_once", "instrument_error"):
            for emu in bench.sim.emulators.values():
                emu.faults.clear()
            again = runner.run(name, params, devices)
            assert again.status == "completed", again.error
            assert Store(path).info(again.run_id).status == "completed"
            assert sim.live_outputs() == [] and sim.physically_closed() == set()
            assert [e for e in sim.relay_events if e.any_live] == []
            assert_within_limits(bench)
    finally:
        for emu in bench.sim.emulators.values():
            emu.faults.clear()
        try:
            bench.close()
        except SafeStateError:
            pass


# --------------------------------------------------------------- late reply over TCP
# In process a late reply is discarded by the adapter; over a socket it really arrives
# later and answers whatever is asked next. The safe state must not read it as the
# answer to its read-back (an output reported on after it was switched off, or off
# while it is on), and the next query must get its own reply.
READ_BACK = {
    "k2612a": lambda bench: bench.drivers["k2612a"].outputs_on(),
    "k3706a": lambda bench: bench.drivers["k3706a"].closed(),
    "b1500a": lambda bench: bench.drivers["b1500a"].enabled_channels(),
}
IDENTITY = {"k2612a": "Model 2612A", "k3706a": "MODEL 3706A", "b1500a": "B1500A"}


@pytest.mark.parametrize("where", INSTRUMENTS)
def test_a_late_reply_over_tcp_leaves_no_stale_reply(where, tmp_path):
    from labpcu.bench import _make_sim_rig
    from labpcu.benchfile import default_sim_bench_path, load_bench
    from labpcu.instruments.errors import InstrumentCommunicationError

    rig = _make_sim_rig(load_bench(None), 0)
    sim = rig.bench
    with rig.server() as server:
        text = default_sim_bench_path().read_text().replace("timeout = 5.0", "")
        for name, resource in server.resources().items():  # a real bench file, on the simulator's sockets
            text = re.sub(rf'(\[instruments\.{name}\]\n(?:.*\n)*?)address = "sim"',
                          rf'\1address = "{resource}"\nvisa_library = "@py"\ntimeout = 0.3', text, count=1)
        (tmp_path / "tcp.toml").write_text(text)
        bench = Bench.from_file(tmp_path / "tcp.toml", prober=sim.move_to)
        try:
            bench.move_to("A2")
            bench.connect({"k2612a.smua": "A2.WL2", "b1500a.1": "A2.WL1", "b1500a.2": "A2.BL1"})
            for name, level in (("b1500a.2", 0.0), ("b1500a.1", 0.1), ("k2612a.smua", 0.1)):
                bench.smu(name).source_voltage(level, 1e-4)
                bench.smu(name).output_on()
            assert len(sim.live_outputs()) == 3
            rig[where].faults.delay_replies(0.7, count=1)  # beyond the timeout and the diagnosis after it
            with pytest.raises(InstrumentCommunicationError, match="no reply within the timeout") as err:
                with bench.guard():
                    READ_BACK[where](bench)
            assert not getattr(err.value, "__notes__", None), err.value.__notes__  # the safe state succeeded
            assert sim.live_outputs() == [] and sim.physically_closed() == set()
            assert [e for e in sim.relay_events if e.any_live] == []
            for name, identity in IDENTITY.items():  # every link answers its own query again
                assert identity in bench.drivers[name].ask("*IDN?")
        finally:
            try:
                bench.close()
            except SafeStateError:
                pass


# ------------------------------------------- an error still queued at the safe state
# An instrument error raised while the run is stopped between steps (the operator's
# abort) is not read by the run's last error check: it is still queued when the safe
# state runs. It must not keep an output on (the B1500A's off commands used to stop at
# it), stop the relays from opening or the welded-relay test from running, and it must
# be reported on that run, not found by the next one.
@pytest.mark.parametrize("where", INSTRUMENTS)
@pytest.mark.parametrize("protocol", list(PROTOCOLS))
def test_an_error_queued_at_the_safe_state_is_reported_and_does_not_stop_it(where, protocol, tmp_path):
    name, params, devices = PROTOCOLS[protocol]
    bench = Bench.from_file(seed=0)
    try:
        sim = bench.sim.bench
        sim.track_stress = True
        path = tmp_path / "runs.h5"
        runner = Runner(bench, path, handle_sigint=False)
        seen = []

        def on_event(event):
            if isinstance(event, Points):
                seen.append(event)
                if len(seen) == 2:
                    bench.sim[where].inject_error(-240, INJECTED_TEXT)
                    runner.abort("operator pressed stop")

        runner.subscribe(on_event)
        out = runner.run(name, params, devices)
        assert sim.live_outputs() == [] and sim.physically_closed() == set()
        assert [e for e in sim.relay_events if e.any_live] == []
        assert_within_limits(bench)
        assert out.status == "failed", f"{out.status}: {out.error}"
        assert "operator pressed stop" in out.error and INJECTED_TEXT in out.error, out.error
        assert "safe state failed" not in out.error, out.error
        info = Store(path).info(out.run_id)
        assert (info.status, info.error) == (out.status, out.error)
        runner._subscribers.clear()
        again = runner.run(name, params, devices)
        assert again.status == "completed", again.error
    finally:
        try:
            bench.close()
        except SafeStateError:
            pass


@pytest.mark.parametrize("where", INSTRUMENTS)
def test_the_safe_state_is_not_stopped_by_an_old_error_and_keeps_it_for_the_run(where):
    bench = Bench.from_file(seed=0)
    try:
        sim = bench.sim.bench
        bench.move_to("A2")
        bench.connect({"b1500a.1": "A2.WL1", "b1500a.2": "A2.BL1", "k2612a.smua": "A2.WL2"})
        for name, level in (("b1500a.2", 0.0), ("b1500a.1", 0.1), ("k2612a.smua", 0.1)):
            bench.smu(name).source_voltage(level, 1e-4)
            bench.smu(name).output_on()
        bench.sim[where].inject_error(-240, INJECTED_TEXT)
        bench.safe_state()  # proven safe: no SafeStateError
        assert sim.live_outputs() == [] and sim.physically_closed() == set()
        assert [e for e in sim.relay_events if e.any_live] == []
        assert bench.drain_errors() == [f"{where}: error -240: {INJECTED_TEXT}"]
        assert bench.drain_errors() == []
    finally:
        bench.close()
