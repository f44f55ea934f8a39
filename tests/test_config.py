"""Configuration: a valid file loads; every bad one is refused with the field and the reason."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import yaml

from chalicelib.config import get_config, load_config, parse_config, timing_seconds
from chalicelib.errors import ConfigError
from chalicelib.targets.registry import providers
from cli.__main__ import main as cli

EXAMPLE = Path(__file__).resolve().parents[1] / "rotation.example.yaml"


def example() -> dict:
    return yaml.safe_load(EXAMPLE.read_text())


def test_the_shipped_example_is_valid() -> None:
    config = load_config(EXAMPLE)
    assert [u.name for u in config.users] == ["ci-deployer", "ci-terraform", "ci-platform"]
    assert {t.provider for u in config.users for t in u.targets} == set(providers())  # one example of each
    assert timing_seconds(config.timings("ci-deployer"))["rotate_after"] == 14 * 86400
    assert timing_seconds(config.timings("ci-terraform"))["rotate_after"] == 30 * 86400
    assert str(config.target("ci-deployer", "web-app").token) == "secretsmanager:ci-key-rotator/github-token"


def broken(mutate) -> str:
    data = copy.deepcopy(example())
    mutate(data)
    with pytest.raises(ConfigError) as caught:
        parse_config(data, source="rotation.yaml")
    return str(caught.value)


@pytest.mark.parametrize(
    ("mutate", "expected"),
    [
        (lambda d: d["users"][0]["targets"][0].pop("repository"), "users[0].targets[0].repository: Field required"),
        (lambda d: d["users"][0]["targets"][0].update(token="ghp_abcdefghijklmnopqrstuvwxyz0123456789"),
         "users[0].targets[0].token"),
        (lambda d: d["users"][0]["targets"][0].update(token="vault:foo"), "must be 'secretsmanager:<name>'"),
        (lambda d: d["users"][0]["targets"][1].update(id="web-app"), "target ids must be unique"),
        (lambda d: d["users"][0]["targets"][0].update(provider="jenkins"), "users[0].targets[0]"),
        (lambda d: d["defaults"].update(rotate_after="soon"), "defaults.rotate_after"),
        (lambda d: d["defaults"].update(verify_timeout="0s"), "at least 1 second"),
        (lambda d: d["users"][0]["targets"][1].pop("environment"), "environment"),
        (lambda d: d.update(users=[]), "users: List should have at least 1 item"),
        (lambda d: d["users"].append(copy.deepcopy(d["users"][0])), "user names must be unique"),
        (lambda d: d.update(webhook={}), "webhook: Extra inputs are not permitted"),
        (lambda d: d["users"][0].update(name="bad name!"), "users[0].name"),
        (lambda d: d["users"][0]["targets"][0].update(api_url="http://github.example.com"), "https://"),
    ],
)
def test_bad_configuration_names_the_field_and_the_reason(mutate, expected: str) -> None:
    message = broken(mutate)
    assert message.startswith("rotation.yaml is invalid:")
    assert expected in message


def test_a_pasted_token_is_never_echoed_back() -> None:
    token = "ghp_abcdefghijklmnopqrstuvwxyz0123456789"
    message = broken(lambda d: d["users"][0]["targets"][0].update(token=token))
    assert token not in message


def test_cli_validate_config(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert cli(["validate-config", str(EXAMPLE)]) == 0
    assert "OK, 3 user(s)" in capsys.readouterr().out

    bad = tmp_path / "rotation.yaml"
    bad.write_text("users:\n  - name: ci\n    targets: []\n")
    assert cli(["validate-config", str(bad)]) == 2
    err = capsys.readouterr().err
    assert "users[0].targets: List should have at least 1 item" in err

    (tmp_path / "broken.yaml").write_text("users: [")
    assert cli(["validate-config", str(tmp_path / "broken.yaml")]) == 2
    assert "not valid YAML" in capsys.readouterr().err


def test_a_replaced_config_file_is_never_answered_from_a_stale_cache(tmp_path: Path) -> None:
    """The cache is keyed by the file's text: a background reader (the local poller) that parsed the
    old file while it was being replaced cannot make get_config miss a user added since."""
    path = tmp_path / "rotation.yaml"
    path.write_text(EXAMPLE.read_text())
    assert get_config(str(path)).users[0].name == "ci-deployer"
    path.write_text(EXAMPLE.read_text().replace("ci-deployer", "ci-renamed"))  # no cache reset
    assert get_config(str(path)).users[0].name == "ci-renamed"
    path.write_text("users: [")
    with pytest.raises(ConfigError, match="not valid YAML"):
        get_config(str(path))
