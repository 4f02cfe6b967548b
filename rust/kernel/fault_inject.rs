// SPDX-License-Identifier: GPL-2.0

//! Fault injection: failures on demand, for tests.
//!
//! A [`FaultAttr`] tells whether an operation is to fail ([`FaultAttr::should_fail`]), by the
//! settings of the kernel's fault-injection framework: a probability, an interval, how many times
//! and after how much "space". Nothing fails until it is set up, from a string
//! ([`FaultAttr::setup`], as the `fail*=` boot options are) or by root through a directory of
//! debugfs knobs ([`Dir::fault_attr`](crate::debugfs::Dir::fault_attr)). Without
//! `CONFIG_FAULT_INJECTION` nothing ever fails and setting up fails with [`ENODEV`].
//!
//! See Documentation/fault-injection/fault-injection.rst.
//!
//! C header: [`include/linux/fault-inject.h`](srctree/include/linux/fault-inject.h)

use crate::{
    prelude::*,
    types::Opaque, //
};

/// The settings and state of one kind of injected failure (`struct fault_attr`).
///
/// # Examples
///
/// ```
/// use kernel::{
///     fault_inject::FaultAttr,
///     prelude::*, //
/// };
///
/// /// A buffer whose allocation can be made to fail.
/// fn alloc(fail: &FaultAttr, len: usize) -> Result<KVec<u8>> {
///     if fail.should_fail() {
///         return Err(ENOMEM);
///     }
///     Ok(KVec::with_capacity(len, GFP_KERNEL)?)
/// }
///
/// let fail = KBox::pin_init(FaultAttr::new(), GFP_KERNEL)?;
/// assert!(alloc(&fail, 8).is_ok());
/// # if cfg!(CONFIG_FAULT_INJECTION) {
/// // Every time (interval 1, probability 100%), no space, twice.
/// fail.setup(c"1,100,0,2")?;
/// assert_eq!(alloc(&fail, 8).err(), Some(ENOMEM));
/// assert_eq!(alloc(&fail, 8).err(), Some(ENOMEM));
/// assert!(alloc(&fail, 8).is_ok());
/// # }
/// # Ok::<(), Error>(())
/// ```
///
/// # Invariants
///
/// `inner` is an initialized `struct fault_attr`. Its `dname` is null, or a reference to the
/// directory of its debugfs knobs that it holds.
#[pin_data(PinnedDrop)]
pub struct FaultAttr {
    #[pin]
    inner: Opaque<bindings::fault_attr>,
}

// SAFETY: The framework's functions take an attribute on any thread.
unsafe impl Send for FaultAttr {}

// SAFETY: The framework's functions take an attribute on several threads at once: the state they
// update is atomic, and the settings they read change only through `setup` and debugfs, which the
// framework lets race with them (a change takes effect at some point).
unsafe impl Sync for FaultAttr {}

impl FaultAttr {
    /// An attribute that fails nothing until it is set up (C's `FAULT_ATTR_INITIALIZER`).
    pub fn new() -> impl PinInit<Self> {
        pin_init!(Self {
            // INVARIANT: `fault_attr_init` initializes the whole attribute.
            inner <- Opaque::ffi_init(|slot| {
                // SAFETY: `slot` is valid for writing a `struct fault_attr`.
                unsafe { bindings::fault_attr_init(slot) }
            }),
        })
    }

    /// Whether the operation at hand is to fail. Counts the operation, and the failure.
    #[inline]
    pub fn should_fail(&self) -> bool {
        #[cfg(CONFIG_FAULT_INJECTION)]
        {
            // SAFETY: `inner` is initialized (type invariant); the framework takes concurrent
            // calls.
            unsafe { bindings::should_fail(self.inner.get(), 1) }
        }
        #[cfg(not(CONFIG_FAULT_INJECTION))]
        false
    }

    /// Sets the attribute up from `spec`: `"<interval>,<probability>,<space>,<times>"`, as the
    /// `fail*=` boot options take it. `"1,100,0,2"` makes the next two operations fail;
    /// `"1,0,0,0"` stops failures.
    ///
    /// Fails with [`EINVAL`] if `spec` does not parse (the framework logs a warning), and with
    /// [`ENODEV`] without `CONFIG_FAULT_INJECTION`.
    pub fn setup(&self, spec: &CStr) -> Result {
        #[cfg(CONFIG_FAULT_INJECTION)]
        {
            // SAFETY: `inner` is initialized (type invariant); `setup_fault_attr` only reads the
            // string, and may race with `should_fail` as debugfs writes do.
            let parsed = unsafe {
                bindings::setup_fault_attr(self.inner.get(), spec.as_char_ptr().cast_mut())
            };
            if parsed == 0 {
                return Err(EINVAL);
            }
            Ok(())
        }
        #[cfg(not(CONFIG_FAULT_INJECTION))]
        {
            let _ = spec;
            Err(ENODEV)
        }
    }

    /// The attribute, for the debugfs knobs. `fault_create_debugfs_attr` stores a reference to
    /// their directory in it, which the attribute drops with itself.
    #[cfg(CONFIG_FAULT_INJECTION_DEBUG_FS)]
    pub(crate) fn as_raw(&self) -> *mut bindings::fault_attr {
        self.inner.get()
    }
}

#[pinned_drop]
impl PinnedDrop for FaultAttr {
    fn drop(self: Pin<&mut Self>) {
        // The knobs' directory is removed by now (`Dir::fault_attr` drops it first); the reference
        // the attribute holds for its messages goes with it.
        #[cfg(CONFIG_FAULT_INJECTION_DEBUG_FS)]
        // SAFETY: `inner` is initialized, and `dname` is null or a reference the attribute holds
        // (type invariants); nothing uses the attribute any more.
        unsafe {
            bindings::dput((*self.inner.get()).dname)
        };
    }
}
