"""Profile the web and worker processes under the load phase with py-spy.

    python3 scripts/dev.py bench --profile DIR [--quick] [--rate 20]

py-spy is not a project dependency: install it into the venv first
(`.venv/bin/pip install py-spy`). It samples every process of each tree (gunicorn master and
workers; celery main and pool processes) while Twilio transfers are bridged at the load
phase's rate, writes the folded stacks (DIR/web.txt, DIR/worker.txt; flamegraph.pl or
speedscope read them) and prints the functions that cost the most, per bridged transfer.
"""

from __future__ import annotations

import json
import re
import shutil
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from bench.run import Bench

RATE_HZ = 100
_LINE = re.compile(r" \((.*?):\d+\)$")


def _frame_key(frame: str) -> str:
    """"fn (path/to/mod.py:12)" -> "fn (to/mod.py)": one row per function, short path."""
    m = _LINE.search(frame)
    if not m:
        return frame
    path = m.group(1)
    for marker in ("site-packages/", "python3.11/", "wt-bench/", "main/"):
        if marker in path:
            path = path.split(marker, 1)[1]
            break
    return f"{frame[:m.start()]} ({path})"


# Leaves where a sampled thread waits rather than computes (py-spy's --gil keeps most
# of them out; these are the ones that hold the GIL around a blocking call).
IDLE_LEAVES = ("Condition.wait", "Event.wait", "_epoll.poll", "select", "poll",
               "Connection._recv", "socket.accept", "sleep", "SocketIO.readinto",
               "_HiredisParser.read_from_socket", "wait")
OURS = ("shared/", "workers/", "webhooks/")
# Library calls worth a row of their own (inclusive): where our code hands work to them.
ENTRY_POINTS = (
    # web: the request, the HTTP server, the signature, the publish
    "SyncWorker.handle_request", "Flask.wsgi_app", "Flask.full_dispatch_request",
    "Logger.access", "Request.__init__", "Request.form", "RequestValidator.validate",
    "Celery.send_task", "AMQP.as_task_v2", "saferepr", "Producer.publish", "Channel._put",
    # Redis: a new redis.Redis object (kombu builds one per operation outside a pool context)
    "Channel._create_client", "Redis.__init__", "Redis.execute_command", "Pipeline.execute",
    "Script.__call__",
    # worker: receiving a message, running a task, the provider's REST request
    "Hub.create_loop", "Transport.on_readable", "build_tracer.<locals>.trace_task",
    "pickle_loads", "ClientBase.request", "Session.send", "Session.merge_environment_settings",
    "HTTPConnectionPool.urlopen", "Logger._log", "dumps", "loads")


def summarize(folded: Path, cpu_ms_per_transfer: float, top: int = 20) -> dict[str, Any]:
    """Shares of the busy samples per function (inclusive and self) and per package; each
    share also as ms per transfer, scaled to the CPU per transfer measured from /proc."""
    inclusive: Counter[str] = Counter()
    self_: Counter[str] = Counter()
    package: Counter[str] = Counter()
    entry: Counter[str] = Counter()
    total = idle = 0
    for line in folded.read_text().splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        frames = [_frame_key(f) for f in stack.split(";")
                  if not f.startswith(("process ", "thread "))]
        if not frames:
            continue
        if frames[-1].split(" (")[0] in IDLE_LEAVES:
            idle += count
            continue
        total += count
        self_[frames[-1]] += count
        path = frames[-1].rpartition(" (")[2].rstrip(")")
        package[path.split("/")[0] if "/" in path else path.removesuffix(".py")] += count
        for f in set(frames):
            if any(f"({o}" in f for o in OURS):
                inclusive[f] += count
            elif f.split(" (")[0] in ENTRY_POINTS:
                entry[f] += count

    def rows(c: Counter[str]) -> list[dict[str, Any]]:
        return [{"function": f, "share": round(n / max(1, total), 3),
                 "ms_per_transfer": round(n / max(1, total) * cpu_ms_per_transfer, 2)}
                for f, n in c.most_common(top)]

    return {"busy_samples": total, "idle_samples_dropped": idle,
            "cpu_ms_per_transfer": round(cpu_ms_per_transfer, 2),
            "self_by_package": rows(package), "self": rows(self_),
            "inclusive_ours": rows(inclusive), "inclusive_library_calls": rows(entry)}


def profile(b: Bench, out: Path, rate: float, seconds: float) -> int:
    from bench.load import Driver

    spy = shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy"))
    if not Path(spy).exists():
        print("py-spy is not installed: .venv/bin/pip install py-spy", file=sys.stderr)
        return 2
    out.mkdir(parents=True, exist_ok=True)
    d = Driver(b)
    d.step("twilio", "bridged", 5, 1.0)  # warm-up
    spies = {kind: subprocess.Popen(
        # --gil: only samples that run Python (a CPU proxy); --nonblocking: the processes
        # are not stopped to be sampled, which on this box would distort the load itself.
        [spy, "record", "--pid", str(pid), "--subprocesses", "--gil", "--nonblocking",
         "--rate", str(RATE_HZ), "--format", "raw", "--output", str(out / f"{kind}.txt")],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        for kind, pid in (("web", b.web.pid), ("worker", b.worker.pid))}
    time.sleep(1.0)  # py-spy attaches
    step = d.step("twilio", "bridged", rate, seconds)
    for proc in spies.values():
        proc.send_signal(signal.SIGINT)
    for proc in spies.values():
        proc.wait(60)
    report = {"step": step, **{kind: summarize(out / f"{kind}.txt",
                                               step["cpu_ms_per_transfer"][kind])
                               for kind in spies}}
    (out / "summary.json").write_text(json.dumps(report, indent=2) + "\n")
    print(f"{step['transfers']} Twilio transfers at {rate:g}/s; CPU ms per transfer measured "
          f"(/proc): {step['cpu_ms_per_transfer']}")
    for kind in spies:
        r = report[kind]
        print(f"\n{kind}: {r['busy_samples']} busy samples, {r['cpu_ms_per_transfer']} ms "
              "CPU per transfer")
        for label in ("self_by_package", "self", "inclusive_ours", "inclusive_library_calls"):
            print(f"  top {label}:")
            for row in r[label]:
                print(f"    {row['share']:6.1%} {row['ms_per_transfer']:6.2f} ms  "
                      f"{row['function']}")
    return 0
