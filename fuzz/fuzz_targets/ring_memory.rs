//! Any bytes in a ring's memory, as a peer that scribbles could leave them:
//! attaching, pushing and popping return items or typed errors, never a
//! panic, a hang or an access outside the region.
#![no_main]

use ipcring::ring::HeapRegion;
use ipcring::ring::mpmc::{MpmcHandle, MpmcRing};
use ipcring::ring::record::{ProducerMode, RecordConsumer, RecordProducer, RecordRing};
use ipcring::ring::spsc::{Consumer, Producer, SpscRing};
use libfuzzer_sys::fuzz_target;

/// Overwrites the region from `skip` on with the fuzz input, cycled.
fn scribble(heap: &HeapRegion, skip: usize, bytes: &[u8]) {
    if bytes.is_empty() {
        return;
    }
    let region = heap.region();
    for i in skip..region.len() {
        // SAFETY: in bounds; no handle is alive while we write.
        unsafe { region.as_ptr().add(i).write(bytes[(i - skip) % bytes.len()]) };
    }
}

fuzz_target!(|input: &[u8]| {
    let Some((&selector, bytes)) = input.split_first() else {
        return;
    };
    // Keep the ring's magic and sizes sometimes, so the fuzzer reaches
    // the counters and slots, not only the header checks.
    let skip = if selector & 0x80 != 0 { 40 } else { 0 };
    match selector % 4 {
        0 => {
            let heap = HeapRegion::new(SpscRing::<u64>::required_size(8).unwrap()).unwrap();
            // SAFETY: fresh memory, no handle yet.
            unsafe { SpscRing::<u64>::init(heap.region(), 8).unwrap() };
            scribble(&heap, skip, bytes);
            // SAFETY: one producer and one consumer.
            if let (Ok(mut tx), Ok(mut rx)) = unsafe {
                (Producer::<u64>::attach(heap.region()), Consumer::<u64>::attach(heap.region()))
            } {
                for i in 0..20 {
                    let _ = tx.try_push(i);
                    let _ = rx.try_pop();
                    let _ = rx.read_chunk_up_to(5).map(|c| c.commit_all());
                }
            }
        }
        1 => {
            let heap = HeapRegion::new(MpmcRing::<u64>::required_size(5).unwrap()).unwrap();
            // SAFETY: fresh memory, no handle yet.
            unsafe { MpmcRing::<u64>::init(heap.region(), 5).unwrap() };
            scribble(&heap, skip, bytes);
            // SAFETY: `heap` outlives the handle.
            if let Ok(ring) = unsafe { MpmcHandle::<u64>::attach(heap.region(), 0) } {
                for i in 0..20 {
                    let _ = ring.try_push(i);
                    let _ = ring.try_pop();
                }
            }
        }
        _ => {
            let mode = if selector % 4 == 2 { ProducerMode::Single } else { ProducerMode::Many };
            let heap = HeapRegion::new(RecordRing::required_size(256).unwrap()).unwrap();
            // SAFETY: fresh memory, no handle yet.
            unsafe { RecordRing::init(heap.region(), 256, mode).unwrap() };
            scribble(&heap, skip, bytes);
            // SAFETY: one producer (either mode allows it) and one consumer.
            if let (Ok(mut tx), Ok(mut rx)) = unsafe {
                (RecordProducer::attach(heap.region(), 0), RecordConsumer::attach(heap.region()))
            } {
                let mut out = Vec::new();
                for i in 0..20usize {
                    let _ = tx.try_push(&[i as u8; 13][..i % 13]);
                    let _ = rx.try_receive_into(&mut out);
                }
            }
        }
    }
});
