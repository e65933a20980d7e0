"""Loading an app folder into an :class:`App`: its functions, schema and routes.

Every ``.py`` file in the folder (nested folders too) is a module; every
:class:`~basalt.runtime.functions.Function` it defines at top level is a
function with the path ``"module:name"`` (``"ai/saga:stream"`` for
``ai/saga.py``). Files and folders whose name starts with ``_`` or ``.`` are
not modules (use them for shared helpers). ``schema.py`` holds ``schema``;
``http.py`` may hold ``http`` (an ``HttpRouter``); ``crons.py`` may hold
``crons``.

The folder is imported as a package of its own, fresh on every load, so app
modules import each other with relative imports (``from .model import x``)
and a reload never sees stale modules. The package's logger (the parent of
every ``logging.getLogger(__name__)`` in the app) logs INFO and above.
"""

from __future__ import annotations

import difflib
import importlib.abc
import importlib.machinery
import importlib.util
import itertools
import linecache
import logging
import re
import sys
import types
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from basalt.errors import AppLoadError, BasaltError, FunctionNotFound
from basalt.schema import SchemaDefinition

from .frames import APP_PACKAGE_PREFIX, AppFrame, app_frames
from .functions import Function

#: Function paths longer than this get no "did you mean" (a client chooses the path).
_MAX_SUGGESTED_PATH = 200
_load_counter = itertools.count(1)
_PACKAGE_PREFIX = APP_PACKAGE_PREFIX


class _SourceOnlyLoader(importlib.machinery.SourceFileLoader):
    """Compiles app modules from their source every time.

    The standard loader trusts ``__pycache__`` when the source's mtime (in whole
    seconds) and size are unchanged, so an edit saved within the same second
    that keeps the file's size would load stale code on ``basalt dev`` reloads.
    """

    def get_code(self, fullname: str) -> types.CodeType:
        path = self.get_filename(fullname)
        return compile(self.get_data(path), path, "exec", dont_inherit=True)


class _AppFinder(importlib.abc.MetaPathFinder):
    """Finds the modules of loaded app packages (``_basalt_app_N.*``) from source."""

    def find_spec(
        self, fullname: str, path: Sequence[str] | None, target: types.ModuleType | None = None
    ) -> importlib.machinery.ModuleSpec | None:
        if not fullname.startswith(_PACKAGE_PREFIX) or path is None:
            return None
        name = fullname.rpartition(".")[2]
        for folder in path:
            file = Path(folder) / f"{name}.py"
            if file.is_file():
                loader = _SourceOnlyLoader(fullname, str(file))
                return importlib.util.spec_from_file_location(fullname, file, loader=loader)
            if (Path(folder) / name).is_dir():
                spec = importlib.machinery.ModuleSpec(fullname, None, is_package=True)
                spec.submodule_search_locations = [str(Path(folder) / name)]
                return spec
        return None


def _install_finder() -> None:
    if not any(isinstance(f, _AppFinder) for f in sys.meta_path):
        sys.meta_path.insert(0, _AppFinder())


def canonical_path(path: str) -> str:
    """The canonical ``module:function`` form of a function path.

    ``"messages"`` → ``"messages:default"``; ``"counter.js:get"`` →
    ``"counter:get"`` (clients re-add ``.js`` on reconnect); ``"ai\\saga:x"``
    is not accepted (paths use ``/``).
    """
    module, sep, name = path.partition(":")
    if not sep:
        name = "default"
    if module.endswith(".js") or module.endswith(".py"):
        module = module[:-3]
    return f"{module}:{name}"


