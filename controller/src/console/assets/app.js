// The Outpost console: hash routes (#/fleet, #/rollouts, #/rollouts/ID, #/devices/ID, #/audit) over the
// controller's JSON API, with the session cookie; every view is redrawn from the API every 2 s.
"use strict";

const { esc, fmt, clock } = Charts;
const POLL_MS = 2000;
const state = { csrf: null, operator: null, fleetFilter: "", auditFilter: { rollout: "", who: "", text: "" } };

const $ = (sel) => document.querySelector(sel);

async function api(path, opts = {}) {
  const headers = { Accept: "application/json" };
  if (opts.method && opts.method !== "GET") headers["X-Outpost-CSRF"] = state.csrf || "";
  if (opts.body !== undefined) headers["Content-Type"] = "application/json";
  const res = await fetch(path, {
    method: opts.method || "GET",
    headers,
    body: opts.body !== undefined ? JSON.stringify(opts.body) : undefined,
    credentials: "same-origin",
  });
  if (res.status === 401) {
    showSignIn();
    throw new Error("signed out");
  }
  const data = await res.json().catch(() => ({}));
  if (!res.ok) throw new Error(data.error || `${res.status}`);
  return data;
}

// ---- values as the API writes them ------------------------------------------------------------------
const ver = (v) => (v === null || v === undefined ? "–" : typeof v === "string" ? v : `${v.major}.${v.minor}.${v.patch}`);
const ago = (t) => {
  if (!t) return "never";
  const s = Math.max(0, Math.round(Date.now() / 1000 - t));
  return s < 120 ? `${s}s ago` : s < 7200 ? `${Math.round(s / 60)}m ago` : `${Math.round(s / 3600)}h ago`;
};
const tag = (v) => (typeof v === "string" ? v : Object.keys(v || {})[0] || "");
function deviceStatus(d) {
  const st = d.enrollment && d.enrollment.status;
  if (st && typeof st === "object" && st.Revoked) return "revoked";
  if (st === "Pending") return "pending";
  return d.online ? "online" : "offline";
}
// Every model a device runs: a list whether the record holds one model or several.
function models(d) {
  const r = d.running !== undefined ? d.running : d.models;
  if (!r) return [];
  const list = Array.isArray(r) ? r : typeof r === "object" && r.name === undefined ? Object.values(r) : [r];
  return list.filter(Boolean).map((m) => ({ name: m.name || m.model, version: ver(m.version), digest: m.digest, sequence: m.sequence }));
}
const hex = (d) => (Array.isArray(d) ? d.slice(0, 6).map((b) => b.toString(16).padStart(2, "0")).join("") : String(d || "").slice(0, 12));
const labels = (d) => Object.entries(d.labels || {}).map(([k, v]) => `${k}=${v}`);
function phaseName(p) {
  const k = tag(p);
  if (k === "Aborted") return p.Aborted.reverted ? "aborted and reverted" : "aborted";
  return { Pending: "pending", Progressing: "progressing", Paused: "paused", Completed: "completed", RolledBack: "rolled back" }[k] || k;
}
const phaseReason = (p) => (typeof p === "object" && p && (p.Paused || p.RolledBack) ? (p.Paused || p.RolledBack).reason : "");
const waveSize = (w) => (w.size.Percent !== undefined ? `${w.size.Percent / 100}%` : `${w.size.Count}`);
const actor = (a) => (a === "Planner" ? "planner" : a && a.Operator ? a.Operator : String(a || ""));
function decision(d) {
  const k = tag(d);
  const v = typeof d === "object" ? d[k] : null;
  if (k === "Advanced") return `advanced to wave ${v.to + 1}`;
  if (k === "GateFailed") return v.rolled_back ? "gate failed: rolled back" : "gate failed: paused";
  if (k === "Promoted") return v.full ? "promoted (full)" : "promoted";
  if (k === "Aborted") return v.revert ? "aborted and reverted" : "aborted";
  return k.replace(/([a-z])([A-Z])/g, "$1 $2").toLowerCase();
}
const gateName = (g) => ({ Quorum: "quorum", InstallFailure: "install failures", ErrorRate: "error rate", LatencyP95: "p95 latency", ShadowAgreement: "shadow agreement", Drift: "drift (PSI)" })[g] || g;
const verdictClass = (v) => ({ Pass: "ok", Fail: "bad", Inconclusive: "warn" })[v] || "";

