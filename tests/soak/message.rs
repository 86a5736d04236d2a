//! What the soak producers send: every message names its producer, its
//! sequence number and its own length, and ends with a checksum over all
//! of it, so a message torn by a kill (or mixed from two) fails to verify.
//!
//! | offset    | field      | meaning |
//! |-----------|------------|---------|
//! | 0         | `producer` | u32, the producer incarnation that sent it |
//! | 4         | `len`      | u32, the whole message's length in bytes |
//! | 8         | `seq`      | u64, the producer's sequence number, from 0 |
//! | 16        | body       | `len - 24` bytes derived from producer and seq |
//! | `len - 8` | `checksum` | u64 over bytes `0..len - 8` |

use super::rng::mix;

pub const HEADER_LEN: usize = 16;
pub const CHECKSUM_LEN: usize = 8;
/// The shortest message: header and checksum, no body.
pub const MIN_LEN: usize = HEADER_LEN + CHECKSUM_LEN;

/// The producer id of the message the final check exchanges.
pub const SENTINEL_PRODUCER: u32 = u32::MAX;

/// Who sent a message, and its place in that producer's sequence.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Stamp {
    pub producer: u32,
    pub seq: u32,
}

impl Stamp {
    /// One word naming the message: the ledger's key.
    pub fn key(self) -> u64 {
        (u64::from(self.producer) << 32) | u64::from(self.seq)
    }

    pub fn from_key(key: u64) -> Stamp {
        Stamp {
            producer: (key >> 32) as u32,
            seq: key as u32,
        }
    }
}

impl std::fmt::Display for Stamp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "producer {} seq {}", self.producer, self.seq)
    }
}

/// A message that failed to verify, with what its header claimed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Torn {
    pub producer: u32,
    pub claimed_len: u32,
    pub seq: u64,
    pub actual_len: usize,
    pub why: &'static str,
}

impl Torn {
    /// Packed into one ledger word (for the first torn message of a consumer).
    pub fn to_word(self) -> u64 {
        (u64::from(self.producer & 0xffff) << 48)
            | ((self.seq & 0xffff_ffff) << 16)
            | (self.actual_len as u64 & 0xffff)
    }
}

impl std::fmt::Display for Torn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{}: header says producer {} seq {} len {}, {} bytes received",
            self.why, self.producer, self.seq, self.claimed_len, self.actual_len
        )
    }
}

/// The checksum over `bytes`: word-wise multiply-rotate, then a final mix
/// (fast enough unoptimised; any changed byte changes it).
pub fn checksum(bytes: &[u8]) -> u64 {
    let mut hash = 0x243f_6a88_85a3_08d3 ^ bytes.len() as u64;
    let mut words = bytes.chunks_exact(8);
    for word in &mut words {
        let word = u64::from_le_bytes(word.try_into().unwrap());
        hash = (hash ^ word)
            .wrapping_mul(0x9e37_79b9_7f4a_7c15)
            .rotate_left(29);
    }
    let mut tail = [0u8; 8];
    tail[..words.remainder().len()].copy_from_slice(words.remainder());
    hash = (hash ^ u64::from_le_bytes(tail)).wrapping_mul(0x9e37_79b9_7f4a_7c15);
    mix(hash)
}

/// The length of record message `stamp`: from `MIN_LEN` to `max`, odd
/// lengths included, fixed by the stamp so a replay sends the same bytes.
pub fn record_len(stamp: Stamp, max: usize) -> usize {
    let span = (max - MIN_LEN + 1) as u64;
    MIN_LEN + (mix(stamp.key() ^ 0x5eed) % span) as usize
}

