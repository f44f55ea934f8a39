"""The AWS-managed Powertools layer: it supplies what the deployment package leaves out besides boto3.

Chalice bundles requirements.txt. boto3 and botocore come with the Lambda runtime, as Powertools itself
recommends. AWS builds the Powertools layer from ``aws-lambda-powertools[all]`` of each version, so the
layer of the version pinned in requirements.txt also carries pydantic, pydantic-settings, cryptography and
the X-Ray SDK (requirements-layer.txt): the package leaves them out too. AWS publishes each layer's ARN as
a public SSM parameter: ``prepare`` resolves it for ``chalice deploy`` (or takes ``--layer-arn`` where AWS
publishes none) and refuses without one, since the functions cannot import pydantic without it; the
packaged template resolves the same parameter at stack creation.
"""

from __future__ import annotations

import re
import sys
from importlib.metadata import requires
from pathlib import Path
from typing import Any

from botocore.exceptions import ClientError
from packaging.requirements import Requirement
from packaging.specifiers import SpecifierSet
from packaging.utils import canonicalize_name

from deploy.analysis import ROOT

REQUIREMENTS = ROOT / "requirements.txt"
#: What the layer supplies, pinned for local runs and tests.
LAYER_REQUIREMENTS = ROOT / "requirements-layer.txt"
#: The ARN of every published layer version, by architecture, Python and Powertools version.
_PARAMETER = "/aws/service/powertools/python/{arch}/python{python}/{version}"
_ARN = re.compile(r"^arn:aws[a-z-]*:lambda:[a-z0-9-]+:\d{12}:layer:AWSLambdaPowertoolsPythonV3-[a-z0-9_-]+:\d+$")
#: Any layer version: what ``--layer-arn`` accepts (a layer built from the same extra, under any name).
_ANY_LAYER = re.compile(r"^arn:aws[a-z-]*:lambda:[a-z0-9-]+:\d{12}:layer:[A-Za-z0-9_-]{1,140}:\d+$")


def powertools_version() -> str:
    """The Powertools version the package bundles (its pin in requirements.txt)."""
    version = pins(REQUIREMENTS).get("aws-lambda-powertools")
    if not version:
        raise ValueError(f"{REQUIREMENTS.name} must pin aws-lambda-powertools exactly (==)")
    return version


def parameter_name(arch: str = "x86_64") -> str:
    """Chalice deploys with the Python that runs it, on x86_64 unless told otherwise."""
    python = f"{sys.version_info.major}.{sys.version_info.minor}"
    return _PARAMETER.format(arch=arch, python=python, version=powertools_version())


def is_layer_arn(value: str) -> bool:
    """An AWS-published Powertools v3 layer version."""
    return bool(_ARN.match(value))


def is_layer_version_arn(value: str) -> bool:
    return bool(_ANY_LAYER.match(value))


def pins(path: Path) -> dict[str, str]:
    """``name==version`` lines of a requirements file, by normalised name."""
    found: dict[str, str] = {}
    for line in path.read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if "==" in line:
            name, version = line.split("==", 1)
            found[canonicalize_name(name.split("[")[0])] = version.strip()
    return found


def pins_the_layer_does_not_supply(layer_pins: dict[str, str] | None = None) -> list[str]:
    """Pins of requirements-layer.txt that the installed Powertools' ``[all]`` extra does not admit.

    The installed Powertools is the pinned one (make install), so its metadata is the layer's recipe.
    """
    admitted: dict[str, SpecifierSet] = {}
    for line in requires("aws-lambda-powertools") or []:
        requirement = Requirement(line)
        if requirement.marker is None or requirement.marker.evaluate({"extra": "all"}):
            admitted[canonicalize_name(requirement.name)] = requirement.specifier
    wanted = pins(LAYER_REQUIREMENTS) if layer_pins is None else layer_pins
    return [f"{name}=={version}" for name, version in wanted.items()
            if name not in admitted or not admitted[name].contains(version)]


def resolve(session: Any) -> str | None:
    """The layer's ARN in the session's region, or None if this region or version has none published."""
    try:
        value = session.client("ssm").get_parameter(Name=parameter_name())["Parameter"]["Value"]
    except ClientError:
        return None
    return value if is_layer_arn(value) else None
