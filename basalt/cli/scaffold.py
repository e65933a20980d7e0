"""``basalt init``: copy the template app into a new project."""

from __future__ import annotations

from pathlib import Path

from basalt.errors import BasaltError

TEMPLATE = Path(__file__).parent / "template"


class ScaffoldError(BasaltError):
    code = "ScaffoldError"


def scaffold(root: Path, app_name: str) -> list[Path]:
    """Create ``root/app_name`` from the template; refuses to overwrite files."""
    app_dir = root / app_name
    sources = sorted(TEMPLATE.glob("*.py"))
    targets = [app_dir / s.name for s in sources]
    existing = [t for t in targets if t.exists()]
    if existing:
        raise ScaffoldError(
            f"{', '.join(str(p) for p in existing)} already exist(s); "
            "choose another folder with `basalt init DIR`"
        )
    app_dir.mkdir(parents=True, exist_ok=True)
    created = []
    for source, target in zip(sources, targets, strict=True):
        target.write_text(source.read_text())
        created.append(target)
    gitignore = root / ".gitignore"
    if not gitignore.exists():
        gitignore.write_text(".basalt/\n__pycache__/\n")
        created.append(gitignore)
    return created
