package web

import (
	"archive/zip"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"html/template"
	"io"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/pulsegate/pulsegate/gateway/accounts"
	"github.com/pulsegate/pulsegate/gateway/qr"
)

// actor names the signed-in person in the audit log.
func actor(r *http.Request) string {
	if u, ok := userOf(r); ok {
		return u.user.Email
	}
	return "unknown"
}

func (s *Server) audit(r *http.Request, action, detail string) {
	if err := s.acc.Audit(actor(r), action, detail); err != nil {
		s.log.Error("audit", "action", action, "err", err)
	}
}

// --- pairing this office: a new organisation or an existing one ---

type pairData struct {
	Paired   bool
	Customer string
}

func (s *Server) handlePairForm(w http.ResponseWriter, r *http.Request) {
	s.render(w, r, http.StatusOK, "pair", "Pair this office", pairData{Paired: s.b.Paired()}, flashOf(r), "")
}

func (s *Server) handlePairInit(w http.ResponseWriter, r *http.Request) {
	if !parseForm(w, r) {
		return
	}
	customer := strings.TrimSpace(r.PostForm.Get("customer"))
	if err := s.b.InitCluster(r.Context(), customer); err != nil {
		s.render(w, r, http.StatusBadRequest, "pair", "Pair this office", pairData{Paired: s.b.Paired(), Customer: customer}, "", err.Error())
		return
	}
	s.audit(r, "pair-init", "started organisation "+customer)
	redirectDone(w, r, "/boards", "paired-init")
}

func (s *Server) handlePairJoin(w http.ResponseWriter, r *http.Request) {
	if !parseForm(w, r) {
		return
	}
	ctx, cancel := context.WithTimeout(r.Context(), time.Minute)
	defer cancel()
	if err := s.b.JoinCluster(ctx, strings.TrimSpace(r.PostForm.Get("token"))); err != nil {
		s.render(w, r, http.StatusBadRequest, "pair", "Pair this office", pairData{Paired: s.b.Paired()}, "", "Joining failed: "+err.Error())
		return
	}
	s.audit(r, "pair-join", "joined an existing organisation")
	redirectDone(w, r, "/boards", "paired-join")
}

// --- boards ---

func (s *Server) handleBoards(w http.ResponseWriter, r *http.Request) {
	rows, err := s.b.Boards()
	if err != nil {
		s.renderError(w, r, http.StatusServiceUnavailable, "The boards cannot be read right now: "+err.Error())
		return
	}
	s.render(w, r, http.StatusOK, "boards", "Boards", rows, flashOf(r), "")
}

func (s *Server) handleBoardChange(w http.ResponseWriter, r *http.Request) {
	if !parseForm(w, r) {
		return
	}
	id := r.PathValue("id")
	yes, no := true, false
	var c BoardChange
	var key string
	switch r.PostForm.Get("action") {
	case "approve":
		c.Approve, key = &yes, "approved"
	case "unapprove":
		c.Approve, key = &no, "unapproved"
	case "disable":
		c.Disable, key = &yes, "disabled"
	case "enable":
		c.Disable, key = &no, "enabled"
	case "test-on":
		c.Test, key = &yes, "test-on"
	case "test-off":
		c.Test, key = &no, "test-off"
	case "name":
		name := strings.TrimSpace(r.PostForm.Get("name"))
		c.Name, key = &name, "named"
	default:
		http.Error(w, "Unknown action.", http.StatusBadRequest)
		return
	}
	if err := s.b.SetBoard(id, c); err != nil {
		rows, _ := s.b.Boards()
		s.render(w, r, http.StatusBadRequest, "boards", "Boards", rows, "", err.Error())
		return
	}
	s.audit(r, "board-"+key, "board "+id)
	redirectDone(w, r, "/boards", key)
}

// --- offices ---

type officesData struct {
	Cluster *ClusterStatus
	Paired  bool
	Token   string
	Expires time.Time
	QR      template.HTML
}

func (s *Server) officesData(ctx context.Context) officesData {
	d := officesData{Paired: s.b.Paired()}
	if st, err := s.b.Status(ctx); err == nil {
		d.Cluster = st.Cluster
	}
	return d
}

func (s *Server) handleOffices(w http.ResponseWriter, r *http.Request) {
	s.render(w, r, http.StatusOK, "offices", "Offices", s.officesData(r.Context()), flashOf(r), "")
}

