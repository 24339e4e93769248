//! E-mail over SMTP (lettre on rustls with the ring provider): STARTTLS, implicit TLS, or plain SMTP for a mail
//! relay on the same host and for tests; optional AUTH. lettre's blocking transport runs on tokio's blocking
//! pool: its async one needs `async-trait`, whose `syn` features would rebuild every proc macro of the tree,
//! and a few warnings an hour gain nothing from async IO.

use std::time::Duration;

use lettre::message::header::ContentType;
use lettre::message::Mailbox;
use lettre::transport::smtp::authentication::Credentials;
use lettre::transport::smtp::client::{Certificate, Tls, TlsParameters};
use lettre::{Message, SmtpTransport, Transport};
use orchard_types::Secret;

use crate::CoreError;

/// How the SMTP connection is protected.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SmtpSecurity {
    /// Plain connection upgraded with STARTTLS (port 587); refused if the server does not offer it.
    StartTls,
    /// TLS from the first byte (port 465).
    ImplicitTls,
    /// No TLS at all: only for a relay on the same host, and tests.
    DangerPlaintext,
}

impl SmtpSecurity {
    /// `starttls`, `tls` or `plain`.
    pub fn parse(s: &str) -> Result<Self, CoreError> {
        match s {
            "starttls" => Ok(SmtpSecurity::StartTls),
            "tls" => Ok(SmtpSecurity::ImplicitTls),
            "plain" => Ok(SmtpSecurity::DangerPlaintext),
            other => Err(CoreError::Invalid(format!(
                "smtp security {other:?} is not starttls, tls or plain"
            ))),
        }
    }
}

/// Where and how to send e-mail.
#[derive(Debug, Clone)]
pub struct SmtpSettings {
    pub host: String,
    pub port: u16,
    pub security: SmtpSecurity,
    /// AUTH user name and password.
    pub username: Option<String>,
    pub password: Option<Secret<String>>,
    /// The sender, e.g. `Orchard <orchard@example.edu>`.
    pub from: String,
    /// PEM roots the server's certificate must chain to (default: the public roots).
    pub roots_pem: Option<Vec<u8>>,
    pub timeout: Duration,
}

/// A ready SMTP client.
#[derive(Clone)]
pub struct Mailer {
    transport: SmtpTransport,
    from: Mailbox,
}

impl std::fmt::Debug for Mailer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Mailer")
            .field("from", &self.from.to_string())
            .finish_non_exhaustive()
    }
}

fn invalid(what: &str, e: impl std::fmt::Display) -> CoreError {
    CoreError::Invalid(format!("{what}: {e}"))
}

impl Mailer {
    /// Checks the settings (sender address, roots) and builds the client; nothing is connected yet.
    pub fn new(settings: &SmtpSettings) -> Result<Self, CoreError> {
        let from: Mailbox = settings
            .from
            .parse()
            .map_err(|e| invalid("smtp from address", e))?;
        let mut builder = SmtpTransport::builder_dangerous(&settings.host)
            .port(settings.port)
            .timeout(Some(settings.timeout));
        if settings.security != SmtpSecurity::DangerPlaintext {
            let mut tls = TlsParameters::builder(settings.host.clone());
            if let Some(pem) = &settings.roots_pem {
                tls = tls.add_root_certificate(
                    Certificate::from_pem(pem).map_err(|e| invalid("smtp ca", e))?,
                );
            }
            let tls = tls.build_rustls().map_err(|e| invalid("smtp tls", e))?;
            builder = builder.tls(match settings.security {
                SmtpSecurity::ImplicitTls => Tls::Wrapper(tls),
                _ => Tls::Required(tls),
            });
        }
        match (&settings.username, &settings.password) {
            (Some(user), Some(password)) => {
                builder =
                    builder.credentials(Credentials::new(user.clone(), password.expose().clone()));
            }
            (None, None) => {}
            _ => {
                return Err(CoreError::Invalid(
                    "smtp username and password go together".into(),
                ))
            }
        }
        Ok(Self {
            transport: builder.build(),
            from,
        })
    }

    /// Sends one plain-text message to one recipient.
    pub async fn send(&self, to: &str, subject: &str, body: &str) -> Result<(), String> {
        let to: Mailbox = to
            .parse()
            .map_err(|e| format!("recipient {to:?} is not an e-mail address: {e}"))?;
        let message = Message::builder()
            .from(self.from.clone())
            .to(to)
            .subject(subject)
            .header(ContentType::TEXT_PLAIN)
            .body(body.to_owned())
            .map_err(|e| format!("building the message: {e}"))?;
        let transport = self.transport.clone();
        tokio::task::spawn_blocking(move || transport.send(&message))
            .await
            .map_err(|e| format!("smtp: the sending task failed: {e}"))?
            .map(|_| ())
            .map_err(|e| format!("smtp: {e}"))
    }
}
