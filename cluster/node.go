package cluster

import (
	"bytes"
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/raft"
	wal "github.com/hashicorp/raft-wal"
)

// Timing is raft's clockwork. The defaults suit offices on flaky WAN links.
type Timing struct {
	Heartbeat   time.Duration // default 5s
	Election    time.Duration // default 5s
	LeaderLease time.Duration // default 2.5s
	Commit      time.Duration // default 100ms
}

// DefaultTiming returns the WAN defaults.
func DefaultTiming() Timing {
	return Timing{Heartbeat: 5 * time.Second, Election: 5 * time.Second, LeaderLease: 2500 * time.Millisecond, Commit: 100 * time.Millisecond}
}

// NodeConfig wires a Node.
type NodeConfig struct {
	SiteID string
	Dir    string // raft's data: wal/ and snapshots/
	Mux    *Mux
	// Bootstrap makes this node the first server of a new cluster when it
	// has no raft state yet. Only `pulsegate init` asks for it; a node with
	// existing state never bootstraps again.
	Bootstrap bool
	// ClientTLS returns the TLS config to dial the peer with site id site.
	ClientTLS func(site string) *tls.Config
	Timing    Timing // zero fields take DefaultTiming's
	Logger    *slog.Logger
}

// Node is one office's raft member.
type Node struct {
	cfg   NodeConfig
	log   *slog.Logger
	fsm   *FSM
	raft  *raft.Raft
	wal   *wal.WAL
	trans *raft.NetworkTransport

	closeOnce sync.Once
	closeErr  error
}

// Errors of a Node.
var (
	ErrNoLeader = errors.New("no leader known")
	ErrNotOwner = errors.New("an office may only publish its own counts")
)

// RPC methods served by a Node.
const rpcApply = "apply"

