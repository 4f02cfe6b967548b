// SPDX-License-Identifier: GPL-2.0
/*
 * vsvm demo: the simulated GPU works on plain process memory. Each step
 * prints what the driver counted, and a TAP line ("ok - ..." or
 * "not ok - ...") for each check; the exit status is 0 when all passed.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <unistd.h>

#include <drm/drm.h>
#include <drm/vsvm_drm.h>

#include "vsvm-util.h"

#define SZ_2M (2UL << 20)
#define BUF_SIZE (4 * SZ_2M)
#define PAGE 4096UL

static int failures;

/* A private anonymous mapping of @size bytes, MAP_FAILED if there is none. */
static void *anon(size_t size)
{
	return mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
}

static void check(int ok, const char *what)
{
	printf("%s - %s\n", ok ? "ok" : "not ok", what);
	if (!ok)
		failures++;
}

/* Opens the render node of the nth vsvm device and says which it is. */
static int open_vsvm_nth(int nth)
{
	int fd = vsvm_open(nth);

	if (fd >= 0)
		printf("vsvm: device %d open\n", nth);
	return fd;
}

static int open_vsvm(void)
{
	return open_vsvm_nth(0);
}

/* Runs one operation; returns the job status and stores its result. */
static int run(int fd, uint32_t vm, uint32_t kind, void *addr, uint64_t size,
	       uint64_t value, void *src, uint64_t *result)
{
	struct drm_vsvm_op op = {
		.kind = kind, .addr = (uintptr_t)addr, .size = size,
		.value = value, .src = (uintptr_t)src,
	};
	struct drm_vsvm_exec exec = { .ops = (uintptr_t)&op, .count = 1, .vm_id = vm };

	if (ioctl(fd, DRM_IOCTL_VSVM_EXEC, &exec))
		return -errno;
	if (result)
		*result = op.result;
	return exec.status;
}

static void stats(int fd, uint32_t vm, const char *step)
{
	struct drm_vsvm_stats s = { .vm_id = vm };

	if (ioctl(fd, DRM_IOCTL_VSVM_STATS, &s)) {
		printf("vsvm: %s: DRM_IOCTL_VSVM_STATS failed: %s\n", step, strerror(errno));
		failures++;
		return;
	}
	/* Two lines of the console, each printed in parts that fit a line here. */
	printf("vsvm: %-24s gpu faults %llu (ranges 2M %llu, 64K %llu, 4K %llu), ",
	       step, s.gpu_faults, s.faults_2m, s.faults_64k, s.faults_4k);
	printf("retries %llu, invalidations %llu, gc %llu/%llu ranges, ",
	       s.retries, s.invalidations, s.gc_runs, s.gc_ranges);
	printf("ranges %llu, bound pages %llu\n", s.ranges, s.bound_pages);
	printf("vsvm: %-24s to VRAM %llu migrations %llu KiB, evicted %llu KiB; ",
	       "", s.migrations_to_vram, s.bytes_to_vram >> 10, s.bytes_evicted >> 10);
	printf("CPU faults on VRAM %llu, %llu KiB back; device evictions %llu, %llu KiB; ",
	       s.dev_cpu_faults, s.dev_bytes_cpu_faulted >> 10, s.dev_evictions,
	       s.dev_bytes_evicted >> 10);
	printf("VRAM used %llu of %llu KiB\n", s.dev_vram_used >> 10, s.dev_vram_size >> 10);
}

/* Reads the device page table entries of n pages from addr. */
static int snapshot(int fd, uint32_t vm, void *addr, struct drm_vsvm_pte *pte, int n)
{
	struct drm_vsvm_snapshot snap = {
		.addr = (uintptr_t)addr, .pages = n, .ptes = (uintptr_t)pte, .vm_id = vm,
	};

	return !ioctl(fd, DRM_IOCTL_VSVM_SNAPSHOT, &snap);
}

