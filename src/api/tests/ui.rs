//! The web UI's files as served: `/` and `/ui/{asset}` with their content
//! types, ETags and 304s, 404 for anything else, the security headers; and
//! the files themselves held to the rules the CSP relies on (no inline
//! script or style, no HTML parsed from strings) and to the route table
//! (the script calls only routes that exist).

use crate::api::error::ErrorCode;
use crate::api::routes::match_route;
use crate::api::ui::{find, serve, Asset, ASSETS, CONTENT_SECURITY_POLICY, HEADERS, INDEX};

fn text(asset: &Asset) -> &'static str {
    std::str::from_utf8(asset.body).expect("UTF-8")
}

fn header(name: &str) -> &'static str {
    HEADERS
        .iter()
        .find(|(n, _)| n.eq_ignore_ascii_case(name))
        .map(|(_, v)| *v)
        .unwrap_or_else(|| panic!("no {name} header"))
}

/// Our own scripts: every JavaScript file but the vendored chart library.
fn own_scripts() -> impl Iterator<Item = &'static Asset> {
    ASSETS
        .iter()
        .filter(|a| a.name.ends_with(".js") && a.name != "uplot.min.js")
}

/// The modules the scripts import (`from './x.js'`), by name.
fn imported_modules() -> Vec<String> {
    let mut names = Vec::new();
    for asset in own_scripts() {
        for (i, _) in text(asset).match_indices("from './") {
            let rest = &text(asset)[i + "from './".len()..];
            names.push(rest[..rest.find('\'').unwrap()].to_string());
        }
    }
    names
}

/// The values of `attr="..."` in the page.
fn attribute_values(html: &str, attr: &str) -> Vec<String> {
    let needle = format!(" {attr}=\"");
    html.match_indices(&needle)
        .map(|(i, _)| {
            let rest = &html[i + needle.len()..];
            rest[..rest.find('"').unwrap()].to_string()
        })
        .collect()
}

#[test]
fn the_page_is_served_at_the_root_as_html() {
    let served = serve(None, None).unwrap();
    assert_eq!(served.status, 200);
    assert_eq!(served.asset.name, "index.html");
    assert_eq!(served.asset.content_type, "text/html; charset=utf-8");
    assert_eq!(served.body(), INDEX.body);
    assert!(text(&INDEX).starts_with("<!doctype html>"));
}

#[test]
fn every_file_the_page_loads_is_served_with_its_content_type() {
    let html = text(&INDEX);
    let mut loaded: Vec<String> = attribute_values(html, "src");
    loaded.extend(attribute_values(html, "href"));
    let modules = imported_modules();
    let loaded: Vec<&str> = loaded
        .iter()
        .filter_map(|v| v.strip_prefix("/ui/"))
        .chain(modules.iter().map(String::as_str))
        .collect();
    for name in [
        "app.js",
        "style.css",
        "favicon.svg",
        "overview.js",
        "uplot.min.js",
    ] {
        assert!(loaded.contains(&name), "the page does not load {name}");
    }
    for name in &loaded {
        let served = serve(Some(name), None).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(served.status, 200);
        let want = match name.rsplit_once('.').map(|(_, ext)| ext) {
            Some("js") => "text/javascript; charset=utf-8",
            Some("css") => "text/css; charset=utf-8",
            Some("svg") => "image/svg+xml",
            other => panic!("{name}: unexpected extension {other:?}"),
        };
        assert_eq!(served.asset.content_type, want, "{name}");
        assert_eq!(served.body(), find(name).unwrap().body);
        assert!(!served.body().is_empty(), "{name} is empty");
    }
    // Every embedded file is one the page uses.
    for asset in ASSETS {
        assert!(
            loaded.contains(&asset.name),
            "{} is never loaded",
            asset.name
        );
    }
}

