"""The shared books' own Redis client: pipelined calls on one connection, answered in order.

Parsing is checked on every split of an answer across reads; the rest runs on a real
redis-server of the test's own (127.0.0.1, a free port), stalled, restarted or given a
password as the test needs.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from tests.serve.conftest import RedisServer

from sincere.serve.security.redis_client import (
    Address,
    PipelinedScripts,
    RedisPyScripts,
    RedisReplyError,
    address,
    make_scripts,
    pack,
    parse,
)
from sincere.serve.security.shared import RedisState, StateUnavailableError

ECHO = "return {ARGV[1], tonumber(ARGV[2]) + 1, KEYS[1]}"
FIRST = b"*3\r\n$5\r\nhello\r\n:42\r\n*2\r\n$-1\r\n+OK\r\n"  # an array, nested
ANSWERS = FIRST + b"-ERR no such thing\r\n$0\r\n\r\n"  # then an error, an empty string


def client(server: RedisServer, timeout_s: float = 1.0) -> PipelinedScripts:
    where = address(server.url)
    assert where is not None
    return PipelinedScripts(where, {"echo": ECHO}, timeout_s)


def test_an_answer_split_anywhere_is_read_whole_once_complete() -> None:
    """Every prefix of an answer is incomplete; the whole one reads as values, errors kept."""
    assert parse(ANSWERS, 0) == ([b"hello", 42, [None, "OK"]], len(FIRST))
    error, end = parse(ANSWERS, len(FIRST)) or (None, -1)
    assert isinstance(error, RedisReplyError) and str(error) == "ERR no such thing"
    assert parse(ANSWERS, end) == (b"", len(ANSWERS))
    for cut in range(len(FIRST)):
        assert parse(FIRST[:cut], 0) is None, cut


def test_commands_are_packed_as_arrays_of_bulk_strings() -> None:
    """Strings as UTF-8, numbers as their text, bytes as they are."""
    assert pack(("EVALSHA", "é", 2, 0.5, b"\x00")) == (
        b"*5\r\n$7\r\nEVALSHA\r\n$2\r\n\xc3\xa9\r\n$1\r\n2\r\n$3\r\n0.5\r\n$1\r\n\x00\r\n"
    )


@pytest.mark.parametrize(
    ("url", "where"),
    [
        ("redis://127.0.0.1:7000/3", Address("127.0.0.1", 7000, 3, None, None)),
        ("redis://localhost", Address("localhost", 6379, 0, None, None)),
        ("redis://:s%40cret@h:1/0", Address("h", 1, 0, None, "s@cret")),
        ("redis://ann:pw@h:1", Address("h", 1, 0, "ann", "pw")),
        ("redis://pw@h:1", Address("h", 1, 0, None, "pw")),
        ("unix:///run/redis.sock?db=2", Address("/run/redis.sock", None, 2, None, None)),
        ("rediss://h:1/0", None),  # TLS: redis-py
        ("redis://h:1/0?socket_keepalive=true", None),  # options: redis-py
        ("redis://h:1/x", None),
    ],
)
def test_urls_it_reads_and_those_left_to_redis_py(url: str, where: Address | None) -> None:
    """Plain and Unix-socket URLs are read here; TLS and options go to redis-py."""
    assert address(url) == where
    expected = RedisPyScripts if where is None else PipelinedScripts
    assert isinstance(make_scripts(url, {"echo": ECHO}, 1.0), expected)


def test_calls_made_at_once_share_one_connection_and_get_their_own_answers(
    redis_server: RedisServer,
) -> None:
    """200 concurrent script calls: each gets its own answer, over one connection."""

    async def main() -> tuple[list[Any], int]:
        scripts = client(redis_server)
        try:
            calls = [scripts.run("echo", [f"k{i}"], [f"v{i}", i]) for i in range(200)]
            out = await asyncio.gather(*calls)
            info = await scripts.call("INFO", "clients")
            return out, int(info.split(b"connected_clients:")[1].split(b"\r\n")[0])
        finally:
            await scripts.aclose()

    out, connected = asyncio.run(main())
    assert out == [[f"v{i}".encode(), i + 1, f"k{i}".encode()] for i in range(200)]
    assert connected == 1


def test_a_script_redis_forgot_is_sent_again_by_its_text(redis_server: RedisServer) -> None:
    """After SCRIPT FLUSH (as after a restart), the next call still runs the script."""

    async def main() -> tuple[Any, Any]:
        scripts = client(redis_server)
        try:
            before = await scripts.run("echo", ["k"], ["a", 1])
            await scripts.call("SCRIPT", "FLUSH")
            return before, await scripts.run("echo", ["k"], ["b", 2])
        finally:
            await scripts.aclose()

    assert asyncio.run(main()) == ([b"a", 2, b"k"], [b"b", 3, b"k"])


def test_a_late_answer_is_dropped_and_the_connection_stays_in_step(
    redis_server: RedisServer,
) -> None:
    """A call times out on a stalled Redis; once it is back the next call gets its own
    answer, not the late one."""

    async def main() -> Any:
        scripts = client(redis_server, timeout_s=0.2)
        try:
            await scripts.run("echo", ["k"], ["warm", 0])
            redis_server.pause()
            try:
                with pytest.raises(TimeoutError, match="timed out"):
                    await scripts.run("echo", ["k"], ["late", 1])
            finally:
                redis_server.resume()
            return await scripts.run("echo", ["k"], ["next", 2])
        finally:
            await scripts.aclose()

    assert asyncio.run(main()) == [b"next", 3, b"k"]


def test_a_connection_lost_fails_its_waiting_calls_and_the_next_call_reconnects(
    redis_server: RedisServer,
) -> None:
    """Redis killed with a call waiting: that call fails (not sent again here); after the
    restart the next call opens a new connection and loads the script again."""

    async def main() -> Any:
        scripts = client(redis_server, timeout_s=2.0)
        try:
            await scripts.run("echo", ["k"], ["warm", 0])
            redis_server.pause()
            waiting = asyncio.ensure_future(scripts.run("echo", ["k"], ["lost", 1]))
            await asyncio.sleep(0.05)
            redis_server.kill()
            with pytest.raises(ConnectionError, match="closed"):
                await waiting
            redis_server.start()
            return await scripts.run("echo", ["k"], ["again", 2])
        finally:
            await scripts.aclose()

    assert asyncio.run(main()) == [b"again", 3, b"k"]


def test_a_password_is_sent_first_and_a_wrong_one_is_refused(redis_server: RedisServer) -> None:
    """With ``requirepass``: the URL's password logs in; a wrong one fails the call with
    "authentication failed", which the books turn into a 503 naming no address."""
    admin = redis_server.client()
    admin.config_set("requirepass", "s3cret")
    admin.close()
    port = redis_server.port

    async def main() -> tuple[Any, str]:
        good = make_scripts(f"redis://:s3cret@127.0.0.1:{port}/1", {"echo": ECHO}, 1.0)
        state = RedisState(f"redis://:wrong@127.0.0.1:{port}/0")
        try:
            answer = await good.run("echo", ["k"], ["in", 0])
            with pytest.raises(StateUnavailableError) as refused:
                await state.call("instance", [state.instance_key], ["?", "", "", 0])
            return answer, str(refused.value)
        finally:
            await good.aclose()
            await state.aclose()
            state.close()

    answer, refused = asyncio.run(main())
    assert answer == [b"in", 1, b"k"]
    assert "authentication failed" in refused and "127.0.0.1" not in refused


def test_an_error_answer_is_raised_to_its_call_only(redis_server: RedisServer) -> None:
    """A script that fails in Redis raises for its call; calls around it are answered."""

    async def main() -> list[Any]:
        scripts = client(redis_server)
        try:
            return await asyncio.gather(
                scripts.call("PING"),
                scripts.call("EVAL", "return redis.error_reply('no budget book')", 0),
                scripts.call("ECHO", "after"),
                return_exceptions=True,
            )
        finally:
            await scripts.aclose()

    ping, error, after = asyncio.run(main())
    assert ping == "PONG" and after == b"after"
    assert isinstance(error, RedisReplyError) and "no budget book" in str(error)


def test_a_client_used_on_a_new_event_loop_opens_a_connection_there(
    redis_server: RedisServer,
) -> None:
    """The connection of an event loop that ended is not written to from the next one."""
    scripts = client(redis_server)

    async def once(value: str) -> Any:
        return await scripts.run("echo", ["k"], [value, 0])

    assert asyncio.run(once("first")) == [b"first", 1, b"k"]
    assert asyncio.run(once("second")) == [b"second", 1, b"k"]
    asyncio.run(scripts.aclose())
