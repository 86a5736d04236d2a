//! The transports the bench measures. Each file turns one mechanism (or a
//! family of them) into the link traits of `link.rs`; ipcring's own rings
//! belong here too, as `ipcring.rs`. `rows.rs` registers them.

pub mod hw_limit;
pub mod iceoryx2;
pub mod ipcring;
pub mod kernel;
pub mod messages;
pub mod queues;
pub mod residency;
pub mod stream;
