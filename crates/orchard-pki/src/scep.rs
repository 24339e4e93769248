//! SCEP (RFC 8894) messages: the server side (decode a PKIOperation, issue, answer a CertRep) and the client side
//! (build PKCSReq/RenewalReq, decode the CertRep) used by the simulator and tests.
//!
//! A PKIOperation message is a PKCS#7 SignedData whose signed attributes carry the SCEP fields and whose content
//! is an EnvelopedData (encrypted to the CA, which is also our RA) around the PKCS#10 request. The safe openssl
//! API cannot add or read signed attributes nor build certs-only messages, so the few calls it lacks live in the
//! private `ffi` module at the bottom of this file, each wrapped in a small safe function.

use std::sync::OnceLock;

use openssl::hash::MessageDigest;
use openssl::nid::Nid;
use openssl::pkcs7::{Pkcs7, Pkcs7Flags};
use openssl::pkey::{Id, PKeyRef, Private, Public};
use openssl::stack::Stack;
use openssl::symm::Cipher;
use openssl::x509::{X509Name, X509Ref, X509Req, X509ReqBuilder, X509};
use orchard_types::{Secret, UnixTime};

use crate::signature::{attach_content, describe, parse_signed_data, single_signer};
use crate::{common_name, self_signed_cert, CertificateAuthority, Identity, PkiError};

/// What `GetCACaps` answers. Requests signed with MD5 or any digest but SHA-1/SHA-2 are refused with badAlg.
pub const CA_CAPS: &str = "POSTPKIOperation\nSHA-256\nSHA-512\nAES\nDES3\nSCEPStandard\nRenewal\n";
/// Content type of a `GetCACert` answer holding exactly one DER certificate (our CA is also the RA).
pub const CA_CERT_CONTENT_TYPE: &str = "application/x-x509-ca-cert";
/// Content type of a `PKIOperation` answer (a CertRep).
pub const PKI_MESSAGE_CONTENT_TYPE: &str = "application/x-pki-message";
/// A PKIOperation is a CSR and a certificate wrapped twice: a few KB. Anything far larger is refused unparsed.
pub const MAX_PKI_MESSAGE_BYTES: usize = 256 * 1024;
/// Nonces are 16 bytes in practice; a generous bound keeps junk out of replies.
const MAX_NONCE_BYTES: usize = 64;
const MAX_TRANSACTION_ID_CHARS: usize = 256;
/// RSA keys below this size are refused in certificate requests.
const MIN_RSA_BITS: u32 = 2048;
/// Lifetime of the client's throwaway self-signed certificate.
const TEMPORARY_CERT_DAYS: u32 = 7;

/// SCEP messageType values of requests (RFC 8894 §3.2.1.2).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum MessageType {
    PkcsReq,
    RenewalReq,
    CertPoll,
    GetCert,
    GetCrl,
}

impl MessageType {
    /// The decimal string carried in the messageType attribute.
    pub fn code(self) -> &'static str {
        match self {
            MessageType::PkcsReq => "19",
            MessageType::RenewalReq => "17",
            MessageType::CertPoll => "20",
            MessageType::GetCert => "21",
            MessageType::GetCrl => "22",
        }
    }

    pub fn from_code(code: &str) -> Option<Self> {
        match code {
            "19" => Some(MessageType::PkcsReq),
            "17" => Some(MessageType::RenewalReq),
            "20" => Some(MessageType::CertPoll),
            "21" => Some(MessageType::GetCert),
            "22" => Some(MessageType::GetCrl),
            _ => None,
        }
    }
}

/// messageType of a CertRep.
const CERT_REP: &str = "3";

/// SCEP failInfo values (RFC 8894 §3.2.1.4).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FailInfo {
    BadAlg,
    BadMessageCheck,
    BadRequest,
    BadTime,
    BadCertId,
}

impl FailInfo {
    pub fn code(self) -> &'static str {
        match self {
            FailInfo::BadAlg => "0",
            FailInfo::BadMessageCheck => "1",
            FailInfo::BadRequest => "2",
            FailInfo::BadTime => "3",
            FailInfo::BadCertId => "4",
        }
    }

    pub fn from_code(code: &str) -> Option<Self> {
        match code {
            "0" => Some(FailInfo::BadAlg),
            "1" => Some(FailInfo::BadMessageCheck),
            "2" => Some(FailInfo::BadRequest),
            "3" => Some(FailInfo::BadTime),
            "4" => Some(FailInfo::BadCertId),
            _ => None,
        }
    }
}

/// pkiStatus values (RFC 8894 §3.2.1.3).
const STATUS_SUCCESS: &str = "0";
const STATUS_FAILURE: &str = "2";
const STATUS_PENDING: &str = "3";

/// The symmetric cipher of an EnvelopedData. A CertRep is encrypted with the family the request used, so a
/// client that only knows 3DES can read it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ContentCipher {
    Aes128Cbc,
    Aes256Cbc,
    Des3Cbc,
    /// Single DES, which clients use when GetCACaps lists neither AES nor DES3 — and which micromdm's
    /// `scepclient` 2.1 (Debian's `scep` package) uses whatever the caps say. Weak (56-bit key): accepted in
    /// requests only because the envelope merely hides the CSR and a one-time challenge that also travel inside
    /// TLS; a server may refuse it with `FailInfo::BadAlg`. Answered with 3DES. Needs OpenSSL's legacy provider,
    /// loaded on first use.
    DesCbc,
}

impl ContentCipher {
    fn cipher(self) -> Result<Cipher, PkiError> {
        Ok(match self {
            ContentCipher::Aes128Cbc => Cipher::aes_128_cbc(),
            ContentCipher::Aes256Cbc => Cipher::aes_256_cbc(),
            ContentCipher::Des3Cbc => Cipher::des_ede3_cbc(),
            ContentCipher::DesCbc => {
                ensure_legacy_provider()?;
                Cipher::des_cbc()
            }
        })
    }

    /// What the answer to a request encrypted with `self` uses: AES-256 for any AES, 3DES for (3)DES.
    fn reply_cipher(self) -> ContentCipher {
        match self {
            ContentCipher::Aes128Cbc | ContentCipher::Aes256Cbc => ContentCipher::Aes256Cbc,
            ContentCipher::Des3Cbc | ContentCipher::DesCbc => ContentCipher::Des3Cbc,
        }
    }
}

/// Loads OpenSSL 3's legacy provider (single DES lives there) into the default library context, once, keeping
/// the default provider available; the handle stays loaded for the life of the process.
fn ensure_legacy_provider() -> Result<(), PkiError> {
    static LEGACY: OnceLock<Result<openssl::provider::Provider, String>> = OnceLock::new();
    LEGACY
        .get_or_init(|| {
            openssl::provider::Provider::try_load(None, "legacy", true).map_err(|e| describe(&e))
        })
        .as_ref()
        .map(|_| ())
        .map_err(|e| PkiError::Unsupported(format!("des-cbc needs openssl's legacy provider: {e}")))
}

/// A decoded and signature-checked PKIOperation request.
#[derive(Debug, Clone)]
pub struct PkiRequest {
    pub message_type: MessageType,
    pub transaction_id: String,
    pub sender_nonce: Vec<u8>,
    /// The temporary self-signed certificate for PKCSReq, the existing identity for RenewalReq. For RenewalReq
    /// the caller must check it (`ca.is_issued_by_me`, validity, the device it belongs to): decoding only proves
    /// the request was signed with its key.
    pub signer_cert_der: Vec<u8>,
    /// The PKCS#10 request for PKCSReq/RenewalReq (its self-signature verified); for CertPoll/GetCert/GetCRL the
    /// decrypted messageData as is.
    pub csr_der: Vec<u8>,
    pub challenge_password: Option<Secret<String>>,
    pub subject_common_name: Option<String>,
    /// The cipher the request's envelope used (the CertRep answers with the same family).
    pub content_cipher: ContentCipher,
    /// The signingTime signed attribute, when the client set one (the caller may refuse a stale one: badTime).
    pub signing_time: Option<UnixTime>,
}

impl PkiRequest {
    /// Whom the CertRep answers.
    pub fn reply_to(&self) -> ReplyTo {
        ReplyTo {
            transaction_id: self.transaction_id.clone(),
            sender_nonce: self.sender_nonce.clone(),
        }
    }
}

/// Who a CertRep answers: the request's transactionID and senderNonce (echoed as recipientNonce). Readable from
/// the outer signed attributes before anything is verified or decrypted, so even a refused request gets its
/// CertRep.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReplyTo {
    pub transaction_id: String,
    pub sender_nonce: Vec<u8>,
}

/// A PKIOperation as the server reads it: a request to act on, or one to refuse with a CertRep FAILURE.
#[derive(Debug, Clone)]
pub enum PkiOperation {
    Request(PkiRequest),
    /// Readable enough to answer (transactionID and senderNonce) but refused: the answer is
    /// [`cert_rep_refusal`] with `fail`; `reason` is for the log only.
    Refused {
        reply_to: ReplyTo,
        fail: FailInfo,
        reason: String,
    },
}

/// Digests a request may be signed with: what GetCACaps advertises (SHA-256, SHA-512), SHA-384 between them, and
/// SHA-1, which is not advertised but which clients that ignore the caps use: micromdm's `scepclient` 2.1
/// (Debian's `scep`) signs with SHA-1 and encrypts with single DES whatever the caps say (the same exception as
/// [`ContentCipher::DesCbc`]; the envelope only hides a CSR and a one-time challenge that also travel inside TLS).
/// MD5 and anything else are refused with badAlg.
const ACCEPTED_DIGESTS: [Nid; 4] = [Nid::SHA1, Nid::SHA256, Nid::SHA384, Nid::SHA512];
/// RSA keys above this size are refused too: nothing needs them, and they only make every check slower.
const MAX_RSA_BITS: u32 = 8192;

/// [`decode_pki_operation`] for callers that treat every refusal as an error (tests, fuzzing, tools).
pub fn decode_pki_message(ca: &CertificateAuthority, der: &[u8]) -> Result<PkiRequest, PkiError> {
    match decode_pki_operation(ca, der)? {
        PkiOperation::Request(request) => Ok(request),
        PkiOperation::Refused { fail, reason, .. } => Err(match fail {
            FailInfo::BadAlg => PkiError::Unsupported(reason),
            FailInfo::BadMessageCheck => PkiError::BadSignature(reason),
            _ => PkiError::Malformed(reason),
        }),
    }
}

