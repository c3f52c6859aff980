package web

import (
	"errors"
	"net"
	"net/http"
	"strings"

	"github.com/pulsegate/pulsegate/gateway/accounts"
)

// Bodies of forms are small; a larger one is refused before it is parsed.
const maxForm = 16 << 10

func parseForm(w http.ResponseWriter, r *http.Request) bool {
	r.Body = http.MaxBytesReader(w, r.Body, maxForm)
	if err := r.ParseForm(); err != nil {
		http.Error(w, "The form could not be read.", http.StatusBadRequest)
		return false
	}
	return true
}

// remoteIP is the client's address, for lockout and the audit log.
func remoteIP(r *http.Request) string {
	host, _, err := net.SplitHostPort(r.RemoteAddr)
	if err != nil {
		return r.RemoteAddr
	}
	return host
}

func (s *Server) setCookie(w http.ResponseWriter, r *http.Request, sess accounts.Session) {
	http.SetCookie(w, &http.Cookie{
		Name: sessionCookie, Value: sess.ID, Path: "/", Expires: sess.Expires,
		HttpOnly: true, Secure: r.TLS != nil, SameSite: http.SameSiteLaxMode,
	})
}

func clearCookie(w http.ResponseWriter, r *http.Request) {
	http.SetCookie(w, &http.Cookie{Name: sessionCookie, Value: "", Path: "/", MaxAge: -1, HttpOnly: true, Secure: r.TLS != nil, SameSite: http.SameSiteLaxMode})
}

type loginData struct{ Email, Next string }

func (s *Server) handleLoginForm(w http.ResponseWriter, r *http.Request) {
	if !s.acc.SetupDone() {
		http.Redirect(w, r, "/setup", http.StatusSeeOther)
		return
	}
	s.render(w, r, http.StatusOK, "login", "Sign in", loginData{Next: safeNext(r.URL.Query().Get("next"))}, flashOf(r), "")
}

func (s *Server) handleLogin(w http.ResponseWriter, r *http.Request) {
	if !parseForm(w, r) {
		return
	}
	email, next := strings.TrimSpace(r.PostForm.Get("email")), safeNext(r.PostForm.Get("next"))
	sess, err := s.acc.Login(email, r.PostForm.Get("password"), remoteIP(r))
	if err != nil {
		msg, code := "That email and password do not match an account.", http.StatusUnauthorized
		var lo *accounts.LockedOutError
		if errors.As(err, &lo) {
			msg = "Too many failed sign-ins. Try again after " + lo.Until.Local().Format("15:04") + "."
			code = http.StatusTooManyRequests
		} else if !errors.Is(err, accounts.ErrBadCredentials) && !errors.Is(err, accounts.ErrBadEmail) {
			s.log.Error("login", "err", err)
			msg, code = "Signing in failed on this box; try again.", http.StatusInternalServerError
		}
		s.render(w, r, code, "login", "Sign in", loginData{Email: email, Next: next}, "", msg)
		return
	}
	s.setCookie(w, r, sess)
	http.Redirect(w, r, next, http.StatusSeeOther)
}

func (s *Server) handleLogout(w http.ResponseWriter, r *http.Request) {
	if u, ok := userOf(r); ok {
		if err := s.acc.Logout(u.session.ID); err != nil {
			s.log.Warn("logout", "err", err)
		}
	}
	clearCookie(w, r)
	http.Redirect(w, r, "/login", http.StatusSeeOther)
}

type setupData struct {
	Email, Domains string
	Site           SiteSettings
	Zones          []string
}

// commonZones are offered in the time-zone field; any IANA name works.
var commonZones = []string{"Europe/Amsterdam", "Europe/Athens", "Europe/Berlin", "Europe/Brussels", "Europe/Bucharest",
	"Europe/Budapest", "Europe/Copenhagen", "Europe/Dublin", "Europe/Helsinki", "Europe/Lisbon", "Europe/London",
	"Europe/Madrid", "Europe/Oslo", "Europe/Paris", "Europe/Prague", "Europe/Riga", "Europe/Rome", "Europe/Sofia",
	"Europe/Stockholm", "Europe/Tallinn", "Europe/Vienna", "Europe/Vilnius", "Europe/Warsaw", "Europe/Zagreb",
	"Europe/Zurich", "UTC"}

func (s *Server) handleSetupForm(w http.ResponseWriter, r *http.Request) {
	site := s.b.Site()
	if site.TimeZone == "Local" {
		site.TimeZone = ""
	}
	s.render(w, r, http.StatusOK, "setup", "Set up this box", setupData{Site: site, Zones: commonZones}, "", "")
}

func splitDomains(s string) []string {
	return strings.FieldsFunc(s, func(r rune) bool { return r == ',' || r == ' ' || r == ';' || r == '\n' })
}

