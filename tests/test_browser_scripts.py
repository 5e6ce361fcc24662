"""
The inspector's scripts run in a real headless Chromium, on the pages as
L{tunnelkit.web.pages} serves them: its own JSON reader (what it accepts,
how it indents, and the line and column of each kind of error), its
filters (how they are read, which are refused, what they pass), and how it
decodes compressed bodies.

No agent runs here: the scripts are imported into the page and called with
made-up inputs, so every case is checked the same way in every run.
"""

import base64
import gzip
import json
import zlib
from typing import Any

from twisted.internet import reactor
from twisted.internet.defer import inlineCallbacks
from twisted.internet.endpoints import TCP4ServerEndpoint
from twisted.python.failure import Failure
from twisted.trial.unittest import TestCase
from twisted.web.server import Site

from tests.browser import Browser, require_browser, start_browser
from tests.e2e import LOOPBACK, Steps
from tunnelkit.web.pages import pages_resource

_IMPORT_AND_CALL = """
const [module, name, inputs, done] = arguments;
import(module).then(
  (loaded) => done(inputs.map((input) => {
    try { return loaded[name](...input); } catch (error) { return {thrown: error.message}; }
  })),
  (error) => done({importFailed: String(error)}));
"""
"""Import a module of the page and call one of its functions with each list
of arguments; what it returns (or the message of what it throws) comes
back as JSON."""


class _PagesSite(Site):
    """
    The pages alone, remembering their connections so the clean-up can
    close them.
    """

    noisy = False

    def __init__(self) -> None:
        super().__init__(pages_resource())
        self.connections: set[Any] = set()

    def buildProtocol(self, addr: Any) -> Any:
        channel = super().buildProtocol(addr)
        self.connections.add(channel)
        lost = channel.connectionLost

        def forget(reason: Failure) -> None:
            self.connections.discard(channel)
            lost(reason)

        channel.connectionLost = forget
        return channel

    def log(self, request: Any) -> None:
        pass


class ScriptTestCase(TestCase):
    """
    A browser on the inspector page, served by the pages resource alone.
    """

    timeout = 60

    @inlineCallbacks
    def setUp(self) -> Steps[None]:
        require_browser()
        site = _PagesSite()
        port = yield TCP4ServerEndpoint(reactor, 0, interface=LOOPBACK).listen(site)

        def close() -> Any:
            for channel in list(site.connections):
                channel.transport.abortConnection()
            return port.stopListening()

        self.addCleanup(close)
        self.base = f"http://{LOOPBACK}:{port.getHost().port}"
        self.browser: Browser = yield start_browser(self)
        yield self.browser.call(lambda driver: driver.get(self.base + "/inspect/http"))

    @inlineCallbacks
    def call_each(
        self, module: str, name: str, inputs: list[list[Any]]
    ) -> Steps[list[Any]]:
        """
        Call C{name} from the page's C{/static/MODULE} once with each list
        of arguments.

        @return: a Deferred firing with the results, in order.
        """

        def run(driver: Any) -> Any:
            return driver.execute_async_script(
                _IMPORT_AND_CALL, f"/static/{module}", name, inputs
            )

        results = yield self.browser.call(run)
        self.assertIsInstance(results, list, results)
        return results


VALID_JSON = [
    '{"a": 1, "b": [true, false, null], "c": {"d": "e\\u00e9\\n"}}',
    "[]",
    "{}",
    "  -0.5e+10  ",
    '[1, [2, [3, {"x": []}]], {}]',
    '{"same": 1, "same": 2}',
    '"\\"\\\\\\/\\b\\f\\n\\r\\t"',
    "12345678901234567890123",
]

BROKEN_JSON = [
    ('{"a": 1,}', 1, 9, "expected a quoted key after ','"),
    ("[1, 2", 1, 6, "expected ',' or ']'"),
    ('{\n  "name": "x",\n  "tags": ["a",]\n}', 3, 16, "expected a value after ','"),
    ('{"a" 1}', 1, 6, "expected ':' after the key"),
    ("", 1, 1, "expected a JSON value"),
    ('{"a":\n tru}', 2, 5, "expected 'true'"),
    ("[01]", 1, 3, "a number may not start with 0"),
    ('"abc\ndef"', 1, 5, "control character U+000A"),
    ('{"a":1} x', 1, 9, "unexpected 'x' after the JSON value"),
    ('"\\x"', 1, 3, "expected an escape character"),
    ("1.", 1, 3, "expected a digit after the decimal point"),
    ('["\\u12G4"]', 1, 7, "expected a hexadecimal digit"),
    ('["é", x]', 1, 7, "expected a JSON value, found 'x'"),
    ("{'a': 1}", 1, 2, "expected a quoted key or '}'"),
    ("[" * 600, 1, 514, "nested deeper than 512 levels"),
]


