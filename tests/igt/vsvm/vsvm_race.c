// SPDX-License-Identifier: MIT
/*
 * vsvm_race: GPU faults, CPU mapping changes and process lifetimes racing
 * each other. Every subtest checks the data as well as the absence of
 * errors; the harness checks the kernel log for splats.
 */
#include <pthread.h>
#include <signal.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <unistd.h>

#include "igt.h"
#include "vsvm/vsvm_ioctl.h"

IGT_TEST_DESCRIPTION("Races between GPU faults, CPU mapping changes and process exit");

#define PAGE VSVM_PAGE
#define THREADS 4

static int fd;
static uint32_t vm;

struct worker {
	pthread_t thread;
	uint8_t *buf;
	uint64_t size;
	int id, rounds;
	bool shared;
	uint64_t errors;
};

/*
 * Same range: every thread reads the whole buffer and writes its own slice.
 * Different ranges: every thread owns a 2M range.
 */
static void *fault_worker(void *arg)
{
	struct worker *w = arg;
	uint64_t slice = w->shared ? w->size / THREADS : w->size;
	uint8_t *mine = w->shared ? w->buf + w->id * slice : w->buf;

	for (int r = 0; r < w->rounds; r++) {
		uint8_t byte = (uint8_t)(w->id * 32 + r + 1);
		uint64_t sum = 0;

		uint64_t bad = 0;
		int ret;

		ret = __vsvm_read(fd, vm, w->buf, w->size, &sum);
		if (ret)
			w->errors++, igt_warn("thread %d round %d: read: %d\n", w->id, r, ret);
		ret = __vsvm_write(fd, vm, mine, slice, byte);
		if (ret)
			w->errors++, igt_warn("thread %d round %d: write: %d\n", w->id, r, ret);
		ret = __vsvm_read(fd, vm, mine, slice, &sum);
		if (ret || sum != byte * slice) {
			w->errors++;
			igt_warn("thread %d round %d: read back: %d, sum %llu of %llu\n", w->id, r,
				 ret, (unsigned long long)sum, (unsigned long long)(byte * slice));
		}
		for (uint64_t i = 0; i < slice; i += 512)
			bad += mine[i] != byte;
		if (bad)
			w->errors += bad, igt_warn("thread %d round %d: %llu CPU checks differ\n",
						   w->id, r, (unsigned long long)bad);
		/* The CPU writes too: the GPU mapping of the page goes. */
		mine[r * PAGE % slice] = byte;
	}
	return NULL;
}

static void test_threads(bool shared)
{
	struct worker w[THREADS];
	uint8_t *one = vsvm_aligned_mmap(THREADS * SZ_2M, SZ_2M, PROT_READ | PROT_WRITE,
					 MAP_PRIVATE | MAP_ANONYMOUS);
	int i;

	for (i = 0; i < THREADS; i++) {
		w[i] = (struct worker){
			.buf = shared ? one : one + i * SZ_2M, .size = SZ_2M,
			.id = i, .rounds = 20, .shared = shared,
		};
		igt_assert_eq(pthread_create(&w[i].thread, NULL, fault_worker, &w[i]), 0);
	}
	for (i = 0; i < THREADS; i++) {
		igt_assert_eq(pthread_join(w[i].thread, NULL), 0);
		igt_assert_eq_u64(w[i].errors, 0);
	}
	munmap(one, THREADS * SZ_2M);
}

/*
 * Processes, each with its own device file and VM, on one shared mapping
 * (the same pages) or on private memory.
 */
static void test_processes(bool shared)
{
	uint64_t slice = SZ_2M;
	uint8_t *buf = mmap(NULL, THREADS * slice, PROT_READ | PROT_WRITE,
			    (shared ? MAP_SHARED : MAP_PRIVATE) | MAP_ANONYMOUS, -1, 0);

	igt_assert(buf != MAP_FAILED);
	igt_fork(child, THREADS) {
		int cfd = drm_open_driver_render(DRIVER_VSVM);
		uint32_t cvm = vsvm_vm_create(cfd);
		uint8_t *mine = buf + child * slice;

		for (int r = 0; r < 10; r++) {
			uint8_t byte = (uint8_t)(child * 32 + r + 1);

			vsvm_read(cfd, cvm, buf, THREADS * slice);
			vsvm_write(cfd, cvm, mine, slice, byte);
			igt_assert_eq_u64(vsvm_read(cfd, cvm, mine, slice), byte * slice);
			igt_assert_eq(mine[slice - 1], byte);
		}
		drm_close_driver(cfd);
	}
	igt_waitchildren();
	for (int c = 0; c < THREADS; c++)
		igt_assert_eq(buf[c * slice + 7], shared ? (uint8_t)(c * 32 + 10) : 0);
	munmap(buf, THREADS * slice);
}

