#!/usr/bin/env python3
"""A stand-in for the payments console's Rust server, to develop and screenshot page.html without it.

Serves page.html at / (placeholders replaced) and canned JSON for the console's API:

    GET  /api/events?type=&outcome=&cursor=&limit=   newest first, 20 a page by default
    GET  /api/types
    GET  /api/summary
    GET  /api/events/{id}
    POST /api/events/{id}/replay     needs X-Console-Token and Content-Type: application/json
    POST /api/events/{id}/redrive    the same; empties the event's dead letters

Standard library only.  Usage:

    python3 cli/dev/console_mock_server.py --port 8765 [--token T] [--env LABEL]
        [--new-event-every SECONDS] [--fail-every N] [--quiet]
"""

import argparse
import base64
import datetime as dt
import html
import json
import re
import secrets
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, unquote, urlsplit

PAGE = Path(__file__).resolve().parent.parent / "src" / "console" / "page.html"
TIME_ZONE = "Europe/Paris"
try:
    from zoneinfo import ZoneInfo

    TZ = ZoneInfo(TIME_ZONE)
except Exception:  # no tz database on this machine: a fixed offset will do for a mock
    TZ = dt.timezone(dt.timedelta(hours=1), "CET")

EXPONENT = {"usd": 2, "eur": 2, "jpy": 0, "kwd": 3}
OUTCOMES = ("succeeded", "failed", "disputed", "unknown")


def money(amount, currency):
    """Minor units to the display the Rust side would produce: $123.45, €89.00, ¥1,000, KWD 1.234."""
    if amount is None or currency is None:
        return None
    exp = EXPONENT.get(currency, 2)
    major = f"{amount / 10 ** exp:,.{exp}f}"
    return {"usd": f"${major}", "eur": f"€{major}", "jpy": f"¥{major}"}.get(currency, f"{currency.upper()} {major}")


def local(ts):
    return dt.datetime.fromtimestamp(ts, TZ)


def display(ts):
    return local(ts).strftime("%Y-%m-%d %H:%M:%S")


# (type, outcome, amount, currency, email, detail, seconds before start)
CANNED = [
    ("invoice.paid", "succeeded", 12345, "usd", "ada@example.com", None, 40),
    ("charge.failed", "failed", 4999, "usd", "grace@example.com", "card_declined: insufficient funds", 190),
    ("charge.dispute.created", "disputed", 250000, "jpy", "hiro@example.jp", "fraudulent: evidence due in 6 days", 420),
    ("customer.subscription.deleted", "unknown", None, None, "ada@example.com", None, 700),
    ("payment_intent.succeeded", "succeeded", 1234, "kwd", "faisal@example.kw", None, 1100),
    ("invoice.payment_failed", "failed", 8900, "eur", "marie@example.fr",
     'card_declined: <b>do_not_honor</b> & "retry" <img src=x onerror=alert(1)>', 1500),
    ("checkout.session.completed", "succeeded", 8900, "eur", "marie@example.fr", None, 1900),
    ("invoice.paid", "succeeded", 100000, "jpy", None, None, 2400),
    ("charge.refunded", "unknown", 2500, "usd", "linus@example.com", "refund: requested_by_customer", 3000),
    ("charge.succeeded", "succeeded", 599, "usd", "ken@example.com", None, 3600),
    ("charge.failed", "failed", 3750, "kwd", "noura@example.kw", "expired_card", 4300),
    ("invoice.paid", "succeeded", 45000, "eur", "jean@example.fr", None, 5000),
    ("charge.dispute.created", "disputed", 2000, "usd", "sam@example.com", "product_not_received", 5800),
    ("payment_intent.payment_failed", "failed", 150000, "jpy", "yuki@example.jp", "authentication_required", 6600),
    ("invoice.paid", "succeeded", 2999, "usd", "ada@example.com", None, 7500),
    ("customer.created", "unknown", None, None, "new@example.com", None, 8400),
    ("payment_intent.succeeded", "succeeded", 500, "kwd", None, None, 9300),
    ("charge.succeeded", "succeeded", 1500, "eur", "eva@example.de", None, 10400),
    ("invoice.payment_failed", "failed", 12345, "usd", "bob@example.com", "card_declined: generic_decline", 11500),
    ("invoice.paid", "succeeded", 3000, "jpy", "sora@example.jp", None, 12600),
    ("charge.dispute.closed", "unknown", 2000, "usd", "sam@example.com", "dispute won", 14000),
    ("checkout.session.completed", "succeeded", 19900, "usd", "li@example.com", None, 15500),
    ("charge.failed", "failed", 990, "eur", "tom@example.nl", "incorrect_cvc", 17000),
    ("invoice.paid", "succeeded", 75000, "usd", "corp-billing@example.com", None, 19000),
    ("charge.dispute.created", "disputed", 1999, "kwd", "omar@example.kw", "duplicate", 21000),
    ("payment_intent.succeeded", "succeeded", 4200, "usd", None, None, 23500),
    ("charge.succeeded", "succeeded", 880000, "jpy", "mei@example.jp", None, 26000),
    ("invoice.payment_failed", "failed", 2500, "kwd", "ali@example.kw", "card_declined: lost_card", 29000),
    ("invoice.paid", "succeeded", 12000, "eur", "anna@example.at", None, 33000),
    ("charge.refunded", "unknown", 500, "eur", "eva@example.de", None, 40000),
    ("invoice.paid", "succeeded", 5000, "usd", "ada@example.com", None, 52000),
    ("charge.failed", "failed", 1000, "jpy", "taro@example.jp", "processing_error", 70000),
]

