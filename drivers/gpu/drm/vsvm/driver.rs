// SPDX-License-Identifier: GPL-2.0

//! The device: a faux device with a DRM render node.

use core::fmt;
use kernel::{
    debugfs,
    drm::{
        self,
        gem,
        gpusvm::{
            ChunkSizes,
            CpuAccess,
            DeviceMemory, //
        },
        ioctl, //
    },
    faux,
    page::PAGE_SIZE,
    prelude::*,
    sizes::{
        SZ_2M,
        SZ_64K, //
    },
    sync::Arc,
    workqueue::OwnedQueue,
    Module, //
};

use crate::{
    file::File,
    gem::VsvmObject,
    module_parameters,
    vm::Mirror,
    vram::{
        Group,
        Vram, //
    },
};

/// The DRM driver.
pub(crate) struct VsvmDriver;

/// The DRM device of the driver.
pub(crate) type VsvmDevice<Ctx = drm::Registered> = drm::Device<VsvmDriver, Ctx>;

/// The work queues of the driver. The module destroys them when it goes, after every device,
/// file and VM: no work item runs once its text is gone.
pub(crate) struct Queues {
    /// The engine's asynchronous jobs.
    pub(crate) jobs: OwnedQueue,
    /// The fault handler, on the CPU that raised the fault (see `Vm::raise_fault`).
    pub(crate) faults: OwnedQueue,
    /// VRAM blocks going back to the allocator, from any process's VRAM pages.
    pub(crate) frees: OwnedQueue,
}

impl Queues {
    fn new() -> Result<Arc<Self>> {
        let queues = Self {
            jobs: OwnedQueue::new_unbound(c"vsvm_jobs")?,
            faults: OwnedQueue::new_percpu(c"vsvm_faults")?,
            frees: OwnedQueue::new_unbound(c"vsvm_frees")?,
        };
        Ok(Arc::new(queues, GFP_KERNEL)?)
    }
}

/// The memories of all the devices, by device index: a VM may span any of them.
pub(crate) type Memories = Arc<KVec<Arc<DeviceMemory<Mirror>>>>;

/// The data of a device.
#[pin_data]
pub(crate) struct VsvmData {
    /// The device's index `n` (it is `vsvm<n>`).
    pub(crate) index: u32,
    /// The device's memory; dropped with the device, after every file and VM.
    pub(crate) vram: Arc<DeviceMemory<Mirror>>,
    /// The memories of all the devices.
    pub(crate) memories: Memories,
    /// The driver's work queues.
    pub(crate) queues: Arc<Queues>,
    /// The range sizes of the device's VMs.
    pub(crate) chunks: ChunkSizes,
    /// `vsvm/<device>/vram` in debugfs: the device's memory counters.
    #[pin]
    _vram_file: debugfs::File<Arc<DeviceMemory<Mirror>>>,
    _debugfs: debugfs::Dir,
}

/// Writes the counters of the device memory `vram` (the `vram` debugfs file).
fn show_vram(vram: &Arc<DeviceMemory<Mirror>>, f: &mut fmt::Formatter<'_>) -> fmt::Result {
    let s = vram.stats();
    let pages = vram.pfns().end - vram.pfns().start;
    writeln!(f, "size_bytes: {}", pages * PAGE_SIZE)?;
    writeln!(f, "used_bytes: {}", s.pages_in_use.get() * PAGE_SIZE as u64)?;
    writeln!(f, "allocations: {}", s.allocations.get())?;
    writeln!(f, "releases: {}", s.releases.get())?;
    writeln!(f, "cpu_faults: {}", s.cpu_faults.get())?;
    writeln!(f, "bytes_cpu_faulted: {}", s.bytes_cpu_faulted.get())?;
    writeln!(f, "evictions: {}", s.evictions.get())?;
    writeln!(f, "bytes_evicted: {}", s.bytes_evicted.get())?;
    writeln!(f, "huge_folios: {}", s.huge_folios.get())
}

/// The range sizes the `max_chunk_kb` parameter selects: 2048 (2M, 64K, 4K), 64 (64K, 4K) or
/// 4 (4K only). Chunks of 64K are only used over pages the CPU has, as the C layer does.
fn chunk_sizes() -> Result<ChunkSizes> {
    let sizes: &[usize] = match *module_parameters::max_chunk_kb.value() {
        2048 => &[SZ_2M, SZ_64K, PAGE_SIZE],
        64 => &[SZ_64K, PAGE_SIZE],
        4 => &[PAGE_SIZE],
        _ => return Err(EINVAL),
    };
    ChunkSizes::new(sizes)?.present_only_up_to(SZ_64K)
}

/// The memory of a device of the interconnect group `group`, with its debugfs files in `dir`.
fn new_vram(
    dir: &debugfs::Dir,
    group: Arc<Group>,
    queues: &Arc<Queues>,
) -> Result<Arc<DeviceMemory<Mirror>>> {
    // CAST: The parameter is in MiB; the product is checked.
    let size = usize::try_from(*module_parameters::vram_mb.value())?
        .checked_mul(1 << 20)
        .filter(|&s| s > 0)
        .ok_or(EINVAL)?;
    let vram = Arc::pin_init(
        DeviceMemory::new(
            size,
            group.owner(),
            c"vsvm-vram",
            Vram::new(size, group.clone(), queues.clone(), dir)?,
            CpuAccess,
        )?,
        GFP_KERNEL,
    )?;
    group.join(&vram)?;
    Ok(vram)
}

