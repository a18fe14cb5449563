//! PUT and PATCH: identities that cannot change, servers that are
//! read-only on a service, JSON merge patch (RFC 7386) and the whole-result
//! validation after it.

use super::*;
use crate::api::validate::{self, parse_server_patch, parse_server_replace};
use crate::api::view::service_view;
use crate::model::{Forward, Netmask, Persistence, Scheduler, Tunnel, TunnelType};
use json_patch::merge as merge_patch;
use serde_json::{json, Value};
use std::net::Ipv4Addr;

use ErrorCode::*;

// These tests are about the service's settings; options are tested with
// the views.
fn parse_service_replace(
    body: &[u8],
    current: &ServiceConfig,
) -> Result<VirtualService, crate::api::ApiError> {
    validate::parse_service_replace(body, current).map(|(service, _)| service)
}

fn parse_service_patch(
    body: &[u8],
    current: &ServiceConfig,
) -> Result<VirtualService, crate::api::ApiError> {
    validate::parse_service_patch(body, current).map(|(service, _)| service)
}

fn server_view(dest: &Destination) -> crate::api::json::ServerView {
    crate::api::view::server_view(dest, None)
}

/// RFC 7386, Appendix A, every example.
#[test]
fn merge_patch_rfc7386_examples() {
    let cases = [
        (json!({"a":"b"}), json!({"a":"c"}), json!({"a":"c"})),
        (json!({"a":"b"}), json!({"b":"c"}), json!({"a":"b","b":"c"})),
        (json!({"a":"b"}), json!({"a":null}), json!({})),
        (
            json!({"a":"b","b":"c"}),
            json!({"a":null}),
            json!({"b":"c"}),
        ),
        (json!({"a":["b"]}), json!({"a":"c"}), json!({"a":"c"})),
        (json!({"a":"c"}), json!({"a":["b"]}), json!({"a":["b"]})),
        (
            json!({"a":{"b":"c"}}),
            json!({"a":{"b":"d","c":null}}),
            json!({"a":{"b":"d"}}),
        ),
        (json!({"a":[{"b":"c"}]}), json!({"a":[1]}), json!({"a":[1]})),
        (json!(["a", "b"]), json!(["c", "d"]), json!(["c", "d"])),
        (json!({"a":"b"}), json!(["c"]), json!(["c"])),
        (json!({"a":"foo"}), json!(null), json!(null)),
        (json!({"a":"foo"}), json!("bar"), json!("bar")),
        (json!({"e":null}), json!({"a":1}), json!({"e":null,"a":1})),
        (json!([1, 2]), json!({"a":"b","c":null}), json!({"a":"b"})),
        (
            json!({}),
            json!({"a":{"bb":{"ccc":null}}}),
            json!({"a":{"bb":{}}}),
        ),
    ];
    for (target, patch, want) in cases {
        let mut got = target.clone();
        merge_patch(&mut got, &patch);
        assert_eq!(got, want, "{target} + {patch}");
    }
}

fn web() -> ServiceConfig {
    let mut service = VirtualService::new(tcp("192.0.2.10", 443));
    service.scheduler = Scheduler::new("wrr").unwrap();
    service.persistence = Some(Persistence {
        timeout: 600,
        netmask: Netmask::V4(Ipv4Addr::new(255, 255, 255, 0)),
    });
    config(
        service,
        &[
            Destination {
                weight: 3,
                ..dest("198.51.100.11", 443)
            },
            dest("198.51.100.12", 443),
        ],
        7,
    )
}

fn body(v: Value) -> Vec<u8> {
    serde_json::to_vec(&v).unwrap()
}

#[test]
fn a_get_result_put_back_changes_nothing() {
    let cur = web();
    let view = serde_json::to_value(service_view(&cur)).unwrap();
    assert_eq!(
        parse_service_replace(&body(view), &cur).unwrap(),
        cur.service
    );
    // Servers too.
    let key = cur.service.key;
    for d in cur.servers.values() {
        let view = serde_json::to_value(server_view(d)).unwrap();
        assert_eq!(
            parse_server_replace(&body(view), &key, &d.key()).unwrap(),
            (*d, None)
        );
    }
    // And an empty patch.
    assert_eq!(parse_service_patch(b"{}", &cur).unwrap(), cur.service);
}

