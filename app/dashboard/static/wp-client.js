// Watchpost browser client: one WebSocket to /web carrying requests (matched by
// req_id), topic subscriptions with seq-based recovery, reconnects with
// full-jitter backoff and in-band token refresh. Plain ES module, no
// dependencies; documented in docs/js-client.md.

export const PROTOCOL = "watchpost.v1";

// Package ids this module itself speaks; the full table is in docs/packages.md.
export const Pkg = Object.freeze({
  PING: 1,
  WHOAMI: 2,
  AUTH_REFRESH: 3,
  SUBSCRIBE: 4,
  UNSUBSCRIBE: 5,
  SERVER_INFO: 6,
  MONITOR_CREATE: 100,
  MONITOR_GET: 101,
  MONITOR_LIST: 102,
  MONITOR_UPDATE: 103,
  MONITOR_DELETE: 104,
  MONITOR_PAUSE: 105,
  MONITOR_RESUME: 106,
  MONITOR_CHECK_NOW: 107,
  CHECK_HISTORY: 200,
  STATS_UPTIME: 210,
  STATS_LATENCY: 211,
  STATUS_SUMMARY: 212,
  INCIDENT_LIST: 300,
  INCIDENT_GET: 301,
  INCIDENT_ACK: 302,
  INCIDENT_RESOLVE: 303,
  TENANT_LIST: 711,
  EVENT_MONITOR_STATUS: 900,
  EVENT_CHECK_RESULT: 901,
  EVENT_MONITOR_CHANGED: 902,
  EVENT_INCIDENT: 903,
  EVENT_AUTH_EXPIRING: 904,
  EVENT_ROLE_CHANGED: 905,
});

export const RSP = Object.freeze({
  OK: 0,
  ERROR: 1,
  INVALID_DATA: 2,
  PERMISSION_DENIED: 3,
  NOT_FOUND: 4,
  CONFLICT: 5,
  UNKNOWN_PKG_ID: 6,
  RATE_LIMITED: 7,
  UNAUTHENTICATED: 8,
  TIMEOUT: 9,
  UNAVAILABLE: 10,
});

const RSP_NAMES = Object.fromEntries(Object.entries(RSP).map(([k, v]) => [v, k]));

export const Close = Object.freeze({
  NORMAL: 1000,
  GOING_AWAY: 1001,
  MESSAGE_TOO_BIG: 1009,
  INTERNAL_ERROR: 1011,
  TRY_AGAIN_LATER: 1013,
  AUTH_FAILED: 4001,
  NOT_A_MEMBER: 4003,
  TOO_MANY_CONNECTIONS: 4008,
  SLOW_CONSUMER: 4009,
  TOKEN_EXPIRED: 4010,
});

// Connection states reported to onState listeners.
export const State = Object.freeze({
  IDLE: "idle", // constructed, connect() not called yet
  CONNECTING: "connecting", // socket opening
  OPEN: "open", // socket open and subscriptions restored
  RECONNECTING: "reconnecting", // waiting out a backoff delay before the next attempt
  UNAUTHENTICATED: "unauthenticated", // terminal: the token is no good; log in again
  CLOSED: "closed", // terminal: close() was called
});

/**
 * Every failed call rejects with this. `statusCode` is the server's RSPCode
 * (see RSP) or null for local failures, whose `kind` is "timeout",
 * "disconnected" or "closed". `retryAfterMs` is set for RATE_LIMITED.
 */
export class WatchpostError extends Error {
  constructor(message, { statusCode = null, kind = null, data = null, pkgId = null, reqId = null } = {}) {
    super(message);
    this.name = "WatchpostError";
    this.statusCode = statusCode;
    this.kind = kind ?? (statusCode === null ? "local" : (RSP_NAMES[statusCode] ?? "UNKNOWN").toLowerCase());
    this.data = data;
    this.pkgId = pkgId;
    this.reqId = reqId;
    this.errors = data && Array.isArray(data.errors) ? data.errors : [];
    this.retryAfterMs = data && typeof data.retry_after_ms === "number" ? data.retry_after_ms : null;
  }
}

