//! Central IT's pages (operators only; everyone else gets 403): every department with its iPad counts, the people
//! who signed in and the role mappings that give them roles, API tokens (created with the secret shown once,
//! revoked), Apple's side (the push certificate, DEP tokens with their last sync, enrollment templates with the
//! department each serves), enrollment links, and every credential that expires soon.
//!
//! Pages call the same core methods as the API with the operator capability (`Principal::operator`, refused
//! before anything is read); posts are CSRF-checked first and audited under the API's action names with
//! `via: web`.

use std::collections::HashMap;

use askama::Template;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::Response;
use axum::Form;
use orchard_core::access::capability::OperatorCtx;
use orchard_core::access::tokens::NewTokenRequest;
use orchard_core::access::users::NewRoleMapping;
use orchard_core::reporting::audit_actions::AuditNote;
use orchard_core::CoreError;
use orchard_store::{DeviceQuery, Tenant};
use orchard_types::{EnrollmentLinkId, Role, TenantId, TokenId};
use serde::Deserialize;

use super::i18n::Texts;
use super::page::{error_page, redirect, render, role_label, Chrome};
use super::session::SignedIn;
use crate::state::AppState;

/// "Expires soon" on the credentials page: the dashboard's warning period.
const EXPIRY_DAYS: i64 = 60;
/// People listed (the newest sign-ins first is the store's order).
const PEOPLE: i64 = 500;
/// Tokens listed.
const TOKENS: i64 = 500;

/// The operator capability (Forbidden for everyone else: the 403 page).
fn operator(who: &SignedIn) -> Result<OperatorCtx, CoreError> {
    who.principal.operator()
}

fn minute(rfc3339: &str) -> String {
    rfc3339.replace('T', " ").chars().take(16).collect()
}

fn opt_minute(rfc3339: Option<&str>) -> String {
    rfc3339.map(minute).unwrap_or_default()
}

/// Department names by id (also for ids in text form, as views carry them).
struct Names(HashMap<String, String>);

impl Names {
    fn of(tenants: &[Tenant]) -> Names {
        Names(
            tenants
                .iter()
                .map(|t| (t.id.to_string(), t.name.clone()))
                .collect(),
        )
    }

    /// The department's name; central IT's objects (no department) say so.
    fn name(&self, t: Texts, id: Option<&str>) -> String {
        match id {
            None => t.get("operator.central").to_string(),
            Some(id) => self.0.get(id).cloned().unwrap_or_else(|| id.to_string()),
        }
    }
}

async fn tenants(state: &AppState, who: &SignedIn) -> Result<Vec<Tenant>, Response> {
    state
        .orchard
        .list_tenants(&who.principal)
        .await
        .map_err(|e| who.core_error(e))
}

/// A `?done=…` notice of a page, in the reader's words (only keys the catalogue has).
#[derive(Deserialize, Default)]
pub(super) struct Done {
    done: Option<String>,
}

fn done_text(
    t: Texts,
    done: Result<Query<Done>, axum::extract::rejection::QueryRejection>,
) -> Option<String> {
    let key = format!("operator.done.{}", done.ok()?.0.done?);
    t.has(&key).then(|| t.get(&key).to_string())
}

fn form_refused(who: &SignedIn) -> Response {
    let t = who.texts;
    error_page(
        t,
        StatusCode::BAD_REQUEST,
        t.get("error.form"),
        &who.request_id,
    )
}

/// `GET /ui/operator`.
pub(super) async fn index() -> Response {
    redirect("/ui/operator/tenants")
}

struct TenantRow {
    name: String,
    code: String,
    total: i64,
    enrolled: i64,
    pending: i64,
    created: String,
}

#[derive(Template)]
#[template(path = "operator_tenants.html")]
struct TenantsPage {
    c: Chrome,
    rows: Vec<TenantRow>,
    total: i64,
}

