//! The audit trail of the admin API: what one mutating request was, as an audit event. The HTTP layer says
//! what it saw (method, matched route, path, request id, principal, status, and the handler's [`AuditNote`]);
//! this module names the action, picks the target, files the event under the tenant it touched, and records it.
//!
//! Every POST, PUT, PATCH and DELETE, whatever its outcome (refused ones included), becomes one event. The
//! record is part of a mutation's contract: if it cannot be written, [`Orchard::record_api_request`] logs the
//! complete event and fails, and the caller is answered with a 500 instead of the handler's answer.
//!
//! Defaults: the action comes from [`known_action`] (or method and route), the target from the last path
//! parameter, and the tenant from the target when the request succeeded (the tenant in the path, or the
//! device's tenant), else from the actor. A handler that knows better (a created object's id, the tenant of
//! what it changed, details) says so with an [`AuditNote`].

use orchard_types::{DeviceId, TenantId};
use serde_json::{json, Map, Value};

use crate::access::capability::SystemCtx;
use crate::access::principal::Principal;
use crate::reporting::audit::{AuditActor, AuditEvent, AuditOutcome};
use crate::{CoreError, Orchard};

/// What a handler tells the audit trail about its action. Fields left empty keep the defaults; `details` are
/// added to the default details (never put secrets there).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct AuditNote {
    pub action: Option<String>,
    pub tenant_id: Option<TenantId>,
    pub target: Option<String>,
    pub details: Map<String, Value>,
}

impl AuditNote {
    /// The object the request acted on (a created object's id, say).
    pub fn target(mut self, target: impl ToString) -> Self {
        self.target = Some(target.to_string());
        self
    }

    /// The tenant the object belongs to; `None` leaves the default.
    pub fn tenant(mut self, tenant: Option<TenantId>) -> Self {
        self.tenant_id = tenant.or(self.tenant_id);
        self
    }

    /// One more detail.
    pub fn detail(mut self, key: &str, value: impl Into<Value>) -> Self {
        self.details.insert(key.to_string(), value.into());
        self
    }
}

/// One admin API request as the audit trail sees it.
#[derive(Debug, Clone)]
pub struct ApiRequest {
    /// `POST`, `PUT`, `PATCH` or `DELETE` (others are not recorded).
    pub method: String,
    /// The matched route below the API root, e.g. `/devices/{id}/commands`.
    pub route: String,
    /// The requested path below the API root, e.g. `/devices/0190…/commands`.
    pub path: String,
    /// The requested path as the caller sent it, for the event's details.
    pub full_path: String,
    pub request_id: Option<String>,
    /// The caller, when its credential was accepted.
    pub principal: Option<Principal>,
    pub status: u16,
    pub note: Option<AuditNote>,
}

/// Whether a request of this method changes something, and so is recorded.
pub fn is_mutation(method: &str) -> bool {
    matches!(method, "POST" | "PUT" | "PATCH" | "DELETE")
}