/** A v4 UUID; crypto.randomUUID only exists in secure contexts, getRandomValues everywhere. */
export function uuid4() {
  if (globalThis.crypto && typeof globalThis.crypto.randomUUID === "function") {
    return globalThis.crypto.randomUUID();
  }
  const b = new Uint8Array(16);
  globalThis.crypto.getRandomValues(b);
  b[6] = (b[6] & 0x0f) | 0x40;
  b[8] = (b[8] & 0x3f) | 0x80;
  const h = Array.from(b, (x) => x.toString(16).padStart(2, "0")).join("");
  return `${h.slice(0, 8)}-${h.slice(8, 12)}-${h.slice(12, 16)}-${h.slice(16, 20)}-${h.slice(20)}`;
}

/**
 * Full-jitter exponential backoff: a uniform delay in [0, min(cap, base * 2^attempt)].
 * Spreading reconnects uniformly keeps a restarted server from being hit by
 * every dashboard in the same instant.
 */
export function backoffDelay(attempt, baseMs = 500, capMs = 20000, random = Math.random) {
  const ceiling = Math.min(capMs, baseMs * 2 ** Math.min(attempt, 30));
  return Math.floor(random() * ceiling);
}

/** Turns "/web" or "wss://host/web" into an absolute ws(s) URL with the tenant query parameter. */
export function socketUrl(url, tenant) {
  const base = globalThis.location ? globalThis.location.href : "http://127.0.0.1/";
  const u = new URL(url, base);
  if (u.protocol === "http:") u.protocol = "ws:";
  if (u.protocol === "https:") u.protocol = "wss:";
  if (tenant) u.searchParams.set("tenant", tenant);
  else u.searchParams.delete("tenant");
  return u.toString();
}

// Close codes after which reconnecting with the same token cannot succeed.
const AUTH_CLOSE_CODES = new Set([Close.AUTH_FAILED, Close.TOKEN_EXPIRED, Close.NOT_A_MEMBER]);
// A connection that lived at least this long counts as healthy: the backoff starts over.
const STABLE_AFTER_MS = 5000;

export class WatchpostClient {
  /**
   * @param {object} opts
   * @param {string} [opts.url="/web"] endpoint; relative URLs resolve against the page.
   * @param {() => string|Promise<string>} opts.getToken returns the current access token; called
   *   before every connect, so it may refresh an expired token first.
   * @param {() => Promise<string|null>} [opts.refreshToken] hook that obtains a fresh access token
   *   (e.g. POST /refresh); called on EVENT_AUTH_EXPIRING (904) and once after an auth close.
   * @param {string} [opts.tenant] tenant slug, sent as ?tenant=.
   * @param {number} [opts.requestTimeoutMs=15000] default per-call deadline.
   * @param {number} [opts.backoffBaseMs=500] first backoff ceiling.
   * @param {number} [opts.backoffMaxMs=20000] largest backoff ceiling.
   * @param {number} [opts.heartbeatMs=30000] send PING after this long without traffic (0 disables).
   * @param {typeof WebSocket} [opts.WebSocket] constructor to use (tests, other runtimes).
   */
  constructor(opts = {}) {
    if (typeof opts.getToken !== "function") throw new TypeError("WatchpostClient needs getToken()");
    this.url = opts.url ?? "/web";
    this.tenant = opts.tenant ?? null;
    this.getToken = opts.getToken;
    this.refreshToken = opts.refreshToken ?? null;
    this.requestTimeoutMs = opts.requestTimeoutMs ?? 15000;
    this.backoffBaseMs = opts.backoffBaseMs ?? 500;
    this.backoffMaxMs = opts.backoffMaxMs ?? 20000;
    this.heartbeatMs = opts.heartbeatMs ?? 30000;
    this.WebSocket = opts.WebSocket ?? globalThis.WebSocket;

    this.state = State.IDLE;
    this.ws = null;
    this.attempt = 0; // consecutive failed attempts, drives the backoff
    this.openedAt = 0;
    this.lastClose = null; // {code, reason} of the previous socket
    this.pending = new Map(); // req_id -> {resolve, reject, timer, pkgId}
    this.waitingForOpen = []; // sends queued while not connected
    this.topics = new Map(); // topic -> {lastSeq, handlers:Set, synced, buffer}
    this.stateListeners = new Set();
    this.eventListeners = new Set();
    this.reconnectTimer = null;
    this.heartbeatTimer = null;
    this.lastTraffic = 0;
    this.authRetried = false; // one refresh attempt per auth close, so a bad token cannot loop
    this.refreshing = null; // in-flight refresh promise, shared by concurrent triggers
    this.generation = 0; // bumps on every connect attempt; stale async steps check it

    this._onOnline = () => {
      if (this.state === State.RECONNECTING) this._connectNow();
    };
    if (globalThis.addEventListener) globalThis.addEventListener("online", this._onOnline);
  }

