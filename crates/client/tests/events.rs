//! Following finalized blocks against validators that misbehave: a client must neither hang
//! on a silent one nor stop yielding after a block it cannot read, and one that refuses for
//! load is asked again when its `Retry-After` says, not sooner.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Body;
use axum::extract::{Query, State};
use axum::response::Response;
use axum::routing::get;
use futures::StreamExt;
use peergrid_client::{Client, EVENT_BYTES_MAX, EVENTS_SILENCE_MAX, FinalizedBlock};
use peergrid_core::Hash;
use serde::Deserialize;

/// What a fake validator does when asked for events from a height.
#[derive(Clone, Copy)]
enum Behaviour {
    /// Sends every block from the asked height, then keeps the stream open with keep-alives.
    Honest,
    /// Sends the asked block, then a block that does not parse, then keeps the stream open.
    Garbles,
    /// Sends the asked block, then nothing at all, keeping the connection open.
    Stalls,
    /// Answers its first `times` requests with `status` and `Retry-After: retry_after`, as
    /// a validator at its limit of event streams does; then is honest.
    Refuses {
        status: u16,
        retry_after: &'static str,
        times: usize,
    },
    /// Sends the asked block, then block 1 over and over, as a validator replaying old
    /// blocks would; the stream never ends.
    Replays,
}

#[derive(Clone)]
struct Fake {
    behaviour: Behaviour,
    /// The `from` of every request received.
    asked: Arc<Mutex<Vec<u64>>>,
    /// When each request arrived.
    when: Arc<Mutex<Vec<Instant>>>,
}

#[derive(Deserialize)]
struct From {
    from: u64,
}

fn block(height: u64) -> String {
    let b = FinalizedBlock {
        height,
        digest: format!("{height:064x}"),
        time_ms: 1_700_000_000_000 + height,
        root: Hash([height as u8; 32]),
        txs: Vec::new(),
        end_events: Vec::new(),
    };
    let json = serde_json::to_string(&b).expect("a block serializes");
    format!("id: {height}\nevent: block\ndata: {json}\n\n")
}

async fn events(State(fake): State<Fake>, Query(q): Query<From>) -> Response {
    let count = {
        let mut asked = fake.asked.lock().expect("lock");
        asked.push(q.from);
        fake.when.lock().expect("lock").push(Instant::now());
        asked.len()
    };
    if let Behaviour::Refuses {
        status,
        retry_after,
        times,
    } = fake.behaviour
        && count <= times
    {
        return Response::builder()
            .status(status)
            .header("retry-after", retry_after)
            .header("content-type", "application/json")
            .body(Body::from(
                r#"{"error":"busy","message":"this validator serves its maximum of event streams"}"#,
            ))
            .expect("a response");
    }
    if let Behaviour::Replays = fake.behaviour {
        let replay = futures::stream::iter(std::iter::once(block(q.from)))
            .chain(futures::stream::repeat_with(|| block(1)))
            .map(|s| Ok::<_, std::convert::Infallible>(s.into_bytes()));
        return Response::builder()
            .header("content-type", "text/event-stream")
            .body(Body::from_stream(replay))
            .expect("a response");
    }
    let first = futures::stream::iter(match fake.behaviour {
        Behaviour::Honest | Behaviour::Refuses { .. } | Behaviour::Replays => {
            (q.from..q.from + 5).map(block).collect()
        }
        Behaviour::Garbles => vec![
            block(q.from),
            format!(
                "event: block\ndata: {{\"height\": {}, \"digest\": 7\n\n",
                q.from + 1
            ),
        ],
        Behaviour::Stalls => vec![block(q.from)],
    });
    let rest = futures::stream::unfold(fake.behaviour, |b| async move {
        match b {
            Behaviour::Stalls => futures::future::pending::<()>().await,
            _ => tokio::time::sleep(Duration::from_secs(1)).await,
        }
        Some((": keep-alive\n\n".to_string(), b))
    });
    let body = first
        .chain(rest)
        .map(|s| Ok::<_, std::convert::Infallible>(s.into_bytes()));
    Response::builder()
        .header("content-type", "text/event-stream")
        .body(Body::from_stream(body))
        .expect("a response")
}

