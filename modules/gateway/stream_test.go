package gateway

import (
	"bufio"
	"crypto/sha1"
	"crypto/sha256"
	"encoding/base64"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"
)

// TestLargeUploadStreams sends 100 MB through the gateway: the upstream
// hashes what it gets, and the process allocates a small fraction of it,
// so nothing held the body whole.
func TestLargeUploadStreams(t *testing.T) {
	const size = 100 << 20
	up := newUpstream(t, echoHandler)
	r := testRoute("upload", "/upload", "public", up.URL)
	r.MaxBodyBytes = 200 << 20
	h := newHarness(t, []RouteConfig{r}, nil)

	// Warm up the connections, then measure one upload.
	h.do(http.MethodPost, "/upload", strings.NewReader("warm"), nil)
	sum := sha256.New()
	body := io.TeeReader(newPatterned(size), sum)
	runtime.GC()
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	req, _ := http.NewRequest(http.MethodPost, h.srv.URL+"/upload/big", body)
	req.ContentLength = size
	res, b := h.send(req)
	runtime.ReadMemStats(&after)

	s := decodeSeen(t, res, b)
	if s.BodyLen != size || s.BodySHA != hex.EncodeToString(sum.Sum(nil)) {
		t.Fatalf("upstream got %d bytes, sha %s", s.BodyLen, s.BodySHA)
	}
	// Client, gateway and upstream all run in this process: the total
	// covers all three.
	allocated := after.TotalAlloc - before.TotalAlloc
	t.Logf("allocated %.1f MB for a %d MB upload; heap %.1f -> %.1f MB", float64(allocated)/(1<<20), size>>20,
		float64(before.HeapAlloc)/(1<<20), float64(after.HeapAlloc)/(1<<20))
	if allocated > 20<<20 {
		t.Errorf("allocated %d bytes for a %d-byte upload: the body was buffered", allocated, size)
	}
	if after.HeapAlloc > before.HeapAlloc+20<<20 {
		t.Errorf("heap grew from %d to %d", before.HeapAlloc, after.HeapAlloc)
	}
}

// TestBodyTooLarge shows the route's body limit holds while streaming,
// and is not held against the upstream.
func TestBodyTooLarge(t *testing.T) {
	up := newUpstream(t, echoHandler)
	r := testRoute("small", "/small", "public", up.URL)
	r.MaxBodyBytes = 1000
	r.Breaker.Failures = 1
	h := newHarness(t, []RouteConfig{r}, nil)
	// Announced: refused by the chain before the proxy.
	res, body := h.do(http.MethodPost, "/small", strings.NewReader(strings.Repeat("x", 1001)), nil)
	wantError(t, res, body, http.StatusRequestEntityTooLarge, "body_too_large")
	// Chunked: refused while streaming.
	res, body = h.do(http.MethodPost, "/small", io.MultiReader(newPatterned(1<<20)), nil)
	if res.StatusCode != http.StatusRequestEntityTooLarge {
		t.Fatalf("chunked over the limit: %d %s", res.StatusCode, body)
	}
	// The upstream is not marked down for it (one failure would do).
	res, body = h.do(http.MethodGet, "/small", nil, nil)
	decodeSeen(t, res, body)
}

// TestServerSentEvents shows a stream is passed on as it comes: the client
// reads the first event while the upstream is still holding the response
// open.
func TestServerSentEvents(t *testing.T) {
	release := make(chan struct{})
	done := make(chan struct{})
	up := newUpstream(t, func(w http.ResponseWriter, r *http.Request) {
		defer close(done)
		w.Header().Set("Content-Type", "text/event-stream")
		io.WriteString(w, "data: first\n\n")
		w.(http.Flusher).Flush()
		select {
		case <-release:
		case <-r.Context().Done():
			return
		}
		io.WriteString(w, "data: second\n\n")
	})
	// Neither the route's timeout, which bounds the wait for the headers,
	// nor the server's write timeout, meant for one response, ends the
	// stream.
	r := testRoute("events", "/events", "public", up.URL)
	r.Timeout = 100 * time.Millisecond
	h := newHarness(t, []RouteConfig{r}, nil, func(s *setup) { s.server.WriteTimeout = 150 * time.Millisecond })
	res, err := h.srv.Client().Get(h.srv.URL + "/events")
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	lines := make(chan string)
	go func() {
		sc := bufio.NewScanner(res.Body)
		for sc.Scan() {
			if sc.Text() != "" {
				lines <- sc.Text()
			}
		}
		close(lines)
	}()
	select {
	case l := <-lines:
		if l != "data: first" {
			t.Fatalf("first line %q", l)
		}
	case <-time.After(5 * time.Second):
		close(release)
		t.Fatal("the first event did not arrive while the upstream held the stream open: buffered")
	}
	time.Sleep(250 * time.Millisecond) // past both timeouts
	select {
	case <-done:
		t.Fatal("the stream ended before the upstream was released")
	default:
	}
	close(release)
	if l := <-lines; l != "data: second" {
		t.Fatalf("second line %q", l)
	}
}

