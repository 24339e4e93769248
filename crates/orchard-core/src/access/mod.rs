//! Who may do what: principals and the role table, API tokens, sessions, users and their memberships, break-glass local accounts and OpenID Connect sign-in.

pub mod local_accounts;
pub mod oidc;
pub mod principal;
pub mod sessions;
pub mod tokens;
pub mod user_admin;
pub mod users;
