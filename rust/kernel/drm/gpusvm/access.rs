// SPDX-License-Identifier: GPL-2.0

//! How the copy operations of a device reach system memory.

use super::{
    DeviceMemory,
    Driver, //
};
use crate::{
    device::{
        Bound,
        Device, //
    },
    devres::Devres,
    dma::{
        mapping::PageMapping,
        DataDirection,
        DmaAddress, //
    },
    new_rwsem,
    page::{
        BorrowedPage,
        Page,
        PAGE_SIZE, //
    },
    prelude::*,
    sync::{
        aref::ARef,
        Arc,
        RwSemaphore, //
    },
};
use core::cell::Cell;

/// The system page a copy to device memory of driver `T` reads: a [`DmaAddress`] with
/// [`DmaAccess`], a [`BorrowedPage`] with [`CpuAccess`].
pub type SystemPage<'a, T> = <<T as Driver>::Access as SystemAccess>::Page<'a>;

/// The new system page a copy to system memory of driver `T` fills: a [`DmaAddress`] with
/// [`DmaAccess`], a [`NewPage`] with [`CpuAccess`].
pub type NewSystemPage<'a, T> = <<T as Driver>::Access as SystemAccess>::NewPage<'a>;

/// How the copy operations of a [`Driver`] reach system memory: [`DmaAccess`] for a copy engine,
/// [`CpuAccess`] for a device whose copies the CPU does.
///
/// This trait is sealed: the layer implements it for these two only.
pub trait SystemAccess: Send + Sync + Sized + private::Sealed {
    /// What a copy to device memory gets for each system page it reads.
    type Page<'a>;
    /// What a copy to system memory gets for each new system page it fills.
    type NewPage<'a>;
}

pub(super) mod private {
    use super::*;

    /// The copies themselves, which only the layer calls.
    pub trait Sealed {
        /// Copies system pages `src` (a hole for `None`) to device pages `dst`.
        fn to_vram<T: Driver<Access = Self>>(
            &self,
            mem: &DeviceMemory<T>,
            dst: &[usize],
            src: &[Option<BorrowedPage<'_>>],
        ) -> Result;

        /// Copies device pages `src` to new system pages `dst`, which come from the allocator
        /// as they are (not zeroed): when it returns `Ok`, every page of `dst` is written whole.
        fn to_sram<T: Driver<Access = Self>>(
            &self,
            mem: &DeviceMemory<T>,
            src: &[usize],
            dst: KVec<BorrowedPage<'_>>,
        ) -> Result;
    }
}

/// The copy operations get the system pages themselves, for a device whose copies the CPU does
/// (a simulated device, a test double).
///
/// A device that reaches system memory by DMA uses [`DmaAccess`] instead: a page written by the
/// CPU while it is mapped for the device may be overwritten by the unmap (from a bounce buffer).
pub struct CpuAccess;

impl SystemAccess for CpuAccess {
    type Page<'a> = BorrowedPage<'a>;
    type NewPage<'a> = NewPage<'a>;
}

/// A new system page that a copy by the CPU ([`CpuAccess`]) fills whole, with
/// [`NewPage::copy_from`].
///
/// The page comes from the allocator as it is: zeroing it first would write it twice. The layer
/// zeroes the pages a copy did not fill, so no stale kernel data reaches a process. The page
/// itself is out of reach: nothing else can write part of it.
pub struct NewPage<'a> {
    page: BorrowedPage<'a>,
    filled: Cell<bool>,
}

impl NewPage<'_> {
    /// Fills the page with a copy of `src`.
    ///
    /// # Safety
    ///
    /// No one writes `src` meanwhile.
    pub unsafe fn copy_from(&self, src: &Page) {
        // SAFETY: The page is new and reached only through `self` until its migration installs
        // it, and the caller guarantees that `src` is not written; `src` is not the page itself,
        // which no one but `self` can name.
        unsafe { self.page.copy_from(src) };
        self.filled.set(true);
    }
}

