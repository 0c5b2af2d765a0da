"""The audit's verdict on pip-audit's JSON report: clean, VULNERABLE, or NOT AUDITED.

The reports below have pip-audit 2.10.0's JSON shape (`pip-audit -f json`, written by
`pip_audit/_format/json.py`). UNREACHABLE is trimmed from a real run of `scripts/audit` on a
machine whose package index serves packages but not PyPI's per-release JSON API. VULNERABLE lists
the advisories published for requests 2.19.0, as pip-audit reports them when the service answers.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any, Final

import pytest

from scripts.audit_verdict import Outcome, judge

REPO: Final = Path(__file__).resolve().parents[2]
SCRIPT: Final = REPO / "scripts" / "audit_verdict.py"

UNREACHABLE: Final[dict[str, Any]] = {
    "dependencies": [
        {
            "name": "aiohttp",
            "skip_reason": (
                "Dependency not found on PyPI and could not be audited: aiohttp (3.14.5)"
            ),
        },
        {
            "name": "arq",
            "skip_reason": "Dependency not found on PyPI and could not be audited: arq (0.28.0)",
        },
    ],
    "fixes": [],
}
CLEAN: Final[dict[str, Any]] = {
    "dependencies": [
        {"name": "aiohttp", "version": "3.14.5", "vulns": []},
        {"name": "arq", "version": "0.28.0", "vulns": []},
    ],
    "fixes": [],
}
VULNERABLE: Final[dict[str, Any]] = {
    "dependencies": [
        {"name": "idna", "version": "3.20", "vulns": []},
        {
            "name": "requests",
            "version": "2.19.0",
            "vulns": [
                {
                    "id": "PYSEC-2018-28",
                    "fix_versions": ["2.20.0"],
                    "aliases": ["CVE-2018-18074", "GHSA-x84v-xcm2-53pg"],
                    "description": "The Requests package through 2.19.1 sends an HTTP "
                    "Authorization header to an http URI upon receiving a same-hostname "
                    "https-to-http redirect.",
                },
                {
                    "id": "GHSA-9wx4-h78v-vm56",
                    "fix_versions": ["2.32.0"],
                    "aliases": ["CVE-2024-35195"],
                    "description": "Requests Session object does not verify requests after "
                    "making first request with verify=False.",
                },
            ],
        },
    ],
    "fixes": [],
}


def _with(report: dict[str, Any], *entries: dict[str, Any]) -> str:
    return json.dumps({**report, "dependencies": [*report["dependencies"], *entries]})


def test_every_package_checked_and_none_vulnerable_is_clean() -> None:
    """A report whose every package was checked and has no advisory is clean, exit 0."""
    verdict = judge(json.dumps(CLEAN))
    assert verdict.outcome is Outcome.CLEAN
    assert verdict.exit_status == 0
    assert verdict.lines() == ["audit: clean: no known vulnerabilities in 2 audited packages"]


def test_unreachable_service_is_not_audited_and_does_not_pass_for_clean() -> None:
    """Every package skipped (the service did not answer) reads NOT AUDITED, never clean."""
    verdict = judge(json.dumps(UNREACHABLE))
    lines = verdict.lines()
    assert verdict.outcome is Outcome.NOT_AUDITED
    assert verdict.exit_status == 0
    assert lines[0].startswith("audit: NOT AUDITED: 2 of 2 packages could not be checked")
    assert any(line.startswith("  arq: Dependency not found on PyPI") for line in lines)
    assert not any(line.startswith("audit: clean") or "No known" in line for line in lines)


def test_some_packages_skipped_is_not_audited() -> None:
    """One package checked clean and one skipped is still NOT AUDITED, naming the skipped one."""
    verdict = judge(_with(CLEAN, UNREACHABLE["dependencies"][0]))
    assert verdict.outcome is Outcome.NOT_AUDITED
    assert verdict.lines()[0].startswith("audit: NOT AUDITED: 1 of 3 packages")
    assert "  aiohttp: Dependency not found on PyPI" in verdict.lines()[1]


def test_a_known_vulnerability_fails() -> None:
    """A package with advisories is VULNERABLE, exit 1, listing each id and its fixed version."""
    verdict = judge(json.dumps(VULNERABLE))
    assert verdict.outcome is Outcome.VULNERABLE
    assert verdict.exit_status == 1
    assert verdict.lines() == [
        "audit: VULNERABLE: 1 package with known vulnerabilities",
        "  requests 2.19.0: PYSEC-2018-28 (fixed in 2.20.0), GHSA-9wx4-h78v-vm56 (fixed in 2.32.0)",
    ]


def test_a_vulnerability_fails_even_when_other_packages_were_skipped() -> None:
    """A finding fails the audit whatever else could not be checked; both are reported."""
    verdict = judge(_with(VULNERABLE, UNREACHABLE["dependencies"][1]))
    assert verdict.outcome is Outcome.VULNERABLE
    assert verdict.exit_status == 1
    headlines = [line for line in verdict.lines() if line.startswith("audit:")]
    assert headlines[0].startswith("audit: VULNERABLE:")
    assert headlines[1].startswith("audit: NOT AUDITED: 1 of 3 packages")


@pytest.mark.parametrize("text", ["", "Traceback (most recent call last):", "[]", '{"fixes": []}'])
def test_no_usable_report_is_not_audited(text: str) -> None:
    """No report (pip-audit crashed before writing it) is NOT AUDITED, with pip-audit's reason."""
    verdict = judge(text, failure="requests.exceptions.ConnectionError: Failed to resolve")
    assert verdict.outcome is Outcome.NOT_AUDITED
    assert verdict.exit_status == 0
    assert verdict.lines() == [
        "audit: NOT AUDITED: pip-audit produced no report (requests.exceptions.ConnectionError:"
        " Failed to resolve); no package was checked"
    ]


