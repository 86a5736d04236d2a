//! Keeping a segment's memory resident: prefaulting, locking, and huge
//! pages, as /proc/self/smaps shows them, for the creator and for an opener
//! in another process; and the typed errors when the system says no.

mod common;

use std::path::PathBuf;
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use common::{Cleanup, mapping_stats, unique_posix, unique_sysv};
use ipcring::segment::{
    Address, CreateOptions, HEADER_SIZE, HugePagesReason, OpenOptions, Segment, SegmentError,
};

/// A user area of 64 pages: big enough that a handful of touched pages
/// cannot pass for all of them.
const USER: usize = 64 * 4096;
const TOTAL: u64 = (HEADER_SIZE + USER) as u64;

fn shm_path(address: &Address) -> Option<PathBuf> {
    match address {
        Address::Posix(name) => Some(PathBuf::from("/dev/shm").join(name.file_name())),
        Address::SysV(_) => None,
    }
}

/// Creates at `address`, or anonymously when `None`.
fn create(address: Option<&Address>, options: &CreateOptions) -> Result<Segment, SegmentError> {
    match address {
        Some(address) => Segment::create(address, options),
        None => Segment::create_anonymous(options),
    }
}

/// Whether nothing is left at `address`: no name, no key.
fn assert_nothing_left(address: &Address) {
    match Segment::open(address, &OpenOptions::new().timeout(Duration::ZERO)) {
        Err(SegmentError::NotFound(_)) => {}
        other => panic!("{address}: something was left behind: {other:?}"),
    }
    if let Some(path) = shm_path(address) {
        assert!(!path.exists(), "{} was left behind", path.display());
    }
}

/// Whether this process may lock `bytes` more: it has CAP_IPC_LOCK, or
/// RLIMIT_MEMLOCK leaves room (other tests in this binary lock too, so
/// the room is judged generously).
fn may_lock(bytes: u64) -> bool {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let effective = status
        .lines()
        .find_map(|line| line.strip_prefix("CapEff:"))
        .and_then(|hex| u64::from_str_radix(hex.trim(), 16).ok())
        .unwrap_or(0);
    const CAP_IPC_LOCK: u32 = 14;
    if effective & (1 << CAP_IPC_LOCK) != 0 {
        return true;
    }
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: `limit` is writable and is the struct getrlimit fills.
    let got = unsafe { libc::getrlimit(libc::RLIMIT_MEMLOCK, &mut limit) };
    assert_eq!(got, 0);
    limit.rlim_cur == libc::RLIM_INFINITY || limit.rlim_cur >= 8 * bytes
}

#[test]
fn prefault_maps_every_page_of_the_creators_mapping_and_nothing_else_does() {
    let posix = unique_posix("prefault");
    let sysv = unique_sysv();
    let _cleanup = (Cleanup(posix.clone()), Cleanup(sysv.clone()));
    for address in [Some(&posix), Some(&sysv), None] {
        let what = address.map_or("memfd".to_owned(), Address::to_string);
        let eager = create(address, &CreateOptions::new(USER).prefault(true)).unwrap();
        let stats = mapping_stats(eager.user_ptr());
        assert_eq!(
            stats.size, TOTAL,
            "{what}: smaps shows the segment's mapping"
        );
        assert_eq!(stats.resident, TOTAL, "{what}: prefaulted");
        drop(eager);
        if let Some(address) = address {
            Segment::remove(address).unwrap();
        }

        let lazy = create(address, &CreateOptions::new(USER)).unwrap();
        let stats = mapping_stats(lazy.user_ptr());
        assert_eq!(stats.size, TOTAL, "{what}");
        // Creating writes the header page, and no more.
        assert!(
            stats.resident <= HEADER_SIZE as u64,
            "{what}: {} bytes resident without prefault",
            stats.resident
        );
        drop(lazy);
        if let Some(address) = address {
            Segment::remove(address).unwrap();
        }
    }
}

