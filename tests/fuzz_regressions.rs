//! Inputs for the `segment_image` and `channel_image` fuzz targets,
//! replayed through the same code (`fuzz/replay/`) as plain tests, so that
//! CI checks them without cargo-fuzz or a nightly compiler: a few made by
//! hand that walk every kind and failpoint, and those the fuzzer found,
//! each named for what it found.
#![cfg(feature = "failpoints")]

use std::sync::Mutex;

#[path = "../fuzz/replay/channel_image.rs"]
mod channel_image;
#[path = "../fuzz/replay/segment_image.rs"]
mod segment_image;

/// Held by every test that counts descriptors, so that no other test opens
/// or closes one meanwhile.
static DESCRIPTORS: Mutex<()> = Mutex::new(());

/// Replays a channel input, checking that it leaves no descriptor open.
fn replay_channel(input: &[u8]) {
    let _guard = DESCRIPTORS
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    let before = channel_image::open_descriptors();
    channel_image::replay(input);
    assert_eq!(
        channel_image::open_descriptors(),
        before,
        "descriptors leaked: {input:?}"
    );
}

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

/// A channel input: kind, size, waits, the script's steps, then changes.
fn channel_input(head: [u8; 3], script: &[[u8; 2]], damage: &[(u8, u16, u8)]) -> Vec<u8> {
    let mut input = head.to_vec();
    input.push(script.len() as u8);
    input.extend(script.iter().flatten());
    for &(area, offset, byte) in damage {
        input.push(area);
        input.extend(offset.to_le_bytes());
        input.push(byte);
    }
    input
}

#[test]
fn every_channel_kind_replays_with_endpoints_dying_at_each_failpoint() {
    // Steps (operation, argument); an argument with bit 7 set attaches a
    // sender, and its low bits pick an endpoint and a failpoint.
    for kind in 0..4u8 {
        for point in 0..8u8 {
            let script = [
                [0, 0x00],
                [0, 0x80],
                [1, 0x81],
                [2, 7],
                [2, 8],
                [3, 9],
                [5, point],
                [6, 0x80 | point],
                [7, 1],
                [4, 0],
                [0, 0x80],
                [2, 3],
            ];
            // Damage to a producer slot, the presence words, the ring's
            // counters and a claim record, some after the attaches.
            let damage = [
                (0x80, 16, 0x41),
                (0, 0, 0x01),
                (0x41, 1, 0x08),
                (0x42, 0x0102, 0x80),
            ];
            for waits in [0x0a, 0x00] {
                replay_channel(&channel_input([kind, point, waits], &script, &[]));
                replay_channel(&channel_input([kind, point, waits], &script, &damage));
            }
        }
    }
}

/// Found by `segment_image`: in a many-producer record ring of 64 bytes,
/// producers 2 and 3 each commit a record (`tail` at 40, naming producer
/// 3, which confirmed producer 2's claim record on the way past) and
/// producer 1 dies having announced a reservation. Once the fresh handles
/// have attached, a peer stores 0x63 in the low byte of `tail`, which then
/// names producer 2 at position 43, not a multiple of 8. Repairing producer
/// 2 rebuilds the start of its confirmed reservation from `tail` as
/// position 3 and reaches the byte buffer's bounds assertion ("record ring
/// offset out of range") instead of returning `Repair::Nothing`.
#[test]
fn record_repair_after_tail_is_scribbled_off_an_8_byte_boundary() {
    segment_image::replay(&[
        63, 236, 156, 156, 0, 156, 0, 236, 236, 120, 209, 116, 93, 0, 107, 0, 0, 107, 99, 0, 236,
        236, 120, 99, 107, 0, 236, 236, 120, 99,
    ]);
}

/// Found by `segment_image`, the same fault on the other path: in a full
/// many-producer record ring of 64 bytes (producer 3 committed two 32-byte
/// records, and producer 0, finding no room, confirmed producer 3's claim
/// record on the way), a peer stores 0xf8 in the low byte of `tail`, which
/// then holds position 71. Repairing producer 3 rebuilds the start of its
/// reservation from `tail` as position 39, which would need a pad to the
/// end of the buffer, and writing that pad reaches the same assertion.
#[test]
fn record_repair_padding_from_a_tail_off_an_8_byte_boundary() {
    segment_image::replay(&[
        219, 248, 248, 7, 248, 248, 248, 248, 248, 8, 248, 248, 248, 248, 248, 248, 248, 248, 248,
        8, 248, 248, 248, 248, 248, 248, 248, 248, 248, 248, 248, 248, 248, 248, 248, 248, 248,
        248,
    ]);
}

/// The same fault reached through a channel, made by hand from the inputs
/// above (the `channel_image` run did not get this far): any endpoint of a
/// many-sender record channel reaps dead senders when it finds the ring
/// empty or full, and repairs their claims. Here a receiver and a sender
/// attach and a one-byte record is sent; once fresh endpoints have
/// attached, a peer gives producer slot 2 a dead identity, moves `tail` to
/// position 35 naming claimer 2, and writes a claim record for claimer 2
/// that ends there (16 bytes from position 19). The receiver's next
/// `try_recv_into` finds the ring empty, reaps slot 2, and the repair
/// panics inside it.
#[test]
fn channel_reaper_repairing_after_tail_is_scribbled_off_an_8_byte_boundary() {
    let claim_record: u64 = 2 << 32 | 2;
    let mut damage = vec![(0xc0, 24, 0x01), (0xc1, 1, 0x63), (0xc1, 256, 0x04)];
    // The claim table's line 3 (producer 2), byte by byte.
    for (byte, offset) in [3, 263, 523, 783, 1043, 1303, 1563, 1823]
        .into_iter()
        .enumerate()
    {
        damage.push((0xc2, offset, (claim_record >> (8 * byte)) as u8));
    }
    let script = [[0, 0x00], [0, 0x80], [2, 1]];
    replay_channel(&channel_input([3, 0, 0], &script, &damage));
}
