//! Browser assets Herald serves itself, so a page needs nothing but a `<script>` tag:
//! the `/ws/tasks/` client at [`CLIENT_JS_PATH`] and its ES-module face at [`CLIENT_MJS_PATH`]
//! (always), and the demo page at [`DEMO_PATH`]
//! with its glue script (only when [`AppBuilder::demo_page`](crate::AppBuilder::demo_page) is
//! on).
//!
//! The files live in `crates/herald-server/assets/` and are compiled in with `include_str!`,
//! so the binary is the whole deployment. The client's path is stable (no hash in the name):
//! it is cached for [`CLIENT_MAX_AGE_SECS`] and then revalidated with its `ETag`, so an upgrade
//! reaches browsers within minutes at the cost of one 304 per page load after that.

use bytes::Bytes;
use http_body_util::Full;
use hyper::header::{self, HeaderValue};
use hyper::{Method, Request, Response, StatusCode};

use crate::routing::Body;

/// Where the browser client `task-notifications.js` is served.
pub const CLIENT_JS_PATH: &str = "/static/herald/task-notifications.js";
/// Where the client's ES module is served: it imports [`CLIENT_JS_PATH`] (relative, so both
/// must stay side by side) and re-exports the object that script defines.
pub const CLIENT_MJS_PATH: &str = "/static/herald/task-notifications.mjs";
/// Where the demo page is served when enabled.
pub const DEMO_PATH: &str = "/demo/";
/// A small file the demo's "file ready" dialog can really download (served only with the demo
/// page): `herald file --user demo /demo/report.csv`.
pub const DEMO_FILE_PATH: &str = "/demo/report.csv";
/// The demo page's glue script (served only with the demo page).
pub const DEMO_JS_PATH: &str = "/static/herald/demo.js";
/// The source of `task-notifications.js`, for hosts that bundle or serve it themselves.
pub const CLIENT_JS: &str = include_str!("../assets/task-notifications.js");
/// The source of `task-notifications.mjs` (three lines around an import of [`CLIENT_JS`]).
pub const CLIENT_MJS: &str = include_str!("../assets/task-notifications.mjs");
/// How long browsers may use the client without revalidating it.
pub const CLIENT_MAX_AGE_SECS: u32 = 300;

const JS: &str = "text/javascript; charset=utf-8";
const HTML: &str = "text/html; charset=utf-8";
const CSV: &str = "text/csv; charset=utf-8";

/// One compiled-in file and the headers it is served with.
#[derive(Debug)]
pub(crate) struct Asset {
    body: &'static str,
    content_type: &'static str,
    cache_control: &'static str,
    etag: [u8; 18],
    csp: Option<&'static str>,
    /// `Access-Control-Allow-Origin: *`: a page on another origin than Herald may import the
    /// ES module (browsers fetch module scripts in CORS mode, the script it imports too).
    cors: bool,
}

impl Asset {
    const fn new(body: &'static str, content_type: &'static str, cache: &'static str) -> Self {
        Asset {
            body,
            content_type,
            cache_control: cache,
            etag: etag(body.as_bytes()),
            csp: None,
            cors: false,
        }
    }
}

// Public files without credentials: any origin may read them.
static CLIENT: Asset = Asset {
    cors: true,
    ..Asset::new(CLIENT_JS, JS, "public, max-age=300")
};
static CLIENT_MODULE: Asset = Asset {
    cors: true,
    ..Asset::new(CLIENT_MJS, JS, "public, max-age=300")
};
static DEMO_JS: Asset = Asset::new(include_str!("../assets/demo.js"), JS, "no-store");
static DEMO_FILE: Asset = Asset::new(include_str!("../assets/demo-report.csv"), CSV, "no-store");
static DEMO_HTML: Asset = Asset {
    // Scripts only from this origin (the page's own logic is in demo.js); the client injects
    // one <style> element, hence 'unsafe-inline' for styles only.
    csp: Some(
        "default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; \
         connect-src 'self'; img-src 'self' data:; base-uri 'none'; form-action 'none'; \
         frame-ancestors 'none'",
    ),
    ..Asset::new(include_str!("../assets/demo.html"), HTML, "no-store")
};

