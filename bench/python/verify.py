"""stripe-python's webhook verification on the payloads of the Rust criterion bench (make bench).

Usage: python verify.py PAYLOAD_DIR > result.json

Times, per payload: `stripe.Webhook.construct_event` (verify, then parse the whole event),
`stripe.WebhookSignature.verify_header` (verification only) and a bare `hmac` over the same bytes
(the floor in Python). Each is a timed loop in this process: a warm-up, then batches of about 20 ms,
and the median per-operation time over the batches, as criterion reports a median.
"""

import hashlib
import hmac
import json
import platform
import statistics
import sys
import time
from pathlib import Path

import stripe

SECRET = "whsec_bench_0123456789abcdefghijklmnopqrstuv"
BATCH_SECONDS = 0.02
BATCHES = 60


def per_op_ns(fn):
    """Median nanoseconds per call of fn over BATCHES batches of ~BATCH_SECONDS each."""
    n = 1
    while True:  # calibrate (and warm up)
        start = time.perf_counter()
        for _ in range(n):
            fn()
        if time.perf_counter() - start >= BATCH_SECONDS:
            break
        n *= 2
    samples = []
    for _ in range(BATCHES):
        start = time.perf_counter_ns()
        for _ in range(n):
            fn()
        samples.append((time.perf_counter_ns() - start) / n)
    return statistics.median(samples)


def main():
    payload_dir = Path(sys.argv[1])
    results = {}
    for name in ("3kb", "100kb"):
        payload = (payload_dir / f"{name}.json").read_bytes()
        t = int(time.time())
        signed = f"{t}.".encode() + payload
        header = f"t={t},v1=" + hmac.new(SECRET.encode(), signed, hashlib.sha256).hexdigest()
        event = stripe.Webhook.construct_event(payload, header, SECRET, tolerance=600)
        assert event["id"], "construct_event returned no event"
        results[name] = {
            "bytes": len(payload),
            "construct_event_ns": per_op_ns(
                lambda: stripe.Webhook.construct_event(payload, header, SECRET, tolerance=600)
            ),
            "verify_header_ns": per_op_ns(
                lambda: stripe.WebhookSignature.verify_header(
                    payload.decode("utf-8"), header, SECRET, tolerance=600
                )
            ),
            "hmac_ns": per_op_ns(
                lambda: hmac.new(SECRET.encode(), f"{t}.".encode() + payload, hashlib.sha256).hexdigest()
            ),
        }
    json.dump(
        {
            "library": f"stripe-python {stripe.VERSION}",
            "runtime": f"CPython {platform.python_version()}",
            "results": results,
        },
        sys.stdout,
        indent=2,
    )


if __name__ == "__main__":
    main()