  // ---- public API -------------------------------------------------------

  /**
   * Listen for state changes: fn(state, info), info = {code, reason, delayMs, attempt}.
   * Returns an unsubscribe function.
   */
  onState(fn) {
    this.stateListeners.add(fn);
    return () => this.stateListeners.delete(fn);
  }

  /** Listen for every event frame (any topic, including 904): fn(event). Returns an unsubscribe function. */
  onEvent(fn) {
    this.eventListeners.add(fn);
    return () => this.eventListeners.delete(fn);
  }

  /** Opens the connection (and keeps it open until close()). Resolves on the first successful open. */
  connect() {
    if (this.state === State.CLOSED) throw new Error("this client was closed; create a new one");
    const opened = new Promise((resolve, reject) => {
      const off = this.onState((state, info) => {
        if (state === State.OPEN) {
          off();
          resolve();
        } else if (state === State.UNAUTHENTICATED || state === State.CLOSED) {
          off();
          reject(new WatchpostError(`connection ${state} (close code ${info.code ?? "none"})`, { kind: state }));
        }
      });
    });
    if (this.state === State.IDLE || this.state === State.UNAUTHENTICATED) this._connectNow();
    return opened;
  }

  /** Switches tenant: the next connection carries ?tenant=slug. Subscriptions start over. */
  setTenant(slug) {
    this.tenant = slug || null;
    for (const t of this.topics.values()) t.lastSeq = null;
    this.reconnect();
  }

  /** Drops the current socket and connects again at once (keeps subscriptions and their seqs). */
  reconnect() {
    this.attempt = 0;
    this.authRetried = false;
    this._dropSocket(Close.NORMAL, "client reconnect");
    this._connectNow();
  }

  /** Closes for good: rejects pending calls, stops reconnecting. */
  close() {
    this._setState(State.CLOSED, { code: Close.NORMAL });
    clearTimeout(this.reconnectTimer);
    this._dropSocket(Close.NORMAL, "client closed");
    this._failQueued("closed", "the client was closed");
    if (globalThis.removeEventListener) globalThis.removeEventListener("online", this._onOnline);
  }

  /**
   * Sends one request and resolves with the full response {data, meta, statusCode}.
   * Rejects with WatchpostError on a non-zero status, on timeout, or if the
   * socket drops before the answer (the server may or may not have acted).
   * While disconnected the request waits for the next open within its timeout.
   */
  request(pkgId, data = {}, { timeoutMs } = {}) {
    if (this.state === State.CLOSED || this.state === State.UNAUTHENTICATED) {
      return Promise.reject(
        new WatchpostError(`cannot send: connection is ${this.state}`, { kind: "closed", pkgId }),
      );
    }
    const reqId = uuid4();
    const frame = JSON.stringify({ pkg_id: pkgId, req_id: reqId, data });
    return new Promise((resolve, reject) => {
      const ms = timeoutMs ?? this.requestTimeoutMs;
      const timer = setTimeout(() => {
        this.pending.delete(reqId);
        this.waitingForOpen = this.waitingForOpen.filter((q) => q.reqId !== reqId);
        reject(new WatchpostError(`no answer to package ${pkgId} within ${ms} ms`, { kind: "timeout", pkgId, reqId }));
      }, ms);
      const entry = { resolve, reject, timer, pkgId };
      this.pending.set(reqId, entry);
      if (this._isOpenSocket()) {
        this._send(frame);
      } else {
        this.waitingForOpen.push({ reqId, frame });
      }
    });
  }

