"""`send`: build (or read) a WooshPay event, sign it and POST it (development, smoke tests)."""

from __future__ import annotations

import time
from pathlib import Path

import aiohttp
import click

from service.cli.common import EXIT_FAILED, EXIT_USAGE, fail, run
from service.devtools.sender import (
    PAYABLE_TYPE,
    SUPPORTED_TYPES,
    EventOptions,
    SendResult,
    build_event,
    encode_event,
    post_event,
)
from service.domain.events import RefundStatus

HELP = "\n\n".join(
    [
        "Build a realistic WooshPay event, sign it and POST it to --url; print the answer. "
        "With --file, sign and send that event body as it is instead.",
        "\b\nEVENT_TYPE is one of:\n" + "\n".join(f"  {name}" for name in SUPPORTED_TYPES),
        "The objects are WooshPay SOFORT payments; the PaymentIntent and Checkout Session ids "
        "derive from --order-id, so separate sends for one order describe one payment. "
        f"With --paid, {PAYABLE_TYPE} carries a session already paid (by card).",
    ]
)


@click.command(help=HELP)
@click.argument(
    "event_type", metavar="[EVENT_TYPE]", required=False, type=click.Choice(SUPPORTED_TYPES)
)
@click.option(
    "--file",
    "event_file",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="Sign and send this event body as it is.",
)
@click.option("--url", required=True, help="e.g. http://127.0.0.1:8080/webhooks/wooshpay")
@click.option("--secret", required=True, help="The webhook endpoint secret (whsec_...).")
@click.option(
    "--order-id",
    default=None,
    help="The order the event names (metadata.order_id, merchant_order_id, client_reference_id).",
)
@click.option(
    "--amount",
    type=click.IntRange(min=0),
    default=2000,
    show_default=True,
    help="In minor units: the PaymentIntent amount, the session's amount_total.",
)
@click.option("--currency", default="EUR", show_default=True, help="A three-letter code.")
@click.option(
    "--payment-intent", default=None, help="PaymentIntent id; defaults to one from --order-id."
)
@click.option(
    "--checkout-session", default=None, help="Checkout Session id; defaults to one from --order-id."
)
@click.option(
    "--paid",
    is_flag=True,
    help=f"{PAYABLE_TYPE} only: the session is paid (payment_status paid, by card) "
    "rather than a SOFORT payment still under way.",
)
@click.option("--refund-id", default=None, help="charge.refund.updated: defaults to a new re_ id.")
@click.option(
    "--refund-status",
    # Values, not members: click offers an Enum's names as the choices.
    type=click.Choice(sorted(status.value for status in RefundStatus)),
    default=RefundStatus.SUCCEEDED.value,
    show_default=True,
    help="charge.refund.updated: the refund's status.",
)
@click.option(
    "--refund-amount",
    type=click.IntRange(min=0),
    default=None,
    help="charge.refund.updated, in minor units; defaults to --amount (a full refund).",
)
def send(
    event_type: str | None,
    event_file: Path | None,
    url: str,
    secret: str,
    order_id: str | None,
    amount: int,
    currency: str,
    payment_intent: str | None,
    checkout_session: str | None,
    paid: bool,
    refund_id: str | None,
    refund_status: str,
    refund_amount: int | None,
) -> None:
    if (event_type is None) == (event_file is None):
        raise click.UsageError("give an EVENT_TYPE or --file (not both)")
    if paid and event_type != PAYABLE_TYPE:
        raise click.BadOptionUsage("paid", f"--paid applies only to {PAYABLE_TYPE}")
    if event_file is not None:
        body = event_file.read_bytes()
    else:
        options = EventOptions(
            order_id=order_id,
            amount=amount,
            currency=currency,
            payment_intent=payment_intent,
            checkout_session=checkout_session,
            refund_id=refund_id,
            refund_status=refund_status,
            refund_amount=refund_amount,
            paid=paid,
        )
        try:
            event = build_event(str(event_type), options, now_ms=int(time.time() * 1000))
        except ValueError as error:
            fail(str(error), code=EXIT_USAGE)
        body = encode_event(event)
        click.echo(f"sending {event['type']} {event['id']}")
    result = _post(url, body, secret)
    click.echo(f"HTTP {result.status} {result.body}")
    if not 200 <= result.status < 300:
        raise SystemExit(EXIT_FAILED)


def _post(url: str, body: bytes, secret: str) -> SendResult:
    try:
        return run(post_event(url, body, secret))
    except (aiohttp.ClientError, TimeoutError, OSError) as error:
        fail(f"could not reach {url}: {type(error).__name__} {error}")