func (s *Server) handleOfficeToken(w http.ResponseWriter, r *http.Request) {
	d := s.officesData(r.Context())
	ctx, cancel := context.WithTimeout(r.Context(), 30*time.Second)
	defer cancel()
	tok, exp, err := s.b.CreateJoinToken(ctx)
	if err != nil {
		s.render(w, r, http.StatusServiceUnavailable, "offices", "Offices", d, "", "No join token could be made: "+err.Error())
		return
	}
	d.Token, d.Expires = tok, exp
	if d.QR, err = qr.SVG(tok); err != nil {
		s.log.Warn("join token QR code", "err", err)
	}
	s.audit(r, "office-token", "join token created, valid until "+exp.UTC().Format(time.RFC3339))
	// Shown once, on this response: the token is not kept anywhere readable.
	s.render(w, r, http.StatusOK, "offices", "Offices", d, flashes["token"], "")
}

// --- the central index ---

type indexData struct {
	Paired bool
	Index  *IndexStatus
}

func (s *Server) indexData(ctx context.Context) indexData {
	d := indexData{Paired: s.b.Paired()}
	if st, err := s.b.Status(ctx); err == nil {
		d.Index = st.Index
	}
	return d
}

func (s *Server) handleIndexPage(w http.ResponseWriter, r *http.Request) {
	s.render(w, r, http.StatusOK, "indexpage", "Central index", s.indexData(r.Context()), flashOf(r), "")
}

func (s *Server) handleIndexEnrol(w http.ResponseWriter, r *http.Request) {
	if !parseForm(w, r) {
		return
	}
	customer, err := s.b.EnrolIndex(r.Context(), strings.TrimSpace(r.PostForm.Get("token")))
	if err != nil {
		s.render(w, r, http.StatusBadRequest, "indexpage", "Central index", s.indexData(r.Context()), "", "Enrolment failed: "+err.Error())
		return
	}
	s.audit(r, "index-enrol", "enrolled as customer "+customer)
	redirectDone(w, r, "/index", "enrolled")
}

// --- people ---

type usersData struct {
	Users   []accounts.User
	Domains []string
	Link    string // a fresh invitation link, shown once
	Me      string
}

func (s *Server) usersData(r *http.Request) usersData {
	users, err := s.acc.Users()
	if err != nil {
		s.log.Error("list users", "err", err)
	}
	return usersData{Users: users, Domains: s.acc.Domains(), Me: actor(r)}
}

func (s *Server) handleUsers(w http.ResponseWriter, r *http.Request) {
	s.render(w, r, http.StatusOK, "users", "People", s.usersData(r), flashOf(r), "")
}

func (s *Server) handleInvite(w http.ResponseWriter, r *http.Request) {
	if !parseForm(w, r) {
		return
	}
	role := accounts.Role(r.PostForm.Get("role"))
	if role != accounts.RoleAdmin && role != accounts.RoleViewer {
		role = accounts.RoleViewer
	}
	d := s.usersData(r)
	tok, err := s.acc.Invite(actor(r), r.PostForm.Get("email"), role, 7*24*time.Hour)
	if err != nil {
		s.render(w, r, http.StatusBadRequest, "users", "People", d, "", err.Error())
		return
	}
	scheme := "https"
	if r.TLS == nil {
		scheme = "http"
	}
	d.Link = (&url.URL{Scheme: scheme, Host: r.Host, Path: "/invite/" + tok}).String()
	s.render(w, r, http.StatusOK, "users", "People", d, flashes["invited"], "")
}

func (s *Server) handleUserChange(w http.ResponseWriter, r *http.Request) {
	if !parseForm(w, r) {
		return
	}
	email := r.PathValue("email")
	var err error
	var key string
	switch r.PostForm.Get("action") {
	case "role-admin":
		err, key = s.acc.SetRole(actor(r), email, accounts.RoleAdmin), "role"
	case "role-viewer":
		err, key = s.acc.SetRole(actor(r), email, accounts.RoleViewer), "role"
	case "disable":
		err, key = s.acc.SetDisabled(actor(r), email, true), "user-off"
	case "enable":
		err, key = s.acc.SetDisabled(actor(r), email, false), "user-on"
	default:
		http.Error(w, "Unknown action.", http.StatusBadRequest)
		return
	}
	if err != nil {
		msg := err.Error()
		if errors.Is(err, accounts.ErrLastAdmin) {
			msg = "The box needs at least one enabled admin: make someone else admin first."
		}
		s.render(w, r, http.StatusBadRequest, "users", "People", s.usersData(r), "", msg)
		return
	}
	redirectDone(w, r, "/users", key)
}

// --- settings ---

type settingsData struct {
	Site    SiteSettings
	Domains string
	Zones   []string
}

func (s *Server) handleSettings(w http.ResponseWriter, r *http.Request) {
	d := settingsData{Site: s.b.Site(), Domains: strings.Join(s.acc.Domains(), ", "), Zones: commonZones}
	s.render(w, r, http.StatusOK, "settings", "Settings", d, flashOf(r), "")
}