/// Reads a PKIOperation. `Err` only when it cannot be answered at all (not a SignedData with one signer, or no
/// usable transactionID/senderNonce): HTTP 400. Everything after that is a [`PkiOperation::Refused`] with the
/// failInfo RFC 8894 §3.2.1.4 names: a digest or cipher or key we do not accept (badAlg), a signature that does
/// not verify with the signer certificate the message carries, or a CSR whose self-signature does not verify
/// (badMessageCheck), anything else unreadable (badRequest).
///
/// The signer certificate of a PKCSReq may hold any key (RFC 8894 §2.3 only SHOULDs the request's key; several
/// client libraries sign with a throwaway key): the CMS signature must verify with it and the CSR's own
/// signature with the CSR's key. The CertRep is encrypted to the signer certificate, which the client can
/// decrypt, so that key must be RSA too.
pub fn decode_pki_operation(
    ca: &CertificateAuthority,
    der: &[u8],
) -> Result<PkiOperation, PkiError> {
    if der.len() > MAX_PKI_MESSAGE_BYTES {
        return Err(PkiError::Malformed("pki message is too large".into()));
    }
    let nids = scep_nids()?;
    let outer = parse_signed_data(der, "pki message")?;
    let attributes = ffi::SignerAttributes::of_single_signer(&outer)?;
    let transaction_id = attributes.required_string(nids.transaction_id, "transactionID")?;
    if transaction_id.is_empty() || transaction_id.chars().count() > MAX_TRANSACTION_ID_CHARS {
        return Err(PkiError::Malformed("transactionID length".into()));
    }
    let sender_nonce = attributes.required_octets(nids.sender_nonce, "senderNonce")?;
    if sender_nonce.is_empty() || sender_nonce.len() > MAX_NONCE_BYTES {
        return Err(PkiError::Malformed("senderNonce length".into()));
    }
    let reply_to = ReplyTo {
        transaction_id,
        sender_nonce,
    };
    let refuse = |fail: FailInfo, reason: String| {
        Ok(PkiOperation::Refused {
            reply_to: reply_to.clone(),
            fail,
            reason,
        })
    };

    // The digest first: an MD5 signature is refused whether or not it verifies.
    let digest = attributes.digest_nid();
    if !ACCEPTED_DIGESTS.contains(&digest) {
        return refuse(
            FailInfo::BadAlg,
            format!(
                "message digest {} is not offered in GetCACaps",
                digest.long_name().unwrap_or("unknown")
            ),
        );
    }
    let mut envelope_der = Vec::new();
    let no_extra_certs = Stack::<X509>::new()?;
    // Signature only: the signer of a PKCSReq is a throwaway self-signed certificate, so there is no chain.
    if let Err(e) = outer.verify(
        &no_extra_certs,
        ca.empty_store(),
        None,
        Some(&mut envelope_der),
        Pkcs7Flags::NOVERIFY | Pkcs7Flags::BINARY,
    ) {
        return refuse(
            FailInfo::BadMessageCheck,
            format!("pki message signature: {}", describe(&e)),
        );
    }
    let signer = match single_signer(&outer) {
        Ok(signer) => signer,
        Err(e) => return refuse(FailInfo::BadMessageCheck, e.to_string()),
    };
    // The signer certificate is what the reply is encrypted to, what a retry is matched by and what is stored:
    // it must read back from its own DER. OpenSSL parses some malformed certificates inside a SignedData (the
    // fuzzer found an AlgorithmIdentifier whose parameters are a constructed end-of-contents) and writes them
    // out as DER it then refuses, so a request it accepts here could otherwise not be answered at all.
    let signer_cert_der = match signer.to_der() {
        Ok(der) if X509::from_der(&der).is_ok() => der,
        _ => {
            return refuse(
                FailInfo::BadMessageCheck,
                "signer certificate does not read back from its DER".into(),
            )
        }
    };
    let signing_time = attributes.signing_time();
    let message_type_code = match attributes.required_string(nids.message_type, "messageType") {
        Ok(code) => code,
        Err(e) => return refuse(FailInfo::BadRequest, e.to_string()),
    };
    let Some(message_type) = MessageType::from_code(&message_type_code) else {
        return refuse(
            FailInfo::BadRequest,
            format!("scep message type {message_type_code:?}"),
        );
    };
    // The reply is encrypted to the signer certificate's key: PKCS#7 key transport is RSA only.
    if let Err(reason) = check_rsa_key(signer.public_key()?.as_ref(), "signer certificate") {
        return refuse(FailInfo::BadAlg, reason);
    }

    let envelope = match Pkcs7::from_der(&envelope_der) {
        Ok(envelope) => envelope,
        Err(e) => {
            return refuse(
                FailInfo::BadRequest,
                format!("pki envelope: {}", describe(&e)),
            )
        }
    };
    let content_cipher = match ffi::envelope_cipher(&envelope) {
        Ok(cipher) => cipher,
        Err(PkiError::Unsupported(reason)) => return refuse(FailInfo::BadAlg, reason),
        Err(e) => return refuse(FailInfo::BadRequest, e.to_string()),
    };
    let message_data = match envelope.decrypt(
        ca.identity().private_key(),
        ca.identity().x509(),
        Pkcs7Flags::BINARY,
    ) {
        Ok(data) => data,
        Err(e) => {
            return refuse(
                FailInfo::BadRequest,
                format!(
                    "pki envelope cannot be decrypted with our ca key: {}",
                    describe(&e)
                ),
            )
        }
    };

    let mut request = PkiRequest {
        message_type,
        transaction_id: reply_to.transaction_id.clone(),
        sender_nonce: reply_to.sender_nonce.clone(),
        signer_cert_der,
        csr_der: message_data,
        challenge_password: None,
        subject_common_name: None,
        content_cipher,
        signing_time,
    };
    if matches!(message_type, MessageType::PkcsReq | MessageType::RenewalReq) {
        let csr = match X509Req::from_der(&request.csr_der) {
            Ok(csr) => csr,
            Err(e) => {
                return refuse(
                    FailInfo::BadRequest,
                    format!("certificate request: {}", describe(&e)),
                )
            }
        };
        let csr_key = csr.public_key()?;
        if let Err(reason) = check_rsa_key(&csr_key, "requested key") {
            return refuse(FailInfo::BadAlg, reason);
        }
        let csr_digest = ffi::csr_signature_nid(&csr);
        if !ACCEPTED_CSR_SIGNATURES.contains(&csr_digest) {
            return refuse(
                FailInfo::BadAlg,
                format!(
                    "certificate request signed with {}",
                    csr_digest.long_name().unwrap_or("unknown")
                ),
            );
        }
        if !csr.verify(&csr_key).unwrap_or(false) {
            drop(openssl::error::ErrorStack::get());
            return refuse(
                FailInfo::BadMessageCheck,
                "certificate request self-signature does not verify".into(),
            );
        }
        if csr.subject_name().entries().next().is_none() {
            return refuse(
                FailInfo::BadRequest,
                "certificate request subject is empty".into(),
            );
        }
        request.challenge_password = match ffi::csr_challenge_password(&csr) {
            Ok(challenge) => challenge.map(Secret::new),
            Err(e) => return refuse(FailInfo::BadRequest, e.to_string()),
        };
        request.subject_common_name = common_name(csr.subject_name());
    }
    Ok(PkiOperation::Request(request))
}

/// CSR signature algorithms accepted: RSA with the digests of [`ACCEPTED_DIGESTS`] (RSA-PSS too).
const ACCEPTED_CSR_SIGNATURES: [Nid; 5] = [
    Nid::SHA1WITHRSAENCRYPTION,
    Nid::SHA256WITHRSAENCRYPTION,
    Nid::SHA384WITHRSAENCRYPTION,
    Nid::SHA512WITHRSAENCRYPTION,
    Nid::RSASSAPSS,
];

/// RSA of [`MIN_RSA_BITS`]..=[`MAX_RSA_BITS`] bits, or why not (iPads use RSA-2048; PKCS#7 can encrypt a
/// reply only to RSA).
fn check_rsa_key(key: &PKeyRef<Public>, what: &str) -> Result<(), String> {
    if key.id() != Id::RSA {
        return Err(format!("{what}: key type {:?} (rsa only)", key.id()));
    }
    let bits = key.bits();
    if !(MIN_RSA_BITS..=MAX_RSA_BITS).contains(&bits) {
        return Err(format!(
            "{what}: rsa key of {bits} bits ({MIN_RSA_BITS} to {MAX_RSA_BITS})"
        ));
    }
    Ok(())
}

/// SHA-256 (hex) of a certificate's public key (its SubjectPublicKeyInfo DER): which key a certificate is for.
pub fn certificate_key_sha256(cert_der: &[u8]) -> Result<String, PkiError> {
    let cert = X509::from_der(cert_der)
        .map_err(|e| PkiError::Malformed(format!("certificate: {}", describe(&e))))?;
    Ok(hex::encode(openssl::sha::sha256(
        &cert.public_key()?.public_key_to_der()?,
    )))
}

/// [`certificate_key_sha256`] of the key a PKCS#10 request asks to certify.
pub fn request_key_sha256(csr_der: &[u8]) -> Result<String, PkiError> {
    let csr = X509Req::from_der(csr_der)
        .map_err(|e| PkiError::Malformed(format!("certificate request: {}", describe(&e))))?;
    Ok(hex::encode(openssl::sha::sha256(
        &csr.public_key()?.public_key_to_der()?,
    )))
}

/// Issues a device identity from the CSR: clientAuth EKU, digitalSignature+keyEncipherment, serial = random 128-bit.
pub fn issue_certificate(
    ca: &CertificateAuthority,
    req: &PkiRequest,
    now: UnixTime,
    validity_days: u32,
) -> Result<Vec<u8>, PkiError> {
    use openssl::x509::extension::{ExtendedKeyUsage, KeyUsage};

    if !matches!(
        req.message_type,
        MessageType::PkcsReq | MessageType::RenewalReq
    ) {
        return Err(PkiError::Unsupported(format!(
            "cannot issue for message type {}",
            req.message_type.code()
        )));
    }
    let csr = X509Req::from_der(&req.csr_der)
        .map_err(|e| PkiError::Malformed(format!("certificate request: {}", describe(&e))))?;
    let public_key = csr.public_key()?;
    // decode_pki_operation refused other keys already (badAlg); checked again so nothing else is ever issued.
    check_rsa_key(public_key.as_ref(), "requested key").map_err(PkiError::Unsupported)?;
    let subject = csr.subject_name();
    if subject.entries().next().is_none() {
        return Err(PkiError::Malformed(
            "certificate request subject is empty".into(),
        ));
    }
    let mut builder = ca.leaf_builder(subject, &public_key, now, validity_days)?;
    builder.append_extension(
        KeyUsage::new()
            .critical()
            .digital_signature()
            .key_encipherment()
            .build()?,
    )?;
    builder.append_extension(ExtendedKeyUsage::new().client_auth().build()?)?;
    Ok(ca.sign_leaf(builder)?.to_der()?)
}

