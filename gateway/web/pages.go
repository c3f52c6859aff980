package web

import (
	"bytes"
	"fmt"
	"html/template"
	"io/fs"
	"net/http"
	"path"
	"strings"
	"time"
)

// pages are the UI's templates: every page is templates/<name>.html, which
// defines "content", rendered inside templates/layout.html.
type pages struct {
	t map[string]*template.Template
}

var funcs = template.FuncMap{
	"when": func(t time.Time) string {
		if t.IsZero() {
			return "never"
		}
		return t.Local().Format("2006-01-02 15:04:05")
	},
	"ago": func(t time.Time) string {
		if t.IsZero() {
			return "never"
		}
		d := time.Since(t).Round(time.Second)
		if d < 0 {
			d = 0
		}
		return d.String() + " ago"
	},
	"eq": func(a, b any) bool { return a == b },
}

func parsePages() (*pages, error) {
	names, err := fs.Glob(assets, "templates/*.html")
	if err != nil {
		return nil, err
	}
	p := &pages{t: map[string]*template.Template{}}
	for _, n := range names {
		name := strings.TrimSuffix(path.Base(n), ".html")
		if name == "layout" {
			continue
		}
		t, err := template.New("layout.html").Funcs(funcs).ParseFS(assets, "templates/layout.html", n)
		if err != nil {
			return nil, fmt.Errorf("parse template %s: %w", n, err)
		}
		p.t[name] = t
	}
	return p, nil
}

// view is what the layout renders around a page.
type view struct {
	Title       string
	Page        string // the template name, for the navigation
	User        *who
	Site        SiteSettings
	Fingerprint string
	Flash       string // a success message
	Error       string // a problem the person can act on
	Data        any
}

// IsAdmin tells the layout whether to show admin navigation.
func (v view) IsAdmin() bool { return v.User != nil && v.User.user.Role == "admin" }

// Email is the signed-in person's address.
func (v view) Email() string {
	if v.User == nil {
		return ""
	}
	return v.User.user.Email
}

// render writes page name with data. Rendering goes to a buffer first, so a
// template error becomes a clean 500, not half a page.
func (s *Server) render(w http.ResponseWriter, r *http.Request, code int, name, title string, data any, flash, errMsg string) {
	t, ok := s.pages.t[name]
	if !ok {
		http.Error(w, "no such page", http.StatusInternalServerError)
		return
	}
	v := view{Title: title, Page: name, Site: s.b.Site(), Fingerprint: s.b.TLSFingerprint(), Flash: flash, Error: errMsg, Data: data}
	if u, ok := userOf(r); ok {
		v.User = &u
	}
	var buf bytes.Buffer
	if err := t.ExecuteTemplate(&buf, "layout.html", v); err != nil {
		s.log.Error("render page", "page", name, "err", err)
		http.Error(w, "the page could not be shown", http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.WriteHeader(code)
	w.Write(buf.Bytes()) //nolint:errcheck // the browser went away
}

// renderError shows a plain message on its own page.
func (s *Server) renderError(w http.ResponseWriter, r *http.Request, code int, msg string) {
	s.render(w, r, code, "message", http.StatusText(code), nil, "", msg)
}

// flash messages travel in the query string of the redirect after a POST,
// as a fixed key, never as free text from the request.
var flashes = map[string]string{
	"approved":     "The board is approved: its presses count from now on.",
	"unapproved":   "The board is no longer approved: its presses are acknowledged but not counted.",
	"disabled":     "The board is disabled: its presses are acknowledged but not counted.",
	"enabled":      "The board is enabled again.",
	"named":        "The board's name is saved.",
	"test-on":      "Test mode is on: presses show up below without being counted.",
	"test-off":     "Test mode is off.",
	"password":     "Your password is changed. Sign in again on your other devices.",
	"invited":      "The invitation is ready: send the link below to the person.",
	"role":         "The role is changed.",
	"user-off":     "The account is disabled and signed out everywhere.",
	"user-on":      "The account is enabled again.",
	"settings":     "The settings are saved.",
	"enrolled":     "The cluster is enrolled with the central index.",
	"paired-init":  "A new organisation is started: this box is its first office.",
	"paired-join":  "This box has joined the organisation.",
	"erased":       "This office's local counts are erased.",
	"setup-done":   "Setup is done. Next: pair this office and approve its boards.",
	"token":        "A join token is ready for the new office.",
	"invite-taken": "Your account is ready. Sign in with your new password.",
}

func flashOf(r *http.Request) string { return flashes[r.URL.Query().Get("done")] }

// redirectDone answers a successful POST with a redirect to target and a
// flash key (Post/Redirect/Get).
func redirectDone(w http.ResponseWriter, r *http.Request, target, key string) {
	sep := "?"
	if strings.Contains(target, "?") {
		sep = "&"
	}
	http.Redirect(w, r, target+sep+"done="+key, http.StatusSeeOther)
}
