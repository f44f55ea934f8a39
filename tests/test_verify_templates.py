"""The shipped verification pipeline files (templates/verify/) are valid for their CI and are what the
emulators' builds run: a change to a template changes the build, and the `aws` shim answers like the CLI."""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from local import build_job
from local.bin import verify_templates
from local.bin.verify_templates import FILES, JOB, TEMPLATE_DIR, parse
from local.world import World, split
from tests.conftest import new_user_name
from tests.emulator_fixtures import moto_auth, moto_with_ci_user

PROVIDERS = verify_templates.providers()  # readers registered by emulator modules included
AWS_BIN = Path(build_job.__file__).resolve().parent / "bin"


def _doc(provider: str) -> Any:
    docs = parse((TEMPLATE_DIR / FILES[provider]).read_text())
    return docs[-1]


# -- each file is what its CI expects ---------------------------------------------------------------

def test_github_workflow_is_dispatched_with_a_nonce_and_titled_by_it() -> None:
    doc = _doc("github")
    # PyYAML reads the bare key `on` as the boolean True (YAML 1.1); GitHub reads it as "on".
    on = doc.get("on", doc.get(True))
    nonce = on["workflow_dispatch"]["inputs"]["nonce"]
    assert nonce["required"] is True and nonce["type"] == "string"
    assert doc["run-name"] == "verify-${{ inputs.nonce }}"  # the client looks the run up by this title
    assert doc["permissions"] == {"contents": "read"}
    env = doc["jobs"][JOB]["env"]
    assert env["AWS_ACCESS_KEY_ID"] == "${{ secrets.AWS_ACCESS_KEY_ID }}"
    assert env["AWS_SECRET_ACCESS_KEY"] == "${{ secrets.AWS_SECRET_ACCESS_KEY }}"
    assert all("run" in step for step in doc["jobs"][JOB]["steps"])


def test_gitlab_input_has_a_default_and_only_the_verification_job_runs_for_it() -> None:
    header, pipeline = parse((TEMPLATE_DIR / FILES["gitlab"]).read_text())
    assert header["spec"]["inputs"]["nonce"]["default"] == ""  # other pipelines keep working
    assert pipeline["workflow"]["name"] == "verify-$[[ inputs.nonce ]]"
    verify_rule = pipeline[JOB]["rules"]
    assert verify_rule == [{"if": '$CI_PIPELINE_SOURCE == "api" && $ROTATION_NONCE != ""'}]
    skip = pipeline[".not-rotation-verify"]["rules"]
    assert skip[0] == {**verify_rule[0], "when": "never"} and skip[-1] == {"when": "on_success"}
    # Every other job of the sample takes the skip rule.
    others = [k for k, v in pipeline.items()
              if isinstance(v, dict) and "script" in v and k != JOB and not k.startswith(".")]
    assert others and all(pipeline[k]["rules"] == [".not-rotation-verify", "rules"] for k in others)


def test_circleci_config_declares_the_nonce_and_runs_the_workflow_only_with_it() -> None:
    doc = _doc("circleci")
    assert doc["version"] == 2.1
    assert doc["parameters"]["nonce"] == {"type": "string", "default": ""}
    assert doc["workflows"][JOB]["when"] == "<< pipeline.parameters.nonce >>"
    assert doc["workflows"][JOB]["jobs"] == [JOB]


def test_travis_job_runs_only_for_the_rotators_api_request() -> None:
    doc = _doc("travis")
    (job,) = [j for j in doc["jobs"]["include"] if j["name"] == JOB]
    # The Travis client sends the message "key-rotation verify <nonce>" (chalicelib/targets/travis.py).
    assert job["if"] == "type = api AND commit_message =~ /^key-rotation verify /"
    assert re.search(job["if"].split("=~ /")[1].rstrip("/"), "key-rotation verify n-1")


