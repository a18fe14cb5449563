//! The OpenAPI document is held to the code: its routes are [`ROUTES`];
//! its request schemas list exactly the fields the validators accept, and
//! samples valid for the schemas are accepted by the validators; what the
//! views and errors serialise fits the response schemas, and every property
//! of every schema is seen in some sample; enumerations are the code's.
//!
//! Schemas are checked by a small validator of the subset of JSON Schema
//! the document uses; a keyword outside that subset fails the test rather
//! than being ignored.

use super::*;
use crate::api::error::{MAX_BODY_BYTES, MAX_CONFIG_BODY_BYTES};
use crate::api::json::{ClusterView, HealthView, MemberView};
use crate::api::openapi::{document, DOCUMENT};
use crate::api::routes::{Method, ROUTES};
use crate::api::validate::{
    self, flag_table, parse_config, parse_join, parse_service_create, CHECK_FIELDS, CONFIG_FIELDS,
    JOIN_FIELDS, PERSISTENCE_ENGINES, PERSISTENCE_FIELDS, POLICY_FIELDS, SERVER_FIELDS,
    SERVICE_FIELDS, TUNNEL_FIELDS,
};
use crate::api::view::{config_view, plan_replacement, service_view};
use crate::model::{
    DesiredState, Forward, Netmask, Persistence, Scheduler, ServiceFlags, ServiceSpec, Tunnel,
    TunnelChecksum, TunnelType,
};
use serde_json::{json, Value};
use std::collections::{BTreeSet, HashSet};
use std::net::Ipv4Addr;

const SCHEMA_KEYWORDS: &[&str] = &[
    "type",
    "properties",
    "required",
    "additionalProperties",
    "items",
    "enum",
    "minimum",
    "maximum",
    "description",
    "default",
    "$ref",
    "oneOf",
];

fn schema_ptr(name: &str) -> String {
    format!("#/components/schemas/{name}")
}

/// The value a `#/...` JSON pointer names.
fn resolve<'d>(doc: &'d Value, reference: &str) -> &'d Value {
    let pointer = reference
        .strip_prefix('#')
        .unwrap_or_else(|| panic!("not a local $ref: {reference}"));
    doc.pointer(pointer)
        .unwrap_or_else(|| panic!("$ref {reference} resolves to nothing"))
}

/// Follows a `$ref` if the object is one.
fn deref<'d>(doc: &'d Value, v: &'d Value) -> &'d Value {
    match v.get("$ref").and_then(Value::as_str) {
        Some(r) => resolve(doc, r),
        None => v,
    }
}

fn json_type_matches(t: &str, v: &Value) -> bool {
    match t {
        "null" => v.is_null(),
        "boolean" => v.is_boolean(),
        "integer" => v.is_i64() || v.is_u64(),
        "number" => v.is_number(),
        "string" => v.is_string(),
        "array" => v.is_array(),
        "object" => v.is_object(),
        other => panic!("unknown type {other}"),
    }
}

/// Checks `value` against the schema at `ptr`; records every property
/// pointer it sees a value for in `seen`.
struct Checker<'d> {
    doc: &'d Value,
    seen: BTreeSet<String>,
}

impl<'d> Checker<'d> {
    fn check(&mut self, ptr: &str, value: &Value, at: &str) {
        let schema = resolve(self.doc, ptr);
        self.check_schema(ptr, schema, value, at);
    }

