// berth's dashboard: plain JavaScript against the daemon's /v1 API (the same the CLI uses).
// Everything shown comes from instances, images and guests, which are untrusted: text goes
// into the page with textContent only, never as HTML.
"use strict";

const $ = (selector) => document.querySelector(selector);
const FRAME = { STDIN: 0, STDOUT: 1, STDERR: 2, EXIT: 3, RESIZE: 4, STDIN_CLOSE: 5, ERROR: 6 };
const HEADER_LEN = 5;
const SAMPLES = 60;
const POLL_MS = 2000;

const state = {
  instances: [],
  nodes: [],
  selected: null,     // instance id
  tab: "processes",
  samples: [],        // stats of the selected instance
  logs: null,         // AbortController of the log stream
  socket: null,       // WebSocket of the console or shell
  terminal: null,     // xterm Terminal
  events: null,
};

// ---- API ----

class ApiError extends Error {}

async function api(method, path, body) {
  const init = { method, headers: { "x-berth-dashboard": "1" }, credentials: "same-origin" };
  if (body !== undefined) {
    init.headers["content-type"] = "application/json";
    init.body = JSON.stringify(body);
  }
  const response = await fetch(path, init);
  if (response.status === 403 && path !== "/ui/login") {
    const text = await response.text();
    if (/not logged in|no client certificate|not trusted/.test(text)) {
      showLogin();
    }
    throw new ApiError(messageOf(text, response.status));
  }
  if (!response.ok) {
    throw new ApiError(messageOf(await response.text(), response.status));
  }
  if (response.status === 204) return null;
  const type = response.headers.get("content-type") || "";
  return type.includes("json") ? response.json() : response.text();
}

function messageOf(text, status) {
  try {
    const parsed = JSON.parse(text);
    return parsed.message || text;
  } catch (_) {
    return text || `HTTP ${status}`;
  }
}

function flash(message, kind) {
  const element = $("#flash");
  element.textContent = message;
  element.className = kind || "";
}

// ---- formatting ----

function bytes(n) {
  if (n === null || n === undefined) return "–";
  const units = ["B", "KiB", "MiB", "GiB", "TiB"];
  let value = n;
  let unit = 0;
  while (value >= 1024 && unit < units.length - 1) {
    value /= 1024;
    unit += 1;
  }
  return `${value.toFixed(value < 10 && unit > 0 ? 1 : 0)} ${units[unit]}`;
}

function parseSize(text) {
  const match = /^\s*(\d+(?:\.\d+)?)\s*([kmgt]?)i?b?\s*$/i.exec(text);
  if (!match) throw new ApiError(`memory: '${text}' is not a size such as 256m or 2g`);
  const power = { "": 0, k: 1, m: 2, g: 3, t: 4 }[match[2].toLowerCase()];
  return Math.round(parseFloat(match[1]) * 1024 ** power);
}

function splitList(text) {
  return text.split(",").map((s) => s.trim()).filter((s) => s.length > 0);
}

// Splits a command line on blanks, honouring '...' and "..." quoting.
function splitCommand(text) {
  const words = [];
  let word = null;
  let quote = null;
  for (const ch of text) {
    if (quote) {
      if (ch === quote) quote = null;
      else word += ch;
    } else if (ch === "'" || ch === '"') {
      quote = ch;
      word = word ?? "";
    } else if (/\s/.test(ch)) {
      if (word !== null) words.push(word);
      word = null;
    } else {
      word = (word ?? "") + ch;
    }
  }
  if (quote) throw new ApiError("command: a quote is not closed");
  if (word !== null) words.push(word);
  return words;
}

function element(tag, text, className) {
  const node = document.createElement(tag);
  if (text !== undefined && text !== null) node.textContent = String(text);
  if (className) node.className = className;
  return node;
}

// ---- login ----

function showLogin() {
  $("#app").hidden = true;
  $("#login").hidden = false;
}

