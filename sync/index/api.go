package index

import (
	"crypto/x509"
	"encoding/csv"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"mime"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"time"
	"unicode"

	"github.com/pulsegate/pulsegate/sync/regional"
	"github.com/pulsegate/pulsegate/sync/wire"
)

// enrolRequest is the body of POST /api/v1/enrol.
type enrolRequest struct {
	TokenID string `json:"token_id"`
	Secret  string `json:"secret"`
	CSR     string `json:"csr"`   // PEM "CERTIFICATE REQUEST"
	Label   string `json:"label"` // the cluster's own name for itself, for the audit trail
}

type enrolResponse struct {
	Customer    string `json:"customer"`
	Certificate string `json:"certificate"` // PEM
}

// readBody reads at most limit bytes of the body; over the limit it answers
// 413 and returns false.
func readBody(w http.ResponseWriter, r *http.Request, limit int64) ([]byte, bool) {
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, limit))
	if err != nil {
		var tooBig *http.MaxBytesError
		if errors.As(err, &tooBig) {
			writeError(w, http.StatusRequestEntityTooLarge, fmt.Sprintf("the body is larger than %d bytes", limit))
		} else {
			writeError(w, http.StatusBadRequest, "could not read the body")
		}
		return nil, false
	}
	return body, true
}

func (s *Server) handleEnrol(w http.ResponseWriter, r *http.Request) {
	body, ok := readBody(w, r, maxEnrolBody)
	if !ok {
		return
	}
	var req enrolRequest
	dec := json.NewDecoder(strings.NewReader(string(body)))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&req); err != nil {
		writeError(w, http.StatusBadRequest, "the body must be JSON {\"token_id\",\"secret\",\"csr\",\"label\"}")
		return
	}
	if req.TokenID == "" || req.Secret == "" {
		writeError(w, http.StatusBadRequest, "token_id and secret are required")
		return
	}
	// The request is checked before the token is spent, so a bad request
	// does not burn it.
	block, _ := pem.Decode([]byte(req.CSR))
	if block == nil || block.Type != "CERTIFICATE REQUEST" {
		writeError(w, http.StatusBadRequest, "csr must be a PEM \"CERTIFICATE REQUEST\"")
		return
	}
	csr, err := x509.ParseCertificateRequest(block.Bytes)
	if err != nil {
		writeError(w, http.StatusBadRequest, "csr does not parse")
		return
	}
	if err := csr.CheckSignature(); err != nil {
		writeError(w, http.StatusBadRequest, "csr signature does not verify")
		return
	}
	if err := checkClientKey(csr.PublicKey); err != nil {
		writeError(w, http.StatusBadRequest, "csr key: "+err.Error())
		return
	}
	now := s.now()
	customer, err := s.store.UseEnrolToken(r.Context(), req.TokenID, HashSecret(req.Secret), now)
	switch {
	case errors.Is(err, ErrTokenUnknown):
		writeError(w, http.StatusForbidden, "unknown enrolment token, or wrong secret")
		return
	case errors.Is(err, ErrTokenUsed):
		writeError(w, http.StatusForbidden, "this enrolment token has already been used; ask for a new one")
		return
	case errors.Is(err, ErrTokenExpired):
		writeError(w, http.StatusForbidden, "this enrolment token has expired; ask for a new one")
		return
	case err != nil:
		s.internal(w, r, err)
		return
	}
	certPEM, err := s.id.IssueClient(customer, csr, now)
	if err != nil {
		s.internal(w, r, err)
		return
	}
	blk, _ := pem.Decode(certPEM)
	cert, err := x509.ParseCertificate(blk.Bytes)
	if err != nil {
		s.internal(w, r, err)
		return
	}
	p := principal{customer: customer, actor: "cluster " + cert.SerialNumber.Text(16)}
	if !s.audit(w, r, p, "enrol", fmt.Sprintf("token %s, label %q", req.TokenID, cleanLabel(req.Label))) {
		return
	}
	writeJSON(w, http.StatusOK, enrolResponse{Customer: customer, Certificate: string(certPEM)})
}

// cleanLabel keeps a label fit for the audit trail: printable, short.
func cleanLabel(l string) string {
	l = strings.Map(func(r rune) rune {
		if unicode.IsPrint(r) {
			return r
		}
		return -1
	}, l)
	if r := []rune(l); len(r) > 64 {
		l = string(r[:64])
	}
	return l
}

