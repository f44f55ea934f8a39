"""Settings from the environment, and what happens when it changes while another thread reads it."""

from __future__ import annotations

import threading

import pytest

from chalicelib import settings as settings_module


def test_a_reader_racing_a_reset_cannot_leave_the_old_settings_behind(monkeypatch: pytest.MonkeyPatch) -> None:
    """The local poller may be building Settings from the old environment exactly when a test changes it
    and calls reset: its result must not be what everyone reads afterwards."""
    built_old, may_store = threading.Event(), threading.Event()

    class SlowToStore(settings_module.Settings):
        def __init__(self) -> None:
            super().__init__()  # the environment is read here
            # Whichever reader builds first under the old environment is held: the racing reader below, or
            # the local runtime's poller, which may get there first and leave the reader a cached answer.
            if not built_old.is_set():
                built_old.set()
                may_store.wait(30)

    monkeypatch.setattr(settings_module, "Settings", SlowToStore)
    monkeypatch.setenv("ROTATOR_TABLE_NAME", "table-before")
    settings_module.forget()
    try:
        reader = threading.Thread(target=settings_module.get_settings, name="racing-reader")
        reader.start()
        # Generous: these return as soon as the other thread gets there, which a loaded machine can delay.
        assert built_old.wait(30)
        monkeypatch.setenv("ROTATOR_TABLE_NAME", "table-after")
        settings_module.forget()
        may_store.set()
        reader.join(30)
        assert settings_module.get_settings().table_name == "table-after"
    finally:
        monkeypatch.undo()
        settings_module.forget()