// TestWebSocket shows a message goes to an echo upstream and back on a
// WebSocket route, and that other routes refuse upgrades.
func TestWebSocket(t *testing.T) {
	up := newUpstream(t, wsEcho)
	ws := testRoute("ws", "/ws", "authenticated", up.URL)
	ws.WebSocket = true
	h := newHarness(t, []RouteConfig{ws, testRoute("plain", "/plain", "authenticated", up.URL)}, nil)

	conn, br := wsDial(t, h.srv.Listener.Addr().String(), "/ws/chat?room=1", "u1|t1|")
	defer conn.Close()
	for _, msg := range []string{"hello through the gateway", strings.Repeat("x", 70000)} {
		if err := wsWrite(conn, []byte(msg), true); err != nil {
			t.Fatal(err)
		}
		got, err := wsRead(br)
		if err != nil {
			t.Fatal(err)
		}
		if string(got) != msg {
			t.Fatalf("echo of %d bytes came back as %d bytes", len(msg), len(got))
		}
	}

	n := up.hits.Load()
	for _, c := range []struct{ path, upgrade string }{{"/plain/chat", "websocket"}, {"/ws/chat", "h2c"}} {
		res, body := h.raw("GET " + c.path + " HTTP/1.1\r\nHost: gw\r\nConnection: Upgrade\r\nUpgrade: " + c.upgrade +
			"\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nX-Test-User: u1|t1|\r\n\r\n")
		wantError(t, res, body, http.StatusBadRequest, "upgrade_not_allowed")
	}
	if up.hits.Load() != n {
		t.Fatal("a refused upgrade reached the upstream")
	}
}

const wsGUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"

// wsEcho is a minimal WebSocket echo server (RFC 6455): the handshake on
// the hijacked connection, then each message sent back.
func wsEcho(w http.ResponseWriter, r *http.Request) {
	if !strings.EqualFold(r.Header.Get("Upgrade"), "websocket") || r.Header.Get("X-Gatehouse-User") != "u1" {
		http.Error(w, "want a websocket upgrade from u1", http.StatusBadRequest)
		return
	}
	conn, brw, err := http.NewResponseController(w).Hijack()
	if err != nil {
		return
	}
	defer conn.Close()
	sum := sha1.Sum([]byte(r.Header.Get("Sec-WebSocket-Key") + wsGUID))
	fmt.Fprintf(brw, "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: %s\r\n\r\n",
		base64.StdEncoding.EncodeToString(sum[:]))
	if brw.Flush() != nil {
		return
	}
	for {
		msg, err := wsRead(brw.Reader)
		if err != nil || wsWrite(conn, msg, false) != nil {
			return
		}
	}
}

// wsDial opens a WebSocket through the gateway and checks the handshake.
func wsDial(t *testing.T, addr, path, user string) (net.Conn, *bufio.Reader) {
	t.Helper()
	conn, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	_ = conn.SetDeadline(time.Now().Add(10 * time.Second))
	key := base64.StdEncoding.EncodeToString([]byte("0123456789abcdef"))
	fmt.Fprintf(conn, "GET %s HTTP/1.1\r\nHost: gw\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\n"+
		"Sec-WebSocket-Key: %s\r\nX-Test-User: %s\r\n\r\n", path, key, user)
	br := bufio.NewReader(conn)
	res, err := http.ReadResponse(br, nil)
	if err != nil {
		t.Fatal(err)
	}
	sum := sha1.Sum([]byte(key + wsGUID))
	if res.StatusCode != http.StatusSwitchingProtocols || res.Header.Get("Sec-WebSocket-Accept") != base64.StdEncoding.EncodeToString(sum[:]) {
		b, _ := io.ReadAll(res.Body)
		t.Fatalf("handshake: %d %v %s", res.StatusCode, res.Header, b)
	}
	return conn, br
}

