"""The ``stampd`` command-line program (click)."""

from stampd.daemon.cli.app import main

__all__ = ["main"]
