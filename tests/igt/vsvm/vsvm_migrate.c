// SPDX-License-Identifier: MIT
/*
 * vsvm_migrate: where mirrored memory lives. Prefetch and preferred
 * location, migration both ways, CPU faults back from VRAM, huge pages that
 * move whole, mixed and partial migrations, eviction under VRAM pressure,
 * atomics shared by GPU and CPU, and two devices mirroring one process.
 */
#include <fcntl.h>
#include <pthread.h>
#include <sys/mman.h>

#include "igt.h"
#include "vsvm/vsvm_ioctl.h"

IGT_TEST_DESCRIPTION("Placement of mirrored memory: VRAM, eviction, atomics, two devices");

#define PAGE VSVM_PAGE

static int fd;
static uint32_t vm;

static bool in_vram(const void *p)
{
	return vsvm_pte_flags(fd, vm, p) & DRM_VSVM_PTE_VRAM;
}

/* The GPU reads a span and maps it; returns whether its first page is in VRAM. */
static bool gpu_check(const uint8_t *p, uint64_t size, uint64_t expect)
{
	igt_assert_eq_u64(vsvm_read(fd, vm, p, size), expect);
	return in_vram(p);
}

static void test_prefetch_vram(void)
{
	uint8_t *p = vsvm_pattern_mmap(2 * SZ_2M);
	uint64_t sum = vsvm_cpu_sum(p, 2 * SZ_2M);
	struct drm_vsvm_stats before, after;

	vsvm_stats(fd, vm, &before);
	igt_assert_eq_u64(vsvm_prefetch(fd, vm, p, 2 * SZ_2M, DRM_VSVM_REGION_VRAM),
			  2 * SZ_2M / PAGE);
	igt_assert(gpu_check(p, 2 * SZ_2M, sum));
	igt_assert(in_vram(p + SZ_2M));
	vsvm_write(fd, vm, p, SZ_2M, 0x3c);
	vsvm_stats(fd, vm, &after);
	igt_assert_eq_u64(after.bytes_to_vram - before.bytes_to_vram, 2 * SZ_2M);
	igt_assert_eq_u64(after.dev_cpu_faults, before.dev_cpu_faults);
	/* Nothing moves again: it is there already. */
	igt_assert_eq_u64(vsvm_prefetch(fd, vm, p, 2 * SZ_2M, DRM_VSVM_REGION_VRAM), 0);
	munmap(p, 2 * SZ_2M);
}

static void test_prefetch_system(void)
{
	uint8_t *p = vsvm_pattern_mmap(SZ_2M);
	uint64_t sum = vsvm_cpu_sum(p, SZ_2M);
	struct drm_vsvm_stats before, after;

	vsvm_prefetch(fd, vm, p, SZ_2M, DRM_VSVM_REGION_VRAM);
	vsvm_stats(fd, vm, &before);
	igt_assert_eq_u64(vsvm_prefetch(fd, vm, p, SZ_2M, DRM_VSVM_REGION_SYSTEM), SZ_2M / PAGE);
	igt_assert_eq(vsvm_pte_flags(fd, vm, p), 0);
	igt_assert_eq_u64(vsvm_cpu_sum(p, SZ_2M), sum);
	vsvm_stats(fd, vm, &after);
	/* The CPU found its data in system memory: no CPU fault moved it. */
	igt_assert_eq_u64(after.dev_cpu_faults, before.dev_cpu_faults);
	igt_assert_eq_u64(after.bytes_evicted - before.bytes_evicted, SZ_2M);
	igt_assert(!gpu_check(p, SZ_2M, sum));
	munmap(p, SZ_2M);
}

static void test_preferred(uint32_t region)
{
	uint8_t *p = vsvm_pattern_mmap(SZ_2M);
	uint64_t sum = vsvm_cpu_sum(p, SZ_2M);
	struct drm_vsvm_pte pte;

	vsvm_madvise(fd, vm, p, SZ_2M, region, DRM_VSVM_ATOMIC_EXCLUSIVE);
	igt_assert_eq(gpu_check(p, SZ_2M, sum), region == DRM_VSVM_REGION_VRAM);
	vsvm_snapshot(fd, vm, p, 1, &pte);
	igt_assert_eq_u32(pte.shift, 21);
	if (region == DRM_VSVM_REGION_SYSTEM) {
		/* "System" keeps pages where they are, VRAM included. */
		vsvm_prefetch(fd, vm, p, SZ_2M, DRM_VSVM_REGION_VRAM);
		igt_assert(gpu_check(p, SZ_2M, sum));
	}
	munmap(p, SZ_2M);
}

