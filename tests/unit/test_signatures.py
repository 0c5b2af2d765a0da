"""Tests for service.wooshpay.signatures: the Wooshpay-Signature header (Stripe's t=...,v1=...
scheme)."""

from __future__ import annotations

import base64
import hashlib
import hmac
import pickle
import time

import pytest
import stripe
from hypothesis import given
from hypothesis import strategies as st

from service.wooshpay.signatures import (
    MALFORMED_SIGNATURE,
    MISSING_SIGNATURE,
    SIGNATURE_MISMATCH,
    TIMESTAMP_OUTSIDE_TOLERANCE,
    SignatureError,
    compute_signature,
    sign_header,
    verify,
)

SECRET = "whsec_dGVzdF9zZWNyZXRfZm9yX3dvb3NocGF5"  # the base64 part decodes to real bytes
OLD_SECRET = "whsec_b2xkX3JvdGF0ZWRfc2VjcmV0"
NOW = 1_700_000_000
TOLERANCE_S = 300
BODY = b'{"id":"evt_1","type":"payment_intent.succeeded","amount":1999}'


def _verify(
    header: str | None,
    body: bytes = BODY,
    secrets: tuple[str, ...] = (SECRET,),
    now: float = NOW,
) -> int:
    return verify(header, body, secrets, now=now, tolerance_s=TOLERANCE_S)


def _raw_hmac(key: bytes, message: bytes) -> str:
    """HMAC-SHA256 written out independently of service.wooshpay.signatures."""
    return hmac.new(key, message, hashlib.sha256).hexdigest()


def _signature(timestamp_text: str, body: bytes = BODY, secret: str = SECRET) -> str:
    return _raw_hmac(secret.encode(), timestamp_text.encode() + b"." + body)


def _code(
    header: str | None,
    body: bytes = BODY,
    secrets: tuple[str, ...] = (SECRET,),
    now: float = NOW,
) -> str:
    """Run verify and return the SignatureError code it raised (failing if it accepted)."""
    with pytest.raises(SignatureError) as caught:
        _verify(header, body, secrets, now)
    return caught.value.code


# --- Basic acceptance -------------------------------------------------------------------------


def test_valid_header_verifies_and_returns_t() -> None:
    """A header signed with the configured secret verifies and returns t as an int."""
    assert _verify(f"t={NOW},v1={_signature(str(NOW))}") == NOW


def test_compute_signature_matches_known_answer() -> None:
    """compute_signature matches a vector computed with `openssl dgst -sha256 -hmac`."""
    # printf '%s' '1700000000.{"id":"evt_1"}' | openssl dgst -sha256 -hmac 'whsec_known_answer'
    expected = "b9a1350d1d8b33e38577292ab22745a18a63d34be6f8d184f8260a8ce35d8796"
    assert compute_signature(b'{"id":"evt_1"}', "whsec_known_answer", "1700000000") == expected


def test_sign_header_has_the_documented_shape() -> None:
    """sign_header returns exactly 't=<timestamp>,v1=<64 lowercase hex>' over '<t>.<body>'."""
    assert sign_header(BODY, SECRET, timestamp=NOW) == f"t={NOW},v1={_signature(str(NOW))}"


def test_rotated_secret_verifies_with_second_configured_secret() -> None:
    """With two secrets configured, an event signed with the second one verifies."""
    header = sign_header(BODY, SECRET, timestamp=NOW)
    assert _verify(header, secrets=(OLD_SECRET, SECRET)) == NOW


def test_rotated_secret_is_required_to_be_configured() -> None:
    """An event signed with a secret that is not configured is rejected."""
    header = sign_header(BODY, SECRET, timestamp=NOW)
    assert _code(header, secrets=(OLD_SECRET,)) == SIGNATURE_MISMATCH


