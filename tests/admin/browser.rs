//! A real browser: headless Chromium logs in to the dashboard, clicks Retry,
//! Delete and Retry all matching (its count shown first), and the jobs leave
//! the DLQ; then pauses a queue, cancels a live job and cancels all matching
//! live jobs (its count shown first), with the workers panel marking a
//! worker that stopped heartbeating.
//!
//! Driven over the DevTools protocol (a websocket). Skips with a notice
//! when no Chromium is installed, unless `FLAGSHIP_REQUIRE_BROWSER=1`. With
//! `FLAGSHIP_SCREENSHOT_DIR=docs` it also writes `dashboard.png`,
//! `dashboard-job.png`, `dashboard-queues.png`, `dashboard-live.png`,
//! `dashboard-confirm.png`, `dashboard-sparklines.png` and
//! `dashboard-history.png` there.

use std::{collections::VecDeque, path::PathBuf, process::Stdio, sync::Arc, time::Duration};

use base64::Engine;
use chrono::TimeDelta;
use flagship_worker::{
    admin::AdminBuilder,
    broker::{JobControl, WorkerInfo, CANCEL_REASON},
    Broker, DeadLetterQueue, JobEnvelope, JobId, ReserveRequest,
};
use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use tokio::{
    io::{AsyncBufReadExt, BufReader},
    net::TcpStream,
    process::{Child, Command},
};
use tokio_tungstenite::{tungstenite::Message, MaybeTlsStream, WebSocketStream};

use crate::support::{queue, Fixture, ShiftedClock, TOKEN};

/// How long any single browser step may take before the test fails.
const STEP: Duration = Duration::from_secs(30);

fn find_chromium() -> Option<PathBuf> {
    if let Ok(path) = std::env::var("FLAGSHIP_CHROMIUM") {
        return Some(PathBuf::from(path));
    }
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .flat_map(|dir| ["chromium", "chromium-browser", "google-chrome"].map(|name| dir.join(name)))
        .find(|candidate| candidate.is_file())
}

/// A DevTools connection attached to one page.
struct DevTools {
    ws: WebSocketStream<MaybeTlsStream<TcpStream>>,
    next_id: u64,
    session: Option<String>,
    /// Events read while waiting for a reply.
    events: VecDeque<Value>,
}

impl DevTools {
    async fn connect(url: &str) -> Self {
        let (ws, _) = tokio_tungstenite::connect_async(url).await.expect("DevTools websocket");
        DevTools {
            ws,
            next_id: 0,
            session: None,
            events: VecDeque::new(),
        }
    }

    async fn read(&mut self) -> Value {
        loop {
            let message = tokio::time::timeout(STEP, self.ws.next())
                .await
                .expect("the browser answered in time")
                .expect("the DevTools connection stayed open")
                .expect("a websocket message");
            if let Message::Text(text) = message {
                return serde_json::from_str(&text).expect("DevTools sends JSON");
            }
        }
    }

    async fn call(&mut self, method: &str, params: Value) -> Value {
        self.next_id += 1;
        let id = self.next_id;
        let mut message = json!({ "id": id, "method": method, "params": params });
        if let Some(session) = &self.session {
            message["sessionId"] = json!(session);
        }
        self.ws.send(Message::text(message.to_string())).await.unwrap();
        loop {
            let reply = self.read().await;
            if reply["id"] == id {
                assert!(reply.get("error").is_none(), "{method} failed: {reply}");
                return reply["result"].clone();
            }
            self.events.push_back(reply);
        }
    }

    /// Waits for the page's next `load` event (after a navigation started
    /// since the last wait).
    async fn wait_for_load(&mut self) {
        loop {
            let event = match self.events.pop_front() {
                Some(event) => event,
                None => self.read().await,
            };
            if event["method"] == "Page.loadEventFired" {
                return;
            }
        }
    }

    async fn eval(&mut self, expression: &str) -> Value {
        let result = self
            .call(
                "Runtime.evaluate",
                json!({ "expression": expression, "returnByValue": true }),
            )
            .await;
        assert!(result.get("exceptionDetails").is_none(), "{expression}: {result}");
        result["result"]["value"].clone()
    }

