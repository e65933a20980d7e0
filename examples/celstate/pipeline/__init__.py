"""Celstate's Python side: the job store, the orchestrator, and the sync layer
that persists jobs and assets through the official ``convex`` client."""
