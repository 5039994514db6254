package gateway

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/http/httptrace"
	"net/textproto"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// rawUpstream is an upstream written at the socket, for what a well-behaved
// server never does: close a kept-alive connection, send bytes nobody
// asked for. serve gets each accepted connection, numbered from 1.
func rawUpstream(t *testing.T, serve func(n int64, c net.Conn, br *bufio.Reader)) (string, *atomic.Int64) {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var accepted atomic.Int64
	var wg sync.WaitGroup
	t.Cleanup(func() { l.Close(); wg.Wait() })
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			n := accepted.Add(1)
			wg.Add(1)
			go func() {
				defer wg.Done()
				defer c.Close()
				serve(n, c, bufio.NewReader(c))
			}()
		}
	}()
	return "http://" + l.Addr().String(), &accepted
}

// answer reads one request and writes a 200 with body and extra headers.
func answer(c net.Conn, br *bufio.Reader, body, extra string) error {
	req, err := http.ReadRequest(br)
	if err != nil {
		return err
	}
	_, _ = io.Copy(io.Discard, req.Body)
	_, err = fmt.Fprintf(c, "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: %d\r\n%s\r\n%s", len(body), extra, body)
	return err
}

func wantBody(t *testing.T, res *http.Response, body []byte, want string) {
	t.Helper()
	if res.StatusCode != http.StatusOK || string(body) != want {
		t.Fatalf("got %d %q, want 200 %q", res.StatusCode, body, want)
	}
}

// idleCount is how many connections to the upstream the direct path keeps.
func idleCount(g *Gateway, upstreamURL string) int {
	g.transport.mu.Lock()
	defer g.transport.mu.Unlock()
	return len(g.transport.idle[strings.TrimPrefix(upstreamURL, "http://")])
}

// TestDirectPathKeepsConnections shows body-less reads going the direct
// way on one kept-alive connection, and a request with a body going
// through the fallback transport.
func TestDirectPathKeepsConnections(t *testing.T) {
	var conns atomic.Int64
	up := httptest.NewUnstartedServer(http.HandlerFunc(echoHandler))
	up.Config.ConnState = func(_ net.Conn, s http.ConnState) {
		if s == http.StateNew {
			conns.Add(1)
		}
	}
	up.Start()
	t.Cleanup(up.Close)
	h := newHarness(t, []RouteConfig{testRoute("api", "/api", "public", up.URL)}, nil)
	for i := range 20 {
		method := []string{http.MethodGet, http.MethodHead, http.MethodDelete, http.MethodOptions}[i%4]
		res, _ := h.do(method, fmt.Sprintf("/api/items/%d", i), nil, nil)
		if res.StatusCode != http.StatusOK {
			t.Fatalf("%s: %d", method, res.StatusCode)
		}
	}
	if n := conns.Load(); n != 1 {
		t.Fatalf("20 reads used %d upstream connections, want 1", n)
	}
	if n := idleCount(h.gw, up.URL); n != 1 {
		t.Fatalf("the direct path keeps %d connections, want 1", n)
	}
	res, body := h.do(http.MethodPost, "/api/items", strings.NewReader("order"), nil)
	if s := decodeSeen(t, res, body); s.Method != http.MethodPost || s.BodyLen != 5 {
		t.Fatalf("POST arrived as %+v", s)
	}
	if n := conns.Load(); n != 2 {
		t.Fatalf("the POST went on a direct connection (%d connections), want its own", n)
	}
}

// TestDirectPathStaleConnection shows kept-alive connections the upstream
// closes: while idle (found by the check before reuse), or just as the
// next request arrives (found by using it). Either way the request goes
// on a new connection and the client never sees the failure.
func TestDirectPathStaleConnection(t *testing.T) {
	for _, tc := range []struct {
		name      string
		onArrival bool
	}{{"closed while idle", false}, {"closed as the request arrives", true}} {
		t.Run(tc.name, func(t *testing.T) {
			closed := make(chan struct{})
			upURL, accepted := rawUpstream(t, func(n int64, c net.Conn, br *bufio.Reader) {
				if n > 1 {
					for answer(c, br, fmt.Sprintf("conn %d", n), "") == nil {
					}
					return
				}
				// Answers as if keeping the connection, then closes it.
				if answer(c, br, "first", "") != nil {
					return
				}
				if tc.onArrival {
					_, _ = br.Peek(1)
				}
				c.Close()
				close(closed)
			})
			h := newHarness(t, []RouteConfig{testRoute("api", "/api", "public", upURL)}, nil)
			res, body := h.do(http.MethodGet, "/api/a", nil, nil)
			wantBody(t, res, body, "first")
			if !tc.onArrival {
				<-closed
				time.Sleep(10 * time.Millisecond) // the FIN reaches the gateway's socket
			}
			for _, m := range []string{http.MethodGet, http.MethodDelete} {
				res, body = h.do(m, "/api/b", nil, nil)
				wantBody(t, res, body, "conn 2")
			}
			if n := accepted.Load(); n != 2 {
				t.Fatalf("%d connections, want 2", n)
			}
		})
	}
}

