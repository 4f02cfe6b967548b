// SPDX-License-Identifier: MIT
/*
 * vsvm_multigpu: one process mirrored on several devices. Devices of one
 * interconnect group map each other's VRAM and move pages between their
 * VRAMs directly; devices of different groups go through system memory.
 * Every subtest checks the data; the races run for a bounded time. Each runs
 * twice: with a VM of its own on each device, and (shared-vm-*) with one VM
 * that spans all the devices, one mirror of the process and a page table per
 * device.
 */
#include <pthread.h>
#include <string.h>
#include <sys/mman.h>

#include "igt.h"
#include "vsvm/vsvm_ioctl.h"

IGT_TEST_DESCRIPTION("Several devices on one address space: peers, migration between them, races");

#define PAGE VSVM_PAGE
#define MAX_DEVICES 4
#define RACE_SECONDS 4

static int fds[MAX_DEVICES];
static uint32_t vms[MAX_DEVICES];
static uint32_t indices[MAX_DEVICES];
static uint32_t shared_vm;
static int devices;

/* A device as a subtest uses it: a file, a VM, and the device in the VM. */
struct gpu {
	int fd;
	uint32_t vm;
	uint32_t device;
};

static struct gpu gpus[MAX_DEVICES];

/* Each device through a VM of its own. */
static void use_own_vms(void)
{
	for (int i = 0; i < devices; i++)
		gpus[i] = (struct gpu){ fds[i], vms[i], VSVM_FILE_DEVICE };
}

/* Each device through the one VM that spans them all. */
static void use_shared_vm(void)
{
	for (int i = 0; i < devices; i++)
		gpus[i] = (struct gpu){ fds[0], shared_vm, indices[i] };
}

static int one_op(const struct gpu *g, struct drm_vsvm_op op, uint64_t *result)
{
	int ret = __vsvm_exec_device(g->fd, g->vm, g->device, &op, 1);

	if (!ret && result)
		*result = op.result;
	return ret;
}

static int __gpu_write(int dev, void *p, uint64_t size, uint8_t byte)
{
	return one_op(&gpus[dev], (struct drm_vsvm_op){ .kind = DRM_VSVM_OP_WRITE,
		      .addr = (uintptr_t)p, .size = size, .value = byte }, NULL);
}

static void gpu_write(int dev, void *p, uint64_t size, uint8_t byte)
{
	igt_assert_eq(__gpu_write(dev, p, size, byte), 0);
}

static int __gpu_read(int dev, const void *p, uint64_t size, uint64_t *sum)
{
	return one_op(&gpus[dev], (struct drm_vsvm_op){ .kind = DRM_VSVM_OP_READ,
		      .addr = (uintptr_t)p, .size = size }, sum);
}

static uint64_t gpu_read(int dev, const void *p, uint64_t size)
{
	uint64_t sum = 0;

	igt_assert_eq(__gpu_read(dev, p, size, &sum), 0);
	return sum;
}

static int __gpu_atomic_add(int dev, uint64_t *p, uint64_t value)
{
	return one_op(&gpus[dev], (struct drm_vsvm_op){ .kind = DRM_VSVM_OP_ATOMIC_ADD,
		      .addr = (uintptr_t)p, .size = 8, .value = value }, NULL);
}

static int __gpu_prefetch(int dev, void *p, uint64_t size, uint32_t region, uint64_t *moved)
{
	const struct gpu *g = &gpus[dev];

	return __vsvm_prefetch_device(g->fd, g->vm, g->device, p, size, region, moved);
}

static uint64_t gpu_prefetch(int dev, void *p, uint64_t size, uint32_t region)
{
	uint64_t moved = 0;

	igt_assert_eq(__gpu_prefetch(dev, p, size, region, &moved), 0);
	return moved;
}

static void gpu_madvise(int dev, void *p, uint64_t size, uint32_t preferred, uint32_t atomic)
{
	vsvm_madvise(gpus[dev].fd, gpus[dev].vm, p, size, preferred, atomic);
}

