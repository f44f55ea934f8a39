"""Azure DevOps Pipelines (REST 7.1): a variable group, pipeline runs, service hooks with Basic credentials.

Contract: docs/ci-providers/azure_devops.md.

* Variables live in a variable group linked to the pipeline. ``PUT .../variablegroups/{groupId}`` replaces
  the whole group: a variable left out is deleted, and a secret sent without a value keeps the value it
  has (a GET shows every secret as null). So each write reads the group, resends every other variable as
  it was (secrets without a value) and sets ours with ``isSecret: true``.
* A verification is ``POST .../pipelines/{pipelineId}/runs`` with the nonce as a template parameter; its
  verdict is the run's ``state``/``result``. A run id is ``<organization>/<pipelineId>/<runId>``: run ids
  (build ids) are unique within an organization only, and the callback table is keyed across targets.
* Service hooks have no body signature; the Web Hooks consumer can send Basic credentials, compared here in
  constant time. That proves the sender knows them, not what the body says: every verdict is confirmed with
  ``run_status`` before it counts (chalicelib/webhooks.py), as for every provider.
"""

from __future__ import annotations

import base64
import binascii
import hmac
import json
import logging
import re
from collections.abc import Mapping
from typing import Any, Literal, Unpack
from urllib.parse import quote, urlsplit

from pydantic import Field, field_validator

from chalicelib.errors import TargetPushFailed, VerificationFailed, VerificationTriggerFailed
from chalicelib.pacing import Limit, RateBudget
from chalicelib.targets.base import (
    CITarget,
    HttpOptions,
    ProviderSummary,
    RunRef,
    RunState,
    RunStatus,
    TargetConfig,
    WebhookEvent,
    WebhookRejected,
)
from chalicelib.targets.http import HttpError, Response, send_once
from chalicelib.targets.registry import register

log = logging.getLogger(__name__)

DEFAULT_API_URL = "https://dev.azure.com"
API_VERSION = "7.1"
#: Organization names: letters, digits and hyphens, not starting or ending with a hyphen.
_ORGANIZATION = r"^[A-Za-z0-9](?:[A-Za-z0-9-]{0,48}[A-Za-z0-9])?$"
#: Project names exclude these characters (and may not start with _ or a dot): sent URL-encoded anyway.
_PROJECT = r"^[^\\/:*?\"<>|;#$%{}+=\[\]&,'~_.][^\\/:*?\"<>|;#$%{}+=\[\]&,'~]{0,63}$"
_RUN_ID = re.compile(r"^([a-z0-9-]+)/(\d{1,10})/(\d{1,10})$")
#: The service hook event this provider reads: "Build completed" (publisher tfs).
BUILD_COMPLETE = "build.complete"
#: Newest runs searched for a nonce after a gateway error on the trigger.
RUN_SEARCH = 20
#: A variable group whose variables are linked from a Key Vault cannot be written through this API.
_WRITABLE_GROUP_TYPES = frozenset({"Vsts", ""})


class AzureDevOpsTargetConfig(TargetConfig):
    """Where the key pair lives in Azure DevOps, and which pipeline proves it works."""

    provider: Literal["azure_devops"]
    api_url: str = DEFAULT_API_URL
    organization: str
    #: Project name or id; the variable group and the pipeline are in it.
    project: str
    #: The variable group (Pipelines > Library) that holds both variables; linked to the pipeline.
    variable_group_id: int = Field(gt=0, lt=2**31)
    #: The pipeline (its definition id) that runs templates/verify/azure_devops/azure-pipelines.yml.
    pipeline_id: int = Field(gt=0, lt=2**31)
    branch: str = Field("main", min_length=1, max_length=255)
    #: The template parameter that receives the nonce (declared in the pipeline file); None sends none.
    nonce_parameter: str | None = Field("nonce", pattern=r"^[A-Za-z_][A-Za-z0-9_]*$")

    @field_validator("organization")
    @classmethod
    def _organization(cls, value: str) -> str:
        if re.fullmatch(_ORGANIZATION, value) is None:
            raise ValueError(f"must be an Azure DevOps organization name, not {value!r}")
        return value

    @field_validator("project")
    @classmethod
    def _project(cls, value: str) -> str:
        if re.fullmatch(_PROJECT, value) is None:
            raise ValueError(f"must be an Azure DevOps project name or id, not {value!r}")
        return value

    def variable_store(self) -> tuple[str, ...]:
        # Group ids are unique within an organization; a group can be shared by several projects.
        return ("variablegroup", self.organization.lower(), str(self.variable_group_id))


