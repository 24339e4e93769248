//! A small Markdown renderer for the guides the server ships (`docs/guides`), covering only the subset they use:
//! `#`–`####` headings (with ids for links), paragraphs, `-` and `1.` lists (one level, continuation lines
//! indented), `>` notes, fenced code blocks, simple `|` tables, and inline `code`, `**bold**`, `*emphasis*` and
//! `[links](…)`. Everything the text holds is escaped: raw HTML in the Markdown shows as text, never as markup,
//! and a link may only lead to `https://`, `/ui…`, or an anchor (`#…`) — anything else is shown as its text.
//! pulldown-cmark is not in the dependency tree; this subset is ~200 lines and has no HTML passthrough to turn off.

/// The HTML of `markdown`.
pub fn to_html(markdown: &str) -> String {
    let mut out = String::new();
    let lines: Vec<&str> = markdown.lines().collect();
    let mut i = 0;
    while i < lines.len() {
        let line = lines[i];
        let trimmed = line.trim();
        if trimmed.is_empty() {
            i += 1;
        } else if let Some(info) = trimmed.strip_prefix("```") {
            let mut code = String::new();
            i += 1;
            while i < lines.len() && !lines[i].trim_start().starts_with("```") {
                code.push_str(lines[i]);
                code.push('\n');
                i += 1;
            }
            i += 1;
            let lang = info.split_whitespace().next().unwrap_or("");
            if lang.is_empty() {
                out.push_str("<pre><code>");
            } else {
                out.push_str(&format!("<pre><code class=\"lang-{}\">", escape(lang)));
            }
            out.push_str(&escape(&code));
            out.push_str("</code></pre>\n");
        } else if let Some((level, text)) = heading(trimmed) {
            let id = slug(text);
            out.push_str(&format!(
                "<h{level} id=\"{id}\">{}</h{level}>\n",
                inline(text)
            ));
            i += 1;
        } else if trimmed.starts_with('|') {
            let mut rows = Vec::new();
            while i < lines.len() && lines[i].trim().starts_with('|') {
                rows.push(lines[i].trim());
                i += 1;
            }
            table(&rows, &mut out);
        } else if trimmed.starts_with("> ") || trimmed == ">" {
            let mut text = Vec::new();
            while i < lines.len() && lines[i].trim_start().starts_with('>') {
                text.push(lines[i].trim_start().trim_start_matches('>').trim());
                i += 1;
            }
            out.push_str(&format!(
                "<blockquote><p>{}</p></blockquote>\n",
                inline(&text.join(" "))
            ));
        } else if list_item(trimmed).is_some() {
            let ordered = matches!(list_item(trimmed), Some((true, _)));
            let tag = if ordered { "ol" } else { "ul" };
            out.push_str(&format!("<{tag}>\n"));
            while i < lines.len() {
                let Some((_, first)) = list_item(lines[i].trim()) else {
                    break;
                };
                let mut item = vec![first];
                i += 1;
                // Continuation lines are indented; a blank line or an unindented line ends the item.
                while i < lines.len()
                    && lines[i].starts_with(' ')
                    && !lines[i].trim().is_empty()
                    && list_item(lines[i].trim()).is_none()
                {
                    item.push(lines[i].trim());
                    i += 1;
                }
                out.push_str(&format!("<li>{}</li>\n", inline(&item.join(" "))));
                // A blank line between items keeps the list going.
                if i + 1 < lines.len()
                    && lines[i].trim().is_empty()
                    && list_item(lines[i + 1].trim()).is_some_and(|(o, _)| o == ordered)
                {
                    i += 1;
                }
            }
            out.push_str(&format!("</{tag}>\n"));
        } else {
            let mut text = Vec::new();
            while i < lines.len() {
                let l = lines[i].trim();
                if l.is_empty()
                    || l.starts_with("```")
                    || heading(l).is_some()
                    || l.starts_with('|')
                    || l.starts_with('>')
                    || (!text.is_empty() && list_item(l).is_some())
                {
                    break;
                }
                text.push(l);
                i += 1;
            }
            out.push_str(&format!("<p>{}</p>\n", inline(&text.join(" "))));
        }
    }
    out
}

