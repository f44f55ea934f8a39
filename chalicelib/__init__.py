"""CI Key Rotator: all logic lives here; app.py only wires handlers to it."""
