// verify.test.mjs runs verify.mjs against a real gateway: Caddy built from
// ../../cmd/caddy (or $CADDY_BIN) with rebell_auth and identity_assertion,
// rebell_sandbox as Rebell, and a Node upstream that verifies every request
// with requireIdentity. Skipped when `jose` is not installed (.ci/run
// installs it: npm ci in upstream/node), unless REBELL_REQUIRE_NODE is set.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, execFileSync } from 'node:child_process';
import crypto from 'node:crypto';
import fs from 'node:fs';
import http from 'node:http';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const here = path.dirname(fileURLToPath(import.meta.url));

let verifyModule;
try {
  verifyModule = await import('./verify.mjs');
} catch (err) {
  if (process.env.REBELL_REQUIRE_NODE) {
    throw new Error(`upstream/node: jose is required (run npm ci in upstream/node): ${err.message}`);
  }
}
const skip = verifyModule ? false : 'jose is not installed: run `npm ci` in upstream/node (.ci/run does)';

function freePort() {
  return new Promise((resolve, reject) => {
    const srv = net.createServer();
    srv.on('error', reject);
    srv.listen(0, '127.0.0.1', () => {
      const { port } = srv.address();
      srv.close(() => resolve(port));
    });
  });
}

function canConnect(port) {
  return new Promise((resolve) => {
    const c = net.connect({ host: '127.0.0.1', port });
    c.once('connect', () => { c.destroy(); resolve(true); });
    c.once('error', () => resolve(false));
  });
}


