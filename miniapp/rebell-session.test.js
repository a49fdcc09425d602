// Tests of rebell-session.js against a real demo gateway (testgateway.js),
// with a `my` made of node's fetch and an in-memory storage.
//
//   node --test miniapp/*.test.js
'use strict';

const { test, before, after, beforeEach } = require('node:test');
const assert = require('node:assert/strict');
const crypto = require('node:crypto');
const http = require('node:http');

const { createRebellSession } = require('./rebell-session');
const { startGateway } = require('./testgateway');

let gw;

before(async () => {
  gw = await startGateway();
});

after(async () => {
  if (gw) {
    await gw.stop();
  }
});

beforeEach(async () => {
  await fetch(`${gw.sandbox}/sandbox/stats`, { method: 'DELETE' });
  await fetch(`${gw.sandbox}/sandbox/faults`, { method: 'DELETE' });
});

// customerId returns a fresh 16-digit customer id.
function customerId() {
  return String(1e15 + crypto.randomInt(0, 2 ** 47));
}

// makeMy returns a `my` for one user. my.getAuthCode gets a code from the
// sandbox (what Rebell's app does); my.request is fetch with Alipay's
// conventions: a 2xx answer goes to success, any other to fail with error 19
// and the answer; no answer goes to fail with error 12. hooks can change a
// call: hooks.login(n) returning 'drop' sends the login but loses its
// answer (error 13, timeout); hooks.getAuthCode returning an error object
// fails it.
function makeMy(cid, hooks = {}) {
  const storage = new Map();
  const calls = { getAuthCode: 0, login: 0, requests: 0 };
  const my = {
    calls,
    storage,
    getAuthCode({ scopes, success, fail }) {
      calls.getAuthCode++;
      const refuse = hooks.getAuthCode && hooks.getAuthCode();
      if (refuse) {
        setImmediate(() => fail(refuse));
        return;
      }
      fetch(`${gw.sandbox}/sandbox/authcode`, {
        method: 'POST',
        headers: { 'Content-Type': 'application/json' },
        body: JSON.stringify({ customerId: cid, scopes }),
      }).then((r) => r.json()).then((b) => success({ authCode: b.authCode }), fail);
    },
    getStorageSync({ key }) {
      return { data: storage.has(key) ? storage.get(key) : null };
    },
    setStorageSync({ key, data }) {
      storage.set(key, data);
    },
    removeStorageSync({ key }) {
      storage.delete(key);
    },
    request({ url, method = 'GET', data, headers = {}, success, fail }) {
      calls.requests++;
      const isLogin = new URL(url).pathname === '/rebell/login';
      const n = isLogin ? ++calls.login : 0;
      fetch(url, { method, headers, body: data === undefined ? undefined : String(data) })
        .then(async (res) => {
          const text = await res.text();
          let parsed = text;
          try {
            parsed = text === '' ? '' : JSON.parse(text);
          } catch (e) {
            // keep the text, as my.request does with a body that is not JSON
          }
          if (isLogin && hooks.login && hooks.login(n) === 'drop') {
            fail({ error: 13, errorMessage: 'timeout' });
            return;
          }
          const answer = { status: res.status, data: parsed, headers: Object.fromEntries(res.headers) };
          if (res.status >= 200 && res.status < 300) {
            success(answer);
          } else {
            fail({ error: 19, errorMessage: 'http status error', ...answer });
          }
        }, () => fail({ error: 12, errorMessage: 'network error' }));
    },
  };
  return my;
}

// adminDelete calls Caddy's admin API with node:http: fetch sends
// Sec-Fetch-Mode, which the admin API's origin check refuses.
function adminDelete(path) {
  return new Promise((resolve, reject) => {
    const req = http.request(`${gw.admin}${path}`, { method: 'DELETE' }, (res) => {
      let body = '';
      res.on('data', (d) => { body += d; });
      res.on('end', () => resolve({ status: res.statusCode, body }));
    });
    req.on('error', reject);
    req.end();
  });
}

async function stats() {
  const r = await fetch(`${gw.sandbox}/sandbox/stats`);
  return r.json();
}

function codeExchanges(st) {
  const g = st.byGrantType.AUTHORIZATION_CODE || {};
  return Object.values(g).reduce((a, b) => a + b, 0);
}

test('20 concurrent requests share one login', async () => {
  const cid = customerId();
  const my = makeMy(cid);
  const session = createRebellSession({ baseUrl: gw.gateway, my });
  const results = await Promise.all(Array.from({ length: 20 }, (_, i) => session.request({ url: `/api/orders/${i}` })));
  for (const [i, res] of results.entries()) {
    assert.equal(res.status, 200);
    assert.equal(res.data.customerId, cid);
    assert.equal(res.data.path, `/api/orders/${i}`);
  }
  assert.equal(my.calls.getAuthCode, 1, 'my.getAuthCode calls');
  assert.equal(my.calls.login, 1, 'login requests');
  assert.equal(codeExchanges(await stats()), 1, 'applyToken AUTHORIZATION_CODE calls');
  assert.match(my.storage.get('rebell_session'), /^[A-Za-z0-9_-]{43}$/);
});

