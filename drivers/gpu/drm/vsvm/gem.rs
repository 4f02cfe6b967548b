// SPDX-License-Identifier: GPL-2.0

//! GEM objects: the DRM core wants a type for them; vsvm allocates none, as its GPU works on
//! process memory.

use kernel::{
    drm::{
        gem,
        DeviceContext, //
    },
    prelude::*,
};

use crate::driver::{
    VsvmDevice,
    VsvmDriver, //
};

/// The driver data of a GEM object.
#[pin_data]
pub(crate) struct VsvmObject {}

impl gem::DriverObject for VsvmObject {
    type Driver = VsvmDriver;
    type Args = ();

    fn new<Ctx: DeviceContext>(
        _dev: &VsvmDevice<Ctx>,
        _size: usize,
        _args: Self::Args,
    ) -> impl PinInit<Self, Error> {
        try_pin_init!(VsvmObject {})
    }
}
