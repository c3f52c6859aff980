//go:build ignore

// The egress guard: five programs attached to the appliance's cgroup.
//
// The four sock_addr programs run when a socket of the cgroup connects
// (TCP, UDP) or sends to an explicit address (UDP sendto/sendmsg). They
// look the destination up in `allow` and, in enforce mode, refuse what is
// not there: returning 0 makes connect(2)/sendmsg(2) fail with EPERM.
// The cgroup_skb program counts what actually leaves, per destination.
//
// Only fields of the UAPI contexts (struct bpf_sock_addr, struct __sk_buff)
// are read: they are rewritten by the verifier for the running kernel, so
// no BTF and no CO-RE are needed (Raspberry Pi kernels ship without BTF).

#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>

#define MODE_OFF 0
#define MODE_MONITOR 1
#define MODE_ENFORCE 2

#define PROTO_ANY 0
#define PROTO_TCP 6
#define PROTO_UDP 17

// A destination: IPv6 address (IPv4 as ::ffff:a.b.c.d), port in host byte
// order (0 = any port), protocol (0 = any).
struct dest_key {
	__u8 addr[16];
	__u16 port;
	__u8 proto;
	__u8 pad;
};

struct addr_key {
	__u8 addr[16];
};

// last_ns values are CLOCK_MONOTONIC nanoseconds (time since boot, without
// suspend): bpf_ktime_get_ns() for denials, its tick-resolution variant
// bpf_ktime_get_coarse_ns() (Linux 5.11+) on the per-packet path. User
// space converts them to wall time.
struct flow {
	__u64 bytes;
	__u64 packets;
	__u64 last_ns;
};

struct denial {
	__u64 count;
	__u64 last_ns;
};

struct config {
	__u32 mode;
};

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 4096);
	__type(key, struct dest_key);
	__type(value, __u8);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} allow SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 4096);
	__type(key, struct addr_key);
	__type(value, struct flow);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} ledger SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 4096);
	__type(key, struct dest_key);
	__type(value, struct denial);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} denied SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct config);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} config SEC(".maps");

static __always_inline __u32 guard_mode(void)
{
	__u32 zero = 0;
	struct config *c = bpf_map_lookup_elem(&config, &zero);

	return c ? c->mode : MODE_OFF;
}

// set_addr writes four network-order words into an address.
static __always_inline void set_addr(__u8 *addr, __u32 w0, __u32 w1, __u32 w2, __u32 w3)
{
	__builtin_memcpy(addr, &w0, 4);
	__builtin_memcpy(addr + 4, &w1, 4);
	__builtin_memcpy(addr + 8, &w2, 4);
	__builtin_memcpy(addr + 12, &w3, 4);
}

// is_loopback is true for ::1 and ::ffff:127.0.0.0/104, given the address
// as four network-order words.
static __always_inline int is_loopback(__u32 w0, __u32 w1, __u32 w2, __u32 w3)
{
	if (w0 != 0 || w1 != 0)
		return 0;
	if (w2 == 0 && w3 == bpf_htonl(1))
		return 1;
	return w2 == bpf_htonl(0xffff) && (bpf_ntohl(w3) >> 24) == 127;
}

static __always_inline int allowed(struct dest_key *key)
{
	__u16 port = key->port;
	__u8 proto = key->proto;

	if (bpf_map_lookup_elem(&allow, key))
		return 1;
	key->proto = PROTO_ANY;
	if (bpf_map_lookup_elem(&allow, key))
		goto yes;
	key->port = 0;
	key->proto = proto;
	if (bpf_map_lookup_elem(&allow, key))
		goto yes;
	key->proto = PROTO_ANY;
	if (bpf_map_lookup_elem(&allow, key))
		goto yes;
	key->port = port;
	key->proto = proto;
	return 0;
yes:
	key->port = port;
	key->proto = proto;
	return 1;
}

static __always_inline void record_denial(struct dest_key *key)
{
	__u64 now = bpf_ktime_get_ns();
	struct denial *d = bpf_map_lookup_elem(&denied, key);

	if (!d) {
		struct denial fresh = { .count = 1, .last_ns = now };

		if (bpf_map_update_elem(&denied, key, &fresh, BPF_NOEXIST) == 0)
			return;
		// Another CPU inserted it first: count on its entry.
		d = bpf_map_lookup_elem(&denied, key);
		if (!d)
			return;
	}
	__sync_fetch_and_add(&d->count, 1);
	d->last_ns = now;
}

