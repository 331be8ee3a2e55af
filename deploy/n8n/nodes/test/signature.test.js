// Verification and signing rules of lib/signature.ts (compiled to dist/), both schemes.
// Run with `npm test` (node's built-in test runner).
const test = require('node:test');
const assert = require('node:assert/strict');
const crypto = require('node:crypto');
const { verify, signHeaders, keyFor, SecretError } = require('../dist/lib/signature');

const NOW = 1700000000;
const BODY = '{"id":"evt_1","event":"lead_scraped","data":{"lead_id":1}}';

function hex(secret, ts, body) {
	return crypto.createHmac('sha256', secret).update(`${ts}.${body}`).digest('hex');
}
function contract(headers, options = {}) {
	return verify({
		scheme: 'x-webhook-signature',
		secrets: ['relay-test-secret'],
		headers,
		body: BODY,
		now: NOW,
		...options,
	});
}

test('x-webhook-signature: the relay binary\'s own signature verifies', () => {
	// From `n8n-relay sign --secret relay-test-secret --timestamp 1700000000` over BODY.
	const r = contract({
		'x-webhook-timestamp': '1700000000',
		'x-webhook-signature-256': 'bd03adc811829e0537169b00a21c342950c4adef6e16dac82bb9e4caa25cd089',
	});
	assert.deepEqual(r, { ok: true, timestamp: NOW });
});

test('x-webhook-signature: signHeaders produces what the relay produces', () => {
	assert.deepEqual(signHeaders({ scheme: 'x-webhook-signature', secrets: ['relay-test-secret'], body: BODY, timestamp: NOW }), {
		'X-Webhook-Timestamp': '1700000000',
		'X-Webhook-Signature-256': 'bd03adc811829e0537169b00a21c342950c4adef6e16dac82bb9e4caa25cd089',
	});
});

test('x-webhook-signature: header names in any case, a Buffer body, sha256= and upper-case hex', () => {
	const sig = hex('relay-test-secret', NOW, BODY);
	for (const value of [sig, `sha256=${sig}`, sig.toUpperCase(), ` ${sig} `]) {
		const r = contract(
			{ 'X-Webhook-Timestamp': String(NOW), 'X-Webhook-Signature-256': value },
			{ body: Buffer.from(BODY) },
		);
		assert.equal(r.ok, true, value);
	}
});

test('x-webhook-signature: a tampered body, timestamp or signature is refused', () => {
	const sig = hex('relay-test-secret', NOW, BODY);
	const tamperedBody = contract(
		{ 'x-webhook-timestamp': String(NOW), 'x-webhook-signature-256': sig },
		{ body: BODY.replace('"lead_id":1', '"lead_id":2') },
	);
	assert.equal(tamperedBody.ok, false);
	assert.equal(tamperedBody.refusal, 'mismatch');
	// One byte more (a trailing newline a proxy added) is a different body.
	assert.equal(contract({ 'x-webhook-timestamp': String(NOW), 'x-webhook-signature-256': sig }, { body: BODY + '\n' }).refusal, 'mismatch');
	// The same signature with another timestamp inside the window: the timestamp is signed.
	assert.equal(contract({ 'x-webhook-timestamp': String(NOW + 1), 'x-webhook-signature-256': sig }).refusal, 'mismatch');
	const flipped = (sig[0] === '0' ? '1' : '0') + sig.slice(1);
	assert.equal(contract({ 'x-webhook-timestamp': String(NOW), 'x-webhook-signature-256': flipped }).refusal, 'mismatch');
	assert.equal(
		contract({ 'x-webhook-timestamp': String(NOW), 'x-webhook-signature-256': hex('wrong-secret', NOW, BODY) }).refusal,
		'mismatch',
	);
});

