"""The README documents every setting the service reads."""

from pathlib import Path

from shared.config import Settings

README = (Path(__file__).resolve().parents[2] / "README.md").read_text()


def test_every_setting_is_in_the_configuration_table() -> None:
    missing = [name.upper() for name in Settings.model_fields
               if f"`{name.upper()}`" not in README]
    assert missing == []


def test_readme_opens_with_the_two_commands() -> None:
    head = "\n".join(README.splitlines()[:10])
    assert "python3 scripts/dev.py test" in head
    assert "python3 scripts/dev.py up" in head
    ci = (Path(__file__).resolve().parents[2] / ".ci" / "run").read_text()
    assert "python3 scripts/dev.py test" in ci
