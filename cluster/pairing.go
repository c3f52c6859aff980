package cluster

import (
	"context"
	"crypto"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"time"
)

// Pairing is what makes a box a member of its customer's cluster, kept in
// the cluster directory beside the PKI files (ca.crt, ca.key, node.crt,
// node.key). Only `pulsegate init` and `pulsegate join` write it.
type Pairing struct {
	SiteID     string   `json:"site_id"`
	Customer   string   `json:"customer"`    // the gossip cluster label
	GossipKeys [][]byte `json:"gossip_keys"` // first is primary
	Peers      []string `json:"peers"`       // gossip addresses to contact at start
	// Bootstrap is set by init: the first start creates the cluster. raft
	// refuses to bootstrap over existing state, so a restart never does.
	Bootstrap bool `json:"bootstrap,omitempty"`
}

const pairingFile = "pairing.json"

// ErrNotPaired means the box was neither initialised nor joined.
var ErrNotPaired = errors.New("this box is not paired: run `pulsegate init` on the first office, `pulsegate join <token>` on the others")

// LoadPairing reads the pairing of the cluster directory dir.
func LoadPairing(dir string) (*Pairing, error) {
	b, err := os.ReadFile(filepath.Join(dir, pairingFile))
	if errors.Is(err, os.ErrNotExist) {
		return nil, ErrNotPaired
	}
	if err != nil {
		return nil, fmt.Errorf("load pairing: %w", err)
	}
	var p Pairing
	if err := json.Unmarshal(b, &p); err != nil {
		return nil, fmt.Errorf("load pairing %s: %w", dir, err)
	}
	if !ValidSiteID(p.SiteID) || p.Customer == "" || len(p.GossipKeys) == 0 {
		return nil, fmt.Errorf("load pairing %s: incomplete", dir)
	}
	return &p, nil
}

func savePairing(dir string, p *Pairing) error {
	b, err := json.MarshalIndent(p, "", "  ")
	if err != nil {
		return fmt.Errorf("save pairing: %w", err)
	}
	return writeFileAtomic(filepath.Join(dir, pairingFile), b, 0o600)
}

// Paired reports whether dir holds a pairing.
func Paired(dir string) bool {
	_, err := os.Stat(filepath.Join(dir, pairingFile))
	return err == nil
}

// Init makes this box the first office of a new cluster for customer: it
// creates the customer's CA, this office's site id and certificate, and the
// gossip key. The next start bootstraps the cluster.
func Init(dir, customer string, now time.Time) (*Pairing, error) {
	if Paired(dir) {
		return nil, fmt.Errorf("init: %s is already paired; remove it to start over", dir)
	}
	if customer == "" {
		return nil, errors.New("init: a customer name is needed (it labels the cluster)")
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("init: %w", err)
	}
	ca, err := NewCA(customer, now)
	if err != nil {
		return nil, fmt.Errorf("init: %w", err)
	}
	if err := SaveCA(dir, ca); err != nil {
		return nil, fmt.Errorf("init: %w", err)
	}
	site := NewSiteID()
	key, err := NewNodeKey()
	if err != nil {
		return nil, fmt.Errorf("init: %w", err)
	}
	certPEM, err := ca.Issue(site, key.Public(), now)
	if err != nil {
		return nil, fmt.Errorf("init: %w", err)
	}
	if err := SaveNodeCert(dir, certPEM, key); err != nil {
		return nil, fmt.Errorf("init: %w", err)
	}
	gk, err := NewGossipKey()
	if err != nil {
		return nil, fmt.Errorf("init: %w", err)
	}
	p := &Pairing{SiteID: site, Customer: customer, GossipKeys: [][]byte{gk}, Bootstrap: true}
	if err := savePairing(dir, p); err != nil {
		return nil, fmt.Errorf("init: %w", err)
	}
	return p, nil
}

// joinRequest is what a joining box sends, over JoinTLS (it has no
// certificate yet; it pins the cluster's CA by the token's hash).
type joinRequest struct {
	TokenID   string `json:"token_id"`
	Secret    string `json:"secret"`
	SiteID    string `json:"site_id"`
	PublicKey []byte `json:"public_key"` // PKIX DER
}

// joinResponse carries everything a new member needs.
type joinResponse struct {
	CertPEM    []byte   `json:"cert"`
	CACertPEM  []byte   `json:"ca_cert"`
	CAKeyPEM   []byte   `json:"ca_key"`
	Customer   string   `json:"customer"`
	GossipKeys [][]byte `json:"gossip_keys"`
	Peers      []string `json:"peers"`
}

const rpcJoin = "join"

// Join pairs this box with an existing cluster using a join token: it
// verifies the cluster by the CA hash in the token, proves the token's
// secret, and receives its certificate and the cluster's keys.
func Join(ctx context.Context, dir, tokenText string, now time.Time) (*Pairing, error) {
	if Paired(dir) {
		return nil, fmt.Errorf("join: %s is already paired; remove it to start over", dir)
	}
	tok, err := ParseToken(tokenText)
	if err != nil {
		return nil, fmt.Errorf("join: %w", err)
	}
	key, err := NewNodeKey()
	if err != nil {
		return nil, fmt.Errorf("join: %w", err)
	}
	pub, err := x509.MarshalPKIXPublicKey(key.Public())
	if err != nil {
		return nil, fmt.Errorf("join: %w", err)
	}
	site := NewSiteID()
	req, _ := json.Marshal(joinRequest{TokenID: tok.ID, Secret: tok.Secret, SiteID: site, PublicKey: pub})
	var lastErr error
	for _, peer := range tok.Peers {
		body, err := Call(ctx, peer, JoinTLS(tok.CAHash), rpcJoin, req)
		if err != nil {
			lastErr = fmt.Errorf("join via %s: %w", peer, err)
			var re *RemoteError
			if errors.As(err, &re) {
				return nil, lastErr // the cluster said no: another peer will too
			}
			continue
		}
		var resp joinResponse
		if err := json.Unmarshal(body, &resp); err != nil {
			return nil, fmt.Errorf("join via %s: bad answer: %w", peer, err)
		}
		return savePaired(dir, site, key, resp)
	}
	if lastErr == nil {
		lastErr = errors.New("join: the token names no peer")
	}
	return nil, lastErr
}

func savePaired(dir, site string, key crypto.Signer, resp joinResponse) (*Pairing, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("join: %w", err)
	}
	if err := writeFileAtomic(filepath.Join(dir, caCertFile), resp.CACertPEM, 0o644); err != nil {
		return nil, fmt.Errorf("join: %w", err)
	}
	if err := writeFileAtomic(filepath.Join(dir, caKeyFile), resp.CAKeyPEM, 0o600); err != nil {
		return nil, fmt.Errorf("join: %w", err)
	}
	if _, err := LoadCA(dir); err != nil {
		return nil, fmt.Errorf("join: the cluster sent a bad CA: %w", err)
	}
	if err := SaveNodeCert(dir, resp.CertPEM, key); err != nil {
		return nil, fmt.Errorf("join: %w", err)
	}
	nc, err := LoadNodeCert(dir)
	if err != nil || nc.SiteID != site {
		return nil, fmt.Errorf("join: the cluster sent a certificate for another site (%v)", err)
	}
	p := &Pairing{SiteID: site, Customer: resp.Customer, GossipKeys: resp.GossipKeys, Peers: resp.Peers}
	if err := savePairing(dir, p); err != nil {
		return nil, fmt.Errorf("join: %w", err)
	}
	return p, nil
}
