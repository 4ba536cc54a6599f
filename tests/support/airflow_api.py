"""Airflow's REST API as a test calls it on `make up`'s platform: a user's token, then GET, POST
or PATCH with it."""

from __future__ import annotations

import json
import urllib.request
from typing import Any

from shardflow.local.platform import Platform

#: The subpath the end-to-end platform serves its UI under, as behind a reverse proxy.
BASE_PATH = "/airflow"


def token(platform: Platform, user: str) -> str:
    state = platform.state()
    assert state is not None
    login = json.dumps({"username": user, "password": platform.passwords()[user]}).encode()
    request = urllib.request.Request(
        f"{state.ui_url}/auth/token", data=login, headers={"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        return str(json.loads(response.read())["access_token"])


def call(platform: Platform, path: str, method: str = "GET", body: Any = None, user: str = "admin") -> dict[str, Any]:
    """One request to ``path`` (``/api/v2/...``) as ``user``; an error status raises HTTPError."""
    state = platform.state()
    assert state is not None
    headers = {"Authorization": f"Bearer {token(platform, user)}", "Content-Type": "application/json"}
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(f"{state.ui_url}{path}", data=data, headers=headers, method=method)
    with urllib.request.urlopen(request, timeout=10) as response:
        return dict(json.loads(response.read() or b"{}"))
