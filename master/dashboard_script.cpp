// The dashboard's script: refreshes the server-rendered tables every 2 s from the JSON API
// (stats/server, backends, stats/routes, status), computes rates from counter deltas, keeps 5
// minutes of requests/s and p99 for two SVG charts, and sends the actions (drain, undrain,
// weight, reload) to the same API with the session's CSRF token. Plain JavaScript for current
// browsers, no libraries: the page must work offline and unbuilt.
#include "master/dashboard_page.hpp"

namespace proxyd::master {

namespace {

constexpr std::string_view kScript = R"js("use strict";
(function () {
  const REFRESH_MS = 2000;
  const HISTORY_SECONDS = 300;
  const csrf = document.querySelector('meta[name="csrf-token"]').content;
  const message = document.getElementById("message");
  const history = [];  // {t, rps, p99}, oldest first
  let previous = null; // {t, requests, servers: {key: requests}}
  let stopped = false;

  function show(text, ok) {
    message.textContent = text;
    message.className = ok ? "ok" : "error";
  }

  // One API call with the session cookie and the CSRF token; throws the API's error message.
  async function call(method, path, body) {
    const init = { method: method, credentials: "same-origin",
                   headers: { "X-CSRF-Token": csrf, "Accept": "application/json" } };
    if (body !== undefined) {
      init.headers["Content-Type"] = "application/json";
      init.body = JSON.stringify(body);
    }
    const response = await fetch(path, init);
    let data = {};
    try { data = await response.json(); } catch (e) { /* not JSON: keep the status */ }
    if (response.status === 401) {
      stopped = true;
      throw new Error("the session has ended: reload the page to log in again");
    }
    if (!response.ok) throw new Error(data.error || ("HTTP " + response.status));
    return data;
  }

  function setText(root, selector, text) {
    const el = root.querySelector(selector);
    if (el && el.textContent !== String(text)) el.textContent = String(text);
  }

  function fixed(value, digits) {
    return (typeof value === "number" ? value : 0).toFixed(digits);
  }

  function duration(seconds) {
    const pad = (n) => String(n).padStart(2, "0");
    return Math.floor(seconds / 86400) + "d " + pad(Math.floor(seconds / 3600) % 24) + "h " +
      pad(Math.floor(seconds / 60) % 60) + "m " + pad(seconds % 60) + "s";
  }

  function cell(row, cls, text) {
    const td = document.createElement("td");
    td.className = cls;
    td.textContent = text;
    row.appendChild(td);
    return td;
  }

  // The same row the master renders (dashboard_page.cpp), for servers added since page load.
  function serverRow(upstream, s) {
    const tr = document.createElement("tr");
    tr.dataset.upstream = upstream;
    tr.dataset.server = s.id;
    ["id", "address", "health", "circuit", "drain-state", "weight-value num", "active num",
     "requests num", "rps num", "failures num", "latency num"].forEach((cls) => cell(tr, cls, ""));
    setText(tr, ".id", s.id);
    setText(tr, ".address", s.address);
    const actions = cell(tr, "actions", "");
    const button = (cls, text) => {
      const b = document.createElement("button");
      b.type = "button"; b.className = cls; b.textContent = text;
      actions.appendChild(b); actions.appendChild(document.createTextNode(" "));
    };
    button("drain", "Drain");
    button("undrain", "Undrain");
    const input = document.createElement("input");
    input.className = "weight"; input.type = "number"; input.min = "1"; input.value = s.weight;
    actions.appendChild(input); actions.appendChild(document.createTextNode(" "));
    button("set-weight", "Set weight");
    return tr;
  }

  function rowsOf(table, attribute) {
    const rows = {};
    table.querySelectorAll("tr[" + attribute + "]").forEach((tr) => { rows[rowKey(tr)] = tr; });
    return rows;
  }

  function rowKey(tr) { return tr.dataset.upstream + "\u0000" + tr.dataset.server; }

  // Rebuilds an upstream's rows only when its servers changed, so a weight being typed stays.
  function updateUpstreams(upstreams, now, seconds) {
    const table = document.getElementById("upstreams");
    const rows = rowsOf(table, "data-server");
    const seen = {};
    const servers = {};
    Object.keys(upstreams).forEach((name) => {
      let body = Array.from(table.tBodies).find((b) => b.dataset.name === name);
      if (!body) {
        body = document.createElement("tbody");
        body.className = "upstream"; body.dataset.name = name;
        const head = document.createElement("tr");
        head.className = "upstream-name";
        const th = document.createElement("th");
        th.colSpan = 12; th.textContent = name + " (" + upstreams[name].balance + ")";
        head.appendChild(th); body.appendChild(head); table.appendChild(body);
      }
      upstreams[name].servers.forEach((s) => {
        const key = name + "\u0000" + s.id;
        seen[key] = true;
        let tr = rows[key];
        if (!tr) { tr = serverRow(name, s); body.appendChild(tr); }
        const health = tr.querySelector(".health");
        health.textContent = s.healthy ? "healthy" : "down";
        health.className = "health " + (s.healthy ? "healthy" : "down");
        const drain = tr.querySelector(".drain-state");
        drain.textContent = s.drain ? "draining" : "no";
        drain.className = "drain-state" + (s.drain ? " draining" : "");
        setText(tr, ".circuit", s.circuit);
        setText(tr, ".weight-value", s.weight);
        setText(tr, ".active", s.active);
        setText(tr, ".requests", s.requests);
        setText(tr, ".failures", s.failures);
        setText(tr, ".latency", fixed(s.response_ms_ewma, 2));
        servers[key] = s.requests;
        if (previous && seconds > 0 && key in previous.servers) {
          setText(tr, ".rps", fixed(Math.max(0, s.requests - previous.servers[key]) / seconds, 1));
        }
      });
    });
    Object.keys(rows).forEach((key) => { if (!seen[key]) rows[key].remove(); });
    return servers;
  }

  function updateRoutes(routes) {
    const body = document.querySelector("#routes tbody");
    const rows = {};
    body.querySelectorAll("tr[data-route]").forEach((tr) => { rows[tr.dataset.route] = tr; });
    Object.keys(routes).forEach((name) => {
      const r = routes[name];
      let tr = rows[name];
      if (!tr) {
        tr = document.createElement("tr");
        tr.dataset.route = name;
        ["name", "requests num", "rps num", "errors num", "p50 num", "p99 num"]
          .forEach((cls) => cell(tr, cls, ""));
        setText(tr, ".name", name === "" ? "(no route)" : name);
        body.appendChild(tr);
      }
      setText(tr, ".requests", r.requests);
      setText(tr, ".rps", fixed(r.requests_per_second, 1));
      setText(tr, ".errors", fixed(r.error_rate * 100, 2) + " %");
      setText(tr, ".p50", fixed(r.latency_ms.p50, 2));
      setText(tr, ".p99", fixed(r.latency_ms.p99, 2));
    });
  }

  // The workers table, rebuilt whole: it is small and has nothing to type into.
  function updateWorkers(workers) {
    const body = document.querySelector("#workers tbody");
    const rows = workers.map((w) => {
      const tr = document.createElement("tr");
      cell(tr, "", w.slot); cell(tr, "", w.pid); cell(tr, "", w.generation);
      cell(tr, "state", w.state); cell(tr, "num", w.connections); cell(tr, "num", w.tunnels);
      return tr;
    });
    body.replaceChildren(...rows);
  }

  function updateServer(stats, rps) {
    setText(document, "#uptime", duration(stats.uptime_seconds));
    setText(document, "#generation", stats.generation);
    setText(document, "#worker-count", stats.workers);
    setText(document, "#connections", stats.connections_active);
    setText(document, "#requests", stats.requests_completed);
    setText(document, "#rps", fixed(rps, 1));
    setText(document, "#latency",
            fixed(stats.latency_ms.p50, 2) + " / " + fixed(stats.latency_ms.p99, 2) + " ms");
    setText(document, "#rate-limited", stats.rate_limited);
    setText(document, "#auth-failures", stats.auth_failures);
  }

  // A polyline of `key` over the last 5 minutes, scaled to its own maximum.
  function chart(id, key, unit) {
    const svg = document.getElementById(id);
    if (!svg) return;
    const ns = "http://www.w3.org/2000/svg";
    const width = 360, height = 90, top = 12, bottom = 4;
    const now = history.length ? history[history.length - 1].t : 0;
    const max = Math.max(1, ...history.map((p) => p[key]));
    const points = history.map((p) => {
      const x = width - (now - p.t) / HISTORY_SECONDS * width;
      const y = height - bottom - (p[key] / max) * (height - top - bottom);
      return x.toFixed(1) + "," + y.toFixed(1);
    }).join(" ");
    while (svg.firstChild) svg.removeChild(svg.firstChild);
    const line = document.createElementNS(ns, "polyline");
    line.setAttribute("points", points);
    svg.appendChild(line);
    const label = document.createElementNS(ns, "text");
    label.setAttribute("x", "2"); label.setAttribute("y", "9");
    const last = history.length ? history[history.length - 1][key] : 0;
    label.textContent = "max " + fixed(max, 1) + " " + unit + ", now " + fixed(last, 1);
    svg.appendChild(label);
  }

  async function refresh() {
    if (stopped) return;
    try {
      const [stats, backends, routes, status] = await Promise.all([
        call("GET", "/api/v1/stats/server"), call("GET", "/api/v1/backends"),
        call("GET", "/api/v1/stats/routes"), call("GET", "/api/v1/status")]);
      const now = Date.now() / 1000;
      const seconds = previous ? now - previous.t : 0;
      const rps = previous && seconds > 0
        ? Math.max(0, stats.requests_completed - previous.requests) / seconds
        : stats.requests_per_second["10s"];
      updateServer(stats, rps);
      const servers = updateUpstreams(backends.upstreams, now, seconds);
      updateRoutes(routes.routes);
      updateWorkers(status.workers);
      previous = { t: now, requests: stats.requests_completed, servers: servers };
      history.push({ t: now, rps: rps, p99: stats.latency_ms.p99 });
      while (history.length && now - history[0].t > HISTORY_SECONDS) history.shift();
      chart("chart-rps", "rps", "req/s");
      chart("chart-p99", "p99", "ms");
      setText(document, "#updated", "updated " + new Date().toLocaleTimeString());
    } catch (e) {
      show("refresh failed: " + e.message, false);
    }
  }

  async function act(description, method, path, body) {
    show(description + "…", true);
    try {
      const data = await call(method, path, body);
      show(description + ": " + (data.message || "done"), true);
      refresh();
    } catch (e) {
      show(description + " failed: " + e.message, false);
    }
  }

  document.getElementById("upstreams").addEventListener("click", (event) => {
    const button = event.target.closest("button");
    const row = button && button.closest("tr[data-server]");
    if (!row) return;
    const upstream = row.dataset.upstream, id = row.dataset.server;
    const backend = { id: id };
    let description;
    if (button.classList.contains("drain")) {
      backend.drain = true; description = "drain " + id;
    } else if (button.classList.contains("undrain")) {
      backend.drain = false; description = "undrain " + id;
    } else if (button.classList.contains("set-weight")) {
      const text = row.querySelector("input.weight").value.trim();
      // Sent as typed when it is not a whole number, so the API's own message explains.
      backend.weight = /^\d+$/.test(text) ? Number(text) : text;
      description = "weight " + text + " for " + id;
    } else {
      return;
    }
    act(description, "PUT", "/api/v1/backends/update", { upstream: upstream, backend: backend });
  });

  document.getElementById("reload").addEventListener("click", () => {
    act("reload", "POST", "/api/v1/config/reload");
  });

  refresh();
  setInterval(refresh, REFRESH_MS);
})();
)js";

}  // namespace

std::string_view dashboard_script() {
    return kScript;
}

}  // namespace proxyd::master
