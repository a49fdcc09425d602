// usage.ts: the helper as a Mini App written in TypeScript calls it.
// Checked by `tsc --noEmit -p miniapp` (types.test.js); never run. The
// lines marked ts-expect-error at the end are misuses the types must refuse.
import { createRebellSession, MY_REQUEST_ERRORS, RebellSessionError, MiniAppMy } from './rebell-session';

declare const my: MiniAppMy;
declare function setTimeout(fn: () => void, ms: number): unknown; // the Mini App runtime's

interface Order {
  id: string;
  total: number;
}

const session = createRebellSession({ baseUrl: 'https://api.merchant.example', my, scopes: ['auth_base'] });

// my.request's calling pattern: callbacks, and a task to abort.
const task = session.request<Order[]>({
  url: '/api/orders',
  method: 'GET',
  data: { page: 1 },
  headers: { 'X-Trace': 'abc' },
  timeout: 10000,
  dataType: 'json',
  success(res) {
    const first: Order | undefined = res.data[0];
    const status: number = res.status;
    const type: string | undefined = res.headers['content-type'];
    void first; void status; void type;
  },
  fail(err) {
    if (err.error === MY_REQUEST_ERRORS.NETWORK || err.aborted) {
      return;
    }
    if (err.code === 'store_unavailable' && err.retryAfter !== undefined) {
      const wait: number = err.retryAfter * 1000;
      void wait;
    }
  },
  complete() {},
});
task.abort();

// Awaited.
async function orders(): Promise<Order[]> {
  const res = await session.request<Order[]>({ url: '/api/orders' });
  return res.data;
}

// A retryable logout.
async function logOut(): Promise<void> {
  try {
    await session.logout();
  } catch (e) {
    const err = e as RebellSessionError;
    if (err.status === 503) {
      setTimeout(logOut, (err.retryAfter ?? 5) * 1000);
    }
  }
  session.logout({ success() {}, fail(err) { void err.retryAfter; } });
}

const id: string | null = session.sessionId();
void orders; void logOut; void id;

// @ts-expect-error url is required
session.request({ method: 'GET' });
// @ts-expect-error url is a string
session.request({ url: 42 });
// @ts-expect-error success receives my.request's result, not a string
session.request({ url: '/x', success(res: string) { void res; } });
// @ts-expect-error baseUrl is required
createRebellSession({ my });
// @ts-expect-error the task's result has no such field
session.request({ url: '/x' }).then((res) => res.statusCode);
// @ts-expect-error the error code is a number
const wrong: string = MY_REQUEST_ERRORS.TIMEOUT;
void wrong;
