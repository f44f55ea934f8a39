"""The embedded local runtime: moto as AWS, in-process Lambda dispatch, and a local CI emulator."""
