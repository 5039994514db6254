package gateway

import (
	"bytes"
	"fmt"
	"net"
	"net/url"
	"strings"
	"unicode"
	"unicode/utf8"

	"golang.org/x/text/unicode/norm"
)

// safePath reports whether a request path may be forwarded. It refuses
// what could make the gateway and an upstream disagree on which resource
// is meant, so a path cannot leave its route's prefix or slip past a more
// specific route:
//
//   - a segment of dots and spaces only, encoded or not: "." and ".."
//     are dot segments, which an upstream that resolves them would take
//     outside the prefix, and IIS and Windows drop trailing dots and
//     spaces, so ".. " or "..." can be one too;
//   - a control character beyond ASCII (U+0080 to U+009F);
//   - bytes that are not UTF-8: old decoders read an overlong "%C0%AE"
//     as a dot;
//   - an encoded slash or backslash, or a backslash: some servers split
//     on them, some do not;
//   - an empty segment ("//"): some servers merge them;
//   - a control character, encoded or not;
//   - a semicolon, encoded or not: servers such as Tomcat and Jetty cut a
//     segment at it (path parameters), so "/api/admin;x/y" would reach the
//     route of "/api" while the upstream reads "/api/admin/y";
//   - an encoded letter, digit or - . _ ~, which no client needs to encode:
//     Echo routes on the raw path, so "/api/%6Frders" would reach the
//     route of "/api" while the upstream reads "/api/orders";
//   - an escape escaped again ("%252e", which decodes to "%2e"): an
//     upstream that decodes twice would read "/api/%252e%252e/admin" as
//     "/api/../admin".
//
// A trailing slash is allowed.
func safePath(u *url.URL) bool {
	p := u.Path
	if !strings.HasPrefix(p, "/") {
		return false
	}
	for i := 1; i < len(p); i++ {
		switch c := p[i]; {
		case c == '\\' || c == ';' || c < 0x20 || c == 0x7f:
			return false
		case c == '%' && i+2 < len(p):
			// The decoded path holds a '%' only where "%25" was sent.
			if _, ok := unhex(p[i+1], p[i+2]); ok {
				return false
			}
		case c == '/' && p[i-1] == '/':
			return false // an empty segment
		case c >= utf8.RuneSelf:
			r, n := utf8.DecodeRuneInString(p[i:])
			if r == utf8.RuneError && n == 1 {
				return false // not UTF-8: %C0%AE, an overlong ".", is a dot to old decoders
			}
			if unicode.IsControl(r) {
				return false
			}
			i += n - 1
		}
	}
	for seg := range strings.SplitSeq(p[1:], "/") {
		if seg != "" && strings.Trim(seg, ". ") == "" {
			return false // dots and spaces only
		}
	}
	// The decoded path cannot show what was encoded; the raw one can. Go
	// keeps RawPath only when it differs from the default encoding.
	raw := u.RawPath
	for i := 0; i+2 < len(raw); i++ {
		if raw[i] != '%' {
			continue
		}
		c, ok := unhex(raw[i+1], raw[i+2])
		if !ok || c == '/' || c == '\\' || unreserved(c) {
			return false
		}
	}
	return true
}

// safeQuery reports whether a raw query may be forwarded: it holds no
// space or control character. The query goes upstream as sent, into an
// HTTP/1.1 request line, and an HTTP/2 client can send raw spaces in it
// ("?a HTTP/1.0 /api/admin HTTP/1.1"), which would change the line's
// meaning. Browsers encode these. They leave {|}^`\ unencoded, which
// HTTP/1.1 servers accept, so those pass, as do "<> (harmless to the
// line); bytes beyond ASCII pass too, percent-encoded (escapeHigh).
func safeQuery(q string) bool {
	for i := 0; i < len(q); i++ {
		if c := q[i]; c <= ' ' || c == 0x7f {
			return false
		}
	}
	return true
}

// escapeHigh percent-encodes a raw query's bytes beyond ASCII ("?q=café",
// as curl sends it), which some parsers read as line ends or spaces; the
// upstream decodes them to the same text.
func escapeHigh(q string) string {
	i := 0
	for i < len(q) && q[i] < utf8.RuneSelf {
		i++
	}
	if i == len(q) {
		return q
	}
	var b strings.Builder
	b.Grow(len(q) + 16)
	b.WriteString(q[:i])
	for ; i < len(q); i++ {
		if c := q[i]; c < utf8.RuneSelf {
			b.WriteByte(c)
		} else {
			fmt.Fprintf(&b, "%%%02X", c)
		}
	}
	return b.String()
}

