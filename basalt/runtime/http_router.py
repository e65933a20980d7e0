"""The router of ``http.py``, and CORS for its routes.

``http.py`` in the app folder defines ``http = HttpRouter()`` and routes
requests on the site origin to ``@http_action`` handlers::

    http = HttpRouter()

    @http_action
    async def echo(ctx, request):
        return Response.json({"got": await request.json()})

    http.route(path="/echo", method="POST", handler=echo)

Routing follows Convex: a route has an exact ``path`` or a ``path_prefix``
(ending in ``/``); an exact path wins over prefixes and the longest matching
prefix wins. ``HEAD`` requests use the ``GET`` route. A path routed only for
other methods answers 405 with ``Allow``; an unrouted path 404. A handler is an
``@http_action`` function or a plain ``async def handler(ctx, request)``.

:func:`cors_router` gives routes CORS headers and answers their preflight
requests (see :class:`CorsRouter`).
"""

from __future__ import annotations

import inspect
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from basalt.errors import SchemaDefinitionError

from .functions import Function, http_action
from .http_messages import Headers, Request, Response

#: The methods a route can have (``HEAD`` is answered by the ``GET`` route).
METHODS = ("GET", "POST", "PUT", "DELETE", "PATCH", "OPTIONS")

ResponseHook = Callable[[Request, Response], None]


@dataclass(frozen=True, slots=True)
class Route:
    """One route: ``method`` plus an exact ``path`` or a ``path_prefix``.

    ``on_response`` (set by helpers like CORS) may adjust every response of the
    route, errors included, before it is sent.
    """

    method: str
    path: str | None
    path_prefix: str | None
    handler: Function
    on_response: ResponseHook | None = None

    @property
    def pattern(self) -> str:
        """``/echo`` or ``/files/*``: how logs name the route."""
        return self.path if self.path is not None else f"{self.path_prefix}*"

    @property
    def label(self) -> str:
        return f"{self.method} {self.pattern}"


def as_http_action(handler: object, where: str) -> Function:
    """``handler`` as an HTTP action: an ``@http_action`` function, or a plain
    ``async def handler(ctx, request)`` (wrapped in ``http_action``)."""
    if isinstance(handler, Function):
        if handler.kind != "http_action":
            raise SchemaDefinitionError(
                f"the handler of {where} must be an @http_action, got {handler!r} "
                "(an HTTP action can call it with ctx.run_query/run_mutation/run_action)"
            )
        return handler
    if inspect.iscoroutinefunction(handler):
        return http_action(handler)
    raise SchemaDefinitionError(
        f"the handler of {where} must be an @http_action "
        f"(async def handler(ctx, request) -> Response), got {handler!r}"
    )


class HttpRouter:
    """The HTTP routes of an app (``http = HttpRouter()`` in ``http.py``)."""

    def __init__(self) -> None:
        self._exact: dict[str, dict[str, Route]] = {}
        self._prefixes: dict[str, dict[str, Route]] = {}
        self._by_length: list[str] = []

    def route(
        self,
        *,
        method: str,
        handler: Function | Callable[..., Any],
        path: str | None = None,
        path_prefix: str | None = None,
    ) -> Route:
        """Route ``method`` requests for ``path`` (exact) or every path under
        ``path_prefix`` (ending in ``/``) to ``handler``.

        A bad or duplicate route raises
        :class:`~basalt.errors.SchemaDefinitionError` when ``http.py`` loads.
        """
        return self.add(_make_route(method, handler, path, path_prefix))

    def add(self, route: Route) -> Route:
        """Add a ready :class:`Route` (for helpers that build routes)."""
        if route.path is not None:
            table, key = self._exact, route.path
        else:
            assert route.path_prefix is not None
            table, key = self._prefixes, route.path_prefix
        methods = table.setdefault(key, {})
        if route.method in methods:
            raise SchemaDefinitionError(
                f"{route.label} is routed twice: it already goes to "
                f"{_handler_name(methods[route.method].handler)}"
            )
        methods[route.method] = route
        if route.path_prefix is not None:
            self._by_length = sorted(self._prefixes, key=len, reverse=True)
        return route

    def lookup(self, path: str, method: str) -> Route | None:
        """The route for a request, or None (see :meth:`allowed_methods`)."""
        method = method.upper()
        if method == "HEAD":
            method = "GET"
        exact = self._exact.get(path, {}).get(method)
        if exact is not None:
            return exact
        for prefix in self._by_length:
            if path.startswith(prefix):
                found = self._prefixes[prefix].get(method)
                if found is not None:
                    return found
        return None

    def allowed_methods(self, path: str) -> list[str]:
        """The methods some route answers for ``path`` (for 405's ``Allow``)."""
        found = set(self._exact.get(path, {}))
        for prefix in self._by_length:
            if path.startswith(prefix):
                found.update(self._prefixes[prefix])
        if "GET" in found:
            found.add("HEAD")
        return sorted(found)

    def routes(self) -> list[Route]:
        """Every route: exact paths, then prefixes, each sorted."""
        exact = [r for p in sorted(self._exact) for r in self._exact[p].values()]
        prefixed = [r for p in sorted(self._prefixes) for r in self._prefixes[p].values()]
        return exact + prefixed

    def __repr__(self) -> str:
        return f"<HttpRouter {len(self.routes())} routes>"