OBJECT_PREFIX = {"invoice": "in", "charge": "ch", "payment_intent": "pi", "checkout": "cs", "customer": "cus"}


class Store:
    def __init__(self):
        self.lock = threading.Lock()
        self.events = []  # newest first
        self.extra = {}  # event_id -> detail facts
        self.deduplicated = 5
        self.serial = 0
        start = int(time.time())
        for row in CANNED:
            self.add(*row[:6], created=start - row[6])
        self.events.sort(key=lambda e: e["created"], reverse=True)

    def add(self, etype, outcome, amount, currency, email, detail, created):
        self.serial += 1
        n = self.serial
        event_id = f"evt_1Qmock{n:04d}{secrets.token_hex(4)}"
        kind = etype.split(".")[0]
        has_customer = email is not None or n % 3 == 0
        ev = {
            "event_id": event_id,
            "type": etype,
            "created": created,
            "created_display": display(created),
            "amount": amount,
            "currency": currency,
            "amount_display": money(amount, currency),
            "customer": f"cus_Mock{n:04d}" if has_customer else None,
            "customer_email": email,
            "object_id": f"{OBJECT_PREFIX.get(kind, 'obj')}_Mock{n:04d}",
            "outcome": outcome,
            "detail": detail,
        }
        self.events.insert(0, ev)
        applied = outcome != "unknown" or n % 2 == 0
        notifications = []
        if applied:
            notifications.append({"channel": "payments-slack", "state": "sent", "at_display": display(created + 2)})
            if outcome == "failed":
                state = ("pending", "failed", "sent")[n % 3]
                notifications.append({"channel": "dunning-email", "state": state,
                                      "at_display": display(created + 3) if state == "sent" else None})
            if outcome == "disputed":
                notifications.append({"channel": "disputes-pager", "state": "sent", "at_display": display(created + 2)})
        dead = []
        if outcome == "failed" and n % 4 == 2:
            dead = [{"message_id": f"{secrets.token_hex(4)}-{n:04d}-dlq", "receive_count": 5}]
        intake = {"state": "enqueued", "event_type": etype, "until_display": display(created + 30 * 86400)}
        if n == 4:
            intake = {"state": "pending", "event_type": etype, "until_display": display(created + 300)}
        self.extra[event_id] = {
            "intake": intake,
            "applied_display": display(created + 1) if applied else None,
            "applied_type": etype if applied else None,
            "notifications": notifications,
            "dead_letters": dead,
        }
        return ev

    def page(self, etype, outcome, offset, limit):
        with self.lock:
            rows = [e for e in self.events if (not etype or e["type"] == etype) and (not outcome or e["outcome"] == outcome)]
        chunk = rows[offset:offset + limit]
        more = offset + limit < len(rows)
        return chunk, (encode_cursor(offset + limit) if more else None)

    def types(self):
        with self.lock:
            return sorted({e["type"] for e in self.events})

    def summary(self):
        today = local(time.time()).date()
        totals, failed, disputes = {}, 0, []
        with self.lock:
            for e in self.events:
                if local(e["created"]).date() != today:
                    if e["outcome"] == "disputed":
                        disputes.append(e)
                    continue
                if e["outcome"] == "succeeded" and e["currency"]:
                    totals[e["currency"]] = totals.get(e["currency"], 0) + e["amount"]
                elif e["outcome"] == "failed":
                    failed += 1
                elif e["outcome"] == "disputed":
                    disputes.append(e)
            dlq = sum(1 for x in self.extra.values() if x["dead_letters"])
            deduplicated = self.deduplicated
        due = min((e["created"] + 7 * 86400 for e in disputes), default=None)
        nearest = None
        if due is not None:
            days = (local(due).date() - today).days
            nearest = f"{local(due):%Y-%m-%d} ({days} day{'s' if days != 1 else ''} left)"
        return {
            "date": today.isoformat(),
            "time_zone": TIME_ZONE,
            "succeeded": [{"currency": c, "amount": a, "display": money(a, c)} for c, a in sorted(totals.items())],
            "failed": failed,
            "open_disputes": {"count": len(disputes), "nearest_due_by": due, "nearest_display": nearest},
            "dlq": dlq,
            "deduplicated": deduplicated,
        }

    def detail(self, event_id):
        with self.lock:
            record = next((e for e in self.events if e["event_id"] == event_id), None)
            extra = self.extra.get(event_id)
            if extra is None:
                return {"event_id": event_id, "record": None,
                        "intake": {"state": "unknown", "event_type": None, "until_display": None},
                        "applied_display": None, "applied_type": None, "notifications": [], "dead_letters": []}
            return {"event_id": event_id, "record": record, **json.loads(json.dumps(extra))}

    def replay(self, event_id):
        with self.lock:
            if event_id not in self.extra:
                return 404, {"error": f"{event_id} is not known to the pipeline"}
            self.deduplicated += 1
        return 200, {"message": f"Replayed {event_id}: re-sent to the webhook (the processor deduplicated it)."}

    def redrive(self, event_id):
        with self.lock:
            extra = self.extra.get(event_id)
            if not extra or not extra["dead_letters"]:
                return 409, {"error": f"no dead letter holds {event_id}"}
            n = len(extra["dead_letters"])
            extra["dead_letters"] = []
        return 200, {"message": f"Redrove {n} message{'s' if n != 1 else ''} for {event_id} to the queue."}

    def tick(self):
        """A new event, for watching the live refresh."""
        etype, outcome, amount, currency, email, detail, _ = CANNED[self.serial % len(CANNED)]
        with self.lock:
            self.add(etype, outcome, amount, currency, email, detail, int(time.time()))


