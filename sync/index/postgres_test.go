package index

import (
	"context"
	"database/sql"
	"fmt"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/stdlib"
)

// TestMain stops the private PostgreSQL server, if a test started one, once
// every test and benchmark has run.
func TestMain(m *testing.M) {
	code := m.Run()
	if err := pgServer.stop(); err != nil {
		fmt.Fprintln(os.Stderr, "stop postgres:", err)
		if code == 0 {
			code = 1
		}
	}
	os.Exit(code)
}

// pgServer is a throwaway PostgreSQL server private to this test binary: its
// own data directory in a temp dir, listening only on a unix socket in that
// dir. It does not need, nor touch, the Debian package's own cluster.
var pgServer = &privatePostgres{}

type privatePostgres struct {
	once   sync.Once
	skip   string // why there is no server, when PostgreSQL is not installed
	err    error
	dir    string // temp dir: data/, the socket, the log
	bin    string // the directory of initdb and pg_ctl
	runAs  string // "postgres" when we are root (PostgreSQL refuses to run as root)
	admin  *sql.DB
	nextDB atomic.Int64
}

const pgPort = 5432 // only names the socket file, in our own dir: no clash with anything

// findPostgresBin returns the bin directory of the newest PostgreSQL under
// /usr/lib/postgresql (Debian's layout), else the one of initdb on $PATH.
func findPostgresBin() string {
	dirs, _ := filepath.Glob("/usr/lib/postgresql/*/bin")
	sort.Slice(dirs, func(i, j int) bool {
		vi, _ := strconv.ParseFloat(filepath.Base(filepath.Dir(dirs[i])), 64)
		vj, _ := strconv.ParseFloat(filepath.Base(filepath.Dir(dirs[j])), 64)
		return vi > vj
	})
	for _, d := range dirs {
		if isExec(filepath.Join(d, "initdb")) && isExec(filepath.Join(d, "pg_ctl")) {
			return d
		}
	}
	if p, err := exec.LookPath("initdb"); err == nil && isExec(filepath.Join(filepath.Dir(p), "pg_ctl")) {
		return filepath.Dir(p)
	}
	return ""
}

func isExec(p string) bool {
	fi, err := os.Stat(p)
	return err == nil && !fi.IsDir() && fi.Mode()&0o111 != 0
}

// command runs one of PostgreSQL's programs, as the postgres user when we
// are root, from the server's dir (the programs want a readable cwd).
func (p *privatePostgres) command(prog string, args ...string) *exec.Cmd {
	path := filepath.Join(p.bin, prog)
	var cmd *exec.Cmd
	if p.runAs != "" {
		cmd = exec.Command("runuser", append([]string{"-u", p.runAs, "--", path}, args...)...)
	} else {
		cmd = exec.Command(path, args...)
	}
	cmd.Dir = p.dir
	cmd.Env = append(os.Environ(), "LC_ALL=C", "LANG=C")
	return cmd
}

func (p *privatePostgres) start() {
	p.bin = findPostgresBin()
	if p.bin == "" {
		p.skip = "PostgreSQL is not installed (no initdb/pg_ctl under /usr/lib/postgresql/*/bin or on $PATH; apt-get install postgresql)"
		return
	}
	dir, err := os.MkdirTemp("", "pulsegate-pg-")
	if err != nil {
		p.err = err
		return
	}
	p.dir = dir
	if os.Geteuid() == 0 {
		u, err := user.Lookup("postgres")
		if err != nil {
			p.err = fmt.Errorf("running as root, and PostgreSQL refuses root: need the postgres user (the Debian package creates it): %w", err)
			return
		}
		uid, _ := strconv.Atoi(u.Uid)
		gid, _ := strconv.Atoi(u.Gid)
		if err := os.Chown(dir, uid, gid); err != nil {
			p.err = err
			return
		}
		p.runAs = "postgres"
	}
	run := func(prog string, args ...string) error {
		out, err := p.command(prog, args...).CombinedOutput()
		if err != nil {
			return fmt.Errorf("%s %s: %w\n%s", prog, strings.Join(args, " "), err, out)
		}
		return nil
	}
	data := filepath.Join(dir, "data")
	if err := run("initdb", "-D", data, "-U", "pulsegate", "-A", "trust", "-E", "UTF8", "--locale=C", "--no-sync"); err != nil {
		p.err = err
		return
	}
	// listen_addresses='': no TCP at all, only the socket in our dir.
	opts := fmt.Sprintf("-k '%s' -p %d -c listen_addresses='' -c max_connections=200", dir, pgPort)
	if err := run("pg_ctl", "-D", data, "-l", filepath.Join(dir, "log"), "-o", opts, "-w", "-t", "60", "start"); err != nil {
		log, _ := os.ReadFile(filepath.Join(dir, "log"))
		p.err = fmt.Errorf("%w\nserver log:\n%s", err, log)
		return
	}
	p.watchdog()
	p.admin, p.err = openPGX(p.dsn("postgres"))
}