/* A seeded xorshift, for the intruder's reproducible choices. */
static uint64_t next_random(uint64_t *state)
{
	*state ^= *state << 13;
	*state ^= *state >> 7;
	*state ^= *state << 17;
	return *state;
}

/* The workload of test_isolation(): each round's bytes, by the GPU and the CPU. */
static void checked_workload(int cfd, uint32_t cvm, uint8_t *buf, uint64_t size)
{
	for (int r = 1; r <= 8; r++) {
		vsvm_write(cfd, cvm, buf, size, (uint8_t)r);
		igt_assert_eq_u64(vsvm_read(cfd, cvm, buf, size), r * size);
		vsvm_prefetch(cfd, cvm, buf, size, DRM_VSVM_REGION_VRAM);
		igt_assert_eq_u64(vsvm_read(cfd, cvm, buf, size), r * size);
		igt_assert_eq(buf[size - 1], r);
	}
}

/* The intruder of test_isolation(): every ioctl, random arguments, made-up ids. */
static void intruder(int cfd, uint32_t cvm, uint8_t *buf, uint64_t size)
{
	uint64_t state = 0x9e3779b97f4a7c15ULL, moved, sum;

	for (int r = 0; r < 400; r++) {
		uint64_t pick = next_random(&state);
		uint8_t *at = buf + (pick >> 8) % size;
		uint64_t len = (pick >> 32) % (2 * size) + 1;
		uint32_t id = pick & 1 ? cvm : (uint32_t)(pick >> 40);

		switch (pick % 6) {
		case 0:
			__vsvm_write(cfd, id, at, len, (uint8_t)pick);
			break;
		case 1:
			__vsvm_read(cfd, id, at, len, &sum);
			break;
		case 2:
			__vsvm_prefetch(cfd, id, buf, size, (pick >> 3) % 3, &moved);
			break;
		case 3:
			__vsvm_wait(cfd, id, pick >> 16, 0, NULL);
			break;
		case 4:
			igt_ioctl(cfd, DRM_IOCTL_VSVM_MADVISE, &((struct drm_vsvm_madvise){
				.addr = (uintptr_t)at & ~(PAGE - 1), .size = PAGE, .vm_id = id,
				.preferred = (pick >> 3) % 3, .atomic = (pick >> 5) % 3 }));
			break;
		default:
			igt_ioctl(cfd, DRM_IOCTL_VSVM_VM_DESTROY,
				  &((struct drm_vsvm_vm_destroy){ .vm_id = id + 1 }));
			break;
		}
	}
}

/*
 * One process tries every ioctl with random arguments, on its own VMs and on
 * ids it makes up, pressing on VRAM; another runs a checked workload on the
 * same device, which must see no error and no wrong byte.
 */
static void test_isolation(void)
{
	const uint64_t size = 4 * SZ_2M;

	igt_fork(child, 2) {
		int cfd = drm_open_driver_render(DRIVER_VSVM);
		uint32_t cvm = vsvm_vm_create(cfd);
		uint8_t *buf = vsvm_aligned_mmap(size, SZ_2M, PROT_READ | PROT_WRITE,
						 MAP_PRIVATE | MAP_ANONYMOUS);

		if (child == 0)
			checked_workload(cfd, cvm, buf, size);
		else
			intruder(cfd, cvm, buf, size);
		munmap(buf, size);
		drm_close_driver(cfd);
	}
	igt_waitchildren();
}