def test_several_v1_where_only_one_matches_verifies() -> None:
    """A header with several v1 signatures verifies if any one of them matches."""
    wrong = _signature(str(NOW), secret=OLD_SECRET)
    header = f"t={NOW},v1={'0' * 64},v1={_signature(str(NOW))},v1={wrong}"
    assert _verify(header) == NOW


def test_several_v1_where_none_matches_is_rejected() -> None:
    """A header with several v1 signatures, none of them right, is a mismatch."""
    header = f"t={NOW},v1={'0' * 64},v1={_signature(str(NOW), secret=OLD_SECRET)}"
    assert _code(header) == SIGNATURE_MISMATCH


def test_wrong_secret_is_rejected() -> None:
    """A header signed with a different secret is a signature mismatch."""
    header = sign_header(BODY, "whsec_someone_else", timestamp=NOW)
    assert _code(header) == SIGNATURE_MISMATCH


def test_tampered_body_is_rejected() -> None:
    """Changing the body after signing makes the signature mismatch."""
    header = sign_header(BODY, SECRET, timestamp=NOW)
    assert _code(header, body=BODY.replace(b"1999", b"1")) == SIGNATURE_MISMATCH


def test_signature_for_another_timestamp_is_rejected() -> None:
    """Swapping in a different t (a replay with a fresh timestamp) breaks the signature."""
    original = sign_header(BODY, SECRET, timestamp=NOW - 1000)
    replayed = original.replace(f"t={NOW - 1000}", f"t={NOW}")
    assert _code(replayed) == SIGNATURE_MISMATCH


# --- Timestamp tolerance ----------------------------------------------------------------------


@pytest.mark.parametrize("offset", [-TOLERANCE_S, -1, 0, 1, TOLERANCE_S])
def test_timestamp_within_tolerance_is_accepted(offset: int) -> None:
    """A t up to the tolerance away from now, in the past or the future, is accepted."""
    header = sign_header(BODY, SECRET, timestamp=NOW + offset)
    assert _verify(header) == NOW + offset


@pytest.mark.parametrize("offset", [-TOLERANCE_S - 1, TOLERANCE_S + 1, -86_400, 86_400, -NOW])
def test_timestamp_outside_tolerance_is_rejected(offset: int) -> None:
    """A correctly signed t further than the tolerance from now, either way, is rejected."""
    header = sign_header(BODY, SECRET, timestamp=NOW + offset)
    assert _code(header) == TIMESTAMP_OUTSIDE_TOLERANCE


def test_fractional_now_is_compared_exactly() -> None:
    """The tolerance is measured against the receiver's fractional clock, not a rounded one."""
    header = sign_header(BODY, SECRET, timestamp=NOW)
    assert _verify(header, now=NOW + TOLERANCE_S + 0.0) == NOW
    assert _code(header, now=NOW + TOLERANCE_S + 0.5) == TIMESTAMP_OUTSIDE_TOLERANCE


def test_nan_clock_fails_closed() -> None:
    """A NaN clock (a caller bug) rejects instead of silently accepting every timestamp."""
    header = sign_header(BODY, SECRET, timestamp=NOW)
    assert _code(header, now=float("nan")) == TIMESTAMP_OUTSIDE_TOLERANCE


@pytest.mark.parametrize("offset_ms", [-TOLERANCE_S * 1000, -1, 0, 999, TOLERANCE_S * 1000])
def test_millisecond_timestamp_is_accepted(offset_ms: int) -> None:
    """A t in milliseconds within tolerance verifies and is returned as sent (milliseconds)."""
    t_ms = NOW * 1000 + offset_ms
    header = sign_header(BODY, SECRET, timestamp=t_ms)
    assert _verify(header) == t_ms


@pytest.mark.parametrize("offset_ms", [-TOLERANCE_S * 1000 - 1, TOLERANCE_S * 1000 + 1])
def test_millisecond_timestamp_outside_tolerance_is_rejected(offset_ms: int) -> None:
    """A t in milliseconds just beyond the tolerance, either way, is rejected."""
    header = sign_header(BODY, SECRET, timestamp=NOW * 1000 + offset_ms)
    assert _code(header) == TIMESTAMP_OUTSIDE_TOLERANCE


