// Package image turns the pulsegate binary into a bootable SD-card image for
// the Raspberry Pi 3, 4, 5 and Zero 2 W (arm64), in the layout gokrazy's init
// expects: an MBR disk whose partition 1 is the FAT boot file system
// (firmware, kernel, device trees, cmdline.txt, config.txt), 2 and 3 the A/B
// root slots (read-only SquashFS; 3 is left empty for updates) and 4 the
// ext4 /perm file system that keeps the gateway's data.
//
// The packer writes each file system into a plain file with Debian's tools
// (mtools, squashfs-tools, e2fsprogs) — nothing is mounted, nothing needs
// root — and then places them into the disk image. Every input is pinned in
// go.mod and every timestamp, identifier and ordering is fixed, so two builds
// of one commit give the same bytes.
package image

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"
)

// Epoch is the time stamped on every file in every file system of the image
// (SOURCE_DATE_EPOCH): 1980-01-01, the earliest time FAT can hold.
const Epoch = 315532800

// DiskSignature is the MBR disk identifier. The kernel command line names the
// root file system by it (root=PARTUUID=50475431-02), and gokrazy's init finds
// the disk, and so /perm (partition 4), the same way, whatever the disk is
// called on the board (mmcblk0, sda, vda under QEMU).
const DiskSignature = 0x50475431 // "PGT1"

// Partition sizes. The root slots hold the binaries and kernel modules
// (about 40 MB); /perm holds the count store and grows slowly.
const (
	mib       = 1 << 20
	firstLBA  = 4 * mib // alignment for SD cards' erase blocks
	bootSize  = 128 * mib
	rootSize  = 256 * mib
	permSize  = 512 * mib
	DiskSize  = firstLBA + bootSize + 2*rootSize + permSize
	sectorLen = 512
)

// Partition is one entry of the image's partition table, in bytes.
type Partition struct {
	Number int
	Type   byte
	Offset int64
	Size   int64
}

// Layout is the image's partition table: boot, root A, root B, perm.
var Layout = []Partition{
	{1, 0x0c, firstLBA, bootSize}, // FAT32 (LBA)
	{2, 0x83, firstLBA + bootSize, rootSize},
	{3, 0x83, firstLBA + bootSize + rootSize, rootSize},
	{4, 0x83, firstLBA + bootSize + 2*rootSize, permSize},
}

// RootPARTUUID names partition n on the kernel command line.
func RootPARTUUID(n int) string { return fmt.Sprintf("PARTUUID=%08x-%02d", DiskSignature, n) }

// Cmdline is the kernel command line of the image on a Raspberry Pi. The
// firmware replaces serial0 with the board's console UART.
var Cmdline = "console=serial0,115200 console=tty1 root=" + RootPARTUUID(2) +
	" init=/gokrazy/init rootwait panic=10 oops=panic"

// configTxt is the firmware's configuration, shared by every covered board.
const configTxt = `# Pulsegate appliance: Raspberry Pi 3, 4, 5 and Zero 2 W, 64-bit.
arm_64bit=1
kernel=vmlinuz
# The serial console (GPIO 14/15) shows the UI address and fingerprint.
enable_uart=1
disable_splash=1
`

// Config says what to build and where.
type Config struct {
	// ModuleDir is the pulsegate module's root (where go.mod is).
	ModuleDir string
	// OutDir receives NAME.img.zst and NAME.img.zst.sha256 (and NAME.img
	// with KeepRaw).
	OutDir string
	// Name is the images' base name; empty means "pulsegate-rpi-arm64".
	Name string
	// KeepRaw keeps the uncompressed image (tests boot it).
	KeepRaw bool
	// Progress receives one line per step and the compression's progress;
	// nil discards it.
	Progress io.Writer
}

// Result describes a built image.
type Result struct {
	Raw        string // uncompressed image; removed unless KeepRaw
	Compressed string // .img.zst
	SHA256     string // hex digest of the .img.zst
	RawSize    int64  // the disk's size
	UsedSize   int64  // bytes of the disk that are not zero
	ZstSize    int64
}

