// Tests of what a Mini App developer installs: the types (tsc --noEmit on
// usage.ts, with TypeScript from npm) and the package (npm pack, then npm
// install of the tarball, offline, into a temporary project).
//
//   npm install --no-save --prefix miniapp typescript@5.9.3   # once; .ci/run does it
//   node --test miniapp/*.test.js
//
// Without TypeScript (or npm) these tests say so and skip; with
// REBELL_REQUIRE_NODE=1 (as CI sets) they fail instead.
'use strict';

const { test } = require('node:test');
const assert = require('node:assert/strict');
const { spawnSync } = require('node:child_process');
const fs = require('node:fs');
const os = require('node:os');
const path = require('node:path');

const TYPESCRIPT = 'typescript@5.9.3'; // the version .ci/run installs

// findTsc returns the tsc to run: miniapp/node_modules/.bin/tsc (where
// .ci/run installs it), else one on the PATH, else null.
function findTsc() {
  const local = path.join(__dirname, 'node_modules', '.bin', 'tsc');
  if (fs.existsSync(local)) {
    return local;
  }
  const r = spawnSync('tsc', ['--version'], { stdio: 'ignore' });
  return r.error || r.status !== 0 ? null : 'tsc';
}

function hasNpm() {
  const r = spawnSync('npm', ['--version'], { stdio: 'ignore' });
  return !r.error && r.status === 0;
}

// missing skips t, or fails it when REBELL_REQUIRE_NODE is set.
function missing(t, what) {
  if (process.env.REBELL_REQUIRE_NODE) {
    assert.fail(`${what} not found, and REBELL_REQUIRE_NODE is set`);
  }
  t.skip(`${what} not found: SKIPPING; install it (npm install --no-save --prefix miniapp ${TYPESCRIPT}) or set REBELL_REQUIRE_NODE=1 to make this an error`);
}

function run(cmd, args, opts) {
  const r = spawnSync(cmd, args, { encoding: 'utf8', ...opts });
  assert.ifError(r.error);
  assert.equal(r.status, 0, `${cmd} ${args.join(' ')} exited ${r.status}:\n${r.stdout}\n${r.stderr}`);
  return r.stdout;
}

test('tsc --noEmit accepts usage.ts and refuses its misuses (rebell-session.d.ts)', (t) => {
  const tsc = findTsc();
  if (!tsc) {
    missing(t, 'TypeScript (tsc)');
    return;
  }
  t.diagnostic(`${tsc}: ${run(tsc, ['--version']).trim()}`);
  run(tsc, ['--noEmit', '-p', __dirname]);
});

test('npm pack yields a package that npm install installs, offline, with its types', (t) => {
  if (!hasNpm()) {
    missing(t, 'npm');
    return;
  }
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'rebell-miniapp-pack-'));
  t.after(() => fs.rmSync(dir, { recursive: true, force: true }));
  const npmEnv = { ...process.env, npm_config_cache: path.join(dir, 'cache'), npm_config_update_notifier: 'false' };

  const packed = JSON.parse(run('npm', ['pack', '--json', '--pack-destination', dir], { cwd: __dirname, env: npmEnv }));
  assert.equal(packed.length, 1);
  const pkg = require('./package.json');
  assert.deepEqual(packed[0].files.map((f) => f.path).sort(), ['package.json', 'rebell-session.d.ts', 'rebell-session.js']);
  assert.deepEqual(pkg.dependencies, undefined, 'no dependencies');
  const tarball = path.join(dir, packed[0].filename);

  const app = path.join(dir, 'app');
  fs.mkdirSync(app);
  fs.writeFileSync(path.join(app, 'package.json'), JSON.stringify({ name: 'probe-app', version: '0.0.0', private: true }));
  run('npm', ['install', '--offline', '--no-audit', '--no-fund', '--ignore-scripts', tarball], { cwd: app, env: npmEnv });
  const installed = path.join(app, 'node_modules', pkg.name);
  for (const f of ['rebell-session.js', 'rebell-session.d.ts', 'package.json']) {
    assert.ok(fs.existsSync(path.join(installed, f)), `${f} installed`);
  }
  assert.equal(JSON.parse(fs.readFileSync(path.join(app, 'package.json'), 'utf8')).dependencies[pkg.name].startsWith('file:'), true);

  // The installed package loads by its name, and works.
  const out = run(process.execPath, ['-e', `
    const { createRebellSession, MY_REQUEST_ERRORS } = require(${JSON.stringify(pkg.name)});
    const my = { request() {}, getAuthCode() {}, getStorageSync() { return { data: 'id' }; }, setStorageSync() {} };
    const s = createRebellSession({ baseUrl: 'https://api.example', my });
    process.stdout.write(JSON.stringify([s.sessionId(), MY_REQUEST_ERRORS.STOPPED]));
  `], { cwd: app });
  assert.deepEqual(JSON.parse(out), ['id', 20]);

  // Its types are found by the package's name too.
  const tsc = findTsc();
  if (!tsc) {
    if (process.env.REBELL_REQUIRE_NODE) {
      assert.fail('TypeScript (tsc) not found, and REBELL_REQUIRE_NODE is set');
    }
    t.diagnostic('tsc not found: the installed package\'s types are not checked');
    return;
  }
  fs.writeFileSync(path.join(app, 'app.ts'), `
    import { createRebellSession, RebellRequestTask } from ${JSON.stringify(pkg.name)};
    declare const my: Parameters<typeof createRebellSession>[0]['my'];
    const task: RebellRequestTask<{ ok: boolean }> = createRebellSession({ baseUrl: 'https://api.example', my })
      .request<{ ok: boolean }>({ url: '/x' });
    task.abort();
  `);
  fs.writeFileSync(path.join(app, 'tsconfig.json'), JSON.stringify({
    compilerOptions: { strict: true, noEmit: true, target: 'es2017', lib: ['es2017'], module: 'node16', moduleResolution: 'node16', types: [] },
    files: ['app.ts'],
  }));
  run(tsc, ['--noEmit', '-p', app]);
});
