//! End to end for the `orchard` client commands: the real binary talks HTTPS to a real server (started by
//! [`TestServer`]) with ORCHARD_SERVER / ORCHARD_TOKEN / ORCHARD_CA, on SQLite and PostgreSQL. Tables and
//! `--json` output are checked against what the API itself answers; failures must exit non-zero with the
//! API's code and request id on stderr, and the request id must be the one the server recorded.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use anyhow::{ensure, Context, Result};
use orchard_dep::fake::{encrypt_server_token, FakeDepConfig, FakeDepServer, TokenCipher};
use orchard_sim::SimDevice;
use orchard_testkit::apple::AppleDep;
use orchard_testkit::server::TestServer;
use orchard_testkit::Backend;
use serde_json::{json, Value};

/// One run of the binary.
struct Run {
    code: i32,
    stdout: String,
    stderr: String,
}

impl Run {
    fn ok(self) -> Result<Run> {
        ensure!(
            self.code == 0,
            "exit {}\nstdout: {}\nstderr: {}",
            self.code,
            self.stdout,
            self.stderr
        );
        Ok(self)
    }

    fn json(&self) -> Result<Value> {
        serde_json::from_str(&self.stdout)
            .with_context(|| format!("stdout is not JSON: {}", self.stdout))
    }

    /// The value of a `label: value` line of human output.
    fn field(&self, label: &str) -> Option<String> {
        self.stdout.lines().find_map(|l| {
            let (k, v) = l.split_once(':')?;
            (k.trim() == label).then(|| v.trim().to_string())
        })
    }

    /// The request id quoted on stderr (`…, request id <id>)`), which must be a uuid.
    fn request_id(&self) -> Result<String> {
        let (_, rest) = self
            .stderr
            .split_once("request id ")
            .with_context(|| format!("no request id on stderr: {}", self.stderr))?;
        let id: String = rest.chars().take_while(|c| *c != ')').collect();
        uuid::Uuid::parse_str(&id).with_context(|| format!("request id {id:?} is not a uuid"))?;
        Ok(id)
    }
}

struct Cli<'a> {
    server: &'a TestServer,
}

impl Cli<'_> {
    fn run_with(&self, env: &[(&str, &str)], args: &[&str]) -> Result<Run> {
        let mut cmd = self.server.client_command(args)?;
        for (k, v) in env {
            cmd.env(k, v);
        }
        let out = cmd.output()?;
        Ok(Run {
            code: out.status.code().unwrap_or(-1),
            stdout: String::from_utf8(out.stdout)?,
            stderr: String::from_utf8(out.stderr)?,
        })
    }

    fn run(&self, args: &[&str]) -> Result<Run> {
        self.run_with(&[], args)
    }
}

