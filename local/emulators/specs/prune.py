"""Prune a provider's full API description to the operations our clients call, plus what they reference.

Reproducible vendoring: ``python -m local.emulators.specs.prune github FULL.json`` rewrites
``local/emulators/specs/github.json`` from the full document (see ``SOURCES`` for where each one comes
from). Only operations listed in ``OPERATIONS`` survive, with every ``#/components/...`` entry they reach
through ``$ref``, so a schema keeps its exact published shape.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import yaml

from local.emulators.specs import swagger2

HERE = Path(__file__).resolve().parent

#: (method, path template) per provider, as the full description names them.
OPERATIONS: dict[str, tuple[tuple[str, str], ...]] = {
    "github": (
        ("get", "/repos/{owner}/{repo}"),
        ("get", "/repos/{owner}/{repo}/actions/secrets/public-key"),
        ("put", "/repos/{owner}/{repo}/actions/secrets/{secret_name}"),
        ("delete", "/repos/{owner}/{repo}/actions/secrets/{secret_name}"),
        ("get", "/repos/{owner}/{repo}/environments/{environment_name}/secrets/public-key"),
        ("put", "/repos/{owner}/{repo}/environments/{environment_name}/secrets/{secret_name}"),
        ("delete", "/repos/{owner}/{repo}/environments/{environment_name}/secrets/{secret_name}"),
        ("get", "/orgs/{org}/actions/secrets/public-key"),
        ("put", "/orgs/{org}/actions/secrets/{secret_name}"),
        ("delete", "/orgs/{org}/actions/secrets/{secret_name}"),
        ("post", "/repos/{owner}/{repo}/actions/workflows/{workflow_id}/dispatches"),
        ("get", "/repos/{owner}/{repo}/actions/workflows/{workflow_id}/runs"),
        ("get", "/repos/{owner}/{repo}/actions/runs/{run_id}"),
        ("get", "/repos/{owner}/{repo}/actions/runs/{run_id}/jobs"),
        ("get", "/repos/{owner}/{repo}/check-runs/{check_run_id}/annotations"),
        # GitHub App authentication (an installation token per call).
        ("get", "/repos/{owner}/{repo}/installation"),
        ("get", "/orgs/{org}/installation"),
        ("post", "/app/installations/{installation_id}/access_tokens"),
    ),
    "circleci": (
        ("post", "/project/{project-slug}/envvar"),
        ("get", "/project/{project-slug}/envvar"),
        ("get", "/project/{project-slug}/envvar/{name}"),
        ("delete", "/project/{project-slug}/envvar/{name}"),
        ("put", "/context/{context-id}/environment-variable/{env-var-name}"),
        ("delete", "/context/{context-id}/environment-variable/{env-var-name}"),
        ("get", "/context/{context-id}/environment-variable"),
        ("post", "/project/{provider}/{organization}/{project}/pipeline/run"),
        ("post", "/project/{project-slug}/pipeline"),
        ("get", "/project/{project-slug}/pipeline"),
        ("get", "/pipeline/{pipeline-id}"),
        ("get", "/pipeline/{pipeline-id}/workflow"),
        ("get", "/workflow/{id}"),
        # What a passed build authenticated with: the report its verification job stores as an artifact.
        ("get", "/workflow/{id}/job"),
        ("get", "/project/{project-slug}/{job-number}/artifacts"),
    ),
    # Workspace and deployment variables are missing from the description: bitbucket.overlay.json.
    "bitbucket": (
        ("get", "/repositories/{workspace}/{repo_slug}/pipelines_config/variables/"),
        ("post", "/repositories/{workspace}/{repo_slug}/pipelines_config/variables/"),
        ("get", "/repositories/{workspace}/{repo_slug}/pipelines_config/variables/{variable_uuid}"),
        ("put", "/repositories/{workspace}/{repo_slug}/pipelines_config/variables/{variable_uuid}"),
        ("delete", "/repositories/{workspace}/{repo_slug}/pipelines_config/variables/{variable_uuid}"),
        ("get", "/repositories/{workspace}/{repo_slug}/environments/"),
        ("post", "/repositories/{workspace}/{repo_slug}/pipelines/"),
        ("get", "/repositories/{workspace}/{repo_slug}/pipelines/"),
        ("get", "/repositories/{workspace}/{repo_slug}/pipelines/{pipeline_uuid}"),
        # What a passed build authenticated with: its steps' logs (the rotate-verify notice).
        ("get", "/repositories/{workspace}/{repo_slug}/pipelines/{pipeline_uuid}/steps/"),
        ("get", "/repositories/{workspace}/{repo_slug}/pipelines/{pipeline_uuid}/steps/{step_uuid}/log"),
    ),
}

#: Where each full description was taken from (also in README.md beside this file).
SOURCES: dict[str, dict[str, str]] = {
    "github": {
        "source": "npm package @octokit/openapi 23.0.2, generated/api.github.com.json (GitHub's official "
                  "REST description from github/rest-api-description, with Octokit's x-octokit extensions)",
        "upstream": "https://github.com/github/rest-api-description/blob/main/descriptions/api.github.com/"
                    "api.github.com.json",
        "npm_shasum": "743435033357133786d56271b48a67991a614b0a",
    },
    "circleci": {
        "source": "CircleCI-Public/circleci-sdk-go@8f010b2b63e81ed67aed66cb2bc6a0114ab64f9b "
                  "circleci/api/openapi.json (CircleCI's own copy of https://circleci.com/api/v2/openapi.json, "
                  "info.version v2, 2025-02-26)",
        "upstream": "https://circleci.com/api/v2/openapi.json",
    },
    "bitbucket": {
        "source": "tomasbjerre/bitbucket-cloud-java-rest-api@c8d29ea74dcfa9c702b701981985e7fbaa082574 openapi.yml "
                  "(https://api.bitbucket.org/swagger.json converted to OpenAPI 3.0.1 by its get-swaggerjson.sh, "
                  "2022-02-25)",
        "upstream": "https://api.bitbucket.org/swagger.json",
    },
}


def operations(provider: str) -> tuple[tuple[str, str], ...]:
    """``provider``'s operations: ``OPERATIONS``, or the ``operations`` of ``<provider>.operations.json``
    beside its description (how a provider added later lists them without editing this file)."""
    if provider in OPERATIONS:
        return OPERATIONS[provider]
    return tuple((str(m), str(t)) for m, t in _listed(provider)["operations"])


def source(provider: str) -> dict[str, str]:
    """Where ``provider``'s full description came from: ``SOURCES``, or ``source`` in its operations file."""
    if provider in SOURCES:
        return SOURCES[provider]
    return {str(k): str(v) for k, v in _listed(provider)["source"].items()}


