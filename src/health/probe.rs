//! One probe of one server: connect (tcp), ask (http, https over TLS), send
//! a datagram (udp) or a query (dns), within the check's timeout. Async and
//! thread-free, so that thousands run on the runtime at once; one connection
//! per probe, never pooled, since a pooled connection proves nothing about
//! the next one.

use crate::model::{CheckKind, HealthCheck, HttpCheck};
use http_body_util::{BodyExt, Empty, Limited};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::net::{TcpStream, UdpSocket};

/// Why a probe failed, as metrics count them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Reason {
    Timeout,
    Refused,
    /// Connecting or sending failed otherwise (unreachable, reset…).
    Network,
    /// An answer, but not a healthy one (status, body, DNS failure).
    Answer,
    /// The answer was not the protocol spoken (TLS, HTTP, DNS).
    Protocol,
    /// Nothing to probe (no port).
    Config,
}

impl Reason {
    pub fn as_str(self) -> &'static str {
        match self {
            Reason::Timeout => "timeout",
            Reason::Refused => "refused",
            Reason::Network => "network",
            Reason::Answer => "answer",
            Reason::Protocol => "protocol",
            Reason::Config => "config",
        }
    }
}

/// A failed probe: the reason and what exactly happened.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure {
    pub reason: Reason,
    pub message: String,
}

impl Failure {
    pub fn new(reason: Reason, message: impl Into<String>) -> Failure {
        Failure {
            reason,
            message: message.into(),
        }
    }

    fn io(e: &std::io::Error) -> Failure {
        let reason = match e.kind() {
            std::io::ErrorKind::ConnectionRefused => Reason::Refused,
            std::io::ErrorKind::TimedOut => Reason::Timeout,
            _ => Reason::Network,
        };
        Failure::new(reason, e.to_string())
    }
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.reason.as_str(), self.message)
    }
}

/// What probes share: the TLS client configuration (`None` if rustls
/// refused it, which the aws-lc-rs provider's defaults never make it do; https
/// probes then fail with the reason).
#[derive(Clone)]
pub struct Prober {
    tls: Option<tokio_rustls::TlsConnector>,
}

impl Default for Prober {
    fn default() -> Prober {
        Prober::new()
    }
}

impl Prober {
    pub fn new() -> Prober {
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let tls = rustls::ClientConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .map(|b| {
                b.dangerous()
                    .with_custom_certificate_verifier(Arc::new(AnyCertificate(provider)))
                    .with_no_client_auth()
            })
            .ok()
            .map(|config| tokio_rustls::TlsConnector::from(Arc::new(config)));
        Prober { tls }
    }

    /// Probes `target` as `check` says; the time it took, or why it failed.
    pub async fn probe(&self, check: &HealthCheck, target: SocketAddr) -> super::Outcome {
        if target.port() == 0 && check.kind != CheckKind::None {
            return Err(Failure::new(
                Reason::Config,
                "the server has no port (a firewall-mark service): set health_check.port",
            ));
        }
        let timeout = Duration::from_millis(u64::from(check.timeout_ms));
        let started = Instant::now();
        let run = async {
            match check.kind {
                CheckKind::None => Ok(()),
                CheckKind::Tcp => TcpStream::connect(target)
                    .await
                    .map(drop)
                    .map_err(|e| Failure::io(&e)),
                CheckKind::Http | CheckKind::Https => self.http(check, target).await,
                CheckKind::Udp => udp(check.payload.as_deref().unwrap_or(""), target).await,
                CheckKind::Dns => dns(check.payload.as_deref().unwrap_or("."), target).await,
            }
        };
        match tokio::time::timeout(timeout, run).await {
            Ok(Ok(())) => Ok(started.elapsed()),
            Ok(Err(failure)) => Err(failure),
            Err(_) => Err(Failure::new(
                Reason::Timeout,
                format!("no answer within {} ms", check.timeout_ms),
            )),
        }
    }

    async fn http(&self, check: &HealthCheck, target: SocketAddr) -> Result<(), Failure> {
        let default = HttpCheck {
            method: "GET".into(),
            path: "/".into(),
            expect: vec![200],
            body: None,
            host: None,
        };
        let http = check.http.as_ref().unwrap_or(&default);
        let stream = TcpStream::connect(target)
            .await
            .map_err(|e| Failure::io(&e))?;
        let host = http.host.clone().unwrap_or_else(|| match target {
            SocketAddr::V4(a) => a.to_string(),
            SocketAddr::V6(a) => a.to_string(),
        });
        if check.kind == CheckKind::Https {
            let name = rustls::pki_types::ServerName::try_from(
                http.host.clone().unwrap_or_else(|| target.ip().to_string()),
            )
            .unwrap_or_else(|_| rustls::pki_types::ServerName::IpAddress(target.ip().into()));
            let connector = self
                .tls
                .as_ref()
                .ok_or_else(|| Failure::new(Reason::Config, "TLS is unavailable"))?;
            let tls = connector
                .connect(name, stream)
                .await
                .map_err(|e| Failure::new(Reason::Protocol, format!("TLS: {e}")))?;
            exchange(tls, http, &host).await
        } else {
            exchange(stream, http, &host).await
        }
    }
}