type uploadResponse struct {
	Inserted  int `json:"inserted"`
	Updated   int `json:"updated"`
	Unchanged int `json:"unchanged"`
	Refused   int `json:"refused"`
}

func (s *Server) handleBatches(w http.ResponseWriter, r *http.Request) {
	p, ok := s.clientPrincipal(w, r)
	if !ok {
		return
	}
	if ct, _, _ := mime.ParseMediaType(r.Header.Get("Content-Type")); ct != "application/x-msgpack" {
		writeError(w, http.StatusUnsupportedMediaType, "the body must be a wire batch, Content-Type application/x-msgpack")
		return
	}
	body, ok := readBody(w, r, maxBatchBody)
	if !ok {
		return
	}
	b, err := wire.Decode(body)
	if err != nil {
		writeError(w, http.StatusBadRequest, err.Error())
		return
	}
	st, err := s.store.Upsert(r.Context(), p.customer, b, s.now())
	switch {
	case errors.Is(err, ErrCustomerErased), errors.Is(err, ErrCustomerUnknown):
		if err := s.store.Audit(r.Context(), p.customer, p.actor, "upload",
			fmt.Sprintf("batch %q refused: the customer is erased or unknown", trim(b.BatchID)), s.now()); err != nil {
			s.log.Error("audit refused upload", "customer", p.customer, "err", err)
		}
		writeError(w, http.StatusForbidden, "this customer has been erased: the index accepts nothing more for it")
		return
	case errors.Is(err, wire.ErrInvalid):
		writeError(w, http.StatusBadRequest, err.Error())
		return
	case err != nil:
		s.internal(w, r, err)
		return
	}
	if !s.audit(w, r, p, "upload", fmt.Sprintf("batch %q: %d releases inserted, %d updated, %d unchanged, %d refused",
		trim(b.BatchID), st.Inserted, st.Updated, st.Unchanged, st.Refused)) {
		return
	}
	writeJSON(w, http.StatusOK, uploadResponse(st))
}

// trim shortens outside text for the audit trail.
func trim(s string) string {
	if len(s) > 64 {
		return s[:64]
	}
	return s
}

// refuseErased answers 403 when err says the customer is gone.
func refuseErased(w http.ResponseWriter, err error) bool {
	if errors.Is(err, ErrCustomerErased) || errors.Is(err, ErrCustomerUnknown) {
		writeError(w, http.StatusForbidden, "this customer has been erased")
		return true
	}
	return false
}

type spendJSON struct {
	Site     string `json:"site"`
	Year     int    `json:"year"`
	Releases int    `json:"releases"`
	Epsilon  string `json:"epsilon"`
}

func (s *Server) handleLedger(w http.ResponseWriter, r *http.Request) {
	p, ok := s.eitherPrincipal(w, r)
	if !ok {
		return
	}
	if _, err := activeCustomer(r.Context(), s.store.read(), p.customer); err != nil {
		if !refuseErased(w, err) {
			s.internal(w, r, err)
		}
		return
	}
	ledger, err := s.store.Ledger(r.Context(), p.customer)
	if err != nil {
		s.internal(w, r, err)
		return
	}
	out := make([]spendJSON, 0, len(ledger))
	for _, l := range ledger {
		out = append(out, spendJSON(l))
	}
	if !s.audit(w, r, p, "pull", "ledger") {
		return
	}
	writeJSON(w, http.StatusOK, struct {
		Customer string      `json:"customer"`
		Ledger   []spendJSON `json:"ledger"`
	}{p.customer, out})
}

func (s *Server) handleRegions(w http.ResponseWriter, r *http.Request) {
	p, ok := s.hqPrincipal(w, r)
	if !ok {
		return
	}
	regions, err := s.store.Regions(r.Context(), p.customer)
	if err != nil {
		s.internal(w, r, err)
		return
	}
	if !s.audit(w, r, p, "pull", "regions") {
		return
	}
	writeJSON(w, http.StatusOK, struct {
		Customer string   `json:"customer"`
		Regions  []string `json:"regions"`
	}{p.customer, append([]string{}, regions...)})
}

