//! End to end through the real `orchard` binary, on SQLite and PostgreSQL: every mutating API request lands in
//! the audit log with actor, tenant, action, target, the request id the server answered with, and the outcome,
//! refused requests included; a tenant admin reads only its own tenant's events, viewers none; the CSV export
//! quotes properly. The usage report prices seeded history by hand-worked numbers, lists the day without a
//! snapshot, is scoped per tenant, and a second node's snapshot loop records today's enrolled devices.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use anyhow::{ensure, Context, Result};
use orchard_sim::SimDevice;
use orchard_testkit::server::TestServer;
use orchard_testkit::Backend;
use orchard_types::Role;
use serde_json::{json, Value};
use sqlx::{Connection, Executor};

struct Answer {
    status: u16,
    request_id: String,
    body: Value,
    content_type: String,
    text: String,
}

async fn call(
    server: &TestServer,
    token: Option<&str>,
    method: reqwest::Method,
    path: &str,
    body: Option<Value>,
) -> Result<Answer> {
    let mut req = server.http.request(method, server.url(path));
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    if let Some(b) = body {
        req = req.json(&b);
    }
    let resp = req.send().await?;
    let status = resp.status().as_u16();
    let header = |name: &str| {
        resp.headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_string()
    };
    let request_id = header("x-request-id");
    let content_type = header("content-type");
    let text = resp.text().await?;
    let body = serde_json::from_str(&text).unwrap_or(Value::Null);
    Ok(Answer {
        status,
        request_id,
        body,
        content_type,
        text,
    })
}

/// The audit event with this request id, as the operator sees it.
fn event_of<'a>(events: &'a [Value], request_id: &str) -> Result<&'a Value> {
    events
        .iter()
        .find(|e| e["request_id"] == request_id)
        .with_context(|| format!("no audit event for request {request_id}"))
}