/// `GET /ui/operator/tenants`: every department with its iPad counts.
pub(super) async fn tenants_page(State(state): State<AppState>, who: SignedIn) -> Response {
    if let Err(e) = operator(&who) {
        return who.core_error(e);
    }
    let tenants = match tenants(&state, &who).await {
        Ok(t) => t,
        Err(page) => return page,
    };
    let now = state.orchard.now();
    let mut rows = Vec::with_capacity(tenants.len());
    for tenant in &tenants {
        let counts = match state
            .orchard
            .device_counts(
                &who.principal,
                &DeviceQuery {
                    tenant_id: Some(tenant.id),
                    ..DeviceQuery::default()
                },
                now,
            )
            .await
        {
            Ok(c) => c,
            Err(e) => return who.core_error(e),
        };
        rows.push(TenantRow {
            name: tenant.name.clone(),
            code: tenant.code.clone(),
            total: counts.total,
            enrolled: counts.enrolled,
            pending: counts.pending,
            created: minute(&tenant.created_at.to_rfc3339()),
        });
    }
    let page = TenantsPage {
        c: Chrome::of(&state, &who, "/ui/operator/tenants").await,
        total: rows.iter().map(|r| r.total).sum(),
        rows,
    };
    render(StatusCode::OK, &page)
}

struct PersonRow {
    name: String,
    email: String,
    last_login: String,
    disabled: bool,
    roles: String,
}

struct MappingRow {
    id: String,
    claim: String,
    value: String,
    role: String,
    department: String,
}

/// A department as a form's choice.
struct TenantChoice {
    id: String,
    name: String,
}

fn choices(tenants: &[Tenant]) -> Vec<TenantChoice> {
    tenants
        .iter()
        .map(|t| TenantChoice {
            id: t.id.to_string(),
            name: t.name.clone(),
        })
        .collect()
}

#[derive(Template)]
#[template(path = "operator_people.html")]
struct PeoplePage {
    c: Chrome,
    people: Vec<PersonRow>,
    mappings: Vec<MappingRow>,
    tenants: Vec<TenantChoice>,
    done: Option<String>,
}

/// `GET /ui/operator/people`: who signed in, with their roles, and the role mappings.
pub(super) async fn people_page(
    State(state): State<AppState>,
    who: SignedIn,
    done: Result<Query<Done>, axum::extract::rejection::QueryRejection>,
) -> Response {
    let operator = match operator(&who) {
        Ok(o) => o,
        Err(e) => return who.core_error(e),
    };
    let t = who.texts;
    let tenants = match tenants(&state, &who).await {
        Ok(t) => t,
        Err(page) => return page,
    };
    let names = Names::of(&tenants);
    let overseer = match who.principal.oversight() {
        Ok(o) => o,
        Err(e) => return who.core_error(e),
    };
    let users = match state.orchard.list_users(&overseer, PEOPLE, 0).await {
        Ok(u) => u,
        Err(e) => return who.core_error(e),
    };
    let mappings = match state.orchard.list_role_mappings(&operator).await {
        Ok(m) => m,
        Err(e) => return who.core_error(e),
    };
    let people = users
        .iter()
        .map(|u| PersonRow {
            name: u.display_name.clone().unwrap_or_else(|| u.subject.clone()),
            email: u.email.clone().unwrap_or_default(),
            last_login: opt_minute(u.last_login_at.as_deref()),
            disabled: u.disabled_at.is_some(),
            roles: u
                .memberships
                .iter()
                .map(|m| {
                    let tenant = m.tenant_id.map(|id| id.to_string());
                    t.fill(
                        "operator.role_in",
                        &[
                            ("role", role_label(t, m.role)),
                            ("department", &names.name(t, tenant.as_deref())),
                        ],
                    )
                })
                .collect::<Vec<_>>()
                .join("; "),
        })
        .collect();
    let mappings = mappings
        .iter()
        .map(|m| {
            let tenant = m.tenant_id.map(|id| id.to_string());
            MappingRow {
                id: m.id.clone(),
                claim: m.claim.clone(),
                value: m.value.clone(),
                role: role_label(t, m.role).to_string(),
                department: names.name(t, tenant.as_deref()),
            }
        })
        .collect();
    let page = PeoplePage {
        c: Chrome::of(&state, &who, "/ui/operator/people").await,
        people,
        mappings,
        tenants: choices(&tenants),
        done: done_text(t, done),
    };
    render(StatusCode::OK, &page)
}

#[derive(Deserialize)]
pub(super) struct MappingForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    claim: String,
    #[serde(default)]
    value: String,
    #[serde(default)]
    role: String,
    #[serde(default)]
    tenant: String,
}

/// A department field of a form: empty for none, else one of the reader's departments (another id is refused
/// as invalid input naming the field).
fn tenant_field(value: &str) -> Result<Option<TenantId>, CoreError> {
    let value = value.trim();
    if value.is_empty() {
        return Ok(None);
    }
    TenantId::parse(value)
        .map(Some)
        .map_err(|_| CoreError::Invalid("tenant: not a department id".into()))
}

