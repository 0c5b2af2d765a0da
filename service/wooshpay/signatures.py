"""Verify WooshPay webhook signatures.

WooshPay copies Stripe's scheme: the `Wooshpay-Signature` header reads
`t=<unix time>,v1=<hex>[,v1=<hex>...]`, and each `v1` is the lowercase hex HMAC-SHA256 of
`<t>.<raw body>` keyed with an endpoint secret (the whole `whsec_...` text, as UTF-8); what
WooshPay documents and where it is silent: docs/wooshpay.md#signature.

Everything an attacker controls (the header, the body) fails with a `SignatureError` carrying a
machine-friendly `code`, so the HTTP layer can answer 400 without a catch-all. Problems in our
own configuration (no secrets, a blank secret) raise a plain `ValueError`/`TypeError` instead:
they are our bug, so they should surface as a 500 and make WooshPay retry rather than look like
a forged request.
"""

from __future__ import annotations

import hmac
import re
from collections.abc import Sequence
from dataclasses import dataclass

from service.wooshpay.timestamps import to_seconds

# The request header carrying the signature (HTTP header names are case-insensitive).
SIGNATURE_HEADER = "Wooshpay-Signature"

MISSING_SIGNATURE = "missing_signature"
MALFORMED_SIGNATURE = "malformed_signature"
TIMESTAMP_OUTSIDE_TOLERANCE = "timestamp_outside_tolerance"
SIGNATURE_MISMATCH = "signature_mismatch"

# A genuine header is ~80 characters per signature; the cap bounds the work garbage can cause.
MAX_HEADER_LENGTH = 4096

# Real timestamps have 10 (seconds) or 13 (milliseconds) digits. Capping the digit count keeps
# int() and the float conversion in to_seconds() cheap and free of OverflowError for garbage
# like t=10**40, which is reported as malformed.
MAX_TIMESTAMP_DIGITS = 20

# [0-9] rather than \d: str.isdigit()/int() accept non-ASCII digits such as "١٢٣", and the
# signed payload must use the t text byte for byte. fullmatch() so a trailing "\n" can't slip by.
_TIMESTAMP_RE = re.compile(rf"[0-9]{{1,{MAX_TIMESTAMP_DIGITS}}}")
_SIGNATURE_RE = re.compile(r"[0-9a-fA-F]{64}")  # a SHA-256 digest, any hex case

# HTTP optional whitespace; tolerated around commas and "=".
_OWS = " \t"


class SignatureError(ValueError):
    """A webhook's signature header is absent, malformed, stale or does not match.

    `reason` is short and safe to log or return: it never contains the secret, the expected
    signature, the header or the body.
    """

    code: str
    reason: str

    def __init__(self, code: str, reason: str) -> None:
        super().__init__(reason)
        self.code = code
        self.reason = reason

    def __reduce__(self) -> tuple[type[SignatureError], tuple[str, str]]:
        # The default pickling replays self.args == (reason,), which doesn't fit __init__.
        return (type(self), (self.code, self.reason))


@dataclass(frozen=True, slots=True)
class _ParsedHeader:
    timestamp_text: str  # exactly as sent: the signed payload is built from this text
    signatures: tuple[str, ...]  # lower-cased, each 64 hex digits


def verify(
    header: str | None,
    body: bytes,
    secrets: Sequence[str],
    *,
    now: float,
    tolerance_s: float,
) -> int:
    """Raise SignatureError unless the header signs body with one of secrets within tolerance.

    Returns t as given (an int, in seconds or milliseconds as the sender wrote it).
    """
    candidates = _usable_secrets(secrets)
    parsed = _parse_header(header)
    # The signature is checked before the clock, as Stripe does, so that
    # timestamp_outside_tolerance only ever describes an authentic message (a replay or clock
    # skew worth investigating) and forgeries all read as signature_mismatch.
    _check_signature(parsed, body, candidates)
    timestamp = int(parsed.timestamp_text)
    _check_timestamp(timestamp, now=now, tolerance_s=tolerance_s)
    return timestamp


def sign_header(body: bytes, secret: str, *, timestamp: int) -> str:
    """Build a 't=<timestamp>,v1=<hex>' header (used by the `send` command and tests)."""
    _require_usable_secret(secret)
    if timestamp < 0:
        raise ValueError("timestamp must not be negative")
    # int() first so a bool or IntEnum still renders as digits rather than "True" or a name.
    timestamp_text = str(int(timestamp))
    return f"t={timestamp_text},v1={compute_signature(body, secret, timestamp_text)}"


