// SPDX-License-Identifier: MIT
/**
 * SECTION:vsvm_ioctl
 * @short_description: vsvm ioctl wrappers and helpers
 * @title: vsvm ioctl
 * @include: vsvm/vsvm_ioctl.h
 *
 * Wrappers of the vsvm ioctls in the style of lib/xe/xe_ioctl: the __ variants
 * return the error, the others assert success.
 */
#include <fcntl.h>
#include <limits.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>

#include "igt.h"
#include "vsvm_ioctl.h"

/* The name of the faux device of the render node @fd, vsvm<n>, into @name. */
static const char *device_name(int fd, char *name, size_t size)
{
	char link[PATH_MAX];
	struct stat st;
	ssize_t len;

	igt_assert_eq(fstat(fd, &st), 0);
	snprintf(link, sizeof(link), "/sys/dev/char/%u:%u/device", major(st.st_rdev),
		 minor(st.st_rdev));
	len = readlink(link, name, size - 1);
	igt_assert(len > 0);
	name[len] = 0;
	return strrchr(name, '/') ? strrchr(name, '/') + 1 : name;
}

/**
 * vsvm_device_index:
 * @fd: a vsvm device
 *
 * The index n of the device of @fd (its faux device is vsvm<n>), by which a VM
 * spanning several devices names it.
 *
 * Returns: the index.
 */
uint32_t vsvm_device_index(int fd)
{
	char buf[256];
	const char *name = device_name(fd, buf, sizeof(buf));
	char *end;
	unsigned long n;

	igt_assert(!strncmp(name, "vsvm", 4));
	n = strtoul(name + 4, &end, 10);
	igt_assert(end > name + 4 && !*end && n < 32);
	return n;
}

/**
 * __vsvm_vm_create_devices:
 * @fd: a vsvm device
 * @start: first address of the mirrored span
 * @size: size of the span
 * @flags: DRM_VSVM_VM_* flags
 * @devices: the other devices of the VM, bit n for device n; 0 for none
 * @vm: out: the new VM
 *
 * Creates a VM mirroring a span of the calling process on the device of @fd
 * and on @devices.
 *
 * Returns: 0 or -errno.
 */
int __vsvm_vm_create_devices(int fd, uint64_t start, uint64_t size, uint32_t flags,
			     uint32_t devices, uint32_t *vm)
{
	struct drm_vsvm_vm_create create = {
		.start = start, .size = size, .flags = flags, .devices = devices,
	};

	if (igt_ioctl(fd, DRM_IOCTL_VSVM_VM_CREATE, &create))
		return -errno;
	*vm = create.vm_id;
	return 0;
}

/**
 * __vsvm_vm_create:
 * @fd: a vsvm device
 * @start: first address of the mirrored span
 * @size: size of the span
 * @flags: DRM_VSVM_VM_* flags
 * @vm: out: the new VM
 *
 * Creates a VM mirroring a span of the calling process on the device of @fd.
 *
 * Returns: 0 or -errno.
 */
int __vsvm_vm_create(int fd, uint64_t start, uint64_t size, uint32_t flags, uint32_t *vm)
{
	return __vsvm_vm_create_devices(fd, start, size, flags, 0, vm);
}

/**
 * vsvm_vm_create_devices:
 * @fd: a vsvm device
 * @devices: the other devices of the VM, bit n for device n
 *
 * Creates a VM mirroring the whole user address space but the zero page on the
 * device of @fd and on @devices, asserting success.
 *
 * Returns: the VM id.
 */
uint32_t vsvm_vm_create_devices(int fd, uint32_t devices)
{
	uint32_t vm = 0;

	igt_assert_eq(__vsvm_vm_create_devices(fd, VSVM_PAGE, (1ULL << 47) - VSVM_PAGE, 0,
					       devices, &vm), 0);
	igt_assert(vm);
	return vm;
}

/**
 * vsvm_vm_create:
 * @fd: a vsvm device
 *
 * Creates a VM mirroring the whole user address space but the zero page, asserting success.
 *
 * Returns: the VM id.
 */
uint32_t vsvm_vm_create(int fd)
{
	return vsvm_vm_create_devices(fd, 0);
}

/**
 * vsvm_vm_destroy:
 * @fd: a vsvm device
 * @vm: the VM
 *
 * Destroys a VM, asserting success.
 */
void vsvm_vm_destroy(int fd, uint32_t vm)
{
	struct drm_vsvm_vm_destroy destroy = { .vm_id = vm };

	do_ioctl(fd, DRM_IOCTL_VSVM_VM_DESTROY, &destroy);
}

