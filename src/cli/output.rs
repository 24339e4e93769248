//! Human-readable renderings of API JSON: aligned tables and `key: value` blocks. Missing and null values
//! show as `-`, so a column never shifts.

use serde_json::Value;

/// A value as one table cell: strings bare, null as `-`, booleans as yes/no, anything else as compact JSON.
pub fn cell(v: Option<&Value>) -> String {
    match v {
        None | Some(Value::Null) => "-".into(),
        Some(Value::String(s)) if s.is_empty() => "-".into(),
        // A cell is one line: a message with newlines would break the table.
        Some(Value::String(s)) => s.replace(['\n', '\r', '\t'], " "),
        Some(Value::Bool(b)) => if *b { "yes" } else { "no" }.into(),
        Some(Value::Number(n)) => n.to_string(),
        Some(other) => other.to_string(),
    }
}

/// The field named by `path` (`a.b` descends into objects).
pub fn field<'a>(v: &'a Value, path: &str) -> Option<&'a Value> {
    path.split('.').try_fold(v, |v, key| v.get(key))
}

/// A table with a header line; `columns` are (header, field path).
pub fn table(rows: &[Value], columns: &[(&str, &str)]) -> String {
    let cells: Vec<Vec<String>> = rows
        .iter()
        .map(|row| {
            columns
                .iter()
                .map(|(_, path)| cell(field(row, path)))
                .collect()
        })
        .collect();
    let mut widths: Vec<usize> = columns.iter().map(|(h, _)| h.chars().count()).collect();
    for row in &cells {
        for (w, c) in widths.iter_mut().zip(row) {
            *w = (*w).max(c.chars().count());
        }
    }
    let mut out = String::new();
    let headers: Vec<String> = columns.iter().map(|(h, _)| (*h).to_string()).collect();
    for line in std::iter::once(&headers).chain(cells.iter()) {
        let mut text = String::new();
        for (i, (c, w)) in line.iter().zip(&widths).enumerate() {
            if i + 1 == line.len() {
                text.push_str(c);
            } else {
                text.push_str(c);
                text.push_str(&" ".repeat(w - c.chars().count() + 2));
            }
        }
        out.push_str(text.trim_end());
        out.push('\n');
    }
    out
}

/// The `items` array of a list answer (empty when absent).
pub fn items(v: &Value) -> &[Value] {
    v.get("items")
        .and_then(Value::as_array)
        .map(Vec::as_slice)
        .unwrap_or(&[])
}

/// A list as a table, or `empty` when there is nothing; with `total`, a closing line says which part of how
/// many was shown.
pub fn list(v: &Value, columns: &[(&str, &str)], empty: &str) -> String {
    list_at(v, columns, empty, 0)
}

/// [`list`] for a page requested at `requested_offset` (used when the answer does not repeat its offset).
pub fn list_at(v: &Value, columns: &[(&str, &str)], empty: &str, requested_offset: i64) -> String {
    let rows = items(v);
    let total = v.get("total").and_then(Value::as_i64);
    if rows.is_empty() {
        return match total {
            Some(t) if t > 0 => format!("{empty} on this page ({t} in all)\n"),
            _ => format!("{empty}\n"),
        };
    }
    let mut out = table(rows, columns);
    if let Some(total) = total {
        let offset = v
            .get("offset")
            .and_then(Value::as_i64)
            .unwrap_or(requested_offset);
        let shown = i64::try_from(rows.len()).unwrap_or(i64::MAX);
        if offset > 0 || shown < total {
            out.push_str(&format!(
                "({}–{} of {total}; see --limit and --offset)\n",
                offset + 1,
                offset + shown
            ));
        }
    }
    out
}

/// `label: value` lines, labels aligned; `fields` are (label, field path).
pub fn fields(v: &Value, fields: &[(&str, &str)]) -> String {
    let width = fields
        .iter()
        .map(|(l, _)| l.chars().count())
        .max()
        .unwrap_or(0);
    let mut out = String::new();
    for (label, path) in fields {
        let pad = " ".repeat(width - label.chars().count());
        out.push_str(&format!("{label}:{pad} {}\n", cell(field(v, path))));
    }
    out
}

/// Pretty JSON for nested parts (a template's profile, a command's result) in human output.
pub fn pretty(v: &Value) -> String {
    serde_json::to_string_pretty(v).unwrap_or_else(|_| v.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn tables_align_and_show_missing_values() {
        let rows = vec![
            json!({"id": "t1", "name": "Physics", "n": 3, "ok": true}),
            json!({"id": "tenant-22", "name": null, "ok": false}),
        ];
        let text = table(
            &rows,
            &[("ID", "id"), ("NAME", "name"), ("N", "n"), ("OK", "ok")],
        );
        assert_eq!(
            text,
            "ID         NAME     N  OK\nt1         Physics  3  yes\ntenant-22  -        -  no\n"
        );
    }

    #[test]
    fn lists_say_when_empty_and_when_paged() {
        let empty = json!({"items": [], "total": 0});
        assert_eq!(list(&empty, &[("ID", "id")], "no devices"), "no devices\n");
        let page = json!({"items": [{"id": "a"}], "total": 7, "offset": 2});
        assert!(list(&page, &[("ID", "id")], "none")
            .ends_with("(3–3 of 7; see --limit and --offset)\n"));
    }

    #[test]
    fn fields_descend_and_align() {
        let v = json!({"a": {"b": "deep"}, "long_name": "x\ny"});
        assert_eq!(
            fields(&v, &[("b", "a.b"), ("long name", "long_name")]),
            "b:         deep\nlong name: x y\n"
        );
    }
}
