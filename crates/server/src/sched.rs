//! Thread scheduling: request threads first.
//!
//! The server's two sides share the CPU: request threads (the API's runtime) and the
//! lifecycle's threads (checks, issuance, deployment). Requests are short and someone
//! waits for each; lifecycle work is long and nobody waits for a single step. So a
//! request thread that wakes up should run at once, even when lifecycle work fills the
//! CPU, and lifecycle work should still make progress under a full request load.
//!
//! Three levers, all per thread on Linux. The first two:
//! - Background threads (the lifecycle's, the store's checkpointer, the webhook
//!   deliveries) run at nice 10: a smaller share of the CPU than requests under load,
//!   but a share.
//! - Request threads ask for a short time slice (`sched_runtime` of `sched_setattr`,
//!   honoured for normal threads since Linux 6.12). The scheduler (EEVDF) otherwise
//!   lets a running thread finish its slice (1.4 ms or more) before a thread that just
//!   woke up, whatever their nice values; a thread with a shorter slice than the
//!   running one preempts it on wake-up.
//!
//! Between the two, the lifecycle's store thread runs at normal priority with the
//! default slice ([`normal_priority`]): above the lifecycle's other threads, which wait
//! for it (and request writes wait for the store's writer connection it holds), but
//! behind a request thread that wakes up while it works through a batch. Not the short
//! slice: at equal slices the scheduler has no reason to prefer the request, which then
//! waits for a batch (1-5 ms of SQLite work) about as often as not.
//!
//! The third takes the CPU itself: on a machine with two CPUs or more, the
//! background threads (the lifecycle's, its store thread, the checkpointer and the
//! webhook deliveries) are kept
//! off the first CPU the process may use ([`LifecycleCpus::Auto`], configurable). The
//! scheduler wakes a request thread on an idle CPU when its own is busy, so requests
//! find that CPU free, whatever the lifecycle is doing: on one shared CPU the two
//! levers above still left a waking request behind a running lifecycle thread for up to
//! a scheduler tick (4 ms on a 250 Hz kernel) about once in a hundred requests. The
//! lifecycle gives up that CPU's share; requests still use every CPU.
//!
//! Where the machine runs other busy programs beside the server (a resolver, a CA of
//! one's own, batch jobs), the request threads can be kept on CPUs of their own too
//! ([`RequestCpus`], `--request-cpus`): the background threads stay off the first CPU
//! by default, but nothing keeps the other programs off it, and the kernel wakes a
//! request thread on whichever CPU it finds least busy. With `--request-cpus 0
//! --lifecycle-cpus 1` on two CPUs, neither side's threads ever wait for the other's.
//!
//! All of this is the program's policy, not the library's: the server's threads follow
//! it only once the program has called [`install`] (`zonecert serve` does).
//!
//! CPU affinity goes through `rustix`'s safe wrappers. The project's only `unsafe`
//! code is here, in `set_own_policy`: the `sched_setattr` system call, which neither
//! `rustix` nor `nix` offers. It is the only call that sets a thread's time slice
//! (`sched_runtime`), and the only per-thread way into `SCHED_IDLE` those crates would
//! leave (`rustix` has no `sched_setscheduler`); `setpriority` on the thread id could
//! set the nice value, but the slice has to be set in the same call anyway, since
//! threads inherit it.

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

/// Which CPUs the background threads (the lifecycle's, the store's checkpointer, the
/// webhook deliveries) may run on. Request threads may run on every CPU of the process
/// unless [`RequestCpus`] says otherwise.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum LifecycleCpus {
    /// Every CPU of the process but the first, when it has two or more; every CPU
    /// otherwise (the default).
    #[default]
    Auto,
    /// Every CPU of the process: requests and background work share them all.
    All,
    /// These CPUs (those of them the process may use).
    List(Vec<usize>),
}

/// Parses a CPU list as `taskset -c` takes it (`1-3,5`), ascending, without repeats.
/// `choices` names the words the setting also takes (none: empty), for the error.
pub fn parse_cpu_list(s: &str, choices: &str) -> Result<Vec<usize>, String> {
    let or = if choices.is_empty() { "" } else { " or" };
    let bad = || format!("CPU list {s:?}: expected {choices}{or} a list such as `1-3,5`");
    let mut cpus = Vec::new();
    for part in s.split(',').map(str::trim) {
        let (first, last) = match part.split_once('-') {
            Some((a, b)) => (a.trim(), b.trim()),
            None => (part, part),
        };
        let first: usize = first.parse().map_err(|_| bad())?;
        let last: usize = last.parse().map_err(|_| bad())?;
        if first > last || last >= MAX_CPUS {
            return Err(bad());
        }
        cpus.extend(first..=last);
    }
    cpus.sort_unstable();
    cpus.dedup();
    Ok(cpus)
}

