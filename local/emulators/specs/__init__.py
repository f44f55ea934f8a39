"""The providers' published API descriptions, and the check every request to an emulator passes through.

``github.json``, ``circleci.json`` and ``bitbucket.json`` are the official descriptions pruned by
``prune.py`` to the operations the targets call (each names its source, version and commit in
``info.x-vendored``; README.md has the notes). ``<provider>.overlay.json`` adds, by hand and marked as
such, operations the published description lacks although the service documents and serves them.

:func:`description` loads one for :class:`local.emulators._server.EmulatorServer`, whose ``spec``
attribute names it: a request the description refuses never reaches the emulator's handlers.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any, Literal

from jsonschema_path import SchemaPath
from openapi_core.datatypes import RequestParameters
from openapi_core.templating.media_types.exceptions import MediaTypeNotFound
from openapi_core.templating.paths.exceptions import PathError
from openapi_core.validation.request.exceptions import (
    MissingRequestBodyError,
    ParameterValidationError,
    RequestBodyValidationError,
)
from openapi_core.validation.request.validators import V30RequestBodyValidator, V30RequestParametersValidator
from openapi_core.validation.schemas.exceptions import InvalidSchemaValue
from werkzeug.datastructures import Headers, ImmutableMultiDict

HERE = Path(__file__).resolve().parent
#: Our emulators' host is irrelevant: the descriptions' servers are rewritten to it plus the base path.
_HOST = "http://emulator.invalid"


@dataclass(frozen=True)
class Refusal:
    #: "not_found": no such operation (path or method); "invalid": parameters or body break the description.
    kind: Literal["not_found", "invalid"]
    #: Names fields and schema rules only, never a received value (a value may be a secret).
    message: str


def _same(path: str) -> Iterator[str]:
    yield path


def _circleci_paths(path: str) -> Iterator[str]:
    yield path
    # CircleCI's project-slug is `vcs/org/repo` with raw slashes ("The / characters may be URL-escaped",
    # says its parameter): one path parameter for the description, three segments on the wire.
    yield re.sub(r"^(/api/v2/project/)([^/]+)/([^/]+)/([^/]+)", r"\1\2%2F\3%2F\4", path)


def _bitbucket_paths(path: str) -> Iterator[str]:
    yield path
    # Bitbucket serves its collections with or without the trailing slash its description writes.
    yield path[:-1] if path.endswith("/") else path + "/"


@dataclass(frozen=True)
class _Provider:
    #: The path the emulator serves the API under (the description's server path).
    base_path: str
    #: Candidate spellings of a request path, the first the description matches wins.
    paths: Callable[[str], Iterator[str]]
    #: The service reads a body sent without a Content-Type as JSON.
    json_by_default: bool = False


PROVIDERS: dict[str, _Provider] = {
    # GitHub's own examples send JSON with curl -d and no Content-Type, e.g.
    # https://docs.github.com/rest/actions/secrets#create-or-update-a-repository-secret
    "github": _Provider("", _same, json_by_default=True),
    "circleci": _Provider("/api/v2", _circleci_paths),
    "bitbucket": _Provider("", _bitbucket_paths),
}


class _HttpRequest:
    """openapi-core's Request protocol over what the emulator server received."""

    def __init__(self, method: str, path: str, query: Mapping[str, str], headers: Mapping[str, str],
                 body: bytes, json_by_default: bool) -> None:
        self.host_url = _HOST
        self.path = path
        self.full_url_pattern = _HOST + path
        self.method = method.lower()
        self.parameters = RequestParameters(query=ImmutableMultiDict(list(query.items())),
                                            header=Headers(list(headers.items())))
        self.body = body or None
        content_type = (headers.get("Content-Type") or "").lower()
        if json_by_default and body and not content_type.startswith("application/json"):
            content_type = "application/json"
        self.content_type = content_type


class ApiDescription:
    """One provider's description: :meth:`check` says why a request breaks it, or None."""

    def __init__(self, provider: str, document: dict[str, Any]) -> None:
        self.provider = provider
        # A provider not listed needs no matching rule: its API at the server's root, paths as described.
        rules = PROVIDERS.get(provider, _Provider("", _same))
        self._paths = rules.paths
        self._json_by_default = rules.json_by_default
        document = {**document, "servers": [{"url": _HOST + rules.base_path}]}
        spec = SchemaPath.from_dict(document)
        self._validators = (V30RequestParametersValidator(spec), V30RequestBodyValidator(spec))

    def check(self, method: str, path: str, query: Mapping[str, str], headers: Mapping[str, str],
              body: bytes) -> Refusal | None:
        refusal: Refusal | None = None
        for candidate in self._paths(path):
            request = _HttpRequest(method, candidate, query, headers, body, self._json_by_default)
            errors = [e for validator in self._validators for e in validator.iter_errors(request)]
            if not errors:
                return None
            found = [e for e in errors if not isinstance(e, PathError)]
            if found and all(isinstance(e, ParameterValidationError) and e.location == "path" for e in found):
                # A path whose parameters do not fit (a run id that is not a number) names nothing: 404.
                return Refusal("not_found", "; ".join(dict.fromkeys(_describe(e) for e in found)))
            if found:
                return Refusal("invalid", "; ".join(dict.fromkeys(_describe(e) for e in found)))
            refusal = refusal or Refusal("not_found", f"{method} {path} is not an operation of the {self.provider} API")
        return refusal


def _describe(error: Exception) -> str:
    """A message naming the field and the rule broken, never the received value."""
    if isinstance(error, ParameterValidationError):
        return f"{error.location} parameter {error.name!r}: {_rules(error.__cause__) or str(error)}"
    if isinstance(error, MissingRequestBodyError):
        return "missing request body"
    if isinstance(error, RequestBodyValidationError):
        return f"request body: {_rules(error.__cause__) or type(error.__cause__ or error).__name__}"
    return type(error).__name__


def _rules(cause: BaseException | None) -> str:
    if isinstance(cause, MediaTypeNotFound):
        return f"content type must be one of {sorted(cause.availableMimetypes)}"
    if not isinstance(cause, InvalidSchemaValue):
        return ""
    rules = []
    for schema_error in cause.schema_errors:
        where = "/".join(str(p) for p in schema_error.absolute_path) or "(root)"
        if schema_error.validator == "required":
            rules.append(f"{where}: {schema_error.message}")  # names the missing key only
        else:
            rules.append(f"{where}: must satisfy {schema_error.validator} {schema_error.validator_value!r}")
    return "; ".join(rules)


def merged(provider: str) -> dict[str, Any]:
    """The pruned description of ``provider`` with its hand-written overlay merged over it."""
    document: dict[str, Any] = json.loads((HERE / f"{provider}.json").read_text(encoding="utf-8"))
    overlay_file = HERE / f"{provider}.overlay.json"
    if not overlay_file.exists():
        return document
    overlay = json.loads(overlay_file.read_text(encoding="utf-8"))
    paths = dict(document["paths"])
    for template, item in overlay.get("paths", {}).items():
        paths[template] = {**paths.get(template, {}), **item}
    components = dict(document.get("components", {}))
    for kind, entries in overlay.get("components", {}).items():
        components[kind] = {**components.get(kind, {}), **entries}
    return {**document, "paths": paths, "components": components}


@cache
def description(provider: str) -> ApiDescription:
    """``provider``'s description as the emulator checks requests against it, loaded once per process."""
    return ApiDescription(provider, merged(provider))
