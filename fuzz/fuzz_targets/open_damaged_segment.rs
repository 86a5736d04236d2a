//! Any bytes in a POSIX segment's object either open as a valid segment or
//! give a typed error: never a panic, a hang or a fault.
#![no_main]

use std::time::Duration;

use ipcring::segment::{Address, OpenOptions, Segment};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|bytes: &[u8]| {
    let name = format!("fuzz-open-{}", std::process::id());
    let path = format!("/dev/shm/ipcring.{name}");
    if std::fs::write(&path, bytes).is_err() {
        return;
    }
    let address: Address = name.parse().unwrap();
    let options = OpenOptions::new().timeout(Duration::ZERO);
    if let Ok(segment) = Segment::open(&address, &options) {
        let _ = segment.info();
        let _ = segment.reap_dead_participants();
    }
    let _ = std::fs::remove_file(&path);
});