// TestDirectPathDropsDoubtfulConnections shows that a connection is not
// kept when its state after the response is in doubt: the upstream said
// Connection: close, sent bytes beyond the response, or the client left
// in the middle of the body.
func TestDirectPathDropsDoubtfulConnections(t *testing.T) {
	t.Run("connection close", func(t *testing.T) {
		upURL, accepted := rawUpstream(t, func(n int64, c net.Conn, br *bufio.Reader) {
			for answer(c, br, fmt.Sprintf("conn %d", n), "Connection: close\r\n") == nil {
			}
		})
		h := newHarness(t, []RouteConfig{testRoute("api", "/api", "public", upURL)}, nil)
		for i := 1; i <= 3; i++ {
			res, body := h.do(http.MethodGet, "/api/x", nil, nil)
			wantBody(t, res, body, fmt.Sprintf("conn %d", i))
		}
		if n := accepted.Load(); n != 3 || idleCount(h.gw, upURL) != 0 {
			t.Fatalf("%d connections, %d kept", n, idleCount(h.gw, upURL))
		}
	})
	t.Run("bytes beyond the response", func(t *testing.T) {
		upURL, _ := rawUpstream(t, func(n int64, c net.Conn, br *bufio.Reader) {
			// The body says 5 bytes; 40 more follow, shaped like a
			// response, which must never reach the next request.
			for answer(c, br, fmt.Sprintf("conn%d", n), "") == nil {
				_, _ = io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\nevil")
			}
		})
		h := newHarness(t, []RouteConfig{testRoute("api", "/api", "public", upURL)}, nil)
		res, body := h.do(http.MethodGet, "/api/x", nil, nil)
		wantBody(t, res, body, "conn1")
		// The extra bytes arrive with the response or just after it: either
		// way the next request must get a response of its own.
		time.Sleep(20 * time.Millisecond)
		res, body = h.do(http.MethodGet, "/api/x", nil, nil)
		if res.StatusCode != http.StatusOK || string(body) == "evil" {
			t.Fatalf("second request got %d %q", res.StatusCode, body)
		}
	})
	t.Run("client leaves mid-body", func(t *testing.T) {
		upstreamSawClose := make(chan struct{})
		upURL, accepted := rawUpstream(t, func(n int64, c net.Conn, br *bufio.Reader) {
			if n > 1 {
				for answer(c, br, "whole", "") == nil {
				}
				return
			}
			if _, err := http.ReadRequest(br); err != nil {
				return
			}
			// Half of a 1 MiB body, then nothing: the gateway waits
			// for the rest until the client's leaving cancels it.
			_, _ = fmt.Fprintf(c, "HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n", 1<<20)
			_, _ = c.Write(make([]byte, 512<<10))
			_, _ = io.Copy(io.Discard, br) // until the gateway closes it
			close(upstreamSawClose)
		})
		h := newHarness(t, []RouteConfig{testRoute("api", "/api", "public", upURL)}, nil)
		res, err := h.srv.Client().Get(h.srv.URL + "/api/big")
		if err != nil {
			t.Fatal(err)
		}
		if _, err := io.ReadFull(res.Body, make([]byte, 64<<10)); err != nil {
			t.Fatal(err)
		}
		h.srv.Client().Transport.(*http.Transport).CloseIdleConnections()
		res.Body.Close() // not read to the end: the client's connection closes
		select {
		case <-upstreamSawClose:
		case <-time.After(5 * time.Second):
			t.Fatal("the gateway kept the upstream connection of an abandoned body")
		}
		res2, body := h.do(http.MethodGet, "/api/x", nil, nil)
		wantBody(t, res2, body, "whole")
		if n := accepted.Load(); n != 2 {
			t.Fatalf("%d connections, want 2", n)
		}
	})
}

