"""The documentation stays inside the repository and true to the code.

Three kinds of check: no file points at notes outside the repository; every reference to a
document (`docs/arq.md#polling`, `deploy/OPERATIONS.md §3`, a relative Markdown link) names a
file and heading that exist; and the numbers operators act on (poll interval, job timeout, body
limit, retry cap, ports, ...) are read from the code's own constants and must appear in the docs.
"""

from __future__ import annotations

import inspect
import re
import subprocess
from collections.abc import Iterator
from functools import cache
from pathlib import Path
from typing import Final

import pytest

from service.cli.common import DEFAULT_PORT
from service.cli.main import DEFAULT_WORKER_METRICS_PORT
from service.ingress.app import POSTGRES_CONCURRENT_BATCHES, WEBHOOK_PATH
from service.settings import Settings
from service.store.engine import create_engine
from service.timeouts import (
    BODY_TIMEOUT_S,
    JOB_COMPLETION_WAIT_S,
    JOB_TIMEOUT_S,
    POLL_DELAY_S,
    STALE_AFTER_S,
)
from workers.main import MAX_JOBS, QUEUE_READ_LIMIT
from workers.retries import MAX_DELAY_S

REPO: Final = Path(__file__).resolve().parents[2]
THIS_FILE: Final = Path(__file__).resolve().relative_to(REPO).as_posix()
# Folders that are never the project's own text, for a tree without git.
UNTRACKED_DIRS: Final = frozenset(
    {".git", ".venv", ".mypy_cache", ".ruff_cache", ".pytest_cache", ".hypothesis", "__pycache__"}
)

# Pointers at notes kept outside the repository, which a reader of the repository cannot follow.
OUTSIDE_NOTES: Final = re.compile(
    r"\.\./shared\b|\bshared/[\w.-]*notes|\b(?:arq|wooshpay)[- ]notes\b", re.IGNORECASE
)
# `docs/arq.md`, `deploy/OPERATIONS.md#scale-up`, `docs/wooshpay.md §2` written from the root.
DOC_REFERENCE: Final = re.compile(
    r"(?<![\w./-])((?:docs|deploy)/[\w./-]*?\.md)(?:#([\w-]+)|[ \t]*§[ \t]*(\d+(?:\.\d+)*))?"
)
MARKDOWN_LINK: Final = re.compile(r"\[[^\]\n]*\]\(([^)\s]+)\)")
FENCED_BLOCK: Final = re.compile(r"^```.*?^```", re.DOTALL | re.MULTILINE)
HEADING: Final = re.compile(r"^#{1,6}[ \t]+(.+?)[ \t#]*$", re.MULTILINE)
NUMBERED_HEADING: Final = re.compile(r"^(\d+(?:\.\d+)*)\.?\s")
# The Markdown files whose relative links must resolve.
LINKED_DOCS: Final = ("README.md", "SECURITY.md", "docs/*.md", "deploy/**/*.md")


@cache
def repo_files() -> tuple[str, ...]:
    """Every file of the project: tracked ones, and new ones not ignored (not yet committed)."""
    try:
        listed = subprocess.run(
            ["git", "ls-files", "--cached", "--others", "--exclude-standard", "-z"],
            cwd=REPO,
            capture_output=True,
            check=True,
        ).stdout.decode()
        return tuple(sorted(name for name in listed.split("\0") if (REPO / name).is_file()))
    except (OSError, subprocess.CalledProcessError):
        # No git (an exported tree): every file outside tool and cache folders.
        return tuple(
            sorted(
                path.relative_to(REPO).as_posix()
                for path in REPO.rglob("*")
                if path.is_file() and not UNTRACKED_DIRS.intersection(path.parts)
            )
        )


def read_text(name: str) -> str | None:
    """The file's text, or None for a binary file."""
    data = (REPO / name).read_bytes()
    if b"\0" in data:
        return None
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        return None


