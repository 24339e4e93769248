//! Planned-maintenance notices: central IT announces a window ("Orchard is being upgraded Saturday 06:00–08:00")
//! in Swedish and English, and every department sees it on its dashboard and through the API until the window
//! ends. Service-wide by nature: every signed-in caller reads them, whatever their tenant; only operators
//! publish and withdraw.

use orchard_store::MaintenanceNoticeRecord;
use orchard_types::{MaintenanceNoticeId, UnixTime};
use serde::{Deserialize, Serialize};

use crate::access::capability::OperatorCtx;
use crate::access::principal::Principal;
use crate::{CoreError, Orchard};

/// The longest text taken in each language (a banner, not a document).
pub const MAX_NOTICE_TEXT: usize = 1000;
/// The longest window taken: longer maintenance is an outage to plan with the departments, not a banner.
pub const MAX_WINDOW_DAYS: i64 = 31;

/// A notice to publish.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct NewMaintenanceNotice {
    /// Start of the window, RFC 3339.
    pub starts_at: String,
    /// End of the window, RFC 3339; after the start and in the future.
    pub ends_at: String,
    /// The text in Swedish.
    pub text_sv: String,
    /// The text in English.
    pub text_en: String,
}

/// A notice as the API shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct MaintenanceNoticeView {
    pub id: String,
    pub starts_at: String,
    pub ends_at: String,
    pub text_sv: String,
    pub text_en: String,
    /// Whether the window has begun at the time of the answer.
    pub in_progress: bool,
    pub created_at: String,
    pub created_by: Option<String>,
}

impl MaintenanceNoticeView {
    fn of(n: &MaintenanceNoticeRecord, now: UnixTime) -> Self {
        MaintenanceNoticeView {
            id: n.id.to_string(),
            starts_at: n.starts_at.to_rfc3339(),
            ends_at: n.ends_at.to_rfc3339(),
            text_sv: n.text_sv.clone(),
            text_en: n.text_en.clone(),
            in_progress: n.starts_at <= now,
            created_at: n.created_at.to_rfc3339(),
            created_by: n.created_by.clone(),
        }
    }
}

fn instant(field: &str, value: &str) -> Result<UnixTime, CoreError> {
    UnixTime::parse_rfc3339(value.trim()).ok_or_else(|| {
        CoreError::Invalid(format!(
            "{field} is not an RFC 3339 time (like 2026-12-05T06:00:00Z)"
        ))
    })
}

fn text(field: &str, value: &str) -> Result<String, CoreError> {
    let value = value.trim();
    if value.is_empty() {
        return Err(CoreError::Invalid(format!("{field} must not be empty")));
    }
    if value.chars().count() > MAX_NOTICE_TEXT {
        return Err(CoreError::Invalid(format!(
            "{field} must be at most {MAX_NOTICE_TEXT} characters"
        )));
    }
    if value.chars().any(|c| c.is_control() && c != '\n') {
        return Err(CoreError::Invalid(format!(
            "{field} must not contain control characters"
        )));
    }
    Ok(value.to_owned())
}

impl Orchard {
    /// Publishes a notice (operators). Both languages are required: every department reads it in its own.
    pub async fn publish_maintenance_notice(
        &self,
        operator: &OperatorCtx,
        new: &NewMaintenanceNotice,
    ) -> Result<MaintenanceNoticeView, CoreError> {
        let now = self.clock.now();
        let starts_at = instant("starts_at", &new.starts_at)?;
        let ends_at = instant("ends_at", &new.ends_at)?;
        if ends_at <= starts_at {
            return Err(CoreError::Invalid("ends_at must be after starts_at".into()));
        }
        if ends_at <= now {
            return Err(CoreError::Invalid("ends_at is in the past".into()));
        }
        if ends_at.0 - starts_at.0 > MAX_WINDOW_DAYS * 86_400 {
            return Err(CoreError::Invalid(format!(
                "the window must be at most {MAX_WINDOW_DAYS} days"
            )));
        }
        let record = MaintenanceNoticeRecord {
            id: MaintenanceNoticeId::new(),
            starts_at,
            ends_at,
            text_sv: text("text_sv", &new.text_sv)?,
            text_en: text("text_en", &new.text_en)?,
            created_at: now,
            created_by: Some(operator.principal().actor()),
            withdrawn_at: None,
        };
        self.store.create_maintenance_notice(&record).await?;
        tracing::info!(notice = %record.id, actor = %operator.principal().actor(), "maintenance notice published");
        Ok(MaintenanceNoticeView::of(&record, now))
    }

    /// The notices in force or announced (window not yet over), soonest first; for every signed-in caller.
    pub async fn maintenance_notices(
        &self,
        _who: &Principal,
    ) -> Result<Vec<MaintenanceNoticeView>, CoreError> {
        let now = self.clock.now();
        Ok(self
            .store
            .current_maintenance_notices(now)
            .await?
            .iter()
            .map(|n| MaintenanceNoticeView::of(n, now))
            .collect())
    }

    /// Withdraws a notice before its window ends (operators). NotFound for unknown, withdrawn or ended ones.
    pub async fn withdraw_maintenance_notice(
        &self,
        operator: &OperatorCtx,
        id: MaintenanceNoticeId,
    ) -> Result<(), CoreError> {
        self.store
            .withdraw_maintenance_notice(id, self.clock.now())
            .await?;
        tracing::info!(notice = %id, actor = %operator.principal().actor(), "maintenance notice withdrawn");
        Ok(())
    }
}
