"""``shardflow up | down | status``: the local platform (`make up`), and ``shardflow head``, which
shows the first rows of an output."""

from __future__ import annotations

import argparse
import os
from typing import Any

__all__ = ["apply_local_platform", "register"]


def apply_local_platform() -> None:
    """Point this process at the checkout's running platform, unless the environment already
    points AWS somewhere: the ``shardflow`` command then talks to it with no setup."""
    from shardflow.local.platform import local_platform_environment

    os.environ.update(local_platform_environment(os.environ))


def _up(args: argparse.Namespace) -> int:
    from shardflow.local.platform import Platform

    return Platform().status() if args.status else Platform().up()


def _down(args: argparse.Namespace) -> int:
    from shardflow.local.platform import Platform

    return Platform().down()


def _status(args: argparse.Namespace) -> int:
    from shardflow.local.platform import Platform

    return Platform().status()


def _head(args: argparse.Namespace) -> int:
    import boto3

    from shardflow.cli.head import head

    print(head(boto3.client("s3"), args.uri, args.rows))
    return 0


def register(commands: Any) -> None:
    """Add the platform's subcommands and ``head`` to the ``shardflow`` parser."""
    up = commands.add_parser("up", help="start the platform on this machine: moto and Airflow's UI (make up)")
    up.add_argument("--status", action="store_true", help="only say what runs where")
    up.set_defaults(run=_up)
    commands.add_parser("down", help="stop everything `shardflow up` started (make down)").set_defaults(run=_down)
    commands.add_parser("status", help="say what the local platform runs, and where").set_defaults(run=_status)
    head = commands.add_parser("head", help="print the first rows of a Parquet, CSV or JSON Lines object")
    head.add_argument("uri", help="s3://bucket/key of one object, e.g. an output's part-0000.parquet")
    head.add_argument("-n", "--rows", type=int, default=10, help="how many rows (default 10)")
    head.set_defaults(run=_head)
