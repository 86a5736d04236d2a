//! Surviving the truncation of a mapped file: a process-wide SIGBUS handler
//! and the registry of mapped ranges it protects.
//!
//! A named POSIX segment is a file in /dev/shm, and such a file cannot be
//! sealed: anyone with write access may `ftruncate` it while we have it
//! mapped, and our next access to a page past the new end faults with
//! SIGBUS, whose default action kills the process. This module owns the
//! defence. A file mapping registers its range with [`protect`]. On a SIGBUS
//! whose faulting address lies in a registered range, the handler maps
//! anonymous zero-filled memory over the whole range, marks the range
//! broken and returns, so the faulting instruction runs again and reads
//! zeros. The layers above ask [`Protection::is_broken`] and turn it into
//! an error.
//!
//! It must never swallow a fault that is not ours. Any other SIGBUS goes to
//! the handler that was installed before ours or, if there was none, gets
//! the default action, as if we were not there.
//!
//! The handler is installed once, by the first [`protect`]. A program may
//! opt out before that, with [`disable`] or the environment variable
//! [`OPT_OUT_VAR`]; its mappings are then not protected.
//!
//! Everything the handler reads is a static made of atomics, read without
//! locks or allocation. The only calls it makes are `mmap` (as a raw
//! syscall), `sigaction` and `raise`, which are async-signal-safe.

use std::ffi::{c_int, c_long, c_void};
use std::sync::atomic::{AtomicBool, AtomicI32, AtomicU8, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Mutex, PoisonError};

/// How many mappings can be protected at once. A mapping registered while
/// all slots are taken is simply not protected: a truncation of its file
/// kills the process, as it would without this module.
pub const CAPACITY: usize = 1024;

/// If this environment variable is set (to any value) when the first file
/// mapping is made, the SIGBUS handler is not installed.
pub const OPT_OUT_VAR: &str = "IPCRING_NO_SIGBUS_HANDLER";

/// The ranges of this process, read by the handler.
static REGISTRY: Registry<CAPACITY> = Registry::new();

/// Set once any range of this process was replaced by zeros.
static ANY_BROKEN: AtomicBool = AtomicBool::new(false);

/// Whether any range of this process was ever found truncated: one load of
/// a word nobody writes until that happens, cheap enough for fast paths.
#[inline]
pub fn any_broken() -> bool {
    ANY_BROKEN.load(Ordering::Relaxed)
}

// A slot's state word: bits 0..3 hold the state, bits 3..64 a generation
// that changes each time the slot is claimed, so that a handler that read
// one owner's range cannot act on the slot once it belongs to another.
const STATE_MASK: u64 = 0b111;
const GENERATION_UNIT: u64 = 0b1000;
/// Unused: `protect` may claim it; the handler skips it.
const FREE: u64 = 0;
/// Being filled in by `protect`; the handler skips it.
const CLAIMED: u64 = 1;
/// A mapped range of ours: the handler may repair it.
const LIVE: u64 = 2;
/// The handler is mapping zeros over the range; a release waits for it.
const REPAIRING: u64 = 3;
/// The handler replaced the range with zeros; it is still mapped and ours.
const BROKEN: u64 = 4;

fn state_of(word: u64) -> u64 {
    word & STATE_MASK
}

fn with_state(word: u64, state: u64) -> u64 {
    (word & !STATE_MASK) | state
}

/// One registered range.
struct Slot {
    /// State and generation (layout above).
    word: AtomicU64,
    /// First byte of the range. Written only while `CLAIMED`; read by the
    /// handler after an Acquire load of `word` showed `LIVE` or later.
    start: AtomicUsize,
    /// Bytes in the range; written and read like `start`.
    len: AtomicUsize,
    /// `PROT_*` bits for the zero-filled replacement, the mapping's own.
    protection: AtomicI32,
}

impl Slot {
    const fn new() -> Slot {
        Slot {
            word: AtomicU64::new(FREE),
            start: AtomicUsize::new(0),
            len: AtomicUsize::new(0),
            protection: AtomicI32::new(0),
        }
    }
}

impl std::fmt::Debug for Slot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Slot")
            .field("word", &self.word.load(Ordering::Relaxed))
            .finish_non_exhaustive()
    }
}

