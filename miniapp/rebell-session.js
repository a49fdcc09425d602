// rebell-session.js: the Mini App's half of the caddy-rebell gateway
// contract (README.md, docs/contract.md). Copy this one file into a Mini App;
// it has no dependencies.
//
//   const { createRebellSession } = require('./rebell-session');
//   const session = createRebellSession({ baseUrl: 'https://api.merchant.example', my });
//   const res = await session.request({ url: '/api/orders', method: 'GET' });
//   // res is my.request's success result: { status, data, headers }
//   await session.logout();
//
// What it does for the app:
// - logs in lazily: my.getAuthCode, then POST <loginPath> {"authCode"}, and
//   keeps the session id with my.setStorageSync (read back with
//   my.getStorageSync); every request carries Authorization: Bearer <id>;
// - concurrent calls share one login in flight;
// - a login whose my.request fails for a network reason (not an HTTP answer)
//   is sent once more with the same auth code: the gateway's
//   login_dedup_window answers it with the same session, without spending
//   the code twice;
// - on 401 session_required, session_invalid or reauth_required it forgets
//   the id, logs in once more (a new auth code) and retries the request once;
// - every other answer, 503 included, resolves or rejects as my.request gave
//   it; a rejection carries retryAfter (seconds) when the gateway sent
//   Retry-After;
// - a failed my.getAuthCode (the user cancelled: error 11) rejects with its
//   error, and nothing is sent.
'use strict';

var SESSION_ERRORS = { session_required: true, session_invalid: true, reauth_required: true };

// my.request's error codes for answers that never arrived: 12 network
// error, 13 timeout (14 is a body it could not decode, 19 an HTTP status
// error, which carry an answer).
var NETWORK_ERRORS = { 12: true, 13: true };

