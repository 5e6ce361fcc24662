// The inspector page: the list of captured HTTP exchanges, kept up to date
// from the agent's event stream; the details of the one opened (summary,
// headers, raw bytes and a hex dump of request and response); the filter
// bar; replay, replay with modifications, clear and export.
//
// Everything captured was sent by someone on the internet, so it only ever
// reaches the page as text nodes (see common.js's h()).

"use strict";

import { api, formatDuration, formatSize, formatTime, h, replaceChildren, typing } from "./common.js";
import { decodeBase64, decodeText, hexDump, looksLikeText, renderBody, renderRaw } from "./bodies.js";
import { FIELDS, FilterSyntaxError, matchesAll, parseFilter } from "./filters.js";

const LIST_LIMIT = 500;
/** Exchanges loaded and kept in the list; older ones drop off its end. */

const RECONNECT_MAX = 10000;
/** The longest wait, in milliseconds, before reopening the event stream. */

const TABS = ["Summary", "Headers", "Raw", "Binary"];

const elements = {
  live: document.getElementById("live"),
  count: document.getElementById("count"),
  clear: document.getElementById("clear"),
  filterForm: document.getElementById("filter-form"),
  filter: document.getElementById("filter"),
  fields: document.getElementById("filter-fields"),
  filterError: document.getElementById("filter-error"),
  chips: document.getElementById("chips"),
  list: document.getElementById("list"),
  empty: document.getElementById("empty"),
  detail: document.getElementById("detail"),
  dialog: document.getElementById("replay-dialog"),
  replayForm: document.getElementById("replay-form"),
  replayMethod: document.getElementById("replay-method"),
  replayPath: document.getElementById("replay-path"),
  replayHeaders: document.getElementById("replay-headers"),
  replayBody: document.getElementById("replay-body"),
  replayError: document.getElementById("replay-error"),
  replayCancel: document.getElementById("replay-cancel"),
  toast: document.getElementById("toast"),
};

const state = {
  /** Each capture by id: {capture, row, order}. */
  entries: new Map(),
  /** Ids, newest first. */
  order: [],
  /** Bumped by every clear, so that a list loaded before it is dropped. */
  generation: 0,
  seen: 0,
  filters: [],
  openId: null,
  tabs: { request: "Summary", response: "Summary" },
  headerNames: new Set(),
  replayOf: null,
  replayOriginalBody: null,
};

// The list

function startTime(capture) {
  const time = Date.parse(capture.start);
  return Number.isNaN(time) ? 0 : time;
}

function statusClass(code) {
  return `status s${String(code).charAt(0)}xx`;
}

function rowContent(capture) {
  const request = capture.request || {};
  const response = capture.response;
  const status = response
    ? h("span", { class: statusClass(response.status_code), title: response.status }, String(response.status_code))
    : h("span", { class: "status pending", title: "waiting for the response" }, "…");
  return [
    h("span", { class: "method" }, request.method || ""),
    h("span", { class: "path", title: request.uri || "" }, request.uri || ""),
    status,
    h("span", { class: "duration" }, response ? formatDuration(capture.duration) : ""),
    h("span", { class: "time" }, formatTime(capture.start)),
  ];
}

function makeRow(capture) {
  const button = h("button", {
    type: "button",
    class: "row",
    tabindex: "-1",
    dataset: { id: capture.id },
    onclick: () => openCapture(capture.id, false),
  });
  return h("li", { dataset: { id: capture.id } }, button);
}

function fillRow(entry) {
  const button = entry.row.firstChild;
  replaceChildren(button, rowContent(entry.capture));
  const request = entry.capture.request || {};
  const response = entry.capture.response;
  const label = `${request.method} ${request.uri}, ${response ? response.status : "pending"}`;
  button.setAttribute("aria-label", label);
  entry.row.hidden = !matchesAll(state.filters, entry.capture);
}

function rememberHeaderNames(capture) {
  const before = state.headerNames.size;
  for (const message of [capture.request, capture.response]) {
    for (const name of Object.keys((message && message.headers) || {})) {
      if (state.headerNames.size < 60) {
        state.headerNames.add(name);
      }
    }
  }
  if (state.headerNames.size !== before) {
    suggestFields();
  }
}

