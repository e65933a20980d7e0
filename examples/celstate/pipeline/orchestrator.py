"""Celstate's orchestrator: generate, process, persist — strictly.

Generation itself is out of scope here: the "model" draws a small PNG so that
the whole path (files on disk, uploads, URLs, hashes) is exercised with real
image bytes.
"""

from __future__ import annotations

import json
import struct
import zlib
from pathlib import Path
from typing import Any

from .convex_sync import SyncError
from .job_store import JobStore


def png(width: int, height: int, rgba: tuple[int, int, int, int]) -> bytes:
    """A valid RGBA PNG filled with one colour."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        body = kind + data
        return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body))

    row = b"\x00" + bytes(rgba) * width
    header = struct.pack(">IIBBBBB", width, height, 8, 6, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(row * height))
        + chunk(b"IEND", b"")
    )


class MediaProcessor:
    """Turns the white and black passes into the output files and a component
    manifest whose assets map file names to placeholders."""

    def process_image(self, folder: Path, name: str, size: int) -> dict[str, Any]:
        outputs = folder / "outputs"
        files = {
            f"{name}.png": png(size, size, (200, 30, 90, 255)),
            f"{name}_mask.png": png(size, size, (255, 255, 255, 128)),
            f"{name}_debug.png": png(size // 2, size // 2, (0, 0, 0, 255)),
        }
        for filename, data in files.items():
            (outputs / filename).write_bytes(data)
        return {"name": name, "width": size, "height": size, "assets": dict.fromkeys(files)}


class Orchestrator:
    def __init__(self, store: JobStore, processor: MediaProcessor | None = None) -> None:
        self.store = store
        self.processor = processor or MediaProcessor()

    def run(self, job: dict[str, Any]) -> dict[str, Any]:
        """Run a job to the end; if anything cannot be persisted, the job fails
        and the error is raised."""
        store = self.store
        try:
            job["status"], job["progress_stage"] = "running", "generating"
            store.save_job(job)
            folder = store.folder(job["id"])
            for shade in ("white", "black"):
                (folder / "studio" / f"{shade}.png").write_bytes(png(8, 8, (255, 255, 255, 255)))
            job["progress_stage"] = "processing"
            store.save_job(job)
            component = self.processor.process_image(
                folder, job["name"], int(job.get("render_size_hint") or 64)
            )
            roles = {"": "output", "_mask": "mask", "_debug": "debug"}
            for suffix, role in roles.items():
                path = folder / "outputs" / f"{job['name']}{suffix}.png"
                store.sync.upload_asset(job["id"], path, role, "image/png")
            trace = folder / "trace" / "trace.json"
            trace.write_text(json.dumps({"job": job["id"], "stages": ["generating", "processing"]}))
            store.sync.upload_asset(job["id"], trace, "trace", "application/json")
            job["component"] = component
            job["status"], job["progress_stage"] = "completed", "done"
            store.save_job(job)
        except SyncError as exc:
            store.fail_job(job, str(exc))
            raise
        return job
