"""The event inbox: every verified event, recorded before the ingress answers 2xx, and where it
stands (see service.domain.event_status).

This package owns every statement on the `events` table; everything else calls its named
operations. One module per family:

- recording: arrivals from the ingress (insert-or-ignore, group commit)
- reading: one event, listings, the metrics summary, the sweeper's pending ids, the schema probe
- processing: the reconciler's transaction (lock the event, the order's other applied events,
  mark it processed or ignored, and the fragment that marks it inside the order's own save)
- failures: counting failed attempts, parking, reopening for a replay
- unmatched: the keys of events waiting for their order, and reopening them once it is there
"""

from service.store.inbox.failures import record_failure, reopen_for_replay
from service.store.inbox.processing import (
    LockedEvent,
    lock_event,
    mark_ignored,
    mark_processed,
    mark_processed_cte,
    mark_processed_params,
    other_applied_bodies,
)
from service.store.inbox.reading import (
    EventRecord,
    get_event,
    inbox_summary,
    list_events,
    pending_event_ids,
    probe_inbox_table,
)
from service.store.inbox.recording import (
    NewEvent,
    first_new,
    record_new_events,
)
from service.store.inbox.unmatched import remember_keys, reopen_unmatched

__all__ = [
    "EventRecord",
    "LockedEvent",
    "NewEvent",
    "first_new",
    "get_event",
    "inbox_summary",
    "list_events",
    "lock_event",
    "mark_ignored",
    "mark_processed",
    "mark_processed_cte",
    "mark_processed_params",
    "other_applied_bodies",
    "pending_event_ids",
    "probe_inbox_table",
    "record_failure",
    "record_new_events",
    "remember_keys",
    "reopen_for_replay",
    "reopen_unmatched",
]
