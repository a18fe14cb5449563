//! Validation: every bad-input class with the code and field path it is
//! reported with; defaults; what is accepted at the edges.

use super::*;
use crate::api::error::{MAX_BODY_BYTES, MAX_CONFIG_BODY_BYTES};
use crate::api::validate::{
    not_the_fallback, parse_config, parse_join, parse_server_create, parse_service_create,
};
use crate::model::{
    Forward, Netmask, Persistence, Scheduler, ServiceFlags, ServiceSpec, Tunnel, TunnelChecksum,
    TunnelType,
};
use std::net::Ipv4Addr;

use ErrorCode::*;

/// A POST /api/v1/services body and the one problem it must be refused
/// with: its code and field path (`""`: the body as a whole).
const BAD_SERVICES: &[(&str, &str, ErrorCode, &str)] = &[
    // -- JSON itself
    ("truncated", r#"{"protocol": "tcp","#, MalformedJson, ""),
    ("empty body", "", MalformedJson, ""),
    ("blank body", " \n ", MalformedJson, ""),
    (
        "trailing text",
        r#"{"protocol":"tcp","address":"192.0.2.10","port":80} x"#,
        MalformedJson,
        "",
    ),
    ("single quotes", r#"{'protocol': 'tcp'}"#, MalformedJson, ""),
    ("comment", r#"{"port": 80 /* http */}"#, MalformedJson, ""),
    (
        "number too large for JSON",
        r#"{"port": 1e400}"#,
        MalformedJson,
        "",
    ),
    (
        "duplicate key",
        r#"{"protocol":"tcp","address":"192.0.2.10","port":80,"port":81}"#,
        DuplicateKey,
        "port",
    ),
    (
        "duplicate key in a server",
        r#"{"protocol":"tcp","address":"192.0.2.10","port":80,"servers":[{"address":"198.51.100.1"},{"address":"198.51.100.2","weight":1,"weight":2}]}"#,
        DuplicateKey,
        "servers[1].weight",
    ),
    ("a list", r#"[{"protocol":"tcp"}]"#, InvalidType, ""),
    ("a string", r#""tcp""#, InvalidType, ""),
    ("null", "null", InvalidType, ""),
    // -- unknown fields
    (
        "unknown field",
        r#"{"protocol":"tcp","address":"192.0.2.10","port":80,"prot":1}"#,
        UnknownField,
        "prot",
    ),
    (
        "field in another case",
        r#"{"protocol":"tcp","address":"192.0.2.10","port":80,"Port":80}"#,
        UnknownField,
        "Port",
    ),
    (
        "unknown persistence field",
        r#"{"protocol":"tcp","address":"192.0.2.10","port":80,"persistence":{"timout":60}}"#,
        UnknownField,
        "persistence.timout",
    ),
    (
        "unknown server field",
        r#"{"protocol":"tcp","address":"192.0.2.10","port":80,"servers":[{"address":"198.51.100.1"},{"address":"198.51.100.2","wieght":3}]}"#,
        UnknownField,
        "servers[1].wieght",
    ),
    (
        "unknown tunnel field",
        r#"{"protocol":"tcp","address":"192.0.2.10","port":80,"servers":[{"address":"198.51.100.1","forward":"tunnel","tunnel":{"typ":"gue"}}]}"#,
        UnknownField,
        "servers[0].tunnel.typ",
    ),
    // -- identity
    (
        "missing protocol",
        r#"{"address":"192.0.2.10","port":80}"#,
        MissingField,
        "protocol",
    ),
    (
        "missing address",
        r#"{"protocol":"tcp","port":80}"#,
        MissingField,
        "address",
    ),
    (
        "missing port",
        r#"{"protocol":"tcp","address":"192.0.2.10"}"#,
        MissingField,
        "port",
    ),
    (
        "null port",
        r#"{"protocol":"tcp","address":"192.0.2.10","port":null}"#,
        MissingField,
        "port",
    ),
    (
        "unknown protocol",
        r#"{"protocol":"icmp","address":"192.0.2.10","port":80}"#,
        InvalidValue,
        "protocol",
    ),
    (
        "upper-case protocol",
        r#"{"protocol":"TCP","address":"192.0.2.10","port":80}"#,
        InvalidValue,
        "protocol",
    ),
    (
        "protocol number",
        r#"{"protocol":6,"address":"192.0.2.10","port":80}"#,
        InvalidType,
        "protocol",
    ),
    (
        "bad IPv4 address",
        r#"{"protocol":"tcp","address":"192.0.2.300","port":80}"#,
        InvalidAddress,
        "address",
    ),
    (
        "host name",
        r#"{"protocol":"tcp","address":"www.example.com","port":80}"#,
        InvalidAddress,
        "address",
    ),
    (
        "address with port",
        r#"{"protocol":"tcp","address":"192.0.2.10:80","port":80}"#,
        InvalidAddress,
        "address",
    ),
    (
        "bracketed IPv6",
        r#"{"protocol":"tcp","address":"[2001:db8::1]","port":80}"#,
        InvalidAddress,
        "address",
    ),
    (
        "IPv6 with zone",
        r#"{"protocol":"tcp","address":"fe80::1%eth0","port":80}"#,
        InvalidAddress,
        "address",
    ),
    (
        "network",
        r#"{"protocol":"tcp","address":"192.0.2.0/24","port":80}"#,
        InvalidAddress,
        "address",
    ),
    (
        "leading zeros",
        r#"{"protocol":"tcp","address":"192.0.2.010","port":80}"#,
        InvalidAddress,
        "address",
    ),
    (
        "address number",
        r#"{"protocol":"tcp","address":3221225994,"port":80}"#,
        InvalidType,
        "address",
    ),
    (
        "port 0 without persistence",
        r#"{"protocol":"tcp","address":"192.0.2.10","port":0}"#,
        InvalidPort,
        "port",
    ),
    (
        "port 65536",
        r#"{"protocol":"udp","address":"192.0.2.10","port":65536}"#,
        InvalidPort,
        "port",
    ),
    (
        "negative port",
        r#"{"protocol":"tcp","address":"192.0.2.10","port":-1}"#,
        InvalidPort,
        "port",
    ),
    (
        "huge port",
        r#"{"protocol":"tcp","address":"192.0.2.10","port":18446744073709551615}"#,
        InvalidPort,
        "port",
    ),
    (
        "port as string",
        r#"{"protocol":"tcp","address":"192.0.2.10","port":"80"}"#,
        InvalidType,
        "port",
    ),
    (
        "fractional port",
        r#"{"protocol":"tcp","address":"192.0.2.10","port":80.5}"#,
        InvalidType,
        "port",
    ),
    (
        "port written as float",
        r#"{"protocol":"tcp","address":"192.0.2.10","port":80.0}"#,
        InvalidType,
        "port",
    ),
    (
        "port as boolean",
        r#"{"protocol":"tcp","address":"192.0.2.10","port":true}"#,
        InvalidType,
        "port",
    ),
    (
        "family against address",
        r#"{"protocol":"tcp","address":"192.0.2.10","port":80,"family":"ipv6"}"#,
        WrongFamily,
        "family",
    ),
    ("fwmark 0", r#"{"fwmark":0}"#, InvalidFwmark, "fwmark"),
    (
        "fwmark 2^32",
        r#"{"fwmark":4294967296}"#,
        InvalidFwmark,
        "fwmark",
    ),
    (
        "negative fwmark",
        r#"{"fwmark":-5}"#,
        InvalidFwmark,
        "fwmark",
    ),
    (
        "fwmark as string",
        r#"{"fwmark":"5"}"#,
        InvalidType,
        "fwmark",
    ),
    (
        "fwmark with address",
        r#"{"fwmark":5,"address":"192.0.2.10"}"#,
        ConflictingFields,
        "address",
    ),
    (
        "fwmark with protocol",
        r#"{"fwmark":5,"protocol":"udp"}"#,
        ConflictingFields,
        "protocol",
    ),
    (
        "fwmark with port",
        r#"{"fwmark":5,"port":80}"#,
        ConflictingFields,
        "port",
    ),
    (
        "unknown family",
        r#"{"fwmark":5,"family":"inet6"}"#,
        InvalidValue,
        "family",
    ),
    // -- scheduler and flags
    (
        "unknown scheduler",
        r#"{"protocol":"tcp","address":"192.0.2.10","port":80,"scheduler":"fancy"}"#,
        UnknownScheduler,
        "scheduler",
    ),
    (
        "upper-case scheduler",
        r#"{"protocol":"tcp","address":"192.0.2.10","port":80,"scheduler":"WRR"}"#,
        UnknownScheduler,
        "scheduler",
    ),
    (
        "empty scheduler",
        r#"{"protocol":"tcp","address":"192.0.2.10","port":80,"scheduler":""}"#,
        UnknownScheduler,
        "scheduler",
    ),
    (
        "scheduler none",
        r#"{"protocol":"tcp","address":"192.0.2.10","port":80,"scheduler":"none"}"#,
        UnknownScheduler,
        "scheduler",
    ),
    (
        "scheduler list",
        r#"{"protocol":"tcp","address":"192.0.2.10","port":80,"scheduler":["rr"]}"#,
        InvalidType,
        "scheduler",
    ),
    (
        "sh flag on wlc",
        r#"{"protocol":"tcp","address":"192.0.2.10","port":80,"flags":["sh-port"]}"#,
        FlagNotAllowed,
        "flags[0]",
    ),
    (
        "sh flag on mh",
        r#"{"protocol":"tcp","address":"192.0.2.10","port":80,"scheduler":"mh","flags":["mh-port","sh-fallback"]}"#,
        FlagNotAllowed,
        "flags[1]",
    ),
    (
        "mh flag on sh",
        r#"{"protocol":"tcp","address":"192.0.2.10","port":80,"scheduler":"sh","flags":["mh-fallback"]}"#,
        FlagNotAllowed,
        "flags[0]",
    ),
    (
        "one-packet on tcp",
        r#"{"protocol":"tcp","address":"192.0.2.10","port":80,"flags":["one-packet"]}"#,
        FlagNotAllowed,
        "flags[0]",
    ),
    (
        "one-packet on sctp",
        r#"{"protocol":"sctp","address":"192.0.2.10","port":80,"flags":["one-packet"]}"#,
        FlagNotAllowed,
        "flags[0]",
    ),
    (
        "unknown flag",
        r#"{"protocol":"tcp","address":"192.0.2.10","port":80,"flags":["persistent"]}"#,
        UnknownFlag,
        "flags[0]",
    ),
    (
        "ipvsadm's flag-1",
        r#"{"protocol":"tcp","address":"192.0.2.10","port":80,"flags":["flag-1"]}"#,
        UnknownFlag,
        "flags[0]",
    ),
    (
        "flags as string",
        r#"{"protocol":"tcp","address":"192.0.2.10","port":80,"flags":"sh-port"}"#,
        InvalidType,
        "flags",
    ),
    (
        "flag as number",
        r#"{"protocol":"tcp","address":"192.0.2.10","port":80,"flags":[4]}"#,
        InvalidType,
        "flags[0]",
    ),
    // -- persistence and engine
    (
        "persistence as number",
        r#"{"protocol":"tcp","address":"192.0.2.10","port":80,"persistence":300}"#,
        InvalidType,
        "persistence",
    ),
    (
        "timeout 0",
        r#"{"protocol":"tcp","address":"192.0.2.10","port":80,"persistence":{"timeout":0}}"#,
        InvalidTimeout,
        "persistence.timeout",
    ),
    (
        "timeout above 31 days",
        r#"{"protocol":"tcp","address":"192.0.2.10","port":80,"persistence":{"timeout":2678401}}"#,
        InvalidTimeout,
        "persistence.timeout",
    ),
    (
        "prefix on IPv4",
        r#"{"protocol":"tcp","address":"192.0.2.10","port":80,"persistence":{"netmask":24}}"#,
        WrongFamily,
        "persistence.netmask",
    ),
    (
        "dotted mask on IPv6",
        r#"{"protocol":"tcp","address":"2001:db8::10","port":80,"persistence":{"netmask":"255.255.255.0"}}"#,
        WrongFamily,
        "persistence.netmask",
    ),
    (
        "prefix on IPv4 fwmark",
        r#"{"fwmark":5,"persistence":{"netmask":24}}"#,
        WrongFamily,
        "persistence.netmask",
    ),
    (
        "mask on IPv6 fwmark",
        r#"{"fwmark":5,"family":"ipv6","persistence":{"netmask":"255.0.0.0"}}"#,
        WrongFamily,
        "persistence.netmask",
    ),
    (
        "IPv6 prefix 0",
        r#"{"protocol":"tcp","address":"2001:db8::10","port":80,"persistence":{"netmask":0}}"#,
        InvalidNetmask,
        "persistence.netmask",
    ),
    (
        "IPv6 prefix 129",
        r#"{"protocol":"tcp","address":"2001:db8::10","port":80,"persistence":{"netmask":129}}"#,
        InvalidNetmask,
        "persistence.netmask",
    ),
    (
        "IPv6 prefix fraction",
        r#"{"protocol":"tcp","address":"2001:db8::10","port":80,"persistence":{"netmask":64.5}}"#,
        InvalidNetmask,
        "persistence.netmask",
    ),
    (
        "bad dotted mask",
        r#"{"protocol":"tcp","address":"192.0.2.10","port":80,"persistence":{"netmask":"255.255.255.256"}}"#,
        InvalidNetmask,
        "persistence.netmask",
    ),
    (
        "prefix as string",
        r#"{"protocol":"tcp","address":"2001:db8::10","port":80,"persistence":{"netmask":"64"}}"#,
        InvalidNetmask,
        "persistence.netmask",
    ),
    (
        "netmask as boolean",
        r#"{"protocol":"tcp","address":"192.0.2.10","port":80,"persistence":{"netmask":true}}"#,
        InvalidType,
        "persistence.netmask",
    ),
    (
        "unknown engine",
        r#"{"protocol":"udp","address":"192.0.2.10","port":5060,"persistence":{},"pe":"ftp"}"#,
        UnknownPe,
        "pe",
    ),
    (
        "engine without persistence",
        r#"{"protocol":"udp","address":"192.0.2.10","port":5060,"pe":"sip"}"#,
        PeWithoutPersistence,
        "pe",
    ),
    // -- servers
    (
        "servers not a list",
        r#"{"protocol":"tcp","address":"192.0.2.10","port":80,"servers":{"address":"198.51.100.1"}}"#,
        InvalidType,
        "servers",
    ),
    (
        "server not an object",
        r#"{"protocol":"tcp","address":"192.0.2.10","port":80,"servers":["198.51.100.1:80"]}"#,
        InvalidType,
        "servers[0]",
    ),
    (
        "server without address",
        r#"{"protocol":"tcp","address":"192.0.2.10","port":80,"servers":[{"port":80}]}"#,
        MissingField,
        "servers[0].address",
    ),
    (
        "server bad address",
        r#"{"protocol":"tcp","address":"192.0.2.10","port":80,"servers":[{"address":"198.51.100"}]}"#,
        InvalidAddress,
        "servers[0].address",
    ),
    (
        "server multicast",
        r#"{"protocol":"tcp","address":"192.0.2.10","port":80,"servers":[{"address":"224.0.0.1"}]}"#,
        InvalidAddress,
        "servers[0].address",
    ),
    (
        "server 0.0.0.0",
        r#"{"protocol":"tcp","address":"192.0.2.10","port":80,"servers":[{"address":"0.0.0.0"}]}"#,
        InvalidAddress,
        "servers[0].address",
    ),
    (
        "server broadcast",
        r#"{"protocol":"tcp","address":"192.0.2.10","port":80,"servers":[{"address":"255.255.255.255"}]}"#,
        InvalidAddress,
        "servers[0].address",
    ),
    (
        "server link-local",
        r#"{"protocol":"tcp","address":"2001:db8::10","port":80,"servers":[{"address":"fe80::1"}]}"#,
        InvalidAddress,
        "servers[0].address",
    ),
    (
        "server v4-mapped",
        r#"{"protocol":"tcp","address":"2001:db8::10","port":80,"servers":[{"address":"::ffff:198.51.100.1"}]}"#,
        InvalidAddress,
        "servers[0].address",
    ),
    (
        "IPv6 server, masq",
        r#"{"protocol":"tcp","address":"192.0.2.10","port":80,"servers":[{"address":"2001:db8::11"}]}"#,
        WrongFamily,
        "servers[0].address",
    ),
    (
        "IPv4 server on IPv6, dr",
        r#"{"protocol":"tcp","address":"2001:db8::10","port":80,"servers":[{"address":"198.51.100.1","forward":"dr"}]}"#,
        WrongFamily,
        "servers[0].address",
    ),
    (
        "IPv6 server on IPv4 fwmark",
        r#"{"fwmark":1,"servers":[{"address":"2001:db8::11"}]}"#,
        WrongFamily,
        "servers[0].address",
    ),
    (
        "server port 65536",
        r#"{"protocol":"tcp","address":"192.0.2.10","port":80,"servers":[{"address":"198.51.100.1","port":65536}]}"#,
        InvalidPort,
        "servers[0].port",
    ),
    (
        "negative weight",
        r#"{"protocol":"tcp","address":"192.0.2.10","port":80,"servers":[{"address":"198.51.100.1","weight":-1}]}"#,
        InvalidWeight,
        "servers[0].weight",
    ),
    (
        "weight above int",
        r#"{"protocol":"tcp","address":"192.0.2.10","port":80,"servers":[{"address":"198.51.100.1","weight":2147483648}]}"#,
        InvalidWeight,
        "servers[0].weight",
    ),
    (
        "weight as string",
        r#"{"protocol":"tcp","address":"192.0.2.10","port":80,"servers":[{"address":"198.51.100.1","weight":"3"}]}"#,
        InvalidType,
        "servers[0].weight",
    ),
    (
        "lower above upper",
        r#"{"protocol":"tcp","address":"192.0.2.10","port":80,"servers":[{"address":"198.51.100.1","upper_threshold":5,"lower_threshold":10}]}"#,
        InvalidThreshold,
        "servers[0].lower_threshold",
    ),
    (
        "lower with upper 0",
        r#"{"protocol":"tcp","address":"192.0.2.10","port":80,"servers":[{"address":"198.51.100.1","lower_threshold":10}]}"#,
        InvalidThreshold,
        "servers[0].lower_threshold",
    ),
    (
        "negative threshold",
        r#"{"protocol":"tcp","address":"192.0.2.10","port":80,"servers":[{"address":"198.51.100.1","upper_threshold":-1}]}"#,
        InvalidThreshold,
        "servers[0].upper_threshold",
    ),
    (
        "threshold above u32",
        r#"{"protocol":"tcp","address":"192.0.2.10","port":80,"servers":[{"address":"198.51.100.1","upper_threshold":4294967296}]}"#,
        InvalidThreshold,
        "servers[0].upper_threshold",
    ),
    (
        "unknown forward",
        r#"{"protocol":"tcp","address":"192.0.2.10","port":80,"servers":[{"address":"198.51.100.1","forward":"nat"}]}"#,
        InvalidValue,
        "servers[0].forward",
    ),
    (
        "forward local",
        r#"{"protocol":"tcp","address":"192.0.2.10","port":80,"servers":[{"address":"198.51.100.1","forward":"local"}]}"#,
        InvalidValue,
        "servers[0].forward",
    ),
    (
        "tunnel with masq",
        r#"{"protocol":"tcp","address":"192.0.2.10","port":80,"servers":[{"address":"198.51.100.1","forward":"masq","tunnel":{"type":"ipip"}}]}"#,
        TunnelNotAllowed,
        "servers[0].tunnel",
    ),
    (
        "tunnel with dr",
        r#"{"protocol":"tcp","address":"192.0.2.10","port":80,"servers":[{"address":"198.51.100.1","forward":"dr","tunnel":{}}]}"#,
        TunnelNotAllowed,
        "servers[0].tunnel",
    ),
    (
        "tunnel, forward left out",
        r#"{"protocol":"tcp","address":"192.0.2.10","port":80,"servers":[{"address":"198.51.100.1","tunnel":{"type":"gue","port":6080}}]}"#,
        TunnelNotAllowed,
        "servers[0].tunnel",
    ),
    (
        "tunnel not an object",
        r#"{"protocol":"tcp","address":"192.0.2.10","port":80,"servers":[{"address":"198.51.100.1","forward":"tunnel","tunnel":"gue"}]}"#,
        InvalidType,
        "servers[0].tunnel",
    ),
    (
        "gue without port",
        r#"{"protocol":"tcp","address":"192.0.2.10","port":80,"servers":[{"address":"198.51.100.1","forward":"tunnel","tunnel":{"type":"gue"}}]}"#,
        TunnelPortRequired,
        "servers[0].tunnel.port",
    ),
    (
        "gue port 0",
        r#"{"protocol":"tcp","address":"192.0.2.10","port":80,"servers":[{"address":"198.51.100.1","forward":"tunnel","tunnel":{"type":"gue","port":0}}]}"#,
        TunnelPortRequired,
        "servers[0].tunnel.port",
    ),
    (
        "gue port 65536",
        r#"{"protocol":"tcp","address":"192.0.2.10","port":80,"servers":[{"address":"198.51.100.1","forward":"tunnel","tunnel":{"type":"gue","port":65536}}]}"#,
        InvalidPort,
        "servers[0].tunnel.port",
    ),
    (
        "ipip with port",
        r#"{"protocol":"tcp","address":"192.0.2.10","port":80,"servers":[{"address":"198.51.100.1","forward":"tunnel","tunnel":{"type":"ipip","port":6080}}]}"#,
        TunnelOptionNotAllowed,
        "servers[0].tunnel.port",
    ),
    (
        "gre with port",
        r#"{"protocol":"tcp","address":"192.0.2.10","port":80,"servers":[{"address":"198.51.100.1","forward":"tunnel","tunnel":{"type":"gre","port":6080}}]}"#,
        TunnelOptionNotAllowed,
        "servers[0].tunnel.port",
    ),
    (
        "ipip with csum",
        r#"{"protocol":"tcp","address":"192.0.2.10","port":80,"servers":[{"address":"198.51.100.1","forward":"tunnel","tunnel":{"checksum":"csum"}}]}"#,
        TunnelOptionNotAllowed,
        "servers[0].tunnel.checksum",
    ),
    (
        "gre with remcsum",
        r#"{"protocol":"tcp","address":"192.0.2.10","port":80,"servers":[{"address":"198.51.100.1","forward":"tunnel","tunnel":{"type":"gre","checksum":"remcsum"}}]}"#,
        TunnelOptionNotAllowed,
        "servers[0].tunnel.checksum",
    ),
    (
        "unknown tunnel type",
        r#"{"protocol":"tcp","address":"192.0.2.10","port":80,"servers":[{"address":"198.51.100.1","forward":"tunnel","tunnel":{"type":"vxlan"}}]}"#,
        InvalidValue,
        "servers[0].tunnel.type",
    ),
    (
        "unknown checksum",
        r#"{"protocol":"tcp","address":"192.0.2.10","port":80,"servers":[{"address":"198.51.100.1","forward":"tunnel","tunnel":{"type":"gue","port":6080,"checksum":"nocsum"}}]}"#,
        InvalidValue,
        "servers[0].tunnel.checksum",
    ),
    (
        "server twice",
        r#"{"protocol":"tcp","address":"192.0.2.10","port":80,"servers":[{"address":"198.51.100.1"},{"address":"198.51.100.2"},{"address":"198.51.100.1","port":80,"weight":5}]}"#,
        Duplicate,
        "servers[2]",
    ),
    (
        "server twice, IPv6 spelt two ways",
        r#"{"protocol":"tcp","address":"2001:db8::10","port":80,"servers":[{"address":"2001:db8::1"},{"address":"2001:DB8:0::1"}]}"#,
        Duplicate,
        "servers[1]",
    ),
    // -- read-only fields
    (
        "id of another service",
        r#"{"id":"tcp-192.0.2.10-81","protocol":"tcp","address":"192.0.2.10","port":80}"#,
        IdentityMismatch,
        "id",
    ),
    (
        "id not a string",
        r#"{"id":5,"protocol":"tcp","address":"192.0.2.10","port":80}"#,
        InvalidType,
        "id",
    ),
    (
        "negative revision",
        r#"{"revision":-1,"protocol":"tcp","address":"192.0.2.10","port":80}"#,
        InvalidValue,
        "revision",
    ),
    (
        "server id of another server",
        r#"{"protocol":"tcp","address":"192.0.2.10","port":80,"servers":[{"id":"198.51.100.1-8080","address":"198.51.100.1"}]}"#,
        IdentityMismatch,
        "servers[0].id",
    ),
    // -- health checks
    (
        "fallback that is one of the servers",
        r#"{"protocol":"tcp","address":"192.0.2.10","port":80,"servers":[{"address":"198.51.100.9"}],"health_policy":{"all_down":"fallback","fallback":{"address":"198.51.100.9"}}}"#,
        InvalidValue,
        "health_policy.fallback",
    ),
    (
        "fwmark check without a port",
        r#"{"fwmark":7,"health_check":{"kind":"tcp"}}"#,
        MissingField,
        "health_check.port",
    ),
    (
        "portless server check without a port",
        r#"{"fwmark":7,"servers":[{"address":"198.51.100.1","health_check":{"kind":"tcp"}}]}"#,
        MissingField,
        "servers[0].health_check.port",
    ),
    (
        "unknown check kind",
        r#"{"protocol":"tcp","address":"192.0.2.10","port":80,"health_check":{"kind":"icmp"}}"#,
        InvalidValue,
        "health_check.kind",
    ),
    (
        "check without kind",
        r#"{"protocol":"tcp","address":"192.0.2.10","port":80,"health_check":{"interval":2}}"#,
        MissingField,
        "health_check.kind",
    ),
    (
        "timeout not below interval",
        r#"{"protocol":"tcp","address":"192.0.2.10","port":80,"health_check":{"kind":"tcp","interval":1,"timeout":1}}"#,
        InvalidValue,
        "health_check.timeout",
    ),
    (
        "interval of 0",
        r#"{"protocol":"tcp","address":"192.0.2.10","port":80,"health_check":{"kind":"tcp","interval":0}}"#,
        InvalidValue,
        "health_check.interval",
    ),
    (
        "interval as a string",
        r#"{"protocol":"tcp","address":"192.0.2.10","port":80,"health_check":{"kind":"tcp","interval":"2s"}}"#,
        InvalidType,
        "health_check.interval",
    ),
    (
        "rise of 0",
        r#"{"protocol":"tcp","address":"192.0.2.10","port":80,"health_check":{"kind":"tcp","rise":0}}"#,
        InvalidValue,
        "health_check.rise",
    ),
    (
        "fall of 0",
        r#"{"protocol":"tcp","address":"192.0.2.10","port":80,"health_check":{"kind":"tcp","fall":0}}"#,
        InvalidValue,
        "health_check.fall",
    ),
    (
        "path without http",
        r#"{"protocol":"tcp","address":"192.0.2.10","port":80,"health_check":{"kind":"tcp","path":"/"}}"#,
        InvalidValue,
        "health_check.path",
    ),
    (
        "path without a slash",
        r#"{"protocol":"tcp","address":"192.0.2.10","port":80,"health_check":{"kind":"http","path":"health"}}"#,
        InvalidValue,
        "health_check.path",
    ),
    (
        "status out of range",
        r#"{"protocol":"tcp","address":"192.0.2.10","port":80,"health_check":{"kind":"http","expect":[200,700]}}"#,
        InvalidValue,
        "health_check.expect[1]",
    ),
    (
        "dns without a name",
        r#"{"protocol":"tcp","address":"192.0.2.10","port":80,"health_check":{"kind":"dns"}}"#,
        MissingField,
        "health_check.payload",
    ),
    (
        "payload on tcp",
        r#"{"protocol":"tcp","address":"192.0.2.10","port":80,"health_check":{"kind":"tcp","payload":"x"}}"#,
        InvalidValue,
        "health_check.payload",
    ),
    (
        "unknown check field",
        r#"{"protocol":"tcp","address":"192.0.2.10","port":80,"health_check":{"kind":"tcp","intervall":2}}"#,
        UnknownField,
        "health_check.intervall",
    ),
    (
        "server check",
        r#"{"protocol":"tcp","address":"192.0.2.10","port":80,"servers":[{"address":"198.51.100.1","health_check":{"kind":"http","method":"POST"}}]}"#,
        InvalidValue,
        "servers[0].health_check.method",
    ),
    (
        "fallback policy without a server",
        r#"{"protocol":"tcp","address":"192.0.2.10","port":80,"health_policy":{"all_down":"fallback"}}"#,
        MissingField,
        "health_policy.fallback",
    ),
    (
        "fallback server without the policy",
        r#"{"protocol":"tcp","address":"192.0.2.10","port":80,"health_policy":{"fallback":{"address":"198.51.100.9"}}}"#,
        InvalidValue,
        "health_policy.fallback",
    ),
    (
        "withdrawing with a fallback server",
        r#"{"protocol":"tcp","address":"192.0.2.10","port":80,"health_policy":{"all_down":"withdraw","fallback":{"address":"198.51.100.9"}}}"#,
        InvalidValue,
        "health_policy.fallback",
    ),
    (
        "bad fallback server",
        r#"{"protocol":"tcp","address":"192.0.2.10","port":80,"health_policy":{"all_down":"fallback","fallback":{"address":"224.0.0.1"}}}"#,
        InvalidAddress,
        "health_policy.fallback.address",
    ),
    (
        "unknown unhealthy action",
        r#"{"protocol":"tcp","address":"192.0.2.10","port":80,"health_policy":{"unhealthy":"drop"}}"#,
        InvalidValue,
        "health_policy.unhealthy",
    ),
];

#[test]
fn every_bad_service_is_refused_with_its_code_and_field() {
    for (name, body, code, field) in BAD_SERVICES {
        let err = match parse_service_create(body.as_bytes()) {
            Ok(spec) => panic!("{name}: accepted {spec:?}"),
            Err(e) => e,
        };
        let want = (*code, (!field.is_empty()).then(|| field.to_string()));
        assert_eq!(problems(&err), vec![want], "{name}: {err}");
        assert_eq!(err.status(), 400, "{name}");
        assert!(!err.message().is_empty(), "{name}");
    }
}

#[test]
fn malformed_json_says_where() {
    let err =
        parse_service_create(b"{\n  \"protocol\": \"tcp\",\n  \"port\": 80,,\n}").unwrap_err();
    assert_eq!(err.code(), MalformedJson);
    assert!(
        err.message().contains("line 3, column 14"),
        "{}",
        err.message()
    );
    let err = parse_service_create(br#"{"port":80,"port":81}"#).unwrap_err();
    assert!(err.message().contains("line 1"), "{}", err.message());
}

#[test]
fn unknown_fields_are_named_with_a_suggestion() {
    let err = parse_service_create(
        br#"{"protocol":"tcp","address":"192.0.2.10","port":80,"shceduler":"rr"}"#,
    )
    .unwrap_err();
    assert_eq!(err.field(), Some("shceduler"));
    assert!(
        err.message().contains("did you mean `scheduler`?"),
        "{}",
        err.message()
    );
    let err = parse_service_create(
        br#"{"protocol":"tcp","address":"192.0.2.10","port":80,"zzzzzzzzzzzz":1}"#,
    )
    .unwrap_err();
    assert!(!err.message().contains("did you mean"), "{}", err.message());
}

#[test]
fn errors_quote_what_was_sent_cut_short() {
    let long = "k".repeat(100_000);
    for body in [
        format!(r#"{{"protocol":"tcp","address":"192.0.2.10","port":80,"{long}":1}}"#),
        format!(r#"{{"protocol":"{long}","address":"192.0.2.10","port":80}}"#),
        format!(r#"{{"protocol":"tcp","address":"192.0.2.10","port":80,"{long}":1,"{long}":2}}"#),
    ] {
        let err = parse_service_create(body.as_bytes()).unwrap_err();
        assert!(err.to_json().len() < 1000, "{err}");
    }
}

#[test]
fn deep_nesting_and_bad_bytes_are_malformed_not_a_crash() {
    let deep = format!("{}{}", "[".repeat(100_000), "]".repeat(100_000));
    assert_eq!(
        parse_service_create(deep.as_bytes()).unwrap_err().code(),
        MalformedJson
    );
    let deep = format!("{{\"servers\":{}1{}}}", "[".repeat(5000), "]".repeat(5000));
    assert_eq!(
        parse_service_create(deep.as_bytes()).unwrap_err().code(),
        MalformedJson
    );
    let bytes = b"{\"protocol\":\"tcp\xff\",\"address\":\"192.0.2.10\",\"port\":80}";
    assert_eq!(
        parse_service_create(bytes).unwrap_err().code(),
        MalformedJson
    );
}

#[test]
fn oversized_bodies_are_413_with_the_limit() {
    let big = format!(
        r#"{{"protocol":"tcp","address":"192.0.2.10","port":80,"id":"{}"}}"#,
        "x".repeat(MAX_BODY_BYTES)
    );
    let err = parse_service_create(big.as_bytes()).unwrap_err();
    assert_eq!((err.code(), err.status()), (BodyTooLarge, 413));
    assert!(err.message().contains(&MAX_BODY_BYTES.to_string()));
    // The configuration has a larger limit of its own.
    let services: Vec<String> = (0..20000)
        .map(|i| {
            format!(
                r#"{{"protocol":"tcp","address":"192.0.2.10","port":{},"scheduler":"rr"}}"#,
                i + 1
            )
        })
        .collect();
    let body = format!(r#"{{"services":[{}]}}"#, services.join(","));
    assert!(body.len() > MAX_BODY_BYTES && body.len() < MAX_CONFIG_BODY_BYTES);
    assert_eq!(parse_config(body.as_bytes()).unwrap().len(), 20000);
    let err = parse_config(&vec![b' '; MAX_CONFIG_BODY_BYTES + 1]).unwrap_err();
    assert_eq!(err.status(), 413);
}

#[test]
fn every_problem_is_listed_first_one_on_top() {
    let body = br#"{"protocol":"tcp","address":"192.0.2.10","port":70000,"scheduler":"fancy",
        "servers":[{"address":"198.51.100.1","weight":-1},{"address":"x"}]}"#;
    let err = parse_service_create(body).unwrap_err();
    assert_eq!(
        problems(&err),
        vec![
            (InvalidPort, Some("port".into())),
            (UnknownScheduler, Some("scheduler".into())),
            (InvalidWeight, Some("servers[0].weight".into())),
            (InvalidAddress, Some("servers[1].address".into())),
        ]
    );
    assert_eq!(err.field(), Some("port"));
    let body = err.body();
    assert_eq!(body.error.details.len(), 4);
    assert!(
        body.error.message.contains("and 3 more problems"),
        "{}",
        body.error.message
    );
}

#[test]
fn no_identity_names_every_missing_field() {
    let err = parse_service_create(br#"{"scheduler":"rr"}"#).unwrap_err();
    assert_eq!(
        problems(&err),
        vec![
            (MissingField, Some("protocol".into())),
            (MissingField, Some("address".into())),
            (MissingField, Some("port".into())),
        ]
    );
    assert!(err.message().contains("or fwmark"), "{}", err.message());
}

#[test]
fn problems_beyond_the_cap_are_counted_not_listed() {
    let servers: Vec<String> = (0..300)
        .map(|i| format!(r#"{{"address":"198.51.100.{}","weight":-1}}"#, i % 250 + 1))
        .collect();
    let body = format!(
        r#"{{"protocol":"tcp","address":"192.0.2.10","port":80,"servers":[{}]}}"#,
        servers.join(",")
    );
    let err = parse_service_create(body.as_bytes()).unwrap_err();
    assert_eq!(err.details().len(), crate::api::error::MAX_DETAILS);
    assert!(err.body().error.message.contains("not listed"));
}

#[test]
fn no_cascade_from_a_bad_value_into_the_rules_that_use_it() {
    // A bad scheduler is not then used to judge the flags, nor a bad
    // forward method to judge the family of the server.
    let err = parse_service_create(
        br#"{"protocol":"tcp","address":"192.0.2.10","port":80,"scheduler":"x","flags":["sh-port"]}"#,
    )
    .unwrap_err();
    assert_eq!(
        problems(&err),
        vec![(UnknownScheduler, Some("scheduler".into()))]
    );
    let err = parse_service_create(
        br#"{"protocol":"tcp","address":"192.0.2.10","port":80,"servers":[{"address":"2001:db8::1","forward":"x"}]}"#,
    )
    .unwrap_err();
    assert_eq!(
        problems(&err),
        vec![(InvalidValue, Some("servers[0].forward".into()))]
    );
    // Nor is a bad identity used to judge the servers.
    let err = parse_service_create(
        br#"{"protocol":"tcp","address":"nowhere","port":80,"servers":[{"address":"2001:db8::1"}]}"#,
    )
    .unwrap_err();
    assert_eq!(
        problems(&err),
        vec![(InvalidAddress, Some("address".into()))]
    );
}

fn service(body: &str) -> ServiceSpec {
    parse_service_create(body.as_bytes()).unwrap_or_else(|e| panic!("{body}: {e}"))
}

#[test]
fn defaults() {
    let spec = service(
        r#"{"protocol":"tcp","address":"192.0.2.10","port":80,"servers":[{"address":"198.51.100.11"}]}"#,
    );
    assert_eq!(spec.service, VirtualService::new(tcp("192.0.2.10", 80)));
    assert_eq!(spec.service.scheduler, Scheduler::new("wlc").unwrap());
    // The server's port is the service's, as ipvsadm's `-r addr`.
    assert_eq!(spec.servers, vec![dest("198.51.100.11", 80)]);
    let d = spec.servers[0];
    assert_eq!(
        (d.weight, d.forward, d.upper_threshold, d.lower_threshold),
        (1, Forward::Masq, 0, 0)
    );

    // Nulls are absent fields.
    let nulls = service(
        r#"{"protocol":"tcp","address":"192.0.2.10","port":80,"scheduler":null,"persistence":null,
            "flags":null,"pe":null,"servers":null,"id":null,"revision":null,"fwmark":null,"family":null}"#,
    );
    assert_eq!(nulls.service, VirtualService::new(tcp("192.0.2.10", 80)));
    assert!(nulls.servers.is_empty());

    // Persistence: 360 s, host mask of the family.
    let p = service(r#"{"protocol":"tcp","address":"192.0.2.10","port":443,"persistence":{}}"#);
    assert_eq!(
        p.service.persistence,
        Some(Persistence {
            timeout: 360,
            netmask: Netmask::V4(Ipv4Addr::BROADCAST)
        })
    );
    let p = service(
        r#"{"protocol":"tcp","address":"2001:db8::10","port":443,"persistence":{"timeout":60}}"#,
    );
    assert_eq!(
        p.service.persistence,
        Some(Persistence {
            timeout: 60,
            netmask: Netmask::V6(128)
        })
    );

    // A fwmark service is IPv4 unless told; its servers' port is 0.
    let f = service(r#"{"fwmark":5,"servers":[{"address":"198.51.100.11"}]}"#);
    assert_eq!(f.service.key, fwmark(Family::Ipv4, 5));
    assert_eq!(f.servers[0].port, 0);

    // Tunnel forwarding without options is ipip.
    let t = service(
        r#"{"protocol":"tcp","address":"192.0.2.10","port":80,"servers":[{"address":"198.51.100.11","forward":"tunnel"}]}"#,
    );
    assert_eq!(t.servers[0].forward, Forward::Tunnel(Tunnel::default()));
    let t = service(
        r#"{"protocol":"tcp","address":"192.0.2.10","port":80,"servers":[{"address":"198.51.100.11","forward":"tunnel","tunnel":{}}]}"#,
    );
    assert_eq!(t.servers[0].forward, Forward::Tunnel(Tunnel::default()));
}

#[test]
fn everything_set() {
    let spec = service(
        r#"{"protocol":"udp","address":"2001:db8::53","port":5060,"scheduler":"sh",
            "flags":["one-packet","sh-fallback","sh-port","sh-port"],
            "persistence":{"timeout":2678400,"netmask":64},"pe":"sip",
            "servers":[
              {"address":"2001:db8::11","port":5061,"weight":2147483647,"forward":"dr",
               "upper_threshold":2147483647,"lower_threshold":2147483647},
              {"address":"198.51.100.12","weight":0,"forward":"tunnel",
               "tunnel":{"type":"gue","port":6080,"checksum":"remcsum"}},
              {"address":"198.51.100.13","forward":"tunnel","tunnel":{"type":"gre","checksum":"csum","port":null}},
              {"address":"198.51.100.14","forward":"tunnel","tunnel":{"type":"ipip","checksum":"none","port":0}}
            ]}"#,
    );
    let s = &spec.service;
    assert_eq!(s.key.family(), Family::Ipv6);
    assert_eq!(s.scheduler.as_str(), "sh");
    assert_eq!(
        s.flags,
        ServiceFlags::default()
            .with(ServiceFlags::ONE_PACKET)
            .with(ServiceFlags::SCHED1)
            .with(ServiceFlags::SCHED2)
    );
    assert_eq!(
        s.persistence,
        Some(Persistence {
            timeout: 2678400,
            netmask: Netmask::V6(64)
        })
    );
    assert_eq!(s.pe_name.as_deref(), Some("sip"));
    let [a, b, c, d] = spec.servers[..] else {
        panic!("{:?}", spec.servers)
    };
    assert_eq!(
        (
            a.port,
            a.weight,
            a.forward,
            a.upper_threshold,
            a.lower_threshold
        ),
        (
            5061,
            i32::MAX as u32,
            Forward::Route,
            i32::MAX as u32,
            i32::MAX as u32
        )
    );
    let tunnel = |kind, port, checksum| {
        Forward::Tunnel(Tunnel {
            kind,
            port,
            checksum,
        })
    };
    assert_eq!(
        (b.weight, b.forward),
        (0, tunnel(TunnelType::Gue, 6080, TunnelChecksum::RemCsum))
    );
    assert_eq!(c.forward, tunnel(TunnelType::Gre, 0, TunnelChecksum::Csum));
    assert_eq!(d.forward, tunnel(TunnelType::Ipip, 0, TunnelChecksum::None));
}

#[test]
fn accepted_at_the_edges() {
    for body in [
        // port 0 with persistence: every port of the address (ipvsadm allows it)
        r#"{"protocol":"tcp","address":"192.0.2.10","port":0,"persistence":{}}"#,
        r#"{"protocol":"tcp","address":"192.0.2.10","port":65535}"#,
        r#"{"fwmark":4294967295,"family":"ipv6"}"#,
        r#"{"fwmark":1,"flags":["one-packet"]}"#,
        r#"{"protocol":"udp","address":"192.0.2.10","port":53,"flags":["one-packet"]}"#,
        r#"{"protocol":"tcp","address":"192.0.2.10","port":80,"scheduler":"mh","flags":["mh-port","mh-fallback"]}"#,
        r#"{"protocol":"tcp","address":"192.0.2.10","port":80,"family":"ipv4"}"#,
        r#"{"protocol":"tcp","address":"192.0.2.10","port":80,"persistence":{"timeout":1,"netmask":"0.0.0.0"}}"#,
        r#"{"protocol":"tcp","address":"2001:db8::10","port":80,"persistence":{"netmask":1}}"#,
        // a mixed-family server with tunnel forwarding, either way round
        r#"{"protocol":"tcp","address":"192.0.2.10","port":80,"servers":[{"address":"2001:db8::11","forward":"tunnel"}]}"#,
        r#"{"protocol":"tcp","address":"2001:db8::10","port":80,"servers":[{"address":"198.51.100.1","forward":"tunnel","tunnel":{"type":"gue","port":1}}]}"#,
        // a server port of 0, and one other than the service's with dr
        r#"{"protocol":"tcp","address":"192.0.2.10","port":80,"servers":[{"address":"198.51.100.1","port":0},{"address":"198.51.100.2","port":8080,"forward":"dr"}]}"#,
        // equal thresholds, and a lower one of 0 under any upper one
        r#"{"protocol":"tcp","address":"192.0.2.10","port":80,"servers":[{"address":"198.51.100.1","upper_threshold":0,"lower_threshold":0},{"address":"198.51.100.2","upper_threshold":7,"lower_threshold":7}]}"#,
        // the ids a GET returns
        r#"{"id":"tcp-192.0.2.10-80","revision":7,"protocol":"tcp","address":"192.0.2.10","port":80,"servers":[{"id":"198.51.100.1-80","address":"198.51.100.1"}]}"#,
        r#"{"id":"udp-2001_db8__10-53","protocol":"udp","address":"2001:db8::10","port":53}"#,
        // every scheduler
        r#"{"protocol":"tcp","address":"192.0.2.10","port":80,"scheduler":"twos"}"#,
        // whitespace and a BOM-free UTF-8 body with escapes
        "\n\t{ \"protocol\" : \"t\\u0063p\" , \"address\" : \"192.0.2.10\" , \"port\" : 80 }\n",
    ] {
        service(body);
    }
    for name in Scheduler::KNOWN {
        service(&format!(
            r#"{{"protocol":"tcp","address":"192.0.2.10","port":80,"scheduler":"{name}"}}"#
        ));
    }
}

#[test]
fn servers_alone() {
    let key = tcp("192.0.2.10", 80);
    let d = parse_server_create(br#"{"address":"198.51.100.11","weight":3}"#, &key).unwrap();
    assert_eq!(
        d,
        (
            Destination {
                weight: 3,
                ..dest("198.51.100.11", 80)
            },
            None
        )
    );
    let v6 = tcp("2001:db8::10", 443);
    for (body, code, field) in [
        (r#"{"address":"198.51.100.11"}"#, WrongFamily, "address"),
        (r#"{"port":8080}"#, MissingField, "address"),
        (
            r#"{"address":"2001:db8::11","weight":-3}"#,
            InvalidWeight,
            "weight",
        ),
        (
            r#"{"address":"2001:db8::11","tunnel":{"type":"gue"}}"#,
            TunnelNotAllowed,
            "tunnel",
        ),
        (
            r#"{"address":"2001:db8::11","forward":"tunnel","tunnel":{"type":"gue"}}"#,
            TunnelPortRequired,
            "tunnel.port",
        ),
        (
            r#"{"address":"2001:db8::11","upper_threshold":1,"lower_threshold":2}"#,
            InvalidThreshold,
            "lower_threshold",
        ),
        (
            r#"{"address":"2001:db8::11","id":"2001_db8__11-80"}"#,
            IdentityMismatch,
            "id",
        ),
        (r#"[]"#, InvalidType, ""),
    ] {
        let err = parse_server_create(body.as_bytes(), &v6).unwrap_err();
        let want = (code, (!field.is_empty()).then(|| field.to_string()));
        assert_eq!(problems(&err), vec![want], "{body}");
    }
    let d = parse_server_create(
        br#"{"address":"2001:db8::11","id":"2001_db8__11-443"}"#,
        &v6,
    )
    .unwrap();
    assert_eq!(d.0.port, 443);
}

#[test]
fn configurations() {
    assert_eq!(parse_config(br#"{"services":[]}"#).unwrap(), vec![]);
    let specs = parse_config(
        br#"{"services":[{"fwmark":1},{"protocol":"tcp","address":"192.0.2.10","port":80,"servers":[{"address":"198.51.100.1"}]}]}"#,
    )
    .unwrap();
    assert_eq!(specs.len(), 2);
    for (body, code, field) in [
        (r#"[]"#, InvalidType, ""),
        (r#"{}"#, MissingField, "services"),
        (r#"{"services":null}"#, MissingField, "services"),
        (r#"{"services":{}}"#, InvalidType, "services"),
        (r#"{"services":[],"version":2}"#, UnknownField, "version"),
        (r#"{"services":[1]}"#, InvalidType, "services[0]"),
        (
            r#"{"services":[{"fwmark":1},{"fwmark":2},{"fwmark":1,"family":"ipv4","scheduler":"rr"}]}"#,
            Duplicate,
            "services[2]",
        ),
        (
            r#"{"services":[{"fwmark":1},{"fwmark":2,"servers":[{"address":"198.51.100.1","weight":-1}]}]}"#,
            InvalidWeight,
            "services[1].servers[0].weight",
        ),
        (
            r#"{"services":[{"protocol":"tcp","address":"192.0.2.10","port":80,"servers":[{"address":"198.51.100.1","tunnel":{}}]}]}"#,
            TunnelNotAllowed,
            "services[0].servers[0].tunnel",
        ),
        (
            r#"{"services":[{"fwmark":1,"persistence":{"netmask":"x"}}]}"#,
            InvalidNetmask,
            "services[0].persistence.netmask",
        ),
    ] {
        let err = parse_config(body.as_bytes()).unwrap_err();
        let want = (code, (!field.is_empty()).then(|| field.to_string()));
        assert_eq!(problems(&err), vec![want], "{body}");
    }
    // fwmark 1 IPv4 and IPv6 are two services.
    parse_config(br#"{"services":[{"fwmark":1},{"fwmark":1,"family":"ipv6"}]}"#).unwrap();
}

#[test]
fn join_requests() {
    let j = parse_join(br#"{"id":"node2","raft_addr":"127.0.0.1:1112","api_addr":"[::1]:2222"}"#)
        .unwrap();
    assert_eq!(
        (j.id.as_str(), j.raft_addr.as_str(), j.api_addr.as_str()),
        ("node2", "127.0.0.1:1112", "[::1]:2222")
    );
    for (body, code, field) in [
        (
            r#"{"raft_addr":"127.0.0.1:1112","api_addr":"127.0.0.1:2222"}"#,
            MissingField,
            "id",
        ),
        (
            r#"{"id":"a b","raft_addr":"127.0.0.1:1112","api_addr":"127.0.0.1:2222"}"#,
            InvalidValue,
            "id",
        ),
        (
            r#"{"id":"n","raft_addr":"localhost:1112","api_addr":"127.0.0.1:2222"}"#,
            InvalidAddress,
            "raft_addr",
        ),
        (
            r#"{"id":"n","raft_addr":"127.0.0.1:1112","api_addr":"0.0.0.0:2222"}"#,
            InvalidAddress,
            "api_addr",
        ),
        (
            r#"{"id":"n","raft_addr":"127.0.0.1:0","api_addr":"127.0.0.1:2222"}"#,
            InvalidAddress,
            "raft_addr",
        ),
        (
            r#"{"id":"n","raft_addr":"127.0.0.1:1","api_addr":"127.0.0.1:2","voter":true}"#,
            UnknownField,
            "voter",
        ),
    ] {
        let err = parse_join(body.as_bytes()).unwrap_err();
        let want = (code, Some(field.to_string()));
        assert_eq!(problems(&err), vec![want], "{body}");
    }
}

#[test]
fn health_checks_and_policies() {
    let spec = service(
        r#"{"protocol":"tcp","address":"192.0.2.10","port":80,
            "health_check":{"kind":"http","interval":0.5,"timeout":0.25,"path":"/ready","expect":[200,204],"host":"web"},
            "health_policy":{"unhealthy":"remove","slow_start":10,"all_down":"fallback","fallback":{"address":"198.51.100.9"}},
            "servers":[{"address":"198.51.100.1","health_check":{"kind":"tcp","port":9000}},{"address":"198.51.100.2"}]}"#,
    );
    let check = spec.options.health_check.expect("a check");
    assert_eq!((check.interval_ms, check.timeout_ms), (500, 250));
    assert_eq!((check.rise, check.fall), (2, 3));
    let http = check.http.expect("http");
    assert_eq!(
        (http.method.as_str(), http.path.as_str()),
        ("GET", "/ready")
    );
    assert_eq!(http.expect, vec![200, 204]);
    let policy = spec.options.health_policy;
    assert!(policy.remove_unhealthy);
    assert_eq!(policy.slow_start_ms, 10_000);
    assert_eq!(policy.fallback.map(|d| d.port), Some(80));
    assert_eq!(spec.server_checks.len(), 1);
    let own = spec.server_checks.values().next().expect("own check");
    assert_eq!((own.port, own.interval_ms), (Some(9000), 2000));
    // A firewall-mark service's check names its port.
    let fw = service(r#"{"fwmark":7,"health_check":{"kind":"tcp","port":80}}"#);
    assert_eq!(fw.options.health_check.and_then(|c| c.port), Some(80));
    // Withdrawing the address when all are down, shown as it was given.
    let spec = service(
        r#"{"protocol":"tcp","address":"192.0.2.10","port":80,"health_policy":{"all_down":"withdraw"}}"#,
    );
    assert!(spec.options.health_policy.withdraw);
    assert_eq!(spec.options.health_policy.fallback, None);
    let shown = crate::api::view::policy_view(&spec.options.health_policy);
    assert_eq!(shown.unwrap()["all_down"], "withdraw");
}

#[test]
fn a_server_added_later_must_not_be_the_fallback() {
    let spec = parse_service_create(
        br#"{"protocol":"tcp","address":"192.0.2.10","port":80,"servers":[{"address":"198.51.100.1"}],
             "health_policy":{"all_down":"fallback","fallback":{"address":"198.51.100.9"}}}"#,
    )
    .unwrap();
    let err = not_the_fallback(&spec.options, &dest("198.51.100.9", 80).key()).unwrap_err();
    assert_eq!(err.code(), InvalidValue);
    assert_eq!(err.field(), Some("address"));
    assert!(err.to_string().contains("fallback"), "{err}");
    assert!(not_the_fallback(&spec.options, &dest("198.51.100.9", 81).key()).is_ok());
    assert!(not_the_fallback(&Default::default(), &dest("198.51.100.9", 80).key()).is_ok());
}
