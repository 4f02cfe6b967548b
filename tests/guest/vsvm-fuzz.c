// SPDX-License-Identifier: GPL-2.0
/*
 * vsvm fuzz: thousands of driver ioctls with random numbers, sizes,
 * directions and argument bytes, some of them shaped to get past the first
 * checks (known VM ids, op arrays whose addresses point into a scratch
 * mapping). Seeded and reproducible. Afterwards the device must still work.
 * Prints TAP lines ("ok - ..." / "not ok - ..."); exit 0 when all passed.
 */
#include <errno.h>
#include <fcntl.h>
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

#define CALLS 20000
#define SCRATCH (1UL << 20)
#define PAGE 4096UL

static uint64_t state = 0x9e3779b97f4a7c15ULL;

static uint64_t rnd(void)
{
	/* xorshift64*: fixed seed, same sequence every run. */
	state ^= state >> 12;
	state ^= state << 25;
	state ^= state >> 27;
	return state * 0x2545f4914f6cdd1dULL;
}

static int open_vsvm(void)
{
	return vsvm_open(0);
}

/* A plausible address: in the scratch mapping, or anything. */
static uint64_t addr(uint8_t *scratch)
{
	switch (rnd() % 4) {
	case 0:
	case 1:
		return (uintptr_t)scratch + rnd() % SCRATCH;
	case 2:
		return rnd() & ((1ULL << 47) - 1);
	default:
		return rnd();
	}
}

int main(void)
{
	static const unsigned int dirs[] = {
		_IOC_NONE, _IOC_READ, _IOC_WRITE, _IOC_READ | _IOC_WRITE
	};
	struct drm_vsvm_op ops[8];
	uint64_t arg[32], errors[140] = { 0 }, ok = 0;
	uint8_t *scratch;
	int fd, failed = 0;
	long i;

	setvbuf(stdout, NULL, _IOLBF, 0);
	fd = open_vsvm();
	printf("%s - the vsvm render node opens\n", fd >= 0 ? "ok" : "not ok");
	if (fd < 0)
		return 1;
	scratch = mmap(NULL, SCRATCH, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);

	for (i = 0; i < CALLS; i++) {
		unsigned int nr = rnd() % 8, size = rnd() % (sizeof(arg) + 1), k;
		unsigned int dir = dirs[rnd() % 4];

		for (k = 0; k < 32; k++)
			arg[k] = rnd();
		/*
		 * Often, the struct the driver expects, with small VM ids and
		 * mostly-zero fields, so that the checks further in run too.
		 */
		if (rnd() % 2) {
			dir = _IOC_READ | _IOC_WRITE;
			switch (nr) {
			case DRM_VSVM_VM_CREATE:
				size = sizeof(struct drm_vsvm_vm_create);
				break;
			case DRM_VSVM_VM_DESTROY:
				size = sizeof(struct drm_vsvm_vm_destroy);
				break;
			case DRM_VSVM_EXEC:
				size = sizeof(struct drm_vsvm_exec);
				break;
			case DRM_VSVM_STATS:
				size = sizeof(struct drm_vsvm_stats);
				break;
			case DRM_VSVM_PREFETCH:
				size = sizeof(struct drm_vsvm_prefetch);
				break;
			}
			for (k = 0; k < 32; k++)
				if (rnd() % 4)
					arg[k] = 0;
			if (nr == DRM_VSVM_EXEC) {
				struct drm_vsvm_exec *e = (void *)arg;

				for (k = 0; k < 8; k++) {
					memset(&ops[k], 0, sizeof(ops[k]));
					ops[k].kind = rnd() % 6;
					ops[k].addr = addr(scratch);
					ops[k].size = rnd() % 3 ? rnd() % 8192 : rnd();
					ops[k].value = rnd();
					ops[k].src =
						ops[k].kind == DRM_VSVM_OP_COPY ? addr(scratch) : 0;
				}
				e->ops = rnd() % 8 ? (uintptr_t)ops : rnd();
				e->count = rnd() % 10;
				e->vm_id = rnd() % 4;
			} else if (nr == DRM_VSVM_VM_CREATE && rnd() % 2) {
				struct drm_vsvm_vm_create *c = (void *)arg;

				c->start = rnd() % 2 ? PAGE : addr(scratch);
				c->size = rnd() % 2 ? (1ULL << 46) : rnd();
			} else if (nr == DRM_VSVM_PREFETCH) {
				struct drm_vsvm_prefetch *p = (void *)arg;

				p->addr = addr(scratch) & ~(PAGE - 1);
				p->size = (rnd() % 64) * PAGE;
				p->vm_id = rnd() % 4;
				p->region = rnd() % 3;
			} else {
				arg[0] &= 3;
			}
		}
		if (ioctl(fd, _IOC(dir, DRM_IOCTL_BASE, DRM_COMMAND_BASE + nr, size), arg) == 0)
			ok++;
		else
			errors[errno < 140 ? errno : 0]++;
	}
	/* One line, printed in parts that fit a line here. */
	printf("vsvm-fuzz: %d calls: %llu succeeded, EINVAL %llu, ENOENT %llu, EFAULT %llu, ",
	       CALLS, (unsigned long long)ok, (unsigned long long)errors[EINVAL],
	       (unsigned long long)errors[ENOENT], (unsigned long long)errors[EFAULT]);
	printf("E2BIG %llu, ENOSPC %llu, ENOTTY %llu, other %llu\n",
	       (unsigned long long)errors[E2BIG], (unsigned long long)errors[ENOSPC],
	       (unsigned long long)errors[ENOTTY],
	       (unsigned long long)(CALLS - ok - errors[EINVAL] - errors[ENOENT] - errors[EFAULT] -
				    errors[E2BIG] - errors[ENOSPC] - errors[ENOTTY]));
	printf("%s - every call returned\n", "ok");

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
