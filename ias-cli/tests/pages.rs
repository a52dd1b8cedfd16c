//! Every list a page at a time: `--limit` and `--after` walk each list once,
//! in its order; text names the next page's `--after` on stderr, JSON in
//! `next_after`.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::collections::HashSet;

use common::Db;
use serde_json::Value;

/// Seven organizations; `org-a` with six users and five allowed models;
/// `ann@org-a.io` with five keys.
fn crowded() -> Db {
    let db = Db::new();
    for slug in [
        "org-g", "org-a", "org-e", "org-b", "org-f", "org-c", "org-d",
    ] {
        db.create_org(slug, 1_000_000);
    }
    for name in ["zoe", "ann", "max", "bea", "kim", "lou"] {
        db.create_user("org-a", &format!("{name}@org-a.io"), "member");
    }
    for model in ["mistral", "openai/*", "claude-3", "gpt-4o", "gpt-4o-mini"] {
        db.ok(&["model", "allow", "--org", "org-a", "--model", model]);
    }
    for _ in 0..5 {
        db.ok(&["key", "create", "--email", "ann@org-a.io"]);
    }
    db
}

/// `field` of every item, as text.
fn column(items: &[Value], field: &str) -> Vec<String> {
    items
        .iter()
        .map(|item| match &item[field] {
            Value::String(text) => text.clone(),
            other => other.to_string(),
        })
        .collect()
}

/// Walks `list` with pages of 1, 2 and 3 and checks each walk reads what one
/// page of 1000 holds: every item once, in the same order.
fn walks_once(db: &Db, list: &[&str]) -> Vec<Value> {
    let (whole, next) = db.page(&[list, &["--limit", "1000"]].concat());
    assert_eq!(next, None, "{list:?}");
    for limit in [1, 2, 3] {
        assert_eq!(
            db.all_pages(list, limit),
            whole,
            "{list:?}, pages of {limit}"
        );
    }
    let text: Vec<String> = whole.iter().map(Value::to_string).collect();
    let unique: HashSet<&String> = text.iter().collect();
    assert_eq!(unique.len(), whole.len(), "{list:?}: an item shows twice");
    whole
}

fn numbers(items: &[Value], field: &str) -> Vec<i64> {
    items
        .iter()
        .map(|item| item[field].as_i64().unwrap())
        .collect()
}

#[test]
fn each_list_walks_every_item_once_in_its_order() {
    let db = crowded();

    let orgs = walks_once(&db, &["org", "list"]);
    let slugs = column(&orgs, "slug");
    assert_eq!(
        slugs,
        [
            "org-g", "org-a", "org-e", "org-b", "org-f", "org-c", "org-d"
        ]
    );
    assert!(numbers(&orgs, "id").is_sorted());

    let users = walks_once(&db, &["user", "list", "--org", "org-a"]);
    let emails = column(&users, "email");
    let names: Vec<&str> = emails.iter().map(|e| &e[..3]).collect();
    assert_eq!(names, ["zoe", "ann", "max", "bea", "kim", "lou"]);

    let keys = walks_once(&db, &["key", "list", "--email", "ann@org-a.io"]);
    let mut ids = numbers(&keys, "id");
    assert_eq!(ids.len(), 5);
    ids.reverse();
    assert!(ids.is_sorted(), "keys come newest first: {keys:?}");

    let models = walks_once(&db, &["model", "list", "--org", "org-a"]);
    let models: Vec<&str> = models.iter().map(|m| m.as_str().unwrap()).collect();
    assert_eq!(
        models,
        ["claude-3", "gpt-4o", "gpt-4o-mini", "mistral", "openai/*"]
    );

    let audit = walks_once(&db, &["audit", "list"]);
    let mut ids = numbers(&audit, "id");
    assert_eq!(ids.len(), 7 + 6 + 5 + 5);
    ids.reverse();
    assert!(ids.is_sorted(), "entries come newest first");
    let of_org = walks_once(&db, &["audit", "list", "--org", "org-a"]);
    assert_eq!(of_org.len(), 1 + 6 + 5 + 5);
    let allowed = walks_once(&db, &["audit", "list", "--action", "model.allow"]);
    assert_eq!(allowed.len(), 5);
}