def test_millisecond_signature_covers_the_millisecond_text() -> None:
    """With t in milliseconds the signed payload is the ms text, not a converted seconds value."""
    t_ms = NOW * 1000
    signed_over_seconds = _signature(str(NOW))
    assert _code(f"t={t_ms},v1={signed_over_seconds}") == SIGNATURE_MISMATCH
    assert _verify(f"t={t_ms},v1={_signature(str(t_ms))}") == t_ms


def test_signed_payload_uses_t_text_exactly_as_sent() -> None:
    """A t with leading zeros is signed as written; the normalised number doesn't verify."""
    t_text = f"000{NOW}"
    assert _verify(f"t={t_text},v1={_signature(t_text)}") == NOW
    assert _code(f"t={t_text},v1={_signature(str(NOW))}") == SIGNATURE_MISMATCH


# --- Header parsing ---------------------------------------------------------------------------

_GOOD_SIG = _signature(str(NOW))


def _digits_from(zero: int, number: int) -> str:
    """Write number with the Unicode digits starting at code point zero (e.g. full-width)."""
    return "".join(chr(zero + int(digit)) for digit in str(number))


@pytest.mark.parametrize("header", [None, "", " ", "\t \t"])
def test_absent_or_empty_header_is_missing(header: str | None) -> None:
    """An absent, empty or all-whitespace header is reported as missing_signature."""
    assert _code(header) == MISSING_SIGNATURE


@pytest.mark.parametrize(
    "header",
    [
        "garbage",
        "t=",
        "t",
        "t=abc,v1=00",
        f"t=abc,v1={_GOOD_SIG}",
        "v1=only",
        f"v1={_GOOD_SIG}",
        "t=123",
        f"t={NOW}",
        f"t={NOW},v1=",
        f"t={NOW},v1",
        f"t={NOW},v1={'z' * 64}",
        f"t={NOW},v1={_GOOD_SIG[:-1]}g",
        f"t={NOW},v1={_GOOD_SIG[:32]}",
        f"t={NOW},v1={_GOOD_SIG}0",
        f"t={NOW},v1=0x{_GOOD_SIG[2:]}",
        f"t={NOW},v1={_GOOD_SIG}=",
        # Non-ASCII digits that int() would happily accept: full-width and Arabic-Indic.
        f"t={_digits_from(0xFF10, NOW)},v1={_GOOD_SIG}",
        f"t={_digits_from(0x0660, NOW)},v1={_GOOD_SIG}",
        f"t={NOW},v1={_GOOD_SIG[:-1]}é",
        f"t={NOW},v1={_GOOD_SIG},note=héllo",
        "t=💥,v1=💥",
        "\x00",
        f"t={NOW}\x00,v1={_GOOD_SIG}",
        f"t={10**40},v1={_GOOD_SIG}",
        f"t={10**4000},v1={_GOOD_SIG}",
        f"t={NOW}.0,v1={_GOOD_SIG}",
        f"t=1e9,v1={_GOOD_SIG}",
        f"t=-{NOW},v1={_GOOD_SIG}",
        f"t=+{NOW},v1={_GOOD_SIG}",
        f"t=1_700_000_000,v1={_GOOD_SIG}",
        f"t={NOW}\n,v1={_GOOD_SIG}",
        f"t={NOW},t={NOW},v1={_GOOD_SIG}",
        f"t={NOW};v1={_GOOD_SIG}",
        f"T={NOW},V1={_GOOD_SIG}",
        "t=1" + "0" * 10_000 + f",v1={_GOOD_SIG}",
        "x" * 10_000,
        ",,,",
        "=,=",
        "=",
        ",",
        "t==,v1==",
    ],
)
def test_garbage_header_is_malformed(header: str) -> None:
    """Garbage of any kind is a malformed_signature SignatureError, never another exception."""
    assert _code(header) == MALFORMED_SIGNATURE