async function start() {
  try {
    const me = await api("GET", "/ui/whoami");
    $("#who").textContent = me.name;
    $("#login").hidden = true;
    $("#app").hidden = false;
    await Promise.all([refreshInstances(), refreshNodes(), loadCreateForm()]);
    watchEvents();
    setInterval(tick, POLL_MS);
  } catch (_) {
    showLogin();
  }
}

$("#login-form").addEventListener("submit", async (event) => {
  event.preventDefault();
  $("#login-error").textContent = "";
  try {
    await api("POST", "/ui/login", { token: $("#token").value });
    await start();
  } catch (e) {
    $("#login-error").textContent = e.message;
  }
});

$("#logout").addEventListener("click", async () => {
  try {
    await api("POST", "/ui/logout");
  } finally {
    location.reload();
  }
});

// ---- views ----

for (const button of document.querySelectorAll("header nav button")) {
  button.addEventListener("click", () => showView(button.dataset.view));
}
for (const link of document.querySelectorAll("[data-goto]")) {
  link.addEventListener("click", (event) => {
    event.preventDefault();
    showView(link.dataset.goto);
  });
}

function showView(view) {
  for (const button of document.querySelectorAll("header nav button")) {
    button.classList.toggle("active", button.dataset.view === view);
  }
  for (const section of document.querySelectorAll("#app > section")) {
    section.hidden = section.id !== `view-${view}`;
  }
  if (view === "nodes") refreshNodes();
  if (view === "create") loadCreateForm();
}

async function tick() {
  if (!$("#view-instances").hidden) {
    await refreshInstances().catch((e) => flash(e.message, "error"));
    if (state.selected) await refreshDetail().catch(() => {});
  }
  if (!$("#view-nodes").hidden) await refreshNodes().catch((e) => flash(e.message, "error"));
}

// ---- instances ----

async function refreshInstances() {
  state.instances = await api("GET", "/v1/instances?all=true");
  const body = $("#instances tbody");
  body.replaceChildren();
  for (const instance of state.instances) {
    const row = document.createElement("tr");
    row.dataset.id = instance.id;
    row.dataset.name = instance.name;
    if (instance.id === state.selected) row.classList.add("selected");
    const name = element("td");
    const link = element("a", instance.name);
    link.href = "#";
    link.className = "instance-link";
    link.addEventListener("click", (event) => {
      event.preventDefault();
      select(instance.id);
    });
    name.append(link);
    row.append(
      name,
      element("td", instance.kind === "vm" ? "VM" : "container"),
      element("td", instance.state, `state state-${instance.state}`),
      element("td", instance.node),
      element("td", instance.image),
      element("td", instance.limits.cpus ?? "unlimited"),
      element("td", instance.limits.memory_bytes ? bytes(instance.limits.memory_bytes) : "unlimited"),
      element("td", instance.instance_type ?? ""),
      element("td", instance.address ? instance.address.address : ""),
    );
    const actions = element("td");
    const running = instance.state === "running" || instance.state === "paused";
    actions.append(actionButton(running ? "Stop" : "Start", instance, running ? "stop" : "start"));
    row.append(actions);
    body.append(row);
  }
  $("#no-instances").hidden = state.instances.length > 0;
  if (state.selected && !state.instances.some((i) => i.id === state.selected)) {
    closeDetail();
  } else if (state.selected) {
    renderDetailHeader();
  }
}

function actionButton(label, instance, action) {
  const button = element("button", label);
  button.type = "button";
  button.dataset.action = action;
  button.addEventListener("click", () => act(instance.id, action, button));
  return button;
}