/// The success CertRep: a degenerate certs-only PKCS#7 with the issued certificate, enveloped to the request's
/// signer certificate, inside a SignedData by the CA; recipientNonce = the request's senderNonce. Strict DER.
pub fn cert_rep_success(
    ca: &CertificateAuthority,
    req: &PkiRequest,
    issued_der: &[u8],
) -> Result<Vec<u8>, PkiError> {
    let issued = X509::from_der(issued_der)
        .map_err(|e| PkiError::Malformed(format!("issued certificate: {}", describe(&e))))?;
    let recipient = X509::from_der(&req.signer_cert_der).map_err(|e| {
        PkiError::Malformed(format!("request signer certificate: {}", describe(&e)))
    })?;
    let degenerate = certs_only_der(&[&issued])?;
    let envelope = envelope_der(&recipient, &degenerate, req.content_cipher.reply_cipher())?;
    cert_rep(ca, &req.reply_to(), STATUS_SUCCESS, None, Some(&envelope))
}

pub fn cert_rep_failure(
    ca: &CertificateAuthority,
    req: &PkiRequest,
    fail: FailInfo,
) -> Result<Vec<u8>, PkiError> {
    cert_rep_refusal(ca, &req.reply_to(), fail)
}

/// A FAILURE CertRep for a request that was refused while decoding ([`PkiOperation::Refused`]).
pub fn cert_rep_refusal(
    ca: &CertificateAuthority,
    reply_to: &ReplyTo,
    fail: FailInfo,
) -> Result<Vec<u8>, PkiError> {
    cert_rep(ca, reply_to, STATUS_FAILURE, Some(fail), None)
}

/// A PENDING CertRep (the client is to poll later). Orchard decides at once, but the message exists.
pub fn cert_rep_pending(ca: &CertificateAuthority, req: &PkiRequest) -> Result<Vec<u8>, PkiError> {
    cert_rep(ca, &req.reply_to(), STATUS_PENDING, None, None)
}

fn cert_rep(
    ca: &CertificateAuthority,
    req: &ReplyTo,
    status: &str,
    fail: Option<FailInfo>,
    content: Option<&[u8]>,
) -> Result<Vec<u8>, PkiError> {
    let nids = scep_nids()?;
    let sender_nonce = fresh_nonce()?;
    let mut attributes = vec![
        ffi::NewAttribute::printable(nids.message_type, CERT_REP),
        ffi::NewAttribute::printable(nids.pki_status, status),
        ffi::NewAttribute::printable(nids.transaction_id, &req.transaction_id),
        ffi::NewAttribute::octets(nids.recipient_nonce, &req.sender_nonce),
        ffi::NewAttribute::octets(nids.sender_nonce, &sender_nonce),
    ];
    if let Some(fail) = fail {
        attributes.push(ffi::NewAttribute::printable(nids.fail_info, fail.code()));
    }
    ffi::sign_with_attributes(
        ca.identity().x509(),
        ca.identity().private_key(),
        MessageDigest::sha256(),
        content,
        &attributes,
    )
}

/// A request on its way: what the client keeps to read the CertRep.
#[derive(Clone)]
pub struct PendingRequest {
    pub transaction_id: String,
    pub message_der: Vec<u8>,
    pub message_type: MessageType,
    pub sender_nonce: Vec<u8>,
    /// The identity that signed the request; the CertRep envelope is encrypted to its certificate.
    signer: Identity,
}

impl std::fmt::Debug for PendingRequest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PendingRequest")
            .field("transaction_id", &self.transaction_id)
            .field("message_type", &self.message_type)
            .field("message_bytes", &self.message_der.len())
            .finish()
    }
}

impl PendingRequest {
    /// DER of the certificate that signed the request (the temporary one for PKCSReq).
    pub fn signer_cert_der(&self) -> Vec<u8> {
        self.signer.cert_der()
    }
}

/// How a client builds a PKCSReq. Orchard's simulator uses [`ClientChoices::default`] (what an iPad does:
/// signed with the requested key, SHA-256, AES-256); other SCEP clients choose differently, and the interop and
/// refusal tests build their requests through this.
#[derive(Clone, Copy)]
pub struct ClientChoices<'a> {
    /// The envelope's cipher (Blowfish and friends only to see them refused; they need [`load_legacy_ciphers`]).
    pub cipher: Cipher,
    /// The digest of the CMS signature and of the CSR's self-signature.
    pub digest: MessageDigest,
    /// Sign the message with a throwaway self-signed certificate over this key instead of the requested key
    /// (RFC 8894 §2.3 allows it; several client libraries do it).
    pub signer_key: Option<&'a PKeyRef<Private>>,
    /// The transactionID; None: SHA-256 of the requested public key (hex), as RFC 8894 suggests.
    pub transaction_id: Option<&'a str>,
}

impl Default for ClientChoices<'_> {
    fn default() -> Self {
        ClientChoices {
            cipher: Cipher::aes_256_cbc(),
            digest: MessageDigest::sha256(),
            signer_key: None,
            transaction_id: None,
        }
    }
}

/// Makes OpenSSL's legacy ciphers (single DES, Blowfish, …) available to this process.
pub fn load_legacy_ciphers() -> Result<(), PkiError> {
    ensure_legacy_provider()
}

/// PKCSReq signed by a fresh self-signed certificate over `key`, AES-256-CBC envelope, SHA-256.
pub fn build_pkcs_req(
    ca_cert_der: &[u8],
    key: &PKeyRef<Private>,
    subject_cn: &str,
    challenge: Option<&str>,
    now: UnixTime,
) -> Result<PendingRequest, PkiError> {
    build_pkcs_req_as(
        ca_cert_der,
        key,
        subject_cn,
        challenge,
        now,
        &ClientChoices::default(),
    )
}

/// [`build_pkcs_req`] with a chosen envelope cipher (older clients use 3DES).
pub fn build_pkcs_req_with_cipher(
    ca_cert_der: &[u8],
    key: &PKeyRef<Private>,
    subject_cn: &str,
    challenge: Option<&str>,
    now: UnixTime,
    cipher: ContentCipher,
) -> Result<PendingRequest, PkiError> {
    build_pkcs_req_as(
        ca_cert_der,
        key,
        subject_cn,
        challenge,
        now,
        &ClientChoices {
            cipher: cipher.cipher()?,
            ..ClientChoices::default()
        },
    )
}

/// A PKCSReq for `key` built as `choices` say.
pub fn build_pkcs_req_as(
    ca_cert_der: &[u8],
    key: &PKeyRef<Private>,
    subject_cn: &str,
    challenge: Option<&str>,
    now: UnixTime,
    choices: &ClientChoices<'_>,
) -> Result<PendingRequest, PkiError> {
    let signer_key = choices.signer_key.unwrap_or(key);
    let temporary = self_signed_cert(signer_key, subject_cn, now, TEMPORARY_CERT_DAYS)?;
    let signer = Identity::from_parts(temporary, signer_key.to_owned())?;
    build_request(
        ca_cert_der,
        key,
        &signer,
        subject_cn,
        challenge,
        MessageType::PkcsReq,
        choices,
    )
}

/// RenewalReq for a new key, signed by the identity the CA issued earlier.
pub fn build_renewal_req(
    ca_cert_der: &[u8],
    key: &PKeyRef<Private>,
    current: &Identity,
    subject_cn: &str,
    _now: UnixTime,
) -> Result<PendingRequest, PkiError> {
    build_request(
        ca_cert_der,
        key,
        current,
        subject_cn,
        None,
        MessageType::RenewalReq,
        &ClientChoices::default(),
    )
}

/// CertPoll (GetCertInitial, RFC 8894 §3.3.3) for an earlier request: same transactionID and signer, a fresh
/// senderNonce; the messageData is IssuerAndSubject (the CA's name and the requested subject).
pub fn build_cert_poll(
    ca_cert_der: &[u8],
    earlier: &PendingRequest,
    subject_cn: &str,
) -> Result<PendingRequest, PkiError> {
    let ca_cert = X509::from_der(ca_cert_der)
        .map_err(|e| PkiError::Malformed(format!("ca certificate: {}", describe(&e))))?;
    let mut subject = X509Name::builder()?;
    subject
        .append_entry_by_nid(Nid::COMMONNAME, subject_cn)
        .map_err(|e| PkiError::Malformed(format!("common name: {e}")))?;
    let issuer_and_subject = der_sequence(&[
        &ca_cert.subject_name().to_der()?,
        &subject.build().to_der()?,
    ])?;
    sign_request(
        &ca_cert,
        &earlier.signer,
        &issuer_and_subject,
        earlier.transaction_id.clone(),
        MessageType::CertPoll,
        &ClientChoices::default(),
    )
}

/// A DER SEQUENCE of already encoded elements.
fn der_sequence(elements: &[&[u8]]) -> Result<Vec<u8>, PkiError> {
    let body: Vec<u8> = elements.concat();
    let len = body.len();
    let mut der = vec![0x30];
    match len {
        0..=0x7f => der.push(len as u8),
        0x80..=0xff => der.extend([0x81, len as u8]),
        0x100..=0xffff => der.extend([0x82, (len >> 8) as u8, len as u8]),
        _ => return Err(PkiError::Malformed("sequence too long".into())),
    }
    der.extend(body);
    Ok(der)
}

