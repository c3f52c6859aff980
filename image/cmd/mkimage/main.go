// Command mkimage builds the Raspberry Pi appliance image (see package
// github.com/pulsegate/pulsegate/image). `make image` runs it.
//
//	go run ./image/cmd/mkimage -out bin/image
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"time"

	"github.com/pulsegate/pulsegate/image"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()
	if err := run(ctx, os.Args[1:]); err != nil {
		fmt.Fprintln(os.Stderr, "mkimage:", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, args []string) error {
	fs := flag.NewFlagSet("mkimage", flag.ContinueOnError)
	var (
		out     = fs.String("out", "bin/image", "output `directory`")
		name    = fs.String("name", "pulsegate-rpi-arm64", "image base `name`")
		keepRaw = fs.Bool("keep-raw", false, "keep the uncompressed .img next to the .img.zst")
		module  = fs.String("module", ".", "the pulsegate module's `directory`")
	)
	if err := fs.Parse(args); err != nil {
		return err
	}
	start := time.Now()
	res, err := image.Build(ctx, image.Config{
		ModuleDir: *module, OutDir: *out, Name: *name, KeepRaw: *keepRaw, Progress: os.Stdout,
	})
	if err != nil {
		return err
	}
	fmt.Printf("done in %s: raw %d MiB (%d MiB used), compressed %.1f MiB\n",
		time.Since(start).Round(100*time.Millisecond), res.RawSize>>20, res.UsedSize>>20, float64(res.ZstSize)/(1<<20))
	return nil
}
