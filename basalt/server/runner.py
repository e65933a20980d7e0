"""Running a deployment: load the app, open storage, serve HTTP, and in dev
mode reload on file change."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import os
import socket
import sys
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path

import uvicorn

from basalt.auth import load_auth_config
from basalt.errors import BasaltError
from basalt.runtime import App, Limits, Runtime, load_app
from basalt.runtime.action_workers import ActionWorkers
from basalt.runtime.services import Services
from basalt.scheduler import Scheduler

from . import signals
from .app import BasaltApp
from .auth import Authenticator, build_authenticator
from .body_budget import BodyBudget
from .config import ADMIN_KEY_FILE, ConfigError, ServerConfig
from .connections import (
    KEEP_ALIVE_TIMEOUT,
    ConnectionGuard,
    ConnectionLimits,
    limited_protocol,
    raise_open_file_limit,
)
from .data_lock import DataFolderBusy
from .ports import API, SITE, listen
from .site import SiteApp
from .websocket import MAX_FRAME_BYTES, SyncLimits

log = logging.getLogger("basalt.server")


def _say(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


#: How often ``basalt dev`` re-checks the app folder even when no change event
#: came (an edit made before the file watcher was armed would be missed otherwise).
RECHECK_MS = 1000

Fingerprint = frozenset[tuple[str, int, int]]

_SKIPPED_DIRS = frozenset({"__pycache__", "node_modules"})


def _fingerprint(app_dir: Path) -> Fingerprint:
    """Path, mtime and size of every Python file of the app folder."""
    found = set()
    for root, dirs, files in os.walk(app_dir):
        dirs[:] = [d for d in dirs if not d.startswith(".") and d not in _SKIPPED_DIRS]
        for name in files:
            if name.endswith(".py"):
                path = os.path.join(root, name)
                try:
                    st = os.stat(path)
                except OSError:
                    continue
                found.add((path, st.st_mtime_ns, st.st_size))
    return frozenset(found)


async def _app_changes(app_dir: Path, seen: Fingerprint) -> AsyncIterator[str]:
    """Yield the names of changed files each time the app's Python files change:
    on a file-system event, or when a periodic check finds files that differ from
    ``seen`` (the state last loaded)."""
    import watchfiles

    async for changes in watchfiles.awatch(
        app_dir,
        watch_filter=watchfiles.PythonFilter(),
        rust_timeout=RECHECK_MS,
        yield_on_timeout=True,
    ):
        current = _fingerprint(app_dir)
        if not changes and current == seen:
            continue
        paths = {p for _, p in changes} or {p for p, _, _ in current ^ seen}
        seen = current
        yield ", ".join(sorted({Path(p).name for p in paths}))


async def _watch_and_reload(
    asgi: BasaltApp,
    authenticator: Authenticator,
    scheduler: Scheduler,
    app_dir: Path,
    loaded: Fingerprint,
) -> None:
    """Reload the app (and its auth_config.py) whenever a file in its folder
    changes; live subscriptions run again with the new code. A broken file is
    reported with its file and line, and the previous version keeps serving."""
    async for names in _app_changes(app_dir, loaded):
        try:
            app = load_app(app_dir)
            auth_config = load_auth_config(app_dir)
            await asgi.reload(app)
            authenticator.set_auth_config(auth_config)
            await scheduler.sync_crons()
        except Exception as exc:  # a bad edit must not stop the dev server
            message = exc.message if isinstance(exc, BasaltError) else repr(exc)
            _say(f"✖ {names} changed, but the app could not be reloaded:\n  {message}")
            _say("  (still serving the previous version)")
            continue
        _say(f"✔ reloaded after changes to {names} ({len(app.functions)} functions)")


class _Server(uvicorn.Server):
    """uvicorn's server, minus its signal handling: :func:`serve` handles
    SIGINT and SIGTERM itself (:mod:`basalt.server.signals`) so that it can shut
    down cleanly (uvicorn would re-raise the signal after shutting down, killing
    the process before the storage is closed and the server marker removed)."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


