//! Errors and their statuses, the refusals of the state machine, the error
//! body; the HTTP helpers (ETag, If-Match, query flags, Location) and the
//! route table.

use super::*;
use crate::api::error::{check_body_size, outcome, ErrorBody, MAX_BODY_BYTES};
use crate::api::http::{etag, parse_if_match, query_flag, server_location, service_location};
use crate::api::routes::{check_query, match_route, Method, Operation, ROUTES};
use crate::model::CommandResult;
use serde_json::json;
use std::collections::HashSet;

#[test]
fn every_code_is_listed_once_with_its_json_name() {
    // The match is exhaustive: a new code does not compile until it is
    // placed here, and the assertion then wants it in ALL at that place.
    use ErrorCode::*;
    for (i, code) in ErrorCode::ALL.iter().enumerate() {
        let position = match code {
            MalformedJson => 0,
            DuplicateKey => 1,
            UnknownField => 2,
            MissingField => 3,
            InvalidType => 4,
            InvalidValue => 5,
            InvalidAddress => 6,
            WrongFamily => 7,
            InvalidPort => 8,
            InvalidFwmark => 9,
            ConflictingFields => 10,
            UnknownScheduler => 11,
            UnknownFlag => 12,
            FlagNotAllowed => 13,
            InvalidTimeout => 14,
            InvalidNetmask => 15,
            UnknownPe => 16,
            PeWithoutPersistence => 17,
            InvalidWeight => 18,
            InvalidThreshold => 19,
            TunnelNotAllowed => 20,
            TunnelPortRequired => 21,
            TunnelOptionNotAllowed => 22,
            IdentityMismatch => 23,
            ReadOnly => 24,
            Duplicate => 25,
            InvalidHeader => 26,
            InvalidQuery => 27,
            NotFound => 28,
            MethodNotAllowed => 29,
            AlreadyExists => 30,
            RevisionMismatch => 31,
            RevisionCompacted => 32,
            BodyTooLarge => 33,
            UnsupportedMediaType => 34,
            IdempotencyKeyReused => 35,
            NoLeader => 36,
            Unavailable => 37,
            Internal => 38,
            OutcomeUnknown => 39,
            NotApplied => 40,
            NoQuorum => 41,
            NotProgrammed => 42,
            Unauthorized => 43,
            Forbidden => 44,
            Overloaded => 45,
            NotReady => 46,
            StoreUnavailable => 47,
        };
        assert_eq!(i, position, "{code}");
        assert_eq!(serde_json::to_value(code).unwrap(), json!(code.as_str()));
    }
    assert_eq!(ErrorCode::ALL.len(), 48);
}

#[test]
fn statuses() {
    use ErrorCode::*;
    for (code, status) in [
        (MalformedJson, 400),
        (UnknownField, 400),
        (WrongFamily, 400),
        (Duplicate, 400),
        (IdentityMismatch, 400),
        (NotFound, 404),
        (MethodNotAllowed, 405),
        (AlreadyExists, 409),
        (RevisionMismatch, 412),
        (RevisionCompacted, 410),
        (BodyTooLarge, 413),
        (UnsupportedMediaType, 415),
        (Internal, 500),
        (NoLeader, 503),
        (Unavailable, 503),
        (NotProgrammed, 504),
        (Unauthorized, 401),
        (Forbidden, 403),
        (Overloaded, 503),
        (NotReady, 503),
        (StoreUnavailable, 503),
        (IdempotencyKeyReused, 422),
        (OutcomeUnknown, 503),
        (NotApplied, 503),
        (NoQuorum, 503),
    ] {
        assert_eq!(code.status(), status, "{code}");
    }
    // Only failures of the nodes are 5xx.
    for code in ErrorCode::ALL {
        let server_side = matches!(
            code,
            Internal
                | NoLeader
                | Unavailable
                | NotProgrammed
                | Overloaded
                | NotReady
                | StoreUnavailable
                | OutcomeUnknown
                | NotApplied
                | NoQuorum
        );
        assert_eq!(code.status() >= 500, server_side, "{code}");
    }
}

