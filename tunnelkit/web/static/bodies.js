// How the inspector shows a captured body: JSON pretty-printed by its own
// parser (which also says where a broken document goes wrong, the same way
// in every browser), XML pretty-printed through DOMParser, form fields as a
// table, other text as it is, and any bytes as a hex dump.

"use strict";

import { append, formatSize, h, replaceChildren } from "./common.js";

const MAX_DEPTH = 512;
/** Deeper nesting than this is reported as an error instead of parsed. */

const HIGHLIGHT_LIMIT = 512 * 1024;
/** Bodies longer than this (in characters) are shown without colours. */

const HEX_LIMIT = 64 * 1024;
/** Bytes shown in a hex dump; the rest is summarised in one line. */

const ERROR_CONTEXT = 40;
/** Lines shown either side of a syntax error in a long document. */

const DECODED_LIMIT = 8 * 1024 * 1024;
/** Bytes of a compressed body decoded at most, so that a small body that
 * expands enormously cannot exhaust the page. */

const DECODABLE = { gzip: "gzip", "x-gzip": "gzip", deflate: "deflate" };
/** The content codings the page decodes, with the browser's names. */

// Bytes and text

/**
 * @param {string|null|undefined} encoded - base64, as the API gives bodies.
 * @returns {Uint8Array}
 */
export function decodeBase64(encoded) {
  if (!encoded) {
    return new Uint8Array(0);
  }
  const binary = atob(encoded);
  const bytes = new Uint8Array(binary.length);
  for (let index = 0; index < binary.length; index++) {
    bytes[index] = binary.charCodeAt(index);
  }
  return bytes;
}

/**
 * @param {Uint8Array} bytes
 * @param {string} [contentType] - its charset is used when it names one.
 * @returns {string} the bytes as text, bad sequences replaced.
 */
export function decodeText(bytes, contentType) {
  const charset = /;\s*charset="?([^";\s]+)/i.exec(contentType || "");
  try {
    return new TextDecoder(charset ? charset[1] : "utf-8").decode(bytes);
  } catch (unknownCharset) {
    return new TextDecoder("utf-8").decode(bytes);
  }
}

function mediaType(contentType) {
  return (contentType || "").split(";")[0].trim().toLowerCase();
}

/** @returns {boolean} whether the content type is JSON, "+json" included. */
export function isJsonType(contentType) {
  const type = mediaType(contentType);
  return type === "application/json" || type === "text/json" || type.endsWith("+json");
}

/** @returns {boolean} whether the content type is XML, "+xml" included. */
export function isXmlType(contentType) {
  const type = mediaType(contentType);
  return type === "application/xml" || type === "text/xml" || type.endsWith("+xml");
}

/** @returns {boolean} whether the content type is an HTML form's. */
export function isFormType(contentType) {
  return mediaType(contentType) === "application/x-www-form-urlencoded";
}

/**
 * @returns {boolean} whether the bytes are better shown as text: a textual
 *     content type, or no type and valid UTF-8 without NUL bytes.
 */
export function looksLikeText(bytes, contentType) {
  const type = mediaType(contentType);
  if (
    type.startsWith("text/") ||
    isJsonType(type) ||
    isXmlType(type) ||
    isFormType(type) ||
    /^application\/(javascript|ecmascript|x-javascript|graphql|yaml|x-yaml|toml|csv|x-ndjson)$/.test(type)
  ) {
    return true;
  }
  if (/^(image|audio|video|font)\//.test(type) || /(zip|pdf|protobuf|wasm)/.test(type)) {
    return false;
  }
  if (bytes.includes(0)) {
    return false;
  }
  try {
    new TextDecoder("utf-8", { fatal: true }).decode(bytes);
    return true;
  } catch (invalid) {
    return false;
  }
}

/**
 * @param {string} text
 * @param {number} offset - an index into text.
 * @returns {{line: number, column: number}} both counted from 1; the column
 *     counts characters, not UTF-16 units.
 */
export function lineColumn(text, offset) {
  const before = text.slice(0, offset);
  const lineStart = before.lastIndexOf("\n") + 1;
  const line = before.split("\n").length;
  const column = Array.from(before.slice(lineStart)).length + 1;
  return { line, column };
}

// JSON

class JsonSyntaxError extends Error {
  constructor(message, offset) {
    super(message);
    this.offset = offset;
  }
}