/// A fake validator on a free loopback port; its URL and the heights it was asked from.
async fn fake(behaviour: Behaviour) -> (String, Arc<Mutex<Vec<u64>>>) {
    let (url, asked, _) = fake_timed(behaviour).await;
    (url, asked)
}

/// [`fake`], also giving when each request arrived.
async fn fake_timed(
    behaviour: Behaviour,
) -> (String, Arc<Mutex<Vec<u64>>>, Arc<Mutex<Vec<Instant>>>) {
    let asked = Arc::new(Mutex::new(Vec::new()));
    let when = Arc::new(Mutex::new(Vec::new()));
    let app = Router::new()
        .route("/v1/events", get(events))
        .with_state(Fake {
            behaviour,
            asked: asked.clone(),
            when: when.clone(),
        });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("a free port");
    let url = format!("http://{}", listener.local_addr().expect("an address"));
    tokio::spawn(async move { axum::serve(listener, app).await });
    (url, asked, when)
}

/// The gaps between consecutive requests.
fn gaps(when: &Mutex<Vec<Instant>>) -> Vec<Duration> {
    let when = when.lock().expect("lock");
    when.windows(2).map(|w| w[1] - w[0]).collect()
}

/// The heights of the first `n` blocks the client yields from height 1, within `deadline`.
async fn follow(client: &Client, n: usize, deadline: Duration) -> Vec<u64> {
    let heights = client
        .events(1)
        .take(n)
        .map(|b| b.height)
        .collect::<Vec<_>>();
    tokio::time::timeout(deadline, heights)
        .await
        .expect("the client kept yielding blocks")
}

#[tokio::test]
async fn an_unreadable_block_makes_the_client_resume_from_another_validator() {
    let (bad, bad_asked) = fake(Behaviour::Garbles).await;
    let (good, good_asked) = fake(Behaviour::Honest).await;
    let client = Client::new(vec![bad, good]);
    assert_eq!(
        follow(&client, 4, Duration::from_secs(10)).await,
        vec![1, 2, 3, 4]
    );
    assert_eq!(*bad_asked.lock().expect("lock"), vec![1]);
    // The honest validator was asked for the block the other could not give, not later ones.
    assert_eq!(good_asked.lock().expect("lock").first(), Some(&2));
}

#[tokio::test]
async fn a_silent_validator_is_left_for_another_once_its_keep_alives_stop() {
    let (stalled, _) = fake(Behaviour::Stalls).await;
    let (good, good_asked) = fake(Behaviour::Honest).await;
    let client = Client::new(vec![stalled, good]);
    let start = std::time::Instant::now();
    assert_eq!(
        follow(&client, 3, EVENTS_SILENCE_MAX * 3).await,
        vec![1, 2, 3]
    );
    let took = start.elapsed();
    assert!(
        took >= EVENTS_SILENCE_MAX && took < EVENTS_SILENCE_MAX + Duration::from_secs(5),
        "moved on after {took:?}, expected just past {EVENTS_SILENCE_MAX:?} of silence"
    );
    assert_eq!(good_asked.lock().expect("lock").first(), Some(&2));
}

#[tokio::test]
async fn a_validator_refusing_for_load_is_asked_again_after_its_retry_after() {
    for status in [429, 503] {
        let (url, asked, when) = fake_timed(Behaviour::Refuses {
            status,
            retry_after: "1",
            times: 2,
        })
        .await;
        let client = Client::new(vec![url]);
        assert_eq!(
            follow(&client, 3, Duration::from_secs(10)).await,
            vec![1, 2, 3],
            "{status}: the blocks once the validator accepts"
        );
        assert_eq!(*asked.lock().expect("lock"), vec![1, 1, 1], "{status}");
        // Without the header the client would come back after 100 ms, then 200 ms.
        for gap in gaps(&when) {
            assert!(
                gap >= Duration::from_millis(950) && gap < Duration::from_secs(3),
                "{status}: asked again after {gap:?}, Retry-After said 1 s"
            );
        }
    }
}

