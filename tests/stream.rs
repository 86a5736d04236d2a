//! Byte streams (`channel::stream`): pipe and FIFO semantics, several
//! writers and readers, the zero-copy windows across the wrap, anonymous
//! and duplex streams handed to real child processes.

mod common;

use std::io::{self, BufRead, BufReader, Read, Write};
use std::os::fd::AsRawFd;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use common::{Cleanup, child_role, spawn_child, unique_posix, unique_sysv};
use ipcring::channel::stream::{self, ATOMIC_WRITE, Duplex, MAX_CAPACITY, Reader, Writer};
use ipcring::channel::{ChannelError, ChannelOptions, spsc};
use ipcring::segment::{Address, OpenOptions, Segment, page_size};

const LIMIT: Duration = Duration::from_secs(10);

fn options() -> ChannelOptions {
    ChannelOptions::new()
}

fn address_from_env() -> Address {
    std::env::var("STREAM").unwrap().parse().unwrap()
}

/// Runs `f` on a thread; fails the test if it does not return in time.
fn returns_within<T: Send + 'static>(limit: Duration, f: impl FnOnce() -> T + Send + 'static) -> T {
    let (done, result) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = done.send(f());
    });
    result
        .recv_timeout(limit)
        .expect("a blocked call never returned")
}

/// A byte pattern that tells position and writer apart.
fn pattern(seed: u64, len: usize) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

#[test]
fn bytes_arrive_in_order_and_the_end_follows_the_last_writer() {
    let address = unique_posix("stream-basic");
    let _cleanup = Cleanup(address.clone());
    let mut reader = Reader::create(&address, page_size(), &options()).unwrap();
    assert_eq!(reader.capacity(), page_size());
    let mut writer = Writer::open(&address).unwrap();
    assert_eq!(writer.capacity(), page_size());
    let data = pattern(1, 3 * page_size() + 123);
    let sending = std::thread::spawn(move || {
        for piece in data.chunks(1000) {
            writer.write_all(piece).unwrap();
        }
        data
    });
    let mut got = Vec::new();
    reader.read_to_end(&mut got).unwrap();
    assert_eq!(got, sending.join().unwrap());
    // Ended, and stays ended while nobody writes.
    assert_eq!(reader.read(&mut [0; 10]).unwrap(), 0);
    assert_eq!(reader.try_read(&mut [0; 10]).unwrap(), 0);
    // A writer that comes later starts the stream again, as with a FIFO.
    let mut late = Writer::open(&address).unwrap();
    late.write_all(b"again").unwrap();
    assert_eq!(reader.available().unwrap(), 5);
    let mut out = [0; 5];
    reader.read_exact(&mut out).unwrap();
    assert_eq!(&out, b"again");
}

#[test]
fn a_reader_before_any_writer_waits_for_the_first_one() {
    let address = unique_posix("stream-first-writer");
    let _cleanup = Cleanup(address.clone());
    let mut reader = Reader::create(&address, page_size(), &options()).unwrap();
    // No writer ever attached: not the end of the stream.
    let error = reader.try_read(&mut [0; 8]).unwrap_err();
    assert_eq!(error.kind(), io::ErrorKind::WouldBlock);
    let error = reader
        .read_timeout(&mut [0; 8], Duration::from_millis(150))
        .unwrap_err();
    assert_eq!(error.kind(), io::ErrorKind::TimedOut);
    let waiting = std::thread::spawn(move || {
        let mut got = Vec::new();
        reader.read_to_end(&mut got).unwrap();
        got
    });
    std::thread::sleep(Duration::from_millis(300));
    assert!(
        !waiting.is_finished(),
        "the reader must wait, not see the end"
    );
    let mut writer = Writer::open(&address).unwrap();
    writer.write_all(b"first").unwrap();
    drop(writer);
    assert_eq!(
        returns_within(LIMIT, move || waiting.join().unwrap()),
        b"first"
    );
}