static uint32_t flags_on(int dev, const void *p)
{
	return vsvm_pte_flags_device(gpus[dev].fd, gpus[dev].vm, gpus[dev].device, p);
}

/* The counters of device @dev (and of its own VM). */
static void dev_stats(int dev, struct drm_vsvm_stats *stats)
{
	vsvm_stats(fds[dev], vms[dev], stats);
}

/* Whether device b maps a page in the VRAM of device a as it is: a peer. */
static bool peers(int a, int b)
{
	uint8_t *p = vsvm_pattern_mmap(SZ_2M);
	bool peer;

	gpu_prefetch(a, p, SZ_2M, DRM_VSVM_REGION_VRAM);
	gpu_read(b, p, PAGE);
	peer = flags_on(b, p) & DRM_VSVM_PTE_PEER;
	munmap(p, SZ_2M);
	return peer;
}

/* Two devices that are peers, or that are not. */
static void require_pair(bool peer, int *a, int *b)
{
	for (*a = 0; *a < devices; (*a)++)
		for (*b = *a + 1; *b < devices; (*b)++)
			if (peers(*a, *b) == peer)
				return;
	igt_require_f(false, peer ?
		      "two devices of one interconnect group are needed (vsvm.p2p_groups)\n" :
		      "two devices of different interconnect groups are needed\n");
}

static void test_peer_access(void)
{
	uint8_t *p = vsvm_pattern_mmap(2 * SZ_2M);
	uint64_t sum = vsvm_cpu_sum(p, 2 * SZ_2M);
	struct drm_vsvm_stats before, after;
	int a, b;

	require_pair(true, &a, &b);
	igt_assert_eq_u64(gpu_prefetch(a, p, 2 * SZ_2M, DRM_VSVM_REGION_VRAM),
			  2 * SZ_2M / PAGE);
	igt_assert_eq_u64(gpu_read(a, p, 2 * SZ_2M), sum);
	dev_stats(a, &before);
	igt_assert_eq_u64(gpu_read(b, p, 2 * SZ_2M), sum);
	igt_assert_eq(flags_on(b, p + SZ_2M + PAGE) & (DRM_VSVM_PTE_VRAM | DRM_VSVM_PTE_PEER),
		      DRM_VSVM_PTE_VRAM | DRM_VSVM_PTE_PEER);
	/* The peer writes into the VRAM it maps: the owner keeps its mapping and reads it. */
	gpu_write(b, p, SZ_2M, 0x5a);
	igt_assert_eq(flags_on(a, p) & (DRM_VSVM_PTE_VRAM | DRM_VSVM_PTE_PEER),
		      DRM_VSVM_PTE_VRAM);
	igt_assert_eq_u64(gpu_read(a, p, SZ_2M), 0x5aUL * SZ_2M);
	dev_stats(a, &after);
	/* Nothing went through system memory. */
	igt_assert_eq_u64(after.dev_cpu_faults, before.dev_cpu_faults);
	igt_assert_eq_u64(after.dev_bytes_evicted, before.dev_bytes_evicted);
	igt_assert_eq_u64(after.dev_vram_used, before.dev_vram_used);
	igt_assert_eq(p[SZ_2M - 1], 0x5a);
	igt_assert_eq(p[SZ_2M], (uint8_t)(SZ_2M / PAGE * 3));
	munmap(p, 2 * SZ_2M);
}

/*
 * Pages in the VRAM of device a, wanted in the VRAM of device b: a peer moves
 * them with a prefetch, device to device; a device of another group gets them
 * back in system memory when it touches them, as the CPU does, and moves
 * them from there.
 */