/* munmap while a job works on the memory: the job ends with 0 or EFAULT. */
static void test_munmap_vs_job(bool vram)
{
	const uint64_t size = 8 * SZ_2M;
	int ends[2] = {};

	for (int round = 0; round < 8; round++) {
		uint8_t *p = vsvm_aligned_mmap(size, SZ_2M, PROT_READ | PROT_WRITE,
					       MAP_PRIVATE | MAP_ANONYMOUS);
		struct drm_vsvm_op op = {
			.kind = DRM_VSVM_OP_WRITE, .addr = (uintptr_t)p, .size = size, .value = 3,
		};
		uint64_t job;
		int status;

		memset(p, 1, size);
		if (vram)
			vsvm_prefetch(fd, vm, p, size, DRM_VSVM_REGION_VRAM);
		job = vsvm_exec_async(fd, vm, &op, 1);
		usleep(round * 3000);
		/* Half goes, then the rest. */
		igt_assert_eq(munmap(p + size / 2, size / 2), 0);
		igt_assert_eq(munmap(p, size / 2), 0);
		status = __vsvm_wait(fd, vm, job, -1, NULL);
		igt_assert_f(status == 0 || status == -EFAULT, "job status %d\n", status);
		ends[status != 0]++;
		igt_assert_eq(vsvm_pte_flags(fd, vm, p), 0);
		igt_assert_eq(vsvm_pte_flags(fd, vm, p + size - PAGE), 0);
	}
	igt_info("jobs finished: %d, ended by the munmap: %d\n", ends[0], ends[1]);
	/* The VM goes on working. */
	{
		uint8_t *p = vsvm_aligned_mmap(SZ_2M, SZ_2M, PROT_READ | PROT_WRITE,
					       MAP_PRIVATE | MAP_ANONYMOUS);

		vsvm_write(fd, vm, p, SZ_2M, 9);
		igt_assert_eq(p[SZ_2M - 1], 9);
		munmap(p, SZ_2M);
	}
}

/*
 * A migration that comes while the engine works on a page it translated
 * waits for it (the TLB flush): the engine is held back after its lookup,
 * and the page moves to VRAM with the job's write, not without it.
 */
static void test_migrate_vs_engine(void)
{
	uint8_t *p = vsvm_aligned_mmap(SZ_2M, SZ_2M, PROT_READ | PROT_WRITE,
				       MAP_PRIVATE | MAP_ANONYMOUS);
	struct drm_vsvm_op op = {
		.kind = DRM_VSVM_OP_WRITE, .addr = (uintptr_t)p, .size = PAGE, .value = 0x22,
	};
	uint64_t job;

	memset(p, 0x11, SZ_2M);
	/* The page is mapped writable: the job translates it without a fault. */
	vsvm_write(fd, vm, p, PAGE, 0x11);
	vsvm_fault_delay(fd, 100000);
	vsvm_fail(fd, "delay_engine", 1);
	job = vsvm_exec_async(fd, vm, &op, 1);
	usleep(20000);
	vsvm_prefetch(fd, vm, p, SZ_2M, DRM_VSVM_REGION_VRAM);
	igt_assert_eq(__vsvm_wait(fd, vm, job, -1, NULL), 0);
	vsvm_fail(fd, "delay_engine", 0);
	vsvm_fault_delay(fd, 0);
	for (unsigned int i = 0; i < PAGE; i++)
		igt_assert_f(p[i] == 0x22, "p[%u] = %#x: the job's write was lost\n", i, p[i]);
	igt_assert_eq(p[PAGE], 0x11);
	munmap(p, SZ_2M);
}

/*
 * CPU and GPU take turns incrementing one counter; with VRAM preferred, the
 * page migrates on every GPU turn and comes back on every CPU turn.
 */
static void test_ping_pong(bool vram)
{
	uint64_t *counter = vsvm_aligned_mmap(SZ_2M, SZ_2M, PROT_READ | PROT_WRITE,
					      MAP_PRIVATE | MAP_ANONYMOUS);
	struct drm_vsvm_stats before, after;
	const int rounds = 50;
	uint64_t old;

	*counter = 0;
	if (vram)
		vsvm_madvise(fd, vm, counter, SZ_2M, DRM_VSVM_REGION_VRAM, DRM_VSVM_ATOMIC_VRAM);
	vsvm_stats(fd, vm, &before);
	for (int r = 0; r < rounds; r++) {
		igt_assert_eq(__vsvm_atomic_add(fd, vm, counter, 1, &old), 0);
		igt_assert_eq_u64(old, 2 * r);
		igt_assert_eq_u64(*counter, 2 * r + 1);
		(*counter)++;
	}
	vsvm_stats(fd, vm, &after);
	igt_assert_eq_u64(*counter, 2 * rounds);
	if (vram) {
		igt_assert(after.migrations_to_vram - before.migrations_to_vram >= rounds);
		igt_assert(after.dev_cpu_faults - before.dev_cpu_faults >= rounds);
	}
	munmap(counter, SZ_2M);
}

#define FAULTERS 16
/* Sixteen slices fit the tests' VRAM, four to a 2M range. */
#define FAULT_SLICE (SZ_2M / 4)

