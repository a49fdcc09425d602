// Tests of rebell-session.js against a real demo gateway (testgateway.js),
// with a `my` made of node's fetch and an in-memory storage.
//
//   node --test miniapp/*.test.js
'use strict';

const { test, before, after, beforeEach } = require('node:test');
const assert = require('node:assert/strict');
const crypto = require('node:crypto');
const http = require('node:http');
const net = require('node:net');

const { createRebellSession, MY_REQUEST_ERRORS } = require('./rebell-session');
const { startGateway, startRedis, redisServerPath } = require('./testgateway');

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

// makeMy returns a `my` for one user, following the documented behaviour of
// Alipay's my.request (see the table in rebell-session.js's header): url,
// method (GET), data (an object is sent as JSON, or as the query of a GET),
// headers (content-type application/json by default), timeout (30000 ms:
// error 13), dataType (json, text or base64); a 2xx answer goes to success
// with { data, status, headers }, any other to fail with error 19 and the
// answer, a json body that does not parse to fail with error 14, no answer to
// fail with error 12; complete follows either, with the same argument. It
// returns a RequestTask whose abort() stops the fetch; what fail receives
// then is not documented: here error 20.
//
// my.getAuthCode gets a code from the sandbox (what Rebell's app does).
// hooks can change a call: hooks.login(n) returning 'drop' sends the login
// but loses its answer (error 13, timeout); hooks.getAuthCode returning an
// error object fails it; hooks.request(info) is called once each request is
// on its way; hooks.everyAnswerToSuccess gives every HTTP answer to success,
// as some platforms do. my.calls counts calls, my.sent lists { path, params } of every
// request, my.pending() resolves when every request so far has settled.
function makeMy(cid, hooks = {}, gateway = gw) {
  const storage = new Map();
  const calls = { getAuthCode: 0, login: 0, requests: 0, aborts: 0 };
  const sent = [];
  const inFlight = new Set();
  const my = {
    calls,
    sent,
    storage,
    async pending() {
      for (;;) {
        if (inFlight.size === 0) {
          // let the helper's microtasks send what follows a settled call
          await new Promise((r) => setImmediate(r));
          if (inFlight.size === 0) {
            return;
          }
        }
        await Promise.all([...inFlight]);
      }
    },
    getAuthCode({ scopes, success, fail }) {
      calls.getAuthCode++;
      const refuse = hooks.getAuthCode && hooks.getAuthCode();
      if (refuse) {
        setImmediate(() => fail(refuse));
        return;
      }
      const done = fetch(`${gateway.sandbox}/sandbox/authcode`, {
        method: 'POST',
        headers: { 'Content-Type': 'application/json' },
        body: JSON.stringify({ customerId: cid, scopes }),
      }).then((r) => r.json()).then((b) => success({ authCode: b.authCode }), fail);
      inFlight.add(done);
      done.finally(() => inFlight.delete(done));
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
    request(params) {
      const { url, method = 'GET', data, timeout = 30000, dataType = 'json', success, fail, complete } = params;
      const headers = params.headers || { 'content-type': 'application/json' };
      calls.requests++;
      const u = new URL(url);
      const isLogin = u.pathname === '/rebell/login';
      const n = isLogin ? ++calls.login : 0;
      sent.push({ path: u.pathname, params });
      let body;
      if (data !== undefined && typeof data === 'object') {
        if (method.toUpperCase() === 'GET') {
          for (const [k, v] of Object.entries(data)) {
            u.searchParams.set(k, String(v));
          }
        } else {
          body = JSON.stringify(data);
        }
      } else if (data !== undefined) {
        body = String(data);
      }
      const ac = new AbortController();
      let why = null;
      const timer = setTimeout(() => { why = 'timeout'; ac.abort(); }, timeout);
      let settled = false;
      const finish = (ok, v) => {
        if (settled) {
          return;
        }
        settled = true;
        clearTimeout(timer);
        (ok ? success : fail)?.(v);
        complete?.(v);
      };
      const done = fetch(u, { method, headers, body, signal: ac.signal })
        .then(async (res) => {
          const text = await res.text();
          const answer = { status: res.status, headers: Object.fromEntries(res.headers) };
          if (isLogin && hooks.login && hooks.login(n) === 'drop') {
            finish(false, { error: 13, errorMessage: 'timeout' });
            return;
          }
          if (dataType === 'base64') {
            answer.data = Buffer.from(text).toString('base64');
          } else if (dataType === 'json' && text !== '') {
            try {
              answer.data = JSON.parse(text);
            } catch (e) {
              finish(false, { error: 14, errorMessage: 'JSON parse data error', ...answer, data: text });
              return;
            }
          } else {
            answer.data = text;
          }
          if ((res.status >= 200 && res.status < 300) || hooks.everyAnswerToSuccess) {
            finish(true, answer);
          } else {
            finish(false, { error: 19, errorMessage: 'http status error', ...answer });
          }
        }, () => {
          if (why === 'timeout') {
            finish(false, { error: 13, errorMessage: 'timeout' });
          } else if (why === 'abort') {
            finish(false, { error: 20, errorMessage: 'request stopped' });
          } else {
            finish(false, { error: 12, errorMessage: 'network error' });
          }
        });
      inFlight.add(done);
      done.finally(() => inFlight.delete(done));
      const task = {
        abort() {
          calls.aborts++;
          why = why || 'abort';
          ac.abort();
        },
      };
      if (hooks.request) {
        hooks.request({ path: u.pathname, params, task });
      }
      return task;
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
    assert.equal(err.code, 'rebell_unavailable');
    assert.equal(err.error, MY_REQUEST_ERRORS.HTTP);
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

// recorder returns my.request-style callbacks that log each call in events.
function recorder() {
  const events = [];
  return {
    events,
    names: () => events.map((e) => e[0]),
    callbacks: {
      success: (res) => events.push(['success', res]),
      fail: (err) => events.push(['fail', err]),
      complete: (v) => events.push(['complete', v]),
    },
  };
}

// closedPort returns a 127.0.0.1 port nothing listens on.
async function closedPort() {
  const srv = net.createServer();
  await new Promise((resolve) => srv.listen(0, '127.0.0.1', resolve));
  const { port } = srv.address();
  await new Promise((resolve) => srv.close(resolve));
  return port;
}

function sentTo(my, path) {
  return my.sent.filter((s) => s.path === path);
}

function isAbort(err) {
  assert.ok(err instanceof Error);
  assert.equal(err.aborted, true);
  assert.equal(err.error, MY_REQUEST_ERRORS.STOPPED);
  return true;
}

test('success: success, then complete, once each, then the task settles; my.request gets the options', async () => {
  const cid = customerId();
  const my = makeMy(cid);
  const session = createRebellSession({ baseUrl: gw.gateway, my });
  const r = recorder();
  const task = session.request({
    url: '/api/orders', method: 'POST', data: { a: 1 }, headers: { 'X-Trace': 't1' },
    timeout: 5000, dataType: 'text', enableCookie: false, ...r.callbacks,
  });
  assert.ok(task instanceof Promise);
  assert.equal(typeof task.abort, 'function');
  assert.deepEqual(r.events, [], 'no callback before the task is returned');
  const res = await task;
  r.events.push(['settled', res]);
  assert.deepEqual(r.names(), ['success', 'complete', 'settled']);
  assert.equal(r.events[0][1], res);
  assert.equal(r.events[1][1], res);
  assert.equal(res.status, 200);
  assert.equal(typeof res.data, 'string', 'dataType text reached my.request');
  assert.equal(JSON.parse(res.data).customerId, cid);
  assert.equal(JSON.parse(res.data).path, '/api/orders');

  const [sent] = sentTo(my, '/api/orders');
  assert.equal(sentTo(my, '/api/orders').length, 1);
  assert.equal(sent.params.url, `${gw.gateway}/api/orders`);
  assert.equal(sent.params.method, 'POST');
  assert.deepEqual(sent.params.data, { a: 1 });
  assert.equal(sent.params.timeout, 5000);
  assert.equal(sent.params.dataType, 'text');
  assert.equal(sent.params.enableCookie, false);
  assert.equal(sent.params.headers['X-Trace'], 't1');
  assert.equal(sent.params.headers.Authorization, `Bearer ${session.sessionId()}`);
  assert.notEqual(sent.params.success, r.callbacks.success);
  assert.notEqual(sent.params.fail, r.callbacks.fail);
  assert.equal(sent.params.complete, undefined, 'the app\'s complete is not handed to my.request');
});

test('a hidden re-login: success and complete once each, none for the refused attempt', async () => {
  const cid = customerId();
  const my = makeMy(cid);
  const session = createRebellSession({ baseUrl: gw.gateway, my });
  await session.request({ url: '/api/me' });
  const del = await adminDelete(`/rebell/customers/${cid}/sessions`);
  assert.equal(del.status, 200, del.body);

  for (const dataType of ['json', 'text', 'base64']) {
    if (dataType !== 'json') {
      const again = await adminDelete(`/rebell/customers/${cid}/sessions`);
      assert.equal(again.status, 200, again.body);
    }
    const before = sentTo(my, '/api/me').length;
    const logins = my.calls.login;
    const r = recorder();
    const res = await session.request({ url: '/api/me', dataType, ...r.callbacks });
    assert.deepEqual(r.names(), ['success', 'complete'], dataType);
    assert.equal(r.events[0][1], res);
    assert.equal(r.events[1][1], res);
    assert.equal(res.status, 200);
    assert.equal(sentTo(my, '/api/me').length - before, 2, `${dataType}: the refused attempt and the retry`);
    assert.equal(my.calls.login - logins, 1, `${dataType}: one login`);
  }
  assert.equal(my.calls.getAuthCode, 4);
});

test('failures: fail, then complete, once each, with my.request\'s error code, status, retryAfter', async () => {
  const cid = customerId();
  const my = makeMy(cid);
  const session = createRebellSession({ baseUrl: gw.gateway, my });

  // An HTTP error (my.request's 19) from the upstream.
  let r = recorder();
  let task = session.request({ url: '/busy', ...r.callbacks });
  await assert.rejects(task, (err) => {
    assert.ok(err instanceof Error);
    assert.equal(err.error, MY_REQUEST_ERRORS.HTTP);
    assert.equal(err.status, 503);
    assert.equal(err.retryAfter, 7);
    assert.equal(err.code, undefined, 'the upstream sent no JSON error');
    assert.deepEqual(r.names(), ['fail', 'complete']);
    assert.equal(r.events[0][1], err);
    assert.equal(r.events[1][1], err);
    return true;
  });

  // A gateway error on a request: a made-up session is refused, the
  // re-login is refused by Rebell (fault), and the retry never happens.
  my.storage.set('rebell_session', 'x'.repeat(43));
  const f = await fetch(`${gw.sandbox}/sandbox/faults`, {
    method: 'POST',
    headers: { 'Content-Type': 'application/json' },
    body: JSON.stringify({ count: 1, resultStatus: 'U', resultCode: 'UNKNOWN_EXCEPTION', httpStatus: 503 }),
  });
  assert.equal(f.status, 200, await f.text());
  r = recorder();
  await assert.rejects(session.request({ url: '/api/me', ...r.callbacks }), (err) => {
    assert.equal(err.status, 503);
    assert.equal(err.code, 'rebell_unavailable');
    assert.equal(err.retryAfter, 5);
    assert.deepEqual(r.names(), ['fail', 'complete']);
    return true;
  });

  // No answer (my.request's 12): nothing listens.
  const port = await closedPort();
  r = recorder();
  await assert.rejects(session.request({ url: `http://127.0.0.1:${port}/x`, ...r.callbacks }), (err) => {
    assert.equal(err.error, MY_REQUEST_ERRORS.NETWORK);
    assert.equal(err.status, undefined);
    assert.deepEqual(r.names(), ['fail', 'complete']);
    return true;
  });

  // Callbacks only, never awaited: no unhandled rejection.
  const unhandled = [];
  const onUnhandled = (e) => unhandled.push(e);
  process.on('unhandledRejection', onUnhandled);
  try {
    await new Promise((resolve) => {
      session.request({ url: '/busy', fail() {}, complete: resolve });
    });
    await new Promise((resolve) => setImmediate(resolve));
  } finally {
    process.off('unhandledRejection', onUnhandled);
  }
  assert.deepEqual(unhandled, []);

  // A bad call fails the same way.
  r = recorder();
  await assert.rejects(session.request({ ...r.callbacks }), TypeError);
  assert.deepEqual(r.names(), ['fail', 'complete']);
});

test('abort() right away: fail and complete once, nothing sent', async () => {
  const my = makeMy(customerId());
  const session = createRebellSession({ baseUrl: gw.gateway, my });
  const r = recorder();
  const task = session.request({ url: '/api/me', ...r.callbacks });
  task.abort();
  task.abort();
  await assert.rejects(task, isAbort);
  await my.pending();
  assert.deepEqual(r.names(), ['fail', 'complete']);
  assert.equal(my.calls.getAuthCode, 0);
  assert.equal(my.calls.requests, 0);
});

test('abort() during the hidden re-login: the retry is not sent, the new session is kept', async () => {
  const cid = customerId();
  let onCode = null;
  const my = makeMy(cid, { getAuthCode: () => { if (onCode) { onCode(); } } });
  const session = createRebellSession({ baseUrl: gw.gateway, my });
  await session.request({ url: '/api/me' });
  const first = session.sessionId();
  const del = await adminDelete(`/rebell/customers/${cid}/sessions`);
  assert.equal(del.status, 200, del.body);

  const r = recorder();
  let task = null;
  onCode = () => task.abort();
  task = session.request({ url: '/api/me', ...r.callbacks });
  await assert.rejects(task, isAbort);
  onCode = null;
  await my.pending();
  assert.deepEqual(r.names(), ['fail', 'complete']);
  assert.equal(sentTo(my, '/api/me').length, 2, 'the first request and the refused attempt; no retry');
  assert.equal(my.calls.login, 2, 'the re-login went on');
  const second = session.sessionId();
  assert.ok(second && second !== first);

  // The next call uses the session that login made.
  assert.equal((await session.request({ url: '/api/me' })).data.customerId, cid);
  assert.equal(my.calls.getAuthCode, 2);
  assert.equal(session.sessionId(), second);
});

test('abort() during the retry: my.request\'s task is aborted, fail and complete once, no success', async () => {
  const cid = customerId();
  const my = makeMy(cid);
  const session = createRebellSession({ baseUrl: gw.gateway, my });
  await session.request({ url: '/api/me' });
  const del = await adminDelete(`/rebell/customers/${cid}/sessions`);
  assert.equal(del.status, 200, del.body);

  const r = recorder();
  const task = session.request({ url: '/hold/1', ...r.callbacks });
  // The first attempt is refused by the gateway (401); the retry, with the
  // new session, reaches the upstream and is held there.
  const held = await gw.held.next();
  assert.equal(held.path, '/hold/1');
  assert.equal(held.customerId, cid);
  assert.equal(sentTo(my, '/hold/1').length, 2);
  task.abort();
  await assert.rejects(task, isAbort);
  held.respond(200, { late: true });
  await my.pending();
  assert.equal(my.calls.aborts, 1, 'my.request\'s RequestTask.abort()');
  assert.deepEqual(r.names(), ['fail', 'complete']);
  assert.equal(sentTo(my, '/hold/1').length, 2);
});

test('abort() after the call settled changes nothing', async () => {
  const my = makeMy(customerId());
  const session = createRebellSession({ baseUrl: gw.gateway, my });
  const r = recorder();
  const task = session.request({ url: '/api/me', ...r.callbacks });
  const res = await task;
  task.abort();
  assert.equal(res.status, 200);
  assert.deepEqual(r.names(), ['success', 'complete']);
  assert.equal(my.calls.aborts, 0);
});

test('logout without an answer keeps the id', async () => {
  const my = makeMy(customerId());
  const session = createRebellSession({ baseUrl: `http://127.0.0.1:${await closedPort()}`, my });
  my.storage.set('rebell_session', 'kept');
  const r = recorder();
  await assert.rejects(session.logout(r.callbacks), (err) => {
    assert.equal(err.error, MY_REQUEST_ERRORS.NETWORK);
    return true;
  });
  assert.deepEqual(r.names(), ['fail', 'complete']);
  assert.equal(session.sessionId(), 'kept');
  // Nothing stored: nothing to send.
  my.storage.delete('rebell_session');
  const requests = my.calls.requests;
  await session.logout();
  assert.equal(my.calls.requests, requests);
});

test('logout answered 503 store_unavailable keeps the id; logout again ends the session on the server', async (t) => {
  if (!redisServerPath()) {
    if (process.env.REBELL_REQUIRE_REDIS) {
      assert.fail('redis-server not found, and REBELL_REQUIRE_REDIS is set');
    }
    t.skip('redis-server not found: SKIPPING the logout on 503 store_unavailable; install redis-server or set REBELL_REQUIRE_REDIS=1 to make this an error');
    return;
  }
  const redis = await startRedis();
  t.after(() => redis.stop());
  const g = await startGateway({ redis: redis.addr });
  t.after(() => g.stop());

  const cid = customerId();
  const my = makeMy(cid, {}, g);
  const session = createRebellSession({ baseUrl: g.gateway, my });
  assert.equal((await session.request({ url: '/api/me' })).status, 200);
  const id = session.sessionId();
  const get = () => fetch(`${g.gateway}/api/me`, { headers: { Authorization: `Bearer ${id}` } });

  // Redis down: the end cannot be stored.
  await redis.down();
  const r = recorder();
  await assert.rejects(session.logout(r.callbacks), (err) => {
    assert.equal(err.status, 503);
    assert.equal(err.code, 'store_unavailable');
    assert.equal(err.retryAfter, 5);
    assert.equal(err.error, MY_REQUEST_ERRORS.HTTP);
    return true;
  });
  assert.deepEqual(r.names(), ['fail', 'complete']);
  assert.equal(session.sessionId(), id, 'the id is kept for another try');

  // Redis back with its data: the session was not ended, and works.
  await redis.up();
  const deadline = Date.now() + 15000;
  for (;;) {
    const res = await get();
    const b = await res.json();
    if (res.status === 200) {
      assert.equal(b.customerId, cid);
      break;
    }
    assert.equal(res.status, 503, JSON.stringify(b));
    assert.equal(b.error, 'store_unavailable');
    assert.ok(Date.now() < deadline, 'the session still answers 503 15 s after Redis came back');
    await new Promise((resolve) => setTimeout(resolve, 100));
  }

  // The app tries again: the session ends, on the server too.
  await session.logout();
  assert.equal(session.sessionId(), null);
  const res = await get();
  assert.equal(res.status, 401);
  assert.equal((await res.json()).error, 'session_invalid');
});

test('a platform that gives every HTTP answer to success: the hidden re-login still works, a 503 stays a success', async () => {
  const cid = customerId();
  const my = makeMy(cid, { everyAnswerToSuccess: true });
  const session = createRebellSession({ baseUrl: gw.gateway, my });
  await session.request({ url: '/api/me' });
  const del = await adminDelete(`/rebell/customers/${cid}/sessions`);
  assert.equal(del.status, 200, del.body);
  let r = recorder();
  const res = await session.request({ url: '/api/me', ...r.callbacks });
  assert.equal(res.status, 200);
  assert.equal(res.data.customerId, cid);
  assert.deepEqual(r.names(), ['success', 'complete']);
  assert.equal(my.calls.login, 2);

  r = recorder();
  const busy = await session.request({ url: '/busy', ...r.callbacks });
  assert.equal(busy.status, 503, 'as the platform gave it');
  assert.deepEqual(r.names(), ['success', 'complete']);
});
