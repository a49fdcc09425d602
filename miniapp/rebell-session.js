// rebell-session.js: the Mini App's half of the caddy-rebell gateway
// contract (README.md, docs/contract.md section 9). One dependency-free
// CommonJS file, with its types in rebell-session.d.ts: copy both into a Mini
// App, or install the package (miniapp/package.json).
//
//   const { createRebellSession } = require('./rebell-session');
//   const session = createRebellSession({ baseUrl: 'https://api.merchant.example', my });
//
//   // Called as my.request is: the same options, the same callbacks.
//   const task = session.request({
//     url: '/api/orders', method: 'GET',
//     success(res) { ... },   // my.request's { status, data, headers }
//     fail(err) { ... },      // see "Errors" below
//     complete(resOrErr) { ... },
//   });
//   task.abort();             // stops the attempt in flight and any retry
//
//   // Or awaited: the task is a Promise too.
//   const res = await session.request({ url: '/api/orders' });
//   await session.logout();
//
// session.request(options) takes what my.request takes: url (absolute, or a
// path under baseUrl), method, data, headers, timeout, dataType, success,
// fail, complete; other fields are passed to my.request as they are. It
// returns a RequestTask: a Promise of the success result with abort().
// success or fail is called exactly once per call, then complete exactly
// once, after any hidden login and retry; the Promise settles after them.
// timeout applies to each my.request attempt (the login's has the
// platform's default). With fail or complete given, a task nobody awaits
// reports no unhandled rejection.
//
// What it does for the app:
// - logs in lazily: my.getAuthCode, then POST <loginPath> {"authCode"}, and
//   keeps the session id with my.setStorageSync (read back with
//   my.getStorageSync); every request carries Authorization: Bearer <id>;
// - concurrent calls share one login in flight;
// - a login whose my.request fails for a network reason (error 12 or 13, or
//   no answer) is sent once more with the same auth code: the gateway's
//   login_dedup_window answers it with the same session, without spending
//   the code twice;
// - on 401 session_required, session_invalid or reauth_required it forgets
//   the id, logs in once more (a new auth code) and retries the request once;
//   the refused attempt calls none of the app's callbacks;
// - every other answer, 503 included, goes to success or fail as my.request
//   gave it;
// - abort() ends the call at once with fail (error 20, aborted: true), aborts
//   the my.request in flight, and sends no retry. A login shared with other
//   calls goes on for them (and is kept for the next call);
// - a failed my.getAuthCode (the user cancelled: its error 11) fails the call
//   with my.getAuthCode's own error object, and nothing is sent;
// - logout() sends POST <logoutPath> and forgets the stored id only once the
//   gateway answered 2xx (204) or 401: the session is gone either way. On a
//   503 store_unavailable, or when no answer came, the id is kept so that the
//   app can call logout() again (after err.retryAfter seconds); until then the
//   session stays valid on the server.
//
// Errors: fail receives (and the Promise rejects with) an Error carrying
//   error         my.request's error code when the platform gave one (table
//                 below); 20 with aborted: true after abort()
//   errorMessage  my.request's message, when it gave one
//   status, data, headers   the HTTP answer, when one came (error 19)
//   code          the `error` field of the answer's JSON body: for the
//                 gateway's own answers its error code (docs/contract.md),
//                 e.g. 'store_unavailable'
//   retryAfter    seconds, when the answer carried Retry-After
// A failed my.getAuthCode is passed on as its own object instead.
//
// my.request's error codes. Source: Alipay Mini Program documentation,
// my.request (opendocs.alipay.com/mini/api/owycmh, section 错误码, and its
// FAQ "my.request 错误码"); the Alipay+ family's pages (miniprogram.alipay.com
// mpdev/api_network_request, and the wallets built on it) document the same
// API: headers (not header), status, timeout 30000 ms by default, dataType
// json/text/base64, a RequestTask with abort(). This table, with
// MY_REQUEST_ERRORS below (whose types rebell-session.d.ts mirrors), is the
// one place they are kept; the docs point here:
//   11  no permission for the cross-domain call (domain not whitelisted)
//   12  network error
//   13  timeout
//   14  decoding failed (the body did not match dataType)
//   19  HTTP error: a status outside 2xx (status, data and headers come with it)
//   20  request stopped, or rate-limited by the platform; also what the
//       helper's abort() reports
// (The FAQ lists a few more, 1 page left before the answer, 2 bad
// parameters, 15 page parameters not urlencoded, 23 proxy failure: the
// helper passes them on like any failure without an answer.) success
// receives { data, status, headers }; what fail receives after
// RequestTask.abort() is not documented, and the helper does not wait for it.
// Platforms that deliver every HTTP answer to success (status outside 2xx
// included), or name the fields statusCode/header, are read the same way:
// the helper looks at the status, not at the callback, to find the 401s it
// handles and the answer an error carries.
'use strict';

