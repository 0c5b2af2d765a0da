"""The reconciler's failure tree: transient failures retry with backoff, permanent ones park."""

from __future__ import annotations

from collections.abc import Sequence

from service.domain.event_status import ORDER_NOT_FOUND


class ReconcileError(Exception):
    """Base of the reconciler's own failures; `reason` is a short, log-safe code."""

    reason = "error"


class TransientError(ReconcileError):
    """Worth another try later: the world may change (the order may be committed soon)."""

    def __init__(self, detail: str) -> None:
        # `last_error` starts with the reason code, so operators can grep and filter on it.
        super().__init__(f"{self.reason}: {detail}")


class OrderNotFound(TransientError):
    """The merchant may not have committed the order yet when WooshPay's event arrives.

    `order_ids` and `linked_ids` (PaymentIntent or Checkout Session ids) are what the event
    names: the order's registration, or a link of one of those ids, heals the event.
    """

    reason = ORDER_NOT_FOUND

    def __init__(
        self, detail: str, *, order_ids: Sequence[str] = (), linked_ids: Sequence[str] = ()
    ) -> None:
        super().__init__(detail)
        self.order_ids = tuple(order_ids)
        self.linked_ids = tuple(linked_ids)

    @property
    def keys(self) -> tuple[str, ...]:
        """Every id the event names, as healing looks events up."""
        return (*self.order_ids, *self.linked_ids)


class PermanentError(ReconcileError):
    """Retrying cannot help: the event is parked as `failed` at once."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason


def describe(error: BaseException) -> str:
    """A short, payload-free description for `last_error` and the logs."""
    if isinstance(error, ReconcileError):
        return str(error) or error.reason
    # Driver messages can quote SQL parameters (event bodies): keep only the exception type and
    # the first line, truncated.
    first_line = str(error).splitlines()[0] if str(error) else ""
    return f"{type(error).__name__}: {first_line[:200]}".rstrip(": ")
