//go:build linux

// Package privileged holds the helpers of tests that need root: they skip
// with a reason where they cannot run, and fail instead when
// PULSEGATE_REQUIRE_PRIVILEGED=1 (CI runs as root and must cover them).
package privileged

import (
	"errors"
	"fmt"
	"os"
	"testing"

	"golang.org/x/sys/unix"
)

// Skip skips tb for reason, unless PULSEGATE_REQUIRE_PRIVILEGED=1 says this
// run must cover it: then a skip would hide a test that never ran, so it
// fails instead.
func Skip(tb testing.TB, reason string) {
	tb.Helper()
	if os.Getenv("PULSEGATE_REQUIRE_PRIVILEGED") == "1" {
		tb.Fatalf("%s; PULSEGATE_REQUIRE_PRIVILEGED=1 forbids skipping", reason)
	}
	tb.Skip(reason)
}

// RequireRoot skips (or fails, see Skip) unless the test runs as root.
func RequireRoot(tb testing.TB, what string) {
	tb.Helper()
	if os.Geteuid() != 0 {
		Skip(tb, what+" needs root")
	}
}

// MountTmpfs mounts a tmpfs of size (e.g. "512k") on a fresh directory, so
// a test can fill a real file system without filling the machine's. It is
// unmounted when the test ends; register anything that holds files in it
// (a store) after calling this, so it is closed before the unmount.
func MountTmpfs(tb testing.TB, size string) string {
	tb.Helper()
	RequireRoot(tb, "mounting a tmpfs to fill")
	dir := tb.TempDir()
	if err := unix.Mount("tmpfs", dir, "tmpfs", unix.MS_NOSUID|unix.MS_NODEV|unix.MS_NOEXEC, "size="+size+",mode=0700"); err != nil {
		if errors.Is(err, unix.EPERM) || errors.Is(err, unix.EACCES) {
			Skip(tb, fmt.Sprintf("mount tmpfs on %s: %v (no CAP_SYS_ADMIN here)", dir, err))
		}
		tb.Fatalf("mount tmpfs on %s: %v", dir, err)
	}
	tb.Cleanup(func() {
		if err := unix.Unmount(dir, 0); err != nil {
			tb.Errorf("unmount %s: %v", dir, err)
			_ = unix.Unmount(dir, unix.MNT_DETACH)
		}
	})
	return dir
}