test('a revoked session logs in again, once, for all requests waiting', async () => {
  const cid = customerId();
  const my = makeMy(cid);
  const session = createRebellSession({ baseUrl: gw.gateway, my });
  assert.equal((await session.request({ url: '/api/me' })).status, 200);
  const first = session.sessionId();

  const del = await adminDelete(`/rebell/customers/${cid}/sessions`);
  assert.equal(del.status, 200, del.body);

  const results = await Promise.all(Array.from({ length: 20 }, () => session.request({ url: '/api/me' })));
  for (const res of results) {
    assert.equal(res.status, 200);
    assert.equal(res.data.customerId, cid);
  }
  assert.equal(my.calls.getAuthCode, 2, 'one more my.getAuthCode');
  assert.equal(my.calls.login, 2, 'one more login');
  assert.notEqual(session.sessionId(), first);
  assert.equal(codeExchanges(await stats()), 2);
});

test('a login whose answer is lost is sent again with the same code, and Rebell is called once', async () => {
  const cid = customerId();
  const my = makeMy(cid, { login: (n) => (n === 1 ? 'drop' : '') });
  const session = createRebellSession({ baseUrl: gw.gateway, my });
  const res = await session.request({ url: '/api/me' });
  assert.equal(res.status, 200);
  assert.equal(res.data.customerId, cid);
  assert.equal(my.calls.getAuthCode, 1, 'the same code was reused');
  assert.equal(my.calls.login, 2, 'the login was sent twice');
  const st = await stats();
  assert.equal(codeExchanges(st), 1, 'applyToken AUTHORIZATION_CODE calls');
  assert.equal(st.byGrantType.AUTHORIZATION_CODE.SUCCESS, 1);
});

test('503 rejects with retryAfter', async () => {
  const cid = customerId();
  const my = makeMy(cid);
  const session = createRebellSession({ baseUrl: gw.gateway, my });

  // Rebell down during the login: the gateway's 503 rebell_unavailable.
  const f = await fetch(`${gw.sandbox}/sandbox/faults`, {
    method: 'POST',
    headers: { 'Content-Type': 'application/json' },
    body: JSON.stringify({ count: 1, resultStatus: 'U', resultCode: 'UNKNOWN_EXCEPTION', httpStatus: 503 }),
  });
  assert.equal(f.status, 200, await f.text());
  await assert.rejects(session.request({ url: '/api/me' }), (err) => {
    assert.equal(err.status, 503);
    assert.equal(err.data.error, 'rebell_unavailable');
    assert.equal(err.retryAfter, 5);
    return true;
  });
  assert.equal(session.sessionId(), null);
  assert.equal(my.calls.login, 1, 'an HTTP answer is not retried');

  // Rebell back: the next call logs in; an upstream's 503 comes back as it was.
  assert.equal((await session.request({ url: '/api/me' })).status, 200);
  await assert.rejects(session.request({ url: '/busy' }), (err) => {
    assert.equal(err.status, 503);
    assert.equal(err.retryAfter, 7);
    return true;
  });
  assert.equal(my.calls.getAuthCode, 2);
});

test('a cancelled authorization rejects with my.getAuthCode\'s error and sends nothing', async () => {
  const cancelled = { error: 11, errorMessage: 'User cancelled' };
  const my = makeMy(customerId(), { getAuthCode: () => cancelled });
  const session = createRebellSession({ baseUrl: gw.gateway, my });
  await assert.rejects(session.request({ url: '/api/me' }), (err) => {
    assert.equal(err, cancelled);
    return true;
  });
  assert.equal(my.calls.requests, 0);
  assert.equal(codeExchanges(await stats()), 0);
});

test('logout ends the session at the gateway and forgets it', async () => {
  const my = makeMy(customerId());
  const session = createRebellSession({ baseUrl: gw.gateway, my });
  await session.request({ url: '/api/me' });
  const id = session.sessionId();
  await session.logout();
  assert.equal(session.sessionId(), null);
  const r = await fetch(`${gw.gateway}/api/me`, { headers: { Authorization: `Bearer ${id}` } });
  assert.equal(r.status, 401);
  assert.equal((await r.json()).error, 'session_invalid');
});

test('request options', async () => {
  const my = makeMy(customerId());
  assert.throws(() => createRebellSession({ my }), /baseUrl/);
  assert.throws(() => createRebellSession({ baseUrl: gw.gateway }), /my/);
  const session = createRebellSession({ baseUrl: `${gw.gateway}/`, my, storageKey: 'k' });
  const res = await session.request({ url: '/api/x', method: 'POST', data: '{"a":1}', headers: { 'Content-Type': 'application/json' } });
  assert.equal(res.status, 200);
  assert.equal(res.data.path, '/api/x');
  assert.ok(my.storage.get('k'));
});
