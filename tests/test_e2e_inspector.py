"""
The inspector and the status page in a real headless Chromium, on a real
agent: C{tunnelkit http} with its embedded edge in front of a recording
upstream, requests sent through the tunnel's public URL with curl, and the
pages checked as a person would see and use them.

Each test leaves a screenshot of the page it looked at in
C{_trial_temp/screenshots/}.
"""

import json
import os
from typing import Any

from twisted.internet.defer import inlineCallbacks
from twisted.trial.unittest import TestCase

from tests.browser import Browser, require_browser, start_browser
from tests.e2e import Program, Steps, make_directory, start_agent, write_file
from tests.webclients import Curl, Fetched
from tests.webservers import RecordingUpstream, listen_recording

_ROWS = """
return Array.from(document.querySelectorAll("#list > li")).map((row) => ({
  id: row.dataset.id,
  hidden: row.hidden,
  method: row.querySelector(".method").textContent,
  path: row.querySelector(".path").textContent,
  status: row.querySelector(".status").textContent,
}));
"""
"""The rows of the request list, newest first, as the page shows them."""

BROKEN_JSON = '{\n  "name": "widget",\n  "tags": ["a", "b",],\n  "price": 3\n}'
"""A request body with a trailing comma at line 3, column 21."""


def _by_css(driver: Any, selector: str) -> Any:
    from selenium.webdriver.common.by import By

    return driver.find_element(By.CSS_SELECTOR, selector)


def _keys(driver: Any, *keys: str) -> None:
    """
    Type keys into whatever has the focus, as a person would.
    """
    from selenium.webdriver.common.action_chains import ActionChains

    ActionChains(driver).send_keys(*keys).perform()


def _text(driver: Any, selector: str) -> str:
    elements = driver.execute_script(
        "return Array.from(document.querySelectorAll(arguments[0]))"
        ".map((element) => element.textContent);",
        selector,
    )
    return "\n".join(elements)


class InspectorTestCase(TestCase):
    """
    An agent with an HTTP tunnel to a recording upstream, its web interface
    on a port the kernel picks, and a browser.

    @ivar web: the web interface's base URL.
    @ivar public: the tunnel's public URL.
    """

    timeout = 120

    @inlineCallbacks
    def setUp(self) -> Steps[None]:
        require_browser()
        self.directory = make_directory(self)
        self.curl = Curl(self, self.directory, None)
        self.upstream: RecordingUpstream = yield listen_recording(self)
        config = write_file(
            os.path.join(self.directory, "ngrok.yml"),
            'version: "2"\nweb_addr: 127.0.0.1:0\n',
        )
        arguments = ["http", str(self.upstream.port), "--config", config]
        self.agent: Program = start_agent(self, self.directory, arguments)
        web = yield self.agent.wait_for_event(msg="starting web service")
        self.web = f"http://{web['addr']}"
        started = yield self.agent.wait_for_event(msg="started tunnel")
        self.public = started["url"]
        self.browser: Browser = yield start_browser(self)

    @inlineCallbacks
    def open(self, path: str) -> Steps[None]:
        """
        Load a page of the web interface, mark the window so that a reload
        would show, and wait until the page is following the agent (the
        inspector's event stream is open, the status page has read the
        status).
        """

        def load(driver: Any) -> None:
            driver.get(self.web + path)
            driver.execute_script("window.loadedOnce = true;")

        def following(driver: Any) -> bool:
            state = _by_css(driver, "#live").get_attribute("data-state")
            return state in ("live", "online")

        yield self.browser.call(load)
        yield self.browser.wait(following, "the page to follow the agent")

    @inlineCallbacks
    def send(self, path: str, *options: str) -> Steps[Fetched]:
        """
        Send a request through the tunnel with curl.

        @return: a Deferred firing with what curl got, once it got a 200.
        """
        fetched = yield self.curl.fetch(self.public + path, *options)
        self.assertEqual(fetched.status, 200, fetched.describe())
        return fetched

    def wait_for_rows(self, count: int) -> Any:
        """
        Wait until the list shows C{count} exchanges, each with its status.

        @return: a Deferred firing with the rows, newest first.
        """

        def shown(driver: Any) -> Any:
            rows = driver.execute_script(_ROWS)
            complete = [row for row in rows if row["status"].isdigit()]
            return rows if len(complete) == count == len(rows) else False

        return self.browser.wait(shown, f"{count} complete rows in the list")

    def wait_for_text(self, selector: str, text: str) -> Any:
        """
        Wait until the elements matching C{selector} contain C{text}.
        """

        def contains(driver: Any) -> Any:
            return text in _text(driver, selector)

        return self.browser.wait(contains, f"{text!r} in {selector}")

    def click(self, selector: str) -> Any:
        """
        Click the element matching C{selector}.
        """
        return self.browser.call(lambda driver: _by_css(driver, selector).click())

    def keys(self, *keys: str) -> Any:
        """
        Type keys into the element with the focus.
        """
        return self.browser.call(_keys, *keys)

    def script(self, source: str, *arguments: Any) -> Any:
        """
        Run a script in the page.

        @return: a Deferred firing with its result.
        """
        return self.browser.call(
            lambda driver: driver.execute_script(source, *arguments)
        )

    @inlineCallbacks
    def assert_no_page_errors(self) -> Steps[None]:
        """
        Fail if the page logged a script error or refused a request.
        """
        errors = yield self.browser.console_errors()
        self.assertEqual(errors, [])