static void test_migrate(bool peer)
{
	uint8_t *p = vsvm_pattern_mmap(2 * SZ_2M);
	uint64_t sum = vsvm_cpu_sum(p, 2 * SZ_2M);
	struct drm_vsvm_stats a0, a1, b0, b1;
	int a, b;

	require_pair(peer, &a, &b);
	gpu_prefetch(a, p, 2 * SZ_2M, DRM_VSVM_REGION_VRAM);
	dev_stats(a, &a0);
	dev_stats(b, &b0);
	if (!peer) {
		igt_assert_eq_u64(gpu_read(b, p, 2 * SZ_2M), sum);
		igt_assert_eq(flags_on(b, p) & DRM_VSVM_PTE_VRAM, 0);
	}
	igt_assert_eq_u64(gpu_prefetch(b, p, 2 * SZ_2M, DRM_VSVM_REGION_VRAM),
			  2 * SZ_2M / PAGE);
	dev_stats(a, &a1);
	dev_stats(b, &b1);
	igt_info("%s: %llu bytes from the peer, %llu faulted back, %llu huge pages\n",
		 peer ? "peers" : "no peers",
		 (unsigned long long)(b1.dev_bytes_from_peers - b0.dev_bytes_from_peers),
		 (unsigned long long)(a1.dev_bytes_cpu_faulted - a0.dev_bytes_cpu_faulted),
		 (unsigned long long)(b1.dev_huge_folios - b0.dev_huge_folios));
	if (peer) {
		/* Device to device: nothing came back to system memory. */
		igt_assert_eq_u64(b1.dev_bytes_from_peers - b0.dev_bytes_from_peers, 2 * SZ_2M);
		igt_assert_eq_u64(a1.dev_cpu_faults, a0.dev_cpu_faults);
		igt_assert_eq_u64(a1.dev_bytes_evicted, a0.dev_bytes_evicted);
	} else {
		igt_assert_eq_u64(b1.dev_bytes_from_peers, b0.dev_bytes_from_peers);
		igt_assert_eq_u64(a1.dev_bytes_cpu_faulted - a0.dev_bytes_cpu_faulted, 2 * SZ_2M);
	}
	igt_assert_eq_u64(a0.dev_vram_used - a1.dev_vram_used, 2 * SZ_2M);
	igt_assert_eq_u64(b1.dev_vram_used - b0.dev_vram_used, 2 * SZ_2M);
	igt_assert_eq_u64(gpu_read(b, p, 2 * SZ_2M), sum);
	igt_assert_eq(flags_on(b, p) & (DRM_VSVM_PTE_VRAM | DRM_VSVM_PTE_PEER), DRM_VSVM_PTE_VRAM);
	igt_assert_eq_u64(gpu_read(a, p, 2 * SZ_2M), sum);
	igt_assert_eq_u64(vsvm_cpu_sum(p, 2 * SZ_2M), sum);
	munmap(p, 2 * SZ_2M);
}

/* Each device in turn writes a buffer it prefers in its VRAM: it moves every time. */
static void test_ping_pong(void)
{
	const int rounds = 16;
	uint8_t *p = vsvm_pattern_mmap(SZ_2M);
	struct drm_vsvm_stats s[2][2];
	int dev[2];

	require_pair(true, &dev[0], &dev[1]);
	for (int i = 0; i < 2; i++) {
		gpu_madvise(dev[i], p, SZ_2M, DRM_VSVM_REGION_VRAM, DRM_VSVM_ATOMIC_VRAM);
		dev_stats(dev[i], &s[i][0]);
	}
	for (int r = 0; r < rounds; r++) {
		int me = dev[r % 2], other = dev[(r + 1) % 2];

		gpu_write(me, p, SZ_2M, (uint8_t)(r + 1));
		igt_assert_eq(flags_on(me, p) & (DRM_VSVM_PTE_VRAM | DRM_VSVM_PTE_PEER),
			      DRM_VSVM_PTE_VRAM);
		igt_assert_eq_u64(gpu_read(other, p, SZ_2M),
				  (r + 1) * (uint64_t)SZ_2M);
	}
	for (int i = 0; i < 2; i++) {
		dev_stats(dev[i], &s[i][1]);
		igt_assert_lte_u64((uint64_t)rounds / 2 * SZ_2M,
				   s[i][1].dev_bytes_from_peers - s[i][0].dev_bytes_from_peers);
		igt_assert_eq_u64(s[i][1].dev_cpu_faults, s[i][0].dev_cpu_faults);
	}
	igt_assert_eq(p[SZ_2M - 1], rounds);
	munmap(p, SZ_2M);
}

