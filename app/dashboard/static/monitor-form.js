// The create/edit monitor form (a <dialog>): fields per kind, UPDATE with the optimistic
// version, and the server's validation errors shown in place.

import { $, errorText, toast } from "./dom.js";
import { monitorChanged, session } from "./store.js";
import { loadSummary } from "./sync.js";
import { Pkg, RSP, WatchpostError } from "./wp-client.js";

// Inputs that take the monitor's value as it is (lists and checkboxes are handled apart).
const PLAIN_FIELDS = [
  "name", "kind", "url", "method", "keyword", "host", "port", "interval", "timeout",
  "fail_threshold", "recover_threshold", "min_up", "description", "max_redirects",
  "degraded_latency_ms", "body",
];

// Kinds whose checks evaluate `conditions` (app/monitoring/definition.py CONDITION_SUBJECTS).
const CONDITION_KINDS = ["http", "websocket", "dns", "tcp"];

// Fields of the kinds whose own settings live in the monitor's `options` object.
const OPTION_FIELDS = {
  dns: ["record_type", "resolver", "resolver_port", "expected", "match"],
  postgres: ["connection_string"],
  redis: ["connection_string"],
  websocket: ["subprotocol", "headers", "send", "expect", "expect_json"],
  ping: ["count", "max_loss"],
};

let formVersion = null; // optimistic-concurrency version of the monitor being edited

function parseExpected(text) {
  // "200-299, 301" -> ["200-299", 301]
  return text
    .split(",")
    .map((s) => s.trim())
    .filter(Boolean)
    .map((s) => (/^\d+$/.test(s) ? Number(s) : s));
}

// "X-Env: prod" lines <-> {"X-Env": "prod"}; secret values arrive masked (***) and are
// sent back as *** so the server keeps the stored ones.
function headersText(headers) {
  return Object.entries(headers ?? {}).map(([k, v]) => `${k}: ${v}`).join("\n");
}

function parseHeaders(text) {
  const out = {};
  for (const line of text.split("\n")) {
    const at = line.indexOf(":");
    if (at > 0) out[line.slice(0, at).trim()] = line.slice(at + 1).trim();
  }
  return out;
}

function authPayload(f) {
  const type = f.auth_type.value;
  if (!type) return null;
  if (type === "bearer") return { type, token: f.auth_secret.value };
  return { type, username: f.auth_username.value, password: f.auth_secret.value };
}

export function showKindFields(kind) {
  for (const box of document.querySelectorAll("#monitor-form [data-kinds]")) {
    box.hidden = !box.dataset.kinds.split(" ").includes(kind);
  }
}

export async function openForm(id = null) {
  const form = $("#monitor-form");
  form.reset();
  $("#form-error").textContent = "";
  formVersion = null;
  form.elements.id.value = id ?? "";
  $("#form-title").textContent = id ? "Edit monitor" : "New monitor";
  if (id) {
    try {
      const m = (await session.client.call(Pkg.MONITOR_GET, { id })) ?? {};
      const mon = m.monitor ?? m;
      formVersion = mon.version ?? null;
      for (const name of PLAIN_FIELDS) {
        if (mon[name] !== undefined && mon[name] !== null) form.elements[name].value = mon[name];
      }
      form.elements.verify_tls.checked = mon.verify_tls !== false;
      form.elements.follow_redirects.checked = mon.follow_redirects !== false;
      if (mon.grace !== undefined && mon.grace !== null) form.elements.grace.value = mon.grace;
      form.elements.expected_status.value = (mon.expected_status ?? []).join(", ");
      form.elements.tags.value = (mon.tags ?? []).join(", ");
      form.elements.locations.value = (mon.locations ?? ["local"]).join(", ");
      form.elements.quorum.value = mon.quorum ?? 1;
      form.elements.members.value = (mon.members ?? []).join(", ");
      form.elements.headers.value = headersText(mon.headers);
      form.elements.conditions.value = (mon.conditions ?? []).join("\n");
      form.elements.cert_alert_days.value = (mon.cert_alert_days ?? []).join(", ");
      form.elements.auth_type.value = mon.auth?.type ?? "";
      form.elements.auth_username.value = mon.auth?.username ?? "";
      form.elements.auth_secret.value = mon.auth?.password ?? mon.auth?.token ?? "";
      fillOptions(form, mon.options ?? {});
      form.elements.depends_on.value = (mon.depends_on ?? []).join(", ");
      form.elements.escalation_policy.value = mon.escalation_policy ?? "";
      form.elements.covers_members.checked = mon.covers_members === true;
    } catch (err) {
      toast(errorText(err), "error");
      return;
    }
  }
  $("#form-test-result").textContent = "";
  showKindFields(form.elements.kind.value);
  $("#monitor-dialog").showModal();
}

function fillOptions(form, options) {
  const f = form.elements;
  for (const [name, value] of Object.entries(options)) {
    if (value === null || value === undefined) continue;
    if (name === "expected") f.expected.value = value.join(", ");
    else if (name === "headers") {
      f.ws_headers.value = Object.entries(value).map(([k, v]) => `${k}: ${v}`).join("\n");
    } else if (name === "expect_json") f.expect_json.value = JSON.stringify(value);
    else if (f[name]) f[name].value = value;
  }
}

