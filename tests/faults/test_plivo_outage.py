"""Plivo with Redis (the store and the broker) down while Dials end: the routes whose XML
steers the call answer from their signed URLs, so no customer is hung up, and every
transfer still ends in exactly one terminal event once Redis is back."""

from __future__ import annotations

import time
from collections import Counter

from tests.faults.test_faults import DEADLINE, begin, settle
from tests.stack import Services

OUTAGE = 6.0


def test_plivo_dial_actions_during_a_redis_outage_hang_up_nobody(services: Services) -> None:
    s = services
    resume = s.settings.plivo_resume_url
    fates = ["busy:2", "no-answer:2.5", "answer-after:2"] * 2
    started = [(fate, *begin(s, "plivo", fate)) for fate in fates]
    deadline = time.monotonic() + 10
    while not all((s.store.get_transfer(t) or {}).get("dial_up_served")
                  for *_, t in started):
        assert time.monotonic() < deadline, "dial-ups not served"
        time.sleep(0.05)
    redis_server = s.redis_server
    assert redis_server.proc is not None
    redis_server.proc.terminate()
    redis_server.proc.wait(10)
    try:
        time.sleep(OUTAGE)  # every Dial ends (busy, no answer) or is answered meanwhile
        calls = {call_id: s.sandbox.calls[call_id] for _, _, call_id, _, _ in started}
        for fate, _, call_id, _, _ in started:
            call = calls[call_id]
            # Nobody hung up by us: the unreached went back to the AI, the rest are bridged.
            assert call.status == "in-progress", (fate, call.status, call.spoken)
            if not fate.startswith("answer"):
                assert call.redirects == [resume], (fate, call.redirects, call.spoken)
    finally:
        redis_server.start()
    if not any(w.poll() is None for w in s.workers):
        s.start_worker()  # (a worker that gave up on the broker: issue 13, elsewhere)
    counts = settle(s, [t for *_, t in started], timeout=DEADLINE + 40)
    outcomes = Counter((s.terminal(t)["type"], s.terminal(t).get("reason"))
                       for t in counts if counts[t])
    print(f"\nplivo, redis down {OUTAGE:.0f} s while dials ended: {dict(outcomes)}")
    assert set(counts.values()) == {1}