async function act(id, action, button) {
  const instance = state.instances.find((i) => i.id === id);
  const name = instance ? instance.name : id;
  const path = `/v1/instances/${encodeURIComponent(id)}`;
  try {
    if (button) button.disabled = true;
    switch (action) {
      case "remove":
        if (!button.classList.contains("confirming")) {
          button.classList.add("confirming");
          button.textContent = "Really remove?";
          button.disabled = false;
          setTimeout(() => {
            button.classList.remove("confirming");
            button.textContent = "Remove";
          }, 4000);
          return;
        }
        await api("DELETE", `${path}?force=true`);
        closeDetail();
        break;
      case "migrate": {
        const to = $("#migrate-to").value;
        flash(`migrating ${name}${to ? ` to ${to}` : ""}…`);
        await api("POST", `${path}/migrate`, to ? { to } : {});
        break;
      }
      case "snapshot": {
        const snapshot = $("#snapshot-name").value.trim();
        if (!snapshot) throw new ApiError("snapshot: give the snapshot a name");
        await api("POST", `${path}/snapshots`, { name: snapshot });
        break;
      }
      default:
        await api("POST", `${path}/${action}`);
    }
    flash(`${name}: ${action} done`, "ok");
  } catch (e) {
    flash(`${name}: ${action}: ${e.message}`, "error");
  } finally {
    if (button) {
      button.disabled = false;
      button.classList.remove("confirming");
      if (action === "remove") button.textContent = "Remove";
    }
    await refreshInstances().catch(() => {});
  }
}

for (const button of document.querySelectorAll("#detail-actions button[data-action]")) {
  button.addEventListener("click", () => {
    if (state.selected) act(state.selected, button.dataset.action, button);
  });
}

// ---- detail ----

function selectedInstance() {
  return state.instances.find((i) => i.id === state.selected);
}

async function select(id) {
  if (state.selected !== id) {
    closeDetail();
    state.selected = id;
    state.samples = [];
  }
  $("#detail").hidden = false;
  for (const row of document.querySelectorAll("#instances tbody tr")) {
    row.classList.toggle("selected", row.dataset.id === id);
  }
  renderDetailHeader();
  showTab(state.tab === "console" || state.tab === "shell" ? "processes" : state.tab);
  await refreshDetail().catch((e) => flash(e.message, "error"));
}

function closeDetail() {
  stopLogs();
  closeTerminal();
  state.selected = null;
  state.samples = [];
  $("#detail").hidden = true;
}

function renderDetailHeader() {
  const instance = selectedInstance();
  if (!instance) return;
  $("#detail-name").textContent = instance.name;
  const stateLabel = $("#detail-state");
  stateLabel.textContent = instance.state;
  stateLabel.className = `state-${instance.state}`;
  const facts = $("#detail-facts");
  facts.replaceChildren();
  const fact = (label, value) => {
    if (value === undefined || value === null || value === "") return;
    facts.append(element("dt", label), element("dd", value));
  };
  fact("ID", instance.id);
  fact("Kind", instance.kind === "vm" ? `VM (${instance.vm ? instance.vm.accel : "qemu"})` : "container");
  fact("Node", instance.node);
  fact("Image", instance.image);
  fact("Command", (instance.spec.process.args || []).join(" "));
  fact("Limits", `${instance.limits.cpus ?? "unlimited"} CPUs, ${instance.limits.memory_bytes ? bytes(instance.limits.memory_bytes) : "unlimited"} memory, ${instance.limits.pids ?? "unlimited"} pids`);
  fact("Requests", instance.requests ? `${instance.requests.cpus} CPUs, ${bytes(instance.requests.memory_bytes)}` : "");
  fact("Type", instance.instance_type);
  fact("Address", instance.address ? `${instance.address.address}/${instance.address.prefix} on ${instance.address.network}` : "");
  fact("Ports", (instance.spec.ports || []).map((p) => JSON.stringify(p)).join(", "));
  fact("Placement", instance.placement ? JSON.stringify(instance.placement) : "");
  fact("Exit", instance.exit_code !== null && instance.exit_code !== undefined ? String(instance.exit_code) : "");
  fact("Error", instance.error);
  const running = instance.state === "running";
  const paused = instance.state === "paused";
  const buttons = (action) => $(`#detail-actions button[data-action="${action}"]`);
  buttons("start").disabled = running || paused;
  buttons("stop").disabled = !(running || paused);
  buttons("restart").disabled = false;
  buttons("pause").disabled = !running;
  buttons("unpause").disabled = !paused;
  buttons("migrate").disabled = !running || state.nodes.length < 2;
  const migrateTo = $("#migrate-to");
  const others = state.nodes.filter((n) => n.name !== instance.node && n.state === "ready");
  const current = migrateTo.value;
  migrateTo.replaceChildren(element("option", "any node"));
  migrateTo.firstChild.value = "";
  for (const node of others) {
    const option = element("option", node.name);
    option.value = node.name;
    migrateTo.append(option);
  }
  migrateTo.value = others.some((n) => n.name === current) ? current : "";
}

