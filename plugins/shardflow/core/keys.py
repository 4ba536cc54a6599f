"""Containment of object keys: a key is turned into a local path, or into another key, only when
its part under the prefix is a plain relative path, so no key can reach outside its folder."""

from __future__ import annotations

import unicodedata
from pathlib import Path

from shardflow.errors import UnsafeKey

__all__ = ["check_relative", "contained_path", "relative_key"]


def _problem(relative: str) -> str | None:
    if not relative:
        return "it names the prefix itself, not an object under it"
    if relative.startswith("/"):
        return "it starts with '/' (an empty segment: it would name an absolute path)"
    if "\\" in relative:
        return "it holds a backslash, which some systems read as a folder separator"
    if any(unicodedata.category(char) == "Cc" for char in relative):
        return "it holds a control character"
    segments = relative.split("/")
    if "" in segments:
        return "it has an empty segment ('//', or a '/' at its end)"
    if ".." in segments:
        return "it has a '..' segment, which climbs out of its folder"
    if "." in segments:
        return "it has a '.' segment"
    return None


def check_relative(relative: str, what: str = "key") -> str:
    """Return ``relative`` if it is a plain normalized relative path: no ``..`` or ``.`` segment,
    no empty segment (so no leading ``/``), no backslash and no control character.

    :param what: what ``relative`` is, for the message (``key``, ``file name``, ...).
    :raises UnsafeKey: naming it and why.
    """
    problem = _problem(relative)
    if problem:
        raise UnsafeKey(f"{what} {relative!r} is refused: {problem}")
    return relative


def relative_key(prefix_key: str, key: str) -> str:
    """The part of ``key`` under ``prefix_key`` (a key ending in ``/``, or ``""``), checked by
    :func:`check_relative`. :raises UnsafeKey: ``key`` is not under the prefix, or not plain."""
    if not key.startswith(prefix_key):
        raise UnsafeKey(f"key {key!r} is refused: it is not under the prefix {prefix_key!r}")
    problem = _problem(key[len(prefix_key) :])
    if problem:
        raise UnsafeKey(f"key {key!r} is refused: {problem}")
    return key[len(prefix_key) :]


def contained_path(root: Path, relative: str) -> Path:
    """``root / relative``, once ``relative`` passed :func:`check_relative` and the result, with
    every symbolic link resolved, is still inside ``root``. :raises UnsafeKey: otherwise."""
    path = root / check_relative(relative, "path")
    resolved, base = path.resolve(), root.resolve()
    if resolved != base and base not in resolved.parents:
        raise UnsafeKey(f"path {relative!r} is refused: it leads outside {root} (to {resolved})")
    return path
