//! One unit of work per use case, proved by fault injection on SQLite and PostgreSQL: for the first
//! TokenUpdate of a zero-touch iPad, a command report with inventory effects, a setup command's report that
//! escrows the bypass code and completes setup (DeviceConfigured), and a release by hand, the store fails the
//! 1st, 2nd, 3rd … statement of the use case's unit in turn. After every failure the device's rows read
//! exactly as before; the device's (or the person's) retry then completes the use case: setup commands queued
//! exactly once, DeviceConfigured exactly once, the bypass code escrowed.
//!
//! Devices are driven through core's real entry points (`scep_pki_operation`, `checkin`, `command_report`)
//! with requests signed by an identity our SCEP issued, as an iPad does.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::future::Future;
use std::sync::Arc;

use openssl::pkey::{PKey, Private};
use openssl::rsa::Rsa;
use openssl::x509::X509;
use orchard_core::access::bootstrap::LocalBootstrap;
use orchard_core::access::principal::Principal;
use orchard_core::dep::templates::{TemplateOrganization, TemplateProfile, TemplateSetup};
use orchard_core::push::PushSettings;
use orchard_core::{secret_hash, CoreError, Orchard};
use orchard_pki::scep::{self, CertRepOutcome};
use orchard_pki::signature::sign_mdm_body;
use orchard_pki::Identity;
use orchard_protocol::checkin::{Authenticate, CheckinMessage, TokenUpdate};
use orchard_protocol::commands::decode_command;
use orchard_protocol::report::{CommandReport, ErrorChainItem, ReportStatus};
use orchard_store::{
    Channel, CommandRecord, DepTemplateRecord, DepTokenRecord, Device, DeviceSetup, EnrollmentLink,
    InventorySection, Page, ScepChallenge, ScopeAuthority, Store, Tenant,
};
use orchard_testkit::{with_store, Backend};
use orchard_types::{
    Clock, CommandStatus, CommandUuid, DeviceId, EnrollmentLinkId, EnrollmentState, ManualClock,
    PushMagic, QueuedBy, RequestType, Role, SerialNumber, SetupState, TenantId, Udid, UnixTime,
};

const BYPASS_CODE: &str = "ABCDE-FGHIJ-KLMNO-PQRST-UVWXY";

/// Walks stop here at the latest: no use case of these has anywhere near this many statements.
const MAX_STATEMENTS: u64 = 64;

// ---------------------------------------------------------------------------------------------------------
// harness

struct Harness {
    orchard: Orchard,
    store: Store,
    /// The scope authority that came with the test's database: it reads rows of every tenant.
    scopes: ScopeAuthority,
    clock: ManualClock,
    operator: Principal,
    link_id: EnrollmentLinkId,
    tenant_id: TenantId,
    /// One RSA key for every device identity (each device still gets its own certificate): saves key
    /// generation, changes nothing the server sees.
    key: PKey<Private>,
}

/// A simulated iPad enrolled through the template's hidden link (Authenticate done).
struct Ipad {
    udid: Udid,
    serial: String,
    identity: Identity,
    device_id: DeviceId,
}

/// Everything a use case of these may change, read through the store from outside any unit.
#[derive(Debug, PartialEq)]
struct Rows {
    device: Device,
    channels: Vec<Channel>,
    commands: Vec<CommandRecord>,
    inventory: Vec<InventorySection>,
    setup: Option<DeviceSetup>,
    bypass_code: Option<(Vec<u8>, UnixTime)>,
    /// Channels owing a push, in the whole database (the push is owed in the enqueue's transaction).
    due_pushes: i64,
}