// TestDirectPathEarlyHints shows a 103 Early Hints from the upstream
// reaching the client before the final response, and the final response
// keeping the gateway's headers but not the hint's.
func TestDirectPathEarlyHints(t *testing.T) {
	up := newUpstream(t, func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Link", "</app.css>; rel=preload")
		w.WriteHeader(http.StatusEarlyHints)
		w.Header().Del("Link")
		_, _ = io.WriteString(w, "page")
	})
	h := newHarness(t, []RouteConfig{testRoute("api", "/api", "public", up.URL)}, nil)
	var hints []string
	trace := &httptrace.ClientTrace{Got1xxResponse: func(code int, hdr textproto.MIMEHeader) error {
		hints = append(hints, fmt.Sprintf("%d %s", code, hdr.Get("Link")))
		return nil
	}}
	req, _ := http.NewRequest(http.MethodGet, h.srv.URL+"/api/page", nil)
	req = req.WithContext(httptrace.WithClientTrace(req.Context(), trace))
	res, body := h.send(req)
	wantBody(t, res, body, "page")
	if len(hints) != 1 || hints[0] != "103 </app.css>; rel=preload" {
		t.Fatalf("informational responses: %q", hints)
	}
	if res.Header.Get("Link") != "" {
		t.Fatalf("the hint's Link header stayed on the final response")
	}
	// The ReverseProxy clears the header map after a 1xx; the gateway's
	// own headers must still reach the final response.
	for _, k := range []string{"Content-Security-Policy", "X-Content-Type-Options", "X-Frame-Options", "X-Request-Id"} {
		if res.Header.Get(k) == "" {
			t.Errorf("the final response after a 103 lacks %s", k)
		}
	}
}

// TestDirectPathClosesIdleConnections shows the pool letting go of
// connections nobody used for the idle timeout, without waiting for a
// request to find them.
func TestDirectPathClosesIdleConnections(t *testing.T) {
	gone := make(chan struct{})
	upURL, _ := rawUpstream(t, func(n int64, c net.Conn, br *bufio.Reader) {
		for answer(c, br, "ok", "") == nil {
		}
		close(gone) // the gateway closed the connection
	})
	h := newHarness(t, []RouteConfig{testRoute("api", "/api", "public", upURL)}, nil)
	res, body := h.do(http.MethodGet, "/api/x", nil, nil)
	wantBody(t, res, body, "ok")
	tr := h.gw.transport
	tr.closeIdle(time.Now()) // not yet idle for long: kept
	if n := idleCount(h.gw, upURL); n != 1 {
		t.Fatalf("%d idle connections after an early sweep, want 1", n)
	}
	tr.closeIdle(time.Now().Add(tr.idleTimeout + time.Second))
	if n := idleCount(h.gw, upURL); n != 0 {
		t.Fatalf("%d idle connections after the timeout, want 0", n)
	}
	select {
	case <-gone:
	case <-time.After(5 * time.Second):
		t.Fatal("the upstream connection stayed open")
	}
}

// TestDirectPathBoundsResponseHeaders shows an upstream whose response
// headers never end answered with 502, after at most the header limit.
func TestDirectPathBoundsResponseHeaders(t *testing.T) {
	upURL, _ := rawUpstream(t, func(n int64, c net.Conn, br *bufio.Reader) {
		if _, err := http.ReadRequest(br); err != nil {
			return
		}
		_, _ = io.WriteString(c, "HTTP/1.1 200 OK\r\nX-Big: ")
		chunk := []byte(strings.Repeat("a", 64<<10))
		for range 64 { // 4 MiB, past the 1 MiB limit
			if _, err := c.Write(chunk); err != nil {
				return
			}
		}
	})
	h := newHarness(t, []RouteConfig{testRoute("api", "/api", "public", upURL)}, nil)
	res, body := h.do(http.MethodGet, "/api/x", nil, nil)
	wantError(t, res, body, http.StatusBadGateway, "bad_gateway")
	if !strings.Contains(h.logs.String(), "too large") {
		t.Errorf("the log does not say why:\n%s", h.logs.String())
	}
}

// TestUnaskedSwitchClosesUpstream shows an upstream answering 101 to a
// request that asked for no upgrade (the fallback path: a POST) answered
// with 502, and its connection closed, not left open.
func TestUnaskedSwitchClosesUpstream(t *testing.T) {
	closed := make(chan error, 1)
	upURL, _ := rawUpstream(t, func(n int64, c net.Conn, br *bufio.Reader) {
		req, err := http.ReadRequest(br)
		if err != nil {
			return
		}
		_, _ = io.Copy(io.Discard, req.Body)
		_, _ = io.WriteString(c, "HTTP/1.1 101 Switching Protocols\r\nUpgrade: x\r\nConnection: Upgrade\r\n\r\n")
		_ = c.SetReadDeadline(time.Now().Add(2 * time.Second))
		_, err = br.ReadByte()
		closed <- err
	})
	h := newHarness(t, []RouteConfig{testRoute("api", "/api", "public", upURL)}, nil)
	res, body := h.do(http.MethodPost, "/api/x", strings.NewReader("x"), nil)
	wantError(t, res, body, http.StatusBadGateway, "bad_gateway")
	if err := <-closed; err != io.EOF {
		t.Fatalf("the upstream connection was not closed after the refused 101: %v", err)
	}
}

