// The dashboard: per-target health and spend, polled from this gateway's JSON endpoints.
"use strict";
const SVG = "http://www.w3.org/2000/svg";
const params = new URLSearchParams(location.search);
const REFRESH_MS = Math.max(100, Number(params.get("refresh")) || 1000);
const HISTORY = 180; // samples kept per target
const history = new Map(); // target id -> [{t, err, p50, state}]
const COLORS = { closed: "var(--ok)", half_open: "var(--warn)", open: "var(--bad)" };

function el(tag, attrs = {}, text) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) node.setAttribute(k, v);
  if (text !== undefined) node.textContent = text;
  return node;
}

function svg(tag, attrs = {}) {
  const node = document.createElementNS(SVG, tag);
  for (const [k, v] of Object.entries(attrs)) node.setAttribute(k, v);
  return node;
}

const fmtMs = (v) => (v === null || v === undefined ? "–" : v < 1000 ? Math.round(v) + " ms" : (v / 1000).toFixed(2) + " s");
const fmtPct = (v) => (v === null || v === undefined ? "–" : (v * 100).toFixed(v < 0.1 ? 1 : 0) + "%");
const fmtUsd = (v) => "$" + (v >= 1 ? v.toFixed(2) : v.toFixed(6));

function sparkline(samples) {
  const w = 300, h = 46;
  const s = svg("svg", { class: "spark", viewBox: `0 0 ${w} ${h}`, preserveAspectRatio: "none" });
  if (samples.length < 2) return s;
  const step = w / (Math.max(samples.length, 30) - 1); // fills up as samples arrive
  const x0 = w - (samples.length - 1) * step;
  const maxLat = Math.max(1, ...samples.map((p) => p.p50 || 0));
  const area = samples.map((p, i) => `${x0 + i * step},${h - (p.err || 0) * (h - 2)}`);
  s.appendChild(svg("polygon", { points: `${x0},${h} ${area.join(" ")} ${w},${h}`, fill: "var(--bad)", opacity: "0.25" }));
  const line = samples.map((p, i) => `${x0 + i * step},${h - 2 - ((p.p50 || 0) / maxLat) * (h - 6)}`);
  s.appendChild(svg("polyline", { points: line.join(" "), fill: "none", stroke: "var(--accent)", "stroke-width": "1.6", "vector-effect": "non-scaling-stroke" }));
  return s;
}

function timeline(samples) {
  const w = 300, h = 10;
  const s = svg("svg", { class: "timeline", viewBox: `0 0 ${w} ${h}`, preserveAspectRatio: "none" });
  const step = w / Math.max(samples.length, 30);
  const x0 = w - samples.length * step;
  samples.forEach((p, i) => s.appendChild(svg("rect", { x: x0 + i * step, y: 0, width: step + 0.5, height: h, fill: COLORS[p.state] || "var(--line)" })));
  return s;
}

function card(t, samples) {
  const c = el("article", { class: "panel card", "data-target": t.id, "data-state": t.state });
  const top = el("div", { class: "top" });
  top.appendChild(el("h3", {}, t.id));
  if (t.slo) {
    const breached = (t.slo.breached || []).join(", ");
    const title = t.slo.status === "breach" ? `out of SLO: ${breached}` : `SLO ${t.slo.status}`;
    top.appendChild(el("span", { class: `badge slo slo-${t.slo.status}`, title }, t.slo.status === "ok" ? "SLO ok" : t.slo.status === "breach" ? "SLO breach" : "SLO ?"));
  }
  top.appendChild(el("span", { class: `badge state ${t.state}` }, t.state.replace("_", "-")));
  c.appendChild(top);
  c.appendChild(el("div", { class: "muted", style: "font-size:.78rem" }, `${t.type} · ${t.provider}`));
  c.appendChild(sparkline(samples));
  c.appendChild(timeline(samples));
  const kv = el("div", { class: "kv" });
  const lim = t.limits || {};
  const items = [
    ["requests", t.requests], ["error rate", fmtPct(t.error_rate)], ["in flight", t.in_flight],
    ["p50", fmtMs(t.latency_p50_ms)], ["p95", fmtMs(t.latency_p95_ms)], ["ttft p50", fmtMs(t.ttft_p50_ms)],
  ];
  if (lim.rpm_remaining !== null && lim.rpm_remaining !== undefined) items.push(["rpm left", Math.floor(lim.rpm_remaining)]);
  if (lim.tpm_remaining !== null && lim.tpm_remaining !== undefined) items.push(["tpm left", lim.tpm_remaining]);
  if (lim.concurrency_remaining !== null && lim.concurrency_remaining !== undefined) items.push(["slots left", lim.concurrency_remaining]);
  for (const [k, v] of items) {
    const d = el("div");
    d.appendChild(el("span", {}, k));
    d.appendChild(document.createTextNode(String(v)));
    kv.appendChild(d);
  }
  c.appendChild(kv);
  if (t.last_error && t.state !== "closed") c.appendChild(el("div", { class: "lasterr" }, "last error: " + t.last_error));
  return c;
}

