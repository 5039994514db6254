package audit

import (
	"context"
	"strings"

	"github.com/labstack/echo/v4"

	"gatehouse/platform/httpx"
)

// RequestContext returns the request's context carrying where the request
// came from (client IP, user agent bounded to 256 bytes, request id), so
// that services record it in their events without knowing HTTP.
func RequestContext(c echo.Context) context.Context {
	r := c.Request()
	ua := r.UserAgent()
	if len(ua) > 256 {
		ua = strings.ToValidUTF8(ua[:256], "")
	}
	return WithRequest(r.Context(), Request{IP: c.RealIP(), UserAgent: ua, RequestID: httpx.RequestID(c)})
}
