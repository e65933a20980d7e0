"""The ASGI application of a Basalt deployment (the API origin)."""

from __future__ import annotations

import logging
from typing import Any

import basalt
from basalt.errors import BasaltError, ServerBusy
from basalt.runtime import App, Runtime
from basalt.runtime.files import FileService
from basalt.runtime.outcome import error_message, request_id
from basalt.sync import SyncHub

from .asgi import (
    BodyTooLarge,
    Receive,
    Request,
    Response,
    Scope,
    Send,
    cors_headers,
    error_response,
    json_response,
    run_lifespan,
)
from .auth import Authenticator, Caller, client_address
from .body_budget import BodyBudget
from .files_routes import FileRoutes
from .http_api import HttpApi
from .sync_queue import SendBudget
from .websocket import SyncLimits, serve_sync

log = logging.getLogger("basalt.server")

_FUNCTION_ROUTES: dict[str, Any] = {
    "/api/query": "query",
    "/api/mutation": "mutation",
    "/api/action": "action",
    "/api/function": None,
}


class BasaltApp:
    """Serves the Convex HTTP API for one runtime.

    Starting and stopping the runtime is the job of whoever owns it (the CLI's
    server runner or a test); ASGI lifespan events start it if nobody did.
    ``sync_limits`` bound what each sync connection may hold (by default from
    the environment, see :meth:`SyncLimits.from_env`); all its connections
    share one budget for the messages their clients have not read yet.

    ``dev`` (``basalt dev``): every caller is told everything of failed calls
    and their log lines; otherwise (``basalt serve``) only admin callers are
    (see :mod:`basalt.runtime.outcome`).
    """

    def __init__(
        self,
        runtime: Runtime,
        authenticator: Authenticator,
        sync_limits: SyncLimits | None = None,
        *,
        dev: bool = False,
        body_budget: BodyBudget | None = None,
    ) -> None:
        self.runtime = runtime
        #: bytes of request bodies held at once (shared with the site port's app)
        self.body_budget = body_budget or BodyBudget()
        self.auth = authenticator
        self.dev = dev
        self.sync_limits = sync_limits or SyncLimits.from_env()
        self.send_budget = SendBudget(self.sync_limits.total_queued_bytes)
        self.api = HttpApi(runtime, dev=dev)
        files = runtime.services.files
        self.files = FileRoutes(files) if isinstance(files, FileService) else None
        self._started_here = False
        self._hub: SyncHub | None = None

    def sync_hub(self) -> SyncHub:
        """The subscription hub, started on first use (it needs the running loop)."""
        if self._hub is None:
            self._hub = SyncHub(
                self.runtime,
                dev=self.dev,
                max_result_bytes=self.sync_limits.total_result_bytes,
            )
            self._hub.start()
        return self._hub

    async def reload(self, app: App) -> None:
        """Switch the runtime to a newly loaded app (``basalt dev``); live
        subscriptions then run the new code (see :meth:`SyncHub.reload`)."""
        await self.runtime.reload(app)
        if self._hub is not None:
            await self._hub.reload()

    async def aclose(self) -> None:
        """Stop background work (subscriptions); the runtime stays with its owner."""
        if self._hub is not None:
            await self._hub.stop()
            self._hub = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        kind = scope["type"]
        if kind == "http":
            await self._http(scope, receive, send)
        elif kind == "websocket":
            path = scope["path"]
            if path == "/api/sync" or (path.startswith("/api/") and path.endswith("/sync")):
                await serve_sync(
                    scope,
                    receive,
                    send,
                    self.sync_hub(),
                    self.auth.for_client(client_address(scope)),
                    limits=self.sync_limits,
                    budget=self.send_budget,
                )
            else:
                await send({"type": "websocket.close", "code": 1008})
        elif kind == "lifespan":
            await self._lifespan(receive, send)

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        async def startup() -> None:
            if not self.runtime._started:
                await self.runtime.start()
                self._started_here = True

        async def shutdown() -> None:
            await self.aclose()
            if self._started_here:
                await self.runtime.stop()

        await run_lifespan(receive, send, startup, shutdown)

    async def _http(self, scope: Scope, receive: Receive, send: Send) -> None:
        lease = self.body_budget.lease()
        request = Request(scope, receive, lease)
        try:
            response = await self._route(request)
        except ServerBusy as exc:
            response = error_response(503, exc.code, exc.message)
        except BasaltError as exc:
            if exc.http_status >= 500:  # the server's failure, not the request's
                response = self._internal_error(request, exc)
            else:
                response = error_response(exc.http_status, exc.code, exc.message)
        except BodyTooLarge as exc:
            response = error_response(413, "PayloadTooLarge", str(exc))
        except Exception as exc:  # one request must never take the server down
            response = self._internal_error(request, exc)
        finally:
            lease.release()  # the body is not needed once the response is made
        await response.send(send, cors_headers(request))

    def _internal_error(self, request: Request, exc: BaseException) -> Response:
        """A 500 that names only a request id; the server log has the rest."""
        rid = request_id()
        log.error(
            "internal error serving %s %s [Request ID: %s]",
            request.method,
            request.path,
            rid,
            exc_info=exc,
        )
        message = f"[Request ID: {rid}] Server Error"
        if self.dev:
            message = error_message(exc, rid)
        status = exc.http_status if isinstance(exc, BasaltError) else 500
        return error_response(status, "InternalServerError", message)

    async def _caller(self, request: Request) -> Caller:
        """Who sent ``request`` (its ``Authorization`` header, from its address)."""
        return await self.auth.from_header(
            request.headers.get("authorization"), client_address(request.scope), request.query
        )

    async def _route(self, request: Request) -> Response:
        path, method = request.path, request.method
        if method == "OPTIONS":
            return Response(b"", 204)
        if path in _FUNCTION_ROUTES:
            if method != "POST" and not (method == "GET" and path == "/api/query"):
                return error_response(405, "MethodNotAllowed", f"{method} {path} is not allowed")
            caller = await self._caller(request)
            return await self.api.function(request, caller, _FUNCTION_ROUTES[path])
        if path.startswith("/api/run/") and method == "POST":
            caller = await self._caller(request)
            return await self.api.run(request, caller, path[len("/api/run/") :])
        if path in ("/api/query_ts", "/api/query_at_ts", "/api/query_batch") and method == "POST":
            caller = await self._caller(request)
            handler = getattr(self.api, path.rsplit("/", 1)[1])
            response: Response = await handler(request, caller)
            return response
        if path.startswith("/api/storage/"):
            if self.files is None:
                return error_response(404, "NotFound", "this deployment has no file storage")
            return await self.files.handle(request)
        if path in ("/version", "/api/version"):
            # Which version runs is for admins (it tells which known bugs apply).
            admin = (await self._caller(request)).admin
            text = f"basalt {basalt.__version__}" if admin else "basalt"
            return Response(text, content_type="text/plain")
        if path in ("/health", "/api/health"):
            if not (await self._caller(request)).admin:
                return json_response({"status": "ok"})
            ts = await self.runtime.storage.latest_ts()
            return json_response({"status": "ok", "version": basalt.__version__, "ts": str(ts)})
        if path == "/api/check_admin_key":
            caller = await self._caller(request)
            if not caller.admin:
                return error_response(401, "MissingAdminKey", "An admin key is required")
            return json_response({"ok": True})
        if path == "/api/stats" and method == "GET":
            caller = await self._caller(request)
            if not caller.admin:
                return error_response(401, "MissingAdminKey", "An admin key is required")
            budget = self.send_budget
            hub = self._hub
            bodies = self.body_budget
            return json_response(
                {
                    "conflictRetries": self.runtime.conflict_retries,
                    "requestBodies": {
                        "heldBytes": bodies.held,
                        "limitBytes": bodies.limit,
                        "refused": bodies.refused,
                    },
                    "sync": {
                        "connections": len(budget.queues),
                        "queuedBytes": budget.queued_bytes,
                        "queuedBytesLimit": budget.limit,
                        "slowClientsDisconnected": budget.disconnected,
                        "resultBytes": 0 if hub is None else hub.result_bytes,
                        "resultBytesLimit": self.sync_limits.total_result_bytes,
                        "resultsRefused": 0 if hub is None else hub.results_refused,
                        "cyclesOverTime": 0 if hub is None else hub.cycles_over_time,
                    },
                }
            )
        return error_response(404, "NotFound", f"No route for {method} {path}")
