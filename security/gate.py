"""``make security``: what a security team's scanners say about the product, against committed baselines.

- bandit on the Python code (``BANDIT_PATHS``);
- checkov on the packaged template (the offline one ``make template-lint`` builds) and the CI identity
  templates;
- parliament (an IAM policy linter) on every policy document the deployment creates: each one in the
  packaged template (the function roles carry the rendered ``.chalice`` policy files; the state machine
  role, the escrow and alerts keys, the topic policy, the on-failure grants, the API logging role) and in
  the CI identity templates, with CloudFormation's intrinsics resolved to example values.

Each tool's findings are compared with ``security/<tool>-baseline.json``: a list of accepted findings,
each matching on a few fields (``fnmatch`` patterns; a list means any of them) and carrying its
``reason``. A finding no entry accepts fails the gate; so does an entry that no longer matches anything
(remove it: the baseline lists exactly what is accepted) and an entry without a real reason.

The tools live in their own virtualenv (``.venv-security``, from ``requirements-security.txt``: checkov's
dependencies conflict with the project's pins); this module runs in the project's, because the policy
documents come from its code. It only reads; nothing leaves 127.0.0.1 (checkov runs with
``--skip-download``).
"""

from __future__ import annotations

import argparse
import fnmatch
import json
import re
import subprocess
import sys
import tempfile
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[1]
BASELINES = Path(__file__).resolve().parent
SECURITY_VENV = ROOT / ".venv-security"
BANDIT_PATHS = ("app.py", "chalicelib", "local", "cli", "deploy", "bench")
IDENTITY_TEMPLATES = (ROOT / "templates" / "ci-identity" / "ci-user.yaml",
                      ROOT / "templates" / "ci-identity" / "deploy-role.yaml")
TOOLS = ("bandit", "checkov", "parliament")
#: A reason is a sentence, not a placeholder.
MIN_REASON = 20
ACCOUNT, REGION = "123456789012", "us-east-1"


@dataclass(frozen=True)
class Finding:
    tool: str
    fields: dict[str, str]
    message: str

    def stub(self) -> str:
        """A baseline entry accepting exactly this finding, for the operator to give a reason."""
        return json.dumps({**self.fields, "reason": "<why this is accepted>"})


@dataclass
class Result:
    tool: str
    findings: list[Finding] = field(default_factory=list)
    new: list[Finding] = field(default_factory=list)
    stale: list[dict[str, Any]] = field(default_factory=list)
    invalid: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not (self.new or self.stale or self.invalid)


# -- the comparison -----------------------------------------------------------------------------------------


def _patterns(value: Any) -> list[str]:
    return [str(v) for v in value] if isinstance(value, list) else [str(value)]


def matches(entry: dict[str, Any], finding: Finding) -> bool:
    keys = [k for k in entry if k != "reason"]
    return bool(keys) and all(
        any(fnmatch.fnmatchcase(finding.fields.get(k, ""), p) for p in _patterns(entry[k])) for k in keys)


def compare(tool: str, findings: list[Finding], entries: list[dict[str, Any]]) -> Result:
    result = Result(tool, findings)
    for i, entry in enumerate(entries):
        reason = str(entry.get("reason", "")).strip()
        if len(reason) < MIN_REASON or reason.startswith("<"):
            result.invalid.append(f"{tool} baseline entry {i} ({json.dumps(entry)}) has no reason")
    used = [False] * len(entries)
    for finding in findings:
        hits = [i for i, entry in enumerate(entries) if matches(entry, finding)]
        for i in hits:
            used[i] = True
        if not hits:
            result.new.append(finding)
    result.stale = [entry for entry, was_used in zip(entries, used, strict=True) if not was_used]
    return result


def load_baseline(tool: str, directory: Path = BASELINES) -> list[dict[str, Any]]:
    data = json.loads((directory / f"{tool}-baseline.json").read_text())
    return list(data["accepted"])


# -- bandit -------------------------------------------------------------------------------------------------


def _tool(venv: Path, name: str) -> str:
    path = venv / "bin" / name
    if not path.exists():
        raise SystemExit(f"{path} is missing: `make security` installs it from requirements-security.txt")
    return str(path)


