//! The transports the bench measures. Each file turns one mechanism into
//! the link traits of `link.rs`; ipcring's own rings belong here too, as
//! `ipcring.rs`, registered in `rows.rs`.

pub mod hw_limit;
pub mod ipcring;
pub mod pipe;
pub mod queues;

/// Items carry their own sequence number; a mismatch means the transport
/// lost, duplicated or reordered one.
fn check_item(expected: u64, received: u64) -> Result<(), String> {
    if received == expected {
        Ok(())
    } else {
        Err(format!("expected item {expected}, received {received}"))
    }
}
