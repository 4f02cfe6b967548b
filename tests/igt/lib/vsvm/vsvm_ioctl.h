/* SPDX-License-Identifier: MIT */
/*
 * vsvm ioctl helpers in IGT's style (as lib/xe/xe_ioctl.h is for xe): the
 * __ variants return the error, the plain ones assert success.
 */
#ifndef VSVM_IOCTL_H
#define VSVM_IOCTL_H

#include <stdint.h>

#include "vsvm_drm.h"

#define VSVM_PAGE 4096UL

/* The device of the file, for the _device variants: no device named. */
#define VSVM_FILE_DEVICE UINT32_MAX

uint32_t vsvm_device_index(int fd);

uint32_t vsvm_vm_create(int fd);
int __vsvm_vm_create(int fd, uint64_t start, uint64_t size, uint32_t flags, uint32_t *vm);
uint32_t vsvm_vm_create_devices(int fd, uint32_t devices);
int __vsvm_vm_create_devices(int fd, uint64_t start, uint64_t size, uint32_t flags,
			     uint32_t devices, uint32_t *vm);
void vsvm_vm_destroy(int fd, uint32_t vm);

int __vsvm_exec(int fd, uint32_t vm, struct drm_vsvm_op *ops, uint32_t count);
int __vsvm_exec_device(int fd, uint32_t vm, uint32_t device, struct drm_vsvm_op *ops,
		       uint32_t count);
void vsvm_exec(int fd, uint32_t vm, struct drm_vsvm_op *ops, uint32_t count);
uint64_t vsvm_exec_async(int fd, uint32_t vm, struct drm_vsvm_op *ops, uint32_t count);
int __vsvm_wait(int fd, uint32_t vm, uint64_t job, int64_t timeout_ns, uint32_t *ops_done);

int __vsvm_write(int fd, uint32_t vm, void *addr, uint64_t size, uint8_t byte);
void vsvm_write(int fd, uint32_t vm, void *addr, uint64_t size, uint8_t byte);
int __vsvm_read(int fd, uint32_t vm, const void *addr, uint64_t size, uint64_t *sum);
uint64_t vsvm_read(int fd, uint32_t vm, const void *addr, uint64_t size);
int __vsvm_atomic_add(int fd, uint32_t vm, uint64_t *addr, uint64_t value, uint64_t *old);
int __vsvm_copy(int fd, uint32_t vm, void *dst, const void *src, uint64_t size);

int __vsvm_prefetch(int fd, uint32_t vm, void *addr, uint64_t size, uint32_t region,
		    uint64_t *pages_moved);
uint64_t vsvm_prefetch(int fd, uint32_t vm, void *addr, uint64_t size, uint32_t region);
int __vsvm_prefetch_device(int fd, uint32_t vm, uint32_t device, void *addr, uint64_t size,
			   uint32_t region, uint64_t *pages_moved);
void vsvm_madvise(int fd, uint32_t vm, void *addr, uint64_t size, uint32_t preferred,
		  uint32_t atomic);
void vsvm_snapshot(int fd, uint32_t vm, const void *addr, uint64_t pages,
		   struct drm_vsvm_pte *ptes);
void vsvm_snapshot_device(int fd, uint32_t vm, uint32_t device, const void *addr,
			  uint64_t pages, struct drm_vsvm_pte *ptes);
uint32_t vsvm_pte_flags(int fd, uint32_t vm, const void *addr);
uint32_t vsvm_pte_flags_device(int fd, uint32_t vm, uint32_t device, const void *addr);
void vsvm_stats(int fd, uint32_t vm, struct drm_vsvm_stats *stats);
void vsvm_fail(int fd, const char *fault, int times);
void vsvm_fault_delay(int fd, unsigned int us);

uint64_t vsvm_cpu_sum(const void *addr, uint64_t size);
void *vsvm_aligned_mmap(uint64_t size, uint64_t align, int prot, int flags);
uint8_t *vsvm_pattern_mmap(uint64_t size);
long vsvm_anon_huge_kb(void);

#endif
