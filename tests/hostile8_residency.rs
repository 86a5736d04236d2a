//! A hostile environment for the residency options (prefault, lock, huge
//! pages): a locked-memory limit that fits one mapping but not the next,
//! no right to SysV huge pages, a read-only opener that locks, and a file
//! cut short and regrown while openers map and lock it. Each refusal is a
//! typed error that leaves no name, no key and no live registration.

mod common;

use std::time::{Duration, Instant};

use common::{Cleanup, mapping_stats, unique_posix, unique_sysv};
use ipcring::channel::{ChannelError, ChannelOptions, spsc, stream};
use ipcring::segment::{
    Address, CreateOptions, HEADER_SIZE, HugePagesReason, OpenOptions, Segment, SegmentError,
};

const LIMIT: Duration = Duration::from_secs(30);

fn env_address(name: &str) -> Address {
    std::env::var(name).unwrap().parse().unwrap()
}

/// Whether nothing answers at `address`: no name in /dev/shm, no key.
fn assert_nothing_left(address: &Address) {
    match Segment::open(address, &OpenOptions::new().timeout(Duration::ZERO)) {
        Err(SegmentError::NotFound(_)) => {}
        other => panic!("{address}: something was left behind: {other:?}"),
    }
    if let Address::Posix(name) = address {
        let path = std::path::Path::new("/dev/shm").join(name.file_name());
        assert!(!path.exists(), "{} was left behind", path.display());
    }
}

/// The participants of `address` whose process still runs.
fn live_participants(address: &Address) -> usize {
    Segment::inspect(address)
        .unwrap()
        .participants
        .iter()
        .filter(|participant| participant.alive)
        .count()
}

/// Lowers RLIMIT_MEMLOCK to `bytes` and drops CAP_IPC_LOCK (which would
/// let a root process lock beyond it) from this thread, which then does
/// the locking.
fn limit_locking_to(bytes: u64) {
    let limit = libc::rlimit {
        rlim_cur: bytes,
        rlim_max: bytes,
    };
    // SAFETY: `limit` is a valid rlimit, read by the call.
    assert_eq!(unsafe { libc::setrlimit(libc::RLIMIT_MEMLOCK, &limit) }, 0);
    common::drop_capability(CAP_IPC_LOCK);
}

const CAP_IPC_LOCK: u32 = 14;

fn expect_lock_failed<T>(what: &str, result: Result<T, ChannelError>) {
    match result {
        Err(ChannelError::Segment(SegmentError::LockFailed { .. })) => {}
        Err(e) => panic!("{what}: expected LockFailed, got {e:?}"),
        Ok(_) => panic!("{what}: locked without room to lock"),
    }
}

const STREAM_CAPACITY: usize = 64 * 1024;

/// Run in a child: a limit that covers a stream's segment but not its
/// data mapped a second time (twice over) for the mirror.
fn lock_a_stream_segment_but_not_its_mirror() {
    let fresh = env_address("FRESH");
    let existing = env_address("EXISTING");
    let locked = ChannelOptions::new().lock_memory(true);
    // What the segment alone takes, measured before any limit.
    let probe = stream::create_segment(None, STREAM_CAPACITY, &ChannelOptions::new()).unwrap();
    let segment_bytes = (HEADER_SIZE + probe.user_len()) as u64;
    drop(probe);
    limit_locking_to(segment_bytes + STREAM_CAPACITY as u64);

    // The segment itself fits the limit: that is what is being tested.
    let alone = Segment::create_anonymous(
        &CreateOptions::new(segment_bytes as usize - HEADER_SIZE).lock_memory(true),
    );
    assert!(alone.is_ok(), "the segment alone must fit: {alone:?}");
    drop(alone);

    expect_lock_failed(
        "Writer::create",
        stream::Writer::create(&fresh, STREAM_CAPACITY, &locked),
    );
    assert_nothing_left(&fresh);
    expect_lock_failed(
        "Reader::create",
        stream::Reader::create(&fresh, STREAM_CAPACITY, &locked),
    );
    assert_nothing_left(&fresh);
    expect_lock_failed("pipe", stream::pipe(STREAM_CAPACITY, &locked));

    // An opener of an existing stream that locks its mapping: the segment
    // fits, the mirror does not; it leaves the stream as it found it.
    let before = live_participants(&existing);
    let opened = Segment::open(&existing, &OpenOptions::new().lock_memory(true)).unwrap();
    expect_lock_failed("Reader::attach", stream::Reader::attach(opened));
    assert_eq!(live_participants(&existing), before);
    // And a plain reader still attaches, so no reader slot was left taken.
    let mut reader = stream::Reader::open(&existing).unwrap();
    let mut byte = [0u8; 1];
    use std::io::Read;
    reader.read_exact(&mut byte).unwrap();
    assert_eq!(byte, [42]);
}

