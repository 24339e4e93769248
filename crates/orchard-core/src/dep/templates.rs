//! Enrollment templates (Jamf's "PreStage enrollments") and the assignment of DEP serials to them.
//!
//! Operators define templates: the ADE profile Apple shows in Setup Assistant (skipped panes, await
//! configuration, Shared iPad, support contacts) plus what Orchard does during setup (device name pattern,
//! organization info, commands to run before the device is released). A template belongs to one DEP token
//! (Apple's profile uuids are per MDM server) and to one tenant; assigning a serial to it decides the
//! device's tenant. Whenever a template changes, its profile is defined again at Apple and its serials are
//! assigned to the new uuid.

use std::collections::BTreeMap;

use orchard_dep::{AdeProfile, DepClient, ProfileUuid, ServerToken, SkipSetupItem};
use orchard_protocol::commands::Command;
use orchard_store::{
    AssignResult, AssignStatus, DepDeviceListing, DepListingFilter, DepTemplateRecord,
    EnrollmentLink, Scope, UnitOfWork,
};
use orchard_types::{EnrollmentLinkId, SerialNumber, TenantId, TokenId, UnixTime};
use serde::{Deserialize, Serialize};

use crate::access::capability::{OperatorCtx, SystemCtx};
use crate::access::principal::Principal;
use crate::dep::DepDeviceView;
use crate::{random_secret, secret_hash, CoreError, Orchard};

/// Longest accepted template name (Apple's profile_name is shown on the device).
const MAX_NAME_CHARS: usize = 200;
/// Serials handed to Apple per assignment round (the client chunks by 1,000 itself).
const ASSIGN_BATCH: i64 = 5_000;
/// How long after a THROTTLED answer that outlasted the client's retries the serial is tried again.
const THROTTLED_RETRY_SECONDS: i64 = 300;

fn yes() -> bool {
    true
}

/// The ADE profile part of a template (what Apple's Setup Assistant shows and skips).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct TemplateProfile {
    /// Shown on the device during setup; the template's name when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub profile_name: Option<String>,
    /// Setup Assistant panes to skip (keys of Apple's skipkeys.yaml, e.g. "AppleID", "Siri").
    #[serde(default)]
    pub skip_setup_items: Vec<String>,
    /// Setup Assistant waits until Orchard has run the setup commands and sent DeviceConfigured.
    #[serde(default = "yes")]
    pub await_device_configured: bool,
    /// Whether the user may remove management (false for university iPads).
    #[serde(default)]
    pub is_mdm_removable: bool,
    /// Shared iPad (several users on one device).
    #[serde(default)]
    pub is_multi_user: bool,
    /// Setup Assistant advances through its panes by itself (carts and labs where nobody taps through).
    #[serde(default)]
    pub auto_advance_setup: bool,
    /// Rapid Return to Service: the device comes back enrolled after an erase (iOS 26+).
    #[serde(default)]
    pub is_return_to_service: bool,
    /// A restored backup does not bring its old enrollment back (iOS 26+).
    #[serde(default)]
    pub do_not_use_profile_from_backup: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub department: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub support_phone_number: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub support_email_address: Option<String>,
    /// tvOS/macOS only; kept so a template can serve those too.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub language: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub region: Option<String>,
}

impl Default for TemplateProfile {
    fn default() -> Self {
        Self {
            profile_name: None,
            skip_setup_items: Vec::new(),
            await_device_configured: true,
            is_mdm_removable: false,
            is_multi_user: false,
            auto_advance_setup: false,
            is_return_to_service: false,
            do_not_use_profile_from_backup: false,
            department: None,
            support_phone_number: None,
            support_email_address: None,
            language: None,
            region: None,
        }
    }
}

/// Organization info set on the device during setup (Settings → OrganizationInfo).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct TemplateOrganization {
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub address: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phone: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub email: Option<String>,
}

/// What Orchard does while the device waits in Setup Assistant.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct TemplateSetup {
    /// E.g. `PHYS-{serial}`; placeholders `{serial}`, `{model}`, `{udid}`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub device_name_pattern: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub organization: Option<TemplateOrganization>,
    /// Commands to run, in order, before the device is released (typed like the command API).
    #[serde(default)]
    #[cfg_attr(feature = "openapi", schema(value_type = Vec<crate::api_schema::CommandSchema>))]
    pub commands: Vec<Command>,
    /// Fetch and keep the Activation Lock bypass code (so a locked iPad can be reused).
    #[serde(default = "yes")]
    pub escrow_bypass_code: bool,
}

impl Default for TemplateSetup {
    fn default() -> Self {
        Self {
            device_name_pattern: None,
            organization: None,
            commands: Vec::new(),
            escrow_bypass_code: true,
        }
    }
}

