"""Ingress fuzzing (README, docs/wooshpay.md): hostile deliveries against the running app.

The app is `create_app` behind aiohttp's TestServer, on SQLite and on PostgreSQL (the root
conftest's `engine`/`settings`), with its own arq queue. Every test checks the same contract:

- the answer is never 500: 400 for anything not signed with the secret, 200/400/413 for signed
  bodies, and the process keeps answering /healthz;
- a body not signed with the secret is never recorded and never enqueued;
- a signed body that is not an event envelope (README, HTTP: `id`, `type`, `created`, `data.object`)
  gets 400 and is not recorded; one that is an envelope gets 200 and is recorded once;
- an accepted envelope whose `data.object` cannot be understood is, once reconciled, parked as
  `failed` without touching any order; an understandable one is applied, stale or retried.

Two oracles, written from the documented contract rather than from `service.wooshpay.events`, decide
what each body is:
`envelope_oracle` (ingress) and `object_problems` (reconciler). The example budget is small by
default; FUZZ_EXAMPLES raises it (and widens the field walk to every event type).
"""

from __future__ import annotations

import asyncio
import copy
import io
import itertools
import json
import time
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final, NoReturn, TypeGuard

import pytest
from arq import Retry
from arq.connections import ArqRedis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncEngine

from service.devtools.sender import SUPPORTED_TYPES, EventOptions, build_event, encode_event
from service.domain.orders import OrderTerms
from service.settings import Settings
from service.store.inbox import get_event
from service.store.orders import OrderView, add_order, get_order, list_orders
from service.store.schema import events
from service.wooshpay.signatures import compute_signature, sign_header
from tests.fuzz.conftest import deep_run, fuzz_budget, http_request, raw_exchange
from tests.support.webhooks import SECRET, SIGNATURE_HEADER, WEBHOOK_PATH, Client
from workers.metrics import WorkerMetrics
from workers.reconcile import DEPS_KEY, WorkerDeps, reconcile_event

Json = Any
Path = tuple[str | int, ...]

MAX_ID_LENGTH: Final = 255
MAX_BIGINT: Final = 2**63 - 1
TOLERANCE_S: Final = 300
WRONG_SECRET: Final = "whsec_not_the_configured_secret"
REFUND_STATUSES: Final = frozenset(
    {"pending", "requires_action", "succeeded", "failed", "canceled"}
)
PAYMENT_INTENT_TYPES: Final = frozenset(
    t for t in SUPPORTED_TYPES if t.startswith("payment_intent")
)
CHECKOUT_TYPES: Final = frozenset(t for t in SUPPORTED_TYPES if t.startswith("checkout.session"))
# One event type per object family in the default run; every type in a deep run.
WALK_TYPES: Final = (
    SUPPORTED_TYPES
    if deep_run()
    else ("payment_intent.succeeded", "checkout.session.completed", "charge.refund.updated")
)
POST_CONCURRENCY: Final = 50
# Accepted events with a usable object reconciled in the default run (all in a deep run).
USABLE_SAMPLE: Final = 40

HYPOTHESIS = settings(
    max_examples=fuzz_budget(),
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)


# --- the oracles --------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Envelope:
    event_id: str
    type: str
    object: Mapping[str, Json]
    # False when the body only parses thanks to Python's NaN/Infinity extension to JSON: the
    # ingress may then answer 400 (strict RFC 8259) or accept it; both are allowed.
    rfc_json: bool = True

    @property
    def in_scope(self) -> bool:
        return self.type in SUPPORTED_TYPES


def _short_text(value: object) -> TypeGuard[str]:
    """An envelope id/type: a non-blank, printable string of at most 255 characters."""
    return (
        isinstance(value, str)
        and 0 < len(value) <= MAX_ID_LENGTH
        and bool(value.strip())
        and value.isprintable()
    )


def envelope_oracle(body: bytes) -> Envelope | None:
    """The event envelope `body` carries (README, HTTP), or None when it is not one.

    JSON over HTTP is UTF-8 (RFC 8259); Python's parser is the reference for the JSON grammar,
    including duplicate keys (the last one wins). Its NaN/Infinity/-Infinity literals are not
    JSON: an envelope that needs them is flagged (`rfc_json=False`), not decided.
    """
    try:
        text = body.decode("utf-8")
        document = json.loads(text)
    except (UnicodeDecodeError, ValueError, RecursionError):
        return None
    if not isinstance(document, dict):
        return None
    event_id, event_type, created = (
        document.get("id"),
        document.get("type"),
        document.get("created"),
    )
    if not (_short_text(event_id) and _short_text(event_type)):
        return None
    if type(created) is not int or not 0 < created <= MAX_BIGINT:
        return None
    data = document.get("data")
    if not isinstance(data, dict) or not isinstance(data.get("object"), dict):
        return None
    return Envelope(event_id, event_type, data["object"], _is_rfc_json(text))


def _reject_constant(name: str) -> NoReturn:
    raise ValueError(f"{name} is not JSON")


def _is_rfc_json(text: str) -> bool:
    try:
        json.loads(text, parse_constant=_reject_constant)
    except ValueError:
        return False
    return True


def _optional_string(value: object) -> bool:
    return (
        value is None
        or value == ""
        or (isinstance(value, str) and len(value) <= MAX_ID_LENGTH and value.isprintable())
    )


def _required_string(value: object) -> bool:
    return value not in (None, "") and _optional_string(value)


def _amount(value: object) -> bool:
    return type(value) is int and 0 <= value <= MAX_BIGINT


def _optional_amount(value: object) -> bool:
    return value is None or _amount(value)


def _currency(value: object) -> bool:
    return isinstance(value, str) and len(value) == 3 and value.isascii() and value.isalpha()


def _metadata_order_id(obj: Mapping[str, Json]) -> object:
    metadata = obj.get("metadata")
    return metadata.get("order_id") if isinstance(metadata, dict) else None


