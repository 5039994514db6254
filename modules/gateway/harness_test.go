package gateway

import (
	"bufio"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/labstack/echo/v4"

	"gatehouse/platform/fault"
	"gatehouse/platform/httpx"
	"gatehouse/platform/testenv"
)

// harness is a gateway mounted on the real chain (httpx) and served over
// TCP, with a test authenticate step: X-Test-User "user|tenant|role,role"
// is the caller; without it a route that needs identity answers 401.
type harness struct {
	t     testing.TB
	gw    *Gateway
	srv   *httptest.Server
	clock *clock
	logs  *syncBuffer
}

// setup is what a test may adjust before the harness starts.
type setup struct {
	deps   Deps
	opts   httpx.Options
	server *http.Server
}

// newHarness serves routes; adjust may change the gateway's Deps, the
// chain's options and the HTTP server before it starts.
func newHarness(t testing.TB, routes []RouteConfig, signer Signer, adjust ...func(*setup)) *harness {
	t.Helper()
	h := &harness{t: t, clock: &clock{}, logs: &syncBuffer{}}
	h.clock.ns.Store(time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC).UnixNano())
	var sink io.Writer = h.logs
	if _, ok := t.(*testing.B); ok {
		sink = io.Discard // a growing log would count against B/op
	}
	log := slog.New(slog.NewTextHandler(sink, &slog.HandlerOptions{Level: slog.LevelDebug}))
	st := setup{deps: Deps{Signer: signer, Log: log},
		opts:   httpx.Options{Logger: log, MaxBodyBytes: 1 << 20, Slots: httpx.Slots{Authenticate: testAuthenticate}},
		server: &http.Server{}}
	for _, a := range adjust {
		a(&st)
	}
	gw, err := newGateway(&Config{Routes: routes}, st.deps, h.clock.now)
	if err != nil {
		t.Fatalf("gateway: %v", err)
	}
	t.Cleanup(gw.Close)
	h.gw = gw
	srv := httpx.New(st.opts)
	if err := srv.Mount(gw.Routes()...); err != nil {
		t.Fatalf("mount: %v", err)
	}
	h.srv = httptest.NewUnstartedServer(srv)
	st.server.Handler = srv
	h.srv.Config = st.server
	h.srv.Start()
	t.Cleanup(h.srv.Close)
	return h
}

// testAuthenticate is the authenticate slot of the tests.
func testAuthenticate(httpx.Route) echo.MiddlewareFunc {
	return func(next echo.HandlerFunc) echo.HandlerFunc {
		return func(c echo.Context) error {
			v := c.Request().Header.Get("X-Test-User")
			if v == "" {
				return fault.New(fault.Unauthenticated, "invalid_token", "the access token is invalid or expired")
			}
			p := strings.SplitN(v, "|", 3)
			for len(p) < 3 {
				p = append(p, "")
			}
			id := httpx.Identity{UserID: p[0], TenantID: p[1]}
			if p[2] != "" {
				id.Roles = strings.Split(p[2], ",")
			}
			return httpx.Admit(c, id, next)
		}
	}
}

// do sends a request to the gateway and returns the response with its
// body read.
func (h *harness) do(method, path string, body io.Reader, hdr map[string]string) (*http.Response, []byte) {
	h.t.Helper()
	req, err := http.NewRequest(method, h.srv.URL+path, body)
	if err != nil {
		h.t.Fatal(err)
	}
	for k, v := range hdr {
		req.Header.Set(k, v)
	}
	return h.send(req)
}

func (h *harness) send(req *http.Request) (*http.Response, []byte) {
	h.t.Helper()
	res, err := h.srv.Client().Do(req)
	if err != nil {
		h.t.Fatalf("%s %s: %v", req.Method, req.URL, err)
	}
	defer res.Body.Close()
	b, err := io.ReadAll(res.Body)
	if err != nil {
		h.t.Fatalf("%s %s: read: %v", req.Method, req.URL, err)
	}
	return res, b
}

// raw sends a request exactly as written (for paths a URL parser would
// clean or escape) and returns the response with its body read.
func (h *harness) raw(request string) (*http.Response, []byte) {
	h.t.Helper()
	conn, err := net.Dial("tcp", h.srv.Listener.Addr().String())
	if err != nil {
		h.t.Fatal(err)
	}
	defer conn.Close()
	_ = conn.SetDeadline(time.Now().Add(5 * time.Second))
	if _, err := io.WriteString(conn, request); err != nil {
		h.t.Fatal(err)
	}
	res, err := http.ReadResponse(bufio.NewReader(conn), nil)
	if err != nil {
		h.t.Fatalf("%q: %v", request, err)
	}
	defer res.Body.Close()
	b, _ := io.ReadAll(res.Body)
	return res, b
}