// periodRange checks from and to, the bounds of a range of periods of one
// kind, and fills in the default: the twelve months ending with the last
// closed month at now.
func periodRange(from, to string, now time.Time) (string, string, error) {
	if from == "" && to == "" {
		last := time.Date(now.UTC().Year(), now.UTC().Month(), 1, 0, 0, 0, 0, time.UTC).AddDate(0, -1, 0)
		return last.AddDate(0, -11, 0).Format("2006-01"), last.Format("2006-01"), nil
	}
	if from == "" || to == "" {
		return "", "", errors.New("give both from and to, or neither")
	}
	kf, _, _, err := periodBounds(from)
	if err != nil {
		return "", "", fmt.Errorf("from: %w", err)
	}
	kt, _, _, err := periodBounds(to)
	if err != nil {
		return "", "", fmt.Errorf("to: %w", err)
	}
	if kf != kt {
		return "", "", errors.New("from and to must both be months (2026-03) or both weeks (2026-W09)")
	}
	if from > to {
		return "", "", errors.New("from is after to")
	}
	return from, to, nil
}

// wantCSV picks the format from ?format= or, without it, the Accept header.
func wantCSV(r *http.Request) (bool, error) {
	switch f := r.URL.Query().Get("format"); f {
	case "csv":
		return true, nil
	case "json":
		return false, nil
	case "":
		return strings.Contains(r.Header.Get("Accept"), "text/csv"), nil
	default:
		return false, fmt.Errorf("format %q: want json or csv", f)
	}
}

type rulesJSON struct {
	MinSites     int     `json:"min_sites"`
	MinPresses   int64   `json:"min_presses"`
	MaxSiteShare float64 `json:"max_site_share"`
}

// cellJSON is a cell as the API shows it: figures only when published,
// reason and message only when withheld.
type cellJSON struct {
	Period     string          `json:"period"`
	Published  bool            `json:"published"`
	GreenShare *float64        `json:"green_share,omitempty"`
	Green      *int64          `json:"green,omitempty"`
	Red        *int64          `json:"red,omitempty"`
	Total      *int64          `json:"total,omitempty"`
	Sites      *int            `json:"sites,omitempty"`
	Version    *int            `json:"version,omitempty"`
	Reason     regional.Reason `json:"reason,omitempty"`
	Message    string          `json:"message,omitempty"`
}

func newCellJSON(c regional.Cell) cellJSON {
	if !c.Published {
		return cellJSON{Period: c.Period, Reason: c.Reason, Message: c.Message}
	}
	share := c.GreenPercent()
	return cellJSON{Period: c.Period, Published: true, GreenShare: &share,
		Green: &c.Green, Red: &c.Red, Total: &c.Total, Sites: &c.Sites, Version: &c.Version}
}

type regionIndexJSON struct {
	Customer string     `json:"customer"`
	Region   string     `json:"region"`
	From     string     `json:"from"`
	To       string     `json:"to"`
	Rules    rulesJSON  `json:"rules"`
	Cells    []cellJSON `json:"cells"`
}

func (s *Server) handleRegionIndex(w http.ResponseWriter, r *http.Request) {
	p, ok := s.hqPrincipal(w, r)
	if !ok {
		return
	}
	region := r.PathValue("region")
	csvOut, err := wantCSV(r)
	if err != nil {
		writeError(w, http.StatusBadRequest, err.Error())
		return
	}
	q := r.URL.Query()
	from, to, err := periodRange(q.Get("from"), q.Get("to"), s.now())
	if err != nil {
		writeError(w, http.StatusBadRequest, err.Error())
		return
	}
	regions, err := s.store.Regions(r.Context(), p.customer)
	if err != nil {
		s.internal(w, r, err)
		return
	}
	if !slices.Contains(regions, region) {
		writeError(w, http.StatusNotFound, "this customer has no releases in that region")
		return
	}
	format := "json"
	if csvOut {
		format = "csv"
	}
	if !s.audit(w, r, p, "pull", fmt.Sprintf("region %q, %s to %s, %s", region, from, to, format)) {
		return
	}
	cells, err := s.regionCells(r.Context(), p.customer, region, from, to)
	if err != nil {
		if refuseErased(w, err) {
			return
		}
		s.internal(w, r, err)
		return
	}
	if csvOut {
		w.Header().Set("Content-Type", "text/csv; charset=utf-8")
		w.Header().Set("Content-Disposition", `attachment; filename="`+safeFileName(region)+"-"+from+"-"+to+`.csv"`)
		writeCellsCSV(w, region, cells) //nolint:errcheck // the client went away
		return
	}
	doc := regionIndexJSON{
		Customer: p.customer, Region: region, From: from, To: to,
		Rules: rulesJSON{s.rules.MinSites, s.rules.MinPresses, s.rules.MaxSiteShare},
		Cells: make([]cellJSON, 0, len(cells)),
	}
	for _, c := range cells {
		doc.Cells = append(doc.Cells, newCellJSON(c))
	}
	writeJSON(w, http.StatusOK, doc)
}

