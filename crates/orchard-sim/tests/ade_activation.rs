//! Automated Device Enrollment of simulated iPads against the real local DEP server (orchard-dep's fake) and a
//! small MDM endpoint in this file, over real TLS on ephemeral ports: the endpoint verifies the posted
//! MachineInfo with `MachineInfoVerifier` (trusting a test Apple device CA), answers an enrollment profile or
//! the 403 software-update answer, runs SCEP with orchard-pki's CA, records check-ins and hands out commands.
//! The device answers are checked against Apple's YAML.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::VecDeque;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use axum::body::Bytes;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use axum::Router;
use hyper_util::rt::{TokioExecutor, TokioIo};
use orchard_dep::fake::{FakeDepConfig, FakeDepServer};
use orchard_dep::{
    AdeProfile, BypassCode, DepClient, DepError, MachineInfoVerifier, SoftwareUpdateRequired,
    VerifiedMachineInfo,
};
use orchard_pki::{CertificateAuthority, Identity};
use orchard_protocol::checkin::{decode_checkin, CheckinMessage};
use orchard_protocol::commands::{Command, SettingsItem};
use orchard_protocol::profile::sample_profile;
use orchard_protocol::report::{decode_report, CommandReport, ReportStatus};
use orchard_sim::{
    Activation, AppleDeviceCa, DepActivation, SimConfig, SimDevice, SimError,
    MACHINE_INFO_CONTENT_TYPE,
};
use orchard_types::{Clock, CommandUuid, SerialNumber, SystemClock};
use plist::{Dictionary, Value};
use serde_yaml::Value as Yaml;
use tokio::net::TcpListener;

// ----- a small MDM server -----

/// How the enrollment endpoint answers a MachineInfo that verified.
#[derive(Clone, Copy, PartialEq)]
enum EnrollAnswer {
    Profile,
    /// 200 with a web page instead of a profile.
    HtmlPage,
}

struct PostedMachineInfo {
    content_type: String,
    body: Vec<u8>,
    verified: Result<VerifiedMachineInfo, String>,
}

struct MdmState {
    base_url: String,
    ca: CertificateAuthority,
    profile_signer: Identity,
    verifier: MachineInfoVerifier,
    /// Devices below this OS version get the 403 software-update answer.
    minimum_os: Option<String>,
    answer: EnrollAnswer,
    posted: Vec<PostedMachineInfo>,
    /// Raw check-in bodies, in order.
    checkins: Vec<Vec<u8>>,
    queue: VecDeque<Vec<u8>>,
    reports: Vec<Vec<u8>>,
}

type Shared = Arc<Mutex<MdmState>>;

struct Mdm {
    state: Shared,
    base_url: String,
    ca_der: Vec<u8>,
    ca_pem: Vec<u8>,
}

impl Mdm {
    /// Starts the endpoint; it trusts MachineInfo signed under `apple_root_der`.
    async fn start(apple_root_der: &[u8]) -> Self {
        orchard_sim::install_crypto_provider();
        let now = SystemClock.now();
        let ca = CertificateAuthority::generate("Test Orchard CA", now, 30).unwrap();
        let tls_identity = ca
            .issue_tls_server(
                &["localhost".to_owned()],
                &[IpAddr::V4(Ipv4Addr::LOCALHOST)],
                now,
                30,
            )
            .unwrap();
        let profile_signer = ca
            .issue_signing_identity("Test Orchard profile signing", now, 30)
            .unwrap();
        let listener = TcpListener::bind(SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 0))
            .await
            .unwrap();
        let base_url = format!(
            "https://127.0.0.1:{}",
            listener.local_addr().unwrap().port()
        );
        let state = Arc::new(Mutex::new(MdmState {
            base_url: base_url.clone(),
            ca: ca.clone(),
            profile_signer,
            verifier: MachineInfoVerifier::new(&[apple_root_der.to_vec()]).unwrap(),
            minimum_os: None,
            answer: EnrollAnswer::Profile,
            posted: Vec::new(),
            checkins: Vec::new(),
            queue: VecDeque::new(),
            reports: Vec::new(),
        }));
        let app = Router::new()
            .route("/enroll/dep", post(enroll_dep))
            .route("/scep", get(scep_get).post(scep_post))
            .route("/checkin", put(checkin))
            .route("/mdm", put(command_session))
            .with_state(state.clone());

        let key_der = tls_identity.private_key().private_key_to_pkcs8().unwrap();
        let tls = rustls::ServerConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(
            vec![rustls::pki_types::CertificateDer::from(
                tls_identity.cert_der(),
            )],
            rustls::pki_types::PrivateKeyDer::Pkcs8(key_der.into()),
        )
        .unwrap();
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(tls));
        tokio::spawn(async move {
            while let Ok((tcp, _)) = listener.accept().await {
                let acceptor = acceptor.clone();
                let app = app.clone();
                tokio::spawn(async move {
                    let Ok(stream) = acceptor.accept(tcp).await else {
                        return;
                    };
                    let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                        .serve_connection(
                            TokioIo::new(stream),
                            hyper_util::service::TowerToHyperService::new(app),
                        )
                        .await;
                });
            }
        });
        Mdm {
            state,
            base_url,
            ca_der: ca.cert_der(),
            ca_pem: ca.cert_pem(),
        }
    }

    fn enroll_url(&self) -> String {
        format!("{}/enroll/dep", self.base_url)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, MdmState> {
        self.state.lock().unwrap()
    }

    fn queue(&self, command: &Command) -> CommandUuid {
        let uuid = CommandUuid::new_random();
        self.lock().queue.push_back(command.encode(&uuid));
        uuid
    }

    fn checkin_messages(&self) -> Vec<CheckinMessage> {
        self.lock()
            .checkins
            .iter()
            .map(|b| decode_checkin(b).unwrap())
            .collect()
    }

    fn report_for(&self, uuid: &CommandUuid) -> CommandReport {
        self.lock()
            .reports
            .iter()
            .map(|r| decode_report(r).unwrap())
            .find(|r| r.command_uuid.as_ref() == Some(uuid))
            .unwrap_or_else(|| panic!("no report for {uuid:?}"))
    }
}

