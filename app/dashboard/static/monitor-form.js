// The create/edit monitor form (a <dialog>): fields per kind, UPDATE with the optimistic
// version, and the server's validation errors shown in place.

import { $, errorText, toast } from "./dom.js";
import { monitorChanged, session } from "./store.js";
import { loadSummary } from "./sync.js";
import { Pkg, RSP, WatchpostError } from "./wp-client.js";

// Inputs that take the monitor's value as it is (lists and checkboxes are handled apart).
const PLAIN_FIELDS = [
  "name", "kind", "url", "method", "keyword", "host", "port", "interval", "timeout",
  "fail_threshold", "recover_threshold", "min_up", "description",
];

let formVersion = null; // optimistic-concurrency version of the monitor being edited

function parseExpected(text) {
  // "200-299, 301" -> ["200-299", 301]
  return text
    .split(",")
    .map((s) => s.trim())
    .filter(Boolean)
    .map((s) => (/^\d+$/.test(s) ? Number(s) : s));
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
      form.elements.members.value = (mon.members ?? []).join(", ");
      form.elements.depends_on.value = (mon.depends_on ?? []).join(", ");
      form.elements.escalation_policy.value = mon.escalation_policy ?? "";
      form.elements.covers_members.checked = mon.covers_members === true;
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
    });
    const expected = parseExpected(f.expected_status.value);
    if (expected.length) data.expected_status = expected;
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
  }
  for (const k of Object.keys(data)) if (data[k] === undefined) delete data[k];
  return data;
}

export async function submitForm(ev) {
  ev.preventDefault();
  const form = $("#monitor-form");
  const id = form.elements.id.value ? Number(form.elements.id.value) : null;
  const data = formPayload(form);
  const saveButton = $("#form-save");
  saveButton.disabled = true;
  try {
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
