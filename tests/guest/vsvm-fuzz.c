// SPDX-License-Identifier: GPL-2.0
/*
 * vsvm fuzz: driver ioctls with random numbers, sizes, directions and
 * argument bytes, many of them shaped to get past the first checks (small VM
 * and job ids, op arrays and page table buffers pointing into a scratch
 * mapping), from several processes with two threads each on one file, while
 * the races the uapi must survive happen: a fork with jobs in flight whose
 * child uses the inherited file, a close while the other thread submits, a
 * VM destroyed while the other thread runs jobs on it. Seeded (--seed N) and
 * reproducible in what each thread asks, if not in how the threads
 * interleave. Afterwards the device must still work.
 * Prints TAP lines ("ok - ..." / "not ok - ..."); exit 0 when all passed.
 */
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdbool.h>
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

#define PROCESSES 3
#define THREADS 2
#define CALLS 4000 /* per thread */
#define SCRATCH (1UL << 20)
#define PAGE 4096UL
#define TOP (1ULL << 47)

static uint64_t seed = 1;

/* What one thread asks: its own random sequence, its counts. */
struct fuzzer {
	uint64_t state;
	int fd;
	int id;
	uint32_t vms[2];
	struct fuzzer *other;
	uint8_t *scratch;
	uint64_t ok, errors[140];
};

static uint64_t rnd(struct fuzzer *f)
{
	/* xorshift64*: the same sequence for the same seed and thread. */
	f->state ^= f->state >> 12;
	f->state ^= f->state << 25;
	f->state ^= f->state >> 27;
	return f->state * 0x2545f4914f6cdd1dULL;
}

static int open_vsvm(void)
{
	return vsvm_open(0);
}

/* A plausible address: in the scratch mapping, or anything. */
static uint64_t addr(struct fuzzer *f)
{
	switch (rnd(f) % 4) {
	case 0:
	case 1:
		return (uintptr_t)f->scratch + rnd(f) % SCRATCH;
	case 2:
		return rnd(f) & ((1ULL << 47) - 1);
	default:
		return rnd(f);
	}
}

/* A VM id: mostly one of the VMs made at the start, else a small made-up one. */
static uint32_t vm_id(struct fuzzer *f)
{
	return rnd(f) % 4 ? f->vms[rnd(f) % 2] : rnd(f) % 4;
}

/* Shapes @arg as the struct of ioctl @nr, with small ids and mostly-zero fields. */
static unsigned int shape(struct fuzzer *f, unsigned int nr, uint64_t *arg,
			  struct drm_vsvm_op *ops, struct drm_vsvm_pte *ptes)
{
	static const unsigned int sizes[] = {
		[DRM_VSVM_VM_CREATE] = sizeof(struct drm_vsvm_vm_create),
		[DRM_VSVM_VM_DESTROY] = sizeof(struct drm_vsvm_vm_destroy),
		[DRM_VSVM_EXEC] = sizeof(struct drm_vsvm_exec),
		[DRM_VSVM_STATS] = sizeof(struct drm_vsvm_stats),
		[DRM_VSVM_PREFETCH] = sizeof(struct drm_vsvm_prefetch),
		[DRM_VSVM_MADVISE] = sizeof(struct drm_vsvm_madvise),
		[DRM_VSVM_SNAPSHOT] = sizeof(struct drm_vsvm_snapshot),
		[DRM_VSVM_WAIT] = sizeof(struct drm_vsvm_wait),
	};
	unsigned int k;

