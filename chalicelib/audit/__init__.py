"""Audit pipeline: CloudTrail / AWS Health events in, findings out, notifiers and dedup around them.

``pipeline.classify`` is the pure core; ``pipeline.handle_event`` is what the EventBridge Lambda calls;
``credential_report.run_credential_report`` is the daily posture digest. Importing this package is cheap
(no boto3 or slack_sdk): the submodules that need them import them themselves.
"""
