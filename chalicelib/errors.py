"""Exceptions whose class names are the error names the state machine's Retry/Catch match.

A Lambda's unhandled exception reaches Step Functions as ``errorType`` = the class name, so renaming a
class here is a change to ``statemachine/rotation.asl.json`` too. Messages carry key ids and target ids,
never secret material: they end up in execution history and alerts.
"""


class RotatorError(Exception):
    """Base class of every error the rotator raises on purpose."""


class ConfigError(RotatorError):
    """The rotation configuration is invalid or does not name this user/target."""


class TransientError(RotatorError):
    """Throttling, 5xx or a network blip: the state machine retries with backoff."""


class RateLimited(TransientError):
    """A CI API's rate limit is spent for longer than a Lambda should sleep (GitHub's primary reset is up to
    an hour, Bitbucket's window is a rolling hour): the state machine parks the task and retries with a long
    backoff (``statemachine/rotation.asl.json``) instead of rolling the rotation back.

    ``retry_after_seconds`` is what the provider asked for (its reset time, or a documented minimum).
    """

    def __init__(self, message: str, *, retry_after_seconds: float) -> None:
        super().__init__(message)
        self.retry_after_seconds = retry_after_seconds


class RotationInProgress(RotatorError):
    """Another rotation of the same user holds the lock."""


class UnsafeKeyState(RotatorError):
    """The user's keys are not in a state the rotator may touch (two Active, unknown keys, ...)."""


class RecoveryWindowOpen(RotatorError):
    """The previous rotation's retired key is still inside its recovery window."""


class KeyNotLiveYet(RotatorError):
    """The new key is not accepted by AWS yet (IAM is eventually consistent)."""


class EscrowError(RotatorError):
    """The escrow does not hold what the ledger says it should."""


class TargetPushFailed(RotatorError):
    """A CI target refused the new credentials permanently (auth, not found, validation).

    ``changed`` says whether any variable was written before the failure; when unsure it stays True,
    so rollback restores the target rather than assume it is untouched.
    """

    def __init__(self, message: str, *, changed: bool = True) -> None:
        super().__init__(message)
        self.changed = changed


class VerificationTriggerFailed(RotatorError):
    """The verification build could not be started."""


class VerificationFailed(RotatorError):
    """The verification build ran and did not succeed (or no build ran)."""


class NewKeyRevoked(RotatorError):
    """The new key was deactivated or deleted outside the rotator after the push. A build may still have
    passed with it (IAM keeps a revoked key working for seconds), so the targets go back to the old key."""


class LastUseNotSeenYet(RotatorError):
    """AWS has not reported the new key used since the push yet (its last-used data is late and coarse);
    the state machine retries with backoff for about four hours, then alerts."""


class UnknownConsumer(RotatorError):
    """The old key was used after every target received its successor: someone else holds it."""


class InterlockViolation(RotatorError):
    """A destructive step was refused because its preconditions do not hold."""


class RollbackIncomplete(RotatorError):
    """Rollback could not restore every target; both keys are left Active."""
