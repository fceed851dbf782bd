"""The Grafana dashboard and the Prometheus alerting rules in deploy/: they name only
metrics the service exports, their PromQL parses, and each alert fires when it should
(promtool's rule unit tests, deploy/prometheus/alerts_test.yml)."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from shared.metrics import COUNTERS, HISTOGRAMS

ROOT = Path(__file__).resolve().parents[2]
DASHBOARD = ROOT / "deploy" / "grafana" / "warm-transfer.json"
ALERTS = ROOT / "deploy" / "prometheus" / "alerts.yml"
ALERT_TESTS = ROOT / "deploy" / "prometheus" / "alerts_test.yml"
PROMTOOL = shutil.which("promtool")
NO_PROMTOOL = ("promtool not found (Debian's `prometheus` package; .ci/run installs it): "
               "the rule files were checked for shape only")

EXPORTED = {f"{name}_total" for name in COUNTERS} | {
    f"{name}_{part}" for name in HISTOGRAMS for part in ("bucket", "sum", "count")}
_METRIC = re.compile(r"\bwarm_transfer_[a-z_]+\b")


def _dashboard() -> dict[str, Any]:
    data: dict[str, Any] = json.loads(DASHBOARD.read_text())
    return data


def _dashboard_exprs() -> list[str]:
    return [t["expr"] for p in _dashboard()["panels"] for t in p["targets"]]


def _rules() -> list[dict[str, Any]]:
    doc = yaml.safe_load(ALERTS.read_text())
    return [rule for group in doc["groups"] for rule in group["rules"]]


def _balanced(expr: str) -> bool:
    """Brackets nest and close, outside string literals."""
    pairs, stack, quoted = {")": "(", "]": "[", "}": "{"}, [], False
    for ch in expr:
        if ch == '"':
            quoted = not quoted
        elif quoted:
            continue
        elif ch in "([{":
            stack.append(ch)
        elif ch in pairs and (not stack or stack.pop() != pairs[ch]):
            return False
    return not stack and not quoted


def test_every_metric_named_is_one_the_service_exports() -> None:
    named = {m for expr in _dashboard_exprs() + [r["expr"] for r in _rules()]
             for m in _METRIC.findall(expr)}
    assert named, "no metric found: the regex or the files changed"
    assert named <= EXPORTED, named - EXPORTED
    # Every exported family is on the dashboard.
    assert {m.rsplit("_", 1)[0] for m in named if not m.endswith("_total")} | {
        m.removesuffix("_total") for m in named if m.endswith("_total")} >= set(
        COUNTERS) | set(HISTOGRAMS)


def test_alerts_cover_failures_bridge_time_deadlines_and_signatures() -> None:
    rules = {r["alert"]: r for r in _rules()}
    assert {"WarmTransferFailureRateHigh", "WarmTransferBridgeP99High",
            "WarmTransferDeadlinesFiring", "WarmTransferSignatureFailures"} <= set(rules)
    assert 'outcome="failed"' in rules["WarmTransferFailureRateHigh"]["expr"]
    assert "histogram_quantile(0.99" in rules["WarmTransferBridgeP99High"]["expr"]
    assert "warm_transfer_bridge_seconds_bucket" in rules["WarmTransferBridgeP99High"]["expr"]
    assert 'reason="timeout"' in rules["WarmTransferDeadlinesFiring"]["expr"]
    assert "warm_transfer_signature_failures_total" in \
        rules["WarmTransferSignatureFailures"]["expr"]
    for name, rule in rules.items():
        assert _balanced(rule["expr"]), name
        assert re.fullmatch(r"\d+[smh]", str(rule["for"])), name
        assert rule["labels"]["severity"] in ("page", "ticket"), name
        assert rule["annotations"]["summary"] and rule["annotations"]["description"], name


def test_dashboard_shape() -> None:
    dash = _dashboard()
    panels = dash["panels"]
    assert len({p["id"] for p in panels}) == len(panels)
    variables = {v["name"] for v in dash["templating"]["list"]}
    cells: set[tuple[int, int]] = set()
    for panel in panels:
        pos = panel["gridPos"]
        assert pos["x"] + pos["w"] <= 24, panel["title"]
        mine = {(x, y) for x in range(pos["x"], pos["x"] + pos["w"])
                for y in range(pos["y"], pos["y"] + pos["h"])}
        assert not cells & mine, f"{panel['title']} overlaps another panel"
        cells |= mine
        assert panel["targets"], panel["title"]
        for target in panel["targets"]:
            assert _balanced(target["expr"]), target["expr"]
            used = set(re.findall(r"\$(\w+)", target["expr"])) - {"__rate_interval"}
            assert used <= variables, used - variables
        assert panel["datasource"]["uid"] == "${datasource}"


def _promtool(*args: str) -> str:
    assert PROMTOOL is not None
    done = subprocess.run([PROMTOOL, *args], capture_output=True, text=True, timeout=60,
                          check=False)
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout


@pytest.mark.skipif(PROMTOOL is None, reason=NO_PROMTOOL)
def test_promtool_checks_the_rules_and_their_unit_tests() -> None:
    assert "SUCCESS: 5 rules found" in _promtool("check", "rules", str(ALERTS))
    assert "SUCCESS" in _promtool("test", "rules", str(ALERT_TESTS))


@pytest.mark.skipif(PROMTOOL is None, reason=NO_PROMTOOL)
def test_promtool_parses_every_dashboard_query(tmp_path: Path) -> None:
    # promtool parses PromQL inside rule files: each panel query becomes a recording rule,
    # with Grafana's variables given values.
    exprs = _dashboard_exprs()
    rules = [{"record": f"dashboard:query_{i}",
              "expr": e.replace("$__rate_interval", "5m").replace("$provider", ".*")}
             for i, e in enumerate(exprs)]
    path = tmp_path / "dashboard_rules.yml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]}))
    assert f"SUCCESS: {len(exprs)} rules found" in _promtool("check", "rules", str(path))


def test_a_broken_query_is_caught(tmp_path: Path) -> None:
    """The checks above can fail: an unbalanced expression is refused by the shape check,
    and by promtool where it is installed."""
    broken = "sum(rate(warm_transfer_requests_total[5m])"
    assert not _balanced(broken)
    if PROMTOOL is None:
        return
    path = tmp_path / "broken.yml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "x", "rules": [
        {"record": "x:y", "expr": broken}]}]}))
    done = subprocess.run([PROMTOOL, "check", "rules", str(path)], capture_output=True,
                          text=True, timeout=60, check=False)
    assert done.returncode != 0
