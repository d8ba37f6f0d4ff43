// stripe-node's webhook verification on the payloads of the Rust criterion bench (make bench).
//
// Usage: node verify.js PAYLOAD_DIR > result.json
//
// Times, per payload: `stripe.webhooks.constructEvent` (verify, then JSON.parse the event),
// `stripe.webhooks.signature.verifyHeader` (verification only) and a bare `crypto` HMAC over the same
// bytes (the floor in Node). Each is a timed loop in this process: a warm-up, then batches of about
// 20 ms, and the median per-operation time over the batches, as criterion reports a median.
'use strict';

const crypto = require('node:crypto');
const fs = require('node:fs');
const path = require('node:path');
const Stripe = require('stripe');

const SECRET = 'whsec_bench_0123456789abcdefghijklmnopqrstuv';
const BATCH_NS = 20e6;
const BATCHES = 60;
const stripe = new Stripe('sk_test_bench_not_used');

function perOpNs(fn) {
  let n = 1;
  for (;;) {
    const start = process.hrtime.bigint();
    for (let i = 0; i < n; i++) fn();
    if (Number(process.hrtime.bigint() - start) >= BATCH_NS) break;
    n *= 2;
  }
  const samples = [];
  for (let b = 0; b < BATCHES; b++) {
    const start = process.hrtime.bigint();
    for (let i = 0; i < n; i++) fn();
    samples.push(Number(process.hrtime.bigint() - start) / n);
  }
  samples.sort((a, b) => a - b);
  return (samples[(BATCHES - 1) >> 1] + samples[BATCHES >> 1]) / 2;
}

const results = {};
for (const name of ['3kb', '100kb']) {
  const payload = fs.readFileSync(path.join(process.argv[2], `${name}.json`));
  const t = Math.floor(Date.now() / 1000);
  const header = stripe.webhooks.generateTestHeaderString({ payload: payload.toString('utf8'), secret: SECRET, timestamp: t });
  const event = stripe.webhooks.constructEvent(payload, header, SECRET, 600);
  if (!event.id) throw new Error('constructEvent returned no event');
  let sink = 0;
  results[name] = {
    bytes: payload.length,
    construct_event_ns: perOpNs(() => { sink += stripe.webhooks.constructEvent(payload, header, SECRET, 600).id.length; }),
    verify_header_ns: perOpNs(() => { sink += stripe.webhooks.signature.verifyHeader(payload, header, SECRET, 600) ? 1 : 0; }),
    hmac_ns: perOpNs(() => {
      sink += crypto.createHmac('sha256', SECRET).update(`${t}.`).update(payload).digest('hex').length;
    }),
  };
  if (sink === 0) throw new Error('nothing ran');
}
const version = JSON.parse(fs.readFileSync(path.join(__dirname, 'node_modules/stripe/package.json'), 'utf8')).version;
process.stdout.write(JSON.stringify({ library: `stripe-node ${version}`, runtime: `Node.js ${process.versions.node}`, results }, null, 2) + '\n');
