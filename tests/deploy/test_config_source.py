"""The rotation config read from SSM (``ROTATOR_CONFIG_PATH=ssm:<name>``) with powertools Parameters: one
parameter, or parts it names when the config outgrows 4 KB (chalicelib/config_store.py)."""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest

from chalicelib import aws, config
from chalicelib import deps as deps_module
from chalicelib.errors import ConfigError
from local import iam_consistency
from local.runtime import LocalRuntime, function_policy

NAME = "/ci-key-rotator/local/rotation-config"  # the local stage's functions may read only theirs
CONFIG = """
users:
  - name: ci-from-ssm
    targets:
      - {id: web, provider: github, repository: acme/web, token: "secretsmanager:ci-key-rotator/ssmtest/token"}
"""


@pytest.fixture
def from_ssm(runtime: LocalRuntime, monkeypatch: pytest.MonkeyPatch) -> Iterator[object]:
    ssm = runtime.client("ssm")
    ssm.put_parameter(Name=NAME, Value=CONFIG, Type="String", Overwrite=True)
    monkeypatch.setenv("ROTATOR_CONFIG_PATH", f"ssm:{NAME}")
    deps_module.reset()
    yield ssm
    monkeypatch.undo()
    deps_module.reset()


def test_the_config_comes_from_ssm_and_is_cached(from_ssm: object, runtime: LocalRuntime) -> None:
    assert [u.name for u in config.get_config().users] == ["ci-from-ssm"]
    from_ssm.put_parameter(Name=NAME, Value=CONFIG.replace("ci-from-ssm", "ci-changed"), Type="String",
                           Overwrite=True)
    assert [u.name for u in config.get_config().users] == ["ci-from-ssm"], "cached for CONFIG_CACHE_SECONDS"
    assert [u.name for u in config.load_config(f"ssm:{NAME}").users] == ["ci-changed"], "load_config reads now"
    deps_module.reset()
    assert [u.name for u in config.get_config().users] == ["ci-changed"]


def test_a_function_reads_it_with_its_own_identity(from_ssm: object, runtime: LocalRuntime) -> None:
    with aws.acting_as(runtime.identity_of("scheduler")):
        assert [u.name for u in config.get_config().users] == ["ci-from-ssm"]
    # await_key_live's policy does not read the config: an identity with exactly its policy is refused.
    iam = runtime.client("iam")
    iam.create_user(UserName="like-await-key-live", Path="/service/")
    iam.put_user_policy(UserName="like-await-key-live", PolicyName="p",
                        PolicyDocument=json.dumps(function_policy("await_key_live")))
    key = iam.create_access_key(UserName="like-await-key-live")["AccessKey"]
    iam_consistency.settle()  # a new key is refused until IAM has propagated it
    with aws.acting_as(aws.Identity("like-await-key-live", key["AccessKeyId"], key["SecretAccessKey"])):
        with pytest.raises(ConfigError) as caught:
            config.load_config(f"ssm:{NAME}")
    assert "AccessDenied" in str(caught.value)


def test_a_bad_config_in_ssm_is_refused_with_its_source(from_ssm: object) -> None:
    from_ssm.put_parameter(Name=NAME, Value="users: []", Type="String", Overwrite=True)
    with pytest.raises(ConfigError) as caught:
        config.load_config(f"ssm:{NAME}")
    assert f"ssm:{NAME} is invalid" in str(caught.value) and "users" in str(caught.value)


def test_a_missing_parameter_says_where_it_looked(runtime: LocalRuntime) -> None:
    with pytest.raises(ConfigError) as caught:
        config.load_config("ssm:/ci-key-rotator/nowhere/rotation-config")
    assert "cannot read configuration ssm:/ci-key-rotator/nowhere/rotation-config" in str(caught.value)


def test_a_1000_user_config_in_parts_is_read_once_per_version(from_ssm: object, runtime: LocalRuntime,
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    from deploy import config_store

    users = "".join(f"""
  - name: ci-fleet-{i:04d}
    targets:
      - {{id: web, provider: github, repository: acme/app-{i * 7919 % 100003:06d},
         token: "secretsmanager:ci-key-rotator/local/token"}}""" for i in range(1000))
    text = f"users:{users}\n"
    assert config_store.store(from_ssm, NAME, text, "test").endswith("parts")
    deps_module.reset()
    pages: list[str] = []
    real = config.read_parts
    monkeypatch.setattr(config, "read_parts", lambda ssm, path: pages.append(path) or real(ssm, path))
    with aws.acting_as(runtime.identity_of("plan")):
        assert len(config.get_config().users) == 1000
        assert config.get_config().user("ci-fleet-0999")
    assert len(pages) == 1, "parts never change under one manifest: read once"
    config_store.store(from_ssm, NAME, CONFIG, "test")
    assert from_ssm.get_parameter(Name=NAME)["Parameter"]["Value"] == CONFIG, "small again: one parameter"
    kept = {p.rpartition("/")[0] for p in config_store._existing_parts(from_ssm, f"{NAME}-parts")}
    assert len(kept) == 1, "the generation just replaced stays for a reader mid-read"
    assert config_store.remove(from_ssm, NAME)
    assert not list(config_store._existing_parts(from_ssm, f"{NAME}-parts"))