function describeAt(text, offset) {
  if (offset >= text.length) {
    return "the end of the text";
  }
  const character = String.fromCodePoint(text.codePointAt(offset));
  const code = character.codePointAt(0);
  if (code < 0x20 || code === 0x7f || (code >= 0x80 && code < 0xa0)) {
    return `U+${code.toString(16).toUpperCase().padStart(4, "0")}`;
  }
  return `'${character}'`;
}

/**
 * A recursive-descent reader of RFC 8259 JSON that keeps every token as it
 * was written (numbers, escapes, key order and repeated keys), so that the
 * pretty-printed document shows what was sent rather than what a
 * JavaScript value would make of it.
 */
class JsonReader {
  constructor(text) {
    this.text = text;
    this.at = 0;
  }

  fail(expected) {
    const found = describeAt(this.text, this.at);
    throw new JsonSyntaxError(`expected ${expected}, found ${found}`, this.at);
  }

  skipSpace() {
    const text = this.text;
    while (this.at < text.length) {
      const character = text[this.at];
      if (character !== " " && character !== "\t" && character !== "\n" && character !== "\r") {
        break;
      }
      this.at++;
    }
  }

  document() {
    this.skipSpace();
    const value = this.value(0);
    this.skipSpace();
    if (this.at < this.text.length) {
      const found = describeAt(this.text, this.at);
      throw new JsonSyntaxError(`unexpected ${found} after the JSON value`, this.at);
    }
    return value;
  }

  value(depth) {
    if (depth > MAX_DEPTH) {
      throw new JsonSyntaxError(`nested deeper than ${MAX_DEPTH} levels`, this.at);
    }
    const character = this.text[this.at];
    if (character === "{") {
      return this.object(depth);
    }
    if (character === "[") {
      return this.array(depth);
    }
    if (character === '"') {
      return { kind: "string", raw: this.string() };
    }
    if (character === "-" || (character >= "0" && character <= "9")) {
      return { kind: "number", raw: this.number() };
    }
    for (const literal of ["true", "false", "null"]) {
      if (character === literal[0]) {
        return { kind: "literal", raw: this.literal(literal) };
      }
    }
    this.fail("a JSON value");
  }

  object(depth) {
    const entries = [];
    this.at++;
    this.skipSpace();
    if (this.text[this.at] === "}") {
      this.at++;
      return { kind: "object", entries };
    }
    for (;;) {
      if (this.text[this.at] !== '"') {
        this.fail(entries.length ? "a quoted key after ','" : "a quoted key or '}'");
      }
      const key = this.string();
      this.skipSpace();
      if (this.text[this.at] !== ":") {
        this.fail("':' after the key");
      }
      this.at++;
      this.skipSpace();
      entries.push([key, this.value(depth + 1)]);
      this.skipSpace();
      const separator = this.text[this.at];
      if (separator === "}") {
        this.at++;
        return { kind: "object", entries };
      }
      if (separator !== ",") {
        this.fail("',' or '}'");
      }
      this.at++;
      this.skipSpace();
    }
  }

  array(depth) {
    const items = [];
    this.at++;
    this.skipSpace();
    if (this.text[this.at] === "]") {
      this.at++;
      return { kind: "array", items };
    }
    for (;;) {
      items.push(this.value(depth + 1));
      this.skipSpace();
      const separator = this.text[this.at];
      if (separator === "]") {
        this.at++;
        return { kind: "array", items };
      }
      if (separator !== ",") {
        this.fail("',' or ']'");
      }
      this.at++;
      this.skipSpace();
      if (this.text[this.at] === "]") {
        this.fail("a value after ','");
      }
    }
  }

  string() {
    const text = this.text;
    const start = this.at;
    this.at++;
    while (this.at < text.length) {
      const character = text[this.at];
      if (character === '"') {
        this.at++;
        return text.slice(start, this.at);
      }
      if (character === "\\") {
        this.escape();
        continue;
      }
      if (character < " ") {
        throw new JsonSyntaxError(
          `control character ${describeAt(text, this.at)} in a string; escape it`,
          this.at
        );
      }
      this.at++;
    }
    throw new JsonSyntaxError("unterminated string: expected '\"'", this.at);
  }

  escape() {
    const text = this.text;
    const code = text[this.at + 1];
    if (code !== undefined && '"\\/bfnrt'.includes(code)) {
      this.at += 2;
      return;
    }
    if (code === "u") {
      for (let index = 2; index < 6; index++) {
        if (!/[0-9a-fA-F]/.test(text[this.at + index] || "")) {
          this.at += index;
          this.fail("a hexadecimal digit of a \\u escape");
        }
      }
      this.at += 6;
      return;
    }
    this.at++;
    this.fail("an escape character (one of \" \\ / b f n r t u)");
  }

