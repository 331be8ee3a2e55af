/**
 * The relay's callback endpoints and bodies (README "Callbacks"), free of n8n imports:
 * the action node collects parameters, this module turns them into the exact bytes to
 * sign and send, and reads the relay's answer.
 */
export const CALLBACK_PATH = '/api/v1/webhooks/n8n/';

export type Operation =
	| 'demoApproval'
	| 'videoApproval'
	| 'workflowStatus'
	| 'workflowCompleted'
	| 'errorNotification';

export const ENDPOINTS: Record<Operation, string> = {
	demoApproval: 'demo-approval',
	videoApproval: 'video-approval',
	workflowStatus: 'workflow-status',
	workflowCompleted: 'workflow-completed',
	errorNotification: 'error-notification',
};

export function isOperation(value: unknown): value is Operation {
	return typeof value === 'string' && Object.prototype.hasOwnProperty.call(ENDPOINTS, value);
}

/** `{base}/api/v1/webhooks/n8n/{endpoint}`, whatever slashes the base ends with. */
export function callbackUrl(baseUrl: string, operation: Operation): string {
	const base = baseUrl.trim().replace(/\/+$/, '');
	if (!/^https?:\/\/[^/]/i.test(base)) {
		throw new Error(`the callback base URL must start with http:// or https:// (got "${shownUrl(base)}")`);
	}
	return base + CALLBACK_PATH + ENDPOINTS[operation];
}

/**
 * A URL as an error message may show it: without any `user:password@` it carries (a
 * proxy's basic auth, say); one that does not parse is not shown at all.
 */
export function shownUrl(url: string): string {
	try {
		const parsed = new URL(url);
		parsed.username = '';
		parsed.password = '';
		return parsed.toString();
	} catch {
		return 'a value that is not a URL';
	}
}

/** What the node's parameters hold; empty strings and NaN mean "not given". */
export interface CallbackFields {
	entityId?: number | string;
	/** A boolean, or a word the relay reads as one (see decision()). */
	approved?: unknown;
	reviewer?: string;
	notes?: string;
	workflowId?: string;
	workflowName?: string;
	executionId?: string | number;
	status?: string;
	currentStep?: string;
	leadId?: number | string;
	durationMs?: number | string;
	error?: string;
	node?: string;
	url?: string;
	/** More fields for the body; the named fields above win over these. */
	extra?: Record<string, unknown>;
}

/** Whether a value counts as given: not undefined or null, not blank text, not NaN. */
export function given(v: unknown): boolean {
	if (v === undefined || v === null) return false;
	if (typeof v === 'string') return v.trim().length > 0;
	if (typeof v === 'number') return Number.isFinite(v);
	return true;
}

/** A whole number from a number or a numeric string; otherwise an Error naming the field. */
function integer(field: string, v: unknown): number {
	const n = typeof v === 'string' ? Number(v.trim()) : v;
	if (typeof n !== 'number' || !Number.isSafeInteger(n)) {
		throw new Error(`${field} must be a whole number (got ${JSON.stringify(v)})`);
	}
	return n;
}

function text(v: unknown): string {
	return typeof v === 'string' ? v : String(v);
}

/**
 * A decision as the relay takes it: a boolean, or the words the relay reads as one
 * ("true", "yes", "on", "1" and their opposites, any case), which is what an expression
 * fed by a form or a chat button gives. Anything else is an Error quoting the value.
 */
export function decision(v: unknown): boolean {
	if (typeof v === 'boolean') return v;
	if (typeof v === 'number' && (v === 0 || v === 1)) return v === 1;
	if (typeof v === 'string') {
		const word = v.trim().toLowerCase();
		if (['true', 'yes', 'on', '1'].includes(word)) return true;
		if (['false', 'no', 'off', '0'].includes(word)) return false;
	}
	const shown = JSON.stringify(v) ?? String(v);
	throw new Error(`approved must be true or false (or yes/no, on/off, 1/0); got ${shown.slice(0, 40)}`);
}

/**
 * What an Error Trigger's item says about the failed run: its workflow's id and name and
 * the execution's id, for the Report Error fields left empty. Without them the relay
 * records no workflow_runs row, the event has no workflow_name, and a retried report
 * cannot be told from a second failure.
 */