/// A stream whose segment can be locked but whose mirrored data cannot
/// (RLIMIT_MEMLOCK between the two, no CAP_IPC_LOCK): `Writer::create` and
/// `Reader::create` fail with `LockFailed` and leave no name in /dev/shm,
/// and an opener that fails the same way leaves no registration.
#[test]
fn a_stream_whose_mirror_cannot_be_locked_leaves_no_name_behind() {
    const NAME: &str = "a_stream_whose_mirror_cannot_be_locked_leaves_no_name_behind";
    if common::child_role().is_some() {
        lock_a_stream_segment_but_not_its_mirror();
        return;
    }
    let fresh = unique_posix("h8-stream-lock");
    let existing = unique_posix("h8-stream-lock-open");
    let _cleanup = (Cleanup(fresh.clone()), Cleanup(existing.clone()));
    let mut writer =
        stream::Writer::create(&existing, STREAM_CAPACITY, &ChannelOptions::new()).unwrap();
    use std::io::Write;
    writer.write_all(&[42]).unwrap();
    common::spawn_child(
        NAME,
        "lock-stream",
        &[
            ("FRESH", fresh.to_string()),
            ("EXISTING", existing.to_string()),
        ],
    )
    .wait_success(LIMIT);
    assert_nothing_left(&fresh);
    assert_eq!(live_participants(&existing), 1, "only the writer's process");
}

/// Run in a child with no room to lock: `open_or_create` of channels the
/// parent made, asking to lock; and of fresh names, POSIX and SysV.
fn open_channels_without_room_to_lock() {
    use ipcring::channel::queue::{Queue, QueueConfig, Select};
    let spsc_at = env_address("SPSC");
    let queue_at = env_address("QUEUE");
    let fresh = [env_address("FRESH_POSIX"), env_address("FRESH_SYSV")];
    let locked = ChannelOptions::new().lock_memory(true);
    let before = [live_participants(&spsc_at), live_participants(&queue_at)];
    limit_locking_to(0);
    expect_lock_failed(
        "spsc open_or_create",
        spsc::Receiver::<u64>::open_or_create(&spsc_at, 64, &locked),
    );
    match Queue::open_or_create(&queue_at, &QueueConfig::new(8, 64), &locked) {
        Err(e) => {
            let message = format!("{e:?}");
            assert!(message.contains("LockFailed"), "queue: {message}");
        }
        Ok(_) => panic!("queue: opened and locked without room to lock"),
    }
    for address in &fresh {
        expect_lock_failed(
            "fresh spsc",
            spsc::Sender::<u64>::open_or_create(address, 64, &locked),
        );
        assert_nothing_left(address);
    }
    assert_eq!(
        [live_participants(&spsc_at), live_participants(&queue_at)],
        before
    );
    // No endpoint slot was left taken: the only receiver attaches.
    let mut rx = spsc::Receiver::<u64>::open(&spsc_at).unwrap();
    assert_eq!(rx.try_recv().unwrap(), 5);
    let mut queue = Queue::open(&queue_at).unwrap();
    let mut buffer = [0u8; 64];
    assert_eq!(queue.try_recv(Select::Any, &mut buffer).unwrap().len, 3);
}