  digits(expected) {
    const start = this.at;
    while (this.text[this.at] >= "0" && this.text[this.at] <= "9") {
      this.at++;
    }
    if (this.at === start) {
      this.fail(expected);
    }
  }

  number() {
    const start = this.at;
    if (this.text[this.at] === "-") {
      this.at++;
    }
    if (this.text[this.at] === "0") {
      this.at++;
      if (this.text[this.at] >= "0" && this.text[this.at] <= "9") {
        throw new JsonSyntaxError("a number may not start with 0 followed by digits", this.at);
      }
    } else {
      this.digits("a digit");
    }
    if (this.text[this.at] === ".") {
      this.at++;
      this.digits("a digit after the decimal point");
    }
    if (this.text[this.at] === "e" || this.text[this.at] === "E") {
      this.at++;
      if (this.text[this.at] === "+" || this.text[this.at] === "-") {
        this.at++;
      }
      this.digits("a digit of the exponent");
    }
    return this.text.slice(start, this.at);
  }

  literal(word) {
    for (let index = 0; index < word.length; index++) {
      if (this.text[this.at] !== word[index]) {
        this.fail(index ? `'${word}'` : "a JSON value");
      }
      this.at++;
    }
    return word;
  }
}

/**
 * Parse JSON text, keeping its tokens as written.
 *
 * @param {string} text
 * @returns {{ok: true, value: Object} |
 *     {ok: false, message: string, offset: number, line: number, column: number}}
 */
export function parseJson(text) {
  try {
    return { ok: true, value: new JsonReader(text).document() };
  } catch (error) {
    if (!(error instanceof JsonSyntaxError)) {
      throw error;
    }
    return { ok: false, message: error.message, offset: error.offset, ...lineColumn(text, error.offset) };
  }
}

function jsonPieces(node, indent, pieces) {
  const inner = indent + "  ";
  if (node.kind === "object") {
    if (!node.entries.length) {
      pieces.push(["j-punct", "{}"]);
      return;
    }
    pieces.push(["j-punct", "{"]);
    node.entries.forEach(([key, value], index) => {
      pieces.push([null, "\n" + inner], ["j-key", key], ["j-punct", ": "]);
      jsonPieces(value, inner, pieces);
      if (index < node.entries.length - 1) {
        pieces.push(["j-punct", ","]);
      }
    });
    pieces.push([null, "\n" + indent], ["j-punct", "}"]);
  } else if (node.kind === "array") {
    if (!node.items.length) {
      pieces.push(["j-punct", "[]"]);
      return;
    }
    pieces.push(["j-punct", "["]);
    node.items.forEach((item, index) => {
      pieces.push([null, "\n" + inner]);
      jsonPieces(item, inner, pieces);
      if (index < node.items.length - 1) {
        pieces.push(["j-punct", ","]);
      }
    });
    pieces.push([null, "\n" + indent], ["j-punct", "]"]);
  } else {
    const kinds = { string: "j-str", number: "j-num", literal: "j-lit" };
    pieces.push([kinds[node.kind], node.raw]);
  }
}

/**
 * @param {Object} value - what parseJson read.
 * @returns {string} the document indented by two spaces.
 */
export function prettyJson(value) {
  const pieces = [];
  jsonPieces(value, "", pieces);
  return pieces.map((piece) => piece[1]).join("");
}

function renderPieces(pieces, className) {
  const total = pieces.reduce((sum, piece) => sum + piece[1].length, 0);
  if (total > HIGHLIGHT_LIMIT) {
    return h("pre", { class: className }, pieces.map((piece) => piece[1]).join(""));
  }
  return h(
    "pre",
    { class: className },
    pieces.map(([kind, text]) => (kind ? h("span", { class: kind }, text) : text))
  );
}

// Syntax errors

/**
 * Show a document that failed to parse: the message, and its lines
 * numbered with the one at fault marked and the character at fault
 * highlighted.
 *
 * @param {string} kind - "JSON" or "XML".
 * @param {string} text - the document.
 * @param {string} message - what is wrong.
 * @param {number} line - the line at fault, from 1.
 * @param {number} column - the character at fault in it, from 1.
 * @param {boolean} truncated - whether the capture cut the body short.
 */