struct adder {
	pthread_t thread;
	int dev;
	uint64_t *counters;
	int rounds;
	uint64_t errors;
};

static void *gpu_adder(void *arg)
{
	struct adder *w = arg;

	for (int r = 0; r < w->rounds; r++)
		if (__gpu_atomic_add(w->dev, &w->counters[r % 4 * 256], 1))
			w->errors++;
	return NULL;
}

/*
 * Both devices and the CPU add to the same counters, on two pages, at once:
 * exact totals. Peers may both map a page for atomics; devices of different
 * groups take it from each other.
 */
static void test_atomics(uint32_t policy, bool peer)
{
	const int rounds = 200;
	uint64_t *counters = vsvm_aligned_mmap(2 * PAGE, PAGE, PROT_READ | PROT_WRITE,
					       MAP_PRIVATE | MAP_ANONYMOUS);
	struct adder w[2] = {};
	uint64_t total = 0;

	require_pair(peer, &w[0].dev, &w[1].dev);
	memset(counters, 0, 2 * PAGE);
	for (int i = 0; i < 2; i++) {
		gpu_madvise(w[i].dev, counters, 2 * PAGE,
			    policy == DRM_VSVM_ATOMIC_VRAM ? DRM_VSVM_REGION_VRAM :
			    DRM_VSVM_REGION_SYSTEM, policy);
		w[i].counters = counters;
		w[i].rounds = rounds;
		igt_assert_eq(pthread_create(&w[i].thread, NULL, gpu_adder, &w[i]), 0);
	}
	for (int r = 0; r < rounds; r++)
		__atomic_fetch_add(&counters[r % 4 * 256], 1, __ATOMIC_SEQ_CST);
	for (int i = 0; i < 2; i++) {
		igt_assert_eq(pthread_join(w[i].thread, NULL), 0);
		igt_assert_eq_u64(w[i].errors, 0);
	}
	for (int c = 0; c < 4; c++)
		total += counters[c * 256];
	igt_assert_eq_u64(total, 3 * rounds);
	munmap(counters, 2 * PAGE);
}

struct racer {
	pthread_t thread;
	int dev, id;
	uint8_t *buf;
	uint64_t size;
	uint64_t rounds, errors;
};

/*
 * Each thread works on one device: it writes its own slice of the shared
 * buffer, reads the whole buffer, and moves it between its VRAM and system
 * memory, while the others do the same from their devices.
 */
static void *race_worker(void *arg)
{
	struct racer *w = arg;
	uint64_t slice = w->size / 4, sum = 0, moved;
	uint8_t *mine = w->buf + w->id * slice;

	igt_until_timeout(RACE_SECONDS) {
		uint8_t byte = (uint8_t)(w->id * 64 + w->rounds % 63 + 1);
		int ret;

		ret = __gpu_write(w->dev, mine, slice, byte);
		ret = ret ?: __gpu_prefetch(w->dev, w->buf, w->size,
					    w->rounds & 1 ? DRM_VSVM_REGION_VRAM :
					    DRM_VSVM_REGION_SYSTEM, &moved);
		ret = ret ?: __gpu_read(w->dev, w->buf, w->size, &sum);
		ret = ret ?: __gpu_read(w->dev, mine, slice, &sum);
		if (ret || sum != byte * slice || mine[slice - 1] != byte) {
			w->errors++;
			igt_warn("device %d thread %d round %llu: %d, sum %llu of %llu\n", w->dev,
				 w->id, (unsigned long long)w->rounds, ret,
				 (unsigned long long)sum, (unsigned long long)(byte * slice));
		}
		w->rounds++;
	}
	return NULL;
}

