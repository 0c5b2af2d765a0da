"""Currency codes: three letters (ISO 4217), kept upper-case."""

from __future__ import annotations


def normalise_currency(value: object) -> str:
    """The code upper-cased; raise ValueError unless value is three ASCII letters."""
    # WooshPay sends codes upper- or lower-case (`EUR`, `eur`); orders are stored upper-case.
    if not isinstance(value, str) or len(value) != 3 or not value.isascii() or not value.isalpha():
        raise ValueError("currency must be a three-letter code, e.g. EUR")
    return value.upper()
