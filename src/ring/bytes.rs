//! The record ring's byte buffer: an array of 64-bit words, so that record
//! headers can be atomics at any 8-byte boundary, while payloads move with
//! plain byte copies. Under loom, payload copies go word by word through
//! the (model) atomics instead, so loom sees every access.

use std::ptr::NonNull;

use crate::sync::shim::AtomicU64;
#[cfg(loom)]
use crate::sync::shim::Ordering;

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

    fn check(&self, offset: usize, len: usize) {
        assert!(
            offset % 8 == 0 && offset.checked_add(len).is_some_and(|end| end <= self.len),
            "record ring range out of bounds"
        );
    }

    /// Copies `src` to byte `offset` (8-aligned).
    pub(super) fn write(&self, offset: usize, src: &[u8]) {
        self.check(offset, src.len());
        #[cfg(not(loom))]
        // SAFETY: the range is inside the buffer (checked) and owned by the
        // caller under the ring protocol; `src` cannot overlap shared memory
        // we hold exclusively.
        unsafe {
            std::ptr::copy_nonoverlapping(
                src.as_ptr(),
                self.words.as_ptr().cast::<u8>().add(offset),
                src.len(),
            );
        }
        #[cfg(loom)]
        for (i, chunk) in src.chunks(8).enumerate() {
            let word = self.word(offset + i * 8);
            let mut bytes = word.load(Ordering::Relaxed).to_le_bytes();
            bytes[..chunk.len()].copy_from_slice(chunk);
            word.store(u64::from_le_bytes(bytes), Ordering::Relaxed);
        }
    }

    /// Copies from byte `offset` (8-aligned) into `dst`.
    pub(super) fn read(&self, offset: usize, dst: &mut [u8]) {
        self.check(offset, dst.len());
        #[cfg(not(loom))]
        // SAFETY: as in `write`; the range holds a published record.
        unsafe {
            std::ptr::copy_nonoverlapping(
                self.words.as_ptr().cast::<u8>().add(offset),
                dst.as_mut_ptr(),
                dst.len(),
            );
        }
        #[cfg(loom)]
        for (i, chunk) in dst.chunks_mut(8).enumerate() {
            let bytes = self
                .word(offset + i * 8)
                .load(Ordering::Relaxed)
                .to_le_bytes();
            let n = chunk.len();
            chunk.copy_from_slice(&bytes[..n]);
        }
    }

    /// Zeroes `len` bytes from `offset` (both multiples of 8).
    pub(super) fn zero(&self, offset: usize, len: usize) {
        self.check(offset, len);
        #[cfg(not(loom))]
        // SAFETY: as in `write`.
        unsafe {
            std::ptr::write_bytes(self.words.as_ptr().cast::<u8>().add(offset), 0, len);
        }
        #[cfg(loom)]
        for i in (0..len).step_by(8) {
            self.word(offset + i).store(0, Ordering::Relaxed);
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
