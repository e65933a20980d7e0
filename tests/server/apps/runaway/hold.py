"""Functions that hold what they run on: the server's loop, the action loop, a thread."""

import contextlib
import json
import select
import time
import urllib.request

from basalt import action, mutation, query, v

from ._wait import wait_for_file


@query
async def spin(ctx):
    """Never gives the event loop back (stopped by the time limit)."""
    while True:
        pass


@query
async def ping(ctx):
    return "pong"


@mutation
async def hold_stubbornly(ctx):
    """Holds the event loop for good: waits in a system call and swallows
    everything, the time limit included (what app code must never do)."""
    while True:
        with contextlib.suppress(BaseException):
            select.select([], [], [], 60)


@mutation
async def wait_in_select(ctx):
    """Waits in a system call (the time limit's signal interrupts it)."""
    select.select([], [], [], 60)


@action(args={"path": v.string()})
async def blocked_until(ctx, path):
    """Blocking code in an async action."""
    wait_for_file(path)
    return "released"


@action(args={"url": v.string(), "path": v.string(), "kind": v.string()})
async def call_own_server(ctx, url, path, kind):
    """Calls this very server over HTTP, with a blocking client."""
    body = json.dumps({"path": path, "args": {}, "format": "json"}).encode()
    request = urllib.request.Request(
        f"{url}/api/{kind}", data=body, headers={"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(request, timeout=60) as response:
        return json.loads(response.read())["value"]


@action
def in_a_thread(ctx):
    """A plain def action: blocking is its own business."""
    time.sleep(0.05)
    return ctx.run_query("hold:ping", {})


@query(args={"rows": v.array(v.array(v.string()))})
async def size(ctx, rows):
    return float(len(rows))


@action
async def async_ping(ctx):
    return await ctx.run_query("hold:ping", {})


@mutation(args={"rows": v.array(v.array(v.string()))})
async def store_size(ctx, rows):
    return float(len(rows))
