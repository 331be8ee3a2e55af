import { randomUUID } from 'crypto';
import type {
	IDataObject,
	IExecuteFunctions,
	INodeExecutionData,
	INodeProperties,
	INodeType,
	INodeTypeDescription,
} from 'n8n-workflow';
import { NodeConnectionTypes, NodeOperationError } from 'n8n-workflow';

import {
	buildBody,
	callbackUrl,
	fromErrorTrigger,
	given,
	isOperation,
	readAnswer,
	shownUrl,
	type CallbackFields,
	type Operation,
} from '../../lib/callbacks';
import { isScheme, signHeaders } from '../../lib/signature';

const show = (...operation: Operation[]) => ({ show: { operation } });

/**
 * How long a callback may take, answer included. The relay answers in milliseconds; its
 * own limits (the body within callbacks.request_timeout_seconds, 30 s, and each query
 * within database.statement_timeout_seconds, 30 s) come first, so a slow callback gets
 * the relay's answer, not this. A stalled relay or a dropped network path must not hold
 * the execution for ever.
 */
const REQUEST_TIMEOUT_MS = 60_000;

const approvalFields: INodeProperties[] = [
	{
		displayName: 'Demo ID',
		name: 'demoId',
		type: 'number',
		default: 0,
		required: true,
		displayOptions: show('demoApproval'),
		description: 'The demo_sites row, e.g. {{ $json.data.demo_site_id }} of an approval_requested event',
	},
	{
		displayName: 'Video ID',
		name: 'videoId',
		type: 'number',
		default: 0,
		required: true,
		displayOptions: show('videoApproval'),
		description: 'The videos row, e.g. {{ $json.data.video_id }} of an approval_requested event',
	},
	{
		displayName: 'Approved',
		name: 'approved',
		type: 'boolean',
		default: false,
		displayOptions: show('demoApproval', 'videoApproval'),
		description:
			'Whether it is approved (the row becomes approved, which the relay turns into demo_completed or video_completed) or rejected (nothing is emitted). An expression may also give the words the relay takes: true/false, yes/no, on/off, 1/0.',
	},
	{
		displayName: 'Reviewer',
		name: 'reviewer',
		type: 'string',
		default: '',
		displayOptions: show('demoApproval', 'videoApproval'),
	},
	{
		displayName: 'Notes',
		name: 'notes',
		type: 'string',
		default: '',
		displayOptions: show('demoApproval', 'videoApproval'),
	},
];

const runFields: INodeProperties[] = [
	{
		displayName: 'Workflow ID',
		name: 'workflowId',
		type: 'string',
		default: '={{ $workflow.id }}',
		required: true,
		displayOptions: show('workflowStatus', 'workflowCompleted'),
	},
	{
		displayName: 'Execution ID',
		name: 'executionId',
		type: 'string',
		default: '={{ $execution.id }}',
		required: true,
		displayOptions: show('workflowStatus', 'workflowCompleted'),
		description: 'The relay keeps one workflow_runs row per execution ID',
	},
	{
		displayName: 'Status',
		name: 'status',
		type: 'string',
		default: 'running',
		displayOptions: show('workflowStatus'),
	},
	{
		displayName: 'Status',
		name: 'status',
		type: 'string',
		default: 'success',
		displayOptions: show('workflowCompleted'),
	},
	{
		displayName: 'Error',
		name: 'error',
		type: 'string',
		// A workflow that failed in its trigger has no execution in the Error Trigger's
		// output: its error is under trigger.
		default: '={{ $json.execution?.error?.message ?? $json.trigger?.error?.message }}',
		required: true,
		displayOptions: show('errorNotification'),
		description: 'What went wrong; the default reads it from an Error Trigger (execution.error, or trigger.error when the workflow failed in its trigger)',
	},
	{
		displayName: 'Additional Fields',
		name: 'additionalFields',
		type: 'collection',
		placeholder: 'Add field',
		default: {},
		displayOptions: show('workflowStatus', 'workflowCompleted', 'errorNotification'),
		options: [
			{ displayName: 'Current Step', name: 'currentStep', type: 'string', default: '' },
			{ displayName: 'Duration (Ms)', name: 'durationMs', type: 'number', default: 0 },
			{
				displayName: 'Execution ID',
				name: 'executionId',
				type: 'string',
				default: '',
				displayOptions: { show: { '/operation': ['errorNotification'] } },
				description: "The failed execution; left empty, the Error Trigger's execution.id",
			},
			{ displayName: 'Lead ID', name: 'leadId', type: 'number', default: 0 },
			{ displayName: 'Node', name: 'node', type: 'string', default: '' },
			{
				displayName: 'More Fields (JSON)',
				name: 'extra',
				type: 'json',
				default: '{}',
				description: 'Further fields for the body; the named fields win over these',
			},
			{ displayName: 'URL', name: 'url', type: 'string', default: '' },
			{
				displayName: 'Workflow ID',
				name: 'workflowId',
				type: 'string',
				default: '',
				displayOptions: { show: { '/operation': ['errorNotification'] } },
				description: "Left empty, the Error Trigger's workflow.id",
			},
			{
				displayName: 'Workflow Name',
				name: 'workflowName',
				type: 'string',
				default: '',
				description: "For Report Error, left empty: the Error Trigger's workflow.name",
			},
		],
	},
];

