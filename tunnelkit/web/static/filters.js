// The inspector's filters: "Field op value" chips such as "Path !match
// favicon", "StatusCode match 20", "Duration > 100" or
// "Headers.X-Forwarded-Proto match https", parsed from what the person
// types and checked against captured exchanges. A capture is shown when it
// passes every filter.

"use strict";

/** The fields a filter can test, as suggested in the filter bar. */
export const FIELDS = ["Path", "Method", "StatusCode", "Duration", "ResponseSize", "Headers.", "TunnelName"];

const TEXT_FIELDS = {
  path: "Path",
  method: "Method",
  statuscode: "StatusCode",
  tunnelname: "TunnelName",
};

const NUMBER_FIELDS = {
  duration: "Duration",
  responsesize: "ResponseSize",
};

const DURATION_UNITS = { "": 1, ns: 1e-6, us: 1e-3, "µs": 1e-3, ms: 1, s: 1000, m: 60000 };
const SIZE_UNITS = { "": 1, b: 1, k: 1024, kb: 1024, kib: 1024, m: 1048576, mb: 1048576, mib: 1048576 };

/**
 * A filter that could not be read, with a sentence saying what to type.
 */
export class FilterSyntaxError extends Error {}

/**
 * Read one filter.
 *
 * @param {string} text - e.g. "Path !match favicon" or "Duration > 250ms".
 * @returns {{field: string, header: string|null, op: string, value: string,
 *     number: number|null, label: string}}
 * @throws {FilterSyntaxError}
 */
export function parseFilter(text) {
  const found = /^\s*(\S+)\s+(!match|match|!=|=|>=|<=|>|<)\s*(.*?)\s*$/i.exec(text);
  if (!found) {
    throw new FilterSyntaxError(
      "Write a filter as Field op value, e.g. Path !match favicon, StatusCode match 20 or Duration > 100."
    );
  }
  const [, rawField, rawOp, value] = found;
  const op = rawOp.toLowerCase();
  const lower = rawField.toLowerCase();
  let field;
  let header = null;
  if (lower.startsWith("headers.") && rawField.length > "headers.".length) {
    field = "Headers";
    header = rawField.slice("headers.".length);
  } else {
    field = TEXT_FIELDS[lower] || NUMBER_FIELDS[lower];
  }
  if (!field) {
    throw new FilterSyntaxError(
      `Unknown field ${rawField}: use Path, Method, StatusCode, Duration, ResponseSize, TunnelName or Headers.NAME.`
    );
  }
  const numeric = Object.values(NUMBER_FIELDS).includes(field);
  const textual = op === "match" || op === "!match";
  if (numeric === textual) {
    throw new FilterSyntaxError(
      numeric
        ? `${field} is compared with >, <, >=, <=, = or !=, e.g. ${field} > ${field === "Duration" ? "100" : "1024"}.`
        : `${rawField} is matched with match or !match, e.g. ${rawField} match ${field === "StatusCode" ? "20" : "text"}.`
    );
  }
  let number = null;
  if (numeric) {
    number = parseQuantity(field, value);
  }
  const name = header === null ? field : `Headers.${header}`;
  return { field, header, op, value, number, label: `${name} ${op} ${value}`.trim() };
}

function parseQuantity(field, value) {
  const found = /^(\d+(?:\.\d+)?)\s*([a-zµ]*)$/i.exec(value);
  const units = field === "Duration" ? DURATION_UNITS : SIZE_UNITS;
  const unit = found ? found[2].toLowerCase() : "";
  if (!found || !(unit in units)) {
    throw new FilterSyntaxError(
      field === "Duration"
        ? "Give Duration in milliseconds, or with a unit: 250, 250ms, 1.5s."
        : "Give ResponseSize in bytes, or with a unit: 512, 4k, 2MiB."
    );
  }
  return Number(found[1]) * units[unit];
}

function headerValues(headers, name) {
  const wanted = name.toLowerCase();
  const values = [];
  for (const [key, list] of Object.entries(headers || {})) {
    if (key.toLowerCase() === wanted) {
      values.push(...list);
    }
  }
  return values;
}

/**
 * @returns {string[]} the texts of a capture a text filter on this field
 *     looks into.
 */
function texts(filter, capture) {
  const request = capture.request || {};
  const response = capture.response;
  switch (filter.field) {
    case "Path":
      return [request.uri || ""];
    case "Method":
      return [request.method || ""];
    case "StatusCode":
      return [response ? String(response.status_code) : ""];
    case "TunnelName":
      return [capture.tunnel_name || ""];
    default:
      return [...headerValues(request.headers, filter.header), ...headerValues(response && response.headers, filter.header)];
  }
}

function quantity(filter, capture) {
  if (filter.field === "Duration") {
    return capture.response ? (capture.duration || 0) / 1e6 : null;
  }
  return capture.response ? capture.response.body_size || 0 : null;
}

/**
 * @returns {boolean} whether a capture passes one filter. Text filters
 *     compare case-insensitively by substring; "Headers.NAME match" with
 *     no value passes any exchange that has the header. Number filters
 *     fail exchanges still waiting for their response.
 */
export function matches(filter, capture) {
  if (filter.op === "match" || filter.op === "!match") {
    const wanted = filter.value.toLowerCase();
    const found = texts(filter, capture).some((text) => text.toLowerCase().includes(wanted));
    return filter.op === "match" ? found : !found;
  }
  const actual = quantity(filter, capture);
  if (actual === null) {
    return false;
  }
  switch (filter.op) {
    case ">":
      return actual > filter.number;
    case "<":
      return actual < filter.number;
    case ">=":
      return actual >= filter.number;
    case "<=":
      return actual <= filter.number;
    case "=":
      return actual === filter.number;
    default:
      return actual !== filter.number;
  }
}

/**
 * @returns {boolean} whether a capture passes every filter.
 */
export function matchesAll(filters, capture) {
  return filters.every((filter) => matches(filter, capture));
}
