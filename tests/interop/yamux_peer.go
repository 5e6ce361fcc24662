// Command yamux_peer is the reference end of the yamux interoperability
// tests: it speaks yamux through github.com/hashicorp/yamux over one plain
// TCP connection on loopback, in either role, and does one job (mode) on it.
//
// Roles and connection direction are independent: -role chooses the yamux
// side (client opens odd stream ids, server even ones), -connect or -listen
// chooses who dials. With -listen the chosen port is printed alone on the
// first line of stdout; it accepts exactly one connection.
//
// Modes:
//
//	echo    accept streams and echo every byte back; half-close after the
//	        peer's FIN. Ends when the session ends. -accept-when-streams
//	        holds back accepting until the peer has opened that many.
//	goaway  like echo, but send Go Away once -goaway-after streams have been
//	        accepted, before echoing the last of them.
//	drive   open -streams streams at once (each from its own goroutine, so
//	        SYNs may leave out of id order; -open-in-order opens them one
//	        after the other first), write a deterministic pseudo-random
//	        payload on each, half-close, read the echo back and compare
//	        SHA-256 digests, then wait until every stream is closed both ways.
//	ping    send -count pings and report each round trip.
//	drop    open -streams streams, send one byte on each, wait for its echo,
//	        then close the whole session (the TCP connection) abruptly.
//
// Every mode except echo and goaway prints one JSON line with its results on
// stdout and exits 0 on success, 1 on a failed check; echo and goaway print
// one JSON line when the session ends. Any setup failure or -timeout expiry
// exits 2. yamux's own log goes to stderr.
package main

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"math/rand"
	"net"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/yamux"
)

type options struct {
	role        string
	connect     string
	listen      string
	mode        string
	window      uint
	streams     int
	size        int
	randomSizes bool
	openInOrder bool
	seed        int64
	count       int
	goAwayAfter int
	acceptAt    int
	timeout     time.Duration
}

func main() {
	var opts options
	flag.StringVar(&opts.role, "role", "client", "yamux role: client or server")
	flag.StringVar(&opts.connect, "connect", "", "dial HOST:PORT")
	flag.StringVar(&opts.listen, "listen", "", "listen on ADDR (port 0 picks one)")
	flag.StringVar(&opts.mode, "mode", "echo", "echo, goaway, drive, ping or drop")
	flag.UintVar(&opts.window, "window", 256*1024, "MaxStreamWindowSize in bytes")
	flag.IntVar(&opts.streams, "streams", 1, "streams to open (drive, drop)")
	flag.IntVar(&opts.size, "size", 1024, "payload bytes per stream (drive)")
	flag.BoolVar(&opts.randomSizes, "random-sizes", false,
		"draw each stream's payload size from [0, size] (drive)")
	flag.BoolVar(&opts.openInOrder, "open-in-order", false,
		"open the streams one after the other, so their SYNs go out in id"+
			" order, before running them at once (drive)")
	flag.Int64Var(&opts.seed, "seed", 1, "seed for sizes and payloads (drive)")
	flag.IntVar(&opts.count, "count", 3, "pings to send (ping)")
	flag.IntVar(&opts.goAwayAfter, "goaway-after", 1,
		"accepted streams before Go Away (goaway)")
	flag.IntVar(&opts.acceptAt, "accept-when-streams", 0,
		"accept nothing until the peer has opened this many streams, so"+
			" every frame sent before the last SYN is read first (echo, goaway)")
	flag.DurationVar(&opts.timeout, "timeout", 60*time.Second,
		"give up and exit 2 after this long")
	flag.Parse()

	time.AfterFunc(opts.timeout, func() {
		report(map[string]interface{}{"mode": opts.mode, "error": "timeout"})
		os.Exit(2)
	})

	conn, err := dial(opts)
	if err != nil {
		fail(opts, err)
	}
	session, err := newSession(opts, conn)
	if err != nil {
		fail(opts, err)
	}

	var result map[string]interface{}
	switch opts.mode {
	case "echo":
		result = echo(session, -1, opts.acceptAt, opts.timeout)
	case "goaway":
		result = echo(session, opts.goAwayAfter, opts.acceptAt, opts.timeout)
	case "drive":
		result = drive(session, opts)
	case "ping":
		result = ping(session, opts.count)
	case "drop":
		result = drop(session, opts.streams)
	default:
		fail(opts, fmt.Errorf("unknown mode %q", opts.mode))
	}
	result["mode"] = opts.mode
	report(result)
	session.Close()
	if ok, _ := result["ok"].(bool); !ok {
		os.Exit(1)
	}
}

// dial makes the one TCP connection, in whichever direction was asked.
func dial(opts options) (net.Conn, error) {
	if opts.connect != "" {
		return net.Dial("tcp", opts.connect)
	}
	if opts.listen == "" {
		return nil, errors.New("give -connect or -listen")
	}
	listener, err := net.Listen("tcp", opts.listen)
	if err != nil {
		return nil, err
	}
	defer listener.Close()
	fmt.Println(listener.Addr().(*net.TCPAddr).Port)
	return listener.Accept()
}

