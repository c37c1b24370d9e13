// Status pages in the dashboard: list this tenant's pages, create and edit one (settings,
// sections and their order, the monitors of each), preview what it shows (STATUS_PAGE_VIEW,
// members-only pages too) and copy badge Markdown. Everything user-written is set as text.

import { $, el, errorText, toast } from "./dom.js";
import { model, session } from "./store.js";
import { Pkg } from "./wp-client.js";

let pages = [];
let draft = null; // {id, version, slug, title, ..., sections: [{title, monitors: [ids]}]}

export async function loadPages() {
  if (!session.client) return;
  try {
    pages = await session.client.call(Pkg.STATUS_PAGE_LIST, { per_page: 100 });
  } catch {
    pages = [];
  }
  paintList();
}

function pageUrl(p) {
  return `${location.origin}/status/${encodeURIComponent(p.slug)}`;
}

function paintList() {
  const list = $("#page-list");
  list.replaceChildren(
    ...pages.map((p) =>
      el(
        "li",
        { class: "page-item", dataset: { pageId: String(p.id) }, "data-testid": "page-item" },
        el("span", { class: "page-title", text: p.title }),
        el("span", { class: "pill", text: p.public ? "public" : "members" }),
        el("button", { type: "button", class: "btn ghost", text: "Preview", "data-testid": "page-preview", onclick: () => preview(p) }),
        el("button", { type: "button", class: "btn ghost editor-only", text: "Edit", "data-testid": "page-edit", onclick: () => openEditor(p) }),
      ),
    ),
  );
  $("#page-empty").hidden = pages.length > 0;
}

function monitorName(id) {
  return model.monitors.get(id)?.name ?? `#${id}`;
}

function dialog() {
  let d = $("#page-dialog");
  if (d) return d;
  d = el("dialog", { id: "page-dialog", class: "card page-dialog", "data-testid": "page-dialog" });
  document.body.append(d);
  return d;
}

function field(label, name, value, attrs = {}) {
  return el("label", {}, label, el("input", { name, value: value ?? "", "data-testid": `page-${name}`, ...attrs }));
}

function openEditor(p = null) {
  draft = p
    ? { ...p, sections: p.sections.map((s) => ({ title: s.title, monitors: [...s.monitors] })) }
    : { id: null, version: null, slug: "", title: "", description: "", logo_url: "", footer: "", public: false,
        uptime_window: "24h", show_latency: false, sections: [{ title: "Services", monitors: [] }] };
  paintEditor();
  const d = dialog();
  if (!d.open) d.showModal();
}

function readFields() {
  const form = $("#page-form");
  for (const k of ["slug", "title", "description", "logo_url", "footer"]) draft[k] = form.elements[k].value;
  draft.public = form.elements.public.checked;
  draft.show_latency = form.elements.show_latency.checked;
  draft.uptime_window = form.elements.uptime_window.value;
  form.querySelectorAll("[data-section]").forEach((node) => {
    draft.sections[Number(node.dataset.section)].title = node.querySelector("input").value;
  });
}

function move(i, delta) {
  readFields();
  const j = i + delta;
  if (j < 0 || j >= draft.sections.length) return;
  [draft.sections[i], draft.sections[j]] = [draft.sections[j], draft.sections[i]];
  paintEditor();
}

function sectionEditor(s, i) {
  const used = new Set(draft.sections.flatMap((x) => x.monitors));
  const choices = [...model.monitors.values()].filter((m) => !used.has(m.id)).sort((a, b) => a.name.localeCompare(b.name));
  const picker = el(
    "select",
    { "data-testid": "section-add-monitor", "aria-label": "Add a monitor" },
    el("option", { value: "", text: "Add monitor…" }),
    choices.map((m) => el("option", { value: String(m.id), text: m.name })),
  );
  picker.addEventListener("change", () => {
    if (!picker.value) return;
    readFields();
    s.monitors.push(Number(picker.value));
    paintEditor();
  });
  return el(
    "fieldset",
    { class: "section-edit", dataset: { section: String(i) }, "data-testid": "section-edit" },
    el("div", { class: "section-head" },
      el("input", { value: s.title, "aria-label": "Section title", "data-testid": "section-title" }),
      el("button", { type: "button", class: "btn ghost", text: "↑", title: "Move up", "data-testid": "section-up", onclick: () => move(i, -1) }),
      el("button", { type: "button", class: "btn ghost", text: "↓", title: "Move down", "data-testid": "section-down", onclick: () => move(i, 1) }),
      el("button", { type: "button", class: "btn ghost", text: "Remove", onclick: () => { readFields(); draft.sections.splice(i, 1); paintEditor(); } }),
    ),
    el("ul", { class: "chips" },
      s.monitors.map((id, k) =>
        el("li", { class: "chip", "data-testid": "section-monitor" }, monitorName(id),
          el("button", { type: "button", class: "btn ghost", text: "✕", "aria-label": `Remove ${monitorName(id)}`,
            onclick: () => { readFields(); s.monitors.splice(k, 1); paintEditor(); } }))),
    ),
    picker,
  );
}

