package cluster

import (
	"cmp"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"math/rand/v2"
	"net"
	"path/filepath"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/memberlist"
	"github.com/hashicorp/raft"
)

// Config wires a Cluster. Zero values are documented per field.
type Config struct {
	Dir      string // the cluster directory: pairing, PKI, raft/
	Name     string // this office's name, region and time zone, replicated
	Region   string
	TimeZone string
	// Listen is the peer port (raft and RPC, mutual TLS), e.g. ":7400";
	// Advertise is what peers dial (default: the listener's address).
	Listen, Advertise string
	// GossipListen is the memberlist address, e.g. ":7401"; GossipAdvertise
	// what peers reach (default: the bound address).
	GossipListen, GossipAdvertise string
	Timing                        Timing          // zero fields: WAN defaults
	Reconcile                     ReconcileConfig // zero fields: defaults
	// ReconcileInterval is how often the leader reconciles membership;
	// default 5s.
	ReconcileInterval time.Duration
	TokenTTL          time.Duration // default 24h
	Now               func() time.Time
	Logger            *slog.Logger
	// For tests: fault injection and faster gossip.
	Faults     *Faults
	TuneGossip func(*memberlist.Config)
}

// Cluster is this office's membership of its customer's cluster.
type Cluster struct {
	cfg     Config
	log     *slog.Logger
	pairing *Pairing
	ca      *CA
	node    *NodeCert

	mux     *Mux
	raft    *Node
	members *Membership

	kick   chan struct{}
	cancel context.CancelFunc
	wg     sync.WaitGroup
	once   sync.Once
	err    error

	opened  time.Time // when this box started watching its peers
	mu      sync.Mutex
	rtts    map[string]time.Duration
	site    siteNames   // guarded by mu: what this office publishes about itself
	joining atomic.Bool // a gossip join is under way
}

// Open starts the peer listener, raft and gossip. The box must be paired.
func Open(ctx context.Context, cfg Config) (_ *Cluster, err error) {
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.ReconcileInterval == 0 {
		cfg.ReconcileInterval = 5 * time.Second
	}
	if cfg.TokenTTL == 0 {
		cfg.TokenTTL = 24 * time.Hour
	}
	rc := &cfg.Reconcile
	if rc.MaxVoters == 0 {
		rc.MaxVoters = 5
	}
	if rc.Stabilization == 0 {
		rc.Stabilization = 30 * time.Second
	}
	if rc.DeadTimeout == 0 {
		rc.DeadTimeout = 72 * time.Hour
	}
	if err := rc.Validate(); err != nil {
		return nil, fmt.Errorf("open cluster: %w", err)
	}
	c := &Cluster{cfg: cfg, log: cfg.Logger.With("component", "cluster"), kick: make(chan struct{}, 1), rtts: map[string]time.Duration{}, opened: cfg.Now(),
		site: siteNames{cfg.Name, cfg.Region, cfg.TimeZone}}
	if c.pairing, err = LoadPairing(cfg.Dir); err != nil {
		return nil, err
	}
	if c.ca, err = LoadCA(cfg.Dir); err != nil {
		return nil, fmt.Errorf("open cluster: %w", err)
	}
	if c.node, err = LoadNodeCert(cfg.Dir); err != nil {
		return nil, fmt.Errorf("open cluster: %w", err)
	}
	if c.node.SiteID != c.pairing.SiteID {
		return nil, fmt.Errorf("open cluster: certificate is for site %s, pairing for %s", c.node.SiteID, c.pairing.SiteID)
	}
	ctx, c.cancel = context.WithCancel(ctx)
	defer func() {
		if err != nil {
			c.Close()
		}
	}()

	ln, err := net.Listen("tcp", cfg.Listen)
	if err != nil {
		return nil, fmt.Errorf("listen for peers on %s: %w", cfg.Listen, err)
	}
	adv := advertisable(ln.Addr())
	if cfg.Advertise != "" {
		if adv, err = net.ResolveTCPAddr("tcp", cfg.Advertise); err != nil {
			ln.Close()
			return nil, fmt.Errorf("advertise %s: %w", cfg.Advertise, err)
		}
	}
	c.mux = NewMux(MuxConfig{
		Listener:  ln,
		ServerTLS: ServerTLS(c.ca.Cert, c.node),
		Advertise: adv,
		DialTLS:   c.clientTLS,
		Logger:    c.log,
		Faults:    cfg.Faults,
	})
	c.mux.HandleRPC(c.handleRPC)
	c.wg.Add(1)
	go func() {
		defer c.wg.Done()
		if err := c.mux.Serve(); err != nil {
			c.log.Error("peer listener stopped", "err", err)
		}
	}()

	if c.raft, err = OpenNode(NodeConfig{
		SiteID:    c.pairing.SiteID,
		Dir:       filepath.Join(cfg.Dir, "raft"),
		Mux:       c.mux,
		Bootstrap: c.pairing.Bootstrap,
		ClientTLS: c.clientTLS,
		Timing:    cfg.Timing,
		Logger:    c.log,
	}); err != nil {
		return nil, err
	}

	host, port, err := splitHostPortDefault(cfg.GossipListen, "0.0.0.0", 0)
	if err != nil {
		return nil, fmt.Errorf("gossip listen %q: %w", cfg.GossipListen, err)
	}
	gcfg := MembershipConfig{
		Meta:     MemberMeta{SiteID: c.pairing.SiteID, Region: cfg.Region, RaftAddr: adv.String()},
		BindAddr: host, BindPort: port,
		Label:    c.pairing.Customer,
		Keys:     c.pairing.GossipKeys,
		Now:      cfg.Now,
		Logger:   c.log,
		OnChange: c.poke,
		Tune:     cfg.TuneGossip,
	}
	if cfg.GossipAdvertise != "" {
		if gcfg.AdvertiseAddr, gcfg.AdvertisePort, err = splitHostPortDefault(cfg.GossipAdvertise, "", 0); err != nil {
			return nil, fmt.Errorf("gossip advertise %q: %w", cfg.GossipAdvertise, err)
		}
	}
	if c.members, err = OpenMembership(gcfg); err != nil {
		return nil, err
	}
	c.wg.Add(1)
	go func() {
		defer c.wg.Done()
		c.loop(ctx)
	}()
	c.log.Info("cluster member started", "site", c.pairing.SiteID, "peer_addr", adv.String(), "gossip_addr", c.members.Addr())
	return c, nil
}

