// governor's dashboard: reads the HTTP door's /api/v1 (with the session cookie), follows
// /api/v1/events, and draws the last hour's allow/deny timeline. No library, no network
// beyond this origin. Text from the store (paths, commands) is only ever set as textContent.
"use strict";

const MINUTE = 60e9; // nanoseconds
const HOUR_MINUTES = 60;
const RECENT = 50;
const csrf = document.querySelector('meta[name="governor-csrf"]').content;

// The last hour's events, by id: the timeline and the cards are computed from them.
const events = new Map();
let lastId = 0;

function el(tag, text, attrs) {
  const node = document.createElement(tag);
  if (text !== undefined && text !== null) node.textContent = String(text);
  for (const [name, value] of Object.entries(attrs || {})) node.setAttribute(name, value);
  return node;
}

function clock(ns) {
  return new Date(ns / 1e6).toLocaleTimeString();
}

async function api(path, options) {
  const response = await fetch(path, Object.assign({ credentials: "same-origin" }, options || {}));
  const text = await response.text();
  let body = null;
  try { body = text ? JSON.parse(text) : null; } catch (error) { body = { error: text }; }
  if (!response.ok) {
    const why = body && body.error ? body.error : response.statusText;
    throw new Error(`${response.status}: ${why}${body && body.field ? ` (${body.field})` : ""}`);
  }
  return body;
}

function remember(event) {
  events.set(event.id, event);
  if (event.id > lastId) lastId = event.id;
}

function prune() {
  const since = Date.now() * 1e6 - HOUR_MINUTES * MINUTE;
  for (const [id, event] of events) {
    if (event.time < since) events.delete(id);
  }
}

// The hour's events already recorded, paged by id.
async function loadHour() {
  let after = null;
  for (let page = 0; page < 20; page += 1) {
    const query = after === null ? "since=60m&limit=10000" : `since=60m&limit=10000&after=${after}`;
    const answer = await api(`/api/v1/audit?${query}`);
    for (const event of answer.events) remember(event);
    if (answer.events.length < 10000) break;
    after = answer.events[answer.events.length - 1].id;
  }
}

function drawTimeline() {
  const svg = document.getElementById("timeline");
  const now = Date.now() * 1e6;
  const allow = new Array(HOUR_MINUTES).fill(0);
  const deny = new Array(HOUR_MINUTES).fill(0);
  for (const event of events.values()) {
    const slot = HOUR_MINUTES - 1 - Math.floor((now - event.time) / MINUTE);
    if (slot < 0 || slot >= HOUR_MINUTES) continue;
    const count = event.count || 1;
    if (event.decision === "allow") allow[slot] += count;
    else if (event.decision === "deny") deny[slot] += count;
  }
  const width = 720, height = 160, top = 10, bottom = 20;
  const peak = Math.max(1, ...allow.map((a, i) => a + deny[i]));
  const slot = width / HOUR_MINUTES;
  const scale = (height - top - bottom) / peak;
  const ns = "http://www.w3.org/2000/svg";
  svg.replaceChildren();
  const axis = document.createElementNS(ns, "line");
  for (const [name, value] of [["x1", 0], ["x2", width], ["y1", height - bottom], ["y2", height - bottom], ["class", "axis"]]) {
    axis.setAttribute(name, value);
  }
  svg.appendChild(axis);
  for (let i = 0; i < HOUR_MINUTES; i += 1) {
    let base = height - bottom;
    for (const [kind, values] of [["allow", allow], ["deny", deny]]) {
      if (!values[i]) continue;
      const bar = document.createElementNS(ns, "rect");
      const tall = Math.max(1, values[i] * scale);
      base -= tall;
      bar.setAttribute("x", (i * slot + 1).toFixed(1));
      bar.setAttribute("y", base.toFixed(1));
      bar.setAttribute("width", (slot - 2).toFixed(1));
      bar.setAttribute("height", tall.toFixed(1));
      bar.setAttribute("class", kind);
      const title = document.createElementNS(ns, "title");
      title.textContent = `${HOUR_MINUTES - 1 - i} min ago: ${values[i]} ${kind}`;
      bar.appendChild(title);
      svg.appendChild(bar);
    }
  }
  for (const [minutes, x] of [[60, 0], [45, width / 4], [30, width / 2], [15, (3 * width) / 4]]) {
    const label = document.createElementNS(ns, "text");
    label.setAttribute("x", x + 2);
    label.setAttribute("y", height - 6);
    label.textContent = `-${minutes} min`;
    svg.appendChild(label);
  }
  const total = allow.reduce((a, b) => a + b, 0) + deny.reduce((a, b) => a + b, 0);
  svg.dataset.allow = allow.reduce((a, b) => a + b, 0);
  svg.dataset.deny = deny.reduce((a, b) => a + b, 0);
  document.getElementById("card-allow").textContent = svg.dataset.allow;
  document.getElementById("card-deny").textContent = svg.dataset.deny;
  let all = 0;
  for (const event of events.values()) all += event.count || 1;
  document.getElementById("card-events").textContent = all;
  return total;
}

function eventRow(event) {
  const row = el("tr", null, { "data-id": event.id, class: event.decision === "deny" ? "deny" : "" });
  row.append(
    el("td", event.id),
    el("td", clock(event.time)),
    el("td", event.agent),
    el("td", event.kind),
    el("td", event.path || event.destination, { class: "text" }),
    el("td", event.result),
    el("td", event.decision),
    el("td", event.rule),
  );
  return row;
}

