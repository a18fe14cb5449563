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
/// refused it, which the ring provider's defaults never make it do; https
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
        let provider = Arc::new(rustls::crypto::ring::default_provider());
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
