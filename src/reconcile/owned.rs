//! The set of kernel services this node created or adopted, persisted under
//! RAFT_VOL_DIR so that, after a restart, the node still removes a service
//! deleted from the desired state while it was down, and never touches
//! services someone else put in the table.

use crate::model::ServiceKey;
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

/// File name inside the data directory.
const FILE: &str = "owned-services.json";

#[derive(Debug, thiserror::Error)]
pub enum OwnedError {
    #[error("failed to read the owned-services file {path}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("the owned-services file {path} is damaged (delete it to have the node adopt only the desired services)")]
    Corrupt {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
    #[error("the owned-services file {path} is damaged: its checksum does not match its list (delete it to have the node adopt only the desired services)")]
    Checksum { path: PathBuf },
    #[error("failed to write the owned-services file {path}")]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// The owned set and where it lives (`None`: in memory only, for tests).
#[derive(Debug, Default)]
pub struct Owned {
    keys: BTreeSet<ServiceKey>,
    path: Option<PathBuf>,
}

/// The file's layout: the list and a CRC-32 of its JSON, so that a flipped
/// byte that still parses (another address) is found, not obeyed. A bare
/// list (what earlier versions wrote) is read too.
#[derive(serde::Serialize, serde::Deserialize)]
struct OwnedFile {
    services: BTreeSet<ServiceKey>,
    crc32: u32,
}

fn checksum(keys: &BTreeSet<ServiceKey>) -> u32 {
    crc32fast::hash(&serde_json::to_vec(keys).unwrap_or_default())
}

impl Owned {
    /// The file in the data directory `dir`.
    pub fn path(dir: &Path) -> PathBuf {
        dir.join(FILE)
    }

    /// An owned set that is never written to disk.
    pub fn in_memory(keys: BTreeSet<ServiceKey>) -> Owned {
        Owned { keys, path: None }
    }

    /// Loads the set from `dir` (empty when the file does not exist yet).
    pub fn load(dir: &Path) -> Result<Owned, OwnedError> {
        let path = dir.join(FILE);
        let keys = match std::fs::read(&path) {
            // A bare list is what earlier versions wrote.
            Ok(bytes) if bytes.trim_ascii_start().starts_with(b"[") => {
                serde_json::from_slice(&bytes).map_err(|source| OwnedError::Corrupt {
                    path: path.clone(),
                    source,
                })?
            }
            Ok(bytes) => match serde_json::from_slice::<OwnedFile>(&bytes) {
                Ok(file) if file.crc32 == checksum(&file.services) => file.services,
                Ok(_) => return Err(OwnedError::Checksum { path }),
                Err(source) => return Err(OwnedError::Corrupt { path, source }),
            },
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => BTreeSet::new(),
            Err(source) => return Err(OwnedError::Read { path, source }),
        };
        Ok(Owned {
            keys,
            path: Some(path),
        })
    }

    pub fn keys(&self) -> &BTreeSet<ServiceKey> {
        &self.keys
    }

    /// Adds and removes keys, then writes the set if it changed. The file
    /// is replaced atomically (write, fsync, rename): a crash leaves the old
    /// set or the new one.
    pub fn update(
        &mut self,
        add: impl IntoIterator<Item = ServiceKey>,
        remove: impl IntoIterator<Item = ServiceKey>,
    ) -> Result<(), OwnedError> {
        let mut changed = false;
        for key in add {
            changed |= self.keys.insert(key);
        }
        for key in remove {
            changed |= self.keys.remove(&key);
        }
        if !changed {
            return Ok(());
        }
        let Some(path) = &self.path else {
            return Ok(());
        };
        let write = || -> std::io::Result<()> {
            let json = serde_json::to_vec(&OwnedFile {
                services: self.keys.clone(),
                crc32: checksum(&self.keys),
            })
            .map_err(std::io::Error::other)?;
            crate::files::write_whole(path, &json)
        };
        write().map_err(|source| OwnedError::Write {
            path: path.clone(),
            source,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Protocol;

    fn key(port: u16) -> ServiceKey {
        ServiceKey::Inet {
            protocol: Protocol::Tcp,
            addr: "192.0.2.1".parse().unwrap(),
            port,
        }
    }

    #[test]
    fn survives_a_reload_and_refuses_garbage() {
        let dir = tempfile::TempDir::new().unwrap();
        let mut owned = Owned::load(dir.path()).unwrap();
        assert!(owned.keys().is_empty());
        owned.update([key(80), key(443)], []).unwrap();
        owned.update([], [key(80)]).unwrap();
        let again = Owned::load(dir.path()).unwrap();
        assert_eq!(again.keys(), &BTreeSet::from([key(443)]));

        // A flipped byte that still parses is found by the checksum.
        let path = dir.path().join(FILE);
        let text = std::fs::read_to_string(&path)
            .unwrap()
            .replace("443", "444");
        std::fs::write(&path, text).unwrap();
        let err = Owned::load(dir.path()).unwrap_err();
        assert!(matches!(err, OwnedError::Checksum { .. }), "{err}");

        // What earlier versions wrote: a bare list.
        std::fs::write(
            &path,
            serde_json::to_vec(&BTreeSet::from([key(80)])).unwrap(),
        )
        .unwrap();
        assert_eq!(
            Owned::load(dir.path()).unwrap().keys(),
            &BTreeSet::from([key(80)])
        );

        std::fs::write(&path, b"[{\"Inet\":").unwrap();
        let err = Owned::load(dir.path()).unwrap_err();
        assert!(err.to_string().contains(FILE), "{err}");
    }
}
