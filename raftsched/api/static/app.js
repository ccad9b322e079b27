// raftsched dashboard: plain JavaScript, no build step, no dependencies, nothing fetched from
// elsewhere. It reads and writes only through the admin API of the node that served it (API.md).
// The API token, when the cluster has one, is asked for on the first 401, kept in this tab's
// sessionStorage and sent as `Authorization: Bearer`; never in a cookie. The launcher's link may
// carry it in the fragment (`#token=...`, which browsers never send to a server): it is taken into
// sessionStorage and wiped from the address bar and history at once.

const POLL_MS = 2000;
const TOKEN_KEY = "raftsched.api_token";
const FINISHED = new Set(["succeeded", "failed", "timed_out", "cancelled", "lost"]);
const ACTIVE = new Set(["pending", "running"]);
// Fields the API adds to a job; a PUT does not need them back.
const READ_ONLY = ["version", "incarnation", "next_fire_at", "last_fire_at", "next_slot_at", "last_slot_at", "created_at", "updated_at", "updated_by", "stats"];
const CHART_RUNS = 60;
const FORM_TASKS = ["shell", "http", "python", "message"]; // task types the form edits; others go to the JSON tab
const NOT_RUN = new Set(["skipped", "missed"]); // slot records, not runs: no result of their own
const RUNS_PAGE = 20; // rows of the runs table shown at first, and added by "Show more"

const $ = (sel, root = document) => root.querySelector(sel);
const $$ = (sel, root = document) => Array.from(root.querySelectorAll(sel));
const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