export function fromErrorTrigger(item: unknown): Pick<CallbackFields, 'workflowId' | 'workflowName' | 'executionId'> {
	const object = (v: unknown): Record<string, unknown> =>
		v !== null && typeof v === 'object' && !Array.isArray(v) ? (v as Record<string, unknown>) : {};
	const workflow = object(object(item).workflow);
	const execution = object(object(item).execution);
	const pick = (v: unknown) => (typeof v === 'string' || typeof v === 'number' ? v : undefined);
	const name = pick(workflow.name);
	const id = pick(workflow.id);
	return {
		workflowId: id === undefined ? undefined : String(id),
		workflowName: name === undefined ? undefined : String(name),
		executionId: pick(execution.id),
	};
}

/**
 * The body of one callback, as an object whose JSON text is what gets signed and sent.
 * Throws an Error naming the field when a required one is missing or mistyped, so the
 * node fails before anything is sent.
 */
export function buildBody(operation: Operation, fields: CallbackFields): Record<string, unknown> {
	const body: Record<string, unknown> = { ...(fields.extra ?? {}) };
	const put = (key: string, value: unknown) => {
		if (given(value)) body[key] = value;
	};
	switch (operation) {
		case 'demoApproval':
		case 'videoApproval': {
			const key = operation === 'demoApproval' ? 'demo_id' : 'video_id';
			// 0 is the node parameter's default, never a row id: treat it as unset.
			if (!given(fields.entityId) || Number(fields.entityId) === 0) {
				throw new Error(`${key} is required`);
			}
			body[key] = integer(key, fields.entityId);
			body.approved = decision(fields.approved);
			put('reviewer', fields.reviewer);
			put('notes', fields.notes);
			return body;
		}
		case 'workflowStatus':
		case 'workflowCompleted':
		case 'errorNotification': {
			if (operation === 'errorNotification') {
				if (!given(fields.error)) throw new Error('error is required');
				body.error = text(fields.error);
			}
			if (given(fields.workflowId)) body.workflow_id = text(fields.workflowId);
			if (given(fields.executionId)) body.execution_id = text(fields.executionId);
			if (operation !== 'errorNotification') {
				if (!given(fields.workflowId)) throw new Error('workflow_id is required');
				if (!given(fields.executionId)) throw new Error('execution_id is required');
			}
			put('workflow_name', fields.workflowName);
			put('status', fields.status);
			put('current_step', fields.currentStep);
			if (given(fields.leadId)) body.lead_id = integer('lead_id', fields.leadId);
			if (given(fields.durationMs)) body.duration_ms = integer('duration_ms', fields.durationMs);
			put('node', fields.node);
			put('url', fields.url);
			return body;
		}
	}
}

/** The relay's answer as the node outputs it. */
export interface RelayAnswer {
	ok: boolean;
	statusCode: number;
	/** The parsed JSON answer, or `{ raw }` when it was not JSON. */
	body: Record<string, unknown>;
	/** On a refusal: the relay's `error` and `detail`, and `field` when one is at fault. */
	error?: string;
	detail?: unknown;
	field?: string;
}

export function readAnswer(statusCode: number, responseBody: unknown): RelayAnswer {
	let body: Record<string, unknown>;
	if (responseBody !== null && typeof responseBody === 'object' && !Buffer.isBuffer(responseBody)) {
		body = responseBody as Record<string, unknown>;
	} else {
		const raw = Buffer.isBuffer(responseBody)
			? responseBody.toString('utf8')
			: responseBody === undefined || responseBody === null
				? ''
				: String(responseBody);
		try {
			const parsed: unknown = JSON.parse(raw);
			body = parsed !== null && typeof parsed === 'object' ? (parsed as Record<string, unknown>) : { raw };
		} catch {
			body = { raw };
		}
	}
	const ok = statusCode >= 200 && statusCode < 300;
	if (ok) return { ok, statusCode, body };
	return {
		ok,
		statusCode,
		body,
		error: typeof body.error === 'string' ? body.error : `HTTP ${statusCode}`,
		detail: body.detail ?? body.raw ?? null,
		...(typeof body.field === 'string' ? { field: body.field } : {}),
	};
}
