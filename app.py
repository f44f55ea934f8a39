"""CI Key Rotator: Chalice handlers only. Every handler is one call into chalicelib/.

Each Lambda imports this file whole, so it imports almost nothing itself: a handler imports the modules
it needs when it first runs. The ``plan`` function then never loads the audit detections or Slack, and
the audit function never loads the workflow or the CI targets (``make bench`` measures both).

``@observed`` (chalicelib/observability.py) traces each handler and flushes its metrics. Each Lambda has
its own IAM policy, ``.chalice/policy-<name>.json``, checked against the code it reaches from here.
"""

from typing import Any

from chalice.app import Chalice, Cron, Rate, Response

from chalicelib.event_patterns import AUDIT_EVENT_PATTERN, EXPOSURE_EVENT_PATTERN
from chalicelib.observability import observed

# The powertools Logger (chalicelib/observability.py) owns the "ci-key-rotator" logger: Chalice must not
# reconfigure it (it would add a second handler and raise the level to ERROR).
app = Chalice(app_name="ci-key-rotator", configure_logs=False)


# -- state machine tasks (statemachine/rotation.asl.json) ------------------------------------------


@app.lambda_function(name="plan")
@observed("plan")
def plan_task(event: dict[str, Any], context: Any) -> Any:
    from chalicelib.handlers import key_age, run_task
    from chalicelib.workflow import plan

    return run_task("plan", plan.run, event, observe=key_age)


@app.lambda_function(name="create_key")
@observed("create_key")
def create_key_task(event: dict[str, Any], context: Any) -> Any:
    from chalicelib.handlers import run_task
    from chalicelib.workflow import create_key

    return run_task("create_key", create_key.run, event)


@app.lambda_function(name="await_key_live")
@observed("await_key_live")
def await_key_live_task(event: dict[str, Any], context: Any) -> Any:
    from chalicelib.handlers import run_task
    from chalicelib.workflow import await_key_live

    return run_task("await_key_live", await_key_live.run, event)


@app.lambda_function(name="push_target")
@observed("push_target")
def push_target_task(event: dict[str, Any], context: Any) -> Any:
    from chalicelib.handlers import run_task
    from chalicelib.workflow import push_target

    return run_task("push_target", push_target.run, event)


@app.lambda_function(name="verify_build")
@observed("verify_build")
def verify_build_task(event: dict[str, Any], context: Any) -> Any:
    from chalicelib.handlers import run_task
    from chalicelib.workflow import verify_build

    return run_task("verify_build", verify_build.run, event)


@app.lambda_function(name="deactivate_compromised_key")
@observed("deactivate_compromised_key")
def deactivate_compromised_key_task(event: dict[str, Any], context: Any) -> Any:
    from chalicelib.handlers import run_task
    from chalicelib.workflow import deactivate_compromised_key

    return run_task("deactivate_compromised_key", deactivate_compromised_key.run, event)


@app.lambda_function(name="revoke_sessions")
@observed("revoke_sessions")
def revoke_sessions_task(event: dict[str, Any], context: Any) -> Any:
    from chalicelib.handlers import run_task
    from chalicelib.workflow import session_revocation

    return run_task("revoke_sessions", session_revocation.revoke, event)


@app.lambda_function(name="lift_session_revocation")
@observed("lift_session_revocation")
def lift_session_revocation_task(event: dict[str, Any], context: Any) -> Any:
    from chalicelib.handlers import run_task
    from chalicelib.workflow import session_revocation

    return run_task("lift_session_revocation", session_revocation.lift, event)


@app.lambda_function(name="drain_check")
@observed("drain_check")
def drain_check_task(event: dict[str, Any], context: Any) -> Any:
    from chalicelib.handlers import run_task
    from chalicelib.workflow import drain_check

    return run_task("drain_check", drain_check.run, event)


@app.lambda_function(name="deactivate_old_key")
@observed("deactivate_old_key")
def deactivate_old_key_task(event: dict[str, Any], context: Any) -> Any:
    from chalicelib.handlers import run_task
    from chalicelib.workflow import deactivate_old_key

    return run_task("deactivate_old_key", deactivate_old_key.run, event)


