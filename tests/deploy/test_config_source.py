"""The rotation config read from SSM (``ROTATOR_CONFIG_PATH=ssm:<name>``) with powertools Parameters."""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest

from chalicelib import aws, config
from chalicelib import deps as deps_module
from chalicelib.errors import ConfigError
from deploy import policies
from local.runtime import LocalRuntime, moto_policy

NAME = "/ci-key-rotator/ssmtest/rotation-config"
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
                        PolicyDocument=json.dumps(moto_policy(policies.load("await_key_live"))))
    key = iam.create_access_key(UserName="like-await-key-live")["AccessKey"]
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