/* The CPU touches one byte per page of a buffer in VRAM: every page comes back. */
static void test_cpu_fault(void)
{
	uint8_t *p = vsvm_pattern_mmap(2 * SZ_2M);
	/* What the buffer sums to once the GPU wrote its first page of the second 2M. */
	uint64_t sum = vsvm_cpu_sum(p, 2 * SZ_2M) - vsvm_cpu_sum(p + SZ_2M, PAGE) + 0xeeUL * PAGE;
	uint64_t i, cpu_sum = 0;
	struct drm_vsvm_stats before, after;

	igt_assert_eq_u64(vsvm_prefetch(fd, vm, p, 2 * SZ_2M, DRM_VSVM_REGION_VRAM),
			  2 * SZ_2M / PAGE);
	vsvm_write(fd, vm, p + SZ_2M, PAGE, 0xee);
	igt_assert(gpu_check(p, 2 * SZ_2M, sum));
	igt_assert(in_vram(p + SZ_2M));
	vsvm_stats(fd, vm, &before);
	for (i = 0; i < 2 * SZ_2M; i += PAGE)
		cpu_sum += p[i];
	vsvm_stats(fd, vm, &after);
	igt_assert(after.dev_cpu_faults > before.dev_cpu_faults);
	igt_assert_eq_u64(after.dev_bytes_cpu_faulted - before.dev_bytes_cpu_faulted, 2 * SZ_2M);
	igt_assert_eq(p[SZ_2M], 0xee);
	igt_assert_eq(p[SZ_2M + PAGE - 1], 0xee);
	igt_assert(cpu_sum);
	igt_assert(!in_vram(p) && !in_vram(p + SZ_2M));
	munmap(p, 2 * SZ_2M);
}

/*
 * Huge pages move to VRAM and back whole, as one folio each: by prefetch both
 * ways, and on the one CPU fault that touches each.
 */
static void test_huge_page(void)
{
	uint8_t *p = vsvm_aligned_mmap(2 * SZ_2M, SZ_2M, PROT_READ | PROT_WRITE,
				       MAP_PRIVATE | MAP_ANONYMOUS);
	const long huge_kb = 2 * SZ_2M / 1024, kb = vsvm_anon_huge_kb();
	struct drm_vsvm_stats before, after;
	uint64_t i, sum;

	igt_assert_eq(madvise(p, 2 * SZ_2M, MADV_HUGEPAGE), 0);
	for (i = 0; i < 2 * SZ_2M; i++)
		p[i] = (uint8_t)(i / PAGE * 3 + i);
	igt_require_f(vsvm_anon_huge_kb() - kb >= huge_kb, "the buffer got no huge pages\n");
	sum = vsvm_cpu_sum(p, 2 * SZ_2M);

	vsvm_stats(fd, vm, &before);
	igt_assert_eq_u64(vsvm_prefetch(fd, vm, p, 2 * SZ_2M, DRM_VSVM_REGION_VRAM),
			  2 * SZ_2M / PAGE);
	vsvm_stats(fd, vm, &after);
	igt_assert_eq_u64(after.dev_huge_folios - before.dev_huge_folios, 2);
	igt_assert(gpu_check(p, 2 * SZ_2M, sum));
	igt_assert(in_vram(p + SZ_2M + 7 * PAGE));

	before = after;
	igt_assert_eq_u64(vsvm_cpu_sum(p, 2 * SZ_2M), sum);
	vsvm_stats(fd, vm, &after);
	igt_assert_eq_u64(after.dev_cpu_faults - before.dev_cpu_faults, 2);
	igt_assert_eq_u64(after.dev_huge_folios - before.dev_huge_folios, 2);
	igt_assert(vsvm_anon_huge_kb() - kb >= huge_kb);

	vsvm_stats(fd, vm, &before);
	igt_assert_eq_u64(vsvm_prefetch(fd, vm, p, 2 * SZ_2M, DRM_VSVM_REGION_VRAM),
			  2 * SZ_2M / PAGE);
	igt_assert_eq_u64(vsvm_prefetch(fd, vm, p, 2 * SZ_2M, DRM_VSVM_REGION_SYSTEM),
			  2 * SZ_2M / PAGE);
	vsvm_stats(fd, vm, &after);
	igt_assert_eq_u64(after.dev_huge_folios - before.dev_huge_folios, 4);
	igt_assert_eq_u64(after.dev_cpu_faults, before.dev_cpu_faults);
	igt_assert_eq_u64(vsvm_cpu_sum(p, 2 * SZ_2M), sum);
	igt_assert(vsvm_anon_huge_kb() - kb >= huge_kb);
	munmap(p, 2 * SZ_2M);
}

