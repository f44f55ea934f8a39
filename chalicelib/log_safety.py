"""No secret in any log, whatever level the logs are set to.

Below WARNING, libraries log what crosses the wire: botocore logs every request's parameters and every
response body at DEBUG (the new secret access key of CreateAccessKey, the SecretString of
PutSecretValue and GetSecretValue, CI tokens read as references), urllib3 logs request URLs with their
query strings, slack_sdk the webhook URL. Lambda's ``ApplicationLogLevel=DEBUG``
(``AWS_LAMBDA_LOG_LEVEL``) sets the root logger to DEBUG, and loggers without a level of their own follow
it; an engineer debugging may set ``botocore`` to DEBUG by hand.

``enforce()`` runs at the start of every handler (``observability.observed``, the webhook route, the
poller): it holds every library logger at ``SAFE_LEVEL`` or above, the ones named in
``LIBRARY_LOGGERS`` (whether or not they exist yet) and every other logger that is not the rotator's own.
The rotator's own loggers (``OWN_LOGGERS``) keep their level: the code logs ids and error class names
only (invariant 3), so their DEBUG lines are safe.
"""

from __future__ import annotations

import logging

SAFE_LEVEL = logging.WARNING
#: Libraries known to log request or response content below WARNING.
LIBRARY_LOGGERS = (
    "botocore", "boto3", "s3transfer", "urllib3", "aws_xray_sdk", "aws_lambda_powertools", "slack_sdk",
    "nacl", "cryptography", "chalice", "pydantic", "yaml", "jmespath",
)
#: The rotator's loggers: the powertools Logger's service name, the package, the Chalice app module.
OWN_LOGGERS = ("ci-key-rotator", "chalicelib", "app")


def enforce() -> None:
    """Raise every library logger to ``SAFE_LEVEL`` (never lowers one already stricter). Idempotent, cheap."""
    for name in LIBRARY_LOGGERS:
        _hold(logging.getLogger(name))
    for name, item in list(logging.root.manager.loggerDict.items()):
        if isinstance(item, logging.Logger) and not _own(name):
            _hold(item)


def _own(name: str) -> bool:
    return any(name == own or name.startswith(own + ".") for own in OWN_LOGGERS)


def _hold(logger: logging.Logger) -> None:
    # NOTSET (0) would inherit the root's level, which Lambda sets from ApplicationLogLevel. A logger that
    # inherits a stricter level from a parent set on purpose (say CRITICAL) keeps inheriting it.
    if logger.level < SAFE_LEVEL and _inherited(logger) < SAFE_LEVEL:
        logger.setLevel(SAFE_LEVEL)


def _inherited(logger: logging.Logger) -> int:
    """The level ``logger`` would have from its parents, the root's excluded (the root may be DEBUG)."""
    parent = logger.parent
    while parent is not None and parent is not logging.root:
        if parent.level:
            return parent.level
        parent = parent.parent
    return logging.NOTSET
