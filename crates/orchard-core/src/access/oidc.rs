//! University single sign-on: OpenID Connect authorization code flow with PKCE.
//!
//! [`Orchard::begin_oidc_login`] makes the state, nonce and PKCE verifier, keeps them in the database (so any
//! node can finish the login) and answers the provider URL to redirect to. [`Orchard::finish_oidc_login`]
//! takes the state once, exchanges the code, verifies the id token (signature, issuer, audience, expiry,
//! nonce, access-token hash), reads the claims from the id token and the userinfo endpoint, maps them to
//! memberships with the operators' role mappings, refuses a person who maps to no role, and otherwise
//! provisions the user and opens a session.
//!
//! The provider's metadata and keys are fetched at each step, so a key rotation at the provider needs nothing
//! from us; signing in is rare enough that the two extra requests do not matter.

use std::time::Duration;

use openidconnect::core::{
    CoreAuthDisplay, CoreAuthPrompt, CoreAuthenticationFlow, CoreErrorResponseType,
    CoreGenderClaim, CoreJsonWebKey, CoreJweContentEncryptionAlgorithm, CoreJwsSigningAlgorithm,
    CoreProviderMetadata, CoreRevocableToken, CoreRevocationErrorResponse,
    CoreTokenIntrospectionResponse, CoreTokenType,
};
use openidconnect::{
    AccessTokenHash, AdditionalClaims, AuthorizationCode, Client, ClientId, ClientSecret,
    CsrfToken, EmptyExtraTokenFields, EndpointMaybeSet, EndpointNotSet, EndpointSet, IdTokenFields,
    IssuerUrl, Nonce, OAuth2TokenResponse, PkceCodeChallenge, PkceCodeVerifier, RedirectUrl, Scope,
    StandardErrorResponse, StandardTokenResponse, TokenResponse,
};
use orchard_store::{Membership, PendingLoginRecord, UserLogin, UserRecord};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::access::users::{memberships_from_claims, NewSession};
use crate::reporting::audit::{AuditActor, AuditEvent, AuditOutcome};
use crate::{random_secret, secret_hash, CoreError, Orchard};

/// How long a sign-in may take between the redirect to the provider and its answer.
pub const DEFAULT_LOGIN_TTL_SECONDS: i64 = 600;
/// How long a browser session lasts.
pub const DEFAULT_SESSION_TTL_SECONDS: i64 = 8 * 3600;
/// How long one request to the provider may take.
const PROVIDER_TIMEOUT: Duration = Duration::from_secs(15);
/// Context bound to the sealed PKCE verifier, so a sealed value from another table does not open here.
const VERIFIER_SEAL_CONTEXT: &[u8] = b"oidc_logins.pkce_verifier";

/// How Orchard talks to the university's OpenID provider.
#[derive(Debug, Clone)]
pub struct OidcSettings {
    /// The issuer exactly as the provider names itself (no trailing slash unless the provider has one).
    pub issuer_url: String,
    pub client_id: String,
    /// None for a public client (PKCE alone); a confidential client's secret otherwise.
    pub client_secret: Option<String>,
    /// Where the provider sends the browser back; default `{public_url}/auth/callback`.
    pub redirect_url: Option<String>,
    /// Scopes asked for besides `openid`.
    pub scopes: Vec<String>,
    pub login_ttl_seconds: i64,
    pub session_ttl_seconds: i64,
    http: openidconnect::reqwest::Client,
}

impl OidcSettings {
    /// Settings with the default scopes (`email profile`) and lifetimes. The URLs are checked here, so a typo
    /// stops the server at start-up rather than at the first sign-in.
    pub fn new(
        issuer_url: &str,
        client_id: &str,
        client_secret: Option<&str>,
        redirect_url: Option<&str>,
    ) -> Result<Self, CoreError> {
        IssuerUrl::new(issuer_url.to_string())
            .map_err(|e| CoreError::Invalid(format!("OIDC issuer URL {issuer_url:?}: {e}")))?;
        if let Some(r) = redirect_url {
            RedirectUrl::new(r.to_string())
                .map_err(|e| CoreError::Invalid(format!("OIDC redirect URL {r:?}: {e}")))?;
        }
        if client_id.trim().is_empty() {
            return Err(CoreError::Invalid(
                "OIDC client id must not be empty".into(),
            ));
        }
        // The provider's answers are never followed to another place (a redirect there would be an attack or a
        // misconfiguration, and the library requires it off).
        let http = openidconnect::reqwest::ClientBuilder::new()
            .redirect(openidconnect::reqwest::redirect::Policy::none())
            .timeout(PROVIDER_TIMEOUT)
            .build()
            .map_err(|e| CoreError::Internal(format!("building the OIDC HTTP client: {e}")))?;
        Ok(OidcSettings {
            issuer_url: issuer_url.to_string(),
            client_id: client_id.to_string(),
            client_secret: client_secret.filter(|s| !s.is_empty()).map(str::to_string),
            redirect_url: redirect_url.map(str::to_string),
            scopes: vec!["email".into(), "profile".into()],
            login_ttl_seconds: DEFAULT_LOGIN_TTL_SECONDS,
            session_ttl_seconds: DEFAULT_SESSION_TTL_SECONDS,
            http,
        })
    }
}

