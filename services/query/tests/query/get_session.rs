//! `GetSession`: a session's summary and its events in time order.

use super::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_is_read_in_time_order_with_its_applications() {
    let six = SixEvents::send().await;
    let SixEvents { ref key, shop, a, .. } = six;
    let mut query = six.query.clone();
    let (second, expect) = (|n| six.second(n), |i: &[usize]| six.expect(i));
    // A session: its summary and its events in time order, paginated.
    let mut pages = Vec::new();
    let mut page_token = String::new();
    loop {
        let request = GetSessionRequest { session_id: a.to_string(), page_size: 3, page_token };
        let response = query.get_session(authorized(request, key)).await.unwrap().into_inner();
        let session = response.session.unwrap();
        assert_eq!(session.event_count, 4);
        let apps: HashSet<_> = session.application_ids.into_iter().collect();
        assert_eq!(apps.len(), 2, "both applications sent events for the session");
        assert!(apps.contains(&shop.to_string()));
        assert_eq!((at(&session.first_seen_at), at(&session.last_seen_at)), (second(0), second(5)));
        pages.push(ids(&response.events));
        if response.next_page_token.is_empty() {
            break;
        }
        page_token = response.next_page_token;
    }
    assert_eq!(pages, [expect(&[0, 1, 2]), expect(&[5])]);

    let unknown =
        GetSessionRequest { session_id: Uuid::new_v4().to_string(), ..Default::default() };
    let status = query.get_session(authorized(unknown, key)).await.unwrap_err();
    assert_eq!(status.code(), Code::NotFound);
    six.pipeline.stop().await;
}
