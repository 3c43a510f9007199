// The playground: stream a chat completion from this gateway and show it as it arrives.
"use strict";
const $ = (id) => document.getElementById(id);
let controller = null;

async function loadModels() {
  try {
    const r = await fetch("/v1/models");
    const body = await r.json();
    const select = $("model");
    for (const m of body.data || []) {
      const opt = document.createElement("option");
      opt.value = m.id;
      opt.textContent = m.id;
      select.appendChild(opt);
    }
  } catch (e) {
    showError("Could not list models: " + e);
  }
}

function showError(message) {
  const el = $("error");
  el.textContent = message;
  el.hidden = false;
}

function set(id, text) { $(id).textContent = text; }

function ms(v) { return v < 1000 ? Math.round(v) + " ms" : (v / 1000).toFixed(2) + " s"; }

function reset() {
  for (const id of ["provider", "upstream", "attempts", "ttft", "total", "tokens", "cost", "finish"]) set(id, "–");
  $("output").textContent = "";
  $("reasoning").textContent = "";
  $("reasoning").hidden = true;
  $("tools").textContent = "";
  $("tools").hidden = true;
  $("error").hidden = true;
}

// Server-Sent Events from a fetch body: events end at a blank line; comment lines (":")
// are heartbeats; "data:" lines of one event are joined with newlines.
function* sseEvents(state, text) {
  state.buf += text;
  for (;;) {
    const m = /\r\n\r\n|\n\n|\r\r/.exec(state.buf);
    if (!m) return;
    const block = state.buf.slice(0, m.index);
    state.buf = state.buf.slice(m.index + m[0].length);
    const data = [];
    for (const line of block.split(/\r\n|\n|\r/)) {
      if (line.startsWith(":")) continue;
      if (line.startsWith("data:")) data.push(line.slice(line.startsWith("data: ") ? 6 : 5));
    }
    if (data.length) yield data.join("\n");
  }
}

async function send(ev) {
  if (ev) ev.preventDefault();
  const prompt = $("prompt").value.trim();
  if (!prompt || controller) return;
  reset();
  const messages = [];
  if ($("system").value.trim()) messages.push({ role: "system", content: $("system").value.trim() });
  messages.push({ role: "user", content: prompt });
  const body = { model: $("model").value, messages, stream: true, stream_options: { include_usage: true } };
  if ($("temperature").value !== "") body.temperature = Number($("temperature").value);
  if ($("max_tokens").value !== "") body.max_tokens = Number($("max_tokens").value);

  controller = new AbortController();
  $("send").disabled = true;
  $("stop").disabled = false;
  const out = $("output");
  out.dataset.state = "streaming";
  out.classList.add("cursor");
  const t0 = performance.now();
  let first = null;
  const tools = [];
  try {
    const resp = await fetch("/v1/chat/completions", {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: JSON.stringify(body),
      signal: controller.signal,
    });
    set("provider", resp.headers.get("x-aiogw-provider") || "–");
    set("upstream", resp.headers.get("x-aiogw-model") || "–");
    set("attempts", resp.headers.get("x-aiogw-attempts") || "–");
    if (!resp.ok) {
      let message = resp.status + " " + resp.statusText;
      try { message = (await resp.json()).error.message; } catch (_) { /* not JSON */ }
      showError(message);
      return;
    }
    const reader = resp.body.getReader();
    const decoder = new TextDecoder();
    const state = { buf: "" };
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      for (const data of sseEvents(state, decoder.decode(value, { stream: true }))) {
        if (data === "[DONE]") continue;
        const chunk = JSON.parse(data);
        if (chunk.error) { showError(chunk.error.message || JSON.stringify(chunk.error)); continue; }
        if (chunk.model && $("upstream").textContent === "–") set("upstream", chunk.model);
        for (const choice of chunk.choices || []) {
          const d = choice.delta || {};
          if ((d.content || d.reasoning_content || d.tool_calls) && first === null) {
            first = performance.now() - t0;
            set("ttft", ms(first));
          }
          if (d.reasoning_content) {
            $("reasoning").hidden = false;
            $("reasoning").appendChild(document.createTextNode(d.reasoning_content));
          }
          if (d.content) out.appendChild(document.createTextNode(d.content));
          for (const tc of d.tool_calls || []) {
            const t = (tools[tc.index] ||= { name: "", arguments: "" });
            if (tc.function && tc.function.name) t.name += tc.function.name;
            if (tc.function && tc.function.arguments) t.arguments += tc.function.arguments;
            $("tools").hidden = false;
            $("tools").textContent = tools.map((x) => `${x.name}(${x.arguments})`).join("\n");
          }
          if (choice.finish_reason) set("finish", choice.finish_reason);
        }
        if (chunk.usage) {
          set("tokens", `${chunk.usage.prompt_tokens} / ${chunk.usage.completion_tokens}`);
          if (chunk.usage.cost_usd !== undefined) set("cost", "$" + Number(chunk.usage.cost_usd).toFixed(6));
        }
      }
    }
  } catch (e) {
    if (e.name !== "AbortError") showError(String(e));
  } finally {
    set("total", ms(performance.now() - t0));
    out.classList.remove("cursor");
    out.dataset.state = "done";
    controller = null;
    $("send").disabled = false;
    $("stop").disabled = true;
  }
}

document.addEventListener("DOMContentLoaded", () => {
  loadModels();
  $("form").addEventListener("submit", send);
  $("stop").addEventListener("click", () => controller && controller.abort());
  $("prompt").addEventListener("keydown", (e) => {
    if (e.key === "Enter" && (e.ctrlKey || e.metaKey)) send(e);
  });
});