#[tokio::test]
async fn a_retry_after_of_zero_does_not_make_the_client_ask_in_a_loop() {
    let (url, asked, when) = fake_timed(Behaviour::Refuses {
        status: 503,
        retry_after: "0",
        times: 3,
    })
    .await;
    let client = Client::new(vec![url]);
    assert_eq!(
        follow(&client, 2, Duration::from_secs(10)).await,
        vec![1, 2]
    );
    assert_eq!(asked.lock().expect("lock").len(), 4);
    // The client's own backoff (100, 200, 400 ms) still holds.
    let gaps = gaps(&when);
    for (gap, least) in gaps.iter().zip([100, 200, 400]) {
        assert!(
            *gap >= Duration::from_millis(least - 10),
            "asked again after {gap:?}, the backoff is {least} ms: {gaps:?}"
        );
    }
}

#[tokio::test]
async fn a_validator_replaying_old_blocks_is_left_for_another() {
    let (replaying, replaying_asked) = fake(Behaviour::Replays).await;
    let (good, good_asked) = fake(Behaviour::Honest).await;
    let client = Client::new(vec![replaying, good]);
    assert_eq!(
        follow(&client, 3, Duration::from_secs(10)).await,
        vec![1, 2, 3]
    );
    assert_eq!(*replaying_asked.lock().expect("lock"), vec![1]);
    assert_eq!(good_asked.lock().expect("lock").first(), Some(&2));
}

/// A validator that answers with the asked block, then one event that never ends (a data
/// line of `x` for ever, or data lines with no blank line between), whatever it is asked;
/// its URL, and how many bytes it wrote before the client hung up: on event streams, and
/// on the other requests (the client's status probe).
async fn endless(lines: bool) -> (String, Arc<Mutex<usize>>, Arc<Mutex<usize>>) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("a free port");
    let url = format!("http://{}", listener.local_addr().expect("an address"));
    let written = Arc::new(Mutex::new(0));
    let elsewhere = Arc::new(Mutex::new(0));
    let (events, other) = (written.clone(), elsewhere.clone());
    tokio::spawn(async move {
        while let Ok((mut tcp, _)) = listener.accept().await {
            let (events, other) = (events.clone(), other.clone());
            tokio::spawn(async move {
                let mut request = Vec::new();
                let mut buf = [0u8; 1024];
                while !request.windows(4).any(|w| w == b"\r\n\r\n") {
                    match tcp.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => request.extend_from_slice(&buf[..n]),
                    }
                }
                let count = match request.starts_with(b"GET /v1/events") {
                    true => events,
                    false => other,
                };
                let head = format!(
                    "HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\nconnection: close\r\n\r\n{}data: ",
                    block(1)
                );
                if tcp.write_all(head.as_bytes()).await.is_err() {
                    return;
                }
                let chunk = if lines {
                    "x\ndata: ".repeat(8 << 10)
                } else {
                    "x".repeat(64 << 10)
                };
                while tcp.write_all(chunk.as_bytes()).await.is_ok() {
                    *count.lock().expect("lock") += chunk.len();
                }
            });
        }
    });
    (url, written, elsewhere)
}

#[tokio::test]
async fn an_event_that_never_ends_is_cut_off_at_its_bound() {
    for lines in [false, true] {
        let (hostile, written, elsewhere) = endless(lines).await;
        let (good, good_asked) = fake(Behaviour::Honest).await;
        let client = Client::new(vec![hostile, good]);
        assert_eq!(
            follow(&client, 3, Duration::from_secs(60)).await,
            vec![1, 2, 3],
            "lines: {lines}"
        );
        assert_eq!(good_asked.lock().expect("lock").first(), Some(&2));
        // Hung up just past the bound, give or take what the sockets buffer.
        let written = *written.lock().expect("lock");
        assert!(
            (EVENT_BYTES_MAX..EVENT_BYTES_MAX + (16 << 20)).contains(&written),
            "lines: {lines}: {written} bytes written before the client hung up"
        );
        // The client's status probe is read within its own, smaller bound.
        let elsewhere = *elsewhere.lock().expect("lock");
        assert!(
            elsewhere < 16 << 20,
            "lines: {lines}: {elsewhere} bytes of other answers read"
        );
    }
}
