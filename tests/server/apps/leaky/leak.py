"""Functions that fail with a secret in their message, print and log it (the
redaction tests: what reaches clients, and what the server log keeps)."""

import logging

from basalt import ConvexError, action, internal_query, mutation, query, v

log = logging.getLogger(__name__)

SECRET = "SECRET_DB_PASSWORD=hunter2"


@query
async def read(ctx):
    print(f"about to read with {SECRET}")
    log.info("connecting with %s", SECRET)
    raise ValueError(SECRET)


@mutation
async def write(ctx):
    print(f"about to write with {SECRET}")
    log.info("connecting with %s", SECRET)
    raise ValueError(SECRET)


@action
async def act(ctx):
    print(f"about to act with {SECRET}")
    log.info("connecting with %s", SECRET)
    raise ValueError(SECRET)


@query(args={"text": v.string()})
async def chatty(ctx, text):
    print("printed", text)
    log.debug("debug %s: below the app loggers' level", text)
    log.info("info %s", text)
    log.warning("warn %s", text)
    log.error("error %s", text)
    return text


@query(args={"n": v.float64()})
async def typed(ctx, n):
    return n


@query
async def refuse(ctx):
    raise ConvexError({"code": "NOPE"})


@query(args={"count": v.float64()})
async def big(ctx, count):
    print("making", int(count), "lines")
    return [f"line {i} {'x' * 40}" for i in range(int(count))]


@internal_query
async def hidden(ctx):
    return "internal"
