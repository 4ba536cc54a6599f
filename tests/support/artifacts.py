"""Model artifacts as tests build them: a sha256, a ``model.tar.gz`` from named members, and a
pickle that leaves a mark when loaded (proof that a refused artifact never was)."""

from __future__ import annotations

import hashlib
import io
import tarfile
from pathlib import Path


class Tripwire:
    """Unpickling this creates ``marker``."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


def sha(body: bytes) -> str:
    return hashlib.sha256(body).hexdigest()


def tar_gz(members: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        for name, body in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(body)
            tar.addfile(info, io.BytesIO(body))
    return buffer.getvalue()