/// Each endpoint waits for the other side as a FIFO's open does, however
/// many runs came before: a reader attached after the last writer left
/// reads what it left and sees the end, but one that finds the stream
/// empty waits for the next writer; a writer attached after the last
/// reader left writes into the buffer rather than failing.
#[test]
fn every_endpoint_waits_for_its_own_first_peer() {
    let address = unique_posix("stream-runs");
    let _cleanup = Cleanup(address.clone());
    let mut first_reader = Reader::create(&address, page_size(), &options()).unwrap();
    let mut first_writer = Writer::open(&address).unwrap();
    first_writer.write_all(b"one").unwrap();
    drop(first_writer);
    let mut got = Vec::new();
    first_reader.read_to_end(&mut got).unwrap();
    assert_eq!(got, b"one");
    assert!(first_reader.is_disconnected());
    drop(first_reader);

    // Both sides have come and gone. A new writer has seen no reader.
    let mut writer = Writer::open(&address).unwrap();
    assert!(!writer.is_disconnected());
    writer.write_all(b"two").unwrap();
    drop(writer);
    // A new reader finds what that writer left: its end too.
    let mut reader = Reader::open(&address).unwrap();
    let mut got = Vec::new();
    returns_within(LIMIT, move || {
        reader.read_to_end(&mut got).unwrap();
        got
    })
    .iter()
    .zip(b"two")
    .for_each(|(a, b)| assert_eq!(a, b));
    // The stream is empty now: the next reader waits for a writer.
    let mut reader = Reader::open(&address).unwrap();
    let mut out = [0; 8];
    assert_eq!(
        reader.try_read(&mut out).unwrap_err().kind(),
        io::ErrorKind::WouldBlock
    );
    assert!(!reader.is_disconnected());
    let waiting = std::thread::spawn(move || {
        let mut got = Vec::new();
        reader.read_to_end(&mut got).unwrap();
        got
    });
    std::thread::sleep(Duration::from_millis(200));
    assert!(!waiting.is_finished());
    // A writer that attaches and leaves without writing ends it.
    drop(Writer::open(&address).unwrap());
    assert!(returns_within(LIMIT, move || waiting.join().unwrap()).is_empty());
}

#[test]
fn every_blocked_reader_wakes_at_the_end() {
    let address = unique_posix("stream-wake-all");
    let _cleanup = Cleanup(address.clone());
    let writer = Writer::create(&address, page_size(), &options()).unwrap();
    let readers: Vec<_> = (0..3)
        .map(|_| {
            let mut reader = Reader::open(&address).unwrap();
            std::thread::spawn(move || reader.read(&mut [0; 16]).unwrap())
        })
        .collect();
    std::thread::sleep(Duration::from_millis(200));
    let left = Instant::now();
    drop(writer);
    for reader in readers {
        assert_eq!(returns_within(LIMIT, move || reader.join().unwrap()), 0);
    }
    eprintln!(
        "three blocked readers saw the end {:?} after the writer left",
        left.elapsed()
    );
}

#[test]
fn writing_with_no_reader_left_is_a_broken_pipe() {
    let address = unique_posix("stream-epipe");
    let _cleanup = Cleanup(address.clone());
    let mut writer = Writer::create(&address, page_size(), &options()).unwrap();
    // No reader yet: the stream buffers what fits, like a FIFO opened for
    // reading and writing.
    writer.write_all(&[1; 1000]).unwrap();
    assert_eq!(writer.buffered().unwrap(), 1000);
    let reader = Reader::open(&address).unwrap();
    drop(reader);
    let error = writer.write(b"x").unwrap_err();
    assert_eq!(error.kind(), io::ErrorKind::BrokenPipe);
    assert!(writer.is_disconnected());

    // A writer blocked on a full stream wakes when the last reader leaves.
    let reader = Reader::open(&address).unwrap();
    let free = writer.free().unwrap();
    writer.write_all(&vec![2; free]).unwrap();
    let blocked = std::thread::spawn(move || writer.write(&[3; 100]));
    std::thread::sleep(Duration::from_millis(200));
    drop(reader);
    let error = returns_within(LIMIT, move || blocked.join().unwrap()).unwrap_err();
    assert_eq!(error.kind(), io::ErrorKind::BrokenPipe);
}

