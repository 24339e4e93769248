//! `/metrics` after an end-to-end run, and the JSON log lines of the same run (issue 15 point 3). The real
//! binary (`--log-format json`) pushes through a local APNs to simulated iPads that enroll, check in, and answer
//! commands queued through the API; then the page is parsed strictly (every line a comment or a valid sample,
//! every sample's family declared with `# TYPE`, no series twice) and every family is checked with plausible
//! values: the check-in and command-result counters grow by exactly what the devices sent, a refused DEP sync
//! (Apple's terms not accepted) is an error and its token failing until the next sync succeeds, and so is an Apps
//! and Books sync after Apple revoked the department's token (in aggregate: no tenant id). Attack: the open
//! endpoint carries no tenant id and no UDID, and a request to a path holding a UDID is counted under its route
//! template (or `unmatched`), never under the path; with a metrics token only its holder scrapes, and only it
//! sees the departments' series by tenant id (never a UDID). On SQLite and PostgreSQL.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use anyhow::{bail, ensure, Context, Result};
use orchard_apns::fake::random_topic;
use orchard_apns::DeviceToken;
use orchard_dep::fake::FakeDepConfig;
use orchard_dep::fake::FakeDepServer;
use orchard_testkit::apple::{AppleDep, ApplePush, AppleVpp};
use orchard_testkit::server::TestServer;
use orchard_testkit::Backend;
use orchard_types::{Clock, Role, SystemClock};
use orchard_vpp::fake::FakeVppConfig;
use serde_json::{json, Value};

const FLEET: usize = 3;

/// One parsed sample: family-qualified name, labels, value.
#[derive(Debug, Clone)]
struct Sample {
    name: String,
    labels: BTreeMap<String, String>,
    value: f64,
}

/// A parsed metrics page.
struct Page {
    text: String,
    samples: Vec<Sample>,
    /// Family name → declared type.
    types: BTreeMap<String, String>,
}

impl Page {
    /// Parses Prometheus' text format strictly: a line is `# HELP name text`, `# TYPE name kind`, or a sample
    /// of a family whose TYPE came before it; label values are quoted with only `\\`, `\"` and `\n` escapes;
    /// the value is a number; no series appears twice.
    fn parse(text: &str) -> Result<Page> {
        let mut types = BTreeMap::new();
        let mut samples = Vec::new();
        let mut seen = BTreeSet::new();
        for (i, line) in text.lines().enumerate() {
            let at = || format!("line {}: {line:?}", i + 1);
            if let Some(rest) = line.strip_prefix("# HELP ") {
                let (name, _help) = rest.split_once(' ').with_context(at)?;
                ensure!(valid_name(name), "bad family name, {}", at());
                continue;
            }
            if let Some(rest) = line.strip_prefix("# TYPE ") {
                let (name, kind) = rest.split_once(' ').with_context(at)?;
                ensure!(valid_name(name), "bad family name, {}", at());
                ensure!(
                    matches!(
                        kind,
                        "counter" | "gauge" | "histogram" | "summary" | "untyped"
                    ),
                    "bad type, {}",
                    at()
                );
                ensure!(
                    types.insert(name.to_owned(), kind.to_owned()).is_none(),
                    "family typed twice, {}",
                    at()
                );
                continue;
            }
            ensure!(!line.starts_with('#'), "unknown comment, {}", at());
            ensure!(!line.is_empty(), "empty line, {}", at());
            let sample = parse_sample(line).with_context(at)?;
            let family = family_of(&sample.name, &types).with_context(|| {
                format!(
                    "sample of an undeclared family (no TYPE before it), {}",
                    at()
                )
            })?;
            if types.get(&family).map(String::as_str) == Some("histogram") {
                ensure!(
                    sample.name != family,
                    "a histogram's samples are _bucket, _sum or _count, {}",
                    at()
                );
            }
            ensure!(
                seen.insert(format!("{}{:?}", sample.name, sample.labels)),
                "series twice, {}",
                at()
            );
            samples.push(sample);
        }
        Ok(Page {
            text: text.to_owned(),
            samples,
            types,
        })
    }

    fn has_family(&self, name: &str) -> bool {
        self.types.contains_key(name)
    }