/// A template as operators write it (create and replace).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct TemplateSpec {
    pub name: String,
    #[cfg_attr(feature = "openapi", schema(value_type = String, format = Uuid))]
    pub tenant_id: TenantId,
    #[serde(default)]
    pub profile: TemplateProfile,
    #[serde(default)]
    pub setup: TemplateSetup,
    /// Devices on an older iOS are sent to a software update before they may enroll.
    #[serde(default)]
    pub minimum_os_version: Option<String>,
    /// New serials of the token get this template (at most one template per token).
    #[serde(default)]
    pub auto_assign: bool,
}

/// A template as the API shows it.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct TemplateView {
    pub id: String,
    pub token_id: String,
    pub tenant_id: String,
    pub name: String,
    pub profile: TemplateProfile,
    pub setup: TemplateSetup,
    pub minimum_os_version: Option<String>,
    pub auto_assign: bool,
    /// Apple's uuid of the profile as last defined (absent until defined).
    pub profile_uuid: Option<String>,
    pub defined_at: Option<String>,
    /// Why the last definition at Apple failed (the previous profile stays in use).
    pub define_error: Option<String>,
    /// Serials of the token wanting this template, by assignment status.
    pub created_at: String,
    pub updated_at: String,
}

/// The parsed JSON columns of a stored template.
pub(crate) struct TemplateParts {
    pub(crate) profile: TemplateProfile,
    pub(crate) setup: TemplateSetup,
}

pub(crate) fn template_parts(t: &DepTemplateRecord) -> Result<TemplateParts, CoreError> {
    let profile = serde_json::from_str(&t.profile_json)
        .map_err(|e| CoreError::Internal(format!("template {} profile json: {e}", t.id)))?;
    let setup = serde_json::from_str(&t.setup_json)
        .map_err(|e| CoreError::Internal(format!("template {} setup json: {e}", t.id)))?;
    Ok(TemplateParts { profile, setup })
}

fn view(t: &DepTemplateRecord) -> Result<TemplateView, CoreError> {
    let parts = template_parts(t)?;
    Ok(TemplateView {
        id: t.id.clone(),
        token_id: t.token_id.clone(),
        tenant_id: t.tenant_id.to_string(),
        name: t.name.clone(),
        profile: parts.profile,
        setup: parts.setup,
        minimum_os_version: t.minimum_os_version.clone(),
        auto_assign: t.auto_assign,
        profile_uuid: t.profile_uuid.clone(),
        defined_at: t.defined_at.map(UnixTime::to_rfc3339),
        define_error: t.define_error.clone(),
        created_at: t.created_at.to_rfc3339(),
        updated_at: t.updated_at.to_rfc3339(),
    })
}

/// Commands a template may not run during setup: they destroy data, need a person's confirmation, or are
/// Orchard's own to send.
fn setup_command_allowed(c: &Command) -> bool {
    !matches!(
        c,
        Command::EraseDevice { .. }
            | Command::ClearPasscode { .. }
            | Command::DeleteUser { .. }
            | Command::DeviceConfigured
            | Command::RemoveProfile { .. }
    )
}

fn check_text(field: &str, value: &Option<String>, max: usize) -> Result<(), CoreError> {
    if let Some(v) = value {
        if v.trim().is_empty() || v.chars().count() > max {
            return Err(CoreError::Invalid(format!(
                "{field} must be 1..={max} characters when given"
            )));
        }
    }
    Ok(())
}

