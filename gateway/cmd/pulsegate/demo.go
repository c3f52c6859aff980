package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/pulsegate/pulsegate/cluster"
	"github.com/pulsegate/pulsegate/gateway"
	"github.com/pulsegate/pulsegate/gateway/accounts"
)

// demoOffice is one office of the demo.
type demoOffice struct {
	name, region string
	dir          string
	http         string // 127.0.0.1:port of the page
	https        string // 127.0.0.1:port of the page over HTTPS
	peer, gossip string
	cmd          *exec.Cmd
	done         chan error
}

// runDemo starts a customer's offices as separate processes on loopback,
// each with a simulated board, pairs them through the real token flow, and
// prints their URLs. Ctrl-C stops them all.
func runDemo(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("demo", flag.ContinueOnError)
	fs.SetOutput(stderr)
	dir := fs.String("dir", "demo-data", "`directory` for the offices' data (kept between runs)")
	n := fs.Int("offices", 3, "number of offices, 1 to 5")
	basePort := fs.Int("base-port", 8081, "the first office's page `port`; the others follow")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *n < 1 || *n > 5 {
		return errors.New("demo: --offices must be 1 to 5")
	}
	self, err := os.Executable()
	if err != nil {
		return fmt.Errorf("demo: %w", err)
	}
	names := []string{"Lisbon", "Berlin", "Warsaw", "Dublin", "Vienna"}
	regions := []string{"eu-west", "eu-central", "eu-east", "eu-west", "eu-central"}
	offices := make([]*demoOffice, *n)
	for i := range offices {
		offices[i] = &demoOffice{
			name: names[i], region: regions[i],
			dir:    filepath.Join(*dir, strings.ToLower(names[i])),
			http:   fmt.Sprintf("127.0.0.1:%d", *basePort+i),
			https:  fmt.Sprintf("127.0.0.1:%d", *basePort+100+i),
			peer:   fmt.Sprintf("127.0.0.1:%d", 7400+10*i),
			gossip: fmt.Sprintf("127.0.0.1:%d", 7401+10*i),
		}
	}
	defer func() {
		for _, o := range offices {
			o.stop()
		}
	}()

	first := offices[0]
	if !cluster.Paired(clusterDir(first.dir)) {
		if _, err := cluster.Init(clusterDir(first.dir), "demo", time.Now()); err != nil {
			return err
		}
	}
	for i, o := range offices {
		if i > 0 && !cluster.Paired(clusterDir(o.dir)) {
			tok, err := demoToken(ctx, first.dir)
			if err != nil {
				return err
			}
			jctx, cancel := context.WithTimeout(ctx, time.Minute)
			_, err = cluster.Join(jctx, clusterDir(o.dir), tok, time.Now())
			cancel()
			if err != nil {
				return fmt.Errorf("demo: pair %s: %w", o.name, err)
			}
		}
		if err := demoAdmin(o.dir, o.name); err != nil {
			return err
		}
		if err := o.start(self); err != nil {
			return err
		}
		fmt.Fprintf(stdout, "starting %s ...\n", o.name)
		if err := o.waitLeader(ctx); err != nil {
			return err
		}
	}
	fmt.Fprintf(stdout, "\n%d offices of customer \"demo\" are running, each with a simulated board:\n", len(offices))
	for _, o := range offices {
		fmt.Fprintf(stdout, "  %-8s http://%s/   (log: %s.log)\n", o.name, o.http, o.dir)
	}
	fmt.Fprintf(stdout, "\nSign in as %s with the password %q (the same on every office).\n", demoEmail, demoPassword)
	fmt.Fprintln(stdout, "\nEvery page lists every office. Press Ctrl-C to stop them all.")
	for {
		select {
		case <-ctx.Done():
			fmt.Fprintln(stdout, "stopping the offices")
			return nil
		case <-time.After(time.Second):
			for _, o := range offices {
				select {
				case err := <-o.done:
					return fmt.Errorf("demo: %s stopped: %v (see %s.log)", o.name, err, o.dir)
				default:
				}
			}
		}
	}
}