  /** Like request() but resolves with the response's data only. */
  async call(pkgId, data = {}, opts = {}) {
    const res = await this.request(pkgId, data, opts);
    return res.data;
  }

  /**
   * Subscribes to topics. `handler` is either a function(event) or
   * {onEvent(event), onReset(topic, info)}. onEvent receives each event once,
   * in seq order, including events replayed after a reconnect. onReset means
   * events were lost (history no longer covers the gap, or a seq gap was
   * seen): reload that topic's state from the server. Returns an unsubscribe
   * function. Subscriptions survive reconnects.
   */
  subscribe(topics, handler) {
    const h = typeof handler === "function" ? { onEvent: handler } : handler;
    const fresh = [];
    for (const topic of topics) {
      let t = this.topics.get(topic);
      if (!t) {
        t = { lastSeq: null, handlers: new Set(), synced: false, buffer: [] };
        this.topics.set(topic, t);
        fresh.push(topic);
      }
      t.handlers.add(h);
    }
    if (fresh.length && this._isOpenSocket()) {
      const ws = this.ws;
      this._sendSubscribe(fresh).catch((err) => this._subscribeFailed(ws, fresh, err));
    }
    return () => {
      const gone = [];
      for (const topic of topics) {
        const t = this.topics.get(topic);
        if (!t) continue;
        t.handlers.delete(h);
        if (t.handlers.size === 0) {
          this.topics.delete(topic);
          gone.push(topic);
        }
      }
      if (gone.length && this._isOpenSocket()) {
        this.call(Pkg.UNSUBSCRIBE, { topics: gone }).catch(() => {});
      }
    };
  }

  /** Last seq seen per topic (what the next reconnect will send as `since`). */
  positions() {
    const out = {};
    for (const [topic, t] of this.topics) if (t.lastSeq !== null) out[topic] = t.lastSeq;
    return out;
  }

  /**
   * Refreshes the token in-band: asks the refreshToken hook for a new access
   * token and sends AUTH_REFRESH (3). Concurrent triggers share one refresh.
   */
  refreshNow() {
    if (!this.refreshToken) return Promise.resolve(false);
    if (!this.refreshing) {
      this.refreshing = (async () => {
        try {
          const token = await this.refreshToken();
          if (!token) return false;
          if (this._isOpenSocket()) await this.call(Pkg.AUTH_REFRESH, { token });
          return true;
        } finally {
          this.refreshing = null;
        }
      })();
    }
    return this.refreshing;
  }

  // ---- connection lifecycle ------------------------------------------------

  async _connectNow() {
    clearTimeout(this.reconnectTimer);
    this.reconnectTimer = null;
    if (this.state === State.CLOSED) return;
    this._dropSocket(Close.NORMAL, "replaced");
    // A newer attempt (reconnect(), setTenant()) supersedes this one while getToken() is pending.
    const generation = ++this.generation;
    this._setState(State.CONNECTING, { attempt: this.attempt });
    let token;
    try {
      token = await this.getToken();
    } catch (err) {
      token = null;
    }
    if (generation !== this.generation || this.state === State.CLOSED) return;
    if (!token) {
      this._setState(State.UNAUTHENTICATED, { code: null, reason: "no token" });
      return;
    }
    let ws;
    try {
      ws = new this.WebSocket(socketUrl(this.url, this.tenant), [PROTOCOL, `bearer.${token}`]);
    } catch (err) {
      this._scheduleReconnect({ code: null, reason: String(err) });
      return;
    }
    this.ws = ws;
    ws.onopen = () => {
      if (ws !== this.ws) return;
      this.openedAt = Date.now();
      this.lastTraffic = Date.now();
      this._restore();
    };
    ws.onmessage = (ev) => {
      if (ws !== this.ws) return;
      this.lastTraffic = Date.now();
      this._onFrame(ev.data);
    };
    ws.onclose = (ev) => {
      if (ws !== this.ws) return;
      this.ws = null;
      this._onClose(ev.code, ev.reason);
    };
    ws.onerror = () => {
      // Always followed by a close event, which carries the code we act on.
    };
  }

