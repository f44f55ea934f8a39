"""Slack (Block Kit within limits, real HTTP on 127.0.0.1), SNS (moto, message attributes), dispatcher."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import boto3
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from chalicelib.audit.finding import Finding
from chalicelib.audit.notifiers.base import NotifierError, dispatch
from chalicelib.audit.notifiers.slack import SlackNotifier, build_payload
from chalicelib.audit.notifiers.sns import SnsNotifier, build_message
from chalicelib.audit.telemetry import metrics
from chalicelib.secret_ref import SecretRef


def finding(**overrides: Any) -> Finding:
    data: dict[str, Any] = dict(
        detection="key-lifecycle.access-key-change", category="key-lifecycle", severity="HIGH",
        title="Access key changed outside the rotator", principal="arn:aws:iam::111122223333:user/alice",
        action="iam:CreateAccessKey", summary="alice created access key AKIAI44QH8DHBEXAMPLE of user ci-deployer",
        event_id="3fcfb182-98f8-4744-bd45-10a395ab61cb", event_time="2024-05-01T10:15:00Z", account="111122223333",
        region="us-east-1", source_ip="198.51.100.7", user_agent="aws-cli/2.15.30",
        resources=["userName=ci-deployer", "accessKeyId=AKIAI44QH8DHBEXAMPLE"],
        dedup_key="key-lifecycle.access-key-change:0123",
        console_url="https://us-east-1.console.aws.amazon.com/cloudtrailv2/home?region=us-east-1#/events/3fcfb182",
    )
    data.update(overrides)
    return Finding(**data)


def assert_block_kit_limits(payload: dict[str, Any]) -> None:
    blocks = payload["blocks"]
    assert payload["text"] and len(payload["text"]) <= 40_000
    assert 0 < len(blocks) <= 50
    for block in blocks:
        if block["type"] == "header":
            assert block["text"]["type"] == "plain_text" and 0 < len(block["text"]["text"]) <= 150
        elif block["type"] == "section":
            assert len(block["text"]["text"]) <= 3000
            assert len(block.get("fields", [])) <= 10
            assert all(0 < len(f["text"]) <= 2000 for f in block.get("fields", []))
        elif block["type"] == "context":
            assert 0 < len(block["elements"]) <= 10
            assert all(len(e["text"]) <= 3000 for e in block["elements"])
        elif block["type"] == "actions":
            for element in block["elements"]:
                assert len(element["text"]["text"]) <= 75 and len(element["url"]) <= 3000
        else:
            raise AssertionError(f"unexpected block {block['type']}")
    assert len(json.dumps(payload)) < 13_000  # msg_blocks_too_long has been seen around 13k


# -- Block Kit ------------------------------------------------------------------------------------------


def test_block_kit_layout() -> None:
    payload = build_payload(finding(count=3))
    assert_block_kit_limits(payload)
    header, section, context, actions = payload["blocks"]
    assert header["text"]["text"] == ":red_circle: [HIGH] Access key changed outside the rotator"
    labels = [f["text"].split("\n")[0] for f in section["fields"]]
    assert labels == ["*Who*", "*What*", "*Where*", "*When*", "*Source*", "*Resources*"]
    assert "111122223333 / us-east-1" in section["fields"][2]["text"]
    assert "key-lifecycle.access-key-change" in context["elements"][0]["text"]
    assert "seen 3×" in context["elements"][0]["text"]
    button = actions["elements"][0]
    assert button["type"] == "button" and button["url"].startswith("https://us-east-1.console.aws.amazon.com/")
    assert payload["text"].startswith("[HIGH] Access key changed outside the rotator: alice created")


def test_block_kit_limits_hold_for_huge_findings() -> None:
    huge = "x" * 4000
    payload = build_payload(finding(title="Long title " * 50, summary="<&>" * 5000, principal=huge, user_agent=huge,
                                    source_ip=huge, resources=[huge] * 50, action=huge, error=huge))
    assert_block_kit_limits(payload)
    assert payload["blocks"][0]["text"]["text"].endswith("…")


def test_mrkdwn_is_escaped() -> None:
    payload = build_payload(finding(principal="<!channel> & <https://evil.example|click>"))
    who = payload["blocks"][1]["fields"][0]["text"]
    assert "<!channel>" not in who and "&lt;!channel&gt; &amp; &lt;https://evil.example|click&gt;" in who


def test_no_button_without_a_console_url() -> None:
    payload = build_payload(finding(console_url=None, resources=[], event_id=None, event_time=None))
    assert [b["type"] for b in payload["blocks"]] == ["header", "section", "context"]
    assert_block_kit_limits(payload)


@settings(max_examples=60, deadline=None)
@given(text=st.text(max_size=6000), items=st.lists(st.text(max_size=3000), max_size=60))
def test_block_kit_limits_property(text: str, items: list[str]) -> None:
    payload = build_payload(finding(title=text or "t", summary=text or "s", principal=text or "p",
                                    user_agent=text, resources=items))
    assert_block_kit_limits(payload)


# -- Slack over HTTP ------------------------------------------------------------------------------------


class SlackStub:
    def __init__(self) -> None:
        self.requests: list[dict[str, Any]] = []
        self.status = 200
        self.body = b"ok"
        stub = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length", 0))
                stub.requests.append({"path": self.path, "json": json.loads(self.rfile.read(length))})
                self.send_response(stub.status)
                self.end_headers()
                self.wfile.write(stub.body)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_port}/services/T000/B000/SECRETPATHXXXXXXXXXXXX"
        threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def slack() -> Iterator[SlackStub]:
    stub = SlackStub()
    yield stub
    stub.close()


def test_slack_posts_blocks_to_the_webhook_from_secrets_manager(moto_aws, uid, slack) -> None:
    boto3.client("secretsmanager").create_secret(Name=f"audit/slack-{uid}", SecretString=slack.url)
    SlackNotifier(SecretRef.model_validate(f"secretsmanager:audit/slack-{uid}")).send(finding())
    [request] = slack.requests
    assert request["path"] == "/services/T000/B000/SECRETPATHXXXXXXXXXXXX"
    assert request["json"]["blocks"][0]["type"] == "header"
    assert request["json"]["text"].startswith("[HIGH]")


def test_slack_http_error_is_a_safe_notifier_error(slack) -> None:
    slack.status, slack.body = 404, b"no_service"
    with pytest.raises(NotifierError) as raised:
        SlackNotifier(lambda: slack.url).send(finding())
    assert "HTTP 404: no_service" in str(raised.value)
    assert "SECRETPATH" not in str(raised.value) and "127.0.0.1" not in str(raised.value)


def test_slack_unreachable_is_a_safe_notifier_error() -> None:
    with pytest.raises(NotifierError) as raised:
        SlackNotifier(lambda: "http://127.0.0.1:9/services/T/B/SECRETPATH").send(finding())
    assert "SECRETPATH" not in str(raised.value)


def test_slack_missing_secret_names_the_reference_not_a_value(moto_aws, uid) -> None:
    with pytest.raises(NotifierError, match=f"secretsmanager:audit/missing-{uid}"):
        SlackNotifier(SecretRef.model_validate(f"secretsmanager:audit/missing-{uid}")).send(finding())


# -- SNS ------------------------------------------------------------------------------------------------


def _queue(sqs: Any, sns: Any, topic: str, name: str, filter_policy: dict | None = None) -> str:
    url = sqs.create_queue(QueueName=name)["QueueUrl"]
    arn = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    attributes = {"FilterPolicy": json.dumps(filter_policy)} if filter_policy else {}
    sns.subscribe(TopicArn=topic, Protocol="sqs", Endpoint=arn, Attributes=attributes)
    return url


def _received(sqs: Any, url: str) -> list[dict[str, Any]]:
    messages = sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10).get("Messages", [])
    return [json.loads(m["Body"]) for m in messages]


def test_sns_publish_carries_severity_and_detection_attributes(moto_aws, uid) -> None:
    sns, sqs = boto3.client("sns"), boto3.client("sqs")
    topic = sns.create_topic(Name=f"alerts-{uid}")["TopicArn"]
    everything = _queue(sqs, sns, topic, f"all-{uid}")
    paging = _queue(sqs, sns, topic, f"paging-{uid}", {"severity": ["CRITICAL", "HIGH"]})
    notifier = SnsNotifier(topic, client=sns)
    notifier.send(finding())
    notifier.send(finding(severity="MEDIUM", detection="iam-policy.change", category="iam-policy"))
    all_messages = _received(sqs, everything)
    paged = _received(sqs, paging)
    assert len(all_messages) == 2 and len(paged) == 1
    envelope = paged[0]
    assert envelope["MessageAttributes"]["severity"] == {"Type": "String", "Value": "HIGH"}
    assert envelope["MessageAttributes"]["detection"]["Value"] == "key-lifecycle.access-key-change"
    assert envelope["Subject"] == "[HIGH] Access key changed outside the rotator"
    body = json.loads(envelope["Message"])
    assert body["kind"] == "audit-finding" and body["event_id"] == "3fcfb182-98f8-4744-bd45-10a395ab61cb"


def test_sns_subject_is_short_printable_ascii() -> None:
    message = build_message(finding(title="Überlänge\nmit Zeilenumbruch " + "x" * 200))
    subject = message["Subject"]
    assert len(subject) <= 100 and subject.isascii() and "\n" not in subject
    assert all(32 <= ord(c) < 127 for c in subject)


def test_sns_failure_is_a_safe_notifier_error(moto_aws, uid) -> None:
    with pytest.raises(NotifierError, match="SNS publish failed"):
        SnsNotifier(f"arn:aws:sns:us-east-1:123456789012:missing-{uid}", client=boto3.client("sns")).send(finding())


# -- dispatcher ------------------------------------------------------------------------------------------


class Recorder:
    def __init__(self, name: str, fail: Exception | None = None, min_severity: str = "INFO") -> None:
        self.name, self.fail, self.min_severity, self.sent = name, fail, min_severity, []

    def send(self, item: Finding) -> None:
        if self.fail:
            raise self.fail
        self.sent.append(item)


def _logged(caplog: pytest.LogCaptureFixture) -> str:
    # powertools formats JSON on its own handler; the records carry the same message and extras.
    return "\n".join(f"{r.getMessage()} {vars(r)}" for r in caplog.records)


def test_failing_notifier_does_not_stop_the_others(caplog, slack) -> None:
    metrics.clear_metrics()
    slack.status, slack.body = 500, b"internal_error"
    good = Recorder("sns")
    result = dispatch(finding(), [SlackNotifier(lambda: slack.url), good])
    assert result.delivered == ["sns"] and list(result.failed) == ["slack"] and not result.ok
    assert good.sent and "HTTP 500" in result.failed["slack"]
    assert metrics.metric_set["NotifierFailures"]["Value"] == [1.0]
    logged = _logged(caplog)
    assert "notifier failed" in logged and "HTTP 500" in logged and "SECRETPATH" not in logged and slack.url not in logged
    metrics.clear_metrics()


def test_unexpected_exceptions_are_logged_by_type_only(caplog) -> None:
    metrics.clear_metrics()
    leaky = Recorder("custom", fail=RuntimeError("https://hooks.slack.com/services/T0/B0/LEAKED"))
    result = dispatch(finding(), [leaky])
    assert result.failed == {"custom": "RuntimeError"}
    assert "notifier failed" in _logged(caplog) and "LEAKED" not in _logged(caplog)
    metrics.clear_metrics()


def test_notifier_severity_threshold() -> None:
    pager = Recorder("pager", min_severity="CRITICAL")
    result = dispatch(finding(), [pager])
    assert result.skipped == ["pager"] and pager.sent == []