def test_bitbucket_custom_pipeline_takes_the_nonce_variable() -> None:
    doc = _doc("bitbucket")
    (name, items), = doc["pipelines"]["custom"].items()
    assert name == "verify-aws-key"  # the emulator's (and the config example's) pipeline name
    assert items[0]["variables"] == [{"name": "ROTATION_NONCE", "default": ""}]
    assert items[1]["step"]["script"]


@pytest.mark.parametrize("provider", PROVIDERS)
def test_each_script_is_valid_shell_and_never_prints_the_secret(provider: str) -> None:
    job = verify_templates.load(provider, {}, {"nonce": "n-1"})
    script = "\n".join(step.script for step in job.steps)
    for step in job.steps:
        checked = subprocess.run(["bash", "-n", "-c", step.script], capture_output=True, text=True, check=False)
        assert checked.returncode == 0, checked.stderr
    assert "aws sts get-caller-identity" in script
    assert 'echo "::notice title=rotate-verify::access key sha256 $digest"' in script
    for line in script.splitlines():
        if "echo" in line or "printf" in line:
            assert "SECRET" not in line, line


# -- the `aws` shim ---------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def aws() -> Iterator[SimpleNamespace]:
    with moto_with_ci_user("tmpl") as world:
        yield world


def _shim(aws: SimpleNamespace, *args: str, key_id: str = "", secret: str = "") -> subprocess.CompletedProcess[str]:
    env = {"PATH": f"{AWS_BIN}{os.pathsep}{os.defpath}", "ROTATOR_PYTHON": sys.executable,
           "PYTHONPATH": str(TEMPLATE_DIR.parents[1]), "AWS_ENDPOINT_URL": aws.endpoint,
           "AWS_DEFAULT_REGION": "us-east-1", "AWS_CONFIG_FILE": os.devnull,
           "AWS_SHARED_CREDENTIALS_FILE": os.devnull, "AWS_EC2_METADATA_DISABLED": "true"}
    if key_id:
        env |= {"AWS_ACCESS_KEY_ID": key_id, "AWS_SECRET_ACCESS_KEY": secret}
    return subprocess.run(["aws", *args], env=env, capture_output=True, text=True, check=False)


def test_shim_answers_like_the_cli(aws: SimpleNamespace) -> None:
    key = aws.new
    done = _shim(aws, "sts", "get-caller-identity", "--query", "Arn", "--output", "text",
                 key_id=key.access_key_id, secret=key.secret_access_key)
    assert done.returncode == 0 and re.fullmatch(r"arn:aws:iam::\d{12}:user/tmpl-\w+\n", done.stdout)
    assert _shim(aws, "sts", "get-caller-identity").returncode == 253  # no credentials, no other source
    unknown = _shim(aws, "iam", "delete-user", key_id=key.access_key_id, secret=key.secret_access_key)
    assert unknown.returncode == 252 and "knows only" in unknown.stderr
    with moto_auth(True):
        refused = _shim(aws, "sts", "get-caller-identity", key_id=key.access_key_id, secret="wrong" * 8)
    assert refused.returncode == 254
    assert "An error occurred (SignatureDoesNotMatch) when calling the GetCallerIdentity operation" in refused.stderr


# -- what the emulators run -------------------------------------------------------------------------

def _base_env(aws: SimpleNamespace) -> dict[str, str]:
    return {"PATH": os.environ.get("PATH", os.defpath), "AWS_ENDPOINT_URL": aws.endpoint,
            "AWS_DEFAULT_REGION": "us-east-1", "AWS_CONFIG_FILE": os.devnull,
            "AWS_SHARED_CREDENTIALS_FILE": os.devnull, "AWS_EC2_METADATA_DISABLED": "true"}


