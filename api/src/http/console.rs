//! The web console at `/console`: the single-page app of `console/` (built
//! by `npm ci && npm run build` there), embedded in the binary by
//! rust-embed, so a replica serves it with nothing beside it on disk and
//! nothing from a CDN. The app talks to the same `/v1` routes as any
//! client, with the tenant's token in an `Authorization` header (it keeps
//! it in session storage, never in a URL); these routes need no token.
//!
//! Every answer carries a strict Content-Security-Policy (scripts, styles
//! and requests from this origin only, no inline code, no framing).
//! Hashed build outputs under `assets/` are cached for good; `index.html`
//! is revalidated (ETag) so a new build is picked up at once. A path that
//! names no file and has no extension is a deep link of the app
//! (`/console/containers/<id>`) and gets `index.html`; a missing file with
//! an extension is a 404.
//!
//! Which folder is embedded (the built `console/dist`, or a placeholder
//! page saying how to build it) is decided by `api/build.rs`.
//!
//! Layout:
//! - [`routes`]: the routes, merged into the API's router.
//! - [`serve`]: one asset, a deep link, or a 404.

use axum::extract::Path;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::get;
use axum::Router;

/// The console's built files (see `api/build.rs` for the folder).
#[derive(rust_embed::Embed)]
#[folder = "$SKIFF_CONSOLE_DIST"]
struct Assets;

/// Where the app is mounted (Vite's `base` in `console/vite.config.js`).
pub const MOUNT: &str = "/console";

/// No inline script or style, nothing from another origin, no plugins, no
/// framing, forms and `<base>` pinned.
pub const CONTENT_SECURITY_POLICY: &str = "default-src 'none'; script-src 'self'; \
     style-src 'self'; img-src 'self'; font-src 'self'; connect-src 'self'; \
     manifest-src 'self'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'";

/// `/console` (redirected to `/console/`), `/console/` and everything under it.
pub fn routes<S: Clone + Send + Sync + 'static>() -> Router<S> {
    Router::new()
        .route(MOUNT, get(|| async { Redirect::permanent("/console/") }))
        .route(
            "/console/",
            get(|headers: HeaderMap| serve_path(String::new(), headers)),
        )
        .route("/console/{*path}", get(serve))
}

/// One file of the console, `index.html` for a deep link, or a 404.
pub async fn serve(Path(path): Path<String>, headers: HeaderMap) -> Response {
    serve_path(path, headers).await
}

async fn serve_path(path: String, headers: HeaderMap) -> Response {
    let path = path.trim_start_matches('/');
    let (name, file) = match Assets::get(path).filter(|_| !path.is_empty()) {
        Some(file) => (path, file),
        None if is_deep_link(path) => match Assets::get("index.html") {
            Some(file) => ("index.html", file),
            None => return not_found(),
        },
        None => return not_found(),
    };
    let etag = format!("\"{}\"", hex::encode(&file.metadata.sha256_hash()[..16]));
    // Vite names every file under assets/ by a hash of its content.
    let cache = if name.starts_with("assets/") {
        "public, max-age=31536000, immutable"
    } else {
        "no-cache"
    };
    let matches = headers
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.split(',').any(|tag| tag.trim() == etag));
    let mut response = if matches {
        StatusCode::NOT_MODIFIED.into_response()
    } else {
        (
            [(header::CONTENT_TYPE, file.metadata.mimetype().to_owned())],
            file.data.into_owned(),
        )
            .into_response()
    };
    let out = response.headers_mut();
    if let Ok(etag) = HeaderValue::from_str(&etag) {
        out.insert(header::ETAG, etag);
    }
    out.insert(header::CACHE_CONTROL, HeaderValue::from_static(cache));
    secure(out);
    response
}

/// A path of the app's own (no file extension in its last segment).
fn is_deep_link(path: &str) -> bool {
    !path.rsplit('/').next().unwrap_or("").contains('.')
}

fn not_found() -> Response {
    let mut response = (
        StatusCode::NOT_FOUND,
        [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
        "not found\n",
    )
        .into_response();
    secure(response.headers_mut());
    response
}

/// The headers every console answer carries.
fn secure(headers: &mut HeaderMap) {
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CONTENT_SECURITY_POLICY),
    );
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    headers.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::body::Body;
    use axum::http::Request;
    use tower::ServiceExt as _;

    async fn get(path: &str, etag: Option<&str>) -> Response {
        let mut request = Request::get(path);
        if let Some(etag) = etag {
            request = request.header(header::IF_NONE_MATCH, etag);
        }
        routes::<()>()
            .oneshot(request.body(Body::empty()).expect("request"))
            .await
            .expect("infallible")
    }

    async fn body(response: Response) -> String {
        let bytes = axum::body::to_bytes(response.into_body(), usize::MAX)
            .await
            .expect("body");
        String::from_utf8_lossy(&bytes).into_owned()
    }

    #[tokio::test]
    async fn index_and_deep_links_get_the_app_with_a_strict_policy() {
        let redirect = get("/console", None).await;
        assert_eq!(redirect.status(), StatusCode::PERMANENT_REDIRECT);
        assert_eq!(redirect.headers()[header::LOCATION], "/console/");
        let index = body(get("/console/", None).await).await;
        assert!(index.contains("<html"), "{index}");
        for path in [
            "/console/",
            "/console/containers/0190-abc",
            "/console/usage",
        ] {
            let response = get(path, None).await;
            assert_eq!(response.status(), StatusCode::OK, "{path}");
            let headers = response.headers();
            assert!(headers[header::CONTENT_TYPE]
                .to_str()
                .unwrap()
                .starts_with("text/html"));
            let csp = headers[header::CONTENT_SECURITY_POLICY].to_str().unwrap();
            assert!(csp.contains("script-src 'self';"), "{csp}");
            assert!(!csp.contains("unsafe"), "{csp}");
            assert_eq!(headers[header::X_CONTENT_TYPE_OPTIONS], "nosniff");
            assert_eq!(headers[header::CACHE_CONTROL], "no-cache");
            assert_eq!(body(response).await, index, "{path}");
        }
    }

    #[tokio::test]
    async fn missing_files_are_404_and_etags_revalidate() {
        let missing = get("/console/assets/nothing-here.js", None).await;
        assert_eq!(missing.status(), StatusCode::NOT_FOUND);
        assert!(missing
            .headers()
            .contains_key(header::CONTENT_SECURITY_POLICY));
        let first = get("/console/index.html", None).await;
        assert_eq!(first.status(), StatusCode::OK);
        let etag = first.headers()[header::ETAG].to_str().unwrap().to_owned();
        let again = get("/console/index.html", Some(&etag)).await;
        assert_eq!(again.status(), StatusCode::NOT_MODIFIED);
        assert!(body(again).await.is_empty());
        let changed = get("/console/index.html", Some("\"other\"")).await;
        assert_eq!(changed.status(), StatusCode::OK);
    }

    #[test]
    fn deep_links_have_no_extension() {
        assert!(is_deep_link("containers/abc"));
        assert!(is_deep_link(""));
        assert!(!is_deep_link("assets/index-3f2a.js"));
        assert!(!is_deep_link("favicon.ico"));
    }
}