@dataclass
class App:
    """A loaded app: functions by path, the schema, the HTTP router and crons."""

    folder: Path | None
    functions: dict[str, Function] = field(default_factory=dict)
    schema: SchemaDefinition | None = None
    http: Any = None
    crons: Any = None

    def function(self, path: str) -> Function:
        """The function at ``path`` (canonicalised), or :class:`FunctionNotFound`."""
        fn = self.functions.get(path) or self.functions.get(canonical_path(path))
        if fn is None:
            module = canonical_path(path).split(":", 1)[0]
            nearby = sorted(
                p for p, f in self.functions.items() if p.startswith(module + ":") and f.is_public
            )
            hints = []
            meant = self._did_you_mean(path)
            if meant:
                hints.append(f"(did you mean {' or '.join(meant)}?)")
            if nearby:
                hints.append(f"(public functions in module {module!r}: {', '.join(nearby)})")
            raise FunctionNotFound(
                f"Could not find function for '{canonical_path(path)}'. "
                "Did you forget to define it in the app folder?",
                detail=" ".join(hints) or None,
            )
        return fn

    def _did_you_mean(self, path: str) -> list[str]:
        """Paths of the app close to ``path``, which is not one: the same path
        spelled with ``.`` or ``/`` for ``:`` (``messages.list``,
        ``messages/list``) or ``.`` for ``/`` (``ai.saga:stream``), or a
        close module or function name (``message:list``). Told only to callers
        who see everything (it names functions), and bounded in cost: a client
        chooses the path."""
        if len(path) > _MAX_SUGGESTED_PATH:
            return []
        functions = self.functions
        module, sep, name = path.partition(":")
        if sep:
            forms = [f"{module.replace('.', '/')}:{name}"]
        else:  # the function name after the last "." or "/"
            cut = max(path.rfind("."), path.rfind("/"))
            forms = [f"{path[:cut].replace('.', '/')}:{path[cut + 1 :]}"] if cut > 0 else []
        found = [f for f in forms if f in functions]
        if not found:
            module, _, name = canonical_path(forms[0] if forms else path).partition(":")
            modules = sorted({p.partition(":")[0] for p in functions})
            for close in difflib.get_close_matches(module, modules, n=3, cutoff=0.6):
                names = [p.partition(":")[2] for p in functions if p.startswith(close + ":")]
                for close_name in difflib.get_close_matches(name, names, n=3, cutoff=0.6):
                    found.append(f"{close}:{close_name}")
        return [f"'{p}'" + ("" if functions[p].is_public else " (internal)") for p in found[:3]]

    @classmethod
    def from_modules(
        cls,
        modules: dict[str, types.ModuleType | dict[str, Any]],
        *,
        schema: SchemaDefinition | None = None,
    ) -> App:
        """An app built from already imported modules (``{"messages": module}``),
        for tests and embedding."""
        app = cls(folder=None, schema=schema)
        for name, module in modules.items():
            namespace = module if isinstance(module, dict) else vars(module)
            app._collect(name, namespace)
        return app

    def _collect(self, module_name: str, namespace: dict[str, Any]) -> None:
        module = namespace.get("__name__")
        for attr, value in namespace.items():
            if isinstance(value, Function) and value.kind != "http_action":
                if module is not None and value.handler.__module__ != module:
                    continue  # imported from another module: it is registered there
                path = f"{module_name}:{attr}"
                if value.path is None:
                    value.path = path
                self.functions[path] = value
        if module_name == "schema":
            schema = namespace.get("schema", namespace.get("default"))
            if schema is not None and not isinstance(schema, SchemaDefinition):
                raise AppLoadError(
                    "schema.py must define `schema = define_schema({...})`, "
                    f"got {type(schema).__name__}"
                )
            self.schema = schema
        elif module_name == "http":
            from .http_router import HttpRouter

            http = namespace.get("http", namespace.get("default"))
            if http is not None and not isinstance(http, HttpRouter):
                raise AppLoadError(
                    f"http.py must define `http = HttpRouter()`, got {type(http).__name__}"
                )
            self.http = http
        elif module_name == "crons":
            self.crons = namespace.get("crons", namespace.get("default"))

    def _check_crons(self) -> None:
        """Check ``crons.py``'s crons against the functions they name (the
        scheduler's ``CronJobs.check_functions``, found by name: the runtime
        does not import the scheduler)."""
        crons = self.crons
        if crons is None:
            return
        check = getattr(crons, "check_functions", None)
        if not callable(check):
            raise AppLoadError(
                "Failed to load the app: crons.py must define `crons = cron_jobs()` "
                f"(from basalt import cron_jobs), got {type(crons).__name__}"
            )
        check(self._lookup)

    def _lookup(self, fn: Function | str) -> Function:
        path = fn if isinstance(fn, str) else fn.path
        if path is None:
            raise FunctionNotFound(
                f"{fn!r} is not part of the loaded app (define it at the top level of a module "
                "in the app folder)"
            )
        return self.function(path)