async fn harness((store, scopes): (Store, ScopeAuthority)) -> Harness {
    let start = UnixTime(1_900_000_000);
    let clock = ManualClock::new(start);
    let clock_dyn: Arc<dyn Clock> = Arc::new(clock.clone());
    let orchard = orchard_testkit::service::test_orchard(
        store.clone(),
        scopes.clone(),
        clock_dyn,
        PushSettings::default(),
    );

    let tenant = Tenant {
        id: TenantId::new(),
        name: "Physics".into(),
        code: "physics".into(),
        created_at: start,
    };
    store.create_tenant(&tenant).await.unwrap();
    let created =
        LocalBootstrap::for_opened_database(store.clone(), scopes.clone(), Arc::new(clock.clone()))
            .create_api_token("central-it", Role::Operator, None, None)
            .await
            .unwrap();
    let operator = orchard.authenticate_bearer(&created.secret).await.unwrap();

    // A DEP token and a template whose setup names the device, sets organization info and escrows the
    // bypass code; Setup Assistant waits for DeviceConfigured.
    store
        .create_dep_token(&DepTokenRecord {
            id: "asm-physics".into(),
            name: "ASM Physics".into(),
            certificate_pem: String::new(),
            key_encrypted: Vec::new(),
            token_encrypted: None,
            consumer_key: None,
            access_token_expiry: None,
            server_name: None,
            org_name: None,
            cursor: None,
            cursor_saved_at: None,
            last_sync_at: None,
            last_sync_error: None,
            created_at: start,
        })
        .await
        .unwrap();
    let link = EnrollmentLink {
        id: EnrollmentLinkId::new(),
        tenant_id: tenant.id,
        name: "template:Physics iPads".into(),
        secret_hash: secret_hash("never handed out"),
        max_uses: None,
        uses: 0,
        expires_at: None,
        created_at: start,
        created_by: None,
    };
    let setup = TemplateSetup {
        device_name_pattern: Some("PHYS-{serial}".into()),
        organization: Some(TemplateOrganization {
            name: "Department of Physics".into(),
            address: None,
            phone: None,
            email: None,
        }),
        commands: Vec::new(),
        escrow_bypass_code: true,
    };
    store
        .create_dep_template(
            &DepTemplateRecord {
                id: "tpl-physics".into(),
                token_id: "asm-physics".into(),
                tenant_id: tenant.id,
                link_id: link.id,
                name: "Physics iPads".into(),
                profile_json: serde_json::to_string(&TemplateProfile::default()).unwrap(),
                setup_json: serde_json::to_string(&setup).unwrap(),
                minimum_os_version: None,
                auto_assign: false,
                profile_uuid: None,
                defined_at: None,
                define_error: None,
                created_at: start,
                updated_at: start,
            },
            &link,
        )
        .await
        .unwrap();

    Harness {
        orchard,
        store,
        scopes,
        clock,
        operator,
        link_id: link.id,
        tenant_id: tenant.id,
        key: PKey::from_rsa(Rsa::generate(2048).unwrap()).unwrap(),
    }
}

impl Harness {
    /// Moves time on between requests, so a write that should have been rolled back would show in a
    /// timestamp (never 60 s or more per device, which would add `last_seen_at` writes outside the units).
    fn tick(&self) -> UnixTime {
        self.clock.advance(1);
        self.clock.now()
    }

    /// SCEP with a challenge of the template's link (what `/enroll/dep` hands out), then Authenticate.
    async fn enroll(&self, n: u64) -> Ipad {
        let now = self.tick();
        let udid =
            Udid::parse(&uuid::Uuid::new_v4().hyphenated().to_string().to_uppercase()).unwrap();
        let serial = format!("F9FX{n:08}");
        let challenge = format!("challenge-{}", uuid::Uuid::new_v4());
        self.store
            .create_scep_challenge(&ScepChallenge {
                challenge_hash: secret_hash(&challenge),
                link_id: self.link_id,
                tenant_id: self.tenant_id,
                grant: orchard_store::IdentityGrant::Link,
                created_at: now,
                expires_at: now.plus_seconds(600),
                used_at: None,
            })
            .await
            .unwrap();
        let ca_der = self.orchard.ca().cert_der();
        let pending =
            scep::build_pkcs_req(&ca_der, &self.key, udid.as_str(), Some(&challenge), now).unwrap();
        let reply = self
            .orchard
            .scep_pki_operation(&pending.message_der)
            .await
            .unwrap();
        let CertRepOutcome::Success(cert_der) =
            scep::decode_cert_rep(&pending, &self.key, &ca_der, &reply.body).unwrap()
        else {
            panic!("scep refused the device");
        };
        let identity =
            Identity::from_parts(X509::from_der(&cert_der).unwrap(), self.key.clone()).unwrap();
        let mut ipad = Ipad {
            udid: udid.clone(),
            serial: serial.clone(),
            identity,
            device_id: DeviceId::new(),
        };
        let message = CheckinMessage::Authenticate(Authenticate {
            topic: self.orchard.current_topic(),
            udid: udid.clone(),
            serial_number: Some(SerialNumber::parse(&serial).unwrap()),
            os_version: Some("18.1".into()),
            build_version: Some("22B83".into()),
            product_name: Some("iPad13,18".into()),
            model: None,
            model_name: None,
            device_name: None,
            imei: None,
            meid: None,
        });
        self.checkin(&ipad, message).await.unwrap();
        ipad.device_id = self
            .store
            .find_device_by_udid(&udid)
            .await
            .unwrap()
            .unwrap()
            .id;
        ipad
    }

