package cluster

import (
	"context"
	"crypto/rand"
	"encoding/json"
	"errors"
	"fmt"
	"log"
	"log/slog"
	"net"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/memberlist"
)

// ErrMemberNotAlive is returned by Membership.Ping for a site that gossip
// does not currently see alive (or has never seen).
var ErrMemberNotAlive = errors.New("member not alive")

// ErrMembershipClosed is returned by Membership methods after Close.
var ErrMembershipClosed = errors.New("membership closed")

// membershipUpdateTimeout bounds how long UpdateMeta waits for the new
// metadata to be broadcast to at least one peer.
const membershipUpdateTimeout = 5 * time.Second

// MemberMeta is what an office advertises about itself in gossip. It travels
// in memberlist node metadata (at most memberlist.MetaMaxSize bytes) as JSON
// with one-letter keys, so fields can be added without breaking older boxes.
type MemberMeta struct {
	SiteID   string `json:"s"`
	Region   string `json:"r,omitempty"`
	RaftAddr string `json:"a,omitempty"`
}

func (mm MemberMeta) encode() ([]byte, error) {
	b, err := json.Marshal(mm)
	if err != nil {
		return nil, fmt.Errorf("encode gossip meta: %w", err)
	}
	if len(b) > memberlist.MetaMaxSize {
		return nil, fmt.Errorf("encode gossip meta: %d bytes, limit %d", len(b), memberlist.MetaMaxSize)
	}
	return b, nil
}

func decodeMemberMeta(b []byte) (MemberMeta, error) {
	var mm MemberMeta
	if err := json.Unmarshal(b, &mm); err != nil {
		return MemberMeta{}, fmt.Errorf("decode gossip meta: %w", err)
	}
	return mm, nil
}

// Member is one office as this node's gossip sees it.
type Member struct {
	MemberMeta
	GossipAddr string    // host:port
	Alive      bool      // false once it left or was declared dead
	Since      time.Time // when this node last saw Alive change (or first saw the member)
}

// MembershipConfig configures OpenMembership. Zero values are noted per
// field.
type MembershipConfig struct {
	// Meta is advertised to peers; Meta.SiteID is required and becomes the
	// memberlist node name, so it must be unique in the cluster.
	Meta MemberMeta
	// BindAddr is the address to listen on; "" means all interfaces.
	BindAddr string
	// BindPort is the UDP and TCP gossip port; 0 picks a free port (tests).
	BindPort int
	// AdvertiseAddr (an IP) and AdvertisePort are what peers dial when that
	// differs from the bound address (NAT). "" means the bound address, or
	// a private IP of this box when bound to all interfaces; AdvertisePort
	// is used only with AdvertiseAddr, and 0 means BindPort.
	AdvertiseAddr string
	AdvertisePort int
	// Label is the cluster label, one per customer: gossip carrying another
	// label is dropped, so two customers' offices on one network never
	// merge. "" means no label.
	Label string
	// Keys is the gossip encryption keyring (16, 24 or 32-byte AES keys);
	// the first is primary and encrypts, all decrypt. Required: gossip is
	// never sent in the clear. To rotate, first add the new key everywhere
	// as a secondary, then make it primary, then drop the old one.
	Keys [][]byte
	// Now is the clock for Member.Since; nil means time.Now.
	Now func() time.Time
	// Logger receives memberlist's logs at Debug; nil discards.
	Logger *slog.Logger
	// OnChange, if set, is called when a member joins, leaves, dies, or
	// updates its metadata. Calls are coalesced and made one at a time from
	// a goroutine owned by the Membership, never under a lock, so OnChange
	// may call any Membership method except Close. It should re-read
	// Members rather than expect one call per event.
	OnChange func()
	// Tune, if set, may adjust the memberlist configuration last (tests use
	// it for fast probe intervals).
	Tune func(*memberlist.Config)
}