def encode_cursor(offset):
    return base64.urlsafe_b64encode(f"off:{offset}".encode()).decode().rstrip("=")


def decode_cursor(cursor):
    raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
    if not raw.startswith("off:"):
        raise ValueError(cursor)
    return int(raw[4:])


class Handler(BaseHTTPRequestHandler):
    server_version = "console-mock/1"
    store: Store
    token: str
    env_label: str
    fail_every: int
    quiet: bool
    counter = 0

    def log_message(self, fmt, *args):
        if not self.quiet:
            super().log_message(fmt, *args)

    def send_json(self, status, body):
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.send_header("Cache-Control", "no-store")
        self.end_headers()
        self.wfile.write(data)

    def flaky(self):
        if self.fail_every <= 0:
            return False
        with self.store.lock:
            Handler.counter += 1
            fail = Handler.counter % self.fail_every == 0
        if fail:
            self.send_json(503, {"error": "mock: simulated outage (--fail-every)"})
        return fail

    def do_GET(self):
        url = urlsplit(self.path)
        q = {k: v[-1] for k, v in parse_qs(url.query).items()}
        if url.path in ("/", "/index.html"):
            page = PAGE.read_text(encoding="utf-8")
            page = page.replace("__CONSOLE_TOKEN__", html.escape(self.token)).replace("__CONSOLE_ENV__", html.escape(self.env_label))
            data = page.encode()
            self.send_response(200)
            self.send_header("Content-Type", "text/html; charset=utf-8")
            self.send_header("Content-Length", str(len(data)))
            self.send_header("Cache-Control", "no-store")
            # What the real server should send too: the page needs nothing from elsewhere.
            self.send_header("Content-Security-Policy",
                             "default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; "
                             "connect-src 'self'; img-src data:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'")
            self.end_headers()
            self.wfile.write(data)
            return
        if not url.path.startswith("/api/"):
            return self.send_json(404, {"error": "not found"})
        if self.flaky():
            return
        if url.path == "/api/events":
            outcome = q.get("outcome", "")
            if outcome and outcome not in OUTCOMES:
                return self.send_json(400, {"error": f"unknown outcome {outcome!r}"})
            try:
                offset = decode_cursor(q["cursor"]) if q.get("cursor") else 0
                limit = max(1, min(100, int(q.get("limit") or 20)))
            except (ValueError, UnicodeDecodeError):
                return self.send_json(400, {"error": "bad cursor or limit"})
            events, nxt = self.store.page(q.get("type", ""), outcome, offset, limit)
            return self.send_json(200, {"events": events, "next_cursor": nxt})
        if url.path == "/api/types":
            return self.send_json(200, {"types": self.store.types()})
        if url.path == "/api/summary":
            return self.send_json(200, self.store.summary())
        m = re.fullmatch(r"/api/events/([^/]+)", url.path)
        if m:
            return self.send_json(200, self.store.detail(unquote(m.group(1))))
        self.send_json(404, {"error": "not found"})

    def do_POST(self):
        url = urlsplit(self.path)
        length = int(self.headers.get("Content-Length") or 0)
        self.rfile.read(length)
        m = re.fullmatch(r"/api/events/([^/]+)/(replay|redrive)", url.path)
        if not m:
            return self.send_json(404, {"error": "not found"})
        if not secrets.compare_digest(self.headers.get("X-Console-Token", ""), self.token):
            return self.send_json(403, {"error": "missing or wrong console token"})
        if not (self.headers.get("Content-Type") or "").startswith("application/json"):
            return self.send_json(415, {"error": "expected Content-Type: application/json"})
        event_id, action = unquote(m.group(1)), m.group(2)
        status, body = (self.store.replay if action == "replay" else self.store.redrive)(event_id)
        self.send_json(status, body)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--port", type=int, default=8765)
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--token", default=None, help="the console token (default: random, printed)")
    ap.add_argument("--env", default="mock server", help="the environment label in the header")
    ap.add_argument("--new-event-every", type=float, default=0, metavar="SECONDS",
                    help="add a new event this often, to watch the live refresh (0: never)")
    ap.add_argument("--fail-every", type=int, default=0, metavar="N", help="answer every Nth API GET with 503")
    ap.add_argument("--quiet", action="store_true", help="no request log")
    args = ap.parse_args()

    store = Store()
    Handler.store = store
    Handler.token = args.token or secrets.token_urlsafe(24)
    Handler.env_label = args.env
    Handler.fail_every = args.fail_every
    Handler.quiet = args.quiet
    if args.new_event_every > 0:
        def loop():
            while True:
                time.sleep(args.new_event_every)
                store.tick()
        threading.Thread(target=loop, daemon=True).start()

    server = ThreadingHTTPServer((args.host, args.port), Handler)
    print(f"console mock on http://{args.host}:{args.port}/  (token {Handler.token})", file=sys.stderr, flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()


if __name__ == "__main__":
    main()
