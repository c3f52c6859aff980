// Package tests holds end-to-end tests: they build the real pulsegate binary,
// start it as a child process and talk to it through real ptys and HTTP.
package tests

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

var (
	buildOnce sync.Once
	binPath   string
	buildErr  error
)

// pulsegateBin builds the binary once per test run.
func pulsegateBin(tb testing.TB) string {
	tb.Helper()
	buildOnce.Do(func() {
		dir, err := os.MkdirTemp("", "pulsegate-e2e-")
		if err != nil {
			buildErr = err
			return
		}
		binPath = filepath.Join(dir, "pulsegate")
		_, file, _, _ := runtime.Caller(0)
		root := filepath.Dir(filepath.Dir(file))
		cmd := exec.Command("go", "build", "-o", binPath, "./gateway/cmd/pulsegate")
		cmd.Dir = root
		out, err := cmd.CombinedOutput()
		if err != nil {
			buildErr = fmt.Errorf("go build: %v\n%s", err, out)
		}
	})
	if buildErr != nil {
		tb.Fatal(buildErr)
	}
	return binPath
}

// proc is a running pulsegate child.
type proc struct {
	cmd  *exec.Cmd
	url  string
	logs *lockedBuffer
	done chan struct{}
	err  error
}

type lockedBuffer struct {
	mu sync.Mutex
	b  strings.Builder
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

var urlRE = regexp.MustCompile(`Open (http://\S+)`)

// startPulsegate runs `pulsegate run args...` and waits for it to print its URL.
func startPulsegate(tb testing.TB, args ...string) *proc {
	tb.Helper()
	return startProc(tb, exec.Command(pulsegateBin(tb), append([]string{"run"}, args...)...))
}

// startProc starts cmd (a `pulsegate run`, possibly behind `ip netns exec`)
// and waits for it to print the URL it serves.
func startProc(tb testing.TB, cmd *exec.Cmd) *proc {
	tb.Helper()
	p, m := startAndWaitFor(tb, cmd, urlRE, 30*time.Second)
	p.url = m[1]
	return p
}

// startAndWaitFor starts cmd and waits until a line of its stdout matches
// re; it returns the match. Both outputs are kept in the proc's logs.
func startAndWaitFor(tb testing.TB, cmd *exec.Cmd, re *regexp.Regexp, timeout time.Duration) (*proc, []string) {
	tb.Helper()
	p := &proc{cmd: cmd, logs: &lockedBuffer{}, done: make(chan struct{})}
	cmd.Stderr = p.logs
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		tb.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		tb.Fatal(err)
	}
	found := make(chan []string, 1)
	go func() {
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			p.logs.Write([]byte(sc.Text() + "\n"))
			if m := re.FindStringSubmatch(sc.Text()); m != nil {
				select {
				case found <- m:
				default:
				}
			}
		}
		io.Copy(io.Discard, stdout)
	}()
	go func() {
		p.err = cmd.Wait()
		close(p.done)
	}()
	tb.Cleanup(p.kill)
	select {
	case m := <-found:
		return p, m
	case <-p.done:
		tb.Fatalf("%s exited: %v\n%s", cmd, p.err, p.logs)
	case <-time.After(timeout):
		tb.Fatalf("%s printed nothing matching %s within %s\n%s", cmd, re, timeout, p.logs)
	}
	return nil, nil
}

// kill sends SIGKILL and waits for the process to be gone.
func (p *proc) kill() {
	select {
	case <-p.done:
		return
	default:
	}
	p.cmd.Process.Signal(syscall.SIGKILL)
	<-p.done
}

// stop sends SIGTERM and waits for a clean exit.
func (p *proc) stop(tb testing.TB) {
	tb.Helper()
	p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.done:
		if p.err != nil {
			tb.Fatalf("pulsegate exited with %v after SIGTERM\n%s", p.err, p.logs)
		}
	case <-time.After(15 * time.Second):
		tb.Fatalf("pulsegate did not stop within 15s of SIGTERM\n%s", p.logs)
	}
}

// boxStatus reads /api/status through the admin socket in dataDir, as the
// command line does: over HTTP the status needs a signed-in person.
func boxStatus(tb testing.TB, dataDir string, v any) {
	tb.Helper()
	if err := boxStatusErr(dataDir, v); err != nil {
		tb.Fatal(err)
	}
}

func boxStatusErr(dataDir string, v any) error { return boxGetErr(dataDir, "/api/status", v) }

// boxGetErr GETs path through the admin socket in dataDir.
func boxGetErr(dataDir, path string, v any) error {
	sock := filepath.Join(dataDir, "admin.sock")
	client := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
		return (&net.Dialer{}).DialContext(ctx, "unix", sock)
	}}}
	defer client.CloseIdleConnections()
	resp, err := client.Get("http://box" + path)
	if err != nil {
		return fmt.Errorf("GET %s through %s: %w", path, sock, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		b, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<10))
		return fmt.Errorf("GET %s: %s: %s", path, resp.Status, b)
	}
	if err := json.NewDecoder(resp.Body).Decode(v); err != nil {
		return fmt.Errorf("decode %s: %w", path, err)
	}
	return nil
}

func getJSON(tb testing.TB, url string, v any) {
	tb.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		tb.Fatalf("GET %s: %v", url, err)
	}
	defer resp.Body.Close()
	if err := json.NewDecoder(resp.Body).Decode(v); err != nil {
		tb.Fatalf("GET %s: decode: %v", url, err)
	}
}

func getBody(tb testing.TB, url string) (int, string) {
	tb.Helper()
	resp, err := http.Get(url)
	if err != nil {
		tb.Fatalf("GET %s: %v", url, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

func waitFor(tb testing.TB, timeout time.Duration, what string, cond func() bool) {
	tb.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			tb.Fatalf("timed out after %s waiting for %s", timeout, what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}