/*
 * Threads on two devices (two each) fault, migrate and read the same buffer,
 * and the CPU reads it, for a bounded time: no error, no wrong byte, and all
 * VRAM back once the buffer is gone.
 */
static void test_race_threads(bool peer)
{
	const uint64_t size = 4 * SZ_2M;
	uint8_t *buf = vsvm_aligned_mmap(size, SZ_2M, PROT_READ | PROT_WRITE,
					 MAP_PRIVATE | MAP_ANONYMOUS);
	struct drm_vsvm_stats s0[2], s1[2];
	struct racer w[4] = {};
	int dev[2];

	require_pair(peer, &dev[0], &dev[1]);
	for (int i = 0; i < 2; i++)
		dev_stats(dev[i], &s0[i]);
	for (int i = 0; i < 4; i++) {
		w[i] = (struct racer){ .dev = dev[i % 2], .id = i, .buf = buf, .size = size };
		igt_assert_eq(pthread_create(&w[i].thread, NULL, race_worker, &w[i]), 0);
	}
	for (int i = 0; i < 4; i++) {
		igt_assert_eq(pthread_join(w[i].thread, NULL), 0);
		igt_info("device %d thread %d: %llu rounds\n", w[i].dev, i,
			 (unsigned long long)w[i].rounds);
		igt_assert_eq_u64(w[i].errors, 0);
		igt_assert_lt_u64(0, w[i].rounds);
	}
	munmap(buf, size);
	for (int i = 0; i < 2; i++) {
		dev_stats(dev[i], &s1[i]);
		igt_assert_eq_u64(s1[i].dev_vram_used, s0[i].dev_vram_used);
	}
}

/*
 * Processes race on the pages of a buffer that their parent moved to VRAM
 * before forking them, shared copy-on-write: each, with VMs of its own on two
 * peers (or one VM spanning both), writes its slice from one and moves it to
 * the other, reads the slices it did not write, and maps and unmaps a scratch
 * buffer meanwhile. Nobody sees another's writes, and all VRAM comes back.
 */
static void test_race_processes(bool shared)
{
	const uint64_t slice = SZ_2M;
	uint8_t *buf = vsvm_pattern_mmap(4 * slice);
	struct drm_vsvm_stats s0, s1;
	uint64_t sums[4];
	int pair[2];

	require_pair(true, &pair[0], &pair[1]);
	for (int k = 0; k < 4; k++)
		sums[k] = vsvm_cpu_sum(buf + k * slice, slice);
	dev_stats(pair[0], &s0);
	igt_assert_eq_u64(gpu_prefetch(pair[0], buf, 4 * slice, DRM_VSVM_REGION_VRAM),
			  4 * slice / PAGE);
	igt_fork(child, 4) {
		uint8_t *mine = buf + child * slice;
		int cfd[2];
		uint64_t r = 0;

		/* The child's own files and VMs, as devices 0 and 1. */
		for (int i = 0; i < 2; i++) {
			cfd[i] = __drm_open_driver_another(pair[i], DRIVER_VSVM);
			igt_assert(cfd[i] >= 0);
		}
		if (shared) {
			uint32_t vm = vsvm_vm_create_devices(cfd[0], 1u << indices[pair[1]]);

			for (int i = 0; i < 2; i++)
				gpus[i] = (struct gpu){ cfd[0], vm, indices[pair[i]] };
		} else {
			for (int i = 0; i < 2; i++)
				gpus[i] = (struct gpu){ cfd[i], vsvm_vm_create(cfd[i]),
							VSVM_FILE_DEVICE };
		}
		igt_until_timeout(RACE_SECONDS) {
			uint8_t byte = (uint8_t)(child * 64 + r % 63 + 1);
			int w = r & 1, o = !w, k = (child + 1 + r % 3) % 4;
			uint8_t *scratch = vsvm_aligned_mmap(SZ_2M, SZ_2M, PROT_READ | PROT_WRITE,
							     MAP_PRIVATE | MAP_ANONYMOUS);

			gpu_write(w, mine, slice, byte);
			gpu_write(o, scratch, SZ_2M, byte);
			gpu_prefetch(o, mine, slice, DRM_VSVM_REGION_VRAM);
			igt_assert_eq_u64(gpu_read(o, mine, slice), byte * slice);
			igt_assert_eq_u64(gpu_read(w, buf + k * slice, slice), sums[k]);
			igt_assert_eq_u64(gpu_read(w, scratch, SZ_2M), byte * (uint64_t)SZ_2M);
			munmap(scratch, SZ_2M);
			igt_assert_eq(mine[slice / 2], byte);
			r++;
		}
		igt_info("process %d: %llu rounds\n", child, (unsigned long long)r);
		igt_assert_lt_u64(0, r);
		for (int i = 0; i < 2; i++)
			drm_close_driver(cfd[i]);
	}
	igt_waitchildren();
	for (int k = 0; k < 4; k++)
		igt_assert_eq_u64(vsvm_cpu_sum(buf + k * slice, slice), sums[k]);
	munmap(buf, 4 * slice);
	dev_stats(pair[0], &s1);
	igt_assert_eq_u64(s1.dev_vram_used, s0.dev_vram_used);
}