    fn samples<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a Sample> + 'a {
        self.samples.iter().filter(move |s| s.name == name)
    }

    /// The value of the one sample of `name` with these labels (others ignored), or 0 when there is none.
    fn value(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        self.samples(name)
            .find(|s| {
                labels
                    .iter()
                    .all(|(k, v)| s.labels.get(*k).map(String::as_str) == Some(*v))
            })
            .map(|s| s.value)
            .unwrap_or(0.0)
    }

    fn sum(&self, name: &str) -> f64 {
        self.samples(name).map(|s| s.value).sum()
    }
}

fn valid_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_' || c == ':')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
}

/// The family a sample belongs to: its own name, or a histogram's name for `_bucket`, `_sum`, `_count`.
fn family_of(name: &str, types: &BTreeMap<String, String>) -> Option<String> {
    if types.contains_key(name) {
        return Some(name.to_owned());
    }
    ["_bucket", "_sum", "_count"].iter().find_map(|suffix| {
        let family = name.strip_suffix(suffix)?;
        (types.get(family).map(String::as_str) == Some("histogram")).then(|| family.to_owned())
    })
}

fn parse_sample(line: &str) -> Result<Sample> {
    let name_end = line
        .find(['{', ' '])
        .context("a sample is a name, labels and a value")?;
    let name = &line[..name_end];
    ensure!(valid_name(name), "bad metric name");
    let mut rest = &line[name_end..];
    let mut labels = BTreeMap::new();
    if let Some(after) = rest.strip_prefix('{') {
        let mut chars = after.char_indices().peekable();
        let end;
        loop {
            let (start, c) = chars.next().context("labels never closed")?;
            if c == '}' {
                end = start + 1;
                break;
            }
            let mut key = String::from(c);
            loop {
                let (_, c) = chars.next().context("label without a value")?;
                if c == '=' {
                    break;
                }
                key.push(c);
            }
            ensure!(valid_name(&key), "bad label name {key:?}");
            ensure!(
                chars.next().map(|(_, c)| c) == Some('"'),
                "label value not quoted"
            );
            let mut value = String::new();
            loop {
                let (_, c) = chars.next().context("label value never closed")?;
                match c {
                    '"' => break,
                    '\\' => match chars.next().map(|(_, c)| c) {
                        Some('\\') => value.push('\\'),
                        Some('"') => value.push('"'),
                        Some('n') => value.push('\n'),
                        other => bail!("bad escape {other:?}"),
                    },
                    '\n' => bail!("line feed in a label value"),
                    c => value.push(c),
                }
            }
            ensure!(
                labels.insert(key.clone(), value).is_none(),
                "label {key} twice"
            );
            match chars.peek().map(|(_, c)| *c) {
                Some(',') => {
                    chars.next();
                }
                Some('}') => {}
                other => bail!("expected , or }} after a label, got {other:?}"),
            }
        }
        rest = &after[end..];
    }
    let value = rest
        .strip_prefix(' ')
        .context("one space before the value")?;
    let value: f64 = match value {
        "+Inf" => f64::INFINITY,
        "-Inf" => f64::NEG_INFINITY,
        "NaN" => f64::NAN,
        v => v.parse().with_context(|| format!("value {v:?}"))?,
    };
    Ok(Sample {
        name: name.to_owned(),
        labels,
        value,
    })
}

#[test]
fn the_parser_refuses_what_prometheus_would() {
    let ok =
        "# HELP a_total A.\n# TYPE a_total counter\na_total{route=\"/x/{id}\",s=\"a\\\"b\"} 3\n";
    let page = Page::parse(ok).unwrap_or_else(|e| panic!("{e:#}"));
    assert_eq!(page.value("a_total", &[("s", "a\"b")]), 3.0);
    for bad in [
        "a_total 1\n",
        "# TYPE a_total counter\na_total{x=\"1\"} one\n",
        "# TYPE a_total counter\na_total{x=1} 1\n",
        "# TYPE a_total counter\na_total{x=\"1\" 1\n",
        "# TYPE a_total counter\na_total 1\na_total 2\n",
        "# TYPE h histogram\nh 1\n",
        "# TYPE a_total counter\n\n",
    ] {
        assert!(Page::parse(bad).is_err(), "accepted: {bad:?}");
    }
}

async fn scrape(server: &TestServer) -> Result<Page> {
    let response = server.http.get(server.url("/metrics")).send().await?;
    ensure!(response.status() == 200, "/metrics → {}", response.status());
    let text = response.text().await?;
    Page::parse(&text).with_context(|| format!("parsing /metrics:\n{text}"))
}

