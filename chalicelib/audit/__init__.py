"""Audit pipeline: CloudTrail / AWS Health events in, findings out, notifiers and dedup around them.

Entry points: ``service.audit_event`` (the EventBridge Lambda, pattern from ``patterns``),
``service.credential_report_audit`` (the daily schedule), ``pipeline.classify`` (pure core) and
``cli/audit.py`` (offline). Importing this package is cheap: submodules import what they need.
"""
