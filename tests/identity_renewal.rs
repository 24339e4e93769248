//! Device identity renewal and Return to Service (issue 11, points 1 and 6), on SQLite and PostgreSQL: Orchard
//! in-process with an injected clock behind the real router and TLS listener, simulated iPads over HTTPS with
//! the same clock, real SCEP and CMS.
//!
//! - Three simulated years: the renewal job (run as the worker runs it, under its cluster lease) queues a fresh
//!   enrollment profile inside the window; each iPad installs it, does SCEP with the device-bound challenge and
//!   signs with its new identity from then on. No iPad ever loses its channel; its DeviceId stays.
//! - The previous identity works during the grace period, then is refused.
//! - A renewal challenge used for another UDID is refused; the failed renewal is recorded on the device and
//!   retried; a RenewalReq identity moves the binding at its first request but cannot claim another tenant's
//!   device.
//! - Expiry in the device detail, the `identity_expires_before` filter and `/metrics`.
//! - Return to Service: the erase carries Orchard's enrollment profile, the iPad re-enrolls by itself into the
//!   same device record; refused while Activation Lock is on.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;

use anyhow::{ensure, Context, Result};
use openssl::rsa::Rsa;
use openssl::x509::X509;
use orchard_core::access::bootstrap::LocalBootstrap;
use orchard_core::access::principal::Principal;
use orchard_core::enrollment::renewal::IdentityRenewalSettings;
use orchard_core::jobs::{IdentityRenewalJob, StepOutcome, Worker};
use orchard_core::push::PushSettings;
use orchard_core::{secret_hash, CoreError, Orchard, PkiMaterial};
use orchard_pki::scep::{self, CertRepOutcome};
use orchard_pki::seal::DataKey;
use orchard_pki::{CertificateAuthority, Identity};
use orchard_protocol::commands::{Command, ReturnToService};
use orchard_protocol::report::{CommandReport, ReportStatus};
use orchard_sim::{SimConfig, SimDevice};
use orchard_store::{DeviceQuery, EnrollmentLink, Page, Store, Tenant};
use orchard_testkit::service::test_config;
use orchard_testkit::{Backend, TestDatabase};
use orchard_types::{Clock, DeviceId, EnrollmentLinkId, ManualClock, SystemClock, TenantId, Udid};

const DAY: i64 = 86_400;

/// Orchard in-process on a hand-moved clock, served over TLS on 127.0.0.1.
struct Rig {
    orchard: Arc<Orchard>,
    store: Store,
    clock: ManualClock,
    operator: Principal,
    worker: Worker,
    base_url: String,
    server_ca_pem: Vec<u8>,
    _stop: tokio::sync::watch::Sender<()>,
    _database: TestDatabase,
}

