//! Typed messages over a [record channel](super::records): any
//! `T: Serialize + DeserializeOwned`, encoded with postcard (compact,
//! `no_std`-friendly, stable wire format; see docs/design.md). Needs the
//! `serde` feature.
//!
//! Each message is one record, so boundaries and order per sender are the
//! record channel's; a message whose encoding exceeds the channel's
//! largest record is refused with `TooLarge`. A record that does not
//! decode as `T` (another program's bytes, another version of `T`) is a
//! typed [`TypedRecvError::Decode`], never a panic; it is consumed.
//!
//! ```
//! use ipcring::channel::typed::{Receiver, Sender};
//! use ipcring::channel::ChannelOptions;
//! use ipcring::ring::record::ProducerMode;
//! use ipcring::segment::Address;
//!
//! #[derive(serde::Serialize, serde::Deserialize, Debug, PartialEq)]
//! enum Command { Move { x: i32, y: i32 }, Say(String) }
//!
//! let address: Address = format!("doc-typed-{}", std::process::id()).parse()?;
//! let options = ChannelOptions::new().owned(true);
//! let mut rx = Receiver::<Command>::open_or_create(&address, 4096, ProducerMode::Single, &options)?;
//! let mut tx = Sender::<Command>::open_or_create(&address, 4096, ProducerMode::Single, &options)?;
//! tx.send(&Command::Say("hello".into()))?;
//! tx.send(&Command::Move { x: 1, y: -2 })?;
//! assert_eq!(rx.recv()?, Command::Say("hello".into()));
//! assert_eq!(rx.recv()?, Command::Move { x: 1, y: -2 });
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

use std::marker::PhantomData;
use std::time::Duration;

use serde::Serialize;
use serde::de::DeserializeOwned;

use super::records::{self, RecordSendError};
use super::{ChannelError, ChannelOptions, RecvError, RecvTimeoutError, TryRecvError};
use crate::ring::Corruption;
use crate::ring::record::ProducerMode;
use crate::segment::{Address, Segment};

/// A message could not be encoded or decoded. Opaque, so that the codec's
/// own error type is not part of this crate's API; its text says why.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct CodecError(postcard::Error);

/// Why a typed message was not sent.
#[derive(Debug, thiserror::Error)]
pub enum TypedSendError {
    /// The record channel refused it (full, timed out, too large,
    /// disconnected, removed, corrupted).
    #[error(transparent)]
    Send(#[from] RecordSendError),
    /// The value could not be encoded.
    #[error("encoding the message: {0}")]
    Encode(CodecError),
}

/// Why a typed message was not received. `try_recv` returns `Empty` where
/// `recv_timeout` returns `Timeout`; `recv` returns neither.
#[derive(Debug, thiserror::Error)]
pub enum TypedRecvError {
    /// Nothing to receive now.
    #[error("the channel is empty")]
    Empty,
    /// Still nothing when the timeout passed.
    #[error("timed out waiting for a message")]
    Timeout,
    /// Empty, and every sender has left (or died).
    #[error("the channel is empty and every sender has left")]
    Disconnected,
    /// Empty, no sender is attached, and the channel's name was removed or
    /// now names another segment.
    #[error("no sender is attached and the channel's name was removed or reused")]
    Removed,
    /// The ring's memory holds impossible values.
    #[error(transparent)]
    Corrupted(Corruption),
    /// A record arrived but is not a valid encoding of the message type;
    /// it was consumed.
    #[error("decoding a message: {0}")]
    Decode(CodecError),
}

impl From<TryRecvError> for TypedRecvError {
    fn from(e: TryRecvError) -> TypedRecvError {
        match e {
            TryRecvError::Empty => TypedRecvError::Empty,
            TryRecvError::Disconnected => TypedRecvError::Disconnected,
            TryRecvError::Removed => TypedRecvError::Removed,
            TryRecvError::Corrupted(c) => TypedRecvError::Corrupted(c),
        }
    }
}

impl From<RecvError> for TypedRecvError {
    fn from(e: RecvError) -> TypedRecvError {
        match e {
            RecvError::Disconnected => TypedRecvError::Disconnected,
            RecvError::Removed => TypedRecvError::Removed,
            RecvError::Corrupted(c) => TypedRecvError::Corrupted(c),
        }
    }
}

impl From<RecvTimeoutError> for TypedRecvError {
    fn from(e: RecvTimeoutError) -> TypedRecvError {
        match e {
            RecvTimeoutError::Timeout => TypedRecvError::Timeout,
            RecvTimeoutError::Disconnected => TypedRecvError::Disconnected,
            RecvTimeoutError::Removed => TypedRecvError::Removed,
            RecvTimeoutError::Corrupted(c) => TypedRecvError::Corrupted(c),
        }
    }
}

/// A sending end for messages of `T`.
pub struct Sender<T> {
    inner: records::Sender,
    /// The last encoding, kept for its allocation.
    buffer: Vec<u8>,
    // fn(&T): sends `T`s without holding one, so Send whatever `T` is.
    _type: PhantomData<fn(&T)>,
}

impl<T: Serialize> Sender<T> {
    /// Creates a named channel (a `capacity`-byte record buffer) and
    /// attaches as a sender.
    pub fn create(
        address: &Address,
        capacity: usize,
        mode: ProducerMode,
        options: &ChannelOptions,
    ) -> Result<Sender<T>, ChannelError> {
        records::Sender::create(address, capacity, mode, options).map(Sender::from_records)
    }

    /// Opens a named channel as a sender.
    pub fn open(address: &Address) -> Result<Sender<T>, ChannelError> {
        records::Sender::open(address).map(Sender::from_records)
    }

