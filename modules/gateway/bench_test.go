package gateway

import (
	"bytes"
	"io"
	"net/http"
	"testing"
)

// BenchmarkProxy measures a GET through the chain and the proxy to a
// trivial upstream, over loopback. Client, gateway and upstream share the
// process, so B/op covers all three: it stays under the 32 KiB copy
// buffer, which comes from the pool rather than each request.
func BenchmarkProxy(b *testing.B) {
	up := newUpstream(b, func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "ok") })
	h := newHarness(b, []RouteConfig{testRoute("bench", "/bench", "authenticated", up.URL)}, nil)
	req, _ := http.NewRequest(http.MethodGet, h.srv.URL+"/bench/items?page=2", nil)
	req.Header.Set("X-Test-User", "u1|t1|member")
	client := h.srv.Client()
	b.ReportAllocs()
	b.ResetTimer()
	for b.Loop() {
		res, err := client.Do(req)
		if err != nil {
			b.Fatal(err)
		}
		_, _ = io.Copy(io.Discard, res.Body)
		res.Body.Close()
		if res.StatusCode != http.StatusOK {
			b.Fatalf("status %d", res.StatusCode)
		}
	}
}

// BenchmarkProxyUpload sends a 256 KiB body per request, streamed.
func BenchmarkProxyUpload(b *testing.B) {
	up := newUpstream(b, func(w http.ResponseWriter, r *http.Request) { _, _ = io.Copy(io.Discard, r.Body) })
	h := newHarness(b, []RouteConfig{testRoute("bench", "/bench", "public", up.URL)}, nil)
	data := bytes.Repeat([]byte("0123456789abcdef"), 16<<10)
	client := h.srv.Client()
	b.SetBytes(int64(len(data)))
	b.ReportAllocs()
	b.ResetTimer()
	for b.Loop() {
		res, err := client.Post(h.srv.URL+"/bench/up", "application/octet-stream", bytes.NewReader(data))
		if err != nil {
			b.Fatal(err)
		}
		_, _ = io.Copy(io.Discard, res.Body)
		res.Body.Close()
		if res.StatusCode != http.StatusOK {
			b.Fatalf("status %d", res.StatusCode)
		}
	}
}

// TestBufferPoolAllocs shows the copy buffers are reused: after the
// first, lending and returning one allocates nothing.
func TestBufferPoolAllocs(t *testing.T) {
	var p bufferPool
	p.Put(p.Get())
	if n := testing.AllocsPerRun(100, func() { p.Put(p.Get()) }); n != 0 {
		t.Fatalf("%v allocations per Get/Put", n)
	}
}
