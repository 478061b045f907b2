// BeTrace console: a page per route of the hash (#/rules, #/rules/ID, …).
// Everything is read and written through the public /v1 API; every text
// that comes from a rule or a trace is set as text, never parsed as HTML.
"use strict";

const SEVERITIES = ["CRITICAL", "HIGH", "MEDIUM", "LOW"];
const SEV_COLOR = { CRITICAL: "#b91c1c", HIGH: "#ef4444", MEDIUM: "#f59e0b", LOW: "#94a3b8" };
const TEMPLATES = {
  "payment-fraud-check": "when { payment.charge } always { fraud.check }",
  "pii-access-audit": "when { database.query.where(data.contains_pii == true) } always { auth.check }",
  "checkout-slow-db": "when { checkout } never { db.query.where(span.duration > 500ms) }",
  "n-plus-one-queries": "when { count(db.query) > 25 } never { checkout }",
  "ai-tool-approval": "when { ai.tool_call.where(risk == high) } always { human.approval }",
};

const session = { csrf: "", authRequired: false, traceUrlTemplate: "" };
const $main = () => document.getElementById("main");

// h builds an element: h("a", {href: "#/"}, "text", child…). Attributes
// starting with "on" are listeners; strings become text nodes.
function h(tag, attrs, ...children) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === undefined || v === null || v === false) continue;
    if (k.startsWith("on")) el.addEventListener(k.slice(2), v);
    else if (k === "value") el.value = v;
    else el.setAttribute(k, v === true ? "" : String(v));
  }
  for (const c of children.flat()) {
    if (c === undefined || c === null || c === false) continue;
    el.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return el;
}

function svg(tag, attrs, ...children) {
  const el = document.createElementNS("http://www.w3.org/2000/svg", tag);
  for (const [k, v] of Object.entries(attrs || {})) el.setAttribute(k, String(v));
  for (const c of children.flat()) if (c) el.append(c instanceof Node ? c : document.createTextNode(String(c)));
  return el;
}

class APIError extends Error {
  constructor(status, message, body) { super(message); this.status = status; this.body = body; }
}

// api calls the BeTrace API; a 401 shows the login form.
async function api(method, path, body, contentType) {
  const headers = {};
  if (method !== "GET" && session.csrf) headers["X-BeTrace-CSRF"] = session.csrf;
  let payload = body;
  if (body !== undefined && !(body instanceof Blob) && typeof body !== "string") {
    payload = JSON.stringify(body);
    headers["Content-Type"] = "application/json";
  } else if (contentType) headers["Content-Type"] = contentType;
  const res = await fetch(path, { method, headers, body: payload, credentials: "same-origin" });
  const text = await res.text();
  let data = null;
  try { data = text ? JSON.parse(text) : null; } catch (e) { data = text; }
  if (res.status === 401 && !path.startsWith("/ui/")) { showLogin(); throw new APIError(401, "log in first", data); }
  if (!res.ok && !(path === "/ready" && data && data.status)) {
    const msg = (data && data.message) || (data && data.error && data.error.message) || res.status + " " + res.statusText;
    throw new APIError(res.status, msg, data);
  }
  return data;
}

function toast(msg, bad) {
  const t = document.getElementById("toast");
  t.textContent = msg;
  t.className = bad ? "bad" : "";
  t.hidden = false;
  clearTimeout(toast.timer);
  toast.timer = setTimeout(() => { t.hidden = true; }, bad ? 8000 : 3000);
}

function fmt(n) { return n === undefined || n === null ? "–" : Number(n).toLocaleString("en-US"); }
function ago(ts) {
  const s = Math.round((Date.now() - new Date(ts).getTime()) / 1000);
  if (s < 60) return s + "s ago";
  if (s < 3600) return Math.round(s / 60) + "m ago";
  if (s < 86400) return Math.round(s / 3600) + "h ago";
  return Math.round(s / 86400) + "d ago";
}
function stateOf(r) {
  if (r.pending) return "pending";
  if (r.state === "active" && r.stats && r.stats.throttled) return "throttled";
  return r.state;
}
function badge(state) { return h("span", { class: "badge state-" + state, "data-state": state }, state); }
function sev(s) { return h("span", { class: "sev-" + s }, s); }
function enc(s) { return encodeURIComponent(s); }

function page(title, ...children) {
  const m = $main();
  m.replaceChildren(h("h1", {}, title), ...children);
  document.title = title + " · BeTrace";
}