fn content_type(headers: &HeaderMap) -> String {
    headers
        .get(axum::http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned()
}

async fn enroll_dep(State(shared): State<Shared>, headers: HeaderMap, body: Bytes) -> Response {
    let mut state = shared.lock().unwrap();
    let verified = state.verifier.verify(&body).map_err(|e| e.to_string());
    state.posted.push(PostedMachineInfo {
        content_type: content_type(&headers),
        body: body.to_vec(),
        verified: verified.clone(),
    });
    let info = match verified {
        // The signer must be the device the MachineInfo names.
        Ok(v) if v.signer_common_name.as_deref() == Some(v.info.udid.as_str()) => v.info,
        Ok(_) => return (StatusCode::FORBIDDEN, "signer is not the device").into_response(),
        Err(e) => return (StatusCode::FORBIDDEN, e).into_response(),
    };
    if let Some(minimum) = &state.minimum_os {
        if info.requires_update_to(minimum) {
            return (
                StatusCode::FORBIDDEN,
                [(
                    axum::http::header::CONTENT_TYPE,
                    SoftwareUpdateRequired::CONTENT_TYPE,
                )],
                SoftwareUpdateRequired::new(minimum.clone()).to_json(),
            )
                .into_response();
        }
    }
    if state.answer == EnrollAnswer::HtmlPage {
        return (
            [(axum::http::header::CONTENT_TYPE, "text/html")],
            "<html>sign in</html>",
        )
            .into_response();
    }
    let mut profile = sample_profile();
    profile.root_ca_der = Some(state.ca.cert_der());
    profile.scep.url = format!("{}/scep", state.base_url);
    profile.scep.ca_fingerprint = Some(
        openssl::hash::hash(openssl::hash::MessageDigest::sha256(), &state.ca.cert_der())
            .unwrap()
            .to_vec(),
    );
    profile.mdm.server_url = format!("{}/mdm", state.base_url);
    profile.mdm.check_in_url = format!("{}/checkin", state.base_url);
    let signed =
        orchard_pki::signature::sign_profile(&profile.to_plist(), &state.profile_signer, &[])
            .unwrap();
    (
        [(
            axum::http::header::CONTENT_TYPE,
            "application/x-apple-aspen-config",
        )],
        signed,
    )
        .into_response()
}

#[derive(serde::Deserialize)]
struct ScepQuery {
    operation: String,
}

async fn scep_get(State(shared): State<Shared>, Query(q): Query<ScepQuery>) -> Response {
    let state = shared.lock().unwrap();
    match q.operation.as_str() {
        "GetCACaps" => "POSTPKIOperation\nSHA-256\nAES\nSCEPStandard\n".into_response(),
        "GetCACert" => (
            [(
                axum::http::header::CONTENT_TYPE,
                "application/x-x509-ca-cert",
            )],
            state.ca.cert_der(),
        )
            .into_response(),
        _ => StatusCode::BAD_REQUEST.into_response(),
    }
}

async fn scep_post(State(shared): State<Shared>, body: Bytes) -> Response {
    let state = shared.lock().unwrap();
    let request = match orchard_pki::scep::decode_pki_message(&state.ca, &body) {
        Ok(r) => r,
        Err(e) => return (StatusCode::BAD_REQUEST, e.to_string()).into_response(),
    };
    let issued =
        orchard_pki::scep::issue_certificate(&state.ca, &request, SystemClock.now(), 30).unwrap();
    let reply = orchard_pki::scep::cert_rep_success(&state.ca, &request, &issued).unwrap();
    (
        [(
            axum::http::header::CONTENT_TYPE,
            "application/x-pki-message",
        )],
        reply,
    )
        .into_response()
}

fn signature_ok(state: &MdmState, headers: &HeaderMap, body: &[u8]) -> bool {
    headers
        .get("Mdm-Signature")
        .and_then(|v| v.to_str().ok())
        .map(|sig| {
            orchard_pki::signature::verify_mdm_signature(sig, body, &state.ca, SystemClock.now())
                .is_ok()
        })
        .unwrap_or(false)
}

async fn checkin(State(shared): State<Shared>, headers: HeaderMap, body: Bytes) -> Response {
    let mut state = shared.lock().unwrap();
    if !signature_ok(&state, &headers, &body) {
        return StatusCode::UNAUTHORIZED.into_response();
    }
    state.checkins.push(body.to_vec());
    StatusCode::OK.into_response()
}

async fn command_session(
    State(shared): State<Shared>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let mut state = shared.lock().unwrap();
    if !signature_ok(&state, &headers, &body) {
        return StatusCode::UNAUTHORIZED.into_response();
    }
    let report = decode_report(&body).unwrap();
    if report.status != ReportStatus::Idle {
        state.reports.push(body.to_vec());
    }
    match state.queue.pop_front() {
        Some(command) => command.into_response(),
        None => StatusCode::OK.into_response(),
    }
}

// ----- the DEP side -----

struct Dep {
    server: FakeDepServer,
    client: DepClient,
}

impl Dep {
    async fn start() -> Self {
        let server = FakeDepServer::start(FakeDepConfig::default())
            .await
            .unwrap();
        let client = DepClient::new(
            server.client_config(),
            server.server_token(),
            Arc::new(SystemClock),
        )
        .unwrap();
        Dep { server, client }
    }

    /// Adds the devices to the organisation and assigns them `profile`.
    async fn assign(&self, devices: &[&SimDevice], mut profile: AdeProfile) {
        let serials: Vec<SerialNumber> = devices
            .iter()
            .map(|d| SerialNumber::parse(&d.state.serial_number).unwrap())
            .collect();
        self.server.add_devices(&serials);
        profile.devices = serials;
        self.client.define_profile(&profile).await.unwrap();
    }

    fn activation(&self) -> DepActivation {
        DepActivation::for_server(&self.server)
    }
}

fn ade_profile(mdm: &Mdm, await_configured: bool) -> AdeProfile {
    AdeProfile {
        url: Some(mdm.enroll_url()),
        await_device_configured: Some(await_configured),
        is_mdm_removable: Some(false),
        department: Some("Physics".into()),
        ..AdeProfile::new("Physics iPads")
    }
}

/// A factory-fresh iPad that trusts the MDM's CA and carries an identity from `apple`.
fn new_ipad(apple: &AppleDeviceCa, mdm_ca_pem: Option<&[u8]>) -> SimDevice {
    let mut device = SimDevice::new_random(&SimConfig {
        ca_pem: mdm_ca_pem.map(<[u8]>::to_vec),
        ..SimConfig::default()
    });
    let identity = apple
        .issue(&device.state.serial_number, &device.state.udid)
        .unwrap();
    device.set_apple_identity(&identity).unwrap();
    device
}

// ----- Apple's YAML -----

fn apple_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../orchard-protocol/testdata/apple/mdm")
}

