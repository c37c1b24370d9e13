// Watchpost dashboard: log in, open one WebSocket, load a compact summary,
// then live on deltas (900/901/902/903). No build step; plain ES modules.

import { Pkg, RSP, State, WatchpostClient, WatchpostError } from "./wp-client.js";

// ---- constants -------------------------------------------------------------------

const ROW_HEIGHT = 44; // px; must match .monitor-row height in style.css (the list is virtualised)
const OVERSCAN = 8; // rows rendered above and below the viewport so fast scrolls do not flash
const MIN_PAINT_INTERVAL_MS = 250; // data-driven repaints are coalesced to at most ~4 per second
const SUMMARY_REFRESH_MS = 60000; // latency and uptime between state changes come from a periodic summary
const SUMMARY_SETTLE_MS = 3000; // quiet summary refresh this long after the last state change…
const SUMMARY_SETTLE_MIN_MS = 15000; // …but no more often than this
const HISTORY_LIMIT = 100; // results shown in the detail view
const AUTH_KEY = "watchpost.auth";
const TENANT_KEY = "watchpost.tenant";
const EDIT_ROLES = new Set(["editor", "admin", "owner"]);
// Sort order for the status view: what needs attention first.
const STATE_RANK = { down: 0, degraded: 1, pending: 2, maintenance: 3, paused: 4, up: 5 };
const STATES = ["up", "down", "degraded", "pending", "maintenance", "paused"];

// ---- small DOM helpers -------------------------------------------------------------

const $ = (sel, root = document) => root.querySelector(sel);

function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (v === null || v === undefined || v === false) continue;
    if (k === "class") node.className = v;
    else if (k === "text") node.textContent = v;
    else if (k.startsWith("on")) node.addEventListener(k.slice(2), v);
    else if (k === "dataset") Object.assign(node.dataset, v);
    else node.setAttribute(k, v === true ? "" : v);
  }
  for (const c of children.flat(Infinity)) if (c !== null && c !== undefined && c !== false) node.append(c);
  return node;
}

function svg(tag, attrs = {}) {
  const node = document.createElementNS("http://www.w3.org/2000/svg", tag);
  for (const [k, v] of Object.entries(attrs)) node.setAttribute(k, v);
  return node;
}

function fmtLatency(ms) {
  if (ms === null || ms === undefined || Number.isNaN(ms)) return "–";
  if (ms >= 1000) return `${(ms / 1000).toFixed(ms >= 10000 ? 0 : 1)} s`;
  return `${Math.round(ms)} ms`;
}

function fmtUptime(u) {
  if (u === null || u === undefined || Number.isNaN(u)) return "–";
  const pct = u <= 1 ? u * 100 : u; // accept a ratio or a percentage
  return `${pct >= 99.995 ? "100" : pct.toFixed(2)}%`;
}

function toDate(v) {
  if (v === null || v === undefined) return null;
  if (typeof v === "number") return new Date(v < 1e12 ? v * 1000 : v);
  const d = new Date(v);
  return Number.isNaN(d.getTime()) ? null : d;
}

function fmtTime(v) {
  const d = toDate(v);
  return d ? d.toLocaleString() : "–";
}

/** Time of day for today's timestamps, date and time otherwise. */
function fmtClock(v) {
  const d = toDate(v);
  if (!d) return "–";
  return d.toDateString() === new Date().toDateString() ? d.toLocaleTimeString() : d.toLocaleString();
}

/** "user:alice" / "token:7" / {username} -> something a person reads. */
function actorName(who) {
  if (who && typeof who === "object") return who.username ?? who.name ?? "someone";
  return String(who).replace(/^user:/, "");
}

function fmtAgo(v) {
  const d = toDate(v);
  if (!d) return "–";
  const s = Math.max(0, Math.round((Date.now() - d.getTime()) / 1000));
  if (s < 60) return `${s}s ago`;
  if (s < 3600) return `${Math.floor(s / 60)}m ago`;
  if (s < 86400) return `${Math.floor(s / 3600)}h ${Math.floor((s % 3600) / 60)}m ago`;
  return `${Math.floor(s / 86400)}d ago`;
}

function fmtDuration(seconds) {
  if (seconds === null || seconds === undefined) return "–";
  const s = Math.round(seconds);
  if (s < 60) return `${s}s`;
  if (s < 3600) return `${Math.floor(s / 60)}m ${s % 60}s`;
  return `${Math.floor(s / 3600)}h ${Math.floor((s % 3600) / 60)}m`;
}

let toastTimer = null;
function toast(message, kind = "info") {
  const box = $("#toast");
  box.textContent = message;
  box.dataset.kind = kind;
  box.hidden = false;
  clearTimeout(toastTimer);
  toastTimer = setTimeout(() => (box.hidden = true), kind === "error" ? 8000 : 4000);
}

function errorText(err) {
  if (err instanceof WatchpostError) {
    const details = err.errors
      .filter((e) => !err.message.includes(e.msg)) // the summary often already says it
      .map((e) => `${e.path ?? ""}: ${e.msg}`)
      .join("; ");
    return details ? `${err.message} (${details})` : err.message;
  }
  return String(err && err.message ? err.message : err);
}

// ---- auth: tokens live in sessionStorage (per tab, gone when the tab closes) ----------------