impl Rig {
    async fn start(backend: Backend) -> Result<Option<Rig>> {
        orchard_sim::install_crypto_provider();
        let Some(database) = TestDatabase::create(backend).await? else {
            return Ok(None);
        };
        let (store, scopes) = database.store().await?;
        let clock = ManualClock::new(SystemClock.now());
        let now = clock.now();
        let listener =
            tokio::net::TcpListener::bind(SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 0))
                .await?;
        let base_url = format!("https://127.0.0.1:{}", listener.local_addr()?.port());
        // Long enough for the simulated years (the device identities are what must renew).
        let days = 3650;
        let ips = [IpAddr::V4(Ipv4Addr::LOCALHOST)];
        let server_ca = CertificateAuthority::generate_server_ca(
            "Renewal Test Server CA",
            &[],
            &ips,
            now,
            days,
        )?;
        let tls = server_ca.issue_tls_server(&[], &ips, now, days)?;
        let pki = PkiMaterial {
            ca: CertificateAuthority::generate("Renewal Test Device CA", now, days)?,
            profile_signer: server_ca.issue_signing_identity("Renewal Test Profiles", now, days)?,
            server_ca: server_ca.clone(),
            data_key: DataKey::generate()?,
        };
        let mut config = test_config();
        config.public_url = base_url.clone();
        let clock_dyn: Arc<dyn Clock> = Arc::new(clock.clone());
        let bootstrap =
            LocalBootstrap::for_opened_database(store.clone(), scopes.clone(), clock_dyn.clone());
        let operator = bootstrap
            .operator()
            .map_err(|e| anyhow::anyhow!("{e}"))?
            .principal()
            .clone();
        let orchard = Arc::new(
            Orchard::new(
                store.clone(),
                scopes,
                Arc::new(pki),
                config,
                clock_dyn,
                PushSettings::default(),
            )
            .with_identity_renewal(
                IdentityRenewalSettings::new(365, 60, 7).map_err(anyhow::Error::msg)?,
            ),
        );
        let mut chain = tls.cert_pem();
        chain.extend_from_slice(&server_ca.cert_pem());
        let tls_config = orchard_server::tls_server_config(&chain, tls.key_pem().expose())
            .map_err(anyhow::Error::msg)?;
        let app = orchard_server::build_app(orchard.clone(), orchard_server::Limits::default());
        let (stop, mut stopped) = tokio::sync::watch::channel(());
        let mut server_stopped = stopped.clone();
        tokio::spawn(orchard_server::serve_tls(
            listener,
            tls_config,
            app,
            orchard_server::ConnectionLimits::default(),
            async move {
                let _ = server_stopped.changed().await;
            },
        ));
        let worker = Worker::with_owner(orchard.clone(), orchard.system(), "node-renewal-test", {
            let _ = stopped.borrow_and_update();
            stopped
        });
        Ok(Some(Rig {
            orchard,
            store,
            clock,
            operator,
            worker,
            base_url,
            server_ca_pem: server_ca.cert_pem(),
            _stop: stop,
            _database: database,
        }))
    }

    /// A tenant and an enrollment link of it: (tenant, link URL).
    async fn tenant_with_link(&self, code: &str) -> Result<(TenantId, String)> {
        let now = self.clock.now();
        let tenant = Tenant {
            id: TenantId::new(),
            name: code.to_uppercase(),
            code: code.into(),
            created_at: now,
        };
        self.store.create_tenant(&tenant).await?;
        let secret = uuid::Uuid::new_v4().simple().to_string();
        self.store
            .create_enrollment_link(&EnrollmentLink {
                id: EnrollmentLinkId::new(),
                tenant_id: tenant.id,
                name: "cart".into(),
                secret_hash: secret_hash(&secret),
                max_uses: None,
                uses: 0,
                expires_at: None,
                created_at: now,
                created_by: None,
            })
            .await?;
        Ok((tenant.id, format!("{}/enroll/{secret}", self.base_url)))
    }

    /// An iPad on the rig's clock, enrolled through `link`, its inventory answered.
    async fn ipad(&self, link: &str) -> Result<SimDevice> {
        let mut ipad = SimDevice::new_random(&SimConfig::default());
        ipad.set_clock(Arc::new(self.clock.clone()));
        ipad.enroll(link).await.context("enroll")?;
        ipad.poll().await.context("first poll")?;
        Ok(ipad)
    }

    async fn device_id(&self, ipad: &SimDevice) -> Result<DeviceId> {
        Ok(self
            .store
            .find_device_by_udid(&Udid::parse(ipad.udid())?)
            .await?
            .context("device")?
            .id)
    }

    async fn fingerprint(&self, ipad: &SimDevice) -> Result<String> {
        self.store
            .find_device_by_udid(&Udid::parse(ipad.udid())?)
            .await?
            .context("device")?
            .cert_fingerprint
            .context("fingerprint")
    }

    /// One step of the renewal job as the worker runs it (cluster lease in `job_runs`).
    async fn run_renewal_job(&self) -> Result<()> {
        let outcome = self
            .worker
            .step(&IdentityRenewalJob::new(
                self.orchard.clone(),
                self.orchard.system(),
            ))
            .await;
        ensure!(
            !matches!(outcome, StepOutcome::Failed),
            "renewal job failed"
        );
        Ok(())
    }

    async fn detail(&self, id: DeviceId) -> Result<serde_json::Value> {
        let detail = self.orchard.device_detail(&self.operator, id).await?;
        Ok(serde_json::to_value(&detail)?)
    }

    async fn metrics(&self) -> Result<String> {
        let client = reqwest::Client::builder()
            .use_rustls_tls()
            .tls_built_in_root_certs(false)
            .add_root_certificate(reqwest::Certificate::from_pem(&self.server_ca_pem)?)
            .build()?;
        Ok(client
            .get(format!("{}/metrics", self.base_url))
            .send()
            .await?
            .text()
            .await?)
    }
}