class InspectorListTests(InspectorTestCase):
    """
    Exchanges appear in the inspector's list as they happen, and open to
    their details.
    """

    @inlineCallbacks
    def test_request_appears_and_opens(self) -> Steps[None]:
        """
        C{/} leads to the inspector; a request sent through the tunnel
        after it was loaded appears in its list without a reload, with its
        method, path and status; opened, it shows its summary, headers, raw bytes and hex
        dump, and the response's pretty-printed JSON.
        """
        yield self.open("/")
        address = yield self.browser.call(lambda driver: driver.current_url)

        yield self.send(
            "/orders?id=7&kind=new",
            "-X",
            "POST",
            "-H",
            "X-Probe: first",
            "-H",
            "Content-Type: text/plain",
            "--data-binary",
            "hello inspector",
        )
        [row] = yield self.wait_for_rows(1)
        reloaded = yield self.script("return window.loadedOnce !== true;")
        yield self.click(f'button.row[data-id="{row["id"]}"]')
        yield self.wait_for_text("#request-panel", "hello inspector")
        summary = yield self.script("return document.body.innerText;")
        yield self.click("#request-tab-Headers")
        yield self.wait_for_text("#request-panel", "X-Probe")
        headers = yield self.script(
            "return document.querySelector('#request-panel').innerText;"
        )
        yield self.click("#request-tab-Raw")
        yield self.wait_for_text("#request-panel", "POST /orders?id=7&kind=new")
        raw = yield self.script(
            "return document.querySelector('#request-panel').innerText;"
        )
        yield self.click("#request-tab-Binary")
        yield self.wait_for_text("#request-panel", "00000000  50 4f 53 54 20 2f")
        response_keys = yield self.script(
            "return Array.from(document.querySelectorAll('#response-panel .j-key'))"
            ".map((key) => key.textContent);"
        )
        yield self.browser.screenshot("inspector-details")

        self.assertEqual(address, self.web + "/inspect/http")
        self.assertFalse(reloaded)
        self.assertEqual(
            (row["method"], row["path"], row["status"]),
            ("POST", "/orders?id=7&kind=new", "200"),
        )
        self.assertIn("kind\tnew", summary)
        self.assertIn("X-Probe\tfirst", headers)
        self.assertIn("\nhello inspector", raw)
        self.assertEqual(response_keys, ['"method"', '"target"', '"host"'])
        yield self.assert_no_page_errors()

    @inlineCallbacks
    def test_captured_markup_stays_text(self) -> Steps[None]:
        """
        Markup in a captured request (here in a header and the body) is
        shown as text: no element is made of it and no script of it runs.
        """
        markup = "<img src=x onerror=window.injected=1><b>bold</b>"
        yield self.open("/inspect/http")

        yield self.send("/markup", "-H", f"X-Note: {markup}", "--data-binary", markup)
        yield self.wait_for_rows(1)
        yield self.click("#request-tab-Headers")
        yield self.wait_for_text("#request-panel", markup)
        made = yield self.script(
            "return [document.querySelectorAll('main img, main b').length,"
            " window.injected === undefined];"
        )

        self.assertEqual(made, [0, True])


