package index

import (
	"bytes"
	"fmt"
	"net/http"
	"strings"
)

// The HQ page and its login. The page authenticates like the API (an HQ key
// as a Bearer token, or the login cookie holding the same key), so a
// browser and a script see the same customer and the same cells. The
// cookie is HttpOnly, Secure and SameSite=Strict; state-changing routes are
// guarded by http.CrossOriginProtection (see routes).

func (s *Server) handleHQ(w http.ResponseWriter, r *http.Request) {
	p, status, _ := s.checkHQ(r)
	switch {
	case status == http.StatusUnauthorized:
		http.Redirect(w, r, "/hq/login", http.StatusSeeOther)
		return
	case status != 0:
		s.htmlLogin(w, status, "This key can no longer be used.")
		return
	}
	q := r.URL.Query()
	from, to, err := periodRange(q.Get("from"), q.Get("to"), s.now())
	if err != nil {
		http.Error(w, "Bad period range: "+err.Error(), http.StatusBadRequest)
		return
	}
	regions, err := s.store.Regions(r.Context(), p.customer)
	if err != nil {
		s.internalHTML(w, r, err)
		return
	}
	if !s.auditHTML(w, r, p, "pull", fmt.Sprintf("hq page, %d regions, %s to %s", len(regions), from, to)) {
		return
	}
	page := hqPage{Customer: p.customer, From: from, To: to}
	for _, region := range regions {
		cells, err := s.regionCells(r.Context(), p.customer, region, from, to)
		if err != nil {
			s.internalHTML(w, r, err)
			return
		}
		page.Regions = append(page.Regions, hqRegion{Region: region, Cells: cells})
	}
	if len(regions) == 0 {
		page.Notice = "No office of this customer has uploaded anything yet."
	}
	var buf bytes.Buffer
	if err := renderHQ(&buf, page); err != nil {
		s.internalHTML(w, r, err)
		return
	}
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.Header().Set("Cache-Control", "no-store")
	buf.WriteTo(w) //nolint:errcheck // the client went away
}

func (s *Server) handleLoginForm(w http.ResponseWriter, r *http.Request) {
	s.htmlLogin(w, http.StatusOK, "")
}

func (s *Server) handleLogin(w http.ResponseWriter, r *http.Request) {
	r.Body = http.MaxBytesReader(w, r.Body, maxLoginBody)
	if err := r.ParseForm(); err != nil {
		s.htmlLogin(w, http.StatusBadRequest, "The form could not be read.")
		return
	}
	raw := strings.TrimSpace(r.PostForm.Get("key"))
	p, status, _ := s.checkHQKey(r.Context(), raw)
	switch status {
	case 0:
	case http.StatusInternalServerError:
		s.htmlLogin(w, status, "The index could not check the key. Try again later.")
		return
	case http.StatusForbidden:
		s.htmlLogin(w, status, "This key's customer has been erased.")
		return
	default:
		s.htmlLogin(w, http.StatusUnauthorized, "That HQ key is not valid. Paste the whole key, starting with pghq1.")
		return
	}
	if !s.auditHTML(w, r, p, "login", "hq page") {
		return
	}
	http.SetCookie(w, &http.Cookie{
		Name: hqCookie, Value: raw, Path: "/",
		MaxAge:   int(hqCookieMaxAge.Seconds()),
		HttpOnly: true, Secure: true, SameSite: http.SameSiteStrictMode,
	})
	http.Redirect(w, r, "/hq/", http.StatusSeeOther)
}

func (s *Server) handleLogout(w http.ResponseWriter, r *http.Request) {
	http.SetCookie(w, &http.Cookie{
		Name: hqCookie, Value: "", Path: "/", MaxAge: -1,
		HttpOnly: true, Secure: true, SameSite: http.SameSiteStrictMode,
	})
	http.Redirect(w, r, "/hq/login", http.StatusSeeOther)
}

func (s *Server) htmlLogin(w http.ResponseWriter, status int, msg string) {
	var buf bytes.Buffer
	if err := renderHQLogin(&buf, msg); err != nil {
		s.log.Error("render hq login", "err", err)
		http.Error(w, "internal error", http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	buf.WriteTo(w) //nolint:errcheck // the client went away
}

func (s *Server) internalHTML(w http.ResponseWriter, r *http.Request, err error) {
	s.log.Error("request failed", "method", r.Method, "path", r.URL.Path, "err", err)
	http.Error(w, "Internal error; the index logged the details.", http.StatusInternalServerError)
}

func (s *Server) auditHTML(w http.ResponseWriter, r *http.Request, p principal, action, detail string) bool {
	if err := s.store.Audit(r.Context(), p.customer, p.actor, action, detail, s.now()); err != nil {
		s.internalHTML(w, r, err)
		return false
	}
	return true
}
