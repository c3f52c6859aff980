package index

import (
	"encoding/json"
	"maps"
	"slices"
	"strings"
	"testing"

	"github.com/pulsegate/pulsegate/sync/regional"
)

// openAPIRoutes is every route the server serves, with its methods: the
// document must describe each, and nothing else.
var openAPIRoutes = map[string][]string{
	"/api/v1/enrol":                  {"post"},
	"/api/v1/batches":                {"post"},
	"/api/v1/ledger":                 {"get"},
	"/api/v1/regions":                {"get"},
	"/api/v1/regions/{region}/index": {"get"},
	"/api/v1/export":                 {"get"},
	"/api/v1/audit":                  {"get"},
	"/hq/":                           {"get"},
	"/hq/login":                      {"get", "post"},
	"/hq/logout":                     {"post"},
	"/openapi.json":                  {"get"},
	"/healthz":                       {"get"},
}

var httpMethods = []string{"get", "put", "post", "delete", "options", "head", "patch", "trace"}

type openAPIOperation struct {
	OperationID string                 `json:"operationId"`
	Security    *[]map[string][]string `json:"security"`
	Parameters  []struct {
		Name     string `json:"name"`
		In       string `json:"in"`
		Required bool   `json:"required"`
	} `json:"parameters"`
	RequestBody *struct {
		Content map[string]json.RawMessage `json:"content"`
	} `json:"requestBody"`
	Responses map[string]struct {
		Description string                     `json:"description"`
		Content     map[string]json.RawMessage `json:"content"`
	} `json:"responses"`
}

type openAPIDocument struct {
	OpenAPI string `json:"openapi"`
	Info    struct {
		Title       string `json:"title"`
		Version     string `json:"version"`
		Description string `json:"description"`
	} `json:"info"`
	Paths      map[string]map[string]json.RawMessage `json:"paths"`
	Components struct {
		SecuritySchemes map[string]struct {
			Type   string `json:"type"`
			Scheme string `json:"scheme"`
			In     string `json:"in"`
			Name   string `json:"name"`
		} `json:"securitySchemes"`
		Schemas map[string]json.RawMessage `json:"schemas"`
	} `json:"components"`
}

func loadOpenAPI(tb testing.TB) openAPIDocument {
	tb.Helper()
	var doc openAPIDocument
	dec := json.NewDecoder(strings.NewReader(string(openAPIDoc)))
	if err := dec.Decode(&doc); err != nil {
		tb.Fatalf("openapi.json does not parse: %v", err)
	}
	if dec.More() {
		tb.Fatal("openapi.json has data after the document")
	}
	return doc
}

func operation(tb testing.TB, doc openAPIDocument, path, method string) openAPIOperation {
	tb.Helper()
	raw, ok := doc.Paths[path][method]
	if !ok {
		tb.Fatalf("%s %s is not described", strings.ToUpper(method), path)
	}
	var op openAPIOperation
	if err := json.Unmarshal(raw, &op); err != nil {
		tb.Fatalf("%s %s: %v", strings.ToUpper(method), path, err)
	}
	return op
}

func TestOpenAPIDocument(t *testing.T) {
	doc := loadOpenAPI(t)
	if !strings.HasPrefix(doc.OpenAPI, "3.1.") {
		t.Errorf("openapi = %q, want 3.1.x", doc.OpenAPI)
	}
	if doc.Info.Title == "" || doc.Info.Version == "" {
		t.Error("info needs a title and a version")
	}
	// The privacy promises, as the description must state them.
	for _, want := range []string{"noise", "suppressed", "5 sites", "100 presses", "50 %", "Differencing", "would_isolate"} {
		if !strings.Contains(doc.Info.Description, want) {
			t.Errorf("info.description does not mention %q", want)
		}
	}

	if got, want := slices.Sorted(maps.Keys(doc.Paths)), slices.Sorted(maps.Keys(openAPIRoutes)); !slices.Equal(got, want) {
		t.Errorf("paths = %q\nwant %q", got, want)
	}
	ids := map[string]string{}
	for path, methods := range openAPIRoutes {
		var got []string
		for k := range doc.Paths[path] {
			if slices.Contains(httpMethods, k) {
				got = append(got, k)
			}
		}
		slices.Sort(got)
		want := slices.Sorted(slices.Values(methods))
		if !slices.Equal(got, want) {
			t.Errorf("%s: methods %q, want %q", path, got, want)
		}
		for _, m := range methods {
			op := operation(t, doc, path, m)
			where := strings.ToUpper(m) + " " + path
			if op.OperationID == "" {
				t.Errorf("%s: no operationId", where)
			} else if prev, dup := ids[op.OperationID]; dup {
				t.Errorf("%s and %s share operationId %q", prev, where, op.OperationID)
			}
			ids[op.OperationID] = where
			if len(op.Responses) == 0 {
				t.Errorf("%s: no responses", where)
			}
			for code, r := range op.Responses {
				if r.Description == "" {
					t.Errorf("%s %s: no description", where, code)
				}
			}
			if op.Security == nil {
				t.Errorf("%s: security not stated (use [] for none)", where)
			}
			for _, p := range op.Parameters {
				if p.In == "path" && (!p.Required || !strings.Contains(path, "{"+p.Name+"}")) {
					t.Errorf("%s: path parameter %q must be required and in the path", where, p.Name)
				}
			}
		}
	}
}

