package httpx

import (
	"bytes"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"testing"

	"github.com/labstack/echo/v4"
)

// discardWriter is a ResponseWriter that keeps nothing, so the benchmark
// measures the chain and not the recorder.
type discardWriter struct{ h http.Header }

func (w *discardWriter) Header() http.Header         { return w.h }
func (w *discardWriter) Write(b []byte) (int, error) { return len(b), nil }
func (w *discardWriter) WriteHeader(int)             {}

func trivial(c echo.Context) error { return c.String(http.StatusOK, "ok") }

func serve(b *testing.B, h http.Handler) {
	req := httptest.NewRequest(http.MethodGet, "/v1/ping", nil)
	w := &discardWriter{h: http.Header{}}
	b.ReportAllocs()
	b.ResetTimer()
	for b.Loop() {
		clear(w.h)
		h.ServeHTTP(w, req)
	}
}

// BenchmarkBareEcho is the baseline: the trivial handler on a plain Echo.
func BenchmarkBareEcho(b *testing.B) {
	e := echo.New()
	e.GET("/v1/ping", trivial)
	serve(b, e)
}

// BenchmarkChain is the same handler behind the global chain (request id,
// access log, recover, security headers) and the route steps (body limit),
// identity slots empty. Its difference from BenchmarkBareEcho is the chain's
// cost per request. The access log goes through the real JSON handler,
// either on the request's goroutine (sync-log, as before) or queued for the
// log's goroutine (async-log, as the server runs), to io.Discard or to
// /dev/null (a real write(2) per flush, as to stdout). The async runs also
// report the share of lines that reached the output: under 1 means the
// writer fell behind and dropped some.
func BenchmarkChain(b *testing.B) {
	outputs := []struct {
		name string
		open func(b *testing.B) io.Writer
	}{
		{"discard", func(*testing.B) io.Writer { return io.Discard }},
		{"devnull", func(b *testing.B) io.Writer {
			f, err := os.OpenFile(os.DevNull, os.O_WRONLY, 0)
			if err != nil {
				b.Fatal(err)
			}
			b.Cleanup(func() { f.Close() })
			return f
		}},
	}
	for _, o := range outputs {
		b.Run(o.name+"/sync-log", func(b *testing.B) {
			serve(b, benchServer(b, slog.New(slog.NewJSONHandler(o.open(b), nil))))
		})
		b.Run(o.name+"/async-log", func(b *testing.B) {
			out := &lineCounter{w: o.open(b)}
			h := NewAsyncHandler(out, 0, "json", slog.LevelInfo)
			serve(b, benchServer(b, slog.New(h)))
			b.StopTimer()
			h.Close()
			b.ReportMetric(float64(out.requests)/float64(b.N), "written/op")
		})
	}
}

// lineCounter counts the access lines written through it. Only the log's
// goroutine writes to it.
type lineCounter struct {
	w        io.Writer
	requests int
}

func (c *lineCounter) Write(p []byte) (int, error) {
	c.requests += bytes.Count(p, []byte(`"msg":"request"`))
	return c.w.Write(p)
}

// BenchmarkChainNoAccessLog is BenchmarkChain with the log level above
// info: what the chain costs apart from the access line.
func BenchmarkChainNoAccessLog(b *testing.B) {
	serve(b, benchServer(b, slog.New(slog.NewJSONHandler(io.Discard, &slog.HandlerOptions{Level: slog.LevelWarn}))))
}

func benchServer(b *testing.B, log *slog.Logger) *Server {
	s := New(Options{
		Logger:       log,
		PublicURL:    "https://auth.example.com",
		MaxBodyBytes: 1 << 20,
		HSTSMaxAge:   1 << 40,
	})
	if err := s.Mount(Route{Method: http.MethodGet, Path: "/v1/ping", Auth: Public, Handle: trivial}); err != nil {
		b.Fatal(err)
	}
	return s
}
