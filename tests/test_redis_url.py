"""One parser for every Redis URL (issue #27): ``jobrunner.locks.resp.parse_redis_url`` reads a
URL as redis-py's own ``redis.connection.parse_url`` does (a table, and hypothesis over URLs
built from random parts), and a run publishes where the views read (``redis://h/?db=3``)."""

from __future__ import annotations

import string
from pathlib import Path
from urllib.parse import quote

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from jobrunner.locks.resp import RespError, call, parse_redis_url

redis = pytest.importorskip("redis")
from redis.connection import parse_url  # noqa: E402

URLS = [
    "redis://localhost",
    "redis://h",
    "redis://h:6380",
    "redis://h/3",
    "redis://h/?db=3",
    "redis://h/2?db=5",
    "redis://h:7000/0",
    "redis://h/abc",
    "redis://h//4",
    "redis://:pw@h/1",
    "redis://user:pw@h:1234/9",
    "redis://user@h",
    "redis://:@h",
    "redis://us%40er:p%3Aw%2F@h/1",
    "redis://:p%25w@h",
    "REDIS://H/2",
    "rediss://h:6390/4",
    "rediss://u:p@h?db=2&ssl_cert_reqs=none",
    "unix:///run/redis.sock",
    "unix:///run/redis.sock?db=4",
    "unix://:pw@/run/redis.sock?db=1",
    "unix://u:pw@/run/re%20dis.sock",
    "redis://[::1]:6379/2",
    "redis://h?socket_timeout=3&db=7",
]


def _theirs(url: str) -> dict[str, object]:
    kw = parse_url(url)
    return {
        "host": kw.get("host", "localhost") if "path" not in kw and not url.lower().startswith("unix") else None,
        "port": kw.get("port", 6379) if not url.lower().startswith("unix") else None,
        "path": kw.get("path"),
        "db": kw.get("db", 0),
        "username": kw.get("username"),
        "password": kw.get("password"),
        "tls": kw.get("connection_class") is redis.connection.SSLConnection,
    }


def _ours(url: str) -> dict[str, object]:
    p = parse_redis_url(url)
    unix = p.scheme == "unix"
    return {
        "host": None if unix else p.host,
        "port": None if unix else p.port,
        "path": p.path,
        "db": p.db,
        "username": p.username,
        "password": p.password,
        "tls": p.tls,
    }


@pytest.mark.parametrize("url", URLS)
def test_a_url_means_what_it_means_to_redis_py(url: str):
    assert _ours(url) == _theirs(url)


@pytest.mark.parametrize("url", ["http://h", "redis:h", "", "h:6379", "redis://h:99999", "redis://h/?db=x"])
def test_what_is_not_a_redis_url_is_one_value_error_for_both(url: str):
    with pytest.raises(ValueError):
        parse_url(url)
    with pytest.raises(ValueError) as caught:
        parse_redis_url(url)
    assert "\n" not in str(caught.value)


_text = st.text(alphabet=string.ascii_letters + string.digits + "@:/%?#&= .-_~!$", max_size=12)


@settings(max_examples=400, deadline=None)
@given(
    scheme=st.sampled_from(["redis", "rediss", "unix", "REDIS"]),
    user=st.one_of(st.none(), _text),
    password=st.one_of(st.none(), _text),
    host=st.sampled_from(["h", "redis.internal", "127.0.0.1", "[::1]", ""]),
    port=st.one_of(st.none(), st.integers(0, 65535)),
    path=st.one_of(st.none(), st.integers(0, 20).map(str), _text),
    db=st.one_of(st.none(), st.integers(0, 20).map(str)),
)
def test_any_url_built_from_parts_is_read_as_redis_py_reads_it(scheme, user, password, host, port, path, db):
    auth = ""
    if user is not None or password is not None:
        auth = quote(user or "", safe="") + (":" + quote(password, safe="") if password is not None else "") + "@"
    where = "" if scheme == "unix" else host + ("" if port is None else f":{port}")
    tail = "" if path is None else "/" + quote(path, safe="/")
    if scheme == "unix":
        tail = "/run/redis" + tail
    url = f"{scheme}://{auth}{where}{tail}" + ("" if db is None else f"?db={db}")
    try:
        theirs = _theirs(url)
    except ValueError:
        with pytest.raises(ValueError):
            parse_redis_url(url)
        return
    assert _ours(url) == theirs, url


def test_the_run_publishes_to_the_database_the_views_read(tmp_path: Path):
    """``redis://h/?db=3``: the hand-written client used to read the database from the path
    only and publish to db 0 while the views, through redis-py, read db 3."""
    from jobrunner.fleet import stream as fleet
    from jobrunner.store.history import RunRecord

    from .test_redislock import RedisServer

    server = RedisServer(tmp_path / "redis").start()
    try:
        url = f"redis://127.0.0.1:{server.port}/?db=3"
        fleet.publish(url, RunRecord("j", "h", "r1", 1e9, 1.0, "success", 0))
        assert redis.Redis(host="127.0.0.1", port=server.port, db=3).xlen("jobrunner:runs") == 1
        assert redis.Redis(host="127.0.0.1", port=server.port, db=0).xlen("jobrunner:runs") == 0
        assert [r.run_id for r in fleet.read_fleet(url)] == ["r1"]
        # an error reply is a value, not a lost connection; a bad handshake raises
        assert isinstance(call(url, [("NOSUCHCOMMAND",)], timeout=2)[0], RespError)
        with pytest.raises(RespError):
            call(f"redis://:wrong@127.0.0.1:{server.port}/0", [("PING",)], timeout=2)
    finally:
        server.stop()