/// The status of an Idle poll signed by `identity` for `ipad`'s UDID.
async fn poll_status_signed_by(ipad: &SimDevice, identity: &Identity) -> Result<u16> {
    let body = CommandReport {
        udid: Udid::parse(ipad.udid())?,
        user: None,
        status: ReportStatus::Idle,
        command_uuid: None,
        error_chain: Vec::new(),
        body: plist::Dictionary::new(),
    }
    .encode();
    let signature = orchard_pki::signature::sign_mdm_body(&body, identity)?;
    Ok(ipad.send_command_raw(body, Some(signature)).await?.0)
}

fn metric(text: &str, name: &str) -> Option<i64> {
    text.lines()
        .find_map(|l| l.strip_prefix(&format!("{name} ")))
        .and_then(|v| v.trim().parse().ok())
}

async fn three_years_of_renewals(backend: Backend) -> Result<()> {
    let Some(rig) = Rig::start(backend).await? else {
        return Ok(());
    };
    let (_, link) = rig.tenant_with_link("physics").await?;
    let mut ipads = Vec::new();
    for _ in 0..3 {
        ipads.push(rig.ipad(&link).await?);
        // Enrolled on different days, so their identities run out on different days.
        rig.clock.advance(20 * DAY);
    }
    let mut ids = Vec::new();
    let mut fingerprints = Vec::new();
    for ipad in &ipads {
        ids.push(rig.device_id(ipad).await?);
        fingerprints.push(vec![rig.fingerprint(ipad).await?]);
    }
    let start = rig.clock.now();
    let mut renewals_seen_in_window = false;
    let mut grace_checked = false;
    // Every 5 days for 3 years: the job runs, every iPad polls (and answers whatever it is given).
    while rig.clock.now().0 < start.0 + 3 * 365 * DAY {
        rig.clock.advance(5 * DAY);
        rig.run_renewal_job().await?;
        // Expiry is visible while renewals are due (before the iPads fetch them): the filter and the metric
        // see the same devices.
        let soon = rig.clock.now().plus_seconds(60 * DAY);
        let (expiring, total) = rig
            .orchard
            .search_devices(
                &rig.operator,
                &DeviceQuery {
                    identity_expires_before: Some(soon),
                    ..DeviceQuery::default()
                },
                Page {
                    limit: 10,
                    offset: 0,
                },
            )
            .await?;
        ensure!(expiring.len() as i64 == total);
        if total > 0 && !renewals_seen_in_window {
            let metrics = rig.metrics().await?;
            ensure!(
                metric(&metrics, "orchard_device_identities") == Some(3),
                "{metrics}"
            );
            ensure!(
                metric(&metrics, "orchard_device_identities_expired") == Some(0),
                "{metrics}"
            );
            ensure!(
                metric(&metrics, "orchard_device_identities_expiring") == Some(total),
                "{metrics}"
            );
            renewals_seen_in_window = true;
        }
        for (n, ipad) in ipads.iter_mut().enumerate() {
            let previous = ipad.identity()?;
            ipad.poll().await.with_context(|| {
                format!(
                    "ipad {n} lost its channel at day {}",
                    (rig.clock.now().0 - start.0) / DAY
                )
            })?;
            let fp = rig.fingerprint(ipad).await?;
            if fingerprints[n].last() != Some(&fp) {
                fingerprints[n].push(fp);
                ensure!(
                    rig.device_id(ipad).await? == ids[n],
                    "the device id changed"
                );
                if !grace_checked {
                    // The previous identity still works during the grace period, and not after it.
                    ensure!(poll_status_signed_by(ipad, &previous).await? == 200);
                    rig.clock.advance(8 * DAY);
                    ensure!(poll_status_signed_by(ipad, &previous).await? == 403);
                    ensure!(poll_status_signed_by(ipad, &ipad.identity()?).await? == 200);
                    grace_checked = true;
                }
            }
        }
    }
    ensure!(grace_checked && renewals_seen_in_window);
    for (n, ipad) in ipads.iter().enumerate() {
        // 3 years of 365-day identities renewed 60 days ahead: at least three renewals each.
        ensure!(
            fingerprints[n].len() >= 4,
            "ipad {n}: {:?}",
            fingerprints[n]
        );
        let detail = rig.detail(ids[n]).await?;
        ensure!(detail["identity"]["renewal_state"] == "renewed", "{detail}");
        ensure!(detail["identity"]["renewal_failures"] == 0, "{detail}");
        let not_after = detail["identity"]["not_after"]
            .as_str()
            .context("not_after")?;
        ensure!(!not_after.is_empty());
        ensure!(detail["enrollment_state"] == "enrolled");
        ensure!(!detail["channels"]
            .as_array()
            .context("channels")?
            .is_empty());
        // The renewal commands are in the device's history, acknowledged, queued by the renewal.
        let history = rig
            .orchard
            .command_history(
                &rig.operator,
                ids[n],
                Page {
                    limit: 500,
                    offset: 0,
                },
            )
            .await?;
        let installs = history
            .iter()
            .filter(|c| c.queued_by.as_deref() == Some("orchard:renewal"))
            .collect::<Vec<_>>();
        ensure!(installs.len() >= 3, "{} renewal commands", installs.len());
        ensure!(installs.iter().all(|c| c.status == "acknowledged"));
        ensure!(ipad.state.enrolled);
    }
    let metrics = rig.metrics().await?;
    ensure!(
        metric(&metrics, "orchard_device_identities_expired") == Some(0),
        "{metrics}"
    );
    Ok(())
}