func (s *Server) handleSetup(w http.ResponseWriter, r *http.Request) {
	if !parseForm(w, r) {
		return
	}
	f := r.PostForm
	d := setupData{
		Email: strings.TrimSpace(f.Get("email")), Domains: f.Get("domains"), Zones: commonZones,
		Site: SiteSettings{Name: strings.TrimSpace(f.Get("site")), Region: strings.TrimSpace(f.Get("region")), TimeZone: strings.TrimSpace(f.Get("tz"))},
	}
	fail := func(msg string) {
		s.render(w, r, http.StatusBadRequest, "setup", "Set up this box", d, "", msg)
	}
	if f.Get("password") != f.Get("password2") {
		fail("The two passwords are not the same.")
		return
	}
	domains, err := accounts.NormalizeDomains(splitDomains(d.Domains))
	if err != nil {
		fail(err.Error())
		return
	}
	if err := accounts.CheckEmail(d.Email, domains); err != nil {
		fail(err.Error())
		return
	}
	if err := s.b.SetSite(r.Context(), d.Site); err != nil {
		fail(err.Error())
		return
	}
	if _, err := s.acc.CreateFirstAdmin(d.Email, f.Get("password"), domains); err != nil {
		if errors.Is(err, accounts.ErrSetupDone) {
			http.Redirect(w, r, "/login", http.StatusSeeOther)
			return
		}
		fail(err.Error())
		return
	}
	sess, err := s.acc.Login(d.Email, f.Get("password"), remoteIP(r))
	if err != nil {
		s.log.Error("sign in after setup", "err", err)
		http.Redirect(w, r, "/login", http.StatusSeeOther)
		return
	}
	s.setCookie(w, r, sess)
	if s.b.Paired() {
		redirectDone(w, r, "/boards", "setup-done")
		return
	}
	redirectDone(w, r, "/pair", "setup-done")
}

type inviteData struct {
	Token, Email string
	Role         accounts.Role
}

func (s *Server) handleInviteForm(w http.ResponseWriter, r *http.Request) {
	tok := r.PathValue("token")
	email, role, err := s.acc.InviteInfo(tok)
	if err != nil {
		s.renderError(w, r, http.StatusNotFound, "This invitation is unknown, used or expired. Ask an admin for a new one.")
		return
	}
	s.render(w, r, http.StatusOK, "invite", "Create your account", inviteData{Token: tok, Email: email, Role: role}, "", "")
}

func (s *Server) handleInviteAccept(w http.ResponseWriter, r *http.Request) {
	if !parseForm(w, r) {
		return
	}
	tok := r.PathValue("token")
	email, role, err := s.acc.InviteInfo(tok)
	if err != nil {
		s.renderError(w, r, http.StatusNotFound, "This invitation is unknown, used or expired. Ask an admin for a new one.")
		return
	}
	d := inviteData{Token: tok, Email: email, Role: role}
	if r.PostForm.Get("password") != r.PostForm.Get("password2") {
		s.render(w, r, http.StatusBadRequest, "invite", "Create your account", d, "", "The two passwords are not the same.")
		return
	}
	if _, err := s.acc.AcceptInvite(tok, r.PostForm.Get("password")); err != nil {
		s.render(w, r, http.StatusBadRequest, "invite", "Create your account", d, "", err.Error())
		return
	}
	redirectDone(w, r, "/login", "invite-taken")
}

type accountData struct{ Role accounts.Role }

func (s *Server) handleAccount(w http.ResponseWriter, r *http.Request) {
	u, _ := userOf(r)
	s.render(w, r, http.StatusOK, "account", "Your account", accountData{Role: u.user.Role}, flashOf(r), "")
}

func (s *Server) handlePassword(w http.ResponseWriter, r *http.Request) {
	if !parseForm(w, r) {
		return
	}
	u, _ := userOf(r)
	f := r.PostForm
	fail := func(code int, msg string) {
		s.render(w, r, code, "account", "Your account", accountData{Role: u.user.Role}, "", msg)
	}
	if f.Get("new") != f.Get("new2") {
		fail(http.StatusBadRequest, "The two new passwords are not the same.")
		return
	}
	if err := s.acc.ChangePassword(u.user.Email, f.Get("old"), f.Get("new")); err != nil {
		if errors.Is(err, accounts.ErrBadCredentials) {
			fail(http.StatusBadRequest, "The current password is not right.")
			return
		}
		fail(http.StatusBadRequest, err.Error())
		return
	}
	// Every session of the account ended; this one starts again.
	sess, err := s.acc.Login(u.user.Email, f.Get("new"), remoteIP(r))
	if err != nil {
		clearCookie(w, r)
		http.Redirect(w, r, "/login", http.StatusSeeOther)
		return
	}
	s.setCookie(w, r, sess)
	redirectDone(w, r, "/account", "password")
}