// ---- login ----

function showLogin(message) {
  document.getElementById("logout").hidden = true;
  const input = h("input", { type: "password", id: "token", autocomplete: "current-password", "aria-label": "API token" });
  const err = h("p", { class: "errors", id: "login-error" }, message || "");
  const form = h("form", { class: "login", id: "login", onsubmit: async (e) => {
    e.preventDefault();
    try {
      const r = await api("POST", "/ui/login", { token: input.value });
      session.csrf = r.csrf;
      input.value = "";
      document.getElementById("logout").hidden = false;
      route();
    } catch (ex) { err.textContent = ex.message; }
  } },
  h("h1", {}, "Log in to BeTrace"),
  h("label", {}, "API token (BETRACE_API_TOKEN)", input),
  h("button", { class: "primary", type: "submit" }, "Log in"), err);
  $main().replaceChildren(form);
  input.focus();
}

// ---- overview ----

function barChart(buckets, series, colors, label) {
  const w = 600, hgt = 90, n = buckets.length || 1;
  const totals = buckets.map((b) => series.reduce((s, k) => s + (b[k] || 0), 0));
  const max = Math.max(1, ...totals);
  const bw = w / n;
  const bars = [];
  buckets.forEach((b, i) => {
    let y = hgt;
    for (const k of series) {
      const v = b[k] || 0;
      if (!v) continue;
      const bh = (v / max) * (hgt - 4);
      y -= bh;
      bars.push(svg("rect", { x: i * bw + 0.5, y, width: Math.max(1, bw - 1), height: bh, fill: colors[k] },
        svg("title", {}, k + ": " + v)));
    }
  });
  return h("figure", {}, svg("svg", { class: "chart", viewBox: `0 0 ${w} ${hgt}`, preserveAspectRatio: "none", role: "img", "aria-label": label }, bars),
    h("figcaption", { class: "legend" }, series.filter((k) => buckets.some((b) => b[k])).map((k) => h("span", {}, h("span", { class: "sw", "data-color": colors[k] }), k)),
      h("span", { class: "muted" }, label + ", max " + fmt(max))));
}

function paintSwatches(root) {
  for (const s of root.querySelectorAll(".sw[data-color]")) s.style.background = s.dataset.color;
}

async function overview() {
  const now = Math.floor(Date.now() / 1000);
  const [ready, health, rules, summary, tp] = await Promise.all([
    api("GET", "/ready"), api("GET", "/health"), api("GET", "/v1/rules"),
    api("GET", `/v1/violations/summary?start_time=${now - 3600}&bucket=1m`), api("GET", "/ui/throughput"),
  ]);
  const list = rules.rules || [];
  const counts = { active: 0, disabled: 0, quarantined: 0, throttled: 0, pending: 0 };
  for (const r of list) counts[stateOf(r)] = (counts[stateOf(r)] || 0) + 1;

  const attention = [];
  for (const [check, v] of Object.entries(ready.checks || {})) {
    if (v !== "ok") attention.push(h("li", {}, "Readiness check ", h("b", {}, check), ": " + v));
  }
  const order = { quarantined: 0, throttled: 1, pending: 2, active: 3, disabled: 4 };
  for (const r of [...list].sort((a, b) => order[stateOf(a)] - order[stateOf(b)])) {
    const st = stateOf(r);
    if (st === "quarantined") attention.push(h("li", {}, h("a", { href: "#/rules/" + enc(r.id) }, r.id), " is quarantined: ", (r.quarantine && r.quarantine.reason) || r.stateReason));
    else if (st === "throttled") attention.push(h("li", {}, h("a", { href: "#/rules/" + enc(r.id) }, r.id), " is throttled: ", r.stats.throttled.reason || "over its share"));
    else if (st === "pending") attention.push(h("li", {}, h("a", { href: "#/rules/" + enc(r.id) }, r.id), " has a state change waiting for storage"));
    else if (r.enabled && r.stats && r.stats.errors > 0) attention.push(h("li", {}, h("a", { href: "#/rules/" + enc(r.id) }, r.id), ` had ${fmt(r.stats.errors)} faults`));
  }

  const minutes = [];
  for (let i = 59; i >= 0; i--) minutes.push({ t: (Math.floor(now / 60) - i) * 60 });
  const byMinute = new Map(minutes.map((m) => [m.t, m]));
  for (const row of summary.rows || []) {
    const m = byMinute.get(Math.floor(new Date(row.start).getTime() / 60000) * 60);
    if (m) m[row.severity] = (m[row.severity] || 0) + row.counted;
  }
  const rate = (tp.points || []).map((p) => ({ spans: Math.round(p.spansPerSecond) }));

  page("Overview",
    h("div", { class: "cards" },
      h("div", { class: "card" }, h("div", { class: "muted" }, "Health"), h("div", { class: "v", id: "health" }, health.status), h("div", { class: "muted" }, "version " + health.version)),
      h("div", { class: "card" }, h("div", { class: "muted" }, "Readiness"), h("div", { class: "v", id: "readiness" }, ready.status),
        h("div", { class: "muted" }, Object.entries(ready.checks || {}).map(([k, v]) => k + ": " + v).join(", "))),
      ...["active", "quarantined", "throttled", "disabled"].map((st) =>
        h("a", { class: "card", href: "#/rules?state=" + st }, h("div", { class: "muted" }, "Rules " + st), h("div", { class: "v", id: "rules-" + st }, fmt(counts[st]))))),
    h("h2", {}, "Needs attention"),
    attention.length ? h("ul", { id: "attention" }, attention) : h("p", { class: "muted", id: "attention" }, "Nothing: every rule is running and every check is ok."),
    h("h2", {}, "Violations per minute, last hour"),
    barChart(minutes, SEVERITIES, SEV_COLOR, "violations/min by severity (counted)"),
    h("h2", {}, "Spans per second, last hour, this instance"),
    rate.length ? barChart(rate, ["spans"], { spans: "#2563eb" }, `spans/s received, every ${tp.intervalSeconds} s`)
      : h("p", { class: "muted", id: "throughput" }, `The first point appears ${tp.intervalSeconds} s after the server started.`));
  paintSwatches($main());
}

