// The monitor detail drawer: definition, uptime windows, latency chart and recent results,
// with the editor's actions. While open it subscribes to monitor.<id> for live results.

import { latencyChart, resultLatency, resultOk, resultTime } from "./chart.js";
import { $, el, errorText, fmtLatency, fmtTime, fmtUptime, toast } from "./dom.js";
import { openForm } from "./monitor-form.js";
import { addPainter, invalidate, listFrom, mergeMonitor, model, monitorId, onMonitorChange, session } from "./store.js";
import { applyLocationState, loadDetailLocations, locationsTable } from "./probes.js";
import { loadSummary } from "./sync.js";
import { Pkg } from "./wp-client.js";

const HISTORY_LIMIT = 100; // results shown in the detail view

// Whole days until a certificate expires (negative once expired), as STATUS_SUMMARY counts them.
function certDaysLeft(iso) {
  return Math.floor((Date.parse(iso) - Date.now()) / 86400000);
}

export async function openDetail(id) {
  if (id === undefined || id === null) return;
  closeDetail();
  const detail = { id, monitor: null, history: [], stats: null, error: null, unsubscribe: null };
  model.detail = detail;
  detail.unsubscribe = session.client.subscribe([`monitor.${id}`], {
    onEvent: (ev) => applyCheckResult(ev),
    onReset: () => loadDetailHistory(detail),
  });
  $("#detail").hidden = false;
  $("#detail").dataset.monitorId = String(id);
  invalidate("detail");
  await Promise.all([
    refreshDetailMonitor(),
    loadDetailHistory(detail),
    loadDetailStats(detail),
    loadDetailPolicies(detail),
    loadDetailLocations(detail),
  ]);
}

/** Escalation policy names (421), to show which policy the monitor follows. */
async function loadDetailPolicies(detail) {
  try {
    const data = await session.client.call(Pkg.ESCALATION_LIST, { per_page: 100 });
    if (model.detail !== detail) return;
    detail.policies = listFrom(data);
  } catch {
    detail.policies = null; // older server or no access: the id is shown instead
  }
  invalidate("detail");
}

function policyText(m, policies) {
  const byId = (id) => policies?.find((p) => p.id === id);
  if (m.escalation_policy) {
    const p = byId(m.escalation_policy);
    return p ? `${p.name}${policyLine(p)}` : `policy #${m.escalation_policy}`;
  }
  const fallback = policies?.find((p) => p.default);
  return fallback ? `${fallback.name} (tenant default)${policyLine(fallback)}` : null;
}

function policyLine(p) {
  const steps = (p.steps ?? []).map((s) => `${s.after} min → ${s.channels.length} channel(s)`).join(", ");
  return ` — ${steps}${p.repeat_every ? `, repeat every ${p.repeat_every} min` : ""}`;
}

function monitorNames(ids) {
  if (!Array.isArray(ids) || !ids.length) return null;
  return ids.map((id) => model.monitors.get(id)?.name ?? `#${id}`).join(", ");
}

export async function refreshDetailMonitor() {
  const detail = model.detail;
  if (!detail) return;
  try {
    const data = await session.client.call(Pkg.MONITOR_GET, { id: detail.id });
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
    const res = await session.client.request(Pkg.CHECK_HISTORY, { monitor_id: detail.id, limit: HISTORY_LIMIT });
    if (model.detail !== detail) return;
    const rows = listFrom(res.data);
    // Newest first for the table; the chart sorts by time itself.
    rows.sort((a, b) => resultTime(b) - resultTime(a));
    detail.history = rows.slice(0, HISTORY_LIMIT);
  } catch (err) {
    if (model.detail === detail) detail.error = errorText(err);
  }
  invalidate("detail");
}

async function loadDetailStats(detail) {
  try {
    const d = await session.client.call(Pkg.STATS_UPTIME, { monitor_id: detail.id, windows: ["24h", "7d", "30d"] });
    const stats = {};
    for (const [name, w] of Object.entries(d?.windows ?? {})) stats[name] = w?.uptime ?? null;
    if (model.detail === detail) detail.stats = stats;
  } catch {
    // Statistics are a nicety in this view; the history still shows.
  }
  invalidate("detail");
}