/* Pages pinned by the kernel (a long-term GUP pin) cannot move: a mixed range. */
static void test_partial_pinned(void)
{
	/* struct pin_longterm_test of mm/gup_test.h */
	struct {
		uint64_t addr, size;
		uint32_t flags;
	} pin;
	uint8_t *p = vsvm_pattern_mmap(SZ_2M);
	uint64_t sum = vsvm_cpu_sum(p, SZ_2M);
	int gup = open("/sys/kernel/debug/gup_test", O_RDWR);

	igt_require_f(gup >= 0, "no /sys/kernel/debug/gup_test (CONFIG_GUP_TEST) to pin pages\n");
	pin.addr = (uintptr_t)p + 5 * PAGE;
	pin.size = PAGE;
	pin.flags = 1; /* PIN_LONGTERM_TEST_FLAG_USE_WRITE */
	do_ioctl(gup, _IOW('g', 7, pin), &pin);
	igt_assert_eq_u64(vsvm_prefetch(fd, vm, p, SZ_2M, DRM_VSVM_REGION_VRAM), SZ_2M / PAGE - 1);
	igt_assert_eq_u64(vsvm_read(fd, vm, p, SZ_2M), sum);
	igt_assert(!in_vram(p + 5 * PAGE));
	igt_assert(in_vram(p) && in_vram(p + 6 * PAGE));
	vsvm_write(fd, vm, p, SZ_2M, 0x99);
	do_ioctl(gup, _IO('g', 8), NULL);
	close(gup);
	for (uint64_t i = 0; i < SZ_2M; i += PAGE / 2)
		igt_assert_eq(p[i], 0x99);
	munmap(p, SZ_2M);
}

static void test_partial_injected(void)
{
	uint8_t *p = vsvm_pattern_mmap(SZ_2M);
	uint64_t sum = vsvm_cpu_sum(p, SZ_2M);

	vsvm_fail(fd, "partial_migration", 1);
	igt_assert_eq_u64(vsvm_prefetch(fd, vm, p, SZ_2M, DRM_VSVM_REGION_VRAM), SZ_2M / PAGE - 1);
	igt_assert_eq_u64(vsvm_read(fd, vm, p, SZ_2M), sum);
	igt_assert(!in_vram(p) && in_vram(p + PAGE));
	/* Back to system memory: the pages in VRAM move, the other stays. */
	igt_assert_eq_u64(vsvm_prefetch(fd, vm, p, SZ_2M, DRM_VSVM_REGION_SYSTEM),
			  SZ_2M / PAGE - 1);
	igt_assert_eq_u64(vsvm_cpu_sum(p, SZ_2M), sum);
	munmap(p, SZ_2M);
}

static void test_failed_migration(bool copy)
{
	uint8_t *p = vsvm_pattern_mmap(SZ_2M);
	uint64_t sum = vsvm_cpu_sum(p, SZ_2M), moved = 1;
	const char *fault = copy ? "fail_copy" : "fail_alloc";

	vsvm_fail(fd, fault, 1);
	igt_assert_eq(__vsvm_prefetch(fd, vm, p, SZ_2M, DRM_VSVM_REGION_VRAM, &moved), 0);
	igt_assert_eq_u64(moved, 0);
	igt_assert(!gpu_check(p, SZ_2M, sum));
	/* A preferred-VRAM fault that cannot migrate still maps system memory. */
	vsvm_fail(fd, fault, 1);
	vsvm_madvise(fd, vm, p, SZ_2M, DRM_VSVM_REGION_VRAM, DRM_VSVM_ATOMIC_EXCLUSIVE);
	mprotect(p, SZ_2M, PROT_READ);
	mprotect(p, SZ_2M, PROT_READ | PROT_WRITE);
	igt_assert(!gpu_check(p, SZ_2M, sum));
	igt_assert_eq_u64(vsvm_prefetch(fd, vm, p, SZ_2M, DRM_VSVM_REGION_VRAM), SZ_2M / PAGE);
	igt_assert(gpu_check(p, SZ_2M, sum));
	munmap(p, SZ_2M);
}