#[test]
fn a_large_write_cut_short_by_the_readers_leaving_returns_its_count() {
    let address = unique_posix("stream-partial-epipe");
    let _cleanup = Cleanup(address.clone());
    let mut writer = Writer::create(&address, page_size(), &options()).unwrap();
    let mut reader = Reader::open(&address).unwrap();
    let big = vec![9; 3 * page_size()];
    let writing = std::thread::spawn(move || writer.write(&big));
    // Take one page, then leave: the writer has written more than a page.
    let mut out = vec![0; page_size()];
    reader.read_exact(&mut out).unwrap();
    std::thread::sleep(Duration::from_millis(100));
    drop(reader);
    let written = returns_within(LIMIT, move || writing.join().unwrap()).unwrap();
    assert!(
        written >= page_size() && written < 3 * page_size(),
        "{written}"
    );
}

#[test]
fn nonblocking_writes_take_what_fits_unless_atomic() {
    let address = unique_posix("stream-nonblocking");
    let _cleanup = Cleanup(address.clone());
    let capacity = 4 * page_size();
    let mut writer = Writer::create(&address, capacity, &options()).unwrap();
    let mut reader = Reader::open(&address).unwrap();
    writer.set_nonblocking(true);
    reader.set_nonblocking(true);
    assert!(writer.is_nonblocking() && reader.is_nonblocking());
    assert_eq!(
        reader.read(&mut [0; 8]).unwrap_err().kind(),
        io::ErrorKind::WouldBlock
    );
    writer.write_all(&vec![1; capacity - 100]).unwrap();
    // Larger than ATOMIC_WRITE and than the free space: what fits.
    assert_eq!(writer.write(&vec![2; ATOMIC_WRITE + 1]).unwrap(), 100);
    assert_eq!(
        writer.write(&[3; 10]).unwrap_err().kind(),
        io::ErrorKind::WouldBlock
    );
    let mut out = vec![0; 200];
    assert_eq!(reader.read(&mut out).unwrap(), 200);
    // An atomic write larger than the free space goes in whole or not at
    // all.
    assert_eq!(
        writer.write(&[4; 300]).unwrap_err().kind(),
        io::ErrorKind::WouldBlock
    );
    assert_eq!(writer.write(&[4; 200]).unwrap(), 200);
    assert_eq!(
        writer.try_write(&[5; 1]).unwrap_err().kind(),
        io::ErrorKind::WouldBlock
    );
    assert_eq!(writer.free().unwrap(), 0);
    let mut all = Vec::new();
    let mut chunk = vec![0; capacity];
    while let Ok(n) = reader.read(&mut chunk) {
        all.extend_from_slice(&chunk[..n]);
    }
    assert_eq!(all.len(), capacity);
    assert!(all[..capacity - 300].iter().all(|&b| b == 1));
    assert!(all[capacity - 300..capacity - 200].iter().all(|&b| b == 2));
    assert!(all[capacity - 200..].iter().all(|&b| b == 4));
}