const auth = {
  tokens: null, // {access_token, refresh_token, expires_at (ms)}
  refreshing: null,

  load() {
    try {
      this.tokens = JSON.parse(sessionStorage.getItem(AUTH_KEY) || "null");
    } catch {
      this.tokens = null;
    }
    return this.tokens;
  },

  store(body) {
    const expiresIn = Number(body.expires_in) || 900;
    this.tokens = {
      access_token: body.access_token,
      refresh_token: body.refresh_token ?? this.tokens?.refresh_token ?? null,
      expires_at: Date.now() + expiresIn * 1000,
    };
    sessionStorage.setItem(AUTH_KEY, JSON.stringify(this.tokens));
  },

  clear() {
    this.tokens = null;
    sessionStorage.removeItem(AUTH_KEY);
  },

  async login(username, password) {
    const res = await fetch("/login", {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: JSON.stringify({ username, password }),
    });
    const body = await res.json().catch(() => ({}));
    if (!res.ok) {
      throw new Error(body.msg || body.detail || body.error || `login failed (HTTP ${res.status})`);
    }
    this.store(body);
  },

  /** Exchanges the refresh token for a new access token; null when the session is over. */
  refresh() {
    if (!this.tokens?.refresh_token) return Promise.resolve(null);
    if (!this.refreshing) {
      this.refreshing = (async () => {
        try {
          const post = () =>
            fetch("/refresh", {
              method: "POST",
              headers: { "content-type": "application/json" },
              body: JSON.stringify({ refresh_token: this.tokens.refresh_token }),
            });
          let res = await post();
          if (res.status === 429) {
            // Rate limited: wait as told (bounded) and try once more before giving up.
            const body = await res.json().catch(() => ({}));
            await new Promise((r) => setTimeout(r, Math.min(Number(body.retry_after_ms) || 1000, 5000)));
            if (!this.tokens) return null;
            res = await post();
          }
          if (!res.ok) {
            if (res.status === 400 || res.status === 401 || res.status === 403) this.clear();
            return null;
          }
          this.store(await res.json());
          return this.tokens.access_token;
        } catch {
          return null; // network down: the reconnect loop tries again later
        } finally {
          this.refreshing = null;
        }
      })();
    }
    return this.refreshing;
  },

  /** The token to connect with, refreshed first when it is about to expire. */
  async accessToken() {
    if (!this.tokens) return null;
    if (this.tokens.expires_at - Date.now() < 15000 && this.tokens.refresh_token) {
      const fresh = await this.refresh();
      if (fresh) return fresh;
      if (!this.tokens) return null;
    }
    return this.tokens.access_token;
  },

  async logout() {
    const refresh = this.tokens?.refresh_token;
    this.clear();
    if (refresh) {
      await fetch("/logout", {
        method: "POST",
        headers: { "content-type": "application/json" },
        body: JSON.stringify({ refresh_token: refresh }),
      }).catch(() => {});
    }
  },
};

// ---- model ----------------------------------------------------------------------------

const model = {
  me: null, // WHOAMI answer
  canEdit: false,
  tenants: [],
  tenant: null, // slug the socket is bound to (null: the server's default)
  monitors: new Map(), // id -> row (summary fields merged with event fields)
  incidents: new Map(), // id -> open incident
  loaded: false,
  // While a summary/incident reload is in flight, events are also recorded here and
  // re-applied on top of the answer, so nothing that happened meanwhile is lost.
  monitorReload: null,
  incidentReload: null,
  view: { text: "", state: "", sort: "status" },
  order: [], // ids after filter + sort
  detail: null, // {id, monitor, history, stats, unsubscribe}
};

function monitorId(d) {
  return d?.monitor_id ?? d?.monitor?.id ?? d?.id ?? null;
}

/** Normalises a summary or monitor object into the fields the list shows. */
function mergeMonitor(base, src) {
  const m = base ? { ...base } : { id: src.id };
  for (const k of ["name", "kind", "url", "host", "port", "tags", "interval", "enabled", "version"]) {
    if (src[k] !== undefined) m[k] = src[k];
  }
  const state = src.state ?? src.status;
  if (state !== undefined) m.state = state;
  const latency = src.latency_ms ?? src.last_latency_ms ?? src.last_latency ?? src.latency;
  if (latency !== undefined) m.latency = latency;
  const uptime = src.uptime_24h ?? src.uptime ?? src.uptime24h;
  if (uptime !== undefined) m.uptime = uptime;
  const error = src.error ?? src.last_error;
  if (error !== undefined) m.error = error;
  const checked = src.last_check_at ?? src.checked_at ?? src.last_checked_at ?? src.ts;
  if (checked !== undefined) m.checkedAt = checked;
  return m;
}

function listFrom(data) {
  if (Array.isArray(data)) return data;
  if (!data || typeof data !== "object") return [];
  for (const k of ["monitors", "items", "results", "incidents", "tenants", "rows"]) {
    if (Array.isArray(data[k])) return data[k];
  }
  return [];
}

// ---- repaint scheduling ------------------------------------------------------------------

const dirty = new Set();
let paintPending = false;
let lastPaint = 0;

/** Marks parts of the page stale; they are repainted together, at most every MIN_PAINT_INTERVAL_MS. */
function invalidate(...parts) {
  for (const p of parts) dirty.add(p);
  if (paintPending) return;
  paintPending = true;
  const wait = Math.max(0, MIN_PAINT_INTERVAL_MS - (performance.now() - lastPaint));
  setTimeout(() => requestAnimationFrame(paint), wait);
}

function paint() {
  paintPending = false;
  lastPaint = performance.now();
  const parts = new Set(dirty);
  dirty.clear();
  if (parts.has("order")) computeOrder();
  if (parts.has("order") || parts.has("rows")) paintList(true);
  if (parts.has("order") || parts.has("counts")) paintCounts();
  if (parts.has("incidents")) paintIncidents();
  if (parts.has("detail")) paintDetail();
  if (parts.has("role")) paintRole();
  if (parts.has("tenants")) paintTenants();
}

// ---- the monitor list (virtualised: only rows in view exist in the DOM) -------------------------

const rowCache = new Map(); // id -> {node, sig}

function computeOrder() {
  const text = model.view.text.trim().toLowerCase();
  const state = model.view.state;
  const ids = [];
  for (const m of model.monitors.values()) {
    if (state && m.state !== state) continue;
    if (text) {
      const hay = `${m.name ?? ""} ${m.url ?? ""} ${m.host ?? ""} ${(m.tags ?? []).join(" ")}`.toLowerCase();
      if (!hay.includes(text)) continue;
    }
    ids.push(m);
  }
  const byName = (a, b) => String(a.name ?? "").localeCompare(String(b.name ?? "")) || a.id - b.id;
  if (model.view.sort === "status") {
    ids.sort((a, b) => (STATE_RANK[a.state] ?? 9) - (STATE_RANK[b.state] ?? 9) || byName(a, b));
  } else if (model.view.sort === "latency") {
    ids.sort((a, b) => (b.latency ?? -1) - (a.latency ?? -1) || byName(a, b));
  } else {
    ids.sort(byName);
  }
  model.order = ids.map((m) => m.id);
}

function rowSig(m) {
  return `${m.state}|${m.name}|${m.latency}|${m.uptime}|${m.kind}|${m.error ?? ""}|${m.url ?? ""}${m.host ?? ""}:${m.port ?? ""}`;
}

