// The receiver as an Express app would write it: the comparison point of `make bench` (bench/load.sh).
//
// Same job and the same table and queue semantics as functions/receiver: verify with stripe-node
// (`constructEvent` on the raw body), claim the event id with one conditional PutItem (pending + lease
// + TTL), send the raw body to SQS with the same message attributes, mark the claim `enqueued`, answer
// 200; a duplicate answers 200 "duplicate", a concurrent claim 409, a DynamoDB/SQS failure 503 (claim
// released). Not ported: the DynamoDB stash for bodies SQS cannot carry (the bench's events are small).
//
// Run: DEDUP_TABLE_NAME=... EVENT_QUEUE_URL=... STRIPE_WEBHOOK_SECRET=... PORT=... node express_receiver.js
'use strict';

const crypto = require('node:crypto');
const express = require('express');
const Stripe = require('stripe');
const {
  DynamoDBClient, PutItemCommand, UpdateItemCommand, DeleteItemCommand, ConditionalCheckFailedException,
} = require('@aws-sdk/client-dynamodb');
const { SQSClient, SendMessageCommand } = require('@aws-sdk/client-sqs');

const SECRET = process.env.STRIPE_WEBHOOK_SECRET;
const TABLE = process.env.DEDUP_TABLE_NAME;
const QUEUE_URL = process.env.EVENT_QUEUE_URL;
const TTL_SECS = 30 * 24 * 3600;
const LEASE_SECS = 30;

const stripe = new Stripe('sk_test_not_used');
// Built once, as a Lambda would at init; endpoints from AWS_ENDPOINT_URL_DYNAMODB / _SQS.
const clientConfig = { maxAttempts: 3, requestHandler: { connectionTimeout: 1000, requestTimeout: 2000 } };
const dynamodb = new DynamoDBClient({ ...clientConfig, endpoint: process.env.AWS_ENDPOINT_URL_DYNAMODB });
const sqs = new SQSClient({ ...clientConfig, endpoint: process.env.AWS_ENDPOINT_URL_SQS });

const app = express();
app.post('/webhooks/stripe', express.raw({ type: '*/*', limit: '1mb' }), async (req, res) => {
  let event;
  try {
    event = stripe.webhooks.constructEvent(req.body, req.get('stripe-signature') || '', SECRET);
  } catch (err) {
    const status = err && err.type === 'StripeSignatureVerificationError' ? 401 : 400;
    return res.status(status).json({ error: status === 401 ? 'invalid signature' : 'not a stripe event' });
  }
  if (event.livemode !== false) return res.status(400).json({ error: 'livemode mismatch' });
  const now = Math.floor(Date.now() / 1000);
  const token = crypto.randomUUID();
  try {
    await dynamodb.send(new PutItemCommand({
      TableName: TABLE,
      Item: {
        event_id: { S: event.id },
        status: { S: 'pending' },
        claim_token: { S: token },
        event_type: { S: event.type },
        lease_until: { N: String(now + LEASE_SECS) },
        expires_at: { N: String(now + TTL_SECS) },
        claimed_at: { N: String(now) },
      },
      ConditionExpression: 'attribute_not_exists(#key) OR #expires < :now OR (#status = :pending AND #lease < :now)',
      ExpressionAttributeNames: { '#key': 'event_id', '#expires': 'expires_at', '#status': 'status', '#lease': 'lease_until' },
      ExpressionAttributeValues: { ':now': { N: String(now) }, ':pending': { S: 'pending' } },
      ReturnValuesOnConditionCheckFailure: 'ALL_OLD',
    }));
  } catch (err) {
    if (err instanceof ConditionalCheckFailedException) {
      if (err.Item && err.Item.status && err.Item.status.S === 'enqueued') return res.status(200).json({ status: 'duplicate' });
      return res.status(409).json({ error: 'event is being processed' });
    }
    return res.status(503).json({ error: 'temporarily unavailable' });
  }
  const attributes = {
    event_id: event.id, event_type: event.type, livemode: 'false', api_version: event.api_version || '', body_location: 'inline',
  };
  const messageAttributes = {};
  for (const [name, value] of Object.entries(attributes)) {
    if (value) messageAttributes[name] = { DataType: 'String', StringValue: value };
  }
  try {
    await sqs.send(new SendMessageCommand({ QueueUrl: QUEUE_URL, MessageBody: req.body.toString('utf8'), MessageAttributes: messageAttributes }));
  } catch (err) {
    await dynamodb.send(new DeleteItemCommand({
      TableName: TABLE,
      Key: { event_id: { S: event.id } },
      ConditionExpression: 'claim_token = :token',
      ExpressionAttributeValues: { ':token': { S: token } },
    })).catch(() => {});
    return res.status(503).json({ error: 'temporarily unavailable' });
  }
  await dynamodb.send(new UpdateItemCommand({
    TableName: TABLE,
    Key: { event_id: { S: event.id } },
    UpdateExpression: 'SET #status = :enqueued, enqueued_at = :now REMOVE lease_until',
    ConditionExpression: 'claim_token = :token',
    ExpressionAttributeNames: { '#status': 'status' },
    ExpressionAttributeValues: { ':enqueued': { S: 'enqueued' }, ':now': { N: String(now) }, ':token': { S: token } },
  })).catch(() => {}); // on the queue all the same: answer 200, as the Rust receiver does
  return res.status(200).json({ status: 'enqueued' });
});

const port = Number(process.env.PORT || 3000);
app.listen(port, '127.0.0.1', () => process.stderr.write(`express receiver on 127.0.0.1:${port}\n`));