/// `POST /ui/operator/role-mappings`.
pub(super) async fn create_mapping(
    State(state): State<AppState>,
    who: SignedIn,
    form: Result<Form<MappingForm>, axum::extract::rejection::FormRejection>,
) -> Response {
    let Ok(Form(form)) = form else {
        return form_refused(&who);
    };
    if let Some(refused) = who.csrf_refusal(&form.csrf) {
        return refused;
    }
    let outcome = async {
        let operator = who.principal.operator()?;
        let role = Role::parse(form.role.trim()).ok_or_else(|| {
            CoreError::Invalid("role: must be operator, helpdesk, admin or viewer".into())
        })?;
        let tenant_id = tenant_field(&form.tenant)?;
        state
            .orchard
            .create_role_mapping(
                &operator,
                NewRoleMapping {
                    claim: form.claim.trim().to_string(),
                    value: form.value.trim().to_string(),
                    role,
                    tenant_id,
                },
            )
            .await
    }
    .await;
    let mut note = AuditNote::default();
    if let Ok(m) = &outcome {
        note = note.target(&m.id).tenant(m.tenant_id);
    }
    let status = SignedIn::status_of(outcome.as_ref().map(|_| ()));
    if let Err(page) = who
        .record_post(
            &state,
            "/role-mappings",
            "/role-mappings".into(),
            "/ui/operator/role-mappings".into(),
            status,
            note,
        )
        .await
    {
        return page;
    }
    match outcome {
        Ok(_) => redirect("/ui/operator/people?done=mapping_created"),
        Err(e) => who.core_error(e),
    }
}

#[derive(Deserialize)]
pub(super) struct CsrfForm {
    #[serde(default)]
    csrf: String,
}

/// `POST /ui/operator/role-mappings/{id}/delete`.
pub(super) async fn delete_mapping(
    State(state): State<AppState>,
    who: SignedIn,
    Path(id): Path<String>,
    form: Result<Form<CsrfForm>, axum::extract::rejection::FormRejection>,
) -> Response {
    let Ok(Form(form)) = form else {
        return form_refused(&who);
    };
    if let Some(refused) = who.csrf_refusal(&form.csrf) {
        return refused;
    }
    let outcome = match who.principal.operator() {
        Ok(operator) => state.orchard.delete_role_mapping(&operator, &id).await,
        Err(e) => Err(e),
    };
    let status = match SignedIn::status_of(outcome.as_ref().copied()) {
        201 => 204,
        other => other,
    };
    if let Err(page) = who
        .record_request(
            &state,
            "DELETE",
            "/role-mappings/{id}",
            format!("/role-mappings/{id}"),
            format!("/ui/operator/role-mappings/{id}/delete"),
            status,
            AuditNote::default().target(&id),
        )
        .await
    {
        return page;
    }
    match outcome {
        Ok(()) => redirect("/ui/operator/people?done=mapping_deleted"),
        Err(e) => who.core_error(e),
    }
}

struct TokenRow {
    id: String,
    name: String,
    role: String,
    department: String,
    created: String,
    created_by: String,
    expires: String,
    last_used: String,
    active: bool,
    revoked: bool,
}

/// A token just made: its secret, shown on this one answer and never again.
struct NewSecret {
    name: String,
    secret: String,
}

#[derive(Template)]
#[template(path = "operator_tokens.html")]
struct TokensPage {
    c: Chrome,
    tokens: Vec<TokenRow>,
    tenants: Vec<TenantChoice>,
    created: Option<NewSecret>,
    done: Option<String>,
}

