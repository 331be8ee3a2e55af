/**
 * Signing and verifying n8n-relay requests, both directions, with no n8n imports so the
 * rules can be unit-tested with `node --test` and read in one place.
 *
 * It mirrors the relay's own `crates/relay-core/src/signature.rs`:
 * - `x-webhook-signature` (the relay's default): `X-Webhook-Timestamp` (unix seconds) and
 *   `X-Webhook-Signature-256` = lowercase hex HMAC-SHA256 over `"{timestamp}.{body}"`,
 *   keyed with the secret's UTF-8 bytes as written. During a secret rotation the header
 *   lists one signature per active secret, comma-separated; a `sha256=` prefix is allowed.
 * - `standard-webhooks` (https://www.standardwebhooks.com): `webhook-id`,
 *   `webhook-timestamp` and `webhook-signature` = space-separated `v1,<base64 HMAC-SHA256
 *   of "{id}.{timestamp}.{body}">` entries, keyed with the base64 decoding of a `whsec_`
 *   secret (24 to 64 bytes, as the relay demands).
 *
 * The timestamp is inside the MAC, so a captured request cannot be replayed later with a
 * fresh timestamp; a timestamp further than the window from now, in the past or the
 * future, is refused. Every given signature is compared with every secret's expected one
 * in constant time, without stopping at the first match, so timing tells nothing about
 * which entry or secret matched.
 *
 * Error texts never contain a secret or an expected signature: they may be returned to
 * the caller and end up in logs.
 */
import { createHmac, timingSafeEqual } from 'crypto';

export type Scheme = 'x-webhook-signature' | 'standard-webhooks';
export const SCHEMES: readonly Scheme[] = ['x-webhook-signature', 'standard-webhooks'];

export const HEADER_TIMESTAMP = 'x-webhook-timestamp';
export const HEADER_SIGNATURE = 'x-webhook-signature-256';
export const HEADER_STANDARD_ID = 'webhook-id';
export const HEADER_STANDARD_TIMESTAMP = 'webhook-timestamp';
export const HEADER_STANDARD_SIGNATURE = 'webhook-signature';
export const STANDARD_SECRET_PREFIX = 'whsec_';

/** The relay's default window, `security.max_age_seconds`. */
export const DEFAULT_TOLERANCE_SECONDS = 300;
const STANDARD_KEY_MIN_BYTES = 24;
const STANDARD_KEY_MAX_BYTES = 64;
/** Longest `webhook-id` accepted, as the relay does. */
const MAX_ID_LENGTH = 256;

/** Request headers as Node gives them (names lower-cased) or any casing. */
export type Headers = Record<string, string | string[] | undefined>;

export type Refusal =
	| 'no-secret'
	| 'bad-secret'
	| 'missing'
	| 'malformed'
	| 'expired'
	| 'mismatch';

export type VerifyResult =
	| { ok: true; timestamp: number; id?: string }
	| { ok: false; refusal: Refusal; reason: string };

/** A configured secret the scheme cannot use. The message never contains the secret. */
export class SecretError extends Error {
	constructor(message: string) {
		super(message);
		this.name = 'SecretError';
	}
}

export function isScheme(value: unknown): value is Scheme {
	return value === 'x-webhook-signature' || value === 'standard-webhooks';
}

/** Base64 (standard alphabet, padded), refusing what Node's lenient decoder would skip. */
function strictBase64(text: string): Buffer | undefined {
	if (text.length === 0 || text.length % 4 !== 0 || !/^[A-Za-z0-9+/]+={0,2}$/.test(text)) {
		return undefined;
	}
	return Buffer.from(text, 'base64');
}

/** The HMAC key a configured secret stands for under `scheme`; throws SecretError. */
export function keyFor(scheme: Scheme, secret: string): Buffer {
	if (scheme === 'x-webhook-signature') return Buffer.from(secret, 'utf8');
	// A whsec_ secret never holds whitespace: a pasted space or newline is dropped.
	secret = secret.trim();
	if (!secret.startsWith(STANDARD_SECRET_PREFIX)) {
		throw new SecretError(
			`standard-webhooks needs a secret that starts with ${STANDARD_SECRET_PREFIX}`,
		);
	}
	const key = strictBase64(secret.slice(STANDARD_SECRET_PREFIX.length));
	if (key === undefined) {
		throw new SecretError(`the part after ${STANDARD_SECRET_PREFIX} is not valid base64`);
	}
	if (key.length < STANDARD_KEY_MIN_BYTES || key.length > STANDARD_KEY_MAX_BYTES) {
		throw new SecretError(
			`the secret decodes to ${key.length} bytes; the Standard Webhooks specification wants ${STANDARD_KEY_MIN_BYTES} to ${STANDARD_KEY_MAX_BYTES}`,
		);
	}
	return key;
}

