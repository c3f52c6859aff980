package cluster

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"math/big"
	"net"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hashicorp/raft"
	"go.uber.org/goleak"
)

// The tests build their own tiny CA (muxPKI) rather than use pki.go, so the
// transport is tested on its own; the configs mirror ServerTLS/ClientTLS:
// client certificates verified if given, servers verified against the CA
// without a host name check.

// muxLeakCheck fails t if goroutines started during t outlive it. It runs
// after t's other cleanups (Close of muxes and raft), which a deferred
// goleak.VerifyNone would not.
func muxLeakCheck(t *testing.T) {
	t.Helper()
	ignore := goleak.IgnoreCurrent()
	t.Cleanup(func() { goleak.VerifyNone(t, ignore) })
}

// muxWaitFor polls cond until it holds or timeout passes.
func muxWaitFor(tb testing.TB, timeout time.Duration, what string, cond func() bool) {
	tb.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			tb.Fatalf("timed out after %v waiting for %s", timeout, what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

type muxPKI struct {
	cert *x509.Certificate
	key  *ecdsa.PrivateKey
	pool *x509.CertPool
}

func newMuxPKI(tb testing.TB) *muxPKI {
	tb.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		tb.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: "test CA"},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(time.Hour),
		IsCA:                  true,
		BasicConstraintsValid: true,
		KeyUsage:              x509.KeyUsageCertSign,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		tb.Fatal(err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		tb.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AddCert(cert)
	return &muxPKI{cert: cert, key: key, pool: pool}
}

// leaf issues a node certificate for site, with the URI SAN
// pulsegate://site/<site>.
func (p *muxPKI) leaf(tb testing.TB, site string) *tls.Certificate {
	tb.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		tb.Fatal(err)
	}
	serial, err := rand.Int(rand.Reader, big.NewInt(1<<62))
	if err != nil {
		tb.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: serial,
		Subject:      pkix.Name{CommonName: site},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
		URIs:         []*url.URL{{Scheme: "pulsegate", Host: "site", Path: "/" + site}},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, p.cert, &key.PublicKey, p.key)
	if err != nil {
		tb.Fatal(err)
	}
	return &tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}
}

func (p *muxPKI) serverTLS(cert *tls.Certificate) *tls.Config {
	return &tls.Config{
		MinVersion:   tls.VersionTLS13,
		Certificates: []tls.Certificate{*cert},
		ClientAuth:   tls.VerifyClientCertIfGiven,
		ClientCAs:    p.pool,
	}
}

// clientTLS presents cert (none if nil) and accepts a server whose
// certificate chains to the CA and, unless expectSite is "", names that site.
func (p *muxPKI) clientTLS(cert *tls.Certificate, expectSite string) *tls.Config {
	conf := &tls.Config{
		MinVersion: tls.VersionTLS13,
		// Not skipped: VerifyConnection verifies, without a host name.
		InsecureSkipVerify: true,
		VerifyConnection: func(cs tls.ConnectionState) error {
			if len(cs.PeerCertificates) == 0 {
				return errors.New("no server certificate")
			}
			chains, err := cs.PeerCertificates[0].Verify(x509.VerifyOptions{
				Roots:     p.pool,
				KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
			})
			if err != nil {
				return err
			}
			site, err := peerSite(tls.ConnectionState{VerifiedChains: chains})
			if err != nil {
				return err
			}
			if expectSite != "" && site != expectSite {
				return fmt.Errorf("server is site %s, want %s", site, expectSite)
			}
			return nil
		},
	}
	if cert != nil {
		conf.Certificates = []tls.Certificate{*cert}
	}
	return conf
}

// muxNode is a serving Mux on 127.0.0.1 with its own node certificate.
type muxNode struct {
	site string
	addr string
	cert *tls.Certificate
	pki  *muxPKI
	mux  *Mux
}