// TestOpenAPIRouteDetails pins what each route promises: how it
// authenticates, what it takes and what it answers.
func TestOpenAPIRouteDetails(t *testing.T) {
	doc := loadOpenAPI(t)
	hq := []string{"hqBearer", "hqCookie"}
	tests := []struct {
		method, path string
		security     []string // alternatives; none for a public route
		request      string   // request body media type
		params       []string // name:in
		codes        []string
		media        []string // of the 200 response
	}{
		{"post", "/api/v1/enrol", nil, "application/json", nil,
			[]string{"200", "400", "403"}, []string{"application/json"}},
		{"post", "/api/v1/batches", []string{"mtls"}, "application/x-msgpack", nil,
			[]string{"200", "400", "401", "403", "413"}, []string{"application/json"}},
		{"get", "/api/v1/ledger", []string{"mtls", "hqBearer", "hqCookie"}, "", nil,
			[]string{"200", "401"}, []string{"application/json"}},
		{"get", "/api/v1/regions", hq, "", nil, []string{"200", "401"}, []string{"application/json"}},
		{"get", "/api/v1/regions/{region}/index", hq, "",
			[]string{"region:path", "from:query", "to:query", "format:query"},
			[]string{"200", "400", "401"}, []string{"application/json", "text/csv"}},
		{"get", "/api/v1/export", hq, "", []string{"format:query"}, []string{"200", "401"}, nil},
		{"get", "/api/v1/audit", hq, "", []string{"limit:query"}, []string{"200", "401"}, []string{"application/json"}},
		{"get", "/hq/", []string{"hqCookie"}, "", []string{"from:query", "to:query"}, []string{"200", "303"}, []string{"text/html"}},
		{"get", "/hq/login", nil, "", nil, []string{"200"}, []string{"text/html"}},
		{"post", "/hq/login", nil, "application/x-www-form-urlencoded", nil, []string{"303", "401"}, nil},
		{"post", "/hq/logout", nil, "", nil, []string{"303"}, nil},
		{"get", "/openapi.json", nil, "", nil, []string{"200"}, []string{"application/json"}},
		{"get", "/healthz", nil, "", nil, []string{"200"}, nil},
	}
	for _, tt := range tests {
		t.Run(strings.ToUpper(tt.method)+" "+tt.path, func(t *testing.T) {
			op := operation(t, doc, tt.path, tt.method)
			var sec []string
			for _, alt := range *op.Security {
				for name := range alt {
					sec = append(sec, name)
				}
			}
			if !slices.Equal(sec, tt.security) {
				t.Errorf("security = %q, want %q", sec, tt.security)
			}
			switch {
			case tt.request == "" && op.RequestBody != nil:
				t.Error("a request body, want none")
			case tt.request != "" && (op.RequestBody == nil || op.RequestBody.Content[tt.request] == nil):
				t.Errorf("no %s request body", tt.request)
			}
			var params []string
			for _, p := range op.Parameters {
				params = append(params, p.Name+":"+p.In)
			}
			if !slices.Equal(params, tt.params) {
				t.Errorf("parameters = %q, want %q", params, tt.params)
			}
			for _, c := range tt.codes {
				if _, ok := op.Responses[c]; !ok {
					t.Errorf("no %s response", c)
				}
			}
			for _, m := range tt.media {
				if op.Responses["200"].Content[m] == nil {
					t.Errorf("200 has no %s content", m)
				}
			}
		})
	}

	schemes := doc.Components.SecuritySchemes
	if s := schemes["mtls"]; s.Type != "mutualTLS" {
		t.Errorf("mtls scheme type = %q, want mutualTLS", s.Type)
	}
	if s := schemes["hqBearer"]; s.Type != "http" || s.Scheme != "bearer" {
		t.Errorf("hqBearer = %+v, want http bearer", s)
	}
	if s := schemes["hqCookie"]; s.Type != "apiKey" || s.In != "cookie" || s.Name != "pg_hq" {
		t.Errorf("hqCookie = %+v, want the pg_hq cookie", s)
	}
}

