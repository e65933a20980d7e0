"""Function registry, ``ctx`` objects, transactions and the executor."""

from .app import App, canonical_path, load_app
from .clock import Clock, ManualClock
from .context import ActionCtx, Auth, MutationCtx, QueryCtx
from .db import UNSET
from .functions import (
    Function,
    action,
    http_action,
    internal_action,
    internal_mutation,
    internal_query,
    mutation,
    query,
)
from .outcome import Outcome
from .runtime import Runtime
from .transaction import Limits, ReadSet

__all__ = [
    "UNSET",
    "ActionCtx",
    "App",
    "Auth",
    "Clock",
    "Function",
    "Limits",
    "ManualClock",
    "MutationCtx",
    "Outcome",
    "QueryCtx",
    "ReadSet",
    "Runtime",
    "action",
    "canonical_path",
    "http_action",
    "internal_action",
    "internal_mutation",
    "internal_query",
    "load_app",
    "mutation",
    "query",
]
