"""The AWS-managed Powertools layer: it supplies the X-Ray SDK that the Tracer needs, which the deployment package leaves out.

Chalice bundles requirements.txt. boto3 and botocore come with the Lambda runtime, as Powertools itself
recommends. The X-Ray SDK depends on botocore, so bundling it would add botocore's 16 MB back. Instead,
the functions get the Powertools layer of the version pinned in requirements.txt, which includes the SDK.
AWS publishes each layer's ARN as a public SSM parameter: ``prepare`` resolves it for ``chalice deploy``,
and the packaged template resolves it at stack creation. If the layer is missing, the functions still run,
just without X-Ray subsegments (``chalicelib.observability.tracer``).
"""

from __future__ import annotations

import re
import sys
from typing import Any

from botocore.exceptions import ClientError

from deploy.analysis import ROOT

REQUIREMENTS = ROOT / "requirements.txt"
#: The ARN of every published layer version, by architecture, Python and Powertools version.
_PARAMETER = "/aws/service/powertools/python/{arch}/python{python}/{version}"
_ARN = re.compile(r"^arn:aws[a-z-]*:lambda:[a-z0-9-]+:\d{12}:layer:AWSLambdaPowertoolsPythonV3-[a-z0-9_-]+:\d+$")


def powertools_version() -> str:
    """The Powertools version the package bundles (its pin in requirements.txt)."""
    match = re.search(r"^aws-lambda-powertools(?:\[[^\]]*\])?==(\S+)", REQUIREMENTS.read_text(), re.MULTILINE)
    if not match:
        raise ValueError(f"{REQUIREMENTS.name} must pin aws-lambda-powertools exactly (==)")
    return match.group(1)


def parameter_name(arch: str = "x86_64") -> str:
    """Chalice deploys with the Python that runs it, on x86_64 unless told otherwise."""
    python = f"{sys.version_info.major}.{sys.version_info.minor}"
    return _PARAMETER.format(arch=arch, python=python, version=powertools_version())


def is_layer_arn(value: str) -> bool:
    return bool(_ARN.match(value))


def resolve(session: Any) -> str | None:
    """The layer's ARN in the session's region, or None if this region or version has none published."""
    try:
        value = session.client("ssm").get_parameter(Name=parameter_name())["Parameter"]["Value"]
    except ClientError:
        return None
    return value if is_layer_arn(value) else None
