//! API tokens, users, sessions, role mappings and local accounts.

pub(crate) mod api_tokens;
pub(crate) mod local_accounts;
pub(crate) mod users;
