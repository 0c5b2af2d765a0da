"""WooshPay timestamps: usually milliseconds, sometimes seconds (docs/wooshpay.md#timestamps)."""

from __future__ import annotations

# Values above 10^12 are milliseconds: 10^12 seconds is the year 33658, while 10^12 ms is 2001.
MILLISECONDS_THRESHOLD = 10**12


def to_milliseconds(value: int) -> int:
    """Normalise a WooshPay timestamp given in seconds or milliseconds to milliseconds."""
    return value if value > MILLISECONDS_THRESHOLD else value * 1000


def to_seconds(value: int) -> float:
    """Normalise a WooshPay timestamp given in seconds or milliseconds to seconds."""
    return value / 1000 if value > MILLISECONDS_THRESHOLD else float(value)