// TestOpenAPISchemas checks the wire batch and the regional cell against
// what the code sends, and that every $ref resolves.
func TestOpenAPISchemas(t *testing.T) {
	doc := loadOpenAPI(t)
	var refs []string
	var walk func(v any)
	walk = func(v any) {
		switch v := v.(type) {
		case map[string]any:
			if r, ok := v["$ref"].(string); ok {
				refs = append(refs, r)
			}
			for _, c := range v {
				walk(c)
			}
		case []any:
			for _, c := range v {
				walk(c)
			}
		}
	}
	var all any
	if err := json.Unmarshal(openAPIDoc, &all); err != nil {
		t.Fatal(err)
	}
	walk(all)
	if len(refs) == 0 {
		t.Fatal("no $ref at all")
	}
	for _, r := range refs {
		name, ok := strings.CutPrefix(r, "#/components/schemas/")
		if !ok || doc.Components.Schemas[name] == nil {
			t.Errorf("$ref %q does not resolve", r)
		}
	}

	props := func(name string) (keys, required []string) {
		var s struct {
			Properties map[string]json.RawMessage `json:"properties"`
			Required   []string                   `json:"required"`
		}
		if err := json.Unmarshal(doc.Components.Schemas[name], &s); err != nil {
			t.Fatalf("schema %s: %v", name, err)
		}
		return slices.Sorted(maps.Keys(s.Properties)), slices.Sorted(slices.Values(s.Required))
	}
	tests := []struct {
		schema string
		want   []string // properties, all required unless listed in optional
		opt    []string
	}{
		// The msgp tags of wire.Batch, wire.Release and wire.Spend.
		{"Batch", []string{"v", "id", "rel", "led"}, nil},
		{"Release", []string{"s", "rg", "p", "c", "sup", "n", "ver", "eps", "sens"}, nil},
		{"Spend", []string{"s", "y", "r", "eps"}, nil},
		{"EnrolRequest", []string{"token_id", "secret", "csr", "label"}, []string{"label"}},
		{"EnrolResponse", []string{"customer", "certificate"}, nil},
		{"UpsertStats", []string{"inserted", "updated", "unchanged", "refused"}, nil},
		{"LedgerEntry", []string{"site", "year", "releases", "epsilon"}, nil},
		{"RegionIndex", []string{"customer", "region", "from", "to", "rules", "cells"}, nil},
		{"Rules", []string{"min_sites", "min_presses", "max_site_share"}, nil},
		{"PublishedCell", []string{"period", "published", "green_share", "green", "red", "total", "sites", "version"}, nil},
		{"WithheldCell", []string{"period", "published", "reason", "message"}, nil},
		{"AuditEntry", []string{"id", "customer", "at", "actor", "action", "detail"}, nil},
		{"Error", []string{"error"}, nil},
	}
	for _, tt := range tests {
		keys, required := props(tt.schema)
		if want := slices.Sorted(slices.Values(tt.want)); !slices.Equal(keys, want) {
			t.Errorf("%s: properties %q, want %q", tt.schema, keys, want)
		}
		var wantReq []string
		for _, k := range tt.want {
			if !slices.Contains(tt.opt, k) {
				wantReq = append(wantReq, k)
			}
		}
		if slices.Sort(wantReq); !slices.Equal(required, wantReq) {
			t.Errorf("%s: required %q, want %q", tt.schema, required, wantReq)
		}
	}

	// The CSV header, as the index writes it.
	const header = "region,period,published,green_share,green,red,total,sites,version,reason"
	csv := operation(t, doc, "/api/v1/regions/{region}/index", "get").Responses["200"].Content["text/csv"]
	if !strings.Contains(string(csv), "`"+header+"`") {
		t.Errorf("the CSV description does not give the header %s", header)
	}

	// The withheld reasons are exactly regional's.
	var withheld struct {
		Properties struct {
			Reason struct {
				Enum []string `json:"enum"`
			} `json:"reason"`
		} `json:"properties"`
	}
	if err := json.Unmarshal(doc.Components.Schemas["WithheldCell"], &withheld); err != nil {
		t.Fatal(err)
	}
	want := []string{"too_few_sites", "too_few_presses", "dominant_site", "would_isolate", "invalid_input", "invalid_rules"}
	if !slices.Equal(withheld.Properties.Reason.Enum, want) {
		t.Errorf("reason enum = %q, want %q", withheld.Properties.Reason.Enum, want)
	}
	for _, r := range want {
		if reasonSentence(regional.Reason(r)) == reasonSentence("") {
			t.Errorf("reason %q has no sentence on the HQ page", r)
		}
	}
}
