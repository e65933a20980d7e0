"""Which frames of a traceback or a stack are the app's: the one rule behind
every "where" Basalt tells a developer (error locations, the event-loop
watchdog's warning, load errors).

A frame is the app's when its code belongs to a module of a loaded app folder
(:func:`basalt.runtime.load_app` imports the folder as a package named
``_basalt_app_N``, so its module name says so, wherever the folder is — a
project cloned into a folder called ``basalt`` included). When no frame is in
an app folder (an app built with ``App.from_modules``, as tests do), a frame
is the app's unless its file belongs to the standard library, an installed
package (site-packages), Basalt itself, or no file at all (``<frozen …>``).
"""

from __future__ import annotations

import os
import site
import sysconfig
from collections.abc import Iterator
from dataclasses import dataclass
from types import FrameType, TracebackType

#: The name prefix of the packages app folders are imported as.
APP_PACKAGE_PREFIX = "_basalt_app_"

_BASALT_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _library_dirs() -> tuple[str, ...]:
    """The folders whose files are never the app's: the standard library,
    installed packages, and Basalt's own package."""
    found = {_BASALT_DIR}
    paths = sysconfig.get_paths()
    for key in ("stdlib", "platstdlib", "purelib", "platlib"):
        if paths.get(key):
            found.add(paths[key])
    found.update(site.getsitepackages())
    found.add(site.getusersitepackages())
    dirs = set()
    for folder in found:
        for form in (os.path.abspath(folder), os.path.realpath(folder)):
            dirs.add(form.rstrip(os.sep) + os.sep)
    return tuple(sorted(dirs))


_LIBRARY_DIRS = _library_dirs()


@dataclass(frozen=True, slots=True)
class AppFrame:
    """One frame of app code: the function's name, its file and line."""

    name: str
    filename: str
    lineno: int

    def __str__(self) -> str:
        return f"{self.filename}:{self.lineno}"


def in_app_package(module: object) -> bool:
    """Whether ``module`` (a ``__name__``) is a module of a loaded app folder."""
    return isinstance(module, str) and module.startswith(APP_PACKAGE_PREFIX)


def is_library_file(filename: str) -> bool:
    """Whether code in ``filename`` is the standard library's, an installed
    package's or Basalt's own (or has no file: ``<frozen …>``, ``<string>``)."""
    if not filename or filename.startswith("<"):
        return True
    return os.path.abspath(filename).startswith(_LIBRARY_DIRS)


def _frames_of(tb: TracebackType | None) -> Iterator[tuple[FrameType, int]]:
    while tb is not None:
        yield tb.tb_frame, tb.tb_lineno
        tb = tb.tb_next


def _pick(frames: list[tuple[FrameType, int]]) -> list[AppFrame]:
    """The app's frames among ``frames`` (kept in their order)."""
    in_folder = [(f, n) for f, n in frames if in_app_package(f.f_globals.get("__name__"))]
    chosen = in_folder or [(f, n) for f, n in frames if not is_library_file(f.f_code.co_filename)]
    return [AppFrame(f.f_code.co_name, f.f_code.co_filename, n) for f, n in chosen]


def app_frames(exc: BaseException) -> list[AppFrame]:
    """The app's frames of ``exc``'s traceback, innermost first."""
    frames = list(_frames_of(exc.__traceback__))
    frames.reverse()
    return _pick(frames)


def innermost_app_frame(frame: FrameType | None) -> AppFrame | None:
    """The innermost frame of app code on the stack that ends at ``frame``
    (a running thread's current frame), or None."""
    frames = []
    while frame is not None:
        frames.append((frame, frame.f_lineno))
        frame = frame.f_back
    picked = _pick(frames)
    return picked[0] if picked else None


__all__ = [
    "APP_PACKAGE_PREFIX",
    "AppFrame",
    "app_frames",
    "in_app_package",
    "innermost_app_frame",
    "is_library_file",
]
