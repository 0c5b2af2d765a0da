"""The ingress's group-commit decisions, without Redis or a database: how waiting requests form
batches, which request of a committed batch owns each new row, and which ids get a job."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from service.domain.event_status import EventStatus
from service.ingress.inbox_writer import (
    MAX_BATCH,
    ids_to_enqueue,
    next_batch,
    outcomes,
)
from service.store.inbox import NewEvent
from service.wooshpay.events import WebhookEvent

PENDING = EventStatus.PENDING
IGNORED = EventStatus.IGNORED


def item(event_id: str, status: EventStatus = PENDING) -> NewEvent:
    event_type = "payment_intent.succeeded" if status == PENDING else "customer.created"
    event = WebhookEvent(event_id, event_type, created_ms=1, livemode=False, object={})
    return NewEvent(event, b"{}", status)


def test_a_batch_takes_the_oldest_requests_up_to_the_limit() -> None:
    """Past MAX_BATCH waiting requests, the batch is the oldest MAX_BATCH in arrival order and
    the rest wait, in order, for the next batch."""
    waiting = list(range(MAX_BATCH + 10))
    batch, rest = next_batch(waiting)
    assert batch == list(range(MAX_BATCH))
    assert rest == list(range(MAX_BATCH, MAX_BATCH + 10))


def test_fewer_waiting_requests_than_the_limit_form_one_batch() -> None:
    """Requests under the limit all go into one batch, leaving none waiting."""
    assert next_batch(["a", "b", "c"]) == (["a", "b", "c"], [])


@given(count=st.integers(min_value=0, max_value=1000), limit=st.integers(1, 300))
def test_successive_batches_cover_every_request_once_in_order(count: int, limit: int) -> None:
    """Taking batches until none wait yields every request once, in arrival order, in batches
    of at most `limit`, all full but the last."""
    waiting = list(range(count))
    batches = []
    for _ in range(count):  # a split that takes nothing must fail here, not loop for ever
        if not waiting:
            break
        batch, waiting = next_batch(waiting, limit)
        batches.append(batch)
    assert waiting == []
    assert [request for batch in batches for request in batch] == list(range(count))
    assert all(len(batch) == limit for batch in batches[:-1])
    assert all(0 < len(batch) <= limit for batch in batches)


def test_only_new_pending_events_are_enqueued_once_each_in_arrival_order() -> None:
    """Ids whose row the batch created and that are pending get a job, once each, in the order
    they arrived; known ids and ignored events get none."""
    batch = [
        item("evt_c"),
        item("evt_known"),
        item("evt_a"),
        item("evt_c"),
        item("evt_ignored", IGNORED),
        item("evt_b"),
    ]
    new_ids = {"evt_a", "evt_b", "evt_c", "evt_ignored"}
    assert ids_to_enqueue(batch, new_ids) == ["evt_c", "evt_a", "evt_b"]


def test_a_batch_of_known_events_enqueues_nothing() -> None:
    """When the batch created no row, no job is enqueued."""
    assert ids_to_enqueue([item("evt_1"), item("evt_2")], set()) == []


def test_the_first_request_of_a_new_id_owns_the_row_and_repeats_are_duplicates() -> None:
    """Within a batch, the first request of each new id is answered as new, later requests of
    the same id and requests of ids already recorded as duplicates."""
    batch = [item("evt_1"), item("evt_known"), item("evt_1"), item("evt_2"), item("evt_known")]
    answers = outcomes(batch, {"evt_1", "evt_2"})
    assert [answer.is_new for answer in answers] == [True, False, False, True, False]


@given(
    ids=st.lists(st.sampled_from(["evt_a", "evt_b", "evt_c", "evt_d"]), max_size=20),
    new=st.sets(st.sampled_from(["evt_a", "evt_b", "evt_c", "evt_d"])),
)
def test_each_new_id_has_exactly_one_owner_its_first_request(ids: list[str], new: set[str]) -> None:
    """For any batch, each new id present is answered as new exactly once, at its first
    request, and no other request is."""
    answers = outcomes([item(event_id) for event_id in ids], new)
    owned_at = [index for index, answer in enumerate(answers) if answer.is_new]
    assert owned_at == sorted(ids.index(event_id) for event_id in new & set(ids))