/// One HTTP/1.1 request on `io` and the judgement of its answer.
async fn exchange<IO>(io: IO, http: &HttpCheck, host: &str) -> Result<(), Failure>
where
    IO: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let protocol = |e: hyper::Error| Failure::new(Reason::Protocol, format!("HTTP: {e}"));
    let (mut sender, conn) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(io))
            .await
            .map_err(protocol)?;
    // The connection task ends with the exchange (or with the probe's
    // timeout, which drops it).
    let conn = tokio::spawn(async move {
        let _ = conn.await;
    });
    let request = hyper::Request::builder()
        .method(http.method.as_str())
        .uri(http.path.as_str())
        .header(hyper::header::HOST, host)
        .header(hyper::header::USER_AGENT, "ipvs-manager-health-check")
        .header(hyper::header::CONNECTION, "close")
        .body(Empty::<hyper::body::Bytes>::new())
        .map_err(|e| Failure::new(Reason::Config, format!("bad request: {e}")))?;
    let result = async {
        let response = sender.send_request(request).await.map_err(protocol)?;
        let status = response.status().as_u16();
        if !http.expect.contains(&status) {
            return Err(Failure::new(
                Reason::Answer,
                format!("status {status}, expected one of {:?}", http.expect),
            ));
        }
        if let Some(wanted) = &http.body {
            // Enough for a health page; a larger body is cut, not read on.
            let body = Limited::new(response.into_body(), 64 * 1024)
                .collect()
                .await
                .map_err(|e| Failure::new(Reason::Protocol, format!("body: {e}")))?
                .to_bytes();
            if !String::from_utf8_lossy(&body).contains(wanted.as_str()) {
                return Err(Failure::new(
                    Reason::Answer,
                    format!("the body does not contain {wanted:?}"),
                ));
            }
        }
        Ok(())
    }
    .await;
    conn.abort();
    result
}

/// Sends `payload` and waits for any answer; an ICMP port unreachable
/// arrives as a refused receive on the connected socket.
async fn udp(payload: &str, target: SocketAddr) -> Result<(), Failure> {
    let socket = connected_udp(target).await?;
    socket
        .send(payload.as_bytes())
        .await
        .map_err(|e| Failure::io(&e))?;
    let mut buf = [0u8; 512];
    socket.recv(&mut buf).await.map_err(|e| Failure::io(&e))?;
    Ok(())
}

async fn connected_udp(target: SocketAddr) -> Result<UdpSocket, Failure> {
    let local: SocketAddr = if target.is_ipv4() {
        ([0, 0, 0, 0], 0).into()
    } else {
        (std::net::Ipv6Addr::UNSPECIFIED, 0).into()
    };
    let socket = UdpSocket::bind(local).await.map_err(|e| Failure::io(&e))?;
    socket.connect(target).await.map_err(|e| Failure::io(&e))?;
    Ok(socket)
}

/// Queries `name` (type A, recursion desired) and accepts an answer to
/// this query that is not a server failure: NOERROR or NXDOMAIN both show
/// a working server.
async fn dns(name: &str, target: SocketAddr) -> Result<(), Failure> {
    let id: u16 = rand_id();
    let query = dns_query(id, name)
        .ok_or_else(|| Failure::new(Reason::Config, format!("{name:?} is not a DNS name")))?;
    let socket = connected_udp(target).await?;
    socket.send(&query).await.map_err(|e| Failure::io(&e))?;
    let mut buf = [0u8; 1500];
    loop {
        let n = socket.recv(&mut buf).await.map_err(|e| Failure::io(&e))?;
        // A stray datagram (not our id, not a response) is skipped.
        if n < 12 || u16::from_be_bytes([buf[0], buf[1]]) != id || buf[2] & 0x80 == 0 {
            continue;
        }
        return match buf[3] & 0x0f {
            0 | 3 => Ok(()),
            rcode => Err(Failure::new(
                Reason::Answer,
                format!("DNS answer code {rcode} for {name}"),
            )),
        };
    }
}