def object_problems(event_type: str, obj: Mapping[str, Json]) -> list[str]:
    """Why the reconciler cannot use this `data.object` (docs/wooshpay.md, workers/apply.py);
    empty when it can."""
    checks: dict[str, bool]
    if event_type in PAYMENT_INTENT_TYPES:
        checks = {
            "id": _required_string(obj.get("id")),
            "amount": _amount(obj.get("amount")),
            "amount_received": _optional_amount(obj.get("amount_received")),
            "currency": _currency(obj.get("currency")),
            "merchant_order_id": _optional_string(obj.get("merchant_order_id")),
            "metadata.order_id": _optional_string(_metadata_order_id(obj)),
        }
    elif event_type in CHECKOUT_TYPES:
        currency = obj.get("currency")
        checks = {
            "id": _required_string(obj.get("id")),
            "client_reference_id": _optional_string(obj.get("client_reference_id")),
            "metadata.order_id": _optional_string(_metadata_order_id(obj)),
            "payment_intent": _optional_string(obj.get("payment_intent")),
            "payment_status": _optional_string(obj.get("payment_status")),
            "amount_total": _optional_amount(obj.get("amount_total")),
            "currency": currency in (None, "") or _currency(currency),
        }
    else:
        status = obj.get("status")
        checks = {
            "status": isinstance(status, str) and status in REFUND_STATUSES,
            "payment_intent": _required_string(obj.get("payment_intent")),
            "id": _required_string(obj.get("id")),
            "amount": _amount(obj.get("amount")),
            "currency": _currency(obj.get("currency")),
        }
    return [name for name, ok in checks.items() if not ok]


# --- JSON trees ---------------------------------------------------------------------------------


def walk(value: Json, path: Path = ()) -> Iterator[Path]:
    """Every path below `value` (objects and lists included), parents before children."""
    children: Iterator[tuple[str | int, Json]]
    if isinstance(value, dict):
        children = iter(value.items())
    elif isinstance(value, list):
        children = enumerate(value)
    else:
        return
    for key, child in children:
        yield (*path, key)
        yield from walk(child, (*path, key))


def replaced(document: Json, path: Path, value: Json) -> Json:
    """A deep copy of `document` with the node at `path` replaced by `value`."""
    result = copy.deepcopy(document)
    parent = result
    for key in path[:-1]:
        parent = parent[key]
    parent[path[-1]] = value
    return result


def removed(document: Json, path: Path) -> Json:
    result = copy.deepcopy(document)
    parent = result
    for key in path[:-1]:
        parent = parent[key]
    del parent[path[-1]]
    return result


def dumps_with_duplicate(document: Json, path: Path, key: str, value: Json, *, first: bool) -> str:
    """JSON text of `document` where the object at `path` carries `key` twice: the extra pair
    (`value`) is written before the original pairs when `first`, else after them."""

    def write(node: Json, at: Path) -> str:
        if isinstance(node, dict):
            pairs = [f"{json.dumps(k)}:{write(v, (*at, k))}" for k, v in node.items()]
            if at == path:
                extra = f"{json.dumps(key)}:{json.dumps(value)}"
                pairs = [extra, *pairs] if first else [*pairs, extra]
            return "{" + ",".join(pairs) + "}"
        if isinstance(node, list):
            return "[" + ",".join(write(v, (*at, i)) for i, v in enumerate(node)) + "]"
        return json.dumps(node)

    return write(document, ())


# --- deliveries ---------------------------------------------------------------------------------


def now_s() -> int:
    return int(time.time())


def now_ms() -> int:
    return int(time.time() * 1000)


def new_order_id() -> str:
    return f"fz-{uuid.uuid4().hex[:16]}"


def fresh_event(event_type: str, order_id: str | None = None) -> dict[str, Json]:
    return build_event(
        event_type, EventOptions(order_id=order_id or new_order_id()), now_ms=now_ms()
    )


def order_terms(document: Mapping[str, Json]) -> OrderTerms:
    """The order a freshly built event belongs to, with the links WooshPay would know."""
    obj = document["data"]["object"]
    order_id = obj.get("merchant_order_id") or obj.get("client_reference_id")
    if order_id is None:  # a Refund: its order is found through the PaymentIntent
        order_id = "fz-refund-" + obj["payment_intent"]
    checkout = obj["id"] if document["type"] in CHECKOUT_TYPES else None
    payment_intent = (
        obj["id"] if document["type"] in PAYMENT_INTENT_TYPES else obj["payment_intent"]
    )
    return OrderTerms(str(order_id), 2000, "EUR", payment_intent, checkout)


def signature_for(body: bytes, *, secret: str = SECRET, timestamp: int | None = None) -> str:
    return sign_header(body, secret, timestamp=now_s() if timestamp is None else timestamp)


async def post_raw(client: Client, body: bytes, signature: str | None) -> tuple[int, Json]:
    headers = {"Content-Type": "application/json"}
    if signature is not None:
        headers[SIGNATURE_HEADER] = signature
    # A BytesIO rather than bytes: aiohttp warns (an error here) about large raw bodies.
    async with client.post(WEBHOOK_PATH, data=io.BytesIO(body), headers=headers) as response:
        text = await response.text()
        try:
            answer = json.loads(text)
        except ValueError:
            answer = text
        return response.status, answer


async def post_signed(client: Client, body: bytes) -> tuple[int, Json]:
    return await post_raw(client, body, signature_for(body))


async def inbox_count(engine: AsyncEngine) -> int:
    async with engine.connect() as connection:
        return int(
            (await connection.execute(select(func.count()).select_from(events))).scalar_one()
        )


async def assert_healthy(client: Client) -> None:
    async with client.get("/healthz") as response:
        assert response.status == 200


def assert_rejected(status: int, answer: Json, context: object) -> None:
    assert status == 400, (status, answer, context)
    assert isinstance(answer, dict), (answer, context)
    assert isinstance(answer.get("error"), str), (answer, context)


def worker_ctx(settings_: Settings, engine: AsyncEngine) -> dict[str, Any]:
    return {DEPS_KEY: WorkerDeps(settings_, engine, WorkerMetrics()), "job_try": 1}


async def reconcile(ctx: dict[str, Any], event_id: str) -> str:
    """Run the arq job function once; a Retry raised counts as the outcome `retry`."""
    try:
        return await reconcile_event(dict(ctx), event_id)
    except Retry:
        return "retry"


async def orders_snapshot(engine: AsyncEngine) -> dict[str, OrderView]:
    return {view.terms.order_id: view for view in await list_orders(engine)}


@dataclass(frozen=True, slots=True)
class Accepted:
    """A delivery the ingress answered 200 for, with what the oracles say about it."""

    envelope: Envelope
    context: object

    @property
    def problems(self) -> list[str]:
        return object_problems(self.envelope.type, self.envelope.object)


