//! `eye events`: stored events matching a filter, oldest first, as a table or JSON lines.
//!
//! Pages are followed until `--limit` events are printed; when more match, a note on stderr says
//! so (stdout stays the events alone, for scripts).

use eye_proto::v1::EventFilter;

use super::read::{self, EVENT_HEADER};
use crate::{cli::EventsArgs, table};

/// The request filter of the command line's flags.
pub fn filter(args: &EventsArgs) -> EventFilter {
    EventFilter {
        session_id: args.session.map(|id| id.to_string()).unwrap_or_default(),
        category: args.category.clone().unwrap_or_default(),
        name: args.name.clone().unwrap_or_default(),
        application: args.application.clone().unwrap_or_default(),
        from: args.from.map(event_model::envelope::to_timestamp),
        to: args.to.map(event_model::envelope::to_timestamp),
        data_contains: args.contains.clone().unwrap_or_default(),
    }
}

/// Runs `eye events`.
pub async fn run(args: EventsArgs) -> anyhow::Result<()> {
    let client = read::connect(&args.query).await?;
    let listing = client
        .list_events(filter(&args), args.limit as usize)
        .await
        .map_err(|status| read::refused(&args.query, &status))?;
    let mut out = String::new();
    if args.query.json {
        for event in &listing.items {
            read::push_json(&mut out, &read::event_json(event));
        }
    } else if listing.items.is_empty() {
        out.push_str("no events match\n");
    } else {
        let rows: Vec<_> = listing.items.iter().map(read::event_row).collect();
        out.push_str(&table::render(EVENT_HEADER, &rows));
    }
    read::emit(&out)?;
    if listing.truncated {
        eprintln!(
            "(the first {} events; more match: raise --limit or narrow the filter)",
            listing.items.len()
        );
    }
    Ok(())
}