function renderHealth(body) {
  const now = Date.now();
  const cards = document.getElementById("cards");
  const frag = document.createDocumentFragment();
  let open = 0, requests = 0, inflight = 0;
  for (const t of body.targets) {
    const h = history.get(t.id) || [];
    h.push({ t: now, err: t.error_rate || 0, p50: t.latency_p50_ms, state: t.state });
    if (h.length > HISTORY) h.shift();
    history.set(t.id, h);
    if (t.state === "open") open++;
    requests += t.requests || 0;
    inflight += t.in_flight || 0;
    frag.appendChild(card(t, h));
  }
  cards.replaceChildren(frag);
  document.getElementById("sum-targets").textContent = body.targets.length;
  document.getElementById("sum-open").textContent = open;
  document.getElementById("sum-open").style.color = open ? "var(--bad)" : "";
  document.getElementById("sum-requests").textContent = requests;
  document.getElementById("sum-inflight").textContent = inflight;
}

function renderSpend(body) {
  document.getElementById("sum-spend").textContent = fmtUsd(body.total_usd || 0);
  const tbody = document.querySelector("#spend tbody");
  const rows = [...body.rows].sort((a, b) => b.cost_usd - a.cost_usd);
  tbody.replaceChildren(...rows.map((r) => {
    const tr = el("tr");
    for (const v of [r.model, r.provider, r.upstream_model, r.task, r.tags || "–"]) tr.appendChild(el("td", {}, v));
    for (const v of [r.requests, r.prompt_tokens, r.completion_tokens]) tr.appendChild(el("td", { class: "num" }, String(v)));
    tr.appendChild(el("td", { class: "num" }, r.cost_usd.toFixed(6)));
    return tr;
  }));
  const byModel = new Map();
  for (const r of body.rows) byModel.set(r.model, (byModel.get(r.model) || 0) + r.cost_usd);
  const chart = document.getElementById("spend-chart");
  const entries = [...byModel.entries()].sort((a, b) => b[1] - a[1]).slice(0, 12);
  const max = Math.max(1e-12, ...entries.map((e) => e[1]));
  const rowH = 26;
  chart.setAttribute("height", Math.max(20, entries.length * rowH));
  chart.replaceChildren();
  const width = chart.getBoundingClientRect().width || 800;
  entries.forEach(([model, usd], i) => {
    const y = i * rowH;
    const label = svg("text", { x: 0, y: y + 17, fill: "var(--text)", "font-size": "13" });
    label.textContent = model;
    chart.appendChild(label);
    const barW = Math.max(2, (width - 290) * (usd / max));
    chart.appendChild(svg("rect", { x: 180, y: y + 5, width: barW, height: 16, rx: 4, fill: "var(--accent)", opacity: "0.8" }));
    const value = svg("text", { x: 186 + barW, y: y + 17, fill: "var(--muted)", "font-size": "12" });
    value.textContent = fmtUsd(usd);
    chart.appendChild(value);
  });
}

// --- the money side: only with the master key, which stays in this tab (sessionStorage)
const KEY_STORE = "aiogw.master_key";
const adminKey = () => sessionStorage.getItem(KEY_STORE) || "";
const authed = () => (adminKey() ? { headers: { authorization: "Bearer " + adminKey() } } : {});

async function getJson(path) {
  const r = await fetch(path, authed());
  const body = await r.json();
  if (!r.ok) throw new Error((body.error && body.error.message) || `HTTP ${r.status}`);
  return body;
}

