//! `iceoryx2`: publish-subscribe from the iceoryx2 crate, the best-known
//! shared-memory peer of ipcring, between two real processes: one service
//! per direction (`down` from the parent, `up` from the child), `[u8]`
//! samples of the row's size, and a receiver that busy-polls `receive()`.
//!
//! Ping-pong rows take the QoS of iceoryx2's own publish-subscribe
//! benchmark: one publisher and one subscriber per service, no history, a
//! subscriber buffer of one sample, and safe overflow (a publisher never
//! waits; a sample not yet taken is replaced by the next). Throughput rows
//! cannot lose messages, so they turn safe overflow off and give the
//! subscriber a deeper buffer that a full publisher waits on.
//!
//! A sample is loaned from the publisher's data segment, written and sent
//! by offset (iceoryx2's zero-copy path); the link traits hand messages
//! over as bytes, so the sender copies the message into the loan and the
//! receiver copies it out, as ipcring's rows do with their items.
//!
//! Every iceoryx2 file of a row carries the row's tag: the node and service
//! files live in a directory of their own in the temp directory, and the
//! shared-memory objects in /dev/shm start with the tag. iceoryx2 removes
//! most of them itself (a dead child's through its dead-node cleanup) but
//! keeps a small management object per prefix and its directories, so the
//! parent's end removes everything under the tag when it goes, on any path.

use std::fs;
use std::os::unix::fs::DirBuilderExt;
use std::panic::{self, AssertUnwindSafe};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use iceoryx2::port::publisher::Publisher;
use iceoryx2::port::subscriber::Subscriber;
use iceoryx2::port::{BackpressureAction, BackpressureInfo};
use iceoryx2::prelude::*;
use iceoryx2::service::port_factory::publish_subscribe::PortFactory;

use crate::bench::link::{Echo, PingPongTransport, Stop};
use crate::bench::process::{Inherited, Spawner};

/// How a row's two services deliver samples.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Qos {
    /// iceoryx2's benchmark settings: one sample buffered, safe overflow.
    /// Fine for ping-pong, where one message at a time is in flight.
    Latest,
    /// Every message arrives: no overflow, a subscriber buffer of
    /// [`stream_depth`] samples, and a publisher that retries until there
    /// is room.
    Every,
}

/// A two-way iceoryx2 link with one QoS on both services.
pub struct Iceoryx2(pub Qos);

/// Bytes of samples a throughput subscriber buffers: as many as ipcring's
/// SPSC throughput ring holds (32 KiB), and at least 8 samples.
const STREAM_BYTES: usize = 32 * 1024;
const MIN_STREAM_SAMPLES: usize = 8;

fn stream_depth(size: usize) -> usize {
    (STREAM_BYTES / size.max(1)).max(MIN_STREAM_SAMPLES)
}

/// Owner-only, as the directories a program makes for itself should be.
const DIR_MODE: u32 = 0o700;
/// Where POSIX shared-memory objects (`shm_open`) appear on Linux.
const SHM_DIR: &str = "/dev/shm";
/// iceoryx2's limit on a path, and the most it appends to the root and
/// prefix: a connection's `<40-hex hash>_<port id>_<port id>.connection`,
/// with two u128 port ids of up to 39 digits. Past the limit iceoryx2
/// panics, so a root that leaves no room is refused first.
const ICEORYX2_MAX_PATH: usize = 255;
const LONGEST_AFTER_PREFIX: usize = 40 + 1 + 39 + 1 + 39 + ".connection".len();
/// How long `supports` waits for its one sample.
const PROBE_TIMEOUT: Duration = Duration::from_secs(1);
/// Tells the rows of one bench process apart.
static NEXT_TAG: AtomicU32 = AtomicU32::new(0);

type Service = ipc::Service;
type Factory = PortFactory<Service, [u8], ()>;

/// The names of one row's iceoryx2 files: `tag` is
/// `ipcring-bench-iceoryx2-<pid>-<n>`, unique among living processes.
struct Names {
    tag: String,
}

impl Names {
    /// A fresh tag for this process. Anything already under it was left by
    /// a dead process that had our pid, so it is removed first.
    fn fresh() -> Names {
        let names = Names {
            tag: format!(
                "ipcring-bench-iceoryx2-{}-{}",
                std::process::id(),
                NEXT_TAG.fetch_add(1, Ordering::Relaxed)
            ),
        };
        names.remove_files();
        names
    }

    fn of(tag: &str) -> Names {
        Names {
            tag: tag.to_owned(),
        }
    }

    /// iceoryx2's root for node and service files.
    fn root(&self) -> PathBuf {
        std::env::temp_dir().join(&self.tag)
    }

