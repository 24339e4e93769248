//! Over-the-air enrollment: the enrollment profile handed out through a tenant's enrollment link (each
//! download with its own one-time SCEP challenge), and the SCEP responder that turns a challenge into a
//! device identity certificate.

use orchard_pki::scep::{self, FailInfo, MessageType, PkiOperation};
use orchard_pki::PkiError;
use orchard_protocol::profile::{EnrollmentProfile, MdmPayload, ScepPayload};
use orchard_protocol::PER_USER_CONNECTIONS;
use orchard_store::{
    DeviceGrantPurpose, IdentityGrant, IssuedCertificate, ScepChallenge, ScepTransaction,
    UnitOfWork,
};
use orchard_types::{EnrollmentLinkId, TenantId, UnixTime};
use uuid::Uuid;

use crate::{random_secret, secret_hash, CoreError, Orchard};

/// Capabilities every Orchard enrollment asks for. Per-user connections cannot be added later, so every
/// profile carries it (Shared iPad needs it); bootstrap tokens are escrowed sealed and answered
/// (`device/bootstrap_token.rs`).
const SERVER_CAPABILITIES: &[&str] = &[PER_USER_CONNECTIONS, "com.apple.mdm.bootstraptoken"];

/// Access rights: all of them (8191), as a university's supervised iPads need.
const ALL_ACCESS_RIGHTS: u32 = 8191;

/// Whether a SCEP request may have a certificate: the tenant (and link) it is for and which devices the identity
/// may claim at Authenticate, or why not.
type Grant = Result<(TenantId, Option<EnrollmentLinkId>, IdentityGrant), FailInfo>;

/// The SCEP answer: an HTTP content type and body.
pub struct ScepReply {
    pub content_type: &'static str,
    pub body: Vec<u8>,
}

/// What a profile download through an enrollment link gets.
#[derive(Debug)]
pub enum LinkDownload {
    /// The signed enrollment profile (one use of the link spent, one SCEP challenge minted).
    Profile(Vec<u8>),
    /// The link handed out its share of profiles for this minute ([`Orchard::with_link_download_limit`]);
    /// nothing was spent or minted.
    RateLimited { retry_after_seconds: i64 },
}

impl Orchard {
    /// Whether the link whose secret is `link_secret` still hands out profiles (NotFound, or Gone when it has
    /// expired or is used up), without spending a use or minting a challenge: what the link's landing page,
    /// HEAD requests and link-preview bots get.
    pub async fn check_enrollment_link(&self, link_secret: &str) -> Result<(), CoreError> {
        let now = self.clock.now();
        let link = self
            .store
            .find_enrollment_link_by_hash(&secret_hash(link_secret))
            .await?
            .ok_or(CoreError::NotFound)?;
        let active =
            link.expires_at.is_none_or(|e| e >= now) && link.max_uses.is_none_or(|m| link.uses < m);
        if active {
            Ok(())
        } else {
            Err(CoreError::Gone(
                "this enrollment link has expired or reached its maximum number of uses".into(),
            ))
        }
    }

