"""
Tests for L{tunnelkit.mux.session}, the sans-IO yamux core, driven with bytes
only.
"""

from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st
from twisted.trial.unittest import SynchronousTestCase

from tunnelkit.errors import TunnelkitError
from tunnelkit.mux.frames import (
    HEADER,
    INITIAL_STREAM_WINDOW,
    Flag,
    FrameType,
    GoAwayCode,
    encode_header,
)
from tunnelkit.mux.session import (
    BadStreamFrame,
    GoAwayReceived,
    MuxConfig,
    MuxSession,
    PongReceived,
    SendWindowOpened,
    SessionTerminated,
    StreamAccepted,
    StreamData,
    StreamEnded,
    StreamOpened,
    StreamReset,
)


def frames(data: list[bytes]) -> list[tuple[int, int, int, int, bytes]]:
    """
    Split the output of a session into (type, flags, stream id, length,
    payload) tuples.
    """
    blob = b"".join(data)
    result = []
    while blob:
        version, kind, flags, stream_id, length = HEADER.unpack_from(blob)
        assert version == 0
        size = length if kind == FrameType.DATA else 0
        result.append((kind, flags, stream_id, length, blob[12 : 12 + size]))
        blob = blob[12 + size :]
    return result


def kinds(events: list[Any]) -> list[type]:
    """
    The types of a list of events.
    """
    return [type(event) for event in events]


def pair(
    client_config: MuxConfig = MuxConfig(), server_config: MuxConfig = MuxConfig()
) -> tuple[MuxSession, MuxSession]:
    """
    A client and a server session.
    """
    return MuxSession(True, client_config), MuxSession(False, server_config)


def pump(source: MuxSession, destination: MuxSession) -> list[Any]:
    """
    Move everything C{source} queued into C{destination}.
    """
    return destination.receive_data(b"".join(source.take_output()))


class HeaderTests(SynchronousTestCase):
    """
    The frame header layout.
    """

    def test_layout(self) -> None:
        """
        The header is version, type, flags, stream id and length in network
        byte order, 12 bytes in all.
        """
        header = encode_header(FrameType.WINDOW_UPDATE, Flag.SYN | Flag.ACK, 7, 258)

        self.assertEqual(header, b"\x00\x01\x00\x03\x00\x00\x00\x07\x00\x00\x01\x02")


class StreamOpenTests(SynchronousTestCase):
    """
    Opening, accepting and refusing streams.
    """

    def test_client_ids_are_odd_server_ids_even(self) -> None:
        """
        The client numbers its streams 1, 3, 5 and the server 2, 4, 6.
        """
        client, server = pair()

        opened = [client.open_stream() for _ in range(3)]
        served = [server.open_stream() for _ in range(3)]

        self.assertEqual(opened, [1, 3, 5])
        self.assertEqual(served, [2, 4, 6])

    def test_open_sends_window_update_with_syn(self) -> None:
        """
        Opening a stream sends a Window Update carrying SYN and no extra
        window when the default window is used.
        """
        client, _ = pair()

        client.open_stream()

        self.assertEqual(
            frames(client.take_output()),
            [(FrameType.WINDOW_UPDATE, Flag.SYN, 1, 0, b"")],
        )

    def test_accept_sends_ack(self) -> None:
        """
        The peer sees L{StreamOpened}; accepting answers with ACK, which the
        opener sees as L{StreamAccepted}.
        """
        client, server = pair()
        client.open_stream()

        opened = pump(client, server)
        server.accept_stream(1)
        accepted = pump(server, client)

        self.assertEqual(kinds(opened), [StreamOpened])
        self.assertEqual(kinds(accepted), [StreamAccepted])

    def test_refusal_is_rst_before_ack(self) -> None:
        """
        A stream reset before it was accepted is reported as refused.
        """
        client, server = pair()
        client.open_stream()
        pump(client, server)

        server.reset_stream(1)
        events = pump(server, client)

        self.assertEqual(kinds(events), [StreamReset])
        self.assertTrue(events[0].refused)

    def test_any_answer_accepts(self) -> None:
        """
        A peer that answers with data or FIN but no ACK has accepted the
        stream all the same.
        """
        client, _ = pair()
        client.open_stream()
        client.take_output()

        events = client.receive_data(encode_header(FrameType.DATA, 0, 1, 2) + b"hi")

        self.assertEqual(kinds(events), [StreamAccepted, StreamData])

    def test_larger_window_advertised_with_syn(self) -> None:
        """
        A session configured with a larger window advertises the difference
        in the SYN's Window Update, and the peer may then send that much.
        """
        big = INITIAL_STREAM_WINDOW * 4
        client, server = pair(
            client_config=MuxConfig(stream_window=big, max_stream_window=big)
        )
        client.open_stream()
        pump(client, server)
        server.accept_stream(1)

        self.assertEqual(server.send_window(1), big)

    def test_accept_backlog_refuses_excess(self) -> None:
        """
        Streams beyond the accept backlog are answered with RST.
        """
        client, server = pair(server_config=MuxConfig(accept_backlog=2))
        for _ in range(3):
            client.open_stream()

        events = pump(client, server)
        answer = frames(server.take_output())

        self.assertEqual(kinds(events), [StreamOpened, StreamOpened])
        self.assertEqual(answer, [(FrameType.WINDOW_UPDATE, Flag.RST, 5, 0, b"")])

    def test_max_streams_refuses_excess(self) -> None:
        """
        An inbound stream beyond C{max_streams} is refused, and a local open
        beyond it raises C{TK_MUX_TOO_MANY_STREAMS}.
        """
        client, server = pair(server_config=MuxConfig(max_streams=2))
        server.open_stream()
        client.open_stream()
        client.open_stream()

        events = pump(client, server)

        self.assertEqual(kinds(events), [StreamOpened])
        error = self.assertRaises(TunnelkitError, server.open_stream)
        self.assertEqual(error.code, "TK_MUX_TOO_MANY_STREAMS")