/* A working set four times VRAM, moved in 2M at a time while the GPU writes it. */
static void test_evict_pressure(void)
{
	struct drm_vsvm_stats st;
	uint64_t size, i, bad = 0;
	uint8_t *p;

	vsvm_stats(fd, vm, &st);
	size = 4 * st.dev_vram_size;
	p = vsvm_pattern_mmap(size);
	for (i = 0; i < size; i += SZ_2M) {
		igt_assert_eq_u64(vsvm_prefetch(fd, vm, p + i, SZ_2M, DRM_VSVM_REGION_VRAM),
				  SZ_2M / PAGE);
		vsvm_write(fd, vm, p + i, PAGE, (uint8_t)(i / SZ_2M + 1));
	}
	vsvm_stats(fd, vm, &st);
	igt_assert(st.dev_evictions > 0);
	igt_assert(st.dev_vram_used <= st.dev_vram_size);
	for (i = 0; i < size; i++) {
		uint8_t want = i % SZ_2M < PAGE ? (uint8_t)(i / SZ_2M + 1) :
						  (uint8_t)(i / PAGE * 3 + i);

		bad += p[i] != want;
	}
	igt_assert_eq_u64(bad, 0);
	munmap(p, size);
}

/* Processes competing for one device's VRAM, each with VRAM's size of data. */
static void test_evict_processes(int n)
{
	struct drm_vsvm_stats st;

	vsvm_stats(fd, vm, &st);
	igt_fork(child, n) {
		int cfd = drm_open_driver_render(DRIVER_VSVM);
		uint32_t cvm = vsvm_vm_create(cfd);
		uint64_t size = st.dev_vram_size, i;
		uint8_t *p = vsvm_aligned_mmap(size, SZ_2M, PROT_READ | PROT_WRITE,
					       MAP_PRIVATE | MAP_ANONYMOUS);

		for (int round = 0; round < 3; round++) {
			for (i = 0; i < size; i += SZ_2M) {
				uint8_t byte = (uint8_t)(child * 16 + round + 1);

				vsvm_prefetch(cfd, cvm, p + i, SZ_2M, DRM_VSVM_REGION_VRAM);
				vsvm_write(cfd, cvm, p + i, SZ_2M, byte);
			}
			for (i = 0; i < size; i += PAGE / 4)
				igt_assert_eq(p[i], (uint8_t)(child * 16 + round + 1));
		}
		drm_close_driver(cfd);
	}
	igt_waitchildren();
	vsvm_stats(fd, vm, &st);
	igt_assert(st.dev_evictions > 0);
}

struct atomic_thread {
	uint64_t *counters;
	int n, rounds, ret;
};

static void *gpu_increments(void *arg)
{
	struct atomic_thread *t = arg;
	struct drm_vsvm_op ops[64];
	int r, i;

	for (i = 0; i < t->n; i++)
		ops[i] = (struct drm_vsvm_op){ .kind = DRM_VSVM_OP_ATOMIC_ADD,
			.addr = (uintptr_t)&t->counters[i * 8], .size = 8, .value = 1 };
	for (r = 0; r < t->rounds; r++) {
		/* Out fields must be zero on the way in. */
		for (i = 0; i < t->n; i++)
			ops[i].result = 0;
		t->ret = __vsvm_exec(fd, vm, ops, t->n);
		if (t->ret)
			break;
	}
	return NULL;
}

/*
 * The GPU (a thread submitting atomic adds) and the CPU (atomic increments)
 * count on the same counters at once: no increment is lost.
 */
static void test_atomics(uint32_t policy)
{
	struct atomic_thread t = { .n = 16, .rounds = 50 };
	const int cpu_rounds = 2000;
	pthread_t thread;
	int r, i;

	t.counters = vsvm_aligned_mmap(2 * PAGE, PAGE, PROT_READ | PROT_WRITE,
				       MAP_PRIVATE | MAP_ANONYMOUS);
	memset(t.counters, 0, 2 * PAGE);
	vsvm_madvise(fd, vm, t.counters, 2 * PAGE, DRM_VSVM_REGION_SYSTEM, policy);
	igt_assert_eq(pthread_create(&thread, NULL, gpu_increments, &t), 0);
	for (r = 0; r < cpu_rounds; r++)
		for (i = 0; i < t.n; i++)
			__atomic_fetch_add(&t.counters[i * 8], 1, __ATOMIC_SEQ_CST);
	igt_assert_eq(pthread_join(thread, NULL), 0);
	igt_assert_eq(t.ret, 0);
	for (i = 0; i < t.n; i++)
		igt_assert_eq_u64(t.counters[i * 8], (uint64_t)cpu_rounds + t.rounds);
	munmap(t.counters, 2 * PAGE);
}