/// The sign-in state the core holds: nothing until settings are given.
#[derive(Debug, Default)]
pub(crate) struct OidcState {
    settings: Option<OidcSettings>,
    /// The operator's session lifetime (`--session-ttl-seconds`), for single sign-on and break-glass alike.
    session_ttl: Option<i64>,
}

impl OidcState {
    pub(crate) fn session_ttl_seconds(&self) -> i64 {
        self.session_ttl.unwrap_or_else(|| {
            self.settings
                .as_ref()
                .map_or(DEFAULT_SESSION_TTL_SECONDS, |s| s.session_ttl_seconds)
        })
    }
}

/// Every claim the provider sent besides the standard ones we parse, kept as JSON for the role mappings.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct RawClaims {
    #[serde(flatten)]
    pub claims: Map<String, Value>,
}

impl AdditionalClaims for RawClaims {}

type IdFields = IdTokenFields<
    RawClaims,
    EmptyExtraTokenFields,
    CoreGenderClaim,
    CoreJweContentEncryptionAlgorithm,
    CoreJwsSigningAlgorithm,
>;
type OidcTokenResponse = StandardTokenResponse<IdFields, CoreTokenType>;
type OidcClient = Client<
    RawClaims,
    CoreAuthDisplay,
    CoreGenderClaim,
    CoreJweContentEncryptionAlgorithm,
    CoreJsonWebKey,
    CoreAuthPrompt,
    StandardErrorResponse<CoreErrorResponseType>,
    OidcTokenResponse,
    CoreTokenIntrospectionResponse,
    CoreRevocableToken,
    CoreRevocationErrorResponse,
    EndpointSet,
    EndpointNotSet,
    EndpointNotSet,
    EndpointNotSet,
    EndpointMaybeSet,
    EndpointMaybeSet,
>;

/// Where to send the browser to sign in, and the state to remember in a short-lived cookie (binding the
/// answer to the browser that started the sign-in).
#[derive(Debug, Clone)]
pub struct OidcRedirect {
    pub authorize_url: String,
    pub state: String,
    pub expires_in_seconds: i64,
}

/// What the provider sent back to the callback, and the state cookie of the browser.
#[derive(Debug, Clone, Default)]
pub struct OidcCallback {
    pub code: String,
    pub state: String,
    pub state_cookie: Option<String>,
    /// The `iss` parameter of the answer (RFC 9207), when the provider sends one.
    pub issuer: Option<String>,
    pub request_id: Option<String>,
}

/// A completed sign-in.
#[derive(Debug, Clone)]
pub struct OidcSignIn {
    pub user: UserRecord,
    pub memberships: Vec<Membership>,
    pub session: NewSession,
}

/// The provider failed or answered something we cannot accept.
fn provider_error(what: &str, e: impl std::fmt::Display) -> CoreError {
    tracing::warn!(error = %e, "OIDC {what} failed");
    CoreError::Internal(format!("the identity provider: {what} failed"))
}

impl Orchard {
    /// Turns single sign-on on (`None` leaves it off: `/auth/login` answers 404).
    pub fn with_oidc_settings(mut self, settings: Option<OidcSettings>) -> Self {
        self.oidc.settings = settings;
        self
    }

    /// How long a browser session lasts (single sign-on and break-glass; default 8 hours): the web UI signs a
    /// person out after this, whatever they do.
    pub fn with_session_ttl_seconds(mut self, seconds: i64) -> Self {
        self.oidc.session_ttl = Some(seconds.max(1));
        self
    }

    /// Whether single sign-on is configured.
    pub fn oidc_enabled(&self) -> bool {
        self.oidc.settings.is_some()
    }

    fn oidc_settings(&self) -> Result<&OidcSettings, CoreError> {
        self.oidc
            .settings
            .as_ref()
            .ok_or_else(|| CoreError::NotFound)
    }

    fn oidc_redirect_url(&self, settings: &OidcSettings) -> String {
        settings
            .redirect_url
            .clone()
            .unwrap_or_else(|| format!("{}/auth/callback", self.config.public_url))
    }