async fn scenario(backend: Backend) -> Result<()> {
    let Some(server) = TestServer::start(backend).await? else {
        return Ok(());
    };
    let operator = server.token.clone();
    let post = reqwest::Method::POST;
    // The node's snapshot loop took today's snapshot (of no tenant yet) as it started; it is audited. Waiting
    // for it keeps that snapshot from racing with the tenants made below.
    wait_for_snapshots(&server, &operator, 1).await?;

    // Tenants (audited as tenant.create, filed under the new tenant).
    let created = call(
        &server,
        Some(&operator),
        post.clone(),
        "/api/v1/tenants",
        Some(json!({"name": "Physics", "code": "physics"})),
    )
    .await?;
    ensure!(created.status == 201, "create tenant: {}", created.text);
    ensure!(!created.request_id.is_empty(), "no request id header");
    let physics = created.body["id"].as_str().context("id")?.to_string();
    let chemistry = server.create_tenant("Chemistry", "chemistry").await?;

    let physics_admin =
        server.create_token(Role::Admin, Some(&physics), "Physics, \"lead\" admin")?;
    let physics_viewer = server.create_token(Role::Viewer, Some(&physics), "physics-viewer")?;
    let chemistry_admin = server.create_token(Role::Admin, Some(&chemistry), "chemistry-admin")?;

    // Two iPads in physics, one in chemistry.
    let config = server.sim_config();
    let physics_link = server.enrollment_link(&physics, None).await?;
    let chemistry_link = server.enrollment_link(&chemistry, None).await?;
    let mut fleet = Vec::new();
    for link in [&physics_link, &physics_link, &chemistry_link] {
        let mut d = SimDevice::new_random(&config);
        d.enroll(link).await.context("enrollment")?;
        fleet.push(d);
    }
    let physics_device = server.device_by_udid(&fleet[0].state.udid).await?["id"]
        .as_str()
        .context("id")?
        .to_string();
    let chemistry_device = server.device_by_udid(&fleet[2].state.udid).await?["id"]
        .as_str()
        .context("id")?
        .to_string();

    // Mutations by tenant people: allowed, refused, failed.
    let queued = call(
        &server,
        Some(&physics_admin),
        post.clone(),
        &format!("/api/v1/devices/{physics_device}/commands"),
        Some(json!({"type": "SecurityInfo"})),
    )
    .await?;
    ensure!(queued.status == 201, "queue: {}", queued.text);
    let foreign = call(
        &server,
        Some(&physics_admin),
        post.clone(),
        &format!("/api/v1/devices/{chemistry_device}/commands"),
        Some(json!({"type": "SecurityInfo"})),
    )
    .await?;
    ensure!(
        foreign.status == 404,
        "another tenant's device: {}",
        foreign.text
    );
    let by_viewer = call(
        &server,
        Some(&physics_viewer),
        post.clone(),
        &format!("/api/v1/devices/{physics_device}/commands"),
        Some(json!({"type": "SecurityInfo"})),
    )
    .await?;
    ensure!(by_viewer.status == 403, "viewer queue: {}", by_viewer.text);
    let anonymous = call(
        &server,
        None,
        post.clone(),
        "/api/v1/tenants",
        Some(json!({"name": "X", "code": "x"})),
    )
    .await?;
    ensure!(anonymous.status == 401, "no token: {}", anonymous.text);
    let not_operator = call(
        &server,
        Some(&physics_admin),
        post.clone(),
        "/api/v1/tenants",
        Some(json!({"name": "X", "code": "x"})),
    )
    .await?;
    ensure!(
        not_operator.status == 403,
        "admin creates tenant: {}",
        not_operator.text
    );
    let bad_json = call(
        &server,
        Some(&chemistry_admin),
        post.clone(),
        &format!("/api/v1/devices/{chemistry_device}/commands"),
        Some(json!({"type": "NoSuchCommand"})),
    )
    .await?;
    ensure!(bad_json.status == 400, "bad body: {}", bad_json.text);
    let chem_push = call(
        &server,
        Some(&chemistry_admin),
        post.clone(),
        &format!("/api/v1/devices/{chemistry_device}/push"),
        None,
    )
    .await?;
    ensure!(chem_push.status == 202, "push: {}", chem_push.text);
    // Reads are not audited.
    let read = call(
        &server,
        Some(&operator),
        reqwest::Method::GET,
        "/api/v1/devices",
        None,
    )
    .await?;
    ensure!(read.status == 200);

    // The operator sees every event.
    let all = call(
        &server,
        Some(&operator),
        reqwest::Method::GET,
        "/api/v1/audit?limit=1000",
        None,
    )
    .await?;
    ensure!(all.status == 200, "audit: {}", all.text);
    let events = all.body["items"].as_array().context("items")?.clone();
    ensure!(
        event_of(&events, &read.request_id).is_err(),
        "a GET was audited"
    );
    let e = event_of(&events, &created.request_id)?;
    ensure!(
        e["action"] == "tenant.create" && e["outcome"] == "ok" && e["status"] == 201,
        "{e}"
    );
    ensure!(
        e["tenant_id"] == physics.as_str() && e["target"] == physics.as_str(),
        "{e}"
    );
    ensure!(
        e["actor_role"] == "operator" && e["actor_name"] == "e2e-operator",
        "{e}"
    );
    ensure!(
        e["actor"].as_str().is_some_and(|a| a.starts_with("token:")),
        "{e}"
    );

    let e = event_of(&events, &queued.request_id)?;
    ensure!(
        e["action"] == "device.command.queue" && e["outcome"] == "ok",
        "{e}"
    );
    ensure!(
        e["tenant_id"] == physics.as_str() && e["target"] == physics_device.as_str(),
        "{e}"
    );
    ensure!(
        e["actor_name"] == "Physics, \"lead\" admin" && e["actor_role"] == "admin",
        "{e}"
    );
    ensure!(e["details"]["request_type"] == "SecurityInfo", "{e}");
    ensure!(
        e["details"]["command_uuid"] == queued.body["command_uuid"],
        "{e}"
    );

    // Refused: filed under the actor's own tenant, never the tenant whose id was guessed.
    let e = event_of(&events, &foreign.request_id)?;
    ensure!(e["outcome"] == "denied" && e["status"] == 404, "{e}");
    ensure!(
        e["tenant_id"] == physics.as_str() && e["target"] == chemistry_device.as_str(),
        "{e}"
    );
    let e = event_of(&events, &by_viewer.request_id)?;
    ensure!(
        e["outcome"] == "denied" && e["status"] == 403 && e["actor_role"] == "viewer",
        "{e}"
    );
    let e = event_of(&events, &anonymous.request_id)?;
    ensure!(e["outcome"] == "denied" && e["status"] == 401, "{e}");
    ensure!(
        e["actor"] == "anonymous" && e["tenant_id"].is_null() && e["action"] == "tenant.create",
        "{e}"
    );
    let e = event_of(&events, &not_operator.request_id)?;
    ensure!(e["outcome"] == "denied" && e["status"] == 403, "{e}");
    let e = event_of(&events, &bad_json.request_id)?;
    ensure!(
        e["outcome"] == "error" && e["status"] == 400 && e["tenant_id"] == chemistry.as_str(),
        "{e}"
    );
    let e = event_of(&events, &chem_push.request_id)?;
    ensure!(
        e["action"] == "device.push" && e["tenant_id"] == chemistry.as_str(),
        "{e}"
    );
    // Every event of an API request names the request; the snapshot loop's events have none.
    ensure!(
        events
            .iter()
            .filter(|e| e["action"] != "usage.snapshot")
            .all(|e| e["request_id"].as_str().is_some_and(|r| !r.is_empty())),
        "an event without request id"
    );

    // A tenant admin sees its tenant's events only; asking for another tenant's gets nothing.
    let own = call(
        &server,
        Some(&physics_admin),
        reqwest::Method::GET,
        "/api/v1/audit?limit=1000",
        None,
    )
    .await?;
    ensure!(own.status == 200, "{}", own.text);
    let own_events = own.body["items"].as_array().context("items")?;
    ensure!(!own_events.is_empty());
    ensure!(
        own_events
            .iter()
            .all(|e| e["tenant_id"] == physics.as_str()),
        "physics admin saw another tenant's events: {}",
        own.text
    );
    ensure!(event_of(own_events, &chem_push.request_id).is_err());
    let snoop = call(
        &server,
        Some(&physics_admin),
        reqwest::Method::GET,
        &format!("/api/v1/audit?tenant={chemistry}"),
        None,
    )
    .await?;
    ensure!(
        snoop.status == 200 && snoop.body["total"] == 0,
        "{}",
        snoop.text
    );
    let viewer_read = call(
        &server,
        Some(&physics_viewer),
        reqwest::Method::GET,
        "/api/v1/audit",
        None,
    )
    .await?;
    ensure!(
        viewer_read.status == 403,
        "viewer reads audit: {}",
        viewer_read.text
    );
    // Filters through the API.
    let filtered = call(
        &server,
        Some(&operator),
        reqwest::Method::GET,
        "/api/v1/audit?action=device.*&tenant=",
        None,
    )
    .await?;
    ensure!(filtered.status == 200, "{}", filtered.text);
    let actions: Vec<&str> = filtered.body["items"]
        .as_array()
        .context("items")?
        .iter()
        .filter_map(|e| e["action"].as_str())
        .collect();
    ensure!(
        actions.len() == 5 && actions.iter().all(|a| a.starts_with("device.")),
        "{actions:?}"
    );
    let bad_filter = call(
        &server,
        Some(&operator),
        reqwest::Method::GET,
        "/api/v1/audit?from=yesterday",
        None,
    )
    .await?;
    ensure!(bad_filter.status == 400, "{}", bad_filter.text);

    // Every mutating route of the API is audited, also when it refuses: a viewer (refused everywhere, so
    // nothing changes) and a caller without a token try each one.
    let nowhere = "01a00000-0000-7000-8000-000000000000";
    let routes: Vec<(reqwest::Method, String, Option<Value>, &str)> = vec![
        (
            post.clone(),
            "/api/v1/tenants".into(),
            Some(json!({"name": "V", "code": "v"})),
            "tenant.create",
        ),
        (
            post.clone(),
            format!("/api/v1/tenants/{physics}/enrollment-links"),
            Some(json!({"name": "v"})),
            "enrollment_link.create",
        ),
        (
            post.clone(),
            format!("/api/v1/devices/{physics_device}/commands"),
            Some(json!({"type": "SecurityInfo"})),
            "device.command.queue",
        ),
        (
            post.clone(),
            format!("/api/v1/devices/{physics_device}/push"),
            None,
            "device.push",
        ),
        (
            reqwest::Method::PUT,
            "/api/v1/push-certificate".into(),
            Some(json!({"certificate_pem": "x", "private_key_pem": "y"})),
            "push_certificate.upload",
        ),
        (
            post.clone(),
            "/api/v1/push-certificate/csr".into(),
            None,
            "push_certificate.csr.create",
        ),
        (
            post.clone(),
            "/api/v1/dep-tokens".into(),
            Some(json!({"name": "v"})),
            "dep_token.create",
        ),
        (
            reqwest::Method::PUT,
            format!("/api/v1/dep-tokens/{nowhere}/token"),
            Some(json!({"p7m_base64": "AAAA"})),
            "dep_token.upload",
        ),
        (
            post.clone(),
            format!("/api/v1/dep-tokens/{nowhere}/sync"),
            None,
            "dep_token.sync",
        ),
    ];
    let mut attempts = Vec::new();
    for (method, path, body, action) in &routes {
        for token in [Some(physics_viewer.as_str()), None] {
            let a = call(&server, token, method.clone(), path, body.clone()).await?;
            ensure!(
                a.status >= 400,
                "{method} {path} succeeded for a viewer: {}",
                a.text
            );
            attempts.push((a, *action, token.is_none(), path.clone()));
        }
    }
    let swept = call(
        &server,
        Some(&operator),
        reqwest::Method::GET,
        "/api/v1/audit?limit=1000",
        None,
    )
    .await?;
    let swept = swept.body["items"].as_array().context("items")?.clone();
    for (a, action, anonymous, path) in &attempts {
        let e = event_of(&swept, &a.request_id)?;
        let outcome = if matches!(a.status, 401 | 403 | 404) {
            "denied"
        } else {
            "error"
        };
        ensure!(
            e["action"] == *action && e["status"] == a.status && e["outcome"] == outcome,
            "{path}: {e}"
        );
        if *anonymous {
            ensure!(e["actor"] == "anonymous" && a.status == 401, "{path}: {e}");
        } else {
            ensure!(
                e["actor_role"] == "viewer" && e["tenant_id"] == physics.as_str(),
                "{path}: {e}"
            );
        }
    }

    // And every mutating operation of the OpenAPI document (so a new route cannot escape the audit log), with
    // made-up ids: refused for a viewer, and recorded with its request id, the viewer and a stable action.
    let doc: Value = serde_json::from_str(&std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/openapi.json"),
    )?)?;
    let mut documented = Vec::new();
    for (path, item) in doc["paths"].as_object().context("paths")? {
        for method in ["post", "put", "patch", "delete"] {
            if item.get(method).is_none() {
                continue;
            }
            let concrete: Vec<&str> = path
                .split('/')
                .map(|seg| if seg.starts_with('{') { nowhere } else { seg })
                .collect();
            let concrete = concrete.join("/");
            let m: reqwest::Method = method.to_uppercase().parse()?;
            let a = call(
                &server,
                Some(&physics_viewer),
                m,
                &concrete,
                Some(json!({})),
            )
            .await?;
            ensure!(
                a.status >= 400,
                "{method} {concrete} succeeded for a viewer: {}",
                a.text
            );
            documented.push((format!("{method} {path}"), a));
        }
    }
    ensure!(
        documented.len() >= 20,
        "only {} mutating operations documented",
        documented.len()
    );
    let swept = call(
        &server,
        Some(&operator),
        reqwest::Method::GET,
        "/api/v1/audit?limit=1000",
        None,
    )
    .await?;
    let swept = swept.body["items"].as_array().context("items")?.clone();
    for (what, a) in &documented {
        let e = event_of(&swept, &a.request_id)?;
        ensure!(
            e["action"].as_str().is_some_and(|x| !x.is_empty())
                && e["outcome"] != "ok"
                && e["status"] == a.status
                && e["actor_role"] == "viewer",
            "{what}: {e}"
        );
    }

    // CSV export: the token name with a comma and quotes is one quoted field.
    let csv = call(
        &server,
        Some(&operator),
        reqwest::Method::GET,
        &format!(
            "/api/v1/audit.csv?actor=token:{}",
            e_actor(&events, &queued.request_id)?
        ),
        None,
    )
    .await?;
    ensure!(
        csv.status == 200 && csv.content_type.starts_with("text/csv"),
        "{}",
        csv.text
    );
    let lines: Vec<&str> = csv.text.split("\r\n").filter(|l| !l.is_empty()).collect();
    ensure!(
        lines[0] == "id,at,actor,actor_name,actor_role,tenant_id,action,target,outcome,status,request_id,details",
        "{}",
        lines[0]
    );
    // The physics admin made three mutating requests, and its token's use is recorded once (per hour).
    ensure!(lines.len() == 5, "{}", csv.text);
    ensure!(
        lines[1..]
            .iter()
            .filter(|l| l.contains(",token.use,"))
            .count()
            == 1,
        "{}",
        csv.text
    );
    ensure!(
        lines[1..]
            .iter()
            .all(|l| l.contains(",\"Physics, \"\"lead\"\" admin\",admin,")),
        "{}",
        csv.text
    );
    let same = call(
        &server,
        Some(&operator),
        reqwest::Method::GET,
        &format!(
            "/api/v1/audit?format=csv&actor=token:{}",
            e_actor(&events, &queued.request_id)?
        ),
        None,
    )
    .await?;
    ensure!(same.text == csv.text, "?format=csv differs from audit.csv");

    // The database refuses to rewrite the log.
    let mut conn = server.connect_database().await?;
    ensure!(
        conn.execute("DELETE FROM audit_events").await.is_err(),
        "DELETE allowed"
    );
    ensure!(
        conn.execute("UPDATE audit_events SET outcome = 'ok'")
            .await
            .is_err(),
        "UPDATE allowed"
    );

    // When the event cannot be written (here a trigger makes the insert fail), the caller is not told the
    // mutation simply worked: it gets 500 audit_unavailable with its request id.
    let refuse_inserts = if server.database_url.is_some() {
        "CREATE FUNCTION test_refuse_audit() RETURNS trigger LANGUAGE plpgsql AS $$ \
         BEGIN RAISE EXCEPTION 'audit store unavailable'; END; $$; \
         CREATE TRIGGER test_refuse_audit BEFORE INSERT ON audit_events \
         FOR EACH ROW EXECUTE FUNCTION test_refuse_audit();"
    } else {
        "CREATE TRIGGER test_refuse_audit BEFORE INSERT ON audit_events \
         BEGIN SELECT RAISE(ABORT, 'audit store unavailable'); END;"
    };
    conn.execute(refuse_inserts).await?;
    let unrecorded = call(
        &server,
        Some(&operator),
        post.clone(),
        &format!("/api/v1/devices/{physics_device}/push"),
        None,
    )
    .await?;
    ensure!(unrecorded.status == 500, "{}", unrecorded.text);
    ensure!(
        unrecorded.body["error"]["code"] == "audit_unavailable",
        "{}",
        unrecorded.text
    );
    ensure!(
        !unrecorded.request_id.is_empty()
            && unrecorded.body["error"]["request_id"] == unrecorded.request_id.as_str(),
        "{}",
        unrecorded.text
    );
    let allow_inserts = if server.database_url.is_some() {
        "DROP TRIGGER test_refuse_audit ON audit_events"
    } else {
        "DROP TRIGGER test_refuse_audit"
    };
    conn.execute(allow_inserts).await?;
    let recorded = call(
        &server,
        Some(&operator),
        post.clone(),
        &format!("/api/v1/devices/{physics_device}/push"),
        None,
    )
    .await?;
    ensure!(
        recorded.status == 202,
        "after the store recovered: {}",
        recorded.text
    );

    // Usage: ten days of history, 2026-01-04 without a snapshot. Physics 5 devices on days 1-5 and 7 on days
    // 6-10, chemistry 1 every day: physics 5×4 + 7×5 = 55 device-days → 55 × 40000 öre / 365 = 6027.40 →
    // 60.27 SEK; chemistry 9 → 986.30 öre → 9.86 SEK; total 70.13 SEK.
    for day in 1..=10 {
        if day == 4 {
            continue;
        }
        let date = format!("2026-01-{day:02}");
        let physics_count = if day <= 5 { 5 } else { 7 };
        for (tenant, count) in [(&physics, physics_count), (&chemistry, 1)] {
            conn.execute(
                format!(
                    "INSERT INTO usage_snapshots (day, tenant_id, enrolled_devices, taken_at) \
                     VALUES ('{date}', '{tenant}', {count}, 0)"
                )
                .as_str(),
            )
            .await?;
        }
    }
    conn.close().await?;
    let report = call(
        &server,
        Some(&operator),
        reqwest::Method::GET,
        "/api/v1/usage?from=2026-01-01&to=2026-01-10",
        None,
    )
    .await?;
    ensure!(report.status == 200, "usage: {}", report.text);
    let r = &report.body;
    ensure!(
        r["currency"] == "SEK" && r["price_per_device_year"] == "400.00",
        "{r}"
    );
    ensure!(r["missing_days"] == json!(["2026-01-04"]), "{r}");
    ensure!(
        r["total_device_days"] == 64 && r["total_amount"] == "70.13",
        "{r}"
    );
    let lines: Vec<(String, i64, String)> = r["tenants"]
        .as_array()
        .context("tenants")?
        .iter()
        .map(|t| {
            (
                t["tenant_code"].as_str().unwrap_or("").to_string(),
                t["device_days"].as_i64().unwrap_or(-1),
                t["amount"].as_str().unwrap_or("").to_string(),
            )
        })
        .collect();
    ensure!(
        lines
            == vec![
                ("chemistry".to_string(), 9, "9.86".to_string()),
                ("physics".to_string(), 55, "60.27".to_string())
            ],
        "{lines:?}"
    );
    let own_usage = call(
        &server,
        Some(&physics_admin),
        reqwest::Method::GET,
        "/api/v1/usage?from=2026-01-01&to=2026-01-10&format=csv",
        None,
    )
    .await?;
    ensure!(
        own_usage.status == 200 && own_usage.content_type.starts_with("text/csv"),
        "{}",
        own_usage.text
    );
    ensure!(
        own_usage.text
            == format!(
                "tenant_id,tenant_code,tenant_name,from,to,device_days,price_per_device_year,currency,amount\r\n\
                 {physics},physics,Physics,2026-01-01,2026-01-10,55,400.00,SEK,60.27\r\n"
            ),
        "{}",
        own_usage.text
    );
    for (token, path, want) in [
        (
            &physics_viewer,
            "/api/v1/usage?from=2026-01-01&to=2026-01-10",
            403,
        ),
        (
            &operator,
            "/api/v1/usage?from=2026-01-10&to=2026-01-01",
            400,
        ),
        (
            &operator,
            "/api/v1/usage?from=2026-13-01&to=2026-01-01",
            400,
        ),
        (&operator, "/api/v1/usage?to=2026-01-01", 400),
    ] {
        let a = call(&server, Some(token), reqwest::Method::GET, path, None).await?;
        ensure!(a.status == want, "{path}: {} {}", a.status, a.text);
    }

    // A second node on the same database: its snapshot loop takes today's snapshot at its first tick, with
    // the devices enrolled now (the first node took today's before any tenant existed).
    second_node_snapshot(&server, &operator, &physics, &chemistry).await?;
    Ok(())
}

