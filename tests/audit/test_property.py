"""Property tests: no input, however malformed, crashes iter_records, classify or a detection."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from chalicelib.audit.context import AuditContext
from chalicelib.audit.detections.registry import all_detections
from chalicelib.audit.finding import Finding
from chalicelib.audit.models import Problem, Record, iter_records
from chalicelib.audit.pipeline import classify, default_classifier

SOURCES = sorted({s for d in all_detections() for s in d.triggers if s != "*"} | {"s3.amazonaws.com"})
NAMES = sorted({n for d in all_detections() for names in d.triggers.values() if names for n in names})
ROLE = "ci-key-rotator"

scalars = st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20)
json_values = st.recursive(
    scalars,
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4),
    max_leaves=20,
)
plausible_text = st.sampled_from(
    [ROLE, "ci-deployer", "alice", "AccessDenied", "Client.UnauthorizedOperation", "Success", "Failure", "Root",
     "IAMUser", "AssumedRole", "AWSService", f"arn:aws:iam::1:role/{ROLE}", "arn:aws:iam::1:user/ci-deployer",
     "0.0.0.0/0", "Yes", "No", "RISK", "ci-key-rotator-dev-audit", "arn:aws:states:us-east-1:1:stateMachine:ci-key-rotator",
     "AWSCompromisedKeyQuarantineV3", "arn:aws:iam::aws:policy/AdministratorAccess", "2024-05-01T10:15:00Z"]
)
anything = json_values | plausible_text
identity = st.fixed_dictionaries(
    {},
    optional={
        "type": anything, "arn": anything, "userName": anything, "accountId": anything, "invokedBy": anything,
        "principalId": anything,
        "sessionContext": st.fixed_dictionaries({}, optional={"sessionIssuer": st.fixed_dictionaries(
            {}, optional={"arn": anything, "type": anything})}) | json_values,
    },
)
params = st.dictionaries(
    st.sampled_from(["userName", "roleName", "roleArn", "policyArn", "policyName", "accessKeyId", "status", "name",
                     "rule", "functionName", "stateMachineArn", "tableName", "secretId", "topicArn", "groupId",
                     "ipPermissions", "subscriptionArn"]),
    anything, max_size=5,
) | json_values
cloudtrail = st.fixed_dictionaries(
    {"eventSource": st.sampled_from(SOURCES) | anything, "eventName": st.sampled_from(NAMES) | anything},
    optional={
        "userIdentity": identity | json_values, "requestParameters": params, "responseElements": json_values | params,
        "additionalEventData": json_values, "errorCode": anything, "errorMessage": anything, "eventTime": anything,
        "eventID": anything, "eventType": anything, "readOnly": anything, "sourceIPAddress": anything,
        "awsRegion": anything, "resources": json_values,
    },
)
health = st.fixed_dictionaries(
    {"service": st.sampled_from(["RISK", "EC2"]) | anything, "eventTypeCode": st.sampled_from(
        ["AWS_RISK_CREDENTIALS_EXPOSED", "AWS_EC2_X"]) | anything},
    optional={"affectedEntities": st.lists(st.fixed_dictionaries({}, optional={"entityValue": anything})) | json_values,
              "eventArn": anything},
)


def envelope(detail: Any, detail_type: Any) -> dict[str, Any]:
    return {"version": "0", "id": "1", "detail-type": detail_type, "source": "aws.iam", "account": "1",
            "time": "2024-05-01T10:15:00Z", "region": "us-east-1", "resources": [], "detail": detail}


eventbridge_events = st.builds(
    envelope, cloudtrail | health | json_values,
    st.sampled_from(["AWS API Call via CloudTrail", "AWS Console Sign In via CloudTrail", "AWS Health Event"]) | anything,
)
inputs = (
    json_values | cloudtrail | eventbridge_events | st.builds(lambda r: {"Records": r}, st.lists(cloudtrail | json_values,
                                                                                                 max_size=4))
    | st.lists(cloudtrail | eventbridge_events, max_size=4)
)


def lookup(user: str, action: str, key: str | None, at: datetime) -> bool:
    return hash((user, action, key)) % 2 == 0


CTX = AuditContext({"ci-deployer", "alice"}, ROLE, "ci-key-rotator", lookup)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(obj=json_values)
def test_random_json_never_crashes(obj: Any) -> None:
    for item in iter_records(obj):
        assert isinstance(item, (Record, Problem))
    assert all(isinstance(f, Finding) for f in classify(obj, CTX))


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(obj=inputs)
def test_event_shaped_input_never_crashes_a_detection(obj: Any) -> None:
    classifier = default_classifier()
    for item in iter_records(obj):
        if isinstance(item, Problem):
            continue
        # Call detections directly: classify_record's safety net would hide a crashing detection.
        for detection in classifier.candidates(item.source, item.name):
            result = detection.evaluate(item, CTX)
            assert result is None or isinstance(result, Finding)
            if result is not None:
                assert result.model_dump_json()
