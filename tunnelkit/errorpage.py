"""
The HTTP error responses tunnelkit writes itself, at the edge (unknown host,
tunnel offline, bad requests) and at the agent (local service unreachable,
the file server's refusals):
a small HTML page a person can read, with the stable error code in the page
and in a header scripts can read.
"""

import html
from http import HTTPStatus

ERROR_CODE_HEADER = b"Tunnelkit-Error-Code"
"""The response header that carries the C{TK_} code of an error page."""

_PAGE = """<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{status} {reason}</title>
<style>
body {{ font-family: system-ui, sans-serif; margin: 0; background: #f6f7f9;
  color: #1d2330; }}
main {{ max-width: 40rem; margin: 12vh auto; padding: 2rem; background: #fff;
  border-radius: 8px; box-shadow: 0 1px 4px rgba(0, 0, 0, .12); }}
h1 {{ font-size: 1.4rem; margin: 0 0 1rem; }}
p {{ line-height: 1.5; }}
code {{ background: #eef0f4; padding: .1rem .3rem; border-radius: 3px; }}
</style>
</head>
<body>
<main>
<h1>{title}</h1>
<p>{sentence}</p>
<p><code>{code}</code> &middot; HTTP {status} {reason}</p>
</main>
</body>
</html>
"""


def error_page(status: int, code: str, title: str, sentence: str) -> bytes:
    """
    Render the HTML page of an error, without the response around it.

    @param status: the HTTP status code, e.g. C{404}.
    @param code: the stable C{TK_} code.
    @param title: a short heading, e.g. C{"Tunnel not found"}.
    @param sentence: what happened and what to do; plain text, escaped here,
        in which a command or other literal text between backticks is shown
        as code.
    @return: the page, in UTF-8.
    """
    return _PAGE.format(
        status=status,
        reason=html.escape(HTTPStatus(status).phrase),
        title=html.escape(title),
        sentence=_sentence_html(sentence),
        code=html.escape(code),
    ).encode("utf-8")


def _sentence_html(sentence: str) -> str:
    """
    Escape a sentence for the page, showing each span between backticks as
    C{<code>} without its backticks.
    """
    parts = sentence.split("`")
    if len(parts) % 2 == 0:
        return html.escape(sentence)
    return "".join(
        f"<code>{html.escape(part)}</code>" if index % 2 else html.escape(part)
        for index, part in enumerate(parts)
    )


def error_response(
    status: int,
    code: str,
    title: str,
    sentence: str,
    extra_headers: list[tuple[bytes, bytes]] | None = None,
    head_only: bool = False,
) -> bytes:
    """
    Render a complete HTTP/1.1 error response that closes the connection,
    with the page of L{error_page}.

    @param status: the HTTP status code, e.g. C{404}.
    @param code: the stable C{TK_} code.
    @param title: a short heading, e.g. C{"Tunnel not found"}.
    @param sentence: what happened and what to do, as for L{error_page}.
    @param extra_headers: more header lines, such as C{WWW-Authenticate}.
    @param head_only: leave the body out, for an answer to C{HEAD}.
    @return: the status line, headers and body.
    """
    body = error_page(status, code, title, sentence)
    headers = [
        (b"Content-Type", b"text/html; charset=utf-8"),
        (b"Content-Length", str(len(body)).encode("ascii")),
        (ERROR_CODE_HEADER, code.encode("ascii")),
        (b"Cache-Control", b"no-store"),
        (b"Connection", b"close"),
    ]
    headers.extend(extra_headers or [])
    reason = HTTPStatus(status).phrase
    lines = [f"HTTP/1.1 {status} {reason}".encode("ascii")]
    lines.extend(name + b": " + value for name, value in headers)
    head = b"\r\n".join(lines) + b"\r\n\r\n"
    return head if head_only else head + body
