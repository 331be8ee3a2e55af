import type { ICredentialTestRequest, ICredentialType, INodeProperties } from 'n8n-workflow';

/**
 * The secrets and address one n8n-relay needs: the delivery secret(s) the trigger
 * verifies with, the callback secret the action node signs with, the scheme both use,
 * and where the relay's callback listener is. One credential per relay, shared by the
 * trigger and the action node so they cannot disagree on the scheme.
 */
export class N8nRelayApi implements ICredentialType {
	name = 'n8nRelayApi';

	displayName = 'n8n-relay';

	icon = 'file:n8n-relay.svg' as const;

	properties: INodeProperties[] = [
		{
			displayName: 'Signature Scheme',
			name: 'scheme',
			type: 'options',
			options: [
				{
					name: 'X-Webhook-Signature (Relay Default)',
					value: 'x-webhook-signature',
					description:
						'X-Webhook-Timestamp and X-Webhook-Signature-256: hex HMAC-SHA256 of "{timestamp}.{body}"',
				},
				{
					name: 'Standard Webhooks',
					value: 'standard-webhooks',
					description:
						'webhook-ID, webhook-timestamp, webhook-signature "v1,{base64}" with whsec_ secrets (the relay\'s security.scheme = "standard-webhooks")',
				},
			],
			default: 'x-webhook-signature',
			description: "The relay's security.scheme; it applies to deliveries and callbacks alike",
		},
		{
			displayName: 'Delivery Secret',
			name: 'deliverySecret',
			type: 'string',
			typeOptions: { password: true },
			default: '',
			description:
				"The relay's WEBHOOK_SECRET, which signs every delivery; the n8n-relay Trigger needs it, the action node does not. Under Standard Webhooks it is whsec_ followed by base64.",
		},
		{
			displayName: 'Additional Delivery Secret (Rotation)',
			name: 'deliverySecretNext',
			type: 'string',
			typeOptions: { password: true },
			default: '',
			description:
				'During a secret rotation, the other secret (new or old): a delivery verified by either is accepted. Leave empty otherwise.',
		},
		{
			displayName: 'Callback Secret',
			name: 'callbackSecret',
			type: 'string',
			typeOptions: { password: true },
			default: '',
			description:
				"The relay's N8N_WEBHOOK_SECRET, which the action node signs callbacks with. Needed only by the n8n-relay action node.",
		},
		{
			displayName: 'Callback Base URL',
			name: 'callbackBaseUrl',
			type: 'string',
			default: 'http://127.0.0.1:8000',
			placeholder: 'http://relay:8000',
			description:
				"Where the relay's callback listener is (callbacks.listen); the action node appends /api/v1/webhooks/n8n/ and the endpoint. Test asks this address's health endpoint: it proves the listener answers and reaches its database, not the secrets. From n8n in a container, 127.0.0.1 is n8n's own container.",
		},
	];

	/** The relay's unsigned health endpoint: proves the address, not the secrets. */
	test: ICredentialTestRequest = {
		request: {
			baseURL: '={{ $credentials.callbackBaseUrl.replace(/\\/+$/, "") }}',
			url: '/api/v1/webhooks/n8n/health',
			method: 'GET',
		},
	};
}
