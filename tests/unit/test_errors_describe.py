"""`describe()`: the short, payload-free description of a failure kept in `last_error` and logs."""

from __future__ import annotations

import pytest

from workers.errors import (
    OrderNotFound,
    PermanentError,
    ReconcileError,
    TransientError,
    describe,
)

CUSTOMER = "cus_describe_canary"
# What a driver error can look like: a first line, then the statement's parameters.
DRIVER_MESSAGE = (
    "duplicate key value violates unique constraint\n"
    f'DETAIL:  Key (body)=({{"customer": "{CUSTOMER}"}}) already exists.'
)

DESCRIPTIONS: dict[str, tuple[BaseException, str]] = {
    "order not found: its reason code, then the detail": (
        OrderNotFound("no order for payment_intent pi_1"),
        "order_not_found: no order for payment_intent pi_1",
    ),
    "transient: the base reason code": (
        TransientError("lock not available"),
        "error: lock not available",
    ),
    "permanent: its own reason code": (
        PermanentError("invalid_object", "data.object.amount must be an integer"),
        "invalid_object: data.object.amount must be an integer",
    ),
    "reconcile error without a message: the reason code alone": (ReconcileError(), "error"),
    "other error: its type and message": (ValueError("boom"), "ValueError: boom"),
    "other error without a message: its type alone": (
        ConnectionResetError(),
        "ConnectionResetError",
    ),
    "other error: the first line only": (
        RuntimeError(DRIVER_MESSAGE),
        "RuntimeError: duplicate key value violates unique constraint",
    ),
    "other error with an empty first line: its type alone": (
        RuntimeError(f"\n{CUSTOMER}"),
        "RuntimeError",
    ),
    "trailing separators are dropped": (ValueError("boom: "), "ValueError: boom"),
}


@pytest.mark.parametrize(("error", "expected"), DESCRIPTIONS.values(), ids=DESCRIPTIONS)
def test_description(error: BaseException, expected: str) -> None:
    """Each shape of failure is described as the table says."""
    assert describe(error) == expected


def test_driver_message_parameters_are_left_out() -> None:
    """A driver message quoting an event body past its first line leaves the body out."""
    assert CUSTOMER not in describe(RuntimeError(DRIVER_MESSAGE))


def test_long_first_line_is_truncated() -> None:
    """A foreign error's first line is cut to 200 characters after its type."""
    description = describe(OSError("x" * 500 + "\nmore"))
    assert description == "OSError: " + "x" * 200