def _module_files(folder: Path) -> list[tuple[str, Path]]:
    found = []
    for file in sorted(folder.rglob("*.py")):
        rel = file.relative_to(folder)
        if any(part.startswith(("_", ".")) for part in rel.parts):
            continue
        if any(part in {"node_modules", "__pycache__"} for part in rel.parts):
            continue
        found.append(("/".join(rel.with_suffix("").parts), file))
    return found


def _describe_error(exc: BaseException, root: Path, package: str) -> str:
    """A message naming the app file and line where loading failed, in the
    names the developer knows (``messages``, not the package Basalt imported
    the folder as), with a hint for the usual import mistakes."""
    frames = app_frames(exc)
    location = str(frames[0]) if frames else ""
    if isinstance(exc, SyntaxError) and exc.filename:
        location = f"{exc.filename}:{exc.lineno}"
        text = f"{type(exc).__name__}: {exc.msg}"  # the location is said once, in front
    elif isinstance(exc, BasaltError):  # the developer is told everything
        text = f"{exc.code}: {exc.message}" + (f" {exc.detail}" if exc.detail else "")
    else:
        module = type(exc).__module__
        name = type(exc).__qualname__
        if module not in ("builtins", "__main__"):
            name = f"{module}.{name}"
        text = f"{name}: {exc}" if str(exc) else name
    text = _app_names(text, package, root)
    hint = _import_hint(exc, root, frames[0] if frames else None)
    if location and location in text:
        location = ""  # the message already says where (a declaration error)
    return (f"{location}: {text}" if location else text) + hint


def _app_names(text: str, package: str, root: Path) -> str:
    """``text`` with the app package's internal names replaced by the app's:
    ``messages`` for ``_basalt_app_6.messages`` (``ai.saga``, as a relative
    import writes it, for ``_basalt_app_6.ai.saga``), the folder for the
    package itself."""
    text = text.replace(package + ".", "")
    return re.sub(re.escape(package) + r"\b", lambda _: str(root), text)


def _import_hint(exc: BaseException, root: Path, frame: AppFrame | None) -> str:
    """For ``from messages import send`` in an app module (an absolute import of
    another app module): how to write it as the relative import it must be."""
    if not isinstance(exc, ModuleNotFoundError) or not exc.name:
        return ""
    parts = exc.name.split(".")
    target = root.joinpath(*parts)
    if not (target.with_suffix(".py").is_file() or target.is_dir()):
        return ""
    line = linecache.getline(frame.filename, frame.lineno).strip() if frame else ""
    written = re.match(r"from\s+([\w.]+)\s+import\s+(.+)", line)
    if written and written.group(1) == exc.name:
        fix = f"from .{exc.name} import {written.group(2)}"
    elif line.startswith("import "):
        head, _, last = exc.name.rpartition(".")
        fix = f"from .{head} import {last}" if head else f"from . import {last}"
    else:
        fix = f"from .{exc.name} import ..."
    return (
        f" ({exc.name!r} is a module of the app folder: app modules import each other "
        f"with relative imports, `{fix}`)"
    )


def load_app(folder: str | Path) -> App:
    """Import every module of the app folder into a fresh package.

    Raises :class:`AppLoadError` naming the file and line of the first error.
    """
    root = Path(folder).resolve()
    if not root.is_dir():
        raise AppLoadError(f"app folder {str(root)!r} does not exist")
    _install_finder()
    package_name = f"{_PACKAGE_PREFIX}{next(_load_counter)}"
    package = types.ModuleType(package_name)
    package.__path__ = [str(root)]
    package.__package__ = package_name
    sys.modules[package_name] = package
    # `logging.getLogger(__name__).info(...)` in an app module logs (the root
    # logger's WARNING would drop it): its records become the function's log
    # lines (see basalt.runtime.logs).
    logging.getLogger(package_name).setLevel(logging.INFO)
    app = App(folder=root)
    try:
        for module_name, _file in _module_files(root):
            dotted = f"{package_name}." + module_name.replace("/", ".")
            module = importlib.import_module(dotted)
            app._collect(module_name, vars(module))
        app._check_crons()
    except AppLoadError:
        raise
    except BaseException as exc:
        if isinstance(exc, KeyboardInterrupt | SystemExit):
            raise
        raise AppLoadError(
            f"Failed to load the app: {_describe_error(exc, root, package_name)}"
        ) from exc
    return app
