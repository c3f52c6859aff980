package tests

import (
	"bytes"
	"context"
	"crypto/sha256"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/pulsegate/pulsegate/image"
)

// requireImageTools skips (or, when CI requires every test, fails) unless the
// packer's tools and, with qemu, qemu-system-aarch64 are installed.
func requireImageTools(tb testing.TB, qemu bool) {
	tb.Helper()
	err := image.CheckTools()
	if err == nil && qemu {
		if _, lerr := exec.LookPath("qemu-system-aarch64"); lerr != nil {
			err = errors.New("no qemu-system-aarch64 (Debian: apt-get install qemu-system-arm)")
		}
	}
	if err == nil {
		return
	}
	if os.Getenv("PULSEGATE_REQUIRE_PRIVILEGED") == "1" {
		tb.Fatalf("image test needs its tools: %v", err)
	}
	tb.Skipf("image test needs its tools: %v", err)
}

type builtImage struct {
	res     *image.Result
	elapsed time.Duration
	err     error
}

var (
	imageMu    sync.Mutex
	imageBuilt = map[string]*builtImage{}
)

// buildImage runs the packer into a directory named by key, once per test
// binary: the boot test and the checks share one build.
func buildImage(tb testing.TB, key string) (*image.Result, time.Duration) {
	tb.Helper()
	imageMu.Lock()
	defer imageMu.Unlock()
	b, ok := imageBuilt[key]
	if !ok {
		out, err := os.MkdirTemp("", "pulsegate-image-test-")
		if err != nil {
			tb.Fatal(err)
		}
		start := time.Now()
		var log bytes.Buffer
		res, err := image.Build(context.Background(), image.Config{
			ModuleDir: "..", OutDir: out, KeepRaw: true, Progress: &log,
		})
		if err != nil {
			err = fmt.Errorf("%w\n%s", err, log.String())
		}
		b = &builtImage{res: res, elapsed: time.Since(start), err: err}
		imageBuilt[key] = b
	}
	if b.err != nil {
		tb.Fatalf("build image: %v", b.err)
	}
	return b.res, b.elapsed
}

func TestMain(m *testing.M) {
	code := m.Run()
	for _, b := range imageBuilt {
		if b.res != nil {
			os.RemoveAll(filepath.Dir(b.res.Raw))
		}
	}
	os.Exit(code)
}

// partition reads partition n of the raw image.
func partition(tb testing.TB, raw string, n int) []byte {
	tb.Helper()
	f, err := os.Open(raw)
	if err != nil {
		tb.Fatal(err)
	}
	defer f.Close()
	p := image.Layout[n-1]
	b := make([]byte, p.Size)
	if _, err := f.ReadAt(b, p.Offset); err != nil {
		tb.Fatalf("read partition %d: %v", n, err)
	}
	return b
}

// bootFile reads a file from the image's FAT boot partition with mtools,
// without mounting it.
func bootFile(tb testing.TB, raw, name string) []byte {
	tb.Helper()
	out, err := exec.Command("mtype", "-i", fmt.Sprintf("%s@@%d", raw, image.Layout[0].Offset), "::"+name).Output()
	if err != nil {
		tb.Fatalf("mtype %s: %v", name, err)
	}
	return out
}

func TestImageBootPartitionHasWhatAPiNeeds(t *testing.T) {
	requireImageTools(t, false)
	res, _ := buildImage(t, "a")
	out, err := exec.Command("mdir", "-b", "-i", fmt.Sprintf("%s@@%d", res.Raw, image.Layout[0].Offset), "::/").Output()
	if err != nil {
		t.Fatalf("mdir: %v", err)
	}
	have := map[string]bool{}
	for _, l := range strings.Fields(string(out)) {
		have[strings.TrimSuffix(strings.TrimPrefix(l, "::/"), "/")] = true
	}
	for _, f := range []string{
		"bootcode.bin", "start.elf", "fixup.dat", // Pi 3, Zero 2 W
		"start4.elf", "fixup4.dat", // Pi 4
		"vmlinuz", "config.txt", "cmdline.txt", "overlays",
		"bcm2710-rpi-3-b.dtb", "bcm2710-rpi-3-b-plus.dtb", "bcm2837-rpi-3-b.dtb", // Pi 3
		"bcm2710-rpi-zero-2-w.dtb", // Zero 2 W
		"bcm2711-rpi-4-b.dtb",      // Pi 4
		"bcm2712-rpi-5-b.dtb",      // Pi 5 (its firmware is in EEPROM)
	} {
		if !have[f] {
			t.Errorf("boot partition lacks %s; it has %v", f, strings.Fields(string(out)))
		}
	}
	cmdline := string(bootFile(t, res.Raw, "cmdline.txt"))
	if !strings.Contains(cmdline, "root="+image.RootPARTUUID(2)) || !strings.Contains(cmdline, "init=/gokrazy/init") {
		t.Errorf("cmdline.txt = %q, want root=%s and init=/gokrazy/init", cmdline, image.RootPARTUUID(2))
	}
	config := string(bootFile(t, res.Raw, "config.txt"))
	for _, want := range []string{"arm_64bit=1", "kernel=vmlinuz", "enable_uart=1"} {
		if !strings.Contains(config, want) {
			t.Errorf("config.txt lacks %q:\n%s", want, config)
		}
	}
	if slot := partition(t, res.Raw, 3); !bytes.Equal(slot, make([]byte, len(slot))) {
		t.Error("the second root slot (partition 3) is not empty")
	}
}