    /// Starts every shared-memory name iceoryx2 makes; the dash keeps tag
    /// `...-1` from matching the files of tag `...-11`.
    fn prefix(&self) -> String {
        format!("{}-", self.tag)
    }

    /// A config of iceoryx2's defaults with our root and prefix, so that
    /// no config file on the machine changes the row and the row never
    /// touches another program's iceoryx2 files.
    fn config(&self) -> Result<Config, String> {
        let root = self.root();
        let root_text = format!("{}/", root.display());
        let mut config = Config::default();
        config.global.prefix = FileName::new(self.prefix().as_bytes())
            .map_err(|e| format!("iceoryx2: prefix {:?}: {e:?}", self.prefix()))?;
        config.global.set_root_path(
            &Path::new(root_text.as_bytes())
                .map_err(|e| format!("iceoryx2: root {root_text:?}: {e:?}"))?,
        );
        Ok(config)
    }

    fn create_root(&self) -> Result<(), String> {
        let root = self.root();
        let len = root.as_os_str().len();
        if len + 1 + self.prefix().len() + LONGEST_AFTER_PREFIX > ICEORYX2_MAX_PATH {
            return Err(format!(
                "iceoryx2: the temp directory path is too long: {} ({len} bytes); \
                 iceoryx2's paths are limited to {ICEORYX2_MAX_PATH} bytes",
                root.display()
            ));
        }
        fs::DirBuilder::new()
            .mode(DIR_MODE)
            .create(&root)
            .map_err(|e| format!("iceoryx2: creating {}: {e}", root.display()))
    }

    /// Removes the root directory and every shared-memory object with our
    /// prefix; what is already gone is fine.
    fn remove_files(&self) {
        let _ = fs::remove_dir_all(self.root());
        let prefix = self.prefix();
        let Ok(entries) = fs::read_dir(SHM_DIR) else {
            return;
        };
        for entry in entries.flatten() {
            if entry.file_name().to_string_lossy().starts_with(&prefix) {
                let _ = fs::remove_file(entry.path());
            }
        }
    }
}

/// Removes a row's iceoryx2 files when dropped. Held by the parent's end
/// (and by the probe of `supports`), after the iceoryx2 objects, which
/// must be gone first.
struct RemoveOnDrop(Names);

impl Drop for RemoveOnDrop {
    fn drop(&mut self) {
        self.0.remove_files();
    }
}

/// Runs iceoryx2 set-up code, turning a panic inside iceoryx2 (it panics
/// on some states it deems impossible) into an error for the row.
fn without_panics<T>(what: &str, f: impl FnOnce() -> Result<T, String>) -> Result<T, String> {
    panic::catch_unwind(AssertUnwindSafe(f))
        .unwrap_or_else(|_| Err(format!("iceoryx2 panicked while {what}")))
}

fn node(names: &Names) -> Result<Node<Service>, String> {
    // Failures reach the row as errors; iceoryx2's own log lines would
    // only interleave with the bench's output.
    set_log_level(LogLevel::Fatal);
    NodeBuilder::new()
        .config(&names.config()?)
        // The bench handles Ctrl-C itself (`interrupt.rs`).
        .signal_handling_mode(SignalHandlingMode::Disabled)
        .create::<Service>()
        .map_err(|e| format!("iceoryx2: creating a node: {e}"))
}

/// Creates (`create`) or opens the service `name` with `qos`.
fn service(
    node: &Node<Service>,
    name: &str,
    qos: Qos,
    size: usize,
    create: bool,
) -> Result<Factory, String> {
    let service_name =
        ServiceName::new(name).map_err(|e| format!("iceoryx2: service name {name:?}: {e:?}"))?;
    let (buffer, overflow) = match qos {
        Qos::Latest => (1, true),
        Qos::Every => (stream_depth(size), false),
    };
    let builder = node
        .service_builder(&service_name)
        .publish_subscribe::<[u8]>()
        .max_publishers(1)
        .max_subscribers(1)
        .history_size(0)
        .subscriber_max_buffer_size(buffer)
        .enable_safe_overflow(overflow);
    let service = if create {
        builder.create().map_err(|e| e.to_string())
    } else {
        builder.open().map_err(|e| e.to_string())
    };
    service.map_err(|e| format!("iceoryx2: service {name}: {e}"))
}

/// One side's ports, then its node, then (the parent's) the guard that
/// removes the files: fields drop in this order.
struct End {
    publisher: Publisher<Service, [u8], ()>,
    subscriber: Subscriber<Service, [u8], ()>,
    _node: Node<Service>,
    _files: Option<RemoveOnDrop>,
}

/// Which end: the parent creates both services and publishes on `down`;
/// the child opens them and publishes on `up`.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Role {
    Parent,
    Child,
}

