//! The catalogue of iOS/iPadOS releases per model: parsed from Apple's public software-update feed
//! (`https://gdmf.apple.com/v2/pmv`: `PublicAssetSets.iOS[]` with `ProductVersion`, `Build`, `PostingDate`
//! and `SupportedDevices`) or from Orchard's own list of entries, replaced as a whole by operators
//! (`PUT /os-catalogue`) or by a refresh from the feed (`POST /os-catalogue/refresh`).

use std::collections::BTreeMap;
use std::time::Duration;

use orchard_store::{OsCatalogueEntry, OsCatalogueMeta};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::version_key;
use crate::access::capability::OperatorCtx;
use crate::{CoreError, Orchard};

/// The most entries a catalogue may hold (Apple's feed has a few thousand model × release pairs).
pub const MAX_CATALOGUE_ENTRIES: usize = 100_000;
/// The largest feed document read (Apple's is ~1 MB).
pub const MAX_FEED_BYTES: usize = 16 << 20;

/// Where the catalogue is refreshed from.
#[derive(Debug, Clone)]
pub struct OsCatalogueSettings {
    /// Apple's feed, or a local server of the same shape in tests.
    pub feed_url: String,
    /// Trust anchors (DER) for the feed instead of the public roots; Apple's feed is served under Apple's
    /// own root, which operators add here when their platform's roots lack it.
    pub root_certificates_der: Vec<Vec<u8>>,
    pub timeout: Duration,
}

impl Default for OsCatalogueSettings {
    fn default() -> Self {
        OsCatalogueSettings {
            feed_url: "https://gdmf.apple.com/v2/pmv".to_owned(),
            root_certificates_der: Vec::new(),
            timeout: Duration::from_secs(30),
        }
    }
}

/// One entry as the API shows and takes it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct CatalogueEntry {
    /// Apple's product type, e.g. `iPad13,18`.
    pub product_type: String,
    /// e.g. `18.2`.
    pub os_version: String,
    /// e.g. `22C152`.
    pub build: String,
    /// Apple's posting date (yyyy-mm-dd), when known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub posted: Option<String>,
}

/// The catalogue as the API shows it: where it came from and the newest release of each model.
#[derive(Debug, Clone, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct CatalogueView {
    /// Grows with every replacement; null while none was ever set.
    pub revision: Option<i64>,
    /// `api`, `file` or the feed's URL.
    pub source: Option<String>,
    pub updated_at: Option<String>,
    pub updated_by: Option<String>,
    /// How many (model, release) entries.
    pub entries: usize,
    /// The newest release of each model.
    pub latest: Vec<CatalogueEntry>,
}

/// Reads a catalogue document: Apple's feed shape (`PublicAssetSets`/`AssetSets` → `iOS`) or
/// `{"entries": [...]}`. Entries with an unreadable model, version or build are named in the error.
pub fn parse_catalogue(doc: &Value) -> Result<Vec<OsCatalogueEntry>, CoreError> {
    let mut out: BTreeMap<(String, String), OsCatalogueEntry> = BTreeMap::new();
    if let Some(entries) = doc.get("entries") {
        let entries: Vec<CatalogueEntry> = serde_json::from_value(entries.clone())
            .map_err(|e| CoreError::Invalid(format!("entries: {e}")))?;
        for (i, e) in entries.into_iter().enumerate() {
            check_entry(&e.product_type, &e.os_version, &e.build)
                .map_err(|why| CoreError::Invalid(format!("entries[{i}]: {why}")))?;
            out.insert(
                (e.product_type.clone(), e.os_version.clone()),
                OsCatalogueEntry {
                    product_type: e.product_type,
                    os_version: e.os_version,
                    build: e.build,
                    posted: e.posted,
                },
            );
        }
    } else {
        let mut seen_sets = false;
        for sets in ["PublicAssetSets", "AssetSets"] {
            let Some(ios) = doc.get(sets).and_then(|s| s.get("iOS")) else {
                continue;
            };
            seen_sets = true;
            let releases = ios
                .as_array()
                .ok_or_else(|| CoreError::Invalid(format!("{sets}.iOS is not an array")))?;
            for (i, release) in releases.iter().enumerate() {
                let field = |key: &str| release.get(key).and_then(Value::as_str);
                let (Some(version), Some(build)) = (field("ProductVersion"), field("Build")) else {
                    return Err(CoreError::Invalid(format!(
                        "{sets}.iOS[{i}]: ProductVersion and Build are required strings"
                    )));
                };
                let devices = release
                    .get("SupportedDevices")
                    .and_then(Value::as_array)
                    .cloned()
                    .unwrap_or_default();
                for device in devices.iter().filter_map(Value::as_str) {
                    // The feed lists board ids (J307AP) next to product types; only product types name models.
                    if !is_product_type(device) {
                        continue;
                    }
                    check_entry(device, version, build)
                        .map_err(|why| CoreError::Invalid(format!("{sets}.iOS[{i}]: {why}")))?;
                    out.entry((device.to_owned(), version.to_owned()))
                        .or_insert_with(|| OsCatalogueEntry {
                            product_type: device.to_owned(),
                            os_version: version.to_owned(),
                            build: build.to_owned(),
                            posted: field("PostingDate").map(str::to_owned),
                        });
                }
            }
        }
        if !seen_sets {
            return Err(CoreError::Invalid(
                "expected Apple's feed (PublicAssetSets.iOS) or {\"entries\": [...]}".into(),
            ));
        }
    }
    if out.len() > MAX_CATALOGUE_ENTRIES {
        return Err(CoreError::Invalid(format!(
            "more than {MAX_CATALOGUE_ENTRIES} entries"
        )));
    }
    Ok(out.into_values().collect())
}

