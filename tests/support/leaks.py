"""Canaries: distinctive values that must never reach a log line, and the search for them.

The suite runs the service with canaries where production has secrets (the webhook secrets, the
database and Redis passwords) and where production has personal data (the customer's name and
street in the billing details of events). `find_leaks` tells which canaries a text contains,
whether printed plainly (a repr, a str, part of either) or hex- or base64-encoded (how bytes
end up in a PostgreSQL error or a serialised payload).

Only values that must never print are canaries: a secret an attacker guesses, or the public
development secret the `dev` banner shows, is not one.
"""

from __future__ import annotations

import base64
from dataclasses import dataclass
from typing import Any, Final
from urllib.parse import urlsplit, urlunsplit

import redis
from redis.exceptions import RedisError
from sqlalchemy.engine import make_url

# Each webhook secret the suite configures starts with this token, right after `whsec_`:
# structlog cuts each local variable's repr at 80 characters, so a token further back could
# hide in the cut-off tail of a leak.
WEBHOOK_SECRET_TOKEN: Final = "iezbTD2j8n5k8jjWs0K0"
# Both servers ignore them (PostgreSQL with trust authentication, Redis without requirepass).
DATABASE_PASSWORD: Final = "1NpfYvL7N668ozDFwKeS"
REDIS_PASSWORD: Final = "8n5BpW14aDhDNqKxWb1B"
CUSTOMER_SURNAME: Final = "Quillfeather"
CUSTOMER_NAME: Final = f"Zenobia {CUSTOMER_SURNAME}-Oyelaran"
CUSTOMER_STREET: Final = "Kanarienvogelweg"
CUSTOMER_EMAIL: Final = f"zenobia.{CUSTOMER_SURNAME}@mail.example"

REDIS_USER: Final = "default"  # the user a server without ACL configuration has
PREVIEW_CHARS: Final = 4
# A printed value cut short (structlog cuts each local's repr at 80 characters) still leaks what
# it shows: the first this many characters of a token count as the token.
PREFIX_CHARS: Final = 12
BASE64_GROUP: Final = 3  # bytes per base64 quantum


@dataclass(frozen=True, slots=True)
class Canary:
    """A value that must never print; `name` says what it stands for and is safe to print."""

    name: str
    token: str

    def forms(self) -> tuple[str, ...]:
        """The token and its first PREFIX_CHARS characters, its hex, and the base64 that encodes
        it at any byte offset; longest first."""
        raw = self.token.encode()
        forms = {self.token, self.token[:PREFIX_CHARS], raw.hex(), raw.hex().upper()}
        for start in range(BASE64_GROUP):
            # A base64 text holding the token encodes it from some byte offset; the whole
            # quanta after that offset come out the same whatever surrounds the token.
            whole = raw[start : start + (len(raw) - start) // BASE64_GROUP * BASE64_GROUP]
            forms.add(base64.b64encode(whole).decode())
            forms.add(base64.urlsafe_b64encode(whole).decode())
        return tuple(sorted(forms, key=lambda form: (-len(form), form)))

    def hint(self) -> str:
        """How a report names the canary without printing it."""
        return f"{self.name} ({self.token[:PREVIEW_CHARS]}..., {len(self.token)} characters)"


CANARIES: Final = (
    Canary("webhook secret", WEBHOOK_SECRET_TOKEN),
    Canary("database password", DATABASE_PASSWORD),
    Canary("Redis password", REDIS_PASSWORD),
    Canary("customer name", CUSTOMER_SURNAME),
    Canary("customer street", CUSTOMER_STREET),
)
_FORMS: Final = tuple((canary, canary.forms()) for canary in CANARIES)


@dataclass(frozen=True, slots=True)
class Leak:
    canary: Canary
    line: int  # 1-based, within the text searched


def locate_leaks(text: str, *, first_line: int = 1) -> list[Leak]:
    """Every (canary, line) where a canary occurs in `text`."""
    if not any(form in text for _, forms in _FORMS for form in forms):
        return []  # the usual case, without splitting the text into lines
    return [
        Leak(canary, number)
        for number, line in enumerate(text.splitlines(), start=first_line)
        for canary, forms in _FORMS
        if any(form in line for form in forms)
    ]


def find_leaks(text: str) -> list[str]:
    """The names of the canaries `text` contains, each once."""
    return list(dict.fromkeys(leak.canary.name for leak in locate_leaks(text)))


def redact(text: str) -> str:
    """`text` with every canary replaced by its name: safe to show in a failure message.
    (Longest forms first, so a token is replaced whole rather than just its prefix.)"""
    for canary, forms in _FORMS:
        for form in forms:
            text = text.replace(form, f"[{canary.name}]")
    return text


def describe_leaks(leaks: list[Leak], where: str) -> list[str]:
    """One line per leak, naming the canary and where it is, never the value itself."""
    return [f"{leak.canary.hint()} in {where}, line {leak.line}" for leak in leaks]


# --- putting the canaries where production has secrets and personal data ----------------------


def webhook_secret(purpose: str) -> str:
    """A webhook endpoint secret carrying the canary token; `purpose` tells the suite's apart."""
    return f"whsec_{WEBHOOK_SECRET_TOKEN}_{purpose}"


def with_database_password(url: str) -> str:
    """A PostgreSQL URL given the canary password, unless it already has a password of its own
    (a server that checks passwords needs that one)."""
    parsed = make_url(url)
    if parsed.get_backend_name() != "postgresql" or parsed.password is not None:
        return url
    return parsed.set(password=DATABASE_PASSWORD).render_as_string(hide_password=False)


def with_redis_password(url: str) -> str:
    """`url` with the canary as the default user's password, when the server accepts it.

    A server without requirepass refuses `AUTH <password>` but accepts `AUTH default <password>`
    (Redis 6 and later, whose default user has `nopass`); older servers refuse both, and a URL
    that already has credentials keeps them. In those cases `url` comes back unchanged.
    """
    parts = urlsplit(url)
    if parts.scheme not in ("redis", "rediss") or parts.username or parts.password:
        return url
    netloc = f"{REDIS_USER}:{REDIS_PASSWORD}@{parts.netloc}"
    candidate = urlunsplit(parts._replace(netloc=netloc))
    client = redis.Redis.from_url(candidate, socket_timeout=2, socket_connect_timeout=2)
    try:
        client.ping()
    except RedisError:
        return url
    finally:
        client.close()
    return candidate


def add_customer(event: dict[str, Any]) -> dict[str, Any]:
    """Give the event's object the canary customer, where WooshPay puts one; returns `event`.

    PaymentIntents carry billing details in `payment_method_data`, Checkout Sessions carry
    `customer_details`; refunds name no customer.
    """
    obj = event["data"]["object"]
    address = {"line1": f"{CUSTOMER_STREET} 47", "postal_code": "10115", "city": "Berlin"}
    if obj.get("object") == "payment_intent":
        details = obj["payment_method_data"]["billing_details"]
        details.update(name=CUSTOMER_NAME, email=CUSTOMER_EMAIL)
        details["address"] = {**address, **details.get("address", {})}
    elif obj.get("object") == "checkout.session":
        obj["customer_email"] = CUSTOMER_EMAIL
        obj["customer_details"] = {
            "name": CUSTOMER_NAME,
            "email": CUSTOMER_EMAIL,
            "address": {**address, "country": "DE"},
        }
    return event


def assert_no_leaks(text: str, where: str) -> None:
    """Fail naming every canary `text` holds (and its line), never printing the value."""
    found = describe_leaks(locate_leaks(text), where)
    assert not found, "canaries leaked:\n" + "\n".join(found)
