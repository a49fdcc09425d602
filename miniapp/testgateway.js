// testgateway.js starts a real demo gateway for the node tests: Caddy built
// from ../cmd/caddy (or $CADDY_BIN) running rebell_auth in front of a small
// upstream, with rebell_sandbox as Rebell, all on 127.0.0.1; optionally with
// `store redis` on a redis-server it starts (startRedis). Requests under
// /hold/ are proxied to a node server in the test process that holds each
// one until the test answers it (gw.held). It is a test helper, not part of
// what a Mini App copies or the package ships.
'use strict';

const { spawn, spawnSync, execFileSync } = require('node:child_process');
const crypto = require('node:crypto');
const fs = require('node:fs');
const http = require('node:http');
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

let builtBin = null;

// caddyBin returns $CADDY_BIN, or builds ../cmd/caddy once per process into a
// temporary directory removed when the process exits.
function caddyBin() {
  if (process.env.CADDY_BIN) {
    return process.env.CADDY_BIN;
  }
  if (!builtBin) {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'rebell-miniapp-bin-'));
    process.once('exit', () => fs.rmSync(dir, { recursive: true, force: true }));
    const bin = path.join(dir, 'caddy');
    execFileSync('go', ['build', '-o', bin, './cmd/caddy'], {
      cwd: path.resolve(__dirname, '..'),
      stdio: ['ignore', 'inherit', 'inherit'],
    });
    builtBin = bin;
  }
  return builtBin;
}

// waitListening waits until every port accepts connections, or fails with
// the process's output once it exited or 30 s passed.
async function waitListening(ports, child, isExited, logs, what) {
  const deadline = Date.now() + 30000;
  for (const port of ports) {
    while (!(await canConnect(port))) {
      if (isExited()) {
        throw new Error(`${what} exited:\n${logs()}`);
      }
      if (Date.now() > deadline) {
        child.kill('SIGKILL');
        throw new Error(`${what} did not listen on ${port} within 30s:\n${logs()}`);
      }
      await new Promise((r) => setTimeout(r, 20));
    }
  }
}

// startHoldServer starts the upstream of /hold/: each request waits in a
// queue until the test answers it. next() returns the next request to arrive
// as { path, customerId, respond(status, json) }.
async function startHoldServer() {
  const arrived = [];
  const waiting = [];
  const open = new Set();
  const srv = http.createServer((req, res) => {
    open.add(res);
    res.on('close', () => open.delete(res));
    const held = {
      path: req.url,
      customerId: req.headers['x-rebell-customer-id'],
      respond(status, json) {
        if (!res.writableEnded && !res.destroyed) {
          res.writeHead(status, { 'Content-Type': 'application/json' });
          res.end(JSON.stringify(json));
        }
      },
    };
    const w = waiting.shift();
    if (w) {
      w(held);
    } else {
      arrived.push(held);
    }
  });
  const port = await freePort();
  await new Promise((resolve) => srv.listen(port, '127.0.0.1', resolve));
  return {
    port,
    next() {
      const h = arrived.shift();
      return h ? Promise.resolve(h) : new Promise((resolve) => waiting.push(resolve));
    },
    close() {
      for (const res of open) {
        res.destroy();
      }
      return new Promise((resolve) => srv.close(resolve));
    },
  };
}

// redisServerPath returns the redis-server binary's name when it runs, or
// null.
function redisServerPath() {
  const r = spawnSync('redis-server', ['--version'], { stdio: 'ignore' });
  return r.error || r.status !== 0 ? null : 'redis-server';
}

// startRedis starts a redis-server on a free 127.0.0.1 port, writing every
// change to an append-only file in its own directory. down() shuts it down
// (connections are refused), up() starts it again on the same port with the
// data it had; stop() ends it for good and removes its directory.
async function startRedis() {
  const bin = redisServerPath();
  if (!bin) {
    throw new Error('redis-server not found');
  }
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'rebell-miniapp-redis-'));
  const port = await freePort();
  let child = null;
  let exited = true;
  let exit = Promise.resolve();
  let logs = '';

  async function up() {
    child = spawn(bin, ['--port', String(port), '--bind', '127.0.0.1', '--save', '',
      '--appendonly', 'yes', '--appendfsync', 'always', '--dir', dir, '--daemonize', 'no'],
    { stdio: ['ignore', 'pipe', 'pipe'] });
    child.stdout.on('data', (d) => { logs += d; });
    child.stderr.on('data', (d) => { logs += d; });
    exited = false;
    exit = new Promise((resolve) => child.once('exit', () => { exited = true; resolve(); }));
    await waitListening([port], child, () => exited, () => logs, 'redis-server');
  }

  async function down() {
    if (!exited) {
      child.kill('SIGTERM');
      const timer = setTimeout(() => child.kill('SIGKILL'), 10000);
      await exit;
      clearTimeout(timer);
    }
  }

  await up();
  return {
    addr: `127.0.0.1:${port}`,
    up,
    down,
    async stop() {
      await down();
      fs.rmSync(dir, { recursive: true, force: true });
    },
  };
}

// startGateway starts Caddy (building it once); stop() ends it. With
// opts.redis (an address), rebell_auth keeps its sessions in `store redis`
// there.
async function startGateway(opts = {}) {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'rebell-miniapp-'));
  const bin = caddyBin();
  const hold = await startHoldServer();
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
  const store = opts.redis ? `
		store redis {
			address ${opts.redis}
			encryption_key ${crypto.randomBytes(32).toString('base64')}
		}` : '';
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
		retries 0${store}
	}
	reverse_proxy /hold/* 127.0.0.1:${hold.port}
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

  try {
    await waitListening([admin, sb, gw, up], child, () => exited, () => logs, 'caddy');
  } catch (e) {
    await hold.close();
    throw e;
  }

  return {
    gateway: `http://127.0.0.1:${gw}`,
    sandbox: `http://127.0.0.1:${sb}`,
    admin: `http://127.0.0.1:${admin}`,
    held: hold,
    logs: () => logs,
    async stop() {
      await hold.close();
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

module.exports = { startGateway, startRedis, redisServerPath };