/// The CPUs of `wanted` that are among `allowed` (the process's, ascending): `None` when
/// that is all of `allowed`, an error naming `what` when it is none of them.
fn usable_cpus(
    wanted: &[usize],
    allowed: &[usize],
    what: &str,
) -> Result<Option<Vec<usize>>, String> {
    if allowed.is_empty() {
        return Err(
            "this system does not tell which CPUs the process may use: give no CPU list".into(),
        );
    }
    let usable: Vec<usize> = wanted
        .iter()
        .copied()
        .filter(|c| allowed.contains(c))
        .collect();
    if usable.is_empty() {
        Err(format!(
            "none of the {what} CPUs {wanted:?} is among the process's CPUs {allowed:?}"
        ))
    } else if usable.len() == allowed.len() {
        Ok(None)
    } else {
        Ok(Some(usable))
    }
}

impl LifecycleCpus {
    /// Parses `auto`, `all` or a CPU list as `taskset -c` takes it (`1-3,5`).
    pub fn parse(s: &str) -> Result<Self, String> {
        match s.trim() {
            "auto" => Ok(LifecycleCpus::Auto),
            "all" => Ok(LifecycleCpus::All),
            list => parse_cpu_list(list, "`auto`, `all`").map(LifecycleCpus::List),
        }
    }

    /// The CPUs this choice gives the background threads out of `allowed` (the
    /// process's, ascending); `None` when they may use all of them.
    pub fn resolve(&self, allowed: &[usize]) -> Result<Option<Vec<usize>>, String> {
        match self {
            LifecycleCpus::All => Ok(None),
            LifecycleCpus::Auto if allowed.len() < 2 => Ok(None),
            LifecycleCpus::Auto => Ok(Some(allowed[1..].to_vec())),
            LifecycleCpus::List(cpus) => usable_cpus(cpus, allowed, "lifecycle"),
        }
    }
}

/// Which CPUs the request threads (the API's runtime, the thread that accepts
/// connections, and the threads they start) may run on.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum RequestCpus {
    /// Every CPU of the process (the default).
    #[default]
    All,
    /// These CPUs (those of them the process may use).
    List(Vec<usize>),
}

impl RequestCpus {
    /// Parses `all` or a CPU list as `taskset -c` takes it (`0`, `0-1,4`).
    pub fn parse(s: &str) -> Result<Self, String> {
        match s.trim() {
            "all" => Ok(RequestCpus::All),
            list => parse_cpu_list(list, "`all`").map(RequestCpus::List),
        }
    }

    /// The CPUs this choice gives the request threads out of `allowed` (the process's,
    /// ascending); `None` when they may use all of them.
    pub fn resolve(&self, allowed: &[usize]) -> Result<Option<Vec<usize>>, String> {
        match self {
            RequestCpus::All => Ok(None),
            RequestCpus::List(cpus) => usable_cpus(cpus, allowed, "request"),
        }
    }
}

/// The CPUs the process could use when [`confine_request_threads`] narrowed the
/// calling thread's (which the other threads inherit); the background threads' choice
/// resolves against these, not against the request threads' CPUs.
static SERVER_CPUS: std::sync::OnceLock<Vec<usize>> = std::sync::OnceLock::new();

/// The CPUs the server may use: those of the process before [`confine_request_threads`]
/// narrowed them, else the calling thread's.
pub fn server_cpus() -> Result<Vec<usize>, SchedError> {
    match SERVER_CPUS.get() {
        Some(cpus) => Ok(cpus.clone()),
        None => process_cpus(),
    }
}

/// Keeps the calling thread, and every thread it starts from now on, on the CPUs
/// `choice` gives requests: for the program's main thread before it starts the request
/// runtime. The background threads leave for their own CPUs as they start, resolved
/// against the CPUs the process had before this call ([`server_cpus`]). Returns the
/// request threads' CPUs, `None` for all of them.
pub fn confine_request_threads(choice: &RequestCpus) -> Result<Option<Vec<usize>>, SchedError> {
    // The default asks nothing of the system, which may not tell the CPUs at all.
    if *choice == RequestCpus::All {
        return Ok(None);
    }
    let all = server_cpus()?;
    let cpus = choice.resolve(&all).map_err(SchedError)?;
    if let Some(cpus) = &cpus {
        let _ = SERVER_CPUS.set(all);
        run_on_cpus(cpus)?;
    }
    Ok(cpus)
}

