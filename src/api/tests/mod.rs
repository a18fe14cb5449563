//! Tests of the API layer: table-driven validation (every bad-input class of
//! the REST API, with its field path and code), defaults, merge patch, ids,
//! views, errors and routes, property tests of the round trips, the
//! OpenAPI document held to the code, and the web UI's files as served.

mod errors;
mod ids;
mod limits;
mod openapi;
mod patch;
mod roundtrip;
mod ui;
mod validate;
mod views;

use super::error::{ApiError, ErrorCode};
use crate::model::{
    DestKey, Destination, Family, Protocol, ServiceConfig, ServiceKey, VirtualService,
};

/// (code, field) of every problem of an error.
fn problems(e: &ApiError) -> Vec<(ErrorCode, Option<String>)> {
    if e.details().is_empty() {
        return vec![(e.code(), e.field().map(str::to_string))];
    }
    e.details()
        .iter()
        .map(|d| (d.code, d.field.clone()))
        .collect()
}

fn tcp(addr: &str, port: u16) -> ServiceKey {
    ServiceKey::Inet {
        protocol: Protocol::Tcp,
        addr: addr.parse().unwrap(),
        port,
    }
}

fn fwmark(family: Family, mark: u32) -> ServiceKey {
    ServiceKey::Fwmark { family, mark }
}

fn dest(addr: &str, port: u16) -> Destination {
    Destination::new(addr.parse().unwrap(), port)
}

fn dkey(addr: &str, port: u16) -> DestKey {
    DestKey {
        addr: addr.parse().unwrap(),
        port,
    }
}

/// A service with servers, as the state machine holds it.
fn config(service: VirtualService, servers: &[Destination], revision: u64) -> ServiceConfig {
    ServiceConfig::new(service, servers.iter().copied(), revision)
}
