"""Device safety judged from the simulator's physics (issue 11, items 1, 2, 3 and 5).

Every assertion here reads what the simulated bench says happened: the voltage across
and current through each element (``SimBench.stress``), which outputs were live when
a relay moved (``RelayEvent.any_live``), what is physically closed. Never what a
driver believes it sent.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from labpcu.bench import Bench, SafeStateError
from labpcu.data.columns import Column
from labpcu.instruments.errors import LimitError
from labpcu.protocols.base import DEVICE_COLUMN, DeviceFailure, PlotSpec, Protocol
from labpcu.protocols.logdomain import Multiplier
from labpcu.protocols.params import Params, param
from labpcu.runner import Points, Runner
from simhelpers import sent
from toy_protocols import Reads

A, B = "k2612a.smua", "k2612a.smub"
KIND = {"D1": "diode", "D2": "diode", "M1": "m1", "M2": "m2"}
UNIT = ["A1-R1C1", "A1-R2C1", "A1-R3C1"]


@pytest.fixture
def bench():
    b = Bench.from_file(seed=0)
    b.sim.bench.track_stress = True
    yield b
    try:
        b.close()
    except SafeStateError:
        pass  # the tests that weld a relay or cut a link leave it unsafe on purpose


def hot_switches(bench: Bench) -> list:
    """Relay operations that happened while any output on the bench was live."""
    return [e for e in bench.sim.bench.relay_events if e.any_live]


def over_limit(bench: Bench, current: bool = True) -> dict[str, tuple[float, float]]:
    """Elements that saw more than their bench-file limit (voltage, and current)."""
    lims = bench.config.limits
    bad = {}
    for label, (v, i) in bench.sim.bench.stress.items():
        lim = lims[KIND[label.rpartition(".")[2]]]
        if v > lim.voltage * (1 + 1e-6) or (current and i > lim.current * (1 + 1e-6)):
            bad[label] = (v, i)
    return bad


# ------------------------------------------------------------------ 1. order
def _b1500_live_on_an_array(bench: Bench) -> None:
    bench.move_to("A2")
    bench.connect({"b1500a.1": "A2.WL1", "b1500a.2": "A2.BL1", A: "A2.WL2"})
    for name, level in (("b1500a.2", 0.0), ("b1500a.1", 0.3), (A, 0.2)):
        bench.smu(name).source_voltage(level, 1e-4)
        bench.smu(name).output_on()
    assert set(bench.sim.bench.live_outputs()) == {"b1500a.1", "b1500a.2", A}


@pytest.mark.parametrize("how", ["safe_state", "close", "disconnect"])
def test_every_source_is_off_before_any_relay_opens(bench, how):
    """The B1500A comes after the matrix in the bench file: the old order opened the
    relays under its live outputs."""
    _b1500_live_on_an_array(bench)
    getattr(bench, how)()
    sim = bench.sim.bench
    assert sim.live_outputs() == [] and sim.physically_closed() == set()
    assert hot_switches(bench) == []


def test_an_aborted_operator_run_ends_safe_with_no_relay_under_a_live_output(bench, tmp_path):
    runner = Runner(bench, tmp_path / "r.h5", handle_sigint=False)
    seen = []

    def abort_midway(event):
        if isinstance(event, Points):
            seen.append(event)
            if len(seen) == 3:
                runner.abort("operator pressed abort")

    runner.subscribe(abort_midway)
    out = runner.run("multiplier", {"grid_points": 3, "repeats": 1}, UNIT)
    assert out.status == "aborted" and out.n_points >= 3
    sim = bench.sim.bench
    assert sim.live_outputs() == [] and sim.physically_closed() == set()
    assert hot_switches(bench) == []
    assert over_limit(bench, current=False) == {}


# ------------------------------------------------------- 2. limits across elements
def test_opposite_levels_on_two_pads_are_refused_across_m1(bench):
    """+1.5 V on CL1 and -1.5 V on CL2: each within M1's 1.5 V, 3 V across it."""
    bench.move_to("S01")
    bench.connect({A: "S01.CL1", B: "S01.CL2"})
    bench.smu(A).source_voltage(1.5, 1e-4)
    bench.smu(A).output_on()
    bench.smu(B).source_voltage(-1.5, 1e-4)  # the output is still off: only given
    before = sent(bench)
    with pytest.raises(LimitError, match=r"S01\.M1 \(m1\) could see 3 V across it"):
        bench.smu(B).output_on()
    assert sent(bench) == before
    assert bench.sim.bench.stress["S01.M1"][0] <= 1.5 + 1e-9


