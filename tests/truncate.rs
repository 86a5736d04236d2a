//! Named segments whose file is truncated while they are mapped. The
//! process that maps one survives, reads zeros and sees the segment broken;
//! faults that are not in our segments still kill, or reach the handler
//! that was there before ours.
//!
//! The truncating process is a forked child
//! (`common::truncate::truncate_segment_file_from_child`, shared with other
//! test binaries); processes expected to die are re-executed copies of
//! this binary in a role.

mod common;

use std::os::unix::process::ExitStatusExt;
use std::process::ExitStatus;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use common::truncate::{segment_file, truncate_segment_file_from_child};
use common::{ChildGuard, Cleanup, child_role, eventually, spawn_child, unique_posix};
use ipcring::segment::{Address, CreateOptions, HEADER_SIZE, OpenOptions, Segment, SegmentError};

const USER_SIZE: usize = 64 * 1024;
const LIMIT: Duration = Duration::from_secs(20);

fn address_from_env() -> Address {
    std::env::var("SEGMENT").unwrap().parse().unwrap()
}

fn fill(segment: &Segment, byte: u8) {
    // SAFETY: the user area is mapped and writable for `user_len` bytes;
    // a raw write, as other processes may touch the same bytes.
    unsafe { std::ptr::write_bytes(segment.user_ptr(), byte, segment.user_len()) };
}

fn user_bytes(segment: &Segment) -> Vec<u8> {
    let mut bytes = vec![0u8; segment.user_len()];
    // SAFETY: the user area is mapped for `user_len` bytes; a raw copy into
    // memory of our own.
    unsafe {
        std::ptr::copy_nonoverlapping(segment.user_ptr(), bytes.as_mut_ptr(), bytes.len());
    }
    bytes
}

fn word(segment: &Segment, offset: usize) -> &AtomicU64 {
    segment.view::<AtomicU64>(offset).unwrap()
}