// Build makes the image. It needs go, mformat/mcopy/mmd (mtools), mksquashfs
// and mke2fs on $PATH; see Tools.
func Build(ctx context.Context, cfg Config) (*Result, error) {
	if cfg.Name == "" {
		cfg.Name = "pulsegate-rpi-arm64"
	}
	if cfg.Progress == nil {
		cfg.Progress = io.Discard
	}
	if err := CheckTools(); err != nil {
		return nil, err
	}
	if err := os.MkdirAll(cfg.OutDir, 0o755); err != nil {
		return nil, fmt.Errorf("make out dir: %w", err)
	}
	work, err := os.MkdirTemp("", "pulsegate-image-")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(work)

	step := func(n int, format string, args ...any) {
		fmt.Fprintf(cfg.Progress, "[%d/6] %s\n", n, fmt.Sprintf(format, args...))
	}

	step(1, "locating kernel and firmware (pinned in go.mod)")
	dirs, err := moduleDirs(ctx, cfg.ModuleDir, "github.com/gokrazy/kernel.rpi", "github.com/gokrazy/firmware")
	if err != nil {
		return nil, err
	}
	kernelDir, firmwareDir := dirs[0], dirs[1]

	step(2, "building init, dhcp, ntp, randomd, launch and pulsegate for linux/arm64")
	bin := filepath.Join(work, "bin")
	if err := buildBinaries(ctx, cfg.ModuleDir, bin); err != nil {
		return nil, err
	}

	step(3, "writing the boot file system (FAT32)")
	bootImg := filepath.Join(work, "boot.fat")
	if err := writeBoot(ctx, work, bootImg, kernelDir, firmwareDir); err != nil {
		return nil, err
	}

	step(4, "writing the root file system (SquashFS)")
	rootImg := filepath.Join(work, "root.squashfs")
	if err := writeRoot(ctx, work, rootImg, bin, kernelDir); err != nil {
		return nil, err
	}

	step(5, "writing the /perm file system (ext4)")
	permImg := filepath.Join(work, "perm.ext4")
	if err := writePerm(ctx, work, permImg); err != nil {
		return nil, err
	}

	raw := filepath.Join(cfg.OutDir, cfg.Name+".img")
	used, err := writeDisk(raw, map[int]string{1: bootImg, 2: rootImg, 4: permImg})
	if err != nil {
		return nil, err
	}
	step(6, "compressing %s (%d MiB, %d MiB used)", filepath.Base(raw), DiskSize/mib, used/mib)
	zst := raw + ".zst"
	sum, zsize, err := compress(raw, zst, cfg.Progress)
	if err != nil {
		return nil, err
	}
	line := fmt.Sprintf("%s  %s\n", sum, filepath.Base(zst))
	if err := os.WriteFile(zst+".sha256", []byte(line), 0o644); err != nil {
		return nil, err
	}
	if !cfg.KeepRaw {
		if err := os.Remove(raw); err != nil {
			return nil, err
		}
	}
	fmt.Fprintf(cfg.Progress, "wrote %s (%d MiB), sha256 %s\n", zst, zsize/mib, sum)
	return &Result{Raw: raw, Compressed: zst, SHA256: sum, RawSize: DiskSize, UsedSize: used, ZstSize: zsize}, nil
}

// Tools are the programs Build runs besides go.
var Tools = []string{"mformat", "mmd", "mcopy", "mksquashfs", "mke2fs"}

// ErrMissingTool is returned (wrapped) when a packer tool is not installed.
var ErrMissingTool = errors.New("missing packer tool")

// CheckTools reports the first tool of Tools that cannot be found.
func CheckTools() error {
	for _, t := range Tools {
		if _, err := lookTool(t); err != nil {
			return fmt.Errorf("%w: %s (Debian: apt-get install mtools squashfs-tools e2fsprogs)", ErrMissingTool, t)
		}
	}
	return nil
}

// lookTool finds a tool on $PATH, or in the sbin directories, which a
// user's $PATH often lacks (Debian installs mke2fs in /sbin) although
// these tools need no root to write into a file.
func lookTool(name string) (string, error) {
	if p, err := exec.LookPath(name); err == nil {
		return p, nil
	}
	for _, dir := range []string{"/usr/sbin", "/sbin", "/usr/local/sbin"} {
		p := filepath.Join(dir, name)
		if st, err := os.Stat(p); err == nil && !st.IsDir() && st.Mode()&0o111 != 0 {
			return p, nil
		}
	}
	return "", exec.ErrNotFound
}

func moduleDirs(ctx context.Context, moduleDir string, pkgs ...string) ([]string, error) {
	out, err := command(ctx, moduleDir, nil, "go", append([]string{"list", "-f", "{{.Dir}}"}, pkgs...)...)
	if err != nil {
		return nil, err
	}
	dirs := strings.Fields(string(out))
	if len(dirs) != len(pkgs) {
		return nil, fmt.Errorf("go list %v: got %q", pkgs, dirs)
	}
	return dirs, nil
}

// binaries are the programs of the root file system, by destination.
var binaries = []struct{ pkg, dest string }{
	{"./image/cmd/init", "gokrazy/init"},
	{"github.com/gokrazy/gokrazy/cmd/dhcp", "gokrazy/dhcp"},
	{"github.com/gokrazy/gokrazy/cmd/ntp", "gokrazy/ntp"},
	{"github.com/gokrazy/gokrazy/cmd/randomd", "gokrazy/randomd"},
	{"./image/cmd/launch", "user/launch"},
	{"./gateway/cmd/pulsegate", "user/pulsegate"},
}

func buildBinaries(ctx context.Context, moduleDir, bin string) error {
	args := []string{"build", "-trimpath", "-buildvcs=false", "-ldflags=-s -w -buildid=", "-o", bin + "/"}
	for _, b := range binaries {
		args = append(args, b.pkg)
	}
	env := []string{"CGO_ENABLED=0", "GOOS=linux", "GOARCH=arm64", "GOARM64=v8.0"}
	_, err := command(ctx, moduleDir, env, "go", args...)
	return err
}

// command runs name with args in dir, SOURCE_DATE_EPOCH set, and returns its
// stdout; its stderr ends up in the error.
func command(ctx context.Context, dir string, env []string, name string, args ...string) ([]byte, error) {
	path := name
	if p, err := lookTool(name); err == nil {
		path = p
	}
	cmd := exec.CommandContext(ctx, path, args...)
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), fmt.Sprintf("SOURCE_DATE_EPOCH=%d", Epoch), fmt.Sprintf("E2FSPROGS_FAKE_TIME=%d", Epoch), "TZ=UTC")
	cmd.Env = append(cmd.Env, env...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		return nil, fmt.Errorf("%s %s: %w: %s", name, strings.Join(args, " "), err, strings.TrimSpace(stderr.String()))
	}
	return stdout.Bytes(), nil
}

var epochTime = time.Unix(Epoch, 0)