/// Channels that exist, opened by a process that asks to lock and may
/// not (`open_or_create`, RLIMIT_MEMLOCK 0, no CAP_IPC_LOCK), and fresh
/// names created the same way: `LockFailed`, no name or key left, no
/// live registration, and the channels' endpoints still free to take.
#[test]
fn channel_openers_that_cannot_lock_leave_each_channel_as_it_was() {
    const NAME: &str = "channel_openers_that_cannot_lock_leave_each_channel_as_it_was";
    if common::child_role().is_some() {
        open_channels_without_room_to_lock();
        return;
    }
    use ipcring::channel::queue::{Queue, QueueConfig};
    let spsc_at = unique_posix("h8-lock-spsc");
    let queue_at = unique_sysv();
    let fresh_posix = unique_posix("h8-lock-fresh");
    let fresh_sysv = unique_sysv();
    let _cleanup = [&spsc_at, &queue_at, &fresh_posix, &fresh_sysv].map(|a| Cleanup(a.clone()));
    let options = ChannelOptions::new();
    let mut tx = spsc::Sender::<u64>::create(&spsc_at, 64, &options).unwrap();
    tx.send(5).unwrap();
    let mut queue = Queue::create(&queue_at, &QueueConfig::new(8, 64), &options).unwrap();
    queue.send(b"abc", 1, 0).unwrap();
    common::spawn_child(
        NAME,
        "open-without-lock-room",
        &[
            ("SPSC", spsc_at.to_string()),
            ("QUEUE", queue_at.to_string()),
            ("FRESH_POSIX", fresh_posix.to_string()),
            ("FRESH_SYSV", fresh_sysv.to_string()),
        ],
    )
    .wait_success(LIMIT);
    assert_nothing_left(&fresh_posix);
    assert_nothing_left(&fresh_sysv);
}

/// Run in a child: read-only openers that lock, with and without room.
fn lock_read_only_openings() {
    let existing = env_address("EXISTING");
    let read_only_locked = OpenOptions::new().read_only().lock_memory(true);
    let before = Segment::inspect(&existing).unwrap().participants.len();
    let inspected = Segment::open(&existing, &read_only_locked).unwrap();
    let stats = mapping_stats(inspected.user_ptr());
    assert!(stats.lock_flag, "a read-only mapping is locked too");
    assert_eq!(stats.resident, stats.size, "locking faulted it in");
    assert!(matches!(
        inspected.view::<std::sync::atomic::AtomicU64>(0),
        Err(SegmentError::ReadOnly)
    ));
    assert_eq!(
        Segment::inspect(&existing).unwrap().participants.len(),
        before,
        "a read-only opener does not register"
    );
    drop(inspected);

    limit_locking_to(0);
    match Segment::open(&existing, &read_only_locked) {
        Err(SegmentError::LockFailed { limit: Some(0), .. }) => {}
        other => panic!("expected LockFailed, got {other:?}"),
    }
    // Prefault alone needs no lock.
    Segment::open(&existing, &OpenOptions::new().read_only().prefault(true)).unwrap();
    assert_eq!(
        Segment::inspect(&existing).unwrap().participants.len(),
        before
    );
}

/// `mlock` of a segment opened read-only: locked and resident, with no
/// registration; with no room to lock, `LockFailed`.
#[test]
fn a_read_only_opener_may_lock_and_still_registers_nothing() {
    const NAME: &str = "a_read_only_opener_may_lock_and_still_registers_nothing";
    if common::child_role().is_some() {
        lock_read_only_openings();
        return;
    }
    let existing = unique_posix("h8-ro-lock");
    let sysv = unique_sysv();
    let _cleanup = (Cleanup(existing.clone()), Cleanup(sysv.clone()));
    for address in [&existing, &sysv] {
        let _segment = Segment::create(address, &CreateOptions::new(1 << 16)).unwrap();
        common::spawn_child(NAME, "lock-ro", &[("EXISTING", address.to_string())])
            .wait_success(LIMIT);
        assert_eq!(Segment::inspect(address).unwrap().participants.len(), 1);
    }
}