fn load_yaml(relative: &str) -> Yaml {
    let path = apple_dir().join(relative);
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_yaml::from_str(&text).unwrap()
}

fn type_matches(ty: &str, v: &Value) -> bool {
    match ty {
        "<string>" => matches!(v, Value::String(_)),
        "<integer>" => matches!(v, Value::Integer(_)),
        "<real>" => matches!(v, Value::Real(_)),
        "<boolean>" => matches!(v, Value::Boolean(_)),
        "<data>" => matches!(v, Value::Data(_)),
        "<date>" => matches!(v, Value::Date(_)),
        "<array>" => matches!(v, Value::Array(_)),
        "<dictionary>" => matches!(v, Value::Dictionary(_)),
        "<any>" => true,
        _ => false,
    }
}

/// Checks `dict` against a YAML key list: every key defined, every required key present, types as
/// documented, recursing into documented subkeys. Apple types `Settings` as a dictionary while the device
/// answers an array of such dictionaries (one per item): array elements are checked against the subkeys.
fn check_keys(
    dict: &Dictionary,
    specs: &[Yaml],
    path: &str,
    check_required: bool,
    errors: &mut Vec<String>,
) {
    if let [only] = specs {
        if only["key"].as_str().is_some_and(|k| k.starts_with("ANY")) {
            return;
        }
    }
    for (key, value) in dict {
        let Some(spec) = specs.iter().find(|s| s["key"].as_str() == Some(key)) else {
            errors.push(format!("{path}.{key}: not defined by Apple's YAML"));
            continue;
        };
        let ty = spec["type"].as_str().unwrap_or_default();
        let subkeys = spec["subkeys"].as_sequence().cloned().unwrap_or_default();
        match value {
            Value::Array(items) if ty == "<dictionary>" => {
                for (i, item) in items.iter().enumerate() {
                    match item.as_dictionary() {
                        Some(d) => check_keys(
                            d,
                            &subkeys,
                            &format!("{path}.{key}[{i}]"),
                            check_required,
                            errors,
                        ),
                        None => errors.push(format!("{path}.{key}[{i}]: not a dictionary")),
                    }
                }
            }
            Value::Dictionary(d) if ty == "<dictionary>" && !subkeys.is_empty() => {
                check_keys(
                    d,
                    &subkeys,
                    &format!("{path}.{key}"),
                    check_required,
                    errors,
                );
            }
            v if !type_matches(ty, v) => {
                errors.push(format!("{path}.{key}: expected {ty}, got {v:?}"))
            }
            _ => {}
        }
    }
    for spec in specs.iter().filter(|_| check_required) {
        let key = spec["key"].as_str().unwrap_or_default();
        if spec["presence"].as_str() == Some("required") && !dict.contains_key(key) {
            errors.push(format!("{path}.{key}: required key missing"));
        }
    }
}

/// The report's result keys checked against the command YAML's `responsekeys`.
fn assert_response_matches_yaml(report: &CommandReport, yaml_file: &str) {
    let doc = load_yaml(&format!("commands/{yaml_file}"));
    let specs = doc["responsekeys"]
        .as_sequence()
        .cloned()
        .unwrap_or_default();
    let mut body = report.body.clone();
    for envelope in ["UDID", "Status", "CommandUUID", "ErrorChain", "RequestType"] {
        body.remove(envelope);
    }
    let mut errors = Vec::new();
    check_keys(&body, &specs, yaml_file, true, &mut errors);
    assert!(errors.is_empty(), "{errors:#?}");
}

