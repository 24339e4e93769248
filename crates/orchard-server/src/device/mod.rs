//! The device surface: `/mdm/checkin`, `/mdm/command`, `/scep`, `/enroll/{secret}` (a landing page) and
//! `/enroll/{secret}/profile` (the profile download), `/enroll/dep`.
//!
//! Rule: never answer a device 401 by accident (an Apple device removes its MDM profile on 401). Unknown or
//! unenrolled devices get the documented 403 with `com.apple.unrecognized.device`. 5xx bodies carry no
//! internals.

use axum::body::Bytes;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, put};
use axum::Extension;
use axum::Router;
use orchard_core::device::checkin::CheckinReply;
use orchard_core::enrollment::profile::LinkDownload;
use orchard_core::CoreError;
use serde::Deserialize;

use crate::html_escape;
use crate::state::AppState;
use crate::tls::RequestArrival;

mod error;

pub use error::DeviceError;

pub const MDM_SIGNATURE_HEADER: &str = "mdm-signature";

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/mdm/checkin", put(checkin))
        .route("/mdm/command", put(command))
        .route("/scep", get(scep_get).post(scep_post))
        .route("/enroll/dep", axum::routing::post(enroll_dep))
        // Profiles delivered as declarations (`configuration.legacy`): the URL names device, profile and
        // version and ends in Orchard's tag for them; anything else is 404.
        .route(
            "/mdm/declared-profiles/{device}/{profile}/{version}/{tag}",
            get(declared_profile),
        )
        // The link itself answers a landing page that spends nothing (so do HEAD and link-preview bots, which
        // fetch only the pasted URL); the page's button downloads the profile, which spends one use and mints
        // the SCEP challenge. HEAD of the download is answered like the landing page, never by the download.
        .route("/enroll/{secret}", get(enrollment_landing_page))
        .route(
            "/enroll/{secret}/profile",
            get(enrollment_profile).head(enrollment_link_head),
        )
}

fn signature(headers: &HeaderMap) -> Option<&str> {
    headers
        .get(MDM_SIGNATURE_HEADER)
        .and_then(|v| v.to_str().ok())
}

/// When the request's wait began (see [`RequestArrival`]); now, for a request that did not come through
/// [`crate::serve_tls`] (tests that call the router directly).
fn arrived(arrival: Option<Extension<RequestArrival>>) -> std::time::Instant {
    arrival.map_or_else(std::time::Instant::now, |Extension(RequestArrival(at))| at)
}

