//! `create --kind stream`, `write` and `read`: byte streams from the shell,
//! like `mkfifo`, `> fifo` and `< fifo`.
//!
//! `write` and `read` move data through a 1 MiB buffer of their own, so
//! each makes one copy between its file and the stream. They could fill
//! and drain the stream's zero-copy windows with `read(2)` and `write(2)`
//! directly, but a window holds its side's lock, and stdin or stdout may
//! block for ever (a terminal, an idle pipe): every other writer (or
//! reader) of the stream would wait behind it. With the copy, a lock is
//! held only for the copy itself.

use std::fs::File;
use std::io::{self, Read, Write};
use std::os::fd::AsFd;

use ipcring::channel::ChannelOptions;
use ipcring::channel::stream::{self, Reader, Writer};
use ipcring::segment::Address;

/// The capacity `create --kind stream` gives without `--capacity`.
pub const DEFAULT_CAPACITY: usize = 1 << 20;

/// Bytes moved per system call.
const COPY_BUFFER: usize = 1 << 20;

/// `--capacity`: bytes, with an optional K, M or G suffix (KiB, MiB, GiB).
pub fn parse_bytes(text: &str) -> Result<usize, String> {
    let (digits, unit) = match text.char_indices().last() {
        Some((at, 'K' | 'k')) => (&text[..at], 1 << 10),
        Some((at, 'M' | 'm')) => (&text[..at], 1 << 20),
        Some((at, 'G' | 'g')) => (&text[..at], 1 << 30),
        _ => (text, 1),
    };
    digits
        .parse::<usize>()
        .ok()
        .and_then(|n| n.checked_mul(unit))
        .ok_or_else(|| format!("`{text}` is not a size in bytes (like 65536, 64K or 1M)"))
}

/// `--mode`: permission bits in octal, as `chmod` takes them.
pub fn parse_mode(text: &str) -> Result<u32, String> {
    u32::from_str_radix(text, 8)
        .ok()
        .filter(|&mode| mode <= 0o777)
        .ok_or_else(|| format!("`{text}` is not an octal mode (like 600 or 0640)"))
}

fn address(verb: &str, name: &str) -> Result<Address, String> {
    name.parse().map_err(|e| format!("{verb} {name}: {e}"))
}

/// Creates a persistent stream segment (`ipcring rm` removes it).
pub fn create(name: &str, capacity: Option<usize>, mode: u32) -> Result<(), String> {
    let address = address("create", name)?;
    let capacity = capacity.unwrap_or(DEFAULT_CAPACITY);
    let options = ChannelOptions::new().mode(mode);
    stream::create_segment(Some(&address), capacity, &options)
        .map(drop)
        .map_err(|e| format!("create {name}: {e}"))
}

/// Our own descriptor for stdin or stdout: reads and writes go straight to
/// the system call, past std's buffering (stdout's line buffer would split
/// binary data at newlines).
fn raw(fd: impl AsFd, what: &str) -> Result<File, String> {
    fd.as_fd()
        .try_clone_to_owned()
        .map(File::from)
        .map_err(|e| format!("{what}: {e}"))
}

/// Copies stdin into the stream until stdin ends, then leaves (the readers
/// see the end of the stream once every writer has left).
pub fn write(name: &str) -> Result<(), String> {
    let address = address("write", name)?;
    let mut writer = Writer::open(&address).map_err(|e| format!("write {name}: {e}"))?;
    let mut input = raw(io::stdin(), "stdin")?;
    let mut buffer = vec![0u8; COPY_BUFFER];
    loop {
        let n = match input.read(&mut buffer) {
            Ok(0) => return Ok(()),
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(format!("write {name}: reading stdin: {e}")),
        };
        writer.write_all(&buffer[..n]).map_err(|e| match e.kind() {
            io::ErrorKind::BrokenPipe => {
                format!("write {name}: every reader has left (broken pipe)")
            }
            _ => format!("write {name}: {e}"),
        })?;
    }
}

/// Copies the stream to stdout until every writer has gone and it is
/// drained; waits for a first writer if none has come yet.
pub fn read(name: &str) -> Result<(), String> {
    let address = address("read", name)?;
    let mut reader = Reader::open(&address).map_err(|e| format!("read {name}: {e}"))?;
    let mut output = raw(io::stdout(), "stdout")?;
    let mut buffer = vec![0u8; COPY_BUFFER];
    loop {
        let n = match reader.read(&mut buffer) {
            Ok(0) => return Ok(()),
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(format!("read {name}: {e}")),
        };
        // A closed stdout ends us with SIGPIPE, as it would `cat`.
        output
            .write_all(&buffer[..n])
            .map_err(|e| format!("read {name}: writing stdout: {e}"))?;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_and_modes_parse() {
        assert_eq!(parse_bytes("4096"), Ok(4096));
        assert_eq!(parse_bytes("64K"), Ok(65536));
        assert_eq!(parse_bytes("1m"), Ok(1 << 20));
        assert_eq!(parse_bytes("2G"), Ok(2 << 30));
        for bad in ["", "K", "-1", "1.5M", "12Q", "99999999999999999999G"] {
            assert!(parse_bytes(bad).is_err(), "{bad}");
        }
        assert_eq!(parse_mode("600"), Ok(0o600));
        assert_eq!(parse_mode("0640"), Ok(0o640));
        for bad in ["", "8", "1000", "rw"] {
            assert!(parse_mode(bad).is_err(), "{bad}");
        }
    }
}