async def serve(config: ServerConfig, *, reload: bool = False) -> None:
    """Serve until cancelled, interrupted (SIGINT) or terminated (SIGTERM),
    holding the data folder's lock (a second server on a SQLite data folder is
    refused before it touches anything of the first)."""
    if not config.app_dir.is_dir():
        raise ConfigError(
            f"the app folder {str(config.app_dir)!r} does not exist: pass --app DIR, "
            "or create one with `basalt init`"
        )
    stopping = signals.install(grace=config.stop_timeout)
    try:
        await _serve_in_folder(config, reload=reload, stopping=stopping)
    except asyncio.CancelledError:
        if stopping.received is None:
            raise
        # A signal while starting (or waiting for a broken app to be fixed): done.
    finally:
        stopping.restore()


async def _serve_in_folder(
    config: ServerConfig, *, reload: bool, stopping: signals.Stopping
) -> None:
    command = "basalt dev" if reload else "basalt serve"
    try:
        lock = config.lock_data_folder(command)
    except DataFolderBusy as exc:
        raise ConfigError(
            f"{exc.message}: "
            + (
                "servers on one PostgreSQL database may share a data folder, but not with "
                "that process; stop it first, or give this server another --data folder"
                if config.uses_postgres
                else "a SQLite data folder serves one server at a time; stop that one "
                "first, or give this server another --data folder"
            ),
            code="DataFolderBusy",
        ) from None
    with lock:
        await _serve_locked(config, reload=reload, stopping=stopping)


async def _serve_locked(
    config: ServerConfig, *, reload: bool, stopping: signals.Stopping
) -> None:
    loaded = _fingerprint(config.app_dir)
    try:
        app = load_app(config.app_dir)
    except BasaltError as exc:
        if not reload:
            raise
        _say(f"✖ {exc.message}\n  (fix the file; Basalt starts serving when it loads)")
        app, loaded = await _wait_for_loadable(config.app_dir, loaded)
    sync_limits = SyncLimits.from_env()
    config.prepare_data_dir()
    admin_key = config.ensure_admin_key()
    authenticator = build_authenticator(admin_key, config.app_dir)
    limits = ConnectionLimits.from_env(raise_open_file_limit())
    http_protocol = limited_protocol(ConnectionGuard(limits))
    sock = listen(config.host, config.port, API)
    config.port = sock.getsockname()[1]
    try:
        site_sock = listen(config.host, config.site_port or 0, SITE)
    except BaseException:
        sock.close()
        raise
    config.site_port = site_sock.getsockname()[1]
    scheduler = Scheduler(dev=reload)
    try:
        runtime = Runtime(
            app,
            config.open_storage(),
            services=Services(scheduler=scheduler, files=config.open_files()),
            limits=Limits(max_seconds=config.function_timeout),
            actions=ActionWorkers(max_threads=config.action_threads),
        )
        await runtime.start()
    except BaseException:
        sock.close()
        site_sock.close()
        raise
    try:
        await scheduler.start(runtime)
    except BaseException:
        await runtime.stop()
        sock.close()
        site_sock.close()
        raise
    # dev: every caller sees whole errors and log lines; serve: admin callers only
    body_budget = BodyBudget(limits.request_body_bytes)  # shared by both ports
    asgi = BasaltApp(runtime, authenticator, sync_limits, dev=reload, body_budget=body_budget)
    # What start-up allocated lives as long as the server: keep it out of the
    # garbage collector's full passes, which otherwise stall every client at once.
    gc.collect()
    gc.freeze()
    server = _Server(
        uvicorn.Config(
            asgi,
            lifespan="off",
            log_level="warning",
            access_log=False,
            ws="websockets-sansio",
            ws_max_size=MAX_FRAME_BYTES + (1 << 20),
            http=http_protocol,
            timeout_keep_alive=KEEP_ALIVE_TIMEOUT,
            timeout_graceful_shutdown=3,
            server_header=False,  # no "Server: uvicorn" (it tells what to attack)
        )
    )
    site_server = _Server(
        uvicorn.Config(
            SiteApp(runtime, authenticator, dev=reload, body_budget=body_budget),
            lifespan="off",
            log_level="warning",
            access_log=False,
            ws="none",
            http=http_protocol,
            timeout_keep_alive=KEEP_ALIVE_TIMEOUT,
            timeout_graceful_shutdown=3,
            server_header=False,  # no "Server: uvicorn" (it tells what to attack)
        )
    )
    stopping.stop_servers([server, site_server])
    watcher = None
    if reload:
        watcher = asyncio.create_task(
            _watch_and_reload(asgi, authenticator, scheduler, config.app_dir, loaded)
        )
    config.write_server_file()
    _say(
        f"Basalt serving {config.app_dir} ({len(app.functions)} functions) at {config.url}\n"
        f"  HTTP actions at {config.site_url}\n"
        f"  data: {_shown_data(config)}\n"
        f"  admin key: {_shown_key(config, admin_key, dev=reload)}"
    )
    try:
        await _serve_all((server, sock), (site_server, site_sock))
    finally:
        if watcher is not None:
            watcher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await watcher
        config.remove_server_file()
        await asgi.aclose()
        await scheduler.stop()
        await runtime.stop()
        sock.close()
        site_sock.close()