  /** After open: restore subscriptions (with since), then flush queued calls and report OPEN. */
  async _restore() {
    const ws = this.ws;
    // Queued calls go out first: the server handles requests concurrently anyway.
    const queued = this.waitingForOpen;
    this.waitingForOpen = [];
    for (const q of queued) if (this.pending.has(q.reqId)) this._send(q.frame);
    const topics = [...this.topics.keys()];
    if (topics.length) {
      try {
        await this._sendSubscribe(topics);
      } catch (err) {
        this._subscribeFailed(ws, topics, err);
      }
    }
    if (ws !== this.ws) return;
    this.authRetried = false;
    this._setState(State.OPEN, {});
    this._armHeartbeat();
  }

  _onClose(code, reason) {
    clearTimeout(this.heartbeatTimer);
    this.lastClose = { code, reason };
    for (const t of this.topics.values()) {
      t.synced = false;
      t.buffer = [];
    }
    this._failPending("disconnected", `connection closed (code ${code}) before the answer arrived`);
    if (this.state === State.CLOSED) return;
    if (this.openedAt && Date.now() - this.openedAt >= STABLE_AFTER_MS) this.attempt = 0;
    this.openedAt = 0;

    if (AUTH_CLOSE_CODES.has(code)) {
      // One refresh attempt: the access token may simply have expired while we were away.
      if (code !== Close.NOT_A_MEMBER && this.refreshToken && !this.authRetried) {
        this.authRetried = true;
        this._setState(State.RECONNECTING, { code, reason, delayMs: 0, attempt: this.attempt });
        Promise.resolve()
          .then(() => this.refreshToken())
          .then(
            (token) => {
              if (this.state === State.CLOSED) return;
              if (token) this._connectNow();
              else this._setState(State.UNAUTHENTICATED, { code, reason });
            },
            () => this._setState(State.UNAUTHENTICATED, { code, reason }),
          );
        return;
      }
      this._failQueued("closed", `authentication failed (close code ${code})`);
      this._setState(State.UNAUTHENTICATED, { code, reason });
      return;
    }
    if (code === Close.SLOW_CONSUMER) {
      // We fell behind and the server dropped events it had queued for us; history
      // may still cover them, but the caller is told so it can reload if it wants.
      for (const listener of this.stateListeners) this._safe(listener, "lagged", { code, reason });
    }
    this._scheduleReconnect({ code, reason });
  }

  _scheduleReconnect(info) {
    const delayMs = backoffDelay(this.attempt, this.backoffBaseMs, this.backoffMaxMs);
    this.attempt += 1;
    this._setState(State.RECONNECTING, { ...info, delayMs, attempt: this.attempt });
    clearTimeout(this.reconnectTimer);
    this.reconnectTimer = setTimeout(() => this._connectNow(), delayMs);
  }

  _dropSocket(code, reason) {
    const ws = this.ws;
    this.ws = null;
    clearTimeout(this.heartbeatTimer);
    if (!ws) return;
    ws.onopen = ws.onmessage = ws.onclose = ws.onerror = null;
    try {
      ws.close(code, reason);
    } catch (err) {
      // Already closing; nothing to do.
    }
    for (const t of this.topics.values()) {
      t.synced = false;
      t.buffer = [];
    }
    this._failPending("disconnected", "connection replaced before the answer arrived");
  }

  _armHeartbeat() {
    clearTimeout(this.heartbeatTimer);
    if (!this.heartbeatMs) return;
    const ws = this.ws;
    const tick = async () => {
      if (ws !== this.ws) return;
      const idle = Date.now() - this.lastTraffic;
      if (idle >= this.heartbeatMs) {
        try {
          await this.call(Pkg.PING, {}, { timeoutMs: 10000 });
        } catch (err) {
          if (ws === this.ws && err.kind === "timeout") {
            // The link is dead but the browser has not noticed; do not wait for TCP to time out.
            this._dropSocket(Close.NORMAL, "heartbeat timeout");
            this._onClose(1006, "heartbeat timeout");
            return;
          }
        }
      }
      if (ws === this.ws) this.heartbeatTimer = setTimeout(tick, Math.max(1000, this.heartbeatMs / 2));
    };
    this.heartbeatTimer = setTimeout(tick, Math.max(1000, this.heartbeatMs / 2));
  }

