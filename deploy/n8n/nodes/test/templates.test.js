// The workflow templates' own code (deploy/n8n/workflows): each Code node's JavaScript
// and the callback URL expressions, run here against the data n8n would hand them, so
// a template that silently sends the wrong thing fails a test, not a builder's review.
const { test } = require('node:test');
const assert = require('node:assert/strict');
const path = require('node:path');

const workflows = path.join(__dirname, '..', '..', 'workflows');

function node(file, name) {
	const flow = require(path.join(workflows, file));
	const found = flow.nodes.find((n) => n.name === name);
	assert.ok(found, `${file} has no node ${name}`);
	return found;
}

// A Code node's body, given n8n's globals for one run.
function runCode(code, globals) {
	const names = Object.keys(globals);
	return new Function(...names, code)(...names.map((n) => globals[n]));
}

// An expression parameter `={{ ... }}` evaluated with n8n's globals.
function evaluate(expression, globals) {
	const inner = expression.replace(/^=\{\{/, '').replace(/\}\}$/, '');
	return runCode(`return (${inner});`, globals);
}

test('approval template: the review step\'s decision goes to the relay as given', () => {
	const code = node('approval-requested.json', 'Build callbacks').parameters.jsCode;
	const event = { data: { approval_type: 'demo', entity_id: 456, lead_id: 7 } };
	for (const approved of [true, 'true', 'yes', false]) {
		const items = runCode(code, {
			$: () => ({ first: () => ({ json: { body: event } }) }),
			$input: { first: () => ({ json: { approved, reviewer: 'Ann', notes: 'ok' } }) },
			$workflow: { id: 'wf' },
			$execution: { id: 42 },
		});
		const decision = items.find((i) => i.json.endpoint === 'demo-approval');
		assert.equal(JSON.parse(decision.json.body).approved, approved, `approved ${approved}`);
	}
});

test('templates: a callback base URL with a trailing slash still reaches /api/v1/...', () => {
	for (const [file, name] of [
		['approval-requested.json', 'Send callback'],
		['error-report.json', 'Send error notification'],
	]) {
		const url = node(file, name).parameters.url;
		for (const base of ['http://relay:8000', 'http://relay:8000/', 'http://relay:8000//']) {
			assert.equal(
				evaluate(url, { $env: { N8N_RELAY_CALLBACK_BASE_URL: base }, $json: { endpoint: 'demo-approval' } }),
				'http://relay:8000/api/v1/webhooks/n8n/demo-approval',
				`${file}: ${base}`,
			);
		}
	}
});

test('error templates: a workflow that failed in its trigger reports that error', () => {
	const failedInTrigger = { trigger: { error: { message: 'bad credentials' } }, workflow: { id: '3', name: 'Leads' } };
	const code = node('error-report.json', 'Build error notification').parameters.jsCode;
	const [item] = runCode(code, { $input: { first: () => ({ json: failedInTrigger }) } });
	assert.equal(JSON.parse(item.json.body).error, 'bad credentials');
	const field = node(path.join('nodes', 'error-report.json'), 'Report error').parameters.error;
	assert.equal(evaluate(field, { $json: failedInTrigger }), 'bad credentials');
	assert.equal(evaluate(field, { $json: { execution: { error: { message: 'boom' } } } }), 'boom');
});
