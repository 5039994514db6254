package db

import (
	"net/url"
	"strings"
)

// passwordParams are the query parameters in which a postgres URL can carry a
// password.
var passwordParams = []string{"password", "sslpassword"}

// Redact returns rawURL with every password in it, in the user information
// or in a password query parameter, replaced by "xxxxx", for logs and
// errors. A string that is not a URL with a scheme (a key=value
// DSN, or a URL that does not parse) comes back as "xxxxx" whole, since its
// password cannot be told apart from the rest. The empty string stays empty.
func Redact(rawURL string) string {
	if rawURL == "" {
		return ""
	}
	u, err := url.Parse(rawURL)
	if err != nil || u.Scheme == "" || u.Opaque != "" {
		return "xxxxx"
	}
	q := u.Query()
	changed := false
	for _, name := range passwordParams {
		if q.Has(name) {
			q.Set(name, "xxxxx")
			changed = true
		}
	}
	if changed {
		u.RawQuery = q.Encode()
	}
	return u.Redacted()
}

// passwords returns the non-empty passwords u holds.
func passwords(u *url.URL) []string {
	var pws []string
	if pw, ok := u.User.Password(); ok && pw != "" {
		pws = append(pws, pw)
	}
	q := u.Query()
	for _, name := range passwordParams {
		for _, pw := range q[name] {
			if strings.TrimSpace(pw) != "" {
				pws = append(pws, pw)
			}
		}
	}
	return pws
}
