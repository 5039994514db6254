package httpx

import (
	"bytes"
	"context"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/labstack/echo/v4"
)

// viaSlog is the line as slog's JSON handler with default options writes it.
func viaSlog(t testing.TB, l *accessLine) string {
	t.Helper()
	var buf bytes.Buffer
	if err := slog.NewJSONHandler(&buf, nil).Handle(context.Background(), l.record()); err != nil {
		t.Fatal(err)
	}
	return buf.String()
}

func sampleLine() accessLine {
	return accessLine{at: time.Date(2026, 11, 22, 21, 55, 3, 120_450_000, time.FixedZone("X", 3600)),
		id: "01a20542-6f16-7e4b-902c-a76d2f151599", method: "GET", path: "/v1/permissions/mine",
		route: "/v1/permissions/mine", status: 200, bytes: 106, dur: 183_456 * time.Nanosecond, ip: "127.0.0.1"}
}

// TestAccessLineJSON: the fast encoder writes what slog would, byte for
// byte, and steps aside for anything slog would escape.
func TestAccessLineJSON(t *testing.T) {
	edit := func(f func(*accessLine)) accessLine { l := sampleLine(); f(&l); return l }
	fast := map[string]accessLine{
		"typical":        sampleLine(),
		"utc, whole sec": edit(func(l *accessLine) { l.at = time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC) }),
		"empty strings":  edit(func(l *accessLine) { l.id, l.route, l.path = "", "", "" }),
		"no answer":      edit(func(l *accessLine) { l.status, l.bytes, l.dur = 0, 0, 0 }),
		"negative":       edit(func(l *accessLine) { l.status, l.bytes, l.dur = -1, -1, -time.Second }),
		"html and punct": edit(func(l *accessLine) { l.path = "/a<b>&c'd/{x}?;%~" }),
		"ipv6":           edit(func(l *accessLine) { l.ip = "2001:db8::1" }),
	}
	for name, l := range fast {
		got, ok := l.appendJSON(nil)
		if !ok {
			t.Errorf("%s: the fast path refused a plain line", name)
			continue
		}
		if want := viaSlog(t, &l); string(got) != want {
			t.Errorf("%s:\n got %s\nwant %s", name, got, want)
		}
	}
	slow := map[string]accessLine{
		"quote in path":     edit(func(l *accessLine) { l.path = `/a"b` }),
		"backslash in id":   edit(func(l *accessLine) { l.id = `a\b` }),
		"newline in path":   edit(func(l *accessLine) { l.path = "/a\nb" }),
		"control in ip":     edit(func(l *accessLine) { l.ip = "1.2.3.4\x00" }),
		"DEL in path":       edit(func(l *accessLine) { l.path = "/a\x7f" }),
		"unicode in path":   edit(func(l *accessLine) { l.path = "/caf\u00e9\u2028" }),
		"invalid utf-8":     edit(func(l *accessLine) { l.path = "/\xff\xfe" }),
		"year 10000":        edit(func(l *accessLine) { l.at = time.Date(10000, 1, 1, 0, 0, 0, 0, time.UTC) }),
		"negative year":     edit(func(l *accessLine) { l.at = time.Date(-1, 1, 1, 0, 0, 0, 0, time.UTC) }),
		"quote in route":    edit(func(l *accessLine) { l.route = `"` }),
		"tab in the method": edit(func(l *accessLine) { l.method = "G\tT" }),
	}
	for name, l := range slow {
		got, ok := l.appendJSON([]byte("kept"))
		if ok || string(got) != "kept" {
			t.Errorf("%s: the fast path took it (%q)", name, got)
		}
	}
}

// FuzzAccessLineJSON: whatever the fields, the fast path either writes
// slog's bytes or refuses, and refuses only lines that need escaping.
func FuzzAccessLineJSON(f *testing.F) {
	f.Add("/v1/x", "1.2.3.4", "id-1", 200, int64(10), int64(12345), int64(1795384570123456789))
	f.Add("/\"\n\xff", "::1", `\`, -5, int64(-1), int64(-3), int64(0))
	f.Fuzz(func(t *testing.T, path, ip, id string, status int, size, dur, unixNano int64) {
		l := accessLine{at: time.Unix(0, unixNano), id: id, method: "GET", path: path, route: "/v1/x",
			status: status, bytes: size, dur: time.Duration(dur), ip: ip}
		got, ok := l.appendJSON(nil)
		needsEscape := !plain(path) || !plain(ip) || !plain(id)
		switch {
		case ok && needsEscape:
			t.Fatalf("took a line that needs escaping: %q", got)
		case !ok && !needsEscape && l.at.Year() >= 0 && l.at.Year() < 10000:
			t.Fatal("refused a plain line")
		case ok:
			if want := viaSlog(t, &l); string(got) != want {
				t.Fatalf("\n got %s\nwant %s", got, want)
			}
		}
	})
}

// TestAccessLogThroughTheQueue: the server's access lines, fast and slow
// alike, come out of the async log as slog would have written them; with
// the text format they are text.
func TestAccessLogThroughTheQueue(t *testing.T) {
	for _, format := range []string{"json", "text"} {
		t.Run(format, func(t *testing.T) {
			out := &lockedBuffer{}
			h := NewAsyncHandler(out, 0, format, slog.LevelInfo)
			s := New(Options{Logger: slog.New(h), MaxBodyBytes: 64})
			if err := s.Mount(testRoutes()...); err != nil {
				t.Fatal(err)
			}
			for _, target := range []string{"/ok", `/v1/%22quoted%22%0Aline%FF`} {
				r := httptest.NewRequest(http.MethodGet, target, nil)
				r.Header.Set(echo.HeaderXRequestID, "rid-"+format)
				s.ServeHTTP(httptest.NewRecorder(), r)
			}
			h.Flush()
			text := out.String()
			lines := strings.Split(strings.TrimSuffix(text, "\n"), "\n")
			if len(lines) != 2 {
				t.Fatalf("want 2 lines, got %d:\n%s", len(lines), text)
			}
			if format == "text" {
				for _, want := range []string{`msg=request`, `path=/ok`, `path="/v1/\"quoted\"\nline\xff"`} {
					if !strings.Contains(text, want) {
						t.Errorf("text log lacks %s:\n%s", want, text)
					}
				}
				return
			}
			got := jsonLines(t, text)
			if got[0]["path"] != "/ok" || got[0]["request_id"] != "rid-json" || got[0]["msg"] != "request" ||
				got[0]["status"] != float64(http.StatusOK) {
				t.Errorf("fast line: %v", got[0])
			}
			if got[1]["path"] != "/v1/\"quoted\"\nline\ufffd" || got[1]["status"] != float64(http.StatusNotFound) {
				t.Errorf("escaped line: %v", got[1])
			}
		})
	}
}