def test_levels_on_a_chain_are_bounded_by_their_spread(bench):
    """WL at +1.4 V and BL at -1.4 V: 2.8 V across the chain D1-M1-M2, any element of
    which may take it all (M2 off, say); each level alone is within every limit."""
    bench.move_to("S02")
    bench.connect({A: "S02.WL", B: "S02.BL"})
    bench.smu(A).source_voltage(1.4, 1e-4)
    bench.smu(A).output_on()
    bench.smu(B).source_voltage(-1.4, 1e-4)
    before = sent(bench)
    with pytest.raises(LimitError, match=r"S02\.M1 \(m1\) could see 2\.8 V"):
        bench.smu(B).output_on()
    assert sent(bench) == before
    assert over_limit(bench) == {}


def test_a_third_terminal_holding_the_middle_node_lets_the_chain_take_more(bench):
    """With CL1 held at 0 V, M1 sees at most 1.4 V: the same levels are accepted, and
    the simulator confirms every element stayed within its limit."""
    bench.move_to("S02")
    bench.connect({A: "S02.WL", B: "S02.BL", "b1500a.1": "S02.CL1"})
    for name, level in (("b1500a.1", 0.0), (A, 1.4), (B, -1.4)):
        bench.smu(name).source_voltage(level, 1e-4)
        bench.smu(name).output_on()
    assert set(bench.sim.bench.live_outputs()) == {A, B, "b1500a.1"}
    assert over_limit(bench) == {}
    assert 0.0 < bench.sim.bench.stress["S02.M1"][0] <= 1.4 + 1e-9


def test_compliances_share_an_elements_current_limit(bench):
    """Two terminals pushing into M1's ends and two taking from its other end: 2 mA
    of compliance can flow through M1 (1 mA) even though each terminal is capped at
    the m1 limit of 1 mA."""
    bench.move_to("S03")
    bench.connect({A: "S03.CL1", "b1500a.1": "S03.WL", B: "S03.CL2", "b1500a.2": "S03.BL"})
    for name, level in ((B, 0.0), ("b1500a.2", 0.0), ("b1500a.1", 0.8)):
        bench.smu(name).source_voltage(level, 1e-3)
        bench.smu(name).output_on()
    bench.smu(A).source_voltage(0.1, 1e-3)
    before = sent(bench)
    with pytest.raises(LimitError, match=r"S03\.M1 \(m1\) could carry 0\.002 A .* lower a compliance"):
        bench.smu(A).output_on()
    assert sent(bench) == before
    bench.smu("b1500a.1").source_voltage(0.8, 5e-4)  # smaller compliances are accepted
    bench.smu(A).source_voltage(0.1, 5e-4)
    bench.smu(A).output_on()
    assert over_limit(bench) == {}


def test_a_sweep_counts_as_one_level_at_a_time(bench):
    """A sweep from -1 V to +1 V against 0 V puts at most 1 V across M1, not 2 V."""
    bench.move_to("S04")
    bench.connect({A: "S04.CL1", B: "S04.CL2"})
    bench.smu(B).source_voltage(0.0, 1e-3)
    bench.smu(B).output_on()
    sweep = bench.smu(A).sweep_voltage([-1.0, 0.0, 1.0], 1e-3)
    assert len(sweep.current) == 3
    assert 0.9 < bench.sim.bench.stress["S04.M1"][0] <= 1.0 + 1e-9


def _site_pads(bench: Bench) -> list[str]:
    return sorted(bench.pads())


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_whatever_the_bench_accepts_stays_within_every_elements_limits(bench, data):
    """Random connections, levels, compliances and current sources at a quad site
    (isolated PCUs) and on an array: every call is either refused before it is sent,
    or the simulator finds every element within its limits (voltage everywhere;
    current too where no sneak path crosses several PCUs)."""
    site = data.draw(st.sampled_from(["Q1", "A3"]))
    bench.move_to(site)
    bench.disconnect()
    sim = bench.sim.bench
    sim.stress.clear()
    pads = _site_pads(bench)
    terminals = data.draw(st.lists(st.sampled_from([A, B, "b1500a.1", "b1500a.2", "b1500a.3"]),
                                   min_size=2, max_size=4, unique=True))
    chosen = data.draw(st.lists(st.sampled_from(pads), min_size=len(terminals), max_size=len(terminals), unique=True))
    bench.connect(dict(zip(terminals, chosen)))
    for _ in range(data.draw(st.integers(1, 6))):
        name = data.draw(st.sampled_from(terminals))
        smu = bench.smu(name)
        vmax, imax = smu.limits
        before = sent(bench)
        try:
            if data.draw(st.booleans()):
                smu.source_voltage(data.draw(st.floats(-vmax, vmax)), data.draw(st.floats(1e-6, imax)))
            else:
                smu.source_current(data.draw(st.floats(-imax, imax)), data.draw(st.floats(0.05, vmax)))
            smu.output_on()
        except LimitError:
            continue  # refused: the refusal is checked to send nothing in the tests above
        finally:
            del before
    assert over_limit(bench, current=site.startswith("Q")) == {}, sim.stress
    bench.disconnect()
    assert hot_switches(bench) == []


