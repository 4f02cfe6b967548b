// SPDX-License-Identifier: GPL-2.0
/*
 * vsvm unload: the process side of the unload suite (suites/80-unload.sh).
 * It puts a buffer in VRAM, then, by mode:
 *   hold-fd     keeps its file open, prints "ready" and waits for SIGUSR1;
 *   hold-pages  closes its file (its VM goes), prints "ready" and waits for
 *               SIGUSR1, its pages still in VRAM;
 *   async-job   queues a long job, closes its file and exits at once;
 *   smoke       a GPU write and read through a new VM.
 * After the signal it reads the buffer back with the CPU. Prints TAP lines
 * ("ok - ..." / "not ok - ..."); exit 0 when all passed.
 */
#include <errno.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <unistd.h>

#include <drm/drm.h>
#include <drm/vsvm_drm.h>

#include "vsvm-util.h"

#define SIZE (2UL << 20)

static int failed;

static void check(int cond, const char *what)
{
	printf("%s - %s\n", cond ? "ok" : "not ok", what);
	fflush(stdout);
	failed |= !cond;
}

/* A VM over the whole user address space of the process; 0 on failure. */
static __u32 vm_create(int fd)
{
	struct drm_vsvm_vm_create c = { .start = 4096, .size = (1ULL << 47) - 4096 };

	return ioctl(fd, DRM_IOCTL_VSVM_VM_CREATE, &c) ? 0 : c.vm_id;
}

static int exec(int fd, __u32 vm, struct drm_vsvm_op *ops, __u32 count, __u32 flags)
{
	struct drm_vsvm_exec e = {
		.ops = (uintptr_t)ops, .count = count, .vm_id = vm, .flags = flags,
	};

	if (ioctl(fd, DRM_IOCTL_VSVM_EXEC, &e))
		return -errno;
	return flags ? 0 : e.status;
}

/* Fills the buffer with the CPU and moves it to VRAM; the pages that moved. */
static __u64 to_vram(int fd, __u32 vm, unsigned char *buf)
{
	struct drm_vsvm_prefetch p = {
		.addr = (uintptr_t)buf, .size = SIZE, .vm_id = vm, .region = DRM_VSVM_REGION_VRAM,
	};

	for (size_t i = 0; i < SIZE; i++)
		buf[i] = (unsigned char)(i / 4096 + 1);
	return ioctl(fd, DRM_IOCTL_VSVM_PREFETCH, &p) ? 0 : p.pages_moved;
}

static size_t bad_bytes(const unsigned char *buf)
{
	size_t bad = 0;

	for (size_t i = 0; i < SIZE; i++)
		bad += buf[i] != (unsigned char)(i / 4096 + 1);
	return bad;
}

/* Prints "ready" and waits for SIGUSR1. */
static void ready_and_wait(void)
{
	sigset_t usr1, old;

	sigemptyset(&usr1);
	sigaddset(&usr1, SIGUSR1);
	sigprocmask(SIG_BLOCK, &usr1, &old);
	printf("ready\n");
	fflush(stdout);
	sigwaitinfo(&usr1, NULL);
}

static void smoke(int fd)
{
	unsigned char *buf = aligned_alloc(4096, SIZE);
	struct drm_vsvm_op ops[2] = {
		{ .kind = DRM_VSVM_OP_WRITE, .size = SIZE, .value = 3 },
		{ .kind = DRM_VSVM_OP_READ, .size = SIZE },
	};
	__u32 vm = vm_create(fd);

	ops[0].addr = (uintptr_t)buf;
	ops[1].addr = (uintptr_t)buf;
	check(buf && vm && exec(fd, vm, ops, 2, 0) == 0 && ops[1].result == 3 * SIZE,
	      "the GPU writes and reads a buffer through the reloaded driver");
}

int main(int argc, char **argv)
{
	const char *mode = argc > 1 ? argv[1] : "";
	unsigned char *buf;
	int fd = vsvm_open(0);
	__u32 vm;

	check(fd >= 0, "the vsvm render node opens");
	if (fd < 0)
		return 1;
	if (!strcmp(mode, "smoke")) {
		smoke(fd);
		close(fd);
		return failed;
	}
	buf = mmap(NULL, SIZE, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	vm = vm_create(fd);
	check(buf != MAP_FAILED && vm && to_vram(fd, vm, buf) == SIZE / 4096,
	      "the buffer moved to VRAM");
	if (!strcmp(mode, "async-job")) {
		static struct drm_vsvm_op ops[64];
		unsigned char *big = mmap(NULL, 64 * SIZE, PROT_READ | PROT_WRITE,
					  MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);

		for (int i = 0; i < 64; i++)
			ops[i] = (struct drm_vsvm_op){
				.kind = DRM_VSVM_OP_WRITE, .addr = (uintptr_t)big + i * SIZE,
				.size = SIZE, .value = i,
			};
		check(big != MAP_FAILED && exec(fd, vm, ops, 64, DRM_VSVM_EXEC_ASYNC) == 0,
		      "a long job is queued, and the process exits under it");
		close(fd);
		return failed;
	}
	if (!strcmp(mode, "hold-pages"))
		close(fd);
	ready_and_wait();
	check(bad_bytes(buf) == 0, "the CPU reads the buffer back intact");
	if (!strcmp(mode, "hold-fd")) {
		struct drm_vsvm_op op = {
			.kind = DRM_VSVM_OP_READ, .addr = (uintptr_t)buf, .size = SIZE,
		};

		check(exec(fd, vm, &op, 1, 0) == 0, "the GPU still works on the open file");
		close(fd);
	}
	return failed;
}