// ---- rules ----

async function rulesPage(params) {
  const data = await api("GET", "/v1/rules");
  const all = data.rules || [];
  const state = h("select", { id: "f-state", "aria-label": "state" }, h("option", { value: "" }, "any state"),
    ["active", "throttled", "quarantined", "pending", "disabled"].map((s) => h("option", { value: s }, s)));
  const severity = h("select", { id: "f-severity", "aria-label": "severity" }, h("option", { value: "" }, "any severity"), SEVERITIES.map((s) => h("option", { value: s }, s)));
  const search = h("input", { id: "f-search", type: "search", placeholder: "id, name, tag", "aria-label": "search" });
  state.value = params.get("state") || "";
  severity.value = params.get("severity") || "";
  search.value = params.get("q") || "";
  const body = h("tbody");
  const count = h("span", { class: "muted" });
  const render = () => {
    const q = search.value.trim().toLowerCase();
    const rows = all.filter((r) => (!state.value || stateOf(r) === state.value) && (!severity.value || r.severity === severity.value) &&
      (!q || r.id.toLowerCase().includes(q) || (r.name || "").toLowerCase().includes(q) || (r.tags || []).some((t) => t.toLowerCase().includes(q))));
    count.textContent = `${rows.length} of ${all.length} rules`;
    body.replaceChildren(...rows.map((r) => {
      const st = r.stats || {};
      const fuel = r.limits ? r.limits.fuel : 0;
      return h("tr", { "data-rule": r.id },
        h("td", {}, h("a", { href: "#/rules/" + enc(r.id) }, r.id), h("div", { class: "muted" }, r.name !== r.id ? r.name : "")),
        h("td", {}, badge(stateOf(r))), h("td", {}, sev(r.severity)),
        h("td", { class: "num" }, fmt(st.evaluations)), h("td", { class: "num" }, fmt(st.violations)),
        h("td", { class: "num" }, fmt(st.errors)),
        h("td", { class: "num hide-narrow" }, fuel ? `${fmt(st.fuelP99)} / ${fmt(fuel)} (${((100 * (st.fuelP99 || 0)) / fuel).toFixed(1)}%)` : "–"));
    }));
  };
  for (const el of [state, severity]) el.addEventListener("change", render);
  search.addEventListener("input", render);
  render();
  page("Rules",
    h("div", { class: "filters" }, h("label", {}, "State", state), h("label", {}, "Severity", severity), h("label", {}, "Search", search),
      h("a", { href: "#/new" }, "New rule"), count),
    h("div", { class: "scroll" }, h("table", { id: "rules" },
      h("thead", {}, h("tr", {}, h("th", {}, "Rule"), h("th", {}, "State"), h("th", {}, "Severity"), h("th", { class: "num" }, "Evaluations"),
        h("th", { class: "num" }, "Violations"), h("th", { class: "num" }, "Errors"), h("th", { class: "num hide-narrow" }, "Fuel p99 / budget"))),
      body)));
}

