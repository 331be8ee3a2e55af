// What `npm pack` ships, after a build: the nodes and the credential that
// package.json's "n8n" block names, so that n8n finds them in the tarball.
const { test } = require('node:test');
const assert = require('node:assert');
const { execFileSync } = require('node:child_process');
const path = require('node:path');

const root = path.join(__dirname, '..');

test('the packed tarball holds every node and credential package.json names', () => {
  const out = execFileSync('npm', ['pack', '--dry-run', '--json', '--ignore-scripts'], {
    cwd: root,
    encoding: 'utf8',
  });
  const files = JSON.parse(out)[0].files.map((f) => f.path);
  const manifest = require(path.join(root, 'package.json'));
  const named = [...manifest.n8n.nodes, ...manifest.n8n.credentials, manifest.main];
  for (const file of named) {
    assert.ok(files.includes(file), `${file} is not in the tarball: ${files.join(', ')}`);
  }
  assert.ok(
    files.some((f) => f.startsWith('dist/lib/')),
    'the shared signature code is in the tarball',
  );
  assert.ok(!files.some((f) => f.startsWith('test/') || f.endsWith('.ts') && !f.endsWith('.d.ts')),
    `sources or tests shipped: ${files.join(', ')}`);
});