async def check_reconciliation(
    ctx: dict[str, Any], engine: AsyncEngine, accepted: Sequence[Accepted], *, concurrency: int
) -> None:
    """Reconcile every accepted in-scope event and hold the outcomes to the oracle.

    Objects the reconciler cannot understand come first, all of them, and must leave every order
    exactly as it was; then the understandable ones, which may change their own orders.
    """
    in_scope = [a for a in accepted if a.envelope.in_scope]
    broken = [a for a in in_scope if a.problems]
    usable = [a for a in in_scope if not a.problems]
    gate = asyncio.Semaphore(concurrency)

    async def run(item: Accepted) -> tuple[Accepted, str, str | None, str | None]:
        async with gate:
            outcome = await reconcile(ctx, item.envelope.event_id)
            record = await get_event(engine, item.envelope.event_id)
        assert record is not None, item.context
        return item, outcome, record.status, record.last_error

    before = await orders_snapshot(engine)
    mismatches: list[tuple[object, ...]] = []
    for item, outcome, status, last_error in await asyncio.gather(*map(run, broken)):
        parked = outcome == "failed" and status == "failed"
        if not (parked and (last_error or "").startswith("invalid_object")):
            mismatches.append((item.context, item.problems, outcome, status, last_error))
    assert not mismatches, f"unusable objects not parked as failed: {mismatches[:10]}"
    assert await orders_snapshot(engine) == before, "an unusable event changed an order"

    for item, outcome, status, last_error in await asyncio.gather(*map(run, usable)):
        if outcome in ("applied", "stale") and status == "processed":
            continue
        if outcome == "retry" and (last_error or "").startswith("order_not_found"):
            continue
        mismatches.append((item.context, outcome, status, last_error))
    assert not mismatches, (
        f"usable objects not applied (or retried for their order): {mismatches[:10]}"
    )


def reconcile_concurrency(engine: AsyncEngine) -> int:
    # SQLite has a single writer; concurrent jobs would only measure its lock timeouts.
    return 1 if engine.dialect.name == "sqlite" else 8


# --- 1. unsigned deliveries: hypothesis ---------------------------------------------------------


def _hex64() -> st.SearchStrategy[str]:
    return st.text(alphabet="0123456789abcdefABCDEF", min_size=64, max_size=64)


@st.composite
def unsigned_delivery(draw: st.DrawFn) -> tuple[str, bytes, str | None]:
    """(kind, body, signature header) where the header does not sign the body with SECRET."""
    genuine = encode_event(fresh_event(draw(st.sampled_from(SUPPORTED_TYPES))))
    body = draw(
        st.one_of(
            st.just(genuine),
            st.binary(max_size=600),
            st.text(max_size=300).map(lambda text: text.encode("utf-8", "surrogatepass")),
        )
    )
    t = now_s()
    signed = compute_signature(body, SECRET, str(t))
    kinds: dict[str, st.SearchStrategy[str | None]] = {
        "absent": st.none(),
        "blank": st.sampled_from(["", " ", "\t", " \t ", ",", "=", "t=,v1="]),
        "printable_junk": st.text(
            alphabet=st.characters(min_codepoint=0x20, max_codepoint=0x7E), max_size=300
        ),
        "random_v1": st.builds(
            lambda ts, sig, extra: f"t={ts},v1={sig}{extra}",
            st.integers(min_value=0, max_value=10**20),
            _hex64(),
            st.sampled_from(["", ",v0=abc", ",v1=" + "0" * 64, ", foo=bar"]),
        ),
        "wrong_secret": st.just(sign_header(body, WRONG_SECRET, timestamp=t)),
        "other_body": st.just(sign_header(body + b" ", SECRET, timestamp=t)),
        "tampered_t": st.just(f"t={t + 1},v1={signed}"),
        "v0_only": st.just(f"t={t},v0={signed}"),
        "stale": st.builds(
            lambda skew, ms: sign_header(body, SECRET, timestamp=(t + skew) * (1000 if ms else 1)),
            st.one_of(
                st.integers(min_value=TOLERANCE_S + 5, max_value=10**6),
                st.integers(min_value=-(10**6), max_value=-(TOLERANCE_S + 5)),
            ),
            st.booleans(),
        ),
        "signature_in_t": st.just(f"t={signed},v1={signed}"),
        "padded_v1": st.just(f"t={t},v1={signed}0"),
        "unicode_digits": st.just(
            f"t={str(t).translate(str.maketrans('0123456789', '٠١٢٣٤٥٦٧٨٩'))},v1={signed}"
        ),
        "two_timestamps": st.just(f"t={t},t={t},v1={signed}"),
    }
    kind = draw(st.sampled_from(sorted(kinds)))
    return kind, body, draw(kinds[kind])


@HYPOTHESIS
@given(delivery=unsigned_delivery())
async def test_unsigned_deliveries_are_rejected_and_leave_no_trace(
    client: Client,
    engine: AsyncEngine,
    redis: ArqRedis,
    queue_name: str,
    delivery: tuple[str, bytes, str | None],
) -> None:
    """Whatever the body and header, a delivery not signed with the secret (now) gets 400 with a
    JSON reason, is not recorded and enqueues nothing."""
    kind, body, header = delivery
    status, answer = await post_raw(client, body, header)
    assert_rejected(status, answer, (kind, header, body[:80]))
    assert await inbox_count(engine) == 0, (kind, header)
    assert await redis.zcard(queue_name) == 0
    await assert_healthy(client)


# --- 2. signed mutations of realistic events: hypothesis ---------------------------------------

JSON_SCALARS = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.sampled_from([10**400, -(10**400), 2**63, 2**63 - 1, -1, 0]),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=40),
)
JSON_VALUES = st.recursive(
    JSON_SCALARS,
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=12,
)
NUMBER_LITERALS = (
    "1" + "0" * 400,
    "1e999",
    "-1e999",
    "-0",
    "-0.0",
    "NaN",
    "Infinity",
    "-Infinity",
    "1E400",
    "9" * 5000,
    "0x10",
    "01",
    "1.",
    ".5",
    "+1",
)


@dataclass(frozen=True, slots=True)
class Seed:
    """A fresh realistic event: the document, its encoded body and every path in it."""

    document: dict[str, Json]
    body: bytes
    paths: list[Path]


# A mutation draws what it needs and returns (mutated body, what it did).
Mutation = Callable[[st.DrawFn, Seed], tuple[bytes, object]]


def _position(draw: st.DrawFn, seed: Seed) -> int:
    return draw(st.integers(min_value=0, max_value=len(seed.body) - 1))


def _truncate(draw: st.DrawFn, seed: Seed) -> tuple[bytes, object]:
    at = _position(draw, seed)
    return seed.body[:at], at