// ---- sign-in ------------------------------------------------------------------------------------------
function showSignIn() {
  state.csrf = null;
  $("#signin").hidden = false;
  $("#nav").hidden = true;
  $("#signout").hidden = true;
  $("#who").textContent = "";
  $("#page").innerHTML = "";
}

async function startSession() {
  const res = await fetch("/console/session", { credentials: "same-origin" });
  if (!res.ok) return showSignIn();
  const s = await res.json();
  signedIn(s);
}

function signedIn(s) {
  state.csrf = s.csrf;
  state.operator = s.operator;
  $("#signin").hidden = true;
  $("#nav").hidden = false;
  $("#signout").hidden = false;
  $("#who").textContent = `signed in as ${s.operator}`;
  route();
}

$("#signin-form").addEventListener("submit", async (ev) => {
  ev.preventDefault();
  $("#signin-error").textContent = "";
  const res = await fetch("/console/login", {
    method: "POST",
    headers: { "Content-Type": "application/json" },
    body: JSON.stringify({ token: $("#token").value }),
    credentials: "same-origin",
  });
  const body = await res.json().catch(() => ({}));
  if (!res.ok) {
    $("#signin-error").textContent = body.error || "sign-in failed";
    return;
  }
  $("#token").value = "";
  signedIn(body);
});

$("#signout").addEventListener("click", async () => {
  await fetch("/console/logout", { method: "POST", credentials: "same-origin" });
  showSignIn();
});

// ---- confirmation -------------------------------------------------------------------------------------
function confirmAction(text) {
  return new Promise((resolve) => {
    $("#confirm-text").textContent = text;
    $("#confirm").hidden = false;
    const done = (ok) => {
      $("#confirm").hidden = true;
      $("#confirm-yes").onclick = null;
      $("#confirm-no").onclick = null;
      resolve(ok);
    };
    $("#confirm-yes").onclick = () => done(true);
    $("#confirm-no").onclick = () => done(false);
  });
}

// ---- pages --------------------------------------------------------------------------------------------
function table(id, head, rows) {
  return `<table id="${id}"><thead><tr>${head.map((h) => `<th>${esc(h)}</th>`).join("")}</tr></thead><tbody>${rows.join("")}</tbody></table>`;
}

function selectorMatches(d, sel) {
  const parts = sel.split(",").map((s) => s.trim()).filter(Boolean);
  return parts.every((p) => {
    const [k, v] = p.split("=").map((s) => (s || "").trim());
    if (v === undefined || v === "") return d.id.includes(k) || labels(d).some((l) => l.includes(k));
    return (d.labels || {})[k] === v || (k === "arch" && d.arch === v);
  });
}

async function fleetPage(el) {
  const [devices, skew] = await Promise.all([api("/api/v1/devices?view=brief"), api("/api/v1/skew")]);
  const counts = { online: 0, offline: 0, pending: 0, revoked: 0 };
  devices.forEach((d) => counts[deviceStatus(d)]++);
  const byLabel = {};
  devices.forEach((d) => labels(d).forEach((l) => (byLabel[l] = (byLabel[l] || 0) + 1)));
  const shown = devices.filter((d) => selectorMatches(d, state.fleetFilter));
  const rows = shown.map((d) => `<tr data-device="${esc(d.id)}" class="st-${deviceStatus(d)}">
      <td><a href="#/devices/${encodeURIComponent(d.id)}">${esc(d.id)}</a></td>
      <td><span class="pill ${deviceStatus(d)}">${deviceStatus(d)}</span></td>
      <td>${models(d).map((m) => `<div>${esc(m.name)} ${esc(m.version)}</div>`).join("") || "–"}</td>
      <td>${esc(ver(d.agent_version))}</td><td>${esc((d.arch || "–").toLowerCase())}</td>
      <td>${labels(d).map((l) => `<span class="label">${esc(l)}</span>`).join(" ")}</td>
      <td>${esc(ago(d.last_seen))}</td></tr>`);
  const skewHtml = skew.map((m) => `<div class="skew" data-model="${esc(m.model)}"><h3>${esc(m.model)}${m.target ? ` <small>target ${esc(ver(m.target.version))}</small>` : ""}</h3>
      ${Charts.bar(m.versions.map((v) => ({ name: ver(v.version), value: v.online + v.offline })))}
      ${Charts.bar(Object.entries(m.compliance).map(([k, v]) => ({ name: k.replace("_", " "), value: v })))}</div>`).join("");
  el.querySelector("#fleet-body").innerHTML = `
    <div class="cards">${Object.entries(counts).map(([k, v]) => `<div class="card" data-status="${k}"><b class="status-count">${v}</b> ${k}</div>`).join("")}</div>
    <h2>Models and versions</h2>${skewHtml || "<p>No model runs anywhere yet.</p>"}
    <h2>Labels</h2><p>${Object.entries(byLabel).sort().map(([l, n]) => `<button class="label-filter" data-label="${esc(l)}">${esc(l)} (${n})</button>`).join(" ") || "none"}</p>
    <h2>Devices <small>${shown.length} of ${devices.length}</small></h2>
    ${table("devices", ["device", "status", "models", "agent", "arch", "labels", "last seen"], rows)}`;
  el.querySelectorAll(".label-filter").forEach((b) => (b.onclick = () => {
    state.fleetFilter = b.dataset.label;
    el.querySelector("#fleet-filter").value = state.fleetFilter;
    refresh();
  }));
}

