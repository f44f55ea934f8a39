"""What every rotation command needs before it calls AWS: the region and the ROTATOR_* settings."""

from __future__ import annotations

from cli.errors import Exit, OperatorError


def require_settings(*names: str) -> None:
    """The region and the ROTATOR_* settings a command needs, or one line saying which to export."""
    import boto3

    from chalicelib.settings import Settings, get_settings

    if boto3.session.Session().region_name is None:
        raise OperatorError("no AWS region: export AWS_REGION (the stage's region, us-east-1 for the audit)",
                            Exit.AWS_SETUP)
    settings = get_settings()
    missing = [f"ROTATOR_{n.upper()}" for n in names
               if getattr(settings, n) in ("", None) or getattr(settings, n) == Settings.model_fields[n].default]
    if missing:
        raise OperatorError(f"{', '.join(missing)} not set: export the stage's settings (README: Operator CLI)",
                            Exit.SETTINGS)
