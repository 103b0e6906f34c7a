//! The node's HTTP entry for its workloads (`node run --http ADDR`).
//!
//! `/<contract>/<workload>/<rest>` goes to that workload with the path `/<rest>` (the
//! query kept): one fresh instance per request, under the workload's limits. A request
//! whose Host is `<workload>.<contract>.<domain>` (a wildcard DNS name pointing at the
//! node) goes to that workload with its path unchanged. What the
//! entry answers itself is one `text/plain` line: 404 for an unknown contract or
//! workload, 503 for a contract in grace or a workload starting (with `Retry-After`) or
//! failed.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::Router;
use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};

use crate::compute::{Compute, Target};

/// Listen on `addr` for the entry: done before the node registers, so that a port in
/// use stops the start before the ledger has a node that will never run.
pub async fn listen(addr: SocketAddr) -> anyhow::Result<tokio::net::TcpListener> {
    tokio::net::TcpListener::bind(addr).await.map_err(|e| {
        anyhow::anyhow!(
            "cannot listen on {addr} for the workloads' HTTP entry: {e}; pick another with --http"
        )
    })
}

/// Serve the entry on `listener`; returns the bound address and the serving task.
pub async fn serve(
    listener: tokio::net::TcpListener,
    compute: Arc<Compute>,
) -> anyhow::Result<(SocketAddr, tokio::task::JoinHandle<()>)> {
    let bound = listener.local_addr()?;
    compute.set_http(bound);
    let app = Router::new().fallback(route).with_state(compute);
    let limits = peergrid_core::http::Limits::for_this_process();
    let task = tokio::spawn(peergrid_core::http::serve(listener, app, limits));
    Ok((bound, task))
}

/// What a 503 for a starting workload tells the client to wait: components are fetched
/// and compiled in seconds.
const STARTING_RETRY_AFTER_SECS: u64 = 2;

fn line(status: StatusCode, message: String) -> Response {
    (
        status,
        [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
        format!("{message}\n"),
    )
        .into_response()
}

/// The contract and workload a Host of `<workload>.<contract>.<domain>` names.
fn by_host(req: &Request) -> Option<(String, String)> {
    let host = req.headers().get(header::HOST)?.to_str().ok()?;
    let name = host.rsplit_once(':').map_or(host, |(name, _)| name);
    if name.parse::<std::net::IpAddr>().is_ok() || name.starts_with('[') {
        return None;
    }
    let mut labels = name.split('.');
    let workload = labels.next()?;
    let contract = labels.next()?;
    contract.parse::<u64>().ok()?;
    labels.next()?;
    Some((contract.to_string(), workload.to_string()))
}

async fn route(State(compute): State<Arc<Compute>>, mut req: Request) -> Response {
    let path = req.uri().path().to_string();
    let (contract, workload, rest) = match by_host(&req) {
        Some((contract, workload)) => {
            let rest = path.trim_start_matches('/').to_string();
            (contract, workload, rest)
        }
        None => {
            let mut parts = path.trim_start_matches('/').splitn(3, '/');
            let contract = parts.next().unwrap_or_default().to_string();
            let workload = parts.next().unwrap_or_default().to_string();
            let rest = parts.next().unwrap_or_default().to_string();
            (contract, workload, rest)
        }
    };
    if contract.is_empty() || workload.is_empty() {
        return line(
            StatusCode::NOT_FOUND,
            "this is a peergrid node's workload entry: paths are /<contract id>/<workload>/…, \
             or any path with Host <workload>.<contract id>.<domain>"
                .into(),
        );
    }
    let (prepared, env, limits) = match compute.target(&contract, &workload) {
        Target::Serve {
            prepared,
            env,
            limits,
        } => (prepared, env, limits),
        Target::NotFound(reason) => return line(StatusCode::NOT_FOUND, reason),
        Target::Paused => {
            return line(
                StatusCode::SERVICE_UNAVAILABLE,
                "paused: contract in grace period".into(),
            );
        }
        Target::Unavailable(reason) => return line(StatusCode::SERVICE_UNAVAILABLE, reason),
        Target::Starting(reason) => {
            let mut answer = line(StatusCode::SERVICE_UNAVAILABLE, reason);
            answer.headers_mut().insert(
                header::RETRY_AFTER,
                header::HeaderValue::from(STARTING_RETRY_AFTER_SECS),
            );
            return answer;
        }
    };
    let inner = match req.uri().query() {
        Some(q) => format!("/{rest}?{q}"),
        None => format!("/{rest}"),
    };
    match inner.parse::<Uri>() {
        Ok(uri) => *req.uri_mut() = uri,
        Err(e) => return line(StatusCode::BAD_REQUEST, format!("bad path {inner:?}: {e}")),
    }
    prepared.handle(req, &env, &limits).await.map(Body::new)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn host(value: &str) -> Option<(String, String)> {
        let req = Request::builder()
            .uri("/x")
            .header(header::HOST, value)
            .body(Body::empty())
            .expect("request");
        by_host(&req)
    }

    #[test]
    fn a_host_names_a_workload_only_as_workload_dot_contract_dot_domain() {
        let named = Some(("12".to_string(), "hello".to_string()));
        assert_eq!(host("hello.12.grid.example"), named);
        assert_eq!(host("hello.12.localhost:9010"), named);
        assert_eq!(host("127.0.0.1:9010"), None, "an address is not a name");
        assert_eq!(host("[::1]:9010"), None);
        assert_eq!(
            host("hello.twelve.example"),
            None,
            "the contract is a number"
        );
        assert_eq!(host("hello.12"), None, "a domain follows");
        assert_eq!(host("localhost:9010"), None);
    }
}
