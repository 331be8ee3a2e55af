// The pure helpers beside the signature rules: duplicate memory, delivery parsing,
// callback bodies and the relay's answers.
const test = require('node:test');
const assert = require('node:assert/strict');
const { RecentIds } = require('../dist/lib/dedup');
const { EVENTS, defaultPath, parseDelivery } = require('../dist/lib/events');
const { buildBody, callbackUrl, readAnswer, decision, fromErrorTrigger, ENDPOINTS } = require('../dist/lib/callbacks');

test('dedup: an id answered 2xx is a duplicate within the window, new after it', () => {
	const ids = new RecentIds(60);
	assert.equal(ids.claim('a', 1000), 'new');
	assert.equal(ids.claim('a', 1001), 'in-flight');
	ids.settle('a', true, 1002);
	assert.equal(ids.claim('a', 1030), 'duplicate');
	assert.equal(ids.claim('a', 1063), 'new', 'the window is counted from the answer');
});

test('dedup: an id whose answer was not 2xx is forgotten, so the relay\'s retry runs', () => {
	const ids = new RecentIds(60);
	assert.equal(ids.claim('a', 1000), 'new');
	ids.settle('a', false, 1001);
	assert.equal(ids.claim('a', 1002), 'new');
});

test('dedup: an in-flight id older than the window is forgotten, and the size is bounded', () => {
	const ids = new RecentIds(60, 3);
	ids.claim('stuck', 1000);
	assert.equal(ids.claim('stuck', 1061), 'new');
	for (const id of ['b', 'c', 'd', 'e']) ids.claim(id, 1062);
	assert.equal(ids.size, 3);
	assert.equal(ids.claim('e', 1062), 'in-flight');
});

test('events: the twelve events and their default paths', () => {
	assert.equal(EVENTS.length, 12);
	assert.equal(new Set(EVENTS).size, 12);
	assert.equal(defaultPath('approval_requested'), 'approval-requested');
});

test('events: a delivery body becomes the trigger\'s output', () => {
	const body = '{"id":"e1","event":"lead_scraped","occurred_at":"2025-11-04T12:00:00Z","entity_type":"lead","entity_id":123,"data":{"lead_id":123}}';
	assert.deepEqual(parseDelivery(Buffer.from(body), '2'), {
		id: 'e1',
		event: 'lead_scraped',
		occurred_at: '2025-11-04T12:00:00Z',
		entity_type: 'lead',
		entity_id: 123,
		data: { lead_id: 123 },
		attempt: 2,
	});
	assert.equal(parseDelivery('{}', undefined).attempt, null);
	assert.equal(parseDelivery('{}', 'x').attempt, null);
	assert.throws(() => parseDelivery('not json'), /not JSON/);
	assert.throws(() => parseDelivery('[1]'), /not a JSON object/);
});

test('callbacks: URLs join the base whatever its trailing slashes, and refuse a non-URL', () => {
	assert.equal(callbackUrl('http://relay:8000/', 'demoApproval'), 'http://relay:8000/api/v1/webhooks/n8n/demo-approval');
	assert.equal(callbackUrl(' https://x.test//', 'errorNotification'), 'https://x.test/api/v1/webhooks/n8n/error-notification');
	assert.throws(() => callbackUrl('relay:8000', 'workflowStatus'), /must start with http/);
	// Refused or not, a base URL's credentials never reach a message.
	assert.throws(() => callbackUrl('ftp://ops:s3cret@relay:8000', 'workflowStatus'), (e) => !e.message.includes('s3cret'));
	assert.deepEqual(Object.values(ENDPOINTS).sort(), [
		'demo-approval',
		'error-notification',
		'video-approval',
		'workflow-completed',
		'workflow-status',
	]);
});

