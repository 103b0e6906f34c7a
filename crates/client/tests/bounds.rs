//! A validator whose answer never ends (or is far larger than any honest one) gets no more
//! of the client's memory than the bound: the client gives up on it and says why.

use std::time::Duration;

use peergrid_client::{Client, Event, FinalizedBlock, TxOutcome};
use peergrid_core::{Amount, Hash, Keypair};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

fn block() -> FinalizedBlock {
    let to = Keypair::from_seed([1; 32]).account();
    FinalizedBlock {
        height: 1,
        digest: format!("{:064x}", 1),
        time_ms: 1_700_000_000_000,
        root: Hash([1; 32]),
        txs: vec![TxOutcome {
            hash: Hash([7; 32]),
            signer: to,
            result: Ok(vec![Event::Transferred {
                from: to,
                to,
                amount: Amount(1),
            }]),
        }],
        end_events: Vec::new(),
    }
}

/// A validator answering every request with `head` and then `body` repeated `times` times
/// (never ending if `None`); returns its URL.
async fn validator(head: &'static str, body: Vec<u8>, times: Option<usize>) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("a free port");
    let url = format!("http://{}", listener.local_addr().expect("an address"));
    tokio::spawn(async move {
        while let Ok((mut tcp, _)) = listener.accept().await {
            let body = body.clone();
            tokio::spawn(async move {
                let mut request = Vec::new();
                let mut buf = [0u8; 1024];
                while !request.windows(4).any(|w| w == b"\r\n\r\n") {
                    match tcp.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => request.extend_from_slice(&buf[..n]),
                    }
                }
                if tcp.write_all(head.as_bytes()).await.is_err() {
                    return;
                }
                let mut sent = 0;
                while times.is_none_or(|t| sent < t) {
                    if tcp.write_all(&body).await.is_err() {
                        return;
                    }
                    sent += 1;
                }
            });
        }
    });
    url
}

#[tokio::test]
async fn an_endless_answer_is_cut_off() {
    // JSON whitespace forever: valid so far, so only a bound stops the read.
    let endless = validator(
        "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\nconnection: close\r\n\r\n[",
        vec![b' '; 1 << 20],
        None,
    )
    .await;
    let client = Client::new(vec![endless]);
    let err = tokio::time::timeout(Duration::from_secs(60), client.block(1))
        .await
        .expect("the client gives up")
        .expect_err("no block from an endless answer");
    assert!(err.to_string().contains("bytes was refused"), "{err}");

    // An honest answer of the same route reads as before.
    let json = serde_json::to_vec(&block()).expect("a block serializes");
    let head: &'static str = Box::leak(
        format!(
            "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
            json.len()
        )
        .into_boxed_str(),
    );
    let honest = Client::new(vec![validator(head, json, Some(1)).await]);
    assert_eq!(honest.block(1).await.expect("the block"), block());
}