var MY_REQUEST_ERRORS = {
  CROSS_DOMAIN: 11,
  NETWORK: 12,
  TIMEOUT: 13,
  DECODE: 14,
  HTTP: 19,
  STOPPED: 20,
};

var SESSION_ERRORS = { session_required: true, session_invalid: true, reauth_required: true };

// The fields of a request's options that are the helper's, not my.request's.
var CALLBACKS = { success: true, fail: true, complete: true };

function noop() {}

// callSafely calls an app's callback; a throw is reported asynchronously
// instead of breaking the order of the callbacks that follow.
function callSafely(fn, arg) {
  if (typeof fn !== 'function') {
    return;
  }
  try {
    fn(arg);
  } catch (e) {
    setTimeout(function () { throw e; }, 0);
  }
}

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

  // newCall returns the state of one call of request or logout: its task
  // (a Promise with abort()), finish, which settles it once, and stopped,
  // which the steps check before going on.
  function newCall(params) {
    var resolveTask;
    var rejectTask;
    var call = { stopped: false, inFlight: null };
    var task = new Promise(function (resolve, reject) {
      resolveTask = resolve;
      rejectTask = reject;
    });
    if (typeof params.fail === 'function' || typeof params.complete === 'function') {
      // The app handles failures with callbacks: an unawaited task must not
      // report an unhandled rejection.
      task.catch(noop);
    }
    call.finish = function (ok, value) {
      if (call.stopped) {
        return;
      }
      call.stopped = true;
      call.inFlight = null;
      callSafely(ok ? params.success : params.fail, value);
      callSafely(params.complete, value);
      if (ok) {
        resolveTask(value);
      } else {
        rejectTask(value);
      }
    };
    task.abort = function () {
      if (call.stopped) {
        return;
      }
      var inFlight = call.inFlight;
      call.inFlight = null;
      if (inFlight && typeof inFlight.abort === 'function') {
        try {
          inFlight.abort();
        } catch (e) {
          // the attempt is abandoned all the same
        }
      }
      call.finish(false, Object.assign(new Error('request aborted'), {
        error: MY_REQUEST_ERRORS.STOPPED, errorMessage: 'request aborted', aborted: true,
      }));
    };
    call.task = task;
    return call;
  }

  // send runs my.request and settles with { ok, res } or { ok: false, err }:
  // it never rejects, so callers can look at HTTP answers that came through
  // fail (error 19) as well as through success. While it runs, the
  // platform's RequestTask is call.inFlight, for abort().
  function send(params, call) {
    return new Promise(function (resolve) {
      var done = false;
      var rt;
      function settle(v) {
        if (!done) {
          done = true;
          if (call && call.inFlight === rt) {
            call.inFlight = null;
          }
          resolve(v);
        }
      }
      try {
        rt = my.request(Object.assign({}, params, {
          success: function (res) { settle({ ok: true, res: res }); },
          fail: function (err) { settle({ ok: false, err: err }); },
        }));
      } catch (e) {
        settle({ ok: false, err: e });
      }
      if (call && !done && rt) {
        call.inFlight = rt;
      }
    });
  }

  // answerOf returns the HTTP answer of a settled send, or null when none
  // arrived (a network failure).
  function answerOf(out) {
    var r = out.ok ? out.res : out.err;
    if (r && typeof statusOf(r) === 'number' && statusOf(r) > 0) {
      return r;
    }
    return null;
  }

  function statusOf(answer) {
    return typeof answer.status === 'number' ? answer.status : answer.statusCode;
  }

  function headersOf(answer) {
    return (answer && (answer.headers || answer.header)) || {};
  }

  function isNetworkFailure(out) {
    if (out.ok || answerOf(out)) {
      return false;
    }
    var code = out.err && out.err.error;
    return code === undefined || code === MY_REQUEST_ERRORS.NETWORK || code === MY_REQUEST_ERRORS.TIMEOUT;
  }

  // body returns the answer's JSON body as an object, or null.
  function body(answer, dataType) {
    var d = answer && answer.data;
    if (typeof d === 'string') {
      var text = dataType === 'base64' ? decodeBase64(d) : d;
      try {
        d = JSON.parse(text);
      } catch (e) {
        return null;
      }
    }
    return d && typeof d === 'object' ? d : null;
  }

  function header(answer, name) {
    var h = headersOf(answer);
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

  // failure turns a settled send that is not a success into the Error the
  // call fails with (see "Errors" in the header).
  function failure(out, what, dataType) {
    var answer = answerOf(out);
    var src = out.ok ? null : out.err;
    var fields = {};
    if (src && typeof src === 'object') {
      for (var k in src) {
        if (Object.prototype.hasOwnProperty.call(src, k) && k !== 'message' && k !== 'stack') {
          fields[k] = src[k];
        }
      }
    }
    var message = what + ' failed';
    if (answer) {
      fields.status = statusOf(answer);
      fields.data = answer.data;
      fields.headers = headersOf(answer);
      var b = body(answer, dataType);
      if (b && typeof b.error === 'string') {
        fields.code = b.error;
      }
      var ra = retryAfterOf(answer);
      if (ra !== undefined) {
        fields.retryAfter = ra;
      }
      message += ': HTTP ' + fields.status + (fields.code ? ' ' + fields.code : '');
    } else if (src && typeof src.errorMessage === 'string') {
      message += ': ' + src.errorMessage + (typeof src.error === 'number' ? ' (error ' + src.error + ')' : '');
    } else if (src instanceof Error) {
      message += ': ' + src.message;
    }
    var err = new Error(message);
    if (src instanceof Error) {
      err.cause = src;
    }
    return Object.assign(err, fields);
  }

  function sessionError(out, dataType) {
    var answer = answerOf(out);
    if (!answer || statusOf(answer) !== 401) {
      return false;
    }
    var b = body(answer, dataType);
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
      var b = body(answer, 'json');
      var status = answer ? statusOf(answer) : 0;
      if (status === 200 && b && typeof b.sessionId === 'string' && b.sessionId !== '') {
        writeId(b.sessionId);
        return b.sessionId;
      }
      if (status === 200) {
        throw Object.assign(new Error('login answer has no sessionId'), { status: 200, data: answer.data });
      }
      throw failure(out, 'login', 'json');
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

  // platformParams returns the app's options without the helper's callbacks,
  // with an absolute url and the session's Authorization header.
  function platformParams(params, id) {
    var out = {};
    for (var k in params) {
      if (Object.prototype.hasOwnProperty.call(params, k) && !CALLBACKS[k]) {
        out[k] = params[k];
      }
    }
    out.url = /^https?:\/\//i.test(params.url) ? params.url : baseUrl + params.url;
    out.headers = Object.assign({}, params.headers || {}, { Authorization: 'Bearer ' + id });
    return out;
  }

  function finishWith(call, out, dataType) {
    if (out.ok) {
      call.finish(true, out.res);
    } else {
      call.finish(false, failure(out, 'request', dataType));
    }
  }

  function request(params) {
    var p = params || {};
    var call = newCall(p);
    // Started after return, so that abort() called right away sends nothing
    // and callbacks never run before the caller has its task.
    Promise.resolve().then(function () {
      if (call.stopped) {
        return undefined;
      }
      if (typeof p.url !== 'string' || p.url === '') {
        throw new TypeError('request: url is required');
      }
      return sessionFor().then(function (id) {
        if (call.stopped) {
          return undefined;
        }
        return send(platformParams(p, id), call).then(function (out) {
          if (call.stopped) {
            return undefined;
          }
          if (!sessionError(out, p.dataType)) {
            return finishWith(call, out, p.dataType);
          }
          return renew(id).then(function (id2) {
            if (call.stopped) {
              return undefined;
            }
            return send(platformParams(p, id2), call).then(function (out2) {
              if (!call.stopped) {
                finishWith(call, out2, p.dataType);
              }
            });
          });
        });
      });
    }).catch(function (err) {
      call.finish(false, err);
    });
    return call.task;
  }

  // logout ends the stored session at the gateway. The id is forgotten only
  // once the gateway answered 2xx or 401; otherwise it is kept, so the app
  // can call logout again (err.retryAfter seconds later on a 503).
  function logout(params) {
    var p = params || {};
    var call = newCall(p);
    Promise.resolve().then(function () {
      if (call.stopped) {
        return undefined;
      }
      var id = readId();
      if (!id) {
        return call.finish(true, undefined);
      }
      return send({
        url: baseUrl + logoutPath,
        method: 'POST',
        headers: { Authorization: 'Bearer ' + id },
      }, call).then(function (out) {
        if (call.stopped) {
          return undefined;
        }
        var answer = answerOf(out);
        var status = answer ? statusOf(answer) : 0;
        if ((status >= 200 && status < 300) || status === 401) {
          if (readId() === id) {
            clearId();
          }
          return call.finish(true, undefined);
        }
        return call.finish(false, failure(out, 'logout', 'json'));
      });
    }).catch(function (err) {
      call.finish(false, err);
    });
    return call.task;
  }

  return {
    request: request,
    logout: logout,
    // sessionId returns the stored session id, or null.
    sessionId: readId,
  };
}

// decodeBase64 decodes standard base64 to a string of bytes (enough for
// the gateway's ASCII JSON bodies), for answers asked with dataType 'base64'.
function decodeBase64(s) {
  var alphabet = 'ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/';
  var out = '';
  var bits = 0;
  var n = 0;
  for (var i = 0; i < s.length; i++) {
    var v = alphabet.indexOf(s.charAt(i));
    if (v < 0) {
      continue; // padding and line breaks
    }
    bits = ((bits << 6) | v) & 0xffffff;
    n += 6;
    if (n >= 8) {
      n -= 8;
      out += String.fromCharCode((bits >> n) & 0xff);
    }
  }
  return out;
}

module.exports = { createRebellSession: createRebellSession, MY_REQUEST_ERRORS: MY_REQUEST_ERRORS };