/*
 * One VM on every device: each device reads, maps in its own page table and
 * loses its mapping when the CPU mapping changes; what one device writes, the
 * others and the CPU read. A device the VM does not span is refused.
 */
static void test_shared_vm_devices(void)
{
	uint8_t *p = vsvm_pattern_mmap(SZ_2M);
	uint64_t sum = vsvm_cpu_sum(p, SZ_2M);
	struct drm_vsvm_exec exec = {};
	struct drm_vsvm_op op = { .kind = DRM_VSVM_OP_READ, .addr = (uintptr_t)p, .size = 1 };
	uint32_t lone;

	/* Each device has a page table of its own. */
	for (int d = 0; d < devices; d++) {
		igt_assert_eq(flags_on(d, p) & DRM_VSVM_PTE_VALID, 0);
		igt_assert_eq_u64(gpu_read(d, p, SZ_2M), sum);
		igt_assert(flags_on(d, p + SZ_2M - PAGE) & DRM_VSVM_PTE_VALID);
		for (int e = d + 1; e < devices; e++)
			igt_assert_eq(flags_on(e, p) & DRM_VSVM_PTE_VALID, 0);
	}
	/* The CPU drops the pages: every device loses them, and reads zeros. */
	igt_assert_eq(madvise(p, SZ_2M, MADV_DONTNEED), 0);
	for (int d = 0; d < devices; d++)
		igt_assert_eq(flags_on(d, p) & DRM_VSVM_PTE_VALID, 0);
	for (int d = 0; d < devices; d++)
		igt_assert_eq_u64(gpu_read(d, p, SZ_2M), 0);
	/* Each device in turn writes; the others and the CPU read it. */
	for (int d = 0; d < devices; d++) {
		uint8_t byte = (uint8_t)(0x11 * (d + 1));

		gpu_write(d, p + PAGE, SZ_2M - 2 * PAGE, byte);
		for (int e = 0; e < devices; e++)
			igt_assert_eq_u64(gpu_read(e, p, SZ_2M),
					  (uint64_t)byte * (SZ_2M - 2 * PAGE));
		igt_assert_eq(p[PAGE], byte);
		igt_assert_eq(p[SZ_2M - PAGE - 1], byte);
		igt_assert_eq(p[SZ_2M - 1], 0);
	}
	munmap(p, SZ_2M);
	for (int d = 0; d < devices; d++)
		igt_assert_eq(flags_on(d, p) & DRM_VSVM_PTE_VALID, 0);

	/* A device the VM does not span, a device of no VM, a device without its flag. */
	lone = vsvm_vm_create(fds[0]);
	igt_assert_eq(__vsvm_exec_device(fds[0], lone, indices[1], &op, 1), -EINVAL);
	igt_assert_eq(__vsvm_exec_device(fds[0], shared_vm, 31, &op, 1), -EINVAL);
	igt_assert_eq(__vsvm_vm_create_devices(fds[0], PAGE, SZ_2M, 0, 1u << 31, &lone),
		      -EINVAL);
	exec = (struct drm_vsvm_exec){ .ops = (uintptr_t)&op, .count = 1, .vm_id = shared_vm,
				       .device = indices[1] ?: indices[0] };
	igt_assert_eq(igt_ioctl(fds[0], DRM_IOCTL_VSVM_EXEC, &exec), -1);
	igt_assert_eq(errno, EINVAL);
	vsvm_vm_destroy(fds[0], lone);
}