func (s *Server) handleSettingsSave(w http.ResponseWriter, r *http.Request) {
	if !parseForm(w, r) {
		return
	}
	f := r.PostForm
	d := settingsData{
		Site:    SiteSettings{Name: strings.TrimSpace(f.Get("site")), Region: strings.TrimSpace(f.Get("region")), TimeZone: strings.TrimSpace(f.Get("tz"))},
		Domains: f.Get("domains"), Zones: commonZones,
	}
	domains, err := accounts.NormalizeDomains(splitDomains(d.Domains))
	if err == nil {
		err = s.b.SetSite(r.Context(), d.Site)
	}
	if err == nil {
		err = s.acc.SetDomains(actor(r), domains)
	}
	if err != nil {
		s.render(w, r, http.StatusBadRequest, "settings", "Settings", d, "", err.Error())
		return
	}
	s.audit(r, "settings", fmt.Sprintf("site %q, region %q, time zone %q", d.Site.Name, d.Site.Region, d.Site.TimeZone))
	redirectDone(w, r, "/settings", "settings")
}

// --- audit log ---

func (s *Server) handleAudit(w http.ResponseWriter, r *http.Request) {
	entries, err := s.acc.AuditLog(500)
	if err != nil {
		s.renderError(w, r, http.StatusServiceUnavailable, "The audit log cannot be read: "+err.Error())
		return
	}
	s.render(w, r, http.StatusOK, "audit", "Audit log", entries, flashOf(r), "")
}

func (s *Server) handleAuditExport(w http.ResponseWriter, r *http.Request) {
	format := r.URL.Query().Get("format")
	s.audit(r, "export", "audit log as "+format)
	switch format {
	case "csv":
		w.Header().Set("Content-Type", "text/csv; charset=utf-8")
		w.Header().Set("Content-Disposition", `attachment; filename="pulsegate-audit.csv"`)
		if err := s.acc.WriteAuditCSV(w); err != nil {
			s.log.Error("export audit", "err", err)
		}
	default:
		w.Header().Set("Content-Type", "application/json")
		w.Header().Set("Content-Disposition", `attachment; filename="pulsegate-audit.json"`)
		if err := s.acc.WriteAuditJSON(w); err != nil {
			s.log.Error("export audit", "err", err)
		}
	}
}

// --- rights: export and erasure of what this box holds ---

func (s *Server) handleRights(w http.ResponseWriter, r *http.Request) {
	s.render(w, r, http.StatusOK, "rights", "Your data", s.b.Site(), flashOf(r), "")
}

// handleExport writes one zip: the box's counts and settings (the gateway's
// part, JSON and CSV), the people with accounts (no password hashes), and
// the audit log, as JSON and CSV.
func (s *Server) handleExport(w http.ResponseWriter, r *http.Request) {
	s.audit(r, "export", "everything this box holds")
	w.Header().Set("Content-Type", "application/zip")
	w.Header().Set("Content-Disposition", fmt.Sprintf(`attachment; filename="pulsegate-export-%s.zip"`, time.Now().UTC().Format("20060102-150405")))
	zw := zip.NewWriter(w)
	err := s.b.ExportLocal(r.Context(), zw.Create)
	add := func(name string, write func(io.Writer) error) {
		if err != nil {
			return
		}
		var f io.Writer
		if f, err = zw.Create(name); err == nil {
			err = write(f)
		}
	}
	add("accounts/users.json", func(f io.Writer) error {
		users, err := s.acc.Users()
		if err != nil {
			return err
		}
		return json.NewEncoder(f).Encode(users)
	})
	add("accounts/audit.json", s.acc.WriteAuditJSON)
	add("accounts/audit.csv", s.acc.WriteAuditCSV)
	if err == nil {
		err = zw.Close()
	}
	if err != nil {
		// The headers are gone; a broken zip is what the browser gets.
		s.log.Error("export", "err", err)
	}
}

func (s *Server) handleErase(w http.ResponseWriter, r *http.Request) {
	if !parseForm(w, r) {
		return
	}
	site := s.b.Site()
	if strings.TrimSpace(r.PostForm.Get("confirm")) != site.Name {
		s.render(w, r, http.StatusBadRequest, "rights", "Your data", site, "",
			fmt.Sprintf("Nothing was erased: type the office name %q exactly to confirm.", site.Name))
		return
	}
	if err := s.b.EraseLocal(r.Context()); err != nil {
		s.render(w, r, http.StatusInternalServerError, "rights", "Your data", site, "", "Erasing failed: "+err.Error())
		return
	}
	s.audit(r, "erase", "this office's local counts")
	redirectDone(w, r, "/rights", "erased")
}
