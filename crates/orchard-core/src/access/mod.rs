//! Who may do what: principals, the one role table, capability handles, the binary's local bootstrap, API
//! tokens, sessions, users and their memberships, break-glass local accounts and OpenID Connect sign-in.

pub mod bootstrap;
pub mod capability;
pub mod local_accounts;
pub mod oidc;
pub mod principal;
pub mod roles;
pub mod sessions;
pub mod tokens;
pub mod user_admin;
pub mod users;