@pytest.mark.parametrize("provider", PROVIDERS)
def test_each_template_proves_which_key_it_used(aws: SimpleNamespace, provider: str) -> None:
    key = aws.new
    variables = {"AWS_ACCESS_KEY_ID": key.access_key_id, "AWS_SECRET_ACCESS_KEY": key.secret_access_key}
    with moto_auth(True):
        passed, timed_out, log = build_job.run_template(provider, variables, _base_env(aws), {"nonce": "n-42"}, 60)
        assert passed and not timed_out, log
        digest = hashlib.sha256(key.access_key_id.encode()).hexdigest()[:16]
        assert f"::notice title=rotate-verify::access key sha256 {digest}\n" in log
        assert re.search(r"verify: caller arn:aws:iam::\d{12}:user/tmpl-", log) and "verify: OK" in log
        assert key.secret_access_key not in log
        assert "verify: nonce n-42" in log or provider in ("travis", "bitbucket")  # nonce not an input there

        wrong = {**variables, "AWS_SECRET_ACCESS_KEY": "x" * 40}
        passed, _, log = build_job.run_template(provider, wrong, _base_env(aws), {"nonce": "n-43"}, 60)
    assert not passed and "verify: FAILED SignatureDoesNotMatch" in log and "rotate-verify::" not in log


def test_github_secrets_reach_the_job_only_through_the_workflow(aws: SimpleNamespace) -> None:
    """GitHub exports no secret by itself: a workflow that does not name one runs without it."""
    key = aws.new
    variables = {"aws_access_key_id": key.access_key_id, "AWS_SECRET_ACCESS_KEY": key.secret_access_key,
                 "UNRELATED_SECRET": "not-exported"}
    job = verify_templates.load("github", variables, {"nonce": "n"})
    env = job.steps[0].env
    assert env["AWS_ACCESS_KEY_ID"] == key.access_key_id  # secret names ignore case
    assert "UNRELATED_SECRET" not in env and env["ROTATION_NONCE"] == "n" and not job.exports_variables


def _broken_copy(tmp_path: Path, provider: str) -> Path:
    """A copy of the templates whose ``provider`` verification job exits 1 after its last line."""
    copy = tmp_path / "verify"
    shutil.copytree(TEMPLATE_DIR, copy)
    path = copy / FILES[provider]
    text = path.read_text()
    assert text.count('echo "verify: OK"') == 1
    path.write_text(text.replace('echo "verify: OK"', 'echo "verify: OK"; exit 1'))
    return copy


@pytest.mark.parametrize("provider", PROVIDERS)
def test_the_emulators_build_runs_the_shipped_template(
    clean_world: World, tmp_path: Path, provider: str
) -> None:
    name = new_user_name(f"tp{provider[:3]}")
    project = f"{provider}:acme/{name}" if provider != "github" else f"acme/{name}"
    clean_world.add_user(name, [project])
    emulator = clean_world.emulator(split(project)[0])
    assert emulator.verify_template_dir == TEMPLATE_DIR
    assert clean_world.run_build(project)
    emulator.verify_template_dir = _broken_copy(tmp_path, provider)
    try:
        assert not clean_world.run_build(project)  # the same key, a template whose step exits 1
    finally:
        emulator.verify_template_dir = TEMPLATE_DIR


def test_a_template_construct_the_runner_does_not_know_fails_the_build(tmp_path: Path) -> None:
    copy = tmp_path / "verify"
    shutil.copytree(TEMPLATE_DIR, copy)
    path = copy / FILES["github"]
    path.write_text(path.read_text().replace("${{ inputs.nonce }}\n", "${{ github.event.inputs.nonce }}\n"))
    passed, _, log = build_job.run_template("github", {}, {"PATH": os.defpath}, {"nonce": "n"}, 10, copy)
    assert not passed and "unsupported expression" in log