// cellsCSVHeader is the header of a region's CSV.
var cellsCSVHeader = []string{"region", "period", "published", "green_share", "green", "red", "total", "sites", "version", "reason"}

// writeCellsCSV writes the cells of a region: the figure columns are empty
// for a withheld cell, and reason is empty for a published one.
func writeCellsCSV(w io.Writer, region string, cells []regional.Cell) error {
	cw := csv.NewWriter(w)
	if err := cw.Write(cellsCSVHeader); err != nil {
		return err
	}
	for _, c := range cells {
		rec := []string{region, c.Period, strconv.FormatBool(c.Published), "", "", "", "", "", "", string(c.Reason)}
		if c.Published {
			rec[3] = strconv.FormatFloat(c.GreenPercent(), 'f', 1, 64)
			rec[4] = strconv.FormatInt(c.Green, 10)
			rec[5] = strconv.FormatInt(c.Red, 10)
			rec[6] = strconv.FormatInt(c.Total, 10)
			rec[7] = strconv.Itoa(c.Sites)
			rec[8] = strconv.Itoa(c.Version)
		}
		if err := cw.Write(rec); err != nil {
			return err
		}
	}
	cw.Flush()
	return cw.Error()
}

// safeFileName keeps letters, digits, '.', '_' and '-' of s.
func safeFileName(s string) string {
	return strings.Map(func(r rune) rune {
		if r < 128 && (isIDChar(byte(r)) || r == '.') {
			return r
		}
		return '_'
	}, s)
}

func (s *Server) handleExport(w http.ResponseWriter, r *http.Request) {
	p, ok := s.hqPrincipal(w, r)
	if !ok {
		return
	}
	csvOut, err := wantCSV(r)
	if err != nil {
		writeError(w, http.StatusBadRequest, err.Error())
		return
	}
	format := "json"
	if csvOut {
		format = "csv (zip)"
	}
	if !s.audit(w, r, p, "export", format) {
		return
	}
	name := "pulsegate-index-" + safeFileName(p.customer)
	if csvOut {
		w.Header().Set("Content-Type", "application/zip")
		w.Header().Set("Content-Disposition", `attachment; filename="`+name+`.zip"`)
		err = s.store.ExportCSV(r.Context(), p.customer, w)
	} else {
		w.Header().Set("Content-Type", "application/json")
		w.Header().Set("Content-Disposition", `attachment; filename="`+name+`.json"`)
		err = s.store.Export(r.Context(), p.customer, w)
	}
	if err != nil {
		// Streamed: the status is out already. The truncated body does not
		// parse, and the log says why.
		s.log.Error("export", "customer", p.customer, "err", err)
	}
}

func (s *Server) handleAudit(w http.ResponseWriter, r *http.Request) {
	p, ok := s.hqPrincipal(w, r)
	if !ok {
		return
	}
	limit := defaultAuditLimit
	if v := r.URL.Query().Get("limit"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 || n > maxAuditLimit {
			writeError(w, http.StatusBadRequest, fmt.Sprintf("limit must be a number from 1 to %d", maxAuditLimit))
			return
		}
		limit = n
	}
	if !s.audit(w, r, p, "audit-read", fmt.Sprintf("limit %d", limit)) {
		return
	}
	entries, err := s.store.AuditLog(r.Context(), p.customer, limit)
	if err != nil {
		s.internal(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, struct {
		Customer string       `json:"customer"`
		Entries  []AuditEntry `json:"entries"`
	}{p.customer, append([]AuditEntry{}, entries...)})
}