/* The subtests, with a VM of its own on each device or (shared) one VM spanning them. */
static void vm_subtests(bool shared)
{
	const char *vm = shared ? "shared-vm-" : "";
	void (*use)(void) = shared ? use_shared_vm : use_own_vms;

	igt_describe("A device maps a peer's VRAM as it is, and writes into it");
	igt_subtest_f("%speer-access", vm) {
		use();
		test_peer_access();
	}
	igt_describe("A prefetch moves pages from a peer's VRAM directly, device to device");
	igt_subtest_f("%speer-migrate", vm) {
		use();
		test_migrate(true);
	}
	igt_describe("A device of another group gets a device's VRAM pages through system memory");
	igt_subtest_f("%smigrate-through-system", vm) {
		use();
		test_migrate(false);
	}
	igt_describe("Two devices in turn write a buffer each prefers in its own VRAM");
	igt_subtest_f("%sping-pong", vm) {
		use();
		test_ping_pong();
	}
	igt_describe("Two peers and the CPU add to shared counters in VRAM at once: exact totals");
	igt_subtest_f("%satomic-vram", vm) {
		use();
		test_atomics(DRM_VSVM_ATOMIC_VRAM, true);
	}
	igt_describe("Two peers and the CPU add to shared counters in system memory at once");
	igt_subtest_f("%satomic-exclusive", vm) {
		use();
		test_atomics(DRM_VSVM_ATOMIC_EXCLUSIVE, true);
	}
	igt_describe("Two devices of different groups and the CPU do the same");
	igt_subtest_f("%satomic-exclusive-no-peers", vm) {
		use();
		test_atomics(DRM_VSVM_ATOMIC_EXCLUSIVE, false);
	}
	igt_describe("Threads on two peers fault, migrate and read one buffer for a while");
	igt_subtest_f("%srace-threads-peers", vm) {
		use();
		test_race_threads(true);
	}
	igt_describe("Threads on two devices of different groups do the same");
	igt_subtest_f("%srace-threads-no-peers", vm) {
		use();
		test_race_threads(false);
	}
	igt_describe("Processes on two peers race on pages in VRAM they share copy-on-write");
	igt_subtest_f("%srace-processes", vm) {
		use();
		test_race_processes(shared);
	}
}

igt_main
{
	igt_fixture {
		uint32_t others = 0;

		for (devices = 0; devices < MAX_DEVICES; devices++) {
			fds[devices] = __drm_open_driver_another(devices, DRIVER_VSVM);
			if (fds[devices] < 0)
				break;
			vms[devices] = vsvm_vm_create(fds[devices]);
			indices[devices] = vsvm_device_index(fds[devices]);
			others |= 1u << indices[devices];
		}
		igt_require_f(devices >= 2, "two vsvm devices are needed (vsvm.devices)\n");
		shared_vm = vsvm_vm_create_devices(fds[0], others);
	}

	vm_subtests(false);
	vm_subtests(true);

	igt_describe("One VM on every device: a page table each, one memory, bad devices refused");
	igt_subtest("shared-vm-devices") {
		use_shared_vm();
		test_shared_vm_devices();
	}

	igt_fixture {
		vsvm_vm_destroy(fds[0], shared_vm);
		for (int i = 0; i < devices; i++) {
			vsvm_vm_destroy(fds[i], vms[i]);
			drm_close_driver(fds[i]);
		}
	}
}