test('x-webhook-signature: stale and future timestamps are refused, the window edge is accepted', () => {
	const at = (ts, tolerance) =>
		contract({ 'x-webhook-timestamp': String(ts), 'x-webhook-signature-256': hex('relay-test-secret', ts, BODY) }, { toleranceSeconds: tolerance });
	assert.equal(at(NOW - 300).ok, true);
	assert.equal(at(NOW + 300).ok, true);
	const stale = at(NOW - 301);
	assert.equal(stale.refusal, 'expired');
	assert.match(stale.reason, /301 s away from now; at most 300 s/);
	assert.equal(at(NOW + 301).refusal, 'expired');
	assert.equal(at(NOW - 600, 900).ok, true, 'a configured window');
	assert.equal(at(NOW - 61, 60).refusal, 'expired');
});

test('x-webhook-signature: rotation, any signature in the header with any secret', () => {
	const newSig = hex('new-secret', NOW, BODY);
	const oldSig = hex('old-secret', NOW, BODY);
	const header = { 'x-webhook-timestamp': String(NOW), 'x-webhook-signature-256': `${newSig},${oldSig}` };
	// The receiver knows only the old secret, only the new one, or both (either order).
	assert.equal(contract(header, { secrets: ['old-secret'] }).ok, true);
	assert.equal(contract(header, { secrets: ['new-secret'] }).ok, true);
	assert.equal(contract(header, { secrets: ['old-secret', 'new-secret'] }).ok, true);
	// The relay still signs with one secret while the receiver already has both.
	assert.equal(contract({ ...header, 'x-webhook-signature-256': oldSig }, { secrets: ['new-secret', 'old-secret'] }).ok, true);
	assert.equal(contract(header, { secrets: ['third-secret'] }).refusal, 'mismatch');
	// Empty and whitespace-only secrets (an unset rotation field) are skipped.
	assert.equal(contract(header, { secrets: ['', '  ', undefined, 'old-secret'] }).ok, true);
	// Every other secret is used exactly as written, as the relay uses it: outer spaces
	// are part of the key, never trimmed away.
	const spaced = { 'x-webhook-timestamp': String(NOW), 'x-webhook-signature-256': hex(' s3cret ', NOW, BODY) };
	assert.equal(contract(spaced, { secrets: [' s3cret '] }).ok, true);
	assert.equal(contract(spaced, { secrets: ['s3cret'] }).refusal, 'mismatch');
	// signHeaders lists one signature per secret, newest first, as the relay does.
	assert.equal(
		signHeaders({ scheme: 'x-webhook-signature', secrets: ['new-secret', 'old-secret'], body: BODY, timestamp: NOW })['X-Webhook-Signature-256'],
		`${newSig},${oldSig}`,
	);
});

test('x-webhook-signature: missing and malformed headers are refused, naming the header', () => {
	const sig = hex('relay-test-secret', NOW, BODY);
	assert.deepEqual(contract({ 'x-webhook-timestamp': String(NOW) }), {
		ok: false,
		refusal: 'missing',
		reason: 'missing x-webhook-signature-256 header',
	});
	assert.equal(contract({ 'x-webhook-signature-256': sig }).refusal, 'missing');
	for (const bad of ['', 'abc', sig.slice(1), `${sig},`, `${sig},zz`, `md5=${sig}`]) {
		assert.equal(contract({ 'x-webhook-timestamp': String(NOW), 'x-webhook-signature-256': bad }).refusal, 'malformed', bad);
	}
	for (const bad of ['', '-1', '1.5', '1e9', 'now', '1234567890123']) {
		assert.equal(contract({ 'x-webhook-timestamp': bad, 'x-webhook-signature-256': sig }).refusal, 'malformed', bad);
	}
});

test('no secret configured: refused as such, never accepted', () => {
	const r = contract({ 'x-webhook-timestamp': String(NOW), 'x-webhook-signature-256': hex('', NOW, BODY) }, { secrets: ['', undefined] });
	assert.equal(r.refusal, 'no-secret');
	assert.throws(() => signHeaders({ scheme: 'x-webhook-signature', secrets: [''], body: BODY }), SecretError);
});

