//! The credential register and its expiry warnings (issue 15, point 4), on SQLite and PostgreSQL.
//!
//! - Warnings: Orchard in-process on a hand-moved clock, a department's Apps and Books token from the local Apps
//!   and Books server, and Debian's aiosmtpd as the SMTP server (its Maildir handler keeps every message). Stepping
//!   the clock across 60, 30, 7 and 1 days and past the expiry, the department's contact and central IT each get
//!   exactly one e-mail per threshold; checking again sends nothing new; while the SMTP server is down the warnings
//!   wait and are sent once when it is back (also when the node that claimed them died); two nodes checking at
//!   once send each warning once; a renewed token is warned about afresh, and a warning still waiting when a
//!   tighter one falls due is superseded. Each threshold is also one `expiry.warning` webhook event, published
//!   once (with or without the mail server), received by the department's endpoint and the global one and never
//!   by another department's.
//! - The register through the real binary: operators see every credential, a department's admin only its own,
//!   viewers are refused; `orchard credentials` prints it; `/metrics` has the `orchard_credential_*` families.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{ensure, Context, Result};
use orchard_core::access::bootstrap::LocalBootstrap;
use orchard_core::apps::AppsSettings;
use orchard_core::credentials::mail::{Mailer, SmtpSecurity, SmtpSettings};
use orchard_core::credentials::warnings::{CLAIM_SECONDS, WEBHOOK_RECIPIENT};
use orchard_core::credentials::CredentialSettings;
use orchard_core::push::PushSettings;
use orchard_core::reporting::audit::AuditQuery;
use orchard_core::tenancy::tenants::TenantEdit;
use orchard_core::webhooks::{NewWebhook, WebhookSettings, EVENT_EXPIRY_WARNING};
use orchard_core::Orchard;
use orchard_store::Page;
use orchard_testkit::server::TestServer;
use orchard_testkit::service::test_node;
use orchard_testkit::webhooks::WebhookReceiver;
use orchard_testkit::{Backend, TestDatabase};
use orchard_types::{Clock, ManualClock, Role, SystemClock, UnixTime};
use orchard_vpp::fake::{FakeVppConfig, FakeVppServer};

const DAY: i64 = 86_400;
const CENTRAL: &str = "central-it@example.edu";
const PHYSICS_CONTACT: &str = "physics-it@example.edu";

/// Debian's aiosmtpd on 127.0.0.1, keeping every message in a Maildir. Stopping it is the SMTP outage.
struct SmtpSink {
    port: u16,
    maildir: PathBuf,
    /// `--tlscert`/`--tlskey` (STARTTLS required) or `--smtpscert`/`--smtpskey` (implicit TLS).
    tls_args: Vec<String>,
    child: Option<Child>,
    _dir: tempfile::TempDir,
}

impl SmtpSink {
    fn start() -> Result<SmtpSink> {
        Self::start_with(|_| Ok(Vec::new()))
    }

    /// A sink whose TLS arguments `tls` makes, given the sink's own temporary directory for the key files.
    fn start_with(tls: impl FnOnce(&std::path::Path) -> Result<Vec<String>>) -> Result<SmtpSink> {
        let port = std::net::TcpListener::bind("127.0.0.1:0")?
            .local_addr()?
            .port();
        let dir = tempfile::tempdir()?;
        let tls_args = tls(dir.path())?;
        let mut sink = SmtpSink {
            port,
            maildir: dir.path().join("maildir"),
            tls_args,
            child: None,
            _dir: dir,
        };
        sink.resume()?;
        Ok(sink)
    }