// advertisable turns a wildcard listen address (":7400") into one other
// offices can dial: the first non-loopback IPv4 address of an interface
// that is up, else loopback.
func advertisable(a net.Addr) net.Addr {
	ta, ok := a.(*net.TCPAddr)
	if !ok || !ta.IP.IsUnspecified() {
		return a
	}
	ip := net.IPv4(127, 0, 0, 1)
	if ifs, err := net.Interfaces(); err == nil {
	search:
		for _, ifc := range ifs {
			if ifc.Flags&net.FlagUp == 0 || ifc.Flags&net.FlagLoopback != 0 {
				continue
			}
			addrs, _ := ifc.Addrs()
			for _, ad := range addrs {
				if n, ok := ad.(*net.IPNet); ok && n.IP.To4() != nil && !n.IP.IsLinkLocalUnicast() {
					ip = n.IP.To4()
					break search
				}
			}
		}
	}
	return &net.TCPAddr{IP: ip, Port: ta.Port}
}

func splitHostPortDefault(hp, defHost string, defPort int) (string, int, error) {
	if hp == "" {
		return defHost, defPort, nil
	}
	h, p, err := net.SplitHostPort(hp)
	if err != nil {
		return "", 0, err
	}
	if h == "" {
		h = defHost
	}
	n, err := strconv.Atoi(p)
	if err != nil {
		return "", 0, fmt.Errorf("port %q: %w", p, err)
	}
	return h, n, nil
}

func (c *Cluster) clientTLS(site string) *tls.Config { return ClientTLS(c.ca.Cert, c.node, site) }

func (c *Cluster) poke() {
	select {
	case c.kick <- struct{}{}:
	default:
	}
}

// SiteID is this office's id.
func (c *Cluster) SiteID() string { return c.pairing.SiteID }

// PeerAddr is the advertised raft/RPC address.
func (c *Cluster) PeerAddr() string { return c.mux.RaftLayer().Addr().String() }

// GossipAddr is the advertised gossip address.
func (c *Cluster) GossipAddr() string { return c.members.Addr() }

// Node is the raft member, for tests.
func (c *Cluster) Node() *Node { return c.raft }

