#!/usr/bin/env python3
"""Sign a Stripe event the way Stripe does and POST it to the local receiver (`make dev`).

    python3 infra/send.py invoice.paid                 # a fixture from tests/fixtures/stripe/events
    python3 infra/send.py path/to/event.json --count 3 # fresh event ids, one delivery each
    python3 infra/send.py charge.refunded --duplicate  # deliver twice (the second is a duplicate)

The secret is $STRIPE_WEBHOOK_SECRET (first of the list) or the one `make dev` keeps in
.local/webhook-secret. Standard library only.
"""
import argparse
import hashlib
import hmac
import json
import os
import pathlib
import secrets
import sys
import time
import urllib.error
import urllib.request

ROOT = pathlib.Path(__file__).resolve().parent.parent
FIXTURES = ROOT / "tests" / "fixtures" / "stripe" / "events"


def signing_secret() -> str:
    from_env = os.environ.get("STRIPE_WEBHOOK_SECRET", "").split(",")[0].strip()
    if from_env:
        return from_env
    kept = ROOT / ".local" / "webhook-secret"
    if kept.exists():
        return kept.read_text().strip()
    sys.exit("send.py: no secret: set STRIPE_WEBHOOK_SECRET or run `make dev` once")


def signature(body: bytes, secret: str, t: int) -> str:
    """Stripe's scheme: HMAC-SHA256 keyed by the whole whsec_ string over b"<t>." + body."""
    mac = hmac.new(secret.encode(), f"{t}.".encode() + body, hashlib.sha256).hexdigest()
    return f"t={t},v1={mac}"


def post(url: str, body: bytes, header: str) -> tuple[int, str]:
    request = urllib.request.Request(
        url, data=body, method="POST",
        headers={"Content-Type": "application/json", "Stripe-Signature": header},
    )
    try:
        with urllib.request.urlopen(request, timeout=600) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as error:
        return error.code, error.read().decode()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("event", help="event type of a fixture (e.g. invoice.paid) or a JSON file")
    parser.add_argument("--url", default=f"http://127.0.0.1:{os.environ.get('DEV_PORT', '9000')}"
                        "/lambda-url/receiver/webhooks/stripe")
    parser.add_argument("--count", type=int, default=1, help="events to send, each with a fresh id")
    parser.add_argument("--duplicate", action="store_true", help="deliver each event twice")
    args = parser.parse_args()

    path = pathlib.Path(args.event)
    if not path.exists():
        path = FIXTURES / f"{args.event}.json"
    if not path.exists():
        sys.exit(f"send.py: no such file or fixture: {args.event}")
    template = json.loads(path.read_text())
    secret = signing_secret()
    failed = 0
    for i in range(args.count):
        event = dict(template)
        if args.count > 1:
            event["id"] = f"evt_local{secrets.token_hex(8)}"
        body = json.dumps(event, indent=2).encode() if args.count > 1 else path.read_bytes()
        for _ in range(2 if args.duplicate else 1):
            status, answer = post(args.url, body, signature(body, secret, int(time.time())))
            print(f"{event['id']} {event.get('type')}: {status} {answer}")
            failed += status >= 300
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
