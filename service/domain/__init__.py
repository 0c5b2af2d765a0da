"""The pure money path: an order's state projected from the payment events applied to it."""

from service.domain.orders import (
    OrderState,
    OrderStatus,
    OrderTerms,
    canonical_order,
    initial_state,
    project,
)
from service.domain.refunds import RefundState

__all__ = [
    "OrderState",
    "OrderStatus",
    "OrderTerms",
    "RefundState",
    "canonical_order",
    "initial_state",
    "project",
]
