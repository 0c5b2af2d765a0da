"""Watching everything the suite's processes print for canaries (tests.support.leaks).

The helpers that start service processes register their output here: a file a process writes
(`watch_file`) or output captured in memory (`watch_output`). After each test phase
tests/conftest.py calls `phase_findings`, which searches what was written since the last look
and the phase's captured stdout, stderr and log, and fails the test that leaked. Files are read
as they grow, so output of a process that outlives one test is charged to the test during which
it was written; `final_findings` reads what is left when the session ends.
"""

from __future__ import annotations

import subprocess
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Final

import pytest

from tests.support.leaks import describe_leaks, locate_leaks, redact

SECTION_TITLE: Final = "leaked canaries"


@dataclass
class _WatchedFile:
    path: Path
    process: subprocess.Popen[bytes] | None
    offset: int = 0  # bytes already searched: always the end of a complete line
    lines: int = 0  # lines already searched


_lock = threading.Lock()  # processes are started from worker threads too
_files: list[_WatchedFile] = []
_outputs: list[tuple[str, str]] = []


def watch_file(path: Path, process: subprocess.Popen[bytes] | None = None) -> None:
    """Search `path` as it grows; once `process` has exited and its output is read, stop."""
    with _lock:
        _files.append(_WatchedFile(path, process))


def watch_output(where: str, text: str) -> None:
    """Search `text` (a finished process's captured output) at the end of the test phase."""
    with _lock:
        _outputs.append((where, text))


def _read_new(watched: _WatchedFile, *, final: bool) -> tuple[str, bool]:
    """The complete lines added since the last look, and whether the file is done with."""
    # Asked before reading: a process that had exited has written everything it will write.
    exited = watched.process is not None and watched.process.poll() is not None
    done = final or exited
    try:
        with watched.path.open("rb") as file:
            file.seek(watched.offset)
            data = file.read()
    except FileNotFoundError:
        return "", True
    if not done:
        # A line still being written is searched once it is complete.
        data = data[: data.rfind(b"\n") + 1]
    watched.offset += len(data)
    return data.decode(errors="replace"), done


def _search_files(*, final: bool) -> list[str]:
    findings: list[str] = []
    with _lock:
        for watched in list(_files):
            text, done = _read_new(watched, final=final)
            leaks = locate_leaks(text, first_line=watched.lines + 1)
            findings.extend(describe_leaks(leaks, str(watched.path)))
            watched.lines += text.count("\n")
            if done:
                _files.remove(watched)
    return findings


def _search_outputs() -> list[str]:
    with _lock:
        outputs, _outputs[:] = list(_outputs), []
    return [
        finding for where, text in outputs for finding in describe_leaks(locate_leaks(text), where)
    ]


def new_findings() -> list[str]:
    """Leaks in what the watched processes printed since the last look."""
    return [*_search_outputs(), *_search_files(final=False)]


def phase_findings(report: pytest.TestReport) -> list[str]:
    """Leaks in the phase's captured output and in process output written since the last look."""
    findings: list[str] = []
    for title, content in report.sections:
        # "Captured stdout call", "Captured log setup", ...: each phase searches its own.
        if title.startswith("Captured ") and title.endswith(f" {report.when}"):
            findings.extend(describe_leaks(locate_leaks(content), title.lower()))
    return [*findings, *new_findings()]


def final_findings() -> list[str]:
    """Leaks in whatever the processes wrote after the last test phase."""
    return [*_search_outputs(), *_search_files(final=True)]


def redact_report(report: pytest.TestReport) -> None:
    """Blank the canaries out of what pytest shows of a phase: its captured output and, for a
    failure, its traceback (which shows the test's arguments, settings among them)."""
    report.sections = [(title, redact(content)) for title, content in report.sections]
    if report.failed and report.longrepr is not None:
        shown = str(report.longrepr)
        if locate_leaks(shown):
            report.longrepr = redact(shown)


def fail_report(report: pytest.TestReport, findings: list[str]) -> None:
    """Make the phase fail, naming every leak (an earlier failure keeps its own report)."""
    redact_report(report)
    text = "\n".join(findings)
    if report.failed:
        report.sections.append((SECTION_TITLE, text))
        return
    report.outcome = "failed"
    report.longrepr = f"output leaked values that must never be printed:\n{text}"