/**
 * Add a capture to the list, or update its row when the list has it.
 *
 * @param {Object} capture - as the API gives it.
 * @param {boolean} openFirst - open it if no capture is open.
 */
function upsert(capture, openFirst) {
  const existing = state.entries.get(capture.id);
  if (existing) {
    existing.capture = capture;
    fillRow(existing);
  } else {
    const entry = { capture, row: makeRow(capture), order: state.seen++ };
    state.entries.set(capture.id, entry);
    fillRow(entry);
    insertInOrder(entry);
    if (state.order.length > LIST_LIMIT) {
      drop(state.order[state.order.length - 1]);
    }
  }
  rememberHeaderNames(capture);
  if (state.openId === capture.id) {
    renderDetail();
  } else if (state.openId === null && openFirst) {
    openCapture(capture.id, false);
  }
  updateCount();
}

function newer(first, second) {
  const difference = startTime(first.capture) - startTime(second.capture);
  return difference ? difference > 0 : first.order > second.order;
}

function insertInOrder(entry) {
  let index = 0;
  while (index < state.order.length && !newer(entry, state.entries.get(state.order[index]))) {
    index++;
  }
  const before = index < state.order.length ? state.entries.get(state.order[index]).row : null;
  elements.list.insertBefore(entry.row, before);
  state.order.splice(index, 0, entry.capture.id);
  if (!elements.list.querySelector("button.row[tabindex='0']")) {
    entry.row.firstChild.tabIndex = 0;
  }
}

function drop(id) {
  const entry = state.entries.get(id);
  if (!entry) {
    return;
  }
  entry.row.remove();
  state.entries.delete(id);
  state.order.splice(state.order.indexOf(id), 1);
  if (state.openId === id) {
    state.openId = null;
    renderDetail();
  }
}

function clearList() {
  state.generation++;
  state.entries.clear();
  state.order = [];
  state.openId = null;
  elements.list.replaceChildren();
  renderDetail();
  updateCount();
}

function visibleRows() {
  return Array.from(elements.list.querySelectorAll("li:not([hidden]) > button.row"));
}

function updateCount() {
  const total = state.order.length;
  const shown = visibleRows().length;
  elements.empty.hidden = total > 0;
  if (state.filters.length) {
    elements.count.textContent = `Filtered Requests: matched ${shown} of ${total}`;
  } else {
    elements.count.textContent = total === 1 ? "1 request" : `${total} requests`;
  }
  elements.count.dataset.shown = String(shown);
  elements.count.dataset.total = String(total);
}

function applyFilters() {
  for (const entry of state.entries.values()) {
    entry.row.hidden = !matchesAll(state.filters, entry.capture);
  }
  updateCount();
}

// Loading and the event stream

async function load() {
  const generation = state.generation;
  try {
    const answer = await api("GET", `/api/requests/http?limit=${LIST_LIMIT}`);
    if (generation !== state.generation) {
      return;
    }
    for (const capture of (answer.requests || []).slice().reverse()) {
      upsert(capture, false);
    }
    if (state.openId === null && state.order.length) {
      openCapture(state.order[0], false);
    }
  } catch (error) {
    showToast(`Could not load the requests: ${error.message}`, true);
  }
}

function setLive(stateName, text) {
  elements.live.dataset.state = stateName;
  elements.live.textContent = text;
}

function connect(delay) {
  const source = new EventSource("/api/events");
  source.addEventListener("open", () => {
    delay = 500;
    setLive("live", "live");
    load();
  });
  source.addEventListener("capture", (event) => {
    upsert(JSON.parse(event.data), true);
  });
  source.addEventListener("clear", () => clearList());
  source.addEventListener("error", () => {
    if (source.readyState === EventSource.CLOSED) {
      // The browser gives up on some failures (an error status, say):
      // start again, waiting longer each time.
      setLive("down", "disconnected, retrying…");
      setTimeout(() => connect(Math.min(delay * 2, RECONNECT_MAX)), delay);
    } else {
      setLive("down", "reconnecting…");
    }
  });
}

// The details

function headerValue(headers, name) {
  const wanted = name.toLowerCase();
  for (const [key, values] of Object.entries(headers || {})) {
    if (key.toLowerCase() === wanted && values.length) {
      return values[0];
    }
  }
  return "";
}

