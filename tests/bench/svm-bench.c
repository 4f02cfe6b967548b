// SPDX-License-Identifier: GPL-2.0
/*
 * svm-bench: the GPU SVM mid-layer (through vsvm) side by side with the
 * in-tree peer, lib/test_hmm, in one guest run. Every figure is the median
 * of a number of timed runs after a warm-up (the second argument, 10 by
 * default), with the 10th and 90th percentiles as its spread. Each prints
 * one line
 *
 *   SVM-BENCH {"name": ..., "unit": ..., "ours": ..., "ours_p10": ...,
 *              "ours_p90": ..., "peer": ..., "peer_name": ..., "ratio": ...,
 *              "target": ..., "runs": ...}
 *
 * where "ratio" is ours relative to the peer, above 1 when ours is better
 * (throughput: ours / peer; time: peer / ours), the median of its runs'
 * ratios (each run times both sides), "target" the ratio the
 * figure should reach and "runs" the timed runs behind it. scripts/svm
 * bench runs the single-threaded figures in a guest whose clock counts
 * instructions (QEMU -icount), where a time is the work done, and the
 * threaded ones on real time (MTTCG).
 *
 * Work done by each side (see Documentation/gpu/rust/vsvm.rst):
 * - fault-in: the device page-table fill rate, as the time of a first pass
 *   over the buffer (faults and reads) minus that of the fastest of three
 *   more passes on the same mirror (reads only). test_hmm's pass is a READ,
 *   which copies every byte to a user buffer; vsvm's reads 8 bytes of each
 *   page (jobs of DRM_VSVM_MAX_OPS reads), so that the difference is not
 *   lost in the noise of reading the data. A first READ of the whole
 *   buffer on a new mirror (faults, and sums every byte on the GPU side) is
 *   reported too.
 * - migration: test_hmm's MIGRATE_TO_DEV reads every page back to a user
 *   buffer; the vsvm side does a GPU READ of the buffer after its prefetch,
 *   so both include one pass over the data in device memory.
 * - neither DMA-maps pages (vsvm's simulated GPU needs no DMA mapping).
 * - test_hmm C against Rust (group "twin"): the same ioctls against
 *   lib/test_hmm and then, the modules swapped, against lib/test_hmm_rust:
 *   what the Rust abstractions and the layer cost for the same work.
 */
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <drm/drm.h>
#include <drm/vsvm_drm.h>

#include "lib/test_hmm_uapi.h"
#include "vsvm-util.h"

#define PAGE 4096UL
#define SZ_2M (2UL << 20)
#define MIB (1UL << 20)
#define MAX_SAMPLES 64
/*
 * A fill is the first pass less the fastest of this many passes on the
 * mirror it made: one slow baseline pass would otherwise eat the fill.
 */
#define BASELINE_PASSES 3
/* Five ticks at HZ=250: 20 ms left none of that work in the next step. */
#define SETTLE_US 20000

static int vsvm_fd;
static uint64_t sink;
/* Timed runs of each figure, after one warm-up run. */
static int runs = 10;

static double tsc_hz;

