package metrics_test

import (
	"log/slog"
	"net/http"
	"net/http/httptest"
	"testing"

	"github.com/labstack/echo/v4"

	"gatehouse/platform/httpx"
	"gatehouse/platform/metrics"
)

// discardWriter keeps nothing, so the benchmarks measure the chain and not a
// recorder.
type discardWriter struct{ h http.Header }

func (w *discardWriter) Header() http.Header         { return w.h }
func (w *discardWriter) Write(b []byte) (int, error) { return len(b), nil }
func (w *discardWriter) WriteHeader(int)             {}

func noContent(c echo.Context) error { return c.NoContent(http.StatusNoContent) }

// BenchmarkSlot measures the metrics step alone, around a trivial handler.
func BenchmarkSlot(b *testing.B) {
	m := metrics.New()
	h := m.Slot(httpx.Route{Method: http.MethodGet, Path: "/x/{id}"})(noContent)
	e := echo.New()
	req := httptest.NewRequest(http.MethodGet, "/x/1", nil)
	w := &discardWriter{h: http.Header{}}
	c := e.NewContext(req, w)
	b.ReportAllocs()
	for b.Loop() {
		c.Reset(req, w)
		_ = h(c)
	}
}

// BenchmarkServer measures a request through the whole httpx chain with and
// without the metrics slot; the difference is the slot's cost in place.
func BenchmarkServer(b *testing.B) {
	r := httpx.Route{Method: http.MethodGet, Path: "/x/{id}", Auth: httpx.Public, Handle: noContent}
	for _, bc := range []struct {
		name string
		slot httpx.Slot
	}{{"without", nil}, {"with", metrics.New().Slot}} {
		b.Run(bc.name, func(b *testing.B) {
			s := httpx.New(httpx.Options{MaxBodyBytes: 1 << 20, Slots: httpx.Slots{Metrics: bc.slot},
				Logger: discardLogger()})
			if err := s.Mount(r); err != nil {
				b.Fatal(err)
			}
			req := httptest.NewRequest(http.MethodGet, "/x/1", nil)
			w := &discardWriter{h: http.Header{}}
			b.ReportAllocs()
			for b.Loop() {
				clear(w.h)
				s.ServeHTTP(w, req)
			}
		})
	}
}

func discardLogger() *slog.Logger { return slog.New(slog.DiscardHandler) }