function budgetBar(b, width) {
  const h = 22, s = svg("svg", { viewBox: `0 0 ${width} ${h}`, preserveAspectRatio: "none", role: "img" });
  const limit = b.limit_usd || 1e-12;
  const scale = (usd) => Math.min(width, (usd / limit) * width);
  s.appendChild(svg("rect", { x: 0, y: 4, width, height: 14, rx: 4, fill: "var(--code)" }));
  const spent = scale(b.spent_usd || 0), held = scale((b.spent_usd || 0) + (b.reserved_usd || 0));
  const color = (b.spent_usd || 0) >= limit ? "var(--bad)" : (b.spent_usd || 0) >= limit * Math.min(...(b.alert_at.length ? b.alert_at : [1])) ? "var(--warn)" : "var(--accent)";
  s.appendChild(svg("rect", { x: 0, y: 4, width: held, height: 14, rx: 4, fill: color, opacity: "0.3", class: "held" }));
  s.appendChild(svg("rect", { x: 0, y: 4, width: spent, height: 14, rx: 4, fill: color, class: "spent" }));
  for (const a of b.alert_at) s.appendChild(svg("rect", { x: Math.min(width - 2, a * width), y: 0, width: 2, height: h, fill: "var(--muted)", class: "threshold" }));
  const f = forecast(b);
  if (f !== null) {
    const x = Math.min(width - 1, scale(f));
    s.appendChild(svg("line", { x1: x, x2: x, y1: 0, y2: h, stroke: f > limit ? "var(--bad)" : "var(--text)", "stroke-dasharray": "3 2", "stroke-width": 1.5, class: "forecast" }));
  }
  return s;
}

function forecast(b) {
  // The window's spend projected linearly to its end (none for `total` or a window just begun).
  if (!b.window_start || !b.resets_at) return null;
  const start = Date.parse(b.window_start), end = Date.parse(b.resets_at), now = Date.now();
  const elapsed = (now - start) / (end - start);
  return elapsed > 0.01 ? (b.spent_usd || 0) / Math.min(1, elapsed) : null;
}

function renderBudgets(body) {
  const box = document.getElementById("budgets");
  const rows = body.data.map((b) => {
    const row = el("div", { class: "budget", "data-budget": b.id });
    const name = el("div");
    name.appendChild(el("b", {}, b.scope + (b.match ? ": " + b.match : "")));
    name.appendChild(el("div", { class: "muted", style: "font-size:.75rem" }, `${b.period} · ${b.source}${b.resets_at ? " · resets " + new Date(b.resets_at).toLocaleString() : ""}`));
    row.appendChild(name);
    const bar = el("div");
    bar.appendChild(budgetBar(b, 600));
    row.appendChild(bar);
    const f = forecast(b);
    row.appendChild(el("div", { class: "nums" }, `${fmtUsd(b.spent_usd || 0)} of ${fmtUsd(b.limit_usd)}` + (f !== null ? ` · forecast ${fmtUsd(f)}` : "")));
    return row;
  });
  box.replaceChildren(...(rows.length ? rows : [el("div", { class: "muted" }, "No budgets configured.")]));
}

function renderKeys(body) {
  const tbody = document.querySelector("#keys tbody");
  tbody.replaceChildren(...body.data.map((k) => {
    const tr = el("tr", { "data-key": k.id });
    const state = k.revoked_at ? "revoked" : k.expires_at && Date.parse(k.expires_at) < Date.now() ? "expired" : "active";
    for (const v of [k.name, k.id, k.team || "–", k.user || "–", state, k.expires_at || "never"]) tr.appendChild(el("td", {}, String(v)));
    const spend = typeof k.spend_usd === "number" ? k.spend_usd : (k.budgets || []).reduce((m, b) => Math.max(m, b.spent_usd || 0), 0);
    tr.appendChild(el("td", { class: "num" }, spend.toFixed(6)));
    return tr;
  }));
}

async function tickMoney() {
  const status = document.getElementById("admin-status");
  if (!adminKey()) return;
  try {
    const [budgets, keys] = await Promise.all([getJson("/admin/v1/budgets"), getJson("/admin/v1/keys")]);
    renderBudgets(budgets);
    renderKeys(keys);
    document.getElementById("money").hidden = false;
    status.textContent = "";
  } catch (e) {
    document.getElementById("money").hidden = true;
    status.textContent = "admin API: " + e.message;
  }
}

document.addEventListener("DOMContentLoaded", () => {
  document.getElementById("admin-form").addEventListener("submit", (ev) => {
    ev.preventDefault();
    sessionStorage.setItem(KEY_STORE, document.getElementById("admin-key").value.trim());
    tickMoney();
  });
});

// The response cache (GET /admin/v1/cache/stats: master key; 404 when the cache is off):
// hit rate and saved spend per model group, the panel hidden when there is nothing to show.
const pct = (r) => (r === null || r === undefined ? "–" : (r * 100).toFixed(1) + "%");