/// Whether the program installed this placement ([`install`]); until then the server's
/// own threads keep the scheduling and CPUs they inherit.
static INSTALLED: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// Installs this module's placement for the whole process: the background threads the
/// server starts from now on are lowered and confined to the CPUs `choice` gives them
/// (see [`confine_background_threads`], whose result this returns). A policy for the
/// program that runs the server (`zonecert serve` installs it before `App::open`): a
/// program that embeds the server without calling this keeps its threads as they are.
pub fn install(choice: &LifecycleCpus) -> Result<Option<Vec<usize>>, SchedError> {
    INSTALLED.store(true, std::sync::atomic::Ordering::Relaxed);
    confine_background_threads(choice)
}

/// For a background thread of the server as it starts: [`lower_priority`] if the
/// placement is installed ([`install`]), nothing otherwise.
pub fn background_thread() {
    if INSTALLED.load(std::sync::atomic::Ordering::Relaxed) {
        lower_priority();
    }
}

/// For the lifecycle's store thread as it starts: [`normal_priority`] if the placement
/// is installed ([`install`]), nothing otherwise.
pub fn store_thread() -> Result<(), SchedError> {
    if INSTALLED.load(std::sync::atomic::Ordering::Relaxed) {
        normal_priority()
    } else {
        Ok(())
    }
}

/// For the thread that starts the lifecycle's runtime: [`enter_background_cpus`] if
/// the placement is installed ([`install`]), nothing otherwise.
pub fn lifecycle_thread() -> Result<(), SchedError> {
    if INSTALLED.load(std::sync::atomic::Ordering::Relaxed) {
        enter_background_cpus()
    } else {
        Ok(())
    }
}

/// The highest CPU number a list may name, plus one (the kernel's `CPU_SETSIZE`).
const MAX_CPUS: usize = 1024;

/// The background threads' CPUs, when confined (set by [`confine_background_threads`]).
static BACKGROUND_CPUS: std::sync::RwLock<Option<Vec<usize>>> = std::sync::RwLock::new(None);

/// Resolves `choice` against the server's CPUs ([`server_cpus`]) and confines every background thread that starts or lowers itself from now
/// on to the result. Returns the background threads' CPUs, `None` for all of them.
/// Process-wide: the last call wins.
pub fn confine_background_threads(
    choice: &LifecycleCpus,
) -> Result<Option<Vec<usize>>, SchedError> {
    let cpus = choice.resolve(&server_cpus()?).map_err(SchedError)?;
    let mut plan = BACKGROUND_CPUS
        .write()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    plan.clone_from(&cpus);
    Ok(cpus)
}

/// Moves the calling thread onto the background CPUs, if they are confined; threads it
/// starts inherit them. [`lower_priority`] and [`normal_priority`] do this too.
pub fn enter_background_cpus() -> Result<(), SchedError> {
    let plan = BACKGROUND_CPUS
        .read()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .clone();
    match plan {
        Some(cpus) => run_on_cpus(&cpus),
        None => Ok(()),
    }
}

/// Gives the calling thread normal priority and a short time slice, so it preempts
/// longer-running threads when it wakes up: for request threads (the API runtime's
/// `on_thread_start`). A kernel before 6.12 ignores the slice (the thread still gets
/// normal priority).
pub fn prefer_latency() -> Result<(), SchedError> {
    set_own_attr(0, SHORT_SLICE_NANOS)
}

/// Moves the calling thread onto the background CPUs and gives it normal priority and
/// the default time slice: for the lifecycle's store thread (see the module's text),
/// which would otherwise inherit the short slice of the request thread that starts the
/// lifecycle.
pub fn normal_priority() -> Result<(), SchedError> {
    enter_background_cpus()?;
    set_own_attr(0, 0)
}

/// Lowers the calling thread to the background priority (nice 10, the default slice)
/// and moves it onto the background CPUs: for every lifecycle thread but the store
/// thread, the store's checkpointer and the webhook deliveries. Where this is refused (a
/// sandbox) or not supported, the thread runs at normal priority, or on every CPU, and
/// this says so once.
pub fn lower_priority() {
    static WARNED: std::sync::Once = std::sync::Once::new();
    if let Err(why) = enter_background_cpus().and_then(|()| set_own_attr(LIFECYCLE_NICE, 0)) {
        WARNED.call_once(|| {
            tracing::warn!(
                reason = %why,
                "background threads run at normal priority or on every CPU: requests may wait behind lifecycle work"
            );
        });
    }
}