#[test]
fn timeouts_end_with_timed_out_and_huge_ones_mean_forever() {
    let address = unique_posix("stream-timeouts");
    let _cleanup = Cleanup(address.clone());
    let mut writer = Writer::create(&address, page_size(), &options()).unwrap();
    let mut reader = Reader::open(&address).unwrap();
    let started = Instant::now();
    let error = reader
        .read_timeout(&mut [0; 4], Duration::from_millis(100))
        .unwrap_err();
    assert_eq!(error.kind(), io::ErrorKind::TimedOut);
    assert!(started.elapsed() >= Duration::from_millis(100));
    writer.write_all(&vec![0; page_size()]).unwrap();
    let error = writer
        .write_timeout(&[1; 10], Duration::from_millis(100))
        .unwrap_err();
    assert_eq!(error.kind(), io::ErrorKind::TimedOut);
    // A large write that times out part way returns what it wrote.
    let mut half = vec![0; page_size() / 2];
    reader.read_exact(&mut half).unwrap();
    let big = vec![1; ATOMIC_WRITE + page_size()];
    assert_eq!(
        writer
            .write_timeout(&big, Duration::from_millis(100))
            .unwrap(),
        page_size() / 2
    );

    // Settable timeouts apply to Read and Write.
    assert_eq!(
        reader.set_timeout(Some(Duration::ZERO)).unwrap_err().kind(),
        io::ErrorKind::InvalidInput
    );
    writer.set_timeout(Some(Duration::from_millis(50))).unwrap();
    assert_eq!(writer.timeout(), Some(Duration::from_millis(50)));
    assert_eq!(
        writer.write(&[2; 10]).unwrap_err().kind(),
        io::ErrorKind::TimedOut
    );
    let mut all = vec![0; page_size()];
    reader.read_exact(&mut all).unwrap();
    reader.set_timeout(Some(Duration::from_millis(50))).unwrap();
    assert_eq!(
        reader.read(&mut [0; 4]).unwrap_err().kind(),
        io::ErrorKind::TimedOut
    );

    // Duration::MAX waits for ever, without overflowing a deadline.
    reader.set_timeout(Some(Duration::MAX)).unwrap();
    let waiting = std::thread::spawn(move || {
        let mut out = [0; 3];
        let n = reader.read_timeout(&mut out, Duration::MAX).unwrap();
        let m = reader.read(&mut out[n..]).unwrap();
        (n + m, out)
    });
    std::thread::sleep(Duration::from_millis(200));
    assert!(!waiting.is_finished());
    writer.write_timeout(b"a", Duration::MAX).unwrap();
    std::thread::sleep(Duration::from_millis(50));
    writer.write_all(b"bc").unwrap();
    let (n, out) = returns_within(LIMIT, move || waiting.join().unwrap());
    assert_eq!(&out[..n], &b"abc"[..n]);
    assert!(n >= 1);
}

/// Child processes write numbered blocks of `ATOMIC_WRITE` bytes, all the
/// same byte within a block; the reader checks no block is torn.
#[test]
fn atomic_writes_from_many_processes_never_interleave() {
    const WRITERS: u64 = 4;
    const BLOCKS: u64 = 200;
    if let Some(role) = child_role() {
        let id: u8 = role.strip_prefix("writer-").unwrap().parse().unwrap();
        let mut writer = Writer::open(&address_from_env()).unwrap();
        for seq in 0..BLOCKS {
            let mut block = vec![id; ATOMIC_WRITE];
            block[..8].copy_from_slice(&seq.to_le_bytes());
            block[ATOMIC_WRITE - 8..].copy_from_slice(&seq.to_le_bytes());
            assert_eq!(writer.write(&block).unwrap(), ATOMIC_WRITE);
        }
        return;
    }
    let address = unique_posix("stream-atomic");
    let _cleanup = Cleanup(address.clone());
    // Three blocks' room, not a multiple of the block: writes wrap at
    // varying offsets.
    let mut reader = Reader::create(&address, 3 * page_size(), &options()).unwrap();
    // Held until every child is done, so that a child finishing before the
    // next one starts does not end the stream.
    let keeper = Writer::open(&address).unwrap();
    let reading = std::thread::spawn(move || {
        let mut stream = Vec::new();
        let mut chunk = vec![0; 10_000];
        loop {
            let n = reader.read_timeout(&mut chunk, LIMIT).unwrap();
            if n == 0 {
                return stream;
            }
            stream.extend_from_slice(&chunk[..n]);
        }
    });
    let children: Vec<_> = (0..WRITERS)
        .map(|id| {
            spawn_child(
                "atomic_writes_from_many_processes_never_interleave",
                &format!("writer-{id}"),
                &[("STREAM", address.to_string())],
            )
        })
        .collect();
    for child in children {
        child.wait_success(LIMIT);
    }
    drop(keeper);
    let stream = returns_within(LIMIT, move || reading.join().unwrap());
    assert_eq!(stream.len() as u64, WRITERS * BLOCKS * ATOMIC_WRITE as u64);
    let mut next = [0u64; WRITERS as usize];
    for block in stream.chunks(ATOMIC_WRITE) {
        let id = block[8];
        assert!(
            block[8..ATOMIC_WRITE - 8].iter().all(|&b| b == id),
            "a torn block"
        );
        let seq = u64::from_le_bytes(block[..8].try_into().unwrap());
        assert_eq!(
            seq,
            u64::from_le_bytes(block[ATOMIC_WRITE - 8..].try_into().unwrap())
        );
        assert_eq!(seq, next[id as usize], "writer {id} out of order");
        next[id as usize] += 1;
    }
}

