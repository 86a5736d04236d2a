//! `ipcring create --kind stream`, `ipcring write` and `ipcring read`, run
//! as a user would run them: real processes, pipes on stdin and stdout.

#[path = "../../../tests/common/mod.rs"]
mod common;

use std::io::{Read, Write};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use common::{Cleanup, unique_posix};
use ipcring::channel::stream;
use ipcring::segment::Address;

const LIMIT: Duration = Duration::from_secs(60);

fn ipcring(args: &[&str]) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_ipcring"));
    command.args(args);
    command
}

fn run(args: &[&str]) -> Output {
    ipcring(args).output().unwrap()
}

/// One line on stderr, starting with `ipcring: `, and a non-zero exit.
fn assert_fails_with(output: &Output, needle: &str) {
    assert!(!output.status.success(), "it succeeded");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(stderr.starts_with("ipcring: "), "{stderr}");
    assert!(stderr.contains(needle), "{stderr:?} lacks {needle:?}");
}

fn create(address: &Address, capacity: &str) {
    let output = run(&[
        "create",
        &address.to_string(),
        "--kind",
        "stream",
        "--capacity",
        capacity,
    ]);
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
}

/// FNV-1a, 64 bits: enough to tell a reordered, lost or repeated byte.
struct Checksum(u64);

impl Checksum {
    fn new() -> Checksum {
        Checksum(0xcbf2_9ce4_8422_2325)
    }

    fn update(&mut self, bytes: &[u8]) {
        for &byte in bytes {
            self.0 = (self.0 ^ u64::from(byte)).wrapping_mul(0x0100_0000_01b3);
        }
    }
}

/// 64 MiB through `ipcring write NAME` into `ipcring read NAME`, two
/// processes with pipes on their other ends, checked byte for byte by a
/// checksum.
#[test]
fn sixty_four_mebibytes_go_through_write_and_read_intact() {
    const TOTAL: usize = 64 << 20;
    let address = unique_posix("cli-stream-bulk");
    let _cleanup = Cleanup(address.clone());
    create(&address, "1M");
    let name = address.to_string();
    let started = Instant::now();
    let mut reader = ipcring(&["read", &name])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut writer = ipcring(&["write", &name])
        .stdin(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = writer.stdin.take().unwrap();
    let feeding = std::thread::spawn(move || {
        let mut sum = Checksum::new();
        let mut x = 0x2545_f491_4f6c_dd1du64;
        let mut chunk = vec![0u8; 1 << 16];
        for _ in 0..TOTAL / chunk.len() {
            for word in chunk.chunks_mut(8) {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                word.copy_from_slice(&x.to_le_bytes());
            }
            sum.update(&chunk);
            stdin.write_all(&chunk).unwrap();
        }
        sum.0
    });
    let mut stdout = reader.stdout.take().unwrap();
    let mut sum = Checksum::new();
    let mut received = 0usize;
    let mut buffer = vec![0u8; 1 << 16];
    loop {
        let n = stdout.read(&mut buffer).unwrap();
        if n == 0 {
            break;
        }
        sum.update(&buffer[..n]);
        received += n;
        assert!(started.elapsed() < LIMIT, "too slow");
    }
    let sent = feeding.join().unwrap();
    let writer = writer.wait_with_output().unwrap();
    assert!(
        writer.status.success(),
        "{}",
        String::from_utf8_lossy(&writer.stderr)
    );
    let reader = reader.wait_with_output().unwrap();
    assert!(
        reader.status.success(),
        "{}",
        String::from_utf8_lossy(&reader.stderr)
    );
    assert_eq!(received, TOTAL);
    assert_eq!(sum.0, sent, "the bytes differ");
    let took = started.elapsed();
    eprintln!(
        "64 MiB through ipcring write | ipcring read in {took:?} ({:.0} MiB/s, debug build, checksums included)",
        64.0 / took.as_secs_f64()
    );
}

/// `ipcring read` started before any writer waits for one, and ends when
/// the writer has gone.
#[test]
fn read_waits_for_a_first_writer() {
    let address = unique_posix("cli-stream-wait");
    let _cleanup = Cleanup(address.clone());
    create(&address, "64K");
    let name = address.to_string();
    let mut reader = ipcring(&["read", &name])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(300));
    assert!(
        reader.try_wait().unwrap().is_none(),
        "read ended before any writer came"
    );
    let mut writer = ipcring(&["write", &name])
        .stdin(Stdio::piped())
        .spawn()
        .unwrap();
    writer
        .stdin
        .take()
        .unwrap()
        .write_all(b"hello\nworld\n")
        .unwrap();
    assert!(writer.wait().unwrap().success());
    let output = reader.wait_with_output().unwrap();
    assert!(output.status.success());
    assert_eq!(output.stdout, b"hello\nworld\n");
}