/// `## Title` → (2, "Title").
fn heading(line: &str) -> Option<(usize, &str)> {
    let level = line.chars().take_while(|c| *c == '#').count();
    let text = line.get(level..)?.strip_prefix(' ')?;
    (1..=4).contains(&level).then_some((level, text.trim()))
}

/// `- item` → (false, "item"); `12. item` → (true, "item").
fn list_item(line: &str) -> Option<(bool, &str)> {
    if let Some(rest) = line.strip_prefix("- ") {
        return Some((false, rest));
    }
    let digits = line.chars().take_while(char::is_ascii_digit).count();
    if digits == 0 {
        return None;
    }
    line.get(digits..)?
        .strip_prefix(". ")
        .map(|rest| (true, rest))
}

/// A heading's id: lowercase letters and digits, other runs as one `-`.
pub fn slug(text: &str) -> String {
    let mut id = String::new();
    for c in text.chars().flat_map(char::to_lowercase) {
        if c.is_alphanumeric() {
            id.push(c);
        } else if !id.is_empty() && !id.ends_with('-') {
            id.push('-');
        }
    }
    escape(id.trim_end_matches('-'))
}

fn table(rows: &[&str], out: &mut String) {
    let cells = |row: &str| -> Vec<String> {
        row.trim_matches('|')
            .split('|')
            .map(|c| inline(c.trim()))
            .collect()
    };
    let is_rule = |row: &str| row.chars().all(|c| matches!(c, '|' | '-' | ':' | ' '));
    out.push_str("<table>\n");
    let mut body = rows;
    if rows.len() >= 2 && is_rule(rows[1]) {
        out.push_str("<thead><tr>");
        for c in cells(rows[0]) {
            out.push_str(&format!("<th scope=\"col\">{c}</th>"));
        }
        out.push_str("</tr></thead>\n");
        body = &rows[2..];
    }
    out.push_str("<tbody>\n");
    for row in body {
        out.push_str("<tr>");
        for c in cells(row) {
            out.push_str(&format!("<td>{c}</td>"));
        }
        out.push_str("</tr>\n");
    }
    out.push_str("</tbody></table>\n");
}

/// Inline markup of one paragraph's text: code spans first (their content is literal), then links, bold and
/// emphasis in the rest. Every character of the text is escaped.
fn inline(text: &str) -> String {
    let mut out = String::new();
    let mut rest = text;
    while let Some(start) = rest.find('`') {
        let Some(len) = rest[start + 1..].find('`') else {
            break;
        };
        out.push_str(&spans(&rest[..start]));
        out.push_str("<code>");
        out.push_str(&escape(&rest[start + 1..start + 1 + len]));
        out.push_str("</code>");
        rest = &rest[start + 2 + len..];
    }
    out.push_str(&spans(rest));
    out
}

/// Links, `**bold**` and `*emphasis*` in text without code spans.
fn spans(text: &str) -> String {
    let mut out = String::new();
    let mut rest = text;
    while let Some(open) = rest.find('[') {
        let link = rest[open + 1..].find("](").and_then(|close| {
            let label = &rest[open + 1..open + 1 + close];
            let after = &rest[open + 1 + close + 2..];
            after
                .find(')')
                .map(|end| (label, &after[..end], &after[end + 1..]))
        });
        let Some((label, target, after)) = link else {
            break;
        };
        out.push_str(&emphasis(&rest[..open]));
        if safe_target(target) {
            out.push_str(&format!(
                "<a href=\"{}\">{}</a>",
                escape(target),
                emphasis(label)
            ));
        } else {
            out.push_str(&emphasis(label));
        }
        rest = after;
    }
    out.push_str(&emphasis(rest));
    out
}

