//! The capability rule, checked on the source: every `pub` method of `Orchard` (and every `pub` function that is
//! handed an `Orchard`) either takes a capability — a [`Principal`](orchard_core::access::principal::Principal)
//! for reads, an `OperatorCtx`, `TenantAdminCtx`, `OversightCtx`, `TokenAdminCtx`, or the server's own
//! `SystemCtx` — or is named below: the entry points that authenticate raw credentials (where principals are
//! born), the two doors that hand out the server's capability, and the service's own configuration held in
//! memory. A new method that reaches tenant data without a capability fails here; so does a name left on a
//! list after its method went.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

/// Authenticate raw credentials or serve the unauthenticated device surface (Mdm-Signature, enrollment-link
/// secret, SCEP challenge, bearer token, session id, password, OIDC code): principals are born here.
const AUTHENTICATION: &[&str] = &[
    "authenticate_bearer",
    "authenticate_bearer_in",
    "principal_for_session",
    "authenticate_session",
    "end_session",
    "local_sign_in",
    "begin_oidc_login",
    "finish_oidc_login",
    "checkin",
    "command_report",
    // The same two, told when the request began waiting (adaptive push pacing): they verify the Mdm-Signature
    // before anything else, as the two above do.
    "checkin_arrived",
    "command_report_arrived",
    "enroll_dep",
    "check_enrollment_link",
    "enrollment_profile_for_link",
    "scep_ca_caps",
    "scep_ca_cert",
    "scep_pki_operation",
    // A declared profile's URL carries Orchard's HMAC tag for (device, profile, version): the tag is the
    // credential, checked before anything is read.
    "declared_profile_download",
];

/// The doors of `SystemCtx`: the jobs host and the one explicit door (binary, metrics, audit trail, tests).
const SYSTEM_DOORS: &[&str] = &["system", "start_jobs"];

/// Building the service and reading its own settings and status from memory: no database, no tenant data.
const SERVICE_CONFIGURATION: &[&str] = &[
    "new",
    "config",
    "ca",
    "with_token_policy",
    "with_usage_settings",
    "usage_settings",
    "with_credential_settings",
    "credential_settings",
    "with_oidc_settings",
    "oidc_enabled",
    "with_command_queue_settings",
    "command_queue_settings",
    "with_secret_command_settings",
    "with_dep_settings",
    "with_os_catalogue_settings",
    "dep_settings",
    "dep_sync_interval_seconds",
    "with_apps_settings",
    "apps_sync_interval_seconds",
    "with_activation_lock_settings",
    "activation_lock_settings",
    "with_identity_renewal",
    "identity_renewal_settings",
    "with_link_download_limit",
    "with_session_ttl_seconds",
    "with_reconciler_settings",
    "reconciler_settings",
    "with_webhook_settings",
    "webhook_settings",
    "now",
    "current_topic",
    "push_certificate_status",
    // Adaptive push pacing's counts of this node's device requests (no data of anyone), and its rate.
    "device_requests_in_flight",
    "device_requests_served",
    "push_pacing_rate",
    // This node's counters in memory (`/metrics`): counts of our own words, no tenant data.
    "metrics",
];

const CAPABILITIES: &[&str] = &[
    "Principal",
    "OperatorCtx",
    "TenantAdminCtx",
    "OversightCtx",
    "TokenAdminCtx",
    "SystemCtx",
];

fn sources(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            sources(&path, out);
        } else if path.extension().is_some_and(|x| x == "rs") {
            out.push(path);
        }
    }
}

/// A public function: where it is, its name, its parameter list, and whether it is a method of `Orchard`.
struct PublicFn {
    at: String,
    name: String,
    params: String,
    of_orchard: bool,
}

/// The text from the `(` at `open` to its matching `)`.
fn parenthesised(code: &str, open: usize) -> &str {
    let mut depth = 0;
    for (i, c) in code[open..].char_indices() {
        match c {
            '(' => depth += 1,
            ')' => {
                depth -= 1;
                if depth == 0 {
                    return &code[open..=open + i];
                }
            }
            _ => {}
        }
    }
    &code[open..]
}

fn public_fns(path: &Path) -> Vec<PublicFn> {
    let code = std::fs::read_to_string(path).unwrap();
    let shown = path.strip_prefix(env!("CARGO_MANIFEST_DIR")).unwrap();
    let mut out = Vec::new();
    // Brace depth at the start of each line, and the depth of the `impl Orchard` block we are in, if any.
    let mut depth = 0i32;
    let mut orchard_block: Option<i32> = None;
    let mut offset = 0;
    for (number, line) in code.lines().enumerate() {
        let trimmed = line.trim_start();
        if orchard_block.is_none()
            && (trimmed.starts_with("impl Orchard {")
                || trimmed.starts_with("impl crate::Orchard {"))
        {
            orchard_block = Some(depth);
        }
        let head = trimmed
            .strip_prefix("pub async fn ")
            .or_else(|| trimmed.strip_prefix("pub fn "));
        if let Some(head) = head {
            let name: String = head
                .chars()
                .take_while(|c| c.is_alphanumeric() || *c == '_')
                .collect();
            let open = offset + line.find('(').unwrap_or(line.len());
            let params = parenthesised(&code, open.min(code.len() - 1)).to_string();
            out.push(PublicFn {
                at: format!("{}:{}", shown.display(), number + 1),
                name,
                params,
                of_orchard: orchard_block.is_some(),
            });
        }
        // Braces in strings and comments are rare enough in core's code not to matter for block tracking.
        depth += line.matches('{').count() as i32 - line.matches('}').count() as i32;
        if orchard_block.is_some_and(|d| depth <= d) {
            orchard_block = None;
        }
        offset += line.len() + 1;
    }
    out
}

fn takes_capability(params: &str) -> bool {
    params
        .split(|c: char| !(c.is_alphanumeric() || c == '_'))
        .any(|word| CAPABILITIES.contains(&word))
}

fn hands_an_orchard(params: &str) -> bool {
    params.contains("&Orchard") || params.contains("Arc<Orchard>")
}

#[test]
fn every_public_core_method_authenticates_or_takes_a_capability() {
    let mut files = Vec::new();
    sources(
        &Path::new(env!("CARGO_MANIFEST_DIR")).join("src"),
        &mut files,
    );
    files.sort();
    let allowed: BTreeSet<&str> = AUTHENTICATION
        .iter()
        .chain(SYSTEM_DOORS)
        .chain(SERVICE_CONFIGURATION)
        .copied()
        .collect();
    let mut seen = BTreeSet::new();
    let mut offenders = Vec::new();
    for file in &files {
        for f in public_fns(file) {
            if !(f.of_orchard || hands_an_orchard(&f.params)) {
                continue;
            }
            if f.of_orchard {
                seen.insert(f.name.clone());
            }
            let listed = f.of_orchard && allowed.contains(f.name.as_str());
            if !listed && !takes_capability(&f.params) {
                offenders.push(format!("{} {}", f.at, f.name));
            }
        }
    }
    assert!(
        offenders.is_empty(),
        "public core functions that take no capability and authenticate nothing (give them a capability, \
         or, if they authenticate raw credentials, list them here):\n{}",
        offenders.join("\n")
    );
    let stale: Vec<&&str> = allowed.iter().filter(|n| !seen.contains(**n)).collect();
    assert!(
        stale.is_empty(),
        "listed but no longer a public method of Orchard: {stale:?}"
    );
    // The scan found the methods it is about (a broken scanner would pass anything).
    assert!(seen.contains("dispatch_pushes_once") && seen.contains("create_tenant"));
}
