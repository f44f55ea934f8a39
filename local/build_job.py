"""The verification build every local CI emulator runs: prove the pushed key pair works against AWS.

:func:`run_template` is the build: the verification job of the provider's shipped pipeline file
(templates/verify/, read by local/bin/verify_templates.py) run by bash, its ``aws`` calls answered by the
shim local/bin/aws with the CI's variables in the environment. :func:`verify` is the same check in-process
(``python -m local.build_job``, and the emulators' ``in_process_builds`` for fleet benchmarks): it prints
the key id (and its digest) and the caller ARN, never the secret, then, after AWS accepted the key, a
``::notice`` workflow command with the digest of the key id it authenticated with.
"""

from __future__ import annotations

import functools
import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import botocore.loaders
import botocore.session
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError, NoCredentialsError

from local.bin import verify_templates

# One attempt only: a wrong or inactive key must fail, not be retried into a pass.
_NO_RETRIES = Config(retries={"mode": "standard", "total_max_attempts": 1}, connect_timeout=5, read_timeout=15)
#: Service models parsed once per process: in-process builds (the benchmark's fleet) would otherwise parse
#: the STS and S3 models again for every build. Credentials are never shared: each build has its session.
_models = functools.cache(botocore.loaders.create_loader)
_REPO_ROOT = Path(__file__).resolve().parents[1]
_BIN_DIR = _REPO_ROOT / "local" / "bin"
_BASH = shutil.which("bash") or "/bin/bash"
#: The annotation title under which the build reports the key it authenticated with.
NOTICE_TITLE = "rotate-verify"
#: Bounds on what a build's ``store_artifacts`` keeps: the report is one line.
_MAX_ARTIFACTS = 20
_MAX_ARTIFACT_BYTES = 64 * 1024


def key_id_digest(key_id: str) -> str:
    """The CI-side twin of chalicelib.targets.base.key_id_digest (``sha256sum | cut -c1-16`` in a job);
    not imported from there: a build must not pay for the product's imports."""
    return hashlib.sha256(key_id.encode()).hexdigest()[:16]


def client_factory(env: Mapping[str, str]) -> Callable[[str], Any]:
    """service -> botocore client authenticated with exactly the key pair (and session token) in ``env``.
    Raises NoCredentialsError when the pair is incomplete: never another credential source."""
    key_id, secret = env.get("AWS_ACCESS_KEY_ID", ""), env.get("AWS_SECRET_ACCESS_KEY", "")
    if not key_id or not secret:
        raise NoCredentialsError()
    # botocore alone: boto3's import (s3transfer) would double every build's time for nothing.
    session = botocore.session.Session()
    session.register_component("data_loader", _models())
    session.set_credentials(key_id, secret, env.get("AWS_SESSION_TOKEN") or None)
    region = env.get("AWS_DEFAULT_REGION") or "us-east-1"
    endpoint = env.get("AWS_ENDPOINT_URL") or None

    def client(service: str) -> Any:
        return session.create_client(service, region_name=region, endpoint_url=endpoint, config=_NO_RETRIES)

    return client


def verify(env: Mapping[str, str]) -> tuple[bool, str]:
    """The build's work: (passed, log). Uses exactly the key pair in ``env``, nothing else."""
    log: list[str] = []
    key_id = env.get("AWS_ACCESS_KEY_ID", "")
    secret = env.get("AWS_SECRET_ACCESS_KEY", "")
    if not key_id or not secret:
        # Never fall back to another credential source: the build must use exactly what CI holds.
        return False, "verify: FAILED AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY must both be set\n"
    # CI masks secret values in logs, the key id included; its digest still shows which key was used.
    log.append(f"verify: using access key {key_id} (sha256 {key_id_digest(key_id)})")
    client = client_factory(env)

    try:
        identity = client("sts").get_caller_identity()
        log.append(f"verify: caller {identity['Arn']}")
        # A workflow command: the CI turns it into an annotation its API reports, so the rotator learns
        # which key the build authenticated with (the digest: the id itself is masked as a secret).
        log.append(f"::notice title={NOTICE_TITLE}::access key sha256 {key_id_digest(key_id)}")
        bucket = env.get("VERIFY_S3_BUCKET")
        if bucket:
            client("s3").list_objects_v2(Bucket=bucket, MaxKeys=1)
            log.append(f"verify: listed s3://{bucket}")
    except ClientError as exc:
        log.append(f"verify: FAILED {exc.response.get('Error', {}).get('Code', 'Unknown')}")
        return False, "\n".join(log) + "\n"
    except BotoCoreError as exc:
        # The message can name the endpoint URL but never the credentials; keep to the class name anyway.
        log.append(f"verify: FAILED {type(exc).__name__}")
        return False, "\n".join(log) + "\n"
    log.append("verify: OK")
    return True, "\n".join(log) + "\n"