// wsWrite writes one final binary frame, masked as a client must.
func wsWrite(w io.Writer, payload []byte, mask bool) error {
	hdr := []byte{0x82, 0}
	switch n := len(payload); {
	case n < 126:
		hdr[1] = byte(n)
	case n < 1<<16:
		hdr[1] = 126
		hdr = binary.BigEndian.AppendUint16(hdr, uint16(n))
	default:
		hdr[1] = 127
		hdr = binary.BigEndian.AppendUint64(hdr, uint64(n))
	}
	if mask {
		hdr[1] |= 0x80
		key := [4]byte{1, 2, 3, 4}
		hdr = append(hdr, key[:]...)
		masked := make([]byte, len(payload))
		for i, b := range payload {
			masked[i] = b ^ key[i%4]
		}
		payload = masked
	}
	_, err := w.Write(append(hdr, payload...))
	return err
}

// wsRead reads one frame and returns its unmasked payload.
func wsRead(r *bufio.Reader) ([]byte, error) {
	var hdr [2]byte
	if _, err := io.ReadFull(r, hdr[:]); err != nil {
		return nil, err
	}
	if hdr[0]&0x0f == 0x8 {
		return nil, errors.New("close frame")
	}
	n := uint64(hdr[1] & 0x7f)
	switch n {
	case 126:
		var b [2]byte
		if _, err := io.ReadFull(r, b[:]); err != nil {
			return nil, err
		}
		n = uint64(binary.BigEndian.Uint16(b[:]))
	case 127:
		var b [8]byte
		if _, err := io.ReadFull(r, b[:]); err != nil {
			return nil, err
		}
		n = binary.BigEndian.Uint64(b[:])
	}
	var key [4]byte
	masked := hdr[1]&0x80 != 0
	if masked {
		if _, err := io.ReadFull(r, key[:]); err != nil {
			return nil, err
		}
	}
	payload := make([]byte, n)
	if _, err := io.ReadFull(r, payload); err != nil {
		return nil, err
	}
	if masked {
		for i := range payload {
			payload[i] ^= key[i%4]
		}
	}
	return payload, nil
}

// TestIdleTimeout shows an answer whose body stops coming is cut off
// after the route's idle_timeout, on both transports: the client sees
// the body break off, the upstream sees its connection closed, the
// attempt is logged and counted as a timeout. Before, the handler waited
// on the upstream for as long as it kept the connection open.
func TestIdleTimeout(t *testing.T) {
	for _, method := range []string{http.MethodGet, http.MethodPost} { // the direct path, then http.Transport
		t.Run(method, func(t *testing.T) {
			left := make(chan struct{})
			up := newUpstream(t, func(w http.ResponseWriter, r *http.Request) {
				defer close(left)
				w.Header().Set("Content-Length", "100")
				io.WriteString(w, "ten bytes.")
				w.(http.Flusher).Flush()
				select {
				case <-r.Context().Done(): // the gateway closed the connection
				case <-time.After(10 * time.Second):
				}
			})
			var outcomes syncBuffer
			r := testRoute("stall", "/stall", "public", up.URL)
			r.IdleTimeout = 200 * time.Millisecond
			h := newHarness(t, []RouteConfig{r}, nil, func(s *setup) {
				s.deps.Observe = func(_ string, _ time.Duration, o string) { fmt.Fprintln(&outcomes, o) }
			})
			req, _ := http.NewRequest(method, h.srv.URL+"/stall", strings.NewReader("x"))
			client := *h.srv.Client()
			client.Timeout = 10 * time.Second // a hang fails, not blocks, the test
			began := time.Now()
			// The headers and the ten bytes may still sit in the server's
			// buffer when the exchange is cut off: the client then sees the
			// connection close before any answer, else the body break off.
			res, err := client.Do(req)
			var b []byte
			if err == nil {
				b, err = io.ReadAll(res.Body)
				res.Body.Close()
				if res.StatusCode != http.StatusOK || string(b) != "ten bytes."[:len(b)] {
					t.Fatalf("got %d %q", res.StatusCode, b)
				}
			}
			waited := time.Since(began)
			if err == nil {
				t.Fatalf("the answer came whole: %q", b)
			}
			if waited < 200*time.Millisecond || waited > 5*time.Second {
				t.Fatalf("the body broke off after %v, want after the idle timeout (200ms)", waited)
			}
			select {
			case <-left:
			case <-time.After(5 * time.Second):
				t.Fatal("the upstream's connection stayed open")
			}
			eventually(t, 5*time.Second, "the attempt counted as a timeout", func() bool {
				return strings.Contains(outcomes.String(), "timeout")
			})
			if !strings.Contains(h.logs.String(), "idle_timeout") {
				t.Errorf("nothing logged about the idle timeout: %s", h.logs)
			}
		})
	}
}

