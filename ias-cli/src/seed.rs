//! `ias-admin seed`: a generated, reproducible dataset for tests and load tests.
//!
//! The data comes from [`ias_core::seed`]; this file parses the sizes,
//! draws the progress bar on stderr, writes the sample of key secrets to
//! `--keys-out` (the only place they appear) and prints the summary.

use std::fs::OpenOptions;
use std::io::{BufWriter, IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::{DateTime, NaiveDate, Utc};
use clap::Args;
use ias_core::Error;
use ias_core::seed::{KeyTally, SampleKey, SeedCounts, SeedPlan, Seeded};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use serde::Serialize;

use crate::cli::Context;
use crate::error::{CliError, CliResult};
use crate::output::{self, Report};

/// Arguments of `seed`. No `Debug`: it holds the seed, the key of every seeded secret.
#[derive(Args)]
pub struct SeedArgs {
    /// Organizations to create (1 to 100000)
    #[arg(long, value_name = "N", allow_hyphen_values = true)]
    orgs: String,
    /// Users per organization: one or two org admins, the rest members (1 to 100000)
    #[arg(long, value_name = "N", allow_hyphen_values = true)]
    users_per_org: String,
    /// API keys per user: most live, some expired, some revoked (1 to 1000)
    #[arg(long, value_name = "N", allow_hyphen_values = true)]
    keys_per_user: String,
    /// Derive all data from this number: the same seed gives the same data, key secrets
    /// included, so seeded keys are for testing only (default: a random seed, not shown)
    #[arg(long, value_name = "N", allow_hyphen_values = true)]
    seed: Option<String>,
    /// Days of usage history per user and model, up to yesterday (0 to 366)
    #[arg(
        long,
        value_name = "DAYS",
        default_value = "30",
        allow_hyphen_values = true
    )]
    days_of_usage: String,
    /// End the history at this time instead of now (RFC 3339 or YYYY-MM-DD), so that
    /// runs with the same seed give the same timestamps too
    #[arg(long, value_name = "TIME")]
    as_of: Option<String>,
    /// Write the secrets of up to 10000 live keys to FILE (mode 0600), one per line:
    /// secret, organization slug and an allowed model, separated by tabs
    #[arg(long, value_name = "FILE")]
    keys_out: Option<PathBuf>,
    /// Seed a database that already holds data: the new slugs and emails start with a
    /// prefix of this run's own, and nothing existing is changed
    #[arg(long)]
    allow_existing: bool,
    /// Draw no progress bar
    #[arg(long)]
    quiet: bool,
}

/// The summary `seed` prints.
#[derive(Serialize)]
struct Summary<'a> {
    seconds: f64,
    rows: &'a SeedCounts,
    keys: &'a KeyTally,
    slug_prefix: Option<&'a str>,
    as_of: String,
    keys_out: Option<KeysOut<'a>>,
}

/// Where the sample of secrets went.
#[derive(Serialize)]
struct KeysOut<'a> {
    path: &'a Path,
    keys: usize,
}

/// Runs `seed`.
pub async fn run(args: SeedArgs, ctx: &Context) -> CliResult<Report> {
    let started = Instant::now();
    let plan = plan(&args)?;
    if let Some(path) = &args.keys_out {
        check_keys_out(path)?;
    }
    let admin = ctx.admin().await?;
    let bar = progress_bar(plan.orgs(), args.quiet);
    let shown = bar.clone();
    let progress = Arc::new(move |counts: &SeedCounts| {
        shown.set_position(counts.organizations);
        shown.set_message(format!("{} keys", counts.api_keys));
    });
    let seeded = admin.seed(plan, args.allow_existing, progress).await;
    bar.finish_and_clear();
    let seeded = seeded?;
    let keys_out = match &args.keys_out {
        Some(path) => Some(write_keys(path, &seeded.harvest.sample)?),
        None => None,
    };
    report(&seeded, keys_out, started.elapsed())
}

fn plan(args: &SeedArgs) -> CliResult<SeedPlan> {
    let mut plan = SeedPlan::new(
        whole("orgs", &args.orgs)?,
        whole("users_per_org", &args.users_per_org)?,
        whole("keys_per_user", &args.keys_per_user)?,
    )?
    .with_days_of_usage(whole("days_of_usage", &args.days_of_usage)?)?;
    if let Some(text) = &args.seed {
        // The seed is the key of every seeded secret: a rejected one is not repeated.
        let seed = text.trim().parse::<u64>().map_err(|_| CliError::Secret {
            field: "seed",
            reason: "must be a whole number from 0 to 18446744073709551615",
        })?;
        plan = plan.with_seed(seed);
    }
    if let Some(text) = &args.as_of {
        plan = plan.with_as_of(as_of(text)?);
    }
    Ok(plan)
}

