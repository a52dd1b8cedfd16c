//! The GitOps file (`ias.yaml`, version 1): its types and a strict parser.
//!
//! An organization's admins declare its budget, rate limits, allowed models
//! and users in one YAML file; [`parse`] turns the file's text into a
//! [`Manifest`], or into every error the file holds, each with its line,
//! column and field path. The file format, its defaults and its error
//! messages are specified in `docs/gitops-file.md`; `docs/gitops/` has a
//! JSON Schema for editors and a commented example.
//!
//! ```
//! use ias_core::gitops::manifest;
//!
//! let text = "\
//! version: 1
//! org: team-alpha
//! budget:
//!   monthly_tokens: 5000000
//! allowed_models: [gpt-4o-mini]
//! users:
//!   - emial: Alice@Example.com
//!     role: org_admin
//! ";
//! let errors = manifest::parse(text, Some("team-alpha")).unwrap_err();
//! assert_eq!(
//!     errors.to_string(),
//!     "7:5: users[0].emial: unknown key `emial`; did you mean `email`?"
//! );
//!
//! let fixed = text.replace("emial", "email");
//! let declared = manifest::parse(&fixed, Some("team-alpha")).unwrap();
//! assert_eq!(declared.users[0].email, "alice@example.com");
//! assert_eq!(declared.budget.timezone, chrono_tz::UTC);
//! ```

use std::collections::HashMap;
use std::fmt;

use chrono_tz::Tz;
use serde::{Deserialize, Serialize};

use super::yaml::{self, Mark, Node, Resolved, Scalar, Value};
use crate::domain::Role;
use crate::error::{Error, printable};
use crate::rate::RateLimits;
use crate::{policy, validate};

/// The version of the file format that this release reads.
pub const VERSION: u32 = 1;

/// The largest file accepted, in bytes (1 MiB).
pub const MAX_FILE_BYTES: usize = 1024 * 1024;

/// An organization as its GitOps file declares it, checked and normalised.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Manifest {
    /// The file format's version; always [`VERSION`].
    pub version: u32,
    /// The organization's slug.
    pub org: String,
    /// The monthly budget.
    pub budget: DeclaredBudget,
    /// The organization's rate limits; [`RateLimits::NONE`] when none are declared.
    pub rate_limits: RateLimits,
    /// Allowed model patterns, normalised as [`policy::model_pattern`] does, sorted.
    pub allowed_models: Vec<String>,
    /// The organization's users, sorted by email.
    pub users: Vec<DeclaredUser>,
}

/// The organization's monthly budget as declared.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct DeclaredBudget {
    /// Tokens the organization may use per calendar month.
    pub monthly_tokens: i64,
    /// The time zone whose month boundaries reset the budget (`UTC` when not declared).
    #[cfg_attr(feature = "openapi", schema(value_type = String))]
    pub timezone: Tz,
}

/// One user as declared.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct DeclaredUser {
    /// The normalised email (trimmed, lowercase).
    pub email: String,
    /// `OrgAdmin` or `Member`; a file never grants `SystemAdmin`.
    pub role: Role,
    /// The user's own monthly token limit; `None` leaves only the organization's budget.
    pub monthly_token_limit: Option<i64>,
    /// The user's rate limits; [`RateLimits::NONE`] when none are declared.
    pub rate_limits: RateLimits,
}

/// One problem in a GitOps file, with where it is.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ManifestError {
    /// The line, from 1.
    pub line: usize,
    /// The column, from 1, counted in characters.
    pub column: usize,
    /// The field, such as `users[1].role`; empty for a problem with the whole file.
    pub path: String,
    /// What is wrong: lowercase, one line, user values in backticks.
    pub message: String,
}

impl fmt::Display for ManifestError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.path.is_empty() {
            write!(f, "{}:{}: {}", self.line, self.column, self.message)
        } else {
            write!(
                f,
                "{}:{}: {}: {}",
                self.line, self.column, self.path, self.message
            )
        }
    }
}

impl std::error::Error for ManifestError {}

/// Every problem found in a GitOps file; never empty.
///
/// [`parse`] returns them sorted by position; `Display` prints one per line,
/// in that order, without the file name (a caller puts it in front).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ManifestErrors(pub Vec<ManifestError>);

impl ManifestErrors {
    /// How many problems there are.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Whether there are none; never true for a list that [`parse`] returned.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The problems in the file's order.
    pub fn iter(&self) -> impl Iterator<Item = &ManifestError> {
        self.sorted().into_iter()
    }

    /// The first problem in the file's order.
    pub fn first(&self) -> Option<&ManifestError> {
        self.sorted().into_iter().next()
    }

    /// Every problem on one line, in the file's order, separated by `; `.
    pub fn one_line(&self) -> String {
        self.iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join("; ")
    }

    fn sorted(&self) -> Vec<&ManifestError> {
        let mut sorted: Vec<&ManifestError> = self.0.iter().collect();
        sorted.sort_by_key(|e| (e.line, e.column));
        sorted
    }
}

impl fmt::Display for ManifestErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, error) in self.iter().enumerate() {
            if i > 0 {
                f.write_str("\n")?;
            }
            error.fmt(f)?;
        }
        Ok(())
    }
}

impl std::error::Error for ManifestErrors {}

impl From<ManifestErrors> for Error {
    fn from(errors: ManifestErrors) -> Self {
        Error::InvalidManifest { errors }
    }
}

/// Reads a GitOps file from its bytes: at most [`MAX_FILE_BYTES`], UTF-8, then [`parse`].
pub fn parse_bytes(bytes: &[u8], expected_org: Option<&str>) -> Result<Manifest, ManifestErrors> {
    if bytes.len() > MAX_FILE_BYTES {
        return Err(too_large(bytes.len()));
    }
    match std::str::from_utf8(bytes) {
        Ok(text) => parse(text, expected_org),
        Err(err) => {
            let valid = String::from_utf8_lossy(&bytes[..err.valid_up_to()]);
            let mark = yaml::end_mark(&valid);
            let message = "the file is not valid UTF-8".to_owned();
            Err(ManifestErrors(vec![at(mark, "", message)]))
        }
    }
}

/// Reads a GitOps file: a complete [`Manifest`], or every problem in it.
///
/// With `expected_org`, the file's `org` must be that slug (the file of one
/// organization cannot declare another).
pub fn parse(text: &str, expected_org: Option<&str>) -> Result<Manifest, ManifestErrors> {
    if text.len() > MAX_FILE_BYTES {
        return Err(too_large(text.len()));
    }
    let loaded = yaml::load(text);
    let mut walker = Walker::default();
    for problem in loaded.problems {
        walker.report(problem.mark, "", problem.message);
    }
    let manifest = match &loaded.root {
        Some(root) => match unsupported_version(root) {
            Some(error) => {
                walker.errors.push(error);
                None
            }
            None => walker.manifest(root, expected_org),
        },
        None => None,
    };
    finish(manifest, walker.errors)
}