async function startGateway(upstreamPort) {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'rebell-upstream-'));
  let bin = process.env.CADDY_BIN;
  if (!bin) {
    bin = path.join(dir, 'caddy');
    execFileSync('go', ['build', '-o', bin, './cmd/caddy'], {
      cwd: path.resolve(here, '..', '..'),
      stdio: ['ignore', 'inherit', 'inherit'],
    });
  }
  const rsa = () => crypto.generateKeyPairSync('rsa', {
    modulusLength: 2048,
    publicKeyEncoding: { type: 'spki', format: 'pem' },
    privateKeyEncoding: { type: 'pkcs8', format: 'pem' },
  });
  const merchant = rsa();
  const platform = rsa();
  const identity = crypto.generateKeyPairSync('ed25519', {
    publicKeyEncoding: { type: 'spki', format: 'pem' },
    privateKeyEncoding: { type: 'pkcs8', format: 'pem' },
  });
  const f = (name, data) => {
    const p = path.join(dir, name);
    fs.writeFileSync(p, data, { mode: 0o600 });
    return p;
  };
  const files = {
    merchantPrivate: f('merchant.pem', merchant.privateKey),
    merchantPublic: f('merchant.pub', merchant.publicKey),
    platformPrivate: f('platform.pem', platform.privateKey),
    platformPublic: f('platform.pub', platform.publicKey),
    identity: f('identity.pem', identity.privateKey),
  };
  const [admin, sb, gw] = [await freePort(), await freePort(), await freePort()];
  const caddyfile = `{
	admin 127.0.0.1:${admin}
	persist_config off
	grace_period 1s
}

http://127.0.0.1:${sb} {
	rebell_sandbox {
		client_id NODE_UPSTREAM_IT
		merchant_public_key_file ${files.merchantPublic}
		private_key_file ${files.platformPrivate}
	}
}

http://127.0.0.1:${gw} {
	rebell_auth {
		endpoint http://127.0.0.1:${sb}
		client_id NODE_UPSTREAM_IT
		private_key_file ${files.merchantPrivate}
		rebell_public_key_file ${files.platformPublic}
		retries 0
		access_token_header off
		identity_assertion {
			signing_key_file ${files.identity}
			audience api.node.test
		}
	}
	reverse_proxy 127.0.0.1:${upstreamPort}
}
`;
  const cfgPath = f('Caddyfile', caddyfile);
  let logs = '';
  const child = spawn(bin, ['run', '--config', cfgPath, '--adapter', 'caddyfile'], {
    env: { ...process.env, HOME: dir, XDG_DATA_HOME: path.join(dir, 'data'), XDG_CONFIG_HOME: path.join(dir, 'config') },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  child.stdout.on('data', (d) => { logs += d; });
  child.stderr.on('data', (d) => { logs += d; });
  let exited = false;
  const exit = new Promise((resolve) => child.once('exit', () => { exited = true; resolve(); }));
  const deadline = Date.now() + 30000;
  for (const port of [admin, sb, gw]) {
    while (!(await canConnect(port))) {
      if (exited || Date.now() > deadline) {
        child.kill('SIGKILL');
        throw new Error(`caddy did not start:\n${logs}`);
      }
      await new Promise((r) => setTimeout(r, 20));
    }
  }
  return {
    gateway: `http://127.0.0.1:${gw}`,
    sandbox: `http://127.0.0.1:${sb}`,
    async stop() {
      if (!exited) {
        child.kill('SIGINT');
        const timer = setTimeout(() => child.kill('SIGKILL'), 10000);
        await exit;
        clearTimeout(timer);
      }
      fs.rmSync(dir, { recursive: true, force: true });
    },
  };
}

async function postJSON(url, body, headers = {}) {
  const resp = await fetch(url, {
    method: 'POST',
    headers: { 'Content-Type': 'application/json', ...headers },
    body: JSON.stringify(body),
  });
  return { status: resp.status, body: await resp.json() };
}

test('a Node upstream verifies the assertion of a real gateway', { skip, timeout: 180000 }, async () => {
  const { requireIdentity } = verifyModule;
  const upstreamPort = await freePort();
  let gw;
  const seen = [];
  const upstream = http.createServer((req, res) => {
    // The JWKS URL is the gateway's, known once it runs.
    handler(req, res);
  });
  let handler = (req, res) => { res.writeHead(503); res.end(); };
  await new Promise((r) => upstream.listen(upstreamPort, '127.0.0.1', r));
  try {
    gw = await startGateway(upstreamPort);
    handler = requireIdentity({
      jwksUrl: `${gw.gateway}/.well-known/rebell-jwks.json`,
      audience: 'api.node.test',
    }, (req, res, identity) => {
      seen.push({ headers: req.headers, identity });
      res.writeHead(200, { 'Content-Type': 'application/json' });
      res.end(JSON.stringify({ customerId: identity.customerId, sid: identity.sessionHandle }));
    });

    const code = await postJSON(`${gw.sandbox}/sandbox/authcode`, { customerId: '2188000000000777', scopes: ['auth_user'] });
    assert.equal(code.status, 200);
    const login = await postJSON(`${gw.gateway}/rebell/login`, { authCode: code.body.authCode });
    assert.equal(login.status, 200, JSON.stringify(login.body));
    const auth = { Authorization: `Bearer ${login.body.sessionId}` };

    // Through the gateway, with a forged assertion of the client's own.
    const resp = await fetch(`${gw.gateway}/api/orders`, { headers: { ...auth, 'X-Rebell-Identity': 'forged' } });
    assert.equal(resp.status, 200);
    const body = await resp.json();
    assert.equal(body.customerId, '2188000000000777');
    assert.equal(body.sid.length, 22);
    const again = await (await fetch(`${gw.gateway}/api/orders`, { headers: auth })).json();
    assert.equal(again.sid, body.sid, 'sid is stable for the session');
    // No header carries the access token (access_token_header off), and
    // the session id never reaches the upstream.
    for (const { headers } of seen) {
      assert.equal(headers['x-rebell-access-token'], undefined);
      for (const v of Object.values(headers)) {
        assert.ok(!String(v).includes(login.body.sessionId), 'session id reached the upstream');
      }
    }

    // Straight to the upstream, bypassing the gateway: refused.
    const direct = await fetch(`http://127.0.0.1:${upstreamPort}/api/orders`, { headers: { 'X-Rebell-Identity': 'forged' } });
    assert.equal(direct.status, 401);
    const replayed = seen[0].headers['x-rebell-identity'];
    const twice = await fetch(`http://127.0.0.1:${upstreamPort}/x`, { headers: [['X-Rebell-Identity', replayed], ['X-Rebell-Identity', replayed]] });
    assert.equal(twice.status, 401, 'two assertions');
    const tampered = replayed.slice(0, -4) + (replayed.endsWith('AAAA') ? 'BBBB' : 'AAAA');
    const bad = await fetch(`http://127.0.0.1:${upstreamPort}/x`, { headers: { 'X-Rebell-Identity': tampered } });
    assert.equal(bad.status, 401, 'tampered signature');

    // After logout nothing reaches the upstream.
    const before = seen.length;
    const out = await fetch(`${gw.gateway}/rebell/logout`, { method: 'POST', headers: auth });
    assert.equal(out.status, 204);
    const after = await fetch(`${gw.gateway}/api/orders`, { headers: auth });
    assert.equal(after.status, 401);
    assert.equal(seen.length, before);
  } finally {
    if (gw) await gw.stop();
    upstream.close();
  }
});