function fleetShell(el) {
  el.innerHTML = `<h1>Fleet</h1>
    <input id="fleet-filter" placeholder="label selector (region=eu,arch=aarch64) or device id" value="${esc(state.fleetFilter)}">
    <div id="fleet-body"></div>`;
  el.querySelector("#fleet-filter").oninput = (e) => {
    state.fleetFilter = e.target.value;
    refresh();
  };
}

async function rolloutsPage(el) {
  const list = await api("/api/v1/rollouts");
  list.sort((a, b) => ((b.state.history[0] || {}).at || 0) - ((a.state.history[0] || {}).at || 0));
  const rows = list.map((r) => {
    const installs = Object.values(r.state.members).filter((m) => m.intent === "Install").length;
    return `<tr data-rollout="${esc(r.spec.id)}"><td><a href="#/rollouts/${encodeURIComponent(r.spec.id)}">${esc(r.spec.id)}</a></td>
      <td>${esc(r.spec.release.model)} ${esc(ver(r.spec.release.version))}</td>
      <td class="phase"><span class="pill ${tag(r.state.phase).toLowerCase()}">${esc(phaseName(r.state.phase))}</span></td>
      <td>${r.state.wave + 1} of ${r.spec.waves.length}</td><td>${installs}</td>
      <td>${esc(clock((r.state.history[0] || {}).at || 0))}</td></tr>`;
  });
  el.innerHTML = `<h1>Rollouts</h1>${list.length ? table("rollouts", ["rollout", "release", "phase", "wave", "devices told", "started"], rows) : "<p>No rollouts yet: <code>outpost rollout start</code>.</p>"}`;
}

const VERBS = [
  ["pause", "Pause", "Pause rollout %s? No device is told anything new until it is resumed."],
  ["resume", "Resume", "Resume rollout %s?"],
  ["promote", "Promote", "Promote rollout %s to its next wave, skipping the rest of this wave's bake?"],
  ["promote?full=true", "Promote all", "Promote rollout %s to every selected device at once?"],
  ["abort", "Abort", "Abort rollout %s? Devices keep what they run now."],
  ["abort?revert=true", "Abort + revert", "Abort rollout %s and tell every device that installed it to switch back to its previous model?"],
  ["undo", "Undo", "Undo rollout %s: revert every device to its previous model?"],
];

