// SPDX-License-Identifier: GPL-2.0

//! Jobs: the operations the engine runs on a VM, in the caller's context or from a worker.

use kernel::{
    new_condvar, new_mutex,
    prelude::*,
    sync::{
        Arc,
        CondVar,
        CondVarTimeoutResult,
        Mutex, //
    },
    time::msecs_to_jiffies,
    transmute::{
        AsBytes,
        FromBytes, //
    },
    uapi,
};

use crate::file::USER_END;

/// An operation of a job, as userspace lays it out.
#[repr(transparent)]
pub(crate) struct Op(pub(crate) uapi::drm_vsvm_op);

// SAFETY: `drm_vsvm_op` is made of integers only, with no padding (the uapi header keeps it so):
// every byte pattern is a valid value, and every byte is initialised.
unsafe impl FromBytes for Op {}

// SAFETY: As above.
unsafe impl AsBytes for Op {}

impl Op {
    /// Checks the operation's fields, with [`EINVAL`] for anything malformed.
    pub(crate) fn validate(&self) -> Result {
        let op = &self.0;
        let in_space = |addr: u64| addr.checked_add(op.size).is_some_and(|end| end <= USER_END);
        if op.flags != 0 || op.size == 0 || !in_space(op.addr) || op.result != 0 {
            return Err(EINVAL);
        }
        let ok = match op.kind {
            uapi::drm_vsvm_op_kind_DRM_VSVM_OP_WRITE | uapi::drm_vsvm_op_kind_DRM_VSVM_OP_READ => {
                op.src == 0
            }
            uapi::drm_vsvm_op_kind_DRM_VSVM_OP_ATOMIC_ADD => {
                op.src == 0 && op.size == 8 && op.addr % 8 == 0
            }
            uapi::drm_vsvm_op_kind_DRM_VSVM_OP_COPY => in_space(op.src),
            _ => false,
        };
        if ok {
            Ok(())
        } else {
            Err(EINVAL)
        }
    }
}

/// What a job did: its status and how many operations completed.
#[derive(Clone, Copy)]
pub(crate) struct Outcome {
    pub(crate) status: i32,
    pub(crate) ops_done: u32,
}

/// The state of an asynchronous job.
struct State {
    ops: KVec<Op>,
    outcome: Option<Outcome>,
}

/// An asynchronous job: queued to the engine, waited for with [`Job::wait`].
#[pin_data]
pub(crate) struct Job {
    id: u64,
    /// Where the results go, in the submitter's address space.
    user_ops: u64,
    #[pin]
    state: Mutex<State>,
    #[pin]
    ended: CondVar,
}

impl Job {
    pub(crate) fn new(id: u64, user_ops: u64, ops: KVec<Op>) -> Result<Arc<Self>> {
        Arc::pin_init(
            pin_init!(Self {
                id,
                user_ops,
                state <- new_mutex!(State { ops, outcome: None }, "vsvm_job"),
                ended <- new_condvar!("vsvm_job_ended"),
            }),
            GFP_KERNEL,
        )
    }

    pub(crate) fn id(&self) -> u64 {
        self.id
    }

    pub(crate) fn user_ops(&self) -> u64 {
        self.user_ops
    }

    /// Runs the job with `run`, which gets its operations, then wakes its waiters.
    pub(crate) fn run(&self, run: impl FnOnce(&mut [Op]) -> Outcome) {
        let mut ops = core::mem::take(&mut self.state.lock().ops);
        let outcome = run(&mut ops);
        let mut state = self.state.lock();
        state.ops = ops;
        state.outcome = Some(outcome);
        self.ended.notify_all();
    }

    /// Waits for the job to end, without a limit and without being interrupted (the caller
    /// runs the job synchronously), and returns its outcome and operations.
    pub(crate) fn wait_done(&self) -> (Outcome, KVec<Op>) {
        let mut state = self.state.lock();
        loop {
            if let Some(outcome) = state.outcome {
                return (outcome, core::mem::take(&mut state.ops));
            }
            self.ended.wait(&mut state);
        }
    }

    /// Waits for the job to end, for `timeout_ns` nanoseconds (negative: without limit), and
    /// returns its outcome and operations. Fails with [`ETIMEDOUT`] or [`ERESTARTSYS`].
    pub(crate) fn wait(&self, timeout_ns: i64) -> Result<(Outcome, KVec<Op>)> {
        let mut state = self.state.lock();
        // CAST: Milliseconds of a non-negative `i64` nanoseconds fit in `u32` after the `min`.
        let mut left = (timeout_ns >= 0)
            .then(|| msecs_to_jiffies((timeout_ns / 1_000_000).min(u32::MAX.into()) as u32));
        loop {
            if let Some(outcome) = state.outcome {
                return Ok((outcome, core::mem::take(&mut state.ops)));
            }
            match left {
                None => {
                    if self.ended.wait_interruptible(&mut state) {
                        return Err(ERESTARTSYS);
                    }
                }
                Some(0) => return Err(ETIMEDOUT),
                Some(jiffies) => match self.ended.wait_interruptible_timeout(&mut state, jiffies) {
                    CondVarTimeoutResult::Timeout => left = Some(0),
                    CondVarTimeoutResult::Woken { jiffies } => left = Some(jiffies),
                    CondVarTimeoutResult::Signal { .. } => return Err(ERESTARTSYS),
                },
            }
        }
    }
}