// The kind's options from the form; a field left empty is left out (the server's default).
function optionsPayload(form, kind) {
  const f = form.elements;
  const options = {};
  for (const name of OPTION_FIELDS[kind] ?? []) {
    if (name === "headers") {
      const headers = {};
      for (const line of f.ws_headers.value.split("\n")) {
        const at = line.indexOf(":");
        if (at > 0) headers[line.slice(0, at).trim()] = line.slice(at + 1).trim();
      }
      if (Object.keys(headers).length) options.headers = headers;
      continue;
    }
    const raw = f[name].value.trim();
    if (raw === "") continue;
    if (name === "expected") options.expected = raw.split(",").map((s) => s.trim()).filter(Boolean);
    else if (["resolver_port", "count", "max_loss"].includes(name)) options[name] = Number(raw);
    else if (name === "expect_json") {
      try {
        options.expect_json = JSON.parse(raw);
      } catch {
        throw new Error('"First answer JSON holds" is not valid JSON, e.g. {"status": "UP"}');
      }
    } else options[name] = f[name].value;
  }
  return options;
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
    depends_on: list(f.depends_on.value).map(Number),
    escalation_policy: f.escalation_policy.value === "" ? null : Number(f.escalation_policy.value),
  };
  if (kind === "http") {
    Object.assign(data, {
      url: f.url.value.trim(),
      method: f.method.value,
      keyword: f.keyword.value || null,
      verify_tls: f.verify_tls.checked,
      follow_redirects: f.follow_redirects.checked,
      max_redirects: num(f.max_redirects.value) ?? null,
      degraded_latency_ms: num(f.degraded_latency_ms.value) ?? null,
      headers: parseHeaders(f.headers.value),
      body: f.body.value === "" ? null : f.body.value,
      auth: authPayload(f),
    });
    const expected = parseExpected(f.expected_status.value);
    if (expected.length) data.expected_status = expected;
    if (f.cert_alert_days.value.trim() !== "") data.cert_alert_days = list(f.cert_alert_days.value).map(Number);
  } else if (kind === "tcp") {
    Object.assign(data, { host: f.host.value.trim(), port: num(f.port.value) });
  } else if (kind === "push") {
    if (f.grace.value !== "") data.grace = num(f.grace.value);
  } else if (kind === "group") {
    Object.assign(data, {
      members: list(f.members.value).map(Number),
      min_up: num(f.min_up.value),
      covers_members: f.covers_members.checked,
    });
  } else if (kind === "dns" || kind === "ping") {
    data.host = f.host.value.trim();
  } else if (kind === "websocket") {
    Object.assign(data, { url: f.url.value.trim(), verify_tls: f.verify_tls.checked });
  }
  if (kind !== "push" && kind !== "group") {
    const places = list(f.locations.value);
    if (places.length) data.locations = places;
    if (f.quorum.value !== "") data.quorum = num(f.quorum.value);
  }
  if (CONDITION_KINDS.includes(kind)) {
    data.conditions = f.conditions.value.split("\n").map((s) => s.trim()).filter(Boolean);
  }
  if (OPTION_FIELDS[kind]) data.options = optionsPayload(form, kind);
  for (const k of Object.keys(data)) if (data[k] === undefined) delete data[k];
  return data;
}

// "Test": one check of the definition as the form holds it, recorded nowhere
// (MONITOR_CHECK_NOW with an unsaved monitor); the result or the failing reason is shown.
export async function testForm() {
  const form = $("#monitor-form");
  const out = $("#form-test-result");
  const button = $("#form-test");
  $("#form-error").textContent = "";
  out.textContent = "Testing…";
  button.disabled = true;
  try {
    // Alert routing (depends_on, escalation_policy) is not part of what a check tests.
    const { name: _name, depends_on: _deps, escalation_policy: _policy, ...definition } = formPayload(form);
    const answer = await session.client.call(Pkg.MONITOR_CHECK_NOW, { monitor: definition }, { timeoutMs: 65000 });
    const r = answer?.result ?? {};
    const took = r.latency_ms === null || r.latency_ms === undefined ? "" : ` in ${Math.round(r.latency_ms)} ms`;
    out.textContent = r.ok ? `Up${took}` : `Down${took}: ${r.error}`;
    out.className = r.ok ? "ok" : "error";
  } catch (err) {
    out.textContent = "";
    $("#form-error").textContent = errorText(err);
  } finally {
    button.disabled = false;
  }
}

export async function submitForm(ev) {
  ev.preventDefault();
  const form = $("#monitor-form");
  const id = form.elements.id.value ? Number(form.elements.id.value) : null;
  const saveButton = $("#form-save");
  saveButton.disabled = true;
  try {
    const data = formPayload(form);
    if (id) {
      await session.client.call(Pkg.MONITOR_UPDATE, { ...data, id, version: formVersion });
      toast("Monitor saved");
    } else {
      const created = await session.client.call(Pkg.MONITOR_CREATE, data);
      toast(`Monitor "${created?.name ?? data.name}" created`);
    }
    $("#monitor-dialog").close();
    await loadSummary("refresh");
    if (id) monitorChanged(id, "saved");
  } catch (err) {
    if (err instanceof WatchpostError && err.statusCode === RSP.CONFLICT && id) {
      $("#form-error").textContent = `${err.message} — the form now shows the latest version; review and save again.`;
      const latest = await session.client.call(Pkg.MONITOR_GET, { id }).catch(() => null);
      if (latest) formVersion = (latest.monitor ?? latest).version ?? formVersion;
    } else {
      $("#form-error").textContent = errorText(err);
    }
  } finally {
    saveButton.disabled = false;
  }
}