function definitions(pairs) {
  return h(
    "dl",
    { class: "summary" },
    pairs.filter(([, value]) => value !== null && value !== undefined && value !== "").map(([term, value]) => [h("dt", null, term), h("dd", null, value)])
  );
}

function queryTable(uri) {
  const query = (uri || "").split("#")[0].split("?").slice(1).join("?");
  if (!query) {
    return null;
  }
  const fields = Array.from(new URLSearchParams(query));
  return [
    h("h4", null, "Query parameters"),
    h("table", { class: "fields" }, h("tbody", null, fields.map(([name, value]) => h("tr", null, h("th", { scope: "row" }, name), h("td", null, value))))),
  ];
}

function headersTable(headers) {
  const rows = [];
  for (const [name, values] of Object.entries(headers || {})) {
    for (const value of values) {
      rows.push(h("tr", null, h("th", { scope: "row" }, name), h("td", null, value)));
    }
  }
  if (!rows.length) {
    return h("p", { class: "muted" }, "No headers.");
  }
  return h("table", { class: "fields headers" }, h("tbody", null, rows));
}

function summaryPanel(part, capture) {
  const message = capture[part];
  const contentType = headerValue(message.headers, "content-type");
  const body = renderBody(
    decodeBase64(message.body),
    contentType,
    message.body_size || 0,
    Boolean(message.truncated),
    headerValue(message.headers, "content-encoding")
  );
  if (part === "request") {
    return [
      definitions([
        ["Method", message.method],
        ["URL", message.uri],
        ["Protocol", message.proto],
        ["Time", `${formatTime(capture.start)} (${new Date(capture.start).toLocaleDateString()})`],
        ["Client", capture.remote_addr],
        ["Tunnel", capture.tunnel_name],
      ]),
      queryTable(message.uri),
      h("h4", null, "Body"),
      body,
    ];
  }
  return [
    definitions([
      ["Status", message.status],
      ["Protocol", message.proto],
      ["Duration", formatDuration(capture.duration)],
      ["Size", formatSize(message.body_size || 0)],
    ]),
    h("h4", null, "Body"),
    body,
  ];
}

function panelContent(part, tab, capture) {
  const message = capture[part];
  const contentType = headerValue(message.headers, "content-type");
  switch (tab) {
    case "Summary":
      return summaryPanel(part, capture);
    case "Headers":
      return headersTable(message.headers);
    case "Raw":
      return renderRaw(decodeBase64(message.raw), contentType, Boolean(message.truncated));
    default:
      return h("pre", { class: "code hex" }, hexDump(decodeBase64(message.raw)));
  }
}

function selectTab(part, tab, focus) {
  state.tabs[part] = tab;
  const section = elements.detail.querySelector(`section.part[data-part="${part}"]`);
  if (!section || !section.dataset.ready) {
    return;
  }
  const entry = state.entries.get(state.openId);
  for (const button of section.querySelectorAll("[role=tab]")) {
    const selected = button.dataset.tab === tab;
    button.setAttribute("aria-selected", String(selected));
    button.tabIndex = selected ? 0 : -1;
    if (selected && focus) {
      button.focus();
    }
  }
  const panel = section.querySelector("[role=tabpanel]");
  panel.setAttribute("aria-labelledby", `${part}-tab-${tab}`);
  panel.dataset.tab = tab;
  replaceChildren(panel, panelContent(part, tab, entry.capture));
}

function tabKeys(part, event) {
  const index = TABS.indexOf(state.tabs[part]);
  const moves = { ArrowRight: 1, ArrowLeft: -1 };
  if (event.key in moves) {
    selectTab(part, TABS[(index + moves[event.key] + TABS.length) % TABS.length], true);
    event.preventDefault();
  } else if (event.key === "Home" || event.key === "End") {
    selectTab(part, event.key === "Home" ? TABS[0] : TABS[TABS.length - 1], true);
    event.preventDefault();
  }
}