    /// Starts (again) on the same port and Maildir.
    fn resume(&mut self) -> Result<()> {
        // /usr/bin/aiosmtpd runs Debian's python3 (pyenv's python3 on PATH has no aiosmtpd). With AUTH: our
        // script on the same aiosmtpd (its command line cannot ask for AUTH).
        let mut command = match self.tls_args.first().map(String::as_str) {
            Some("auth") => {
                let mut c = Command::new("/usr/bin/python3");
                c.arg(concat!(
                    env!("CARGO_MANIFEST_DIR"),
                    "/tests/smtp/auth_sink.py"
                ))
                .arg(self.port.to_string())
                .arg(&self.maildir)
                .args(&self.tls_args[1..]);
                c
            }
            _ => {
                let mut c = Command::new("/usr/bin/aiosmtpd");
                c.args(["-n", "-l", &format!("127.0.0.1:{}", self.port)])
                    .args(&self.tls_args)
                    .args(["-c", "aiosmtpd.handlers.Mailbox"])
                    .arg(&self.maildir);
                c
            }
        };
        let child = command
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .context("starting /usr/bin/aiosmtpd (Debian package python3-aiosmtpd; scripts/test.sh installs it)")?;
        self.child = Some(child);
        // Bounded wait until it accepts connections.
        for _ in 0..200 {
            if std::net::TcpStream::connect(("127.0.0.1", self.port)).is_ok() {
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        anyhow::bail!("aiosmtpd did not listen on port {}", self.port)
    }

    fn stop(&mut self) -> Result<()> {
        if let Some(mut child) = self.child.take() {
            child.kill()?;
            child.wait()?;
        }
        Ok(())
    }

    /// Every message received: (recipient, subject), sorted.
    fn messages(&self) -> Result<Vec<(String, String)>> {
        let mut out = Vec::new();
        let new = self.maildir.join("new");
        if !new.exists() {
            return Ok(out);
        }
        for entry in std::fs::read_dir(&new)? {
            let text = std::fs::read_to_string(entry?.path())?;
            out.push((header(&text, "To")?, header(&text, "Subject")?));
        }
        out.sort();
        Ok(out)
    }
}

impl Drop for SmtpSink {
    fn drop(&mut self) {
        let _ = self.stop();
    }
}

/// An unfolded header's value.
fn header(message: &str, name: &str) -> Result<String> {
    let head = message.split("\n\n").next().unwrap_or("").replace('\r', "");
    let unfolded = head.replace("\n ", " ").replace("\n\t", " ");
    unfolded
        .lines()
        .find_map(|l| {
            l.split_once(':')
                .filter(|(n, _)| n.eq_ignore_ascii_case(name))
                .map(|(_, v)| v.trim().to_owned())
        })
        .with_context(|| format!("no {name} header in {message}"))
}

fn mailer(port: u16) -> Result<Mailer> {
    Ok(Mailer::new(&SmtpSettings {
        host: "127.0.0.1".into(),
        port,
        security: SmtpSecurity::DangerPlaintext,
        username: None,
        password: None,
        from: "Orchard <orchard@example.edu>".into(),
        roots_pem: None,
        timeout: Duration::from_secs(5),
    })?)
}

/// How many messages each (recipient, threshold marker in the subject) got.
fn tally(messages: &[(String, String)]) -> BTreeMap<(String, String), usize> {
    let mut counts = BTreeMap::new();
    for (to, subject) in messages {
        // "… (60-day warning)", or "EXPIRED: …".
        let marker = if subject.contains("EXPIRED") {
            "expired".to_string()
        } else {
            subject
                .rsplit_once('(')
                .and_then(|(_, rest)| rest.split_once("-day warning)"))
                .map_or("?".to_string(), |(days, _)| format!("{days} days"))
        };
        *counts.entry((to.clone(), marker)).or_insert(0) += 1;
    }
    counts
}

async fn warnings(backend: Backend) -> Result<()> {
    orchard_sim::install_crypto_provider();
    let Some(database) = TestDatabase::create(backend).await? else {
        return Ok(());
    };
    let mut smtp = SmtpSink::start()?;
    let (store, scopes) = database.store().await?;
    let clock = ManualClock::new(SystemClock.now());
    let start = clock.now();
    let clock_dyn: Arc<dyn Clock> = Arc::new(clock.clone());
    let vpp = FakeVppServer::start(FakeVppConfig {
        clock: clock_dyn.clone(),
        pending_polls: 0,
        ..FakeVppConfig::default()
    })
    .await?;
    let pki = Arc::new(orchard_testkit::service::test_pki(start));
    let mut settings = CredentialSettings::default();
    settings.central_it_email = Some(CENTRAL.into());
    settings.mail = Some(mailer(smtp.port)?);
    let node = || {
        Arc::new(
            test_node(
                store.clone(),
                scopes.clone(),
                pki.clone(),
                clock_dyn.clone(),
                PushSettings::default(),
            )
            .with_apps_settings(AppsSettings {
                config: vpp.client_config(),
                sync_interval_seconds: 0,
            })
            .with_credential_settings(settings.clone())
            .with_webhook_settings(WebhookSettings {
                danger_allow_http_localhost: true,
                ..WebhookSettings::default()
            }),
        )
    };
    let orchard: Arc<Orchard> = node();
    let second: Arc<Orchard> = node();
    let system = orchard.system();
    let bootstrap =
        LocalBootstrap::for_opened_database(store.clone(), scopes.clone(), clock_dyn.clone());
    let operator = bootstrap.operator().map_err(|e| anyhow::anyhow!("{e}"))?;
    let physics = orchard
        .create_tenant(&operator, "Physics", "physics")
        .await?;
    orchard
        .edit_tenant(
            operator.principal(),
            physics.id,
            TenantEdit {
                contact_email: Some(PHYSICS_CONTACT.into()),
                ..TenantEdit::default()
            },
        )
        .await?;
    // Music has neither a token nor a contact: nothing of it is mailed.
    let music = orchard.create_tenant(&operator, "Music", "music").await?;
    // Webhook endpoints for expiry warnings: central IT's (global), Physics' and Music's.
    let (global_hook, physics_hook, music_hook) = (
        WebhookReceiver::start().await?,
        WebhookReceiver::start().await?,
        WebhookReceiver::start().await?,
    );
    let wanted = |url: &str| NewWebhook {
        url: url.to_owned(),
        event_types: vec![EVENT_EXPIRY_WARNING.to_owned()],
        enabled: None,
    };
    orchard
        .create_global_webhook(&operator, &wanted(&global_hook.url))
        .await?;
    for (tenant, hook) in [(physics.id, &physics_hook), (music.id, &music_hook)] {
        let admin = bootstrap.act_as("dept-it", "Dept IT", Role::Admin, Some(tenant))?;
        orchard
            .create_tenant_webhook(&admin, tenant, &wanted(&hook.url))
            .await?;
    }
    let token = vpp.add_location("Physics iPads");
    let status = orchard
        .upload_apps_token(operator.principal(), physics.id, &token)
        .await?;
    let expiry = UnixTime::parse_rfc3339(&status.expires_at).context("token expiry")?;

    let check = |o: &Arc<Orchard>, owner: &'static str| {
        let o = o.clone();
        let system = o.system();
        async move { o.check_credential_expiry_once(&system, owner).await }
    };

    // A year ahead: nothing to say.
    let round = check(&orchard, "node-a").await?;
    ensure!(round.recorded == 0 && round.sent == 0, "{round:?}");

    // Each threshold: one e-mail to the department's contact and one to central IT, and nothing on a re-run.
    let mut expected = 0;
    for (days_before, marker) in [(59, "60 days"), (29, "30 days")] {
        clock.set(expiry.plus_seconds(-days_before * DAY - 3600));
        let round = check(&orchard, "node-a").await?;
        ensure!(
            round.sent == 2 && round.failed == 0 && round.published == 1,
            "{marker}: {round:?}"
        );
        let again = check(&orchard, "node-a").await?;
        ensure!(
            again.recorded == 0 && again.sent == 0 && again.published == 0,
            "{marker} again: {again:?}"
        );
        expected += 2;
        let messages = smtp.messages()?;
        ensure!(messages.len() == expected, "{messages:?}");
        let counts = tally(&messages);
        for to in [PHYSICS_CONTACT, CENTRAL] {
            ensure!(
                counts.get(&(to.to_string(), marker.to_string())) == Some(&1),
                "{to} {marker}: {counts:?}"
            );
        }
    }
    let register = orchard.credential_register_for_system(&system).await?;
    let apps = register
        .credentials
        .iter()
        .find(|c| c.id == format!("apps-token:{}", physics.id))
        .context("physics' token in the register")?;
    ensure!(apps.warning_threshold_days == Some(30), "{apps:?}");
    ensure!(
        apps.owner.contact_email.as_deref() == Some(PHYSICS_CONTACT),
        "{apps:?}"
    );

    // The SMTP server is down when the 7-day warning falls due: nothing is lost, nothing is sent twice.
    smtp.stop()?;
    clock.set(expiry.plus_seconds(-6 * DAY - 3600));
    let round = check(&orchard, "node-a").await?;
    ensure!(
        round.recorded == 2 && round.sent == 0 && round.failed == 2 && round.published == 1,
        "outage (the webhook event still goes out): {round:?}"
    );
    // Backing off: the next check at once claims nothing.
    let round = check(&orchard, "node-a").await?;
    ensure!(round.claimed == 0 && round.sent == 0, "backoff: {round:?}");
    smtp.resume()?;
    // A node that claimed them and died before sending (its claim runs for CLAIM_SECONDS): while the claim
    // lasts nobody else sends them; once it runs out, another node does.
    let now = clock.now();
    let mut conn = database.connect().await?;
    let dead = sqlx::query(
        "UPDATE credential_warnings SET claimed_by = 'dead-node', claimed_until = $1, next_attempt_at = $2 \
         WHERE state = 'pending'",
    )
    .bind(now.plus_seconds(CLAIM_SECONDS).0)
    .bind(now.0)
    .execute(&mut conn)
    .await?;
    ensure!(dead.rows_affected() == 2, "{dead:?}");
    drop(conn);
    let round = check(&orchard, "node-a").await?;
    ensure!(
        round.claimed == 0 && round.sent == 0,
        "claimed by a dead node: {round:?}"
    );
    clock.advance(CLAIM_SECONDS + 1);
    // Another node picks them up.
    let round = check(&second, "node-b").await?;
    ensure!(
        round.sent == 2 && round.recorded == 0,
        "recovery: {round:?}"
    );
    let round = check(&orchard, "node-a").await?;
    ensure!(
        round.sent == 0 && round.claimed == 0,
        "after recovery: {round:?}"
    );
    expected += 2;
    ensure!(smtp.messages()?.len() == expected, "{:?}", smtp.messages()?);

    // One day left, then expired: two nodes checking at the same moment send each warning once.
    for (at, marker) in [
        (expiry.plus_seconds(-12 * 3600), "1 days"),
        (expiry.plus_seconds(3600), "expired"),
    ] {
        clock.set(at);
        let (a, b) = tokio::join!(check(&orchard, "node-a"), check(&second, "node-b"));
        let (a, b) = (a?, b?);
        ensure!(a.sent + b.sent == 2, "{marker}: {a:?} {b:?}");
        ensure!(a.published + b.published == 1, "{marker}: {a:?} {b:?}");
        expected += 2;
        let counts = tally(&smtp.messages()?);
        for to in [PHYSICS_CONTACT, CENTRAL] {
            ensure!(
                counts.get(&(to.to_string(), marker.to_string())) == Some(&1),
                "{to} {marker}: {counts:?}"
            );
        }
    }
    let messages = smtp.messages()?;
    ensure!(messages.len() == expected, "{messages:?}");

    // Renewed: the new token's expiry is warned about afresh. Its 60-day warning cannot be sent (SMTP down) and
    // is still waiting when the 30-day one falls due: the owner gets the current warning only.
    let renewed = vpp.renew_token(&token).context("renewing the token")?;
    let status = orchard
        .upload_apps_token(operator.principal(), physics.id, &renewed)
        .await?;
    let renewed_expiry = UnixTime::parse_rfc3339(&status.expires_at).context("renewed expiry")?;
    ensure!(renewed_expiry > expiry, "{status:?}");
    smtp.stop()?;
    clock.set(renewed_expiry.plus_seconds(-59 * DAY - 3600));
    let round = check(&orchard, "node-a").await?;
    ensure!(
        round.recorded == 2 && round.failed == 2,
        "renewed, 60 days: {round:?}"
    );
    smtp.resume()?;
    clock.set(renewed_expiry.plus_seconds(-29 * DAY - 3600));
    let round = check(&orchard, "node-a").await?;
    ensure!(
        round.recorded == 2 && round.sent == 2 && round.failed == 0,
        "renewed, 30 days: {round:?}"
    );
    expected += 2;
    let messages = smtp.messages()?;
    ensure!(messages.len() == expected, "{messages:?}");
    let counts = tally(&messages);
    for to in [PHYSICS_CONTACT, CENTRAL] {
        for (marker, times) in [("60 days", 1), ("30 days", 2), ("expired", 1)] {
            ensure!(
                counts.get(&(to.to_string(), marker.to_string())) == Some(&times),
                "{to} {marker}: {counts:?}"
            );
        }
    }
    ensure!(
        messages
            .iter()
            .all(|(to, _)| to == PHYSICS_CONTACT || to == CENTRAL),
        "{messages:?}"
    );
    let (hooks, ledger): (Vec<_>, Vec<_>) = orchard
        .credential_warnings(&system)
        .await?
        .into_iter()
        .partition(|w| w.recipient == WEBHOOK_RECIPIENT);
    ensure!(ledger.len() == expected + 2, "{ledger:?}");
    let superseded: Vec<_> = ledger.iter().filter(|w| w.state == "superseded").collect();
    ensure!(
        superseded.len() == 2
            && superseded
                .iter()
                .all(|w| w.threshold_days == 60 && w.expires_at == renewed_expiry),
        "{superseded:?}"
    );
    ensure!(
        ledger.iter().filter(|w| w.state == "sent").count() == expected,
        "every other warning sent: {ledger:?}"
    );
    // Every sent warning is in the audit log, under the owning department.
    let overseer = operator.principal().oversight()?;
    let (audited, total) = orchard
        .list_audit(
            &overseer,
            &AuditQuery {
                action: Some("credential.warning_sent".into()),
                ..AuditQuery::default()
            },
            Page {
                limit: 100,
                offset: 0,
            },
        )
        .await?;
    ensure!(total == i64::try_from(expected)?, "{audited:?}");
    ensure!(
        audited
            .iter()
            .all(|e| e.tenant_id == Some(physics.id) && e.actor == "system:credential-expiry"),
        "{audited:?}"
    );
    let thresholds: std::collections::BTreeSet<i64> = ledger
        .iter()
        .filter(|w| w.expires_at == expiry)
        .map(|w| w.threshold_days)
        .collect();
    ensure!(
        thresholds == [0, 1, 7, 30, 60].into_iter().collect(),
        "{thresholds:?}"
    );

    // The webhook events: one per threshold of each expiry (the original token's five, the renewed one's 60 and
    // 30 days, even the 60-day one whose e-mail was superseded), all sent at once in the ledger.
    let published: Vec<(i64, i64)> = hooks
        .iter()
        .map(|w| (w.expires_at.0, w.threshold_days))
        .collect();
    let mut wanted_events: Vec<(i64, i64)> = [60, 30, 7, 1, 0]
        .into_iter()
        .map(|d| (expiry.0, d))
        .chain([(renewed_expiry.0, 60), (renewed_expiry.0, 30)])
        .collect();
    let mut sorted = published.clone();
    sorted.sort_unstable();
    wanted_events.sort_unstable();
    ensure!(sorted == wanted_events, "{hooks:?}");
    ensure!(
        hooks
            .iter()
            .all(|w| w.state == "sent" && w.tenant_id == Some(physics.id)),
        "{hooks:?}"
    );
    // Delivered: Physics' endpoint and the global one get the seven events, Music's none.
    let stats = orchard.deliver_webhooks_once(&system, "node-a").await?;
    ensure!(stats.claimed == 14, "{stats:?}");
    for (name, hook) in [("global", &global_hook), ("physics", &physics_hook)] {
        let received = hook.received();
        ensure!(received.len() == 7, "{name}: {} events", received.len());
        let mut thresholds = Vec::new();
        for request in &received {
            let body: serde_json::Value = serde_json::from_str(&request.body_text())?;
            ensure!(
                body["type"] == EVENT_EXPIRY_WARNING
                    && body["tenant"] == physics.id.to_string()
                    && body["data"]["credential"] == "apps_token"
                    && body["data"]["id"] == format!("apps-token:{}", physics.id),
                "{name}: {body}"
            );
            thresholds.push(
                body["data"]["threshold_days"]
                    .as_i64()
                    .context("threshold")?,
            );
        }
        thresholds.sort_unstable();
        ensure!(
            thresholds == [0, 1, 7, 30, 30, 60, 60],
            "{name}: {thresholds:?}"
        );
    }
    ensure!(
        music_hook.received().is_empty(),
        "music got another department's warning"
    );
    Ok(())
}

fn field<'a>(v: &'a serde_json::Value, key: &str) -> &'a str {
    v[key].as_str().unwrap_or_default()
}

