// SPDX-License-Identifier: GPL-2.0

//! Owners of device memory.
//!
//! Device-private pages, HMM, device migration and mmu notifier ranges name the device (or the
//! group of devices sharing memory) that owns device pages by an opaque pointer that the kernel
//! only ever compares. [`DeviceOwner`] is that pointer.

use crate::prelude::*;
use core::ptr::NonNull;

/// The owner of device-private pages: an address compared for identity, never dereferenced.
///
/// Two owners are equal if and only if they were made from the same address. Make it from an
/// object that outlives every page and mapping it tags, such as the driver's device data, so that
/// its address is not reused for another owner meanwhile.
///
/// # Examples
///
/// ```
/// use kernel::mm::DeviceOwner;
///
/// struct Gpu {
///     id: u32,
/// }
///
/// let (a, b) = (Gpu { id: 0 }, Gpu { id: 1 });
/// assert!(DeviceOwner::from_ref(&a) == DeviceOwner::from_ref(&a));
/// assert!(DeviceOwner::from_ref(&a) != DeviceOwner::from_ref(&b));
/// # let _ = (a.id, b.id);
/// ```
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct DeviceOwner(NonNull<c_void>);

// SAFETY: The pointer is never dereferenced, only compared.
unsafe impl Send for DeviceOwner {}

// SAFETY: The pointer is never dereferenced, only compared.
unsafe impl Sync for DeviceOwner {}

impl DeviceOwner {
    /// Makes the owner identified by the address of `owner`.
    #[inline]
    pub fn from_ref<T>(owner: &T) -> Self {
        Self(NonNull::from(owner).cast())
    }

    /// Makes the owner from the pointer the C API gives.
    #[inline]
    pub(crate) fn from_raw(owner: NonNull<c_void>) -> Self {
        Self(owner)
    }

    /// Returns the owner as the pointer the C API takes.
    #[inline]
    pub fn as_ptr(self) -> *mut c_void {
        self.0.as_ptr()
    }
}
