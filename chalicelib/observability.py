"""powertools Logger shared by every handler; the rotation id is the correlation id."""

from aws_lambda_powertools import Logger

SERVICE = "ci-key-rotator"
logger = Logger(service=SERVICE)
