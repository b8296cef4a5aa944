// MyGPT's page: completion and chat over the server's OpenAI API, streamed (no other host).
"use strict";

const $ = (id) => document.getElementById(id);
const state = { mode: "complete", messages: [], controller: null };

function headers() {
  const h = { "Content-Type": "application/json" };
  const key = $("api_key").value.trim();
  if (key) h["Authorization"] = "Bearer " + key;
  return h;
}

function number(id) {
  const text = $(id).value.trim();
  return text === "" ? undefined : Number(text);
}

function sampling() {
  const body = {
    temperature: number("temperature"),
    top_p: number("top_p"),
    top_k: number("top_k"),
    max_tokens: number("max_tokens"),
    repetition_penalty: number("repetition_penalty"),
    seed: number("seed"),
    stream: true,
    stream_options: { include_usage: true },
  };
  const stop = $("stop_text").value.replace(/\\n/g, "\n");
  if (stop) body.stop = [stop];
  return body;
}

function bubble(role, text) {
  const div = document.createElement("div");
  div.className = "message " + role;
  const label = document.createElement("span");
  label.className = "role";
  label.textContent = role;
  const body = document.createElement("span");
  body.className = "text";
  body.textContent = text;
  div.append(label, body);
  $("conversation").append(div);
  return body;
}

// Reads an SSE stream of OpenAI chunks; calls onChunk with each parsed one.
async function readEvents(response, onChunk) {
  const reader = response.body.getReader();
  const decoder = new TextDecoder();
  let buffer = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (done) return;
    buffer += decoder.decode(value, { stream: true });
    let end;
    while ((end = buffer.indexOf("\n\n")) >= 0) {
      const event = buffer.slice(0, end);
      buffer = buffer.slice(end + 2);
      for (const line of event.split("\n")) {
        if (!line.startsWith("data: ")) continue;
        const data = line.slice(6);
        if (data === "[DONE]") return;
        onChunk(JSON.parse(data));
      }
    }
  }
}

async function send(event) {
  event.preventDefault();
  const text = $("prompt").value;
  if (state.controller) return;
  let url, body, out;
  if (state.mode === "chat") {
    if (!text.trim()) return;
    state.messages.push({ role: "user", content: text });
    bubble("user", text);
    url = "/v1/chat/completions";
    body = { ...sampling(), messages: state.messages };
    out = bubble("assistant", "");
    $("prompt").value = "";
  } else {
    url = "/v1/completions";
    body = { ...sampling(), prompt: text };
    const node = bubble("completion", "");
    const shown = document.createElement("span");
    shown.className = "prompt";
    shown.textContent = text;
    node.before(shown);
    out = node;
  }
  state.controller = new AbortController();
  $("send").disabled = true;
  $("stop").disabled = false;
  const start = performance.now();
  let first = null, tokens = 0;
  const showStats = () => {
    const seconds = (performance.now() - (first ?? start)) / 1000;
    const rate = tokens > 1 && seconds > 0 ? ((tokens - 1) / seconds).toFixed(1) : "-";
    const ttft = first ? ((first - start) / 1000).toFixed(2) + " s to first token, " : "";
    $("stats").textContent = `${tokens} tokens, ${ttft}${rate} tokens/s`;
  };
  try {
    const response = await fetch(url, {
      method: "POST", headers: headers(), body: JSON.stringify(body), signal: state.controller.signal,
    });
    if (!response.ok) {
      const error = await response.json().catch(() => ({}));
      throw new Error(error.error?.message || response.statusText);
    }
    await readEvents(response, (chunk) => {
      if (chunk.usage) { tokens = chunk.usage.completion_tokens; showStats(); return; }
      const choice = chunk.choices[0];
      const piece = state.mode === "chat" ? choice.delta.content : choice.text;
      if (piece) {
        if (first === null) first = performance.now();
        out.textContent += piece;
        tokens += 1; // about one token a chunk; the usage chunk at the end gives the count
      }
      showStats();
    });
  } catch (e) {
    if (e.name !== "AbortError") {
      const error = bubble("error", e.message);
      error.parentElement.classList.add("error");
    }
  } finally {
    if (state.mode === "chat") state.messages.push({ role: "assistant", content: out.textContent });
    state.controller = null;
    $("send").disabled = false;
    $("stop").disabled = true;
    showStats();
  }
}

function setMode(mode) {
  state.mode = mode;
  for (const tab of document.querySelectorAll(".tab")) tab.classList.toggle("active", tab.dataset.mode === mode);
  $("prompt").placeholder = mode === "chat" ? "Ask something" : "Every effort moves you";
}

$("form").addEventListener("submit", send);
$("stop").addEventListener("click", () => state.controller && state.controller.abort());
$("clear").addEventListener("click", () => { state.messages = []; $("conversation").textContent = ""; $("stats").textContent = ""; });
$("prompt").addEventListener("keydown", (e) => { if (e.key === "Enter" && (e.ctrlKey || e.metaKey)) $("form").requestSubmit(); });
for (const tab of document.querySelectorAll(".tab")) tab.addEventListener("click", () => setMode(tab.dataset.mode));
$("api_key").value = localStorage.getItem("mygpt-api-key") || "";
$("api_key").addEventListener("change", () => localStorage.setItem("mygpt-api-key", $("api_key").value));
fetch("/v1/models", { headers: headers() }).then((r) => r.json()).then((m) => { $("model").textContent = m.data?.[0]?.id || ""; }).catch(() => {});
