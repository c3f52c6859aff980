package image

import (
	"context"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
)

// stage is a file tree being prepared for a file system: each file is copied
// or written with a fixed mode and time, so that the build user's umask and
// the module cache's read-only modes do not leak into the image.
type stage struct{ root string }

func (s stage) write(name string, data []byte, mode os.FileMode) error {
	p := filepath.Join(s.root, name)
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		return err
	}
	if err := os.WriteFile(p, data, mode); err != nil {
		return err
	}
	return os.Chmod(p, mode)
}

func (s stage) copy(name, src string, mode os.FileMode) error {
	data, err := os.ReadFile(src)
	if err != nil {
		return err
	}
	return s.write(name, data, mode)
}

func (s stage) mkdir(name string, mode os.FileMode) error {
	p := filepath.Join(s.root, name)
	if err := os.MkdirAll(p, mode); err != nil {
		return err
	}
	return os.Chmod(p, mode)
}

func (s stage) symlink(name, target string) error {
	return os.Symlink(target, filepath.Join(s.root, name))
}

// copyTree copies the regular files under src into name.
func (s stage) copyTree(name, src string) error {
	return filepath.WalkDir(src, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, err := filepath.Rel(src, path)
		if err != nil {
			return err
		}
		switch {
		case d.IsDir():
			return s.mkdir(filepath.Join(name, rel), 0o755)
		case d.Type().IsRegular():
			return s.copy(filepath.Join(name, rel), path, 0o644)
		}
		return nil
	})
}

// settle stamps every entry with Epoch.
func (s stage) settle() error {
	return filepath.WalkDir(s.root, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.Type()&fs.ModeSymlink != 0 {
			return nil // Lchtimes is not in os; the file systems stamp links themselves
		}
		return os.Chtimes(path, epochTime, epochTime)
	})
}

// bootFiles lists what the boot partition holds: the firmware for the Pi 3,
// Zero 2 W (bootcode.bin, start.elf, fixup.dat) and Pi 4 (start4.elf,
// fixup4.dat), the kernel, the device trees of every board the kernel
// supports (bcm2710/2837 Pi 3 and Zero 2 W, bcm2711 Pi 4, bcm2712 Pi 5, whose
// firmware lives in its EEPROM) and the overlays. Names are sorted.
func bootFiles(kernelDir, firmwareDir string) (top, overlays []string, err error) {
	add := func(dir string, keep func(string) bool, into *[]string) error {
		entries, err := os.ReadDir(dir)
		if err != nil {
			return err
		}
		for _, e := range entries {
			if e.Type().IsRegular() && keep(e.Name()) {
				*into = append(*into, filepath.Join(dir, e.Name()))
			}
		}
		return nil
	}
	isFirmware := func(n string) bool {
		return n == "bootcode.bin" || n == "LICENSE.broadcom" ||
			strings.HasPrefix(n, "start") && strings.HasSuffix(n, ".elf") ||
			strings.HasPrefix(n, "fixup") && strings.HasSuffix(n, ".dat")
	}
	isKernel := func(n string) bool { return n == "vmlinuz" || strings.HasSuffix(n, ".dtb") }
	all := func(string) bool { return true }
	if err := add(firmwareDir, isFirmware, &top); err != nil {
		return nil, nil, err
	}
	if err := add(kernelDir, isKernel, &top); err != nil {
		return nil, nil, err
	}
	if err := add(filepath.Join(kernelDir, "overlays"), all, &overlays); err != nil {
		return nil, nil, err
	}
	byBase := func(a, b string) int { return strings.Compare(filepath.Base(a), filepath.Base(b)) }
	slices.SortFunc(top, byBase)
	slices.SortFunc(overlays, byBase)
	return top, overlays, nil
}

