//go:build linux || darwin || freebsd || netbsd || openbsd

package fakeboard

import (
	"errors"
	"fmt"
	"os"

	"github.com/creack/pty"
	"golang.org/x/sys/unix"
)

// openPTY opens a pseudo-terminal pair with the slave in raw mode. The board
// reads and writes the master; the gateway opens the slave by name.
//
// creack/pty hands the master back in blocking mode (it calls Fd), and a
// blocking os.File's Close neither interrupts a pending Read nor a pending
// Write. Re-wrapping a non-blocking duplicate puts it under the runtime's
// poller, so Unplug and Close end the board's reader and writer at once, and
// write deadlines work.
func openPTY() (master, slave *os.File, err error) {
	m, s, err := pty.Open()
	if err != nil {
		return nil, nil, fmt.Errorf("open pty: %w", err)
	}
	defer func() {
		if err != nil {
			_ = s.Close()
		}
	}()
	fd, err := unix.FcntlInt(m.Fd(), unix.F_DUPFD_CLOEXEC, 0)
	if cerr := m.Close(); err == nil && cerr != nil {
		err = cerr
	}
	if err != nil {
		if fd >= 0 {
			_ = unix.Close(fd)
		}
		return nil, nil, fmt.Errorf("duplicate pty master: %w", err)
	}
	if err := unix.SetNonblock(fd, true); err != nil {
		_ = unix.Close(fd)
		return nil, nil, fmt.Errorf("set pty master non-blocking: %w", err)
	}
	master = os.NewFile(uintptr(fd), "/dev/ptmx")
	if err := makeRaw(s); err != nil {
		_ = master.Close()
		return nil, nil, fmt.Errorf("set pty %s raw: %w", s.Name(), err)
	}
	return master, s, nil
}

// makeRaw is cfmakeraw(3): no echo, no line editing, no CR/NL translation, no
// signals, 8 data bits. Without it the tty would echo the board's own frames
// back to it until the gateway opens the port (go.bug.st/serial sets raw mode
// too, but only from its open on).
func makeRaw(f *os.File) error {
	rc, err := f.SyscallConn()
	if err != nil {
		return err
	}
	var terr error
	err = rc.Control(func(fd uintptr) {
		t, err := unix.IoctlGetTermios(int(fd), ioctlGetTermios)
		if err != nil {
			terr = err
			return
		}
		t.Iflag &^= unix.IGNBRK | unix.BRKINT | unix.PARMRK | unix.ISTRIP | unix.INLCR | unix.IGNCR | unix.ICRNL | unix.IXON
		t.Oflag &^= unix.OPOST
		t.Lflag &^= unix.ECHO | unix.ECHONL | unix.ICANON | unix.ISIG | unix.IEXTEN
		t.Cflag &^= unix.CSIZE | unix.PARENB
		t.Cflag |= unix.CS8
		t.Cc[unix.VMIN] = 1
		t.Cc[unix.VTIME] = 0
		terr = unix.IoctlSetTermios(int(fd), ioctlSetTermios, t)
	})
	return errors.Join(err, terr)
}