test('error texts never contain the secret or the expected signature', () => {
	const secret = 'super-secret-value';
	const expected = hex(secret, NOW, BODY);
	const results = [
		contract({ 'x-webhook-timestamp': String(NOW), 'x-webhook-signature-256': hex('x', NOW, BODY) }, { secrets: [secret] }),
		contract({ 'x-webhook-timestamp': String(NOW - 999), 'x-webhook-signature-256': expected }, { secrets: [secret] }),
		verify({ scheme: 'standard-webhooks', secrets: [secret], headers: {}, body: BODY, now: NOW }),
	];
	for (const r of results) {
		assert.equal(r.ok, false);
		assert.ok(!r.reason.includes(secret) && !r.reason.includes(expected), r.reason);
	}
});

// The Standard Webhooks specification's published test vector (its reference libraries'
// tests): secret, message id, timestamp, payload and the expected signature.
const SW = {
	secret: 'whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw',
	id: 'msg_p5jXN8AQM9LWM0D4loKWxJek',
	timestamp: 1614265330,
	payload: '{"test": 2432232314}',
	signature: 'v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=',
};
function standard(headers, options = {}) {
	return verify({ scheme: 'standard-webhooks', secrets: [SW.secret], headers, body: SW.payload, now: SW.timestamp, ...options });
}
const swHeaders = (over = {}) => ({
	'webhook-id': SW.id,
	'webhook-timestamp': String(SW.timestamp),
	'webhook-signature': SW.signature,
	...over,
});

test('standard-webhooks: the specification\'s test vector signs and verifies', () => {
	assert.deepEqual(
		signHeaders({ scheme: 'standard-webhooks', secrets: [SW.secret], body: SW.payload, timestamp: SW.timestamp, id: SW.id }),
		{ 'webhook-id': SW.id, 'webhook-timestamp': String(SW.timestamp), 'webhook-signature': SW.signature },
	);
	assert.deepEqual(standard(swHeaders()), { ok: true, timestamp: SW.timestamp, id: SW.id });
	assert.equal(standard(swHeaders(), { body: Buffer.from(SW.payload) }).ok, true);
});

test('standard-webhooks: the relay binary\'s own signature verifies', () => {
	// From `n8n-relay sign --scheme standard-webhooks --secret <vector secret> --id msg_1
	// --timestamp 1700000000` over BODY.
	const r = verify({
		scheme: 'standard-webhooks',
		secrets: [SW.secret],
		headers: { 'webhook-id': 'msg_1', 'webhook-timestamp': '1700000000', 'webhook-signature': 'v1,l7xnXBRVlU3+tfrCoS4rl0lg74qqnk1nuBDd7TSMMDs=' },
		body: BODY,
		now: NOW,
	});
	assert.deepEqual(r, { ok: true, timestamp: NOW, id: 'msg_1' });
});

test('standard-webhooks: the specification\'s failure cases', () => {
	// Missing id, timestamp or signature.
	for (const name of ['webhook-id', 'webhook-timestamp', 'webhook-signature']) {
		const h = swHeaders();
		delete h[name];
		const r = standard(h);
		assert.equal(r.refusal, 'missing', name);
		assert.match(r.reason, new RegExp(name));
	}
	assert.equal(standard(swHeaders({ 'webhook-timestamp': 'hello' })).refusal, 'malformed');
	// An invalid and a partial signature.
	assert.equal(standard(swHeaders({ 'webhook-signature': 'v1,dawfeoifkpqwoekfpqoekf' })).ok, false);
	assert.equal(standard(swHeaders({ 'webhook-signature': SW.signature.slice(0, 8) })).ok, false);
	assert.equal(standard(swHeaders({ 'webhook-signature': 'v1,' })).ok, false);
	// A well-formed signature of something else.
	assert.equal(standard(swHeaders({ 'webhook-signature': 'v1,Ceo5qEr07ixe2NLpvHk3FH9bwy/WavXrAFQ/9tdO6mc=' })).refusal, 'mismatch');
	// Old and new timestamps beyond the five-minute tolerance.
	assert.equal(standard(swHeaders(), { now: SW.timestamp + 301 }).refusal, 'expired');
	assert.equal(standard(swHeaders(), { now: SW.timestamp - 301 }).refusal, 'expired');
	// The id and the timestamp are signed.
	assert.equal(standard(swHeaders({ 'webhook-id': 'msg_other' })).refusal, 'mismatch');
	assert.equal(standard(swHeaders({ 'webhook-timestamp': String(SW.timestamp + 1) })).refusal, 'mismatch');
	assert.equal(standard(swHeaders(), { body: SW.payload.replace('2432232314', '2432232315') }).refusal, 'mismatch');
});

