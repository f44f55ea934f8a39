"""The local webhook server behaves like API Gateway's REST API in front of the Lambda, not like Chalice's.

Two differences matter to the webhook route (``local/strict.py``):

- **Repeated headers.** API Gateway's Lambda proxy event has ``headers`` with the *last* value of a
  repeated header and ``multiValueHeaders`` with all of them; Chalice's dev server keeps the *first* and
  sends no ``multiValueHeaders``. With ``api_gateway_header_semantics`` the local event is API Gateway's.
- **Integration timeout.** API Gateway answers ``504 {"message": "Endpoint request timed out"}`` once the
  integration has run ``api_gateway_integration_timeout_seconds`` (29 s); the Lambda runs on. The local
  server does the same, so a slow route fails here as it would behind API Gateway.

https://docs.aws.amazon.com/apigateway/latest/developerguide/set-up-lambda-proxy-integrations.html
https://docs.aws.amazon.com/apigateway/latest/developerguide/limits.html
"""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler
from typing import Any

from chalice.local import ChaliceRequestHandler, LocalGateway

from local import strict

TIMED_OUT = {"message": "Endpoint request timed out"}


class ApiGateway(LocalGateway):
    """Chalice's LocalGateway with API Gateway's header semantics and integration timeout."""

    #: Every value of every header of the request being handled (lower-case names), set per request.
    multi_value_headers: dict[str, list[str]] | None = None

    def _generate_lambda_event(self, method: str, path: str, headers: Any, body: bytes | None) -> Any:
        event = super()._generate_lambda_event(method, path, headers, body)
        if self.multi_value_headers is not None:
            event["multiValueHeaders"] = self.multi_value_headers
        return event

    def handle_request(self, method: str, path: str, headers: Any, body: bytes | None) -> Any:
        limit = strict.current().api_gateway_integration_timeout_seconds
        if not limit:
            return super().handle_request(method, path, headers, body)
        outcome: dict[str, Any] = {}

        def integrate() -> None:
            try:
                outcome["response"] = super(ApiGateway, self).handle_request(method, path, headers, body)
            except BaseException as exc:  # noqa: BLE001 - handed to the request thread below
                outcome["error"] = exc

        # The Lambda keeps running after API Gateway gave up, as in AWS: a daemon thread, not killed.
        worker = threading.Thread(target=integrate, name="api-gateway-integration", daemon=True)
        worker.start()
        worker.join(limit)
        if worker.is_alive():
            return {"statusCode": 504, "headers": {"x-amzn-ErrorType": "IntegrationTimeout"},
                    "multiValueHeaders": {}, "body": json.dumps(TIMED_OUT)}
        if "error" in outcome:
            raise outcome["error"]
        return outcome["response"]


class ApiGatewayRequestHandler(ChaliceRequestHandler):
    """Chalice's request handler feeding ``ApiGateway`` (one per connection)."""

    def __init__(self, request: Any, client_address: Any, server: Any, app_object: Any, config: Any) -> None:
        self.local_gateway = ApiGateway(app_object, config)
        BaseHTTPRequestHandler.__init__(self, request, client_address, server)  # handles the request(s)

    def _parse_payload(self) -> tuple[dict[str, Any], bytes | None]:
        headers, body = super()._parse_payload()
        gateway: ApiGateway = self.local_gateway  # type: ignore[assignment]
        if not strict.current().api_gateway_header_semantics:
            gateway.multi_value_headers = None
            return headers, body
        values: dict[str, list[str]] = {}
        for name, value in self.headers.items():  # every occurrence, in order
            values.setdefault(name.lower(), []).append(value)
        gateway.multi_value_headers = values
        return {name: every[-1] for name, every in values.items()}, body