/// A fixed array of slots: no allocation, no lock, so the handler can read
/// it at any moment.
pub struct Registry<const N: usize> {
    slots: [Slot; N],
    /// One past the highest slot ever claimed: the handler scans no further.
    in_use: AtomicUsize,
}

/// What the handler does about a fault.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Outcome {
    /// The address is in a range of ours that is (or is being) replaced by
    /// zeros: return and let the instruction run again.
    Retry,
    /// Not ours, or we could not repair it: hand the signal on.
    Forward,
}

impl<const N: usize> Registry<N> {
    const fn new() -> Registry<N> {
        Registry {
            slots: [const { Slot::new() }; N],
            in_use: AtomicUsize::new(0),
        }
    }

    /// Registers `len` bytes at `start`; `None` if every slot is taken.
    fn register(&self, start: *mut u8, len: usize, writable: bool) -> Option<Protection<'_>> {
        let protection = if writable {
            libc::PROT_READ | libc::PROT_WRITE
        } else {
            libc::PROT_READ
        };
        for (index, slot) in self.slots.iter().enumerate() {
            let word = slot.word.load(Ordering::Relaxed);
            if state_of(word) != FREE {
                continue;
            }
            let claimed = with_state(word.wrapping_add(GENERATION_UNIT), CLAIMED);
            // Acquire: pairs with the Release in `Protection::drop` that
            // freed the slot, so the previous owner is done with it.
            if slot
                .word
                .compare_exchange(word, claimed, Ordering::Acquire, Ordering::Relaxed)
                .is_err()
            {
                continue;
            }
            slot.start.store(start as usize, Ordering::Relaxed);
            slot.len.store(len, Ordering::Relaxed);
            slot.protection.store(protection, Ordering::Relaxed);
            // Release: pairs with the Acquire load of `in_use` in `repair`.
            self.in_use.fetch_max(index + 1, Ordering::Release);
            let live = with_state(claimed, LIVE);
            // Release: pairs with the Acquire load of `word` in `repair`,
            // which then sees this slot's range. The range is handed out only
            // after this store, so no access to it can fault before.
            slot.word.store(live, Ordering::Release);
            return Some(Protection { slot, live });
        }
        None
    }

    /// The handler's work: if `address` lies in a live range, maps zeros
    /// over the whole range and marks it broken. Async-signal-safe.
    fn repair(&self, address: usize) -> Outcome {
        // Acquire: pairs with the Release `fetch_max` in `register`.
        let in_use = self.in_use.load(Ordering::Acquire);
        for slot in self.slots.iter().take(in_use) {
            // Acquire: pairs with the Release store of LIVE in `register`
            // (the range is visible) and of BROKEN below.
            let word = slot.word.load(Ordering::Acquire);
            let state = state_of(word);
            if !matches!(state, LIVE | REPAIRING | BROKEN) {
                continue;
            }
            let start = slot.start.load(Ordering::Relaxed);
            let len = slot.len.load(Ordering::Relaxed);
            if address.wrapping_sub(start) >= len {
                continue;
            }
            if state != LIVE {
                // Another thread is replacing (or has replaced) the range:
                // once it has, the instruction runs on zeros.
                return Outcome::Retry;
            }
            let repairing = with_state(word, REPAIRING);
            // The generation in `word` makes this fail if the slot was
            // released (and perhaps claimed again) since we read the range;
            // the fault then runs again and finds the slot's new state.
            // Release: pairs with the Acquire load in `Protection::drop`,
            // which sees REPAIRING and waits. Acquire: as the load above.
            if slot
                .word
                .compare_exchange(word, repairing, Ordering::AcqRel, Ordering::Relaxed)
                .is_err()
            {
                return Outcome::Retry;
            }
            let protection = slot.protection.load(Ordering::Relaxed);
            let replaced = map_zeros_over(start, len, protection);
            let next = if replaced { BROKEN } else { LIVE };
            if replaced {
                // Relaxed: a hint that lets fast paths skip the per-range
                // check until some range breaks; `is_broken` then decides
                // with its own Acquire load.
                ANY_BROKEN.store(true, Ordering::Relaxed);
            }
            // Release: pairs with the Acquire loads in `Protection::drop`
            // (which then unmaps only after our mmap) and `is_broken`.
            slot.word.store(with_state(word, next), Ordering::Release);
            return if replaced {
                Outcome::Retry
            } else {
                Outcome::Forward
            };
        }
        Outcome::Forward
    }
}

