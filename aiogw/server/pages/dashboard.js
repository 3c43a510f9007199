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

async function tick() {
  const status = document.getElementById("status");
  try {
    const [health, spend] = await Promise.all([
      fetch("/v1/gateway/health").then((r) => r.json()),
      fetch("/v1/gateway/spend").then((r) => r.json()),
    ]);
    renderHealth(health);
    renderSpend(spend);
    const shared = health.shared_state && health.shared_state.backend === "redis";
    status.textContent = `live · every ${REFRESH_MS} ms · state ${shared ? "shared (Redis)" : "local"} · ${new Date().toLocaleTimeString()}`;
  } catch (e) {
    status.textContent = "cannot reach the gateway: " + e;
  } finally {
    setTimeout(tick, REFRESH_MS);
  }
}

document.addEventListener("DOMContentLoaded", tick);
