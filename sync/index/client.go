package index

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/pulsegate/pulsegate/sync/wire"
)

// ErrRejected wraps the index's 4xx answers to an upload: the request will
// not succeed by sending it again. Other errors (5xx, the network) are worth
// a retry.
var ErrRejected = errors.New("index rejected the upload")

// errPinMismatch is what a pinned connection to the wrong server fails with.
var errPinMismatch = errors.New("index certificate does not match the pinned key")

// Credentials are what a cluster keeps after enrolling: where the index is,
// its pinned key, and the client certificate and key that speak for the
// customer. KeyPEM is a secret.
type Credentials struct {
	URL      string `json:"url"`
	Pin      string `json:"pin"`
	Customer string `json:"customer"`
	CertPEM  []byte `json:"cert_pem"`
	KeyPEM   []byte `json:"key_pem"`
}

// pinnedTLS accepts only a server whose leaf certificate's public key hashes
// to pin. Pinning replaces both the CA and the host name check, so the index
// needs neither a public certificate nor a stable name.
func pinnedTLS(pin string) *tls.Config {
	want := []byte(pin)
	return &tls.Config{
		MinVersion: tls.VersionTLS12,
		// Verification is not skipped: VerifyConnection checks the pin.
		InsecureSkipVerify: true,
		VerifyConnection: func(cs tls.ConnectionState) error {
			if len(cs.PeerCertificates) == 0 {
				return errPinMismatch
			}
			sum := sha256.Sum256(cs.PeerCertificates[0].RawSubjectPublicKeyInfo)
			got := []byte(pinPrefix + hex.EncodeToString(sum[:]))
			if subtle.ConstantTimeCompare(got, want) != 1 {
				return errPinMismatch
			}
			return nil
		},
	}
}

func newTransport(cfg *tls.Config) *http.Transport {
	return &http.Transport{
		Proxy:                 http.ProxyFromEnvironment,
		DialContext:           (&net.Dialer{Timeout: 30 * time.Second, KeepAlive: 30 * time.Second}).DialContext,
		TLSClientConfig:       cfg,
		ForceAttemptHTTP2:     true,
		TLSHandshakeTimeout:   15 * time.Second,
		ResponseHeaderTimeout: 2 * time.Minute,
		IdleConnTimeout:       90 * time.Second,
		MaxIdleConns:          4,
	}
}

// apiURL joins the index's base URL and an API path.
func apiURL(base, path string) string { return strings.TrimSuffix(base, "/") + path }

// answerError reads the {"error"} body of a failed answer.
func answerError(resp *http.Response) string {
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 16<<10))
	var e struct {
		Error string `json:"error"`
	}
	if json.Unmarshal(body, &e) == nil && e.Error != "" {
		return resp.Status + ": " + e.Error
	}
	return resp.Status
}

// Enrol enrols a cluster with the index named by tok: it makes a new ECDSA
// P-256 key, sends a certificate request with the token's id and secret over
// a connection pinned to tok.Pin, and returns the credentials to keep. label
// is the cluster's name for itself, kept in the index's audit trail. A 4xx
// answer (unknown, used or expired token) wraps ErrRejected.
func Enrol(ctx context.Context, tok EnrolToken, label string) (Credentials, error) {
	if err := credential(tok).check(); err != nil {
		return Credentials{}, fmt.Errorf("enrol: %w", err)
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return Credentials{}, fmt.Errorf("enrol: %w", err)
	}
	csrDER, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{}, key)
	if err != nil {
		return Credentials{}, fmt.Errorf("enrol: certificate request: %w", err)
	}
	body, _ := json.Marshal(enrolRequest{
		TokenID: tok.ID, Secret: tok.Secret, Label: label,
		CSR: string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: csrDER})),
	})
	tr := newTransport(pinnedTLS(tok.Pin))
	defer tr.CloseIdleConnections()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, apiURL(tok.URL, "/api/v1/enrol"), bytes.NewReader(body))
	if err != nil {
		return Credentials{}, fmt.Errorf("enrol: %w", err)
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := (&http.Client{Transport: tr}).Do(req)
	if err != nil {
		return Credentials{}, fmt.Errorf("enrol with %s: %w", tok.URL, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		msg := answerError(resp)
		if resp.StatusCode >= 400 && resp.StatusCode < 500 {
			return Credentials{}, fmt.Errorf("enrol with %s: %w: %s", tok.URL, ErrRejected, msg)
		}
		return Credentials{}, fmt.Errorf("enrol with %s: %s", tok.URL, msg)
	}
	var out enrolResponse
	if err := json.NewDecoder(io.LimitReader(resp.Body, 64<<10)).Decode(&out); err != nil {
		return Credentials{}, fmt.Errorf("enrol with %s: bad answer: %w", tok.URL, err)
	}
	keyDER, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return Credentials{}, fmt.Errorf("enrol: %w", err)
	}
	cred := Credentials{
		URL: tok.URL, Pin: tok.Pin, Customer: out.Customer,
		CertPEM: []byte(out.Certificate),
		KeyPEM:  pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: keyDER}),
	}
	// What came back must be a certificate for our key, naming the customer
	// the index says.
	if _, err := cred.keyPair(); err != nil {
		return Credentials{}, fmt.Errorf("enrol with %s: %w", tok.URL, err)
	}
	return cred, nil
}