fn build_request(
    ca_cert_der: &[u8],
    key: &PKeyRef<Private>,
    signer: &Identity,
    subject_cn: &str,
    challenge: Option<&str>,
    message_type: MessageType,
    choices: &ClientChoices<'_>,
) -> Result<PendingRequest, PkiError> {
    let ca_cert = X509::from_der(ca_cert_der)
        .map_err(|e| PkiError::Malformed(format!("ca certificate: {}", describe(&e))))?;
    let csr_der = build_csr(key, subject_cn, challenge, choices.digest)?;
    // RFC 8894 suggests a hash of the public key: stable across retries of the same key.
    let transaction_id = match choices.transaction_id {
        Some(chosen) => chosen.to_owned(),
        None => hex::encode(openssl::hash::hash(
            MessageDigest::sha256(),
            &key.public_key_to_der()?,
        )?),
    };
    sign_request(
        &ca_cert,
        signer,
        &csr_der,
        transaction_id,
        message_type,
        choices,
    )
}

/// Envelopes `message_data` to the CA and signs it with the SCEP attributes.
fn sign_request(
    ca_cert: &X509Ref,
    signer: &Identity,
    message_data: &[u8],
    transaction_id: String,
    message_type: MessageType,
    choices: &ClientChoices<'_>,
) -> Result<PendingRequest, PkiError> {
    let mut recipients = Stack::<X509>::new()?;
    recipients.push(ca_cert.to_owned())?;
    let envelope = Pkcs7::encrypt(
        &recipients,
        message_data,
        choices.cipher,
        Pkcs7Flags::BINARY,
    )?
    .to_der()?;
    let sender_nonce = fresh_nonce()?;
    let nids = scep_nids()?;
    let attributes = [
        ffi::NewAttribute::printable(nids.message_type, message_type.code()),
        ffi::NewAttribute::printable(nids.transaction_id, &transaction_id),
        ffi::NewAttribute::octets(nids.sender_nonce, &sender_nonce),
    ];
    let message_der = ffi::sign_with_attributes(
        signer.x509(),
        signer.private_key(),
        choices.digest,
        Some(&envelope),
        &attributes,
    )?;
    Ok(PendingRequest {
        transaction_id,
        message_der,
        message_type,
        sender_nonce,
        signer: signer.clone(),
    })
}

/// A PKCS#10 request for `key` with subject CN and, if given, the challengePassword attribute.
fn build_csr(
    key: &PKeyRef<Private>,
    subject_cn: &str,
    challenge: Option<&str>,
    digest: MessageDigest,
) -> Result<Vec<u8>, PkiError> {
    let mut name = X509Name::builder()?;
    name.append_entry_by_nid(Nid::COMMONNAME, subject_cn)
        .map_err(|e| PkiError::Malformed(format!("common name: {e}")))?;
    let name = name.build();
    let mut builder = X509ReqBuilder::new()?;
    builder.set_version(0)?;
    builder.set_subject_name(&name)?;
    builder.set_pubkey(key)?;
    let csr = builder.build();
    if let Some(challenge) = challenge {
        ffi::csr_add_challenge_password(&csr, challenge)?;
    }
    ffi::csr_sign(&csr, key, digest)?;
    Ok(csr.to_der()?)
}

#[derive(Clone, PartialEq, Eq)]
pub enum CertRepOutcome {
    Success(Vec<u8>),
    Failure(FailInfo),
    Pending,
}

impl std::fmt::Debug for CertRepOutcome {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            CertRepOutcome::Success(der) => write!(f, "Success({} bytes)", der.len()),
            CertRepOutcome::Failure(info) => write!(f, "Failure({info:?})"),
            CertRepOutcome::Pending => f.write_str("Pending"),
        }
    }
}

/// Reads a CertRep: signed by the CA (or a certificate it issued), answering `pending` (transactionID and
/// recipientNonce), and on success returns the issued certificate for `key` from the decrypted envelope.
pub fn decode_cert_rep(
    pending: &PendingRequest,
    key: &PKeyRef<Private>,
    ca_cert_der: &[u8],
    der: &[u8],
) -> Result<CertRepOutcome, PkiError> {
    if der.len() > MAX_PKI_MESSAGE_BYTES {
        return Err(PkiError::Malformed("certrep is too large".into()));
    }
    let nids = scep_nids()?;
    let ca = X509::from_der(ca_cert_der)
        .map_err(|e| PkiError::Malformed(format!("ca certificate: {}", describe(&e))))?;
    let mut message = parse_signed_data(der, "certrep")?;
    let no_extra_certs = Stack::<X509>::new()?;
    let mut content = Vec::new();
    // Failure and pending replies carry no content: their signature covers the empty string (attached rather
    // than passed as a BIO, see `attach_content`).
    if !ffi::has_content(&message) {
        attach_content(&mut message, &[])?;
    }
    let store = openssl::x509::store::X509StoreBuilder::new()?.build();
    message
        .verify(
            &no_extra_certs,
            &store,
            None,
            Some(&mut content),
            Pkcs7Flags::NOVERIFY | Pkcs7Flags::BINARY,
        )
        .map_err(|e| PkiError::BadSignature(format!("certrep: {}", describe(&e))))?;
    let signer = single_signer(&message)?;
    check_signed_by_ca(&signer, &ca)?;

    let attributes = ffi::SignerAttributes::of_single_signer(&message)?;
    let message_type = attributes.required_string(nids.message_type, "messageType")?;
    if message_type != CERT_REP {
        return Err(PkiError::Malformed(format!(
            "expected a certrep, got message type {message_type:?}"
        )));
    }
    if attributes.required_string(nids.transaction_id, "transactionID")? != pending.transaction_id {
        return Err(PkiError::Malformed(
            "certrep answers another transaction".into(),
        ));
    }
    if attributes.required_octets(nids.recipient_nonce, "recipientNonce")? != pending.sender_nonce {
        return Err(PkiError::Malformed(
            "certrep recipientNonce does not match our senderNonce".into(),
        ));
    }
    let status = attributes.required_string(nids.pki_status, "pkiStatus")?;
    match status.as_str() {
        STATUS_SUCCESS => {
            let envelope = Pkcs7::from_der(&content)
                .map_err(|e| PkiError::Malformed(format!("certrep envelope: {}", describe(&e))))?;
            let degenerate = envelope
                .decrypt(
                    pending.signer.private_key(),
                    pending.signer.x509(),
                    Pkcs7Flags::BINARY,
                )
                .map_err(|e| PkiError::Malformed(format!("certrep envelope: {}", describe(&e))))?;
            let certs_only = Pkcs7::from_der(&degenerate).map_err(|e| {
                PkiError::Malformed(format!("certrep certificates: {}", describe(&e)))
            })?;
            let certs = certs_only
                .signed()
                .and_then(|signed| signed.certificates())
                .ok_or_else(|| PkiError::Malformed("certrep holds no certificate".into()))?;
            for cert in certs {
                let matches = cert
                    .public_key()
                    .map(|public| public.public_eq(key))
                    .unwrap_or(false);
                if matches {
                    return Ok(CertRepOutcome::Success(cert.to_der()?));
                }
            }
            drop(openssl::error::ErrorStack::get());
            Err(PkiError::Malformed(
                "certrep holds no certificate for our key".into(),
            ))
        }
        STATUS_FAILURE => {
            let code = attributes.required_string(nids.fail_info, "failInfo")?;
            FailInfo::from_code(&code)
                .map(CertRepOutcome::Failure)
                .ok_or_else(|| PkiError::Malformed(format!("unknown failInfo {code:?}")))
        }
        STATUS_PENDING => Ok(CertRepOutcome::Pending),
        other => Err(PkiError::Malformed(format!("unknown pkiStatus {other:?}"))),
    }
}

/// The CertRep signer must be the CA itself or a certificate (an RA) the CA signed.
fn check_signed_by_ca(signer: &X509Ref, ca: &X509Ref) -> Result<(), PkiError> {
    if signer.to_der()? == ca.to_der()? {
        return Ok(());
    }
    let ca_key = ca.public_key()?;
    let issuer_matches = signer.issuer_name().to_der()? == ca.subject_name().to_der()?;
    if issuer_matches && signer.verify(&ca_key).unwrap_or(false) {
        return Ok(());
    }
    drop(openssl::error::ErrorStack::get());
    Err(PkiError::UntrustedSigner(
        "certrep is not signed by the ca".into(),
    ))
}

/// A degenerate certs-only SignedData (no signers, no content) holding `certs`, as DER.
pub fn certs_only_der(certs: &[&X509Ref]) -> Result<Vec<u8>, PkiError> {
    let mut stack = Stack::<X509>::new()?;
    for cert in certs {
        stack.push((*cert).to_owned())?;
    }
    Ok(ffi::certs_only(&stack)?.to_der()?)
}

/// EnvelopedData of `content` for `recipient` (RSA key transport, identified by issuer and serial).
fn envelope_der(
    recipient: &X509Ref,
    content: &[u8],
    cipher: ContentCipher,
) -> Result<Vec<u8>, PkiError> {
    let mut recipients = Stack::<X509>::new()?;
    recipients.push(recipient.to_owned())?;
    let envelope = Pkcs7::encrypt(&recipients, content, cipher.cipher()?, Pkcs7Flags::BINARY)?;
    Ok(envelope.to_der()?)
}

fn fresh_nonce() -> Result<Vec<u8>, PkiError> {
    let mut nonce = vec![0u8; 16];
    openssl::rand::rand_bytes(&mut nonce)?;
    Ok(nonce)
}

/// NIDs of the SCEP attributes, registered with OpenSSL once per process (it does not know them).
struct ScepNids {
    message_type: i32,
    pki_status: i32,
    fail_info: i32,
    sender_nonce: i32,
    recipient_nonce: i32,
    transaction_id: i32,
}

fn scep_nids() -> Result<&'static ScepNids, PkiError> {
    static NIDS: OnceLock<Result<ScepNids, PkiError>> = OnceLock::new();
    NIDS.get_or_init(|| {
        Ok(ScepNids {
            message_type: ffi::nid_for_oid("2.16.840.1.113733.1.9.2", "scepMessageType")?,
            pki_status: ffi::nid_for_oid("2.16.840.1.113733.1.9.3", "scepPkiStatus")?,
            fail_info: ffi::nid_for_oid("2.16.840.1.113733.1.9.4", "scepFailInfo")?,
            sender_nonce: ffi::nid_for_oid("2.16.840.1.113733.1.9.5", "scepSenderNonce")?,
            recipient_nonce: ffi::nid_for_oid("2.16.840.1.113733.1.9.6", "scepRecipientNonce")?,
            transaction_id: ffi::nid_for_oid("2.16.840.1.113733.1.9.7", "scepTransactionID")?,
        })
    })
    .as_ref()
    .map_err(Clone::clone)
}