async function rulePage(id) {
  const r = await api("GET", "/v1/rules/" + enc(id));
  const st = r.stats || {};
  const act = async (what, fn) => {
    try { await fn(); toast(what); route(); } catch (e) { toast(what + " failed: " + e.message, true); }
  };
  const toggle = h("button", { id: r.enabled ? "disable" : "enable", class: r.enabled ? "danger" : "primary",
    onclick: () => act(r.enabled ? "Disabled " + id : "Enabled " + id, () => api("POST", `/v1/rules/${enc(id)}/${r.enabled ? "disable" : "enable"}`)) },
  r.enabled ? "Disable" : "Enable");
  const sevSel = h("select", { id: "severity", "aria-label": "severity" }, SEVERITIES.map((s) => h("option", { value: s }, s)));
  sevSel.value = r.severity;
  const sevSave = h("button", { id: "save-severity", onclick: () => act("Severity of " + id + " is " + sevSel.value, () => api("PUT", "/v1/rules/" + enc(id), { severity: sevSel.value })) }, "Change severity");
  const del = h("button", { id: "delete", class: "danger", onclick: () => {
    if (del.dataset.armed) act("Deleted " + id, async () => { await api("DELETE", "/v1/rules/" + enc(id)); location.hash = "#/rules"; });
    else { del.dataset.armed = "1"; del.textContent = "Confirm: delete " + id + " and its versions"; }
  } }, "Delete…");
  const q = r.quarantine;
  const reason = [];
  if (r.stateReason) reason.push(h("dt", {}, "Reason"), h("dd", { id: "state-reason" }, r.stateReason));
  if (q) {
    reason.push(h("dt", {}, "Quarantine"), h("dd", {}, `${q.reason}: ${q.strikes} faults` + (q.evaluations ? ` in ${q.evaluations} evaluations` : "") + ` at ${new Date(q.at).toLocaleString()}`));
    if (q.lastError) reason.push(h("dt", {}, "Last error"), h("dd", {}, h("code", {}, q.lastError)));
    if (q.traceId) reason.push(h("dt", {}, "Trace that caused it"), h("dd", {}, traceLink(q.traceId)));
  }
  if (st.throttled) reason.push(h("dt", {}, "Throttled"), h("dd", {}, st.throttled.reason || JSON.stringify(st.throttled)));
  const m = r.module || {};
  const versions = (r.versions || []).slice().reverse().map((v) => h("tr", {},
    h("td", { class: "num" }, v.version + (v.version === r.version ? " (live)" : "")), h("td", {}, v.source), h("td", { class: "hide-narrow" }, h("code", {}, (v.sha256 || "").slice(0, 16) + "…")),
    h("td", { class: "num" }, fmt(v.sizeBytes)), h("td", {}, ago(v.createdAt)),
    h("td", {}, v.version === r.version ? "" : h("button", { "data-version": v.version, onclick: () => act(`Rolled ${id} back to version ${v.version}`, () => api("POST", `/v1/rules/${enc(id)}/rollback?version=${v.version}`)) }, "Roll back"))));
  page(r.name && r.name !== r.id ? `${r.name} (${r.id})` : r.id,
    h("div", { class: "actions" }, toggle, h("label", {}, "Severity", sevSel), sevSave,
      r.expression !== undefined ? h("a", { href: "#/rules/" + enc(id) + "/edit" }, "Edit expression") : null,
      h("a", { href: "#/violations?rule_id=" + enc(id) }, "Violations of this rule"), del),
    h("dl", {},
      h("dt", {}, "State"), h("dd", {}, badge(stateOf(r))), ...reason,
      h("dt", {}, "Severity"), h("dd", {}, sev(r.severity)),
      h("dt", {}, "Description"), h("dd", {}, r.description || "–"),
      h("dt", {}, "Tags"), h("dd", {}, (r.tags || []).join(", ") || "–"),
      h("dt", {}, "Evaluations"), h("dd", { id: "evaluations" }, fmt(st.evaluations)),
      h("dt", {}, "Violations"), h("dd", {}, fmt(st.violations)),
      h("dt", {}, "Errors"), h("dd", {}, fmt(st.errors)),
      h("dt", {}, "Skipped (over its share)"), h("dd", {}, fmt(st.skipped)),
      h("dt", {}, "Fuel p99"), h("dd", {}, r.limits ? `${fmt(st.fuelP99)} of ${fmt(r.limits.fuel)}` : fmt(st.fuelP99)),
      h("dt", {}, "Limits"), h("dd", {}, r.limits ? `fuel ${fmt(r.limits.fuel)}, memory ${fmt(r.limits.memoryPages)} pages (${fmt(r.limits.memoryPages * 64)} KiB)` + (r.limits.share ? `, share ${r.limits.share}` : "") : "–"),
      h("dt", {}, "Source"), h("dd", { id: "source" }, r.expression !== undefined ? h("pre", {}, r.expression) : `uploaded module, sha256 ${m.sha256}, ${fmt(m.sizeBytes)} bytes`),
      h("dt", {}, "Updated"), h("dd", {}, new Date(r.updatedAt).toLocaleString())),
    h("h2", {}, "Versions"),
    h("div", { class: "scroll" }, h("table", { id: "versions" }, h("thead", {}, h("tr", {}, h("th", { class: "num" }, "Version"), h("th", {}, "Source"), h("th", { class: "hide-narrow" }, "sha256"), h("th", { class: "num" }, "Bytes"), h("th", {}, "Created"), h("th", {}, ""))), h("tbody", {}, versions))));
}