/// Validates a spec; returns the normalized name.
fn validate(spec: &TemplateSpec) -> Result<String, CoreError> {
    let name = spec.name.trim();
    if name.is_empty() || name.chars().count() > MAX_NAME_CHARS {
        return Err(CoreError::Invalid(format!(
            "name must be 1..={MAX_NAME_CHARS} characters"
        )));
    }
    for key in &spec.profile.skip_setup_items {
        let item = SkipSetupItem::parse(key).map_err(|e| CoreError::Invalid(e.to_string()))?;
        if !item.is_known() {
            return Err(CoreError::Invalid(format!(
                "skip_setup_items: {key:?} is not one of Apple's Setup Assistant keys"
            )));
        }
    }
    check_text("profile.profile_name", &spec.profile.profile_name, 200)?;
    check_text("profile.department", &spec.profile.department, 200)?;
    check_text(
        "profile.support_phone_number",
        &spec.profile.support_phone_number,
        50,
    )?;
    check_text(
        "profile.support_email_address",
        &spec.profile.support_email_address,
        200,
    )?;
    if let Some(email) = &spec.profile.support_email_address {
        if !email.contains('@') {
            return Err(CoreError::Invalid(
                "profile.support_email_address is not an e-mail address".into(),
            ));
        }
    }
    if let Some(pattern) = &spec.setup.device_name_pattern {
        if pattern.trim().is_empty() || pattern.chars().count() > 100 {
            return Err(CoreError::Invalid(
                "setup.device_name_pattern must be 1..=100 characters".into(),
            ));
        }
        let stripped = pattern
            .replace("{serial}", "")
            .replace("{model}", "")
            .replace("{udid}", "");
        if stripped.contains('{') || stripped.contains('}') {
            return Err(CoreError::Invalid(
                "setup.device_name_pattern: only {serial}, {model} and {udid} may be used".into(),
            ));
        }
    }
    if let Some(org) = &spec.setup.organization {
        if org.name.trim().is_empty() {
            return Err(CoreError::Invalid(
                "setup.organization.name is required".into(),
            ));
        }
    }
    if spec.setup.commands.len() > 100 {
        return Err(CoreError::Invalid(
            "setup.commands: at most 100 commands".into(),
        ));
    }
    if let Some(c) = spec
        .setup
        .commands
        .iter()
        .find(|c| !setup_command_allowed(c))
    {
        return Err(CoreError::Invalid(format!(
            "setup.commands: {} may not run during setup",
            c.request_type()
        )));
    }
    if let Some(v) = &spec.minimum_os_version {
        let valid = !v.is_empty()
            && v.split('.').count() <= 3
            && v.split('.')
                .all(|p| !p.is_empty() && p.chars().all(|c| c.is_ascii_digit()));
        if !valid {
            return Err(CoreError::Invalid(format!(
                "minimum_os_version {v:?} is not a version like 17.5 or 18.1.1"
            )));
        }
    }
    Ok(name.to_owned())
}

/// Fills a device name pattern.
pub(crate) fn device_name(pattern: &str, serial: &str, model: &str, udid: &str) -> String {
    pattern
        .replace("{serial}", serial)
        .replace("{model}", model)
        .replace("{udid}", udid)
}

/// What an assignment request did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Default)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct AssignmentSummary {
    /// Serials now wanting the template (or unassigned).
    pub updated: u64,
    /// Serials the token does not list: nothing changed for them.
    pub unknown: Vec<String>,
    /// Of the serials sent to Apple now: assigned, not accessible, failed, throttled (retried later).
    pub sent: AssignCounts,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Default)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct AssignCounts {
    pub assigned: u64,
    pub not_accessible: u64,
    pub failed: u64,
    pub throttled: u64,
    /// Serials waiting for their template to be defined at Apple.
    pub waiting_for_profile: u64,
}

impl AssignCounts {
    fn add(&mut self, other: &AssignCounts) {
        self.assigned += other.assigned;
        self.not_accessible += other.not_accessible;
        self.failed += other.failed;
        self.throttled += other.throttled;
        self.waiting_for_profile += other.waiting_for_profile;
    }
}

/// Serials from a list or a CSV export (one serial per line or a `serial`/`serial_number` column; commas,
/// semicolons, tabs and whitespace separate). Duplicates are dropped, order kept.
pub fn parse_serial_list(text: &str) -> Result<Vec<String>, CoreError> {
    let mut lines = text.lines().peekable();
    let mut column: Option<usize> = None;
    let split = |line: &str| -> Vec<String> {
        line.split([',', ';', '\t'])
            .map(|f| f.trim().trim_matches('"').trim().to_owned())
            .collect()
    };
    if let Some(first) = lines.peek() {
        let fields = split(first);
        if let Some(i) = fields.iter().position(|f| {
            let f = f.to_ascii_lowercase();
            f == "serial" || f == "serial_number" || f == "serial number" || f == "serialnumber"
        }) {
            column = Some(i);
            lines.next();
        }
    }
    let mut seen = std::collections::HashSet::new();
    let mut serials = Vec::new();
    for (n, line) in lines.enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let fields = split(line);
        let candidates: Vec<String> = match column {
            Some(i) => fields.get(i).cloned().into_iter().collect(),
            None => line
                .split(|c: char| c == ',' || c == ';' || c.is_whitespace())
                .map(|s| s.trim_matches('"').to_owned())
                .filter(|s| !s.is_empty())
                .collect(),
        };
        for s in candidates {
            // Apple serial numbers are letters and digits; anything else is a mistake in the file.
            if s.is_empty() || s.len() > 20 || !s.chars().all(|c| c.is_ascii_alphanumeric()) {
                return Err(CoreError::Invalid(format!(
                    "line {}: {s:?} is not a serial number",
                    n + 1
                )));
            }
            let serial = SerialNumber::parse(&s).map_err(|e| {
                CoreError::Invalid(format!("line {}: {s:?} is not a serial number: {e}", n + 1))
            })?;
            if seen.insert(serial.as_str().to_owned()) {
                serials.push(serial.as_str().to_owned());
            }
        }
    }
    Ok(serials)
}