def _flip_bit(draw: st.DrawFn, seed: Seed) -> tuple[bytes, object]:
    at, bit = _position(draw, seed), draw(st.integers(min_value=0, max_value=7))
    body = seed.body
    return body[:at] + bytes([body[at] ^ (1 << bit)]) + body[at + 1 :], (at, bit)


def _insert_bytes(draw: st.DrawFn, seed: Seed) -> tuple[bytes, object]:
    at, extra = _position(draw, seed), draw(st.binary(min_size=1, max_size=8))
    return seed.body[:at] + extra + seed.body[at:], (at, extra)


def _delete_span(draw: st.DrawFn, seed: Seed) -> tuple[bytes, object]:
    at, length = _position(draw, seed), draw(st.integers(min_value=1, max_value=16))
    return seed.body[:at] + seed.body[at + length :], (at, length)


def _overwrite_span(draw: st.DrawFn, seed: Seed) -> tuple[bytes, object]:
    at, extra = _position(draw, seed), draw(st.binary(min_size=1, max_size=8))
    return seed.body[:at] + extra + seed.body[at + len(extra) :], (at, extra)


def _replace_node(draw: st.DrawFn, seed: Seed) -> tuple[bytes, object]:
    path, value = draw(st.sampled_from(seed.paths)), draw(JSON_VALUES)
    return json.dumps(replaced(seed.document, path, value)).encode(), (path, value)


def _remove_node(draw: st.DrawFn, seed: Seed) -> tuple[bytes, object]:
    path = draw(st.sampled_from(seed.paths))
    return json.dumps(removed(seed.document, path)).encode(), path


def _duplicate_key(draw: st.DrawFn, seed: Seed) -> tuple[bytes, object]:
    objects = [()] + [p for p in seed.paths if isinstance(_at(seed.document, p), dict)]
    path = draw(st.sampled_from(objects))
    node = _at(seed.document, path)
    key = draw(st.sampled_from(sorted(node)) if node else st.just("id"))
    value, first = draw(JSON_VALUES), draw(st.booleans())
    text = dumps_with_duplicate(seed.document, path, key, value, first=first)
    return text.encode(), (path, key, value, first)


def _number_literal(draw: st.DrawFn, seed: Seed) -> tuple[bytes, object]:
    numeric = [p for p in seed.paths if type(_at(seed.document, p)) is int]
    path, literal = draw(st.sampled_from(numeric)), draw(st.sampled_from(NUMBER_LITERALS))
    marker = "__fuzz_literal__"
    text = json.dumps(replaced(seed.document, path, marker)).replace(json.dumps(marker), literal)
    return text.encode(), (path, literal[:20])


def _reencode(draw: st.DrawFn, seed: Seed) -> tuple[bytes, object]:
    codecs = ["utf-16", "utf-16-le", "utf-16-be", "utf-32", "utf-8-sig", "latin-1", "cp1252"]
    codec = draw(st.sampled_from(codecs))
    document = replaced(seed.document, ("data", "object", "description"), "Jürgen zahlt 20 €")
    return json.dumps(document, ensure_ascii=False).encode(codec, "replace"), codec


def _reformat(draw: st.DrawFn, seed: Seed) -> tuple[bytes, object]:
    indent = draw(st.sampled_from([None, 0, 2, "\t"]))
    ascii_only = draw(st.booleans())
    trailer = draw(st.sampled_from(["", "\n", " \r\n\t", "x", "{}", "\x00"]))
    text = json.dumps(seed.document, indent=indent, ensure_ascii=ascii_only) + trailer
    return text.encode(), (indent, ascii_only, trailer)


def _wrap(draw: st.DrawFn, seed: Seed) -> tuple[bytes, object]:
    depth = draw(st.sampled_from([1, 10, 500, 2000]))
    opener, closer = draw(st.sampled_from([("[", "]"), ('{"a":', "}")]))
    return (opener * depth).encode() + seed.body + (closer * depth).encode(), (depth, opener)


MUTATIONS: Final[Mapping[str, Mutation]] = {
    "truncate": _truncate,
    "flip_bit": _flip_bit,
    "insert_bytes": _insert_bytes,
    "delete_span": _delete_span,
    "overwrite_span": _overwrite_span,
    "replace_node": _replace_node,
    "remove_node": _remove_node,
    "duplicate_key": _duplicate_key,
    "number_literal": _number_literal,
    "reencode": _reencode,
    "reformat": _reformat,
    "wrap": _wrap,
}


@st.composite
def signed_mutation(draw: st.DrawFn) -> tuple[str, bytes, OrderTerms]:
    """(description, mutated body, the event's order) from a fresh realistic event."""
    document = fresh_event(draw(st.sampled_from(SUPPORTED_TYPES)))
    seed = Seed(document, encode_event(document), list(walk(document)))
    kind = draw(st.sampled_from(sorted(MUTATIONS)))
    mutated, detail = MUTATIONS[kind](draw, seed)
    return f"{kind}:{detail!r}"[:300], mutated, order_terms(document)


def _at(document: Json, path: Path) -> Json:
    node = document
    for key in path:
        node = node[key]
    return node


@HYPOTHESIS
@given(mutation=signed_mutation())
async def test_signed_mutations_are_answered_as_the_envelope_oracle_says(
    client: Client,
    engine: AsyncEngine,
    redis: ArqRedis,
    queue_name: str,
    settings: Settings,
    mutation: tuple[str, bytes, OrderTerms],
) -> None:
    """A signed mutation of a realistic event: 400 and nothing recorded when it is not an
    envelope; 200, recorded once (and enqueued when in scope) when it is; and an accepted one
    reconciles as the object oracle says, without touching orders when it is unusable."""
    description, body, terms = mutation
    expected = envelope_oracle(body)
    rows_before = await inbox_count(engine)
    queued_before = await redis.zcard(queue_name)

    status, answer = await post_signed(client, body)

    if expected is None or (not expected.rfc_json and status == 400):
        assert_rejected(status, answer, description)
        assert await inbox_count(engine) == rows_before, description
        assert await redis.zcard(queue_name) == queued_before, description
    else:
        assert status == 200, (status, answer, description)
        assert answer["event_id"] == expected.event_id, description
        new = not answer["duplicate"]
        assert await inbox_count(engine) == rows_before + new, description
        enqueued = new and expected.in_scope
        assert await redis.zcard(queue_name) == queued_before + enqueued, description
        if new and expected.in_scope:
            record = await get_event(engine, expected.event_id)
            assert record is not None
            assert record.status == "pending"
            await _register(engine, terms)
            await check_reconciliation(
                worker_ctx(settings, engine),
                engine,
                [Accepted(expected, description)],
                concurrency=1,
            )
    await assert_healthy(client)