async fn tokens_page_with(
    state: &AppState,
    who: &SignedIn,
    created: Option<NewSecret>,
    done: Option<String>,
) -> Response {
    let t = who.texts;
    let manager = match who.principal.token_admin() {
        Ok(m) => m,
        Err(e) => return who.core_error(e),
    };
    let tenants = match tenants(state, who).await {
        Ok(t) => t,
        Err(page) => return page,
    };
    let names = Names::of(&tenants);
    let tokens = match state.orchard.list_tokens(&manager, TOKENS, 0).await {
        Ok(t) => t,
        Err(e) => return who.core_error(e),
    };
    let tokens = tokens
        .iter()
        .map(|k| TokenRow {
            id: k.id.clone(),
            name: k.name.clone(),
            role: Role::parse(k.role)
                .map(|r| role_label(t, r).to_string())
                .unwrap_or_else(|| k.role.to_string()),
            department: names.name(t, k.tenant_id.as_deref()),
            created: minute(&k.created_at),
            created_by: k.created_by.clone().unwrap_or_default(),
            expires: opt_minute(k.expires_at.as_deref()),
            last_used: opt_minute(k.last_used_at.as_deref()),
            active: k.active,
            revoked: k.revoked_at.is_some(),
        })
        .collect();
    let page = TokensPage {
        c: Chrome::of(state, who, "/ui/operator/tokens").await,
        tokens,
        tenants: choices(&tenants),
        created,
        done,
    };
    render(StatusCode::OK, &page)
}

/// `GET /ui/operator/tokens`.
pub(super) async fn tokens_page(
    State(state): State<AppState>,
    who: SignedIn,
    done: Result<Query<Done>, axum::extract::rejection::QueryRejection>,
) -> Response {
    if let Err(e) = operator(&who) {
        return who.core_error(e);
    }
    let done = done_text(who.texts, done);
    tokens_page_with(&state, &who, None, done).await
}

#[derive(Deserialize)]
pub(super) struct TokenForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    name: String,
    #[serde(default)]
    role: String,
    #[serde(default)]
    tenant: String,
    #[serde(default)]
    days: String,
}

/// `POST /ui/operator/tokens`: makes a token and answers the list with its secret, once (no redirect: the secret
/// is in no address and no later page).
pub(super) async fn create_token(
    State(state): State<AppState>,
    who: SignedIn,
    form: Result<Form<TokenForm>, axum::extract::rejection::FormRejection>,
) -> Response {
    let Ok(Form(form)) = form else {
        return form_refused(&who);
    };
    if let Some(refused) = who.csrf_refusal(&form.csrf) {
        return refused;
    }
    let outcome = async {
        // Operators only on these pages (a department admin's own tokens are the API's and the CLI's).
        who.principal.operator()?;
        let manager = who.principal.token_admin()?;
        let name = form.name.trim();
        if name.is_empty() || name.chars().count() > 200 {
            return Err(CoreError::Invalid("name: 1 to 200 characters".into()));
        }
        let role = Role::parse(form.role.trim()).ok_or_else(|| {
            CoreError::Invalid("role: must be operator, helpdesk, admin or viewer".into())
        })?;
        let expires_in_days = match form.days.trim() {
            "" => None,
            d => Some(
                d.parse::<i64>()
                    .map_err(|_| CoreError::Invalid("days: a whole number of days".into()))?,
            ),
        };
        state
            .orchard
            .create_token(
                &manager,
                NewTokenRequest {
                    name: name.to_string(),
                    role,
                    tenant_id: tenant_field(&form.tenant)?,
                    expires_in_days,
                },
            )
            .await
    }
    .await;
    let mut note = AuditNote::default();
    if let Ok(created) = &outcome {
        note = note.target(&created.token.id).tenant(
            created
                .token
                .tenant_id
                .as_deref()
                .and_then(|t| TenantId::parse(t).ok()),
        );
    }
    let status = SignedIn::status_of(outcome.as_ref().map(|_| ()));
    if let Err(page) = who
        .record_post(
            &state,
            "/tokens",
            "/tokens".into(),
            "/ui/operator/tokens".into(),
            status,
            note,
        )
        .await
    {
        return page;
    }
    match outcome {
        Ok(created) => {
            let secret = NewSecret {
                name: created.token.name,
                secret: created.secret,
            };
            tokens_page_with(&state, &who, Some(secret), None).await
        }
        Err(e) => who.core_error(e),
    }
}

