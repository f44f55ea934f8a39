"""One module per state-machine task. Each takes the state (a dict) and returns the next one.

Every task is idempotent and guarded in the manner of Secrets Manager's rotation template: it first
checks what the ledger says is already done, so Step Functions may retry it or an operator re-run it.
"""
