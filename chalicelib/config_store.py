"""How the rotation config is laid out in SSM Parameter Store: one parameter while it fits, parts beyond.

A parameter value is at most 4 KB (Standard) or 8 KB (Advanced), about 10-25 users of YAML; 1,000 users
are some 250 KB. So a config larger than one Standard parameter is stored gzip-compressed and base64-encoded
in Standard parameters of at most 4,096 bytes each, under a path named after its digest
(``<name>-parts/<sha256[:16]>/0000``...), and the parameter ``<name>`` itself holds a small manifest:

    {"format": "ci-key-rotator/config-parts/v1", "sha256": "...", "parts": 3, "path": "<name>-parts/<sha16>"}

Parts are written before the manifest that points at them and never change afterwards (a new config is a
new path), so a reader sees the old config or the new one, never a mix; the digest is checked anyway.
Reading a 1,000-user config is one GetParameter and one GetParametersByPath page per 10 parts.
https://docs.aws.amazon.com/systems-manager/latest/userguide/parameter-store-advanced-parameters.html
"""

from __future__ import annotations

import base64
import gzip
import hashlib
import json
from collections.abc import Callable
from typing import Any

from chalicelib.errors import ConfigError

FORMAT = "ci-key-rotator/config-parts/v1"
#: The Standard tier's value limit: parts stay there (free, and no tier to upgrade or downgrade).
PART_BYTES = 4096


def digest(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def parts_root(name: str) -> str:
    return f"{name}-parts"


def manifest(head: str) -> dict[str, Any] | None:
    """The manifest ``head`` holds, or None when ``head`` is the config itself."""
    if not head.startswith("{"):
        return None
    try:
        data = json.loads(head)
    except ValueError:
        return None
    return data if isinstance(data, dict) and data.get("format") == FORMAT else None


def assemble(found: dict[str, Any], values: dict[str, str], source: str) -> str:
    """The config text from its parts (``values``: parameter name → value), checked against the manifest."""
    path, count = str(found.get("path", "")), int(found.get("parts", 0))
    names = [f"{path}/{i:04d}" for i in range(count)]
    missing = [n for n in names if n not in values]
    if missing:
        raise ConfigError(f"{source}: {len(missing)} of its {count} parts under {path} are missing "
                          "(a deployment in progress, or parts deleted by hand); redeploy the config")
    try:
        text = gzip.decompress(base64.b64decode("".join(values[n] for n in names))).decode()
    except (ValueError, OSError) as exc:
        raise ConfigError(f"{source}: its parts under {path} do not decode ({type(exc).__name__})") from None
    if digest(text) != found.get("sha256"):
        raise ConfigError(f"{source}: its parts under {path} do not match the manifest's sha256; redeploy the config")
    return text


def resolve(head: str, read_parts: Callable[[str], dict[str, str]], source: str) -> str:
    """The config text ``head`` stands for: itself, or the parts its manifest names, read with
    ``read_parts(path)`` (parameter name → value of every parameter directly under ``path``)."""
    found = manifest(head)
    if found is None:
        return head
    return assemble(found, read_parts(str(found["path"])), source)
