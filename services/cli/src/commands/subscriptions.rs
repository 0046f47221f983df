//! `eye subscriptions create|list|pause|resume|delete`, thin over `eye_admin::subscriptions`.

use eye_admin::subscriptions::{self, Destination, Filter, NewSubscription};
use sqlx::PgPool;

use crate::{
    cli::{CreateSubscriptionArgs, SubscriptionsCommand},
    commands::format_time,
    database, table,
};

pub async fn run(pool: &PgPool, command: SubscriptionsCommand) -> anyhow::Result<()> {
    match command {
        SubscriptionsCommand::Create(args) => create(pool, args).await,
        SubscriptionsCommand::List { json } => list(pool, json).await,
        SubscriptionsCommand::Pause { name } => {
            let changed = subscriptions::pause(pool, &name, "paused by `eye subscriptions pause`")
                .await
                .map_err(database::admin)?;
            println!(
                "{name}: {}",
                if changed {
                    "paused; its events keep being queued, `resume` delivers them"
                } else {
                    "already paused"
                }
            );
            Ok(())
        }
        SubscriptionsCommand::Resume { name } => {
            let changed = subscriptions::resume(pool, &name).await.map_err(database::admin)?;
            println!("{name}: {}", if changed { "resumed" } else { "was not paused" });
            Ok(())
        }
        SubscriptionsCommand::Delete { name } => {
            let deleted = subscriptions::delete(pool, &name).await.map_err(database::admin)?;
            println!(
                "{name}: deleted, with {} undelivered event(s) and {} dead letter(s)",
                deleted.pending, deleted.dead_letters
            );
            Ok(())
        }
    }
}

async fn create(pool: &PgPool, args: CreateSubscriptionArgs) -> anyhow::Result<()> {
    let destination = match (args.webhook, args.nats) {
        (Some(url), None) => Destination::Webhook(url),
        (None, Some(url)) => Destination::Nats(url),
        _ => anyhow::bail!("give exactly one of --webhook URL and --nats URL"),
    };
    let contains = args
        .contains
        .map(|text| {
            serde_json::from_str(&text)
                .map_err(|error| anyhow::anyhow!("--contains is not JSON: {error}"))
        })
        .transpose()?;
    if args.create_stream {
        let nats = eye_delivery::nats::Nats::connect(
            destination.url(),
            std::time::Duration::from_secs(10),
        )
        .await?;
        nats.create_stream(args.replicas).await?;
        eprintln!(
            "stream {} on subjects {} is ready ({} replica(s))",
            eye_delivery::nats::STREAM,
            eye_delivery::nats::SUBJECTS,
            args.replicas
        );
    }
    let new = NewSubscription {
        name: args.name,
        destination,
        filter: Filter {
            application: args.application,
            category: args.category,
            name: args.name_filter,
            contains,
        },
        from: args.from,
        ordered: args.ordered,
    };
    let created = subscriptions::create(pool, &new).await.map_err(database::admin)?;
    let subscription = &created.subscription;
    println!(
        "subscription `{}` created ({}{}), {}",
        subscription.name,
        subscription.destination,
        if subscription.ordered { ", ordered" } else { "" },
        match subscription.backfill_from {
            Some(from) => format!("backfilling from {} before going live", format_time(from)),
            None => "live".into(),
        }
    );
    if let Some(secret) = created.secret {
        println!("signing secret (shown once; receivers verify webhook-signature with it):");
        println!("{secret}");
    }
    Ok(())
}

async fn list(pool: &PgPool, json: bool) -> anyhow::Result<()> {
    let all = subscriptions::list(pool).await.map_err(database::admin)?;
    if json {
        for s in &all {
            let line = serde_json::json!({
                "name": s.name, "destination": s.destination, "url": s.url,
                "application": s.application, "category": s.category, "event_name": s.event_name,
                "contains": s.contains, "ordered": s.ordered, "state": s.state,
                "paused": s.paused, "paused_reason": s.paused_reason, "delivered": s.delivered,
                "pending": s.pending, "retrying": s.retrying, "lag_seconds": s.lag_seconds,
                "dead_letters": s.dead_letters, "id": s.id, "created_at": s.created_at,
            });
            println!("{line}");
        }
        return Ok(());
    }
    if all.is_empty() {
        println!("no subscriptions; create one with `eye subscriptions create NAME --webhook URL`");
        return Ok(());
    }
    let rows: Vec<[String; 9]> = all
        .into_iter()
        .map(|s| {
            let filter = [
                s.application.map(|a| format!("application={a}")),
                s.category.map(|c| format!("category={c}")),
                s.event_name.map(|n| format!("name={n}")),
                s.contains.map(|c| format!("contains={c}")),
            ]
            .into_iter()
            .flatten()
            .collect::<Vec<_>>()
            .join(" ");
            let state = match (s.paused, s.paused_reason) {
                (true, Some(reason)) => format!("paused ({reason})"),
                (true, None) => "paused".into(),
                (false, _) => s.state.clone(),
            };
            [
                s.name,
                format!("{} {}{}", s.destination, s.url, if s.ordered { " (ordered)" } else { "" }),
                if filter.is_empty() { "everything".into() } else { filter },
                state,
                s.delivered.to_string(),
                s.pending.to_string(),
                s.retrying.to_string(),
                format!("{:.0}s", s.lag_seconds),
                s.dead_letters.to_string(),
            ]
        })
        .collect();
    print!(
        "{}",
        table::render(
            [
                "NAME",
                "DESTINATION",
                "FILTER",
                "STATE",
                "DELIVERED",
                "PENDING",
                "RETRYING",
                "LAG",
                "DEAD LETTERS"
            ],
            &rows
        )
    );
    Ok(())
}