/// `iPad13,18`, `iPhone15,2`: letters, then two numbers separated by a comma.
fn is_product_type(s: &str) -> bool {
    let Some((head, minor)) = s.split_once(',') else {
        return false;
    };
    let digits_at = head.find(|c: char| c.is_ascii_digit()).unwrap_or(0);
    let (name, major) = head.split_at(digits_at);
    !name.is_empty()
        && name.chars().all(|c| c.is_ascii_alphabetic())
        && !major.is_empty()
        && major.chars().all(|c| c.is_ascii_digit())
        && !minor.is_empty()
        && minor.chars().all(|c| c.is_ascii_digit())
        && s.len() <= 32
}

pub(crate) fn is_version(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 16
        && s.split('.')
            .all(|p| !p.is_empty() && p.chars().all(|c| c.is_ascii_digit()))
}

pub(crate) fn is_build(s: &str) -> bool {
    !s.is_empty() && s.len() <= 32 && s.chars().all(|c| c.is_ascii_alphanumeric())
}

fn check_entry(product_type: &str, version: &str, build: &str) -> Result<(), String> {
    if !is_product_type(product_type) {
        return Err(format!(
            "product_type {product_type:?} is not like iPad13,18"
        ));
    }
    if !is_version(version) {
        return Err(format!("os_version {version:?} is not like 18.2"));
    }
    if !is_build(build) {
        return Err(format!("build {build:?} is not like 22C152"));
    }
    Ok(())
}

/// The newest release of each model.
pub(crate) fn latest_per_model(entries: &[OsCatalogueEntry]) -> Vec<&OsCatalogueEntry> {
    let mut latest: BTreeMap<&str, &OsCatalogueEntry> = BTreeMap::new();
    for e in entries {
        let newer = latest
            .get(e.product_type.as_str())
            .is_none_or(|cur| version_key(&e.os_version) > version_key(&cur.os_version));
        if newer {
            latest.insert(&e.product_type, e);
        }
    }
    latest.into_values().collect()
}

fn view(meta: Option<OsCatalogueMeta>, entries: &[OsCatalogueEntry]) -> CatalogueView {
    CatalogueView {
        revision: meta.as_ref().map(|m| m.revision),
        source: meta.as_ref().map(|m| m.source.clone()),
        updated_at: meta.as_ref().map(|m| m.updated_at.to_rfc3339()),
        updated_by: meta.and_then(|m| m.updated_by),
        entries: entries.len(),
        latest: latest_per_model(entries)
            .into_iter()
            .map(|e| CatalogueEntry {
                product_type: e.product_type.clone(),
                os_version: e.os_version.clone(),
                build: e.build.clone(),
                posted: e.posted.clone(),
            })
            .collect(),
    }
}

impl Orchard {
    /// Where the catalogue is refreshed from (default: Apple's public feed).
    pub fn with_os_catalogue_settings(mut self, settings: OsCatalogueSettings) -> Self {
        self.os_catalogue = settings;
        self
    }

    /// `GET /os-catalogue` (operators).
    pub async fn os_catalogue(&self, _operator: &OperatorCtx) -> Result<CatalogueView, CoreError> {
        let meta = self.store.os_catalogue_meta().await?;
        let entries = self.store.os_catalogue().await?;
        Ok(view(meta, &entries))
    }

    /// `PUT /os-catalogue` (operators): replaces the catalogue with a document of Apple's feed shape or a list
    /// of entries (`source` says which: `api` or `file` for the CLI's upload), then re-evaluates every tenant
    /// whose policy follows the latest release.
    pub async fn replace_os_catalogue(
        &self,
        operator: &OperatorCtx,
        doc: &Value,
        source: &str,
    ) -> Result<CatalogueView, CoreError> {
        let entries = parse_catalogue(doc)?;
        self.store_catalogue(operator, &entries, source).await
    }

    /// `POST /os-catalogue/refresh` (operators): fetches the configured feed and replaces the catalogue.
    pub async fn refresh_os_catalogue(
        &self,
        operator: &OperatorCtx,
    ) -> Result<CatalogueView, CoreError> {
        let doc = self.fetch_feed().await?;
        let entries = parse_catalogue(&doc)?;
        let url = self.os_catalogue.feed_url.clone();
        self.store_catalogue(operator, &entries, &url).await
    }

