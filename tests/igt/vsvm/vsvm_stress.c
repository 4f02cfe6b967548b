// SPDX-License-Identifier: MIT
/*
 * vsvm_stress: a seeded random mix of GPU and CPU accesses, migrations and
 * CPU mapping changes over a few buffers, each with a shadow copy of what
 * it must hold. Every GPU read and CPU check is compared with the shadow.
 * Bounded by an operation count and a time limit; the same seed and
 * operation count replay the same sequence.
 */
#include <sys/mman.h>
#include <sys/wait.h>

#include "igt.h"
#include "vsvm/vsvm_ioctl.h"

IGT_TEST_DESCRIPTION("Seeded mix of GPU/CPU access, migration and mapping changes, verified");

#define PAGE VSVM_PAGE
#define SLOTS 6

static uint64_t seed = 1, max_ops = 2500;
static int max_seconds = 150;

static int fd, fd2 = -1;
static uint32_t vm, vm2;
static uint64_t rng_state;
static uint64_t mismatches, errors;

struct slot {
	uint8_t *addr, *shadow;
	uint64_t size;
};

static struct slot slots[SLOTS];

enum op {
	CPU_WRITE, GPU_WRITE, GPU_READ, GPU_COPY, CPU_CHECK, PREFETCH, MADVISE, REMAP,
	PARTIAL_UNMAP, DONTNEED, MPROTECT, MREMAP, ATOMIC, ASYNC, FORK, OTHER_DEVICE, NUM_OPS
};

static const char *const op_names[NUM_OPS] = {
	"cpu-write", "gpu-write", "gpu-read", "gpu-copy", "cpu-check", "prefetch", "madvise",
	"remap", "partial-unmap", "dontneed", "mprotect", "mremap", "atomic", "async", "fork",
	"other-device",
};

/* How often each operation is picked, relative to the others. */
static const int weights[NUM_OPS] = { 3, 4, 4, 2, 3, 3, 1, 1, 1, 1, 1, 1, 2, 2, 1, 1 };

static uint64_t rnd(uint64_t n)
{
	/* xorshift64*: the whole run follows from the seed. */
	rng_state ^= rng_state >> 12;
	rng_state ^= rng_state << 25;
	rng_state ^= rng_state >> 27;
	return (rng_state * 0x2545f4914f6cdd1dULL) % n;
}

/* The last operations, printed when something goes wrong. */
static char history[16][160];
static uint64_t done;

#define trace(f...) snprintf(history[done % 16], sizeof(history[0]), f)

static void error(const char *what, int ret)
{
	igt_warn("%s failed: %d\n", what, ret);
	errors++;
}

static void slot_map(struct slot *s)
{
	/* 1 to 1024 pages, or one or two 2M ranges, 2M aligned. */
	s->size = rnd(2) ? (1 + rnd(1024)) * PAGE : (1 + rnd(2)) * SZ_2M;
	s->addr = vsvm_aligned_mmap(s->size, rnd(2) ? SZ_2M : PAGE, PROT_READ | PROT_WRITE,
				    MAP_PRIVATE | MAP_ANONYMOUS);
	s->shadow = calloc(1, s->size);
	igt_assert(s->shadow);
}

static void slot_unmap(struct slot *s)
{
	igt_assert_eq(munmap(s->addr, s->size), 0);
	free(s->shadow);
}

/* A random span of a slot; page-aligned if @pages. */
static void span(struct slot *s, bool pages, uint64_t *off, uint64_t *len)
{
	uint64_t unit = pages ? PAGE : 1, n = s->size / unit;

	*off = rnd(n) * unit;
	*len = (1 + rnd(n - *off / unit)) * unit;
}

static void check(struct slot *s, uint64_t off, uint64_t len, int dev, uint32_t v)
{
	uint64_t sum = 0;
	int ret = __vsvm_read(dev, v, s->addr + off, len, &sum);

	if (ret)
		error("gpu read", ret);
	else if (sum != vsvm_cpu_sum(s->shadow + off, len))
		mismatches++, igt_warn("gpu read of %#llx+%llu: sum %llu, expected %llu\n",
				       (unsigned long long)(uintptr_t)(s->addr + off),
				       (unsigned long long)len, (unsigned long long)sum,
				       (unsigned long long)vsvm_cpu_sum(s->shadow + off, len));
}

static uint64_t cpu_check(struct slot *s, uint64_t off, uint64_t len)
{
	uint64_t bad = 0;

	for (uint64_t i = off; i < off + len; i++)
		bad += s->addr[i] != s->shadow[i];
	if (bad)
		igt_warn("cpu check of %#llx+%llu: %llu bytes differ\n",
			 (unsigned long long)(uintptr_t)(s->addr + off),
			 (unsigned long long)len, (unsigned long long)bad);
	return bad;
}

