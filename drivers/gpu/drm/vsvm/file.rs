// SPDX-License-Identifier: GPL-2.0

//! An open render node: its VMs, and the ioctls.

use core::mem::size_of;
use kernel::{
    drm::{
        self,
        gpusvm::AtomicPolicy, //
    },
    new_mutex,
    page::PAGE_SIZE,
    prelude::*,
    sizes::SZ_64K,
    sync::{
        Arc,
        Mutex, //
    },
    uaccess::{
        UserPtr,
        UserSlice, //
    },
    uapi,
};

use crate::{
    driver::{
        VsvmDevice,
        VsvmDriver, //
    },
    job::Op,
    vm::{
        Attrs,
        Vm,
        VmDevice, //
    },
};

/// The most VMs one file may have.
const MAX_VMS: usize = 64;

/// The end of the user address space a VM may mirror (x86-64 with 4-level page tables).
pub(crate) const USER_END: u64 = 1 << 47;

/// The span of `size` bytes from `addr`, if both are page aligned, the span is not empty and
/// lies in the user address space ([`EINVAL`] otherwise).
fn user_span(addr: u64, size: u64) -> Result<core::ops::Range<usize>> {
    // CAST: Page sizes fit in 64 bits.
    let page = PAGE_SIZE as u64;
    let end = addr.checked_add(size).ok_or(EINVAL)?;
    if size == 0 || addr % page != 0 || size % page != 0 || end > USER_END {
        return Err(EINVAL);
    }
    Ok(usize::try_from(addr)?..usize::try_from(end)?)
}

/// The user memory of `count` operations at `addr`.
fn ops_slice(addr: u64, count: usize) -> Result<UserSlice> {
    let len = count.checked_mul(size_of::<Op>()).ok_or(EINVAL)?;
    Ok(UserSlice::new(
        UserPtr::from_addr(usize::try_from(addr)?),
        len,
    ))
}

/// Copies `ops`, with their results, back to the user's array at `addr`.
fn write_results(addr: u64, ops: &[Op]) -> Result {
    let mut writer = ops_slice(addr, ops.len())?.writer();
    for op in ops {
        writer.write(op)?;
    }
    Ok(())
}

/// The VMs of a file, with the id the next one gets.
struct Vms {
    next_id: u32,
    vms: KVec<Arc<Vm>>,
}

/// The driver data of an open file.
#[pin_data(PinnedDrop)]
pub(crate) struct File {
    #[pin]
    vms: Mutex<Vms>,
}

#[pinned_drop]
impl PinnedDrop for File {
    fn drop(self: Pin<&mut Self>) {
        // The file goes (closed, or its process exits): stop the engine for its VMs first; each
        // VM, its page table and its GPU SVM go when the last job holding it ends.
        for vm in self.vms.lock().vms.iter() {
            vm.close();
        }
    }
}

impl drm::file::DriverFile for File {
    type Driver = VsvmDriver;

    fn open(_dev: &VsvmDevice) -> Result<Pin<KBox<Self>>> {
        KBox::try_pin_init(
            try_pin_init!(Self {
                vms <- new_mutex!(Vms {
                    next_id: 1,
                    vms: KVec::new(),
                }),
            }),
            GFP_KERNEL,
        )
    }
}

impl File {
    /// VM `id` of this file, for the calling process: only the process whose address space the
    /// VM mirrors may use it. Another one with the file (a child after `fork()`, a process it
    /// was passed to) gets `EACCES`, and creates a VM of its own.
    fn vm(&self, id: u32) -> Result<Arc<Vm>> {
        let vm = {
            let vms = self.vms.lock();
            vms.vms.iter().find(|vm| vm.id() == id).cloned()
        }
        .ok_or(ENOENT)?;
        let task = current!();
        match task.mm() {
            Some(mm) if vm.mirrors(mm) => Ok(vm),
            _ => Err(EACCES),
        }
    }

    /// IOCTL: create a VM mirroring a span of the calling process.
    pub(crate) fn vm_create(
        dev: &VsvmDevice,
        req: &mut uapi::drm_vsvm_vm_create,
        file: &drm::File<File>,
    ) -> Result<u32> {
        let span = user_span(req.start, req.size)?;
        let chunks = match req.flags {
            0 => dev.chunks,
            uapi::DRM_VSVM_VM_MAX_RANGE_64K => dev.chunks.at_most(SZ_64K)?,
            uapi::DRM_VSVM_VM_MAX_RANGE_4K => dev.chunks.at_most(PAGE_SIZE)?,
            _ => return Err(EINVAL),
        };
        if req.vm_id != 0 || req.pad != 0 {
            return Err(EINVAL);
        }
        let devices = Self::vm_devices(dev, req.devices)?;
        let task = current!();
        let mm = task.mm().ok_or(EINVAL)?;
        let this = file.inner();
        let id = {
            let mut vms = this.vms.lock();
            if vms.vms.len() >= MAX_VMS {
                return Err(ENOSPC);
            }
            let id = vms.next_id;
            vms.next_id = id.checked_add(1).ok_or(ENOSPC)?;
            id
        };
        let vm = Vm::new(id, mm, span, devices, chunks, dev.queues.clone())?;
        let vm = Arc::new(vm, GFP_KERNEL)?;
        let mut vms = this.vms.lock();
        if vms.vms.len() >= MAX_VMS {
            return Err(ENOSPC);
        }
        vms.vms.push(vm, GFP_KERNEL)?;
        req.vm_id = id;
        Ok(0)
    }

