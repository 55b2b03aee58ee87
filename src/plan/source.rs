//! Plan-file problems with their place: every diagnostic names file:line:col,
//! the offending value and what would be valid. Rendered with codespan.

use std::fmt;
use std::ops::Range;

use codespan_reporting::diagnostic::{Diagnostic as CsDiagnostic, Label};
use codespan_reporting::files::SimpleFile;
use codespan_reporting::term::{self, termcolor::Buffer};

pub type Span = Range<usize>;

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Diagnostic {
    pub span: Span,
    pub message: String,
    pub help: Option<String>,
}

impl Diagnostic {
    pub fn new(span: Span, message: impl Into<String>) -> Self {
        Diagnostic {
            span,
            message: message.into(),
            help: None,
        }
    }
    pub fn help(mut self, help: impl Into<String>) -> Self {
        self.help = Some(help.into());
        self
    }
}

/// All problems found in one plan file, in file order, duplicates removed.
#[derive(Debug)]
pub struct Diagnostics {
    pub file: String,
    pub source: String,
    pub items: Vec<Diagnostic>,
}

impl Diagnostics {
    /// The human form: `file:line:col: error: message` plus the source line, for each problem.
    pub fn render(&self) -> String {
        // Line starts once, so that thousands of problems render in n log n.
        let starts: Vec<usize> = std::iter::once(0)
            .chain(self.source.match_indices('\n').map(|(i, _)| i + 1))
            .collect();
        let line_col = |offset: usize| {
            let offset = offset.min(self.source.len());
            let line = starts.partition_point(|&s| s <= offset);
            let start = starts[line - 1];
            (
                line,
                self.source
                    .get(start..offset)
                    .map_or(offset - start, |t| t.chars().count())
                    + 1,
            )
        };
        let file = SimpleFile::new(&self.file, &self.source);
        let mut out = Buffer::no_color();
        let config = term::Config::default();
        for d in &self.items {
            let (line, col) = line_col(d.span.start);
            let mut cs = CsDiagnostic::error()
                .with_message(format!("{}:{line}:{col}: {}", self.file, d.message))
                .with_labels(vec![Label::primary((), d.span.clone())]);
            if let Some(help) = &d.help {
                cs = cs.with_notes(vec![format!("help: {help}")]);
            }
            let _ = term::emit(&mut out, &config, &file, &cs);
        }
        let mut text = String::from_utf8_lossy(out.as_slice()).into_owned();
        text.push_str(&format!(
            "{}: {} problem{} found; nothing was sent to AWS\n",
            self.file,
            self.items.len(),
            if self.items.len() == 1 { "" } else { "s" }
        ));
        text
    }
}

impl fmt::Display for Diagnostics {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.render())
    }
}

impl std::error::Error for Diagnostics {}

/// "did you mean" for a misspelt name.
pub fn suggest<'a>(wrong: &str, valid: impl IntoIterator<Item = &'a str>) -> Option<&'a str> {
    valid
        .into_iter()
        .map(|v| (strsim::levenshtein(wrong, v), v))
        .filter(|(d, v)| *d <= 2.max(v.len() / 3) || (wrong.len() >= 3 && v.starts_with(wrong)))
        .min_by_key(|(d, _)| *d)
        .map(|(_, v)| v)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn suggests_close_names_only() {
        assert_eq!(
            suggest("cidr_blok", ["cidr_block", "vpc"]),
            Some("cidr_block")
        );
        assert_eq!(suggest("zzz", ["cidr_block", "vpc"]), None);
    }
}
