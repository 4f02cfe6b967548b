// SPDX-License-Identifier: MIT
/*
 * vsvm_system_allocator: the GPU works on ordinary process memory and stays
 * coherent when the process changes its mappings. Modelled on IGT's
 * xe_exec_system_allocator and the kernel's hmm-tests.
 */
#include <fcntl.h>
#include <sys/mman.h>
#include <sys/wait.h>

#include "igt.h"
#include "vsvm/vsvm_ioctl.h"

IGT_TEST_DESCRIPTION("GPU access to process memory of every kind, and CPU mapping changes");

#define PAGE VSVM_PAGE

static int fd;
static uint32_t vm;

/* --- memory of every kind ---------------------------------------------- */

enum kind {
	MALLOC, ANON_PRIVATE, ANON_SHARED, FILE_PRIVATE, FILE_SHARED, THP, HUGETLB, LARGE,
	MISALIGNED, NUM_KINDS
};

static const char *const kind_names[NUM_KINDS] = {
	"malloc", "mmap-anon-private", "mmap-anon-shared", "mmap-file-private",
	"mmap-file-shared", "thp", "hugetlbfs", "large", "misaligned",
};

struct buffer {
	uint8_t *addr;		/* what the test uses */
	uint64_t size;
	void *base;		/* what to free or unmap */
	uint64_t map_size;
	bool malloced;
};

static void *map_file(uint64_t size, int flags)
{
	char path[] = "/tmp/vsvm-XXXXXX";
	int file = mkstemp(path);
	void *p;

	igt_assert(file >= 0);
	unlink(path);
	igt_assert_eq(ftruncate(file, size), 0);
	p = mmap(NULL, size, PROT_READ | PROT_WRITE, flags, file, 0);
	close(file);
	igt_assert(p != MAP_FAILED);
	return p;
}

static struct buffer buffer_alloc(enum kind kind)
{
	const int anon = MAP_PRIVATE | MAP_ANONYMOUS, rw = PROT_READ | PROT_WRITE;
	struct buffer b = { .size = SZ_2M / 2 + 3 * PAGE };

