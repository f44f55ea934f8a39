"""``python -m deploy``: the deployment steps ``make deploy/destroy/package`` run.

    prepare   --stage S [--config FILE] [--allow-region-outside-us-east-1] [--layer-arn ARN]
              refuse a bad config or region; write the stage's ARNs into .chalice/config.json
    apply     --stage S [--config FILE]    create or update what Chalice does not (after chalice deploy)
    destroy   --stage S [--delete-data]    remove it (table, escrow, key and config kept unless asked)
    merge-template --stage S [--config FILE] --out FILE    for chalice package --merge-template
    template  --stage S [--config FILE] --out DIR   chalice package, offline (no dependency bundle)
    policies  [--write]                    check every .chalice/policy-*.json against the code

AWS is whatever the environment says (credentials, AWS_REGION, AWS_ENDPOINT_URL).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import boto3

from deploy import chalice_config, layer, naming, policies, preflight, resources


def _session() -> boto3.session.Session:
    session = boto3.session.Session()
    if not session.region_name:
        raise preflight.Refused("no AWS region: set AWS_REGION (us-east-1 for the audit rules)")
    return session


def _config_text(args: argparse.Namespace) -> str | None:
    if not getattr(args, "config", None):
        return None
    _, text = preflight.load_config_file(Path(args.config), getattr(args, "stage", None))
    return text


def _powertools_layer(session: Any, given: str | None, region: str) -> str:
    if given:
        if not layer.is_layer_version_arn(given):
            raise preflight.Refused(f"--layer-arn {given!r} is not a Lambda layer version ARN")
        return given
    found = layer.resolve(session)
    if found is None:
        raise preflight.Refused(
            f"no Powertools layer at {layer.parameter_name()} in {region}, and the functions need it "
            f"(requirements-layer.txt: {', '.join(layer.pins(layer.LAYER_REQUIREMENTS))}). Pass "
            f"--layer-arn (LAYER_ARN= for make deploy) with a layer built from "
            f"aws-lambda-powertools[all]=={layer.powertools_version()} for this Python")
    return found


def prepare(args: argparse.Namespace) -> int:
    session = _session()
    warning = preflight.check_region(session.region_name, args.allow_region_outside_us_east_1)
    if warning:
        print(warning, file=sys.stderr)
    if args.config:
        config, _ = preflight.load_config_file(Path(args.config), args.stage)
    else:
        deployed = preflight.deployed_config(session, args.stage)
        if deployed is None:
            raise preflight.Refused(
                f"no rotation config: pass CONFIG=rotation.yaml (stored in SSM as "
                f"{naming.StageNames(args.stage).config_parameter})")
        config = deployed
    for warning in preflight.check_aws(session, config, args.stage):
        print(warning, file=sys.stderr)
    d = resources.Deployment(args.stage, session)
    powertools = _powertools_layer(session, args.layer_arn, d.region)
    if chalice_config.write_stage(args.stage, d.topic_arn, d.state_machine_arn, layers=[powertools]):
        print(f"updated .chalice/config.json (stage {args.stage}): commit it")
    print(f"config OK: {len(config.users)} managed user(s); region {d.region}; account {d.account}")
    return 0


def apply(args: argparse.Namespace) -> int:
    d = resources.apply(args.stage, _session(), resources.load_deployed(args.stage), _config_text(args))
    for change in d.changes:
        print(f"  {change}")
    for warning in d.warnings:
        print(f"WARNING: {warning}", file=sys.stderr)
    print(f"{len(d.changes)} change(s); state machine {d.state_machine_arn}")
    return 0


def destroy(args: argparse.Namespace) -> int:
    d = resources.destroy(args.stage, _session(), delete_data=args.delete_data)
    for change in d.changes:
        print(f"  {change}")
    for warning in d.warnings:
        print(warning)
    return 0


def merge_template(args: argparse.Namespace) -> int:
    from deploy import template

    path = template.write_merge_template(args.stage, Path(args.out), _config_text(args))
    print(path)
    return 0


def offline_template(args: argparse.Namespace) -> int:
    from deploy import template

    out = Path(args.out)
    merge = template.write_merge_template(args.stage, out / "merge.json", _config_text(args))
    print(template.package_offline(args.stage, out, merge))
    return 0


def check_policies(args: argparse.Namespace) -> int:
    if args.write:
        for path in policies.write_all():
            print(f"wrote {path}")
    failed = 0
    for function in policies.functions():
        problems = policies.check(function)
        failed += bool(problems)
        for problem in problems:
            print(problem)
    for problem in chalice_config.problems():
        failed += 1
        print(f".chalice/config.json: {problem}")
    if not failed:
        print(json.dumps({f: sorted(n.action for n in policies.needs(f)) for f in policies.functions()}, indent=1))
    return 1 if failed else 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m deploy", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    for name, func in (("prepare", prepare), ("apply", apply), ("destroy", destroy),
                       ("merge-template", merge_template), ("template", offline_template)):
        command = sub.add_parser(name)
        command.add_argument("--stage", required=True)
        command.set_defaults(func=func)
        if name in ("prepare", "apply", "merge-template", "template"):
            command.add_argument("--config", help="rotation config YAML (validated; stored in SSM)")
        if name == "prepare":
            command.add_argument("--allow-region-outside-us-east-1", action="store_true")
            command.add_argument("--layer-arn", help="the Powertools layer, where AWS publishes none (deploy/layer.py)")
        if name == "destroy":
            command.add_argument("--delete-data", action="store_true",
                                 help="also delete the ledger table, escrow secrets, KMS key, config parameter")
        if name in ("merge-template", "template"):
            command.add_argument("--out", required=True)
    command = sub.add_parser("policies")
    command.add_argument("--write", action="store_true", help="rewrite the files from the code first")
    command.set_defaults(func=check_policies)
    args = parser.parse_args(argv)
    try:
        return int(args.func(args))
    except (preflight.Refused, FileNotFoundError) as exc:
        print(f"refused: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
