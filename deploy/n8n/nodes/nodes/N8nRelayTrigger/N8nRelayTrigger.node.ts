import type {
	IDataObject,
	INodeType,
	INodeTypeDescription,
	IWebhookFunctions,
	IWebhookResponseData,
} from 'n8n-workflow';
import { NodeConnectionTypes } from 'n8n-workflow';

import { RecentIds } from '../../lib/dedup';
import { EVENTS, parseDelivery } from '../../lib/events';
import { DEFAULT_TOLERANCE_SECONDS, header, isScheme, verify } from '../../lib/signature';

/** The request and response as n8n hands them over (Express objects). */
interface RawRequest {
	headers: Record<string, string | string[] | undefined>;
	rawBody?: Buffer;
	readRawBody?: () => Promise<void>;
}
interface RawResponse {
	statusCode: number;
	headersSent: boolean;
	status(code: number): RawResponse;
	json(body: unknown): void;
	end(...args: unknown[]): unknown;
	on(event: 'finish' | 'close', listener: () => void): void;
}

/**
 * Duplicate suppression state, per workflow and node, for this n8n process. Memory only
 * (see lib/dedup.ts for why that is the honest scope).
 */
const recent = new Map<string, RecentIds>();

function refuse(res: RawResponse, status: number, error: string, detail?: string): IWebhookResponseData {
	res.status(status).json(detail === undefined ? { error } : { error, detail });
	// No workflowData: n8n starts no execution for this request.
	return { noWebhookResponse: true };
}

/**
 * Starts a workflow on a delivery from n8n-relay, after checking its signature over the
 * raw bytes received, so an edited expression can no longer switch verification off.
 * Anything unverified is answered 401 before an execution exists.
 */
export class N8nRelayTrigger implements INodeType {
	description: INodeTypeDescription = {
		displayName: 'n8n-relay Trigger',
		name: 'n8nRelayTrigger',
		icon: 'file:n8n-relay.svg',
		group: ['trigger'],
		version: 1,
		subtitle: '={{ ($parameter["events"] || []).length ? $parameter["events"].join(", ") : "any event" }}',
		description: 'Starts the workflow when n8n-relay delivers a verified event',
		defaults: { name: 'n8n-relay Trigger' },
		inputs: [],
		outputs: [NodeConnectionTypes.Main],
		credentials: [{ name: 'n8nRelayApi', required: true }],
		webhooks: [
			{
				name: 'default',
				httpMethod: 'POST',
				isFullPath: true,
				path: '={{ $parameter["path"] }}',
				responseMode: '={{ $parameter["respond"] }}',
				// onReceived: the node's own answer ({"status":"accepted",...}); lastNode: no
				// body, only the status (200, or 500 when the run failed).
				responseData: '={{ $parameter["respond"] === "lastNode" ? "noData" : "" }}',
			},
		],
		properties: [
			{
				displayName: 'Path',
				name: 'path',
				type: 'string',
				default: 'n8n-relay',
				required: true,
				placeholder: 'lead-scraped',
				description:
					"The webhook path, /webhook/{path}. The relay's default route for an event is /webhook/ followed by the event name with dashes (lead_scraped → lead-scraped); for several events on one path, point their [routes.EVENT] url here.",
			},
			{
				// The default path is no route of the relay's own: say so where it is kept.
				displayName:
					"The relay sends each event to /webhook/ and the event's name with dashes (lead_scraped → /webhook/lead-scraped) unless its [routes.EVENT] url says otherwise: set Path to that, or point the routes of the events below at /webhook/n8n-relay",
				name: 'pathNotice',
				type: 'notice',
				default: '',
				displayOptions: { show: { path: ['n8n-relay'] } },
			},
			{
				displayName: 'Events',
				name: 'events',
				type: 'multiOptions',
				options: EVENTS.map((e) => ({ name: e, value: e })),
				default: [],
				description:
					'The events this workflow handles; empty means any. The event is read from the signed body, not from a header.',
			},
			{
				displayName: 'Respond',
				name: 'respond',
				type: 'options',
				options: [
					{
						name: 'When the Execution Has Started',
						value: 'onReceived',
						description: 'Answer 200 as soon as the execution exists; a failed run is not retried',
					},
					{
						name: 'When the Workflow Has Finished',
						value: 'lastNode',
						description:
							'Answer 200 after a successful run and 500 after a failed one, so the relay retries it (mind the relay\'s WEBHOOK_TIMEOUT_SECONDS)',
					},
				],
				default: 'onReceived',
			},
			{
				displayName: 'Timestamp Tolerance (Seconds)',
				name: 'toleranceSeconds',
				type: 'number',
				typeOptions: { minValue: 1 },
				default: DEFAULT_TOLERANCE_SECONDS,
				description:
					'How far the signed timestamp may be from now, in the past or the future. The relay signs each attempt afresh, so this bounds replays, not retries.',
			},
			{
				displayName: 'Options',
				name: 'options',
				type: 'collection',
				placeholder: 'Add option',
				default: {},
				options: [
					{
						displayName: 'Suppress Duplicates',
						name: 'deduplicate',
						type: 'boolean',
						default: false,
						description:
							'Whether a delivery whose id (signed; equal to X-Webhook-Id) was already answered 2xx within the window gets 200 {"status":"duplicate"} without a new execution (memory of this n8n process only)',
					},
					{
						displayName: 'Duplicate Window (Seconds)',
						name: 'dedupWindowSeconds',
						type: 'number',
						typeOptions: { minValue: 1 },
						default: 3600,
						description: 'How long an accepted delivery id is remembered',
					},
					{
						displayName: 'Other Events',
						name: 'otherEvents',
						type: 'options',
						options: [
							{
								name: 'Refuse (422, the Relay Retries, Then Marks the Row Failed)',
								value: 'refuse',
							},
							{
								name: 'Acknowledge Without Running (200)',
								value: 'ignore',
							},
						],
						default: 'refuse',
						description:
							'What a verified delivery of an event not in Events gets. Refusing makes a misrouted event visible in n8n-relay queue list --status failed.',
					},
				],
			},
		],
	};

