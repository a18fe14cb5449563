//! Who may call what: the API tokens of `API_TOKENS_FILE`, each `admin`
//! (everything) or `read` (reads only); the access each operation needs;
//! and the check of a request's `Authorization: Bearer` header (401 without
//! a token or with an unknown one, 403 for a read token on a write).
//!
//! Tokens are kept as SHA-256 digests and a presented token is hashed and
//! compared with every one of them in constant time, so neither the
//! comparison nor the table's layout tells an attacker how close a guess
//! was. Pure code: the file is read by the daemon, the header by the server.

use super::{ApiError, ErrorCode, Operation};
use aws_lc_rs::constant_time::verify_slices_are_equal;
use aws_lc_rs::digest::{digest, SHA256};

/// Shortest token accepted: 128 bits of hex, so that guessing is hopeless.
pub const MIN_TOKEN_LEN: usize = 32;

/// What a token may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// Every operation.
    Admin,
    /// Reads only.
    Read,
}

/// What an operation needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// Probes and the API's description: never a token.
    Public,
    /// A read or admin token, unless reads are open (`API_OPEN_READS`).
    Read,
    /// An admin token.
    Write,
}

impl Operation {
    pub fn access(self) -> Access {
        use Operation::*;
        match self {
            // The web UI's page and assets hold no data: the page asks for
            // a token when the API answers 401.
            Health | Ready | OpenApi | Ui | UiAsset => Access::Public,
            ListServices | GetService | ListServers | GetServer | GetConfig | GetCluster
            | GetNode | GetNodeKernel | GetMemberKernel | GetTraffic | GetServiceTraffic
            | Metrics => Access::Read,
            CreateService | ReplaceService | PatchService | DeleteService | CreateServer
            | ReplaceServer | PatchServer | DeleteServer | ReplaceConfig | JoinCluster
            | RemoveMember => Access::Write,
        }
    }
}

/// A problem in the token file, with its line number.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("line {line}: {problem}")]
pub struct TokenFileError {
    pub line: usize,
    pub problem: String,
}

/// The configured tokens.
#[derive(Clone)]
pub struct Tokens {
    entries: Vec<([u8; 32], Role)>,
}

impl std::fmt::Debug for Tokens {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the digests: a log line must not help a guesser.
        write!(f, "Tokens({} configured)", self.entries.len())
    }
}

fn sha256(token: &[u8]) -> [u8; 32] {
    let mut out = [0u8; 32];
    out.copy_from_slice(digest(&SHA256, token).as_ref());
    out
}

impl Tokens {
    /// Parses a token file: one token a line, `admin TOKEN` or `read TOKEN`;
    /// blank lines and lines starting with `#` are skipped. A file without a
    /// token is refused too: it would leave the API open by mistake.
    pub fn parse(text: &str) -> Result<Tokens, TokenFileError> {
        let mut entries: Vec<([u8; 32], Role)> = Vec::new();
        let mut lines = 0;
        for (i, raw) in text.lines().enumerate() {
            lines = i + 1;
            let error = |problem: String| TokenFileError {
                line: i + 1,
                problem,
            };
            let line = raw.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let fields: Vec<&str> = line.split_whitespace().collect();
            let (role, token) = match fields.as_slice() {
                [role, token] => (*role, *token),
                _ => {
                    return Err(error(format!(
                        "expected `admin TOKEN` or `read TOKEN`, got {} fields",
                        fields.len()
                    )))
                }
            };
            let role = match role {
                "admin" => Role::Admin,
                "read" => Role::Read,
                other => {
                    return Err(error(format!(
                        "unknown role {other:?}: a token is `admin` or `read`"
                    )))
                }
            };
            if token.len() < MIN_TOKEN_LEN {
                return Err(error(format!(
                    "the token is {} characters; at least {MIN_TOKEN_LEN} are needed \
                     (make one with `openssl rand -hex 32`)",
                    token.len()
                )));
            }
            if !token.bytes().all(|b| b.is_ascii_graphic()) {
                return Err(error(
                    "a token is printable ASCII without spaces (it travels in an HTTP header)"
                        .into(),
                ));
            }
            let hashed = sha256(token.as_bytes());
            if entries.iter().any(|(d, _)| *d == hashed) {
                return Err(error("the same token is listed twice".into()));
            }
            entries.push((hashed, role));
        }
        if entries.is_empty() {
            return Err(TokenFileError {
                line: lines,
                problem: "no token in the file (lines are `admin TOKEN` or `read TOKEN`)".into(),
            });
        }
        Ok(Tokens { entries })
    }