    fn check_schema(&mut self, ptr: &str, schema: &'d Value, value: &Value, at: &str) {
        let obj = schema
            .as_object()
            .unwrap_or_else(|| panic!("{ptr}: schema is not an object"));
        for key in obj.keys() {
            assert!(
                SCHEMA_KEYWORDS.contains(&key.as_str()),
                "{ptr}: unsupported keyword {key}"
            );
        }
        if let Some(r) = obj.get("$ref").and_then(Value::as_str) {
            assert_eq!(obj.len(), 1, "{ptr}: $ref with siblings");
            return self.check(r, value, at);
        }
        if let Some(Value::Array(alternatives)) = obj.get("oneOf") {
            // The alternatives are told apart by their required properties:
            // exactly one must have all of them in the value.
            let doc = self.doc;
            let fitting: Vec<&Value> = alternatives
                .iter()
                .filter(|alt| {
                    let required = deref(doc, alt)["required"].as_array().cloned();
                    required
                        .unwrap_or_default()
                        .iter()
                        .all(|name| name.as_str().is_some_and(|n| value.get(n).is_some()))
                })
                .collect();
            assert_eq!(
                fitting.len(),
                1,
                "{at}: {value} fits {} of oneOf ({ptr})",
                fitting.len()
            );
            return self.check_schema(&format!("{ptr}/oneOf"), fitting[0], value, at);
        }
        if let Some(t) = obj.get("type") {
            let types: Vec<&str> = match t {
                Value::String(s) => vec![s.as_str()],
                Value::Array(list) => list.iter().filter_map(Value::as_str).collect(),
                _ => panic!("{ptr}: bad type"),
            };
            assert!(
                types.iter().any(|t| json_type_matches(t, value)),
                "{at}: {value} is not of type {types:?} ({ptr})"
            );
        }
        if let Some(Value::Array(allowed)) = obj.get("enum") {
            assert!(
                allowed.contains(value),
                "{at}: {value} not in enum {allowed:?} ({ptr})"
            );
        }
        if let (Some(min), Some(n)) = (obj.get("minimum").and_then(Value::as_f64), value.as_f64()) {
            assert!(n >= min, "{at}: {n} < minimum {min}");
        }
        if let (Some(max), Some(n)) = (obj.get("maximum").and_then(Value::as_f64), value.as_f64()) {
            assert!(n <= max, "{at}: {n} > maximum {max}");
        }
        if let Value::Object(map) = value {
            let props = obj.get("properties").and_then(Value::as_object);
            if obj.get("additionalProperties") == Some(&Value::Bool(false)) {
                for key in map.keys() {
                    assert!(
                        props.is_some_and(|p| p.contains_key(key)),
                        "{at}.{key}: not in the schema ({ptr})"
                    );
                }
            }
            for required in obj
                .get("required")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
            {
                let name = required.as_str().unwrap_or_default();
                assert!(
                    map.contains_key(name),
                    "{at}: required {name} missing ({ptr})"
                );
            }
            for (key, v) in map {
                if let Some(sub) = props.and_then(|p| p.get(key)) {
                    let sub_ptr = format!("{ptr}/properties/{key}");
                    self.seen.insert(sub_ptr.clone());
                    self.check_schema(&sub_ptr, sub, v, &format!("{at}.{key}"));
                }
            }
        }
        if let (Value::Array(items), Some(item_schema)) = (value, obj.get("items")) {
            for (i, item) in items.iter().enumerate() {
                self.check_schema(
                    &format!("{ptr}/items"),
                    item_schema,
                    item,
                    &format!("{at}[{i}]"),
                );
            }
        }
    }
}

/// Every property pointer declared under components.schemas.
fn declared_properties(doc: &Value) -> BTreeSet<String> {
    fn walk(ptr: &str, schema: &Value, out: &mut BTreeSet<String>) {
        if let Some(props) = schema.get("properties").and_then(Value::as_object) {
            for (k, sub) in props {
                let p = format!("{ptr}/properties/{k}");
                out.insert(p.clone());
                walk(&p, sub, out);
            }
        }
        if let Some(items) = schema.get("items") {
            walk(&format!("{ptr}/items"), items, out);
        }
    }
    let mut out = BTreeSet::new();
    for (name, schema) in doc["components"]["schemas"].as_object().unwrap() {
        walk(&schema_ptr(name), schema, &mut out);
    }
    out
}

fn property_names(doc: &Value, schema: &str) -> BTreeSet<String> {
    resolve(doc, &schema_ptr(schema))["properties"]
        .as_object()
        .unwrap_or_else(|| panic!("{schema} has no properties"))
        .keys()
        .cloned()
        .collect()
}

fn names(fields: &[&str]) -> BTreeSet<String> {
    fields.iter().map(|s| s.to_string()).collect()
}

fn enum_strings(v: &Value) -> BTreeSet<String> {
    v["enum"]
        .as_array()
        .unwrap_or_else(|| panic!("no enum in {v}"))
        .iter()
        .filter_map(Value::as_str)
        .map(str::to_string)
        .collect()
}

#[test]
fn the_document_parses_and_is_openapi_3_1() {
    let doc: Value = serde_json::from_str(DOCUMENT).expect("openapi.json is JSON");
    assert_eq!(doc, document());
    assert_eq!(doc["openapi"], "3.1.0");
    assert!(doc["info"]["title"].is_string() && doc["info"]["version"].is_string());
}

#[test]
fn every_ref_resolves_and_schemas_use_the_checked_subset() {
    let doc = document();
    fn walk(doc: &Value, v: &Value) {
        match v {
            Value::Object(map) => {
                if let Some(r) = map.get("$ref").and_then(Value::as_str) {
                    resolve(doc, r);
                }
                map.values().for_each(|c| walk(doc, c));
            }
            Value::Array(list) => list.iter().for_each(|c| walk(doc, c)),
            _ => {}
        }
    }
    walk(&doc, &doc);
    // Every schema, named or inline, is one the checker understands.
    fn schemas(v: &Value, out: &mut Vec<Value>) {
        if let Value::Object(map) = v {
            for (k, c) in map {
                if k == "schema" {
                    out.push(c.clone());
                } else {
                    schemas(c, out);
                }
            }
        }
    }
    let mut inline = Vec::new();
    schemas(&doc["paths"], &mut inline);
    schemas(&doc["components"]["parameters"], &mut inline);
    schemas(&doc["components"]["headers"], &mut inline);
    schemas(&doc["components"]["responses"], &mut inline);
    for (name, schema) in doc["components"]["schemas"].as_object().unwrap() {
        fn keywords(ptr: &str, s: &Value) {
            for key in s.as_object().unwrap_or_else(|| panic!("{ptr}")).keys() {
                assert!(SCHEMA_KEYWORDS.contains(&key.as_str()), "{ptr}: {key}");
            }
            for (k, sub) in s
                .get("properties")
                .and_then(Value::as_object)
                .into_iter()
                .flatten()
            {
                keywords(&format!("{ptr}/{k}"), sub);
            }
            if let Some(items) = s.get("items") {
                keywords(&format!("{ptr}/items"), items);
            }
        }
        keywords(name, schema);
    }
    for s in &inline {
        for key in s.as_object().unwrap().keys() {
            assert!(
                SCHEMA_KEYWORDS.contains(&key.as_str()),
                "inline schema {s}: {key}"
            );
        }
    }
}

