//! How records are laid out in sled: binary keys that sort as their domain
//! does, and sealed JSON values — a format byte and a CRC-32 of the payload
//! before it, checked on every read — so that a damaged record is found and
//! named instead of served. Decoding checks everything and never panics.

use super::StoreError;
use crate::model::{Family, ServiceKey};
use serde::de::DeserializeOwned;
use serde::Serialize;
use std::net::IpAddr;

/// A log index as a key: 8 bytes big-endian, so sled's byte order is log order.
pub(crate) fn log_key(index: u64) -> [u8; 8] {
    index.to_be_bytes()
}

pub(crate) fn decode_log_key(key: &[u8]) -> Result<u64, StoreError> {
    let bytes: [u8; 8] = key.try_into().map_err(|_| StoreError::Corrupt {
        what: "log entry key".into(),
        problem: format!("{} bytes, expected 8", key.len()),
    })?;
    Ok(u64::from_be_bytes(bytes))
}

/// A service's record key. Stable: it is on disk.
///
/// - `b'i'`, protocol number (2 bytes BE), family (`4` or `6`), address
///   (4 or 16 bytes), port (2 bytes BE);
/// - `b'f'`, family (`4` or `6`), mark (4 bytes BE).
pub(crate) fn service_key(key: &ServiceKey) -> Vec<u8> {
    let mut out = Vec::with_capacity(22);
    match key {
        ServiceKey::Inet {
            protocol,
            addr,
            port,
        } => {
            out.push(b'i');
            out.extend_from_slice(&protocol.number().to_be_bytes());
            match addr {
                IpAddr::V4(a) => {
                    out.push(4);
                    out.extend_from_slice(&a.octets());
                }
                IpAddr::V6(a) => {
                    out.push(6);
                    out.extend_from_slice(&a.octets());
                }
            }
            out.extend_from_slice(&port.to_be_bytes());
        }
        ServiceKey::Fwmark { family, mark } => {
            out.push(b'f');
            out.push(match family {
                Family::Ipv4 => 4,
                Family::Ipv6 => 6,
            });
            out.extend_from_slice(&mark.to_be_bytes());
        }
    }
    out
}

/// The first byte of a remembered request's record key (see
/// [`request_key`]); service keys start with `i` or `f`.
pub(crate) const REQUEST_RECORD: u8 = b'r';

/// A remembered request's record key, in the tree of the service records:
/// `b'r'` and the client's `Idempotency-Key`. Stable: it is on disk.
pub(crate) fn request_key(key: &str) -> Vec<u8> {
    let mut out = Vec::with_capacity(1 + key.len());
    out.push(REQUEST_RECORD);
    out.extend_from_slice(key.as_bytes());
    out
}

/// The key of the one record holding the l2 owners of the service
/// addresses ([`crate::model::VipOwners`]), in the tree of the service
/// records (so the digest covers it). Stable: it is on disk.
pub(crate) const OWNERS_RECORD: &[u8] = b"o";

/// The first byte of a sealed value: the layout of what follows (a CRC-32
/// of the payload, little-endian, then the payload). JSON never starts with
/// it, so values written before sealing are told apart.
pub(crate) const SEALED_V1: u8 = 1;

/// Bytes before the payload of a sealed value.
const SEAL_HEADER: usize = 5;

/// `payload` sealed: format byte, checksum, payload.
pub(crate) fn seal(payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(SEAL_HEADER + payload.len());
    out.push(SEALED_V1);
    out.extend_from_slice(&crc32fast::hash(payload).to_le_bytes());
    out.extend_from_slice(payload);
    out
}

/// The payload of a sealed value, once its checksum matches.
pub(crate) fn unseal(bytes: &[u8], what: impl FnOnce() -> String) -> Result<&[u8], StoreError> {
    let corrupt = |problem: String| StoreError::Corrupt {
        what: what(),
        problem,
    };
    match bytes.first() {
        None => return Err(corrupt("it is empty".into())),
        Some(&SEALED_V1) => {}
        Some(other) => return Err(corrupt(format!("unknown record format {other:#04x}"))),
    }
    let Some((header, payload)) = bytes.split_at_checked(SEAL_HEADER) else {
        return Err(corrupt(format!(
            "{} bytes, shorter than its header",
            bytes.len()
        )));
    };
    let mut stored = [0u8; 4];
    stored.copy_from_slice(&header[1..]);
    let (stored, computed) = (u32::from_le_bytes(stored), crc32fast::hash(payload));
    if stored != computed {
        return Err(corrupt(format!(
            "checksum mismatch (stored {stored:08x}, computed {computed:08x})"
        )));
    }
    Ok(payload)
}

/// `value` as a sealed JSON record.
pub(crate) fn encode<T: Serialize>(
    value: &T,
    what: impl FnOnce() -> String,
) -> Result<Vec<u8>, StoreError> {
    let json = serde_json::to_vec(value).map_err(|source| StoreError::Encode {
        what: what(),
        source,
    })?;
    Ok(seal(&json))
}

/// A sealed JSON record, checked and decoded.
pub(crate) fn decode<T: DeserializeOwned>(
    bytes: &[u8],
    what: impl Fn() -> String,
) -> Result<T, StoreError> {
    decode_json(unseal(bytes, &what)?, what)
}

/// Plain JSON: a sealed record's payload, or a record written before
/// records were sealed (read once, by the migration).
pub(crate) fn decode_json<T: DeserializeOwned>(
    json: &[u8],
    what: impl FnOnce() -> String,
) -> Result<T, StoreError> {
    serde_json::from_slice(json).map_err(|source| StoreError::Decode {
        what: what(),
        source,
    })
}

/// The record `key` of `tree`, decoded; `None` if absent.
pub(crate) fn get<T: DeserializeOwned>(
    tree: &sled::Tree,
    key: &str,
) -> Result<Option<T>, StoreError> {
    match tree.get(key).map_err(StoreError::read(key))? {
        Some(bytes) => decode(&bytes, || key.to_string()).map(Some),
        None => Ok(None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Protocol;

    #[test]
    fn log_keys_sort_as_indexes() {
        let mut keys: Vec<[u8; 8]> = [300u64, 2, 1 << 40, 0, 255]
            .iter()
            .map(|i| log_key(*i))
            .collect();
        keys.sort();
        let indexes: Vec<u64> = keys.iter().map(|k| decode_log_key(k).unwrap()).collect();
        assert_eq!(indexes, vec![0, 2, 255, 300, 1 << 40]);
        assert!(decode_log_key(b"short").is_err());
    }

    #[test]
    fn service_keys_are_stable_and_distinct() {
        let tcp = ServiceKey::Inet {
            protocol: Protocol::Tcp,
            addr: "192.0.2.1".parse().unwrap(),
            port: 80,
        };
        assert_eq!(service_key(&tcp), b"i\x00\x06\x04\xc0\x00\x02\x01\x00\x50");
        let fwm = ServiceKey::Fwmark {
            family: Family::Ipv6,
            mark: 7,
        };
        assert_eq!(service_key(&fwm), b"f\x06\x00\x00\x00\x07");
        let udp = ServiceKey::Inet {
            protocol: Protocol::Udp,
            addr: "192.0.2.1".parse().unwrap(),
            port: 80,
        };
        let v6 = ServiceKey::Inet {
            protocol: Protocol::Tcp,
            addr: "2001:db8::1".parse().unwrap(),
            port: 80,
        };
        let keys = [tcp, fwm, udp, v6].map(|k| service_key(&k));
        for (i, a) in keys.iter().enumerate() {
            for b in &keys[i + 1..] {
                assert_ne!(a, b);
            }
        }
    }
}
