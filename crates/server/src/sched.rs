//! Thread scheduling: request threads first.
//!
//! The server's two sides share the CPU: request threads (the API's runtime) and the
//! lifecycle's threads (checks, issuance, deployment). Requests are short and someone
//! waits for each; lifecycle work is long and nobody waits for a single step. So a
//! request thread that wakes up should run at once, even when lifecycle work fills the
//! CPU, and lifecycle work should still make progress under a full request load.
//!
//! Two levers, both per thread on Linux:
//! - Background threads (the lifecycle's, the store's checkpointer) run at nice 10: a
//!   smaller share of the CPU than requests under load, but a share.
//! - Request threads ask for a short time slice (`sched_runtime` of `sched_setattr`,
//!   honoured for normal threads since Linux 6.12). The scheduler (EEVDF) otherwise
//!   lets a running thread finish its slice (1.4 ms or more) before a thread that just
//!   woke up, whatever their nice values; a thread with a shorter slice than the
//!   running one preempts it on wake-up.
//!
//! Between the two, the lifecycle's store thread runs at normal priority with the
//! default slice ([`normal_priority`]): above the lifecycle's other threads, which wait
//! for it (and request writes wait for the store's writer connection it holds), but
//! behind a request thread that wakes up while it works through a batch. With the
//! short slice it had before, a request that arrived during one of its batches (1-5 ms
//! of SQLite work) waited for the batch about as often as not: at equal slices the
//! scheduler has no reason to prefer the request.
//!
//! The project's only `unsafe` code is here: one system call that no safe wrapper among
//! the workspace's dependencies offers.
#![allow(unsafe_code)]

/// The time slice asked for latency-sensitive threads (the kernel's minimum).
const SHORT_SLICE_NANOS: u64 = 100_000;

/// The nice value of the lifecycle's threads. Not the lowest (19): under a request load
/// that takes the whole CPU, nice 10 still leaves the lifecycle about a tenth of it,
/// where 19 left it so little that checks stopped.
const LIFECYCLE_NICE: i32 = 10;

/// Why a thread's scheduling could not be changed.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct SchedError(String);

/// Gives the calling thread normal priority and a short time slice, so it preempts
/// longer-running threads when it wakes up: for request threads (the API runtime's
/// `on_thread_start`) and the lifecycle's store thread. A kernel before 6.12 ignores the
/// slice (the thread still gets normal priority).
pub fn prefer_latency() -> Result<(), SchedError> {
    set_own_attr(0, SHORT_SLICE_NANOS)
}

/// Gives the calling thread normal priority and the default time slice: for the
/// lifecycle's store thread (see the module's text), which would otherwise inherit the
/// short slice of the request thread that starts the lifecycle.
pub fn normal_priority() -> Result<(), SchedError> {
    set_own_attr(0, 0)
}

/// Lowers the calling thread to the background priority (nice 10, the default slice):
/// for every lifecycle thread but the store thread, and the store's checkpointer.
/// Where this is refused (a sandbox) or not supported, the thread runs at normal
/// priority and this says so once.
pub fn lower_priority() {
    static WARNED: std::sync::Once = std::sync::Once::new();
    if let Err(why) = set_own_attr(LIFECYCLE_NICE, 0) {
        WARNED.call_once(|| {
            tracing::warn!(
                reason = %why,
                "background threads run at normal priority: requests may wait behind lifecycle work"
            );
        });
    }
}

/// `struct sched_attr` of the kernel's UAPI, first version (48 bytes).
#[cfg(target_os = "linux")]
#[repr(C)]
struct SchedAttr {
    size: u32,
    sched_policy: u32,
    sched_flags: u64,
    sched_nice: i32,
    sched_priority: u32,
    sched_runtime: u64,
    sched_deadline: u64,
    sched_period: u64,
}

/// Sets the calling thread's nice value and time slice (0: the kernel's default) in
/// one call; threads inherit both from the thread that starts them, so each kind of
/// thread sets both.
#[cfg(target_os = "linux")]
fn set_own_attr(nice: i32, slice_nanos: u64) -> Result<(), SchedError> {
    let attr = SchedAttr {
        size: std::mem::size_of::<SchedAttr>() as u32,
        sched_policy: libc::SCHED_OTHER as u32,
        sched_flags: 0,
        sched_nice: nice,
        sched_priority: 0,
        sched_runtime: slice_nanos,
        sched_deadline: 0,
        sched_period: 0,
    };
    // SAFETY: pid 0 is the calling thread; `attr` is a valid `sched_attr` of the size
    // it states and outlives the call, which only reads it.
    let rc = unsafe { libc::syscall(libc::SYS_sched_setattr, 0, &attr as *const SchedAttr, 0) };
    if rc == 0 {
        Ok(())
    } else {
        Err(SchedError(format!(
            "sched_setattr: {}",
            std::io::Error::last_os_error()
        )))
    }
}

#[cfg(not(target_os = "linux"))]
fn set_own_attr(_nice: i32, _slice_nanos: u64) -> Result<(), SchedError> {
    // Elsewhere the nice value belongs to the whole process, requests included.
    Err(SchedError(
        "per-thread priorities are only supported on Linux".into(),
    ))
}

#[cfg(all(test, target_os = "linux"))]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    /// The thread's (nice, slice in ns) as the kernel reports them.
    fn own_sched() -> (i32, u64) {
        let text = std::fs::read_to_string("/proc/thread-self/sched").unwrap();
        let field = |name: &str| -> String {
            text.lines()
                .find(|l| l.starts_with(name))
                .and_then(|l| l.split(':').nth(1))
                .map(|v| v.trim().to_owned())
                .unwrap_or_default()
        };
        let prio: i32 = field("prio").parse().unwrap();
        let slice: u64 = field("se.slice").parse().unwrap_or(0);
        (prio - 120, slice)
    }

    fn kernel_at_least(major: u32, minor: u32) -> bool {
        let release = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap();
        let mut parts = release
            .trim()
            .split(['.', '-'])
            .map(|p| p.parse::<u32>().unwrap_or(0));
        let found = (parts.next().unwrap_or(0), parts.next().unwrap_or(0));
        found >= (major, minor)
    }

    #[test]
    fn lifecycle_threads_are_lowered_and_latency_threads_get_a_short_slice() {
        std::thread::spawn(|| {
            lower_priority();
            assert_eq!(own_sched().0, LIFECYCLE_NICE);
        })
        .join()
        .unwrap();
        std::thread::spawn(|| {
            prefer_latency().unwrap();
            normal_priority().unwrap();
            let (nice, slice) = own_sched();
            assert_eq!(nice, 0);
            if kernel_at_least(6, 12) {
                assert_ne!(slice, SHORT_SLICE_NANOS, "the default slice is back");
            }
            prefer_latency().unwrap();
            let (nice, slice) = own_sched();
            assert_eq!(nice, 0);
            // Kernels before 6.12 ignore the slice asked for.
            if kernel_at_least(6, 12) {
                assert_eq!(slice, SHORT_SLICE_NANOS);
            }
        })
        .join()
        .unwrap();
    }
}
