// Keeping the model in step with the server: full loads (summary, incidents, identity)
// and the live events on the "monitors" and "incidents" topics.

import { errorText, $, toast } from "./dom.js";
import { applyIncident, incidentFromEvent, isOpenIncident } from "./incidents.js";
import { invalidate, listFrom, mergeMonitor, model, monitorChanged, monitorId, session } from "./store.js";
import { Pkg, State, WatchpostError } from "./wp-client.js";

const SUMMARY_SETTLE_MS = 3000; // quiet summary refresh this long after the last state change…
const SUMMARY_SETTLE_MIN_MS = 15000; // …but no more often than this

/**
 * Loads STATUS_SUMMARY and replaces the monitor table. `reason` "reload" (start-up, lost
 * history) is counted in data-summary-loads; "refresh" (periodic, after state changes) is not.
 */
export async function loadSummary(reason = "reload") {
  const reload = { events: [] };
  model.monitorReload = reload;
  try {
    const rows = [];
    let cursor = null;
    // The summary comes in pages of 2,000 (docs/protocol.md, "Large answers"); follow the cursor to the end.
    for (let guard = 0; guard < 1000; guard++) {
      const res = await session.client.request(Pkg.STATUS_SUMMARY, cursor ? { cursor } : {}, { timeoutMs: 30000 });
      const page = listFrom(res.data);
      rows.push(...page);
      if (!model.loaded && model.monitorReload === reload) {
        // First load (nothing shown yet): show each page as it arrives rather than after the
        // last, so a large tenant sees rows at once. The full replace below still settles it.
        for (const r of page) {
          const id = r.id ?? r.monitor_id;
          model.monitors.set(id, mergeMonitor(model.monitors.get(id), { ...r, id }));
        }
        invalidate("order", "counts");
      }
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

export async function loadIncidents() {
  const reload = { events: [] };
  model.incidentReload = reload;
  try {
    const items = [];
    let page = 1;
    for (let guard = 0; guard < 50; guard++) {
      // "unresolved" = open and acknowledged-but-not-resolved: both belong on the board.
      const res = await session.client.request(Pkg.INCIDENT_LIST, { state: "unresolved", page, per_page: 200 });
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

// The packages the editing controls send (monitor form, pause/resume/check/delete, incident
// acknowledge). Which roles may call them is the server's business (actions.json): the controls
// show when WHOAMI's `packages` contains every one of them.
const EDIT_PACKAGES = [
  Pkg.MONITOR_CREATE,
  Pkg.MONITOR_UPDATE,
  Pkg.MONITOR_DELETE,
  Pkg.MONITOR_PAUSE,
  Pkg.MONITOR_RESUME,
  Pkg.MONITOR_CHECK_NOW,
  Pkg.INCIDENT_ACK,
];

let identityGeneration = 0;

/** Asks WHOAMI who we are and what we may call; an answer overtaken by a newer question is dropped. */
async function loadIdentity() {
  const generation = ++identityGeneration;
  const me = await session.client.call(Pkg.WHOAMI, {});
  if (generation !== identityGeneration) return;
  model.me = me;
  const allowed = new Set(Array.isArray(me?.packages) ? me.packages : []);
  model.canEdit = EDIT_PACKAGES.every((p) => allowed.has(p));
  model.tenant = me?.tenant ?? model.tenant;
  invalidate("role");
}

/**
 * EVENT_ROLE_CHANGED (905): an admin changed our role. The connection already has the new role,
 * so WHOAMI tells which packages it may call now; the name shows at once, the controls follow.
 */
export function applyRoleChange(data) {
  const roles = Array.isArray(data?.roles) ? data.roles : [];
  if (model.me) model.me = { ...model.me, roles };
  invalidate("role");
  loadIdentity().catch(() => {}); // a lost answer is retried by the reload after the reconnect
}

async function loadTenants() {
  try {
    model.tenants = listFrom(await session.client.call(Pkg.TENANT_LIST, { per_page: 100 }));
  } catch {
    model.tenants = [];
  }
  invalidate("tenants");
}

let summaryLoads = 0;
let reloadAllRunning = null;
let reloadAllAgain = false; // asked again while running (e.g. a tenant switch): run once more after
/** Loads identity, summary and incidents; called after login, tenant switch, 4009 or lost history. */
export function reloadAll() {
  if (reloadAllRunning) {
    reloadAllAgain = true;
    return reloadAllRunning;
  }
  reloadAllRunning = Promise.all([loadIdentity().then(loadTenants), loadSummary(), loadIncidents()])
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
    const client = session.client;
    if (client && client.state === State.OPEN && !model.monitorReload) loadSummary("refresh").catch(() => {});
  }, wait);
}

let summaryReloadTimer = null;
/** Debounced summary reload for events that refer to monitors we do not know yet. */
function reloadSummarySoon() {
  clearTimeout(summaryReloadTimer);
  summaryReloadTimer = setTimeout(() => loadSummary("refresh").catch(() => {}), 500);
}

export function applyMonitorEvent(ev, record = true) {
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
    invalidate(m.state !== next.state ? "order" : "rows", "counts", "detail");
    if (record) refreshSummarySoon();
  } else if (ev.pkgId === Pkg.EVENT_MONITOR_CHANGED) {
    const action = d.action ?? d.change ?? d.type;
    const id = monitorId(d);
    if (action === "deleted") {
      model.monitors.delete(id);
    } else {
      const src = d.monitor ?? d;
      const prev = model.monitors.get(id);
      model.monitors.set(id, mergeMonitor(prev, { ...src, id }));
      if (!prev && src.state === undefined) reloadSummarySoon();
    }
    monitorChanged(id, action === "deleted" ? "deleted" : "updated");
    invalidate("order", "counts");
  }
}

export function applyIncidentEvent(ev) {
  if (model.incidentReload) model.incidentReload.events.push(ev);
  applyIncident(incidentFromEvent(ev.data));
}
