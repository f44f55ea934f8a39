"""Local CI servers, one module per provider, each behind the ``CIEmulator`` contract (base.py).

A module here that decorates its class with ``@emulator`` is picked up by the world, the demo and the
provider contract suite (tests/test_provider_contract.py) with no other change.
"""