    /// Builds and signs an enrollment profile for the link whose secret is `link_secret`, creating the one-time
    /// SCEP challenge it carries. Counts one use of the link. Only the profile download itself comes here
    /// (never a landing page, a HEAD or a preview), and each link hands out a limited number of profiles a
    /// minute ([`Orchard::with_link_download_limit`]), so challenges are not minted in bulk.
    pub async fn enrollment_profile_for_link(
        &self,
        link_secret: &str,
    ) -> Result<LinkDownload, CoreError> {
        let now = self.clock.now();
        let link = self
            .store
            .find_enrollment_link_by_hash(&secret_hash(link_secret))
            .await?
            .ok_or(CoreError::NotFound)?;
        if let Err(wait) = self.abuse.take_link_download(link.id, now) {
            tracing::warn!(link = %link.id, tenant = %link.tenant_id, "enrollment link rate limited");
            return Ok(LinkDownload::RateLimited {
                retry_after_seconds: wait,
            });
        }
        if !self.store.use_enrollment_link(link.id, now).await? {
            return Err(CoreError::Gone(
                "this enrollment link has expired or reached its maximum number of uses".into(),
            ));
        }
        let challenge = random_secret(24);
        self.store
            .create_scep_challenge(&ScepChallenge {
                challenge_hash: secret_hash(&challenge),
                link_id: link.id,
                tenant_id: link.tenant_id,
                grant: IdentityGrant::Link,
                created_at: now,
                expires_at: now.plus_seconds(self.config.challenge_ttl_seconds),
                used_at: None,
            })
            .await?;
        let profile = self.build_enrollment_profile(challenge);
        let signed = orchard_pki::signature::sign_profile(
            &profile.to_plist(),
            &self.pki.profile_signer,
            &[self.pki.server_ca.identity()],
        )?;
        tracing::info!(link = %link.id, tenant = %link.tenant_id, "enrollment profile handed out");
        Ok(LinkDownload::Profile(signed))
    }

    pub(crate) fn build_enrollment_profile(&self, challenge: String) -> EnrollmentProfile {
        let c = &self.config;
        EnrollmentProfile {
            identifier: "edu.orchard.enrollment".into(),
            uuid: Uuid::new_v4(),
            display_name: format!("{} device management", c.organization),
            organization: c.organization.clone(),
            description: Some(
                "Enrolls this iPad in the university's device management (Orchard).".into(),
            ),
            // The server CA, not the device CA: every iPad trusts this root for TLS, and its name constraints
            // keep that trust to Orchard's own names.
            root_ca_der: Some(self.pki.server_ca.cert_der()),
            root_payload_uuid: Uuid::new_v4(),
            scep: ScepPayload {
                url: c.scep_url(),
                name: "Orchard".into(),
                subject: vec![
                    ("O".into(), c.organization.clone()),
                    ("CN".into(), "Orchard device identity".into()),
                ],
                challenge,
                key_size: 2048,
                key_usage: 5,
                ca_fingerprint: None,
            },
            scep_payload_uuid: Uuid::new_v4(),
            mdm: MdmPayload {
                server_url: c.server_url(),
                check_in_url: c.checkin_url(),
                topic: self.current_topic(),
                sign_message: true,
                check_out_when_removed: true,
                access_rights: ALL_ACCESS_RIGHTS,
                server_capabilities: SERVER_CAPABILITIES.iter().map(|s| s.to_string()).collect(),
                use_development_apns: false,
            },
            mdm_payload_uuid: Uuid::new_v4(),
        }
    }

    /// `GET /scep?operation=GetCACaps`.
    pub fn scep_ca_caps(&self) -> ScepReply {
        ScepReply {
            content_type: "text/plain",
            body: scep::CA_CAPS.as_bytes().to_vec(),
        }
    }

    /// `GET /scep?operation=GetCACert`: our CA certificate, which is also the RA.
    pub fn scep_ca_cert(&self) -> ScepReply {
        ScepReply {
            content_type: "application/x-x509-ca-cert",
            body: self.pki.ca.cert_der(),
        }
    }

