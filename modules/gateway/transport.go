package gateway

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptrace"
	"net/textproto"
	"sync"
	"syscall"
	"time"
)

// direct is the gateway's transport. A plain-HTTP idempotent request
// without a body or an upgrade (GET, HEAD, DELETE: most of an API's
// traffic) is written and its
// response read by the handler's own goroutine, on a kept-alive
// connection from a small pool. http.Transport runs a reader and a writer
// goroutine per connection and hands each request and response across
// channels to them; on the proxied route that was about a tenth of the
// CPU per request. Everything else goes to the fallback, an
// http.Transport: bodies, which may need to stream both ways at once;
// upgrades; TLS; and requests the upstream may not see twice, since
// a kept-alive connection the upstream closes just as it is reused is
// found out only by using it, and the request is then sent again on a
// new one. An idle connection has no reader goroutine watching it, so it
// is checked, without blocking, each time it is taken from the pool.
//
// Requests are written with http.Request.Write and responses read with
// http.ReadResponse, so framing, validation and the body's length rules
// are the standard library's, as with http.Transport.
type direct struct {
	fallback    *http.Transport
	dial        func(ctx context.Context, network, addr string) (net.Conn, error)
	maxIdle     int           // idle connections kept per upstream address
	idleTimeout time.Duration // an idle connection older than this is closed
	maxHeader   int64         // bytes an upstream's response headers may take

	mu     sync.Mutex
	idle   map[string][]*upConn // by host:port, most recently used last
	closed bool
	stop   chan struct{} // closed by Close: the sweeper ends
}

// upConn is one kept-alive upstream connection of the direct path.
type upConn struct {
	net.Conn
	addr      string
	br        *bufio.Reader
	bw        *bufio.Writer
	idleSince time.Time
	reused    bool // it served a request before this one
	// headerLeft is how many more bytes br may read while the response
	// headers are read; -1 once they are, for the body.
	headerLeft int64
}

// errHeadersTooLarge ends an exchange whose response headers pass maxHeader.
var errHeadersTooLarge = errors.New("upstream response headers too large")

// bounded is what an upConn's reader reads: the connection, limited to
// headerLeft bytes while the headers are read, as http.Transport limits
// them with MaxResponseHeaderBytes.
type bounded struct{ pc *upConn }

func (b bounded) Read(p []byte) (int, error) {
	pc := b.pc
	if pc.headerLeft < 0 {
		return pc.Conn.Read(p)
	}
	if pc.headerLeft == 0 {
		return 0, errHeadersTooLarge
	}
	if int64(len(p)) > pc.headerLeft {
		p = p[:pc.headerLeft]
	}
	n, err := pc.Conn.Read(p)
	pc.headerLeft -= int64(n)
	return n, err
}

// aLongTimeAgo is a deadline that makes every pending read and write on a
// connection fail at once.
var aLongTimeAgo = time.Unix(1, 0)

// maxInformational bounds the 1xx responses relayed before the final
// one. http.Transport stops at 5 only when no one reads them; the
// ReverseProxy does, to forward them, so the gateway counts them itself
// (exchange.WriteHeader), on both paths.
const maxInformational = 5

// errInformational ends an exchange whose upstream sent more than
// maxInformational informational responses.
var errInformational = fmt.Errorf("more than %d informational responses", maxInformational)

// newDirect returns a direct transport in front of fallback, with its
// pool limits, and starts the sweeper that closes idle connections; Close
// stops it.
func newDirect(fallback *http.Transport, dial func(context.Context, string, string) (net.Conn, error)) *direct {
	t := &direct{fallback: fallback, dial: dial, maxIdle: fallback.MaxIdleConnsPerHost,
		idleTimeout: fallback.IdleConnTimeout, maxHeader: fallback.MaxResponseHeaderBytes, idle: map[string][]*upConn{}, stop: make(chan struct{})}
	go t.sweep()
	return t
}

