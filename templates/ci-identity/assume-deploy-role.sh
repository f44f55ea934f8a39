#!/usr/bin/env sh
# CI Key Rotator - the CI side: exchange the rotated access key for the deployment role's short-lived
# session credentials, then run the deployment with those only.
#
# The CI holds AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY (the rotator keeps them current). They can do
# nothing but sts:AssumeRole on DEPLOY_ROLE_ARN, and the role admits them only with the principal tag
# access-to-production=true and the external id = the pipeline name.
#
#   DEPLOY_ROLE_ARN=arn:aws:iam::222222222222:role/web-app-deploy PIPELINE_NAME=web-app \
#     . ./assume-deploy-role.sh && aws cloudformation deploy ...
#
# Source it (". ./assume-deploy-role.sh") so the exported session credentials reach your next commands.
set -eu

: "${DEPLOY_ROLE_ARN:?set DEPLOY_ROLE_ARN to the deployment role (deploy-role.yaml output DeployRoleArn)}"
: "${PIPELINE_NAME:?set PIPELINE_NAME to the external id (deploy-role.yaml parameter PipelineName)}"
: "${AWS_ACCESS_KEY_ID:?the rotated key must be in the environment}"
: "${AWS_SECRET_ACCESS_KEY:?the rotated key must be in the environment}"

session_name="ci-${PIPELINE_NAME}-${CI_RUN_ID:-${GITHUB_RUN_ID:-$(date +%s)}}"
credentials=$(aws sts assume-role \
  --role-arn "$DEPLOY_ROLE_ARN" \
  --role-session-name "$(printf %s "$session_name" | cut -c1-64)" \
  --external-id "$PIPELINE_NAME" \
  --duration-seconds "${DEPLOY_SESSION_SECONDS:-900}" \
  --query 'Credentials.[AccessKeyId,SecretAccessKey,SessionToken]' \
  --output text)

# From here on only the role's session (15 minutes by default) is used; the long-lived key is dropped.
AWS_ACCESS_KEY_ID=$(printf %s "$credentials" | cut -f1)
AWS_SECRET_ACCESS_KEY=$(printf %s "$credentials" | cut -f2)
AWS_SESSION_TOKEN=$(printf %s "$credentials" | cut -f3)
export AWS_ACCESS_KEY_ID AWS_SECRET_ACCESS_KEY AWS_SESSION_TOKEN
unset credentials
aws sts get-caller-identity --query Arn --output text