async function refreshDetail() {
  const instance = selectedInstance();
  if (!instance) return;
  const path = `/v1/instances/${encodeURIComponent(instance.id)}`;
  if (instance.state === "running" || instance.state === "paused") {
    const [stats, top] = await Promise.all([
      api("GET", `${path}/stats`).catch(() => null),
      state.tab === "processes" ? api("GET", `${path}/top`).catch(() => null) : null,
    ]);
    if (stats) {
      state.samples.push(stats);
      if (state.samples.length > SAMPLES + 1) state.samples.shift();
      drawGraphs();
    }
    if (top) renderProcesses(top);
  } else if (state.tab === "processes") {
    $("#tab-processes").textContent = `${instance.name} is ${instance.state}: no processes`;
  }
}

// ps auxf: USER PID %CPU RSS STAT COMMAND, children indented with \_ under their parent.
function renderProcesses(top) {
  const lines = ["USER         PID  %CPU      RSS STAT COMMAND"];
  const walk = (node, prefix) => {
    if (node.is_thread) return;
    lines.push(
      `${node.user.padEnd(8).slice(0, 8)} ${String(node.pid).padStart(7)} ${node.cpu_percent.toFixed(1).padStart(5)} ${bytes(node.rss_bytes).padStart(8)} ${node.state.padEnd(4)} ${prefix}${node.command}`,
    );
    for (const child of node.children) walk(child, prefix ? `    ${prefix}` : " \\_ ");
  };
  for (const process of top.processes) walk(process, "");
  $("#tab-processes").textContent = lines.join("\n");
}

// ---- graphs ----

function rates() {
  const points = { cpu: [], mem: [], rx: [], tx: [] };
  for (let i = 1; i < state.samples.length; i += 1) {
    const a = state.samples[i - 1];
    const b = state.samples[i];
    const seconds = Math.max((b.sampled_at_ms - a.sampled_at_ms) / 1000, 0.001);
    points.cpu.push(Math.max(0, (b.cpu_usage_ns - a.cpu_usage_ns) / 1e9 / seconds) * 100);
    points.mem.push(b.memory_usage_bytes);
    points.rx.push(Math.max(0, (b.net_rx_bytes - a.net_rx_bytes) / seconds));
    points.tx.push(Math.max(0, (b.net_tx_bytes - a.net_tx_bytes) / seconds));
  }
  return points;
}

function drawGraphs() {
  const points = rates();
  const last = (list) => (list.length ? list[list.length - 1] : null);
  const limit = state.samples.length ? state.samples[state.samples.length - 1].memory_limit_bytes : null;
  const instance = selectedInstance();
  const cpuCeiling = instance && instance.limits.cpus ? instance.limits.cpus * 100 : 100;
  draw($("#graph-cpu"), [{ values: points.cpu, color: "#1f6feb" }], cpuCeiling);
  draw($("#graph-mem"), [{ values: points.mem, color: "#8250df" }], limit || Math.max(1, ...points.mem) * 1.2);
  draw($("#graph-net"), [
    { values: points.rx, color: "#1a7f37" },
    { values: points.tx, color: "#bf8700" },
  ], Math.max(1024, ...points.rx, ...points.tx) * 1.2);
  $("#cpu-now").textContent = last(points.cpu) === null ? "" : `${last(points.cpu).toFixed(1)} %`;
  $("#mem-now").textContent = last(points.mem) === null ? "" : `${bytes(last(points.mem))}${limit ? ` of ${bytes(limit)}` : ""}`;
  $("#net-now").textContent = last(points.rx) === null ? "" : `rx ${bytes(last(points.rx))}/s, tx ${bytes(last(points.tx))}/s`;
}