/// The handful of OpenSSL calls the safe `openssl` crate does not offer, each behind a safe function.
/// Ownership: everything allocated here is held by an `openssl`/`foreign_types` owner (`Pkcs7`, `Asn1String`,
/// …) or by [`MemBioSlice`], so early returns free it; pointers obtained from a borrowed object are only used
/// while that object is borrowed.
mod ffi {
    use std::ffi::{c_int, c_void, CString};
    use std::marker::PhantomData;
    use std::ptr;

    use foreign_types::{ForeignType, ForeignTypeRef};
    use openssl::asn1::{Asn1Object, Asn1OctetString, Asn1String, Asn1StringRef};
    use openssl::error::ErrorStack;
    use openssl::nid::Nid;
    use openssl::pkcs7::{Pkcs7, Pkcs7Ref, Pkcs7SignerInfo, Pkcs7SignerInfoRef};
    use openssl::pkey::{PKeyRef, Private};
    use openssl::stack::StackRef;
    use openssl::x509::{X509Ref, X509Req, X509};
    use openssl_sys as sys;

    use super::ContentCipher;
    use crate::signature::describe;
    use crate::PkiError;

    extern "C" {
        // Declared by OpenSSL's <openssl/pkcs7.h> (1.0.0+) but not by openssl-sys.
        fn PKCS7_sign_add_signer(
            p7: *mut sys::PKCS7,
            signcert: *mut sys::X509,
            pkey: *mut sys::EVP_PKEY,
            md: *const sys::EVP_MD,
            flags: c_int,
        ) -> *mut sys::PKCS7_SIGNER_INFO;
        fn PKCS7_final(p7: *mut sys::PKCS7, data: *mut sys::BIO, flags: c_int) -> c_int;
        // Declared by <openssl/x509.h> (1.0.2+) but not by openssl-sys.
        fn X509_REQ_get_signature_nid(req: *const sys::X509_REQ) -> c_int;
    }

    /// The signature algorithm of a CSR (sha256WithRSAEncryption, …).
    pub(super) fn csr_signature_nid(csr: &X509Req) -> Nid {
        // SAFETY: `csr` is a live, parsed request; the call only reads its signature AlgorithmIdentifier.
        Nid::from_raw(unsafe { X509_REQ_get_signature_nid(csr.as_ptr()) })
    }

    /// Turns OpenSSL's "0/NULL means failure" into an error carrying (and draining) its error queue.
    fn failed(what: &str) -> PkiError {
        PkiError::Crypto(format!("{what}: {}", describe(&ErrorStack::get())))
    }

