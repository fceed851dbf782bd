"""The benchmark: our overhead against the floor of the stack, measured in one run.

    python3 scripts/dev.py bench [--quick]

Starts a real Redis, the provider sandbox (its own process), the webhook app under
gunicorn, Celery workers, and the baselines (a no-op-plus-POST Celery task; a bare Flask
route doing one Redis GET under the same gunicorn settings). Prints a table and writes
bench/results.json. Not part of the test suite.

The load phase (bench/load.py): N transfers/s per provider with every callback the sandbox
sends, CPU per transfer per process tree, the bridge under load, and the highest rate with
bridge p99 < 25 ms for 1, 2 and 4 worker processes. `--profile DIR` runs only the Twilio
load under py-spy (bench/profile.py).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable
from contextlib import ExitStack
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import redis
import requests
from celery import Celery
from plivo.utils.signature_v3 import construct_post_url, get_signature_v3
from twilio.request_validator import RequestValidator

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.load import HANGUP_AFTER, RING, CpuWindow, load_phase, max_rate  # noqa: E402
from providers import accounts  # noqa: E402
from sandbox import Sandbox  # noqa: E402
from sandbox.redis_server import RedisServer, free_port  # noqa: E402
from shared.client import TransferClient  # noqa: E402
from shared.config import Settings  # noqa: E402
from shared.store import Store  # noqa: E402

OUTBOUND = "+14155550199"


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q * len(ordered)) - 1))]


def summary(ms: list[float]) -> dict[str, float]:
    return {"n": len(ms), "p50_ms": pct(ms, 0.50), "p95_ms": pct(ms, 0.95),
            "p99_ms": pct(ms, 0.99)}


def rss_kib(pid: int) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


def children(pid: int) -> list[int]:
    out = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1]) == pid:
                    out.append(int(entry.name))
            except (OSError, ValueError, IndexError):
                pass
    return out


def memory(proc: subprocess.Popen[bytes]) -> dict[str, int]:
    kids = children(proc.pid)
    return {"main_mib": rss_kib(proc.pid) // 1024,
            "child_mib": max((rss_kib(k) for k in kids), default=0) // 1024,
            "total_mib": (rss_kib(proc.pid) + sum(rss_kib(k) for k in kids)) // 1024}


def _pid(proc: subprocess.Popen[bytes]) -> Callable[[], int]:
    return lambda: proc.pid


def _fixed(proc: subprocess.Popen[bytes]) -> Callable[[], subprocess.Popen[bytes]]:
    return lambda: proc


class Peak(threading.Thread):
    """Samples a process tree's memory while a load runs; keeps the peak."""

    def __init__(self, proc: Callable[[], subprocess.Popen[bytes]]) -> None:
        super().__init__(daemon=True)
        # A getter: the process may be replaced while the load runs (the scaling steps).
        self.proc, self.peak, self.done = proc, {"main_mib": 0, "child_mib": 0,
                                                 "total_mib": 0}, threading.Event()

    def run(self) -> None:
        while not self.done.wait(0.2):
            now = memory(self.proc())
            self.peak = {k: max(v, now[k]) for k, v in self.peak.items()}


