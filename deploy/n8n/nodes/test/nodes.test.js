// The two nodes driven through fake n8n contexts: what the trigger answers and whether
// it starts an execution, and what the action node puts on the wire.
const test = require('node:test');
const assert = require('node:assert/strict');
const { EventEmitter } = require('node:events');
const { N8nRelayTrigger } = require('../dist/nodes/N8nRelayTrigger/N8nRelayTrigger.node');
const { N8nRelay } = require('../dist/nodes/N8nRelay/N8nRelay.node');
const { N8nRelayApi } = require('../dist/credentials/N8nRelayApi.credentials');
const { signHeaders, verify } = require('../dist/lib/signature');
const pkg = require('../package.json');

const SECRET = 'delivery-secret';
const BODY = '{"id":"e1","event":"lead_scraped","occurred_at":"2025-11-04T12:00:00Z","entity_type":"lead","entity_id":7,"data":{"lead_id":7}}';

function fakeResponse() {
	const res = new EventEmitter();
	res.statusCode = 200;
	res.headersSent = false;
	res.sent = undefined;
	res.status = (code) => {
		res.statusCode = code;
		return res;
	};
	// As Express does: json() ends the response through end().
	res.end = () => {
		res.headersSent = true;
	};
	res.json = (body) => {
		res.sent = body;
		res.end();
	};
	return res;
}

function triggerContext({ headers, body = BODY, params = {}, credentials = {} }) {
	const res = fakeResponse();
	const values = { toleranceSeconds: 300, events: [], options: {}, ...params };
	const ctx = {
		res,
		getRequestObject: () => ({ headers, rawBody: Buffer.from(body) }),
		getResponseObject: () => res,
		getCredentials: async () => ({ scheme: 'x-webhook-signature', deliverySecret: SECRET, deliverySecretNext: '', ...credentials }),
		getNodeParameter: (name, fallback) => (name in values ? values[name] : fallback),
		getWorkflow: () => ({ id: 'wf1' }),
		getNode: () => ({ name: 'n8n-relay Trigger' }),
	};
	return ctx;
}

function lower(headers) {
	return Object.fromEntries(Object.entries(headers).map(([k, v]) => [k.toLowerCase(), v]));
}
const signed = (over = {}) =>
	lower({ ...signHeaders({ scheme: 'x-webhook-signature', secrets: [SECRET], body: BODY }), 'x-webhook-id': 'e1', 'x-webhook-attempt': '1', ...over });

async function deliver(options) {
	const ctx = triggerContext(options);
	const result = await new N8nRelayTrigger().webhook.call(ctx);
	return { ctx, result };
}

test('package.json names what n8n loads, and the nodes are what it says', () => {
	assert.ok(pkg.name.startsWith('n8n-nodes-'));
	assert.ok(pkg.keywords.includes('n8n-community-node-package'));
	assert.deepEqual(Object.keys(pkg.peerDependencies), ['n8n-workflow']);
	for (const file of [...pkg.n8n.nodes, ...pkg.n8n.credentials]) require(require('node:path').join('..', file));
	assert.equal(new N8nRelayApi().name, 'n8nRelayApi');
	const trigger = new N8nRelayTrigger().description;
	assert.equal(trigger.name, 'n8nRelayTrigger');
	assert.equal(trigger.webhooks[0].isFullPath, true);
	assert.deepEqual(trigger.credentials, [{ name: 'n8nRelayApi', required: true }]);
	const action = new N8nRelay().description;
	assert.deepEqual(
		action.properties.find((p) => p.name === 'operation').options.map((o) => o.value),
		['demoApproval', 'videoApproval', 'errorNotification', 'workflowCompleted', 'workflowStatus'],
	);
});

test('trigger: a verified delivery starts an execution with the event', async () => {
	const { ctx, result } = await deliver({ headers: signed({ 'x-webhook-attempt': '3' }) });
	assert.equal(ctx.res.sent, undefined, 'n8n answers, not the node');
	assert.deepEqual(result.workflowData, [
		[{ json: { id: 'e1', event: 'lead_scraped', occurred_at: '2025-11-04T12:00:00Z', entity_type: 'lead', entity_id: 7, data: { lead_id: 7 }, attempt: 3 } }],
	]);
	assert.deepEqual(result.webhookResponse, { status: 'accepted', id: 'e1', event: 'lead_scraped' });
});