/// Writes message `stamp` into all of `out` (at least `MIN_LEN` bytes).
pub fn encode(stamp: Stamp, out: &mut [u8]) {
    let len = out.len();
    assert!((MIN_LEN..=u32::MAX as usize).contains(&len));
    out[0..4].copy_from_slice(&stamp.producer.to_le_bytes());
    out[4..8].copy_from_slice(&(len as u32).to_le_bytes());
    out[8..16].copy_from_slice(&u64::from(stamp.seq).to_le_bytes());
    let body = &mut out[HEADER_LEN..len - CHECKSUM_LEN];
    let mut state = mix(stamp.key());
    for chunk in body.chunks_mut(8) {
        state = mix(state);
        chunk.copy_from_slice(&state.to_le_bytes()[..chunk.len()]);
    }
    let sum = checksum(&out[..len - CHECKSUM_LEN]);
    out[len - CHECKSUM_LEN..].copy_from_slice(&sum.to_le_bytes());
}

/// Checks a received message: its length field and its checksum.
pub fn verify(bytes: &[u8]) -> Result<Stamp, Torn> {
    let len = bytes.len();
    let field = |range: std::ops::Range<usize>| -> u64 {
        let mut word = [0u8; 8];
        let available = &bytes[range.start.min(len)..range.end.min(len)];
        word[..available.len()].copy_from_slice(available);
        u64::from_le_bytes(word)
    };
    let mut torn = Torn {
        producer: field(0..4) as u32,
        claimed_len: field(4..8) as u32,
        seq: field(8..16),
        actual_len: len,
        why: "",
    };
    if len < MIN_LEN {
        torn.why = "shorter than any message";
        return Err(torn);
    }
    if torn.claimed_len as usize != len {
        torn.why = "length field disagrees with the received length";
        return Err(torn);
    }
    if field(len - CHECKSUM_LEN..len) != checksum(&bytes[..len - CHECKSUM_LEN]) {
        torn.why = "checksum mismatch";
        return Err(torn);
    }
    if torn.seq > u64::from(u32::MAX) {
        torn.why = "sequence number out of range";
        return Err(torn);
    }
    Ok(Stamp {
        producer: torn.producer,
        seq: torn.seq as u32,
    })
}

/// The MPMC soak's item: a `Pod` struct laid out as the table above, with
/// a 40-byte body.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct Item {
    producer: u32,
    len: u32,
    seq: u64,
    body: [u64; 5],
    checksum: u64,
}

// SAFETY: #[repr(C)], only integers, and no padding (4 + 4 + 8 + 40 + 8
// bytes at their natural alignment): every bit pattern is a valid Item and
// all-zero is one.
unsafe impl bytemuck::Zeroable for Item {}
// SAFETY: as above; Item is Copy and 'static.
unsafe impl bytemuck::Pod for Item {}

impl Item {
    pub fn new(stamp: Stamp) -> Item {
        let mut item: Item = bytemuck::Zeroable::zeroed();
        encode(stamp, bytemuck::bytes_of_mut(&mut item));
        item
    }

    pub fn bytes(&self) -> &[u8] {
        bytemuck::bytes_of(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encoded_messages_verify_and_damaged_ones_do_not() {
        let a = Stamp {
            producer: 3,
            seq: 7,
        };
        let b = Stamp {
            producer: 3,
            seq: 8,
        };
        for len in [MIN_LEN, MIN_LEN + 1, 64, 1001] {
            let mut first = vec![0; len];
            let mut second = vec![0; len];
            encode(a, &mut first);
            encode(b, &mut second);
            assert_eq!(verify(&first), Ok(a));
            // One flipped bit anywhere.
            for at in [0, 5, 9, len / 2, len - 1] {
                let mut damaged = first.clone();
                damaged[at] ^= 0x10;
                assert!(verify(&damaged).is_err(), "bit flip at {at} of {len}");
            }
            // Torn: the front of one message and the back of the next.
            let mut spliced = first.clone();
            spliced[len / 2..].copy_from_slice(&second[len / 2..]);
            assert!(verify(&spliced).is_err());
            // Truncated, or zeroed as a released record is.
            assert!(verify(&first[..len - 1]).is_err());
            assert!(verify(&vec![0; len]).is_err());
        }
        assert_eq!(Item::new(a).bytes().len(), 64);
        assert_eq!(verify(Item::new(b).bytes()), Ok(b));
    }
}
