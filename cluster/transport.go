package cluster

// The peer transport: raft and a small RPC protocol share one TCP port per
// node, under mutual TLS.
//
// Wire format, after the TLS handshake, written by the dialler:
//
//	protocol   1 byte: 0x01 raft, 0x02 RPC
//	advertise  1 byte length n, then n bytes: the dialler's advertised address
//
// The advertised address is for fault injection and logs only; peers are
// authenticated by their certificate, never by address. A raft connection
// then carries hashicorp/raft's NetworkTransport stream for as long as raft
// keeps it. An RPC connection carries exactly one request and one response
// (all integers big-endian), then both sides close it:
//
//	request   method length (1 byte, 1..255), method, body length (4 bytes), body
//	response  status (1 byte: 0 ok, 1 error), length (4 bytes), body or error text
//
// One request per connection keeps the server simple and lets a hang-up
// cancel the handler: RPCs (joins, forwarded commands) are rare next to raft
// traffic, which keeps its own pooled connections.

import (
	"context"
	"crypto/tls"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/hashicorp/raft"
)

// Protocol bytes, the first byte a dialler writes after the handshake.
const (
	protoRaft byte = 0x01
	protoRPC  byte = 0x02
)

const (
	// MaxRPCBody is the largest RPC request or response body, in bytes.
	MaxRPCBody = 1 << 20

	maxMethodLen = 255

	defaultHandshakeTimeout = 10 * time.Second

	rpcStatusOK    byte = 0
	rpcStatusError byte = 1
)

// Errors of the transport.
var (
	// ErrBodyTooLarge: an RPC body exceeds MaxRPCBody.
	ErrBodyTooLarge = errors.New("rpc body too large")
	// ErrMuxClosed: the Mux was closed.
	ErrMuxClosed = errors.New("mux closed")

	errNoPeerCert = errors.New("no verified peer certificate")
)

// RemoteError is an error returned by the remote RPC handler, as opposed to
// a failure to reach it. Call returns it unwrapped; callers that wrap it
// further find it with errors.As.
type RemoteError struct {
	Msg string
}

func (e *RemoteError) Error() string { return "remote: " + e.Msg }

// RPCPeer identifies the client of an RPC.
type RPCPeer struct {
	// SiteID is the site id of the client's verified certificate, or "" when
	// the client presented none (a box that is joining).
	SiteID string
	// Addr is the client's TCP address: an ephemeral port, not the address
	// it serves on.
	Addr net.Addr
}

// RPCHandler serves one RPC. ctx is cancelled when the client hangs up or
// the Mux closes; Mux.Close waits for handlers, so they must honour ctx. A
// returned error reaches the caller as a *RemoteError carrying its text.
type RPCHandler func(ctx context.Context, peer RPCPeer, method string, body []byte) ([]byte, error)

// MuxConfig configures a Mux.
type MuxConfig struct {
	// Listener is the raw TCP listener (required); the Mux wraps it with
	// TLS and closes it on Close.
	Listener net.Listener
	// ServerTLS is the TLS config of accepted connections. Client
	// certificates are trusted only when it verifies them (ClientCAs and
	// ClientAuth VerifyClientCertIfGiven or stricter): a connection without
	// a verified chain counts as a client without a certificate.
	ServerTLS *tls.Config
	// Advertise is the address peers dial, and raft's address of this node;
	// default Listener.Addr(), which will not do for a listener on all
	// interfaces. At most 255 bytes as a string.
	Advertise net.Addr
	// DialTLS returns the TLS config to dial the peer with the given site id,
	// or, for "", a config that checks the CA only. Raft dials with "" (see
	// RaftLayer). Nil disables raft dialling.
	DialTLS func(siteID string) *tls.Config
	// Logger defaults to discarding.
	Logger *slog.Logger
	// HandshakeTimeout bounds the TLS handshake and the preamble of a
	// connection, the reading of an RPC request and the writing of its
	// response, and how long an accepted raft connection waits for raft to
	// take it. Default 10s.
	HandshakeTimeout time.Duration
	// Faults injects network faults (tests); nil injects none.
	Faults *Faults
}