export function closeDetail() {
  const detail = model.detail;
  if (!detail) return;
  model.detail = null;
  if (detail.unsubscribe) detail.unsubscribe();
  $("#detail").hidden = true;
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

  // Connection strings are never shown (the server sends "***"): the kind says enough.
  const target = (mon) => {
    if (mon.kind === "tcp") return `${mon.host}:${mon.port}`;
    if (mon.kind === "dns") return `${mon.host} (${mon.options?.record_type ?? "A"})`;
    if (mon.kind === "ping") return mon.host;
    if (mon.kind === "postgres" || mon.kind === "redis") return null;
    return mon.url;
  };
  const fields = [
    ["Kind", m.kind],
    ["Target", target(m)],
    ["Method", m.kind === "http" ? m.method : null],
    ["Interval", m.interval ? `${m.interval}s` : null],
    ["Timeout", m.timeout ? `${m.timeout}s` : null],
    ["Members", m.kind === "group" && Array.isArray(m.members) ? `${m.members.length} (min up ${m.min_up})` : null],
    ["Covers members", m.kind === "group" && m.covers_members ? "yes: members' outages alert as this group's" : null],
    ["Depends on", monitorNames(m.depends_on)],
    ["Escalation", policyText(m, detail.policies)],
    ["Tags", Array.isArray(m.tags) && m.tags.length ? m.tags.join(", ") : null],
    ["Push token", m.kind === "push" ? m.push_token : null],
    ["Last latency", fmtLatency(live?.latency)],
    [state === "degraded" ? "Warning" : "Last error", m.last_error],
    ["Last status", m.last_status_code ? `HTTP ${m.last_status_code}` : null],
    ["Certificate expires", m.cert_expires_at ? `${fmtTime(m.cert_expires_at)} (${certDaysLeft(m.cert_expires_at)} days left)` : null],
    ["Certificate issuer", m.cert_issuer],
    ["Conditions", Array.isArray(m.conditions) && m.conditions.length ? m.conditions.join("; ") : null],
    ["Uptime 24h", fmtUptime(detail.stats?.["24h"] ?? live?.uptime)],
    ["Uptime 7d", detail.stats ? fmtUptime(detail.stats["7d"]) : null],
    ["Uptime 30d", detail.stats ? fmtUptime(detail.stats["30d"]) : null],
    ["Description", m.description],
  ].filter(([, v]) => v !== null && v !== undefined && v !== "" && v !== "undefined:undefined");

  const paused = state === "paused" || m.enabled === false;
  const actions = el(
    "div",
    { class: "detail-actions editor-only" },
    button("monitor-edit", "Edit", () => openForm(detail.id)),
    paused
      ? button("monitor-resume", "Resume", () => monitorAction(Pkg.MONITOR_RESUME, detail.id, "Resumed"))
      : button("monitor-pause", "Pause", () => monitorAction(Pkg.MONITOR_PAUSE, detail.id, "Paused")),
    button("monitor-check-now", "Check now", () => checkNow(detail.id)),
    button("monitor-delete", "Delete", () => deleteMonitor(detail.id, m.name), "btn danger"),
  );

  const table = el(
    "table",
    { class: "history", "data-testid": "history-table" },
    el("thead", {}, el("tr", {}, ["Time", "Result", "Latency", "Detail"].map((h) => el("th", { text: h })))),
    el(
      "tbody",
      {},
      detail.history.slice(0, 50).map((r) =>
        el(
          "tr",
          { "data-testid": "history-row", class: resultOk(r) ? "ok" : "fail" },
          el("td", { text: fmtTime(r.ts ?? r.checked_at ?? r.at) }),
          el(
            "td",
            {},
            el("span", { class: `badge state-${resultOk(r) ? "up" : "down"}`, text: resultOk(r) ? "ok" : "fail" }),
          ),
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
    ...(locationsTable(detail, m.quorum) ?? []),
    el("h3", { text: "Latency" }),
    latencyChart(detail.history),
    el("h3", { text: "Recent checks" }),
    detail.history.length ? table : el("p", { class: "muted", text: "No check results yet." }),
    ].filter(Boolean),
  );
}

function button(testid, text, onclick, cls = "btn") {
  return el("button", { type: "button", class: cls, "data-testid": testid, text, onclick });
}

async function monitorAction(pkg, id, doneText) {
  try {
    await session.client.call(pkg, { id });
    toast(doneText);
    await loadSummary("refresh");
    await refreshDetailMonitor();
  } catch (err) {
    toast(errorText(err), "error");
  }
}

async function checkNow(id) {
  try {
    const r = await session.client.call(Pkg.MONITOR_CHECK_NOW, { id }, { timeoutMs: 60000 });
    const result = r?.result ?? r ?? {};
    const ok = resultOk(result);
    toast(`Check ${ok ? "succeeded" : "failed"}: ${fmtLatency(resultLatency(result))}`, ok ? "info" : "error");
  } catch (err) {
    toast(errorText(err), "error");
  }
}

async function deleteMonitor(id, name) {
  if (!window.confirm(`Delete monitor "${name ?? id}" and its history? This cannot be undone.`)) return;
  try {
    await session.client.call(Pkg.MONITOR_DELETE, { id });
    model.monitors.delete(id);
    closeDetail();
    invalidate("order", "counts");
    toast("Monitor deleted");
  } catch (err) {
    toast(errorText(err), "error");
  }
}

/** EVENT_CHECK_RESULT (901) on monitor.<id>: prepend to the history and update the row. */
function applyCheckResult(ev) {
  const pkg = ev.pkgId ?? ev.pkg_id;
  if (pkg === Pkg.EVENT_LOCATION_STATE) {
    applyLocationState(ev);
    return;
  }
  if (pkg !== undefined && pkg !== Pkg.EVENT_CHECK_RESULT) return;
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

addPainter(["detail"], paintDetail);

onMonitorChange((id, action) => {
  if (!model.detail || model.detail.id !== id) return;
  if (action === "deleted") closeDetail();
  else refreshDetailMonitor();
});