def providers() -> list[str]:
    """Every provider with a vendored description's operation list."""
    return sorted({*OPERATIONS, *(p.name.removesuffix(".operations.json") for p in HERE.glob("*.operations.json"))})


def _listed(provider: str) -> dict[str, Any]:
    path = HERE / f"{provider}.operations.json"
    if not path.exists():
        raise KeyError(f"no operation list for {provider!r} (OPERATIONS or {path.name})")
    listed: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    return listed


def _refs(node: Any) -> Iterator[str]:
    if isinstance(node, dict):
        ref = node.get("$ref")
        if isinstance(ref, str):
            yield ref
        for value in node.values():
            yield from _refs(value)
    elif isinstance(node, list):
        for value in node:
            yield from _refs(value)


def prune(full: dict[str, Any], operations: tuple[tuple[str, str], ...], provider: str,
          overlay: dict[str, Any] | None = None) -> dict[str, Any]:
    """The description reduced to ``operations`` and the components they (and ``overlay``'s hand-written
    operations) reach; KeyError names an operation the description lacks."""
    paths: dict[str, Any] = {}
    for method, template in operations:
        item = full["paths"].get(template)
        if item is None or method not in item:
            raise KeyError(f"{provider}: {method.upper()} {template} is not in the description")
        kept = paths.setdefault(template, {k: v for k, v in item.items() if k in ("parameters", "servers")})
        kept[method] = item[method]
    components: dict[str, dict[str, Any]] = {}
    overlay = overlay or {}
    # Components only the overlay defines come with it; everything else comes from the description, so the
    # pruned document stands on its own.
    own = {f"#/components/{kind}/{name}" for kind, entries in overlay.get("components", {}).items() for name in entries
           if name not in full.get("components", {}).get(kind, {})}
    pending = [ref for ref in (*_refs(paths), *_refs(overlay.get("paths", {})), *_refs(overlay.get("components", {})))
               if ref not in own]
    while pending:
        ref = pending.pop()
        if not ref.startswith("#/components/"):
            raise ValueError(f"{provider}: external $ref {ref!r} is not supported")
        _, _, kind, name = ref.split("/", 3)
        if name in components.get(kind, {}):
            continue
        target = full["components"][kind][name]
        components.setdefault(kind, {})[name] = target
        pending.extend(ref for ref in _refs(target) if ref not in own)
    pruned: dict[str, Any] = {
        "openapi": full["openapi"],
        "info": {**full["info"], "x-vendored": source(provider)},
        "servers": full.get("servers", []),
        "paths": paths,
        "components": {kind: dict(sorted(entries.items())) for kind, entries in sorted(components.items())},
    }
    if "security" in full:
        pruned["security"] = full["security"]
    if "securitySchemes" in full.get("components", {}):
        pruned["components"]["securitySchemes"] = full["components"]["securitySchemes"]
    return pruned


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("provider", choices=providers())
    parser.add_argument("full", type=Path, nargs="+",
                        help="the full description (JSON or YAML); several files of one API are merged, and a "
                             "Swagger 2.0 file is converted to OpenAPI 3.0 first (swagger2.py)")
    args = parser.parse_args()
    documents = []
    for path in args.full:
        text = path.read_text(encoding="utf-8-sig")  # Microsoft's files start with a byte order mark
        document = json.loads(text) if path.suffix == ".json" else yaml.safe_load(text)
        documents.append(swagger2.convert(document) if document.get("swagger") == "2.0" else document)
    full = swagger2.merge(documents)
    overlay_file = HERE / f"{args.provider}.overlay.json"
    overlay = json.loads(overlay_file.read_text(encoding="utf-8")) if overlay_file.exists() else None
    pruned = prune(full, operations(args.provider), args.provider, overlay)
    out = HERE / f"{args.provider}.json"
    out.write_text(json.dumps(pruned, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
    print(f"{out.relative_to(HERE.parents[2])}: {len(pruned['paths'])} paths, {out.stat().st_size} bytes")


if __name__ == "__main__":
    main()