static int expect_errno(int fd, unsigned long req, void *arg, int err)
{
	return ioctl(fd, req, arg) == -1 && errno == err;
}

int main(void)
{
	struct drm_vsvm_vm_create create = { .start = PAGE, .size = (1ULL << 47) - PAGE };
	uint64_t sum, expect, old, *counter;
	uint8_t *raw, *buf;
	int fd, status;
	size_t i;

	setvbuf(stdout, NULL, _IOLBF, 0);
	fd = open_vsvm();
	check(fd >= 0, "the vsvm render node opens");
	if (fd < 0)
		return 1;
	check(!ioctl(fd, DRM_IOCTL_VSVM_VM_CREATE, &create) && create.vm_id,
	      "a VM mirrors the process");

	/* malloc'd memory, handed to the GPU as it is. */
	{
		size_t n = 3 * PAGE + 123;
		uint8_t *m = malloc(n);

		status = m ? run(fd, create.vm_id, DRM_VSVM_OP_WRITE, m, n, 0x6b, NULL, NULL) :
			     -ENOMEM;
		for (i = 0; m && i < n && m[i] == 0x6b; i++)
			;
		check(status == 0 && i == n, "the GPU writes a malloc'd buffer the CPU then reads");
		free(m);
	}

	/* A 2M-aligned buffer the CPU never touched. */
	raw = anon(BUF_SIZE + SZ_2M);
	buf = (uint8_t *)(((uintptr_t)raw + SZ_2M - 1) & ~(SZ_2M - 1));

	status = run(fd, create.vm_id, DRM_VSVM_OP_WRITE, buf, BUF_SIZE, 0x5a, NULL, NULL);
	check(status == 0, "the GPU fills an untouched 8 MiB buffer");
	stats(fd, create.vm_id, "after GPU write:");
	for (i = 0; i < BUF_SIZE && buf[i] == 0x5a; i++)
		;
	check(i == BUF_SIZE, "the CPU reads what the GPU wrote");
	{
		struct drm_vsvm_pte pte[2];

		check(snapshot(fd, create.vm_id, buf, pte, 2) &&
		      pte[0].flags == (DRM_VSVM_PTE_VALID | DRM_VSVM_PTE_WRITABLE) &&
		      pte[0].shift == 21 && pte[1].flags == pte[0].flags,
		      "the device maps the buffer with writable 2M entries of system memory");
	}

	for (i = 0, expect = 0; i < BUF_SIZE; i++) {
		buf[i] = (uint8_t)(i / PAGE);
		expect += buf[i];
	}
	status = run(fd, create.vm_id, DRM_VSVM_OP_READ, buf, BUF_SIZE, 0, NULL, &sum);
	check(status == 0 && sum == expect, "the GPU reads what the CPU wrote");
	stats(fd, create.vm_id, "after GPU read:");

	status = run(fd, create.vm_id, DRM_VSVM_OP_COPY, buf, SZ_2M, 0, buf + 2 * SZ_2M, NULL);
	check(status == 0 && !memcmp(buf, buf + 2 * SZ_2M, SZ_2M), "the GPU copies 2 MiB");

	/* In VRAM the GPU works on its own memory; a CPU touch brings pages back. */
	{
		struct drm_vsvm_prefetch pf = {
			.addr = (uintptr_t)buf, .size = BUF_SIZE, .vm_id = create.vm_id,
			.region = DRM_VSVM_REGION_VRAM,
		};

		for (i = 0, expect = 0x77UL * SZ_2M; i < BUF_SIZE - SZ_2M; i++)
			expect += buf[SZ_2M + i];
		check(!ioctl(fd, DRM_IOCTL_VSVM_PREFETCH, &pf) && pf.pages_moved == BUF_SIZE / PAGE,
		      "prefetch moves the buffer to VRAM");
		stats(fd, create.vm_id, "after prefetch to VRAM:");
		status = run(fd, create.vm_id, DRM_VSVM_OP_WRITE, buf, SZ_2M, 0x77, NULL, NULL);
		status |= run(fd, create.vm_id, DRM_VSVM_OP_READ, buf, BUF_SIZE, 0, NULL, &sum);
		check(status == 0 && sum == expect, "the GPU writes and reads the buffer in VRAM");
		stats(fd, create.vm_id, "after GPU work in VRAM:");
		for (i = 0; i < SZ_2M && buf[i] == 0x77; i++)
			;
		check(i == SZ_2M, "the CPU reads the GPU's writes back from VRAM");
		stats(fd, create.vm_id, "after CPU read:");
	}

	/* Preferred location VRAM: a GPU fault migrates the range first. */
	{
		struct drm_vsvm_madvise adv = {
			.addr = (uintptr_t)buf + 2 * SZ_2M, .size = SZ_2M, .vm_id = create.vm_id,
			.preferred = DRM_VSVM_REGION_VRAM,
		};
		struct drm_vsvm_pte pte[2];

		struct drm_vsvm_prefetch back = {
			.addr = adv.addr, .size = SZ_2M, .vm_id = create.vm_id,
			.region = DRM_VSVM_REGION_SYSTEM,
		};

		check(!ioctl(fd, DRM_IOCTL_VSVM_PREFETCH, &back) &&
		      back.pages_moved == SZ_2M / PAGE &&
		      snapshot(fd, create.vm_id, buf + 2 * SZ_2M, pte, 1) && !pte[0].flags,
		      "prefetch to system memory evicts 2M and unmaps it from the device");
		check(!ioctl(fd, DRM_IOCTL_VSVM_MADVISE, &adv), "madvise sets VRAM as preferred");
		status = run(fd, create.vm_id, DRM_VSVM_OP_READ, buf + 2 * SZ_2M, SZ_2M, 0, NULL,
			     &sum);
		check(status == 0 && snapshot(fd, create.vm_id, buf + 2 * SZ_2M, pte, 2) &&
		      pte[0].flags & DRM_VSVM_PTE_VRAM && pte[1].flags & DRM_VSVM_PTE_VRAM &&
		      pte[0].shift == 21, "a GPU fault there maps 2M of VRAM");
		stats(fd, create.vm_id, "after a preferred fault:");
	}

	/* VRAM pressure: VRAM + 8 MiB prefetched 2 MiB at a time; older ranges make room. */
	{
		struct drm_vsvm_stats st = { .vm_id = create.vm_id };
		size_t size, moved = 0, bad = 0;
		uint8_t *p, *e;

		ioctl(fd, DRM_IOCTL_VSVM_STATS, &st);
		size = st.dev_vram_size + 4 * SZ_2M;
		e = anon(size + SZ_2M);
		p = (uint8_t *)(((uintptr_t)e + SZ_2M - 1) & ~(SZ_2M - 1));
		for (i = 0; i < size; i += PAGE)
			memset(p + i, (int)(i / PAGE % 251 + 1), PAGE);
		for (i = 0; i < size; i += SZ_2M) {
			struct drm_vsvm_prefetch pf = {
				.addr = (uintptr_t)p + i, .size = SZ_2M, .vm_id = create.vm_id,
				.region = DRM_VSVM_REGION_VRAM,
			};

			if (!ioctl(fd, DRM_IOCTL_VSVM_PREFETCH, &pf))
				moved += pf.pages_moved;
			/*
			 * The GPU keeps using the first 2 MiB: an mprotect round trip
			 * unmaps it from the device, so each read faults and marks
			 * its VRAM as recently used.
			 */
			mprotect(p, SZ_2M, PROT_READ);
			mprotect(p, SZ_2M, PROT_READ | PROT_WRITE);
			run(fd, create.vm_id, DRM_VSVM_OP_READ, p, PAGE, 0, NULL, NULL);
		}
		stats(fd, create.vm_id, "after VRAM pressure:");
		ioctl(fd, DRM_IOCTL_VSVM_STATS, &st);
		check(moved == size / PAGE && st.dev_vram_used <= st.dev_vram_size &&
		      st.dev_evictions > 0 && st.dev_bytes_evicted >= 4 * SZ_2M,
		      "a working set larger than VRAM moves in whole, evicting older ranges");
		{
			struct drm_vsvm_pte pte[2];

			check(snapshot(fd, create.vm_id, p, pte, 1) &&
			      pte[0].flags & DRM_VSVM_PTE_VRAM &&
			      snapshot(fd, create.vm_id, p + SZ_2M, pte + 1, 1) &&
			      !(pte[1].flags & DRM_VSVM_PTE_VRAM),
			      "the range the GPU keeps using stays in VRAM, an older idle one was evicted");
		}
		for (i = 0; i < size; i++)
			bad += p[i] != (uint8_t)(i / PAGE % 251 + 1);
		check(bad == 0, "no data is lost through eviction");
		munmap(e, size + SZ_2M);
	}

	/* Half the buffer goes: the GPU's mappings of it go with it. */
	munmap(buf + BUF_SIZE / 2, BUF_SIZE / 2);
	stats(fd, create.vm_id, "after munmap of half:");
	status = run(fd, create.vm_id, DRM_VSVM_OP_READ, buf + BUF_SIZE / 2, PAGE, 0, NULL, &sum);
	check(status == -EFAULT, "a GPU read of the unmapped half fails with EFAULT");
	status = run(fd, create.vm_id, DRM_VSVM_OP_READ, buf, BUF_SIZE / 2, 0, NULL, &sum);
	for (i = 0, expect = 0; i < BUF_SIZE / 2; i++)
		expect += buf[i];
	check(status == 0 && sum == expect, "the GPU still reads the half left");
	stats(fd, create.vm_id, "after GPU read again:");

	/* GPU atomics and CPU increments on one counter. */
	counter = anon(PAGE);
	*counter = 0;
	for (i = 0; i < 100; i++) {
		status |= run(fd, create.vm_id, DRM_VSVM_OP_ATOMIC_ADD, counter, 8, 1, NULL, &old);
		(*counter)++;
	}
	check(status == 0 && *counter == 200,
	      "100 GPU atomic adds and 100 CPU increments make 200");
	stats(fd, create.vm_id, "after atomics:");

	/* A read-only page: the GPU may read it, not write it. */
	mprotect(counter, PAGE, PROT_READ);
	status = run(fd, create.vm_id, DRM_VSVM_OP_WRITE, counter, 8, 1, NULL, NULL);
	check(status == -EPERM, "a GPU write to read-only memory fails with EPERM");
	status = run(fd, create.vm_id, DRM_VSVM_OP_READ, counter, 8, 0, NULL, &sum);
	check(status == 0 && sum == 200, "the GPU reads read-only memory");

	/* An asynchronous job: queued, then waited for. */
	{
		uint8_t *a = anon(SZ_2M);
		struct drm_vsvm_op two[2] = {
			{ .kind = DRM_VSVM_OP_WRITE, .addr = (uintptr_t)a, .size = SZ_2M,
			  .value = 0x42 },
			{ .kind = DRM_VSVM_OP_READ, .addr = (uintptr_t)a, .size = SZ_2M },
		};
		struct drm_vsvm_exec exec = {
			.ops = (uintptr_t)two, .count = 2, .vm_id = create.vm_id,
			.flags = DRM_VSVM_EXEC_ASYNC,
		};
		struct drm_vsvm_wait wait = { .vm_id = create.vm_id, .timeout_ns = -1 };

		check(!ioctl(fd, DRM_IOCTL_VSVM_EXEC, &exec) && exec.job_id,
		      "an asynchronous job is queued");
		wait.job_id = exec.job_id;
		check(!ioctl(fd, DRM_IOCTL_VSVM_WAIT, &wait) && wait.status == 0 &&
		      wait.ops_done == 2 &&
		      two[1].result == 0x42UL * SZ_2M && a[SZ_2M - 1] == 0x42,
		      "waiting for it gives its status and results");
		check(expect_errno(fd, DRM_IOCTL_VSVM_WAIT, &(struct drm_vsvm_wait){
				.vm_id = create.vm_id, .job_id = exec.job_id }, ENOENT),
		      "a job waited for is forgotten");
	}

	/* A process exits with a job in flight: the job ends, nothing breaks. */
	{
		pid_t child = fork();

		if (child == 0) {
			struct drm_vsvm_vm_create c = {
				.start = PAGE, .size = (1ULL << 47) - PAGE
			};
			size_t big = 64UL << 20;
			uint8_t *b = anon(big);
			struct drm_vsvm_op w = {
				.kind = DRM_VSVM_OP_WRITE, .addr = (uintptr_t)b, .size = big,
				.value = 1
			};
			struct drm_vsvm_exec e = {
				.ops = (uintptr_t)&w, .count = 1, .flags = DRM_VSVM_EXEC_ASYNC
			};
			int cfd = open_vsvm();

			if (cfd < 0 || ioctl(cfd, DRM_IOCTL_VSVM_VM_CREATE, &c))
				_exit(2);
			e.vm_id = c.vm_id;
			_exit(ioctl(cfd, DRM_IOCTL_VSVM_EXEC, &e) ? 3 : 0);
		}
		check(child > 0 && waitpid(child, &status, 0) == child && WIFEXITED(status) &&
		      WEXITSTATUS(status) == 0,
		      "a process exits right after queueing a 64 MiB job");
		status = run(fd, create.vm_id, DRM_VSVM_OP_WRITE, counter, 8, 1, NULL, NULL);
		check(status == -EPERM, "the device still works after that exit");
	}

	/*
	 * A second device mirrors the same process: it sees what the first wrote, even from
	 * the first one's VRAM (its faults bring the pages back to system memory).
	 */
	{
		struct drm_vsvm_vm_create c2 = { .start = PAGE, .size = (1ULL << 47) - PAGE };
		uint8_t *s = anon(SZ_2M);
		struct drm_vsvm_prefetch pf = {
			.addr = (uintptr_t)s, .size = SZ_2M, .vm_id = create.vm_id,
			.region = DRM_VSVM_REGION_VRAM,
		};
		int fd2 = open_vsvm_nth(1);

		check(fd2 >= 0 && !ioctl(fd2, DRM_IOCTL_VSVM_VM_CREATE, &c2),
		      "a second device mirrors the process");
		status = run(fd, create.vm_id, DRM_VSVM_OP_WRITE, s, SZ_2M, 0x21, NULL, NULL);
		status |= ioctl(fd, DRM_IOCTL_VSVM_PREFETCH, &pf);
		status |= run(fd2, c2.vm_id, DRM_VSVM_OP_READ, s, SZ_2M, 0, NULL, &sum);
		check(status == 0 && pf.pages_moved == SZ_2M / PAGE && sum == 0x21UL * SZ_2M,
		      "the second device reads what the first wrote into its VRAM");
		stats(fd2, c2.vm_id, "second device:");
		if (fd2 >= 0)
			close(fd2);
	}

	/* Fault injection: a failed VRAM allocation or copy leaves the range where it was. */
	{
		uint8_t *raw2 = anon(2 * SZ_2M);
		uint8_t *g = (uint8_t *)(((uintptr_t)raw2 + SZ_2M - 1) & ~(SZ_2M - 1));
		struct drm_vsvm_prefetch pf = {
			.addr = (uintptr_t)g, .size = SZ_2M, .vm_id = create.vm_id,
			.region = DRM_VSVM_REGION_VRAM,
		};
		uint64_t moved[3];
		int k;

		memset(g, 0x11, SZ_2M);
		for (k = 0; k < 3; k++) {
			if (k < 2)
				vsvm_fail(fd, k == 0 ? "fail_alloc" : "fail_copy", 1);
			pf.pages_moved = 0;
			moved[k] = ioctl(fd, DRM_IOCTL_VSVM_PREFETCH, &pf) ? ~0ULL : pf.pages_moved;
		}
		check(moved[0] == 0 && moved[1] == 0 && moved[2] == SZ_2M / PAGE,
		      "injected allocation and copy failures leave the range in system memory, then it moves");
		{
			struct drm_vsvm_pte pte[2];

			/* A partial migration: the range ends up mixed, the GPU reads all of it. */
			pf.region = DRM_VSVM_REGION_SYSTEM;
			pf.pages_moved = 0;
			ioctl(fd, DRM_IOCTL_VSVM_PREFETCH, &pf);
			vsvm_fail(fd, "partial_migration", 1);
			pf.region = DRM_VSVM_REGION_VRAM;
			pf.pages_moved = 0;
			status = ioctl(fd, DRM_IOCTL_VSVM_PREFETCH, &pf);
			status |= run(fd, create.vm_id, DRM_VSVM_OP_READ, g, SZ_2M, 0, NULL, &sum);
			check(status == 0 && pf.pages_moved == SZ_2M / PAGE - 1 &&
			      sum == 0x11UL * SZ_2M && snapshot(fd, create.vm_id, g, pte, 2) &&
			      !(pte[0].flags & DRM_VSVM_PTE_VRAM) &&
			      pte[1].flags & DRM_VSVM_PTE_VRAM,
			      "a partial migration leaves a mixed range the GPU reads in whole");
		}
		vsvm_knob(fd, "fault_delay_us", "2000");
		vsvm_fail(fd, "delay_fault", 1);
		status = run(fd, create.vm_id, DRM_VSVM_OP_READ, g + SZ_2M / 2, PAGE, 0, NULL,
			     &sum);
		vsvm_fail(fd, "delay_fault", 0);
		check(status == 0 && sum == 0x11UL * PAGE && g[0] == 0x11,
		      "a delayed fault handler still resolves the fault");
		check(vsvm_knob(fd, "fault_delay_us", "soon") == -1 && errno == EINVAL,
		      "the delay knob takes only a number (EINVAL)");
	}

	/* Bad input is refused. */
	{
		struct drm_vsvm_exec exec = { .count = 0, .vm_id = create.vm_id };
		struct drm_vsvm_vm_destroy destroy = { .vm_id = 999 };
		struct drm_vsvm_vm_create bad = { .start = 1, .size = PAGE };

		check(expect_errno(fd, DRM_IOCTL_VSVM_EXEC, &exec, EINVAL),
		      "an empty job is EINVAL");
		exec.count = DRM_VSVM_MAX_OPS + 1;
		check(expect_errno(fd, DRM_IOCTL_VSVM_EXEC, &exec, E2BIG),
		      "a job too long is E2BIG");
		exec.count = 1;
		exec.vm_id = 999;
		check(expect_errno(fd, DRM_IOCTL_VSVM_EXEC, &exec, ENOENT),
		      "an unknown VM is ENOENT");
		check(expect_errno(fd, DRM_IOCTL_VSVM_VM_DESTROY, &destroy, ENOENT),
		      "destroying an unknown VM is ENOENT");
		check(expect_errno(fd, DRM_IOCTL_VSVM_VM_CREATE, &bad, EINVAL),
		      "a misaligned span is EINVAL");
	}

	{
		struct drm_vsvm_vm_destroy destroy = { .vm_id = create.vm_id };

		check(!ioctl(fd, DRM_IOCTL_VSVM_VM_DESTROY, &destroy), "the VM is destroyed");
	}
	close(fd);
	printf("vsvm: demo %s\n", failures ? "FAILED" : "passed");
	return failures ? 1 : 0;
}