/// Run in a child: no CAP_IPC_LOCK, no RLIMIT_MEMLOCK, and not in
/// `vm.hugetlb_shm_group` (gid 0 by default, so we leave it).
fn ask_for_sysv_huge_pages_without_permission() {
    let sysv = env_address("SYSV");
    let channel_key = env_address("CHANNEL");
    let group: u32 = std::fs::read_to_string("/proc/sys/vm/hugetlb_shm_group")
        .map(|text| text.trim().parse().unwrap_or(0))
        .unwrap_or(0);
    let outsider: libc::gid_t = if group == 65534 { 65533 } else { 65534 };
    // SAFETY: plain syscalls; a null list with size 0 clears the groups.
    unsafe {
        assert_eq!(libc::setgroups(0, std::ptr::null()), 0, "setgroups");
        assert_eq!(libc::setgid(outsider), 0, "setgid");
    }
    limit_locking_to(0);
    let huge = CreateOptions::new(4096).huge_pages(true);
    let supported = std::fs::read_to_string("/proc/meminfo")
        .unwrap()
        .contains("Hugepagesize:");
    match Segment::create(&sysv, &huge) {
        Err(SegmentError::HugePagesUnavailable {
            reason: HugePagesReason::NotPermitted,
        }) if supported => {}
        Err(SegmentError::HugePagesUnavailable {
            reason: HugePagesReason::NotSupported,
        }) if !supported => {}
        other => panic!("{sysv}: expected NotPermitted, got {other:?}"),
    }
    assert_nothing_left(&sysv);
    match spsc::Sender::<u64>::create(&channel_key, 64, &ChannelOptions::new().huge_pages(true)) {
        Err(ChannelError::Segment(SegmentError::HugePagesUnavailable { .. })) => {}
        Err(e) => panic!("{channel_key}: expected HugePagesUnavailable, got {e:?}"),
        Ok(_) => panic!("{channel_key}: created without permission"),
    }
    assert_nothing_left(&channel_key);
    // An anonymous segment asks no permission, only the pool.
    match Segment::create_anonymous(&huge) {
        Ok(_) | Err(SegmentError::HugePagesUnavailable { .. }) => {}
        Err(e) => panic!("memfd: expected a segment or HugePagesUnavailable, got {e:?}"),
    }
}

/// SysV huge pages asked for by a process that may not have them (outside
/// the hugetlb group, no CAP_IPC_LOCK, no locked-memory allowance):
/// `HugePagesUnavailable` and no key left, for a segment and a channel.
#[test]
fn sysv_huge_pages_without_permission_are_refused_and_leave_no_key() {
    const NAME: &str = "sysv_huge_pages_without_permission_are_refused_and_leave_no_key";
    if common::child_role().is_some() {
        ask_for_sysv_huge_pages_without_permission();
        return;
    }
    // SAFETY: geteuid only reads.
    if unsafe { libc::geteuid() } != 0 {
        eprintln!("skipped: changing groups needs root");
        return;
    }
    let sysv = unique_sysv();
    let channel_key = unique_sysv();
    let _cleanup = (Cleanup(sysv.clone()), Cleanup(channel_key.clone()));
    common::spawn_child(
        NAME,
        "sysv-huge",
        &[
            ("SYSV", sysv.to_string()),
            ("CHANNEL", channel_key.to_string()),
        ],
    )
    .wait_success(LIMIT);
    assert_nothing_left(&sysv);
    assert_nothing_left(&channel_key);
}

/// A forked child that cuts the file at `path` to `short` bytes and grows
/// it back to `full`, over and over, until killed.
struct Truncator {
    pid: libc::pid_t,
}

impl Truncator {
    fn start(address: &Address, short: u64, full: u64) -> Truncator {
        let path = std::ffi::CString::new(
            common::truncate::segment_file(address)
                .into_os_string()
                .into_encoded_bytes(),
        )
        .unwrap();
        let (short, full) = (short as libc::off_t, full as libc::off_t);
        // SAFETY: the child runs only open, ftruncate, sched_yield and
        // _exit, which are async-signal-safe, so forking a multi-threaded
        // process is sound.
        let pid = unsafe { libc::fork() };
        assert!(pid >= 0, "fork");
        if pid == 0 {
            // SAFETY: `path` is a NUL-terminated string the child inherited;
            // the rest are plain syscalls.
            unsafe {
                let fd = libc::open(path.as_ptr(), libc::O_RDWR | libc::O_CLOEXEC);
                if fd < 0 {
                    libc::_exit(1);
                }
                loop {
                    libc::ftruncate(fd, short);
                    libc::sched_yield();
                    libc::ftruncate(fd, full);
                    libc::sched_yield();
                }
            }
        }
        Truncator { pid }
    }
}

