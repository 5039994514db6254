package main

import (
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"slices"
	"strconv"
	"sync"
	"testing"
	"time"
)

// TestLoadGateway is the gateway's load benchmark, not a test: it asserts
// nothing about speed. Run it with
//
//	GATEHOUSE_LOAD=1 TEST_REDIS_URL=redis://127.0.0.1:6379/0 go test -run TestLoadGateway -v .
//
// It serves a trivial upstream and Gatehouse on loopback and, in one run,
// drives both with the same closed-loop clients: the upstream directly,
// then through Gatehouse (JWT check, rate limit on Redis, authorize, proxy).
// GATEHOUSE_LOAD_SECONDS (default 10) and GATEHOUSE_LOAD_CLIENTS (64) set
// the length and concurrency of each phase.
func TestLoadGateway(t *testing.T) {
	if os.Getenv("GATEHOUSE_LOAD") == "" {
		t.Skip("the load benchmark runs only with GATEHOUSE_LOAD=1 (see the README)")
	}
	seconds, _ := strconv.Atoi(os.Getenv("GATEHOUSE_LOAD_SECONDS"))
	clients, _ := strconv.Atoi(os.Getenv("GATEHOUSE_LOAD_CLIENTS"))
	if seconds <= 0 {
		seconds = 10
	}
	if clients <= 0 {
		clients = 64
	}

	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Write([]byte("ok"))
	}))
	defer up.Close()
	cfg := testConfig(t, backends[1]) // PostgreSQL is not on the path; Redis is (limits, revocation)
	for i := range cfg.RateLimit.Policies {
		cfg.RateLimit.Policies[i].Limit = 10000
		cfg.RateLimit.Policies[i].Period = time.Second
	}
	cfg.Log.Level = "warn" // the access log is measured by its own benchmark
	writeRoutes(t, cfg.Gateway.RoutesFile, "routes:\n  - name: bench\n    prefix: /api/bench\n    upstreams: ["+up.URL+"]\n    auth: orders:read\n")
	app := startApp(t, cfg)
	app.register(t, "load@example.com", "correct horse battery", "")
	tok := app.login(t, "load@example.com", "correct horse battery", "").AccessToken
	gh := httptest.NewServer(app)
	defer gh.Close()

	results := []phase{
		drive(t, "upstream directly", up.URL+"/api/bench/x", "", clients, seconds),
		drive(t, "through Gatehouse (JWT, Redis limit, authorize, proxy)", gh.URL+"/api/bench/x", tok, clients, seconds),
	}
	fmt.Printf("\n%-56s %10s %9s %9s %7s\n", "path", "req/s", "p50", "p99", "errors")
	for _, r := range results {
		fmt.Printf("%-56s %10.0f %9s %9s %7d\n", r.name, r.rps, r.p50.Round(time.Microsecond), r.p99.Round(time.Microsecond), r.errors)
	}
	fmt.Printf("ratio: %.2f of the direct req/s (%d clients, %ds each, %s)\n\n",
		results[1].rps/results[0].rps, clients, seconds, time.Now().UTC().Format("2006-01-02"))
}

type phase struct {
	name     string
	rps      float64
	p50, p99 time.Duration
	errors   int
}

// drive runs closed-loop clients against url for the given seconds.
func drive(t *testing.T, name, url, bearer string, clients, seconds int) phase {
	tr := &http.Transport{MaxIdleConnsPerHost: clients, MaxConnsPerHost: clients}
	defer tr.CloseIdleConnections()
	client := &http.Client{Transport: tr, Timeout: 10 * time.Second}
	deadline := time.Now().Add(time.Duration(seconds) * time.Second)
	var (
		mu     sync.Mutex
		lat    []time.Duration
		errors int
		wg     sync.WaitGroup
	)
	start := time.Now()
	for range clients {
		wg.Go(func() {
			var mine []time.Duration
			bad := 0
			for time.Now().Before(deadline) {
				req, _ := http.NewRequest("GET", url, nil)
				if bearer != "" {
					req.Header.Set("Authorization", "Bearer "+bearer)
				}
				t0 := time.Now()
				res, err := client.Do(req)
				if err != nil {
					bad++
					continue
				}
				var buf [64]byte
				for {
					if _, err := res.Body.Read(buf[:]); err != nil {
						break
					}
				}
				res.Body.Close()
				if res.StatusCode != 200 {
					bad++
					continue
				}
				mine = append(mine, time.Since(t0))
			}
			mu.Lock()
			lat, errors = append(lat, mine...), errors+bad
			mu.Unlock()
		})
	}
	wg.Wait()
	elapsed := time.Since(start)
	if len(lat) == 0 {
		t.Fatalf("%s: no request succeeded (%d errors)", name, errors)
	}
	slices.Sort(lat)
	return phase{name: name, rps: float64(len(lat)) / elapsed.Seconds(), p50: lat[len(lat)/2], p99: lat[len(lat)*99/100], errors: errors}
}
