//! `create --kind queue`, `send`, `recv`, and the queue part of `stat`:
//! the msgsnd/msgrcv of ipcring message queues from a shell.

use std::io::{BufRead, Write};
use std::process::ExitCode;
use std::time::Duration;

use clap::{Args, ValueEnum};
use ipcring::channel::ChannelOptions;
use ipcring::channel::queue::{
    self, Queue, QueueConfig, QueueRecvError, QueueSendError, QueueStats, Receive, Select,
};
use ipcring::segment::{Address, SegmentError};
use serde_json::{Value, json};

/// Exit code when a non-blocking operation would block.
pub const WOULD_BLOCK: u8 = 3;
/// Exit code when a timeout passed.
pub const TIMED_OUT: u8 = 4;

/// A failed command: its message and exit code.
pub struct Failure {
    message: String,
    code: u8,
}

impl Failure {
    fn new(message: String) -> Failure {
        Failure { message, code: 1 }
    }
}

impl From<String> for Failure {
    fn from(message: String) -> Failure {
        Failure::new(message)
    }
}

/// Prints the failure, if any, and turns it into the process's exit code.
pub fn exit(result: Result<(), Failure>) -> ExitCode {
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(Failure { message, code }) => {
            eprintln!("ipcring: {message}");
            ExitCode::from(code)
        }
    }
}

/// What `create` makes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Kind {
    /// A message queue (types, priorities): `send` and `recv`.
    Queue,
    /// A datagram mailbox (`channel::datagram::Mailbox`): a queue used with
    /// one type and one priority, so `send` and `recv` serve it too, and
    /// `ls` lists it as a queue.
    Datagram,
    /// A byte stream (`write`, `read`), like a FIFO.
    Stream,
}

/// Where a segment lives.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Backend {
    /// A named POSIX segment, /dev/shm/ipcring.NAME.
    Posix,
    /// A SysV segment; NAME is a key (`0x1234` or `sysv:0x1234`).
    Sysv,
}

#[derive(Args)]
pub struct CreateArgs {
    /// A POSIX name (`orders`) or a SysV key (`sysv:0x1234`).
    name: String,
    /// What to create.
    #[arg(long, value_enum)]
    kind: Kind,
    /// Queues and mailboxes: messages held (default 64; 0 makes a
    /// rendezvous queue). Streams: bytes of buffer, a multiple of the page
    /// size (default 1M; K, M and G mean KiB, MiB and GiB).
    #[arg(long)]
    capacity: Option<String>,
    /// Bytes the queued messages may take in all (default: capacity × max-msg;
    /// 31 × max-msg for a rendezvous queue).
    #[arg(long)]
    max_bytes: Option<usize>,
    /// The largest message, in bytes.
    #[arg(long, default_value_t = 8192)]
    max_msg: usize,
    /// Priorities 0..P (32 to 64).
    #[arg(long, default_value_t = 32)]
    priorities: u32,
    /// Permission bits, in octal.
    #[arg(long, default_value = "600")]
    mode: String,
    /// POSIX or SysV shared memory.
    #[arg(long, value_enum, default_value_t = Backend::Posix)]
    backend: Backend,
}

#[derive(Args)]
pub struct SendArgs {
    /// The queue.
    name: String,
    /// Message type (from 1).
    #[arg(long = "type", default_value_t = 1)]
    mtype: u64,
    /// Priority (0 is the lowest).
    #[arg(long, default_value_t = 0)]
    priority: u32,
    /// Fail with exit code 3 instead of waiting when the queue is full.
    #[arg(long, conflicts_with = "timeout")]
    nonblock: bool,
    /// Wait at most this long for room (`500ms`, `2s`, `1m`); exit code 4.
    #[arg(long, value_parser = parse_duration)]
    timeout: Option<Duration>,
    /// The messages; without any, each line of standard input is one.
    messages: Vec<String>,
}

#[derive(Args)]
pub struct RecvArgs {
    /// The queue.
    name: String,
    /// Only messages of this type (from 1; leave it out for any type).
    #[arg(long = "type", group = "select", value_parser = message_type)]
    mtype: Option<u64>,
    /// The lowest type not above T (SysV's negative msgtyp; T from 1).
    #[arg(long, value_name = "T", group = "select", value_parser = message_type)]
    type_at_most: Option<u64>,
    /// Any type but T (MSG_EXCEPT).
    #[arg(long, value_name = "T", group = "select")]
    except: Option<u64>,
    /// Fail with exit code 3 instead of waiting when nothing matches.
    #[arg(long, conflicts_with = "timeout")]
    nonblock: bool,
    /// Wait at most this long for each message (`500ms`, `2s`); exit code 4.
    #[arg(long, value_parser = parse_duration)]
    timeout: Option<Duration>,
    /// Messages to receive.
    #[arg(long, default_value_t = 1)]
    count: u64,
    /// Print each message's type first: `TYPE message`.
    #[arg(long)]
    show_type: bool,
}