/// A strong `ETag`: FNV-1a 64 of the body, quoted. Computed at compile time.
const fn etag(bytes: &[u8]) -> [u8; 18] {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    let mut i = 0;
    while i < bytes.len() {
        hash ^= bytes[i] as u64;
        hash = hash.wrapping_mul(0x0100_0000_01b3);
        i += 1;
    }
    let hex = b"0123456789abcdef";
    let mut out = [b'"'; 18];
    let mut j = 0;
    while j < 16 {
        out[1 + j] = hex[((hash >> (60 - 4 * j)) & 0xf) as usize];
        j += 1;
    }
    out
}

/// True for every path an asset may be served at (so no WebSocket route can shadow one).
pub(crate) fn is_asset_path(path: &str) -> bool {
    matches!(
        path,
        CLIENT_JS_PATH | CLIENT_MJS_PATH | DEMO_PATH | DEMO_JS_PATH | DEMO_FILE_PATH
    )
}

/// The asset at `path`; the demo files only when `demo` is on.
pub(crate) fn lookup(path: &str, demo: bool) -> Option<&'static Asset> {
    match path {
        CLIENT_JS_PATH => Some(&CLIENT),
        CLIENT_MJS_PATH => Some(&CLIENT_MODULE),
        DEMO_PATH if demo => Some(&DEMO_HTML),
        DEMO_JS_PATH if demo => Some(&DEMO_JS),
        DEMO_FILE_PATH if demo => Some(&DEMO_FILE),
        _ => None,
    }
}

fn if_none_match(req: &Request<impl Sized>, etag: &[u8]) -> bool {
    req.headers()
        .get_all(header::IF_NONE_MATCH)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|t| t.trim().trim_start_matches("W/").as_bytes())
        .any(|t| t == etag || t == b"*")
}

/// Answers a GET or HEAD for `asset` (304 when `If-None-Match` matches); 405 otherwise.
pub(crate) fn response(asset: &'static Asset, req: &Request<impl Sized>) -> Response<Body> {
    let mut resp = if req.method() != Method::GET && req.method() != Method::HEAD {
        let mut resp = Response::new(Full::new(Bytes::from_static(b"Method Not Allowed\n")));
        *resp.status_mut() = StatusCode::METHOD_NOT_ALLOWED;
        resp.headers_mut()
            .insert(header::ALLOW, HeaderValue::from_static("GET, HEAD"));
        return resp;
    } else if if_none_match(req, &asset.etag) {
        let mut resp = Response::new(Full::new(Bytes::new()));
        *resp.status_mut() = StatusCode::NOT_MODIFIED;
        resp
    } else {
        let mut resp = Response::new(Full::new(Bytes::from_static(asset.body.as_bytes())));
        resp.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static(asset.content_type),
        );
        if let Some(csp) = asset.csp {
            resp.headers_mut().insert(
                header::CONTENT_SECURITY_POLICY,
                HeaderValue::from_static(csp),
            );
        }
        resp
    };
    let headers = resp.headers_mut();
    headers.insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static(asset.cache_control),
    );
    if let Ok(tag) = HeaderValue::from_bytes(&asset.etag) {
        headers.insert(header::ETAG, tag);
    }
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    if asset.cors {
        headers.insert(
            header::ACCESS_CONTROL_ALLOW_ORIGIN,
            HeaderValue::from_static("*"),
        );
    }
    resp
}

#[cfg(test)]
mod tests {
    use super::*;

    fn get(path: &str, headers: &[(&str, &str)]) -> Request<()> {
        let mut b = Request::get(path);
        for (k, v) in headers {
            b = b.header(*k, *v);
        }
        b.body(()).unwrap()
    }

    #[test]
    fn demo_assets_are_hidden_unless_enabled() {
        assert!(lookup(CLIENT_JS_PATH, false).is_some());
        assert!(lookup(CLIENT_MJS_PATH, false).is_some());
        assert!(lookup(DEMO_PATH, false).is_none());
        assert!(lookup(DEMO_JS_PATH, false).is_none());
        assert!(lookup(DEMO_FILE_PATH, false).is_none());
        assert!(lookup(DEMO_FILE_PATH, true).is_some());
        assert!(lookup(DEMO_PATH, true).is_some());
        assert!(lookup("/static/herald/other.js", true).is_none());
    }