def map_run(state: str | None, result: str | None, url: str | None = None) -> RunStatus:
    """Only completed/succeeded is a pass. ``canceling`` can only end canceled: a failure already."""
    detail = f"{state or 'unknown'}/{result}" if result else (state or "unknown")
    if state == "completed":
        return RunStatus(RunState.SUCCEEDED if result == "succeeded" else RunState.FAILED, detail, url)
    if state == "canceling":
        return RunStatus(RunState.FAILED, detail, url)
    return RunStatus(RunState.PENDING, detail, url)


def map_build_result(status: str | None, result: str | None) -> RunStatus | None:
    """A ``build.complete`` event's verdict; ``partiallySucceeded`` (a step failed but continued) fails.
    None when the build is not completed."""
    if status != "completed":
        return None
    passed = result == "succeeded"
    return RunStatus(RunState.SUCCEEDED if passed else RunState.FAILED, f"completed/{result or 'none'}")


def basic_credentials(user: str, password: str) -> str:
    """The ``Authorization`` value of a service hook delivery with Basic authentication."""
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


def run_id_for(organization: str, pipeline_id: int | str, run_id: int | str) -> str:
    # Organization names are case-insensitive; the webhook's URL may spell it differently from the config.
    return f"{organization.lower()}/{pipeline_id}/{run_id}"


#: Azure DevOps counts load, not requests: 200 TSTUs per identity in any sliding five minutes
#: (https://learn.microsoft.com/en-us/azure/devops/integrate/concepts/rate-limits). It publishes no cost per request
#: ("You can't calculate usage in TSTUs for an action with a formula"; the organization's Usage page shows what
#: an identity consumed), so nothing is declared by default. An operator who measured what one target's rotation
#: costs (one GET and two PUTs of the group, one POST and a few status reads) sets
#: ``AzureDevOpsTarget.rate_budget = azure_devops_rate_budget(<TSTUs>)``.
AZURE_DEVOPS_TSTU = "tstu"
AZURE_DEVOPS_LIMITS_DOC = "https://learn.microsoft.com/en-us/azure/devops/integrate/concepts/rate-limits"


def azure_devops_rate_budget(tstu_per_rotation: float) -> RateBudget:
    if tstu_per_rotation <= 0:
        raise ValueError("tstu_per_rotation must be positive: read it from the organization's Usage page")
    return RateBudget(limits=(Limit(AZURE_DEVOPS_TSTU, 200, 300, AZURE_DEVOPS_LIMITS_DOC),),
                      per_target={AZURE_DEVOPS_TSTU: tstu_per_rotation})