/// A registered range; dropping it deregisters the range, which must happen
/// before the range is unmapped.
#[derive(Debug)]
pub struct Protection<'r> {
    slot: &'r Slot,
    /// The slot's word when it went live: its generation identifies us.
    live: u64,
}

impl Protection<'_> {
    /// Whether a fault replaced the range with zeros: the file behind it was
    /// truncated while we had it mapped.
    pub fn is_broken(&self) -> bool {
        // Acquire: pairs with the Release store of BROKEN in `repair`.
        let word = self.slot.word.load(Ordering::Acquire);
        state_of(word) == BROKEN
    }
}

impl Drop for Protection<'_> {
    fn drop(&mut self) {
        let slot = self.slot;
        let mut word = slot.word.load(Ordering::Acquire);
        loop {
            if word & !STATE_MASK != self.live & !STATE_MASK {
                // Not our generation: the slot was never ours to free.
                return;
            }
            if state_of(word) == REPAIRING {
                // The handler finishes within one mmap; it must be done
                // before our caller unmaps the range, or its mmap could land
                // on memory that is no longer ours.
                std::thread::yield_now();
                // Acquire: pairs with the Release store in `repair`.
                word = slot.word.load(Ordering::Acquire);
                continue;
            }
            // Release: pairs with the Acquire claim in `register`. Acquire on
            // failure: pairs with the Release stores in `repair`.
            match slot.word.compare_exchange(
                word,
                with_state(word, FREE),
                Ordering::Release,
                Ordering::Acquire,
            ) {
                Ok(_) => return,
                Err(current) => word = current,
            }
        }
    }
}

/// Replaces `[start, start + len)` with private zero-filled memory. A raw
/// syscall: libc's `mmap` wrapper is not on the async-signal-safe list (and
/// musl waits on an internal lock in it for `MAP_FIXED`).
fn map_zeros_over(start: usize, len: usize, protection: c_int) -> bool {
    #[cfg(target_pointer_width = "64")]
    const SYS_MMAP: c_long = libc::SYS_mmap;
    // On 32-bit targets SYS_mmap takes a pointer to its arguments; mmap2
    // takes them in registers (offset in pages, 0 here).
    #[cfg(not(target_pointer_width = "64"))]
    const SYS_MMAP: c_long = libc::SYS_mmap2;
    // MAP_NORESERVE: a segment may be larger than the memory the kernel
    // would promise to a private mapping; zeros cost nothing until written.
    let flags = libc::MAP_FIXED | libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE;
    // Every argument goes through the varargs as a full-width long: the
    // kernel reads whole registers.
    // SAFETY: `[start, start + len)` is a live mapping of ours (its slot is
    // REPAIRING, so it cannot be unmapped before we finish); MAP_FIXED
    // replaces it in one step with memory nobody else references.
    let ret = unsafe {
        libc::syscall(
            SYS_MMAP,
            start as c_long,
            len as c_long,
            protection as c_long,
            flags as c_long,
            -1 as c_long,
            0 as c_long,
        )
    };
    ret as usize == start
}

/// Registers a fresh mapping of a file for its lifetime, installing the
/// handler first if needed. `None` if protection is off (opted out, or the
/// handler could not be installed) or every slot is taken: the mapping then
/// works, unprotected. Call before handing the range to anyone.
pub fn protect(start: *mut u8, len: usize, writable: bool) -> Option<Protection<'static>> {
    if !ensure_installed() {
        return None;
    }
    REGISTRY.register(start, len, writable)
}

// Whether the handler is in place (INSTALL_STATE).
const NOT_YET: u8 = 0;
const INSTALLED: u8 = 1;
const OFF: u8 = 2;
static INSTALL_STATE: AtomicU8 = AtomicU8::new(NOT_YET);
/// Serialises installing and opting out (never taken by the handler).
static INSTALL_LOCK: Mutex<()> = Mutex::new(());

/// The disposition SIGBUS had before ours: a handler address, `SIG_DFL` or
/// `SIG_IGN`. Written once, before our handler is installed.
static PREVIOUS_HANDLER: AtomicUsize = AtomicUsize::new(libc::SIG_DFL);
/// Its `sa_flags`; written with `PREVIOUS_HANDLER`.
static PREVIOUS_FLAGS: AtomicI32 = AtomicI32::new(0);