igt_main
{
	igt_fixture {
		fd = drm_open_driver_render(DRIVER_VSVM);
		vm = vsvm_vm_create(fd);
	}

	igt_describe("Prefetch to VRAM: the GPU then works on its own memory");
	igt_subtest("prefetch-vram")
		test_prefetch_vram();
	igt_describe("Prefetch to system memory: the data comes back without CPU faults");
	igt_subtest("prefetch-system")
		test_prefetch_system();
	igt_describe("Preferred location VRAM: GPU faults migrate the pages there");
	igt_subtest("preferred-vram")
		test_preferred(DRM_VSVM_REGION_VRAM);
	igt_describe("Preferred location system memory: GPU faults leave the pages there");
	igt_subtest("preferred-system")
		test_preferred(DRM_VSVM_REGION_SYSTEM);
	igt_describe("CPU access to VRAM-resident memory migrates it back");
	igt_subtest("cpu-fault")
		test_cpu_fault();
	igt_describe("A transparent huge page moves to VRAM and back as one 2M folio");
	igt_subtest("huge-page")
		test_huge_page();
	igt_describe("A pinned page stays behind: a mixed range the GPU uses in whole");
	igt_subtest("partial-pinned")
		test_partial_pinned();
	igt_describe("An injected partial migration: a mixed range, both ways");
	igt_subtest("partial-injected")
		test_partial_injected();
	igt_describe("A failed VRAM allocation leaves the memory usable where it was");
	igt_subtest("failed-alloc")
		test_failed_migration(false);
	igt_describe("A failed copy to VRAM leaves the memory usable where it was");
	igt_subtest("failed-copy")
		test_failed_migration(true);
	igt_describe("A working set four times VRAM: eviction keeps every byte");
	igt_subtest("evict-pressure")
		test_evict_pressure();
	igt_describe("Processes competing for one device's VRAM");
	igt_subtest("evict-processes")
		test_evict_processes(3);
	igt_describe("GPU and CPU atomics on shared counters, device-exclusive: exact counts");
	igt_subtest("atomic-exclusive")
		test_atomics(DRM_VSVM_ATOMIC_EXCLUSIVE);
	igt_describe("GPU atomics in VRAM and CPU atomics on shared counters: exact counts");
	igt_subtest("atomic-vram")
		test_atomics(DRM_VSVM_ATOMIC_VRAM);

	igt_describe("Two devices mirror one process and see each other's writes");
	igt_subtest("two-devices") {
		/* As IGT counts devices: the first, then another. */
		int fd1 = __drm_open_driver_another(0, DRIVER_VSVM);
		int fd2 = __drm_open_driver_another(1, DRIVER_VSVM);
		uint8_t *p = vsvm_pattern_mmap(2 * SZ_2M);
		uint32_t vm1, vm2;

		igt_require_f(fd1 >= 0 && fd2 >= 0,
			      "two vsvm devices are needed (vsvm.devices=2)\n");
		vm1 = vsvm_vm_create(fd1);
		vm2 = vsvm_vm_create(fd2);
		vsvm_write(fd1, vm1, p, 2 * SZ_2M, 0x51);
		vsvm_prefetch(fd1, vm1, p, 2 * SZ_2M, DRM_VSVM_REGION_VRAM);
		/* The second device takes the pages out of the first one's VRAM. */
		igt_assert_eq_u64(vsvm_read(fd2, vm2, p, 2 * SZ_2M), 0x51UL * 2 * SZ_2M);
		igt_assert_eq_u64(vsvm_prefetch(fd2, vm2, p, SZ_2M, DRM_VSVM_REGION_VRAM),
				  SZ_2M / PAGE);
		vsvm_write(fd2, vm2, p, PAGE, 0x52);
		igt_assert_eq_u64(vsvm_read(fd1, vm1, p, SZ_2M),
				  0x51UL * (SZ_2M - PAGE) + 0x52UL * PAGE);
		igt_assert_eq(p[0], 0x52);
		igt_assert_eq(p[SZ_2M], 0x51);
		vsvm_vm_destroy(fd2, vm2);
		vsvm_vm_destroy(fd1, vm1);
		drm_close_driver(fd2);
		drm_close_driver(fd1);
		munmap(p, 2 * SZ_2M);
	}

	igt_fixture {
		vsvm_vm_destroy(fd, vm);
		drm_close_driver(fd);
	}
}