  // ---- frames ----------------------------------------------------------------

  _isOpenSocket() {
    return this.ws !== null && this.ws.readyState === 1;
  }

  _send(frame) {
    try {
      this.ws.send(frame);
    } catch (err) {
      // The close event follows and fails the pending call.
    }
  }

  _onFrame(text) {
    let msg;
    try {
      msg = JSON.parse(text);
    } catch (err) {
      console.warn("watchpost: ignoring a frame that is not JSON");
      return;
    }
    if (msg.req_id) {
      const entry = this.pending.get(msg.req_id);
      if (!entry) return; // answer to a call that already timed out
      this.pending.delete(msg.req_id);
      clearTimeout(entry.timer);
      if (msg.status_code === RSP.OK) {
        entry.resolve({ data: msg.data, meta: msg.meta ?? null, statusCode: 0 });
      } else {
        const text = (msg.data && msg.data.msg) || RSP_NAMES[msg.status_code] || "request failed";
        entry.reject(
          new WatchpostError(text, {
            statusCode: msg.status_code,
            data: msg.data,
            pkgId: msg.pkg_id,
            reqId: msg.req_id,
          }),
        );
      }
      return;
    }
    if (msg.pkg_id === Pkg.EVENT_AUTH_EXPIRING) {
      this._emit(msg);
      this.refreshNow().catch((err) => console.warn("watchpost: token refresh failed", err));
      return;
    }
    if (msg.pkg_id === Pkg.EVENT_ROLE_CHANGED) {
      // An admin changed this member's role; the server already dropped the topics it may no
      // longer read. Forget them (a reconnect would be refused on them) and tell listeners.
      const dropped = (msg.data && msg.data.dropped_topics) || [];
      for (const topic of dropped) this.topics.delete(topic);
      this._emit(msg);
      return;
    }
    if (typeof msg.topic === "string") {
      this._onEvent(msg);
      return;
    }
    // An answer with req_id null: the server could not read one of our frames.
    if (msg.status_code) console.warn("watchpost: server rejected a frame:", msg.data && msg.data.msg);
  }

  _onEvent(msg) {
    const t = this.topics.get(msg.topic);
    if (!t) {
      this._emit(msg);
      return;
    }
    if (!t.synced) {
      // Between SUBSCRIBE and its answer: hold events until we know where the topic stands.
      t.buffer.push(msg);
      return;
    }
    this._deliver(msg.topic, t, msg);
  }

  _deliver(topic, t, msg) {
    const seq = typeof msg.seq === "number" ? msg.seq : null;
    if (seq !== null && t.lastSeq !== null) {
      if (seq <= t.lastSeq) return; // duplicate (replay overlapping live delivery)
      if (seq > t.lastSeq + 1) {
        const expected = t.lastSeq + 1;
        t.lastSeq = seq;
        // Handlers start a reload here; the event is still delivered below, and a
        // reload applies events that arrive while it is in flight on top of its answer.
        this._reset(topic, t, { reason: "gap", expected, got: seq });
      }
    }
    if (seq !== null) t.lastSeq = seq;
    const ev = { pkgId: msg.pkg_id, topic, seq, data: msg.data, raw: msg };
    this._emit(msg);
    for (const h of t.handlers) if (h.onEvent) this._safe(h.onEvent, ev);
  }

  _reset(topic, t, info) {
    for (const h of t.handlers) if (h.onReset) this._safe(h.onReset, topic, info);
  }

  /**
   * A SUBSCRIBE was refused or got no answer. Refused (unknown topic, role too low): those
   * topics stay registered but are treated as synced, so nothing piles up, and handlers get
   * onReset with reason "refused". Anything else (timeout, server busy): this socket cannot be
   * trusted to deliver, so it is dropped and the normal reconnect path tries again.
   */
  _subscribeFailed(ws, topics, err) {
    if (ws !== this.ws) return; // the socket dropped meanwhile; the close handler reconnects
    if (err && (err.statusCode === RSP.INVALID_DATA || err.statusCode === RSP.PERMISSION_DENIED)) {
      if (topics.length > 1) {
        // The server refuses the whole call for one bad topic: find it by asking one at a time.
        for (const topic of topics) {
          this._sendSubscribe([topic]).catch((e) => this._subscribeFailed(ws, [topic], e));
        }
        return;
      }
      console.warn("watchpost: subscription refused:", err.message);
      for (const topic of topics) {
        const t = this.topics.get(topic);
        if (!t) continue;
        t.synced = true;
        t.buffer = [];
        this._reset(topic, t, { reason: "refused", message: err.message });
      }
      return;
    }
    this._dropSocket(Close.NORMAL, "subscribe failed");
    this._onClose(1006, `subscribe failed: ${err && err.message}`);
  }