impl private::Sealed for CpuAccess {
    fn to_vram<T: Driver<Access = Self>>(
        &self,
        mem: &DeviceMemory<T>,
        dst: &[usize],
        src: &[Option<BorrowedPage<'_>>],
    ) -> Result {
        T::copy_to_vram(mem, dst, src)
    }

    fn to_sram<T: Driver<Access = Self>>(
        &self,
        mem: &DeviceMemory<T>,
        src: &[usize],
        dst: KVec<BorrowedPage<'_>>,
    ) -> Result {
        let mut pages = KVec::with_capacity(dst.len(), GFP_KERNEL)?;
        for page in dst {
            pages
                .push_within_capacity(NewPage {
                    page,
                    filled: Cell::new(false),
                })
                .map_err(|_| ENOMEM)?;
        }
        T::copy_to_sram(mem, src, &pages)?;
        for new in pages.iter().filter(|p| !p.filled.get()) {
            // SAFETY: The page is new and reached only through `new`.
            unsafe { new.page.fill_zero_raw(0, PAGE_SIZE)? };
        }
        Ok(())
    }
}

/// The binding of a DMA device, as the copies see it.
///
/// # Invariants
///
/// `dev` is bound while `bound` holds `true`.
#[pin_data]
struct Binding {
    dev: ARef<Device>,
    #[pin]
    bound: RwSemaphore<bool>,
}

/// Ends a [`Binding`] when its device unbinds, once no copy runs.
struct Unbind(Arc<Binding>);

impl Drop for Unbind {
    fn drop(&mut self) {
        // INVARIANT: Dropped when the device unbinds at the latest (`Devres`); the write lock
        // waits for the copies that map pages for the device.
        *self.0.bound.write() = false;
    }
}

/// The layer maps system pages for DMA by a device and gives the copy operations their device
/// addresses: for a device with a copy engine. The mappings last as long as one call of a copy
/// operation.
///
/// The device is the one the [`DeviceMemory`] is registered for. Once it unbinds, copies fail
/// with [`ENODEV`] (unbinding waits for those under way): drop the [`DeviceMemory`] before, while
/// its pages can still go back to system memory.
///
/// # Examples
///
/// ```
/// use kernel::{
///     device::{
///         Bound,
///         Device, //
///     },
///     drm::gpusvm::DmaAccess,
///     prelude::*,
/// };
///
/// fn access(dev: &Device<Bound>) -> Result<DmaAccess> {
///     // SAFETY: This driver sets the DMA mask of `dev` at probe, before anything else.
///     unsafe { DmaAccess::new(dev) }
/// }
/// ```
pub struct DmaAccess {
    binding: Arc<Binding>,
    _unbind: Devres<Unbind>,
}

impl DmaAccess {
    /// DMA access for `dev`.
    ///
    /// # Safety
    ///
    /// The DMA mask of `dev` is not changed while the access lives.
    pub unsafe fn new(dev: &Device<Bound>) -> Result<Self> {
        let binding = Arc::pin_init(
            pin_init!(Binding {
                dev: dev.into(),
                bound <- new_rwsem!(true, "gpusvm_dma_binding"),
            }),
            GFP_KERNEL,
        )?;
        let unbind = Devres::new(dev, Unbind(binding.clone()))?;
        Ok(Self {
            binding,
            _unbind: unbind,
        })
    }

    /// Calls `copy` with the device, bound until it returns.
    fn with_bound(&self, copy: impl FnOnce(&Device<Bound>) -> Result) -> Result {
        let bound = self.binding.bound.read();
        if !*bound {
            return Err(ENODEV);
        }
        // SAFETY: `bound` is `true`, and its lock is held until `copy` returns: the device stays
        // bound meanwhile (type invariants of `Binding`).
        copy(unsafe { self.binding.dev.as_bound() })
    }
}

/// Maps `page` for DMA by `dev` in direction `dir` into `mappings`; returns its address.
///
/// # Safety
///
/// `page` stays allocated, and `dev` bound, until `mappings` is dropped; the DMA mask of `dev` is
/// not changed meanwhile.
unsafe fn map(
    dev: &Device<Bound>,
    page: &BorrowedPage<'_>,
    dir: DataDirection,
    mappings: &mut KVec<PageMapping>,
) -> Result<DmaAddress> {
    // SAFETY: The safety requirements.
    let mapping = unsafe { PageMapping::new(dev, page, 0, PAGE_SIZE, dir)? };
    let addr = mapping.dma_address();
    mappings.push(mapping, GFP_KERNEL)?;
    Ok(addr)
}

impl SystemAccess for DmaAccess {
    type Page<'a> = DmaAddress;
    type NewPage<'a> = DmaAddress;
}

// The mappings are dropped (and, with bounce buffers, copied back) when the copy returns, before
// the pages go to the migration.
impl private::Sealed for DmaAccess {
    fn to_vram<T: Driver<Access = Self>>(
        &self,
        mem: &DeviceMemory<T>,
        dst: &[usize],
        src: &[Option<BorrowedPage<'_>>],
    ) -> Result {
        self.with_bound(|dev| {
            let mut mappings = KVec::with_capacity(src.len(), GFP_KERNEL)?;
            let mut addrs = KVec::with_capacity(src.len(), GFP_KERNEL)?;
            for page in src {
                let Some(page) = page else {
                    addrs.push(None, GFP_KERNEL)?;
                    continue;
                };
                // SAFETY: The page is borrowed, and the device bound (`with_bound`), until
                // `mappings` is dropped on return; the DMA mask does not change (safety
                // requirements of `DmaAccess::new`).
                let addr = unsafe { map(dev, page, DataDirection::ToDevice, &mut mappings)? };
                addrs.push(Some(addr), GFP_KERNEL)?;
            }
            T::copy_to_vram(mem, dst, &addrs)
        })
    }

    fn to_sram<T: Driver<Access = Self>>(
        &self,
        mem: &DeviceMemory<T>,
        src: &[usize],
        dst: KVec<BorrowedPage<'_>>,
    ) -> Result {
        // What the device writes cannot be told: zeroed first, so that no stale kernel data
        // reaches a process whatever the copy leaves.
        for page in dst.iter() {
            // SAFETY: The page is new and reached only through `dst` until its migration
            // installs it.
            unsafe { page.fill_zero_raw(0, PAGE_SIZE)? };
        }
        self.with_bound(|dev| {
            let mut mappings = KVec::with_capacity(dst.len(), GFP_KERNEL)?;
            let mut addrs = KVec::with_capacity(dst.len(), GFP_KERNEL)?;
            for page in dst.iter() {
                // SAFETY: As in `to_vram`.
                let addr = unsafe { map(dev, page, DataDirection::FromDevice, &mut mappings)? };
                addrs.push(addr, GFP_KERNEL)?;
            }
            T::copy_to_sram(mem, src, &addrs)
        })
    }
}