class DataTests(SynchronousTestCase):
    """
    Data frames and windows.
    """

    def open(self, **config: Any) -> tuple[MuxSession, MuxSession]:
        """
        A client and server with stream 1 open and accepted.
        """
        client, server = pair(MuxConfig(**config), MuxConfig(**config))
        client.open_stream()
        pump(client, server)
        server.accept_stream(1)
        pump(server, client)
        return client, server

    def test_data_both_ways(self) -> None:
        """
        Bytes sent on a stream arrive as L{StreamData} on the other side.
        """
        client, server = self.open()

        client.send_data(1, b"hello")
        there = pump(client, server)
        server.send_data(1, b"world")
        back = pump(server, client)

        self.assertEqual([(e.stream_id, e.data) for e in there], [(1, b"hello")])
        self.assertEqual([(e.stream_id, e.data) for e in back], [(1, b"world")])

    def test_send_stops_at_window(self) -> None:
        """
        A sender takes only as many bytes as the window allows.
        """
        client, server = self.open()

        taken = client.send_data(1, b"x" * (INITIAL_STREAM_WINDOW + 10))

        self.assertEqual(taken, INITIAL_STREAM_WINDOW)
        self.assertEqual(client.send_window(1), 0)

    def test_large_writes_are_split(self) -> None:
        """
        A write larger than C{max_frame_payload} goes out as several frames.
        """
        client, server = self.open(max_frame_payload=1000)

        client.send_data(1, b"y" * 2500)

        self.assertEqual(
            [length for _, _, _, length, _ in frames(client.take_output())],
            [1000, 1000, 500],
        )

    def test_window_update_after_half_consumed(self) -> None:
        """
        The receiver returns window once the application has consumed half
        of it, and the sender's window grows by that much.
        """
        client, server = self.open(max_stream_window=INITIAL_STREAM_WINDOW)
        half = INITIAL_STREAM_WINDOW // 2
        client.send_data(1, b"z" * half)
        pump(client, server)

        server.consume(1, half - 1)
        self.assertEqual(server.take_output(), [])
        server.consume(1, 1)
        events = pump(server, client)

        self.assertEqual(kinds(events), [SendWindowOpened])
        self.assertEqual(client.send_window(1), INITIAL_STREAM_WINDOW)

    def test_window_grows_while_reader_keeps_up(self) -> None:
        """
        Each Window Update sent while nothing waits unread doubles the
        stream's window, up to C{max_stream_window}.
        """
        client, server = self.open(max_stream_window=INITIAL_STREAM_WINDOW * 4)
        windows = []

        for _ in range(4):
            taken = client.send_data(1, b"g" * client.send_window(1))
            pump(client, server)
            server.consume(1, taken)
            pump(server, client)
            windows.append(client.send_window(1))

        self.assertEqual(
            windows, [INITIAL_STREAM_WINDOW * 2] + [INITIAL_STREAM_WINDOW * 4] * 3
        )

    def test_window_grows_while_a_frame_is_on_its_way(self) -> None:
        """
        The rest of a frame whose payload has not all arrived yet is not
        unread data: a reader that took everything it was given still gets
        its window doubled.
        """
        client, server = self.open(max_stream_window=INITIAL_STREAM_WINDOW * 4)
        client.send_data(1, b"w" * INITIAL_STREAM_WINDOW)
        blob = b"".join(client.take_output())

        for event in server.receive_data(blob[:-1000]):
            server.consume(1, len(event.data))
        pump(server, client)

        self.assertEqual(client.send_window(1), INITIAL_STREAM_WINDOW * 2 - 1000)

    def test_window_does_not_grow_with_unread_data(self) -> None:
        """
        A Window Update sent while data still waits unread returns what was
        read and does not grow the window.
        """
        client, server = self.open(max_stream_window=INITIAL_STREAM_WINDOW * 4)
        client.send_data(1, b"u" * INITIAL_STREAM_WINDOW)
        pump(client, server)

        server.consume(1, INITIAL_STREAM_WINDOW // 2)
        pump(server, client)

        self.assertEqual(client.send_window(1), INITIAL_STREAM_WINDOW // 2)

    def test_unconsumed_data_holds_the_window(self) -> None:
        """
        Without consumption no window comes back, whatever arrives.
        """
        client, server = self.open()

        client.send_data(1, b"z" * INITIAL_STREAM_WINDOW)
        pump(client, server)

        self.assertEqual(server.take_output(), [])
        self.assertEqual(client.send_window(1), 0)

    def test_payload_split_across_reads(self) -> None:
        """
        A frame cut at every byte still delivers exactly its payload.
        """
        client, server = self.open()
        client.send_data(1, b"abcdef")
        blob = b"".join(client.take_output())

        data = b""
        for index in range(len(blob)):
            for event in server.receive_data(blob[index : index + 1]):
                data += event.data

        self.assertEqual(data, b"abcdef")

    def test_frames_read_at_once_are_one_event(self) -> None:
        """
        The payloads of consecutive Data frames of one stream that arrive
        in one read are reported as one L{StreamData}, in order.
        """
        client, server = self.open(max_frame_payload=1000)
        client.send_data(1, b"a" * 1000 + b"b" * 1000 + b"c" * 500)

        events = pump(client, server)

        self.assertEqual(
            [(e.stream_id, e.data) for e in events],
            [(1, b"a" * 1000 + b"b" * 1000 + b"c" * 500)],
        )

    def test_frames_of_two_streams_stay_apart(self) -> None:
        """
        Frames of different streams read at once are reported stream by
        stream in the order they arrived, each run of one stream's frames
        as one event.
        """
        client, server = self.open(max_frame_payload=2)
        client.open_stream()
        pump(client, server)
        server.accept_stream(3)
        pump(server, client)
        client.send_data(1, b"aaaa")
        client.send_data(3, b"bb")
        client.send_data(1, b"cc")

        events = pump(client, server)

        self.assertEqual(
            [(e.stream_id, e.data) for e in events],
            [(1, b"aaaa"), (3, b"bb"), (1, b"cc")],
        )

    def test_other_event_ends_a_run(self) -> None:
        """
        An event between two frames of one stream, here the other side's
        FIN on another stream, keeps the payloads before and after it
        apart, so events stay in the order of the frames.
        """
        client, server = self.open()
        client.open_stream()
        pump(client, server)
        server.accept_stream(3)
        pump(server, client)
        client.send_data(1, b"before")
        client.close_stream(3)
        client.send_data(1, b"after")

        events = pump(client, server)

        self.assertEqual(kinds(events), [StreamData, StreamEnded, StreamData])
        self.assertEqual([events[0].data, events[2].data], [b"before", b"after"])

    def test_payload_filling_a_piece_is_passed_on_as_it_is(self) -> None:
        """
        Bytes received in pieces, a payload that fills a whole piece is
        reported as that very piece, not a copy.
        """
        client, server = self.open()
        client.send_data(1, b"q" * 5000)
        header, payload = client.take_output()

        events = server.receive_pieces([header, payload])

        self.assertEqual(len(events), 1)
        self.assertIs(events[0].data, payload)

    def test_piece_inside_a_payload_is_passed_on_as_it_is(self) -> None:
        """
        A piece that falls inside a frame's payload, with more of the frame
        still to come, is reported as that very piece.
        """
        client, server = self.open()
        client.send_data(1, b"m" * 5000)
        blob = b"".join(client.take_output())
        middle = blob[100:4000]

        server.receive_pieces([blob[:100]])
        events = server.receive_pieces([middle])

        self.assertEqual(len(events), 1)
        self.assertIs(events[0].data, middle)

    @settings(max_examples=100, deadline=None)
    @given(st.lists(st.integers(1, 3000), min_size=1, max_size=40))
    def test_pieces_cut_anywhere(self, cuts: list[int]) -> None:
        """
        Frames of two streams received in pieces cut anywhere give the same
        bytes per stream, in order, as received whole.
        """
        client, server = self.open(max_frame_payload=700)
        client.open_stream()
        pump(client, server)
        server.accept_stream(3)
        pump(server, client)
        for index in range(6):
            client.send_data(1 + 2 * (index % 2), bytes([index]) * (index * 500 + 1))
        blob = b"".join(client.take_output())
        pieces = []
        for size in cuts:
            pieces.append(blob[:size])
            blob = blob[size:]
        pieces.append(blob)

        received: dict[int, bytes] = {1: b"", 3: b""}
        for event in server.receive_pieces([piece for piece in pieces if piece]):
            received[event.stream_id] += event.data

        self.assertEqual(
            received,
            {
                1: b"".join(bytes([i]) * (i * 500 + 1) for i in (0, 2, 4)),
                3: b"".join(bytes([i]) * (i * 500 + 1) for i in (1, 3, 5)),
            },
        )

    def test_overrun_terminates_session(self) -> None:
        """
        A peer sending more than the window gets Go Away with a protocol
        error, and every stream is reset.
        """
        client, server = self.open()
        too_much = INITIAL_STREAM_WINDOW + 1
        frame = encode_header(FrameType.DATA, 0, 1, too_much) + b"q" * too_much

        events = server.receive_data(frame)

        self.assertEqual(kinds(events), [StreamReset, SessionTerminated])
        self.assertEqual(
            frames(server.take_output())[-1][:4],
            (FrameType.GO_AWAY, 0, 0, GoAwayCode.PROTOCOL_ERROR),
        )

    def test_window_update_overflow_terminates(self) -> None:
        """
        A Window Update that would take the send window past 2**32 - 1 is a
        protocol error.
        """
        client, server = self.open()

        events = client.receive_data(
            encode_header(FrameType.WINDOW_UPDATE, 0, 1, 0xFFFFFFFF)
        )

        self.assertEqual(kinds(events)[-1], SessionTerminated)


class CloseTests(SynchronousTestCase):
    """
    Half-close with FIN and reset with RST.
    """

    def setUp(self) -> None:
        self.client, self.server = pair()
        self.client.open_stream()
        pump(self.client, self.server)
        self.server.accept_stream(1)
        pump(self.server, self.client)

    def test_fin_half_closes(self) -> None:
        """
        After FIN from one side, the other side may still send.
        """
        self.client.close_stream(1)
        ended = pump(self.client, self.server)
        self.server.send_data(1, b"late")
        data = pump(self.server, self.client)

        self.assertEqual(kinds(ended), [StreamEnded])
        self.assertFalse(ended[0].closed)
        self.assertEqual([event.data for event in data], [b"late"])

    def test_both_fins_close(self) -> None:
        """
        FIN from both sides closes the stream on both sides.
        """
        self.client.close_stream(1)
        pump(self.client, self.server)

        closed = self.server.close_stream(1)
        events = pump(self.server, self.client)

        self.assertTrue(closed)
        self.assertTrue(events[0].closed)
        self.assertFalse(self.client.is_open(1))
        self.assertFalse(self.server.is_open(1))

    def test_rst(self) -> None:
        """
        RST from one side resets the stream on the other.
        """
        self.client.reset_stream(1)

        events = pump(self.client, self.server)

        self.assertEqual(kinds(events), [StreamReset])
        self.assertFalse(events[0].refused)
        self.assertFalse(self.server.is_open(1))

    def test_late_frame_for_closed_stream_ignored(self) -> None:
        """
        A frame for a stream that existed and is gone is dropped quietly.
        """
        self.client.reset_stream(1)
        pump(self.client, self.server)

        events = self.server.receive_data(
            encode_header(FrameType.DATA, 0, 1, 3) + b"old"
        )

        self.assertEqual(events, [])
        self.assertEqual(self.server.take_output(), [])


class BadInputTests(SynchronousTestCase):
    """
    Each malformed input is answered as the spec says.
    """

    def assertGoAway(self, session: MuxSession, events: list[Any]) -> None:
        """
        The session ended with a Go Away carrying a protocol error.
        """
        self.assertEqual(kinds(events)[-1], SessionTerminated)
        self.assertIn(
            (FrameType.GO_AWAY, 0, 0, GoAwayCode.PROTOCOL_ERROR, b""),
            frames(session.take_output()),
        )
        self.assertEqual(session.receive_data(encode_header(2, 1, 0, 5)), [])

    def test_unknown_version(self) -> None:
        """
        A header with a version other than 0 ends the session.
        """
        server = MuxSession(False)

        events = server.receive_data(b"\x01" + encode_header(2, 1, 0, 1)[1:])

        self.assertGoAway(server, events)

    def test_unknown_type(self) -> None:
        """
        A frame type beyond Go Away ends the session.
        """
        server = MuxSession(False)

        events = server.receive_data(encode_header(9, 0, 0, 0))

        self.assertGoAway(server, events)

    def test_syn_reusing_id(self) -> None:
        """
        A second SYN for a live stream id ends the session.
        """
        server = MuxSession(False)
        server.receive_data(encode_header(FrameType.WINDOW_UPDATE, Flag.SYN, 1, 0))

        events = server.receive_data(
            encode_header(FrameType.WINDOW_UPDATE, Flag.SYN, 1, 0)
        )

        self.assertGoAway(server, events)

    def test_syn_out_of_order_accepted(self) -> None:
        """
        SYNs may arrive out of order, since peers allocate ids in order but
        send from several writers: a lower new id opens a stream too.
        """
        server = MuxSession(False)
        server.receive_data(encode_header(FrameType.WINDOW_UPDATE, Flag.SYN, 5, 0))

        events = server.receive_data(
            encode_header(FrameType.WINDOW_UPDATE, Flag.SYN, 3, 0)
        )

        self.assertEqual(kinds(events), [StreamOpened])
        self.assertEqual(events[0].stream_id, 3)

    def test_protocol_error_after_go_away_still_says_so(self) -> None:
        """
        A protocol error after a normal Go Away sends a second Go Away with
        the error code.
        """
        server = MuxSession(False)
        server.go_away()
        server.take_output()

        server.receive_data(encode_header(9, 0, 0, 0))

        self.assertEqual(
            frames(server.take_output()),
            [(FrameType.GO_AWAY, 0, 0, GoAwayCode.PROTOCOL_ERROR, b"")],
        )

    def test_syn_with_wrong_parity(self) -> None:
        """
        A client opening an even stream id, the server's kind, ends the
        session.
        """
        server = MuxSession(False)

        events = server.receive_data(
            encode_header(FrameType.WINDOW_UPDATE, Flag.SYN, 2, 0)
        )

        self.assertGoAway(server, events)

    def test_stream_frame_on_stream_zero(self) -> None:
        """
        Data for stream 0 ends the session.
        """
        server = MuxSession(False)

        events = server.receive_data(encode_header(FrameType.DATA, 0, 0, 0))

        self.assertGoAway(server, events)

    def test_frame_for_never_opened_stream(self) -> None:
        """
        A frame for a stream id never used is answered with RST and the
        session goes on, its payload skipped.
        """
        server = MuxSession(False)

        events = server.receive_data(
            encode_header(FrameType.DATA, 0, 9, 4)
            + b"junk"
            + encode_header(FrameType.PING, Flag.SYN, 0, 77)
        )

        self.assertEqual(kinds(events), [BadStreamFrame])
        self.assertEqual(
            frames(server.take_output()),
            [
                (FrameType.WINDOW_UPDATE, Flag.RST, 9, 0, b""),
                (FrameType.PING, Flag.ACK, 0, 77, b""),
            ],
        )

    def test_partial_header_reported(self) -> None:
        """
        A truncated header is visible to the caller, which logs it when the
        connection closes.
        """
        server = MuxSession(False)

        server.receive_data(b"\x00\x02\x00")

        self.assertTrue(server.has_partial_frame())

    @settings(max_examples=300, deadline=None)
    @given(st.binary(max_size=400))
    def test_arbitrary_bytes(self, blob: bytes) -> None:
        """
        Whatever bytes arrive, the session either goes on or terminates with
        a Go Away, and raises nothing.
        """
        server = MuxSession(False)

        for start in range(0, len(blob), 37):
            server.receive_data(blob[start : start + 37])

        output = frames(server.take_output())
        if server.terminated:
            self.assertEqual(output[-1][0], FrameType.GO_AWAY)

    @settings(max_examples=200, deadline=None)
    @given(
        st.lists(
            st.tuples(
                st.integers(0, 4),
                st.integers(0, 15),
                st.integers(0, 12),
                st.integers(0, 300000),
            ),
            max_size=30,
        )
    )
    def test_arbitrary_frame_sequences(
        self, sequence: list[tuple[int, int, int, int]]
    ) -> None:
        """
        Well-formed headers in any order, with any flags, ids and lengths,
        never raise; the session keeps its stream count within bounds, and a
        terminated session has said Go Away.
        """
        server = MuxSession(False, MuxConfig(max_streams=4, accept_backlog=2))

        for kind, flags, stream_id, length in sequence:
            payload = b"p" * min(length, 64) if kind == FrameType.DATA else b""
            server.receive_data(encode_header(kind, flags, stream_id, length) + payload)

        self.assertLessEqual(len(list(server.stream_ids())), 4)
        if server.terminated:
            self.assertIn(
                FrameType.GO_AWAY, [f[0] for f in frames(server.take_output())]
            )


class SessionControlTests(SynchronousTestCase):
    """
    Ping and Go Away.
    """

    def test_ping_is_answered(self) -> None:
        """
        A ping with SYN is answered with ACK carrying the same value, and
        the answer is reported to the pinger.
        """
        client, server = pair()

        opaque = client.ping()
        pump(client, server)
        events = pump(server, client)

        self.assertEqual(kinds(events), [PongReceived])
        self.assertEqual(events[0].opaque, opaque)

    def test_go_away_stops_new_streams(self) -> None:
        """
        After the peer's Go Away, opening a stream raises
        C{TK_MUX_GOING_AWAY}; after our own, the peer's SYNs get RST.
        """
        client, server = pair()

        server.go_away()
        events = pump(server, client)
        error = self.assertRaises(TunnelkitError, client.open_stream)
        refused = server.receive_data(
            encode_header(FrameType.WINDOW_UPDATE, Flag.SYN, 1, 0)
        )

        self.assertEqual(kinds(events), [GoAwayReceived])
        self.assertEqual(events[0].code, GoAwayCode.NORMAL)
        self.assertEqual(error.code, "TK_MUX_GOING_AWAY")
        self.assertEqual(refused, [])
        self.assertEqual(
            frames(server.take_output()),
            [(FrameType.WINDOW_UPDATE, Flag.RST, 1, 0, b"")],
        )

    def test_config_rejects_small_window(self) -> None:
        """
        A window below the spec's 256 KiB is a configuration error.
        """
        error = self.assertRaises(TunnelkitError, MuxConfig, stream_window=1024)

        self.assertEqual(error.code, "TK_MUX_CONFIG")
