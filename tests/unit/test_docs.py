"""The README documents every setting the service reads."""

from pathlib import Path

from shared.config import Settings

README = (Path(__file__).resolve().parents[2] / "README.md").read_text()


def test_every_setting_is_in_the_configuration_table() -> None:
    import providers

    names = [name.upper() for name in Settings.model_fields]
    names += [env for spec in providers.specs() for env in spec.account.env_names()]
    missing = [name for name in names if f"`{name}`" not in README]
    assert missing == []


def test_readme_opens_with_the_two_commands() -> None:
    head = "\n".join(README.splitlines()[:10])
    assert "python3 scripts/dev.py test" in head
    assert "python3 scripts/dev.py up" in head
    ci = (Path(__file__).resolve().parents[2] / ".ci" / "run").read_text()
    assert "python3 scripts/dev.py test" in ci


def test_every_error_code_failure_reason_and_policy_is_documented() -> None:
    from shared.contracts import POLICIES, ErrorCode, FailureReason, TransferEvent

    names = [f"`{c.value}`" for c in ErrorCode] + [f"`{r.value}`" for r in FailureReason]
    names += [f"`{field}`" for field in TransferEvent.model_fields]
    names += [f"`{policy.removesuffix('_customer').removesuffix('_url')}`"
              for policy in POLICIES]
    assert [n for n in names if n not in README] == []