static void run_op(enum op op)
{
	struct slot *s = &slots[rnd(SLOTS)], *t;
	uint64_t off, len, off2, len2;
	uint8_t byte = (uint8_t)(1 + rnd(255));
	int ret;

	trace("%llu: %s on slot %d (%#llx, %llu bytes)", (unsigned long long)done, op_names[op],
	      (int)(s - slots), (unsigned long long)(uintptr_t)s->addr,
	      (unsigned long long)s->size);
	switch (op) {
	case CPU_WRITE:
		span(s, false, &off, &len);
		memset(s->addr + off, byte, len);
		memset(s->shadow + off, byte, len);
		break;
	case GPU_WRITE:
		span(s, false, &off, &len);
		ret = __vsvm_write(fd, vm, s->addr + off, len, byte);
		if (ret)
			error("gpu write", ret);
		memset(s->shadow + off, byte, len);
		break;
	case GPU_READ:
		span(s, false, &off, &len);
		check(s, off, len, fd, vm);
		break;
	case GPU_COPY:
		t = &slots[(s - slots + 1 + rnd(SLOTS - 1)) % SLOTS];
		span(s, false, &off, &len);
		span(t, false, &off2, &len2);
		len = len < len2 ? len : len2;
		ret = __vsvm_copy(fd, vm, t->addr + off2, s->addr + off, len);
		if (ret)
			error("gpu copy", ret);
		memcpy(t->shadow + off2, s->shadow + off, len);
		break;
	case CPU_CHECK:
		span(s, false, &off, &len);
		mismatches += cpu_check(s, off, len);
		break;
	case PREFETCH:
		span(s, true, &off, &len);
		ret = __vsvm_prefetch(fd, vm, s->addr + off, len,
				      rnd(3) ? DRM_VSVM_REGION_VRAM : DRM_VSVM_REGION_SYSTEM, NULL);
		if (ret)
			error("prefetch", ret);
		break;
	case MADVISE:
		vsvm_madvise(fd, vm, s->addr, s->size, rnd(2) ? DRM_VSVM_REGION_VRAM :
				DRM_VSVM_REGION_SYSTEM, rnd(2) ? DRM_VSVM_ATOMIC_VRAM :
				DRM_VSVM_ATOMIC_EXCLUSIVE);
		break;
	case REMAP:
		slot_unmap(s);
		slot_map(s);
		break;
	case PARTIAL_UNMAP:
		/* A hole punched and filled again with new (zero) memory. */
		span(s, true, &off, &len);
		igt_assert_eq(munmap(s->addr + off, len), 0);
		ret = __vsvm_read(fd, vm, s->addr + off, len, &off2);
		if (ret != -EFAULT)
			error("gpu read of a hole", ret);
		igt_assert(mmap(s->addr + off, len, PROT_READ | PROT_WRITE,
				MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED, -1, 0) == s->addr + off);
		memset(s->shadow + off, 0, len);
		break;
	case DONTNEED:
		span(s, true, &off, &len);
		igt_assert_eq(madvise(s->addr + off, len, MADV_DONTNEED), 0);
		memset(s->shadow + off, 0, len);
		break;
	case MPROTECT:
		igt_assert_eq(mprotect(s->addr, s->size, PROT_READ), 0);
		ret = __vsvm_write(fd, vm, s->addr, s->size, byte);
		if (ret != -EPERM)
			error("gpu write to read-only memory", ret);
		check(s, 0, s->size, fd, vm);
		igt_assert_eq(mprotect(s->addr, s->size, PROT_READ | PROT_WRITE), 0);
		break;
	case MREMAP: {
		uint8_t *to = vsvm_aligned_mmap(s->size, SZ_2M, PROT_NONE,
						MAP_PRIVATE | MAP_ANONYMOUS);

		igt_assert(mremap(s->addr, s->size, s->size, MREMAP_MAYMOVE | MREMAP_FIXED,
				  to) == to);
		s->addr = to;
		break;
	}
	case ATOMIC: {
		uint64_t value = rnd(1000), old = 0, expect;

		off = rnd(s->size / 8) * 8;
		memcpy(&expect, s->shadow + off, 8);
		ret = __vsvm_atomic_add(fd, vm, (uint64_t *)(s->addr + off), value, &old);
		if (ret)
			error("gpu atomic", ret);
		else if (old != expect)
			mismatches++, igt_warn("atomic: old value %llu, expected %llu\n",
					       (unsigned long long)old, (unsigned long long)expect);
		expect += value;
		memcpy(s->shadow + off, &expect, 8);
		break;
	}
	case ASYNC: {
		struct drm_vsvm_op ops[4];
		int n = 1 + rnd(4);
		uint64_t job;

		for (int i = 0; i < n; i++) {
			t = &slots[rnd(SLOTS)];
			span(t, false, &off, &len);
			ops[i] = (struct drm_vsvm_op){ .kind = DRM_VSVM_OP_WRITE,
				.addr = (uintptr_t)t->addr + off, .size = len, .value = byte + i };
			memset(t->shadow + off, byte + i, len);
		}
		job = vsvm_exec_async(fd, vm, ops, n);
		ret = __vsvm_wait(fd, vm, job, -1, NULL);
		if (ret)
			error("async job", ret);
		break;
	}
	case FORK:
		fflush(stdout);
		igt_fork(child, 1) {
			int cfd = drm_open_driver_render(DRIVER_VSVM);
			uint32_t cvm = vsvm_vm_create(cfd);

			check(s, 0, s->size, cfd, cvm);
			igt_assert_eq_u64(mismatches + errors + cpu_check(s, 0, s->size), 0);
			/* The child's writes stay in its copy. */
			vsvm_write(cfd, cvm, s->addr, s->size, byte);
		}
		if (__igt_waitchildren())
			mismatches++;
		break;
	case OTHER_DEVICE:
		if (fd2 < 0)
			break;
		span(s, false, &off, &len);
		check(s, off, len, fd2, vm2);
		break;
	default:
		break;
	}
}