def _handler_name(function: Function) -> str:
    name = function.path or getattr(function.handler, "__qualname__", None)
    return name if isinstance(name, str) else repr(function)


def _make_route(
    method: str,
    handler: object,
    path: str | None,
    path_prefix: str | None,
    on_response: ResponseHook | None = None,
) -> Route:
    """A checked :class:`Route` (the rules of :meth:`HttpRouter.route`)."""
    if (path is None) == (path_prefix is None):
        given = "both" if path is not None else "neither"
        raise SchemaDefinitionError(
            f"a route takes exactly one of path= (an exact path) or path_prefix= "
            f"(every path under it), got {given}"
        )
    if not isinstance(method, str) or method.upper() not in METHODS:
        extra = " (HEAD requests are answered by the GET route)" if method == "HEAD" else ""
        raise SchemaDefinitionError(
            f"method must be one of {', '.join(METHODS)}, got {method!r}{extra}"
        )
    method = method.upper()
    if path is not None and (not isinstance(path, str) or not path.startswith("/")):
        raise SchemaDefinitionError(f"path must start with '/', got {path!r}")
    if path_prefix is not None:
        if not isinstance(path_prefix, str) or not path_prefix.startswith("/"):
            raise SchemaDefinitionError(f"path_prefix must start with '/', got {path_prefix!r}")
        if not path_prefix.endswith("/"):
            raise SchemaDefinitionError(
                f"path_prefix must end with '/', got {path_prefix!r} "
                f"(did you mean {path_prefix + '/'!r}?)"
            )
    where = f"{method} {path if path is not None else f'{path_prefix}*'}"
    return Route(method, path, path_prefix, as_http_action(handler, where), on_response)


# --------------------------------------------------------------------------- CORS

_ORIGIN = re.compile(r"[a-z][a-z0-9+.\-]*://[^/?#\s]+", re.IGNORECASE)
_HEADER_NAME = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")


def _add_vary(headers: Headers, name: str) -> None:
    present = {v.strip().lower() for value in headers.get_all("vary") for v in value.split(",")}
    if name.lower() not in present and "*" not in present:
        headers.append("vary", name)