def bandit_findings(report: dict[str, Any], root: Path = ROOT) -> list[Finding]:
    if report.get("errors"):
        raise SystemExit(f"bandit could not scan: {report['errors']}")
    found = []
    for issue in report.get("results", []):
        path = Path(issue["filename"])
        relative = path.relative_to(root) if path.is_absolute() else path
        lines = (root / relative).read_text().splitlines()
        # Keyed by the flagged line's text, not its number, so unrelated edits do not churn the baseline.
        code = lines[issue["line_number"] - 1].strip() if issue["line_number"] <= len(lines) else ""
        found.append(Finding("bandit", {"test_id": issue["test_id"], "file": relative.as_posix(), "code": code},
                             f"{relative}:{issue['line_number']}: {issue['test_id']} {issue['issue_text']}"))
    return found


def run_bandit(venv: Path) -> list[Finding]:
    out = subprocess.run([_tool(venv, "bandit"), "-q", "-r", *BANDIT_PATHS, "-f", "json"], cwd=ROOT,
                         capture_output=True, text=True, timeout=600, check=False)
    return bandit_findings(json.loads(out.stdout))


# -- checkov ------------------------------------------------------------------------------------------------


def checkov_findings(report: Any) -> list[Finding]:
    found = []
    for section in report if isinstance(report, list) else [report]:
        for check in section.get("results", {}).get("failed_checks", []):
            name = Path(check.get("file_abs_path") or check["file_path"]).name
            found.append(Finding("checkov", {"check_id": check["check_id"], "file": name,
                                             "resource": check["resource"]},
                                 f"{name}: {check['resource']}: {check['check_id']} {check['check_name']}"))
    return found


def run_checkov(venv: Path, template: Path) -> list[Finding]:
    files = [template, *IDENTITY_TEMPLATES]
    args = [_tool(venv, "checkov"), "--quiet", "--compact", "--skip-download", "--framework", "cloudformation",
            "-o", "json"]
    for path in files:
        args += ["-f", str(path)]
    out = subprocess.run(args, cwd=ROOT, capture_output=True, text=True, timeout=900, check=False)
    try:
        report = json.loads(out.stdout)
    except ValueError:
        raise SystemExit(f"checkov failed: {out.stderr[-2000:]}") from None
    return checkov_findings(report)


# -- parliament ---------------------------------------------------------------------------------------------


def _physical(resources: dict[str, Any], logical: str, attribute: str | None) -> str:
    """An example value for ``Ref``/``Fn::GetAtt`` of a resource: the ARN or name it would have."""
    resource = resources.get(logical, {})
    kind, props = resource.get("Type", ""), resource.get("Properties", {}) or {}
    a, r = ACCOUNT, REGION
    name = next((props[k] for k in ("RoleName", "QueueName", "TopicName", "Name", "StateMachineName",
                                    "LogGroupName", "FunctionName", "UserName", "GroupName")
                 if isinstance(props.get(k), str)), logical)
    arns = {
        "AWS::IAM::Role": f"arn:aws:iam::{a}:role/{name}",
        "AWS::IAM::User": f"arn:aws:iam::{a}:user/{name}",
        "AWS::IAM::Group": f"arn:aws:iam::{a}:group/{name}",
        "AWS::SQS::Queue": f"arn:aws:sqs:{r}:{a}:{name}",
        "AWS::SNS::Topic": f"arn:aws:sns:{r}:{a}:{name}",
        "AWS::KMS::Key": f"arn:aws:kms:{r}:{a}:key/00000000-0000-4000-8000-000000000000",
        "AWS::Events::Rule": f"arn:aws:events:{r}:{a}:rule/{name}",
        "AWS::Logs::LogGroup": f"arn:aws:logs:{r}:{a}:log-group:{name}",
        "AWS::StepFunctions::StateMachine": f"arn:aws:states:{r}:{a}:stateMachine:{name}",
        "AWS::Serverless::Function": f"arn:aws:lambda:{r}:{a}:function:{name}",
        "AWS::Lambda::Function": f"arn:aws:lambda:{r}:{a}:function:{name}",
    }
    if attribute == "Arn" or (attribute is None and kind in ("AWS::SNS::Topic", "AWS::StepFunctions::StateMachine")):
        return arns.get(kind, f"arn:aws:unknown:{r}:{a}:{name}")
    if attribute == "QueueName":
        return name
    if kind == "AWS::KMS::Key":
        return "00000000-0000-4000-8000-000000000000"
    return name