// wantError checks an answer in the JSON error model.
func wantError(t testing.TB, res *http.Response, body []byte, status int, code string) {
	t.Helper()
	if res.StatusCode != status {
		t.Fatalf("status %d, want %d; body %s", res.StatusCode, status, body)
	}
	var e httpx.ErrorBody
	if err := json.Unmarshal(body, &e); err != nil {
		t.Fatalf("body %q is not the error model: %v", body, err)
	}
	if e.Error.Code != code {
		t.Fatalf("code %q, want %q; body %s", e.Error.Code, code, body)
	}
	if e.Error.RequestID == "" {
		t.Errorf("error without a request id: %s", body)
	}
}

// clock is the breakers' clock in tests, moved by hand.
type clock struct{ ns atomic.Int64 }

func (c *clock) now() time.Time          { return time.Unix(0, c.ns.Load()) }
func (c *clock) advance(d time.Duration) { c.ns.Add(int64(d)) }

type syncBuffer = testenv.SyncBuffer

// upstream is a test upstream server that counts the requests it gets.
type testUpstream struct {
	*httptest.Server
	hits atomic.Int64
}

func newUpstream(t testing.TB, h http.HandlerFunc) *testUpstream {
	t.Helper()
	u := &testUpstream{}
	u.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		u.hits.Add(1)
		h(w, r)
	}))
	t.Cleanup(u.Close)
	return u
}

// seen is what the echo upstream reports about the request it got.
type seen struct {
	Method     string      `json:"method"`
	RequestURI string      `json:"request_uri"`
	Path       string      `json:"path"`
	RawQuery   string      `json:"raw_query"`
	Host       string      `json:"host"`
	Header     http.Header `json:"header"`
	BodySHA    string      `json:"body_sha"`
	BodyLen    int64       `json:"body_len"`
	Chunked    bool        `json:"chunked"`
}

// echoHandler answers with what it got, hashing the body as it streams.
func echoHandler(w http.ResponseWriter, r *http.Request) {
	hash := sha256.New()
	n, err := io.Copy(hash, r.Body)
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "max-age=60")
	_ = json.NewEncoder(w).Encode(seen{Method: r.Method, RequestURI: r.RequestURI, Path: r.URL.Path, RawQuery: r.URL.RawQuery,
		Host: r.Host, Header: r.Header, BodySHA: hex.EncodeToString(hash.Sum(nil)), BodyLen: n,
		Chunked: len(r.TransferEncoding) > 0})
}

func decodeSeen(t testing.TB, res *http.Response, body []byte) seen {
	t.Helper()
	if res.StatusCode != http.StatusOK {
		t.Fatalf("status %d, body %s", res.StatusCode, body)
	}
	var s seen
	if err := json.Unmarshal(body, &s); err != nil {
		t.Fatalf("upstream answer %q: %v", body, err)
	}
	return s
}

// deadURL is the address of a port nothing listens on: connecting is
// refused.
func deadURL(t testing.TB) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	return "http://" + addr
}

// fakeSigner signs "internal.<audience>.<user>", or fails when err is set.
type fakeSigner struct{ err error }

func (s fakeSigner) SignInternal(_ context.Context, aud string, id *httpx.Identity) (string, error) {
	if s.err != nil {
		return "", s.err
	}
	if id == nil {
		return "", errors.New("no identity")
	}
	return fmt.Sprintf("internal.%s.%s", aud, id.UserID), nil
}

// patterned is a reader of n bytes that are not all alike (a repeated
// random-looking block, its length prime to the copy buffers), made
// without an n-byte slice.
type patterned struct {
	block []byte
	off   int
	left  int64
}

func newPatterned(n int64) *patterned {
	block := make([]byte, 65521)
	x := uint32(2463534242)
	for i := range block {
		x ^= x << 13
		x ^= x >> 17
		x ^= x << 5
		block[i] = byte(x)
	}
	return &patterned{block: block, left: n}
}

func (p *patterned) Read(b []byte) (int, error) {
	if p.left == 0 {
		return 0, io.EOF
	}
	if int64(len(b)) > p.left {
		b = b[:p.left]
	}
	n := 0
	for n < len(b) {
		c := copy(b[n:], p.block[p.off:])
		n += c
		p.off = (p.off + c) % len(p.block)
	}
	p.left -= int64(n)
	return n, nil
}

// route is a RouteConfig with the test defaults.
func testRoute(name, prefix, auth string, upstreams ...string) RouteConfig {
	return RouteConfig{Name: name, Prefix: prefix, Auth: auth, Upstreams: upstreams}
}

// eventually polls cond until it holds or time runs out.
func eventually(t testing.TB, within time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(within)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("not within %v: %s", within, what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}
