//go:build linux

package guard

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/pulsegate/pulsegate/tests/privileged"
)

var generated = []string{"guard_bpfel.go", "guard_bpfel.o", "guard_bpfeb.go", "guard_bpfeb.o"}

// TestGeneratedUpToDate runs gen.go's go:generate line again into a
// temporary directory and compares the result with the committed files.
func TestGeneratedUpToDate(t *testing.T) {
	for _, name := range generated {
		if _, err := os.Stat(name); err != nil {
			t.Fatalf("generated file missing (run go generate ./gateway/guard/): %v", err)
		}
	}
	for _, tool := range []string{"clang", "llvm-strip"} {
		if _, err := exec.LookPath(tool); err != nil {
			privileged.Skip(t, tool+" is not installed (apt install clang llvm libbpf-dev)")
		}
	}
	if _, err := os.Stat("/usr/include/bpf/bpf_helpers.h"); err != nil {
		privileged.Skip(t, "libbpf-dev is not installed: "+err.Error())
	}
	args := generateArgs(t)
	out := t.TempDir()
	// The flags go right after "bpf2go"; GOPACKAGE is what go generate sets.
	args = append(append(args[:3:3], "-output-dir", out), args[3:]...)
	cmd := exec.Command(args[0], args[1:]...)
	cmd.Env = append(os.Environ(), "GOPACKAGE=guard")
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("%s: %v\n%s", strings.Join(args, " "), err, b)
	}
	for _, name := range generated {
		want, err := os.ReadFile(name)
		if err != nil {
			t.Fatal(err)
		}
		got, err := os.ReadFile(filepath.Join(out, name))
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(got, want) {
			t.Errorf("%s is stale: run go generate ./gateway/guard/ and commit it", name)
		}
	}
}

// generateArgs splits gen.go's go:generate line the way go generate does:
// on spaces, with double-quoted words kept whole.
func generateArgs(t *testing.T) []string {
	t.Helper()
	src, err := os.ReadFile("gen.go")
	if err != nil {
		t.Fatal(err)
	}
	for line := range strings.Lines(string(src)) {
		rest, ok := strings.CutPrefix(strings.TrimSpace(line), "//go:generate ")
		if !ok {
			continue
		}
		var args []string
		for i, part := range strings.Split(rest, `"`) {
			if i%2 == 1 {
				args = append(args, part)
			} else {
				args = append(args, strings.Fields(part)...)
			}
		}
		if len(args) < 4 || args[0] != "go" || args[1] != "tool" || args[2] != "bpf2go" {
			t.Fatalf("unexpected go:generate line: %s", rest)
		}
		return args
	}
	t.Fatal("gen.go has no go:generate line")
	return nil
}