// ----- tests -----

#[tokio::test]
async fn ade_enrollment_awaits_configuration_and_answers_like_a_supervised_ipad() {
    let apple = AppleDeviceCa::generate().unwrap();
    let mdm = Mdm::start(&apple.root_der()).await;
    let dep = Dep::start().await;
    let mut device = new_ipad(&apple, Some(&mdm.ca_pem));
    dep.assign(&[&device], ade_profile(&mdm, true)).await;

    let Activation::Enrolled(enrollment) = device.activate(&dep.activation()).await.unwrap() else {
        panic!("the device is assigned")
    };
    assert!(enrollment.awaiting_configuration);
    assert!(!enrollment.multi_user);
    assert_eq!(enrollment.enrollment_url, mdm.enroll_url());
    assert!(enrollment.os_updates.is_empty());
    assert!(device.state.enrolled);
    assert!(device.is_awaiting_configuration());
    let assignment = device.dep_assignment().unwrap();
    assert!(assignment.await_device_configured);
    assert_eq!(assignment.department.as_deref(), Some("Physics"));
    let serial = SerialNumber::parse(&device.state.serial_number).unwrap();
    assert_eq!(
        dep.server.device(&serial).unwrap().profile_status,
        Some(orchard_dep::ProfileStatus::Pushed)
    );

    // The MachineInfo: signed attached CMS under the Apple test root, naming this device.
    let (posted_body, verified) = {
        let state = mdm.lock();
        assert_eq!(state.posted.len(), 1);
        let posted = &state.posted[0];
        assert_eq!(posted.content_type, MACHINE_INFO_CONTENT_TYPE);
        (posted.body.clone(), posted.verified.clone().unwrap())
    };
    let info = &verified.info;
    assert_eq!(info.udid.as_str(), device.state.udid);
    assert_eq!(info.serial, serial);
    assert_eq!(info.product, "iPad13,18");
    assert_eq!(info.version, "22B83");
    assert_eq!(info.os_version.as_deref(), Some("18.1"));
    assert_eq!(info.language.as_deref(), Some("en"));
    assert!(info.mdm_can_request_software_update);
    assert_eq!(verified.signer_common_name.as_deref(), Some(device.udid()));
    assert_eq!(
        verified.signer_cert_der,
        device.apple_identity().unwrap().identity.cert_der()
    );
    // The same body with one byte of the plist changed no longer verifies.
    let verifier = MachineInfoVerifier::new(&[apple.root_der()]).unwrap();
    let at = posted_body
        .windows(serial.as_str().len())
        .position(|w| w == serial.as_str().as_bytes())
        .unwrap();
    let mut tampered = posted_body.clone();
    tampered[at] = if tampered[at] == b'0' { b'1' } else { b'0' };
    assert!(matches!(
        verifier.verify(&tampered),
        Err(DepError::MachineInfoSignature(_))
    ));
    // A verifier that trusts another root refuses the genuine message.
    let stranger = AppleDeviceCa::generate().unwrap();
    assert!(MachineInfoVerifier::new(&[stranger.root_der()])
        .unwrap()
        .verify(&posted_body)
        .is_err());

    // Authenticate, then TokenUpdate with AwaitingConfiguration = true (Apple's tokenupdate.yaml key).
    let messages = mdm.checkin_messages();
    assert!(matches!(messages[0], CheckinMessage::Authenticate(_)));
    let CheckinMessage::TokenUpdate(token_update) = &messages[1] else {
        panic!("{messages:?}")
    };
    assert!(token_update.awaiting_configuration);
    assert!(token_update.unlock_token.is_some());
    let raw_token_update = mdm.lock().checkins[1].clone();
    let raw = orchard_protocol::parse_dictionary(&raw_token_update).unwrap();
    assert_eq!(
        raw.get("AwaitingConfiguration"),
        Some(&Value::Boolean(true))
    );
    let token_yaml = load_yaml("checkin/tokenupdate.yaml");
    // Every key is Apple's with Apple's type (required-ness differs per platform and enrollment type, so
    // the keys an iPad on the device channel must send are checked by name).
    let mut errors = Vec::new();
    check_keys(
        &raw,
        token_yaml["payloadkeys"].as_sequence().unwrap(),
        "TokenUpdate",
        false,
        &mut errors,
    );
    assert!(errors.is_empty(), "{errors:#?}");
    for key in ["MessageType", "Topic", "UDID", "Token", "PushMagic"] {
        assert!(raw.contains_key(key), "{key}");
    }

    // Setup Assistant: name the iPad, tell it who owns it, read the bypass code, release it.
    let bypass_code = device.activation_lock_bypass_code().unwrap().to_owned();
    assert!(
        orchard_sim::state::is_bypass_code_format(&bypass_code),
        "{bypass_code}"
    );
    let settings = mdm.queue(&Command::Settings {
        settings: vec![
            SettingsItem::DeviceName {
                device_name: "Physics Lab 12".into(),
            },
            SettingsItem::OrganizationInfo {
                organization_name: "Example University".into(),
                organization_short_name: None,
                address: Some("1 Campus Road".into()),
                phone: Some("+49 30 0000000".into()),
                email: Some("it@example.edu".into()),
                magic: Some("magic-1".into()),
            },
        ],
    });
    let alb = mdm.queue(&Command::ActivationLockBypassCode);
    let configured = mdm.queue(&Command::DeviceConfigured);
    let info_uuid = mdm.queue(&Command::DeviceInformation {
        queries: vec![
            "DeviceName".into(),
            "AwaitingConfiguration".into(),
            "IsSupervised".into(),
            "OrganizationInfo".into(),
        ],
    });
    let summary = device.poll().await.unwrap();
    assert_eq!(summary.handled.len(), 4);

    let report = mdm.report_for(&settings);
    assert_eq!(report.status, ReportStatus::Acknowledged);
    assert_response_matches_yaml(&report, "settings.yaml");
    let items = report.body["Settings"].as_array().unwrap();
    assert_eq!(items.len(), 2);
    for item in items {
        assert_eq!(
            item.as_dictionary().unwrap()["Status"].as_string(),
            Some("Acknowledged")
        );
    }
    assert_eq!(device.device_name(), "Physics Lab 12");
    let org = device.state.organization_info.clone().unwrap();
    assert_eq!(org.name, "Example University");
    assert_eq!(org.magic.as_deref(), Some("magic-1"));

    let report = mdm.report_for(&alb);
    assert_eq!(report.status, ReportStatus::Acknowledged);
    assert_response_matches_yaml(&report, "device.activationlock.bypasscode.yaml");
    let reported = report.body["ActivationLockBypassCode"].as_string().unwrap();
    assert_eq!(reported, bypass_code);
    // The server reads it with orchard-dep's codec (and derives the escrow key from it).
    let parsed = BypassCode::parse(reported).unwrap();
    assert_eq!(parsed.code().expose(), reported);

    let report = mdm.report_for(&configured);
    assert_eq!(report.status, ReportStatus::Acknowledged);
    assert_response_matches_yaml(&report, "device.configured.yaml");
    assert!(!device.is_awaiting_configuration());
    assert_eq!(device.device_configured_count(), 1);

    let report = mdm.report_for(&info_uuid);
    assert_response_matches_yaml(&report, "information.device.yaml");
    let responses = report.body["QueryResponses"].as_dictionary().unwrap();
    assert_eq!(responses["DeviceName"].as_string(), Some("Physics Lab 12"));
    assert_eq!(responses["AwaitingConfiguration"].as_boolean(), Some(false));
    assert_eq!(responses["IsSupervised"].as_boolean(), Some(true));
    assert_eq!(
        responses["OrganizationInfo"].as_dictionary().unwrap()["OrganizationMagic"].as_string(),
        Some("magic-1")
    );

    // A later TokenUpdate no longer awaits.
    device.send_token_update().await.unwrap();
    let Some(CheckinMessage::TokenUpdate(later)) = mdm.checkin_messages().pop() else {
        panic!("a TokenUpdate")
    };
    assert!(!later.awaiting_configuration);

    // Erase: a new bypass code, back in Setup Assistant; activation enrolls it again, awaiting again.
    let erase = mdm.queue(&Command::EraseDevice {
        preserve_data_plan: None,
        disallow_proximity_setup: None,
        return_to_service: None,
    });
    device.poll().await.unwrap();
    assert_eq!(mdm.report_for(&erase).status, ReportStatus::Acknowledged);
    assert!(!device.state.enrolled);
    assert!(device.dep_assignment().is_none());
    let after_erase = device.activation_lock_bypass_code().unwrap().to_owned();
    assert_ne!(after_erase, bypass_code);
    assert!(orchard_sim::state::is_bypass_code_format(&after_erase));
    assert_eq!(device.device_name(), "iPad");
    assert!(matches!(
        device.activate(&dep.activation()).await.unwrap(),
        Activation::Enrolled(_)
    ));
    assert!(device.is_awaiting_configuration());
    let Some(CheckinMessage::TokenUpdate(again)) = mdm.checkin_messages().pop() else {
        panic!("a TokenUpdate")
    };
    assert!(again.awaiting_configuration);
    assert_eq!(mdm.lock().posted.len(), 2);

    // ClearActivationLockBypassCode (Apple's YAML has no response keys): the code is gone.
    let clear = mdm.queue(&Command::ClearActivationLockBypassCode);
    let ask = mdm.queue(&Command::ActivationLockBypassCode);
    device.poll().await.unwrap();
    assert_response_matches_yaml(
        &mdm.report_for(&clear),
        "device.activationlock.clearbypasscode.yaml",
    );
    assert!(device.activation_lock_bypass_code().is_none());
    assert!(!mdm
        .report_for(&ask)
        .body
        .contains_key("ActivationLockBypassCode"));
}

