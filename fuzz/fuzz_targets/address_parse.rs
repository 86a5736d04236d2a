//! Any text given as a segment address parses or is refused with a typed
//! error; what parses prints back to an equal address.
#![no_main]

use ipcring::segment::Address;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|text: &str| {
    if let Ok(address) = text.parse::<Address>() {
        let printed = address.to_string();
        assert_eq!(printed.parse::<Address>().ok(), Some(address));
    }
});