#[test]
fn lock_memory_locks_the_creators_whole_mapping() {
    let posix = unique_posix("lock");
    let sysv = unique_sysv();
    let _cleanup = (Cleanup(posix.clone()), Cleanup(sysv.clone()));
    for address in [Some(&posix), Some(&sysv), None] {
        let what = address.map_or("memfd".to_owned(), Address::to_string);
        let locked = match create(address, &CreateOptions::new(USER).lock_memory(true)) {
            Ok(segment) => segment,
            Err(SegmentError::LockFailed { limit, .. }) if !may_lock(TOTAL) => {
                eprintln!("skipped: RLIMIT_MEMLOCK ({limit:?} bytes) leaves no room to lock");
                return;
            }
            Err(e) => panic!("{what}: {e}"),
        };
        let stats = mapping_stats(locked.user_ptr());
        assert_eq!(stats.size, TOTAL, "{what}");
        assert!(stats.lock_flag, "{what}: VmFlags has lo");
        // Only this mapping maps the fresh segment's pages, so our
        // proportional share of them is all of them.
        assert_eq!(stats.locked, TOTAL, "{what}: Locked");
        assert_eq!(stats.resident, TOTAL, "{what}: locking faults pages in");
        drop(locked);
        if let Some(address) = address {
            Segment::remove(address).unwrap();
        }

        let unlocked = create(address, &CreateOptions::new(USER)).unwrap();
        let stats = mapping_stats(unlocked.user_ptr());
        assert!(!stats.lock_flag, "{what}");
        assert_eq!(stats.locked, 0, "{what}");
        drop(unlocked);
        if let Some(address) = address {
            Segment::remove(address).unwrap();
        }
    }
}

/// Run in a child: open each segment named in `ADDRESSES` with and without
/// the knobs, and check this process's own mappings.
fn open_with_knobs_in_this_process() {
    let addresses = std::env::var("ADDRESSES").unwrap();
    for address in addresses.split(',') {
        let address: Address = address.parse().unwrap();
        let plain = Segment::open(&address, &OpenOptions::new()).unwrap();
        let stats = mapping_stats(plain.user_ptr());
        assert_eq!(stats.size, TOTAL, "{address}");
        // Opening reads the header and writes our participant slot, both
        // in the first page; a read fault may map up to 16 pages around it
        // ("fault-around").
        assert!(
            stats.resident < TOTAL / 2,
            "{address}: {} bytes resident without prefault",
            stats.resident
        );
        assert!(!stats.lock_flag, "{address}");

        let prefaulted = Segment::open(&address, &OpenOptions::new().prefault(true)).unwrap();
        let stats = mapping_stats(prefaulted.user_ptr());
        assert_eq!(stats.resident, TOTAL, "{address}: prefaulted");
        assert!(!stats.lock_flag, "{address}");

        let read_only = OpenOptions::new().read_only().prefault(true);
        let inspected = Segment::open(&address, &read_only).unwrap();
        let stats = mapping_stats(inspected.user_ptr());
        assert_eq!(stats.resident, TOTAL, "{address}: prefaulted read-only");

        if std::env::var("LOCK").is_ok() {
            let locked = Segment::open(&address, &OpenOptions::new().lock_memory(true)).unwrap();
            let stats = mapping_stats(locked.user_ptr());
            assert!(stats.lock_flag, "{address}: locked");
            assert_eq!(stats.resident, TOTAL, "{address}: locking faults pages in");
            // Others map some of these pages, so our share is less.
            assert!(stats.locked > 0, "{address}");
        }
    }
}

#[test]
fn an_opener_in_another_process_prefaults_and_locks_its_own_mapping() {
    const NAME: &str = "an_opener_in_another_process_prefaults_and_locks_its_own_mapping";
    if common::child_role().is_some() {
        open_with_knobs_in_this_process();
        return;
    }
    let posix = unique_posix("opener");
    let sysv = unique_sysv();
    let _cleanup = (Cleanup(posix.clone()), Cleanup(sysv.clone()));
    let _segments =
        [&posix, &sysv].map(|address| Segment::create(address, &CreateOptions::new(USER)).unwrap());
    let mut envs = vec![("ADDRESSES", format!("{posix},{sysv}"))];
    if may_lock(3 * TOTAL) {
        envs.push(("LOCK", "1".to_owned()));
    } else {
        eprintln!("locking in the child skipped: RLIMIT_MEMLOCK leaves no room");
    }
    common::spawn_child(NAME, "open-with-knobs", &envs).wait_success(Duration::from_secs(20));
}

