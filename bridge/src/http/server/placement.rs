//! CPU placement of the HTTP workers: which CPUs the process may use, which worker is pinned to
//! which, and which worker a new connection goes to (see the server module docs).

/// How many more open connections than the least loaded worker the worker on a connection's own
/// CPU may have and still be given it (see the module docs). Small enough that the load stays
/// even, large enough that a client's connections made in a burst from one CPU mostly stay there.
pub const STEER_SLACK: usize = 8;

/// The CPUs this process may run on (its affinity mask, which also reflects a cgroup's cpuset), in
/// increasing order; empty if it cannot be read.
pub fn allowed_cpus() -> Vec<usize> {
    let Ok(set) = nix::sched::sched_getaffinity(nix::unistd::Pid::from_raw(0)) else {
        return Vec::new();
    };
    (0..nix::sched::CpuSet::count()).filter(|&c| set.is_set(c).unwrap_or(false)).collect()
}

/// The CPU each of `workers` workers is pinned to: the allowed CPUs in order when there are
/// exactly as many workers as CPUs, else none (fewer workers than CPUs would leave CPUs whose
/// connections have no local worker; more would share CPUs).
pub fn pin_plan(allowed: &[usize], workers: usize) -> Option<Vec<usize>> {
    (workers > 0 && allowed.len() == workers).then(|| allowed.to_vec())
}

/// Pins the calling thread to `cpu`.
pub(super) fn pin_current_thread(cpu: usize) -> nix::Result<()> {
    let mut set = nix::sched::CpuSet::new();
    set.set(cpu)?;
    // Pid 0: the calling thread (sched_setaffinity applies to one thread).
    nix::sched::sched_setaffinity(nix::unistd::Pid::from_raw(0), &set)
}

/// Which worker gets a connection: the one pinned to `local` (the connection's CPU, an index
/// into `open`) unless it has more than [`STEER_SLACK`] connections above the least loaded,
/// else the least loaded. Returns the index and whether it is the local one.
pub fn choose_worker(open: &[usize], local: Option<usize>) -> Option<(usize, bool)> {
    let least = least_loaded(open.iter().copied())?;
    match local.and_then(|l| open.get(l).map(|&n| (l, n))) {
        Some((l, n)) if n <= open[least].saturating_add(STEER_SLACK) => Some((l, true)),
        _ => Some((least, false)),
    }
}

/// Which worker gets the next connection: the one with the fewest open, ties to the lowest index.
pub fn least_loaded(open: impl IntoIterator<Item = usize>) -> Option<usize> {
    open.into_iter().enumerate().min_by_key(|&(i, n)| (n, i)).map(|(i, _)| i)
}