function partSection(part, capture) {
  const title = part === "request" ? "Request" : "Response";
  if (!capture[part]) {
    return h("section", { class: "part", dataset: { part } }, h("h3", null, title), h("p", { class: "muted pending-note" }, "Waiting for the response…"));
  }
  const tabs = h(
    "div",
    { class: "tabs", role: "tablist", "aria-label": `${title} views`, onkeydown: (event) => tabKeys(part, event) },
    TABS.map((tab) =>
      h("button", { type: "button", role: "tab", id: `${part}-tab-${tab}`, dataset: { tab }, "aria-controls": `${part}-panel`, onclick: () => selectTab(part, tab, false) }, tab)
    )
  );
  const section = h(
    "section",
    { class: "part", dataset: { part, ready: "yes" } },
    h("div", { class: "part-head" }, h("h3", null, title), tabs),
    h("div", { class: "panel", role: "tabpanel", id: `${part}-panel`, tabindex: "0" })
  );
  return section;
}

function replayLink(id) {
  if (!state.entries.has(id)) {
    return id;
  }
  return h("a", { href: `#${id}`, onclick: (event) => { event.preventDefault(); openCapture(id, false); } }, id);
}

function renderDetail() {
  const entry = state.entries.get(state.openId);
  if (!entry) {
    replaceChildren(elements.detail, h("div", { class: "placeholder" }, h("p", null, "Select a request to see its summary, headers and raw bytes.")));
    return;
  }
  const capture = entry.capture;
  const request = capture.request;
  const response = capture.response;
  const status = response
    ? h("span", { class: statusClass(response.status_code) }, response.status)
    : h("span", { class: "status pending" }, "pending");
  const head = h(
    "div",
    { class: "detail-head" },
    h("h2", null, h("span", { class: "method" }, request.method), " ", h("span", { class: "path" }, request.uri)),
    h(
      "div",
      { class: "actions" },
      h("button", { type: "button", class: "button primary", id: "replay", onclick: () => replay(capture), title: "Send this request to the upstream again (r)" }, "Replay"),
      h("button", { type: "button", class: "button", id: "replay-modified", onclick: () => openReplayDialog(capture), title: "Edit the request, then send it (e)" }, "Replay with Modifications")
    ),
    h(
      "p",
      { class: "meta" },
      status,
      h("span", null, response ? formatDuration(capture.duration) : ""),
      h("span", null, formatTime(capture.start)),
      h("span", null, capture.remote_addr ? `from ${capture.remote_addr}` : ""),
      h("span", null, capture.tunnel_name ? `tunnel ${capture.tunnel_name}` : ""),
      capture.replay_of ? h("span", { class: "replay-of" }, "replay of ", replayLink(capture.replay_of)) : null
    )
  );
  const scroll = elements.detail.scrollTop;
  replaceChildren(elements.detail, head, partSection("request", capture), partSection("response", capture));
  elements.detail.dataset.id = capture.id;
  for (const part of ["request", "response"]) {
    selectTab(part, state.tabs[part], false);
  }
  elements.detail.scrollTop = scroll;
}

function openCapture(id, focusDetail) {
  const previous = state.openId;
  state.openId = id;
  for (const button of elements.list.querySelectorAll("button.row")) {
    const open = button.dataset.id === id;
    button.classList.toggle("open", open);
    if (open) {
      button.setAttribute("aria-current", "true");
    } else {
      button.removeAttribute("aria-current");
    }
  }
  if (previous !== id) {
    elements.detail.scrollTop = 0;
  }
  renderDetail();
  if (focusDetail) {
    elements.detail.focus();
  }
}

// Moving in the list

function moveFocus(step) {
  const rows = visibleRows();
  if (!rows.length) {
    return;
  }
  let index = rows.indexOf(document.activeElement);
  if (index < 0) {
    index = rows.findIndex((row) => row.dataset.id === state.openId);
    index = index < 0 ? (step > 0 ? -1 : rows.length) : index;
  }
  const next = rows[Math.max(0, Math.min(rows.length - 1, index + step))];
  for (const row of elements.list.querySelectorAll("button.row")) {
    row.tabIndex = row === next ? 0 : -1;
  }
  next.focus();
  next.scrollIntoView({ block: "nearest" });
}

function focusList() {
  const rows = visibleRows();
  const open = rows.find((row) => row.dataset.id === state.openId);
  const target = open || rows[0];
  if (target) {
    for (const row of rows) {
      row.tabIndex = row === target ? 0 : -1;
    }
    target.focus();
  } else {
    elements.filter.focus();
  }
}

// Filters

