//! The C allocator that libtorch's CPU tensors come from (glibc's malloc on Linux), set for
//! training.
//!
//! A training step allocates and frees the same activations every step. With glibc's defaults,
//! whether that memory stays in the process depends on the history of the heap: when the freed top
//! of the heap exceeds the trim threshold it goes back to the kernel, and the next step faults
//! every page of it in again, zeroed. One release run of ResNet-32 here took 45,000 page faults a
//! second (15% of its time in the kernel) while its plain-32 twin took none. [`keep_freed_memory`]
//! fixes the two thresholds (`mallopt`): allocations up to 32 MiB come from the heap, and the main
//! heap (the training thread's) is never trimmed; other threads' heaps may still be unmapped when
//! wholly free. Larger allocations (an evaluation batch, an ImageNet activation) are mapped and
//! unmapped as before. Where memory comes from is not arithmetic: a 60-iteration bf16 ResNet-20 run
//! gave the same checkpoint bytes either way.
//!
//! `RESNET_REPRO_MALLOC=default` keeps glibc's defaults (to measure the difference, or where
//! memory must go back to the system between steps).

use std::sync::OnceLock;

/// The environment variable that turns [`keep_freed_memory`] off (`default`).
pub const ENV: &str = "RESNET_REPRO_MALLOC";

/// What [`keep_freed_memory`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MallocTuning {
    /// Thresholds fixed: freed memory stays in the process.
    KeepFreed,
    /// `RESNET_REPRO_MALLOC=default`: glibc's defaults.
    Defaults,
    /// Not glibc (musl, macOS) or glibc refused a setting: the allocator's defaults.
    Unsupported,
}

/// Keeps freed memory in the process for the next training step (see the module's notes).
/// Process-wide, done once; later calls return the first one's outcome.
pub fn keep_freed_memory() -> MallocTuning {
    static DONE: OnceLock<MallocTuning> = OnceLock::new();
    *DONE.get_or_init(|| {
        if std::env::var(ENV).is_ok_and(|v| v == "default") {
            return MallocTuning::Defaults;
        }
        set_thresholds()
    })
}

#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn set_thresholds() -> MallocTuning {
    // glibc's largest M_MMAP_THRESHOLD on 64-bit (DEFAULT_MMAP_THRESHOLD_MAX); a CIFAR
    // activation at batch 128 is 8 MiB. M_TRIM_THRESHOLD -1: never trim (mallopt(3)). Setting
    // either turns off glibc's dynamic thresholds, so both are set.
    const MMAP_THRESHOLD: libc::c_int = 32 << 20;
    // SAFETY: mallopt takes two ints and sets process-wide allocator parameters (under the main
    // arena's lock). It runs once, as a trainer is built; a thread allocating meanwhile reads the
    // word-sized settings without a lock and sees the old value or the new one, both valid.
    let ok = unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, MMAP_THRESHOLD) == 1
            && libc::mallopt(libc::M_TRIM_THRESHOLD, -1) == 1
    };
    if ok { MallocTuning::KeepFreed } else { MallocTuning::Unsupported }
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn set_thresholds() -> MallocTuning {
    MallocTuning::Unsupported
}