def compute_signature(body: bytes, secret: str, timestamp_text: str) -> str:
    """Return the lowercase hex HMAC-SHA256 of `<timestamp_text>.<body>` keyed with secret.

    The secret is used verbatim (UTF-8), including its `whsec_` prefix: that is what WooshPay
    and Stripe do, and decoding or trimming it would produce a different key.
    """
    signed_payload = timestamp_text.encode("ascii") + b"." + body
    # hmac.digest is the one-shot C implementation: no HMAC object is built per request.
    return hmac.digest(secret.encode("utf-8"), signed_payload, "sha256").hex()


def _usable_secrets(secrets: Sequence[str]) -> tuple[str, ...]:
    # A bare str is itself a Sequence[str]: iterating it would try each character as a secret.
    if isinstance(secrets, str):
        raise TypeError("secrets must be a sequence of secrets, not a single string")
    if not secrets:
        raise ValueError("no webhook secret is configured")
    for secret in secrets:
        _require_usable_secret(secret)
    return tuple(secrets)


def _require_usable_secret(secret: str) -> None:
    # Anyone can compute an HMAC keyed with "", so a blank secret must never verify anything.
    if not secret.strip():
        raise ValueError("a webhook secret is empty or blank")


def _malformed(reason: str) -> SignatureError:
    return SignatureError(MALFORMED_SIGNATURE, reason)


def _parse_header(header: str | None) -> _ParsedHeader:
    """Split the header into its t text and v1 signatures, ignoring every other element."""
    if header is None or not header.strip(_OWS):
        raise SignatureError(MISSING_SIGNATURE, "signature header is missing")
    if len(header) > MAX_HEADER_LENGTH:
        raise _malformed("signature header is too long")
    if not header.isascii():
        raise _malformed("signature header is not ASCII")
    timestamps: list[str] = []
    signatures: list[str] = []
    for element in header.split(","):
        key, _, value = element.partition("=")
        key = key.strip(_OWS)
        if key == "t":
            timestamps.append(value.strip(_OWS))
        elif key == "v1":
            signatures.append(value.strip(_OWS))
        # Anything else (v0=..., foo=bar, empty elements) is ignored, as Stripe does, so
        # WooshPay can add schemes without breaking receivers.
    return _ParsedHeader(_timestamp_text(timestamps), _signatures(signatures))


def _timestamp_text(values: list[str]) -> str:
    if not values:
        raise _malformed("signature header has no timestamp")
    if len(values) > 1:
        # Two t elements would make "the signed t" ambiguous.
        raise _malformed("signature header has more than one timestamp")
    if _TIMESTAMP_RE.fullmatch(values[0]) is None:
        raise _malformed("timestamp is not a plain integer")
    return values[0]


def _signatures(values: list[str]) -> tuple[str, ...]:
    if not values:
        raise _malformed("signature header has no v1 signature")
    if any(_SIGNATURE_RE.fullmatch(value) is None for value in values):
        raise _malformed("v1 signature is not 64 hex digits")
    return tuple(value.lower() for value in values)


def _check_signature(parsed: _ParsedHeader, body: bytes, secrets: tuple[str, ...]) -> None:
    expected = [compute_signature(body, secret, parsed.timestamp_text) for secret in secrets]
    # Compare every pair (no early exit) in constant time, so timing reveals nothing about how
    # close a guess came or which secret matched.
    matched = False
    for candidate in expected:
        for given in parsed.signatures:
            matched |= hmac.compare_digest(candidate, given)
    if not matched:
        raise SignatureError(SIGNATURE_MISMATCH, "no v1 signature matches a configured secret")


def _check_timestamp(timestamp: int, *, now: float, tolerance_s: float) -> None:
    # WooshPay sometimes sends milliseconds; to_seconds() tells them apart by magnitude.
    skew = abs(to_seconds(timestamp) - now)
    # Phrased as "not within" so a NaN `now` or tolerance (a caller bug) rejects, not accepts.
    within = skew <= tolerance_s
    if not within:
        raise SignatureError(TIMESTAMP_OUTSIDE_TOLERANCE, "timestamp is outside the tolerance")
