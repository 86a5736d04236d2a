//! In-process reference rows: two threads and a well-known lock-free queue
//! (rtrb's SPSC ring, crossbeam's bounded MPMC `ArrayQueue`). They show
//! what a queue costs without any process boundary. Items go one at a
//! time, as most users push them; neither side ever sleeps.

use std::ops::Range;
use std::sync::Arc;

use crossbeam_queue::ArrayQueue;

use crate::bench::link::{Consumer, Producer, Stop, ThreadTransport};
use crate::bench::message;

/// An 8-byte message is its sequence number (`message::fill`); checked the
/// same way as every other row's.
fn check_item(expected: u64, received: u64) -> Result<(), String> {
    message::check_seq(&received.to_ne_bytes(), expected).map(drop)
}

pub struct Rtrb;
pub struct CrossbeamArrayQueue;

impl ThreadTransport for Rtrb {
    fn pair(&self, capacity: usize) -> (Box<dyn Producer>, Box<dyn Consumer + Send>) {
        let (producer, consumer) = rtrb::RingBuffer::<u64>::new(capacity);
        (Box::new(producer), Box::new(consumer))
    }
}

impl Producer for rtrb::Producer<u64> {
    fn produce(&mut self, items: Range<u64>, stop: &Stop) -> Result<(), String> {
        for item in items {
            if self.push(item).is_err() {
                stop.spin_until(|| self.push(item).ok())?;
            }
        }
        Ok(())
    }
}

impl Consumer for rtrb::Consumer<u64> {
    fn consume(&mut self, items: Range<u64>, stop: &Stop) -> Result<(), String> {
        for expected in items {
            let received = match self.pop() {
                Ok(item) => item,
                Err(_) => stop.spin_until(|| self.pop().ok())?,
            };
            check_item(expected, received)?;
        }
        Ok(())
    }
}

impl ThreadTransport for CrossbeamArrayQueue {
    fn pair(&self, capacity: usize) -> (Box<dyn Producer>, Box<dyn Consumer + Send>) {
        let queue = Arc::new(ArrayQueue::new(capacity));
        (
            Box::new(SharedQueue(queue.clone())),
            Box::new(SharedQueue(queue)),
        )
    }
}

/// Either end of an `ArrayQueue`, which has no separate endpoint types.
struct SharedQueue(Arc<ArrayQueue<u64>>);

impl Producer for SharedQueue {
    fn produce(&mut self, items: Range<u64>, stop: &Stop) -> Result<(), String> {
        for item in items {
            if self.0.push(item).is_err() {
                stop.spin_until(|| self.0.push(item).ok())?;
            }
        }
        Ok(())
    }
}

impl Consumer for SharedQueue {
    fn consume(&mut self, items: Range<u64>, stop: &Stop) -> Result<(), String> {
        for expected in items {
            let received = match self.0.pop() {
                Some(item) => item,
                None => stop.spin_until(|| self.0.pop())?,
            };
            check_item(expected, received)?;
        }
        Ok(())
    }
}