export function renderSyntaxError(kind, text, message, line, column, truncated) {
  const lines = text.split("\n");
  const first = lines.length > ERROR_CONTEXT * 4 ? Math.max(1, line - ERROR_CONTEXT) : 1;
  const last = lines.length > ERROR_CONTEXT * 4 ? Math.min(lines.length, line + ERROR_CONTEXT) : lines.length;
  const width = String(last).length;
  const rows = [];
  if (first > 1) {
    rows.push(h("div", { class: "line elided" }, `… ${first - 1} lines before`));
  }
  for (let number = first; number <= last; number++) {
    const content = lines[number - 1].replace(/\r$/, "");
    const gutter = h("span", { class: "gutter", "aria-hidden": "true" }, String(number).padStart(width));
    if (number !== line) {
      rows.push(h("div", { class: "line" }, gutter, content));
      continue;
    }
    const characters = Array.from(content);
    const at = characters[column - 1];
    rows.push(
      h(
        "div",
        { class: "line error-line", dataset: { line: String(line) } },
        gutter,
        characters.slice(0, column - 1).join(""),
        h("mark", { class: "error-at", title: message }, at === undefined ? " " : at),
        characters.slice(column).join("")
      )
    );
  }
  if (last < lines.length) {
    rows.push(h("div", { class: "line elided" }, `… ${lines.length - last} lines after`));
  }
  return h(
    "div",
    { class: "syntax-error" },
    h(
      "p",
      {
        class: "error-message",
        role: "alert",
        dataset: { kind, line: String(line), column: String(column) },
      },
      h("strong", null, `${kind} syntax error`),
      ` at line ${line}, column ${column}: ${message}`,
      truncated ? " (the body was cut short by the capture limit, which may be the cause)" : ""
    ),
    h("pre", { class: "numbered" }, rows)
  );
}

// XML

