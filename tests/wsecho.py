"""
WebSocket ends for the end-to-end tests, built on the C{websockets}
package: an echo server run as a child process, and a client that makes
round trips through a tunnel.

Run as C{python -m tests.wsecho}, the server listens on a loopback port the
kernel picks, prints C{websocket echo listening on 127.0.0.1:PORT}, and
sends every message back as it came (text as text, binary as binary) until
it is stopped by a signal.
"""

import socket
import ssl
import sys

from websockets.sync.client import connect
from websockets.sync.server import ServerConnection, serve

LISTENING_LINE = r"websocket echo listening on 127\.0\.0\.1:([0-9]+)"


def _echo(connection: ServerConnection) -> None:
    for message in connection:
        connection.send(message)


def main() -> int:
    """
    Serve the echo until killed.
    """
    with serve(_echo, "127.0.0.1", 0, compression=None) as server:
        port = server.socket.getsockname()[1]
        sys.stdout.write(f"websocket echo listening on 127.0.0.1:{port}\n")
        sys.stdout.flush()
        server.serve_forever()
    return 0


def round_trips(
    port: int,
    uri: str,
    messages: list[str | bytes],
    seconds: float,
    ca_path: str | None = None,
) -> list[str | bytes]:
    """
    Open a WebSocket to C{uri} over a TCP connection to loopback C{port}
    (so the URI's host name needs no resolving), send each message and read
    its answer before the next, then close. This blocks: run it in a thread.

    @param seconds: the limit of the connection, of the handshake and of
        each wait for an answer.
    @param ca_path: for a C{wss://} URI, the CA the server's certificate
        must come from.
    @return: the answers, in order.
    """
    context = None
    if uri.startswith("wss://"):
        context = ssl.create_default_context(cafile=ca_path)
    answers: list[str | bytes] = []
    with socket.create_connection(("127.0.0.1", port), timeout=seconds) as sock:
        with connect(
            uri,
            sock=sock,
            ssl=context,
            proxy=None,
            compression=None,
            open_timeout=seconds,
            close_timeout=seconds,
        ) as websocket:
            for message in messages:
                websocket.send(message)
                answers.append(websocket.recv(timeout=seconds))
    return answers


if __name__ == "__main__":
    sys.exit(main())