function buildRow(m) {
  // A down monitor shows why instead of where.
  const where = m.kind === "tcp" && m.host ? `${m.host}:${m.port ?? ""}` : m.kind === "http" ? m.url ?? "" : "";
  const target = m.state === "down" && m.error ? m.error : where;
  return el(
    "div",
    {
      class: "monitor-row",
      role: "row",
      tabindex: "0",
      dataset: { testid: "monitor-row", monitorId: String(m.id), state: m.state ?? "unknown" },
    },
    el("span", { class: `badge state-${m.state ?? "unknown"}`, "data-testid": "monitor-state", text: m.state ?? "?" }),
    el(
      "span",
      { class: "cell name" },
      el("span", { class: "monitor-name", "data-testid": "monitor-name", text: m.name ?? `#${m.id}` }),
      el("span", { class: "target", text: target }),
    ),
    el("span", { class: "cell kind", text: m.kind ?? "" }),
    el("span", { class: "cell num", "data-testid": "monitor-latency", text: fmtLatency(m.latency) }),
    el("span", { class: "cell num", "data-testid": "monitor-uptime", text: fmtUptime(m.uptime) }),
  );
}

function paintList(dataChanged) {
  const viewport = $("#monitor-viewport");
  const rows = $("#monitor-rows");
  const total = model.order.length;
  $("#monitor-spacer").style.height = `${total * ROW_HEIGHT}px`;
  const first = Math.max(0, Math.floor(viewport.scrollTop / ROW_HEIGHT) - OVERSCAN);
  const last = Math.min(total, Math.ceil((viewport.scrollTop + viewport.clientHeight) / ROW_HEIGHT) + OVERSCAN);
  const keep = new Set();
  for (let i = first; i < last; i++) {
    const id = model.order[i];
    const m = model.monitors.get(id);
    if (!m) continue;
    keep.add(id);
    let entry = rowCache.get(id);
    const sig = rowSig(m);
    if (!entry || (dataChanged && entry.sig !== sig)) {
      const node = buildRow(m);
      if (entry) entry.node.replaceWith(node);
      else rows.append(node);
      entry = { node, sig };
      rowCache.set(id, entry);
    }
    entry.node.style.transform = `translateY(${i * ROW_HEIGHT}px)`;
  }
  for (const [id, entry] of rowCache) {
    if (!keep.has(id)) {
      entry.node.remove();
      rowCache.delete(id);
    }
  }
  $("#monitor-empty").hidden = total > 0 || !model.loaded;
  $("#monitor-footer").textContent =
    total === model.monitors.size
      ? `${total} monitor${total === 1 ? "" : "s"}`
      : `${total} of ${model.monitors.size} monitors`;
}

function paintCounts() {
  const counts = Object.fromEntries(STATES.map((s) => [s, 0]));
  for (const m of model.monitors.values()) counts[m.state] = (counts[m.state] ?? 0) + 1;
  const bar = $("#state-counts");
  bar.replaceChildren(
    ...STATES.filter((s) => counts[s] || s === "up" || s === "down").map((s) =>
      el(
        "button",
        {
          type: "button",
          class: `count state-${s}${model.view.state === s ? " active" : ""}`,
          "data-testid": `count-${s}`,
          title: `Show only ${s} monitors`,
          onclick: () => setStateFilter(model.view.state === s ? "" : s),
        },
        el("strong", { text: String(counts[s]) }),
        ` ${s}`,
      ),
    ),
  );
}

function setStateFilter(state) {
  model.view.state = state;
  $("#state-filter").value = state;
  invalidate("order");
}

// ---- incidents -------------------------------------------------------------------------------

function isOpenIncident(i) {
  const status = i.status ?? i.state;
  if (status) return status !== "resolved" && status !== "closed";
  return !i.resolved_at;
}

function incidentAcked(i) {
  return Boolean(i.acknowledged_at ?? i.acked_at ?? i.ack_at ?? i.acknowledged_by ?? i.acked_by);
}

function paintIncidents() {
  const list = $("#incident-list");
  const items = [...model.incidents.values()].sort(
    (a, b) => (toDate(b.opened_at ?? b.started_at)?.getTime() ?? 0) - (toDate(a.opened_at ?? a.started_at)?.getTime() ?? 0),
  );
  $("#incident-count").textContent = String(items.length);
  $("#incident-empty").hidden = items.length > 0;
  list.replaceChildren(
    ...items.slice(0, 200).map((i) => {
      const mid = i.monitor_id ?? (typeof i.monitor === "object" ? i.monitor?.id : undefined);
      // Events carry the monitor's name as `monitor`; list answers may carry an object or nothing.
      const carried = typeof i.monitor === "string" ? i.monitor : i.monitor?.name;
      const name = model.monitors.get(mid)?.name ?? i.monitor_name ?? carried ?? `monitor #${mid}`;
      const acked = incidentAcked(i);
      const opened = i.opened_at ?? i.started_at;
      const who = i.acknowledged_by ?? i.acked_by;
      return el(
        "li",
        {
          class: `incident-row${acked ? " acked" : ""}`,
          dataset: { testid: "incident-row", incidentId: String(i.id), monitorId: String(mid), acked: String(acked) },
        },
        el(
          "div",
          { class: "incident-main" },
          el("button", {
            type: "button",
            class: "link",
            text: name,
            onclick: () => openDetail(mid),
          }),
          el("span", { class: "muted", title: fmtTime(opened), text: ` down ${fmtAgo(opened).replace(" ago", "")} · since ${fmtClock(opened)}` }),
          i.cause || i.message || i.reason
            ? el("div", { class: "incident-cause", text: i.cause ?? i.message ?? i.reason })
            : null,
        ),
        acked
          ? el("span", {
              class: "ack-note",
              "data-testid": "incident-acked",
              text: `acknowledged${who ? ` by ${actorName(who)}` : ""}`,
            })
          : el("button", {
              type: "button",
              class: "btn small editor-only",
              "data-testid": "incident-ack",
              text: "Acknowledge",
              onclick: (ev) => ackIncident(i.id, ev.currentTarget),
            }),
      );
    }),
  );
}

async function ackIncident(id, button) {
  button.disabled = true;
  try {
    const data = await client.call(Pkg.INCIDENT_ACK, { id });
    applyIncident(data && typeof data === "object" && data.id !== undefined ? data : { id, acknowledged_at: Date.now() });
    toast("Incident acknowledged");
  } catch (err) {
    button.disabled = false;
    toast(`Could not acknowledge: ${errorText(err)}`, "error");
  }
}