impl Drop for Truncator {
    fn drop(&mut self) {
        // SAFETY: our own child, not yet reaped.
        unsafe {
            libc::kill(self.pid, libc::SIGKILL);
            libc::waitpid(self.pid, std::ptr::null_mut(), 0);
        }
    }
}

/// Whether `e` is one of the errors an opener may meet while the file
/// under it is cut and regrown.
fn expected_while_truncating(e: &SegmentError) -> bool {
    matches!(
        e,
        SegmentError::Incompatible(_)
            | SegmentError::Corrupted { .. }
            | SegmentError::Abandoned { .. }
            | SegmentError::LockFailed { .. }
    )
}

/// A process cuts a segment's file short and grows it back in a loop
/// while this one opens it with prefault, with lock, read-only with
/// prefault, and maps a mirrored range with both: every attempt returns
/// (a segment or a typed error), none takes SIGBUS, and once the cutting
/// stops no live registration of ours is left.
#[test]
fn prefault_and_lock_while_another_process_truncates_are_typed() {
    const ROUNDS: usize = 300;
    let address = unique_posix("h8-trunc-prefault");
    let _cleanup = Cleanup(address.clone());
    let user = 64 * 4096 - HEADER_SIZE;
    let creator = Segment::create(&address, &CreateOptions::new(user)).unwrap();
    let full = (HEADER_SIZE + user) as u64;
    let page = ipcring::segment::page_size();
    // The header's page survives each cut, so the header stays valid and
    // openers get as far as mapping, populating and locking.
    let truncator = Truncator::start(&address, page as u64, full);
    let options = [
        OpenOptions::new().prefault(true),
        OpenOptions::new().lock_memory(true),
        OpenOptions::new().prefault(true).lock_memory(true),
        OpenOptions::new().read_only().prefault(true),
        OpenOptions::new().read_only().lock_memory(true),
    ];
    let mirror_offset = page - HEADER_SIZE % page;
    let started = Instant::now();
    let (mut opened, mut refused, mut broken) = (0, 0, 0);
    for round in 0..ROUNDS {
        let options = &options[round % options.len()];
        match Segment::open(&address, options) {
            Ok(segment) => {
                opened += 1;
                // Touch the last page: zeros or the file's bytes, never a
                // fatal SIGBUS.
                let last = segment.user_len() - 8;
                if let Ok(word) = segment.view::<std::sync::atomic::AtomicU64>(last) {
                    word.load(std::sync::atomic::Ordering::Relaxed);
                }
                match segment.map_mirrored(mirror_offset, 4 * page) {
                    Ok(mirror) => {
                        // SAFETY: the mirror maps 2 * 4 pages; reading
                        // its last byte may fault, which the SIGBUS
                        // handler turns into zeros.
                        let byte = unsafe {
                            (*mirror
                                .as_ptr()
                                .add(8 * page - 1)
                                .cast::<std::sync::atomic::AtomicU8>())
                            .load(std::sync::atomic::Ordering::Relaxed)
                        };
                        assert!(byte == 0 || !mirror.is_broken());
                    }
                    Err(e) => assert!(expected_while_truncating(&e), "mirror: {e:?}"),
                }
                if segment.is_broken() {
                    broken += 1;
                }
            }
            Err(e) => {
                assert!(expected_while_truncating(&e), "round {round}: {e:?}");
                refused += 1;
            }
        }
        assert!(started.elapsed() < LIMIT, "took too long");
    }
    drop(truncator);
    eprintln!("{opened} opened ({broken} found broken), {refused} refused");
    // The cutting stopped with the file at either size: leave it whole.
    common::truncate::truncate_segment_file_from_child(&address, full);
    // Only the creator's registration is alive.
    let live: Vec<_> = Segment::inspect(&address)
        .unwrap()
        .participants
        .into_iter()
        .filter(|participant| participant.alive)
        .collect();
    assert_eq!(live.len(), 1, "{live:?}");
    drop(creator);
}

