// tsc compiles only TypeScript; n8n loads a node's `file:` icon from beside its
// compiled .node.js, so the SVGs are copied next to them.
const fs = require('fs');
const path = require('path');

const root = path.join(__dirname, '..');
const copies = [
	['icons/n8n-relay.svg', 'dist/nodes/N8nRelayTrigger/n8n-relay.svg'],
	['icons/n8n-relay.svg', 'dist/nodes/N8nRelay/n8n-relay.svg'],
	['icons/n8n-relay.svg', 'dist/credentials/n8n-relay.svg'],
];
for (const [from, to] of copies) {
	fs.mkdirSync(path.dirname(path.join(root, to)), { recursive: true });
	fs.copyFileSync(path.join(root, from), path.join(root, to));
}