#[test]
fn the_routes_are_the_route_table() {
    let doc = document();
    let mut documented = BTreeSet::new();
    for (path, item) in doc["paths"].as_object().unwrap() {
        for (method, op) in item.as_object().unwrap() {
            if method == "parameters" {
                continue;
            }
            let m = Method::parse(&method.to_ascii_uppercase())
                .unwrap_or_else(|| panic!("{method} {path}: not a method of the API"));
            let route = ROUTES
                .iter()
                .find(|r| r.method == m && r.path == path)
                .unwrap_or_else(|| panic!("{method} {path} is documented but not in ROUTES"));
            assert_eq!(op["operationId"], route.operation.id(), "{method} {path}");
            documented.insert((m, path.clone()));
        }
    }
    let table: BTreeSet<(Method, String)> = ROUTES
        .iter()
        .map(|r| (r.method, r.path.to_string()))
        .collect();
    assert_eq!(documented, table);
}

/// Parameters of an operation: the path item's and its own, resolved.
fn parameters<'d>(doc: &'d Value, path: &str, method: &str) -> Vec<&'d Value> {
    let item = &doc["paths"][path];
    let mut out = Vec::new();
    for list in [&item["parameters"], &item[method]["parameters"]] {
        for p in list.as_array().into_iter().flatten() {
            out.push(deref(doc, p));
        }
    }
    out
}

fn responses<'d>(doc: &'d Value, path: &str, method: &str) -> Vec<(String, &'d Value)> {
    doc["paths"][path][method]["responses"]
        .as_object()
        .unwrap_or_else(|| panic!("{method} {path}: no responses"))
        .iter()
        .map(|(status, r)| (status.clone(), deref(doc, r)))
        .collect()
}

fn has_header(response: &Value, name: &str) -> bool {
    response["headers"].get(name).is_some()
}

#[test]
fn routes_document_their_parameters_headers_and_errors() {
    let doc = document();
    for route in ROUTES {
        let (path, method) = (route.path, route.method.as_str().to_ascii_lowercase());
        let params = parameters(&doc, path, &method);
        let named =
            |name: &str, place: &str| params.iter().any(|p| p["name"] == name && p["in"] == place);
        // Path parameters: exactly the template's.
        let template: BTreeSet<&str> = path
            .split('/')
            .filter_map(|s| s.strip_prefix('{').and_then(|s| s.strip_suffix('}')))
            .collect();
        let declared: BTreeSet<&str> = params
            .iter()
            .filter(|p| p["in"] == "path")
            .map(|p| p["name"].as_str().unwrap())
            .collect();
        assert_eq!(template, declared, "{method} {path}");
        // Query parameters: exactly those the route takes (others are 400).
        let query: BTreeSet<&str> = params
            .iter()
            .filter(|p| p["in"] == "query")
            .map(|p| p["name"].as_str().unwrap())
            .collect();
        let takes: BTreeSet<&str> = route.query.iter().copied().collect();
        assert_eq!(query, takes, "{method} {path}: query parameters");
        let resps = responses(&doc, path, &method);
        let status = |s: &str| resps.iter().find(|(code, _)| code == s).map(|(_, r)| *r);
        // Every error response is the error body.
        for (code, r) in &resps {
            if code.starts_with('4') || code.starts_with('5') {
                assert_eq!(
                    r["content"]["application/json"]["schema"]["$ref"],
                    schema_ptr("Error"),
                    "{method} {path} {code}"
                );
            }
            if code == "503" {
                assert!(
                    has_header(r, "Retry-After"),
                    "{method} {path}: 503 without Retry-After"
                );
            }
        }
        let is_resource = path.starts_with("/api/v1/services/");
        let writes = matches!(route.method, Method::Put | Method::Patch | Method::Delete);
        if is_resource && (writes || path.ends_with("/servers") && route.method == Method::Post) {
            assert!(named("If-Match", "header"), "{method} {path}: no If-Match");
            assert!(status("412").is_some(), "{method} {path}: no 412");
        }
        if is_resource && route.method != Method::Delete {
            let ok = status("201").or(status("200")).unwrap();
            assert!(has_header(ok, "ETag"), "{method} {path}: no ETag");
        }
        if route.method == Method::Post && path.starts_with("/api/v1/services") {
            let created = status("201").unwrap_or_else(|| panic!("{method} {path}: no 201"));
            assert!(has_header(created, "Location"), "{method} {path}");
            assert!(status("409").is_some(), "{method} {path}: no 409");
        }
        if route.max_body > 0 {
            for code in ["400", "413", "415", "503"] {
                assert!(status(code).is_some(), "{method} {path}: no {code}");
            }
            let body = &doc["paths"][path][&method]["requestBody"];
            assert!(
                body["content"]["application/json"]["schema"]["$ref"].is_string(),
                "{method} {path}"
            );
        }
        if path.contains("{id}") {
            assert!(status("404").is_some(), "{method} {path}: no 404");
        }
        let reads_state = route.method == Method::Get
            && (path.starts_with("/api/v1/services") || path == "/api/v1/config");
        if reads_state {
            assert!(
                named("consistent", "query"),
                "{method} {path}: no ?consistent"
            );
        }
    }
    let dry_run = parameters(&doc, "/api/v1/config", "put");
    assert!(dry_run
        .iter()
        .any(|p| p["name"] == "dry_run" && p["in"] == "query"));
    assert!(
        doc["paths"]["/api/v1/services/{id}"]["patch"]["requestBody"]["content"]
            ["application/merge-patch+json"]
            .is_object()
    );
    let too_large = resolve(&doc, "#/components/responses/PayloadTooLarge")["description"]
        .as_str()
        .unwrap();
    assert!(
        too_large.contains(&MAX_BODY_BYTES.to_string()),
        "{too_large}"
    );
    assert!(
        too_large.contains(&MAX_CONFIG_BODY_BYTES.to_string()),
        "{too_large}"
    );
}