/**
 * __vsvm_exec_device:
 * @fd: a vsvm device
 * @vm: the VM
 * @device: the device of the VM to run on, or VSVM_FILE_DEVICE for that of @fd
 * @ops: the operations, results filled in
 * @count: how many
 *
 * Runs a job to its end on a device of the VM.
 *
 * Returns: the job's status, or -errno if it did not run.
 */
int __vsvm_exec_device(int fd, uint32_t vm, uint32_t device, struct drm_vsvm_op *ops,
		       uint32_t count)
{
	struct drm_vsvm_exec exec = { .ops = (uintptr_t)ops, .count = count, .vm_id = vm };

	if (device != VSVM_FILE_DEVICE) {
		exec.flags = DRM_VSVM_EXEC_DEVICE;
		exec.device = device;
	}
	if (igt_ioctl(fd, DRM_IOCTL_VSVM_EXEC, &exec))
		return -errno;
	return exec.status;
}

/**
 * __vsvm_exec:
 * @fd: a vsvm device
 * @vm: the VM
 * @ops: the operations, results filled in
 * @count: how many
 *
 * Runs a job to its end on the device of @fd.
 *
 * Returns: the job's status, or -errno if it did not run.
 */
int __vsvm_exec(int fd, uint32_t vm, struct drm_vsvm_op *ops, uint32_t count)
{
	return __vsvm_exec_device(fd, vm, VSVM_FILE_DEVICE, ops, count);
}

/**
 * vsvm_exec:
 * @fd: a vsvm device
 * @vm: the VM
 * @ops: the operations, results filled in
 * @count: how many
 *
 * Runs a job to its end, asserting that it ran and succeeded.
 */
void vsvm_exec(int fd, uint32_t vm, struct drm_vsvm_op *ops, uint32_t count)
{
	igt_assert_eq(__vsvm_exec(fd, vm, ops, count), 0);
}

/**
 * vsvm_exec_async:
 * @fd: a vsvm device
 * @vm: the VM
 * @ops: the operations, results filled in by the wait
 * @count: how many
 *
 * Starts a job, asserting success.
 *
 * Returns: the job id, for __vsvm_wait().
 */
uint64_t vsvm_exec_async(int fd, uint32_t vm, struct drm_vsvm_op *ops, uint32_t count)
{
	struct drm_vsvm_exec exec = {
		.ops = (uintptr_t)ops, .count = count, .vm_id = vm, .flags = DRM_VSVM_EXEC_ASYNC,
	};

	do_ioctl(fd, DRM_IOCTL_VSVM_EXEC, &exec);
	igt_assert(exec.job_id);
	return exec.job_id;
}

/**
 * __vsvm_wait:
 * @fd: a vsvm device
 * @vm: the VM of the job
 * @job: the job
 * @timeout_ns: how long to wait; negative: until it ends
 * @ops_done: out, or NULL: how many operations ran
 *
 * Waits for an asynchronous job and reaps it.
 *
 * Returns: its status, or -errno.
 */
int __vsvm_wait(int fd, uint32_t vm, uint64_t job, int64_t timeout_ns, uint32_t *ops_done)
{
	struct drm_vsvm_wait wait = { .job_id = job, .timeout_ns = timeout_ns, .vm_id = vm };

	if (igt_ioctl(fd, DRM_IOCTL_VSVM_WAIT, &wait))
		return -errno;
	if (ops_done)
		*ops_done = wait.ops_done;
	return wait.status;
}

static int one_op(int fd, uint32_t vm, struct drm_vsvm_op op, uint64_t *result)
{
	int ret = __vsvm_exec(fd, vm, &op, 1);

	if (!ret && result)
		*result = op.result;
	return ret;
}

/**
 * __vsvm_write:
 * @fd: a vsvm device
 * @vm: the VM
 * @addr: the span
 * @size: its size
 * @byte: the value
 *
 * Has the GPU fill a span with a byte.
 *
 * Returns: the job's status, or -errno.
 */
int __vsvm_write(int fd, uint32_t vm, void *addr, uint64_t size, uint8_t byte)
{
	return one_op(fd, vm, (struct drm_vsvm_op){ .kind = DRM_VSVM_OP_WRITE,
		      .addr = (uintptr_t)addr, .size = size, .value = byte }, NULL);
}

/**
 * vsvm_write:
 * @fd: a vsvm device
 * @vm: the VM
 * @addr: the span
 * @size: its size
 * @byte: the value
 *
 * As __vsvm_write(), asserting success.
 */
void vsvm_write(int fd, uint32_t vm, void *addr, uint64_t size, uint8_t byte)
{
	igt_assert_eq(__vsvm_write(fd, vm, addr, size, byte), 0);
}