    async fn checkin(&self, ipad: &Ipad, message: CheckinMessage) -> Result<(), CoreError> {
        let body = message.encode();
        let signature = sign_mdm_body(&body, &ipad.identity).unwrap();
        self.orchard
            .checkin(Some(&signature), &body)
            .await
            .map(|_| ())
    }

    /// The TokenUpdate an iPad in Setup Assistant sends (always the same token, as a retry would).
    async fn token_update(&self, ipad: &Ipad) -> Result<(), CoreError> {
        self.tick();
        let message = CheckinMessage::TokenUpdate(TokenUpdate {
            topic: self.orchard.current_topic(),
            udid: ipad.udid.clone(),
            token: vec![0x42; 32],
            push_magic: PushMagic::parse("8E5E2D5B-6F3E-4E59-9F39-2C0C5A9B7A11").unwrap(),
            unlock_token: Some(vec![7; 32]),
            awaiting_configuration: true,
            user: None,
        });
        self.checkin(ipad, message).await
    }

    /// PUTs a report to `/mdm/command`; the next command's plist comes back.
    async fn report(
        &self,
        ipad: &Ipad,
        status: ReportStatus,
        uuid: Option<&CommandUuid>,
        body: plist::Dictionary,
    ) -> Result<Option<Vec<u8>>, CoreError> {
        self.tick();
        let error_chain = if status == ReportStatus::Error {
            vec![ErrorChainItem {
                error_code: 12_345,
                error_domain: "MCMDMErrorDomain".into(),
                localized_description: Some("The device refused.".into()),
                us_english_description: None,
            }]
        } else {
            Vec::new()
        };
        let report = CommandReport {
            udid: ipad.udid.clone(),
            user: None,
            status,
            command_uuid: uuid.cloned(),
            error_chain,
            body,
        };
        let body = report.encode();
        let signature = sign_mdm_body(&body, &ipad.identity).unwrap();
        self.orchard.command_report(Some(&signature), &body).await
    }

    /// Opens a session and answers every command (`failing` with an Error, the rest as an iPad would)
    /// until the server hands out one of type `stop`, which is left unanswered; returns it.
    async fn run_until(
        &self,
        ipad: &Ipad,
        stop: RequestType,
        failing: Option<RequestType>,
    ) -> CommandUuid {
        // The device comes back in a later session: a command it left unanswered (the walks leave `stop`
        // unanswered) is handed out again once the resend time has passed.
        self.clock
            .advance(orchard_core::commands::hygiene::DEFAULT_RESEND_AFTER_MINUTES * 60 + 1);
        let mut next = self
            .report(ipad, ReportStatus::Idle, None, plist::Dictionary::new())
            .await
            .unwrap();
        loop {
            let plist = next.unwrap_or_else(|| panic!("the queue ran dry before {stop}"));
            let (uuid, command) = decode_command(&plist).unwrap();
            if command.kind() == stop {
                return uuid;
            }
            let (status, body) = if Some(command.kind()) == failing {
                (ReportStatus::Error, plist::Dictionary::new())
            } else {
                (ReportStatus::Acknowledged, answer(ipad, command.kind()))
            };
            next = self.report(ipad, status, Some(&uuid), body).await.unwrap();
        }
    }