function badgeMarkdown(p) {
  const ids = p.sections.flatMap((s) => s.monitors);
  return ids
    .map((id) => {
      const name = monitorName(id);
      const badge = `${location.origin}/badge/${encodeURIComponent(p.slug)}/${encodeURIComponent(name)}/status.svg`;
      return `[![${name} status](${badge})](${pageUrl(p)})`;
    })
    .join("\n");
}

async function copyBadges(p) {
  const box = $("#page-badges");
  box.hidden = false;
  box.value = badgeMarkdown(p);
  box.select();
  try {
    await navigator.clipboard.writeText(box.value);
    toast("Badge Markdown copied");
  } catch {
    toast("Select the Markdown and copy it");
  }
}

function paintEditor() {
  const d = dialog();
  const form = el(
    "form",
    { id: "page-form", method: "dialog", novalidate: true, "data-testid": "page-form" },
    el("h2", { text: draft.id ? `Edit ${draft.title}` : "New status page" }),
    el("div", { class: "grid" },
      field("Slug", "slug", draft.slug, { placeholder: "acme", required: true }),
      field("Title", "title", draft.title, { required: true }),
      field("Description", "description", draft.description),
      field("Logo URL", "logo_url", draft.logo_url, { placeholder: "https://…" }),
      field("Footer", "footer", draft.footer),
      el("label", {}, "Uptime window",
        el("select", { name: "uptime_window", "data-testid": "page-uptime_window" },
          ["24h", "7d", "30d"].map((w) => el("option", { value: w, text: w, selected: w === draft.uptime_window })))),
      el("label", { class: "check" }, el("input", { name: "public", type: "checkbox", checked: draft.public, "data-testid": "page-public" }), " Public"),
      el("label", { class: "check" }, el("input", { name: "show_latency", type: "checkbox", checked: draft.show_latency }), " Show latency"),
    ),
    el("h3", { text: "Sections" }),
    draft.sections.map(sectionEditor),
    el("button", { type: "button", class: "btn", text: "Add section", "data-testid": "section-new",
      onclick: () => { readFields(); draft.sections.push({ title: "New section", monitors: [] }); paintEditor(); } }),
    el("textarea", { id: "page-badges", class: "badges", rows: "4", readonly: true, hidden: true, "data-testid": "page-badges" }),
    el("p", { id: "page-error", class: "error", role: "alert", "data-testid": "page-error" }),
    el("div", { class: "actions" },
      draft.id ? el("button", { type: "button", class: "btn", text: "Copy badge Markdown", "data-testid": "page-copy-badges",
        onclick: () => { readFields(); copyBadges(draft); } }) : null,
      el("button", { type: "button", class: "btn ghost", text: "Cancel", onclick: () => d.close() }),
      el("button", { type: "submit", class: "btn primary", text: "Save", "data-testid": "page-save" }),
    ),
  );
  form.addEventListener("submit", async (ev) => {
    ev.preventDefault();
    readFields();
    const data = {
      slug: draft.slug, title: draft.title, description: draft.description, footer: draft.footer,
      logo_url: draft.logo_url || null, public: draft.public, show_latency: draft.show_latency,
      uptime_window: draft.uptime_window, sections: draft.sections,
    };
    try {
      const saved = draft.id
        ? await session.client.call(Pkg.STATUS_PAGE_UPDATE, { id: draft.id, version: draft.version, ...data })
        : await session.client.call(Pkg.STATUS_PAGE_CREATE, data);
      Object.assign(draft, saved);
      toast("Status page saved");
      await loadPages();
      paintEditor();
    } catch (err) {
      $("#page-error").textContent = errorText(err);
    }
  });
  d.replaceChildren(form);
}

async function preview(p) {
  const d = dialog();
  d.replaceChildren(el("p", { text: "Loading…" }));
  if (!d.open) d.showModal();
  try {
    const view = await session.client.call(Pkg.STATUS_PAGE_VIEW, { id: p.id });
    d.replaceChildren(
      el("div", { class: "page-preview", "data-testid": "page-preview-view" },
        el("h2", { text: view.title }),
        el("p", { text: view.description }),
        view.sections.map((s) =>
          el("section", { "data-testid": "preview-section" }, el("h3", { text: s.title }),
            el("ul", {}, s.monitors.map((m) => el("li", { dataset: { state: m.state } }, `${m.name} — ${m.state}`))))),
        el("div", { class: "actions" },
          p.public ? el("a", { href: pageUrl(p), target: "_blank", rel: "noopener", class: "btn", text: "Open public page" }) : null,
          el("button", { type: "button", class: "btn primary", text: "Close", onclick: () => d.close() })),
      ),
    );
  } catch (err) {
    d.replaceChildren(el("p", { class: "error", text: errorText(err) }));
  }
}

export function wirePages() {
  $("#page-new").addEventListener("click", () => openEditor());
}
