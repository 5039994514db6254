package metrics

import (
	"context"

	"github.com/prometheus/client_golang/prometheus"

	"gatehouse/platform/audit"
)

// Recorder returns an audit.Recorder that counts each event, then passes it
// to next (nil: count only). Every event counts in
// gatehouse_audit_events_total by outcome; besides:
//
//   - auth.login counts in gatehouse_login_requests_total, then in
//     gatehouse_auth_success_total or gatehouse_auth_failure_total by the
//     metadata "reason" (a reason the auth module records, else "other");
//   - a successful auth.refresh counts in gatehouse_token_refresh_total;
//   - auth.refresh_token_reused counts in gatehouse_token_reuse_detected_total;
//   - access.denied counts in gatehouse_access_denied_total by the metadata
//     "code" (a known 401 or 403 error code, else "other").
func (m *Metrics) Recorder(next audit.Recorder) audit.Recorder {
	return recorder{m: m, next: next}
}

type recorder struct {
	m    *Metrics
	next audit.Recorder
}

// Record counts e and passes it on.
func (r recorder) Record(ctx context.Context, e audit.Event) {
	r.m.count(e)
	if r.next != nil {
		r.next.Record(ctx, e)
	}
}

func (m *Metrics) count(e audit.Event) {
	pick(m.auditEvents, e.Outcome).Inc()
	switch e.Action {
	case "auth.login":
		m.loginRequests.Inc()
		if e.Outcome == audit.Success {
			m.authSuccess.Inc()
		} else {
			pick(m.authFailure, metaString(e, "reason")).Inc()
		}
	case "auth.refresh":
		if e.Outcome == audit.Success {
			m.tokenRefresh.Inc()
		}
	case "auth.refresh_token_reused":
		m.tokenReuse.Inc()
	case "access.denied":
		pick(m.accessDenied, metaString(e, "code")).Inc()
	}
}

// pick returns the counter of label value v, or of "other" if v is not one
// of the values known.
func pick(known map[string]prometheus.Counter, v string) prometheus.Counter {
	if c, ok := known[v]; ok {
		return c
	}
	return known[other]
}

func metaString(e audit.Event, key string) string {
	s, _ := e.Metadata[key].(string)
	return s
}
