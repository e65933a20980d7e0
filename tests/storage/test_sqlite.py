"""What only the SQLite engine has."""

from __future__ import annotations

import pytest

from basalt.storage.sqlite import SqliteEngine


def test_durability_settings_are_checked() -> None:
    with pytest.raises(ValueError, match="durability"):
        SqliteEngine(":memory:", durability="sometimes")
