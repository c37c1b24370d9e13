// The monitor list: filtered and sorted, virtualised (only rows in view exist in the DOM,
// so 50,000 monitors cost a few dozen nodes), plus the per-state counters above it.
// Filtering walks the already sorted ids and repaints only the rows in view.

import { $, el, fmtLatency, fmtUptime, requestOpenMonitor } from "./dom.js";
import { STATES, addPainter, invalidate, model } from "./store.js";

const ROW_HEIGHT = 44; // px; must match --row-h in style.css
const OVERSCAN = 8; // rows rendered above and below the viewport so fast scrolls do not flash
// Sort order for the status view: what needs attention first.
const STATE_RANK = { down: 0, degraded: 1, pending: 2, maintenance: 3, paused: 4, up: 5 };

const rowCache = new Map(); // id -> {node, sig}
// One collator for every name comparison (String.localeCompare may set one up per call).
const collator = new Intl.Collator();
// Every monitor in the current sort, before filtering. Typing in the filter or choosing a
// state only walks it; it is sorted again ("order") only when monitors change or the sort
// does. Every change to what the filter reads (name, target, tags, state) repaints "order",
// so the rows held here are current for filtering; the rows drawn are read from the model.
let sorted = [];
// The lower-cased text each of them is filtered on, made by the first text filter after a
// sort: the next keystrokes only search it.
let sortedText = null;

function sortAll() {
  const all = [...model.monitors.values()];
  const byName = (a, b) => collator.compare(String(a.name ?? ""), String(b.name ?? "")) || a.id - b.id;
  if (model.view.sort === "status") {
    all.sort((a, b) => (STATE_RANK[a.state] ?? 9) - (STATE_RANK[b.state] ?? 9) || byName(a, b));
  } else if (model.view.sort === "latency") {
    all.sort((a, b) => (b.latency ?? -1) - (a.latency ?? -1) || byName(a, b));
  } else {
    all.sort(byName);
  }
  sorted = all;
  sortedText = null;
}

function filterSorted() {
  const text = model.view.text.trim().toLowerCase();
  const state = model.view.state;
  if (text && sortedText === null) {
    sortedText = sorted.map((m) =>
      `${m.name ?? ""} ${m.url ?? ""} ${m.host ?? ""} ${(m.tags ?? []).join(" ")}`.toLowerCase(),
    );
  }
  const ids = [];
  for (let i = 0; i < sorted.length; i++) {
    const m = sorted[i];
    if (state && m.state !== state) continue;
    if (text && !sortedText[i].includes(text)) continue;
    ids.push(m.id);
  }
  model.order = ids;
}

function rowSig(m) {
  return [m.state, m.name, m.latency, m.uptime, m.kind, m.error, m.url, m.host, m.port, m.cert_days_left].join("|");
}

function buildRow(m) {
  // A down or degraded monitor shows why (the failing condition) instead of where.
  const where =
    m.kind === "tcp" && m.host ? `${m.host}:${m.port ?? ""}`
    : m.kind === "http" || m.kind === "websocket" ? m.url ?? ""
    : m.kind === "dns" || m.kind === "ping" ? m.host ?? ""
    : "";
  const target = (m.state === "down" || m.state === "degraded") && m.error ? m.error : where;
  const cert = m.cert_days_left ?? null;
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
    el(
      "span",
      { class: "cell kind" },
      m.kind ?? "",
      cert === null
        ? ""
        : el("span", {
            class: cert <= 14 ? "cert-days soon" : "cert-days",
            "data-testid": "monitor-cert-days",
            title: "days until the TLS certificate expires",
            text: ` · cert ${cert}d`,
          }),
    ),
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
  invalidate("filter");
}

// "order": monitors or the sort changed (sort, then filter); "filter": only the filter text
// or state did (filter the sorted ids again, nothing is sorted or rebuilt).
addPainter(["order", "filter", "rows", "counts"], (parts) => {
  const started = performance.now();
  if (parts.has("order")) sortAll();
  if (parts.has("order") || parts.has("filter")) filterSorted();
  if (parts.has("order") || parts.has("filter") || parts.has("rows")) paintList(true);
  if (parts.has("order") || parts.has("filter") || parts.has("counts")) paintCounts();
  // Exposed for tests and support: what the last list repaint cost on the main thread.
  $("#monitor-viewport").dataset.paintMs = (performance.now() - started).toFixed(1);
});

/** Hooks up scrolling, row clicks, the filter, the state filter and the sort. Call once. */
export function wireList() {
  const viewport = $("#monitor-viewport");
  let scrollFrame = 0;
  viewport.addEventListener("scroll", () => {
    // Scrolling repaints at frame rate (only the window moves); data repaints stay coalesced.
    if (!scrollFrame) scrollFrame = requestAnimationFrame(() => ((scrollFrame = 0), paintList(false)));
  });
  window.addEventListener("resize", () => invalidate("rows"));
  $("#monitor-rows").addEventListener("click", (ev) => {
    const row = ev.target.closest("[data-monitor-id]");
    if (row) requestOpenMonitor(Number(row.dataset.monitorId));
  });
  $("#monitor-rows").addEventListener("keydown", (ev) => {
    const row = ev.target.closest("[data-monitor-id]");
    if (row && (ev.key === "Enter" || ev.key === " ")) {
      ev.preventDefault();
      requestOpenMonitor(Number(row.dataset.monitorId));
    }
  });
  let filterTimer = null;
  $("#monitor-filter").addEventListener("input", (ev) => {
    clearTimeout(filterTimer);
    filterTimer = setTimeout(() => {
      model.view.text = ev.target.value;
      viewport.scrollTop = 0;
      invalidate("filter");
    }, 120);
  });
  $("#state-filter").addEventListener("change", (ev) => setStateFilter(ev.target.value));
  $("#monitor-sort").addEventListener("change", (ev) => {
    model.view.sort = ev.target.value;
    invalidate("order");
  });
}