test('trigger: forged, tampered, stale and future deliveries get 401 and no execution', async () => {
	const now = Math.floor(Date.now() / 1000);
	const cases = {
		forged: { headers: signed({ 'x-webhook-signature-256': '0'.repeat(64) }) },
		'wrong secret': { headers: lower({ ...signHeaders({ scheme: 'x-webhook-signature', secrets: ['nope'], body: BODY }) }) },
		tampered: { headers: signed(), body: BODY.replace('"lead_id":7', '"lead_id":8') },
		stale: { headers: lower(signHeaders({ scheme: 'x-webhook-signature', secrets: [SECRET], body: BODY, timestamp: now - 600 })) },
		future: { headers: lower(signHeaders({ scheme: 'x-webhook-signature', secrets: [SECRET], body: BODY, timestamp: now + 600 })) },
		unsigned: { headers: {} },
	};
	for (const [name, options] of Object.entries(cases)) {
		const { ctx, result } = await deliver(options);
		assert.equal(ctx.res.statusCode, 401, name);
		assert.equal(ctx.res.sent.error, 'invalid or expired signature', name);
		assert.equal(result.workflowData, undefined, name);
		assert.equal(result.noWebhookResponse, true, name);
	}
});

test('trigger: a rotated secret in the credential verifies either signature', async () => {
	const headers = lower(signHeaders({ scheme: 'x-webhook-signature', secrets: ['brand-new', 'older'], body: BODY }));
	const { result } = await deliver({ headers, credentials: { deliverySecret: 'older', deliverySecretNext: 'unused' } });
	assert.ok(result.workflowData);
});

test('trigger: standard-webhooks deliveries', async () => {
	const secret = 'whsec_' + Buffer.alloc(32, 1).toString('base64');
	const headers = signHeaders({ scheme: 'standard-webhooks', secrets: [secret], body: BODY, id: 'e1' });
	const ok = await deliver({ headers, credentials: { scheme: 'standard-webhooks', deliverySecret: secret } });
	assert.ok(ok.result.workflowData);
	const bad = await deliver({ headers: { ...headers, 'webhook-id': 'e2' }, credentials: { scheme: 'standard-webhooks', deliverySecret: secret } });
	assert.equal(bad.ctx.res.statusCode, 401);
	// A credential on the other scheme refuses it (no x-webhook-signature-256 header).
	const other = await deliver({ headers });
	assert.equal(other.ctx.res.statusCode, 401);
});

test('trigger: an unusable credential secret is 500 (our fault), still without an execution', async () => {
	const { ctx, result } = await deliver({ headers: signed(), credentials: { scheme: 'standard-webhooks', deliverySecret: 'not-whsec' } });
	assert.equal(ctx.res.statusCode, 500);
	assert.equal(result.workflowData, undefined);
	assert.ok(!JSON.stringify(ctx.res.sent).includes('not-whsec'));
});

test('trigger: events outside the list are refused with 422, or acknowledged if so set', async () => {
	const refused = await deliver({ headers: signed(), params: { events: ['demo_completed', 'demo_failed'] } });
	assert.equal(refused.ctx.res.statusCode, 422);
	assert.equal(refused.result.workflowData, undefined);
	const ignored = await deliver({ headers: signed(), params: { events: ['demo_completed'], options: { otherEvents: 'ignore' } } });
	assert.equal(ignored.ctx.res.statusCode, 200);
	assert.equal(ignored.ctx.res.sent.status, 'ignored');
	assert.equal(ignored.result.workflowData, undefined);
	const listed = await deliver({ headers: signed(), params: { events: ['demo_completed', 'lead_scraped'] } });
	assert.ok(listed.result.workflowData);
});

