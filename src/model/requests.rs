//! Writes made under an `Idempotency-Key`, remembered in the replicated
//! state so that a client may retry a write whose answer it lost: the retry
//! gets the first outcome instead of applying twice, on any node, across
//! leader changes and restarts.
//!
//! A consensus write can end without an answer (a timeout while a quorum
//! is out of reach, a connection cut after the request was sent) and still
//! commit later; only a repeat that the state machine recognises makes the
//! retry safe. The table is bounded: an entry is forgotten [`WINDOW_MS`]
//! after its write, and beyond [`MAX_REMEMBERED`] entries the oldest go
//! first. Expiry is decided at apply time from the time each write carries
//! (the accepting node's clock), so every node forgets the same entries.

use super::{Command, CommandResult, DesiredState};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};

/// How long a write is remembered: a day, as payment APIs keep theirs; a
/// retry loop gives up long before.
pub const WINDOW_MS: u64 = 24 * 3600 * 1000;

/// At most this many writes are remembered (the oldest are forgotten
/// first): a few megabytes in memory and on disk.
pub const MAX_REMEMBERED: usize = 100_000;

/// Longest key accepted (the IETF draft leaves it to the server; a UUID is
/// 36 characters).
pub const MAX_KEY_LEN: usize = 255;

/// Checks a client's key: 1 to [`MAX_KEY_LEN`] printable ASCII characters.
pub fn check_key(key: &str) -> Result<(), String> {
    if key.is_empty() {
        return Err("is empty".into());
    }
    if key.len() > MAX_KEY_LEN {
        return Err(format!(
            "is {} characters long, at most {MAX_KEY_LEN} are allowed",
            key.len()
        ));
    }
    match key.chars().find(|c| !c.is_ascii_graphic()) {
        Some(c) => Err(format!(
            "contains {c:?}: only printable ASCII without spaces is allowed"
        )),
        None => Ok(()),
    }
}

/// A write made under a key: what a retry with the same key gets.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Remembered {
    /// The key, as the client sent it.
    pub key: String,
    /// A digest of the request (method, path, body, the parameters that
    /// change its meaning): the same key on another request is refused.
    pub fingerprint: String,
    /// When the write was accepted (unix ms, the accepting node's clock).
    pub at_ms: u64,
    /// The log index it was applied at.
    pub index: u64,
    /// What applying it gave.
    pub result: CommandResult,
}

/// The remembered writes, by key and by age (kept together, so that they
/// cannot disagree; only the list of entries is serialised).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Requests {
    by_key: BTreeMap<String, Remembered>,
    by_age: BTreeSet<(u64, String)>,
    /// Keys added or forgotten since [`Requests::take_changed`]: what the
    /// store must write or remove at its next checkpoint.
    changed: BTreeSet<String>,
}

impl Requests {
    pub fn get(&self, key: &str) -> Option<&Remembered> {
        self.by_key.get(key)
    }

    pub fn len(&self) -> usize {
        self.by_key.len()
    }

    pub fn is_empty(&self) -> bool {
        self.by_key.is_empty()
    }

    pub fn iter(&self) -> impl Iterator<Item = &Remembered> {
        self.by_key.values()
    }

    /// Adds an entry read back from the store or a snapshot.
    pub fn insert(&mut self, entry: Remembered) {
        self.forget(&entry.key.clone());
        self.by_age.insert((entry.at_ms, entry.key.clone()));
        self.changed.insert(entry.key.clone());
        self.by_key.insert(entry.key.clone(), entry);
    }

    fn forget(&mut self, key: &str) {
        if let Some(old) = self.by_key.remove(key) {
            self.by_age.remove(&(old.at_ms, old.key));
            self.changed.insert(key.to_string());
        }
    }