    /// Clicks the centre of the element `selector` with real mouse events,
    /// and waits for the page it leads to.
    async fn click_and_wait(&mut self, selector: &str) {
        let rect = self
            .eval(&format!(
                "(() => {{ const e = document.querySelector({selector:?}); if (!e) return null; \
                 e.scrollIntoView({{block: 'center'}}); const r = e.getBoundingClientRect(); \
                 return [r.x + r.width / 2, r.y + r.height / 2]; }})()"
            ))
            .await;
        let (x, y) = (rect[0].as_f64(), rect[1].as_f64());
        let (Some(x), Some(y)) = (x, y) else {
            panic!("no element {selector}")
        };
        self.events.clear();
        for kind in ["mousePressed", "mouseReleased"] {
            self.call(
                "Input.dispatchMouseEvent",
                json!({ "type": kind, "x": x, "y": y, "button": "left", "clickCount": 1 }),
            )
            .await;
        }
        self.wait_for_load().await;
    }

    async fn navigate(&mut self, url: &str) {
        self.events.clear();
        self.call("Page.navigate", json!({ "url": url })).await;
        self.wait_for_load().await;
    }

    async fn screenshot(&mut self, path: &std::path::Path) {
        let shot = self.call("Page.captureScreenshot", json!({ "format": "png" })).await;
        let png = base64::engine::general_purpose::STANDARD
            .decode(shot["data"].as_str().unwrap())
            .unwrap();
        std::fs::write(path, png).unwrap();
        eprintln!("screenshot written to {}", path.display());
    }
}

/// Starts Chromium with DevTools on a free port; returns it and the
/// browser's websocket URL.
async fn launch(chromium: &PathBuf, profile: &std::path::Path) -> (Child, String) {
    let mut child = Command::new(chromium)
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--remote-debugging-port=0",
            "--window-size=1280,900",
        ])
        .arg(format!("--user-data-dir={}", profile.display()))
        .arg("about:blank")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("chromium starts");
    let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
    let url = tokio::time::timeout(STEP, async {
        while let Some(line) = lines.next_line().await.unwrap() {
            if let Some(url) = line.strip_prefix("DevTools listening on ") {
                return url.trim().to_owned();
            }
        }
        panic!("chromium exited without opening DevTools");
    })
    .await
    .expect("chromium opened DevTools in time");
    // Keep draining stderr so the browser never blocks on a full pipe.
    tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
    (child, url)
}

/// Chromium's path, or `None` (with a notice) when the test must skip;
/// panics instead under `FLAGSHIP_REQUIRE_BROWSER=1`.
fn chromium_or_skip() -> Option<PathBuf> {
    let found = find_chromium();
    if found.is_none() {
        if std::env::var("FLAGSHIP_REQUIRE_BROWSER").as_deref() == Ok("1") {
            panic!("FLAGSHIP_REQUIRE_BROWSER=1 but no chromium was found on PATH (apt-get install chromium)");
        }
        eprintln!("skipping the browser test: no chromium on PATH (set FLAGSHIP_REQUIRE_BROWSER=1 to fail instead)");
    }
    found
}

/// Serves `admin` under `/admin` on a free port; returns its base URL.
async fn serve(admin: axum::Router) -> (String, tokio::task::JoinHandle<std::io::Result<()>>) {
    let app = axum::Router::new().nest("/admin", admin);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}/admin", listener.local_addr().unwrap());
    (base, tokio::spawn(async move { axum::serve(listener, app).await }))
}