// keyPair checks the credentials and returns the client certificate.
func (c Credentials) keyPair() (tls.Certificate, error) {
	if err := checkIndexURL(c.URL); err != nil {
		return tls.Certificate{}, fmt.Errorf("credentials: %w", err)
	}
	if err := checkPin(c.Pin); err != nil {
		return tls.Certificate{}, fmt.Errorf("credentials: %w", err)
	}
	pair, err := tls.X509KeyPair(c.CertPEM, c.KeyPEM)
	if err != nil {
		return tls.Certificate{}, fmt.Errorf("credentials: %w", err)
	}
	customer, err := CustomerOf(pair.Leaf)
	if err != nil {
		return tls.Certificate{}, fmt.Errorf("credentials: %w", err)
	}
	if customer != c.Customer {
		return tls.Certificate{}, fmt.Errorf("credentials: the certificate is for customer %q, not %q", customer, c.Customer)
	}
	return pair, nil
}

// Client uploads a cluster's batches to the index, over one pinned,
// kept-alive connection pool, with the client certificate.
type Client struct {
	cred Credentials
	tr   *http.Transport
	http *http.Client
}

// NewClient checks cred and returns a client.
func NewClient(cred Credentials) (*Client, error) {
	pair, err := cred.keyPair()
	if err != nil {
		return nil, err
	}
	cfg := pinnedTLS(cred.Pin)
	cfg.Certificates = []tls.Certificate{pair}
	tr := newTransport(cfg)
	return &Client{cred: cred, tr: tr, http: &http.Client{Transport: tr}}, nil
}

// Close closes the client's idle connections.
func (c *Client) Close() error {
	c.tr.CloseIdleConnections()
	return nil
}

// Upload sends one batch. A 4xx answer (an invalid batch, an erased
// customer) wraps ErrRejected and will not succeed by retrying; other errors
// may.
func (c *Client) Upload(ctx context.Context, b *wire.Batch) (UpsertStats, error) {
	body, err := wire.Encode(b)
	if err != nil {
		return UpsertStats{}, fmt.Errorf("upload: %w", err)
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, apiURL(c.cred.URL, "/api/v1/batches"), bytes.NewReader(body))
	if err != nil {
		return UpsertStats{}, fmt.Errorf("upload: %w", err)
	}
	req.Header.Set("Content-Type", "application/x-msgpack")
	resp, err := c.http.Do(req)
	if err != nil {
		return UpsertStats{}, fmt.Errorf("upload to %s: %w", c.cred.URL, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		msg := answerError(resp)
		if resp.StatusCode >= 400 && resp.StatusCode < 500 {
			return UpsertStats{}, fmt.Errorf("upload batch %q: %w: %s", b.BatchID, ErrRejected, msg)
		}
		return UpsertStats{}, fmt.Errorf("upload batch %q: %s", b.BatchID, msg)
	}
	var st uploadResponse
	if err := json.NewDecoder(io.LimitReader(resp.Body, 16<<10)).Decode(&st); err != nil {
		return UpsertStats{}, fmt.Errorf("upload batch %q: bad answer: %w", b.BatchID, err)
	}
	return UpsertStats(st), nil
}

// Pull writes the regional index of region over [from, to] in format ("json"
// or "csv") to w, authenticated by key over a connection pinned to key.Pin.
// Empty from and to ask for the index's default range.
func Pull(ctx context.Context, key HQKey, region, from, to, format string, w io.Writer) error {
	if err := credential(key).check(); err != nil {
		return fmt.Errorf("pull: %w", err)
	}
	q := url.Values{}
	if from != "" {
		q.Set("from", from)
	}
	if to != "" {
		q.Set("to", to)
	}
	if format != "" {
		q.Set("format", format)
	}
	u := apiURL(key.URL, "/api/v1/regions/"+url.PathEscape(region)+"/index")
	if len(q) > 0 {
		u += "?" + q.Encode()
	}
	tr := newTransport(pinnedTLS(key.Pin))
	defer tr.CloseIdleConnections()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return fmt.Errorf("pull: %w", err)
	}
	req.Header.Set("Authorization", "Bearer "+key.String())
	resp, err := (&http.Client{Transport: tr}).Do(req)
	if err != nil {
		return fmt.Errorf("pull from %s: %w", key.URL, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("pull region %s from %s: %s", region, key.URL, answerError(resp))
	}
	if _, err := io.Copy(w, resp.Body); err != nil {
		return fmt.Errorf("pull region %s: %w", region, err)
	}
	return nil
}