// Mux accepts TLS connections on one listener and routes them by their first
// byte: raft connections to RaftLayer().Accept, RPCs to the RPCHandler.
//
// The Mux owns every connection it accepts or dials until its owner closes
// it: Close closes them all, and RaftLayer().Close closes the raft ones.
type Mux struct {
	cfg       MuxConfig
	log       *slog.Logger
	advertise string
	timeout   time.Duration
	faults    *Faults
	handler   atomic.Pointer[RPCHandler]
	raft      *raftLayer

	// ctx is cancelled by Close; it bounds handshakes and RPC handlers.
	ctx    context.Context
	cancel context.CancelFunc

	mu         sync.Mutex
	closed     bool
	serving    bool
	raftClosed bool
	// conns holds every open connection by its raw TCP conn; the value is
	// nil while the handshake runs.
	conns map[net.Conn]*peerConn

	// wg counts Serve and the goroutines it starts.
	wg sync.WaitGroup

	// sent and received count the bytes of every TCP connection the Mux
	// dialled or accepted (see BytesSent).
	sent, received atomic.Uint64
}

// NewMux returns a Mux; it starts nothing until Serve.
func NewMux(cfg MuxConfig) *Mux {
	m := &Mux{
		cfg:     cfg,
		log:     cfg.Logger,
		timeout: cfg.HandshakeTimeout,
		faults:  cfg.Faults,
		conns:   make(map[net.Conn]*peerConn),
	}
	if m.log == nil {
		m.log = slog.New(slog.DiscardHandler)
	}
	m.log = m.log.With("component", "mux")
	if m.timeout <= 0 {
		m.timeout = defaultHandshakeTimeout
	}
	if cfg.Advertise == nil && cfg.Listener != nil {
		m.cfg.Advertise = cfg.Listener.Addr()
	}
	if m.cfg.Advertise == nil {
		m.cfg.Advertise = &net.TCPAddr{} // a dialer only (Call)
	}
	m.advertise = m.cfg.Advertise.String()
	m.ctx, m.cancel = context.WithCancel(context.Background())
	m.raft = &raftLayer{m: m, ch: make(chan *peerConn), closed: make(chan struct{})}
	return m
}

// HandleRPC sets the handler of RPC connections. Set it before Serve; an RPC
// arriving without a handler gets a remote error.
func (m *Mux) HandleRPC(h RPCHandler) {
	m.handler.Store(&h)
}

// RaftLayer returns the raft.StreamLayer of the Mux, for
// raft.NewNetworkTransport.
//
// Its Dial knows only an address (raft passes no server id), so it dials with
// DialTLS(""): the server is checked against the CA, not for a site id. Its
// Accept only yields connections whose client presented a certificate that
// ServerTLS verified and that carries a site id; others are closed, so a box
// that was never paired cannot take part in raft. Its Close (which
// NetworkTransport.Close calls) stops Accept and Dial and closes the raft
// connections, leaving the Mux serving RPCs.
func (m *Mux) RaftLayer() raft.StreamLayer { return m.raft }

// Serve accepts connections until Close, and then returns nil. Each
// connection is handshaken in its own goroutine, which Close waits for.
func (m *Mux) Serve() error {
	m.mu.Lock()
	if m.closed {
		m.mu.Unlock()
		return nil
	}
	if m.serving {
		m.mu.Unlock()
		return errors.New("serve mux: already serving")
	}
	m.serving = true
	m.wg.Add(1)
	m.mu.Unlock()
	defer m.wg.Done()

	var backoff time.Duration
	for {
		raw, err := m.cfg.Listener.Accept()
		if err != nil {
			if m.ctx.Err() != nil {
				return nil
			}
			if !retryableAccept(err) {
				return fmt.Errorf("serve mux: accept: %w", err)
			}
			backoff = min(max(2*backoff, 5*time.Millisecond), time.Second)
			m.log.Warn("accept failed; retrying", "err", err, "backoff", backoff)
			select {
			case <-time.After(backoff):
			case <-m.ctx.Done():
				return nil
			}
			continue
		}
		backoff = 0
		raw = m.counted(raw)
		if !m.track(raw) {
			_ = raw.Close()
			return nil
		}
		m.wg.Add(1)
		go func() {
			defer m.wg.Done()
			m.handleConn(raw)
		}()
	}
}

func protoName(p byte) string {
	switch p {
	case protoRaft:
		return "raft"
	case protoRPC:
		return "rpc"
	}
	return fmt.Sprintf("%#x", p)
}