async def _register(engine: AsyncEngine, terms: OrderTerms) -> None:
    """Register the event's order (as the merchant would have) unless a mutation already did."""
    if await get_order(engine, terms.order_id) is None:
        await add_order(engine, terms, now_ms=now_ms())


# --- 3. hand-picked hostile bodies, signed ------------------------------------------------------


@dataclass(frozen=True, slots=True)
class BodyCase:
    name: str
    body: bytes
    # "reject" (400), "too_large" (413), "accept" (200), or "strict" (an envelope only with
    # Python's NaN/Infinity extension: 400 or 200 both keep the contract)
    expect: str
    order: OrderTerms | None = None


def _envelope_text(obj_fragment: str, **envelope: str) -> str:
    """An envelope written by hand, so any token can be made hostile."""
    fields = {
        "id": json.dumps(f"evt_{uuid.uuid4().hex}"),
        "type": json.dumps("payment_intent.succeeded"),
        "created": str(now_ms()),
    }
    fields.update(envelope)
    head = ",".join(f'"{key}":{value}' for key, value in fields.items())
    return "{" + head + ',"data":{"object":' + obj_fragment + "}}"


def _succeeded_with(field: str, literal: str) -> BodyCase:
    """A realistic succeeded PI whose `field` is written as the raw token `literal`."""
    document = fresh_event("payment_intent.succeeded")
    marker = "__fuzz_literal__"
    obj = json.dumps(replaced(document["data"]["object"], (field,), marker))
    text = _envelope_text(obj.replace(json.dumps(marker), literal), id=json.dumps(document["id"]))
    expect = "strict" if literal in ("NaN", "Infinity", "-Infinity") else "accept"
    return BodyCase(f"object {field}={literal[:20]}", text.encode(), expect, order_terms(document))


def hostile_bodies(max_body_bytes: int) -> list[BodyCase]:
    event = fresh_event("payment_intent.succeeded")
    genuine = encode_event(event)
    text = json.dumps(
        replaced(event, ("data", "object", "description"), "Jürgen zahlt 20 € ✓"),
        ensure_ascii=False,
    )
    deep = 100_000
    cases = [
        BodyCase("empty", b"", "reject"),
        BodyCase("whitespace", b" \r\n\t ", "reject"),
        *(
            BodyCase(f"json {token}", token.encode(), "reject")
            for token in ("null", "true", "1", '"x"', "[]", "{}")
        ),
        BodyCase("deep array 1e5", b"[" * deep + b"]" * deep, "reject"),
        BodyCase("deep object 1e5", b'{"a":' * deep + b"1" + b"}" * deep, "reject"),
        BodyCase(
            "deep nesting 1e5 inside data.object",
            _envelope_text('{"id":"pi_x","x":' + "[" * deep + "]" * deep + "}").encode(),
            "reject",
        ),
        BodyCase("unclosed deep nesting", b"[" * deep, "reject"),
        BodyCase("latin-1 body", text.encode("latin-1", "replace"), "reject"),
        BodyCase("utf-16 with BOM", text.encode("utf-16"), "reject"),
        BodyCase("utf-16-be", text.encode("utf-16-be"), "reject"),
        BodyCase("utf-32", text.encode("utf-32"), "reject"),
        BodyCase("utf-8 BOM", text.encode("utf-8-sig"), "reject"),
        BodyCase("invalid utf-8 inside a string", genuine.replace(b'"EUR"', b'"EU\xff"'), "reject"),
        BodyCase("overlong utf-8 slash", genuine.replace(b'"EUR"', b'"\xc0\xafEUR"'), "reject"),
        BodyCase("trailing garbage", genuine + b"x", "reject"),
        BodyCase("two documents", genuine + genuine, "reject"),
        BodyCase("single quotes", genuine.replace(b'"', b"'"), "reject"),
        BodyCase("comment", b"/*c*/" + genuine, "reject"),
        BodyCase("raw NUL in JSON text", genuine.replace(b'"EUR"', b'"EUR\x00"'), "reject"),
        *(
            BodyCase(
                f"created={literal[:12]}", _envelope_text("{}", created=literal).encode(), "reject"
            )
            for literal in (
                "1" + "0" * 400,
                "1e999",
                "-1e999",
                "-0",
                "0",
                "NaN",
                "Infinity",
                "1.0",
                '"1700000000000"',
                "true",
                "null",
                str(2**63),
                "9" * 5000,
                "-1",
            )
        ),
        BodyCase(
            "created=2**63-1", _envelope_text("{}", created=str(2**63 - 1)).encode(), "accept"
        ),
        BodyCase("id 256 chars", _envelope_text("{}", id=json.dumps("e" * 256)).encode(), "reject"),
        BodyCase(
            "id 255 chars",
            _envelope_text("{}", id=json.dumps("f" * 223 + uuid.uuid4().hex)).encode(),
            "accept",
        ),
        BodyCase(
            "id 255 astral chars",
            _envelope_text(
                "{}", id=json.dumps("\U0001f4b6" * 247 + uuid.uuid4().hex[:8], ensure_ascii=False)
            ).encode(),
            "accept",
        ),
        BodyCase(
            "type 255 astral chars",
            _envelope_text("{}", type=json.dumps("\U0001f4b6" * 255, ensure_ascii=False)).encode(),
            "accept",
        ),
        BodyCase(
            "type 256 chars", _envelope_text("{}", type=json.dumps("t" * 256)).encode(), "reject"
        ),
        BodyCase(
            "id with NUL escape", _envelope_text("{}", id='"evt_\\u0000x"').encode(), "reject"
        ),
        BodyCase("id lone surrogate", _envelope_text("{}", id='"evt_\\ud800"').encode(), "reject"),
        BodyCase(
            "type lone surrogate",
            _envelope_text("{}", type='"payment_intent.\\udc80"').encode(),
            "reject",
        ),
        BodyCase("id bidi override", _envelope_text("{}", id='"evt_\\u202ex"').encode(), "reject"),
        BodyCase("id ANSI escape", _envelope_text("{}", id='"evt_\\u001b[31m"').encode(), "reject"),
        BodyCase("id blank", _envelope_text("{}", id='"   "').encode(), "reject"),
        BodyCase("id number", _envelope_text("{}", id="12345").encode(), "reject"),
        BodyCase("data.object null", _envelope_text("null").encode(), "reject"),
        BodyCase("data.object list", _envelope_text("[]").encode(), "reject"),
        BodyCase(
            "duplicate data, last null",
            _envelope_text("{}")[:-1].encode() + b',"data":null}',
            "reject",
        ),
        BodyCase(
            "over the size limit",
            _envelope_text(json.dumps({"description": "x" * max_body_bytes})).encode(),
            "too_large",
        ),
        BodyCase("over the size limit, not JSON", b"\x00" * (max_body_bytes + 1), "too_large"),
        BodyCase(
            "deep nesting 200 inside data.object (an envelope)",
            _envelope_text('{"id":"pi_x","x":' + "[" * 200 + "]" * 200 + "}").encode(),
            "accept",
        ),
        _succeeded_with("amount", "1" + "0" * 400),
        _succeeded_with("amount", "1e999"),
        _succeeded_with("amount", "NaN"),
        _succeeded_with("amount", "-Infinity"),
        _succeeded_with("amount", "-0"),
        _succeeded_with("amount", str(2**63)),
        _succeeded_with("amount", "2000.0"),
        _succeeded_with("amount_received", "1e400"),
        _succeeded_with("currency", '"\\u0000UR"'),
        _succeeded_with("merchant_order_id", '"' + "o" * 256 + '"'),
        _succeeded_with("merchant_order_id", '"\\ud800"'),
        _succeeded_with("metadata", '{"order_id":' + "[" * 300 + "]" * 300 + "}"),
        _succeeded_with("description", '"' + "\\ud800" * 10 + '"'),
        _succeeded_with("last_payment_error", "1" + "0" * 4000),
    ]
    last_wins = fresh_event("payment_intent.succeeded")
    cases.append(
        BodyCase(
            "duplicate id: the last one wins",
            dumps_with_duplicate(
                last_wins, (), "id", f"evt_first_{uuid.uuid4().hex}", first=True
            ).encode(),
            "accept",
            order_terms(last_wins),
        )
    )
    out_of_scope = fresh_event("payment_intent.succeeded")
    cases.append(
        BodyCase(
            "duplicate type: the last, out of scope, wins",
            dumps_with_duplicate(
                out_of_scope, (), "type", "customer.created", first=False
            ).encode(),
            "accept",
        )
    )
    return cases


