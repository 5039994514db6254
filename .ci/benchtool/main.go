// Command benchtool is the Go half of the load benchmark in .ci/bench: the
// bare Echo baseline, the trivial upstream, the bench configuration, the
// account and token the runs use, HAProxy's public key, and the final table.
// The bash script orchestrates (starts, pins, stops); this program holds the
// pieces that are clumsy in bash. It is not part of the gatehouse binary.
//
//	benchtool bare ADDR                       bare Echo: GET /v1/auth/me and /v1/permissions/mine -> {"id":"x"}
//	benchtool bare --shaped ADDR              the same, answering with Gatehouse's response headers and
//	                                          server timeouts (a reference: what that shape costs alone)
//	benchtool upstream ADDR                   net/http answering "ok" to everything
//	benchtool config SRC DST [--relax-limits] [path=value ...]
//	                                          copy a gatehouse.yaml, changing keys
//	benchtool setup BASEURL EMAIL PASSWORD    register (if new), log in, print the access token
//	benchtool login BASEURL EMAIL PASSWORD    log in only, print the access token
//	benchtool pubkey BASEURL TOKEN OUT.pem    the JWKS key that signed TOKEN, as a PKIX PEM
//	benchtool claim TOKEN NAME                one claim of TOKEN (unverified), for the HAProxy config
//	benchtool waitup URL START_UNIX_NS SECS PID
//	                                          poll URL until 200; print ms since START
//	benchtool wrkparse FILE                   "rps p50_us p99_us non2xx socket_errors timeouts"
//	benchtool report RESULTS.tsv              the final table
package main

import (
	"bytes"
	"crypto/rsa"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"math/big"
	"net/http"
	"os"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/labstack/echo/v4"
	"gopkg.in/yaml.v3"
)

func main() {
	if len(os.Args) < 2 {
		usage()
	}
	args := os.Args[2:]
	var err error
	switch os.Args[1] {
	case "bare":
		shaped := len(args) == 2 && args[0] == "--shaped"
		if shaped {
			args = args[1:]
		}
		need(args, 1)
		err = bare(args[0], shaped)
	case "upstream":
		need(args, 1)
		err = upstream(args[0])
	case "config":
		if len(args) < 2 {
			usage()
		}
		err = config(args[0], args[1], args[2:])
	case "setup":
		need(args, 3)
		err = setup(args[0], args[1], args[2])
	case "login":
		need(args, 3)
		err = login(args[0], args[1], args[2])
	case "pubkey":
		need(args, 3)
		err = pubkey(args[0], args[1], args[2])
	case "claim":
		need(args, 2)
		err = claim(args[0], args[1])
	case "waitup":
		need(args, 4)
		err = waitup(args[0], args[1], args[2], args[3])
	case "wrkparse":
		need(args, 1)
		var r wrkResult
		if r, err = parseWrk(args[0]); err == nil {
			fmt.Printf("%.2f %.1f %.1f %d %d %d\n", r.RPS, r.P50, r.P99, r.Non2xx, r.SocketErrs, r.Timeouts)
		}
	case "report":
		need(args, 1)
		err = report(args[0])
	default:
		usage()
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "benchtool "+os.Args[1]+":", err)
		os.Exit(1)
	}
}

func usage() {
	fmt.Fprintln(os.Stderr, "usage: benchtool bare|upstream|config|setup|login|pubkey|claim|waitup|wrkparse|report ... (see the source)")
	os.Exit(2)
}

func need(args []string, n int) {
	if len(args) != n {
		usage()
	}
}

