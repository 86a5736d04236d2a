//! In-process reference rows: two threads and a well-known lock-free queue
//! (rtrb's SPSC ring, crossbeam's bounded MPMC `ArrayQueue`). They show
//! what a queue costs without any process boundary. Items go one at a
//! time, as most users push them, except in `rtrb-chunk`, which moves up
//! to [`CHUNK_ITEMS`] per call with rtrb's chunk API, to compare with
//! `ipcring-spsc-chunk`. Neither side ever sleeps.

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

/// Items per chunk in `rtrb-chunk`: as many as `ipcring-spsc-chunk`
/// moves per chunk of 8-byte items.
const CHUNK_ITEMS: usize = 256;

pub struct Rtrb;
pub struct RtrbChunks;
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

impl ThreadTransport for RtrbChunks {
    fn pair(&self, capacity: usize) -> (Box<dyn Producer>, Box<dyn Consumer + Send>) {
        let (producer, consumer) = rtrb::RingBuffer::<u64>::new(capacity);
        (Box::new(Chunks(producer)), Box::new(Chunks(consumer)))
    }
}

/// An rtrb end used through its chunk API.
struct Chunks<E>(E);

impl Producer for Chunks<rtrb::Producer<u64>> {
    fn produce(&mut self, items: Range<u64>, stop: &Stop) -> Result<(), String> {
        let mut next = items.start;
        while next < items.end {
            let want = CHUNK_ITEMS.min((items.end - next) as usize);
            let producer = &mut self.0;
            let free = match producer.slots() {
                0 => stop.spin_until(|| Some(producer.slots()).filter(|&n| n > 0))?,
                n => n,
            };
            let n = want.min(free);
            let chunk = producer
                .write_chunk_uninit(n)
                .map_err(|e| format!("rtrb chunk: {e}"))?;
            // An 8-byte message is its sequence number (`message::fill`).
            next += chunk.fill_from_iter(next..next + n as u64) as u64;
        }
        Ok(())
    }
}

impl Consumer for Chunks<rtrb::Consumer<u64>> {
    fn consume(&mut self, items: Range<u64>, stop: &Stop) -> Result<(), String> {
        let mut expected = items.start;
        while expected < items.end {
            let want = CHUNK_ITEMS.min((items.end - expected) as usize);
            let consumer = &mut self.0;
            let ready = match consumer.slots() {
                0 => stop.spin_until(|| Some(consumer.slots()).filter(|&n| n > 0))?,
                n => n,
            };
            let chunk = consumer
                .read_chunk(want.min(ready))
                .map_err(|e| format!("rtrb chunk: {e}"))?;
            let (first, second) = chunk.as_slices();
            for &received in first.iter().chain(second) {
                check_item(expected, received)?;
                expected += 1;
            }
            chunk.commit_all();
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