/// Reader processes compete for 8-byte numbers written atomically: each
/// number goes to exactly one of them.
#[test]
fn competing_readers_each_get_distinct_bytes() {
    const NUMBERS: u64 = 100_000;
    if let Some(role) = child_role() {
        assert!(role.starts_with("reader"));
        let mut reader = Reader::open(&address_from_env()).unwrap();
        let mut out = io::stdout().lock();
        // libtest has printed "test NAME ... " without a newline; our
        // lines stand on their own. The parent writes once all are here: a
        // reader that came after the writer left and the others drained
        // everything would rightly wait for the next writer.
        writeln!(out).unwrap();
        writeln!(out, "attached").unwrap();
        out.flush().unwrap();
        let mut buf = [0u8; 8 * 37];
        loop {
            let n = reader.read(&mut buf).unwrap();
            if n == 0 {
                return;
            }
            assert_eq!(n % 8, 0, "numbers are written whole, and read whole");
            for number in buf[..n].chunks(8) {
                writeln!(out, "n:{}", u64::from_le_bytes(number.try_into().unwrap())).unwrap();
            }
        }
    }
    let address = unique_posix("stream-readers");
    let _cleanup = Cleanup(address.clone());
    let mut writer = Writer::create(&address, page_size(), &options()).unwrap();
    let exe = std::env::current_exe().unwrap();
    // Each reader's output is drained as it comes: a reader blocked on a
    // full stdout pipe would stop reading, and the writer with it.
    let (attached, attaches) = mpsc::channel();
    let readers: Vec<_> = (0..3)
        .map(|i| {
            let mut child = std::process::Command::new(&exe)
                .args([
                    "competing_readers_each_get_distinct_bytes",
                    "--exact",
                    "--nocapture",
                    "--test-threads=1",
                ])
                .env(common::ROLE_VAR, format!("reader-{i}"))
                .env("STREAM", address.to_string())
                .stdout(std::process::Stdio::piped())
                .spawn()
                .unwrap();
            let stdout = BufReader::new(child.stdout.take().unwrap());
            let attached = attached.clone();
            std::thread::spawn(move || {
                let mut numbers = Vec::new();
                for line in stdout.lines() {
                    let line = line.unwrap();
                    if line == "attached" {
                        attached.send(()).unwrap();
                    } else if let Some(number) = line.strip_prefix("n:") {
                        numbers.push(number.parse::<u64>().unwrap());
                    }
                }
                assert!(child.wait().unwrap().success());
                numbers
            })
        })
        .collect();
    for _ in 0..3 {
        attaches
            .recv_timeout(LIMIT)
            .expect("a reader never attached");
    }
    for number in 0..NUMBERS {
        writer.write_all(&number.to_le_bytes()).unwrap();
    }
    drop(writer);
    let mut seen = Vec::new();
    let mut busy = 0;
    for reader in readers {
        let numbers = returns_within(LIMIT, move || reader.join().unwrap());
        busy += usize::from(!numbers.is_empty());
        seen.extend(numbers);
    }
    seen.sort_unstable();
    let expected: Vec<u64> = (0..NUMBERS).collect();
    // Not assert_eq: a failure would print 100,000 numbers.
    assert!(
        seen == expected,
        "each number once: got {} numbers",
        seen.len()
    );
    eprintln!("{busy} of 3 readers got numbers");
}