// bare is the baseline: Echo with one route doing the same shape of work as
// the protected route's handler (a small JSON object), and nothing else: no
// middleware, no logger, no recover.
//
// shaped makes a reference, not a baseline: the same handler also sets the
// response headers Gatehouse must send on a protected route (security
// headers, request id, both rate-limit trios; values as Gatehouse sends
// them) and the server gets Gatehouse's default timeouts. What it loses
// against bare Echo is what that response shape costs before any of the
// chain's work.
func bare(addr string, shaped bool) error {
	e := echo.New()
	e.HideBanner = true
	e.HidePort = true
	h := func(c echo.Context) error {
		if shaped {
			hd := c.Response().Header()
			for k, v := range shapedHeaders {
				hd[k] = []string{v}
			}
			hd["X-Request-Id"] = []string{fmt.Sprintf("01a20498-696b-7bcc-8529-%012x", time.Now().UnixNano()&0xffffffffffff)}
			hd["X-Ratelimit-Reset"] = []string{strconv.FormatInt(time.Now().Unix()+1, 10)}
		}
		return c.JSON(http.StatusOK, map[string]string{"id": "x"})
	}
	e.GET("/v1/auth/me", h)
	e.GET("/v1/permissions/mine", h)
	if !shaped {
		return e.Start(addr)
	}
	srv := &http.Server{Addr: addr, Handler: e, ReadHeaderTimeout: 5 * time.Second, ReadTimeout: 30 * time.Second,
		WriteTimeout: 60 * time.Second, IdleTimeout: 120 * time.Second}
	return srv.ListenAndServe()
}

// shapedHeaders are Gatehouse's fixed response headers on a protected JSON
// route (configs/gatehouse.yaml defaults, plain HTTP so no HSTS).
var shapedHeaders = map[string]string{
	"Cache-Control":              "no-store",
	"Content-Security-Policy":    "default-src 'none'; frame-ancestors 'none'",
	"Cross-Origin-Opener-Policy": "same-origin",
	"Referrer-Policy":            "no-referrer",
	"X-Content-Type-Options":     "nosniff",
	"X-Frame-Options":            "DENY",
	"Ratelimit-Limit":            "1000000",
	"Ratelimit-Remaining":        "999999",
	"Ratelimit-Reset":            "1",
	"X-Ratelimit-Limit":          "1000000",
	"X-Ratelimit-Remaining":      "999999",
}

// upstream is the service behind both gateways: as cheap as possible, so the
// measurement is the gateway's.
func upstream(addr string) error {
	ok := []byte("ok")
	return http.ListenAndServe(addr, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/plain")
		w.Write(ok)
	}))
}

// config copies a gatehouse.yaml through yaml.v3's node tree, so the bench
// starts from the repository's own file (comments, new keys and all) and
// changes only what it names. Each path=value sets a scalar; the value is
// parsed as YAML, so 2h, 12 and "" mean what they mean in the file.
// --relax-limits raises every rate-limit policy so the bench measures the
// limiter's decision, never its refusals: token_bucket gets 1000000 per
// second (the loader allows one per microsecond; a tenant-keyed one that
// divided by the largest plan factor), sliding_window its maximum 10000 per second. Names, algorithms,
// keys and on_error stay, and so do the anonymous/authenticated lists.
func config(src, dst string, args []string) error {
	data, err := os.ReadFile(src)
	if err != nil {
		return err
	}
	var doc yaml.Node
	if err := yaml.Unmarshal(data, &doc); err != nil {
		return err
	}
	if doc.Kind != yaml.DocumentNode || len(doc.Content) != 1 {
		return errors.New(src + ": not a YAML mapping")
	}
	root := doc.Content[0]
	for _, a := range args {
		if a == "--relax-limits" {
			if err := relaxLimits(root); err != nil {
				return err
			}
			continue
		}
		path, value, ok := strings.Cut(a, "=")
		if !ok {
			return fmt.Errorf("%q: want path=value", a)
		}
		var v yaml.Node
		if err := yaml.Unmarshal([]byte("v: "+value), &v); err != nil {
			return fmt.Errorf("%s: %w", a, err)
		}
		val := v.Content[0].Content[1]
		if err := setPath(root, strings.Split(path, "."), val); err != nil {
			return fmt.Errorf("%s: %w", path, err)
		}
	}
	var out bytes.Buffer
	enc := yaml.NewEncoder(&out)
	enc.SetIndent(2)
	if err := enc.Encode(&doc); err != nil {
		return err
	}
	return os.WriteFile(dst, out.Bytes(), 0o600)
}