  /** SUBSCRIBE (4) for topics, with `since` where we have a position; then drain buffered events. */
  async _sendSubscribe(topics) {
    const since = {};
    for (const topic of topics) {
      const t = this.topics.get(topic);
      if (t) {
        t.synced = false;
        if (t.lastSeq !== null) since[topic] = t.lastSeq;
      }
    }
    const data = { topics };
    if (Object.keys(since).length) data.since = since;
    const res = await this.call(Pkg.SUBSCRIBE, data);
    const status = parseSubscribeAnswer(res, topics);
    for (const topic of topics) {
      const t = this.topics.get(topic);
      if (!t) continue;
      const st = status[topic] ?? { seq: null, recovered: null };
      const had = t.lastSeq;
      const buffered = t.buffer;
      t.buffer = [];
      t.synced = true;
      if (had !== null && st.recovered === false) {
        // History no longer covers the gap: start from the server's position and reload.
        t.lastSeq = st.seq;
        this._reset(topic, t, { reason: "not recovered", since: had, seq: st.seq });
      } else if (had === null) {
        // First subscription: live from the server's current position.
        t.lastSeq = st.seq;
      }
      buffered.sort((a, b) => (a.seq ?? 0) - (b.seq ?? 0));
      for (const msg of buffered) this._deliver(topic, t, msg);
    }
    return status;
  }

  // ---- helpers -----------------------------------------------------------------

  _failPending(kind, message) {
    for (const [reqId, entry] of this.pending) {
      if (this.waitingForOpen.some((q) => q.reqId === reqId)) continue; // not sent yet: keep waiting
      clearTimeout(entry.timer);
      this.pending.delete(reqId);
      entry.reject(new WatchpostError(message, { kind, pkgId: entry.pkgId, reqId }));
    }
  }

  _failQueued(kind, message) {
    for (const q of this.waitingForOpen) {
      const entry = this.pending.get(q.reqId);
      if (!entry) continue;
      clearTimeout(entry.timer);
      this.pending.delete(q.reqId);
      entry.reject(new WatchpostError(message, { kind, pkgId: entry.pkgId, reqId: q.reqId }));
    }
    this.waitingForOpen = [];
    this._failPending(kind, message);
  }

  _setState(state, info) {
    this.state = state;
    for (const fn of this.stateListeners) this._safe(fn, state, info);
  }

  _emit(msg) {
    for (const fn of this.eventListeners) this._safe(fn, msg);
  }

  _safe(fn, ...args) {
    try {
      fn(...args);
    } catch (err) {
      console.error("watchpost: listener failed", err);
    }
  }
}

/**
 * Normalises the SUBSCRIBE answer to {topic: {seq, recovered}}. Accepts the
 * server's per-topic map either at the top level or under `topics`, with each
 * entry an object ({seq, recovered}) or a bare seq number.
 */
export function parseSubscribeAnswer(data, topics) {
  const out = {};
  if (!data || typeof data !== "object") return out;
  let table = data.topics && !Array.isArray(data.topics) ? data.topics : data;
  if (Array.isArray(data.topics)) {
    table = {};
    for (const row of data.topics) if (row && row.topic) table[row.topic] = row;
  } else if (Array.isArray(data)) {
    table = {};
    for (const row of data) if (row && row.topic) table[row.topic] = row;
  }
  for (const topic of topics) {
    const v = table[topic];
    if (v === undefined || v === null) continue;
    if (typeof v === "number") out[topic] = { seq: v, recovered: null };
    else out[topic] = { seq: typeof v.seq === "number" ? v.seq : null, recovered: v.recovered ?? null };
  }
  return out;
}
