//! What a delivered event costs the database in row versions. A queue row is written
//! twice: inserted when its event is routed (already claimed, in a drain) and
//! rewritten when its attempt ends. The rewrite logs only the changed bytes when it
//! stays on the row's page, and the whole row (payload included) plus a lock record
//! when it must move; `webhook_queue` keeps half of each page free for that.

use relay_tests::TestDb;

/// A route batch as big as a drain's, each event as wide as a `leads` row's.
const EVENTS: i64 = 64;
const URL: &str = "http://127.0.0.1:9/hook";

/// The page and claim token of every claimed row, by id.
const CLAIMED: &str = "SELECT id, (ctid::text::point)[0]::int8,
           (extract(epoch FROM lease_expires_at) * 1000000)::int8
    FROM webhook_queue WHERE status = 'sending' ORDER BY id";

#[tokio::test]
async fn a_delivered_rows_outcome_is_written_on_its_own_page() {
    let db = TestDb::migrated().await;
    let client = db.client().await;
    client
        .execute(
            "INSERT INTO webhook_events (event_type, entity_type, entity_id, payload)
             SELECT 'lead_scraped', 'lead', g,
                    jsonb_build_object('id', g, 'lead_id', g, 'business_name', 'Bench Co ' || g,
                                       'category', 'software', 'location', 'Berlin',
                                       'email', 'lead' || g || '@example.com',
                                       'website', 'https://example.com', 'status', 'new',
                                       'created_at', now(), 'updated_at', now(),
                                       'notes', repeat('x', 200))
             FROM generate_series(1, $1::int8) g",
            &[&EVENTS],
        )
        .await
        .expect("fill the outbox");

    // One route statement, as a drain's: every event routed and claimed at once.
    let none: Vec<String> = Vec::new();
    let no_load: Vec<i32> = Vec::new();
    client
        .query(
            relay_daemon::claim::ROUTE_AND_CLAIM_FIRST.as_str(),
            &[
                &vec!["lead_scraped"],
                &vec![URL],
                &vec![0i32],
                &vec![true],
                &none,
                &no_load,
                &EVENTS,
                &(EVENTS as i32),
                &EVENTS,
                &vec![3i32],
                &30f64,
                &vec![None::<String>],
                &vec![None::<String>],
                &7i32,
            ],
        )
        .await
        .expect("route and claim");
    let claimed: Vec<(i64, i64, i64)> = client
        .query(CLAIMED, &[])
        .await
        .expect("claimed rows")
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2)))
        .collect();
    assert_eq!(
        claimed.len() as i64,
        EVENTS,
        "every event routed and claimed"
    );

    // Their outcomes in one statement, as the recorder writes a drain's.
    let n = claimed.len();
    let ids: Vec<i64> = claimed.iter().map(|c| c.0).collect();
    let tokens: Vec<i64> = claimed.iter().map(|c| c.2).collect();
    let row = client
        .query_one(
            relay_daemon::outcome::RECORD,
            &[
                &ids,
                &tokens,
                &vec!["sent"; n],
                &vec![0i32; n],
                &vec![0f64; n],
                &vec![None::<String>; n],
                &vec![Some(200i32); n],
                &vec![1i32; n],
                &vec![3i32; n],
                &vec![None::<String>; n],
                &vec!["lead_scraped"; n],
                &vec![URL; n],
                &vec![None::<String>; n],
            ],
        )
        .await
        .expect("record the outcomes");
    let stale: Vec<i64> = row.get(0);
    assert!(stale.is_empty(), "every row was ours: {stale:?}");

    let delivered = client
        .query(
            "SELECT id, (ctid::text::point)[0]::int8 FROM webhook_queue
             WHERE status = 'sent' ORDER BY id",
            &[],
        )
        .await
        .expect("delivered rows");
    assert_eq!(delivered.len(), n, "every outcome recorded");
    let moved: Vec<(i64, i64, i64)> = delivered
        .iter()
        .map(|r| (r.get::<_, i64>(0), r.get::<_, i64>(1)))
        .zip(&claimed)
        .filter(|((_, after), (_, before, _))| after != before)
        .map(|((id, after), (_, before, _))| (id, *before, after))
        .collect();
    assert!(
        moved.is_empty(),
        "{} of {n} rows rewritten on another page (id, from, to): {moved:?}",
        moved.len()
    );
}
