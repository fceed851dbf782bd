"""The provider sandbox as the bench runs it, in its own process.

    python bench/sandbox_proc.py PORT REPEAT_SHARE

The sandbox unchanged, plus what the load phase needs from the outside:
- a share of callbacks delivered twice (REPEAT_SHARE, 0..1), the repeat a little later and,
  for Twilio, with the same idempotency token, as a provider's retry of one delivery;
- the send time of every Twilio participant-join callback (the bridge starts there), and
  when our webhook answered it;
- control routes under /_sandbox/bench/ (not recorded as provider requests): its
  providers' environment (the Telnyx public key is made per process), the joins,
  filtered arrivals, a count of the requests the provider made to us, and a clear between
  load steps, so the sandbox's lists stay small.
"""

from __future__ import annotations

import random
import sys
import time
from pathlib import Path
from typing import Any

from flask import Response, jsonify, request

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from sandbox import Sandbox
from sandbox.server import ThreadedServer


class BenchSandbox(Sandbox):
    def __init__(self, repeat_share: float) -> None:
        super().__init__()
        self.repeat_share = repeat_share
        self.joins: list[dict[str, Any]] = []
        self.repeated = 0
        self._add_routes()

    def deliver(self, delay: float, send: Any) -> None:
        super().deliver(delay, send)
        if self.repeat_share and random.random() < self.repeat_share:
            with self.lock:
                self.repeated += 1
            super().deliver(delay + random.uniform(0.05, 0.3), send)

    def send_twilio_callback(self, url: str, params: dict[str, str],
                             idempotency_token: str | None = None) -> int:
        t0 = time.time()
        status = super().send_twilio_callback(url, params, idempotency_token)
        if params.get("StatusCallbackEvent") == "participant-join":
            with self.lock:
                self.joins.append({"conference": params.get("FriendlyName", ""),
                                   "call_sid": params.get("CallSid", ""), "sent": t0,
                                   "answered": time.time(), "status": status})
        return status

    def _add_routes(self) -> None:
        app = self.app

        def joins() -> Response:
            with self.lock:
                return jsonify(list(self.joins))

        def arrivals() -> Response:
            contains = request.args.get("contains", "")
            with self.lock:
                return jsonify([{"method": r.method, "path": r.path, "at": r.at}
                                for r in self.requests if contains in r.path])

        def counts() -> Response:
            with self.lock:
                by_status: dict[str, int] = {}
                for d in self.deliveries:
                    by_status[str(d.status)] = by_status.get(str(d.status), 0) + 1
                return jsonify({"deliveries": len(self.deliveries), "by_status": by_status,
                                "api_requests": len(self.requests),
                                "repeated": self.repeated})

        def clear() -> Response:
            with self.lock:
                self.requests.clear()
                self.deliveries.clear()
                self.joins.clear()
                self.repeated = 0
                ended = [sid for sid, c in self.calls.items() if c.status not in
                         ("queued", "ringing", "in-progress")]
                for sid in ended:
                    del self.calls[sid]
            return jsonify({"ok": True})

        def env() -> Response:
            # The Telnyx model's key pair is made in this process: the service needs its
            # public key (and the other providers' settings) pointed at this sandbox.
            return jsonify(self.env(request.host_url.rstrip("/")))

        app.add_url_rule("/_sandbox/bench/env", "bench_env", env)
        app.add_url_rule("/_sandbox/bench/joins", "bench_joins", joins)
        app.add_url_rule("/_sandbox/bench/arrivals", "bench_arrivals", arrivals)
        app.add_url_rule("/_sandbox/bench/counts", "bench_counts", counts)
        app.add_url_rule("/_sandbox/bench/clear", "bench_clear", clear, methods=["POST"])


def main() -> None:
    port, share = int(sys.argv[1]), float(sys.argv[2])
    sb = BenchSandbox(share)
    server = ThreadedServer(sb.app, port=port)
    try:
        server.server.serve_forever()
    finally:
        sb.stop()


if __name__ == "__main__":
    main()