func writeBoot(ctx context.Context, work, img, kernelDir, firmwareDir string) error {
	top, overlays, err := bootFiles(kernelDir, firmwareDir)
	if err != nil {
		return fmt.Errorf("list boot files: %w", err)
	}
	st := stage{filepath.Join(work, "boot")}
	var topNames, overlayNames []string
	for _, f := range top {
		if err := st.copy(filepath.Base(f), f, 0o644); err != nil {
			return err
		}
		topNames = append(topNames, filepath.Base(f))
	}
	for _, f := range overlays {
		if err := st.copy(filepath.Join("overlays", filepath.Base(f)), f, 0o644); err != nil {
			return err
		}
		overlayNames = append(overlayNames, filepath.Join("overlays", filepath.Base(f)))
	}
	if err := st.write("cmdline.txt", []byte(Cmdline+"\n"), 0o644); err != nil {
		return err
	}
	if err := st.write("config.txt", []byte(configTxt), 0o644); err != nil {
		return err
	}
	topNames = append(topNames, "cmdline.txt", "config.txt")
	if err := st.settle(); err != nil {
		return err
	}

	if err := truncate(img, bootSize); err != nil {
		return err
	}
	mi := img
	if _, err := command(ctx, st.root, nil, "mformat", "-i", mi, "-F", "-N", fmt.Sprintf("%08x", DiskSignature), "-v", "PGBOOT", "::"); err != nil {
		return err
	}
	// One mcopy per directory, files in sorted order: FAT keeps entries in
	// the order they were written.
	if _, err := command(ctx, st.root, nil, "mcopy", append([]string{"-i", mi, "-m", "-Q", "-o"}, append(topNames, "::/")...)...); err != nil {
		return err
	}
	if _, err := command(ctx, st.root, nil, "mmd", "-i", mi, "::/overlays"); err != nil {
		return err
	}
	_, err = command(ctx, st.root, nil, "mcopy", append([]string{"-i", mi, "-m", "-Q", "-o"}, append(overlayNames, "::/overlays/")...)...)
	return err
}

// etcFiles is the root file system's /etc. resolv.conf points into /tmp,
// where gokrazy's dhcp writes it (the root is read-only); gokrazy only mounts
// a tmpfs over /etc when resolv.conf is missing.
var etcFiles = map[string]string{
	"hostname": "pulsegate\n",
	"hosts":    "127.0.0.1 localhost\n::1 localhost\n",
	"passwd":   "root:x:0:0:root:/:/bin/false\npulsegate:x:1000:1000:Pulsegate:/perm/pulsegate:/bin/false\n",
	"group":    "root:x:0:\ndialout:x:20:pulsegate\npulsegate:x:1000:\n",
}

func writeRoot(ctx context.Context, work, img, bin, kernelDir string) error {
	st := stage{filepath.Join(work, "root")}
	for _, d := range []string{"dev", "etc", "gokrazy", "perm", "proc", "run", "sys", "tmp", "user", "lib"} {
		if err := st.mkdir(d, 0o755); err != nil {
			return err
		}
	}
	for _, b := range binaries {
		if err := st.copy(b.dest, filepath.Join(bin, filepath.Base(b.dest)), 0o755); err != nil {
			return err
		}
	}
	for name, content := range etcFiles {
		if err := st.write(filepath.Join("etc", name), []byte(content), 0o644); err != nil {
			return err
		}
	}
	if err := st.symlink("etc/resolv.conf", "/tmp/resolv.conf"); err != nil {
		return err
	}
	if err := st.symlink("var", "/perm/var"); err != nil {
		return err
	}
	if err := st.copyTree("lib/modules", filepath.Join(kernelDir, "lib", "modules")); err != nil {
		return fmt.Errorf("copy kernel modules: %w", err)
	}
	if err := st.settle(); err != nil {
		return err
	}
	_, err := command(ctx, work, nil, "mksquashfs", st.root, img,
		"-noappend", "-quiet", "-no-progress", "-comp", "gzip", "-all-root", "-no-xattrs",
		"-processors", "1") // times: SOURCE_DATE_EPOCH
	if err != nil {
		return err
	}
	fi, err := os.Stat(img)
	if err != nil {
		return err
	}
	if fi.Size() > rootSize {
		return fmt.Errorf("root file system is %d MiB, more than its %d MiB slot", fi.Size()/mib, rootSize/mib)
	}
	return nil
}

// permUUID and permHashSeed fix the ext4 identifiers mke2fs would draw at
// random.
const (
	permUUID     = "50475431-7065-4000-8000-000000000004"
	permHashSeed = "50475431-7065-4000-8000-000000000005"
)

// writePerm makes an empty /perm. The data directory is made on the first
// boot by launch, which also hands it to the pulsegate user: mke2fs -d stamps
// copied inodes with the build's time (crtime), which would make every build
// differ, and the directory's owner would be the builder's uid.
func writePerm(ctx context.Context, work, img string) error {
	if err := truncate(img, permSize); err != nil {
		return err
	}
	_, err := command(ctx, work, nil, "mke2fs", "-q", "-F", "-t", "ext4", "-L", "perm",
		"-U", permUUID, "-E", "hash_seed="+permHashSeed+",root_owner=0:0", img)
	return err
}

func truncate(path string, size int64) error {
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	if err := f.Truncate(size); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}