def run_template(provider: str, variables: Mapping[str, str], base_env: Mapping[str, str],
                 inputs: Mapping[str, str], timeout: float,
                 template_dir: Path = verify_templates.TEMPLATE_DIR, *, variant: str = "keys",
                 grant: Any = None, artifacts: dict[str, str] | None = None) -> tuple[bool, bool, str]:
    """Run the verification job of ``provider``'s shipped template as that CI would: (passed, timed_out,
    output). ``variables``: the CI variables the job would see; ``base_env``: the runner's own environment
    (PATH, the AWS endpoint and region, no credential sources); ``variant``: the keys or the OIDC file;
    ``grant``: the project's ID tokens (local.oidc.Grant; None: the CI issues none), handed to the steps whose
    file asks for one, the way that CI does, and masked in the output. ``artifacts`` receives what the job
    stored (``store_artifacts``: destination path -> text) when it passed."""
    try:
        output, passed, timed_out = _run_steps(provider, variables, base_env, inputs, timeout, template_dir,
                                               variant, grant, artifacts)
    finally:
        if grant is not None:
            grant.close()  # GitHub's request token dies with the job
    for handed in getattr(grant, "handed", ()):
        output = output.replace(handed, "***")
    return passed, timed_out, output


def _run_steps(provider: str, variables: Mapping[str, str], base_env: Mapping[str, str],
               inputs: Mapping[str, str], timeout: float, template_dir: Path, variant: str,
               grant: Any, artifacts: dict[str, str] | None = None) -> tuple[str, bool, bool]:
    try:
        job = verify_templates.load(provider, variables, inputs, template_dir, variant)
    except verify_templates.TemplateError as exc:
        return f"verify: template error: {exc}\n", False, False
    if not job.steps:
        return "verify: template error: the verification job has no step\n", False, False
    if not job.artifacts:
        return _run_in(job, variables, base_env, grant, timeout, _REPO_ROOT)
    # A job that stores artifacts writes them into its own working directory, as each CircleCI job has one.
    with tempfile.TemporaryDirectory(prefix="verify-job-") as workdir:
        output, passed, timed_out = _run_in(job, variables, base_env, grant, timeout, Path(workdir))
        if passed and artifacts is not None:
            artifacts.update(_stored(Path(workdir), job.artifacts))
        return output, passed, timed_out


def _stored(workdir: Path, stores: tuple[tuple[str, str], ...]) -> dict[str, str]:
    """destination path -> text of the files under each stored path (bounded: the report is one line)."""
    found: dict[str, str] = {}
    for path, destination in stores:
        source = workdir / path
        files = sorted(f for f in source.rglob("*") if f.is_file()) if source.is_dir() else [source]
        for file in files:
            if len(found) >= _MAX_ARTIFACTS or file.is_symlink() or not file.is_file() or file.stat().st_size > _MAX_ARTIFACT_BYTES:
                continue
            relative = file.relative_to(source).as_posix() if source.is_dir() else file.name
            found[f"{destination}/{relative}"] = file.read_text(encoding="utf-8", errors="replace")
    return found


def _run_in(job: verify_templates.Job, variables: Mapping[str, str], base_env: Mapping[str, str], grant: Any,
            timeout: float, cwd: Path) -> tuple[str, bool, bool]:
    env = {
        **base_env,
        "CI": "true",
        # `aws` in the scripts is the local shim; it runs on this interpreter with the repository importable.
        "PATH": f"{_BIN_DIR}{os.pathsep}{base_env.get('PATH', os.defpath)}",
        "ROTATOR_PYTHON": sys.executable,
        "PYTHONPATH": str(_REPO_ROOT),
        **(variables if job.exports_variables else {}),
    }
    deadline = time.monotonic() + timeout
    output: list[str] = []
    passed = True
    for step in job.steps:
        tokens: dict[str, str] = {}
        for variable, audience in step.id_tokens if grant is not None else ():
            tokens.update(grant.handover(variable, audience))
        try:
            # The shell GitHub and CircleCI document for run steps: bash, errexit, pipefail, no profile.
            proc = subprocess.run(  # fixed argv; the script is the repository's own template
                [_BASH, "--noprofile", "--norc", "-eo", "pipefail", "-c", step.script],
                env={**env, **step.env, **tokens}, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                text=True, timeout=max(deadline - time.monotonic(), 0.001), check=False,
            )
        except subprocess.TimeoutExpired:
            output.append(f"verify: build exceeded {timeout:g}s\n")
            return "".join(output), False, True
        output.append(proc.stdout)
        if proc.returncode != 0:
            passed = False
            output.append(f"verify: step {step.name!r} exited {proc.returncode}\n")
            if not step.keep_going:
                break
    return "".join(output), passed, False


def main() -> int:
    passed, log = verify(os.environ)
    print(log, end="")
    return 0 if passed else 1


if __name__ == "__main__":
    sys.exit(main())