    /// The devices of a new VM on the file's device `dev` and those of the mask `others`: the
    /// file's first. Fails with [`EINVAL`] for a bit of no device.
    fn vm_devices(dev: &VsvmDevice, others: u32) -> Result<KVec<VmDevice>> {
        let memories = &dev.memories;
        let all = u32::try_from(memories.len())
            .ok()
            .and_then(|n| 1u32.checked_shl(n))
            .map_or(u32::MAX, |bit| bit - 1);
        if others & !all != 0 {
            return Err(EINVAL);
        }
        let others = others & !(1 << dev.index);
        // CAST: At most 32 devices.
        let mut devices = KVec::with_capacity(others.count_ones() as usize + 1, GFP_KERNEL)?;
        devices.push(VmDevice::new(dev.index, dev.vram.clone()), GFP_KERNEL)?;
        for (index, vram) in (0u32..).zip(memories.iter()) {
            if others & (1 << index) != 0 {
                devices.push(VmDevice::new(index, vram.clone()), GFP_KERNEL)?;
            }
        }
        Ok(devices)
    }

    /// The position in `vm` of the device a request names: `device` with `flag` in `flags`, the
    /// file's device (the VM's first) without. Fails with [`EINVAL`] for a device the VM does not
    /// span, or a device given without the flag.
    fn device_of(vm: &Vm, flags: u32, flag: u32, device: u32) -> Result<usize> {
        match flags & flag {
            0 if device == 0 => Ok(0),
            0 => Err(EINVAL),
            _ => vm.device_at(device),
        }
    }

    /// IOCTL: destroy a VM.
    pub(crate) fn vm_destroy(
        _dev: &VsvmDevice,
        req: &mut uapi::drm_vsvm_vm_destroy,
        file: &drm::File<File>,
    ) -> Result<u32> {
        if req.flags != 0 {
            return Err(EINVAL);
        }
        let this = file.inner();
        this.vm(req.vm_id)?;
        let vm = {
            let mut vms = this.vms.lock();
            let i = vms
                .vms
                .iter()
                .position(|vm| vm.id() == req.vm_id)
                .ok_or(ENOENT)?;
            vms.vms.remove(i)?
        };
        // Its jobs stop at their next page; a running one holds the VM until it ends.
        vm.close();
        Ok(0)
    }

    /// IOCTL: run a job on a VM, and wait for it unless it is asynchronous.
    pub(crate) fn exec(
        _dev: &VsvmDevice,
        req: &mut uapi::drm_vsvm_exec,
        file: &drm::File<File>,
    ) -> Result<u32> {
        if req.flags & !(uapi::DRM_VSVM_EXEC_ASYNC | uapi::DRM_VSVM_EXEC_DEVICE) != 0
            || req.status != 0
            || req.ops_done != 0
            || req.job_id != 0
        {
            return Err(EINVAL);
        }
        let count = usize::try_from(req.count)?;
        if count == 0 {
            return Err(EINVAL);
        }
        if count > uapi::DRM_VSVM_MAX_OPS as usize {
            return Err(E2BIG);
        }
        let vm = file.inner().vm(req.vm_id)?;
        let dev = Self::device_of(&vm, req.flags, uapi::DRM_VSVM_EXEC_DEVICE, req.device)?;
        let mut reader = ops_slice(req.ops, count)?.reader();
        let mut ops = KVec::with_capacity(count, GFP_KERNEL)?;
        for _ in 0..count {
            let op: Op = reader.read()?;
            op.validate()?;
            ops.push(op, GFP_KERNEL)?;
        }
        // The engine runs every job; a synchronous one is waited for here.
        let job = vm.submit(dev, ops, req.ops)?;
        if req.flags & uapi::DRM_VSVM_EXEC_ASYNC != 0 {
            req.job_id = job.id();
            return Ok(0);
        }
        let (outcome, ops) = job.wait_done();
        vm.reap(job.id());
        write_results(req.ops, &ops)?;
        req.status = outcome.status;
        req.ops_done = outcome.ops_done;
        Ok(0)
    }