async fn scenario(backend: Backend) -> Result<()> {
    let Some(server) = TestServer::start(backend).await? else {
        return Ok(());
    };
    let cli = Cli { server: &server };

    // Tenants: created in both output styles, listed as a table and as the API's own JSON.
    let created = cli
        .run(&[
            "tenant",
            "create",
            "--name",
            "Department of Physics",
            "--code",
            "phys",
        ])?
        .ok()?;
    let physics = created.field("id").context("no id line")?;
    ensure!(
        created.field("code").as_deref() == Some("phys"),
        "{}",
        created.stdout
    );
    ensure!(
        created.field("name").as_deref() == Some("Department of Physics"),
        "{}",
        created.stdout
    );
    let chemistry = cli
        .run(&[
            "tenant",
            "create",
            "--json",
            "--name",
            "Chemistry",
            "--code",
            "chem",
        ])?
        .ok()?
        .json()?;
    let chemistry = chemistry["id"].as_str().context("tenant id")?.to_string();

    let table = cli.run(&["tenant", "list"])?.ok()?;
    let mut lines = table.stdout.lines();
    let header: Vec<&str> = lines
        .next()
        .context("empty table")?
        .split_whitespace()
        .collect();
    ensure!(
        header == ["ID", "CODE", "NAME", "CREATED"],
        "{}",
        table.stdout
    );
    let rows: Vec<&str> = lines.collect();
    ensure!(rows.len() == 2, "{}", table.stdout);
    ensure!(
        rows.iter().any(|r| r.starts_with(&physics)
            && r.contains(" phys ")
            && r.contains("Department of Physics")),
        "{}",
        table.stdout
    );
    ensure!(
        rows.iter()
            .any(|r| r.starts_with(&chemistry) && r.contains(" chem ")),
        "{}",
        table.stdout
    );
    let listed = cli.run(&["tenant", "list", "--json"])?.ok()?.json()?;
    ensure!(listed == server.get("/api/v1/tenants").await?, "{listed}");

    // An enrollment link: its URL (shown once) is on the server, and a real iPad enrolls with it.
    let link = cli
        .run(&[
            "link",
            "create",
            "--tenant",
            &physics,
            "--max-uses",
            "3",
            "--name",
            "cart 1",
        ])?
        .ok()?;
    let url = link.field("url").context("no url line")?;
    ensure!(url.starts_with(&server.base_url), "{}", link.stdout);
    ensure!(
        link.field("max uses").as_deref() == Some("3"),
        "{}",
        link.stdout
    );
    ensure!(
        link.field("tenant").as_deref() == Some(physics.as_str()),
        "{}",
        link.stdout
    );
    // Global flags may also come before the subcommand.
    let link_json = cli
        .run(&["link", "--json", "create", "--tenant", &chemistry])?
        .ok()?
        .json()?;
    ensure!(link_json["tenant_id"] == chemistry.as_str(), "{link_json}");
    ensure!(link_json["max_uses"].is_null(), "{link_json}");

    // A DEP token: the certificate to upload to ASM comes back and is a real certificate.
    let dir = tempfile::tempdir()?;
    let cert_path = dir.path().join("dep.pem");
    let token = cli
        .run(&[
            "dep",
            "token",
            "create",
            "--name",
            "ASM Physics",
            "--cert-out",
            cert_path.to_str().context("path")?,
        ])?
        .ok()?;
    let dep_token = token.field("id").context("no id line")?;
    openssl::x509::X509::from_pem(&std::fs::read(&cert_path)?).context("certificate written")?;
    let tokens = cli.run(&["dep", "token", "list"])?.ok()?;
    let row = tokens
        .stdout
        .lines()
        .find(|l| l.starts_with(&dep_token))
        .with_context(|| format!("token not listed: {}", tokens.stdout))?;
    ensure!(row.contains("ASM Physics") && row.contains(" no "), "{row}");
    let tokens = cli.run(&["dep", "token", "list", "--json"])?.ok()?.json()?;
    ensure!(tokens["items"][0]["uploaded"] == false, "{tokens}");
    let dep_devices = cli
        .run(&["dep", "devices", "--dep-token", &dep_token, "--json"])?
        .ok()?
        .json()?;
    ensure!(dep_devices["total"] == 0, "{dep_devices}");

    // The push certificate through the API: none yet, then a CSR whose key stays on the server.
    let status = cli.run(&["push-certificate", "status"])?.ok()?;
    ensure!(
        status.field("development topic").as_deref() == Some("yes"),
        "{}",
        status.stdout
    );
    let csr_dir = dir.path().join("csr");
    cli.run(&[
        "push-certificate",
        "csr",
        "--out",
        csr_dir.to_str().context("path")?,
    ])?
    .ok()?;
    openssl::x509::X509Req::from_pem(&std::fs::read(csr_dir.join("push.csr"))?)
        .context("push.csr is a CSR")?;
    ensure!(
        !csr_dir.join("push-request.b64").exists(),
        "no vendor, no signed request"
    );

    // No devices yet.
    let empty = cli.run(&["device", "list"])?.ok()?;
    ensure!(empty.stdout == "no devices\n", "{}", empty.stdout);
    let empty = cli.run(&["device", "list", "--json"])?.ok()?.json()?;
    ensure!(
        empty["total"] == 0 && empty["items"] == json!([]),
        "{empty}"
    );

    // One iPad enrolls with the link the CLI made; the CLI sees it, queues a lock, and lists the command.
    let mut ipad = SimDevice::new_random(&server.sim_config());
    ipad.enroll(&url)
        .await
        .context("enrolling with the CLI's link")?;
    let devices = cli.run(&["device", "list", "--json"])?.ok()?.json()?;
    ensure!(devices["total"] == 1, "{devices}");
    let device = devices["items"][0]["id"]
        .as_str()
        .context("device id")?
        .to_string();
    ensure!(
        devices["items"][0]["tenant_id"] == physics.as_str(),
        "{devices}"
    );
    let table = cli.run(&["device", "list"])?.ok()?;
    ensure!(
        table
            .stdout
            .lines()
            .nth(1)
            .is_some_and(|r| r.starts_with(&device) && r.contains("enrolled")),
        "{}",
        table.stdout
    );
    let shown = cli.run(&["device", "show", &device])?.ok()?;
    ensure!(
        shown.field("udid").as_deref() == Some(ipad.state.udid.as_str()),
        "{}",
        shown.stdout
    );
    let queued = cli
        .run(&[
            "device",
            "command",
            &device,
            "--type",
            "DeviceLock",
            "--json-body",
            r#"{"message":"Return to the physics office"}"#,
            "--json",
        ])?
        .ok()?
        .json()?;
    ensure!(queued["request_type"] == "DeviceLock", "{queued}");
    let uuid = queued["command_uuid"]
        .as_str()
        .context("command uuid")?
        .to_string();
    let history = cli.run(&["device", "commands", &device])?.ok()?;
    ensure!(
        history
            .stdout
            .lines()
            .any(|l| l.starts_with(&uuid) && l.contains("DeviceLock")),
        "{}",
        history.stdout
    );

    // One command for the whole tenant: a dry run counts, then it is queued.
    let bulk = [
        "device",
        "bulk-command",
        "--type",
        "DeviceInformation",
        "--json-body",
        r#"{"queries":["DeviceName"]}"#,
        "--tenant",
        physics.as_str(),
    ];
    let dry = cli.run(&[&bulk[..], &["--dry-run"]].concat())?.ok()?;
    ensure!(
        dry.stdout == "dry run: DeviceInformation would reach 1 device(s); 0 skipped\n",
        "{}",
        dry.stdout
    );
    // Long work shows progress on stderr: plain lines when stderr is not a terminal, none with --json.
    let progress: Vec<&str> = dry.stderr.lines().collect();
    ensure!(
        progress.len() == 2
            && progress[0] == "bulk command (dry run): started"
            && progress[1].starts_with("bulk command (dry run): done in ")
            && progress[1].ends_with(" s"),
        "{}",
        dry.stderr
    );
    let dry_json = cli
        .run(&[&bulk[..], &["--dry-run", "--json"]].concat())?
        .ok()?;
    ensure!(dry_json.stderr.is_empty(), "{}", dry_json.stderr);
    ensure!(dry_json.json()?["affected"] == 1, "{}", dry_json.stdout);
    let queued = cli.run(&bulk)?.ok()?;
    ensure!(
        queued.stdout == "queued DeviceInformation for 1 device(s); 0 skipped\n",
        "{}",
        queued.stdout
    );
    let history = cli
        .run(&["device", "commands", &device, "--json"])?
        .ok()?
        .json()?;
    let infos = history["items"]
        .as_array()
        .context("items")?
        .iter()
        .filter(|c| c["request_type"] == "DeviceInformation" && c["queued_by"].is_string())
        .count();
    ensure!(infos >= 1, "{history}");

    // Tenant details, edited by the operator.
    let edited = cli
        .run(&[
            "tenant",
            "edit",
            &physics,
            "--cost-centre",
            "4711",
            "--contact-email",
            "it@physics.example.edu",
        ])?
        .ok()?;
    ensure!(
        edited.field("cost centre").as_deref() == Some("4711"),
        "{}",
        edited.stdout
    );
    let shown = cli.run(&["tenant", "show", &physics])?.ok()?;
    ensure!(
        shown.field("contact email").as_deref() == Some("it@physics.example.edu"),
        "{}",
        shown.stdout
    );
    let nothing = cli.run(&["tenant", "edit", &physics])?;
    ensure!(nothing.code == 2, "{}", nothing.stderr);

    // An API token made through the API: a physics viewer sees physics' device, may not create tenants
    // (forbidden, exit 4), and is refused once revoked (exit 3).
    let viewer = cli
        .run(&[
            "api-token",
            "create",
            "--name",
            "physics-viewer",
            "--role",
            "viewer",
            "--tenant",
            &physics,
            "--json",
        ])?
        .ok()?
        .json()?;
    let viewer_id = viewer["id"].as_str().context("token id")?.to_string();
    let secret = viewer["secret"].as_str().context("secret")?.to_string();
    let as_viewer = [("ORCHARD_TOKEN", secret.as_str())];
    let seen = cli
        .run_with(&as_viewer, &["device", "list", "--json"])?
        .ok()?
        .json()?;
    ensure!(
        seen["total"] == 1 && seen["items"][0]["id"] == device.as_str(),
        "{seen}"
    );
    let forbidden = cli.run_with(
        &as_viewer,
        &["tenant", "create", "--name", "X", "--code", "x"],
    )?;
    ensure!(
        forbidden.code == 4 && forbidden.stderr.contains("forbidden"),
        "exit {}: {}",
        forbidden.code,
        forbidden.stderr
    );
    forbidden.request_id()?;
    let tokens = cli.run(&["api-token", "list"])?.ok()?;
    ensure!(
        tokens.stdout.lines().any(|l| l.starts_with(&viewer_id)
            && l.contains("physics-viewer")
            && l.contains("viewer")),
        "{}",
        tokens.stdout
    );
    let revoked = cli.run(&["api-token", "revoke", &viewer_id])?.ok()?;
    ensure!(
        revoked.field("active").as_deref() == Some("no"),
        "{}",
        revoked.stdout
    );
    let refused = cli.run_with(&as_viewer, &["device", "list"])?;
    ensure!(
        refused.code == 3,
        "revoked token → exit {}: {}",
        refused.code,
        refused.stderr
    );

    // An unknown device: not_found, exit 5, the code and request id on stderr (JSON with --json).
    let unknown = uuid::Uuid::now_v7().to_string();
    let missing = cli.run(&["device", "show", &unknown])?;
    ensure!(
        missing.code == 5,
        "exit {}: {}",
        missing.code,
        missing.stderr
    );
    ensure!(missing.stdout.is_empty(), "{}", missing.stdout);
    ensure!(missing.stderr.contains("not_found"), "{}", missing.stderr);
    missing.request_id()?;
    let missing = cli.run(&["device", "show", &unknown, "--json"])?;
    ensure!(missing.code == 5, "exit {}", missing.code);
    let error: Value = serde_json::from_str(missing.stderr.trim())?;
    ensure!(error["error"]["code"] == "not_found", "{error}");
    ensure!(
        error["error"]["request_id"]
            .as_str()
            .is_some_and(|r| !r.is_empty()),
        "{error}"
    );
    // An id cannot reach another route: it is one encoded path segment.
    let escaped = cli.run(&["device", "show", "../tenants"])?;
    ensure!(
        escaped.code == 5 && escaped.stderr.contains("not_found"),
        "{}",
        escaped.stderr
    );
    let lock_unknown = cli.run(&["device", "command", &unknown, "--type", "DeviceLock"])?;
    ensure!(lock_unknown.code == 5, "{}", lock_unknown.stderr);

    // A bad token: unauthenticated, exit 3, with the request id.
    let refused = cli.run_with(
        &[("ORCHARD_TOKEN", "orc_not-a-real-token")],
        &["tenant", "list"],
    )?;
    ensure!(
        refused.code == 3,
        "exit {}: {}",
        refused.code,
        refused.stderr
    );
    ensure!(
        refused.stderr.contains("unauthenticated"),
        "{}",
        refused.stderr
    );
    refused.request_id()?;

    // A refused mutation: its request id is the one the audit log recorded for it.
    let invalid = cli.run(&["tenant", "create", "--name", "Bad", "--code", "Not Valid"])?;
    ensure!(
        invalid.code == 6,
        "exit {}: {}",
        invalid.code,
        invalid.stderr
    );
    ensure!(
        invalid.stderr.contains("invalid_request"),
        "{}",
        invalid.stderr
    );
    let request_id = invalid.request_id()?;
    let audit = cli
        .run(&["audit", "list", "--action", "tenant.create", "--json"])?
        .ok()?
        .json()?;
    let event = audit["items"]
        .as_array()
        .context("items")?
        .iter()
        .find(|e| e["request_id"] == request_id.as_str())
        .with_context(|| format!("no audit event with request id {request_id}: {audit}"))?;
    ensure!(
        event["outcome"] == "error" && event["status"] == 400,
        "{event}"
    );
    let audit_table = cli.run(&["audit", "list"])?.ok()?;
    ensure!(
        audit_table.stdout.contains(&request_id),
        "{}",
        audit_table.stdout
    );
    let csv_path = dir.path().join("audit.csv");
    cli.run(&[
        "audit",
        "export",
        "--out",
        csv_path.to_str().context("path")?,
    ])?
    .ok()?;
    let csv = std::fs::read_to_string(&csv_path)?;
    ensure!(
        csv.lines().count() >= 2 && csv.contains(&request_id),
        "{csv}"
    );

    // The usage report: the same JSON as the API, and CSV with a header.
    let usage = cli
        .run(&[
            "usage",
            "report",
            "--from",
            "2026-01-01",
            "--to",
            "2026-01-31",
            "--json",
        ])?
        .ok()?
        .json()?;
    ensure!(
        usage
            == server
                .get("/api/v1/usage?from=2026-01-01&to=2026-01-31")
                .await?,
        "{usage}"
    );
    let report = cli
        .run(&[
            "usage",
            "report",
            "--from",
            "2026-01-01",
            "--to",
            "2026-01-31",
        ])?
        .ok()?;
    ensure!(
        report.field("days").as_deref() == Some("31"),
        "{}",
        report.stdout
    );
    let csv = cli
        .run(&[
            "usage",
            "report",
            "--from",
            "2026-01-01",
            "--to",
            "2026-01-31",
            "--csv",
        ])?
        .ok()?;
    ensure!(
        csv.stdout.starts_with("tenant_id,tenant_code"),
        "{}",
        csv.stdout
    );
    let bad_day = cli.run(&[
        "usage",
        "report",
        "--from",
        "yesterday",
        "--to",
        "2026-01-31",
    ])?;
    ensure!(
        bad_day.code == 6 && bad_day.stderr.contains("invalid_request"),
        "{}",
        bad_day.stderr
    );

    // Without the server's CA the public roots refuse its certificate: nothing is sent, exit 1.
    let mut untrusting = server.client_command(&["tenant", "list"])?;
    untrusting.env_remove("ORCHARD_CA");
    let out = untrusting.output()?;
    let stderr = String::from_utf8(out.stderr)?;
    ensure!(out.status.code() == Some(1), "{stderr}");
    ensure!(stderr.contains("--ca"), "{stderr}");

    // Configuration mistakes are usage errors (exit 2) and say what to set.
    let no_server = cli.run_with(&[("ORCHARD_SERVER", "")], &["tenant", "list"])?;
    ensure!(
        no_server.code == 2 && no_server.stderr.contains("ORCHARD_SERVER"),
        "{}",
        no_server.stderr
    );
    let plain = cli.run_with(
        &[(
            "ORCHARD_SERVER",
            &server.base_url.replace("https://", "http://"),
        )],
        &["tenant", "list"],
    )?;
    ensure!(
        plain.code == 2 && plain.stderr.contains("https://"),
        "{}",
        plain.stderr
    );
    Ok(())
}