static void test_mixer(void)
{
	uint64_t counts[NUM_OPS] = {}, ops, total = 0;
	struct timespec start = {};
	int i;

	for (i = 0; i < NUM_OPS; i++)
		total += weights[i];
	rng_state = seed * 0x9e3779b97f4a7c15ULL + 1;
	for (i = 0; i < SLOTS; i++)
		slot_map(&slots[i]);
	igt_nsec_elapsed(&start);
	for (ops = 0; ops < max_ops && igt_seconds_elapsed(&start) < (uint32_t)max_seconds; ops++) {
		uint64_t pick = rnd(total);
		enum op op = 0;

		while (pick >= (uint64_t)weights[op])
			pick -= weights[op++];
		done = ops;
		run_op(op);
		counts[op]++;
		if (mismatches || errors) {
			/* Stop at the first problem: the history shows how it came. */
			igt_warn("stopped at operation %llu; the last operations:\n",
				 (unsigned long long)ops);
			for (i = 15; i >= 0; i--)
				if (ops >= (uint64_t)i)
					igt_warn("  %s\n", history[(ops - i) % 16]);
			ops++;
			break;
		}
	}
	/* At the end, every byte of every slot, by the GPU and the CPU. */
	for (i = 0; i < SLOTS; i++) {
		check(&slots[i], 0, slots[i].size, fd, vm);
		mismatches += cpu_check(&slots[i], 0, slots[i].size);
		slot_unmap(&slots[i]);
	}
	igt_info("vsvm: stress seed %llu: %llu operations in %.1f s, %llu mismatches, %llu errors\n",
		 (unsigned long long)seed, (unsigned long long)ops, igt_nsec_elapsed(&start) / 1e9,
		 (unsigned long long)mismatches, (unsigned long long)errors);
	for (i = 0; i < NUM_OPS; i++)
		igt_info("  %-14s %llu\n", op_names[i], (unsigned long long)counts[i]);
	igt_info("replay: vsvm_stress --run-subtest mixer --seed %llu --ops %llu\n",
		 (unsigned long long)seed, (unsigned long long)ops);
	igt_assert_eq_u64(errors, 0);
	igt_assert_eq_u64(mismatches, 0);
}

static int opt_handler(int opt, int opt_index, void *data)
{
	(void)opt_index;
	(void)data;
	switch (opt) {
	case 's':
		seed = strtoull(optarg, NULL, 0);
		break;
	case 'n':
		max_ops = strtoull(optarg, NULL, 0);
		break;
	case 't':
		max_seconds = atoi(optarg);
		break;
	default:
		return IGT_OPT_HANDLER_ERROR;
	}
	return IGT_OPT_HANDLER_SUCCESS;
}

static const struct option long_opts[] = {
	{ "seed", required_argument, NULL, 's' },
	{ "ops", required_argument, NULL, 'n' },
	{ "seconds", required_argument, NULL, 't' },
	{}
};

static const char help_str[] =
	"  --seed N     the random sequence (default 1)\n"
	"  --ops N      stop after N operations (default 2500)\n"
	"  --seconds N  stop after N seconds (default 150)";

igt_main_args("s:n:t:", long_opts, help_str, opt_handler, NULL)
{
	igt_fixture {
		/* As IGT counts devices: the first, then another. */
		fd = drm_open_driver(DRIVER_VSVM);
		vm = vsvm_vm_create(fd);
		fd2 = __drm_open_driver_another(1, DRIVER_VSVM);
		if (fd2 >= 0)
			vm2 = vsvm_vm_create(fd2);
	}

	igt_describe("A seeded random mix, each result checked against a shadow copy");
	igt_subtest("mixer")
		test_mixer();

	igt_fixture {
		if (fd2 >= 0)
			drm_close_driver(fd2);
		vsvm_vm_destroy(fd, vm);
		drm_close_driver(fd);
	}
}