/// Starts Chromium and attaches to a fresh page 1280 pixels wide and
/// `height` high.
async fn open_page(chromium: &PathBuf, profile: &std::path::Path, height: u32) -> (Child, DevTools) {
    let (browser, url) = launch(chromium, profile).await;
    let mut devtools = DevTools::connect(&url).await;
    let target = devtools
        .call("Target.createTarget", json!({ "url": "about:blank" }))
        .await;
    let attached = devtools
        .call(
            "Target.attachToTarget",
            json!({ "targetId": target["targetId"], "flatten": true }),
        )
        .await;
    devtools.session = attached["sessionId"].as_str().map(str::to_owned);
    devtools.call("Page.enable", json!({})).await;
    devtools
        .call(
            "Emulation.setDeviceMetricsOverride",
            json!({ "width": 1280, "height": height, "deviceScaleFactor": 1, "mobile": false }),
        )
        .await;
    (browser, devtools)
}

/// Types the token into the login form on screen and lands on the dashboard.
async fn log_in(devtools: &mut DevTools) {
    devtools.eval("document.querySelector('#token').focus()").await;
    devtools.call("Input.insertText", json!({ "text": TOKEN })).await;
    devtools.click_and_wait("form button[type=submit]").await;
    assert_eq!(devtools.eval("location.pathname").await, "/admin/ui");
}

