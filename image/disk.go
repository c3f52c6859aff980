package image

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"io"
	"os"
)

// mbr returns the disk's first sector: no boot code (the Pi's firmware reads
// the FAT partition itself), the disk signature, four partition entries.
func mbr() []byte {
	b := make([]byte, sectorLen)
	binary.LittleEndian.PutUint32(b[440:], DiskSignature)
	for i, p := range Layout {
		e := b[446+16*i : 446+16*(i+1)]
		// CHS fields hold the "use LBA" marker.
		copy(e[1:4], []byte{0xfe, 0xff, 0xff})
		e[4] = p.Type
		copy(e[5:8], []byte{0xfe, 0xff, 0xff})
		binary.LittleEndian.PutUint32(e[8:], uint32(p.Offset/sectorLen))
		binary.LittleEndian.PutUint32(e[12:], uint32(p.Size/sectorLen))
	}
	b[510], b[511] = 0x55, 0xaa
	return b
}

// writeDisk writes the disk image at path with the file system images by
// partition number, and returns the number of bytes that are not zero (the
// file stays sparse where nothing was written).
func writeDisk(path string, parts map[int]string) (used int64, err error) {
	f, err := os.Create(path)
	if err != nil {
		return 0, err
	}
	defer func() {
		if cerr := f.Close(); err == nil {
			err = cerr
		}
	}()
	if err := f.Truncate(DiskSize); err != nil {
		return 0, err
	}
	if _, err := f.WriteAt(mbr(), 0); err != nil {
		return 0, err
	}
	used = sectorLen
	for _, p := range Layout {
		src, ok := parts[p.Number]
		if !ok {
			continue
		}
		n, err := copySparse(f, p.Offset, p.Size, src)
		if err != nil {
			return 0, fmt.Errorf("write partition %d: %w", p.Number, err)
		}
		used += n
	}
	return used, nil
}

// copySparse copies src into dst at off, skipping zero blocks, and returns
// how many bytes it wrote.
func copySparse(dst *os.File, off, max int64, src string) (int64, error) {
	s, err := os.Open(src)
	if err != nil {
		return 0, err
	}
	defer s.Close()
	fi, err := s.Stat()
	if err != nil {
		return 0, err
	}
	if fi.Size() > max {
		return 0, fmt.Errorf("%s is %d bytes, more than the partition's %d", src, fi.Size(), max)
	}
	buf := make([]byte, 64<<10)
	zero := make([]byte, len(buf))
	var pos, written int64
	for {
		n, err := io.ReadFull(s, buf)
		if n > 0 {
			if !bytes.Equal(buf[:n], zero[:n]) {
				if _, err := dst.WriteAt(buf[:n], off+pos); err != nil {
					return 0, err
				}
				written += int64(n)
			}
			pos += int64(n)
		}
		if err == io.EOF || err == io.ErrUnexpectedEOF {
			return written, nil
		}
		if err != nil {
			return 0, err
		}
	}
}