    /// A read-only memory BIO over a borrowed slice, freed on drop.
    struct MemBioSlice<'a> {
        bio: *mut sys::BIO,
        _data: PhantomData<&'a [u8]>,
    }

    impl<'a> MemBioSlice<'a> {
        fn new(data: &'a [u8]) -> Result<Self, PkiError> {
            let len = c_int::try_from(data.len())
                .map_err(|_| PkiError::Malformed("content too large".into()))?;
            // SAFETY: BIO_new_mem_buf makes a read-only BIO that points at `data` without copying; the
            // PhantomData lifetime keeps `data` borrowed for as long as the BIO lives.
            let bio = unsafe { sys::BIO_new_mem_buf(data.as_ptr().cast::<c_void>(), len) };
            if bio.is_null() {
                return Err(failed("BIO_new_mem_buf"));
            }
            Ok(Self {
                bio,
                _data: PhantomData,
            })
        }
    }

    impl Drop for MemBioSlice<'_> {
        fn drop(&mut self) {
            // SAFETY: `bio` came from BIO_new_mem_buf, is non-null and is freed exactly once, here.
            unsafe { sys::BIO_free_all(self.bio) };
        }
    }

    /// The NID of an OID, registering it (with `short_name` as short and long name) if OpenSSL does not know it.
    pub(super) fn nid_for_oid(oid: &str, short_name: &str) -> Result<c_int, PkiError> {
        let known = Asn1Object::from_str(oid)
            .map_err(|e| PkiError::Crypto(format!("oid {oid}: {}", describe(&e))))?
            .nid();
        if known != Nid::UNDEF {
            return Ok(known.as_raw());
        }
        let oid_c = CString::new(oid).map_err(|_| PkiError::Crypto("oid contains nul".into()))?;
        let name_c =
            CString::new(short_name).map_err(|_| PkiError::Crypto("name contains nul".into()))?;
        // SAFETY: all three arguments are valid NUL-terminated strings that outlive the call; OBJ_create copies
        // them into OpenSSL's (internally locked) object table.
        let nid = unsafe { sys::OBJ_create(oid_c.as_ptr(), name_c.as_ptr(), name_c.as_ptr()) };
        if nid == sys::NID_undef {
            return Err(failed("OBJ_create"));
        }
        Ok(nid)
    }

    /// A signed attribute to add: a PrintableString or an OCTET STRING.
    pub(super) enum NewAttribute<'a> {
        Printable(c_int, &'a str),
        Octets(c_int, &'a [u8]),
    }

    impl<'a> NewAttribute<'a> {
        pub(super) fn printable(nid: c_int, value: &'a str) -> Self {
            NewAttribute::Printable(nid, value)
        }
        pub(super) fn octets(nid: c_int, value: &'a [u8]) -> Self {
            NewAttribute::Octets(nid, value)
        }
    }

    fn printable_string(value: &str) -> Result<Asn1String, PkiError> {
        let len = c_int::try_from(value.len())
            .map_err(|_| PkiError::Malformed("attribute too long".into()))?;
        // SAFETY: ASN1_STRING_type_new returns a new string (or NULL) which Asn1String then owns and frees.
        let string = unsafe {
            let raw = sys::ASN1_STRING_type_new(sys::V_ASN1_PRINTABLESTRING);
            if raw.is_null() {
                return Err(failed("ASN1_STRING_type_new"));
            }
            Asn1String::from_ptr(raw)
        };
        // SAFETY: `string` is a valid ASN1_STRING; ASN1_STRING_set copies `len` bytes from `value`.
        let ok =
            unsafe { sys::ASN1_STRING_set(string.as_ptr(), value.as_ptr().cast::<c_void>(), len) };
        if ok != 1 {
            return Err(failed("ASN1_STRING_set"));
        }
        Ok(string)
    }

    /// Adds one signed attribute. On success OpenSSL owns the value; on failure it stays ours and is freed.
    fn add_signed_attribute(
        signer_info: *mut sys::PKCS7_SIGNER_INFO,
        attribute: &NewAttribute<'_>,
    ) -> Result<(), PkiError> {
        match attribute {
            NewAttribute::Printable(nid, value) => {
                let string = printable_string(value)?;
                // SAFETY: `signer_info` belongs to a live PKCS7 of the caller; PKCS7_add_signed_attribute takes
                // ownership of `string` only when it returns 1 (X509_ATTRIBUTE_create fails before storing it).
                let ok = unsafe {
                    sys::PKCS7_add_signed_attribute(
                        signer_info,
                        *nid,
                        sys::V_ASN1_PRINTABLESTRING,
                        string.as_ptr().cast::<c_void>(),
                    )
                };
                if ok != 1 {
                    return Err(failed("PKCS7_add_signed_attribute"));
                }
                std::mem::forget(string);
            }
            NewAttribute::Octets(nid, value) => {
                let octets = Asn1OctetString::new_from_bytes(value)?;
                // SAFETY: as above; the ASN1_OCTET_STRING becomes OpenSSL's only when the call returns 1.
                let ok = unsafe {
                    sys::PKCS7_add_signed_attribute(
                        signer_info,
                        *nid,
                        sys::V_ASN1_OCTET_STRING,
                        octets.as_ptr().cast::<c_void>(),
                    )
                };
                if ok != 1 {
                    return Err(failed("PKCS7_add_signed_attribute"));
                }
                std::mem::forget(octets);
            }
        }
        Ok(())
    }

    /// A SignedData by `signer` (SHA-256, signer certificate embedded) with the standard contentType, signingTime
    /// and messageDigest attributes plus `attributes`. With `content` None the content is absent and the
    /// signature covers the empty string (SCEP failure/pending replies). DER.
    pub(super) fn sign_with_attributes(
        signer: &X509Ref,
        key: &PKeyRef<Private>,
        digest: openssl::hash::MessageDigest,
        content: Option<&[u8]>,
        attributes: &[NewAttribute<'_>],
    ) -> Result<Vec<u8>, PkiError> {
        let mut flags = sys::PKCS7_BINARY | sys::PKCS7_NOSMIMECAP | sys::PKCS7_PARTIAL;
        if content.is_none() {
            flags |= sys::PKCS7_DETACHED;
        }
        let data = MemBioSlice::new(content.unwrap_or(&[]))?;
        // SAFETY: with PKCS7_PARTIAL and no signer, PKCS7_sign only allocates an empty SignedData (content type
        // data, detached if asked); NULL signcert/pkey/certs/data are documented as allowed. Pkcs7 owns the result.
        let pkcs7 = unsafe {
            let raw = sys::PKCS7_sign(
                ptr::null_mut(),
                ptr::null_mut(),
                ptr::null_mut(),
                ptr::null_mut(),
                flags,
            );
            if raw.is_null() {
                return Err(failed("PKCS7_sign"));
            }
            Pkcs7::from_ptr(raw)
        };
        // SAFETY: `pkcs7`, `signer` and `key` are live; PKCS7_sign_add_signer takes its own references to the
        // certificate and key, and the returned signer info is owned by `pkcs7` (used only while it lives).
        let signer_info = unsafe {
            PKCS7_sign_add_signer(
                pkcs7.as_ptr(),
                signer.as_ptr(),
                key.as_ptr(),
                digest.as_ptr(),
                flags,
            )
        };
        if signer_info.is_null() {
            return Err(failed("PKCS7_sign_add_signer"));
        }
        for attribute in attributes {
            add_signed_attribute(signer_info, attribute)?;
        }
        // SAFETY: `data` is a live BIO; PKCS7_final reads it to the end, digests it, adds signingTime and
        // messageDigest, and signs. It does not keep the BIO.
        let ok = unsafe { PKCS7_final(pkcs7.as_ptr(), data.bio, flags) };
        if ok != 1 {
            return Err(failed("PKCS7_final"));
        }
        Ok(pkcs7.to_der()?)
    }

    /// A degenerate SignedData: no signers, no content, just `certs`.
    pub(super) fn certs_only(certs: &StackRef<X509>) -> Result<Pkcs7, PkiError> {
        let flags = sys::PKCS7_PARTIAL | sys::PKCS7_DETACHED | sys::PKCS7_BINARY;
        // SAFETY: PKCS7_sign with NULL signcert/pkey makes a certificates-only structure (documented); it takes
        // its own reference to every certificate of the borrowed stack. PARTIAL stops before any signing, and
        // DETACHED removes the (empty) content. Pkcs7 owns the result.
        unsafe {
            let raw = sys::PKCS7_sign(
                ptr::null_mut(),
                ptr::null_mut(),
                certs.as_ptr(),
                ptr::null_mut(),
                flags,
            );
            if raw.is_null() {
                return Err(failed("PKCS7_sign (certs only)"));
            }
            Ok(Pkcs7::from_ptr(raw))
        }
    }

    /// True when a SignedData carries its content (false for detached/absent content).
    pub(super) fn has_content(pkcs7: &Pkcs7Ref) -> bool {
        let Some(signed) = pkcs7.signed() else {
            return false;
        };
        // SAFETY: `signed` is the PKCS7_SIGNED of a live, parsed message; `contents` is either NULL or a parsed
        // inner ContentInfo whose `d.ptr` union member is NULL exactly when the content is absent.
        unsafe {
            let contents = (*signed.as_ptr()).contents;
            !contents.is_null() && !(*contents).d.ptr.is_null()
        }
    }

    /// The content-encryption cipher of an EnvelopedData; only AES-CBC and 3DES are accepted.
    pub(super) fn envelope_cipher(envelope: &Pkcs7Ref) -> Result<ContentCipher, PkiError> {
        let is_enveloped = envelope
            .type_()
            .map(|t| t.nid() == Nid::PKCS7_ENVELOPED)
            .unwrap_or(false);
        if !is_enveloped {
            return Err(PkiError::Malformed(
                "pki message content is not enveloped data".into(),
            ));
        }
        // SAFETY: the message was parsed as enveloped data (checked above), so `d.enveloped` is the active union
        // member; every pointer on the way is checked for NULL and only read while `envelope` is borrowed.
        let nid = unsafe {
            let enveloped = (*envelope.as_ptr()).d.enveloped;
            if enveloped.is_null() || (*enveloped).enc_data.is_null() {
                return Err(PkiError::Malformed("enveloped data without content".into()));
            }
            let algorithm = (*(*enveloped).enc_data).algorithm;
            if algorithm.is_null() {
                return Err(PkiError::Malformed(
                    "enveloped data without algorithm".into(),
                ));
            }
            let mut object: *const sys::ASN1_OBJECT = ptr::null();
            sys::X509_ALGOR_get0(&mut object, ptr::null_mut(), ptr::null_mut(), algorithm);
            if object.is_null() {
                return Err(PkiError::Malformed(
                    "enveloped data without algorithm".into(),
                ));
            }
            Nid::from_raw(sys::OBJ_obj2nid(object))
        };
        match nid {
            Nid::AES_128_CBC => Ok(ContentCipher::Aes128Cbc),
            // AES-192 is answered like any AES request (with AES-256).
            Nid::AES_192_CBC | Nid::AES_256_CBC => Ok(ContentCipher::Aes256Cbc),
            Nid::DES_EDE3_CBC => Ok(ContentCipher::Des3Cbc),
            Nid::DES_CBC => {
                // Decryption looks the cipher up by its OID: it must be available before decrypt.
                super::ensure_legacy_provider()?;
                Ok(ContentCipher::DesCbc)
            }
            other => Err(PkiError::Unsupported(format!(
                "content cipher {}",
                other.long_name().unwrap_or("unknown")
            ))),
        }
    }

    /// The signed attributes of the single signer of a SignedData.
    pub(super) struct SignerAttributes<'a> {
        signer_info: &'a Pkcs7SignerInfoRef,
    }

    impl<'a> SignerAttributes<'a> {
        pub(super) fn of_single_signer(pkcs7: &'a Pkcs7) -> Result<Self, PkiError> {
            // SAFETY: PKCS7_get_signer_info returns the signer-info stack owned by `pkcs7` (or NULL); the
            // StackRef borrows it for no longer than `pkcs7`.
            let infos: &'a StackRef<Pkcs7SignerInfo> = unsafe {
                let raw = sys::PKCS7_get_signer_info(pkcs7.as_ptr());
                if raw.is_null() {
                    return Err(PkiError::Malformed("no signer info".into()));
                }
                StackRef::from_ptr(raw)
            };
            let mut iter = infos.iter();
            match (iter.next(), iter.next()) {
                (Some(signer_info), None) => Ok(Self { signer_info }),
                _ => Err(PkiError::Malformed("expected exactly one signer".into())),
            }
        }

        /// The signer's digestAlgorithm (sha256, md5, …; UNDEF when OpenSSL does not know it).
        pub(super) fn digest_nid(&self) -> Nid {
            // SAFETY: `signer_info` is a parsed PKCS7_SIGNER_INFO borrowed for 'a; its `digest_alg` is set by the
            // parser (checked for NULL anyway) and X509_ALGOR_get0 only reads it.
            unsafe {
                let algorithm = (*self.signer_info.as_ptr()).digest_alg;
                if algorithm.is_null() {
                    return Nid::UNDEF;
                }
                let mut object: *const sys::ASN1_OBJECT = ptr::null();
                sys::X509_ALGOR_get0(&mut object, ptr::null_mut(), ptr::null_mut(), algorithm);
                if object.is_null() {
                    return Nid::UNDEF;
                }
                Nid::from_raw(sys::OBJ_obj2nid(object))
            }
        }

        /// The signingTime signed attribute (UTCTime or GeneralizedTime), if present and readable.
        pub(super) fn signing_time(&self) -> Option<orchard_types::UnixTime> {
            // SAFETY: the ASN1_TYPE (or NULL) is owned by the signer info borrowed for 'a; for the two time types
            // `value.asn1_string` is the active member and is an ASN1_TIME (an ASN1_STRING of that type).
            let time: &openssl::asn1::Asn1TimeRef = unsafe {
                let value = sys::PKCS7_get_signed_attribute(
                    self.signer_info.as_ptr(),
                    sys::NID_pkcs9_signingTime,
                );
                if value.is_null()
                    || !matches!(
                        (*value).type_,
                        sys::V_ASN1_UTCTIME | sys::V_ASN1_GENERALIZEDTIME
                    )
                {
                    return None;
                }
                let string = (*value).value.asn1_string;
                if string.is_null() {
                    return None;
                }
                openssl::asn1::Asn1TimeRef::from_ptr(string.cast())
            };
            crate::asn1_time_to_unix(time).ok()
        }

        /// The raw ASN1_STRING of attribute `nid` if its type is one of `accepted_types`.
        fn string_value(
            &self,
            nid: c_int,
            name: &str,
            accepted_types: &[c_int],
        ) -> Result<&'a Asn1StringRef, PkiError> {
            // SAFETY: the returned ASN1_TYPE (or NULL) is owned by the signer info borrowed for 'a. For the
            // string types we accept, `value.asn1_string` is the active union member and is non-NULL when set.
            unsafe {
                let value = sys::PKCS7_get_signed_attribute(self.signer_info.as_ptr(), nid);
                if value.is_null() {
                    return Err(PkiError::Malformed(format!("missing {name} attribute")));
                }
                if !accepted_types.contains(&(*value).type_) {
                    return Err(PkiError::Malformed(format!(
                        "{name} attribute has the wrong type"
                    )));
                }
                let string = (*value).value.asn1_string;
                if string.is_null() {
                    return Err(PkiError::Malformed(format!("{name} attribute is empty")));
                }
                Ok(Asn1StringRef::from_ptr(string))
            }
        }

        /// A PrintableString attribute (UTF8String tolerated) as text.
        pub(super) fn required_string(&self, nid: c_int, name: &str) -> Result<String, PkiError> {
            let value = self.string_value(
                nid,
                name,
                &[
                    sys::V_ASN1_PRINTABLESTRING,
                    sys::V_ASN1_UTF8STRING,
                    sys::V_ASN1_IA5STRING,
                ],
            )?;
            String::from_utf8(value.as_slice().to_vec())
                .map_err(|_| PkiError::Malformed(format!("{name} attribute is not text")))
        }

        /// An OCTET STRING attribute's bytes.
        pub(super) fn required_octets(&self, nid: c_int, name: &str) -> Result<Vec<u8>, PkiError> {
            Ok(self
                .string_value(nid, name, &[sys::V_ASN1_OCTET_STRING])?
                .as_slice()
                .to_vec())
        }
    }

    const DIRECTORY_STRING_TYPES: [c_int; 7] = [
        sys::V_ASN1_PRINTABLESTRING,
        sys::V_ASN1_UTF8STRING,
        sys::V_ASN1_IA5STRING,
        sys::V_ASN1_T61STRING,
        sys::V_ASN1_BMPSTRING,
        sys::V_ASN1_UNIVERSALSTRING,
        sys::V_ASN1_VISIBLESTRING,
    ];

    /// The challengePassword attribute of a CSR, if present.
    pub(super) fn csr_challenge_password(csr: &X509Req) -> Result<Option<String>, PkiError> {
        // SAFETY: `csr` is a live, parsed request; X509_REQ_get_attr and X509_ATTRIBUTE_get0_type return
        // pointers owned by it (or NULL), used only while `csr` is borrowed. For directory-string types
        // `value.asn1_string` is the active union member.
        let string: &Asn1StringRef = unsafe {
            let position =
                sys::X509_REQ_get_attr_by_NID(csr.as_ptr(), sys::NID_pkcs9_challengePassword, -1);
            if position < 0 {
                return Ok(None);
            }
            let attribute = sys::X509_REQ_get_attr(csr.as_ptr(), position);
            if attribute.is_null() {
                return Ok(None);
            }
            let value = sys::X509_ATTRIBUTE_get0_type(attribute, 0);
            if value.is_null() || !DIRECTORY_STRING_TYPES.contains(&(*value).type_) {
                return Err(PkiError::Malformed(
                    "challengePassword has the wrong type".into(),
                ));
            }
            let string = (*value).value.asn1_string;
            if string.is_null() {
                return Err(PkiError::Malformed("challengePassword is empty".into()));
            }
            Asn1StringRef::from_ptr(string)
        };
        let text = string.to_string().map_err(|e| {
            PkiError::Malformed(format!("challengePassword is not text: {}", describe(&e)))
        })?;
        Ok(Some(text))
    }

    /// Adds the challengePassword attribute (before signing; OpenSSL picks PrintableString when it can).
    pub(super) fn csr_add_challenge_password(
        csr: &X509Req,
        challenge: &str,
    ) -> Result<(), PkiError> {
        let len = c_int::try_from(challenge.len())
            .map_err(|_| PkiError::Malformed("challenge too long".into()))?;
        // SAFETY: `csr` is live and not shared; the function copies `len` bytes of `challenge`.
        let ok = unsafe {
            sys::X509_REQ_add1_attr_by_NID(
                csr.as_ptr(),
                sys::NID_pkcs9_challengePassword,
                sys::MBSTRING_UTF8,
                challenge.as_ptr(),
                len,
            )
        };
        if ok != 1 {
            return Err(failed("challengePassword"));
        }
        Ok(())
    }

    /// Signs a CSR built without the safe builder's `sign` (attributes must be added first).
    pub(super) fn csr_sign(
        csr: &X509Req,
        key: &PKeyRef<Private>,
        digest: openssl::hash::MessageDigest,
    ) -> Result<(), PkiError> {
        // SAFETY: `csr`, `key` and `digest` are live; X509_REQ_sign re-encodes and signs the request in place.
        let size = unsafe { sys::X509_REQ_sign(csr.as_ptr(), key.as_ptr(), digest.as_ptr()) };
        if size <= 0 {
            return Err(failed("X509_REQ_sign"));
        }
        Ok(())
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;
    use crate::generate_rsa_key;
    use openssl::x509::X509;

    const NOW: UnixTime = UnixTime(1_764_460_800);

    fn ca() -> CertificateAuthority {
        CertificateAuthority::generate("Orchard Test CA", NOW, 3650).unwrap()
    }

    /// Client → server → client, returning the issued certificate.
    fn round_trip(ca: &CertificateAuthority, cipher: ContentCipher) -> X509 {
        let key = generate_rsa_key().unwrap();
        let pending = build_pkcs_req_with_cipher(
            &ca.cert_der(),
            &key,
            "0000-DEVICE-UDID",
            Some("one-time-challenge"),
            NOW,
            cipher,
        )
        .unwrap();
        let req = decode_pki_message(ca, &pending.message_der).unwrap();
        assert_eq!(req.message_type, MessageType::PkcsReq);
        assert_eq!(req.transaction_id, pending.transaction_id);
        assert_eq!(req.sender_nonce, pending.sender_nonce);
        assert_eq!(req.signer_cert_der, pending.signer_cert_der());
        assert_eq!(
            req.challenge_password.as_ref().unwrap().expose(),
            "one-time-challenge"
        );
        assert_eq!(req.subject_common_name.as_deref(), Some("0000-DEVICE-UDID"));
        assert_eq!(req.content_cipher, cipher);

        let issued_der = issue_certificate(ca, &req, NOW, 365).unwrap();
        let rep = cert_rep_success(ca, &req, &issued_der).unwrap();
        assert_strict_der(&rep);
        match decode_cert_rep(&pending, &key, &ca.cert_der(), &rep).unwrap() {
            CertRepOutcome::Success(der) => {
                assert_eq!(der, issued_der);
                assert!(ca.is_issued_by_me(&der));
                let cert = X509::from_der(&der).unwrap();
                assert!(cert.public_key().unwrap().public_eq(&key));
                cert
            }
            other => panic!("expected success, got {other:?}"),
        }
    }

    /// OpenSSL re-encodes what it parsed; a strict DER message comes back byte for byte.
    fn assert_strict_der(der: &[u8]) {
        assert_eq!(Pkcs7::from_der(der).unwrap().to_der().unwrap(), der);
    }

    #[test]
    fn pkcs_req_round_trip_aes() {
        let ca = ca();
        let cert = round_trip(&ca, ContentCipher::Aes256Cbc);
        round_trip(&ca, ContentCipher::Aes128Cbc);

        // The issued certificate: subject, validity, serial, extensions.
        assert_eq!(
            common_name(cert.subject_name()).as_deref(),
            Some("0000-DEVICE-UDID")
        );
        assert_eq!(
            crate::asn1_time_to_unix(cert.not_before()).unwrap(),
            NOW.plus_seconds(-3600)
        );
        assert_eq!(
            crate::asn1_time_to_unix(cert.not_after()).unwrap(),
            NOW.plus_seconds(365 * 86_400)
        );
        assert_eq!(cert.serial_number().to_bn().unwrap().num_bits(), 128);
        assert!(cert.authority_key_id().is_some());
        let der = cert.to_der().unwrap();
        let parsed = x509_parser::parse_x509_certificate(&der).unwrap().1;
        let eku = parsed.extended_key_usage().unwrap().unwrap().value;
        assert!(eku.client_auth && !eku.server_auth);
        let key_usage = parsed.key_usage().unwrap().unwrap().value;
        assert!(
            key_usage.digital_signature()
                && key_usage.key_encipherment()
                && !key_usage.key_cert_sign()
        );
        assert!(!parsed.is_ca());
    }

    #[test]
    fn pkcs_req_round_trip_3des() {
        let ca = ca();
        round_trip(&ca, ContentCipher::Des3Cbc);
    }

    #[test]
    fn pkcs_req_with_single_des_is_answered_with_3des() {
        let ca = ca();
        let key = generate_rsa_key().unwrap();
        let pending = build_pkcs_req_with_cipher(
            &ca.cert_der(),
            &key,
            "device",
            Some("c"),
            NOW,
            ContentCipher::DesCbc,
        )
        .unwrap();
        let req = decode_pki_message(&ca, &pending.message_der).unwrap();
        assert_eq!(req.content_cipher, ContentCipher::DesCbc);
        let issued = issue_certificate(&ca, &req, NOW, 30).unwrap();
        let rep = cert_rep_success(&ca, &req, &issued).unwrap();
        // The reply's envelope is 3DES: decrypt it by hand to look.
        let outer = Pkcs7::from_der(&rep).unwrap();
        let mut envelope = Vec::new();
        let store = openssl::x509::store::X509StoreBuilder::new()
            .unwrap()
            .build();
        outer
            .verify(
                &Stack::new().unwrap(),
                &store,
                None,
                Some(&mut envelope),
                Pkcs7Flags::NOVERIFY,
            )
            .unwrap();
        let envelope = Pkcs7::from_der(&envelope).unwrap();
        assert_eq!(
            ffi::envelope_cipher(&envelope).unwrap(),
            ContentCipher::Des3Cbc
        );
        assert!(matches!(
            decode_cert_rep(&pending, &key, &ca.cert_der(), &rep).unwrap(),
            CertRepOutcome::Success(_)
        ));
    }

    #[test]
    fn client_messages_are_strict_der() {
        let ca = ca();
        let key = generate_rsa_key().unwrap();
        let pending = build_pkcs_req(&ca.cert_der(), &key, "device", None, NOW).unwrap();
        assert_strict_der(&pending.message_der);
        let req = decode_pki_message(&ca, &pending.message_der).unwrap();
        assert!(req.challenge_password.is_none());
        assert_eq!(req.content_cipher, ContentCipher::Aes256Cbc);
        let failure = cert_rep_failure(&ca, &req, FailInfo::BadRequest).unwrap();
        assert_strict_der(&failure);
        assert_strict_der(&certs_only_der(&[ca.identity().x509()]).unwrap());
    }

    #[test]
    fn renewal_req_signed_by_issued_identity() {
        let ca = ca();
        let first = round_trip(&ca, ContentCipher::Aes256Cbc);
        // round_trip does not hand back the key, so issue a current identity explicitly.
        let old_key = generate_rsa_key().unwrap();
        let pending = build_pkcs_req(&ca.cert_der(), &old_key, "device", Some("c"), NOW).unwrap();
        let req = decode_pki_message(&ca, &pending.message_der).unwrap();
        let issued = issue_certificate(&ca, &req, NOW, 30).unwrap();
        let current = Identity::from_parts(X509::from_der(&issued).unwrap(), old_key).unwrap();
        assert_ne!(first.to_der().unwrap(), current.cert_der());

        let new_key = generate_rsa_key().unwrap();
        let later = NOW.plus_seconds(20 * 86_400);
        let pending =
            build_renewal_req(&ca.cert_der(), &new_key, &current, "device", later).unwrap();
        let req = decode_pki_message(&ca, &pending.message_der).unwrap();
        assert_eq!(req.message_type, MessageType::RenewalReq);
        assert_eq!(req.signer_cert_der, current.cert_der());
        assert!(ca.is_issued_by_me(&req.signer_cert_der));
        assert!(req.challenge_password.is_none());
        let renewed = issue_certificate(&ca, &req, later, 365).unwrap();
        let rep = cert_rep_success(&ca, &req, &renewed).unwrap();
        match decode_cert_rep(&pending, &new_key, &ca.cert_der(), &rep).unwrap() {
            CertRepOutcome::Success(der) => {
                assert_eq!(der, renewed);
                let cert = X509::from_der(&der).unwrap();
                assert!(cert.public_key().unwrap().public_eq(&new_key));
            }
            other => panic!("expected success, got {other:?}"),
        }
    }

    #[test]
    fn failure_and_pending_cert_reps_decode() {
        let ca = ca();
        let key = generate_rsa_key().unwrap();
        let pending = build_pkcs_req(&ca.cert_der(), &key, "device", Some("wrong"), NOW).unwrap();
        let req = decode_pki_message(&ca, &pending.message_der).unwrap();
        let rep = cert_rep_failure(&ca, &req, FailInfo::BadRequest).unwrap();
        assert!(matches!(
            decode_cert_rep(&pending, &key, &ca.cert_der(), &rep).unwrap(),
            CertRepOutcome::Failure(FailInfo::BadRequest)
        ));
        let rep = cert_rep_pending(&ca, &req).unwrap();
        assert!(matches!(
            decode_cert_rep(&pending, &key, &ca.cert_der(), &rep).unwrap(),
            CertRepOutcome::Pending
        ));
    }

    #[test]
    fn request_encrypted_to_another_ca_fails() {
        let ca = ca();
        let other = CertificateAuthority::generate("Other CA", NOW, 3650).unwrap();
        let key = generate_rsa_key().unwrap();
        let pending = build_pkcs_req(&other.cert_der(), &key, "device", Some("c"), NOW).unwrap();
        let err = decode_pki_message(&ca, &pending.message_der).unwrap_err();
        assert!(matches!(err, PkiError::Malformed(_)), "{err:?}");
        // and the right CA still reads it
        assert!(decode_pki_message(&other, &pending.message_der).is_ok());
    }

    #[test]
    fn cert_rep_checks_signer_transaction_and_nonce() {
        let ca = ca();
        let other = CertificateAuthority::generate("Other CA", NOW, 3650).unwrap();
        let key = generate_rsa_key().unwrap();
        let pending = build_pkcs_req(&ca.cert_der(), &key, "device", Some("c"), NOW).unwrap();
        let req = decode_pki_message(&ca, &pending.message_der).unwrap();
        let issued = issue_certificate(&ca, &req, NOW, 30).unwrap();
        let rep = cert_rep_success(&ca, &req, &issued).unwrap();
        // signed by a CA the client does not trust
        let err = decode_cert_rep(&pending, &key, &other.cert_der(), &rep).unwrap_err();
        assert!(matches!(err, PkiError::UntrustedSigner(_)), "{err:?}");
        // an answer to another request (different nonce and transaction)
        let key2 = generate_rsa_key().unwrap();
        let pending2 = build_pkcs_req(&ca.cert_der(), &key2, "device", Some("c"), NOW).unwrap();
        assert!(decode_cert_rep(&pending2, &key2, &ca.cert_der(), &rep).is_err());
        // a request is not a CertRep
        assert!(decode_cert_rep(&pending, &key, &ca.cert_der(), &pending.message_der).is_err());
    }

    #[test]
    fn garbage_pki_messages_fail_without_panicking() {
        let ca = ca();
        let key = generate_rsa_key().unwrap();
        let pending = build_pkcs_req(&ca.cert_der(), &key, "device", Some("c"), NOW).unwrap();
        let valid = pending.message_der.clone();
        assert!(decode_pki_message(&ca, b"").is_err());
        assert!(decode_pki_message(&ca, b"garbage").is_err());
        assert!(decode_pki_message(&ca, &vec![0x30; MAX_PKI_MESSAGE_BYTES + 1]).is_err());
        assert!(
            decode_pki_message(&ca, &certs_only_der(&[ca.identity().x509()]).unwrap()).is_err()
        );
        for cut in [1, 2, 50, valid.len() / 2, valid.len() - 1] {
            assert!(decode_pki_message(&ca, &valid[..cut]).is_err());
        }
        for position in (0..valid.len()).step_by(3) {
            let mut flipped = valid.clone();
            flipped[position] ^= 0xa5;
            // Must not panic; unsigned bytes (versions, algorithm OIDs) may change without consequence.
            if let Ok(req) = decode_pki_message(&ca, &flipped) {
                assert_eq!(req.transaction_id, pending.transaction_id);
            }
        }
        assert!(decode_pki_message(&ca, &valid).is_ok());
    }

    /// What the server decides about a request built as `choices` say for `key`.
    fn refusal_of(
        ca: &CertificateAuthority,
        key: &PKeyRef<Private>,
        choices: &ClientChoices<'_>,
    ) -> Option<FailInfo> {
        let pending =
            build_pkcs_req_as(&ca.cert_der(), key, "device", Some("c"), NOW, choices).unwrap();
        match decode_pki_operation(ca, &pending.message_der).unwrap() {
            PkiOperation::Request(_) => None,
            PkiOperation::Refused { reply_to, fail, .. } => {
                assert_eq!(reply_to.transaction_id, pending.transaction_id);
                assert_eq!(reply_to.sender_nonce, pending.sender_nonce);
                // The refusal is a CertRep the client reads.
                let rep = cert_rep_refusal(ca, &reply_to, fail).unwrap();
                assert_eq!(
                    decode_cert_rep(&pending, pending.signer.private_key(), &ca.cert_der(), &rep)
                        .unwrap(),
                    CertRepOutcome::Failure(fail)
                );
                Some(fail)
            }
        }
    }

    #[test]
    fn weak_keys_and_wrong_types_are_refused_with_bad_alg() {
        let ca = ca();
        let good = generate_rsa_key().unwrap();
        let defaults = ClientChoices::default();
        let weak = PKey::from_rsa(openssl::rsa::Rsa::generate(1024).unwrap()).unwrap();
        assert_eq!(refusal_of(&ca, &weak, &defaults), Some(FailInfo::BadAlg));
        let ec = PKey::from_ec_key(
            openssl::ec::EcKey::generate(
                &openssl::ec::EcGroup::from_curve_name(Nid::X9_62_PRIME256V1).unwrap(),
            )
            .unwrap(),
        )
        .unwrap();
        // An EC request signed by an RSA throwaway key (the reply could be encrypted): still refused.
        let signed_by_rsa = ClientChoices {
            signer_key: Some(&good),
            ..defaults
        };
        assert_eq!(refusal_of(&ca, &ec, &signed_by_rsa), Some(FailInfo::BadAlg));
        // An RSA request signed by an EC key: the reply could not be encrypted to it.
        let signed_by_ec = ClientChoices {
            signer_key: Some(&ec),
            ..defaults
        };
        assert_eq!(
            refusal_of(&ca, &good, &signed_by_ec),
            Some(FailInfo::BadAlg)
        );
        assert_eq!(refusal_of(&ca, &good, &defaults), None);

        // issue_certificate never issues for another key, nor for a non-request.
        let pending = build_pkcs_req(&ca.cert_der(), &good, "device", Some("c"), NOW).unwrap();
        let req = decode_pki_message(&ca, &pending.message_der).unwrap();
        let mut poll = req.clone();
        poll.message_type = MessageType::CertPoll;
        assert!(issue_certificate(&ca, &poll, NOW, 30).is_err());
        let mut weak_req = req.clone();
        weak_req.csr_der = build_csr(&weak, "device", None, MessageDigest::sha256()).unwrap();
        assert!(matches!(
            issue_certificate(&ca, &weak_req, NOW, 30),
            Err(PkiError::Unsupported(_))
        ));
    }

    #[test]
    fn digests_and_ciphers_not_in_the_caps_are_refused_with_bad_alg() {
        let ca = ca();
        let key = generate_rsa_key().unwrap();
        let with = |digest: MessageDigest, cipher: Cipher| ClientChoices {
            cipher,
            digest,
            ..ClientChoices::default()
        };
        let aes = Cipher::aes_256_cbc();
        assert_eq!(
            refusal_of(&ca, &key, &with(MessageDigest::md5(), aes)),
            Some(FailInfo::BadAlg)
        );
        for digest in [
            MessageDigest::sha1(),
            MessageDigest::sha256(),
            MessageDigest::sha384(),
            MessageDigest::sha512(),
        ] {
            assert_eq!(refusal_of(&ca, &key, &with(digest, aes)), None);
        }
        load_legacy_ciphers().unwrap();
        assert_eq!(
            refusal_of(&ca, &key, &with(MessageDigest::sha256(), Cipher::bf_cbc())),
            Some(FailInfo::BadAlg)
        );
        assert_eq!(
            refusal_of(&ca, &key, &with(MessageDigest::sha256(), Cipher::rc2_cbc())),
            Some(FailInfo::BadAlg)
        );
    }

    #[test]
    fn a_pkcs_req_signed_with_a_throwaway_key_is_answered_to_that_key() {
        let ca = ca();
        let key = generate_rsa_key().unwrap();
        let throwaway = generate_rsa_key().unwrap();
        let choices = ClientChoices {
            signer_key: Some(&throwaway),
            ..ClientChoices::default()
        };
        let pending =
            build_pkcs_req_as(&ca.cert_der(), &key, "device", Some("c"), NOW, &choices).unwrap();
        let req = decode_pki_message(&ca, &pending.message_der).unwrap();
        let signer = X509::from_der(&req.signer_cert_der).unwrap();
        assert!(signer.public_key().unwrap().public_eq(&throwaway));
        let issued = issue_certificate(&ca, &req, NOW, 30).unwrap();
        let issued_cert = X509::from_der(&issued).unwrap();
        assert!(issued_cert.public_key().unwrap().public_eq(&key));
        let rep = cert_rep_success(&ca, &req, &issued).unwrap();
        // Only the signer's key decrypts the answer; decode_cert_rep looks for the certificate of `key`.
        assert_eq!(
            decode_cert_rep(&pending, &key, &ca.cert_der(), &rep).unwrap(),
            CertRepOutcome::Success(issued)
        );
    }

    #[test]
    fn a_tampered_signature_is_refused_with_bad_message_check() {
        let ca = ca();
        let key = generate_rsa_key().unwrap();
        let pending = build_pkcs_req(&ca.cert_der(), &key, "device", Some("c"), NOW).unwrap();
        // The signature value is the last bytes of the message (no unsigned attributes follow it).
        let mut tampered = pending.message_der.clone();
        let last = tampered.len() - 1;
        tampered[last] ^= 0x01;
        match decode_pki_operation(&ca, &tampered).unwrap() {
            PkiOperation::Refused { fail, reply_to, .. } => {
                assert_eq!(fail, FailInfo::BadMessageCheck);
                assert_eq!(reply_to.transaction_id, pending.transaction_id);
            }
            PkiOperation::Request(_) => panic!("a tampered message was accepted"),
        }
    }

    #[test]
    fn a_cert_poll_carries_the_transaction_and_the_signer() {
        let ca = ca();
        let key = generate_rsa_key().unwrap();
        let pending = build_pkcs_req(&ca.cert_der(), &key, "device", Some("c"), NOW).unwrap();
        let poll = build_cert_poll(&ca.cert_der(), &pending, "device").unwrap();
        let req = decode_pki_message(&ca, &poll.message_der).unwrap();
        assert_eq!(req.message_type, MessageType::CertPoll);
        assert_eq!(req.transaction_id, pending.transaction_id);
        assert_eq!(req.signer_cert_der, pending.signer_cert_der());
        assert!(req.signing_time.is_some());
        let rep = cert_rep_failure(&ca, &req, FailInfo::BadCertId).unwrap();
        assert_eq!(
            decode_cert_rep(&poll, &key, &ca.cert_der(), &rep).unwrap(),
            CertRepOutcome::Failure(FailInfo::BadCertId)
        );
    }

    use openssl::pkey::PKey;
}
