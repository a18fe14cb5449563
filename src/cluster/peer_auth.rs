//! Authentication between nodes. With a cluster secret (`CLUSTER_SECRET`)
//! every request a node sends another — Raft RPCs, forwarded writes, node
//! reports, joins — carries `X-Ipvs-Manager-Peer: t=<unix seconds>,
//! mac=<hex>`, an HMAC-SHA256 keyed by the secret over the method, the path
//! and query, the time and the body; the Raft port refuses (401) anything
//! else. The secret itself never crosses the network: a node with another
//! secret, or none, can neither join nor send Raft messages, and a captured
//! request cannot be altered or replayed later than [`MAX_SKEW`] from its
//! time. It authenticates, it does not encrypt: the Raft port should sit on
//! a network only the load balancers share.
//!
//! [`Peers`] is the HTTP client that signs; [`guard`] is the Raft port's
//! middleware that checks.

use actix_web::body::{EitherBody, MessageBody};
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::middleware::Next;
use actix_web::web::{Bytes, Data};
use actix_web::HttpResponse;
use aws_lc_rs::hmac;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

/// The header that carries the signature.
pub const HEADER: &str = "x-ipvs-manager-peer";

/// How far a request's time may be from ours, in seconds (Kerberos' default
/// tolerance): the nodes' clocks must agree this well (NTP).
pub const MAX_SKEW: u64 = 300;

/// Shortest secret accepted, in characters.
pub const MIN_SECRET_LEN: usize = 32;

/// Why a peer's request was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    #[error("no {HEADER} header: the sender has no CLUSTER_SECRET")]
    Missing,
    #[error("a malformed {HEADER} header")]
    Malformed,
    #[error(
        "the sender's clock differs from ours by {0} s (more than {MAX_SKEW}); \
         keep the nodes' clocks in sync (NTP)"
    )]
    Skew(i64),
    #[error("the signature does not match: the sender's CLUSTER_SECRET differs")]
    BadMac,
}

/// The cluster secret as an HMAC key, or nothing (peers unauthenticated).
#[derive(Clone, Default)]
pub struct PeerAuth {
    key: Option<Arc<hmac::Key>>,
}

impl std::fmt::Debug for PeerAuth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self.key {
            Some(_) => "PeerAuth(secret)",
            None => "PeerAuth(none)",
        })
    }
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

impl PeerAuth {
    pub fn new(secret: Option<&str>) -> PeerAuth {
        PeerAuth {
            key: secret.map(|s| Arc::new(hmac::Key::new(hmac::HMAC_SHA256, s.as_bytes()))),
        }
    }

    /// Whether peers must sign.
    pub fn required(&self) -> bool {
        self.key.is_some()
    }

    fn mac(key: &hmac::Key, method: &str, target: &str, time: u64, body: &[u8]) -> hmac::Tag {
        let mut ctx = hmac::Context::with_key(key);
        ctx.update(format!("ipvs-manager peer v1\n{method}\n{target}\n{time}\n").as_bytes());
        ctx.update(body);
        ctx.sign()
    }

    /// The header value for a request (`target`: path and query), or
    /// `None` without a secret.
    pub fn sign(&self, method: &str, target: &str, body: &[u8], now: u64) -> Option<String> {
        let key = self.key.as_ref()?;
        let tag = PeerAuth::mac(key, method, target, now, body);
        Some(format!("t={now},mac={}", hex::encode(tag.as_ref())))
    }

