"""Operator CLI: ``python -m cli <command>``. Each command group is one module."""
