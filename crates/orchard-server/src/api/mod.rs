//! The admin API `/api/v1` (JSON). This module owns the one route list: every route is registered with its
//! OpenAPI description through `routes!`, so the router and the document (`crate::openapi`) come from the
//! same list. Feature modules hold the handlers and use only the shared [`error`], [`extract`] and [`reply`]
//! modules and core, never each other (a test checks).
//!
//! Every request passes [`crate::auth::resolve_principal`] (the caller, once) and the audit trail (every
//! mutation recorded); handlers take the caller as [`extract::Authenticated`].

pub mod error;
pub mod extract;
pub mod reply;

mod activation_lock;
mod apps;
mod assignments;
mod audit;
mod audit_trail;
mod commands;
mod credentials;
mod declarative;
mod dep;
mod device_identity;
mod devices;
mod groups;
mod links;
mod maintenance;
mod meta;
mod os_policy;
mod profiles;
mod push;
mod role_mappings;
mod setup;
mod shared_ipad;
mod tenants;
mod tokens;
mod usage;
mod users;
mod webhooks;

use axum::Router;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::state::AppState;

/// Where the API is mounted.
pub const API_ROOT: &str = "/api/v1";

/// Every `/api/v1` route, each registered with its OpenAPI description: add routes only through
/// `.routes(routes!(…))` (never a plain axum route), or the document misses them (a test checks).
pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(meta::serve_openapi))
        .routes(routes!(tenants::create_tenant, tenants::list_tenants))
        .routes(routes!(tenants::tenant, tenants::edit_tenant))
        .routes(routes!(
            maintenance::list_notices,
            maintenance::publish_notice
        ))
        .routes(routes!(maintenance::withdraw_notice))
        .routes(routes!(
            webhooks::list_tenant_webhooks,
            webhooks::create_tenant_webhook
        ))
        .routes(routes!(
            webhooks::tenant_webhook,
            webhooks::update_tenant_webhook,
            webhooks::delete_tenant_webhook
        ))
        .routes(routes!(webhooks::tenant_webhook_deliveries))
        .routes(routes!(
            webhooks::list_global_webhooks,
            webhooks::create_global_webhook
        ))
        .routes(routes!(
            webhooks::global_webhook,
            webhooks::update_global_webhook,
            webhooks::delete_global_webhook
        ))
        .routes(routes!(webhooks::global_webhook_deliveries))
        .routes(routes!(links::create_link, links::list_links))
        .routes(routes!(links::revoke_link))
        .routes(routes!(devices::list_devices))
        .routes(routes!(devices::device_detail))
        .routes(routes!(devices::push_device))
        .routes(routes!(commands::queue_command, commands::command_history))
        .routes(routes!(commands::queue_bulk_command))
        .routes(routes!(setup::device_setup))
        .routes(routes!(shared_ipad::shared_ipad_users))
        .routes(routes!(shared_ipad::refresh_users))
        .routes(routes!(shared_ipad::log_out_user))
        .routes(routes!(shared_ipad::delete_user))
        .routes(routes!(shared_ipad::delete_all_users))
        .routes(routes!(
            shared_ipad::get_shared_ipad_policy,
            shared_ipad::put_shared_ipad_policy
        ))
        .routes(routes!(
            shared_ipad::put_group_shared_ipad_policy,
            shared_ipad::delete_group_shared_ipad_policy
        ))
        .routes(routes!(shared_ipad::shared_ipad_compliance))
        .routes(routes!(setup::release_setup))
        .routes(routes!(activation_lock::activation_lock))
        .routes(routes!(activation_lock::clear_activation_lock))
        .routes(routes!(device_identity::device_identity))
        .routes(routes!(device_identity::revoke_identity))
        .routes(routes!(device_identity::release_device))
        .routes(routes!(device_identity::move_device))
        .routes(routes!(
            push::push_certificate_status,
            push::upload_push_certificate
        ))
        .routes(routes!(push::create_push_csr))
        .routes(routes!(dep::create_dep_token, dep::list_dep_tokens))
        .routes(routes!(dep::upload_dep_token))
        .routes(routes!(dep::sync_dep_token))
        .routes(routes!(dep::create_template, dep::list_token_templates))
        .routes(routes!(dep::assign))
        .routes(routes!(dep::list_templates))
        .routes(routes!(
            dep::get_template,
            dep::update_template,
            dep::delete_template
        ))
        .routes(routes!(dep::list_dep_devices))
        .routes(routes!(tokens::create_token, tokens::list_tokens))
        .routes(routes!(tokens::revoke_token))
        .routes(routes!(users::list_users))
        .routes(routes!(users::edit_user))
        .routes(routes!(
            role_mappings::list_role_mappings,
            role_mappings::create_role_mapping
        ))
        .routes(routes!(role_mappings::delete_role_mapping))
        .routes(routes!(audit::list_audit))
        .routes(routes!(audit::export_audit_csv))
        .routes(routes!(usage::usage_report))
        .routes(routes!(credentials::credential_register))
        .routes(routes!(
            profiles::list_tenant_profiles,
            profiles::create_tenant_profile
        ))
        .routes(routes!(
            profiles::tenant_profile,
            profiles::archive_tenant_profile
        ))
        .routes(routes!(profiles::add_tenant_profile_version))
        .routes(routes!(profiles::tenant_profile_version))
        .routes(routes!(profiles::profile_devices))
        .routes(routes!(profiles::install_profile))
        .routes(routes!(profiles::remove_profile))
        .routes(routes!(
            profiles::list_global_profiles,
            profiles::create_global_profile
        ))
        .routes(routes!(
            profiles::global_profile,
            profiles::archive_global_profile
        ))
        .routes(routes!(profiles::add_global_profile_version))
        .routes(routes!(profiles::global_profile_version))
        .routes(routes!(groups::list_groups, groups::create_group))
        .routes(routes!(
            groups::group_detail,
            groups::update_group,
            groups::delete_group
        ))
        .routes(routes!(groups::group_members, groups::add_group_members))
        .routes(routes!(groups::remove_group_members))
        .routes(routes!(groups::group_history))
        .routes(routes!(
            assignments::list_assignments,
            assignments::create_assignment
        ))
        .routes(routes!(
            assignments::assignment_detail,
            assignments::update_assignment,
            assignments::delete_assignment
        ))
        .routes(routes!(declarative::device_declarations))
        .routes(routes!(os_policy::get_os_policy, os_policy::put_os_policy))
        .routes(routes!(os_policy::os_compliance))
        .routes(routes!(
            os_policy::get_os_catalogue,
            os_policy::put_os_catalogue
        ))
        .routes(routes!(os_policy::refresh_os_catalogue))
        .routes(routes!(apps::upload_apps_token, apps::apps_token_status))
        .routes(routes!(apps::take_over_apps_location))
        .routes(routes!(apps::sync_apps))
        .routes(routes!(apps::list_apps))
        .routes(routes!(apps::app_device_licences))
}

/// The API router: the routes behind caller resolution (outermost) and the audit trail. Only matched routes
/// are wrapped: a request to a path that is no route changes nothing and is not an action.
pub fn router(state: AppState) -> Router<AppState> {
    let (router, _) = routes().split_for_parts();
    router
        .route_layer(axum::middleware::from_fn_with_state(
            state.clone(),
            audit_trail::record_mutations,
        ))
        .route_layer(axum::middleware::from_fn_with_state(
            state,
            crate::auth::resolve_principal,
        ))
}
