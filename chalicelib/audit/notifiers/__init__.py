"""Notifiers: one interface (``base.Notifier``), one module per channel, one dispatcher."""