async fn checkin(
    State(state): State<AppState>,
    arrival: Option<Extension<RequestArrival>>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, DeviceError> {
    let reply = state
        .orchard
        .checkin_arrived(signature(&headers), &body, arrived(arrival))
        .await?;
    Ok(match reply {
        CheckinReply::Empty => StatusCode::OK.into_response(),
        CheckinReply::Plist(b) => ([(header::CONTENT_TYPE, "application/xml")], b).into_response(),
        CheckinReply::Json(b) => ([(header::CONTENT_TYPE, "application/json")], b).into_response(),
    })
}

async fn command(
    State(state): State<AppState>,
    arrival: Option<Extension<RequestArrival>>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, DeviceError> {
    match state
        .orchard
        .command_report_arrived(signature(&headers), &body, arrived(arrival))
        .await?
    {
        Some(next) => Ok(([(header::CONTENT_TYPE, "application/xml")], next).into_response()),
        None => Ok(StatusCode::OK.into_response()),
    }
}

async fn declared_profile(
    State(state): State<AppState>,
    Path((device, profile, version, tag)): Path<(String, String, String, String)>,
) -> Result<Response, DeviceError> {
    let signed = state
        .orchard
        .declared_profile_download(&device, &profile, &version, &tag)
        .await?;
    Ok((
        [(header::CONTENT_TYPE, "application/x-apple-aspen-config")],
        signed,
    )
        .into_response())
}

#[derive(Debug, Deserialize)]
struct ScepQuery {
    operation: Option<String>,
    message: Option<String>,
}

async fn scep_get(
    State(state): State<AppState>,
    q: Result<Query<ScepQuery>, QueryRejection>,
) -> Result<Response, DeviceError> {
    let Query(q) = q.map_err(|e| CoreError::Invalid(format!("scep query: {e}")))?;
    let o = &state.orchard;
    let reply = match q.operation.as_deref() {
        Some("GetCACaps") => o.scep_ca_caps(),
        Some("GetCACert") => o.scep_ca_cert(),
        Some("PKIOperation") => {
            // RFC 8894 §4.1: GET carries the message base64-encoded in `message`.
            use base64::Engine;
            let msg = q
                .message
                .ok_or_else(|| CoreError::Invalid("message parameter missing".into()))?;
            let der = base64::engine::general_purpose::STANDARD
                .decode(msg.trim())
                .map_err(|_| CoreError::Invalid("message is not base64".into()))?;
            o.scep_pki_operation(&der).await?
        }
        other => {
            return Err(CoreError::Invalid(format!(
                "unknown scep operation {}",
                other.unwrap_or("(none)")
            ))
            .into())
        }
    };
    Ok(([(header::CONTENT_TYPE, reply.content_type)], reply.body).into_response())
}

async fn scep_post(
    State(state): State<AppState>,
    q: Result<Query<ScepQuery>, QueryRejection>,
    body: Bytes,
) -> Result<Response, DeviceError> {
    let Query(q) = q.map_err(|e| CoreError::Invalid(format!("scep query: {e}")))?;
    if q.operation.as_deref() != Some("PKIOperation") {
        return Err(CoreError::Invalid("POST supports only PKIOperation".into()).into());
    }
    let reply = state.orchard.scep_pki_operation(&body).await?;
    Ok(([(header::CONTENT_TYPE, reply.content_type)], reply.body).into_response())
}

/// Headers of every answer about an enrollment link: never cached, never indexed, and no `Referer` carrying the
/// link's secret to wherever the page points.
const LINK_PAGE_HEADERS: [(header::HeaderName, &str); 3] = [
    (header::CACHE_CONTROL, "no-store"),
    (header::REFERRER_POLICY, "no-referrer"),
    (
        header::HeaderName::from_static("x-robots-tag"),
        "noindex, nofollow",
    ),
];

/// `GET /enroll/{secret}` (and HEAD): a short page whose button downloads the profile. Checks the link (404
/// unknown, 410 expired, used up or revoked, with a page saying to ask for a new link) but spends nothing and
/// mints nothing.
async fn enrollment_landing_page(
    State(state): State<AppState>,
    Path(secret): Path<String>,
) -> Result<Response, DeviceError> {
    let organization = html_escape(&state.orchard.config().organization);
    let status = match state.orchard.check_enrollment_link(&secret).await {
        Ok(()) => StatusCode::OK,
        Err(CoreError::NotFound) => StatusCode::NOT_FOUND,
        Err(CoreError::Gone(_)) => StatusCode::GONE,
        Err(other) => return Err(other.into()),
    };
    if status != StatusCode::OK {
        // A person reads this page: say what to do, and nothing about why (unknown, expired, used up or
        // revoked all read the same).
        let page = format!(
            "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\">\
             <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
             <title>{organization} device management</title></head><body>\
             <h1>This enrollment link cannot be used</h1>\
             <p>Ask your department's IT contact for a new enrollment link.</p></body></html>"
        );
        return Ok((
            status,
            LINK_PAGE_HEADERS,
            [(header::CONTENT_TYPE, "text/html; charset=utf-8")],
            page,
        )
            .into_response());
    }
    // Relative to `/enroll/{secret}`: the download sits beside it.
    let download = format!("{}/profile", html_escape(&secret));
    let page = format!(
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
         <title>{organization} device management</title></head><body>\
         <h1>{organization} device management</h1>\
         <p>This installs the enrollment profile of {organization} on this iPad. After the download, open \
         Settings and install the downloaded profile.</p>\
         <p><a id=\"download\" href=\"{download}\" rel=\"nofollow\">Download the enrollment profile</a></p>\
         </body></html>"
    );
    Ok((
        LINK_PAGE_HEADERS,
        [(header::CONTENT_TYPE, "text/html; charset=utf-8")],
        page,
    )
        .into_response())
}

/// `HEAD /enroll/{secret}/profile`: whether the link still hands out profiles, without spending it.
async fn enrollment_link_head(
    State(state): State<AppState>,
    Path(secret): Path<String>,
) -> Result<Response, DeviceError> {
    state.orchard.check_enrollment_link(&secret).await?;
    Ok((
        LINK_PAGE_HEADERS,
        [(header::CONTENT_TYPE, "application/x-apple-aspen-config")],
    )
        .into_response())
}

/// `GET /enroll/{secret}/profile`: the signed enrollment profile, with its one-time SCEP challenge.
async fn enrollment_profile(
    State(state): State<AppState>,
    Path(secret): Path<String>,
) -> Result<Response, DeviceError> {
    match state.orchard.enrollment_profile_for_link(&secret).await? {
        LinkDownload::Profile(profile) => Ok((
            LINK_PAGE_HEADERS,
            [
                (header::CONTENT_TYPE, "application/x-apple-aspen-config"),
                (
                    header::CONTENT_DISPOSITION,
                    "attachment; filename=\"orchard-enrollment.mobileconfig\"",
                ),
            ],
            profile,
        )
            .into_response()),
        LinkDownload::RateLimited {
            retry_after_seconds,
        } => Ok((
            StatusCode::TOO_MANY_REQUESTS,
            [
                (header::RETRY_AFTER, retry_after_seconds.to_string()),
                (header::CONTENT_TYPE, "text/plain".to_string()),
            ],
            "too many downloads of this link; try again shortly",
        )
            .into_response()),
    }
}

/// Automated Device Enrollment: the device POSTs its CMS-signed MachineInfo (the ADE profile's `url`) and gets
/// the enrollment profile, or Apple's documented 403 telling it to update iOS first. Refusals are 403.
async fn enroll_dep(State(state): State<AppState>, body: Bytes) -> Result<Response, DeviceError> {
    use orchard_core::enrollment::ade::ZeroTouchAnswer;
    match state.orchard.enroll_dep(&body).await? {
        ZeroTouchAnswer::Profile(profile) => Ok((
            [(header::CONTENT_TYPE, "application/x-apple-aspen-config")],
            profile,
        )
            .into_response()),
        ZeroTouchAnswer::SoftwareUpdateRequired(json) => Ok((
            StatusCode::FORBIDDEN,
            [(header::CONTENT_TYPE, "application/json")],
            json,
        )
            .into_response()),
    }
}
