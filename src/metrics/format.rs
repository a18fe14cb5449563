//! The two exposition formats `/metrics` serves, OpenMetrics text and the
//! Prometheus text format 0.0.4, and the choice between them by the
//! request's `Accept` header (RFC 9110 §12.5.1: q-values, and the most
//! specific media range decides for a type).
//!
//! Prometheus asks for OpenMetrics first
//! (`application/openmetrics-text;version=1.0.0,…,text/plain;version=0.0.4;q=0.5,*/*;q=0.1`)
//! and gets it; a client that names neither (no `Accept`, `*/*`) gets the
//! Prometheus text format, which every scraper reads. So does a client
//! none of whose ranges we can serve: answering the default rather than
//! 406 is what the client libraries do, and a scraper can read it.

use prometheus_client::encoding::{prometheus_text, text};
use prometheus_client::registry::Registry;

/// An exposition format of `/metrics`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// The Prometheus text format, version 0.0.4 (the default).
    Prometheus,
    /// OpenMetrics text, version 1.0.0.
    OpenMetrics,
}

/// OpenMetrics 1.0.0's content type (its specification, "Overall Structure").
const OPENMETRICS: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

impl Format {
    /// The `Content-Type` of an answer in this format.
    pub fn content_type(self) -> &'static str {
        match self {
            Format::Prometheus => prometheus_text::CONTENT_TYPE,
            Format::OpenMetrics => OPENMETRICS,
        }
    }

    /// The registry's exposition in this format.
    pub fn encode(self, registry: &Registry) -> String {
        let mut out = String::new();
        // Writing to a String cannot fail; an encoder can refuse a value
        // (a u64 gauge above i64::MAX), and the scrape is then cut short:
        // say so rather than serve it silently.
        let encoded = match self {
            Format::Prometheus => prometheus_text::encode(&mut out, registry),
            Format::OpenMetrics => text::encode(&mut out, registry),
        };
        if encoded.is_err() {
            tracing::warn!(format = ?self, "metrics: a value could not be encoded; the exposition is incomplete");
        }
        out
    }

    /// The format for a request whose `Accept` header has these values
    /// (none: the request had no `Accept`). Anything a client sends gives
    /// an answer: a range that does not parse is skipped.
    pub fn negotiate<'a>(accept: impl IntoIterator<Item = &'a str>) -> Format {
        // Per format, the range that decides: the most specific one that
        // matches it, as (specificity, q in thousandths).
        let mut prometheus: Option<(Specificity, u16)> = None;
        let mut openmetrics: Option<(Specificity, u16)> = None;
        for range in accept.into_iter().flat_map(|v| v.split(',')) {
            let Some(range) = MediaRange::parse(range) else {
                continue;
            };
            for (format, decided) in [
                (Format::Prometheus, &mut prometheus),
                (Format::OpenMetrics, &mut openmetrics),
            ] {
                if let Some(s) = range.specificity(format) {
                    // Equally specific ranges: the higher q counts.
                    if decided.is_none_or(|(ds, dq)| s > ds || (s == ds && range.q > dq)) {
                        *decided = Some((s, range.q));
                    }
                }
            }
        }
        // Ranked by q, then by whether the type was named rather than only
        // matched by a wildcard (`application/openmetrics-text, */*`
        // prefers OpenMetrics); a tie goes to the default.
        let rank = |d: Option<(Specificity, u16)>| {
            d.filter(|(_, q)| *q > 0)
                .map(|(s, q)| (q, s >= Specificity::Type))
        };
        match (rank(openmetrics), rank(prometheus)) {
            (Some(om), Some(prom)) if om > prom => Format::OpenMetrics,
            (Some(_), None) => Format::OpenMetrics,
            _ => Format::Prometheus,
        }
    }
}

/// How closely a media range names a format, least first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Specificity {
    /// `*/*`
    Any,
    /// `text/*`, `application/*`
    Subtypes,
    /// `text/plain`
    Type,
    /// `text/plain;version=0.0.4`
    Version,
}

/// One element of an `Accept` header: `type/subtype;param=value;q=0.5`.
struct MediaRange<'a> {
    kind: &'a str,
    subtype: &'a str,
    version: Option<&'a str>,
    /// The q-value in thousandths (RFC 9110 allows three decimals).
    q: u16,
}