def test_gitlab_rules_run_only_the_verification_job_and_only_with_a_nonce(tmp_path: Path) -> None:
    job = verify_templates.load("gitlab", {}, {"nonce": "n-1"})
    assert {step.name.rsplit(" ", 1)[0] for step in job.steps} == {JOB}  # example-deploy is ruled out
    with pytest.raises(verify_templates.TemplateError, match="keep it out"):
        verify_templates.load("gitlab", {}, {})  # the input's default: an ordinary pipeline skips the job

    copy = tmp_path / "verify"
    shutil.copytree(TEMPLATE_DIR, copy)
    path = copy / FILES["gitlab"]
    # Without its skip rule, the sample deploy job would run in the verification pipeline too.
    path.write_text(path.read_text().replace("  rules: !reference [.not-rotation-verify, rules]\n", ""))
    names = [step.name for step in verify_templates.load("gitlab", {}, {"nonce": "n-1"}, copy).steps]
    assert "example-deploy 1" in names


@pytest.mark.parametrize("provider", ["github", "gitlab"])
def test_template_assumes_the_deploy_role_when_one_is_named(aws: SimpleNamespace, provider: str) -> None:
    """The deploy's next call (templates/ci-identity/): the key traded for the deploy role's session."""
    import boto3

    iam = boto3.client("iam", endpoint_url=aws.endpoint, region_name="us-east-1",
                       aws_access_key_id="testing", aws_secret_access_key="testing")
    trust = '{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Principal":{"AWS":"*"},"Action":"sts:AssumeRole"}]}'
    role_name = f"deploy-{provider}"
    with moto_auth(False):
        arn = iam.create_role(RoleName=role_name, AssumeRolePolicyDocument=trust)["Role"]["Arn"]
    key = aws.new
    variables = {"AWS_ACCESS_KEY_ID": key.access_key_id, "AWS_SECRET_ACCESS_KEY": key.secret_access_key,
                 "DEPLOY_ROLE_ARN": arn, "PIPELINE_NAME": "web-app"}
    with moto_auth(False):
        passed, _, log = build_job.run_template(provider, variables, _base_env(aws), {"nonce": "n"}, 60)
    assert passed, log
    assert re.search(rf"verify: assumed arn:aws:sts::\d{{12}}:assumed-role/{role_name}/rotate-verify-[0-9a-f]{{16}}", log)
    del variables["PIPELINE_NAME"]  # the external id is required: the role admits no session without it
    with moto_auth(False):
        passed, _, log = build_job.run_template(provider, variables, _base_env(aws), {"nonce": "n"}, 60)
    assert not passed and "PIPELINE_NAME" in log


# -- the OIDC variant (templates/verify/<provider>/oidc/, docs/oidc.md) -------------------------------------

OIDC_PROVIDERS = ["bitbucket", "circleci", "github", "gitlab"]


def test_every_ci_with_an_issuer_has_an_oidc_file_and_travis_has_none() -> None:
    from local.emulators.base import emulators

    with_issuer = sorted(p for p, cls in emulators().items() if cls.oidc_profile is not None)
    assert with_issuer == OIDC_PROVIDERS
    for provider in PROVIDERS:
        assert (TEMPLATE_DIR / verify_templates.file_for(provider, "oidc")).exists() == (provider in with_issuer)
    with pytest.raises(verify_templates.TemplateError, match=r"cannot read travis/oidc/\.travis\.yml"):
        verify_templates.load("travis", {}, {"nonce": "n"}, variant="oidc")
    with pytest.raises(verify_templates.TemplateError, match="no verification variant"):
        verify_templates.file_for("github", "saml")