class Bench:
    def __init__(self, stack: ExitStack, quick: bool, repeat_share: float = 0.1) -> None:
        self.stack, self.quick = stack, quick
        self.redis = stack.enter_context(RedisServer())
        self.sandbox_port, self.web_port, self.bare_port = free_port(), free_port(), free_port()
        self.sandbox_url = f"http://127.0.0.1:{self.sandbox_port}"
        self.web_url = f"http://127.0.0.1:{self.web_port}"
        sb = Sandbox()  # only for its credentials; the served one runs in its own process
        sb.stop()
        ours = {n.upper() for n in Settings.model_fields} | accounts.setting_names()
        self.env = {k: v for k, v in os.environ.items() if k.upper() not in ours}
        self.env.update({
            "PYTHONPATH": str(ROOT), "REDIS_URL": self.redis.url, "LOG_LEVEL": "WARNING",
            "PUBLIC_BASE_URL": self.web_url, "API_TOKEN": "bench",
            "TRANSFER_HOME_COUNTRY": "US",  # the requests carry no outbound_number_id
            # The Exotel case transfers to an Indian number: the home-country default
            # refused them all (destination_not_allowed; the step showed 200 "missing").
            "TRANSFER_ALLOWED_DESTINATIONS": "US,IN",
            "TWILIO_ACCOUNT_SID": sb.twilio_account_sid,
            "TWILIO_AUTH_TOKEN": sb.twilio_auth_token, "TWILIO_API_BASE_URL": self.sandbox_url,
            "PLIVO_AUTH_ID": sb.plivo_auth_id, "PLIVO_AUTH_TOKEN": sb.plivo_auth_token,
            "PLIVO_API_BASE_URL": self.sandbox_url, "WEB_CONCURRENCY": "2",
            "PLIVO_RESUME_URL": f"{self.sandbox_url}/_sandbox/plivo/resume",
            "EXOTEL_ACCOUNT_SID": sb.exotel_account_sid, "EXOTEL_API_KEY": sb.exotel_api_key,
            "EXOTEL_API_TOKEN": sb.exotel_api_token, "EXOTEL_API_BASE_URL": self.sandbox_url,
            "EXOTEL_WEBHOOK_TOKEN": "bench-exotel-secret"})
        self.http = requests.Session()
        # The sandbox with a share of callbacks delivered twice (bench/sandbox_proc.py).
        self.sandbox = self.spawn([sys.executable, str(ROOT / "bench" / "sandbox_proc.py"),
                                   str(self.sandbox_port), str(repeat_share)])
        self.wait_http(f"{self.sandbox_url}/_sandbox/requests")
        sandbox_env = self.http.get(f"{self.sandbox_url}/_sandbox/bench/env", timeout=10).json()
        self.env.update({k: v for k, v in sandbox_env.items() if k.startswith("TELNYX_")})
        self.settings = Settings.model_validate(
            # The provider packages' variables too (read as Settings' undeclared values).
            {k.lower(): v for k, v in self.env.items()
             if k.lower() in Settings.model_fields or k.upper() in ours})
        self.store = Store.from_settings(self.settings)
        self.client = TransferClient(self.settings, store=self.store)
        self.web = self.gunicorn("webhooks.wsgi:app", self.web_port)
        self.bare = self.gunicorn("bench.baseline:bare", self.bare_port)
        self.wait_http(f"{self.sandbox_url}/_sandbox/requests")
        self.wait_http(f"{self.web_url}/healthz")
        self.worker = self.start_worker(2)
        self.baseline_worker = self.spawn(
            [sys.executable, "-m", "celery", "-A", "bench.baseline", "worker", "-Q", "bench",
             "--concurrency", "2", "--without-gossip", "--without-mingle",
             "--loglevel", "WARNING"])
        self.baseline_app = Celery("bench_client", broker=self.redis.url, set_as_current=False)
        self.wait_worker("bench.post")

    def spawn(self, argv: list[str]) -> subprocess.Popen[bytes]:
        proc = subprocess.Popen(argv, cwd=ROOT, env=self.env, stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL, start_new_session=True)
        self.stack.callback(self.stop, proc)
        return proc

    @staticmethod
    def stop(proc: subprocess.Popen[bytes]) -> None:
        if proc.poll() is None:
            os.killpg(proc.pid, 15)
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, 9)
                proc.wait()

    def gunicorn(self, app: str, port: int) -> subprocess.Popen[bytes]:
        # The same settings for ours and the baseline.
        return self.spawn([sys.executable, "-m", "gunicorn", "-c",
                           "python:webhooks.gunicorn_conf", "--bind", f"127.0.0.1:{port}",
                           "--workers", "2", app])

    def start_worker(self, concurrency: int) -> subprocess.Popen[bytes]:
        proc = self.spawn([sys.executable, "-m", "celery", "-A", "workers.celery_app",
                           "worker", "-Q", "transfers", "--concurrency", str(concurrency),
                           "--without-gossip", "--without-mingle", "--loglevel", "WARNING"])
        self.wait_worker("warm_transfer.request")
        return proc

    def wait_http(self, url: str) -> None:
        for _ in range(300):
            try:
                if self.http.get(url, timeout=1).status_code < 500:
                    return
            except requests.RequestException:
                pass
            time.sleep(0.1)
        raise RuntimeError(f"{url} did not come up")

    def wait_worker(self, task: str) -> None:
        probe = Celery("probe", broker=self.redis.url, set_as_current=False)
        for _ in range(120):
            registered = probe.control.inspect(timeout=0.5).registered() or {}
            if any(task in tasks for tasks in registered.values()):
                return
        raise RuntimeError(f"no worker with {task}")

    # sandbox helpers
    def arrivals(self, contains: str) -> dict[str, float]:
        rows = self.http.get(f"{self.sandbox_url}/_sandbox/requests", timeout=30).json()
        return {r["path"]: r["at"] for r in rows if contains in r["path"]}

    def customer_call(self, lead: str) -> str:
        return str(self.http.post(f"{self.sandbox_url}/_sandbox/calls", timeout=5, json={
            "provider": "twilio",
            "status_callback": f"{self.web_url}/twilio/status?lead_id={lead}"}).json()["call_id"])

    def set_fate(self, number: str, fate: str) -> None:
        self.http.put(f"{self.sandbox_url}/_sandbox/fates/{number}", json={"fate": fate},
                      timeout=5)

    def request(self, lead: str, call_id: str, number: str, provider: str = "twilio"
                ) -> tuple[float, dict[str, Any]]:
        result = self.client.connect_to_live_agent({
            "lead_id": lead, "provider": provider, "call_id": call_id,
            "template": {"configurations": {"transfer_number": number}},
            "lead": {"outbound_number": OUTBOUND}})
        return time.time(), result


