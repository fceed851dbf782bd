from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from shared.config import Settings
from shared.contracts import parse_request
from shared.store import State, Store, flag_key
from tests.helpers import make_request


def _req(store: Store, **kw: object):  # type: ignore[no-untyped-def]
    return parse_request(make_request(**kw), store.get_number)  # type: ignore[arg-type]


def test_begin_creates_record_claim_index_and_deadline(store: Store, settings: Settings) -> None:
    req = _req(store, lead_id="L1", call_id="CA1")
    assert store.begin(req, now=1000.0) == ("created", "requested")
    rec = store.get_transfer(req.transfer_id)
    assert rec is not None
    assert rec["state"] == "requested" and rec["transfer_number"] == "+14155550101"
    assert store.active_transfer("L1") == req.transfer_id
    assert store.transfer_for_call("twilio", "CA1") == req.transfer_id
    assert store.lead_status("L1")["status"] == "requested"  # type: ignore[index]
    score = store.r.zscore(Store.DEADLINES, req.transfer_id)
    assert score == 1000.0 + settings.deadline_seconds
    for key in (Store.record_key(req.transfer_id), Store.active_key("L1"),
                Store.lead_key("L1"), Store.DEADLINES):
        assert store.r.ttl(key) > 0, key
    # the flag is the worker's to set
    assert store.get_flag("L1") is None


def test_begin_refuses_second_transfer_for_same_lead(store: Store) -> None:
    first = _req(store, lead_id="L1")
    second = _req(store, lead_id="L1")
    store.begin(first)
    assert store.begin(second) == ("busy", first.transfer_id)
    assert store.begin(first) == ("exists", "requested")


def test_begin_same_request_id_is_a_duplicate(store: Store) -> None:
    a = _req(store, lead_id="L1", request_id="r-1")
    b = _req(store, lead_id="L2", request_id="r-1")
    store.begin(a)
    assert store.begin(b) == ("duplicate", a.transfer_id)


def test_terminal_transition_is_final_and_clears_flag_and_claim(store: Store) -> None:
    req = _req(store, lead_id="L1")
    store.begin(req)
    assert store.set_flag("L1", req.transfer_number)
    assert store.r.ttl(flag_key("L1")) == 300
    assert store.transition(req.transfer_id, State.DIALING, "dial").ok
    done = store.transition(req.transfer_id, State.FAILED, "busy", fields={"reason": "busy"},
                            now=5000.0)
    assert done.ok and done.previous == "dialing"
    again = store.transition(req.transfer_id, State.SUCCEEDED, "late")
    assert not again.ok and again.previous == "failed"
    assert store.get_flag("L1") is None
    assert store.active_transfer("L1") is None
    # kept in the sweep as the outbox until its event is marked sent
    assert store.r.zscore(Store.DEADLINES, req.transfer_id) == 5000.0 + Store.OUTBOX_DELAY
    store.mark_event_sent(req.transfer_id)
    assert store.r.zscore(Store.DEADLINES, req.transfer_id) is None
    lead = store.lead_status("L1")
    assert lead is not None and lead["status"] == "failed" and lead["reason"] == "busy"
    states = [e.get("state") for e in store.timeline(req.transfer_id)]
    assert states == ["requested", "dialing", "failed"]


def test_transition_respects_from_states(store: Store) -> None:
    req = _req(store)
    store.begin(req)
    res = store.transition(req.transfer_id, State.SUCCEEDED, "x", from_states=(State.BRIDGING,))
    assert not res.ok and res.previous == "requested"
    assert store.get_transfer(req.transfer_id)["state"] == "requested"  # type: ignore[index]


def test_terminal_of_old_transfer_does_not_clear_a_newer_claim(store: Store) -> None:
    old = _req(store, lead_id="L1")
    store.begin(old)
    store.r.delete(Store.active_key("L1"))  # old claim expired
    new = _req(store, lead_id="L1")
    assert store.begin(new)[0] == "created"
    store.set_flag("L1", new.transfer_number)
    store.transition(old.transfer_id, State.FAILED, "late timeout")
    assert store.active_transfer("L1") == new.transfer_id
    assert store.get_flag("L1") == new.transfer_number


def test_flag_set_nx(store: Store) -> None:
    assert store.set_flag("L9", "+14155550101")
    assert store.set_flag("L9", "+14155550101")  # same number: a redelivery
    assert not store.set_flag("L9", "+14155550102")


def test_claim_due_leases_each_transfer_once(store: Store) -> None:
    req = _req(store)
    store.begin(req, now=0.0)
    assert store.claim_due(now=10.0) == []
    due_at = 0.0 + store.settings.deadline_seconds
    assert store.claim_due(now=due_at + 1) == [req.transfer_id]
    assert store.claim_due(now=due_at + 2) == []  # leased
    assert store.claim_due(now=due_at + 40) == [req.transfer_id]  # lease ran out


def test_number_directory(store: Store) -> None:
    store.set_number("sales", "+14155550111")
    assert store.get_number("sales") == "+14155550111"
    assert store.list_numbers()["sales"] == "+14155550111"
    assert store.delete_number("sales")
    assert store.get_number("sales") is None


def test_claim_once(store: Store) -> None:
    assert store.claim_once("x")
    assert not store.claim_once("x")
    store.release_once("x")
    assert store.claim_once("x")


_steps = st.lists(st.tuples(st.integers(0, 5), st.sampled_from(
    ["busy", "no_answer", "declined", "voicemail"])), max_size=12)


@settings(max_examples=150, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(n=st.integers(1, 5), steps=_steps, ended_after=st.one_of(st.none(), st.integers(0, 12)))
def test_moving_down_the_destinations_matches_a_model(store: Store, n: int,
                                                      steps: list[tuple[int, str]],
                                                      ended_after: int | None) -> None:
    """Any sequence of 'destination k not reached' reports (duplicates, stale ones, out of
    order) moves one step at a time; the flag is always the current destination's number."""
    store.r.flushdb()
    numbers = [f"+1415555{200 + i:04d}" for i in range(n)]
    raw = make_request(lead_id="L1", transfer_number=None)
    raw["template"]["configurations"] = {"transfer_numbers": numbers}
    req = parse_request(raw, lambda _: "+14155550199")
    store.begin(req)
    store.set_flag("L1", numbers[0])
    store.transition(req.transfer_id, State.DIALING, "dialing")
    current, outcomes = 0, []
    for i, (seen, outcome) in enumerate(steps):
        if ended_after == i:
            store.transition(req.transfer_id, State.FAILED, "ended")
        result = store.advance_destination(req.transfer_id, seen, outcome)
        if ended_after is not None and i >= ended_after:
            assert result == ("final", -1, "")
            continue
        if seen < current:
            assert result == ("stale", current, numbers[current])
        elif current + 1 >= n:
            assert result == ("last", current, "")
        else:
            outcomes.append(outcome)
            current += 1
            assert result == ("next", current, numbers[current])
            assert store.get_flag("L1") == numbers[current]
    attempt, tried, listed = store.destinations_tried(req.transfer_id)
    if ended_after is None or ended_after >= len(steps):
        assert (attempt, tried, listed) == (current, outcomes, numbers)
