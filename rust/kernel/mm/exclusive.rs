// SPDX-License-Identifier: GPL-2.0

//! Device-exclusive access to system memory pages.
//!
//! A device that needs atomic access to a page of system memory it cannot do atomics on over its
//! bus takes the page exclusively: the CPU page table entry is replaced by a special entry, so a
//! CPU access faults and revokes the device's access first (the driver's mmu notifier sees an
//! invalidation of the page), then restores the mapping.
//!
//! C header: [`include/linux/rmap.h`](srctree/include/linux/rmap.h)

use crate::{
    bindings,
    error::from_err_ptr,
    mm::{
        DeviceOwner,
        MmapReadGuard, //
    },
    page::BorrowedPage,
    prelude::*,
};
use core::{
    marker::PhantomData,
    ptr::NonNull, //
};

/// A page made exclusive to a device by [`make_device_exclusive`], locked until dropped.
///
/// While it lives, the CPU cannot take the page back: program the device within an mmu notifier
/// read section, then drop it. From then on a CPU access revokes the device's access, which the
/// driver learns from its notifier.
///
/// # Invariants
///
/// `folio` is locked and referenced by this object, and `page` is the page of it mapped at the
/// address given to [`make_device_exclusive`].
pub struct ExclusivePage<'a> {
    page: NonNull<bindings::page>,
    folio: NonNull<bindings::folio>,
    _mmap: PhantomData<&'a MmapReadGuard<'a>>,
}

/// Makes the anonymous page at `addr` exclusive to the device `owner`.
///
/// The caller holds the mmap read lock (`mmap`). The page is faulted in writable first; the VMA
/// must be anonymous, writable and not hugetlb. The invalidation this makes (event
/// [`Exclusive`](crate::mm::mmu_notifier::Event::Exclusive)) carries `owner`, so the driver can
/// tell it apart from a revocation.
///
/// Fails with [`EBUSY`] if the page could not be made exclusive (e.g. it is pinned or under
/// migration: retry), [`EFAULT`] if there is no writable page at `addr` or it cannot be faulted
/// in, and `EOPNOTSUPP` for pages that cannot be exclusive (not anonymous, or hugetlb).
pub fn make_device_exclusive<'a>(
    mmap: &'a MmapReadGuard<'_>,
    addr: usize,
    owner: DeviceOwner,
) -> Result<ExclusivePage<'a>> {
    let mut folio = core::ptr::null_mut();
    // SAFETY: The mmap read lock of the address space is held by `mmap`; `folio` is valid for
    // writes.
    let page = from_err_ptr(unsafe {
        bindings::make_device_exclusive(mmap.mm.as_raw(), addr, owner.as_ptr(), &mut folio)
    })?;
    // INVARIANT: On success the folio is returned locked and referenced, and `page` is its page
    // at `addr`.
    Ok(ExclusivePage {
        page: NonNull::new(page).ok_or(EFAULT)?,
        folio: NonNull::new(folio).ok_or(EFAULT)?,
        _mmap: PhantomData,
    })
}

impl ExclusivePage<'_> {
    /// The page frame number, for the device's page table.
    #[inline]
    pub fn pfn(&self) -> usize {
        // SAFETY: By the type invariants the page is valid.
        unsafe { bindings::page_to_pfn(self.page.as_ptr()) }
    }

    /// The page, e.g. to access its data from the CPU side of a simulated device.
    #[inline]
    pub fn page(&self) -> BorrowedPage<'_> {
        // SAFETY: By the type invariants the folio is referenced while `self` lives.
        unsafe { BorrowedPage::from_raw(self.page) }
    }
}

impl Drop for ExclusivePage<'_> {
    fn drop(&mut self) {
        // SAFETY: By the type invariants the folio is locked and referenced by us.
        unsafe {
            bindings::folio_unlock(self.folio.as_ptr());
            bindings::folio_put(self.folio.as_ptr());
        }
    }
}

#[cfg(CONFIG_RUST_MM_KUNIT_TEST)]
#[macros::kunit_tests(rust_mm_device_exclusive)]
mod tests {
    use super::*;
    use crate::mm::{
        mmu_notifier::Event,
        test_mm::{
            Recorder,
            Seen,
            UserMapping, //
        },
    };

    static OWNER: u8 = 0;

    fn ours(seen: &Seen) -> bool {
        seen.owner == Some(DeviceOwner::from_ref(&OWNER))
    }

    #[test]
    fn cpu_write_revokes_exclusive_access() -> Result {
        let map = UserMapping::new(2)?;
        map.write(0, &[5u8; 64])?;
        let n = Recorder::insert(&map, 0, 2)?;

        {
            let mmap = map.mm().mmap_read_lock();
            let ex = make_device_exclusive(&mmap, map.addr(0), DeviceOwner::from_ref(&OWNER))?;
            assert!(ex.pfn() != 0);
            let mut byte = [0u8];
            // SAFETY: `byte` is valid for a write of one byte.
            unsafe { ex.page().read_raw(byte.as_mut_ptr(), 10, 1)? };
            assert_eq!(byte[0], 5);
        }
        // Taking the page made an invalidation marked as ours.
        let last = n.last().ok_or(EINVAL)?;
        assert_eq!(last.event, Event::Exclusive);
        assert!(ours(&last));
        let before = n.calls();

        // The CPU writes: its access to the page is restored, revoking the device's, and the
        // notifier sees it as an invalidation that is not ours.
        map.write(0, &[6u8; 1])?;
        let log = n.log.lock();
        assert!(log.calls > before);
        assert!(log.seen[before..].iter().all(|seen| !ours(seen)));
        drop(log);
        let mut buf = [0u8; 2];
        map.read(0, &mut buf)?;
        assert_eq!(buf, [6, 5]);
        Ok(())
    }

    #[test]
    fn refuses_missing_page() -> Result {
        let map = UserMapping::new(2)?;
        map.unmap(1, 1)?;
        let mmap = map.mm().mmap_read_lock();
        assert!(make_device_exclusive(&mmap, map.addr(1), DeviceOwner::from_ref(&OWNER)).is_err());
        Ok(())
    }
}