function showRecent() {
  const body = document.querySelector("#events tbody");
  const recent = [...events.values()].sort((a, b) => b.id - a.id).slice(0, RECENT);
  body.replaceChildren(...recent.map(eventRow));
}

async function act(agent, action) {
  const result = document.getElementById("action-result");
  try {
    const answer = await api(`/api/v1/agents/${encodeURIComponent(agent)}/${action}`, {
      method: "POST",
      headers: { "Content-Type": "application/json", "X-Governor-CSRF": csrf },
      body: JSON.stringify({ reason: `dashboard ${action}` }),
    });
    result.textContent = `${agent}: ${answer.state}`;
  } catch (error) {
    result.textContent = `${agent}: ${error.message}`;
  }
  refresh();
}

function showAgents(agents) {
  const body = document.querySelector("#agents tbody");
  const rows = agents
    .filter((agent) => agent.state === "running" || agent.state === "suspended" || agent.state === "registered" || agent.events > 0)
    .map((agent) => {
      const row = el("tr", null, { "data-agent": agent.agent, "data-state": agent.state });
      const buttons = el("td");
      if (agent.supervised) {
        const actions = agent.state === "suspended" ? ["resume", "kill"] : ["suspend", "kill"];
        for (const action of actions) {
          const button = el("button", action, { type: "button", class: action, "data-action": action });
          button.addEventListener("click", () => act(agent.agent, action));
          buttons.appendChild(button);
        }
      }
      row.append(el("td", agent.agent), el("td", agent.trust), el("td", agent.state), el("td", agent.events),
        el("td", agent.denials), el("td", agent.incidents), buttons);
      return row;
    });
  body.replaceChildren(...rows);
}

function showIncidents(incidents) {
  const body = document.querySelector("#incidents tbody");
  const newest = incidents.slice().sort((a, b) => b.id - a.id).slice(0, 100);
  body.replaceChildren(...newest.map((incident) => {
    const row = el("tr", null, { "data-severity": incident.severity });
    row.append(el("td", clock(incident.time)), el("td", incident.agent), el("td", incident.type),
      el("td", incident.severity), el("td", incident.action), el("td", incident.description, { class: "text" }));
    return row;
  }));
  const counts = { low: 0, medium: 0, high: 0, critical: 0 };
  for (const incident of incidents) counts[incident.severity] = (counts[incident.severity] || 0) + 1;
  const peak = Math.max(1, ...Object.values(counts));
  const bars = Object.entries(counts).map(([severity, count]) => {
    const bar = el("div", null, { class: "bar", "data-severity": severity, "data-count": count });
    const fill = el("span", null, { class: "fill" });
    fill.style.width = `${(12 * count) / peak}em`;
    bar.append(el("span", severity, { class: "name" }), fill, el("span", count));
    return bar;
  });
  document.getElementById("severity").replaceChildren(...bars);
}

// The mean decision time, from the daemon's histogram.
function showLatency(text) {
  let sum = null, count = null;
  for (const line of text.split("\n")) {
    const [name, value] = line.split(" ");
    if (name === "governor_decision_seconds_sum") sum = Number(value);
    if (name === "governor_decision_seconds_count") count = Number(value);
  }
  const card = document.getElementById("card-latency");
  card.textContent = count ? `${((sum / count) * 1e6).toFixed(1)} µs` : "–";
}

async function refresh() {
  try {
    const [status, agents, incidents] = await Promise.all([
      api("/api/v1/status"),
      api("/api/v1/agents"),
      api("/api/v1/incidents?since=24h"),
    ]);
    document.getElementById("card-agents").textContent = status.total_agents;
    document.getElementById("card-agents-detail").textContent =
      `${status.active_agents} active, ${status.suspended_agents} suspended`;
    document.getElementById("card-incidents").textContent = status.recent_violations;
    document.getElementById("card-score").textContent = status.compliance_score;
    document.getElementById("daemon").textContent =
      `daemon pid ${status.daemon.pid}, ${status.daemon.backend} probes, ${status.total_policies} rules`;
    showAgents(agents.agents);
    showIncidents(incidents.incidents);
    const metrics = await fetch("/metrics", { credentials: "same-origin" });
    if (metrics.ok) showLatency(await metrics.text());
  } catch (error) {
    document.getElementById("action-result").textContent = `refresh: ${error.message}`;
  }
  prune();
  drawTimeline();
}

function follow() {
  const state = document.getElementById("stream");
  const source = new EventSource(`/api/v1/events?after=${lastId}`);
  source.addEventListener("open", () => { state.dataset.state = "open"; state.textContent = "events: live"; });
  source.addEventListener("error", () => { state.dataset.state = "error"; state.textContent = "events: reconnecting"; });
  source.addEventListener("audit", (message) => {
    remember(JSON.parse(message.data));
    showRecent();
    drawTimeline();
  });
}

async function start() {
  try {
    await loadHour();
  } catch (error) {
    document.getElementById("action-result").textContent = `audit: ${error.message}`;
  }
  showRecent();
  await refresh();
  follow();
  setInterval(refresh, 5000);
}

start();