#[test]
fn errors_are_one_line_and_a_failing_exit() {
    let address = unique_posix("cli-stream-errors");
    let _cleanup = Cleanup(address.clone());
    let name = address.to_string();
    create(&address, "64K");
    assert_fails_with(
        &run(&["create", &name, "--kind", "stream"]),
        "already exists",
    );
    assert_fails_with(
        &run(&[
            "create",
            "cli-stream-never",
            "--kind",
            "stream",
            "--capacity",
            "1000",
        ]),
        "multiple of the page size",
    );
    assert_fails_with(
        &run(&["create", "sysv:0x49ffff01", "--kind", "stream"]),
        "POSIX or memfd",
    );
    assert_fails_with(&run(&["read", "cli-stream-missing"]), "no segment");
    let output = ipcring(&["write", "cli-stream-missing"])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert_fails_with(&output, "no segment");
    // Not a stream.
    let other = unique_posix("cli-stream-other");
    let _other_cleanup = Cleanup(other.clone());
    drop(ipcring::channel::spsc::Sender::<u64>::create(&other, 4, &Default::default()).unwrap());
    assert_fails_with(&run(&["read", &other.to_string()]), "read");
    // The reader this writer saw has left: writing is a broken pipe.
    let mut reader = stream::Reader::open(&address).unwrap();
    let mut writer = ipcring(&["write", &name])
        .stdin(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = writer.stdin.take().unwrap();
    stdin.write_all(b"first\n").unwrap();
    let mut first = [0; 6];
    reader.read_exact(&mut first).unwrap();
    drop(reader);
    stdin.write_all(b"nobody listens").unwrap();
    drop(stdin);
    assert_fails_with(&writer.wait_with_output().unwrap(), "broken pipe");
}

/// A named stream outlives its runs, as a FIFO does: a reader started
/// after the last run's writer left waits for the next writer instead
/// of ending at once, and a writer started before the next reader waits
/// for it instead of failing.
#[test]
fn a_named_stream_serves_one_run_after_another() {
    let address = unique_posix("cli-stream-runs");
    let _cleanup = Cleanup(address.clone());
    create(&address, "64K");
    let name = address.to_string();
    for run in ["one", "two", "three"] {
        let reader = ipcring(&["read", &name])
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        std::thread::sleep(Duration::from_millis(200));
        let mut writer = ipcring(&["write", &name])
            .stdin(Stdio::piped())
            .spawn()
            .unwrap();
        writer
            .stdin
            .take()
            .unwrap()
            .write_all(run.as_bytes())
            .unwrap();
        assert!(writer.wait().unwrap().success(), "{run}");
        let output = reader.wait_with_output().unwrap();
        assert!(output.status.success(), "{run}");
        assert_eq!(output.stdout, run.as_bytes());
    }
    // The writer first this time, and gone before the reader starts: it
    // buffers, and the reader reads what it left, then the end.
    let mut writer = ipcring(&["write", &name])
        .stdin(Stdio::piped())
        .spawn()
        .unwrap();
    writer.stdin.take().unwrap().write_all(b"early").unwrap();
    assert!(writer.wait().unwrap().success());
    let reader = ipcring(&["read", &name])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    assert_eq!(reader.wait_with_output().unwrap().stdout, b"early");
    // A writer that comes and goes before the reader starts, writing
    // nothing, leaves nothing to tell: the reader waits for the next one.
    let output = ipcring(&["write", &name])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(output.status.success());
    let mut reader = ipcring(&["read", &name])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(300));
    assert!(
        reader.try_wait().unwrap().is_none(),
        "read must wait for a writer"
    );
    let mut writer = ipcring(&["write", &name])
        .stdin(Stdio::piped())
        .spawn()
        .unwrap();
    writer.stdin.take().unwrap().write_all(b"next").unwrap();
    assert!(writer.wait().unwrap().success());
    assert_eq!(reader.wait_with_output().unwrap().stdout, b"next");
}

#[test]
fn create_applies_the_mode_and_capacity() {
    let address = unique_posix("cli-stream-mode");
    let _cleanup = Cleanup(address.clone());
    let name = address.to_string();
    let output = run(&[
        "create",
        &name,
        "--kind",
        "stream",
        "--capacity",
        "128K",
        "--mode",
        "640",
    ]);
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let stat = run(&["stat", &name, "--json"]);
    let stat: serde_json::Value = serde_json::from_slice(&stat.stdout).unwrap();
    assert_eq!(stat["mode"], "0640");
    assert_eq!(stat["kind"], u64::from(stream::KIND));
    assert_eq!(stat["kind_name"], "stream");
    assert_eq!(stat["repairs"], 0);
    assert_eq!(
        stream::Writer::open(&address).unwrap().capacity(),
        128 * 1024
    );
}