def measure_handoff(b: Bench, n: int, gap: float = 0.02
                    ) -> tuple[list[float], list[tuple[str, str, str]]]:
    """connect_to_live_agent() returned -> the dial request arrived at the provider."""
    number = "+14155550142"
    b.set_fate(number, "ignore")  # no callbacks: only the handoff is measured
    sent: dict[str, float] = {}
    made = []
    for _ in range(n):
        lead = f"bench-{uuid.uuid4().hex[:12]}"
        call_id = b.customer_call(lead)
        t0, result = b.request(lead, call_id, number)
        assert result["status"] == "transfer_requested", result
        sent[lead] = t0
        made.append((lead, call_id, str(result["transfer_id"])))
        time.sleep(gap)
    time.sleep(1.0)
    arrived = b.arrivals("/Participants.json")
    lat = [(arrived[p] - sent[lead]) * 1000 for lead in sent
           for p in [f"/2010-04-01/Accounts/AC{'0' * 32}/Conferences/transfer-{lead}/"
                     "Participants.json"] if p in arrived]
    return lat, made


def measure_baseline(b: Bench, n: int, gap: float = 0.02) -> list[float]:
    """The floor: a Celery task that only POSTs to the provider, from publish to arrival."""
    sent = {}
    for i in range(n):
        key = uuid.uuid4().hex
        b.baseline_app.send_task("bench.post", kwargs={"url": f"{b.sandbox_url}/_bench/{key}"},
                                 queue="bench")
        sent[f"/_bench/{key}"] = time.time()
        time.sleep(gap)
        del i
    time.sleep(1.0)
    arrived = b.arrivals("/_bench/")
    return [(arrived[p] - t) * 1000 for p, t in sent.items() if p in arrived]


def measure_bridge_floor(b: Bench, n: int, gap: float = 0.02) -> list[float]:
    """The floor of the bridge path: a bare webhook that enqueues, a hop, one POST."""
    sent = {}
    for _ in range(n):
        key = uuid.uuid4().hex
        t0 = time.time()
        b.http.post(f"http://127.0.0.1:{b.bare_port}/bare-enqueue", timeout=5,
                    data={"url": f"{b.sandbox_url}/_bench/{key}"})
        sent[f"/_bench/{key}"] = t0
        time.sleep(gap)
    time.sleep(1.0)
    arrived = b.arrivals("/_bench/")
    return [(arrived[p] - t) * 1000 for p, t in sent.items() if p in arrived]


