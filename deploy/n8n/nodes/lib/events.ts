/**
 * The relay's outgoing events (README "Events") and the delivery body it signs. Kept
 * here, free of n8n imports, so the trigger's options and the tests share one list.
 */
export const EVENTS = [
	'lead_scraped',
	'lead_qualified',
	'lead_responded',
	'email_sent',
	'email_failed',
	'demo_completed',
	'demo_failed',
	'video_completed',
	'video_failed',
	'approval_requested',
	'workflow_error',
	'endpoint_unhealthy',
] as const;

export type EventName = (typeof EVENTS)[number];

/** The relay's default route path for an event: `lead_scraped` -> `lead-scraped`. */
export function defaultPath(event: string): string {
	return event.replace(/_/g, '-');
}

/** What the trigger outputs for one verified delivery. */
export interface Delivery {
	id: string | null;
	event: string | null;
	occurred_at: string | null;
	entity_type: string | null;
	entity_id: number | string | null;
	data: unknown;
	/** X-Webhook-Attempt: 1 on the first attempt, 2 on the first retry, ... */
	attempt: number | null;
}

/**
 * Parses a verified body into the trigger's output. Throws a plain Error (the trigger
 * answers 400) when the bytes are not a JSON object: the relay never sends that.
 */
export function parseDelivery(rawBody: Buffer | string, attemptHeader?: string): Delivery {
	const text = typeof rawBody === 'string' ? rawBody : rawBody.toString('utf8');
	let parsed: unknown;
	try {
		parsed = JSON.parse(text);
	} catch {
		throw new Error('the body is not JSON');
	}
	if (parsed === null || typeof parsed !== 'object' || Array.isArray(parsed)) {
		throw new Error('the body is not a JSON object');
	}
	const body = parsed as Record<string, unknown>;
	const text_ = (v: unknown): string | null => (typeof v === 'string' ? v : null);
	const entityId = body.entity_id;
	const attempt = attemptHeader !== undefined && /^[0-9]{1,9}$/.test(attemptHeader.trim())
		? Number(attemptHeader.trim())
		: null;
	return {
		id: text_(body.id),
		event: text_(body.event),
		occurred_at: text_(body.occurred_at),
		entity_type: text_(body.entity_type),
		entity_id: typeof entityId === 'number' || typeof entityId === 'string' ? entityId : null,
		data: body.data ?? null,
		attempt,
	};
}