// TestIdleTimeoutStreams shows an event stream lives past idle_timeout
// while events keep coming, and is cut off once they stop or once the
// client stops taking them.
func TestIdleTimeoutStreams(t *testing.T) {
	t.Run("upstream", func(t *testing.T) {
		left := make(chan struct{})
		up := newUpstream(t, func(w http.ResponseWriter, r *http.Request) {
			defer close(left)
			w.Header().Set("Content-Type", "text/event-stream")
			for i := range 8 { // 400 ms of events, each within the idle timeout
				fmt.Fprintf(w, "data: %d\n\n", i)
				w.(http.Flusher).Flush()
				time.Sleep(50 * time.Millisecond)
			}
			<-r.Context().Done() // then silence
		})
		r := testRoute("events", "/events", "public", up.URL)
		r.IdleTimeout = 200 * time.Millisecond
		h := newHarness(t, []RouteConfig{r}, nil)
		client := *h.srv.Client()
		client.Timeout = 10 * time.Second
		began := time.Now()
		res, err := client.Get(h.srv.URL + "/events")
		if err != nil {
			t.Fatal(err)
		}
		defer res.Body.Close()
		b, err := io.ReadAll(res.Body)
		if err == nil || !strings.Contains(string(b), "data: 7") {
			t.Fatalf("got %q, %v; want all eight events, then the stream broken off", b, err)
		}
		if d := time.Since(began); d > 5*time.Second {
			t.Fatalf("the silent stream was cut off after %v, want about 600ms", d)
		}
		select {
		case <-left:
		case <-time.After(5 * time.Second):
			t.Fatal("the upstream's connection stayed open")
		}
	})
	t.Run("client", func(t *testing.T) {
		left := make(chan error, 1)
		up := newUpstream(t, func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Content-Type", "text/event-stream")
			event := []byte("data: " + strings.Repeat("x", 32<<10) + "\n\n")
			for {
				if _, err := w.Write(event); err != nil {
					left <- err
					return
				}
				w.(http.Flusher).Flush()
			}
		})
		r := testRoute("events", "/events", "public", up.URL)
		r.IdleTimeout = 200 * time.Millisecond
		h := newHarness(t, []RouteConfig{r}, nil)
		// A client that asks and then reads nothing: the socket buffers
		// fill and the gateway's writes to it block.
		conn, err := net.Dial("tcp", h.srv.Listener.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		io.WriteString(conn, "GET /events HTTP/1.1\r\nHost: x\r\n\r\n")
		select {
		case <-left:
		case <-time.After(10 * time.Second):
			t.Fatal("a client that reads nothing held the stream and the upstream")
		}
	})
}