def measure_bridge(b: Bench, made: list[tuple[str, str, str]], gap: float = 0.02) -> list[float]:
    """The human-joined callback reaches our webhook -> the customer-update request arrives."""
    validator = RequestValidator(b.settings.twilio_auth_token)
    sent = {}
    for lead, call_id, tid in made:
        rec = b.store.get_transfer(tid) or {}
        agent = rec.get("agent_call_sid")
        if not agent:
            continue
        url = f"{b.web_url}/twilio/conference?{urlencode({'transfer_id': tid})}"
        params = {"StatusCallbackEvent": "participant-join", "CallSid": agent,
                  "ConferenceSid": "CF1", "FriendlyName": f"transfer-{lead}"}
        headers = {"X-Twilio-Signature": validator.compute_signature(url, params)}
        t0 = time.time()
        b.http.post(url, data=params, headers=headers, timeout=5)
        sent[call_id] = t0
        time.sleep(gap)
    time.sleep(1.0)
    arrived = b.arrivals("/Calls/")
    return [(arrived[p] - sent[c]) * 1000 for c in sent
            for p in [f"/2010-04-01/Accounts/AC{'0' * 32}/Calls/{c}.json"] if p in arrived]


def measure_plivo_agent_first_bridge(b: Bench, n: int, gap: float = 0.02) -> list[float]:
    """Plivo agent first, measured as the Twilio bridge is: the accepted human's conference
    `enter` callback reaches our webhook -> the customer's calls.transfer arrives. The
    human's leg never answers (fate ignore): its enter callback is ours to send."""
    number = "+14155550143"
    b.set_fate(number, "ignore")
    token = b.settings.plivo_auth_token.encode()
    made = []
    for _ in range(n):
        lead = f"bench-af-{uuid.uuid4().hex[:12]}"
        call_id = str(b.http.post(f"{b.sandbox_url}/_sandbox/calls", timeout=5, json={
            "provider": "plivo"}).json()["call_id"])
        result = b.client.connect_to_live_agent({
            "lead_id": lead, "provider": "plivo", "call_id": call_id,
            "template": {"configurations": {"transfer_number": number,
                                            "handoff": "agent_first"}},
            "lead": {"outbound_number": OUTBOUND}})
        assert result["status"] == "transfer_requested", result
        made.append((call_id, str(result["transfer_id"])))
    time.sleep(1.0)  # every human leg placed (state dialing)
    sent = {}
    for call_id, tid in made:
        url = f"{b.web_url}/plivo/af-conference?{urlencode({'transfer_id': tid})}"
        form = {"ConferenceAction": "enter", "ConferenceName": f"transfer-{tid}",
                "ConferenceMemberID": "1", "CallUUID": str(uuid.uuid4())}
        nonce = uuid.uuid4().hex
        sig = get_signature_v3(token, construct_post_url(url, dict(form)).decode(),
                               nonce.encode()).decode()
        t0 = time.time()
        b.http.post(url, data=form, timeout=5, headers={
            "X-Plivo-Signature-V3": sig, "X-Plivo-Signature-V3-Nonce": nonce})
        sent[call_id] = t0
        time.sleep(gap)
    time.sleep(1.0)
    arrived = b.arrivals("/Call/")
    return [(arrived[p] - sent[c]) * 1000 for c in sent
            for p in [f"/v1/Account/{b.settings.plivo_auth_id}/Call/{c}/"] if p in arrived]


def loadgen(base_url: str, reqs: list[dict[str, Any]], threads: int = 8) -> dict[str, Any]:
    out = subprocess.run([sys.executable, str(ROOT / "bench" / "loadgen.py")],
                         input=json.dumps({"base_url": base_url, "requests": reqs,
                                           "threads": threads}).encode(),
                         capture_output=True, check=True, timeout=600)
    return dict(json.loads(out.stdout))


