"""Lambda's asynchronous invocation, as EventBridge rules and schedules invoke a function.

What AWS does and this module reproduces (local/strict.py has the values and their sources):

- the event is at most 256 KB, or the invocation is refused;
- a function error is retried twice (MaximumRetryAttempts 2), one then two minutes later (scaled by the
  runtime's time_scale);
- then the event goes to the function's on-failure destination, an SQS queue
  ``ci-key-rotator-<stage>-<function>-dlq``, as the invocation record Lambda writes
  (https://docs.aws.amazon.com/lambda/latest/dg/invocation-async-retain-records.html);
- each queue has a CloudWatch alarm (messages visible > 0) whose action is the alerts topic: a record
  landing in an empty queue publishes the alarm's notification, in CloudWatch's JSON shape
  (https://docs.aws.amazon.com/AmazonCloudWatch/latest/monitoring/AlarmThatSendsEmail.html), so a lost
  event pages someone instead of vanishing.
"""

from __future__ import annotations

import json
import logging
import time
import traceback
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from local import strict

log = logging.getLogger(__name__)
Invoke = Callable[[str, dict[str, Any]], Any]
_REGION_NAMES = {"us-east-1": "US East (N. Virginia)"}
_COMPARISON = {"GreaterThanThreshold": "greater than", "GreaterThanOrEqualToThreshold": "greater than or equal to",
               "LessThanThreshold": "less than", "LessThanOrEqualToThreshold": "less than or equal to"}


def scheduled_event(rule_arn: str, account: str, region: str) -> dict[str, Any]:
    """What an EventBridge schedule (``@app.schedule``) sends its function, asynchronously."""
    return {"version": "0", "id": str(uuid.uuid4()), "detail-type": "Scheduled Event", "source": "aws.events",
            "account": account, "time": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"), "region": region,
            "resources": [rule_arn], "detail": {}}


class PayloadTooLarge(ValueError):
    """Lambda refuses an asynchronous event over the quota (RequestEntityTooLargeException)."""


@dataclass
class Destinations:
    """Where a function's failed events go: its queue, and the topic its queue's alarm notifies."""

    sqs: Any
    sns: Any
    topic_arn: str
    account: str
    region: str
    queue_name: Callable[[str], str]
    function_arn: Callable[[str], str]
    #: function -> its queue's alarm, as PutMetricAlarm arguments (deploy/protection.py's ``alarm``).
    alarm: Callable[[str], dict[str, Any]]
    _urls: dict[str, str] = field(default_factory=dict)

    def create(self, function: str) -> str:
        name = self.queue_name(function)
        self._urls[function] = str(self.sqs.create_queue(QueueName=name)["QueueUrl"])
        return self._urls[function]

    def url(self, function: str) -> str:
        return self._urls.get(function) or self.create(function)

    def send(self, function: str, record: dict[str, Any]) -> None:
        url = self.url(function)
        # The alarm is OK while the queue is empty; the first record turns it to ALARM (one notification).
        visible = int(self.sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["ApproximateNumberOfMessages"])
                      ["Attributes"]["ApproximateNumberOfMessages"])
        self.sqs.send_message(QueueUrl=url, MessageBody=json.dumps(record))
        if visible == 0:
            self._alarm(function)

    def _alarm(self, function: str) -> None:
        """CloudWatch's notification for the queue's alarm going OK → ALARM, from the same PutMetricAlarm
        arguments the deployment uses (``alarm``)."""
        spec = self.alarm(function)
        name = spec["AlarmName"]
        now = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "+0000"
        region = _REGION_NAMES.get(self.region, self.region)
        message = {
            "AlarmName": name,
            "AlarmDescription": spec.get("AlarmDescription"),
            "AWSAccountId": self.account,
            "AlarmConfigurationUpdatedTimestamp": now,
            "NewStateValue": "ALARM",
            "NewStateReason": (f"Threshold Crossed: 1 datapoint [1.0] was {_COMPARISON[spec['ComparisonOperator']]} "
                               f"the threshold ({float(spec['Threshold'])})."),
            "StateChangeTime": now,
            "Region": region,
            "AlarmArn": f"arn:aws:cloudwatch:{self.region}:{self.account}:alarm:{name}",
            "OldStateValue": "OK",
            "OKActions": list(spec.get("OKActions", [])),
            "AlarmActions": list(spec.get("AlarmActions", [self.topic_arn])),
            "InsufficientDataActions": [],
            "Trigger": {
                "MetricName": spec["MetricName"],
                "Namespace": spec["Namespace"],
                "StatisticType": "Statistic",
                "Statistic": str(spec["Statistic"]).upper(),
                "Unit": None,
                "Dimensions": [{"value": d["Value"], "name": d["Name"]} for d in spec["Dimensions"]],
                "Period": spec["Period"],
                "EvaluationPeriods": spec["EvaluationPeriods"],
                "ComparisonOperator": spec["ComparisonOperator"],
                "Threshold": float(spec["Threshold"]),
                "TreatMissingData": spec.get("TreatMissingData", "missing"),
                "EvaluateLowSampleCountPercentile": "",
            },
        }
        self.sns.publish(TopicArn=self.topic_arn, Subject=f'ALARM: "{name}" in {region}'[:100],
                         Message=json.dumps(message))