// retryableAccept reports whether an Accept error is worth waiting out,
// like running out of file descriptors.
func retryableAccept(err error) bool {
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		return true
	}
	for _, e := range []error{syscall.EMFILE, syscall.ENFILE, syscall.ENOBUFS, syscall.ENOMEM, syscall.ECONNABORTED} {
		if errors.Is(err, e) {
			return true
		}
	}
	return false
}

// Close closes the listener and every connection of the Mux, cancels RPC
// handlers, and waits for Serve and its goroutines to return. It does not
// wait for callers of Call, whose connections it closes. Safe to call twice.
func (m *Mux) Close() error {
	m.mu.Lock()
	first := !m.closed
	m.closed = true
	var pending []net.Conn
	var open []*peerConn
	if first {
		for raw, pc := range m.conns {
			if pc == nil {
				pending = append(pending, raw)
			} else {
				open = append(open, pc)
			}
		}
	}
	m.mu.Unlock()

	var err error
	if first {
		m.cancel()
		if m.cfg.Listener != nil {
			if lerr := m.cfg.Listener.Close(); lerr != nil && !errors.Is(lerr, net.ErrClosed) {
				err = fmt.Errorf("close mux listener: %w", lerr)
			}
		}
		m.closeRaft()
		for _, raw := range pending {
			_ = raw.Close()
		}
		for _, pc := range open {
			pc.kill()
		}
	}
	m.wg.Wait()
	return err
}

// BytesSent is the number of bytes the Mux has written to its peers since
// NewMux, over every connection it dialled or accepted: raft, RPCs, and
// connections refused after their handshake. It counts TCP payload, so TLS
// handshakes and record overhead are included and TCP/IP headers are not.
func (m *Mux) BytesSent() uint64 { return m.sent.Load() }

// BytesReceived is BytesSent's counterpart for bytes read from peers.
func (m *Mux) BytesReceived() uint64 { return m.received.Load() }

// counted wraps a raw TCP connection so its bytes count toward BytesSent
// and BytesReceived.
func (m *Mux) counted(raw net.Conn) net.Conn { return &countedConn{Conn: raw, m: m} }

// countedConn is a raw connection whose reads and writes the Mux counts.
type countedConn struct {
	net.Conn
	m *Mux
}

func (c *countedConn) Read(p []byte) (int, error) {
	n, err := c.Conn.Read(p)
	c.m.received.Add(uint64(n))
	return n, err
}

func (c *countedConn) Write(p []byte) (int, error) {
	n, err := c.Conn.Write(p)
	c.m.sent.Add(uint64(n))
	return n, err
}

// track registers a new raw connection, unless the Mux is closed.
func (m *Mux) track(raw net.Conn) bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.closed {
		return false
	}
	m.conns[raw] = nil
	return true
}

// adopt records the connection that completed its handshake on raw, unless
// the Mux, or for a raft connection the raft layer, was closed meanwhile.
func (m *Mux) adopt(pc *peerConn) bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	if _, ok := m.conns[pc.raw]; !ok || m.closed || (pc.proto == protoRaft && m.raftClosed) {
		return false
	}
	m.conns[pc.raw] = pc
	return true
}

func (m *Mux) untrack(raw net.Conn) {
	m.mu.Lock()
	defer m.mu.Unlock()
	delete(m.conns, raw)
}

// drop closes a connection that never became a peerConn.
func (m *Mux) drop(raw net.Conn) {
	m.untrack(raw)
	_ = raw.Close()
}

// handleConn runs the accepted raw connection's handshake and hands it to
// its protocol.
func (m *Mux) handleConn(raw net.Conn) {
	pc, err := m.acceptPeer(raw)
	if err != nil {
		m.drop(raw)
		switch {
		case m.ctx.Err() != nil:
		case errors.Is(err, ErrPartitioned):
			m.log.Debug("refused connection", "addr", raw.RemoteAddr(), "err", err)
		default:
			m.log.Warn("refused connection", "addr", raw.RemoteAddr(), "err", err)
		}
		return
	}
	m.log.Debug("accepted connection", "proto", protoName(pc.proto), "peer", pc.remote, "site", pc.site, "addr", raw.RemoteAddr())
	switch pc.proto {
	case protoRaft:
		m.raft.deliver(pc)
	case protoRPC:
		m.serveRPC(pc)
	}
}

