"""EventStatus: one definition of an inbox event's status, whose values are the stored strings the
schema, the command line and the metrics use."""

from __future__ import annotations

import click
from sqlalchemy.schema import DefaultClause

from service.cli.ops import events_list
from service.domain.event_status import EventStatus
from service.store.schema import EVENT_STATUSES, events


def test_values_are_the_stored_strings() -> None:
    """The statuses keep the exact strings the inbox rows and JSON output hold, in this order."""
    assert [status.value for status in EventStatus] == [
        "pending",
        "processed",
        "ignored",
        "failed",
    ]


def test_schema_uses_the_statuses() -> None:
    """The schema's status values and the column's default come from EventStatus."""
    assert list(EVENT_STATUSES) == [status.value for status in EventStatus]
    default = events.c.status.server_default
    assert isinstance(default, DefaultClause)
    assert default.arg == EventStatus.PENDING


def test_cli_offers_event_statuses_as_plain_strings() -> None:
    """`events list --status` offers the status values, not the enum's member names."""
    [status_option] = [param for param in events_list.params if param.name == "status"]
    assert isinstance(status_option.type, click.Choice)
    assert list(status_option.type.choices) == [status.value for status in EventStatus]