/**
 * Sends one signed callback to n8n-relay per input item and outputs the relay's answer.
 * The body is serialised once, and that exact string is signed and sent, which is what
 * the hand-built Code + Crypto + HTTP Request chain had to get right by convention.
 */
export class N8nRelay implements INodeType {
	description: INodeTypeDescription = {
		displayName: 'n8n-relay',
		name: 'n8nRelay',
		icon: 'file:n8n-relay.svg',
		group: ['transform'],
		version: 1,
		subtitle: '={{ $parameter["operation"] }}',
		description: 'Send signed approvals, workflow status and errors back to n8n-relay',
		defaults: { name: 'n8n-relay' },
		inputs: [NodeConnectionTypes.Main],
		outputs: [NodeConnectionTypes.Main],
		credentials: [{ name: 'n8nRelayApi', required: true }],
		// An AI agent may send these callbacks as a tool, with the same checks.
		usableAsTool: true,
		properties: [
			{
				displayName: 'Operation',
				name: 'operation',
				type: 'options',
				noDataExpression: true,
				options: [
					{
						name: 'Approve/Reject Demo',
						value: 'demoApproval',
						action: 'Approve or reject a demo',
						description: 'POST /api/v1/webhooks/n8n/demo-approval',
					},
					{
						name: 'Approve/Reject Video',
						value: 'videoApproval',
						action: 'Approve or reject a video',
						description: 'POST /api/v1/webhooks/n8n/video-approval',
					},
					{
						name: 'Report Error',
						value: 'errorNotification',
						action: 'Report a workflow error',
						description: 'POST /api/v1/webhooks/n8n/error-notification (the relay records a workflow_error event)',
					},
					{
						name: 'Workflow Completed',
						value: 'workflowCompleted',
						action: 'Report a completed workflow run',
						description: 'POST /api/v1/webhooks/n8n/workflow-completed',
					},
					{
						name: 'Workflow Status',
						value: 'workflowStatus',
						action: 'Report the status of a workflow run',
						description: 'POST /api/v1/webhooks/n8n/workflow-status',
					},
				],
				default: 'demoApproval',
			},
			...approvalFields,
			...runFields,
		],
	};