// acceptPeer runs the server side of the handshake and reads the preamble.
func (m *Mux) acceptPeer(raw net.Conn) (*peerConn, error) {
	if err := raw.SetDeadline(time.Now().Add(m.timeout)); err != nil {
		return nil, fmt.Errorf("set handshake deadline: %w", err)
	}
	tc := tls.Server(raw, m.cfg.ServerTLS)
	if err := tc.HandshakeContext(m.ctx); err != nil {
		return nil, fmt.Errorf("tls handshake: %w", err)
	}
	var hdr [2]byte
	if _, err := io.ReadFull(tc, hdr[:]); err != nil {
		return nil, fmt.Errorf("read preamble: %w", err)
	}
	proto := hdr[0]
	if proto != protoRaft && proto != protoRPC {
		return nil, fmt.Errorf("unknown protocol byte %#x", proto)
	}
	adv := make([]byte, hdr[1])
	if _, err := io.ReadFull(tc, adv); err != nil {
		return nil, fmt.Errorf("read preamble: %w", err)
	}
	site, err := peerSite(tc.ConnectionState())
	switch {
	case errors.Is(err, errNoPeerCert) && proto == protoRaft:
		return nil, fmt.Errorf("raft connection from %q without a client certificate", adv)
	case errors.Is(err, errNoPeerCert):
		site = "" // a joining box; the RPC handler decides what it may do
	case err != nil:
		return nil, err
	}
	if err := raw.SetDeadline(time.Time{}); err != nil {
		return nil, fmt.Errorf("clear handshake deadline: %w", err)
	}
	pc := newPeerConn(m, raw, tc, proto, string(adv), site)
	if !m.adopt(pc) {
		return nil, ErrMuxClosed
	}
	if err := m.faults.attach(pc); err != nil {
		pc.kill()
		return nil, err
	}
	return pc, nil
}

// dial connects to addr, runs the client side of the handshake and writes
// the preamble for proto. ctx bounds the whole of it.
func (m *Mux) dial(ctx context.Context, addr string, conf *tls.Config, proto byte) (*peerConn, error) {
	if conf == nil {
		return nil, errors.New("no TLS config")
	}
	if len(m.advertise) > 255 {
		return nil, fmt.Errorf("advertise address %q longer than 255 bytes", m.advertise)
	}
	if err := m.faults.check(m.advertise, addr); err != nil {
		return nil, err
	}
	var d net.Dialer
	raw, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return nil, err
	}
	raw = m.counted(raw)
	if !m.track(raw) {
		_ = raw.Close()
		return nil, ErrMuxClosed
	}
	pc, err := m.dialPeer(ctx, raw, addr, conf, proto)
	if err != nil {
		m.drop(raw)
		return nil, err
	}
	return pc, nil
}

func (m *Mux) dialPeer(ctx context.Context, raw net.Conn, addr string, conf *tls.Config, proto byte) (*peerConn, error) {
	if dl, ok := ctx.Deadline(); ok {
		if err := raw.SetDeadline(dl); err != nil {
			return nil, fmt.Errorf("set handshake deadline: %w", err)
		}
	}
	if conf.ServerName == "" && !conf.InsecureSkipVerify {
		// As tls.Dial does: without it crypto/tls refuses to verify.
		host, _, err := net.SplitHostPort(addr)
		if err != nil {
			return nil, err
		}
		conf = conf.Clone()
		conf.ServerName = host
	}
	tc := tls.Client(raw, conf)
	if err := tc.HandshakeContext(ctx); err != nil {
		return nil, fmt.Errorf("tls handshake: %w", err)
	}
	pre := append([]byte{proto, byte(len(m.advertise))}, m.advertise...)
	if _, err := tc.Write(pre); err != nil {
		return nil, fmt.Errorf("write preamble: %w", err)
	}
	if err := raw.SetDeadline(time.Time{}); err != nil {
		return nil, fmt.Errorf("clear handshake deadline: %w", err)
	}
	pc := newPeerConn(m, raw, tc, proto, addr, "")
	if !m.adopt(pc) {
		return nil, ErrMuxClosed
	}
	if err := m.faults.attach(pc); err != nil {
		pc.kill()
		return nil, err
	}
	return pc, nil
}

