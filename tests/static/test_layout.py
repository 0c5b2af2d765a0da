"""The README's layout names every module, and the docs name only modules that exist."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("service", "workers")
# Alembic's own files: the layout names the folder, not each migration.
MIGRATIONS = Path("service/store/migrations")
DOCS = (
    "README.md",
    "SECURITY.md",
    "deploy/OPERATIONS.md",
    *(f"docs/{p.name}" for p in (ROOT / "docs").glob("*.md")),
)
INDENT = 2


def modules() -> set[str]:
    """Every Python module of the service and the workers, as a path from the root."""
    found = set()
    for package in PACKAGES:
        for path in (ROOT / package).rglob("*.py"):
            relative = path.relative_to(ROOT)
            if path.name == "__init__.py" or MIGRATIONS in relative.parents:
                continue
            found.add(relative.as_posix())
    return found


def layout_entries() -> set[str]:
    """The paths the README's layout block names: a tree, two spaces per level, folders ending
    in `/`, each entry's name first on its line and a description after it."""
    text = (ROOT / "README.md").read_text()
    section = text.split("## Layout", 1)[1]
    block = section.split("```", 2)[1]
    entries: set[str] = set()
    stack: list[str] = []
    for line in block.splitlines():
        if not line.strip():
            continue
        depth = (len(line) - len(line.lstrip(" "))) // INDENT
        name = line.split()[0]
        del stack[depth:]
        path = "".join(stack) + name
        entries.add(path.rstrip("/"))
        if name.endswith("/"):
            stack.append(name)
    return entries


def test_the_layout_names_every_module() -> None:
    """Each module of service/ and workers/ has its line in the README's layout."""
    missing = sorted(modules() - layout_entries())
    assert not missing, f"modules missing from the README's layout: {missing}"


def test_the_layout_names_only_what_exists() -> None:
    """Every file or folder the layout names exists."""
    stale = sorted(entry for entry in layout_entries() if not (ROOT / entry).exists())
    assert not stale, f"the README's layout names what does not exist: {stale}"


def test_docs_name_only_modules_that_exist() -> None:
    """A module path written in the docs (`service/...py`, `workers/...py`) exists."""
    pattern = re.compile(r"\b((?:service|workers)/[\w/]+\.py)\b")
    stale = sorted(
        f"{doc}: {match}"
        for doc in DOCS
        for match in pattern.findall((ROOT / doc).read_text())
        if not (ROOT / match).exists()
    )
    assert not stale, f"docs name modules that do not exist: {stale}"