/**
 * __vsvm_read:
 * @fd: a vsvm device
 * @vm: the VM
 * @addr: the span
 * @size: its size
 * @sum: out: the sum of its bytes
 *
 * Has the GPU read a span.
 *
 * Returns: the job's status, or -errno.
 */
int __vsvm_read(int fd, uint32_t vm, const void *addr, uint64_t size, uint64_t *sum)
{
	return one_op(fd, vm, (struct drm_vsvm_op){ .kind = DRM_VSVM_OP_READ,
		      .addr = (uintptr_t)addr, .size = size }, sum);
}

/**
 * vsvm_read:
 * @fd: a vsvm device
 * @vm: the VM
 * @addr: the span
 * @size: its size
 *
 * As __vsvm_read(), asserting success.
 *
 * Returns: the GPU's sum of the bytes of the span.
 */
uint64_t vsvm_read(int fd, uint32_t vm, const void *addr, uint64_t size)
{
	uint64_t sum = 0;

	igt_assert_eq(__vsvm_read(fd, vm, addr, size, &sum), 0);
	return sum;
}

/**
 * __vsvm_atomic_add:
 * @fd: a vsvm device
 * @vm: the VM
 * @addr: an 8-byte aligned counter
 * @value: the addend
 * @old: out, or NULL: the value before
 *
 * A GPU atomic add.
 *
 * Returns: the job's status, or -errno.
 */
int __vsvm_atomic_add(int fd, uint32_t vm, uint64_t *addr, uint64_t value, uint64_t *old)
{
	return one_op(fd, vm, (struct drm_vsvm_op){ .kind = DRM_VSVM_OP_ATOMIC_ADD,
		      .addr = (uintptr_t)addr, .size = 8, .value = value }, old);
}

/**
 * __vsvm_copy:
 * @fd: a vsvm device
 * @vm: the VM
 * @dst: the destination
 * @src: the source
 * @size: the bytes to copy
 *
 * A GPU copy between two spans.
 *
 * Returns: the job's status, or -errno.
 */
int __vsvm_copy(int fd, uint32_t vm, void *dst, const void *src, uint64_t size)
{
	return one_op(fd, vm, (struct drm_vsvm_op){ .kind = DRM_VSVM_OP_COPY,
		      .addr = (uintptr_t)dst, .size = size, .src = (uintptr_t)src }, NULL);
}

/**
 * __vsvm_prefetch_device:
 * @fd: a vsvm device
 * @vm: the VM
 * @device: the device of the VM whose VRAM is meant, or VSVM_FILE_DEVICE
 * @addr: the span
 * @size: its size
 * @region: DRM_VSVM_REGION_VRAM or DRM_VSVM_REGION_SYSTEM
 * @pages_moved: out, or NULL: how many pages moved
 *
 * Migrates a span to a memory region: the VRAM of a device of the VM, or
 * system memory.
 *
 * Returns: 0 or -errno.
 */
int __vsvm_prefetch_device(int fd, uint32_t vm, uint32_t device, void *addr, uint64_t size,
			   uint32_t region, uint64_t *pages_moved)
{
	struct drm_vsvm_prefetch pf = {
		.addr = (uintptr_t)addr, .size = size, .vm_id = vm, .region = region,
	};

	if (device != VSVM_FILE_DEVICE) {
		pf.flags = DRM_VSVM_PREFETCH_DEVICE;
		pf.device = device;
	}
	if (igt_ioctl(fd, DRM_IOCTL_VSVM_PREFETCH, &pf))
		return -errno;
	if (pages_moved)
		*pages_moved = pf.pages_moved;
	return 0;
}

/**
 * __vsvm_prefetch:
 * @fd: a vsvm device
 * @vm: the VM
 * @addr: the span
 * @size: its size
 * @region: DRM_VSVM_REGION_VRAM or DRM_VSVM_REGION_SYSTEM
 * @pages_moved: out, or NULL: how many pages moved
 *
 * Migrates a span to a memory region, the VRAM of the device of @fd or system
 * memory.
 *
 * Returns: 0 or -errno.
 */
int __vsvm_prefetch(int fd, uint32_t vm, void *addr, uint64_t size, uint32_t region,
		    uint64_t *pages_moved)
{
	return __vsvm_prefetch_device(fd, vm, VSVM_FILE_DEVICE, addr, size, region, pages_moved);
}

/**
 * vsvm_prefetch:
 * @fd: a vsvm device
 * @vm: the VM
 * @addr: the span
 * @size: its size
 * @region: DRM_VSVM_REGION_VRAM or DRM_VSVM_REGION_SYSTEM
 *
 * As __vsvm_prefetch(), asserting success.
 *
 * Returns: how many pages moved.
 */
