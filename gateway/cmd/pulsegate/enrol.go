package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"strings"
	"time"
)

// runEnrol serves `pulsegate enrol <token>`: the running box enrols the
// cluster with the central index (see Gateway.EnrolIndex).
func runEnrol(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("enrol", flag.ContinueOnError)
	fs.SetOutput(stderr)
	dataDir := dataDirFlag(fs)
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() != 1 {
		return errors.New("usage: pulsegate enrol [--data-dir data] <token from pulsegate index token create>")
	}
	body, _ := json.Marshal(struct {
		Token string `json:"token"`
	}{strings.TrimSpace(fs.Arg(0))})
	ctx, cancel := context.WithTimeout(ctx, 60*time.Second)
	defer cancel()
	var out struct {
		Customer string `json:"customer"`
	}
	if err := askBox(ctx, *dataDir, http.MethodPost, "/api/index/enrol", bytes.NewReader(body), &out); err != nil {
		return fmt.Errorf("enrol: %w", err)
	}
	fmt.Fprintf(stdout, "Enrolled with the index as customer %q. The cluster's leader uploads closed periods from now on.\n", out.Customer)
	return nil
}

// testClock lets tests and demos run the box at another moment:
// PULSEGATE_TEST_CLOCK_OFFSET=-5000h shifts its clock by that duration, and
// it runs on at the real pace. It exists so that an end-to-end test can
// watch a period close (every process given the same offset agrees on the
// time); an appliance never sets it, and the box warns when it is set.
func testClock(log *slog.Logger) (func() time.Time, error) {
	v := os.Getenv("PULSEGATE_TEST_CLOCK_OFFSET")
	if v == "" {
		return time.Now, nil
	}
	off, err := time.ParseDuration(v)
	if err != nil {
		return nil, fmt.Errorf("PULSEGATE_TEST_CLOCK_OFFSET %q: want a duration such as -5000h: %w", v, err)
	}
	log.Warn("the clock is shifted for a test (PULSEGATE_TEST_CLOCK_OFFSET)", "offset", off, "now", time.Now().Add(off).Format(time.RFC3339))
	return func() time.Time { return time.Now().Add(off) }, nil
}