function esc(value) {
  return String(value ?? "").replace(/[&<>"']/g, (c) => ({ "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" })[c]);
}

function bind(root, name) {
  return root.querySelector(`[data-bind="${name}"]`);
}

function setText(el, text) {
  if (el && el.textContent !== text) el.textContent = text;
}

function setHtml(el, html) {
  if (el && el._html !== html) {
    el.innerHTML = html;
    el._html = html;
  }
}

function cloneTemplate(id) {
  return document.getElementById(id).content.cloneNode(true);
}

function jobHref(id) {
  return `#/jobs/${encodeURIComponent(id)}`;
}

// ------------------------------------------------------------------ API client

class ApiError extends Error {
  constructor(status, body, fallback) {
    const err = (body && body.error) || {};
    super(err.message || fallback || `HTTP ${status}`);
    this.status = status;
    this.code = err.code || (status ? `http_${status}` : "network");
    this.field = err.field ?? null;
  }
}

const auth = {
  prompt: null, // the pending Promise while the token dialog is open
  declined: false, // the operator closed the dialog: do not reopen it on every poll
  get token() {
    try {
      return sessionStorage.getItem(TOKEN_KEY) || "";
    } catch {
      return "";
    }
  },
  set token(value) {
    try {
      if (value) sessionStorage.setItem(TOKEN_KEY, value);
      else sessionStorage.removeItem(TOKEN_KEY);
    } catch {
      /* storage disabled: the token lives as long as the page */
    }
    $("#token-button").hidden = !value;
  },
};

function takeTokenFromFragment() {
  const match = /^#token=([^&]+)$/.exec(location.hash);
  if (!match) return;
  auth.token = decodeURIComponent(match[1]);
  history.replaceState(null, "", location.pathname + location.search);
}

function newIdempotencyKey() {
  const bytes = new Uint8Array(16);
  crypto.getRandomValues(bytes); // unlike randomUUID, also there outside secure contexts
  return "dash-" + Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("");
}

async function api(method, path, { body, headers = {} } = {}) {
  const write = method !== "GET";
  const h = { Accept: "application/json", ...headers };
  if (body !== undefined) h["Content-Type"] = "application/json";
  if (write) h["Idempotency-Key"] = newIdempotencyKey(); // so a retry below applies once
  let refused = false;
  for (let attempt = 0; ; attempt++) {
    const token = auth.token;
    if (token) h.Authorization = `Bearer ${token}`;
    else delete h.Authorization;
    let resp;
    try {
      resp = await fetch(path, {
        method,
        headers: h,
        body: body === undefined ? undefined : JSON.stringify(body),
        cache: "no-store",
        credentials: "omit",
        redirect: "error",
      });
    } catch {
      throw new ApiError(0, null, "The node did not answer");
    }
    if (resp.status === 401) {
      if (auth.declined) throw new ApiError(401, null, "An API token is required");
      await askToken(refused || token ? "That token was refused. Check it and try again." : "");
      refused = true;
      continue;
    }
    // 503 is "not applied, safe to retry"; 504 "may have applied": the same Idempotency-Key tells.
    if (write && (resp.status === 503 || resp.status === 504) && attempt < 3) {
      await sleep(1000 * Math.min(5, Number(resp.headers.get("Retry-After")) || 1));
      continue;
    }
    const text = await resp.text();
    let data = null;
    if (text) {
      try {
        data = JSON.parse(text);
      } catch {
        data = null;
      }
    }
    if (!resp.ok) throw new ApiError(resp.status, data, resp.statusText);
    return { data, status: resp.status, headers: resp.headers };
  }
}

const get = async (path) => (await api("GET", path)).data;

function askToken(message) {
  if (!auth.prompt) {
    auth.prompt = new Promise((resolve, reject) => {
      const dialog = $("#token-dialog");
      const input = $("#token-input");
      const error = $("#token-error");
      const field = input.closest(".field");
      error.textContent = message;
      field.classList.toggle("invalid", Boolean(message));
      input.setAttribute("aria-invalid", message ? "true" : "false");
      input.value = "";
      let settled = false;
      const finish = (ok) => {
        if (settled) return;
        settled = true;
        if (dialog.open) dialog.close();
        if (ok) {
          auth.declined = false;
          hideBanner();
          resolve();
        } else {
          auth.declined = true;
          showBanner("This cluster needs an API token to show its data.", { tokenButton: true });
          reject(new ApiError(401, null, "An API token is required"));
        }
      };
      $("#token-form").onsubmit = (event) => {
        event.preventDefault();
        const value = input.value.trim();
        if (!value) {
          error.textContent = "Enter the token.";
          field.classList.add("invalid");
          input.focus();
          return;
        }
        auth.token = value;
        finish(true);
      };
      dialog.oncancel = (event) => {
        event.preventDefault();
        finish(false);
      };
      dialog.onclose = () => finish(false);
      $("[data-action=token-cancel]", dialog).onclick = () => finish(false);
      dialog.showModal();
      input.focus();
    }).finally(() => {
      auth.prompt = null;
    });
  }
  return auth.prompt;
}

function confirmDialog({ title, text, confirm = "Confirm" }) {
  return new Promise((resolve) => {
    const dialog = $("#confirm-dialog");
    setText($("#confirm-title"), title);
    setText($("#confirm-text"), text);
    setText($("#confirm-ok"), confirm);
    let settled = false;
    const finish = (ok) => {
      if (settled) return;
      settled = true;
      if (dialog.open) dialog.close();
      resolve(ok);
    };
    $("#confirm-form").onsubmit = (event) => {
      event.preventDefault();
      finish(true);
    };
    $("[data-action=confirm-cancel]", dialog).onclick = () => finish(false);
    dialog.onclose = () => finish(false);
    dialog.showModal();
    $("[data-action=confirm-cancel]", dialog).focus();
  });
}

// ------------------------------------------------------------------ formatting

function fmtClock(iso) {
  if (!iso) return "—";
  const d = new Date(iso);
  if (Number.isNaN(d.getTime())) return String(iso);
  const time = d.toLocaleTimeString([], { hour12: false, hour: "2-digit", minute: "2-digit", second: "2-digit" });
  if (d.toDateString() === new Date().toDateString()) return time;
  return `${d.toLocaleDateString([], { year: "numeric", month: "short", day: "numeric" })} ${time}`;
}

function fmtRelative(iso) {
  if (!iso) return "";
  const s = (Date.parse(iso) - Date.now()) / 1000;
  const a = Math.abs(s);
  if (a < 1) return "now";
  let text;
  if (a < 60) text = `${Math.round(a)} s`;
  else if (a < 3600) text = `${Math.round(a / 60)} min`;
  else if (a < 86400) text = `${(a / 3600).toFixed(a < 36000 ? 1 : 0)} h`;
  else text = `${Math.round(a / 86400)} d`;
  return s > 0 ? `in ${text}` : `${text} ago`;
}

function timeCell(iso) {
  if (!iso) return '<span class="muted">—</span>';
  return `<time datetime="${esc(iso)}" title="${esc(iso)}">${esc(fmtRelative(iso))}</time><span class="sub">${esc(fmtClock(iso))}</span>`;
}

function fmtSeconds(s) {
  if (s === null || s === undefined || Number.isNaN(s)) return "—";
  const ms = s * 1000;
  if (ms === 0) return "0 ms";
  if (Math.abs(ms) < 1) return `${ms.toFixed(2)} ms`;
  if (Math.abs(ms) < 1000) return `${Math.round(ms)} ms`;
  if (Math.abs(s) < 60) return `${s.toFixed(Math.abs(s) < 10 ? 2 : 1)} s`;
  if (Math.abs(s) < 3600) return Math.round(s % 60) ? `${Math.floor(s / 60)} min ${Math.round(s % 60)} s` : `${Math.round(s / 60)} min`;
  return `${(s / 3600).toFixed(1)} h`;
}

function fmtInterval(s) {
  if (s >= 86400 && s % 86400 === 0) return `${s / 86400} d`;
  if (s >= 3600 && s % 3600 === 0) return `${s / 3600} h`;
  if (s >= 60 && s % 60 === 0) return `${s / 60} min`;
  return `${s} s`;
}

function scheduleSummary(schedule) {
  if (!schedule) return "—";
  const tz = schedule.timezone && schedule.timezone !== "UTC" ? ` · ${schedule.timezone}` : "";
  if (schedule.cron !== undefined) return `cron <code>${esc(schedule.cron)}</code>${esc(tz)}`;
  if (schedule.every !== undefined) return `every ${esc(fmtInterval(schedule.every))}`;
  if (schedule.at !== undefined) return `once at ${esc(fmtClock(schedule.at))}`;
  return "—";
}

function taskSummary(task) {
  if (!task) return "";
  if (task.type === "shell") {
    const cmd = Array.isArray(task.command) ? task.command.join(" ") : `sh -c ${task.command}`;
    return `shell: ${cmd}`;
  }
  if (task.type === "http") return `http: ${task.method || "GET"} ${task.url}`;
  if (task.type === "python") return `python: ${task.callable}`;
  if (task.type === "message") return `message: ${messageRoute(task)}`;
  return task.type;
}

// Where a message task publishes: "events → ticks" (broker, then its destination).
function messageRoute(task) {
  return `${task.broker} → ${task.to}`;
}

function messageBodyText(body) {
  if (body === undefined || body === null) return "";
  return typeof body === "string" ? body : JSON.stringify(body, null, 2);
}

// The broker's answer to a published message is the last line of the run's output.
function brokerAnswer(output) {
  const lines = String(output || "").trim().split("\n");
  return lines[lines.length - 1];
}

function stateBadge(state, extra = "") {
  const label = String(state).replace("_", " ");
  return `<span class="badge s-${esc(state)}">${esc(label)}${extra}</span>`;
}

// A job with nothing left to fire: a one-shot `at` that has passed, or a schedule whose end_at
// has (next_fire_at null). Paused or not, it never fires again.
function isDone(job) {
  const s = job.schedule;
  if (!s || job.next_fire_at) return false;
  const end = s.at !== undefined ? s.at : s.end_at;
  return Boolean(end) && Date.parse(end) <= Date.now();
}

function jobStateBadge(job) {
  if (isDone(job)) {
    const what = job.schedule.at !== undefined ? "its one slot has passed" : "its schedule has ended";
    return `<span class="badge done" title="Nothing left to fire: ${esc(what)}">done</span>`;
  }
  return job.paused ? '<span class="badge paused">paused</span>' : '<span class="badge ok">active</span>';
}

function successRate(stats) {
  if (!stats) return null;
  const done = (stats.succeeded || 0) + (stats.failed || 0) + (stats.timed_out || 0) + (stats.lost || 0);
  if (!done) return null;
  return { rate: (stats.succeeded || 0) / done, ok: stats.succeeded || 0, done };
}

function rateHtml(stats, { inline = false } = {}) {
  const r = successRate(stats);
  if (!r) return '<span class="muted">—</span>';
  const pct = r.rate * 100;
  const cls = pct >= 99 ? "ok" : pct >= 90 ? "warn" : "bad";
  const text = pct === 100 || pct === 0 ? pct.toFixed(0) : pct.toFixed(1);
  const detail = inline ? ` <span class="muted">(${r.ok} of ${r.done} finished runs)</span>` : `<span class="sub">${r.ok} of ${r.done}</span>`;
  return `<span class="rate ${cls}">${text}%</span>${detail}`;
}

function loadBar(running, capacity) {
  const pct = capacity ? Math.min(100, (100 * running) / capacity) : 0;
  const full = capacity && running >= capacity ? " full" : "";
  return `<span class="load"><svg viewBox="0 0 100 8" preserveAspectRatio="none" aria-hidden="true"><rect class="track" width="100" height="8" rx="4"/><rect class="fill${full}" width="${pct.toFixed(1)}" height="8" rx="4"/></svg><span>${running} / ${capacity}</span></span>`;
}

// ------------------------------------------------------------------ keyed table rendering

// Update a tbody in place: rows are keyed, cells are only rewritten when their HTML changed,
// so a poll never steals focus from a button or resets a hover.
function renderRows(tbody, items, { key, cells, rowClass }) {
  const existing = new Map($$(":scope > tr[data-key]", tbody).map((tr) => [tr.dataset.key, tr]));
  let previous = null;
  for (const item of items) {
    const k = key(item);
    let tr = existing.get(k);
    if (tr) existing.delete(k);
    else {
      tr = document.createElement("tr");
      tr.dataset.key = k;
    }
    const html = cells(item);
    html.forEach((content, i) => {
      let cell = tr.children[i];
      if (!cell) {
        const spec = typeof content === "object" ? content : {};
        cell = document.createElement(i === 0 ? "th" : "td");
        if (i === 0) cell.scope = "row";
        if (spec.className) cell.className = spec.className;
        tr.appendChild(cell);
      }
      setHtml(cell, typeof content === "object" ? content.html : content);
    });
    const cls = rowClass ? rowClass(item) : "";
    if (tr.className !== cls) tr.className = cls;
    const next = previous ? previous.nextSibling : tbody.firstChild;
    if (next !== tr) tbody.insertBefore(tr, next);
    previous = tr;
  }
  for (const tr of existing.values()) tr.remove();
}

// ------------------------------------------------------------------ chrome: banner, toasts, live

function showBanner(text, { tokenButton = false, links = [] } = {}) {
  const banner = $("#banner");
  setText($(".banner-text", banner), text);
  $("[data-action=enter-token]", banner).hidden = !tokenButton;
  const box = $(".banner-links", banner);
  setHtml(box, links.map((l) => `<a class="btn small" href="${esc(l.href)}" title="${esc(l.title)}">${esc(l.label)}</a>`).join(""));
  box.hidden = !links.length;
  banner.hidden = false;
}

// The other members' dashboards, from the last /v1/nodes answer: where to go when this node is
// gone. The token goes along (in the fragment, never sent to a server) only to another port of
// this same host: sessionStorage is per origin, and a token must not travel to another machine.
function otherDashboards() {
  const self = cluster.status && cluster.status.node_id;
  const others = (cluster.nodes || []).filter((n) => n.id !== self && n.http);
  others.sort((a, b) => Number(b.alive) - Number(a.alive) || a.id.localeCompare(b.id));
  return others.map((n) => {
    let href = `${n.http}/`;
    try {
      if (new URL(n.http).hostname === location.hostname && auth.token) href += `#token=${encodeURIComponent(auth.token)}`;
    } catch {
      /* not a URL: link it as it is */
    }
    return { label: `Open ${n.id}`, href, title: `${n.id}'s dashboard at ${n.http}${n.alive ? "" : " (down when last seen)"}` };
  });
}

function hideBanner() {
  $("#banner").hidden = true;
}

function toast(text, { error = false } = {}) {
  const el = document.createElement("div");
  el.className = `toast${error ? " error" : ""}`;
  el.textContent = text;
  $("#toasts").appendChild(el);
  setTimeout(() => el.remove(), error ? 7000 : 4000);
}

function setLive(kind, text) {
  const live = $("#live");
  live.className = `live ${kind}`;
  setText($(".live-text", live), text);
}

function describeError(err) {
  if (err.status === 503) return `No leader or no quorum: not applied (${err.message}). Try again shortly.`;
  if (err.status === 504) return `Indeterminate: the leader changed during the write; it may have applied (${err.message}).`;
  if (err.status === 0) return "The node did not answer: is it running?";
  return err.message;
}

function capitalize(text) {
  return text ? text[0].toUpperCase() + text.slice(1) : text;
}

// ------------------------------------------------------------------ header (this node's status)

const cluster = { status: null, nodes: null }; // the last answers of /v1/status and /v1/nodes

function renderHeader(status) {
  const parts = [
    `Node <strong>${esc(status.node_id)}</strong> (${esc(status.role)})`,
    status.leader ? `leader <strong>${esc(status.leader)}</strong>` : '<strong class="warn">no leader</strong>',
    `term ${esc(status.term)}`,
    `commit ${esc(status.commit_index)} / applied ${esc(status.applied_index)}`,
  ];
  setHtml($("#cluster-line"), parts.join('<span class="sep" aria-hidden="true">·</span>'));
  setText($("#footer-text"), `raftsched ${status.version} · served by ${status.node_id} · times shown in your browser's local time`);
  document.title = `raftsched · ${status.node_id}`;
}

// ------------------------------------------------------------------ overview

const overview = {
  mount(main) {
    main.replaceChildren(cloneTemplate("t-overview"));
    this.root = main;
    this.filter = "";
    this.lastRuns = new Map(); // job id -> {run, at} for jobs not found in the recent runs page
    this.data = null;
    $("#jobs-filter", main).addEventListener("input", (event) => {
      this.filter = event.target.value.trim().toLowerCase();
      if (this.data) this.renderJobs();
    });
  },

  async refresh(status) {
    const gen = current.gen;
    const [nodes, jobs, stats, runs, alerts] = await Promise.all([
      get("/v1/nodes"),
      get("/v1/jobs?limit=1000"),
      get("/v1/stats"),
      get("/v1/runs?limit=200"),
      get("/v1/alerts?limit=20").catch(() => ({ items: [] })), // an older node has no alerts
    ]);
    // "Last result" is the job's newest run, whatever its state (a running one shows as running):
    // skipped and missed slots are records, not runs, and do not count.
    const last = new Map();
    for (const run of runs.items) {
      if (!NOT_RUN.has(run.state) && !last.has(run.job_id)) last.set(run.job_id, run);
    }
    // A job whose newest run is older than the page above: ask for its own runs, a few jobs per
    // poll, again whenever it fired since, else at most every 15 s (an active run ends).
    const now = Date.now();
    const stale = jobs.items
      .filter((job) => !last.has(job.id) && job.last_fire_at)
      .filter((job) => {
        const seen = this.lastRuns.get(job.id);
        return !seen || seen.fire !== job.last_fire_at || now - seen.at > 15000;
      })
      .slice(0, 5);
    await Promise.all(
      stale.map(async (job) => {
        try {
          const page = await get(`/v1/jobs/${encodeURIComponent(job.id)}/runs?limit=50`);
          const run = page.items.find((r) => !NOT_RUN.has(r.state)) || null;
          this.lastRuns.set(job.id, { run, at: now, fire: job.last_fire_at });
        } catch {
          /* deleted meanwhile */
        }
      }),
    );
    for (const job of jobs.items) {
      if (!last.has(job.id) && this.lastRuns.get(job.id)?.run) last.set(job.id, this.lastRuns.get(job.id).run);
    }
    cluster.nodes = nodes.items;
    if (gen !== current.gen) return;
    this.data = { status, nodes: nodes.items, jobs: jobs.items, more: Boolean(jobs.next_cursor), stats, last, alerts: alerts.items };
    this.render();
  },

  render() {
    this.renderTiles();
    this.renderMembers();
    this.renderJobs();
    this.renderAlerts();
  },

  // The latest alerts, newest first, with their delivery (every value escaped, as everywhere).
  renderAlerts() {
    const { alerts } = this.data;
    bind(this.root, "alerts-empty").hidden = alerts.length > 0;
    renderRows($("#alerts-table tbody", this.root), alerts, {
      key: (a) => a.alert_id,
      cells: (a) => {
        const about = a.job_id ? `<a href="${jobHref(a.job_id)}">${esc(a.job_id)}</a>` : esc(a.node || "cluster");
        const run = a.run_id ? `<span class="sub mono">${esc(a.run_id)}${a.attempt ? ` #${esc(a.attempt)}` : ""}</span>` : "";
        const d = a.delivery || {};
        const tries = `${esc(d.attempts)} attempt${d.attempts === 1 ? "" : "s"}${d.node ? ` · ${esc(d.node)}` : ""}`;
        const badge = { delivered: "ok", failed: "bad", pending: "warn" }[d.state] || "";
        return [
          `<span class="mono small">${esc(a.alert_id)}</span>`,
          `${esc(a.event)}${a.count > 1 ? ` <span class="badge plain">×${esc(a.count)}</span>` : ""}<span class="sub">${about}</span>${run}`,
          esc(a.channel),
          timeCell(a.decided_at),
          `<span class="badge ${badge}">${esc(d.state)}</span><span class="sub">${tries}</span>`,
          d.last_error ? `<span class="cell-ellipsis" title="${esc(d.last_error)}">${esc(d.last_error)}</span>` : '<span class="muted">—</span>',
        ];
      },
    });
  },

  renderTiles() {
    const { status, nodes, jobs, stats } = this.data;
    const root = this.root;
    const alive = nodes.filter((n) => n.alive).length;
    const connected = nodes.filter((n) => n.connected).length;
    setText(bind(root, "leader"), status.leader || "none");
    bind(root, "leader").className = `tile-value ${status.leader ? "" : "bad"}`;
    setText(bind(root, "term"), `term ${status.term} · ${status.node_id} is ${status.role}`);
    setText(bind(root, "alive"), `${alive} / ${nodes.length}`);
    bind(root, "alive").className = `tile-value ${alive === nodes.length ? "ok" : alive * 2 > nodes.length ? "warn" : "bad"}`;
    setText(bind(root, "connected"), `${connected} connected to ${status.node_id}`);
    const done = jobs.filter(isDone).length;
    const paused = jobs.filter((j) => j.paused && !isDone(j)).length;
    setText(bind(root, "jobs"), `${jobs.length}${this.data.more ? "+" : ""}`);
    setText(bind(root, "paused"), `${jobs.length - paused - done} active · ${paused} paused${done ? ` · ${done} done` : ""}`);
    // Slots of live nodes only: a node that is down runs nothing, whatever it last reported.
    const live = nodes.filter((n) => n.alive);
    const running = live.reduce((sum, n) => sum + (n.running || 0), 0);
    const capacity = live.reduce((sum, n) => sum + (n.capacity || 0), 0);
    setText(bind(root, "running"), String(running));
    setText(bind(root, "capacity"), `of ${capacity} slots`);
    const totals = stats.cluster || {};
    const r = successRate(totals);
    setText(bind(root, "success"), r ? `${(r.rate * 100).toFixed(r.rate === 1 || r.rate === 0 ? 0 : 1)}%` : "—");
    bind(root, "success").className = `tile-value ${!r ? "" : r.rate >= 0.99 ? "ok" : r.rate >= 0.9 ? "warn" : "bad"}`;
    setText(
      bind(root, "outcomes"),
      `${totals.fired || 0} fired · ${(totals.failed || 0) + (totals.timed_out || 0) + (totals.lost || 0)} failed · ${totals.missed || 0} missed`,
    );
  },

  renderMembers() {
    const { status, nodes } = this.data;
    const leader = status.leader;
    renderRows($("#members-table tbody", this.root), [...nodes].sort((a, b) => a.id.localeCompare(b.id)), {
      key: (n) => n.id,
      cells: (n) => {
        let role = n.id === leader ? "leader" : "follower";
        if (n.id === status.node_id && status.role === "candidate") role = "candidate";
        let health;
        if (!n.alive) health = '<span class="badge h-down">down</span>';
        else if (n.connected === false) health = '<span class="badge h-partial">alive · not connected</span>';
        else health = '<span class="badge h-up">alive · connected</span>';
        if (n.draining) health += ' <span class="badge warn plain">draining</span>';
        const tags = Object.entries(n.tags || {})
          .map(([k, v]) => `<span class="tag">${esc(k)}=${esc(v)}</span>`)
          .join("");
        const you = n.id === status.node_id ? '<span class="you">(this page)</span>' : "";
        return [
          `${esc(n.id)}${you}${n.version ? `<span class="sub">v${esc(n.version)}</span>` : ""}`,
          `<span class="badge r-${role}" data-role="${role}">${role}</span>`,
          health,
          loadBar(n.running || 0, n.capacity || 0),
          tags || '<span class="muted">—</span>',
          `<span class="mono small">http ${esc(n.http)}</span><span class="sub mono">raft ${esc(n.raft)}</span>`,
        ];
      },
    });
  },

  renderJobs() {
    const { jobs, last } = this.data;
    const f = this.filter;
    const shown = jobs
      .filter((j) => !f || `${j.id} ${j.description || ""} ${JSON.stringify(j.schedule)} ${taskSummary(j.task)}`.toLowerCase().includes(f))
      .sort((a, b) => a.id.localeCompare(b.id));
    const empty = bind(this.root, "jobs-empty");
    empty.hidden = shown.length > 0;
    if (!shown.length && jobs.length) setHtml(empty, "No job matches the filter.");
    else if (!jobs.length) setHtml(empty, 'No jobs yet. <a href="#/new">Create the first one</a>.');
    renderRows($("#jobs-table tbody", this.root), shown, {
      key: (j) => j.id,
      cells: (j) => {
        const run = last.get(j.id);
        const when = run ? fmtRelative(run.finished_at || run.started_at || run.due_at) : "";
        const result = run ? `${stateBadge(run.state)}<span class="sub">${esc(when)}</span>` : '<span class="muted">—</span>';
        const state = jobStateBadge(j);
        const toggle = j.paused
          ? `<button type="button" class="btn small" data-action="resume-job" data-job="${esc(j.id)}" aria-label="Resume ${esc(j.id)}">Resume</button>`
          : `<button type="button" class="btn small" data-action="pause-job" data-job="${esc(j.id)}" aria-label="Pause ${esc(j.id)}">Pause</button>`;
        return [
          `<a href="${jobHref(j.id)}">${esc(j.id)}</a>${j.description ? `<span class="sub">${esc(j.description)}</span>` : ""}`,
          `${scheduleSummary(j.schedule)}<span class="sub cell-ellipsis" title="${esc(taskSummary(j.task))}">${esc(taskSummary(j.task))}</span>`,
          timeCell(j.next_slot_at),
          timeCell(j.last_slot_at),
          result,
          rateHtml(j.stats),
          state,
          {
            className: "actions-cell",
            html: `<button type="button" class="btn small" data-action="trigger-job" data-job="${esc(j.id)}" aria-label="Trigger ${esc(j.id)} now">Trigger</button>${toggle}`,
          },
        ];
      },
      rowClass: (j) => (j.paused ? "is-paused" : ""),
    });
  },

  async onJobChanged() {
    await tick();
  },
};

// ------------------------------------------------------------------ charts

function fmtAxis(s) {
  const ms = s * 1000;
  if (ms === 0) return "0";
  if (ms < 1000) return `${Number(ms.toPrecision(3))} ms`;
  return `${Number(s.toPrecision(3))} s`;
}

function niceMax(value) {
  if (!(value > 0)) return 0.001;
  const exp = Math.floor(Math.log10(value));
  for (const m of [1, 2, 4, 5, 10]) {
    const candidate = m * 10 ** exp;
    if (candidate >= value) return candidate;
  }
  return 10 ** (exp + 1);
}

function percentile(sorted, q) {
  if (!sorted.length) return null;
  return sorted[Math.min(sorted.length - 1, Math.max(0, Math.ceil(q * sorted.length) - 1))];
}

function barChart(runs, key, label) {
  const points = runs.filter((r) => typeof r[key] === "number" && r.state !== "skipped" && r.state !== "missed").slice(0, CHART_RUNS).reverse();
  if (!points.length) return { svg: `<p class="chart-empty">No ${esc(label.toLowerCase())} measured yet.</p>`, note: "" };
  const W = 600;
  const H = 180;
  const L = 56;
  const R = 10;
  const T = 12;
  const B = 24;
  const values = points.map((r) => Math.max(0, r[key]));
  const sorted = [...values].sort((a, b) => a - b);
  const p50 = percentile(sorted, 0.5);
  const p99 = percentile(sorted, 0.99);
  const max = niceMax(sorted[sorted.length - 1]);
  const plotH = H - T - B;
  const slots = Math.max(points.length, 30);
  const slotW = (W - L - R) / slots;
  const y = (v) => T + plotH - (v / max) * plotH;
  const out = [];
  for (const frac of [0, 0.5, 1]) {
    const gy = y(max * frac).toFixed(1);
    out.push(`<line class="${frac === 0 ? "axis" : "grid"}" x1="${L}" x2="${W - R}" y1="${gy}" y2="${gy}"/>`);
    out.push(`<text class="label" x="${L - 6}" y="${(Number(gy) + 4).toFixed(1)}" text-anchor="end">${esc(fmtAxis(max * frac))}</text>`);
  }
  points.forEach((run, i) => {
    const v = values[i];
    const h = Math.max(1, (v / max) * plotH);
    const x = L + i * slotW + slotW * 0.15;
    out.push(
      `<rect class="bar s-${esc(run.state)}" x="${x.toFixed(1)}" y="${(T + plotH - h).toFixed(1)}" width="${(slotW * 0.7).toFixed(1)}" height="${h.toFixed(1)}"><title>${esc(run.run_id)} (attempt ${run.attempt}, ${esc(run.state)}): ${esc(fmtSeconds(run[key]))}</title></rect>`,
    );
  });
  const py = y(p50).toFixed(1);
  out.push(`<line class="p50" x1="${L}" x2="${W - R}" y1="${py}" y2="${py}"/>`);
  out.push(`<text class="p50-label" x="${W - R - 2}" y="${(Number(py) - 4).toFixed(1)}" text-anchor="end">p50 ${esc(fmtSeconds(p50))}</text>`);
  out.push(`<text class="label" x="${L}" y="${H - 6}">${esc(fmtClock(points[0].scheduled_at))}</text>`);
  const lastX = L + points.length * slotW;
  if (lastX - L > 110) {
    out.push(`<text class="label" x="${lastX.toFixed(1)}" y="${H - 6}" text-anchor="end">${esc(fmtClock(points[points.length - 1].scheduled_at))}</text>`);
  }
  const aria = `${label} of the last ${points.length} runs: median ${fmtSeconds(p50)}, 99th percentile ${fmtSeconds(p99)}, maximum ${fmtSeconds(sorted[sorted.length - 1])}`;
  return {
    svg: `<svg viewBox="0 0 ${W} ${H}" role="img" aria-label="${esc(aria)}">${out.join("")}</svg>`,
    note: `Last ${points.length} runs: p50 ${fmtSeconds(p50)} · p99 ${fmtSeconds(p99)} · max ${fmtSeconds(sorted[sorted.length - 1])}`,
  };
}

// ------------------------------------------------------------------ job page

function kvHtml(pairs) {
  return pairs
    .filter(([, v]) => v !== undefined && v !== null && v !== "")
    .map(([k, v]) => `<dt>${esc(k)}</dt><dd>${v}</dd>`)
    .join("");
}

function definitionPairs(job) {
  const t = job.task || {};
  const s = job.schedule || {};
  const tz = s.cron !== undefined && (!s.timezone || s.timezone === "UTC") ? " · UTC" : "";
  const pairs = [["Schedule", scheduleSummary(job.schedule) + tz]];
  if (s.start_at) pairs.push(["Starts", esc(s.start_at)]);
  if (s.end_at) pairs.push(["Ends", esc(s.end_at)]);
  // Slot times (as the runs show them), not when the fires were committed (lookahead_s ahead).
  pairs.push(["Next slot", job.paused ? '<span class="muted">paused</span>' : job.next_slot_at ? `${esc(fmtClock(job.next_slot_at))} <span class="muted">(${esc(fmtRelative(job.next_slot_at))})</span>` : '<span class="muted">none</span>']);
  pairs.push(["Last slot", job.last_slot_at ? `${esc(fmtClock(job.last_slot_at))} <span class="muted">(${esc(fmtRelative(job.last_slot_at))})</span>` : '<span class="muted">never</span>']);
  if (t.type === "shell") {
    pairs.push(["Task", `shell <code>${esc(Array.isArray(t.command) ? JSON.stringify(t.command) : t.command)}</code>`]);
    if (t.cwd) pairs.push(["Working dir", `<code>${esc(t.cwd)}</code>`]);
  } else if (t.type === "http") {
    pairs.push(["Task", `http <code>${esc(t.method)} ${esc(t.url)}</code>`]);
    pairs.push(["Expect status", esc((t.expect_status || []).join(", "))]);
  } else if (t.type === "message") {
    pairs.push(...messagePairs(t));
  } else {
    pairs.push(["Task", `${esc(t.type)} <code>${esc(t.callable || "")}</code>`]);
  }
  const m = job.misfire || {};
  const r = job.retries || {};
  pairs.push(["Overlap", esc(job.overlap)]);
  pairs.push(["Misfire", `${esc(m.policy)} <span class="muted">(grace ${esc(fmtSeconds(m.grace))}, catch-up ≤ ${esc(m.max_catchup)})</span>`]);
  pairs.push(["Retries", r.max ? `${esc(r.max)} <span class="muted">(delay ${esc(fmtSeconds(r.initial_delay))} × ${esc(r.backoff)})</span>` : "none"]);
  pairs.push(["Timeout", job.timeout ? esc(fmtSeconds(job.timeout)) : "none"]);
  pairs.push(["Delivery", esc(String(job.delivery || "").replaceAll("_", " "))]);
  const route = job.route || {};
  const rtags = Object.entries(route.tags || {}).map(([k, v]) => `<span class="tag">${esc(k)}=${esc(v)}</span>`).join("");
  pairs.push(["Route", `${esc(route.strategy)}${route.shards > 1 ? ` × ${esc(route.shards)}` : ""} ${rtags}`]);
  pairs.push(["Version", `${esc(job.version)} <span class="muted">· updated ${esc(fmtClock(job.updated_at))}${job.updated_by ? ` by ${esc(job.updated_by)}` : ""}</span>`]);
  return pairs;
}

function messagePairs(t) {
  const defaultType = typeof t.body === "string" ? "text/plain; charset=utf-8" : "application/json";
  const options = Object.entries(t.options || {}).map(([k, v]) => `${k}=${JSON.stringify(v)}`);
  const headers = Object.keys(t.headers || {});
  return [
    ["Task", `message <code>${esc(messageRoute(t))}</code>`],
    ["Body", `<code class="wrap">${esc(messageBodyText(t.body).replace(/\s*\n\s*/g, " ")) || '<span class="muted">empty</span>'}</code>`],
    ["Content type", esc(t.content_type || defaultType)],
    ["Options", options.length ? `<code>${esc(options.join(" "))}</code>` : null],
    ["Headers", headers.length ? esc(headers.join(", ")) : null],
  ];
}

function statsPairs(stats) {
  stats = stats || {};
  const summary = (s) => (s && s.count ? `p50 ${esc(fmtSeconds(s.p50))} · p99 ${esc(fmtSeconds(s.p99))} · max ${esc(fmtSeconds(s.max))}` : '<span class="muted">—</span>');
  return [
    ["Success rate", rateHtml(stats, { inline: true })],
    ["Fired", esc(stats.fired ?? 0)],
    ["Succeeded", `<span class="rate ok">${esc(stats.succeeded ?? 0)}</span>`],
    ["Failed", `<span class="${stats.failed ? "rate bad" : ""}">${esc(stats.failed ?? 0)}</span>`],
    ["Timed out", `<span class="${stats.timed_out ? "rate bad" : ""}">${esc(stats.timed_out ?? 0)}</span>`],
    ["Lost", esc(stats.lost ?? 0)],
    ["Retried", esc(stats.retried ?? 0)],
    ["Skipped · missed", `${esc(stats.skipped ?? 0)} · ${esc(stats.missed ?? 0)}`],
    ["Cancelled", esc(stats.cancelled ?? 0)],
    ["Lateness", summary(stats.lateness)],
    ["Duration", summary(stats.duration)],
  ];
}

function runResult(run) {
  if (run.state === "skipped" || run.state === "missed") {
    const count = run.count > 1 ? ` ×${run.count}` : "";
    return `<span class="muted cell-ellipsis" title="${esc(run.reason || "")}">${esc(run.reason || run.state)}${esc(count)}</span>`;
  }
  const parts = [];
  if (run.exit_code !== null && run.exit_code !== undefined) parts.push(`exit ${run.exit_code}`);
  if (run.http_status !== null && run.http_status !== undefined) parts.push(`HTTP ${run.http_status}`);
  let html = esc(parts.join(" · "));
  const redundant = run.error && (run.error === `exit status ${run.exit_code}` || run.error === `HTTP ${run.http_status}`);
  if (run.error && !redundant) html += `${html ? " " : ""}<span class="muted cell-ellipsis" title="${esc(run.error)}">${esc(run.error)}</span>`;
  if (run.output_truncated) html += `${html ? " " : ""}${TRUNCATED_BADGE}`;
  return html || '<span class="muted">—</span>';
}

const TRUNCATED_BADGE = '<span class="badge warn plain" title="The node kept only the start of the full output (its output_max_bytes)">output truncated</span>';

function shortRunId(run) {
  const at = run.run_id.lastIndexOf("@");
  return at >= 0 ? run.run_id.slice(at) : run.run_id;
}

const jobPage = {
  mount(main, id) {
    main.replaceChildren(cloneTemplate("t-job"));
    this.root = main;
    this.id = id;
    this.job = null;
    this.runs = [];
    this.selected = null; // run id
    this.detail = null; // GET /v1/runs/{id}
    this.fullOutput = null;
    this.stateFilter = "";
    this.shown = RUNS_PAGE;
    setText(bind(main, "id"), id);
    setText(bind(main, "crumb"), id);
    bind(main, "edit-link").href = `${jobHref(id)}/edit`;
    $("#runs-state", main).addEventListener("change", (event) => {
      this.stateFilter = event.target.value;
      this.shown = RUNS_PAGE;
      tick();
    });
    $("#runs-table tbody", main).addEventListener("click", (event) => {
      if (event.target.closest("button, a")) return;
      const tr = event.target.closest("tr[data-key]");
      if (tr) this.select(tr.dataset.key);
    });
  },

  async refresh() {
    const enc = encodeURIComponent(this.id);
    const query = this.stateFilter ? `&state=${encodeURIComponent(this.stateFilter)}` : "";
    const gen = current.gen;
    let job;
    let runs;
    try {
      [job, runs] = await Promise.all([get(`/v1/jobs/${enc}`), get(`/v1/jobs/${enc}/runs?limit=100${query}`)]);
    } catch (err) {
      if (err.status === 404 && gen === current.gen) {
        this.renderGone();
        return;
      }
      throw err;
    }
    if (gen !== current.gen) return;
    this.job = job;
    this.runs = runs.items;
    if (this.selected && (!this.detail || ACTIVE.has(this.detail.state) || this.detail.run_id !== this.selected)) {
      try {
        this.detail = await get(`/v1/runs/${encodeURIComponent(this.selected)}`);
      } catch (err) {
        if (err.status !== 404) throw err;
        this.detail = null;
      }
    }
    if (gen !== current.gen) return;
    this.render();
  },

  renderGone() {
    this.root.replaceChildren();
    const p = document.createElement("div");
    p.className = "card empty";
    p.innerHTML = `No job <code>${esc(this.id)}</code> (it was deleted, or never existed). <a href="#/">Back to the overview</a>.`;
    this.root.appendChild(p);
    this.gone = true;
  },

  render() {
    if (this.gone) return;
    const job = this.job;
    const root = this.root;
    setHtml(bind(root, "state-badge"), jobStateBadge(job));
    setText(bind(root, "description"), job.description || "");
    $("[data-action=pause-job]", root).hidden = job.paused;
    $("[data-action=resume-job]", root).hidden = !job.paused;
    setHtml(bind(root, "definition"), kvHtml(definitionPairs(job)));
    setHtml(bind(root, "stats"), kvHtml(statsPairs(job.stats)));

    const lateness = barChart(this.runs, "lateness", "Lateness");
    setHtml($("#chart-lateness", root), lateness.svg);
    setText(bind(root, "lateness-note"), lateness.note);
    const duration = barChart(this.runs, "duration", "Duration");
    setHtml($("#chart-duration", root), duration.svg);
    setText(bind(root, "duration-note"), duration.note);

    bind(root, "runs-empty").hidden = this.runs.length > 0;
    const more = bind(root, "runs-more");
    more.hidden = this.runs.length <= this.shown;
    setText(more, `Show more (${this.runs.length - this.shown} of ${this.runs.length} hidden)`);
    renderRows($("#runs-table tbody", root), this.runs.slice(0, this.shown), {
      key: (r) => r.run_id,
      cells: (r) => [
        `<button type="button" class="linklike mono small" data-action="show-run" data-run="${esc(r.run_id)}" title="${esc(r.run_id)}" aria-label="Show run ${esc(r.run_id)}">${esc(shortRunId(r))}</button>`,
        stateBadge(r.state, r.manual ? " · manual" : ""),
        { className: "num", html: esc(r.attempt) },
        esc(r.node || "—"),
        `<span title="${esc(r.scheduled_at)}">${esc(fmtClock(r.scheduled_at))}</span>`,
        { className: "num", html: esc(fmtSeconds(r.lateness)) },
        { className: "num", html: esc(fmtSeconds(r.duration)) },
        runResult(r),
        {
          className: "actions-cell",
          html: ACTIVE.has(r.state) ? `<button type="button" class="btn small danger" data-action="cancel-run" data-run="${esc(r.run_id)}" aria-label="Cancel run ${esc(r.run_id)}">Cancel</button>` : "",
        },
      ],
      rowClass: (r) => (r.run_id === this.selected ? "selected" : ""),
    });
    this.renderDetail();
  },

  renderDetail() {
    const box = bind(this.root, "run-detail");
    $("[data-action=close-run]", this.root).hidden = !this.selected;
    const r = this.detail;
    if (!this.selected) {
      setHtml(box, '<p class="muted">Select a run to see its details and output.</p>');
      return;
    }
    if (!r) {
      setHtml(box, `<p class="muted">Loading ${esc(this.selected)}…</p>`);
      return;
    }
    const pairs = [
      ["State", stateBadge(r.state, r.manual ? " · manual" : "")],
      ["Attempt", esc(r.attempt)],
      ["Node", esc(r.node || "—")],
      ["Scheduled", `<span title="${esc(r.scheduled_at)}">${esc(fmtClock(r.scheduled_at))}</span>`],
      ["Due", r.due_at !== r.scheduled_at ? `<span title="${esc(r.due_at)}">${esc(fmtClock(r.due_at))}</span>` : null],
      ["Started", r.started_at ? `<span title="${esc(r.started_at)}">${esc(fmtClock(r.started_at))}</span>` : null],
      ["Finished", r.finished_at ? `<span title="${esc(r.finished_at)}">${esc(fmtClock(r.finished_at))}</span>` : null],
      ["Lateness", esc(fmtSeconds(r.lateness))],
      ["Duration", esc(fmtSeconds(r.duration))],
      ["Exit code", r.exit_code ?? null],
      ["HTTP status", r.http_status ?? null],
      ["Shard", r.shards > 1 ? `${esc(r.shard)} of ${esc(r.shards)}` : null],
      ...this.messageRows(r),
      ["Error", r.error ? esc(r.error) : null],
      [
        "Output",
        r.output_truncated
          ? `${TRUNCATED_BADGE} <span class="muted">the full output stopped at the node's <code>output_max_bytes</code>; the tail below is still the output's last bytes</span>`
          : null,
      ],
      ["Reason", r.reason ? esc(r.reason) : null],
    ];
    const fo = this.fullOutput && this.fullOutput.run_id === r.run_id && (this.fullOutput.final || ACTIVE.has(r.state)) ? this.fullOutput : null;
    const output = fo ? fo.text : r.output;
    const from = fo && fo.node ? ` (full output, from ${fo.node})` : "";
    const outHtml = output
      ? `<pre class="output" tabindex="0" aria-label="Output of ${esc(r.run_id)}${esc(from)}">${esc(output)}</pre>`
      : `<pre class="output empty-output">${ACTIVE.has(r.state) ? "No output yet: it is recorded when the run ends." : "No output."}</pre>`;
    const buttons = [];
    if (ACTIVE.has(r.state)) buttons.push(`<button type="button" class="btn small danger" data-action="cancel-run" data-run="${esc(r.run_id)}">Cancel run</button>`);
    if (r.started_at && !(fo && fo.final)) {
      const label = ACTIVE.has(r.state) ? "Load output so far" : "Load full output";
      buttons.push(`<button type="button" class="btn small" data-action="full-output" data-run="${esc(r.run_id)}">${label}</button>`);
    }
    setHtml(
      box,
      `<p class="run-title">${esc(r.run_id)}</p><dl class="kv">${kvHtml(pairs)}</dl>${outHtml}${buttons.length ? `<div class="run-actions">${buttons.join("")}</div>` : ""}`,
    );
  },

  // A message run: where it was published, and what the broker answered (its output's last line).
  messageRows(r) {
    const task = this.job && this.job.task;
    if (!task || task.type !== "message") return [];
    const answer = r.state === "succeeded" && r.output ? brokerAnswer(r.output) : null;
    return [
      ["Published to", `<code>${esc(messageRoute(task))}</code>`],
      ["Broker answer", answer ? `<code class="wrap" data-bind="broker-answer">${esc(answer)}</code>` : null],
    ];
  },

  async select(runId) {
    const gen = current.gen;
    this.selected = runId;
    this.detail = null;
    this.fullOutput = null;
    this.render();
    try {
      this.detail = await get(`/v1/runs/${encodeURIComponent(runId)}`);
    } catch (err) {
      toast(describeError(err), { error: true });
    }
    if (this.selected === runId && gen === current.gen) this.render();
  },

  closeRun() {
    this.selected = null;
    this.detail = null;
    this.fullOutput = null;
    this.render();
  },

  async loadFullOutput(runId) {
    try {
      const token = auth.token;
      const resp = await fetch(`/v1/runs/${encodeURIComponent(runId)}/output`, {
        headers: token ? { Authorization: `Bearer ${token}` } : {},
        cache: "no-store",
        credentials: "omit",
      });
      if (!resp.ok) {
        let message = `HTTP ${resp.status}`;
        try {
          message = (await resp.json()).error.message;
        } catch {
          /* not JSON */
        }
        throw new ApiError(resp.status, null, message);
      }
      const type = resp.headers.get("Content-Type") || "";
      const text = type.includes("json") ? JSON.stringify(await resp.json(), null, 2) : await resp.text();
      const final = Boolean(this.detail && this.detail.run_id === runId && FINISHED.has(this.detail.state));
      this.fullOutput = { run_id: runId, text, final, node: resp.headers.get("X-Raftsched-Output-Node") };
      if (current.view === this) this.renderDetail();
    } catch (err) {
      toast(`Full output unavailable: ${err.message}`, { error: true });
    }
  },

  onJobChanged(job) {
    if (job) {
      this.job = job;
      this.render();
    }
  },
};

// ------------------------------------------------------------------ job form (create / edit)

const DEFAULT_JSON = {
  id: "my-job",
  description: "",
  schedule: { every: 60 },
  task: { type: "shell", command: ["echo", "hello"] },
  overlap: "forbid",
  misfire: { policy: "fire_once", grace: 60 },
};

const HELP = {
  overlap: {
    forbid: "A slot that falls due while a run is active is skipped.",
    allow: "Runs of this job may overlap.",
    replace: "The active run is cancelled, then the new one starts.",
    queue: "The new run starts when the active one ends (at most one waits).",
  },
  misfire: {
    fire_once: "Slots missed (not started within the grace) get one catch-up run.",
    fire_all: "Each missed slot runs, up to the catch-up limit.",
    skip: "Missed slots are recorded and not run.",
  },
};

class FieldError extends Error {
  constructor(field, message) {
    super(message);
    this.field = field;
  }
}

function withoutReadOnly(job) {
  const copy = structuredClone(job);
  for (const key of READ_ONLY) delete copy[key];
  return copy;
}

function parseCommand(text) {
  const trimmed = text.trim();
  if (trimmed.startsWith("[") || trimmed.startsWith('"')) {
    let value;
    try {
      value = JSON.parse(trimmed);
    } catch (err) {
      throw new FieldError("task.command", `Not valid JSON: ${err.message}`);
    }
    if (typeof value === "string") return value;
    if (!Array.isArray(value) || value.some((v) => typeof v !== "string")) {
      throw new FieldError("task.command", "The JSON must be an array of strings (or one string)");
    }
    return value;
  }
  return text
    .split(/\r?\n/)
    .map((line) => line.trim())
    .filter((line) => line !== "");
}

function commandText(command) {
  if (typeof command === "string") return JSON.stringify(command);
  if (!Array.isArray(command)) return "";
  if (command.some((arg) => arg === "" || arg !== arg.trim() || arg.includes("\n")) || (command[0] || "").startsWith("[") || (command[0] || "").startsWith('"')) {
    return JSON.stringify(command);
  }
  return command.join("\n");
}

function numberOrRaw(value) {
  if (value === "" || value === null || value === undefined) return null;
  const n = Number(value);
  return Number.isFinite(n) ? n : value;
}

function parseKwargs(text) {
  return parseObject("task.kwargs", text, '{"day": "yesterday"}', "Keyword arguments");
}

// A JSON object typed into a field (empty: {}); anything else is refused at that field.
function parseObject(field, text, example, what = "The value") {
  if (text.trim() === "") return {};
  let value;
  try {
    value = JSON.parse(text);
  } catch (err) {
    throw new FieldError(field, `Not valid JSON: ${err.message}`);
  }
  if (!value || typeof value !== "object" || Array.isArray(value)) {
    throw new FieldError(field, `${what} must be a JSON object, such as ${example}`);
  }
  return value;
}

// An HTTP or message body as typed: a JSON object or array is sent as JSON, anything else as
// text; empty leaves the task without a body (its default).
function setBody(task, text) {
  if (text.trim() === "") {
    delete task.body;
    return;
  }
  try {
    const parsed = JSON.parse(text);
    task.body = typeof parsed === "object" && parsed !== null ? parsed : text;
  } catch {
    task.body = text;
  }
}

function parseExpect(text) {
  const items = text
    .split(/[\s,]+/)
    .map((s) => s.trim())
    .filter(Boolean)
    .map((s) => (/^\d+$/.test(s) ? Number(s) : s));
  return items.length === 1 ? items[0] : items;
}

const jobForm = {
  mount(main, { mode, id }) {
    main.replaceChildren(cloneTemplate("t-form"));
    this.root = main;
    this.mode = mode;
    this.id = id;
    this.base = null; // the job being edited, without its read-only fields
    this.version = null;
    this.tab = "form";
    this.form = $("#job-form", main);
    const title = mode === "edit" ? `Edit ${id}` : "New job";
    setText(bind(main, "title"), title);
    setText(bind(main, "crumb"), mode === "edit" ? `${id} / edit` : "New job");
    setText(bind(main, "submit"), mode === "edit" ? "Save changes" : "Create job");
    setText(bind(main, "submit-json"), mode === "edit" ? "Save changes" : "Create job");
    for (const a of $$("[data-bind=cancel-link]", main)) a.href = mode === "edit" ? jobHref(id) : "#/";
    this.fillTimezones();
    this.fillBrokers();
    this.form.addEventListener("change", (event) => {
      if (["kind", "task_type", "overlap", "misfire"].includes(event.target.name)) this.syncVisibility();
    });
    this.form.addEventListener("input", (event) => {
      const field = event.target.closest(".field");
      if (field) this.clearFieldError(field);
    });
    this.form.addEventListener("submit", (event) => {
      event.preventDefault();
      this.submitForm();
    });
    $("#f-json", main).value = JSON.stringify(DEFAULT_JSON, null, 2);
    if (mode === "edit") {
      const idInput = $("#f-id", main);
      idInput.readOnly = true;
      idInput.setAttribute("aria-readonly", "true");
      this.form.hidden = true;
      this.load();
    } else {
      this.syncVisibility();
      $("#f-id", main).focus();
    }
  },

  async refresh() {
    /* a form is not refreshed under the operator's hands: only the brokers it offers */
    this.fillBrokers();
  },

  async load() {
    const gen = current.gen;
    try {
      const { data, headers } = await api("GET", `/v1/jobs/${encodeURIComponent(this.id)}`);
      if (gen !== current.gen) return;
      this.version = data.version ?? (headers.get("ETag") || "").replaceAll('"', "");
      this.base = withoutReadOnly(data);
      this.fill(this.base);
      this.form.hidden = this.tab !== "form";
      $("#f-json", this.root).value = JSON.stringify(this.base, null, 2);
      if (this.base.task && !FORM_TASKS.includes(this.base.task.type)) this.switchTab("json");
    } catch (err) {
      if (gen === current.gen) this.showFormError(err.status === 404 ? `No job ${this.id}.` : describeError(err));
    }
  },

  fillTimezones() {
    const list = $("#tz-list", this.root);
    let zones = ["UTC"];
    try {
      zones = Intl.supportedValuesOf("timeZone");
      if (!zones.includes("UTC")) zones.unshift("UTC");
    } catch {
      /* older browser: free text */
    }
    list.replaceChildren(
      ...zones.map((z) => {
        const o = document.createElement("option");
        o.value = z;
        return o;
      }),
    );
  },

  // The brokers the live nodes publish (their [broker NAME] sections), offered for "Broker".
  fillBrokers() {
    const names = [...new Set((cluster.nodes || []).flatMap((n) => (n.policy && n.policy.brokers) || []))].sort();
    const list = $("#broker-list", this.root);
    if (list.dataset.names === names.join(",")) return;
    list.dataset.names = names.join(",");
    list.replaceChildren(
      ...names.map((name) => {
        const o = document.createElement("option");
        o.value = name;
        return o;
      }),
    );
  },

  kind() {
    return this.form.elements.kind.value;
  },

  taskType() {
    return this.form.elements.task_type.value;
  },

  syncVisibility() {
    const kind = this.kind();
    const type = this.taskType();
    for (const el of $$("[data-kind]", this.form)) el.hidden = el.dataset.kind !== kind;
    for (const el of $$("[data-task]", this.form)) el.hidden = el.dataset.task !== type;
    for (const p of $$("[data-help-for]", this.form)) {
      setText(p, HELP[p.dataset.helpFor][this.form.elements[p.dataset.helpFor].value] || "");
    }
    const other = !type && this.base && this.base.task && !FORM_TASKS.includes(this.base.task.type);
    bind(this.root, "other-task-note").hidden = !other;
  },

  fill(job) {
    const el = this.form.elements;
    const s = job.schedule || {};
    const t = job.task || {};
    el.id.value = job.id || "";
    el.description.value = job.description || "";
    el.kind.value = s.cron !== undefined ? "cron" : s.at !== undefined ? "at" : "every";
    el.cron.value = s.cron ?? "";
    el.every.value = s.every ?? "";
    el.at.value = s.at ?? "";
    el.timezone.value = s.timezone || "UTC";
    if (FORM_TASKS.includes(t.type)) el.task_type.value = t.type;
    else {
      for (const radio of $$("input[name=task_type]", this.form)) radio.checked = false;
    }
    el.command.value = t.type === "shell" ? commandText(t.command) : "";
    el.cwd.value = t.cwd || "";
    el.method.value = t.method || "GET";
    el.url.value = t.url || "";
    el.expect_status.value = Array.isArray(t.expect_status) ? t.expect_status.join(", ") : t.expect_status || "200-299";
    el.body.value = t.body === undefined || t.body === null ? "" : typeof t.body === "string" ? t.body : JSON.stringify(t.body, null, 2);
    el.broker.value = t.type === "message" ? t.broker || "" : "";
    el.to.value = t.type === "message" ? t.to || "" : "";
    el.message_body.value = t.type === "message" ? messageBodyText(t.body) : "";
    el.content_type.value = t.type === "message" ? t.content_type || "" : "";
    el.options.value = t.type === "message" && t.options && Object.keys(t.options).length ? JSON.stringify(t.options) : "";
    el.callable.value = t.type === "python" ? t.callable || "" : "";
    el.kwargs.value = t.type === "python" && t.kwargs && Object.keys(t.kwargs).length ? JSON.stringify(t.kwargs, null, 2) : "";
    el.timeout.value = job.timeout ?? "";
    el.retries.value = (job.retries && job.retries.max) ?? 0;
    el.overlap.value = job.overlap || "forbid";
    el.misfire.value = (job.misfire && job.misfire.policy) || "fire_once";
    el.grace.value = (job.misfire && job.misfire.grace) ?? 60;
    el.delivery.value = job.delivery || "at_least_once";
    el.paused.checked = Boolean(job.paused);
    this.syncVisibility();
  },

  // The form's values laid over the job being edited: what the form does not show is kept.
  toJob() {
    const el = this.form.elements;
    const base = this.base ? structuredClone(this.base) : {};
    const job = { ...base };
    job.id = el.id.value.trim();
    job.description = el.description.value;
    const kind = this.kind();
    const oldSchedule = base.schedule || {};
    const schedule = {};
    if (kind === "cron") schedule.cron = el.cron.value.trim();
    else if (kind === "every") schedule.every = numberOrRaw(el.every.value);
    else schedule.at = el.at.value.trim();
    if (kind === "every" && oldSchedule.every !== undefined && oldSchedule.start_at) schedule.start_at = oldSchedule.start_at;
    if (kind !== "at" && oldSchedule.end_at && oldSchedule.at === undefined) schedule.end_at = oldSchedule.end_at;
    schedule.timezone = el.timezone.value.trim() || "UTC";
    job.schedule = schedule;

    const type = this.taskType();
    if (type) {
      const oldTask = base.task && base.task.type === type ? base.task : {};
      const task = { ...oldTask, type };
      if (type === "shell") {
        task.command = parseCommand(el.command.value);
        task.cwd = el.cwd.value.trim() || null;
        if (task.cwd === null) delete task.cwd;
      } else if (type === "python") {
        task.callable = el.callable.value.trim();
        task.kwargs = parseKwargs(el.kwargs.value);
      } else if (type === "message") {
        task.broker = el.broker.value.trim();
        task.to = el.to.value.trim();
        setBody(task, el.message_body.value);
        task.content_type = el.content_type.value.trim() || null;
        task.options = parseObject("task.options", el.options.value, '{"mode": "list"}');
      } else {
        task.method = el.method.value;
        task.url = el.url.value.trim();
        task.expect_status = parseExpect(el.expect_status.value || "200-299");
        setBody(task, el.body.value);
      }
      job.task = task;
    }
    job.timeout = numberOrRaw(el.timeout.value);
    if (job.timeout === null) delete job.timeout;
    job.retries = { ...(base.retries || {}), max: numberOrRaw(el.retries.value) ?? 0 };
    job.overlap = el.overlap.value;
    job.misfire = { ...(base.misfire || {}), policy: el.misfire.value, grace: numberOrRaw(el.grace.value) ?? 60 };
    job.delivery = el.delivery.value;
    job.paused = el.paused.checked;
    if (!job.description) delete job.description;
    return job;
  },

  switchTab(tab) {
    if (tab === this.tab) return;
    this.clearErrors();
    const json = $("#f-json", this.root);
    if (tab === "json") {
      if (!this.form.hidden || this.base || this.mode === "create") {
        try {
          json.value = JSON.stringify(this.toJob(), null, 2);
        } catch (err) {
          this.showError(err);
          return;
        }
      }
      json.setSelectionRange(0, 0);
      json.scrollTop = 0;
    } else {
      let job;
      try {
        job = JSON.parse(json.value);
      } catch (err) {
        this.showError(new FieldError("__json", `Not valid JSON: ${err.message}`));
        return;
      }
      if (!job || typeof job !== "object" || Array.isArray(job)) {
        this.showError(new FieldError("__json", "The JSON must be an object"));
        return;
      }
      this.base = withoutReadOnly(job);
      this.fill(this.base);
    }
    this.tab = tab;
    for (const btn of $$("[role=tab]", this.root)) {
      const on = btn.dataset.tab === tab;
      btn.setAttribute("aria-selected", String(on));
      btn.tabIndex = on ? 0 : -1;
    }
    this.form.hidden = tab !== "form";
    $("#pane-json", this.root).hidden = tab !== "json";
    (tab === "json" ? json : $("#f-id", this.root)).focus();
  },

  formatJson() {
    const json = $("#f-json", this.root);
    try {
      json.value = JSON.stringify(JSON.parse(json.value), null, 2);
      this.clearErrors();
    } catch (err) {
      this.showError(new FieldError("__json", `Not valid JSON: ${err.message}`));
    }
  },

  async submitForm() {
    this.clearErrors();
    let job;
    try {
      job = this.toJob();
    } catch (err) {
      this.showError(err);
      return;
    }
    await this.send(job);
  },

  async submitJson() {
    this.clearErrors();
    let job;
    try {
      job = JSON.parse($("#f-json", this.root).value);
    } catch (err) {
      this.showError(new FieldError("__json", `Not valid JSON: ${err.message}`));
      return;
    }
    if (job && typeof job === "object" && !Array.isArray(job)) job = withoutReadOnly(job);
    await this.send(job);
  },

  async send(job) {
    const buttons = $$("button[type=submit], [data-action=submit-json]", this.root);
    for (const b of buttons) b.disabled = true;
    try {
      let result;
      if (this.mode === "edit") {
        result = await api("PUT", `/v1/jobs/${encodeURIComponent(this.id)}`, { body: job, headers: { "If-Match": `"${this.version}"` } });
        toast(`Saved ${result.data.id} (version ${result.data.version})`);
      } else {
        result = await api("POST", "/v1/jobs", { body: job });
        toast(`Created ${result.data.id}`);
      }
      location.hash = jobHref(result.data.id);
    } catch (err) {
      if (err.status === 412) {
        this.showFormError("The job was changed by someone else since you opened it: your changes were not saved. Reload it to see the new version.", true);
      } else if (err.status === 409) {
        this.showError(new FieldError("id", err.message || "A job with this id already exists"));
      } else {
        this.showError(err);
      }
    } finally {
      for (const b of buttons) b.disabled = false;
    }
  },

  fieldElement(path) {
    // The most specific visible field: task.command.2 -> task.command; misfire.max_catchup -> none.
    let f = path;
    while (f) {
      const all = $$(`.field[data-field="${CSS.escape(f)}"]`, this.root);
      const el = all.find((candidate) => !candidate.closest("[hidden]"));
      if (el) return el;
      const dot = f.lastIndexOf(".");
      f = dot > 0 ? f.slice(0, dot) : "";
    }
    return null;
  },

  showError(err) {
    const field = err.field ?? null;
    const message = err instanceof ApiError && !err.field && err.status !== 400 ? describeError(err) : capitalize(err.message);
    const target = this.tab === "json" ? $('.field[data-field="__json"]', this.root) : field ? this.fieldElement(field) : null;
    if (!target) {
      this.showFormError(field ? `${field}: ${message}` : message);
      return;
    }
    const text = this.tab === "json" && field && field !== "__json" ? `${field}: ${message}` : message;
    target.classList.add("invalid");
    setText($(".field-error", target), text);
    const input = $("input:not([type=radio]), select, textarea", target) || $("input", target);
    if (input) {
      input.setAttribute("aria-invalid", "true");
      input.focus();
    }
    target.scrollIntoView({ block: "center", behavior: "instant" });
  },

  showFormError(message, reload = false) {
    const box = $(".form-error", this.root);
    box.textContent = message;
    if (reload) {
      const btn = document.createElement("button");
      btn.type = "button";
      btn.className = "btn small";
      btn.textContent = "Reload the job";
      btn.classList.add("inline-btn");
      btn.addEventListener("click", () => {
        this.clearErrors();
        this.load();
      });
      box.appendChild(btn);
    }
    box.hidden = false;
    box.scrollIntoView({ block: "center", behavior: "instant" });
  },

  clearFieldError(field) {
    field.classList.remove("invalid");
    const p = $(".field-error", field);
    if (p) p.textContent = "";
    for (const input of $$("[aria-invalid]", field)) input.removeAttribute("aria-invalid");
  },

  clearErrors() {
    for (const field of $$(".field.invalid", this.root)) this.clearFieldError(field);
    const box = $(".form-error", this.root);
    box.hidden = true;
    box.textContent = "";
  },
};

// ------------------------------------------------------------------ actions (delegated clicks)

async function jobAction(button, verb) {
  const id = button.dataset.job || (current.view === jobPage ? jobPage.id : null);
  if (!id) return;
  button.disabled = true;
  try {
    const { data } = await api("POST", `/v1/jobs/${encodeURIComponent(id)}/${verb}`);
    if (verb === "trigger") {
      toast(`Triggered ${id}: run ${data.run_id}`);
      if (current.view === jobPage) jobPage.select(data.run_id);
    } else {
      toast(`${verb === "pause" ? "Paused" : "Resumed"} ${id}`);
      if (current.view === jobPage) jobPage.onJobChanged(data);
    }
    tick();
  } catch (err) {
    toast(describeError(err), { error: true });
  } finally {
    button.disabled = false;
  }
}

const actions = {
  "pause-job": (b) => jobAction(b, "pause"),
  "resume-job": (b) => jobAction(b, "resume"),
  "trigger-job": (b) => jobAction(b, "trigger"),
  "delete-job": async () => {
    const id = jobPage.id;
    const ok = await confirmDialog({
      title: `Delete ${id}?`,
      text: `The job and its schedule are removed; its pending runs are cancelled and running ones are killed. This cannot be undone.`,
      confirm: "Delete job",
    });
    if (!ok) return;
    try {
      await api("DELETE", `/v1/jobs/${encodeURIComponent(id)}`);
      toast(`Deleted ${id}`);
      location.hash = "#/";
    } catch (err) {
      toast(describeError(err), { error: true });
    }
  },
  "cancel-run": async (b) => {
    const runId = b.dataset.run;
    b.disabled = true;
    try {
      await api("POST", `/v1/runs/${encodeURIComponent(runId)}/cancel`);
      toast(`Cancelled ${runId}`);
      if (current.view === jobPage && jobPage.selected === runId) jobPage.detail = null;
      tick();
    } catch (err) {
      toast(describeError(err), { error: true });
      b.disabled = false;
    }
  },
  "show-run": (b) => jobPage.select(b.dataset.run),
  "close-run": () => jobPage.closeRun(),
  "more-runs": () => {
    jobPage.shown += RUNS_PAGE;
    jobPage.render();
  },
  "full-output": (b) => jobPage.loadFullOutput(b.dataset.run),
  tab: (b) => jobForm.switchTab(b.dataset.tab),
  "format-json": () => jobForm.formatJson(),
  "submit-json": () => jobForm.submitJson(),
  "toggle-live": (b) => {
    live.userPaused = !live.userPaused;
    b.setAttribute("aria-pressed", String(live.userPaused));
    setText(b, live.userPaused ? "Resume updates" : "Pause updates");
    if (live.userPaused) {
      clearTimeout(live.timer);
      setLive("paused", "Updates paused");
    } else tick();
  },
  "forget-token": () => {
    auth.token = "";
    toast("Token forgotten in this tab");
    tick();
  },
  "enter-token": () => {
    auth.declined = false;
    hideBanner();
    tick();
  },
};

document.addEventListener("click", (event) => {
  const el = event.target.closest("[data-action]");
  if (!el || el.disabled) return;
  const fn = actions[el.dataset.action];
  if (!fn) return;
  event.preventDefault();
  fn(el, event);
});

// Arrow keys move between the editor tabs (WAI-ARIA tabs pattern).
document.addEventListener("keydown", (event) => {
  const tab = event.target.closest && event.target.closest("[role=tab]");
  if (!tab || (event.key !== "ArrowLeft" && event.key !== "ArrowRight")) return;
  const next = tab.dataset.tab === "form" ? "json" : "form";
  jobForm.switchTab(next);
  if (jobForm.tab === next) $(`[role=tab][data-tab=${next}]`).focus();
});

// ------------------------------------------------------------------ router and polling

const current = { view: null, route: null, gen: 0 };
const live = { timer: null, inflight: null, userPaused: false, lastOk: 0 };

function parseRoute() {
  const hash = (location.hash || "#/").replace(/^#/, "") || "/";
  let m = hash.match(/^\/jobs\/([^/]+)\/edit$/);
  if (m) return { name: "edit", id: decodeURIComponent(m[1]) };
  m = hash.match(/^\/jobs\/([^/]+)$/);
  if (m) return { name: "job", id: decodeURIComponent(m[1]) };
  if (hash === "/new") return { name: "new" };
  return { name: "overview" };
}

function route() {
  const r = parseRoute();
  const main = $("#main");
  current.gen += 1; // a refresh begun for the previous view renders nothing
  jobPage.gone = false;
  if (r.name === "job") {
    current.view = jobPage;
    jobPage.mount(main, r.id);
  } else if (r.name === "edit") {
    current.view = jobForm;
    jobForm.mount(main, { mode: "edit", id: r.id });
  } else if (r.name === "new") {
    current.view = jobForm;
    jobForm.mount(main, { mode: "create" });
  } else {
    current.view = overview;
    overview.mount(main);
  }
  current.route = r;
  window.scrollTo(0, 0);
  tick();
}

async function refreshOnce() {
  const view = current.view;
  const status = await get("/v1/status");
  cluster.status = status;
  if (!cluster.nodes) cluster.nodes = (await get("/v1/nodes")).items; // for the banner, should this node go
  renderHeader(status);
  if (view && view === current.view) await view.refresh(status);
}

// One refresh at a time; the next one is planned when it ends. Hidden tabs do not poll.
async function tick() {
  clearTimeout(live.timer);
  if (live.inflight) {
    live.again = true;
    return live.inflight;
  }
  if (document.hidden) {
    setLive("paused", "Paused (tab hidden)");
    return undefined;
  }
  live.inflight = (async () => {
    try {
      await refreshOnce();
      live.lastOk = Date.now();
      if (!live.userPaused) setLive("ok", `Live · ${fmtClock(new Date().toISOString())}`);
      if (!auth.declined) hideBanner();
    } catch (err) {
      setLive("error", err.status === 401 ? "Token needed" : "Not updating");
      if (err.status === 401) showBanner("This cluster needs an API token to show its data.", { tokenButton: true });
      else if (err.status === 0) {
        const name = cluster.status ? `This node (${cluster.status.node_id})` : "This node";
        const links = otherDashboards();
        showBanner(`${name} did not answer: is it running?${links.length ? " The cluster's other nodes serve this dashboard too:" : ""}`, { links });
      } else showBanner(`Could not refresh: ${describeError(err)}`);
    } finally {
      live.inflight = null;
    }
    if (live.again) {
      live.again = false;
      tick();
      return;
    }
    if (document.hidden) setLive("paused", "Paused (tab hidden)");
    else if (!live.userPaused) live.timer = setTimeout(tick, POLL_MS);
  })();
  return live.inflight;
}

document.addEventListener("visibilitychange", () => {
  if (document.hidden) {
    clearTimeout(live.timer);
    setLive("paused", "Paused (tab hidden)");
  } else if (!live.userPaused) tick();
});

window.addEventListener("hashchange", route);

takeTokenFromFragment();
auth.token = auth.token; // show "Forget token" when this tab already has one
route();
