// mlcanary status page: polls the controller's JSON API every second, lists every policy and draws
// the opened ones with hand-written SVG charts (a hundred policies cost one list request, not a
// hundred histories). No library, no build step, nothing fetched from outside the controller.
"use strict";

const POLL_MS = 1000;
const W = 560, H = 190, PAD = { l: 52, r: 16, t: 14, b: 24 };

const esc = (s) => String(s ?? "").replace(/[&<>"']/g, (c) =>
  ({ "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" })[c]);
const pct = (bp) => (bp / 100).toFixed(bp % 100 === 0 ? 0 : 2) + "%";
const num = (x) => {
  if (x === null || x === undefined) return "–";
  if (x === 0) return "0";
  const a = Math.abs(x);
  if (a >= 1000) return x.toFixed(0);
  if (a >= 1) return x.toPrecision(4).replace(/\.?0+$/, "");
  return x.toPrecision(3);
};
const clock = (t) => new Date(t).toLocaleTimeString([], { hour12: false });

// ---- charts ---------------------------------------------------------------------------------

function scale(d0, d1, r0, r1) {
  const span = d1 - d0 || 1;
  return (v) => r0 + ((v - d0) / span) * (r1 - r0);
}

// Round tick values for [lo, hi]: 1/2/5 × 10^k steps, about four of them.
function niceTicks(lo, hi) {
  if (hi <= lo) hi = lo + 1;
  const raw = (hi - lo) / 4;
  const mag = Math.pow(10, Math.floor(Math.log10(raw)));
  const step = [1, 2, 5, 10].map((m) => m * mag).find((s) => s >= raw) || raw;
  const out = [];
  for (let v = Math.ceil(lo / step) * step; v <= hi + step * 1e-9; v += step) out.push(+v.toPrecision(12));
  return out;
}

// Polyline path through [t, y] points, broken where y is null. `step`: hold each value until the next.
function path(points, x, y, step) {
  let d = "", prev = null;
  for (const [t, v] of points) {
    if (v === null || v === undefined) { prev = null; continue; }
    const px = x(t).toFixed(1), py = y(v).toFixed(1);
    if (prev === null) d += `M${px},${py}`;
    else if (step) d += `H${px}V${py}`;
    else d += `L${px},${py}`;
    prev = v;
  }
  return d;
}

function frame(x0, x1, yTicks, y, yFmt) {
  const x = scale(x0, x1, PAD.l, W - PAD.r);
  let s = "";
  for (const v of yTicks) {
    const py = y(v).toFixed(1);
    s += `<line class="grid-line" x1="${PAD.l}" x2="${W - PAD.r}" y1="${py}" y2="${py}"/>`;
    s += `<text class="tick" x="${PAD.l - 6}" y="${py}" dy="3" text-anchor="end">${esc(yFmt(v))}</text>`;
  }
  s += `<line class="axis" x1="${PAD.l}" x2="${W - PAD.r}" y1="${H - PAD.b}" y2="${H - PAD.b}"/>`;
  const n = 4;
  for (let i = 0; i <= n; i++) {
    const t = x0 + ((x1 - x0) * i) / n;
    const anchor = i === 0 ? "start" : i === n ? "end" : "middle";
    s += `<text class="tick" x="${x(t).toFixed(1)}" y="${H - 6}" text-anchor="${anchor}">${esc(clock(t))}</text>`;
  }
  return { x, s };
}

const MARK_LABEL = { promoted: "promoted", rolledBack: "rolled back", paused: "paused", resumed: "resumed" };

function weightChart(p, x0, x1) {
  const pts = p.series.weight.map((w) => [w.t, w.bp]);
  const y = scale(0, 10000, H - PAD.b, PAD.t);
  const f = frame(x0, x1, [0, 2500, 5000, 7500, 10000], y, pct);
  let s = f.s;
  const line = path(pts, f.x, y, true);
  if (line) {
    const last = pts[pts.length - 1], first = pts[0];
    s += `<path class="a-weight" d="${line}V${y(0).toFixed(1)}H${f.x(first[0]).toFixed(1)}Z"/>`;
    s += `<path class="l-weight" d="${line}"/>`;
    s += `<circle class="marker-advanced" cx="${f.x(last[0]).toFixed(1)}" cy="${y(last[1]).toFixed(1)}" r="3.5"/>`;
  }
  for (const e of p.series.events) {
    const px = f.x(e.t).toFixed(1);
    if (e.kind === "advanced" || e.kind === "started") {
      const bp = (pts.find((q) => q[0] >= e.t) || pts[pts.length - 1] || [0, 0])[1];
      s += `<g class="marker marker-${e.kind}" data-kind="${e.kind}"><title>${esc(clock(e.t) + " " + e.message)}</title>` +
        `<circle cx="${px}" cy="${y(bp).toFixed(1)}" r="3"/></g>`;
    } else if (MARK_LABEL[e.kind]) {
      const big = e.kind === "promoted" || e.kind === "rolledBack";
      const anchor = f.x(e.t) > W * 0.7 ? "end" : "start";
      const dx = anchor === "end" ? -5 : 5;
      s += `<g class="marker marker-${e.kind}" data-kind="${e.kind}"><title>${esc(clock(e.t) + " " + e.message)}</title>` +
        `<line x1="${px}" x2="${px}" y1="${PAD.t}" y2="${H - PAD.b}"/>` +
        (big ? (e.kind === "promoted"
          ? `<path d="M${px},${PAD.t + 2}l-6,10h12z"/>`
          : `<path d="M${+px - 5},${PAD.t + 2}l10,10M${+px + 5},${PAD.t + 2}l-10,10" stroke-width="2.5"/>`) : "") +
        // Pause / resume labels sit low so they never cover a promotion or rollback label.
        `<text x="${+px + dx}" y="${big ? PAD.t + 26 : H - PAD.b - 6}" text-anchor="${anchor}">${esc(MARK_LABEL[e.kind])}</text></g>`;
    }
  }
  const lastBp = pts.length ? pts[pts.length - 1][1] : "";
  return `<svg class="chart" data-testid="weight-chart" data-points="${pts.length}" data-last-bp="${lastBp}" ` +
    `viewBox="0 0 ${W} ${H}" role="img" aria-label="canary weight over time">${s}</svg>`;
}

function checkChart(name, points, x0, x1) {
  const vals = [];
  for (const q of points) for (const k of ["canary", "stable", "threshold"]) if (q[k] !== null && q[k] !== undefined) vals.push(q[k]);
  let lo = Math.min(0, ...vals), hi = Math.max(...vals, 0);
  if (hi === lo) hi = lo + 1;
  hi += (hi - lo) * 0.08;
  const ticks = niceTicks(lo, hi);
  const y = scale(lo, ticks[ticks.length - 1] > hi ? ticks[ticks.length - 1] : hi, H - PAD.b, PAD.t);
  const f = frame(x0, x1, ticks, y, num);
  let s = f.s;
  s += `<path class="l-limit" d="${path(points.map((q) => [q.t, q.threshold]), f.x, y, true)}"/>`;
  s += `<path class="l-stable" d="${path(points.map((q) => [q.t, q.stable]), f.x, y, false)}"/>`;
  s += `<path class="l-canary" d="${path(points.map((q) => [q.t, q.canary]), f.x, y, false)}"/>`;
  for (const q of points) {
    if (q.verdict === "fail" && q.canary !== null && q.canary !== undefined) {
      s += `<circle class="dot-fail" cx="${f.x(q.t).toFixed(1)}" cy="${y(q.canary).toFixed(1)}" r="3.5"><title>fail at ${esc(clock(q.t))}</title></circle>`;
    }
  }
  const last = points[points.length - 1];
  const has = (k) => points.some((q) => q[k] !== null && q[k] !== undefined);
  // A one-number check (drift: PSI between the variants) has no stable line; say "value" then.
  const key = (k, label) => has(k) ? `<span><i class="key ${k === "threshold" ? "limit" : k}"></i>${label}</span>` : "";
  return `<figure data-check="${esc(name)}" data-points="${points.length}">` +
    `<figcaption>${esc(name)}<span class="legend">${key("canary", has("stable") ? "canary" : "canary vs stable")}` +
    `${key("stable", "stable")}${key("threshold", "threshold")}` +
    (last ? `<span>last: <b class="badge v-${esc(last.verdict)}">${esc(last.verdict)}</b></span>` : "") +
    `</span></figcaption><svg class="chart" viewBox="0 0 ${W} ${H}" role="img" aria-label="${esc(name)}: canary vs stable">${s}</svg></figure>`;
}

// ---- page ---------------------------------------------------------------------------------

function verdictTable(p) {
  if (!p.lastVerdicts.length) return `<p class="empty">No verdict in the last interval (no data yet, or the rollout has ended).</p>`;
  const rows = p.lastVerdicts.map((v) =>
    `<tr data-check="${esc(v.name)}" data-verdict="${esc(v.verdict)}"><td>${esc(v.name)}</td>` +
    `<td><span class="badge v-${esc(v.verdict)}">${esc(v.verdict)}</span></td>` +
    `<td class="num">${num(v.canary)}</td><td class="num">${num(v.stable)}</td><td class="num">${num(v.threshold)}</td>` +
    `<td class="num">${v.interval ? `[${num(v.interval[0])}, ${num(v.interval[1])}]` : "–"}</td>` +
    `<td class="num">${v.nCanary} / ${v.nStable}</td><td class="num">${v.pValue === undefined ? "–" : num(v.pValue)}</td>` +
    `<td>${esc(v.message)}</td></tr>`).join("");
  return `<table data-testid="verdicts"><thead><tr><th>check</th><th>verdict</th><th>canary</th><th>stable</th>` +
    `<th>threshold</th><th title="anytime-valid interval of the canary's value">interval</th><th>n canary / stable</th><th>p</th><th>why</th></tr></thead><tbody>${rows}</tbody></table>`;
}

function historyTable(p) {
  if (!p.history.length) return `<p class="empty">No step yet.</p>`;
  const rows = p.history.slice().reverse().map((h) =>
    `<tr><td class="num">${esc(h.time.replace("T", " ").replace("Z", ""))}</td>` +
    `<td class="num">${pct(h.fromWeightBp)} → ${pct(h.toWeightBp)}</td><td>${esc(h.reason)}</td></tr>`).join("");
  return `<table data-testid="history"><thead><tr><th>time (UTC)</th><th>canary</th><th>reason</th></tr></thead><tbody>${rows}</tbody></table>`;
}

const TERMINAL = ["Promoted", "RolledBack", "Failed"];

// A policy's head, from the list view: enough to scan a hundred of them.
function headHtml(p, open) {
  const steps = p.stepsBp.length;
  const at = p.stepIndex === null || p.stepIndex === undefined ? 0 : p.stepIndex + 1;
  const done = TERMINAL.includes(p.phase);
  const shadow = p.shadowMirrorBp !== null && p.shadowMirrorBp !== undefined;
  const btn = (c, enabled) => `<button data-command="${c}" ${enabled ? "" : "disabled"}>${c}</button>`;
  const verdicts = p.lastVerdicts.map((v) =>
    `<span class="badge v-${esc(v.verdict)}" title="${esc(v.name + ": " + v.message)}">${esc(v.name)}</span>`).join("");
  return `<div class="policy-head">
      <button class="toggle" data-toggle aria-expanded="${open}" title="${open ? "hide" : "show"} charts and history">${open ? "▾" : "▸"}</button>
      <h2>${esc(p.name)}</h2><span class="ns">${esc(p.namespace)}</span>
      <span class="badge phase-${esc(p.phase)}" data-testid="phase">${esc(p.phase)}</span>
      <span class="stat" data-testid="step">step <b>${shadow ? "shadow" : `${at}/${steps}`}</b><span class="progress"><span style="width:${steps ? (100 * at) / steps : 0}%"></span></span></span>
      <span class="stat">canary <b data-testid="weight">${pct(p.canaryWeightBp)}</b>${shadow ? ` <span title="mirrored to the canary; its answers reach no user">· shadow ${pct(p.shadowMirrorBp)}</span>` : ""}</span>
      <span class="stat">failed analyses <b>${p.failedChecks}/${p.failureThreshold}</b></span>
      ${open ? "" : `<span class="stat verdicts">${verdicts}</span>`}
      <span class="actions">${btn("pause", !done && p.phase !== "Paused")}${btn("resume", p.phase === "Paused")}${btn("promote", !done)}${btn("abort", !done)}</span>
    </div>
    <div class="msg" data-testid="message"></div>`;
}

// An opened policy's body, from its detail view (the only one that carries the series).
function bodyHtml(p) {
  const ts = p.series.weight.map((w) => w.t).concat(p.series.events.map((e) => e.t));
  let x0 = Math.min(...ts), x1 = Math.max(...ts);
  if (!ts.length) { x1 = Date.now(); x0 = x1 - 60000; }
  if (x1 - x0 < 10000) x1 = x0 + 10000;
  const checks = Object.entries(p.series.checks);
  return `<div class="grid">
      <figure><figcaption>canary weight<span class="legend"><span><i class="key canary"></i>canary share of traffic</span></span></figcaption>${weightChart(p, x0, x1)}</figure>
      ${checks.map(([name, pts]) => checkChart(name, pts, x0, x1)).join("")}
    </div>
    <div class="two">
      <div class="panel"><h3>Last verdicts</h3>${verdictTable(p)}</div>
      <div class="panel"><h3>History</h3>${historyTable(p)}</div>
    </div>`;
}

const sections = new Map();
// Policies shown with their charts. A few policies are all opened; past that, each opens on click,
// and only the opened ones' details (with their series) are fetched.
const AUTO_OPEN = 3;
const opened = new Set();
const closed = new Set();
const isOpen = (key, count) => opened.has(key) || (count <= AUTO_OPEN && !closed.has(key));
// A policy is its namespace and name: two namespaces may use one name.
const keyOf = (p) => `${p.namespace}/${p.name}`;
const pathOf = (p) => `/api/policies/${encodeURIComponent(p.namespace)}/${encodeURIComponent(p.name)}`;

function render(list, details) {
  const main = document.getElementById("policies");
  if (!list.length) { main.innerHTML = `<p class="empty">No policy yet.</p>`; sections.clear(); return; }
  main.querySelector(".empty")?.remove();
  const keys = new Set(list.map(keyOf));
  for (const [key, el] of sections) if (!keys.has(key)) { el.remove(); sections.delete(key); }
  for (const p of list) {
    let el = sections.get(keyOf(p));
    if (!el) {
      el = document.createElement("section");
      el.className = "policy";
      el.dataset.policy = p.name;
      el.dataset.namespace = p.namespace;
      el.addEventListener("click", onCommand);
      main.appendChild(el);
      sections.set(keyOf(p), el);
    }
    const msg = el.querySelector("[data-testid=message]")?.textContent || "";
    const d = details.get(keyOf(p));
    el.dataset.phase = p.phase;
    el.dataset.open = d ? "true" : "false";
    el.innerHTML = headHtml(d || p, !!d) + (d ? bodyHtml(d) : "");
    el.querySelector("[data-testid=message]").textContent = msg;
  }
}

async function onCommand(ev) {
  const t = ev.target.closest("button[data-toggle]");
  if (t) {
    const key = keyOf(sectionPolicy(t.closest("section.policy")));
    const open = t.getAttribute("aria-expanded") === "true";
    if (open) { opened.delete(key); closed.add(key); } else { opened.add(key); closed.delete(key); }
    poll();
    return;
  }
  const b = ev.target.closest("button[data-command]");
  if (!b) return;
  const section = b.closest("section.policy");
  const cmd = b.dataset.command;
  const msg = section.querySelector("[data-testid=message]");
  msg.textContent = `${cmd}…`;
  try {
    const r = await fetch(`${pathOf(sectionPolicy(section))}/${cmd}`, { method: "POST" });
    const body = await r.json().catch(() => ({}));
    msg.textContent = r.ok ? `${cmd}: accepted` : `${cmd}: ${body.error || r.status}`;
  } catch (e) {
    msg.textContent = `${cmd}: ${e}`;
  }
  poll();
}

const sectionPolicy = (el) => ({ namespace: el.dataset.namespace, name: el.dataset.policy });

async function getJson(url) {
  const r = await fetch(url, { cache: "no-store" });
  if (!r.ok) throw new Error(`${url}: ${r.status}`);
  return r.json();
}

let timer = null;
async function poll() {
  clearTimeout(timer);
  const conn = document.getElementById("conn");
  try {
    const list = await getJson("/api/policies");
    const shown = list.filter((p) => isOpen(keyOf(p), list.length));
    const got = await Promise.all(shown.map((p) => getJson(pathOf(p))));
    render(list, new Map(got.map((d) => [keyOf(d), d])));
    conn.className = "conn live";
    conn.textContent = `live · ${clock(Date.now())}`;
  } catch (e) {
    conn.className = "conn down";
    conn.textContent = `controller unreachable (${e.message}); retrying`;
  }
  timer = setTimeout(poll, POLL_MS);
}

poll();
