"""Entry point of the operator CLI."""

from __future__ import annotations

import argparse
import sys

from cli import audit, rotation


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m cli", description="CI Key Rotator operator CLI")
    subparsers = parser.add_subparsers(dest="command", required=True)
    rotation.register(subparsers)
    audit.register(subparsers)
    args = parser.parse_args(argv)
    return int(args.func(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
