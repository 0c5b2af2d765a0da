"""The verdict on a pip-audit JSON report (`pip-audit -f json`): clean, vulnerable, or not audited.

pip-audit prints "No known vulnerabilities found" and exits 0 even when it checked nothing: a
package the advisory service does not answer for is only listed as skipped. So `scripts/audit`
reads the report itself, through this module, and says which of three things happened:

- `audit: clean: ...`: every package was checked and none has a known vulnerability (exit 0);
- `audit: VULNERABLE: ...`: a package has a known vulnerability (exit 1);
- `audit: NOT AUDITED: ...`: some or all packages could not be checked, or there is no report at
  all (exit 0, so an offline build still passes, but it never claims a clean result).

Usage: python scripts/audit_verdict.py REPORT.json [--log PIP_AUDIT_STDERR]
Standard library only: it runs before (and without) the project's environment.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import dataclass
from enum import Enum
from pathlib import Path
from typing import Any


class Outcome(Enum):
    CLEAN = "clean"
    VULNERABLE = "VULNERABLE"
    NOT_AUDITED = "NOT AUDITED"


@dataclass(frozen=True)
class Finding:
    """A package with known vulnerabilities: their ids, each with the versions that fix it."""

    name: str
    version: str
    vulnerabilities: tuple[tuple[str, tuple[str, ...]], ...]

    def describe(self) -> str:
        parts = [
            f"{vuln_id} (fixed in {', '.join(fixes)})" if fixes else f"{vuln_id} (no fix yet)"
            for vuln_id, fixes in self.vulnerabilities
        ]
        return f"{self.name} {self.version}: {', '.join(parts)}"


@dataclass(frozen=True)
class Skipped:
    """A package that was not checked, with pip-audit's reason."""

    name: str
    reason: str


@dataclass(frozen=True)
class Verdict:
    outcome: Outcome
    audited: int
    findings: tuple[Finding, ...] = ()
    skipped: tuple[Skipped, ...] = ()
    problem: str | None = None  # why there is no usable report at all

    @property
    def exit_status(self) -> int:
        return 1 if self.outcome is Outcome.VULNERABLE else 0

    def lines(self) -> list[str]:
        """What `scripts/audit` prints: a headline starting `audit: <OUTCOME>:`, then details."""
        if self.problem is not None:
            return [f"audit: NOT AUDITED: {self.problem}; no package was checked"]
        lines: list[str] = []
        if self.findings:
            count = _plural(len(self.findings), "package")
            lines.append(f"audit: VULNERABLE: {count} with known vulnerabilities")
            lines += [f"  {finding.describe()}" for finding in self.findings]
        if self.skipped:
            total = _plural(self.audited + len(self.skipped), "package")
            lines.append(
                f"audit: NOT AUDITED: {len(self.skipped)} of {total} could not be checked for"
                " known vulnerabilities (reasons below); this is not a clean result"
            )
            lines += [f"  {skipped.name}: {skipped.reason}" for skipped in self.skipped]
        elif self.outcome is Outcome.NOT_AUDITED:
            lines.append("audit: NOT AUDITED: the report lists no packages")
        if self.outcome is Outcome.CLEAN:
            count = _plural(self.audited, "audited package")
            lines.append(f"audit: clean: no known vulnerabilities in {count}")
        return lines


def judge(report_text: str, *, failure: str | None = None) -> Verdict:
    """Decide from pip-audit's JSON report; `failure` says why pip-audit may have written none."""
    try:
        report = json.loads(report_text)
    except ValueError:
        report = None
    dependencies = report.get("dependencies") if isinstance(report, dict) else None
    if not isinstance(dependencies, list):
        why = f"pip-audit produced no report ({_shorten(failure)})" if failure else "no report"
        return Verdict(Outcome.NOT_AUDITED, audited=0, problem=why)
    findings: list[Finding] = []
    skipped: list[Skipped] = []
    audited = 0
    for entry in dependencies:
        result = _read_entry(entry)
        if isinstance(result, Skipped):
            skipped.append(result)
            continue
        audited += 1
        if result is not None:
            findings.append(result)
    if findings:
        outcome = Outcome.VULNERABLE
    elif skipped or audited == 0:
        outcome = Outcome.NOT_AUDITED
    else:
        outcome = Outcome.CLEAN
    return Verdict(outcome, audited, tuple(findings), tuple(skipped))


def _read_entry(entry: Any) -> Finding | Skipped | None:
    """One dependency of the report: a Finding, a Skipped package, or None when it is clean."""
    if not isinstance(entry, dict):
        return Skipped("?", "not a dependency entry")
    name = str(entry.get("name", "?"))
    if "skip_reason" in entry:
        return Skipped(name, str(entry["skip_reason"]))
    vulns = entry.get("vulns")
    if not isinstance(vulns, list):
        # Neither checked nor skipped: count it as unchecked rather than clean.
        return Skipped(name, "no audit result in the report")
    if not vulns:
        return None
    return Finding(
        name,
        str(entry.get("version", "?")),
        tuple(
            (str(vuln.get("id", "?")), tuple(str(v) for v in vuln.get("fix_versions") or ()))
            for vuln in vulns
            if isinstance(vuln, dict)
        )
        or (("?", ()),),
    )


def _shorten(text: str, limit: int = 300) -> str:
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _plural(count: int, noun: str) -> str:
    return f"{count} {noun}" if count == 1 else f"{count} {noun}s"


def _last_line(path: Path | None) -> str | None:
    """The last non-blank line of pip-audit's error output: usually the reason it failed."""
    if path is None or not path.is_file():
        return None
    lines = [line.strip() for line in path.read_text(errors="replace").splitlines()]
    return next((line for line in reversed(lines) if line), None)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("report", type=Path, help="pip-audit's JSON report (-f json -o FILE)")
    parser.add_argument("--log", type=Path, help="pip-audit's error output, for the reason")
    args = parser.parse_args(argv)
    text = args.report.read_text(errors="replace") if args.report.is_file() else ""
    verdict = judge(text, failure=_last_line(args.log))
    print("\n".join(verdict.lines()), flush=True)
    return verdict.exit_status


if __name__ == "__main__":
    sys.exit(main())
