//! The set of kernel services this node created or adopted, persisted under
//! RAFT_VOL_DIR so that, after a restart, the node still removes a service
//! deleted from the desired state while it was down, and never touches
//! services someone else put in the table.

use crate::model::ServiceKey;
use std::collections::BTreeSet;
use std::io::Write;
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
    #[error("the owned-services file {path} is not a JSON list of services (delete it to have the node adopt only the desired services)")]
    Corrupt {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
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

impl Owned {
    /// An owned set that is never written to disk.
    pub fn in_memory(keys: BTreeSet<ServiceKey>) -> Owned {
        Owned { keys, path: None }
    }

    /// Loads the set from `dir` (empty when the file does not exist yet).
    pub fn load(dir: &Path) -> Result<Owned, OwnedError> {
        let path = dir.join(FILE);
        let keys = match std::fs::read(&path) {
            Ok(bytes) => serde_json::from_slice(&bytes).map_err(|source| OwnedError::Corrupt {
                path: path.clone(),
                source,
            })?,
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
            let tmp = path.with_extension("json.tmp");
            let mut file = std::fs::File::create(&tmp)?;
            let json = serde_json::to_vec(&self.keys).map_err(std::io::Error::other)?;
            file.write_all(&json)?;
            file.sync_all()?;
            std::fs::rename(&tmp, path)
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

        std::fs::write(dir.path().join(FILE), b"[{\"Inet\":").unwrap();
        let err = Owned::load(dir.path()).unwrap_err();
        assert!(err.to_string().contains(FILE), "{err}");
    }
}
