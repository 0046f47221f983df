//! `ListEvents`: every filter, keyset pages, the fields of a stored event.

use super::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_sent_through_ingest_are_read_back_by_every_filter() {
    let SixEvents { db: _db, pipeline, mut query, key, shop, a, sent, base } =
        SixEvents::send().await;
    let second = |n: i64| base + chrono::Duration::seconds(n);
    let page = |path: &str| json!({"host": "shop.example", "path": path});
    let expect = |indexes: &[usize]| -> Vec<String> {
        indexes.iter().map(|&i| sent[i].event_id.clone()).collect()
    };
    let cases: Vec<(&str, EventFilter, Vec<String>)> = vec![
        ("no filter", EventFilter::default(), expect(&[0, 1, 2, 3, 4, 5])),
        (
            "session",
            EventFilter { session_id: a.to_string(), ..Default::default() },
            expect(&[0, 1, 2, 5]),
        ),
        (
            "category",
            EventFilter { category: "page interaction".into(), ..Default::default() },
            expect(&[0, 1, 3, 4, 5]),
        ),
        (
            "category and name",
            EventFilter {
                category: "page interaction".into(),
                name: "pageview".into(),
                ..Default::default()
            },
            expect(&[0, 3, 4, 5]),
        ),
        ("name", EventFilter { name: "submit".into(), ..Default::default() }, expect(&[2])),
        (
            "application by id",
            EventFilter { application: shop.to_string(), ..Default::default() },
            expect(&[0, 1, 2]),
        ),
        (
            "application by name",
            EventFilter { application: "blog".into(), ..Default::default() },
            expect(&[3, 4, 5]),
        ),
        (
            "half-open time range",
            EventFilter {
                from: Some(ts(second(1))),
                to: Some(ts(second(4))),
                ..Default::default()
            },
            expect(&[1, 2, 3]),
        ),
        (
            "from only",
            EventFilter { from: Some(ts(second(4))), ..Default::default() },
            expect(&[4, 5]),
        ),
        ("to only", EventFilter { to: Some(ts(second(1))), ..Default::default() }, expect(&[0])),
        (
            "empty range",
            EventFilter {
                from: Some(ts(second(2))),
                to: Some(ts(second(2))),
                ..Default::default()
            },
            vec![],
        ),
        (
            "data contains a value",
            EventFilter { data_contains: r#"{"path": "/checkout"}"#.into(), ..Default::default() },
            expect(&[2, 4, 5]),
        ),
        (
            "data contains a nested object",
            EventFilter {
                data_contains: r#"{"form": {"email": "a@b.c"}}"#.into(),
                ..Default::default()
            },
            expect(&[2]),
        ),
        (
            "data contains nothing particular",
            EventFilter { data_contains: "{}".into(), ..Default::default() },
            expect(&[0, 1, 2, 3, 4, 5]),
        ),
        (
            "everything at once",
            EventFilter {
                session_id: a.to_string(),
                category: "page interaction".into(),
                name: "pageview".into(),
                application: "blog".into(),
                from: Some(ts(second(0))),
                to: Some(ts(second(6))),
                data_contains: r#"{"path": "/checkout"}"#.into(),
            },
            expect(&[5]),
        ),
        (
            "nothing matches",
            EventFilter {
                category: "page interaction".into(),
                name: "submit".into(),
                ..Default::default()
            },
            vec![],
        ),
    ];
    for (what, filter, expected) in cases {
        for page_size in [0, 1, 2] {
            let events = list_all(&mut query, &key, filter.clone(), page_size).await;
            assert_eq!(ids(&events), expected, "{what}, page size {page_size}");
        }
    }

    // The fields of a stored event.
    let events = list_all(&mut query, &key, EventFilter::default(), 0).await;
    let first = &events[0];
    assert_eq!(first.session_id, a.to_string());
    assert_eq!(first.application_id, shop.to_string());
    assert_eq!((first.category.as_str(), first.name.as_str()), ("page interaction", "pageview"));
    let data: serde_json::Value = serde_json::from_str(&first.data_json).unwrap();
    assert_eq!(data, page("/"));
    assert_eq!(at(&first.timestamp), second(0));
    assert_eq!(first.schema_version, 1);
    assert!(at(&first.received_at) > second(0) && at(&first.stored_at) >= at(&first.received_at));

    pipeline.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pages_neither_skip_nor_repeat_while_events_arrive() {
    let (db, app, key) = db_with_key("analyst", &["read", "admin"]).await;
    let (pipeline, mut query) = query_server(&db).await;

    // 60 events, three per timestamp (the event id breaks the ties), straddling a month boundary
    // so pages cross partitions.
    let session = Uuid::new_v4();
    let month = Utc::now().date_naive().with_day0(0).unwrap().and_hms_opt(0, 0, 0).unwrap();
    let base = month.and_utc() - chrono::Duration::seconds(10);
    let mut original = Vec::new();
    for i in 0..60 {
        let at = base + chrono::Duration::seconds(i / 3);
        original.push(insert_event(&db.pool, app, session, "c", at).await);
    }

    let filters = [
        ("no filter", EventFilter::default()),
        ("session", EventFilter { session_id: session.to_string(), ..Default::default() }),
        ("category", EventFilter { category: "c".into(), ..Default::default() }),
    ];
    for (what, filter) in filters {
        let mut seen: Vec<(DateTime<Utc>, Uuid)> = Vec::new();
        let mut page_token = String::new();
        let mut pages = 0;
        loop {
            let request =
                ListEventsRequest { filter: Some(filter.clone()), page_size: 7, page_token };
            let page = query.list_events(authorized(request, &key)).await.unwrap().into_inner();
            seen.extend(
                page.events.iter().map(|e| (at(&e.timestamp), e.event_id.parse().unwrap())),
            );
            pages += 1;
            if page.next_page_token.is_empty() {
                break;
            }
            page_token = page.next_page_token;
            // Between pages: an event before everything, one tied with an original timestamp,
            // one after everything.
            let (last_at, _) = *seen.last().unwrap();
            for at in
                [base - chrono::Duration::hours(1), last_at, base + chrono::Duration::hours(1)]
            {
                insert_event(&db.pool, app, session, "c", at).await;
            }
        }
        assert!(pages >= 9, "{what}: paged through ({pages} pages)");
        assert!(seen.windows(2).all(|w| w[0] < w[1]), "{what}: strictly increasing, no repeats");
        let seen_ids: HashSet<Uuid> = seen.iter().map(|(_, id)| *id).collect();
        for id in &original {
            assert!(seen_ids.contains(id), "{what}: original event {id} missed");
        }
    }
    pipeline.stop().await;
}