    async fn store_catalogue(
        &self,
        operator: &OperatorCtx,
        entries: &[OsCatalogueEntry],
        source: &str,
    ) -> Result<CatalogueView, CoreError> {
        let who = operator.principal();
        let meta = self
            .store
            .replace_os_catalogue(entries, source, Some(&who.actor()), self.clock.now())
            .await?;
        tracing::info!(revision = meta.revision, entries = entries.len(), source, actor = %who.actor(), "os catalogue replaced");
        for policy in self.store.all_os_policies(operator.scope()).await? {
            self.apply_os_policy(operator.scope(), &policy, self.clock.now())
                .await?;
        }
        Ok(view(Some(meta), entries))
    }

    async fn fetch_feed(&self) -> Result<Value, CoreError> {
        let settings = &self.os_catalogue;
        let loopback_http = ["http://127.0.0.1:", "http://localhost:", "http://[::1]:"]
            .iter()
            .any(|p| settings.feed_url.starts_with(p));
        if !settings.feed_url.starts_with("https://") && !loopback_http {
            return Err(CoreError::Conflict(
                "os catalogue feed: https is required (http only for a loopback test server)"
                    .into(),
            ));
        }
        let unavailable = |what: String| CoreError::Conflict(format!("os catalogue feed: {what}"));
        let mut builder = reqwest::Client::builder()
            .timeout(settings.timeout)
            .connect_timeout(Duration::from_secs(15));
        if !settings.root_certificates_der.is_empty() {
            builder = builder.tls_built_in_root_certs(false);
            for der in &settings.root_certificates_der {
                let cert = reqwest::Certificate::from_der(der)
                    .map_err(|e| CoreError::Internal(format!("feed root certificate: {e}")))?;
                builder = builder.add_root_certificate(cert);
            }
        }
        let client = builder
            .build()
            .map_err(|e| CoreError::Internal(format!("feed http client: {e}")))?;
        let response = client
            .get(&settings.feed_url)
            .send()
            .await
            .map_err(|e| unavailable(error_chain(&e)))?;
        let status = response.status();
        if !status.is_success() {
            return Err(unavailable(format!("answered {status}")));
        }
        if response
            .content_length()
            .is_some_and(|n| n > MAX_FEED_BYTES as u64)
        {
            return Err(unavailable("document too large".into()));
        }
        let bytes = response
            .bytes()
            .await
            .map_err(|e| unavailable(error_chain(&e)))?;
        if bytes.len() > MAX_FEED_BYTES {
            return Err(unavailable("document too large".into()));
        }
        serde_json::from_slice(&bytes).map_err(|e| unavailable(format!("not json: {e}")))
    }
}

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        out.push_str(": ");
        out.push_str(&s.to_string());
        source = s.source();
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn apple_feed_shape_is_read_per_model() {
        let doc = json!({"PublicAssetSets": {"iOS": [
            {"ProductVersion": "18.2", "Build": "22C152", "PostingDate": "2024-12-11",
             "SupportedDevices": ["iPad13,18", "J307AP", "iPhone15,2"]},
            {"ProductVersion": "18.1", "Build": "22B83", "SupportedDevices": ["iPad13,18"]}
        ], "macOS": []}, "AssetSets": {"iOS": [
            {"ProductVersion": "17.7.2", "Build": "21H221", "SupportedDevices": ["iPad7,5"]}
        ]}});
        let entries = parse_catalogue(&doc).unwrap();
        assert_eq!(entries.len(), 4);
        let latest = latest_per_model(&entries);
        let ipad = latest
            .iter()
            .find(|e| e.product_type == "iPad13,18")
            .unwrap();
        assert_eq!(
            (ipad.os_version.as_str(), ipad.build.as_str()),
            ("18.2", "22C152")
        );
        assert!(latest.iter().all(|e| e.product_type != "J307AP"));
    }

    #[test]
    fn bad_documents_name_the_problem() {
        let err = parse_catalogue(&json!({"entries": [
            {"product_type": "iPad13,18", "os_version": "18.x", "build": "22C152"}
        ]}))
        .unwrap_err();
        assert!(err.to_string().contains("entries[0]: os_version"), "{err}");
        let err = parse_catalogue(&json!({"something": 1})).unwrap_err();
        assert!(err.to_string().contains("PublicAssetSets"), "{err}");
        let err =
            parse_catalogue(&json!({"PublicAssetSets": {"iOS": [{"Build": "1"}]}})).unwrap_err();
        assert!(err.to_string().contains("ProductVersion"), "{err}");
    }

    #[test]
    fn versions_order_numerically() {
        let e = |v: &str| OsCatalogueEntry {
            product_type: "iPad13,18".into(),
            os_version: v.into(),
            build: "1".into(),
            posted: None,
        };
        let entries = vec![e("18.9"), e("18.10"), e("9.3")];
        assert_eq!(latest_per_model(&entries)[0].os_version, "18.10");
    }
}