// TestFallbackBoundsInformational shows an upstream sending informational
// responses without end answered with 502 after maxInformational of them,
// on both paths: http.Transport stops counting them once they are
// forwarded, each with its own header allowance.
func TestFallbackBoundsInformational(t *testing.T) {
	upURL, _ := rawUpstream(t, func(n int64, c net.Conn, br *bufio.Reader) {
		for {
			req, err := http.ReadRequest(br)
			if err != nil {
				return
			}
			_, _ = io.Copy(io.Discard, req.Body)
			bw := bufio.NewWriter(c)
			for range 10000 {
				_, _ = io.WriteString(bw, "HTTP/1.1 103 Early Hints\r\nLink: </x>; rel=preload\r\n\r\n")
			}
			_, _ = io.WriteString(bw, "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
			if bw.Flush() != nil {
				return
			}
		}
	})
	h := newHarness(t, []RouteConfig{testRoute("api", "/api", "public", upURL)}, nil)
	for _, m := range []string{"POST", "GET"} { // the fallback (http.Transport), then the direct path
		conn, err := net.Dial("tcp", h.srv.Listener.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		_ = conn.SetDeadline(time.Now().Add(5 * time.Second))
		body := "\r\n"
		if m == "POST" {
			body = "Content-Length: 1\r\n\r\nx"
		}
		_, _ = io.WriteString(conn, m+" /api/x HTTP/1.1\r\nHost: x\r\nConnection: close\r\n"+body)
		b, _ := io.ReadAll(conn)
		conn.Close()
		if n := strings.Count(string(b), " 103 Early Hints"); n != maxInformational {
			t.Errorf("%s: the client got %d informational responses (%d bytes), want %d", m, n, len(b), maxInformational)
		}
		if _, final, _ := strings.Cut(string(b), "\r\n\r\nHTTP/1.1 5"); !strings.HasPrefix(final, "02 ") || !strings.Contains(final, `"bad_gateway"`) {
			t.Errorf("%s: after the informational responses: %.200q", m, final)
		}
	}
	if !strings.Contains(h.logs.String(), "informational responses") {
		t.Errorf("the log does not say why:\n%s", h.logs)
	}
}

// An upstream that relayed informational responses and then failed has
// answered: the request is not retried on another, whose own hints would
// be counted with the first's and end a healthy exchange, charged to it.
func TestNoRetryAfterHints(t *testing.T) {
	bad, _ := rawUpstream(t, func(n int64, c net.Conn, br *bufio.Reader) {
		if _, err := http.ReadRequest(br); err != nil {
			return
		}
		_, _ = io.WriteString(c, strings.Repeat("HTTP/1.1 103 Early Hints\r\nLink: </a>; rel=preload\r\n\r\n", 3))
	})
	var goodHits atomic.Int64
	good, _ := rawUpstream(t, func(n int64, c net.Conn, br *bufio.Reader) {
		if _, err := http.ReadRequest(br); err != nil {
			return
		}
		goodHits.Add(1)
		_, _ = io.WriteString(c, strings.Repeat("HTTP/1.1 103 Early Hints\r\nLink: </b>; rel=preload\r\n\r\n", 3))
		_, _ = io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok")
	})
	rt := testRoute("api", "/api", "public", bad, good)
	rt.Retries = 1
	h := newHarness(t, []RouteConfig{rt}, nil)
	conn, err := net.Dial("tcp", h.srv.Listener.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	_ = conn.SetDeadline(time.Now().Add(5 * time.Second))
	_, _ = io.WriteString(conn, "GET /api/x HTTP/1.1\r\nHost: gw\r\nConnection: close\r\n\r\n")
	b, _ := io.ReadAll(conn)
	if last := string(b[strings.LastIndex(string(b), "HTTP/1.1 "):]); !strings.HasPrefix(last, "HTTP/1.1 502") {
		t.Errorf("after 3 hints and a broken connection the client got %d hints and %.40q, want 502", strings.Count(string(b), " 103 "), last)
	}
	if n := goodHits.Load(); n != 0 {
		t.Errorf("the request went on to another upstream after 3 hints had been relayed (%d)", n)
	}
}
