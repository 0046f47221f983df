//! `ListErrors`: quarantined events by filter, newest first, with counts per reason.

use super::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn errors_are_listed_by_filter_newest_first_with_counts() {
    let (db, shop, key) = db_with_key("shop", &["read", "admin"]).await;
    let (blog, _) = create_key(&db.pool, "blog", &["ingest"]).await;
    let (pipeline, mut query) = query_server(&db).await;

    let base = Utc::now().trunc_subsecs(6) - chrono::Duration::hours(1);
    let minute = |n: i64| base + chrono::Duration::minutes(n);
    // 20 errors: reasons, types, applications and failure times varied.
    let mut all = Vec::new();
    for i in 0..20i64 {
        let id = insert_error(
            &db.pool,
            ErrorRow {
                app: if i % 2 == 0 { shop } else { blog },
                category: if i % 4 < 2 { "page interaction" } else { "form interaction" },
                name: if i % 3 == 0 { "pageview" } else { "submit" },
                reason: if i % 5 == 0 { "timestamp_in_future" } else { "schema_violation" },
                failed_at: minute(i),
                received_at: minute(i),
                outcome: if i == 7 { Some("still_invalid") } else { None },
            },
        )
        .await;
        all.push((i, id));
    }
    let expect = |keep: &dyn Fn(i64) -> bool| -> Vec<i64> {
        let mut ids: Vec<i64> = all.iter().filter(|(i, _)| keep(*i)).map(|(_, id)| *id).collect();
        ids.reverse();
        ids
    };
    let cases: Vec<(&str, ErrorFilter, Vec<i64>)> = vec![
        ("no filter", ErrorFilter::default(), expect(&|_| true)),
        (
            "reason",
            ErrorFilter { reason: "timestamp_in_future".into(), ..Default::default() },
            expect(&|i| i % 5 == 0),
        ),
        (
            "category",
            ErrorFilter { category: "form interaction".into(), ..Default::default() },
            expect(&|i| i % 4 >= 2),
        ),
        (
            "category and name",
            ErrorFilter {
                category: "page interaction".into(),
                name: "pageview".into(),
                ..Default::default()
            },
            expect(&|i| i % 4 < 2 && i % 3 == 0),
        ),
        (
            "application by name",
            ErrorFilter { application: "blog".into(), ..Default::default() },
            expect(&|i| i % 2 == 1),
        ),
        (
            "application by id",
            ErrorFilter { application: shop.to_string(), ..Default::default() },
            expect(&|i| i % 2 == 0),
        ),
        (
            "failed_at range",
            ErrorFilter {
                from: Some(ts(minute(5))),
                to: Some(ts(minute(9))),
                ..Default::default()
            },
            expect(&|i| (5..9).contains(&i)),
        ),
        (
            "replay outcome",
            ErrorFilter {
                replay_outcomes: vec![ReplayOutcome::StillInvalid.into()],
                ..Default::default()
            },
            expect(&|i| i == 7),
        ),
        (
            "not replayed and reason",
            ErrorFilter {
                reason: "schema_violation".into(),
                replay_outcomes: vec![ReplayOutcome::NotReplayed.into()],
                ..Default::default()
            },
            expect(&|i| i % 5 != 0 && i != 7),
        ),
    ];
    for (what, filter, expected) in cases {
        let mut listed = Vec::new();
        let mut page_token = String::new();
        let mut counts = None;
        loop {
            let request =
                ListErrorsRequest { filter: Some(filter.clone()), page_size: 3, page_token };
            let page = query.list_errors(authorized(request, &key)).await.unwrap().into_inner();
            listed.extend(page.errors.iter().map(|e| e.id));
            let page_counts: Vec<_> =
                page.counts.iter().map(|c| (c.reason.clone(), c.count)).collect();
            // Counts cover the whole filter, the same on every page.
            assert_eq!(counts.get_or_insert_with(|| page_counts.clone()), &page_counts, "{what}");
            if page.next_page_token.is_empty() {
                break;
            }
            page_token = page.next_page_token;
        }
        assert_eq!(listed, expected, "{what}");
        let total: i64 = counts.unwrap().iter().map(|(_, n)| n).sum();
        assert_eq!(total, expected.len() as i64, "{what}: counts");
    }
    pipeline.stop().await;
}
