//! Copies into and out of ring memory that a peer may write at any moment.
//!
//! A correct peer never writes a slot or payload while we own it, but a
//! faulty or hostile one can, and a plain copy racing with another
//! process's write is a data race: undefined behaviour in Rust's model even
//! without a reference. So values are copied with relaxed atomic loads and
//! stores of whole words (`atomic-memcpy` picks the widest the alignment
//! allows). On x86_64 that is the same `mov` a plain copy uses, though not
//! vectorised. A racing write can still tear the value, which is why items
//! are `Pod`: every bit pattern is a valid `T`.
//!
//! Under loom the cells themselves model the accesses (loom checks each for
//! races), so plain reads and writes are used there.

use super::Pod;
#[cfg(not(loom))]
use std::sync::atomic::{AtomicU64, Ordering};

/// Whether `T` is a whole number of 8-byte words, 8-aligned: then plain
/// 64-bit relaxed atomics copy it, which compiles to the same moves as a
/// plain copy. Other layouts go through `atomic-memcpy`, which picks the
/// widest access their alignment allows.
#[cfg(not(loom))]
#[inline(always)]
const fn word_sized<T>() -> bool {
    std::mem::size_of::<T>() % 8 == 0 && std::mem::align_of::<T>() >= 8
}

/// Reads a `T` from `src`.
///
/// # Safety
///
/// `src` must be valid for reads of a `T` and aligned for it.
#[inline]
pub(crate) unsafe fn load<T: Pod>(src: *const T) -> T {
    #[cfg(not(loom))]
    {
        if word_sized::<T>() {
            let mut value = T::zeroed();
            let out = (&mut value as *mut T).cast::<u64>();
            for i in 0..std::mem::size_of::<T>() / 8 {
                // SAFETY: `src` is valid and 8-aligned for a T that is a
                // whole number of words (checked by `word_sized`), so word
                // `i` is in bounds and aligned; `out` is our own T's words.
                unsafe {
                    let word = AtomicU64::from_ptr(src.cast::<u64>().cast_mut().add(i));
                    out.add(i).write(word.load(Ordering::Relaxed));
                }
            }
            return value;
        }
        // SAFETY: valid and aligned (the caller's contract); whatever bits
        // are read, torn or not, make a valid T, as T is Pod.
        unsafe { atomic_memcpy::atomic_load(src, Ordering::Relaxed).assume_init() }
    }
    #[cfg(loom)]
    {
        // SAFETY: as above; loom's cell tracks this access.
        unsafe { src.read() }
    }
}

/// Writes `value` to `dst`.
///
/// # Safety
///
/// `dst` must be valid for writes of a `T` and aligned for it.
#[inline]
pub(crate) unsafe fn store<T: Pod>(dst: *mut T, value: T) {
    #[cfg(not(loom))]
    {
        if word_sized::<T>() {
            let words = (&value as *const T).cast::<u64>();
            for i in 0..std::mem::size_of::<T>() / 8 {
                // SAFETY: as in `load`: word `i` of `dst` is in bounds and
                // aligned, and `words` reads our own value.
                unsafe {
                    let word = AtomicU64::from_ptr(dst.cast::<u64>().add(i));
                    word.store(words.add(i).read(), Ordering::Relaxed);
                }
            }
            return;
        }
        // SAFETY: valid and aligned (the caller's contract).
        unsafe { atomic_memcpy::atomic_store(dst, value, Ordering::Relaxed) }
    }
    #[cfg(loom)]
    {
        // SAFETY: as above; loom's cell tracks this access.
        unsafe { dst.write(value) }
    }
}

/// Reads `out.len()` consecutive `T`s from `src` into `out`.
///
/// # Safety
///
/// `src` must be valid for reads of `out.len()` `T`s, and aligned.
#[cfg(not(loom))]
#[inline]
pub(crate) unsafe fn load_slice<T: Pod>(src: *const T, out: &mut [T]) {
    for (i, item) in out.iter_mut().enumerate() {
        // SAFETY: i < out.len(), within the caller's range.
        *item = unsafe { load(src.add(i)) };
    }
}

/// Writes `items` to consecutive `T`s from `dst`.
///
/// # Safety
///
/// `dst` must be valid for writes of `items.len()` `T`s, and aligned.
#[cfg(not(loom))]
#[inline]
pub(crate) unsafe fn store_slice<T: Pod>(dst: *mut T, items: &[T]) {
    for (i, item) in items.iter().enumerate() {
        // SAFETY: i < items.len(), within the caller's range.
        unsafe { store(dst.add(i), *item) };
    }
}