def text_files() -> Iterator[tuple[str, str]]:
    for name in repo_files():
        if name == THIS_FILE:
            continue  # its patterns would match themselves
        text = read_text(name)
        if text is not None:
            yield name, text


def github_slugs(markdown: str) -> set[str]:
    """The anchors GitHub gives a document's headings (lower case, punctuation dropped, spaces
    to hyphens, `-1`, `-2`... for repeats)."""
    slugs: set[str] = set()
    for heading in HEADING.findall(FENCED_BLOCK.sub("", markdown)):
        base = re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")
        slug, repeat = base, 0
        while slug in slugs:
            repeat += 1
            slug = f"{base}-{repeat}"
        slugs.add(slug)
    return slugs


def section_numbers(markdown: str) -> set[str]:
    """`2`, `2.1`, ... for headings that start with a section number."""
    numbers = set()
    for heading in HEADING.findall(FENCED_BLOCK.sub("", markdown)):
        found = NUMBERED_HEADING.match(heading)
        if found:
            numbers.add(found.group(1))
    return numbers


def broken_target(path: Path, anchor: str | None, section: str | None) -> str | None:
    """Why a reference to `path` (and its anchor or section) does not resolve; None when it does."""
    if not path.exists():
        return "no such file"
    if path.suffix != ".md" or not path.is_file():
        return None
    markdown = path.read_text(encoding="utf-8")
    if anchor and anchor.lower() not in github_slugs(markdown):
        return f"no heading #{anchor}"
    if section and section not in section_numbers(markdown):
        return f"no section §{section}"
    return None


def linked_docs() -> list[str]:
    names = {path.relative_to(REPO).as_posix() for g in LINKED_DOCS for path in REPO.glob(g)}
    return sorted(names & set(repo_files()))


def test_no_file_points_at_notes_outside_the_repository() -> None:
    """No project file refers to notes kept outside the repository (a sibling folder, `*-notes`)."""
    offenders = [
        f"{name}:{text.count(chr(10), 0, found.start()) + 1}: {found.group(0)}"
        for name, text in text_files()
        for found in OUTSIDE_NOTES.finditer(text)
    ]
    assert offenders == []


def test_outside_notes_pattern_catches_the_old_pointers() -> None:
    """The pattern above recognises the kinds of pointer the project used to carry."""
    # Built from parts, so this file does not itself point outside the repository.
    sibling = "../" + "shared/"
    old = [f"see `{sibling}arq-notes.md`", "(arq-notes §2.1)", "see the arq notes in the README"]
    assert all(OUTSIDE_NOTES.search(line) for line in old)
    assert not OUTSIDE_NOTES.search("read from the shared stores by every replica")


def test_document_references_resolve() -> None:
    """Every `docs/...md` or `deploy/...md` reference, with its #anchor or §N, exists."""
    broken = []
    for name, text in text_files():
        for found in DOC_REFERENCE.finditer(text):
            target, anchor, section = found.groups()
            why = broken_target(REPO / target, anchor, section)
            if why:
                broken.append(f"{name}: {found.group(0)} ({why})")
    assert broken == []


@pytest.mark.parametrize("name", linked_docs())
def test_relative_markdown_links_resolve(name: str) -> None:
    """Relative links in the project's Markdown point at files and headings that exist."""
    source = REPO / name
    text = FENCED_BLOCK.sub("", source.read_text(encoding="utf-8"))
    broken = []
    for link in MARKDOWN_LINK.findall(text):
        if re.match(r"[a-z][a-z0-9+.-]*:", link, re.IGNORECASE):
            continue  # https:, mailto:: not ours to check offline
        target, _, anchor = link.partition("#")
        path = source if not target else (source.parent / target).resolve()
        if REPO not in path.parents and path != REPO:
            broken.append(f"{link} (outside the repository)")
            continue
        why = broken_target(path, anchor or None, None)
        if why:
            broken.append(f"{link} ({why})")
    assert broken == []


