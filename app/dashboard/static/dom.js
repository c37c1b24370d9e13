// Small DOM and formatting helpers shared by the dashboard modules.

import { WatchpostError } from "./wp-client.js";

export const $ = (sel, root = document) => root.querySelector(sel);

/** Builds an element: attrs (class, text, dataset, on<event>, plain attributes) and children (nested arrays ok). */
export function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (v === null || v === undefined || v === false) continue;
    if (k === "class") node.className = v;
    else if (k === "text") node.textContent = v;
    else if (k.startsWith("on")) node.addEventListener(k.slice(2), v);
    else if (k === "dataset") Object.assign(node.dataset, v);
    else node.setAttribute(k, v === true ? "" : v);
  }
  for (const c of children.flat(Infinity)) if (c !== null && c !== undefined && c !== false) node.append(c);
  return node;
}

export function svg(tag, attrs = {}) {
  const node = document.createElementNS("http://www.w3.org/2000/svg", tag);
  for (const [k, v] of Object.entries(attrs)) node.setAttribute(k, v);
  return node;
}

/** Asks app.js to open a monitor's detail view (keeps list and incident modules free of it). */
export function requestOpenMonitor(id) {
  document.dispatchEvent(new CustomEvent("wp:open-monitor", { detail: id }));
}

export function fmtLatency(ms) {
  if (ms === null || ms === undefined || Number.isNaN(ms)) return "–";
  if (ms >= 1000) return `${(ms / 1000).toFixed(ms >= 10000 ? 0 : 1)} s`;
  return `${Math.round(ms)} ms`;
}

export function fmtUptime(u) {
  if (u === null || u === undefined || Number.isNaN(u)) return "–";
  const pct = u <= 1 ? u * 100 : u; // accept a ratio or a percentage
  return `${pct >= 99.995 ? "100" : pct.toFixed(2)}%`;
}

export function toDate(v) {
  if (v === null || v === undefined) return null;
  if (typeof v === "number") return new Date(v < 1e12 ? v * 1000 : v);
  const d = new Date(v);
  return Number.isNaN(d.getTime()) ? null : d;
}

export function fmtTime(v) {
  const d = toDate(v);
  return d ? d.toLocaleString() : "–";
}

/** Time of day for today's timestamps, date and time otherwise. */
export function fmtClock(v) {
  const d = toDate(v);
  if (!d) return "–";
  return d.toDateString() === new Date().toDateString() ? d.toLocaleTimeString() : d.toLocaleString();
}

/** "user:alice" / "token:7" / {username} -> something a person reads. */
export function actorName(who) {
  if (who && typeof who === "object") return who.username ?? who.name ?? "someone";
  return String(who).replace(/^user:/, "");
}

export function fmtAgo(v) {
  const d = toDate(v);
  if (!d) return "–";
  const s = Math.max(0, Math.round((Date.now() - d.getTime()) / 1000));
  if (s < 60) return `${s}s ago`;
  if (s < 3600) return `${Math.floor(s / 60)}m ago`;
  if (s < 86400) return `${Math.floor(s / 3600)}h ${Math.floor((s % 3600) / 60)}m ago`;
  return `${Math.floor(s / 86400)}d ago`;
}

let toastTimer = null;
/** A short message at the bottom of the page; errors stay longer. */
export function toast(message, kind = "info") {
  const box = $("#toast");
  box.textContent = message;
  box.dataset.kind = kind;
  box.hidden = false;
  clearTimeout(toastTimer);
  toastTimer = setTimeout(() => (box.hidden = true), kind === "error" ? 8000 : 4000);
}

/** A sentence for people from any failure, with the server's per-field errors when they add something. */
export function errorText(err) {
  if (err instanceof WatchpostError) {
    const details = err.errors
      .filter((e) => !err.message.includes(e.msg)) // the summary often already says it
      .map((e) => `${e.path ?? ""}: ${e.msg}`)
      .join("; ");
    return details ? `${err.message} (${details})` : err.message;
  }
  return String(err && err.message ? err.message : err);
}