    async fn rows(&self, ipad: &Ipad) -> Rows {
        Rows {
            device: self
                .store
                .get_device(self.scopes.all_tenants(), ipad.device_id)
                .await
                .unwrap()
                .unwrap(),
            channels: self.store.list_channels(ipad.device_id).await.unwrap(),
            commands: self
                .store
                .list_commands(
                    self.scopes.all_tenants(),
                    ipad.device_id,
                    Page {
                        limit: 1000,
                        offset: 0,
                    },
                )
                .await
                .unwrap(),
            inventory: self
                .store
                .get_inventory(self.scopes.all_tenants(), ipad.device_id)
                .await
                .unwrap(),
            setup: self.store.device_setup(ipad.device_id).await.unwrap(),
            bypass_code: self.store.bypass_code(ipad.device_id).await.unwrap(),
            due_pushes: self.store.count_due_pushes().await.unwrap(),
        }
    }

    async fn commands(&self, ipad: &Ipad) -> Vec<CommandRecord> {
        self.rows(ipad).await.commands
    }

    async fn setup_state(&self, ipad: &Ipad) -> Option<SetupState> {
        self.store
            .device_setup(ipad.device_id)
            .await
            .unwrap()
            .and_then(|s| s.state)
    }

    /// Fails the `n`th statement of the next unit(s) of work while `use_case` runs. Returns its result and
    /// whether the fault fired (if not, the use case has fewer than `n` statements and ran normally).
    async fn with_fault<T, Fut>(&self, n: u64, use_case: Fut) -> (Result<T, CoreError>, bool)
    where
        Fut: Future<Output = Result<T, CoreError>>,
    {
        self.store.faults().fail_nth_statement(n);
        let result = use_case.await;
        let fired = self.store.faults().fired().is_some();
        self.store.faults().disarm();
        (result, fired)
    }
}

/// What the simulated iPad answers to a command Orchard queued.
fn answer(ipad: &Ipad, request_type: RequestType) -> plist::Dictionary {
    let mut body = plist::Dictionary::new();
    match request_type {
        RequestType::DeviceInformation => {
            let mut responses = plist::Dictionary::new();
            responses.insert("UDID".into(), ipad.udid.as_str().into());
            responses.insert("SerialNumber".into(), ipad.serial.as_str().into());
            responses.insert("DeviceName".into(), "iPad".into());
            responses.insert("OSVersion".into(), "18.1".into());
            responses.insert("ProductName".into(), "iPad13,18".into());
            responses.insert("Model".into(), "MK2K3".into());
            responses.insert("IsSupervised".into(), true.into());
            body.insert("QueryResponses".into(), responses.into());
        }
        RequestType::ActivationLockBypassCode => {
            body.insert("ActivationLockBypassCode".into(), BYPASS_CODE.into());
        }
        _ => {}
    }
    body
}

fn count(commands: &[CommandRecord], request_type: RequestType) -> usize {
    commands
        .iter()
        .filter(|c| c.request_type == request_type)
        .count()
}

/// The state every first TokenUpdate of a zero-touch iPad must leave: inventory queries and setup
/// commands queued exactly once each, setup configuring, the device enrolled with its push token.
async fn assert_first_token_update_done(h: &Harness, ipad: &Ipad, context: &str) {
    let rows = h.rows(ipad).await;
    assert_eq!(rows.device.state, EnrollmentState::Enrolled, "{context}");
    assert_eq!(rows.channels.len(), 1, "{context}");
    assert_eq!(
        rows.channels[0].push_token.as_deref(),
        Some(&[0x42; 32][..]),
        "{context}"
    );
    let by = |q: QueuedBy| {
        rows.commands
            .iter()
            .filter(|c| c.queued_by.as_ref() == Some(&q))
            .map(|c| c.request_type)
            .collect::<Vec<_>>()
    };
    let mut inventory = by(QueuedBy::Enrollment);
    inventory.sort();
    assert_eq!(
        inventory,
        vec![
            RequestType::DeviceInformation,
            RequestType::SecurityInfo,
            RequestType::InstalledApplicationList,
            RequestType::ProfileList,
        ],
        "{context}: inventory queued exactly once"
    );
    let mut setup = by(QueuedBy::Setup);
    setup.sort();
    assert_eq!(
        setup,
        vec![RequestType::Settings, RequestType::ActivationLockBypassCode],
        "{context}: setup commands queued exactly once"
    );
    assert_eq!(rows.commands.len(), 6, "{context}");
    assert_eq!(
        rows.setup.as_ref().and_then(|s| s.state),
        Some(SetupState::Configuring),
        "{context}"
    );
    assert_eq!(
        rows.setup.as_ref().and_then(|s| s.template_id.as_deref()),
        Some("tpl-physics"),
        "{context}"
    );
}

