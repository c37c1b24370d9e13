// The dashboard's state and its repaint scheduler. Modules change `model`, then call
// invalidate(part…); the painters registered for those parts run together, coalesced
// through requestAnimationFrame to at most ~4 repaints a second.

const MIN_PAINT_INTERVAL_MS = 250;

export const STATES = ["up", "down", "degraded", "pending", "maintenance", "paused"];

export const model = {
  me: null, // WHOAMI answer
  canEdit: false, // the server lets this connection call every package the editing controls send
  tenants: [],
  tenant: null, // slug the socket is bound to (null: the server's default)
  monitors: new Map(), // id -> row (summary fields merged with event fields)
  incidents: new Map(), // id -> open or acknowledged incident
  loaded: false,
  // While a summary/incident load is in flight, events are also recorded here and
  // re-applied on top of the answer, so nothing that happened meanwhile is lost.
  monitorReload: null,
  incidentReload: null,
  view: { text: "", state: "", sort: "status" },
  order: [], // ids after filter + sort
  detail: null, // {id, monitor, history, stats, locations, error, unsubscribe}
  probes: null, // PROBE_LIST locations (null: not allowed or not loaded; the panel is hidden)
};

/** The live connection (a WatchpostClient) while logged in, else null. */
export const session = { client: null };

// ---- repaint scheduling ------------------------------------------------------------------

const painters = []; // [{parts: Set, fn(parts)}], run in registration order
const dirty = new Set();
let paintPending = false;
let lastPaint = 0;

/** Registers fn(dirtyParts) to run when any of `parts` is invalidated. */
export function addPainter(parts, fn) {
  painters.push({ parts: new Set(parts), fn });
}

/** Marks parts of the page stale; they are repainted together, at most every 250 ms. */
export function invalidate(...parts) {
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
  for (const p of painters) {
    if ([...parts].some((part) => p.parts.has(part))) {
      try {
        p.fn(parts);
      } catch (err) {
        console.error("watchpost: repaint failed", err);
      }
    }
  }
}

// ---- monitor changes that views outside the list care about ----------------------------------

const monitorListeners = new Set();

/** fn(id, action) for "updated", "deleted" and "saved" (by this page's editor). */
export function onMonitorChange(fn) {
  monitorListeners.add(fn);
}

export function monitorChanged(id, action) {
  for (const fn of monitorListeners) fn(id, action);
}

// ---- wire shapes ------------------------------------------------------------------------------

export function monitorId(d) {
  return d?.monitor_id ?? d?.monitor?.id ?? d?.id ?? null;
}

/** Normalises a summary row, a monitor or an event into the fields the list shows. */
export function mergeMonitor(base, src) {
  const m = base ? { ...base } : { id: src.id };
  for (const k of ["name", "kind", "url", "host", "port", "tags", "interval", "enabled", "version", "cert_days_left"]) {
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

/** The list inside an answer: the data itself, or its `monitors`/`items`/… member. */
export function listFrom(data) {
  if (Array.isArray(data)) return data;
  if (!data || typeof data !== "object") return [];
  for (const k of ["monitors", "items", "results", "incidents", "tenants", "rows"]) {
    if (Array.isArray(data[k])) return data[k];
  }
  return [];
}