#[test]
fn request_schemas_list_the_fields_the_validators_accept() {
    let doc = document();
    for (schema, fields) in [
        ("ServiceInput", SERVICE_FIELDS),
        ("Service", SERVICE_FIELDS),
        ("ServerInput", SERVER_FIELDS),
        ("Server", SERVER_FIELDS),
        ("Persistence", PERSISTENCE_FIELDS),
        ("Tunnel", TUNNEL_FIELDS),
        ("ConfigInput", CONFIG_FIELDS),
        ("Config", CONFIG_FIELDS),
        ("JoinRequest", JOIN_FIELDS),
        ("HealthCheck", CHECK_FIELDS),
        ("HealthPolicy", POLICY_FIELDS),
    ] {
        assert_eq!(property_names(&doc, schema), names(fields), "{schema}");
    }
}

#[test]
fn enumerations_are_the_codes() {
    let doc = document();
    let schema = |name: &str| resolve(&doc, &schema_ptr(name)).clone();
    let codes: BTreeSet<String> = ErrorCode::ALL
        .iter()
        .map(|c| c.as_str().to_string())
        .collect();
    assert_eq!(enum_strings(&schema("ErrorCode")), codes);
    let flags: BTreeSet<String> = flag_table().map(|(n, _, _)| n.to_string()).collect();
    for s in ["Service", "ServiceInput"] {
        let props = &schema(s)["properties"];
        assert_eq!(
            enum_strings(&props["scheduler"]),
            names(Scheduler::KNOWN),
            "{s}"
        );
        assert_eq!(enum_strings(&props["flags"]["items"]), flags, "{s}");
        assert_eq!(
            enum_strings(&props["pe"]),
            names(PERSISTENCE_ENGINES),
            "{s}"
        );
        assert_eq!(
            enum_strings(&props["protocol"]),
            names(&["tcp", "udp", "sctp"]),
            "{s}"
        );
        assert_eq!(
            enum_strings(&props["family"]),
            names(&["ipv4", "ipv6"]),
            "{s}"
        );
    }
    for s in ["Server", "ServerInput"] {
        let forward = &schema(s)["properties"]["forward"];
        assert_eq!(
            enum_strings(forward),
            names(&["masq", "dr", "tunnel"]),
            "{s}"
        );
    }
    let tunnel = &schema("Tunnel")["properties"];
    assert_eq!(
        enum_strings(&tunnel["type"]),
        names(&["ipip", "gue", "gre"])
    );
    assert_eq!(
        enum_strings(&tunnel["checksum"]),
        names(&["none", "csum", "remcsum"])
    );
    // Defaults the document states are the validators' defaults.
    assert_eq!(
        schema("ServiceInput")["properties"]["scheduler"]["default"],
        "wlc"
    );
    assert_eq!(
        schema("Persistence")["properties"]["timeout"]["default"],
        Persistence::DEFAULT_TIMEOUT
    );
    assert_eq!(
        schema("Persistence")["properties"]["timeout"]["maximum"],
        validate::MAX_PERSISTENCE_TIMEOUT
    );
    assert_eq!(schema("ServerInput")["properties"]["weight"]["default"], 1);
    assert_eq!(
        schema("ServerInput")["properties"]["forward"]["default"],
        "masq"
    );
}

