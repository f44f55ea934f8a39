"""Swagger 2.0 to OpenAPI 3.0, for the descriptions openapi-core (OpenAPI 3 only) cannot read as published.

No maintained Python converter installs offline (prance delegates conversion to an online service), so this is
the small subset of the Swagger 2.0 -> OpenAPI 3.0 mapping (https://spec.openapis.org/oas/v3.0.3, "Appendix":
https://swagger.io/docs/specification/v3_0/migrating-from-openapi-2/) that request validation needs:

- ``in: path|query|header`` parameters: their type keywords move under ``schema``;
- the ``in: body`` parameter becomes ``requestBody`` with one media type per ``consumes`` (default JSON);
- ``in: formData`` parameters are refused (ValueError): none of the vendored operations has one, and a
  silent mistake here would let the emulator accept what the service refuses;
- response ``schema`` moves under ``content`` per ``produces``;
- ``#/definitions/X`` and ``#/parameters/X`` references become ``#/components/schemas/X`` and
  ``#/components/parameters/X``; ``securityDefinitions`` become ``securitySchemes`` (basic -> http basic,
  oauth2 flows renamed).

``x-ms-examples`` are dropped: they reference example files beside the published document. Everything else
(descriptions, other ``x-`` extensions, schema keywords) is copied as published.
"""

from __future__ import annotations

import copy
from typing import Any

_TYPE_KEYS = ("type", "format", "items", "enum", "default", "minimum", "maximum", "pattern", "minLength",
              "maxLength", "collectionFormat")
_FLOWS = {"implicit": "implicit", "password": "password", "application": "clientCredentials",
          "accessCode": "authorizationCode"}
_METHODS = ("get", "put", "post", "delete", "patch", "head", "options")


def _refs(node: Any) -> Any:
    if isinstance(node, dict):
        out = {}
        for key, value in node.items():
            if key == "$ref" and isinstance(value, str):
                value = (value.replace("#/definitions/", "#/components/schemas/")
                         .replace("#/parameters/", "#/components/parameters/"))
            out[key] = _refs(value)
        return out
    if isinstance(node, list):
        return [_refs(v) for v in node]
    return node


def _parameter(param: dict[str, Any]) -> dict[str, Any]:
    if "$ref" in param:
        return param
    if param.get("in") == "formData":
        raise ValueError(f"formData parameter {param.get('name')!r} is not supported")
    out = {k: v for k, v in param.items() if k not in _TYPE_KEYS}
    schema = {k: v for k, v in param.items() if k in _TYPE_KEYS and k != "collectionFormat"}
    out["schema"] = schema or {"type": "string"}
    return out


def _operation(op: dict[str, Any], consumes: list[str], produces: list[str]) -> dict[str, Any]:
    # x-ms-examples point at files beside the published document, which the pruned one does not carry.
    out = {k: v for k, v in op.items()
           if k not in ("parameters", "consumes", "produces", "responses", "x-ms-examples")}
    params = []
    for param in op.get("parameters", []):
        if param.get("in") == "body":
            media = op.get("consumes") or consumes or ["application/json"]
            out["requestBody"] = {"description": param.get("description", ""),
                                  "required": bool(param.get("required")),
                                  "content": {m: {"schema": param["schema"]} for m in media}}
        else:
            params.append(_parameter(param))
    if params:
        out["parameters"] = params
    responses = {}
    for status, response in op.get("responses", {}).items():
        response = dict(response)
        schema = response.pop("schema", None)
        if schema is not None:
            media = op.get("produces") or produces or ["application/json"]
            response["content"] = {m: {"schema": schema} for m in media}
        response.setdefault("description", "")
        responses[status] = response
    out["responses"] = responses
    return out


def _scheme(definition: dict[str, Any]) -> dict[str, Any]:
    if definition.get("type") == "basic":
        return {"type": "http", "scheme": "basic", "description": definition.get("description", "")}
    if definition.get("type") == "oauth2":
        flow: dict[str, Any] = {"scopes": definition.get("scopes", {})}
        for key in ("authorizationUrl", "tokenUrl"):
            if key in definition:
                flow[key] = definition[key]
        return {"type": "oauth2", "description": definition.get("description", ""),
                "flows": {_FLOWS[definition["flow"]]: flow}}
    return dict(definition)  # apiKey is the same in both versions


def convert(swagger: dict[str, Any]) -> dict[str, Any]:
    """The OpenAPI 3.0.3 form of a Swagger 2.0 document (ValueError for what this subset does not map)."""
    if swagger.get("swagger") != "2.0":
        raise ValueError("not a Swagger 2.0 document")
    doc = copy.deepcopy(swagger)
    consumes, produces = doc.get("consumes", []), doc.get("produces", [])
    scheme = (doc.get("schemes") or ["https"])[0]
    base = (doc.get("basePath") or "/").rstrip("/")
    paths: dict[str, Any] = {}
    for template, item in doc.get("paths", {}).items():
        converted: dict[str, Any] = {}
        if "parameters" in item:
            converted["parameters"] = [_parameter(p) for p in item["parameters"] if p.get("in") != "body"]
        for method in _METHODS:
            if method in item:
                converted[method] = _operation(item[method], consumes, produces)
        paths[template] = converted
    components: dict[str, Any] = {}
    if doc.get("definitions"):
        components["schemas"] = doc["definitions"]
    if doc.get("parameters"):
        components["parameters"] = {name: _parameter(p) for name, p in doc["parameters"].items()}
    if doc.get("securityDefinitions"):
        components["securitySchemes"] = {name: _scheme(d) for name, d in doc["securityDefinitions"].items()}
    out: dict[str, Any] = {
        "openapi": "3.0.3",
        "info": doc["info"],
        "servers": [{"url": f"{scheme}://{doc['host']}{base}"}] if doc.get("host") else [],
        "paths": paths,
        "components": components,
    }
    if "security" in doc:
        out["security"] = doc["security"]
    return _refs(out)


def merge(documents: list[dict[str, Any]]) -> dict[str, Any]:
    """One document from several of the same API (Azure DevOps publishes one file per area); the first names
    it. ValueError if two define the same path or component differently, except an OAuth2 scheme's scopes,
    which each area lists for itself and are united."""
    first = documents[0]
    merged: dict[str, Any] = {**first, "paths": dict(first["paths"]),
                              "components": {k: dict(v) for k, v in first.get("components", {}).items()}}
    for doc in documents[1:]:
        for template, item in doc["paths"].items():
            if template in merged["paths"] and merged["paths"][template] != item:
                raise ValueError(f"path {template} differs between the documents")
            merged["paths"][template] = item
        for kind, entries in doc.get("components", {}).items():
            target = merged["components"].setdefault(kind, {})
            for name, value in entries.items():
                if kind == "securitySchemes" and name in target and "flows" in target[name]:
                    value = _union_scopes(target[name], value)
                elif name in target and target[name] != value:
                    raise ValueError(f"component {kind}/{name} differs between the documents")
                target[name] = value
    return merged


def _union_scopes(known: dict[str, Any], other: dict[str, Any]) -> dict[str, Any]:
    flows = {}
    for name, flow in known["flows"].items():
        extra = other.get("flows", {}).get(name, {})
        if {k: v for k, v in extra.items() if k != "scopes"} != {k: v for k, v in flow.items() if k != "scopes"}:
            raise ValueError(f"security scheme flow {name} differs between the documents")
        flows[name] = {**flow, "scopes": {**flow["scopes"], **extra.get("scopes", {})}}
    return {**known, "flows": flows}