/// Automated Device Enrollment from the command line, against a local DEP service: the token's certificate
/// and `.p7m` round trip through files, a sync, a template from a JSON file, assignments by argument and by
/// CSV file, the DEP device list, and a template's update and deletion.
async fn dep_scenario(backend: Backend) -> Result<()> {
    let dep = AppleDep::start(FakeDepConfig::default()).await?;
    let fake = &dep.server;
    let serials = FakeDepServer::make_serials("CLI", 0, 30);
    fake.add_devices(&serials);
    let dir = tempfile::tempdir()?;
    let Some(server) = TestServer::start_with(
        backend,
        &[
            dep.serve_args(),
            vec!["--dep-sync-minutes".into(), "0".into()],
        ]
        .concat(),
    )
    .await?
    else {
        return Ok(());
    };
    let cli = Cli { server: &server };
    let path = |name: &str| dir.path().join(name).display().to_string();
    let tenant = cli
        .run(&[
            "tenant", "create", "--name", "Physics", "--code", "phys", "--json",
        ])?
        .ok()?
        .json()?;
    let tenant = tenant["id"].as_str().context("tenant id")?.to_string();

    // Token: certificate out to a file, "ASM" encrypts the server token to it, the .p7m goes back in.
    let created = cli
        .run(&[
            "dep",
            "token",
            "create",
            "--name",
            "ASM Physics",
            "--cert-out",
            &path("dep.pem"),
        ])?
        .ok()?;
    let token = created.field("id").context("token id")?;
    let p7m = encrypt_server_token(
        &fake.server_token(),
        &std::fs::read(path("dep.pem"))?,
        TokenCipher::Aes256Cbc,
    )?;
    std::fs::write(path("token.p7m"), p7m)?;
    let uploaded = cli
        .run(&[
            "dep",
            "token",
            "upload",
            &token,
            "--p7m",
            &path("token.p7m"),
        ])?
        .ok()?;
    ensure!(
        uploaded.field("uploaded").as_deref() == Some("yes"),
        "{}",
        uploaded.stdout
    );
    std::fs::write(path("garbage.p7m"), b"not a token")?;
    let refused = cli.run(&[
        "dep",
        "token",
        "upload",
        &token,
        "--p7m",
        &path("garbage.p7m"),
    ])?;
    ensure!(
        refused.code == 6,
        "garbage p7m → {}: {}",
        refused.code,
        refused.stderr
    );
    let synced = cli.run(&["dep", "token", "sync", &token])?.ok()?;
    ensure!(
        synced.field("active devices").as_deref() == Some("30"),
        "{}",
        synced.stdout
    );
    ensure!(
        synced
            .stderr
            .starts_with("dep token sync: started\ndep token sync: done in "),
        "{}",
        synced.stderr
    );
    let unknown = cli.run(&[
        "dep",
        "token",
        "sync",
        "00000000-0000-7000-8000-000000000000",
    ])?;
    ensure!(
        unknown.code == 5
            && unknown
                .stderr
                .starts_with("dep token sync: started\ndep token sync: failed in ")
            && unknown.stderr.contains("not_found"),
        "{}: {}",
        unknown.code,
        unknown.stderr
    );

    // A template from a JSON spec file; Orchard defines its profile at "Apple".
    let spec = json!({
        "name": "Physics iPads",
        "tenant_id": tenant,
        "profile": {"skip_setup_items": ["Siri"], "department": "Physics"},
        "setup": {"device_name_pattern": "PHYS-{serial}"}
    });
    std::fs::write(path("spec.json"), spec.to_string())?;
    let template = cli
        .run(&[
            "dep",
            "template",
            "create",
            "--dep-token",
            &token,
            "--file",
            &path("spec.json"),
            "--json",
        ])?
        .ok()?
        .json()?;
    let template_id = template["id"].as_str().context("template id")?.to_string();
    ensure!(
        template["profile_uuid"].is_string(),
        "not defined at apple: {template}"
    );
    let listed = cli
        .run(&["dep", "template", "list", "--dep-token", &token])?
        .ok()?;
    ensure!(
        listed
            .stdout
            .lines()
            .any(|l| l.starts_with(&template_id) && l.contains("Physics iPads")),
        "{}",
        listed.stdout
    );
    let shown = cli.run(&["dep", "template", "show", &template_id])?.ok()?;
    ensure!(
        shown.field("tenant").as_deref() == Some(tenant.as_str()),
        "{}",
        shown.stdout
    );
    ensure!(shown.stdout.contains("PHYS-{serial}"), "{}", shown.stdout);
    std::fs::write(path("bad.json"), "{not json")?;
    let bad = cli.run(&[
        "dep",
        "template",
        "create",
        "--dep-token",
        &token,
        "--file",
        &path("bad.json"),
    ])?;
    ensure!(
        bad.code == 2 && bad.stderr.contains("not JSON"),
        "{}",
        bad.stderr
    );

    // Assignments: serials as arguments (one unknown), then a CSV export file.
    let first: Vec<String> = serials[..3]
        .iter()
        .map(|s| s.as_str().to_string())
        .collect();
    let mut args = vec![
        "dep",
        "assign",
        "--dep-token",
        &token,
        "--template",
        &template_id,
    ];
    args.extend(first.iter().map(String::as_str));
    args.push("NOTOURS00001");
    let assigned = cli.run(&args)?.ok()?;
    ensure!(
        assigned.field("updated").as_deref() == Some("3"),
        "{}",
        assigned.stdout
    );
    ensure!(
        assigned.field("assigned at apple").as_deref() == Some("3"),
        "{}",
        assigned.stdout
    );
    ensure!(
        assigned.stdout.contains("NOTOURS00001"),
        "{}",
        assigned.stdout
    );
    let mut csv = String::from("Serial Number,Model\n");
    for s in &serials[3..10] {
        csv.push_str(&format!("{},iPad\n", s.as_str()));
    }
    std::fs::write(path("serials.csv"), csv)?;
    let assigned = cli
        .run(&[
            "dep",
            "assign",
            "--dep-token",
            &token,
            "--template",
            &template_id,
            "--csv",
            &path("serials.csv"),
            "--json",
        ])?
        .ok()?
        .json()?;
    ensure!(
        assigned["updated"] == 7 && assigned["sent"]["assigned"] == 7,
        "{assigned}"
    );
    let profile = fake
        .assigned_profile(&serials[5])
        .context("serial 5 at apple")?;
    ensure!(template["profile_uuid"] == profile.as_str(), "{template}");

    let on_template = cli
        .run(&["dep", "devices", "--template", &template_id, "--json"])?
        .ok()?
        .json()?;
    ensure!(on_template["total"] == 10, "{on_template}");
    let page = cli
        .run(&[
            "dep",
            "devices",
            "--dep-token",
            &token,
            "--limit",
            "5",
            "--offset",
            "10",
        ])?
        .ok()?;
    ensure!(
        page.stdout.lines().count() == 7,
        "header, 5 rows, range line: {}",
        page.stdout
    );
    ensure!(page.stdout.contains("(11–15 of 30"), "{}", page.stdout);

    let unassigned = cli
        .run(&[
            "dep",
            "assign",
            "--dep-token",
            &token,
            "--unassign",
            first[0].as_str(),
            "--json",
        ])?
        .ok()?
        .json()?;
    ensure!(unassigned["updated"] == 1, "{unassigned}");
    let on_template = cli
        .run(&["dep", "devices", "--template", &template_id, "--json"])?
        .ok()?
        .json()?;
    ensure!(on_template["total"] == 9, "{on_template}");

    // Update from a new spec, then delete; the deleted template is gone.
    let mut renamed = spec.clone();
    renamed["name"] = json!("Physics carts");
    std::fs::write(path("spec2.json"), renamed.to_string())?;
    let updated = cli
        .run(&[
            "dep",
            "template",
            "update",
            &template_id,
            "--file",
            &path("spec2.json"),
        ])?
        .ok()?;
    ensure!(
        updated.field("name").as_deref() == Some("Physics carts"),
        "{}",
        updated.stdout
    );
    // Deleting a template releases its serials; the template is gone afterwards.
    let deleted = cli
        .run(&["dep", "template", "delete", &template_id])?
        .ok()?;
    ensure!(
        deleted.stdout == format!("deleted template {template_id}\n"),
        "{}",
        deleted.stdout
    );
    let gone = cli.run(&["dep", "template", "show", &template_id])?;
    ensure!(
        gone.code == 5 && gone.stderr.contains("not_found"),
        "{}",
        gone.stderr
    );
    let on_template = cli
        .run(&["dep", "devices", "--template", &template_id, "--json"])?
        .ok()?
        .json()?;
    ensure!(on_template["total"] == 0, "{on_template}");
    Ok(())
}

orchard_testkit::backend_tests! {
    dep_commands => dep_scenario;
}

orchard_testkit::backend_tests! {
    cli_against_a_running_server => scenario;
}