fn finish(
    manifest: Option<Manifest>,
    mut errors: Vec<ManifestError>,
) -> Result<Manifest, ManifestErrors> {
    errors.sort_by_key(|e| (e.line, e.column));
    match manifest {
        Some(manifest) if errors.is_empty() => Ok(manifest),
        _ if !errors.is_empty() => Err(ManifestErrors(errors)),
        // INVARIANT: whatever returns no value has reported why; this keeps the
        // list non-empty should a reader ever break that.
        _ => Err(ManifestErrors(vec![at(
            Mark::START,
            "",
            "the file could not be read",
        )])),
    }
}

fn too_large(len: usize) -> ManifestErrors {
    let message = format!("the file is {len} bytes; at most {MAX_FILE_BYTES} are accepted");
    ManifestErrors(vec![at(Mark::START, "", message)])
}

fn at(mark: Mark, path: &str, message: impl Into<String>) -> ManifestError {
    ManifestError {
        line: mark.line,
        column: mark.column,
        path: path.to_owned(),
        message: message.into(),
    }
}

/// A version other than 1 makes every other check meaningless: it alone is reported.
fn unsupported_version(root: &Node) -> Option<ManifestError> {
    let Value::Map(entries) = &root.value else {
        return None;
    };
    let (_, value) = entries
        .iter()
        .find(|(key, _)| key_text(key) == Some("version"))?;
    let Value::Scalar(scalar) = &value.value else {
        return None;
    };
    let is_other = scalar.resolve() == Resolved::Int
        && matches!(decimal(&scalar.text), Some(Ok(digits)) if digits != "1");
    is_other.then(|| {
        let message = format!(
            "unsupported version `{}`; this release of ias reads version {VERSION}",
            printable(&scalar.text)
        );
        at(value.mark, "version", message)
    })
}

const TOP_KEYS: &[&str] = &[
    "version",
    "org",
    "budget",
    "rate_limits",
    "allowed_models",
    "users",
];
const BUDGET_KEYS: &[&str] = &["monthly_tokens", "timezone"];
const RATE_KEYS: &[&str] = &["rpm", "tpm"];
const USER_KEYS: &[&str] = &["email", "role", "monthly_token_limit", "rate_limits"];

/// Walks the positioned tree against the schema, collecting every problem.
#[derive(Default)]
struct Walker {
    errors: Vec<ManifestError>,
}

/// The known keys of one mapping, with their values, each key once.
struct Fields<'n> {
    mark: Mark,
    entries: Vec<(&'static str, &'n Node)>,
    /// Known keys that an unknown key was reported as a misspelling of.
    suggested: Vec<&'static str>,
}

impl<'n> Fields<'n> {
    fn get(&self, key: &str) -> Option<&'n Node> {
        self.entries
            .iter()
            .find(|(name, _)| *name == key)
            .map(|(_, node)| *node)
    }
}

/// Where each user's email and each model pattern was first seen.
type FirstSeen = HashMap<String, usize>;

impl Walker {
    fn report(&mut self, mark: Mark, path: &str, message: impl Into<String>) {
        self.errors.push(at(mark, path, message));
    }

    /// Reports a core validation error, naming the value as the user wrote it.
    fn report_invalid(&mut self, node: &Node, path: &str, err: Error, written: &str) {
        let message = match err {
            Error::InvalidInput { field, reason, .. } => {
                format!("invalid {field} `{}`: {reason}", printable(written))
            }
            other => other.to_string(),
        };
        self.report(node.mark, path, message);
    }

    fn manifest(&mut self, root: &Node, expected_org: Option<&str>) -> Option<Manifest> {
        let fields = self.mapping(root, "", TOP_KEYS)?;
        let version = self
            .required(&fields, "", "version")
            .and_then(|node| self.version(node));
        let org = self
            .required(&fields, "", "org")
            .and_then(|node| self.org(node, expected_org));
        let budget = self
            .required(&fields, "", "budget")
            .and_then(|node| self.budget(node));
        let rate_limits = self.rate_limits(&fields, "");
        let allowed_models = self
            .required(&fields, "", "allowed_models")
            .and_then(|node| self.models(node));
        let users = self
            .required(&fields, "", "users")
            .and_then(|node| self.users(node));
        Some(Manifest {
            version: version?,
            org: org?,
            budget: budget?,
            rate_limits: rate_limits?,
            allowed_models: allowed_models?,
            users: users?,
        })
    }

    fn version(&mut self, node: &Node) -> Option<u32> {
        // Any other whole number was refused before the walk.
        self.integer(node, "version").map(|_| VERSION)
    }

    fn org(&mut self, node: &Node, expected: Option<&str>) -> Option<String> {
        let text = self.string(node, "org")?;
        let slug = match validate::slug(text) {
            Ok(slug) => slug,
            Err(err) => {
                self.report_invalid(node, "org", err, text);
                return None;
            }
        };
        match expected {
            Some(expected) if expected != slug => {
                let message = format!(
                    "org `{slug}` does not match the organization this file belongs to, `{}`",
                    printable(expected)
                );
                self.report(node.mark, "org", message);
                None
            }
            _ => Some(slug),
        }
    }

    fn budget(&mut self, node: &Node) -> Option<DeclaredBudget> {
        let fields = self.mapping(node, "budget", BUDGET_KEYS)?;
        let path = "budget.monthly_tokens";
        let monthly_tokens = self
            .required(&fields, "budget", "monthly_tokens")
            .and_then(|node| self.tokens(node, path, "monthly_tokens"));
        let timezone = self.timezone(&fields);
        Some(DeclaredBudget {
            monthly_tokens: monthly_tokens?,
            timezone: timezone?,
        })
    }

    fn timezone(&mut self, fields: &Fields<'_>) -> Option<Tz> {
        let path = "budget.timezone";
        let Some(node) = self.optional(fields, "timezone", path) else {
            return Some(Tz::UTC);
        };
        let text = self.string(node, path)?;
        match validate::timezone(text) {
            Ok(tz) => Some(tz),
            Err(err) => {
                self.report_invalid(node, path, err, text);
                None
            }
        }
    }

    /// The `rate_limits` of `fields` (under `parent`); none when absent or null.
    fn rate_limits(&mut self, fields: &Fields<'_>, parent: &str) -> Option<RateLimits> {
        let path = join(parent, "rate_limits");
        let Some(node) = self.optional(fields, "rate_limits", &path) else {
            return Some(RateLimits::NONE);
        };
        let limits = self.mapping(node, &path, RATE_KEYS)?;
        let rpm = self.rate(&limits, &path, "rpm");
        let tpm = self.rate(&limits, &path, "tpm");
        Some(RateLimits {
            rpm: rpm?,
            tpm: tpm?,
        })
    }

