//! An opener that asks for prefaulting faults pages in only once the
//! header says the segment is ours. Before that, the object is whatever
//! another program (or a hostile peer) made: up to 1 TiB, sparse. Faulting
//! it in would allocate all of its memory, for a segment the opener then
//! refuses.

mod common;

use std::io::Write;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::fs::MetadataExt;
use std::time::Duration;

use common::{RemoveFile, RemoveSysvKey, unique_posix, unique_sysv};
use ipcring::segment::{Address, OpenOptions, Segment, SegmentError};

/// A foreign object: large, sparse, and with another program's magic.
const FOREIGN_SIZE: usize = 32 << 20;
/// Reading the header faults in a page or a few; far less than this.
const FEW_PAGES: u64 = 1 << 20;
const FOREIGN_MAGIC: &[u8; 8] = b"NOTOURS!";

fn prefaulting() -> OpenOptions {
    OpenOptions::new()
        .prefault(true)
        .timeout(Duration::from_millis(50))
}

fn assert_refused(result: Result<Segment, SegmentError>, what: &str) {
    match result {
        Err(SegmentError::Incompatible(_)) => {}
        other => panic!("{what}: expected Incompatible, got {other:?}"),
    }
}

/// The resident bytes of SysV segment `id` (`rss` in /proc/sysvipc/shm).
fn sysv_rss(id: i32) -> u64 {
    let text = std::fs::read_to_string("/proc/sysvipc/shm").unwrap();
    let mut lines = text.lines();
    let columns: Vec<&str> = lines.next().unwrap().split_whitespace().collect();
    let column = |name| columns.iter().position(|&c| c == name).unwrap();
    let (id_col, rss_col) = (column("shmid"), column("rss"));
    lines
        .map(|line| line.split_whitespace().collect::<Vec<_>>())
        .find(|fields| fields[id_col] == id.to_string())
        .map(|fields| fields[rss_col].parse().unwrap())
        .expect("the segment is listed")
}

#[test]
fn a_foreign_sysv_segment_is_not_faulted_in_by_a_prefaulting_opener() {
    let Address::SysV(key) = unique_sysv() else {
        unreachable!()
    };
    let _remove = RemoveSysvKey(key.get());
    // SAFETY: plain syscalls on a segment this test made; the magic is
    // written within its first page, through the address shmat returned.
    let id = unsafe {
        let id = libc::shmget(key.get(), FOREIGN_SIZE, libc::IPC_CREAT | 0o600);
        assert!(id >= 0, "shmget: {}", std::io::Error::last_os_error());
        let addr = libc::shmat(id, std::ptr::null(), 0);
        assert_ne!(addr as isize, -1, "shmat");
        addr.cast::<u8>()
            .copy_from_nonoverlapping(FOREIGN_MAGIC.as_ptr(), FOREIGN_MAGIC.len());
        libc::shmdt(addr);
        id
    };
    let before = sysv_rss(id);
    assert!(before <= FEW_PAGES, "{before} bytes resident after setup");

    assert_refused(
        Segment::open(&Address::SysV(key), &prefaulting()),
        "foreign SysV segment",
    );
    let after = sysv_rss(id);
    assert!(
        after <= FEW_PAGES,
        "refusing a foreign segment faulted {after} of its {FOREIGN_SIZE} bytes in"
    );
}

#[test]
fn a_foreign_posix_object_is_not_faulted_in_by_a_prefaulting_opener() {
    let address = unique_posix("review8-foreign");
    let Address::Posix(name) = &address else {
        unreachable!()
    };
    let path = std::path::Path::new("/dev/shm").join(name.file_name());
    let _remove = RemoveFile(path.clone());
    let mut file = std::fs::File::create_new(&path).unwrap();
    file.set_len(FOREIGN_SIZE as u64).unwrap();
    file.write_all(FOREIGN_MAGIC).unwrap();
    let allocated = || std::fs::metadata(&path).unwrap().blocks() * 512;
    assert!(allocated() <= FEW_PAGES);

    assert_refused(
        Segment::open(&address, &prefaulting()),
        "foreign POSIX object",
    );
    let after = allocated();
    assert!(
        after <= FEW_PAGES,
        "refusing a foreign object allocated {after} of its {FOREIGN_SIZE} bytes"
    );
}

#[test]
fn a_foreign_memfd_is_not_faulted_in_by_a_prefaulting_opener() {
    // SAFETY: the name is NUL-terminated; the descriptor is fresh and ours.
    let fd = unsafe {
        let fd = libc::memfd_create(c"review8-foreign".as_ptr(), libc::MFD_ALLOW_SEALING);
        assert!(fd >= 0, "memfd_create");
        OwnedFd::from_raw_fd(fd)
    };
    let mut file = std::fs::File::from(fd.try_clone().unwrap());
    file.set_len(FOREIGN_SIZE as u64).unwrap();
    file.write_all(FOREIGN_MAGIC).unwrap();
    // SAFETY: plain fcntl on our own descriptor.
    let sealed = unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_ADD_SEALS, libc::F_SEAL_SHRINK) };
    assert_eq!(sealed, 0, "F_ADD_SEALS");
    let allocated = || file.metadata().unwrap().blocks() * 512;
    assert!(allocated() <= FEW_PAGES);

    assert_refused(Segment::from_fd(fd, &prefaulting()), "foreign memfd");
    let after = allocated();
    assert!(
        after <= FEW_PAGES,
        "refusing a foreign memfd allocated {after} of its {FOREIGN_SIZE} bytes"
    );
}
