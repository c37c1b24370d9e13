// Open and acknowledged incidents: the panel, the acknowledge button (302) and the
// normalisation of EVENT_INCIDENT (903) payloads.

import { $, actorName, el, errorText, fmtAgo, fmtClock, fmtTime, requestOpenMonitor, toast, toDate } from "./dom.js";
import { addPainter, invalidate, model, session } from "./store.js";
import { Pkg } from "./wp-client.js";

function openedAt(i) {
  return toDate(i.opened_at ?? i.started_at)?.getTime() ?? 0;
}

export function isOpenIncident(i) {
  const status = i.status ?? i.state;
  if (status) return status !== "resolved" && status !== "closed";
  return !i.resolved_at;
}

export function incidentAcked(i) {
  return Boolean(i.acknowledged_at ?? i.acked_at ?? i.ack_at ?? i.acknowledged_by ?? i.acked_by);
}

function paintIncidents() {
  const list = $("#incident-list");
  const items = [...model.incidents.values()].sort(
    (a, b) => openedAt(b) - openedAt(a),
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
            onclick: () => requestOpenMonitor(mid),
          }),
          el("span", {
            class: "muted",
            title: fmtTime(opened),
            text: ` down ${fmtAgo(opened).replace(" ago", "")} · since ${fmtClock(opened)}`,
          }),
          i.cause || i.message || i.reason
            ? el("div", { class: "incident-cause", text: i.cause ?? i.message ?? i.reason })
            : null,
          outageNote(i, items),
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

/** "part of <parent>'s outage" for an attached incident; "N attached" for a parent. */
function outageNote(i, items) {
  const attached = items.filter((c) => c.parent_id === i.id);
  if (i.parent_id) {
    const parent = model.incidents.get(i.parent_id);
    const pname = parent ? model.monitors.get(parent.monitor_id)?.name : null;
    return el("div", {
      class: "muted",
      "data-testid": "incident-parent",
      text: `part of ${pname ?? `incident #${i.parent_id}`}'s outage (no alert of its own)`,
    });
  }
  if (!attached.length) return null;
  const names = attached.map((c) => model.monitors.get(c.monitor_id)?.name ?? `#${c.monitor_id}`);
  return el("div", {
    class: "muted",
    "data-testid": "incident-attached",
    text: `${attached.length} attached: ${names.slice(0, 10).join(", ")}${names.length > 10 ? " …" : ""}`,
  });
}

async function ackIncident(id, button) {
  button.disabled = true;
  try {
    const data = await session.client.call(Pkg.INCIDENT_ACK, { id });
    const known = data && typeof data === "object" && data.id !== undefined;
    applyIncident(known ? data : { id, acknowledged_at: Date.now() });
    toast("Incident acknowledged");
  } catch (err) {
    button.disabled = false;
    toast(`Could not acknowledge: ${errorText(err)}`, "error");
  }
}

export function applyIncident(inc) {
  if (!inc || inc.id === undefined) return;
  const prev = model.incidents.get(inc.id);
  const merged = { ...(prev ?? {}), ...inc };
  if (isOpenIncident(merged)) model.incidents.set(inc.id, merged);
  else model.incidents.delete(inc.id);
  invalidate("incidents");
}

/** The incident inside a 903 payload ({action, incident}), marked resolved when it was. */
export function incidentFromEvent(d) {
  if (!d) return null;
  const inc = { ...(d.incident ?? d) };
  if (inc.id === undefined && d.incident_id !== undefined) inc.id = d.incident_id;
  const action = d.action ?? d.event ?? d.change;
  if (action === "resolved" && !inc.resolved_at) inc.resolved_at = d.at ?? Date.now();
  if (action === "resolved" && !inc.status) inc.status = "resolved";
  return inc;
}

addPainter(["incidents"], paintIncidents);