// Validate reports whether c can start a Membership.
func (c MembershipConfig) Validate() error {
	var errs []error
	if c.Meta.SiteID == "" {
		errs = append(errs, errors.New("site id is required"))
	}
	if _, err := c.Meta.encode(); err != nil {
		errs = append(errs, err)
	}
	if len(c.Keys) == 0 {
		errs = append(errs, errors.New("a gossip encryption key is required"))
	}
	for i, k := range c.Keys {
		// The key itself is secret: never put it in an error.
		if err := memberlist.ValidateKey(k); err != nil {
			errs = append(errs, fmt.Errorf("gossip key %d: %d bytes, want 16, 24 or 32", i, len(k)))
		}
	}
	if len(c.Label) > memberlist.LabelMaxSize {
		errs = append(errs, fmt.Errorf("label: %d bytes, limit %d", len(c.Label), memberlist.LabelMaxSize))
	}
	if c.BindPort < 0 || c.BindPort > 65535 || c.AdvertisePort < 0 || c.AdvertisePort > 65535 {
		errs = append(errs, errors.New("gossip port out of range"))
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("invalid membership config: %w", err)
	}
	return nil
}

// NewGossipKey returns a random 32-byte (AES-256) gossip key.
func NewGossipKey() ([]byte, error) {
	k := make([]byte, 32)
	if _, err := rand.Read(k); err != nil {
		return nil, fmt.Errorf("generate gossip key: %w", err)
	}
	return k, nil
}

// Membership is this office's view of its customer's offices, kept by
// gossip (hashicorp/memberlist, WAN settings, encrypted and labelled).
//
// Unlike memberlist, which forgets dead nodes after a minute, Membership
// remembers every member it has seen, dead ones included, so that the raft
// leader can tell how long an office has been gone.
type Membership struct {
	cfg  MembershipConfig
	log  *slog.Logger
	now  func() time.Time
	list *memberlist.Memberlist
	// leaveTimeout bounds how long Close waits for the leave message to go
	// out: four gossip rounds, 2s on WAN settings. Peers notice a silent
	// departure by probing anyway, and the last member to leave often
	// waits in vain for peers that already left.
	leaveTimeout time.Duration

	mu      sync.Mutex
	meta    []byte            // encoded local metadata served to memberlist
	members map[string]Member // by site id

	changed   chan struct{} // capacity 1: coalesces OnChange
	done      chan struct{} // closed by Close: stops the notifier
	wg        sync.WaitGroup
	closed    atomic.Bool
	closeOnce sync.Once
	closeErr  error
}

// OpenMembership starts gossip: it binds the gossip port and begins
// answering peers. It does not contact anyone until Join.
func OpenMembership(cfg MembershipConfig) (*Membership, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	meta, _ := cfg.Meta.encode() // checked by Validate
	logger := cfg.Logger
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	m := &Membership{
		cfg:     cfg,
		log:     logger.With("component", "gossip"),
		now:     cfg.Now,
		meta:    meta,
		members: make(map[string]Member),
		changed: make(chan struct{}, 1),
		done:    make(chan struct{}),
	}
	if m.now == nil {
		m.now = time.Now
	}

	// Copy the keys: the keyring keeps the slices it is given.
	keys := make([][]byte, len(cfg.Keys))
	for i, k := range cfg.Keys {
		keys[i] = slices.Clone(k)
	}
	keyring, err := memberlist.NewKeyring(keys, keys[0])
	if err != nil {
		return nil, fmt.Errorf("open membership: gossip keyring: %w", err)
	}

	mc := memberlist.DefaultWANConfig()
	mc.Name = cfg.Meta.SiteID
	if cfg.BindAddr != "" {
		mc.BindAddr = cfg.BindAddr
	}
	mc.BindPort = cfg.BindPort
	mc.AdvertiseAddr = cfg.AdvertiseAddr
	mc.AdvertisePort = cfg.AdvertisePort
	if cfg.AdvertiseAddr != "" && cfg.AdvertisePort == 0 {
		mc.AdvertisePort = cfg.BindPort
	}
	mc.Label = cfg.Label
	mc.Keyring = keyring
	mc.GossipVerifyIncoming = true
	mc.GossipVerifyOutgoing = true
	mc.Delegate = membershipDelegate{m}
	mc.Events = membershipEvents{m}
	mc.Logger = log.New(memberlistLogWriter{m.log}, "", 0)
	if cfg.Tune != nil {
		cfg.Tune(mc)
	}
	m.leaveTimeout = 4 * mc.GossipInterval
	if m.leaveTimeout <= 0 {
		m.leaveTimeout = 2 * time.Second
	}

	list, err := memberlist.Create(mc)
	if err != nil {
		return nil, fmt.Errorf("open membership on %s: %w",
			net.JoinHostPort(mc.BindAddr, strconv.Itoa(cfg.BindPort)), err)
	}
	m.list = list
	// Start the notifier only now, so OnChange can use m.list; memberlist
	// reported this node joining itself during Create, and that change
	// waits in m.changed.
	m.wg.Add(1)
	go m.notify()
	m.log.Debug("gossip started", "site", cfg.Meta.SiteID, "addr", m.Addr())
	return m, nil
}