class JsonReaderTests(ScriptTestCase):
    """
    C{parseJson} in C{bodies.js} reads RFC 8259 JSON, and reports where a
    broken document goes wrong.
    """

    @inlineCallbacks
    def test_valid_documents_pretty_print_to_the_same_value(self) -> Steps[None]:
        """
        Every valid document is read, and its indented form is the same
        JSON value as the original, one member or element a line.
        """
        parsed = yield self.call_each(
            "bodies.js", "parseJson", [[text] for text in VALID_JSON]
        )
        pretty = yield self.call_each(
            "bodies.js", "prettyJson", [[result["value"]] for result in parsed]
        )

        for text, result, indented in zip(VALID_JSON, parsed, pretty):
            self.assertTrue(result["ok"], (text, result))
            self.assertEqual(json.loads(indented), json.loads(text), indented)
        self.assertEqual(
            pretty[0],
            '{\n  "a": 1,\n  "b": [\n    true,\n    false,\n    null\n  ],\n'
            '  "c": {\n    "d": "e\\u00e9\\n"\n  }\n}',
        )

    @inlineCallbacks
    def test_errors_have_line_and_column(self) -> Steps[None]:
        """
        Each kind of error is reported at the line and the column (both
        from 1, in characters) of the character at fault, with a message
        saying what was expected; Python's reader refuses the same
        documents.
        """
        results = yield self.call_each(
            "bodies.js", "parseJson", [[text] for text, *_ in BROKEN_JSON]
        )

        for (text, line, column, message), result in zip(BROKEN_JSON, results):
            self.assertRaises(ValueError, json.loads, text)
            self.assertFalse(result["ok"], text)
            self.assertEqual(
                (result["line"], result["column"]), (line, column), (text, result)
            )
            self.assertIn(message, result["message"], text)


CAPTURE = {
    "id": "one",
    "tunnel_name": "web",
    "duration": 150_000_000,
    "request": {
        "method": "GET",
        "uri": "/favicon.ico?size=32",
        "headers": {"X-Forwarded-Proto": ["https"], "Accept": ["image/*"]},
    },
    "response": {
        "status_code": 404,
        "body_size": 2048,
        "headers": {"Content-Type": ["text/plain"]},
    },
}

PENDING = {
    "id": "two",
    "tunnel_name": "web",
    "duration": 0,
    "request": {"method": "POST", "uri": "/api", "headers": {}},
    "response": None,
}

FILTERS = [
    ("Path match favicon", True, False),
    ("Path !match favicon", False, True),
    ("path match FAVICON", True, False),
    ("StatusCode match 40", True, False),
    ("StatusCode !match 20", True, True),
    ("Method match po", False, True),
    ("Duration > 100", True, False),
    ("Duration < 0.1s", False, False),
    ("Duration >= 150ms", True, False),
    ("ResponseSize > 2k", False, False),
    ("ResponseSize = 2048", True, False),
    ("Headers.X-Forwarded-Proto match https", True, False),
    ("Headers.x-forwarded-proto !match http", False, True),
    ("Headers.Content-Type match text/", True, False),
    ("Headers.Accept match", True, False),
    ("TunnelName match web", True, True),
]

REFUSED_FILTERS = [
    ("Size match 3", "Unknown field Size"),
    ("Duration match 3", "Duration is compared with"),
    ("Path > 3", "Path is matched with match or !match"),
    ("Duration > soon", "Give Duration in milliseconds"),
    ("favicon", "Write a filter as Field op value"),
]