    fn rate(&mut self, fields: &Fields<'_>, parent: &str, key: &str) -> Option<Option<i64>> {
        let path = join(parent, key);
        let Some(node) = self.optional(fields, key, &path) else {
            return Some(None);
        };
        let digits = self.integer(node, &path)?;
        // Out of the i64 range: saturate, so the range check names the problem.
        let value = digits.parse::<i64>().unwrap_or(if digits.starts_with('-') {
            i64::MIN
        } else {
            i64::MAX
        });
        let limits = if key == "rpm" {
            RateLimits::requests(value)
        } else {
            RateLimits::tokens(value)
        };
        match limits.validated() {
            Ok(_) => Some(Some(value)),
            Err(err) => {
                self.report_invalid(node, &path, err, digits);
                None
            }
        }
    }

    fn models(&mut self, node: &Node) -> Option<Vec<String>> {
        let items = self.list(node, "allowed_models")?;
        let mut first_seen = FirstSeen::new();
        let mut models = Vec::with_capacity(items.len());
        let mut complete = true;
        for (i, item) in items.iter().enumerate() {
            let path = format!("allowed_models[{i}]");
            match self.model(item, &path, &mut first_seen) {
                Some(model) => models.push(model),
                None => complete = false,
            }
        }
        models.sort();
        complete.then_some(models)
    }

    fn model(&mut self, node: &Node, path: &str, first_seen: &mut FirstSeen) -> Option<String> {
        let text = self.string(node, path)?;
        let pattern = match policy::model_pattern(text) {
            Ok(pattern) => pattern,
            Err(err) => {
                self.report_invalid(node, path, err, text);
                return None;
            }
        };
        if let Some(line) = first_seen.get(&pattern) {
            let message =
                format!("duplicate model pattern `{pattern}`; first given at line {line}");
            self.report(node.mark, path, message);
            return None;
        }
        first_seen.insert(pattern.clone(), node.mark.line);
        Some(pattern)
    }

    fn users(&mut self, node: &Node) -> Option<Vec<DeclaredUser>> {
        let items = self.list(node, "users")?;
        let mut first_seen = FirstSeen::new();
        let mut users = Vec::with_capacity(items.len());
        let mut complete = true;
        for (i, item) in items.iter().enumerate() {
            let path = format!("users[{i}]");
            match self.user(item, &path, &mut first_seen) {
                Some(user) => users.push(user),
                None => complete = false,
            }
        }
        users.sort_by(|a, b| a.email.cmp(&b.email));
        complete.then_some(users)
    }

    fn user(
        &mut self,
        node: &Node,
        path: &str,
        first_seen: &mut FirstSeen,
    ) -> Option<DeclaredUser> {
        let fields = self.mapping(node, path, USER_KEYS)?;
        let email = self
            .required(&fields, path, "email")
            .and_then(|node| self.email(node, &join(path, "email"), first_seen));
        let role = self
            .required(&fields, path, "role")
            .and_then(|node| self.role(node, &join(path, "role")));
        let limit_path = join(path, "monthly_token_limit");
        let monthly_token_limit = match self.optional(&fields, "monthly_token_limit", &limit_path) {
            None => Some(None),
            Some(node) => self
                .tokens(node, &limit_path, "monthly_token_limit")
                .map(Some),
        };
        let rate_limits = self.rate_limits(&fields, path);
        Some(DeclaredUser {
            email: email?,
            role: role?,
            monthly_token_limit: monthly_token_limit?,
            rate_limits: rate_limits?,
        })
    }

    fn email(&mut self, node: &Node, path: &str, first_seen: &mut FirstSeen) -> Option<String> {
        let text = self.string(node, path)?;
        let email = match validate::email(text) {
            Ok(email) => email,
            Err(err) => {
                self.report_invalid(node, path, err, text);
                return None;
            }
        };
        if let Some(line) = first_seen.get(&email) {
            let message = format!("duplicate user `{email}`; first declared at line {line}");
            self.report(node.mark, path, message);
            return None;
        }
        first_seen.insert(email.clone(), node.mark.line);
        Some(email)
    }

    fn role(&mut self, node: &Node, path: &str) -> Option<Role> {
        let text = self.string(node, path)?;
        let message = match text {
            "org_admin" => return Some(Role::OrgAdmin),
            "member" => return Some(Role::Member),
            "system_admin" => "role `system_admin` can only be given with `ias-admin`, \
                               never by a GitOps file"
                .to_owned(),
            other => format!(
                "unknown role `{}`; expected `org_admin` or `member`",
                printable(other)
            ),
        };
        self.report(node.mark, path, message);
        None
    }

    /// A token amount: a whole number from 0 to [`validate::MAX_TOKENS`].
    fn tokens(&mut self, node: &Node, path: &str, field: &'static str) -> Option<i64> {
        let digits = self.integer(node, path)?;
        match validate::parse_token_amount(field, digits) {
            Ok(amount) => Some(amount),
            Err(err) => {
                self.report_invalid(node, path, err, digits);
                None
            }
        }
    }