    /// IOCTL: wait for an asynchronous job, copy its results and forget it.
    pub(crate) fn wait(
        _dev: &VsvmDevice,
        req: &mut uapi::drm_vsvm_wait,
        file: &drm::File<File>,
    ) -> Result<u32> {
        if req.flags != 0 || req.status != 0 || req.ops_done != 0 {
            return Err(EINVAL);
        }
        let vm = file.inner().vm(req.vm_id)?;
        let job = vm.job(req.job_id)?;
        let (outcome, ops) = job.wait(req.timeout_ns)?;
        vm.reap(job.id());
        req.status = outcome.status;
        req.ops_done = outcome.ops_done;
        write_results(job.user_ops(), &ops)?;
        Ok(0)
    }

    /// IOCTL: migrate a span of a VM to a memory region.
    pub(crate) fn prefetch(
        _dev: &VsvmDevice,
        req: &mut uapi::drm_vsvm_prefetch,
        file: &drm::File<File>,
    ) -> Result<u32> {
        let span = user_span(req.addr, req.size)?;
        if req.flags & !uapi::DRM_VSVM_PREFETCH_DEVICE != 0
            || req.pages_moved != 0
            || req.region > uapi::drm_vsvm_region_DRM_VSVM_REGION_VRAM
        {
            return Err(EINVAL);
        }
        let vm = file.inner().vm(req.vm_id)?;
        let dev = Self::device_of(&vm, req.flags, uapi::DRM_VSVM_PREFETCH_DEVICE, req.device)?;
        req.pages_moved = vm.prefetch(dev, span, req.region)?;
        Ok(0)
    }

    /// IOCTL: set the memory attributes of a span of a VM.
    pub(crate) fn madvise(
        _dev: &VsvmDevice,
        req: &mut uapi::drm_vsvm_madvise,
        file: &drm::File<File>,
    ) -> Result<u32> {
        let span = user_span(req.addr, req.size)?;
        let prefer_vram = match req.preferred {
            uapi::drm_vsvm_region_DRM_VSVM_REGION_SYSTEM => false,
            uapi::drm_vsvm_region_DRM_VSVM_REGION_VRAM => true,
            _ => return Err(EINVAL),
        };
        let atomic = match req.atomic {
            uapi::drm_vsvm_atomic_DRM_VSVM_ATOMIC_EXCLUSIVE => AtomicPolicy::Exclusive,
            uapi::drm_vsvm_atomic_DRM_VSVM_ATOMIC_VRAM => AtomicPolicy::Vram,
            _ => return Err(EINVAL),
        };
        if req.flags != 0 {
            return Err(EINVAL);
        }
        let vm = file.inner().vm(req.vm_id)?;
        vm.madvise(
            span,
            Attrs {
                prefer_vram,
                atomic,
            },
        )?;
        Ok(0)
    }

    /// IOCTL: report the device page table over a span of a VM.
    pub(crate) fn snapshot(
        _dev: &VsvmDevice,
        req: &mut uapi::drm_vsvm_snapshot,
        file: &drm::File<File>,
    ) -> Result<u32> {
        let pages = usize::try_from(req.pages)?;
        if pages > uapi::DRM_VSVM_MAX_SNAPSHOT_PAGES as usize {
            return Err(E2BIG);
        }
        // CAST: Page sizes fit in 64 bits.
        user_span(
            req.addr,
            req.pages.checked_mul(PAGE_SIZE as u64).ok_or(EINVAL)?,
        )?;
        if req.flags & !uapi::DRM_VSVM_SNAPSHOT_DEVICE != 0 || req.pad != 0 {
            return Err(EINVAL);
        }
        let vm = file.inner().vm(req.vm_id)?;
        let dev = Self::device_of(&vm, req.flags, uapi::DRM_VSVM_SNAPSHOT_DEVICE, req.device)?;
        let mut ptes = KVec::with_capacity(pages, GFP_KERNEL)?;
        ptes.resize(pages, uapi::drm_vsvm_pte::default(), GFP_KERNEL)?;
        vm.snapshot(dev, usize::try_from(req.addr)?, &mut ptes)?;
        let mut bytes = KVec::with_capacity(pages * size_of::<uapi::drm_vsvm_pte>(), GFP_KERNEL)?;
        for pte in ptes.iter() {
            bytes.extend_from_slice(&pte.flags.to_ne_bytes(), GFP_KERNEL)?;
            bytes.extend_from_slice(&pte.shift.to_ne_bytes(), GFP_KERNEL)?;
        }
        UserSlice::new(UserPtr::from_addr(usize::try_from(req.ptes)?), bytes.len())
            .writer()
            .write_slice(&bytes)?;
        Ok(0)
    }

    /// IOCTL: the counters of a VM.
    pub(crate) fn stats(
        _dev: &VsvmDevice,
        req: &mut uapi::drm_vsvm_stats,
        file: &drm::File<File>,
    ) -> Result<u32> {
        if req.flags != 0 || req.reserved != 0 {
            return Err(EINVAL);
        }
        let vm = file.inner().vm(req.vm_id)?;
        vm.stats(req)?;
        Ok(0)
    }
}
