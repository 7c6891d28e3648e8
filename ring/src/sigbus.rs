//! Surviving a ring file truncated under its mapping, as libwayland-server's `wl_shm` survives
//! clients that shrink their pools.
//!
//! Touching a page of a `MAP_SHARED` mapping that lies beyond the end of its (truncated) file
//! raises SIGBUS, which kills the process by default. Every ring mapping is registered here; a
//! SIGBUS handler (installed once, `SA_SIGINFO`) looks the faulting address up in the registry.
//! If it lies in a registered mapping, the handler maps anonymous memory over the whole mapping
//! (`MAP_FIXED`), so the faulting access and every later one complete (reading zeros), and flags
//! the mapping broken; the ring code checks the flag after every copy out of the mapping and
//! before bytes leave or an index is published, and discards what it read. Any other SIGBUS is
//! not ours: the handler restores the default action and re-raises it, so the process dies as it
//! would have without the handler.
//!
//! The handler replaces the Rust runtime's SIGBUS handler, which on Linux only guards against
//! stack overflows that show as SIGSEGV anyway (the runtime handles both signals for other
//! systems); a SIGBUS that is not a ring's still ends the process with the default action.
//!
//! The handler allocates nothing and takes no lock: the registry is a fixed array of slots of
//! atomics. A slot's address range is published with Release after its length, and cleared before
//! the mapping is unmapped, so the handler never matches a range that is not mapped by its owner.
//! A fault can only come from a thread touching the mapping, which holds the mapping (and so its
//! registration) alive.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::OnceLock;

/// Ring mappings that can be live at once in one process. A consumer or producer holds one
/// (plus a header mapping for a moment while it validates); 256 covers a bridge serving every
/// card a host can hold with room to spare, and many rings per test process.
pub(crate) const SLOTS: usize = 256;

struct Slot {
    /// Base address of the mapping; 0 while the slot is not published.
    start: AtomicUsize,
    len: AtomicUsize,
    broken: AtomicBool,
    /// Claimed by a registration (set before `start`, cleared after it).
    used: AtomicBool,
}

impl Slot {
    const fn new() -> Slot {
        Slot {
            start: AtomicUsize::new(0),
            len: AtomicUsize::new(0),
            broken: AtomicBool::new(false),
            used: AtomicBool::new(false),
        }
    }
}

static REGISTRY: [Slot; SLOTS] = [const { Slot::new() }; SLOTS];

/// One registered mapping; unregisters on drop (drop it before unmapping).
#[derive(Debug)]
pub(crate) struct Registration {
    slot: usize,
}

impl Registration {
    /// Registers `len` bytes at `start`. `None` when the handler cannot be installed or every
    /// slot is taken (the caller refuses to map then, rather than map unprotected).
    pub(crate) fn new(start: *const u8, len: usize) -> Option<Registration> {
        if !install() {
            return None;
        }
        let slot = REGISTRY.iter().position(|s| {
            s.used.compare_exchange(false, true, Ordering::AcqRel, Ordering::Relaxed).is_ok()
        })?;
        let s = &REGISTRY[slot];
        s.broken.store(false, Ordering::Relaxed);
        s.len.store(len, Ordering::Relaxed);
        s.start.store(start as usize, Ordering::Release);
        Some(Registration { slot })
    }

    /// The mapping was truncated under us and replaced with anonymous memory: nothing read from
    /// it since can be trusted, nothing written to it reaches the file.
    pub(crate) fn broken(&self) -> bool {
        REGISTRY[self.slot].broken.load(Ordering::Acquire)
    }
}

impl Drop for Registration {
    fn drop(&mut self) {
        let s = &REGISTRY[self.slot];
        s.start.store(0, Ordering::Release);
        s.len.store(0, Ordering::Relaxed);
        s.used.store(false, Ordering::Release);
    }
}

/// Installs the handler once; false if `sigaction` failed.
fn install() -> bool {
    static INSTALLED: OnceLock<bool> = OnceLock::new();
    *INSTALLED.get_or_init(|| {
        // SAFETY: an all-zero `sigaction` is a valid value (empty mask, no flags) that is then
        // filled in; `on_sigbus` has the SA_SIGINFO signature and is async-signal-safe (below).
        unsafe {
            let mut sa: libc::sigaction = std::mem::zeroed();
            sa.sa_sigaction = on_sigbus as *const () as usize;
            sa.sa_flags = libc::SA_SIGINFO | libc::SA_ONSTACK;
            libc::sigemptyset(&mut sa.sa_mask);
            libc::sigaction(libc::SIGBUS, &sa, std::ptr::null_mut()) == 0
        }
    })
}

/// The SIGBUS handler. Async-signal-safe: atomics on a static array, `mmap`, `sigaction` and
/// `raise` (system calls), no allocation, no lock.
extern "C" fn on_sigbus(sig: libc::c_int, info: *mut libc::siginfo_t, _ctx: *mut libc::c_void) {
    // SAFETY: the kernel passes a valid siginfo for an SA_SIGINFO handler; for SIGBUS `si_addr`
    // is the faulting address.
    let addr = unsafe { (*info).si_addr() } as usize;
    for s in &REGISTRY {
        let start = s.start.load(Ordering::Acquire);
        if start == 0 || addr < start {
            continue;
        }
        let len = s.len.load(Ordering::Relaxed);
        if addr - start >= len {
            continue;
        }
        // SAFETY: `start..start+len` is a live mapping owned by the registration of this slot
        // (published before use, cleared before unmapping). Replacing it with private anonymous
        // memory of the same size keeps every pointer into it valid; only the contents change
        // (zeros), and the broken flag tells the owner to discard them.
        let p = unsafe {
            libc::mmap(
                start as *mut libc::c_void,
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_FIXED,
                -1,
                0,
            )
        };
        if p != libc::MAP_FAILED {
            s.broken.store(true, Ordering::Release);
            return;
        }
        break;
    }
    // Not a ring mapping (or it could not be replaced): die as without this handler. The signal
    // is blocked while the handler runs, so the re-raised one is delivered, with the default
    // action, when the handler returns.
    // SAFETY: a zeroed `sigaction` with SIG_DFL (0) is the default disposition.
    unsafe {
        let mut sa: libc::sigaction = std::mem::zeroed();
        sa.sa_sigaction = libc::SIG_DFL;
        libc::sigaction(sig, &sa, std::ptr::null_mut());
        libc::raise(sig);
    }
}