/// Waits for a child that may die of a signal.
fn wait_status(child: &mut ChildGuard, limit: Duration) -> ExitStatus {
    let started = Instant::now();
    loop {
        if let Some(status) = child.child().try_wait().unwrap() {
            child.0 = None;
            return status;
        }
        assert!(started.elapsed() < limit, "child still running");
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// The current SIGBUS handler address (or SIG_DFL/SIG_IGN).
fn sigbus_disposition() -> libc::sighandler_t {
    // SAFETY: an all-zero sigaction is a valid value of this C struct.
    let mut action: libc::sigaction = unsafe { std::mem::zeroed() };
    // SAFETY: a null new action only queries; `action` is writable.
    let ret = unsafe { libc::sigaction(libc::SIGBUS, std::ptr::null(), &mut action) };
    assert_eq!(ret, 0);
    action.sa_sigaction
}

/// A shared file mapping that ipcring knows nothing about, whose file is
/// already truncated: touching `address` faults with SIGBUS (BUS_ADRERR).
fn foreign_truncated_mapping() -> *mut u8 {
    // SAFETY: the name is a NUL-terminated literal.
    let fd = unsafe { libc::memfd_create(c"foreign".as_ptr(), libc::MFD_CLOEXEC) };
    assert!(fd >= 0);
    // SAFETY: plain syscalls on the descriptor we just made; the mapping is
    // never unmapped (the process ends with it).
    unsafe {
        assert_eq!(libc::ftruncate(fd, 4096), 0);
        let address = libc::mmap(
            std::ptr::null_mut(),
            4096,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_SHARED,
            fd,
            0,
        );
        assert_ne!(address, libc::MAP_FAILED);
        assert_eq!(libc::ftruncate(fd, 0), 0);
        address.cast()
    }
}

/// Keeps a process that is about to die on purpose from writing a core file.
fn no_core_dump() {
    // SAFETY: prctl with PR_SET_DUMPABLE only changes this process's flag.
    unsafe { libc::prctl(libc::PR_SET_DUMPABLE, 0) };
}

#[test]
fn a_truncated_segment_reads_zeros_and_reports_broken() {
    let address = unique_posix("trunc");
    let _cleanup = Cleanup(address.clone());
    let segment = Segment::create(&address, &CreateOptions::new(USER_SIZE)).unwrap();
    fill(&segment, 0xa5);
    assert!(!segment.is_broken());
    // Creating the segment installed the handler; it is too late to opt out.
    assert!(!ipcring::platform::disable_sigbus_handler());

    truncate_segment_file_from_child(&address, 0);
    // Nothing has touched the lost pages yet.
    assert!(!segment.is_broken());
    assert_eq!(word(&segment, 0).load(Ordering::Acquire), 0);
    assert!(segment.is_broken());
    assert!(user_bytes(&segment).iter().all(|&b| b == 0));

    // Writes land in private memory: they work, and no one else sees them.
    word(&segment, 8).store(7, Ordering::Release);
    assert_eq!(word(&segment, 8).load(Ordering::Acquire), 7);
    fill(&segment, 0x5a);
    assert!(user_bytes(&segment).iter().all(|&b| b == 0x5a));
    assert_eq!(std::fs::metadata(segment_file(&address)).unwrap().len(), 0);
    assert!(segment.is_broken());
    // Leaving the participants table writes the (now private) header.
    drop(segment);
}

#[test]
fn threads_that_fault_at_once_all_survive() {
    let address = unique_posix("threads");
    let _cleanup = Cleanup(address.clone());
    let segment = Segment::create(&address, &CreateOptions::new(USER_SIZE)).unwrap();
    fill(&segment, 0xa5);
    truncate_segment_file_from_child(&address, 0);
    let threads = 4;
    let start = std::sync::Barrier::new(threads);
    std::thread::scope(|scope| {
        for thread in 0..threads {
            let (segment, start) = (&segment, &start);
            scope.spawn(move || {
                start.wait();
                // Each on its own page: one repairs the range, the others
                // fault before or while it does and run again on zeros.
                let offset = thread * (USER_SIZE / threads);
                assert_eq!(word(segment, offset).load(Ordering::Acquire), 0);
            });
        }
    });
    assert!(segment.is_broken());
    assert!(user_bytes(&segment).iter().all(|&b| b == 0));
}

#[test]
fn an_attached_process_survives_when_a_third_truncates_the_file() {
    if let Some(role) = child_role() {
        assert_eq!(role, "attached");
        let segment = Segment::open(&address_from_env(), &OpenOptions::new()).unwrap();
        assert_eq!(word(&segment, 0).load(Ordering::Acquire), 0xfeed);
        word(&segment, 8).store(1, Ordering::Release);
        let file = segment_file(&address_from_env());
        eventually(LIMIT, "the truncation", || {
            std::fs::metadata(&file).unwrap().len() == 0
        });
        assert!(!segment.is_broken());
        assert_eq!(word(&segment, 0).load(Ordering::Acquire), 0);
        assert!(segment.is_broken());
        return;
    }
    let address = unique_posix("third");
    let _cleanup = Cleanup(address.clone());
    let segment = Segment::create(&address, &CreateOptions::new(USER_SIZE)).unwrap();
    word(&segment, 0).store(0xfeed, Ordering::Release);
    let child = spawn_child(
        "an_attached_process_survives_when_a_third_truncates_the_file",
        "attached",
        &[("SEGMENT", address.to_string())],
    );
    // Acquire: pairs with the child's Release store once it has attached.
    eventually(LIMIT, "the child to attach", || {
        word(&segment, 8).load(Ordering::Acquire) == 1
    });
    truncate_segment_file_from_child(&address, 0);
    child.wait_success(LIMIT);
    // The creator was never touched after the truncation: not broken yet.
    assert!(!segment.is_broken());
}

#[test]
fn truncate_then_regrow_reads_zeros_and_goes_unnoticed() {
    let address = unique_posix("regrow");
    let _cleanup = Cleanup(address.clone());
    let segment = Segment::create(&address, &CreateOptions::new(USER_SIZE)).unwrap();
    fill(&segment, 0xa5);
    let total = (HEADER_SIZE + USER_SIZE) as u64;
    truncate_segment_file_from_child(&address, 0);
    truncate_segment_file_from_child(&address, total);

    // The file has pages again, so nothing faults: the mapping is shared
    // and working, but everything in it, header included, is zero.
    assert!(user_bytes(&segment).iter().all(|&b| b == 0));
    assert!(!segment.is_broken(), "no fault, so nothing to detect");
    word(&segment, 0).store(0x1234, Ordering::Release);
    let on_disk = std::fs::read(segment_file(&address)).unwrap();
    assert_eq!(on_disk.len() as u64, total);
    assert_eq!(
        on_disk[HEADER_SIZE..HEADER_SIZE + 8],
        0x1234u64.to_ne_bytes()
    );
    // Only re-validating the contents tells: a fresh open finds no header,
    // which is what an object abandoned mid-creation looks like.
    let reopened = Segment::open(
        &address,
        &OpenOptions::new().timeout(Duration::from_millis(20)),
    );
    assert!(matches!(reopened, Err(SegmentError::Abandoned { .. })));
    assert!(!segment.is_broken());
}

#[test]
fn an_access_between_truncate_and_regrow_breaks_the_segment() {
    let address = unique_posix("gap");
    let _cleanup = Cleanup(address.clone());
    let segment = Segment::create(&address, &CreateOptions::new(USER_SIZE)).unwrap();
    fill(&segment, 0xa5);
    truncate_segment_file_from_child(&address, 0);
    assert_eq!(word(&segment, 0).load(Ordering::Acquire), 0);
    assert!(segment.is_broken());
    let total = (HEADER_SIZE + USER_SIZE) as u64;
    truncate_segment_file_from_child(&address, total);

    // Our mapping is private zeros now: it stays broken, and what we write
    // does not reach the regrown file.
    word(&segment, 0).store(0x1234, Ordering::Release);
    assert!(segment.is_broken());
    let on_disk = std::fs::read(segment_file(&address)).unwrap();
    assert!(on_disk.iter().all(|&b| b == 0));
}

#[test]
fn only_the_truncated_segment_is_broken() {
    let first = unique_posix("pair");
    let second = unique_posix("pair");
    let _cleanup = (Cleanup(first.clone()), Cleanup(second.clone()));
    let truncated = Segment::create(&first, &CreateOptions::new(USER_SIZE)).unwrap();
    let intact = Segment::create(&second, &CreateOptions::new(USER_SIZE)).unwrap();
    fill(&truncated, 0x11);
    fill(&intact, 0x22);

    // This time the file is opened separately and truncated in-process.
    let file = std::fs::OpenOptions::new()
        .write(true)
        .open(segment_file(&first))
        .unwrap();
    file.set_len(0).unwrap();

    assert!(user_bytes(&truncated).iter().all(|&b| b == 0));
    assert!(user_bytes(&intact).iter().all(|&b| b == 0x22));
    assert!(truncated.is_broken());
    assert!(!intact.is_broken());
}

#[test]
fn a_fault_outside_our_segments_still_kills() {
    if child_role().is_some() {
        let before = sigbus_disposition();
        let address = address_from_env();
        let _segment = Segment::create(&address, &CreateOptions::new(USER_SIZE)).unwrap();
        assert_ne!(sigbus_disposition(), before, "our handler is installed");
        let foreign = foreign_truncated_mapping();
        no_core_dump();
        // SAFETY: the address is mapped; the read faults, which is the point.
        let byte = unsafe { foreign.read_volatile() };
        panic!("read {byte} from a truncated foreign mapping and survived");
    }
    let address = unique_posix("foreign");
    let _cleanup = Cleanup(address.clone());
    let mut child = spawn_child(
        "a_fault_outside_our_segments_still_kills",
        "fault",
        &[("SEGMENT", address.to_string())],
    );
    let status = wait_status(&mut child, LIMIT);
    assert_eq!(status.signal(), Some(libc::SIGBUS), "{status:?}");
}

/// The fault address the handler below expects, and its verdict.
static EXPECTED_FAULT: AtomicUsize = AtomicUsize::new(0);
const CHAINED_EXIT: i32 = 42;

extern "C" fn earlier_handler(_: libc::c_int, info: *mut libc::siginfo_t, _: *mut libc::c_void) {
    // SAFETY: the kernel (through our chaining) passes a valid siginfo.
    let address = unsafe { (*info).si_addr() } as usize;
    let expected = EXPECTED_FAULT.load(Ordering::Relaxed);
    let code = if address == expected { CHAINED_EXIT } else { 1 };
    // SAFETY: _exit is async-signal-safe.
    unsafe { libc::_exit(code) };
}

#[test]
fn a_fault_outside_our_segments_reaches_the_earlier_handler() {
    if child_role().is_some() {
        // SAFETY: an all-zero sigaction is a valid value of this C struct.
        let mut action: libc::sigaction = unsafe { std::mem::zeroed() };
        action.sa_sigaction = earlier_handler
            as extern "C" fn(libc::c_int, *mut libc::siginfo_t, *mut libc::c_void)
            as libc::sighandler_t;
        action.sa_flags = libc::SA_SIGINFO;
        // SAFETY: installs a handler with the SA_SIGINFO signature.
        let installed = unsafe { libc::sigaction(libc::SIGBUS, &action, std::ptr::null_mut()) };
        assert_eq!(installed, 0);
        let address = address_from_env();
        let segment = Segment::create(&address, &CreateOptions::new(USER_SIZE)).unwrap();
        assert_ne!(sigbus_disposition(), action.sa_sigaction);
        // A fault in our segment is ours: the earlier handler is not called.
        truncate_segment_file_from_child(&address, 0);
        assert_eq!(word(&segment, 0).load(Ordering::Acquire), 0);
        assert!(segment.is_broken());
        // Any other fault is theirs.
        let foreign = foreign_truncated_mapping();
        EXPECTED_FAULT.store(foreign as usize, Ordering::Relaxed);
        // SAFETY: the address is mapped; the read faults, which is the point.
        let byte = unsafe { foreign.read_volatile() };
        panic!("read {byte} from a truncated foreign mapping and survived");
    }
    let address = unique_posix("chain");
    let _cleanup = Cleanup(address.clone());
    let mut child = spawn_child(
        "a_fault_outside_our_segments_reaches_the_earlier_handler",
        "fault",
        &[("SEGMENT", address.to_string())],
    );
    let status = wait_status(&mut child, LIMIT);
    assert_eq!(status.code(), Some(CHAINED_EXIT), "{status:?}");
}

fn set_sigbus_disposition(disposition: libc::sighandler_t) {
    // SAFETY: an all-zero sigaction is a valid value of this C struct.
    let mut action: libc::sigaction = unsafe { std::mem::zeroed() };
    action.sa_sigaction = disposition;
    // SAFETY: SIG_DFL and SIG_IGN name no handler function.
    let set = unsafe { libc::sigaction(libc::SIGBUS, &action, std::ptr::null_mut()) };
    assert_eq!(set, 0);
}

#[test]
fn without_an_earlier_handler_sigbus_keeps_its_old_disposition() {
    if let Some(role) = child_role() {
        let (disposition, event) = role.split_once('-').unwrap();
        // Take std's stack-overflow handler out of the way, so ours is the
        // only one and has nothing to chain to.
        set_sigbus_disposition(match disposition {
            "default" => libc::SIG_DFL,
            _ => libc::SIG_IGN,
        });
        let before = sigbus_disposition();
        let _segment =
            Segment::create(&address_from_env(), &CreateOptions::new(USER_SIZE)).unwrap();
        assert_ne!(sigbus_disposition(), before, "our handler is installed");
        no_core_dump();
        if event == "fault" {
            let foreign = foreign_truncated_mapping();
            // SAFETY: the address is mapped; the read faults, which is the
            // point.
            let byte = unsafe { foreign.read_volatile() };
            panic!("read {byte} from a truncated foreign mapping and survived");
        }
        // Sent, not a fault: delivered to this thread before raise returns.
        // SAFETY: raise has no preconditions.
        unsafe { libc::raise(libc::SIGBUS) };
        assert_eq!(disposition, "ignored", "survived a SIGBUS by default");
        return;
    }
    let test = "without_an_earlier_handler_sigbus_keeps_its_old_disposition";
    for (role, dies) in [
        ("default-fault", true),
        ("default-raise", true),
        ("ignored-fault", true),
        ("ignored-raise", false),
    ] {
        let address = unique_posix("olddisp");
        let _cleanup = Cleanup(address.clone());
        let mut child = spawn_child(test, role, &[("SEGMENT", address.to_string())]);
        let status = wait_status(&mut child, LIMIT);
        if dies {
            assert_eq!(status.signal(), Some(libc::SIGBUS), "{role}: {status:?}");
        } else {
            assert_eq!(status.code(), Some(0), "{role}: {status:?}");
        }
    }
}

#[test]
fn opting_out_leaves_sigbus_alone() {
    match child_role().as_deref() {
        Some("environment") => {
            let before = sigbus_disposition();
            let address = address_from_env();
            let segment = Segment::create(&address, &CreateOptions::new(USER_SIZE)).unwrap();
            assert_eq!(sigbus_disposition(), before);
            truncate_segment_file_from_child(&address, 0);
            no_core_dump();
            let value = word(&segment, 0).load(Ordering::Acquire);
            panic!("read {value} from a truncated, unprotected segment and survived");
        }
        Some("function") => {
            assert!(ipcring::platform::disable_sigbus_handler());
            let before = sigbus_disposition();
            let address = address_from_env();
            let _segment = Segment::create(&address, &CreateOptions::new(USER_SIZE)).unwrap();
            assert_eq!(sigbus_disposition(), before);
            assert!(ipcring::platform::disable_sigbus_handler());
            return;
        }
        _ => {}
    }
    let test = "opting_out_leaves_sigbus_alone";
    let address = unique_posix("optout");
    let _cleanup = Cleanup(address.clone());
    let env = [
        ("SEGMENT", address.to_string()),
        (ipcring::platform::NO_SIGBUS_HANDLER_VAR, "1".to_string()),
    ];
    let mut child = spawn_child(test, "environment", &env);
    let status = wait_status(&mut child, LIMIT);
    assert_eq!(status.signal(), Some(libc::SIGBUS), "{status:?}");

    let address = unique_posix("optout");
    let _cleanup = Cleanup(address.clone());
    let child = spawn_child(test, "function", &[("SEGMENT", address.to_string())]);
    child.wait_success(LIMIT);
}