test('trigger: duplicate suppression by the delivery\'s signed id, only after a 2xx answer', async () => {
	const params = { options: { deduplicate: true, dedupWindowSeconds: 60 } };
	// The unsigned header is not what counts: the body's signed id (e1) is.
	const headers = signed({ 'x-webhook-id': 'dup-1' });
	const first = await deliver({ headers, params });
	assert.ok(first.result.workflowData);
	// A copy while the first is in flight: 409, the relay retries later.
	const during = await deliver({ headers, params });
	assert.equal(during.ctx.res.statusCode, 409);
	// The first answer was a 500 (the run failed, answer-after-finish mode): forgotten.
	first.ctx.res.statusCode = 500;
	first.ctx.res.headersSent = true;
	first.ctx.res.emit('finish');
	const retry = await deliver({ headers, params });
	assert.ok(retry.result.workflowData);
	retry.ctx.res.statusCode = 200;
	retry.ctx.res.headersSent = true;
	retry.ctx.res.emit('finish');
	const again = await deliver({ headers, params });
	assert.equal(again.ctx.res.statusCode, 200);
	assert.deepEqual(again.ctx.res.sent, { status: 'duplicate', id: 'e1' });
	assert.equal(again.result.workflowData, undefined);
	// Off by default.
	const plain = await deliver({ headers });
	assert.ok(plain.result.workflowData);
});

test('trigger: a run whose connection the relay closed before an answer is still in flight for its retry', async () => {
	const params = { options: { deduplicate: true, dedupWindowSeconds: 60 } };
	const body = BODY.replace('"e1"', '"e-slow"');
	const headers = lower({ ...signHeaders({ scheme: 'x-webhook-signature', secrets: [SECRET], body }), 'x-webhook-attempt': '1' });
	const first = await deliver({ headers, body, params });
	assert.ok(first.result.workflowData);
	// Answer-after-finish mode, a run longer than the relay's timeout: the relay closes
	// the connection, no answer has gone out, the run goes on.
	first.ctx.res.emit('close');
	const retry = await deliver({ headers, body, params });
	assert.equal(retry.ctx.res.statusCode, 409, 'no second, concurrent execution');
	assert.equal(retry.result.workflowData, undefined);
	// The run ends well and n8n sends its answer to the closed connection (no 'finish'
	// comes): that settles the id, and the relay's next retry is a duplicate, not a 409
	// until the window ends (which would fail a row whose run succeeded).
	first.ctx.res.status(200).json({ status: 'done' });
	const later = await deliver({ headers, body, params });
	assert.equal(later.ctx.res.statusCode, 200);
	assert.deepEqual(later.ctx.res.sent, { status: 'duplicate', id: 'e-slow' });
	assert.equal(later.result.workflowData, undefined);
	// A run that fails answers 500 to the closed connection: forgotten, so a retry runs.
	const failBody = BODY.replace('"e1"', '"e-fail"');
	const failHeaders = lower({ ...signHeaders({ scheme: 'x-webhook-signature', secrets: [SECRET], body: failBody }), 'x-webhook-attempt': '1' });
	const failing = await deliver({ headers: failHeaders, body: failBody, params });
	failing.ctx.res.emit('close');
	failing.ctx.res.status(500).json({ error: 'run failed' });
	const rerun = await deliver({ headers: failHeaders, body: failBody, params });
	assert.ok(rerun.result.workflowData);
});

function actionContext({ operation, params = {}, answer, continueOnFail = false, credentials = {}, input = {} }) {
	const sent = [];
	const values = { operation, ...params };
	const ctx = {
		sent,
		getInputData: () => [{ json: input }],
		getCredentials: async () => ({
			scheme: 'x-webhook-signature',
			callbackSecret: 'callback-secret',
			callbackBaseUrl: 'http://relay.test:8000/',
			...credentials,
		}),
		getNodeParameter: (name, _i, fallback) => (name in values ? values[name] : fallback),
		getNode: () => ({ name: 'n8n-relay', type: 'n8n-nodes-n8n-relay.n8nRelay', typeVersion: 1, parameters: {} }),
		continueOnFail: () => continueOnFail,
		helpers: {
			httpRequest: async (request) => {
				sent.push(request);
				if (answer instanceof Error) throw answer;
				return answer;
			},
		},
	};
	return ctx;
}

