//! `--demo`: a ready-to-use organization, user and key on first start.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;

use ias_core::{Actor, Admin, CreatedKey, Error, Result, Role, Source, Store};

/// The demo organization's slug.
pub const ORG: &str = "demo";

/// The demo user's email.
pub const EMAIL: &str = "demo@example.com";

/// The model the demo organization may call.
pub const MODEL: &str = "gpt-4o-mini";

/// The demo organization's monthly token budget.
pub const BUDGET: i64 = 1_000_000;

/// The demo organization's time zone.
pub const TIMEZONE: &str = "UTC";

/// What `--demo` found or made.
#[derive(Debug)]
pub enum DemoSetup {
    /// The demo was created now; this is its key, shown once.
    Created(CreatedKey),
    /// The demo organization already existed.
    Existing,
}

/// Creates the demo organization, user and key unless the organization exists.
pub async fn ensure(store: Arc<dyn Store>) -> Result<DemoSetup> {
    let admin = Admin::new(store, Actor::local_operator(), Source::Library);
    match admin.org(ORG).await {
        Ok(_) => return Ok(DemoSetup::Existing),
        Err(Error::NotFound { .. }) => {}
        Err(err) => return Err(err),
    }
    match admin.create_org(ORG, BUDGET, TIMEZONE).await {
        Ok(_) => {}
        // Another gateway on the same database created it first.
        Err(Error::Conflict { .. }) => return Ok(DemoSetup::Existing),
        Err(err) => return Err(err),
    }
    admin.allow_model(ORG, MODEL).await?;
    admin.create_user(ORG, EMAIL, Role::OrgAdmin, None).await?;
    Ok(DemoSetup::Created(admin.create_key(EMAIL, None).await?))
}

/// The text to show on stdout: the key and a `curl` line, or how to make a new key.
pub fn instructions(setup: &DemoSetup, listening: SocketAddr, database_url: &str) -> String {
    match setup {
        DemoSetup::Created(created) => created_text(created.secret.expose(), listening),
        DemoSetup::Existing => existing_text(database_url),
    }
}

fn created_text(key: &str, listening: SocketAddr) -> String {
    let url = format!("http://{}/v1/chat/completions", reachable(listening));
    let body =
        format!(r#"{{"model": "{MODEL}", "messages": [{{"role": "user", "content": "Hello!"}}]}}"#);
    format!(
        "Created demo organization `{ORG}` (budget {BUDGET} tokens a month, model `{MODEL}`)\n\
         and user `{EMAIL}`. Its API key is shown only this once:\n\n  {key}\n\n\
         Try it:\n\n  curl {url} \\\n    -H \"Authorization: Bearer {key}\" \\\n    \
         -H \"Content-Type: application/json\" \\\n    -d '{body}'\n"
    )
}

fn existing_text(database_url: &str) -> String {
    let url = ias_core::url::redact(database_url);
    format!(
        "Demo organization `{ORG}` already exists; its key was shown when it was created.\n\
         Keys are shown once. To make a new one:\n\n  \
         ias-admin --database-url {url} key create --email {EMAIL}\n"
    )
}

/// The address a client on this machine can use for `listening`.
fn reachable(listening: SocketAddr) -> SocketAddr {
    let ip = match listening.ip() {
        IpAddr::V4(ip) if ip.is_unspecified() => IpAddr::V4(Ipv4Addr::LOCALHOST),
        IpAddr::V6(ip) if ip.is_unspecified() => IpAddr::V6(Ipv6Addr::LOCALHOST),
        ip => ip,
    };
    SocketAddr::new(ip, listening.port())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_curl_line_uses_a_reachable_address_and_the_key() {
        let text = created_text("ias_KEY", "0.0.0.0:8080".parse().unwrap());
        assert!(
            text.contains("curl http://127.0.0.1:8080/v1/chat/completions"),
            "{text}"
        );
        assert!(text.contains("Bearer ias_KEY"), "{text}");
        assert!(text.contains(r#""model": "gpt-4o-mini""#), "{text}");
        let v6 = created_text("k", "[::]:9000".parse().unwrap());
        assert!(v6.contains("http://[::1]:9000/"), "{v6}");
    }

    #[test]
    fn a_later_start_explains_how_to_get_a_key() {
        let text = existing_text("sqlite://./ias.db");
        assert!(text.contains(
            "ias-admin --database-url sqlite://./ias.db key create --email demo@example.com"
        ));
    }
}