// watchdog starts a detached shell that, once this test binary is gone, stops
// the server and deletes its dir. TestMain does both on a normal exit; this
// covers a panic, a -timeout or a kill, which would otherwise leave a server
// running. It has its own session, so a Ctrl-C to the test's process group
// does not kill it first, and no stdout, so go test does not wait for it.
func (p *privatePostgres) watchdog() {
	stop := p.command("pg_ctl", "-D", filepath.Join(p.dir, "data"), "-m", "immediate", "-w", "stop")
	script := `pid=$1; dir=$2; shift 2; while kill -0 "$pid" 2>/dev/null; do sleep 1; done; "$@" >/dev/null 2>&1; rm -rf "$dir"`
	cmd := exec.Command("sh", append([]string{"-c", script, "watchdog", strconv.Itoa(os.Getpid()), p.dir}, stop.Args...)...)
	cmd.Dir = "/"
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	// Not waited for: it only ends after this process has.
	_ = cmd.Start()
}

func (p *privatePostgres) dsn(db string) string {
	return fmt.Sprintf("host=%s port=%d user=pulsegate dbname=%s sslmode=disable", p.dir, pgPort, db)
}

func openPGX(dsn string) (*sql.DB, error) {
	cfg, err := pgx.ParseConfig(dsn)
	if err != nil {
		return nil, err
	}
	return stdlib.OpenDB(*cfg), nil
}

func (p *privatePostgres) stop() error {
	if p.dir == "" {
		return nil
	}
	if p.admin != nil {
		p.admin.Close()
	}
	var err error
	if _, statErr := os.Stat(filepath.Join(p.dir, "data", "postmaster.pid")); statErr == nil {
		if out, e := p.command("pg_ctl", "-D", filepath.Join(p.dir, "data"), "-m", "immediate", "-w", "stop").CombinedOutput(); e != nil {
			err = fmt.Errorf("pg_ctl stop: %w\n%s", e, out)
		}
	}
	if e := os.RemoveAll(p.dir); e != nil && err == nil {
		err = e
	}
	return err
}

// postgresDSN returns the DSN of a new, empty database on the private server,
// starting the server on first use. Without PostgreSQL it skips the test,
// unless PULSEGATE_REQUIRE_PRIVILEGED=1 (CI): then a skip would hide the
// backend never being tested, so it fails.
func postgresDSN(tb testing.TB) string {
	tb.Helper()
	pgServer.once.Do(pgServer.start)
	if pgServer.skip != "" {
		if os.Getenv("PULSEGATE_REQUIRE_PRIVILEGED") == "1" {
			tb.Fatalf("%s; PULSEGATE_REQUIRE_PRIVILEGED=1 forbids skipping", pgServer.skip)
		}
		tb.Skip(pgServer.skip)
	}
	if pgServer.err != nil {
		tb.Fatalf("start private postgres: %v", pgServer.err)
	}
	name := fmt.Sprintf("t%d", pgServer.nextDB.Add(1))
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if _, err := pgServer.admin.ExecContext(ctx, "CREATE DATABASE "+name); err != nil {
		tb.Fatalf("create database %s: %v", name, err)
	}
	return pgServer.dsn(name)
}

// openPostgres opens a Store on a new database, closed when the test ends.
func openPostgres(tb testing.TB) *Store {
	tb.Helper()
	s, err := OpenPostgres(context.Background(), postgresDSN(tb))
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { s.Close() })
	return s
}

// openSQLite opens a Store on a new file, closed when the test ends.
func openSQLite(tb testing.TB) *Store {
	tb.Helper()
	s, err := OpenSQLite(filepath.Join(tb.TempDir(), "index.db"))
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { s.Close() })
	return s
}