/// Request bodies using every field the schemas declare.
fn request_samples() -> Vec<(&'static str, Value)> {
    let inet = json!({
        "id": "udp-2001_db8__53-5060", "revision": 3,
        "protocol": "udp", "address": "2001:db8::53", "port": 5060, "family": "ipv6",
        "scheduler": "sh", "flags": ["one-packet", "sh-port"],
        "persistence": {"timeout": 600, "netmask": 64}, "pe": "sip",
        "bind_address": true, "drain_grace": 60,
        "health_check": {"kind": "https", "interval": 1.5, "timeout": 0.5, "rise": 2, "fall": 3,
                         "address": "2001:db8::99", "port": 8443, "path": "/healthz",
                         "method": "HEAD", "expect": [200, 204], "body": "ok",
                         "host": "sip.example"},
        "health_policy": {"unhealthy": "remove", "slow_start": 30, "all_down": "fallback",
                          "fallback": {"address": "2001:db8::99", "port": 5060, "forward": "dr"}},
        "servers": [
            {"id": "2001_db8__11-5060", "address": "2001:db8::11", "port": 5060, "weight": 2,
             "forward": "dr", "upper_threshold": 100, "lower_threshold": 10, "tunnel": null,
             "health_check": {"kind": "udp", "payload": "OPTIONS", "interval": 5},
             "health": {}},
            {"address": "198.51.100.12", "forward": "tunnel",
             "tunnel": {"type": "gue", "port": 6080, "checksum": "csum"}}
        ]
    });
    let fwmark =
        json!({"fwmark": 5, "family": "ipv4", "persistence": {"netmask": "255.255.255.0"}});
    vec![
        ("ServiceInput", inet.clone()),
        ("ServiceInput", fwmark.clone()),
        ("ConfigInput", json!({ "services": [inet, fwmark] })),
        (
            "JoinRequest",
            json!({"id": "node2", "raft_addr": "127.0.0.1:1112", "api_addr": "127.0.0.1:2222"}),
        ),
    ]
}