#[test]
fn windows_are_contiguous_across_the_end_of_the_buffer() {
    let address = unique_posix("stream-windows");
    let _cleanup = Cleanup(address.clone());
    let capacity = page_size();
    let mut writer = Writer::create(&address, capacity, &options()).unwrap();
    let mut reader = Reader::open(&address).unwrap();
    // Move both counters to 100 bytes before the end.
    writer.write_all(&vec![0; capacity - 100]).unwrap();
    let mut sink = vec![0; capacity - 100];
    reader.read_exact(&mut sink).unwrap();

    let frame = pattern(7, 300);
    let mut window = writer.write_window(300).unwrap();
    assert_eq!(window.len(), capacity, "the window is the whole free space");
    let start = window.as_mut_ptr() as usize;
    // SAFETY: only ipcring endpoints of this test use the segment.
    let slice = unsafe { window.as_mut_slice() };
    slice[..300].copy_from_slice(&frame);
    assert_eq!(slice.as_ptr() as usize, start);
    window.commit(300).unwrap();

    let window = reader.read_window(300).unwrap();
    assert_eq!(window.len(), 300);
    // SAFETY: as above.
    assert_eq!(unsafe { window.as_slice() }, &frame[..]);
    let mut copied = vec![0; 300];
    assert_eq!(window.copy_to(0, &mut copied), 300);
    assert_eq!(copied, frame);
    window.consume(120).unwrap();
    // The rest is still there, for the next window or read.
    let mut rest = vec![0; 180];
    reader.read_exact(&mut rest).unwrap();
    assert_eq!(rest, frame[120..]);

    // Windows wait, refuse what cannot be, and publish nothing unasked.
    assert_eq!(
        writer.write_window(capacity + 1).unwrap_err().kind(),
        io::ErrorKind::InvalidInput
    );
    assert_eq!(
        writer.write_window(0).unwrap_err().kind(),
        io::ErrorKind::InvalidInput
    );
    assert_eq!(
        reader.try_read_window(1).unwrap_err().kind(),
        io::ErrorKind::WouldBlock
    );
    assert_eq!(
        reader
            .read_window_timeout(1, Duration::from_millis(50))
            .unwrap_err()
            .kind(),
        io::ErrorKind::TimedOut
    );
    let mut window = writer.write_window(10).unwrap();
    window.copy_from(0, b"dropped");
    let window_too_far = window.commit(capacity + 1);
    assert_eq!(
        window_too_far.unwrap_err().kind(),
        io::ErrorKind::InvalidInput
    );
    let mut window = writer.try_write_window(10).unwrap();
    assert_eq!(
        window.copy_from(capacity - 3, b"abcdef"),
        3,
        "copies stop at the end"
    );
    drop(window);
    assert_eq!(reader.available().unwrap(), 0);
    // A leaked window leaves nothing held: the writer goes on.
    let window = writer.write_window(1).unwrap();
    std::mem::forget(window);
    writer.write_all(b"on").unwrap();
    let window = reader.read_window(2).unwrap();
    let mut two = [0; 2];
    assert_eq!(window.copy_to(0, &mut two), 2);
    window.consume(2).unwrap();
    assert_eq!(&two, b"on");
    // At the end of the stream the window holds what is left, then nothing.
    writer.write_all(b"xyz").unwrap();
    drop(writer);
    let window = reader.read_window(100).unwrap();
    assert_eq!(window.len(), 3);
    window.consume(3).unwrap();
    assert!(reader.read_window(1).unwrap().is_empty());
}