#[test]
fn usage_pages_its_users_and_its_days() {
    let db = crowded();
    let secret = |email: &str| {
        let key = db.json(&["key", "create", "--email", email]);
        key["secret"].as_str().unwrap().to_owned()
    };
    let (ann, zoe) = (secret("ann@org-a.io"), secret("zoe@org-a.io"));
    db.spend(&ann, "gpt-4o", 10);
    db.spend(&ann, "claude-3", 20);
    db.spend(&zoe, "mistral", 30);
    db.spend(&zoe, "openai/gpt-4.1", 40);

    let days = walks_once(&db, &["usage", "show", "--org", "org-a", "--by", "day"]);
    let models = column(&days, "model");
    assert_eq!(models.len(), 4, "{days:?}");
    let keys: Vec<(String, String)> = column(&days, "day").into_iter().zip(models).collect();
    assert!(keys.is_sorted(), "by day, then model: {keys:?}");
    let tokens: i64 = numbers(&days, "tokens").iter().sum();
    assert_eq!(tokens, 100);

    let mut users = Vec::new();
    let mut after: Option<String> = None;
    loop {
        let mut args = vec!["usage", "show", "--org", "org-a", "--limit", "4"];
        if let Some(cursor) = &after {
            args.extend(["--after", cursor]);
        }
        let report = db.json(&args);
        assert_eq!(report["org"]["used"], 100, "every page shows the whole org");
        users.extend(report["users"].as_array().unwrap().clone());
        match &report["next_after"] {
            Value::String(cursor) => after = Some(cursor.clone()),
            Value::Null => break,
            other => panic!("next_after is {other}"),
        }
    }
    let emails = column(&users, "email");
    let names: Vec<&str> = emails.iter().map(|e| &e[..3]).collect();
    assert_eq!(names, ["zoe", "ann", "max", "bea", "kim", "lou"]);
    let used: i64 = users
        .iter()
        .map(|u| u["counter"]["used"].as_i64().unwrap())
        .sum();
    assert_eq!(used, 100);
}

#[test]
fn text_names_the_next_page_on_stderr_until_the_last() {
    let db = crowded();
    let orgs = db.items(&["org", "list"]);
    let ids = numbers(&orgs, "id");

    let first = db.ok(&["org", "list", "--limit", "3"]);
    let lines: Vec<&str> = first.stdout.lines().collect();
    assert_eq!(lines.len(), 4, "a header and three rows: {first:?}");
    assert!(lines[0].starts_with("SLUG"), "{first:?}");
    assert_eq!(first.stderr, format!("next page: --after {}\n", ids[2]));

    let after = ids[5].to_string();
    let last = db.ok(&["org", "list", "--limit", "3", "--after", &after]);
    assert_eq!(last.stdout.lines().count(), 2, "{last:?}");
    assert!(last.stdout.contains("org-d"), "{last:?}");
    assert_eq!(last.stderr, "", "the last page names no next one");

    let exact = db.ok(&["org", "list", "--limit", "7"]);
    assert_eq!(exact.stdout.lines().count(), 8);
    assert_eq!(exact.stderr, "");

    // A cursor the shell would expand comes quoted, ready to paste.
    let models = db.ok(&["model", "list", "--org", "org-a", "--limit", "4"]);
    assert_eq!(
        models.stdout, "claude-3\ngpt-4o\ngpt-4o-mini\nmistral\n",
        "{models:?}"
    );
    assert_eq!(models.stderr, "next page: --after mistral\n");
    let rest = db.ok(&["model", "list", "--org", "org-a", "--after", "mistral"]);
    assert_eq!(rest.stdout, "openai/*\n");
    let models = db.ok(&["model", "list", "--org", "org-a", "--limit", "5"]);
    assert_eq!(models.stderr, "");
    let past = db.ok(&["model", "list", "--org", "org-a", "--after", "openai/*"]);
    assert_eq!((past.stdout.as_str(), past.stderr.as_str()), ("", ""));
}

#[test]
fn json_pages_carry_the_cursor_and_print_nothing_on_stderr() {
    let db = crowded();
    let run = db.ok(&[
        "user", "list", "--org", "org-a", "--limit", "4", "--output", "json",
    ]);
    assert_eq!(run.stderr, "");
    let page = run.json();
    let items = page["items"].as_array().unwrap();
    assert_eq!(items.len(), 4);
    assert_eq!(page["next_after"], items[3]["id"].to_string());
    let after = page["next_after"].as_str().unwrap();
    let rest = db.page(&["user", "list", "--org", "org-a", "--after", after]);
    assert_eq!(rest.0.len(), 2);
    assert_eq!(rest.1, None);
}