/// `POST /ui/operator/tokens/{id}/revoke`.
pub(super) async fn revoke_token(
    State(state): State<AppState>,
    who: SignedIn,
    Path(id): Path<String>,
    form: Result<Form<CsrfForm>, axum::extract::rejection::FormRejection>,
) -> Response {
    let Ok(Form(form)) = form else {
        return form_refused(&who);
    };
    if let Some(refused) = who.csrf_refusal(&form.csrf) {
        return refused;
    }
    let outcome = async {
        who.principal.operator()?;
        let manager = who.principal.token_admin()?;
        let token = TokenId::parse(&id).map_err(|_| CoreError::NotFound)?;
        state.orchard.revoke_token(&manager, token).await
    }
    .await;
    let note = match &outcome {
        Ok(view) => AuditNote::default().tenant(
            view.tenant_id
                .as_deref()
                .and_then(|t| TenantId::parse(t).ok()),
        ),
        Err(_) => AuditNote::default(),
    };
    let status = match SignedIn::status_of(outcome.as_ref().map(|_| ())) {
        201 => 200,
        other => other,
    };
    if let Err(page) = who
        .record_request(
            &state,
            "DELETE",
            "/tokens/{id}",
            format!("/tokens/{id}"),
            format!("/ui/operator/tokens/{id}/revoke"),
            status,
            note,
        )
        .await
    {
        return page;
    }
    match outcome {
        Ok(_) => redirect("/ui/operator/tokens?done=token_revoked"),
        Err(e) => who.core_error(e),
    }
}

struct PushLine {
    topic: String,
    subject: String,
    expires: String,
    days_left: i64,
    level: &'static str,
    stopped: Option<String>,
}

struct DepRow {
    id: String,
    name: String,
    server: String,
    uploaded: bool,
    expires: String,
    days_left: String,
    level: &'static str,
    last_sync: String,
    last_error: String,
}

struct TemplateRow {
    name: String,
    token: String,
    department: String,
    auto_assign: bool,
    defined: String,
    define_error: String,
}

#[derive(Template)]
#[template(path = "operator_apple.html")]
struct ApplePage {
    c: Chrome,
    push: Option<PushLine>,
    development_topic: String,
    dep: Vec<DepRow>,
    templates: Vec<TemplateRow>,
    done: Option<String>,
}

fn level(days_left: i64) -> &'static str {
    if days_left < 0 {
        "red"
    } else if days_left <= EXPIRY_DAYS {
        "amber"
    } else {
        "green"
    }
}

/// `GET /ui/operator/apple`: the push certificate, DEP tokens and enrollment templates.
pub(super) async fn apple_page(
    State(state): State<AppState>,
    who: SignedIn,
    done: Result<Query<Done>, axum::extract::rejection::QueryRejection>,
) -> Response {
    let operator = match operator(&who) {
        Ok(o) => o,
        Err(e) => return who.core_error(e),
    };
    let t = who.texts;
    let tenants = match tenants(&state, &who).await {
        Ok(t) => t,
        Err(page) => return page,
    };
    let names = Names::of(&tenants);
    let push = state.orchard.push_certificate_status().map(|p| PushLine {
        topic: p.topic,
        subject: p.subject.unwrap_or_default(),
        expires: minute(&p.not_after),
        days_left: p.days_left,
        level: level(p.days_left),
        stopped: p.pushes_stopped,
    });
    let tokens = match state.orchard.list_dep_tokens(&operator).await {
        Ok(t) => t,
        Err(e) => return who.core_error(e),
    };
    let token_names: HashMap<String, String> = tokens
        .iter()
        .map(|k| (k.id.clone(), k.name.clone()))
        .collect();
    let dep = tokens
        .iter()
        .map(|k| DepRow {
            id: k.id.clone(),
            name: k.name.clone(),
            server: [k.server_name.as_deref(), k.org_name.as_deref()]
                .into_iter()
                .flatten()
                .collect::<Vec<_>>()
                .join(" · "),
            uploaded: k.uploaded,
            expires: opt_minute(k.access_token_expiry.as_deref()),
            days_left: k.days_left.map(|d| d.to_string()).unwrap_or_default(),
            level: k.days_left.map(level).unwrap_or("amber"),
            last_sync: opt_minute(k.last_sync_at.as_deref()),
            last_error: k.last_sync_error.clone().unwrap_or_default(),
        })
        .collect();
    let templates = match state.orchard.list_dep_templates(&who.principal, None).await {
        Ok(t) => t,
        Err(e) => return who.core_error(e),
    };
    let templates = templates
        .iter()
        .map(|tpl| TemplateRow {
            name: tpl.name.clone(),
            token: token_names
                .get(&tpl.token_id)
                .cloned()
                .unwrap_or_else(|| tpl.token_id.clone()),
            department: names.name(t, Some(&tpl.tenant_id)),
            auto_assign: tpl.auto_assign,
            defined: opt_minute(tpl.defined_at.as_deref()),
            define_error: tpl.define_error.clone().unwrap_or_default(),
        })
        .collect();
    let page = ApplePage {
        c: Chrome::of(&state, &who, "/ui/operator/apple").await,
        push,
        development_topic: state.orchard.current_topic().to_string(),
        dep,
        templates,
        done: done_text(t, done),
    };
    render(StatusCode::OK, &page)
}

