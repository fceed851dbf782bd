#!/usr/bin/env python3
"""Bootstrap and run the project with nothing but Python 3.11+.

    python3 scripts/dev.py test    # create .venv if needed, run the whole test suite
    python3 scripts/dev.py up      # create .venv if needed, start the whole system
    python3 scripts/dev.py check   # ruff and mypy
    python3 scripts/dev.py cli ... # any `warm-transfer` command
    python3 scripts/dev.py bench   # the benchmark (bench/run.py; --quick for a short run)

The virtual environment lives in .venv and is refreshed when pyproject.toml changes.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import venv
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
VENV = ROOT / ".venv"
BIN = VENV / ("Scripts" if os.name == "nt" else "bin")
PY = BIN / ("python.exe" if os.name == "nt" else "python")


def ensure_env() -> None:
    if sys.version_info < (3, 11):  # noqa: UP036 - this script runs before the venv exists
        sys.exit(f"Python 3.11 or newer is needed; this is {sys.version.split()[0]}")
    stamp = VENV / ".installed"
    want = hashlib.sha256((ROOT / "pyproject.toml").read_bytes()).hexdigest()
    if not PY.exists():
        print("creating .venv", flush=True)
        venv.EnvBuilder(with_pip=True).create(VENV)
    if not stamp.exists() or stamp.read_text() != want:
        print("installing the project and its test tools into .venv", flush=True)
        pip = [str(PY), "-m", "pip", "install", "--disable-pip-version-check", "-q"]
        subprocess.run([*pip, "--upgrade", "pip"], check=True)
        subprocess.run([*pip, "-e", f"{ROOT}[test]"], check=True)
        stamp.write_text(want)


def run(*argv: str) -> int:
    return subprocess.call([str(PY), *argv], cwd=ROOT)


def replace_with(*argv: str) -> int:
    """Become the command, so that Ctrl-C and exit codes reach it directly."""
    os.chdir(ROOT)
    if os.name == "nt":
        return run(*argv)
    os.execv(str(PY), [str(PY), *argv])  # noqa: S606 - a fixed argv, no shell


def main(args: list[str]) -> int:
    if not args or args[0] in ("-h", "--help"):
        print(__doc__)
        return 0 if args else 2
    command, rest = args[0], args[1:]
    ensure_env()
    if command == "test":
        return run("-m", "pytest", *rest)
    if command == "check":
        return run("-m", "ruff", "check", ".") or run("-m", "mypy")
    if command == "up":
        return replace_with("-m", "workers.cli", "up", *rest)
    if command == "cli":
        return replace_with("-m", "workers.cli", *rest)
    if command == "bench":
        return replace_with("bench/run.py", *rest)
    print(f"unknown command {command!r}\n{__doc__}", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