test('standard-webhooks: several signatures in the header, other versions skipped', () => {
	const multi = [
		'v1,Ceo5qEr07ixe2NLpvHk3FH9bwy/WavXrAFQ/9tdO6mc=',
		'v2,Ceo5qEr07ixe2NLpvHk3FH9bwy/WavXrAFQ/9tdO6mc=',
		SW.signature,
		'v1,Ceo5qEr07ixe2NLpvHk3FH9bwy/WavXrAFQ/9tdO6mc=',
	].join(' ');
	assert.equal(standard(swHeaders({ 'webhook-signature': multi })).ok, true);
	// Only versions this verifier does not know: malformed, not a silent pass.
	assert.equal(standard(swHeaders({ 'webhook-signature': 'v1a,abc v2,' + SW.signature.slice(3) })).refusal, 'malformed');
});

test('standard-webhooks: rotation with whsec_ secrets', () => {
	const other = 'whsec_' + Buffer.alloc(32, 7).toString('base64');
	const both = signHeaders({ scheme: 'standard-webhooks', secrets: [other, SW.secret], body: SW.payload, timestamp: SW.timestamp, id: SW.id });
	assert.equal(both['webhook-signature'].split(' ').length, 2);
	assert.equal(both['webhook-signature'].split(' ')[1], SW.signature);
	assert.equal(standard(both).ok, true);
	assert.equal(standard(both, { secrets: [other] }).ok, true);
	assert.equal(standard(swHeaders(), { secrets: [other, SW.secret] }).ok, true);
	assert.equal(standard(swHeaders(), { secrets: [other] }).refusal, 'mismatch');
	// A whsec_ secret pasted with a newline or spaces around it still verifies.
	assert.equal(standard(swHeaders(), { secrets: [` ${SW.secret}\n`] }).ok, true);
});

test('standard-webhooks: secrets must be whsec_ and base64 of 24 to 64 bytes, as the relay demands', () => {
	assert.equal(keyFor('standard-webhooks', SW.secret).length, 24);
	assert.equal(keyFor('standard-webhooks', 'whsec_' + Buffer.alloc(64).toString('base64')).length, 64);
	for (const bad of [
		'MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw',
		'whsec_not*base64',
		'whsec_' + Buffer.alloc(23).toString('base64'),
		'whsec_' + Buffer.alloc(65).toString('base64'),
	]) {
		assert.throws(() => keyFor('standard-webhooks', bad), SecretError, bad);
		const r = standard(swHeaders(), { secrets: [bad] });
		assert.equal(r.refusal, 'bad-secret', bad);
		assert.ok(!r.reason.includes(bad));
	}
	// The contract scheme keys with the secret's bytes as written, whsec_ or not.
	assert.equal(keyFor('x-webhook-signature', SW.secret).toString(), SW.secret);
});

test('standard-webhooks: signing needs a message id', () => {
	assert.throws(() => signHeaders({ scheme: 'standard-webhooks', secrets: [SW.secret], body: '{}' }), /message id/);
});