/// After the setup command that completes setup: bypass code escrowed (and readable by the operator),
/// setup releasing, DeviceConfigured queued exactly once.
async fn assert_setup_completed(h: &Harness, ipad: &Ipad, context: &str) {
    let commands = h.commands(ipad).await;
    assert_eq!(
        count(&commands, RequestType::DeviceConfigured),
        1,
        "{context}: DeviceConfigured exactly once"
    );
    assert_eq!(
        h.setup_state(ipad).await,
        Some(SetupState::Releasing),
        "{context}"
    );
    let lock = h
        .orchard
        .activation_lock_view(&h.operator, ipad.device_id)
        .await
        .unwrap();
    assert!(lock.bypass_code_escrowed, "{context}");
    assert_eq!(lock.bypass_code.as_deref(), Some(BYPASS_CODE), "{context}");
}

/// Answers DeviceConfigured: setup is configured, and nothing else is queued.
async fn finish_release(h: &Harness, ipad: &Ipad, context: &str) {
    let uuid = h.run_until(ipad, RequestType::DeviceConfigured, None).await;
    let next = h
        .report(
            ipad,
            ReportStatus::Acknowledged,
            Some(&uuid),
            plist::Dictionary::new(),
        )
        .await
        .unwrap();
    assert_eq!(next, None, "{context}: nothing after DeviceConfigured");
    assert_eq!(
        h.setup_state(ipad).await,
        Some(SetupState::Configured),
        "{context}"
    );
    assert_eq!(
        count(&h.commands(ipad).await, RequestType::DeviceConfigured),
        1,
        "{context}"
    );
}

/// The statements the walk failed, for the final check that it walked through the whole use case.
struct Walk {
    failed: u64,
}

// ---------------------------------------------------------------------------------------------------------
// walks

/// First TokenUpdate: token, inventory queries, setup state, setup commands.
async fn walk_first_token_update(h: Harness) -> Walk {
    for n in 1..=MAX_STATEMENTS {
        let ipad = h.enroll(n).await;
        let before = h.rows(&ipad).await;
        let (result, fired) = h.with_fault(n, h.token_update(&ipad)).await;
        let context = format!("fault at statement {n} of the first TokenUpdate");
        if !fired {
            result.unwrap();
            assert_first_token_update_done(&h, &ipad, &context).await;
            return Walk { failed: n - 1 };
        }
        assert!(result.is_err(), "{context}: the use case reported success");
        assert_eq!(h.rows(&ipad).await, before, "{context}: state changed");
        // The device retries: still its first TokenUpdate, so it gets inventory and setup.
        h.token_update(&ipad).await.unwrap();
        assert_first_token_update_done(&h, &ipad, &format!("{context}, retried")).await;
        // A later TokenUpdate (a new push token, a reboot) queues nothing again.
        h.token_update(&ipad).await.unwrap();
        assert_first_token_update_done(&h, &ipad, &format!("{context}, then again")).await;
    }
    panic!("the first TokenUpdate never ran without a fault");
}