/// A whole number as typed; the plan checks its range.
fn whole(field: &'static str, text: &str) -> CliResult<i64> {
    text.trim()
        .replace('_', "")
        .parse::<i64>()
        .map_err(|_| Error::invalid(field, text, "must be a whole number").into())
}

/// Parses `--as-of`: RFC 3339 (`2026-12-01T08:00:00Z`) or a date, read as midnight UTC.
fn as_of(text: &str) -> CliResult<DateTime<Utc>> {
    let trimmed = text.trim();
    if let Ok(at) = DateTime::parse_from_rfc3339(trimmed) {
        return Ok(at.with_timezone(&Utc));
    }
    NaiveDate::parse_from_str(trimmed, "%Y-%m-%d")
        .ok()
        .and_then(|day| day.and_hms_opt(0, 0, 0))
        .map(|midnight| midnight.and_utc())
        .ok_or_else(|| {
            let reason =
                "expected RFC 3339 such as `2026-12-01T08:00:00Z` or a date such as `2026-12-01`";
            Error::invalid("as_of", text, reason).into()
        })
}

/// Refuses a `--keys-out` that cannot be written, before anything is seeded.
fn check_keys_out(path: &Path) -> CliResult<()> {
    let shown = path.display().to_string();
    if path.is_dir() {
        return Err(Error::invalid("keys_out", shown, "is a directory").into());
    }
    let dir = match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir,
        _ => Path::new("."),
    };
    if !dir.is_dir() {
        let reason = "its directory does not exist";
        return Err(Error::invalid("keys_out", shown, reason).into());
    }
    Ok(())
}

/// Writes `secret<TAB>org<TAB>model` lines, readable by the owner only.
fn write_keys<'a>(path: &'a Path, sample: &[SampleKey]) -> CliResult<KeysOut<'a>> {
    let failed = |err: std::io::Error| {
        CliError::Io(format!(
            "the seed was written, but the keys file `{}` could not be: {err}",
            path.display()
        ))
    };
    let mut options = OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
        options.mode(0o600);
        let file = options.open(path).map_err(failed)?;
        // A file that existed keeps its mode when opened: make it private too.
        file.set_permissions(std::fs::Permissions::from_mode(0o600))
            .map_err(failed)?;
        write_lines(BufWriter::new(file), sample).map_err(failed)?;
    }
    #[cfg(not(unix))]
    {
        let file = options.open(path).map_err(failed)?;
        write_lines(BufWriter::new(file), sample).map_err(failed)?;
    }
    Ok(KeysOut {
        path,
        keys: sample.len(),
    })
}

fn write_lines(mut out: impl Write, sample: &[SampleKey]) -> std::io::Result<()> {
    for key in sample {
        writeln!(out, "{}\t{}\t{}", key.secret.expose(), key.org, key.model)?;
    }
    out.flush()
}

/// A bar of organizations written, on stderr when it is a terminal and not `--quiet`.
fn progress_bar(orgs: u64, quiet: bool) -> ProgressBar {
    if quiet || !std::io::stderr().is_terminal() {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::with_draw_target(Some(orgs), ProgressDrawTarget::stderr());
    if let Ok(style) = ProgressStyle::with_template(
        "seeding {bar:40} {pos}/{len} organizations, {msg} [{elapsed_precise}, ~{eta} left]",
    ) {
        bar.set_style(style);
    }
    bar.set_message("0 keys");
    bar.enable_steady_tick(Duration::from_millis(200));
    bar
}

fn report(seeded: &Seeded, keys_out: Option<KeysOut<'_>>, took: Duration) -> CliResult<Report> {
    let counts = &seeded.counts;
    let seconds = (took.as_secs_f64() * 10.0).round() / 10.0;
    let mut text = format!(
        "seeded {} organizations, {} users and {} keys in {seconds:.1} s\n",
        counts.organizations, counts.users, counts.api_keys
    );
    let rows: Vec<Vec<String>> = counts
        .tables()
        .iter()
        .map(|(table, n)| vec![(*table).to_owned(), n.to_string()])
        .collect();
    text.push_str(&output::table(&["TABLE", "ROWS"], &rows));
    let keys = &seeded.harvest.keys;
    text.push_str(&format!(
        "\nkeys: {} live, {} expired, {} revoked",
        keys.live, keys.expired, keys.revoked
    ));
    if !seeded.prefix.is_empty() {
        text.push_str(&format!(
            "\nslugs and emails start with `{}`",
            seeded.prefix
        ));
    }
    if let Some(out) = &keys_out {
        text.push_str(&format!(
            "\nsecrets of {} live keys written to {} (test data only)",
            out.keys,
            out.path.display()
        ));
    }
    let summary = Summary {
        seconds,
        rows: counts,
        keys,
        slug_prefix: (!seeded.prefix.is_empty()).then_some(seeded.prefix.as_str()),
        as_of: output::time(seeded.as_of),
        keys_out,
    };
    Report::new(text, &summary)
}