/// A type to select by: from 1. No message has type 0, so a receive
/// waiting for one (`--type 0`, `--type-at-most 0`) would wait for ever;
/// msgrcv's type 0, any type, is the default here.
fn message_type(text: &str) -> Result<u64, String> {
    match text.trim().parse::<u64>() {
        Ok(0) => Err(
            "no message has type 0 (types start at 1; leave the option out for any type)"
                .to_owned(),
        ),
        Ok(t) => Ok(t),
        Err(e) => Err(format!("`{text}`: {e}")),
    }
}

/// `500ms`, `2s`, `1.5s`, `3m`, `1h`, or a bare number of seconds.
pub(crate) fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let split = text
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let value: f64 = number
        .parse()
        .map_err(|_| format!("`{text}` is not a duration (e.g. 500ms, 2s)"))?;
    let seconds = match unit {
        "" | "s" => value,
        "ms" => value / 1e3,
        "us" => value / 1e6,
        "m" => value * 60.0,
        "h" => value * 3600.0,
        _ => return Err(format!("`{text}`: unknown unit `{unit}` (ms, s, m, h)")),
    };
    Duration::try_from_secs_f64(seconds).map_err(|_| format!("`{text}` is out of range"))
}

fn address(name: &str, backend: Backend) -> Result<Address, Failure> {
    let text = match backend {
        Backend::Sysv if !name.starts_with("sysv:") => format!("sysv:{name}"),
        _ => name.to_string(),
    };
    let address: Address = text
        .parse()
        .map_err(|e: SegmentError| Failure::new(format!("{name}: {e}")))?;
    if backend == Backend::Posix && matches!(address, Address::SysV(_)) {
        return Err(Failure::new(format!(
            "{name}: a SysV key needs --backend sysv"
        )));
    }
    Ok(address)
}

pub fn create(args: &CreateArgs) -> Result<(), Failure> {
    if args.kind == Kind::Stream {
        if args.backend == Backend::Sysv {
            return Err(Failure::new(format!(
                "create {}: a stream needs --backend posix (it maps its buffer twice, which SysV segments cannot)",
                args.name
            )));
        }
        let capacity = args
            .capacity
            .as_deref()
            .map(crate::stream_cmd::parse_bytes)
            .transpose()
            .map_err(|e| Failure::new(format!("create: --capacity {e}")))?;
        let mode = crate::stream_cmd::parse_mode(&args.mode)
            .map_err(|e| Failure::new(format!("create: --mode {e}")))?;
        return crate::stream_cmd::create(&args.name, capacity, mode).map_err(Failure::new);
    }
    // A mailbox is a queue whose users keep to type 1 and priority 0.
    let capacity = match args.capacity.as_deref() {
        None => 64,
        Some(text) => text.parse::<usize>().map_err(|_| {
            Failure::new(format!(
                "create: --capacity `{text}` is not a number of messages"
            ))
        })?,
    };
    let address = address(&args.name, args.backend)?;
    let mode = u32::from_str_radix(&args.mode, 8)
        .ok()
        .filter(|mode| *mode <= 0o777)
        .ok_or_else(|| {
            Failure::new(format!(
                "create: --mode {} is not octal permission bits",
                args.mode
            ))
        })?;
    let mut config = QueueConfig::new(capacity, args.max_msg).priorities(args.priorities);
    if let Some(max_bytes) = args.max_bytes {
        config = config.max_bytes(max_bytes);
    }
    let options = ChannelOptions::new().mode(mode);
    queue::create_segment(Some(&address), &config, &options)
        .map_err(|e| Failure::new(format!("create {address}: {e}")))?;
    Ok(())
}

fn open(name: &str) -> Result<Queue, Failure> {
    let address: Address = name
        .parse()
        .map_err(|e: SegmentError| Failure::new(format!("{name}: {e}")))?;
    Queue::open(&address).map_err(|e| Failure::new(format!("{name}: {e}")))
}

fn send_failure(name: &str, e: QueueSendError) -> Failure {
    let code = match e {
        QueueSendError::Full => WOULD_BLOCK,
        QueueSendError::Timeout => TIMED_OUT,
        _ => 1,
    };
    Failure {
        message: format!("send {name}: {e}"),
        code,
    }
}

