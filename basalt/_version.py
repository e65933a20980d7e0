"""Basalt's version: one place that the package, ``pyproject.toml`` (the
distribution ``basalt-backend``) and modules below the facade all read."""

__version__ = "0.1.0"
