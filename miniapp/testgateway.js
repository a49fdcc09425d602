// testgateway.js starts a real demo gateway for the node tests: Caddy built
// from ../cmd/caddy (or $CADDY_BIN) running rebell_auth in front of a small
// upstream, with rebell_sandbox as Rebell, all on 127.0.0.1. It is a test
// helper, not part of what a Mini App copies.
'use strict';

const { spawn, execFileSync } = require('node:child_process');
const crypto = require('node:crypto');
const fs = require('node:fs');
const net = require('node:net');
const os = require('node:os');
const path = require('node:path');

const CLIENT_ID = 'MINIAPP_IT';

function freePort() {
  return new Promise((resolve, reject) => {
    const srv = net.createServer();
    srv.unref();
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

function keyPair() {
  return crypto.generateKeyPairSync('rsa', {
    modulusLength: 2048,
    publicKeyEncoding: { type: 'spki', format: 'pem' },
    privateKeyEncoding: { type: 'pkcs8', format: 'pem' },
  });
}

// startGateway builds (once) and starts Caddy; stop() ends it.
async function startGateway() {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'rebell-miniapp-'));
  let bin = process.env.CADDY_BIN;
  if (!bin) {
    bin = path.join(dir, 'caddy');
    execFileSync('go', ['build', '-o', bin, './cmd/caddy'], {
      cwd: path.resolve(__dirname, '..'),
      stdio: ['ignore', 'inherit', 'inherit'],
    });
  }
  const merchant = keyPair();
  const platform = keyPair();
  const files = {
    merchantPrivate: path.join(dir, 'merchant.pem'),
    merchantPublic: path.join(dir, 'merchant.pub'),
    platformPrivate: path.join(dir, 'platform.pem'),
    platformPublic: path.join(dir, 'platform.pub'),
  };
  fs.writeFileSync(files.merchantPrivate, merchant.privateKey, { mode: 0o600 });
  fs.writeFileSync(files.merchantPublic, merchant.publicKey);
  fs.writeFileSync(files.platformPrivate, platform.privateKey, { mode: 0o600 });
  fs.writeFileSync(files.platformPublic, platform.publicKey);

  const [admin, sb, gw, up] = [await freePort(), await freePort(), await freePort(), await freePort()];
  const caddyfile = `{
	admin 127.0.0.1:${admin}
	persist_config off
	grace_period 1s
}

http://127.0.0.1:${sb} {
	rebell_sandbox {
		client_id ${CLIENT_ID}
		merchant_public_key_file ${files.merchantPublic}
		private_key_file ${files.platformPrivate}
	}
}

http://127.0.0.1:${gw} {
	rebell_auth {
		endpoint http://127.0.0.1:${sb}
		client_id ${CLIENT_ID}
		private_key_file ${files.merchantPrivate}
		rebell_public_key_file ${files.platformPublic}
		retries 0
	}
	reverse_proxy 127.0.0.1:${up}
}

http://127.0.0.1:${up} {
	header /busy Retry-After 7
	respond /busy 503
	header Content-Type application/json
	respond \`{"customerId":"{http.request.header.X-Rebell-Customer-Id}","path":"{http.request.uri.path}"}\` 200
}
`;
  const cfgPath = path.join(dir, 'Caddyfile');
  fs.writeFileSync(cfgPath, caddyfile);
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
  for (const port of [admin, sb, gw, up]) {
    while (!(await canConnect(port))) {
      if (exited) {
        throw new Error(`caddy exited:\n${logs}`);
      }
      if (Date.now() > deadline) {
        child.kill('SIGKILL');
        throw new Error(`caddy did not listen on ${port} within 30s:\n${logs}`);
      }
      await new Promise((r) => setTimeout(r, 20));
    }
  }

  return {
    gateway: `http://127.0.0.1:${gw}`,
    sandbox: `http://127.0.0.1:${sb}`,
    admin: `http://127.0.0.1:${admin}`,
    logs: () => logs,
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

module.exports = { startGateway };