def resolve(node: Any, resources: dict[str, Any], parameters: dict[str, str]) -> Any:
    """The document with CloudFormation's intrinsics replaced by example values."""
    pseudo = {"AWS::Partition": "aws", "AWS::Region": REGION, "AWS::AccountId": ACCOUNT, "AWS::URLSuffix": "amazonaws.com"}

    def ref(name: str) -> str:
        if name in pseudo:
            return pseudo[name]
        if name in parameters:
            return parameters[name]
        logical, _, attribute = name.partition(".")
        return _physical(resources, logical, attribute or None)

    if isinstance(node, list):
        return [resolve(v, resources, parameters) for v in node]
    if not isinstance(node, dict):
        return node
    if set(node) == {"Ref"}:
        return ref(node["Ref"])
    if set(node) == {"Fn::GetAtt"}:
        logical, attribute = node["Fn::GetAtt"] if isinstance(node["Fn::GetAtt"], list) else node["Fn::GetAtt"].split(".", 1)
        return _physical(resources, logical, attribute)
    if set(node) == {"Fn::Sub"}:
        text, variables = (node["Fn::Sub"], {}) if isinstance(node["Fn::Sub"], str) else node["Fn::Sub"]
        values = {k: resolve(v, resources, parameters) for k, v in variables.items()}
        return re.sub(r"\$\{([\w:.]+)\}", lambda m: str(values.get(m.group(1)) or ref(m.group(1))), text)
    if set(node) == {"Fn::Join"}:
        separator, parts = node["Fn::Join"]
        return separator.join(str(resolve(p, resources, parameters)) for p in parts)
    return {k: resolve(v, resources, parameters) for k, v in node.items()}


def _load_template(path: Path) -> dict[str, Any]:
    class Loader(yaml.SafeLoader):
        pass

    # The CI identity templates use the long forms only; a short form (!Sub) would be a mapping here.
    return json.loads(path.read_text()) if path.suffix == ".json" else yaml.load(path.read_text(), Loader=Loader)  # noqa: S506 - SafeLoader subclass


#: Example parameter values for the CI identity templates (those without a default).
EXAMPLE_PARAMETERS = {
    "CiAccountId": "111111111111", "CiPrincipalArnPattern": "arn:aws:iam::111111111111:user/ci/prod/*",
    "PipelineName": "web-app", "ArtifactBucket": "artifacts", "CloudFormationExecutionRoleName": "web-app-cfn-execution",
    "DeployRoleArn": f"arn:aws:iam::{ACCOUNT}:role/web-app-deploy",
}


def policy_documents(path: Path) -> dict[str, dict[str, Any]]:
    """Every policy document a template creates, by ``<file>:<resource>:<which>``."""
    template = _load_template(path)
    resources = template.get("Resources", {})
    parameters = {k: str(v.get("Default", EXAMPLE_PARAMETERS.get(k, k))) for k, v in template.get("Parameters", {}).items()}
    documents: dict[str, Any] = {}
    for logical, resource in resources.items():
        props = resource.get("Properties", {}) or {}
        kind = resource.get("Type", "")
        where = f"{path.name}:{logical}"
        if kind == "AWS::IAM::Role" and "AssumeRolePolicyDocument" in props:
            documents[f"{where}:trust"] = props["AssumeRolePolicyDocument"]
        if kind in ("AWS::IAM::Role", "AWS::IAM::User", "AWS::IAM::Group"):
            for policy in props.get("Policies", []):
                documents[f"{where}:{policy['PolicyName']}"] = policy["PolicyDocument"]
        if kind in ("AWS::IAM::Policy", "AWS::IAM::ManagedPolicy", "AWS::SNS::TopicPolicy", "AWS::SQS::QueuePolicy"):
            documents[f"{where}:policy"] = props["PolicyDocument"]
        if kind == "AWS::KMS::Key":
            documents[f"{where}:key-policy"] = props["KeyPolicy"]
    return {name: resolve(doc, resources, parameters) for name, doc in documents.items()}