function applyIncident(inc) {
  if (!inc || inc.id === undefined) return;
  const prev = model.incidents.get(inc.id);
  const merged = { ...(prev ?? {}), ...inc };
  if (isOpenIncident(merged)) model.incidents.set(inc.id, merged);
  else model.incidents.delete(inc.id);
  invalidate("incidents");
}

// ---- loading ------------------------------------------------------------------------------------

/**
 * Loads STATUS_SUMMARY and replaces the monitor table. `reason` "reload" (start-up, lost
 * history) is counted in data-summary-loads; "refresh" (periodic, after state changes) is not.
 */
async function loadSummary(reason = "reload") {
  const reload = { events: [] };
  model.monitorReload = reload;
  try {
    const rows = [];
    let cursor = null;
    // The summary may be paginated by cursor; follow it to the end.
    for (let guard = 0; guard < 1000; guard++) {
      const res = await client.request(Pkg.STATUS_SUMMARY, cursor ? { cursor } : {}, { timeoutMs: 30000 });
      rows.push(...listFrom(res.data));
      cursor = res.meta?.has_more ? res.meta.next_cursor : null;
      if (!cursor) break;
    }
    if (model.monitorReload !== reload) return; // a newer reload superseded this one
    const next = new Map();
    for (const r of rows) {
      const id = r.id ?? r.monitor_id;
      next.set(id, mergeMonitor(model.monitors.get(id) && { ...model.monitors.get(id) }, { ...r, id }));
    }
    model.monitors = next;
    for (const ev of reload.events) applyMonitorEvent(ev, false);
    model.loaded = true;
    if (reason === "reload") {
      // Exposed for tests and support: tells a reload apart from a replay after a reconnect.
      $("#monitor-viewport").dataset.summaryLoads = String(++summaryLoads);
    }
    invalidate("order", "counts");
  } finally {
    if (model.monitorReload === reload) model.monitorReload = null;
  }
}

async function loadIncidents() {
  const reload = { events: [] };
  model.incidentReload = reload;
  try {
    const items = [];
    let page = 1;
    for (let guard = 0; guard < 50; guard++) {
      // "unresolved" = open and acknowledged-but-not-resolved: both belong on the board.
      const res = await client.request(Pkg.INCIDENT_LIST, { state: "unresolved", page, per_page: 200 });
      items.push(...listFrom(res.data));
      if (!res.meta || !res.meta.pages || page >= res.meta.pages) break;
      page += 1;
    }
    if (model.incidentReload !== reload) return;
    model.incidents = new Map();
    for (const i of items) if (isOpenIncident(i)) model.incidents.set(i.id, i);
    for (const ev of reload.events) applyIncident(incidentFromEvent(ev.data));
    invalidate("incidents");
  } finally {
    if (model.incidentReload === reload) model.incidentReload = null;
  }
}

async function loadIdentity() {
  model.me = await client.call(Pkg.WHOAMI, {});
  const roles = model.me?.roles ?? (model.me?.role ? [model.me.role] : []);
  model.canEdit = roles.some((r) => EDIT_ROLES.has(r));
  model.tenant = model.me?.tenant ?? model.tenant;
  try {
    model.tenants = listFrom(await client.call(Pkg.TENANT_LIST, { per_page: 100 }));
  } catch {
    model.tenants = [];
  }
  invalidate("role", "tenants");
}

let summaryLoads = 0;
let reloadAllRunning = null;
let reloadAllAgain = false; // asked again while running (e.g. a tenant switch): run once more after
/** Loads identity, summary and incidents; called after login, tenant switch, 4009 or lost history. */
function reloadAll() {
  if (reloadAllRunning) {
    reloadAllAgain = true;
    return reloadAllRunning;
  }
  reloadAllRunning = Promise.all([loadIdentity(), loadSummary(), loadIncidents()])
    .catch((err) => {
      if (!(err instanceof WatchpostError && err.kind === "disconnected")) {
        toast(`Loading failed: ${errorText(err)}`, "error");
      }
    })
    .finally(() => {
      reloadAllRunning = null;
      if (reloadAllAgain) {
        reloadAllAgain = false;
        reloadAll();
      }
    });
  return reloadAllRunning;
}

let refreshTimer = null;
let lastRefresh = 0;
/**
 * Uptime and latency of every monitor move with each check, but the list only hears about
 * state changes; after a burst of those, refresh the summary quietly (debounced, at most
 * every SUMMARY_SETTLE_MIN_MS) so the numbers next to a changed row are current.
 */
function refreshSummarySoon() {
  clearTimeout(refreshTimer);
  const wait = Math.max(SUMMARY_SETTLE_MS, lastRefresh + SUMMARY_SETTLE_MIN_MS - Date.now());
  refreshTimer = setTimeout(() => {
    lastRefresh = Date.now();
    if (client && client.state === State.OPEN && !model.monitorReload) loadSummary("refresh").catch(() => {});
  }, wait);
}

let summaryReloadTimer = null;
/** Debounced summary reload for events that refer to monitors we do not know yet. */
function reloadSummarySoon() {
  clearTimeout(summaryReloadTimer);
  summaryReloadTimer = setTimeout(() => loadSummary("refresh").catch(() => {}), 500);
}

// ---- live events -----------------------------------------------------------------------------------

function applyMonitorEvent(ev, record = true) {
  if (record && model.monitorReload) model.monitorReload.events.push(ev);
  const d = ev.data ?? {};
  if (ev.pkgId === Pkg.EVENT_MONITOR_STATUS) {
    const id = monitorId(d);
    const m = model.monitors.get(id);
    if (!m) {
      reloadSummarySoon();
      return;
    }
    const state = d.state ?? d.new_state ?? d.to ?? d.status;
    const next = mergeMonitor(m, { ...d, state, id });
    model.monitors.set(id, next);
    invalidate(m.state !== next.state ? "order" : "rows", "counts");
    if (model.detail && model.detail.id === id) invalidate("detail");
    if (record) refreshSummarySoon();
  } else if (ev.pkgId === Pkg.EVENT_MONITOR_CHANGED) {
    const action = d.action ?? d.change ?? d.type;
    const id = monitorId(d);
    if (action === "deleted") {
      model.monitors.delete(id);
      if (model.detail && model.detail.id === id) closeDetail();
    } else {
      const src = d.monitor ?? d;
      const prev = model.monitors.get(id);
      model.monitors.set(id, mergeMonitor(prev, { ...src, id }));
      if (!prev && src.state === undefined) reloadSummarySoon();
      if (model.detail && model.detail.id === id) refreshDetailMonitor();
    }
    invalidate("order", "counts");
  } else if (ev.pkgId === Pkg.EVENT_CHECK_RESULT) {
    applyCheckResult(ev);
  }
}

