//! `pipe`: the kernel baseline. The child's stdin and stdout are two pipes
//! to the parent, one per direction. Messages are native-endian `u64`s.

use std::fs::File;
use std::io::{Read, Write};
use std::ops::Range;
use std::os::fd::OwnedFd;
use std::process::Child;

use super::check_item;
use crate::bench::link::{Consumer, Echo, PingPongTransport, Producer, Stop, ThroughputTransport};
use crate::bench::process::{Inherited, Spawner};

const ITEM_BYTES: usize = size_of::<u64>();
/// Items per `write` in the throughput row: 512 × 8 bytes is 4096 bytes,
/// which is `PIPE_BUF` (the largest write the kernel keeps whole) and one
/// page. Batching is how a program would use a pipe for a stream; one
/// syscall per 8-byte item would measure the syscall, not the pipe.
pub const BATCH_ITEMS: usize = 512;

/// Ping-pong: one 8-byte `write` and one 8-byte `read` per message.
pub struct PipePingPong;
/// One-way stream, written in batches of [`BATCH_ITEMS`].
pub struct PipeStream;

impl PingPongTransport for PipePingPong {
    fn parent(&self, spawner: Spawner<'_>) -> Result<Box<dyn Echo>, String> {
        Ok(Box::new(Pipes::to_child(spawner)?))
    }

    fn child(&self, inherited: &Inherited) -> Result<Box<dyn Echo>, String> {
        Ok(Box::new(Pipes::to_parent(inherited)?))
    }
}

impl ThroughputTransport for PipeStream {
    fn parent(&self, spawner: Spawner<'_>) -> Result<Box<dyn Producer>, String> {
        Ok(Box::new(Pipes::to_child(spawner)?))
    }

    fn child(&self, inherited: &Inherited) -> Result<Box<dyn Consumer>, String> {
        Ok(Box::new(Pipes::to_parent(inherited)?))
    }
}

/// Both pipes, seen from one side. Blocking: a side waits in the kernel,
/// which is what a pipe user pays. A peer that dies closes its ends, and
/// the blocked `read` or `write` fails.
struct Pipes {
    to_peer: File,
    from_peer: File,
}

impl Pipes {
    fn to_child(mut spawner: Spawner<'_>) -> Result<Pipes, String> {
        spawner.pipe_stdio();
        let child: &mut Child = spawner.spawn()?;
        let to_child = child.stdin.take().ok_or("the child has no stdin pipe")?;
        let from_child = child.stdout.take().ok_or("the child has no stdout pipe")?;
        Ok(Pipes {
            to_peer: File::from(OwnedFd::from(to_child)),
            from_peer: File::from(OwnedFd::from(from_child)),
        })
    }

    fn to_parent(inherited: &Inherited) -> Result<Pipes, String> {
        let (from_parent, to_parent) = inherited.stdio_pipes()?;
        Ok(Pipes {
            to_peer: to_parent,
            from_peer: from_parent,
        })
    }
}

fn pipe_error(e: std::io::Error) -> String {
    format!("pipe: {e}")
}

impl Echo for Pipes {
    fn send(&mut self, value: u64, _stop: &Stop) -> Result<(), String> {
        self.to_peer
            .write_all(&value.to_ne_bytes())
            .map_err(pipe_error)
    }

    fn recv(&mut self, _stop: &Stop) -> Result<u64, String> {
        let mut bytes = [0; ITEM_BYTES];
        self.from_peer.read_exact(&mut bytes).map_err(pipe_error)?;
        Ok(u64::from_ne_bytes(bytes))
    }
}

/// Splits `items` into the batches both sides use, so each `read_exact`
/// matches one `write`.
fn batches(items: Range<u64>) -> impl Iterator<Item = Range<u64>> {
    items.clone().step_by(BATCH_ITEMS).map(move |first| {
        let end = first.saturating_add(BATCH_ITEMS as u64).min(items.end);
        first..end
    })
}

impl Producer for Pipes {
    fn produce(&mut self, items: Range<u64>, _stop: &Stop) -> Result<(), String> {
        let mut buffer = [0; BATCH_ITEMS * ITEM_BYTES];
        for batch in batches(items) {
            let bytes = (batch.end - batch.start) as usize * ITEM_BYTES;
            for (slot, item) in buffer.chunks_exact_mut(ITEM_BYTES).zip(batch) {
                slot.copy_from_slice(&item.to_ne_bytes());
            }
            self.to_peer
                .write_all(&buffer[..bytes])
                .map_err(pipe_error)?;
        }
        Ok(())
    }
}

impl Consumer for Pipes {
    fn consume(&mut self, items: Range<u64>, _stop: &Stop) -> Result<(), String> {
        let mut buffer = [0; BATCH_ITEMS * ITEM_BYTES];
        for batch in batches(items) {
            let bytes = (batch.end - batch.start) as usize * ITEM_BYTES;
            self.from_peer
                .read_exact(&mut buffer[..bytes])
                .map_err(pipe_error)?;
            for (slot, expected) in buffer.chunks_exact(ITEM_BYTES).zip(batch) {
                let received = u64::from_ne_bytes(slot.try_into().expect("chunks are 8 bytes"));
                check_item(expected, received)?;
            }
        }
        Ok(())
    }
}