async def test_hostile_signed_bodies(
    client: Client, engine: AsyncEngine, redis: ArqRedis, queue_name: str, settings: Settings
) -> None:
    """Deep nesting (10^5), huge and non-finite numbers, -0, NaN, non-UTF-8 and UTF-16/32 bodies,
    BOMs, lone surrogates, control characters, duplicate keys, oversized bodies: each signed with
    the secret. The answer is 400/413/200 as the case says (and as the oracle agrees); only the
    accepted ones are recorded; those in scope reconcile as the object oracle says."""
    cases = hostile_bodies(settings.max_body_bytes)
    accepted: list[Accepted] = []
    mismatches = []
    for case in cases:
        oracle = envelope_oracle(case.body) if len(case.body) <= settings.max_body_bytes else None
        judged = "reject" if oracle is None else "accept" if oracle.rfc_json else "strict"
        if case.expect != "too_large":
            assert judged == case.expect, f"the oracle says {judged} for {case.name}"
        status, answer = await post_signed(client, case.body)
        wanted = {"reject": {400}, "too_large": {413}, "accept": {200}, "strict": {200, 400}}
        if status not in wanted[case.expect]:
            mismatches.append((case.name, status, str(answer)[:200]))
        elif oracle is not None and status == 200:
            assert answer == {"received": True, "event_id": oracle.event_id, "duplicate": False}
            accepted.append(Accepted(oracle, case.name))
            if case.order is not None:
                await add_order(engine, case.order, now_ms=now_ms())
    assert not mismatches, mismatches
    assert await inbox_count(engine) == len(accepted)
    assert await redis.zcard(queue_name) == sum(a.envelope.in_scope for a in accepted)
    await check_reconciliation(
        worker_ctx(settings, engine), engine, accepted, concurrency=reconcile_concurrency(engine)
    )
    await assert_healthy(client)


# --- 4. wrong types in every field --------------------------------------------------------------

_unique = itertools.count()
# Unique across runs too: a string replacing an event `id` becomes an arq job id.
_RUN = uuid.uuid4().hex[:8]


def replacements() -> list[Callable[[], Json]]:
    """null / bool / number / string / list / object (and more in a deep run); callables so
    every string is unique (a replaced `id` must not collide with another case's)."""
    values: list[Callable[[], Json]] = [
        lambda: None,
        lambda: True,
        lambda: 42,
        lambda: 2.5,
        lambda: f"fuzz-{_RUN}-{next(_unique)}",
        lambda: [1, "x"],
        lambda: {"k": "v"},
    ]
    if deep_run():
        values += [
            lambda: False,
            lambda: 0,
            lambda: -1,
            lambda: 2**64,
            lambda: "",
            lambda: "EUR",
            lambda: [],
            lambda: {},
        ]
    return values


def wrong_type_cases() -> list[tuple[str, dict[str, Json], OrderTerms]]:
    """(name, mutated event, the order of the unmutated event) for every path and replacement."""
    cases = []
    envelope_ids: set[str] = set()
    for event_type in WALK_TYPES:
        for path in walk(fresh_event(event_type)):
            for make in replacements():
                value, original = make(), fresh_event(event_type)
                if path == ("id",) and isinstance(value, str):
                    if value in envelope_ids:
                        continue  # a fixed string as the event id: once, or it is a duplicate
                    envelope_ids.add(value)
                name = f"{event_type} {'.'.join(map(str, path))}={value!r}"
                cases.append((name, replaced(original, path, value), order_terms(original)))
    return cases