pub fn send(args: &SendArgs) -> Result<(), Failure> {
    let mut queue = open(&args.name)?;
    let mut send_one = |message: &[u8]| {
        let sent = if args.nonblock {
            queue.try_send(message, args.mtype, args.priority)
        } else if let Some(timeout) = args.timeout {
            queue.send_timeout(message, args.mtype, args.priority, timeout)
        } else {
            queue.send(message, args.mtype, args.priority)
        };
        sent.map_err(|e| send_failure(&args.name, e))
    };
    if !args.messages.is_empty() {
        for message in &args.messages {
            send_one(message.as_bytes())?;
        }
        return Ok(());
    }
    let stdin = std::io::stdin();
    let mut line = Vec::new();
    let mut input = stdin.lock();
    loop {
        line.clear();
        let read = input.read_until(b'\n', &mut line).map_err(|e| {
            Failure::new(format!("send {}: reading standard input: {e}", args.name))
        })?;
        if read == 0 {
            return Ok(());
        }
        if line.last() == Some(&b'\n') {
            line.pop();
        }
        send_one(&line)?;
    }
}

pub fn recv(args: &RecvArgs) -> Result<(), Failure> {
    let mut queue = open(&args.name)?;
    let select = match (args.mtype, args.type_at_most, args.except) {
        (Some(t), _, _) => Select::Type(t),
        (_, Some(t), _) => Select::TypeAtMost(t),
        (_, _, Some(t)) => Select::ExceptType(t),
        _ => Select::Any,
    };
    let mut receive = Receive::new(select);
    if args.nonblock {
        receive = receive.nonblocking();
    } else if let Some(timeout) = args.timeout {
        receive = receive.timeout(timeout);
    }
    let mut buf = vec![0u8; queue.config().max_msg];
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    for _ in 0..args.count {
        let got = queue.receive(&receive, &mut buf).map_err(|e| {
            let code = match e {
                QueueRecvError::NoMessage => WOULD_BLOCK,
                QueueRecvError::Timeout => TIMED_OUT,
                _ => 1,
            };
            Failure {
                message: format!("recv {}: {e}", args.name),
                code,
            }
        })?;
        let written = if args.show_type {
            write!(out, "{} ", got.mtype)
        } else {
            Ok(())
        }
        .and_then(|()| out.write_all(&buf[..got.copied]))
        .and_then(|()| out.write_all(b"\n"))
        .and_then(|()| out.flush());
        written.map_err(|e| Failure::new(format!("recv {}: writing: {e}", args.name)))?;
    }
    Ok(())
}

/// The queue's statistics, for `stat`: `None` if `kind` is not a queue.
pub fn stats(address: &Address, kind: u32) -> Option<QueueStats> {
    if kind != queue::KIND {
        return None;
    }
    let options = ipcring::segment::OpenOptions::new()
        .read_only()
        .allow_foreign_owner(true)
        .timeout(Duration::ZERO);
    let segment = ipcring::segment::Segment::open(address, &options).ok()?;
    queue::stats(&segment).ok()
}

pub fn stats_json(stats: &QueueStats) -> Value {
    json!({
        "count": stats.count,
        "bytes": stats.bytes,
        "max_msgs": stats.max_msgs,
        "max_bytes": stats.max_bytes,
        "max_msg": stats.max_msg,
        "priorities": stats.priorities,
        "last_send_pid": stats.last_send_pid,
        "last_send_unix_ns": stats.last_send_ns,
        "last_recv_pid": stats.last_recv_pid,
        "last_recv_unix_ns": stats.last_recv_ns,
        "created_unix_ns": stats.created_ns,
        "sent": stats.sent,
        "received": stats.received,
        "bytes_sent": stats.bytes_sent,
        "removed": stats.removed,
    })
}

pub fn print_stats(stats: &QueueStats) {
    let rendezvous = if stats.max_msgs == 0 {
        " (rendezvous)"
    } else {
        ""
    };
    println!(
        "queue:          {} messages, {} bytes queued",
        stats.count, stats.bytes
    );
    println!(
        "limits:         {} messages{rendezvous}, {} bytes, {} bytes per message, priorities 0..{}",
        stats.max_msgs, stats.max_bytes, stats.max_msg, stats.priorities
    );
    println!(
        "last send:      pid {} at {} ns",
        stats.last_send_pid, stats.last_send_ns
    );
    println!(
        "last receive:   pid {} at {} ns",
        stats.last_recv_pid, stats.last_recv_ns
    );
    println!("sent/received:  {} / {}", stats.sent, stats.received);
    if stats.removed {
        println!("removed:        yes (handles still attached see Removed)");
    }
}

#[cfg(test)]
mod tests {
    use super::parse_duration;
    use std::time::Duration;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("2"), Ok(Duration::from_secs(2)));
        assert_eq!(parse_duration("1.5s"), Ok(Duration::from_millis(1500)));
        assert_eq!(parse_duration("1m"), Ok(Duration::from_secs(60)));
        assert!(parse_duration("soon").is_err());
        assert!(parse_duration("5y").is_err());
        assert!(parse_duration("1e400").is_err());
    }
}
