// Portway dashboard: a small single-page view over the admin API. No framework, no build
// step; every value from the server is inserted as text (never as HTML).
"use strict";

const TOKEN_KEY = "portway.admin.token";
const POLL_MS = 2000;
let timer = null;
let current = null;

// --- helpers ---------------------------------------------------------------------------------
function h(tag, attrs, ...kids) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === null || v === undefined || v === false) continue;
    if (k.startsWith("on")) el.addEventListener(k.slice(2), v);
    else if (k === "class") el.className = v;
    else el.setAttribute(k, v === true ? "" : String(v));
  }
  for (const kid of kids.flat()) {
    if (kid === null || kid === undefined || kid === false) continue;
    el.append(kid instanceof Node ? kid : document.createTextNode(String(kid)));
  }
  return el;
}
const $ = (sel) => document.querySelector(sel);
const fmt = (v, unit) => (v === null || v === undefined ? "–" : `${v}${unit || ""}`);
const pct = (v) => (v === null || v === undefined ? "–" : `${(v * 100).toFixed(2)} %`);
const when = (t) => (t ? new Date(t * 1000).toLocaleTimeString() : "–");
function dur(s) {
  s = Math.floor(s || 0);
  const d = Math.floor(s / 86400), hh = Math.floor((s % 86400) / 3600), m = Math.floor((s % 3600) / 60);
  return d ? `${d}d ${hh}h` : hh ? `${hh}h ${m}m` : `${m}m ${s % 60}s`;
}
function pill(text, kind) { return h("span", { class: `pill ${kind}` }, text); }
function stat(k, v, id) { return h("div", { class: "stat", "data-stat": id || k }, h("div", { class: "k" }, k), h("div", { class: "v" }, v)); }
function table(headers, rows, attrs) {
  return h("table", attrs || {},
    h("thead", {}, h("tr", {}, headers.map((c) => h("th", { class: /^(req|rps|p\d|err|in-flight|ewma|weight|hit|[245]xx|rank)/i.test(c) ? "num" : null, scope: "col" }, c)))),
    h("tbody", {}, rows));
}

class ApiError extends Error {
  constructor(status, body) { super((body && body.error) || `HTTP ${status}`); this.status = status; this.body = body; }
}

async function api(path, opts = {}) {
  const headers = Object.assign({}, opts.headers || {});
  const token = sessionStorage.getItem(TOKEN_KEY);
  if (token) headers.authorization = `Bearer ${token}`;
  const resp = await fetch(path, Object.assign({}, opts, { headers, cache: "no-store" }));
  const text = await resp.text();
  let body = null;
  try { body = text ? JSON.parse(text) : null; } catch (_) { body = { error: text }; }
  if (resp.status === 401) { signOut("The token was refused; sign in again."); throw new ApiError(401, body); }
  if (!resp.ok) throw new ApiError(resp.status, body);
  return body;
}

// --- sign in ---------------------------------------------------------------------------------
function signOut(message) {
  sessionStorage.removeItem(TOKEN_KEY);
  stopPolling();
  $("#nav").hidden = true;
  $("#logout").hidden = true;
  $("#page").replaceChildren();
  $("#login").hidden = false;
  $("#login-error").textContent = message || "";
  $("#token").focus();
}

async function signIn(token) {
  sessionStorage.setItem(TOKEN_KEY, token);
  try {
    await api("/status");
  } catch (e) {
    if (e.status !== 401) signOut(`Cannot reach the admin API: ${e.message}`);
    return;
  }
  $("#login").hidden = true;
  $("#nav").hidden = false;
  $("#logout").hidden = false;
  if (!location.hash) location.hash = "#/overview";
  route();
}

// --- pages -----------------------------------------------------------------------------------
const pages = {};