    /// Checks a request's header; always `Ok` without a secret.
    pub fn verify(
        &self,
        header: Option<&[u8]>,
        method: &str,
        target: &str,
        body: &[u8],
        now: u64,
    ) -> Result<(), Refusal> {
        let Some(key) = &self.key else {
            return Ok(());
        };
        let header =
            std::str::from_utf8(header.ok_or(Refusal::Missing)?).map_err(|_| Refusal::Malformed)?;
        let (time, mac) = header
            .split_once(',')
            .and_then(|(t, m)| Some((t.strip_prefix("t=")?, m.strip_prefix("mac=")?)))
            .ok_or(Refusal::Malformed)?;
        let time: u64 = time.parse().map_err(|_| Refusal::Malformed)?;
        let mac = hex::decode(mac).map_err(|_| Refusal::Malformed)?;
        let skew = i64::try_from(now).unwrap_or(i64::MAX) - i64::try_from(time).unwrap_or(0);
        if skew.unsigned_abs() > MAX_SKEW {
            return Err(Refusal::Skew(skew));
        }
        // The time is signed: the check below also holds it.
        let mut input = format!("ipvs-manager peer v1\n{method}\n{target}\n{time}\n").into_bytes();
        input.extend_from_slice(body);
        hmac::verify(key, &input, &mac).map_err(|_| Refusal::BadMac)
    }
}

/// The HTTP client nodes use for one another: every request signed.
#[derive(Clone)]
pub struct Peers {
    http: reqwest::Client,
    auth: PeerAuth,
}

impl Peers {
    pub fn new(http: reqwest::Client, auth: PeerAuth) -> Peers {
        Peers { http, auth }
    }

    pub fn auth(&self) -> &PeerAuth {
        &self.auth
    }

    /// A signed request to `url` with `body` (sent as JSON when not empty).
    pub fn request(
        &self,
        method: reqwest::Method,
        url: &str,
        body: Vec<u8>,
    ) -> reqwest::RequestBuilder {
        let mut req = self.http.request(method.clone(), url);
        let target = reqwest::Url::parse(url).ok().map(|u| match u.query() {
            Some(q) => format!("{}?{q}", u.path()),
            None => u.path().to_string(),
        });
        if let Some(target) = target {
            if let Some(value) = self.auth.sign(method.as_str(), &target, &body, unix_now()) {
                req = req.header(HEADER, value);
            }
        }
        if !body.is_empty() {
            req = req
                .header(reqwest::header::CONTENT_TYPE, "application/json")
                .body(body);
        }
        req
    }

    pub fn get(&self, url: &str) -> reqwest::RequestBuilder {
        self.request(reqwest::Method::GET, url, Vec::new())
    }

    pub fn delete(&self, url: &str) -> reqwest::RequestBuilder {
        self.request(reqwest::Method::DELETE, url, Vec::new())
    }

    /// A signed POST of `value` as JSON.
    pub fn post_json<T: serde::Serialize>(
        &self,
        url: &str,
        value: &T,
    ) -> Result<reqwest::RequestBuilder, serde_json::Error> {
        Ok(self.request(reqwest::Method::POST, url, serde_json::to_vec(value)?))
    }
}

/// Checks a request as the API's join endpoint receives it.
pub fn verify_http(
    auth: &PeerAuth,
    req: &actix_web::HttpRequest,
    body: &[u8],
) -> Result<(), Refusal> {
    let target = req.uri().path_and_query().map_or("/", |p| p.as_str());
    auth.verify(
        req.headers().get(HEADER).map(|v| v.as_bytes()),
        req.method().as_str(),
        target,
        body,
        unix_now(),
    )
}

/// When the last refusal was logged (unix seconds): a node with the wrong
/// secret retries many times a second, and one line every few seconds says
/// it all.
static LAST_LOGGED: AtomicU64 = AtomicU64::new(0);