test('action: signs exactly the bytes it sends and returns the relay\'s answer', async () => {
	const ctx = actionContext({
		operation: 'demoApproval',
		params: { demoId: 456, approved: true, reviewer: 'Ann', notes: 'ok' },
		answer: { statusCode: 200, body: { status: 'approved', demo_id: 456, action: 'continue' } },
	});
	const [[item]] = await new N8nRelay().execute.call(ctx);
	assert.deepEqual(item.json, { status: 'approved', demo_id: 456, action: 'continue', statusCode: 200 });
	const [request] = ctx.sent;
	assert.equal(request.method, 'POST');
	assert.equal(request.url, 'http://relay.test:8000/api/v1/webhooks/n8n/demo-approval');
	assert.equal(typeof request.body, 'string');
	assert.deepEqual(JSON.parse(request.body), { demo_id: 456, approved: true, reviewer: 'Ann', notes: 'ok' });
	assert.equal(request.headers['Content-Type'], 'application/json');
	const verdict = verify({ scheme: 'x-webhook-signature', secrets: ['callback-secret'], headers: request.headers, body: request.body });
	assert.equal(verdict.ok, true);
});

test('action: standard-webhooks callbacks carry a fresh webhook-id', async () => {
	const secret = 'whsec_' + Buffer.alloc(32, 2).toString('base64');
	const ctx = actionContext({
		operation: 'workflowStatus',
		params: { workflowId: 'wf', executionId: '42', status: 'running', additionalFields: { currentStep: 'demo_approval', leadId: 3 } },
		answer: { statusCode: 200, body: '{"status":"received"}' },
		credentials: { scheme: 'standard-webhooks', callbackSecret: secret },
	});
	await new N8nRelay().execute.call(ctx);
	const [request] = ctx.sent;
	assert.match(request.headers['webhook-id'], /^msg_[0-9a-f-]{36}$/);
	assert.deepEqual(JSON.parse(request.body), { workflow_id: 'wf', execution_id: '42', status: 'running', current_step: 'demo_approval', lead_id: 3 });
	assert.equal(verify({ scheme: 'standard-webhooks', secrets: [secret], headers: request.headers, body: request.body }).ok, true);
});

test('action: a refusal fails the node with the relay\'s error and detail, or is an error item', async () => {
	const answer = { statusCode: 404, body: { error: 'not_found', detail: 'no demo_sites row with id 999999' } };
	const failing = actionContext({ operation: 'demoApproval', params: { demoId: 999999, approved: true }, answer });
	await assert.rejects(new N8nRelay().execute.call(failing), (error) => {
		assert.match(error.message, /refused the demoApproval callback: 404 not_found/);
		assert.equal(error.description, 'no demo_sites row with id 999999');
		return true;
	});
	const tolerant = actionContext({ operation: 'demoApproval', params: { demoId: 999999, approved: true }, answer, continueOnFail: true });
	const [[item]] = await new N8nRelay().execute.call(tolerant);
	assert.deepEqual(item.json, { error: 'not_found', detail: 'no demo_sites row with id 999999', statusCode: 404 });
	// The field the relay names travels with the error.
	const invalid = { statusCode: 400, body: { error: 'invalid_field', detail: 'must be a whole number', field: 'demo_id' } };
	const named = actionContext({ operation: 'demoApproval', params: { demoId: 1, approved: true }, answer: invalid });
	await assert.rejects(new N8nRelay().execute.call(named), /400 invalid_field \(field demo_id\)/);
	const namedItem = actionContext({ operation: 'demoApproval', params: { demoId: 1, approved: true }, answer: invalid, continueOnFail: true });
	const [[fieldItem]] = await new N8nRelay().execute.call(namedItem);
	assert.equal(fieldItem.json.field, 'demo_id');
});