async function tickCache() {
  const panel = document.getElementById("cache");
  if (!adminKey()) { panel.hidden = true; return; }
  let body;
  try { body = await getJson("/admin/v1/cache/stats"); } catch { panel.hidden = true; return; }
  document.getElementById("cache-summary").textContent =
    `— ${body.backend} · hit rate ${pct(body.hit_rate)} · saved ${fmtUsd(body.saved_usd || 0)}`;
  document.querySelector("#cache-models tbody").replaceChildren(...body.models.map((m) => {
    const tr = el("tr");
    tr.appendChild(el("td", {}, m.model));
    for (const v of [String(m.hits), String(m.misses), pct(m.hit_rate), m.saved_usd.toFixed(6)]) tr.appendChild(el("td", { class: "num" }, v));
    return tr;
  }));
  panel.hidden = false;
}

// Routing by quality (GET /admin/v1/routing and /admin/v1/routing/{model}: master key; 404
// when no group uses strategy quality): per task x target estimates and traffic shares.
const num = (v, d) => (v === null || v === undefined ? "–" : v.toFixed(d));

function shareBar(share) {
  const s = svg("svg", { class: "share", viewBox: "0 0 100 10", width: "100", height: "10", role: "img", "aria-label": pct(share) });
  s.appendChild(svg("rect", { x: 0, y: 0, width: 100, height: 10, fill: "var(--line)" }));
  s.appendChild(svg("rect", { x: 0, y: 0, width: Math.round((share || 0) * 100), height: 10, fill: "var(--accent)" }));
  return s;
}

function qualityTable(body) {
  const box = el("div", { "data-quality-model": body.model });
  box.appendChild(el("h3", {}, `${body.model} · floor ${body.floor} · ${body.metric} · explore ${pct(body.explore)}` + (body.prior ? ` · prior ${body.prior}` : "")));
  const table = el("table");
  const head = el("tr");
  for (const h of ["Task", "Target", "n", "Estimate", "95% interval", "Floor", "Cost / request", "Picks", "Share"]) head.appendChild(el("th", h === "Task" || h === "Target" ? {} : { class: "num" }, h));
  table.appendChild(el("thead")).appendChild(head);
  const tbody = el("tbody");
  for (const task of body.tasks) {
    for (const r of task.targets) {
      const tr = el("tr", { "data-task": task.task, "data-target": r.target });
      tr.appendChild(el("td", {}, task.task));
      tr.appendChild(el("td", {}, r.target));
      for (const v of [num(r.n, 0), num(r.mean, 3), `${num(r.lo, 2)}–${num(r.hi, 2)}`, r.meets_floor ? "✓" : "", r.cost_per_request_usd === null ? "–" : fmtUsd(r.cost_per_request_usd), String(r.picks)]) tr.appendChild(el("td", { class: "num" }, v));
      const share = el("td", { class: "num", title: pct(r.share) });
      share.appendChild(shareBar(r.share));
      tr.appendChild(share);
      tbody.appendChild(tr);
    }
  }
  table.appendChild(tbody);
  box.appendChild(table);
  return box;
}

async function tickQuality() {
  const panel = document.getElementById("quality");
  if (!adminKey()) { panel.hidden = true; return; }
  let models;
  try {
    const list = await getJson("/admin/v1/routing");
    models = await Promise.all(list.data.map((m) => getJson("/admin/v1/routing/" + encodeURIComponent(m.model).replace(/%2F/g, "/"))));
  } catch { panel.hidden = true; return; }
  document.getElementById("quality-models").replaceChildren(...models.map(qualityTable));
  panel.hidden = models.length === 0;
}

async function tick() {
  const status = document.getElementById("status");
  try {
    const [health, spend] = await Promise.all([
      getJson("/v1/gateway/health"),
      getJson("/v1/gateway/spend").catch((e) => ({ error: e.message })),
      tickMoney(),
      tickCache(),
      tickQuality(),
    ]);
    renderHealth(health);
    if (spend.error) document.getElementById("sum-spend").textContent = "master key needed";
    else renderSpend(spend);
    const shared = health.shared_state && health.shared_state.backend === "redis";
    status.textContent = `live · every ${REFRESH_MS} ms · state ${shared ? "shared (Redis)" : "local"} · ${new Date().toLocaleTimeString()}`;
  } catch (e) {
    status.textContent = "cannot reach the gateway: " + e;
  } finally {
    setTimeout(tick, REFRESH_MS);
  }
}

document.addEventListener("DOMContentLoaded", tick);