def throughput(b: Bench, n: int) -> dict[str, Any]:
    # A pending Plivo transfer for the dial-up to answer from.
    number = "+14155550143"
    b.set_fate(number, "ignore")
    lead = f"bench-plivo-{uuid.uuid4().hex[:8]}"
    call_id = str(b.http.post(f"{b.sandbox_url}/_sandbox/calls", timeout=5, json={
        "provider": "plivo"}).json()["call_id"])
    _, result = b.request(lead, call_id, number, provider="plivo")
    tid = str(result["transfer_id"])
    time.sleep(1.0)
    token = b.settings.plivo_auth_token.encode()
    dial_up = []
    # The aleg_url the worker gave Plivo (its signed context included), as Plivo fetches it.
    recorded = b.http.get(f"{b.sandbox_url}/_sandbox/requests", timeout=5).json()
    aleg = next((r["json"]["aleg_url"] for r in recorded
                 if call_id in r["path"] and (r.get("json") or {}).get("aleg_url")), "")
    path = aleg.removeprefix(b.web_url) or f"/plivo/dial-up?transfer_id={tid}"
    form = {"CallUUID": call_id, "From": "+14155550150", "To": "+14155550151",
            "CallStatus": "in-progress", "Direction": "inbound"}
    body = urlencode(form)
    for _ in range(n):
        nonce = uuid.uuid4().hex
        sig = get_signature_v3(token, construct_post_url(b.web_url + path, dict(form)).decode(),
                               nonce.encode()).decode()
        dial_up.append({"method": "POST", "path": path, "body": body, "headers": {
            "Content-Type": "application/x-www-form-urlencoded",
            "X-Plivo-Signature-V3": sig, "X-Plivo-Signature-V3-Nonce": nonce}})
    status_path = f"/twilio/agent-status?transfer_id={tid}"
    status_form = {"CallSid": "CA" + "b" * 32, "CallStatus": "ringing",
                   "AccountSid": b.settings.twilio_account_sid}
    sig = RequestValidator(b.settings.twilio_auth_token).compute_signature(
        b.web_url + status_path, status_form)
    status = [{"method": "POST", "path": status_path, "body": urlencode(status_form),
               "headers": {"Content-Type": "application/x-www-form-urlencoded",
                           "X-Twilio-Signature": sig}}] * n
    bare = [{"method": "POST", "path": "/bare", "body": "", "headers": {}}] * n
    results: dict[str, Any] = {}
    for name, base, reqs, proc in (("bare route (1 Redis GET)", f"http://127.0.0.1:{b.bare_port}",
                                    bare, b.bare),
                                   ("/plivo/dial-up", b.web_url, dial_up, b.web),
                                   ("/twilio/agent-status", b.web_url, status, b.web)):
        loadgen(base, reqs[: min(300, n)])  # warm up
        peak = Peak(_fixed(proc))
        peak.start()
        window = CpuWindow({"server": _pid(proc)}).start()
        results[name] = loadgen(base, reqs)
        cpu = window.stop()
        peak.done.set()
        peak.join()
        results[name]["memory_peak"] = peak.peak
        # CPU of the server's process tree (gunicorn master + workers) per request.
        results[name]["cpu_ms_per_request"] = cpu["cpu_s"]["server"] * 1000 / len(reqs)
    return results


