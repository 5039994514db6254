package httpx

import (
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
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
// access log to a discarding JSON handler, recover, security headers) and
// the route steps (body limit), identity slots empty. Its difference from
// BenchmarkBareEcho is the chain's cost per request.
func BenchmarkChain(b *testing.B) {
	serve(b, benchServer(b, slog.LevelInfo))
}

// BenchmarkChainNoAccessLog is BenchmarkChain with the log level above
// info: what the chain costs apart from formatting the access line.
func BenchmarkChainNoAccessLog(b *testing.B) {
	serve(b, benchServer(b, slog.LevelWarn))
}

func benchServer(b *testing.B, level slog.Level) *Server {
	s := New(Options{
		Logger:       slog.New(slog.NewJSONHandler(io.Discard, &slog.HandlerOptions{Level: level})),
		PublicURL:    "https://auth.example.com",
		MaxBodyBytes: 1 << 20,
		HSTSMaxAge:   1 << 40,
	})
	if err := s.Mount(Route{Method: http.MethodGet, Path: "/v1/ping", Auth: Public, Handle: trivial}); err != nil {
		b.Fatal(err)
	}
	return s
}
