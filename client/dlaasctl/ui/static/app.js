// dlaasd's dashboard: one page, a view per #/route, each kept live by server-sent events.
// No build step and no framework: the DOM, fetch, EventSource and uPlot for the charts.
"use strict";

const FINAL = ["COMPLETED", "FAILED", "HALTED"];
const STATUSES = ["QUEUED", "DOWNLOADING", "PROCESSING", "STORING", "COMPLETED", "FAILED", "HALTED"];
const page = document.getElementById("page");
let me = { uid: -1, name: "", privileged: false };
let stream = null; // the current view's EventSource
let charts = []; // the current view's uPlot charts
// for the browser tests and benchmarks/ui.py: each chart by name, and each render's time
window.dlaas = { charts: {}, renders: [] };

// --- helpers ----------------------------------------------------------------------------

const esc = (s) =>
  String(s ?? "").replace(/[&<>"']/g, (c) => ({ "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" })[c]);
const $ = (sel, root = document) => root.querySelector(sel);
const when = (iso) => (iso ? new Date(iso).toLocaleString() : "");
const status = (s) => `<span class="status ${esc(s)}" data-status="${esc(s)}">${esc(s)}</span>`;
const runLink = (id) => `<a href="#/runs/${encodeURIComponent(id)}">${esc(id)}</a>`;
const expLink = (id) => (id ? `<a href="#/experiments/${encodeURIComponent(id)}">${esc(id)}</a>` : "");
const mayAct = (run) => me.privileged || run.owner_uid === me.uid;

function bytes(n) {
  if (n == null) return "";
  const units = ["B", "KiB", "MiB", "GiB", "TiB"];
  let i = 0;
  while (n >= 1024 && i < units.length - 1) { n /= 1024; i++; }
  return `${n.toFixed(i ? 1 : 0)} ${units[i]}`;
}

function problem(text) {
  const box = $("#problem");
  box.hidden = !text;
  box.textContent = text || "";
}

async function api(method, path) {
  const resp = await fetch(path, { method, credentials: "same-origin" });
  const body = await resp.json().catch(() => ({}));
  if (!resp.ok) throw new Error(body?.error?.message || `HTTP ${resp.status}`);
  return body;
}

function live(url, handlers) {
  if (stream) stream.close();
  const es = (stream = new EventSource(url));
  $("#live").className = "";
  es.onopen = () => ($("#live").className = "on");
  es.onerror = () => ($("#live").className = "");
  es.addEventListener("problem", (e) => problem(JSON.parse(e.data).message));
  for (const [name, fn] of Object.entries(handlers)) {
    es.addEventListener(name, (e) => { problem(""); fn(JSON.parse(e.data)); });
  }
  return es;
}

function leave() {
  if (stream) stream.close();
  stream = null;
  for (const c of charts) c.destroy();
  charts = [];
  window.dlaas.charts = {};
  problem("");
}

// A line (or scatter) chart in `box`, `data` as uPlot takes it: [xs, ys1, ys2, ...].
function chart(box, title, labels, data, opts = {}) {
  const palette = ["#2563eb", "#dc2626", "#16a34a", "#9333ea", "#ea580c", "#0891b2", "#ca8a04", "#db2777"];
  box.innerHTML = `<h3>${esc(title)}</h3>`;
  const series = [{ label: opts.xLabel || "step" }].concat(
    labels.map((label, i) => ({
      label,
      stroke: palette[i % palette.length],
      width: 1.5,
      spanGaps: true,
      ...(opts.scatter ? { paths: () => null, points: { show: true, size: 7, fill: palette[i % palette.length] } } : { points: { show: false } }),
    })),
  );
  const width = Math.max(box.clientWidth - 10, 300);
  const u = new uPlot({ width, height: 240, series, scales: { x: { time: false } }, legend: { show: labels.length <= 12 }, axes: opts.axes }, data, box);
  charts.push(u);
  // the grid gives the box its width only once its neighbours are there, and again on resize
  new ResizeObserver(() => u.setSize({ width: Math.max(box.clientWidth - 10, 300), height: 240 })).observe(box);
  window.dlaas.charts[opts.key || title] = u;
  box.dataset.points = String(data[0].length);
  return u;
}

// --- the runs page ----------------------------------------------------------------------

function runsView(params) {
  const q = new URLSearchParams(params);
  const limit = 50;
  const offset = Number(q.get("offset") || 0);
  page.innerHTML = `
    <h1>Runs</h1>
    <form class="filters" id="filters">
      <select name="status"><option value="">any status</option>${STATUSES.map((s) => `<option${q.get("status") === s ? " selected" : ""}>${s}</option>`).join("")}</select>
      <input name="owner" placeholder="owner" value="${esc(q.get("owner") || "")}">
      <input name="name" placeholder="name or id" value="${esc(q.get("name") || "")}">
      <input name="experiment" placeholder="experiment id" value="${esc(q.get("experiment") || "")}">
      <button>Filter</button>
    </form>
    <div class="pager" id="pager"></div>
    <table id="runs"><thead><tr><th>id</th><th>name</th><th>status</th><th>queue</th><th>owner</th>
      <th>submitted</th><th>resources</th><th>experiment</th><th>message</th></tr></thead><tbody></tbody></table>`;
  $("#filters").addEventListener("submit", (e) => {
    e.preventDefault();
    const f = new URLSearchParams(new FormData(e.target));
    for (const [k, v] of [...f]) if (!v) f.delete(k);
    location.hash = `#/runs?${f}`;
  });
  q.set("limit", limit);
  q.set("offset", offset);
  live(`/ui/events/runs?${q}`, { runs: showRuns });

  function showRuns(data) {
    const start = performance.now();
    const body = $("#runs tbody");
    body.innerHTML = data.runs
      .map(
        (r) => `<tr data-run="${esc(r.id)}" data-status="${esc(r.status)}">
        <td>${runLink(r.id)}</td><td>${esc(r.name)}</td><td>${status(r.status)}</td>
        <td>${r.position ? `#${r.position} of ${data.queued}` : ""}</td><td>${esc(r.owner)}</td>
        <td>${when(r.submitted)}</td><td>${esc(r.cpus)} CPU, ${bytes(r.memory)}${r.gpus.length ? `, ${r.gpus.length} GPU` : ""}</td>
        <td>${expLink(r.experiment_id)}</td><td class="wrap">${esc(r.status_message)}</td></tr>`,
      )
      .join("");
    const from = data.total ? data.offset + 1 : 0;
    const to = data.offset + data.runs.length;
    const nav = (o) => { const p = new URLSearchParams(params); p.set("offset", o); return `#/runs?${p}`; };
    $("#pager").innerHTML = `<span id="count">${from}–${to} of ${data.total}</span>
      ${data.offset > 0 ? `<a href="${nav(Math.max(data.offset - limit, 0))}">newer</a>` : ""}
      ${to < data.total ? `<a href="${nav(data.offset + limit)}">older</a>` : ""}`;
    window.dlaas.renders.push({ at: start, took: performance.now() - start, ids: data.runs.map((r) => r.id) });
  }
}

// --- one run ----------------------------------------------------------------------------

async function runView(id) {
  page.innerHTML = `<h1>Run ${esc(id)} <span id="run-status"></span></h1>
    <div class="actions" id="actions"></div>
    <div class="cards" id="cards"></div>
    <h2>Metrics</h2><div class="charts" id="metrics"><p class="muted">no metrics reported yet</p></div>
    <h2>Log</h2>
    <div class="filters"><label><input type="checkbox" id="follow" checked> follow</label>
      <input id="search" placeholder="search the log"> <span id="matches" class="muted"></span></div>
    <pre id="log"></pre>
    <h2>History</h2><table id="history"><thead><tr><th>time</th><th>status</th><th>message</th></tr></thead><tbody></tbody></table>
    <h2>Results</h2><div id="files" class="muted">when the run has ended</div>`;
  let logText = "";
  let logOffset = 0;
  let lastSeq = 0;
  const series = {}; // name -> {x: [], y: []}
  const plots = {}; // name -> uPlot
  let refetching = false;

  async function loadMetrics() {
    const m = await api("GET", `/ui/runs/${encodeURIComponent(id)}/metrics`);
    lastSeq = Math.max(lastSeq, m.last_seq);
    for (const [name, s] of Object.entries(m.series)) series[name] = { x: s.x, y: s.y };
    drawMetrics();
  }

  function drawMetrics() {
    const box = $("#metrics");
    if (Object.keys(series).length && box.querySelector("p")) box.innerHTML = "";
    for (const [name, s] of Object.entries(series)) {
      if (!plots[name]) {
        const div = document.createElement("div");
        div.className = "chart";
        div.dataset.metric = name;
        box.appendChild(div);
        plots[name] = chart(div, name, [name], [s.x, s.y]);
      } else {
        plots[name].setData([s.x, s.y]);
        plots[name].root.parentElement.dataset.points = String(s.x.length);
      }
    }
  }

  function addPoints(points) {
    for (const p of points) {
      if (p.seq <= lastSeq) continue;
      lastSeq = p.seq;
      const s = (series[p.name] ||= { x: [], y: [] });
      const x = p.step ?? p.seq;
      let i = s.x.length;
      while (i > 0 && s.x[i - 1] > x) i--; // keep the steps in order
      s.x.splice(i, 0, x);
      s.y.splice(i, 0, p.value);
      if (s.x.length > 4000 && !refetching) { // too many to draw: downsampled again
        refetching = true;
        loadMetrics().finally(() => (refetching = false));
      }
    }
    drawMetrics();
  }

  function showLog() {
    const pre = $("#log");
    const term = $("#search").value.trim().toLowerCase();
    if (!term) {
      pre.textContent = logText;
      $("#matches").textContent = "";
    } else {
      const lines = logText.split("\n").filter((l) => l.toLowerCase().includes(term));
      const re = new RegExp(term.replace(/[.*+?^${}()|[\]\\]/g, "\\$&"), "gi");
      pre.innerHTML = lines.map((l) => esc(l).replace(re, (m) => `<mark>${m}</mark>`)).join("\n");
      $("#matches").textContent = `${lines.length} matching lines`;
    }
    if ($("#follow").checked) pre.scrollTop = pre.scrollHeight;
  }
  $("#search").addEventListener("input", showLog);

  function showRun(run) {
    $("#run-status").innerHTML = status(run.status);
    document.title = `${run.name} · ${run.status}`;
    const acts = [];
    if (mayAct(run) && !FINAL.includes(run.status)) acts.push(`<button class="danger" id="halt">Halt</button>`);
    if (mayAct(run) && FINAL.includes(run.status)) acts.push(`<button class="danger" id="delete">Delete</button>`);
    if ($("#actions").innerHTML === acts.join("")) return showDetails(run); // buttons kept
    $("#actions").innerHTML = acts.join("");
    $("#halt")?.addEventListener("click", () => act("POST", `/v1/runs/${encodeURIComponent(id)}/halt`, "halt"));
    $("#delete")?.addEventListener("click", () => act("DELETE", `/v1/runs/${encodeURIComponent(id)}`, "delete"));
    showDetails(run);
  }

  function showDetails(run) {
    const st = run.staging || {};
    const hp = Object.entries(run.hyperparameters || {}).map(([k, v]) => `${esc(k)}=${esc(JSON.stringify(v))}`).join(", ");
    $("#cards").innerHTML = `
      <div class="card"><dl>
        <dt>name</dt><dd>${esc(run.name)}</dd><dt>owner</dt><dd>${esc(run.owner)}</dd>
        <dt>framework</dt><dd>${esc(run.framework)}</dd><dt>image</dt><dd>${esc(run.image)}</dd>
        <dt>experiment</dt><dd>${expLink(run.experiment_id) || "none"}</dd>
        ${hp ? `<dt>hyperparameters</dt><dd>${hp}</dd>` : ""}
        <dt>message</dt><dd id="message">${esc(run.status_message)}${run.error_code ? ` [${esc(run.error_code)}]` : ""}</dd>
        ${run.position ? `<dt>queue</dt><dd>#${run.position}</dd>` : ""}
        ${run.private ? `<dt>details</dt><dd id="private">${esc(run.private)}</dd>` : ""}
      </dl></div>
      <div class="card"><dl>
        <dt>CPUs</dt><dd>${esc(run.cpus)}</dd><dt>memory</dt><dd>${bytes(run.memory)}</dd>
        <dt>GPUs</dt><dd>${run.gpus.length ? run.gpus.map(esc).join(", ") : "none"}</dd>
        <dt>learners</dt><dd>${esc(run.learners)}</dd><dt>exit code</dt><dd>${esc(run.exit_code ?? "")}</dd>
        <dt>submitted</dt><dd>${when(run.submitted)}</dd><dt>started</dt><dd>${when(run.started)}</dd>
        <dt>ended</dt><dd>${when(run.completed)}</dd>
      </dl></div>
      <div class="card"><dl>
        <dt>downloaded</dt><dd>${bytes(st.bytes_downloaded)} in ${esc(st.files_downloaded)} files, ${Number(st.download_seconds || 0).toFixed(1)} s</dd>
        <dt>cache hits</dt><dd>${esc(st.cache_hits)}</dd>
        <dt>uploaded</dt><dd>${bytes(st.bytes_uploaded)} in ${esc(st.files_uploaded)} files, ${Number(st.upload_seconds || 0).toFixed(1)} s</dd>
        <dt>results</dt><dd>${esc(run.results || "")}</dd>
      </dl></div>`;
    $("#history tbody").innerHTML = (run.history || [])
      .map((h) => `<tr><td>${when(h.time)}</td><td>${status(h.status)}</td><td class="wrap">${esc(h.message)}</td></tr>`)
      .join("");
    if (run.private) $("#files").textContent = "its owner's";
    if (run.files) {
      $("#files").innerHTML = run.files.length
        ? `<table><thead><tr><th>file</th><th>size</th></tr></thead><tbody>${run.files
            .map((f) => {
              const path = f.path ?? f.name ?? f;
              const href = `/v1/runs/${encodeURIComponent(id)}/results/${String(path).split("/").map(encodeURIComponent).join("/")}`;
              return `<tr><td><a href="${href}" download>${esc(path)}</a></td><td>${bytes(f.size)}</td></tr>`;
            })
            .join("")}</tbody></table>`
        : "no result files";
    }
  }

  async function act(method, path, what) {
    if (!confirm(`${what} ${id}?`)) return;
    try {
      await api(method, path);
      if (what === "delete") location.hash = "#/runs";
    } catch (e) {
      problem(`${what}: ${e.message}`);
    }
  }

  try {
    showRun(await api("GET", `/ui/runs/${encodeURIComponent(id)}`));
    await loadMetrics();
  } catch (e) {
    problem(e.message);
    return;
  }
  live(`/ui/events/runs/${encodeURIComponent(id)}?after=${lastSeq}&log_offset=${logOffset}`, {
    run: showRun,
    metrics: addPoints,
    log: (chunk) => {
      logText += chunk.text;
      logOffset = chunk.offset;
      if (logText.length > 2_000_000) logText = logText.slice(-1_000_000); // the tail is what matters
      showLog();
    },
  });
}

// --- experiments ------------------------------------------------------------------------

function experimentsView() {
  page.innerHTML = `<h1>Experiments</h1><table id="experiments"><thead><tr><th>id</th><th>name</th><th>status</th>
    <th>owner</th><th>trials</th><th>objective</th><th>best</th></tr></thead><tbody></tbody></table>`;
  const load = async () => {
    const data = await api("GET", "/v1/experiments?limit=200");
    $("#experiments tbody").innerHTML = data.experiments
      .map(
        (e) => `<tr data-experiment="${esc(e.id)}"><td>${expLink(e.id)}</td><td>${esc(e.name)}</td><td>${status(e.status)}</td>
        <td>${esc(e.owner)}</td><td>${esc(e.trials)}</td><td>${esc(e.objective ? `${e.objective.goal} ${e.objective.name}` : "")}</td>
        <td>${e.best_run ? runLink(e.best_run) : ""}</td></tr>`,
      )
      .join("");
  };
  load().catch((e) => problem(e.message));
  const timer = setInterval(() => load().catch((e) => problem(e.message)), 3000);
  stream = { close: () => clearInterval(timer) };
}

function experimentView(id) {
  page.innerHTML = `<h1>Experiment ${esc(id)} <span id="exp-status"></span></h1>
    <div class="cards" id="exp-cards"></div>
    <h2>Trials, best first</h2>
    <table id="trials"><thead><tr><th>#</th><th>trial</th><th>status</th><th>objective</th><th>last step</th>
      <th>ASHA</th><th>hyperparameters</th></tr></thead><tbody></tbody></table>
    <h2>All trials' curves</h2><div class="chart" id="curves"></div>
    <h2>Objective against each hyperparameter</h2><div class="charts" id="scatter"></div>
    <h2>Best configuration</h2><div class="actions"><button id="copy">Copy YAML</button></div><pre class="yaml" id="best-yaml"></pre>`;
  $("#copy").addEventListener("click", () => navigator.clipboard?.writeText($("#best-yaml").textContent));
  let drawn = "";
  live(`/ui/events/experiments/${encodeURIComponent(id)}`, {
    experiment: (e) => {
      $("#exp-status").innerHTML = status(e.status);
      const counts = Object.entries(e.counts || {}).map(([s, n]) => `${n} ${esc(s)}`).join(", ");
      $("#exp-cards").innerHTML = `<div class="card"><dl><dt>name</dt><dd>${esc(e.name)}</dd><dt>owner</dt><dd>${esc(e.owner)}</dd>
        <dt>method</dt><dd>${esc(e.method)}</dd><dt>objective</dt><dd>${esc(e.objective.goal)} ${esc(e.objective.metric || e.objective.name)}</dd>
        <dt>trials</dt><dd>${esc(e.trials)} (${counts})</dd><dt>best</dt><dd>${e.best_run ? runLink(e.best_run) : "none yet"}</dd></dl></div>`;
      $("#trials tbody").innerHTML = e.runs
        .map(
          (t, i) => `<tr data-trial="${esc(t.id)}"><td>${i + 1}</td><td>${runLink(t.id)}</td><td>${status(t.status)}</td>
          <td>${esc(t.objective_value ?? "")}</td><td>${esc(t.last_step ?? "")}</td>
          <td>${t.halted_early ? `stopped at step ${esc(t.last_step)}` : ""}</td>
          <td>${Object.entries(t.hyperparameters).map(([k, v]) => `${esc(k)}=${esc(JSON.stringify(v))}`).join(", ")}</td></tr>`,
        )
        .join("");
      $("#best-yaml").textContent = e.best_yaml || "# no trial has reported the objective yet";
      const key = JSON.stringify([e.curves, e.scatter]);
      if (key === drawn) return; // charts are redrawn only when their data changed
      drawn = key;
      for (const c of charts) c.destroy();
      charts = [];
      const ids = Object.keys(e.curves.runs);
      if (ids.length) {
        chart($("#curves"), `${e.objective.metric || e.objective.name} by trial`, ids, [e.curves.x, ...ids.map((r) => e.curves.runs[r])], { key: "curves" });
      }
      $("#scatter").innerHTML = "";
      for (const s of e.scatter) {
        const div = document.createElement("div");
        div.className = "chart";
        div.dataset.hyperparameter = s.name;
        $("#scatter").appendChild(div);
        const axes = s.labels.length ? [{ values: (u, ticks) => ticks.map((t) => s.labels[t] ?? "") }, {}] : undefined;
        chart(div, `objective vs ${s.name}`, [e.objective.metric || e.objective.name], [s.x, s.y], { scatter: true, xLabel: s.name, axes, key: `vs ${s.name}` });
      }
    },
  });
}

// --- the machine ------------------------------------------------------------------------

function machineView() {
  page.innerHTML = `<h1>Machine</h1><div class="cards" id="health"></div>
    <h2>GPUs</h2><table id="gpus"><thead><tr><th>#</th><th>name</th><th>memory</th><th>held by</th><th>processes</th></tr></thead><tbody></tbody></table>`;
  const meter = (used, total) => `<div class="bar"><span style="width:${total ? Math.min(100, (100 * used) / total) : 0}%"></span></div>`;
  live("/ui/events/machine", {
    machine: ({ status: s, gpus }) => {
      const ok = (x) => `<span class="${x.ok ? "ok" : "bad"}">${x.ok ? "ok" : "down"}</span>`;
      const c = s.capacity;
      $("#health").innerHTML = `
        <div class="card" id="capacity"><dl>
          <dt>CPUs</dt><dd>${esc(c.cpus_used)} of ${esc(c.cpus)} ${meter(c.cpus_used, c.cpus)}</dd>
          <dt>memory</dt><dd>${bytes(c.memory_used)} of ${bytes(c.memory)} ${meter(c.memory_used, c.memory)}</dd>
          <dt>GPUs</dt><dd>${esc(c.gpus_used)} of ${esc(s.gpus.count)} (${esc(s.gpus.source)})</dd>
          <dt>runs</dt><dd>${Object.entries(s.runs).map(([k, v]) => `${v} ${esc(k)}`).join(", ") || "none"}</dd></dl></div>
        <div class="card"><dl>
          <dt>Docker</dt><dd id="docker">${ok(s.docker)} <span class="muted">${esc(s.docker.detail)}</span></dd>
          <dt>object store</dt><dd id="store">${ok(s.store)} <span class="muted">${esc(s.store.mode)} ${esc(s.store.endpoint)} ${esc(s.store.detail)}</span></dd>
          <dt>disk</dt><dd>${ok(s.disk)} ${bytes(s.disk.free)} free</dd>
          <dt>dlaasd</dt><dd>${esc(s.version)}, up ${Math.round(s.uptime_seconds / 60)} min</dd></dl></div>`;
      $("#gpus tbody").innerHTML = gpus.length
        ? gpus
            .map(
              (g) => `<tr data-gpu="${esc(g.index)}"><td>${esc(g.index)}</td><td>${esc(g.name)}${g.simulated ? " (simulated)" : ""}</td>
              <td>${bytes(g.memory_used)} of ${bytes(g.memory_total)} ${meter(g.memory_used, g.memory_total)}</td>
              <td>${g.run ? runLink(g.run) : "free"}</td><td>${esc((g.processes || []).join(", "))}</td></tr>`,
            )
            .join("")
        : `<tr><td colspan="5" class="muted">no GPUs (${esc(s.gpus.error || s.gpus.source)})</td></tr>`;
    },
  });
}

// --- usage ----------------------------------------------------------------------------

function usageView(params) {
  const q = new URLSearchParams(params);
  if (!q.get("since")) q.set("since", "7d");
  const by = q.get("by") || "owner";
  page.innerHTML = `<h1>Usage</h1>
    <form class="filters" id="usage-form">
      <label>ended since <input name="since" value="${esc(q.get("since"))}" size="12"></label>
      <label>until <input name="until" value="${esc(q.get("until") || "")}" placeholder="now" size="12"></label>
      <label>by <select name="by">${["owner", "day", "experiment", "framework"]
        .map((b) => `<option${b === by ? " selected" : ""}>${b}</option>`)
        .join("")}</select></label>
      <button>Show</button> <span class="muted" id="who"></span>
    </form>
    <table id="usage"><thead><tr><th>${esc(by)}</th><th>runs</th><th>GPU time</th><th>CPU time held</th>
      <th>CPU time used</th><th>memory GiB × time</th><th>waiting</th><th>staging in</th><th>training</th>
      <th>storing</th></tr></thead><tbody></tbody></table>`;
  $("#usage-form").addEventListener("submit", (e) => {
    e.preventDefault();
    const f = new URLSearchParams(new FormData(e.target));
    for (const [k, v] of [...f]) if (!v) f.delete(k);
    location.hash = `#/usage?${f}`;
  });
  const h = (s) => {
    s = Number(s || 0);
    return s < 120 ? `${s.toFixed(1)} s` : s < 7200 ? `${(s / 60).toFixed(1)} min` : `${(s / 3600).toFixed(1)} h`;
  };
  const line = (g, cls = "") => `<tr class="${cls}" data-key="${esc(g.key)}"><td>${esc(g.key)}</td><td>${esc(g.runs)}</td>
    <td>${h(g.gpu_seconds)}</td><td>${h(g.cpu_seconds)}</td><td>${h(g.cpu_used_seconds)}</td><td>${h(g.memory_gib_seconds)}</td>
    <td>${h(g.waiting_seconds)}</td><td>${h(g.staging_in_seconds)}</td><td>${h(g.training_seconds)}</td><td>${h(g.storing_seconds)}</td></tr>`;
  live(`/ui/events/usage?${q}`, {
    usage: (u) => {
      $("#who").textContent = u.everyone ? "everyone's runs" : "your runs";
      $("#usage tbody").innerHTML = u.groups.map((g) => line(g)).join("") + line(u.total, "total");
    },
  });
}

// --- routing ----------------------------------------------------------------------------

function route() {
  leave();
  const [path, query] = (location.hash.slice(1) || "/runs").split("?");
  const parts = path.split("/").filter(Boolean).map(decodeURIComponent);
  for (const a of document.querySelectorAll("[data-nav]")) a.classList.toggle("active", a.dataset.nav === parts[0]);
  if (parts[0] === "runs" && parts[1]) return runView(parts[1]);
  if (parts[0] === "experiments" && parts[1]) return experimentView(parts[1]);
  if (parts[0] === "experiments") return experimentsView();
  if (parts[0] === "machine") return machineView();
  if (parts[0] === "usage") return usageView(query || "");
  return runsView(query || "");
}

window.addEventListener("hashchange", route);
(async () => {
  if (new URLSearchParams(location.search).has("token")) {
    history.replaceState(null, "", location.pathname + location.hash); // the cookie holds it now
  }
  try {
    me = await api("GET", "/ui/whoami");
    $("#me").textContent = me.name;
  } catch (e) {
    problem(e.message);
  }
  route();
})();