// loop keeps gossip joined, publishes this office's info, and, on the
// leader, reconciles raft membership. It is idempotent: every round looks
// at the world afresh.
func (c *Cluster) loop(ctx context.Context) {
	t := time.NewTimer(0)
	defer t.Stop()
	var infoVersion uint64
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		case <-c.kick:
		}
		if peers := c.lostPeers(); len(peers) > 0 && c.joining.CompareAndSwap(false, true) {
			// A dead address can hold a join for a TCP timeout: never
			// in the way of reconciliation.
			c.wg.Add(1)
			go func() {
				defer c.wg.Done()
				defer c.joining.Store(false)
				if _, err := c.members.Join(peers); err != nil {
					c.log.Debug("gossip join", "err", err)
				}
			}()
		}
		if infoVersion == 0 || !c.siteInfoCurrent() {
			v := uint64(c.cfg.Now().UnixNano())
			names := c.siteNames()
			info := SiteInfo{ID: c.SiteID(), Name: names.name, Region: names.region, TimeZone: names.tz, GossipAddr: c.members.Addr(), Version: v}
			actx, cancel := context.WithTimeout(ctx, 10*time.Second)
			if err := c.raft.Apply(actx, Command{Type: CmdSite, Site: &info}); err == nil {
				infoVersion = v
			}
			cancel()
		}
		if c.raft.IsLeader() {
			c.reconcile()
		}
		d := c.cfg.ReconcileInterval
		t.Reset(d/2 + rand.N(d/2+1))
	}
}

func (c *Cluster) siteInfoCurrent() bool {
	var ok bool
	names := c.siteNames()
	c.raft.FSM().Read(func(s *State) {
		info, found := s.sites[c.SiteID()]
		ok = found && info.Name == names.name && info.Region == names.region && info.TimeZone == names.tz &&
			info.GossipAddr == c.members.Addr()
	})
	return ok
}

// siteNames is what an office says about itself.
type siteNames struct{ name, region, tz string }

func (c *Cluster) siteNames() siteNames {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.site
}

// SetSite changes this office's name, region and time zone; the change is
// replicated at once. (The gossip metadata keeps the region it started
// with until the next start.)
func (c *Cluster) SetSite(name, region, tz string) {
	c.mu.Lock()
	c.site = siteNames{name, region, tz}
	c.mu.Unlock()
	c.poke()
}

// lostPeers returns gossip addresses worth joining: those of offices the
// replicated state knows that gossip does not see alive, plus the peers of
// the pairing while this box sees nobody.
func (c *Cluster) lostPeers() []string {
	alive := map[string]bool{}
	for _, m := range c.members.Members() {
		alive[m.SiteID] = m.Alive
	}
	var out []string
	if len(alive) <= 1 {
		out = append(out, c.pairing.Peers...)
	}
	c.raft.FSM().Read(func(s *State) {
		for id, info := range s.sites {
			if id != c.SiteID() && !alive[id] && info.GossipAddr != "" && !slices.Contains(out, info.GossipAddr) {
				out = append(out, info.GossipAddr)
			}
		}
	})
	return out
}

// reconcile applies the membership rules (see Reconcile) on the leader.
func (c *Cluster) reconcile() {
	f := c.raft.Raft().GetConfiguration()
	if err := f.Error(); err != nil {
		c.log.Warn("read raft configuration", "err", err)
		return
	}
	now := c.cfg.Now()
	byID := map[string]ServerInfo{}
	for _, s := range f.Configuration().Servers {
		byID[string(s.ID)] = ServerInfo{ID: string(s.ID), Addr: string(s.Address), InRaft: true, Voter: s.Suffrage == raft.Voter}
	}
	var moved []ServerInfo // in raft under an address they no longer have
	for _, m := range c.members.Members() {
		si, inRaft := byID[m.SiteID]
		if !inRaft {
			si = ServerInfo{ID: m.SiteID, Addr: m.RaftAddr}
		}
		si.Region, si.Alive, si.Since = m.Region, m.Alive, m.Since
		if inRaft && m.Alive && m.RaftAddr != "" && m.RaftAddr != si.Addr {
			si.Addr = m.RaftAddr // a new DHCP lease: raft must dial the new address
			moved = append(moved, si)
		}
		byID[m.SiteID] = si
	}
	servers := slices.SortedFunc(maps.Values(byID), func(a, b ServerInfo) int { return cmp.Compare(a.ID, b.ID) })
	for _, m := range moved {
		id, addr := raft.ServerID(m.ID), raft.ServerAddress(m.Addr)
		var err error
		if m.Voter {
			err = c.raft.Raft().AddVoter(id, addr, 0, 10*time.Second).Error()
		} else {
			err = c.raft.Raft().AddNonvoter(id, addr, 0, 10*time.Second).Error()
		}
		if err != nil {
			c.log.Warn("update an office's address", "site", m.ID, "addr", m.Addr, "err", err)
			return
		}
		c.log.Info("an office moved", "site", m.ID, "addr", m.Addr)
	}
	c.mu.Lock()
	for i := range servers {
		servers[i].RTT = c.rtts[servers[i].ID]
	}
	c.mu.Unlock()
	self := c.SiteID()
	for i := range servers {
		switch {
		case servers[i].ID == self:
			servers[i].Alive = true
		case servers[i].Since.IsZero():
			// In raft but never seen by gossip since this box started:
			// dead since then, as far as anyone here can tell.
			servers[i].Since = c.opened
		}
	}
	for _, a := range Reconcile(c.cfg.Reconcile, now, self, servers) {
		var err error
		id, addr := raft.ServerID(a.ID), raft.ServerAddress(a.Addr)
		switch a.Kind {
		case AddNonvoter:
			err = c.raft.Raft().AddNonvoter(id, addr, 0, 10*time.Second).Error()
		case Promote:
			err = c.raft.Raft().AddVoter(id, addr, 0, 10*time.Second).Error()
		case Demote:
			err = c.raft.Raft().DemoteVoter(id, 0, 10*time.Second).Error()
		case Remove:
			err = c.raft.Raft().RemoveServer(id, 0, 10*time.Second).Error()
		}
		if err != nil {
			c.log.Warn("membership change failed", "action", a.Kind.String(), "site", a.ID, "err", err)
			return
		}
		c.log.Info("membership change", "action", a.Kind.String(), "site", a.ID, "reason", a.Reason)
	}
	// Measure round trips for the next round's voter choice, off the
	// critical path.
	for _, s := range servers {
		if s.ID == self || !s.Alive {
			continue
		}
		if rtt, err := c.members.Ping(s.ID); err == nil {
			c.mu.Lock()
			c.rtts[s.ID] = rtt
			c.mu.Unlock()
		}
	}
}