// Call makes one RPC without a Mux of its own: for a box that is not a
// member yet (pulsegate join), which has nothing to serve.
func Call(ctx context.Context, addr string, tlsConf *tls.Config, method string, body []byte) ([]byte, error) {
	m := NewMux(MuxConfig{})
	defer m.Close()
	return m.Call(ctx, addr, tlsConf, method, body)
}

// Call runs one RPC on the peer at addr: it dials with tlsConf (ClientTLS
// for a member, JoinTLS for a joining box), sends method and body, and
// returns the response body. An error of the remote handler comes back as a
// *RemoteError, unwrapped; any other error means the call did not complete
// (the handler may or may not have run). Bodies over MaxRPCBody are refused
// with ErrBodyTooLarge, before dialling for a request. ctx bounds the call;
// closing the Mux aborts it.
func (m *Mux) Call(ctx context.Context, addr string, tlsConf *tls.Config, method string, body []byte) ([]byte, error) {
	resp, err := m.call(ctx, addr, tlsConf, method, body)
	var re *RemoteError
	if err != nil && !errors.As(err, &re) {
		return nil, fmt.Errorf("call %s on %s: %w", method, addr, err)
	}
	return resp, err
}

func (m *Mux) call(ctx context.Context, addr string, tlsConf *tls.Config, method string, body []byte) ([]byte, error) {
	if method == "" || len(method) > maxMethodLen {
		return nil, fmt.Errorf("method name of %d bytes, want 1 to %d", len(method), maxMethodLen)
	}
	if len(body) > MaxRPCBody {
		return nil, fmt.Errorf("request body of %d bytes, max %d: %w", len(body), MaxRPCBody, ErrBodyTooLarge)
	}
	c, err := m.dial(ctx, addr, tlsConf, protoRPC)
	if err != nil {
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		return nil, err
	}
	defer c.Close()
	stop := context.AfterFunc(ctx, c.kill)
	defer stop()

	req := make([]byte, 0, 1+len(method)+4+len(body))
	req = append(req, byte(len(method)))
	req = append(req, method...)
	req = binary.BigEndian.AppendUint32(req, uint32(len(body)))
	req = append(req, body...)
	if _, err := c.Write(req); err != nil {
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		return nil, fmt.Errorf("write request: %w", err)
	}
	resp, err := readResponse(c)
	if err != nil && ctx.Err() != nil {
		return nil, ctx.Err()
	}
	return resp, err
}

// readResponse reads an RPC response; an error response becomes a
// *RemoteError.
func readResponse(r io.Reader) ([]byte, error) {
	var hdr [5]byte
	if _, err := io.ReadFull(r, hdr[:]); err != nil {
		return nil, fmt.Errorf("read response: %w", err)
	}
	n := binary.BigEndian.Uint32(hdr[1:])
	if n > MaxRPCBody {
		return nil, fmt.Errorf("response body of %d bytes, max %d: %w", n, MaxRPCBody, ErrBodyTooLarge)
	}
	b := make([]byte, n)
	if _, err := io.ReadFull(r, b); err != nil {
		return nil, fmt.Errorf("read response: %w", err)
	}
	switch hdr[0] {
	case rpcStatusOK:
		return b, nil
	case rpcStatusError:
		return nil, &RemoteError{Msg: string(b)}
	default:
		return nil, fmt.Errorf("read response: unknown status %#x", hdr[0])
	}
}

// readRequest reads an RPC request.
func readRequest(r io.Reader) (string, []byte, error) {
	var ml [1]byte
	if _, err := io.ReadFull(r, ml[:]); err != nil {
		return "", nil, fmt.Errorf("read request: %w", err)
	}
	if ml[0] == 0 {
		return "", nil, errors.New("read request: empty method")
	}
	method := make([]byte, ml[0])
	if _, err := io.ReadFull(r, method); err != nil {
		return "", nil, fmt.Errorf("read request: %w", err)
	}
	var bl [4]byte
	if _, err := io.ReadFull(r, bl[:]); err != nil {
		return "", nil, fmt.Errorf("read request: %w", err)
	}
	n := binary.BigEndian.Uint32(bl[:])
	if n > MaxRPCBody {
		return "", nil, fmt.Errorf("request body of %d bytes, max %d: %w", n, MaxRPCBody, ErrBodyTooLarge)
	}
	body := make([]byte, n)
	if _, err := io.ReadFull(r, body); err != nil {
		return "", nil, fmt.Errorf("read request: %w", err)
	}
	return string(method), body, nil
}

