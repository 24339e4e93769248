//! Prometheus' text exposition format (version 0.0.4), written by hand: a family's `# HELP` and `# TYPE` lines,
//! then its samples, with label values escaped so no value can end a label or a line.

use std::fmt::Display;

/// Appends families and samples to a metrics page.
pub(crate) struct Exposition<'a> {
    out: &'a mut String,
}

impl<'a> Exposition<'a> {
    pub(crate) fn new(out: &'a mut String) -> Self {
        Self { out }
    }

    /// Starts a family: `kind` is `counter`, `gauge` or `histogram`.
    pub(crate) fn family(&mut self, name: &str, kind: &str, help: &str) {
        self.out.push_str(&format!(
            "# HELP {name} {}\n# TYPE {name} {kind}\n",
            help.replace('\\', "\\\\").replace('\n', "\\n")
        ));
    }

    /// One sample of the family started last (or of its `_bucket`, `_sum`, `_count` series).
    pub(crate) fn sample(&mut self, name: &str, labels: &[(&str, &str)], value: impl Display) {
        self.out.push_str(name);
        if !labels.is_empty() {
            self.out.push('{');
            for (i, (label, v)) in labels.iter().enumerate() {
                if i > 0 {
                    self.out.push(',');
                }
                self.out.push_str(label);
                self.out.push_str("=\"");
                self.out.push_str(&escape_label_value(v));
                self.out.push('"');
            }
            self.out.push('}');
        }
        self.out.push_str(&format!(" {value}\n"));
    }
}

/// A label value as the format wants it: backslash, double quote and line feed escaped.
fn escape_label_value(v: &str) -> String {
    let mut out = String::with_capacity(v.len());
    for c in v.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn label_values_cannot_break_out() {
        let mut out = String::new();
        let mut e = Exposition::new(&mut out);
        e.family("x_total", "counter", "An example.");
        e.sample("x_total", &[("route", "/a\"} 9\n"), ("status", "200")], 1);
        e.sample("x_total", &[], 2);
        assert_eq!(
            out,
            "# HELP x_total An example.\n# TYPE x_total counter\n\
             x_total{route=\"/a\\\"} 9\\n\",status=\"200\"} 1\nx_total 2\n"
        );
    }
}