def test_an_empty_package_list_is_not_audited() -> None:
    """A report that lists no packages checked nothing, so it is not a clean result."""
    verdict = judge(json.dumps({"dependencies": [], "fixes": []}))
    assert verdict.outcome is Outcome.NOT_AUDITED
    assert verdict.lines() == ["audit: NOT AUDITED: the report lists no packages"]


def test_an_entry_without_a_result_counts_as_unchecked() -> None:
    """A package entry with neither `vulns` nor `skip_reason` is not taken as clean."""
    verdict = judge(_with(CLEAN, {"name": "odd", "version": "1.0"}))
    assert verdict.outcome is Outcome.NOT_AUDITED
    assert "  odd: no audit result in the report" in verdict.lines()


@pytest.mark.parametrize(
    ("report", "status", "headline"),
    [
        (VULNERABLE, 1, "audit: VULNERABLE: "),
        (UNREACHABLE, 0, "audit: NOT AUDITED: "),
        (CLEAN, 0, "audit: clean: "),
    ],
)
def test_command_line_prints_the_verdict_and_exits_with_its_status(
    tmp_path: Path, report: dict[str, Any], status: int, headline: str
) -> None:
    """The command prints the verdict's headline and exits 1 only when vulnerable."""
    path = tmp_path / "report.json"
    path.write_text(json.dumps(report))
    done = subprocess.run(
        [sys.executable, str(SCRIPT), str(path)], capture_output=True, text=True, check=False
    )
    assert done.returncode == status
    assert done.stdout.startswith(headline)


def test_command_line_without_a_report_reads_the_reason_from_the_log(tmp_path: Path) -> None:
    """An empty report file and pip-audit's error output give NOT AUDITED with its last line."""
    report = tmp_path / "report.json"
    report.write_text("")
    log = tmp_path / "errors.txt"
    log.write_text("Traceback (most recent call last):\n  ...\nConnectionError: no route\n\n")
    done = subprocess.run(
        [sys.executable, str(SCRIPT), str(report), "--log", str(log)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0
    assert done.stdout == (
        "audit: NOT AUDITED: pip-audit produced no report (ConnectionError: no route);"
        " no package was checked\n"
    )
