package db

import "strings"

// ParseID returns s in the form ids are stored in (lower-case hex,
// 8-4-4-4-12), if s is a UUID in that layout in any letter case. An id from
// outside passes through it before any use: PostgreSQL's uuid type matches
// an id in another spelling (upper case, braces) that a comparison of
// strings in Go, or in SQLite, would not, so a check made on the raw id
// could pass where the write it guards finds the row.
func ParseID(s string) (string, bool) {
	if IsID(s) {
		return s, true
	}
	if l := strings.ToLower(s); IsID(l) {
		return l, true
	}
	return "", false
}

// IsID reports whether s is an id in the form ids are stored in: no other
// form can match a row. It allocates nothing: the permission check asks it
// on every request.
func IsID(s string) bool {
	if len(s) != 36 {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case i == 8 || i == 13 || i == 18 || i == 23:
			if c != '-' {
				return false
			}
		case (c < '0' || c > '9') && (c < 'a' || c > 'f'):
			return false
		}
	}
	return true
}
