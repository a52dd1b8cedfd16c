//! Model policy: which model names an organization may call.
//!
//! An allowed entry is one of:
//! - an exact model name, such as `gpt-4o-mini`;
//! - `prefix/*`, which grants every name that starts with `prefix/`
//!   (so `openai/*` grants `openai/gpt-4o` but not `openai-compat/x`);
//! - `*`, which grants every model.
//!
//! An organization with no entries is granted no model. Names are
//! normalised (trimmed, lowercased) when written and when checked.

use crate::error::{Error, Result};

/// Longest accepted model name or pattern.
pub const MAX_MODEL_LEN: usize = 200;

/// Normalises a requested model name and checks its characters.
pub fn model_name(value: &str) -> Result<String> {
    let normalised = normalise(value, "model")?;
    if normalised.contains('*') {
        return Err(Error::invalid(
            "model",
            value,
            "a model name may not contain `*`",
        ));
    }
    Ok(normalised)
}

/// Normalises an allowed-model entry (a name, `prefix/*` or `*`).
pub fn model_pattern(value: &str) -> Result<String> {
    let normalised = normalise(value, "model")?;
    if normalised == "*" {
        return Ok(normalised);
    }
    let stem = normalised.strip_suffix("/*").unwrap_or(&normalised);
    if stem.is_empty() || stem.contains('*') {
        return Err(Error::invalid(
            "model",
            value,
            "`*` is allowed only alone or as a final `/*`",
        ));
    }
    Ok(normalised)
}

/// Whether `model` (already normalised) is granted by any of `allowed`.
pub fn is_allowed(allowed: &[String], model: &str) -> bool {
    allowed.iter().any(|pattern| matches(pattern, model))
}

/// Whether one normalised pattern grants one normalised model name.
pub fn matches(pattern: &str, model: &str) -> bool {
    if pattern == "*" {
        return true;
    }
    match pattern.strip_suffix('*') {
        // INVARIANT: patterns are validated, so a trailing `*` follows a `/`.
        Some(prefix) => model.len() > prefix.len() && model.starts_with(prefix),
        None => pattern == model,
    }
}

fn normalise(value: &str, field: &'static str) -> Result<String> {
    let normalised = value.trim().to_lowercase();
    if normalised.is_empty() {
        return Err(Error::invalid(field, value, "must not be empty"));
    }
    if normalised.len() > MAX_MODEL_LEN {
        return Err(Error::invalid(
            field,
            value,
            "must be at most 200 characters",
        ));
    }
    let bad = normalised
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || "-._:/@+*".contains(*c)));
    if let Some(c) = bad {
        let shown: String = c.escape_default().collect();
        return Err(Error::invalid(
            field,
            value,
            format!("character `{shown}` is not allowed; use letters, digits and - . _ : / @ +"),
        ));
    }
    Ok(normalised)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn allowed(list: &[&str]) -> Vec<String> {
        list.iter().map(|p| model_pattern(p).unwrap()).collect()
    }

    #[test]
    fn exact_names_match_after_normalisation() {
        let list = allowed(&["GPT-4o-mini "]);
        assert!(is_allowed(&list, &model_name(" gpt-4o-MINI").unwrap()));
        assert!(!is_allowed(&list, "gpt-4o"));
    }

    #[test]
    fn prefix_patterns_need_the_slash() {
        let list = allowed(&["anthropic/*"]);
        assert!(is_allowed(&list, "anthropic/claude-3-5"));
        assert!(!is_allowed(&list, "anthropic"));
        assert!(!is_allowed(&list, "anthropic/"));
        assert!(!is_allowed(&list, "anthropic-compat/claude"));
    }

    #[test]
    fn star_grants_all_and_empty_grants_none() {
        assert!(is_allowed(&allowed(&["*"]), "anything"));
        assert!(!is_allowed(&[], "gpt-4o"));
    }

    #[test]
    fn malformed_patterns_are_rejected() {
        for bad in ["", "  ", "gpt*", "a/*/b", "*/x", "gpt 4", "gpt\u{7}", "/*"] {
            assert!(model_pattern(bad).is_err(), "{bad:?}");
        }
        assert!(model_name("anthropic/*").is_err());
    }
}