function suggestFields() {
  const suggestions = [];
  for (const field of FIELDS) {
    if (field === "Duration" || field === "ResponseSize") {
      suggestions.push(`${field} > `, `${field} < `);
    } else if (field !== "Headers.") {
      suggestions.push(`${field} match `, `${field} !match `);
    }
  }
  for (const name of state.headerNames) {
    suggestions.push(`Headers.${name} match `, `Headers.${name} !match `);
  }
  replaceChildren(elements.fields, suggestions.map((value) => h("option", { value })));
}

function renderChips() {
  replaceChildren(
    elements.chips,
    state.filters.map((filter, index) =>
      h(
        "li",
        { class: "chip" },
        h("span", null, filter.label),
        h(
          "button",
          {
            type: "button",
            class: "chip-remove",
            "aria-label": `Remove the filter ${filter.label}`,
            title: "Remove this filter",
            onclick: () => removeFilter(index),
          },
          "×"
        )
      )
    )
  );
}

function showFilterError(message) {
  elements.filterError.textContent = message;
  elements.filterError.hidden = !message;
  elements.filter.setAttribute("aria-invalid", message ? "true" : "false");
}

function addFilter(text) {
  try {
    state.filters.push(parseFilter(text));
  } catch (error) {
    if (error instanceof FilterSyntaxError) {
      showFilterError(error.message);
      return;
    }
    throw error;
  }
  showFilterError("");
  elements.filter.value = "";
  renderChips();
  applyFilters();
}

function removeFilter(index) {
  state.filters.splice(index, 1);
  renderChips();
  applyFilters();
  elements.filter.focus();
}

// Replay

async function replay(capture) {
  try {
    await api("POST", "/api/requests/http", { id: capture.id, tunnel_name: capture.tunnel_name });
    showToast(`Replayed ${capture.request.method} ${capture.request.uri}`);
  } catch (error) {
    showToast(`Replay failed: ${error.message}`, true);
  }
}

const UNEDITED_HEADERS = new Set(["content-length", "transfer-encoding"]);

function openReplayDialog(capture) {
  const request = capture.request;
  const lines = [];
  for (const [name, values] of Object.entries(request.headers || {})) {
    if (!UNEDITED_HEADERS.has(name.toLowerCase())) {
      for (const value of values) {
        lines.push(`${name}: ${value}`);
      }
    }
  }
  const bytes = decodeBase64(request.body);
  const contentType = headerValue(request.headers, "content-type");
  const text = !bytes.length || looksLikeText(bytes, contentType);
  const size = formatSize(request.body_size || 0);
  state.replayOf = capture;
  // A body kept whole is sent again unless it is edited; one cut short by
  // the capture limit cannot be, so a text body starts empty and whatever
  // is typed (even nothing) replaces it.
  state.replayOriginalBody = text && !request.truncated ? decodeText(bytes, contentType) : null;
  elements.replayMethod.value = request.method;
  elements.replayPath.value = request.uri;
  elements.replayHeaders.value = lines.join("\n");
  elements.replayBody.value = state.replayOriginalBody === null ? "" : state.replayOriginalBody;
  elements.replayBody.disabled = !text;
  if (!text) {
    elements.replayBody.placeholder = `The ${size} body is not text: it is replayed as captured.`;
  } else if (request.truncated) {
    elements.replayBody.placeholder = `Only part of the ${size} body was captured: type the body to send.`;
  } else {
    elements.replayBody.placeholder = "";
  }
  elements.replayError.hidden = true;
  elements.dialog.showModal();
  elements.replayMethod.focus();
}

const TOKEN = /^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$/;

function readReplayForm() {
  const method = elements.replayMethod.value.trim();
  if (!TOKEN.test(method)) {
    throw new Error("The method is one word of letters, such as GET or POST.");
  }
  const path = elements.replayPath.value.trim();
  if (!path.startsWith("/") || /\s/.test(path)) {
    throw new Error("The path starts with / and has no spaces, such as /api/items?id=3.");
  }
  const headers = {};
  elements.replayHeaders.value.split("\n").forEach((line, index) => {
    if (!line.trim()) {
      return;
    }
    const colon = line.indexOf(":");
    const name = line.slice(0, colon).trim();
    if (colon < 1 || !TOKEN.test(name)) {
      throw new Error(`Header line ${index + 1} is not Name: value.`);
    }
    (headers[name] = headers[name] || []).push(line.slice(colon + 1).trim());
  });
  const modification = { tunnel_name: state.replayOf.tunnel_name, method, path, headers };
  if (!elements.replayBody.disabled && elements.replayBody.value !== state.replayOriginalBody) {
    modification.body = elements.replayBody.value;
  }
  return modification;
}

