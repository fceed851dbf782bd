"""Development tools stay out of the production processes and the Docker image."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
DEV_TOOLS = ("workers.localstack", "workers.demo")

# What the web (gunicorn) and worker (celery) processes load, in a fresh interpreter.
_LOAD = """
import json, sys
import webhooks.gunicorn_conf, webhooks.wsgi
from webhooks import create_app
create_app()
import workers.celery_app
workers.celery_app.app.loader.import_default_modules()
print(json.dumps({name: getattr(mod, "__file__", None) for name, mod in sys.modules.items()}))
"""


def _production_modules() -> dict[str, str | None]:
    out = subprocess.run([sys.executable, "-c", _LOAD], cwd=ROOT, check=True,
                         capture_output=True, text=True,
                         env={"PATH": "/usr/bin:/bin", "HOME": "/nonexistent"})
    modules: dict[str, str | None] = json.loads(out.stdout.splitlines()[-1])
    return modules


def _is_dev_tool(name: str) -> bool:
    return "sandbox" in name.split(".") or name.startswith(DEV_TOOLS)


def test_web_and_worker_processes_import_no_development_tool() -> None:
    modules = _production_modules()
    assert "workers.tasks" in modules and "webhooks.transfers" in modules  # it loaded them
    assert [name for name in modules if _is_dev_tool(name)] == []


def _ignored(rel: str, patterns: list[str]) -> bool:
    """Docker's .dockerignore rule (Go filepath.Match plus `**`, last match wins, a matched
    directory excludes what is under it), for the patterns this repository uses."""
    parts = rel.split("/")
    verdict = False
    for pattern in patterns:
        negate = pattern.startswith("!")
        body = pattern.removeprefix("!").strip("/")
        regex = re.escape(body).replace(r"\*\*/", "(?:.*/)?").replace(r"\*\*", ".*") \
            .replace(r"\*", "[^/]*").replace(r"\?", "[^/]")
        if any(re.fullmatch(regex, "/".join(parts[:i])) for i in range(1, len(parts) + 1)):
            verdict = not negate
    return verdict


def _dockerignore() -> list[str]:
    lines = (ROOT / ".dockerignore").read_text().splitlines()
    return [line.strip() for line in lines if line.strip() and not line.startswith("#")]


def _copied_roots() -> list[str]:
    """The sources of the Dockerfile's COPY instructions."""
    roots = []
    for line in (ROOT / "Dockerfile").read_text().splitlines():
        if line.startswith("COPY "):
            roots += line.split()[1:-1]
    return roots


def _in_image(rel: str) -> bool:
    return any(rel == root or rel.startswith(root.rstrip("/") + "/")
               for root in _copied_roots()) and not _ignored(rel, _dockerignore())


def test_the_matcher_reads_patterns_as_docker_does() -> None:
    assert _ignored("sandbox/core.py", ["sandbox"])
    assert _ignored("workers/providers/twilio/sandbox.py", ["**/sandbox.py"])
    assert _ignored("a/__pycache__/x.pyc", ["**/__pycache__"])
    assert not _ignored("workers/demo_helpers.py", ["workers/demo.py"])
    assert not _ignored("sandbox/keep.py", ["sandbox", "!sandbox/keep.py"])


def test_the_image_has_every_module_the_processes_import() -> None:
    missing = []
    for file in _production_modules().values():
        path = Path(file).resolve() if file else None
        if path is None or not path.is_relative_to(ROOT) or ".venv" in path.parts:
            continue  # the standard library and installed dependencies
        rel = path.relative_to(ROOT).as_posix()
        if not _in_image(rel):
            missing.append(rel)
    assert missing == []


def test_the_image_leaves_the_development_tools_out() -> None:
    tools = [p.relative_to(ROOT).as_posix() for p in ROOT.rglob("*.py")
             if ".venv" not in p.parts and _is_dev_tool(
                 ".".join(p.relative_to(ROOT).with_suffix("").parts))]
    assert "sandbox/core.py" in tools and "workers/demo.py" in tools
    assert [t for t in tools if _in_image(t)] == []
    assert not any(_in_image(t) for t in ("tests/helpers.py", "bench", "docs"))