fn template_conflict() -> CoreError {
    CoreError::Conflict(
        "the token already has a template of this name, or already has an auto-assign template"
            .into(),
    )
}

fn conflict_or(e: orchard_store::StoreError) -> CoreError {
    match e {
        orchard_store::StoreError::Conflict(_) => template_conflict(),
        other => other.into(),
    }
}

impl Orchard {
    /// The ADE profile Apple gets for a template.
    fn ade_profile(&self, name: &str, profile: &TemplateProfile) -> Result<AdeProfile, CoreError> {
        let mut ade = AdeProfile::new(profile.profile_name.clone().unwrap_or(name.to_owned()));
        ade.url = Some(self.config.dep_enrollment_url());
        ade.is_supervised = Some(true);
        ade.is_mandatory = Some(true);
        ade.is_mdm_removable = Some(profile.is_mdm_removable);
        ade.is_multi_user = Some(profile.is_multi_user);
        ade.await_device_configured = Some(profile.await_device_configured);
        // Sent only when set: Apple's default is false, and older servers' definitions stay byte-identical.
        ade.auto_advance_setup = profile.auto_advance_setup.then_some(true);
        ade.is_return_to_service = profile.is_return_to_service.then_some(true);
        ade.do_not_use_profile_from_backup = profile.do_not_use_profile_from_backup.then_some(true);
        ade.skip_setup_items = profile
            .skip_setup_items
            .iter()
            .map(|k| SkipSetupItem::parse(k).map_err(|e| CoreError::Invalid(e.to_string())))
            .collect::<Result<_, _>>()?;
        ade.department = profile.department.clone();
        ade.support_phone_number = profile.support_phone_number.clone();
        ade.support_email_address = profile.support_email_address.clone();
        ade.language = profile.language.clone();
        ade.region = profile.region.clone();
        ade.anchor_certs = self.dep.settings.anchor_certs_der.clone();
        ade.validate()
            .map_err(|e| CoreError::Invalid(e.to_string()))?;
        Ok(ade)
    }

    /// A DEP client for a token, if its server token has been uploaded.
    async fn dep_client_for(&self, token_id: &str) -> Result<Option<DepClient>, CoreError> {
        let record = self
            .store
            .dep_token(token_id)
            .await?
            .ok_or(CoreError::NotFound)?;
        let Some(sealed) = record.token_encrypted.as_ref() else {
            return Ok(None);
        };
        let json = self
            .pki
            .data_key
            .open(sealed, format!("dep_tokens:{token_id}:token").as_bytes())?;
        let token = ServerToken::from_json(json.expose())
            .map_err(|e| CoreError::Internal(e.to_string()))?;
        DepClient::new(self.dep.settings.config.clone(), token, self.clock.clone())
            .map(Some)
            .map_err(|e| CoreError::Internal(e.to_string()))
    }

    /// Defines the template's profile at Apple, if the token has a server token: the new uuid, or why not.
    /// Only the network; the caller records the outcome in its unit of work ([`Self::record_definition`]), so
    /// no write lock is held across the call to Apple.
    async fn define_at_apple(
        &self,
        t: &DepTemplateRecord,
    ) -> Result<Result<String, String>, CoreError> {
        let parts = template_parts(t)?;
        let ade = self.ade_profile(&t.name, &parts.profile)?;
        let Some(client) = self.dep_client_for(&t.token_id).await? else {
            return Ok(Err(
                "the token has no server token yet: upload it, then save the template again"
                    .to_owned(),
            ));
        };
        Ok(match client.define_profile(&ade).await {
            Ok(defined) => {
                tracing::info!(template = %t.id, profile_uuid = %defined.profile_uuid.as_str(), "ade profile defined");
                Ok(defined.profile_uuid.as_str().to_owned())
            }
            Err(e) => {
                tracing::warn!(template = %t.id, error = %e, "defining the ade profile failed");
                Err(e.to_string())
            }
        })
    }

    /// Records a definition inside the template's unit of work, with what follows from it: the template's
    /// serials marked for assignment to a new uuid, and the token's assignment rule applied when the
    /// template is the rule's. A failed definition keeps the last good uuid.
    async fn record_definition(
        &self,
        unit: &mut UnitOfWork,
        t: &DepTemplateRecord,
        defined: &Result<String, String>,
    ) -> Result<(), CoreError> {
        let now = self.clock.now();
        match defined {
            Ok(uuid) => {
                unit.set_dep_template_definition(&t.id, Some(uuid), None, now)
                    .await?;
                unit.reassign_dep_template_devices(&t.id).await?;
            }
            Err(why) => {
                unit.set_dep_template_definition(&t.id, None, Some(why), now)
                    .await?;
            }
        }
        if t.auto_assign {
            unit.auto_assign_dep_devices(&t.token_id).await?;
        }
        Ok(())
    }

