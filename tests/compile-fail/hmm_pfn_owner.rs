// SPDX-License-Identifier: GPL-2.0
//! expect: E0133
//!
//! A pfn is a plain value that may be stale: reading the owner of its device-private page reads
//! the page's pagemap, so it takes `unsafe` (or the `ValidPages` proof) and safe code cannot.

use kernel::{
    mm::hmm::HmmPfn,
    prelude::*, //
};

module! {
    type: CompileFail,
    name: "compile_fail",
    authors: ["The vsvm authors"],
    description: "Must not compile",
    license: "GPL",
}

struct CompileFail;

impl kernel::Module for CompileFail {
    fn init(_module: &'static ThisModule) -> Result<Self> {
        let _ = HmmPfn::default().device_private_owner();
        Ok(CompileFail)
    }
}