function draw(canvas, series, ceiling) {
  const context = canvas.getContext("2d");
  const { width, height } = canvas;
  context.clearRect(0, 0, width, height);
  context.strokeStyle = "#e3e7ec";
  context.lineWidth = 1;
  for (let y = 0; y <= 4; y += 1) {
    context.beginPath();
    context.moveTo(0, Math.round((height * y) / 4) + 0.5);
    context.lineTo(width, Math.round((height * y) / 4) + 0.5);
    context.stroke();
  }
  for (const { values, color } of series) {
    if (!values.length) continue;
    context.strokeStyle = color;
    context.lineWidth = 2;
    context.beginPath();
    values.forEach((value, i) => {
      const x = width - (values.length - 1 - i) * (width / SAMPLES);
      const y = height - Math.min(1, value / ceiling) * (height - 4) - 2;
      if (i === 0) context.moveTo(x, y);
      else context.lineTo(x, y);
    });
    context.stroke();
  }
}

// ---- tabs: processes, logs, console, shell ----

for (const button of document.querySelectorAll(".tabs button")) {
  button.addEventListener("click", () => showTab(button.dataset.tab));
}

function showTab(tab) {
  state.tab = tab;
  for (const button of document.querySelectorAll(".tabs button")) {
    button.classList.toggle("active", button.dataset.tab === tab);
  }
  $("#tab-processes").hidden = tab !== "processes";
  $("#tab-logs").hidden = tab !== "logs";
  $("#tab-terminal").hidden = tab !== "console" && tab !== "shell";
  if (tab !== "logs") stopLogs();
  if (tab !== "console" && tab !== "shell") closeTerminal();
  if (tab === "logs") followLogs();
  if (tab === "console" || tab === "shell") openTerminal(tab);
  if (tab === "processes") refreshDetail().catch(() => {});
}

// Reads berth's frames (a 5-byte header: kind, then the length big endian) out of chunks.
class FrameReader {
  constructor() {
    this.buffer = new Uint8Array(0);
  }

  push(chunk) {
    const joined = new Uint8Array(this.buffer.length + chunk.length);
    joined.set(this.buffer);
    joined.set(chunk, this.buffer.length);
    this.buffer = joined;
    const frames = [];
    while (this.buffer.length >= HEADER_LEN) {
      const view = new DataView(this.buffer.buffer, this.buffer.byteOffset);
      const length = view.getUint32(1);
      if (this.buffer.length < HEADER_LEN + length) break;
      frames.push({ kind: this.buffer[0], payload: this.buffer.slice(HEADER_LEN, HEADER_LEN + length) });
      this.buffer = this.buffer.slice(HEADER_LEN + length);
    }
    return frames;
  }
}

function encodeFrame(kind, payload) {
  const frame = new Uint8Array(HEADER_LEN + payload.length);
  frame[0] = kind;
  new DataView(frame.buffer).setUint32(1, payload.length);
  frame.set(payload, HEADER_LEN);
  return frame;
}