struct faulter {
	pthread_t thread;
	uint8_t *slice;
	uint8_t byte;
	uint64_t bad;
};

/* The CPU checks every page of its slice in VRAM: each fault brings a block back. */
static void *fault_back(void *arg)
{
	struct faulter *f = arg;

	for (uint64_t off = 0; off < FAULT_SLICE; off += PAGE)
		f->bad += f->slice[off + off / PAGE % PAGE] != f->byte;
	return NULL;
}

/*
 * Sixteen threads fault their slices of one buffer back from VRAM at once,
 * four in each range, as the CPU threads of an application do after a GPU
 * job: every byte they check is the GPU's, and every page came back.
 */
static void test_fault_back_threads(void)
{
	const uint64_t size = FAULTERS * FAULT_SLICE;
	uint8_t *buf = vsvm_aligned_mmap(size, SZ_2M, PROT_READ | PROT_WRITE,
					 MAP_PRIVATE | MAP_ANONYMOUS);
	struct faulter f[FAULTERS];
	struct drm_vsvm_stats before, after;

	for (int i = 0; i < FAULTERS; i++)
		vsvm_write(fd, vm, buf + i * FAULT_SLICE, FAULT_SLICE, (uint8_t)(i + 1));
	igt_assert_eq_u64(vsvm_prefetch(fd, vm, buf, size, DRM_VSVM_REGION_VRAM), size / PAGE);
	vsvm_stats(fd, vm, &before);
	for (int i = 0; i < FAULTERS; i++) {
		f[i] = (struct faulter){ .slice = buf + i * FAULT_SLICE, .byte = (uint8_t)(i + 1) };
		igt_assert_eq(pthread_create(&f[i].thread, NULL, fault_back, &f[i]), 0);
	}
	for (int i = 0; i < FAULTERS; i++) {
		igt_assert_eq(pthread_join(f[i].thread, NULL), 0);
		igt_assert_eq_u64(f[i].bad, 0);
	}
	vsvm_stats(fd, vm, &after);
	igt_assert_eq_u64(after.dev_bytes_cpu_faulted - before.dev_bytes_cpu_faulted, size);
	igt_assert_eq_u64(before.dev_vram_used - after.dev_vram_used, size);
	munmap(buf, size);
}

/* The same with sixteen processes, each faulting back its own buffer. */
static void test_fault_back_processes(void)
{
	int ready[2], go[2];

	igt_assert_eq(pipe(ready), 0);
	igt_assert_eq(pipe(go), 0);
	igt_fork(child, FAULTERS) {
		int cfd = drm_open_driver_render(DRIVER_VSVM);
		uint32_t cvm = vsvm_vm_create(cfd);
		uint8_t *p = vsvm_aligned_mmap(FAULT_SLICE, FAULT_SLICE, PROT_READ | PROT_WRITE,
					       MAP_PRIVATE | MAP_ANONYMOUS);
		struct faulter f = { .slice = p, .byte = (uint8_t)(child + 1) };
		char c = 0;

		vsvm_write(cfd, cvm, p, FAULT_SLICE, f.byte);
		igt_assert_eq_u64(vsvm_prefetch(cfd, cvm, p, FAULT_SLICE, DRM_VSVM_REGION_VRAM),
				  FAULT_SLICE / PAGE);
		igt_assert_eq(write(ready[1], &c, 1), 1);
		igt_assert_eq(read(go[0], &c, 1), 1);
		fault_back(&f);
		igt_assert_eq_u64(f.bad, 0);
		igt_assert_eq(vsvm_pte_flags(cfd, cvm, p), 0);
		drm_close_driver(cfd);
	}
	for (int i = 0; i < FAULTERS; i++) {
		char c;

		igt_assert_eq(read(ready[0], &c, 1), 1);
	}
	for (int i = 0; i < FAULTERS; i++)
		igt_assert_eq(write(go[1], "g", 1), 1);
	igt_waitchildren();
	close(ready[0]);
	close(ready[1]);
	close(go[0]);
	close(go[1]);
}