    /// The value of a required key, or a report that it is missing (unless
    /// an unknown key was reported as a misspelling of it).
    fn required<'n>(&mut self, fields: &Fields<'n>, parent: &str, key: &str) -> Option<&'n Node> {
        let node = fields.get(key);
        if node.is_none() && !fields.suggested.contains(&key) {
            let message = format!("missing required key `{key}`");
            self.report(fields.mark, &join(parent, key), message);
        }
        node
    }

    /// The value of an optional key; `None` when it is absent or null.
    fn optional<'n>(&mut self, fields: &Fields<'n>, key: &str, path: &str) -> Option<&'n Node> {
        let node = fields.get(key)?;
        match &node.value {
            Value::Scalar(scalar) if scalar.resolve() == Resolved::Null => {
                // Its reader is not called: report a tag or an anchor here.
                self.readable(node, path);
                None
            }
            _ => Some(node),
        }
    }

    /// Reports tags, anchors and aliases; false for an alias, which has no value to read.
    fn readable(&mut self, node: &Node, path: &str) -> bool {
        if let Some(tag) = &node.tag {
            let message = format!(
                "tags such as `{}` are not accepted; remove it, the key decides the type",
                printable(tag)
            );
            self.report(node.mark, path, message);
        }
        if node.anchored {
            let message = "anchors (`&name`) are not accepted; write each value out";
            self.report(node.mark, path, message);
        }
        match node.value {
            Value::Alias => {
                let message = "aliases (`*name`) are not accepted; write the value out";
                self.report(node.mark, path, message);
                false
            }
            // Reported when the YAML was read.
            Value::TooDeep => false,
            _ => true,
        }
    }

    /// Checks a mapping's keys against `known`: unknown keys and repeated keys are reported.
    fn mapping<'n>(
        &mut self,
        node: &'n Node,
        path: &str,
        known: &[&'static str],
    ) -> Option<Fields<'n>> {
        if !self.readable(node, path) {
            return None;
        }
        let Value::Map(entries) = &node.value else {
            self.wrong_type(node, path, "a mapping");
            return None;
        };
        let mut fields = Fields {
            mark: node.mark,
            entries: Vec::with_capacity(entries.len()),
            suggested: Vec::new(),
        };
        let mut first_lines: Vec<(&'static str, usize)> = Vec::new();
        for (key, value) in entries {
            let Some(name) = self.key(key, path) else {
                continue;
            };
            let key_path = join(path, &printable(name));
            let Some(known_name) = known.iter().copied().find(|k| *k == name) else {
                let suggestion = closest(name, known);
                fields.suggested.extend(suggestion);
                self.report(key.mark, &key_path, unknown_key(name, suggestion, known));
                continue;
            };
            if let Some((_, line)) = first_lines.iter().find(|(k, _)| *k == known_name) {
                let message = format!("duplicate key `{known_name}`; first given at line {line}");
                self.report(key.mark, &key_path, message);
                continue;
            }
            first_lines.push((known_name, key.mark.line));
            fields.entries.push((known_name, value));
        }
        Some(fields)
    }

    /// A key's text; a key must be a scalar.
    fn key<'n>(&mut self, key: &'n Node, parent: &str) -> Option<&'n str> {
        if !self.readable(key, parent) {
            return None;
        }
        match &key.value {
            Value::Scalar(scalar) => Some(&scalar.text),
            _ => {
                let message = format!("expected a key name, found {}", describe(key));
                self.report(key.mark, parent, message);
                None
            }
        }
    }

    fn list<'n>(&mut self, node: &'n Node, path: &str) -> Option<&'n [Node]> {
        if !self.readable(node, path) {
            return None;
        }
        match &node.value {
            Value::List(items) => Some(items),
            _ => {
                self.wrong_type(node, path, "a list");
                None
            }
        }
    }

    /// Text: a quoted, block or plain scalar that YAML 1.2 does not read as
    /// null, a boolean or a number.
    fn string<'n>(&mut self, node: &'n Node, path: &str) -> Option<&'n str> {
        if !self.readable(node, path) {
            return None;
        }
        match &node.value {
            Value::Scalar(scalar) if scalar.resolve() == Resolved::Str => Some(&scalar.text),
            _ => {
                self.wrong_type(node, path, "a string");
                None
            }
        }
    }

    /// A whole number in decimal digits; returns them without a leading `+`.
    fn integer<'n>(&mut self, node: &'n Node, path: &str) -> Option<&'n str> {
        if !self.readable(node, path) {
            return None;
        }
        let Value::Scalar(scalar) = &node.value else {
            self.wrong_type(node, path, "a whole number");
            return None;
        };
        let shown = printable(&scalar.text);
        let message = match scalar.resolve() {
            Resolved::Int => match decimal(&scalar.text) {
                Some(Ok(digits)) => return Some(digits),
                Some(Err(())) => format!("`{shown}` has a leading zero; write it without"),
                None => format!("`{shown}` is not in decimal; write it in decimal digits"),
            },
            Resolved::Float => format!("`{shown}` is not a whole number"),
            _ => {
                self.wrong_type(node, path, "a whole number");
                return None;
            }
        };
        self.report(node.mark, path, message);
        None
    }

    fn wrong_type(&mut self, node: &Node, path: &str, expected: &str) {
        let mut message = format!("expected {expected}, found {}", describe(node));
        if let Value::Scalar(scalar) = &node.value {
            let resolved = scalar.resolve();
            let hint = match expected {
                "a whole number" if !scalar.plain && decimal(scalar.text.trim()).is_some() => {
                    "; remove the quotes"
                }
                "a list" if resolved == Resolved::Null => "; write `[]` for an empty list",
                "a string"
                    if matches!(resolved, Resolved::Bool | Resolved::Int | Resolved::Float) =>
                {
                    "; put it in quotes to use it as text"
                }
                _ => "",
            };
            message.push_str(hint);
        }
        self.report(node.mark, path, message);
    }
}

/// What a node is, for a wrong-type message.
fn describe(node: &Node) -> String {
    match &node.value {
        Value::Map(_) => "a mapping".to_owned(),
        Value::List(_) => "a list".to_owned(),
        Value::Alias => "an alias".to_owned(),
        Value::TooDeep => "a part nested too deep".to_owned(),
        Value::Scalar(scalar) => describe_scalar(scalar),
    }
}

fn describe_scalar(scalar: &Scalar) -> String {
    let shown = printable(&scalar.text);
    match scalar.resolve() {
        Resolved::Null => "null".to_owned(),
        Resolved::Bool => format!("the boolean `{shown}`"),
        Resolved::Int | Resolved::Float => format!("the number `{shown}`"),
        Resolved::Str if scalar.plain => format!("the string `{shown}`"),
        Resolved::Str => format!("the quoted string `{shown}`"),
    }
}

/// The digits of a YAML 1.2 decimal integer without its `+`; `Err` for a
/// leading zero, `None` for anything else (hex, octal, not a number).
///
/// A leading zero is refused: YAML 1.1 readers take `010` as octal 8.
fn decimal(text: &str) -> Option<Result<&str, ()>> {
    let unsigned = text.strip_prefix('+').unwrap_or(text);
    let digits = unsigned.strip_prefix('-').unwrap_or(unsigned);
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    if digits.len() > 1 && digits.starts_with('0') {
        return Some(Err(()));
    }
    Some(Ok(unsigned))
}

fn key_text(node: &Node) -> Option<&str> {
    match &node.value {
        Value::Scalar(scalar) => Some(&scalar.text),
        _ => None,
    }
}

fn join(parent: &str, key: &str) -> String {
    if parent.is_empty() {
        key.to_owned()
    } else {
        format!("{parent}.{key}")
    }
}

