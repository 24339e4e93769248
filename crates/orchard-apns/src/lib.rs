//! Orchard's APNs provider for MDM: wakes devices by pushing `{"mdm":"<PushMagic>"}` to Apple's push service
//! over HTTP/2 with the MDM push certificate as TLS client identity.
//!
//! - [`PushCertificate`] reads the push certificate (PEM or PKCS#12), its topic (subject UID) and expiry.
//! - [`ApnsClient`] keeps a few long-lived HTTP/2 connections, retries 429/5xx and dropped connections itself,
//!   and reports each push as a [`PushOutcome`] the caller acts on (mark a token dead, stop and alert, retry).
//! - With feature `fake`, [`fake::FakeApnsServer`] is a local APNs server over real TLS + HTTP/2 for tests, the
//!   device simulator and benchmarks; production and tests run the same client code.
//!
//! The choice of hyper's HTTP/2 connection API over reqwest or the `a2` crate is explained in this crate's
//! README.md.

mod certificate;
mod client;
mod config;
mod error;
mod tls;
mod token;

#[cfg(feature = "fake")]
pub mod fake;

pub use certificate::{PushCertificate, MDM_TOPIC_PREFIX};
pub use client::{ApnsClient, ClientStatus, PushOutcome};
pub use config::{ApnsConfig, Backoff, RetryPolicy, TrustRoots, PRODUCTION_URL, SANDBOX_URL};
pub use error::ApnsError;
pub use token::DeviceToken;