@register
class AzureDevOpsTarget(CITarget):
    provider = "azure_devops"
    config_model = AzureDevOpsTargetConfig
    summary = ProviderSummary(
        secret_store=(
            "variable group: GET, then PUT the whole group (other variables resent, other secrets without a "
            "value so the service keeps them); always `isSecret: true`"
        ),
        verification="`POST .../pipelines/{id}/runs` with the nonce as a template parameter; `state`/`result`",
        webhook=(
            "service hook `build.complete` with Basic credentials (no body signature: the verdict is always "
            "confirmed by the runs API); delivery id = the event `id`"
        ),
    )
    config: AzureDevOpsTargetConfig

    webhook_secret_kind = "Basic credentials (user:password)"
    webhook_signs_body = False

    def __init__(self, config: TargetConfig, token: str, **options: Unpack[HttpOptions]) -> None:
        super().__init__(config, token, **options)
        cfg = self.config
        self._org = quote(cfg.organization, safe="")
        self._project = quote(cfg.project, safe="")

    def _api_headers(self) -> dict[str, str]:
        # A personal access token is the password of Basic auth with an empty user name.
        return {"Authorization": "Basic " + base64.b64encode(f":{self._token}".encode()).decode()}

    def _call(self, method: str, path: str, **kwargs: Any) -> Response:
        return self._http.request(method, path, params={"api-version": API_VERSION}, **kwargs)

    # -- push ---------------------------------------------------------------------------------------

    def _group_path(self, *, project: bool) -> str:
        group = self.config.variable_group_id
        # 7.1 reads a group under its project and updates it under the organization (it may be shared).
        where = f"/{self._org}/{self._project}" if project else f"/{self._org}"
        return f"{where}/_apis/distributedtask/variablegroups/{group}"

    def _prepare_push(self) -> dict[str, Any]:
        try:
            group = self._call("GET", self._group_path(project=True), expect=(200,)).json
        except HttpError as exc:
            raise self._push_failed("read the variable group", exc) from None
        if not isinstance(group, dict) or not isinstance(group.get("variables"), dict):
            # The service answers 200 with an empty body for a group id that does not exist.
            raise TargetPushFailed(f"{self._where()}: variable group {self.config.variable_group_id} not found")
        if str(group.get("type") or "") not in _WRITABLE_GROUP_TYPES:
            raise TargetPushFailed(f"{self._where()}: the variable group is of type {group.get('type')!r} "
                                   "(linked to a Key Vault?): its variables cannot be written through the API")
        return group

    def _write_variable(self, name: str, value: str, prepared: dict[str, Any]) -> None:
        self._put_group(prepared, name, {"value": value, "isSecret": True}, f"set variable {name}")
        log.info("%s: variable %s set", self._where(), name)

    def _delete_variable(self, name: str, prepared: dict[str, Any]) -> None:
        if _find(prepared["variables"], name) is None:
            return  # already absent
        self._put_group(prepared, name, None, f"delete variable {name}")
        log.info("%s: variable %s deleted", self._where(), name)

    def _put_group(self, group: dict[str, Any], name: str, new: dict[str, Any] | None, what: str) -> None:
        """PUT the whole group with ``name`` set to ``new`` (None: removed), every other variable as it is."""
        variables: dict[str, Any] = {}
        for key, var in group["variables"].items():
            if key.lower() == name.lower() or not isinstance(var, dict):
                continue  # names are case-insensitive: ours replaces any spelling of it
            kept: dict[str, Any] = {"isSecret": bool(var.get("isSecret"))}
            if var.get("isReadOnly") is not None:
                kept["isReadOnly"] = bool(var["isReadOnly"])
            if not var.get("isSecret"):
                kept["value"] = "" if var.get("value") is None else str(var["value"])
            # A secret goes without a value: the service keeps the one it stores (the GET showed null).
            variables[key] = kept
        if new is not None:
            variables[name] = new
        body: dict[str, Any] = {"name": group.get("name") or "", "type": group.get("type") or "Vsts",
                                "variables": variables}
        for field in ("description", "providerData", "variableGroupProjectReferences"):
            if group.get(field) is not None:
                body[field] = group[field]
        try:
            answer = self._call("PUT", self._group_path(project=False), json=body, expect=(200,)).json
        except HttpError as exc:
            raise self._push_failed(what, exc) from None
        stored = answer.get("variables") if isinstance(answer, dict) else None
        # What the next write resends: the service's view, secrets again without values.
        group["variables"] = stored if isinstance(stored, dict) else {
            k: ({"isSecret": True, "value": None} if v.get("isSecret") else v) for k, v in variables.items()}

    def _where(self) -> str:
        cfg = self.config
        return f"azure_devops target {cfg.id!r} ({cfg.organization}/{cfg.project} group {cfg.variable_group_id})"

    def _push_failed(self, what: str, exc: HttpError) -> TargetPushFailed:
        return TargetPushFailed(f"{self._where()}: {what} refused: {exc}")

    # -- verification -------------------------------------------------------------------------------

    def _runs_path(self) -> str:
        return f"/{self._org}/{self._project}/_apis/pipelines/{self.config.pipeline_id}/runs"

    def trigger_verification(self, nonce: str) -> RunRef:
        cfg = self.config
        body: dict[str, Any] = {"resources": {"repositories": {"self": {"refName": f"refs/heads/{cfg.branch}"}}}}
        if cfg.nonce_parameter:
            body["templateParameters"] = {cfg.nonce_parameter: nonce}
        try:
            found = send_once(lambda: self._call("POST", self._runs_path(), json=body, expect=(200, 201)),
                              lambda: self._find_run(nonce), f"{self._where()}: run pipeline {cfg.pipeline_id}")
        except HttpError as exc:
            raise VerificationTriggerFailed(
                f"{self._where()}: run pipeline {cfg.pipeline_id} on {cfg.branch} refused: {exc}") from None
        run = found.json if isinstance(found, Response) else found
        run_number = run.get("id") if isinstance(run, dict) else None
        if not isinstance(run_number, int) or isinstance(run_number, bool):
            raise VerificationTriggerFailed(f"{self._where()}: the new run of pipeline {cfg.pipeline_id} has no id")
        log.info("%s: run %s of pipeline %s started", self._where(), run_number, cfg.pipeline_id)
        return RunRef(run_id_for(cfg.organization, cfg.pipeline_id, run_number), _web_url(run))

    def _find_run(self, nonce: str) -> dict[str, Any] | None:
        """The run this try started, by its nonce template parameter, among the pipeline's newest runs."""
        name = self.config.nonce_parameter
        if not name:
            return None  # nothing identifies our run: assume none was created
        listed = self._call("GET", self._runs_path(), expect=(200,)).json or {}
        runs = [r for r in (listed.get("value") or []) if isinstance(r, dict) and isinstance(r.get("id"), int)]
        for run in sorted(runs, key=lambda r: -int(r["id"]))[:RUN_SEARCH]:
            if "templateParameters" not in run:  # the list may leave them out; the run itself has them
                run = self._call("GET", f"{self._runs_path()}/{run['id']}", expect=(200,)).json or {}
            if (run.get("templateParameters") or {}).get(name) == nonce:
                return dict(run)
        return None

    def run_status(self, run_id: str) -> RunStatus:
        cfg = self.config
        match = _RUN_ID.fullmatch(run_id)
        if (match is None or match.group(1) != cfg.organization.lower()
                or int(match.group(2)) != cfg.pipeline_id):
            raise VerificationFailed(f"{self._where()}: {run_id!r} is not a run of pipeline {cfg.pipeline_id}")
        try:
            run = self._call("GET", f"{self._runs_path()}/{match.group(3)}", expect=(200,)).json
        except HttpError as exc:
            raise VerificationFailed(f"{self._where()}: cannot read run {match.group(3)}: {exc}") from None
        run = run if isinstance(run, dict) else {}
        return map_run(run.get("state"), run.get("result"), _web_url(run))

    # -- webhook ------------------------------------------------------------------------------------

    @classmethod
    def _verify_signature(cls, lower_headers: Mapping[str, str], raw_body: bytes, secret: str) -> None:
        """``secret`` is ``user:password``, as set under the Web Hooks action's Basic authentication."""
        scheme, _, encoded = lower_headers.get("authorization", "").partition(" ")
        if scheme.lower() != "basic" or not encoded.strip():
            raise WebhookRejected("missing Basic Authorization (does the service hook set a user name and "
                                  "password?)", 401)
        try:
            given = base64.b64decode(encoded.strip(), validate=True)
        except (binascii.Error, ValueError):
            raise WebhookRejected("Authorization is not Basic credentials", 401) from None
        if not hmac.compare_digest(given, secret.encode()):
            raise WebhookRejected("Basic credentials do not match", 401)

    @classmethod
    def _parse_event(cls, lower_headers: Mapping[str, str], raw_body: bytes, delivery: str | None) -> WebhookEvent:
        payload = _payload(raw_body)
        # A retried notification repeats the event and its id; the id is the delivery's identity.
        event_id = payload.get("id")
        if not isinstance(event_id, str) or not event_id:
            raise WebhookRejected("event without an id", 400)
        if payload.get("eventType") != BUILD_COMPLETE:
            return WebhookEvent(event_id, None, None)
        build = payload.get("resource")
        if not isinstance(build, dict):
            raise WebhookRejected("build.complete event without a resource", 400)
        number, definition = build.get("id"), build.get("definition")
        pipeline = definition.get("id") if isinstance(definition, dict) else None
        organization = _organization_of(build.get("url"))
        if not isinstance(number, int) or not isinstance(pipeline, int) or organization is None:
            raise WebhookRejected("build.complete event without resource id, definition.id and url", 400)
        status = map_build_result(build.get("status"), build.get("result"))
        return WebhookEvent(event_id, run_id_for(organization, pipeline, number), status)


