//go:build linux

package store

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"runtime/debug"
	"strings"
	"syscall"
	"testing"

	"github.com/pulsegate/pulsegate/drivers"
	"github.com/pulsegate/pulsegate/tests/privileged"
	"golang.org/x/sys/unix"
)

// writeFiller writes zeros to path until it holds size bytes or the file
// system is full, and returns how much it wrote.
func writeFiller(tb testing.TB, path string, size int) int {
	tb.Helper()
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o600)
	if err != nil {
		tb.Fatal(err)
	}
	defer f.Close()
	chunk := make([]byte, 4096)
	n := 0
	for n < size {
		m, err := f.Write(chunk[:min(len(chunk), size-n)])
		n += m
		if errors.Is(err, syscall.ENOSPC) {
			break
		}
		if err != nil {
			tb.Fatalf("write filler: %v", err)
		}
	}
	return n
}

// leaveFree writes a filler file in dir that leaves free bytes of the file
// system unused, and returns its path: removing it frees the space again.
func leaveFree(tb testing.TB, dir string, free int) string {
	tb.Helper()
	var st unix.Statfs_t
	if err := unix.Statfs(dir, &st); err != nil {
		tb.Fatal(err)
	}
	avail := int(st.Bavail) * int(st.Bsize)
	if avail < free {
		tb.Fatalf("%s has %d bytes free, want at least %d", dir, avail, free)
	}
	filler := filepath.Join(dir, "filler")
	if n := writeFiller(tb, filler, avail-free); n != avail-free {
		tb.Fatalf("filler: wrote %d of %d bytes", n, avail-free)
	}
	return filler
}

// openNoFault is Open, but a fault reading the store's mmap (SIGBUS on a
// file shorter than its meta pages claim) fails the test instead of killing
// the test binary.
func openNoFault(tb testing.TB, path string) (s *Store, err error) {
	tb.Helper()
	defer debug.SetPanicOnFault(debug.SetPanicOnFault(true))
	defer func() {
		if r := recover(); r != nil {
			if f, ok := r.(interface{ Addr() uintptr }); ok {
				tb.Fatalf("Open(%q) faulted at %#x, reading the file's mmap past its end (SIGBUS): %v", path, f.Addr(), r)
			}
			panic(r)
		}
	}()
	return Open(path)
}

// TestOpenOnFullDisk creates a store on a disk with only a few pages left:
// creation may fail, but must leave nothing behind that a later Open, once
// space is freed, trips over. bbolt writes a new file's four first pages in
// one go; cut short after two or three, the file's meta pages point past its
// end and the next Open died of SIGBUS.
func TestOpenOnFullDisk(t *testing.T) {
	page := os.Getpagesize()
	fsys := privileged.MountTmpfs(t, "512k")
	for free := range 7 {
		t.Run(fmt.Sprintf("%d pages free", free), func(t *testing.T) {
			dir, err := os.MkdirTemp(fsys, "")
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { os.RemoveAll(dir) })
			filler := leaveFree(t, dir, free*page)
			path := filepath.Join(dir, "counts.db")
			s, err := openNoFault(t, path)
			if err == nil {
				t.Logf("created with %d pages free", free)
				s.Close()
			} else {
				if !errors.Is(err, syscall.ENOSPC) || !strings.Contains(err.Error(), path) {
					t.Errorf("Open = %q, want it to name %s and wrap ENOSPC", err, path)
				}
				ents, _ := os.ReadDir(dir)
				for _, e := range ents {
					if e.Name() != "filler" {
						t.Errorf("failed Open left %s behind", e.Name())
					}
				}
			}
			if err := os.Remove(filler); err != nil {
				t.Fatal(err)
			}
			s, err = openNoFault(t, path)
			if err != nil {
				t.Fatalf("Open after freeing space: %v", err)
			}
			defer s.Close()
			if _, _, _, err := s.Book(bookTime, []Press{press("b1", 1, 1, drivers.Red, "2026-03-02")}, nil, nil); err != nil {
				t.Fatalf("Book after freeing space: %v", err)
			}
		})
	}
}