test('action: a relay that cannot be reached fails the item, or is an error item with On Error: Continue; requests are time-bounded', async () => {
	const refused = Object.assign(new Error('connect ECONNREFUSED 127.0.0.1:8000'), { code: 'ECONNREFUSED' });
	const credentials = { callbackBaseUrl: 'http://ops:pw@relay.test:8000/' };
	const failing = actionContext({ operation: 'demoApproval', params: { demoId: 1, approved: true }, answer: refused, credentials });
	await assert.rejects(new N8nRelay().execute.call(failing), (error) => {
		assert.match(error.message, /could not be reached at http:\/\/relay\.test:8000\//);
		assert.ok(!error.message.includes('pw@'), error.message);
		assert.match(error.description, /ECONNREFUSED/);
		return true;
	});
	assert.ok(failing.sent[0].timeout > 0 && failing.sent[0].timeout <= 60_000, 'a timeout is set');
	const tolerant = actionContext({ operation: 'demoApproval', params: { demoId: 1, approved: true }, answer: refused, continueOnFail: true });
	const [[item]] = await new N8nRelay().execute.call(tolerant);
	assert.equal(item.json.error, 'unreachable');
	assert.match(item.json.detail, /ECONNREFUSED/);
	assert.equal(item.json.statusCode, null);
});

test("action: Report Error after an Error Trigger sends the failed run's ids and workflow name unless set", async () => {
	const input = {
		execution: { id: '231', url: 'http://n8n/execution/231', error: { message: 'boom' } },
		workflow: { id: '1', name: 'Lead Enrichment' },
	};
	const answer = { statusCode: 200, body: { status: 'received' } };
	const defaults = actionContext({ operation: 'errorNotification', params: { error: 'boom' }, answer, input });
	await new N8nRelay().execute.call(defaults);
	assert.deepEqual(JSON.parse(defaults.sent[0].body), {
		error: 'boom',
		workflow_id: '1',
		execution_id: '231',
		workflow_name: 'Lead Enrichment',
	});
	const set = actionContext({
		operation: 'errorNotification',
		params: { error: 'boom', additionalFields: { workflowId: 'w9', workflowName: ' ', executionId: '5' } },
		answer,
		input,
	});
	await new N8nRelay().execute.call(set);
	assert.deepEqual(JSON.parse(set.sent[0].body), {
		error: 'boom',
		workflow_id: 'w9',
		execution_id: '5',
		workflow_name: 'Lead Enrichment',
	});
	// Given in More Fields (JSON), a field is not overwritten by the trigger's.
	const extra = actionContext({
		operation: 'errorNotification',
		params: { error: 'boom', additionalFields: { extra: '{"execution_id": "77", "workflow_name": "Mine", "workflow_id": null}' } },
		answer,
		input,
	});
	await new N8nRelay().execute.call(extra);
	assert.deepEqual(JSON.parse(extra.sent[0].body), {
		error: 'boom',
		workflow_id: '1',
		execution_id: '77',
		workflow_name: 'Mine',
	});
});

test('action: a missing field or callback secret fails before anything is sent', async () => {
	const noId = actionContext({ operation: 'errorNotification', params: { error: '' }, answer: { statusCode: 200, body: {} } });
	await assert.rejects(new N8nRelay().execute.call(noId), /error is required/);
	assert.equal(noId.sent.length, 0);
	const noSecret = actionContext({ operation: 'demoApproval', params: { demoId: 1, approved: true }, answer: {}, credentials: { callbackSecret: '' } });
	await assert.rejects(new N8nRelay().execute.call(noSecret), /no callback secret/);
	assert.equal(noSecret.sent.length, 0);
});

test('action: More Fields that are not JSON are named, and nothing is sent', async () => {
	const ctx = actionContext({
		operation: 'workflowStatus',
		params: { workflowId: 'wf', executionId: '42', status: 'running', additionalFields: { extra: '{lead: 3}' } },
		answer: { statusCode: 200, body: {} },
	});
	await assert.rejects(new N8nRelay().execute.call(ctx), /More Fields \(JSON\) is not valid JSON: /);
	assert.equal(ctx.sent.length, 0);
});

test('action: the Error field\'s default reads an Error Trigger whose workflow failed in its trigger', () => {
	const error = new N8nRelay().description.properties.find((p) => p.name === 'error');
	assert.match(error.default, /\$json\.execution\?\.error\?\.message/);
	assert.match(error.default, /\$json\.trigger\?\.error\?\.message/);
});
