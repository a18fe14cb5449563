//! The web UI's files, embedded in the binary, and the answers to `GET /`
//! and `GET /ui/{asset}`: content type, ETag, and the security headers of an
//! admin surface. Pure code, like the rest of `api`; the server turns a
//! [`Served`] into an HTTP response.
//!
//! A dozen files, so `include_bytes!` rather than an embedding crate: the
//! table below is the whole of it, and the compiler already rebuilds when
//! one of the files changes. The files are plain HTML, CSS and JavaScript
//! modules with no build step; the scripts build every element with
//! `createElement` and `textContent`, which the Content-Security-Policy's
//! Trusted Types directive enforces in the browser (an `innerHTML`
//! assignment throws). One file is vendored: `uplot.min.js` (and its style
//! sheet), the charting library uPlot 1.6.32 (MIT, its licence at the top of
//! the file), which draws on a canvas, builds its legend with
//! `createElement`, and sets styles through the CSSOM (which `style-src
//! 'self'` allows), so the policy needed no change for it.

use super::error::{ApiError, ErrorCode};

/// One embedded file.
#[derive(Debug)]
pub struct Asset {
    /// The name under `/ui/` (`index.html` is served at `/` only).
    pub name: &'static str,
    pub content_type: &'static str,
    pub body: &'static [u8],
    /// FNV-1a 64 of the body, computed at compile time: the ETag.
    hash: u64,
}

impl Asset {
    /// The strong ETag, quoted: a hash of the content, so it changes with
    /// the file and not with a rebuild or restart that leaves it alone.
    pub fn etag(&self) -> String {
        format!("\"{:016x}\"", self.hash)
    }
}

const fn fnv1a64(bytes: &[u8]) -> u64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    let mut i = 0;
    while i < bytes.len() {
        hash ^= bytes[i] as u64;
        hash = hash.wrapping_mul(0x0100_0000_01b3);
        i += 1;
    }
    hash
}

const fn asset(name: &'static str, content_type: &'static str, body: &'static [u8]) -> Asset {
    Asset {
        name,
        content_type,
        body,
        hash: fnv1a64(body),
    }
}

/// The page, served at `/`.
pub const INDEX: Asset = asset(
    "index.html",
    "text/html; charset=utf-8",
    include_bytes!("ui/index.html"),
);

/// What the page loads, served at `/ui/{name}`.
pub const ASSETS: &[Asset] = &[
    asset(
        "app.js",
        "text/javascript; charset=utf-8",
        include_bytes!("ui/app.js"),
    ),
    asset(
        "api.js",
        "text/javascript; charset=utf-8",
        include_bytes!("ui/api.js"),
    ),
    asset(
        "dom.js",
        "text/javascript; charset=utf-8",
        include_bytes!("ui/dom.js"),
    ),
    asset(
        "stream.js",
        "text/javascript; charset=utf-8",
        include_bytes!("ui/stream.js"),
    ),
    asset(
        "traffic.js",
        "text/javascript; charset=utf-8",
        include_bytes!("ui/traffic.js"),
    ),
    asset(
        "overview.js",
        "text/javascript; charset=utf-8",
        include_bytes!("ui/overview.js"),
    ),
    asset(
        "chart.js",
        "text/javascript; charset=utf-8",
        include_bytes!("ui/chart.js"),
    ),
    asset(
        "uplot.min.js",
        "text/javascript; charset=utf-8",
        include_bytes!("ui/uplot.min.js"),
    ),
    asset(
        "uplot.min.css",
        "text/css; charset=utf-8",
        include_bytes!("ui/uplot.min.css"),
    ),
    asset(
        "style.css",
        "text/css; charset=utf-8",
        include_bytes!("ui/style.css"),
    ),
    asset(
        "favicon.svg",
        "image/svg+xml",
        include_bytes!("ui/favicon.svg"),
    ),
];

/// The page may load its own script, style sheet and icon, and talk to the
/// node that served it; nothing inline, nothing from elsewhere, no framing
/// (clickjacking an admin page), no form posting anywhere (the forms are
/// sent by the script), and no HTML parsed from strings (Trusted Types with
/// no policy: `innerHTML = …` throws).
pub const CONTENT_SECURITY_POLICY: &str = "default-src 'none'; script-src 'self'; \
     style-src 'self'; img-src 'self'; connect-src 'self'; form-action 'none'; \
     base-uri 'none'; frame-ancestors 'none'; require-trusted-types-for 'script'; \
     trusted-types 'none'";

/// Headers of every UI answer, 304s included. `no-cache` means "revalidate
/// each time": the ETag makes that a 304 without a body, and an upgraded
/// node's UI is never mixed with a cached old script.
pub const HEADERS: &[(&str, &str)] = &[
    ("Content-Security-Policy", CONTENT_SECURITY_POLICY),
    ("X-Content-Type-Options", "nosniff"),
    ("X-Frame-Options", "DENY"),
    ("Referrer-Policy", "no-referrer"),
    ("Cache-Control", "no-cache"),
];

/// An answer to a UI request.
#[derive(Debug)]
pub struct Served {
    /// 200, or 304 when the client's copy is current.
    pub status: u16,
    pub asset: &'static Asset,
}

impl Served {
    /// The body to send: empty for a 304.
    pub fn body(&self) -> &'static [u8] {
        if self.status == 304 {
            b""
        } else {
            self.asset.body
        }
    }
}

/// The file at `/ui/{name}`, if there is one.
pub fn find(name: &str) -> Option<&'static Asset> {
    ASSETS.iter().find(|a| a.name == name)
}

/// `GET /` (`name`: `None`) or `GET /ui/{name}`, with the request's
/// `If-None-Match`; 404 for a name that is not one of [`ASSETS`].
pub fn serve(name: Option<&str>, if_none_match: Option<&str>) -> Result<Served, ApiError> {
    let asset = match name {
        None => &INDEX,
        Some(name) => find(name).ok_or_else(|| {
            let names: Vec<&str> = ASSETS.iter().map(|a| a.name).collect();
            ApiError::new(
                ErrorCode::NotFound,
                format!(
                    "the web UI has no file {name:?}; its files are {}",
                    names.join(", ")
                ),
            )
        })?,
    };
    let status = if if_none_match.is_some_and(|h| matches_etag(h, &asset.etag())) {
        304
    } else {
        200
    };
    Ok(Served { status, asset })
}

/// Whether an `If-None-Match` value (`*`, or a list of possibly weak tags)
/// names `etag`; GET compares weakly (RFC 9110 13.1.2).
fn matches_etag(header: &str, etag: &str) -> bool {
    header
        .split(',')
        .map(str::trim)
        .any(|tag| tag == "*" || tag.strip_prefix("W/").unwrap_or(tag) == etag)
}
