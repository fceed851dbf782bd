"""The console with the local stack, as a newcomer meets it: `warm-transfer up` in one
shell, `warm-transfer demo` (and `request`, `status`) in another use that stack, and its
console shows the demo's transfers."""

from __future__ import annotations

import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from sandbox.redis_server import free_port
from tests.integration.processes import ROOT, clean_env
from workers.demo import SandboxControl, find_running_stack, remove_up_state, write_up_state
from workers.localstack import Stack, running_stack

TOKEN = "local-console-token"


@pytest.fixture(scope="module")
def up(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Stack, int, Path]]:
    """A stack as `up` starts it, with the state file `up` writes."""
    state = tmp_path_factory.mktemp("up") / "up.json"
    port = free_port()
    with pytest.MonkeyPatch.context() as mp:
        for name, value in clean_env(CONSOLE_TOKEN=TOKEN).items():
            mp.setenv(name, value)
        mp.setenv("WARM_TRANSFER_UP_STATE", str(state))
        for name in ("REDIS_URL", "CELERY_BROKER_URL", "PUBLIC_BASE_URL"):
            mp.delenv(name, raising=False)
        with running_stack(port=port, use_sandbox=True, quiet_children=True,
                           log=lambda _: None) as stack:
            write_up_state(stack, port)
            yield stack, port, state
            remove_up_state(port)
    assert not state.exists()


def _cli(state: Path, *args: str) -> subprocess.CompletedProcess[str]:
    # No REDIS_URL: the commands find the stack through the state file alone.
    return subprocess.run([sys.executable, "-m", "workers.cli", *args], cwd=ROOT,
                          env=clean_env(WARM_TRANSFER_UP_STATE=str(state)),
                          capture_output=True, text=True, timeout=120)


def _console(base: str) -> requests.Session:
    http = requests.Session()
    page = http.get(f"{base}/console/login", timeout=10)
    csrf = re.search(r'name="csrf" value="([^"]+)"', page.text).group(1)  # type: ignore[union-attr]
    resp = http.post(f"{base}/console/login", data={"csrf": csrf, "token": TOKEN},
                     timeout=10)
    assert resp.status_code == 200 and 'id="live"' in resp.text
    return http


def test_the_state_file_finds_the_stack_and_a_stale_one_is_ignored(
        up: tuple[Stack, int, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    stack, port, state = up
    monkeypatch.setenv("WARM_TRANSFER_UP_STATE", str(state))
    found = find_running_stack(port)
    assert found is not None and found.redis_url == stack.redis_url
    assert found.sandbox_url == stack.sandbox_url
    assert state.stat().st_mode & 0o077 == 0  # owner-only
    stale = tmp_path / "stale.json"
    stale.write_text(state.read_text().replace(f'"pid": {found.pid}', '"pid": 999999999'))
    monkeypatch.setenv("WARM_TRANSFER_UP_STATE", str(stale))
    assert find_running_stack(port) is None


def test_demo_uses_the_running_stack_and_its_console_shows_the_transfers(
        up: tuple[Stack, int, Path]) -> None:
    stack, port, state = up
    done = _cli(state, "demo", "--port", str(port), "--scenario", "1", "--scenario", "2")
    assert done.returncode == 0, done.stdout + done.stderr
    assert f"using the running `warm-transfer up` at {stack.web_url}" in done.stdout
    assert "port" not in done.stderr
    ids = re.findall(r"tool result: transfer_requested\s+(tr_\w+)", done.stdout)
    assert len(ids) == 2
    assert "-> transfer.succeeded" in done.stdout and "-> transfer.failed busy" in done.stdout

    ended = _console(stack.web_url).get(f"{stack.web_url}/console/api/live", timeout=10).json()
    outcomes = {row["transfer_id"]: (row["outcome"], row["reason"]) for row in ended["ended"]}
    assert outcomes[ids[0]] == ("succeeded", "")
    assert outcomes[ids[1]] == ("failed", "busy")
    # The demo's requests name no provider_account: the default account, shown as such.
    assert {row["account"] for row in ended["ended"] if row["transfer_id"] in ids} == {
        "default"}


def test_request_and_status_reach_the_running_stack(up: tuple[Stack, int, Path]) -> None:
    stack, _, state = up
    assert stack.sandbox_url is not None
    sandbox = SandboxControl(stack.sandbox_url)
    agent = "+14155550177"
    sandbox.set_fate(agent, "answer")
    call_id = sandbox.create_customer_call(
        provider="twilio", status_callback=f"{stack.web_url}/twilio/status?lead_id=cli-lead")
    done = _cli(state, "request", "--lead-id", "cli-lead", "--provider", "twilio",
                "--call-id", call_id, "--transfer-number", agent,
                "--outbound-number", "+14155550199")
    assert done.returncode == 0, done.stdout + done.stderr
    assert "using the running `up` stack" in done.stderr
    assert '"status": "transfer_requested"' in done.stdout
    status = _cli(state, "status", "cli-lead")
    assert status.returncode == 0, status.stderr
    assert '"lead_id": "cli-lead"' in status.stdout


def test_the_demo_shows_a_ring_group_and_sip_destinations(up: tuple[Stack, int, Path]) -> None:
    from workers.demo import scenarios

    _, port, state = up
    chosen = [str(i) for i, (_, _, _, what) in enumerate(scenarios(), start=1)
              if "ring group" in what or "SIP destination" in what]
    assert len(chosen) >= 5
    args = [a for n in chosen for a in ("--scenario", n)]
    done = _cli(state, "demo", "--port", str(port), *args)
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout.count("-> transfer.succeeded") == len(chosen), done.stdout
    # The group's second member answered first, on Twilio, Plivo and Telnyx.
    assert done.stdout.count("(member 2)") == 3, done.stdout
    assert "sip:d***@pbx.example.com answered" in done.stdout