// OpenNode opens the node's raft state and starts raft.
func OpenNode(cfg NodeConfig) (*Node, error) {
	if !ValidSiteID(cfg.SiteID) {
		return nil, fmt.Errorf("open node: invalid site id %q", cfg.SiteID)
	}
	if cfg.Mux == nil || cfg.ClientTLS == nil {
		return nil, errors.New("open node: no transport")
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	def := DefaultTiming()
	t := &cfg.Timing
	for _, p := range []struct {
		v *time.Duration
		d time.Duration
	}{
		{&t.Heartbeat, def.Heartbeat}, {&t.Election, def.Election}, {&t.LeaderLease, def.LeaderLease}, {&t.Commit, def.Commit},
	} {
		if *p.v == 0 {
			*p.v = p.d
		}
	}
	n := &Node{cfg: cfg, log: cfg.Logger.With("component", "raft"), fsm: NewFSM()}

	walDir := filepath.Join(cfg.Dir, "wal")
	if err := os.MkdirAll(walDir, 0o700); err != nil {
		return nil, fmt.Errorf("open node: %w", err)
	}
	hl := hclogAdapter(n.log)
	var err error
	// Small segments: an office's log is small, and an SD card is kinder to
	// small preallocated files.
	if n.wal, err = wal.Open(walDir, wal.WithSegmentSize(8<<20), wal.WithLogger(hl.Named("wal"))); err != nil {
		return nil, fmt.Errorf("open raft log %s: %w", walDir, err)
	}
	snaps, err := raft.NewFileSnapshotStoreWithLogger(cfg.Dir, 2, hl.Named("snapshots"))
	if err != nil {
		n.wal.Close()
		return nil, fmt.Errorf("open raft snapshots: %w", err)
	}
	n.trans = raft.NewNetworkTransportWithLogger(cfg.Mux.RaftLayer(), 3, 10*time.Second, hl.Named("transport"))

	rc := raft.DefaultConfig()
	rc.LocalID = raft.ServerID(cfg.SiteID)
	rc.HeartbeatTimeout = t.Heartbeat
	rc.ElectionTimeout = t.Election
	rc.LeaderLeaseTimeout = t.LeaderLease
	rc.CommitTimeout = t.Commit
	rc.PreVoteDisabled = false
	rc.SnapshotThreshold = 1024
	rc.SnapshotInterval = 2 * time.Minute
	rc.Logger = hl

	existing, err := raft.HasExistingState(n.wal, n.wal, snaps)
	if err != nil {
		n.closeStores()
		return nil, fmt.Errorf("open node: %w", err)
	}
	if cfg.Bootstrap && !existing {
		boot := raft.Configuration{Servers: []raft.Server{{
			ID: rc.LocalID, Address: n.trans.LocalAddr(), Suffrage: raft.Voter,
		}}}
		if err := raft.BootstrapCluster(rc, n.wal, n.wal, snaps, n.trans, boot); err != nil {
			n.closeStores()
			return nil, fmt.Errorf("bootstrap cluster: %w", err)
		}
		n.log.Info("bootstrapped a new cluster", "site", cfg.SiteID)
	}
	if n.raft, err = raft.NewRaft(rc, n.fsm, n.wal, n.wal, snaps, n.trans); err != nil {
		n.closeStores()
		return nil, fmt.Errorf("start raft: %w", err)
	}
	return n, nil
}

func (n *Node) closeStores() {
	if n.trans != nil {
		n.trans.Close()
	}
	if n.wal != nil {
		n.wal.Close()
	}
}

// FSM is the local replica of the state (stale reads).
func (n *Node) FSM() *FSM { return n.fsm }

// Raft exposes raft for membership changes and stats.
func (n *Node) Raft() *raft.Raft { return n.raft }

// IsLeader reports whether this node leads.
func (n *Node) IsLeader() bool { return n.raft.State() == raft.Leader }

// Apply replicates c and waits until it is committed and applied, or ctx
// ends. A follower forwards it to the leader over the peer RPC. Commands
// are idempotent (max-merge), so a retry after a lost leadership is safe.
func (n *Node) Apply(ctx context.Context, c Command) error {
	b, err := EncodeCommand(c)
	if err != nil {
		return err
	}
	backoff := 50 * time.Millisecond
	for {
		err := n.applyOnce(ctx, b)
		if err == nil || !retryable(err) {
			return err
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("apply: %w (last: %v)", ctx.Err(), err)
		case <-time.After(backoff/2 + rand.N(backoff/2+1)):
		}
		backoff = min(2*backoff, 2*time.Second)
	}
}

func retryable(err error) bool {
	var re *RemoteError
	if errors.As(err, &re) {
		return strings.HasSuffix(re.Msg, retryMarker)
	}
	var ae applyError
	if errors.As(err, &ae) {
		return false // the state machine refused the command
	}
	return true // no leader, leadership lost, network: try again
}

// applyError is the state machine's answer, as opposed to a failure to reach
// consensus.
type applyError struct{ error }

func (e applyError) Unwrap() error { return e.error }

func (n *Node) applyOnce(ctx context.Context, b []byte) error {
	if n.IsLeader() {
		timeout := 10 * time.Second
		if dl, ok := ctx.Deadline(); ok {
			timeout = time.Until(dl)
		}
		f := n.raft.Apply(b, timeout)
		if err := f.Error(); err != nil {
			return fmt.Errorf("apply: %w", err)
		}
		if err, ok := f.Response().(error); ok && err != nil {
			return applyError{err}
		}
		return nil
	}
	addr, id := n.raft.LeaderWithID()
	if addr == "" {
		return ErrNoLeader
	}
	_, err := n.cfg.Mux.Call(ctx, string(addr), n.cfg.ClientTLS(string(id)), rpcApply, b)
	if err != nil {
		return fmt.Errorf("forward to leader %s: %w", id, err)
	}
	return nil
}

// HandleApply serves a forwarded command on the leader. The peer's
// certificate decides what it may publish: its own counts and site info,
// nothing else; tokens only via the pairing path.
func (n *Node) HandleApply(ctx context.Context, peer RPCPeer, body []byte) ([]byte, error) {
	if peer.SiteID == "" {
		return nil, errors.New("apply: refused: the peer presented no certificate")
	}
	var c Command
	if err := json.Unmarshal(body, &c); err != nil {
		return nil, fmt.Errorf("%w: %v", ErrBadCommand, err)
	}
	switch c.Type {
	case CmdCounts:
		if c.Counts == nil || c.Counts.Site != peer.SiteID {
			return nil, ErrNotOwner
		}
	case CmdSite:
		if c.Site == nil || c.Site.ID != peer.SiteID {
			return nil, ErrNotOwner
		}
	case CmdAddToken, CmdUseToken, CmdIndex:
		// Any paired office may create a token, relay a join or enrol the
		// cluster with the index. Releases and upload marks are the
		// leader's own: they are never accepted from a peer.
	default:
		return nil, fmt.Errorf("%w: type %d", ErrBadCommand, c.Type)
	}
	if !n.IsLeader() {
		return nil, errors.New("not the leader" + retryMarker)
	}
	err := n.applyOnce(ctx, body)
	var ae applyError
	if err != nil && !errors.As(err, &ae) {
		// Consensus failed (leadership lost, timeout): the follower may
		// retry, with the new leader.
		return nil, fmt.Errorf("%w%s", err, retryMarker)
	}
	return nil, err
}

// retryMarker ends the message of a remote error worth retrying: remote
// errors cross the wire as text.
const retryMarker = " (retry)"

// Close shuts raft down and closes its stores. Safe to call twice.
func (n *Node) Close() error {
	n.closeOnce.Do(func() {
		var errs []error
		if n.raft != nil {
			errs = append(errs, n.raft.Shutdown().Error())
		}
		if n.trans != nil {
			errs = append(errs, n.trans.Close())
		}
		if n.wal != nil {
			errs = append(errs, n.wal.Close())
		}
		n.closeErr = errors.Join(errs...)
	})
	return n.closeErr
}

// hclogAdapter routes hashicorp's logs into slog, one level quieter: raft
// is chatty at Info about things an office does not need to read.
func hclogAdapter(l *slog.Logger) hclog.Logger {
	return hclog.New(&hclog.LoggerOptions{
		Name:        "raft",
		Level:       hclog.Warn,
		Output:      slogWriter{l},
		DisableTime: true, // slog stamps the line
	})
}

type slogWriter struct{ l *slog.Logger }

func (w slogWriter) Write(p []byte) (int, error) {
	w.l.Warn(string(bytes.TrimRight(p, "\r\n")))
	return len(p), nil
}
