// One check result's outcome and latency, and the inline SVG latency chart (no library, no CDN).

import { fmtLatency, svg, toDate } from "./dom.js";

/** When the result was taken (ms since the epoch), whatever the field is called. */
export function resultTime(r) {
  return toDate(r.ts ?? r.checked_at ?? r.at)?.getTime() ?? 0;
}

export function resultOk(r) {
  if (typeof r.ok === "boolean") return r.ok;
  if (typeof r.success === "boolean") return r.success;
  const s = r.status ?? r.state;
  return s === "up" || s === "ok" || s === "success";
}

export function resultLatency(r) {
  return r.latency_ms ?? r.latency ?? r.duration_ms ?? null;
}

export function latencyChart(history) {
  const W = 640;
  const H = 160;
  const PAD = { l: 58, r: 10, t: 12, b: 22 };
  const pts = history
    .map((r) => ({ t: resultTime(r) || undefined, v: resultLatency(r), ok: resultOk(r) }))
    .filter((p) => p.t)
    .sort((a, b) => a.t - b.t);
  const root = svg("svg", {
    viewBox: `0 0 ${W} ${H}`,
    class: "chart",
    role: "img",
    "aria-label": "Latency of recent checks",
    "data-testid": "latency-chart",
  });
  if (pts.length === 0) {
    const t = svg("text", { x: W / 2, y: H / 2, "text-anchor": "middle", class: "chart-empty" });
    t.textContent = "No results yet";
    root.append(t);
    return root;
  }
  const t0 = pts[0].t;
  const t1 = Math.max(pts[pts.length - 1].t, t0 + 1);
  const vmax = Math.max(10, ...pts.map((p) => p.v ?? 0)) * 1.1;
  const x = (t) => PAD.l + ((t - t0) / (t1 - t0)) * (W - PAD.l - PAD.r);
  const y = (v) => H - PAD.b - (v / vmax) * (H - PAD.t - PAD.b);
  for (const frac of [0, 0.5, 1]) {
    const v = vmax * frac;
    root.append(svg("line", { x1: PAD.l, x2: W - PAD.r, y1: y(v), y2: y(v), class: "grid" }));
    const label = svg("text", { x: PAD.l - 6, y: y(v) + 4, "text-anchor": "end", class: "axis" });
    label.textContent = fmtLatency(v);
    root.append(label);
  }
  for (const [t, anchor] of [
    [t0, "start"],
    [t1, "end"],
  ]) {
    const label = svg("text", { x: x(t), y: H - 6, "text-anchor": anchor, class: "axis" });
    label.textContent = new Date(t).toLocaleTimeString();
    root.append(label);
  }
  const line = pts
    .filter((p) => p.v !== null && p.v !== undefined)
    .map((p) => `${x(p.t).toFixed(1)},${y(p.v).toFixed(1)}`);
  if (line.length) root.append(svg("polyline", { points: line.join(" "), class: "latency-line" }));
  for (const p of pts) {
    if (!p.ok) root.append(svg("circle", { cx: x(p.t), cy: y(p.v ?? 0), r: 3.5, class: "fail-dot" }));
  }
  return root;
}
