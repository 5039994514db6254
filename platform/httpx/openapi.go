package httpx

import (
	"fmt"
	"net/http"
	"reflect"
	"strconv"
	"strings"

	"github.com/getkin/kin-openapi/openapi3"
	"github.com/getkin/kin-openapi/openapi3gen"
)

// Info describes the API in the OpenAPI document.
type Info struct {
	Title, Version, Description string
	ServerURL                   string
}

// Document builds the OpenAPI 3 document of the routes: one operation per
// route, with its parameters, bodies, error responses and security.
func Document(info Info, routes []Route) (*openapi3.T, error) {
	doc := &openapi3.T{
		OpenAPI: "3.0.3",
		Info:    &openapi3.Info{Title: info.Title, Version: info.Version, Description: info.Description},
		Paths:   openapi3.NewPaths(),
		Components: &openapi3.Components{
			Schemas:   openapi3.Schemas{},
			Responses: openapi3.ResponseBodies{},
			SecuritySchemes: openapi3.SecuritySchemes{
				"bearer": &openapi3.SecuritySchemeRef{Value: openapi3.NewJWTSecurityScheme()},
			},
		},
	}
	if info.ServerURL != "" {
		doc.Servers = openapi3.Servers{{URL: info.ServerURL}}
	}
	names := map[string]reflect.Type{}
	schema := func(v any) (*openapi3.SchemaRef, error) {
		var clash error
		ref, err := openapi3gen.NewSchemaRefForValue(v, doc.Components.Schemas,
			openapi3gen.CreateComponentSchemas(openapi3gen.ExportComponentSchemasOptions{
				ExportComponentSchemas: true, ExportTopLevelSchema: true,
			}),
			openapi3gen.CreateTypeNameGenerator(func(t reflect.Type) string {
				// Two types of one name in different packages would
				// silently share one schema: refuse instead.
				if prev, ok := names[t.Name()]; ok && prev != t && clash == nil {
					clash = fmt.Errorf("openapi: two types named %s (%s and %s)", t.Name(), prev, t)
				}
				names[t.Name()] = t
				return t.Name()
			}))
		if err == nil {
			err = clash
		}
		return ref, err
	}
	errRef, err := schema(ErrorBody{})
	if err != nil {
		return nil, err
	}
	errorResponse := func(desc string) *openapi3.ResponseRef {
		return &openapi3.ResponseRef{Value: openapi3.NewResponse().WithDescription(desc).
			WithContent(openapi3.NewContentWithJSONSchemaRef(errRef))}
	}

	for _, r := range routes {
		if r.Hidden {
			continue
		}
		op := openapi3.NewOperation()
		op.Summary, op.Description, op.Tags = r.Summary, r.Description, r.Tags
		op.OperationID = operationID(r)
		for _, seg := range strings.Split(r.docPath(), "/") {
			if name, ok := strings.CutPrefix(seg, "{"); ok {
				p := openapi3.NewPathParameter(strings.TrimSuffix(name, "}")).WithSchema(openapi3.NewStringSchema())
				op.AddParameter(p)
			}
		}
		if r.In != nil {
			in, err := schema(r.In)
			if err != nil {
				return nil, fmt.Errorf("route %s %s: request schema: %w", r.Method, r.Path, err)
			}
			op.RequestBody = &openapi3.RequestBodyRef{Value: openapi3.NewRequestBody().WithRequired(true).WithJSONSchemaRef(in)}
		}
		ok := openapi3.NewResponse().WithDescription(http.StatusText(r.status()))
		if r.Out != nil {
			out, err := schema(r.Out)
			if err != nil {
				return nil, fmt.Errorf("route %s %s: response schema: %w", r.Method, r.Path, err)
			}
			ok.WithJSONSchemaRef(out)
		}
		op.Responses = openapi3.NewResponses(openapi3.WithStatus(r.status(), &openapi3.ResponseRef{Value: ok}))
		op.Responses.Set("default", errorResponse("Error, in the JSON error model"))
		if r.In != nil {
			op.Responses.Set("400", errorResponse("Invalid JSON or a field that fails validation"))
			op.Responses.Set("413", errorResponse("Body too large"))
			op.Responses.Set("415", errorResponse("Body is not application/json"))
		}
		if r.Auth.IsPublic() {
			op.Security = openapi3.NewSecurityRequirements()
		} else {
			op.Security = openapi3.NewSecurityRequirements().With(openapi3.NewSecurityRequirement().Authenticate("bearer"))
			op.Responses.Set("401", errorResponse("Missing or invalid access token"))
			if p := r.Auth.Permission(); p != "" {
				op.Extensions = map[string]any{"x-required-permission": p}
				op.Responses.Set("403", errorResponse("Missing permission "+p))
			}
		}
		if len(r.Limits) > 0 {
			op.Responses.Set("429", errorResponse("Rate limited; see Retry-After"))
		}
		doc.AddOperation(r.docPath(), r.Method, op)
	}
	return doc, nil
}

// operationID derives a stable id: GET /v1/orders/{id} is get_v1_orders_id.
func operationID(r Route) string {
	var b strings.Builder
	b.WriteString(strings.ToLower(r.Method))
	for _, seg := range strings.Split(r.docPath(), "/") {
		seg = strings.Trim(seg, "{}")
		if seg == "" {
			continue
		}
		b.WriteByte('_')
		for _, c := range seg {
			if c == '-' || c == '.' {
				c = '_'
			}
			b.WriteRune(c)
		}
	}
	if r.status() != http.StatusOK && r.Method == http.MethodGet {
		b.WriteString(strconv.Itoa(r.status()))
	}
	return b.String()
}