func mapGet(m *yaml.Node, key string) *yaml.Node {
	if m.Kind != yaml.MappingNode {
		return nil
	}
	for i := 0; i+1 < len(m.Content); i += 2 {
		if m.Content[i].Value == key {
			return m.Content[i+1]
		}
	}
	return nil
}

// setPath replaces an existing key's value. A key missing from the file is
// added (the loader knows every setting; a wrong name fails loudly there).
func setPath(m *yaml.Node, path []string, val *yaml.Node) error {
	for i, k := range path {
		if m.Kind != yaml.MappingNode {
			return fmt.Errorf("%s is not a mapping", strings.Join(path[:i], "."))
		}
		next := mapGet(m, k)
		if i == len(path)-1 {
			if next != nil {
				*next = *val
			} else {
				m.Content = append(m.Content, &yaml.Node{Kind: yaml.ScalarNode, Tag: "!!str", Value: k}, val)
			}
			return nil
		}
		if next == nil {
			next = &yaml.Node{Kind: yaml.MappingNode, Tag: "!!map"}
			m.Content = append(m.Content, &yaml.Node{Kind: yaml.ScalarNode, Tag: "!!str", Value: k}, next)
		}
		m = next
	}
	return nil
}

func relaxLimits(root *yaml.Node) error {
	pol := mapGet(mapGet(root, "ratelimit"), "policies")
	if pol == nil || pol.Kind != yaml.SequenceNode || len(pol.Content) == 0 {
		return errors.New("ratelimit.policies: no list of policies in the file")
	}
	// A tenant's plan multiplies its tenant-keyed limits, and the loader
	// refuses a plan that takes one past its cap: those get the cap
	// divided by the largest factor (1000000 / 20 is still 50000 a second,
	// more than one Gatehouse serves here, in the bench's default-plan
	// tenant).
	most := 1
	if plans := mapGet(mapGet(root, "ratelimit"), "plans"); plans != nil && plans.Kind == yaml.MappingNode {
		for i := 1; i < len(plans.Content); i += 2 {
			if f, err := strconv.Atoi(plans.Content[i].Value); err == nil && f > most {
				most = f
			}
		}
	}
	for _, p := range pol.Content {
		alg := mapGet(p, "algorithm")
		limit := "1000000" // one per microsecond of 1s: the loader's cap
		if key := mapGet(p, "key"); key != nil && key.Value == "tenant" {
			limit = strconv.Itoa(1000000 / most)
		}
		if alg != nil && alg.Value == "sliding_window" {
			limit = "10000" // the loader's cap for an exact log (plans cap it)
		}
		for k, v := range map[string]string{"limit": limit, "period": "1s", "burst": "0"} {
			n := &yaml.Node{Kind: yaml.ScalarNode, Value: v}
			if k == "period" {
				n.Tag = "!!str"
			} else {
				n.Tag = "!!int"
			}
			if err := setPath(p, []string{k}, n); err != nil {
				return err
			}
		}
	}
	return nil
}

var client = &http.Client{Timeout: 30 * time.Second}

func postJSON(url string, body any) (int, []byte, error) {
	b, _ := json.Marshal(body)
	resp, err := client.Post(url, "application/json", bytes.NewReader(b))
	if err != nil {
		return 0, nil, err
	}
	defer resp.Body.Close()
	out, err := io.ReadAll(resp.Body)
	return resp.StatusCode, out, err
}

// setup registers the bench account (a second run against the same store
// finds it there: 409 is fine) and logs in once, printing the access token.
func setup(base, email, password string) error {
	code, body, err := postJSON(base+"/v1/auth/register", map[string]string{"email": email, "password": password, "name": "Bench"})
	if err != nil {
		return err
	}
	if code != http.StatusCreated && code != http.StatusConflict {
		return fmt.Errorf("register: %d %s", code, body)
	}
	return login(base, email, password)
}

