//! The limits ipvsadm and the kernel set (found in the VM: see
//! tests/kernel/limits.rs), refused naming the limit; every problem of a
//! body reported, also those whose field depends on another that is bad;
//! and the count of the problems not shown in the message.

use super::*;
use crate::api::validate::{parse_config, parse_service_create};
use crate::model::rules::{MAX_THRESHOLD, MAX_WEIGHT};

use ErrorCode::*;

fn refused(body: &str) -> ApiError {
    match parse_service_create(body.as_bytes()) {
        Ok(spec) => panic!("{body} was accepted: {spec:?}"),
        Err(e) => e,
    }
}

fn server(fields: &str) -> String {
    format!(
        r#"{{"protocol":"tcp","address":"192.0.2.10","port":80,"servers":[{{"address":"198.51.100.1",{fields}}}]}}"#
    )
}

#[test]
fn thresholds_stop_at_ipvsadm_s_limit() {
    assert_eq!(MAX_THRESHOLD, 2_147_483_647);
    let ok = parse_service_create(server(r#""upper_threshold":2147483647"#).as_bytes());
    assert_eq!(ok.map(|s| s.servers[0].upper_threshold), Ok(MAX_THRESHOLD));
    // The kernel refuses an upper threshold above it (EINVAL), and neither
    // ipvsadm -R nor our own restore could read `-x 2147483648` back.
    for field in ["upper_threshold", "lower_threshold"] {
        let err = refused(&server(&format!(r#""{field}":2147483648"#)));
        assert_eq!(
            problems(&err)[0],
            (InvalidThreshold, Some(format!("servers[0].{field}")))
        );
        assert!(err.message().contains("0 to 2147483647"), "{err}");
        assert!(err.message().contains("ipvsadm's limit"), "{err}");
    }
}

#[test]
fn weights_name_their_limit() {
    assert_eq!(MAX_WEIGHT, 2_147_483_647);
    for weight in ["2147483648", "-1"] {
        let err = refused(&server(&format!(r#""weight":{weight}"#)));
        assert_eq!(
            problems(&err),
            vec![(InvalidWeight, Some("servers[0].weight".into()))]
        );
        assert!(
            err.message()
                .contains("weight must be 0 to 2147483647 (the kernel's limit"),
            "{err}"
        );
        assert!(err.message().ends_with(&format!("got {weight}")), "{err}");
    }
}

#[test]
fn a_netmask_with_holes_is_refused_saying_why() {
    let body = r#"{"protocol":"tcp","address":"192.0.2.10","port":80,
        "persistence":{"timeout":60,"netmask":"255.0.255.0"}}"#;
    let err = refused(body);
    assert_eq!(
        problems(&err),
        vec![(InvalidNetmask, Some("persistence.netmask".into()))]
    );
    assert!(err.message().contains("255.0.255.0 has holes"), "{err}");
    assert!(err.message().contains("255.0.0.0 (/8)"), "{err}");
    // Prefix masks, 0.0.0.0 (every client in one group) included, pass.
    for mask in ["255.255.255.0", "255.255.255.255", "0.0.0.0", "255.254.0.0"] {
        let body = format!(
            r#"{{"protocol":"tcp","address":"192.0.2.10","port":80,
                "persistence":{{"netmask":"{mask}"}}}}"#
        );
        assert!(parse_service_create(body.as_bytes()).is_ok(), "{mask}");
    }
}

#[test]
fn port_0_is_named_even_when_the_address_is_bad() {
    let err = refused(r#"{"protocol":"tcp","address":"bad","port":0}"#);
    assert_eq!(
        problems(&err),
        vec![
            (InvalidAddress, Some("address".into())),
            (InvalidPort, Some("port".into())),
        ]
    );
    // The same inside a configuration.
    let body = br#"{"services":[{"protocol":"tcp","address":"bad","port":0}]}"#;
    let err = parse_config(body).unwrap_err();
    assert_eq!(
        problems(&err),
        vec![
            (InvalidAddress, Some("services[0].address".into())),
            (InvalidPort, Some("services[0].port".into())),
        ]
    );
}

#[test]
fn rules_that_need_another_field_do_not_wait_for_the_whole_identity() {
    // one-packet on TCP: the protocol is known although the address is not.
    let err = refused(r#"{"protocol":"tcp","address":"bad","port":53,"flags":["one-packet"]}"#);
    assert_eq!(
        problems(&err),
        vec![
            (InvalidAddress, Some("address".into())),
            (FlagNotAllowed, Some("flags[0]".into())),
        ]
    );
    // bind_address on a firewall-mark service whose mark is bad.
    let err = refused(r#"{"fwmark":0,"bind_address":true}"#);
    assert_eq!(
        problems(&err),
        vec![
            (InvalidFwmark, Some("fwmark".into())),
            (InvalidValue, Some("bind_address".into())),
        ]
    );
    // A tunnel of an unknown type still gets its port checked.
    let err = refused(&server(
        r#""forward":"tunnel","tunnel":{"type":"vxlan","port":70000}"#,
    ));
    assert_eq!(
        problems(&err),
        vec![
            (InvalidValue, Some("servers[0].tunnel.type".into())),
            (InvalidPort, Some("servers[0].tunnel.port".into())),
        ]
    );
    // An http check: every bad field, not only the first.
    let err = refused(
        r#"{"protocol":"tcp","address":"192.0.2.10","port":80,
            "health_check":{"kind":"http","path":"no-slash","method":"PUT","expect":[99]}}"#,
    );
    assert_eq!(
        problems(&err),
        vec![
            (InvalidValue, Some("health_check.path".into())),
            (InvalidValue, Some("health_check.method".into())),
            (InvalidValue, Some("health_check.expect[0]".into())),
        ]
    );
    // A bad all_down is one problem, not also "fallback only with fallback".
    let err = refused(
        r#"{"protocol":"tcp","address":"192.0.2.10","port":80,
            "health_policy":{"all_down":"sorry","fallback":{"address":"198.51.100.9"}}}"#,
    );
    assert_eq!(
        problems(&err),
        vec![(InvalidValue, Some("health_policy.all_down".into()))]
    );
}

#[test]
fn the_message_counts_the_other_problems_in_good_english() {
    let one_more = refused(r#"{"protocol":"tcp","address":"bad","port":0}"#);
    let message = one_more.body().error.message;
    assert!(message.ends_with(" (and 1 more problem)"), "{message}");
    let two_more = refused(r#"{"protocol":"tcp","address":"bad","port":0,"scheduler":"x"}"#);
    let message = two_more.body().error.message;
    assert!(message.ends_with(" (and 2 more problems)"), "{message}");
    let alone = refused(r#"{"protocol":"tcp","address":"bad","port":80}"#);
    assert!(!alone.body().error.message.contains("more problem"));
}

#[test]
fn the_openapi_document_states_the_limits_and_the_cli_s_default() {
    let doc: serde_json::Value =
        serde_json::from_str(include_str!("../openapi.json")).expect("openapi.json");
    let input = &doc["components"]["schemas"]["ServerInput"]["properties"];
    let forward = input["forward"]["description"].as_str().unwrap_or_default();
    assert!(forward.contains("default masq"), "{forward}");
    assert!(forward.contains("-a defaults to -g"), "{forward}");
    for field in ["upper_threshold", "lower_threshold"] {
        assert_eq!(input[field]["maximum"], MAX_THRESHOLD, "{field}");
    }
    let netmask = doc["components"]["schemas"]["Persistence"]["properties"]["netmask"]
        ["description"]
        .as_str()
        .unwrap_or_default();
    assert!(netmask.contains("255.0.255.0 is refused"), "{netmask}");
}