// serveRPC serves the one request of an RPC connection and closes it.
func (m *Mux) serveRPC(c *peerConn) {
	defer c.Close()
	peer := RPCPeer{SiteID: c.site, Addr: c.RemoteAddr()}
	if err := c.SetReadDeadline(time.Now().Add(m.timeout)); err != nil {
		return
	}
	method, body, err := readRequest(c)
	if err != nil {
		m.log.Warn("bad rpc request", "peer", c.remote, "site", c.site, "err", err)
		if errors.Is(err, ErrBodyTooLarge) {
			m.writeResponse(c, nil, err)
		}
		return
	}
	if err := c.SetReadDeadline(time.Time{}); err != nil {
		return
	}

	ctx, cancel := context.WithCancel(m.ctx)
	defer cancel()
	// The client sends nothing after its request, so a read that returns
	// means it hung up (or broke the protocol): the handler may stop. The
	// read ends at the latest when c is closed below.
	m.wg.Add(1)
	go func() {
		defer m.wg.Done()
		defer cancel()
		var b [1]byte
		_, _ = c.Read(b[:])
	}()

	var resp []byte
	if h := m.handler.Load(); h != nil {
		resp, err = (*h)(ctx, peer, method, body)
	} else {
		err = errors.New("no rpc handler")
	}
	if err == nil && len(resp) > MaxRPCBody {
		err = fmt.Errorf("response body of %d bytes, max %d: %w", len(resp), MaxRPCBody, ErrBodyTooLarge)
	}
	m.writeResponse(c, resp, err)
}

// writeResponse writes the response to an RPC: resp, or herr if not nil.
func (m *Mux) writeResponse(c *peerConn, resp []byte, herr error) {
	status := rpcStatusOK
	if herr != nil {
		status = rpcStatusError
		resp = []byte(herr.Error())
		if len(resp) > MaxRPCBody {
			resp = resp[:MaxRPCBody]
		}
	}
	b := make([]byte, 0, 5+len(resp))
	b = append(b, status)
	b = binary.BigEndian.AppendUint32(b, uint32(len(resp)))
	b = append(b, resp...)
	if err := c.SetWriteDeadline(time.Now().Add(m.timeout)); err != nil {
		return
	}
	if _, err := c.Write(b); err != nil && m.ctx.Err() == nil {
		m.log.Warn("write rpc response", "peer", c.remote, "site", c.site, "err", err)
	}
}

// raftLayer is the raft.StreamLayer of a Mux.
type raftLayer struct {
	m      *Mux
	ch     chan *peerConn
	closed chan struct{} // closed by Mux.closeRaft
}

// Accept returns the next raft connection, from a client with a verified
// certificate.
func (l *raftLayer) Accept() (net.Conn, error) {
	select {
	case c := <-l.ch:
		return c, nil
	case <-l.closed:
		return nil, fmt.Errorf("accept raft connection: %w", net.ErrClosed)
	}
}

// Close stops Accept and Dial and closes the raft connections.
func (l *raftLayer) Close() error {
	l.m.closeRaft()
	return nil
}

// Addr is the Mux's advertised address: raft stores it in its configuration
// for peers to dial.
func (l *raftLayer) Addr() net.Addr { return l.m.cfg.Advertise }

// Dial connects to the raft layer of the peer at address, checking its
// certificate against the CA only (DialTLS("")): raft gives no server id.
func (l *raftLayer) Dial(address raft.ServerAddress, timeout time.Duration) (net.Conn, error) {
	m := l.m
	select {
	case <-l.closed:
		return nil, fmt.Errorf("dial raft %s: %w", address, net.ErrClosed)
	default:
	}
	if m.cfg.DialTLS == nil {
		return nil, fmt.Errorf("dial raft %s: no DialTLS configured", address)
	}
	ctx, cancel := context.WithTimeout(m.ctx, timeout)
	defer cancel()
	c, err := m.dial(ctx, string(address), m.cfg.DialTLS(""), protoRaft)
	if err != nil {
		return nil, fmt.Errorf("dial raft %s: %w", address, err)
	}
	return c, nil
}