    /// Forgets what is older than the window at `now_ms`, then the oldest
    /// beyond [`MAX_REMEMBERED`] - `room`.
    fn expire(&mut self, now_ms: u64, room: usize) {
        let horizon = now_ms.saturating_sub(WINDOW_MS);
        while let Some((at, key)) = self.by_age.first().cloned() {
            if at >= horizon && self.by_key.len() + room <= MAX_REMEMBERED {
                break;
            }
            self.forget(&key);
        }
    }

    /// The keys added or forgotten since the last call.
    pub fn take_changed(&mut self) -> BTreeSet<String> {
        std::mem::take(&mut self.changed)
    }

    /// Applies `cmd` committed at `index` to `desired`, with its keyed
    /// writes (alone or within a batch) applied once: a key seen before
    /// answers its first outcome ([`CommandResult::Replayed`]), or
    /// [`CommandResult::KeyReused`] when it came with another request.
    pub fn apply(
        &mut self,
        desired: &mut DesiredState,
        cmd: &Command,
        index: u64,
    ) -> CommandResult {
        match cmd {
            Command::Batch(cmds) => {
                CommandResult::Batch(cmds.iter().map(|c| self.apply(desired, c, index)).collect())
            }
            Command::Keyed {
                key,
                fingerprint,
                at_ms,
                command,
            } => {
                self.expire(*at_ms, 0);
                if let Some(first) = self.by_key.get(key) {
                    return if first.fingerprint == *fingerprint {
                        CommandResult::Replayed {
                            index: first.index,
                            first: Box::new(first.result.clone()),
                        }
                    } else {
                        CommandResult::KeyReused
                    };
                }
                let result = self.apply(desired, command, index);
                self.expire(*at_ms, 1);
                self.insert(Remembered {
                    key: key.clone(),
                    fingerprint: fingerprint.clone(),
                    at_ms: *at_ms,
                    index,
                    result: result.clone(),
                });
                result
            }
            other => desired.apply(other, index),
        }
    }
}

impl Serialize for Requests {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_seq(self.by_key.values())
    }
}

impl<'de> Deserialize<'de> for Requests {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Requests, D::Error> {
        let mut requests = Requests::default();
        for entry in Vec::<Remembered>::deserialize(d)? {
            requests.insert(entry);
        }
        requests.changed.clear();
        Ok(requests)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{Destination, Protocol, ServiceKey, ServiceSpec, VirtualService};

    fn create(port: u16) -> Command {
        let key = ServiceKey::Inet {
            protocol: Protocol::Tcp,
            addr: "192.0.2.1".parse().unwrap(),
            port,
        };
        Command::CreateService(ServiceSpec {
            service: VirtualService::new(key),
            servers: vec![Destination::new("198.51.100.1".parse().unwrap(), 80)],
            options: Default::default(),
            server_checks: Default::default(),
        })
    }

    fn keyed(key: &str, fingerprint: &str, at_ms: u64, command: Command) -> Command {
        Command::Keyed {
            key: key.into(),
            fingerprint: fingerprint.into(),
            at_ms,
            command: Box::new(command),
        }
    }

    #[test]
    fn a_retry_gets_the_first_outcome_and_changes_nothing() {
        let (mut requests, mut desired) = (Requests::default(), DesiredState::default());
        let first = requests.apply(&mut desired, &keyed("k1", "f", 1_000, create(80)), 5);
        assert_eq!(first, CommandResult::Applied { revision: 5 });
        let after_first = desired.clone();
        let retry = requests.apply(&mut desired, &keyed("k1", "f", 2_000, create(80)), 9);
        assert_eq!(
            retry,
            CommandResult::Replayed {
                index: 5,
                first: Box::new(CommandResult::Applied { revision: 5 })
            }
        );
        assert_eq!(desired, after_first, "the retry applied nothing");
        // Without a key the same create is refused: it exists.
        let unkeyed = requests.apply(&mut desired, &create(80), 10);
        assert!(matches!(unkeyed, CommandResult::ServiceExists(_)));
        // The same key on another request is refused, and applies nothing.
        let reused = requests.apply(&mut desired, &keyed("k1", "g", 3_000, create(81)), 11);
        assert_eq!(reused, CommandResult::KeyReused);
        assert_eq!(desired.services.len(), 1);
        // A refusal is remembered as such.
        let refused = requests.apply(&mut desired, &keyed("k2", "f", 3_000, create(80)), 12);
        assert!(matches!(refused, CommandResult::ServiceExists(_)));
        let again = requests.apply(&mut desired, &keyed("k2", "f", 3_000, create(80)), 13);
        assert!(
            matches!(&again, CommandResult::Replayed { index: 12, first } if matches!(**first, CommandResult::ServiceExists(_)))
        );
    }

