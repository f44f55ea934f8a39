"""``audit classify FILE...``: run the detections over CloudTrail / Health events offline.

Input per FILE (``-`` = stdin): an EventBridge event, a raw CloudTrail record, a CloudTrail log file
``{"Records": [...]}`` (also gzipped, as CloudTrail writes them to S3), a JSON array of any of these,
or JSON Lines. Output: one JSON finding per line on stdout; problems on stderr.
Exit status: 0 (also when some events inside a readable file are malformed), 2 when a FILE cannot be
read or is not JSON at all.
"""

from __future__ import annotations

import argparse
import gzip
import json
import sys
from collections.abc import Iterator, Sequence
from typing import IO, Any

from chalicelib.audit.context import DEFAULT_RESOURCE_PREFIX, DEFAULT_ROTATOR_ROLE, AuditContext
from chalicelib.audit.dedup import DEFAULT_WINDOW_SECONDS, MemoryDeduplicator
from chalicelib.audit.finding import Finding, Severity
from chalicelib.audit.masking import mask_text
from chalicelib.audit.models import Problem, iter_records
from chalicelib.audit.pipeline import default_classifier

EXIT_OK = 0
EXIT_UNREADABLE = 2


class UnreadableInput(Exception):
    """The file could not be opened, decoded or parsed as JSON / JSON Lines."""


def register(subparsers: Any) -> None:
    """Add ``audit classify`` to the top-level CLI's subparsers."""
    audit = subparsers.add_parser("audit", help="audit CloudTrail / AWS Health events")
    commands = audit.add_subparsers(dest="audit_command", metavar="COMMAND")
    commands.required = True
    classify = commands.add_parser(
        "classify",
        help="print one JSON finding per line for the events in FILE(s)",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    classify.add_argument("files", nargs="+", metavar="FILE", help="JSON / JSON Lines / .gz file, or - for stdin")
    classify.add_argument(
        "--managed-user", action="append", default=[], metavar="NAME",
        help="an IAM user the rotator manages (repeatable); raises severities for it",
    )
    classify.add_argument(
        "--rotator-role", default=DEFAULT_ROTATOR_ROLE, metavar="NAME",
        help="the rotator's IAM role (or local IAM user) name; comma-separate several "
        f"(default: {DEFAULT_ROTATOR_ROLE})",
    )
    classify.add_argument(
        "--resource-prefix", default=DEFAULT_RESOURCE_PREFIX, metavar="PREFIX",
        help=f"name prefix of the product's own resources (default: {DEFAULT_RESOURCE_PREFIX})",
    )
    classify.add_argument(
        "--min-severity", default="INFO", type=str.upper, choices=[s.value for s in Severity],
        help="print only findings at or above this severity",
    )
    classify.add_argument(
        "--dedup-window", type=int, default=DEFAULT_WINDOW_SECONDS, metavar="SECONDS",
        help="fold repeats within this many seconds of event time into one line with a count "
        f"(default: {DEFAULT_WINDOW_SECONDS}; 0 prints every finding)",
    )
    classify.set_defaults(func=run_classify)


def run_classify(args: argparse.Namespace, stdout: IO[str] | None = None, stderr: IO[str] | None = None) -> int:
    stdout = stdout or sys.stdout
    stderr = stderr or sys.stderr
    ctx = AuditContext(
        managed_users=frozenset(args.managed_user),
        rotator_role_name=args.rotator_role,
        resource_prefix=args.resource_prefix,
        intent_lookup=None,  # offline: no ledger, so the rotator's own key changes are reported too
    )
    classifier = default_classifier()
    threshold = Severity(args.min_severity)
    dedup = MemoryDeduplicator(args.dedup_window) if args.dedup_window > 0 else None
    # First-seen order; a repeat within the window bumps the count of the line already collected.
    lines: list[Finding] = []
    open_line: dict[str, int] = {}
    status = EXIT_OK
    for name in args.files:
        try:
            documents = list(_documents(name))
        except UnreadableInput as exc:
            print(f"audit classify: {name}: {exc}", file=stderr)
            status = EXIT_UNREADABLE
            continue
        for where, document in documents:
            if isinstance(document, _NotJson):
                print(f"audit classify: {name}{where}: skipped: not valid JSON", file=stderr)
                continue
            for item in iter_records(document):
                if isinstance(item, Problem):
                    print(f"audit classify: {name}{where}: skipped {item}", file=stderr)
                    continue
                for finding in classifier.classify_record(item, ctx):
                    if not finding.severity.at_least(threshold):
                        continue
                    if dedup is not None:
                        claim = dedup.claim(finding, finding.event_time)
                        if not claim.first:
                            index = open_line[finding.dedup_key]
                            lines[index] = lines[index].model_copy(update={"count": claim.count})
                            continue
                        open_line[finding.dedup_key] = len(lines)
                    lines.append(finding)
    for finding in lines:
        print(json.dumps(_line(finding), ensure_ascii=False), file=stdout)
    return status


def _line(finding: Finding) -> dict[str, Any]:
    data = finding.to_json_dict()
    # Stable, readable key order: the fields people grep first.
    first = ("detection", "category", "severity", "principal", "summary", "event_id")
    return {**{k: data[k] for k in first}, **{k: v for k, v in data.items() if k not in first}}


def _read(name: str) -> bytes:
    try:
        if name == "-":
            return sys.stdin.buffer.read()
        with open(name, "rb") as handle:
            return handle.read()
    except OSError as exc:
        raise UnreadableInput(f"cannot read: {exc.strerror or exc}") from None


def _documents(name: str) -> Iterator[tuple[str, Any]]:
    """(location suffix, parsed JSON) for the whole file, or per line for JSON Lines."""
    raw = _read(name)
    if raw[:2] == b"\x1f\x8b":
        try:
            raw = gzip.decompress(raw)
        except (OSError, EOFError) as exc:
            raise UnreadableInput(f"not a valid gzip file ({exc})") from None
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise UnreadableInput("not UTF-8 text") from None
    if not text.strip():
        return
    try:
        yield "", json.loads(text)
        return
    except (ValueError, RecursionError) as exc:
        whole_error = exc
    documents: list[tuple[str, Any]] = []
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            documents.append((f":{number}", json.loads(line)))
        except (ValueError, RecursionError):
            documents.append((f":{number}", _NotJson()))
    if all(isinstance(doc, _NotJson) for _, doc in documents):
        raise UnreadableInput(f"not JSON or JSON Lines ({mask_text(str(whole_error))[:200]})")
    yield from documents


class _NotJson:
    """Stands for an unparsable JSON Lines line, so it is reported in order as a Problem."""


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m cli.audit")
    register(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    return int(args.func(args))


if __name__ == "__main__":
    sys.exit(main())