static double monotonic(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/*
 * Time is read from the TSC, calibrated against CLOCK_MONOTONIC over two
 * seconds (0.2% at worst); ratios do not depend on the calibration at all.
 */
static double now(void)
{
	return (double)__builtin_ia32_rdtsc() / tsc_hz;
}

/*
 * The start of a timed step of a single-threaded figure. The kernel defers
 * work of a step to after it: RCU callbacks free a closed test_hmm mirror's
 * xarray nodes (about 200,000 instructions for 64M). In a timed step that
 * starts right after, that work ran in some runs and not in others: 8 of 10
 * first passes of a 64M fault-in took 200 us longer, a tenth of the fill
 * rate's time, and two boots came out 11% apart. A sleep lets it run before.
 *
 * The threaded figures (real time, MTTCG) run back to back instead: from a
 * guest left idle, two threads' jobs ran one after the other in 4 of 15 runs
 * (21 ms against 14.5 ms), where the scheduler placed them, not the layer.
 */
static double start_timing(void)
{
	usleep(SETTLE_US);
	return now();
}

static void calibrate(void)
{
	double t0 = monotonic(), t;
	uint64_t c0;

	while ((t = monotonic()) == t0)
		;
	c0 = __builtin_ia32_rdtsc();
	while (monotonic() - t < 2.0)
		;
	t = monotonic() - t;
	tsc_hz = (double)(__builtin_ia32_rdtsc() - c0) / t;
	printf("svm-bench: TSC %.0f MHz against CLOCK_MONOTONIC\n", tsc_hz / 1e6);
}

static void die(const char *what)
{
	printf("SVM-BENCH-ERROR %s: %s\n", what, strerror(errno));
	exit(1);
}

/* --- samples ------------------------------------------------------------ */

/* The timed runs of a figure that needs at least @min to repeat. */
static int runs_at_least(int min)
{
	return runs > min ? runs : min;
}

/* The times of a figure's runs, in the order they ran, and their run numbers. */
struct samples {
	double v[MAX_SAMPLES];
	int run[MAX_SAMPLES];
	int n;
};

/* Keeps the time @t of run @run; run -1 is the warm-up. */
static void keep(struct samples *s, int run, double t)
{
	if (run >= 0) {
		s->v[s->n] = t;
		s->run[s->n++] = run;
	}
}

/* A fill-rate sample: the first READ @t1 less the second @t2 (noise aside). */
static void keep_fill(struct samples *fill, struct samples *first, int run, double t1, double t2)
{
	if (t1 > t2) {
		keep(fill, run, t1 - t2);
		keep(first, run, t1);
	}
}

static int cmp(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;

	return x < y ? -1 : x > y;
}

/* The @p-th percentile of the @n values @v, which it sorts. */
static double pct_of(double *v, int n, int p)
{
	qsort(v, n, sizeof(double), cmp);
	return v[(n - 1) * p / 100];
}

/* The @p-th percentile of the times of @s, which stay in run order. */
static double pct(const struct samples *s, int p)
{
	double v[MAX_SAMPLES];

	memcpy(v, s->v, s->n * sizeof(double));
	return pct_of(v, s->n, p);
}

/*
 * The ratio of @ours to @peer: the median over the runs that both kept of
 * the peer's time over ours in that run (0 if there is none). A run times
 * both sides one right after the other, so what slows the guest for a while
 * (on MTTCG, the host's load) slows both alike and drops out of the ratio.
 * Over nine MTTCG boots in which the host's speed varied 2.5x, the ratio of
 * the two medians of a fault-back figure varied by 26% to 52% from boot to
 * boot, this ratio by 7% to 30%.
 */
static double paired_ratio(const struct samples *ours, const struct samples *peer)
{
	double r[MAX_SAMPLES];
	int i = 0, k = 0, n = 0;

	while (i < ours->n && k < peer->n) {
		if (ours->run[i] < peer->run[k]) {
			i++;
		} else if (ours->run[i] > peer->run[k]) {
			k++;
		} else {
			if (ours->v[i] > 0)
				r[n++] = peer->v[k] / ours->v[i];
			i++;
			k++;
		}
	}
	return n ? pct_of(r, n, 50) : 0;
}

/*
 * One figure. @ours and @peer are times in seconds per run (peer may be
 * empty); @scale turns a time into the unit: for throughput in GB/s, bytes
 * / 1e9 with @throughput set; for times, a factor (1e3 for ms, 1e6 for us).
 * @target is the ratio the figure should reach (0: none).
 */
static void report(const char *name, const char *unit, struct samples *ours,
		   struct samples *peer, const char *peer_name, double scale, int throughput,
		   double target)
{
	double o, o10, o90, p = 0, ratio = 0;

	if (!ours->n) {
		printf("SVM-BENCH-ERROR %s: no samples\n", name);
		return;
	}
	o = pct(ours, 50);
	o10 = pct(ours, 10);
	o90 = pct(ours, 90);
#define VALUE(t) (throughput ? scale / (t) : (t) * scale)
	if (peer && peer->n) {
		p = pct(peer, 50);
		ratio = paired_ratio(ours, peer);
	}
	/* One line of JSON, in three parts that each fit a line. */
	printf("SVM-BENCH {\"name\": \"%s\", \"unit\": \"%s\", ", name, unit);
	printf("\"ours\": %.4g, \"ours_p10\": %.4g, \"ours_p90\": %.4g, ",
	       VALUE(o), VALUE(throughput ? o90 : o10), VALUE(throughput ? o10 : o90));
	printf("\"peer\": %.4g, \"peer_name\": \"%s\", \"ratio\": %.3f, \"target\": %g, ",
	       p ? VALUE(p) : 0, peer_name, ratio, target);
	printf("\"runs\": %d}\n", ours->n);
#undef VALUE
	fflush(stdout);
}

/* --- the two devices ---------------------------------------------------- */

static uint32_t vm_create_on(int fd, uint32_t flags)
{
	struct drm_vsvm_vm_create c = {
		.start = PAGE, .size = (1ULL << 47) - PAGE, .flags = flags
	};

	if (ioctl(fd, DRM_IOCTL_VSVM_VM_CREATE, &c))
		die("vm create");
	return c.vm_id;
}

static uint32_t vm_create(uint32_t flags)
{
	return vm_create_on(vsvm_fd, flags);
}

static void vm_destroy_on(int fd, uint32_t vm)
{
	struct drm_vsvm_vm_destroy d = { .vm_id = vm };

	if (ioctl(fd, DRM_IOCTL_VSVM_VM_DESTROY, &d))
		die("vm destroy");
}

static void vm_destroy(uint32_t vm)
{
	vm_destroy_on(vsvm_fd, vm);
}

static void vsvm_op(uint32_t vm, uint32_t kind, void *addr, uint64_t size, uint64_t value)
{
	struct drm_vsvm_op op = { .kind = kind, .addr = (uintptr_t)addr, .size = size,
				  .value = value };
	struct drm_vsvm_exec e = { .ops = (uintptr_t)&op, .count = 1, .vm_id = vm };

	if (ioctl(vsvm_fd, DRM_IOCTL_VSVM_EXEC, &e) || e.status) {
		errno = e.status ? -e.status : errno;
		die("vsvm exec");
	}
	sink += op.result;
}

/* A GPU read of 8 bytes of each page of @size bytes from @addr. */
static void vsvm_touch_pages(uint32_t vm, uint8_t *addr, uint64_t size)
{
	static struct drm_vsvm_op ops[DRM_VSVM_MAX_OPS];
	uint64_t off = 0;

	while (off < size) {
		struct drm_vsvm_exec e = { .ops = (uintptr_t)ops, .vm_id = vm };

		for (e.count = 0; e.count < DRM_VSVM_MAX_OPS && off < size; e.count++, off += PAGE)
			ops[e.count] = (struct drm_vsvm_op){ .kind = DRM_VSVM_OP_READ,
							     .addr = (uintptr_t)addr + off,
							     .size = 8 };
		if (ioctl(vsvm_fd, DRM_IOCTL_VSVM_EXEC, &e) || e.status) {
			errno = e.status ? -e.status : errno;
			die("vsvm exec");
		}
		sink += ops[0].result;
	}
}

static uint64_t prefetch_on(int fd, uint32_t vm, void *addr, uint64_t size, uint32_t region)
{
	struct drm_vsvm_prefetch pf = { .addr = (uintptr_t)addr, .size = size, .vm_id = vm,
					.region = region };

	if (ioctl(fd, DRM_IOCTL_VSVM_PREFETCH, &pf))
		die("prefetch");
	return pf.pages_moved;
}

static uint64_t prefetch(uint32_t vm, void *addr, uint64_t size, uint32_t region)
{
	return prefetch_on(vsvm_fd, vm, addr, size, region);
}

static int hmm_open(void)
{
	int fd = open("/dev/hmm_dmirror0", O_RDWR);

	if (fd < 0)
		die("open /dev/hmm_dmirror0");
	return fd;
}

static void hmm_cmd(int fd, unsigned long req, void *addr, void *ptr, uint64_t size)
{
	struct hmm_dmirror_cmd cmd = { .addr = (uintptr_t)addr, .ptr = (uintptr_t)ptr,
				       .npages = size / PAGE };

	if (ioctl(fd, req, &cmd))
		die("test_hmm ioctl");
}

/* --- memory ------------------------------------------------------------- */

static uint8_t *buffer(uint64_t size, int thp, int populate)
{
	uint8_t *raw = mmap(NULL, size + SZ_2M, PROT_READ | PROT_WRITE,
			    MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	uint8_t *p;

	if (raw == MAP_FAILED)
		die("mmap");
	p = (uint8_t *)(((uintptr_t)raw + SZ_2M - 1) & ~(SZ_2M - 1));
	if (p > raw)
		munmap(raw, p - raw);
	munmap(p + size, raw + SZ_2M - p);
	madvise(p, size, thp ? MADV_HUGEPAGE : MADV_NOHUGEPAGE);
	if (populate)
		memset(p, 0x5a, size);
	return p;
}

/* --- 1, 2: fault-in and write faults ------------------------------------- */

static const char *const chunk_names[] = { "2M", "64K", "4K" };
static const uint32_t chunk_flags[] = { 0, DRM_VSVM_VM_MAX_RANGE_64K, DRM_VSVM_VM_MAX_RANGE_4K };

static void bench_fault_in(uint64_t size, int thp)
{
	struct samples fill[3] = {}, first[3] = {}, hfill = {}, hfirst = {};
	uint8_t *p = buffer(size, thp, 1), *bounce = buffer(size, 0, 1);
	char name[96];
	int i, c, k;

	for (i = -1; i < runs; i++) {
		for (c = 0; c < 3; c++) {
			uint32_t vm = vm_create(chunk_flags[c]);
			double t1 = start_timing(), t2;

			vsvm_touch_pages(vm, p, size);
			t1 = now() - t1;
			for (k = 0, t2 = 1e9; k < BASELINE_PASSES; k++) {
				double t = start_timing();

				vsvm_touch_pages(vm, p, size);
				t = now() - t;
				t2 = t < t2 ? t : t2;
			}
			vm_destroy(vm);
			if (t1 > t2)
				keep(&fill[c], i, t1 - t2);
			vm = vm_create(chunk_flags[c]);
			t1 = start_timing();
			vsvm_op(vm, DRM_VSVM_OP_READ, p, size, 0);
			keep(&first[c], i, now() - t1);
			vm_destroy(vm);
		}
		{
			int fd = hmm_open();
			double t1 = start_timing(), t2;

			hmm_cmd(fd, HMM_DMIRROR_READ, p, bounce, size);
			t1 = now() - t1;
			for (k = 0, t2 = 1e9; k < BASELINE_PASSES; k++) {
				double t = start_timing();

				hmm_cmd(fd, HMM_DMIRROR_READ, p, bounce, size);
				t = now() - t;
				t2 = t < t2 ? t : t2;
			}
			close(fd);
			keep_fill(&hfill, &hfirst, i, t1, t2);
		}
	}
	for (c = 0; c < 3; c++) {
		snprintf(name, sizeof(name), "fault-in %lluM thp-%s chunks-%s",
			 (unsigned long long)(size / MIB), thp ? "on" : "off", chunk_names[c]);
		report(name, "GB/s", &fill[c], &hfill, "test_hmm READ", (double)size / 1e9, 1,
		       c == 0 ? 3 : 1);
		snprintf(name, sizeof(name), "first-read %lluM thp-%s chunks-%s",
			 (unsigned long long)(size / MIB), thp ? "on" : "off", chunk_names[c]);
		report(name, "GB/s", &first[c], &hfirst, "test_hmm READ", (double)size / 1e9, 1, 1);
	}
	munmap(p, size);
	munmap(bounce, size);
}

static void bench_write_fault(uint64_t size)
{
	struct samples ours = {}, peer = {};
	uint8_t *src = buffer(size, 0, 1);
	int i;

	for (i = -1; i < runs; i++) {
		uint8_t *p = buffer(size, 0, 0);
		uint32_t vm = vm_create(0);
		double t = start_timing();

		vsvm_op(vm, DRM_VSVM_OP_WRITE, p, size, 1);
		t = now() - t;
		vm_destroy(vm);
		munmap(p, size);
		keep(&ours, i, t);

		p = buffer(size, 0, 0);
		{
			int fd = hmm_open();

			t = start_timing();
			hmm_cmd(fd, HMM_DMIRROR_WRITE, p, src, size);
			t = now() - t;
			close(fd);
		}
		munmap(p, size);
		keep(&peer, i, t);
	}
	report("write-fault 64M untouched", "GB/s", &ours, &peer, "test_hmm WRITE",
	       (double)size / 1e9, 1, 1);
	munmap(src, size);
}

/* --- 3, 4: migration ----------------------------------------------------- */

static void bench_migration(uint64_t size, int thp)
{
	struct samples to = {}, move = {}, back = {}, cpu = {}, hto = {}, hback = {}, hcpu = {};
	struct samples copy = {};
	uint8_t *bounce = buffer(size, 0, 1), *dst = buffer(size, 0, 1);
	uint64_t i;
	char name[96];
	int j;

	for (j = -1; j < runs; j++) {
		uint8_t *p = buffer(size, thp, 1);
		uint32_t vm = vm_create(0);
		int fd;
		double t;

		/*
		 * Device memory and back, each side with one read of the data there (test_hmm's
		 * migration reads it back); the move alone against memcpy().
		 */
		t = start_timing();
		if (prefetch(vm, p, size, DRM_VSVM_REGION_VRAM) != size / PAGE)
			die("prefetch moved too little");
		keep(&move, j, now() - t);
		vsvm_op(vm, DRM_VSVM_OP_READ, p, size, 0);
		t = now() - t;
		keep(&to, j, t);
		t = start_timing();
		prefetch(vm, p, size, DRM_VSVM_REGION_SYSTEM);
		t = now() - t;
		keep(&back, j, t);
		/* CPU faults back from device memory: one byte per page. */
		prefetch(vm, p, size, DRM_VSVM_REGION_VRAM);
		t = start_timing();
		for (i = 0; i < size; i += PAGE)
			sink += p[i];
		t = now() - t;
		keep(&cpu, j, t);
		vm_destroy(vm);
		munmap(p, size);

		p = buffer(size, thp, 1);
		fd = hmm_open();
		t = start_timing();
		hmm_cmd(fd, HMM_DMIRROR_MIGRATE_TO_DEV, p, bounce, size);
		t = now() - t;
		keep(&hto, j, t);
		t = start_timing();
		hmm_cmd(fd, HMM_DMIRROR_MIGRATE_TO_SYS, p, bounce, size);
		t = now() - t;
		keep(&hback, j, t);
		hmm_cmd(fd, HMM_DMIRROR_MIGRATE_TO_DEV, p, bounce, size);
		t = start_timing();
		for (i = 0; i < size; i += PAGE)
			sink += p[i];
		t = now() - t;
		keep(&hcpu, j, t);
		close(fd);
		munmap(p, size);

		/* The limit: one CPU copy of the same size. */
		t = start_timing();
		memcpy(dst, bounce, size);
		t = now() - t;
		keep(&copy, j, t);
	}
	snprintf(name, sizeof(name), "migrate-to-vram %lluM thp-%s (+read)",
		 (unsigned long long)(size / MIB), thp ? "on" : "off");
	report(name, "GB/s", &to, &hto, "test_hmm MIGRATE_TO_DEV", (double)size / 1e9, 1, 1);
	snprintf(name, sizeof(name), "migrate-to-vram %lluM thp-%s vs memcpy",
		 (unsigned long long)(size / MIB), thp ? "on" : "off");
	report(name, "GB/s", &move, &copy, "memcpy", (double)size / 1e9, 1, 0.5);
	snprintf(name, sizeof(name), "migrate-to-system %lluM thp-%s",
		 (unsigned long long)(size / MIB), thp ? "on" : "off");
	report(name, "GB/s", &back, &hback, "test_hmm MIGRATE_TO_SYS", (double)size / 1e9, 1, 1);
	snprintf(name, sizeof(name), "cpu-fault-back %lluM thp-%s",
		 (unsigned long long)(size / MIB), thp ? "on" : "off");
	report(name, "GB/s", &cpu, &hcpu, "test_hmm CPU fault", (double)size / 1e9, 1, 1);
	if (thp)
		report("memcpy (the limit)", "GB/s", &copy, NULL, "", (double)size / 1e9, 1, 0);
	munmap(bounce, size);
	munmap(dst, size);
}

/* --- test_hmm, C and Rust ----------------------------------------------- */

enum { TWIN_READ, TWIN_TO_DEV, TWIN_TO_SYS, TWIN_CPU_FAULT, TWIN_FIGURES };

static const char *const twin_names[TWIN_FIGURES] = {
	"first READ", "MIGRATE_TO_DEV", "MIGRATE_TO_SYS", "CPU fault back",
};

/* The ioctls of the twin figures, against the test_hmm module loaded now. */
static void twin_runs(struct samples s[TWIN_FIGURES], uint64_t size, int thp, uint8_t *bounce)
{
	uint64_t k;
	int i;

	for (i = -1; i < runs; i++) {
		uint8_t *p = buffer(size, thp, 1);
		int fd = hmm_open();
		double t;

		t = start_timing();
		hmm_cmd(fd, HMM_DMIRROR_READ, p, bounce, size);
		keep(&s[TWIN_READ], i, now() - t);
		t = start_timing();
		hmm_cmd(fd, HMM_DMIRROR_MIGRATE_TO_DEV, p, bounce, size);
		keep(&s[TWIN_TO_DEV], i, now() - t);
		t = start_timing();
		hmm_cmd(fd, HMM_DMIRROR_MIGRATE_TO_SYS, p, bounce, size);
		keep(&s[TWIN_TO_SYS], i, now() - t);
		hmm_cmd(fd, HMM_DMIRROR_MIGRATE_TO_DEV, p, bounce, size);
		t = start_timing();
		for (k = 0; k < size; k += PAGE)
			sink += p[k];
		keep(&s[TWIN_CPU_FAULT], i, now() - t);
		close(fd);
		munmap(p, size);
	}
}

/* Unloads test_hmm module @from and loads @to (with tests/guest/lib.sh). */
static void swap_test_hmm(const char *from, const char *to)
{
	char cmd[160];

	snprintf(cmd, sizeof(cmd), "rmmod %s && . /lib.sh && module_load %s", from, to);
	if (system(cmd))
		die(cmd);
}

static void bench_twin(uint64_t size, int thp)
{
	struct samples c[TWIN_FIGURES] = {}, rust[TWIN_FIGURES] = {};
	uint8_t *bounce = buffer(size, 0, 1);
	char name[96], peer[64];
	int f;

	twin_runs(c, size, thp, bounce);
	swap_test_hmm("test_hmm", "test_hmm_rust");
	twin_runs(rust, size, thp, bounce);
	swap_test_hmm("test_hmm_rust", "test_hmm");
	for (f = 0; f < TWIN_FIGURES; f++) {
		snprintf(name, sizeof(name), "test_hmm_rust %s %lluM thp-%s", twin_names[f],
			 (unsigned long long)(size / MIB), thp ? "on" : "off");
		snprintf(peer, sizeof(peer), "test_hmm (C) %s", twin_names[f]);
		report(name, "GB/s", &rust[f], &c[f], peer, (double)size / 1e9, 1, 0.9);
	}
	munmap(bounce, size);
}

/* --- 5: invalidation ----------------------------------------------------- */

/*
 * munmap and MADV_DONTNEED of a mirrored span, against the same unmirrored.
 * A millisecond window, into which the kernel's own deferred work falls in
 * some runs and not in others: the median of 3 runs fell on either side
 * (77% apart between two boots). At least UNMAP_RUNS runs; the munmap
 * figures still spread by a quarter within one boot.
 */
#define UNMAP_RUNS 15

static void bench_unmap(uint64_t size)
{
	struct samples mun = {}, hmun = {}, dn = {}, hdn = {}, base = {};
	uint8_t *bounce = buffer(size, 0, 1);
	int j, n = runs_at_least(UNMAP_RUNS);

	for (j = -1; j < n; j++) {
		uint8_t *p = buffer(size, 1, 1);
		uint32_t vm = vm_create(0);
		int fd;
		double t;

		vsvm_op(vm, DRM_VSVM_OP_READ, p, size, 0);
		t = start_timing();
		madvise(p, size, MADV_DONTNEED);
		t = now() - t;
		keep(&dn, j, t);
		memset(p, 1, size);
		vsvm_op(vm, DRM_VSVM_OP_READ, p, size, 0);
		t = start_timing();
		munmap(p, size);
		t = now() - t;
		keep(&mun, j, t);
		vm_destroy(vm);

		p = buffer(size, 1, 1);
		fd = hmm_open();
		hmm_cmd(fd, HMM_DMIRROR_READ, p, bounce, size);
		t = start_timing();
		madvise(p, size, MADV_DONTNEED);
		t = now() - t;
		keep(&hdn, j, t);
		memset(p, 1, size);
		hmm_cmd(fd, HMM_DMIRROR_READ, p, bounce, size);
		t = start_timing();
		munmap(p, size);
		t = now() - t;
		keep(&hmun, j, t);
		close(fd);

		p = buffer(size, 1, 1);
		t = start_timing();
		munmap(p, size);
		t = now() - t;
		keep(&base, j, t);
	}
	report("munmap 64M mirrored", "ms", &mun, &hmun, "test_hmm", 1e3, 0, 1);
	report("madv-dontneed 64M mirrored", "ms", &dn, &hdn, "test_hmm", 1e3, 0, 1);
	report("munmap 64M not mirrored", "ms", &base, NULL, "", 1e3, 0, 0);
	munmap(bounce, size);
}

/*
 * The cost of invalidating one range (MADV_DONTNEED of one 4K page) among
 * @n 4K ranges, against the cost among one: it must stay flat.
 */
static void bench_invalidate_one(const uint64_t *counts, int ncounts)
{
	struct samples s[8] = {};
	char name[96];
	int c, j;

	for (c = 0; c < ncounts; c++) {
		uint64_t n = counts[c], size = n * PAGE;
		uint8_t *p = buffer(size, 0, 1);
		uint32_t vm = vm_create(DRM_VSVM_VM_MAX_RANGE_4K);

		vsvm_op(vm, DRM_VSVM_OP_READ, p, size, 0);
		for (j = -1; j < runs; j++) {
			/* 64 single-page invalidations spread over the span. */
			double t = start_timing();

			for (int k = 0; k < 64; k++)
				madvise(p + (k * 7919 % n) * PAGE, PAGE, MADV_DONTNEED);
			t = (now() - t) / 64;
			keep(&s[c], j, t);
		}
		vm_destroy(vm);
		munmap(p, size);
	}
	for (c = 0; c < ncounts; c++) {
		snprintf(name, sizeof(name), "invalidate-one-range among %llu",
			 (unsigned long long)counts[c]);
		report(name, "us", &s[c], &s[0], "the same among 1", 1e6, 0, 0.5);
	}
}

/* --- 6: scaling ---------------------------------------------------------- */

/*
 * What the host gives the threaded figures: two threads that only compute,
 * sharing nothing, against one doing the same work, probed in each run of a
 * threaded group. On MTTCG a vCPU is a host thread: no two threads of the
 * guest gain more than this, whatever they do.
 */
static uint64_t spin_iters;

static void *spin(void *arg)
{
	uint64_t n = *(uint64_t *)arg, x = n;

	while (n--)
		x = x * 6364136223846793005ULL + 1442695040888963407ULL;
	__atomic_fetch_add(&sink, x, __ATOMIC_RELAXED);
	return NULL;
}

/* The time @n threads (1 or 2) take to spin 2 * spin_iters times in all. */
static double spin_time(int n)
{
	uint64_t each = 2 * spin_iters / n;
	pthread_t t;
	double t0 = now();

	if (n == 2 && pthread_create(&t, NULL, spin, &each))
		die("pthread_create");
	spin(&each);
	if (n == 2)
		pthread_join(t, NULL);
	return now() - t0;
}

/* One run of the probe into @one and @two; calibrated to 50 ms a run first. */
static void host_probe(struct samples *one, struct samples *two, int run)
{
	if (!spin_iters)
		for (spin_iters = 1 << 20; spin_time(1) < 0.05; spin_iters *= 2)
			;
	keep(one, run, spin_time(1));
	keep(two, run, spin_time(2));
}

static void report_probe(const char *group, struct samples *one, struct samples *two)
{
	char name[96];

	snprintf(name, sizeof(name), "host: 2 computing threads vs 1 (%s)", group);
	report(name, "Gop/s", two, one, "one thread", 2.0 * (double)spin_iters / 1e9, 1, 0);
}

struct worker {
	uint32_t vm;
	uint8_t *p;
	uint64_t size;
};

static void *fault_in(void *arg)
{
	struct worker *w = arg;

	vsvm_op(w->vm, DRM_VSVM_OP_READ, w->p, w->size, 0);
	return NULL;
}

static void bench_scaling(uint64_t size)
{
	struct samples one = {}, two = {}, hone = {}, htwo = {};
	uint8_t *a = buffer(size, 1, 1), *b = buffer(size, 1, 1);
	int j;

	for (j = -1; j < runs; j++) {
		struct worker w[2] = { { 0, a, size }, { 0, b, size } };
		uint32_t vm;
		pthread_t t2;
		double t;

		host_probe(&hone, &htwo, j);
		vm = vm_create(0);
		w[0].vm = vm;
		w[1].vm = vm;
		t = now();
		fault_in(&w[0]);
		fault_in(&w[1]);
		t = now() - t;
		vm_destroy(vm);
		keep(&one, j, t);

		vm = vm_create(0);
		w[0].vm = vm;
		w[1].vm = vm;
		t = now();
		pthread_create(&t2, NULL, fault_in, &w[1]);
		fault_in(&w[0]);
		pthread_join(t2, NULL);
		t = now() - t;
		vm_destroy(vm);
		keep(&two, j, t);
	}
	report("two threads vs one (2x32M fault-in)", "GB/s", &two, &one, "one thread",
	       2.0 * (double)size / 1e9, 1, 1.6);
	report_probe("scaling", &hone, &htwo);
	munmap(a, size);
	munmap(b, size);
}

/* --- 7: teardown ---------------------------------------------------------- */

/*
 * The close of a mirror of 256M in device memory: vsvm frees the VM and
 * leaves the pages to the process; test_hmm's close evicts its device memory
 * to system memory. About 110 us of work of ours moves by 3% from run to run
 * (15 runs: 106 to 112 us): the median of 3 came out 5.3% apart between two
 * boots. At least TEARDOWN_RUNS runs.
 */
#define TEARDOWN_RUNS 15

static void bench_teardown(uint64_t size)
{
	struct samples ours = {}, peer = {};
	uint8_t *bounce = buffer(size, 0, 1);
	int j, n = runs_at_least(TEARDOWN_RUNS);

	for (j = -1; j < n; j++) {
		uint8_t *p = buffer(size, 1, 1);
		uint32_t vm = vm_create(0);
		int fd;
		double t;

		prefetch(vm, p, size, DRM_VSVM_REGION_VRAM);
		vsvm_op(vm, DRM_VSVM_OP_READ, p, size, 0);
		t = start_timing();
		vm_destroy(vm);
		t = now() - t;
		keep(&ours, j, t);
		munmap(p, size);

		p = buffer(size, 1, 1);
		fd = hmm_open();
		hmm_cmd(fd, HMM_DMIRROR_MIGRATE_TO_DEV, p, bounce, size);
		t = start_timing();
		close(fd);
		t = now() - t;
		keep(&peer, j, t);
		munmap(p, size);
	}
	report("teardown 256M resident", "ms", &ours, &peer, "test_hmm close", 1e3, 0, 1);
	munmap(bounce, size);
}

/* --- 8: several devices ---------------------------------------------------- */

/*
 * Pages in the VRAM of the first device moved to the VRAM of the second, a
 * peer (vsvm.p2p_groups): by a prefetch on the second, device to device,
 * against the same bytes through system memory (a prefetch to system memory
 * on the first, then to VRAM on the second).
 */
static void bench_peer_migration(uint64_t size)
{
	struct samples direct = {}, through = {};
	int fd1 = vsvm_open(1);
	uint32_t vm0, vm1;
	int j;

	if (fd1 < 0) {
		printf("SVM-BENCH-ERROR peer migration: no second vsvm device\n");
		return;
	}
	vm0 = vm_create(0);
	vm1 = vm_create_on(fd1, 0);
	for (j = -1; j < runs; j++) {
		uint8_t *p = buffer(size, 1, 1);
		double t;

		prefetch(vm0, p, size, DRM_VSVM_REGION_VRAM);
		t = start_timing();
		if (prefetch_on(fd1, vm1, p, size, DRM_VSVM_REGION_VRAM) != size / PAGE)
			die("peer migration: not every page moved");
		keep(&direct, j, now() - t);
		munmap(p, size);

		p = buffer(size, 1, 1);
		prefetch(vm0, p, size, DRM_VSVM_REGION_VRAM);
		t = start_timing();
		prefetch(vm0, p, size, DRM_VSVM_REGION_SYSTEM);
		if (prefetch_on(fd1, vm1, p, size, DRM_VSVM_REGION_VRAM) != size / PAGE)
			die("migration through system memory: not every page moved");
		keep(&through, j, now() - t);
		munmap(p, size);
	}
	report("migrate VRAM to peer VRAM 64M THP", "GB/s", &direct, &through,
	       "through system memory", (double)size / 1e9, 1, 1);
	vm_destroy_on(fd1, vm1);
	vm_destroy(vm0);
	close(fd1);
}

/* --- 9: CPU faults back from VRAM at scale --------------------------------- */

struct faulter {
	uint8_t *p;
	uint64_t size;
	pthread_barrier_t *start;
	int fresh;
};

/*
 * The CPU reads a byte of each page of a span in VRAM: each fault brings a
 * block back. Of a span never touched (@fresh), it writes one instead: each
 * fault allocates and clears a page, without the GPU.
 */
static void *cpu_fault_back(void *arg)
{
	struct faulter *f = arg;
	uint64_t off;

	if (f->start)
		pthread_barrier_wait(f->start);
	for (off = 0; off < f->size; off += PAGE)
		if (f->fresh)
			((volatile uint8_t *)f->p)[off] = 1;
		else
			sink += ((volatile uint8_t *)f->p)[off];
	return NULL;
}

#define FAULTERS 16

/*
 * @n threads of one process, or @n processes, fault @size bytes back from
 * VRAM at once, each its own slice; returns the time from the start of the
 * faults to the end of the last. The threads and processes are made before:
 * making them maps stacks, which waits for the faults under the mmap lock.
 * Nor do the processes' exits count, which tear down a VM and an mm each:
 * 16 of them against one for the same bytes. With @fresh, the slices are
 * memory never touched, and no GPU is involved (cpu_fault_back()).
 */
static double fault_back(uint64_t size, int n, int processes, int fresh)
{
	uint64_t slice = size / n;
	int ready[2], go[2], i;
	double t;

	if (!processes) {
		uint8_t *p = buffer(size, 0, !fresh);
		uint32_t vm = fresh ? 0 : vm_create(0);
		struct faulter f[FAULTERS];
		pthread_t th[FAULTERS];
		pthread_barrier_t start;

		if (!fresh)
			prefetch(vm, p, size, DRM_VSVM_REGION_VRAM);
		pthread_barrier_init(&start, NULL, n);
		for (i = 1; i < n; i++) {
			f[i] = (struct faulter){ p + i * slice, slice, &start, fresh };
			pthread_create(&th[i], NULL, cpu_fault_back, &f[i]);
		}
		f[0] = (struct faulter){ p, slice, NULL, fresh };
		pthread_barrier_wait(&start);
		t = now();
		cpu_fault_back(&f[0]);
		for (i = 1; i < n; i++)
			pthread_join(th[i], NULL);
		t = now() - t;
		pthread_barrier_destroy(&start);
		if (!fresh)
			vm_destroy(vm);
		munmap(p, size);
		return t;
	}
	if (pipe(ready) || pipe(go))
		die("pipe");
	for (i = 0; i < n; i++) {
		if (fork() == 0) {
			uint8_t *p = buffer(slice, 0, !fresh);
			struct faulter f = { p, slice, NULL, fresh };
			char c = 0;

			if (!fresh) {
				int fd = vsvm_open(0);

				if (fd < 0)
					_exit(1);
				prefetch_on(fd, vm_create_on(fd, 0), p, slice,
					    DRM_VSVM_REGION_VRAM);
			}
			if (write(ready[1], &c, 1) != 1 || read(go[0], &c, 1) != 1)
				_exit(1);
			cpu_fault_back(&f);
			/* The clock stops here, before the exit tears down the VM and the mm. */
			if (write(ready[1], &c, 1) != 1)
				_exit(1);
			_exit(0);
		}
	}
	for (i = 0; i < n; i++) {
		char c;

		if (read(ready[0], &c, 1) != 1)
			die("fault-back: a process did not start");
	}
	t = now();
	for (i = 0; i < n; i++)
		if (write(go[1], "g", 1) != 1)
			die("fault-back: go");
	for (i = 0; i < n; i++) {
		char c;

		if (read(ready[0], &c, 1) != 1)
			die("fault-back: a process did not finish");
	}
	t = now() - t;
	for (i = 0; i < n; i++) {
		int status;

		if (wait(&status) < 0 || !WIFEXITED(status) || WEXITSTATUS(status))
			die("fault-back: a process failed");
	}
	close(ready[0]);
	close(ready[1]);
	close(go[0]);
	close(go[1]);
	return t;
}

/*
 * Aggregate throughput of N threads (processes) faulting VRAM back at once
 * against one: the CPU fault path takes no lock of the layer or the driver,
 * so on the guest's two CPUs N >= 2 should approach twice one. What the
 * guest's own page faults gain the same way, without the GPU, is probed in
 * each run next to them: the `host:` figures of fresh memory.
 */
static void bench_fault_back(uint64_t size)
{
	static const int counts[] = { 2, 4, FAULTERS };
	struct samples one[2] = {}, many[2][3] = {}, hone = {}, htwo = {};
	struct samples fone[2] = {}, fmany[2] = {};
	char name[96];
	int j, c, proc;

	for (j = -1; j < runs; j++)
		for (proc = 0; proc < 2; proc++) {
			if (!proc)
				host_probe(&hone, &htwo, j);
			keep(&one[proc], j, fault_back(size, 1, proc, 0));
			for (c = 0; c < 3; c++)
				keep(&many[proc][c], j, fault_back(size, counts[c], proc, 0));
			keep(&fone[proc], j, fault_back(size, 1, proc, 1));
			keep(&fmany[proc], j, fault_back(size, FAULTERS, proc, 1));
		}
	for (proc = 0; proc < 2; proc++) {
		const char *what = proc ? "processes" : "threads";
		const char *peer = proc ? "one process" : "one thread";

		for (c = 0; c < 3; c++) {
			snprintf(name, sizeof(name), "CPU fault-back 64M, %d %s vs 1", counts[c],
				 what);
			report(name, "GB/s", &many[proc][c], &one[proc], peer,
			       (double)size / 1e9, 1, counts[c] == 4 ? 0 : 1.5);
		}
		snprintf(name, sizeof(name), "host: fresh 64M written, %d %s vs 1", FAULTERS,
			 what);
		report(name, "GB/s", &fmany[proc], &fone[proc], peer, (double)size / 1e9, 1, 0);
	}
	report_probe("fault-back", &hone, &htwo);
}

/* Whether figure @name is in the comma-separated list @only (all if empty). */
static int selected(const char *only, const char *name)
{
	size_t n = strlen(name);
	const char *p;

	if (!*only)
		return 1;
	for (p = only; (p = strstr(p, name)); p += n)
		if ((p == only || p[-1] == ',') && (p[n] == ',' || !p[n]))
			return 1;
	return 0;
}

int main(int argc, char **argv)
{
	static const uint64_t counts[] = { 1, 1024, 16384, 65536 };
	const char *only = argc > 1 ? argv[1] : "";

	if (argc > 2) {
		runs = atoi(argv[2]);
		if (runs < 1 || runs > MAX_SAMPLES) {
			printf("SVM-BENCH-ERROR runs: %s is not in 1..%d\n", argv[2], MAX_SAMPLES);
			return 1;
		}
	}

	setvbuf(stdout, NULL, _IOLBF, 0);
	calibrate();
	vsvm_fd = vsvm_open(0);
	if (vsvm_fd < 0)
		die("no vsvm device");
#define RUN(name, call) do { if (selected(only, name)) call; } while (0)
	RUN("fault-in", bench_fault_in(4 * MIB, 1));
	RUN("fault-in", bench_fault_in(64 * MIB, 1));
	RUN("fault-in", bench_fault_in(64 * MIB, 0));
	RUN("fault-in", bench_fault_in(256 * MIB, 1));
	RUN("write-fault", bench_write_fault(64 * MIB));
	RUN("migration", bench_migration(256 * MIB, 1));
	RUN("migration", bench_migration(256 * MIB, 0));
	RUN("unmap", bench_unmap(64 * MIB));
	RUN("invalidate", bench_invalidate_one(counts, 4));
	RUN("scaling", bench_scaling(32 * MIB));
	RUN("teardown", bench_teardown(256 * MIB));
	RUN("twin", bench_twin(64 * MIB, 1));
	RUN("twin", bench_twin(64 * MIB, 0));
	RUN("peer-migration", bench_peer_migration(64 * MIB));
	RUN("fault-back", bench_fault_back(64 * MIB));
	printf("SVM-BENCH-DONE %llu\n", (unsigned long long)sink & 1);
	return 0;
}