    /// `PKIOperation` (RFC 8894): decodes the request, checks the one-time challenge (PKCSReq) or the current
    /// identity (RenewalReq), and answers a CertRep. Only a message that cannot be answered at all (no CMS, no
    /// transactionID) is an error (HTTP 400); every refusal of a request we can read is a CertRep FAILURE with
    /// its failInfo. A refused request changes nothing: the challenge is consumed in the same unit of work that
    /// issues and records the certificate. A retry of a request that got its certificate (same transactionID,
    /// same key) and a CertPoll get that certificate again.
    pub async fn scep_pki_operation(&self, message: &[u8]) -> Result<ScepReply, CoreError> {
        let now = self.clock.now();
        let ca = &self.pki.ca;
        let reply = |body: Vec<u8>| ScepReply {
            content_type: "application/x-pki-message",
            body,
        };
        let refuse = |reply_to: &scep::ReplyTo,
                      fail: FailInfo,
                      reason: &str|
         -> Result<ScepReply, CoreError> {
            tracing::warn!(transaction = %reply_to.transaction_id, ?fail, reason, "scep request refused");
            Ok(reply(scep::cert_rep_refusal(ca, reply_to, fail)?))
        };
        let req = match scep::decode_pki_operation(ca, message)
            .map_err(|e| CoreError::Invalid(format!("scep message: {e}")))?
        {
            PkiOperation::Request(req) => req,
            PkiOperation::Refused {
                reply_to,
                fail,
                reason,
            } => return refuse(&reply_to, fail, &reason),
        };
        if let (Some(max_age), Some(signed_at)) =
            (self.config.device_message_max_age_seconds, req.signing_time)
        {
            if (now.0 - signed_at.0).abs() > max_age {
                return refuse(
                    &req.reply_to(),
                    FailInfo::BadTime,
                    "signingTime outside the freshness window",
                );
            }
        }
        let signer_key_sha256 = scep::certificate_key_sha256(&req.signer_cert_der)?;
        match req.message_type {
            MessageType::PkcsReq | MessageType::RenewalReq => {}
            MessageType::CertPoll => {
                // Answered from what was issued: only to whoever signed the request (same signer key) or holds
                // the certificate's key.
                let earlier = self
                    .store
                    .find_scep_transactions(&req.transaction_id, now)
                    .await?;
                for (_, t) in &earlier {
                    if t.signer_key_sha256 == signer_key_sha256
                        || scep::certificate_key_sha256(&t.certificate_der)? == signer_key_sha256
                    {
                        return Ok(reply(scep::cert_rep_success(ca, &req, &t.certificate_der)?));
                    }
                }
                return refuse(
                    &req.reply_to(),
                    FailInfo::BadCertId,
                    "no certificate for this transaction",
                );
            }
            MessageType::GetCert | MessageType::GetCrl => {
                return refuse(&req.reply_to(), FailInfo::BadRequest, "not offered")
            }
        }

        let requested_key_sha256 = scep::request_key_sha256(&req.csr_der)?;
        let challenge_hash = req
            .challenge_password
            .as_ref()
            .map(|c| secret_hash(c.expose()));
        // The same transactionID for the same key and the same challenge (or none, a renewal) is a retry after a
        // lost answer: the same certificate again. The same key with another challenge enrolls again (the
        // transactionID is a hash of the key); the same transactionID for another key is refused.
        let earlier = self
            .store
            .find_scep_transactions(&req.transaction_id, now)
            .await?;
        let mut another_key = false;
        for (_, t) in &earlier {
            if scep::certificate_key_sha256(&t.certificate_der)? != requested_key_sha256 {
                another_key = true;
            } else if t.challenge_hash == challenge_hash {
                tracing::info!(transaction = %req.transaction_id, "scep request answered again");
                return Ok(reply(scep::cert_rep_success(ca, &req, &t.certificate_der)?));
            }
        }
        if another_key {
            return refuse(
                &req.reply_to(),
                FailInfo::BadRequest,
                "transactionID already used for another key",
            );
        }
        // A renewal spends nothing, so it is checked before the unit (whose SQLite write lock it need not hold);
        // a PKCSReq's challenge is spent inside it, with the certificate.
        let renewal = match req.message_type {
            MessageType::RenewalReq => Some(self.check_renewal(&req, now).await?),
            _ => None,
        };
        let mut unit = self.store.begin_unit().await?;
        let grant = match renewal {
            Some(grant) => grant,
            None => self.check_challenge(&mut unit, &req, now).await?,
        };
        let (tenant_id, link_id, grant) = match grant {
            Ok(g) => g,
            Err(fail) => return refuse(&req.reply_to(), fail, "not granted"),
        };
        let issued =
            match scep::issue_certificate(ca, &req, now, self.config.identity_validity_days) {
                Ok(issued) => issued,
                Err(PkiError::Unsupported(reason)) => {
                    return refuse(&req.reply_to(), FailInfo::BadAlg, &reason)
                }
                Err(PkiError::Malformed(reason)) => {
                    return refuse(&req.reply_to(), FailInfo::BadRequest, &reason)
                }
                Err(e) => return Err(e.into()),
            };
        // Built before anything is recorded: a reply that cannot be made leaves no certificate behind.
        let answer = scep::cert_rep_success(ca, &req, &issued)?;
        let (_, not_after) = orchard_pki::cert_validity(&issued)?;
        let fingerprint = orchard_pki::fingerprint_sha256_hex(&issued);
        unit.record_issued_certificate(&IssuedCertificate {
            fingerprint: fingerprint.clone(),
            serial_hex: orchard_pki::cert_serial_hex(&issued)?,
            subject: req.subject_common_name.clone().unwrap_or_default(),
            tenant_id,
            link_id,
            grant: grant.clone(),
            issued_at: now,
            not_after,
            bound_device_id: None,
            bound_at: None,
            revoked_at: None,
            revoked_reason: None,
            renewed_at: None,
        })
        .await?;
        unit.record_scep_transaction(
            &fingerprint,
            &ScepTransaction {
                transaction_id: req.transaction_id.clone(),
                signer_key_sha256,
                certificate_der: issued,
                challenge_hash,
            },
        )
        .await?;
        self.commit_unit(unit).await?;
        tracing::info!(transaction = %req.transaction_id, tenant = %tenant_id, grant = grant.kind(), "device identity issued");
        Ok(reply(answer))
    }