class BodyViewTests(InspectorTestCase):
    """
    Bodies are shown by their content type: JSON checked and
    pretty-printed, XML pretty-printed, forms as fields.
    """

    @inlineCallbacks
    def test_broken_json_shows_its_error_location(self) -> Steps[None]:
        """
        A JSON request body with a syntax error is shown with the line and
        column of the error, that line marked and the character at fault
        highlighted.
        """
        yield self.open("/inspect/http")

        yield self.send(
            "/items",
            "-H",
            "Content-Type: application/json",
            "--data-binary",
            BROKEN_JSON,
        )
        yield self.wait_for_rows(1)
        yield self.wait_for_text("#request-panel", "JSON syntax error")
        error = yield self.script("""
            const message = document.querySelector("#request-panel .error-message");
            const line = document.querySelector("#request-panel .error-line");
            return {
              line: message.dataset.line,
              column: message.dataset.column,
              text: message.textContent,
              markedLine: line.textContent,
              at: line.querySelector("mark.error-at").textContent,
            };
            """)
        yield self.browser.screenshot("inspector-json-error")

        self.assertEqual((error["line"], error["column"]), ("3", "21"))
        self.assertIn("at line 3, column 21", error["text"])
        self.assertIn("expected a value after ','", error["text"])
        self.assertEqual(error["markedLine"], '3  "tags": ["a", "b",],')
        self.assertEqual(error["at"], "]")

    @inlineCallbacks
    def test_json_xml_and_form_bodies(self) -> Steps[None]:
        """
        A C{+json} body is pretty-printed one member a line, an XML body
        indented, and a form body shown as a table of decoded fields.
        """
        yield self.open("/inspect/http")

        yield self.send(
            "/json",
            "-H",
            "Content-Type: application/vnd.api+json",
            "--data-binary",
            '{"data":{"id":"1","tags":[1,2]}}',
        )
        yield self.send(
            "/xml",
            "-H",
            "Content-Type: application/xml",
            "--data-binary",
            '<order id="7"><item>tea</item><item>milk</item></order>',
        )
        yield self.send(
            "/form", "--data-binary", "name=Ada+Lovelace&city=London%2C%20UK"
        )
        rows = yield self.wait_for_rows(3)
        bodies = {}
        for row in reversed(rows):
            yield self.click(f'button.row[data-id="{row["id"]}"]')
            yield self.wait_for_text(".detail-head .path", row["path"])
            bodies[row["path"]] = yield self.script(
                "const body = document.querySelector('#request-panel .body');"
                "return body.querySelector('pre, table').innerText;"
            )
        yield self.browser.screenshot("inspector-form")

        self.assertEqual(
            bodies["/json"],
            '{\n  "data": {\n    "id": "1",\n    "tags": [\n      1,\n      2\n'
            "    ]\n  }\n}",
        )
        self.assertEqual(
            bodies["/xml"],
            '<order id="7">\n  <item>tea</item>\n  <item>milk</item>\n</order>\n',
        )
        self.assertEqual(
            bodies["/form"], "Field\tValue\nname\tAda Lovelace\ncity\tLondon, UK"
        )


