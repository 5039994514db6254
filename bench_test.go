package main

import (
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"golang.org/x/crypto/bcrypt"

	"gatehouse/platform/config"
)

// BenchmarkBcrypt is the ceiling of logins: one bcrypt comparison at the
// default cost (12), nothing else.
func BenchmarkBcrypt(b *testing.B) {
	hash, err := bcrypt.GenerateFromPassword([]byte("correct horse battery"), 12)
	if err != nil {
		b.Fatal(err)
	}
	for b.Loop() {
		if err := bcrypt.CompareHashAndPassword(hash, []byte("correct horse battery")); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkLogin is POST /v1/auth/login through the whole app at the
// default cost, on the embedded default: bcrypt, a session row, a refresh
// token and a signed access token. Compare its ns/op with BenchmarkBcrypt.
func BenchmarkLogin(b *testing.B) {
	cfg := config.Default()
	cfg.Auth.FailedLoginDelay = 0
	cfg.Database.SQLitePath = b.TempDir() + "/g.db"
	app := startApp(b, cfg)
	app.register(b, "bench@example.com", "correct horse battery", "")
	body := `{"email":"bench@example.com","password":"correct horse battery"}`
	b.ReportAllocs()
	for b.Loop() {
		r := httptest.NewRequest(http.MethodPost, "/v1/auth/login", strings.NewReader(body))
		r.Header.Set("Content-Type", "application/json")
		rec := httptest.NewRecorder()
		app.ServeHTTP(rec, r)
		if rec.Code != http.StatusOK {
			b.Fatalf("login: %d %s", rec.Code, rec.Body)
		}
	}
}
