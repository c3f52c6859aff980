// Command launch runs one program as an unprivileged user with its output on
// the serial console. gokrazy's supervisor starts every service as root and
// keeps its output in a ring buffer nobody can read without the status page;
// the appliance wants the UI address and certificate fingerprint on the
// console and the daemon without root.
//
//	launch -user 1000:1000 -dir /perm/pulsegate -- /user/pulsegate run ...
//
// Before it starts the program, launch (still root) makes -dir and hands it
// to the user. While the program runs it gives USB serial devices
// (/dev/ttyUSB*, /dev/ttyACM*) to the dialout group, which the program joins:
// there is no udev on the appliance to do it.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"io/fs"
	"log"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// dialoutGID is Debian's dialout group, the owner of serial ports.
const dialoutGID = 20

func main() {
	if err := run(os.Args[1:]); err != nil {
		var ee *exec.ExitError
		if errors.As(err, &ee) && ee.ExitCode() > 0 {
			os.Exit(ee.ExitCode())
		}
		log.Print(err)
		os.Exit(1)
	}
}

func run(args []string) error {
	fset := flag.NewFlagSet("launch", flag.ContinueOnError)
	var (
		user    = fset.String("user", "1000:1000", "`uid:gid` to run the program as")
		dir     = fset.String("dir", "", "data `directory` made and handed to the user, and the program's working directory")
		console = fset.String("console", "/dev/console", "`device` that also gets the program's stdout and stderr")
		cgroup  = fset.String("cgroup", "", "cgroup v2 `directory` to start the program in, with CAP_BPF and CAP_NET_ADMIN for its egress guard (empty: none)")
		pins    = fset.String("pins", "/sys/fs/bpf/pulsegate", "bpffs `directory` handed to the program for the guard's pins")
	)
	if err := fset.Parse(args); err != nil {
		return err
	}
	if fset.NArg() == 0 {
		return errors.New("usage: launch [flags] -- program [args]")
	}
	uid, gid, err := parseUser(*user)
	if err != nil {
		return err
	}
	if *dir != "" {
		if err := own(*dir, uid, gid); err != nil {
			return err
		}
	}

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go giveSerialPorts(ctx)

	stdout, stderr := io.Writer(os.Stdout), io.Writer(os.Stderr)
	if c, err := os.OpenFile(*console, os.O_WRONLY|syscall.O_NOCTTY, 0); err != nil {
		log.Printf("open console %s: %v (output stays with the supervisor)", *console, err)
	} else {
		defer c.Close()
		stdout, stderr = tee{os.Stdout, c}, tee{os.Stderr, c}
	}

	cmd := exec.Command(fset.Arg(0), fset.Args()[1:]...)
	cmd.Stdout, cmd.Stderr = stdout, stderr
	cmd.Dir = *dir
	cmd.Env = append(os.Environ(), "USER="+strconv.Itoa(int(uid)))
	if *dir != "" {
		cmd.Env = append(cmd.Env, "HOME="+*dir)
	}
	cmd.SysProcAttr = &syscall.SysProcAttr{
		Credential: &syscall.Credential{Uid: uid, Gid: gid, Groups: []uint32{dialoutGID}},
		Pdeathsig:  syscall.SIGTERM,
	}
	if *cgroup != "" {
		// The egress guard: the program starts inside its own cgroup, so
		// every socket it ever opens is guarded, and keeps exactly the two
		// capabilities the guard needs. Without them it runs with the guard
		// off and says so.
		if fd, err := prepareGuard(*cgroup, *pins, uid, gid); err != nil {
			log.Printf("egress guard not prepared: %v (the gateway runs with it off)", err)
		} else {
			defer syscall.Close(fd)
			cmd.SysProcAttr.UseCgroupFD = true
			cmd.SysProcAttr.CgroupFD = fd
			cmd.SysProcAttr.AmbientCaps = []uintptr{capNetAdmin, capBPF}
		}
	}
	// The supervisor signals the whole process group; forward what reaches
	// us too, in case it is only us.
	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, syscall.SIGTERM, syscall.SIGINT, syscall.SIGHUP)
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("start %s: %w", cmd.Path, err)
	}
	go func() {
		for s := range sigs {
			cmd.Process.Signal(s)
		}
	}()
	return cmd.Wait()
}