class CorsRouter:
    """Routes with CORS, made by :func:`cors_router`.

    ``cors.route(...)`` takes the arguments of :meth:`HttpRouter.route` and adds
    the route to the router with, on every response (errors included), the
    ``Access-Control-Allow-Origin`` of an allowed ``Origin`` (echoed, with
    ``Vary: Origin``; ``*`` when every origin is allowed without credentials),
    ``Access-Control-Expose-Headers`` and ``-Allow-Credentials``. It also routes
    ``OPTIONS`` for the same path to a preflight answer: 204 with
    ``Access-Control-Allow-Methods`` (the methods routed through this helper),
    ``-Allow-Headers`` and ``-Max-Age``, or 403 for an origin not allowed.
    """

    def __init__(
        self,
        http: HttpRouter,
        *,
        allowed_origins: Sequence[str] | str = "*",
        allowed_headers: Sequence[str] | str = ("Content-Type",),
        exposed_headers: Sequence[str] = (),
        allow_credentials: bool = False,
        max_age: int = 86400,
    ) -> None:
        self.http = http
        if isinstance(allowed_origins, str) and allowed_origins != "*":
            allowed_origins = [allowed_origins]
        for origin in () if allowed_origins == "*" else allowed_origins:
            if not isinstance(origin, str) or not _ORIGIN.fullmatch(origin):
                raise SchemaDefinitionError(
                    f"allowed origin {origin!r} must be scheme://host[:port] without a path, "
                    "like the Origin header a browser sends ('https://app.example.com')"
                )
        self.origins = None if allowed_origins == "*" else {o.lower() for o in allowed_origins}
        if isinstance(allowed_headers, str) and allowed_headers != "*":
            allowed_headers = [allowed_headers]
        for name in [*(() if allowed_headers == "*" else allowed_headers), *exposed_headers]:
            if not isinstance(name, str) or not _HEADER_NAME.fullmatch(name):
                raise SchemaDefinitionError(f"{name!r} is not an HTTP header name")
        self.allowed_headers: list[str] | Literal["*"] = (
            "*" if allowed_headers == "*" else list(allowed_headers)
        )
        self.exposed_headers = list(exposed_headers)
        self.allow_credentials = allow_credentials
        self.max_age = int(max_age)
        self._methods: dict[tuple[str | None, str | None], set[str]] = {}

    def route(
        self,
        *,
        method: str,
        handler: Function | Callable[..., Any],
        path: str | None = None,
        path_prefix: str | None = None,
    ) -> Route:
        """Like :meth:`HttpRouter.route`, with CORS (``OPTIONS`` is answered here)."""
        route = _make_route(method, handler, path, path_prefix, self._decorate)
        if route.method == "OPTIONS":
            raise SchemaDefinitionError(
                f"{route.label}: a CORS router answers OPTIONS (preflight) requests itself; "
                "route OPTIONS on the HttpRouter instead if you need your own"
            )
        key = (route.path, route.path_prefix)
        methods = self._methods.get(key)
        if methods is None:
            methods = set()
            preflight = _make_route("OPTIONS", self._preflight_for(methods), path, path_prefix)
            try:
                self.http.add(preflight)
            except SchemaDefinitionError as exc:
                raise SchemaDefinitionError(
                    f"{exc.message}; a CORS router answers preflight requests for its paths, "
                    "so do not route OPTIONS for them yourself"
                ) from None
            self._methods[key] = methods
        self.http.add(route)
        methods.add(route.method)
        return route

    def allow_origin(self, origin: str | None) -> str | None:
        """The ``Access-Control-Allow-Origin`` for a request's ``Origin``, or None."""
        if origin is None:
            return None
        if self.origins is None:
            return origin if self.allow_credentials else "*"
        return origin if origin.lower() in self.origins else None

    def _decorate(self, request: Request, response: Response) -> None:
        headers = response.headers
        if self.origins is not None or self.allow_credentials:
            _add_vary(headers, "Origin")
        allowed = self.allow_origin(request.headers.get("origin"))
        if allowed is None:
            return
        headers["access-control-allow-origin"] = allowed
        if self.allow_credentials:
            headers["access-control-allow-credentials"] = "true"
        if self.exposed_headers:
            headers["access-control-expose-headers"] = ", ".join(self.exposed_headers)

    def _preflight_for(self, methods: set[str]) -> Function:
        async def cors_preflight(ctx: object, request: Request) -> Response:
            listed = ", ".join(sorted(methods | {"OPTIONS"}))
            origin = request.headers.get("origin")
            if origin is None:  # not a CORS request: say what the path allows
                return Response(status=204, headers={"allow": listed})
            allowed = self.allow_origin(origin)
            if allowed is None:
                response = Response(f"Origin {origin} is not allowed", status=403)
                _add_vary(response.headers, "Origin")
                return response
            response = Response(status=204)
            self._decorate(request, response)
            headers = response.headers
            headers["access-control-allow-methods"] = listed
            if self.allowed_headers == "*":
                requested = request.headers.get("access-control-request-headers")
                if requested:
                    headers["access-control-allow-headers"] = requested
                _add_vary(headers, "Access-Control-Request-Headers")
            elif self.allowed_headers:
                headers["access-control-allow-headers"] = ", ".join(self.allowed_headers)
            headers["access-control-max-age"] = str(self.max_age)
            return response

        return http_action(cors_preflight)


def cors_router(
    http: HttpRouter,
    *,
    allowed_origins: Sequence[str] | str = "*",
    allowed_headers: Sequence[str] | str = ("Content-Type",),
    exposed_headers: Sequence[str] = (),
    allow_credentials: bool = False,
    max_age: int = 86400,
) -> CorsRouter:
    """CORS for routes of ``http``: add them with the returned router's ``route``::

        cors = cors_router(http, allowed_origins=["https://app.example.com"],
                           allowed_headers=["Content-Type", "Authorization"])
        cors.route(path="/ai/saga", method="POST", handler=saga)

    ``allowed_origins``: the origins allowed (``"*"``: any). ``allowed_headers``:
    request headers allowed in preflight (``"*"``: whatever the browser asks).
    ``exposed_headers``: response headers scripts may read. ``allow_credentials``:
    allow cookies and HTTP auth (the origin is then always echoed, never ``*``).
    ``max_age``: seconds a browser may cache a preflight answer.
    """
    return CorsRouter(
        http,
        allowed_origins=allowed_origins,
        allowed_headers=allowed_headers,
        exposed_headers=exposed_headers,
        allow_credentials=allow_credentials,
        max_age=max_age,
    )
