"""Secrets never leave the pipeline: masking helper and the Finding model that applies it."""

from __future__ import annotations

import pytest

from chalicelib.audit.finding import Finding
from chalicelib.audit.masking import MASK, looks_secret, mask_obj, mask_text

from .conftest import fixture_record

SECRET_KEY = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"
WEBHOOK = "https://hooks.slack.com/services/T00000000/B00000000/XXXXXXXXXXXXXXXXXXXXXXXX"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (f"key {SECRET_KEY} leaked", f"key {MASK} leaked"),
        (f"AWS_SECRET_ACCESS_KEY={SECRET_KEY}", f"AWS_SECRET_ACCESS_KEY={MASK}"),
        (f'"{SECRET_KEY}"', f'"{MASK}"'),
        (f"post to {WEBHOOK} now", f"post to https://hooks.slack.com/{MASK} now"),
        ("token xoxb-123456789012-1234567890123-AbCdEfGhIjKlMnOpQrStUvWx end", f"token {MASK} end"),
        ("ghp_" + "a1B2" * 9 + " pushed", f"{MASK} pushed"),
    ],
)
def test_secrets_are_masked(text: str, expected: str) -> None:
    assert mask_text(text) == expected


def test_session_token_from_a_real_assume_role_response_is_masked() -> None:
    token = fixture_record("sts_AssumeRole_role_chaining.raw.json")["responseElements"]["credentials"]["sessionToken"]
    assert MASK in mask_text(f"credentials {token}") and token[:100] not in mask_text(token)
    assert looks_secret(token)


@pytest.mark.parametrize(
    "text",
    [
        "arn:aws:iam::111122223333:role/service-role/ci-key-rotator-dev-audit-function-role",
        "arn:aws:sts::111111111111:assumed-role/AWSReservedSSO_AdministratorAccess_0123456789abcdef/jane",
        "aws-cli/2.15.30 Python/3.11.8 Linux/6.1.79-99.164.amzn2023.x86_64 exe/x86_64.amzn.2023 prompt/off",
        "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_11_6) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/67.0",
        "AKIAIOSFODNN7EXAMPLE is a key id, not a secret",
        "e3b0c44298fc1c149afbf4c8996fb92427ae41e4",  # a 40-char hex digest (commit id)
        "ThisSentenceHasExactlyFortyLettersInIt!!",
        "https://us-east-1.console.aws.amazon.com/cloudtrailv2/home?region=us-east-1#/events/3fcfb182-98f8",
    ],
)
def test_ordinary_text_is_untouched(text: str) -> None:
    assert mask_text(text) == text


def test_mask_obj_masks_secret_named_keys_and_values() -> None:
    data = {
        "credentials": {"sessionToken": "short", "accessKeyId": "ASIAEXAMPLE", "secretAccessKey": "x"},
        "list": [f"k={SECRET_KEY}", 3, None],
        "password": "",
        "webhook_url": WEBHOOK,
    }
    assert mask_obj(data) == {
        "credentials": {"sessionToken": MASK, "accessKeyId": "ASIAEXAMPLE", "secretAccessKey": MASK},
        "list": [f"k={MASK}", 3, None],
        "password": "",
        "webhook_url": MASK,
    }


def test_finding_masks_every_free_text_field() -> None:
    finding = Finding(
        detection="root.activity", category="root", severity="HIGH", title=f"t {SECRET_KEY}",
        principal=f"p {SECRET_KEY}", action="iam:X", summary=f"see {WEBHOOK}", user_agent=f"ua {SECRET_KEY}",
        error=f"e {SECRET_KEY}", resources=[f"r={SECRET_KEY}"], dedup_key="root.activity:1",
    )
    dumped = finding.model_dump_json()
    assert SECRET_KEY not in dumped and "T00000000" not in dumped
    assert finding.resources == [f"r={MASK}"]


def test_finding_truncates_huge_text() -> None:
    finding = Finding(detection="root.activity", category="root", severity="LOW", title="t", principal="p",
                      action="a", summary="x " * 10_000, dedup_key="k", resources=[str(i) for i in range(500)])
    assert len(finding.summary) == 4000 and finding.summary.endswith("…")
    assert len(finding.resources) == 50