uint64_t vsvm_prefetch(int fd, uint32_t vm, void *addr, uint64_t size, uint32_t region)
{
	uint64_t moved = 0;

	igt_assert_eq(__vsvm_prefetch(fd, vm, addr, size, region, &moved), 0);
	return moved;
}

/**
 * vsvm_madvise:
 * @fd: a vsvm device
 * @vm: the VM
 * @addr: the span
 * @size: its size
 * @preferred: where GPU faults put the pages
 * @atomic: an &enum drm_vsvm_atomic
 *
 * Sets the memory attributes of a span, asserting success.
 */
void vsvm_madvise(int fd, uint32_t vm, void *addr, uint64_t size, uint32_t preferred,
		  uint32_t atomic)
{
	struct drm_vsvm_madvise adv = {
		.addr = (uintptr_t)addr, .size = size, .vm_id = vm,
		.preferred = preferred, .atomic = atomic,
	};

	do_ioctl(fd, DRM_IOCTL_VSVM_MADVISE, &adv);
}

/**
 * vsvm_snapshot_device:
 * @fd: a vsvm device
 * @vm: the VM
 * @device: the device of the VM whose page table to read, or VSVM_FILE_DEVICE
 * @addr: the first page
 * @pages: how many
 * @ptes: out: @pages entries
 *
 * Reads the page table of a device of the VM over a span, asserting success.
 */
void vsvm_snapshot_device(int fd, uint32_t vm, uint32_t device, const void *addr,
			  uint64_t pages, struct drm_vsvm_pte *ptes)
{
	struct drm_vsvm_snapshot snap = {
		.addr = (uintptr_t)addr, .pages = pages, .ptes = (uintptr_t)ptes, .vm_id = vm,
	};

	if (device != VSVM_FILE_DEVICE) {
		snap.flags = DRM_VSVM_SNAPSHOT_DEVICE;
		snap.device = device;
	}
	do_ioctl(fd, DRM_IOCTL_VSVM_SNAPSHOT, &snap);
}

/**
 * vsvm_snapshot:
 * @fd: a vsvm device
 * @vm: the VM
 * @addr: the first page
 * @pages: how many
 * @ptes: out: @pages entries
 *
 * Reads the page table of the device of @fd over a span, asserting success.
 */
void vsvm_snapshot(int fd, uint32_t vm, const void *addr, uint64_t pages,
		   struct drm_vsvm_pte *ptes)
{
	vsvm_snapshot_device(fd, vm, VSVM_FILE_DEVICE, addr, pages, ptes);
}

/**
 * vsvm_pte_flags_device:
 * @fd: a vsvm device
 * @vm: the VM
 * @device: the device of the VM, or VSVM_FILE_DEVICE
 * @addr: an address
 *
 * Reads the entry of the page at @addr in the page table of a device of the VM.
 *
 * Returns: its DRM_VSVM_PTE_* flags.
 */
uint32_t vsvm_pte_flags_device(int fd, uint32_t vm, uint32_t device, const void *addr)
{
	struct drm_vsvm_pte pte;

	vsvm_snapshot_device(fd, vm, device, (const void *)((uintptr_t)addr & ~(VSVM_PAGE - 1)),
			     1, &pte);
	return pte.flags;
}

/**
 * vsvm_pte_flags:
 * @fd: a vsvm device
 * @vm: the VM
 * @addr: an address
 *
 * Reads the entry of the page at @addr in the page table of the device of @fd.
 *
 * Returns: its DRM_VSVM_PTE_* flags.
 */
uint32_t vsvm_pte_flags(int fd, uint32_t vm, const void *addr)
{
	return vsvm_pte_flags_device(fd, vm, VSVM_FILE_DEVICE, addr);
}

/**
 * vsvm_stats:
 * @fd: a vsvm device
 * @vm: the VM
 * @stats: out: the counters
 *
 * Reads the counters of a VM and its device, asserting success.
 */
void vsvm_stats(int fd, uint32_t vm, struct drm_vsvm_stats *stats)
{
	*stats = (struct drm_vsvm_stats){ .vm_id = vm };
	do_ioctl(fd, DRM_IOCTL_VSVM_STATS, stats);
}

/* Writes @value to file @name of directory @dfd, asserting success. */
static void knob(int dfd, const char *name, const char *value)
{
	int fd = openat(dfd, name, O_WRONLY);

	igt_assert_f(fd >= 0, "%s: %s\n", name, strerror(errno));
	igt_assert_eq(write(fd, value, strlen(value)), (ssize_t)strlen(value));
	close(fd);
}

