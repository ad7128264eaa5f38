"""The Bench on the simulated bench file: roles, routing, limits, and the safety rules
proven by the emulators' message logs and the simulated relays."""

from __future__ import annotations

import pytest

from labpcu.bench import Bench, SafeStateError
from labpcu.instruments.errors import InstrumentCommunicationError, InstrumentError, LimitError
from simhelpers import assert_safe, sent

A, B = "k2612a.smua", "k2612a.smub"


@pytest.fixture
def bench():
    b = Bench.from_file()
    yield b
    try:
        b.close()
    except SafeStateError:
        pass


def m1_route(bench: Bench, device: str = "S03") -> None:
    bench.move_to(device)
    bench.connect({A: f"{device}.CL1", B: f"{device}.CL2"})
    bench.smu(B).source_voltage(0.0, 1e-3)
    bench.smu(B).output_on()


def test_roles_and_snapshot(bench):
    assert set(bench.smus) == {A, B, "b1500a.1", "b1500a.2", "b1500a.3", "b1500a.4"}
    assert bench.matrix is not None and bench.analyzer is not None
    snap = bench.snapshot()
    assert "Model 2612A" in snap["instruments"]["k2612a"]["identity"]
    assert snap["simulated"] and snap["seed"] == 0 and snap["site"] == bench.site.id
    assert_safe(bench)