/// The register through the real binary: who sees what, the CLI and the metrics.
async fn register_api(backend: Backend) -> Result<()> {
    let Some(server) = TestServer::start(backend).await? else {
        return Ok(());
    };
    let physics = server.create_tenant("Physics", "physics").await?;
    let music = server.create_tenant("Music", "music").await?;
    let (status, edited) = server
        .api(
            &server.token,
            reqwest::Method::PATCH,
            &format!("/api/v1/tenants/{physics}"),
            Some(serde_json::json!({"contact_email": PHYSICS_CONTACT})),
        )
        .await?;
    ensure!(status == 200, "{edited}");
    server
        .enroll_devices(&server.sim_config(), &physics, 1)
        .await?;

    let all = server.get("/api/v1/credentials").await?;
    let ids: Vec<&str> = all["credentials"]
        .as_array()
        .context("credentials")?
        .iter()
        .map(|c| field(c, "id"))
        .collect();
    for id in [
        "push-certificate".to_string(),
        "device-ca".to_string(),
        "server-ca".to_string(),
        "profile-signer".to_string(),
        "tls-certificate".to_string(),
        format!("apps-token:{physics}"),
        format!("apps-token:{music}"),
        format!("device-identities:{physics}"),
    ] {
        ensure!(ids.contains(&id.as_str()), "{id} in {ids:?}");
    }
    let push = all["credentials"]
        .as_array()
        .and_then(|a| a.iter().find(|c| c["id"] == "push-certificate"))
        .context("push")?;
    ensure!(push["state"] == "missing", "{push}");
    ensure!(push["owner"]["kind"] == "central_it", "{push}");
    ensure!(push["renew"]["cli"].is_string(), "{push}");
    let identities = all["credentials"]
        .as_array()
        .and_then(|a| {
            a.iter()
                .find(|c| c["id"] == format!("device-identities:{physics}").as_str())
        })
        .context("identities")?;
    ensure!(identities["identities"]["devices"] == 1, "{identities}");
    ensure!(
        identities["owner"]["contact_email"] == PHYSICS_CONTACT,
        "{identities}"
    );

    // A department's admin: its own token and identities only, never central IT's or another department's.
    let admin = server.create_token(Role::Admin, Some(&physics), "physics-admin")?;
    let music_admin = server.create_token(Role::Admin, Some(&music), "music-admin")?;
    let viewer = server.create_token(Role::Viewer, Some(&physics), "physics-viewer")?;
    let get = |token: String| {
        let server = &server;
        async move {
            server
                .api(&token, reqwest::Method::GET, "/api/v1/credentials", None)
                .await
        }
    };
    let (status, own) = get(admin.clone()).await?;
    ensure!(status == 200, "{own}");
    let own_ids: Vec<&str> = own["credentials"]
        .as_array()
        .context("credentials")?
        .iter()
        .map(|c| field(c, "id"))
        .collect();
    ensure!(
        own_ids
            == [
                format!("device-identities:{physics}"),
                format!("apps-token:{physics}")
            ],
        "{own_ids:?}"
    );
    let (status, theirs) = get(music_admin).await?;
    ensure!(status == 200, "{theirs}");
    ensure!(!theirs.to_string().contains(&physics), "{theirs}");
    let (status, refused) = get(viewer).await?;
    ensure!(status == 403, "{status} {refused}");

    // The CLI: a table, and the API's JSON with --json.
    let table = server
        .client_command(&["credentials"])?
        .env("ORCHARD_TOKEN", &admin)
        .output()?;
    ensure!(table.status.success(), "{table:?}");
    let text = String::from_utf8(table.stdout)?;
    ensure!(text.starts_with("CREDENTIAL"), "{text}");
    ensure!(text.contains(&format!("apps-token:{physics}")), "{text}");
    ensure!(text.contains(PHYSICS_CONTACT), "{text}");
    ensure!(!text.contains("push-certificate"), "{text}");
    let json = server
        .client_command(&["credentials", "--json"])?
        .output()?;
    ensure!(json.status.success(), "{json:?}");
    let parsed: serde_json::Value = serde_json::from_slice(&json.stdout)?;
    ensure!(
        parsed["credentials"]
            .as_array()
            .is_some_and(|a| a.len() >= 8),
        "{parsed}"
    );

    // The metrics family. Open `/metrics`: central IT's credentials one by one, the departments' in aggregate
    // (no tenant id, no name).
    let scrape = |token: Option<&'static str>| {
        let server = &server;
        async move {
            let mut req = server.http.get(server.url("/metrics"));
            if let Some(t) = token {
                req = req.bearer_auth(t);
            }
            anyhow::Ok(req.send().await?.text().await?)
        }
    };
    let open = scrape(None).await?;
    for needle in [
        "# TYPE orchard_credential_days_left gauge",
        "orchard_credential_days_left{kind=\"device_ca\",owner=\"central_it\",credential=\"device-ca\"}",
        "orchard_credential_days_left{kind=\"tls_certificate\",owner=\"central_it\"",
        "orchard_credential_days_left{kind=\"device_identities\",owner=\"departments\",credential=\"soonest\"}",
        "orchard_credentials{kind=\"apps_token\",state=\"missing\"} 2",
        "orchard_credentials{kind=\"push_certificate\",state=\"missing\"} 1",
        "orchard_credential_identities_expiring{kind=\"device_identities\",owner=\"departments\",credential=\"all\",within_days=\"60\"} 0",
    ] {
        ensure!(open.contains(needle), "{needle} in {open}");
    }
    ensure!(
        !open.contains(&physics) && !open.contains(&music) && !open.contains("Physics"),
        "no department in open metrics: {open}"
    );
    // With a metrics token, the scraper is trusted with the departments' series (by tenant id, never a name).
    let mut server = server;
    server
        .restart(&["--metrics-token".to_string(), "scrape-secret".to_string()])
        .await?;
    let scrape = |token: Option<&'static str>| {
        let server = &server;
        async move {
            let mut req = server.http.get(server.url("/metrics"));
            if let Some(t) = token {
                req = req.bearer_auth(t);
            }
            anyhow::Ok(req.send().await?.text().await?)
        }
    };
    let trusted = scrape(Some("scrape-secret")).await?;
    for needle in [
        format!("orchard_credential_days_left{{kind=\"device_identities\",owner=\"{physics}\",credential=\"device-identities:{physics}\"}}"),
        format!("orchard_credential_identities_expiring{{kind=\"device_identities\",owner=\"{physics}\""),
        "orchard_credentials{kind=\"apps_token\",state=\"missing\"} 2".to_string(),
    ] {
        ensure!(trusted.contains(&needle), "{needle} in {trusted}");
    }
    ensure!(!trusted.contains("Physics"), "no names in metrics");
    Ok(())
}