/// Opens one end, which keeps `files` (dropped last). A full publisher
/// (`Qos::Every` only) retries until `stop` gives up.
fn open_end(
    names: &Names,
    role: Role,
    qos: Qos,
    size: usize,
    stop: Stop,
    files: Option<RemoveOnDrop>,
) -> Result<End, String> {
    without_panics("opening its services", || {
        let node = node(names)?;
        let create = role == Role::Parent;
        let down = service(&node, "down", qos, size, create)?;
        let up = service(&node, "up", qos, size, create)?;
        let (outbound, inbound) = match role {
            Role::Parent => (down, up),
            Role::Child => (up, down),
        };
        let mut publisher = outbound.publisher_builder().initial_max_slice_len(size);
        if qos == Qos::Every {
            publisher = publisher
                .backpressure_strategy(BackpressureStrategy::RetryUntilDelivered)
                // Called only while the subscriber's buffer is full; a dead
                // peer or the deadline ends the wait as a failed send.
                .set_backpressure_handler(move |_: &BackpressureInfo| {
                    if stop.check().is_err() {
                        BackpressureAction::DiscardDataAndFail
                    } else {
                        BackpressureAction::Retry
                    }
                });
        }
        let publisher = publisher
            .create()
            .map_err(|e| format!("iceoryx2: publisher: {e}"))?;
        let subscriber = inbound
            .subscriber_builder()
            .create()
            .map_err(|e| format!("iceoryx2: subscriber: {e}"))?;
        Ok(End {
            publisher,
            subscriber,
            _node: node,
            _files: files,
        })
    })
}

impl PingPongTransport for Iceoryx2 {
    /// Opens both ends in this process under a tag of its own and sends one
    /// sample of `size` bytes from one to the other: what fails here (no
    /// temp directory, a path too long, no shared memory) skips the row
    /// with iceoryx2's reason.
    fn supports(&self, size: usize) -> Result<(), String> {
        let names = Names::fresh();
        let files = RemoveOnDrop(Names::of(&names.tag));
        names.create_root()?;
        let stop = Stop::after(PROBE_TIMEOUT);
        let mut parent = open_end(
            &names,
            Role::Parent,
            self.0,
            size,
            stop.clone(),
            Some(files),
        )?;
        let mut child = open_end(&names, Role::Child, self.0, size, stop.clone(), None)?;
        parent.send(&vec![0; size], &stop)?;
        child.recv(&mut vec![0; size], &stop)
    }

    fn parent(&self, mut spawner: Spawner<'_>, size: usize) -> Result<Box<dyn Echo>, String> {
        let names = Names::fresh();
        // The guard exists before the first file, so every path removes.
        let files = RemoveOnDrop(Names::of(&names.tag));
        names.create_root()?;
        let stop = spawner.stop().clone();
        let end = open_end(&names, Role::Parent, self.0, size, stop, Some(files))?;
        spawner.share_name(&names.tag);
        spawner.spawn()?;
        Ok(Box::new(end))
    }

    fn child(&self, inherited: &Inherited, size: usize) -> Result<Box<dyn Echo>, String> {
        let names = Names::of(inherited.name()?);
        let stop = Stop::after(inherited.timeout());
        Ok(Box::new(open_end(
            &names,
            Role::Child,
            self.0,
            size,
            stop,
            None,
        )?))
    }
}

impl Echo for End {
    fn send(&mut self, message: &[u8], _stop: &Stop) -> Result<(), String> {
        let sample = self
            .publisher
            .loan_slice_uninit(message.len())
            .map_err(|e| format!("iceoryx2: loan: {e}"))?;
        match sample.write_from_slice(message).send() {
            Ok(0) => Err("iceoryx2: no subscriber took the sample".to_owned()),
            Ok(_) => Ok(()),
            Err(e) => Err(format!("iceoryx2: send: {e}")),
        }
    }

    fn recv(&mut self, buffer: &mut [u8], stop: &Stop) -> Result<(), String> {
        // Polls `receive()` until a sample comes, as iceoryx2's benchmark
        // does, with the spin hint between polls of every spinning row.
        let subscriber = &self.subscriber;
        let sample = stop
            .spin_until(|| subscriber.receive().transpose())?
            .map_err(|e| format!("iceoryx2: receive: {e}"))?;
        // iceoryx2 lends the sample to us alone until it is dropped: the
        // publisher reuses its memory only after that.
        let payload = sample.payload();
        if payload.len() != buffer.len() {
            return Err(format!(
                "iceoryx2: received {} of {} bytes",
                payload.len(),
                buffer.len()
            ));
        }
        buffer.copy_from_slice(payload);
        Ok(())
    }
}
