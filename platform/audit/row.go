package audit

import (
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"reflect"
	"strconv"
	"strings"
	"time"
)

// Row is an event as stored: with its place in its tenant's chain (Seq,
// PrevHash) and the Hash that seals it. TenantID is "" for platform-level
// events.
type Row struct {
	ID           string          `json:"id"`
	TenantID     string          `json:"tenant_id"`
	Seq          int64           `json:"seq"`
	Time         time.Time       `json:"time"`
	ActorType    string          `json:"actor_type"`
	ActorID      string          `json:"actor_id"`
	Action       string          `json:"action"`
	ResourceType string          `json:"resource_type"`
	ResourceID   string          `json:"resource_id"`
	Outcome      string          `json:"outcome"`
	IP           string          `json:"ip"`
	UserAgent    string          `json:"user_agent"`
	RequestID    string          `json:"request_id"`
	Metadata     json.RawMessage `json:"metadata"`
	PrevHash     string          `json:"prev_hash"`
	Hash         string          `json:"hash"`
}

// stored is a row of audit_events as gorm reads and writes it. Metadata is
// a string here because the hash covers the exact text stored, and a string
// goes into a text column unchanged on both dialects.
type stored struct {
	ID           string    `gorm:"column:id;primaryKey"`
	TenantID     string    `gorm:"column:tenant_id"`
	Seq          int64     `gorm:"column:seq"`
	Time         time.Time `gorm:"column:time"`
	ActorType    string    `gorm:"column:actor_type"`
	ActorID      string    `gorm:"column:actor_id"`
	Action       string    `gorm:"column:action"`
	ResourceType string    `gorm:"column:resource_type"`
	ResourceID   string    `gorm:"column:resource_id"`
	Outcome      string    `gorm:"column:outcome"`
	IP           string    `gorm:"column:ip"`
	UserAgent    string    `gorm:"column:user_agent"`
	RequestID    string    `gorm:"column:request_id"`
	Metadata     string    `gorm:"column:metadata"`
	PrevHash     string    `gorm:"column:prev_hash"`
	Hash         string    `gorm:"column:hash"`
}

func (stored) TableName() string { return "audit_events" }

func (s stored) row() Row {
	return Row{ID: s.ID, TenantID: s.TenantID, Seq: s.Seq, Time: s.Time.UTC(), ActorType: s.ActorType,
		ActorID: s.ActorID, Action: s.Action, ResourceType: s.ResourceType, ResourceID: s.ResourceID,
		Outcome: s.Outcome, IP: s.IP, UserAgent: s.UserAgent, RequestID: s.RequestID,
		Metadata: json.RawMessage(s.Metadata), PrevHash: s.PrevHash, Hash: s.Hash}
}

// hashTime is how the hash encodes a time: UTC with exactly six fractional
// digits. Times are truncated to microseconds before they are stored
// because PostgreSQL keeps no more, so what is read back hashes the same.
const hashTime = "2006-01-02T15:04:05.000000Z"

// hashDomain starts every hashed encoding, so that a hash of this format can
// never be mistaken for one of another format or version.
const hashDomain = "gatehouse.audit.v1"

// sum returns the hex SHA-256 of s's canonical encoding: hashDomain, then
// each of these fields in this order, each written as its length in bytes
// (8-byte big-endian) followed by its bytes: id, tenant_id, seq (decimal),
// time (hashTime), actor_type, actor_id, action, resource_type,
// resource_id, outcome, ip, user_agent, request_id, metadata (the stored
// JSON text, byte for byte), prev_hash. Length prefixes make the encoding
// unambiguous: no two different rows encode alike, whatever their fields
// contain. Every column but hash itself is covered, so changing any of them,
// the row's position (seq) or its link (prev_hash) changes the hash.
func (s *stored) sum() string {
	h := sha256.New()
	var n [8]byte
	var num [20]byte
	write := func(v string) {
		binary.BigEndian.PutUint64(n[:], uint64(len(v)))
		h.Write(n[:])
		h.Write([]byte(v))
	}
	h.Write([]byte(hashDomain))
	for _, v := range []string{s.ID, s.TenantID, string(strconv.AppendInt(num[:0], s.Seq, 10)),
		s.Time.UTC().Format(hashTime), s.ActorType, s.ActorID, s.Action, s.ResourceType, s.ResourceID,
		s.Outcome, s.IP, s.UserAgent, s.RequestID, s.Metadata, s.PrevHash} {
		write(v)
	}
	return hex.EncodeToString(h.Sum(nil))
}

// Masked is what Mask puts in place of a secret.
const Masked = "***"

// IsSecretKey reports whether a metadata key names a secret: whether it
// contains password, passphrase, secret, token, authorization, cookie,
// credential, api_key, apikey or private_key, in any case.
func IsSecretKey(k string) bool {
	k = strings.ToLower(k)
	for _, w := range [...]string{"password", "passphrase", "secret", "token", "authorization", "cookie", "credential",
		"api_key", "apikey", "private_key"} {
		if strings.Contains(k, w) {
			return true
		}
	}
	return false
}

// Mask returns a copy of m in which the value of every key IsSecretKey
// names is Masked, in m and in every map nested in it (also inside
// slices). m itself is not changed: the caller may still hold it.
func Mask(m map[string]any) map[string]any {
	if m == nil {
		return nil
	}
	out := make(map[string]any, len(m))
	for k, v := range m {
		if IsSecretKey(k) {
			out[k] = Masked
			continue
		}
		out[k] = maskValue(v)
	}
	return out
}

func maskValue(v any) any {
	switch v := v.(type) {
	case map[string]any:
		return Mask(v)
	case map[string]string:
		out := make(map[string]string, len(v))
		for k, s := range v {
			if IsSecretKey(k) {
				s = Masked
			}
			out[k] = s
		}
		return out
	case []any:
		out := make([]any, len(v))
		for i, e := range v {
			out[i] = maskValue(e)
		}
		return out
	case []map[string]any:
		out := make([]map[string]any, len(v))
		for i, e := range v {
			out[i] = Mask(e)
		}
		return out
	}
	switch reflect.ValueOf(v).Kind() {
	case reflect.Map, reflect.Slice, reflect.Array, reflect.Struct, reflect.Pointer, reflect.Interface:
		// Any other map, list or struct (an http.Header, a claims map, a
		// struct with JSON names) is masked as the JSON it is stored as.
		b, err := json.Marshal(v)
		if err != nil {
			return v // prepare reports it
		}
		d := json.NewDecoder(bytes.NewReader(b))
		d.UseNumber() // numbers as written, not rounded to float64
		var generic any
		if d.Decode(&generic) != nil {
			return v
		}
		return maskValue(generic)
	}
	return v
}