/// SCEP RenewalReq over HTTP signed by `current`: the new identity, or None when refused.
async fn scep_renewal(rig: &Rig, ipad: &SimDevice, current: &Identity) -> Result<Option<Identity>> {
    let key = Rsa::generate(2048).and_then(openssl::pkey::PKey::from_rsa)?;
    let ca_der = rig.orchard.ca().cert_der();
    let pending = scep::build_renewal_req(&ca_der, &key, current, "ipad", rig.clock.now())?;
    let reply = ipad
        .raw_client()
        .post(format!("{}/scep?operation=PKIOperation", rig.base_url))
        .header("content-type", "application/x-pki-message")
        .body(pending.message_der.clone())
        .send()
        .await?
        .bytes()
        .await?;
    Ok(
        match scep::decode_cert_rep(&pending, &key, &ca_der, &reply)? {
            CertRepOutcome::Success(der) => Some(Identity::from_parts(X509::from_der(&der)?, key)?),
            _ => None,
        },
    )
}

async fn renewal_attacks(backend: Backend) -> Result<()> {
    let Some(rig) = Rig::start(backend).await? else {
        return Ok(());
    };
    let (_, physics_link) = rig.tenant_with_link("physics").await?;
    let (_, chemistry_link) = rig.tenant_with_link("chemistry").await?;
    let mut victim = rig.ipad(&physics_link).await?;
    let chemistry = rig.ipad(&chemistry_link).await?;
    let victim_id = rig.device_id(&victim).await?;

    // Inside the window the job queues the victim's renewal profile once, however often it runs.
    rig.clock.advance(310 * DAY);
    rig.run_renewal_job().await?;
    rig.clock.advance(2 * 3600);
    rig.run_renewal_job().await?;
    let history = rig
        .orchard
        .command_history(
            &rig.operator,
            victim_id,
            Page {
                limit: 100,
                offset: 0,
            },
        )
        .await?;
    ensure!(
        history
            .iter()
            .filter(|c| c.queued_by.as_deref() == Some("orchard:renewal"))
            .count()
            == 1
    );

    // An attacker who got hold of the renewal profile (here: a replay of the victim's signed poll) uses its
    // challenge for another UDID: SCEP issues an identity bound to the victim's device, which cannot enroll
    // the attacker's UDID.
    let body = orchard_sim::handler::idle_report(&victim.state)?;
    let signature = victim.sign(&body)?;
    let (status, command) = victim.send_command_raw(body, Some(signature)).await?;
    ensure!(status == 200);
    let dict = orchard_protocol::parse_dictionary(&command)?;
    let payload = dict
        .get("Command")
        .and_then(|c| c.as_dictionary())
        .and_then(|c| c.get("Payload"))
        .and_then(|p| p.as_data())
        .context("InstallProfile payload")?
        .to_vec();
    let mut attacker = SimDevice::new_random(&SimConfig::default());
    attacker.set_clock(Arc::new(rig.clock.clone()));
    let refused = attacker.enroll_with_profile(&payload).await;
    ensure!(refused.is_err(), "the attacker enrolled");
    ensure!(rig
        .store
        .find_device_by_udid(&Udid::parse(attacker.udid())?)
        .await?
        .is_none());

    // The victim's renewal now fails (its challenge is spent): recorded on the device, its identity unchanged,
    // and retried a day later.
    let before = rig.fingerprint(&victim).await?;
    // The replayed poll took the command; an unanswered command is handed out again after the resend time.
    rig.clock.advance(6 * 60);
    victim.poll().await?;
    ensure!(rig.fingerprint(&victim).await? == before);
    let detail = rig.detail(victim_id).await?;
    ensure!(detail["identity"]["renewal_state"] == "failed", "{detail}");
    ensure!(detail["identity"]["renewal_failures"] == 1, "{detail}");
    ensure!(
        detail["identity"]["last_renewal_error"].is_string(),
        "{detail}"
    );
    ensure!(
        metric(
            &rig.metrics().await?,
            "orchard_device_identity_renewals_failed"
        ) == Some(1)
    );
    rig.clock.advance(DAY + 60);
    rig.run_renewal_job().await?;
    victim.poll().await?;
    ensure!(
        rig.fingerprint(&victim).await? != before,
        "the retry did not renew"
    );
    ensure!(rig.detail(victim_id).await?["identity"]["renewal_state"] == "renewed");

    // A RenewalReq identity of the chemistry iPad (tenant B) cannot claim the physics iPad (tenant A), not by
    // its requests and not by Authenticate; its own device's binding moves at its first request.
    let chemistry_old = chemistry.identity()?;
    let renewed = scep_renewal(&rig, &chemistry, &chemistry_old)
        .await?
        .context("renewal refused")?;
    ensure!(poll_status_signed_by(&victim, &renewed).await? == 403);
    let authenticate = orchard_protocol::checkin::CheckinMessage::Authenticate(
        orchard_protocol::checkin::Authenticate {
            topic: rig.orchard.current_topic(),
            udid: Udid::parse(victim.udid())?,
            serial_number: None,
            os_version: None,
            build_version: None,
            product_name: None,
            model: None,
            model_name: None,
            device_name: None,
            imei: None,
            meid: None,
        },
    )
    .encode();
    let signature = orchard_pki::signature::sign_mdm_body(&authenticate, &renewed)?;
    ensure!(
        victim
            .send_checkin_raw(authenticate, Some(signature))
            .await?
            .0
            == 403
    );
    ensure!(rig.detail(victim_id).await?["identity"]["renewal_state"] == "renewed");
    victim.poll().await?;
    ensure!(poll_status_signed_by(&chemistry, &renewed).await? == 200);
    let chemistry_fp = rig.fingerprint(&chemistry).await?;
    ensure!(chemistry_fp == orchard_pki::fingerprint_sha256_hex(&renewed.cert_der()));
    // The replaced identity renews nothing, and after the grace period it is refused.
    ensure!(scep_renewal(&rig, &chemistry, &chemistry_old)
        .await?
        .is_none());
    rig.clock.advance(8 * DAY);
    ensure!(poll_status_signed_by(&chemistry, &chemistry_old).await? == 403);
    Ok(())
}

