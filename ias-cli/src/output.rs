//! Rendering results: readable text or stable JSON on stdout, errors on stderr.

use std::io::{self, Write};

use chrono::{DateTime, SecondsFormat, Utc};
use serde::Serialize;

use crate::error::{CliError, CliResult};
use crate::exit::Exit;

/// How results and errors are printed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    /// Compact lines and tables for people.
    Text,
    /// JSON with stable field names, for scripts.
    Json,
}

/// The result of a command, ready to print in either format.
#[derive(Debug)]
pub struct Report {
    text: String,
    json: serde_json::Value,
    exit: Exit,
    notice: Option<String>,
}

impl Report {
    /// A successful result shown as `text` or as `data` serialized to JSON.
    pub fn new(text: impl Into<String>, data: &impl Serialize) -> CliResult<Self> {
        let json = serde_json::to_value(data)
            .map_err(|err| CliError::Io(format!("cannot encode the result as json: {err}")))?;
        Ok(Report {
            text: text.into(),
            json,
            exit: Exit::Success,
            notice: None,
        })
    }

    /// The same result with a line for stderr after the text, such as where
    /// the next page starts; JSON carries it in its data instead.
    pub fn with_notice(mut self, notice: String) -> Self {
        self.notice = Some(notice);
        self
    }

    /// Writes the notice, if any, on its own line (text output only).
    pub fn write_notice(&self, format: Format, out: &mut impl Write) -> io::Result<()> {
        match (&self.notice, format) {
            (Some(notice), Format::Text) => writeln!(out, "{}", one_line(notice)),
            _ => Ok(()),
        }
    }

    /// The same result, ending with `exit` instead of success.
    pub fn with_exit(mut self, exit: Exit) -> Self {
        self.exit = exit;
        self
    }

    /// The exit code that goes with this result.
    pub fn exit(&self) -> Exit {
        self.exit
    }

    /// Writes the result in `format`.
    pub fn write(&self, format: Format, out: &mut impl Write) -> io::Result<()> {
        match format {
            Format::Text if self.text.is_empty() => Ok(()),
            Format::Text if self.text.ends_with('\n') => out.write_all(self.text.as_bytes()),
            Format::Text => writeln!(out, "{}", self.text),
            Format::Json => {
                serde_json::to_writer_pretty(&mut *out, &self.json)?;
                writeln!(out)
            }
        }
    }
}

/// Writes an error as one line: `error: …`, or a JSON object for `--output json`.
///
/// A GitOps file with errors is the exception: one line more per error.
pub fn write_error(format: Format, err: &CliError, out: &mut impl Write) -> io::Result<()> {
    if let CliError::Manifest { file, errors } = err.inner() {
        return write_manifest_errors(format, file, errors, out);
    }
    let message = one_line(&err.to_string());
    match format {
        Format::Text => writeln!(out, "error: {message}"),
        Format::Json => {
            let body = serde_json::json!({ "error": { "kind": err.kind(), "message": message } });
            writeln!(out, "{body}")
        }
    }
}

/// Every error in a GitOps file: one line each, `FILE:LINE:COLUMN: PATH: MESSAGE`.
fn write_manifest_errors(
    format: Format,
    file: &str,
    errors: &ias_core::gitops::manifest::ManifestErrors,
    out: &mut impl Write,
) -> io::Result<()> {
    match format {
        Format::Text => {
            let count = errors.0.len();
            writeln!(
                out,
                "error: {} has {count} error(s); nothing was applied",
                one_line(file)
            )?;
            // An error about the whole file has no path: `FILE:LINE:COLUMN: MESSAGE`.
            for e in errors.iter() {
                writeln!(out, "{}:{}", one_line(file), one_line(&e.to_string()))?;
            }
            Ok(())
        }
        Format::Json => {
            let body = serde_json::json!({ "error": {
                "kind": "invalid_input",
                "message": format!("{file} has {} error(s)", errors.0.len()),
                "file": file,
                "errors": errors.iter().collect::<Vec<_>>(),
            }});
            writeln!(out, "{body}")
        }
    }
}

/// `text` with every control character (such as a newline) turned into a space.
fn one_line(text: &str) -> String {
    text.chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect()
}

/// Lays out rows under headers in columns two spaces apart.
pub fn table(headers: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = headers.iter().map(|h| h.chars().count()).collect();
    for row in rows {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.chars().count());
        }
    }
    let header: Vec<String> = headers.iter().map(|h| (*h).to_owned()).collect();
    std::iter::once(&header)
        .chain(rows)
        .map(|row| table_line(&widths, row))
        .collect::<Vec<_>>()
        .join("\n")
}

fn table_line(widths: &[usize], row: &[String]) -> String {
    let cells: Vec<String> = row
        .iter()
        .zip(widths)
        .map(|(cell, width)| format!("{cell:<width$}"))
        .collect();
    cells.join("  ").trim_end().to_owned()
}

/// Lays out `label: value` lines with the values aligned.
pub fn fields(pairs: &[(&str, String)]) -> String {
    let width = pairs
        .iter()
        .map(|(label, _)| label.len())
        .max()
        .unwrap_or(0)
        + 1;
    pairs
        .iter()
        .map(|(label, value)| format!("{:<width$} {value}", format!("{label}:")))
        .collect::<Vec<_>>()
        .join("\n")
}

/// An instant as RFC 3339 in UTC, to the second.
pub fn time(at: DateTime<Utc>) -> String {
    at.to_rfc3339_opts(SecondsFormat::Secs, true)
}

/// An optional instant, or `when_none` when there is none.
pub fn maybe_time(at: Option<DateTime<Utc>>, when_none: &str) -> String {
    at.map_or_else(|| when_none.to_owned(), time)
}

/// An optional token limit, or `none`.
pub fn limit(value: Option<i64>) -> String {
    value.map_or_else(|| "none".to_owned(), |v| v.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tables_align_columns() {
        let rows = vec![vec!["team-alpha".to_owned(), "5".to_owned()]];
        let shown = table(&["SLUG", "BUDGET"], &rows);
        assert_eq!(shown, "SLUG        BUDGET\nteam-alpha  5");
    }

    #[test]
    fn errors_print_on_one_line() {
        let err = CliError::Io("line one\nline two".to_owned());
        let mut out = Vec::new();
        write_error(Format::Text, &err, &mut out).unwrap();
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "error: line one line two\n"
        );
    }
}