function incidentFromEvent(d) {
  if (!d) return null;
  const inc = { ...(d.incident ?? d) };
  if (inc.id === undefined && d.incident_id !== undefined) inc.id = d.incident_id;
  const action = d.action ?? d.event ?? d.change;
  if (action === "resolved" && !inc.resolved_at) inc.resolved_at = d.at ?? Date.now();
  if (action === "resolved" && !inc.status) inc.status = "resolved";
  return inc;
}

function applyIncidentEvent(ev) {
  if (model.incidentReload) model.incidentReload.events.push(ev);
  applyIncident(incidentFromEvent(ev.data));
}

function applyCheckResult(ev) {
  const d = ev.data ?? {};
  const result = d.result ?? d;
  const id = monitorId(d) ?? Number(String(ev.topic).split(".")[1]);
  const m = model.monitors.get(id);
  if (m) {
    model.monitors.set(id, mergeMonitor(m, { ...result, state: d.state ?? m.state, id }));
    invalidate("rows");
  }
  if (model.detail && model.detail.id === id) {
    model.detail.history.unshift(result);
    model.detail.history.length = Math.min(model.detail.history.length, HISTORY_LIMIT);
    invalidate("detail");
  }
}

// ---- monitor detail -------------------------------------------------------------------------------

async function openDetail(id) {
  if (id === undefined || id === null) return;
  closeDetail();
  const detail = { id, monitor: null, history: [], stats: null, error: null, unsubscribe: null };
  model.detail = detail;
  detail.unsubscribe = client.subscribe([`monitor.${id}`], {
    onEvent: (ev) => applyMonitorEvent(ev),
    onReset: () => loadDetailHistory(detail),
  });
  $("#detail").hidden = false;
  $("#detail").dataset.monitorId = String(id);
  invalidate("detail");
  await Promise.all([refreshDetailMonitor(), loadDetailHistory(detail), loadDetailStats(detail)]);
}

async function refreshDetailMonitor() {
  const detail = model.detail;
  if (!detail) return;
  try {
    const data = await client.call(Pkg.MONITOR_GET, { id: detail.id });
    if (model.detail !== detail) return;
    detail.monitor = data?.monitor ?? data;
    const known = model.monitors.get(detail.id);
    if (known) model.monitors.set(detail.id, mergeMonitor(known, detail.monitor));
  } catch (err) {
    if (model.detail === detail) detail.error = errorText(err);
  }
  invalidate("detail", "rows");
}

async function loadDetailHistory(detail) {
  try {
    const res = await client.request(Pkg.CHECK_HISTORY, { monitor_id: detail.id, limit: HISTORY_LIMIT });
    if (model.detail !== detail) return;
    const rows = listFrom(res.data);
    // Newest first for the table; the chart sorts by time itself.
    rows.sort((a, b) => (toDate(b.ts ?? b.checked_at ?? b.at)?.getTime() ?? 0) - (toDate(a.ts ?? a.checked_at ?? a.at)?.getTime() ?? 0));
    detail.history = rows.slice(0, HISTORY_LIMIT);
  } catch (err) {
    if (model.detail === detail) detail.error = errorText(err);
  }
  invalidate("detail");
}

async function loadDetailStats(detail) {
  try {
    const d = await client.call(Pkg.STATS_UPTIME, { monitor_id: detail.id, windows: ["24h", "7d", "30d"] });
    const stats = {};
    for (const [name, w] of Object.entries(d?.windows ?? {})) stats[name] = w?.uptime ?? null;
    if (model.detail === detail) detail.stats = stats;
  } catch {
    // Statistics are a nicety in this view; the history still shows.
  }
  invalidate("detail");
}

function closeDetail() {
  const detail = model.detail;
  if (!detail) return;
  model.detail = null;
  if (detail.unsubscribe) detail.unsubscribe();
  $("#detail").hidden = true;
}

function resultOk(r) {
  if (typeof r.ok === "boolean") return r.ok;
  if (typeof r.success === "boolean") return r.success;
  const s = r.status ?? r.state;
  return s === "up" || s === "ok" || s === "success";
}

function resultLatency(r) {
  return r.latency_ms ?? r.latency ?? r.duration_ms ?? null;
}

function latencyChart(history) {
  const W = 640;
  const H = 160;
  const PAD = { l: 58, r: 10, t: 12, b: 22 };
  const pts = history
    .map((r) => ({ t: toDate(r.ts ?? r.checked_at ?? r.at)?.getTime(), v: resultLatency(r), ok: resultOk(r) }))
    .filter((p) => p.t)
    .sort((a, b) => a.t - b.t);
  const root = svg("svg", {
    viewBox: `0 0 ${W} ${H}`,
    class: "chart",
    role: "img",
    "aria-label": "Latency of recent checks",
    "data-testid": "latency-chart",
  });
  if (pts.length === 0) {
    const t = svg("text", { x: W / 2, y: H / 2, "text-anchor": "middle", class: "chart-empty" });
    t.textContent = "No results yet";
    root.append(t);
    return root;
  }
  const t0 = pts[0].t;
  const t1 = Math.max(pts[pts.length - 1].t, t0 + 1);
  const vmax = Math.max(10, ...pts.map((p) => p.v ?? 0)) * 1.1;
  const x = (t) => PAD.l + ((t - t0) / (t1 - t0)) * (W - PAD.l - PAD.r);
  const y = (v) => H - PAD.b - (v / vmax) * (H - PAD.t - PAD.b);
  for (const frac of [0, 0.5, 1]) {
    const v = vmax * frac;
    root.append(svg("line", { x1: PAD.l, x2: W - PAD.r, y1: y(v), y2: y(v), class: "grid" }));
    const label = svg("text", { x: PAD.l - 6, y: y(v) + 4, "text-anchor": "end", class: "axis" });
    label.textContent = fmtLatency(v);
    root.append(label);
  }
  for (const [t, anchor] of [
    [t0, "start"],
    [t1, "end"],
  ]) {
    const label = svg("text", { x: x(t), y: H - 6, "text-anchor": anchor, class: "axis" });
    label.textContent = new Date(t).toLocaleTimeString();
    root.append(label);
  }
  const line = pts.filter((p) => p.v !== null && p.v !== undefined).map((p) => `${x(p.t).toFixed(1)},${y(p.v).toFixed(1)}`);
  if (line.length) root.append(svg("polyline", { points: line.join(" "), class: "latency-line" }));
  for (const p of pts) {
    if (!p.ok) root.append(svg("circle", { cx: x(p.t), cy: y(p.v ?? 0), r: 3.5, class: "fail-dot" }));
  }
  return root;
}

