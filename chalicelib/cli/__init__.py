"""Operator CLI: ``python -m chalicelib.cli <command>``. Each command group is one module."""
