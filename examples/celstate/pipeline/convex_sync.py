"""Persisting Celstate jobs and assets in a Convex deployment (here: Basalt),
through the official ``convex`` Python client.

The job store and the orchestrator call this module only; they never talk to
Convex directly. Every failure raises :class:`SyncError`: Celstate's policy is
that a job whose outputs cannot be persisted has failed.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import requests
from convex.http_client import ConvexHttpClient

#: JobRecord field → Convex field (the record's `type` is internal).
FIELDS = {
    "id": "jobId",
    "status": "status",
    "progress_stage": "progressStage",
    "prompt": "prompt",
    "style_context": "styleContext",
    "name": "name",
    "layout_intent": "layoutIntent",
    "render_size_hint": "renderSizeHint",
    "type": "internalAssetType",
    "component": "component",
    "telemetry": "telemetry",
    "error": "error",
    "retry_after": "retryAfter",
}


class SyncError(Exception):
    """Persisting a job or an asset failed."""


class ConvexSync:
    """Uses the official client's HTTP flavour (``ConvexHttpClient``): a batch
    pipeline wants each call to succeed or fail now — the WebSocket client
    retries an unreachable backend for ever, which would hang a job instead of
    failing it."""

    def __init__(self, url: str, *, timeout: float = 30.0) -> None:
        self.url = url
        self.client = ConvexHttpClient(url)
        self.timeout = timeout

    def upsert_job(self, job: dict[str, Any]) -> None:
        """Store the job record (absent or None fields are left out)."""
        payload = {
            convex_name: job[name]
            for name, convex_name in FIELDS.items()
            if job.get(name) is not None
        }
        if "renderSizeHint" in payload:
            payload["renderSizeHint"] = float(payload["renderSizeHint"])
        if "retryAfter" in payload:
            payload["retryAfter"] = float(payload["retryAfter"])
        self._mutation("jobs:upsert", payload)

    def upload_asset(self, job_id: str, path: Path, role: str, content_type: str) -> str:
        """Upload a file, record it under the job, check what the server serves
        back byte for byte; returns the storage id."""
        data = path.read_bytes()
        upload_url = self._mutation("assets:generateUploadUrl", {})
        try:
            response = requests.post(
                upload_url,
                data=data,
                headers={"Content-Type": content_type},
                timeout=self.timeout,
            )
            response.raise_for_status()
            storage_id = response.json()["storageId"]
        except (requests.RequestException, ValueError, KeyError) as exc:
            raise SyncError(f"uploading {path.name} failed: {exc}") from exc
        self._mutation(
            "assets:save",
            {
                "jobId": job_id,
                "role": role,
                "filename": path.name,
                "storageId": storage_id,
                "contentType": content_type,
                "bytes": float(len(data)),
            },
        )
        self._verify(job_id, path.name, hashlib.sha256(data).hexdigest())
        return str(storage_id)

    def record_event(self, job_id: str, kind: str, payload: Any) -> None:
        self._mutation("events:record", {"jobId": job_id, "kind": kind, "payload": payload})

    def public_job(self, job_id: str) -> Any:
        try:
            return self.client.query("jobs:getPublic", {"jobId": job_id})
        except Exception as exc:
            raise SyncError(f"jobs:getPublic failed: {exc}") from exc

    def _verify(self, job_id: str, filename: str, sha256: str) -> None:
        try:
            url = self.client.query("assets:urlOf", {"jobId": job_id, "filename": filename})
        except Exception as exc:
            raise SyncError(f"assets:urlOf failed: {exc}") from exc
        if url is None:
            raise SyncError(f"{filename} was saved but has no URL")
        try:
            served = requests.get(url, timeout=self.timeout)
            served.raise_for_status()
        except requests.RequestException as exc:
            raise SyncError(f"downloading {filename} back failed: {exc}") from exc
        if hashlib.sha256(served.content).hexdigest() != sha256:
            raise SyncError(f"{filename}: the stored bytes differ from the local file")

    def _mutation(self, name: str, args: dict[str, Any]) -> Any:
        try:
            return self.client.mutation(name, args)
        except Exception as exc:
            raise SyncError(f"{name} failed: {exc}") from exc
