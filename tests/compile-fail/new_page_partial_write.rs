// SPDX-License-Identifier: GPL-2.0
//! expect: E0599
//!
//! A copy to system memory gets new pages that are not zeroed: it can fill one only whole
//! (`NewPage::copy_from`), which the layer records, zeroing the others. Writing part of one, which
//! would leave the rest stale kernel data for the process, does not compile.

use kernel::{
    drm::gpusvm::NewPage,
    prelude::*, //
};

/// Writes the first bytes of a new page and leaves the rest as it was.
pub fn write_head(page: &NewPage<'_>) -> Result {
    let bytes = [0u8; 8];
    // SAFETY: The page is new, and `bytes` has 8 bytes.
    unsafe { page.write_raw(bytes.as_ptr(), 0, bytes.len()) }
}