/// Puts the calling thread in the idle class (`SCHED_IDLE`): it runs only when no
/// normal thread wants its CPU, and any normal thread that wakes up preempts it at
/// once. Not for the server's own work, which must progress under any request load:
/// for programs beside it whose delays must never count as the server's (the lifecycle
/// benchmark's DNS server, which stands in for name servers on other machines).
pub fn idle_priority() -> Result<(), SchedError> {
    set_own_policy(IDLE_POLICY, 0, 0)
}

#[cfg(target_os = "linux")]
const IDLE_POLICY: u32 = libc::SCHED_IDLE as u32;
#[cfg(not(target_os = "linux"))]
const IDLE_POLICY: u32 = 5;

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
fn set_own_attr(nice: i32, slice_nanos: u64) -> Result<(), SchedError> {
    set_own_policy(0, nice, slice_nanos)
}

/// Sets the calling thread's policy (`SCHED_OTHER` = 0 or `SCHED_IDLE`), nice value and
/// time slice.
#[cfg(target_os = "linux")]
#[allow(unsafe_code)]
fn set_own_policy(policy: u32, nice: i32, slice_nanos: u64) -> Result<(), SchedError> {
    let attr = SchedAttr {
        size: std::mem::size_of::<SchedAttr>() as u32,
        sched_policy: policy,
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

/// The CPUs the calling thread (and so, before it changes them, its process) may run
/// on, ascending; empty where the system does not tell.
#[cfg(target_os = "linux")]
pub fn process_cpus() -> Result<Vec<usize>, SchedError> {
    let set = rustix::thread::sched_getaffinity(None)
        .map_err(|e| SchedError(format!("sched_getaffinity: {e}")))?;
    Ok((0..MAX_CPUS.min(rustix::thread::CpuSet::MAX_CPU))
        .filter(|&c| set.is_set(c))
        .collect())
}

/// Lets the calling thread run on `cpus` only: background threads, and programs beside
/// the server that must keep off some of its CPUs (the lifecycle benchmark's progress
/// poller).
#[cfg(target_os = "linux")]
pub fn run_on_cpus(cpus: &[usize]) -> Result<(), SchedError> {
    let mut set = rustix::thread::CpuSet::new();
    // `CpuSet::set` panics past the set's size: CPUs beyond it are left out.
    for &cpu in cpus
        .iter()
        .filter(|&&c| c < MAX_CPUS.min(rustix::thread::CpuSet::MAX_CPU))
    {
        set.set(cpu);
    }
    rustix::thread::sched_setaffinity(None, &set)
        .map_err(|e| SchedError(format!("sched_setaffinity {cpus:?}: {e}")))
}

#[cfg(not(target_os = "linux"))]
pub fn process_cpus() -> Result<Vec<usize>, SchedError> {
    // Unknown: `auto` then confines nothing, and a list is refused.
    Ok(Vec::new())
}

#[cfg(not(target_os = "linux"))]
pub fn run_on_cpus(_cpus: &[usize]) -> Result<(), SchedError> {
    Err(SchedError("CPU affinity is only supported on Linux".into()))
}

#[cfg(not(target_os = "linux"))]
fn set_own_policy(_policy: u32, _nice: i32, _slice_nanos: u64) -> Result<(), SchedError> {
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
    fn lifecycle_cpu_lists_parse_and_resolve() {
        assert_eq!(LifecycleCpus::parse("auto").unwrap(), LifecycleCpus::Auto);
        assert_eq!(LifecycleCpus::parse("all").unwrap(), LifecycleCpus::All);
        assert_eq!(
            LifecycleCpus::parse("3, 1-2,2").unwrap(),
            LifecycleCpus::List(vec![1, 2, 3])
        );
        for bad in ["", "x", "2-1", "1-", "-1", "1,,2", "5000"] {
            assert!(LifecycleCpus::parse(bad).is_err(), "{bad:?} parsed");
        }
        // Auto keeps the first CPU for requests when there are two or more.
        assert_eq!(LifecycleCpus::Auto.resolve(&[0, 1]).unwrap(), Some(vec![1]));
        assert_eq!(
            LifecycleCpus::Auto.resolve(&[2, 5, 7]).unwrap(),
            Some(vec![5, 7])
        );
        assert_eq!(LifecycleCpus::Auto.resolve(&[3]).unwrap(), None);
        assert_eq!(LifecycleCpus::All.resolve(&[0, 1]).unwrap(), None);
        let list = LifecycleCpus::List(vec![1, 4]);
        assert_eq!(list.resolve(&[0, 1, 2]).unwrap(), Some(vec![1]));
        assert_eq!(
            list.resolve(&[1, 4]).unwrap(),
            None,
            "every CPU: nothing to confine"
        );
        assert!(list.resolve(&[0, 2]).is_err(), "none of them usable");
        assert!(list.resolve(&[]).is_err(), "CPUs unknown");
        assert_eq!(LifecycleCpus::Auto.resolve(&[]).unwrap(), None);
    }

    #[test]
    fn request_cpu_lists_parse_and_resolve() {
        assert_eq!(RequestCpus::parse(" all ").unwrap(), RequestCpus::All);
        assert_eq!(
            RequestCpus::parse("0,2-3").unwrap(),
            RequestCpus::List(vec![0, 2, 3])
        );
        for bad in ["", "auto", "x", "3-2", "5000"] {
            assert!(RequestCpus::parse(bad).is_err(), "{bad:?} parsed");
        }
        assert_eq!(RequestCpus::All.resolve(&[0, 1]).unwrap(), None);
        let first = RequestCpus::List(vec![0]);
        assert_eq!(first.resolve(&[0, 1]).unwrap(), Some(vec![0]));
        assert_eq!(first.resolve(&[0]).unwrap(), None, "every CPU");
        let err = first.resolve(&[1, 2]).unwrap_err();
        assert!(err.contains("none of the request CPUs"), "{err}");
        assert!(first.resolve(&[]).is_err(), "CPUs unknown");
    }

    #[test]
    fn request_threads_keep_their_cpus_and_the_lifecycle_resolves_against_all() {
        let ours = process_cpus().unwrap();
        assert_eq!(confine_request_threads(&RequestCpus::All).unwrap(), None);
        if ours.len() < 2 {
            return;
        }
        let first = ours[0];
        std::thread::spawn(move || {
            let confined = confine_request_threads(&RequestCpus::List(vec![first])).unwrap();
            assert_eq!(confined, Some(vec![first]));
            assert_eq!(process_cpus().unwrap(), vec![first]);
            let started = std::thread::spawn(|| process_cpus().unwrap())
                .join()
                .unwrap();
            assert_eq!(started, vec![first], "threads started later inherit them");
            // The lifecycle's `auto` still has every CPU of the process to choose from.
            assert_eq!(server_cpus().unwrap(), ours);
            assert_eq!(
                LifecycleCpus::Auto
                    .resolve(&server_cpus().unwrap())
                    .unwrap(),
                Some(ours[1..].to_vec())
            );
        })
        .join()
        .unwrap();
    }

    #[test]
    fn background_threads_move_to_their_cpus_and_request_threads_stay() {
        let ours = process_cpus().unwrap();
        assert!(!ours.is_empty());
        let last = *ours.last().unwrap();
        let cpus_of = |f: fn()| {
            std::thread::spawn(move || {
                f();
                process_cpus().unwrap()
            })
            .join()
            .unwrap()
        };
        confine_background_threads(&LifecycleCpus::List(vec![last])).unwrap();
        assert_eq!(cpus_of(lower_priority), vec![last]);
        assert_eq!(cpus_of(|| normal_priority().unwrap()), vec![last]);
        assert_eq!(
            cpus_of(|| prefer_latency().unwrap()),
            ours,
            "request threads keep every CPU"
        );
        // Back to no confinement for the other tests of this process.
        confine_background_threads(&LifecycleCpus::All).unwrap();
        assert_eq!(cpus_of(lower_priority), ours);
    }

    #[test]
    fn idle_priority_puts_the_thread_in_the_idle_class() {
        std::thread::spawn(|| {
            idle_priority().unwrap();
            let text = std::fs::read_to_string("/proc/thread-self/sched").unwrap();
            let policy = text
                .lines()
                .find(|l| l.starts_with("policy"))
                .and_then(|l| l.split(':').nth(1))
                .map(|v| v.trim().to_owned());
            assert_eq!(policy.as_deref(), Some("5"), "SCHED_IDLE");
        })
        .join()
        .unwrap();
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
