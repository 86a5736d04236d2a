//! Loom models of ipcring's synchronization protocols live in `tests/`.
//! Build them with `RUSTFLAGS="--cfg loom"`; without it they compile to
//! nothing, so that a plain `cargo test --workspace` skips them.

/// Runs `f` under loom with at most 3 preemptions, unless
/// `LOOM_MAX_PREEMPTIONS` says otherwise: enough to find the protocol bugs
/// we know of, within CI's time.
#[cfg(loom)]
pub fn model(f: impl Fn() + Sync + Send + 'static) {
    let mut builder = loom::model::Builder::new();
    if builder.preemption_bound.is_none() {
        builder.preemption_bound = Some(3);
    }
    builder.check(f);
}
