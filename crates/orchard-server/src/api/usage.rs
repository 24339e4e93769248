//! `/usage`: device-days and amounts per tenant for a period, for billing (JSON or CSV).

use axum::response::IntoResponse;
use axum::Json;
use orchard_core::reporting::usage::parse_day;
use serde::Deserialize;

use super::error::ApiError;
use super::extract::{AppState, Overseer, QueryString, State};
use super::reply::{csv_response, Reply, ReportFormat};

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub(super) struct UsageParams {
    /// First day of the period (YYYY-MM-DD), required.
    #[param(required = true, value_type = String, format = Date)]
    from: Option<String>,
    /// Last day of the period (YYYY-MM-DD, included), required.
    #[param(required = true, value_type = String, format = Date)]
    to: Option<String>,
    /// `json` (default) or `csv`.
    #[param(pattern = "^(json|csv)$")]
    format: Option<String>,
}

/// `GET /usage?from=YYYY-MM-DD&to=YYYY-MM-DD[&format=csv]`: device-days and amounts per tenant for the days
/// `from..=to`, at the server's price (`--price-per-device-year`, `--currency`; default 400 SEK).
#[utoipa::path(
    get,
    path = "/usage",
    tag = "usage",
    params(UsageParams),
    responses((status = 200, description = "Usage per tenant (CSV with format=csv)", content((orchard_core::reporting::usage::UsageReport = "application/json"), (String = "text/csv"))))
)]
pub(super) async fn usage_report(
    State(state): State<AppState>,
    Overseer(overseer): Overseer,
    QueryString(params): QueryString<UsageParams>,
) -> Reply {
    let format = ReportFormat::parse(params.format.as_deref(), ReportFormat::Json)?;
    let day = |s: Option<&str>, name: &str| -> Result<_, ApiError> {
        let s = s.ok_or_else(|| ApiError::invalid(format!("{name} (YYYY-MM-DD) is required")))?;
        Ok(parse_day(s)?)
    };
    let from = day(params.from.as_deref(), "from")?;
    let to = day(params.to.as_deref(), "to")?;
    let settings = state.orchard.usage_settings().clone();
    let report = state
        .orchard
        .usage_report(&overseer, from, to, &settings)
        .await?;
    Ok(match format {
        ReportFormat::Json => Json(report).into_response(),
        ReportFormat::Csv => csv_response(
            &format!("orchard-usage-{}-{}.csv", report.from, report.to),
            report.to_csv(),
        ),
    })
}