def scaling(b: Bench, rates: list[int], seconds: float) -> dict[str, Any]:
    """Sustained transfers/s per worker process count, until p99 handoff passes 100 ms."""
    out: dict[str, Any] = {}
    number = "+14155550144"
    b.set_fate(number, "ignore")
    for concurrency in (1, 2, 4):
        Bench.stop(b.worker)
        # The unanswered transfers of the previous step would all reach their deadline
        # during this one: the sweep's expire tasks are not what is measured here.
        redis.Redis.from_url(b.redis.url).delete("wt:deadlines")
        b.worker = b.start_worker(concurrency)
        measure_handoff(b, 10 * concurrency, gap=0.0)  # warm every pool process
        best, rows = 0, []
        for rate in rates:
            sent: dict[str, float] = {}
            calls = [(f"bench-{uuid.uuid4().hex[:12]}",) for _ in range(int(rate * seconds))]
            call_ids = {lead: b.customer_call(lead) for (lead,) in calls}
            start = time.perf_counter()
            for i, (lead,) in enumerate(calls):
                due = start + i / rate
                delay = due - time.perf_counter()
                if delay > 0:
                    time.sleep(delay)
                t0, _ = b.request(lead, call_ids[lead], number)
                sent[lead] = t0
            achieved = len(calls) / (time.perf_counter() - start)
            time.sleep(1.5)
            arrived = b.arrivals("/Participants.json")
            lat = [(arrived[p] - sent[lead]) * 1000 for lead in sent
                   for p in [f"/2010-04-01/Accounts/AC{'0' * 32}/Conferences/transfer-{lead}/"
                             "Participants.json"] if p in arrived]
            p99 = pct(lat, 0.99) if lat else float("inf")
            rows.append({"offered_per_s": rate, "achieved_per_s": round(achieved, 1),
                         "p99_ms": round(p99, 1), "arrived": len(lat), "sent": len(sent)})
            if p99 > 100 or len(lat) < len(sent):
                break
            best = rate
        out[str(concurrency)] = {"max_rate_p99_under_100ms": best, "steps": rows}
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="fewer samples")
    parser.add_argument("--out", default=str(ROOT / "bench" / "results.json"))
    parser.add_argument("--rate", type=float, default=20.0,
                        help="transfers/s of the load phase (default 20)")
    parser.add_argument("--repeat-share", type=float, default=0.1,
                        help="share of callbacks the sandbox delivers twice (default 0.1)")
    parser.add_argument("--profile", metavar="DIR",
                        help="only profile the web and worker processes with py-spy under the "
                             "load phase; write the stacks and a summary to DIR")
    parser.add_argument("--load-only", action="store_true",
                        help="only the load phase's CPU per transfer (to compare code versions "
                             "run after run); prints it, writes nothing")
    args = parser.parse_args()
    n = 100 if args.quick else 300
    started = time.monotonic()
    with ExitStack() as stack:
        print("starting redis, sandbox, gunicorn (ours and bare), workers ...", flush=True)
        b = Bench(stack, args.quick, args.repeat_share)
        time.sleep(1)
        if args.profile:
            from bench.profile import profile

            return profile(b, Path(args.profile), args.rate, 6.0 if args.quick else 15.0)
        if args.load_only:
            print_load_only(load_phase(b, args.rate, 4.0 if args.quick else 10.0))
            return 0
        idle = {"worker": memory(b.worker), "web": memory(b.web)}
        # Warm-up (connections, caches), not measured.
        measure_baseline(b, 20)
        warm = measure_handoff(b, 20)[1]
        measure_bridge(b, warm)
        measure_bridge_floor(b, 20)
        baseline = measure_baseline(b, n)
        handoff, made = measure_handoff(b, n)
        bridge = measure_bridge(b, made)
        bridge_floor = measure_bridge_floor(b, n)
        af_bridge = measure_plivo_agent_first_bridge(b, n // 3)
        print("measuring webhook throughput ...", flush=True)
        tput = throughput(b, 2000 if args.quick else 6000)
        print(f"load phase: {args.rate:g} transfers/s with every callback ...", flush=True)
        worker_peak = Peak(lambda: b.worker)
        worker_peak.start()
        load = load_phase(b, args.rate, 4.0 if args.quick else 10.0)
        print("searching the highest rate with bridge p99 < 25 ms ...", flush=True)
        ceiling = max_rate(b, [5, 10, 20] if args.quick else [5, 10, 20, 30, 40],
                           2.0 if args.quick else 5.0)
        print("measuring scaling ...", flush=True)
        scale = scaling(b, [25, 50, 75, 100, 150, 200, 300] if not args.quick else [25, 50, 100],
                        2.0 if args.quick else 4.0)
        worker_peak.done.set()
        worker_peak.join()

    base, hand, brid = summary(baseline), summary(handoff), summary(bridge)
    bare = tput["bare route (1 Redis GET)"]
    results = {
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version(),
                    "platform": platform.platform()},
        "when": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "baseline_celery_hop_plus_post": base,
        "handoff": {**hand, "p99_ratio_to_baseline": hand["p99_ms"] / base["p99_ms"]},
        "bridge": {**brid, "p99_ratio_to_baseline": brid["p99_ms"] / base["p99_ms"]},
        "bridge_floor_webhook_enqueue_hop_post": summary(bridge_floor),
        "plivo_agent_first_bridge": summary(af_bridge),
        "webhooks": {name: {**r, "rps_ratio_to_bare": r["rps"] / bare["rps"]}
                     for name, r in tput.items()},
        "scaling": scale,
        "load": {"rate_per_s": args.rate, "repeat_share": args.repeat_share,
                 "ring_s": RING, "hangup_after_s": HANGUP_AFTER,
                 "web_worker_processes": {"gunicorn_workers": 2, "celery_concurrency": 2},
                 "bare_route_cpu_ms_per_request": bare["cpu_ms_per_request"],
                 **{name: with_bare_multiple(r, bare["cpu_ms_per_request"])
                    for name, r in load.items()}},
        "max_rate_bridge_p99_under_25ms": ceiling,
        "bench_seconds": round(time.monotonic() - started),
        "memory_mib": {"idle": idle,
                       "web_under_load": tput["/plivo/dial-up"]["memory_peak"],
                       "worker_under_load": worker_peak.peak},
    }
    Path(args.out).write_text(json.dumps(results, indent=2) + "\n")
    print_table(results)
    return 0