function paintDetail() {
  const detail = model.detail;
  const box = $("#detail-body");
  if (!detail) return;
  const m = { ...(model.monitors.get(detail.id) ?? {}), ...(detail.monitor ?? {}) };
  const live = model.monitors.get(detail.id);
  const state = live?.state ?? m.state ?? "unknown";
  $("#detail-title").textContent = m.name ?? `Monitor #${detail.id}`;
  const badge = $("#detail-state");
  badge.textContent = state;
  badge.className = `badge state-${state}`;
  badge.dataset.state = state;

  const fields = [
    ["Kind", m.kind],
    ["Target", m.kind === "tcp" ? `${m.host}:${m.port}` : m.url],
    ["Method", m.kind === "http" ? m.method : null],
    ["Interval", m.interval ? `${m.interval}s` : null],
    ["Timeout", m.timeout ? `${m.timeout}s` : null],
    ["Members", m.kind === "group" && Array.isArray(m.members) ? `${m.members.length} (min up ${m.min_up})` : null],
    ["Tags", Array.isArray(m.tags) && m.tags.length ? m.tags.join(", ") : null],
    ["Push token", m.kind === "push" ? m.push_token : null],
    ["Last latency", fmtLatency(live?.latency)],
    ["Last error", m.last_error],
    ["Last status", m.last_status_code ? `HTTP ${m.last_status_code}` : null],
    ["Certificate expires", m.cert_expires_at ? fmtTime(m.cert_expires_at) : null],
    ["Uptime 24h", fmtUptime(detail.stats?.["24h"] ?? live?.uptime)],
    ["Uptime 7d", detail.stats ? fmtUptime(detail.stats["7d"]) : null],
    ["Uptime 30d", detail.stats ? fmtUptime(detail.stats["30d"]) : null],
    ["Description", m.description],
  ].filter(([, v]) => v !== null && v !== undefined && v !== "" && v !== "undefined:undefined");

  const paused = state === "paused" || m.enabled === false;
  const actions = el(
    "div",
    { class: "detail-actions editor-only" },
    el("button", { type: "button", class: "btn", "data-testid": "monitor-edit", text: "Edit", onclick: () => openForm(detail.id) }),
    paused
      ? el("button", { type: "button", class: "btn", "data-testid": "monitor-resume", text: "Resume", onclick: () => monitorAction(Pkg.MONITOR_RESUME, detail.id, "Resumed") })
      : el("button", { type: "button", class: "btn", "data-testid": "monitor-pause", text: "Pause", onclick: () => monitorAction(Pkg.MONITOR_PAUSE, detail.id, "Paused") }),
    el("button", { type: "button", class: "btn", "data-testid": "monitor-check-now", text: "Check now", onclick: () => checkNow(detail.id) }),
    el("button", { type: "button", class: "btn danger", "data-testid": "monitor-delete", text: "Delete", onclick: () => deleteMonitor(detail.id, m.name) }),
  );

  const table = el(
    "table",
    { class: "history", "data-testid": "history-table" },
    el("thead", {}, el("tr", {}, el("th", { text: "Time" }), el("th", { text: "Result" }), el("th", { text: "Latency" }), el("th", { text: "Detail" }))),
    el(
      "tbody",
      {},
      detail.history.slice(0, 50).map((r) =>
        el(
          "tr",
          { "data-testid": "history-row", class: resultOk(r) ? "ok" : "fail" },
          el("td", { text: fmtTime(r.ts ?? r.checked_at ?? r.at) }),
          el("td", {}, el("span", { class: `badge state-${resultOk(r) ? "up" : "down"}`, text: resultOk(r) ? "ok" : "fail" })),
          el("td", { class: "num", text: fmtLatency(resultLatency(r)) }),
          el("td", { class: "muted", text: r.error ?? r.message ?? (r.status_code ? `HTTP ${r.status_code}` : "") }),
        ),
      ),
    ),
  );

  box.replaceChildren(
    ...[
    detail.error ? el("p", { class: "error", text: detail.error }) : null,
    actions,
    el("dl", { class: "fields" }, fields.map(([k, v]) => [el("dt", { text: k }), el("dd", { text: String(v) })])),
    el("h3", { text: "Latency" }),
    latencyChart(detail.history),
    el("h3", { text: "Recent checks" }),
    detail.history.length ? table : el("p", { class: "muted", text: "No check results yet." }),
    ].filter(Boolean),
  );
}

async function monitorAction(pkg, id, doneText) {
  try {
    await client.call(pkg, { id });
    toast(doneText);
    await loadSummary("refresh");
    await refreshDetailMonitor();
  } catch (err) {
    toast(errorText(err), "error");
  }
}

async function checkNow(id) {
  try {
    const r = await client.call(Pkg.MONITOR_CHECK_NOW, { id }, { timeoutMs: 60000 });
    const result = r?.result ?? r ?? {};
    toast(`Check ${resultOk(result) ? "succeeded" : "failed"}: ${fmtLatency(resultLatency(result))}`, resultOk(result) ? "info" : "error");
  } catch (err) {
    toast(errorText(err), "error");
  }
}

async function deleteMonitor(id, name) {
  if (!window.confirm(`Delete monitor "${name ?? id}" and its history? This cannot be undone.`)) return;
  try {
    await client.call(Pkg.MONITOR_DELETE, { id });
    model.monitors.delete(id);
    closeDetail();
    invalidate("order", "counts");
    toast("Monitor deleted");
  } catch (err) {
    toast(errorText(err), "error");
  }
}

