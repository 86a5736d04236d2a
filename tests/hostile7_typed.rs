//! A hostile peer feeds a typed receiver bytes that are not its type:
//! random bytes, huge length prefixes, and deep nesting for a recursive
//! type. Each case decodes in a child process, so that a crash (a stack
//! overflow aborts the process) shows as a signal instead of taking the
//! test binary down. Needs the `serde` feature.
#![cfg(feature = "serde")]

mod common;
mod hostile_support;

use std::collections::BTreeMap;
use std::time::Duration;

use common::{Cleanup, unique_posix};
use hostile_support::{Exit, Rng, Victim, env, role};
use ipcring::channel::typed::{Receiver, TypedRecvError};
use ipcring::channel::{ChannelOptions, records};
use ipcring::ring::record::ProducerMode;
use ipcring::segment::Address;

const LIMIT: Duration = Duration::from_secs(20);
const CAPACITY: usize = 1 << 20;

#[derive(serde::Deserialize, Debug)]
#[allow(dead_code)]
enum Tree {
    Leaf(u8),
    Node(Box<Tree>, Box<Tree>),
    Chain(Box<Tree>),
}

#[derive(serde::Deserialize, Debug)]
#[allow(dead_code)]
struct Record {
    name: String,
    tags: Vec<Vec<String>>,
    map: BTreeMap<String, Vec<u64>>,
}

fn child() {
    let address: Address = env("CHANNEL").parse().unwrap();
    let what = role().unwrap();
    let mut tx = records::Sender::open(&address).unwrap();
    let mut results = Vec::new();
    match what.as_str() {
        "deep" => {
            let mut rx = Receiver::<Tree>::open(&address).unwrap();
            // Chain(Chain(Chain(...))): one byte per level.
            let mut bytes = vec![2u8; 200_000];
            bytes.push(0);
            bytes.push(7);
            tx.send(&bytes).unwrap();
            results.push(format!("{:?}", rx.recv_timeout(LIMIT).map(|_| ())));
        }
        "random" => {
            let mut rx = Receiver::<Record>::open(&address).unwrap();
            let mut rng = Rng(0x5eed);
            for round in 0..300 {
                let len = rng.below(64) as usize;
                let mut bytes: Vec<u8> = (0..len).map(|_| rng.next() as u8).collect();
                if round % 3 == 0 {
                    // A string or sequence length of about 2^63.
                    bytes = vec![0xff; 9];
                    bytes.push(0x7f);
                }
                tx.send(&bytes).unwrap();
                let got = rx.recv_timeout(LIMIT);
                assert!(
                    matches!(got, Err(TypedRecvError::Decode(_)) | Ok(_)),
                    "{got:?}"
                );
            }
            results.push("done".to_owned());
        }
        other => panic!("{other}"),
    }
    eprintln!("{results:?}");
}

fn run(test: &str, what: &str) {
    let address = unique_posix("h7-typed");
    let _cleanup = Cleanup(address.clone());
    let _rx = records::Receiver::create(
        &address,
        CAPACITY,
        ProducerMode::Many,
        &ChannelOptions::new(),
    )
    .unwrap();
    drop(_rx);
    let mut victim =
        Victim::spawn_with(test, what, None, &[("CHANNEL", address.to_string())], false);
    let exit = victim.wait_exit(LIMIT);
    assert_eq!(exit, Some(Exit::Code(0)), "{what}: the decoding process");
}

#[test]
fn random_bytes_and_huge_lengths_are_decode_errors() {
    if role().is_some() {
        return child();
    }
    run("random_bytes_and_huge_lengths_are_decode_errors", "random");
}

/// 200,000 levels of nesting in one 200 kB message.
#[test]
#[ignore = "known limit: postcard has no nesting limit, so a recursive type decodes deep nesting by recursion until the stack overflows (docs/crash-behavior.md)"]
fn deep_nesting_does_not_overflow_the_stack() {
    if role().is_some() {
        return child();
    }
    run("deep_nesting_does_not_overflow_the_stack", "deep");
}