def test_over_long_header_is_rejected_even_if_it_contains_a_valid_signature() -> None:
    """A header over 4096 characters is malformed even when its t and v1 would verify."""
    padding = ",".join(["foo=bar"] * 600)
    header = f"t={NOW},v1={_GOOD_SIG},{padding}"
    assert len(header) > 4096
    assert _code(header) == MALFORMED_SIGNATURE


def test_long_header_at_the_limit_still_verifies() -> None:
    """A header of exactly 4096 characters is still parsed and verified."""
    base = f"t={NOW},v1={_GOOD_SIG},x="
    header = base + "y" * (4096 - len(base))
    assert len(header) == 4096
    assert _verify(header) == NOW


@pytest.mark.parametrize(
    "template",
    [
        "t = {t} , v1 = {sig}",
        "  t={t},v1={sig}  ",
        "t={t} ,v1={sig}",
        "t= {t},v1 ={sig}",
        "\tt=\t{t}\t,\tv1=\t{sig}\t",
        "v1={sig},t={t}",
        "t={t},,v1={sig},",
    ],
)
def test_odd_spacing_and_order_are_tolerated(template: str) -> None:
    """Spaces/tabs around commas and '=', element order and empty elements don't matter."""
    assert _verify(template.format(t=NOW, sig=_GOOD_SIG)) == NOW


def test_upper_case_hex_is_accepted() -> None:
    """A v1 signature written in upper-case hex verifies."""
    assert _verify(f"t={NOW},v1={_GOOD_SIG.upper()}") == NOW


def test_unknown_elements_are_ignored() -> None:
    """Elements other than t and v1 (v0=..., foo=bar, bare words) are ignored."""
    header = f"foo=bar,t={NOW},v0={'f' * 64},junk,v1={_GOOD_SIG},v2=not-hex,x=="
    assert _verify(header) == NOW


def test_a_valid_signature_under_another_scheme_is_not_accepted() -> None:
    """A correct signature labelled v0 rather than v1 does not count; the header lacks v1."""
    assert _code(f"t={NOW},v0={_GOOD_SIG}") == MALFORMED_SIGNATURE


# --- The key is the whole secret text ---------------------------------------------------------


def test_whole_whsec_string_is_the_hmac_key() -> None:
    """The key is the whole 'whsec_...' text as UTF-8, not a decoded or trimmed form of it."""
    message = f"{NOW}.".encode() + BODY
    verbatim = _raw_hmac(SECRET.encode("utf-8"), message)
    assert _verify(f"t={NOW},v1={verbatim}") == NOW

    suffix = SECRET.removeprefix("whsec_")
    prefix_stripped = _raw_hmac(suffix.encode(), message)
    base64_decoded = _raw_hmac(base64.b64decode(suffix), message)
    for other_key_signature in (prefix_stripped, base64_decoded):
        assert _code(f"t={NOW},v1={other_key_signature}") == SIGNATURE_MISMATCH


def test_secret_is_not_trimmed() -> None:
    """Whitespace in a configured secret is part of the key, not silently stripped."""
    header = sign_header(BODY, SECRET, timestamp=NOW)
    assert _code(header, secrets=(SECRET + " ",)) == SIGNATURE_MISMATCH


def test_non_ascii_secret_is_encoded_as_utf8() -> None:
    """A secret with non-ASCII characters is keyed by its UTF-8 bytes."""
    secret = "whsec_clé_ünïcode"
    header = f"t={NOW},v1={_raw_hmac(secret.encode('utf-8'), f'{NOW}.'.encode() + BODY)}"
    assert _verify(header, secrets=(secret,)) == NOW


# --- Independent implementation: the stripe package -------------------------------------------

_TEXT_BODY = BODY.decode("utf-8")


