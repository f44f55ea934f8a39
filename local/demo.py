"""``make demo``: the whole product on this machine, no AWS account, no network beyond 127.0.0.1.

Runs the scenarios on the embedded runtime, streaming each execution's timeline while it runs (every state
as it is entered, the target of each Map iteration, what each simulated wait stands for), ends with a
summary, and writes under ``.demo/``: ``report.json`` (the contract other tools read), every execution's full
history, every log line the handlers wrote, every SNS message published, and ``index.html`` (the state
machine graph with each scenario's path; local/demo_html.py).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
import textwrap
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from chalicelib import clock
from chalicelib.deps import get_deps
from chalicelib.workflow.state import execution_name
from local import demo_html, iam_consistency, sim_clock
from local.demo_timeline import WIDTH, Timeline, all_states, human_duration, wait_seconds
from local.runtime import LocalRuntime
from local.world import World, split, target_id

USER = "ci-deployer"
REPO = "acme/web-app"
#: Production-like timings, compressed for the demo: 24 h of recovery window pass in ~4 s.
TIMINGS = {"drain_period": "10m", "recovery_window": "24h", "verify_timeout": "5m"}
TIME_SCALE = 1 / 20000
ASL_PATH = Path(__file__).resolve().parent.parent / "statemachine" / "rotation.asl.json"
#: How often a running execution's history is read for the live timeline.
POLL_SECONDS = 0.2


PLATFORM_USER = "ci-platform"
PLATFORM_PROJECTS = ["acme/platform", "gitlab:acme/platform"]
#: The graduation scenario's user: one GitHub and one GitLab pipeline that move to OIDC federation.
RELEASE_USER = "ci-release"
RELEASE_PROJECTS = ["acme/release", "gitlab:acme/release"]
GRADUATE_ASL_PATH = ASL_PATH.with_name("graduate.asl.json")


@dataclass
class Scenario:
    name: str
    title: str
    #: Sets the scene, then starts the rotation and returns its execution ARN.
    start: Callable[[World, str], str]
    expected: str = "SUCCEEDED"
    user: str = USER
    projects: tuple[str, ...] = (REPO,)


def _manual(world: World, name: str, user: str = USER) -> str:
    return world.start_rotation(user, reason="manual", rotation_id=f"{name}-{int(time.time())}").execution_arn


def _failing_build(world: World, name: str) -> str:
    world.github.fail_next_builds(REPO, 1)
    return _manual(world, name)


def _gitlab_refuses(world: World, name: str) -> str:
    """ci-platform deploys from GitHub and GitLab; its GitLab token lost access to the project."""
    if PLATFORM_USER not in world.users:
        world.add_user(PLATFORM_USER, PLATFORM_PROJECTS)
        adopted = world.start_rotation(PLATFORM_USER, rotation_id=f"{name}-setup-{int(time.time())}")
        world.runtime.wait(adopted.execution_arn, timeout=300)
        print(f"  setup: {PLATFORM_USER} on {', '.join(PLATFORM_PROJECTS)}, rotated once (adopted)")
    world.emulator("gitlab").inject("*", r".*/variables.*", statuses=[403] * 20)
    print("  GitLab now answers 403 to every variable write of acme/platform")
    return _manual(world, name, PLATFORM_USER)


#: What the demo's CI user may do itself besides GetCallerIdentity (which no Deny stops): read itself, and list
#: SNS topics. The attacker's session probes ListTopics, not GetUser: a GetSessionToken session without MFA
#: cannot call IAM at all (https://docs.aws.amazon.com/STS/latest/APIReference/API_GetSessionToken.html), so only
#: a call outside IAM and STS shows what the containment's Deny adds.
SELF_READ = {"Version": "2012-10-17", "Statement": [
    {"Effect": "Allow", "Action": ["iam:GetUser", "sns:ListTopics"], "Resource": "*"}]}
#: Scenario name -> what the attacker's session could do at each point of the containment.
_SESSION_PROBES: dict[str, dict[str, str]] = {}


def _attacker(world: World, leaked: str, name: str, user: str = USER, repo: str = REPO) -> None:
    """Someone holding the leaked key reads the user, tries more, and mints a session (GetSessionToken)
    before the leak is reported; the session (ListTopics) is tried after the deactivation and after containment."""
    import boto3
    from botocore.exceptions import ClientError

    runtime = world.runtime
    runtime.client("iam").put_user_policy(UserName=user, PolicyName="self-read", PolicyDocument=json.dumps(SELF_READ))
    secret = world.github.secret_value(repo, "AWS_SECRET_ACCESS_KEY")  # what leaked from the CI logs

    def client(service: str, key_id: str, secret_key: str | None, token: str | None = None) -> Any:
        return boto3.session.Session().client(service, endpoint_url=runtime.endpoint, region_name="us-east-1",
                                              aws_access_key_id=key_id, aws_secret_access_key=secret_key,
                                              aws_session_token=token)

    iam = client("iam", leaked, secret)
    iam.get_user(UserName=user)
    try:
        iam.list_users()
    except ClientError:
        pass  # recon beyond the user's rights: refused, and recorded by CloudTrail
    minted = client("sts", leaked, secret).get_session_token()["Credentials"]
    session = client("sns", minted["AccessKeyId"], minted["SecretAccessKey"], minted["SessionToken"])
    probes = _SESSION_PROBES.setdefault(name, {})

    def probe(point: str) -> Callable[[Any], None]:
        def run(_event: Any) -> None:
            try:
                session.list_topics()
                probes.setdefault(point, "works")
            except ClientError as exc:
                probes.setdefault(point, f"refused ({exc.response['Error']['Code']})")
        return run

    probes["minted_session_key_id"] = minted["AccessKeyId"]
    runtime.inject_fault("revoke_sessions", probe("after_deactivation"))  # the leaked key is Inactive by then
    runtime.inject_fault("verify_build", probe("after_containment"))
    print(f"  attacker with {leaked}: GetUser, ListUsers (refused), GetSessionToken → session "
          f"{minted['AccessKeyId']} (probed with SNS ListTopics: IAM takes no session minted without MFA)")


def _exposure(world: World, name: str) -> str:
    """AWS Health reports the current key leaked: the event goes through the local EventBridge."""
    leaked = next(k for k, s in world.key_statuses(USER).items() if s == "Active")
    _attacker(world, leaked, name)
    _EVENT_AT[name] = sim_clock.now()
    matched = world.runtime.emit(health_event(leaked))
    print(f"  AWS Health AWS_RISK_CREDENTIALS_EXPOSED for {leaked} → rules {matched}")
    arn = world.runtime.state_machine_arn.replace(":stateMachine:", ":execution:")
    execution = f"{arn}:{execution_name(USER, f'exposure-{leaked}')}"
    sfn = world.runtime.client("stepfunctions")
    for _ in range(600):
        try:
            sfn.describe_execution(executionArn=execution)
            return execution
        except sfn.exceptions.ExecutionDoesNotExist:
            time.sleep(0.05)
    raise TimeoutError("the exposure handler started no rotation")


#: Scenario name -> simulated time (local/sim_clock.py) its AWS Health event arrived.
_EVENT_AT: dict[str, float] = {}


def seconds_to_contained(key_id: str, event_at: float) -> float | None:
    """Event arrival → the first moment IAM refuses ``key_id`` (its deactivation + the revocation window),
    on the simulated clock: the retries and waits in between count as the seconds they stand for."""
    refused = iam_consistency.refused_from(key_id)
    return None if refused is None else round(refused - event_at, 3)


def health_event(key_id: str) -> dict[str, Any]:
    return {
        "version": "0", "id": str(uuid.uuid4()), "detail-type": "AWS Health Event", "source": "aws.health",
        "account": "123456789012", "time": clock.iso(clock.now()), "region": "us-east-1", "resources": [],
        "detail": {
            "eventArn": f"arn:aws:health:global::event/RISK/AWS_RISK_CREDENTIALS_EXPOSED/{uuid.uuid4().hex}",
            "service": "RISK", "eventTypeCode": "AWS_RISK_CREDENTIALS_EXPOSED", "eventTypeCategory": "issue",
            "affectedEntities": [{"entityValue": key_id}],
        },
    }


SCENARIOS = [
    Scenario("adoption", "Adopt a key created by hand and rotate it", _manual),
    Scenario("rotation", "A normal rotation of the rotator's own key", _manual),
    Scenario("failed-verification", "The verification build fails: roll back, nothing broken", _failing_build,
             expected="FAILED"),
    Scenario("multi-provider-partial-failure",
             "GitHub takes the new key, GitLab refuses it: GitHub is restored, nothing is left broken",
             _gitlab_refuses, expected="FAILED", user=PLATFORM_USER, projects=tuple(PLATFORM_PROJECTS)),
    Scenario("exposure", "AWS reports the key leaked: emergency rotation, leaked key off right after the push",
             _exposure),
]


#: Runs after the rotations, on the graduation state machine (statemachine/graduate.asl.json): its own graph.
GRADUATION = "graduate-to-oidc"
GRADUATION_TITLE = ("A user with a GitHub and a GitLab pipeline graduates to OIDC federation: zero keys left, both "
                    "CIs build through OIDC, another repository's token is refused")
#: The last scenario: not a rotation, so it has no execution in the page's graph.
AUDIT = "audit"
AUDIT_TITLE = "Someone creates a key for a managed CI user by hand: the audit reports it, the rotator's own changes are not"


def scenario_names() -> list[str]:
    """Every scenario the demo runs, in order (the README's table must list exactly these)."""
    return [s.name for s in SCENARIOS] + [GRADUATION, AUDIT]


def _key_status(world: World, user: str, key_id: str | None) -> str | None:
    if key_id is None:
        return None
    return world.key_statuses(user).get(key_id, "Deleted")


def say(text: str, indent: str = "  ") -> None:
    """Print ``text`` wrapped at word boundaries: nothing the demo prints is ever cut."""
    print(textwrap.fill(text, width=WIDTH, initial_indent=indent, subsequent_indent=indent + "    ",
                        break_long_words=False, break_on_hyphens=False))


def stream(runtime: LocalRuntime, execution_arn: str, timeline: Timeline, timeout: float = 300.0,
           emit: Callable[[str], None] = print) -> dict[str, Any]:
    """Emit the execution's timeline while it runs (each state as it is entered); returns
    ``describe_execution`` once it has ended and every event has been shown."""
    sfn = runtime.client("stepfunctions")
    deadline = time.monotonic() + timeout
    shown = 0
    while True:
        # Described before the history is read: once it has ended, that history holds every event.
        description = sfn.describe_execution(executionArn=execution_arn)
        events = runtime.history(execution_arn)
        fresh = []
        for event in events:
            if event["id"] == shown + 1:  # in order, and never past a gap a parallel branch has not filled
                fresh.append(event)
                shown += 1
            elif event["id"] > shown + 1:
                break
        for line in timeline.feed(fresh):
            emit(line.render())
        if description["status"] != "RUNNING" and shown >= len(events):
            return description
        if time.monotonic() > deadline:
            raise TimeoutError(f"{execution_arn} still RUNNING after {timeout}s")
        time.sleep(POLL_SECONDS)


def _waited(history: list[dict[str, Any]], wait_state: str) -> float:
    """The seconds the Wait state ``wait_state`` stood for in this execution (0 if it was not entered)."""
    definition = all_states(load_asl()).get(wait_state, {})
    for event in history:
        details = event.get("stateEnteredEventDetails") or {}
        if details.get("name") == wait_state:
            return wait_seconds(definition, json.loads(details.get("input") or "{}")) or 0.0
    return 0.0


def load_asl() -> dict[str, Any]:
    return json.loads(ASL_PATH.read_text())


def load_graduate_asl() -> dict[str, Any]:
    return json.loads(GRADUATE_ASL_PATH.read_text())


def run_scenario(world: World, scenario: Scenario, out: Path) -> dict[str, Any]:
    runtime = world.runtime
    before = len(runtime.alerts())
    print()
    say(f"■ {scenario.name}: {scenario.title}", indent="")
    user = scenario.user
    old_key = next((k for k, s in world.key_statuses(user).items() if s == "Active"), None) \
        if user in world.users else None
    execution_arn = scenario.start(world, scenario.name)
    old_key = old_key or next(k for k, s in world.key_statuses(user).items() if s == "Active")
    print(f"  {user}: execution {execution_arn.rsplit(':', 1)[-1]} started; live timeline:")
    description = stream(runtime, execution_arn, Timeline(load_asl(), runtime.time_scale))
    history = runtime.history(execution_arn)
    rotation_id = json.loads(description["input"])["rotation_id"]
    (out / "histories").mkdir(exist_ok=True)
    (out / "histories" / f"{scenario.name}.json").write_text(json.dumps(history, indent=1, default=str))

    rotation = get_deps().ledger.rotation(user, rotation_id) or {}
    new_key = rotation.get("new_key_id")
    seconds_verified_to_inactive = None
    verified = [t.get("verified_at") for t in rotation.get("targets", {}).values() if t.get("verified")]
    if verified and rotation.get("deactivated_at"):
        last_verified = max(clock.parse_iso(v) for v in verified)
        seconds_verified_to_inactive = round(
            (clock.parse_iso(rotation["deactivated_at"]) - last_verified).total_seconds(), 3)
    event_at = _EVENT_AT.get(scenario.name)
    seconds_event_to_contained = seconds_to_contained(old_key, event_at) if event_at is not None else None
    held = world.held_key(scenario.projects[0])
    alerts = [a for a in runtime.alerts()[before:] if a["message"].get("user") == user
              and a["message"].get("rotation_id") == rotation_id]
    states = [e["stateEnteredEventDetails"]["name"] for e in history if e["type"].endswith("StateEntered")]
    result = {
        "name": scenario.name,
        "execution_arn": execution_arn,
        "status": description["status"],
        "states": states,
        "old_key_id": old_key,
        "new_key_id": new_key,
        "key_status": {k: _key_status(world, user, k) for k in (old_key, new_key) if k},
        "ci_key_id": held,
        "ci_build_passes": all(world.run_build(p) for p in scenario.projects),
        "alerts": [{"subject": a["subject"], "severity": a["severity"]} for a in alerts],
        "transitions": len(states),
        "seconds_verified_to_inactive": seconds_verified_to_inactive,
        **({"seconds_event_to_contained": seconds_event_to_contained} if event_at is not None else {}),
        "targets": [{"id": target_id(p), "provider": split(p)[0], "key_id": world.held_key(p),
                     "build_passes": world.run_build(p)} for p in scenario.projects],
    }
    print(f"  {user}: {old_key} → {new_key or '(none)'}   execution {description['status']}")
    statuses = ", ".join(f"{k} {v}" for k, v in result["key_status"].items())
    print(f"  keys now: {statuses}")
    for target in result["targets"]:
        verdict = "passes" if target["build_passes"] else "FAILS"
        print(f"  {target['provider']} target {target['id']} holds {target['key_id']}; a build with it {verdict}")
    for alert in alerts:
        print(f"  SNS [{alert['severity']}] {alert['subject']}")
        if alert["message"].get("cause"):
            say(f"cause: {alert['message']['cause']}", indent="      ")
    if seconds_verified_to_inactive is not None:
        drain = _waited(history, "DrainPeriod")
        if seconds_verified_to_inactive < 0:  # an emergency: the leaked key goes off before verification
            say(f"old key Inactive {-seconds_verified_to_inactive:.2f}s before the verification result "
                "(emergency: deactivated as soon as every target held the new key)")
        else:
            say(f"verification result → old key Inactive: {seconds_verified_to_inactive:.2f}s "
                + (f"(includes the {human_duration(drain)} drain period, time-compressed)" if drain
                   else "(no drain period)"))
    if scenario.name in _SESSION_PROBES:
        result.update(_containment(runtime, scenario.name, old_key))
    if seconds_event_to_contained is not None:
        say(f"AWS Health event → leaked key refused by IAM: {seconds_event_to_contained:.2f}s "
            f"(simulated time, including IAM propagation of the new key and the "
            f"{iam_consistency.strict.current().key_revocation_seconds:g}s revocation window)")
    return result


def _containment(runtime: LocalRuntime, name: str, leaked: str) -> dict[str, Any]:
    """The exposure scenario's report fields: what the minted session could do, and the page's activity."""
    probes = _SESSION_PROBES[name]
    page = next((a for a in runtime.alerts() if a["message"].get("kind") == "exposed-key-contained"
                 and a["message"].get("access_key_id") == leaked), None)
    activity = (page or {}).get("message", {}).get("leaked_key_activity", {})
    say(f"session {probes['minted_session_key_id']} minted from the leaked key, SNS ListTopics: "
        f"{probes.get('after_deactivation', 'not tried')} after the deactivation, "
        f"{probes.get('after_containment', 'not tried')} after containment (Deny on aws:TokenIssueTime)")
    say(f"page: the leaked key's last {activity.get('days', '?')} days from CloudTrail: "
        + (", ".join(f"{n}×{c}" for n, c in activity.get("by_event", {}).items()) or activity.get("error", "none")))
    for finding in activity.get("findings", []):
        say(f"[{finding['severity']}] {finding['detection']}: {finding['action']}", indent="      ")
    return {
        "session_works_after_deactivation": probes.get("after_deactivation") == "works",
        "session_refused_after_containment": str(probes.get("after_containment", "")).startswith("refused"),
        "leaked_key_activity": activity,
    }


#: The CI variables a key-based pipeline reads; a graduated one holds neither.
KEY_VARIABLES = ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY")


def _unsigned_sts(runtime: LocalRuntime) -> Any:
    """AssumeRoleWithWebIdentity is unsigned: the ID token is the only credential."""
    import boto3
    from botocore import UNSIGNED
    from botocore.config import Config

    return boto3.client("sts", endpoint_url=runtime.endpoint, region_name="us-east-1",
                        config=Config(signature_version=UNSIGNED, retries={"total_max_attempts": 1}))


def _trust_check(world: World, user: str, project: str, role_arn: str) -> dict[str, str]:
    """The graduated role tried with this pipeline's own ID token (the control: it must be accepted) and with
    one of another project on the same CI (same issuer and audience, another ``sub``: the trust must refuse it).
    The sessions' credentials are dropped unseen (the leak scan still looks for them)."""
    from botocore.exceptions import ClientError

    from chalicelib.federation import Federation, federation_for

    provider, name = split(project)
    target = next(t for t in get_deps().config.user(user).targets if t.id == target_id(project))
    federation = federation_for(target)
    if not isinstance(federation, Federation):
        return {"own_token": f"not federated: {federation.reason}", "foreign_token": "not tried"}
    emulator = world.emulator(provider)
    other = f"{name}-fork"
    emulator.add_project(other)
    sts = _unsigned_sts(world.runtime)

    def attempt(token: str) -> str:
        try:
            sts.assume_role_with_web_identity(RoleArn=role_arn, RoleSessionName="demo-trust-check",
                                              WebIdentityToken=token, DurationSeconds=900)
            return "accepted"
        except ClientError as exc:
            return str(exc.response["Error"]["Code"])

    return {"own_token": attempt(emulator.mint_id_token(name, federation.audience)),
            "foreign_project": other,
            "foreign_token": attempt(emulator.mint_id_token(other, federation.audience))}


def _ci_auth(world: World, user: str, project: str) -> str:
    """``oidc`` when the graduation is recorded, the CI holds no key variable and holds the recorded role's ARN;
    else ``keys``."""
    from chalicelib.federation import ROLE_ARN_VARIABLE

    provider, name = split(project)
    emulator = world.emulator(provider)
    record = get_deps().ledger.graduations(user).get(target_id(project)) or {}
    holds_key = any(emulator.held_value(name, variable) is not None for variable in KEY_VARIABLES)
    federated = bool(record.get("role_arn")) and emulator.held_value(name, ROLE_ARN_VARIABLE) == record["role_arn"]
    return "oidc" if federated and not holds_key else "keys"


def run_graduation_scenario(world: World, out: Path, user: str = RELEASE_USER,
                            projects: tuple[str, ...] = tuple(RELEASE_PROJECTS)) -> dict[str, Any]:
    """``user`` (ci-release) deploys from GitHub and GitLab with a key; both repositories commit the OIDC
    verification file, then ``ci-key-rotator graduate`` moves each target to federation, one execution of
    statemachine/graduate.asl.json per target (the CLI's own start function); the last one retires the key."""
    from chalicelib.errors import RotatorError
    from chalicelib.graduation import target_verdicts
    from chalicelib.workflow.graduate_plan import choose
    from cli.graduate import graduation_lines, start

    runtime = world.runtime
    before = len(runtime.alerts())
    print()
    say(f"■ {GRADUATION}: {GRADUATION_TITLE}", indent="")
    for provider in {split(p)[0] for p in projects}:
        # Normal service again: the injected 403s of multi-provider-partial-failure may not all be used up.
        world.emulator(provider).reset_faults()
    world.add_user(user, list(projects))
    # Graduation restores the key from the escrow if the switch fails: a hand-made key is adopted first.
    adopted = world.start_rotation(user, rotation_id=f"{GRADUATION}-setup-{int(time.time())}")
    world.runtime.wait(adopted.execution_arn, timeout=300)
    old_key = next((k for k, s in world.key_statuses(user).items() if s == "Active"), None)
    say(f"setup: {user} on {', '.join(projects)}, rotated once (adopted): key {old_key}, escrowed")
    for project in projects:
        provider, name = split(project)
        world.emulator(provider).set_verify_variant(name, "oidc")
    say("both repositories commit the OIDC verification file (templates/verify/<provider>/oidc/: GitHub with "
        "permissions id-token: write, GitLab with id_tokens:)")
    deps = get_deps()
    print(f"  ci-key-rotator plan {user}:")
    for line in graduation_lines(user, target_verdicts(deps, user)):
        say(line.strip(), indent="    ")

    graduate_asl = load_graduate_asl()
    (out / "histories").mkdir(exist_ok=True)
    for stale in (out / "histories").glob(f"{GRADUATION}-*.json"):  # an earlier run's: the page would show them
        stale.unlink()
    executions: list[dict[str, Any]] = []
    for project in projects:
        tid = target_id(project)
        try:
            choose(deps, user, tid)  # what the CLI refuses before it starts anything
        except RotatorError as exc:
            say(f"ci-key-rotator graduate {user} {tid}: refused: {exc}")
            executions.append({"target_id": tid, "status": "REFUSED", "error": str(exc)})
            break
        gid, arn = start(deps, user, tid, f"make demo: {GRADUATION}")
        say(f"ci-key-rotator graduate {user} {tid}: execution {arn.rsplit(':', 1)[-1]} started; live timeline:")
        description = stream(runtime, arn, Timeline(graduate_asl, runtime.time_scale))
        history = runtime.history(arn)
        (out / "histories" / f"{GRADUATION}-{tid}.json").write_text(json.dumps(history, indent=1, default=str))
        record = deps.ledger.rotation(user, gid) or {}
        states = [e["stateEnteredEventDetails"]["name"] for e in history if e["type"].endswith("StateEntered")]
        executions.append({"target_id": tid, "execution_arn": arn, "status": description["status"],
                           "states": states, "role_arn": record.get("role_arn"), "keys_left": record.get("keys_left")})
        if description["status"] != "SUCCEEDED":
            break

    keys_now = world.key_statuses(user)
    ci_auth = {target_id(p): _ci_auth(world, user, p) for p in projects}
    graduations = deps.ledger.graduations(user)
    targets = []
    for project in projects:
        tid = target_id(project)
        role_arn = str((graduations.get(tid) or {}).get("role_arn") or "")
        trust = _trust_check(world, user, project, role_arn) if role_arn else {"own_token": "no role",
                                                                                "foreign_token": "no role"}
        targets.append({"id": tid, "provider": split(project)[0], "ci_auth": ci_auth[tid], "role_arn": role_arn,
                        "build_passes": world.run_build(project), "trust": trust})
    alerts = [a for a in runtime.alerts()[before:] if a["message"].get("user") == user]
    foreign_refused = bool(targets) and all(
        t["trust"]["own_token"] == "accepted" and t["trust"]["foreign_token"] == "AccessDenied" for t in targets)
    succeeded = len(executions) == len(projects) and all(e["status"] == "SUCCEEDED" for e in executions)
    result = {
        "name": GRADUATION,
        "status": "SUCCEEDED" if succeeded else "FAILED",
        "user": user,
        "executions": executions,
        "states": [state for e in executions for state in e.get("states", [])],
        "transitions": sum(len(e.get("states", [])) for e in executions),
        "old_key_id": old_key,
        "key_status": {old_key: _key_status(world, user, old_key)} if old_key else {},
        "keys_remaining": len(keys_now),
        "ci_auth": ci_auth,
        "ci_build_passes": all(t["build_passes"] for t in targets),
        "foreign_token_refused": foreign_refused,
        "targets": targets,
        "alerts": [{"subject": a["subject"], "severity": a["severity"]} for a in alerts],
    }
    for target in targets:
        verdict = "passes" if target["build_passes"] else "FAILS"
        say(f"{target['provider']} target {target['id']}: {target['ci_auth']} (assumes {target['role_arn'] or '-'}); "
            f"a build of its OIDC verification file {verdict}")
        trust = target["trust"]
        say(f"role trust: this pipeline's own ID token {trust['own_token']}; a token of "
            f"{trust.get('foreign_project', 'another project')} {trust['foreign_token']}")
    for alert in alerts:
        print(f"  SNS [{alert['severity']}] {alert['subject']}")
    statuses = ", ".join(f"{k} {v}" for k, v in result["key_status"].items())
    say(f"{user}: {len(keys_now)} access key(s) left ({statuses})")
    print(f"  ci-key-rotator status {user}: {_status_line(user)}")
    return result


def _issuer_name(identity: dict[str, Any]) -> str:
    """Who a CloudTrail record's caller is: the role behind a session, or the IAM user."""
    issuer = (identity.get("sessionContext") or {}).get("sessionIssuer") or {}
    return str(issuer.get("userName") or identity.get("userName") or "")


def _status_line(user: str) -> str:
    """The graduation line of ``ci-key-rotator status USER``, as the operator sees it."""
    import contextlib
    import io

    from cli.__main__ import main as cli

    printed = io.StringIO()
    with contextlib.redirect_stdout(printed), contextlib.redirect_stderr(printed):
        code = cli(["status", user])
    line = next((ln.strip() for ln in printed.getvalue().splitlines() if "graduated to OIDC" in ln), None)
    return line or f"(no graduation line; exit {code})"


def graduation_ok(result: dict[str, Any]) -> bool:
    """Everything issue 15 promises of the scenario: both graduations succeeded, zero keys are left, both CIs
    authenticate through OIDC and build, and the roles refuse another repository's token."""
    return (result["status"] == "SUCCEEDED" and result["keys_remaining"] == 0 and bool(result["ci_auth"])
            and all(v == "oidc" for v in result["ci_auth"].values()) and result["ci_build_passes"]
            and result["foreign_token_refused"] is True)


def run_audit_scenario(world: World) -> dict[str, Any]:
    """An out-of-band key change is reported; the rotator's own changes during the demo were not."""
    runtime = world.runtime
    print(f"\n■ {AUDIT}: someone creates a key for a managed CI user by hand")
    runtime.bus.drain()
    rotator_events = [e for _, e in runtime.bus.delivered
                      if e.get("detail", {}).get("eventName", "").endswith("AccessKey")
                      # the rotator's identities: one execution role per Lambda function, all "ci-key-rotator*"
                      and _issuer_name(e["detail"]["userIdentity"]).startswith("ci-key-rotator")]
    slack_before, sns_before = len(runtime.slack.messages), len(runtime.alerts())
    # Findings that blame the rotator's own identity for a key change (there must be none).
    findings_before = [a for a in runtime.alerts() if str(a["message"].get("detection", "")).startswith(
        ("key-lifecycle.", "self-protection.")) and "/service/ci-key-rotator" in str(
        a["message"].get("principal", ""))]
    iam = runtime.client("iam")
    stray = iam.create_access_key(UserName=USER)["AccessKey"]["AccessKeyId"]
    runtime.bus.drain()
    slack = runtime.slack.messages[slack_before:]
    sns = [a for a in runtime.alerts()[sns_before:] if a["message"].get("detection")]
    iam.delete_access_key(UserName=USER, AccessKeyId=stray)  # the operator cleans up (also reported)
    runtime.bus.drain()
    findings = [{"detection": a["message"]["detection"], "severity": a["severity"],
                 "summary": a["message"].get("summary", "")} for a in sns]
    print(f"  rotator key changes seen by the audit Lambda during the demo: {len(rotator_events)}, "
          f"findings about them: {len(findings_before)}")
    for finding in findings:
        say(f"finding [{finding['severity']}] {finding['detection']}: {finding['summary']}")
    print(f"  delivered: {len(slack)} Slack message(s) to the local webhook sink, {len(sns)} SNS message(s)")
    high = [f for f in findings if f["detection"] == "key-lifecycle.access-key-change" and f["severity"] == "HIGH"]
    return {
        "name": AUDIT,
        "status": "PASSED" if high and slack and not findings_before else "FAILED",
        "out_of_band_key_id": stray,
        "findings": findings,
        "slack_messages": len(slack),
        "sns_messages": len(sns),
        "rotator_key_changes_audited": len(rotator_events),
        "rotator_key_changes_flagged": len(findings_before),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path(".demo"))
    args = parser.parse_args(argv)
    out: Path = args.out
    # Under make, stdout is a pipe (block-buffered): the live timeline must reach the terminal as it happens.
    if hasattr(sys.stdout, "reconfigure"):
        sys.stdout.reconfigure(line_buffering=True)
    out.mkdir(parents=True, exist_ok=True)
    log_path = out / "handler-logs.jsonl"
    print("CI Key Rotator demo — embedded AWS (moto) + local GitHub Actions emulator, all on 127.0.0.1")
    say(f"timings {TIMINGS}, time compressed ×{int(1 / TIME_SCALE)} (Wait states and retry backoff only)",
        indent="")
    with log_path.open("w") as logs, LocalRuntime(time_scale=TIME_SCALE, poll_interval=1.0,
                                                  log_stream=logs) as runtime:
        world = World(runtime, out).start()
        world.defaults = dict(TIMINGS)
        hand_made = world.add_user(USER, [REPO])
        print(f"\nsetup: IAM user {USER} with key {hand_made}, created by hand and pasted into {REPO}")
        print("       CloudTrail → EventBridge → audit Lambda on; Slack webhook sink on 127.0.0.1")
        runtime.enable_audit()
        scenarios = [run_scenario(world, scenario, out) for scenario in SCENARIOS]
        # Before the audit, so that the audit also covers graduation's IAM calls (roles, provider, key).
        graduation = run_graduation_scenario(world, out)
        audit = run_audit_scenario(world)
        # The access key id is stored as a CI secret too, but it is an id, not secret material.
        key_ids = {hand_made} | {k for u in world.users for k in get_deps().ledger.keys(u)}
        id_hashes = {hashlib.sha256(k.encode()).hexdigest() for k in key_ids if k}
        received = [h for h in world.received_secret_sha256s() if h not in id_hashes]
        # Read before the runtime stops: moto's STS keeps the sessions only while it runs.
        secrets = sorted(set(received) | issued_credential_sha256s())
        report = {"scenarios": [*scenarios, graduation, audit], "secrets_sha256": secrets}
        (out / "slack-messages.json").write_text(json.dumps(runtime.slack.messages, indent=1))
        (out / "sns-messages.json").write_text(json.dumps(runtime.alerts(), indent=1, default=str))
        world.stop()
    (out / "report.json").write_text(json.dumps(report, indent=2))
    page = write_page(out)
    leaks = scan_for_secrets(out, report["secrets_sha256"])
    print_summary(scenarios, audit, graduation)
    print(f"\nwrote {out}/report.json, histories/, handler-logs.jsonl, sns-messages.json, slack-messages.json")
    say(f"wrote {page}: the state machine graph with each scenario's path and timeline (open it in a browser)",
        indent="")
    print(f"secret scan of {out}: {'no secret found' if not leaks else 'LEAKED in ' + ', '.join(leaks)}")
    ok = [s["status"] for s in scenarios] == [s.expected for s in SCENARIOS] and not leaks
    ok = ok and all(s["ci_build_passes"] for s in scenarios) and audit["status"] == "PASSED"
    ok = ok and graduation_ok(graduation)
    # The exposure scenario: the leaked key's session outlived the deactivation and not the containment.
    ok = ok and all(s.get("session_works_after_deactivation", True) and s.get("session_refused_after_containment", True)
                    for s in scenarios)
    print("demo", "OK" if ok else "FAILED")
    return 0 if ok else 1


def write_page(out: Path) -> Path:
    """``out/index.html`` from the ASL and the histories this run wrote under ``out/histories/``."""
    histories: dict[str, list[dict[str, Any]]] = {}
    for scenario in SCENARIOS:
        path = out / "histories" / f"{scenario.name}.json"
        histories[scenario.name] = json.loads(path.read_text()) if path.exists() else []
    # One execution per graduated target: the page shows them one after the other on the graduation graph.
    graduations = sorted((out / "histories").glob(f"{GRADUATION}-*.json"), key=lambda p: p.stat().st_mtime)
    histories[GRADUATION] = demo_html.chain([json.loads(path.read_text()) for path in graduations])
    histories[AUDIT] = []
    titles = {s.name: s.title for s in SCENARIOS} | {GRADUATION: GRADUATION_TITLE, AUDIT: AUDIT_TITLE}
    page = out / "index.html"
    page.write_text(demo_html.render(load_asl(), histories, titles, TIME_SCALE,
                                     machines={GRADUATION: load_graduate_asl()}))
    return page


def print_summary(scenarios: list[dict[str, Any]], audit: dict[str, Any],
                  graduation: dict[str, Any] | None = None) -> None:
    """One line per scenario: what was expected, what happened, what the CI is left with."""
    print("\nsummary")
    expected = {s.name: s.expected for s in SCENARIOS}
    for result in scenarios:
        ok = result["status"] == expected[result["name"]] and result["ci_build_passes"]
        keys = ", ".join(f"{k} {v}" for k, v in result["key_status"].items())
        build = "CI build passes" if result["ci_build_passes"] else "CI build FAILS"
        say(f"{'✓' if ok else '✗'} {result['name']}: {result['status']} (expected {expected[result['name']]}), "
            f"{result['transitions']} states, {len(result['alerts'])} alert(s); keys: {keys}; {build}")
    if graduation is not None:
        auth = ", ".join(f"{t} {a}" for t, a in graduation["ci_auth"].items())
        say(f"{'✓' if graduation_ok(graduation) else '✗'} {GRADUATION}: {graduation['status']} (expected SUCCEEDED), "
            f"{len(graduation['executions'])} execution(s), {graduation['transitions']} states; "
            f"keys remaining: {graduation['keys_remaining']}; CI auth: {auth}; "
            f"{'CI builds pass' if graduation['ci_build_passes'] else 'a CI build FAILS'}; another repository's "
            f"token {'refused' if graduation['foreign_token_refused'] else 'NOT refused'}")
    say(f"{'✓' if audit['status'] == 'PASSED' else '✗'} {AUDIT}: {audit['status']}, "
        f"{len(audit['findings'])} finding(s), {audit['slack_messages']} Slack message(s), "
        f"{audit['rotator_key_changes_flagged']} false finding(s) about the rotator's own changes")


def issued_credential_sha256s() -> set[str]:
    """The sha256 of every credential the local AWS and CIs issued that is not a user's access key, yet is as
    secret until it expires: each ID token minted (the builds', the trust checks'), each STS session's secret
    key and session token (AssumeRoleWithWebIdentity in the OIDC builds and the trust checks, GetSessionToken
    in the exposure scenario)."""
    from moto.sts.models import sts_backends

    from local import oidc, sts_sessions

    values: list[str] = []
    for account in sts_backends.values():
        for backend in account.values():
            for role in backend.assumed_roles:
                values += [role.secret_access_key, role.session_token]
    # GetSessionToken's sessions live in the local patch, not in moto (local/sts_sessions.py).
    for session in sts_sessions._sessions.values():
        values += [session.secret_access_key, session.session_token]
    return {hashlib.sha256(v.encode()).hexdigest() for v in values if v} | oidc.minted_token_sha256s()


#: Secret keys and session tokens are base64; an ID token is a JWT (three base64url parts joined by dots),
#: which the first shape would only ever match in pieces.
_SECRET_SHAPES = (r"[A-Za-z0-9/+=]{20,}", r"[A-Za-z0-9_-]{10,}\.[A-Za-z0-9_-]{10,}\.[A-Za-z0-9_-]{10,}")


def scan_for_secrets(out: Path, secret_hashes: list[str]) -> list[str]:
    """Files under ``out`` containing any secret-shaped string (a key, session token or ID token) whose sha256
    is in ``secret_hashes``."""
    import re

    wanted = set(secret_hashes)
    leaks = []
    for path in out.rglob("*"):
        if path.is_file():
            text = path.read_text(errors="replace")
            for token in {t for shape in _SECRET_SHAPES for t in re.findall(shape, text)}:
                if hashlib.sha256(token.encode()).hexdigest() in wanted:
                    leaks.append(str(path))
                    break
    return leaks


if __name__ == "__main__":
    sys.exit(main())