/**
 * The secrets that are set (an empty or whitespace-only field is unset), each as written:
 * the relay keys an x-webhook-signature HMAC with a secret's bytes as configured (it
 * trims nothing but one trailing newline of a secret file), so trimming here would make
 * a secret with outer whitespace never verify. A whsec_ secret is trimmed where it is
 * decoded (keyFor).
 */
export function activeSecrets(secrets: ReadonlyArray<string | undefined | null>): string[] {
	return secrets.filter((s): s is string => typeof s === 'string' && s.trim().length > 0);
}

function toBuffer(body: Buffer | string): Buffer {
	return typeof body === 'string' ? Buffer.from(body, 'utf8') : body;
}

/** Raw HMAC-SHA256 of `"{timestamp}.{body}"` (the x-webhook-signature scheme). */
export function macHex(key: Buffer, timestamp: number, body: Buffer | string): Buffer {
	return createHmac('sha256', key)
		.update(`${timestamp}.`, 'utf8')
		.update(toBuffer(body))
		.digest();
}

/** Raw HMAC-SHA256 of `"{id}.{timestamp}.{body}"` (the standard-webhooks scheme). */
export function macStandard(
	key: Buffer,
	id: string,
	timestamp: number,
	body: Buffer | string,
): Buffer {
	return createHmac('sha256', key)
		.update(`${id}.${timestamp}.`, 'utf8')
		.update(toBuffer(body))
		.digest();
}

/** `v1,<base64>` as Standard Webhooks writes one signature. */
export function signStandard(key: Buffer, id: string, timestamp: number, body: Buffer | string): string {
	return `v1,${macStandard(key, id, timestamp, body).toString('base64')}`;
}

/** Lowercase hex, as `X-Webhook-Signature-256` carries one signature. */
export function signHex(key: Buffer, timestamp: number, body: Buffer | string): string {
	return macHex(key, timestamp, body).toString('hex');
}

export interface SignOptions {
	scheme: Scheme;
	/** Newest first; one signature per secret. */
	secrets: ReadonlyArray<string>;
	/** Exactly the bytes that will be sent. */
	body: Buffer | string;
	/** Unix seconds; defaults to now. */
	timestamp?: number;
	/** The message id (standard-webhooks only; required there). */
	id?: string;
}

/**
 * The signature headers for a request, with the names the relay documents. Throws
 * SecretError for a secret the scheme cannot use, and Error without any secret.
 */
export function signHeaders(options: SignOptions): Record<string, string> {
	const secrets = activeSecrets(options.secrets);
	if (secrets.length === 0) throw new SecretError('no secret is configured to sign with');
	const timestamp = options.timestamp ?? Math.floor(Date.now() / 1000);
	if (!Number.isSafeInteger(timestamp) || timestamp < 0) {
		throw new Error('the timestamp must be whole unix seconds');
	}
	const keys = secrets.map((s) => keyFor(options.scheme, s));
	if (options.scheme === 'x-webhook-signature') {
		return {
			'X-Webhook-Timestamp': String(timestamp),
			'X-Webhook-Signature-256': keys.map((k) => signHex(k, timestamp, options.body)).join(','),
		};
	}
	const id = options.id ?? '';
	if (id.trim().length === 0 || id.length > MAX_ID_LENGTH || id !== id.trim()) {
		throw new Error('standard-webhooks needs a message id of 1 to 256 characters');
	}
	return {
		'webhook-id': id,
		'webhook-timestamp': String(timestamp),
		'webhook-signature': keys.map((k) => signStandard(k, id, timestamp, options.body)).join(' '),
	};
}

/** Looks a header up by name in any casing; repeated headers are joined by `joiner`. */
export function header(headers: Headers, name: string, joiner = ','): string | undefined {
	const wanted = name.toLowerCase();
	for (const [key, value] of Object.entries(headers)) {
		if (key.toLowerCase() !== wanted || value === undefined) continue;
		return Array.isArray(value) ? value.join(joiner) : value;
	}
	return undefined;
}

function refuse(refusal: Refusal, reason: string): VerifyResult {
	return { ok: false, refusal, reason };
}

/** Unix seconds, digits only (no sign, no fraction), at most 12 digits. */
function parseTimestamp(value: string): number | undefined {
	const v = value.trim();
	if (!/^[0-9]{1,12}$/.test(v)) return undefined;
	return Number(v);
}

/** One `X-Webhook-Signature-256` entry: 64 hex digits, optionally `sha256=`, any case. */
function parseHexSignature(entry: string): Buffer | undefined {
	let v = entry.trim();
	if (v.startsWith('sha256=')) v = v.slice('sha256='.length);
	if (!/^[0-9a-fA-F]{64}$/.test(v)) return undefined;
	return Buffer.from(v, 'hex');
}

/**
 * The `v1` entries of a `webhook-signature` header. Entries of other versions (`v1a`, a
 * future `v2`) and undecodable ones are skipped, as the specification's libraries do.
 */