def print_load_only(load: dict[str, Any]) -> None:
    print("case | web | worker | web+worker | sandbox | redis | requests to us | busy | ended")
    for name, x in load.items():
        if isinstance(x, dict) and "cpu_ms_per_transfer" in x:
            c = x["cpu_ms_per_transfer"]
            print(f"{name} | {c['web']:.1f} | {c['worker']:.1f} | {c['web+worker']:.1f} | "
                  f"{c['sandbox']:.1f} | {c['redis']:.1f} | "
                  f"{x['provider_requests_to_us_per_transfer']:.1f} | {x['machine_busy']:.0%} | "
                  + " ".join(f"{k}:{v}" for k, v in sorted(x["states"].items())))


def with_bare_multiple(r: dict[str, Any], bare_ms: float) -> dict[str, Any]:
    """The step's CPU per transfer, also as a multiple of the bare route's CPU per request."""
    if "cpu_ms_per_transfer" not in r:
        return r
    cpu = {k: round(v, 2) for k, v in r["cpu_ms_per_transfer"].items()}
    net = {k: round(v, 2) for k, v in r.get("cpu_ms_per_transfer_net_of_idle", {}).items()}
    return {**r, "cpu_ms_per_transfer": cpu, "cpu_ms_per_transfer_net_of_idle": net,
            "cpu_in_bare_requests": {k: round(v / bare_ms, 1) for k, v in cpu.items()
                                     if k not in ("sandbox", "redis")}}


def print_table(r: dict[str, Any]) -> None:
    def row(*cells: Any) -> None:
        print("| " + " | ".join(str(c) for c in cells) + " |")

    m = r["machine"]
    print(f"\n{m['cpus']} CPUs, Python {m['python']}, {m['platform']}, {r['when']}\n")
    row("latency (ms)", "p50", "p95", "p99", "p99 / baseline")
    row("---", "---", "---", "---", "---")
    base = r["baseline_celery_hop_plus_post"]
    row("baseline: Celery hop + one POST", f"{base['p50_ms']:.2f}", f"{base['p95_ms']:.2f}",
        f"{base['p99_ms']:.2f}", "1.00")
    for name in ("handoff", "bridge"):
        x = r[name]
        row(name, f"{x['p50_ms']:.2f}", f"{x['p95_ms']:.2f}", f"{x['p99_ms']:.2f}",
            f"{x['p99_ratio_to_baseline']:.2f}")
    x = r["bridge_floor_webhook_enqueue_hop_post"]
    row("bridge floor: bare webhook + hop + POST", f"{x['p50_ms']:.2f}", f"{x['p95_ms']:.2f}",
        f"{x['p99_ms']:.2f}", f"{x['p99_ms'] / base['p99_ms']:.2f}")
    if "plivo_agent_first_bridge" in r:
        x = r["plivo_agent_first_bridge"]
        row("bridge, Plivo agent first: enter -> customer transfer", f"{x['p50_ms']:.2f}",
            f"{x['p95_ms']:.2f}", f"{x['p99_ms']:.2f}", f"{x['p99_ms'] / base['p99_ms']:.2f}")
    print()
    row("webhook (gunicorn, 2 sync workers)", "requests/s", "p50 ms", "p99 ms", "/ bare")
    row("---", "---", "---", "---", "---")
    for name, x in r["webhooks"].items():
        row(name, f"{x['rps']:.0f}", f"{x['p50_ms']:.2f}", f"{x['p99_ms']:.2f}",
            f"{x['rps_ratio_to_bare']:.2f}")
    print()
    row("worker processes", "max transfers/s with p99 handoff < 100 ms")
    row("---", "---")
    for c, x in r["scaling"].items():
        row(c, x["max_rate_p99_under_100ms"])
    print_load(r, row)
    print()
    mem = r["memory_mib"]
    row("memory (MiB RSS)", "main", "largest child", "total")
    row("---", "---", "---", "---")
    for label, x in (("worker idle", mem["idle"]["worker"]), ("web idle", mem["idle"]["web"]),
                     ("web under load", mem["web_under_load"]),
                     ("worker under load", mem["worker_under_load"])):
        row(label, x["main_mib"], x["child_mib"], x["total_mib"])



