//! How the console's files and answers travel: precompressed static files
//! with the right Content-Encoding, HTML and JSON compressed on the fly,
//! and the cache policy of `/pkg`.

use axum::body::Body;
use http::{Request, StatusCode};
use http_body_util::BodyExt;

use crate::helpers::*;

fn get(path: &str, accept_encoding: Option<&str>) -> Request<Body> {
    let mut b = Request::builder().uri(path);
    if let Some(e) = accept_encoding {
        b = b.header(http::header::ACCEPT_ENCODING, e);
    }
    let mut req = b.body(Body::empty()).unwrap();
    req.extensions_mut().insert(axum::extract::ConnectInfo(std::net::SocketAddr::from(([127, 0, 0, 1], 40000))));
    req
}

fn header(res: &http::Response<Body>, name: &str) -> String {
    res.headers().get(name).and_then(|v| v.to_str().ok()).unwrap_or("").to_string()
}

async fn bytes(res: http::Response<Body>) -> Vec<u8> {
    res.into_body().collect().await.unwrap().to_bytes().to_vec()
}

/// The brotli copy cargo-leptos writes beside the WASM is what a browser
/// that accepts brotli gets; one that does not gets the plain file.
#[tokio::test]
async fn wasm_is_sent_precompressed_to_browsers_that_accept_it() {
    let app = TestApp::new().await;
    let site = tempfile::tempdir().unwrap();
    let pkg = site.path().join("pkg");
    std::fs::create_dir_all(&pkg).unwrap();
    let plain = vec![0u8; 4096];
    std::fs::write(pkg.join("bindery.wasm"), &plain).unwrap();
    std::fs::write(pkg.join("bindery.wasm.br"), b"brotli bytes").unwrap();
    std::fs::write(pkg.join("bindery.wasm.gz"), b"gzip bytes").unwrap();
    let cfg = bindery_server::Config { site_root: site.path().display().to_string(), ..Default::default() };
    let router = bindery_server::app(app.service.clone(), bindery_server::leptos_options(&cfg), true);
    let send = |req| {
        let router = router.clone();
        async move { tower::ServiceExt::oneshot(router, req).await.unwrap() }
    };

    let br = send(get("/pkg/bindery.wasm", Some("gzip, deflate, br"))).await;
    assert_status(&br, StatusCode::OK, "wasm with br");
    assert_eq!(header(&br, "content-encoding"), "br");
    assert_eq!(header(&br, "content-type"), "application/wasm");
    // Not hashed here (no hash.txt beside the test binary): revalidated.
    assert_eq!(header(&br, "cache-control"), "no-cache");
    assert_eq!(bytes(br).await, b"brotli bytes");

    let gz = send(get("/pkg/bindery.wasm", Some("gzip"))).await;
    assert_eq!(header(&gz, "content-encoding"), "gzip");
    assert_eq!(bytes(gz).await, b"gzip bytes");

    let none = send(get("/pkg/bindery.wasm", None)).await;
    assert_eq!(header(&none, "content-encoding"), "");
    assert_eq!(bytes(none).await, plain);
}

/// Pages and API answers are compressed for clients that ask; the body
/// decompresses to what an uncompressed request gets.
#[tokio::test]
async fn html_and_json_answers_are_compressed_on_the_fly() {
    let app = TestApp::new().await;
    let page = app.send(get("/login", Some("br"))).await;
    assert_status(&page, StatusCode::OK, "login page");
    assert_eq!(header(&page, "content-encoding"), "br", "the login page is compressed");
    let compressed = bytes(page).await;
    let mut html = Vec::new();
    brotli_decompress(&compressed, &mut html);
    let html = String::from_utf8(html).unwrap();
    assert!(html.contains("Sign in to Bindery"), "{html}");

    let json = app.send(get("/api/openapi.json", Some("gzip"))).await;
    assert_status(&json, StatusCode::OK, "openapi document");
    assert_eq!(header(&json, "content-encoding"), "gzip");
    let plain = app.send(get("/api/openapi.json", None)).await;
    assert_eq!(header(&plain, "content-encoding"), "", "no Accept-Encoding, no compression");
    let plain = bytes(plain).await;
    let gz = bytes(json).await;
    assert!(gz.len() * 3 < plain.len(), "gzip {} vs plain {} bytes", gz.len(), plain.len());
}

fn brotli_decompress(input: &[u8], out: &mut Vec<u8>) {
    use std::io::Read;
    brotli_decompressor::Decompressor::new(input, 4096).read_to_end(out).unwrap();
}