async function rolloutPage(el, id) {
  const [r, series] = await Promise.all([api(`/api/v1/rollouts/${encodeURIComponent(id)}`), api(`/api/v1/rollouts/${encodeURIComponent(id)}/gates`)]);
  const s = r.state, spec = r.spec;
  const perWave = spec.waves.map((_, i) => Object.values(s.members).filter((m) => m.wave === i).length);
  const told = Object.values(s.members).filter((m) => m.intent === "Install").length;
  const e = s.last_evidence;
  // Every wave, in every phase (`state.progress`); older controllers only had the current wave's evidence.
  const p = s.progress || e;
  const selected = p ? p.selected : told;
  const installed = p ? p.installed : 0;
  const bakeLeft = (w) => Math.max(0, s.wave_started_at + w.bake_secs - Date.now() / 1000);
  const waves = spec.waves.map((w, i) => `<tr class="${i === s.wave ? "current" : ""}"><td>${i + 1}</td><td>${esc(waveSize(w))}</td><td>${perWave[i]}</td>
      <td>${i < s.wave ? "done" : i === s.wave ? (tag(s.phase) === "Progressing" ? `${Math.round(bakeLeft(w))}s left` : esc(phaseName(s.phase))) : "waiting"}</td></tr>`);
  const gates = e ? e.gates.map((g) => `<tr data-gate="${esc(g.gate)}"><td>${esc(gateName(g.gate))}</td><td class="${verdictClass(g.verdict)}">${esc(g.verdict)}</td>
      <td>${esc(fmt(g.value))}</td><td>${esc(fmt(g.baseline))}</td><td>${esc(fmt(g.threshold))}</td><td>${g.samples}</td><td>${esc(g.note)}</td></tr>`) : [];
  const kinds = [...new Set(series.flatMap((x) => x.gates.map((g) => g.gate)))];
  const charts = kinds.map((k) => {
    const pts = series.map((x) => [x.at, (x.gates.find((g) => g.gate === k) || {}).value]);
    const last = series.map((x) => x.gates.find((g) => g.gate === k)).filter(Boolean).pop();
    const verdicts = series.map((x) => (x.gates.find((g) => g.gate === k) || {}).verdict).filter(Boolean);
    return `<div class="gate-chart">${Charts.line([{ name: "wave", points: pts }, { name: "baseline", points: series.map((x) => [x.at, (x.gates.find((g) => g.gate === k) || {}).baseline]) }], { title: gateName(k), threshold: last ? last.threshold : undefined })}
      <div class="verdicts">${verdicts.slice(-40).map((v) => `<i class="${verdictClass(v)}" title="${esc(v)}"></i>`).join("")}</div></div>`;
  }).join("");
  const trail = s.history.slice().reverse().map((h) => `<tr><td>${esc(clock(h.at))}</td><td>${h.wave + 1}</td><td>${esc(decision(h.decision))}</td>
      <td>${esc(actor(h.by))}</td><td>${esc(h.reason)}</td><td>${h.installs}/${h.reverts}/${h.withdrawals}</td></tr>`);
  const pct = selected ? Math.round((100 * installed) / selected) : 0;
  el.innerHTML = `<h1>Rollout ${esc(spec.id)}</h1>
    <p>${esc(spec.release.model)} ${esc(ver(spec.release.version))} · phase <b id="phase">${esc(phaseName(s.phase))}</b>
      ${phaseReason(s.phase) ? `<span class="reason">${esc(phaseReason(s.phase))}</span>` : ""} · wave ${s.wave + 1} of ${spec.waves.length}
      · on failure: ${esc(tag(spec.on_failure).toLowerCase())}</p>
    <div class="progress" title="${installed} of ${selected} selected devices installed"><svg width="100%" height="16"><rect width="100%" height="16" class="track"/><rect width="${pct}%" height="16" class="done"/></svg>
      <span id="progress-text">${installed} of ${selected} devices on ${esc(ver(spec.release.version))} (${pct}%)${p ? `, ${p.in_progress} in progress, ${p.failed} failed` : ""}</span></div>
    <div class="verbs">${VERBS.map(([v, label]) => `<button data-verb="${esc(v)}" class="${v.startsWith("abort") || v === "undo" ? "danger" : ""}">${esc(label)}</button>`).join(" ")}</div>
    <p id="verb-result" class="error"></p>
    <h2>Waves</h2>${table("waves", ["wave", "size", "devices", "bake"], waves)}
    <h2>Gates <small>${e ? `evaluated ${esc(ago(e.at))}` : "not evaluated yet"}</small></h2>
    ${gates.length ? table("gates", ["gate", "verdict", "wave", "baseline", "threshold", "samples", "note"], gates) : ""}
    <div class="charts">${charts}</div>
    <h2>Decision trail</h2>${table("trail", ["at", "wave", "decision", "by", "reason", "installs/reverts/withdrawals"], trail)}`;
  el.querySelectorAll("button[data-verb]").forEach((b) => (b.onclick = async () => {
    const [verb, label, text] = VERBS.find((v) => v[0] === b.dataset.verb);
    if (!(await confirmAction(text.replace("%s", spec.id)))) return;
    try {
      await api(`/api/v1/rollouts/${encodeURIComponent(spec.id)}/${verb}`, { method: "POST" });
      el.querySelector("#verb-result").textContent = "";
      refresh();
    } catch (err) {
      el.querySelector("#verb-result").textContent = `${label}: ${err.message}`;
    }
  }));
}

