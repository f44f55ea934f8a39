"""``make security`` (security/gate.py): the baselines are honest, a new finding fails, and the scanners see
every policy document the deployment creates. The tests that run the scanners themselves need
``.venv-security`` (``make security`` builds it; ``make test`` runs that first)."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Any

import pytest

from deploy import policies, protection, resources, template
from security import gate

ROOT = Path(__file__).resolve().parents[2]


def finding(**fields: str) -> gate.Finding:
    return gate.Finding("checkov", fields, json.dumps(fields))


REASON = "a reason long enough to be a sentence"


def test_a_finding_no_entry_accepts_fails_the_gate() -> None:
    entries = [{"check_id": "CKV_AWS_117", "resource": "AWS::Serverless::Function.*", "reason": REASON}]
    accepted = finding(check_id="CKV_AWS_117", resource="AWS::Serverless::Function.Plan", file="sam.json")
    new = finding(check_id="CKV_AWS_26", resource="AWS::SNS::Topic.OutcomesTopic", file="sam.json")
    assert gate.compare("checkov", [accepted], entries).ok
    result = gate.compare("checkov", [accepted, new], entries)
    assert not result.ok and result.new == [new]
    assert "NEW" in gate.report([result]) and '"check_id": "CKV_AWS_26"' in gate.report([result])


def test_an_entry_that_matches_nothing_or_has_no_reason_fails_the_gate() -> None:
    stale = {"check_id": "CKV_AWS_26", "resource": "AWS::SNS::Topic.OutcomesTopic", "reason": REASON}
    assert gate.compare("checkov", [], [stale]).stale == [stale]
    for reason in ("", "ok", "<why this is accepted>"):
        entry = {"check_id": "X", "reason": reason}
        assert gate.compare("checkov", [finding(check_id="X")], [entry]).invalid, reason
    assert not gate.matches({"reason": REASON}, finding(check_id="X")), "an entry must match on something"


def test_lists_and_patterns_in_an_entry() -> None:
    entry = {"check_id": "CKV_AWS_115", "resource": ["AWS::Serverless::Function.Plan", "*.Alert"], "reason": REASON}
    assert gate.matches(entry, finding(check_id="CKV_AWS_115", resource="AWS::Serverless::Function.Alert"))
    assert not gate.matches(entry, finding(check_id="CKV_AWS_115", resource="AWS::Serverless::Function.APIHandler"))


def test_the_committed_baselines_give_a_reason_for_every_entry() -> None:
    for tool in gate.TOOLS:
        entries = gate.load_baseline(tool)
        assert entries, tool
        for entry in entries:
            assert [k for k in entry if k != "reason"], entry
            assert len(entry["reason"]) >= gate.MIN_REASON and not entry["reason"].startswith("<"), entry


def test_the_fixed_findings_are_not_in_the_baseline() -> None:
    """What this round fixed stays fixed: the baseline cannot quietly accept it back."""
    checkov = json.dumps(gate.load_baseline("checkov"))
    for fixed in ("CKV_AWS_26", "CKV_AWS_76", "CKV_AWS_73", "CKV_AWS_111"):
        assert fixed not in checkov
    concurrency = next(e for e in gate.load_baseline("checkov") if e["check_id"] == "CKV_AWS_115")
    assert "AWS::Serverless::Function.APIHandler" not in concurrency["resource"]
    assert all("*" not in r for r in concurrency["resource"]), "named one by one, so the webhook cannot slip in"


def test_the_security_requirements_are_pinned_and_make_test_runs_the_gate() -> None:
    lines = [line.split("#")[0].strip() for line in (ROOT / "requirements-security.txt").read_text().splitlines()]
    pins = [line for line in lines if line]
    assert {p.split("==")[0].lower() for p in pins} >= {"bandit", "checkov", "parliament"}
    assert all(re.fullmatch(r"[A-Za-z0-9_.\-\[\],]+==[\w.+!-]+", p) for p in pins), [p for p in pins if "==" not in p]
    makefile = (ROOT / "Makefile").read_text()
    assert re.search(r"^test:.*\bsecurity\b", makefile, re.M)
    assert "-r requirements-security.txt" in makefile and ".venv-security" in makefile


# -- the documents parliament reads ------------------------------------------------------------------------


@pytest.fixture(scope="module")
def packaged(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("security")
    merge = template.write_merge_template("prod", out / "merge.json")
    return template.package_offline("prod", out, merge)


def _intrinsics(node: Any) -> list[Any]:
    if isinstance(node, dict):
        own = [node] if any(k == "Ref" or k.startswith("Fn::") for k in node) else []
        return own + [x for v in node.values() for x in _intrinsics(v)]
    if isinstance(node, list):
        return [x for v in node for x in _intrinsics(v)]
    return []


def test_every_policy_document_of_the_deployment_is_linted(packaged: Path) -> None:
    documents = gate.policy_documents(packaged)
    for path in gate.IDENTITY_TEMPLATES:
        documents.update(gate.policy_documents(path))
    for function in policies.functions():
        role = template.role_logical_id(function)
        assert f"sam.json:{role}:trust" in documents
        (inline,) = [d for n, d in documents.items() if n.startswith(f"sam.json:{role}:") and not n.endswith(":trust")
                     and "on-failure" not in n]
        assert inline == policies.load(function), f"{function}: the policy file as Chalice deploys it"
    for function in protection.async_functions():
        assert f"sam.json:{template.logical_id(function)}DestinationPolicy:policy" in documents
    for name in ("sam.json:EscrowKey:key-policy", "sam.json:AlertsKey:key-policy", "sam.json:OutcomesTopicPolicy:policy",
                 "sam.json:StateMachineRole:invoke-tasks", "sam.json:ApiGatewayLogsRole:push-to-cloudwatch-logs",
                 "deploy-role.yaml:DeployRole:trust", "deploy-role.yaml:DeployRole:deploy-one-stack-family",
                 "ci-user.yaml:AssumeDeployRoleGroup:assume-deploy-role-only"):
        assert name in documents, name
    assert _intrinsics(documents) == [], "every Ref/Fn:: resolved to an example value"
    states = documents["sam.json:StateMachineRole:invoke-tasks"]["Statement"][0]["Resource"]
    assert states[0].startswith("arn:aws:lambda:us-east-1:123456789012:function:")
    assert len(resources.task_functions()) == len(states)


# -- the scanners themselves ----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def scanners() -> Path:
    venv = gate.SECURITY_VENV
    if not (venv / "bin" / "checkov").exists():
        if os.environ.get("CI"):
            pytest.fail(f"{venv} is missing in CI: make test must run make security first")
        pytest.skip(f"{venv} is not built: run `make security` (make test does)")
    return venv


def test_an_unencrypted_alerts_topic_fails_the_gate(packaged: Path, scanners: Path, tmp_path: Path) -> None:
    """The gate, end to end with the real checkov: undo the topic's encryption and it refuses the template."""
    doc = json.loads(packaged.read_text())
    assert gate.compare("checkov", gate.run_checkov(scanners, packaged), gate.load_baseline("checkov")).new == []
    del doc["Resources"]["OutcomesTopic"]["Properties"]["KmsMasterKeyId"]
    del doc["Resources"]["RestAPI"]["Properties"]["AccessLogSetting"]
    tampered = tmp_path / "sam.json"
    tampered.write_text(json.dumps(doc))
    new = gate.compare("checkov", gate.run_checkov(scanners, tampered), gate.load_baseline("checkov")).new
    assert {(f.fields["check_id"], f.fields["resource"]) for f in new} == {
        ("CKV_AWS_26", "AWS::SNS::Topic.OutcomesTopic"), ("CKV_AWS_76", "AWS::Serverless::Api.RestAPI")}


def test_a_wildcard_grant_fails_the_gate(scanners: Path) -> None:
    wildcard = {"Version": "2012-10-17", "Statement": [
        {"Effect": "Allow", "Action": "iam:*", "Resource": "*"}]}
    found = gate.run_parliament(scanners, {"sam.json:PlanRole:PlanRolePolicy": wildcard})
    result = gate.compare("parliament", found, gate.load_baseline("parliament"))
    assert result.new and all(f.fields["document"] == "sam.json:PlanRole:PlanRolePolicy" for f in result.new)