@pytest.mark.parametrize("provider", OIDC_PROVIDERS)
def test_each_oidc_file_authenticates_only_through_the_id_token(provider: str) -> None:
    job = verify_templates.load(provider, {}, {"nonce": "n-1"}, variant="oidc")
    script = "\n".join(step.script for step in job.steps)
    for step in job.steps:
        checked = subprocess.run(["bash", "-n", "-c", step.script], capture_output=True, text=True, check=False)
        assert checked.returncode == 0, checked.stderr
    assert "aws sts assume-role-with-web-identity" in script
    assert 'echo "::notice title=rotate-verify::oidc role $caller"' in script
    assert ': "${AWS_ROLE_ARN:?verify: FAILED AWS_ROLE_ARN must be set' in script
    # A key pair left in the CI variables is dropped before anything talks to AWS: no fallback to keys.
    assert script.index("unset AWS_ACCESS_KEY_ID AWS_SECRET_ACCESS_KEY AWS_SESSION_TOKEN") < script.index("aws sts")
    assert "${AWS_ACCESS_KEY_ID" not in script and "secrets.AWS_ACCESS_KEY_ID" not in script
    for line in script.splitlines():
        # The one exception: the refused exchange's output, reduced to the error code by sed.
        if ("echo" in line or "printf" in line) and "sed -n 's/.*An error occurred (" not in line:
            assert not re.search(r"\$\{?(creds|id_token|AWS_SECRET_ACCESS_KEY|AWS_SESSION_TOKEN)\b", line), line
    # Each CI hands the token over its own way (local/oidc.py mints it).
    handed = {variable for step in job.steps for variable, _ in step.id_tokens}
    assert handed == {"github": {"ACTIONS_ID_TOKEN_REQUEST_URL"}, "gitlab": {"AWS_ID_TOKEN"},
                      "circleci": {"CIRCLE_OIDC_TOKEN", "CIRCLE_OIDC_TOKEN_V2"},
                      "bitbucket": {"BITBUCKET_STEP_OIDC_TOKEN"}}[provider]


def test_the_oidc_files_ask_for_the_token_as_each_ci_documents() -> None:
    github = parse((TEMPLATE_DIR / verify_templates.file_for("github", "oidc")).read_text())[0]
    assert github["jobs"][JOB]["permissions"] == {"contents": "read", "id-token": "write"}
    assert github["jobs"][JOB]["env"]["AWS_ROLE_ARN"] == "${{ secrets.AWS_ROLE_ARN }}"
    assert github["run-name"] == "verify-${{ inputs.nonce }}"  # found by the rotator like the key file's runs
    gitlab = parse((TEMPLATE_DIR / verify_templates.file_for("gitlab", "oidc")).read_text())[1]
    assert gitlab[JOB]["id_tokens"] == {"AWS_ID_TOKEN": {"aud": "https://gitlab.com"}}
    bitbucket = parse((TEMPLATE_DIR / verify_templates.file_for("bitbucket", "oidc")).read_text())[0]
    (name, items), = bitbucket["pipelines"]["custom"].items()
    assert name == "verify-aws-key" and items[1]["step"]["oidc"] is True
    circleci = parse((TEMPLATE_DIR / verify_templates.file_for("circleci", "oidc")).read_text())[0]
    assert circleci["workflows"][JOB]["when"] == "<< pipeline.parameters.nonce >>"


def test_shim_needs_the_web_identity_arguments(aws: SimpleNamespace) -> None:
    done = _shim(aws, "sts", "assume-role-with-web-identity", "--role-arn", "arn:aws:iam::123456789012:role/r")
    assert done.returncode == 252 and "--role-session-name, --web-identity-token" in done.stderr


@pytest.mark.parametrize("provider", OIDC_PROVIDERS)
def test_the_emulators_oidc_build_never_falls_back_to_the_key(clean_world: World, provider: str) -> None:
    name = new_user_name(f"to{provider[:3]}")
    project = f"{provider}:acme/{name}" if provider != "github" else f"acme/{name}"
    clean_world.add_user(name, [project])  # the project holds a working key
    emulator = clean_world.emulator(split(project)[0])
    emulator.set_verify_variant(split(project)[1], "oidc")
    try:
        assert not clean_world.run_build(project)  # no AWS_ROLE_ARN: the OIDC file fails, whatever key is held
    finally:
        emulator.set_verify_variant(split(project)[1], "keys")
    assert clean_world.run_build(project)