func clusterDir(dataDir string) string {
	cfg := gateway.DefaultConfig()
	cfg.DataDir = dataDir
	return cfg.ClusterDir()
}

func (o *demoOffice) start(self string) error {
	if err := os.MkdirAll(o.dir, 0o700); err != nil {
		return err
	}
	logf, err := os.OpenFile(o.dir+".log", os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return err
	}
	o.cmd = exec.Command(self, "run", "--data-dir", o.dir, "--listen", o.http, "--https-listen", o.https,
		"--site-name", o.name, "--region", o.region,
		"--cluster-listen", o.peer, "--gossip-listen", o.gossip,
		"--sim", "on", "--sim-rate", "0.3",
		// Nobody approves the simulated boards: count their presses at once.
		"--auto-approve-boards",
		// A demo should show a closed period reaching the index quickly.
		"--release-interval", "5s")
	o.cmd.Stdout, o.cmd.Stderr = logf, logf
	if err := o.cmd.Start(); err != nil {
		logf.Close()
		return fmt.Errorf("demo: start %s: %w", o.name, err)
	}
	o.done = make(chan error, 1)
	go func() {
		o.done <- o.cmd.Wait()
		logf.Close()
	}()
	return nil
}

// waitLeader waits until the office's page answers and it knows a leader.
func (o *demoOffice) waitLeader(ctx context.Context) error {
	deadline := time.Now().Add(2 * time.Minute)
	for time.Now().Before(deadline) {
		var st struct {
			Cluster *struct {
				LeaderKnown bool `json:"leader_known"`
			} `json:"cluster"`
		}
		if err := demoGet(ctx, o.dir, &st); err == nil && st.Cluster != nil && st.Cluster.LeaderKnown {
			return nil
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case err := <-o.done:
			return fmt.Errorf("demo: %s exited: %v (see %s.log)", o.name, err, o.dir)
		case <-time.After(250 * time.Millisecond):
		}
	}
	return fmt.Errorf("demo: %s found no leader within 2 minutes (see %s.log)", o.name, o.dir)
}

func (o *demoOffice) stop() {
	if o.cmd == nil || o.cmd.Process == nil {
		return
	}
	o.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-o.done:
	case <-time.After(15 * time.Second):
		o.cmd.Process.Kill()
		<-o.done
	}
}

func demoGet(ctx context.Context, dataDir string, v any) error {
	ctx, cancel := context.WithTimeout(ctx, 3*time.Second)
	defer cancel()
	return askBox(ctx, dataDir, http.MethodGet, "/api/status", nil, v)
}

func demoToken(ctx context.Context, dataDir string) (string, error) {
	tok, _, err := createToken(ctx, dataDir)
	if err != nil {
		return "", fmt.Errorf("demo: %w", err)
	}
	return tok, nil
}

// The demo's offices each get this admin, so that their pages can be opened
// at once. A demo's data lives on this machine only.
const (
	demoEmail    = "admin@demo.example"
	demoPassword = "pulsegate demo"
)

// demoAdmin sets an office up as the browser's first boot would: the demo
// admin, and the site's settings.
func demoAdmin(dataDir, name string) error {
	if err := os.MkdirAll(dataDir, 0o700); err != nil {
		return err
	}
	cfg := gateway.DefaultConfig()
	cfg.DataDir = dataDir
	acc, err := accounts.Open(cfg.AccountsPath(), accounts.Options{})
	if err != nil {
		return fmt.Errorf("demo: %w", err)
	}
	defer acc.Close()
	if acc.SetupDone() {
		return nil
	}
	if _, err := acc.CreateFirstAdmin(demoEmail, demoPassword, []string{"demo.example"}); err != nil {
		return fmt.Errorf("demo: set up %s: %w", name, err)
	}
	return nil
}