func newMuxNode(tb testing.TB, pki *muxPKI, site string, faults *Faults, h RPCHandler) *muxNode {
	tb.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	cert := pki.leaf(tb, site)
	m := NewMux(MuxConfig{
		Listener:         ln,
		ServerTLS:        pki.serverTLS(cert),
		DialTLS:          func(s string) *tls.Config { return pki.clientTLS(cert, s) },
		HandshakeTimeout: 2 * time.Second,
		Faults:           faults,
	})
	if h != nil {
		m.HandleRPC(h)
	}
	served := make(chan error, 1)
	go func() { served <- m.Serve() }()
	tb.Cleanup(func() {
		if err := m.Close(); err != nil {
			tb.Errorf("Close: %v", err)
		}
		if err := <-served; err != nil {
			tb.Errorf("Serve: %v", err)
		}
	})
	return &muxNode{site: site, addr: ln.Addr().String(), cert: cert, pki: pki, mux: m}
}

// dialTLS is the config n uses to call the peer with site id site.
func (n *muxNode) dialTLS(site string) *tls.Config { return n.pki.clientTLS(n.cert, site) }

func muxSite(i int) string { return fmt.Sprintf("%016x", 0xa0+i) }

// muxEcho answers with the method, the caller's site id and the body.
func muxEcho(_ context.Context, peer RPCPeer, method string, body []byte) ([]byte, error) {
	return append([]byte(method+"|"+peer.SiteID+"|"), body...), nil
}

func TestRPCRoundTrip(t *testing.T) {
	muxLeakCheck(t)
	pki := newMuxPKI(t)
	a := newMuxNode(t, pki, muxSite(1), nil, nil)
	b := newMuxNode(t, pki, muxSite(2), nil, muxEcho)
	ctx := context.Background()

	got, err := a.mux.Call(ctx, b.addr, a.dialTLS(b.site), "ping", []byte("hello"))
	if err != nil {
		t.Fatalf("Call: %v", err)
	}
	if want := "ping|" + a.site + "|hello"; string(got) != want {
		t.Errorf("Call = %q, want %q", got, want)
	}

	// The largest body, both ways.
	large := bytes.Repeat([]byte{'x'}, MaxRPCBody)
	b.mux.HandleRPC(func(_ context.Context, _ RPCPeer, _ string, body []byte) ([]byte, error) { return body, nil })
	got, err = a.mux.Call(ctx, b.addr, a.dialTLS(b.site), "big", large)
	if err != nil {
		t.Fatalf("Call with %d bytes: %v", len(large), err)
	}
	if !bytes.Equal(got, large) {
		t.Errorf("Call with %d bytes returned %d bytes, not the same", len(large), len(got))
	}

	// The client checks whom it reached.
	_, err = a.mux.Call(ctx, b.addr, a.dialTLS(muxSite(9)), "ping", nil)
	if err == nil || !strings.Contains(err.Error(), "want "+muxSite(9)) {
		t.Errorf("Call to the wrong site: err = %v, want a verification error", err)
	}
}

func TestRPCRemoteError(t *testing.T) {
	muxLeakCheck(t)
	pki := newMuxPKI(t)
	a := newMuxNode(t, pki, muxSite(1), nil, nil)
	b := newMuxNode(t, pki, muxSite(2), nil, func(context.Context, RPCPeer, string, []byte) ([]byte, error) {
		return nil, errors.New("not the leader (retry)")
	})
	ctx := context.Background()

	_, err := a.mux.Call(ctx, b.addr, a.dialTLS(b.site), "apply", []byte("x"))
	var re *RemoteError
	if !errors.As(err, &re) {
		t.Fatalf("Call error %v (%T), want a *RemoteError", err, err)
	}
	if re.Msg != "not the leader (retry)" {
		t.Errorf("RemoteError.Msg = %q, want %q", re.Msg, "not the leader (retry)")
	}

	// A transport error is not a RemoteError.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	dead := ln.Addr().String()
	ln.Close()
	_, err = a.mux.Call(ctx, dead, a.dialTLS(""), "apply", nil)
	if err == nil || errors.As(err, &re) {
		t.Errorf("Call to a closed port: err = %v, want a transport error", err)
	}

	// A mux without a handler answers with a remote error.
	c := newMuxNode(t, pki, muxSite(3), nil, nil)
	if _, err := a.mux.Call(ctx, c.addr, a.dialTLS(c.site), "apply", nil); !errors.As(err, &re) {
		t.Errorf("Call without handler: err = %v, want a *RemoteError", err)
	}
}