@app.lambda_function(name="delete_old_key")
@observed("delete_old_key")
def delete_old_key_task(event: dict[str, Any], context: Any) -> Any:
    from chalicelib.handlers import run_task
    from chalicelib.workflow import delete_old_key

    return run_task("delete_old_key", delete_old_key.run, event)


@app.lambda_function(name="report")
@observed("report")
def report_task(event: dict[str, Any], context: Any) -> Any:
    from chalicelib.handlers import rotation_succeeded, run_task
    from chalicelib.workflow import report

    return run_task("report", report.run, event, observe=rotation_succeeded)


@app.lambda_function(name="rollback")
@observed("rollback")
def rollback_task(event: dict[str, Any], context: Any) -> Any:
    from chalicelib.handlers import run_task
    from chalicelib.workflow import rollback

    return run_task("rollback", rollback.run, event)


@app.lambda_function(name="alert")
@observed("alert")
def alert_task(event: dict[str, Any], context: Any) -> Any:
    from chalicelib.handlers import rotation_failed, run_task
    from chalicelib.workflow import alert

    return run_task("alert", alert.run, event, observe=rotation_failed)


# -- undo tasks (statemachine/undo.asl.json; VerifyBuild is the rotation's) ------------------------


@app.lambda_function(name="undo_plan")
@observed("undo_plan")
def undo_plan_task(event: dict[str, Any], context: Any) -> Any:
    from chalicelib.handlers import run_task
    from chalicelib.workflow import undo_plan

    return run_task("undo_plan", undo_plan.run, event)


@app.lambda_function(name="undo_reactivate_old_key")
@observed("undo_reactivate_old_key")
def undo_reactivate_old_key_task(event: dict[str, Any], context: Any) -> Any:
    from chalicelib.handlers import run_task
    from chalicelib.workflow import undo_reactivate_old_key

    return run_task("undo_reactivate_old_key", undo_reactivate_old_key.run, event)


@app.lambda_function(name="undo_push_target")
@observed("undo_push_target")
def undo_push_target_task(event: dict[str, Any], context: Any) -> Any:
    from chalicelib.handlers import run_task
    from chalicelib.workflow import undo_push_target

    return run_task("undo_push_target", undo_push_target.run, event)


@app.lambda_function(name="undo_deactivate_new_key")
@observed("undo_deactivate_new_key")
def undo_deactivate_new_key_task(event: dict[str, Any], context: Any) -> Any:
    from chalicelib.handlers import run_task
    from chalicelib.workflow import undo_deactivate_new_key

    return run_task("undo_deactivate_new_key", undo_deactivate_new_key.run, event)


@app.lambda_function(name="undo_rollback")
@observed("undo_rollback")
def undo_rollback_task(event: dict[str, Any], context: Any) -> Any:
    from chalicelib.handlers import run_task
    from chalicelib.workflow import undo_rollback

    return run_task("undo_rollback", undo_rollback.run, event)


@app.lambda_function(name="undo_alert")
@observed("undo_alert")
def undo_alert_task(event: dict[str, Any], context: Any) -> Any:
    from chalicelib.handlers import run_task
    from chalicelib.workflow import undo_alert

    return run_task("undo_alert", undo_alert.run, event)


# -- graduation tasks (statemachine/graduate.asl.json; VerifyBuild, DrainCheck, DeleteOldKey are the rotation's)


@app.lambda_function(name="graduate_plan")
@observed("graduate_plan")
def graduate_plan_task(event: dict[str, Any], context: Any) -> Any:
    from chalicelib.handlers import run_task
    from chalicelib.workflow import graduate_plan

    return run_task("graduate_plan", graduate_plan.run, event)


@app.lambda_function(name="graduate_ensure_provider")
@observed("graduate_ensure_provider")
def graduate_ensure_provider_task(event: dict[str, Any], context: Any) -> Any:
    from chalicelib.handlers import run_task
    from chalicelib.workflow import graduate_ensure_provider

    return run_task("graduate_ensure_provider", graduate_ensure_provider.run, event)


@app.lambda_function(name="graduate_ensure_role")
@observed("graduate_ensure_role")
def graduate_ensure_role_task(event: dict[str, Any], context: Any) -> Any:
    from chalicelib.handlers import run_task
    from chalicelib.workflow import graduate_ensure_role

    return run_task("graduate_ensure_role", graduate_ensure_role.run, event)