    /// The role of `token`, if it is one of ours. Every entry is compared,
    /// each in constant time.
    pub fn role(&self, token: &[u8]) -> Option<Role> {
        let presented = sha256(token);
        let mut found = None;
        for (d, role) in &self.entries {
            if verify_slices_are_equal(d, &presented).is_ok() {
                found = Some(*role);
            }
        }
        found
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

/// Who may do what on this node's API.
#[derive(Debug, Clone)]
pub struct Policy {
    /// `None`: no token configured, every request is allowed (the API then
    /// listens on loopback unless the operator opened it).
    pub tokens: Option<Tokens>,
    /// Reads without a token (`API_OPEN_READS`).
    pub open_reads: bool,
}

/// `WWW-Authenticate` of a 401.
pub const CHALLENGE: &str = "Bearer realm=\"ipvs-manager\"";

impl Policy {
    pub fn open() -> Policy {
        Policy {
            tokens: None,
            open_reads: true,
        }
    }

    /// Whether a request with this `Authorization` header value may do
    /// something needing `access`.
    pub fn check(&self, access: Access, authorization: Option<&[u8]>) -> Result<(), ApiError> {
        let Some(tokens) = &self.tokens else {
            return Ok(());
        };
        if access == Access::Public || access == Access::Read && self.open_reads {
            return Ok(());
        }
        let Some(header) = authorization else {
            return Err(ApiError::new(
                ErrorCode::Unauthorized,
                "this API requires a token: send `Authorization: Bearer TOKEN` \
                 (the CLI: --token or IPVS_MANAGER_TOKEN)",
            ));
        };
        let token = bearer(header).ok_or_else(|| {
            ApiError::new(
                ErrorCode::Unauthorized,
                "the Authorization header must be `Bearer TOKEN`",
            )
        })?;
        match (tokens.role(token), access) {
            (None, _) => Err(ApiError::new(
                ErrorCode::Unauthorized,
                "unknown token: it is not in this node's API_TOKENS_FILE",
            )),
            (Some(Role::Read), Access::Write) => Err(ApiError::new(
                ErrorCode::Forbidden,
                "this token may only read: changes need an admin token",
            )),
            (Some(_), _) => Ok(()),
        }
    }
}

/// The token of `Bearer TOKEN` (the scheme is case-insensitive).
fn bearer(header: &[u8]) -> Option<&[u8]> {
    let header = header.trim_ascii();
    let (scheme, rest) = header.split_at_checked(6)?;
    if !scheme.eq_ignore_ascii_case(b"bearer") {
        return None;
    }
    let token = rest.trim_ascii_start();
    (token.len() < rest.len() && !token.is_empty()).then_some(token)
}

#[cfg(test)]
mod tests {
    use super::*;

    const ADMIN: &str = "0123456789abcdef0123456789abcdef";
    const READ: &str = "fedcba9876543210fedcba9876543210";

    fn policy(open_reads: bool) -> Policy {
        let text = format!("# tokens\n\nadmin {ADMIN}\n  read   {READ}  \n");
        Policy {
            tokens: Some(Tokens::parse(&text).unwrap()),
            open_reads,
        }
    }

    fn code(r: Result<(), ApiError>) -> Option<ErrorCode> {
        r.err().map(|e| e.code())
    }

    #[test]
    fn the_file_is_checked_line_by_line() {
        let bad = |text: &str| Tokens::parse(text).unwrap_err();
        assert_eq!(bad(&format!("admin {ADMIN}\nwriter {READ}\n")).line, 2);
        assert!(bad(&format!("writer {READ}"))
            .problem
            .contains("unknown role"));
        assert!(bad(&format!("\n\nadmin {ADMIN} extra"))
            .to_string()
            .starts_with("line 3: expected"));
        assert!(bad(ADMIN).problem.contains("1 fields"));
        assert!(bad("read short").problem.contains("at least 32"));
        assert!(bad(&format!("admin {ADMIN}\nread {ADMIN}"))
            .problem
            .contains("twice"));
        assert!(bad("# nothing\n\n").problem.contains("no token"));
        assert!(bad(&format!("admin {ADMIN}é"))
            .problem
            .contains("printable"));
        let t = Tokens::parse(&format!("admin {ADMIN}\nread {READ}\n")).unwrap();
        assert_eq!(t.len(), 2);
        assert_eq!(t.role(ADMIN.as_bytes()), Some(Role::Admin));
        assert_eq!(t.role(READ.as_bytes()), Some(Role::Read));
        assert_eq!(t.role(b"0123456789abcdef0123456789abcdeX"), None);
        assert_eq!(t.role(b""), None);
        assert!(!format!("{t:?}").contains(ADMIN));
    }

    #[test]
    fn access_by_token() {
        let p = policy(false);
        let admin = format!("Bearer {ADMIN}");
        let read = format!("bearer  {READ}");
        let h = |s: &str| Some(s.as_bytes().to_vec());
        for (access, header, want) in [
            (Access::Public, None, None),
            (Access::Read, None, Some(ErrorCode::Unauthorized)),
            (Access::Write, None, Some(ErrorCode::Unauthorized)),
            (Access::Read, h(&read), None),
            (Access::Write, h(&read), Some(ErrorCode::Forbidden)),
            (Access::Read, h(&admin), None),
            (Access::Write, h(&admin), None),
            (
                Access::Read,
                h("Bearer nope"),
                Some(ErrorCode::Unauthorized),
            ),
            (
                Access::Write,
                h(&format!("Basic {ADMIN}")),
                Some(ErrorCode::Unauthorized),
            ),
            (
                Access::Write,
                h(&format!("Bearer{ADMIN}")),
                Some(ErrorCode::Unauthorized),
            ),
            (Access::Write, h("Bearer "), Some(ErrorCode::Unauthorized)),
            (Access::Write, h(""), Some(ErrorCode::Unauthorized)),
        ] {
            assert_eq!(
                code(p.check(access, header.as_deref())),
                want,
                "{access:?} {header:?}"
            );
        }
        let open = policy(true);
        assert_eq!(code(open.check(Access::Read, None)), None);
        assert_eq!(
            code(open.check(Access::Write, None)),
            Some(ErrorCode::Unauthorized)
        );
        assert_eq!(code(Policy::open().check(Access::Write, None)), None);
    }

    #[test]
    fn every_operation_needs_what_it_does() {
        for route in crate::api::ROUTES {
            let access = route.operation.access();
            let writes = route.method != crate::api::Method::Get;
            assert_eq!(access == Access::Write, writes, "{route:?}");
        }
    }
}