/// Where a guide's link may lead: Orchard's own pages, an anchor, or an https site.
fn safe_target(target: &str) -> bool {
    (target.starts_with("/ui") && !target.starts_with("//"))
        || target.starts_with('#')
        || target.starts_with("https://")
}

fn emphasis(text: &str) -> String {
    let text = escape(text);
    let bold = pair(&text, "**", "strong");
    pair(&bold, "*", "em")
}

/// Replaces `marker…marker` pairs with `<tag>…</tag>` (an unpaired marker stays as it is).
fn pair(text: &str, marker: &str, tag: &str) -> String {
    let parts: Vec<&str> = text.split(marker).collect();
    if parts.len() < 3 {
        return text.to_string();
    }
    let mut out = String::new();
    let paired = if parts.len() % 2 == 1 {
        parts.len()
    } else {
        parts.len() - 1
    };
    for (n, part) in parts.iter().enumerate() {
        if n > 0 {
            if n >= paired {
                out.push_str(marker);
            } else if n % 2 == 1 {
                out.push_str(&format!("<{tag}>"));
            } else {
                out.push_str(&format!("</{tag}>"));
            }
        }
        out.push_str(part);
    }
    out
}

/// HTML-escapes text (also quotes, so it is safe in attribute values): the crate's one escaper.
pub fn escape(text: &str) -> String {
    crate::html_escape(text)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_the_subset_the_guides_use() {
        let html = to_html(
            "# Title\n\nSome *text* with `code` and **bold**.\n\n- one\n  more\n- two\n\n1. first\n2. second\n\n\
             ```sh\norchard tenant list\n```\n\n| a | b |\n|---|---|\n| 1 | `2` |\n\n> Note: read this.\n",
        );
        assert!(html.contains("<h1 id=\"title\">Title</h1>"), "{html}");
        assert!(html.contains(
            "<p>Some <em>text</em> with <code>code</code> and <strong>bold</strong>.</p>"
        ));
        assert!(
            html.contains("<ul>\n<li>one more</li>\n<li>two</li>\n</ul>"),
            "{html}"
        );
        assert!(
            html.contains("<ol>\n<li>first</li>\n<li>second</li>\n</ol>"),
            "{html}"
        );
        assert!(html.contains("<pre><code class=\"lang-sh\">orchard tenant list\n</code></pre>"));
        assert!(
            html.contains("<th scope=\"col\">a</th>") && html.contains("<td><code>2</code></td>")
        );
        assert!(html.contains("<blockquote><p>Note: read this.</p></blockquote>"));
    }

    #[test]
    fn raw_html_is_text_and_links_are_limited() {
        let html = to_html(
            "<script>alert(1)</script>\n\n```\n<b>x</b>\n```\n\n[bad](javascript:alert(1)) \
             [ok](/ui/devices) [web](https://support.apple.com/) [x](//evil.example) [\"q](/ui\" onclick=\"x)\n\n\
             ## <img src=x onerror=alert(1)>\n",
        );
        assert!(
            !html.contains("<script") && html.contains("&lt;script&gt;"),
            "{html}"
        );
        assert!(html.contains("&lt;b&gt;x&lt;/b&gt;"));
        assert!(!html.contains("href=\"javascript"), "{html}");
        assert!(html.contains("<a href=\"/ui/devices\">ok</a>"));
        assert!(html.contains("<a href=\"https://support.apple.com/\">web</a>"));
        assert!(!html.contains("href=\"//evil"), "{html}");
        assert!(!html.contains("onclick=\"x"), "{html}");
        assert!(!html.contains("<img"), "{html}");
    }

    #[test]
    fn headings_get_stable_ids() {
        assert_eq!(slug("Lock and Lost Mode"), "lock-and-lost-mode");
        assert_eq!(slug("Lås och förlorat läge"), "lås-och-förlorat-läge");
        assert_eq!(slug("1. Install (systemd)"), "1-install-systemd");
    }
}