    /// Refuses a second template of the same name on the token, or a second auto-assign template, before
    /// Apple is asked to define anything (the unit's constraints decide a race).
    async fn check_template_conflicts(
        &self,
        operator: &OperatorCtx,
        t: &DepTemplateRecord,
    ) -> Result<(), CoreError> {
        let others = self
            .store
            .list_dep_templates(operator.scope(), Some(&t.token_id))
            .await?;
        if others
            .iter()
            .filter(|o| o.id != t.id)
            .any(|o| o.name == t.name || (o.auto_assign && t.auto_assign))
        {
            return Err(template_conflict());
        }
        Ok(())
    }

    /// Creates a template (operators only) and defines its profile at Apple.
    pub async fn create_dep_template(
        &self,
        operator: &OperatorCtx,
        token_id: &str,
        spec: TemplateSpec,
    ) -> Result<TemplateView, CoreError> {
        let name = validate(&spec)?;
        self.store
            .dep_token(token_id)
            .await?
            .ok_or(CoreError::NotFound)?;
        self.store
            .get_tenant(operator.scope(), spec.tenant_id)
            .await?
            .ok_or_else(|| CoreError::Invalid("tenant_id: no such tenant".into()))?;
        let now = self.clock.now();
        let id = TokenId::new().to_string();
        let link = EnrollmentLink {
            id: EnrollmentLinkId::new(),
            tenant_id: spec.tenant_id,
            name: format!("template:{name}"),
            // Nobody ever sees this secret: the template's challenges are made by the zero-touch endpoint.
            secret_hash: secret_hash(&random_secret(32)),
            max_uses: None,
            uses: 0,
            expires_at: None,
            created_at: now,
            created_by: Some(operator.principal().actor()),
        };
        let record = DepTemplateRecord {
            id: id.clone(),
            token_id: token_id.to_owned(),
            tenant_id: spec.tenant_id,
            link_id: link.id,
            name,
            profile_json: serde_json::to_string(&spec.profile)
                .map_err(|e| CoreError::Internal(e.to_string()))?,
            setup_json: serde_json::to_string(&spec.setup)
                .map_err(|e| CoreError::Internal(e.to_string()))?,
            minimum_os_version: spec.minimum_os_version,
            auto_assign: spec.auto_assign,
            profile_uuid: None,
            defined_at: None,
            define_error: None,
            created_at: now,
            updated_at: now,
        };
        // The template, its link, its definition and the assignment rule commit together, after Apple.
        self.check_template_conflicts(operator, &record).await?;
        let defined = self.define_at_apple(&record).await?;
        let mut unit = self.store.begin_unit().await?;
        unit.create_dep_template(&record, &link)
            .await
            .map_err(conflict_or)?;
        self.record_definition(&mut unit, &record, &defined).await?;
        unit.commit().await?;
        tracing::info!(template = %id, token = %token_id, tenant = %record.tenant_id, actor = %operator.principal().actor(), "enrollment template created");
        if record.auto_assign {
            self.push_dep_assignments(&self.system(), token_id).await?;
        }
        self.dep_template_view(operator.scope(), &id).await
    }

    /// Replaces a template's settings (operators only); the profile is defined again at Apple and the
    /// template's serials are assigned to the new profile.
    pub async fn update_dep_template(
        &self,
        operator: &OperatorCtx,
        id: &str,
        spec: TemplateSpec,
    ) -> Result<TemplateView, CoreError> {
        let name = validate(&spec)?;
        let mut record = self
            .store
            .dep_template(operator.scope(), id)
            .await?
            .ok_or(CoreError::NotFound)?;
        self.store
            .get_tenant(operator.scope(), spec.tenant_id)
            .await?
            .ok_or_else(|| CoreError::Invalid("tenant_id: no such tenant".into()))?;
        record.name = name;
        record.tenant_id = spec.tenant_id;
        record.profile_json =
            serde_json::to_string(&spec.profile).map_err(|e| CoreError::Internal(e.to_string()))?;
        record.setup_json =
            serde_json::to_string(&spec.setup).map_err(|e| CoreError::Internal(e.to_string()))?;
        record.minimum_os_version = spec.minimum_os_version;
        record.auto_assign = spec.auto_assign;
        record.updated_at = self.clock.now();
        // The settings, the new definition, the serials marked for it and the assignment rule commit
        // together, after Apple: a failure leaves the template as it was, and saving again completes it.
        self.check_template_conflicts(operator, &record).await?;
        let defined = self.define_at_apple(&record).await?;
        let mut unit = self.store.begin_unit().await?;
        unit.update_dep_template(&record)
            .await
            .map_err(conflict_or)?;
        self.record_definition(&mut unit, &record, &defined).await?;
        unit.commit().await?;
        tracing::info!(template = %id, actor = %operator.principal().actor(), "enrollment template changed");
        self.push_dep_assignments(&self.system(), &record.token_id)
            .await?;
        self.dep_template_view(operator.scope(), id).await
    }

