/* SPDX-License-Identifier: MIT */
/*
 * Copyright (C) 2026 The vsvm authors.
 */

#ifndef __VSVM_DRM_H__
#define __VSVM_DRM_H__

#include "drm.h"

#if defined(__cplusplus)
extern "C" {
#endif

/**
 * DOC: vsvm uAPI
 *
 * vsvm is a sample driver for a simulated GPU that works on the virtual
 * addresses of the process that uses it (shared virtual memory): a VM mirrors
 * a span of the calling process's address space, and jobs of GPU operations
 * run on plain CPU pointers (malloc, mmap, stack), faulting pages in on first
 * touch.
 *
 * Every struct has a @flags field; unknown flags and non-zero padding or
 * reserved fields are rejected with -EINVAL.
 *
 * A VM belongs to the address space it mirrors: the ioctls that take a
 * @vm_id (VM_DESTROY, EXEC, WAIT, PREFETCH, MADVISE, SNAPSHOT, STATS) fail
 * with -EACCES when called by a process with another address space, such as
 * a child that inherited the file across fork(), or a process the file was
 * passed to. That process creates a VM of its own with VM_CREATE. A @vm_id
 * that names no VM of the file fails with -ENOENT.
 *
 * The errors of the ioctls themselves (the status of a job is another
 * matter, see &struct drm_vsvm_exec): -EINVAL (flags, fields or spans),
 * -ENOENT (no such VM or job, or a span without a VMA), -EACCES (another
 * address space's VM), -ENOSPC (no VM, job or attribute slot left), -E2BIG
 * (a job of more than DRM_VSVM_MAX_OPS operations, a snapshot of more than
 * 4096 pages), -EFAULT (an argument or result that cannot be read or
 * written, or an exiting process), -EIO (prefetch of VM_IO or VM_PFNMAP
 * memory), -ETIMEDOUT and -ERESTARTSYS (WAIT), -ENOMEM.
 *
 * Several devices: a VM may span several vsvm devices (@devices of
 * &struct drm_vsvm_vm_create): one mirror of the address space, a page table
 * per device. A device is named by its index n, that of its faux device
 * vsvm<n> (/sys/dev/char/<major>:<minor>/device of its render node); the
 * ioctls that take a device (EXEC, PREFETCH, SNAPSHOT) use the file's device
 * unless their DRM_VSVM_*_DEVICE flag is set, and fail with -EINVAL for a
 * device the VM does not span. A process that may use one vsvm device may use
 * them all: they are one simulated platform. A process mirrored by VMs on
 * several devices (or by one VM spanning them) sees one memory. The devices
 * of one interconnect group (module parameter p2p_groups) map each other's
 * VRAM as it is (DRM_VSVM_PTE_PEER), and a prefetch or a fault preferring
 * VRAM moves pages from a peer's VRAM directly. A device of another group
 * gets pages in VRAM back in system memory when it touches them, as the CPU
 * does; a prefetch moves them from there.
 *
 * No ioctl changes the device for other processes. Faults are injected for
 * tests through the kernel's fault-injection framework, by root, in debugfs:
 * vsvm/<device>/{fail_alloc,fail_copy,partial_migration,delay_fault,
 * delay_engine}/ and vsvm/<device>/fault_delay_us.
 */

/**
 * struct drm_vsvm_vm_create - Create a VM mirroring the calling process.
 */
/*
 * DRM_VSVM_VM_MAX_RANGE_64K, DRM_VSVM_VM_MAX_RANGE_4K - Flags of
 * &struct drm_vsvm_vm_create: the VM's ranges (the unit of its GPU faults and
 * migrations) are at most 64 KiB or 4 KiB instead of the device's largest
 * size (module parameter max_chunk_kb), e.g. to compare range sizes on one
 * device.
 */
#define DRM_VSVM_VM_MAX_RANGE_64K	(1 << 0)
#define DRM_VSVM_VM_MAX_RANGE_4K	(1 << 1)

struct drm_vsvm_vm_create {
	/** @start: First address of the mirrored span, page aligned. */
	__u64 start;

	/** @size: Size of the mirrored span in bytes, page aligned, non-zero. */
	__u64 size;

	/** @flags: Zero or one of the DRM_VSVM_VM_MAX_RANGE_* flags. */
	__u32 flags;

	/** @vm_id: Out: the id of the new VM. */
	__u32 vm_id;

	/**
	 * @devices: The other devices the VM spans, bit n for device n; the
	 * file's device is always one of them (its bit may be set too). Zero:
	 * the file's device alone. A bit of no device: -EINVAL.
	 */
	__u32 devices;

	/** @pad: Must be zero. */
	__u32 pad;
};

/**
 * struct drm_vsvm_vm_destroy - Destroy a VM.
 */
struct drm_vsvm_vm_destroy {
	/** @vm_id: The VM to destroy. */
	__u32 vm_id;

	/** @flags: Must be zero. */
	__u32 flags;
};

/**
 * enum drm_vsvm_op_kind - What one operation of a job does.
 *
 * @DRM_VSVM_OP_WRITE: Fill @size bytes at @addr with the low byte of @value.
 * @DRM_VSVM_OP_READ: Read @size bytes at @addr; @result is their sum.
 * @DRM_VSVM_OP_ATOMIC_ADD: Add @value to the naturally aligned 64-bit word
 *	at @addr (@size must be 8) as a GPU atomic; @result is the old value.
 * @DRM_VSVM_OP_COPY: Copy @size bytes from @src to @addr.
 */
enum drm_vsvm_op_kind {
	DRM_VSVM_OP_WRITE = 1,
	DRM_VSVM_OP_READ = 2,
	DRM_VSVM_OP_ATOMIC_ADD = 3,
	DRM_VSVM_OP_COPY = 4,
};

/**
 * struct drm_vsvm_op - One GPU operation on virtual addresses of the process.
 */
struct drm_vsvm_op {
	/** @kind: One of &enum drm_vsvm_op_kind. */
	__u32 kind;

	/** @flags: Must be zero. */
	__u32 flags;

	/** @addr: The address operated on (the destination of a copy). */
	__u64 addr;

	/** @size: The number of bytes, non-zero. */
	__u64 size;

	/** @value: The byte to write, or the addend of an atomic add. */
	__u64 value;

	/** @src: The source of a copy, else zero. */
	__u64 src;

	/** @result: Out: the sum of a read, the old value of an atomic add. */
	__u64 result;
};

/** DRM_VSVM_MAX_OPS - The most operations in one job. */
#define DRM_VSVM_MAX_OPS 256

/**
 * DRM_VSVM_EXEC_ASYNC - Queue the job to the engine and return at once with
 * its @job_id; &struct drm_vsvm_wait waits for it and copies the results.
 */
#define DRM_VSVM_EXEC_ASYNC (1 << 0)

/**
 * DRM_VSVM_EXEC_DEVICE - Run the job on device @device of the VM, not on the
 * file's device.
 */
#define DRM_VSVM_EXEC_DEVICE (1 << 1)

/** DRM_VSVM_MAX_JOBS - The most asynchronous jobs of a VM not waited for. */
#define DRM_VSVM_MAX_JOBS 64

/**
 * struct drm_vsvm_exec - Run a job of operations on a VM.
 *
 * Without %DRM_VSVM_EXEC_ASYNC the ioctl returns 0 once the job ran; whether
 * it succeeded is in @status: 0, or the negative error code of the first
 * operation that failed (-EFAULT for an address with no mapping, -EPERM for a
 * write to read-only memory, -ENODEV when the VM or the file went away,
 * -EAGAIN when a page was taken away again each of the 16 times the engine
 * faulted it in, e.g. by a CPU thread writing it without pause), with
 * @ops_done the number of operations completed before it. With it, the job
 * is queued and @job_id names it. Either way the engine, a kernel worker,
 * runs the job; -ENOSPC when the VM has %DRM_VSVM_MAX_JOBS jobs not waited
 * for.
 */
struct drm_vsvm_exec {
	/** @ops: User pointer to an array of &struct drm_vsvm_op. */
	__u64 ops;

	/** @count: The number of operations, 1 to %DRM_VSVM_MAX_OPS. */
	__u32 count;

	/** @vm_id: The VM to run on. */
	__u32 vm_id;

	/** @flags: %DRM_VSVM_EXEC_ASYNC, %DRM_VSVM_EXEC_DEVICE, or zero. */
	__u32 flags;

	/** @status: Out: 0 or the error code of the failed operation. */
	__s32 status;

	/** @ops_done: Out: the number of operations completed. */
	__u32 ops_done;

	/** @device: With %DRM_VSVM_EXEC_DEVICE, the device; zero otherwise. */
	__u32 device;

	/** @job_id: Out: the id of an asynchronous job. */
	__u64 job_id;
};

/**
 * struct drm_vsvm_wait - Wait for an asynchronous job, and reap it.
 *
 * On success the results are copied to the job's operations, which must
 * still be mapped in the calling process (the one that queued the job), and
 * the job is forgotten. -ETIMEDOUT if it did not end in time (it stays).
 */
struct drm_vsvm_wait {
	/** @job_id: The job. */
	__u64 job_id;

	/** @timeout_ns: How long to wait; negative: for as long as it takes. */
	__s64 timeout_ns;

	/** @vm_id: The VM of the job. */
	__u32 vm_id;

	/** @flags: Must be zero. */
	__u32 flags;

	/** @status: Out: as &struct drm_vsvm_exec.status. */
	__s32 status;

	/** @ops_done: Out: as &struct drm_vsvm_exec.ops_done. */
	__u32 ops_done;
};

/**
 * enum drm_vsvm_region - Where memory lives.
 *
 * @DRM_VSVM_REGION_SYSTEM: System memory.
 * @DRM_VSVM_REGION_VRAM: The device's memory (VRAM): that of the device that
 *	faults, or that a prefetch names.
 */
enum drm_vsvm_region {
	DRM_VSVM_REGION_SYSTEM = 0,
	DRM_VSVM_REGION_VRAM = 1,
};

/**
 * DRM_VSVM_PREFETCH_DEVICE - Migrate to the VRAM of device @device of the VM,
 * not of the file's device.
 */
#define DRM_VSVM_PREFETCH_DEVICE (1 << 0)

/**
 * struct drm_vsvm_prefetch - Migrate a span of a VM to a memory region.
 *
 * Pages that cannot move (pinned, locked, VRAM full) stay where they are;
 * that is no error: @pages_moved tells how many moved. To system memory, the
 * pages come back from the VRAM of every device of the VM.
 */
struct drm_vsvm_prefetch {
	/** @addr: First address of the span, page aligned. */
	__u64 addr;

	/** @size: Size of the span in bytes, page aligned, non-zero. */
	__u64 size;

	/** @vm_id: The VM. */
	__u32 vm_id;

	/** @region: One of &enum drm_vsvm_region. */
	__u32 region;

	/** @flags: Zero or %DRM_VSVM_PREFETCH_DEVICE. */
	__u32 flags;

	/** @device: With %DRM_VSVM_PREFETCH_DEVICE, the device; zero otherwise. */
	__u32 device;

	/** @pages_moved: Out: the number of pages that moved. */
	__u64 pages_moved;
};

/**
 * enum drm_vsvm_atomic - How GPU atomics on system memory are done.
 *
 * @DRM_VSVM_ATOMIC_EXCLUSIVE: The pages are made exclusive to the device for
 *	the access; the CPU takes them back on its next touch.
 * @DRM_VSVM_ATOMIC_VRAM: The range migrates to VRAM first; pages that cannot
 *	move are made exclusive.
 */
enum drm_vsvm_atomic {
	DRM_VSVM_ATOMIC_EXCLUSIVE = 0,
	DRM_VSVM_ATOMIC_VRAM = 1,
};

/**
 * struct drm_vsvm_madvise - Memory attributes of a span of a VM.
 *
 * The attributes apply to GPU faults in the span from then on; a later call
 * over an overlapping span replaces them there. At most
 * %DRM_VSVM_MAX_ATTRS spans per VM (-ENOSPC).
 */
struct drm_vsvm_madvise {
	/** @addr: First address of the span, page aligned. */
	__u64 addr;

	/** @size: Size of the span in bytes, page aligned, non-zero. */
	__u64 size;

	/** @vm_id: The VM. */
	__u32 vm_id;

	/** @flags: Must be zero. */
	__u32 flags;

	/**
	 * @preferred: Where a GPU fault puts the pages: one of
	 * &enum drm_vsvm_region (system: where they are).
	 */
	__u32 preferred;

	/** @atomic: One of &enum drm_vsvm_atomic. */
	__u32 atomic;
};

/** DRM_VSVM_MAX_ATTRS - The most attribute spans of one VM. */
#define DRM_VSVM_MAX_ATTRS 64

/* The bits of &struct drm_vsvm_pte.flags. */
#define DRM_VSVM_PTE_VALID	(1 << 0)
#define DRM_VSVM_PTE_WRITABLE	(1 << 1)
#define DRM_VSVM_PTE_VRAM	(1 << 2)
#define DRM_VSVM_PTE_ATOMIC	(1 << 3)
/* With DRM_VSVM_PTE_VRAM: the VRAM of a peer, another device of the interconnect group. */
#define DRM_VSVM_PTE_PEER	(1 << 4)

/**
 * struct drm_vsvm_pte - What the device page table maps at one page.
 */
struct drm_vsvm_pte {
	/** @flags: %DRM_VSVM_PTE_* bits; 0 when nothing is mapped. */
	__u32 flags;

	/** @shift: log2 of the size of the entry the page is mapped by. */
	__u32 shift;
};

/** DRM_VSVM_MAX_SNAPSHOT_PAGES - The most pages one snapshot reports. */
#define DRM_VSVM_MAX_SNAPSHOT_PAGES 4096

/**
 * DRM_VSVM_SNAPSHOT_DEVICE - Report the page table of device @device of the
 * VM, not of the file's device.
 */
#define DRM_VSVM_SNAPSHOT_DEVICE (1 << 0)

/**
 * struct drm_vsvm_snapshot - The device page table over a span of a VM.
 */
struct drm_vsvm_snapshot {
	/** @addr: First address of the span, page aligned. */
	__u64 addr;

	/** @pages: Number of pages, 1 to %DRM_VSVM_MAX_SNAPSHOT_PAGES. */
	__u64 pages;

	/** @ptes: User pointer to @pages &struct drm_vsvm_pte, filled in. */
	__u64 ptes;

	/** @vm_id: The VM. */
	__u32 vm_id;

	/** @flags: Zero or %DRM_VSVM_SNAPSHOT_DEVICE. */
	__u32 flags;

	/** @device: With %DRM_VSVM_SNAPSHOT_DEVICE, the device; zero otherwise. */
	__u32 device;

	/** @pad: Must be zero. */
	__u32 pad;
};

/**
 * struct drm_vsvm_stats - Counters of a VM and of the file's device.
 */
struct drm_vsvm_stats {
	/** @vm_id: The VM to report on. */
	__u32 vm_id;

	/** @flags: Must be zero. */
	__u32 flags;

	/** @gpu_faults: Out: page faults the engine raised. */
	__u64 gpu_faults;

	/** @faults_4k: Out: faults resolved with a 4 KiB range. */
	__u64 faults_4k;

	/** @faults_64k: Out: faults resolved with a 64 KiB range. */
	__u64 faults_64k;

	/** @faults_2m: Out: faults resolved with a 2 MiB range. */
	__u64 faults_2m;

	/** @retries: Out: page reads repeated because of a racing invalidation. */
	__u64 retries;

	/** @invalidations: Out: ranges invalidated by CPU mapping changes. */
	__u64 invalidations;

	/** @gc_runs: Out: garbage collections that removed ranges. */
	__u64 gc_runs;

	/** @gc_ranges: Out: ranges the garbage collector removed. */
	__u64 gc_ranges;

	/** @ranges: Out: ranges the VM has now. */
	__u64 ranges;

	/** @bound_pages: Out: pages the device page table maps now. */
	__u64 bound_pages;

	/** @migrations_to_vram: Out: range migrations to VRAM that moved pages. */
	__u64 migrations_to_vram;

	/** @bytes_to_vram: Out: bytes the VM's migrations moved to VRAM. */
	__u64 bytes_to_vram;

	/** @bytes_evicted: Out: bytes the VM's prefetches moved back to system memory. */
	__u64 bytes_evicted;

	/** @dev_cpu_faults: Out: CPU faults on the device's VRAM. */
	__u64 dev_cpu_faults;

	/** @dev_bytes_cpu_faulted: Out: bytes CPU faults moved back from the device's VRAM. */
	__u64 dev_bytes_cpu_faulted;

	/** @dev_vram_used: Out: bytes of the device's VRAM holding process data. */
	__u64 dev_vram_used;

	/** @dev_vram_size: Out: bytes of VRAM the device has. */
	__u64 dev_vram_size;

	/** @dev_evictions: Out: evictions of the device's VRAM by physical page. */
	__u64 dev_evictions;

	/** @dev_bytes_evicted: Out: bytes those evictions moved to system memory. */
	__u64 dev_bytes_evicted;

	/**
	 * @dev_huge_folios: Out: 2 MiB huge pages that moved to or from the device's VRAM whole,
	 * as one folio.
	 */
	__u64 dev_huge_folios;

	/**
	 * @dev_bytes_from_peers: Out: bytes that moved to the device's VRAM directly from the VRAM
	 * of its peers (devices of its interconnect group).
	 */
	__u64 dev_bytes_from_peers;

	/** @reserved: Must be zero. */
	__u64 reserved;
};

#define DRM_VSVM_VM_CREATE		0x00
#define DRM_VSVM_VM_DESTROY		0x01
#define DRM_VSVM_EXEC			0x02
#define DRM_VSVM_STATS			0x03
#define DRM_VSVM_PREFETCH		0x04
#define DRM_VSVM_MADVISE		0x05
#define DRM_VSVM_SNAPSHOT		0x06
#define DRM_VSVM_WAIT			0x07

/* Note: this is an enum so that it can be resolved by Rust bindgen. */
enum {
	DRM_IOCTL_VSVM_VM_CREATE	= DRM_IOWR(DRM_COMMAND_BASE + DRM_VSVM_VM_CREATE,
						   struct drm_vsvm_vm_create),
	DRM_IOCTL_VSVM_VM_DESTROY	= DRM_IOW(DRM_COMMAND_BASE + DRM_VSVM_VM_DESTROY,
						  struct drm_vsvm_vm_destroy),
	DRM_IOCTL_VSVM_EXEC		= DRM_IOWR(DRM_COMMAND_BASE + DRM_VSVM_EXEC,
						   struct drm_vsvm_exec),
	DRM_IOCTL_VSVM_STATS		= DRM_IOWR(DRM_COMMAND_BASE + DRM_VSVM_STATS,
						   struct drm_vsvm_stats),
	DRM_IOCTL_VSVM_PREFETCH		= DRM_IOWR(DRM_COMMAND_BASE + DRM_VSVM_PREFETCH,
						   struct drm_vsvm_prefetch),
	DRM_IOCTL_VSVM_MADVISE		= DRM_IOW(DRM_COMMAND_BASE + DRM_VSVM_MADVISE,
						  struct drm_vsvm_madvise),
	DRM_IOCTL_VSVM_SNAPSHOT		= DRM_IOW(DRM_COMMAND_BASE + DRM_VSVM_SNAPSHOT,
						  struct drm_vsvm_snapshot),
	DRM_IOCTL_VSVM_WAIT		= DRM_IOWR(DRM_COMMAND_BASE + DRM_VSVM_WAIT,
						   struct drm_vsvm_wait),
};

#if defined(__cplusplus)
}
#endif

#endif /* __VSVM_DRM_H__ */