/// The API's upload body for a new push certificate of `topic` from Apple's push CA.
fn push_cert_json(apple: &ApplePush, topic: &orchard_types::ApnsTopic) -> Result<Value> {
    let cert = apple.certificate(topic, SystemClock.now(), 365)?;
    Ok(json!({
        "certificate_pem": String::from_utf8(cert.cert_pem())?,
        "private_key_pem": String::from_utf8(cert.key_pem().expose().clone())?,
        "force": false,
    }))
}

/// Scrapes until `done` holds (bounded: pushes and job steps are background work).
async fn scrape_until(server: &TestServer, done: impl Fn(&Page) -> bool) -> Result<Page> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        let page = scrape(server).await?;
        if done(&page) {
            return Ok(page);
        }
        ensure!(
            tokio::time::Instant::now() < deadline,
            "/metrics never showed what was expected:\n{}",
            page.text
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Every family the issue names, each with a TYPE line.
const FAMILIES: &[&str] = &[
    "orchard_http_requests_total",
    "orchard_http_request_duration_seconds",
    "orchard_checkins_total",
    "orchard_command_results_total",
    "orchard_command_queue_depth",
    "orchard_command_queue_oldest_age_seconds",
    "orchard_push_results_total",
    "orchard_push_pacing_rate",
    "orchard_dep_syncs_total",
    "orchard_dep_sync_errors_total",
    "orchard_dep_last_sync_timestamp_seconds",
    "orchard_dep_sync_lag_seconds",
    "orchard_apps_syncs_total",
    "orchard_apps_sync_errors_total",
    "orchard_apps_sync_lag_max_seconds",
    "orchard_apps_sync_failing",
    "orchard_jobs_runs_total",
    "orchard_job_lease_holder",
    "orchard_job_last_run_failed",
    "orchard_db_pool_connections",
    "orchard_credential_days_left",
];

async fn scenario(backend: Backend) -> Result<()> {
    let apple = ApplePush::start(SystemClock.now()).await?;
    let logs = tempfile::tempdir()?;
    let log_path = logs.path().join("orchard.log");
    let dep = AppleDep::start(FakeDepConfig::default()).await?;
    dep.server
        .add_devices(&FakeDepServer::make_serials("MET", 0, 5));
    let vpp = AppleVpp::start(FakeVppConfig::default()).await?;
    let mut args = apple.serve_args();
    args.extend(dep.serve_args());
    args.extend(vpp.serve_args());
    args.extend(["--log-format".to_string(), "json".to_string()]);
    // The request spans' closing lines (tower-http, debug) carry every field of a request; the job steps' last
    // lines (debug) their outcome.
    let Some(mut server) = TestServer::start_logged(
        backend,
        &args,
        "info,tower_http=debug,orchard_core::jobs=debug",
        &log_path,
    )
    .await?
    else {
        return Ok(());
    };
    let topic = random_topic()?;
    let (status, body) = server
        .api(
            &server.token,
            reqwest::Method::PUT,
            "/api/v1/push-certificate",
            Some(push_cert_json(&apple, &topic)?),
        )
        .await?;
    ensure!(status == 200, "push certificate upload: {status} {body}");

    let tenant = server.create_tenant("Physics", "physics").await?;
    let mut fleet = server
        .enroll_devices(&server.sim_config(), &tenant, FLEET)
        .await?;
    let before = scrape(&server).await?;
    for family in FAMILIES {
        ensure!(before.has_family(family), "no family {family}");
    }
    ensure!(
        before.value(
            "orchard_checkins_total",
            &[("message_type", "Authenticate")]
        ) == FLEET as f64,
        "one Authenticate per enrollment:\n{}",
        before.text
    );

    // Check-ins: each device sends one more TokenUpdate; the counter grows by exactly that.
    for device in fleet.iter_mut() {
        device.send_token_update().await?;
    }
    // Commands: one DeviceLock each, through the API; seen in the queue before the devices fetch it.
    let mut ids = Vec::new();
    for device in &fleet {
        let detail = server.device_by_udid(&device.state.udid).await?;
        let id = detail["id"].as_str().context("device id")?.to_owned();
        server
            .post(
                &format!("/api/v1/devices/{id}/commands"),
                json!({"type": "DeviceLock", "message": "metrics"}),
            )
            .await?;
        ids.push(id);
    }
    let queued = scrape(&server).await?;
    ensure!(
        queued.value("orchard_command_queue_depth", &[("status", "queued")]) >= FLEET as f64,
        "the locks wait in the queue:\n{}",
        queued.text
    );
    let oldest = queued.value(
        "orchard_command_queue_oldest_age_seconds",
        &[("status", "queued")],
    );
    ensure!(
        (0.0..3600.0).contains(&oldest),
        "oldest queued command's age {oldest}"
    );
    let statuses: BTreeSet<&str> = queued
        .samples("orchard_command_queue_depth")
        .filter_map(|s| s.labels.get("status").map(String::as_str))
        .collect();
    ensure!(
        statuses == BTreeSet::from(["queued", "sent", "not_now"]),
        "the live statuses, each always: {statuses:?}"
    );
    for device in fleet.iter_mut() {
        device.poll().await?;
    }
    // A device whose token APNs says is gone: its next push is counted under Apple's reason.
    let gone = DeviceToken::from_bytes(&fleet[0].state.push_token)?;
    apple.apns.mark_unregistered(&gone);
    server
        .post(
            &format!("/api/v1/devices/{}/commands", ids[0]),
            json!({"type": "DeviceLock", "message": "gone"}),
        )
        .await?;
    // Requests to paths that hold a UDID: a route template, or unmatched; never the path.
    let udid = fleet[0].state.udid.clone();
    let unknown = server
        .http
        .get(server.url(&format!("/no/such/{udid}")))
        .send()
        .await?;
    ensure!(unknown.status() == 404);
    for id in &ids {
        server.commands_of(id).await?;
    }

    // DEP: a sync refused until Apple's new terms are accepted, then one that succeeds.
    let (dep_token, _) = server.upload_dep_token(&dep.server, "Campus ASM").await?;
    dep.server.set_terms_not_signed(true);
    let (status, body) = server
        .api(
            &server.token,
            reqwest::Method::POST,
            &format!("/api/v1/dep-tokens/{dep_token}/sync"),
            Some(json!({})),
        )
        .await?;
    ensure!(
        (400..500).contains(&status),
        "sync without the terms: {status} {body}"
    );
    let refused = scrape(&server).await?;
    ensure!(
        refused.value("orchard_dep_sync_errors_total", &[]) == 1.0
            && refused.value("orchard_dep_sync_failing", &[("token", &dep_token)]) == 1.0,
        "the failed DEP sync:\n{}",
        refused.text
    );
    dep.server.set_terms_not_signed(false);
    server
        .post(&format!("/api/v1/dep-tokens/{dep_token}/sync"), json!({}))
        .await?;

    // Apps and Books: the department's location syncs, then Apple revokes its token and the next sync fails.
    let admin = server.create_token(Role::Admin, Some(&tenant), "physics-admin")?;
    let content_token = vpp.server.add_location("Physics Library");
    let apps = |method: reqwest::Method, path: &'static str, body: Option<Value>| {
        let admin = admin.clone();
        let server = &server;
        let tenant = tenant.clone();
        async move {
            server
                .api(
                    &admin,
                    method,
                    &format!("/api/v1/tenants/{tenant}/apps/{path}"),
                    body,
                )
                .await
        }
    };
    let (status, body) = apps(
        reqwest::Method::PUT,
        "token",
        Some(json!({"content_token": content_token})),
    )
    .await?;
    ensure!(status == 200, "apps token upload: {status} {body}");
    let (status, body) = apps(reqwest::Method::POST, "sync", None).await?;
    ensure!(status == 200, "apps sync: {status} {body}");
    vpp.server.revoke_token(&content_token);
    let (status, body) = apps(reqwest::Method::POST, "sync", None).await?;
    // The sync answers (with what the department must do) but failed.
    ensure!(
        status == 200 && body["claim_state"] == "token_error",
        "apps sync with a revoked token: {status} {body}"
    );

    // Pushes are background work: wait (bounded) until the dispatcher settled them.
    let after = scrape_until(&server, |p| {
        p.value("orchard_push_results_total", &[("reason", "Unregistered")]) >= 1.0
            && p.value("orchard_push_results_total", &[("reason", "Success")]) >= FLEET as f64
    })
    .await?;
    let grew = |name: &str, labels: &[(&str, &str)]| {
        after.value(name, labels) - before.value(name, labels)
    };
    ensure!(
        grew("orchard_checkins_total", &[("message_type", "TokenUpdate")]) == FLEET as f64,
        "the TokenUpdates sent:\n{}",
        after.text
    );
    ensure!(
        after.value(
            "orchard_command_results_total",
            &[("request_type", "DeviceLock"), ("status", "acknowledged")]
        ) == FLEET as f64,
        "one acknowledged DeviceLock per device:\n{}",
        after.text
    );
    ensure!(
        after.value(
            "orchard_command_results_total",
            &[
                ("request_type", "DeviceInformation"),
                ("status", "acknowledged")
            ]
        ) >= FLEET as f64,
        "the inventory at enrollment"
    );
    ensure!(
        after.value("orchard_push_results_total", &[("reason", "Success")]) >= FLEET as f64,
        "every device was pushed at least once:\n{}",
        after.text
    );
    // Check-ins answered 200 at least as often as counted (the counter counts decoded, signed messages).
    let checkin_requests = after.value(
        "orchard_http_requests_total",
        &[("route", "/mdm/checkin"), ("status", "200")],
    );
    ensure!(
        checkin_requests >= after.sum("orchard_checkins_total"),
        "check-in requests {checkin_requests}:\n{}",
        after.text
    );
    ensure!(
        after.value(
            "orchard_http_requests_total",
            &[
                ("route", "/api/v1/devices/{id}/commands"),
                ("status", "200")
            ]
        ) >= FLEET as f64,
        "API requests by route template:\n{}",
        after.text
    );
    ensure!(
        after.value(
            "orchard_http_requests_total",
            &[("route", "unmatched"), ("status", "404")]
        ) >= 1.0
    );
    let command_route_count = after.value(
        "orchard_http_request_duration_seconds_count",
        &[("route", "/mdm/command")],
    );
    ensure!(
        command_route_count > 0.0
            && after.value(
                "orchard_http_request_duration_seconds_bucket",
                &[("route", "/mdm/command"), ("le", "+Inf")]
            ) == command_route_count,
        "the duration histogram's +Inf bucket is its count"
    );
    ensure!(
        after.value(
            "orchard_jobs_runs_total",
            &[("job", "push-dispatch"), ("outcome", "idle")]
        ) >= 1.0,
        "the push dispatcher's steps are counted:\n{}",
        after.text
    );
    ensure!(
        after.samples("orchard_job_last_run_failed").count() >= 1,
        "the cluster-leased jobs' rows:\n{}",
        after.text
    );
    let max = after.value("orchard_db_pool_connections", &[("state", "max")]);
    let open = after.value("orchard_db_pool_connections", &[("state", "in_use")])
        + after.value("orchard_db_pool_connections", &[("state", "idle")]);
    // The pool's default size: 4 on SQLite (one writer; each connection costs memory), 10 on PostgreSQL.
    let default_max = match backend {
        Backend::Sqlite => 4.0,
        Backend::Postgres => 10.0,
    };
    ensure!(
        max == default_max && (1.0..=max).contains(&open),
        "pool: {open} of {max}"
    );
    ensure!(
        after.value("orchard_dep_syncs_total", &[]) >= 2.0
            && after.value("orchard_dep_sync_errors_total", &[]) == 1.0
            && after.value("orchard_dep_sync_failing", &[("token", &dep_token)]) == 0.0,
        "DEP syncs:\n{}",
        after.text
    );
    ensure!(
        after.value("orchard_apps_syncs_total", &[]) >= 2.0
            && after.value("orchard_apps_sync_errors_total", &[]) == 1.0
            && after.value("orchard_apps_sync_failing", &[]) == 1.0,
        "Apps and Books syncs:\n{}",
        after.text
    );
    let apps_lag = after.value("orchard_apps_sync_lag_max_seconds", &[]);
    ensure!(
        (0.0..3600.0).contains(&apps_lag)
            && after.samples("orchard_apps_sync_lag_max_seconds").count() == 1,
        "the department's last successful sync:\n{}",
        after.text
    );
    ensure!(
        !after.has_family("orchard_apps_sync_lag_seconds"),
        "per-department series only for the metrics token's holder"
    );
    let lag = after.value("orchard_dep_sync_lag_seconds", &[("token", &dep_token)]);
    ensure!(
        (0.0..3600.0).contains(&lag)
            && after.value(
                "orchard_dep_last_sync_timestamp_seconds",
                &[("token", &dep_token)]
            ) > 1.7e9,
        "the DEP token's last sync:\n{}",
        after.text
    );
    ensure!(
        after.samples("orchard_credential_days_left").any(|s| s
            .labels
            .get("kind")
            .map(String::as_str)
            == Some("push_certificate")),
        "the push certificate's expiry:\n{}",
        after.text
    );

    // Attack: nothing on the open endpoint names a department or a device.
    ensure!(
        !after.text.contains(&tenant),
        "a tenant id on the open endpoint"
    );
    for device in &fleet {
        ensure!(
            !after.text.contains(&device.state.udid),
            "a UDID on the open endpoint"
        );
    }
    for id in &ids {
        ensure!(!after.text.contains(id.as_str()), "a device id as a label");
    }
    for s in after.samples("orchard_http_requests_total") {
        let route = s.labels.get("route").map(String::as_str).unwrap_or("");
        ensure!(
            route == "unmatched" || route.starts_with('/'),
            "route label {route:?}"
        );
    }

    json_log_lines(&log_path, &fleet[0].state.udid, &tenant)?;

    // With a metrics token: nobody else scrapes, and its holder sees the departments' syncs per tenant id.
    let metrics_token = "scraper-secret-for-the-test";
    let mut restart_args = args.clone();
    restart_args.extend(["--metrics-token".to_string(), metrics_token.to_string()]);
    server.restart(&restart_args).await?;
    let refused = server.http.get(server.url("/metrics")).send().await?;
    ensure!(
        refused.status() == 403,
        "scrape without the token → {}",
        refused.status()
    );
    let response = server
        .http
        .get(server.url("/metrics"))
        .bearer_auth(metrics_token)
        .send()
        .await?;
    ensure!(
        response.status() == 200,
        "scrape with the token → {}",
        response.status()
    );
    let trusted = Page::parse(&response.text().await?)?;
    let department_lag = trusted.value("orchard_apps_sync_lag_seconds", &[("tenant", &tenant)]);
    ensure!(
        trusted.samples("orchard_apps_sync_lag_seconds").count() == 1
            && (0.0..3600.0).contains(&department_lag),
        "the department's sync lag for the token holder:\n{}",
        trusted.text
    );
    for device in &fleet {
        ensure!(
            !trusted.text.contains(&device.state.udid),
            "a UDID even for the token holder"
        );
    }
    Ok(())
}