function spark(series, key, cls) {
  const vals = series.map((p) => p[key]);
  if (vals.length < 2) return h("p", { class: "muted" }, "Collecting samples…");
  const max = Math.max(1, ...vals);
  const w = 600, ht = 60;
  const pts = vals.map((v, i) => `${(i * w) / (vals.length - 1)},${ht - (v / max) * (ht - 4) - 2}`).join(" ");
  const svg = document.createElementNS("http://www.w3.org/2000/svg", "svg");
  svg.setAttribute("class", "spark");
  svg.setAttribute("viewBox", `0 0 ${w} ${ht}`);
  svg.setAttribute("preserveAspectRatio", "none");
  svg.setAttribute("role", "img");
  svg.setAttribute("aria-label", `${key} over time, max ${max}`);
  const line = document.createElementNS("http://www.w3.org/2000/svg", "polyline");
  line.setAttribute("points", pts);
  if (cls) line.setAttribute("class", cls);
  svg.append(line);
  return svg;
}

const rate = (v) => (v === null || v === undefined ? "–" : Number(v).toFixed(1));

function routeRows(list) {
  return list.map((r) => h("tr", {},
    h("td", {}, r.route), h("td", { class: "num" }, fmt(r.requests)), h("td", { class: "num" }, rate(r.rps)),
    h("td", { class: "num" }, fmt(r.status["4xx"])), h("td", { class: "num" }, fmt(r.status["5xx"])),
    h("td", { class: "num" }, fmt(r.p95_ms, " ms"))));
}

pages.overview = {
  title: "Overview",
  async render(root) {
    const d = await api("/dashboard/api/overview?window=300");
    const s = d.status, t = d.total, lr = s.last_reload || {};
    root.replaceChildren(
      h("h1", {}, "Overview"),
      h("div", { class: "grid" },
        stat("Workers", s.workers), stat("Uptime", dur(s.uptime)),
        stat("Config version", `v${s.config_version}`, "config"),
        stat("Config hash", (s.config_hash || "").slice(0, 12)),
        stat("Last reload", lr.result === "none" ? "none" : `${lr.result} ${when(lr.at)}`, "reload"),
        stat(`Requests (${Math.round(d.window_s)} s)`, t.requests, "requests"), stat("Requests/s", rate(t.rps), "rps"), stat("Error rate (5xx)", pct(t.error_rate), "errors"),
        stat("p50", fmt(t.p50_ms, " ms")), stat("p95", fmt(t.p95_ms, " ms")), stat("p99", fmt(t.p99_ms, " ms")),
        stat("In flight", s.in_flight), stat("Recent errors", d.recent_errors)),
      h("div", { class: "card" }, h("h2", {}, `Requests/s, last ${Math.round(d.window_s)} s`), spark(d.series, "rps"),
        h("h2", {}, "5xx/s"), spark(d.series, "errors_ps", "err")),
      h("div", { class: "split" },
        h("div", {}, h("h2", {}, "Top routes by traffic"),
          table(["Route", "Requests", "Req/s", "4xx", "5xx", "p95"], routeRows(d.top_routes))),
        h("div", {}, h("h2", {}, "Top routes by errors"),
          table(["Route", "Requests", "Req/s", "4xx", "5xx", "p95"], routeRows(d.top_error_routes)))),
    );
  },
};