# --------------------------------------------------------------- 3. no way around
def test_device_type_must_name_what_the_pads_connect(bench):
    bench.move_to("S01")
    before = sent(bench)
    with pytest.raises(LimitError, match="reach m1, not a diode"):
        bench.connect({A: "S01.CL1", B: "S01.CL2"}, device_type="diode")
    assert sent(bench) == before
    bench.connect({A: "S01.WL", B: "S01.CL1"}, device_type="diode")  # D1 between them
    assert bench.smu(A).limits == (3.0, 0.01)


@dataclass(frozen=True)
class _BypassParams(Params):
    attempt: str = param("set_limits", help="what the protocol tries behind the Bench")


class Bypass(Protocol):
    """A protocol that tries to get round the Bench's rules."""

    name = "test_bypass"
    title = "test: try to bypass the bench"
    Params = _BypassParams
    columns = (Column("k", "", "int64"), DEVICE_COLUMN)
    plot = PlotSpec("k", ("k",))

    def measure(self, ctx, p, device) -> Iterator[dict]:
        bench = ctx.bench
        bench.move_to(device)
        bench.connect({A: bench.pad(device, "CL1"), B: bench.pad(device, "CL2")})
        if p.attempt == "set_limits":
            bench.smu(A).set_limits(None, None)
        elif p.attempt == "matrix":
            bench.matrix.open_all()
        elif p.attempt == "drivers":
            bench.drivers["k2612a"].write("smua.source.levelv = 3")
        elif p.attempt == "level":
            bench.smu(A).source_voltage(2.0, 1e-4)
        yield {"k": 1}


@pytest.mark.parametrize("attempt", ["set_limits", "matrix", "drivers", "level"])
def test_a_protocol_cannot_lift_limits_or_switch_relays_behind_the_bench(bench, tmp_path, attempt):
    out = Runner(bench, tmp_path / "r.h5", handle_sigint=False).run(Bypass, {"attempt": attempt}, ["S05"])
    assert out.status == "failed" and out.n_points == 0
    assert ("LimitError" if attempt == "level" else "AttributeError") in out.error
    assert over_limit(bench) == {} and hot_switches(bench) == []
    assert bench.sim.bench.live_outputs() == [] and bench.sim.bench.physically_closed() == set()


def test_a_live_smu_outside_the_connection_is_off_before_it_is_switched_onto_a_pad(bench):
    bench.move_to("S06")
    bench.connect({A: "S06.CL1", B: "S06.CL2"})
    live = bench.smu("b1500a.3")  # on no pad: its output may be on
    live.source_voltage(1.0, 1e-4)
    live.output_on()
    bench.connect({"b1500a.3": "S06.CL1", B: "S06.CL2"})
    assert hot_switches(bench) == []
    assert not bench.smu("b1500a.3").output and "b1500a.3" not in bench.sim.bench.live_outputs()


# ------------------------------------------------------------------- 5. faults
def test_a_dropped_link_is_reopened_and_the_bench_ends_safe(bench):
    _b1500_live_on_an_array(bench)
    bench.sim["b1500a"].faults.drop_connection(count=1)
    bench.safe_state()
    sim = bench.sim.bench
    assert sim.live_outputs() == [] and sim.physically_closed() == set()
    assert hot_switches(bench) == []


