"""Helpers for tests that run the project's own processes as a user would."""

from __future__ import annotations

import os
import signal
import subprocess
import threading
import time
from pathlib import Path
from typing import Any

from celery import Celery

from providers import accounts
from shared.config import Settings

ROOT = Path(__file__).resolve().parents[2]


def clean_env(**extra: str) -> dict[str, str]:
    """The environment minus every setting of ours, as on a machine where none is set."""
    names = ({n.upper() for n in Settings.model_fields} | accounts.setting_names()
             | {"TWILIO_EDGE", "TWILIO_REGION"})
    env = {k: v for k, v in os.environ.items() if k.upper() not in names}
    env["PYTHONPATH"] = str(ROOT)
    env.update(extra)
    return env


def descendants(pid: int) -> set[int]:
    """Every live process below `pid` (from /proc)."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        children.setdefault(ppid, []).append(int(entry.name))
    found: set[int] = set()
    todo = [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            if child not in found:
                found.add(child)
                todo.append(child)
    return found


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:
        state = (Path("/proc") / str(pid) / "stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


class Output(threading.Thread):
    """Collects a child's output lines without ever letting its pipe fill up."""

    def __init__(self, proc: subprocess.Popen[str]) -> None:
        super().__init__(daemon=True)
        self.proc = proc
        self.lines: list[str] = []

    def run(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.append(line.rstrip("\n"))

    def close(self) -> None:
        self.join(10)
        if self.proc.stdout is not None:
            self.proc.stdout.close()

    def wait_for(self, text: str, timeout: float) -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for line in list(self.lines):
                if text in line:
                    return line
            if self.proc.poll() is not None:
                break
            time.sleep(0.05)
        raise AssertionError(f"{text!r} not seen; output:\n" + "\n".join(self.lines[-40:]))


def read_events(broker_url: str, queue: str = "agent_events", timeout: float = 15.0,
                until: Any = None) -> list[dict[str, Any]]:
    """Read `agent.transfer_event` messages off the queue until `until(events)` holds."""
    app = Celery("reader", broker=broker_url, set_as_current=False)
    events: list[dict[str, Any]] = []
    deadline = time.monotonic() + timeout
    with app.connection_for_read() as conn:
        q = conn.SimpleQueue(queue, no_ack=True)
        try:
            while time.monotonic() < deadline and not (until and until(events)):
                try:
                    msg = q.get(block=True, timeout=0.2)
                except q.Empty:
                    continue
                assert msg.headers["task"] == "agent.transfer_event"
                events.append(msg.decode()[1]["event"])
        finally:
            q.close()
    return events


def stop(proc: subprocess.Popen[Any], sig: int = signal.SIGINT, timeout: float = 30) -> int:
    proc.send_signal(sig)
    try:
        return proc.wait(timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
        raise