// newSession wraps the connection in a yamux session with the default
// configuration, except for the stream window, and the log on stderr.
func newSession(opts options, conn net.Conn) (*yamux.Session, error) {
	config := yamux.DefaultConfig()
	config.MaxStreamWindowSize = uint32(opts.window)
	config.LogOutput = os.Stderr
	switch opts.role {
	case "client":
		return yamux.Client(conn, config)
	case "server":
		return yamux.Server(conn, config)
	}
	return nil, fmt.Errorf("unknown role %q", opts.role)
}

// echo accepts streams until the session ends and echoes each one. With
// goAwayAfter > 0, Go Away is sent once that many streams were accepted.
// With acceptAt > 0, accepting starts only once the session holds that many
// streams: the library reads frames in order, so by then it has handled
// every frame the peer sent before its last SYN (a FIN included).
func echo(
	session *yamux.Session, goAwayAfter, acceptAt int, timeout time.Duration,
) map[string]interface{} {
	if !waitForStreams(session, acceptAt, time.Now().Add(timeout)) {
		return map[string]interface{}{"ok": false, "error": "streams not opened"}
	}
	var wait sync.WaitGroup
	var echoed, failed int64
	accepted := 0
	goAwaySent := false
	for {
		stream, err := session.AcceptStream()
		if err != nil {
			break
		}
		accepted++
		if accepted == goAwayAfter {
			if err := session.GoAway(); err != nil {
				fmt.Fprintf(os.Stderr, "go away failed: %v\n", err)
			} else {
				goAwaySent = true
			}
		}
		wait.Add(1)
		go func() {
			defer wait.Done()
			count, err := io.Copy(stream, stream)
			atomic.AddInt64(&echoed, count)
			if err != nil {
				atomic.AddInt64(&failed, 1)
				fmt.Fprintf(os.Stderr, "echo on stream %d: %v\n", stream.StreamID(), err)
			}
			stream.Close()
		}()
	}
	wait.Wait()
	return map[string]interface{}{
		"ok":           true,
		"accepted":     accepted,
		"echoed_bytes": atomic.LoadInt64(&echoed),
		"failed":       atomic.LoadInt64(&failed),
		"goaway_sent":  goAwaySent,
	}
}

// streamResult is what drive learns about one stream.
type streamResult struct {
	ID       uint32 `json:"id"`
	Size     int    `json:"size"`
	Received int    `json:"received"`
	Match    bool   `json:"match"`
	Error    string `json:"error,omitempty"`
}

// payload is the deterministic content of stream number index.
func payload(seed int64, index, size int) []byte {
	data := make([]byte, size)
	rand.New(rand.NewSource(seed*1000003 + int64(index))).Read(data)
	return data
}

// earlyEOFs counts the io.EOF that readEcho had to retry.
var earlyEOFs int64

// readEcho reads size bytes. This version of the library makes Read return
// io.EOF as soon as the local side has closed and its buffer is momentarily
// empty, even while the peer is still sending, so an early EOF is retried
// until the deadline or the end of the session.
func readEcho(
	session *yamux.Session, stream *yamux.Stream, size int, deadline time.Time,
) ([]byte, error) {
	received := make([]byte, 0, size)
	chunk := make([]byte, 64*1024)
	for len(received) < size {
		count, err := stream.Read(chunk)
		received = append(received, chunk[:count]...)
		if err == io.EOF {
			if session.IsClosed() {
				return received, errors.New("session closed before the echo")
			}
			if time.Now().After(deadline) {
				return received, errors.New("echo incomplete at deadline")
			}
			atomic.AddInt64(&earlyEOFs, 1)
			time.Sleep(time.Millisecond)
			continue
		}
		if err != nil {
			return received, err
		}
	}
	return received, nil
}

// driveOne writes the payload of one stream, half-closes and reads the echo.
func driveOne(
	session *yamux.Session, stream *yamux.Stream, data []byte, deadline time.Time,
) ([]byte, error) {
	writeErr := make(chan error, 1)
	go func() {
		_, err := stream.Write(data)
		if closeErr := stream.Close(); err == nil {
			err = closeErr
		}
		writeErr <- err
	}()
	received, err := readEcho(session, stream, len(data), deadline)
	if werr := <-writeErr; err == nil {
		err = werr
	}
	return received, err
}