/// A DeviceInformation report: the result and its effects on the device's facts and inventory.
async fn walk_inventory_report(h: Harness) -> Walk {
    for n in 1..=MAX_STATEMENTS {
        let ipad = h.enroll(n).await;
        h.token_update(&ipad).await.unwrap();
        let uuid = h
            .run_until(&ipad, RequestType::DeviceInformation, None)
            .await;
        let before = h.rows(&ipad).await;
        assert_eq!(before.device.device_name, None);
        let body = answer(&ipad, RequestType::DeviceInformation);
        let (result, fired) = h
            .with_fault(
                n,
                h.report(&ipad, ReportStatus::Acknowledged, Some(&uuid), body.clone()),
            )
            .await;
        let context = format!("fault at statement {n} of a DeviceInformation report");
        if fired {
            assert!(result.is_err(), "{context}: the use case reported success");
            assert_eq!(h.rows(&ipad).await, before, "{context}: state changed");
            // The device resends the same report: recorded and applied, not ignored as a duplicate.
            h.report(&ipad, ReportStatus::Acknowledged, Some(&uuid), body)
                .await
                .unwrap();
        } else {
            result.unwrap();
        }
        let after = h.rows(&ipad).await;
        assert_eq!(
            after.device.device_name.as_deref(),
            Some("iPad"),
            "{context}"
        );
        assert_eq!(after.device.model.as_deref(), Some("MK2K3"), "{context}");
        assert_eq!(after.device.is_supervised, Some(true), "{context}");
        assert_eq!(
            after
                .inventory
                .iter()
                .map(|s| s.section.as_str())
                .collect::<Vec<_>>(),
            vec!["device_information"],
            "{context}"
        );
        let record = after.commands.iter().find(|c| c.uuid == uuid).unwrap();
        assert_eq!(record.status, CommandStatus::Acknowledged, "{context}");
        if !fired {
            return Walk { failed: n - 1 };
        }
    }
    panic!("the report never ran without a fault");
}

/// The last setup command's report: its result, the bypass-code escrow, setup progress and DeviceConfigured.
async fn walk_setup_report(h: Harness) -> Walk {
    for n in 1..=MAX_STATEMENTS {
        let ipad = h.enroll(n).await;
        h.token_update(&ipad).await.unwrap();
        let uuid = h
            .run_until(&ipad, RequestType::ActivationLockBypassCode, None)
            .await;
        let before = h.rows(&ipad).await;
        assert_eq!(before.bypass_code, None);
        assert_eq!(
            before.setup.as_ref().and_then(|s| s.state),
            Some(SetupState::Configuring)
        );
        let body = answer(&ipad, RequestType::ActivationLockBypassCode);
        let (result, fired) = h
            .with_fault(
                n,
                h.report(&ipad, ReportStatus::Acknowledged, Some(&uuid), body.clone()),
            )
            .await;
        let context = format!("fault at statement {n} of the bypass-code report");
        let next = if fired {
            assert!(result.is_err(), "{context}: the use case reported success");
            assert_eq!(h.rows(&ipad).await, before, "{context}: state changed");
            h.report(&ipad, ReportStatus::Acknowledged, Some(&uuid), body)
                .await
                .unwrap()
        } else {
            result.unwrap()
        };
        // The answer to the report is the DeviceConfigured it queued.
        let (_, next) = decode_command(&next.unwrap()).unwrap();
        assert_eq!(next.kind(), RequestType::DeviceConfigured, "{context}");
        assert_setup_completed(&h, &ipad, &context).await;
        finish_release(&h, &ipad, &context).await;
        if !fired {
            return Walk { failed: n - 1 };
        }
    }
    panic!("the report never ran without a fault");
}

