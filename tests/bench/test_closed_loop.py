"""The throughput benchmark's closed loop (bench/common.py): its rate counts the answers
complete within the round (against a small HTTP server on this machine that answers after a
set delay), its steady rate leaves out the round's start; and how bench/throughput.py sets each
join round against the no-op rounds either side of it."""

from __future__ import annotations

import asyncio
from concurrent.futures import ThreadPoolExecutor

import pytest

from bench.common import Reply, Round, closed_loop
from bench.throughput import bracketed_ratios


async def _serve_slowly(delay: float) -> tuple[asyncio.Server, int]:
    """A keep-alive HTTP/1.1 server answering every POST 200 after `delay` seconds."""

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                length = next(
                    int(line.split(b":", 1)[1])
                    for line in head.split(b"\r\n")
                    if line.lower().startswith(b"content-length:")
                )
                await reader.readexactly(length)
                await asyncio.sleep(delay)
                writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n{}")
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    return server, server.sockets[0].getsockname()[1]


def test_answers_after_the_round_count_in_the_replies_but_not_in_the_rate() -> None:
    async def run() -> Round:
        server, port = await _serve_slowly(0.25)
        async with server:
            return await closed_loop(port, "/x", iter([b"{}"] * 100), connections=2, seconds=0.6)

    # In a thread of its own: the browser tests leave an event loop running in this one.
    with ThreadPoolExecutor(1) as thread:
        loop = thread.submit(asyncio.run, run()).result()
    # Two clients, an answer every 0.25 s each: requests at 0, 0.25 and 0.5 s; the last two are
    # answered at about 0.75 s, after the 0.6 s round.
    assert len(loop.replies) == 6
    assert all(reply.status == 200 for reply in loop.replies)
    assert loop.elapsed >= 0.7
    assert loop.window == 0.6
    assert loop.ok_in_window() == 4
    assert abs(loop.rate() - 4 / 0.6) < 1e-9


def test_the_window_ends_early_when_the_bodies_run_out() -> None:
    started = 100.0
    replies = [
        Reply(200, "", 0.1, started + 0.1),
        Reply(503, "database_unavailable", 0.2, started + 0.2),  # not a 200: never counted
        Reply(200, "", 0.3, started + 0.3),
    ]
    loop = Round(replies, started=started, seconds=5.0, elapsed=0.3)
    assert loop.window == 0.3
    assert loop.ok_in_window() == 2
    assert abs(loop.rate() - 2 / 0.3) < 1e-9


def test_the_steady_rate_leaves_out_the_start_of_the_round() -> None:
    started = 100.0
    replies = [
        Reply(200, "", 0.5, started + 0.5),  # in the ramp: not counted
        Reply(200, "", 1.0, started + 1.0),  # the ramp's last instant: not counted
        Reply(200, "", 1.2, started + 1.2),
        Reply(429, "rate_limited", 1.5, started + 1.5),  # not a 200
        Reply(200, "", 2.9, started + 2.9),
        Reply(200, "", 3.4, started + 3.4),  # after the round: not counted
    ]
    loop = Round(replies, started=started, seconds=3.0, elapsed=3.4)
    assert abs(loop.rate(1.0) - 2 / 2.0) < 1e-9
    assert abs(loop.rate() - 4 / 3.0) < 1e-9
    assert loop.rate(3.0) == 0.0  # nothing left to count


def test_each_join_round_is_set_against_the_no_op_rounds_either_side() -> None:
    ratios = bracketed_ratios([1000.0, 1200.0, 800.0], [440.0, 500.0])
    assert ratios == [440.0 / 1100.0, 500.0 / 1000.0]
    with pytest.raises(ValueError, match="before and after"):
        bracketed_ratios([1000.0, 1200.0], [440.0, 500.0])