class FilterTests(ScriptTestCase):
    """
    The filters of C{filters.js}: C{Field op value}, read by C{parseFilter}
    and checked by C{matches}.
    """

    @inlineCallbacks
    def test_filters_pass_what_they_should(self) -> Steps[None]:
        """
        Each filter passes the exchanges it describes: text fields by
        substring ignoring case, C{!match} the others, numbers compared in
        milliseconds or bytes (with units), headers of request and
        response by name ignoring case; number filters never pass an
        exchange still waiting for its response.
        """
        parsed = yield self.call_each(
            "filters.js", "parseFilter", [[text] for text, *_ in FILTERS]
        )
        checks = [
            [filter, capture] for filter in parsed for capture in (CAPTURE, PENDING)
        ]
        passed = yield self.call_each("filters.js", "matches", checks)

        expected = [verdict for _, *verdicts in FILTERS for verdict in verdicts]
        self.assertEqual(
            list(zip([text for text, *_ in FILTERS for _ in (1, 2)], passed)),
            list(zip([text for text, *_ in FILTERS for _ in (1, 2)], expected)),
        )

    @inlineCallbacks
    def test_refused_filters_say_why(self) -> Steps[None]:
        """
        A filter on an unknown field, with an op its field does not take,
        with a quantity that is not one, or without an op, is refused with
        a sentence saying how to write it.
        """
        results = yield self.call_each(
            "filters.js", "parseFilter", [[text] for text, _ in REFUSED_FILTERS]
        )

        for (text, message), result in zip(REFUSED_FILTERS, results):
            self.assertIn(message, result.get("thrown", ""), (text, result))


_RENDER_BODY = """
const [encoded, contentType, size, truncated, coding, done] = arguments;
import("/static/bodies.js").then((bodies) => {
  const holder = document.createElement("div");
  document.body.appendChild(holder);
  const view = bodies.renderBody(
    bodies.decodeBase64(encoded), contentType, size, truncated, coding);
  holder.appendChild(view);
  const settled = () => !holder.textContent.includes("Decoding");
  if (settled()) {
    done(holder.innerText);
    return;
  }
  new MutationObserver((changes, observer) => {
    if (settled()) {
      observer.disconnect();
      done(holder.innerText);
    }
  }).observe(holder, { childList: true, subtree: true });
});
"""
"""Render a body as the inspector does, and give back its text once any
decoding is over."""


class EncodedBodyTests(ScriptTestCase):
    """
    C{renderBody} decodes gzip and deflate bodies before showing them.
    """

    @inlineCallbacks
    def render(
        self, body: bytes, content_type: str, coding: str, truncated: bool = False
    ) -> Steps[str]:
        """
        @return: a Deferred firing with the text of the body's view.
        """

        def run(driver: Any) -> Any:
            return driver.execute_async_script(
                _RENDER_BODY,
                base64.b64encode(body).decode("ascii"),
                content_type,
                len(body),
                truncated,
                coding,
            )

        text = yield self.browser.call(run)
        return text

    @inlineCallbacks
    def test_gzip_and_deflate_are_decoded(self) -> Steps[None]:
        """
        A gzip JSON body and a deflate (zlib) text body are shown decoded,
        the JSON pretty-printed, with the encoded size in the label.
        """
        document = b'{"greeting": "hello", "count": 2}'
        gzipped = gzip.compress(document)

        json_view = yield self.render(gzipped, "application/json", "gzip")
        text_view = yield self.render(
            zlib.compress(b"plain words"), "text/plain", "deflate"
        )

        self.assertIn('{\n  "greeting": "hello",\n  "count": 2\n}', json_view)
        self.assertIn(f"decoded from {len(gzipped)} B of gzip", json_view)
        self.assertIn("plain words", text_view)

    @inlineCallbacks
    def test_undecodable_bodies_are_summarised(self) -> Steps[None]:
        """
        A coding the page does not decode, a body captured only in part,
        and bytes that are not what their coding says are summarised,
        pointing to the Binary tab.
        """
        brotli = yield self.render(b"\x0b\x02\x80hi\x03", "text/plain", "br")
        partial = yield self.render(
            gzip.compress(b"x" * 100)[:10], "text/plain", "gzip", truncated=True
        )
        broken = yield self.render(b"not gzip at all", "text/plain", "gzip")

        self.assertIn("encoded with br; see the Binary tab", brotli)
        self.assertIn("encoded with gzip, captured only in part", partial)
        self.assertIn("encoded with gzip, which could not be decoded", broken)

    @inlineCallbacks
    def test_decoding_stops_at_its_limit(self) -> Steps[None]:
        """
        A small body that decodes to more than 8 MiB is decoded only that
        far, and says so.
        """
        bomb = gzip.compress(b"a" * (9 * 1024 * 1024))

        view = yield self.render(bomb, "text/plain", "gzip")

        self.assertIn("first 8.0 MiB", view)
        self.assertLess(len(bomb), 64 * 1024)