class AsyncInvoker:
    """``invoke(function, event)`` with Lambda's asynchronous semantics around a synchronous dispatch."""

    def __init__(self, dispatch: Invoke, destinations: Destinations, *, time_scale: Callable[[], float],
                 sleep: Callable[[float], None] = time.sleep) -> None:
        self._dispatch = dispatch
        self._destinations = destinations
        self._time_scale = time_scale
        self._sleep = sleep
        #: (function, destination record) of every event that exhausted its retries.
        self.failed: list[tuple[str, dict[str, Any]]] = []

    def check_payload(self, event: dict[str, Any]) -> None:
        limit = strict.current().async_payload_max_bytes
        size = len(json.dumps(event).encode())
        if limit and size > limit:
            raise PayloadTooLarge(f"asynchronous event of {size} bytes exceeds Lambda's {limit}-byte limit")

    def invoke(self, function: str, event: dict[str, Any]) -> Any:
        """Run ``function`` until it succeeds or its retries are exhausted; returns its result or None."""
        self.check_payload(event)
        rules = strict.current()
        attempts = 1 + max(0, rules.async_max_retry_attempts)
        request_id = str(uuid.uuid4())
        for attempt in range(1, attempts + 1):
            try:
                return self._dispatch(function, event)
            except Exception as exc:  # noqa: BLE001 - any function error: Lambda retries, then the destination
                log.warning("async invocation of %s failed (attempt %d of %d): %s", function, attempt,
                            attempts, type(exc).__name__)
                if attempt < attempts:
                    delays = rules.async_retry_delays_seconds or (0.0,)
                    self._sleep(delays[min(attempt - 1, len(delays) - 1)] * self._time_scale())
                    continue
                record = self.record(function, event, exc, request_id, attempts)
                self.failed.append((function, record))
                self._destinations.send(function, record)
        return None

    def record(self, function: str, event: dict[str, Any], exc: BaseException, request_id: str,
               attempts: int) -> dict[str, Any]:
        """The invocation record Lambda sends to an on-failure destination."""
        return {
            "version": "1.0",
            "timestamp": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z",
            "requestContext": {
                "requestId": request_id,
                "functionArn": f"{self._destinations.function_arn(function)}:$LATEST",
                "condition": "RetriesExhausted",
                "approximateInvokeCount": attempts,
            },
            "requestPayload": event,
            "responseContext": {"statusCode": 200, "executedVersion": "$LATEST", "functionError": "Unhandled"},
            # The Python runtime's error shape; the stack lists code locations only, never values.
            "responsePayload": {
                "errorMessage": str(exc),
                "errorType": type(exc).__name__,
                "requestId": request_id,
                "stackTrace": traceback.format_list(traceback.extract_tb(exc.__traceback__)),
            },
        }