	async execute(this: IExecuteFunctions): Promise<INodeExecutionData[][]> {
		const items = this.getInputData();
		const credentials = await this.getCredentials('n8nRelayApi');
		const scheme = credentials.scheme ?? 'x-webhook-signature';
		if (!isScheme(scheme)) {
			throw new NodeOperationError(this.getNode(), 'The n8n-relay credential has an unknown signature scheme');
		}
		const secret = typeof credentials.callbackSecret === 'string' ? credentials.callbackSecret : '';
		if (secret.trim() === '') {
			throw new NodeOperationError(this.getNode(), 'The n8n-relay credential has no callback secret', {
				description: "Set it to the relay's N8N_WEBHOOK_SECRET.",
			});
		}
		const out: INodeExecutionData[] = [];

		for (let i = 0; i < items.length; i++) {
			const operation = this.getNodeParameter('operation', i) as string;
			if (!isOperation(operation)) {
				throw new NodeOperationError(this.getNode(), `Unknown operation "${operation}"`, { itemIndex: i });
			}
			let url: string;
			let body: string;
			try {
				url = callbackUrl(String(credentials.callbackBaseUrl ?? ''), operation);
				body = JSON.stringify(buildBody(operation, fields(this, operation, i, items[i].json)));
			} catch (error) {
				throw new NodeOperationError(this.getNode(), (error as Error).message, { itemIndex: i });
			}
			const headers = signHeaders({
				scheme,
				secrets: [secret],
				body,
				// Standard Webhooks names each message; the relay keys its replay receipts by it.
				id: scheme === 'standard-webhooks' ? `msg_${randomUUID()}` : undefined,
			});

			let response: { statusCode: number; body: unknown };
			try {
				response = (await this.helpers.httpRequest({
					method: 'POST',
					url,
					// A string, so these are the bytes on the wire: exactly what was signed.
					body,
					headers: { 'Content-Type': 'application/json', Accept: 'application/json', ...headers },
					json: false,
					returnFullResponse: true,
					ignoreHttpStatusErrors: true,
					timeout: REQUEST_TIMEOUT_MS,
				})) as { statusCode: number; body: unknown };
			} catch (error) {
				// No answer at all (refused, unresolvable, TLS, timed out): as much the
				// item's failure as a refusal, so On Error: Continue applies to it too.
				const detail = (error as Error).message;
				if (this.continueOnFail()) {
					out.push({ json: { error: 'unreachable', detail, statusCode: null }, pairedItem: { item: i } });
					continue;
				}
				throw new NodeOperationError(this.getNode(), `n8n-relay could not be reached at ${shownUrl(url)}`, {
					itemIndex: i,
					description: detail,
				});
			}

			const answer = readAnswer(response.statusCode, response.body);
			if (answer.ok) {
				out.push({ json: { ...answer.body, statusCode: answer.statusCode }, pairedItem: { item: i } });
				continue;
			}
			const detail = typeof answer.detail === 'string' ? answer.detail : JSON.stringify(answer.detail);
			if (this.continueOnFail()) {
				out.push({
					json: {
						error: answer.error,
						detail: answer.detail ?? null,
						...(answer.field !== undefined ? { field: answer.field } : {}),
						statusCode: answer.statusCode,
					},
					pairedItem: { item: i },
				});
				continue;
			}
			const field = answer.field !== undefined ? ` (field ${answer.field})` : '';
			throw new NodeOperationError(
				this.getNode(),
				`n8n-relay refused the ${operation} callback: ${answer.statusCode} ${answer.error}${field}`,
				{ itemIndex: i, description: detail },
			);
		}
		return [out];
	}
}

/** The parameters of one item, as lib/callbacks.ts wants them. */
function fields(ctx: IExecuteFunctions, operation: Operation, i: number, item: unknown): CallbackFields {
	const param = (name: string, fallback: unknown = undefined) => ctx.getNodeParameter(name, i, fallback);
	switch (operation) {
		case 'demoApproval':
		case 'videoApproval':
			return {
				entityId: param(operation === 'demoApproval' ? 'demoId' : 'videoId') as number,
				approved: param('approved'),
				reviewer: param('reviewer', '') as string,
				notes: param('notes', '') as string,
			};
		default: {
			const more = param('additionalFields', {}) as IDataObject;
			let extra: Record<string, unknown> = {};
			if (more.extra !== undefined && more.extra !== '') {
				let parsed: unknown = more.extra;
				if (typeof more.extra === 'string') {
					try {
						parsed = JSON.parse(more.extra);
					} catch (e) {
						throw new Error(`More Fields (JSON) is not valid JSON: ${(e as Error).message}`);
					}
				}
				if (parsed === null || typeof parsed !== 'object' || Array.isArray(parsed)) {
					throw new Error('More Fields (JSON) must be a JSON object');
				}
				extra = parsed as Record<string, unknown>;
			}
			const zeroIsUnset = (v: unknown) => (v === 0 ? undefined : (v as number | undefined));
			const common: CallbackFields = {
				currentStep: more.currentStep as string | undefined,
				durationMs: zeroIsUnset(more.durationMs),
				leadId: zeroIsUnset(more.leadId),
				node: more.node as string | undefined,
				url: more.url as string | undefined,
				workflowName: more.workflowName as string | undefined,
				extra,
			};
			if (operation === 'errorNotification') {
				// Fields left empty, here and in More Fields (JSON), come from the Error
				// Trigger's item, when it is one.
				const failed = fromErrorTrigger(item);
				const or = <T>(set: unknown, key: string, fallback: T) =>
					given(set) ? set : given(extra[key]) ? undefined : fallback;
				return {
					...common,
					error: param('error') as string,
					workflowId: or(more.workflowId, 'workflow_id', failed.workflowId) as string | undefined,
					workflowName: or(more.workflowName, 'workflow_name', failed.workflowName) as string | undefined,
					executionId: or(more.executionId, 'execution_id', failed.executionId) as string | number | undefined,
				};
			}
			return {
				...common,
				workflowId: param('workflowId') as string,
				executionId: param('executionId') as string,
				status: param('status', '') as string,
			};
		}
	}
}