def print_load(r: dict[str, Any], row: Callable[..., None]) -> None:
    load = r.get("load")
    if not load:
        return
    bare = load["bare_route_cpu_ms_per_request"]
    print(f"\nload: {load['rate_per_s']:g} transfers/s, ring {load['ring_s']:g} s, "
          f"{load['repeat_share']:.0%} of callbacks delivered twice, 2 gunicorn workers, "
          f"2 worker processes; bare route {bare:.2f} ms CPU per request\n")
    idle = load.get("idle_cpu", {})
    if idle:
        print("idle CPU (ms/s): " + ", ".join(f"{k.removesuffix('_ms_per_s')} {v:.1f}"
                                              for k, v in idle.items()) + "\n")
    row("CPU ms per transfer (x bare request)", "web", "worker", "web + worker",
        "web + worker net of idle", "sandbox", "redis", "requests to us",
        "machine busy (ours)", "ended")
    row("---", "---", "---", "---", "---", "---", "---", "---", "---", "---")
    for name, x in load.items():
        if not isinstance(x, dict) or "cpu_ms_per_transfer" not in x:
            continue
        c, m = x["cpu_ms_per_transfer"], x["cpu_in_bare_requests"]
        row(name, f"{c['web']:.1f} ({m['web']:.0f}x)", f"{c['worker']:.1f} ({m['worker']:.0f}x)",
            f"{c['web+worker']:.1f} ({m['web+worker']:.0f}x)",
            f"{x.get('cpu_ms_per_transfer_net_of_idle', {}).get('web+worker', 0):.1f}",
            f"{c['sandbox']:.1f}", f"{c['redis']:.1f}",
            f"{x['provider_requests_to_us_per_transfer']:.1f}",
            f"{x['machine_busy']:.0%} ({x['stack_busy']:.0%})",
            " ".join(f"{k}:{v}" for k, v in sorted(x["states"].items())))
    x = load["twilio_bridged"]
    print()
    row(f"Twilio under load ({load['rate_per_s']:g}/s)", "p50 ms", "p95 ms", "p99 ms", "n")
    row("---", "---", "---", "---", "---")
    for label, key in (("bridge: join callback sent -> customer update", "bridge"),
                       ("our answer to the join callback", "join_callback_answered"),
                       ("handoff: request -> dial at the provider", "handoff")):
        s = x.get(key, {})
        if s.get("n"):
            row(label, f"{s['p50_ms']:.1f}", f"{s['p95_ms']:.1f}", f"{s['p99_ms']:.1f}", s["n"])
    print()
    row("worker processes", "max transfers/s with bridge p99 < 25 ms",
        "steps (rate: p99 ms, busy)")
    row("---", "---", "---")
    for c, x in r.get("max_rate_bridge_p99_under_25ms", {}).items():
        row(c, x["max_rate_bridge_p99_under_25ms"],
            ", ".join(f"{s['offered_per_s']:g}: {s['bridge_p99_ms']}"
                      f" ({s['bridged']}/{s['transfers']} bridged, {s['machine_busy']:.0%})"
                      for s in x["steps"]))


if __name__ == "__main__":
    raise SystemExit(main())