/// Lowers RLIMIT_MEMLOCK to `bytes` and drops CAP_IPC_LOCK, which would
/// let us lock beyond it. Capabilities belong to a thread: callers lock
/// from this one.
fn limit_locking_to(bytes: u64) {
    let limit = libc::rlimit {
        rlim_cur: bytes,
        rlim_max: bytes,
    };
    // SAFETY: `limit` is a valid rlimit, read by the call.
    assert_eq!(unsafe { libc::setrlimit(libc::RLIMIT_MEMLOCK, &limit) }, 0);
    const CAP_IPC_LOCK: u32 = 14;
    common::drop_capability(CAP_IPC_LOCK);
}

/// Run in a child: lock beyond a lowered RLIMIT_MEMLOCK, creating and
/// opening.
fn lock_beyond_the_limit() {
    const LIMIT: u64 = 64 * 1024;
    limit_locking_to(LIMIT);
    let fresh: Vec<Address> = ["POSIX", "SYSV"]
        .map(|var| std::env::var(var).unwrap().parse().unwrap())
        .into();
    let big = CreateOptions::new(1 << 20).lock_memory(true);
    for address in fresh.iter().map(Some).chain([None]) {
        let what = address.map_or("memfd".to_owned(), Address::to_string);
        match create(address, &big) {
            Err(SegmentError::LockFailed {
                bytes,
                limit,
                source,
            }) => {
                assert_eq!(bytes, (HEADER_SIZE + (1 << 20)) as u64, "{what}");
                assert_eq!(limit, Some(LIMIT), "{what}");
                assert_eq!(source.raw_os_error(), Some(libc::ENOMEM), "{what}");
            }
            other => panic!("{what}: expected LockFailed, got {other:?}"),
        }
        if let Some(address) = address {
            assert_nothing_left(address);
        }
    }
    // An opener that cannot lock leaves the segment as it found it.
    let existing: Address = std::env::var("EXISTING").unwrap().parse().unwrap();
    match Segment::open(&existing, &OpenOptions::new().lock_memory(true)) {
        Err(SegmentError::LockFailed { .. }) => {}
        other => panic!("expected LockFailed, got {other:?}"),
    }
    assert_eq!(Segment::inspect(&existing).unwrap().participants.len(), 1);

    // With no room at all, mlock refuses outright.
    limit_locking_to(0);
    match create(None, &CreateOptions::new(USER).lock_memory(true)) {
        Err(SegmentError::LockFailed {
            limit: Some(0),
            source,
            ..
        }) => assert_eq!(source.raw_os_error(), Some(libc::EPERM)),
        other => panic!("expected LockFailed with EPERM, got {other:?}"),
    }
}

#[test]
fn locking_beyond_rlimit_memlock_is_a_typed_error_that_leaves_nothing() {
    const NAME: &str = "locking_beyond_rlimit_memlock_is_a_typed_error_that_leaves_nothing";
    if common::child_role().is_some() {
        lock_beyond_the_limit();
        return;
    }
    let posix = unique_posix("lockfail");
    let sysv = unique_sysv();
    let existing = unique_posix("lockfail-open");
    let _cleanup = (
        Cleanup(posix.clone()),
        Cleanup(sysv.clone()),
        Cleanup(existing.clone()),
    );
    let _existing = Segment::create(&existing, &CreateOptions::new(1 << 20)).unwrap();
    common::spawn_child(
        NAME,
        "lock-beyond-limit",
        &[
            ("POSIX", posix.to_string()),
            ("SYSV", sysv.to_string()),
            ("EXISTING", existing.to_string()),
        ],
    )
    .wait_success(Duration::from_secs(20));
    // Seen from here too.
    assert_nothing_left(&posix);
    assert_nothing_left(&sysv);
}