    #[test]
    fn keyed_writes_in_a_batch_are_each_remembered() {
        let (mut requests, mut desired) = (Requests::default(), DesiredState::default());
        let batch = Command::Batch(vec![
            keyed("a", "f", 1, create(80)),
            create(81),
            keyed("b", "f", 1, create(82)),
        ]);
        let result = requests.apply(&mut desired, &batch, 7);
        assert_eq!(
            result,
            CommandResult::Batch(vec![CommandResult::Applied { revision: 7 }; 3])
        );
        assert_eq!(requests.len(), 2);
        assert_eq!(
            requests.take_changed(),
            BTreeSet::from(["a".to_string(), "b".to_string()])
        );
        assert!(requests.take_changed().is_empty());
    }

    #[test]
    fn entries_expire_after_the_window_and_beyond_the_bound() {
        let (mut requests, mut desired) = (Requests::default(), DesiredState::default());
        requests.apply(&mut desired, &keyed("old", "f", 1_000, create(80)), 1);
        requests.take_changed();
        // Within the window it is remembered...
        let within = 1_000 + WINDOW_MS - 1;
        requests.apply(&mut desired, &keyed("new", "f", within, create(81)), 2);
        assert!(requests.get("old").is_some());
        // ...after it, the next keyed write forgets it, and a retry with
        // that key is then a new write.
        let after = 1_000 + WINDOW_MS + 1;
        requests.apply(&mut desired, &keyed("later", "f", after, create(82)), 3);
        assert!(requests.get("old").is_none());
        assert_eq!(
            requests.take_changed(),
            BTreeSet::from(["later".to_string(), "new".to_string(), "old".to_string()])
        );
        // The bound: the oldest go first.
        let mut requests = Requests::default();
        for i in 0..MAX_REMEMBERED as u64 + 3 {
            requests.insert(Remembered {
                key: format!("k{i}"),
                fingerprint: String::new(),
                at_ms: 10 + i,
                index: i,
                result: CommandResult::Applied { revision: i },
            });
        }
        requests.apply(&mut desired, &keyed("last", "f", 10, create(83)), 9);
        assert_eq!(requests.len(), MAX_REMEMBERED);
        assert!(requests.get("k3").is_none() && requests.get("k4").is_some());
        assert!(requests.get("last").is_some());
    }

    #[test]
    fn the_table_round_trips_through_json() {
        let (mut requests, mut desired) = (Requests::default(), DesiredState::default());
        requests.apply(&mut desired, &keyed("a", "f", 1, create(80)), 1);
        requests.apply(&mut desired, &keyed("b", "f", 2, create(80)), 2);
        let json = serde_json::to_string(&requests).unwrap();
        let back: Requests = serde_json::from_str(&json).unwrap();
        assert_eq!(back.get("b"), requests.get("b"));
        assert_eq!(back.len(), 2);
    }

    #[test]
    fn keys_are_checked() {
        assert!(check_key("0b8d6f4e-9a4c-4c1e-8f59-3b1f0e7d2a11").is_ok());
        assert!(check_key("").is_err());
        assert!(check_key(&"x".repeat(256)).unwrap_err().contains("256"));
        assert!(check_key("a b").unwrap_err().contains("' '"));
        assert!(check_key("é").is_err());
    }
}
