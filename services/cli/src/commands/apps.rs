//! `eye apps`: applications (trusted clients) and their API keys, through `eye_admin::apps`.

use anyhow::Context;
use eye_admin::apps;
use eye_service::Settings;
use sqlx::PgPool;

use super::format_time;
use crate::{cli::AppsCommand, database, table};

/// Runs an `eye apps` command, printing for humans (and the key alone on the last line).
pub async fn run(pool: &PgPool, settings: &Settings, command: AppsCommand) -> anyhow::Result<()> {
    match command {
        AppsCommand::Create { name, roles } => {
            let issued =
                apps::create(pool, &name, &roles.roles()).await.map_err(database::admin)?;
            println!("created application `{name}` (id {})", issued.application_id);
            print_key(&issued);
        }
        AppsCommand::Key { name, publishable: true, origins, .. } => {
            let issued = apps::issue_publishable_key(pool, &name, &origins)
                .await
                .map_err(database::admin)?;
            println!(
                "issued a publishable key for application `{name}` (id {}): ingest only, from {}",
                issued.application_id,
                origins.join(", ")
            );
            println!("it is meant to be in your pages; it is shown only this once:");
            println!("{}", issued.key);
        }
        AppsCommand::Key { name, roles, .. } => {
            let issued =
                apps::issue_key(pool, &name, &roles.roles()).await.map_err(database::admin)?;
            println!("issued a new key for application `{name}` (id {})", issued.application_id);
            print_key(&issued);
        }
        AppsCommand::List => {
            let apps = apps::list(pool).await.map_err(database::admin)?;
            if apps.is_empty() {
                println!("no applications yet; create one with `eye apps create NAME`");
                return Ok(());
            }
            let rows: Vec<[String; 7]> = apps
                .into_iter()
                .map(|app| {
                    let quota = match (app.ingest_rate, app.ingest_burst) {
                        (None, _) => "default".to_owned(),
                        (Some(0.0), _) => "none".to_owned(),
                        (Some(rate), burst) => {
                            format!("{rate}/s burst {}", burst.unwrap_or(2.0 * rate))
                        }
                    };
                    [
                        app.name,
                        app.id.to_string(),
                        format_time(app.created_at),
                        app.revoked_at.map(format_time).unwrap_or_else(|| "-".into()),
                        app.active_keys.to_string(),
                        if app.roles.is_empty() { "-".into() } else { app.roles.join(",") },
                        quota,
                    ]
                })
                .collect();
            print!(
                "{}",
                table::render(
                    ["NAME", "ID", "CREATED_AT", "REVOKED_AT", "ACTIVE_KEYS", "ROLES", "QUOTA"],
                    &rows
                )
            );
        }
        AppsCommand::Quota { name, rate, burst, clear: _ } => {
            apps::set_quota(pool, &name, rate, burst).await.map_err(database::admin)?;
            let ttl = settings.auth_cache_ttl().as_secs_f64();
            match rate {
                None => {
                    println!("application `{name}` now has the default quota (ingest.quota_rate)")
                }
                Some(0.0) => println!("application `{name}` has no ingest quota"),
                Some(rate) => println!(
                    "application `{name}`: {rate} events/s, bursts of {}, per ingest instance",
                    burst.unwrap_or(2.0 * rate)
                ),
            }
            println!("ingest applies it within {ttl} s (auth.cache_ttl_ms)");
        }
        AppsCommand::Revoke { name } => {
            let revocation = apps::revoke(pool, &name)
                .await
                .map_err(database::admin)
                .with_context(|| format!("cannot revoke application `{name}`"))?;
            let ttl = settings.auth_cache_ttl().as_secs_f64();
            if revocation.was_already_revoked {
                println!(
                    "application `{name}` was already revoked; {} remaining key(s) revoked now",
                    revocation.keys_revoked
                );
            } else {
                println!(
                    "revoked application `{name}` and its {} active key(s); running servers \
                     refuse them within {ttl} s (auth.cache_ttl_ms)",
                    revocation.keys_revoked
                );
            }
        }
    }
    Ok(())
}

/// The key comes last, alone on its line: `eye apps create x | tail -1`.
fn print_key(issued: &apps::IssuedKey) {
    println!("api key with role(s) {}, shown only this once:", issued.roles.join(", "));
    println!("{}", issued.key);
}
