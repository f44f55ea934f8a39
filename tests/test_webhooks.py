"""``POST /webhooks/{provider}`` over real HTTP: authenticated, de-duplicated, or refused with no change."""

from __future__ import annotations

import hashlib
import hmac
import json
import time
import uuid
from datetime import timedelta

import pytest
import urllib3

from chalicelib.deps import get_deps
from local.world import World
from tests.invariants import alerts_for, assert_no_pipeline_holds_a_dead_key

http = urllib3.PoolManager()


def post(world: World, body: bytes, headers: dict[str, str], provider: str = "github") -> urllib3.BaseHTTPResponse:
    return http.request("POST", f"{world.runtime.webhook_base_url}/{provider}", body=body,
                        headers={"Content-Type": "application/json", **headers}, retries=False)


def forged_success(run_id: str) -> bytes:
    return json.dumps({"action": "completed", "workflow_run": {
        "id": int(run_id), "run_attempt": 1, "status": "completed", "conclusion": "success"}}).encode()


def wait_for_callback(user: str, timeout: float = 20) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for callback in get_deps().ledger.callbacks():
            if callback["user"] == user:
                return callback
        time.sleep(0.05)
    raise TimeoutError("no verification parked")


def test_bad_or_missing_signature_is_401_and_changes_nothing(clean_world: World, user: str) -> None:
    clean_world.github.hang_next_builds(f"acme/{user}", 1)
    clean_world.users[user].timings["verify_timeout"] = "10s"  # the refusals below must all land before it
    clean_world.write_config()
    started = clean_world.start_rotation(user)
    callback = wait_for_callback(user)
    body = forged_success(callback["run_id"])
    wrong_key = "sha256=" + hmac.new(b"not the secret", body, hashlib.sha256).hexdigest()

    for signature in [None, "sha256=" + "0" * 64, "sha1=abc", "sha256=", wrong_key]:
        delivery = str(uuid.uuid4())
        headers = {"X-GitHub-Event": "workflow_run", "X-GitHub-Delivery": delivery}
        if signature is not None:
            headers["X-Hub-Signature-256"] = signature

        assert post(clean_world, body, headers).status == 401, signature
        assert get_deps().ledger.callback("github", callback["run_id"]) == callback, "callback untouched"
        assert get_deps().ledger.claim_delivery("github", delivery, ttl=timedelta(minutes=1)), \
            "the refused delivery id was not recorded"

    result = clean_world.runtime.wait(started.execution_arn)
    assert result["status"] == "FAILED", "a forged success did not verify anything"
    assert alerts_for(clean_world, user)[-1]["message"]["error"] == "States.Timeout"
    assert_no_pipeline_holds_a_dead_key(clean_world, user)


def test_replayed_delivery_is_ignored(clean_world: World, user: str) -> None:
    assert clean_world.rotate(user)["status"] == "SUCCEEDED"
    delivery = clean_world.github.deliveries()[-1]
    before = get_deps().ledger.rotations(user)

    status = clean_world.github.redeliver(delivery["id"])

    assert status == 200
    answer = post(clean_world, delivery["body"], delivery["headers"])
    assert answer.status == 200 and json.loads(answer.data) == {"status": "duplicate"}
    assert get_deps().ledger.rotations(user) == before


def test_validly_signed_webhook_still_needs_the_status_api_to_agree(clean_world: World, user: str) -> None:
    """A leaked webhook secret cannot verify a build: the run's authoritative status decides."""
    clean_world.github.hang_next_builds(f"acme/{user}", 1)
    clean_world.users[user].timings["verify_timeout"] = "10s"
    clean_world.write_config()
    started = clean_world.start_rotation(user)
    callback = wait_for_callback(user)
    body = forged_success(callback["run_id"])
    secret = get_deps().webhook_secret("github")
    signature = "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()

    response = post(clean_world, body, {"X-GitHub-Event": "workflow_run", "X-GitHub-Delivery": str(uuid.uuid4()),
                                        "X-Hub-Signature-256": signature})

    assert response.status == 202 and json.loads(response.data)["status"] == "pending"
    assert clean_world.runtime.wait(started.execution_arn)["status"] == "FAILED"


@pytest.mark.parametrize(("provider", "body", "status"), [
    ("jenkins", b"{}", 404),
    ("github", b"x" * (1024 * 1024 + 1), 413),
])
def test_unknown_provider_and_oversized_body(clean_world: World, provider: str, body: bytes, status: int) -> None:
    assert post(clean_world, body, {"X-GitHub-Delivery": "d"}, provider=provider).status == status


def test_ping_and_unknown_runs_are_acknowledged(clean_world: World) -> None:
    secret = get_deps().webhook_secret("github")
    for event, payload in [("ping", {"zen": "Keep it logically awesome."}),
                           ("workflow_run", json.loads(forged_success("99999999")))]:
        body = json.dumps(payload).encode()
        signature = "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()
        response = post(clean_world, body, {"X-GitHub-Event": event, "X-GitHub-Delivery": str(uuid.uuid4()),
                                            "X-Hub-Signature-256": signature})
        assert response.status in (200, 202)
        assert json.loads(response.data)["status"] in ("ignored", "unknown-run")


def test_an_unusable_configuration_is_a_clear_503(clean_world: World, user: str, tmp_path) -> None:
    from chalicelib.deps import reset

    broken = tmp_path / "rotation.yaml"
    broken.write_text("users: []\n")
    clean_world.runtime.use_config(broken)
    try:
        response = post(clean_world, b"{}", {"X-GitHub-Delivery": "x"})
        assert response.status == 503 and b"configuration is invalid" in response.data
    finally:
        clean_world.write_config()
        reset()


def test_the_ledger_holds_no_task_token_a_reader_could_use(clean_world: World, user: str) -> None:
    """Table read access plus states:SendTaskSuccess must not resume a verification the CI never confirmed:
    the ledger holds KMS ciphertext bound to the provider, run and rotation (chalicelib/task_tokens.py)."""
    from botocore.exceptions import ClientError

    from chalicelib import aws
    from chalicelib.task_tokens import SealedTokenUnusable

    runtime = clean_world.runtime
    clean_world.github.hang_next_builds(f"acme/{user}", 1)
    clean_world.users[user].timings["verify_timeout"] = "8s"
    clean_world.write_config()
    started = clean_world.start_rotation(user)
    callback = wait_for_callback(user)
    scheduled = [json.loads(e["taskScheduledEventDetails"]["parameters"]) for e in runtime.history(started.execution_arn)
                 if "taskScheduledEventDetails" in e]
    (token,) = {p["Payload"]["task_token"] for p in scheduled if "task_token" in p.get("Payload", {})}

    item = runtime.client("dynamodb").get_item(TableName=runtime.table_name, Key={
        "pk": {"S": "CALLBACK"}, "sk": {"S": f"github#{callback['run_id']}"}})["Item"]
    assert token not in json.dumps(item)
    sfn = runtime.client("stepfunctions")
    for name, value in item.items():
        if "S" in value and name not in ("pk", "sk"):
            with pytest.raises(ClientError):
                sfn.send_task_success(taskToken=value["S"], output="{}")
    with aws.acting_as(runtime.identity_of("poller")):
        assert get_deps().ledger.task_token(callback) == token
        with pytest.raises(SealedTokenUnusable):  # the ciphertext is bound to its own run
            get_deps().ledger.task_token({**callback, "run_id": "1"})
    assert runtime.wait(started.execution_arn)["status"] == "FAILED", "nothing resumed it: the build hangs"
