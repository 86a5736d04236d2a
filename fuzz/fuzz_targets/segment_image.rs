//! A ring image taken mid-operation (claimers stopped at failpoints), with
//! bytes changed anywhere in it: fresh handles attach, or fail with a typed
//! error, and every operation, blocking waits included, returns a value or
//! a typed error, never a panic, a hang or an access outside the region.
//! The input format is described in `replay/segment_image.rs`.
#![no_main]

use libfuzzer_sys::fuzz_target;

#[path = "../replay/segment_image.rs"]
mod segment_image;

fuzz_target!(|input: &[u8]| segment_image::replay(input));