/// The Raft port's middleware: with a secret, a request whose signature
/// does not check is answered 401 and goes no further. It needs
/// `Data<PeerAuth>` and a `PayloadConfig` as large as the largest RPC.
pub async fn guard(
    mut req: ServiceRequest,
    next: Next<impl MessageBody>,
) -> Result<ServiceResponse<EitherBody<impl MessageBody>>, actix_web::Error> {
    let auth = req.app_data::<Data<PeerAuth>>().cloned();
    let Some(auth) = auth.filter(|a| a.required()) else {
        return next
            .call(req)
            .await
            .map(ServiceResponse::map_into_left_body);
    };
    let body = req.extract::<Bytes>().await?;
    let verdict = verify_http(&auth, req.request(), &body);
    match verdict {
        Ok(()) => {
            req.set_payload(body.into());
            next.call(req)
                .await
                .map(ServiceResponse::map_into_left_body)
        }
        Err(refusal) => {
            let now = unix_now();
            let last = LAST_LOGGED.load(Ordering::Relaxed);
            if now >= last + 5
                && LAST_LOGGED
                    .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
                    .is_ok()
            {
                let from = req
                    .peer_addr()
                    .map(|a| a.ip().to_string())
                    .unwrap_or_default();
                tracing::warn!(%from, path = req.path(), reason = %refusal, "refused a peer request");
            }
            let body = crate::api::ApiError::new(
                crate::api::ErrorCode::Unauthorized,
                format!("refused by the cluster secret: {refusal}"),
            )
            .to_json();
            let response = HttpResponse::Unauthorized()
                .content_type("application/json")
                .body(body);
            Ok(req.into_response(response).map_into_right_body())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &str = "0123456789abcdef0123456789abcdef";

    #[test]
    fn signatures_check_and_name_what_is_wrong() {
        let a = PeerAuth::new(Some(SECRET));
        let b = PeerAuth::new(Some("another secret, just as long as the first"));
        let none = PeerAuth::new(None);
        let now = 1_800_000_000;
        let h = a.sign("POST", "/raft/vote", b"{}", now).unwrap();
        let check = |auth: &PeerAuth, header: Option<&str>, method, target, body: &[u8], at| {
            auth.verify(header.map(str::as_bytes), method, target, body, at)
        };
        assert_eq!(
            check(&a, Some(&h), "POST", "/raft/vote", b"{}", now),
            Ok(())
        );
        assert_eq!(
            check(&a, Some(&h), "POST", "/raft/vote", b"{}", now + 300),
            Ok(())
        );
        assert_eq!(
            check(&a, Some(&h), "POST", "/raft/vote", b"{}", now + 301),
            Err(Refusal::Skew(301))
        );
        assert_eq!(
            check(&a, Some(&h), "POST", "/raft/vote", b"{}", now - 400),
            Err(Refusal::Skew(-400))
        );
        for (method, target, body) in [
            ("GET", "/raft/vote", &b"{}"[..]),
            ("POST", "/raft/append", b"{}"),
            ("POST", "/raft/vote?x=1", b"{}"),
            ("POST", "/raft/vote", b"{ }"),
        ] {
            assert_eq!(
                check(&a, Some(&h), method, target, body, now),
                Err(Refusal::BadMac),
                "{method} {target}"
            );
        }
        assert_eq!(
            check(&b, Some(&h), "POST", "/raft/vote", b"{}", now),
            Err(Refusal::BadMac)
        );
        assert_eq!(
            check(&a, None, "POST", "/raft/vote", b"{}", now),
            Err(Refusal::Missing)
        );
        // Moving the time invalidates the signature.
        let moved = h.replace(&format!("t={now}"), &format!("t={}", now + 1));
        assert_eq!(
            check(&a, Some(&moved), "POST", "/raft/vote", b"{}", now),
            Err(Refusal::BadMac)
        );
        for bad in [
            "",
            "t=1",
            "mac=00",
            "t=x,mac=00",
            "t=1,mac=0g",
            "t=1,mac=123",
        ] {
            assert_eq!(
                check(&a, Some(bad), "GET", "/", b"", now),
                Err(Refusal::Malformed),
                "{bad}"
            );
        }
        assert_eq!(check(&none, None, "GET", "/", b"", now), Ok(()));
        assert_eq!(none.sign("GET", "/", b"", now), None);
        assert!(!format!("{a:?}").contains(SECRET));
    }
}