// drive opens the streams at once, runs them, then checks that every stream
// was closed by the peer too and that nothing arrived after the echo.
func drive(session *yamux.Session, opts options) map[string]interface{} {
	started := time.Now()
	deadline := started.Add(opts.timeout * 9 / 10)
	sizes := rand.New(rand.NewSource(opts.seed))
	results := make([]streamResult, opts.streams)
	streams := make([]*yamux.Stream, opts.streams)
	var sent int64
	var wait sync.WaitGroup
	for index := 0; index < opts.streams; index++ {
		size := opts.size
		if opts.randomSizes {
			size = sizes.Intn(opts.size + 1)
		}
		sent += int64(size)
		results[index].Size = size
		if opts.openInOrder {
			openStream(session, &results[index], &streams[index])
		}
	}
	for index := 0; index < opts.streams; index++ {
		wait.Add(1)
		go func(index, size int) {
			defer wait.Done()
			result := &results[index]
			if !opts.openInOrder {
				openStream(session, result, &streams[index])
			}
			stream := streams[index]
			if stream == nil {
				return
			}
			data := payload(opts.seed, index, size)
			received, err := driveOne(session, stream, data, deadline)
			result.Received = len(received)
			want := sha256.Sum256(data)
			got := sha256.Sum256(received)
			result.Match = bytes.Equal(want[:], got[:])
			if err != nil {
				result.Error = err.Error()
			}
		}(index, results[index].Size)
	}
	wait.Wait()

	closedBothWays := !session.IsClosed() && waitForNoStreams(session, deadline)
	ok := closedBothWays
	var received int64
	for index, stream := range streams {
		result := &results[index]
		received += int64(result.Received)
		if stream != nil {
			extra, _ := stream.Read(make([]byte, 1))
			if extra > 0 && result.Error == "" {
				result.Error = "bytes after the echo"
				result.Match = false
			}
		}
		if !result.Match || result.Error != "" {
			ok = false
		}
	}
	failures := []streamResult{}
	for _, result := range results {
		if !result.Match || result.Error != "" {
			failures = append(failures, result)
		}
	}
	return map[string]interface{}{
		"ok":               ok,
		"streams":          opts.streams,
		"bytes_sent":       sent,
		"bytes_received":   received,
		"closed_both_ways": closedBothWays,
		"early_eofs":       atomic.LoadInt64(&earlyEOFs),
		"open_streams":     session.NumStreams(),
		"failures":         failures,
		"seconds":          time.Since(started).Seconds(),
		"digest":           digestOfDigests(opts, results),
	}
}

// digestOfDigests condenses every payload's SHA-256 into one value, so a
// reader of the report can tell two runs with the same seed apart from two
// with different ones.
func digestOfDigests(opts options, results []streamResult) string {
	summary := sha256.New()
	for index, result := range results {
		digest := sha256.Sum256(payload(opts.seed, index, result.Size))
		summary.Write(digest[:])
	}
	return hex.EncodeToString(summary.Sum(nil))
}

// openStream opens one stream for drive and notes its id or the error.
func openStream(
	session *yamux.Session, result *streamResult, stream **yamux.Stream,
) {
	opened, err := session.OpenStream()
	if err != nil {
		result.Error = "open: " + err.Error()
		return
	}
	*stream = opened
	result.ID = opened.StreamID()
}

// waitForStreams waits until the session holds at least count streams.
func waitForStreams(session *yamux.Session, count int, deadline time.Time) bool {
	for session.NumStreams() < count {
		if time.Now().After(deadline) || session.IsClosed() {
			return false
		}
		time.Sleep(time.Millisecond)
	}
	return true
}

// waitForNoStreams waits until the session has forgotten every stream, which
// this library does once FIN went both ways (or on RST).
func waitForNoStreams(session *yamux.Session, deadline time.Time) bool {
	for session.NumStreams() > 0 {
		if time.Now().After(deadline) {
			return false
		}
		time.Sleep(time.Millisecond)
	}
	return true
}

// ping measures count round trips.
func ping(session *yamux.Session, count int) map[string]interface{} {
	rtts := []int64{}
	for index := 0; index < count; index++ {
		rtt, err := session.Ping()
		if err != nil {
			return map[string]interface{}{
				"ok": false, "rtt_ns": rtts, "error": err.Error(),
			}
		}
		rtts = append(rtts, rtt.Nanoseconds())
	}
	return map[string]interface{}{"ok": true, "rtt_ns": rtts}
}

// drop opens streams, round-trips one byte on each, then closes the session
// without closing any stream first.
func drop(session *yamux.Session, count int) map[string]interface{} {
	for index := 0; index < count; index++ {
		stream, err := session.OpenStream()
		if err != nil {
			return map[string]interface{}{"ok": false, "error": err.Error()}
		}
		if _, err := stream.Write([]byte{'x'}); err != nil {
			return map[string]interface{}{"ok": false, "error": err.Error()}
		}
		if _, err := io.ReadFull(stream, make([]byte, 1)); err != nil {
			return map[string]interface{}{"ok": false, "error": err.Error()}
		}
	}
	err := session.Close()
	result := map[string]interface{}{"ok": err == nil, "streams": count}
	if err != nil {
		result["error"] = err.Error()
	}
	return result
}

func report(result map[string]interface{}) {
	line, err := json.Marshal(result)
	if err != nil {
		line = []byte(fmt.Sprintf(`{"error": %q}`, err.Error()))
	}
	os.Stdout.Write(append(line, '\n'))
}

func fail(opts options, err error) {
	report(map[string]interface{}{"mode": opts.mode, "error": err.Error()})
	os.Exit(2)
}