async def test_wrong_type_in_every_field_of_a_signed_event(
    client: Client, engine: AsyncEngine, redis: ArqRedis, queue_name: str, settings: Settings
) -> None:
    """Walk the JSON tree of realistic events and replace each node, in turn, by null, a bool, a
    number, a string, a list and an object; sign and post each. Envelope breakers get 400 and are
    not recorded; the rest get 200 and are recorded (out-of-scope types as `ignored`, never
    enqueued). Then every accepted event with an unusable object, and a sample of the usable ones
    (all of them in a deep run), is reconciled against its registered order: unusable objects
    are parked `failed` and no order changes; usable ones are applied (or retried while their
    order is unknown)."""
    cases = wrong_type_cases()
    gate = asyncio.Semaphore(POST_CONCURRENCY)

    async def deliver(name: str, document: dict[str, Json]) -> tuple[str, bytes, int, Json]:
        body = encode_event(document)
        async with gate:
            status, answer = await post_signed(client, body)
        return name, body, status, answer

    results = await asyncio.gather(*(deliver(name, doc) for name, doc, _ in cases))
    accepted: list[tuple[Accepted, OrderTerms]] = []
    mismatches = []
    for (name, body, status, answer), (_, _, terms) in zip(results, cases, strict=True):
        oracle = envelope_oracle(body)
        if oracle is None:
            if status != 400:
                mismatches.append((name, status, answer))
        elif status != 200 or answer.get("event_id") != oracle.event_id or answer["duplicate"]:
            mismatches.append((name, status, answer))
        else:
            accepted.append((Accepted(oracle, name), terms))
    assert not mismatches, f"{len(mismatches)} answers differ from the oracle: {mismatches[:10]}"
    assert await inbox_count(engine) == len(accepted)
    assert await redis.zcard(queue_name) == sum(a.envelope.in_scope for a, _ in accepted)
    for item, _ in accepted:
        if not item.envelope.in_scope:
            record = await get_event(engine, item.envelope.event_id)
            assert record is not None
            assert record.status == "ignored", item.context

    in_scope = [(a, terms) for a, terms in accepted if a.envelope.in_scope]
    broken = [(a, terms) for a, terms in in_scope if a.problems]
    usable = [(a, terms) for a, terms in in_scope if not a.problems]
    step = 1 if deep_run() else max(len(usable) // USABLE_SAMPLE, 1)
    chosen = broken + usable[::step]
    assert broken, "the walk produced no unusable object: the oracle or the walk is broken"
    # Each chosen event's own order, registered as the merchant would, with the unmutated links.
    for _, terms in chosen:
        await add_order(engine, terms, now_ms=now_ms())
    await check_reconciliation(
        worker_ctx(settings, engine),
        engine,
        [a for a, _ in chosen],
        concurrency=reconcile_concurrency(engine),
    )
    await assert_healthy(client)


# --- 5. hand-written HTTP: header injection, framing, encodings --------------------------------


@dataclass(frozen=True, slots=True)
class RawCase:
    name: str
    request: bytes
    allowed: frozenset[int]
    # The event a 200 records; None when nothing may be recorded whatever the answer.
    event_id: str | None = None


Header = tuple[bytes, bytes]
GOOD: Final = b"{good}"  # placeholder: the genuine signature of the event
LENGTH: Final = b"{length}"  # placeholder: the length of the body sent
BAD_SIGNATURE: Final = b"t=1,v1=" + b"0" * 64
SIGNED: Final[Header] = (b"Wooshpay-Signature", GOOD)
SIZED: Final[Header] = (b"Content-Length", LENGTH)
CHUNKED: Final[Header] = (b"Transfer-Encoding", b"chunked")
FULLWIDTH_T: Final = "t=\uff11\uff17\uff10\uff10\uff10\uff10\uff10\uff10\uff10\uff10,v1=".encode()


def _chunked(body: bytes) -> bytes:
    return b"%x\r\n" % len(body) + body + b"\r\n0\r\n\r\n"


def _raw_case(
    name: str,
    headers: Sequence[Header],
    allowed: set[int],
    *,
    body: Callable[[bytes], bytes] | None = None,
    may_record: bool = False,
) -> RawCase:
    """A request around a fresh genuine event; placeholders in header values are filled in."""
    document = fresh_event("payment_intent.succeeded")
    genuine = encode_event(document)
    sent = genuine if body is None else body(genuine)
    good, length = signature_for(genuine).encode(), str(len(sent)).encode()
    filled = [(k, v.replace(GOOD, good).replace(LENGTH, length)) for k, v in headers]
    event_id = document["id"] if may_record else None
    return RawCase(name, http_request(filled, sent), frozenset(allowed), event_id)


def raw_cases(max_body_bytes: int) -> list[RawCase]:
    """Requests aiohttp's client refuses to write. (Content-Encoding: see
    test_undecodable_content_encoding_is_400_not_500; an incomplete body: the slow-client tests
    in test_abusive_clients.)"""
    signature = b"Wooshpay-Signature"
    either = {200, 400}  # a lenient reading may accept the genuine signature; never 500
    return [
        # CR / LF / obs-fold inside the signature value: refused, never re-split into headers.
        _raw_case("bare CR in the value", [SIZED, (signature, GOOD + b"\rX-Injected: 1")], {400}),
        _raw_case("bare LF in the value", [SIZED, (signature, GOOD + b"\nX-Injected: 1")], {400}),
        _raw_case(
            "CRLF, then a second (good) signature header",
            [SIZED, (signature, BAD_SIGNATURE + b"\r\nWooshpay-Signature: " + GOOD)],
            either,
            may_record=True,
        ),
        _raw_case(
            "obs-fold continuation line",
            [SIZED, (signature, GOOD + b"\r\n x=1")],
            either,
            may_record=True,
        ),
        _raw_case("NUL in the value", [SIZED, (signature, GOOD + b"\x00")], {400}),
        _raw_case("DEL in the value", [SIZED, (signature, GOOD + b"\x7f")], {400}),
        _raw_case("latin-1 bytes in the value", [SIZED, (signature, GOOD + b",x=\xff")], {400}),
        _raw_case("fullwidth digits in t", [SIZED, (signature, FULLWIDTH_T + b"0" * 64)], {400}),
        _raw_case("empty value", [SIZED, (signature, b"")], {400}),
        _raw_case("whitespace value", [SIZED, (signature, b" \t ")], {400}),
        _raw_case(
            "tabs around the value",
            [SIZED, (signature, b"\t" + GOOD + b"\t")],
            {200},
            may_record=True,
        ),
        _raw_case("5 KB value", [SIZED, (signature, b"t=1,v1=" + b"a" * 5000)], {400}),
        _raw_case("9 KB value", [SIZED, (signature, b"t=1,v1=" + b"a" * 9000)], {400, 431}),
        _raw_case("100 KB value", [SIZED, (signature, b"t=1,v1=" + b"a" * 100_000)], {400, 431}),
        _raw_case(
            "200 headers",
            [SIZED, SIGNED, *((b"X-H%d" % i, b"v") for i in range(200))],
            {400, 431},
        ),
        _raw_case(
            "lower-case header names",
            [(b"content-length", LENGTH), (b"wooshpay-signature", GOOD)],
            {200},
            may_record=True,
        ),
        _raw_case("space before the colon", [SIZED, (b"Wooshpay-Signature ", GOOD)], {400}),
        _raw_case(
            "two signature headers, good first",
            [SIZED, SIGNED, (signature, BAD_SIGNATURE)],
            either,
            may_record=True,
        ),
        _raw_case(
            "two signature headers, good last",
            [SIZED, (signature, BAD_SIGNATURE), SIGNED],
            either,
            may_record=True,
        ),
        _raw_case(
            "CR in another header",
            [SIZED, SIGNED, (b"Content-Type", b"application/json\rX: y")],
            {400},
        ),
        # Framing: the body must be exactly what was declared, declared once.
        _raw_case("Content-Length and Transfer-Encoding", [SIZED, CHUNKED, SIGNED], {400}),
        _raw_case(
            "two different Content-Lengths",
            [SIZED, (b"Content-Length", LENGTH + b"1"), SIGNED],
            {400},
        ),
        *(
            _raw_case(f"Content-Length {value!r}", [(b"Content-Length", value), SIGNED], {400, 413})
            for value in (b"-1", b"+10", b"12a", b"1" + b"0" * 30, b"0x10", b"")
        ),
        _raw_case("chunked, genuine", [CHUNKED, SIGNED], {200}, body=_chunked, may_record=True),
        _raw_case(
            "chunked, bad chunk size",
            [CHUNKED, SIGNED],
            {400},
            body=lambda genuine: b"ZZ\r\n" + genuine + b"\r\n0\r\n\r\n",
        ),
        _raw_case(
            "chunked, over the size limit",
            [CHUNKED, SIGNED],
            {413},
            body=lambda genuine: _chunked(genuine + b" " * max_body_bytes),
        ),
        _raw_case(
            "signature only in a chunked trailer",
            [CHUNKED],
            {400},
            body=lambda genuine: _chunked(genuine)[:-2] + b"Wooshpay-Signature: t=1\r\n\r\n",
        ),
        _raw_case(
            "Transfer-Encoding: gzip, chunked",
            [(b"Transfer-Encoding", b"gzip, chunked"), SIGNED],
            {200, 400, 501},
            body=_chunked,
            may_record=True,
        ),
        _raw_case(
            "unknown Content-Encoding",
            [SIZED, SIGNED, (b"Content-Encoding", b"x-unknown")],
            {200, 400, 415},
            may_record=True,
        ),
    ]


def _http10_without_length() -> RawCase:
    document = fresh_event("payment_intent.succeeded")
    genuine = encode_event(document)
    request = http_request([(b"Wooshpay-Signature", signature_for(genuine).encode())], genuine)
    return RawCase(
        "HTTP/1.0 without Content-Length",
        request.replace(b" HTTP/1.1\r\n", b" HTTP/1.0\r\n", 1),
        frozenset({400}),
    )


async def test_hand_written_http_requests(
    client: Client, engine: AsyncEngine, redis: ArqRedis, queue_name: str, settings: Settings
) -> None:
    """Header injection (CR, LF, obs-fold, NUL), duplicate signature headers, oversized and empty
    headers, conflicting framing, chunked bodies and trailers: each answer is one of the
    statuses the case allows (never 500), and only a 200 may record (its event, once)."""
    host, port = str(client.server.host), int(client.server.port or 0)
    cases = [*raw_cases(settings.max_body_bytes), _http10_without_length()]
    mismatches, recorded = [], set()
    for case in cases:
        answer = await raw_exchange(host, port, case.request, timeout_s=3)
        if answer.status not in case.allowed:
            mismatches.append((case.name, answer.status, answer.body[:160]))
        if answer.status == 200:
            assert case.event_id is not None, case.name
            recorded.add(case.event_id)
    assert not mismatches, mismatches
    rows = {row.event_id for row in await _all_events(engine)}
    assert rows == recorded
    assert await redis.zcard(queue_name) == len(recorded)
    await assert_healthy(client)


async def _all_events(engine: AsyncEngine) -> list[Any]:
    async with engine.connect() as connection:
        return list((await connection.execute(select(events.c.event_id))).all())


@HYPOTHESIS
@given(value=st.binary(max_size=600), body=st.binary(max_size=200))
async def test_arbitrary_signature_header_bytes(
    client: Client, engine: AsyncEngine, redis: ArqRedis, queue_name: str, value: bytes, body: bytes
) -> None:
    """Any bytes at all (CR, LF, NUL, non-ASCII included) as the signature header value, on a
    raw socket: the answer is 400 (from the parser or the handler), nothing is recorded."""
    request = http_request(
        [(b"Content-Length", str(len(body)).encode()), (b"Wooshpay-Signature", value)], body
    )
    answer = await raw_exchange(str(client.server.host), int(client.server.port or 0), request)
    assert answer.status == 400, (value, answer.data[:200])
    assert await inbox_count(engine) == 0
    assert await redis.zcard(queue_name) == 0


@pytest.mark.parametrize(
    ("coding", "garbage"),
    [
        ("gzip", b"not gzip at all"),
        ("gzip", b"\x1f\x8b\x08\x00" + b"\xff" * 40),  # the gzip magic, then nonsense
        ("deflate", b"not zlib at all"),
        ("br", b"not brotli"),
        ("zstd", b"not zstd"),
    ],
    ids=["gzip-text", "gzip-magic-then-garbage", "deflate-text", "br-text", "zstd-text"],
)
async def test_undecodable_content_encoding_is_400_not_500(
    client: Client,
    engine: AsyncEngine,
    redis: ArqRedis,
    queue_name: str,
    coding: str,
    garbage: bytes,
) -> None:
    """A body whose Content-Encoding does not decode is bad input (README, HTTP: never 500), signed
    or not; nothing is recorded or enqueued, and the process keeps serving."""
    for signature in (None, signature_for(garbage)):
        headers = [
            (b"Content-Length", str(len(garbage)).encode()),
            (b"Content-Encoding", coding.encode()),
        ]
        if signature is not None:
            headers.append((b"Wooshpay-Signature", signature.encode()))
        answer = await raw_exchange(
            str(client.server.host), int(client.server.port or 0), http_request(headers, garbage)
        )
        assert answer.status == 400, (coding, signature is not None, answer.data[:200])
    assert await inbox_count(engine) == 0
    assert await redis.zcard(queue_name) == 0
    await assert_healthy(client)