def test_connect_closes_exactly_the_requested_crosspoints(bench):
    bench.move_to("A4-R2C3")
    cps = bench.connect({A: "A4.WL2", B: ["A4.BL3", "A4.BL1"], "b1500a.1": "A4-R2C3.CL2"})
    pins = {p.name: p.pin for p in bench.pads().values()}
    assert set(cps) == {(1, 1, pins["A4.WL2"]), (1, 2, pins["A4.BL3"]), (1, 2, pins["A4.BL1"]),
                        ((pins["A4-R2C3.CL2"] - 1) // 16 + 1, 3, (pins["A4-R2C3.CL2"] - 1) % 16 + 1)}
    assert bench.sim.bench.closed_relays() == set(cps)
    bench.connect({A: "A4.WL1"})
    assert bench.sim.bench.closed_relays() == {(1, 1, pins["A4.WL1"])}


def test_measurement_through_the_roles_matches_the_device(bench):
    m1_route(bench)
    smu = bench.smu(A)
    smu.source_voltage(0.01, 1e-3)
    smu.output_on()
    g = bench.sim.bench.wafer.device("S03").m1.conductance(bench.clock.now())
    assert smu.measure().current == pytest.approx(0.01 * g, rel=0.01)


@pytest.mark.parametrize(
    "call",
    [
        lambda b: b.smu(A).source_voltage(2.0, 1e-4),  # m1 limit 1.5 V
        lambda b: b.smu(A).source_voltage(0.5, 5e-3),  # m1 current limit 1 mA
        lambda b: b.smu(A).source_current(2e-3, 1.0),
        lambda b: b.smu(A).source_voltage(float("nan"), 1e-4),
        lambda b: b.smu(A).source_voltage(0.1, 0.0),
        lambda b: b.smu(A).sweep_voltage([0.1, 1.6], 1e-4),
        lambda b: b.smu(A).sweep_voltage([], 1e-4),
        lambda b: b.smu("b1500a.1").output_on(),  # no level and compliance given
        lambda b: b.connect({A: "S09.CL1"}),  # not under the probes
        lambda b: b.connect({"k2612a.smuz": "S03.CL1"}),
        lambda b: b.connect({A: "S03.CL1", B: "S03.CL1"}),
        lambda b: b.connect({A: "S03.CL1"}, device_type="m7"),
        lambda b: b.move_to("Z9"),
    ],
)
def test_bad_request_sends_nothing(bench, call):
    m1_route(bench)
    before = sent(bench)
    with pytest.raises(LimitError):
        call(bench)
    assert sent(bench) == before


def test_forbidden_crosspoint_is_refused_before_any_io(tmp_path):
    from labpcu.benchfile import default_sim_bench_path

    text = default_sim_bench_path().read_text().replace("forbidden = []", 'forbidden = ["1101"]')
    path = tmp_path / "bench.toml"
    path.write_text(text)
    with Bench.from_file(path) as bench:
        bench.move_to("Q1")
        before = sent(bench)
        with pytest.raises(LimitError, match="1101.*forbidden"):
            bench.connect({A: "S01.WL"})
        assert sent(bench) == before
        # the matrix itself refuses it too, should anything bypass the bench
        assert bench.drivers["k3706a"].get_forbidden() == {(1, 1, 1)}


def test_relays_never_switch_under_a_live_output(bench):
    m1_route(bench, "S03")
    bench.smu(A).source_voltage(0.2, 1e-3)
    bench.smu(A).output_on()
    bench.connect({A: "S04.CL1", B: "S04.CL2"})  # outputs on: connect must turn them off first
    bench.smu(A).source_voltage(0.1, 1e-3)
    bench.smu(A).output_on()
    bench.move_to("A2")
    bench.connect({"b1500a.1": "A2.WL1", "b1500a.2": "A2.BL1"})
    bench.smu("b1500a.2").source_voltage(0, 1e-3)
    bench.smu("b1500a.2").output_on()
    bench.disconnect()
    events = bench.sim.bench.relay_events
    assert len(events) >= 8
    assert [e for e in events if e.live_outputs] == []


def test_limits_follow_the_device_type_reached(bench):
    bench.move_to("Q1")
    bench.connect({A: "S01.WL", B: "S01.CL1"})
    assert bench.smu(A).limits == (3.0, 0.01)  # diode
    bench.connect({A: "S01.CL2", B: "S01.BL"})
    assert bench.smu(A).limits == (2.0, 0.01)  # m2, and D2 in parallel with it (10 mA)
    bench.connect({A: "S01.WL", B: "S01.BL"})
    assert bench.smu(A).limits == (1.5, 0.001)  # whole path: the strictest
    assert bench.smu("b1500a.1").limits == (20.0, 0.1)  # not connected: its own (capped) range


@pytest.mark.parametrize("fault", ["late_reply", "dropped_connection", "instrument_error"])
@pytest.mark.parametrize("where", ["k2612a", "b1500a", "k3706a"])
def test_every_injected_fault_ends_in_the_safe_state(bench, fault, where):
    m1_route(bench)
    bench.connect({A: "S03.CL1", B: "S03.CL2", "b1500a.1": "S03.WL"})
    for name in (B, "b1500a.1"):  # three terminals reach M1: their compliances share its 1 mA
        bench.smu(name).source_voltage(0.0, 5e-4)
        bench.smu(name).output_on()
    bench.smu(A).source_voltage(0.01, 1e-3)
    bench.smu(A).output_on()
    assert bench.sim.bench.live_outputs()
    emu = bench.sim[where]
    if fault == "late_reply":
        emu.faults.delay_replies(60.0, count=1)
    elif fault == "dropped_connection":
        emu.faults.drop_connection(count=1)
    else:
        emu.inject_error(-240, "Hardware error")
    work = {
        "k2612a": lambda: bench.smu(A).source_voltage(0.02, 1e-3),
        "b1500a": lambda: bench.smu("b1500a.1").source_voltage(0.0, 5e-4),
        "k3706a": lambda: bench.connect({A: "S03.CL1", B: "S03.CL2"}),
    }[where]
    with pytest.raises((InstrumentCommunicationError, InstrumentError)) as err:
        with bench.guard():
            work()
    if fault == "instrument_error":
        assert "Hardware error" in str(err.value)
    assert_safe(bench)


def test_stuck_relay_still_ends_with_every_output_off(bench):
    m1_route(bench)
    bench.sim.bench.stick_relay((1, 1, 11), closed=True)
    bench.smu(A).source_voltage(0.01, 1e-3)
    bench.smu(A).output_on()
    with pytest.raises(SafeStateError, match="relay 1111 is welded"):
        bench.safe_state()  # the weld is found: its row conducts with the relay open
    assert bench.sim.bench.live_outputs() == []
    assert (1, 1, 11) in bench.sim.bench.physically_closed()  # welded: only outputs-off makes it safe
    assert [e for e in bench.sim.bench.relay_events if e.live_outputs] == []
    before = sent(bench)
    with pytest.raises(LimitError, match="welded"):  # nothing connects through a welded matrix
        bench.connect({A: "S03.CL1", B: "S03.CL2"})
    assert sent(bench) == before


def test_bench_file_model_must_match_the_instrument(tmp_path):
    from labpcu.benchfile import default_sim_bench_path

    text = default_sim_bench_path().read_text().replace('model = "2612A"', 'model = "2602B"')
    path = tmp_path / "bench.toml"
    path.write_text(text)
    bench = Bench.from_file(path)  # the simulator builds a 2602B: it matches
    assert bench.drivers["k2612a"].model == "2602B"
    bench.close()