impl<'a> MediaRange<'a> {
    /// `None` for what is not a media range, or has a q-value that is not
    /// one (a number from 0 to 1).
    fn parse(text: &'a str) -> Option<MediaRange<'a>> {
        let mut parts = text.split(';');
        let (kind, subtype) = parts.next()?.trim().split_once('/')?;
        let (kind, subtype) = (kind.trim(), subtype.trim());
        if kind.is_empty() || subtype.is_empty() {
            return None;
        }
        let mut range = MediaRange {
            kind,
            subtype,
            version: None,
            q: 1000,
        };
        for param in parts {
            let Some((name, value)) = param.split_once('=') else {
                continue;
            };
            let value = value.trim().trim_matches('"');
            match name.trim() {
                n if n.eq_ignore_ascii_case("q") => {
                    let q: f64 = value.parse().ok()?;
                    if !(0.0..=1.0).contains(&q) {
                        return None;
                    }
                    range.q = (q * 1000.0).round() as u16;
                    // What follows q are accept-extensions, not the media
                    // type's parameters.
                    break;
                }
                n if n.eq_ignore_ascii_case("version") => range.version = Some(value),
                // charset (ours is UTF-8), escaping (our names need none).
                _ => {}
            }
        }
        Some(range)
    }

    /// How specifically this range names `format`; `None` if it does not
    /// take it (another type, or a version we do not write).
    fn specificity(&self, format: Format) -> Option<Specificity> {
        let (kind, subtype, version) = match format {
            Format::Prometheus => ("text", "plain", "0.0.4"),
            Format::OpenMetrics => ("application", "openmetrics-text", "1.0.0"),
        };
        if self.kind == "*" {
            return (self.subtype == "*").then_some(Specificity::Any);
        }
        if !self.kind.eq_ignore_ascii_case(kind) {
            return None;
        }
        if self.subtype == "*" {
            return Some(Specificity::Subtypes);
        }
        if !self.subtype.eq_ignore_ascii_case(subtype) {
            return None;
        }
        match self.version {
            None => Some(Specificity::Type),
            Some(v) if v == version => Some(Specificity::Version),
            // OpenMetrics 0.0.1, Prometheus text 1.0.0: not what we write.
            Some(_) => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::Format::{self, OpenMetrics, Prometheus};

    /// What Prometheus 2.43 to 2.55 sends when it scrapes.
    const PROMETHEUS_2: &str = "application/openmetrics-text;version=1.0.0,application/openmetrics-text;version=0.0.1;q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1";
    /// What Prometheus 3 sends.
    const PROMETHEUS_3: &str = "application/openmetrics-text;version=1.0.0;escaping=allow-utf-8,application/openmetrics-text;version=0.0.1;q=0.75,text/plain;version=1.0.0;escaping=allow-utf-8;q=0.5,*/*;q=0.1";
    /// What Prometheus 2.5 to 2.42 sends: OpenMetrics 0.0.1, which we do
    /// not write, then the text format.
    const PROMETHEUS_2_OLD: &str =
        "application/openmetrics-text; version=0.0.1,text/plain;version=0.0.4;q=0.5,*/*;q=0.1";

    fn negotiate(accept: &str) -> Format {
        Format::negotiate([accept])
    }

    #[test]
    fn scrapers_and_plain_clients() {
        assert_eq!(
            Format::negotiate([]),
            Prometheus,
            "no Accept (curl without -H)"
        );
        for (accept, want) in [
            ("*/*", Prometheus), // curl
            ("", Prometheus),
            (PROMETHEUS_2, OpenMetrics),
            (PROMETHEUS_3, OpenMetrics),
            (PROMETHEUS_2_OLD, Prometheus),
            ("text/plain", Prometheus),
            ("text/plain; version=0.0.4; charset=utf-8", Prometheus),
            ("application/openmetrics-text", OpenMetrics),
            (
                "application/openmetrics-text; version=1.0.0; charset=utf-8",
                OpenMetrics,
            ),
            (
                "application/openmetrics-text; version=\"1.0.0\"",
                OpenMetrics,
            ),
            ("APPLICATION/OpenMetrics-Text; Version=1.0.0", OpenMetrics),
            ("application/*", OpenMetrics),
            ("text/*", Prometheus),
        ] {
            assert_eq!(negotiate(accept), want, "Accept: {accept}");
        }
    }

    #[test]
    fn q_values_decide() {
        for (accept, want) in [
            ("application/openmetrics-text;q=0.4, text/plain;q=0.5", Prometheus),
            ("application/openmetrics-text;q=0.6, text/plain;q=0.5", OpenMetrics),
            ("text/plain;q=0.5, application/openmetrics-text", OpenMetrics),
            ("text/plain;q=0.001, application/openmetrics-text;q=0", Prometheus),
            ("text/plain;q=0, application/openmetrics-text;q=0.001", OpenMetrics),
            // Refused by name, taken through the wildcard: the other.
            ("text/plain;q=0, */*", OpenMetrics),
            ("*/*, application/openmetrics-text;q=0", Prometheus),
            ("application/openmetrics-text;q=0, */*;q=0.1", Prometheus),
            // The more specific range decides, whatever its q.
            ("text/plain;version=0.0.4;q=0.2, text/plain;q=0.9, application/openmetrics-text;q=0.5", OpenMetrics),
            ("text/*;q=0.1, text/plain;q=0.9, application/*;q=0.5", Prometheus),
            ("application/*;q=0.9, application/openmetrics-text;q=0.2, text/plain;q=0.3", Prometheus),
            // Equal q: a named type beats a wildcard; two named types tie,
            // and the tie goes to the default.
            ("application/openmetrics-text, */*", OpenMetrics),
            ("*/*;q=0.5, application/openmetrics-text;q=0.5", OpenMetrics),
            ("application/openmetrics-text, text/plain", Prometheus),
            // Parameters after q are extensions, not the version.
            ("application/openmetrics-text;q=0.9;version=0.0.1, text/plain;q=0.8", OpenMetrics),
        ] {
            assert_eq!(negotiate(accept), want, "Accept: {accept}");
        }
    }

    #[test]
    fn several_accept_headers_are_one_list() {
        assert_eq!(
            Format::negotiate(["text/plain;q=0.1", "application/openmetrics-text"]),
            OpenMetrics
        );
        assert_eq!(
            Format::negotiate(["application/openmetrics-text;q=0.1", "text/plain"]),
            Prometheus
        );
    }

    /// What we cannot serve, or cannot read, gets the default.
    #[test]
    fn the_unservable_and_the_malformed_get_the_default() {
        for accept in [
            "application/json",
            "application/openmetrics-text;version=2.0.0",
            "application/openmetrics-text;version=0.0.1",
            "text/plain;version=1.0.0",
            "text/html, application/xhtml+xml",
            "application/openmetrics-text;q=abc",
            "application/openmetrics-text;q=2",
            "application/openmetrics-text;q=-1",
            "application/openmetrics-text;q=NaN",
            "application/openmetrics-text;q=inf",
            "*/openmetrics-text",
            "/",
            "application/",
            ";;;,,,=q",
            "q=1",
            "\u{0}\u{7f}é, ;",
        ] {
            assert_eq!(negotiate(accept), Prometheus, "Accept: {accept:?}");
        }
        // A malformed range is skipped, not the whole header.
        assert_eq!(
            negotiate("text/plain;q=x, application/openmetrics-text;q=0.5"),
            OpenMetrics
        );
    }

    #[test]
    fn content_types() {
        assert_eq!(
            Prometheus.content_type(),
            "text/plain; version=0.0.4; charset=utf-8"
        );
        assert_eq!(
            OpenMetrics.content_type(),
            "application/openmetrics-text; version=1.0.0; charset=utf-8"
        );
    }

    proptest::proptest! {
        /// Nothing a client sends makes negotiation panic.
        #[test]
        fn any_accept_header_gets_an_answer(accept in "\\PC{0,200}", raw in ".{0,100}") {
            let _ = Format::negotiate([accept.as_str(), raw.as_str()]);
        }
    }
}
