"""Sharing the event loop between queries run for different clients.

Queries run on the server's event loop, each for up to its time limit. Work
that runs many of them in a row for one client (a refresh cycle, a
``query_batch``) must let the loop serve the others in between — and a bare
``await asyncio.sleep(0)`` is not enough: it lets every ready callback run
once, while another client's request needs several turns of the loop (read
the request, run it, wait for the database, write the answer). So after work
that held the loop noticeably, :func:`make_room` pauses for a share of the
time it held it, during which the loop serves everyone else.
"""

from __future__ import annotations

import asyncio

#: After work that held the loop for t seconds, it pauses for this share of t
#: (when everyone is busy, others get at least a fifth of the loop's time).
PAUSE_SHARE = 0.25
#: Work shorter than this only gives the loop one turn (a pause would cost
#: more than the work itself).
NOTICEABLE_SECONDS = 0.02


async def make_room(held: float) -> None:
    """Let other work use the event loop after work that held it ``held`` seconds."""
    if held < NOTICEABLE_SECONDS:
        await asyncio.sleep(0)
    else:
        await asyncio.sleep(held * PAUSE_SHARE)