    #[test]
    fn client_is_served_as_cacheable_javascript_with_etag() {
        let asset = lookup(CLIENT_JS_PATH, false).unwrap();
        let resp = response(asset, &get(CLIENT_JS_PATH, &[]));
        assert_eq!(resp.status(), StatusCode::OK);
        let h = resp.headers();
        assert_eq!(h[header::CONTENT_TYPE], "text/javascript; charset=utf-8");
        assert_eq!(
            h[header::CACHE_CONTROL],
            format!("public, max-age={CLIENT_MAX_AGE_SECS}")
        );
        assert_eq!(h[header::X_CONTENT_TYPE_OPTIONS], "nosniff");
        let tag = h[header::ETAG].to_str().unwrap();
        assert_eq!(tag.len(), 18);
        assert!(tag.starts_with('"') && tag.ends_with('"'));
    }

    #[test]
    fn module_is_served_as_javascript_next_to_the_script_it_imports() {
        let asset = lookup(CLIENT_MJS_PATH, false).unwrap();
        let resp = response(asset, &get(CLIENT_MJS_PATH, &[]));
        assert_eq!(resp.status(), StatusCode::OK);
        // Browsers refuse a module script without a JavaScript MIME type.
        assert_eq!(
            resp.headers()[header::CONTENT_TYPE],
            "text/javascript; charset=utf-8"
        );
        assert!(CLIENT_MJS.contains("import './task-notifications.js';"));
        // Importable from a page on another origin; the demo page stays same-origin only.
        assert_eq!(resp.headers()[header::ACCESS_CONTROL_ALLOW_ORIGIN], "*");
        let script = response(&CLIENT, &get(CLIENT_JS_PATH, &[]));
        assert_eq!(script.headers()[header::ACCESS_CONTROL_ALLOW_ORIGIN], "*");
        let demo = response(&DEMO_HTML, &get(DEMO_PATH, &[]));
        assert!(
            !demo
                .headers()
                .contains_key(header::ACCESS_CONTROL_ALLOW_ORIGIN)
        );
        assert_eq!(
            CLIENT_MJS_PATH.rsplit_once('/').unwrap().0,
            CLIENT_JS_PATH.rsplit_once('/').unwrap().0
        );
    }

    #[test]
    fn matching_if_none_match_gets_304_and_other_tags_get_the_body() {
        let asset = lookup(CLIENT_JS_PATH, false).unwrap();
        let tag = std::str::from_utf8(&asset.etag).unwrap().to_owned();
        let list = format!("\"nope\", W/{tag}");
        let hit = response(asset, &get(CLIENT_JS_PATH, &[("if-none-match", &list)]));
        assert_eq!(hit.status(), StatusCode::NOT_MODIFIED);
        assert_eq!(hit.headers()[header::ETAG], tag.as_str());
        let miss = response(
            asset,
            &get(CLIENT_JS_PATH, &[("if-none-match", "\"0000\"")]),
        );
        assert_eq!(miss.status(), StatusCode::OK);
    }

    #[test]
    fn other_methods_get_405_with_allow() {
        let asset = lookup(CLIENT_JS_PATH, false).unwrap();
        let req = Request::post(CLIENT_JS_PATH).body(()).unwrap();
        let resp = response(asset, &req);
        assert_eq!(resp.status(), StatusCode::METHOD_NOT_ALLOWED);
        assert_eq!(resp.headers()[header::ALLOW], "GET, HEAD");
    }

    #[test]
    fn demo_page_has_a_script_src_self_csp_and_is_not_cached() {
        let asset = lookup(DEMO_PATH, true).unwrap();
        let resp = response(asset, &get(DEMO_PATH, &[]));
        let h = resp.headers();
        assert_eq!(h[header::CONTENT_TYPE], "text/html; charset=utf-8");
        assert_eq!(h[header::CACHE_CONTROL], "no-store");
        assert!(
            h[header::CONTENT_SECURITY_POLICY]
                .to_str()
                .unwrap()
                .contains("script-src 'self';")
        );
        assert!(asset.body.contains(CLIENT_JS_PATH));
        assert!(asset.body.contains(DEMO_JS_PATH));
    }

    #[test]
    fn etag_changes_with_content() {
        assert_ne!(etag(b"a"), etag(b"b"));
        assert_eq!(etag(b""), *b"\"cbf29ce484222325\"");
    }
}