    /// Deletes a template (operators only). Its serials lose their assignment in Orchard; Apple keeps the
    /// old profile until they are assigned elsewhere.
    pub async fn delete_dep_template(
        &self,
        operator: &OperatorCtx,
        id: &str,
    ) -> Result<(), CoreError> {
        self.store.delete_dep_template(id, self.clock.now()).await?;
        tracing::info!(template = %id, actor = %operator.principal().actor(), "enrollment template deleted");
        Ok(())
    }

    async fn dep_template_view(&self, scope: Scope, id: &str) -> Result<TemplateView, CoreError> {
        let record = self
            .store
            .dep_template(scope, id)
            .await?
            .ok_or(CoreError::NotFound)?;
        view(&record)
    }

    /// One template: operators and helpdesk see all, a tenant the templates offered to it.
    pub async fn get_dep_template(
        &self,
        who: &Principal,
        id: &str,
    ) -> Result<TemplateView, CoreError> {
        self.dep_template_view(who.scope(), id).await
    }

    /// Templates in the caller's scope, optionally of one token.
    pub async fn list_dep_templates(
        &self,
        who: &Principal,
        token_id: Option<&str>,
    ) -> Result<Vec<TemplateView>, CoreError> {
        self.store
            .list_dep_templates(who.scope(), token_id)
            .await?
            .iter()
            .map(view)
            .collect()
    }

    /// Assigns serials of a token to a template, or removes their assignment (`template_id` None), then
    /// tells Apple (operators only). Unknown serials are reported, not fatal.
    pub async fn assign_dep_devices(
        &self,
        operator: &OperatorCtx,
        token_id: &str,
        serials: &[String],
        template_id: Option<&str>,
    ) -> Result<AssignmentSummary, CoreError> {
        if serials.is_empty() {
            return Err(CoreError::Invalid("no serial numbers given".into()));
        }
        for s in serials {
            SerialNumber::parse(s)
                .map_err(|e| CoreError::Invalid(format!("{s:?} is not a serial number: {e}")))?;
        }
        self.store
            .dep_token(token_id)
            .await?
            .ok_or(CoreError::NotFound)?;
        let template = match template_id {
            Some(id) => {
                let t = self
                    .store
                    .dep_template(operator.scope(), id)
                    .await?
                    .ok_or_else(|| CoreError::Invalid("template_id: no such template".into()))?;
                if t.token_id != token_id {
                    return Err(CoreError::Invalid(
                        "the template belongs to another dep token".into(),
                    ));
                }
                Some(t)
            }
            None => None,
        };
        let outcome = self
            .store
            .set_dep_assignment(
                token_id,
                serials,
                template.as_ref().map(|t| (t.id.as_str(), t.tenant_id)),
            )
            .await?;
        tracing::info!(token = %token_id, template = ?template_id, updated = outcome.updated, unknown = outcome.unknown.len(), actor = %operator.principal().actor(), "dep serials assigned");
        let mut summary = AssignmentSummary {
            updated: outcome.updated,
            unknown: outcome.unknown,
            sent: AssignCounts::default(),
        };
        if template.is_some() {
            summary.sent = self.push_dep_assignments(&self.system(), token_id).await?;
        } else {
            let removable: Vec<String> = serials
                .iter()
                .filter(|s| !summary.unknown.contains(s))
                .cloned()
                .collect();
            self.remove_dep_assignments_at_apple(token_id, &removable)
                .await?;
        }
        Ok(summary)
    }

    async fn remove_dep_assignments_at_apple(
        &self,
        token_id: &str,
        serials: &[String],
    ) -> Result<(), CoreError> {
        if serials.is_empty() {
            return Ok(());
        }
        let Some(client) = self.dep_client_for(token_id).await? else {
            return Ok(());
        };
        let parsed: Vec<SerialNumber> = serials
            .iter()
            .filter_map(|s| SerialNumber::parse(s).ok())
            .collect();
        if let Err(e) = client.remove_profile(&parsed).await {
            tracing::warn!(token = %token_id, error = %e, "removing profile assignments at apple failed");
        }
        Ok(())
    }