	switch (kind) {
	case MALLOC:
		b.base = malloc(b.size);
		b.addr = b.base;
		igt_assert(b.addr);
		b.malloced = true;
		return b;
	case MISALIGNED:
		b.size = 5 * PAGE + 77;
		b.base = malloc(b.size + 123 + 64);
		igt_assert(b.base);
		b.addr = (uint8_t *)b.base + 123;
		b.malloced = true;
		return b;
	case ANON_PRIVATE:
		b.base = mmap(NULL, b.size, rw, anon, -1, 0);
		break;
	case ANON_SHARED:
		b.base = mmap(NULL, b.size, rw, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
		break;
	case FILE_PRIVATE:
		b.base = map_file(b.size, MAP_PRIVATE);
		break;
	case FILE_SHARED:
		b.base = map_file(b.size, MAP_SHARED);
		break;
	case THP:
		b.size = 2 * SZ_2M;
		b.base = vsvm_aligned_mmap(b.size, SZ_2M, rw, anon);
		igt_assert_eq(madvise(b.base, b.size, MADV_HUGEPAGE), 0);
		memset(b.base, 1, b.size);
		igt_require_f(vsvm_anon_huge_kb() >= 2048,
			      "no transparent huge page was allocated\n");
		break;
	case HUGETLB:
		b.size = 2 * SZ_2M;
		b.base = mmap(NULL, b.size, rw, anon | MAP_HUGETLB, -1, 0);
		igt_require_f(b.base != MAP_FAILED, "no 2M huge pages reserved (hugepages=)\n");
		break;
	case LARGE:
		b.size = 32UL << 20;
		b.base = mmap(NULL, b.size, rw, anon, -1, 0);
		break;
	default:
		igt_assert(!"unknown kind");
	}
	igt_assert(b.base != MAP_FAILED);
	b.addr = b.base;
	b.map_size = b.size;
	return b;
}

static void buffer_free(struct buffer *b)
{
	if (b->malloced)
		free(b->base);
	else
		igt_assert_eq(munmap(b->base, b->map_size), 0);
}

/* The byte the CPU writes at @i in round @round. */
static uint8_t pattern(uint64_t i, int round)
{
	return (uint8_t)(i * 7 + i / PAGE + round * 13 + 1);
}

/* Asserts that every byte of a span is @byte. */
static void assert_filled(const uint8_t *p, uint64_t size, uint8_t byte)
{
	uint64_t i;

	for (i = 0; i < size; i++)
		igt_assert_f(p[i] == byte, "byte %llu is %#x, expected %#x\n",
			     (unsigned long long)i, p[i], byte);
}

/*
 * @rounds times: the GPU reads what the CPU wrote, then writes a byte the
 * CPU reads back in every position.
 */
static void gpu_access(uint8_t *p, uint64_t size, int rounds)
{
	int round;
	uint64_t i;

	for (round = 0; round < rounds; round++) {
		uint8_t byte = (uint8_t)(0x30 + round);

		for (i = 0; i < size; i++)
			p[i] = pattern(i, round);
		igt_assert_eq_u64(vsvm_read(fd, vm, p, size), vsvm_cpu_sum(p, size));
		vsvm_write(fd, vm, p, size, byte);
		assert_filled(p, size, byte);
		igt_assert_eq_u64(vsvm_read(fd, vm, p, size), size * byte);
	}
}

/* A buffer on this function's stack: it lives exactly as long as the call. */
static void __attribute__((noinline)) stack_access(int rounds)
{
	uint8_t stack[256 << 10];

	gpu_access(stack, sizeof(stack), rounds);
}

static void access_subtests(const char *name, int rounds)
{
	igt_subtest_with_dynamic(name) {
		volatile int k;

		for (k = 0; k < NUM_KINDS; k++) {
			igt_dynamic(kind_names[k]) {
				struct buffer b = buffer_alloc(k);

				gpu_access(b.addr, b.size, rounds);
				if (k == THP || k == HUGETLB) {
					struct drm_vsvm_pte pte;

					vsvm_snapshot(fd, vm, b.addr, 1, &pte);
					igt_assert_eq_u32(pte.shift, 21);
				}
				buffer_free(&b);
			}
		}
		igt_dynamic("stack")
			stack_access(rounds);
	}
}

/* --- CPU mapping changes ----------------------------------------------- */

static uint8_t *fresh(uint64_t size, uint8_t byte)
{
	uint8_t *p = vsvm_aligned_mmap(size, SZ_2M, PROT_READ | PROT_WRITE,
				       MAP_PRIVATE | MAP_ANONYMOUS);

	memset(p, byte, size);
	return p;
}

static void to_vram(uint8_t *p, uint64_t size)
{
	igt_assert_eq_u64(vsvm_prefetch(fd, vm, p, size, DRM_VSVM_REGION_VRAM), size / PAGE);
	igt_assert(vsvm_pte_flags(fd, vm, p) == 0 ||
		   vsvm_pte_flags(fd, vm, p) & DRM_VSVM_PTE_VRAM);
}

static void test_fork_child_reads(bool vram)
{
	uint8_t *p = fresh(SZ_2M, 0);

	vsvm_write(fd, vm, p, SZ_2M, 0x5c);
	if (vram)
		to_vram(p, SZ_2M);
	igt_fork(child, 1) {
		int cfd = drm_open_driver_render(DRIVER_VSVM);
		uint32_t cvm = vsvm_vm_create(cfd);

		/* The child's copy, through its own device mirror and its CPU. */
		igt_assert_eq_u64(vsvm_read(cfd, cvm, p, SZ_2M), 0x5cUL * SZ_2M);
		assert_filled(p, SZ_2M, 0x5c);
		vsvm_write(cfd, cvm, p, PAGE, 0x01);
		drm_close_driver(cfd);
	}
	igt_waitchildren();
	/* The child's writes went to its own copy. */
	igt_assert_eq_u64(vsvm_read(fd, vm, p, SZ_2M), 0x5cUL * SZ_2M);
	assert_filled(p, SZ_2M, 0x5c);
	munmap(p, SZ_2M);
}

static void test_fork_parent_writes(bool vram)
{
	uint8_t *p = fresh(SZ_2M, 0x11);

	igt_assert_eq_u64(vsvm_read(fd, vm, p, SZ_2M), 0x11UL * SZ_2M);
	if (vram)
		to_vram(p, SZ_2M);
	igt_fork(child, 1) {
		/* Wait for the parent's writes, then check our copy kept the old data. */
		usleep(200000);
		assert_filled(p, SZ_2M, 0x11);
	}
	/* Copy-on-write breaks under the GPU mapping: the GPU must see the new pages. */
	memset(p, 0x22, SZ_2M / 2);
	vsvm_write(fd, vm, p + SZ_2M / 2, SZ_2M / 2, 0x33);
	igt_waitchildren();
	igt_assert_eq_u64(vsvm_read(fd, vm, p, SZ_2M), (0x22UL + 0x33UL) * (SZ_2M / 2));
	assert_filled(p, SZ_2M / 2, 0x22);
	assert_filled(p + SZ_2M / 2, SZ_2M / 2, 0x33);
	munmap(p, SZ_2M);
}

/*
 * A child that inherited the file uses the parent's VM: every ioctl on it is
 * refused, and the parent's memory and VM are as they were.
 */
static void test_fork_child_refused(void)
{
	uint8_t *p = fresh(SZ_2M, 0);
	uint64_t job;

	vsvm_write(fd, vm, p, SZ_2M, 0x61);
	job = vsvm_exec_async(fd, vm, &(struct drm_vsvm_op){
		.kind = DRM_VSVM_OP_READ, .addr = (uintptr_t)p, .size = SZ_2M }, 1);
	igt_fork(child, 1) {
		struct drm_vsvm_pte pte;
		struct drm_vsvm_stats stats = { .vm_id = vm };
		uint64_t sum, moved;

		igt_assert_eq(__vsvm_read(fd, vm, p, SZ_2M, &sum), -EACCES);
		igt_assert_eq(__vsvm_write(fd, vm, p, SZ_2M, 0x62), -EACCES);
		igt_assert_eq(__vsvm_prefetch(fd, vm, p, SZ_2M, DRM_VSVM_REGION_VRAM, &moved),
			      -EACCES);
		igt_assert_eq(__vsvm_wait(fd, vm, job, 0, NULL), -EACCES);
		do_ioctl_err(fd, DRM_IOCTL_VSVM_MADVISE, &((struct drm_vsvm_madvise){
			.addr = (uintptr_t)p, .size = SZ_2M, .vm_id = vm,
			.preferred = DRM_VSVM_REGION_VRAM }), EACCES);
		do_ioctl_err(fd, DRM_IOCTL_VSVM_SNAPSHOT, &((struct drm_vsvm_snapshot){
			.addr = (uintptr_t)p, .pages = 1, .ptes = (uintptr_t)&pte,
			.vm_id = vm }), EACCES);
		do_ioctl_err(fd, DRM_IOCTL_VSVM_STATS, &stats, EACCES);
		do_ioctl_err(fd, DRM_IOCTL_VSVM_VM_DESTROY,
			     &((struct drm_vsvm_vm_destroy){ .vm_id = vm }), EACCES);
		/* The child's memory is its own copy: untouched as well. */
		assert_filled(p, SZ_2M, 0x61);
	}
	igt_waitchildren();
	/* The job is still the parent's to wait for, and the VM works. */
	igt_assert_eq(__vsvm_wait(fd, vm, job, -1, NULL), 0);
	assert_filled(p, SZ_2M, 0x61);
	igt_assert_eq_u64(vsvm_read(fd, vm, p, SZ_2M), 0x61UL * SZ_2M);
	vsvm_write(fd, vm, p, PAGE, 0x63);
	igt_assert_eq(p[0], 0x63);
	munmap(p, SZ_2M);
}

/* A child that inherited the file creates a VM of its own on it. */
static void test_fork_child_own_vm(void)
{
	uint8_t *p = fresh(SZ_2M, 0x71);

	igt_assert_eq_u64(vsvm_read(fd, vm, p, SZ_2M), 0x71UL * SZ_2M);
	igt_fork(child, 1) {
		uint32_t cvm = vsvm_vm_create(fd);

		igt_assert_eq_u64(vsvm_read(fd, cvm, p, SZ_2M), 0x71UL * SZ_2M);
		vsvm_write(fd, cvm, p, SZ_2M, 0x72);
		assert_filled(p, SZ_2M, 0x72);
		/* The parent's VM is not the child's to use, nor the child's the parent's. */
		igt_assert_eq(__vsvm_write(fd, vm, p, PAGE, 0x73), -EACCES);
		vsvm_vm_destroy(fd, cvm);
	}
	igt_waitchildren();
	assert_filled(p, SZ_2M, 0x71);
	igt_assert_eq_u64(vsvm_read(fd, vm, p, SZ_2M), 0x71UL * SZ_2M);
	munmap(p, SZ_2M);
}

static void test_mremap(bool vram, bool dontunmap)
{
	uint8_t *p = fresh(SZ_2M, 0x44), *target, *q;

	igt_assert_eq_u64(vsvm_read(fd, vm, p, SZ_2M), 0x44UL * SZ_2M);
	if (vram)
		to_vram(p, SZ_2M);
	target = vsvm_aligned_mmap(SZ_2M, SZ_2M, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS);
	q = mremap(p, SZ_2M, SZ_2M, MREMAP_MAYMOVE | MREMAP_FIXED |
		   (dontunmap ? MREMAP_DONTUNMAP : 0), target);
	igt_require_f(q != MAP_FAILED || errno != EINVAL, "mremap flags not supported\n");
	igt_assert(q == target);
	igt_assert_eq_u64(vsvm_read(fd, vm, q, SZ_2M), 0x44UL * SZ_2M);
	vsvm_write(fd, vm, q, PAGE, 0x45);
	igt_assert_eq(q[0], 0x45);
	if (dontunmap) {
		/* The old range is still mapped, without pages: it reads as zero. */
		igt_assert_eq_u64(vsvm_read(fd, vm, p, SZ_2M), 0);
		vsvm_write(fd, vm, p, PAGE, 0x46);
		igt_assert_eq(p[0], 0x46);
		munmap(p, SZ_2M);
	} else {
		uint64_t sum;

		igt_assert_eq(__vsvm_read(fd, vm, p, SZ_2M, &sum), -EFAULT);
	}
	assert_filled(q + PAGE, SZ_2M - PAGE, 0x44);
	munmap(q, SZ_2M);
}

/* The GPU never sees the old pages of memory freed while bound. */
static void test_free_reuse(bool vram)
{
	uint8_t *p = fresh(SZ_2M, 0x61), *q;

	vsvm_write(fd, vm, p, SZ_2M, 0x62);
	if (vram)
		to_vram(p, SZ_2M);
	igt_assert_eq(munmap(p, SZ_2M), 0);
	q = mmap(p, SZ_2M, PROT_READ | PROT_WRITE,
		 MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED_NOREPLACE, -1, 0);
	igt_assert(q == p);
	igt_assert_eq_u64(vsvm_read(fd, vm, q, SZ_2M), 0);
	memset(q, 0x63, SZ_2M);
	igt_assert_eq_u64(vsvm_read(fd, vm, q, SZ_2M), 0x63UL * SZ_2M);
	munmap(q, SZ_2M);

	/* The same through malloc and free. */
	for (int i = 0; i < 4; i++) {
		uint8_t *m = malloc(3 * PAGE);

		igt_assert(m);
		memset(m, i + 1, 3 * PAGE);
		igt_assert_eq_u64(vsvm_read(fd, vm, m, 3 * PAGE), (i + 1) * 3 * PAGE);
		vsvm_write(fd, vm, m, PAGE, 0x70);
		igt_assert_eq(m[PAGE - 1], 0x70);
		free(m);
	}
}

enum where { START, MIDDLE, END };

/*
 * 64K of a 2M range goes: the GPU fails on it at once and still sees the
 * rest, with or without the CPU touching the rest first.
 */
static void test_partial_munmap(enum where where, bool vram, bool cpu_fault)
{
	static const uint64_t offsets[] = { 0, SZ_2M / 2, SZ_2M - SZ_64K };
	uint8_t *p = fresh(SZ_2M, 0x21), *hole = p + offsets[where];
	struct drm_vsvm_stats st;
	uint64_t sum;

	igt_assert_eq_u64(vsvm_read(fd, vm, p, SZ_2M), 0x21UL * SZ_2M);
	if (vram)
		to_vram(p, SZ_2M);
	igt_assert_eq(munmap(hole, SZ_64K), 0);
	igt_assert_eq(vsvm_pte_flags(fd, vm, hole), 0);
	igt_assert_eq(__vsvm_read(fd, vm, hole, PAGE, &sum), -EFAULT);
	if (cpu_fault) {
		if (where != START)
			assert_filled(p, hole - p, 0x21);
		if (where != END)
			assert_filled(hole + SZ_64K, p + SZ_2M - hole - SZ_64K, 0x21);
	}
	if (where != START)
		igt_assert_eq_u64(vsvm_read(fd, vm, p, hole - p), 0x21UL * (hole - p));
	if (where != END)
		igt_assert_eq_u64(vsvm_read(fd, vm, hole + SZ_64K, p + SZ_2M - hole - SZ_64K),
				  0x21UL * (p + SZ_2M - hole - SZ_64K));
	vsvm_stats(fd, vm, &st);
	igt_assert(st.gc_ranges > 0);
	if (where != START)
		munmap(p, hole - p);
	if (where != END)
		munmap(hole + SZ_64K, p + SZ_2M - hole - SZ_64K);
}

igt_main
{
	igt_fixture {
		fd = drm_open_driver_render(DRIVER_VSVM);
		vm = vsvm_vm_create(fd);
	}

	igt_describe("The GPU reads and writes memory of every kind once");
	access_subtests("once", 1);
	igt_describe("The GPU reads and writes memory of every kind twice");
	access_subtests("twice", 2);
	igt_describe("The GPU reads and writes memory of every kind many times");
	access_subtests("many", 8);

	igt_describe("One job, many small accesses at a stride with gaps between them");
	igt_subtest("stride") {
		const uint64_t stride = PAGE + 64, size = 256 * stride;
		struct drm_vsvm_op ops[256];
		uint8_t *p = fresh(size, 0);
		uint64_t i;

		for (i = 0; i < 256; i++)
			ops[i] = (struct drm_vsvm_op){ .kind = DRM_VSVM_OP_WRITE,
				.addr = (uintptr_t)p + i * stride, .size = 64, .value = i + 1 };
		vsvm_exec(fd, vm, ops, 256);
		for (i = 0; i < size; i++)
			igt_assert_eq(p[i], i % stride < 64 ? (uint8_t)(i / stride + 1) : 0);
		munmap(p, size);
	}

	igt_describe("Writes, reads and copies of any size from any byte, within and across pages");
	igt_subtest("unaligned") {
		static const uint64_t offs[] = { 1, 7, 9, PAGE - 3, PAGE - 8 };
		static const uint64_t sizes[] = { 1, 3, 8, 13, PAGE + 5 };
		/* The source spans two pages and a few bytes, the copy's target the rest. */
		uint8_t *p = fresh(5 * PAGE, 0), *dst = p + 2 * PAGE;
		unsigned int i, j;
		uint64_t k;

		for (i = 0; i < ARRAY_SIZE(offs); i++)
			for (j = 0; j < ARRAY_SIZE(sizes); j++) {
				uint64_t off = offs[i], size = sizes[j];
				uint64_t to = offs[(i + 1) % ARRAY_SIZE(offs)];

				memset(p, 0x11, 5 * PAGE);
				vsvm_write(fd, vm, p + off, size, 0xa5);
				for (k = 0; k < 2 * PAGE + 8; k++)
					igt_assert_eq(p[k], k - off < size ? 0xa5 : 0x11);
				igt_assert_eq_u64(vsvm_read(fd, vm, p + off - 1, size + 2),
						  vsvm_cpu_sum(p + off - 1, size + 2));
				igt_assert_eq(__vsvm_copy(fd, vm, dst + to, p + off - 1, size + 2),
					      0);
				igt_assert(!memcmp(dst + to, p + off - 1, size + 2));
				igt_assert_eq(dst[to - 1], 0x11);
				igt_assert_eq(dst[to + size + 2], 0x11);
			}
		munmap(p, 5 * PAGE);
	}

	igt_describe("A VM can ask for smaller ranges than its device's largest");
	igt_subtest_with_dynamic("vm-range-size") {
		static const struct {
			const char *name;
			uint32_t flags, shift;
		} sizes[] = {
			{ "2m", 0, 21 },
			{ "64k", DRM_VSVM_VM_MAX_RANGE_64K, 16 },
			{ "4k", DRM_VSVM_VM_MAX_RANGE_4K, 12 },
		};
		const uint64_t all = (1ULL << 47) - PAGE;
		uint32_t bad;

		for (volatile int i = 0; i < (int)ARRAY_SIZE(sizes); i++) {
			igt_dynamic(sizes[i].name) {
				uint8_t *p = fresh(SZ_2M, 3);
				struct drm_vsvm_pte pte;
				uint32_t flags = sizes[i].flags, v;

				igt_assert_eq(__vsvm_vm_create(fd, PAGE, all, flags, &v), 0);
				igt_assert_eq_u64(vsvm_read(fd, v, p, SZ_2M), 3UL * SZ_2M);
				vsvm_snapshot(fd, v, p + SZ_2M - PAGE, 1, &pte);
				igt_assert_eq_u32(pte.shift, sizes[i].shift);
				vsvm_vm_destroy(fd, v);
				munmap(p, SZ_2M);
			}
		}
		igt_assert_eq(__vsvm_vm_create(fd, PAGE, all, DRM_VSVM_VM_MAX_RANGE_64K |
					       DRM_VSVM_VM_MAX_RANGE_4K, &bad), -EINVAL);
		igt_assert_eq(__vsvm_vm_create(fd, PAGE, all, 1 << 5, &bad), -EINVAL);
	}

	igt_describe("GPU access to no memory fails the job with EFAULT; the VM goes on working");
	igt_subtest("bad-address") {
		uint8_t *p = mmap(NULL, 3 * PAGE, PROT_READ | PROT_WRITE,
				  MAP_PRIVATE | MAP_ANONYMOUS, -1, 0), *none;
		uint64_t sum;

		igt_assert(p != MAP_FAILED);
		igt_assert_eq(munmap(p + PAGE, PAGE), 0);
		igt_assert_eq(__vsvm_read(fd, vm, p + PAGE, PAGE, &sum), -EFAULT);
		igt_assert_eq(__vsvm_write(fd, vm, p, 3 * PAGE, 1), -EFAULT);
		none = mmap(NULL, PAGE, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
		igt_assert(none != MAP_FAILED);
		igt_assert_eq(__vsvm_read(fd, vm, none, PAGE, &sum), -EFAULT);
		/* Not a user address at all: refused before the job runs. */
		igt_assert_eq(__vsvm_read(fd, vm, (void *)(~0UL << 47), PAGE, &sum), -EINVAL);
		vsvm_write(fd, vm, p + 2 * PAGE, PAGE, 7);
		igt_assert_eq(p[2 * PAGE + PAGE - 1], 7);
		munmap(p, PAGE);
		munmap(p + 2 * PAGE, PAGE);
		munmap(none, PAGE);
	}

	igt_describe("Read-only memory: the GPU reads it, a GPU write fails with EPERM");
	igt_subtest("readonly") {
		uint8_t *zero = mmap(NULL, SZ_64K, PROT_READ, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
		uint8_t *file = map_file(SZ_64K, MAP_SHARED);

		memset(file, 0x19, SZ_64K);
		igt_assert_eq(mprotect(file, SZ_64K, PROT_READ), 0);
		igt_assert(zero != MAP_FAILED);
		igt_assert_eq_u64(vsvm_read(fd, vm, zero, SZ_64K), 0);
		igt_assert_eq(__vsvm_write(fd, vm, zero, PAGE, 1), -EPERM);
		igt_assert_eq_u64(vsvm_read(fd, vm, file, SZ_64K), 0x19UL * SZ_64K);
		igt_assert_eq(__vsvm_write(fd, vm, file + PAGE, 8, 1), -EPERM);
		assert_filled(file, SZ_64K, 0x19);
		munmap(zero, SZ_64K);
		munmap(file, SZ_64K);
	}

	igt_describe("mprotect under a GPU mapping: write access goes and comes back");
	igt_subtest("mprotect") {
		uint8_t *p = fresh(SZ_2M, 0);

		vsvm_write(fd, vm, p, SZ_2M, 0x11);
		igt_assert(vsvm_pte_flags(fd, vm, p) & DRM_VSVM_PTE_WRITABLE);
		igt_assert_eq(mprotect(p, SZ_2M, PROT_READ), 0);
		igt_assert(!(vsvm_pte_flags(fd, vm, p) & DRM_VSVM_PTE_WRITABLE));
		igt_assert_eq(__vsvm_write(fd, vm, p, SZ_2M, 0x12), -EPERM);
		assert_filled(p, SZ_2M, 0x11);
		igt_assert_eq_u64(vsvm_read(fd, vm, p, SZ_2M), 0x11UL * SZ_2M);
		igt_assert_eq(mprotect(p, SZ_2M, PROT_READ | PROT_WRITE), 0);
		vsvm_write(fd, vm, p, SZ_2M, 0x13);
		assert_filled(p, SZ_2M, 0x13);
		munmap(p, SZ_2M);
	}

	igt_describe("A forked child reads its copy of memory the GPU wrote");
	igt_subtest("fork-child-reads")
		test_fork_child_reads(false);
	igt_describe("A forked child reads its copy of memory the GPU wrote in VRAM");
	igt_subtest("fork-child-reads-vram")
		test_fork_child_reads(true);

	igt_describe("The parent writes after fork: copy-on-write under a GPU mapping");
	igt_subtest("fork-parent-writes")
		test_fork_parent_writes(false);
	igt_describe("The parent writes after fork: copy-on-write of pages in VRAM");
	igt_subtest("fork-parent-writes-vram")
		test_fork_parent_writes(true);

	igt_describe("A child with the parent's file cannot use the parent's VM");
	igt_subtest("fork-child-vm-refused")
		test_fork_child_refused();

	igt_describe("A child with the parent's file creates and uses a VM of its own");
	igt_subtest("fork-child-own-vm")
		test_fork_child_own_vm();

	igt_describe("mremap moves mirrored memory: the GPU follows the data");
	igt_subtest("mremap")
		test_mremap(false, false);
	igt_describe("mremap moves mirrored memory in VRAM: the GPU follows the data");
	igt_subtest("mremap-vram")
		test_mremap(true, false);
	igt_describe("mremap with MREMAP_DONTUNMAP: the data moves, the old range reads zero");
	igt_subtest("mremap-dontunmap")
		test_mremap(false, true);
	igt_describe("mremap with MREMAP_DONTUNMAP of memory in VRAM");
	igt_subtest("mremap-dontunmap-vram")
		test_mremap(true, true);

	igt_describe("Memory freed while bound and allocated again at the same address");
	igt_subtest("free-reuse")
		test_free_reuse(false);
	igt_describe("Memory in VRAM freed while bound and allocated again at the same address");
	igt_subtest("free-reuse-vram")
		test_free_reuse(true);

	igt_describe("munmap of the start, middle or end of a mirrored range");
	igt_subtest_with_dynamic("partial-munmap") {
		static const char *const where[] = { "start", "middle", "end" };

		for (volatile int w = START; w <= END; w++) {
			for (volatile int mode = 0; mode < 4; mode++) {
				igt_dynamic_f("%s%s%s", where[w], mode & 1 ? "-vram" : "",
					      mode & 2 ? "-cpu-fault" : "")
					test_partial_munmap(w, mode & 1, mode & 2);
			}
		}
	}

	igt_fixture {
		vsvm_vm_destroy(fd, vm);
		drm_close_driver(fd);
	}
}