/// STARTTLS, implicit TLS and AUTH against aiosmtpd with a certificate for 127.0.0.1 from a test CA: delivered when the
/// CA is the configured root, refused when the server's certificate does not chain to a trusted root.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn smtp_over_starttls_implicit_tls_and_auth() -> Result<()> {
    orchard_sim::install_crypto_provider();
    let now = SystemClock.now();
    let localhost = [std::net::IpAddr::from([127, 0, 0, 1])];
    let ca = orchard_pki::CertificateAuthority::generate_server_ca(
        "SMTP Test CA",
        &[],
        &localhost,
        now,
        30,
    )?;
    let leaf = ca.issue_tls_server(&[], &localhost, now, 30)?;
    let write_keys =
        |dir: &std::path::Path, cert_flag: &str, key_flag: &str| -> Result<Vec<String>> {
            let (cert, key) = (dir.join("smtp.crt"), dir.join("smtp.key"));
            std::fs::write(&cert, leaf.cert_pem())?;
            std::fs::write(&key, leaf.key_pem().expose())?;
            Ok(vec![
                cert_flag.into(),
                cert.display().to_string(),
                key_flag.into(),
                key.display().to_string(),
            ])
        };
    for (security, cert_flag, key_flag) in [
        (SmtpSecurity::StartTls, "--tlscert", "--tlskey"),
        (SmtpSecurity::ImplicitTls, "--smtpscert", "--smtpskey"),
    ] {
        let sink = SmtpSink::start_with(|dir| write_keys(dir, cert_flag, key_flag))?;
        let settings = |roots_pem: Option<Vec<u8>>| SmtpSettings {
            host: "127.0.0.1".into(),
            port: sink.port,
            security,
            username: None,
            password: None,
            from: "Orchard <orchard@example.edu>".into(),
            roots_pem,
            timeout: Duration::from_secs(5),
        };
        let trusted = Mailer::new(&settings(Some(ca.cert_pem())))?;
        trusted
            .send(CENTRAL, "[Orchard] over tls", "body")
            .await
            .map_err(|e| anyhow::anyhow!("{security:?}: {e}"))?;
        let untrusted = Mailer::new(&settings(None))?;
        let refused = untrusted.send(CENTRAL, "[Orchard] untrusted", "body").await;
        ensure!(
            refused.is_err(),
            "{security:?}: an untrusted certificate was accepted"
        );
        let messages = sink.messages()?;
        ensure!(
            messages == [(CENTRAL.to_string(), "[Orchard] over tls".to_string())],
            "{security:?}: {messages:?}"
        );
    }

    // AUTH over STARTTLS: the right password delivers, a wrong one is refused.
    let sink = SmtpSink::start_with(|dir| {
        let mut args = vec!["auth".to_string()];
        let keys = write_keys(dir, "", "")?;
        args.extend([
            keys[1].clone(),
            keys[3].clone(),
            "orchard".into(),
            "s3cret".into(),
        ]);
        Ok(args)
    })?;
    let with_password = |password: &str| {
        Mailer::new(&SmtpSettings {
            host: "127.0.0.1".into(),
            port: sink.port,
            security: SmtpSecurity::StartTls,
            username: Some("orchard".into()),
            password: Some(orchard_types::Secret::new(password.to_string())),
            from: "Orchard <orchard@example.edu>".into(),
            roots_pem: Some(ca.cert_pem()),
            timeout: Duration::from_secs(5),
        })
    };
    with_password("s3cret")?
        .send(CENTRAL, "[Orchard] authenticated", "body")
        .await
        .map_err(anyhow::Error::msg)?;
    let refused = with_password("wrong")?
        .send(CENTRAL, "[Orchard] wrong password", "body")
        .await;
    ensure!(refused.is_err(), "a wrong SMTP password was accepted");
    let messages = sink.messages()?;
    ensure!(
        messages == [(CENTRAL.to_string(), "[Orchard] authenticated".to_string())],
        "{messages:?}"
    );
    Ok(())
}