    /// Sends every due assignment of a token to Apple (pending ones, and throttled ones whose wait is over),
    /// in rounds, and stores each serial's answer. Serials whose template is not defined yet wait.
    pub async fn push_dep_assignments(
        &self,
        _system: &SystemCtx,
        token_id: &str,
    ) -> Result<AssignCounts, CoreError> {
        let mut total = AssignCounts::default();
        let Some(client) = self.dep_client_for(token_id).await? else {
            return Ok(total);
        };
        loop {
            let now = self.clock.now();
            let due = self
                .store
                .due_dep_assignments(token_id, now, ASSIGN_BATCH)
                .await?;
            if due.is_empty() {
                break;
            }
            let mut by_profile: BTreeMap<(String, String), Vec<String>> = BTreeMap::new();
            let mut waiting = 0;
            for d in &due {
                match &d.profile_uuid {
                    Some(uuid) => by_profile
                        .entry((d.template_id.clone(), uuid.clone()))
                        .or_default()
                        .push(d.serial_number.clone()),
                    None => waiting += 1,
                }
            }
            if by_profile.is_empty() {
                total.waiting_for_profile += waiting;
                break;
            }
            let mut round = AssignCounts {
                waiting_for_profile: waiting,
                ..AssignCounts::default()
            };
            for ((template_id, uuid), serials) in by_profile {
                let counts = self
                    .assign_at_apple(&client, token_id, &template_id, &uuid, &serials)
                    .await?;
                round.add(&counts);
            }
            total.add(&round);
            // Only waiting serials left in this batch, or nothing more was settled: stop instead of looping.
            if round.assigned + round.not_accessible + round.failed + round.throttled == 0 {
                break;
            }
            if (due.len() as i64) < ASSIGN_BATCH {
                break;
            }
        }
        Ok(total)
    }

    async fn assign_at_apple(
        &self,
        client: &DepClient,
        token_id: &str,
        template_id: &str,
        profile_uuid: &str,
        serials: &[String],
    ) -> Result<AssignCounts, CoreError> {
        let uuid = ProfileUuid::parse(profile_uuid)
            .map_err(|e| CoreError::Internal(format!("stored profile uuid: {e}")))?;
        let parsed: Vec<SerialNumber> = serials
            .iter()
            .filter_map(|s| SerialNumber::parse(s).ok())
            .collect();
        let now = self.clock.now();
        let result =
            |serial: &SerialNumber, status: AssignStatus, error: Option<String>| AssignResult {
                serial_number: serial.as_str().to_owned(),
                template_id: template_id.to_owned(),
                status,
                profile_uuid: Some(profile_uuid.to_owned()),
                error,
                retry_at: (status == AssignStatus::Throttled)
                    .then(|| now.plus_seconds(THROTTLED_RETRY_SECONDS)),
            };
        let report = match client.assign_profile(&uuid, &parsed).await {
            Ok(r) => r,
            Err(e) => {
                // The whole request failed (network, rate limit beyond the retry budget, terms not
                // accepted): the serials stay pending and are tried at the next sync.
                tracing::warn!(token = %token_id, template = %template_id, error = %e, "profile assignment failed");
                return Ok(AssignCounts::default());
            }
        };
        let mut results = Vec::with_capacity(report.total());
        results.extend(
            report
                .succeeded
                .iter()
                .map(|s| result(s, AssignStatus::Assigned, None)),
        );
        results.extend(report.not_accessible.iter().map(|s| {
            result(
                s,
                AssignStatus::NotAccessible,
                Some("apple: NOT_ACCESSIBLE (not in this mdm server)".into()),
            )
        }));
        results.extend(
            report
                .failed
                .iter()
                .map(|s| result(s, AssignStatus::Failed, Some("apple: FAILED".into()))),
        );
        results.extend(
            report
                .still_throttled
                .iter()
                .map(|s| result(s, AssignStatus::Throttled, Some("apple: THROTTLED".into()))),
        );
        self.store
            .record_dep_assignments(token_id, &results, now)
            .await?;
        Ok(AssignCounts {
            assigned: report.succeeded.len() as u64,
            not_accessible: report.not_accessible.len() as u64,
            failed: report.failed.len() as u64,
            throttled: report.still_throttled.len() as u64,
            waiting_for_profile: 0,
        })
    }

    /// How many serials Apple's sync assigned to the caller's departments (through their templates) have not
    /// enrolled yet: the dashboard's "waiting to enroll (from ASM)".
    pub async fn count_dep_waiting_to_enroll(&self, who: &Principal) -> Result<i64, CoreError> {
        Ok(self.store.count_dep_waiting_to_enroll(who.scope()).await?)
    }