// ---- create / edit form ----------------------------------------------------------------------------

let formVersion = null; // optimistic-concurrency version of the monitor being edited

function parseExpected(text) {
  // "200-299, 301" -> ["200-299", 301]
  return text
    .split(",")
    .map((s) => s.trim())
    .filter(Boolean)
    .map((s) => (/^\d+$/.test(s) ? Number(s) : s));
}

function showKindFields(kind) {
  for (const box of document.querySelectorAll("#monitor-form [data-kinds]")) {
    box.hidden = !box.dataset.kinds.split(" ").includes(kind);
  }
}

async function openForm(id = null) {
  const form = $("#monitor-form");
  form.reset();
  $("#form-error").textContent = "";
  formVersion = null;
  form.elements.id.value = id ?? "";
  $("#form-title").textContent = id ? "Edit monitor" : "New monitor";
  if (id) {
    try {
      const m = (await client.call(Pkg.MONITOR_GET, { id })) ?? {};
      const mon = m.monitor ?? m;
      formVersion = mon.version ?? null;
      for (const name of ["name", "kind", "url", "method", "keyword", "host", "port", "interval", "timeout", "fail_threshold", "recover_threshold", "min_up", "description"]) {
        if (mon[name] !== undefined && mon[name] !== null && form.elements[name]) form.elements[name].value = mon[name];
      }
      form.elements.verify_tls.checked = mon.verify_tls !== false;
      form.elements.follow_redirects.checked = mon.follow_redirects !== false;
      if (mon.grace !== undefined && mon.grace !== null) form.elements.grace.value = mon.grace;
      form.elements.expected_status.value = (mon.expected_status ?? []).join(", ");
      form.elements.tags.value = (mon.tags ?? []).join(", ");
      form.elements.members.value = (mon.members ?? []).join(", ");
    } catch (err) {
      toast(errorText(err), "error");
      return;
    }
  }
  showKindFields(form.elements.kind.value);
  $("#monitor-dialog").showModal();
}

function formPayload(form) {
  const f = form.elements;
  const kind = f.kind.value;
  const num = (v) => (v === "" ? undefined : Number(v));
  const list = (v) => v.split(",").map((s) => s.trim()).filter(Boolean);
  const data = {
    name: f.name.value.trim(),
    kind,
    interval: num(f.interval.value),
    timeout: num(f.timeout.value),
    fail_threshold: num(f.fail_threshold.value),
    recover_threshold: num(f.recover_threshold.value),
    tags: list(f.tags.value),
    description: f.description.value,
  };
  if (kind === "http") {
    Object.assign(data, {
      url: f.url.value.trim(),
      method: f.method.value,
      keyword: f.keyword.value || null,
      verify_tls: f.verify_tls.checked,
      follow_redirects: f.follow_redirects.checked,
    });
    const expected = parseExpected(f.expected_status.value);
    if (expected.length) data.expected_status = expected;
  } else if (kind === "tcp") {
    Object.assign(data, { host: f.host.value.trim(), port: num(f.port.value) });
  } else if (kind === "push") {
    if (f.grace.value !== "") data.grace = num(f.grace.value);
  } else if (kind === "group") {
    Object.assign(data, { members: list(f.members.value).map(Number), min_up: num(f.min_up.value) });
  }
  for (const k of Object.keys(data)) if (data[k] === undefined) delete data[k];
  return data;
}

async function submitForm(ev) {
  ev.preventDefault();
  const form = $("#monitor-form");
  const id = form.elements.id.value ? Number(form.elements.id.value) : null;
  const data = formPayload(form);
  const saveButton = $("#form-save");
  saveButton.disabled = true;
  try {
    if (id) {
      await client.call(Pkg.MONITOR_UPDATE, { ...data, id, version: formVersion });
      toast("Monitor saved");
    } else {
      const created = await client.call(Pkg.MONITOR_CREATE, data);
      toast(`Monitor "${created?.name ?? data.name}" created`);
    }
    $("#monitor-dialog").close();
    await loadSummary("refresh");
    if (id && model.detail?.id === id) await refreshDetailMonitor();
  } catch (err) {
    if (err instanceof WatchpostError && err.statusCode === RSP.CONFLICT && id) {
      $("#form-error").textContent = `${err.message} — the form now shows the latest version; review and save again.`;
      const latest = await client.call(Pkg.MONITOR_GET, { id }).catch(() => null);
      if (latest) formVersion = (latest.monitor ?? latest).version ?? formVersion;
    } else {
      $("#form-error").textContent = errorText(err);
    }
  } finally {
    saveButton.disabled = false;
  }
}

// ---- role, tenants, connection state ---------------------------------------------------------------

function paintRole() {
  document.body.dataset.canEdit = String(model.canEdit);
  const who = $("#whoami");
  const roles = model.me?.roles ?? [];
  who.textContent = model.me ? `${model.me.user} · ${roles.join(", ")}` : "";
}

function paintTenants() {
  const wrap = $("#tenant-switch");
  const select = $("#tenant-select");
  const tenants = model.tenants;
  wrap.hidden = tenants.length < 2;
  const current = model.me?.tenant ?? model.tenant;
  select.replaceChildren(
    ...tenants.map((t) => el("option", { value: t.slug, selected: t.slug === current, text: t.name ? `${t.name}` : t.slug })),
  );
}

function switchTenant(slug) {
  if (!slug || slug === model.me?.tenant) return;
  model.tenant = slug;
  sessionStorage.setItem(TENANT_KEY, slug);
  const url = new URL(location.href);
  url.searchParams.set("tenant", slug);
  history.replaceState(null, "", url);
  closeDetail();
  model.monitors = new Map();
  model.incidents = new Map();
  model.loaded = false;
  needReload = true;
  invalidate("order", "counts", "incidents");
  client.setTenant(slug);
}

const STATE_LABELS = {
  idle: "Not connected",
  connecting: "Connecting…",
  open: "Live",
  reconnecting: "Reconnecting…",
  unauthenticated: "Signed out",
  closed: "Disconnected",
};

