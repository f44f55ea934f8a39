"""Writing the rotation config to SSM in the layout ``chalicelib.config_store`` reads.

``plan`` is pure (the preflight uses it to refuse a config AWS would refuse before anything changes);
``store`` writes the parts, then the parameter that points at them, then removes older generations of
parts except the one just replaced (a Lambda may be reading it this very second).
"""

from __future__ import annotations

import base64
import gzip
import json
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from botocore.exceptions import ClientError

from chalicelib import config_store

#: Standard-tier parameters per account and region: 10,000. A config may use at most this many parts,
#: which keeps it far from that quota (and its read under 10 GetParametersByPath pages): about 400 KB
#: compressed, several MB of YAML.
#: https://docs.aws.amazon.com/general/latest/gr/ssm.html#limits_ssm
MAX_PARTS = 100
#: The head parameter's tier: an existing Advanced parameter cannot go back to Standard, and
#: Intelligent-Tiering keeps a small one Standard.
HEAD_TIER = "Intelligent-Tiering"


@dataclass(frozen=True)
class Layout:
    head: str
    parts: dict[str, str]


def plan(name: str, text: str) -> Layout:
    """What storing ``text`` at ``name`` writes: the text alone when it fits one Standard parameter,
    else a manifest and its parts (each at most ``config_store.PART_BYTES``)."""
    size = len(text.encode())
    if 0 < size <= config_store.PART_BYTES and config_store.manifest(text) is None:
        return Layout(text, {})
    sha = config_store.digest(text)
    packed = base64.b64encode(gzip.compress(text.encode(), mtime=0)).decode()
    path = f"{config_store.parts_root(name)}/{sha[:16]}"
    step = config_store.PART_BYTES
    parts = {f"{path}/{i:04d}": packed[at:at + step] for i, at in enumerate(range(0, len(packed), step))}
    head = json.dumps({"format": config_store.FORMAT, "sha256": sha, "parts": len(parts), "path": path},
                      sort_keys=True)
    return Layout(head, parts)


def problem(text: str) -> str | None:
    """Why SSM (or this layout) would refuse ``text``; None when it can be stored. (The parameter's name
    only names the parts, it does not change how many there are.)"""
    if not text.strip():
        return "the config is empty"
    layout = plan("/", text)
    if len(layout.parts) > MAX_PARTS:
        return (f"the config needs {len(layout.parts)} SSM parameters of {config_store.PART_BYTES} bytes "
                f"(compressed); at most {MAX_PARTS} are used. Split the fleet into stages")
    return None


def _existing_parts(ssm: Any, root: str) -> Iterator[str]:
    kwargs: dict[str, Any] = {"Path": root, "Recursive": True}
    while True:
        page = ssm.get_parameters_by_path(**kwargs)
        yield from (p["Name"] for p in page.get("Parameters", []))
        if not page.get("NextToken"):
            return
        kwargs["NextToken"] = page["NextToken"]


def _delete(ssm: Any, names: list[str]) -> None:
    for at in range(0, len(names), 10):  # DeleteParameters takes at most 10 names
        ssm.delete_parameters(Names=names[at:at + 10])


def store(ssm: Any, name: str, text: str, description: str) -> str | None:
    """Store ``text`` at ``name``; returns what changed (None when it was already stored)."""
    layout = plan(name, text)
    try:
        current = ssm.get_parameter(Name=name)["Parameter"]["Value"]
    except ClientError as exc:
        if exc.response.get("Error", {}).get("Code") != "ParameterNotFound":
            raise
        current = None
    root = config_store.parts_root(name)
    keep = {p.rpartition("/")[0] for p in layout.parts}
    previous = config_store.manifest(current) if current else None
    if previous:
        keep.add(str(previous["path"]))
    if current == layout.head:
        return None
    for part, value in layout.parts.items():
        ssm.put_parameter(Name=part, Value=value, Type="String", Tier="Standard", Overwrite=True,
                          Description=f"part of {name} (written by deploy; do not edit)")
    ssm.put_parameter(Name=name, Value=layout.head, Type="String", Overwrite=True, Tier=HEAD_TIER,
                      Description=description)
    stale = [p for p in _existing_parts(ssm, root) if p.rpartition("/")[0] not in keep]
    _delete(ssm, stale)
    how = f" in {len(layout.parts)} parts" if layout.parts else ""
    return f"{'updated' if current is not None else 'created'} SSM parameter {name}{how}"


def remove(ssm: Any, name: str) -> bool:
    """Delete the config and all its parts; False if there was none."""
    parts = list(_existing_parts(ssm, config_store.parts_root(name)))
    _delete(ssm, parts)
    try:
        ssm.delete_parameter(Name=name)
    except ClientError as exc:
        if exc.response.get("Error", {}).get("Code") != "ParameterNotFound":
            raise
        return bool(parts)
    return True
