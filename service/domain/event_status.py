"""Where a recorded event stands in its processing: the inbox status operators filter on.

    pending    recorded, waiting for (or between) attempts to apply it
    processed  applied to its order (possibly changing nothing: overtaken or already there)
    ignored    outside the reconciled set of types; acknowledged and kept, never applied
    failed     parked: retrying cannot help or the attempt budget is spent; replayable

Only `pending` events are worked on: a replay puts a `failed` one back to `pending`.
The values are what the order store keeps and what the command line and metrics show.
"""

from __future__ import annotations

import enum
from typing import Final

# The reason (the start of `last_error`) of a failure to find the event's order. Unlike any other
# failure it ends when the world changes: registering the order, or an event linking one of the
# ids it names, reopens it (service.operations.heal).
ORDER_NOT_FOUND: Final = "order_not_found"


class EventStatus(enum.StrEnum):
    # Declared in the order the command line and the metrics list them.
    PENDING = "pending"
    PROCESSED = "processed"
    IGNORED = "ignored"
    FAILED = "failed"