// TestBookOnFullDisk fills a real (tmpfs) file system under the store: a
// batch that cannot be written must fail as a whole with a clear error,
// every batch booked before must stay counted, and once space is freed the
// refused batch books as new (none of it was written) and reopening finds
// exactly the batches that succeeded.
func TestBookOnFullDisk(t *testing.T) {
	dir := privileged.MountTmpfs(t, "512k")
	path := filepath.Join(dir, "counts.db")
	s, err := Open(path)
	if err != nil {
		t.Fatalf("Open(%q): %v", path, err)
	}
	t.Cleanup(func() { s.Close() })
	// Leave the store some room to grow, so that a few batches succeed
	// before the disk fills.
	filler := leaveFree(t, dir, 96<<10)

	// Every press comes from a board of its own so that each batch adds
	// board records and the file has to grow.
	const perBatch = 64
	base := Day("2026-03-02")
	batch := func(n int) []Press {
		ps := make([]Press, perBatch)
		for i := range ps {
			c := drivers.Green
			if i%3 == 0 {
				c = drivers.Red
			}
			ps[i] = press(fmt.Sprintf("board-%05d", n*perBatch+i), 1, 1, c, base.AddDays(n%5))
		}
		return ps
	}
	want := map[Day]DayCount{}
	counted := 0
	record := func(ps []Press, st BatchStats) {
		t.Helper()
		if st.Counted != len(ps) {
			t.Fatalf("batch stats %+v, want all %d counted", st, len(ps))
		}
		counted += st.Counted
		for _, p := range ps {
			dc := want[p.Day]
			dc.Day = p.Day
			if p.Colour == drivers.Green {
				dc.Green++
			} else {
				dc.Red++
			}
			want[p.Day] = dc
		}
	}
	checkTotal := func(s *Store, when string) {
		t.Helper()
		n, err := s.TotalCounted()
		if err != nil {
			t.Fatalf("%s: TotalCounted: %v", when, err)
		}
		if n != uint64(counted) {
			t.Fatalf("%s: TotalCounted = %d, want %d (the sum of the batches that succeeded)", when, n, counted)
		}
	}

	var (
		failed  []Press
		bookErr error
		n       int
	)
	for ; n < 1000; n++ {
		ps := batch(n)
		res, _, st, err := s.Book(bookTime, ps, nil, nil)
		if err != nil {
			if res != nil {
				t.Errorf("failed Book returned results %v: nothing may be acknowledged", res)
			}
			failed, bookErr = ps, err
			break
		}
		record(ps, st)
	}
	if bookErr == nil {
		t.Fatalf("booked %d batches on a 512k file system without an error", n)
	}
	if n == 0 {
		t.Fatalf("the first batch already failed (%v): the test wants some to succeed first", bookErr)
	}
	t.Logf("disk full after %d batches (%d presses): %v", n, counted, bookErr)
	if !strings.Contains(bookErr.Error(), "no space left on device") || !strings.HasPrefix(bookErr.Error(), "book ") {
		t.Errorf("Book error = %q, want it to say what failed and why (no space left on device)", bookErr)
	}
	if !errors.Is(bookErr, syscall.ENOSPC) {
		t.Errorf("Book error %q does not wrap ENOSPC: callers cannot tell a full disk", bookErr)
	}
	checkTotal(s, "disk full")

	// Retrying while the disk is still full changes nothing either.
	for range 3 {
		if _, _, _, err := s.Book(bookTime, failed, nil, nil); err == nil {
			t.Fatal("Book succeeded again with the disk still full")
		}
	}
	checkTotal(s, "after retries on a full disk")

	if err := os.Remove(filler); err != nil {
		t.Fatal(err)
	}
	// The refused batch, resent, is new to the store: none of it was written.
	_, _, st, err := s.Book(bookTime, failed, nil, nil)
	if err != nil {
		t.Fatalf("Book after freeing space: %v", err)
	}
	record(failed, st)
	for range 3 {
		n++
		ps := batch(n)
		_, _, st, err := s.Book(bookTime, ps, nil, nil)
		if err != nil {
			t.Fatalf("Book after freeing space: %v", err)
		}
		record(ps, st)
	}
	checkTotal(s, "after freeing space")

	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	s, err = Open(path)
	if err != nil {
		t.Fatalf("reopen: %v", err)
	}
	t.Cleanup(func() { s.Close() })
	checkTotal(s, "after reopen")
	got, err := s.ClosedDays(base, base.AddDays(5))
	if err != nil {
		t.Fatal(err)
	}
	for _, dc := range got {
		if dc != want[dc.Day] {
			t.Errorf("after reopen %s = %+v, want %+v", dc.Day, dc, want[dc.Day])
		}
	}
	boards, err := s.Boards()
	if err != nil {
		t.Fatal(err)
	}
	if len(boards) != counted {
		t.Errorf("after reopen the store knows %d boards, want %d", len(boards), counted)
	}
	for _, ps := range [][]Press{batch(0), failed} {
		for _, p := range ps {
			if r := boards[p.Board]; !reflect.DeepEqual(r.Boots, []BootState{{Boot: 1, Watermark: 1}}) {
				t.Fatalf("board %s after reopen = %+v, want boot 1 acked to 1", p.Board, r)
			}
		}
	}
}
