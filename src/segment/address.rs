//! Names of segments: POSIX names under our prefix, and SysV keys.

use std::fmt;
use std::path::Path;
use std::str::FromStr;

use super::SegmentError;
use crate::sys;

/// Every POSIX segment of ours is `/dev/shm/ipcring.NAME`, so `ipcring ls`
/// can tell ours from other programs' objects.
pub const POSIX_PREFIX: &str = "ipcring.";

/// The longest NAME we accept (NAME_MAX is 255, less our prefix).
pub const MAX_NAME_LEN: usize = 200;

/// Where a named segment lives.
///
/// The text form, as `ipcring ls` prints it and `FromStr` parses it, is the
/// bare NAME for POSIX segments and `sysv:0xKEY` (or `sysv:DECIMAL`) for SysV.
///
/// ```
/// use ipcring::segment::Address;
/// let posix: Address = "orders".parse().unwrap();
/// let sysv: Address = "sysv:0x1234".parse().unwrap();
/// assert_eq!(posix.to_string(), "orders");
/// assert_eq!(sysv.to_string(), "sysv:0x00001234");
/// assert!("bad/name".parse::<Address>().is_err());
/// ```
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Address {
    /// A named POSIX segment (`shm_open`).
    Posix(PosixName),
    /// A SysV segment (`shmget`).
    SysV(SysvKey),
}

/// A validated POSIX segment name, without our prefix: 1 to 200 bytes of
/// ASCII letters, digits, `.`, `_` and `-`, not starting with `.`.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PosixName(String);

impl PosixName {
    /// Checks `name`.
    pub fn new(name: &str) -> Result<PosixName, SegmentError> {
        let invalid = |reason| SegmentError::InvalidAddress {
            input: name.to_owned(),
            reason,
        };
        if name.is_empty() {
            return Err(invalid("the name is empty"));
        }
        if name.len() > MAX_NAME_LEN {
            return Err(invalid("the name is longer than 200 bytes"));
        }
        if name.starts_with('.') {
            return Err(invalid("the name starts with '.'"));
        }
        if name.starts_with(POSIX_PREFIX) {
            // Its text form would be read back without the prefix.
            return Err(invalid(
                "the name starts with 'ipcring.', which is the prefix",
            ));
        }
        if !name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
        {
            return Err(invalid(
                "the name may hold only ASCII letters, digits, '.', '_' and '-'",
            ));
        }
        Ok(PosixName(name.to_owned()))
    }

    /// The name as the user gave it.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The file name in /dev/shm: `ipcring.NAME`.
    pub fn file_name(&self) -> String {
        format!("{POSIX_PREFIX}{}", self.0)
    }
}

/// A SysV IPC key. Zero (`IPC_PRIVATE`) is refused: it cannot name an
/// existing segment.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SysvKey(i32);

impl SysvKey {
    /// A raw key.
    pub fn new(key: i32) -> Result<SysvKey, SegmentError> {
        if key == 0 {
            return Err(SegmentError::InvalidAddress {
                input: "0".to_owned(),
                reason: "SysV key 0 is IPC_PRIVATE and names no segment",
            });
        }
        Ok(SysvKey(key))
    }

    /// The key `ftok(path, project_id)` gives, so C programs using `ftok`
    /// meet us at the same segment.
    pub fn from_path(path: &Path, project_id: u8) -> Result<SysvKey, SegmentError> {
        let key =
            sys::sysv::key_from_path(path, project_id).map_err(|source| match source.kind() {
                std::io::ErrorKind::NotFound => SegmentError::InvalidAddress {
                    input: path.display().to_string(),
                    reason: "the path for the SysV key does not exist",
                },
                _ => SegmentError::Io {
                    op: "stat for SysV key",
                    source,
                },
            })?;
        SysvKey::new(key)
    }

    /// The raw key.
    pub fn get(self) -> i32 {
        self.0
    }
}

impl fmt::Display for Address {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Address::Posix(name) => f.write_str(name.as_str()),
            Address::SysV(key) => write!(f, "sysv:0x{:08x}", key.0 as u32),
        }
    }
}

impl FromStr for Address {
    type Err = SegmentError;

    fn from_str(text: &str) -> Result<Address, SegmentError> {
        if let Some(key) = text.strip_prefix("sysv:") {
            let parsed = match key.strip_prefix("0x").or_else(|| key.strip_prefix("0X")) {
                Some(hex) => u32::from_str_radix(hex, 16).map(|k| k as i32).ok(),
                None => key.parse::<i32>().ok(),
            };
            let key = parsed.ok_or_else(|| SegmentError::InvalidAddress {
                input: text.to_owned(),
                reason: "a SysV key is sysv:0xHEX or sysv:DECIMAL (32 bits)",
            })?;
            return SysvKey::new(key).map(Address::SysV);
        }
        // Accept the forms a user may copy from `ls /dev/shm` too.
        let name = text.strip_prefix("/dev/shm/").unwrap_or(text);
        let name = name.strip_prefix('/').unwrap_or(name);
        let name = name.strip_prefix(POSIX_PREFIX).unwrap_or(name);
        PosixName::new(name).map(Address::Posix)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_every_spelling_of_a_posix_name() {
        for text in [
            "orders",
            "/ipcring.orders",
            "ipcring.orders",
            "/dev/shm/ipcring.orders",
        ] {
            assert_eq!(
                text.parse::<Address>().unwrap(),
                Address::Posix(PosixName::new("orders").unwrap())
            );
        }
    }

    #[test]
    fn parses_sysv_keys() {
        assert_eq!(
            "sysv:0xffffffff".parse::<Address>().unwrap(),
            Address::SysV(SysvKey(-1))
        );
        assert_eq!(
            "sysv:42".parse::<Address>().unwrap(),
            Address::SysV(SysvKey(42))
        );
        assert!("sysv:0".parse::<Address>().is_err());
        assert!("sysv:zz".parse::<Address>().is_err());
        assert!("sysv:0x1ffffffff".parse::<Address>().is_err());
    }

    #[test]
    fn rejects_bad_names() {
        let long = "a".repeat(MAX_NAME_LEN + 1);
        for bad in [
            "",
            ".hidden",
            "a/b",
            "a b",
            "nul\0",
            "é",
            "ipcring.x",
            long.as_str(),
        ] {
            assert!(PosixName::new(bad).is_err(), "{bad:?} should be refused");
        }
        assert!(PosixName::new(&"a".repeat(MAX_NAME_LEN)).is_ok());
    }

    #[test]
    fn a_doubled_prefix_is_refused_rather_than_misread() {
        // Found by the address_parse fuzz target.
        assert!("ipcring.ipcring.".parse::<Address>().is_err());
        assert!("ipcring.ipcring.x".parse::<Address>().is_err());
    }

    #[test]
    fn display_round_trips() {
        for text in ["x-1_2.3", "sysv:0x0000beef", "sysv:0xfffffffe"] {
            let address: Address = text.parse().unwrap();
            assert_eq!(address.to_string(), text);
            assert_eq!(address.to_string().parse::<Address>().unwrap(), address);
        }
    }
}