def _detail(detail: Any) -> str:
    if isinstance(detail, list) and all(isinstance(d, dict) and "action" in d for d in detail):
        return ",".join(sorted({str(d["action"]) for d in detail}))
    if isinstance(detail, list | dict):
        return json.dumps(detail, sort_keys=True)
    return str(detail)


def parliament_findings(lines: Iterable[str], names: dict[str, str]) -> list[Finding]:
    found = []
    for line in lines:
        if not line.strip():
            continue
        issue = json.loads(line)
        document = names.get(Path(issue.get("location", {}).get("filepath", "")).name, "?")
        detail = _detail(issue.get("detail"))
        found.append(Finding("parliament", {"issue": issue["issue"], "document": document, "detail": detail},
                             f"{document}: {issue['issue']} ({issue.get('severity')}) {issue.get('title')}: {detail}"))
    return found


def run_parliament(venv: Path, documents: dict[str, dict[str, Any]]) -> list[Finding]:
    with tempfile.TemporaryDirectory(prefix="parliament-") as tmp:
        names = {}
        for i, (name, document) in enumerate(sorted(documents.items())):
            filename = f"{i:03d}.json"
            names[filename] = name
            (Path(tmp) / filename).write_text(json.dumps(document, indent=1))
        out = subprocess.run([_tool(venv, "parliament"), "--directory", tmp, "--json"], cwd=tmp,
                             capture_output=True, text=True, timeout=600, check=False)
        if out.returncode not in (0, 1):
            raise SystemExit(f"parliament failed: {out.stderr[-2000:]}")
        return parliament_findings(out.stdout.splitlines(), names)


# -- the gate -----------------------------------------------------------------------------------------------


def run(tools: Iterable[str], template: Path, venv: Path = SECURITY_VENV) -> list[Result]:
    results = []
    for tool in tools:
        if tool == "bandit":
            findings = run_bandit(venv)
        elif tool == "checkov":
            findings = run_checkov(venv, template)
        else:
            documents: dict[str, dict[str, Any]] = {}
            for path in (template, *IDENTITY_TEMPLATES):
                documents.update(policy_documents(path))
            findings = run_parliament(venv, documents)
        results.append(compare(tool, findings, load_baseline(tool)))
    return results


def report(results: list[Result]) -> str:
    lines = []
    for r in results:
        accepted = len(r.findings) - len(r.new)
        lines.append(f"{r.tool}: {len(r.findings)} finding(s), {accepted} accepted by security/{r.tool}-baseline.json, "
                     f"{len(r.new)} new, {len(r.stale)} stale baseline entr{'y' if len(r.stale) == 1 else 'ies'}")
        for finding in r.new:
            lines.append(f"  NEW {finding.message}\n      fix it, or accept it with a reason: {finding.stub()}")
        for entry in r.stale:
            lines.append(f"  STALE {json.dumps(entry)}: it matches nothing now; remove it")
        lines.extend(f"  INVALID {problem}" for problem in r.invalid)
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m security.gate", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--template", required=True, type=Path, help="the offline packaged template (sam.json)")
    parser.add_argument("--tools", default=",".join(TOOLS))
    parser.add_argument("--venv", type=Path, default=SECURITY_VENV)
    args = parser.parse_args(argv)
    tools = [t for t in args.tools.split(",") if t]
    unknown = sorted(set(tools) - set(TOOLS))
    if unknown:
        parser.error(f"unknown tool(s) {unknown}; choose from {TOOLS}")
    if not args.template.exists():
        parser.error(f"{args.template} does not exist: `make template-lint` builds it")
    results = run(tools, args.template, args.venv.resolve())
    print(report(results))
    failed = [r.tool for r in results if not r.ok]
    print(f"security: {'FAILED (' + ', '.join(failed) + ')' if failed else 'OK'}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