function createRebellSession(options) {
  var opts = options || {};
  var my = opts.my;
  if (!my || typeof my.request !== 'function' || typeof my.getAuthCode !== 'function') {
    throw new TypeError('createRebellSession: options.my must be the Mini App\'s my');
  }
  if (typeof opts.baseUrl !== 'string' || opts.baseUrl === '') {
    throw new TypeError('createRebellSession: options.baseUrl is required');
  }
  var baseUrl = opts.baseUrl.replace(/\/+$/, '');
  var scopes = opts.scopes || ['auth_base'];
  var loginPath = opts.loginPath || '/rebell/login';
  var logoutPath = opts.logoutPath || '/rebell/logout';
  var storageKey = opts.storageKey || 'rebell_session';

  var loginInFlight = null;

  function readId() {
    try {
      var r = my.getStorageSync({ key: storageKey });
      var v = r && typeof r === 'object' && 'data' in r ? r.data : r;
      return typeof v === 'string' && v !== '' ? v : null;
    } catch (e) {
      return null;
    }
  }

  function writeId(id) {
    my.setStorageSync({ key: storageKey, data: id });
  }

  function clearId() {
    if (typeof my.removeStorageSync === 'function') {
      my.removeStorageSync({ key: storageKey });
    } else {
      my.setStorageSync({ key: storageKey, data: '' });
    }
  }

  function getAuthCode() {
    return new Promise(function (resolve, reject) {
      my.getAuthCode({
        scopes: scopes,
        success: function (res) {
          if (res && typeof res.authCode === 'string' && res.authCode !== '') {
            resolve(res.authCode);
          } else {
            reject(Object.assign(new Error('my.getAuthCode gave no authCode'), { result: res }));
          }
        },
        fail: reject,
      });
    });
  }

  // send runs my.request and settles with { ok, res } or { ok: false, err }:
  // it never rejects, so callers can look at HTTP answers that came through
  // fail (error 19) as well as through success.
  function send(params) {
    return new Promise(function (resolve) {
      var done = false;
      function settle(v) {
        if (!done) {
          done = true;
          resolve(v);
        }
      }
      try {
        my.request(Object.assign({}, params, {
          success: function (res) { settle({ ok: true, res: res }); },
          fail: function (err) { settle({ ok: false, err: err }); },
        }));
      } catch (e) {
        settle({ ok: false, err: e });
      }
    });
  }

  // answerOf returns the HTTP answer of a settled send, or null when none
  // arrived (a network failure).
  function answerOf(out) {
    var r = out.ok ? out.res : out.err;
    if (r && typeof r.status === 'number' && r.status > 0) {
      return r;
    }
    return null;
  }

  function isNetworkFailure(out) {
    if (out.ok || answerOf(out)) {
      return false;
    }
    var code = out.err && out.err.error;
    return code === undefined || NETWORK_ERRORS[code] === true || !(out.err && 'error' in out.err);
  }

  function body(answer) {
    var d = answer && answer.data;
    if (typeof d === 'string') {
      try {
        return JSON.parse(d);
      } catch (e) {
        return null;
      }
    }
    return d && typeof d === 'object' ? d : null;
  }

  function header(answer, name) {
    var h = (answer && answer.headers) || {};
    var want = name.toLowerCase();
    for (var k in h) {
      if (Object.prototype.hasOwnProperty.call(h, k) && k.toLowerCase() === want) {
        return Array.isArray(h[k]) ? h[k][0] : h[k];
      }
    }
    return undefined;
  }

  function retryAfterOf(answer) {
    var v = header(answer, 'Retry-After');
    if (v === undefined || v === null || v === '') {
      return undefined;
    }
    v = String(v).trim();
    if (/^\d+$/.test(v)) {
      return parseInt(v, 10);
    }
    var at = Date.parse(v);
    if (isNaN(at)) {
      return undefined;
    }
    return Math.max(0, Math.ceil((at - Date.now()) / 1000));
  }

  // failure turns a settled send that is not a success into the rejection
  // value: my.request's own error (or an Error for an HTTP answer that came
  // through success), with retryAfter when the gateway sent Retry-After.
  function failure(out, what) {
    var answer = answerOf(out);
    var err = out.ok
      ? Object.assign(new Error(what + ': HTTP ' + answer.status), {
        status: answer.status, data: answer.data, headers: answer.headers,
      })
      : out.err;
    var ra = retryAfterOf(answer);
    if (ra !== undefined && err && typeof err === 'object') {
      err.retryAfter = ra;
    }
    return err;
  }

  function sessionError(out) {
    var answer = answerOf(out);
    if (!answer || answer.status !== 401) {
      return false;
    }
    var b = body(answer);
    return !!(b && SESSION_ERRORS[b.error] === true);
  }

  // login returns the session id, logging in if none is in flight; every
  // caller waiting at the same time shares one login.
  function login() {
    if (!loginInFlight) {
      loginInFlight = doLogin().then(function (id) {
        loginInFlight = null;
        return id;
      }, function (err) {
        loginInFlight = null;
        throw err;
      });
    }
    return loginInFlight;
  }

  function doLogin() {
    return getAuthCode().then(function (authCode) {
      var params = {
        url: baseUrl + loginPath,
        method: 'POST',
        headers: { 'Content-Type': 'application/json' },
        data: JSON.stringify({ authCode: authCode }),
        dataType: 'json',
      };
      return send(params).then(function (out) {
        // A login lost on the way back is sent again with the same code:
        // the gateway answers it with the session the first one created.
        return isNetworkFailure(out) ? send(params) : out;
      });
    }).then(function (out) {
      var answer = answerOf(out);
      var b = body(answer);
      if (out.ok && answer && answer.status === 200 && b && typeof b.sessionId === 'string' && b.sessionId !== '') {
        writeId(b.sessionId);
        return b.sessionId;
      }
      if (out.ok && answer && answer.status === 200) {
        throw Object.assign(new Error('login answer has no sessionId'), { status: 200, data: answer.data });
      }
      throw failure(out, 'login');
    });
  }

  // sessionFor returns the stored id, or logs in.
  function sessionFor() {
    var id = readId();
    return id ? Promise.resolve(id) : login();
  }

  // renew is called when the gateway refused id: it forgets id unless a
  // newer one is already stored, and returns the session to retry with.
  function renew(id) {
    var cur = readId();
    if (cur && cur !== id) {
      return Promise.resolve(cur);
    }
    if (cur === id) {
      clearId();
    }
    return login();
  }

  function attempt(params, id) {
    var headers = Object.assign({}, params.headers || {}, { Authorization: 'Bearer ' + id });
    var url = /^https?:\/\//i.test(params.url) ? params.url : baseUrl + params.url;
    return send(Object.assign({}, params, { url: url, headers: headers }));
  }

  function settle(out) {
    if (out.ok) {
      return out.res;
    }
    throw failure(out, 'request');
  }

  function request(params) {
    if (!params || typeof params.url !== 'string') {
      return Promise.reject(new TypeError('request: url is required'));
    }
    return sessionFor().then(function (id) {
      return attempt(params, id).then(function (out) {
        if (!sessionError(out)) {
          return settle(out);
        }
        return renew(id).then(function (id2) {
          return attempt(params, id2).then(settle);
        });
      });
    });
  }

  function logout() {
    var id = readId();
    if (!id) {
      return Promise.resolve();
    }
    clearId();
    return send({
      url: baseUrl + logoutPath,
      method: 'POST',
      headers: { Authorization: 'Bearer ' + id },
    }).then(function (out) {
      if (!out.ok) {
        throw failure(out, 'logout');
      }
    });
  }

  return {
    request: request,
    logout: logout,
    // sessionId returns the stored session id, or null.
    sessionId: readId,
  };
}

module.exports = { createRebellSession: createRebellSession };
