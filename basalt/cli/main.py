"""The ``basalt`` command.

- ``basalt init [DIR]``: scaffold a small working app.
- ``basalt serve``: serve an app folder.
- ``basalt dev``: serve and reload when a file of the app changes.
- ``basalt run PATH [ARGS]``: run a function (through a running server if
  there is one for the data folder, else in this process).
- ``basalt export [-o FILE]`` / ``basalt import FILE --append|--replace``:
  write and load snapshot ZIPs (see :mod:`basalt.cli.snapshot`); moving an app
  from SQLite to PostgreSQL is an export, then an import with
  ``BASALT_DATABASE_URL`` set.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import os
import shlex
import sys
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from basalt import __version__
from basalt.errors import BasaltError, InvalidValue
from basalt.server.config import (
    ADMIN_KEY_ENV,
    ADMIN_KEY_FILE,
    DEFAULT_APP_DIR,
    DEFAULT_DATA_DIR,
    DEFAULT_PORT,
    SERVER_FILE,
    ServerConfig,
)
from basalt.server.data_lock import DataFolderBusy

from .data_folder import lock_folder, require_data
from .scaffold import scaffold
from .snapshot import add_commands as add_snapshot_commands
from .snapshot import run_command as run_snapshot_command


def _add_server_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--app", default=DEFAULT_APP_DIR, help="the app folder (default: %(default)s)")
    p.add_argument(
        "--data", default=DEFAULT_DATA_DIR, help="the data folder (default: %(default)s)"
    )
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (%(default)s)")
    p.add_argument("--port", type=int, default=DEFAULT_PORT, help="API port (%(default)s)")
    p.add_argument(
        "--site-port", type=int, default=None, help="HTTP actions port (default: port + 1)"
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="basalt", description="Basalt: a Python-native reactive backend that speaks Convex."
    )
    parser.add_argument("--version", action="version", version=f"basalt {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("init", help="scaffold a small working app")
    p.add_argument("dir", nargs="?", default=".", help="project folder (default: here)")
    p.add_argument("--app", default=DEFAULT_APP_DIR, help="app folder name (%(default)s)")

    p = sub.add_parser("serve", help="serve an app")
    _add_server_options(p)

    p = sub.add_parser("dev", help="serve an app and reload it when its files change")
    _add_server_options(p)

    p = sub.add_parser("run", help="run a function")
    p.add_argument("path", help='function path, e.g. "messages:list"')
    p.add_argument(
        "args",
        nargs="?",
        default="{}",
        help="arguments as a JSON object (numbers are float64, as clients send them; "
        'an int64 is {"$integer": "<base64 of 8 little-endian bytes>"})',
    )
    p.add_argument("--app", default=DEFAULT_APP_DIR, help="the app folder (%(default)s)")
    p.add_argument("--data", default=DEFAULT_DATA_DIR, help="the data folder (%(default)s)")
    p.add_argument("--url", default=None, help="run through the server at this URL")
    p.add_argument("--admin-key", default=None, help="admin key for --url")

    add_snapshot_commands(sub, DEFAULT_DATA_DIR)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    try:
        if args.command == "init":
            return _init(args)
        if args.command in ("serve", "dev"):
            try:
                from basalt.server.runner import run_server
            except ImportError as exc:
                print(
                    f"error: serving needs the server extras ({exc.name} is missing): "
                    "pip install 'basalt-backend[server]'",
                    file=sys.stderr,
                )
                return 1

            config = ServerConfig.from_env(
                app_dir=args.app,
                data_dir=args.data,
                host=args.host,
                port=args.port,
                site_port=args.site_port,
            )
            run_server(config, reload=args.command == "dev")
            return 0
        if args.command == "run":
            return _run(args)
        if args.command in ("export", "import"):
            return run_snapshot_command(args)
    except BasaltError as exc:
        print(f"error: {exc.message}", file=sys.stderr)
        return 1
    return 2


def _init(args: argparse.Namespace) -> int:
    root = Path(args.dir)
    for what, path in scaffold(root, args.app):
        print(f"  {what} {path}")
    print(f"\nNext: {init_hint(root, args.app)}")
    return 0


def init_hint(root: Path, app: str) -> str:
    """The command that serves a new project from its own folder, so that its
    data folder and admin key (``.basalt/``, git-ignored) stay inside it."""
    command = "basalt dev"
    if Path(app) != Path(DEFAULT_APP_DIR):
        command += f" --app {shlex.quote(app)}"
    if root.resolve() == Path.cwd().resolve():
        return command
    return f"cd {shlex.quote(str(root))} && {command}"


def _run(args: argparse.Namespace) -> int:
    from basalt.server.config import running_server
    from basalt.values.wire import loads, to_clean_json

    try:
        # As a client sends them: every number is a float64, {"$integer": …} an int64.
        fn_args = loads(args.args)
    except InvalidValue as exc:
        print(f"error: args is not valid JSON: {exc.message}", file=sys.stderr)
        return 2
    if not isinstance(fn_args, dict):
        shown = args.args if len(args.args) <= 40 else args.args[:37] + "..."
        print(f"error: args must be a JSON object like '{{}}', got {shown}", file=sys.stderr)
        return 2
    config = ServerConfig.from_env(app_dir=args.app, data_dir=args.data)
    if args.url:
        url, key = args.url, args.admin_key or config.stored_admin_key()
        if not key:
            print(
                "error: --url needs the server's admin key: pass --admin-key or set "
                "BASALT_ADMIN_KEY",
                file=sys.stderr,
            )
            return 2
        ok, value = _run_http(url, key, args.path, fn_args)
    elif (server := running_server(config.data_dir)) is not None:
        # The server of this data folder runs the function (it owns the data).
        if config.database_named and server.database not in (None, config.database):
            print(
                f"error: the environment names the {config.database}, but the server of the "
                f"data folder {config.data_dir} (pid {server.pid}, {server.url}) serves the "
                f"{server.database}: unset BASALT_DATABASE_URL and BASALT_DATABASE_SCHEMA to "
                "run there, or pass another --data folder to run on the database they name",
                file=sys.stderr,
            )
            return 1
        # Called with its admin key from where the server takes it (server.json
        # does not hold it).
        key = args.admin_key or config.admin_key_for(server)
        if not key:
            where = (
                f"{ADMIN_KEY_ENV}, which is not set here: set it to the server's key"
                if server.admin_key_source == ADMIN_KEY_ENV
                else f"{config.data_dir / ADMIN_KEY_FILE}, which cannot be read here"
            )
            print(
                f"error: the server at {server.url} (pid {server.pid}) takes its admin key "
                f"from {where}, or pass --admin-key",
                file=sys.stderr,
            )
            return 2
        print(
            f"running {args.path} on the server at {server.url} (pid {server.pid}), which "
            f"serves {config.data_dir}",
            file=sys.stderr,
        )
        ok, value = _run_http(server.url, key, args.path, fn_args)
        if not ok and value.startswith("error: cannot reach"):
            marker = config.data_dir / SERVER_FILE
            value += (
                f"\n(the server was found through {marker}; if no server runs for this data "
                "folder any more, delete that file)"
            )
    else:
        if not config.app_dir.is_dir():
            print(
                f"error: the app folder {str(config.app_dir)!r} does not exist: pass --app DIR "
                "(or run basalt in your project's folder), or create one with `basalt init`",
                file=sys.stderr,
            )
            return 1
        require_data(config)
        # In this process: never beside a server that holds the data folder (it
        # would not see these writes).
        try:
            lock = lock_folder(config, "basalt run")
        except DataFolderBusy as exc:
            print(
                f"error: {exc.message}, and no server.json says where it listens (is it still "
                "starting?): wait until it serves, or pass --url",
                file=sys.stderr,
            )
            return 1
        with lock or contextlib.nullcontext():
            ok, value = asyncio.run(_run_local(config, args.path, fn_args))
    if not ok:
        print(value, file=sys.stderr)
        return 1
    return _write_result(json.dumps(to_clean_json(value), indent=2, ensure_ascii=False))


def _write_result(text: str) -> int:
    """Write ``basalt run``'s result to stdout, its only output there (log lines
    and errors go to stderr). A reader that stops early (``| head``) ends the
    output quietly, as it does for other commands, not with a traceback."""
    try:
        sys.stdout.write(text + "\n")
        sys.stdout.flush()
    except BrokenPipeError:
        # What is still buffered must not fail again when Python exits.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
    return 0


def _run_http(url: str, key: str, path: str, fn_args: dict[str, Any]) -> tuple[bool, Any]:
    from basalt.values.wire import from_convex_json, to_convex_json

    body = json.dumps(
        {"path": path, "args": to_convex_json(fn_args), "format": "convex_encoded_json"}
    ).encode()
    request = urllib.request.Request(
        url.rstrip("/") + "/api/function",
        data=body,
        headers={"Content-Type": "application/json", "Authorization": f"Convex {key}"},
    )
    try:
        with urllib.request.urlopen(request) as response:
            result = json.loads(response.read(), parse_int=float)
        for line in result.get("logLines", ()):  # on stderr, as a local run prints them
            print(f"[{path}] {line.removeprefix('[LOG] ')}", file=sys.stderr)
    except urllib.error.HTTPError as exc:
        with exc:
            detail = exc.read().decode(errors="replace")
        try:
            info = json.loads(detail)
            detail = f"{info['code']}: {info['message']}"
        except (ValueError, KeyError, TypeError):
            pass
        return False, f"error: the server at {url} answered HTTP {exc.code}: {detail}"
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        return False, f"error: cannot reach the server at {url}: {reason}"
    if result.get("status") == "success":
        return True, from_convex_json(result.get("value"))
    message = result.get("errorMessage", "")
    if "errorData" in result:
        message += f"\nerrorData: {json.dumps(result['errorData'])}"
    return False, message


async def _run_local(config: ServerConfig, path: str, fn_args: dict[str, Any]) -> tuple[bool, Any]:
    from basalt.runtime import Runtime, load_app
    from basalt.runtime.outcome import error_message

    app = load_app(config.app_dir)
    async with Runtime(app, config.open_storage()) as runtime:
        # What the function prints and logs goes to stderr as it runs
        # (basalt.runtime.logs), prefixed with its path.
        outcome = await runtime.call(path, fn_args, admin=True)
    if outcome.error is not None:
        return False, error_message(outcome.error)
    return True, outcome.value


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
