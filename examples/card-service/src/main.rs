//! `card-service`: makes `--changes` random card changes, each in its own transaction with its
//! event enqueued in the outbox; `--rollback-percent` of them are rolled back (and so publish
//! nothing). See the crate's documentation and README "Producers".
//!
//!   eye outbox migrate --database-url "$CARDS_DATABASE_URL"
//!   cargo run -p card-service -- --database-url "$CARDS_DATABASE_URL" --changes 100
//!   eye relay --source "$CARDS_DATABASE_URL"    # EYE_ENDPOINT, EYE_API_KEY

use clap::Parser;
use rand::Rng;
use sqlx::{Connection, Executor, PgConnection};

#[derive(Debug, Parser)]
struct Args {
    /// The card service's database (with the outbox installed by `eye outbox migrate`).
    #[arg(long, env = "CARDS_DATABASE_URL")]
    database_url: String,
    /// How many changes to make.
    #[arg(long, default_value_t = 100)]
    changes: u32,
    /// Cards to spread the changes over (ids 1..=cards): later changes update earlier cards.
    #[arg(long, default_value_t = 20)]
    cards: i64,
    /// Share of transactions rolled back after their writes.
    #[arg(long, default_value_t = 0)]
    rollback_percent: u32,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let mut conn = PgConnection::connect(&args.database_url).await?;
    conn.execute(card_service::SCHEMA_SQL).await?;
    let (mut committed, mut rolled_back) = (0, 0);
    let mut rng = rand::rng();
    for _ in 0..args.changes {
        let card = card_service::Card {
            id: rng.random_range(1..=args.cards),
            holder: format!("holder {}", rng.random_range(1..1000)),
            credit_limit: rng.random_range(1..100) * 100,
            status: ["active", "frozen", "closed"][rng.random_range(0..3)].into(),
        };
        let mut tx = conn.begin().await?;
        let event_id = card_service::change_card(&mut tx, &card).await?;
        if rng.random_range(0..100) < args.rollback_percent {
            tx.rollback().await?;
            rolled_back += 1;
            println!("rolled back {event_id} (card {})", card.id);
        } else {
            tx.commit().await?;
            committed += 1;
            println!("committed {event_id} (card {})", card.id);
        }
    }
    eprintln!("{committed} changes committed, {rolled_back} rolled back");
    Ok(())
}
