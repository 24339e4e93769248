//! Planned-maintenance notices over the real API: central IT publishes a window with a Swedish and an English
//! text, every department (admins and viewers alike) reads it until the window ends, only operators publish and
//! withdraw, bad input is refused naming the field, and each change is in the audit log.

use anyhow::{ensure, Context, Result};
use orchard_testkit::server::TestServer;
use orchard_testkit::Backend;
use orchard_types::{Role, UnixTime};
use reqwest::Method;
use serde_json::{json, Value};

fn rfc3339_in(seconds_from_now: i64) -> Result<String> {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)?
        .as_secs() as i64;
    Ok(UnixTime(now + seconds_from_now).to_rfc3339())
}

fn notice(starts_in: i64, ends_in: i64, text_en: &str) -> Result<Value> {
    Ok(json!({
        "starts_at": rfc3339_in(starts_in)?,
        "ends_at": rfc3339_in(ends_in)?,
        "text_sv": "Orchard uppgraderas.",
        "text_en": text_en,
    }))
}

async fn maintenance(backend: Backend) -> Result<()> {
    let Some(server) = TestServer::start(backend).await? else {
        return Ok(());
    };
    let physics = server.create_tenant("Physics", "phys").await?;
    let music = server.create_tenant("Music", "mus").await?;
    let operator = server.create_token(Role::Operator, None, "central-it")?;
    let admin = server.create_token(Role::Admin, Some(&physics), "physics-admin")?;
    let viewer = server.create_token(Role::Viewer, Some(&music), "music-viewer")?;

    // Only central IT publishes.
    for (token, who) in [(&admin, "a department admin"), (&viewer, "a viewer")] {
        let (status, body) = server
            .api(
                token,
                Method::POST,
                "/api/v1/maintenance",
                Some(notice(3_600, 7_200, "forged")?),
            )
            .await?;
        ensure!(status == 403, "{who} published: {status} {body}");
    }

    // Bad input: refused with the field named, nothing stored.
    let bad = [
        (
            json!({"starts_at": "tomorrow", "ends_at": rfc3339_in(7_200)?, "text_sv": "a", "text_en": "b"}),
            "starts_at",
        ),
        (
            notice(7_200, 3_600, "ends before it starts")?,
            "ends_at must be after starts_at",
        ),
        (
            notice(-7_200, -3_600, "over already")?,
            "ends_at is in the past",
        ),
        (notice(3_600, 40 * 86_400, "too long")?, "31 days"),
        (notice(3_600, 7_200, "  ")?, "text_en must not be empty"),
        (
            notice(3_600, 7_200, &"x".repeat(1001))?,
            "text_en must be at most 1000",
        ),
        (
            json!({"starts_at": rfc3339_in(3_600)?, "ends_at": rfc3339_in(7_200)?, "text_sv": "a", "text_en": "b", "colour": "red"}),
            "colour",
        ),
    ];
    for (body, named) in bad {
        let (status, answer) = server
            .api(&operator, Method::POST, "/api/v1/maintenance", Some(body))
            .await?;
        ensure!(
            (400..500).contains(&status) && answer.to_string().contains(named),
            "expected a refusal naming {named:?}: {status} {answer}"
        );
    }
    let (_, listed) = server
        .api(&viewer, Method::GET, "/api/v1/maintenance", None)
        .await?;
    ensure!(listed["items"] == json!([]), "nothing stored: {listed}");

    // Published: every department reads it, whatever its role.
    let (status, published) = server
        .api(
            &operator,
            Method::POST,
            "/api/v1/maintenance",
            Some(notice(3_600, 10_800, "Orchard is upgraded.")?),
        )
        .await?;
    ensure!(status == 201, "publish: {status} {published}");
    let id = published["id"].as_str().context("id")?.to_string();
    ensure!(published["in_progress"] == false, "{published}");
    let (status, now_running) = server
        .api(
            &operator,
            Method::POST,
            "/api/v1/maintenance",
            Some(notice(-600, 3_000, "Push is paused now.")?),
        )
        .await?;
    ensure!(
        status == 201 && now_running["in_progress"] == true,
        "{status} {now_running}"
    );
    for token in [&admin, &viewer, &operator] {
        let (status, listed) = server
            .api(token, Method::GET, "/api/v1/maintenance", None)
            .await?;
        ensure!(status == 200, "list: {status} {listed}");
        let texts: Vec<&str> = listed["items"]
            .as_array()
            .context("items")?
            .iter()
            .filter_map(|n| n["text_en"].as_str())
            .collect();
        ensure!(
            texts == ["Push is paused now.", "Orchard is upgraded."],
            "soonest first, for everyone: {listed}"
        );
    }

    // Withdrawn: gone for everyone; withdrawing again, a department's attempt and a malformed id are 404/403.
    let path = format!("/api/v1/maintenance/{id}");
    let (status, _) = server.api(&admin, Method::DELETE, &path, None).await?;
    ensure!(status == 403, "a department admin withdrew: {status}");
    let (status, _) = server.api(&operator, Method::DELETE, &path, None).await?;
    ensure!(status == 204, "withdraw: {status}");
    let (status, _) = server.api(&operator, Method::DELETE, &path, None).await?;
    ensure!(status == 404, "withdrawn twice: {status}");
    let (status, _) = server
        .api(
            &operator,
            Method::DELETE,
            "/api/v1/maintenance/not-a-uuid",
            None,
        )
        .await?;
    ensure!(status == 404, "malformed id: {status}");
    let (_, listed) = server
        .api(&viewer, Method::GET, "/api/v1/maintenance", None)
        .await?;
    ensure!(
        listed["items"].as_array().map(Vec::len) == Some(1),
        "only the running one is left: {listed}"
    );

    // Audited, refusals included.
    let (_, audit) = server
        .api(&operator, Method::GET, "/api/v1/audit?limit=1000", None)
        .await?;
    let events = audit["items"].as_array().context("audit items")?;
    let count = |action: &str, outcome: &str| {
        events
            .iter()
            .filter(|e| e["action"] == action && e["outcome"] == outcome)
            .count()
    };
    ensure!(count("maintenance_notice.publish", "ok") == 2, "{audit}");
    ensure!(
        count("maintenance_notice.publish", "denied") >= 2,
        "{audit}"
    );
    ensure!(count("maintenance_notice.withdraw", "ok") == 1, "{audit}");
    let published_event = events
        .iter()
        .find(|e| e["action"] == "maintenance_notice.publish" && e["target"] == id.as_str());
    ensure!(
        published_event.is_some(),
        "the event names the notice: {audit}"
    );
    Ok(())
}

orchard_testkit::backend_tests! {
    maintenance_notices => maintenance;
}
