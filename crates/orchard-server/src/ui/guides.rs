//! The guides shipped with the server (`docs/guides/{en,sv}/*.md`, compiled into the binary so a deployment
//! shows the guides of its own version): `/ui/guides` lists those the reader may read, `/ui/guides/{name}`
//! renders one as HTML ([`super::markdown`], everything escaped) in the reader's UI language, with a link to the
//! other language (`?lang=`). Signed-in people only: a department's people read the department handbook, central
//! IT (operators and the service desk) both. A guide the reader may not read answers exactly like one that does
//! not exist (404).

use askama::Template;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::Response;
use orchard_core::access::roles::spans_all_tenants;
use serde::Deserialize;

use super::i18n::Lang;
use super::markdown;
use super::page::{error_page, render, Chrome};
use super::session::SignedIn;
use crate::state::AppState;

/// A guide, in both languages.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Guide {
    /// For the departments: what the four-hour course covers.
    Department,
    /// For central IT: install, Apple accounts, renewals, scale-out, backups, upgrades.
    Operator,
}

impl Guide {
    pub const ALL: [Guide; 2] = [Guide::Department, Guide::Operator];

    /// The guide's name in its address.
    pub fn name(self) -> &'static str {
        match self {
            Guide::Department => "department",
            Guide::Operator => "operator",
        }
    }

    fn parse(name: &str) -> Option<Guide> {
        Guide::ALL.into_iter().find(|g| g.name() == name)
    }

    /// The Markdown of the guide in `lang`.
    pub fn markdown(self, lang: Lang) -> &'static str {
        match (self, lang) {
            (Guide::Department, Lang::En) => {
                include_str!("../../../../docs/guides/en/department.md")
            }
            (Guide::Department, Lang::Sv) => {
                include_str!("../../../../docs/guides/sv/department.md")
            }
            (Guide::Operator, Lang::En) => include_str!("../../../../docs/guides/en/operator.md"),
            (Guide::Operator, Lang::Sv) => include_str!("../../../../docs/guides/sv/operator.md"),
        }
    }

    /// The guide's title: its first `# ` line.
    fn title(self, lang: Lang) -> &'static str {
        self.markdown(lang)
            .lines()
            .find_map(|l| l.strip_prefix("# "))
            .unwrap_or(self.name())
    }

    /// Whether the reader may read it: everyone signed in reads the department handbook; the operator guide is
    /// central IT's.
    fn readable_by(self, who: &SignedIn) -> bool {
        match self {
            Guide::Department => true,
            Guide::Operator => spans_all_tenants(who.principal.role()),
        }
    }
}

/// A guide as the list shows it.
struct GuideLine {
    href: String,
    title: &'static str,
    about: String,
}

#[derive(Template)]
#[template(path = "guides.html")]
struct GuidesPage {
    c: Chrome,
    guides: Vec<GuideLine>,
}

#[derive(Template)]
#[template(path = "guide.html")]
struct GuidePage {
    c: Chrome,
    title: &'static str,
    /// The guide's language (it may differ from the UI's when the reader follows the other-language link).
    lang: &'static str,
    /// The rendered guide: escaped by [`markdown::to_html`], so shown as it is.
    html: String,
    other_href: String,
    other_label: String,
    other_lang: &'static str,
}

/// `GET /ui/guides`.
pub(super) async fn guides_page(State(state): State<AppState>, who: SignedIn) -> Response {
    let t = who.texts;
    let guides = Guide::ALL
        .into_iter()
        .filter(|g| g.readable_by(&who))
        .map(|g| GuideLine {
            href: format!("/ui/guides/{}", g.name()),
            title: g.title(t.lang),
            about: t.get(&format!("guides.about.{}", g.name())).to_string(),
        })
        .collect();
    let page = GuidesPage {
        c: Chrome::of(&state, &who, "/ui/guides").await,
        guides,
    };
    render(StatusCode::OK, &page)
}

#[derive(Deserialize)]
pub(super) struct GuideQuery {
    lang: Option<String>,
}

/// `GET /ui/guides/{name}` (`?lang=sv|en` for the other language than the UI's).
pub(super) async fn guide_page(
    State(state): State<AppState>,
    who: SignedIn,
    Path(name): Path<String>,
    query: Result<Query<GuideQuery>, axum::extract::rejection::QueryRejection>,
) -> Response {
    let t = who.texts;
    let not_found = || {
        error_page(
            t,
            StatusCode::NOT_FOUND,
            t.get("error.not_found"),
            &who.request_id,
        )
    };
    let Some(guide) = Guide::parse(&name).filter(|g| g.readable_by(&who)) else {
        return not_found();
    };
    let lang = match query.ok().and_then(|q| q.0.lang) {
        None => t.lang,
        Some(tag) => match Lang::parse(&tag) {
            Some(lang) => lang,
            None => return not_found(),
        },
    };
    let other = match lang {
        Lang::En => Lang::Sv,
        Lang::Sv => Lang::En,
    };
    let here = format!("/ui/guides/{}", guide.name());
    let page = GuidePage {
        c: Chrome::of(&state, &who, &here).await,
        title: guide.title(lang),
        lang: lang.tag(),
        html: markdown::to_html(guide.markdown(lang)),
        other_href: format!("{here}?lang={}", other.tag()),
        other_label: t
            .get(&format!("guides.read_in.{}", other.tag()))
            .to_string(),
        other_lang: other.tag(),
    };
    render(StatusCode::OK, &page)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every guide exists in both languages with a title and the same sections' count.
    #[test]
    fn every_guide_has_both_languages() {
        for guide in Guide::ALL {
            let headings = |lang: Lang| {
                guide
                    .markdown(lang)
                    .lines()
                    .filter(|l| l.starts_with("## "))
                    .count()
            };
            assert!(guide.title(Lang::En) != guide.name());
            assert!(guide.title(Lang::Sv) != guide.name());
            assert_eq!(headings(Lang::En), headings(Lang::Sv), "{}", guide.name());
            assert!(headings(Lang::En) >= 6, "{}", guide.name());
        }
    }

    /// The renderer understands everything the guides use: no Markdown syntax is left in the page's text.
    #[test]
    fn every_guide_renders_without_markdown_left_over() {
        for guide in Guide::ALL {
            for lang in Lang::ALL {
                let html = markdown::to_html(guide.markdown(lang));
                // Code blocks and spans show their content as written; look at the rest.
                let mut prose = String::new();
                let mut rest = html.as_str();
                while let Some(start) = rest.find("<code") {
                    prose.push_str(&rest[..start]);
                    let end = rest[start..]
                        .find("</code>")
                        .map_or(rest.len(), |e| start + e);
                    rest = &rest[end..];
                }
                prose.push_str(rest);
                for leftover in ["**", "```", "](", "\n#", "<p>- ", "<p>|", "<p>> "] {
                    assert!(
                        !prose.contains(leftover),
                        "{} ({}): {leftover:?} left in {prose}",
                        guide.name(),
                        lang.tag()
                    );
                }
                if std::env::var_os("ORCHARD_PRINT_GUIDES").is_some() {
                    println!("{html}");
                }
            }
        }
    }
}