/// The known key a small edit away from `name`, if any.
fn closest(name: &str, known: &[&'static str]) -> Option<&'static str> {
    let lowered = name.to_lowercase();
    let allowed = (name.chars().count() / 3).clamp(1, 2);
    known
        .iter()
        .map(|k| (edit_distance(&lowered, k), *k))
        .filter(|(distance, _)| *distance <= allowed)
        .min_by_key(|(distance, _)| *distance)
        .map(|(_, k)| k)
}

/// "unknown key", with the suggestion, or else every known key.
fn unknown_key(name: &str, suggestion: Option<&str>, known: &[&str]) -> String {
    let shown = printable(name);
    match suggestion {
        Some(suggestion) => format!("unknown key `{shown}`; did you mean `{suggestion}`?"),
        None => {
            let names: Vec<String> = known.iter().map(|k| format!("`{k}`")).collect();
            format!(
                "unknown key `{shown}`; expected one of {}",
                names.join(", ")
            )
        }
    }
}

/// Edits (insert, delete, replace, swap two neighbours) from `a` to `b`.
fn edit_distance(a: &str, b: &str) -> usize {
    let a: Vec<char> = a.chars().collect();
    let b: Vec<char> = b.chars().collect();
    // Rows i-2, i-1 and i of the table of distances between prefixes.
    let mut before: Vec<usize> = vec![0; b.len() + 1];
    let mut previous: Vec<usize> = (0..=b.len()).collect();
    let mut current: Vec<usize> = vec![0; b.len() + 1];
    for i in 1..=a.len() {
        current[0] = i;
        for j in 1..=b.len() {
            let cost = usize::from(a[i - 1] != b[j - 1]);
            let mut best = (previous[j] + 1)
                .min(current[j - 1] + 1)
                .min(previous[j - 1] + cost);
            if i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1] {
                best = best.min(before[j - 2] + 1);
            }
            current[j] = best;
        }
        std::mem::swap(&mut before, &mut previous);
        std::mem::swap(&mut previous, &mut current);
    }
    previous[b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The example of the format's specification, line by line as numbered there.
    const BRIEF: &str = "\
version: 1
org: team-alpha
budget:
  monthly_tokens: 5000000
  timezone: Europe/Berlin
rate_limits: {rpm: 600, tpm: 200000}
allowed_models: [gpt-4o-mini, \"anthropic/*\"]
users:
  - email: alice@example.com
    role: org_admin
    monthly_token_limit: 1000000
  - email: bob@example.com
    role: member
    monthly_token_limit: null   # only the org budget applies
    rate_limits: {rpm: 60}
";

    /// The smallest valid file.
    const MINIMAL: &str = "\
version: 1
org: team-alpha
budget: {monthly_tokens: 1000}
allowed_models: []
users: []
";

    /// Every error of `text`, as printed.
    fn errors(text: &str) -> Vec<String> {
        match parse(text, None) {
            Ok(manifest) => panic!("expected errors, parsed {manifest:?}"),
            Err(errors) => errors.iter().map(ToString::to_string).collect(),
        }
    }

    /// The one error of `text`, as printed.
    fn error(text: &str) -> String {
        let all = errors(text);
        assert_eq!(all.len(), 1, "{all:#?}");
        all[0].clone()
    }

    /// `text` with `from` (which must occur) replaced by `to`.
    fn edit(text: &str, from: &str, to: &str) -> String {
        assert!(text.contains(from), "{from:?} not in the text");
        text.replacen(from, to, 1)
    }

    fn ok(text: &str) -> Manifest {
        match parse(text, None) {
            Ok(manifest) => manifest,
            Err(errors) => panic!("{errors}"),
        }
    }

    #[test]
    fn the_specification_example_parses() {
        let manifest = parse(BRIEF, Some("team-alpha")).unwrap();
        let expected = Manifest {
            version: 1,
            org: "team-alpha".to_owned(),
            budget: DeclaredBudget {
                monthly_tokens: 5_000_000,
                timezone: chrono_tz::Europe::Berlin,
            },
            rate_limits: RateLimits {
                rpm: Some(600),
                tpm: Some(200_000),
            },
            allowed_models: vec!["anthropic/*".to_owned(), "gpt-4o-mini".to_owned()],
            users: vec![
                DeclaredUser {
                    email: "alice@example.com".to_owned(),
                    role: Role::OrgAdmin,
                    monthly_token_limit: Some(1_000_000),
                    rate_limits: RateLimits::NONE,
                },
                DeclaredUser {
                    email: "bob@example.com".to_owned(),
                    role: Role::Member,
                    monthly_token_limit: None,
                    rate_limits: RateLimits::requests(60),
                },
            ],
        };
        assert_eq!(manifest, expected);
    }

    #[test]
    fn the_published_example_parses() {
        let text = include_str!("../../../docs/gitops/ias.example.yaml");
        let manifest = parse(text, Some("team-alpha")).unwrap();
        assert_eq!(manifest, parse(BRIEF, None).unwrap());
    }

    /// The files that the JSON Schema must reject too (`tests/python/test_gitops_schema.py`).
    #[test]
    fn the_files_the_schema_rejects_are_rejected() {
        let cases = [
            (
                include_str!("../../../tests/gitops/rejected/unknown_key.yaml"),
                "6:3: budget.currency: unknown key `currency`; \
                 expected one of `monthly_tokens`, `timezone`",
            ),
            (
                include_str!("../../../tests/gitops/rejected/wrong_type.yaml"),
                "5:19: budget.monthly_tokens: expected a whole number, \
                 found the quoted string `5000000`; remove the quotes",
            ),
            (
                include_str!("../../../tests/gitops/rejected/negative_number.yaml"),
                "10:26: users[0].monthly_token_limit: \
                 invalid monthly_token_limit `-1`: must not be negative",
            ),
            (
                include_str!("../../../tests/gitops/rejected/negative_rate.yaml"),
                "7:8: rate_limits.rpm: invalid rpm `-60`: \
                 must be between 1 and 1000000000 (or none to remove the limit)",
            ),
            (
                include_str!("../../../tests/gitops/rejected/system_admin.yaml"),
                "9:11: users[0].role: role `system_admin` can only be given with `ias-admin`, \
                 never by a GitOps file",
            ),
        ];
        for (text, expected) in cases {
            assert_eq!(error(text), expected);
        }
    }

    #[test]
    fn defaults_fill_what_is_optional() {
        let manifest = ok(MINIMAL);
        assert_eq!(manifest.budget.timezone, Tz::UTC);
        assert_eq!(manifest.rate_limits, RateLimits::NONE);
        assert!(manifest.allowed_models.is_empty());
        assert!(manifest.users.is_empty());

        let nulls = "\
version: 1
org: team-alpha
budget: {monthly_tokens: 0, timezone: null}
rate_limits:
allowed_models: []
users:
  - {email: a@example.com, role: member, rate_limits: {rpm: ~, tpm: null}}
";
        let manifest = ok(nulls);
        assert_eq!(manifest.budget.timezone, Tz::UTC);
        assert_eq!(manifest.rate_limits, RateLimits::NONE);
        assert_eq!(manifest.users[0].rate_limits, RateLimits::NONE);
        assert_eq!(manifest.users[0].monthly_token_limit, None);
    }

    #[test]
    fn models_and_users_are_normalised_and_sorted() {
        let text = "\
version: 1
org: team-alpha
budget: {monthly_tokens: 1}
allowed_models: [' OpenAI/* ', Claude-3, '*']
users:
  - {email: \" Zoe@Example.COM\", role: member}
  - {email: amy@example.com, role: org_admin}
";
        let manifest = ok(text);
        assert_eq!(manifest.allowed_models, ["*", "claude-3", "openai/*"]);
        let emails: Vec<&str> = manifest.users.iter().map(|u| u.email.as_str()).collect();
        assert_eq!(emails, ["amy@example.com", "zoe@example.com"]);
    }

    #[test]
    fn version_must_be_one() {
        assert_eq!(
            error(&edit(MINIMAL, "version: 1\n", "")),
            "1:1: version: missing required key `version`"
        );
        assert_eq!(
            error(&edit(MINIMAL, "version: 1", "version: \"1\"")),
            "1:10: version: expected a whole number, found the quoted string `1`; remove the quotes"
        );
        assert_eq!(
            error(&edit(MINIMAL, "version: 1", "version: 1.0")),
            "1:10: version: `1.0` is not a whole number"
        );
        assert_eq!(ok(&edit(MINIMAL, "version: 1", "version: +1")).version, 1);
    }

    #[test]
    fn another_version_is_the_only_error_reported() {
        let text = edit(MINIMAL, "version: 1", "version: 2\nquotas: {}");
        assert_eq!(
            error(&text),
            "1:10: version: unsupported version `2`; this release of ias reads version 1"
        );
    }

    #[test]
    fn org_is_a_slug() {
        assert_eq!(
            error(&edit(MINIMAL, "team-alpha", "Team_Alpha")),
            "2:6: org: invalid slug `Team_Alpha`: may contain only lowercase letters, digits and `-`"
        );
        assert_eq!(
            error(&edit(MINIMAL, "org: team-alpha\n", "")),
            "1:1: org: missing required key `org`"
        );
        assert_eq!(
            error(&edit(MINIMAL, "team-alpha", "2024")),
            "2:6: org: expected a string, found the number `2024`; put it in quotes to use it as text"
        );
        assert_eq!(ok(&edit(MINIMAL, "team-alpha", "\"2024\"")).org, "2024");
    }

    #[test]
    fn org_must_be_the_expected_one() {
        assert!(parse(MINIMAL, Some("team-alpha")).is_ok());
        let errors = parse(MINIMAL, Some("team-beta")).unwrap_err();
        assert_eq!(
            errors.to_string(),
            "2:6: org: org `team-alpha` does not match the organization this file belongs to, `team-beta`"
        );
    }

    #[test]
    fn yaml_1_1_words_are_strings_not_booleans() {
        assert_eq!(ok(&edit(MINIMAL, "team-alpha", "yes")).org, "yes");
        assert_eq!(ok(&edit(MINIMAL, "team-alpha", "off")).org, "off");
        assert_eq!(
            error(&edit(MINIMAL, "monthly_tokens: 1000", "monthly_tokens: on")),
            "3:26: budget.monthly_tokens: expected a whole number, found the string `on`"
        );
        assert_eq!(
            error(&edit(MINIMAL, "team-alpha", "true")),
            "2:6: org: expected a string, found the boolean `true`; put it in quotes to use it as text"
        );
    }

    #[test]
    fn monthly_tokens_is_a_whole_number_in_range() {
        let with = |value: &str| error(&edit(MINIMAL, "1000}", &format!("{value}}}")));
        assert_eq!(
            with("-5"),
            "3:26: budget.monthly_tokens: invalid monthly_tokens `-5`: must not be negative"
        );
        assert_eq!(
            with("\"5000\""),
            "3:26: budget.monthly_tokens: expected a whole number, found the quoted string `5000`; remove the quotes"
        );
        assert_eq!(
            with("1e6"),
            "3:26: budget.monthly_tokens: `1e6` is not a whole number"
        );
        assert_eq!(
            with("2.5"),
            "3:26: budget.monthly_tokens: `2.5` is not a whole number"
        );
        assert_eq!(
            with("1000000000000001"),
            "3:26: budget.monthly_tokens: invalid monthly_tokens `1000000000000001`: must be at most 1000000000000000"
        );
        assert_eq!(
            with("99999999999999999999"),
            "3:26: budget.monthly_tokens: invalid monthly_tokens `99999999999999999999`: must be at most 1000000000000000"
        );
        assert_eq!(
            with("0x10"),
            "3:26: budget.monthly_tokens: `0x10` is not in decimal; write it in decimal digits"
        );
        assert_eq!(
            with("010"),
            "3:26: budget.monthly_tokens: `010` has a leading zero; write it without"
        );
        assert_eq!(
            with("5_000"),
            "3:26: budget.monthly_tokens: expected a whole number, found the string `5_000`"
        );
        assert_eq!(
            with("[1]"),
            "3:26: budget.monthly_tokens: expected a whole number, found a list"
        );
        assert_eq!(
            with("null"),
            "3:26: budget.monthly_tokens: expected a whole number, found null"
        );
        let max = ok(&edit(MINIMAL, "1000}", "1000000000000000}"));
        assert_eq!(max.budget.monthly_tokens, validate::MAX_TOKENS);
    }

    #[test]
    fn budget_needs_monthly_tokens_and_a_real_timezone() {
        assert_eq!(
            error(&edit(MINIMAL, "{monthly_tokens: 1000}", "{timezone: UTC}")),
            "3:9: budget.monthly_tokens: missing required key `monthly_tokens`"
        );
        assert_eq!(
            error(&edit(MINIMAL, "budget: {monthly_tokens: 1000}\n", "")),
            "1:1: budget: missing required key `budget`"
        );
        assert_eq!(
            error(&edit(MINIMAL, "1000}", "1000, timezone: Mars/Olympus}")),
            "3:42: budget.timezone: invalid timezone `Mars/Olympus`: not an IANA time zone name"
        );
        assert_eq!(
            error(&edit(MINIMAL, "{monthly_tokens: 1000}", "5000")),
            "3:9: budget: expected a mapping, found the number `5000`"
        );
    }

    #[test]
    fn rate_limits_are_checked_like_the_api() {
        let text = edit(BRIEF, "{rpm: 600, tpm: 200000}", "{rpm: 0, tpm: -1}");
        assert_eq!(
            errors(&text),
            [
                "6:20: rate_limits.rpm: invalid rpm `0`: must be between 1 and 1000000000 (or none to remove the limit)",
                "6:28: rate_limits.tpm: invalid tpm `-1`: must be between 1 and 1000000000 (or none to remove the limit)",
            ]
        );
        assert_eq!(
            error(&edit(BRIEF, "{rpm: 60}", "{rpm: 1000000001}")),
            "15:24: users[1].rate_limits.rpm: invalid rpm `1000000001`: must be between 1 and 1000000000 (or none to remove the limit)"
        );
        assert_eq!(
            error(&edit(BRIEF, "{rpm: 60}", "{rps: 60}")),
            "15:19: users[1].rate_limits.rps: unknown key `rps`; did you mean `rpm`?"
        );
        assert_eq!(
            error(&edit(BRIEF, "{rpm: 60}", "60")),
            "15:18: users[1].rate_limits: expected a mapping, found the number `60`"
        );
        let manifest = ok(&edit(BRIEF, "tpm: 200000", "tpm: null"));
        assert_eq!(manifest.rate_limits, RateLimits::requests(600));
    }

    #[test]
    fn allowed_models_must_be_present_valid_and_distinct() {
        assert_eq!(
            error(&edit(MINIMAL, "allowed_models: []\n", "")),
            "1:1: allowed_models: missing required key `allowed_models`"
        );
        assert_eq!(
            error(&edit(MINIMAL, "allowed_models: []", "allowed_models:")),
            "4:15: allowed_models: expected a list, found null; write `[]` for an empty list"
        );
        assert_eq!(
            error(&edit(BRIEF, "gpt-4o-mini,", "gpt*,")),
            "7:18: allowed_models[0]: invalid model `gpt*`: `*` is allowed only alone or as a final `/*`"
        );
        assert_eq!(
            error(&edit(
                BRIEF,
                "\"anthropic/*\"]",
                "\"anthropic/*\", ' GPT-4o-Mini']"
            )),
            "7:46: allowed_models[2]: duplicate model pattern `gpt-4o-mini`; first given at line 7"
        );
        assert_eq!(
            error(&edit(BRIEF, "gpt-4o-mini,", "{name: gpt},")),
            "7:18: allowed_models[0]: expected a string, found a mapping"
        );
    }

    #[test]
    fn users_must_be_present_and_may_be_empty() {
        assert_eq!(
            error(&edit(MINIMAL, "users: []\n", "")),
            "1:1: users: missing required key `users`"
        );
        assert_eq!(
            error(&edit(MINIMAL, "users: []", "users: {}")),
            "5:8: users: expected a list, found a mapping"
        );
        assert_eq!(
            error(&edit(MINIMAL, "users: []", "users: [alice@example.com]")),
            "5:9: users[0]: expected a mapping, found the string `alice@example.com`"
        );
    }

    #[test]
    fn system_admin_is_refused_and_other_roles_are_unknown() {
        assert_eq!(
            error(&edit(BRIEF, "role: member", "role: system_admin")),
            "13:11: users[1].role: role `system_admin` can only be given with `ias-admin`, never by a GitOps file"
        );
        assert_eq!(
            error(&edit(BRIEF, "role: member", "role: owner")),
            "13:11: users[1].role: unknown role `owner`; expected `org_admin` or `member`"
        );
        assert_eq!(
            error(&edit(BRIEF, "role: member", "role: Member")),
            "13:11: users[1].role: unknown role `Member`; expected `org_admin` or `member`"
        );
        assert_eq!(
            error(&edit(BRIEF, "    role: member\n", "")),
            "12:5: users[1].role: missing required key `role`"
        );
    }

    #[test]
    fn emails_are_checked_and_unique_in_any_case() {
        assert_eq!(
            error(&edit(BRIEF, "bob@example.com", "Alice@EXAMPLE.com")),
            "12:12: users[1].email: duplicate user `alice@example.com`; first declared at line 9"
        );
        assert_eq!(
            error(&edit(BRIEF, "bob@example.com", "bob")),
            "12:12: users[1].email: invalid email `bob`: must contain `@`"
        );
        assert_eq!(
            error(&edit(
                BRIEF,
                "  - email: bob@example.com\n    role",
                "  - role"
            )),
            "12:5: users[1].email: missing required key `email`"
        );
    }

    #[test]
    fn user_limits_are_token_amounts() {
        assert_eq!(
            error(&edit(BRIEF, "1000000\n", "-1\n")),
            "11:26: users[0].monthly_token_limit: invalid monthly_token_limit `-1`: must not be negative"
        );
        assert_eq!(
            error(&edit(BRIEF, "1000000\n", "\"1000000\"\n")),
            "11:26: users[0].monthly_token_limit: expected a whole number, found the quoted string `1000000`; remove the quotes"
        );
        let manifest = ok(&edit(
            BRIEF,
            "    monthly_token_limit: null",
            "    monthly_token_limit: 0",
        ));
        assert_eq!(manifest.users[1].monthly_token_limit, Some(0));
    }

    #[test]
    fn unknown_keys_are_errors_with_a_suggestion_when_close() {
        // The misspelt key is not also reported missing.
        assert_eq!(
            error(&edit(BRIEF, "budget:", "budjet:")),
            "3:1: budjet: unknown key `budjet`; did you mean `budget`?"
        );
        assert_eq!(
            error(&edit(BRIEF, "    role: member", "    Role: member")),
            "13:5: users[1].Role: unknown key `Role`; did you mean `role`?"
        );
        assert_eq!(
            error(&edit(
                MINIMAL,
                "users: []",
                "users: []
owner: bob"
            )),
            "6:1: owner: unknown key `owner`; expected one of `version`, `org`, `budget`, \
             `rate_limits`, `allowed_models`, `users`"
        );
    }

    #[test]
    fn duplicate_keys_are_errors() {
        assert_eq!(
            error(&edit(MINIMAL, "users: []", "users: []\norg: team-beta")),
            "6:1: org: duplicate key `org`; first given at line 2"
        );
        assert_eq!(
            error(&edit(BRIEF, "{rpm: 60}", "{rpm: 60, rpm: 70}")),
            "15:28: users[1].rate_limits.rpm: duplicate key `rpm`; first given at line 15"
        );
    }

    #[test]
    fn tags_anchors_and_aliases_are_refused() {
        assert_eq!(
            error(&edit(MINIMAL, "1000}", "!!int 1000}")),
            "3:26: budget.monthly_tokens: tags such as `!!int` are not accepted; remove it, the key decides the type"
        );
        let text = edit(BRIEF, "{rpm: 60}", "*limits");
        let text = edit(&text, "rate_limits: {rpm", "rate_limits: &limits {rpm");
        assert_eq!(
            errors(&text),
            [
                "6:14: rate_limits: anchors (`&name`) are not accepted; write each value out",
                "15:18: users[1].rate_limits: aliases (`*name`) are not accepted; write the value out",
            ]
        );
    }

    #[test]
    fn a_tag_on_a_null_or_a_key_is_refused_too() {
        let text = edit(MINIMAL, "1000}", "1000, timezone: !!null}");
        assert_eq!(
            error(&text),
            "3:42: budget.timezone: tags such as `!!null` are not accepted; remove it, the key decides the type"
        );
        assert_eq!(
            error(&edit(MINIMAL, "org:", "!!str org:")),
            "2:1: tags such as `!!str` are not accepted; remove it, the key decides the type"
        );
    }

    #[test]
    fn errors_print_in_file_order_one_per_line() {
        let error = |line, column, path: &str| ManifestError {
            line,
            column,
            path: path.to_owned(),
            message: "bad".to_owned(),
        };
        let errors = ManifestErrors(vec![
            error(9, 1, "users"),
            error(2, 7, ""),
            error(2, 5, "org"),
        ]);
        assert_eq!(
            errors.to_string(),
            "2:5: org: bad\n2:7: bad\n9:1: users: bad"
        );
        assert_eq!(errors.first(), Some(&error(2, 5, "org")));
    }

    #[test]
    fn a_byte_order_mark_crlf_and_a_yaml_1_1_directive_change_nothing() {
        let expected = ok(MINIMAL);
        assert_eq!(ok(&format!("\u{feff}{MINIMAL}")), expected);
        assert_eq!(ok(&MINIMAL.replace('\n', "\r\n")), expected);
        let directive = format!("%YAML 1.1\n---\n{}", edit(MINIMAL, "team-alpha", "yes"));
        assert_eq!(ok(&directive).org, "yes");
    }

    #[test]
    fn only_one_document_is_accepted() {
        let text = format!("{MINIMAL}---\n{MINIMAL}");
        assert_eq!(
            error(&text),
            "6:1: a second YAML document; the file must hold exactly one"
        );
        assert!(parse(&format!("---\n{MINIMAL}...\n"), None).is_ok());
    }

    #[test]
    fn an_empty_file_is_an_error() {
        let message = "1:1: the file is empty; it must declare `version`, `org`, `budget`, \
                       `allowed_models` and `users`";
        for text in ["", "\n\n", "# nothing yet\n", "---\n", "---\n...\n"] {
            assert_eq!(error(text), message, "{text:?}");
        }
        assert_eq!(
            error("- version: 1\n"),
            "1:1: expected a mapping, found a list"
        );
        assert_eq!(error("~\n"), "1:1: expected a mapping, found null");
    }

    #[test]
    fn a_syntax_error_is_reported_where_it_is() {
        assert_eq!(
            error(&edit(
                MINIMAL,
                "allowed_models: []",
                "allowed_models: [a, b"
            )),
            "5:6: invalid YAML: illegal placement of ':' indicator"
        );
    }

    #[test]
    fn size_and_encoding_are_checked_first() {
        let big = format!("{MINIMAL}#{}\n", "x".repeat(MAX_FILE_BYTES));
        let expected = format!(
            "1:1: the file is {} bytes; at most 1048576 are accepted",
            big.len()
        );
        assert_eq!(
            parse_bytes(big.as_bytes(), None).unwrap_err().to_string(),
            expected
        );
        assert_eq!(parse(&big, None).unwrap_err().to_string(), expected);

        let padded = format!(
            "{MINIMAL}#{}\n",
            "x".repeat(MAX_FILE_BYTES - MINIMAL.len() - 2)
        );
        assert_eq!(padded.len(), MAX_FILE_BYTES);
        assert!(parse_bytes(padded.as_bytes(), None).is_ok());

        let mut bytes = MINIMAL.replace("team-alpha", "té").into_bytes();
        let at = bytes.iter().position(|b| *b == 0xa9).unwrap();
        bytes[at] = 0xff;
        assert_eq!(
            parse_bytes(&bytes, None).unwrap_err().to_string(),
            "2:7: the file is not valid UTF-8"
        );
    }

    #[test]
    fn every_error_is_reported_at_once_in_file_order() {
        let text = "\
version: 1
org: Team
budget:
  monthly_tokens: \"5000\"
  timezone: Mars/Olympus
  currency: EUR
rate_limits: {rpm: 0}
allowed_models: [gpt-4o, GPT-4o]
users:
  - email: alice@example.com
    role: system_admin
  - email: ALICE@example.com
    role: member
    monthly_token_limit: 1.5
    rate_limits: {tmp: 10}
  - email: carol
";
        let expected = [
            "2:6: org: invalid slug `Team`: may contain only lowercase letters, digits and `-`",
            "4:19: budget.monthly_tokens: expected a whole number, found the quoted string `5000`; remove the quotes",
            "5:13: budget.timezone: invalid timezone `Mars/Olympus`: not an IANA time zone name",
            "6:3: budget.currency: unknown key `currency`; expected one of `monthly_tokens`, `timezone`",
            "7:20: rate_limits.rpm: invalid rpm `0`: must be between 1 and 1000000000 (or none to remove the limit)",
            "8:26: allowed_models[1]: duplicate model pattern `gpt-4o`; first given at line 8",
            "11:11: users[0].role: role `system_admin` can only be given with `ias-admin`, never by a GitOps file",
            "12:12: users[1].email: duplicate user `alice@example.com`; first declared at line 10",
            "14:26: users[1].monthly_token_limit: `1.5` is not a whole number",
            "15:19: users[1].rate_limits.tmp: unknown key `tmp`; did you mean `tpm`?",
            "16:5: users[2].role: missing required key `role`",
            "16:12: users[2].email: invalid email `carol`: must contain `@`",
        ];
        let errors = parse(text, None).unwrap_err();
        assert_eq!(errors.to_string(), expected.join("\n"));
        assert_eq!(errors.len(), expected.len());
        let first = &errors.0[0];
        assert_eq!(
            (first.line, first.column, first.path.as_str()),
            (2, 6, "org")
        );
    }

    #[test]
    fn keys_may_be_quoted_but_must_be_scalars() {
        assert!(parse(&edit(MINIMAL, "org:", "\"org\":"), None).is_ok());
        assert_eq!(
            error(&edit(MINIMAL, "users: []", "users: []\n[a]: 1")),
            "6:1: expected a key name, found a list"
        );
    }

    #[test]
    fn the_core_error_summarises_the_list() {
        let errors = parse(&edit(MINIMAL, "team-alpha", "Team"), None).unwrap_err();
        let err = Error::from(errors);
        assert_eq!(err.kind(), "invalid_input");
        assert!(err.is_invalid_input());
        assert_eq!(
            err.to_string(),
            "invalid GitOps file: 1 error; the first: 2:6: org: invalid slug `Team`: \
             may contain only lowercase letters, digits and `-`"
        );
        let two = parse(
            "version: 1\nbudget: {}\nallowed_models: []\nusers: []\norg: x\n",
            None,
        );
        let err = Error::from(two.unwrap_err());
        assert!(
            err.to_string().starts_with("invalid GitOps file: 1 error"),
            "{err}"
        );
    }

    #[test]
    fn manifests_serialise_with_the_timezone_name() {
        let manifest = ok(BRIEF);
        let json = serde_json::to_value(&manifest).unwrap();
        assert_eq!(json["budget"]["timezone"], "Europe/Berlin");
        assert_eq!(json["users"][0]["role"], "org_admin");
        let back: Manifest = serde_json::from_value(json).unwrap();
        assert_eq!(back, manifest);
    }

    #[test]
    fn edit_distance_counts_swaps_as_one() {
        assert_eq!(edit_distance("rpm", "rpm"), 0);
        assert_eq!(edit_distance("rmp", "rpm"), 1);
        assert_eq!(edit_distance("budjet", "budget"), 1);
        assert_eq!(edit_distance("users", "user"), 1);
        assert_eq!(edit_distance("", "org"), 3);
        assert_eq!(edit_distance("kitten", "sitting"), 3);
    }
}
