"""`make test` and `make run` find a Redis, or start one, or say how to get one."""

from __future__ import annotations

from pathlib import Path

import pytest

from chatbot_devtools.redis_server import NoRedis, RedisServer, answers, ensure_redis, free_port


def test_a_url_that_answers_is_used_as_it_is(redis_url: str, tmp_path: Path) -> None:
    with ensure_redis(redis_url, tmp_path) as url:
        assert url == redis_url


def test_a_silent_url_gets_a_server_of_its_own(tmp_path: Path) -> None:
    silent = f"redis://127.0.0.1:{free_port()}/0"
    with ensure_redis(silent, tmp_path / "r") as url:
        assert url != silent and answers(url)
    assert not answers(url), "the server started for the run stops with it"


def test_without_redis_server_the_message_says_how_to_get_one(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(NoRedis, match="apt-get install redis-server"), ensure_redis(f"redis://127.0.0.1:{free_port()}/0", tmp_path / "r"):
        pass


def test_a_killed_server_stops_answering(tmp_path: Path) -> None:
    server = RedisServer(tmp_path / "k").start()
    assert answers(server.url)
    server.kill()
    assert not answers(server.url)


def test_the_server_make_run_starts_is_reached_by_its_unix_socket(tmp_path: Path) -> None:
    silent = f"redis://127.0.0.1:{free_port()}/0"
    with ensure_redis(silent, tmp_path / "r", unix_socket=True) as url:
        assert url == f"unix://{(tmp_path / 'r' / 'redis.sock').resolve()}?db=0" and answers(url)
    assert not answers(url)


def test_a_folder_too_deep_for_a_socket_address_keeps_tcp(tmp_path: Path) -> None:
    server = RedisServer(tmp_path / ("d" * 120), unix_socket=True).start()
    try:
        assert server.socket is None and server.url.startswith("redis://127.0.0.1:") and answers(server.url)
    finally:
        server.stop()