// handleRPC routes the peer RPCs.
func (c *Cluster) handleRPC(ctx context.Context, peer RPCPeer, method string, body []byte) ([]byte, error) {
	switch method {
	case rpcApply:
		return c.raft.HandleApply(ctx, peer, body)
	case rpcJoin:
		return c.handleJoin(ctx, body)
	}
	return nil, fmt.Errorf("unknown method %q", method)
}

// handleJoin admits a new office that proves a join token. Any member can
// serve it: spending the token goes through raft (so a token works once,
// cluster-wide), then this member's copy of the CA signs the new office's
// key.
func (c *Cluster) handleJoin(ctx context.Context, body []byte) ([]byte, error) {
	var req joinRequest
	if err := json.Unmarshal(body, &req); err != nil {
		return nil, fmt.Errorf("join: bad request: %w", err)
	}
	if !ValidSiteID(req.SiteID) {
		return nil, errors.New("join: bad site id")
	}
	pub, err := x509.ParsePKIXPublicKey(req.PublicKey)
	if err != nil {
		return nil, fmt.Errorf("join: bad public key: %w", err)
	}
	tok := Token{Secret: req.Secret}
	use := &UseToken{ID: req.TokenID, SecretHash: tok.SecretHash(), Site: req.SiteID, At: c.cfg.Now().Unix()}
	actx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	if err := c.raft.Apply(actx, Command{Type: CmdUseToken, UseToken: use}); err != nil {
		c.log.Warn("join refused", "site", req.SiteID, "err", err)
		return nil, fmt.Errorf("join refused: %w", err)
	}
	certPEM, err := c.ca.Issue(req.SiteID, pub, c.cfg.Now())
	if err != nil {
		return nil, fmt.Errorf("join: %w", err)
	}
	keyPEM, err := encodeKeyPEM(c.ca.Key)
	if err != nil {
		return nil, fmt.Errorf("join: %w", err)
	}
	peers := []string{c.members.Addr()}
	for _, m := range c.members.Members() {
		if m.Alive && m.GossipAddr != "" && !slices.Contains(peers, m.GossipAddr) {
			peers = append(peers, m.GossipAddr)
		}
	}
	c.log.Info("a new office joined", "site", req.SiteID, "token", req.TokenID)
	return json.Marshal(joinResponse{
		CertPEM: certPEM, CACertPEM: c.ca.CertPEM, CAKeyPEM: keyPEM,
		Customer: c.pairing.Customer, GossipKeys: c.pairing.GossipKeys, Peers: peers,
	})
}

// CreateToken creates a one-time join token valid for the configured TTL.
func (c *Cluster) CreateToken(ctx context.Context) (Token, time.Time, error) {
	tok, err := NewToken(c.ca.Hash(), []string{c.PeerAddr()})
	if err != nil {
		return Token{}, time.Time{}, err
	}
	exp := c.cfg.Now().Add(c.cfg.TokenTTL)
	rec := &TokenRecord{ID: tok.ID, SecretHash: tok.SecretHash(), Expires: exp.Unix()}
	if err := c.raft.Apply(ctx, Command{Type: CmdAddToken, Token: rec}); err != nil {
		return Token{}, time.Time{}, fmt.Errorf("create token: %w", err)
	}
	return tok, exp, nil
}