function escapeXml(text, quotes) {
  const escaped = text.replace(/&/g, "&amp;").replace(/</g, "&lt;").replace(/>/g, "&gt;");
  return quotes ? escaped.replace(/"/g, "&quot;") : escaped;
}

function xmlPieces(node, indent, pieces) {
  const inner = indent + "  ";
  switch (node.nodeType) {
    case Node.ELEMENT_NODE: {
      pieces.push([null, indent], ["x-tag", `<${node.nodeName}`]);
      for (const attribute of node.attributes) {
        pieces.push([null, " "], ["x-attr", attribute.name], ["x-punct", "="]);
        pieces.push(["x-val", `"${escapeXml(attribute.value, true)}"`]);
      }
      const children = Array.from(node.childNodes).filter(
        (child) => child.nodeType !== Node.TEXT_NODE || child.data.trim()
      );
      if (!children.length) {
        pieces.push(["x-tag", "/>"], [null, "\n"]);
        return;
      }
      pieces.push(["x-tag", ">"]);
      if (children.length === 1 && children[0].nodeType === Node.TEXT_NODE && !children[0].data.trim().includes("\n")) {
        pieces.push(["x-text", escapeXml(children[0].data.trim(), false)]);
      } else {
        pieces.push([null, "\n"]);
        for (const child of children) {
          xmlPieces(child, inner, pieces);
        }
        pieces.push([null, indent]);
      }
      pieces.push(["x-tag", `</${node.nodeName}>`], [null, "\n"]);
      return;
    }
    case Node.TEXT_NODE:
      pieces.push([null, indent], ["x-text", escapeXml(node.data.trim(), false)], [null, "\n"]);
      return;
    case Node.CDATA_SECTION_NODE:
      pieces.push([null, indent], ["x-text", `<![CDATA[${node.data}]]>`], [null, "\n"]);
      return;
    case Node.COMMENT_NODE:
      pieces.push([null, indent], ["x-comment", `<!--${node.data}-->`], [null, "\n"]);
      return;
    case Node.PROCESSING_INSTRUCTION_NODE:
      pieces.push([null, indent], ["x-comment", `<?${node.target} ${node.data}?>`], [null, "\n"]);
      return;
    case Node.DOCUMENT_TYPE_NODE: {
      let declaration = `<!DOCTYPE ${node.name}`;
      if (node.publicId) {
        declaration += ` PUBLIC "${node.publicId}" "${node.systemId}"`;
      } else if (node.systemId) {
        declaration += ` SYSTEM "${node.systemId}"`;
      }
      pieces.push([null, indent], ["x-comment", declaration + ">"], [null, "\n"]);
      return;
    }
    default:
      return;
  }
}

/**
 * Parse XML with the browser's parser.
 *
 * @param {string} text
 * @returns {{ok: true, pretty: Array} |
 *     {ok: false, message: string, line: number, column: number}}
 *     pretty is a list of [class, text] pieces.
 */
export function parseXml(text) {
  const parsed = new DOMParser().parseFromString(text, "application/xml");
  const error = parsed.getElementsByTagName("parsererror")[0];
  if (error) {
    const report = error.textContent || "";
    const place = /line(?: number)?\s+(\d+),?\s+(?:at\s+)?column\s+(\d+)\s*:?\s*([^\n]*)/i.exec(report);
    if (!place) {
      return { ok: false, message: report.trim() || "not well-formed", line: 1, column: 1 };
    }
    const message = (place[3] || "not well-formed").replace(/\s*Below is.*$/, "").trim();
    return { ok: false, message, line: Number(place[1]), column: Number(place[2]) };
  }
  const pieces = [];
  const declaration = /^\s*(<\?xml[^>]*\?>)/.exec(text);
  if (declaration) {
    pieces.push(["x-comment", declaration[1]], [null, "\n"]);
  }
  for (const child of parsed.childNodes) {
    xmlPieces(child, "", pieces);
  }
  return { ok: true, pretty: pieces };
}

// Views

function renderForm(text) {
  const fields = Array.from(new URLSearchParams(text.replace(/^\?/, "")));
  if (!fields.length) {
    return h("p", { class: "muted" }, "An empty form.");
  }
  return h(
    "table",
    { class: "fields form-fields" },
    h("thead", null, h("tr", null, h("th", { scope: "col" }, "Field"), h("th", { scope: "col" }, "Value"))),
    h(
      "tbody",
      null,
      fields.map(([name, value]) => h("tr", null, h("th", { scope: "row" }, name), h("td", null, value)))
    )
  );
}

/**
 * Undo a content coding.
 *
 * @param {Uint8Array} bytes - the encoded body.
 * @param {string} coding - "gzip" or "deflate".
 * @returns {Promise<{bytes: Uint8Array, complete: boolean}>} the decoded
 *     body, and whether it was decoded whole (rather than stopped at
 *     DECODED_LIMIT).
 */
export async function decompress(bytes, coding) {
  const stream = new Blob([bytes]).stream().pipeThrough(new DecompressionStream(coding));
  const reader = stream.getReader();
  const chunks = [];
  let length = 0;
  for (;;) {
    const { done, value } = await reader.read();
    if (done) {
      break;
    }
    chunks.push(value);
    length += value.length;
    if (length >= DECODED_LIMIT) {
      reader.cancel();
      break;
    }
  }
  const decoded = new Uint8Array(Math.min(length, DECODED_LIMIT));
  let offset = 0;
  for (const chunk of chunks) {
    const part = chunk.subarray(0, decoded.length - offset);
    decoded.set(part, offset);
    offset += part.length;
  }
  return { bytes: decoded, complete: length < DECODED_LIMIT };
}

function renderEncoded(bytes, contentType, size, truncated, coding) {
  const holder = h("div", { class: "body" });
  const cannot = (why) =>
    replaceChildren(
      holder,
      h("p", { class: "muted" }, `${formatSize(size)} encoded with ${coding}${why}; see the Binary tab.`)
    );
  const name = DECODABLE[coding];
  if (!name || truncated || typeof DecompressionStream === "undefined") {
    cannot(truncated ? ", captured only in part" : "");
    return holder;
  }
  append(holder, [h("p", { class: "muted" }, `Decoding ${coding}…`)]);
  decompress(bytes, name).then(
    (decoded) => {
      const label = `decoded from ${formatSize(size)} of ${coding}` + (decoded.complete ? "" : `, first ${formatSize(decoded.bytes.length)}`);
      holder.replaceWith(renderBody(decoded.bytes, contentType, decoded.bytes.length, false, "", label));
    },
    () => cannot(", which could not be decoded")
  );
  return holder;
}

/**
 * Show a body as well as its content type allows, decoding gzip and
 * deflate first.
 *
 * @param {Uint8Array} bytes - the captured body.
 * @param {string} contentType - its Content-Type, if any.
 * @param {number} size - the whole body's size in bytes.
 * @param {boolean} truncated - whether the capture cut it short.
 * @param {string} [contentEncoding] - its Content-Encoding, if any.
 * @param {string} [decodedFrom] - how it was decoded, for its label.
 * @returns {HTMLElement} the view, which fills in later for an encoded
 *     body.
 */
export function renderBody(bytes, contentType, size, truncated, contentEncoding, decodedFrom) {
  const coding = (contentEncoding || "").trim().toLowerCase();
  if (bytes.length && coding && coding !== "identity") {
    return renderEncoded(bytes, contentType, size, truncated, coding);
  }
  const notes = [];
  if (truncated) {
    notes.push(
      h(
        "p",
        { class: "note" },
        `Captured ${formatSize(bytes.length)} of ${formatSize(size)}: the rest went through uncaptured.`
      )
    );
  }
  if (!bytes.length) {
    return h("div", { class: "body" }, notes, h("p", { class: "muted" }, size ? "Body not captured." : "No body."));
  }
  if (!looksLikeText(bytes, contentType)) {
    return h(
      "div",
      { class: "body" },
      notes,
      h("p", { class: "muted" }, `${formatSize(size)} of binary data (${mediaType(contentType) || "no content type"}); see the Binary tab.`)
    );
  }
  const text = decodeText(bytes, contentType);
  let view;
  let label = mediaType(contentType) || "text";
  if (isJsonType(contentType)) {
    const parsed = parseJson(text);
    if (parsed.ok) {
      const pieces = [];
      jsonPieces(parsed.value, "", pieces);
      view = renderPieces(pieces, "code json");
    } else {
      view = renderSyntaxError("JSON", text, parsed.message, parsed.line, parsed.column, truncated);
    }
  } else if (isXmlType(contentType)) {
    const parsed = parseXml(text);
    if (parsed.ok) {
      view = renderPieces(parsed.pretty, "code xml");
    } else {
      view = renderSyntaxError("XML", text, parsed.message, parsed.line, parsed.column, truncated);
    }
  } else if (isFormType(contentType)) {
    view = renderForm(text);
    label = "form fields";
  } else {
    view = h("pre", { class: "code text" }, text);
  }
  const kind = `${label}, ${formatSize(size)}${decodedFrom ? ` ${decodedFrom}` : ""}`;
  return h("div", { class: "body" }, notes, h("p", { class: "body-kind muted" }, kind), view);
}

function hexByte(value) {
  return value.toString(16).padStart(2, "0");
}

/**
 * @param {Uint8Array} bytes
 * @returns {string} offset, sixteen bytes in hex and as ASCII, per line.
 */
export function hexDump(bytes) {
  const shown = Math.min(bytes.length, HEX_LIMIT);
  const lines = [];
  for (let offset = 0; offset < shown; offset += 16) {
    const row = bytes.subarray(offset, Math.min(offset + 16, shown));
    let hex = "";
    let ascii = "";
    for (let index = 0; index < 16; index++) {
      hex += index < row.length ? hexByte(row[index]) + " " : "   ";
      if (index === 7) {
        hex += " ";
      }
      if (index < row.length) {
        ascii += row[index] >= 0x20 && row[index] < 0x7f ? String.fromCharCode(row[index]) : ".";
      }
    }
    lines.push(`${offset.toString(16).padStart(8, "0")}  ${hex} |${ascii}|`);
  }
  if (bytes.length > shown) {
    lines.push(`… ${formatSize(bytes.length - shown)} more not shown`);
  }
  return lines.join("\n");
}

/**
 * Show the bytes of an exchange as they went on the wire: the head as
 * text, the body as text when it is text.
 *
 * @param {Uint8Array} raw - head and captured body.
 * @param {string} contentType - the body's Content-Type.
 * @param {boolean} truncated - whether the capture cut the body short.
 */
export function renderRaw(raw, contentType, truncated) {
  let headEnd = -1;
  for (let index = 0; index + 3 < raw.length; index++) {
    if (raw[index] === 13 && raw[index + 1] === 10 && raw[index + 2] === 13 && raw[index + 3] === 10) {
      headEnd = index + 4;
      break;
    }
  }
  const head = headEnd < 0 ? raw : raw.subarray(0, headEnd);
  const body = headEnd < 0 ? new Uint8Array(0) : raw.subarray(headEnd);
  const pieces = [new TextDecoder("latin1").decode(head)];
  if (body.length) {
    pieces.push(
      looksLikeText(body, contentType)
        ? decodeText(body, contentType)
        : h("span", { class: "muted" }, `[${formatSize(body.length)} of binary body: see the Binary tab]`)
    );
  }
  if (truncated) {
    pieces.push(h("span", { class: "muted" }, "\n[capture limit reached: the rest is not shown]"));
  }
  return h("pre", { class: "code raw" }, pieces);
}