/* Processes exit, or are killed, with a job in flight. */
static void test_exit_with_job(bool kill_it)
{
	for (int round = 0; round < 4; round++) {
		struct igt_helper_process child = { .use_SIGKILL = true };

		igt_fork_helper(&child) {
			int cfd = drm_open_driver_render(DRIVER_VSVM);
			uint32_t cvm = vsvm_vm_create(cfd);
			uint64_t size = 32UL << 20;
			uint8_t *p = mmap(NULL, size, PROT_READ | PROT_WRITE,
					  MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
			struct drm_vsvm_op op = {
				.kind = DRM_VSVM_OP_WRITE, .addr = (uintptr_t)p, .size = size,
				.value = 1,
			};

			if (round & 1)
				vsvm_prefetch(cfd, cvm, p, 4 * SZ_2M, DRM_VSVM_REGION_VRAM);
			vsvm_exec_async(cfd, cvm, &op, 1);
			if (kill_it)
				pause();
		}
		if (kill_it) {
			usleep(20000 * round);
			/* Fails unless the child was still there to be killed. */
			igt_stop_helper(&child);
		} else {
			int status = igt_wait_helper(&child);

			igt_assert(WIFEXITED(status) && WEXITSTATUS(status) == 0);
		}
	}
	/* The device still works for us. */
	{
		uint8_t *p = vsvm_aligned_mmap(SZ_2M, SZ_2M, PROT_READ | PROT_WRITE,
					       MAP_PRIVATE | MAP_ANONYMOUS);

		vsvm_write(fd, vm, p, SZ_2M, 5);
		igt_assert_eq_u64(vsvm_read(fd, vm, p, SZ_2M), 5UL * SZ_2M);
		munmap(p, SZ_2M);
	}
}

/* A VM destroyed and its file closed while jobs run on them. */
static void test_close_with_job(void)
{
	for (int round = 0; round < 4; round++) {
		int cfd = drm_open_driver_render(DRIVER_VSVM);
		uint32_t cvm = vsvm_vm_create(cfd);
		uint64_t size = 16UL << 20;
		uint8_t *p = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS,
				  -1, 0);
		struct drm_vsvm_op op = {
			.kind = DRM_VSVM_OP_WRITE, .addr = (uintptr_t)p, .size = size, .value = 1,
		};

		igt_assert(p != MAP_FAILED);
		vsvm_exec_async(cfd, cvm, &op, 1);
		vsvm_exec_async(cfd, cvm, &op, 1);
		if (round & 1)
			vsvm_vm_destroy(cfd, cvm);
		drm_close_driver(cfd);
		munmap(p, size);
	}
}

igt_main
{
	igt_fixture {
		fd = drm_open_driver_render(DRIVER_VSVM);
		vm = vsvm_vm_create(fd);
	}

	igt_describe("Threads of one process faulting the same range");
	igt_subtest("threads-same-range")
		test_threads(true);
	igt_describe("Threads of one process faulting ranges of their own");
	igt_subtest("threads-different-ranges")
		test_threads(false);
	igt_describe("Processes with mirrors of their own on shared memory");
	igt_subtest("processes-shared-memory")
		test_processes(true);
	igt_describe("Processes with mirrors of their own on private memory");
	igt_subtest("processes-private-memory")
		test_processes(false);
	igt_describe("munmap while a GPU job works on the memory in system memory");
	igt_subtest("munmap-vs-job")
		test_munmap_vs_job(false);
	igt_describe("munmap while a GPU job works on the memory in VRAM");
	igt_subtest("munmap-vs-job-vram")
		test_munmap_vs_job(true);
	igt_describe("A migration waits for the engine's work on the pages it translated");
	igt_subtest("migrate-vs-engine")
		test_migrate_vs_engine();
	igt_describe("CPU and GPU take turns on one counter in system memory");
	igt_subtest("ping-pong")
		test_ping_pong(false);
	igt_describe("CPU and GPU take turns on one counter the GPU migrates to VRAM");
	igt_subtest("ping-pong-vram")
		test_ping_pong(true);
	igt_describe("Sixteen threads fault their slices of one buffer back from VRAM at once");
	igt_subtest("fault-back-threads")
		test_fault_back_threads();
	igt_describe("Sixteen processes fault their buffers back from VRAM at once");
	igt_subtest("fault-back-processes")
		test_fault_back_processes();
	igt_describe("A process exits with a job in flight");
	igt_subtest("exit-with-job")
		test_exit_with_job(false);
	igt_describe("A process is killed with a job in flight");
	igt_subtest("killed-with-job")
		test_exit_with_job(true);
	igt_describe("A process trying every ioctl changes nothing for another's workload");
	igt_subtest("isolation")
		test_isolation();
	igt_describe("The VM and the file go while jobs run");
	igt_subtest("close-with-job")
		test_close_with_job();

	igt_fixture {
		vsvm_vm_destroy(fd, vm);
		drm_close_driver(fd);
	}
}
