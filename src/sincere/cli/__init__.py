"""The ``sincere`` command: one verb per job (see ``sincere --help``)."""

from sincere.cli.app import app, main

__all__ = ["app", "main"]