def test_header_from_stripe_generate_signature_header_verifies() -> None:
    """A header built by stripe's WebhookSignature.generate_signature_header verifies here."""
    header = stripe.WebhookSignature.generate_signature_header(_TEXT_BODY, SECRET, timestamp=NOW)
    assert _verify(header) == NOW


def test_header_from_stripe_compute_signature_verifies() -> None:
    """A v1 computed by stripe's WebhookSignature._compute_signature over '<t>.<body>' verifies."""
    signature = stripe.WebhookSignature._compute_signature(f"{NOW}.{_TEXT_BODY}", SECRET)
    assert _verify(f"t={NOW},v1={signature}") == NOW
    assert _code(f"t={NOW},v1={signature}", body=BODY + b" ") == SIGNATURE_MISMATCH


def test_stripe_header_for_another_secret_is_rejected() -> None:
    """A stripe-built header for a different secret does not verify here."""
    header = stripe.WebhookSignature.generate_signature_header(
        _TEXT_BODY, OLD_SECRET, timestamp=NOW
    )
    assert _code(header) == SIGNATURE_MISMATCH


def test_our_header_verifies_with_stripe_verify_header() -> None:
    """A header from our sign_header passes stripe's WebhookSignature.verify_header."""
    header = sign_header(BODY, SECRET, timestamp=int(time.time()))
    assert stripe.WebhookSignature.verify_header(BODY, header, SECRET, TOLERANCE_S) is True


def test_our_header_for_tampered_body_fails_stripe_verify_header() -> None:
    """stripe's verify_header rejects our header when the body differs, so the check has teeth."""
    header = sign_header(BODY, SECRET, timestamp=int(time.time()))
    with pytest.raises(stripe.SignatureVerificationError):
        stripe.WebhookSignature.verify_header(BODY + b" ", header, SECRET, TOLERANCE_S)


@given(
    body=st.text(max_size=300),
    secret=st.text(min_size=1, max_size=60).filter(lambda s: bool(s.strip())),
    timestamp=st.integers(min_value=0, max_value=10**13),
)
def test_compute_signature_agrees_with_stripe(body: str, secret: str, timestamp: int) -> None:
    """For any text body, secret and t, our signature equals stripe's _compute_signature."""
    ours = compute_signature(body.encode("utf-8"), secret, str(timestamp))
    theirs = stripe.WebhookSignature._compute_signature(f"{timestamp}.{body}", secret)
    assert ours == theirs


# --- Properties -------------------------------------------------------------------------------

_secrets = st.text(min_size=1, max_size=60).filter(lambda s: bool(s.strip()))
# Seconds and milliseconds; the receiver's clock is set to match either way.
_timestamps = st.integers(min_value=0, max_value=10**16)


@given(body=st.binary(max_size=2048), secret=_secrets, timestamp=_timestamps)
def test_sign_then_verify_round_trips(body: bytes, secret: str, timestamp: int) -> None:
    """Any binary body signed by sign_header verifies and returns the same t."""
    now = timestamp / 1000 if timestamp > 10**12 else timestamp
    header = sign_header(body, secret, timestamp=timestamp)
    assert verify(header, body, [secret], now=now, tolerance_s=TOLERANCE_S) == timestamp


@given(
    body=st.binary(min_size=1, max_size=2048),
    secret=_secrets,
    timestamp=_timestamps,
    data=st.data(),
)
def test_flipping_any_body_byte_is_a_mismatch(
    body: bytes, secret: str, timestamp: int, data: st.DataObject
) -> None:
    """Changing any single byte of a signed body makes verification fail with signature_mismatch."""
    now = timestamp / 1000 if timestamp > 10**12 else timestamp
    header = sign_header(body, secret, timestamp=timestamp)
    index = data.draw(st.integers(min_value=0, max_value=len(body) - 1), label="index")
    flip = data.draw(st.integers(min_value=1, max_value=255), label="xor mask")
    tampered = bytearray(body)
    tampered[index] ^= flip
    with pytest.raises(SignatureError) as caught:
        verify(header, bytes(tampered), [secret], now=now, tolerance_s=TOLERANCE_S)
    assert caught.value.code == SIGNATURE_MISMATCH