async function sendReplay(event) {
  event.preventDefault();
  const capture = state.replayOf;
  let modification;
  try {
    modification = readReplayForm();
  } catch (error) {
    elements.replayError.textContent = error.message;
    elements.replayError.hidden = false;
    return;
  }
  try {
    await api("POST", `/api/requests/http/${encodeURIComponent(capture.id)}/replay`, modification);
  } catch (error) {
    elements.replayError.textContent = `Replay failed: ${error.message}`;
    elements.replayError.hidden = false;
    return;
  }
  elements.dialog.close();
  showToast(`Replayed ${modification.method} ${modification.path}`);
}

// Clear

async function clearRequests() {
  try {
    await api("DELETE", "/api/requests/http");
    clearList();
  } catch (error) {
    showToast(`Could not clear the requests: ${error.message}`, true);
  }
}

// Messages

let toastTimer = null;

function showToast(message, failed) {
  elements.toast.textContent = message;
  elements.toast.hidden = false;
  elements.toast.classList.toggle("failed", Boolean(failed));
  clearTimeout(toastTimer);
  toastTimer = setTimeout(() => {
    elements.toast.hidden = true;
  }, failed ? 8000 : 3000);
}

// Keys

function shortcut(event) {
  if (event.defaultPrevented || event.ctrlKey || event.metaKey || event.altKey) {
    return;
  }
  if (typing(event)) {
    return;
  }
  const inList = elements.list.contains(document.activeElement);
  // The arrows move in the list only from the list itself or from nowhere
  // in particular; elsewhere (the details) they scroll as usual.
  const arrows = inList || document.activeElement === document.body;
  const onPage = arrows || document.activeElement === elements.detail;
  const entry = state.entries.get(state.openId);
  const digits = { Digit1: 0, Digit2: 1, Digit3: 2, Digit4: 3 };
  if (event.key === "j" || (event.key === "ArrowDown" && arrows)) {
    moveFocus(1);
  } else if (event.key === "k" || (event.key === "ArrowUp" && arrows)) {
    moveFocus(-1);
  } else if (event.key === "/") {
    elements.filter.focus();
  } else if (event.key === "Enter" && !inList && onPage && entry) {
    elements.detail.focus();
  } else if (event.key === "r" && entry) {
    replay(entry.capture);
  } else if (event.key === "e" && entry) {
    openReplayDialog(entry.capture);
  } else if (event.code in digits && entry) {
    const part = event.shiftKey ? "response" : "request";
    selectTab(part, TABS[digits[event.code]], true);
  } else if (event.key === "Escape") {
    focusList();
  } else {
    return;
  }
  event.preventDefault();
}

function filterKeys(event) {
  if (event.key === "Escape") {
    showFilterError("");
    focusList();
    event.preventDefault();
  } else if (event.key === "Backspace" && !elements.filter.value && state.filters.length) {
    removeFilter(state.filters.length - 1);
    event.preventDefault();
  }
}

function listKeys(event) {
  if (event.key === "Enter" && event.target.matches("button.row")) {
    openCapture(event.target.dataset.id, true);
    event.preventDefault();
  }
}

function start() {
  elements.filterForm.addEventListener("submit", (event) => {
    event.preventDefault();
    if (elements.filter.value.trim()) {
      addFilter(elements.filter.value);
    }
  });
  elements.filter.addEventListener("keydown", filterKeys);
  elements.filter.addEventListener("input", () => showFilterError(""));
  elements.list.addEventListener("keydown", listKeys);
  elements.clear.addEventListener("click", clearRequests);
  elements.replayForm.addEventListener("submit", sendReplay);
  elements.replayCancel.addEventListener("click", () => elements.dialog.close());
  elements.dialog.addEventListener("close", () => focusList());
  document.addEventListener("keydown", shortcut);
  suggestFields();
  updateCount();
  setLive("connecting", "connecting…");
  load();
  connect(500);
}

start();