// ---- new / edit ----

async function editPage(id) {
  const existing = id ? await api("GET", "/v1/rules/" + enc(id)) : null;
  const ruleId = h("input", { id: "rule-id", value: id || "", required: true, disabled: !!id, placeholder: "payment-fraud-check", "aria-label": "rule id" });
  const name = h("input", { id: "rule-name", value: existing ? existing.name : "" });
  const sevSel = h("select", { id: "rule-severity" }, SEVERITIES.map((s) => h("option", { value: s }, s)));
  sevSel.value = existing ? existing.severity : "MEDIUM";
  const desc = h("input", { id: "rule-description", value: existing ? existing.description : "" });
  const expr = h("textarea", { id: "expression", class: "code", spellcheck: "false", rows: 6, "aria-label": "DSL expression" });
  expr.value = existing ? existing.expression || "" : "";
  const gutter = h("div", { class: "gutter", "aria-hidden": "true" });
  const errors = h("ul", { class: "errors", id: "dsl-errors" });
  const status = h("p", { id: "dsl-status", class: "muted" }, "");
  const save = h("button", { id: "save", class: "primary", type: "submit" }, id ? "Save new version" : "Create rule");
  let seq = 0, timer = 0;
  const paintGutter = (bad) => {
    const lines = Math.max(1, expr.value.split("\n").length);
    gutter.replaceChildren(...Array.from({ length: lines }, (_, i) => h("div", { class: bad.has(i + 1) ? "err" : "", "data-line": i + 1 }, bad.has(i + 1) ? "▶" + (i + 1) : String(i + 1))));
  };
  const validate = async () => {
    const mine = ++seq;
    if (!expr.value.trim()) { errors.replaceChildren(); status.textContent = ""; paintGutter(new Set()); return; }
    try {
      const res = await api("POST", "/v1/rules/validate", { expression: expr.value });
      if (mine !== seq) return;
      const bad = new Set((res.errors || []).map((e) => e.line));
      errors.replaceChildren(...(res.errors || []).map((e) => h("li", { "data-line": e.line, "data-column": e.column }, `line ${e.line}, column ${e.column}: ${e.message}`)));
      status.textContent = res.valid ? "✓ valid" : "";
      status.className = res.valid ? "ok" : "muted";
      paintGutter(bad);
    } catch (e) { if (mine === seq) status.textContent = "could not validate: " + e.message; }
  };
  expr.addEventListener("input", () => { paintGutter(new Set()); clearTimeout(timer); timer = setTimeout(validate, 250); });
  const tpl = h("select", { id: "template", "aria-label": "template", onchange: () => {
    if (!tpl.value) return;
    expr.value = TEMPLATES[tpl.value];
    if (!ruleId.value && !id) ruleId.value = tpl.value;
    tpl.value = "";
    validate();
  } }, h("option", { value: "" }, "Start from a template…"), Object.keys(TEMPLATES).map((k) => h("option", { value: k }, k)));
  const form = h("form", { id: "rule-form", onsubmit: async (e) => {
    e.preventDefault();
    save.disabled = true;
    try {
      if (id) await api("PUT", "/v1/rules/" + enc(id), { expression: expr.value, name: name.value, severity: sevSel.value, description: desc.value });
      else await api("POST", "/v1/rules", { id: ruleId.value, name: name.value || ruleId.value, severity: sevSel.value, description: desc.value, expression: expr.value });
      toast((id ? "Saved " : "Created ") + (id || ruleId.value));
      location.hash = "#/rules/" + enc(id || ruleId.value);
    } catch (ex) {
      const details = ex.body && ex.body.errors;
      if (details) errors.replaceChildren(...details.map((d) => h("li", {}, `line ${d.line}, column ${d.column}: ${d.message}`)));
      toast("Not saved: " + ex.message, true);
    } finally { save.disabled = false; }
  } },
  h("div", { class: "filters" }, h("label", {}, "Rule id", ruleId), h("label", {}, "Name", name), h("label", {}, "Severity", sevSel), h("label", {}, "Description", desc)),
  h("div", { class: "filters" }, tpl),
  h("label", {}, "Expression (BeTrace DSL)"), h("div", { class: "editor" }, gutter, expr), status, errors,
  h("div", { class: "actions" }, save));
  paintGutter(new Set());
  const children = [form];
  if (!id) {
    const file = h("input", { type: "file", id: "wasm-file", accept: ".wasm,application/wasm" });
    const up = h("button", { id: "upload", type: "button", onclick: async () => {
      if (!ruleId.value || !file.files.length) { toast("Give the rule an id and choose a .wasm file", true); return; }
      const qs = new URLSearchParams({ id: ruleId.value, severity: sevSel.value });
      if (name.value) qs.set("name", name.value);
      if (desc.value) qs.set("description", desc.value);
      try {
        await api("POST", "/v1/rules?" + qs, file.files[0], "application/wasm");
        toast("Uploaded " + ruleId.value);
        location.hash = "#/rules/" + enc(ruleId.value);
      } catch (ex) { toast("Upload refused: " + ex.message, true); }
    } }, "Upload module");
    children.push(h("h2", {}, "Or upload a compiled module"), h("div", { class: "filters" }, h("label", {}, "WebAssembly module", file), up));
  }
  page(id ? "Edit " + id : "New rule", ...children);
  if (expr.value) validate();
}