fn ensure_installed() -> bool {
    // Acquire: pairs with the Release stores of the state below.
    match INSTALL_STATE.load(Ordering::Acquire) {
        INSTALLED => true,
        OFF => false,
        _ => install_once(),
    }
}

#[cold]
fn install_once() -> bool {
    let _guard = INSTALL_LOCK.lock().unwrap_or_else(PoisonError::into_inner);
    let state = match INSTALL_STATE.load(Ordering::Relaxed) {
        NOT_YET if std::env::var_os(OPT_OUT_VAR).is_some() => OFF,
        NOT_YET if install() => INSTALLED,
        NOT_YET => OFF,
        decided => decided,
    };
    // Release: pairs with the Acquire load in `ensure_installed`.
    INSTALL_STATE.store(state, Ordering::Release);
    state == INSTALLED
}

/// Turns protection off for the life of the process, if the handler is not
/// installed yet. Returns whether protection is off (false: too late, the
/// handler is in place and stays).
pub fn disable() -> bool {
    let _guard = INSTALL_LOCK.lock().unwrap_or_else(PoisonError::into_inner);
    match INSTALL_STATE.load(Ordering::Relaxed) {
        INSTALLED => false,
        _ => {
            // Release: pairs with the Acquire load in `ensure_installed`.
            INSTALL_STATE.store(OFF, Ordering::Release);
            true
        }
    }
}

/// Installs `on_sigbus`, remembering the disposition it replaces. Fails
/// (and leaves the disposition as it found it) if another thread changed
/// SIGBUS's disposition while we did this.
fn install() -> bool {
    // SAFETY: an all-zero sigaction is a valid value of this C struct.
    let mut previous: libc::sigaction = unsafe { std::mem::zeroed() };
    // SAFETY: a null new action only queries; `previous` is writable.
    if unsafe { libc::sigaction(libc::SIGBUS, std::ptr::null(), &mut previous) } != 0 {
        return false;
    }
    PREVIOUS_FLAGS.store(previous.sa_flags, Ordering::Relaxed);
    // Release: pairs with the Acquire load in `forward`, which then sees
    // the flags too. Our handler cannot run before the sigaction below.
    PREVIOUS_HANDLER.store(previous.sa_sigaction, Ordering::Release);

    let ours = our_action();
    // SAFETY: as above.
    let mut replaced: libc::sigaction = unsafe { std::mem::zeroed() };
    // SAFETY: `ours` is fully initialised and `on_sigbus` has the
    // SA_SIGINFO signature; `replaced` is writable.
    if unsafe { libc::sigaction(libc::SIGBUS, &ours, &mut replaced) } != 0 {
        return false;
    }
    if replaced.sa_sigaction != previous.sa_sigaction {
        // Someone installed a handler between our two calls: we would chain
        // to the wrong one. Put theirs back and stay out of the way.
        // SAFETY: `replaced` is what the kernel just gave us.
        unsafe { libc::sigaction(libc::SIGBUS, &replaced, std::ptr::null_mut()) };
        return false;
    }
    true
}

/// Our disposition for SIGBUS. Async-signal-safe to build.
fn our_action() -> libc::sigaction {
    // SAFETY: an all-zero sigaction is a valid value of this C struct.
    let mut ours: libc::sigaction = unsafe { std::mem::zeroed() };
    ours.sa_sigaction =
        on_sigbus as extern "C" fn(c_int, *mut libc::siginfo_t, *mut c_void) as libc::sighandler_t;
    // SA_SIGINFO for the fault address. SA_ONSTACK: run on the thread's
    // alternate stack if it has one (Rust threads do), as a fault may come
    // with little stack left. SA_RESTART: a SIGBUS sent with kill() to a
    // process that ignored it must not now make its syscalls fail with
    // EINTR. No SA_NODEFER: SIGBUS stays blocked while we run, so a fault
    // inside the handler kills instead of recursing, and a `raise` in
    // `forward` waits until we return.
    ours.sa_flags = libc::SA_SIGINFO | libc::SA_ONSTACK | libc::SA_RESTART;
    // SAFETY: `ours.sa_mask` is a valid sigset_t to clear (sigemptyset is
    // async-signal-safe).
    unsafe { libc::sigemptyset(&mut ours.sa_mask) };
    ours
}