/// Waits until the audit log holds `count` usage snapshots (bounded by a deadline; it polls a condition, it
/// does not sleep for a guessed time).
async fn wait_for_snapshots(server: &TestServer, operator: &str, count: i64) -> Result<()> {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    loop {
        let a = call(
            server,
            Some(operator),
            reqwest::Method::GET,
            "/api/v1/audit?action=usage.snapshot",
            None,
        )
        .await?;
        ensure!(a.status == 200, "{}", a.text);
        // Counted from the items: the total is a separate query and may already include a newer event.
        let items = a.body["items"].as_array().map(Vec::len).unwrap_or(0);
        if i64::try_from(items)? >= count {
            ensure!(
                a.body["items"][0]["actor"] == "system:usage-snapshot",
                "{}",
                a.text
            );
            return Ok(());
        }
        ensure!(
            std::time::Instant::now() < deadline,
            "fewer than {count} usage snapshots audited: {}",
            a.text
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}

fn e_actor(events: &[Value], request_id: &str) -> Result<String> {
    let actor = event_of(events, request_id)?["actor"]
        .as_str()
        .context("actor")?;
    Ok(actor.trim_start_matches("token:").to_string())
}

async fn second_node_snapshot(
    server: &TestServer,
    operator: &str,
    physics: &str,
    chemistry: &str,
) -> Result<()> {
    // Killed when dropped, at the end of this function.
    let _second = server.start_node(&[]).await.context("second node")?;
    async {
        // The loop's first tick runs as the node starts and is audited: wait for the second such event.
        wait_for_snapshots(server, operator, 2).await?;
        let today = time_today();
        let a = call(
            server,
            Some(operator),
            reqwest::Method::GET,
            &format!("/api/v1/usage?from={today}&to={today}"),
            None,
        )
        .await?;
        ensure!(
            a.status == 200 && a.body["missing_days"] == json!([]),
            "{}",
            a.text
        );
        let days: Vec<(String, i64, i64)> = a.body["tenants"]
            .as_array()
            .context("tenants")?
            .iter()
            .map(|t| {
                (
                    t["tenant_id"].as_str().unwrap_or("").to_string(),
                    t["device_days"].as_i64().unwrap_or(-1),
                    t["days_counted"].as_i64().unwrap_or(-1),
                )
            })
            .collect();
        ensure!(
            days == vec![(chemistry.to_string(), 1, 1), (physics.to_string(), 2, 1)],
            "{days:?}"
        );
        Ok(())
    }
    .await
}

/// Today's UTC date as YYYY-MM-DD.
fn time_today() -> String {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0);
    orchard_types::UnixTime(secs).to_rfc3339()[..10].to_string()
}

orchard_testkit::backend_tests! {
    audit_and_usage => scenario [workers = 4];
}