// Publish replicates this office's cumulative counts.
func (c *Cluster) Publish(ctx context.Context, version uint64, days []DayCounts) error {
	u := &CountsUpdate{Site: c.SiteID(), Version: version, At: c.cfg.Now().Unix(), Days: days}
	return c.raft.Apply(ctx, Command{Type: CmdCounts, Counts: u})
}

// Sites returns every office's counts from the local replica.
func (c *Cluster) Sites() []SiteCounts {
	var out []SiteCounts
	c.raft.FSM().Read(func(s *State) { out = s.Sites() })
	return out
}

// IsLeader reports whether this office leads the cluster now.
func (c *Cluster) IsLeader() bool { return c.raft.IsLeader() }

// Read runs fn over the local replica of the state (a stale read), locked
// for reading. fn must not keep the state.
func (c *Cluster) Read(fn func(*State)) { c.raft.FSM().Read(fn) }

// Apply replicates a command, forwarding it to the leader when this office
// does not lead (see Node.Apply).
func (c *Cluster) Apply(ctx context.Context, cmd Command) error { return c.raft.Apply(ctx, cmd) }

// Enrol records the cluster's credential for the central index, so that
// whichever office leads can upload.
func (c *Cluster) Enrol(ctx context.Context, e IndexEnrolment) error {
	e.At = c.cfg.Now().Unix()
	return c.raft.Apply(ctx, Command{Type: CmdIndex, Index: &e})
}

// Status is what the page and /metrics show about the cluster.
type Status struct {
	SiteID       string
	Role         string // Leader, Follower, Candidate
	LeaderID     string
	LeaderKnown  bool
	LastContact  time.Time // with the leader; zero on the leader
	Opened       time.Time // when this office started watching its peers
	AppliedIndex uint64
	Voters       int
	Servers      []ServerStatus
	Members      []Member
}

// ServerStatus is one raft server.
type ServerStatus struct {
	ID    string
	Voter bool
}

// Status reads the cluster's state.
func (c *Cluster) Status() Status {
	r := c.raft.Raft()
	addr, id := r.LeaderWithID()
	st := Status{
		SiteID:       c.SiteID(),
		Role:         r.State().String(),
		LeaderID:     string(id),
		LeaderKnown:  addr != "",
		AppliedIndex: r.AppliedIndex(),
		Members:      c.members.Members(),
		Opened:       c.opened,
	}
	if r.State() != raft.Leader {
		st.LastContact = r.LastContact()
	}
	if f := r.GetConfiguration(); f.Error() == nil {
		for _, s := range f.Configuration().Servers {
			st.Servers = append(st.Servers, ServerStatus{ID: string(s.ID), Voter: s.Suffrage == raft.Voter})
			if s.Suffrage == raft.Voter {
				st.Voters++
			}
		}
	}
	return st
}

// PeerAddrs returns every address this office may need to reach its peers
// at, as host:port: the raft and RPC addresses of the raft configuration,
// the gossip addresses gossip and the replicated state know, and the
// pairing's first peers. This office's own addresses are left out. The
// egress guard allows exactly these.
func (c *Cluster) PeerAddrs() []string {
	self := c.SiteID()
	seen := map[string]bool{}
	add := func(a string) {
		if a != "" && a != c.PeerAddr() && a != c.GossipAddr() {
			seen[a] = true
		}
	}
	if f := c.raft.Raft().GetConfiguration(); f.Error() == nil {
		for _, s := range f.Configuration().Servers {
			if string(s.ID) != self {
				add(string(s.Address))
			}
		}
	}
	for _, m := range c.members.Members() {
		if m.SiteID != self {
			add(m.GossipAddr)
		}
	}
	c.raft.FSM().Read(func(s *State) {
		for id, info := range s.sites {
			if id != self {
				add(info.GossipAddr)
			}
		}
	})
	for _, p := range c.pairing.Peers {
		add(p)
	}
	return slices.Sorted(maps.Keys(seen))
}

// Close leaves gossip, stops raft and the peer listener, and waits for the
// loops. Safe to call twice.
func (c *Cluster) Close() error {
	c.once.Do(func() {
		if c.cancel != nil {
			c.cancel()
		}
		var errs []error
		if c.members != nil {
			errs = append(errs, c.members.Close())
		}
		if c.raft != nil {
			errs = append(errs, c.raft.Close())
		}
		if c.mux != nil {
			errs = append(errs, c.mux.Close())
		}
		c.wg.Wait()
		c.err = errors.Join(errs...)
	})
	return c.err
}