/// After a chained handler ran for a signal that will not fault again (one
/// sent with `kill`): if it changed SIGBUS's disposition (std's handler
/// resets it to the default for anything outside a guard page), take that
/// as the new disposition to forward to, and put ours back, so that one
/// sent SIGBUS does not switch the truncation protection off for good.
fn reinstall_after_chaining(signal: c_int) {
    // SAFETY: an all-zero sigaction is a valid value of this C struct.
    let mut now: libc::sigaction = unsafe { std::mem::zeroed() };
    // SAFETY: sigaction is async-signal-safe; a null new action only
    // queries, and `now` is writable.
    if unsafe { libc::sigaction(signal, std::ptr::null(), &mut now) } != 0 {
        return;
    }
    let ours = our_action();
    if now.sa_sigaction == ours.sa_sigaction {
        return;
    }
    PREVIOUS_FLAGS.store(now.sa_flags, Ordering::Relaxed);
    // Release: pairs with the Acquire load in `forward`.
    PREVIOUS_HANDLER.store(now.sa_sigaction, Ordering::Release);
    // SAFETY: `ours` is fully initialised and `on_sigbus` has the
    // SA_SIGINFO signature.
    unsafe { libc::sigaction(signal, &ours, std::ptr::null_mut()) };
}

/// The handler. Async-signal-safe: atomics, one raw mmap, sigaction, raise.
extern "C" fn on_sigbus(signal: c_int, info: *mut libc::siginfo_t, context: *mut c_void) {
    let saved_errno = errno();
    let code = if info.is_null() {
        0
    } else {
        // SAFETY: the kernel passes a valid siginfo to an SA_SIGINFO handler
        // (as does a handler that chains to us).
        unsafe { (*info).si_code }
    };
    // Only a fault the kernel reports as an access past the end of the
    // object is a truncation; a hardware memory error (BUS_MCEERR_*) or a
    // SIGBUS sent with kill() is never papered over with zeros.
    let repaired = code == libc::BUS_ADRERR && {
        // SAFETY: for BUS_ADRERR the kernel fills in si_addr.
        let address = unsafe { (*info).si_addr() } as usize;
        REGISTRY.repair(address) == Outcome::Retry
    };
    if !repaired {
        // The previous handler may rely on errno being the interrupted
        // code's.
        set_errno(saved_errno);
        forward(signal, info, context, code);
    }
    set_errno(saved_errno);
}

/// Hands a signal that is not ours to the disposition SIGBUS had before.
fn forward(signal: c_int, info: *mut libc::siginfo_t, context: *mut c_void, code: c_int) {
    // Acquire: pairs with the Release store in `install`.
    let handler = PREVIOUS_HANDLER.load(Ordering::Acquire);
    let flags = PREVIOUS_FLAGS.load(Ordering::Relaxed);
    // A fault re-executes its instruction when we return; a signal sent by
    // a process, or a memory error reported after the fact, does not.
    let refaults = matches!(
        code,
        libc::BUS_ADRALN | libc::BUS_ADRERR | libc::BUS_OBJERR | libc::BUS_MCEERR_AR
    );
    if handler == libc::SIG_IGN && !refaults {
        // It was ignored before; it still is.
        return;
    }
    if handler == libc::SIG_DFL || handler == libc::SIG_IGN {
        // Put the old disposition back. A fault then happens again when we
        // return and gets exactly the treatment it would have had without
        // us (the kernel kills for a fault that is ignored). A sent signal
        // is raised again: SIGBUS is blocked while we run, so it is
        // delivered, with its default action, as we return.
        // SAFETY: an all-zero sigaction is a valid value of this C struct.
        let mut previous: libc::sigaction = unsafe { std::mem::zeroed() };
        previous.sa_sigaction = handler;
        previous.sa_flags = flags;
        // SAFETY: sigaction is async-signal-safe; `previous` names no
        // handler function, and its mask is empty.
        unsafe { libc::sigaction(signal, &previous, std::ptr::null_mut()) };
        if !refaults {
            // SAFETY: raise is async-signal-safe.
            unsafe { libc::raise(signal) };
        }
        return;
    }
    if flags & libc::SA_SIGINFO != 0 {
        // SAFETY: `handler` was installed with SA_SIGINFO, so it is a
        // function of this type; we pass on what the kernel gave us.
        let chained = unsafe {
            std::mem::transmute::<usize, extern "C" fn(c_int, *mut libc::siginfo_t, *mut c_void)>(
                handler,
            )
        };
        chained(signal, info, context);
    } else {
        // SAFETY: `handler` was installed without SA_SIGINFO, so it is a
        // plain `void (*)(int)` handler.
        let chained = unsafe { std::mem::transmute::<usize, extern "C" fn(c_int)>(handler) };
        chained(signal);
    }
    if !refaults {
        reinstall_after_chaining(signal);
    }
}

