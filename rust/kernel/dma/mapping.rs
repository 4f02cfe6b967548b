// SPDX-License-Identifier: GPL-2.0

//! Streaming DMA mappings of single pages.
//!
//! For memory a driver does not allocate itself, such as the pages of a process that a device
//! mirrors: each page is mapped for the device when the device page table points at it, and
//! unmapped before the page can go away.
//!
//! C header: [`include/linux/dma-mapping.h`](srctree/include/linux/dma-mapping.h)

use crate::{
    bindings,
    device::{
        Bound,
        Device, //
    },
    dma::{
        DataDirection,
        DmaAddress, //
    },
    page::{
        Page,
        PAGE_SIZE, //
    },
    prelude::*,
    sync::aref::ARef,
};

/// A streaming DMA mapping of (part of) one page for a device, unmapped when dropped.
///
/// # Invariants
///
/// `addr` is a live mapping, made by `dma_map_page_attrs` for `dev` with `size` and `dir`; `dev`
/// stays bound until the mapping is dropped.
///
/// # Examples
///
/// ```
/// use kernel::{
///     device::{
///         Bound,
///         Device, //
///     },
///     dma::{
///         mapping::PageMapping,
///         DataDirection, //
///     },
///     page::{
///         Page,
///         PAGE_SIZE, //
///     },
/// };
///
/// fn map(dev: &Device<Bound>, page: &Page) -> Result<PageMapping> {
///     // SAFETY: `page` is owned by the caller, who drops the mapping first, and before `dev`
///     // unbinds.
///     unsafe { PageMapping::new(dev, page, 0, PAGE_SIZE, DataDirection::Bidirectional) }
/// }
/// ```
pub struct PageMapping {
    dev: ARef<Device>,
    addr: DmaAddress,
    size: usize,
    dir: DataDirection,
}

impl PageMapping {
    /// Maps `size` bytes at `offset` of `page` for DMA by `dev` in direction `dir`.
    ///
    /// Fails with [`EINVAL`] if the bytes are not inside the page or `size` is zero, and with
    /// [`ENOMEM`] if the mapping fails (e.g. the page is out of the device's DMA mask and there
    /// is no bounce buffer).
    ///
    /// # Safety
    ///
    /// `page` stays allocated until the mapping is dropped, the mapping is dropped before `dev`
    /// is unbound (e.g. it is held in a [`Devres`](crate::devres::Devres)), and the device's DMA
    /// mask is not changed meanwhile.
    pub unsafe fn new(
        dev: &Device<Bound>,
        page: &Page,
        offset: usize,
        size: usize,
        dir: DataDirection,
    ) -> Result<Self> {
        if size == 0 || offset.checked_add(size).is_none_or(|end| end > PAGE_SIZE) {
            return Err(EINVAL);
        }
        // CAST: `DataDirection` is `#[repr(u32)]` with the values of `enum dma_data_direction`.
        let c_dir = dir as bindings::dma_data_direction;
        // SAFETY: `dev` is a bound device; `page` is valid (safety requirements) and the bytes
        // are inside it.
        let addr = unsafe {
            bindings::dma_map_page_attrs(dev.as_raw(), page.as_ptr(), offset, size, c_dir, 0)
        };
        // SAFETY: `addr` was just returned for `dev`.
        if unsafe { bindings::dma_mapping_error(dev.as_raw(), addr) } != 0 {
            return Err(ENOMEM);
        }
        // INVARIANT: The mapping succeeded.
        Ok(Self {
            dev: dev.into(),
            addr,
            size,
            dir,
        })
    }

    /// The address the device uses.
    #[inline]
    pub fn dma_address(&self) -> DmaAddress {
        self.addr
    }

    /// The number of bytes mapped.
    #[inline]
    pub fn size(&self) -> usize {
        self.size
    }
}

impl Drop for PageMapping {
    fn drop(&mut self) {
        // CAST: As in `new`.
        let c_dir = self.dir as bindings::dma_data_direction;
        // SAFETY: By the type invariants `addr` is a live mapping made with these parameters.
        unsafe {
            bindings::dma_unmap_page_attrs(self.dev.as_raw(), self.addr, self.size, c_dir, 0)
        };
    }
}

#[cfg(CONFIG_RUST_DMA_MAPPING_KUNIT_TEST)]
#[macros::kunit_tests(rust_dma_page_mapping)]
mod tests {
    use super::*;
    use crate::{
        c_str,
        dma::DmaMask,
        faux, //
    };

    fn faux_device() -> Result<faux::Registration> {
        let reg = faux::Registration::new(c_str!("rust-dma-mapping-test"), None)?;
        // SAFETY: Nothing maps or allocates DMA memory for the device yet.
        unsafe { reg.dma_coerce_mask_and_coherent(DmaMask::new::<64>())? };
        Ok(reg)
    }

    #[test]
    fn maps_and_unmaps_pages() -> Result {
        let reg = faux_device()?;
        let pages = [Page::alloc_page(GFP_KERNEL)?, Page::alloc_page(GFP_KERNEL)?];
        // SAFETY: The pages outlive the mappings, which go before the device.
        let whole = unsafe {
            PageMapping::new(
                reg.bound(),
                &pages[0],
                0,
                PAGE_SIZE,
                DataDirection::Bidirectional,
            )?
        };
        // SAFETY: As above.
        let part =
            unsafe { PageMapping::new(reg.bound(), &pages[1], 256, 512, DataDirection::ToDevice)? };
        assert_eq!(whole.size(), PAGE_SIZE);
        assert_eq!(part.size(), 512);
        // What address the device sees depends on the platform (an IOMMU, bounce buffers with
        // `swiotlb=force`), but two live mappings never share one.
        let (a, b) = (whole.dma_address(), part.dma_address());
        assert!(b + 512 <= a || a + PAGE_SIZE as DmaAddress <= b);
        Ok(())
    }

    #[test]
    fn rejects_bytes_outside_the_page() -> Result {
        let reg = faux_device()?;
        let page = Page::alloc_page(GFP_KERNEL)?;
        for (offset, size) in [(0, 0), (1, PAGE_SIZE), (PAGE_SIZE, 1), (usize::MAX, 2)] {
            // SAFETY: `page` outlives the mapping (none is made).
            let r = unsafe {
                PageMapping::new(reg.bound(), &page, offset, size, DataDirection::FromDevice)
            };
            assert!(r.is_err());
        }
        Ok(())
    }
}