// notify calls OnChange once per burst of changes.
func (m *Membership) notify() {
	defer m.wg.Done()
	for {
		select {
		case <-m.done:
			return
		case <-m.changed:
			if m.cfg.OnChange != nil {
				m.cfg.OnChange()
			}
		}
	}
}

// observe records a memberlist event. memberlist calls it with its own node
// lock held, so it must not call back into memberlist.
func (m *Membership) observe(n *memberlist.Node, alive bool) {
	meta, err := decodeMemberMeta(n.Meta)
	if err != nil {
		m.log.Warn("ignoring unreadable gossip metadata", "node", n.Name, "err", err)
	}
	if meta.SiteID != n.Name {
		if meta.SiteID != "" {
			m.log.Warn("gossip metadata names another site", "node", n.Name, "meta_site", meta.SiteID)
		}
		meta.SiteID = n.Name // the memberlist name is unique; the metadata is advisory
	}
	now := m.now()

	m.mu.Lock()
	old, known := m.members[n.Name]
	if !alive && err != nil && known {
		meta = old.MemberMeta // a dead node's last words are not worth losing what we knew
	}
	cur := Member{MemberMeta: meta, GossipAddr: n.Address(), Alive: alive, Since: old.Since}
	if !known || old.Alive != alive {
		cur.Since = now
	}
	m.members[n.Name] = cur
	m.mu.Unlock()

	if known && old.MemberMeta == cur.MemberMeta && old.GossipAddr == cur.GossipAddr && old.Alive == cur.Alive {
		return
	}
	m.log.Debug("gossip member changed", "site", n.Name, "alive", alive, "region", meta.Region, "raft_addr", meta.RaftAddr)
	select {
	case m.changed <- struct{}{}:
	default: // a notification is already pending; OnChange reads the latest state
	}
}

// Join contacts the given gossip addresses (host:port) and merges their view
// of the cluster. It returns how many it reached; the error is non-nil only
// when none could be reached.
func (m *Membership) Join(addrs []string) (int, error) {
	if m.closed.Load() {
		return 0, ErrMembershipClosed
	}
	n, err := m.list.Join(addrs)
	if err != nil {
		return n, fmt.Errorf("join gossip via %s: %w", strings.Join(addrs, ", "), err)
	}
	return n, nil
}

// Members returns every member this node has seen, itself included and dead
// ones too, sorted by SiteID.
func (m *Membership) Members() []Member {
	m.mu.Lock()
	out := make([]Member, 0, len(m.members))
	for _, mem := range m.members {
		out = append(out, mem)
	}
	m.mu.Unlock()
	slices.SortFunc(out, func(a, b Member) int { return strings.Compare(a.SiteID, b.SiteID) })
	return out
}

// Addr is the advertised gossip address, host:port, for peers to Join.
func (m *Membership) Addr() string {
	return m.list.LocalNode().Address()
}

// Ping measures the round trip to siteID with a memberlist UDP ping
// (encrypted, like all gossip); it waits at most the probe timeout (3s on
// WAN settings). The result is always positive.
func (m *Membership) Ping(siteID string) (time.Duration, error) {
	if m.closed.Load() {
		return 0, ErrMembershipClosed
	}
	var addr *net.UDPAddr
	for _, n := range m.list.Members() { // alive (or suspect) nodes only
		if n.Name == siteID {
			addr = &net.UDPAddr{IP: n.Addr, Port: int(n.Port)}
			break
		}
	}
	if addr == nil {
		return 0, fmt.Errorf("ping %s: %w", siteID, ErrMemberNotAlive)
	}
	// Time the whole call: memberlist stamps the send after it returns from
	// the socket write, so on a fast link its own figure can come out
	// negative.
	start := time.Now()
	if _, err := m.list.Ping(siteID, addr); err != nil {
		return 0, fmt.Errorf("ping %s at %s: %w", siteID, addr, err)
	}
	return max(time.Since(start), time.Nanosecond), nil // 0 would mean "unknown" to Reconcile
}