/// `POST /ui/operator/dep-tokens/{id}/sync`: a DEP sync now (as `POST /api/v1/dep-tokens/{id}/sync`); the page
/// then shows its time, or the error with what to do.
pub(super) async fn sync_dep(
    State(state): State<AppState>,
    who: SignedIn,
    Path(id): Path<String>,
    form: Result<Form<CsrfForm>, axum::extract::rejection::FormRejection>,
) -> Response {
    let Ok(Form(form)) = form else {
        return form_refused(&who);
    };
    if let Some(refused) = who.csrf_refusal(&form.csrf) {
        return refused;
    }
    let outcome = match who.principal.operator() {
        Ok(operator) => state.orchard.sync_dep_token(&operator, &id).await,
        Err(e) => Err(e),
    };
    let mut note = AuditNote::default();
    if let Ok(summary) = &outcome {
        note = note
            .detail("records", summary.records)
            .detail("active_devices", summary.active_devices);
    }
    let status = match SignedIn::status_of(outcome.as_ref().map(|_| ())) {
        201 => 200,
        other => other,
    };
    if let Err(page) = who
        .record_post(
            &state,
            "/dep-tokens/{id}/sync",
            format!("/dep-tokens/{id}/sync"),
            format!("/ui/operator/dep-tokens/{id}/sync"),
            status,
            note,
        )
        .await
    {
        return page;
    }
    match outcome {
        Ok(_) => redirect("/ui/operator/apple?done=dep_synced"),
        Err(e) => who.core_error(e),
    }
}

struct LinkRow {
    id: String,
    tenant_id: String,
    department: String,
    name: String,
    uses: String,
    expires: String,
    active: bool,
    created: String,
}

#[derive(Template)]
#[template(path = "operator_links.html")]
struct LinksPage {
    c: Chrome,
    links: Vec<LinkRow>,
    done: Option<String>,
}

/// `GET /ui/operator/links`: every department's enrollment links (never their secrets: only hashes are kept).
pub(super) async fn links_page(
    State(state): State<AppState>,
    who: SignedIn,
    done: Result<Query<Done>, axum::extract::rejection::QueryRejection>,
) -> Response {
    if let Err(e) = operator(&who) {
        return who.core_error(e);
    }
    let t = who.texts;
    let tenants = match tenants(&state, &who).await {
        Ok(t) => t,
        Err(page) => return page,
    };
    let mut links = Vec::new();
    for tenant in &tenants {
        let of_tenant = match state
            .orchard
            .list_enrollment_links(&who.principal, tenant.id)
            .await
        {
            Ok(l) => l,
            Err(e) => return who.core_error(e),
        };
        links.extend(of_tenant.into_iter().map(|l| LinkRow {
            id: l.id,
            tenant_id: l.tenant_id,
            department: tenant.name.clone(),
            name: l.name,
            uses: match l.max_uses {
                Some(max) => format!("{} / {max}", l.uses),
                None => l.uses.to_string(),
            },
            expires: opt_minute(l.expires_at.as_deref()),
            active: l.active,
            created: minute(&l.created_at),
        }));
    }
    let page = LinksPage {
        c: Chrome::of(&state, &who, "/ui/operator/links").await,
        links,
        done: done_text(t, done),
    };
    render(StatusCode::OK, &page)
}

