"""The receiver as a Flask app would write it: the comparison point of `make bench` (bench/load.sh).

Same job and the same table and queue semantics as functions/receiver: verify with stripe-python
(`construct_event`), claim the event id with one conditional PutItem (pending + lease + TTL), send the
raw body to SQS with the same message attributes, mark the claim `enqueued`, answer 200; a duplicate
answers 200 "duplicate", a concurrent claim 409, a DynamoDB/SQS failure 503 (claim released).
Not ported: the DynamoDB stash for bodies SQS cannot carry (the bench's events are small).

Run: DEDUP_TABLE_NAME=... EVENT_QUEUE_URL=... STRIPE_WEBHOOK_SECRET=... gunicorn flask_receiver:app
"""

import os
import time
import uuid

import boto3
import stripe
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError
from flask import Flask, jsonify, request

SECRET = os.environ["STRIPE_WEBHOOK_SECRET"]
TABLE = os.environ["DEDUP_TABLE_NAME"]
QUEUE_URL = os.environ["EVENT_QUEUE_URL"]
TTL_SECS = 30 * 24 * 3600
LEASE_SECS = 30

# Created once per worker, as a Lambda would at init; the same timeouts as the Rust receiver.
_config = Config(connect_timeout=1, read_timeout=2, retries={"mode": "standard", "max_attempts": 3})
# boto3 reads AWS_DEFAULT_REGION; the Rust SDK and the emulators' env use AWS_REGION.
_region = os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION")
dynamodb = boto3.client("dynamodb", config=_config, region_name=_region)
sqs = boto3.client("sqs", config=_config, region_name=_region)

app = Flask(__name__)


@app.post("/webhooks/stripe")
def webhook():
    payload = request.get_data()
    try:
        event = stripe.Webhook.construct_event(payload, request.headers.get("Stripe-Signature", ""), SECRET)
    except stripe.SignatureVerificationError:
        return jsonify(error="invalid signature"), 401
    except ValueError:
        return jsonify(error="not a stripe event"), 400
    # stripe-python 8+ events are StripeObjects, not dicts: no .get().
    if getattr(event, "livemode", None) is not False:
        return jsonify(error="livemode mismatch"), 400
    event_id, event_type = event["id"], event["type"]
    now = int(time.time())
    token = uuid.uuid4().hex
    try:
        dynamodb.put_item(
            TableName=TABLE,
            Item={
                "event_id": {"S": event_id},
                "status": {"S": "pending"},
                "claim_token": {"S": token},
                "event_type": {"S": event_type},
                "lease_until": {"N": str(now + LEASE_SECS)},
                "expires_at": {"N": str(now + TTL_SECS)},
                "claimed_at": {"N": str(now)},
            },
            ConditionExpression="attribute_not_exists(#key) OR #expires < :now "
            "OR (#status = :pending AND #lease < :now)",
            ExpressionAttributeNames={
                "#key": "event_id", "#expires": "expires_at", "#status": "status", "#lease": "lease_until",
            },
            ExpressionAttributeValues={":now": {"N": str(now)}, ":pending": {"S": "pending"}},
            ReturnValuesOnConditionCheckFailure="ALL_OLD",
        )
    except ClientError as e:
        if e.response["Error"]["Code"] != "ConditionalCheckFailedException":
            return jsonify(error="temporarily unavailable"), 503
        status = e.response.get("Item", {}).get("status", {}).get("S")
        if status == "enqueued":
            return jsonify(status="duplicate"), 200
        return jsonify(error="event is being processed"), 409
    except BotoCoreError:
        return jsonify(error="temporarily unavailable"), 503
    attributes = {
        "event_id": event_id,
        "event_type": event_type,
        "livemode": "false",
        "api_version": getattr(event, "api_version", None) or "",
        "body_location": "inline",
    }
    try:
        sqs.send_message(
            QueueUrl=QUEUE_URL,
            MessageBody=payload.decode("utf-8"),
            MessageAttributes={k: {"DataType": "String", "StringValue": v} for k, v in attributes.items() if v},
        )
    except (ClientError, BotoCoreError):
        try:
            dynamodb.delete_item(
                TableName=TABLE,
                Key={"event_id": {"S": event_id}},
                ConditionExpression="claim_token = :token",
                ExpressionAttributeValues={":token": {"S": token}},
            )
        except (ClientError, BotoCoreError):
            pass
        return jsonify(error="temporarily unavailable"), 503
    try:
        dynamodb.update_item(
            TableName=TABLE,
            Key={"event_id": {"S": event_id}},
            UpdateExpression="SET #status = :enqueued, enqueued_at = :now REMOVE lease_until",
            ConditionExpression="claim_token = :token",
            ExpressionAttributeNames={"#status": "status"},
            ExpressionAttributeValues={
                ":enqueued": {"S": "enqueued"}, ":now": {"N": str(now)}, ":token": {"S": token},
            },
        )
    except (ClientError, BotoCoreError):
        pass  # on the queue all the same: answer 200, as the Rust receiver does
    return jsonify(status="enqueued"), 200
