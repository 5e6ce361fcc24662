// The status page: the configuration of each tunnel and the agent's global
// settings, and the metrics tables (connections, connection durations,
// HTTP requests and response times, per tunnel and for all tunnels),
// read from the agent's API and refreshed every few seconds.

"use strict";

import { api, h, replaceChildren } from "./common.js";

const REFRESH = 2000;
/** Milliseconds between two readings of the API. */

const elements = {
  live: document.getElementById("live"),
  statusLine: document.getElementById("status-line"),
  error: document.getElementById("status-error"),
  tunnels: document.getElementById("tunnels"),
  global: document.getElementById("global"),
  connections: document.getElementById("connections"),
  connectionDurations: document.getElementById("connection-durations"),
  httpRequests: document.getElementById("http-requests"),
  httpDurations: document.getElementById("http-durations"),
  updated: document.getElementById("updated"),
};

function fixed(value, digits) {
  return Number.isFinite(value) ? value.toFixed(digits) : "–";
}

const count = (value) => (Number.isFinite(value) ? String(Math.round(value)) : "–");
const rate = (value) => fixed(value, 2);
const seconds = (nanoseconds) => fixed(nanoseconds / 1e9, 3);
const milliseconds = (nanoseconds) => fixed(nanoseconds / 1e6, 2);

function settingValue(value) {
  if (value === null || value === undefined) {
    return "";
  }
  if (Array.isArray(value)) {
    return value.join(", ");
  }
  if (value !== null && typeof value === "object") {
    return JSON.stringify(value);
  }
  return String(value);
}

function tunnelCard(tunnel) {
  const config = tunnel.config || {};
  const pairs = [
    ["URL", tunnel.public_url],
    ["Addr", config.addr],
    ["Proto", tunnel.proto],
    ["Inspect", config.inspect === undefined ? "" : String(config.inspect)],
  ];
  return h(
    "section",
    { class: "card tunnel", dataset: { tunnel: tunnel.name } },
    h("h3", null, tunnel.name),
    h(
      "dl",
      { class: "summary" },
      pairs.map(([term, value]) => [h("dt", null, term), h("dd", null, value === undefined ? "" : String(value))])
    )
  );
}

/**
 * Fill one metrics table.
 *
 * @param {HTMLTableElement} table
 * @param {string[]} headings - the columns after the tunnel's name.
 * @param {Array} rows - [name, metrics] for each tunnel, then for all.
 * @param {Array} columns - [key, format] for each heading.
 */
function fillTable(table, headings, rows, columns) {
  const caption = table.querySelector("caption");
  const head = h("thead", null, h("tr", null, h("th", { scope: "col" }, "Tunnel"), headings.map((text) => h("th", { scope: "col" }, text))));
  const body = h(
    "tbody",
    null,
    rows.map(([name, metrics, all]) =>
      h(
        "tr",
        { class: all ? "all" : null, dataset: { tunnel: all ? "*" : name } },
        h("td", null, all ? "All" : name),
        columns.map(([key, format]) => {
          const value = metrics ? metrics[key] : undefined;
          const raw = Number.isFinite(value) ? String(value) : "";
          return h("td", { dataset: { metric: key, value: raw } }, format(value));
        })
      )
    )
  );
  replaceChildren(table, caption, head, body);
}

function renderMetrics(tunnels, all) {
  const conns = tunnels.map((tunnel) => [tunnel.name, (tunnel.metrics || {}).conns]);
  conns.push(["All", (all || {}).conns, true]);
  const web = tunnels.filter((tunnel) => (tunnel.metrics || {}).http && /^https?$/.test(tunnel.proto || ""));
  const http = web.map((tunnel) => [tunnel.name, tunnel.metrics.http]);
  http.push(["All", (all || {}).http, true]);
  const percentiles = ["50%", "90%", "95%", "99%"];
  const percentileKeys = ["p50", "p90", "p95", "p99"];

  fillTable(elements.connections, ["Total", "Open", "Rate 1m /s", "Rate 5m /s", "Rate 15m /s"], conns, [
    ["count", count],
    ["gauge", count],
    ["rate1", rate],
    ["rate5", rate],
    ["rate15", rate],
  ]);
  fillTable(elements.connectionDurations, percentiles, conns, percentileKeys.map((key) => [key, seconds]));
  fillTable(elements.httpRequests, ["Total", "Rate 1m /s", "Rate 5m /s", "Rate 15m /s"], http, [
    ["count", count],
    ["rate1", rate],
    ["rate5", rate],
    ["rate15", rate],
  ]);
  fillTable(elements.httpDurations, percentiles, http, percentileKeys.map((key) => [key, milliseconds]));
}

function render(status, tunnels) {
  const legs = ((status.session || {}).legs || [])
    .map((leg) => [leg.region, Number.isFinite(leg.latency) ? `${milliseconds(leg.latency)} ms` : leg.latency])
    .map((parts) => parts.filter(Boolean).join(" "))
    .filter(Boolean);
  replaceChildren(
    elements.statusLine,
    h("span", null, h("strong", null, status.status || "unknown")),
    h("span", null, `tunnelkit ${status.agent_version || ""}`),
    status.web_addr ? h("span", null, `web interface ${status.web_addr}`) : null,
    legs.length ? h("span", null, `edge latency ${legs.join(", ")}`) : null
  );
  elements.live.dataset.state = status.status === "online" ? "online" : "down";
  elements.live.textContent = status.status || "unknown";

  const list = tunnels.tunnels || [];
  replaceChildren(
    elements.tunnels,
    list.length ? list.map(tunnelCard) : h("p", { class: "muted" }, "No tunnels are running.")
  );
  const settings = Object.entries(status.config || {}).sort(([first], [second]) => first.localeCompare(second));
  replaceChildren(
    elements.global,
    h("tbody", null, settings.map(([key, value]) => h("tr", null, h("th", { scope: "row" }, key), h("td", null, settingValue(value)))))
  );
  renderMetrics(list, status.metrics);
  elements.updated.textContent = `Updated ${new Date().toLocaleTimeString()}; refreshed every ${REFRESH / 1000} s.`;
}

async function refresh() {
  try {
    const [status, tunnels] = await Promise.all([api("GET", "/api/status"), api("GET", "/api/tunnels")]);
    render(status, tunnels);
    elements.error.hidden = true;
  } catch (error) {
    elements.error.textContent = `Could not read the agent's status: ${error.message}`;
    elements.error.hidden = false;
    elements.live.dataset.state = "down";
    elements.live.textContent = "unreachable";
  }
  setTimeout(refresh, REFRESH);
}

refresh();