fn errno() -> c_int {
    // SAFETY: __errno_location returns this thread's errno slot, always
    // valid; reading it is async-signal-safe.
    unsafe { *libc::__errno_location() }
}

fn set_errno(value: c_int) {
    // SAFETY: as in `errno`.
    unsafe { *libc::__errno_location() = value };
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_full_registry_leaves_new_ranges_unprotected() {
        let registry = Registry::<2>::new();
        let first = registry.register(0x1000 as *mut u8, 0x1000, true);
        let second = registry.register(0x3000 as *mut u8, 0x1000, true);
        assert!(first.is_some() && second.is_some());
        assert!(registry.register(0x5000 as *mut u8, 0x1000, true).is_none());
        drop(first);
        let third = registry.register(0x5000 as *mut u8, 0x1000, true);
        assert!(third.is_some(), "a released slot is reused");
        assert_eq!(registry.in_use.load(Ordering::Relaxed), 2);
    }

    #[test]
    fn faults_outside_every_live_range_are_forwarded() {
        let registry = Registry::<4>::new();
        let protection = registry.register(0x10000 as *mut u8, 0x2000, true);
        assert!(protection.is_some());
        for address in [0, 0xffff, 0x12000, usize::MAX] {
            assert_eq!(registry.repair(address), Outcome::Forward, "{address:#x}");
        }
        drop(protection);
        // A released range is no longer ours, even at an address it held.
        assert_eq!(registry.repair(0x10000), Outcome::Forward);
    }

    #[test]
    fn repair_replaces_a_truncated_file_mapping_with_zeros() {
        use crate::sys::{memfd, shm};
        let fd = memfd::create("sigbus-test", false).unwrap();
        shm::set_len(&fd, 3 * 4096).unwrap();
        let map = memmap2::MmapOptions::new()
            .len(3 * 4096)
            .map_raw(&fd)
            .unwrap();
        let start = map.as_mut_ptr();
        // SAFETY: the mapping is 3 pages long and writable.
        unsafe { start.write_bytes(0xa5, 3 * 4096) };
        let registry = Registry::<4>::new();
        let protection = registry.register(start, 3 * 4096, true).unwrap();
        shm::set_len(&fd, 0).unwrap();
        // As the handler would for a fault in the middle page.
        assert_eq!(registry.repair(start as usize + 4096), Outcome::Retry);
        assert!(protection.is_broken());
        // SAFETY: the range is mapped again (private zeros), 3 pages long.
        let zeros = (0..3 * 4096).all(|i| unsafe { start.add(i).read() } == 0);
        assert!(zeros);
        // A second fault in the range, from a thread that lost the race.
        assert_eq!(registry.repair(start as usize), Outcome::Retry);
        drop(protection);
        drop(map);
    }

    #[test]
    fn a_stale_generation_cannot_claim_a_reused_slot() {
        let registry = Registry::<1>::new();
        let first = registry.register(0x1000 as *mut u8, 0x1000, true).unwrap();
        let old_word = first.live;
        drop(first);
        let second = registry.register(0x1000 as *mut u8, 0x1000, true).unwrap();
        assert_ne!(second.live, old_word);
        let slot = &registry.slots[0];
        // What a handler that read the first owner's word would attempt.
        let stale = slot.word.compare_exchange(
            old_word,
            with_state(old_word, REPAIRING),
            Ordering::AcqRel,
            Ordering::Acquire,
        );
        assert!(stale.is_err());
        assert!(!second.is_broken());
    }
}