@given(header=st.text(max_size=200))
def test_arbitrary_text_headers_only_raise_signature_error(header: str) -> None:
    """Any random header text is rejected with SignatureError and never another exception."""
    with pytest.raises(SignatureError) as caught:
        _verify(header)
    assert caught.value.code in {MISSING_SIGNATURE, MALFORMED_SIGNATURE, SIGNATURE_MISMATCH}


# --- Errors -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("header", "body", "now", "code"),
    [
        (None, BODY, NOW, MISSING_SIGNATURE),
        (f"t={NOW},v1=nothex", BODY, NOW, MALFORMED_SIGNATURE),
        (f"t={NOW},v1={'0' * 64}", BODY, NOW, SIGNATURE_MISMATCH),
        (f"t={NOW},v1={_GOOD_SIG}", BODY, NOW + 10_000, TIMESTAMP_OUTSIDE_TOLERANCE),
    ],
)
def test_errors_carry_code_and_never_leak_secrets(
    header: str | None, body: bytes, now: int, code: str
) -> None:
    """Every error has its code and a reason free of the secret, expected signature and body."""
    with pytest.raises(SignatureError) as caught:
        verify(header, body, [SECRET], now=now, tolerance_s=TOLERANCE_S)
    error = caught.value
    assert error.code == code
    assert isinstance(error, ValueError)
    for text in (str(error), repr(error), error.reason):
        for secret_thing in (SECRET, SECRET.removeprefix("whsec_"), _GOOD_SIG, _TEXT_BODY):
            assert secret_thing not in text
        assert 0 < len(error.reason) <= 80


def test_signature_error_survives_pickling() -> None:
    """A SignatureError pickles and unpickles with its code and reason (e.g. across processes)."""
    error = pickle.loads(pickle.dumps(SignatureError(SIGNATURE_MISMATCH, "no match")))  # noqa: S301
    assert (type(error), error.code, error.reason, str(error)) == (
        SignatureError,
        SIGNATURE_MISMATCH,
        "no match",
        "no match",
    )


@pytest.mark.parametrize("secrets", [(), ("",), ("   ",), (SECRET, "")])
def test_unusable_secret_configuration_is_a_config_error(secrets: tuple[str, ...]) -> None:
    """No secrets, or a blank one, raise a plain ValueError (our bug), not a SignatureError."""
    header = sign_header(BODY, SECRET, timestamp=NOW)
    with pytest.raises(ValueError, match="secret") as caught:
        verify(header, BODY, secrets, now=NOW, tolerance_s=TOLERANCE_S)
    assert not isinstance(caught.value, SignatureError)


def test_empty_secret_never_verifies_a_forged_header() -> None:
    """A header anyone could forge with an empty key is not accepted when '' is configured."""
    forged = f"t={NOW},v1={_raw_hmac(b'', f'{NOW}.'.encode() + BODY)}"
    with pytest.raises(ValueError, match="secret"):
        verify(forged, BODY, [""], now=NOW, tolerance_s=TOLERANCE_S)


def test_single_string_instead_of_a_sequence_is_refused() -> None:
    """Passing one secret string (a Sequence[str] of characters) raises TypeError."""
    header = sign_header(BODY, SECRET, timestamp=NOW)
    with pytest.raises(TypeError):
        verify(header, BODY, SECRET, now=NOW, tolerance_s=TOLERANCE_S)


@pytest.mark.parametrize(("secret", "timestamp"), [("", NOW), (" ", NOW), (SECRET, -1)])
def test_sign_header_refuses_bad_input(secret: str, timestamp: int) -> None:
    """sign_header refuses a blank secret or a negative timestamp instead of signing them."""
    with pytest.raises(ValueError, match=r"secret|timestamp"):
        sign_header(BODY, secret, timestamp=timestamp)