function parseStandardSignatures(value: string): Buffer[] {
	const out: Buffer[] = [];
	for (const entry of value.split(/\s+/)) {
		const comma = entry.indexOf(',');
		if (comma < 0 || entry.slice(0, comma) !== 'v1') continue;
		const mac = strictBase64(entry.slice(comma + 1));
		if (mac !== undefined && mac.length === 32) out.push(mac);
	}
	return out;
}

/** Whether any expected MAC equals any given one; every pair is compared, in constant time. */
function anyMatch(expected: Buffer[], given: Buffer[]): boolean {
	let matched = false;
	for (const e of expected) {
		for (const g of given) {
			// Both are 32 bytes (parsers guarantee it), as timingSafeEqual requires.
			const equal = e.length === g.length && timingSafeEqual(e, g);
			matched = equal || matched;
		}
	}
	return matched;
}

export interface VerifyOptions {
	scheme: Scheme;
	/** Every secret a sender may sign with (rotation); any one matching suffices. */
	secrets: ReadonlyArray<string | undefined | null>;
	headers: Headers;
	/** The raw request body: exactly the bytes received, before any JSON parsing. */
	body: Buffer | string;
	/** Unix seconds; defaults to now. Passed in so tests are deterministic. */
	now?: number;
	/** Largest allowed distance of the timestamp from now, either way (default 300). */
	toleranceSeconds?: number;
}

/** Verifies a signed request; never throws for bad input, it answers a refusal. */
export function verify(options: VerifyOptions): VerifyResult {
	const secrets = activeSecrets(options.secrets);
	if (secrets.length === 0) return refuse('no-secret', 'no secret is configured to verify with');
	let keys: Buffer[];
	try {
		keys = secrets.map((s) => keyFor(options.scheme, s));
	} catch (error) {
		return refuse('bad-secret', `a configured secret is unusable: ${(error as Error).message}`);
	}
	const now = options.now ?? Math.floor(Date.now() / 1000);
	const tolerance = options.toleranceSeconds ?? DEFAULT_TOLERANCE_SECONDS;
	const fresh = (timestamp: number): VerifyResult | undefined => {
		const skew = Math.abs(now - timestamp);
		return skew > tolerance
			? refuse('expired', `timestamp is ${skew} s away from now; at most ${tolerance} s is allowed`)
			: undefined;
	};

	if (options.scheme === 'x-webhook-signature') {
		const sig = header(options.headers, HEADER_SIGNATURE);
		if (sig === undefined) return refuse('missing', `missing ${HEADER_SIGNATURE} header`);
		const ts = header(options.headers, HEADER_TIMESTAMP);
		if (ts === undefined) return refuse('missing', `missing ${HEADER_TIMESTAMP} header`);
		const given: Buffer[] = [];
		for (const entry of sig.split(',')) {
			const parsed = parseHexSignature(entry);
			if (parsed === undefined) {
				return refuse(
					'malformed',
					`${HEADER_SIGNATURE} header is not valid: expected comma-separated 64 hex digits, optionally prefixed sha256=`,
				);
			}
			given.push(parsed);
		}
		const timestamp = parseTimestamp(ts);
		if (timestamp === undefined) {
			return refuse('malformed', `${HEADER_TIMESTAMP} header is not valid: expected unix seconds`);
		}
		const stale = fresh(timestamp);
		if (stale) return stale;
		const expected = keys.map((k) => macHex(k, timestamp, options.body));
		return anyMatch(expected, given)
			? { ok: true, timestamp }
			: refuse('mismatch', 'signature does not match');
	}

	const rawId = header(options.headers, HEADER_STANDARD_ID);
	if (rawId === undefined) return refuse('missing', `missing ${HEADER_STANDARD_ID} header`);
	const id = rawId.trim();
	if (id.length === 0 || id.length > MAX_ID_LENGTH) {
		return refuse('malformed', `${HEADER_STANDARD_ID} header is not valid: expected 1 to 256 characters`);
	}
	const sig = header(options.headers, HEADER_STANDARD_SIGNATURE, ' ');
	if (sig === undefined) return refuse('missing', `missing ${HEADER_STANDARD_SIGNATURE} header`);
	const ts = header(options.headers, HEADER_STANDARD_TIMESTAMP);
	if (ts === undefined) return refuse('missing', `missing ${HEADER_STANDARD_TIMESTAMP} header`);
	const given = parseStandardSignatures(sig);
	if (given.length === 0) {
		return refuse(
			'malformed',
			`${HEADER_STANDARD_SIGNATURE} header is not valid: expected space-separated v1,<base64 HMAC-SHA256> entries`,
		);
	}
	const timestamp = parseTimestamp(ts);
	if (timestamp === undefined) {
		return refuse('malformed', `${HEADER_STANDARD_TIMESTAMP} header is not valid: expected unix seconds`);
	}
	const stale = fresh(timestamp);
	if (stale) return stale;
	const expected = keys.map((k) => macStandard(k, id, timestamp, options.body));
	return anyMatch(expected, given)
		? { ok: true, timestamp, id }
		: refuse('mismatch', 'signature does not match');
}
