"""CI targets: one module per provider behind the CITarget interface (base.py)."""
