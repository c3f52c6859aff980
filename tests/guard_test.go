package tests

import (
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/pulsegate/pulsegate/tests/privileged"
)

// TestGuardLetsTheIndexUploadThroughAndCountsIt runs one office with the
// egress guard enforcing, next to a central index on an address of this
// host that is not loopback (a veth), so that its traffic is guarded and
// counted. The office enrols (the guard lets the enrolment through), its
// clock starts a minute before the end of March, the month closes, and the
// leader uploads: the guard's ledger shows the bytes that went to the
// index, and nothing was refused.
func TestGuardLetsTheIndexUploadThroughAndCountsIt(t *testing.T) {
	privileged.RequireRoot(t, "the eBPF egress guard")
	if testing.Short() {
		t.Skip("waits for a month to close (about a minute)")
	}
	t.Parallel()
	bin := pulsegateBin(t)
	dir := t.TempDir()

	// A local address that is not loopback.
	r := rand.N(1 << 16)
	veth := fmt.Sprintf("pgi%04x", r)
	addr := fmt.Sprintf("10.98.%d.%d", r>>8, r&0xff)
	ip := func(args ...string) {
		t.Helper()
		if out, err := exec.Command("ip", args...).CombinedOutput(); err != nil {
			privileged.Skip(t, fmt.Sprintf("ip %s: %v: %s", strings.Join(args, " "), err, out))
		}
	}
	ip("link", "add", veth, "type", "veth", "peer", "name", veth+"p")
	t.Cleanup(func() { exec.Command("ip", "link", "del", veth).Run() })
	ip("addr", "add", addr+"/32", "dev", veth)
	ip("link", "set", veth, "up")
	ip("link", "set", veth+"p", "up")

	indexDir := filepath.Join(dir, "index")
	port := freePort(t)
	url := fmt.Sprintf("https://%s:%d", addr, port)
	ix, _ := startAndWaitFor(t, exec.Command(bin, "index", "--data-dir", indexDir, "--listen", fmt.Sprintf("%s:%d", addr, port), "--host", addr),
		regexp.MustCompile(`Pulsegate index is running`), 30*time.Second)
	token := runCLI(t, "index", "token", "create", "--customer", "acme", "--data-dir", indexDir, "--public-url", url)

	dataDir := filepath.Join(dir, "office")
	runCLI(t, "init", "--customer", "acme", "--data-dir", dataDir)
	name := fmt.Sprintf("pg-guard-e2e-%d", os.Getpid())
	cgroup := filepath.Join(cgroup2Root(t), name)
	pins := filepath.Join("/sys/fs/bpf", name)
	t.Cleanup(func() {
		os.RemoveAll(pins)
		os.Remove(cgroup)
	})
	office := exec.Command(bin, "run", "--data-dir", dataDir, "--listen", "127.0.0.1:0", "--https-listen", "127.0.0.1:0",
		"--cluster-listen", fmt.Sprintf("127.0.0.1:%d", freePort(t)), "--gossip-listen", fmt.Sprintf("127.0.0.1:%d", freePort(t)),
		"--sim", "on", "--sim-rate", "5", "--no-abuse-limit", "--auto-approve-boards", "--timezone", "UTC",
		"--release-interval", "2s", "--guard", "enforce", "--guard-cgroup", cgroup, "--guard-pin-dir", pins)
	offset := time.Until(time.Date(2026, 3, 31, 23, 59, 20, 0, time.UTC)).Round(time.Second)
	office.Env = append(os.Environ(), fmt.Sprintf("PULSEGATE_TEST_CLOCK_OFFSET=%s", offset))
	p := startProc(t, office)

	type egress struct {
		Active bool   `json:"active"`
		State  string `json:"state"`
		Flows  []struct {
			Dest  string `json:"dest"`
			Bytes uint64 `json:"bytes"`
		} `json:"flows"`
		Denied []struct {
			Dest string `json:"dest"`
		} `json:"denied"`
	}
	var eg egress
	if err := boxGetErr(dataDir, "/api/egress", &eg); err != nil {
		t.Fatal(err)
	}
	if !eg.Active || eg.State != "enforce" {
		t.Fatalf("guard: active=%v state %q, want enforcing", eg.Active, eg.State)
	}

	if out := runCLI(t, "enrol", "--data-dir", dataDir, token); !strings.Contains(out, `customer "acme"`) {
		t.Fatalf("enrol through the guard said %q", out)
	}
	var st struct {
		Index *struct {
			Released int `json:"released"`
			Pending  int `json:"pending"`
		} `json:"index"`
	}
	deadline := time.Now().Add(3 * time.Minute)
	for {
		st.Index = nil
		boxStatus(t, dataDir, &st)
		if st.Index != nil && st.Index.Released == 1 && st.Index.Pending == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("March was not uploaded within 3 minutes: %+v\n%s\nindex:\n%s", st.Index, tailLines(p.logs.String(), 30), tailLines(ix.logs.String(), 10))
		}
		time.Sleep(time.Second)
	}
	if err := boxGetErr(dataDir, "/api/egress", &eg); err != nil {
		t.Fatal(err)
	}
	var toIndex uint64
	for _, f := range eg.Flows {
		if f.Dest == addr {
			toIndex = f.Bytes
		}
	}
	if toIndex == 0 {
		t.Fatalf("the guard's ledger shows no bytes to the index at %s: %+v", addr, eg.Flows)
	}
	if len(eg.Denied) > 0 {
		t.Fatalf("the guard refused %+v although only the index was contacted", eg.Denied)
	}
	t.Logf("the guard counted %d bytes to the index (enrolment and upload)", toIndex)
	p.stop(t)
	ix.stop(t)
}
