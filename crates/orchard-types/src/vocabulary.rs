//! Closed vocabularies stored as text: command request types, who queued a command, and where a device's
//! zero-touch setup stands. Each has one spelling table (`as_str`) and a `parse` that refuses anything else,
//! so a typo in core cannot write a value the rest of Orchard does not know, and a foreign value in the
//! database is reported as such instead of silently matching nothing.

use std::fmt;

use crate::{ParseError, TokenId};

/// Longest foreign value an error message repeats (values can come from a device or a tampered row).
const QUOTED_MAX: usize = 64;

fn unknown(kind: &'static str, value: &str) -> ParseError {
    let mut quoted: String = value.chars().take(QUOTED_MAX).collect();
    if quoted.len() < value.len() {
        quoted.push('…');
    }
    ParseError::Unknown {
        kind,
        value: quoted,
    }
}

macro_rules! request_types {
    ($($(#[$doc:meta])* $variant:ident),* $(,)?) => {
        /// The `RequestType` of an MDM command, as Apple spells it (also the `commands.request_type` column).
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub enum RequestType {
            $($(#[$doc])* $variant,)*
        }

        impl RequestType {
            /// Every request type Orchard can queue.
            pub const ALL: &'static [RequestType] = &[$(RequestType::$variant,)*];

            pub fn as_str(self) -> &'static str {
                match self {
                    $(RequestType::$variant => stringify!($variant),)*
                }
            }

            /// Apple's spelling back to the type; anything Orchard does not queue is refused.
            pub fn parse(s: &str) -> Result<Self, ParseError> {
                match s {
                    $(stringify!($variant) => Ok(RequestType::$variant),)*
                    other => Err(unknown("request type", other)),
                }
            }
        }
    };
}

request_types!(
    DeviceInformation,
    SecurityInfo,
    InstalledApplicationList,
    ProfileList,
    CertificateList,
    InstallProfile,
    RemoveProfile,
    DeviceLock,
    EraseDevice,
    EnableLostMode,
    DisableLostMode,
    DeviceLocation,
    PlayLostModeSound,
    ClearPasscode,
    RestartDevice,
    ShutDownDevice,
    Settings,
    ActivationLockBypassCode,
    ClearActivationLockBypassCode,
    /// Ends Setup Assistant on a device that waits for it (zero-touch release).
    DeviceConfigured,
    UserList,
    LogOutUser,
    DeleteUser,
    AvailableOSUpdates,
    ScheduleOSUpdate,
    OSUpdateStatus,
    InstallApplication,
    RemoveApplication,
    ManagedApplicationList,
    DeclarativeManagement,
);

impl fmt::Display for RequestType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Who put a command in a queue (the `commands.queued_by` column).
///
/// Stored spellings: `orchard:enrollment`, `orchard:setup`, `orchard:renewal`, `token:<token id>:<name>` and
/// `user:<user id>:<name>` (the name may itself contain `:`; the ids never do).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum QueuedBy {
    /// Orchard's inventory queries after a device's first TokenUpdate.
    Enrollment,
    /// Zero-touch setup: a template's setup commands and the DeviceConfigured that ends Setup Assistant.
    Setup,
    /// Identity renewal: the enrollment profile that gives the device a fresh identity before its own runs out.
    Renewal,
    /// The reconciler: profile installs and removals that assignments call for.
    Reconciler,
    /// Declarative management: the DeclarativeManagement command that makes a device sync a changed set.
    Declarative,
    /// OS currency: the update commands of a device older than iOS 17 (AvailableOSUpdates, ScheduleOSUpdate,
    /// OSUpdateStatus).
    OsUpdate,
    /// Someone acting through an API token.
    Token { id: TokenId, name: String },
    /// A person signed in (single sign-on or a local break-glass account); `id` is the users row.
    User { id: String, name: String },
    /// Someone at the server's console running the `orchard` binary on the database directly.
    Local { id: String, name: String },
}

impl QueuedBy {
    const ENROLLMENT: &'static str = "orchard:enrollment";
    const SETUP: &'static str = "orchard:setup";
    const RENEWAL: &'static str = "orchard:renewal";
    const RECONCILER: &'static str = "orchard:reconciler";
    const DECLARATIVE: &'static str = "orchard:declarative";
    const OS_UPDATE: &'static str = "orchard:os-update";

    /// The stored spelling.
    pub fn to_stored(&self) -> String {
        self.to_string()
    }

    pub fn parse(s: &str) -> Result<Self, ParseError> {
        match s {
            Self::ENROLLMENT => return Ok(QueuedBy::Enrollment),
            Self::SETUP => return Ok(QueuedBy::Setup),
            Self::RENEWAL => return Ok(QueuedBy::Renewal),
            Self::RECONCILER => return Ok(QueuedBy::Reconciler),
            Self::DECLARATIVE => return Ok(QueuedBy::Declarative),
            Self::OS_UPDATE => return Ok(QueuedBy::OsUpdate),
            _ => {}
        }
        let mut parts = s.splitn(3, ':');
        let (Some(kind), Some(id), Some(name)) = (parts.next(), parts.next(), parts.next()) else {
            return Err(unknown("queued_by", s));
        };
        match kind {
            "token" => {
                let id = TokenId::parse(id).map_err(|_| unknown("queued_by", s))?;
                Ok(QueuedBy::Token {
                    id,
                    name: name.to_owned(),
                })
            }
            "user" if !id.is_empty() => Ok(QueuedBy::User {
                id: id.to_owned(),
                name: name.to_owned(),
            }),
            "local" if !id.is_empty() => Ok(QueuedBy::Local {
                id: id.to_owned(),
                name: name.to_owned(),
            }),
            _ => Err(unknown("queued_by", s)),
        }
    }

    /// Queued by a person (token or signed-in user), not by Orchard itself.
    pub fn is_person(&self) -> bool {
        matches!(
            self,
            QueuedBy::Token { .. } | QueuedBy::User { .. } | QueuedBy::Local { .. }
        )
    }
}

impl fmt::Display for QueuedBy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            QueuedBy::Enrollment => f.write_str(Self::ENROLLMENT),
            QueuedBy::Setup => f.write_str(Self::SETUP),
            QueuedBy::Renewal => f.write_str(Self::RENEWAL),
            QueuedBy::Reconciler => f.write_str(Self::RECONCILER),
            QueuedBy::Declarative => f.write_str(Self::DECLARATIVE),
            QueuedBy::OsUpdate => f.write_str(Self::OS_UPDATE),
            QueuedBy::Token { id, name } => write!(f, "token:{id}:{name}"),
            QueuedBy::User { id, name } => write!(f, "user:{id}:{name}"),
            QueuedBy::Local { id, name } => write!(f, "local:{id}:{name}"),
        }
    }
}