    /// Opens the named channel, creating it if it does not exist; see
    /// [`records::Sender::open_or_create`].
    pub fn open_or_create(
        address: &Address,
        capacity: usize,
        mode: ProducerMode,
        options: &ChannelOptions,
    ) -> Result<Sender<T>, ChannelError> {
        records::Sender::open_or_create(address, capacity, mode, options).map(Sender::from_records)
    }

    /// Opens the named channel, waiting up to `timeout` for it; see
    /// [`records::Sender::open_timeout`].
    pub fn open_timeout(address: &Address, timeout: Duration) -> Result<Sender<T>, ChannelError> {
        records::Sender::open_timeout(address, timeout).map(Sender::from_records)
    }

    /// Attaches to a record channel segment (named, SysV or memfd).
    pub fn attach(segment: Segment) -> Result<Sender<T>, ChannelError> {
        records::Sender::attach(segment).map(Sender::from_records)
    }

    /// Sends typed messages through a record sender.
    pub fn from_records(inner: records::Sender) -> Sender<T> {
        Sender {
            inner,
            buffer: Vec::new(),
            _type: PhantomData,
        }
    }

    /// The record sender underneath.
    pub fn records(&mut self) -> &mut records::Sender {
        &mut self.inner
    }

    fn encode(&mut self, message: &T) -> Result<(), TypedSendError> {
        let mut buffer = std::mem::take(&mut self.buffer);
        buffer.clear();
        self.buffer = postcard::to_extend(message, buffer)
            .map_err(|e| TypedSendError::Encode(CodecError(e)))?;
        Ok(())
    }

    /// Sends without blocking.
    pub fn try_send(&mut self, message: &T) -> Result<(), TypedSendError> {
        self.encode(message)?;
        Ok(self.inner.try_send(&self.buffer)?)
    }

    /// Sends, waiting for room as long as it takes.
    pub fn send(&mut self, message: &T) -> Result<(), TypedSendError> {
        self.encode(message)?;
        Ok(self.inner.send(&self.buffer)?)
    }

    /// Sends, waiting for room at most `timeout`.
    pub fn send_timeout(&mut self, message: &T, timeout: Duration) -> Result<(), TypedSendError> {
        self.encode(message)?;
        Ok(self.inner.send_timeout(&self.buffer, timeout)?)
    }
}

/// The receiving end for messages of `T`.
pub struct Receiver<T> {
    inner: records::Receiver,
    /// The last record, kept for its allocation.
    buffer: Vec<u8>,
    // fn() -> T: yields `T`s without holding one.
    _type: PhantomData<fn() -> T>,
}

impl<T: DeserializeOwned> Receiver<T> {
    /// Creates a named channel (a `capacity`-byte record buffer) and
    /// attaches as its receiver.
    pub fn create(
        address: &Address,
        capacity: usize,
        mode: ProducerMode,
        options: &ChannelOptions,
    ) -> Result<Receiver<T>, ChannelError> {
        records::Receiver::create(address, capacity, mode, options).map(Receiver::from_records)
    }

    /// Opens a named channel as its receiver.
    pub fn open(address: &Address) -> Result<Receiver<T>, ChannelError> {
        records::Receiver::open(address).map(Receiver::from_records)
    }

    /// Opens the named channel, creating it if it does not exist; see
    /// [`records::Receiver::open_or_create`].
    pub fn open_or_create(
        address: &Address,
        capacity: usize,
        mode: ProducerMode,
        options: &ChannelOptions,
    ) -> Result<Receiver<T>, ChannelError> {
        records::Receiver::open_or_create(address, capacity, mode, options)
            .map(Receiver::from_records)
    }

    /// Opens the named channel, waiting up to `timeout` for it; see
    /// [`records::Receiver::open_timeout`].
    pub fn open_timeout(address: &Address, timeout: Duration) -> Result<Receiver<T>, ChannelError> {
        records::Receiver::open_timeout(address, timeout).map(Receiver::from_records)
    }

    /// Attaches to a record channel segment (named, SysV or memfd).
    pub fn attach(segment: Segment) -> Result<Receiver<T>, ChannelError> {
        records::Receiver::attach(segment).map(Receiver::from_records)
    }

    /// Receives typed messages through a record receiver.
    pub fn from_records(inner: records::Receiver) -> Receiver<T> {
        Receiver {
            inner,
            buffer: Vec::new(),
            _type: PhantomData,
        }
    }

    /// The record receiver underneath.
    pub fn records(&mut self) -> &mut records::Receiver {
        &mut self.inner
    }

    /// Decodes from a copy: the record's bytes live in memory other
    /// processes may write, so they are never borrowed as `&[u8]`.
    fn decode(&self) -> Result<T, TypedRecvError> {
        postcard::from_bytes(&self.buffer).map_err(|e| TypedRecvError::Decode(CodecError(e)))
    }

    /// Receives without blocking.
    pub fn try_recv(&mut self) -> Result<T, TypedRecvError> {
        self.inner.try_recv_into(&mut self.buffer)?;
        self.decode()
    }

    /// Receives, waiting as long as it takes.
    pub fn recv(&mut self) -> Result<T, TypedRecvError> {
        self.inner.recv_into(&mut self.buffer)?;
        self.decode()
    }

    /// Receives, waiting at most `timeout`.
    pub fn recv_timeout(&mut self, timeout: Duration) -> Result<T, TypedRecvError> {
        let view = self.inner.recv_timeout(timeout)?;
        self.buffer.clear();
        self.buffer.resize(view.len(), 0);
        view.read_at(0, &mut self.buffer);
        drop(view);
        self.decode()
    }
}