/// The log is JSON lines: every line parses; a request's line carries its request id and route; a check-in's
/// carries the device's UDID and department; a command report's the command's UUID; a background job step's
/// its job, node and outcome.
fn json_log_lines(path: &std::path::Path, udid: &str, tenant: &str) -> Result<()> {
    let log = std::fs::read_to_string(path)?;
    let mut lines = Vec::new();
    for line in log.lines().filter(|l| !l.trim().is_empty()) {
        let v: Value =
            serde_json::from_str(line).with_context(|| format!("not a JSON line: {line}"))?;
        lines.push(v);
    }
    let request_span = |v: &Value| -> Option<Value> {
        v["spans"]
            .as_array()?
            .iter()
            .find(|s| s["name"] == "request")
            .cloned()
    };
    let spans: Vec<Value> = lines.iter().filter_map(request_span).collect();
    ensure!(
        spans.iter().any(
            |s| s["request_id"].as_str().is_some_and(|id| id.len() == 36)
                && s["route"] == "/api/v1/devices/{id}/commands"
        ),
        "no request line with a request id and the route template"
    );
    ensure!(
        spans
            .iter()
            .any(|s| s["route"] == "/mdm/checkin" && s["udid"] == udid && s["tenant"] == tenant),
        "no check-in line with the device's UDID and department"
    );
    ensure!(
        spans.iter().any(|s| s["route"] == "/mdm/command"
            && s["udid"] == udid
            && s["command_uuid"].as_str().is_some_and(|u| !u.is_empty())
            && s["request_type"].is_string()),
        "no command report line with the command's UUID"
    );
    ensure!(
        spans
            .iter()
            .any(|s| s["route"] == "/api/v1/devices/{id}/commands" && s["tenant"].is_null()),
        "an operator's request names no department"
    );
    ensure!(
        lines.iter().any(|v| v["span"]["name"] == "job"
            && v["span"]["job"] == "push-dispatch"
            && v["span"]["node"]
                .as_str()
                .is_some_and(|n| n.starts_with("node-"))
            && v["span"]["outcome"] == "idle"),
        "no line of a background job step with its job, node and outcome"
    );
    Ok(())
}

orchard_testkit::backend_tests! {
    metrics_after_an_end_to_end_run => scenario;
}