/// The stable action names of the routes; others get [`generic_action`].
pub fn known_action(method: &str, route: &str) -> Option<&'static str> {
    Some(match (method, route) {
        ("POST", "/tenants") => "tenant.create",
        ("POST", "/tenants/{id}/enrollment-links") => "enrollment_link.create",
        ("POST", "/devices/{id}/commands") => "device.command.queue",
        ("POST", "/devices/{id}/push") => "device.push",
        ("PUT", "/push-certificate") => "push_certificate.upload",
        ("POST", "/push-certificate/csr") => "push_certificate.csr.create",
        ("POST", "/dep-tokens") => "dep_token.create",
        ("PUT", "/dep-tokens/{id}/token") => "dep_token.upload",
        ("POST", "/dep-tokens/{id}/sync") => "dep_token.sync",
        ("POST", "/dep-tokens/{id}/assignments") => "dep_token.assign",
        ("POST", "/dep-tokens/{id}/templates") => "dep_template.create",
        ("PUT", "/dep-templates/{id}") => "dep_template.update",
        ("DELETE", "/dep-templates/{id}") => "dep_template.delete",
        ("PATCH", "/tenants/{id}") => "tenant.update",
        ("POST", "/tokens") => "token.create",
        ("DELETE", "/tokens/{id}") => "token.revoke",
        ("POST", "/commands/bulk") => "device.command.bulk_queue",
        ("POST", "/devices/{id}/setup/release") => "device.setup.release",
        ("POST", "/devices/{id}/users/refresh") => "device.users.refresh",
        ("POST", "/devices/{id}/users/log-out") => "device.user.log_out",
        ("POST", "/devices/{id}/users/delete") => "device.user.delete",
        ("POST", "/devices/{id}/users/delete-all") => "device.users.delete_all",
        ("PUT", "/tenants/{id}/shared-ipad-policy") => "shared_ipad_policy.update",
        ("PUT", "/tenants/{id}/groups/{group}/shared-ipad-policy") => {
            "shared_ipad_policy.group.update"
        }
        ("DELETE", "/tenants/{id}/groups/{group}/shared-ipad-policy") => {
            "shared_ipad_policy.group.delete"
        }
        ("POST", "/devices/{id}/activation-lock/clear") => "device.activation_lock.clear",
        ("POST", "/devices/{id}/identity/revoke") => "device.identity.revoke",
        ("POST", "/devices/{id}/release") => "device.release_for_reenrollment",
        ("POST", "/devices/{id}/move") => "device.move",
        ("POST", "/tenants/{id}/profiles") => "profile.create",
        ("POST", "/tenants/{id}/profiles/{profile}/versions") => "profile.version.create",
        ("DELETE", "/tenants/{id}/profiles/{profile}") => "profile.archive",
        ("POST", "/tenants/{id}/profiles/{profile}/install") => "profile.install",
        ("POST", "/tenants/{id}/profiles/{profile}/remove") => "profile.remove",
        ("POST", "/profiles") => "global_profile.create",
        ("POST", "/profiles/{profile}/versions") => "global_profile.version.create",
        ("DELETE", "/profiles/{profile}") => "global_profile.archive",
        ("POST", "/maintenance") => "maintenance_notice.publish",
        ("DELETE", "/maintenance/{id}") => "maintenance_notice.withdraw",
        ("POST", "/tenants/{id}/groups") => "group.create",
        ("PATCH", "/tenants/{id}/groups/{group}") => "group.update",
        ("DELETE", "/tenants/{id}/groups/{group}") => "group.delete",
        ("POST", "/tenants/{id}/groups/{group}/members") => "group.members.add",
        ("POST", "/tenants/{id}/groups/{group}/members/remove") => "group.members.remove",
        ("POST", "/tenants/{id}/assignments") => "assignment.create",
        ("PUT", "/tenants/{id}/assignments/{assignment}") => "assignment.update",
        ("DELETE", "/tenants/{id}/assignments/{assignment}") => "assignment.delete",
        ("PUT", "/tenants/{id}/os-policy") => "os_policy.update",
        ("PUT", "/os-catalogue") => "os_catalogue.replace",
        ("POST", "/os-catalogue/refresh") => "os_catalogue.refresh",
        ("PUT", "/tenants/{id}/apps/token") => "apps_token.upload",
        ("POST", "/tenants/{id}/apps/token/take-over") => "apps_token.take_over",
        ("POST", "/tenants/{id}/apps/sync") => "apps.sync",
        ("POST", "/tenants/{id}/webhooks") => "webhook.create",
        ("PATCH", "/tenants/{id}/webhooks/{webhook}") => "webhook.update",
        ("DELETE", "/tenants/{id}/webhooks/{webhook}") => "webhook.delete",
        ("POST", "/webhooks") => "global_webhook.create",
        ("PATCH", "/webhooks/{webhook}") => "global_webhook.update",
        ("DELETE", "/webhooks/{webhook}") => "global_webhook.delete",
        _ => return None,
    })
}

/// `DELETE /tokens/{id}` → `tokens.delete`: the literal path segments, dotted, and the verb.
pub fn generic_action(method: &str, route: &str) -> String {
    let verb = match method {
        "POST" => "create",
        "PUT" | "PATCH" => "update",
        "DELETE" => "delete",
        _ => "call",
    };
    let mut parts: Vec<String> = route
        .split('/')
        .filter(|s| !s.is_empty() && !s.starts_with('{'))
        .map(|s| s.replace('-', "_"))
        .collect();
    parts.push(verb.to_string());
    parts.join(".")
}

/// The values of the route's `{param}` segments, by name, in order.
pub fn path_params(route: &str, path: &str) -> Vec<(String, String)> {
    route
        .split('/')
        .zip(path.split('/'))
        .filter_map(|(template, value)| {
            let name = template.strip_prefix('{')?.strip_suffix('}')?;
            Some((name.to_string(), value.to_string()))
        })
        .collect()
}

