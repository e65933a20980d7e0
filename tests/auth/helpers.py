"""Helpers of the auth tests: signing keys, tokens, key sets, a manual clock and a
real local HTTP server serving JSON."""

from __future__ import annotations

import base64
import json
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import jwt
from jwt.algorithms import ECAlgorithm, RSAAlgorithm

ISSUER = "https://auth.example.test"
APP_ID = "my-app"


@dataclass
class SigningKey:
    """A private key, its algorithm and the kid it is published under."""

    private: Any
    alg: str
    kid: str

    def jwk(self, **extra: Any) -> dict[str, Any]:
        algorithm = RSAAlgorithm if self.alg.startswith(("RS", "PS")) else ECAlgorithm
        data: dict[str, Any] = algorithm.to_jwk(self.private.public_key(), as_dict=True)
        return {**data, "kid": self.kid, "alg": self.alg, "use": "sig", **extra}

    def sign(
        self,
        *,
        iss: str | None = ISSUER,
        sub: str | None = "user-1",
        aud: str | list[str] | None = APP_ID,
        expires_in: float | None = 3600,
        kid: Any = ...,  # ...: this key's kid; None: no kid header
        now: float | None = None,
        headers: dict[str, Any] | None = None,
        **claims: Any,
    ) -> str:
        """A token signed by this key (``None`` leaves a claim out)."""
        now = time.time() if now is None else now
        payload: dict[str, Any] = {"iat": int(now)}
        if expires_in is not None:
            payload["exp"] = int(now + expires_in)
        for name, value in (("iss", iss), ("sub", sub), ("aud", aud)):
            if value is not None:
                payload[name] = value
        payload.update(claims)
        header = dict(headers or {})
        key_id = self.kid if kid is ... else kid
        if key_id is not None:
            header["kid"] = key_id
        return jwt.encode(payload, self.private, algorithm=self.alg, headers=header)


def jwks(*keys: SigningKey) -> dict[str, Any]:
    return {"keys": [k.jwk() for k in keys]}


def data_url(document: dict[str, Any]) -> str:
    encoded = base64.b64encode(json.dumps(document).encode()).decode()
    return f"data:text/plain;charset=utf-8;base64,{encoded}"


def unsigned_token(header: dict[str, Any], payload: dict[str, Any], signature: bytes = b"") -> str:
    def part(data: bytes) -> str:
        return base64.urlsafe_b64encode(data).rstrip(b"=").decode()

    return ".".join(
        [part(json.dumps(header).encode()), part(json.dumps(payload).encode()), part(signature)]
    )


class ManualClock:
    """A monotonic clock that moves only when told."""

    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


# --------------------------------------------------------------------------- a local HTTP server


@dataclass
class Route:
    body: bytes
    status: int = 200
    content_type: str = "application/json"


@dataclass
class JsonServer:
    """A real HTTP server on 127.0.0.1 serving JSON documents; counts requests by path."""

    url: str = ""
    routes: dict[str, Route] = field(default_factory=dict)
    hits: Counter[str] = field(default_factory=Counter)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def serve(self, path: str, document: Any, status: int = 200) -> str:
        with self.lock:
            self.routes[path] = Route(json.dumps(document).encode(), status)
        return self.url + path

    def fail(self, path: str, status: int = 500) -> None:
        with self.lock:
            self.routes[path] = Route(b'{"error": "down"}', status)

    def count(self, path: str) -> int:
        with self.lock:
            return self.hits[path]
