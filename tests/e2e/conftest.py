"""What the end-to-end tests share: one `make up` platform for the tests that use its UI."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from support.airflow_api import BASE_PATH
from support.browser import Browser, require_chromium

from shardflow.local.moto import free_port
from shardflow.local.platform import Platform


@pytest.fixture(scope="session")
def platform(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Platform]:
    require_chromium()
    root = tmp_path_factory.mktemp("platform")
    # Under a subpath, as behind a reverse proxy: every page and link must follow Airflow's base_url.
    environ = {
        "SHARDFLOW_UI_PORT": str(free_port()),
        "SHARDFLOW_MOTO_PORT": str(free_port()),
        "SHARDFLOW_UI_BASE_PATH": BASE_PATH,
    }
    platform = Platform(root, environ=environ)
    lines: list[str] = []
    try:
        assert platform.up(say=lines.append) == 0, "\n".join(lines)
        yield platform
    finally:
        platform.down(say=lines.append)


@pytest.fixture
def browser(request: pytest.FixtureRequest) -> Iterator[Browser]:
    browser = Browser(request.node.name)
    yield browser
    browser.quit()