// ---- violations ----

function traceLink(traceId, spanId) {
  if (!session.traceUrlTemplate) return h("code", {}, traceId);
  const href = session.traceUrlTemplate.replaceAll("{traceId}", enc(traceId)).replaceAll("{spanId}", enc(spanId || ""));
  return h("a", { href, target: "_blank", rel: "noopener noreferrer", class: "trace-link" }, traceId);
}

const RANGES = { "15m": 900, "1h": 3600, "24h": 86400, "7d": 604800, "": 0 };

async function violationsPage(params) {
  const range = params.get("range") ?? "24h";
  const qs = new URLSearchParams();
  if (RANGES[range]) qs.set("start_time", String(Math.floor(Date.now() / 1000) - RANGES[range]));
  for (const k of ["severity", "rule_id", "trace_id", "cursor"]) if (params.get(k)) qs.set(k, params.get(k));
  qs.set("limit", "50");
  const sumQs = new URLSearchParams(qs);
  sumQs.delete("cursor"); sumQs.delete("limit"); sumQs.delete("trace_id");
  sumQs.set("bucket", RANGES[range] && RANGES[range] <= 3600 ? "1m" : "1h");
  const [data, summary] = await Promise.all([api("GET", "/v1/violations?" + qs), api("GET", "/v1/violations/summary?" + sumQs)]);

  const f = (name, el) => { el.value = params.get(name) || (name === "range" ? range : ""); return el; };
  const rangeSel = f("range", h("select", { id: "v-range", "aria-label": "time range" }, Object.keys(RANGES).map((k) => h("option", { value: k }, k ? "last " + k : "all time"))));
  const sevSel = f("severity", h("select", { id: "v-severity" }, h("option", { value: "" }, "any"), SEVERITIES.map((s) => h("option", { value: s }, s))));
  const rule = f("rule_id", h("input", { id: "v-rule", placeholder: "rule id" }));
  const trace = f("trace_id", h("input", { id: "v-trace", placeholder: "32 hex digits" }));
  const apply = (extra) => {
    const p = new URLSearchParams();
    p.set("range", rangeSel.value);
    if (sevSel.value) p.set("severity", sevSel.value);
    if (rule.value.trim()) p.set("rule_id", rule.value.trim());
    if (trace.value.trim()) p.set("trace_id", trace.value.trim().toLowerCase());
    for (const [k, v] of Object.entries(extra || {})) p.set(k, v);
    location.hash = "#/violations?" + p;
  };
  const buckets = new Map();
  for (const row of summary.rows || []) {
    const b = buckets.get(row.start) || { t: row.start };
    b[row.severity] = (b[row.severity] || 0) + row.counted;
    buckets.set(row.start, b);
  }
  const rows = (data.violations || []).map((v) => h("tr", { "data-violation": v.id },
    h("td", {}, h("a", { href: `#/violations/${enc(v.id)}?trace_id=${enc(v.traceId)}` }, ago(v.timestamp))),
    h("td", {}, h("a", { href: "#/rules/" + enc(v.ruleId) }, v.ruleId)), h("td", {}, sev(v.severity)),
    h("td", {}, v.message), h("td", { class: "hide-narrow" }, h("code", {}, v.traceId.slice(0, 12) + "…"))));
  const cursors = (params.get("prev") || "").split(",").filter(Boolean);
  page("Violations",
    h("form", { class: "filters", onsubmit: (e) => { e.preventDefault(); apply(); } }, h("label", {}, "Time", rangeSel), h("label", {}, "Severity", sevSel),
      h("label", {}, "Rule", rule), h("label", {}, "Trace ID", trace), h("button", { type: "submit", id: "v-apply" }, "Apply")),
    h("p", { class: "muted", id: "v-count" }, `${fmt(data.totalCount)} violations match; ${fmt(summary.kept)} kept as records of ${fmt(summary.counted)} counted`),
    buckets.size ? barChart([...buckets.values()].sort((a, b) => a.t < b.t ? -1 : 1), SEVERITIES, SEV_COLOR, "violations per " + summary.bucket + " (counted)") : null,
    h("div", { class: "scroll" }, h("table", { id: "violations" }, h("thead", {}, h("tr", {}, h("th", {}, "When"), h("th", {}, "Rule"), h("th", {}, "Severity"), h("th", {}, "Message"), h("th", { class: "hide-narrow" }, "Trace"))), h("tbody", {}, rows))),
    h("div", { class: "actions" },
      cursors.length ? h("button", { id: "v-prev", onclick: () => { const c = cursors.slice(0, -1); apply({ cursor: cursors[cursors.length - 1] === "-" ? "" : cursors[cursors.length - 1], prev: c.join(",") }); } }, "← Newer") : null,
      data.nextCursor ? h("button", { id: "v-next", onclick: () => apply({ cursor: data.nextCursor, prev: [...cursors, params.get("cursor") || "-"].join(",") }) }, "Older →") : null));
  paintSwatches($main());
}

