//! OpenAPI schemas for types the API shows but whose crates do not depend on utoipa: roles and the
//! typed MDM command (`orchard_protocol::commands::Command`).

use std::borrow::Cow;

use serde::Serialize;
use utoipa::openapi::schema::{ObjectBuilder, Schema, Type};
use utoipa::openapi::RefOr;
use utoipa::{PartialSchema, ToSchema};

/// A role, as `orchard_types::Role` serialises it.
#[derive(Debug, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
#[schema(as = Role)]
pub enum RoleSchema {
    Operator,
    Helpdesk,
    Admin,
    Viewer,
}

/// Every `type` the command API accepts (Apple's RequestType), in the order of the `Command` enum.
pub const COMMAND_TYPES: &[&str] = &[
    "DeviceInformation",
    "SecurityInfo",
    "InstalledApplicationList",
    "ProfileList",
    "CertificateList",
    "InstallProfile",
    "RemoveProfile",
    "DeviceLock",
    "EraseDevice",
    "EnableLostMode",
    "DisableLostMode",
    "DeviceLocation",
    "PlayLostModeSound",
    "ClearPasscode",
    "RestartDevice",
    "ShutDownDevice",
    "Settings",
    "ActivationLockBypassCode",
    "ClearActivationLockBypassCode",
    "DeviceConfigured",
    "UserList",
    "LogOutUser",
    "DeleteUser",
    "AvailableOSUpdates",
    "ScheduleOSUpdate",
    "OSUpdateStatus",
    "InstallApplication",
    "RemoveApplication",
    "ManagedApplicationList",
    "DeclarativeManagement",
];

/// The typed command: an object with the `type` discriminator and that command's snake_case fields. The
/// per-command fields are described in the text rather than as a full `oneOf` (30 variants): the server
/// checks them and answers 400 with the field at fault.
pub struct CommandSchema;

impl PartialSchema for CommandSchema {
    fn schema() -> RefOr<Schema> {
        ObjectBuilder::new()
            .description(Some(
                "An MDM command: `type` is Apple's RequestType; the command's parameters are snake_case \
                 fields next to it (e.g. `{\"type\": \"DeviceLock\", \"message\": \"…\"}`, \
                 `{\"type\": \"DeviceInformation\", \"queries\": [\"OSVersion\"]}`; binary fields are \
                 base64). Unknown or malformed fields answer 400.",
            ))
            .property(
                "type",
                ObjectBuilder::new()
                    .schema_type(Type::String)
                    .enum_values(Some(COMMAND_TYPES.iter().copied())),
            )
            .required("type")
            .additional_properties(Some(utoipa::openapi::schema::AdditionalProperties::FreeForm(
                true,
            )))
            .into()
    }
}

impl ToSchema for CommandSchema {
    fn name() -> Cow<'static, str> {
        Cow::Borrowed("Command")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use orchard_protocol::commands::Command;

    #[test]
    fn command_types_are_exactly_the_commands_request_types() {
        for t in COMMAND_TYPES {
            // A listed type is a variant: serde may miss its fields, but never calls the variant unknown.
            let err = serde_json::from_value::<Command>(serde_json::json!({ "type": t }))
                .err()
                .map(|e| e.to_string())
                .unwrap_or_default();
            assert!(!err.contains("unknown variant"), "{t}: {err}");
        }
        let unknown =
            serde_json::from_value::<Command>(serde_json::json!({"type": "NoSuchCommand"}))
                .unwrap_err()
                .to_string();
        // serde lists the expected variants: every one of them must be in our list, and no more.
        let listed = unknown.split("expected one of").nth(1).unwrap_or_default();
        let count = listed.matches('`').count() / 2;
        assert_eq!(count, COMMAND_TYPES.len(), "{unknown}");
    }
}
