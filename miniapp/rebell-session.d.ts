// Types of rebell-session.js (see its header for the behaviour, and
// README.md / docs/contract.md section 9 for the contract).

/** The answer my.request gives to success: status, data and headers. */
export interface RebellResponse<T = any> {
  /** The HTTP status. */
  status: number;
  /** The body, in the format asked with dataType (parsed JSON by default). */
  data: T;
  /** The response headers. */
  headers: Record<string, string>;
}

/**
 * What a call fails with: an Error carrying my.request's fields and the
 * gateway's. A failed my.getAuthCode is passed on as my.getAuthCode's own
 * object instead (with its error and errorMessage).
 */
export interface RebellSessionError extends Partial<Error> {
  /**
   * my.request's error code, when the platform gave one (MY_REQUEST_ERRORS;
   * the table and its source are in rebell-session.js's header); 20 after
   * abort().
   */
  error?: number;
  /** my.request's message, when it gave one. */
  errorMessage?: string;
  /** The HTTP status, when an answer came. */
  status?: number;
  /** The answer's body, when an answer came. */
  data?: any;
  /** The answer's headers, when an answer came. */
  headers?: Record<string, string>;
  /**
   * The `error` field of the answer's JSON body: for the gateway's own
   * answers its error code, e.g. 'store_unavailable'.
   */
  code?: string;
  /** Seconds to wait, when the answer carried Retry-After. */
  retryAfter?: number;
  /** True when the call ended because of abort(). */
  aborted?: boolean;
}

/** my.request's error codes, as rebell-session.js names them. */
export declare const MY_REQUEST_ERRORS: {
  readonly CROSS_DOMAIN: 11;
  readonly NETWORK: 12;
  readonly TIMEOUT: 13;
  readonly DECODE: 14;
  readonly HTTP: 19;
  readonly STOPPED: 20;
};

/** The options of session.request: those of my.request. */
export interface RebellRequestOptions<T = any> {
  /** An absolute URL, or a path under baseUrl. */
  url: string;
  /** The HTTP method; GET by default. */
  method?: string;
  /** The request's data: an object (sent as JSON, or as a GET's query) or a string. */
  data?: string | Record<string, any> | ArrayBuffer;
  /** Request headers; Authorization is set by the helper. */
  headers?: Record<string, string>;
  /** my.request's timeout of each attempt, in milliseconds. */
  timeout?: number;
  /** The format of the answer's data; json by default. */
  dataType?: 'json' | 'text' | 'base64' | (string & {});
  /** Called once when the call succeeds, after any hidden login and retry. */
  success?: (res: RebellResponse<T>) => void;
  /** Called once when the call fails or is aborted. */
  fail?: (err: RebellSessionError) => void;
  /** Called once after success or fail, with the same argument. */
  complete?: (resOrErr: RebellResponse<T> | RebellSessionError) => void;
  /** Other fields are passed to my.request as they are. */
  [platformOption: string]: unknown;
}

/** A call's task: a Promise of the success result, with abort(). */
export interface RebellRequestTask<T = any> extends Promise<RebellResponse<T>> {
  /**
   * Ends the call with fail (error 20, aborted: true), aborts the my.request
   * in flight, and sends no retry. No effect once the call has settled.
   */
  abort(): void;
}

/** The callbacks logout accepts. */
export interface RebellLogoutOptions {
  /** Called once when the session ended (or none was stored). */
  success?: () => void;
  /** Called once when the gateway did not confirm the end; the id is kept. */
  fail?: (err: RebellSessionError) => void;
  /** Called once after success or fail. */
  complete?: (err?: RebellSessionError) => void;
}

/** The part of the Mini App's `my` the helper uses. */
export interface MiniAppMy {
  request(options: {
    url: string;
    method?: string;
    data?: any;
    headers?: Record<string, string>;
    timeout?: number;
    dataType?: string;
    success?: (res: any) => void;
    fail?: (err: any) => void;
    complete?: (res: any) => void;
    [platformOption: string]: unknown;
  }): { abort(): void } | void;
  getAuthCode(options: {
    scopes: string | string[];
    success?: (res: { authCode: string }) => void;
    fail?: (err: any) => void;
  }): void;
  getStorageSync(options: { key: string }): any;
  setStorageSync(options: { key: string; data: any }): void;
  removeStorageSync?(options: { key: string }): void;
}

/** The options of createRebellSession. */
export interface RebellSessionOptions {
  /** The gateway's origin (and path prefix, if any), e.g. https://api.merchant.example. */
  baseUrl: string;
  /** The Mini App's `my`. */
  my: MiniAppMy;
  /** The scopes asked of my.getAuthCode; ['auth_base'] by default. */
  scopes?: string[];
  /** The gateway's login_path; /rebell/login by default. */
  loginPath?: string;
  /** The gateway's logout_path; /rebell/logout by default. */
  logoutPath?: string;
  /** The storage key of the session id; rebell_session by default. */
  storageKey?: string;
}

/** A Mini App's session with the gateway. */
export interface RebellSession {
  /** Sends a request with the session, logging in when needed, as my.request is called. */
  request<T = any>(options: RebellRequestOptions<T>): RebellRequestTask<T>;
  /**
   * Ends the stored session at the gateway. The id is forgotten only once the
   * gateway answered 2xx or 401; on a failure (503 store_unavailable: wait
   * err.retryAfter seconds) it is kept, so logout can be called again.
   */
  logout(options?: RebellLogoutOptions): Promise<void> & { abort(): void };
  /** The stored session id, or null. */
  sessionId(): string | null;
}

/** Creates a session helper for a Mini App. Throws a TypeError on bad options. */
export declare function createRebellSession(options: RebellSessionOptions): RebellSession;