def _shown_data(config: ServerConfig) -> str:
    """Where the data is, as the start-up banner shows it: the data folder on
    SQLite; the database, then the folder (admin key, local files), otherwise."""
    if not config.database_named:
        return str(config.data_dir)
    return f"{config.database} (admin key and local files in {config.data_dir})"


def _shown_key(config: ServerConfig, admin_key: str, *, dev: bool) -> str:
    """The admin key as the start-up banner shows it: ``basalt dev`` always
    prints it, ``basalt serve`` only when it has just generated it (a key in
    every start's output ends up in logs)."""
    if dev or config.admin_key_generated:
        return admin_key
    if os.environ.get("BASALT_ADMIN_KEY") == admin_key:
        return "from BASALT_ADMIN_KEY"
    return f"in {config.data_dir / ADMIN_KEY_FILE}"


async def _serve_all(*pairs: tuple[_Server, socket.socket]) -> None:
    """Serve each server on its socket until all stop; one stopping stops the others."""
    servers = [server for server, _ in pairs]

    async def run(server: _Server, sock: socket.socket) -> None:
        try:
            await server.serve(sockets=[sock])
        finally:
            for other in servers:
                other.should_exit = True

    await asyncio.gather(*(run(server, sock) for server, sock in pairs))


async def _wait_for_loadable(app_dir: Path, tried: Fingerprint) -> tuple[App, Fingerprint]:
    """Wait until the app folder loads; returns the app and the state it loaded from."""
    async for _ in _app_changes(app_dir, tried):
        tried = _fingerprint(app_dir)
        try:
            app = load_app(app_dir)
        except BasaltError as exc:
            _say(f"✖ {exc.message}")
            continue
        return app, tried
    raise RuntimeError("stopped watching")


def run_server(config: ServerConfig, *, reload: bool = False) -> None:
    """Blocking entry point used by the CLI."""
    signals.block()  # before any thread starts: see basalt.server.signals
    loop_factory: Callable[[], asyncio.AbstractEventLoop] | None = None
    try:
        import uvloop

        loop_factory = uvloop.new_event_loop
    except ImportError:  # pragma: no cover - uvloop is optional
        pass
    with contextlib.suppress(KeyboardInterrupt), asyncio.Runner(loop_factory=loop_factory) as r:
        r.run(serve(config, reload=reload))
