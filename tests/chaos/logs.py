"""What the service processes complained about: warning and error log lines, counted by event.

The processes run with LOG_LEVEL=WARNING and JSON logs, so every line is a warning or worse;
lines that are not JSON (a traceback printed by the interpreter itself) are counted as `raw`.
Every line is also searched for the canaries (tests.support.leaks): a secret, a password or
customer data in a log is a failure of the run.
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from tests.support.leaks import describe_leaks, locate_leaks

RAW_PREFIX_CHARS = 100


@dataclass
class LogSummary:
    # (role, level, event) -> lines
    lines: Counter[tuple[str, str, str]] = field(default_factory=Counter)
    leaks: list[str] = field(default_factory=list)  # which canary, in which file and line

    def errors(self) -> int:
        return sum(n for (_, level, _), n in self.lines.items() if level in ("error", "critical"))

    def top(self, count: int) -> list[str]:
        return [
            f"{n:6d}  {role:<8} {level:<8} {event}"
            for (role, level, event), n in self.lines.most_common(count)
        ]


def _classify(line: str) -> tuple[str, str]:
    try:
        record = json.loads(line)
    except ValueError:
        return "raw", line.strip()[:RAW_PREFIX_CHARS]
    if not isinstance(record, dict):
        return "raw", line.strip()[:RAW_PREFIX_CHARS]
    event = str(record.get("event", "?"))
    # arq's lines are %-formatted text with timings; keep their stable part.
    if record.get("logger", "").startswith("arq"):
        event = "arq: " + " ".join(word for word in event.split() if not word[:1].isdigit())[:80]
    return str(record.get("level", "?")), event


def summarise_logs(log_dir: Path) -> LogSummary:
    summary = LogSummary()
    if not log_dir.is_dir():
        return summary
    for path in sorted(log_dir.glob("*.log")):
        role = path.name.split("-", 1)[0]
        text = path.read_text(errors="replace")
        summary.leaks.extend(describe_leaks(locate_leaks(text), str(path)))
        for line in text.splitlines():
            if line.strip():
                level, event = _classify(line)
                summary.lines[(role, level, event)] += 1
    return summary
