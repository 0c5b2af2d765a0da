"""Failures the tests force on the service from its PostgreSQL database, with no hook in the code.

Two kinds: a trigger that refuses a write with a plain PL/pgSQL error (SQLSTATE P0001, not an
outage), and a column whose type changes under the service, so that a value comes back as `str`
where the code expects bytes or a number and Python raises a TypeError. Both reach the service's
unexpected-error paths, whose tracebacks pass through frames holding the settings and the event.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

_REFUSE_FUNCTION: Final = """
CREATE FUNCTION refuse_write() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'write refused by a test trigger' USING ERRCODE = 'P0001';
END
$$
"""


@dataclass(frozen=True, slots=True)
class StoreFault:
    """DDL that breaks one step of the service, and what its output shows once it broke."""

    name: str
    statements: tuple[str, ...]
    evidence: str  # printed by the service when the fault struck, whatever the log format

    async def install(self, engine: AsyncEngine) -> None:
        async with engine.begin() as connection:
            for statement in self.statements:
                await connection.execute(text(statement))


# The worker marks the event `processed` in the transaction that applies it.
WORKER_MARK_REFUSED: Final = StoreFault(
    "worker-mark-refused",
    (
        _REFUSE_FUNCTION,
        "CREATE TRIGGER refuse_mark BEFORE UPDATE ON events FOR EACH ROW"
        " WHEN (NEW.status = 'processed') EXECUTE FUNCTION refuse_write()",
    ),
    evidence="reconcile.retry",
)
# The worker reads the body as bytes; as text it raises TypeError right after locking the event.
WORKER_BODY_AS_TEXT: Final = StoreFault(
    "worker-body-as-text",
    ("ALTER TABLE events ALTER COLUMN body TYPE text USING convert_from(body, 'UTF8')",),
    evidence="TypeError",
)
# The ingress records each delivery with one INSERT into the inbox.
INGRESS_INSERT_REFUSED: Final = StoreFault(
    "ingress-insert-refused",
    (
        _REFUSE_FUNCTION,
        "CREATE TRIGGER refuse_insert BEFORE INSERT ON events FOR EACH ROW"
        " EXECUTE FUNCTION refuse_write()",
    ),
    evidence="inbox.batch_failed",
)
# /metrics divides the oldest pending event's `received_ms`; as text that raises TypeError.
METRICS_RECEIVED_AS_TEXT: Final = StoreFault(
    "metrics-received-as-text",
    ("ALTER TABLE events ALTER COLUMN received_ms TYPE text",),
    evidence="TypeError",
)


async def event_outcome(engine: AsyncEngine, event_id: str) -> tuple[str, int]:
    """The event's status and attempts, read without touching columns a fault may retype."""
    query = text("SELECT status, attempts FROM events WHERE event_id = :event_id")
    async with engine.connect() as connection:
        row = (await connection.execute(query, {"event_id": event_id})).one()
    return str(row.status), int(row.attempts)