/// A DNS query message for `name`, type A, class IN.
pub fn dns_query(id: u16, name: &str) -> Option<Vec<u8>> {
    let mut msg = Vec::with_capacity(18 + name.len());
    msg.extend_from_slice(&id.to_be_bytes());
    msg.extend_from_slice(&[0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0]);
    for label in name
        .trim_end_matches('.')
        .split('.')
        .filter(|l| !l.is_empty())
    {
        if label.len() > 63 || !label.is_ascii() {
            return None;
        }
        msg.push(label.len() as u8);
        msg.extend_from_slice(label.as_bytes());
    }
    msg.push(0);
    msg.extend_from_slice(&[0, 1, 0, 1]);
    (msg.len() <= 512).then_some(msg)
}

/// A query id that differs from probe to probe (not a secret: the socket
/// is connected to the server, so only it can answer).
fn rand_id() -> u16 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos()),
    );
    h.finish() as u16
}

/// Accepts any certificate: a health check tests that the server answers,
/// and back-ends often carry self-signed or internal certificates. The
/// handshake signatures are still checked.
#[derive(Debug)]
struct AnyCertificate(Arc<rustls::crypto::CryptoProvider>);

impl rustls::client::danger::ServerCertVerifier for AnyCertificate {
    fn verify_server_cert(
        &self,
        _end_entity: &rustls::pki_types::CertificateDer<'_>,
        _intermediates: &[rustls::pki_types::CertificateDer<'_>],
        _server_name: &rustls::pki_types::ServerName<'_>,
        _ocsp_response: &[u8],
        _now: rustls::pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        Ok(rustls::client::danger::ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &rustls::pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &rustls::pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpListener;

    fn check(kind: CheckKind) -> HealthCheck {
        HealthCheck {
            timeout_ms: 500,
            ..HealthCheck::new(kind)
        }
    }

    fn http_check(
        kind: CheckKind,
        path: &str,
        expect: Vec<u16>,
        body: Option<&str>,
    ) -> HealthCheck {
        HealthCheck {
            http: Some(HttpCheck {
                method: "GET".into(),
                path: path.into(),
                expect,
                body: body.map(String::from),
                host: Some("web.example".into()),
            }),
            ..check(kind)
        }
    }

    /// A port nothing listens on.
    async fn closed_port() -> SocketAddr {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        drop(l);
        addr
    }

    /// An HTTP server answering `/health` with 200 "ok <host>" and
    /// anything else with 503; it records the request heads it gets.
    async fn http_server() -> SocketAddr {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        tokio::spawn(async move {
            while let Ok((mut s, _)) = l.accept().await {
                tokio::spawn(async move {
                    let mut buf = vec![0u8; 4096];
                    let n = s.read(&mut buf).await.unwrap_or(0);
                    let head = String::from_utf8_lossy(&buf[..n]).to_string();
                    let host = head
                        .lines()
                        .find_map(|l| l.strip_prefix("host: "))
                        .unwrap_or("?")
                        .to_string();
                    let reply = if head.starts_with("GET /health HTTP/1.1") {
                        let body = format!("ok {host}");
                        format!(
                            "HTTP/1.1 200 OK\r\ncontent-length: {}\r\n\r\n{body}",
                            body.len()
                        )
                    } else {
                        "HTTP/1.1 503 Service Unavailable\r\ncontent-length: 0\r\n\r\n".to_string()
                    };
                    let _ = s.write_all(reply.as_bytes()).await;
                });
            }
        });
        addr
    }

    #[tokio::test]
    async fn tcp_connects_or_is_refused() {
        let p = Prober::new();
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let up = l.local_addr().unwrap();
        assert!(p.probe(&check(CheckKind::Tcp), up).await.is_ok());
        let err = p
            .probe(&check(CheckKind::Tcp), closed_port().await)
            .await
            .unwrap_err();
        assert_eq!(err.reason, Reason::Refused, "{err}");
    }

    #[tokio::test]
    async fn http_judges_status_body_and_sends_the_host() {
        let p = Prober::new();
        let server = http_server().await;
        let ok = http_check(
            CheckKind::Http,
            "/health",
            vec![200],
            Some("ok web.example"),
        );
        assert!(p.probe(&ok, server).await.is_ok());
        let wrong_path = http_check(CheckKind::Http, "/", vec![200], None);
        let err = p.probe(&wrong_path, server).await.unwrap_err();
        assert_eq!(err.reason, Reason::Answer);
        assert!(err.message.contains("status 503"), "{err}");
        let wrong_body = http_check(CheckKind::Http, "/health", vec![200], Some("ready"));
        let err = p.probe(&wrong_body, server).await.unwrap_err();
        assert!(err.message.contains("does not contain"), "{err}");
        // 503 can be what healthy means, if the operator says so.
        let maintenance = http_check(CheckKind::Http, "/", vec![503], None);
        assert!(p.probe(&maintenance, server).await.is_ok());
    }

    #[tokio::test]
    async fn a_silent_server_times_out() {
        let p = Prober::new();
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        // Accepts, then says nothing.
        tokio::spawn(async move {
            let mut held = Vec::new();
            while let Ok((s, _)) = l.accept().await {
                held.push(s);
            }
        });
        let c = HealthCheck {
            timeout_ms: 100,
            ..http_check(CheckKind::Http, "/", vec![200], None)
        };
        let err = p.probe(&c, addr).await.unwrap_err();
        assert_eq!(err.reason, Reason::Timeout, "{err}");
    }

    #[tokio::test]
    async fn https_accepts_a_self_signed_certificate() {
        let cert = rcgen::generate_simple_self_signed(vec!["localhost".into()]).unwrap();
        let config = rustls::ServerConfig::builder_with_provider(Arc::new(
            rustls::crypto::aws_lc_rs::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(
            vec![cert.cert.der().clone()],
            rustls::pki_types::PrivateKeyDer::Pkcs8(cert.signing_key.serialize_der().into()),
        )
        .unwrap();
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        tokio::spawn(async move {
            while let Ok((s, _)) = l.accept().await {
                let acceptor = acceptor.clone();
                tokio::spawn(async move {
                    let Ok(mut tls) = acceptor.accept(s).await else {
                        return;
                    };
                    let mut buf = vec![0u8; 4096];
                    let _ = tls.read(&mut buf).await;
                    let _ = tls
                        .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok")
                        .await;
                    let _ = tls.shutdown().await;
                });
            }
        });
        let p = Prober::new();
        let c = http_check(CheckKind::Https, "/", vec![200], Some("ok"));
        assert_eq!(p.probe(&c, addr).await.map(|_| ()), Ok(()));
        // Plain HTTP against it is a protocol failure, not a hang.
        let plain = http_check(CheckKind::Http, "/", vec![200], None);
        let err = p.probe(&plain, addr).await.unwrap_err();
        assert!(
            matches!(err.reason, Reason::Protocol | Reason::Timeout),
            "{err}"
        );
    }

    #[tokio::test]
    async fn udp_needs_an_answer_and_an_unreachable_port_is_refused() {
        let p = Prober::new();
        let echo = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let addr = echo.local_addr().unwrap();
        tokio::spawn(async move {
            let mut buf = [0u8; 512];
            while let Ok((n, from)) = echo.recv_from(&mut buf).await {
                let _ = echo.send_to(&buf[..n], from).await;
            }
        });
        let c = HealthCheck {
            payload: Some("ping".into()),
            ..check(CheckKind::Udp)
        };
        assert!(p.probe(&c, addr).await.is_ok());
        let closed = {
            let s = UdpSocket::bind("127.0.0.1:0").await.unwrap();
            s.local_addr().unwrap()
        };
        let err = p.probe(&c, closed).await.unwrap_err();
        assert_eq!(err.reason, Reason::Refused, "{err}");
    }

    /// A DNS server answering every query with `rcode`.
    async fn dns_server(rcode: u8) -> SocketAddr {
        let s = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let addr = s.local_addr().unwrap();
        tokio::spawn(async move {
            let mut buf = [0u8; 512];
            while let Ok((n, from)) = s.recv_from(&mut buf).await {
                let mut reply = buf[..n].to_vec();
                reply[2] |= 0x80; // a response
                reply[3] = (reply[3] & 0xf0) | rcode;
                let _ = s.send_to(&reply, from).await;
            }
        });
        addr
    }

    #[tokio::test]
    async fn dns_accepts_answers_but_not_server_failures() {
        let p = Prober::new();
        let c = HealthCheck {
            payload: Some("www.example.".into()),
            ..check(CheckKind::Dns)
        };
        assert!(p.probe(&c, dns_server(0).await).await.is_ok());
        assert!(
            p.probe(&c, dns_server(3).await).await.is_ok(),
            "NXDOMAIN is an answer"
        );
        let err = p.probe(&c, dns_server(2).await).await.unwrap_err();
        assert_eq!(err.reason, Reason::Answer);
        assert!(err.message.contains("code 2"), "{err}");
    }

    #[test]
    fn dns_queries_are_well_formed() {
        let q = dns_query(0x1234, "www.example.").unwrap();
        assert_eq!(
            q,
            [
                &[0x12, 0x34, 0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0][..],
                &[3, b'w', b'w', b'w', 7, b'e', b'x', b'a', b'm', b'p', b'l', b'e', 0],
                &[0, 1, 0, 1],
            ]
            .concat()
        );
        assert_eq!(
            dns_query(1, &"a".repeat(64)),
            None,
            "labels are at most 63 bytes"
        );
    }

    #[tokio::test]
    async fn a_server_without_a_port_is_a_configuration_problem() {
        let p = Prober::new();
        let err = p
            .probe(&check(CheckKind::Tcp), "127.0.0.1:0".parse().unwrap())
            .await
            .unwrap_err();
        assert_eq!(err.reason, Reason::Config);
    }
}
