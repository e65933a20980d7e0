"""``basalt init``: copy the template app into a new project.

The project folder also gets a ``.gitignore`` that keeps the data folder
``basalt dev`` and ``basalt serve`` use by default (``.basalt/``: the database
and the admin key) out of git; an existing ``.gitignore`` gains that line if it
lacks it.
"""

from __future__ import annotations

from pathlib import Path

from basalt.errors import BasaltError
from basalt.server.config import DEFAULT_DATA_DIR

TEMPLATE = Path(__file__).parent / "template"

#: what the project's .gitignore must contain
IGNORED = (f"{DEFAULT_DATA_DIR}/", "__pycache__/")


class ScaffoldError(BasaltError):
    code = "ScaffoldError"


def scaffold(root: Path, app_name: str) -> list[tuple[str, Path]]:
    """Create ``root/app_name`` from the template; refuses to overwrite files.
    Returns what it did (``"created"`` or ``"updated"``) to which file."""
    app_dir = root / app_name
    sources = sorted(TEMPLATE.glob("*.py"))
    targets = [app_dir / s.name for s in sources]
    existing = [t for t in targets if t.exists()]
    if existing:
        raise ScaffoldError(
            f"{', '.join(str(p) for p in existing)} already "
            f"{'exists' if len(existing) == 1 else 'exist'}; "
            "choose another folder with `basalt init DIR`"
        )
    app_dir.mkdir(parents=True, exist_ok=True)
    done = []
    for source, target in zip(sources, targets, strict=True):
        target.write_text(source.read_text())
        done.append(("created", target))
    gitignore = root / ".gitignore"
    existed = gitignore.exists()
    if _ignore(gitignore):
        done.append(("updated" if existed else "created", gitignore))
    return done


def _ignore(gitignore: Path) -> bool:
    """Add the lines of :data:`IGNORED` that ``gitignore`` lacks; whether it changed."""
    text = gitignore.read_text() if gitignore.exists() else ""
    present = {line.strip().strip("/") for line in text.splitlines()}
    missing = [line for line in IGNORED if line.strip("/") not in present]
    if not missing:
        return False
    if text and not text.endswith("\n"):
        text += "\n"
    gitignore.write_text(text + "".join(f"{line}\n" for line in missing))
    return True