func TestImageIsReproducible(t *testing.T) {
	requireImageTools(t, false)
	a, _ := buildImage(t, "a")
	b, _ := buildImage(t, "b")
	for _, n := range []int{1, 2, 4} {
		pa, pb := partition(t, a.Raw, n), partition(t, b.Raw, n)
		if !bytes.Equal(pa, pb) {
			t.Errorf("partition %d differs between two builds: sha256 %x vs %x", n, sha256.Sum256(pa), sha256.Sum256(pb))
		}
	}
	if a.SHA256 != b.SHA256 {
		t.Errorf("compressed images differ: %s vs %s", a.SHA256, b.SHA256)
	}
}

// TestImageBootsUnderQEMU boots the image's own kernel (the Pi kernel, which
// has virtio and PL011 built in) on QEMU's virt board with the image as its
// disk: init finds root and /perm by the disk's PARTUUID, exactly as on a Pi,
// and the gateway answers through forwarded ports. QEMU stands in for the
// board because there is none in CI; the firmware stage is not exercised.
func TestImageBootsUnderQEMU(t *testing.T) {
	requireImageTools(t, true)
	res, elapsed := buildImage(t, "a")
	t.Logf("image: %d MiB raw, %d MiB used, %.1f MiB compressed; built in %s",
		res.RawSize>>20, res.UsedSize>>20, float64(res.ZstSize)/(1<<20), elapsed.Round(100*time.Millisecond))

	dir := t.TempDir()
	kernel := filepath.Join(dir, "vmlinuz")
	if err := os.WriteFile(kernel, bootFile(t, res.Raw, "vmlinuz"), 0o644); err != nil {
		t.Fatal(err)
	}
	httpPort, httpsPort := freePort(t), freePort(t)
	console := &lockedBuffer{}
	cmd := exec.Command("qemu-system-aarch64",
		"-M", "virt", "-cpu", "cortex-a72", "-smp", "2", "-m", "1024", "-nographic",
		"-kernel", kernel,
		"-append", "console=ttyAMA0 root="+image.RootPARTUUID(2)+" init=/gokrazy/init rootwait panic=10 oops=panic",
		"-drive", "file="+res.Raw+",if=virtio,format=raw",
		"-netdev", fmt.Sprintf("user,id=n,hostfwd=tcp:127.0.0.1:%d-:8080,hostfwd=tcp:127.0.0.1:%d-:8443", httpPort, httpsPort),
		// romfile=: no PXE option ROM (Debian ships it in ipxe-qemu); the
		// kernel is loaded directly.
		"-device", "virtio-net-pci,netdev=n,romfile=",
	)
	cmd.Stdout, cmd.Stderr = console, console
	start := time.Now()
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		cmd.Process.Kill()
		cmd.Wait()
		if t.Failed() {
			t.Logf("serial console:\n%s", console.String())
		}
	})

	noRedirect := &http.Client{
		Timeout:       5 * time.Second,
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
		Transport: &http.Transport{
			// The box's certificate is self-signed; its fingerprint is
			// checked against the console below.
			TLSClientConfig: &tls.Config{InsecureSkipVerify: true},
		},
	}
	get := func(url string) (*http.Response, error) {
		resp, err := noRedirect.Get(url)
		if err != nil {
			return nil, err
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		return resp, nil
	}
	healthz := fmt.Sprintf("https://127.0.0.1:%d/healthz", httpsPort)
	var health *http.Response
	waitFor(t, 120*time.Second, "the appliance's /healthz under QEMU", func() bool {
		if cmd.ProcessState != nil {
			return false
		}
		resp, err := get(healthz)
		if err != nil || resp.StatusCode != http.StatusOK {
			time.Sleep(500 * time.Millisecond)
			return false
		}
		health = resp
		return true
	})
	t.Logf("boot to HTTP 200 on /healthz: %s", time.Since(start).Round(100*time.Millisecond))

	// Plain HTTP answers too: with /healthz or a redirect to HTTPS.
	resp, err := get(fmt.Sprintf("http://127.0.0.1:%d/healthz", httpPort))
	if err != nil {
		t.Fatalf("GET http /healthz: %v", err)
	}
	if resp.StatusCode != http.StatusOK && resp.StatusCode/100 != 3 {
		t.Errorf("GET http /healthz = %d, want 200 or a redirect", resp.StatusCode)
	}
	// The page: the first-boot page or a redirect to it.
	resp, err = get(fmt.Sprintf("https://127.0.0.1:%d/", httpsPort))
	if err != nil {
		t.Fatalf("GET /: %v", err)
	}
	if resp.StatusCode != http.StatusOK && resp.StatusCode/100 != 3 {
		t.Errorf("GET / = %d, want 200 or a redirect to the first-boot page", resp.StatusCode)
	}
	t.Logf("GET / = %d %s", resp.StatusCode, resp.Header.Get("Location"))

	// The console shows the address and the fingerprint, and the
	// fingerprint is the certificate's.
	re := regexp.MustCompile(`certificate fingerprint SHA-256 ([0-9A-F:]{95})`)
	var m []string
	waitFor(t, 10*time.Second, "the fingerprint on the serial console", func() bool {
		m = re.FindStringSubmatch(console.String())
		return m != nil
	})
	sum := sha256.Sum256(health.TLS.PeerCertificates[0].Raw)
	var hexes []string
	for _, b := range sum {
		hexes = append(hexes, fmt.Sprintf("%02X", b))
	}
	if got := strings.Join(hexes, ":"); got != m[1] {
		t.Errorf("served certificate's fingerprint %s, console says %s", got, m[1])
	}
	// The gateway runs unprivileged but with its egress guard enforcing.
	if !regexp.MustCompile(`egress guard active.*mode=enforce`).MatchString(console.String()) {
		t.Errorf("the console does not show the egress guard enforcing:\n%s", tailLines(console.String(), 40))
	}
	if !strings.Contains(console.String(), "Pulsegate is running. Open http://") {
		t.Error("the console does not show the UI address")
	}
}