#[test]
fn a_nonblocking_window_cannot_outwait_another_holder() {
    let address = unique_posix("stream-window-held");
    let _cleanup = Cleanup(address.clone());
    let mut a = Writer::create(&address, page_size(), &options()).unwrap();
    let mut b = Writer::open(&address).unwrap();
    let _reader = Reader::open(&address).unwrap();
    let held = a.write_window(1).unwrap();
    assert_eq!(
        b.try_write(b"x").unwrap_err().kind(),
        io::ErrorKind::WouldBlock
    );
    assert_eq!(
        b.try_write_window(1).unwrap_err().kind(),
        io::ErrorKind::WouldBlock
    );
    assert_eq!(
        b.write_timeout(b"x", Duration::from_millis(100))
            .unwrap_err()
            .kind(),
        io::ErrorKind::TimedOut
    );
    drop(held);
    assert_eq!(b.try_write(b"x").unwrap(), 1);
}

#[test]
fn buffered_reads_give_lines() {
    let (reader, mut writer) = stream::pipe(page_size(), &options()).unwrap();
    let writing = std::thread::spawn(move || {
        for i in 0..1000 {
            writeln!(writer, "line {i}").unwrap();
        }
    });
    let lines: Vec<String> = BufReader::new(reader).lines().map(Result::unwrap).collect();
    writing.join().unwrap();
    assert_eq!(lines.len(), 1000);
    assert_eq!(lines[999], "line 999");

    let (mut reader, mut writer) = stream::pipe(page_size(), &options()).unwrap();
    writer.write_all(b"one\ntwo\nthree").unwrap();
    drop(writer);
    let mut line = String::new();
    reader.read_line(&mut line).unwrap();
    assert_eq!(line, "one\n");
    assert_eq!(
        reader.available().unwrap(),
        9,
        "buffered bytes count as available"
    );
    let mut rest = String::new();
    reader.read_to_string(&mut rest).unwrap();
    assert_eq!(rest, "two\nthree");
}

#[test]
fn capacities_and_backings_are_checked() {
    let address = unique_posix("stream-capacity");
    let _cleanup = Cleanup(address.clone());
    for capacity in [0, 1, page_size() + 1, MAX_CAPACITY + page_size()] {
        let error = Writer::create(&address, capacity, &options())
            .err()
            .unwrap();
        assert!(
            matches!(error, ChannelError::Ring(_)),
            "{capacity}: {error}"
        );
    }
    let error = Writer::create(&unique_sysv(), page_size(), &options())
        .err()
        .unwrap();
    assert!(matches!(error, ChannelError::Unsupported { .. }), "{error}");
    // Another channel kind under the name.
    let _spsc = spsc::Sender::<u64>::create(&address, 8, &options()).unwrap();
    assert!(matches!(
        Reader::open(&address),
        Err(ChannelError::Segment(_))
    ));
}

/// `pipe()` and a child: the parent creates an anonymous stream, the child
/// inherits its memfd and writes; the parent reads to the end.
#[test]
fn an_anonymous_stream_handed_to_a_child_like_a_pipe() {
    if let Some(role) = child_role() {
        assert_eq!(role, "pipe-writer");
        let fd: i32 = std::env::var("STREAM_FD").unwrap().parse().unwrap();
        let segment = Segment::open_inherited(fd, &OpenOptions::new()).unwrap();
        let mut writer = Writer::attach(segment).unwrap();
        for i in 0..5000u32 {
            writer.write_all(&i.to_le_bytes()).unwrap();
        }
        return;
    }
    let segment = stream::create_segment(None, page_size(), &options()).unwrap();
    let inheritable = segment.inheritable_fd().unwrap();
    let mut reader = Reader::attach(segment).unwrap();
    let child = spawn_child(
        "an_anonymous_stream_handed_to_a_child_like_a_pipe",
        "pipe-writer",
        &[("STREAM_FD", inheritable.as_raw_fd().to_string())],
    );
    drop(inheritable);
    let mut got = Vec::new();
    returns_within(LIMIT, move || {
        reader.read_to_end(&mut got).unwrap();
        got
    })
    .chunks(4)
    .enumerate()
    .for_each(|(i, bytes)| assert_eq!(u32::from_le_bytes(bytes.try_into().unwrap()), i as u32));
    child.wait_success(LIMIT);
}