#[test]
fn refusals_of_the_state_machine() {
    let key = tcp("192.0.2.10", 80);
    let server = dkey("198.51.100.11", 8080);
    for (result, status, code, mentions) in [
        (
            CommandResult::NoSuchService(key),
            404,
            ErrorCode::NotFound,
            "tcp-192.0.2.10-80",
        ),
        (
            CommandResult::NoSuchServer(key, server),
            404,
            ErrorCode::NotFound,
            "198.51.100.11-8080",
        ),
        (
            CommandResult::ServiceExists(key),
            409,
            ErrorCode::AlreadyExists,
            "tcp-192.0.2.10-80",
        ),
        (
            CommandResult::ServerExists(key, server),
            409,
            ErrorCode::AlreadyExists,
            "198.51.100.11-8080",
        ),
        (
            CommandResult::RevisionMismatch { current: 17 },
            412,
            ErrorCode::RevisionMismatch,
            "17",
        ),
    ] {
        let err = outcome(result.clone()).unwrap_err();
        assert_eq!((err.status(), err.code()), (status, code), "{result:?}");
        assert!(err.message().contains(mentions), "{}", err.message());
        assert_eq!(ApiError::from_refusal(&result), Some(err));
    }
    assert_eq!(outcome(CommandResult::Applied { revision: 9 }), Ok(9));
    assert_eq!(
        ApiError::from_refusal(&CommandResult::Applied { revision: 9 }),
        None
    );
}

#[test]
fn error_bodies() {
    let err = ApiError::at(
        ErrorCode::InvalidWeight,
        "servers[2].weight",
        "weight must be 0 to 2147483647, got -1",
    );
    assert_eq!(
        serde_json::from_slice::<serde_json::Value>(&err.to_json()).unwrap(),
        json!({"error": {"code": "invalid_weight", "message": "weight must be 0 to 2147483647, got -1", "field": "servers[2].weight"}})
    );
    let err = ApiError::no_such_service(&fwmark(Family::Ipv4, 3));
    assert_eq!(
        serde_json::to_value(err.body()).unwrap(),
        json!({"error": {"code": "not_found", "message": "no service fwmark-ipv4-3 (FWM 3)"}})
    );
    // The body reads back (the CLI's client does that).
    let body: ErrorBody = serde_json::from_slice(&err.to_json()).unwrap();
    assert_eq!(body, err.body());
    assert_eq!(
        err.to_string(),
        "no service fwmark-ipv4-3 (FWM 3) (not_found)"
    );
}

#[test]
fn limits_and_unavailability() {
    let err = ApiError::no_leader(2);
    assert_eq!((err.status(), err.retry_after()), (503, Some(2)));
    let err = ApiError::unavailable(1, "the leader 127.0.0.1:2221 did not answer");
    assert_eq!((err.status(), err.retry_after()), (503, Some(1)));
    assert!(err.message().starts_with("the leader"));
    assert_eq!(ApiError::internal("disk").retry_after(), None);
    assert_eq!(check_body_size(MAX_BODY_BYTES, MAX_BODY_BYTES), Ok(()));
    let err = check_body_size(MAX_BODY_BYTES + 1, MAX_BODY_BYTES).unwrap_err();
    assert_eq!(err.status(), 413);
    assert!(err.message().contains("1048576"));
    assert_eq!(ApiError::unsupported_media_type("text/plain").status(), 415);
}

#[test]
fn etags_and_if_match() {
    assert_eq!(etag(42), "\"42\"");
    for (header, want) in [
        (None, Ok(None)),
        (Some("*"), Ok(None)),
        (Some("\"42\""), Ok(Some(42))),
        (Some(" \"42\" "), Ok(Some(42))),
        (Some("42"), Ok(Some(42))),
        (Some("W/\"42\""), Err(ErrorCode::RevisionMismatch)),
        (Some("\"1\", \"2\""), Err(ErrorCode::InvalidHeader)),
        (Some("\"x\""), Err(ErrorCode::InvalidHeader)),
        (Some(""), Err(ErrorCode::InvalidHeader)),
        (Some("\"\""), Err(ErrorCode::InvalidHeader)),
        (Some("\"-1\""), Err(ErrorCode::InvalidHeader)),
        (
            Some("\"18446744073709551616\""),
            Err(ErrorCode::InvalidHeader),
        ),
    ] {
        let got = parse_if_match(header).map_err(|e| e.code());
        assert_eq!(got, want, "{header:?}");
    }
    assert_eq!(parse_if_match(Some(&etag(7))), Ok(Some(7)));
}

#[test]
fn query_flags() {
    for (value, want) in [
        (None, Some(false)),
        (Some("false"), Some(false)),
        (Some("0"), Some(false)),
        (Some("true"), Some(true)),
        (Some("1"), Some(true)),
        (Some(""), Some(true)),
        (Some("yes"), None),
        (Some("TRUE"), None),
    ] {
        let got = query_flag("dry_run", value);
        assert_eq!(got.as_ref().ok().copied(), want, "{value:?}");
        if let Err(e) = got {
            assert_eq!(
                (e.code(), e.field()),
                (ErrorCode::InvalidQuery, Some("?dry_run"))
            );
        }
    }
}

