//! The web UI's languages: every string a page shows comes from a message catalogue, one file per language
//! (`crates/orchard-server/i18n/{en,sv}.txt`, `key = text` lines, compiled into the binary). The language is the
//! `orchard_lang` cookie when the person picked one, else the best of the browser's `Accept-Language`, else
//! English. A test fails when a key is missing in one language or a page asks for a key no catalogue has.

use std::collections::HashMap;
use std::sync::OnceLock;

use axum::http::{header, HeaderMap};

use crate::auth::cookies::cookie;

/// The cookie that keeps the language a person picked.
pub const LANG_COOKIE: &str = "orchard_lang";

const EN: &str = include_str!("../../i18n/en.txt");
const SV: &str = include_str!("../../i18n/sv.txt");

/// A language of the UI.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lang {
    En,
    Sv,
}

impl Lang {
    pub const ALL: [Lang; 2] = [Lang::En, Lang::Sv];

    /// The BCP 47 tag (`<html lang>`, the cookie's value).
    pub fn tag(self) -> &'static str {
        match self {
            Lang::En => "en",
            Lang::Sv => "sv",
        }
    }

    pub fn parse(tag: &str) -> Option<Lang> {
        let primary = tag.trim().split(['-', '_']).next()?.to_ascii_lowercase();
        match primary.as_str() {
            "en" => Some(Lang::En),
            // Norwegian and Danish readers understand Swedish better than they would expect English to be.
            "sv" => Some(Lang::Sv),
            _ => None,
        }
    }

    /// The language of a request: the cookie, else `Accept-Language` by quality, else English.
    pub fn of_request(headers: &HeaderMap) -> Lang {
        if let Some(lang) = cookie(headers, LANG_COOKIE).and_then(Lang::parse) {
            return lang;
        }
        headers
            .get(header::ACCEPT_LANGUAGE)
            .and_then(|v| v.to_str().ok())
            .and_then(from_accept_language)
            .unwrap_or(Lang::En)
    }

    #[cfg(test)]
    fn source(self) -> &'static str {
        match self {
            Lang::En => EN,
            Lang::Sv => SV,
        }
    }
}

/// The best language of an `Accept-Language` value we have, by quality (ties: the order given).
fn from_accept_language(value: &str) -> Option<Lang> {
    let mut best: Option<(f32, Lang)> = None;
    for part in value.split(',').take(20) {
        let mut pieces = part.split(';');
        let Some(lang) = pieces.next().and_then(Lang::parse) else {
            continue;
        };
        let q = pieces
            .filter_map(|p| p.trim().strip_prefix("q="))
            .find_map(|q| q.trim().parse::<f32>().ok())
            .unwrap_or(1.0);
        if q > 0.0 && best.is_none_or(|(b, _)| q > b) {
            best = Some((q, lang));
        }
    }
    best.map(|(_, l)| l)
}

/// A parsed catalogue: key → text.
pub(crate) fn parse_catalogue(source: &'static str) -> HashMap<&'static str, &'static str> {
    source
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.trim(), v.trim()))
        .collect()
}

fn catalogue(lang: Lang) -> &'static HashMap<&'static str, &'static str> {
    static CATALOGUES: OnceLock<[HashMap<&'static str, &'static str>; 2]> = OnceLock::new();
    let all = CATALOGUES.get_or_init(|| [parse_catalogue(EN), parse_catalogue(SV)]);
    match lang {
        Lang::En => &all[0],
        Lang::Sv => &all[1],
    }
}

/// The texts of one language, handed to every template.
#[derive(Debug, Clone, Copy)]
pub struct Texts {
    pub lang: Lang,
}

impl Texts {
    pub fn new(lang: Lang) -> Self {
        Texts { lang }
    }