// skeleton is a path as a lenient upstream may read it: compatibility
// forms folded (NFKC: a fullwidth "ａ" is "a", a fullwidth "／" a slash),
// invisible characters dropped (format characters such as U+200B, variation
// selectors, other default-ignorable ones), letters whose other case is
// ASCII taken as that (the dotless "ı" as "I"), and each segment without the
// white space around it or the dots after it, which IIS, Windows and
// Spring trim. The gateway refuses a path whose skeleton names a nested
// route's prefix (serve): "/api/admin./users" or "/api/admin%C2%A0/users"
// would reach the route of "/api" while such an upstream reads
// "/api/admin/users". Paths that name nothing nested ("example.org.",
// emoji joined by U+200D) pass as they are. An ASCII path without dots or
// spaces at a segment's ends is its own skeleton, made without allocating.
func skeleton(p string) string {
	plain := true
	for i := 0; i < len(p) && plain; i++ {
		c := p[i]
		end := i+1 == len(p) || p[i+1] == '/'
		plain = c < utf8.RuneSelf && !(c == ' ' && (end || i == 0 || p[i-1] == '/')) && !(c == '.' && end)
	}
	if plain {
		return p
	}
	p = strings.Map(func(r rune) rune {
		if unicode.In(r, unicode.Cf, unicode.Variation_Selector, unicode.Other_Default_Ignorable_Code_Point) {
			return -1
		}
		// A letter whose other case is ASCII is read as that letter by
		// stacks that compare paths in either case: Java's
		// equalsIgnoreCase reads "ı" as "I", and "İ" as "i".
		if u := unicode.ToUpper(r); r >= utf8.RuneSelf && u < utf8.RuneSelf {
			return u
		}
		if l := unicode.ToLower(r); r >= utf8.RuneSelf && l < utf8.RuneSelf {
			return l
		}
		return r
	}, norm.NFKC.String(p))
	segs := strings.Split(p, "/")
	for i, seg := range segs {
		for {
			t := strings.TrimRight(strings.TrimFunc(seg, unicode.IsSpace), ".")
			if t == seg {
				break
			}
			seg = t
		}
		segs[i] = seg
	}
	return strings.Join(segs, "/")
}

// underPrefix reports whether path is prefix or lies under it, ignoring
// letter case.
func underPrefix(path, prefix string) bool {
	return len(path) >= len(prefix) && strings.EqualFold(path[:len(prefix)], prefix) &&
		(len(path) == len(prefix) || path[len(prefix)] == '/')
}

func unhex(a, b byte) (byte, bool) {
	x, ok1 := hexval(a)
	y, ok2 := hexval(b)
	return x<<4 | y, ok1 && ok2
}

func hexval(c byte) (byte, bool) {
	switch {
	case '0' <= c && c <= '9':
		return c - '0', true
	case 'a' <= c && c <= 'f':
		return c - 'a' + 10, true
	case 'A' <= c && c <= 'F':
		return c - 'A' + 10, true
	}
	return 0, false
}

// unreserved reports whether RFC 3986 calls c unreserved: a character
// that never needs encoding.
func unreserved(c byte) bool {
	return 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' ||
		c == '-' || c == '.' || c == '_' || c == '~'
}

// hostMatches reports whether the request's Host is want, ignoring case,
// and ignoring the request's port when want has none.
func hostMatches(host, want string) bool {
	if strings.EqualFold(host, want) {
		return true
	}
	if strings.Contains(want, ":") {
		return false
	}
	h, _, err := net.SplitHostPort(host)
	return err == nil && strings.EqualFold(h, want)
}

// spoofable reports whether a request header is one that upstream
// frameworks take, from a proxy they trust, as the URL or method (Symfony
// and IIS read X-Original-URL; method-override middleware would get round
// a route's methods), the client's address or scheme, or the signed-in
// user (the headers of oauth2-proxy and other auth proxies). A client's
// own is never passed on: every X-Forwarded-* (the gateway writes For,
// Host and Proto itself), every X-Auth-Request-*, and the names in
// spoofableNames. Case is ignored and '_' counts as '-', as in
// gatehouseHeader.
func spoofable(name string) bool {
	if name == "" {
		return false
	}
	switch name[0] | 0x20 { // lower case; most request headers stop here
	case 'x', 't', 'c', 'f', 'r':
	default:
		return false
	}
	var b [64]byte
	k := headerName(b[:], name)
	return bytes.HasPrefix(k, []byte("x-forwarded-")) || bytes.HasPrefix(k, []byte("x-auth-request-")) ||
		len(k) == len(name) && spoofableNames[string(k)]
}

var spoofableNames = map[string]bool{
	"x-original-url": true, "x-rewrite-url": true,
	"x-http-method-override": true, "x-http-method": true, "x-method-override": true,
	"x-client-ip": true, "true-client-ip": true, "x-cluster-client-ip": true, "cf-connecting-ip": true,
	"fastly-client-ip": true, "front-end-https": true, "x-url-scheme": true,
	"remote-user": true, "x-remote-user": true,
	// Set by the gateway itself: a client's, in another spelling
	// (X_Real_IP), would reach a CGI-style upstream beside it.
	"x-real-ip": true, "x-request-id": true,
}

// gatehouseHeader reports whether a header name is in the X-Gatehouse-
// family, the headers only the gateway may set. Case is ignored and '_'
// counts as '-', because some upstream stacks (CGI, WSGI, nginx's
// underscores_in_headers) read X_Gatehouse_User as X-Gatehouse-User.
func gatehouseHeader(name string) bool {
	const prefix = "x-gatehouse-"
	var b [len(prefix)]byte
	return len(name) >= len(prefix) && string(headerName(b[:], name)) == prefix
}

// headerName writes the start of a header name that fits in dst into it,
// in lower case and with '_' as '-', and returns that part of dst: the
// spelling upstream stacks that ignore case and read '_' as '-' see.
func headerName(dst []byte, name string) []byte {
	n := min(len(name), len(dst))
	for i := range n {
		c := name[i]
		if 'A' <= c && c <= 'Z' {
			c += 'a' - 'A'
		}
		if c == '_' {
			c = '-'
		}
		dst[i] = c
	}
	return dst[:n]
}