	async webhook(this: IWebhookFunctions): Promise<IWebhookResponseData> {
		const req = this.getRequestObject() as unknown as RawRequest;
		const res = this.getResponseObject() as unknown as RawResponse;

		const credentials = await this.getCredentials('n8nRelayApi');
		const scheme = credentials.scheme ?? 'x-webhook-signature';
		if (!isScheme(scheme)) {
			return refuse(res, 500, 'the n8n-relay credential has an unknown signature scheme');
		}
		const tolerance = Number(this.getNodeParameter('toleranceSeconds', DEFAULT_TOLERANCE_SECONDS));
		const options = this.getNodeParameter('options', {}) as IDataObject;

		// The exact bytes received: n8n keeps them beside the parsed body.
		if (req.rawBody === undefined && typeof req.readRawBody === 'function') await req.readRawBody();
		const raw = req.rawBody ?? Buffer.alloc(0);

		const verdict = verify({
			scheme,
			secrets: [credentials.deliverySecret as string, credentials.deliverySecretNext as string],
			headers: req.headers,
			body: raw,
			toleranceSeconds: Number.isFinite(tolerance) && tolerance > 0 ? tolerance : DEFAULT_TOLERANCE_SECONDS,
		});
		if (!verdict.ok) {
			if (verdict.refusal === 'no-secret' || verdict.refusal === 'bad-secret') {
				// Our configuration, not the sender's fault; still no execution.
				return refuse(res, 500, 'the n8n-relay credential cannot verify deliveries', verdict.reason);
			}
			return refuse(res, 401, 'invalid or expired signature', verdict.reason);
		}

		let delivery;
		try {
			delivery = parseDelivery(raw, header(req.headers, 'x-webhook-attempt'));
		} catch (error) {
			return refuse(res, 400, 'malformed delivery', (error as Error).message);
		}

		const events = this.getNodeParameter('events', []) as string[];
		if (events.length > 0 && (delivery.event === null || !events.includes(delivery.event))) {
			if (options.otherEvents === 'ignore') {
				res.status(200).json({ status: 'ignored', id: delivery.id, event: delivery.event });
				return { noWebhookResponse: true };
			}
			return refuse(
				res,
				422,
				'event not handled here',
				`this trigger handles ${events.join(', ')}; got ${String(delivery.event)}`,
			);
		}

		if (options.deduplicate === true) {
			// The signed id first (webhook-id under Standard Webhooks, the body's id
			// otherwise); the unsigned X-Webhook-Id header only as a last resort.
			const id = verdict.id ?? delivery.id ?? header(req.headers, 'x-webhook-id') ?? undefined;
			if (id !== undefined && id !== '') {
				const key = `${this.getWorkflow().id ?? ''}\u0000${this.getNode().name}`;
				const window = Number(options.dedupWindowSeconds ?? 3600);
				let ids = recent.get(key);
				if (ids === undefined) {
					ids = new RecentIds(window);
					recent.set(key, ids);
				} else {
					ids.setWindow(window);
				}
				const now = Math.floor(Date.now() / 1000);
				const claim = ids.claim(id, now);
				if (claim === 'duplicate') {
					res.status(200).json({ status: 'duplicate', id });
					return { noWebhookResponse: true };
				}
				if (claim === 'in-flight') {
					return refuse(res, 409, 'this delivery is being processed', 'retry later');
				}
				const claimed = ids;
				let settled = false;
				const settle = () => {
					if (settled) return;
					settled = true;
					const ok = res.statusCode >= 200 && res.statusCode < 300;
					claimed.settle(id, ok, Math.floor(Date.now() / 1000));
				};
				res.on('finish', settle);
				// A close before any answer: the relay gave up waiting (its timeout, while
				// an answer-after-finish run goes on). The run is still in flight, so the
				// id stays claimed and the relay's retry gets 409, not a second concurrent
				// run. The run's answer settles it when n8n sends it, even to the closed
				// connection (no 'finish' comes then, but end() is still called).
				res.on('close', () => {
					if (res.headersSent) settle();
				});
				const end = res.end;
				res.end = function (this: RawResponse, ...args: unknown[]) {
					const result = end.apply(this, args);
					settle();
					return result;
				};
			}
		}

		return {
			workflowData: [[{ json: delivery as unknown as IDataObject }]],
			webhookResponse: { status: 'accepted', id: delivery.id, event: delivery.event },
		};
	}
}