async function devicePage(el, id) {
  const [d, windows] = await Promise.all([api(`/api/v1/devices/${encodeURIComponent(id)}`), api(`/api/v1/devices/${encodeURIComponent(id)}/windows`)]);
  const st = deviceStatus(d);
  const byModel = {};
  windows.forEach((w) => (byModel[w.model] = byModel[w.model] || []).push(w));
  const charts = Object.entries(byModel).map(([model, ws]) => {
    const pts = (f) => ws.map((w) => [w.at, f(w)]);
    return `<h3>${esc(model)}</h3><div class="charts">
      ${Charts.line([{ name: "requests", points: pts((w) => w.requests) }], { title: "requests per window" })}
      ${Charts.line([{ name: "error rate", points: pts((w) => w.error_rate) }], { title: "error rate", yMin: 0 })}
      ${Charts.line([{ name: "p95", points: pts((w) => w.p95_us / 1000) }], { title: "p95 latency", unit: " ms", yMin: 0 })}
      ${Charts.line([{ name: "agreement", points: pts((w) => w.shadow_agreement) }], { title: "shadow agreement", yMin: 0, yMax: 1 })}
      ${Charts.line([{ name: "PSI", points: pts((w) => w.psi) }], { title: "drift (PSI)", yMin: 0 })}</div>`;
  }).join("");
  // Update events of every model (`models.NAME.events`, oldest first, each with `at`: when the controller
  // received it), newest first. A model's own order holds where its times do not (a clock stepped back,
  // events stored before the controller kept times): each sorts by the latest time of its model up to it.
  const all = Object.values(d.models || {}).flatMap((m) => {
    let latest = 0;
    return (m.events || []).map((e) => ({ e, key: (latest = Math.max(latest, e.at || 0)) }));
  }).concat((d.events || []).map((e) => ({ e, key: e.at || 0 })));
  all.sort((a, b) => a.key - b.key);
  const received = (t) => (t ? `<span title="${esc(new Date(t * 1000).toISOString())}">${esc(clock(t))}</span> · ${esc(ago(t))}` : "–");
  const events = all.reverse().map(({ e }) => `<tr><td>${received(e.at)}</td><td>${esc(e.model)} ${esc(ver(e.version))}</td><td>${esc(tag(e.from))} → ${esc(tag(e.to))}</td>
      <td>${esc(e.reason ? tag(e.reason) : "")}</td><td>${esc(e.detail || "")}</td><td>${esc(e.rollout || "")}</td></tr>`);
  const ms = models(d).map((m) => `<tr><td>${esc(m.name)}</td><td>${esc(m.version)}</td><td>active</td><td>${esc(m.sequence ?? "")}</td><td><code>${esc(hex(m.digest))}</code></td></tr>`);
  // One desired state per model (a map by model name), or a single one from older controllers.
  const desired = !d.desired ? [] : Array.isArray(d.desired) ? d.desired : d.desired.model !== undefined ? [d.desired] : Object.values(d.desired);
  desired.forEach((x) => ms.push(`<tr><td>${esc(x.model)}</td><td>${esc(ver(x.version))}</td><td>desired (${esc(tag(x.mode).toLowerCase())})</td><td>${esc(x.sequence)}</td><td>${esc(x.rollout || "")}</td></tr>`));
  const h = d.last_health;
  el.innerHTML = `<h1>Device ${esc(d.id)}</h1>
    <p><span class="pill ${st}">${st}</span> · agent ${esc(ver(d.agent_version))} · ${esc((d.arch || "arch unknown").toLowerCase())} · last seen ${esc(ago(d.last_seen))}
      · first seen ${esc(new Date(d.first_seen * 1000).toLocaleString())}</p>
    <p>${labels(d).map((l) => `<span class="label">${esc(l)}</span>`).join(" ") || "no labels"}</p>
    <h2>Models and slots</h2>${table("models", ["model", "version", "slot", "sequence", "digest / rollout"], ms)}
    ${h ? `<p>memory ${esc(fmt(h.rss_bytes / 1048576))} MiB · cpu ${esc(fmt(h.cpu_percent))}% · disk free ${esc(fmt(h.disk_free_bytes / 1073741824))} GiB</p>` : ""}
    <p>telemetry: ${d.telemetry.received} records received, ${d.telemetry.duplicates} duplicates, ${d.telemetry.missing} dropped by the device</p>
    <h2>Telemetry</h2><div id="charts">${charts || "<p>No inference windows received since the controller started.</p>"}</div>
    <h2>Update events</h2>${table("events", ["received", "release", "stage", "reason", "detail", "rollout"], events)}`;
}