    /// A PKCSReq must carry a challenge we handed out, unused and unexpired; it is consumed in `unit`.
    async fn check_challenge(
        &self,
        unit: &mut UnitOfWork,
        req: &scep::PkiRequest,
        now: UnixTime,
    ) -> Result<Grant, CoreError> {
        let Some(challenge) = &req.challenge_password else {
            return Ok(Err(FailInfo::BadRequest));
        };
        match unit
            .consume_scep_challenge(&secret_hash(challenge.expose()), now)
            .await?
        {
            Some(c) => Ok(Ok((c.tenant_id, Some(c.link_id), c.grant))),
            None => Ok(Err(FailInfo::BadRequest)),
        }
    }

    /// A RenewalReq is signed by an identity we issued that is still valid, not revoked and, if it was bound, still
    /// its device's current identity; the new one keeps its tenant, and may bind only the device the old one was
    /// bound to (a renewal is that device's rebind), or what the old one could bind if it never was.
    async fn check_renewal(
        &self,
        req: &scep::PkiRequest,
        now: UnixTime,
    ) -> Result<Grant, CoreError> {
        if !self.pki.ca.is_issued_by_me(&req.signer_cert_der) {
            return Ok(Err(FailInfo::BadMessageCheck));
        }
        let fingerprint = orchard_pki::fingerprint_sha256_hex(&req.signer_cert_der);
        match self.store.find_issued_certificate(&fingerprint).await? {
            Some(c) if c.not_after > now && c.revoked_at.is_none() => {
                let (tenant_id, grant) = match c.bound_device_id {
                    Some(device_id) => {
                        // An identity the device has since replaced renews nothing: only the current one may.
                        let Some(device) = self
                            .store
                            .find_device_by_cert_fingerprint(&fingerprint)
                            .await?
                            .filter(|d| d.id == device_id)
                        else {
                            return Ok(Err(FailInfo::BadCertId));
                        };
                        // The renewal belongs to the device where it is now (an operator may have moved it
                        // since the old identity was issued): its first request then moves the binding.
                        (
                            device.tenant_id,
                            IdentityGrant::Device {
                                device_id,
                                purpose: DeviceGrantPurpose::Renewal,
                            },
                        )
                    }
                    None => (c.tenant_id, c.grant),
                };
                Ok(Ok((tenant_id, c.link_id, grant)))
            }
            _ => Ok(Err(FailInfo::BadCertId)),
        }
    }
}