#[test]
fn locations() {
    let key = tcp("192.0.2.10", 80);
    assert_eq!(service_location(&key), "/api/v1/services/tcp-192.0.2.10-80");
    assert_eq!(
        server_location(&key, &dkey("2001:db8::1", 80)),
        "/api/v1/services/tcp-192.0.2.10-80/servers/2001_db8__1-80"
    );
    // A Location is a route.
    let location = server_location(&key, &dkey("2001:db8::1", 80));
    let (route, params) = match_route("GET", &location).unwrap();
    assert_eq!(route.operation, Operation::GetServer);
    assert_eq!(
        params,
        [("id", "tcp-192.0.2.10-80"), ("server_id", "2001_db8__1-80")]
    );
}

#[test]
fn the_route_table() {
    let mut seen = HashSet::new();
    for r in ROUTES {
        assert!(
            seen.insert((r.method, r.path)),
            "twice: {} {}",
            r.method.as_str(),
            r.path
        );
        let has_body = matches!(r.method, Method::Post | Method::Put | Method::Patch);
        assert_eq!(r.max_body > 0, has_body, "{} {}", r.method.as_str(), r.path);
        assert_eq!(Method::parse(r.method.as_str()), Some(r.method));
        // Every route matches its own path, and only itself.
        let (found, _) = match_route(r.method.as_str(), r.path).unwrap();
        assert_eq!(found, r);
    }
    let ops: HashSet<Operation> = ROUTES.iter().map(|r| r.operation).collect();
    assert_eq!(ops.len(), ROUTES.len(), "an operation serves one route");
}

#[test]
fn matching() {
    let (r, p) = match_route("PATCH", "/api/v1/services/fwmark-ipv4-5").unwrap();
    assert_eq!(
        (r.operation, p),
        (Operation::PatchService, vec![("id", "fwmark-ipv4-5")])
    );
    let (r, p) = match_route("DELETE", "/api/v1/cluster/members/node3").unwrap();
    assert_eq!(
        (r.operation, p),
        (Operation::RemoveMember, vec![("node_id", "node3")])
    );
    assert_eq!(
        match_route("GET", "/healthz").unwrap().0.operation,
        Operation::Health
    );
    for (method, path, status) in [
        ("GET", "/api/v1/nothing", 404),
        ("GET", "/api/v1/services/", 404),
        ("GET", "/api/v1/services//servers", 404),
        ("GET", "/api/v1/services/a/servers/b/c", 404),
        ("GET", "", 404),
        ("POST", "/healthz", 405),
        ("DELETE", "/api/v1/config", 405),
        ("HEAD", "/api/v1/services", 405),
    ] {
        let err = match_route(method, path).unwrap_err();
        assert_eq!(err.status(), status, "{method} {path}");
    }
    let err = match_route("POST", "/api/v1/services/x").unwrap_err();
    assert!(
        err.message().contains("GET, PUT, PATCH, DELETE"),
        "{}",
        err.message()
    );
}

#[test]
fn unknown_query_parameters_are_refused_by_name() {
    let (create, _) = match_route("POST", "/api/v1/services").unwrap();
    assert!(check_query(create, ["dry_run", "wait"]).is_ok());
    let err = check_query(create, ["wait", "foo"]).unwrap_err();
    assert_eq!((err.status(), err.field()), (400, Some("?foo")));
    assert_eq!(
        err.message(),
        "unknown query parameter ?foo: POST /api/v1/services takes ?dry_run and ?wait"
    );
    // A misspelt flag is the case that matters: it must not be a change.
    let err = check_query(create, ["dry-run"]).unwrap_err();
    assert_eq!(err.field(), Some("?dry-run"));
    let (ready, _) = match_route("GET", "/readyz").unwrap();
    assert!(check_query(ready, Vec::<String>::new()).is_ok());
    let err = check_query(ready, ["verbose"]).unwrap_err();
    assert!(
        err.message()
            .ends_with("GET /readyz takes no query parameters"),
        "{}",
        err.message()
    );
    let (delete, _) = match_route("DELETE", "/api/v1/services/x").unwrap();
    let err = check_query(delete, ["now"]).unwrap_err();
    assert!(
        err.message().ends_with("takes ?dry_run, ?grace and ?wait"),
        "{}",
        err.message()
    );
}