	for (k = 0; k < 32; k++)
		if (rnd(f) % 4)
			arg[k] = 0;
	switch (nr) {
	case DRM_VSVM_EXEC: {
		struct drm_vsvm_exec *e = (void *)arg;

		for (k = 0; k < 8; k++) {
			memset(&ops[k], 0, sizeof(ops[k]));
			ops[k].kind = rnd(f) % 6;
			ops[k].addr = addr(f);
			ops[k].size = rnd(f) % 3 ? rnd(f) % 8192 : rnd(f);
			ops[k].value = rnd(f);
			ops[k].src = ops[k].kind == DRM_VSVM_OP_COPY ? addr(f) : 0;
		}
		e->ops = rnd(f) % 8 ? (uintptr_t)ops : rnd(f);
		e->count = rnd(f) % 10;
		e->vm_id = vm_id(f);
		e->flags = rnd(f) % 2 ? DRM_VSVM_EXEC_ASYNC : 0;
		break;
	}
	case DRM_VSVM_VM_CREATE: {
		struct drm_vsvm_vm_create *c = (void *)arg;

		c->start = rnd(f) % 4 ? PAGE : addr(f);
		c->size = rnd(f) % 4 ? (1ULL << 46) : rnd(f);
		break;
	}
	case DRM_VSVM_PREFETCH: {
		struct drm_vsvm_prefetch *p = (void *)arg;

		p->addr = addr(f) & ~(PAGE - 1);
		p->size = (rnd(f) % 64) * PAGE;
		p->vm_id = vm_id(f);
		p->region = rnd(f) % 3;
		break;
	}
	case DRM_VSVM_MADVISE: {
		struct drm_vsvm_madvise *m = (void *)arg;

		m->addr = addr(f) & ~(PAGE - 1);
		m->size = (rnd(f) % 64) * PAGE;
		m->vm_id = vm_id(f);
		m->preferred = rnd(f) % 3;
		m->atomic = rnd(f) % 3;
		break;
	}
	case DRM_VSVM_SNAPSHOT: {
		struct drm_vsvm_snapshot *sn = (void *)arg;

		sn->addr = addr(f) & ~(PAGE - 1);
		sn->pages = rnd(f) % 40;
		sn->ptes = rnd(f) % 8 ? (uintptr_t)ptes : rnd(f);
		sn->vm_id = vm_id(f);
		break;
	}
	case DRM_VSVM_WAIT: {
		struct drm_vsvm_wait *w = (void *)arg;

		w->job_id = rnd(f) % 8;
		w->timeout_ns = rnd(f) % 2 ? 0 : 1000000;
		w->vm_id = vm_id(f);
		break;
	}
	default:
		/* VM_DESTROY and STATS: the id comes first. */
		arg[0] = vm_id(f);
		break;
	}
	return sizes[nr];
}

/* One random ioctl on @f's file. */
static void fuzz_one(struct fuzzer *f)
{
	static const unsigned int dirs[] = {
		_IOC_NONE, _IOC_READ, _IOC_WRITE, _IOC_READ | _IOC_WRITE
	};
	struct drm_vsvm_op ops[8];
	struct drm_vsvm_pte ptes[40];
	uint64_t arg[32];
	unsigned int nr = rnd(f) % 9, size = rnd(f) % (sizeof(arg) + 1), k;
	unsigned int dir = dirs[rnd(f) % 4];
	bool shaped;

	for (k = 0; k < 32; k++)
		arg[k] = rnd(f);
	shaped = nr < 8 && rnd(f) % 4;
	if (shaped) {
		dir = _IOC_READ | _IOC_WRITE;
		size = shape(f, nr, arg, ops, ptes);
	}
	if (ioctl(f->fd, _IOC(dir, DRM_IOCTL_BASE, DRM_COMMAND_BASE + nr, size), arg)) {
		f->errors[errno < 140 ? errno : 0]++;
		return;
	}
	f->ok++;
	/* Shaped calls destroy VMs: the new ones take their place. */
	if (shaped && nr == DRM_VSVM_VM_CREATE) {
		struct drm_vsvm_vm_create c;

		memcpy(&c, arg, sizeof(c));
		f->vms[rnd(f) % 2] = c.vm_id;
	}
}

/*
 * A fuzzing thread. Thread 0 of each process also makes the races happen,
 * each once, at a third of its calls: a fork whose child fuzzes the inherited
 * file (refused on the parent's VMs) while jobs run, VM_DESTROY of the ids the
 * other thread runs jobs on, and at the end a close of the file the other
 * thread may still be submitting on.
 */
static void *fuzz_thread(void *arg)
{
	struct fuzzer *f = arg;
	long i;

	for (i = 0; i < CALLS; i++) {
		fuzz_one(f);
		if (f->id % THREADS || i != CALLS / 3)
			continue;
		if (fork() == 0) {
			/* The parent's VMs are not ours: each use is EACCES. */
			f->state ^= 0x5bd1e995;
			memset(f->errors, 0, sizeof(f->errors));
			for (i = 0; i < CALLS / 4; i++)
				fuzz_one(f);
			printf("vsvm-fuzz: a child of process %d: %ld calls, EACCES %llu\n",
			       f->id / THREADS, i, (unsigned long long)f->errors[EACCES]);
			_exit(0);
		}
		/* The VMs the other thread runs jobs on go. */
		for (int v = 0; v < 2; v++)
			ioctl(f->fd, DRM_IOCTL_VSVM_VM_DESTROY, &(struct drm_vsvm_vm_destroy){
				.vm_id = f->other->vms[v] });
	}
	if (f->id % THREADS == 0) {
		close(f->fd);
		while (wait(NULL) > 0)
			;
	}
	return NULL;
}

