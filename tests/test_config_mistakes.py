"""Configuration mistakes that would break pipelines are refused by validation, with a message a person can act
on: bare-number durations, one CI variable written by two targets, the key id and the secret in one variable."""

from __future__ import annotations

from typing import Any

import pytest

from chalicelib.config import parse_config, timing_seconds
from chalicelib.durations import human
from chalicelib.errors import ConfigError
from cli.__main__ import main as cli


def _github(repository: str, target_id: str = "repo", **extra: Any) -> dict[str, Any]:
    return {"provider": "github", "id": target_id, "repository": repository, "token": "secretsmanager:gh-token",
            **extra}


def _config(*users: tuple[str, list[dict[str, Any]]], **defaults: Any) -> dict[str, Any]:
    return {"defaults": defaults, "users": [{"name": name, "targets": targets} for name, targets in users]}


@pytest.mark.parametrize("value", [30, 30.0, "30", " 45 "])
def test_a_bare_number_is_not_a_duration(value: Any) -> None:
    with pytest.raises(ConfigError, match=r"has no unit: write \d+s, \d+m or \d+h"):
        parse_config(_config(("ci-a", [_github("acme/a")]), verify_timeout=value))


@pytest.mark.parametrize(("text", "expected"), [("1.5h", 5400), ("0.5m", 30), ("2w", 14 * 86400),
                                                ("P1DT12H", 129600), ("90d", 90 * 86400)])
def test_durations_with_units_decimals_and_iso(text: str, expected: int) -> None:
    config = parse_config(_config(("ci-a", [_github("acme/a")]), rotate_after=text))
    assert timing_seconds(config.timings("ci-a"))["rotate_after"] == expected


@pytest.mark.parametrize("text", ["soon", "1.5x", "h", "-3h"])
def test_a_wrong_duration_names_the_accepted_forms(text: str) -> None:
    with pytest.raises(ConfigError) as raised:
        parse_config(_config(("ci-a", [_github("acme/a")]), drain_period=text))
    message = str(raised.value)
    assert "defaults.drain_period" in message
    assert "day identifier" not in message and "30s, 10m, 1.5h" in message


def test_two_users_writing_one_repository_secret_are_refused() -> None:
    with pytest.raises(ConfigError, match=r"ci-a/repo and ci-b/repo both write the CI variable AWS_ACCESS_KEY_ID"):
        parse_config(_config(("ci-a", [_github("acme/shared")]), ("ci-b", [_github("Acme/Shared")])))


def test_one_organization_secret_written_through_two_repositories_is_refused() -> None:
    org = {"scope": "organization", "organization": "acme"}
    with pytest.raises(ConfigError, match="same place"):
        parse_config(_config(("ci-a", [_github("acme/one", **org)]), ("ci-b", [_github("acme/two", **org)])))


def test_two_targets_of_one_user_on_one_store_are_refused() -> None:
    with pytest.raises(ConfigError, match="ci-a/first and ci-a/second"):
        parse_config(_config(("ci-a", [_github("acme/a", "first"), _github("acme/a", "second")])))


def test_distinct_variable_names_or_places_are_fine() -> None:
    other_names = {"secret_names": {"access_key_id": "B_KEY_ID", "secret_access_key": "B_SECRET"}}
    config = parse_config(_config(("ci-a", [_github("acme/shared")]),
                                  ("ci-b", [_github("acme/shared", **other_names)]),
                                  ("ci-c", [_github("acme/other")]),
                                  ("ci-d", [_github("acme/shared", scope="environment", environment="prod")])))
    assert [u.name for u in config.users] == ["ci-a", "ci-b", "ci-c", "ci-d"]


@pytest.mark.parametrize("names", [{"access_key_id": "AWS_KEY", "secret_access_key": "AWS_KEY"},
                                   {"access_key_id": "aws_key", "secret_access_key": "AWS_KEY"}])
def test_key_id_and_secret_in_one_variable_are_refused(names: dict[str, str]) -> None:
    with pytest.raises(ConfigError, match="name the same variable"):
        parse_config(_config(("ci-a", [_github("acme/a", secret_names=names)])))


def test_validate_config_prints_every_effective_timing(tmp_path: Any, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "rotation.yaml"
    path.write_text("defaults: {drain_period: 1.5h}\nusers:\n- name: ci-a\n  recovery_window: 2d\n  targets:\n"
                    "  - {provider: github, id: repo, repository: acme/a, token: 'secretsmanager:t'}\n")
    assert cli(["validate-config", str(path)]) == 0
    out = capsys.readouterr().out
    assert "ci-a: rotate after 30d, drain 1h30m, verify timeout 30m, recovery window 2d" in out


@pytest.mark.parametrize(("value", "text"), [(0, "0s"), (90, "1m30s"), (86400, "1d"), (5400, "1h30m")])
def test_human_durations(value: int, text: str) -> None:
    assert human(value) == text
