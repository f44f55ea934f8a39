"""A stand-in for the AWS CLI v2 in local verification builds: only the subcommands the templates use.

``aws sts get-caller-identity``, ``aws sts assume-role``, ``aws sts assume-role-with-web-identity`` (unsigned,
as AWS serves it: the ID token is the credential), ``aws s3api list-objects-v2`` and ``aws s3 ls``,
with ``--query`` (JMESPath, as the CLI) and ``--output json|text``. Credentials come from the environment
only (the build's environment has no config files and no instance metadata), as the real CLI's first
provider. Exit codes and the error line are the CLI's: 252 for a command it does not know, 253 without
credentials, 254 when AWS refused the call ("An error occurred (Code) when calling the Op operation: ...")
— https://docs.aws.amazon.com/cli/latest/userguide/cli-usage-returncodes.html
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import botocore.session
import jmespath
from botocore import UNSIGNED
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError, NoCredentialsError

from local import build_job

_USAGE_ERROR, _CONFIG_ERROR, _SERVICE_ERROR = 252, 253, 254


def _options(args: Sequence[str]) -> dict[str, str]:
    """``--name value`` pairs; a flag without a value is refused (none of ours takes one)."""
    options: dict[str, str] = {}
    it = iter(args)
    for arg in it:
        if not arg.startswith("--"):
            raise ValueError(f"Unknown options: {arg}")
        try:
            options[arg[2:]] = next(it)
        except StopIteration:
            raise ValueError(f"argument {arg}: expected one argument") from None
    return options


def _required(options: dict[str, str], *names: str) -> list[str]:
    missing = [f"--{n}" for n in names if n not in options]
    if missing:
        raise ValueError(f"the following arguments are required: {', '.join(missing)}")
    return [options.pop(n) for n in names]


#: A command's botocore call: (service, method, keyword arguments) from its options.
_Call = tuple[str, str, dict[str, Any]]


def _get_caller_identity(options: dict[str, str]) -> _Call:
    return "sts", "get_caller_identity", {}


def _assume_role(options: dict[str, str]) -> _Call:
    role_arn, session_name = _required(options, "role-arn", "role-session-name")
    kwargs: dict[str, Any] = {"RoleArn": role_arn, "RoleSessionName": session_name}
    if "external-id" in options:
        kwargs["ExternalId"] = options.pop("external-id")
    if "duration-seconds" in options:
        kwargs["DurationSeconds"] = int(options.pop("duration-seconds"))
    return "sts", "assume_role", kwargs


def _assume_role_with_web_identity(options: dict[str, str]) -> _Call:
    role_arn, session_name, token = _required(options, "role-arn", "role-session-name", "web-identity-token")
    kwargs: dict[str, Any] = {"RoleArn": role_arn, "RoleSessionName": session_name, "WebIdentityToken": token}
    if "duration-seconds" in options:
        kwargs["DurationSeconds"] = int(options.pop("duration-seconds"))
    return "sts", "assume_role_with_web_identity", kwargs


#: Operations AWS serves without a signature: the CLI sends them unsigned, whatever credentials exist.
_UNSIGNED = frozenset({"AssumeRoleWithWebIdentity"})


def _unsigned_client(env: Mapping[str, str], service: str) -> Any:
    session = botocore.session.Session()
    return session.create_client(service, region_name=env.get("AWS_DEFAULT_REGION") or "us-east-1",
                                 endpoint_url=env.get("AWS_ENDPOINT_URL") or None,
                                 config=Config(signature_version=UNSIGNED, retries={"total_max_attempts": 1}))


def _list_objects_v2(options: dict[str, str]) -> _Call:
    (bucket,) = _required(options, "bucket")
    kwargs: dict[str, Any] = {"Bucket": bucket}
    if "max-items" in options:
        kwargs["MaxKeys"] = int(options.pop("max-items"))
    if "prefix" in options:
        kwargs["Prefix"] = options.pop("prefix")
    return "s3", "list_objects_v2", kwargs


_COMMANDS: Mapping[tuple[str, str], tuple[str, Callable[[dict[str, str]], _Call]]] = {
    ("sts", "get-caller-identity"): ("GetCallerIdentity", _get_caller_identity),
    ("sts", "assume-role"): ("AssumeRole", _assume_role),
    ("sts", "assume-role-with-web-identity"): ("AssumeRoleWithWebIdentity", _assume_role_with_web_identity),
    ("s3api", "list-objects-v2"): ("ListObjectsV2", _list_objects_v2),
}


def _text(value: Any) -> str:
    """The CLI's ``--output text`` for the shapes our queries return: scalars, and lists tab-separated."""
    if isinstance(value, list):
        return "\t".join(_text(v) for v in value)
    if isinstance(value, dict):
        return "\t".join(_text(v) for v in value.values())
    return "None" if value is None else str(value)


def main(argv: Sequence[str], env: Mapping[str, str]) -> int:
    argv = list(argv)
    if len(argv) >= 3 and argv[:2] == ["s3", "ls"] and argv[2].startswith("s3://"):
        argv = ["s3api", "list-objects-v2", "--bucket", argv[2][5:].split("/", 1)[0], *argv[3:]]
    if len(argv) < 2 or (argv[0], argv[1]) not in _COMMANDS:
        print(f"aws: error: this local AWS CLI knows only: "
              f"{', '.join(' '.join(c) for c in _COMMANDS)}", file=sys.stderr)
        return _USAGE_ERROR
    operation, handler = _COMMANDS[(argv[0], argv[1])]
    try:
        options = _options(argv[2:])
        query, output = options.pop("query", None), options.pop("output", "json")
        for name in ("region", "endpoint-url"):
            options.pop(name, None)  # the build's environment already names both
        service, method, kwargs = handler(options)
        if options:
            raise ValueError(f"Unknown options: {', '.join('--' + k for k in options)}")
        client = _unsigned_client(env, service) if operation in _UNSIGNED else build_job.client_factory(env)(service)
        result = getattr(client, method)(**kwargs)
    except ValueError as exc:
        print(f"aws: error: {exc}", file=sys.stderr)
        return _USAGE_ERROR
    except NoCredentialsError:
        print("Unable to locate credentials. You can configure credentials by running \"aws configure\".",
              file=sys.stderr)
        return _CONFIG_ERROR
    except ClientError as exc:
        error = exc.response.get("Error", {})
        print(f"\nAn error occurred ({error.get('Code', 'Unknown')}) when calling the {operation} operation: "
              f"{error.get('Message', '')}", file=sys.stderr)
        return _SERVICE_ERROR
    except BotoCoreError as exc:
        # The class name only: a message could name the endpoint, never useful to a reader of a CI log.
        print(f"\n{type(exc).__name__}", file=sys.stderr)
        return 255
    result.pop("ResponseMetadata", None)
    if query:
        result = jmespath.search(query, result)
    print(_text(result) if output == "text" else json.dumps(result, indent=4, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:], os.environ))