// UpdateMeta replaces the advertised metadata (for example when DHCP moved
// the raft address) and broadcasts it. An empty SiteID keeps the current
// one; a different one is refused, since it is the node's gossip name. On a
// broadcast timeout the new metadata is still in effect and spreads with
// the next gossip rounds.
func (m *Membership) UpdateMeta(meta MemberMeta) error {
	if m.closed.Load() {
		return ErrMembershipClosed
	}
	if meta.SiteID == "" {
		meta.SiteID = m.cfg.Meta.SiteID
	}
	if meta.SiteID != m.cfg.Meta.SiteID {
		return fmt.Errorf("update gossip meta: site id %q cannot change to %q", m.cfg.Meta.SiteID, meta.SiteID)
	}
	b, err := meta.encode()
	if err != nil {
		return fmt.Errorf("update gossip meta: %w", err)
	}
	m.mu.Lock()
	m.meta = b
	m.mu.Unlock()
	if err := m.list.UpdateNode(membershipUpdateTimeout); err != nil {
		return fmt.Errorf("update gossip meta: %w", err)
	}
	return nil
}

// Close leaves the cluster (telling peers, for at most four gossip rounds:
// 2s on WAN settings), stops gossip and waits for the OnChange goroutine. It is safe to
// call twice; it must not be called from OnChange.
func (m *Membership) Close() error {
	m.closeOnce.Do(func() {
		m.closed.Store(true)
		// Stop the notifier first: an OnChange in flight finishes against
		// a working memberlist, and none starts after.
		close(m.done)
		m.wg.Wait()
		if err := m.list.Leave(m.leaveTimeout); err != nil {
			// Peers will find out by probing; nothing to undo.
			m.log.Debug("gossip leave", "err", err)
		}
		if err := m.list.Shutdown(); err != nil {
			m.closeErr = fmt.Errorf("shut down gossip: %w", err)
		}
	})
	return m.closeErr
}

// membershipDelegate serves this node's metadata to memberlist; the rest of
// memberlist.Delegate (user messages and state) is unused.
type membershipDelegate struct{ m *Membership }

func (d membershipDelegate) NodeMeta(limit int) []byte {
	d.m.mu.Lock()
	defer d.m.mu.Unlock()
	if len(d.m.meta) > limit { // encode enforces MetaMaxSize; never hit
		return nil
	}
	return slices.Clone(d.m.meta)
}

func (membershipDelegate) NotifyMsg([]byte)                           {}
func (membershipDelegate) GetBroadcasts(overhead, limit int) [][]byte { return nil }
func (membershipDelegate) LocalState(join bool) []byte                { return nil }
func (membershipDelegate) MergeRemoteState(buf []byte, join bool)     {}

// membershipEvents turns memberlist's node events into Member updates.
type membershipEvents struct{ m *Membership }

func (e membershipEvents) NotifyJoin(n *memberlist.Node)   { e.m.observe(n, true) }
func (e membershipEvents) NotifyLeave(n *memberlist.Node)  { e.m.observe(n, false) }
func (e membershipEvents) NotifyUpdate(n *memberlist.Node) { e.m.observe(n, true) }

// memberlistLogWriter routes memberlist's log lines, "[LEVEL] memberlist:
// message", into slog at Debug: over a flaky WAN its warnings and errors
// (failed probes, refused packets) are routine, and the events that matter
// reach the logs through OnChange.
type memberlistLogWriter struct{ log *slog.Logger }

func (w memberlistLogWriter) Write(p []byte) (int, error) {
	if !w.log.Enabled(context.Background(), slog.LevelDebug) {
		return len(p), nil
	}
	msg := strings.TrimSpace(string(p))
	level := ""
	if strings.HasPrefix(msg, "[") {
		if i := strings.IndexByte(msg, ']'); i > 0 {
			level, msg = msg[1:i], strings.TrimSpace(msg[i+1:])
		}
	}
	msg = strings.TrimPrefix(msg, "memberlist: ")
	w.log.Debug(msg, "memberlist_level", level)
	return len(p), nil
}