    async fn oidc_client(&self, settings: &OidcSettings) -> Result<OidcClient, CoreError> {
        let issuer = IssuerUrl::new(settings.issuer_url.clone())
            .map_err(|e| CoreError::Invalid(format!("OIDC issuer URL: {e}")))?;
        let metadata = CoreProviderMetadata::discover_async(issuer, &settings.http)
            .await
            .map_err(|e| provider_error("discovery", e))?;
        let redirect = RedirectUrl::new(self.oidc_redirect_url(settings))
            .map_err(|e| CoreError::Invalid(format!("OIDC redirect URL: {e}")))?;
        Ok(OidcClient::from_provider_metadata(
            metadata,
            ClientId::new(settings.client_id.clone()),
            settings.client_secret.clone().map(ClientSecret::new),
        )
        .set_redirect_uri(redirect))
    }

    /// Starts a sign-in: `NotFound` when single sign-on is not configured.
    pub async fn begin_oidc_login(&self) -> Result<OidcRedirect, CoreError> {
        let settings = self.oidc_settings()?;
        let client = self.oidc_client(settings).await?;
        let (challenge, verifier) = PkceCodeChallenge::new_random_sha256();
        let mut request = client
            .authorize_url(
                CoreAuthenticationFlow::AuthorizationCode,
                || CsrfToken::new(random_secret(32)),
                || Nonce::new(random_secret(32)),
            )
            .set_pkce_challenge(challenge);
        for scope in &settings.scopes {
            request = request.add_scope(Scope::new(scope.clone()));
        }
        let (url, state, nonce) = request.url();
        let now = self.clock.now();
        let sealed = self
            .pki
            .data_key
            .seal(verifier.secret().as_bytes(), VERIFIER_SEAL_CONTEXT)?;
        self.store
            .insert_pending_login(
                &PendingLoginRecord {
                    state_hash: secret_hash(state.secret()),
                    pkce_verifier_sealed: sealed,
                    nonce: nonce.secret().clone(),
                    created_at: now,
                    expires_at: now.plus_seconds(settings.login_ttl_seconds),
                },
                now,
            )
            .await?;
        Ok(OidcRedirect {
            authorize_url: url.to_string(),
            state: state.secret().clone(),
            expires_in_seconds: settings.login_ttl_seconds,
        })
    }

    /// Finishes a sign-in. `Invalid` for an unknown, expired, reused or foreign state; `Forbidden` for a person
    /// whose claims map to no role (no session is made, and memberships from earlier sign-ins are removed) or
    /// who is disabled; `Internal` when the provider fails or its tokens do not verify.
    pub async fn finish_oidc_login(&self, answer: OidcCallback) -> Result<OidcSignIn, CoreError> {
        let result = self.finish_oidc_login_inner(&answer).await;
        let (outcome, actor, details) = match &result {
            Ok(s) => (
                AuditOutcome::Ok,
                AuditActor {
                    id: format!("user:{}", s.user.id),
                    name: s.user.email.clone().or_else(|| s.user.display_name.clone()),
                    role: s.memberships.first().map(|m| m.role),
                    tenant_id: s.memberships.first().and_then(|m| m.tenant_id),
                },
                serde_json::json!({"memberships": s.memberships.len()}),
            ),
            Err(e @ CoreError::Forbidden(_)) => (
                AuditOutcome::Denied,
                AuditActor::anonymous(),
                serde_json::json!({"reason": e.to_string()}),
            ),
            Err(e) => (
                AuditOutcome::Error,
                AuditActor::anonymous(),
                serde_json::json!({"reason": e.to_string()}),
            ),
        };
        let event = AuditEvent {
            actor,
            tenant_id: None,
            action: "auth.login".into(),
            target: None,
            request_id: answer.request_id.clone(),
            outcome,
            http_status: None,
            details,
        };
        if let Err(e) = self.append_audit(event).await {
            tracing::error!(error = %e, "could not record a sign-in in the audit log");
        }
        result
    }