#[tokio::test]
async fn an_unassigned_device_gets_not_assigned_and_posts_nothing() {
    let apple = AppleDeviceCa::generate().unwrap();
    let mdm = Mdm::start(&apple.root_der()).await;
    let dep = Dep::start().await;
    let assigned = new_ipad(&apple, Some(&mdm.ca_pem));
    let mut other = new_ipad(&apple, Some(&mdm.ca_pem));
    dep.assign(&[&assigned], ade_profile(&mdm, false)).await;
    // In the organisation but without a profile, and not in it at all: both not assigned.
    dep.server
        .add_devices(&[SerialNumber::parse(&other.state.serial_number).unwrap()]);
    assert_eq!(
        other.activate(&dep.activation()).await.unwrap(),
        Activation::NotAssigned
    );
    let mut stranger = new_ipad(&apple, Some(&mdm.ca_pem));
    assert_eq!(
        stranger.activate(&dep.activation()).await.unwrap(),
        Activation::NotAssigned
    );
    assert!(!other.state.enrolled && other.dep_assignment().is_none());
    assert!(!other.is_awaiting_configuration());
    assert!(mdm.lock().posted.is_empty());
}

#[tokio::test]
async fn software_update_required_is_typed_and_the_device_updates_and_retries() {
    let apple = AppleDeviceCa::generate().unwrap();
    let mdm = Mdm::start(&apple.root_der()).await;
    mdm.lock().minimum_os = Some("18.2".into());
    let dep = Dep::start().await;
    let mut device = new_ipad(&apple, Some(&mdm.ca_pem));
    dep.assign(&[&device], ade_profile(&mdm, false)).await;

    let before = device.state.clone();
    match device.activate(&dep.activation()).await {
        Err(SimError::SoftwareUpdateRequired {
            os_version,
            build_version,
        }) => {
            assert_eq!(os_version, "18.2");
            assert_eq!(build_version, None);
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(device.state, before, "a refused activation changes nothing");
    assert!(mdm.checkin_messages().is_empty());

    // The updating activation installs 18.2 and enrolls; without await the device leaves Setup Assistant.
    let Activation::Enrolled(enrollment) = device
        .activate_updating(
            &dep.activation(),
            orchard_sim::MAX_OS_UPDATES_PER_ACTIVATION,
        )
        .await
        .unwrap()
    else {
        panic!("assigned")
    };
    assert_eq!(enrollment.os_updates, vec!["18.2".to_owned()]);
    assert!(!enrollment.awaiting_configuration);
    assert!(!device.is_awaiting_configuration());
    assert_eq!(device.state.os_version, "18.2");
    let last = mdm.lock().posted.last().unwrap().verified.clone().unwrap();
    assert_eq!(last.info.os_version.as_deref(), Some("18.2"));
    assert_eq!(last.info.version, device.state.build_version);
    let messages = mdm.checkin_messages();
    let CheckinMessage::TokenUpdate(token_update) = &messages[1] else {
        panic!("{messages:?}")
    };
    assert!(!token_update.awaiting_configuration);

    // A server that asks for a version the device cannot go up to keeps the typed error.
    mdm.lock().minimum_os = Some("99.0".into());
    let mut stuck = new_ipad(&apple, Some(&mdm.ca_pem));
    dep.assign(&[&stuck], ade_profile(&mdm, false)).await;
    assert!(matches!(
        stuck.activate_updating(&dep.activation(), 0).await,
        Err(SimError::SoftwareUpdateRequired { .. })
    ));
    assert_eq!(stuck.state.os_version, "18.1");
}

#[tokio::test]
async fn refusals_and_bad_answers_are_typed_errors() {
    let apple = AppleDeviceCa::generate().unwrap();
    let mdm = Mdm::start(&apple.root_der()).await;
    let dep = Dep::start().await;

    // An identity from another "Apple": the server cannot verify it and refuses with a plain 403.
    let impostor_ca = AppleDeviceCa::generate().unwrap();
    let mut impostor = new_ipad(&impostor_ca, Some(&mdm.ca_pem));
    // No identity at all: refused before any request.
    let mut bare = SimDevice::new_random(&SimConfig {
        ca_pem: Some(mdm.ca_pem.clone()),
        ..SimConfig::default()
    });
    let mut html = new_ipad(&apple, Some(&mdm.ca_pem));
    dep.assign(&[&impostor, &bare, &html], ade_profile(&mdm, true))
        .await;

    match impostor.activate(&dep.activation()).await {
        Err(SimError::Status { status, body, .. }) => {
            assert_eq!(status, 403);
            assert!(body.contains("trusted root"), "{body}");
        }
        other => panic!("{other:?}"),
    }
    assert!(mdm.lock().posted[0].verified.is_err());
    assert!(!impostor.state.enrolled);

    assert!(matches!(
        bare.activate(&dep.activation()).await,
        Err(SimError::NoAppleIdentity)
    ));
    assert_eq!(mdm.lock().posted.len(), 1);

    mdm.lock().answer = EnrollAnswer::HtmlPage;
    let before = html.state.clone();
    assert!(matches!(
        html.activate(&dep.activation()).await,
        Err(SimError::ContentType { .. })
    ));
    assert_eq!(html.state, before);

    // Already enrolled: ADE happens in Setup Assistant only.
    mdm.lock().answer = EnrollAnswer::Profile;
    html.activate(&dep.activation()).await.unwrap();
    assert!(matches!(
        html.activate(&dep.activation()).await,
        Err(SimError::InvalidArgument(_))
    ));
}

#[tokio::test]
async fn anchor_certs_alone_make_the_server_trusted_and_multi_user_is_honoured() {
    let apple = AppleDeviceCa::generate().unwrap();
    let mdm = Mdm::start(&apple.root_der()).await;
    let dep = Dep::start().await;
    // No CA configured on these devices.
    let mut pinned = new_ipad(&apple, None);
    let mut untrusting = new_ipad(&apple, None);
    dep.assign(
        &[&pinned],
        AdeProfile {
            anchor_certs: vec![mdm.ca_der.clone()],
            is_multi_user: Some(true),
            ..ade_profile(&mdm, true)
        },
    )
    .await;
    dep.assign(&[&untrusting], ade_profile(&mdm, true)).await;

    let Activation::Enrolled(enrollment) = pinned.activate(&dep.activation()).await.unwrap() else {
        panic!("assigned")
    };
    assert!(enrollment.multi_user);
    assert!(pinned.state.shared_ipad);
    let messages = mdm.checkin_messages();
    let CheckinMessage::TokenUpdate(token_update) = &messages[1] else {
        panic!("{messages:?}")
    };
    assert!(token_update.awaiting_configuration);
    assert!(
        token_update.unlock_token.is_none(),
        "a Shared iPad sends none"
    );
    // Commands go over TLS trusted through the anchors; a Shared iPad refuses bypass code requests.
    let alb = mdm.queue(&Command::ActivationLockBypassCode);
    let configured = mdm.queue(&Command::DeviceConfigured);
    pinned.poll().await.unwrap();
    assert_eq!(mdm.report_for(&alb).status, ReportStatus::Error);
    assert_eq!(
        mdm.report_for(&configured).status,
        ReportStatus::Acknowledged
    );
    assert_eq!(pinned.device_configured_count(), 1);

    assert!(matches!(
        untrusting.activate(&dep.activation()).await,
        Err(SimError::Tls(_))
    ));
    assert_eq!(mdm.lock().posted.len(), 1);
}

#[test]
fn apple_device_ca_issues_verifiable_identities_and_round_trips_on_disk() {
    use openssl::pkey::PKey;
    use openssl::rsa::Rsa;

    let apple = AppleDeviceCa::generate().unwrap();
    let dir = tempfile::tempdir().unwrap();
    apple.save(dir.path()).unwrap();
    let loaded = AppleDeviceCa::load(dir.path()).unwrap();
    assert_eq!(loaded.root_der(), apple.root_der());
    assert_eq!(loaded.device_ca_der(), apple.device_ca_der());
    assert_eq!(
        AppleDeviceCa::load_or_generate(dir.path())
            .unwrap()
            .root_der(),
        apple.root_der()
    );
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(dir.path().join("apple-device-ca.key.pem"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
    }
    // A device CA that the root did not issue is refused.
    let other = AppleDeviceCa::generate().unwrap();
    let mixed = tempfile::tempdir().unwrap();
    apple.save(mixed.path()).unwrap();
    std::fs::write(mixed.path().join("apple-root.pem"), other.root_pem()).unwrap();
    assert!(AppleDeviceCa::load(mixed.path()).is_err());
    assert!(AppleDeviceCa::load(&mixed.path().join("missing")).is_err());

    // P-256 (default) and RSA identities, both verifiable by a server that trusts the loaded root.
    let verifier = MachineInfoVerifier::new(&[loaded.root_der()]).unwrap();
    let mut device = SimDevice::new_random(&SimConfig::default());
    let udid = device.state.udid.clone();
    let serial = device.state.serial_number.clone();
    for identity in [
        loaded.issue(&serial, &udid).unwrap(),
        loaded
            .issue_with_key(
                &serial,
                &udid,
                PKey::from_rsa(Rsa::generate(2048).unwrap()).unwrap(),
            )
            .unwrap(),
    ] {
        device.set_apple_identity(&identity).unwrap();
        let verified = verifier
            .verify(&device.signed_machine_info().unwrap())
            .unwrap();
        assert_eq!(verified.info, device.machine_info().unwrap());
        assert_eq!(verified.signer_common_name.as_deref(), Some(udid.as_str()));
    }
    // The identity survives the state file and an erase (it is the hardware's).
    let restored = SimDevice::from_state(
        serde_json::from_str(&serde_json::to_string(&device.state).unwrap()).unwrap(),
    );
    assert_eq!(
        restored.apple_identity().unwrap().identity.cert_der(),
        device.apple_identity().unwrap().identity.cert_der()
    );
    device.state.wipe();
    assert!(device.apple_identity().is_ok());
    assert!(loaded.issue("", &udid).is_err());
}

/// The YAML checker used above catches what it must: an undefined key, a wrong type, a missing required key.
#[test]
fn the_yaml_checker_catches_mistakes() {
    let settings = load_yaml("commands/settings.yaml");
    let specs = settings["responsekeys"].as_sequence().unwrap();
    let mut item = Dictionary::new();
    item.insert("Item".into(), Value::String("DeviceName".into()));
    item.insert("Status".into(), Value::String("Acknowledged".into()));
    let mut body = Dictionary::new();
    body.insert(
        "Settings".into(),
        Value::Array(vec![Value::Dictionary(item)]),
    );
    let mut errors = Vec::new();
    check_keys(&body, specs, "Settings", true, &mut errors);
    assert_eq!(errors.len(), 1, "{errors:?}");
    assert!(errors[0].contains("Item"));

    let bypass = load_yaml("commands/device.activationlock.bypasscode.yaml");
    let specs = bypass["responsekeys"].as_sequence().unwrap();
    let mut body = Dictionary::new();
    body.insert("ActivationLockBypassCode".into(), Value::Integer(7.into()));
    let mut errors = Vec::new();
    check_keys(&body, specs, "ALBC", true, &mut errors);
    assert_eq!(errors.len(), 1, "{errors:?}");
    let mut errors = Vec::new();
    check_keys(&Dictionary::new(), specs, "ALBC", true, &mut errors);
    assert!(errors[0].contains("required key missing"), "{errors:?}");

    let info = load_yaml("commands/information.device.yaml");
    assert!(!info["responsekeys"].as_sequence().unwrap().is_empty());
}

/// A fleet activates by serial number: assigned devices enroll, the others are reported not assigned, and
/// the state file keeps identities and ADE state for the next run.
#[tokio::test]
async fn a_fleet_activates_by_serial_and_keeps_its_state() {
    let apple = AppleDeviceCa::generate().unwrap();
    let mdm = Mdm::start(&apple.root_der()).await;
    let dep = Dep::start().await;
    let serials = FakeDepServer::make_serials("SIMF", 1, 3);
    let config = SimConfig {
        ca_pem: Some(mdm.ca_pem.clone()),
        ..SimConfig::default()
    };
    let mut fleet = orchard_sim::Fleet::new();
    fleet
        .add_with_serials(
            &config,
            &serials
                .iter()
                .map(|s| s.as_str().to_owned())
                .collect::<Vec<_>>(),
        )
        .unwrap();
    assert!(fleet
        .add_with_serials(&config, &["not a serial!".to_owned()])
        .is_err());
    assert_eq!(fleet.provision_apple_identities(&apple).unwrap(), 3);
    assert_eq!(fleet.provision_apple_identities(&apple).unwrap(), 0);
    dep.server.add_devices(&serials);
    let profile = AdeProfile {
        devices: serials[..2].to_vec(),
        ..ade_profile(&mdm, true)
    };
    dep.client.define_profile(&profile).await.unwrap();

    let summaries = fleet.activate_all(&dep.activation(), 2, 1).await;
    assert_eq!(summaries.len(), 3);
    for (summary, serial) in summaries.iter().zip(&serials) {
        assert_eq!(summary.serial_number, serial.as_str());
    }
    assert!(matches!(summaries[0].outcome, Ok(Activation::Enrolled(_))));
    assert!(matches!(summaries[1].outcome, Ok(Activation::Enrolled(_))));
    assert_eq!(summaries[2].outcome, Ok(Activation::NotAssigned));
    assert_eq!(mdm.lock().posted.len(), 2);

    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("fleet.json");
    fleet.save(&path).unwrap();
    let mut loaded = orchard_sim::Fleet::load(&path).unwrap();
    for (a, b) in fleet.devices.iter().zip(&loaded.devices) {
        assert_eq!(a.state, b.state);
    }
    assert!(loaded.devices[0].is_awaiting_configuration());
    // The loaded devices answer commands over their restored trust.
    let configured = mdm.queue(&Command::DeviceConfigured);
    let summaries = loaded.poll_all(1).await;
    assert!(summaries.iter().all(|s| s.error.is_none()), "{summaries:?}");
    assert_eq!(
        mdm.report_for(&configured).status,
        ReportStatus::Acknowledged
    );
    assert_eq!(
        loaded
            .devices
            .iter()
            .map(SimDevice::device_configured_count)
            .sum::<u32>(),
        1
    );
}

/// `orchard-sim activate`: the binary creates the device CA, adds devices by serial, activates them and
/// writes the fleet; the server trusts the root it wrote.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_activate_command_enrolls_devices_by_serial() {
    let dir = tempfile::tempdir().unwrap();
    let ca_dir = dir.path().join("apple-ca");
    // The CA the binary will load (as if from an earlier run), so the MDM can trust its root up front.
    let apple = AppleDeviceCa::load_or_generate(&ca_dir).unwrap();
    let mdm = Mdm::start(&apple.root_der()).await;
    let dep = Dep::start().await;
    let serials = FakeDepServer::make_serials("SIMC", 1, 2);
    dep.server.add_devices(&serials);
    let profile = AdeProfile {
        devices: vec![serials[0].clone()],
        ..ade_profile(&mdm, true)
    };
    dep.client.define_profile(&profile).await.unwrap();
    let dep_root = dir.path().join("dep-root.pem");
    let dep_root_pem = openssl::x509::X509::from_der(&dep.server.root_certificate_der().unwrap())
        .unwrap()
        .to_pem()
        .unwrap();
    std::fs::write(&dep_root, dep_root_pem).unwrap();
    let mdm_ca = dir.path().join("mdm-ca.pem");
    std::fs::write(&mdm_ca, &mdm.ca_pem).unwrap();
    let state = dir.path().join("fleet.json");

    let run = |serial_args: Vec<String>| {
        let mut command = tokio::process::Command::new(env!("CARGO_BIN_EXE_orchard-sim"));
        command
            .arg("activate")
            .arg("--dep-url")
            .arg(dep.server.base_url())
            .arg("--dep-ca")
            .arg(&dep_root)
            .arg("--device-ca-dir")
            .arg(&ca_dir)
            .arg("--state")
            .arg(&state)
            .arg("--ca")
            .arg(&mdm_ca)
            .args(serial_args)
            .stdin(std::process::Stdio::null());
        command.output()
    };
    let output = run(vec![format!("--serial={},{}", serials[0], serials[1])])
        .await
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(
        stdout.contains(&format!("{} ", serials[0]))
            && stdout.contains("awaiting DeviceConfigured"),
        "{stdout}"
    );
    assert!(stdout.contains("not assigned"), "{stdout}");
    let fleet = orchard_sim::Fleet::load(&state).unwrap();
    assert_eq!(fleet.len(), 2);
    assert!(fleet.devices[0].state.enrolled);
    assert!(!fleet.devices[1].state.enrolled);
    assert_eq!(mdm.lock().posted.len(), 1);

    // A second run retries only the device that is not enrolled (still unassigned).
    let output = run(Vec::new()).await.unwrap();
    assert!(output.status.success());
    assert_eq!(mdm.lock().posted.len(), 1);
    assert_eq!(orchard_sim::Fleet::load(&state).unwrap().len(), 2);

    // A bad serial is a clear error, not a panic.
    let output = run(vec!["--serial=bad serial!".into()]).await.unwrap();
    assert!(!output.status.success());
    assert!(String::from_utf8_lossy(&output.stderr).contains("serial"));
}
