"""The ``shardflow`` command line."""

from shardflow.cli.main import main

__all__ = ["main"]
