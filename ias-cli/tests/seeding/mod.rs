//! What the `seed` tests share on both backends: the plan, the keys file, the tables.

#![allow(dead_code, reason = "each test binary uses part of the kit")]

use std::path::Path;

use ias_core::seed::{Generator, Harvest, SeedPlan};

/// The end of the history in tests that compare runs: a fixed instant.
pub const AS_OF: &str = "2026-11-20T12:00:00Z";

/// The seeded tables, each with the order its rows are compared in.
pub const TABLES: [(&str, &str); 8] = [
    ("organizations", "id"),
    ("org_allowed_models", "org_id, model"),
    ("rate_limits", "scope, scope_id"),
    ("users", "id"),
    ("api_keys", "id"),
    ("usage_events", "id"),
    ("usage_daily", "org_id, day, user_id, model"),
    ("usage_counters", "scope, scope_id, period"),
];

/// `seed` arguments for 3 organizations of 4 users with 2 keys each.
pub fn small(seed: &str, keys_out: &Path) -> Vec<String> {
    [
        "seed",
        "--orgs",
        "3",
        "--users-per-org",
        "4",
        "--keys-per-user",
        "2",
        "--seed",
        seed,
        "--as-of",
        AS_OF,
        "--keys-out",
        keys_out.to_str().expect("UTF-8 path"),
        "--output",
        "json",
    ]
    .map(str::to_owned)
    .to_vec()
}

/// What the library generates for [`small`]: the same rows, the same secrets.
pub fn harvest_of_small(seed: u64) -> Harvest {
    let plan = SeedPlan::new(3, 4, 2)
        .unwrap()
        .with_seed(seed)
        .with_as_of(AS_OF.parse().unwrap());
    let generator = Generator::new(plan);
    let harvest = generator.harvest();
    generator.for_each(drop);
    harvest.lock().unwrap().clone()
}

/// One line of a keys file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyLine {
    pub secret: String,
    pub org: String,
    pub model: String,
}

/// The lines of a keys file, each checked to have three tab-separated fields.
pub fn read_keys(path: &Path) -> Vec<KeyLine> {
    let text = std::fs::read_to_string(path).unwrap();
    text.lines()
        .map(|line| {
            let fields: Vec<&str> = line.split('\t').collect();
            let [secret, org, model] = fields[..] else {
                panic!("not three fields: {line:?}");
            };
            KeyLine {
                secret: secret.to_owned(),
                org: org.to_owned(),
                model: model.to_owned(),
            }
        })
        .collect()
}

/// Checks that the keys file is readable by its owner only.
pub fn assert_private(path: &Path) {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600, "{path:?} has mode {mode:o}");
    }
}