async function followLogs() {
  stopLogs();
  const instance = selectedInstance();
  if (!instance) return;
  const output = $("#tab-logs");
  output.textContent = "";
  const controller = new AbortController();
  state.logs = controller;
  const decoder = new TextDecoder();
  const reader = new FrameReader();
  try {
    const response = await fetch(`/v1/instances/${encodeURIComponent(instance.id)}/logs?follow=true&tail=500`, {
      credentials: "same-origin",
      signal: controller.signal,
    });
    if (!response.ok) throw new ApiError(messageOf(await response.text(), response.status));
    const stream = response.body.getReader();
    for (;;) {
      const { done, value } = await stream.read();
      if (done) break;
      for (const frame of reader.push(value)) {
        if (frame.kind === FRAME.STDOUT || frame.kind === FRAME.STDERR) {
          const atBottom = output.scrollTop + output.clientHeight >= output.scrollHeight - 4;
          output.append(document.createTextNode(decoder.decode(frame.payload, { stream: true })));
          if (atBottom) output.scrollTop = output.scrollHeight;
        }
      }
    }
  } catch (e) {
    if (e.name !== "AbortError") output.append(document.createTextNode(`\n[logs: ${e.message}]`));
  }
}

function stopLogs() {
  if (state.logs) state.logs.abort();
  state.logs = null;
}

