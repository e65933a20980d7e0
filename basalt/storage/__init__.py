"""Storage engines behind one protocol (:mod:`basalt.storage.base`)."""

from .base import Catalog, Commit, IndexInfo, KeyWrite, Persistence, TableInfo

__all__ = ["Catalog", "Commit", "IndexInfo", "KeyWrite", "Persistence", "TableInfo"]