// TestSlowRequestBody shows a client still sending its body when the
// route's timeout runs out answered 408 request_timeout, its read cut off
// then (not at the server's read timeout), and the upstream not blamed: a
// few slow clients, trickling or stalled, neither open the breaker of a
// healthy upstream nor keep its max_requests places.
func TestSlowRequestBody(t *testing.T) {
	up := newUpstream(t, echoHandler)
	rc := testRoute("svc", "/svc", "public", up.URL)
	rc.Timeout = 300 * time.Millisecond
	rc.Breaker = Breaker{Failures: 2, Cooldown: 30 * time.Second}
	rc.MaxRequests = 4
	h := newHarness(t, []RouteConfig{rc}, nil)
	slow := func(trickle bool) {
		conn, err := net.Dial("tcp", h.srv.Listener.Addr().String())
		if err != nil {
			t.Error(err)
			return
		}
		defer conn.Close()
		start := time.Now()
		_ = conn.SetDeadline(start.Add(5 * time.Second))
		io.WriteString(conn, "POST /svc/upload HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\nA")
		if trickle {
			go func() {
				for range 9 {
					time.Sleep(100 * time.Millisecond)
					if _, err := io.WriteString(conn, "A"); err != nil {
						return
					}
				}
			}()
		}
		res, err := http.ReadResponse(bufio.NewReader(conn), nil)
		if err != nil {
			t.Errorf("trickle %v: no answer: %v", trickle, err)
			return
		}
		body, _ := io.ReadAll(res.Body)
		if d := time.Since(start); res.StatusCode != http.StatusRequestTimeout || !strings.Contains(string(body), `"request_timeout"`) || d > 2*time.Second {
			t.Errorf("trickle %v: %d %s after %v, want 408 request_timeout at about the route's timeout", trickle, res.StatusCode, body, d)
		}
	}
	var wg sync.WaitGroup
	for _, trickle := range []bool{true, false, true, false} {
		wg.Go(func() { slow(trickle) })
	}
	wg.Wait()
	res, body := h.do(http.MethodPost, "/svc/ok", strings.NewReader("prompt"), nil)
	if res.StatusCode != http.StatusOK {
		t.Fatalf("after four slow clients: %d %s, want the healthy upstream's 200", res.StatusCode, body)
	}
	if strings.Contains(h.logs.String(), "upstream failed") {
		t.Errorf("the slow clients were held against the upstream:\n%s", h.logs)
	}
}

// TestEarlyHintsFiltered shows a 103 Early Hints keeping none of
// Gatehouse's cookies, and not sent at all to an HTTP/1.0 client, which
// would take it for the final response (RFC 9110, 15.2).
func TestEarlyHintsFiltered(t *testing.T) {
	up := newUpstream(t, func(w http.ResponseWriter, r *http.Request) {
		w.Header()["Set-Cookie"] = []string{"gatehouse_refresh=planted; Path=/v1/auth", "theme=dark"}
		w.Header().Set("Link", "</app.css>; rel=preload")
		w.WriteHeader(http.StatusEarlyHints)
		w.Header().Del("Set-Cookie")
		w.Header().Del("Link")
		_, _ = io.WriteString(w, "page")
	})
	h := newHarness(t, []RouteConfig{testRoute("api", "/api", "public", up.URL)}, nil,
		func(s *setup) { s.deps.Cookies = []string{"gatehouse_refresh", "gatehouse_csrf"} })
	read := func(request string) string {
		conn, err := net.Dial("tcp", h.srv.Listener.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		_ = conn.SetDeadline(time.Now().Add(5 * time.Second))
		io.WriteString(conn, request)
		b, _ := io.ReadAll(conn)
		return string(b)
	}
	got := read("GET /api/x HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
	hint, final, _ := strings.Cut(got, "\r\n\r\n")
	if !strings.HasPrefix(hint, "HTTP/1.1 103 ") || !strings.Contains(hint, "Link: </app.css>") ||
		!strings.Contains(hint, "Set-Cookie: theme=dark") || strings.Contains(hint, "gatehouse_refresh") {
		t.Errorf("HTTP/1.1: the hint was\n%s", hint)
	}
	if !strings.HasPrefix(final, "HTTP/1.1 200 ") {
		t.Errorf("HTTP/1.1: after the hint\n%s", final)
	}
	if got := read("GET /api/x HTTP/1.0\r\nHost: x\r\n\r\n"); !strings.HasPrefix(got, "HTTP/1.0 200 ") || strings.Contains(got, " 103 ") {
		t.Errorf("HTTP/1.0: the answer was\n%s", got)
	}
}