def test_a_source_that_stays_unreachable_keeps_its_relays_closed(bench):
    _b1500_live_on_an_array(bench)
    bench.sim["b1500a"].faults.drop_connection(count=None)
    with pytest.raises(SafeStateError, match="b1500a") as err:
        bench.safe_state()
    assert "left closed" in str(err.value) and "b1500a: b1500a" not in str(err.value)
    sim = bench.sim.bench
    assert {cp[1] for cp in sim.physically_closed()} == {1, 3, 4}  # nothing opened under it
    assert A not in sim.live_outputs()  # the reachable source is off
    assert hot_switches(bench) == []  # nothing opened under the live B1500A outputs
    bench.sim["b1500a"].faults.clear()
    bench.safe_state()  # the link is back: everything safe
    assert sim.live_outputs() == [] and sim.physically_closed() == set()


def test_a_welded_relay_fails_the_run_and_blocks_the_next_connection(bench, tmp_path):
    runner = Runner(bench, tmp_path / "r.h5", handle_sigint=False)

    def weld(event):
        if isinstance(event, Points) and event.rows == 2:
            bench.sim.bench.stick_relay(next(iter(bench.sim.bench.closed_relays())), closed=True)

    runner.subscribe(weld)
    out = runner.run(Reads, {"reads": 4, "every": 1.0}, ["S01"])
    assert out.status == "failed" and "welded" in out.error and out.n_points == 4
    assert bench.sim.bench.live_outputs() == [] and hot_switches(bench) == []
    nxt = runner.run(Reads, {"reads": 2}, ["S02"])
    assert nxt.status == "failed" and "welded" in nxt.error and nxt.n_points == 0


def test_an_instrument_error_during_the_read_phase_fails_that_run_not_the_next(bench, tmp_path):
    runner = Runner(bench, tmp_path / "r.h5", handle_sigint=False)
    runner.subscribe(lambda e: isinstance(e, Points) and e.rows == 3 and bench.sim["k2612a"].inject_error(
        5005, "Interlock engaged"))
    out = runner.run(Reads, {"reads": 3, "every": 1.0}, ["S01"])
    assert out.status == "failed" and "Interlock engaged" in out.error and out.n_points == 3
    assert runner.store.info(out.run_id).status == "failed"
    nxt = runner.run(Reads, {"reads": 2}, ["S01"])
    assert nxt.status == "completed", nxt.error


class _FailingUnits(Multiplier):
    """A multiplier whose every unit 'does not calibrate'."""

    name = "test_failing_units"

    def measure_unit(self, ctx, params, unit, terminals):
        raise DeviceFailure(f"{unit.id} did not calibrate")
        yield  # pragma: no cover - a generator, like every measure_unit


def test_an_operator_run_whose_every_unit_failed_is_failed(bench, tmp_path):
    out = Runner(bench, tmp_path / "r.h5", handle_sigint=False).run(_FailingUnits, {"grid_points": 3}, UNIT)
    assert out.status == "failed" and out.error.startswith("every unit failed: U01")


@pytest.mark.parametrize("protocol", ["vmm", "multiplier", "softmax"])
def test_an_operator_compliance_the_bench_would_refuse_is_refused_before_any_message(bench, tmp_path, protocol):
    """Four terminals of 1 mA reach one M1 (1 mA): the Bench would refuse the first
    level, after the weights were programmed; validation refuses it first."""
    from labpcu.protocols.params import ParameterError

    before = sent(bench)
    with pytest.raises(ParameterError, match=rf"{protocol}: i_compliance = 0\.001 A on 4 terminals"):
        Runner(bench, tmp_path / "r.h5", handle_sigint=False).run(protocol, {"i_compliance": 1e-3}, UNIT)
    assert sent(bench) == before and not (tmp_path / "r.h5").exists()


def test_an_off_b1500a_leaves_its_net_floating_not_at_0_v(bench):
    """Found by the fuzz test: with b1500a.1 off on CL2 (its output relay open), CL2
    floats between +1 V on CL1 and a BL pulled towards −1 V, and M1 saw 1.87 V. Taking
    the off B1500A for 0 V had bounded M1 at 1 V; it is now refused before it is sent."""
    bench.move_to("S01")
    bench.connect({A: "S01.BL", B: "S01.CL1", "b1500a.1": "S01.CL2"})
    bench.smu(A).source_current(-4.5e-4, 1.0)
    bench.smu(A).output_on()
    bench.smu(B).source_voltage(1.0, 7e-4)
    before = sent(bench)
    with pytest.raises(LimitError, match=r"S01\.M1 \(m1\) could see 2 V"):
        bench.smu(B).output_on()
    assert sent(bench) == before
    assert over_limit(bench) == {}