let countdownTimer = null;
function paintConnState(state, info = {}) {
  const box = $("#conn-state");
  box.dataset.state = state;
  clearInterval(countdownTimer);
  const label = $("#conn-label");
  if (state === State.RECONNECTING && info.delayMs) {
    const until = Date.now() + info.delayMs;
    const tick = () => {
      const left = Math.max(0, Math.ceil((until - Date.now()) / 1000));
      label.textContent = `Reconnecting in ${left}s`;
    };
    tick();
    countdownTimer = setInterval(tick, 500);
  } else {
    label.textContent = STATE_LABELS[state] ?? state;
  }
  box.title = info.code ? `last close code ${info.code}${info.reason ? `: ${info.reason}` : ""}` : "";
  $("#offline-banner").hidden = state === State.OPEN || state === State.IDLE || state === State.UNAUTHENTICATED;
}

// ---- session lifecycle -----------------------------------------------------------------------------

let client = null;
let needReload = false; // set when events may have been lost; the next OPEN reloads everything
let summaryTimer = null;

function showLogin(message = "") {
  $("#login-view").hidden = false;
  $("#dash-view").hidden = true;
  $("#session").hidden = true;
  $("#login-error").textContent = message;
  $("#login-username").focus();
}

function showDashboard() {
  $("#login-view").hidden = true;
  $("#dash-view").hidden = false;
  $("#session").hidden = false;
}

function endSession(message) {
  clearInterval(summaryTimer);
  if (client) {
    const c = client;
    client = null;
    c.close();
  }
  closeDetail();
  model.monitors = new Map();
  model.incidents = new Map();
  model.me = null;
  model.loaded = false;
  invalidate("order", "counts", "incidents", "role");
  paintConnState(State.IDLE);
  showLogin(message);
}

function startSession() {
  showDashboard();
  const url = new URL(location.href);
  model.tenant = url.searchParams.get("tenant") || sessionStorage.getItem(TENANT_KEY) || null;
  client = new WatchpostClient({
    url: "/web",
    tenant: model.tenant,
    getToken: () => auth.accessToken(),
    refreshToken: () => auth.refresh(),
  });
  const c = client;
  c.onState((state, info) => {
    if (c !== client) return;
    if (state === "lagged") {
      // 4009: the server dropped us for reading too slowly; reload rather than trust replay.
      needReload = true;
      return;
    }
    paintConnState(state, info);
    if (state === State.OPEN && needReload) {
      needReload = false;
      reloadAll();
    } else if (state === State.UNAUTHENTICATED) {
      if (info.code === 4003 && model.tenant) {
        // Not (or no longer) a member of that tenant: fall back to the default one.
        sessionStorage.removeItem(TENANT_KEY);
        model.tenant = null;
        needReload = true;
        c.setTenant(null);
        return;
      }
      auth.clear();
      endSession(
        info.code === 4010
          ? "Your session expired. Please log in again."
          : info.code === 4001
            ? "Your session is no longer valid. Please log in again."
            : "Please log in.",
      );
    }
  });
  c.subscribe(["monitors"], {
    onEvent: (ev) => applyMonitorEvent(ev),
    onReset: () => loadSummary().catch(() => {}),
  });
  c.subscribe(["incidents"], {
    onEvent: (ev) => applyIncidentEvent(ev),
    onReset: () => loadIncidents().catch(() => {}),
  });
  needReload = false;
  c.connect().then(
    () => reloadAll(),
    () => {},
  );
  clearInterval(summaryTimer);
  summaryTimer = setInterval(() => {
    if (c === client && c.state === State.OPEN && document.visibilityState === "visible" && !model.monitorReload) {
      loadSummary("refresh").catch(() => {});
    }
  }, SUMMARY_REFRESH_MS);
}

// ---- wiring ----------------------------------------------------------------------------------------------

function wire() {
  $("#login-form").addEventListener("submit", async (ev) => {
    ev.preventDefault();
    const button = $("#login-submit");
    button.disabled = true;
    $("#login-error").textContent = "";
    try {
      await auth.login($("#login-username").value.trim(), $("#login-password").value);
      $("#login-password").value = "";
      startSession();
    } catch (err) {
      $("#login-error").textContent = errorText(err);
    } finally {
      button.disabled = false;
    }
  });
  $("#logout").addEventListener("click", async () => {
    await auth.logout();
    endSession("You are logged out.");
  });
  $("#tenant-select").addEventListener("change", (ev) => switchTenant(ev.target.value));

  const viewport = $("#monitor-viewport");
  let scrollFrame = 0;
  viewport.addEventListener("scroll", () => {
    // Scrolling repaints at frame rate (only the window moves); data repaints stay coalesced.
    if (!scrollFrame) scrollFrame = requestAnimationFrame(() => ((scrollFrame = 0), paintList(false)));
  });
  window.addEventListener("resize", () => invalidate("rows"));
  $("#monitor-rows").addEventListener("click", (ev) => {
    const row = ev.target.closest("[data-monitor-id]");
    if (row) openDetail(Number(row.dataset.monitorId));
  });
  $("#monitor-rows").addEventListener("keydown", (ev) => {
    const row = ev.target.closest("[data-monitor-id]");
    if (row && (ev.key === "Enter" || ev.key === " ")) {
      ev.preventDefault();
      openDetail(Number(row.dataset.monitorId));
    }
  });
  let filterTimer = null;
  $("#monitor-filter").addEventListener("input", (ev) => {
    clearTimeout(filterTimer);
    filterTimer = setTimeout(() => {
      model.view.text = ev.target.value;
      viewport.scrollTop = 0;
      invalidate("order");
    }, 120);
  });
  $("#state-filter").addEventListener("change", (ev) => setStateFilter(ev.target.value));
  $("#monitor-sort").addEventListener("change", (ev) => {
    model.view.sort = ev.target.value;
    invalidate("order");
  });
  $("#monitor-new").addEventListener("click", () => openForm(null));
  $("#detail-close").addEventListener("click", closeDetail);
  document.addEventListener("keydown", (ev) => {
    if (ev.key === "Escape" && !$("#monitor-dialog").open) closeDetail();
  });
  $("#monitor-form").addEventListener("submit", submitForm);
  $("#monitor-form").elements.kind.addEventListener("change", (ev) => showKindFields(ev.target.value));
  $("#form-cancel").addEventListener("click", () => $("#monitor-dialog").close());
  // Relative times in the incident list go stale; refresh them now and then.
  setInterval(() => {
    if (model.incidents.size) invalidate("incidents");
  }, 15000);
}

wire();
if (auth.load()) startSession();
else showLogin();
