//! What every message carries, whatever the transport, so that each row
//! does the same work: the sender writes every byte and the receiver reads
//! every byte back and checks it.
//!
//! | bytes  | content                                                       |
//! |--------|---------------------------------------------------------------|
//! | 0..8   | sequence number                                               |
//! | 8..16  | paced rows: intended send time (ns, `CLOCK_MONOTONIC`); else the sequence number |
//! | 16..   | the sequence number, repeated                                 |
//!
//! Sizes are multiples of 8. An 8-byte message is the sequence number alone.

/// The message sizes the size-aware rows measure, in bytes.
pub const SIZES: [usize; 4] = [8, 64, 1024, 64 * 1024];
/// Paced messages carry a send stamp, so they need two words; 64 bytes is a
/// typical small message and one cache line.
pub const PACED_SIZE: usize = 64;
const WORD: usize = size_of::<u64>();

/// Writes message `seq` of `buffer.len()` bytes into `buffer`; `stamp` goes
/// into the second word when there is one.
#[inline]
pub fn fill(buffer: &mut [u8], seq: u64, stamp: u64) {
    let mut words = buffer.chunks_exact_mut(WORD);
    if let Some(first) = words.next() {
        first.copy_from_slice(&seq.to_ne_bytes());
    }
    if let Some(second) = words.next() {
        second.copy_from_slice(&stamp.to_ne_bytes());
    }
    let filler = seq.to_ne_bytes();
    for word in words {
        word.copy_from_slice(&filler);
    }
}

/// Reads every word of a received message and checks that it is whole:
/// returns its sequence number and stamp (the sequence number again when
/// the message has no stamp word).
#[inline]
pub fn check(buffer: &[u8]) -> Result<(u64, u64), String> {
    let mut words = buffer
        .chunks_exact(WORD)
        .map(|word| u64::from_ne_bytes(word.try_into().unwrap_or_default()));
    let seq = words.next().ok_or("an empty message")?;
    let stamp = words.next().unwrap_or(seq);
    // Every remaining word is read: a fold the compiler cannot skip.
    let mismatches = words.fold(0u64, |count, word| count + u64::from(word != seq));
    if mismatches != 0 || !buffer.len().is_multiple_of(WORD) {
        return Err(format!(
            "message {seq} is torn: {mismatches} of its words differ"
        ));
    }
    Ok((seq, stamp))
}

/// [`check`], and that the sequence number is `expected`.
#[inline]
pub fn check_seq(buffer: &[u8], expected: u64) -> Result<u64, String> {
    let (seq, stamp) = check(buffer)?;
    if seq != expected {
        return Err(format!("expected message {expected}, received {seq}"));
    }
    Ok(stamp)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_detects_damage() {
        for size in SIZES {
            let mut buffer = vec![0; size];
            fill(&mut buffer, 42, 7);
            let stamp = check_seq(&buffer, 42).unwrap();
            assert_eq!(stamp, if size == 8 { 42 } else { 7 });
            assert!(check_seq(&buffer, 43).is_err());
            if size > 16 {
                buffer[size - 1] ^= 1;
                assert!(check(&buffer).is_err());
            }
        }
    }
}
