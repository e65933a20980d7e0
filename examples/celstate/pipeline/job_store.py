"""Celstate's JobStore: `jobs/{job_id}/job.json` plus `studio/`, `outputs/` and
`trace/` folders, mirrored to Convex after every local write."""

from __future__ import annotations

import contextlib
import json
import time
import uuid
from pathlib import Path
from typing import Any

from .convex_sync import ConvexSync, SyncError


class JobStore:
    def __init__(self, root: Path, sync: ConvexSync) -> None:
        self.root = root
        self.sync = sync

    def folder(self, job_id: str) -> Path:
        return self.root / "jobs" / job_id

    def create_job(self, prompt: str, *, name: str, **fields: Any) -> dict[str, Any]:
        job = {
            "id": uuid.uuid4().hex,
            "status": "queued",
            "progress_stage": "queued",
            "prompt": prompt,
            "style_context": fields.pop("style_context", ""),
            "name": name,
            "layout_intent": fields.pop("layout_intent", "centered"),
            "type": fields.pop("type", "sprite"),
            "created_at": time.time(),
            **fields,
        }
        folder = self.folder(job["id"])
        for sub in ("studio", "outputs", "trace"):
            (folder / sub).mkdir(parents=True, exist_ok=True)
        self.save_job(job)
        return job

    def save_job(self, job: dict[str, Any]) -> None:
        """Write job.json, then persist it in Convex (strict: failures raise)."""
        path = self.folder(job["id"]) / "job.json"
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(job, indent=2, sort_keys=True))
        tmp.replace(path)
        self.sync.upsert_job(job)

    def fail_job(self, job: dict[str, Any], error: str) -> None:
        """Mark the job failed locally; tell Convex too if it still answers."""
        job["status"] = "failed"
        job["error"] = error
        path = self.folder(job["id"]) / "job.json"
        path.write_text(json.dumps(job, indent=2, sort_keys=True))
        with contextlib.suppress(SyncError):  # Convex may be what failed: local is the truth
            self.sync.upsert_job(job)