function explainBox() {
  const out = h("div", { id: "explain-result", "aria-live": "polite" });
  const form = h("form", { id: "explain-form", class: "card" },
    h("h2", {}, "Test a request (nothing is sent)"),
    h("div", { class: "row" },
      h("div", {}, h("label", { for: "x-method" }, "Method"),
        h("select", { id: "x-method" }, ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"].map((m) => h("option", {}, m)))),
      h("div", {}, h("label", { for: "x-host" }, "Host"), h("input", { id: "x-host", placeholder: "api.example.com" })),
      h("div", { class: "wide" }, h("label", { for: "x-path" }, "Path"), h("input", { id: "x-path", value: "/", required: true })),
      h("button", { type: "submit" }, "Explain")),
    h("label", { for: "x-headers" }, "Headers (one name: value per line)"),
    h("textarea", { id: "x-headers", rows: 2 }),
    out);
  form.addEventListener("submit", async (ev) => {
    ev.preventDefault();
    const headers = {};
    for (const line of $("#x-headers").value.split("\n")) {
      const i = line.indexOf(":");
      if (i > 0) headers[line.slice(0, i).trim()] = line.slice(i + 1).trim();
    }
    try {
      const r = await api("/dashboard/api/explain", {
        method: "POST", headers: { "content-type": "application/json" },
        body: JSON.stringify({ method: $("#x-method").value, host: $("#x-host").value, path: $("#x-path").value, headers }),
      });
      const head = r.matched
        ? h("p", {}, "Route ", h("strong", { "data-explain-route": r.route }, r.route), ` (pattern ${r.pattern}) → upstream `,
          h("strong", {}, r.upstream || "(none)"), ". Plugins: ", r.plugins.map((p) => `${p.name} (${p.from})`).join(", ") || "none",
          Object.keys(r.params || {}).length ? `. Params: ${JSON.stringify(r.params)}` : "")
        : h("p", { class: "error" }, r.error || `No route matches: the gateway answers ${r.status}` +
          (r.allowed_methods && r.allowed_methods.length ? ` (allowed: ${r.allowed_methods.join(", ")})` : ""));
      out.replaceChildren(head, table(["Rank", "Route", "Matches", "Why not"], r.routes.map((x) =>
        h("tr", {}, h("td", { class: "num" }, x.rank), h("td", {}, x.route),
          h("td", {}, x.chosen ? pill("chosen", "ok") : x.matches ? pill("matches", "muted") : pill("no", "bad")),
          h("td", {}, x.why_not.join("; "))))));
    } catch (e) { out.replaceChildren(h("p", { class: "error" }, e.message)); }
  });
  return form;
}

pages.routes = {
  title: "Routes",
  keep: true,
  async render(root, first) {
    if (first) root.replaceChildren(h("h1", {}, "Routes"), explainBox(), h("div", { id: "route-table" }));
    const d = await api("/dashboard/api/routes");
    $("#route-table").replaceChildren(table(
      ["Rank", "Name", "Match", "Plugins", "Upstream", "Req/s", "p95", "2xx", "4xx", "5xx"],
      d.data.map((r) => {
        const l = r.live || { rps: 0, p95_ms: null, status: {} };
        const match = [r.hosts.length ? `hosts ${r.hosts.join(", ")}` : null, `paths ${r.paths.join(", ")}`,
          r.methods.length ? `methods ${r.methods.join(", ")}` : null,
          Object.keys(r.headers).length ? `headers ${JSON.stringify(r.headers)}` : null].filter(Boolean).join(" · ");
        return h("tr", { "data-route": r.name }, h("td", { class: "num" }, r.rank), h("td", {}, h("strong", {}, r.name)),
          h("td", { class: "mono" }, match), h("td", {}, r.plugins.map((p) => p.name).join(", ") || "–"),
          h("td", {}, r.upstream || "–"), h("td", { class: "num" }, rate(l.rps)), h("td", { class: "num" }, fmt(l.p95_ms, " ms")),
          h("td", { class: "num" }, fmt(l.status["2xx"] || 0)), h("td", { class: "num" }, fmt(l.status["4xx"] || 0)),
          h("td", { class: "num" }, fmt(l.status["5xx"] || 0)));
      }), { "aria-label": "Routes in priority order" }));
  },
};

function health(t) {
  if (t.draining) return pill("draining", "warn");
  if (t.healthy === false) return pill("unhealthy", "bad");
  return pill("healthy", "ok");
}

pages.upstreams = {
  title: "Upstreams",
  async render(root) {
    const d = await api("/upstreams");
    root.replaceChildren(h("h1", {}, "Upstreams"), ...d.data.map((u) => h("div", { class: "card", "data-upstream": u.name },
      h("h2", {}, `${u.name} `, h("span", { class: "muted" }, `(${u.balancing})`)),
      table(["Target", "URL", "Health", "Breaker", "In-flight", "EWMA", "Weight", ""], u.targets.map((t) =>
        h("tr", { "data-target": t.id }, h("td", { class: "mono" }, t.id), h("td", { class: "mono" }, t.url || ""),
          h("td", { "data-health": "" }, health(t)),
          h("td", {}, t.breaker ? pill(t.breaker, t.breaker === "closed" ? "ok" : t.breaker === "open" ? "bad" : "warn") : "–"),
          h("td", { class: "num" }, fmt(t.in_flight)), h("td", { class: "num" }, fmt(t.ewma_ms, " ms")),
          h("td", { class: "num" }, fmt(t.weight)),
          h("td", {}, h("button", {
            class: "secondary", type: "button",
            onclick: async () => {
              const path = `/upstreams/${encodeURIComponent(u.name)}/targets/${encodeURIComponent(t.id)}/drain`;
              await api(path, { method: t.draining ? "DELETE" : "POST" });
              refresh();
            },
          }, t.draining ? "Undrain" : "Drain"))))))));
  },
};

pages.consumers = {
  title: "Consumers",
  keep: true,
  async render(root, first) {
    if (!first) return; // a limits panel stays open until asked again
    const d = await api("/consumers");
    const detail = h("div", { id: "consumer-limits", "aria-live": "polite" });
    const showLimits = async (username) => {
      const r = await api(`/dashboard/api/consumers/${encodeURIComponent(username)}/limits`);
      detail.replaceChildren(h("h2", {}, `Rate limits of ${username}`), r.data.length
        ? table(["Route", "Scope", "Key", "Policy", "Remaining", "Reset (s)"], r.data.flatMap((row) =>
          (row.policies || [null]).map((p) => h("tr", {}, h("td", {}, row.route || "(every route)"), h("td", {}, row.scope),
            h("td", { class: "mono" }, row.key.join(", ")),
            h("td", {}, p ? `${p.name}: ${p.rate} per ${p.per} s` : row.note),
            h("td", { class: "num", "data-remaining": p ? p.name : null }, p ? fmt(p.remaining) : "–"),
            h("td", { class: "num" }, p ? fmt(p.reset) : "–")))))
        : h("p", {}, "No rate limit applies to this consumer."));
    };
    root.replaceChildren(h("h1", {}, "Consumers"), table(["Username", "Groups", "Credentials", ""],
      d.data.map((c) => {
        const kinds = {};
        for (const cr of c.credentials || []) kinds[cr.kind] = (kinds[cr.kind] || 0) + 1;
        return h("tr", { "data-consumer": c.username }, h("td", {}, c.username), h("td", {}, (c.groups || []).join(", ") || "–"),
          h("td", {}, Object.entries(kinds).map(([k, n]) => `${k} × ${n}`).join(", ") || "none"),
          h("td", {}, h("button", { type: "button", class: "secondary", onclick: () => showLimits(c.username) }, "Rate limits")));
      })), detail);
  },
};

function lineCount(text) { return text.split("\n").length; }

function renderGutter(gutter, text, badLines) {
  const n = lineCount(text);
  const parts = [];
  for (let i = 1; i <= n; i++) parts.push(badLines.has(i) ? h("span", { class: "bad", title: `error on line ${i}` }, `${i}\n`) : `${i}\n`);
  gutter.replaceChildren(...parts);
}

function gotoLine(area, line) {
  const lines = area.value.split("\n");
  let pos = 0;
  for (let i = 0; i < line - 1 && i < lines.length; i++) pos += lines[i].length + 1;
  area.focus();
  area.setSelectionRange(pos, pos + (lines[line - 1] || "").length);
  area.scrollTop = Math.max(0, (line - 5) * 19);
}

pages.config = {
  title: "Config",
  keep: true,
  async render(root, first) {
    if (!first) return; // never overwrite an edit in progress
    const d = await api("/dashboard/api/config");
    const area = h("textarea", { id: "config-text", spellcheck: "false", "aria-label": "Configuration YAML" });
    area.value = d.yaml;
    const gutter = h("div", { class: "gutter", "aria-hidden": "true" });
    let bad = new Set();
    const sync = () => { renderGutter(gutter, area.value, bad); gutter.scrollTop = area.scrollTop; };
    area.addEventListener("input", sync);
    area.addEventListener("scroll", () => { gutter.scrollTop = area.scrollTop; });
    const result = h("div", { id: "config-result", "aria-live": "polite" });
    const showIssues = (title, errs) => {
      bad = new Set(errs.map((e) => e.line).filter(Boolean));
      sync();
      result.replaceChildren(h("p", { class: "error" }, title), h("ul", { class: "issues" }, errs.map((e) =>
        h("li", { "data-line": e.line || "" }, e.line
          ? h("button", { type: "button", onclick: () => gotoLine(area, e.line) }, `line ${e.line}`)
          : "", e.line ? " — " : "", e.path ? `${e.path}: ` : "", e.message))));
    };
    const send = async (method, path) => api(path, { method, headers: { "content-type": "application/yaml" }, body: area.value });
    const handle = async (fn) => {
      try { await fn(); } catch (e) {
        if (e.body && e.body.errors) showIssues(e.body.error || "Rejected", e.body.errors);
        else result.replaceChildren(h("p", { class: "error" }, e.message));
      }
    };
    const validate = () => handle(async () => {
      const r = await send("POST", "/config/validate");
      if (r && r.errors && r.errors.length) showIssues("The configuration is invalid", r.errors);
      else if (r && r.valid === false) showIssues("The configuration is invalid", r.errors || []);
      else { bad = new Set(); sync(); result.replaceChildren(h("p", {}, pill("valid", "ok"), " The configuration is valid.")); }
    });
    const diff = () => handle(async () => {
      const r = await send("POST", "/dashboard/api/config/diff");
      if (!r.changed) { result.replaceChildren(h("p", { class: "muted" }, "No changes against the running configuration.")); return; }
      result.replaceChildren(h("pre", { class: "diff", id: "config-diff" }, r.diff.split("\n").map((l) =>
        h("span", { class: l.startsWith("@@") ? "hunk" : l.startsWith("+") ? "add" : l.startsWith("-") ? "del" : null }, `${l}\n`))));
    });
    const apply = () => handle(async () => {
      await send("PUT", "/config");
      bad = new Set(); sync();
      result.replaceChildren(h("p", {}, pill("applied", "ok"), " The configuration is live."));
      loadHistory();
    });
    const history = h("div", { id: "config-history" });
    const loadHistory = async () => {
      const hst = await api("/dashboard/api/config/history");
      history.replaceChildren(table(["When", "Result", "Version", "Hash", "Errors"], hst.data.map((e) =>
        h("tr", {}, h("td", {}, when(e.at)), h("td", {}, pill(e.result, e.result === "error" ? "bad" : "ok")),
          h("td", { class: "num" }, fmt(e.version)), h("td", { class: "mono" }, (e.config_hash || "").slice(0, 12)),
          h("td", {}, (e.errors || []).join("; "))))));
    };
    root.replaceChildren(
      h("h1", {}, "Configuration"),
      h("p", { class: "muted" }, `Running version v${d.config_version}, hash ${(d.config_hash || "").slice(0, 12)}`,
        d.config_path ? `, file ${d.config_path}` : "",
        d.redacted ? ". Secrets are shown as <redacted>: leave them so and the running values are kept on apply." : "."),
      h("div", { class: "editor" }, gutter, area),
      h("div", { class: "row actions" },
        h("button", { type: "button", id: "btn-validate", onclick: validate }, "Validate"),
        h("button", { type: "button", id: "btn-diff", class: "secondary", onclick: diff }, "Diff against running"),
        h("button", { type: "button", id: "btn-apply", class: "danger", onclick: apply }, "Apply")),
      result, h("h2", {}, "History"), history);
    sync();
    await loadHistory();
  },
};

pages.errors = {
  title: "Recent errors",
  keep: true,
  async render(root, first) {
    if (first) root.replaceChildren(h("h1", {}, "Recent errors"), h("p", { class: "muted" },
      "Errors the gateway itself answered (rejections, no route, upstream failures), newest first."),
    h("div", { id: "error-table" }), h("div", { id: "error-detail", "aria-live": "polite" }));
    const d = await api("/dashboard/api/errors?limit=100");
    $("#error-table").replaceChildren(d.data.length ? table(["When", "Status", "Code", "Route", "Request", "Request id"],
      d.data.map((e) => h("tr", { "data-error": e.id }, h("td", {}, when(e.at)),
        h("td", {}, pill(e.status === null ? "none" : e.status, e.status >= 500 || e.status === null ? "bad" : "warn")),
        h("td", { class: "mono" }, e.code || "–"), h("td", {}, e.route || "(no route)"),
        h("td", { class: "mono" }, `${e.method} ${e.path}`),
        h("td", {}, h("a", { href: `#/errors/${encodeURIComponent(e.id)}` }, e.request_id || e.id)))))
      : h("p", {}, "No errors recorded."));
    const sel = (location.hash.split("/")[2] || "");
    if (sel) {
      const rec = await api(`/dashboard/api/errors/${sel}`);
      $("#error-detail").replaceChildren(h("h2", {}, `Explain record ${rec.request_id || rec.id}`),
        h("pre", { id: "explain-record" }, JSON.stringify(rec.explain, null, 2)));
    }
  },
};

pages.cache = {
  title: "Cache",
  async render(root) {
    const d = await api("/dashboard/api/cache");
    const status = h("p", { "aria-live": "polite" });
    root.replaceChildren(h("h1", {}, "Cache"),
      table(["Route", "Hit ratio", "Counters", ""], Object.entries(d.routes).map(([name, r]) =>
        h("tr", {}, h("td", {}, name), h("td", { class: "num" }, pct(r.hit_ratio)),
          h("td", { class: "mono" }, Object.entries(r.counters).map(([k, v]) => `${k}=${v}`).join(" ")),
          h("td", {}, h("button", { type: "button", class: "secondary", onclick: async () => {
            const x = await api(`/cache?route=${encodeURIComponent(name)}`, { method: "DELETE" });
            status.textContent = `Purged ${x.purged} objects of ${name}.`;
          } }, "Purge route"))))),
      h("h2", {}, "Stores"), h("pre", {}, JSON.stringify(d.stores, null, 2)),
      h("button", { type: "button", class: "danger", onclick: async () => {
        const x = await api("/cache", { method: "DELETE" });
        status.textContent = `Purged ${x.purged} objects.`;
      } }, "Purge everything"), status);
  },
};

// --- navigation ------------------------------------------------------------------------------
function stopPolling() { if (timer) { clearTimeout(timer); timer = null; } }

async function refresh(first) {
  stopPolling();
  const name = current;
  const page = pages[name];
  if (!page) return;
  try {
    await page.render($("#page"), !!first);
    $("#live").textContent = `updated ${new Date().toLocaleTimeString()}`;
  } catch (e) {
    if (e.status === 401) return;
    $("#live").textContent = `update failed: ${e.message}`;
  }
  if (name === current && name !== "config") timer = setTimeout(() => refresh(false), POLL_MS);
}

function route() {
  if (!sessionStorage.getItem(TOKEN_KEY)) { signOut(); return; }
  const name = (location.hash.replace(/^#\//, "").split("/")[0]) || "overview";
  current = pages[name] ? name : "overview";
  for (const a of document.querySelectorAll("#nav a")) {
    if (a.dataset.page === current) a.setAttribute("aria-current", "page"); else a.removeAttribute("aria-current");
  }
  document.title = `${pages[current].title} · Portway`;
  refresh(true);
}

document.addEventListener("DOMContentLoaded", () => {
  $("#login-form").addEventListener("submit", (ev) => { ev.preventDefault(); signIn($("#token").value.trim()); });
  $("#logout").addEventListener("click", () => signOut("Signed out."));
  window.addEventListener("hashchange", route);
  if (sessionStorage.getItem(TOKEN_KEY)) signIn(sessionStorage.getItem(TOKEN_KEY)); else signOut();
});