function openTerminal(kind) {
  closeTerminal();
  const instance = selectedInstance();
  if (!instance) return;
  const status = $("#terminal-status");
  const container = $("#terminal");
  container.replaceChildren();
  if (instance.state !== "running") {
    status.textContent = `${instance.name} is ${instance.state}: start it first`;
    return;
  }
  if (kind === "console" && !instance.spec.process.open_stdin) {
    status.textContent = `${instance.name} was created without an interactive terminal: its console is read-only here (use Shell to type)`;
  } else {
    status.textContent = kind === "console" ? `console of ${instance.name}` : `/bin/sh in ${instance.name}`;
  }
  const encoder = new TextEncoder();
  const decoder = new TextDecoder();
  const scheme = location.protocol === "https:" ? "wss" : "ws";
  const socket = new WebSocket(`${scheme}://${location.host}/v1/instances/${encodeURIComponent(instance.id)}/${kind}/ws`);
  socket.binaryType = "arraybuffer";
  state.socket = socket;
  // Keys typed while the socket still connects are sent once it is open, not lost.
  const queued = [];
  const send = (kindOfFrame, bytesToSend) => {
    const frame = encodeFrame(kindOfFrame, bytesToSend);
    if (socket.readyState === WebSocket.OPEN) socket.send(frame);
    else if (socket.readyState === WebSocket.CONNECTING) queued.push(frame);
  };

  let write;
  if (window.Terminal) {
    // A VM's console may send bare newlines (the guest's terminal settings are its own).
    const convertEol = kind === "console" && instance.kind === "vm";
    const terminal = new window.Terminal({ convertEol, cursorBlink: true, rows: 24, cols: 100, fontSize: 13 });
    terminal.open(container);
    terminal.onData((data) => send(FRAME.STDIN, encoder.encode(data)));
    terminal.onResize(({ rows, cols }) => send(FRAME.RESIZE, sizeBytes(rows, cols)));
    state.terminal = terminal;
    write = (text) => terminal.write(text);
    terminal.focus();
  } else {
    // xterm.js is not installed: a line-at-a-time console.
    const output = element("pre", "", "plain-output");
    const input = element("input", null, "plain-input");
    input.placeholder = "type a line, Enter sends it";
    input.addEventListener("keydown", (event) => {
      if (event.key === "Enter") {
        send(FRAME.STDIN, encoder.encode(`${input.value}\n`));
        input.value = "";
      }
    });
    container.append(output, input);
    write = (text) => {
      output.append(document.createTextNode(text.replace(/\x1b\[[0-9;?]*[A-Za-z]/g, "")));
      output.scrollTop = output.scrollHeight;
    };
    input.focus();
  }
  const reader = new FrameReader();
  socket.addEventListener("open", () => {
    if (state.terminal) socket.send(encodeFrame(FRAME.RESIZE, sizeBytes(state.terminal.rows, state.terminal.cols)));
    for (const frame of queued.splice(0)) socket.send(frame);
  });
  socket.addEventListener("message", (event) => {
    for (const frame of reader.push(new Uint8Array(event.data))) {
      if (frame.kind === FRAME.STDOUT || frame.kind === FRAME.STDERR) {
        write(decoder.decode(frame.payload, { stream: true }));
      } else if (frame.kind === FRAME.EXIT) {
        const exit = JSON.parse(decoder.decode(frame.payload));
        write(`\r\n[exited with code ${exit.code ?? exit.signal ?? "?"}]\r\n`);
      } else if (frame.kind === FRAME.ERROR) {
        write(`\r\n[error: ${decoder.decode(frame.payload)}]\r\n`);
      }
    }
  });
  socket.addEventListener("close", () => {
    if (state.socket === socket) status.textContent += " (closed)";
  });
  socket.addEventListener("error", () => {
    status.textContent = `${kind}: the connection failed`;
  });
}

function sizeBytes(rows, cols) {
  const payload = new Uint8Array(4);
  const view = new DataView(payload.buffer);
  view.setUint16(0, rows);
  view.setUint16(2, cols);
  return payload;
}

function closeTerminal() {
  if (state.socket) state.socket.close();
  state.socket = null;
  if (state.terminal) state.terminal.dispose();
  state.terminal = null;
}

// ---- create ----

let catalog = [];

async function loadCreateForm() {
  const [images, types, networks] = await Promise.all([
    api("GET", "/v1/images").catch(() => []),
    api("GET", "/v1/types").catch(() => []),
    api("GET", "/v1/networks").catch(() => []),
  ]);
  catalog = types;
  const imageSelect = $("#create-image");
  const chosenImage = imageSelect.value;
  imageSelect.replaceChildren();
  for (const image of images) {
    const names = image.tags && image.tags.length ? image.tags : [image.id];
    for (const name of names) {
      const short = name.replace(/^docker\.io\/library\//, "").replace(/:latest$/, "");
      const option = element("option", short);
      option.value = short;
      imageSelect.append(option);
    }
  }
  if (chosenImage) imageSelect.value = chosenImage;
  const typeSelect = $("#create-type");
  const chosenType = typeSelect.value;
  typeSelect.replaceChildren(element("option", "none: limits below"));
  typeSelect.firstChild.value = "";
  for (const type of types) {
    const option = element("option", `${type.name} (${type.vcpus} vCPU, ${type.memory_gib} GiB${type.instance_storage ? `, ${type.instance_storage}` : ""})`);
    option.value = type.name;
    typeSelect.append(option);
  }
  typeSelect.value = chosenType;
  const networkSelect = $("#create-network");
  const chosenNetwork = networkSelect.value;
  networkSelect.replaceChildren();
  for (const name of ["default", ...networks.map((n) => n.name).filter((n) => n !== "default"), "none"]) {
    const option = element("option", name);
    option.value = name;
    networkSelect.append(option);
  }
  if (chosenNetwork) networkSelect.value = chosenNetwork;
}

$("#create-type").addEventListener("change", () => {
  const type = catalog.find((t) => t.name === $("#create-type").value);
  $("#type-facts").textContent = type
    ? `${type.vcpus} vCPUs, ${type.memory_gib} GiB, ${type.instance_storage || "no instance storage"}, ${type.network}`
    : "";
});

$("#create-form").addEventListener("submit", async (event) => {
  event.preventDefault();
  const form = new FormData(event.target);
  const button = $("#create-button");
  button.disabled = true;
  try {
    const kind = form.get("kind");
    const interactive = form.get("interactive") === "on";
    const request = {
      kind,
      image: form.get("image"),
      command: splitCommand(form.get("command") || ""),
      env: splitList(form.get("env") || ""),
      ports: splitList(form.get("ports") || ""),
      network: form.get("network") || undefined,
      tty: interactive,
      open_stdin: interactive,
      restart: form.get("restart"),
      limits: {},
    };
    const name = (form.get("name") || "").trim();
    if (name) request.name = name;
    if (form.get("instance_type")) request.instance_type = form.get("instance_type");
    const cpus = (form.get("cpus") || "").trim();
    if (cpus) {
      const value = Number(cpus);
      if (!(value > 0)) throw new ApiError(`CPUs: '${cpus}' is not a positive number`);
      request.limits.cpus = value;
    }
    const memory = (form.get("memory") || "").trim();
    if (memory) request.limits.memory_bytes = parseSize(memory);
    flash(kind === "vm" ? "creating the VM (its disk is made from the image)…" : "creating…");
    const created = await api("POST", "/v1/instances", request);
    if (form.get("start") === "on") {
      flash(`starting ${created.name}…`);
      await api("POST", `/v1/instances/${encodeURIComponent(created.id)}/start`);
    }
    flash(`${created.name} created${form.get("start") === "on" ? " and started" : ""}`, "ok");
    $("#create-name").value = "";
    showView("instances");
    await refreshInstances();
    await select(created.id);
  } catch (e) {
    flash(`create: ${e.message}`, "error");
  } finally {
    button.disabled = false;
  }
});

// ---- nodes ----

async function refreshNodes() {
  try {
    state.nodes = await api("GET", "/v1/nodes");
  } catch (_) {
    state.nodes = [];
  }
  const body = $("#nodes tbody");
  body.replaceChildren();
  for (const node of state.nodes) {
    const allocated = node.allocated || {};
    const row = document.createElement("tr");
    row.dataset.name = node.name;
    row.append(
      element("td", node.name + (node.this_node ? " (this node)" : "")),
      element("td", node.state, `state-${node.state}`),
      element("td", node.address || ""),
      element("td", Object.entries(node.labels || {}).map(([k, v]) => `${k}=${v}`).join(", ")),
      element("td", node.fingerprint ? node.fingerprint.accelerator : ""),
      element("td", `${(allocated.cpus ?? 0).toFixed(2)} of ${allocated.capacity_cpus ?? "?"}`),
      element("td", `${bytes(allocated.memory_bytes)} of ${bytes(allocated.capacity_memory_bytes)}`),
      element("td", node.instances ?? ""),
    );
    const actions = element("td");
    const nodeAction = (label, action) => {
      const button = element("button", label);
      button.type = "button";
      button.addEventListener("click", async () => {
        button.disabled = true;
        try {
          await api("POST", `/v1/nodes/${encodeURIComponent(node.name)}/${action}`);
          flash(`${node.name}: ${action} done`, "ok");
        } catch (e) {
          flash(`${node.name}: ${action}: ${e.message}`, "error");
        } finally {
          button.disabled = false;
          refreshNodes();
        }
      });
      return button;
    };
    if (node.state === "ready") actions.append(nodeAction("Cordon", "cordon"), nodeAction("Drain", "drain"));
    if (node.state === "cordoned" || node.state === "draining") actions.append(nodeAction("Uncordon", "uncordon"));
    row.append(actions);
    body.append(row);
  }
}

// ---- events ----

async function watchEvents() {
  const list = $("#events");
  const decoder = new TextDecoder();
  let pending = "";
  for (;;) {
    try {
      const response = await fetch("/v1/events", { credentials: "same-origin" });
      if (!response.ok) throw new ApiError(messageOf(await response.text(), response.status));
      const reader = response.body.getReader();
      for (;;) {
        const { done, value } = await reader.read();
        if (done) break;
        pending += decoder.decode(value, { stream: true });
        let newline;
        while ((newline = pending.indexOf("\n")) >= 0) {
          const line = pending.slice(0, newline);
          pending = pending.slice(newline + 1);
          if (!line) continue;
          const event = JSON.parse(line);
          const exit = event.exit ? ` (exit ${event.exit.code ?? event.exit.signal})` : "";
          list.prepend(element("li", `${event.time}  ${event.subject} ${event.name}: ${event.action}${exit}`));
          while (list.children.length > 500) list.lastChild.remove();
          if (event.subject === "instance") refreshInstances().catch(() => {});
        }
      }
    } catch (_) {
      // The daemon restarted or the network blinked: listen again shortly.
    }
    await new Promise((resolve) => setTimeout(resolve, 2000));
  }
}

start();