/// Where a device enrolled through an enrollment template stands in Setup Assistant
/// (`devices.setup_state`; no state at all for devices that did not enroll through a template).
///
/// ```text
/// configuring ──all setup commands succeeded──▶ releasing ──DeviceConfigured acknowledged──▶ configured
///      │  └──device did not wait──────────────────────────────────────────────────────────▶ configured
///      └──a setup command failed──▶ failed ──released by hand──▶ releasing
///                                  (releasing ──DeviceConfigured failed──▶ failed)
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SetupState {
    /// Setup commands are queued or running.
    Configuring,
    /// DeviceConfigured is queued; the device leaves Setup Assistant when it runs it.
    Releasing,
    Configured,
    /// A setup command (or DeviceConfigured) failed: the device waits until someone releases it.
    Failed,
}

impl SetupState {
    pub fn as_str(self) -> &'static str {
        match self {
            SetupState::Configuring => "configuring",
            SetupState::Releasing => "releasing",
            SetupState::Configured => "configured",
            SetupState::Failed => "failed",
        }
    }

    pub fn parse(s: &str) -> Result<Self, ParseError> {
        Ok(match s {
            "configuring" => SetupState::Configuring,
            "releasing" => SetupState::Releasing,
            "configured" => SetupState::Configured,
            "failed" => SetupState::Failed,
            other => return Err(unknown("setup state", other)),
        })
    }

    /// The moves the diagram above allows; anything else is a bug in the caller.
    pub fn may_move_to(self, to: SetupState) -> bool {
        use SetupState::*;
        matches!(
            (self, to),
            (Configuring, Releasing)
                | (Configuring, Configured)
                | (Configuring, Failed)
                | (Failed, Releasing)
                | (Releasing, Configured)
                | (Releasing, Failed)
        )
    }

    /// A person may release a device in this state from Setup Assistant.
    pub fn may_be_released(self) -> bool {
        self.may_move_to(SetupState::Releasing)
    }
}

impl fmt::Display for SetupState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_types_round_trip_and_refuse_others() {
        assert_eq!(RequestType::ALL.len(), 30);
        for t in RequestType::ALL {
            assert_eq!(RequestType::parse(t.as_str()), Ok(*t));
        }
        assert_eq!(
            RequestType::parse("DeviceInformation"),
            Ok(RequestType::DeviceInformation)
        );
        let refused = RequestType::parse("deviceinformation").unwrap_err();
        assert_eq!(
            refused.to_string(),
            "unknown request type \"deviceinformation\""
        );
        assert!(RequestType::parse("").is_err());
    }

    #[test]
    fn queued_by_keeps_the_stored_spellings() {
        let token = TokenId::new();
        let cases = [
            (QueuedBy::Enrollment, "orchard:enrollment".to_owned()),
            (QueuedBy::Setup, "orchard:setup".to_owned()),
            (
                QueuedBy::Token {
                    id: token,
                    name: "central-it".into(),
                },
                format!("token:{token}:central-it"),
            ),
            (
                QueuedBy::User {
                    id: "0190f1c2-0000-7000-8000-000000000001".into(),
                    name: "Jane: Physics".into(),
                },
                "user:0190f1c2-0000-7000-8000-000000000001:Jane: Physics".to_owned(),
            ),
            (
                QueuedBy::Local {
                    id: "cli".into(),
                    name: "cli".into(),
                },
                "local:cli:cli".to_owned(),
            ),
        ];
        for (value, stored) in cases {
            assert_eq!(value.to_stored(), stored);
            assert_eq!(QueuedBy::parse(&stored), Ok(value));
        }
        for refused in [
            "",
            "tester",
            "orchard:inventory",
            "token:not-a-uuid:x",
            "token:only-two",
            "user::name",
            "local::name",
            "robot:1:x",
        ] {
            assert!(QueuedBy::parse(refused).is_err(), "{refused}");
        }
    }

    #[test]
    fn setup_states_round_trip_and_moves_follow_the_diagram() {
        use SetupState::*;
        for s in [Configuring, Releasing, Configured, Failed] {
            assert_eq!(SetupState::parse(s.as_str()), Ok(s));
        }
        assert!(SetupState::parse("done").is_err());
        assert!(Configuring.may_be_released());
        assert!(Failed.may_be_released());
        assert!(!Releasing.may_be_released());
        assert!(!Configured.may_be_released());
        assert!(!Configured.may_move_to(Failed));
        assert!(Releasing.may_move_to(Configured));
    }

    #[test]
    fn long_foreign_values_are_cut_in_messages() {
        let long = "x".repeat(500);
        let message = SetupState::parse(&long).unwrap_err().to_string();
        assert!(message.len() < 120, "{message}");
    }
}
