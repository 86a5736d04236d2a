//! A channel segment left by endpoints that died mid-operation (at
//! failpoints), with bytes changed in its endpoint tables and ring: fresh
//! endpoints attach, or fail with a typed error, and every operation,
//! blocking ones with a short timeout included, returns a value or a typed
//! error, never a panic or a hang; and the replay leaks no descriptor.
//! The input format is described in `replay/channel_image.rs`.
#![no_main]

use libfuzzer_sys::fuzz_target;

#[path = "../replay/channel_image.rs"]
mod channel_image;

fuzz_target!(|input: &[u8]| {
    let before = channel_image::open_descriptors();
    channel_image::replay(input);
    assert_eq!(
        channel_image::open_descriptors(),
        before,
        "descriptors leaked"
    );
});