/// Held by the tests that take huge pages, so that they do not take them
/// from one another.
static HUGE_PAGE_POOL: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// The default huge page size, if the pool has `pages` pages free for us.
fn huge_pages_free(pages: u64) -> Option<usize> {
    let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap();
    let field = |name: &str| {
        meminfo.lines().find_map(|line| {
            let rest = line.strip_prefix(name)?.strip_prefix(':')?;
            rest.split_whitespace().next()?.parse::<u64>().ok()
        })
    };
    let size = field("Hugepagesize")? * 1024;
    let free = field("HugePages_Free")?.saturating_sub(field("HugePages_Rsvd")?);
    if free < pages {
        eprintln!(
            "skipped: {free} huge pages free, {pages} needed \
             (reserve some with `sysctl vm.nr_hugepages=N`)"
        );
        return None;
    }
    Some(size as usize)
}

/// Run in a child: open the huge page segment the parent made (SysV by
/// key, or a memfd by inherited descriptor) with prefault, lock and
/// read-only prefault; then, with no room to lock, fail cleanly.
fn open_huge_pages_elsewhere() {
    let huge: usize = std::env::var("HUGE").unwrap().parse().unwrap();
    let open = |options: &OpenOptions| match std::env::var("FD") {
        Ok(fd) => Segment::open_inherited(fd.parse().unwrap(), options),
        Err(_) => Segment::open(&env_address("SYSV"), options),
    };
    for options in [
        OpenOptions::new().prefault(true),
        OpenOptions::new().prefault(true).lock_memory(true),
        OpenOptions::new().read_only().prefault(true),
    ] {
        let segment = open(&options).unwrap();
        assert_eq!(segment.user_len(), huge - HEADER_SIZE, "{options:?}");
        let stats = mapping_stats(segment.user_ptr());
        assert_eq!(stats.page_size, huge as u64, "{options:?}: huge pages");
        assert_eq!(stats.hugetlb, huge as u64, "{options:?}: prefaulted");
        if let Ok(word) = segment.view::<std::sync::atomic::AtomicU64>(segment.user_len() - 8) {
            // The parent's 7, or the 8 an earlier opening here wrote.
            let seen = word.swap(8, std::sync::atomic::Ordering::Relaxed);
            assert!(seen == 7 || seen == 8, "{options:?}: {seen}");
        }
    }
    limit_locking_to(0);
    match open(&OpenOptions::new().prefault(true).lock_memory(true)) {
        Err(SegmentError::LockFailed { .. }) => {}
        other => panic!("expected LockFailed, got {other:?}"),
    }
}

/// A huge page segment (SysV, and an anonymous one handed down by
/// descriptor), its size rounded up from one byte, opened by another
/// process with prefault, with lock and read-only: each mapping is of
/// huge pages, all faulted in; an opener with no room to lock fails with
/// `LockFailed` and leaves no registration; removing it leaves no key.
#[test]
fn a_huge_page_segment_is_prefaulted_and_locked_by_another_process() {
    const NAME: &str = "a_huge_page_segment_is_prefaulted_and_locked_by_another_process";
    if common::child_role().is_some() {
        open_huge_pages_elsewhere();
        return;
    }
    let _pool = HUGE_PAGE_POOL.lock().unwrap_or_else(|e| e.into_inner());
    let Some(huge) = huge_pages_free(2) else {
        return;
    };
    let sysv = unique_sysv();
    let _cleanup = Cleanup(sysv.clone());
    let options = CreateOptions::new(1).huge_pages(true);
    let segment = Segment::create(&sysv, &options).unwrap();
    let anonymous = Segment::create_anonymous(&options).unwrap();
    for (segment, what) in [(&segment, "sysv"), (&anonymous, "memfd")] {
        assert_eq!(segment.user_len(), huge - HEADER_SIZE, "{what}: rounded up");
        segment
            .view::<std::sync::atomic::AtomicU64>(segment.user_len() - 8)
            .unwrap()
            .store(7, std::sync::atomic::Ordering::Relaxed);
    }
    let inherited = anonymous.inheritable_fd().unwrap();
    let fd = std::os::fd::AsRawFd::as_raw_fd(&inherited).to_string();
    let huge_text = huge.to_string();
    common::spawn_child(
        NAME,
        "open-huge",
        &[("SYSV", sysv.to_string()), ("HUGE", huge_text.clone())],
    )
    .wait_success(LIMIT);
    common::spawn_child(NAME, "open-huge", &[("FD", fd), ("HUGE", huge_text)]).wait_success(LIMIT);
    drop(inherited);
    for (segment, what) in [(&segment, "sysv"), (&anonymous, "memfd")] {
        let word = segment
            .view::<std::sync::atomic::AtomicU64>(segment.user_len() - 8)
            .unwrap();
        assert_eq!(word.load(std::sync::atomic::Ordering::Relaxed), 8, "{what}");
        let live = segment.participants().iter().filter(|p| p.alive).count();
        assert_eq!(live, 1, "{what}: only ours is alive");
    }
    drop((segment, anonymous));
    Segment::remove(&sysv).unwrap();
    assert_nothing_left(&sysv);
}