// deliver hands an accepted raft connection to Accept.
func (l *raftLayer) deliver(c *peerConn) {
	t := time.NewTimer(l.m.timeout)
	defer t.Stop()
	select {
	case l.ch <- c:
	case <-l.closed:
		c.kill()
	case <-t.C:
		l.m.log.Warn("raft did not accept connection; closing it", "peer", c.remote, "site", c.site)
		c.kill()
	}
}

// closeRaft closes the raft layer: Accept and Dial fail from now on, and the
// raft connections are closed.
func (m *Mux) closeRaft() {
	m.mu.Lock()
	if m.raftClosed {
		m.mu.Unlock()
		return
	}
	m.raftClosed = true
	close(m.raft.closed)
	var open []*peerConn
	for _, pc := range m.conns {
		if pc != nil && pc.proto == protoRaft {
			open = append(open, pc)
		}
	}
	m.mu.Unlock()
	for _, pc := range open {
		pc.kill()
	}
}

// peerConn is a connection after its handshake and preamble: the TLS
// connection, with the write delay of Faults, tracked by its Mux and Faults
// until closed.
type peerConn struct {
	net.Conn // the *tls.Conn
	raw      net.Conn
	m        *Mux
	proto    byte
	local    string // our advertised address
	remote   string // the peer's advertised address
	site     string // the peer's site id, on accepted connections
	done     chan struct{}
	once     sync.Once
}

func newPeerConn(m *Mux, raw net.Conn, tc *tls.Conn, proto byte, remote, site string) *peerConn {
	return &peerConn{
		Conn: tc, raw: raw, m: m, proto: proto,
		local: m.advertise, remote: remote, site: site,
		done: make(chan struct{}),
	}
}

// Write writes p after the delay set by Faults.SetDelay.
func (c *peerConn) Write(p []byte) (int, error) {
	if !c.m.faults.writeDelay(c.done) {
		return 0, net.ErrClosed
	}
	return c.Conn.Write(p)
}

// Close says goodbye to the peer (TLS close_notify) and closes.
func (c *peerConn) Close() error {
	err := net.ErrClosed
	c.once.Do(func() {
		close(c.done)
		err = c.Conn.Close()
		c.forget()
	})
	return err
}

// kill closes the connection at once: pending reads and writes fail.
func (c *peerConn) kill() {
	c.once.Do(func() {
		close(c.done)
		_ = c.raw.Close()
		c.forget()
	})
}

func (c *peerConn) forget() {
	c.m.faults.detach(c)
	c.m.untrack(c.raw)
}

func (c *peerConn) ends() (local, remote string) { return c.local, c.remote }

// peerSite returns the site id in the URI SAN pulsegate://site/<id> of the
// peer's verified leaf certificate, or errNoPeerCert if the handshake
// verified none. (PeerSiteID in pki.go is the exported equivalent; this
// one keeps the transport free of the PKI's code.)
func peerSite(cs tls.ConnectionState) (string, error) {
	if len(cs.VerifiedChains) == 0 || len(cs.VerifiedChains[0]) == 0 {
		return "", errNoPeerCert
	}
	leaf := cs.VerifiedChains[0][0]
	var ids []string
	for _, u := range leaf.URIs {
		if u.Scheme != "pulsegate" {
			continue
		}
		id, ok := strings.CutPrefix(u.Path, "/")
		if !ok || u.Host != "site" || u.User != nil || u.RawQuery != "" || u.Fragment != "" || !plausibleSiteID(id) {
			return "", fmt.Errorf("peer site id: malformed site URI %q", u.String())
		}
		ids = append(ids, id)
	}
	if len(ids) != 1 {
		return "", fmt.Errorf("peer site id: certificate has %d site URIs, want 1", len(ids))
	}
	return ids[0], nil
}

// plausibleSiteID accepts the ids the PKI issues (lowercase hex) and little
// else: 1 to 64 characters of [0-9a-z-].
func plausibleSiteID(s string) bool {
	if len(s) == 0 || len(s) > 64 {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if (c < '0' || c > '9') && (c < 'a' || c > 'z') && c != '-' {
			return false
		}
	}
	return true
}