func TestRPCBodyTooLarge(t *testing.T) {
	muxLeakCheck(t)
	pki := newMuxPKI(t)
	var calls atomic.Int32
	a := newMuxNode(t, pki, muxSite(1), nil, nil)
	b := newMuxNode(t, pki, muxSite(2), nil, func(_ context.Context, _ RPCPeer, method string, _ []byte) ([]byte, error) {
		calls.Add(1)
		return make([]byte, MaxRPCBody+1), nil
	})
	ctx := context.Background()

	// Request: refused before dialling.
	_, err := a.mux.Call(ctx, b.addr, a.dialTLS(b.site), "big", make([]byte, MaxRPCBody+1))
	var re *RemoteError
	if !errors.Is(err, ErrBodyTooLarge) || errors.As(err, &re) {
		t.Errorf("Call with a large request: err = %v, want ErrBodyTooLarge", err)
	}
	if n := calls.Load(); n != 0 {
		t.Errorf("handler ran %d times for a request over the limit", n)
	}

	// Response: the server refuses to send it.
	_, err = a.mux.Call(ctx, b.addr, a.dialTLS(b.site), "big", nil)
	if !errors.As(err, &re) || !strings.Contains(re.Msg, "too large") {
		t.Errorf("Call with a large response: err = %v, want a *RemoteError about the size", err)
	}

	// Request from a client that ignores the limit: the server does not
	// read it and says why.
	c, err := a.mux.dial(ctx, b.addr, a.dialTLS(b.site), protoRPC)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	hdr := append([]byte{3}, "big"...)
	hdr = binary.BigEndian.AppendUint32(hdr, MaxRPCBody+1)
	if _, err := c.Write(hdr); err != nil {
		t.Fatal(err)
	}
	_, err = readResponse(c)
	if !errors.As(err, &re) || !strings.Contains(re.Msg, "too large") {
		t.Errorf("oversized raw request: err = %v, want a *RemoteError about the size", err)
	}
	if n := calls.Load(); n != 1 {
		t.Errorf("handler ran %d times, want 1", n)
	}
}

// TestMuxCountsBytes checks BytesSent and BytesReceived against an RPC of a
// known size: at least the payload, at most the payload plus the TLS
// handshake and record overhead, on both ends.
func TestMuxCountsBytes(t *testing.T) {
	muxLeakCheck(t)
	pki := newMuxPKI(t)
	a := newMuxNode(t, pki, muxSite(1), nil, nil)
	b := newMuxNode(t, pki, muxSite(2), nil, muxEcho)
	if a.mux.BytesSent() != 0 || b.mux.BytesReceived() != 0 {
		t.Fatalf("before any connection: sent %d, received %d, want 0", a.mux.BytesSent(), b.mux.BytesReceived())
	}
	body := bytes.Repeat([]byte{'x'}, 64<<10)
	resp, err := a.mux.Call(context.Background(), b.addr, a.dialTLS(b.site), "ping", body)
	if err != nil {
		t.Fatalf("Call: %v", err)
	}
	// Handshake with certificates, preamble, framing, TLS records: a few KiB.
	const overhead = 16 << 10
	for _, c := range []struct {
		name    string
		got     uint64
		payload int
	}{
		{"a.BytesSent", a.mux.BytesSent(), len(body)},
		{"b.BytesReceived", b.mux.BytesReceived(), len(body)},
		{"b.BytesSent", b.mux.BytesSent(), len(resp)},
		{"a.BytesReceived", a.mux.BytesReceived(), len(resp)},
	} {
		if c.got < uint64(c.payload) || c.got > uint64(c.payload+overhead) {
			t.Errorf("%s = %d after an RPC carrying %d bytes, want %d to %d", c.name, c.got, c.payload, c.payload, c.payload+overhead)
		}
	}
	// The request has arrived in full before the response is sent, and the
	// client finished writing before Call returned.
	if got, sent := b.mux.BytesReceived(), a.mux.BytesSent(); got > sent {
		t.Errorf("b received %d bytes, more than the %d a sent", got, sent)
	}
}