/// A byte stream's ring copied onto huge pages (an anonymous segment of
/// the stream's kind), as a peer could hand one over: attaching refuses
/// to map its data twice there, with `Unsupported`, instead of a mirror
/// that is not one.
#[test]
fn a_stream_ring_on_huge_pages_is_refused_when_attaching() {
    let _pool = HUGE_PAGE_POOL.lock().unwrap_or_else(|e| e.into_inner());
    if huge_pages_free(1).is_none() {
        return;
    }
    let page = ipcring::segment::page_size();
    let model = stream::create_segment(None, page, &ChannelOptions::new()).unwrap();
    let huge = Segment::create_anonymous(
        &CreateOptions::new(model.user_len())
            .kind(stream::KIND)
            .huge_pages(true),
    )
    .unwrap();
    for offset in (0..model.user_len()).step_by(8) {
        let word = model
            .view::<std::sync::atomic::AtomicU64>(offset)
            .unwrap()
            .load(std::sync::atomic::Ordering::Relaxed);
        huge.view::<std::sync::atomic::AtomicU64>(offset)
            .unwrap()
            .store(word, std::sync::atomic::Ordering::Relaxed);
    }
    let second = huge.reopen(&OpenOptions::new()).unwrap();
    for result in [
        stream::Reader::attach(huge).map(drop),
        stream::Writer::attach(second).map(drop),
    ] {
        match result {
            Err(ChannelError::Unsupported { .. })
            | Err(ChannelError::Segment(SegmentError::Unsupported { .. })) => {}
            other => panic!("expected Unsupported, got {other:?}"),
        }
    }
}

/// Sizes at the edge of the limit with huge pages: one that rounds up
/// past 1 TiB, and ones that fit it but no pool: typed errors, never an
/// overflow, and no key left. Needs no pool (the pool is what says no).
#[test]
fn huge_page_sizes_at_the_limit_are_typed_errors_that_leave_nothing() {
    use ipcring::segment::MAX_USER_SIZE;
    let _pool = HUGE_PAGE_POOL.lock().unwrap_or_else(|e| e.into_inner());
    let sysv = unique_sysv();
    let _cleanup = Cleanup(sysv.clone());
    for user in [
        MAX_USER_SIZE,
        MAX_USER_SIZE - HEADER_SIZE,
        MAX_USER_SIZE - HEADER_SIZE + 1,
        MAX_USER_SIZE + 1,
        usize::MAX,
    ] {
        let options = CreateOptions::new(user).huge_pages(true);
        for result in [
            Segment::create(&sysv, &options),
            Segment::create_anonymous(&options),
        ] {
            match result {
                Err(
                    SegmentError::InvalidOptions { .. } | SegmentError::HugePagesUnavailable { .. },
                ) => {}
                other => panic!("{user} bytes: expected a typed refusal, got {other:?}"),
            }
        }
        assert_nothing_left(&sysv);
    }
}