    async fn finish_oidc_login_inner(
        &self,
        answer: &OidcCallback,
    ) -> Result<OidcSignIn, CoreError> {
        let settings = self.oidc_settings()?;
        if answer.state.is_empty() || answer.code.is_empty() || answer.state.len() > 512 {
            return Err(CoreError::Invalid(
                "the sign-in answer lacks its code or state".into(),
            ));
        }
        // The state must come back to the browser that started the sign-in: another browser's answer would
        // sign this one in as someone else.
        if answer.state_cookie.as_deref() != Some(answer.state.as_str()) {
            return Err(CoreError::Invalid(
                "this sign-in was not started in this browser (or took too long); start again"
                    .into(),
            ));
        }
        // A provider that names itself in the answer must be ours: another provider's code would be
        // exchanged with ours otherwise (mix-up attack).
        if answer
            .issuer
            .as_ref()
            .is_some_and(|iss| *iss != settings.issuer_url)
        {
            return Err(CoreError::Invalid(
                "the sign-in answer comes from another identity provider".into(),
            ));
        }
        let now = self.clock.now();
        let pending = self
            .store
            .take_pending_login(&secret_hash(&answer.state), now)
            .await?
            .ok_or_else(|| {
                CoreError::Invalid("the sign-in expired or was already used; start again".into())
            })?;
        let verifier = self
            .pki
            .data_key
            .open(&pending.pkce_verifier_sealed, VERIFIER_SEAL_CONTEXT)?;
        let verifier = String::from_utf8(verifier.expose().clone())
            .map_err(|_| CoreError::Internal("stored PKCE verifier is not text".into()))?;

        let client = self.oidc_client(settings).await?;
        let tokens = client
            .exchange_code(AuthorizationCode::new(answer.code.clone()))
            .map_err(|e| provider_error("token endpoint lookup", e))?
            .set_pkce_verifier(PkceCodeVerifier::new(verifier))
            .request_async(&settings.http)
            .await
            .map_err(|e| provider_error("code exchange", e))?;
        let id_token = tokens
            .id_token()
            .ok_or_else(|| provider_error("token response", "no id_token"))?;
        let verifier = client.id_token_verifier();
        let claims = id_token
            .claims(&verifier, &Nonce::new(pending.nonce.clone()))
            .map_err(|e| provider_error("id token verification", e))?;
        if let Some(expected) = claims.access_token_hash() {
            let alg = id_token
                .signing_alg()
                .map_err(|e| provider_error("id token algorithm", e))?;
            let key = id_token
                .signing_key(&verifier)
                .map_err(|e| provider_error("id token key", e))?;
            let actual = AccessTokenHash::from_token(tokens.access_token(), alg, key)
                .map_err(|e| provider_error("access token hash", e))?;
            if actual != *expected {
                return Err(provider_error("access token hash", "mismatch"));
            }
        }

        let subject = claims.subject().clone();
        let mut all_claims = claims.additional_claims().claims.clone();
        let mut email = claims.email().map(|e| e.as_str().to_string());
        let mut name = claims
            .name()
            .and_then(|n| n.get(None))
            .map(|n| n.as_str().to_string());
        // Providers often put only `sub` in the id token and the rest behind userinfo (oidc-provider does).
        match client.user_info(tokens.access_token().clone(), Some(subject.clone())) {
            Ok(request) => {
                let info: openidconnect::UserInfoClaims<RawClaims, CoreGenderClaim> = request
                    .request_async(&settings.http)
                    .await
                    .map_err(|e| provider_error("userinfo", e))?;
                for (k, v) in &info.additional_claims().claims {
                    all_claims.insert(k.clone(), v.clone());
                }
                if let Some(e) = info.email() {
                    email = Some(e.as_str().to_string());
                }
                if let Some(n) = info.name().and_then(|n| n.get(None)) {
                    name = Some(n.as_str().to_string());
                }
            }
            // No userinfo endpoint: the id token is all there is.
            Err(e) => tracing::debug!(error = %e, "provider has no userinfo endpoint"),
        }
        all_claims.insert("sub".into(), Value::String(subject.as_str().to_string()));
        if let Some(e) = &email {
            all_claims.insert("email".into(), Value::String(e.clone()));
        }

        let issuer = settings.issuer_url.clone();
        let mappings = self.store.list_role_mappings().await?;
        let memberships = memberships_from_claims(&mappings, &all_claims);
        if memberships.is_empty() {
            self.store
                .clear_memberships_of_subject(&issuer, subject.as_str())
                .await?;
            tracing::info!(subject = %subject.as_str(), "sign-in refused: no role mapping matches");
            return Err(CoreError::Forbidden(format!(
                "your university account ({}) has no role in Orchard. Ask central IT to grant your group access.",
                email.as_deref().unwrap_or(subject.as_str())
            )));
        }
        if let Some(existing) = self
            .store
            .user_by_subject(&issuer, subject.as_str())
            .await?
        {
            if existing.disabled_at.is_some() {
                return Err(CoreError::Forbidden(
                    "your Orchard account is disabled; ask central IT".into(),
                ));
            }
        }
        let user = self
            .store
            .record_user_login(
                &UserLogin {
                    new_id: uuid::Uuid::now_v7().hyphenated().to_string(),
                    issuer,
                    subject: subject.as_str().to_string(),
                    email: email.map(|e| bounded(&e)),
                    display_name: name.map(|n| bounded(&n)),
                },
                &memberships,
                now,
            )
            .await?;
        let session = self.create_session(&user.id).await?;
        tracing::info!(user = %user.id, memberships = memberships.len(), "signed in");
        Ok(OidcSignIn {
            user,
            memberships,
            session,
        })
    }
}

/// Names and addresses from the provider are kept to a sane length.
fn bounded(s: &str) -> String {
    s.chars().take(320).collect()
}
