package guard

// The BPF objects are generated, and committed, for little-endian (amd64,
// arm64, ...) and big-endian targets. The -idirafter directories make the
// Debian multiarch <asm/types.h> visible on x86-64 and arm64 build hosts
// alike without a shell; the objects do not depend on which one is used.
// TestGeneratedUpToDate runs this line again and compares the bytes.
//
//go:generate go tool bpf2go -cc clang -cflags "-O2 -Wall -Werror -idirafter /usr/include/x86_64-linux-gnu -idirafter /usr/include/aarch64-linux-gnu" -tags linux -target bpfel,bpfeb guard bpf/guard.c
