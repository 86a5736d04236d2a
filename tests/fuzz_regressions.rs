//! Inputs for the `segment_image` fuzz target, replayed through the same
//! code (`fuzz/replay/`) as plain tests, so that CI checks them without
//! cargo-fuzz or a nightly compiler: a few made by hand that walk every
//! ring kind and failpoint, and those the fuzzer found, each named for
//! what it found.

#[path = "../fuzz/replay/segment_image.rs"]
mod segment_image;

/// An input in the targets' format: kind, size, waits, the script's
/// steps, two claim records, then changes (area, offset, byte).
fn input(
    head: [u8; 3],
    script: &[[u8; 2]],
    records: [u64; 2],
    damage: &[(u8, u16, u8)],
) -> Vec<u8> {
    let mut input = head.to_vec();
    input.push(script.len() as u8);
    input.extend(script.iter().flatten());
    input.extend(records[0].to_le_bytes());
    input.extend(records[1].to_le_bytes());
    for &(area, offset, byte) in damage {
        input.push(area);
        input.extend(offset.to_le_bytes());
        input.push(byte);
    }
    input
}

/// Damage to the counters, a claim record and the payload, some applied
/// before the fresh handles attach and some after.
const DAMAGE: [(u8, u16, u8); 4] = [
    (0, 1, 0x08),
    (0x41, 0x0102, 0x80),
    (0x42, 0x0033, 0xff),
    (0x80, 2, 0),
];

#[test]
fn every_ring_kind_replays_with_claimers_stopped_at_each_failpoint() {
    // Steps (operation, argument): the argument's low bits pick a
    // claimer and, for the dying steps, a failpoint (see the module).
    for kind in 0..4u8 {
        for point in 0..5u8 {
            let dying = match kind {
                0 => [3, point],
                1 => [2 + point % 2, point << 2 | 1],
                _ => [4, point],
            };
            let script = [
                [0, 40],
                [0, 41],
                [1, 2],
                dying,
                [5, 7],
                [6, point],
                [1, 1],
                [7, 1],
                [5, 1],
            ];
            let records = [u64::MAX, 0x0000_0002_0000_0003];
            // Waits: park for 1 ms, then busy-spin with no time at all.
            for waits in [0x0a, 0x00] {
                segment_image::replay(&input([kind, point, waits], &script, records, &[]));
                segment_image::replay(&input([kind, point, waits], &script, records, &DAMAGE));
            }
        }
    }
}