/// Dead jobs that look like a real day's failures.
async fn realistic_dead_jobs(fx: &Fixture, clock: &ShiftedClock) -> Vec<(&'static str, JobId)> {
    let jobs = [
        (
            "billing",
            "send-invoice",
            json!({"customer": "closed-initech", "amount_cents": 4900}),
            &["customer `closed-initech` has closed their account; invoice not sent"][..],
            "customer `closed-initech` has closed their account; invoice not sent",
            26,
        ),
        (
            "media",
            "resize-image",
            json!({"url": "https://slow-cdn.example.net/banner.jpg", "width": 1280}),
            &[
                "GET https://slow-cdn.example.net/banner.jpg timed out after 10 s (upstream 504)",
                "GET https://slow-cdn.example.net/banner.jpg timed out after 10 s (upstream 504)",
                "GET https://slow-cdn.example.net/banner.jpg: connection reset by peer",
            ][..],
            "retries exhausted after 3 attempts: GET https://slow-cdn.example.net/banner.jpg: connection reset by peer",
            5,
        ),
        (
            "notifications",
            "send-email",
            json!({"to": "ops@example.com", "template": "usage-warning"}),
            &[
                "Resend API 429: rate limited, retry after 30 s",
                "Resend API 422: `to` domain has no MX record",
            ][..],
            "Resend API 422: `to` domain has no MX record",
            2,
        ),
        (
            "billing",
            "send-invoice",
            json!({"customer": "closed-globex", "amount_cents": 15000}),
            &["customer `closed-globex` has closed their account; invoice not sent"][..],
            "customer `closed-globex` has closed their account; invoice not sent",
            1,
        ),
    ];
    let mut ids = Vec::new();
    for (q, kind, payload, errors, reason, hours_ago) in jobs {
        clock.set_offset(-TimeDelta::hours(hours_ago));
        ids.push((q, fx.dead_job(q, kind, payload, errors, reason).await));
    }
    clock.set_offset(TimeDelta::zero());
    // Some live work, for the stats table.
    let now = fx.now();
    let ready = (0..3)
        .map(|n| JobEnvelope::new("send-email", queue("notifications"), json!({ "n": n }), now))
        .collect();
    fx.broker.enqueue(ready).await.unwrap();
    ids
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_real_browser_works_dead_and_live_jobs() {
    let Some(chromium) = chromium_or_skip() else { return };

    let clock = Arc::new(ShiftedClock::default());
    let fx = Fixture::with_clock(clock.clone());
    let ids = realistic_dead_jobs(&fx, &clock).await;
    let (retry_queue, retry_id) = ids[1];
    let (delete_queue, delete_id) = ids[2];

    let admin = AdminBuilder::new(fx.broker.clone()).token(TOKEN).build().unwrap();
    let (base, server) = serve(admin).await;
    let profile = tempfile::tempdir().unwrap();
    let (mut browser, mut devtools) = open_page(&chromium, profile.path(), 900).await;

    // Unauthenticated: the dashboard sends the browser to the login form.
    devtools.navigate(&format!("{base}/ui")).await;
    assert_eq!(devtools.eval("location.pathname").await, "/admin/ui/login");
    log_in(&mut devtools).await;
    let cookie_visible = devtools.eval("document.cookie").await;
    assert_eq!(cookie_visible, "", "the session cookie is HttpOnly");
    let rows = devtools
        .eval("document.querySelectorAll('tr[data-job-id]').length")
        .await;
    assert_eq!(rows, 4, "every dead job is listed");

    let shots = std::env::var_os("FLAGSHIP_SCREENSHOT_DIR").map(PathBuf::from);
    if let Some(dir) = &shots {
        devtools.screenshot(&dir.join("dashboard.png")).await;
    }

    // Retry from the table.
    devtools
        .click_and_wait(&format!("tr[data-job-id='{retry_id}'] button.retry"))
        .await;
    assert!(!fx.is_dead(retry_queue, retry_id).await, "the job left the DLQ");
    assert_eq!(fx.broker.stats(&queue(retry_queue)).await.unwrap().ready, 1);
    let notice = devtools.eval("document.querySelector('.notice').textContent").await;
    assert_eq!(notice, format!("Job {retry_id} moved back to ready."));
    let gone = devtools
        .eval(&format!(
            "document.querySelector(\"tr[data-job-id='{retry_id}']\") === null"
        ))
        .await;
    assert_eq!(gone, true, "the row is gone from the page");

    // Open the detail view, then delete from there.
    devtools
        .click_and_wait(&format!("tr[data-job-id='{delete_id}'] a"))
        .await;
    let payload = devtools.eval("document.querySelector('pre.payload').textContent").await;
    assert!(payload.as_str().unwrap().contains("usage-warning"), "{payload}");
    let attempts = devtools
        .eval("document.querySelectorAll('table.attempts tbody tr').length")
        .await;
    assert_eq!(attempts, 2);
    if let Some(dir) = &shots {
        devtools.screenshot(&dir.join("dashboard-job.png")).await;
    }
    devtools.click_and_wait(".actions button.danger").await;
    assert!(!fx.is_dead(delete_queue, delete_id).await, "the job was deleted");
    assert_eq!(
        devtools
            .eval("document.querySelectorAll('tr[data-job-id]').length")
            .await,
        2
    );

    // Filter to billing (both jobs left) and retry them all at once.
    devtools.navigate(&format!("{base}/ui?queue=billing")).await;
    devtools.click_and_wait("form.bulk-retry button").await;
    // First a page saying how many jobs it takes; nothing has changed yet.
    assert_eq!(devtools.eval("location.pathname").await, "/admin/ui/dlq/retry");
    let warning = devtools
        .eval("document.querySelector('.notice.warn').textContent")
        .await;
    assert_eq!(warning, "This moves 2 dead jobs of queue billing back to ready.");
    for (q, id) in [ids[0], ids[3]] {
        assert!(fx.is_dead(q, id).await, "{id} waits for the confirmation");
    }
    devtools.click_and_wait("button.confirm").await;
    assert_eq!(
        devtools.eval("location.search").await,
        "?queue=billing&notice=retried_matching&count=2"
    );
    let notice = devtools.eval("document.querySelector('.notice').textContent").await;
    assert_eq!(notice, "Moved 2 dead jobs back to ready.");
    for (q, id) in [ids[0], ids[3]] {
        assert!(!fx.is_dead(q, id).await, "{id} left the DLQ");
    }
    assert_eq!(fx.broker.stats(&queue("billing")).await.unwrap().ready, 2);
    assert_eq!(
        devtools
            .eval("document.querySelectorAll('tr[data-job-id]').length")
            .await,
        0
    );

    // Live work: a worker that heartbeats, one that stopped, a running job.
    let control: &dyn JobControl = &*fx.broker;
    let now = fx.now();
    let serves = vec![queue("notifications"), queue("media")];
    let live_worker = WorkerInfo::new("worker-7f3a@api-1", serves.clone(), 8, now - TimeDelta::hours(3));
    control
        .register_worker(&live_worker, Duration::from_secs(600))
        .await
        .unwrap();
    let gone_worker = WorkerInfo::new("worker-19c2@api-2", serves, 8, now - TimeDelta::hours(5));
    control
        .register_worker(&gone_worker, Duration::from_millis(1))
        .await
        .unwrap();
    let request =
        ReserveRequest::new(1, Duration::from_secs(300), Duration::ZERO).worker(Arc::from("worker-7f3a@api-1"));
    let running = fx.broker.reserve(&queue("notifications"), request).await.unwrap()[0]
        .lease
        .id;

    // Pause a queue from its row.
    devtools.navigate(&format!("{base}/ui")).await;
    let gone = devtools
        .eval("document.querySelector(\"tr[data-worker-id='worker-19c2@api-2'] .worker-status\").textContent")
        .await;
    assert_eq!(gone, "gone", "the worker that stopped heartbeating is marked");
    if let Some(dir) = &shots {
        devtools.screenshot(&dir.join("dashboard-queues.png")).await;
    }
    devtools
        .click_and_wait("tr[data-queue='notifications'] button.pause")
        .await;
    let notice = devtools.eval("document.querySelector('.notice').textContent").await;
    assert_eq!(
        notice,
        "Queue notifications paused: workers take none of its jobs until it is resumed."
    );
    let status = devtools
        .eval("document.querySelector(\"tr[data-queue='notifications'] .queue-status\").textContent")
        .await;
    assert_eq!(status, "paused");
    assert!(fx.broker.stats(&queue("notifications")).await.unwrap().paused);

    // Live jobs: the running one shows its worker; cancel a ready one.
    devtools
        .click_and_wait("tr[data-queue='notifications'] a[href$='/ui/live?queue=notifications']")
        .await;
    let owner = devtools
        .eval(&format!(
            "document.querySelector(\"tr[data-job-id='{running}'] td:nth-child(6)\").textContent"
        ))
        .await;
    assert_eq!(owner, "worker-7f3a@api-1");
    if let Some(dir) = &shots {
        devtools.screenshot(&dir.join("dashboard-live.png")).await;
    }
    let first_ready = devtools
        .eval("[...document.querySelectorAll('tr[data-job-id]')].find(r => r.querySelector('.state.ready')).dataset.jobId")
        .await;
    let first_ready: JobId = first_ready.as_str().unwrap().parse().unwrap();
    devtools
        .click_and_wait(&format!("tr[data-job-id='{first_ready}'] button.cancel"))
        .await;
    let notice = devtools.eval("document.querySelector('.notice').textContent").await;
    assert_eq!(
        notice,
        format!("Job {first_ready} cancelled: moved to the dead-letter queue.")
    );
    let dead = fx
        .broker
        .get_dead(&queue("notifications"), first_ready)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(dead.dead_letter_reason.as_deref(), Some(CANCEL_REASON));

    // Cancel all matching: the count first, then the action.
    devtools
        .navigate(&format!("{base}/ui/live?queue=notifications&state=ready"))
        .await;
    devtools.click_and_wait("form.bulk-cancel button").await;
    let warning = devtools
        .eval("document.querySelector('.notice.warn').textContent")
        .await;
    assert_eq!(
        warning,
        "This cancels 1 job: 1 ready or scheduled go to the dead-letter queue, 0 running are asked to stop."
    );
    if let Some(dir) = &shots {
        devtools.screenshot(&dir.join("dashboard-confirm.png")).await;
    }
    assert_eq!(
        fx.broker.stats(&queue("notifications")).await.unwrap().ready,
        1,
        "nothing yet"
    );
    devtools.click_and_wait("button.confirm").await;
    let notice = devtools.eval("document.querySelector('.notice').textContent").await;
    assert_eq!(
        notice,
        "Cancelled 1 job: 1 moved to the dead-letter queue, 0 running asked to stop."
    );
    let stats = fx.broker.stats(&queue("notifications")).await.unwrap();
    assert_eq!((stats.ready, stats.active), (0, 1), "the running job is untouched");

    let _ = browser.kill().await;
    server.abort();
}

/// Issue 18: after a scripted run (jobs completing, some failing, a backlog
/// building and draining), the dashboard shows a sparkline per queue and
/// the history page's charts, whose numbers match the API's.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_real_browser_sees_the_history_charts_match_the_api() {
    let Some(chromium) = chromium_or_skip() else { return };
    let (fx, clock, emails, _) = crate::history::played_fixture().await;
    // Some dead jobs too, as on a real day.
    realistic_dead_jobs(&fx, &clock).await;
    let api = fx.router();
    let admin = AdminBuilder::new(fx.broker.clone())
        .token(TOKEN)
        .clock(clock.clone())
        .build()
        .unwrap();
    let (base, server) = serve(admin).await;
    let profile = tempfile::tempdir().unwrap();
    let (mut browser, mut devtools) = open_page(&chromium, profile.path(), 1400).await;
    devtools.navigate(&format!("{base}/ui/login")).await;
    log_in(&mut devtools).await;

    // The queue table: a sparkline per queue, its total the API's.
    let api_hour = crate::support::get(&api, "/api/queues/emails/history").await.json();
    let api_completed: u64 = api_hour["buckets"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| b["completed"].as_u64().unwrap())
        .sum();
    assert_eq!(api_completed, emails.completed);
    let sparks = devtools.eval("document.querySelectorAll('svg.sparkline').length").await;
    assert_eq!(
        sparks, 5,
        "one sparkline per queue: billing, emails, media, notifications, reports"
    );
    let spark_total = devtools
        .eval("document.querySelector(\"a[href$='history?queue=emails'] svg.sparkline\").dataset.completed")
        .await;
    assert_eq!(spark_total, api_completed.to_string());
    let shots = std::env::var_os("FLAGSHIP_SCREENSHOT_DIR").map(PathBuf::from);
    if let Some(dir) = &shots {
        devtools.screenshot(&dir.join("dashboard-sparklines.png")).await;
    }

    // The history page, reached through the sparkline.
    devtools.click_and_wait("a[href$='history?queue=emails']").await;
    assert_eq!(devtools.eval("location.search").await, "?queue=emails");
    let charts = devtools.eval("document.querySelectorAll('svg.chart').length").await;
    assert_eq!(charts, 4, "throughput, depth, age and latency");
    let rendered = devtools
        .eval("[...document.querySelectorAll('svg.chart')].every(s => s.getBoundingClientRect().height > 100)")
        .await;
    assert_eq!(rendered, true, "the charts are drawn with a size");
    // Every marked point of the depth chart is the API's sample of its minute.
    let points = devtools
        .eval(
            "[...document.querySelectorAll(\"#chart-depth g.points[data-series='ready depth'] g[data-value]\")]\
             .map(g => Number(g.dataset.value))",
        )
        .await;
    let api_ready: Vec<u64> = api_hour["buckets"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|b| b["ready"].as_u64())
        .collect();
    let drawn: Vec<u64> = points.as_array().unwrap().iter().map(|v| v.as_u64().unwrap()).collect();
    assert_eq!(drawn, api_ready, "the depth chart's points are the API's samples");
    let completed_points = devtools
        .eval(
            "[...document.querySelectorAll(\"#chart-throughput g.points[data-series='completed'] g[data-value]\")]\
             .reduce((sum, g) => sum + Number(g.dataset.value), 0)",
        )
        .await;
    assert_eq!(
        completed_points, api_completed,
        "the throughput chart's points add up to the API's"
    );
    let legend = devtools
        .eval("document.querySelector('#chart-throughput .summary').textContent")
        .await;
    assert_eq!(legend, format!("total {api_completed}"));
    let zone = devtools
        .eval("document.querySelector('#chart-throughput desc').textContent")
        .await;
    assert!(zone.as_str().unwrap().contains("UTC"), "{zone}");
    if let Some(dir) = &shots {
        devtools.screenshot(&dir.join("dashboard-history.png")).await;
    }

    let _ = browser.kill().await;
    server.abort();
}