// sweep closes connections idle for longer than idleTimeout, a few times
// per timeout, so a pool left alone does not hold connections (and the
// upstream's resources) forever.
func (t *direct) sweep() {
	tick := time.NewTicker(t.idleTimeout / 3)
	defer tick.Stop()
	for {
		select {
		case <-t.stop:
			return
		case now := <-tick.C:
			t.closeIdle(now)
		}
	}
}

// closeIdle closes the idle connections that have waited longer than
// idleTimeout at now.
func (t *direct) closeIdle(now time.Time) {
	var old []*upConn
	t.mu.Lock()
	for addr, list := range t.idle {
		keep := list[:0]
		for _, pc := range list {
			if now.Sub(pc.idleSince) > t.idleTimeout {
				old = append(old, pc)
			} else {
				keep = append(keep, pc)
			}
		}
		clear(list[len(keep):])
		if len(keep) == 0 {
			delete(t.idle, addr)
		} else {
			t.idle[addr] = keep
		}
	}
	t.mu.Unlock()
	for _, pc := range old {
		pc.Close()
	}
}

// RoundTrip sends req on the direct path when it can, or to the fallback.
func (t *direct) RoundTrip(req *http.Request) (*http.Response, error) {
	if !directPath || req.URL.Scheme != "http" || !idempotent(req.Method) || req.Body != nil && req.Body != http.NoBody ||
		req.ContentLength != 0 || len(req.TransferEncoding) != 0 || req.Header.Get("Upgrade") != "" {
		return t.fallback.RoundTrip(req)
	}
	addr := req.URL.Host
	if req.URL.Port() == "" {
		addr = net.JoinHostPort(req.URL.Hostname(), "80")
	}
	ctx := req.Context()
	for {
		pc, err := t.get(ctx, addr)
		if err != nil {
			return nil, err
		}
		// Cancelling the request (the client left, the route timed out)
		// fails the connection's pending read or write. It stays armed
		// until the response body is done.
		stop := context.AfterFunc(ctx, func() { _ = pc.SetDeadline(aLongTimeAgo) })
		res, err := t.exchange(pc, req)
		if err == nil {
			if res.Body == http.NoBody {
				t.done(pc, res, stop, true)
			} else {
				res.Body = &directBody{t: t, pc: pc, res: res, rc: res.Body, stop: stop}
			}
			return res, nil
		}
		stop()
		pc.Close()
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		// A reused connection the upstream closed while it was idle
		// fails before any byte of an answer: the request is sent again
		// on another connection. http.Transport does so only for GET,
		// HEAD, OPTIONS and TRACE; this path carries PUT and DELETE too,
		// which RFC 9110 (9.2.2) lets a client repeat, so a PUT or DELETE
		// the upstream carried out before dropping the connection
		// unanswered runs twice (routes.yaml says so under retries).
		if !pc.reused || !staleConn(err) {
			return nil, err
		}
	}
}

// exchange writes req on pc and reads the final response's headers,
// passing informational responses (103 Early Hints) to the request's
// trace, where the ReverseProxy forwards them to the client.
func (t *direct) exchange(pc *upConn, req *http.Request) (*http.Response, error) {
	if err := req.Write(pc.bw); err != nil {
		return nil, err
	}
	if err := pc.bw.Flush(); err != nil {
		return nil, err
	}
	pc.headerLeft = t.maxHeader
	// Peeked first, so that "closed before a byte of the answer" shows
	// as such: ReadResponse would turn it into io.ErrUnexpectedEOF.
	if _, err := pc.br.Peek(1); err != nil {
		return nil, err
	}
	for n := 0; ; n++ {
		res, err := http.ReadResponse(pc.br, req)
		if err != nil {
			return nil, err
		}
		switch {
		case res.StatusCode == http.StatusSwitchingProtocols:
			return nil, errors.New("upstream switched protocols on a request that asked for no upgrade")
		case res.StatusCode < 200 && n == maxInformational:
			return nil, errInformational
		case res.StatusCode < 200:
			if trace := httptrace.ContextClientTrace(req.Context()); trace != nil && trace.Got1xxResponse != nil {
				if err := trace.Got1xxResponse(res.StatusCode, textproto.MIMEHeader(res.Header)); err != nil {
					return nil, err
				}
			}
			continue
		}
		pc.headerLeft = -1
		return res, nil
	}
}