func TestRPCClientWithoutCertificate(t *testing.T) {
	muxLeakCheck(t)
	pki := newMuxPKI(t)
	a := newMuxNode(t, pki, muxSite(1), nil, nil)
	b := newMuxNode(t, pki, muxSite(2), nil, muxEcho)

	// A joining box trusts the CA but has no certificate of its own.
	got, err := a.mux.Call(context.Background(), b.addr, pki.clientTLS(nil, b.site), "join", []byte("token"))
	if err != nil {
		t.Fatalf("Call: %v", err)
	}
	if want := "join||token"; string(got) != want {
		t.Errorf("Call = %q, want %q (an empty site id)", got, want)
	}
}

func TestMuxRaftRefusesClientWithoutCertificate(t *testing.T) {
	muxLeakCheck(t)
	pki := newMuxPKI(t)
	srv := newMuxNode(t, pki, muxSite(1), nil, nil)
	member := newMuxNode(t, pki, muxSite(2), nil, nil)
	// A joining box: it trusts the CA but has no certificate. It only dials,
	// so its Mux needs no Serve.
	jl, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	joiner := NewMux(MuxConfig{
		Listener: jl,
		DialTLS:  func(string) *tls.Config { return pki.clientTLS(nil, "") },
	})
	t.Cleanup(func() { joiner.Close() })

	accepted := make(chan net.Conn, 2)
	go func() {
		for {
			c, err := srv.mux.RaftLayer().Accept()
			if err != nil {
				return // the raft layer closed with the mux
			}
			accepted <- c
		}
	}()

	// The joiner's handshake succeeds (TLS 1.3 finishes the client side
	// first), then the server closes the connection.
	c, err := joiner.RaftLayer().Dial(raft.ServerAddress(srv.addr), 2*time.Second)
	if err != nil {
		t.Fatalf("Dial: %v", err)
	}
	defer c.Close()
	_ = c.SetReadDeadline(time.Now().Add(2 * time.Second))
	if _, err := c.Read(make([]byte, 1)); err == nil || muxIsTimeout(err) {
		t.Fatalf("read on a raft connection without certificate: err = %v, want it closed by the server", err)
	}

	// A member gets through, and is the first and only one accepted.
	mc, err := member.mux.RaftLayer().Dial(raft.ServerAddress(srv.addr), 2*time.Second)
	if err != nil {
		t.Fatalf("Dial: %v", err)
	}
	defer mc.Close()
	if _, err := mc.Write([]byte("member")); err != nil {
		t.Fatal(err)
	}
	sc := <-accepted
	defer sc.Close()
	buf := make([]byte, 6)
	if _, err := io.ReadFull(sc, buf); err != nil || string(buf) != "member" {
		t.Errorf("first accepted raft connection read %q, %v; want the member's", buf, err)
	}
	if site := sc.(*peerConn).site; site != member.site {
		t.Errorf("accepted raft connection from site %q, want %q", site, member.site)
	}
}

func muxIsTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}