function auditText(e) {
  if (e.decision !== undefined) return `${e.rollout}: ${decision(e.decision)} — ${e.reason}`;
  const rest = Object.entries(e).filter(([k]) => !["at", "what"].includes(k)).map(([k, v]) => `${k}=${typeof v === "object" ? JSON.stringify(v) : v}`);
  return `${e.what || ""} ${rest.join(" ")}`;
}

async function auditPage(el) {
  const log = await api("/api/v1/audit");
  const f = state.auditFilter;
  const who = (e) => (e.by ? actor(e.by) : e.operator || "controller");
  const rows = log.slice().reverse().filter(({ entry }) =>
    (!f.rollout || (entry.rollout || "").includes(f.rollout)) && (!f.who || who(entry).includes(f.who)) &&
    (!f.text || auditText(entry).toLowerCase().includes(f.text.toLowerCase())))
    .slice(0, 500)
    .map(({ n, entry }) => `<tr><td>${n}</td><td>${esc(new Date(entry.at * 1000).toLocaleString())}</td><td>${esc(who(entry))}</td><td>${esc(auditText(entry))}</td></tr>`);
  el.querySelector("#audit-body").innerHTML = table("audit", ["#", "at", "by", "what"], rows);
}

function auditShell(el) {
  const f = state.auditFilter;
  el.innerHTML = `<h1>Audit</h1><div class="filters">
    <input id="audit-rollout" placeholder="rollout" value="${esc(f.rollout)}">
    <input id="audit-who" placeholder="by (operator, planner)" value="${esc(f.who)}">
    <input id="audit-text" placeholder="text" value="${esc(f.text)}"></div><div id="audit-body"></div>`;
  for (const k of ["rollout", "who", "text"]) {
    el.querySelector(`#audit-${k}`).oninput = (e) => {
      f[k] = e.target.value;
      refresh();
    };
  }
}

// ---- routing and polling ------------------------------------------------------------------------------
let current = null;

function route() {
  if (!state.csrf) return;
  const parts = (location.hash || "#/fleet").slice(2).split("/").map(decodeURIComponent);
  const el = $("#page");
  document.querySelectorAll("#nav a").forEach((a) => a.classList.toggle("active", a.dataset.page === parts[0]));
  if (parts[0] === "rollouts" && parts[1]) current = () => rolloutPage(el, parts[1]);
  else if (parts[0] === "rollouts") current = () => rolloutsPage(el);
  else if (parts[0] === "devices" && parts[1]) current = () => devicePage(el, parts[1]);
  else if (parts[0] === "audit") {
    auditShell(el);
    current = () => auditPage(el);
  } else {
    fleetShell(el);
    current = () => fleetPage(el);
  }
  if (!["audit", "fleet"].includes(parts[0]) && parts[0] !== "") el.innerHTML = "<p>loading…</p>";
  refresh();
}

let busy = false;
async function refresh() {
  if (!current || !state.csrf || busy) return;
  busy = true;
  try {
    await current();
    $("#updated").textContent = `updated ${new Date().toTimeString().slice(0, 8)}`;
    $("#problem").textContent = "";
  } catch (err) {
    $("#problem").textContent = err.message === "signed out" ? "" : `cannot update: ${err.message}`;
  } finally {
    busy = false;
  }
}

window.addEventListener("hashchange", route);
setInterval(() => {
  if ($("#confirm").hidden) refresh();
}, POLL_MS);
startSession();