// staleConn reports whether err is how a request on a connection the
// upstream had already closed fails: the write is refused, or the read
// meets the end of the stream before a byte of the answer.
func staleConn(err error) bool {
	return err == io.EOF || errors.Is(err, syscall.ECONNRESET) || errors.Is(err, syscall.EPIPE)
}

// get returns a kept-alive connection to addr, or dials one.
func (t *direct) get(ctx context.Context, addr string) (*upConn, error) {
	now := time.Now()
	for {
		t.mu.Lock()
		list := t.idle[addr]
		if len(list) == 0 {
			t.mu.Unlock()
			break
		}
		pc := list[len(list)-1]
		list[len(list)-1] = nil
		t.idle[addr] = list[:len(list)-1]
		t.mu.Unlock()
		// Checked before use: a connection the upstream closed, or on
		// which it sent bytes nobody asked for (a response to a request
		// it saw twice), must not carry this request or answer it.
		if now.Sub(pc.idleSince) > t.idleTimeout || !quiet(pc.Conn) {
			pc.Close()
			continue
		}
		pc.reused = true
		return pc, nil
	}
	c, err := t.dial(ctx, "tcp", addr)
	if err != nil {
		return nil, err
	}
	pc := &upConn{Conn: c, addr: addr, bw: bufio.NewWriterSize(c, 4<<10), headerLeft: -1}
	pc.br = bufio.NewReaderSize(bounded{pc}, 4<<10)
	return pc, nil
}

// done ends an exchange: the connection goes back to the pool when the
// body was read to its end and the upstream keeps the connection open;
// otherwise it is closed.
func (t *direct) done(pc *upConn, res *http.Response, stop func() bool, complete bool) {
	// stop reports false when cancellation already ran (or is running)
	// and set the connection's deadline: it is not reused then. Nor is
	// one with bytes beyond the response, which no request asked for.
	if !stop() || !complete || res.Close || pc.br.Buffered() != 0 {
		pc.Close()
		return
	}
	pc.idleSince = time.Now()
	t.mu.Lock()
	if t.closed || len(t.idle[pc.addr]) >= t.maxIdle {
		t.mu.Unlock()
		pc.Close()
		return
	}
	t.idle[pc.addr] = append(t.idle[pc.addr], pc)
	t.mu.Unlock()
}

// Close closes every idle connection of both paths; connections that come
// back after it are closed rather than kept.
func (t *direct) Close() {
	t.mu.Lock()
	idle := t.idle
	if !t.closed {
		close(t.stop)
	}
	t.idle, t.closed = map[string][]*upConn{}, true
	t.mu.Unlock()
	for _, list := range idle {
		for _, pc := range list {
			pc.Close()
		}
	}
	t.fallback.CloseIdleConnections()
}

// directBody is a direct-path response body. Read to its end, it gives
// the connection back to the pool; closed early or broken, it closes it,
// since the rest of the response would be in the way of the next one.
type directBody struct {
	t    *direct
	pc   *upConn
	res  *http.Response
	rc   io.ReadCloser
	stop func() bool
	err  error // the error that ended the body; io.EOF at its end
}

func (b *directBody) Read(p []byte) (int, error) {
	if b.err != nil {
		return 0, b.err
	}
	n, err := b.rc.Read(p)
	if err != nil {
		b.err = err
		b.t.done(b.pc, b.res, b.stop, err == io.EOF)
	}
	return n, err
}

func (b *directBody) Close() error {
	if b.err == nil {
		b.err = http.ErrBodyReadAfterClose
		b.t.done(b.pc, b.res, b.stop, false)
	}
	return nil
}