/// The binary with `--smtp-*` flags: at start its `credential-expiry` job finds the push certificate 20 days from
/// its end and mails central IT once (the 30-day warning).
async fn warnings_from_the_binary(backend: Backend) -> Result<()> {
    let apple = orchard_testkit::apple::ApplePush::start(SystemClock.now()).await?;
    let Some(mut server) = TestServer::start_with(backend, &apple.serve_args()).await? else {
        return Ok(());
    };
    let topic = orchard_types::ApnsTopic::parse(&format!(
        "com.apple.mgmt.External.{}",
        uuid::Uuid::new_v4()
    ))?;
    let cert = apple.certificate(&topic, SystemClock.now(), 20)?;
    let (status, body) = server
        .api(
            &server.token,
            reqwest::Method::PUT,
            "/api/v1/push-certificate",
            Some(serde_json::json!({
                "certificate_pem": String::from_utf8(cert.cert_pem())?,
                "private_key_pem": String::from_utf8(cert.key_pem().expose().clone())?,
            })),
        )
        .await?;
    ensure!(status == 200, "upload: {status} {body}");
    let smtp = SmtpSink::start()?;
    let mut args = apple.serve_args();
    args.extend(
        [
            "--smtp-host",
            "127.0.0.1",
            "--smtp-port",
            &smtp.port.to_string(),
            "--smtp-security",
            "plain",
            "--smtp-from",
            "Orchard <orchard@example.edu>",
            "--central-it-email",
            CENTRAL,
        ]
        .map(String::from),
    );
    server.restart(&args).await?;
    // Bounded wait for the job's first step.
    let mut messages = Vec::new();
    for _ in 0..300 {
        messages = smtp.messages()?;
        if !messages.is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    ensure!(messages.len() == 1, "{messages:?}");
    ensure!(messages[0].0 == CENTRAL, "{messages:?}");
    ensure!(
        messages[0].1.contains(topic.as_str()) && messages[0].1.contains("(30-day warning)"),
        "{messages:?}"
    );

    // The web UI reads the same register: the dashboard and the operator's expiring page list the certificate.
    server.set_local_account("it-oncall", "correct horse battery staple")?;
    let browser = reqwest::Client::builder()
        .use_rustls_tls()
        .tls_built_in_root_certs(false)
        .add_root_certificate(reqwest::Certificate::from_pem(&server.ca_pem)?)
        .cookie_store(true)
        .redirect(reqwest::redirect::Policy::none())
        .default_headers(
            [(reqwest::header::ACCEPT_LANGUAGE, "en".parse()?)]
                .into_iter()
                .collect(),
        )
        .build()?;
    let login = browser
        .get(server.url("/ui/login"))
        .send()
        .await?
        .text()
        .await?;
    let form_token = login
        .split("name=\"form_token\" value=\"")
        .nth(1)
        .and_then(|rest| rest.split('"').next())
        .context("form token")?
        .to_string();
    let signed_in = browser
        .post(server.url("/ui/login/local"))
        .form(&[
            ("username", "it-oncall"),
            ("password", "correct horse battery staple"),
            ("form_token", form_token.as_str()),
        ])
        .send()
        .await?;
    ensure!(signed_in.status() == 303, "{signed_in:?}");
    for page in ["/ui", "/ui/operator/expiring"] {
        let body = browser.get(server.url(page)).send().await?.text().await?;
        // Issued 20 days from expiry: 20 days left, or 19 once a second has passed (days are whole).
        ensure!(
            body.contains("Push certificate")
                && (body.contains("19 days") || body.contains("20 days")),
            "{page}: {body}"
        );
    }
    Ok(())
}

orchard_testkit::backend_tests! {
    credential_warnings => warnings;
    credential_register => register_api;
    credential_warnings_binary => warnings_from_the_binary;
}