/*
 * Opens the debugfs directory of the device of @fd, vsvm/<device>/@sub
 * ("" for the device's own), skipping the test without it.
 */
static int knobs_open(int fd, const char *sub)
{
	char dir[PATH_MAX], buf[256];
	int dfd;

	snprintf(dir, sizeof(dir), "/sys/kernel/debug/vsvm/%s/%s",
		 device_name(fd, buf, sizeof(buf)), sub);
	dfd = open(dir, O_RDONLY | O_DIRECTORY);
	igt_require_f(dfd >= 0, "no fault injection knobs in %s\n", dir);
	return dfd;
}

/**
 * vsvm_fail:
 * @fd: a vsvm device
 * @fault: "fail_alloc", "fail_copy", "partial_migration", "delay_fault" or
 *	   "delay_engine"
 * @times: how many of the next operations fail; 0 stops it
 *
 * Injects faults into the device of @fd through its fault-injection knobs in
 * debugfs, vsvm/<device>/@fault/ (root only). Skips the test without them.
 */
void vsvm_fail(int fd, const char *fault, int times)
{
	int dfd = knobs_open(fd, fault);
	char n[16];

	snprintf(n, sizeof(n), "%d", times);
	knob(dfd, "verbose", "0");
	knob(dfd, "interval", "1");
	knob(dfd, "probability", times ? "100" : "0");
	knob(dfd, "times", n);
	close(dfd);
}

/**
 * vsvm_fault_delay:
 * @fd: a vsvm device
 * @us: the delay in microseconds (the device caps it at 100000)
 *
 * Sets how late "delay_fault" and "delay_engine" (see vsvm_fail()) make the
 * device's fault handler and engine. Skips the test without the knob.
 */
void vsvm_fault_delay(int fd, unsigned int us)
{
	int dfd = knobs_open(fd, "");
	char n[16];

	snprintf(n, sizeof(n), "%u", us);
	knob(dfd, "fault_delay_us", n);
	close(dfd);
}

/**
 * vsvm_cpu_sum:
 * @addr: the span
 * @size: its size
 *
 * Sums the bytes of a span on the CPU: what a GPU read must return.
 *
 * Returns: the sum.
 */
uint64_t vsvm_cpu_sum(const void *addr, uint64_t size)
{
	const uint8_t *p = addr;
	uint64_t sum = 0, i;

	for (i = 0; i < size; i++)
		sum += p[i];
	return sum;
}

/**
 * vsvm_aligned_mmap:
 * @size: the size
 * @align: the alignment, a power of two
 * @prot: as for mmap()
 * @flags: as for mmap(), anonymous
 *
 * Maps anonymous memory aligned to @align, asserting success.
 *
 * Returns: the mapping.
 */
void *vsvm_aligned_mmap(uint64_t size, uint64_t align, int prot, int flags)
{
	uint8_t *raw = mmap(NULL, size + align, prot, flags, -1, 0);
	uintptr_t start;

	igt_assert(raw != MAP_FAILED);
	start = ((uintptr_t)raw + align - 1) & ~(align - 1);
	if (start > (uintptr_t)raw)
		munmap(raw, start - (uintptr_t)raw);
	munmap((void *)(start + size), (uintptr_t)raw + align - start);
	return (void *)start;
}

/**
 * vsvm_pattern_mmap:
 * @size: the size
 *
 * Maps anonymous memory aligned to 2M and fills it with a pattern that differs
 * from page to page and within each page (byte i is i / 4096 * 3 + i).
 *
 * Returns: the mapping.
 */
uint8_t *vsvm_pattern_mmap(uint64_t size)
{
	uint8_t *p = vsvm_aligned_mmap(size, SZ_2M, PROT_READ | PROT_WRITE,
				       MAP_PRIVATE | MAP_ANONYMOUS);

	for (uint64_t i = 0; i < size; i++)
		p[i] = (uint8_t)(i / VSVM_PAGE * 3 + i);
	return p;
}

/**
 * vsvm_anon_huge_kb:
 *
 * Reads how much of this process is PMD-mapped transparent huge pages.
 *
 * Returns: AnonHugePages of /proc/self/smaps_rollup, in kB.
 */
long vsvm_anon_huge_kb(void)
{
	FILE *f = fopen("/proc/self/smaps_rollup", "r");
	char line[256];
	long kb = 0;

	while (f && fgets(line, sizeof(line), f))
		if (sscanf(line, "AnonHugePages: %ld kB", &kb) == 1)
			break;
	if (f)
		fclose(f);
	return kb;
}