def test_anchor_check_can_fail() -> None:
    """A heading's anchor is found, and a made-up one is reported, so the checks above can fail."""
    arq = REPO / "docs" / "arq.md"
    assert broken_target(arq, "job-id-dedup", None) is None
    assert broken_target(arq, "no-such-heading", None) == "no heading #no-such-heading"
    assert broken_target(REPO / "docs" / "missing.md", None, None) == "no such file"


def test_github_slugs_follow_githubs_rules() -> None:
    """Headings get GitHub's anchors: punctuation dropped, spaces to hyphens, repeats numbered."""
    markdown = "# Failed events: find, fix, replay\n## Answers 503 (database)\n## A\n## A\n"
    assert github_slugs(markdown) == {
        "failed-events-find-fix-replay",
        "answers-503-database",
        "a",
        "a-1",
    }


def _defaults() -> Settings:
    return Settings.from_env({}, require_secrets=False)


def _pool_connections() -> int:
    pool_size = int(inspect.signature(create_engine).parameters["pool_size"].default)
    return pool_size * 2  # max_overflow is the pool size again


POLL_MS: Final = round(POLL_DELAY_S * 1000)

# (document, text it must contain): each number is the code's own constant.
DOC_FACTS: Final = [
    ("deploy/OPERATIONS.md", f"polls the queue every {POLL_MS} ms"),
    ("README.md", f"workers poll every {POLL_MS} ms"),
    ("docs/arq.md", f"a poll every {POLL_MS} ms"),
    ("deploy/OPERATIONS.md", f"No job runs longer than {JOB_TIMEOUT_S} s"),
    ("deploy/OPERATIONS.md", f"in-progress timeout ({JOB_TIMEOUT_S} + 10 s)"),
    ("deploy/OPERATIONS.md", f"running jobs get up to {JOB_COMPLETION_WAIT_S} s to finish"),
    ("deploy/OPERATIONS.md", f"up to {MAX_JOBS} jobs at once"),
    ("deploy/OPERATIONS.md", f"at most {QUEUE_READ_LIMIT} queue entries per poll"),
    ("deploy/OPERATIONS.md", f"at most {QUEUE_READ_LIMIT // MAX_JOBS} worker processes"),
    ("deploy/OPERATIONS.md", f"up to {POSTGRES_CONCURRENT_BATCHES} batches at once"),
    ("deploy/OPERATIONS.md", f"the body took over {BODY_TIMEOUT_S:g} s to arrive"),
    ("deploy/OPERATIONS.md", f"up to {_pool_connections()} connections"),
    ("deploy/OPERATIONS.md", f"poll cycle for {STALE_AFTER_S:g} s"),
    ("deploy/OPERATIONS.md", f"{DEFAULT_PORT}: `POST {WEBHOOK_PATH}`"),
    ("deploy/OPERATIONS.md", f"{DEFAULT_WORKER_METRICS_PORT}: `GET /healthz`"),
    ("deploy/OPERATIONS.md", f"capped at {MAX_DELAY_S:g} s"),
    ("README.md", f"capped at {MAX_DELAY_S:g} s"),
    ("README.md", f"`{_defaults().max_body_bytes}`"),
    ("SECURITY.md", f"`MAX_BODY_BYTES` ({_defaults().max_body_bytes / 2**20:g} MiB)"),
    ("SECURITY.md", f"`WEBHOOK_TOLERANCE_SECONDS` ({_defaults().tolerance_s} s)"),
    ("deploy/OPERATIONS.md", f"`RETRY_MAX_ATTEMPTS` (default {_defaults().retry_max_attempts})"),
]


@pytest.mark.parametrize(("document", "phrase"), DOC_FACTS)
def test_documented_number_matches_the_code(document: str, phrase: str) -> None:
    """The document states the number the code uses (line breaks count as spaces)."""
    text = " ".join((REPO / document).read_text(encoding="utf-8").split())
    assert phrase in text