class FilterTests(InspectorTestCase):
    """
    The filter bar narrows the list, with the keyboard.
    """

    @inlineCallbacks
    def test_filters_hide_what_they_should(self) -> Steps[None]:
        """
        C{/} goes to the filter bar; each filter typed there and entered
        hides the exchanges it does not pass, several at once, with
        "matched N of M"; Backspace in the empty bar removes the last one.
        """
        yield self.open("/inspect/http")
        yield self.send("/favicon.ico")
        yield self.send("/page", "-H", "X-Team: blue")
        yield self.send("/api/items", "--data-binary", "n=1")
        yield self.wait_for_rows(3)

        yield self.keys("/")
        focused = yield self.script("return document.activeElement.id;")
        yield self.keys("Path !match favicon\n")
        yield self.wait_for_text("#count", "matched 2 of 3")
        yield self.keys("Method match get\n")
        yield self.wait_for_text("#count", "matched 1 of 3")
        both = yield self.script(_ROWS)
        yield self.browser.screenshot("inspector-filters")
        yield self.keys("\ue003", "\ue003")
        yield self.wait_for_text("#count", "3 requests")
        yield self.keys("Headers.x-team match BLUE\n")
        yield self.wait_for_text("#count", "matched 1 of 3")
        header = yield self.script(_ROWS)
        yield self.keys("\ue003", "StatusCode !match 20\n")
        yield self.wait_for_text("#count", "matched 0 of 3")
        yield self.keys("\ue003", "Duration < 60000\n")
        yield self.wait_for_text("#count", "matched 3 of 3")

        self.assertEqual(focused, "filter")
        self.assertEqual([row["path"] for row in both if not row["hidden"]], ["/page"])
        self.assertEqual(
            [row["path"] for row in header if not row["hidden"]], ["/page"]
        )

    @inlineCallbacks
    def test_keyboard_moves_and_opens(self) -> Steps[None]:
        """
        With the newest exchange above the one opened, C{k} moves the focus
        up to it, visibly, and Enter opens it; C{j} and Enter go back down;
        C{2} shows the request's headers.
        """
        yield self.open("/inspect/http")
        yield self.send("/first")
        yield self.send("/second")
        yield self.wait_for_rows(2)
        yield self.wait_for_text(".detail-head .path", "/first")

        yield self.keys("k")
        focus = yield self.script(
            "const row = document.activeElement;"
            "return [row.querySelector('.path').textContent,"
            " getComputedStyle(row).outlineStyle];"
        )
        yield self.keys("\n")
        yield self.wait_for_text(".detail-head .path", "/second")
        yield self.keys("j", "\n")
        yield self.wait_for_text(".detail-head .path", "/first")
        yield self.keys("2")
        yield self.wait_for_text("#request-panel", "User-Agent")

        self.assertEqual(focus, ["/second", "solid"])