/// Responses of every kind, from the views and errors themselves.
fn response_samples() -> Vec<(&'static str, Value)> {
    let mut web = VirtualService::new(tcp("192.0.2.10", 443));
    web.persistence = Some(Persistence {
        timeout: 600,
        netmask: Netmask::V4(Ipv4Addr::new(255, 255, 255, 0)),
    });
    let mut web = config(
        web,
        &[dest("198.51.100.11", 443), dest("198.51.100.19", 443)],
        4,
    );
    web.options.drain_grace = Some(45);
    web.draining_servers.insert(
        dest("198.51.100.19", 443).key(),
        crate::model::Drain {
            since_ms: 1_790_000_000_000,
            grace: 45,
        },
    );
    let mut sip = VirtualService::new(fwmark(Family::Ipv6, 7));
    sip.scheduler = Scheduler::new("mh").unwrap();
    sip.flags = sip
        .flags
        .with(ServiceFlags::ONE_PACKET)
        .with(ServiceFlags::SCHED2);
    sip.persistence = Some(Persistence {
        timeout: 360,
        netmask: Netmask::V6(64),
    });
    sip.pe_name = Some("sip".into());
    let tunnel = Destination {
        forward: Forward::Tunnel(Tunnel {
            kind: TunnelType::Gue,
            port: 6080,
            checksum: TunnelChecksum::Csum,
        }),
        upper_threshold: 10,
        lower_threshold: 5,
        ..dest("198.51.100.12", 0)
    };
    let mut sip = config(sip, &[tunnel, dest("2001:db8::11", 0)], 9);
    sip.draining = Some(crate::model::Drain {
        since_ms: 1_790_000_000_000,
        grace: 30,
    });
    let mut state = DesiredState::default();
    for c in [&web, &sip] {
        state
            .services
            .insert(c.service.key, std::sync::Arc::new(c.clone()));
    }
    let mut changed = ServiceSpec {
        server_checks: Default::default(),
        options: Default::default(),
        service: web.service.clone(),
        servers: vec![dest("198.51.100.13", 443)],
    };
    changed.service.scheduler = Scheduler::new("rr").unwrap();
    let plan = plan_replacement(
        &state,
        &[
            changed,
            ServiceSpec {
                server_checks: Default::default(),
                options: Default::default(),
                service: VirtualService::new(tcp("192.0.2.30", 80)),
                servers: vec![],
            },
        ],
        None,
        false,
    );
    let validation =
        parse_service_create(br#"{"protocol":"tcp","address":"x","port":0}"#).unwrap_err();
    let cluster = ClusterView {
        leader_id: Some("node1".into()),
        term: 3,
        commit_index: 120,
        quorum: crate::api::json::QuorumView {
            ok: true,
            last_contact_ms: Some(40),
            last_leader: Some("node1".into()),
            problem: None,
        },
        members: vec![
            MemberView {
                id: "node1".into(),
                raft_addr: "127.0.0.1:1111".into(),
                api_addr: "127.0.0.1:2221".into(),
                voter: true,
                last_applied: Some(120),
                reachable: true,
                node: Some(crate::api::json::NodeView {
                    id: "node1".into(),
                    api_addr: "127.0.0.1:2221".into(),
                    raft_addr: "127.0.0.1:1111".into(),
                    role: "leader".into(),
                    term: 3,
                    leader_id: Some("node1".into()),
                    last_applied: 120,
                    reconcile: crate::api::json::ReconcileStatus {
                        kernel: "on".into(),
                        ownership: "managed".into(),
                        seen_index: 120,
                        programmed_index: 118,
                        last_success: Some("2026-11-26T15:00:00Z".into()),
                        last_resync: Some("2026-11-26T15:00:00Z".into()),
                        passes: 40,
                        changes: 300,
                        drift_repaired: 2,
                        pending: 1,
                        failed: vec![crate::api::json::FailedChange {
                            service: "tcp-192.0.2.10-443".into(),
                            change: "add destination 198.51.100.13:443 to service TCP \
                                     192.0.2.10:443"
                                .into(),
                            error: "out of memory (ENOMEM)".into(),
                            attempts: 2,
                        }],
                        error: None,
                        foreign: vec!["tcp-192.0.2.99-80".into()],
                        vips: vec!["192.0.2.10".parse().unwrap()],
                    },
                    health: crate::api::json::NodeHealthView {
                        servers: vec![crate::api::json::ProbeView {
                            service: "tcp-192.0.2.10-443".into(),
                            server: "198.51.100.11-443".into(),
                            target: "198.51.100.11:8443".into(),
                            kind: "http".into(),
                            health: crate::api::json::ServerHealthView {
                                state: "up".into(),
                                since: None,
                                checks: 40,
                                latency_us: Some(420),
                                error: None,
                                weight: Some(3),
                            },
                        }],
                        all_down: vec!["tcp-192.0.2.30-80".into()],
                    },
                    problems: vec![crate::api::json::ProblemView {
                        check: "disk".into(),
                        detail: "cannot write log entries under /var/lib/ipvs-manager: No space \
                                 left on device (os error 28) (since 2026-11-26T15:00:00Z)"
                            .into(),
                    }],
                    store: crate::api::json::StoreView {
                        writable: false,
                        error: Some("cannot write log entries: No space left on device".into()),
                        failing_since: Some("2026-11-26T15:00:00Z".into()),
                        damaged: Some(
                            "/var/lib/ipvs-manager: corrupt log record [00, 00, 00, 00, 00, 00, \
                             9d, 13]: checksum mismatch (stored 1c2f0e11, computed 9a04d3b2)"
                                .into(),
                        ),
                        write_failures: 3,
                        recoveries: 0,
                        free_bytes: Some(0),
                    },
                    announce: crate::api::json::AnnounceView {
                        mode: "bgp".into(),
                        state: "announcing".into(),
                        since: Some("2026-11-26T15:00:00Z".into()),
                        problem: None,
                        vips: vec![crate::api::json::VipView {
                            address: "192.0.2.10".parse().unwrap(),
                            services: vec!["tcp-192.0.2.10-443".into()],
                            can_serve: true,
                            announced: true,
                            owner: Some("node1".into()),
                            since: Some("2026-11-26T15:00:00Z".into()),
                            why_not: None,
                        }],
                        bgp: Some(crate::api::json::BgpView {
                            speaker: "bird".into(),
                            local_as: 65001,
                            router_id: "192.0.2.250".parse().unwrap(),
                            table: 221,
                            bfd_detect_ms: Some(300),
                            peers: vec![crate::api::json::BgpPeerView {
                                address: "192.0.2.254".parse().unwrap(),
                                asn: 65000,
                                state: "Established".into(),
                                since: Some("2026-11-26 15:00:00".into()),
                                exported: Some(1),
                                bfd: Some("Up".into()),
                            }],
                        }),
                        // Only one mode's part is there in a real report;
                        // both here, so that the sample covers the schema.
                        l2: Some(crate::api::json::L2View {
                            interface: "eth0".into(),
                            lease_ms: 1000,
                            lease_held: true,
                            lease_left_ms: Some(840),
                            last_announcement: Some("2026-11-26T15:00:00Z".into()),
                        }),
                        sync: Some(crate::api::json::SyncView {
                            interface: "eth1".into(),
                            sync_id: 1,
                            group: "224.0.0.81".parse().unwrap(),
                            port: 8848,
                            ttl: 1,
                            master: true,
                            backup: true,
                            problem: None,
                        }),
                        sysctls: vec![crate::api::json::SysctlView {
                            name: "net.ipv4.vs.sloppy_tcp".into(),
                            wanted: "1".into(),
                            value: Some("1".into()),
                            why: "another node picks up a flow mid-stream".into(),
                            ok: true,
                            problem: None,
                        }],
                    },
                }),
            },
            MemberView {
                id: "node4".into(),
                raft_addr: "127.0.0.1:1114".into(),
                api_addr: "127.0.0.1:2224".into(),
                voter: false,
                last_applied: None,
                reachable: false,
                node: None,
            },
        ],
    };
    let no_leader = ClusterView {
        leader_id: None,
        quorum: crate::api::json::QuorumView {
            ok: false,
            last_contact_ms: None,
            last_leader: None,
            problem: Some("no contact with a quorum since this node started 3.1 s ago".into()),
        },
        ..cluster.clone()
    };
    vec![
        ("Service", to(&service_view(&web))),
        ("Service", to(&service_view(&sip))),
        ("Service", {
            let mut web = web.clone();
            let check = crate::model::HealthCheck {
                port: Some(8443),
                ..crate::model::HealthCheck::new(crate::model::CheckKind::Tcp)
            };
            web.server_checks
                .insert(dest("198.51.100.11", 443).key(), check.clone());
            web.options.health_check = Some(check);
            web.options.health_policy.slow_start_ms = 10_000;
            let mut view = service_view(&web);
            view.servers[0].health.insert(
                "node1".into(),
                crate::api::json::ServerHealthView {
                    state: "down".into(),
                    since: Some("2026-11-26T19:00:00Z".into()),
                    checks: 12,
                    latency_us: Some(310),
                    error: Some("connection refused".into()),
                    weight: Some(0),
                },
            );
            to(&view)
        }),
        ("Config", to(&config_view(&state))),
        ("ConfigPlan", to(&plan)),
        ("Joined", serde_json::json!({"joined": "node4"})),
        (
            "MembershipDryRun",
            to(&crate::api::json::MembershipDryRun {
                dry_run: true,
                status: 204,
                change: "node3 (127.0.0.1:2223) leaves the cluster".into(),
                members: vec!["node1".into(), "node2".into()],
                voters: vec!["node1".into(), "node2".into()],
                quorum: 2,
            }),
        ),
        (
            "DryRun",
            to(&crate::api::json::DryRun {
                dry_run: true,
                status: 201,
                result: to(&service_view(&web)),
                desired: plan.clone(),
                kernels: vec![
                    crate::api::json::NodePlan {
                        node: "node1".into(),
                        changes: vec![crate::api::json::KernelChange {
                            op: "+".into(),
                            change: "add service TCP 192.0.2.30:80".into(),
                        }],
                        error: None,
                    },
                    crate::api::json::NodePlan {
                        node: "node2".into(),
                        changes: vec![],
                        error: Some("did not answer".into()),
                    },
                ],
            }),
        ),
        ("Cluster", to(&cluster)),
        ("Cluster", to(&no_leader)),
        (
            "KernelTable",
            to(&crate::api::json::KernelTable {
                info: crate::ipvs::Info {
                    version: 0x010201,
                    conn_tab_size: 4096,
                },
                services: vec![crate::model::ServiceEntry {
                    service: web.service.clone(),
                    stats: Default::default(),
                    destinations: vec![crate::model::DestEntry::new(dest("198.51.100.11", 443))],
                }],
                owned: vec![web.service.key],
                target: [(
                    crate::api::service_id(&web.service.key),
                    [("198.51.100.11-443".to_string(), 1)].into(),
                )]
                .into(),
            }),
        ),
        (
            "Health",
            to(&HealthView {
                status: "ready".into(),
            }),
        ),
        ("Error", to(&validation.body())),
        ("Error", to(&ApiError::no_leader(1).body())),
        (
            "Error",
            to(&ApiError::revision_compacted("?since", 3, 40).body()),
        ),
        (
            "WatchSync",
            to(&crate::api::json::WatchSync {
                revision: 9,
                services: vec![service_view(&web), service_view(&sip)],
            }),
        ),
        (
            "WatchChanges",
            to(&crate::api::json::WatchChanges {
                revision: 9,
                changes: vec![
                    crate::api::json::WatchChange {
                        kind: "put".into(),
                        id: crate::api::service_id(&sip.service.key),
                        service: Some(service_view(&sip)),
                    },
                    crate::api::json::WatchChange {
                        kind: "delete".into(),
                        id: "tcp-192.0.2.99-80".into(),
                        service: None,
                    },
                ],
            }),
        ),
        (
            "WatchProgress",
            to(&crate::api::json::WatchProgress { revision: 12 }),
        ),
        ("Traffic", to(&traffic_sample())),
        (
            "TrafficNode",
            to(&crate::api::json::TrafficNode {
                reported: false,
                ..Default::default()
            }),
        ),
        ("TrafficDetail", to(&traffic_detail_sample())),
        (
            "TrafficNodeDetail",
            to(&traffic_detail_sample().nodes["node1"]),
        ),
        (
            "TrafficNodeDetail",
            to(&crate::api::json::TrafficNodeDetail {
                reported: false,
                error: Some("node3: did not answer".into()),
                ..Default::default()
            }),
        ),
    ]
}

fn traffic_sample() -> crate::api::json::TrafficView {
    use crate::api::json::{TrafficNode, TrafficRow, TrafficTotal, TrafficView};
    let busy = TrafficNode {
        servers_up: 2,
        servers_total: 2,
        programmed: true,
        active_conns: 12,
        inactive_conns: 30,
        cps: 4,
        inbps: 5200,
        outbps: 88000,
        reported: true,
    };
    TrafficView {
        sampled_every_ms: 10_000,
        sample: 42,
        nodes: vec!["node1".into(), "node2".into()],
        unreachable: vec!["node2".into()],
        full: false,
        services: vec![TrafficRow {
            service: "tcp-192.0.2.10-443".into(),
            nodes: [
                ("node1".to_string(), busy),
                (
                    "node2".to_string(),
                    TrafficNode {
                        reported: false,
                        ..Default::default()
                    },
                ),
            ]
            .into(),
            total: TrafficTotal {
                servers_up: 2,
                servers_total: 2,
                programmed: 1,
                active_conns: 12,
                inactive_conns: 30,
                cps: 4,
                inbps: 5200,
                outbps: 88000,
            },
            cps: vec![3, 5, 4],
        }],
        removed: vec!["udp-192.0.2.53-53".into()],
    }
}

fn traffic_detail_sample() -> crate::api::json::TrafficDetail {
    use crate::api::json::{TrafficDetail, TrafficHistory, TrafficNodeDetail, TrafficServer};
    TrafficDetail {
        service: "tcp-192.0.2.10-443".into(),
        sampled_every_ms: 10_000,
        nodes: [(
            "node1".to_string(),
            TrafficNodeDetail {
                reported: true,
                error: None,
                programmed: true,
                servers: vec![TrafficServer {
                    server: "198.51.100.11-443".into(),
                    weight: Some(1),
                    health: "up".into(),
                    active_conns: 12,
                    inactive_conns: 30,
                    cps: 4,
                    inbps: 5200,
                    outbps: 88000,
                }],
                history: TrafficHistory {
                    at_ms: vec![1_790_000_000_000, 1_790_000_010_000],
                    active_conns: vec![10, 12],
                    inactive_conns: vec![28, 30],
                    cps: vec![5, 4],
                    inbps: vec![6100, 5200],
                    outbps: vec![91000, 88000],
                    inpps: vec![40, 35],
                    outpps: vec![70, 66],
                },
            },
        )]
        .into(),
    }
}

fn to<T: serde::Serialize>(view: &T) -> Value {
    serde_json::to_value(view).expect("views serialise")
}

#[test]
fn samples_fit_the_schemas_and_cover_every_property() {
    let doc = document();
    let mut checker = Checker {
        doc: &doc,
        seen: BTreeSet::new(),
    };
    for (schema, sample) in request_samples() {
        checker.check(&schema_ptr(schema), &sample, schema);
        // What the schema allows, the validators accept.
        let bytes = serde_json::to_vec(&sample).unwrap();
        let accepted = match schema {
            "ServiceInput" => parse_service_create(&bytes).map(|_| ()),
            "ConfigInput" => parse_config(&bytes).map(|_| ()),
            "JoinRequest" => parse_join(&bytes).map(|_| ()),
            other => panic!("no validator for {other}"),
        };
        assert_eq!(accepted, Ok(()), "{schema}: {sample}");
    }
    for (schema, sample) in response_samples() {
        checker.check(&schema_ptr(schema), &sample, schema);
    }
    // A GET result is a valid PUT body (the inputs accept the outputs).
    for (schema, sample) in response_samples() {
        let input = match schema {
            "Service" => "ServiceInput",
            "Config" => "ConfigInput",
            _ => continue,
        };
        checker.check(&schema_ptr(input), &sample, input);
    }
    let missing: Vec<String> = declared_properties(&doc)
        .into_iter()
        .filter(|p| !checker.seen.contains(p))
        .collect();
    assert!(missing.is_empty(), "properties no sample has: {missing:#?}");
}

#[test]
fn every_operation_has_a_unique_id_and_a_summary() {
    let doc = document();
    let mut ids = HashSet::new();
    for route in ROUTES {
        let op = &doc["paths"][route.path][route.method.as_str().to_ascii_lowercase()];
        assert!(op["summary"].is_string(), "{}", route.path);
        assert!(ids.insert(op["operationId"].as_str().unwrap().to_string()));
    }
}

/// The document states what each route needs: nothing for the probes and
/// itself, a token (optional when reads are open) for reads, an admin
/// token for changes; and the 401/403 that follow.
#[test]
fn routes_document_the_access_they_need() {
    use crate::api::auth::Access;
    let doc = document();
    assert_eq!(doc["security"], serde_json::json!([{"bearer": []}]));
    assert_eq!(
        doc["components"]["securitySchemes"]["bearer"]["scheme"],
        "bearer"
    );
    for route in ROUTES {
        let (path, method) = (route.path, route.method.as_str().to_ascii_lowercase());
        let op = &doc["paths"][path][&method];
        let resps = responses(&doc, path, &method);
        let has = |s: &str| resps.iter().any(|(code, _)| code == s);
        match route.operation.access() {
            Access::Public => {
                assert_eq!(op["security"], serde_json::json!([]), "{method} {path}");
                assert!(!has("401") && !has("403"), "{method} {path}");
            }
            Access::Read => {
                assert_eq!(
                    op["security"],
                    serde_json::json!([{"bearer": []}, {}]),
                    "{method} {path}"
                );
                assert!(has("401") && !has("403"), "{method} {path}");
            }
            Access::Write => {
                assert!(op.get("security").is_none(), "{method} {path}");
                assert!(has("401") && has("403"), "{method} {path}");
            }
        }
        if let Some((_, r)) = resps.iter().find(|(code, _)| code == "401") {
            assert!(has_header(r, "WWW-Authenticate"), "{method} {path}");
        }
    }
}

/// Every route but the liveness probe may answer 503: the node takes only
/// so many requests at once (overloaded), besides having no leader.
#[test]
fn routes_document_overload() {
    let doc = document();
    for route in ROUTES {
        let (path, method) = (route.path, route.method.as_str().to_ascii_lowercase());
        let has = responses(&doc, path, &method)
            .iter()
            .any(|(code, _)| code == "503");
        assert_eq!(
            has,
            route.operation != crate::api::Operation::Health,
            "{method} {path}"
        );
    }
}
