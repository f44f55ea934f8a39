"""What the CLI tells an operator when a command cannot go on: a message and an exit code per kind."""

from __future__ import annotations

from enum import IntEnum


class Exit(IntEnum):
    OK = 0
    FAILED = 1  # the command ran and its answer is "no" (a rotation failed, still running)
    CONFIG = 2  # the rotation configuration is invalid or does not name the user
    AWS_SETUP = 3  # no credentials, no region, an endpoint that does not answer
    SETTINGS = 4  # a ROTATOR_* setting is missing
    AWS_REFUSED = 5  # AWS answered with an error (access denied, not found, ...)
    REFUSED = 6  # the request contradicts the recorded state (resume of a finished rotation, a paused user)
    UNEXPECTED = 70  # a bug: say so, and how to see the traceback
    INTERRUPTED = 130


class OperatorError(Exception):
    """A mistake the operator can fix; ``str`` is the whole message."""

    def __init__(self, message: str, code: Exit) -> None:
        super().__init__(message)
        self.code = code