class ReplayTests(InspectorTestCase):
    """
    Replay and replay with modifications send requests that reach the
    upstream.
    """

    @inlineCallbacks
    def test_replay_and_modified_replay_reach_the_upstream(self) -> Steps[None]:
        """
        Replay sends the captured request to the upstream again, as it
        was; Replay with Modifications sends the method, path, headers and
        body edited in its dialog. Both appear in the list.
        """
        yield self.open("/inspect/http")
        yield self.send(
            "/orders",
            "-H",
            "X-Probe: first",
            "-H",
            "Content-Type: application/json",
            "--data-binary",
            '{"n": 1}',
        )
        yield self.wait_for_rows(1)

        yield self.click("#replay")
        yield self.wait_for_text("#toast", "Replayed POST /orders")
        replayed = self.upstream.received[-1]
        yield self.wait_for_rows(2)
        yield self.keys("e")
        yield self.script(
            """
            const [method, path, header, body] = arguments;
            document.getElementById("replay-method").value = method;
            document.getElementById("replay-path").value = path;
            document.getElementById("replay-headers").value += header;
            document.getElementById("replay-body").value = body;
            """,
            "PUT",
            "/orders/7?via=replay",
            "\nX-Replayed: yes",
            '{"n": 2}',
        )
        yield self.browser.screenshot("inspector-replay-dialog")
        yield self.click("#replay-send")
        yield self.wait_for_text("#toast", "Replayed PUT /orders/7?via=replay")
        changed = self.upstream.received[-1]
        rows = yield self.wait_for_rows(3)

        original = self.upstream.received[0]
        self.assertEqual(len(self.upstream.received), 3)
        self.assertEqual(
            (replayed.method, replayed.target, replayed.body),
            ("POST", "/orders", b'{"n": 1}'),
        )
        self.assertEqual(replayed.header("x-probe"), "first")
        self.assertEqual(replayed.header("host"), original.header("host"))
        self.assertEqual(
            (changed.method, changed.target, changed.body),
            ("PUT", "/orders/7?via=replay", b'{"n": 2}'),
        )
        self.assertEqual(changed.header("x-replayed"), "yes")
        self.assertEqual(changed.header("x-probe"), "first")
        self.assertEqual(changed.header("content-length"), "8")
        self.assertEqual(rows[0]["path"], "/orders/7?via=replay")
        yield self.assert_no_page_errors()

    @inlineCallbacks
    def test_clear_and_export(self) -> Steps[None]:
        """
        Export links to a HAR of every exchange; Clear Requests empties
        the list, and the agent's store with it.
        """
        yield self.open("/inspect/http")
        yield self.send("/one")
        yield self.send("/two")
        yield self.wait_for_rows(2)

        exported = yield self.browser.call(
            lambda driver: driver.execute_async_script("""
                const done = arguments[arguments.length - 1];
                const link = document.getElementById("export");
                fetch(link.href).then((answer) => answer.json()).then(
                  (har) => done(har.log.entries.map((entry) => entry.request.url)));
                """)
        )
        yield self.click("#clear")
        yield self.wait_for_text("#count", "0 requests")
        after = yield self.browser.call(lambda driver: driver.execute_async_script("""
                const done = arguments[arguments.length - 1];
                fetch("/api/requests/http").then((answer) => answer.json()).then(
                  (listed) => done(listed.requests));
                """))

        self.assertEqual(
            sorted(url.rsplit("/", 1)[1] for url in exported), ["one", "two"]
        )
        self.assertEqual(after, [])


class StatusPageTests(InspectorTestCase):
    """
    The status page shows the tunnels' configuration and metrics.
    """

    @inlineCallbacks
    def test_status_page_shows_metrics(self) -> Steps[None]:
        """
        After requests through the tunnel, the status page shows the
        tunnel's address, and non-zero connection and HTTP counts and
        response time percentiles, for the tunnel and for all tunnels.
        """
        yield self.send("/a")
        yield self.send("/b")

        yield self.open("/status")

        def counted(driver: Any) -> Any:
            values = driver.execute_script("""
                const cell = (table, row, metric) => {
                  const found = document.querySelector(
                    `#${table} tr[data-tunnel="${row}"] td[data-metric="${metric}"]`);
                  return found ? Number(found.dataset.value || 0) : 0;
                };
                return [cell("connections", "*", "count"),
                        cell("http-requests", "*", "count"),
                        cell("http-requests", "command_line", "count"),
                        cell("http-durations", "*", "p50"),
                        cell("connection-durations", "*", "p99")];
                """)
            return values if all(value > 0 for value in values) else False

        counts = yield self.browser.wait(counted, "non-zero metrics")
        addr = yield self.script(
            "return document.querySelector('#tunnels .tunnel').innerText;"
        )
        yield self.browser.screenshot("status", whole_page=True)

        self.assertGreaterEqual(counts[1], 2)
        self.assertIn(f"localhost:{self.upstream.port}", addr)
        yield self.assert_no_page_errors()
