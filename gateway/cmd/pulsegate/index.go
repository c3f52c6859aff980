package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/pulsegate/pulsegate/sync/index"
	"github.com/pulsegate/pulsegate/sync/regional"
)

const indexUsage = `usage: pulsegate index [flags]             run the central index (HTTPS)
       pulsegate index token create --customer ID [--name NAME] [--ttl 72h] [--retention-months N]
       pulsegate index hq-key create --customer ID
       pulsegate index hq-key revoke --customer ID --id KEY-ID
       pulsegate index customer --customer ID --retention-months N
       pulsegate index erase --customer ID [--site SITE] --yes
       pulsegate index pull --key KEY --region R [--from P --to P] [--format csv|json]

The operator commands open the index's store directly: run them on the index
host, with the same --data-dir (and --db) as the server.
`

// runIndex runs the central index or one of its operator commands.
func runIndex(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	if len(args) > 0 {
		switch args[0] {
		case "token":
			if len(args) < 2 || args[1] != "create" {
				return errors.New("usage: pulsegate index token create --customer ID [flags]")
			}
			return runIndexTokenCreate(ctx, args[2:], stdout, stderr)
		case "hq-key":
			if len(args) >= 2 && args[1] == "create" {
				return runIndexHQKeyCreate(ctx, args[2:], stdout, stderr)
			}
			if len(args) >= 2 && args[1] == "revoke" {
				return runIndexHQKeyRevoke(ctx, args[2:], stdout, stderr)
			}
			return errors.New("usage: pulsegate index hq-key create|revoke --customer ID [flags]")
		case "customer":
			return runIndexCustomer(ctx, args[1:], stdout, stderr)
		case "erase":
			return runIndexErase(ctx, args[1:], stdout, stderr)
		case "pull":
			return runIndexPull(ctx, args[1:], stdout, stderr)
		case "help", "-h", "--help":
			fmt.Fprint(stdout, indexUsage)
			return nil
		}
	}
	return runIndexServer(ctx, args, stdout, stderr)
}

// indexStoreFlags are the flags every command that opens the store shares.
type indexStoreFlags struct {
	dataDir *string
	db      *string
}

func addIndexStoreFlags(fs *flag.FlagSet) indexStoreFlags {
	return indexStoreFlags{
		dataDir: fs.String("data-dir", "index-data", "`directory` of the index's data (SQLite file, TLS identity)"),
		db:      fs.String("db", "", "PostgreSQL `URL` (postgres://…); default: SQLite in --data-dir"),
	}
}

func (f indexStoreFlags) open(ctx context.Context) (*index.Store, error) {
	if err := os.MkdirAll(*f.dataDir, 0o700); err != nil {
		return nil, fmt.Errorf("index data dir: %w", err)
	}
	if *f.db != "" {
		return index.OpenPostgres(ctx, *f.db)
	}
	return index.OpenSQLite(filepath.Join(*f.dataDir, "index.db"))
}

func (f indexStoreFlags) identity(hosts []string) (*index.Identity, error) {
	return index.LoadOrCreateIdentity(filepath.Join(*f.dataDir, "tls"), hosts, time.Now())
}