test('callbacks: the bodies of the README\'s Callbacks table', () => {
	assert.deepEqual(buildBody('demoApproval', { entityId: '456', approved: true, reviewer: 'Ann', notes: '' }), {
		demo_id: 456,
		approved: true,
		reviewer: 'Ann',
	});
	assert.deepEqual(buildBody('videoApproval', { entityId: 789, approved: false }), { video_id: 789, approved: false });
	assert.deepEqual(
		buildBody('workflowStatus', { workflowId: 'wf', executionId: 42, status: 'running', currentStep: 'demo_approval', leadId: 123 }),
		{ workflow_id: 'wf', execution_id: '42', status: 'running', current_step: 'demo_approval', lead_id: 123 },
	);
	assert.deepEqual(
		buildBody('workflowCompleted', { workflowId: 'wf', executionId: '42', status: 'success', durationMs: 1500, extra: { status: 'x', foo: 1 } }),
		{ foo: 1, workflow_id: 'wf', execution_id: '42', status: 'success', duration_ms: 1500 },
	);
	assert.deepEqual(
		buildBody('errorNotification', { error: 'boom', workflowId: 'wf', workflowName: 'W', executionId: '7', node: 'HTTP', url: 'http://n8n/x' }),
		{ error: 'boom', workflow_id: 'wf', execution_id: '7', workflow_name: 'W', node: 'HTTP', url: 'http://n8n/x' },
	);
});

test('callbacks: missing or mistyped fields are named before anything is sent', () => {
	assert.throws(() => buildBody('demoApproval', { approved: true }), /demo_id is required/);
	assert.throws(() => buildBody('videoApproval', { entityId: 0, approved: true }), /video_id is required/);
	assert.throws(() => buildBody('videoApproval', { entityId: 'abc', approved: true }), /video_id must be a whole number/);
	assert.throws(() => buildBody('demoApproval', { entityId: 1 }), /approved must be true or false.*got undefined/);
	assert.throws(() => buildBody('demoApproval', { entityId: 1, approved: 'maybe' }), /got "maybe"/);
	assert.throws(() => buildBody('workflowStatus', { executionId: '1' }), /workflow_id is required/);
	assert.throws(() => buildBody('workflowCompleted', { workflowId: 'w' }), /execution_id is required/);
	assert.throws(() => buildBody('errorNotification', { error: ' ' }), /error is required/);
	assert.throws(() => buildBody('workflowStatus', { workflowId: 'w', executionId: '1', leadId: 1.5 }), /lead_id/);
});

test('callbacks: the relay\'s answers, accepted and refused', () => {
	assert.deepEqual(readAnswer(200, { status: 'received' }), { ok: true, statusCode: 200, body: { status: 'received' } });
	assert.deepEqual(readAnswer(200, '{"status":"received"}').body, { status: 'received' });
	const refused = readAnswer(404, '{"error":"not_found","detail":"no demo_sites row with id 999999","field":"demo_id"}');
	assert.equal(refused.ok, false);
	assert.equal(refused.error, 'not_found');
	assert.equal(refused.field, 'demo_id');
	assert.equal(refused.detail, 'no demo_sites row with id 999999');
	assert.equal(refused.body.field, 'demo_id');
	const proxy = readAnswer(502, Buffer.from('<html>bad gateway</html>'));
	assert.equal(proxy.error, 'HTTP 502');
	assert.equal(proxy.detail, '<html>bad gateway</html>');
});

test('callbacks: a decision given as the words the relay takes, as a form or chat button sends it', () => {
	for (const yes of [true, 'true', ' Yes ', 'on', '1', 1]) assert.equal(decision(yes), true, String(yes));
	for (const no of [false, 'false', 'NO', 'off', '0', 0]) assert.equal(decision(no), false, String(no));
	assert.deepEqual(buildBody('demoApproval', { entityId: 4, approved: 'yes' }), { demo_id: 4, approved: true });
	for (const bad of ['', 'approve', 2, null, {}]) assert.throws(() => decision(bad), /approved must be true or false/);
});

test("callbacks: Report Error's empty fields come from the Error Trigger's item", () => {
	const item = {
		execution: { id: '231', url: 'http://n8n/execution/231', error: { message: 'boom' } },
		workflow: { id: '1', name: 'Lead Enrichment' },
	};
	assert.deepEqual(fromErrorTrigger(item), { workflowId: '1', workflowName: 'Lead Enrichment', executionId: '231' });
	// A workflow that failed in its trigger has no execution.
	assert.deepEqual(fromErrorTrigger({ trigger: { error: {} }, workflow: { id: 7, name: 'W' } }), {
		workflowId: '7',
		workflowName: 'W',
		executionId: undefined,
	});
	for (const other of [null, 'text', [], { workflow: 'x' }]) {
		assert.deepEqual(fromErrorTrigger(other), { workflowId: undefined, workflowName: undefined, executionId: undefined });
	}
});
