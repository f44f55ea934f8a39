"""What the provider test modules share: a moto server with a CI user's two keys, and a webhook receiver."""

from __future__ import annotations

import json
import threading
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import SimpleNamespace
from typing import Any

import boto3
from moto.server import ThreadedMotoServer

from chalicelib.targets.base import Credentials
from local import iam_consistency

VERIFY_POLICY = json.dumps({
    "Version": "2012-10-17",
    "Statement": [{"Effect": "Allow", "Action": ["sts:GetCallerIdentity", "s3:ListBucket"], "Resource": "*"}],
})


@contextmanager
def moto_auth(enabled: bool) -> Iterator[None]:
    """Switch moto's IAM authentication on or off, then back to what it was (another fixture may own it)."""
    from moto import settings
    from moto.core.authorization import ActionAuthenticatorMixin

    saved = settings.INITIAL_NO_AUTH_ACTION_COUNT, ActionAuthenticatorMixin.request_count
    settings.INITIAL_NO_AUTH_ACTION_COUNT = 0 if enabled else float("inf")
    ActionAuthenticatorMixin.request_count = 0
    try:
        yield
    finally:
        settings.INITIAL_NO_AUTH_ACTION_COUNT, ActionAuthenticatorMixin.request_count = saved


@contextmanager
def moto_with_ci_user(prefix: str) -> Iterator[SimpleNamespace]:
    """moto in server mode (the build subprocess must reach it), one IAM user and its two keys."""
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    endpoint = f"http://{host}:{port}"
    iam = boto3.client("iam", endpoint_url=endpoint, region_name="us-east-1",
                       aws_access_key_id="testing", aws_secret_access_key="testing")
    user = f"{prefix}-{uuid.uuid4().hex[:8]}"  # moto's backends are process-wide
    with moto_auth(False):  # the session's local runtime may have switched it on
        iam.create_user(UserName=user)
        iam.put_user_policy(UserName=user, PolicyName="verify", PolicyDocument=VERIFY_POLICY)
        keys = [iam.create_access_key(UserName=user)["AccessKey"] for _ in range(2)]
    iam_consistency.settle()  # both keys have reached every IAM endpoint before a build uses them
    try:
        yield SimpleNamespace(
            endpoint=endpoint,
            old=Credentials(keys[0]["AccessKeyId"], keys[0]["SecretAccessKey"]),
            new=Credentials(keys[1]["AccessKeyId"], keys[1]["SecretAccessKey"]),
        )
    finally:
        server.stop()


class Receiver:
    """A webhook endpoint: records every delivery's headers and exact bytes."""

    def __init__(self, path: str = "/hook", timeout: float = 10) -> None:
        self.received: list[tuple[dict[str, str], bytes]] = []
        self.arrived = threading.Condition()
        self.timeout = timeout
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                with receiver.arrived:
                    receiver.received.append((dict(self.headers.items()), body))
                    receiver.arrived.notify_all()
                self.send_response(204)
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, args=(0.05,), daemon=True).start()
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}{path}"

    def wait_for(self, count: int, timeout: float | None = None) -> list[tuple[dict[str, str], bytes]]:
        with self.arrived:
            assert self.arrived.wait_for(lambda: len(self.received) >= count, timeout or self.timeout)
            return list(self.received)

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@contextmanager
def receiving(path: str, timeout: float = 10) -> Iterator[Receiver]:
    receiver = Receiver(path, timeout)
    try:
        yield receiver
    finally:
        receiver.close()
