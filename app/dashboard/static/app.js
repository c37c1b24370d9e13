// Watchpost dashboard: log in, open one WebSocket, load a compact summary, then live on
// deltas (900/901/902/903). No build step: plain ES modules, nothing loaded from elsewhere.
// This module owns the session (login, connection state, tenant switch) and wires the page;
// the views live in monitor-list.js, incidents.js, detail.js and monitor-form.js.

import { auth } from "./auth.js";
import { closeDetail, openDetail } from "./detail.js";
import { $, el, errorText } from "./dom.js";
import { wireList } from "./monitor-list.js";
import { openForm, showKindFields, submitForm, testForm } from "./monitor-form.js";
import { applyLocationState, loadProbes, resetProbes } from "./probes.js";
import { loadPages, wirePages } from "./status-pages.js";
import { addPainter, invalidate, model, session } from "./store.js";
import {
  applyIncidentEvent,
  applyMonitorEvent,
  applyRoleChange,
  loadIncidents,
  loadSummary,
  reloadAll,
} from "./sync.js";
import { Pkg, State, WatchpostClient } from "./wp-client.js";

const SUMMARY_REFRESH_MS = 60000; // latency and uptime between state changes come from a periodic summary
const TENANT_KEY = "watchpost.tenant";

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
    ...tenants.map((t) => el("option", { value: t.slug, selected: t.slug === current, text: t.name || t.slug })),
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
  session.client.setTenant(slug);
  afterReload();
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

addPainter(["role"], paintRole);
addPainter(["tenants"], paintTenants);

// ---- session lifecycle -----------------------------------------------------------------------------

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
  if (session.client) {
    const c = session.client;
    session.client = null;
    c.close();
  }
  closeDetail();
  model.monitors = new Map();
  model.incidents = new Map();
  model.me = null;
  model.loaded = false;
  resetProbes();
  invalidate("order", "counts", "incidents", "role");
  paintConnState(State.IDLE);
  showLogin(message);
}

function startSession() {
  showDashboard();
  const url = new URL(location.href);
  model.tenant = url.searchParams.get("tenant") || sessionStorage.getItem(TENANT_KEY) || null;
  session.client = new WatchpostClient({
    url: "/web",
    tenant: model.tenant,
    getToken: () => auth.accessToken(),
    refreshToken: () => auth.refresh(),
  });
  const c = session.client;
  c.onState((state, info) => {
    if (c !== session.client) return;
    if (state === "lagged") {
      // 4009: the server dropped us for reading too slowly; reload rather than trust replay.
      needReload = true;
      return;
    }
    paintConnState(state, info);
    if (state === State.OPEN && needReload) {
      needReload = false;
      reloadAll().then(loadProbes);
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
  c.onEvent((ev) => {
    if (c === session.client && ev.pkg_id === Pkg.EVENT_ROLE_CHANGED) {
      applyRoleChange(ev.data);
      afterReload();
    }
  });
  c.subscribe(["monitors"], {
    onEvent: (ev) => ((ev.pkgId ?? ev.pkg_id) === Pkg.EVENT_LOCATION_STATE ? applyLocationState(ev) : applyMonitorEvent(ev)),
    onReset: () => loadSummary().catch(() => {}),
  });
  c.subscribe(["incidents"], {
    onEvent: (ev) => applyIncidentEvent(ev),
    onReset: () => loadIncidents().catch(() => {}),
  });
  needReload = false;
  c.connect().then(
    () => {
      reloadAll().then(loadProbes);
      loadPages();
    },
    () => {},
  );
  clearInterval(summaryTimer);
  summaryTimer = setInterval(() => {
    const idle = c === session.client && c.state === State.OPEN && !model.monitorReload;
    if (idle && document.visibilityState === "visible") {
      loadSummary("refresh").catch(() => {});
    }
  }, SUMMARY_REFRESH_MS);
}

/** The probes panel follows what WHOAMI allows: ask again once a reload or role change settled. */
function afterReload() {
  setTimeout(() => {
    if (session.client && model.me) loadProbes().catch(() => {});
  }, 1000);
}

// ---- wiring ----------------------------------------------------------------------------------------------

function wire() {
  wirePages();
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

  wireList();
  document.addEventListener("wp:open-monitor", (ev) => openDetail(ev.detail));
  $("#monitor-new").addEventListener("click", () => openForm(null));
  $("#detail-close").addEventListener("click", closeDetail);
  document.addEventListener("keydown", (ev) => {
    if (ev.key === "Escape" && !$("#monitor-dialog").open) closeDetail();
  });
  $("#monitor-form").addEventListener("submit", submitForm);
  $("#form-test").addEventListener("click", testForm);
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
