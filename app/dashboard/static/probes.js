// Probes (docs/probes.md): the side panel listing the tenant's probe locations and their probes'
// health (PROBE_LIST 614, live on EVENT_PROBE_STATUS 907 over the `probes` topic), and each
// monitor's per-location results in the detail drawer (LOCATION_STATS 615, live on
// EVENT_LOCATION_STATE 908). Shown only to connections WHOAMI lets call those packages.

import { $, el, fmtAgo, fmtLatency, fmtUptime } from "./dom.js";
import { addPainter, invalidate, model, session } from "./store.js";
import { Pkg } from "./wp-client.js";

const RELOAD_DEBOUNCE_MS = 500;

function allowed(pkg) {
  return Array.isArray(model.me?.packages) && model.me.packages.includes(pkg);
}

// ---- the panel ---------------------------------------------------------------------------------

let unsubscribe = null;
let reloadTimer = null;

/** Loads PROBE_LIST once WHOAMI says we may, and follows 907 events from then on. */
export async function loadProbes() {
  const client = session.client;
  if (!client || !allowed(Pkg.PROBE_LIST)) {
    model.probes = null;
    if (unsubscribe) unsubscribe();
    unsubscribe = null;
    invalidate("probes");
    return;
  }
  if (!unsubscribe) {
    unsubscribe = client.subscribe(["probes"], {
      onEvent: () => reloadSoon(),
      onReset: () => reloadSoon(),
    });
  }
  try {
    const data = await client.call(Pkg.PROBE_LIST, {});
    if (client === session.client) model.probes = data?.locations ?? [];
  } catch {
    model.probes = null; // the panel stays hidden; the rest of the dashboard is unaffected
  }
  invalidate("probes");
}

function reloadSoon() {
  clearTimeout(reloadTimer);
  reloadTimer = setTimeout(() => loadProbes().catch(() => {}), RELOAD_DEBOUNCE_MS);
}

/** Forget the panel's subscription (logout, tenant switch: the client is replaced). */
export function resetProbes() {
  unsubscribe = null;
  model.probes = null;
  invalidate("probes");
}

const STATUS_TEXT = { online: "online", offline: "offline", never: "never connected" };

function paintProbes() {
  const section = $("#probes-section");
  const locations = model.probes;
  section.hidden = !Array.isArray(locations);
  if (!Array.isArray(locations)) return;
  $("#probe-empty").hidden = locations.length > 0;
  $("#probe-list").replaceChildren(
    ...locations.map((loc) => {
      const status = loc.status ?? "never";
      const probes = Array.isArray(loc.probes) ? loc.probes : [];
      return el(
        "li",
        { "data-testid": "probe-location", "data-location": loc.name, "data-status": status },
        el("span", { class: `badge state-${status === "online" ? "up" : status === "offline" ? "down" : "pending"}`, text: STATUS_TEXT[status] ?? status }),
        " ",
        el("strong", { text: loc.name }),
        probes.length
          ? el(
              "ul",
              { class: "muted probe-detail" },
              probes.map((p) =>
                el("li", {
                  "data-testid": "probe-row",
                  text: [
                    p.token ?? `probe #${p.id}`,
                    p.version ? `v${p.version}` : null,
                    p.connected ? "connected" : p.last_seen_at ? `last seen ${fmtAgo(p.last_seen_at)}` : "never seen",
                    p.lag_ms !== null && p.lag_ms !== undefined ? `lag ${fmtLatency(p.lag_ms)}` : null,
                    p.buffered ? `${p.buffered} buffered` : null,
                  ]
                    .filter(Boolean)
                    .join(" · "),
                }),
              ),
            )
          : null,
      );
    }),
  );
}

addPainter(["probes"], paintProbes);

// ---- a monitor's locations in the detail drawer ------------------------------------------------

/** LOCATION_STATS for the open monitor; kept on `detail.locations` (null: none to show). */
export async function loadDetailLocations(detail) {
  if (!allowed(Pkg.LOCATION_STATS)) return;
  try {
    const data = await session.client.call(Pkg.LOCATION_STATS, { monitor_id: detail.id, window: "24h" });
    if (model.detail !== detail) return;
    const rows = data?.locations ?? [];
    detail.locations = rows.length > 1 || rows.some((r) => r.location !== "local") ? rows : null;
  } catch {
    detail.locations = null;
  }
  invalidate("detail");
}

let locationTimer = null;
/** EVENT_LOCATION_STATE (908): one location of a monitor changed state. */
export function applyLocationState(ev) {
  const d = ev.data ?? {};
  const detail = model.detail;
  if (!detail || detail.id !== d.monitor_id) return;
  const row = detail.locations?.find((r) => r.location === d.location);
  if (row) {
    Object.assign(row, { state: d.state, error: d.error ?? null, checked_at: d.checked_at ?? row.checked_at });
    invalidate("detail");
  }
  clearTimeout(locationTimer); // the uptime figures follow shortly
  locationTimer = setTimeout(() => loadDetailLocations(detail).catch(() => {}), RELOAD_DEBOUNCE_MS);
}

/** The drawer's "Locations" table, or null when the monitor is checked from here only. */
export function locationsTable(detail, quorum) {
  const rows = detail.locations;
  if (!Array.isArray(rows) || !rows.length) return null;
  const latest = (r) => r.latest ?? r;
  return [
    el("h3", { text: `Locations (down when ${quorum ?? 1} of ${rows.length} fail)` }),
    el(
      "table",
      { class: "history", "data-testid": "location-table" },
      el("thead", {}, el("tr", {}, ["Location", "State", "Uptime", "p50", "Last check", "Detail"].map((h) => el("th", { text: h })))),
      el(
        "tbody",
        {},
        rows.map((r) => {
          const state = r.state ?? "unknown";
          return el(
            "tr",
            { "data-testid": "location-row", "data-location": r.location, "data-state": state },
            el("td", { text: r.location }),
            el("td", {}, el("span", { class: `badge state-${state === "unknown" ? "pending" : state}`, text: state })),
            el("td", { class: "num", text: fmtUptime(r.uptime) }),
            el("td", { class: "num", text: fmtLatency(r.latency_p50 ?? r.p50) }),
            el("td", { text: latest(r).checked_at ? fmtAgo(latest(r).checked_at) : "—" }),
            el("td", { class: "muted", text: latest(r).error ?? r.error ?? "" }),
          );
        }),
      ),
    ),
  ];
}