    /// DEP devices with their assignment. Operators and helpdesk see every serial; a tenant sees the serials
    /// assigned to its templates, including those that have not enrolled yet.
    pub async fn list_dep_device_listings(
        &self,
        who: &Principal,
        filter: DepListingFilter<'_>,
        limit: i64,
        offset: i64,
    ) -> Result<(Vec<DepDeviceListingView>, i64), CoreError> {
        let scope = who.scope();
        let total = self.store.count_dep_device_listings(scope, filter).await?;
        let items = self
            .store
            .list_dep_device_listings(scope, filter, limit.clamp(1, 1000), offset.max(0))
            .await?
            .into_iter()
            .map(DepDeviceListingView::from)
            .collect();
        Ok((items, total))
    }
}

/// A DEP device with Orchard's assignment, as the API shows it.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct DepDeviceListingView {
    #[serde(flatten)]
    pub device: DepDeviceView,
    pub template_id: Option<String>,
    pub tenant_id: Option<String>,
    pub assign_status: Option<String>,
    pub assign_error: Option<String>,
    pub assign_retry_at: Option<String>,
    pub assigned_at: Option<String>,
}

impl From<DepDeviceListing> for DepDeviceListingView {
    fn from(l: DepDeviceListing) -> Self {
        Self {
            device: DepDeviceView::from(l.device),
            template_id: l.assignment.template_id,
            tenant_id: l.assignment.tenant_id.map(|t| t.to_string()),
            assign_status: l.assignment.status,
            assign_error: l.assignment.error,
            assign_retry_at: l.assignment.retry_at.map(UnixTime::to_rfc3339),
            assigned_at: l.assignment.assigned_at.map(UnixTime::to_rfc3339),
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;

    #[test]
    fn serial_lists_come_from_lines_csv_columns_and_mixed_separators() {
        assert_eq!(
            parse_serial_list("F9FXK1AAAAAA\nF9FXK1AAAAAB, F9FXK1AAAAAC\n\nF9FXK1AAAAAA").unwrap(),
            vec!["F9FXK1AAAAAA", "F9FXK1AAAAAB", "F9FXK1AAAAAC"]
        );
        let csv =
            "Asset Tag,Serial Number,Model\n\"A-1\",\"F9FXK1AAAAAD\",iPad\nA-2,F9FXK1AAAAAE,iPad\n";
        assert_eq!(
            parse_serial_list(csv).unwrap(),
            vec!["F9FXK1AAAAAD", "F9FXK1AAAAAE"]
        );
        assert!(parse_serial_list("F9FXK1AAAAAA\nnot/a serial!").is_err());
    }

    #[test]
    fn device_names_fill_placeholders() {
        assert_eq!(
            device_name("PHYS-{serial}", "F9FXK1AAAAAA", "iPad13,18", "u"),
            "PHYS-F9FXK1AAAAAA"
        );
        assert_eq!(device_name("{model}/{udid}", "s", "iPad", "U1"), "iPad/U1");
    }

    fn spec() -> TemplateSpec {
        TemplateSpec {
            name: "Physics".into(),
            tenant_id: TenantId::new(),
            profile: TemplateProfile::default(),
            setup: TemplateSetup::default(),
            minimum_os_version: None,
            auto_assign: false,
        }
    }

    #[test]
    fn validation_refuses_unknown_skip_keys_bad_patterns_versions_and_dangerous_commands() {
        assert!(validate(&spec()).is_ok());
        let mut s = spec();
        s.profile.skip_setup_items = vec!["Siri".into(), "NotAPane".into()];
        assert!(validate(&s).is_err());
        let mut s = spec();
        s.setup.device_name_pattern = Some("PHYS-{asset}".into());
        assert!(validate(&s).is_err());
        let mut s = spec();
        s.minimum_os_version = Some("17.x".into());
        assert!(validate(&s).is_err());
        let mut s = spec();
        s.minimum_os_version = Some("17.5.1".into());
        assert!(validate(&s).is_ok());
        let mut s = spec();
        s.setup.commands = vec![Command::DeviceConfigured];
        assert!(validate(&s).is_err());
        let mut s = spec();
        s.name = "  ".into();
        assert!(validate(&s).is_err());
    }

    #[test]
    fn template_json_round_trips_with_defaults() {
        let parsed: TemplateProfile = serde_json::from_str("{}").unwrap();
        assert!(parsed.await_device_configured);
        assert!(!parsed.is_mdm_removable);
        let setup: TemplateSetup = serde_json::from_str(
            r#"{"device_name_pattern":"PHYS-{serial}","commands":[{"type":"DeviceInformation","queries":["OSVersion"]}]}"#,
        )
        .unwrap();
        assert!(setup.escrow_bypass_code);
        assert_eq!(setup.commands.len(), 1);
        assert!(serde_json::from_str::<TemplateProfile>(r#"{"unknown":1}"#).is_err());
    }
}