impl Orchard {
    /// Records one mutating API request (see the module documentation); other requests are not recorded. On
    /// failure the whole event goes to the error log, so it is never silently lost, and the error is returned
    /// for the caller to be told its outcome is not confirmed.
    pub async fn record_api_request(
        &self,
        _system: &SystemCtx,
        request: ApiRequest,
    ) -> Result<(), CoreError> {
        if !is_mutation(&request.method) {
            return Ok(());
        }
        let event = self.audit_event_of(request).await;
        match self.append_audit(event.clone()).await {
            Ok(_) => Ok(()),
            Err(e) => {
                tracing::error!(
                    error = %e,
                    request_id = event.request_id.as_deref().unwrap_or(""),
                    actor = %event.actor.id,
                    actor_name = ?event.actor.name,
                    tenant = ?event.tenant_id,
                    action = %event.action,
                    target = ?event.target,
                    outcome = event.outcome.as_str(),
                    status = ?event.http_status,
                    details = %event.details,
                    "audit event could not be recorded; the request is answered with 500"
                );
                Err(e)
            }
        }
    }

    async fn audit_event_of(&self, request: ApiRequest) -> AuditEvent {
        let ApiRequest {
            method,
            route,
            path,
            full_path,
            request_id,
            principal,
            status,
            note,
        } = request;
        let note = note.unwrap_or_default();
        let outcome = AuditOutcome::from_http_status(status);
        let params = path_params(&route, &path);
        let actor = principal
            .as_ref()
            .map(AuditActor::of)
            .unwrap_or_else(AuditActor::anonymous);
        let action = note
            .action
            .or_else(|| known_action(&method, &route).map(str::to_string))
            .unwrap_or_else(|| generic_action(&method, &route));
        let target = note
            .target
            .or_else(|| params.last().map(|(_, v)| v.clone()));
        let tenant_id = match note.tenant_id {
            Some(t) => Some(t),
            None => self
                .target_tenant(outcome, &route, &params, principal.as_ref())
                .await
                .or(actor.tenant_id),
        };
        let mut details = Map::new();
        details.insert("method".into(), json!(method));
        details.insert("path".into(), json!(full_path));
        details.extend(note.details);
        AuditEvent {
            actor,
            tenant_id,
            action,
            target,
            request_id: request_id.filter(|r| !r.is_empty()),
            outcome,
            http_status: Some(status),
            details: Value::Object(details),
        }
    }

    /// The tenant a successful action touched, when the route says which: the tenant in the path, or the
    /// device's tenant. Refused and failed requests are filed under the actor's tenant instead, so a guessed id
    /// of another tenant's object never lands in that tenant's log.
    async fn target_tenant(
        &self,
        outcome: AuditOutcome,
        route: &str,
        params: &[(String, String)],
        principal: Option<&Principal>,
    ) -> Option<TenantId> {
        if outcome != AuditOutcome::Ok {
            return None;
        }
        let first_param = params.first().map(|(_, v)| v.as_str());
        if route.starts_with("/tenants/{") {
            return first_param.and_then(|id| TenantId::parse(id).ok());
        }
        if route.starts_with("/devices/{") {
            // A tenant role only reaches its own devices; a central one looks the device up in its scope.
            let principal = principal?;
            if principal.tenant_id().is_some() {
                return principal.tenant_id();
            }
            let id = first_param.and_then(|id| DeviceId::parse(id).ok())?;
            return match self.device_tenant(principal, id).await {
                Ok(tenant) => tenant,
                Err(e) => {
                    tracing::warn!(error = %e, "looking up the device's tenant for the audit log failed");
                    None
                }
            };
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn actions_come_from_the_table_or_the_route() {
        assert_eq!(
            known_action("POST", "/devices/{id}/commands"),
            Some("device.command.queue")
        );
        assert_eq!(generic_action("DELETE", "/tokens/{id}"), "tokens.delete");
        assert_eq!(
            generic_action("POST", "/tenants/{id}/memberships"),
            "tenants.memberships.create"
        );
    }

    #[test]
    fn path_params_follow_the_template() {
        assert_eq!(
            path_params("/devices/{id}/commands", "/devices/abc/commands"),
            vec![("id".to_string(), "abc".to_string())]
        );
        assert!(path_params("/tenants", "/tenants").is_empty());
    }

    #[test]
    fn only_changes_are_recorded() {
        for m in ["POST", "PUT", "PATCH", "DELETE"] {
            assert!(is_mutation(m));
        }
        for m in ["GET", "HEAD", "OPTIONS"] {
            assert!(!is_mutation(m));
        }
    }

    #[test]
    fn notes_keep_what_they_do_not_set() {
        let t = TenantId::new();
        let note = AuditNote::default()
            .tenant(Some(t))
            .tenant(None)
            .target("x")
            .detail("k", "v");
        assert_eq!(note.tenant_id, Some(t));
        assert_eq!(note.target.as_deref(), Some("x"));
        assert_eq!(note.details.get("k"), Some(&json!("v")));
        assert_eq!(note.action, None);
    }
}