func login(base, email, password string) error {
	code, body, err := postJSON(base+"/v1/auth/login", map[string]string{"email": email, "password": password})
	if err != nil {
		return err
	}
	if code != http.StatusOK {
		return fmt.Errorf("login: %d %s", code, body)
	}
	var tok struct {
		AccessToken string `json:"access_token"`
	}
	if err := json.Unmarshal(body, &tok); err != nil || tok.AccessToken == "" {
		return fmt.Errorf("login: no access_token in %s", body)
	}
	fmt.Println(tok.AccessToken)
	return nil
}

func jwtPart(token string, i int) (map[string]any, error) {
	parts := strings.Split(token, ".")
	if len(parts) != 3 {
		return nil, errors.New("not a JWT")
	}
	raw, err := base64.RawURLEncoding.DecodeString(parts[i])
	if err != nil {
		return nil, err
	}
	var m map[string]any
	d := json.NewDecoder(bytes.NewReader(raw))
	d.UseNumber()
	return m, d.Decode(&m)
}

// pubkey writes the RSA key that signed token (by kid) as a PKIX "PUBLIC
// KEY" PEM, the form HAProxy's jwt_verify loads.
func pubkey(base, token, out string) error {
	hdr, err := jwtPart(token, 0)
	if err != nil {
		return err
	}
	if hdr["alg"] != "RS256" {
		return fmt.Errorf("token alg %v: HAProxy's comparison needs RS256", hdr["alg"])
	}
	resp, err := client.Get(base + "/.well-known/jwks.json")
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	var set struct {
		Keys []struct {
			Kty, Kid, N, E string
		} `json:"keys"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&set); err != nil {
		return err
	}
	for _, k := range set.Keys {
		if k.Kty != "RSA" || k.Kid != hdr["kid"] {
			continue
		}
		n, err1 := base64.RawURLEncoding.DecodeString(k.N)
		e, err2 := base64.RawURLEncoding.DecodeString(k.E)
		if err := errors.Join(err1, err2); err != nil {
			return err
		}
		pub := &rsa.PublicKey{N: new(big.Int).SetBytes(n), E: int(new(big.Int).SetBytes(e).Int64())}
		der, err := x509.MarshalPKIXPublicKey(pub)
		if err != nil {
			return err
		}
		return os.WriteFile(out, pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der}), 0o644)
	}
	return fmt.Errorf("no RSA key with kid %v in the JWKS", hdr["kid"])
}

func claim(token, name string) error {
	c, err := jwtPart(token, 1)
	if err != nil {
		return err
	}
	v, ok := c[name]
	if !ok {
		return fmt.Errorf("no claim %q", name)
	}
	switch v := v.(type) {
	case string:
		fmt.Println(v)
	default:
		b, _ := json.Marshal(v)
		fmt.Println(string(b))
	}
	return nil
}

// waitup measures start-up: the script takes the time just before it
// starts the process; this polls every millisecond until 200, giving up
// at once when process pid has exited.
func waitup(url, startNS, secs, pid string) error {
	start, err := strconv.ParseInt(startNS, 10, 64)
	if err != nil {
		return err
	}
	limit, err := strconv.ParseFloat(secs, 64)
	if err != nil {
		return err
	}
	c := &http.Client{Timeout: time.Second}
	deadline := time.Now().Add(time.Duration(limit * float64(time.Second)))
	for time.Now().Before(deadline) {
		if _, err := os.Stat("/proc/" + pid); err != nil {
			return fmt.Errorf("process %s exited before %s answered", pid, url)
		}
		resp, err := c.Get(url)
		if err == nil {
			io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				fmt.Printf("%.1f\n", float64(time.Now().UnixNano()-start)/1e6)
				return nil
			}
		}
		time.Sleep(time.Millisecond)
	}
	return fmt.Errorf("%s: no 200 within %ss", url, secs)
}

type wrkResult struct {
	RPS                          float64
	P50, P99                     float64 // microseconds
	Non2xx, SocketErrs, Timeouts int64
}

var (
	reRPS    = regexp.MustCompile(`(?m)^Requests/sec:\s+([0-9.]+)`)
	rePct    = regexp.MustCompile(`(?m)^\s+(50|99)%\s+([0-9.]+)(us|ms|s|m|h)\s*$`)
	reNon2xx = regexp.MustCompile(`(?m)^\s*Non-2xx or 3xx responses:\s+(\d+)`)
	reSock   = regexp.MustCompile(`(?m)^\s*Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)`)
)

// parseWrk reads wrk --latency output; latencies are normalised to µs.
func parseWrk(file string) (wrkResult, error) {
	var r wrkResult
	data, err := os.ReadFile(file)
	if err != nil {
		return r, err
	}
	s := string(data)
	m := reRPS.FindStringSubmatch(s)
	if m == nil {
		return r, fmt.Errorf("%s: no Requests/sec line (wrk failed?)", file)
	}
	r.RPS, _ = strconv.ParseFloat(m[1], 64)
	unit := map[string]float64{"us": 1, "ms": 1e3, "s": 1e6, "m": 60e6, "h": 3600e6}
	found := 0
	for _, p := range rePct.FindAllStringSubmatch(s, -1) {
		v, _ := strconv.ParseFloat(p[2], 64)
		v *= unit[p[3]]
		if p[1] == "50" {
			r.P50 = v
		} else {
			r.P99 = v
		}
		found++
	}
	if found != 2 {
		return r, fmt.Errorf("%s: no 50%%/99%% latency lines (run wrk with --latency)", file)
	}
	if m := reNon2xx.FindStringSubmatch(s); m != nil {
		r.Non2xx, _ = strconv.ParseInt(m[1], 10, 64)
	}
	if m := reSock.FindStringSubmatch(s); m != nil {
		for _, x := range m[1:4] {
			n, _ := strconv.ParseInt(x, 10, 64)
			r.SocketErrs += n
		}
		r.Timeouts, _ = strconv.ParseInt(m[4], 10, 64)
	}
	return r, nil
}

func fmtLat(us float64) string {
	switch {
	case us >= 1e6:
		return fmt.Sprintf("%.2fs", us/1e6)
	case us >= 1e3:
		return fmt.Sprintf("%.2fms", us/1e3)
	default:
		return fmt.Sprintf("%.0fus", us)
	}
}

// report prints the final table from RESULTS.tsv, whose lines the script
// writes, tab-separated:
//
//	run    ID  LABEL  WRKFILE                      a wrk measurement
//	check  ID  KIND   BASELINE_ID  OP  TARGET      KIND rps|p99, OP >=|<=
//	value  LABEL  NUMBER  UNIT  OP  TARGET         RSS, start-up (OP/TARGET may be -)
//	note   TEXT                                    printed under the table
func report(file string) error {
	data, err := os.ReadFile(file)
	if err != nil {
		return err
	}
	// A scenario measured in several rounds (the same id on several run
	// lines) is shown by its medians: req/s, p50 and p99 each the median
	// of its rounds, so one disturbed round moves nothing.
	type run struct {
		label  string
		rounds []wrkResult
		r      wrkResult
	}
	runs := map[string]*run{}
	var order []string
	checks := map[string][][]string{}
	var values, notes [][]string
	for _, line := range strings.Split(strings.TrimRight(string(data), "\n"), "\n") {
		f := strings.Split(line, "\t")
		switch {
		case f[0] == "run" && len(f) == 4:
			r, err := parseWrk(f[3])
			if err != nil {
				return err
			}
			if runs[f[1]] == nil {
				runs[f[1]] = &run{label: f[2]}
				order = append(order, f[1])
			}
			runs[f[1]].rounds = append(runs[f[1]].rounds, r)
		case f[0] == "check" && len(f) == 6:
			checks[f[1]] = append(checks[f[1]], f[2:])
		case f[0] == "value" && len(f) == 6:
			values = append(values, f[1:])
		case f[0] == "note" && len(f) == 2:
			notes = append(notes, f[1:])
		case line == "":
		default:
			return fmt.Errorf("%s: bad line %q", file, line)
		}
	}
	for _, r := range runs {
		r.r = wrkResult{RPS: median(r.rounds, func(w wrkResult) float64 { return w.RPS }),
			P50: median(r.rounds, func(w wrkResult) float64 { return w.P50 }),
			P99: median(r.rounds, func(w wrkResult) float64 { return w.P99 })}
	}
	isBase := map[string]bool{}
	for _, cs := range checks {
		for _, c := range cs {
			isBase[c[1]] = true
		}
	}
	missed, checked := 0, 0
	verdict := func(v float64, op string, target float64) string {
		checked++
		ok := (op == ">=" && v >= target) || (op == "<=" && v <= target)
		if ok {
			return "met"
		}
		missed++
		return "MISSED"
	}
	tw := tabwriter.NewWriter(os.Stdout, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "scenario\treq/s\tp50\tp99\tratio\tbaseline\ttarget\tverdict\trounds (req/s)\t")
	for _, id := range order {
		r := runs[id]
		cols := fmt.Sprintf("%s\t%.0f\t%s\t%s", r.label, r.r.RPS, fmtLat(r.r.P50), fmtLat(r.r.P99))
		var each []string
		for _, w := range r.rounds {
			each = append(each, fmt.Sprintf("%.0f", w.RPS))
		}
		rounds := ""
		if len(each) > 1 {
			rounds = strings.Join(each, " / ")
		}
		cs := checks[id]
		if len(cs) == 0 {
			role := "-"
			if isBase[id] {
				role = "(baseline)"
			}
			fmt.Fprintf(tw, "%s\t-\t%s\t-\t\t%s\t\n", cols, role, rounds)
		}
		for i, c := range cs {
			kind, baseID, op, tgt := c[0], c[1], c[2], c[3]
			base, ok := runs[baseID]
			if !ok {
				return fmt.Errorf("check on %s names unknown baseline %s", id, baseID)
			}
			target, _ := strconv.ParseFloat(tgt, 64)
			var ratio float64
			if kind == "rps" {
				ratio = r.r.RPS / base.r.RPS
			} else {
				ratio = r.r.P99 / base.r.P99
			}
			if i > 0 {
				cols, rounds = "\t\t\t", ""
			}
			name := map[string]string{"rps": "req/s", "p99": "p99"}[kind]
			// Three decimals: 0.596 shown as 0.60 would look like a met 0.6.
			fmt.Fprintf(tw, "%s\t%s %.3fx\t%s\t%s %sx\t%s\t%s\t\n", cols, name, ratio, base.label, op, tgt, verdict(ratio, op, target), rounds)
		}
	}
	for _, v := range values {
		label, num, unit, op, tgt := v[0], v[1], v[2], v[3], v[4]
		n, _ := strconv.ParseFloat(num, 64)
		ver, target := "", "-"
		if op != "-" {
			t, _ := strconv.ParseFloat(tgt, 64)
			ver, target = verdict(n, op, t), op+" "+tgt+" "+unit
		}
		fmt.Fprintf(tw, "%s\t\t\t\t%s %s\t\t%s\t%s\t\t\n", label, num, unit, target, ver)
	}
	tw.Flush()
	if len(notes) > 0 {
		fmt.Println()
		for _, n := range notes {
			fmt.Println("- " + n[0])
		}
	}
	if checked > 0 {
		fmt.Printf("\ntargets: %d checked, %d met, %d missed\n", checked, checked-missed, missed)
	}
	return nil
}

// median of f over rs: the middle value, or the mean of the two middle
// ones.
func median(rs []wrkResult, f func(wrkResult) float64) float64 {
	v := make([]float64, len(rs))
	for i, r := range rs {
		v[i] = f(r)
	}
	sort.Float64s(v)
	n := len(v)
	if n%2 == 1 {
		return v[n/2]
	}
	return (v[n/2-1] + v[n/2]) / 2
}