func runIndexServer(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("index", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() { fmt.Fprint(stderr, indexUsage); fs.PrintDefaults() }
	sf := addIndexStoreFlags(fs)
	var (
		listen    = fs.String("listen", "127.0.0.1:8443", "`address` to serve HTTPS on")
		publicURL = fs.String("public-url", "", "the `URL` clusters and HQ reach the index at (default: https://<listen>)")
		every     = fs.Duration("retention-every", time.Hour, "how often to apply retention")
		logLevel  = fs.String("log-level", "info", "debug, info, warn or error")
		def       = regional.DefaultRules()
		minSites  = fs.Int("min-sites", def.MinSites, "least offices behind a published regional cell (may only be raised)")
		minPress  = fs.Int64("min-presses", def.MinPresses, "least presses behind a published regional cell (may only be raised)")
		maxShare  = fs.Float64("max-site-share", def.MaxSiteShare, "largest share of a cell one office may hold (may only be lowered)")
		hosts     stringList
	)
	fs.Var(&hosts, "host", "a DNS `name or IP` of the index for its certificate, repeatable (used when the certificate is created)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("index: unexpected arguments %q", fs.Args())
	}
	log := newLogger(stderr, *logLevel)
	rules := regional.Rules{MinSites: *minSites, MinPresses: *minPress, MaxSiteShare: *maxShare}
	if err := rules.Validate(); err != nil {
		return fmt.Errorf("index: %w", err)
	}

	// Open the store and the identity first: if either fails, nothing listens.
	store, err := sf.open(ctx)
	if err != nil {
		return err
	}
	defer store.Close() // last: the server uses it until it has stopped
	id, err := sf.identity(hosts)
	if err != nil {
		return err
	}
	srv, err := index.NewServer(index.ServerConfig{Store: store, Identity: id, Rules: rules, RetentionEvery: *every, Logger: log})
	if err != nil {
		return err
	}
	defer srv.Close()
	ln, err := net.Listen("tcp", *listen)
	if err != nil {
		return fmt.Errorf("index: %w", err)
	}
	url := *publicURL
	if url == "" {
		url = "https://" + ln.Addr().String()
	}
	fmt.Fprintf(stdout, "Pulsegate index is running at %s (certificate pin %s)\n", url, id.Pin())
	// Serve returns once ctx is done (Ctrl-C, SIGTERM) and the server has
	// shut down; the deferred Close and store.Close follow in that order.
	err = srv.Serve(ctx, ln)
	log.Info("index stopped")
	return err
}

func runIndexTokenCreate(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("index token create", flag.ContinueOnError)
	fs.SetOutput(stderr)
	sf := addIndexStoreFlags(fs)
	var (
		customer  = fs.String("customer", "", "the customer's `id` (created if unknown)")
		name      = fs.String("name", "", "the customer's display `name`, when it is created")
		ttl       = fs.Duration("ttl", 72*time.Hour, "how long the token stays valid")
		retention = fs.Int("retention-months", 0, "months to keep the customer's releases (default 25 for a new customer)")
		publicURL = fs.String("public-url", "https://127.0.0.1:8443", "the `URL` clusters reach the index at")
	)
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *customer == "" || *ttl <= 0 {
		return errors.New("index token create: --customer is required and --ttl must be positive")
	}
	store, err := sf.open(ctx)
	if err != nil {
		return err
	}
	defer store.Close()
	id, err := sf.identity(nil)
	if err != nil {
		return err
	}
	if err := ensureCustomer(ctx, store, *customer, *name, *retention); err != nil {
		return err
	}
	tok, err := index.NewEnrolToken(*publicURL, id.Pin())
	if err != nil {
		return err
	}
	now := time.Now()
	if err := store.AddEnrolToken(ctx, *customer, tok.ID, index.HashSecret(tok.Secret), now.Add(*ttl)); err != nil {
		return err
	}
	if err := store.Audit(ctx, *customer, "operator", "token-create", "enrolment token "+tok.ID, now); err != nil {
		return err
	}
	fmt.Fprintln(stdout, tok.String())
	fmt.Fprintf(stderr, "One-time enrolment token for customer %q, valid until %s.\n", *customer, now.Add(*ttl).Local().Format(time.RFC1123))
	return nil
}

// ensureCustomer creates the customer if it is unknown; a retention given
// for a known customer is set.
func ensureCustomer(ctx context.Context, store *index.Store, customer, name string, retention int) error {
	if retention < 0 {
		return errors.New("--retention-months must be positive")
	}
	if name == "" {
		name = customer
	}
	err := store.CreateCustomer(ctx, customer, name, retention)
	if errors.Is(err, index.ErrCustomerExists) {
		if retention > 0 {
			return store.SetRetention(ctx, customer, retention)
		}
		return nil
	}
	return err
}

func runIndexHQKeyCreate(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("index hq-key create", flag.ContinueOnError)
	fs.SetOutput(stderr)
	sf := addIndexStoreFlags(fs)
	customer := fs.String("customer", "", "the customer's `id`")
	publicURL := fs.String("public-url", "https://127.0.0.1:8443", "the `URL` HQ reaches the index at")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *customer == "" {
		return errors.New("index hq-key create: --customer is required")
	}
	store, err := sf.open(ctx)
	if err != nil {
		return err
	}
	defer store.Close()
	id, err := sf.identity(nil)
	if err != nil {
		return err
	}
	key, err := index.NewHQKey(*publicURL, id.Pin())
	if err != nil {
		return err
	}
	now := time.Now()
	if err := store.AddHQKey(ctx, *customer, key.ID, index.HashSecret(key.Secret), now); err != nil {
		return err
	}
	if err := store.Audit(ctx, *customer, "operator", "hq-key-create", "hq key "+key.ID, now); err != nil {
		return err
	}
	fmt.Fprintln(stdout, key.String())
	fmt.Fprintf(stderr, "HQ key %s for customer %q. Pull with: pulsegate index pull --key <key> --region R, or log in at %s/hq/\n",
		key.ID, *customer, strings.TrimSuffix(*publicURL, "/"))
	return nil
}

func runIndexHQKeyRevoke(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("index hq-key revoke", flag.ContinueOnError)
	fs.SetOutput(stderr)
	sf := addIndexStoreFlags(fs)
	customer := fs.String("customer", "", "the customer's `id`")
	keyID := fs.String("id", "", "the key's `id` (as printed when it was created)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *customer == "" || *keyID == "" {
		return errors.New("index hq-key revoke: --customer and --id are required")
	}
	store, err := sf.open(ctx)
	if err != nil {
		return err
	}
	defer store.Close()
	now := time.Now()
	if err := store.RevokeHQKey(ctx, *customer, *keyID, now); err != nil {
		return err
	}
	if err := store.Audit(ctx, *customer, "operator", "hq-key-revoke", "hq key "+*keyID, now); err != nil {
		return err
	}
	fmt.Fprintf(stdout, "Revoked HQ key %s of customer %q.\n", *keyID, *customer)
	return nil
}

func runIndexCustomer(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("index customer", flag.ContinueOnError)
	fs.SetOutput(stderr)
	sf := addIndexStoreFlags(fs)
	customer := fs.String("customer", "", "the customer's `id`")
	retention := fs.Int("retention-months", 0, "months to keep the customer's releases after their period ended")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *customer == "" || *retention <= 0 {
		return errors.New("index customer: --customer and a positive --retention-months are required")
	}
	store, err := sf.open(ctx)
	if err != nil {
		return err
	}
	defer store.Close()
	now := time.Now()
	if err := store.SetRetention(ctx, *customer, *retention); err != nil {
		return err
	}
	if err := store.Audit(ctx, *customer, "operator", "retention-set", fmt.Sprintf("%d months", *retention), now); err != nil {
		return err
	}
	fmt.Fprintf(stdout, "Customer %q: releases are kept %d months after their period ended.\n", *customer, *retention)
	return nil
}

func runIndexErase(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("index erase", flag.ContinueOnError)
	fs.SetOutput(stderr)
	sf := addIndexStoreFlags(fs)
	customer := fs.String("customer", "", "the customer's `id`")
	site := fs.String("site", "", "erase only this `site` (default: the whole customer)")
	yes := fs.Bool("yes", false, "really erase: this cannot be undone")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *customer == "" {
		return errors.New("index erase: --customer is required")
	}
	what := fmt.Sprintf("everything held for customer %q except its audit trail", *customer)
	if *site != "" {
		what = fmt.Sprintf("site %s of customer %q", *site, *customer)
	}
	if !*yes {
		return fmt.Errorf("index erase: this would erase %s, for good; add --yes to do it", what)
	}
	store, err := sf.open(ctx)
	if err != nil {
		return err
	}
	defer store.Close()
	now := time.Now()
	var n int
	action, detail := "erase-customer", "customer"
	if *site != "" {
		action, detail = "erase-site", "site "+*site
		n, err = store.EraseSite(ctx, *customer, *site, now)
	} else {
		n, err = store.EraseCustomer(ctx, *customer, now)
	}
	if err != nil {
		return err
	}
	if err := store.Audit(ctx, *customer, "operator", action, fmt.Sprintf("%s, %d rows deleted", detail, n), now); err != nil {
		return err
	}
	fmt.Fprintf(stdout, "Erased %s (%d rows).\n", what, n)
	if *site == "" {
		fmt.Fprintln(stdout, "Restart the index so that it forgets the customer's publication state held in memory.")
	}
	return nil
}

func runIndexPull(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("index pull", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var (
		keyText = fs.String("key", "", "the HQ `key` (default: $PULSEGATE_HQ_KEY)")
		region  = fs.String("region", "", "the `region`")
		from    = fs.String("from", "", "first `period` (2026-01 or 2026-W05; default: the last 12 closed months)")
		to      = fs.String("to", "", "last `period`")
		format  = fs.String("format", "csv", "csv or json")
	)
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *keyText == "" {
		*keyText = os.Getenv("PULSEGATE_HQ_KEY")
	}
	if *keyText == "" || *region == "" {
		return errors.New("index pull: --key (or PULSEGATE_HQ_KEY) and --region are required")
	}
	if *format != "csv" && *format != "json" {
		return errors.New("index pull: --format must be csv or json")
	}
	key, err := index.ParseHQKey(strings.TrimSpace(*keyText))
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(ctx, 5*time.Minute)
	defer cancel()
	return index.Pull(ctx, key, *region, *from, *to, *format, stdout)
}
