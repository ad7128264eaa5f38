"""Keithley 3706A driver: message by message (expected_protocol), bad input that must
send nothing, then the same calls against the emulator in process and over TCP."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pymeasure.test import expected_protocol

from labpcu.instruments.errors import InstrumentCommunicationError, InstrumentError, LimitError
from labpcu.instruments.keithley3706a import Keithley3706A, format_channels, parse_channels
from labpcu.sim.rig import SimRig

OK = ("print(errorqueue.count)", "0.00000e+00")  # the error check after a configuration write
A, B = "k2612a.smua", "k2612a.smub"
IDN1 = "3730,6x16 High Density Matrix,01.40h,4447332"


def make_rig() -> SimRig:
    return SimRig.default(seed=0, site="Q1")


# ============================================================ (1) message by message
@pytest.mark.parametrize(
    "specs",
    [[(1, 1, 1), (1, 2, 3)], ["1101", "1203"], ((1, 1, 1), "1203"), {(1, 2, 3), (1, 1, 1)},
     [(1, 1, 1), (1, 2, 3), "1101"]],
    ids=["tuples", "names", "mixed", "set-sorted", "duplicate-dropped"],
)
def test_close_sends_one_quoted_list_then_checks_errors(specs):
    with expected_protocol(Keithley3706A, [('channel.close("1101,1203")', None), OK]) as inst:
        inst.close(specs)


def test_single_crosspoint_as_tuple_or_name():
    with expected_protocol(
        Keithley3706A,
        [('channel.close("2316")', None), OK, ('channel.close("2316")', None), OK],
    ) as inst:
        inst.close((2, 3, 16))
        inst.close("2316")


def test_open_open_all_exclusive():
    with expected_protocol(
        Keithley3706A,
        [('channel.open("1101,1102")', None), OK,
         ('channel.open("allslots")', None), OK,
         ('channel.exclusiveclose("1104,2201")', None), OK,
         ('channel.exclusiveclose("")', None), OK,
         ('channel.exclusiveslotclose("1202")', None), OK],
    ) as inst:
        inst.open([(1, 1, 1), (1, 1, 2)])
        inst.open_all()
        inst.exclusive_close([(1, 1, 4), "2201"])
        inst.exclusive_close([])
        inst.exclusive_slot_close((1, 2, 2))


@pytest.mark.parametrize(
    "reply, expected",
    [("1101;1203", {(1, 1, 1), (1, 2, 3)}), ("1101,1203", {(1, 1, 1), (1, 2, 3)}),
     ("nil", set()), ("2316", {(2, 3, 16)})],
)
def test_closed_parses_getclose(reply, expected):
    with expected_protocol(Keithley3706A, [('print(channel.getclose("allslots"))', reply)]) as inst:
        assert inst.closed() == expected


def test_closed_of_one_slot():
    with expected_protocol(Keithley3706A, [('print(channel.getclose("slot2"))', "2101;2316")]) as inst:
        assert inst.closed(slot=2) == {(2, 1, 1), (2, 3, 16)}


def test_garbled_getclose_reply_is_a_communication_error():
    with expected_protocol(Keithley3706A, [('print(channel.getclose("allslots"))', "11O1")]) as inst:
        with pytest.raises(InstrumentCommunicationError, match="11O1"):
            inst.closed()


def test_parse_channels_variants():
    assert parse_channels(" 1101 ; 2316 ") == {(1, 1, 1), (2, 3, 16)}
    assert parse_channels("3003(3033)") == {(3, 0, 3)}  # 4-pole pair: first channel
    assert parse_channels("1911") == {(1, 9, 11)}  # backplane relay
    assert parse_channels("") == set()
    assert format_channels([(1, 1, 1), (6, 6, 16)]) == "1101,6616"


VALID = st.tuples(st.integers(1, 6), st.integers(1, 6), st.integers(1, 16))


@given(st.lists(VALID, min_size=1, max_size=20))
def test_format_then_parse_round_trips(xps):
    text = format_channels(xps)
    assert all(len(item) == 4 for item in text.split(","))
    assert parse_channels(text) == set(xps)
    assert parse_channels(text.replace(",", ";")) == set(xps)


@given(VALID, st.integers(0, 2), st.integers(-100, 100))
def test_any_out_of_range_value_is_a_limit_error(xp, index, value):
    limits = ((1, 6), (1, 6), (1, 16))[index]
    bad = list(xp)
    bad[index] = value
    if limits[0] <= value <= limits[1]:
        assert format_channels(tuple(bad))
    else:
        with pytest.raises(LimitError, match=str(value)):
            format_channels(tuple(bad))


def test_forbidden_list():
    with expected_protocol(
        Keithley3706A,
        [('channel.setforbidden("1105,1106")', None), OK,
         ('print(channel.getforbidden("allslots"))', "1105,1106"),
         ('print(channel.getforbidden("slot2"))', "nil"),
         ('channel.clearforbidden("1105")', None), OK,
         ('channel.clearforbidden("allslots")', None), OK],
    ) as inst:
        inst.set_forbidden(["1105", (1, 1, 6)])
        assert inst.get_forbidden() == {(1, 1, 5), (1, 1, 6)}
        assert inst.get_forbidden(slot=2) == set()
        inst.clear_forbidden((1, 1, 5))
        inst.clear_forbidden()


@pytest.mark.parametrize("reply", ["4,0", "4.00000e+00,0.00000e+00"])
def test_close_counts(reply):
    with expected_protocol(Keithley3706A, [('print(channel.getcount("1101,1102"))', reply)]) as inst:
        assert inst.close_counts([(1, 1, 1), "1102"]) == {(1, 1, 1): 4, (1, 1, 2): 0}


def test_close_counts_with_a_missing_count_is_an_error():
    with expected_protocol(Keithley3706A, [('print(channel.getcount("1101,1102"))', "4")]) as inst:
        with pytest.raises(InstrumentCommunicationError, match="1 counts"):
            inst.close_counts([(1, 1, 1), (1, 1, 2)])


def test_card_identity_and_geometry():
    pairs = [("print(slot[1].idn)", IDN1)]
    pairs += [(f"print(slot[{n}].idn)", IDN1 if n in (1, 2) else "Empty Slot") for n in range(1, 7)]
    pairs += [("print(slot[1].rows.matrix)", "6.00000e+00"), ("print(slot[1].columns.matrix)", "1.60000e+01"),
              ("print(slot[4].rows.matrix)", "nil")]
    with expected_protocol(Keithley3706A, pairs) as inst:
        assert inst.slot_idn(1) == IDN1
        assert inst.cards() == {1: IDN1, 2: IDN1}
        assert inst.matrix_size(1) == (6, 16)
        assert inst.matrix_size(4) is None


def test_other_card_models_are_not_matrix_cards():
    pairs = [(f"print(slot[{n}].idn)", "3720,Dual 1x30 Multiplexer,01.40h,1" if n == 3 else "Empty Slot")
             for n in range(1, 7)]
    with expected_protocol(Keithley3706A, pairs) as inst:
        assert inst.cards() == {}


@pytest.mark.parametrize("rule, number", [("break_before_make", 1), ("make_before_break", 2), ("off", 0)])
def test_connect_rule(rule, number):
    with expected_protocol(
        Keithley3706A,
        [(f"channel.connectrule = {number}", None), OK,
         ("print(channel.connectrule)", f"{number:.5e}")],
    ) as inst:
        inst.connect_rule = rule
        assert inst.connect_rule == rule


def test_reset_clear_identity_shutdown():
    with expected_protocol(
        Keithley3706A,
        [("reset()", None), OK,
         ("errorqueue.clear()", None),
         ("*IDN?", "KEITHLEY INSTRUMENTS INC.,MODEL 3706A,04447336,01.56a"),
         ('channel.open("allslots")', None), OK],
    ) as inst:
        inst.reset()
        inst.clear_errors()
        assert inst.id == "KEITHLEY INSTRUMENTS INC.,MODEL 3706A,04447336,01.56a"
        inst.shutdown()
        assert inst.isShutdown


def test_errors_after_a_write_raise_with_the_instruments_text():
    with expected_protocol(
        Keithley3706A,
        [('channel.close("1105")', None),
         ("print(errorqueue.count)", "2.00000e+00"),
         ("print(errorqueue.next())",
          "-2.86000e+02\tTSP Runtime error at line 1: channel.close: forbidden channel(s) 1105\t"
          "3.00000e+01\t1.00000e+00"),
         ("print(errorqueue.next())", "-2.40000e+02\tHardware error\t3.00000e+01\t1.00000e+00")],
    ) as inst:
        with pytest.raises(InstrumentError) as info:
            inst.close("1105")
    err = info.value
    assert err.code == -286
    assert err.message.startswith("TSP Runtime error at line 1: channel.close: forbidden channel(s) 1105")
    assert "-240: Hardware error" in err.message
    assert err.instrument == "Keithley 3706A"


def test_errors_after_setting_the_connect_rule_raise():
    with expected_protocol(
        Keithley3706A,
        [("channel.connectrule = 0", None), ("print(errorqueue.count)", "1.00000e+00"),
         ("print(errorqueue.next())", "-2.22000e+02\tParameter data out of range\t3.00000e+01\t1.00000e+00")],
    ) as inst:
        with pytest.raises(InstrumentError, match="-222"):
            inst.connect_rule = "off"


def test_check_errors_returns_the_list():
    with expected_protocol(
        Keithley3706A,
        [("print(errorqueue.count)", "1.00000e+00"),
         ("print(errorqueue.next())", "-2.40000e+02\tHardware error\t3.00000e+01\t1.00000e+00"),
         OK],
    ) as inst:
        assert inst.check_errors() == [(-240, "Hardware error")]
        assert inst.check_errors() == []


# ==================================================== (2) bad input sends nothing
BAD_CALLS = {
    "slot 7": (lambda k: k.close((7, 1, 1)), LimitError, "slot 7"),
    "row 0": (lambda k: k.close((1, 0, 1)), LimitError, "row 0"),
    "column 17": (lambda k: k.close([(1, 1, 1), (1, 1, 17)]), LimitError, "column 17"),
    "name slot 7": (lambda k: k.open("7101"), LimitError, "slot 7"),
    "name column 17": (lambda k: k.close("1117"), LimitError, "column 17"),
    "bad name": (lambda k: k.close("x101"), ValueError, "'x101'"),
    "name with a list": (lambda k: k.close("1101,1102"), ValueError, "'1101,1102'"),
    "empty close": (lambda k: k.close([]), ValueError, "no crosspoints"),
    "empty open": (lambda k: k.open(()), ValueError, "no crosspoints"),
    "short tuple": (lambda k: k.close((1, 1)), ValueError, r"\(1, 1\)"),
    "float": (lambda k: k.close((1, 1.0, 1)), ValueError, "1.0"),
    "float slot": (lambda k: k.close((1.0, 1, 1)), ValueError, "slot must be an integer, got 1.0"),
    "list of lists": (lambda k: k.close([[1, 1, 1]]), ValueError, r"\[1, 1, 1\]"),
    "bool": (lambda k: k.close((True, 1, 1)), ValueError, "True"),
    "bare int": (lambda k: k.close([1101]), ValueError, "1101"),
    "exclusive": (lambda k: k.exclusive_close([(1, 1, 0)]), LimitError, "column 0"),
    "forbid": (lambda k: k.set_forbidden([(1, 7, 1)]), LimitError, "row 7"),
    "empty unforbid": (lambda k: k.clear_forbidden([]), ValueError, "no crosspoints"),
    "counts": (lambda k: k.close_counts([(0, 1, 1)]), LimitError, "slot 0"),
    "closed slot": (lambda k: k.closed(slot=7), LimitError, "slot 7"),
    "forbidden slot": (lambda k: k.get_forbidden(slot=0), LimitError, "slot 0"),
    "slot idn": (lambda k: k.slot_idn(9), LimitError, "slot 9"),
    "matrix size": (lambda k: k.matrix_size(0), LimitError, "slot 0"),
    "rule": (lambda k: setattr(k, "connect_rule", "fast"), ValueError, "fast"),
}


@pytest.mark.parametrize("case", list(BAD_CALLS))
def test_bad_input_raises_before_anything_is_sent(case):
    call, exc_type, text = BAD_CALLS[case]
    with expected_protocol(Keithley3706A, []) as inst:  # any write would fail the test
        with pytest.raises(exc_type, match=text) as info:
            call(inst)
    assert "\n" not in str(info.value)
    assert issubclass(LimitError, ValueError)


# ================================================================ (3) the emulator
@pytest.fixture
def rig():
    return make_rig()


@pytest.fixture
def k(rig):
    return Keithley3706A(rig.adapter("k3706a"))


def test_closing_routes_current(rig, k):
    k.close([(1, 1, 1), (1, 2, 3)])
    rig.bench.set_source(A, output=True, mode="v", level=0.8, limit=0.01)
    rig.bench.set_source(B, output=True, mode="v", level=0.0, limit=0.01)
    assert rig.bench.measure(A).i > 1e-6
    k.open((1, 2, 3))
    assert abs(rig.bench.measure(A).i) < 1e-9


def test_closed_matches_the_bench(rig, k):
    k.close([(1, 1, 1), "1203", (2, 6, 16)])
    k.open("1203")
    k.close((2, 1, 5))
    assert k.closed() == rig.bench.closed_relays() == {(1, 1, 1), (2, 6, 16), (2, 1, 5)}
    assert k.closed(slot=2) == {(2, 6, 16), (2, 1, 5)}
    k.exclusive_close([(1, 4, 4)])
    assert k.closed() == rig.bench.closed_relays() == {(1, 4, 4)}
    k.exclusive_close()
    assert k.closed() == rig.bench.closed_relays() == set()


def test_exclusive_close_breaks_before_it_makes(rig, k):
    k.close([(1, 1, 1), (1, 2, 2)])
    assert k.connect_rule == "break_before_make"
    rig.bench.relay_events.clear()
    k.exclusive_close((1, 3, 3))
    actions = [e.action for e in rig.bench.relay_events]
    assert actions == ["open", "open", "close"]


def test_forbidden_close_raises_and_switches_nothing(rig, k):
    k.close((2, 2, 2))
    k.set_forbidden([(1, 1, 5), (1, 1, 6)])
    assert k.get_forbidden() == {(1, 1, 5), (1, 1, 6)}
    with pytest.raises(InstrumentError) as info:
        k.close([(1, 1, 1), (1, 1, 5)])
    assert info.value.code == -286
    assert "forbidden channel(s) 1105" in info.value.message
    assert rig.bench.closed_relays() == {(2, 2, 2)}
    k.clear_forbidden((1, 1, 5))
    k.close((1, 1, 5))
    assert (1, 1, 5) in rig.bench.closed_relays()
    k.clear_forbidden()
    assert k.get_forbidden() == set()


def test_injected_error_raises_on_the_next_configuration_call(rig, k):
    k.close((1, 1, 1))
    rig["k3706a"].inject_error(-240, "Hardware error")
    with pytest.raises(InstrumentError, match="Hardware error") as info:
        k.open((1, 1, 1))
    assert info.value.code == -240
    k.close((1, 1, 2))  # the queue was drained: the next call is clean
    assert k.check_errors() == []


def test_query_that_fails_on_the_instrument_reports_its_error(k):
    # slot 3 holds no card: print() prints nothing and the error explains why
    with pytest.raises(InstrumentError, match="slot 3 holds no card"):
        k.closed(slot=3)


def test_late_reply_is_a_communication_error(rig, k):
    rig["k3706a"].faults.delay_replies(60.0)
    with pytest.raises(InstrumentCommunicationError, match="timeout"):
        k.closed()


def test_dropped_connection_is_a_communication_error(rig, k):
    rig["k3706a"].faults.drop_connection()
    with pytest.raises(InstrumentCommunicationError, match="(?i)connection"):
        k.close((1, 1, 1))
    assert rig.bench.closed_relays() == set()
    with pytest.raises(InstrumentCommunicationError):  # the session is gone for good
        k.shutdown()


def test_counts_cards_rule_and_reset(rig, k):
    for _ in range(3):
        k.close((1, 1, 1))
        k.open((1, 1, 1))
    assert k.close_counts([(1, 1, 1), (1, 1, 2)]) == {(1, 1, 1): 3, (1, 1, 2): 0}
    cards = k.cards()
    assert sorted(cards) == [1, 2] and all(v.startswith("3730,6x16") for v in cards.values())
    assert k.matrix_size(2) == (6, 16) and k.matrix_size(5) is None
    k.connect_rule = "make_before_break"
    assert k.connect_rule == "make_before_break"
    k.set_forbidden((1, 1, 9))
    k.close((1, 2, 2))
    k.reset()
    assert k.connect_rule == "break_before_make"
    assert k.get_forbidden() == set()
    assert rig.bench.closed_relays() == set()


def test_shutdown_leaves_no_relay_closed(rig, k):
    k.close([(1, 1, 1), (2, 6, 16), (1, 3, 7)])
    k.shutdown()
    assert rig.bench.closed_relays() == set()
    assert k.isShutdown


@pytest.mark.parametrize("case", ["slot 7", "bad name", "empty close", "counts", "rule"])
def test_bad_input_reaches_no_emulator(rig, k, case):
    call, exc_type, _ = BAD_CALLS[case]
    before = list(rig["k3706a"].messages_in())
    with pytest.raises(exc_type):
        call(k)
    assert rig["k3706a"].messages_in() == before
    assert rig.bench.closed_relays() == set()


# ===================================================================== (4) over TCP
@pytest.fixture
def served():
    rig = make_rig()
    server = rig.server().start()
    inst = None
    try:
        inst = Keithley3706A(server.resources()["k3706a"], visa_library="@py",
                             read_termination="\n", write_termination="\n", timeout=2000)
        yield rig, inst
    finally:
        if inst is not None:
            inst.adapter.close()
        server.stop()


def test_tcp_close_query_and_shutdown(served):
    rig, k = served
    assert "MODEL 3706A" in k.id
    k.close([(1, 1, 1), (1, 2, 3)])
    assert k.closed() == rig.bench.closed_relays() == {(1, 1, 1), (1, 2, 3)}
    k.set_forbidden("1104")
    with pytest.raises(InstrumentError, match="forbidden"):
        k.close("1104")
    k.shutdown()
    assert rig.bench.closed_relays() == set()


def test_unreachable_resource_is_a_communication_error():
    rig = make_rig()
    server = rig.server().start()
    address = server.resources()["k3706a"]
    server.stop()  # nothing listens there any more
    # pyvisa-py opens a SOCKET resource without error and fails at the first I/O with
    # a plain OSError (connection refused); other VISA libraries fail at open
    with pytest.raises(InstrumentCommunicationError, match="(?i)refused|opening"):
        k = Keithley3706A(address, visa_library="@py", timeout=500, open_timeout=500)
        k.close((1, 1, 1))