/* A process: THREADS threads on one file; returns 0, or 1 if a thread failed. */
static int fuzz_process(int p)
{
	struct fuzzer f[THREADS] = {};
	pthread_t t[THREADS];
	uint8_t *scratch;
	int fd, k;

	fd = open_vsvm();
	scratch = mmap(NULL, SCRATCH, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (fd < 0 || scratch == MAP_FAILED)
		return 1;
	for (k = 0; k < THREADS; k++) {
		f[k] = (struct fuzzer){ .fd = fd, .id = p * THREADS + k, .scratch = scratch,
					.other = &f[(k + 1) % THREADS] };
		f[k].state = seed * 0x9e3779b97f4a7c15ULL ^ (uint64_t)(f[k].id + 1) << 32;
		for (int v = 0; v < 2; v++) {
			struct drm_vsvm_vm_create c = { .start = PAGE, .size = TOP - PAGE };

			ioctl(fd, DRM_IOCTL_VSVM_VM_CREATE, &c);
			f[k].vms[v] = c.vm_id;
		}
	}
	for (k = 0; k < THREADS; k++) {
		if (pthread_create(&t[k], NULL, fuzz_thread, &f[k]))
			return 1;
	}
	for (k = 0; k < THREADS; k++)
		pthread_join(t[k], NULL);
	for (k = 1; k < THREADS; k++) {
		f[0].ok += f[k].ok;
		for (int e = 0; e < 140; e++)
			f[0].errors[e] += f[k].errors[e];
	}
	/* One line, printed in parts that fit a line here. */
	printf("vsvm-fuzz: process %d: %d calls: %llu succeeded, EINVAL %llu, ENOENT %llu, ",
	       p, THREADS * CALLS, (unsigned long long)f[0].ok,
	       (unsigned long long)f[0].errors[EINVAL], (unsigned long long)f[0].errors[ENOENT]);
	printf("EFAULT %llu, EACCES %llu, EBADF %llu, ENOTTY %llu\n",
	       (unsigned long long)f[0].errors[EFAULT], (unsigned long long)f[0].errors[EACCES],
	       (unsigned long long)f[0].errors[EBADF], (unsigned long long)f[0].errors[ENOTTY]);
	return 0;
}

int main(int argc, char **argv)
{
	uint8_t *scratch;
	int fd, failed = 0, p, status, crashed = 0;

	if (argc == 3 && !strcmp(argv[1], "--seed"))
		seed = strtoull(argv[2], NULL, 0);
	setvbuf(stdout, NULL, _IOLBF, 0);
	printf("vsvm-fuzz: seed %llu (replay: vsvm-fuzz --seed %llu)\n",
	       (unsigned long long)seed, (unsigned long long)seed);
	fd = open_vsvm();
	printf("%s - the vsvm render node opens\n", fd >= 0 ? "ok" : "not ok");
	if (fd < 0)
		return 1;
	scratch = mmap(NULL, SCRATCH, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	for (p = 0; p < PROCESSES; p++)
		if (fork() == 0)
			_exit(fuzz_process(p));
	while (wait(&status) > 0)
		crashed |= !WIFEXITED(status) || WEXITSTATUS(status);
	printf("%s - every call of every process and thread returned\n",
	       crashed ? "not ok" : "ok");
	failed |= crashed;

	/* The device still works: a new VM, a GPU write, a CPU check. */
	{
		struct drm_vsvm_vm_create c = { .start = PAGE, .size = (1ULL << 47) - PAGE };
		struct drm_vsvm_op op = { .kind = DRM_VSVM_OP_WRITE, .size = PAGE, .value = 0x3c };
		struct drm_vsvm_exec e = { .ops = (uintptr_t)&op, .count = 1 };
		int good;

		close(fd);
		fd = open_vsvm();
		good = fd >= 0 && !ioctl(fd, DRM_IOCTL_VSVM_VM_CREATE, &c);
		e.vm_id = c.vm_id;
		op.addr = (uintptr_t)scratch;
		good = good && !ioctl(fd, DRM_IOCTL_VSVM_EXEC, &e) && e.status == 0 &&
		       scratch[0] == 0x3c && scratch[PAGE - 1] == 0x3c;
		printf("%s - the device still works after the fuzzing\n", good ? "ok" : "not ok");
		failed |= !good;
	}
	return failed;
}