async function violationPage(id, params) {
  const traceId = params.get("trace_id") || "";
  const data = await api("GET", "/v1/violations?limit=1000&evidence=true&trace_id=" + enc(traceId));
  const v = (data.violations || []).find((x) => x.id === id);
  if (!v) { page("Violation not found", h("p", {}, "No violation " + id + " on trace " + traceId + ": it may have been trimmed by retention.")); return; }
  const kv = (o) => Object.entries(o || {}).flatMap(([k, val]) => [h("dt", {}, k), h("dd", {}, val)]);
  const others = (data.violations || []).filter((x) => x.id !== id);
  const children = [
    h("dl", { id: "violation" },
      h("dt", {}, "Rule"), h("dd", {}, h("a", { href: "#/rules/" + enc(v.ruleId) }, v.ruleName || v.ruleId), ` (version ${v.ruleVersion})`),
      h("dt", {}, "Severity"), h("dd", {}, sev(v.severity)),
      h("dt", {}, "Message"), h("dd", { id: "message" }, v.message),
      h("dt", {}, "When"), h("dd", {}, new Date(v.timestamp).toLocaleString() + " (" + ago(v.timestamp) + ")"),
      h("dt", {}, "Trace"), h("dd", {}, traceLink(v.traceId, v.spanId)),
      h("dt", {}, "Offending span"), h("dd", {}, h("code", {}, v.spanId), " ", (v.metadata && v.metadata.span_name) || "", (v.metadata && v.metadata.service_name) ? " · " + v.metadata.service_name : ""),
      h("dt", {}, "Completed by"), h("dd", {}, v.trigger),
      ...kv(v.attributes)),
  ];
  const ev = v.evidence || ((data.violations || []).find((x) => x.evidence) || {}).evidence;
  if (ev) children.push(h("h2", {}, "The trace when it was evaluated"), h("p", { class: "muted" }, "The offending span is highlighted; the message above says which clause failed."), evidenceTree(ev, v.spanId));
  else children.push(h("p", { class: "muted" }, "No snapshot of this trace was stored (a violation recorded before evidence was kept)."));
  if (others.length) children.push(h("h2", {}, "Other violations of this trace"), h("ul", {}, others.map((o) => h("li", {}, h("a", { href: `#/violations/${enc(o.id)}?trace_id=${enc(o.traceId)}` }, o.ruleId), ": " + o.message))));
  page("Violation of " + v.ruleId, ...children);
}