/// `POST /ui/operator/tenants/{tenant}/links/{link}/revoke`.
pub(super) async fn revoke_link(
    State(state): State<AppState>,
    who: SignedIn,
    Path((tenant, link)): Path<(String, String)>,
    form: Result<Form<CsrfForm>, axum::extract::rejection::FormRejection>,
) -> Response {
    let Ok(Form(form)) = form else {
        return form_refused(&who);
    };
    if let Some(refused) = who.csrf_refusal(&form.csrf) {
        return refused;
    }
    let outcome = async {
        who.principal.operator()?;
        let (Ok(tenant_id), Ok(link_id)) =
            (TenantId::parse(&tenant), EnrollmentLinkId::parse(&link))
        else {
            return Err(CoreError::NotFound);
        };
        state
            .orchard
            .revoke_enrollment_link(&who.principal, tenant_id, link_id)
            .await
    }
    .await;
    let mut note = AuditNote::default();
    if let Ok(revoked) = &outcome {
        note = note.detail("revoked_identities", *revoked);
    }
    let status = match SignedIn::status_of(outcome.as_ref().map(|_| ())) {
        201 => 204,
        other => other,
    };
    if let Err(page) = who
        .record_request(
            &state,
            "DELETE",
            "/tenants/{id}/enrollment-links/{link}",
            format!("/tenants/{tenant}/enrollment-links/{link}"),
            format!("/ui/operator/tenants/{tenant}/links/{link}/revoke"),
            status,
            note,
        )
        .await
    {
        return page;
    }
    match outcome {
        Ok(_) => redirect("/ui/operator/links?done=link_revoked"),
        Err(e) => who.core_error(e),
    }
}

struct CredentialRow {
    what: String,
    department: String,
    expires: String,
    days_left: i64,
    level: &'static str,
    link: Option<String>,
}

#[derive(Template)]
#[template(path = "operator_expiring.html")]
struct ExpiringPage {
    c: Chrome,
    rows: Vec<CredentialRow>,
    within: String,
}

/// `GET /ui/operator/expiring`: every credential of the register (see [`orchard_core::credentials`]) that has
/// reached a warning threshold or expired — the push certificate, DEP tokens, each department's Apps and Books
/// token, the CAs, the profile signer, the TLS certificate, and each department's device identities (counted) —
/// soonest first. The register is the one source: the API, the CLI, `/metrics` and the e-mail warnings read it too.
pub(super) async fn expiring_page(State(state): State<AppState>, who: SignedIn) -> Response {
    if let Err(e) = operator(&who) {
        return who.core_error(e);
    }
    let overseer = match who.principal.oversight() {
        Ok(o) => o,
        Err(e) => return who.core_error(e),
    };
    let t = who.texts;
    let register = match state.orchard.credential_register(&overseer).await {
        Ok(r) => r,
        Err(e) => return who.core_error(e),
    };
    let central = t.get("operator.central").to_string();
    let within_days = register
        .warning_days
        .first()
        .copied()
        .unwrap_or(EXPIRY_DAYS);
    let mut rows = Vec::new();
    for c in &register.credentials {
        use orchard_core::credentials::{CredentialKind, CredentialState};
        if !matches!(c.state, CredentialState::Warning | CredentialState::Expired) {
            continue;
        }
        let (what, link) = match c.kind {
            CredentialKind::PushCertificate => (
                t.get("dashboard.expiring.push").to_string(),
                Some("/ui/operator/apple".to_string()),
            ),
            CredentialKind::DepToken => (
                t.fill("dashboard.expiring.dep", &[("name", &c.name)]),
                Some("/ui/operator/apple".to_string()),
            ),
            CredentialKind::AppsToken => (t.get("operator.expiring.apps").to_string(), None),
            CredentialKind::DeviceIdentities => {
                let agg = c.identities.as_ref();
                let expiring = agg
                    .and_then(|a| a.expiring_within.first())
                    .map_or(0, |w| w.count);
                let count = expiring + agg.map_or(0, |a| a.expired);
                (
                    t.fill(
                        "operator.expiring.identities",
                        &[("count", &count.to_string())],
                    ),
                    None,
                )
            }
            CredentialKind::DeviceCa
            | CredentialKind::ServerCa
            | CredentialKind::ProfileSigner
            | CredentialKind::TlsCertificate => (c.name.clone(), None),
        };
        let days_left = c.days_left.unwrap_or(-1);
        rows.push(CredentialRow {
            what,
            department: c
                .owner
                .tenant_name
                .clone()
                .unwrap_or_else(|| central.clone()),
            expires: c.expires_at.as_deref().map(minute).unwrap_or_default(),
            days_left,
            level: if c.state == CredentialState::Expired {
                "red"
            } else {
                level(days_left)
            },
            link,
        });
    }
    rows.sort_by_key(|r| r.days_left);
    let page = ExpiringPage {
        c: Chrome::of(&state, &who, "/ui/operator/expiring").await,
        rows,
        within: t.fill(
            "operator.expiring.within",
            &[("days", &within_days.to_string())],
        ),
    };
    render(StatusCode::OK, &page)
}