async fn return_to_service(backend: Backend) -> Result<()> {
    let Some(rig) = Rig::start(backend).await? else {
        return Ok(());
    };
    let (tenant, link) = rig.tenant_with_link("library").await?;
    let mut ipad = rig.ipad(&link).await?;
    let id = rig.device_id(&ipad).await?;
    let serial = ipad.state.serial_number.clone();
    let erase = |mdm_profile_data: Option<Vec<u8>>| Command::EraseDevice {
        preserve_data_plan: None,
        disallow_proximity_setup: None,
        return_to_service: Some(ReturnToService {
            enabled: true,
            wifi_profile_data: None,
            mdm_profile_data,
        }),
    };

    // Orchard makes the enrollment profile; one brought by the caller is refused.
    let refused = rig
        .orchard
        .queue_confirmed_command(
            &rig.operator,
            id,
            erase(Some(b"<plist/>".to_vec())),
            Some(&serial),
        )
        .await;
    ensure!(matches!(refused, Err(CoreError::Invalid(_))), "{refused:?}");

    // Activation Lock on: a clear refusal, nothing queued.
    let mut locked = rig.ipad(&link).await?;
    locked.state.activation_lock_enabled = true;
    let locked_id = rig.device_id(&locked).await?;
    rig.orchard
        .queue_command(
            &rig.operator,
            locked_id,
            Command::DeviceInformation {
                queries: vec!["IsActivationLockEnabled".into()],
            },
        )
        .await?;
    locked.poll().await?;
    let locked_serial = locked.state.serial_number.clone();
    let refused = rig
        .orchard
        .queue_confirmed_command(&rig.operator, locked_id, erase(None), Some(&locked_serial))
        .await;
    ensure!(
        matches!(&refused, Err(CoreError::Conflict(m)) if m.contains("Activation Lock")),
        "{refused:?}"
    );

    // The round trip: erase, re-enroll by itself, same device record, tenant and history.
    let before = rig.fingerprint(&ipad).await?;
    let queued = rig
        .orchard
        .queue_confirmed_command(&rig.operator, id, erase(None), Some(&serial))
        .await?;
    ipad.poll().await?;
    ensure!(ipad.state.enrolled, "the iPad did not come back");
    let device = rig
        .store
        .find_device_by_udid(&Udid::parse(ipad.udid())?)
        .await?
        .context("device")?;
    ensure!(device.id == id && device.tenant_id == tenant);
    ensure!(device.cert_fingerprint.as_deref() != Some(before.as_str()));
    ipad.poll().await?;
    let history = rig
        .orchard
        .command_history(
            &rig.operator,
            id,
            Page {
                limit: 100,
                offset: 0,
            },
        )
        .await?;
    ensure!(history
        .iter()
        .any(|c| c.command_uuid == queued.uuid.to_string() && c.status == "acknowledged"));
    // A new enrollment: the inventory was queried again and answered.
    ensure!(
        history
            .iter()
            .filter(|c| c.request_type == "DeviceInformation" && c.status == "acknowledged")
            .count()
            >= 2
    );
    let detail = rig.detail(id).await?;
    ensure!(detail["enrollment_state"] == "enrolled", "{detail}");
    Ok(())
}

orchard_testkit::backend_tests! {
    identities_renew_for_three_simulated_years => three_years_of_renewals;
    renewal_challenges_and_identities_cannot_be_misused => renewal_attacks;
    return_to_service_reenrolls_the_same_device => return_to_service;
}
