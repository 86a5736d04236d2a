//! The record ring's byte buffer: an array of 64-bit atomic words, so that
//! record headers can be atomics at any 8-byte boundary. Payloads move word
//! by word with relaxed atomic loads and stores too: a peer that scribbles
//! over bytes we are copying then tears the copy, but is not a data race
//! (which a plain `memcpy` racing with another process's write would be).
//! On x86_64 each is a plain `mov`; the copy is not vectorised.

use std::ptr::NonNull;

use crate::sync::shim::{AtomicU64, Ordering};

/// `len` bytes at `words`, `len` a multiple of 8.
#[derive(Clone, Copy)]
pub(super) struct ByteBuf {
    words: NonNull<AtomicU64>,
    len: usize,
}

impl ByteBuf {
    /// # Safety
    ///
    /// `words` must point to `len / 8` initialised words that outlive the
    /// buffer and are only reached through ring handles.
    pub(super) unsafe fn new(words: NonNull<AtomicU64>, len: usize) -> ByteBuf {
        debug_assert!(len % 8 == 0);
        ByteBuf { words, len }
    }

    /// The word at byte `offset` (a multiple of 8 below `len`).
    pub(super) fn word(&self, offset: usize) -> &AtomicU64 {
        assert!(
            offset % 8 == 0 && offset < self.len,
            "record ring offset out of range"
        );
        // SAFETY: in bounds and aligned (asserted above; the assert never
        // fires because callers validate offsets first).
        unsafe { &*self.words.as_ptr().add(offset / 8) }
    }

    /// The eight words from byte `offset` (a multiple of 8, with all
    /// eight below `len`), taken from the buffer's own pointer so that the
    /// reference covers all of them.
    #[cfg_attr(loom, allow(dead_code))] // the queue is not built under loom
    pub(super) fn words8(&self, offset: usize) -> &[AtomicU64; 8] {
        assert!(
            offset % 8 == 0 && offset.checked_add(64).is_some_and(|end| end <= self.len),
            "ring offset out of range"
        );
        // SAFETY: in bounds and aligned (asserted above; callers validate
        // offsets first); atomics only.
        unsafe { &*self.words.as_ptr().add(offset / 8).cast::<[AtomicU64; 8]>() }
    }

    /// The word at byte `offset`, after `check` covered it.
    #[inline]
    fn word_in_checked_range(&self, offset: usize) -> &AtomicU64 {
        debug_assert!(offset % 8 == 0 && offset < self.len);
        // SAFETY: the caller's `check` covered this offset: in bounds and
        // 8-aligned.
        unsafe { &*self.words.as_ptr().add(offset / 8) }
    }

    fn check(&self, offset: usize, len: usize) {
        assert!(
            offset % 8 == 0 && offset.checked_add(len).is_some_and(|end| end <= self.len),
            "record ring range out of bounds"
        );
    }

    /// Copies `src` to byte `offset` (8-aligned). A last partial word is
    /// merged with the word's other bytes (all in the caller's record, whose
    /// payload is padded to 8 bytes).
    pub(super) fn write(&self, offset: usize, src: &[u8]) {
        self.check(offset, src.len());
        for (i, chunk) in src.chunks(8).enumerate() {
            let word = self.word_in_checked_range(offset + i * 8);
            let value = match <[u8; 8]>::try_from(chunk) {
                Ok(whole) => u64::from_ne_bytes(whole),
                Err(_) => {
                    // Relaxed: the word is ours (see above); the record's
                    // publication orders it.
                    let mut bytes = word.load(Ordering::Relaxed).to_ne_bytes();
                    bytes[..chunk.len()].copy_from_slice(chunk);
                    u64::from_ne_bytes(bytes)
                }
            };
            // Relaxed: the header store (or `tail`, one producer) publishes.
            word.store(value, Ordering::Relaxed);
        }
    }

    /// Copies from byte `offset` (8-aligned) into `dst`.
    pub(super) fn read(&self, offset: usize, dst: &mut [u8]) {
        self.check(offset, dst.len());
        for (i, chunk) in dst.chunks_mut(8).enumerate() {
            // Relaxed: the Acquire load of the header (or `tail`) ordered
            // the producer's writes before these.
            let bytes = self
                .word_in_checked_range(offset + i * 8)
                .load(Ordering::Relaxed)
                .to_ne_bytes();
            let n = chunk.len();
            chunk.copy_from_slice(&bytes[..n]);
        }
    }

    /// Zeroes `len` bytes from `offset` (both multiples of 8).
    pub(super) fn zero(&self, offset: usize, len: usize) {
        self.check(offset, len);
        for i in (0..len).step_by(8) {
            // Relaxed: the Release store of `head` publishes the zeroing.
            self.word_in_checked_range(offset + i)
                .store(0, Ordering::Relaxed);
        }
    }

    /// A raw pointer to byte `offset`, for zero-copy access.
    #[cfg(not(loom))]
    pub(super) fn ptr(&self, offset: usize) -> *mut u8 {
        self.check(offset, 0);
        // SAFETY: offset <= len, so the pointer is in bounds or one past.
        unsafe { self.words.as_ptr().cast::<u8>().add(offset) }
    }
}