// check decides for one destination given as four network-order words.
static __always_inline int check(struct bpf_sock_addr *ctx, __u32 w0, __u32 w1, __u32 w2, __u32 w3)
{
	__u32 mode = guard_mode();
	struct dest_key key = {};

	if (mode == MODE_OFF)
		return 1;
	// Loopback is checked like any other destination: a local proxy could
	// carry data off the box. What the daemon needs there (a peer or a
	// resolver on loopback) is on the allowlist like everything else.

	set_addr(key.addr, w0, w1, w2, w3);
	key.port = bpf_ntohs((__u16)ctx->user_port);
	key.proto = (__u8)ctx->protocol;
	if (allowed(&key))
		return 1;

	record_denial(&key);
	return mode == MODE_ENFORCE ? 0 : 1;
}

static __always_inline int check4(struct bpf_sock_addr *ctx)
{
	return check(ctx, 0, 0, bpf_htonl(0xffff), ctx->user_ip4);
}

static __always_inline int check6(struct bpf_sock_addr *ctx)
{
	return check(ctx, ctx->user_ip6[0], ctx->user_ip6[1], ctx->user_ip6[2], ctx->user_ip6[3]);
}

SEC("cgroup/connect4")
int guard_connect4(struct bpf_sock_addr *ctx)
{
	return check4(ctx);
}

SEC("cgroup/connect6")
int guard_connect6(struct bpf_sock_addr *ctx)
{
	return check6(ctx);
}

SEC("cgroup/sendmsg4")
int guard_sendmsg4(struct bpf_sock_addr *ctx)
{
	return check4(ctx);
}

SEC("cgroup/sendmsg6")
int guard_sendmsg6(struct bpf_sock_addr *ctx)
{
	return check6(ctx);
}

// count_egress adds every packet the cgroup sends to its destination's
// ledger entry. It never drops: enforcement is the sock_addr programs' job.
SEC("cgroup_skb/egress")
int count_egress(struct __sk_buff *skb)
{
	struct addr_key key = {};
	__u32 w0 = 0, w1 = 0, w2 = bpf_htonl(0xffff), w3 = 0;
	__u8 hdr[20];
	__u64 now, packets;
	struct flow *f;

	if (guard_mode() == MODE_OFF)
		return 1;
	// The skb starts at the network header on cgroup egress. One load
	// covers an IPv4 header without options; IPv6 needs a second.
	if (bpf_skb_load_bytes(skb, 0, hdr, sizeof(hdr)) < 0)
		return 1;
	switch (hdr[0] >> 4) {
	case 4:
		__builtin_memcpy(&w3, &hdr[16], 4); // daddr
		break;
	case 6: {
		__u32 d[4];

		if (bpf_skb_load_bytes(skb, 24, d, 16) < 0) // daddr
			return 1;
		w0 = d[0];
		w1 = d[1];
		w2 = d[2];
		w3 = d[3];
		break;
	}
	default:
		return 1;
	}
	if (is_loopback(w0, w1, w2, w3))
		return 1;
	set_addr(key.addr, w0, w1, w2, w3);

	// A GSO packet leaves as gso_segs packets on the wire.
	packets = skb->gso_segs;
	if (packets == 0)
		packets = 1;
	// Per packet, the coarse clock (CLOCK_MONOTONIC at tick resolution) is
	// precise enough for "last seen" and cheaper.
	now = bpf_ktime_get_coarse_ns();

	f = bpf_map_lookup_elem(&ledger, &key);
	if (!f) {
		struct flow fresh = { .bytes = skb->len, .packets = packets, .last_ns = now };

		if (bpf_map_update_elem(&ledger, &key, &fresh, BPF_NOEXIST) == 0)
			return 1;
		f = bpf_map_lookup_elem(&ledger, &key);
		if (!f)
			return 1;
	}
	__sync_fetch_and_add(&f->bytes, skb->len);
	__sync_fetch_and_add(&f->packets, packets);
	f->last_ns = now;
	return 1;
}

char __license[] SEC("license") = "Dual MIT/GPL";