func TestMuxRejectsForeignCA(t *testing.T) {
	muxLeakCheck(t)
	pki := newMuxPKI(t)
	other := newMuxPKI(t)
	var calls atomic.Int32
	srv := newMuxNode(t, pki, muxSite(1), nil, func(context.Context, RPCPeer, string, []byte) ([]byte, error) {
		calls.Add(1)
		return nil, nil
	})
	client := newMuxNode(t, other, muxSite(2), nil, nil)
	ctx := context.Background()

	// A certificate from another CA, presented to a server the client trusts.
	foreign := other.leaf(t, muxSite(2))
	_, err := client.mux.Call(ctx, srv.addr, pki.clientTLS(foreign, ""), "ping", nil)
	var re *RemoteError
	if err == nil || errors.As(err, &re) {
		t.Errorf("Call with a foreign certificate: err = %v, want a handshake failure", err)
	}
	// And a server the client does not trust.
	_, err = client.mux.Call(ctx, srv.addr, client.dialTLS(""), "ping", nil)
	if err == nil || !strings.Contains(err.Error(), "tls handshake") {
		t.Errorf("Call to a server of another CA: err = %v, want a handshake failure", err)
	}
	if n := calls.Load(); n != 0 {
		t.Errorf("handler ran %d times for foreign clients", n)
	}
}

func TestMuxCloseWaits(t *testing.T) {
	muxLeakCheck(t)
	pki := newMuxPKI(t)
	a := newMuxNode(t, pki, muxSite(1), nil, nil)

	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	cert := pki.leaf(t, muxSite(2))
	m := NewMux(MuxConfig{Listener: ln, ServerTLS: pki.serverTLS(cert)})
	entered := make(chan struct{})
	var returned atomic.Bool
	m.HandleRPC(func(ctx context.Context, _ RPCPeer, _ string, _ []byte) ([]byte, error) {
		close(entered)
		<-ctx.Done()
		time.Sleep(50 * time.Millisecond) // Close must wait this out too
		returned.Store(true)
		return nil, ctx.Err()
	})
	served := make(chan error, 1)
	go func() { served <- m.Serve() }()

	called := make(chan error, 1)
	go func() {
		_, err := a.mux.Call(context.Background(), ln.Addr().String(), a.dialTLS(""), "block", nil)
		called <- err
	}()
	<-entered
	if err := m.Close(); err != nil {
		t.Errorf("Close: %v", err)
	}
	if !returned.Load() {
		t.Error("Close returned before the RPC handler")
	}
	if err := <-served; err != nil {
		t.Errorf("Serve = %v, want nil after Close", err)
	}
	if err := <-called; err == nil {
		t.Error("Call to a closing mux succeeded")
	}
	if err := m.Close(); err != nil {
		t.Errorf("second Close: %v", err)
	}
	if err := m.Serve(); err != nil {
		t.Errorf("Serve after Close = %v, want nil", err)
	}
	if _, err := m.RaftLayer().Accept(); !errors.Is(err, net.ErrClosed) {
		t.Errorf("Accept after Close: err = %v, want net.ErrClosed", err)
	}
	if _, err := m.Call(context.Background(), a.addr, a.dialTLS(""), "x", nil); !errors.Is(err, ErrMuxClosed) {
		t.Errorf("Call after Close: err = %v, want ErrMuxClosed", err)
	}
}

func TestRPCCancelledWhenClientHangsUp(t *testing.T) {
	muxLeakCheck(t)
	pki := newMuxPKI(t)
	a := newMuxNode(t, pki, muxSite(1), nil, nil)
	cancelled := make(chan struct{})
	b := newMuxNode(t, pki, muxSite(2), nil, func(ctx context.Context, _ RPCPeer, _ string, _ []byte) ([]byte, error) {
		<-ctx.Done()
		close(cancelled)
		return nil, ctx.Err()
	})

	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	_, err := a.mux.Call(ctx, b.addr, a.dialTLS(b.site), "slow", nil)
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("Call past its deadline: err = %v, want context.DeadlineExceeded", err)
	}
	select {
	case <-cancelled:
	case <-time.After(2 * time.Second):
		t.Fatal("handler's context not cancelled after the client hung up")
	}
}