func parseUser(s string) (uid, gid uint32, err error) {
	u, g, ok := strings.Cut(s, ":")
	if !ok {
		return 0, 0, fmt.Errorf("parse -user %q: want uid:gid", s)
	}
	un, err1 := strconv.ParseUint(u, 10, 32)
	gn, err2 := strconv.ParseUint(g, 10, 32)
	if err := errors.Join(err1, err2); err != nil {
		return 0, 0, fmt.Errorf("parse -user %q: %w", s, err)
	}
	if un == 0 {
		return 0, 0, fmt.Errorf("parse -user %q: refusing to run as root", s)
	}
	return uint32(un), uint32(gn), nil
}

// Capability numbers (linux/capability.h).
const (
	capNetAdmin = 12
	capBPF      = 39
)

// prepareGuard mounts what the egress guard needs (cgroup2 and bpffs, when
// gokrazy has not), makes the program's cgroup and pin directory its own,
// and returns the cgroup's directory fd for starting the program in it.
func prepareGuard(cgroup, pins string, uid, gid uint32) (int, error) {
	root := filepath.Dir(cgroup)
	if !mounted(root, "cgroup2") {
		if err := syscall.Mount("cgroup2", root, "cgroup2", 0, ""); err != nil {
			return -1, fmt.Errorf("mount cgroup2 at %s: %w", root, err)
		}
	}
	bpffs := filepath.Dir(pins)
	if !mounted(bpffs, "bpf") {
		if err := syscall.Mount("bpf", bpffs, "bpf", 0, ""); err != nil {
			return -1, fmt.Errorf("mount bpffs at %s: %w", bpffs, err)
		}
	}
	for _, dir := range []string{cgroup, pins} {
		if err := os.MkdirAll(dir, 0o755); err != nil {
			return -1, err
		}
		if err := os.Chown(dir, int(uid), int(gid)); err != nil {
			return -1, err
		}
	}
	return syscall.Open(cgroup, syscall.O_DIRECTORY|syscall.O_RDONLY|syscall.O_CLOEXEC, 0)
}

// mounted reports whether a file system of type fstype is mounted at dir.
func mounted(dir, fstype string) bool {
	mi, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		return false
	}
	for _, line := range strings.Split(string(mi), "\n") {
		pre, post, ok := strings.Cut(line, " - ")
		f := strings.Fields(pre)
		if ok && len(f) >= 5 && f[4] == dir && strings.HasPrefix(post, fstype+" ") {
			return true
		}
	}
	return false
}

// own makes dir and gives everything under it to uid:gid, so data written by
// an older image that ran as root stays usable.
func own(dir string, uid, gid uint32) error {
	if err := os.MkdirAll(dir, 0o750); err != nil {
		return fmt.Errorf("make %s: %w", dir, err)
	}
	return filepath.WalkDir(dir, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		info, err := d.Info()
		if err != nil {
			return err
		}
		if st, ok := info.Sys().(*syscall.Stat_t); ok && st.Uid == uid && st.Gid == gid {
			return nil
		}
		if err := os.Lchown(path, int(uid), int(gid)); err != nil {
			return fmt.Errorf("chown %s: %w", path, err)
		}
		return nil
	})
}

// giveSerialPorts polls /dev for USB serial ports (a board may be plugged in
// at any time) and makes them group dialout, mode 0660.
func giveSerialPorts(ctx context.Context) {
	t := time.NewTicker(2 * time.Second)
	defer t.Stop()
	for {
		for _, pattern := range []string{"/dev/ttyUSB*", "/dev/ttyACM*"} {
			paths, _ := filepath.Glob(pattern)
			for _, p := range paths {
				var st syscall.Stat_t
				if err := syscall.Stat(p, &st); err != nil || st.Gid == dialoutGID {
					continue
				}
				if err := os.Chown(p, 0, dialoutGID); err != nil {
					log.Printf("chown %s: %v", p, err)
					continue
				}
				if err := os.Chmod(p, 0o660); err != nil {
					log.Printf("chmod %s: %v", p, err)
				}
			}
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// tee writes to the supervisor and to the console; a console that fails
// (unplugged, or none) must not stop the program's output.
type tee struct {
	primary io.Writer
	console io.Writer
}

func (t tee) Write(p []byte) (int, error) {
	t.console.Write(p)
	return t.primary.Write(p)
}
