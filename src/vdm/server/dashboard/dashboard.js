// vdm dashboard: polls /dashboard/api/snapshot once a second and redraws.
// The token (MANAGEMENT_TOKEN, or PROXY_API_KEY) comes once as ?token=... or from
// the login form; it is kept in sessionStorage (this tab only) and dropped from the URL.
// Data is written with textContent only, never parsed as HTML.
"use strict";

const SNAPSHOT = "/dashboard/api/snapshot";
const TOKEN_KEY = "vdm-dashboard-token";
const INTERVAL_MS = 1000;
const RATE_WINDOW = 10; // snapshots the req/s rate is measured over
const history = []; // [{uptime, totals, routes: {key: requests}}]
let timer = null;

const $ = (id) => document.getElementById(id);

function takeTokenFromUrl() {
  const url = new URL(window.location.href);
  const token = url.searchParams.get("token");
  if (token) {
    sessionStorage.setItem(TOKEN_KEY, token);
    url.searchParams.delete("token");
    window.history.replaceState(null, "", url.pathname + url.search + url.hash);
  }
}

function fmt(n) {
  if (n === null || n === undefined) return "–";
  return Number(n).toLocaleString("en-US");
}

function pair(a, b) { return `${fmt(a)} / ${fmt(b)}`; }

function duration(seconds) {
  const s = Math.floor(seconds);
  const h = Math.floor(s / 3600), m = Math.floor((s % 3600) / 60);
  return h ? `${h}h ${m}m` : m ? `${m}m ${s % 60}s` : `${s}s`;
}

function rate(now, pick) {
  // requests per second between the oldest kept snapshot and this one
  const old = history[0];
  if (!old || now.uptime_seconds <= old.uptime_seconds) return null;
  return ((pick(now) - pick(old)) / (now.uptime_seconds - old.uptime_seconds)).toFixed(2);
}

function fill(tbodySelector, rows, cells, rowClass) {
  const tbody = document.querySelector(tbodySelector);
  const fresh = document.createDocumentFragment();
  for (const row of rows) {
    const tr = document.createElement("tr");
    if (rowClass) tr.className = rowClass(row);
    for (const [value, cls] of cells(row)) {
      const td = document.createElement("td");
      td.textContent = value === null || value === undefined ? "–" : String(value);
      if (cls) td.className = cls;
      tr.appendChild(td);
    }
    fresh.appendChild(tr);
  }
  tbody.replaceChildren(fresh);
}

const routeKey = (r) => `${r.provider}\u0000${r.model}`;

function render(snap) {
  const t = snap.totals;
  $("version").textContent = `v${snap.version}`;
  $("total-requests").textContent = fmt(t.requests);
  $("total-errors").textContent = fmt(t.errors);
  $("total-tokens").textContent = pair(t.input_tokens, t.output_tokens);
  $("total-cache").textContent = t.requests ? `${fmt(t.cache_hits)} (${(100 * t.cache_hits / t.requests).toFixed(1)}%)` : "0";
  $("in-flight").textContent = pair(snap.in_flight, snap.open_streams);
  $("uptime").textContent = duration(snap.uptime_seconds);
  const usd = (x) => (x === null || x === undefined ? "–" : `$${x.toFixed(4)}`);
  const today = snap.spend_today;
  $("spend-today").textContent = usd(today.usd);
  fill("#spend-projects tbody", today.projects, (p) => [[p.name], [usd(p.usd), "num"]]);
  fill("#spend-models tbody", today.models, (m) => [[m.name], [usd(m.usd), "num"]]);
  const current = {
    uptime_seconds: snap.uptime_seconds, requests: t.requests,
    routes: Object.fromEntries(snap.routes.map((r) => [routeKey(r), r.requests])),
  };
  $("rate").textContent = rate(current, (s) => s.requests) ?? "–";
  fill("#routes tbody", snap.routes, (r) => [
    [r.provider], [r.model], [fmt(r.requests), "num"],
    [rate(current, (s) => s.routes[routeKey(r)] || 0) ?? "–", "num"],
    [fmt(r.errors), r.errors ? "num error" : "num"],
    [fmt(r.input_tokens), "num"], [fmt(r.output_tokens), "num"], [fmt(r.cached_tokens), "num"],
    [r.cache_hit_rate === null ? null : `${(100 * r.cache_hit_rate).toFixed(1)}%`, "num"],
    [usd(r.spend_usd), "num"],
    [pair(r.p50_ms, r.p95_ms), "num"], [pair(r.upstream_p50_ms, r.upstream_p95_ms), "num"],
    [pair(r.overhead_p50_ms, r.overhead_p95_ms), "num"],
  ]);
  $("cooldown-count").textContent = `(${fmt(snap.key_cooldowns)} benches since start)`;
  fill("#keys tbody", snap.keys, (k) => [
    [k.provider], [k.key], [k.model ?? "all"], [k.state, `state-${k.state}`],
    [k.state === "ok" ? null : k.seconds_left, "num"], [k.last_status],
  ]);
  fill("#recent tbody", snap.recent, (r) => [
    [r.time], [r.door], [r.provider], [r.model], [r.status, "num"],
    [r.total_ms, "num"], [r.upstream_ms, "num"], [pair(r.input_tokens, r.output_tokens), "num"],
    [r.cache_hit ? "hit" : ""], [r.error], [r.request_id],
  ], (r) => (r.status >= 400 || r.error ? "failed" : ""));
  const audit = snap.audit;
  $("audit-section").hidden = audit === null;
  if (audit !== null) {
    fill("#audit tbody", audit, (e) => [
      [e.timestamp], [e.actor], [e.action], [e.outcome, e.outcome === "success" ? "" : "error"],
      [e.target], [e.client_ip],
    ]);
  }
  history.push(current);
  while (history.length > RATE_WINDOW) history.shift();
}

function status(text, cls) {
  const el = $("status");
  el.textContent = text;
  el.className = `status ${cls}`;
}

function askForToken(message) {
  clearTimeout(timer);
  timer = null;
  $("main").hidden = true;
  $("login").hidden = false;
  $("login-error").textContent = message || "";
  status("token needed", "down");
  $("token").focus();
}

async function poll() {
  timer = null;
  const token = sessionStorage.getItem(TOKEN_KEY);
  const headers = token ? { Authorization: `Bearer ${token}` } : {};
  try {
    const response = await fetch(SNAPSHOT, { headers, cache: "no-store" });
    if (response.status === 401) {
      sessionStorage.removeItem(TOKEN_KEY);
      askForToken(token ? "That token was refused." : "");
      return;
    }
    if (!response.ok) {
      const body = await response.json().catch(() => ({}));
      status(`error ${response.status}: ${body.detail || response.statusText}`, "down");
    } else {
      render(await response.json());
      status(`live · updated ${new Date().toLocaleTimeString()}`, "live");
    }
  } catch (err) {
    status(`gateway unreachable (${err.message})`, "down");
  }
  timer = setTimeout(poll, INTERVAL_MS);
}

function start() {
  takeTokenFromUrl();
  $("login").addEventListener("submit", (event) => {
    event.preventDefault();
    sessionStorage.setItem(TOKEN_KEY, $("token").value);
    $("token").value = "";
    $("login").hidden = true;
    $("main").hidden = false;
    if (timer === null) poll();
  });
  poll();
}

document.addEventListener("DOMContentLoaded", start);