@app.lambda_function(name="graduate_switch_target")
@observed("graduate_switch_target")
def graduate_switch_target_task(event: dict[str, Any], context: Any) -> Any:
    from chalicelib.handlers import run_task
    from chalicelib.workflow import graduate_switch_target

    return run_task("graduate_switch_target", graduate_switch_target.run, event)


@app.lambda_function(name="graduate_record")
@observed("graduate_record")
def graduate_record_task(event: dict[str, Any], context: Any) -> Any:
    from chalicelib.handlers import run_task
    from chalicelib.workflow import graduate_record

    return run_task("graduate_record", graduate_record.run, event)


@app.lambda_function(name="graduate_retire_key")
@observed("graduate_retire_key")
def graduate_retire_key_task(event: dict[str, Any], context: Any) -> Any:
    from chalicelib.handlers import run_task
    from chalicelib.workflow import graduate_retire_key

    return run_task("graduate_retire_key", graduate_retire_key.run, event)


@app.lambda_function(name="graduate_report")
@observed("graduate_report")
def graduate_report_task(event: dict[str, Any], context: Any) -> Any:
    from chalicelib.handlers import run_task
    from chalicelib.workflow import graduate_report

    return run_task("graduate_report", graduate_report.run, event)


@app.lambda_function(name="graduate_rollback")
@observed("graduate_rollback")
def graduate_rollback_task(event: dict[str, Any], context: Any) -> Any:
    from chalicelib.handlers import run_task
    from chalicelib.workflow import graduate_rollback

    return run_task("graduate_rollback", graduate_rollback.run, event)


@app.lambda_function(name="graduate_alert")
@observed("graduate_alert")
def graduate_alert_task(event: dict[str, Any], context: Any) -> Any:
    from chalicelib.handlers import run_task
    from chalicelib.workflow import graduate_alert

    return run_task("graduate_alert", graduate_alert.run, event)


# -- triggers and callbacks --------------------------------------------------------------------------


@app.schedule(Rate(1, unit=Rate.HOURS), name="scheduler")
@observed("scheduler")
def schedule_rotations(event: Any) -> Any:
    from chalicelib import scheduler
    from chalicelib.deps import get_deps

    return [started.rotation_id for started in scheduler.run_schedule(get_deps())]


@app.schedule(Rate(5, unit=Rate.MINUTES), name="poller")
@observed("poller")
def poll_verifications(event: Any) -> Any:
    from chalicelib import poller
    from chalicelib.deps import get_deps

    return poller.poll(get_deps())


@app.route("/webhooks/{provider}", methods=["POST"],
           content_types=["application/json", "application/x-www-form-urlencoded"])
@observed("api_handler")
def webhook(provider: str) -> Response:
    from chalicelib import webhooks
    from chalicelib.deps import get_deps

    request = app.current_request
    if request is None:  # Chalice sets it for every route invocation
        raise RuntimeError("no current request")
    raw = request.raw_body if isinstance(request.raw_body, bytes) else str(request.raw_body).encode()
    status, body = webhooks.handle(get_deps(), provider, request.headers, raw,
                                   request.to_original_event().get("multiValueHeaders"))
    return Response(body=body, status_code=status)


# -- audit (deploy in us-east-1: IAM and sign-in events exist only there) ---------------------------------
# The audit rule fits EventBridge's default 2,048-character pattern quota and must admit read-only
# CloudTrail events (chalicelib/event_patterns.RULE_STATES): Chalice cannot set a rule's state, deploy does.


@app.on_cw_event(AUDIT_EVENT_PATTERN, name="audit")
@observed("audit")
def audit_events(event: Any) -> Any:
    from chalicelib import audit_handlers
    from chalicelib.handlers import audit_result

    return audit_result(audit_handlers.audit(event.to_dict()))


@app.on_cw_event(EXPOSURE_EVENT_PATTERN, name="exposure")
@observed("exposure")
def exposed_keys(event: Any) -> Any:
    from chalicelib import exposure
    from chalicelib.deps import get_deps

    return exposure.respond(get_deps(), event.to_dict())


@app.schedule(Cron(0, 6, "*", "*", "?", "*"), name="credential_report")
@observed("credential_report")
def credential_report(event: Any) -> Any:
    from chalicelib import audit_handlers
    from chalicelib.handlers import audit_result

    return audit_result(audit_handlers.credential_report())