/// Held by the tests that take huge pages, so that they do not take them
/// from one another.
static HUGE_PAGE_POOL: Mutex<()> = Mutex::new(());

fn hold_huge_page_pool() -> MutexGuard<'static, ()> {
    HUGE_PAGE_POOL
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// The default huge page pool: (page size, pages available), from
/// /proc/meminfo; `None` without huge page support.
fn huge_page_pool() -> Option<(u64, u64)> {
    let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap();
    let field = |name: &str| {
        meminfo.lines().find_map(|line| {
            let rest = line.strip_prefix(name)?.strip_prefix(':')?;
            rest.split_whitespace().next()?.parse::<u64>().ok()
        })
    };
    let page_size = field("Hugepagesize")? * 1024;
    let available = field("HugePages_Free")?.saturating_sub(field("HugePages_Rsvd")?);
    Some((page_size, available))
}

fn overcommit_huge_pages() -> u64 {
    std::fs::read_to_string("/proc/sys/vm/nr_overcommit_hugepages")
        .ok()
        .and_then(|text| text.trim().parse().ok())
        .unwrap_or(0)
}

#[test]
fn huge_pages_beyond_the_pool_are_a_typed_error_that_leaves_nothing() {
    let _pool = hold_huge_page_pool();
    let posix = unique_posix("huge-refused");
    let sysv = unique_sysv();
    let _cleanup = (Cleanup(posix.clone()), Cleanup(sysv.clone()));

    // Named POSIX segments do not offer huge pages, whatever the pool.
    match Segment::create(&posix, &CreateOptions::new(USER).huge_pages(true)) {
        Err(SegmentError::Unsupported { .. }) => {}
        other => panic!("expected Unsupported, got {other:?}"),
    }
    assert_nothing_left(&posix);

    let Some((page_size, available)) = huge_page_pool() else {
        for address in [Some(&sysv), None] {
            match create(address, &CreateOptions::new(USER).huge_pages(true)) {
                Err(SegmentError::HugePagesUnavailable {
                    reason: HugePagesReason::NotSupported,
                }) => {}
                other => panic!("expected NotSupported, got {other:?}"),
            }
        }
        assert_nothing_left(&sysv);
        return;
    };
    if overcommit_huge_pages() > 0 {
        eprintln!("skipped: vm.nr_overcommit_hugepages > 0 may supply any number of pages");
        return;
    }
    if available > 64 {
        eprintln!("skipped: {available} huge pages available; outgrowing them would take them all");
        return;
    }
    // One page more than the pool has (the header takes part of the first).
    let user = (available + 1) as usize * page_size as usize - HEADER_SIZE;
    let needed = available + 1;
    let options = CreateOptions::new(user).huge_pages(true);

    match Segment::create_anonymous(&options) {
        Err(
            e @ SegmentError::HugePagesUnavailable {
                reason: HugePagesReason::PoolTooSmall { needed: n, .. },
            },
        ) => {
            assert_eq!(n, needed);
            let message = e.to_string();
            assert!(message.contains("sysctl vm.nr_hugepages="), "{message}");
            eprintln!("memfd: {message}");
        }
        other => panic!("memfd: expected PoolTooSmall, got {other:?}"),
    }
    match Segment::create(&sysv, &options) {
        // Without CAP_IPC_LOCK or the hugetlb group, shmget refuses first.
        Err(
            e @ SegmentError::HugePagesUnavailable {
                reason: HugePagesReason::PoolTooSmall { .. } | HugePagesReason::NotPermitted,
            },
        ) => eprintln!("{sysv}: {e}"),
        other => panic!("{sysv}: expected HugePagesUnavailable, got {other:?}"),
    }
    assert_nothing_left(&sysv);
}