func TestFaultsPartitionHealDelay(t *testing.T) {
	muxLeakCheck(t)
	pki := newMuxPKI(t)
	faults := NewFaults()
	a := newMuxNode(t, pki, muxSite(1), faults, muxEcho)
	b := newMuxNode(t, pki, muxSite(2), faults, muxEcho)
	ctx := context.Background()

	// An open raft connection from a to b, seen from both ends.
	accepted := make(chan net.Conn, 1)
	go func() {
		if c, err := b.mux.RaftLayer().Accept(); err == nil {
			accepted <- c
		}
	}()
	ac, err := a.mux.RaftLayer().Dial(raft.ServerAddress(b.addr), 2*time.Second)
	if err != nil {
		t.Fatalf("Dial: %v", err)
	}
	defer ac.Close()
	if _, err := ac.Write([]byte{1}); err != nil {
		t.Fatal(err)
	}
	bc := <-accepted
	defer bc.Close()
	if _, err := io.ReadFull(bc, make([]byte, 1)); err != nil {
		t.Fatal(err)
	}

	faults.Partition(b.addr)
	for name, c := range map[string]net.Conn{"dialled": ac, "accepted": bc} {
		_ = c.SetReadDeadline(time.Now().Add(2 * time.Second))
		if _, err := c.Read(make([]byte, 1)); err == nil || muxIsTimeout(err) {
			t.Errorf("read on %s connection after Partition: err = %v, want it closed", name, err)
		}
	}
	if _, err := a.mux.Call(ctx, b.addr, a.dialTLS(b.site), "ping", nil); !errors.Is(err, ErrPartitioned) {
		t.Errorf("Call to a partitioned node: err = %v, want ErrPartitioned", err)
	}
	if _, err := b.mux.Call(ctx, a.addr, b.dialTLS(a.site), "ping", nil); !errors.Is(err, ErrPartitioned) {
		t.Errorf("Call from a partitioned node: err = %v, want ErrPartitioned", err)
	}
	if _, err := a.mux.RaftLayer().Dial(raft.ServerAddress(b.addr), time.Second); !errors.Is(err, ErrPartitioned) {
		t.Errorf("raft Dial to a partitioned node: err = %v, want ErrPartitioned", err)
	}

	faults.Heal(b.addr)
	if _, err := a.mux.Call(ctx, b.addr, a.dialTLS(b.site), "ping", nil); err != nil {
		t.Errorf("Call after Heal: %v", err)
	}

	const d = 60 * time.Millisecond
	faults.SetDelay(d)
	start := time.Now()
	if _, err := a.mux.Call(ctx, b.addr, a.dialTLS(b.site), "ping", nil); err != nil {
		t.Errorf("Call with delay: %v", err)
	}
	if rtt := time.Since(start); rtt < 2*d {
		t.Errorf("Call with a one-way delay of %v took %v, want at least %v", d, rtt, 2*d)
	}
	faults.SetDelay(0)
}

// TestFaultsRefuseOnAccept covers the accepting side: a dialler that does
// not share the Faults is refused once it announces a partitioned address.
func TestFaultsRefuseOnAccept(t *testing.T) {
	muxLeakCheck(t)
	pki := newMuxPKI(t)
	faults := NewFaults()
	a := newMuxNode(t, pki, muxSite(1), nil, nil)
	b := newMuxNode(t, pki, muxSite(2), faults, muxEcho)
	faults.Partition(a.addr)

	_, err := a.mux.Call(context.Background(), b.addr, a.dialTLS(b.site), "ping", nil)
	var re *RemoteError
	if err == nil || errors.As(err, &re) {
		t.Errorf("Call from a partitioned address: err = %v, want the connection closed", err)
	}
	faults.Heal(a.addr)
	if _, err := a.mux.Call(context.Background(), b.addr, a.dialTLS(b.site), "ping", nil); err != nil {
		t.Errorf("Call after Heal: %v", err)
	}
}