/// Copies `src` to the byte cells from `index` of the cell array at `base`:
/// a byte stream's data area, which a peer may read (or, if faulty, write)
/// at the same time.
///
/// Plain memory: relaxed `AtomicU8` stores up to an 8-byte boundary of the
/// destination, relaxed `AtomicU64` stores for the aligned words, bytes
/// again for the rest. On x86_64 the words are plain `mov`s, about as fast
/// as an unvectorised `memcpy`. Under loom each cell is a loom `AtomicU8`,
/// stored one by one, so that loom checks the orderings that publish them.
///
/// # Safety
///
/// `base` must point to at least `index + src.len()` byte cells (under
/// loom, constructed `AtomicU8`s) valid for writes.
#[inline]
pub(crate) unsafe fn store_bytes(base: *mut u8, index: usize, src: &[u8]) {
    #[cfg(not(loom))]
    {
        use std::sync::atomic::AtomicU8;
        // SAFETY: `index` is within the caller's cells.
        let dst = unsafe { base.add(index) };
        let len = src.len();
        let head = ((8 - (dst as usize & 7)) & 7).min(len);
        let words = (len - head) / 8;
        for (i, &byte) in src[..head].iter().enumerate() {
            // SAFETY: i < head <= len: within the caller's range.
            unsafe { AtomicU8::from_ptr(dst.add(i)) }.store(byte, Ordering::Relaxed);
        }
        for w in 0..words {
            let at = head + 8 * w;
            // SAFETY: `at + 8 <= len`, so both ranges are in bounds; the
            // destination is 8-aligned (past `head`), the source is read
            // unaligned from our own slice.
            unsafe {
                let value = src.as_ptr().add(at).cast::<u64>().read_unaligned();
                AtomicU64::from_ptr(dst.add(at).cast::<u64>()).store(value, Ordering::Relaxed);
            }
        }
        let done = head + 8 * words;
        for (i, &byte) in src[done..].iter().enumerate() {
            // SAFETY: done + i < len: within the caller's range.
            unsafe { AtomicU8::from_ptr(dst.add(done + i)) }.store(byte, Ordering::Relaxed);
        }
    }
    #[cfg(loom)]
    {
        let cells = base.cast::<crate::sync::shim::AtomicU8>();
        for (i, &byte) in src.iter().enumerate() {
            // SAFETY: within the caller's constructed cells.
            unsafe { &*cells.add(index + i) }.store(byte, crate::sync::shim::Ordering::Relaxed);
        }
    }
}

/// Copies the byte cells from `index` of the cell array at `base` into
/// `dst`; the mirror of [`store_bytes`] (a racing write tears the bytes,
/// never the program).
///
/// # Safety
///
/// `base` must point to at least `index + dst.len()` byte cells (under
/// loom, constructed `AtomicU8`s) valid for reads.
#[inline]
pub(crate) unsafe fn load_bytes(base: *const u8, index: usize, dst: &mut [u8]) {
    #[cfg(not(loom))]
    {
        use std::sync::atomic::AtomicU8;
        // SAFETY: `index` is within the caller's cells.
        let src = unsafe { base.add(index) }.cast_mut();
        let len = dst.len();
        let head = ((8 - (src as usize & 7)) & 7).min(len);
        let words = (len - head) / 8;
        for (i, byte) in dst[..head].iter_mut().enumerate() {
            // SAFETY: i < head <= len: within the caller's range.
            *byte = unsafe { AtomicU8::from_ptr(src.add(i)) }.load(Ordering::Relaxed);
        }
        for w in 0..words {
            let at = head + 8 * w;
            // SAFETY: as in `store_bytes`: in bounds, the shared side
            // aligned, our own slice written unaligned.
            unsafe {
                let value = AtomicU64::from_ptr(src.add(at).cast::<u64>()).load(Ordering::Relaxed);
                dst.as_mut_ptr()
                    .add(at)
                    .cast::<u64>()
                    .write_unaligned(value);
            }
        }
        let done = head + 8 * words;
        for (i, byte) in dst[done..].iter_mut().enumerate() {
            // SAFETY: done + i < len: within the caller's range.
            *byte = unsafe { AtomicU8::from_ptr(src.add(done + i)) }.load(Ordering::Relaxed);
        }
    }
    #[cfg(loom)]
    {
        let cells = base.cast::<crate::sync::shim::AtomicU8>();
        for (i, byte) in dst.iter_mut().enumerate() {
            // SAFETY: within the caller's constructed cells.
            *byte = unsafe { &*cells.add(index + i) }.load(crate::sync::shim::Ordering::Relaxed);
        }
    }
}