#[test]
fn huge_page_segments_round_up_and_map_huge_pages_when_the_pool_has_them() {
    let _pool = hold_huge_page_pool();
    let sysv = unique_sysv();
    let _cleanup = Cleanup(sysv.clone());
    let Some((page_size, available)) = huge_page_pool() else {
        eprintln!("skipped: this kernel offers no huge pages");
        return;
    };
    // One segment of two pages at a time, with room for another process.
    if available < 2 {
        eprintln!(
            "skipped: {available} huge pages available, 2 needed \
             (reserve some with `sysctl vm.nr_hugepages=N`)"
        );
        return;
    }
    // Rounded up: the header and one byte more than a page.
    let options = CreateOptions::new(page_size as usize - HEADER_SIZE + 1)
        .huge_pages(true)
        .prefault(true);
    for address in [None, Some(&sysv)] {
        let what = address.map_or("memfd".to_owned(), Address::to_string);
        let segment = match create(address, &options) {
            Ok(segment) => segment,
            Err(SegmentError::HugePagesUnavailable {
                reason: HugePagesReason::NotPermitted,
            }) => {
                eprintln!("{what} skipped: SysV huge pages are not permitted to this process");
                continue;
            }
            Err(e) => panic!("{what}: {e}"),
        };
        assert_eq!(
            segment.user_len(),
            2 * page_size as usize - HEADER_SIZE,
            "{what}: the user area fills whole huge pages"
        );
        let stats = mapping_stats(segment.user_ptr());
        assert_eq!(stats.page_size, page_size, "{what}: KernelPageSize");
        assert_eq!(stats.size, 2 * page_size, "{what}");
        assert_eq!(stats.hugetlb, 2 * page_size, "{what}: prefaulted");
        let view = segment
            .view::<std::sync::atomic::AtomicU64>(segment.user_len() - 8)
            .unwrap();
        view.store(7, std::sync::atomic::Ordering::Relaxed);
        let other = match address {
            Some(address) => Segment::open(address, &OpenOptions::new()).unwrap(),
            None => {
                assert!(matches!(
                    segment.map_mirrored(page_size as usize - HEADER_SIZE, 4096),
                    Err(SegmentError::Unsupported { .. })
                ));
                segment.reopen(&OpenOptions::new()).unwrap()
            }
        };
        let seen = other
            .view::<std::sync::atomic::AtomicU64>(other.user_len() - 8)
            .unwrap();
        assert_eq!(seen.load(std::sync::atomic::Ordering::Relaxed), 7, "{what}");
        drop((other, segment));
        if let Some(address) = address {
            Segment::remove(address).unwrap();
        }
    }
}

/// Whether a channel endpoint's own mapping of its segment is all
/// resident and locked.
fn resident_and_locked(segment: &Segment) -> (bool, bool) {
    let stats = mapping_stats(segment.user_ptr());
    (stats.resident == stats.size, stats.lock_flag)
}

