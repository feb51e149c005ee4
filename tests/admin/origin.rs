//! The dashboard's cross-site checks over real HTTP (issue 11, item 14): a
//! POST with a valid session cookie, `Origin: http://evil.example` and no
//! `Sec-Fetch-Site` deleted a job.

use std::net::SocketAddr;

use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::{TcpListener, TcpStream},
};

use crate::support::{Fixture, TOKEN};

/// The router of `fx`, served on a free loopback port.
async fn serve(fx: &Fixture) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let router = fx.router();
    tokio::spawn(async move { axum::serve(listener, router).await });
    addr
}

/// A form POST written by hand, so the test controls every header
/// (`Host` included); returns the status and the response text.
async fn post(addr: SocketAddr, path: &str, headers: &[(&str, &str)], body: &str) -> (u16, String) {
    let mut request = format!(
        "POST {path} HTTP/1.1\r\nConnection: close\r\nContent-Type: application/x-www-form-urlencoded\r\n\
         Content-Length: {}\r\n",
        body.len()
    );
    if !headers.iter().any(|(name, _)| name.eq_ignore_ascii_case("host")) {
        request.push_str(&format!("Host: {addr}\r\n"));
    }
    for (name, value) in headers {
        request.push_str(&format!("{name}: {value}\r\n"));
    }
    request.push_str("\r\n");
    request.push_str(body);
    let mut stream = TcpStream::connect(addr).await.unwrap();
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).await.unwrap();
    let status = response
        .split(' ')
        .nth(1)
        .and_then(|code| code.parse().ok())
        .unwrap_or_else(|| panic!("not an HTTP response: {response}"));
    (status, response)
}

/// Logs in as a browser on the dashboard's own origin; returns the cookie.
async fn login(addr: SocketAddr) -> String {
    let own = format!("http://{addr}");
    let (status, response) = post(addr, "/ui/login", &[("Origin", &own)], &format!("token={TOKEN}")).await;
    assert_eq!(status, 303, "{response}");
    let cookie = response
        .lines()
        .find_map(|line| line.strip_prefix("set-cookie: "))
        .unwrap_or_else(|| panic!("no cookie: {response}"));
    cookie.split(';').next().unwrap().to_owned()
}

#[tokio::test]
async fn forms_from_another_origin_or_saying_nothing_are_refused() {
    let fx = Fixture::new();
    let id = fx.simple_dead_job("billing", "invoice").await;
    let addr = serve(&fx).await;
    let cookie = login(addr).await;
    let delete = format!("/ui/jobs/billing/{id}/delete");
    let own = format!("http://{addr}");

    let refused: [&[(&str, &str)]; 7] = [
        // What the issue found: a forged origin and no Sec-Fetch-Site.
        &[("Origin", "http://evil.example")],
        // Neither header: nothing says the form is ours.
        &[],
        &[("Origin", "null")],
        // A browser saying the form came from another site.
        &[("Origin", "http://evil.example"), ("Sec-Fetch-Site", "cross-site")],
        // Same host name, other port or scheme's default port; other host.
        &[("Origin", "http://127.0.0.1:1")],
        &[("Origin", "http://127.0.0.1")],
        &[("Origin", "http://localhost")],
    ];
    for headers in refused {
        let mut headers = headers.to_vec();
        headers.push(("Cookie", &cookie));
        let (status, response) = post(addr, &delete, &headers, "").await;
        assert_eq!(status, 403, "{headers:?}: {response}");
        assert!(fx.is_dead("billing", id).await, "{headers:?}: the job was deleted");
    }
    let (status, _) = post(
        addr,
        "/ui/login",
        &[("Origin", "http://evil.example")],
        &format!("token={TOKEN}"),
    )
    .await;
    assert_eq!(status, 403, "a login form from another origin");

    // The dashboard's own origin goes through (scheme and case as browsers send them).
    let own_upper = own.replace("http", "HTTP");
    let (status, response) = post(addr, &delete, &[("Origin", &own_upper), ("Cookie", &cookie)], "").await;
    assert_eq!(status, 303, "{response}");
    assert!(!fx.is_dead("billing", id).await);
}

#[tokio::test]
async fn the_own_origin_is_read_from_the_proxy_and_from_sec_fetch_site() {
    let fx = Fixture::new();
    let first = fx.simple_dead_job("billing", "invoice").await;
    let second = fx.simple_dead_job("media", "resize").await;
    let addr = serve(&fx).await;
    let cookie = login(addr).await;

    // Behind a proxy that rewrote Host and said which host the browser used.
    let proxied = [
        ("Host", "10.0.0.5:8080"),
        ("X-Forwarded-Host", "admin.example.com"),
        ("Origin", "https://admin.example.com"),
        ("Cookie", &cookie),
    ];
    let (status, response) = post(addr, &format!("/ui/jobs/billing/{first}/retry"), &proxied, "").await;
    assert_eq!(status, 303, "{response}");
    assert!(!fx.is_dead("billing", first).await);

    // A browser that sends Sec-Fetch-Site but no Origin.
    let fetch = [("Sec-Fetch-Site", "same-origin"), ("Cookie", &cookie)];
    let (status, response) = post(addr, &format!("/ui/jobs/media/{second}/delete"), &fetch, "").await;
    assert_eq!(status, 303, "{response}");
    assert!(!fx.is_dead("media", second).await);
}

/// Behind a proxy that rewrites `Host` and says nothing of the original
/// (nginx's and HAProxy's defaults), a browser's own form carries an
/// `Origin` that differs from the `Host` the dashboard sees; its
/// `Sec-Fetch-Site: same-origin`, which no other site can send, lets it in.
#[tokio::test]
async fn a_same_origin_form_behind_a_host_rewriting_proxy_goes_through() {
    let fx = Fixture::new();
    let id = fx.simple_dead_job("billing", "invoice").await;
    let addr = serve(&fx).await;
    let cookie = login(addr).await;
    let rewritten = [
        ("Host", "127.0.0.1:9999"),
        ("Origin", "https://admin.example.com"),
        ("Sec-Fetch-Site", "same-origin"),
        ("Cookie", &cookie),
    ];
    let (status, response) = post(addr, &format!("/ui/jobs/billing/{id}/retry"), &rewritten, "").await;
    assert_eq!(status, 303, "{response}");
    assert!(!fx.is_dead("billing", id).await);
}