// evidenceTree draws the stored snapshot of the trace as a span tree with
// the offending span highlighted.
function evidenceTree(ev, offending) {
  const spans = ev.spans || [];
  const byParent = new Map();
  const ids = new Set(spans.map((s) => s.spanId));
  for (const s of spans) {
    const p = s.parentSpanId && ids.has(s.parentSpanId) ? s.parentSpanId : "";
    if (!byParent.has(p)) byParent.set(p, []);
    byParent.get(p).push(s);
  }
  const seen = new Set();
  const render = (parent) => h("ul", { class: "tree" }, (byParent.get(parent) || []).filter((s) => !seen.has(s.spanId) && seen.add(s.spanId)).map((s) => h("li", {},
    h("span", { class: "span" + (s.spanId === offending ? " offending" : ""), "data-span": s.spanId },
      h("b", {}, s.name), h("span", { class: "muted" }, s.service || ""), h("span", {}, ((s.durationNanos || 0) / 1e6).toFixed(2) + " ms"),
      s.status && s.status !== "unset" ? h("span", { class: s.status === "error" ? "sev-HIGH" : "" }, s.status) : null,
      Object.entries(s.attributes || {}).map(([k, val]) => h("code", { class: "muted" }, k + "=" + val))),
    render(s.spanId))));
  return h("div", { id: "evidence" }, render(""), ev.truncated ? h("p", { class: "muted" }, `truncated: ${ev.spanCount} spans in the trace, ${spans.length} kept`) : null);
}

// ---- routing ----

async function route() {
  const [path, query] = (location.hash.slice(1) || "/").split("?");
  const params = new URLSearchParams(query || "");
  const parts = path.split("/").filter(Boolean).map(decodeURIComponent);
  const section = parts[0] === "rules" || parts[0] === "violations" || parts[0] === "new" ? parts[0] : "overview";
  for (const a of document.querySelectorAll("#nav a")) a.classList.toggle("active", a.dataset.page === section);
  try {
    if (parts[0] === "rules" && parts.length === 3 && parts[2] === "edit") await editPage(parts[1]);
    else if (parts[0] === "rules" && parts.length === 2) await rulePage(parts[1]);
    else if (parts[0] === "rules") await rulesPage(params);
    else if (parts[0] === "new") await editPage("");
    else if (parts[0] === "violations" && parts.length === 2) await violationPage(parts[1], params);
    else if (parts[0] === "violations") await violationsPage(params);
    else await overview();
  } catch (e) {
    if (e.status !== 401) page("Something went wrong", h("p", { class: "errors", id: "page-error" }, e.message));
  }
}

async function start() {
  document.getElementById("logout").addEventListener("click", async () => {
    await api("POST", "/ui/logout");
    session.csrf = "";
    showLogin("Logged out.");
  });
  const s = await api("GET", "/ui/session");
  Object.assign(session, { authRequired: s.authRequired, traceUrlTemplate: s.traceUrlTemplate || "", csrf: s.csrf || "" });
  window.addEventListener("hashchange", route);
  if (s.authRequired && !s.authenticated) { showLogin(); return; }
  document.getElementById("logout").hidden = !s.authRequired;
  route();
}

start();