/// Release by hand of a device whose setup failed: setup releasing and DeviceConfigured, once.
async fn walk_release(h: Harness) -> Walk {
    for n in 1..=MAX_STATEMENTS {
        let ipad = h.enroll(n).await;
        h.token_update(&ipad).await.unwrap();
        // Settings fails: the device stays in Setup Assistant with the failure on its page.
        h.run_until(
            &ipad,
            RequestType::ActivationLockBypassCode,
            Some(RequestType::Settings),
        )
        .await;
        assert_eq!(h.setup_state(&ipad).await, Some(SetupState::Failed));
        let before = h.rows(&ipad).await;
        let (result, fired) = h
            .with_fault(
                n,
                h.orchard.release_device_setup(&h.operator, ipad.device_id),
            )
            .await;
        let context = format!("fault at statement {n} of a release");
        let view = if fired {
            assert!(result.is_err(), "{context}: the use case reported success");
            assert_eq!(h.rows(&ipad).await, before, "{context}: state changed");
            // The person tries again.
            h.orchard
                .release_device_setup(&h.operator, ipad.device_id)
                .await
                .unwrap()
        } else {
            result.unwrap()
        };
        assert_eq!(view.state.as_deref(), Some("releasing"), "{context}");
        assert!(view.error.is_some(), "{context}: the failure stays visible");
        let commands = h.commands(&ipad).await;
        assert_eq!(
            count(&commands, RequestType::DeviceConfigured),
            1,
            "{context}: DeviceConfigured exactly once"
        );
        // Releasing twice is refused and queues nothing more.
        assert!(matches!(
            h.orchard
                .release_device_setup(&h.operator, ipad.device_id)
                .await,
            Err(CoreError::Conflict(_))
        ));
        // The bypass code is still asked for; the device answers it, then DeviceConfigured.
        let uuid = h
            .run_until(&ipad, RequestType::ActivationLockBypassCode, None)
            .await;
        h.report(
            &ipad,
            ReportStatus::Acknowledged,
            Some(&uuid),
            answer(&ipad, RequestType::ActivationLockBypassCode),
        )
        .await
        .unwrap();
        finish_release(&h, &ipad, &context).await;
        if !fired {
            return Walk { failed: n - 1 };
        }
    }
    panic!("the release never ran without a fault");
}

// ---------------------------------------------------------------------------------------------------------
// backends

/// Runs the walk on a fresh database of `backend` (the kit drops it afterwards) and checks it failed at least
/// `min_statements` statements.
async fn walk_on<Fut>(backend: Backend, walk: fn(Harness) -> Fut, min_statements: u64)
where
    Fut: Future<Output = Walk> + Send + 'static,
{
    with_store(backend, |store, scopes| async move {
        let walked = walk(harness((store, scopes)).await).await;
        assert!(
            walked.failed >= min_statements,
            "only {} statements were failed",
            walked.failed
        );
    })
    .await;
}

// BEGIN, the token (device, channel), inventory INSERT and its push, certificate and template reads, the
// setup state, setup INSERT and its push, COMMIT.
const FIRST_TOKEN_UPDATE_STATEMENTS: u64 = 11;
// BEGIN, result, facts, inventory section, COMMIT.
const INVENTORY_REPORT_STATEMENTS: u64 = 5;
// BEGIN, result, escrow, unfinished setup count, channel, setup state, DeviceConfigured and its push, COMMIT.
const SETUP_REPORT_STATEMENTS: u64 = 9;
// BEGIN, setup read, setup state, DeviceConfigured and its push, COMMIT.
const RELEASE_STATEMENTS: u64 = 6;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn first_token_update_commits_once_on_sqlite() {
    walk_on(
        Backend::Sqlite,
        walk_first_token_update,
        FIRST_TOKEN_UPDATE_STATEMENTS,
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn first_token_update_commits_once_on_postgres() {
    walk_on(
        Backend::Postgres,
        walk_first_token_update,
        FIRST_TOKEN_UPDATE_STATEMENTS,
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn inventory_report_commits_once_on_sqlite() {
    walk_on(
        Backend::Sqlite,
        walk_inventory_report,
        INVENTORY_REPORT_STATEMENTS,
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn inventory_report_commits_once_on_postgres() {
    walk_on(
        Backend::Postgres,
        walk_inventory_report,
        INVENTORY_REPORT_STATEMENTS,
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn setup_report_escrows_and_releases_once_on_sqlite() {
    walk_on(Backend::Sqlite, walk_setup_report, SETUP_REPORT_STATEMENTS).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn setup_report_escrows_and_releases_once_on_postgres() {
    walk_on(
        Backend::Postgres,
        walk_setup_report,
        SETUP_REPORT_STATEMENTS,
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn release_commits_once_on_sqlite() {
    walk_on(Backend::Sqlite, walk_release, RELEASE_STATEMENTS).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn release_commits_once_on_postgres() {
    walk_on(Backend::Postgres, walk_release, RELEASE_STATEMENTS).await;
}