impl VsvmData {
    /// Device `index` of `memories`, with its debugfs directory `dir`.
    fn new(
        dir: debugfs::Dir,
        index: usize,
        memories: &Memories,
        queues: &Arc<Queues>,
    ) -> Result<impl PinInit<Self, Error>> {
        let vram = memories.get(index).ok_or(EINVAL)?.clone();
        let (shown, memories, queues) = (vram.clone(), memories.clone(), queues.clone());
        let index = u32::try_from(index)?;
        Ok(try_pin_init!(Self {
            index,
            vram,
            memories,
            queues,
            chunks: chunk_sizes()?,
            _vram_file <- dir.read_callback_file(c"vram", shown, &show_vram),
            _debugfs: dir,
        }? Error))
    }
}

const INFO: drm::DriverInfo = drm::DriverInfo {
    major: 0,
    minor: 1,
    patchlevel: 0,
    name: c"vsvm",
    desc: c"Sample driver for GPU shared virtual memory",
};

#[vtable]
impl drm::Driver for VsvmDriver {
    type Data = VsvmData;
    type File = File;
    type Object<Ctx: drm::DeviceContext> = gem::Object<VsvmObject, Ctx>;

    const INFO: drm::DriverInfo = INFO;
    const MODULE: &'static ThisModule = &crate::THIS_MODULE;
    const FEAT_RENDER: bool = true;

    kernel::declare_drm_ioctls! {
        (VSVM_VM_CREATE, drm_vsvm_vm_create, ioctl::RENDER_ALLOW, File::vm_create),
        (VSVM_VM_DESTROY, drm_vsvm_vm_destroy, ioctl::RENDER_ALLOW, File::vm_destroy),
        (VSVM_EXEC, drm_vsvm_exec, ioctl::RENDER_ALLOW, File::exec),
        (VSVM_STATS, drm_vsvm_stats, ioctl::RENDER_ALLOW, File::stats),
        (VSVM_PREFETCH, drm_vsvm_prefetch, ioctl::RENDER_ALLOW, File::prefetch),
        (VSVM_MADVISE, drm_vsvm_madvise, ioctl::RENDER_ALLOW, File::madvise),
        (VSVM_SNAPSHOT, drm_vsvm_snapshot, ioctl::RENDER_ALLOW, File::snapshot),
        (VSVM_WAIT, drm_vsvm_wait, ioctl::RENDER_ALLOW, File::wait),
    }
}

/// The names of the faux devices, one per simulated GPU.
const DEVICE_NAMES: [&CStr; 4] = [c"vsvm0", c"vsvm1", c"vsvm2", c"vsvm3"];

/// The module: `devices` simulated GPUs, each on a faux device. A DRM device is unregistered when
/// its faux device goes, with the module.
///
/// An open file keeps the module loaded, and a VM lives only in its file and in the work items
/// of its jobs: once the devices are gone and the engine's work is drained, no VM, device memory
/// or work item of the module is left.
pub(crate) struct VsvmModule {
    devices: KVec<faux::Registration>,
    _debugfs: debugfs::Dir,
    queues: Option<Arc<Queues>>,
}

impl Drop for VsvmModule {
    fn drop(&mut self) {
        // The devices first: their data goes with them, and their memory, unless a VM of a job
        // still running holds it.
        self.devices.clear();
        let Some(queues) = self.queues.take() else {
            return;
        };
        // The VMs left are held by the engine's work: they go with it, and with the last one the
        // device memory, whose VRAM frees run when the queues are destroyed. Jobs raise faults:
        // they are drained first.
        queues.jobs.drain();
        queues.faults.drain();
        if Arc::into_unique_or_drop(queues).is_none() {
            pr_err!("vsvm: work queues still in use after the last VM\n");
        }
    }
}

impl Module for VsvmModule {
    fn init(_module: &'static ThisModule) -> Result<Self> {
        let count = usize::try_from(*module_parameters::devices.value())?;
        if count == 0 || count > DEVICE_NAMES.len() {
            return Err(EINVAL);
        }
        let debugfs = debugfs::Dir::new(c"vsvm");
        let queues = Queues::new()?;
        let mut devices = KVec::with_capacity(count, GFP_KERNEL)?;
        // The memories first, as any device's VMs may span them all.
        let mut memories = KVec::with_capacity(count, GFP_KERNEL)?;
        let mut dirs = KVec::with_capacity(count, GFP_KERNEL)?;
        // The interconnect groups, by their digit in `p2p_groups`.
        let mut groups: [Option<Arc<Group>>; 16] = Default::default();
        let digits = *module_parameters::p2p_groups.value();
        for (i, name) in DEVICE_NAMES[..count].iter().enumerate() {
            // CAST: A hex digit.
            let digit = ((digits >> (4 * i)) & 0xf) as usize;
            let group = match &groups[digit] {
                Some(group) if digit != 0 => group.clone(),
                _ => Group::new(count)?,
            };
            groups[digit] = Some(group.clone());
            let dir = debugfs.subdir(name);
            memories.push(new_vram(&dir, group, &queues)?, GFP_KERNEL)?;
            dirs.push(dir, GFP_KERNEL)?;
        }
        let memories = Arc::new(memories, GFP_KERNEL)?;
        for (i, (name, dir)) in DEVICE_NAMES.iter().zip(dirs.drain_all()).enumerate() {
            let faux = faux::Registration::new(name, None)?;
            let data = VsvmData::new(dir, i, &memories, &queues)?;
            let drm = drm::UnregisteredDevice::<VsvmDriver>::new(faux.as_ref(), data)?;
            drm::Registration::new_foreign_owned(drm, faux.bound(), 0)?;
            devices.push(faux, GFP_KERNEL)?;
        }
        Ok(Self {
            devices,
            _debugfs: debugfs,
            queues: Some(queues),
        })
    }
}
