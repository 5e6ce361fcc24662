// What both pages of the agent's web interface share: building elements
// without ever parsing text as HTML, calling the agent's API, and showing
// times, durations, sizes and rates.

"use strict";

/**
 * Make an element. Strings and numbers among the children become text
 * nodes, so captured text is never parsed as markup.
 *
 * @param {string} tag - the element's name, e.g. "td".
 * @param {Object|null} attributes - attributes to set; "class" sets the
 *     class, keys starting with "on" add event listeners, "dataset" sets
 *     data- attributes, false, null and undefined values are left out.
 * @param {...(Node|string|number|null|Array)} children - what goes inside.
 * @returns {HTMLElement}
 */
export function h(tag, attributes, ...children) {
  const element = document.createElement(tag);
  for (const [key, value] of Object.entries(attributes || {})) {
    if (value === false || value === null || value === undefined) {
      continue;
    }
    if (key.startsWith("on")) {
      element.addEventListener(key.slice(2), value);
    } else if (key === "dataset") {
      Object.assign(element.dataset, value);
    } else {
      element.setAttribute(key, value === true ? "" : String(value));
    }
  }
  append(element, children);
  return element;
}

/**
 * Append children to an element, flattening arrays and skipping null.
 */
export function append(element, children) {
  for (const child of children) {
    if (child === null || child === undefined || child === false) {
      continue;
    }
    if (Array.isArray(child)) {
      append(element, child);
    } else if (child instanceof Node) {
      element.appendChild(child);
    } else {
      element.appendChild(document.createTextNode(String(child)));
    }
  }
  return element;
}

/**
 * Replace everything inside an element.
 */
export function replaceChildren(element, ...children) {
  element.replaceChildren();
  return append(element, children);
}

/**
 * An error the agent's API answered with.
 */
export class ApiError extends Error {
  constructor(status, message) {
    super(message);
    this.status = status;
  }
}

/**
 * Call the agent's API with JSON.
 *
 * @param {string} method - "GET", "POST" or "DELETE".
 * @param {string} path - e.g. "/api/requests/http".
 * @param {*} [body] - sent as JSON when given.
 * @returns {Promise<*>} the parsed JSON answer, or null for an empty one.
 * @throws {ApiError} with the agent's message when it answers an error.
 */
export async function api(method, path, body) {
  const init = { method, headers: { Accept: "application/json" } };
  if (method !== "GET") {
    // The agent refuses other content types on requests that change state,
    // which is what keeps other web sites from sending them.
    init.headers["Content-Type"] = "application/json";
    init.body = JSON.stringify(body === undefined ? {} : body);
  }
  const response = await fetch(path, init);
  const text = await response.text();
  if (!response.ok) {
    throw new ApiError(response.status, errorMessage(response, text));
  }
  return text ? JSON.parse(text) : null;
}

function errorMessage(response, text) {
  try {
    const parsed = JSON.parse(text);
    const detail = (parsed.details || {}).err;
    const message = parsed.msg || parsed.message || parsed.error;
    if (message && detail) {
      return `${message}: ${detail}`;
    }
    if (message || detail) {
      return String(message || detail);
    }
  } catch (ignored) {
    // Not JSON: fall back to the status line.
  }
  return `HTTP ${response.status} ${response.statusText}`.trim();
}

/**
 * @param {number} nanoseconds
 * @returns {string} e.g. "850µs", "12.3ms", "1.52s"
 */
export function formatDuration(nanoseconds) {
  if (!Number.isFinite(nanoseconds) || nanoseconds < 0) {
    return "–";
  }
  const milliseconds = nanoseconds / 1e6;
  if (milliseconds < 1) {
    return `${Math.round(nanoseconds / 1e3)}µs`;
  }
  if (milliseconds < 1000) {
    return `${milliseconds < 10 ? milliseconds.toFixed(1) : Math.round(milliseconds)}ms`;
  }
  return `${(milliseconds / 1000).toFixed(2)}s`;
}

/**
 * @param {number} size - a count of bytes.
 * @returns {string} e.g. "512 B", "1.5 KiB"
 */
export function formatSize(size) {
  if (size < 1024) {
    return `${size} B`;
  }
  const units = ["KiB", "MiB", "GiB"];
  let value = size;
  let unit = "B";
  for (const next of units) {
    if (value < 1024) {
      break;
    }
    value /= 1024;
    unit = next;
  }
  return `${value < 10 ? value.toFixed(1) : Math.round(value)} ${unit}`;
}

/**
 * @param {string} rfc3339 - a time as the API gives it.
 * @returns {string} the local time of day, with milliseconds when the
 *     time has them.
 */
export function formatTime(rfc3339) {
  const time = new Date(rfc3339);
  if (Number.isNaN(time.getTime())) {
    return String(rfc3339 || "");
  }
  const pad = (value, width = 2) => String(value).padStart(width, "0");
  const clock = `${pad(time.getHours())}:${pad(time.getMinutes())}:${pad(time.getSeconds())}`;
  const fraction = /T[0-9:]+\.[0-9]/.test(rfc3339);
  return fraction ? `${clock}.${pad(time.getMilliseconds(), 3)}` : clock;
}

/**
 * Keep a key press from being taken as a shortcut while the person types.
 *
 * @param {KeyboardEvent} event
 * @returns {boolean} whether the key went to a text field or a dialog.
 */
export function typing(event) {
  const target = event.target;
  if (!(target instanceof Element)) {
    return false;
  }
  return Boolean(
    target.closest("input, textarea, select, [contenteditable], dialog[open]")
  );
}