#[test]
fn anything_else_under_ui_is_404() {
    for name in [
        "nope.js",
        "index.html",
        "",
        "..",
        "../ui.rs",
        "app.js.map",
        "APP.JS",
        "app.js?x",
    ] {
        let err = serve(Some(name), None).unwrap_err();
        assert_eq!(err.status(), 404, "{name:?}");
        assert_eq!(err.code(), ErrorCode::NotFound);
        assert!(
            err.message().contains("app.js, api.js, dom.js")
                && err.message().ends_with("style.css, favicon.svg"),
            "{err}"
        );
    }
    // The route itself takes one segment only.
    assert_eq!(
        match_route("GET", "/ui/a/b").unwrap_err().status(),
        404,
        "/ui/a/b"
    );
    assert_eq!(match_route("GET", "/ui/").unwrap_err().status(), 404);
    assert_eq!(match_route("POST", "/").unwrap_err().status(), 405);
}

#[test]
fn etags_are_content_hashes_and_a_current_copy_gets_a_304() {
    let mut seen = std::collections::HashSet::new();
    for asset in std::iter::once(&INDEX).chain(ASSETS) {
        let tag = asset.etag();
        assert!(
            tag.len() == 18 && tag.starts_with('"') && tag.ends_with('"'),
            "{tag}"
        );
        assert!(seen.insert(tag.clone()), "two files share {tag}");
        let name = (asset.name != "index.html").then_some(asset.name);
        for header in [
            tag.clone(),
            format!("W/{tag}"),
            format!("\"0000000000000000\", {tag}"),
            "*".to_string(),
        ] {
            let served = serve(name, Some(&header)).unwrap();
            assert_eq!(served.status, 304, "{} {header}", asset.name);
            assert!(served.body().is_empty());
        }
        for header in ["\"0000000000000000\"", "", "W/\"\"", &tag[1..17]] {
            let served = serve(name, Some(header)).unwrap();
            assert_eq!(served.status, 200, "{} {header:?}", asset.name);
            assert_eq!(served.body(), asset.body);
        }
    }
}

#[test]
fn the_security_headers_allow_only_the_pages_own_files() {
    let csp = header("Content-Security-Policy");
    assert_eq!(csp, CONTENT_SECURITY_POLICY);
    let directives: Vec<&str> = csp.split(';').map(str::trim).collect();
    for want in [
        "default-src 'none'",
        "script-src 'self'",
        "style-src 'self'",
        "connect-src 'self'",
        "frame-ancestors 'none'",
        "base-uri 'none'",
        "form-action 'none'",
        "require-trusted-types-for 'script'",
        "trusted-types 'none'",
    ] {
        assert!(directives.contains(&want), "CSP lacks {want}: {csp}");
    }
    assert!(!csp.contains("unsafe"), "{csp}");
    assert_eq!(header("X-Content-Type-Options"), "nosniff");
    assert_eq!(header("X-Frame-Options"), "DENY");
    assert_eq!(header("Referrer-Policy"), "no-referrer");
    assert_eq!(header("Cache-Control"), "no-cache");
}

#[test]
fn the_page_has_no_inline_script_or_style() {
    let html = text(&INDEX).to_ascii_lowercase();
    let scripts = html.matches("<script").count();
    assert_eq!(scripts, 2);
    assert!(
        html.contains("<script type=\"module\" src=\"/ui/app.js\"></script>"),
        "the page's script is app.js, with no inline code"
    );
    assert!(
        html.contains("<script src=\"/ui/uplot.min.js\" defer></script>"),
        "the chart library, from its file"
    );
    assert!(!html.contains("<style"), "inline <style>");
    assert!(!html.contains(" style=\""), "a style attribute");
    assert!(!html.contains("javascript:"), "a javascript: URL");
    // No event-handler attributes (onclick=…): the CSP would block them.
    for (i, _) in html.match_indices(" on") {
        let attr: String = html[i + 1..]
            .chars()
            .take_while(|c| c.is_ascii_alphabetic())
            .collect();
        assert!(
            !html[i + 1 + attr.len()..].starts_with('='),
            "an inline handler {attr}="
        );
    }
}

#[test]
fn the_scripts_build_no_html_from_strings() {
    // The vendored uPlot too: it is held to the same rules.
    for asset in ASSETS.iter().filter(|a| a.name.ends_with(".js")) {
        no_html_sinks(asset.name, text(asset));
    }
    assert!(text(find("app.js").unwrap()).contains("textContent"));
}