#[test]
fn channel_options_reach_the_creators_and_the_openers_mappings() {
    use ipcring::channel::queue::{Queue, QueueConfig};
    use ipcring::channel::{ChannelOptions, mpmc, records, spsc};
    use ipcring::ring::record::ProducerMode;

    const CAPACITY: usize = 4096;
    if !may_lock(16 * 1024 * 1024) {
        eprintln!("skipped: RLIMIT_MEMLOCK leaves no room to lock four channels");
        return;
    }
    let knobs = ChannelOptions::new().prefault(true).lock_memory(true);
    let plain = ChannelOptions::new();
    let addresses: Vec<Address> = ["ch-spsc", "ch-mpmc", "ch-records", "ch-queue"]
        .into_iter()
        .map(unique_posix)
        .collect();
    let _cleanup: Vec<Cleanup> = addresses.iter().cloned().map(Cleanup).collect();
    let [spsc_at, mpmc_at, records_at, queue_at] = &addresses[..] else {
        unreachable!()
    };

    // The creator asks with `create`, the other side with `open_or_create`.
    let tx = spsc::Sender::<u64>::create(spsc_at, CAPACITY, &knobs).unwrap();
    let rx = spsc::Receiver::<u64>::open_or_create(spsc_at, CAPACITY, &knobs).unwrap();
    assert_eq!(
        resident_and_locked(tx.segment()),
        (true, true),
        "spsc sender"
    );
    assert_eq!(
        resident_and_locked(rx.segment()),
        (true, true),
        "spsc receiver"
    );

    let tx = mpmc::Sender::<u64>::create(mpmc_at, CAPACITY, &knobs).unwrap();
    let rx = mpmc::Receiver::<u64>::open_or_create(mpmc_at, CAPACITY, &knobs).unwrap();
    assert_eq!(
        resident_and_locked(tx.segment()),
        (true, true),
        "mpmc sender"
    );
    assert_eq!(
        resident_and_locked(rx.segment()),
        (true, true),
        "mpmc receiver"
    );

    let tx = records::Sender::create(records_at, CAPACITY, ProducerMode::Many, &knobs).unwrap();
    let rx = records::Receiver::open_or_create(records_at, CAPACITY, ProducerMode::Many, &knobs)
        .unwrap();
    assert_eq!(
        resident_and_locked(tx.segment()),
        (true, true),
        "records sender"
    );
    assert_eq!(
        resident_and_locked(rx.segment()),
        (true, true),
        "records receiver"
    );

    let config = QueueConfig::new(16, 256);
    let created = Queue::create(queue_at, &config, &knobs).unwrap();
    let (opened, was_created) = Queue::open_or_create(queue_at, &config, &knobs).unwrap();
    assert!(!was_created);
    assert_eq!(
        resident_and_locked(created.segment()),
        (true, true),
        "queue"
    );
    assert_eq!(
        resident_and_locked(opened.segment()),
        (true, true),
        "queue opener"
    );
    drop((tx, rx, created, opened));

    // Without the knobs, nothing is locked, and an opener's mapping is not
    // all resident (a creator's is: the ring's initialisation writes every
    // slot).
    for address in &addresses {
        Segment::remove(address).unwrap();
    }
    // Large enough that no fault-around window covers it.
    let tx = spsc::Sender::<u64>::create(spsc_at, 64 * CAPACITY, &plain).unwrap();
    let rx = spsc::Receiver::<u64>::open_or_create(spsc_at, 64 * CAPACITY, &plain).unwrap();
    assert!(!resident_and_locked(tx.segment()).1, "plain sender");
    assert_eq!(
        resident_and_locked(rx.segment()),
        (false, false),
        "plain receiver"
    );
    let queue = Queue::create(queue_at, &config, &plain).unwrap();
    assert!(!resident_and_locked(queue.segment()).1, "plain queue");
}

#[test]
fn channels_on_huge_pages_keep_their_capacity_or_say_why_not() {
    use ipcring::channel::{ChannelError, ChannelOptions, spsc, stream};

    let _pool = hold_huge_page_pool();
    let huge = ChannelOptions::new().huge_pages(true);
    // A byte stream maps its data twice at a small page offset.
    assert!(matches!(
        stream::create_segment(None, 4096, &huge),
        Err(ChannelError::Unsupported { .. })
    ));
    match spsc::create_segment::<u64>(None, 1024, &huge) {
        Ok(segment) => {
            let (page_size, _) = huge_page_pool().unwrap();
            assert_eq!((segment.user_len() + HEADER_SIZE) % page_size as usize, 0);
            let mut tx =
                spsc::Sender::<u64>::attach(segment.reopen(&OpenOptions::new()).unwrap()).unwrap();
            let mut rx = spsc::Receiver::<u64>::attach(segment).unwrap();
            // The ring keeps the capacity asked for, whatever room the
            // rounded segment has.
            for item in 0..1024 {
                tx.try_send(item).unwrap();
            }
            assert!(tx.try_send(1024).is_err(), "full at 1024 items");
            assert_eq!(rx.try_recv().unwrap(), 0);
        }
        Err(ChannelError::Segment(SegmentError::HugePagesUnavailable { reason })) => {
            eprintln!("huge page channel not created: {reason}");
        }
        Err(e) => panic!("expected a channel or HugePagesUnavailable, got {e:?}"),
    }
}