func TestTransportPeerSite(t *testing.T) {
	uri := func(s string) *url.URL {
		u, err := url.Parse(s)
		if err != nil {
			t.Fatal(err)
		}
		return u
	}
	tests := []struct {
		name    string
		uris    []*url.URL
		want    string
		wantErr bool
	}{
		{"site", []*url.URL{uri("pulsegate://site/00000000000000a1")}, "00000000000000a1", false},
		{"other schemes ignored", []*url.URL{uri("spiffe://x/y"), uri("pulsegate://site/abc")}, "abc", false},
		{"none", nil, "", true},
		{"two", []*url.URL{uri("pulsegate://site/a"), uri("pulsegate://site/b")}, "", true},
		{"wrong host", []*url.URL{uri("pulsegate://node/abc")}, "", true},
		{"empty id", []*url.URL{uri("pulsegate://site/")}, "", true},
		{"nested path", []*url.URL{uri("pulsegate://site/a/b")}, "", true},
		{"query", []*url.URL{uri("pulsegate://site/abc?x=1")}, "", true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cs := tls.ConnectionState{VerifiedChains: [][]*x509.Certificate{{{URIs: tt.uris}}}}
			got, err := peerSite(cs)
			if got != tt.want || (err != nil) != tt.wantErr {
				t.Errorf("peerSite(%v) = %q, %v; want %q, error %v", tt.uris, got, err, tt.want, tt.wantErr)
			}
		})
	}
	// Unverified peer certificates do not count.
	cs := tls.ConnectionState{PeerCertificates: []*x509.Certificate{{URIs: []*url.URL{uri("pulsegate://site/abc")}}}}
	if got, err := peerSite(cs); !errors.Is(err, errNoPeerCert) {
		t.Errorf("peerSite(unverified) = %q, %v; want errNoPeerCert", got, err)
	}
}

// muxCountFSM is the smallest raft state machine: it counts applied entries.
type muxCountFSM struct {
	mu sync.Mutex
	n  uint64
}

func (f *muxCountFSM) Apply(*raft.Log) any {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.n++
	return f.n
}

func (f *muxCountFSM) count() uint64 {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.n
}

func (f *muxCountFSM) Snapshot() (raft.FSMSnapshot, error) { return muxCountSnapshot(f.count()), nil }

