"""The verification build every local CI emulator runs: prove the pushed key pair works against AWS.

Run as ``python -m local.build_job`` with AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY,
AWS_ENDPOINT_URL and AWS_DEFAULT_REGION (optionally VERIFY_S3_BUCKET) in the environment. Exit 0 when
every call succeeds, 1 on any AWS error. Prints the key id (and its digest) and the caller ARN, never the secret.
"""

from __future__ import annotations

import functools
import hashlib
import os
import sys
from collections.abc import Mapping
from typing import Any

import botocore.loaders
import botocore.session
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError

# One attempt only: a wrong or inactive key must fail, not be retried into a pass.
_NO_RETRIES = Config(retries={"mode": "standard", "total_max_attempts": 1}, connect_timeout=5, read_timeout=15)
#: Service models parsed once per process: in-process builds (the benchmark's fleet) would otherwise parse
#: the STS and S3 models again for every build. Credentials are never shared: each build has its session.
_models = functools.cache(botocore.loaders.create_loader)


def verify(env: Mapping[str, str]) -> tuple[bool, str]:
    """The build's work: (passed, log). Uses exactly the key pair in ``env``, nothing else."""
    log: list[str] = []
    key_id = env.get("AWS_ACCESS_KEY_ID", "")
    secret = env.get("AWS_SECRET_ACCESS_KEY", "")
    if not key_id or not secret:
        # Never fall back to another credential source: the build must use exactly what CI holds.
        return False, "verify: FAILED AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY must both be set\n"
    # CI masks secret values in logs, the key id included; its digest still shows which key was used.
    log.append(f"verify: using access key {key_id} (sha256 {hashlib.sha256(key_id.encode()).hexdigest()[:16]})")
    # botocore alone: boto3's import (s3transfer) would double every build's time for nothing.
    session = botocore.session.Session()
    session.register_component("data_loader", _models())
    session.set_credentials(key_id, secret)
    region = env.get("AWS_DEFAULT_REGION") or "us-east-1"
    endpoint = env.get("AWS_ENDPOINT_URL") or None

    def client(service: str) -> Any:
        return session.create_client(service, region_name=region, endpoint_url=endpoint, config=_NO_RETRIES)

    try:
        identity = client("sts").get_caller_identity()
        log.append(f"verify: caller {identity['Arn']}")
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


def main() -> int:
    passed, log = verify(os.environ)
    print(log, end="")
    return 0 if passed else 1


if __name__ == "__main__":
    sys.exit(main())
