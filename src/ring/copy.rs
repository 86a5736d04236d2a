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

/// Reads a `T` from `src`.
///
/// # Safety
///
/// `src` must be valid for reads of a `T` and aligned for it.
#[inline]
pub(crate) unsafe fn load<T: Pod>(src: *const T) -> T {
    #[cfg(not(loom))]
    {
        // SAFETY: valid and aligned (the caller's contract); whatever bits
        // are read, torn or not, make a valid T, as T is Pod.
        unsafe {
            atomic_memcpy::atomic_load(src, std::sync::atomic::Ordering::Relaxed).assume_init()
        }
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
        // SAFETY: valid and aligned (the caller's contract).
        unsafe { atomic_memcpy::atomic_store(dst, value, std::sync::atomic::Ordering::Relaxed) }
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