def _find(variables: Mapping[str, Any], name: str) -> str | None:
    return next((key for key in variables if key.lower() == name.lower()), None)


def _web_url(run: Any) -> str | None:
    links = run.get("_links") if isinstance(run, dict) else None
    web = links.get("web") if isinstance(links, dict) else None
    href = web.get("href") if isinstance(web, dict) else None
    return href if isinstance(href, str) else None


def _organization_of(url: Any) -> str | None:
    """``https://dev.azure.com/{organization}/{project}/_apis/...`` (a server: ``.../{collection}/{project}/
    _apis``); the older ``https://{organization}.visualstudio.com/{project}/_apis/...``."""
    if not isinstance(url, str):
        return None
    parts = urlsplit(url)
    segments = [s for s in parts.path.split("/") if s]
    if "_apis" not in segments:
        return None
    at = segments.index("_apis")
    if at >= 2:
        return segments[at - 2]
    host = parts.hostname or ""
    return host.split(".")[0] if host.endswith(".visualstudio.com") else None


def _payload(raw_body: bytes) -> dict[str, Any]:
    try:
        payload = json.loads(raw_body)
    except ValueError:
        raise WebhookRejected("body is not JSON", 400) from None
    if not isinstance(payload, dict):
        raise WebhookRejected("body is not a JSON object", 400)
    return payload