func (f *muxCountFSM) Restore(rc io.ReadCloser) error {
	defer rc.Close()
	var b [8]byte
	if _, err := io.ReadFull(rc, b[:]); err != nil {
		return err
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	f.n = binary.BigEndian.Uint64(b[:])
	return nil
}

type muxCountSnapshot uint64

func (s muxCountSnapshot) Persist(sink raft.SnapshotSink) error {
	if _, err := sink.Write(binary.BigEndian.AppendUint64(nil, uint64(s))); err != nil {
		_ = sink.Cancel()
		return err
	}
	return sink.Close()
}

func (muxCountSnapshot) Release() {}

type muxRaftMember struct {
	*muxNode
	raft *raft.Raft
	fsm  *muxCountFSM
}

// startMuxRaftMember runs raft over n's Mux; raft and its transport shut down
// before n's Mux closes (cleanups run last in, first out).
func startMuxRaftMember(tb testing.TB, n *muxNode) *muxRaftMember {
	tb.Helper()
	conf := raft.DefaultConfig()
	conf.LocalID = raft.ServerID(n.site)
	conf.HeartbeatTimeout = 300 * time.Millisecond
	conf.ElectionTimeout = 300 * time.Millisecond
	conf.LeaderLeaseTimeout = 150 * time.Millisecond
	conf.CommitTimeout = 10 * time.Millisecond
	conf.LogOutput = io.Discard
	trans := raft.NewNetworkTransport(n.mux.RaftLayer(), 3, 10*time.Second, io.Discard)
	store := raft.NewInmemStore()
	fsm := &muxCountFSM{}
	r, err := raft.NewRaft(conf, fsm, store, store, raft.NewInmemSnapshotStore(), trans)
	if err != nil {
		tb.Fatalf("NewRaft: %v", err)
	}
	tb.Cleanup(func() {
		if err := r.Shutdown().Error(); err != nil {
			tb.Errorf("raft Shutdown: %v", err)
		}
		if err := trans.Close(); err != nil {
			tb.Errorf("transport Close: %v", err)
		}
	})
	return &muxRaftMember{muxNode: n, raft: r, fsm: fsm}
}

func muxRaftLeader(members []*muxRaftMember, except *muxRaftMember) *muxRaftMember {
	var leader *muxRaftMember
	for _, m := range members {
		if m != except && m.raft.State() == raft.Leader {
			if leader != nil {
				return nil // two think they lead: wait for the old one to notice
			}
			leader = m
		}
	}
	return leader
}

func muxApplyN(tb testing.TB, m *muxRaftMember, n int) {
	tb.Helper()
	for i := 0; i < n; i++ {
		if err := m.raft.Apply([]byte("press"), 2*time.Second).Error(); err != nil {
			tb.Fatalf("Apply on %s: %v", m.site, err)
		}
	}
}

func muxWaitCounts(tb testing.TB, members []*muxRaftMember, want uint64) {
	tb.Helper()
	muxWaitFor(tb, 5*time.Second, fmt.Sprintf("%d members to apply %d entries", len(members), want), func() bool {
		for _, m := range members {
			if m.fsm.count() != want {
				return false
			}
		}
		return true
	})
}

// TestTransportRaftCluster runs three raft nodes over real TLS on loopback,
// partitions the leader with Faults, and heals it.
func TestTransportRaftCluster(t *testing.T) {
	muxLeakCheck(t)
	pki := newMuxPKI(t)
	faults := NewFaults()
	var members []*muxRaftMember
	var servers []raft.Server
	for i := range 3 {
		m := startMuxRaftMember(t, newMuxNode(t, pki, muxSite(i), faults, nil))
		members = append(members, m)
		servers = append(servers, raft.Server{ID: raft.ServerID(m.site), Address: raft.ServerAddress(m.addr)})
	}
	if err := members[0].raft.BootstrapCluster(raft.Configuration{Servers: servers}).Error(); err != nil {
		t.Fatalf("BootstrapCluster: %v", err)
	}

	start := time.Now()
	var leader *muxRaftMember
	muxWaitFor(t, 5*time.Second, "a leader", func() bool { leader = muxRaftLeader(members, nil); return leader != nil })
	t.Logf("leader %s elected after %v", leader.site, time.Since(start).Round(time.Millisecond))
	muxApplyN(t, leader, 10)
	muxWaitCounts(t, members, 10)

	start = time.Now()
	faults.Partition(leader.addr)
	old := leader
	var rest []*muxRaftMember
	for _, m := range members {
		if m != old {
			rest = append(rest, m)
		}
	}
	muxWaitFor(t, 5*time.Second, "a new leader", func() bool { leader = muxRaftLeader(rest, nil); return leader != nil })
	t.Logf("leader %s elected %v after partitioning %s", leader.site, time.Since(start).Round(time.Millisecond), old.site)
	muxWaitFor(t, 5*time.Second, "the old leader to step down", func() bool { return old.raft.State() != raft.Leader })
	muxApplyN(t, leader, 5)
	muxWaitCounts(t, rest, 15)
	if n := old.fsm.count(); n != 10 {
		t.Errorf("partitioned node applied %d entries, want 10", n)
	}

	start = time.Now()
	faults.Heal(old.addr)
	muxWaitCounts(t, members, 15)
	t.Logf("converged %v after healing", time.Since(start).Round(time.Millisecond))
	muxWaitFor(t, 5*time.Second, "one leader", func() bool { leader = muxRaftLeader(members, nil); return leader != nil })
	muxApplyN(t, leader, 1)
	muxWaitCounts(t, members, 16)
}