#[test]
fn put_replaces_settings_identity_from_the_url() {
    let cur = web();
    // Unset fields take their defaults: persistence goes, scheduler is wlc.
    let got = parse_service_replace(br#"{"flags":[]}"#, &cur).unwrap();
    assert_eq!(got, VirtualService::new(cur.service.key));
    let got = parse_service_replace(br#"{"scheduler":"sh","flags":["sh-port"]}"#, &cur).unwrap();
    assert_eq!(got.scheduler.as_str(), "sh");
    // Identity given and equal, in another spelling of the same address.
    let v6 = config(VirtualService::new(tcp("2001:db8::10", 80)), &[], 1);
    parse_service_replace(
        br#"{"address":"2001:DB8:0::10","port":80,"protocol":"tcp"}"#,
        &v6,
    )
    .unwrap();
    // A fwmark service.
    let fw = config(VirtualService::new(fwmark(Family::Ipv6, 9)), &[], 1);
    let got = parse_service_replace(br#"{"scheduler":"rr"}"#, &fw).unwrap();
    assert_eq!(got.key, fwmark(Family::Ipv6, 9));
    parse_service_replace(br#"{"fwmark":9,"family":"ipv6","id":"fwmark-ipv6-9"}"#, &fw).unwrap();
}

#[test]
fn put_and_patch_refusals() {
    let cur = web();
    let fw = config(VirtualService::new(fwmark(Family::Ipv4, 9)), &[], 1);
    type Parse = fn(&[u8], &ServiceConfig) -> Result<VirtualService, crate::api::ApiError>;
    let put: Parse = parse_service_replace;
    let patch: Parse = parse_service_patch;
    let cases: &[(&str, Parse, &ServiceConfig, &str, ErrorCode, &str)] = &[
        (
            "other port",
            put,
            &cur,
            r#"{"port":80}"#,
            IdentityMismatch,
            "port",
        ),
        (
            "other protocol",
            put,
            &cur,
            r#"{"protocol":"udp"}"#,
            IdentityMismatch,
            "protocol",
        ),
        (
            "other address",
            put,
            &cur,
            r#"{"address":"192.0.2.11"}"#,
            IdentityMismatch,
            "address",
        ),
        (
            "fwmark on inet",
            put,
            &cur,
            r#"{"fwmark":3}"#,
            IdentityMismatch,
            "fwmark",
        ),
        (
            "address on fwmark",
            put,
            &fw,
            r#"{"address":"192.0.2.10"}"#,
            IdentityMismatch,
            "address",
        ),
        (
            "other mark",
            put,
            &fw,
            r#"{"fwmark":10}"#,
            IdentityMismatch,
            "fwmark",
        ),
        (
            "other family",
            put,
            &fw,
            r#"{"family":"ipv6"}"#,
            IdentityMismatch,
            "family",
        ),
        (
            "other id",
            put,
            &cur,
            r#"{"id":"tcp-192.0.2.10-80"}"#,
            IdentityMismatch,
            "id",
        ),
        (
            "changed servers",
            put,
            &cur,
            r#"{"servers":[]}"#,
            ReadOnly,
            "servers",
        ),
        (
            "bad server in servers",
            put,
            &cur,
            r#"{"servers":[{"address":"x"}]}"#,
            InvalidAddress,
            "servers[0].address",
        ),
        ("not an object", put, &cur, r#"[]"#, InvalidType, ""),
        (
            "unknown field",
            put,
            &cur,
            r#"{"sched":"rr"}"#,
            UnknownField,
            "sched",
        ),
        (
            "patch other port",
            patch,
            &cur,
            r#"{"port":80}"#,
            IdentityMismatch,
            "port",
        ),
        (
            "patch id",
            patch,
            &cur,
            r#"{"id":"x"}"#,
            IdentityMismatch,
            "id",
        ),
        (
            "patch servers",
            patch,
            &cur,
            r#"{"servers":[]}"#,
            ReadOnly,
            "servers",
        ),
        (
            "patch a server's weight",
            patch,
            &cur,
            r#"{"servers":[{"address":"198.51.100.11","weight":9},{"address":"198.51.100.12"}]}"#,
            ReadOnly,
            "servers",
        ),
        (
            "patch fwmark on inet",
            patch,
            &cur,
            r#"{"fwmark":3}"#,
            IdentityMismatch,
            "fwmark",
        ),
        (
            "patch a list",
            patch,
            &cur,
            r#"[{"scheduler":"rr"}]"#,
            InvalidType,
            "",
        ),
        ("patch null", patch, &cur, r#"null"#, InvalidType, ""),
        (
            "patch malformed",
            patch,
            &cur,
            r#"{"scheduler":"#,
            MalformedJson,
            "",
        ),
        (
            "patch unknown field",
            patch,
            &cur,
            r#"{"wieght":1}"#,
            UnknownField,
            "wieght",
        ),
        // The merged result is validated whole: a flag the (unchanged)
        // scheduler does not take, a netmask of the wrong family.
        (
            "patch flag",
            patch,
            &cur,
            r#"{"flags":["sh-port"]}"#,
            FlagNotAllowed,
            "flags[0]",
        ),
        (
            "patch netmask",
            patch,
            &cur,
            r#"{"persistence":{"netmask":24}}"#,
            WrongFamily,
            "persistence.netmask",
        ),
        (
            "patch away persistence under pe",
            patch,
            &sip(),
            r#"{"persistence":null}"#,
            PeWithoutPersistence,
            "pe",
        ),
        (
            "patch scheduler under flags",
            patch,
            &sh(),
            r#"{"scheduler":"rr"}"#,
            FlagNotAllowed,
            "flags[0]",
        ),
    ];
    for (name, parse, cur, text, code, field) in cases {
        let err = match parse(text.as_bytes(), cur) {
            Ok(v) => panic!("{name}: accepted {v:?}"),
            Err(e) => e,
        };
        let want = (*code, (!field.is_empty()).then(|| field.to_string()));
        assert_eq!(problems(&err), vec![want], "{name}: {err}");
    }
}

fn sip() -> ServiceConfig {
    let mut s = VirtualService::new(ServiceKey::Inet {
        protocol: Protocol::Udp,
        addr: "192.0.2.10".parse().unwrap(),
        port: 5060,
    });
    s.persistence = Some(Persistence {
        timeout: 360,
        netmask: Netmask::host(Family::Ipv4),
    });
    s.pe_name = Some("sip".into());
    config(s, &[], 3)
}

fn sh() -> ServiceConfig {
    let mut s = VirtualService::new(tcp("192.0.2.10", 80));
    s.scheduler = Scheduler::new("sh").unwrap();
    s.flags = s.flags.with(crate::model::ServiceFlags::SCHED2);
    config(s, &[], 3)
}

#[test]
fn patch_merges_onto_the_current_service() {
    let cur = web();
    // One field changes, the rest stays.
    let got = parse_service_patch(br#"{"scheduler":"rr"}"#, &cur).unwrap();
    assert_eq!(got.scheduler.as_str(), "rr");
    assert_eq!(got.persistence, cur.service.persistence);
    // Nested objects merge: the netmask stays.
    let got = parse_service_patch(br#"{"persistence":{"timeout":60}}"#, &cur).unwrap();
    assert_eq!(
        got.persistence,
        Some(Persistence {
            timeout: 60,
            netmask: Netmask::V4(Ipv4Addr::new(255, 255, 255, 0))
        })
    );
    // null removes: back to the default.
    let got = parse_service_patch(br#"{"persistence":null,"scheduler":null}"#, &cur).unwrap();
    assert_eq!(got, VirtualService::new(cur.service.key));
    // Removing a field of persistence restores its default.
    let got = parse_service_patch(br#"{"persistence":{"netmask":null}}"#, &cur).unwrap();
    assert_eq!(
        got.persistence.unwrap().netmask,
        Netmask::host(Family::Ipv4)
    );
    // Scheduler and flags change together.
    let got = parse_service_patch(br#"{"scheduler":"rr","flags":[]}"#, &sh()).unwrap();
    assert!(got.flags.is_empty());
    // Servers sent back unchanged, or removed from the patch document, are
    // no change.
    let servers = serde_json::to_value(service_view(&cur)).unwrap()["servers"].clone();
    parse_service_patch(&body(json!({ "servers": servers })), &cur).unwrap();
    parse_service_patch(br#"{"servers":null}"#, &cur).unwrap();
    // revision is ignored.
    parse_service_patch(br#"{"revision":1}"#, &cur).unwrap();
}

#[test]
fn server_put_and_patch() {
    let key = tcp("192.0.2.10", 80);
    let tunnelled = Destination {
        forward: Forward::Tunnel(Tunnel {
            kind: TunnelType::Gue,
            port: 6080,
            checksum: Default::default(),
        }),
        ..dest("198.51.100.11", 80)
    };
    // PUT: address and port from the URL; unset fields take defaults.
    let got = parse_server_replace(br#"{"weight":5}"#, &key, &tunnelled.key())
        .unwrap()
        .0;
    assert_eq!(
        got,
        Destination {
            weight: 5,
            ..dest("198.51.100.11", 80)
        }
    );
    // PATCH keeps the rest.
    let got = parse_server_patch(br#"{"weight":0}"#, &key, &tunnelled, None)
        .unwrap()
        .0;
    assert_eq!(
        got,
        Destination {
            weight: 0,
            ..tunnelled
        }
    );
    let got = parse_server_patch(br#"{"tunnel":{"port":7000}}"#, &key, &tunnelled, None)
        .unwrap()
        .0;
    assert_eq!(got.forward.tunnel().unwrap().port, 7000);
    // Leaving tunnel forwarding takes the tunnel options with it.
    let got = parse_server_patch(br#"{"forward":"dr","tunnel":null}"#, &key, &tunnelled, None)
        .unwrap()
        .0;
    assert_eq!(got.forward, Forward::Route);
    let masq = dest("198.51.100.11", 80);
    let got = parse_server_patch(
        br#"{"forward":"tunnel","tunnel":{"type":"gre"}}"#,
        &key,
        &masq,
        None,
    )
    .unwrap()
    .0;
    assert_eq!(got.forward.tunnel().unwrap().kind, TunnelType::Gre);

    for (name, patch, text, code, field) in [
        (
            "forward without dropping tunnel",
            true,
            r#"{"forward":"masq"}"#,
            TunnelNotAllowed,
            "tunnel",
        ),
        (
            "gue to ipip keeps the port",
            true,
            r#"{"tunnel":{"type":"ipip"}}"#,
            TunnelOptionNotAllowed,
            "tunnel.port",
        ),
        (
            "other address",
            true,
            r#"{"address":"198.51.100.12"}"#,
            IdentityMismatch,
            "address",
        ),
        (
            "other port",
            false,
            r#"{"port":81}"#,
            IdentityMismatch,
            "port",
        ),
        (
            "other id",
            false,
            r#"{"id":"198.51.100.11-81"}"#,
            IdentityMismatch,
            "id",
        ),
        (
            "threshold order",
            true,
            r#"{"lower_threshold":5}"#,
            InvalidThreshold,
            "lower_threshold",
        ),
        (
            "weight",
            false,
            r#"{"weight":2147483648}"#,
            InvalidWeight,
            "weight",
        ),
        ("unknown", true, r#"{"wieght":3}"#, UnknownField, "wieght"),
        ("array", true, r#"[]"#, InvalidType, ""),
        ("array put", false, r#"[]"#, InvalidType, ""),
    ] {
        let result = if patch {
            parse_server_patch(text.as_bytes(), &key, &tunnelled, None)
        } else {
            parse_server_replace(text.as_bytes(), &key, &tunnelled.key())
        };
        let err = result.expect_err(name);
        let want = (code, (!field.is_empty()).then(|| field.to_string()));
        assert_eq!(problems(&err), vec![want], "{name}: {err}");
    }
    // The server of a fwmark service keeps its port 0.
    let fw = fwmark(Family::Ipv4, 1);
    let d = dest("198.51.100.11", 0);
    assert_eq!(
        parse_server_patch(br#"{"weight":2}"#, &fw, &d, None)
            .unwrap()
            .0
            .port,
        0
    );
    let _ = dkey("198.51.100.11", 0);
}
