//! A program that depends on `ipcring` builds the library's own
//! dependencies and nothing the command line or the bench needs: those
//! live in the `ipcring-cli` package.

use std::process::Command;

/// Crates only the command line and the bench may use.
const CLI_ONLY: [&str; 7] = [
    "clap",
    "serde_json",
    "hdrhistogram",
    "rtrb",
    "crossbeam-queue",
    "signal-hook",
    "iceoryx2",
];

/// The crates `cargo tree` lists for the library's normal and build
/// dependencies with `features`, one name per line.
fn library_dependencies(features: &[&str]) -> Vec<String> {
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let manifest = concat!(env!("CARGO_MANIFEST_DIR"), "/Cargo.toml");
    let mut command = Command::new(cargo);
    command.args([
        "tree",
        "--offline",
        "--manifest-path",
        manifest,
        "-p",
        "ipcring",
        "-e",
        "normal,build",
        "--prefix",
        "none",
        "--format",
        "{p}",
    ]);
    for feature in features {
        command.args(["--features", feature]);
    }
    let output = command.output().expect("run cargo tree");
    assert!(
        output.status.success(),
        "cargo tree failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout)
        .unwrap()
        .lines()
        .filter_map(|line| line.split_whitespace().next())
        .map(str::to_owned)
        .collect()
}

#[test]
fn the_library_builds_none_of_the_command_lines_dependencies() {
    for features in [&[][..], &["serde"][..]] {
        let crates = library_dependencies(features);
        assert!(
            crates.iter().any(|name| name == "memmap2"),
            "cargo tree listed the library's dependencies: {crates:?}"
        );
        for name in CLI_ONLY {
            assert!(
                !crates.iter().any(|c| c == name),
                "with features {features:?}, the library depends on {name}: {crates:?}"
            );
        }
    }
}