    /// The text of `key`. A key no catalogue has shows as itself (the catalogue test keeps that from shipping).
    pub fn get<'k>(&self, key: &'k str) -> &'k str {
        catalogue(self.lang).get(key).copied().unwrap_or(key)
    }

    /// The text of `key` with each `{name}` replaced by its value.
    pub fn fill(&self, key: &str, values: &[(&str, &str)]) -> String {
        let mut text = catalogue(self.lang)
            .get(key)
            .copied()
            .unwrap_or(key)
            .to_string();
        for (name, value) in values {
            text = text.replace(&format!("{{{name}}}"), value);
        }
        text
    }

    /// Whether the catalogue has `key` (dynamic keys fall back to a generic text when it does not).
    pub fn has(&self, key: &str) -> bool {
        catalogue(self.lang).contains_key(key)
    }

    pub fn lang_tag(&self) -> &'static str {
        self.lang.tag()
    }

    /// The source text of this language's catalogue (the key-completeness test reads it).
    #[cfg(test)]
    pub(crate) fn source(&self) -> &'static str {
        self.lang.source()
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use std::collections::BTreeSet;
    use std::path::Path;

    use super::*;

    #[test]
    fn accept_language_picks_the_best_we_have() {
        assert_eq!(
            from_accept_language("sv-SE,sv;q=0.9,en;q=0.8"),
            Some(Lang::Sv)
        );
        assert_eq!(
            from_accept_language("de-DE, en;q=0.5, sv;q=0.7"),
            Some(Lang::Sv)
        );
        assert_eq!(from_accept_language("en-GB,sv;q=0.9"), Some(Lang::En));
        assert_eq!(from_accept_language("fr, de"), None);
        assert_eq!(from_accept_language("sv;q=0, en;q=0.1"), Some(Lang::En));
        let mut h = HeaderMap::new();
        h.insert(header::ACCEPT_LANGUAGE, "sv".parse().unwrap());
        assert_eq!(Lang::of_request(&h), Lang::Sv);
        h.insert(header::COOKIE, "orchard_lang=en".parse().unwrap());
        assert_eq!(Lang::of_request(&h), Lang::En, "the person's choice wins");
    }

    /// Every key of one language is in the other, and no text is empty.
    #[test]
    fn every_key_is_in_every_language() {
        let keys: Vec<BTreeSet<&str>> = Lang::ALL
            .iter()
            .map(|l| {
                let cat = parse_catalogue(Texts::new(*l).source());
                for (k, v) in &cat {
                    assert!(!v.is_empty(), "{k} is empty in {}", l.tag());
                }
                cat.keys().copied().collect()
            })
            .collect();
        let missing_sv: Vec<_> = keys[0].difference(&keys[1]).collect();
        let missing_en: Vec<_> = keys[1].difference(&keys[0]).collect();
        assert!(
            missing_sv.is_empty() && missing_en.is_empty(),
            "missing in sv: {missing_sv:?}; missing in en: {missing_en:?}"
        );
    }

    /// Every `get("…")` / `fill("…"` in the templates and the UI's code names a key the catalogues have.
    #[test]
    fn every_key_a_page_asks_for_exists() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR"));
        let mut sources = Vec::new();
        for dir in ["templates", "src/ui"] {
            for entry in std::fs::read_dir(root.join(dir)).unwrap() {
                let path = entry.unwrap().path();
                sources.push((path.clone(), std::fs::read_to_string(&path).unwrap()));
            }
        }
        let known = parse_catalogue(EN);
        let mut unknown = Vec::new();
        for (path, text) in &sources {
            for marker in ["t.get(\"", "t.fill(\""] {
                for (at, _) in text.match_indices(marker) {
                    let key: String = text[at + marker.len()..]
                        .chars()
                        .take_while(|c| *c != '"')
                        .collect();
                    // Keys ending in '.' are prefixes completed at run time (checked below).
                    if !key.ends_with('.') && !known.contains_key(key.as_str()) {
                        unknown.push(format!("{}: {key}", path.display()));
                    }
                }
            }
        }
        assert!(
            unknown.is_empty(),
            "keys missing from the catalogues: {unknown:?}"
        );
    }

    /// The checklist's keys are made at run time from each check and level.
    #[test]
    fn every_checklist_wording_exists() {
        let known = parse_catalogue(EN);
        for check in [
            "last_checkin",
            "push_token",
            "pending_commands",
            "failed_commands",
            "identity",
            "setup",
        ] {
            assert!(
                known.contains_key(format!("check.{check}.title").as_str()),
                "{check}"
            );
            for level in ["green", "amber", "red"] {
                let key = format!("check.{check}.{level}");
                assert!(known.contains_key(key.as_str()), "{key}");
                if level != "green" {
                    let todo = format!("check.{check}.{level}.todo");
                    assert!(known.contains_key(todo.as_str()), "{todo}");
                }
            }
        }
    }
}
