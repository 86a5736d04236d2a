//! Loom models of ipcring's synchronization protocols live in `tests/`.
//! Build them with `RUSTFLAGS="--cfg loom"`; without it they compile to
//! nothing, so that a plain `cargo test --workspace` skips them.