/// A duplex pair across processes: the child echoes lines back in upper
/// case over two inherited anonymous streams.
#[test]
fn a_duplex_pair_talks_both_ways_with_a_child() {
    if let Some(role) = child_role() {
        assert_eq!(role, "echo");
        let fd = |var: &str| -> Segment {
            let fd: i32 = std::env::var(var).unwrap().parse().unwrap();
            Segment::open_inherited(fd, &OpenOptions::new()).unwrap()
        };
        // The parent writes to A and reads B: the child the other way.
        let mut end = Duplex::attach(fd("TO_CHILD"), fd("TO_PARENT")).unwrap();
        let mut line = String::new();
        while end.read_line(&mut line).unwrap() > 0 {
            end.write_all(line.to_uppercase().as_bytes()).unwrap();
            line.clear();
        }
        return;
    }
    let to_child = stream::create_segment(None, page_size(), &options()).unwrap();
    let to_parent = stream::create_segment(None, page_size(), &options()).unwrap();
    let (a, b) = (
        to_child.inheritable_fd().unwrap(),
        to_parent.inheritable_fd().unwrap(),
    );
    let child = spawn_child(
        "a_duplex_pair_talks_both_ways_with_a_child",
        "echo",
        &[
            ("TO_CHILD", a.as_raw_fd().to_string()),
            ("TO_PARENT", b.as_raw_fd().to_string()),
        ],
    );
    drop((a, b));
    let mut end = Duplex::attach(to_parent, to_child).unwrap();
    end.set_read_timeout(Some(LIMIT)).unwrap();
    for word in ["hello", "stream", "bye"] {
        writeln!(end, "{word}").unwrap();
        let mut reply = String::new();
        end.read_line(&mut reply).unwrap();
        assert_eq!(reply, format!("{}\n", word.to_uppercase()));
    }
    let (mut reader, writer) = end.into_split();
    drop(writer);
    let mut rest = Vec::new();
    reader.read_to_end(&mut rest).unwrap();
    assert!(rest.is_empty());
    child.wait_success(LIMIT);
}

/// 32 MiB through the library between two processes, with a checksum.
#[test]
fn megabytes_move_between_processes_intact() {
    const TOTAL: usize = 32 << 20;
    if let Some(role) = child_role() {
        assert_eq!(role, "bulk-writer");
        let mut writer = Writer::open(&address_from_env()).unwrap();
        let data = pattern(42, 1 << 20);
        for _ in 0..TOTAL / data.len() {
            writer.write_all(&data).unwrap();
        }
        return;
    }
    let address = unique_posix("stream-bulk");
    let _cleanup = Cleanup(address.clone());
    let mut reader = Reader::create(&address, 256 * 1024, &options()).unwrap();
    let started = Instant::now();
    let child = spawn_child(
        "megabytes_move_between_processes_intact",
        "bulk-writer",
        &[("STREAM", address.to_string())],
    );
    let expected = pattern(42, 1 << 20);
    let mut buffer = vec![0; 200_000];
    let mut position = 0usize;
    loop {
        let n = reader.read_timeout(&mut buffer, LIMIT).unwrap();
        if n == 0 {
            break;
        }
        for (i, &byte) in buffer[..n].iter().enumerate() {
            assert_eq!(
                byte,
                expected[(position + i) % expected.len()],
                "byte {}",
                position + i
            );
        }
        position += n;
    }
    assert_eq!(position, TOTAL);
    child.wait_success(LIMIT);
    eprintln!("{} MiB in {:?}", TOTAL >> 20, started.elapsed());
}