fn no_html_sinks(name: &str, js: &str) {
    for sink in [
        ".innerHTML",
        ".outerHTML",
        "insertAdjacentHTML",
        "document.write",
        "createContextualFragment",
        "DOMParser",
        "eval(",
        "new Function",
        "setTimeout('",
        "setTimeout(\"",
    ] {
        assert!(!js.contains(sink), "{name} uses {sink}");
    }
}

#[test]
fn the_scripts_call_only_routes_of_the_api() {
    let js: String = own_scripts().map(text).collect();
    let mut paths = Vec::new();
    for (i, _) in js.match_indices("/api/v1/") {
        let rest = &js[i..];
        let mut path = String::new();
        let mut chars = rest.chars().peekable();
        while let Some(c) = chars.next() {
            match c {
                '\'' | '`' | '"' | '?' => break,
                // A template substitution is one path segment.
                '$' if chars.peek() == Some(&'{') => {
                    for c in chars.by_ref() {
                        if c == '}' {
                            break;
                        }
                    }
                    path.push('x');
                }
                c => path.push(c),
            }
        }
        paths.push(path);
    }
    assert!(paths.len() >= 6, "{paths:?}");
    for p in &paths {
        // A 405 would still be a route; a 404 is a path the API lacks.
        let routed = match_route("GET", p).map(|_| ()).or_else(|e| {
            if e.status() == 405 {
                Ok(())
            } else {
                Err(e)
            }
        });
        assert!(routed.is_ok(), "the UI calls {p}, which is no route");
    }
    assert!(paths.contains(&"/api/v1/cluster/members/x/kernel".to_string()));
}

/// The `data-field` paths of one form of the page (`id="…-form"`), which
/// the script matches against the `field` of the API's problems.
fn form_fields(html: &str, form_id: &str) -> Vec<String> {
    let start = html
        .find(&format!("<form id=\"{form_id}\""))
        .unwrap_or_else(|| panic!("no form {form_id}"));
    let end = start + html[start..].find("</form>").expect("</form>");
    attribute_values(&html[start..end], "data-field")
}

#[test]
fn the_health_fields_of_the_forms_are_named_as_the_api_names_them() {
    use crate::api::validate::{CHECK_FIELDS, POLICY_FIELDS, SERVER_FIELDS};
    let html = text(&INDEX);
    // The fields each form must have, so that a problem with them lands
    // next to its input, not at the top of the form.
    let check = [
        "kind", "interval", "timeout", "rise", "fall", "port", "path", "expect", "payload",
    ];
    for form in ["service-form", "server-form"] {
        let fields = form_fields(html, form);
        for name in check {
            let path = format!("health_check.{name}");
            assert!(fields.contains(&path), "{form} has no {path}");
        }
        assert!(fields.contains(&"health_check".to_string()), "{form}");
        for path in &fields {
            let mut parts = path.split('.');
            match (parts.next(), parts.next(), parts.next()) {
                (Some("health_check"), Some(f), None) => {
                    assert!(
                        CHECK_FIELDS.contains(&f),
                        "{form}: {path} is no check field"
                    );
                }
                (Some("health_policy"), Some(f), rest) => {
                    assert_eq!(form, "service-form", "a policy is the service's");
                    assert!(POLICY_FIELDS.contains(&f), "{form}: {path}");
                    if let Some(g) = rest {
                        assert_eq!(f, "fallback", "{path}");
                        assert!(SERVER_FIELDS.contains(&g), "{form}: {path}");
                    }
                }
                _ => {}
            }
        }
    }
    let service = form_fields(html, "service-form");
    for path in [
        "health_policy",
        "health_policy.unhealthy",
        "health_policy.slow_start",
        "health_policy.all_down",
        "health_policy.fallback",
        "health_policy.fallback.address",
        "health_policy.fallback.port",
    ] {
        assert!(
            service.contains(&path.to_string()),
            "service-form has no {path}"
        );
    }
}
