//! HTTP services: one fresh instance of a `wasi:http/proxy` component per request.
//!
//! A request runs in its own task, under its limits: memory (all memories of the
//! instance together), CPU time (checked at every epoch tick), and wall time (from the
//! request until the guest returns, so the response body is included). A failure
//! before the response starts becomes a one-line `text/plain` answer: 500 for a trap,
//! 503 for an exhausted CPU or memory limit or no instance free within the wall time
//! (with `Retry-After` when others' load caused it), 504 for the wall time. A failure
//! after the response started can only cut the body short. Either way it is counted in
//! the workload's metrics, written to the service's log, and nothing else is disturbed.

use crate::deployment::Limits;
use crate::host::{Metered, new_store};
use crate::runtime::{Prepared, classify};
use bytes::Bytes;
use http::{HeaderValue, StatusCode, header};
use http_body::{Body, Frame, SizeHint};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;
use wasmtime_wasi_http::WasiHttpView;
use wasmtime_wasi_http::p2::bindings::http::types::Scheme;
use wasmtime_wasi_http::p2::body::HyperOutgoingBody;

use crate::metrics::{LimitExceeded, WorkloadMetrics};

/// The error type of a request body given to [`Prepared::handle`].
pub type RequestBodyError = Box<dyn std::error::Error + Send + Sync>;

/// A response body cut short: the workload failed after its response had started.
#[derive(Debug, thiserror::Error)]
#[error("response body from the workload failed: {0}")]
pub struct ResponseBodyError(String);

/// The body of a workload's response, counted into its metrics as it is sent.
pub struct ResponseBody {
    kind: BodyKind,
}

enum BodyKind {
    Full(Option<Bytes>),
    Guest {
        body: HyperOutgoingBody,
        metrics: Arc<WorkloadMetrics>,
    },
}

impl ResponseBody {
    fn full(bytes: Bytes) -> Self {
        ResponseBody {
            kind: BodyKind::Full(Some(bytes)),
        }
    }
}

impl Body for ResponseBody {
    type Data = Bytes;
    type Error = ResponseBodyError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, ResponseBodyError>>> {
        match &mut self.get_mut().kind {
            BodyKind::Full(bytes) => Poll::Ready(bytes.take().map(|b| Ok(Frame::data(b)))),
            BodyKind::Guest { body, metrics } => match Pin::new(body).poll_frame(cx) {
                Poll::Ready(Some(Ok(frame))) => {
                    if let Some(data) = frame.data_ref() {
                        metrics.served(data.len());
                    }
                    Poll::Ready(Some(Ok(frame)))
                }
                Poll::Ready(Some(Err(e))) => {
                    Poll::Ready(Some(Err(ResponseBodyError(format!("{e:?}")))))
                }
                Poll::Ready(None) => Poll::Ready(None),
                Poll::Pending => Poll::Pending,
            },
        }
    }

    fn is_end_stream(&self) -> bool {
        match &self.kind {
            BodyKind::Full(bytes) => bytes.is_none(),
            BodyKind::Guest { body, .. } => body.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.kind {
            BodyKind::Full(Some(bytes)) => {
                SizeHint::with_exact(u64::try_from(bytes.len()).unwrap_or(u64::MAX))
            }
            BodyKind::Full(None) => SizeHint::with_exact(0),
            BodyKind::Guest { body, .. } => body.size_hint(),
        }
    }
}

/// A one-line `text/plain` answer from the host, not from the workload.
pub(crate) fn text_response(status: StatusCode, message: &str) -> hyper::Response<ResponseBody> {
    let mut resp = hyper::Response::new(ResponseBody::full(Bytes::from(format!("{message}\n"))));
    *resp.status_mut() = status;
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    resp
}

/// How a request's run and its answer ended, as far as each side has seen.
#[derive(Default)]
struct Ending {
    /// The status the guest answered with, once it did.
    answered: Option<StatusCode>,
    /// Why the run failed, once it did, while no answer was seen.
    failure: Option<String>,
}

/// The request a host answer was for, as its log line names it: method and path (the
/// query left out, as it may carry secrets).
#[derive(Clone)]
struct Asked {
    method: http::Method,
    path: String,
}

/// Most bytes of a path a log line gives.
const LOGGED_PATH_BYTES_MAX: usize = 200;

impl Asked {
    fn of<B>(req: &hyper::Request<B>) -> Asked {
        Asked {
            method: req.method().clone(),
            path: loggable(req.uri().path()),
        }
    }

    /// The log line for a run that failed after its answer began: the client may have
    /// got less than the whole body.
    fn cut_short(&self, status: StatusCode, why: &str) -> String {
        format!(
            "{} {} {}: failed after its answer began, which may be cut short: {why}",
            status.as_u16(),
            self.method,
            self.path
        )
    }
}

/// `path` as a log line may show it: bytes outside printable ASCII percent-encoded (a
/// path may carry raw UTF-8, and some of it reads as a line break or a control to
/// terminals and tools), cut at [`LOGGED_PATH_BYTES_MAX`].
fn loggable(path: &str) -> String {
    let mut out = String::with_capacity(path.len().min(LOGGED_PATH_BYTES_MAX) + 3);
    for b in path.bytes() {
        if out.len() >= LOGGED_PATH_BYTES_MAX {
            out.push('…');
            break;
        }
        if b.is_ascii_graphic() {
            out.push(char::from(b));
        } else if out.len() + 3 > LOGGED_PATH_BYTES_MAX {
            out.push('…');
            break;
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

impl Prepared {
    /// The host's own answer to `asked`, written to the service's log too: the builder
    /// reading `peergrid app logs` sees why requests failed, not only what the app printed.
    fn host_answer(
        &self,
        asked: &Asked,
        status: StatusCode,
        message: &str,
        retry_after_secs: Option<u64>,
    ) -> hyper::Response<ResponseBody> {
        self.inner.log.note(&format!(
            "{} {} {}: {message}",
            status.as_u16(),
            asked.method,
            asked.path
        ));
        let mut resp = text_response(status, message);
        if let Some(secs) = retry_after_secs {
            resp.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(secs));
        }
        resp
    }
}

fn to_wasi_http_error(e: RequestBodyError) -> wasmtime_wasi_http::Error {
    match e.downcast::<hyper::Error>() {
        Ok(e) => wasmtime_wasi_http::Error::Hyper(*e),
        Err(e) => wasmtime_wasi_http::Error::InternalError(Some(e.to_string())),
    }
}

impl Prepared {
    /// Answers one HTTP request with a fresh instance, under `limits`, with `env` set.
    ///
    /// Never fails: what goes wrong becomes an error response with a one-line reason,
    /// and is counted in [`Prepared::metrics`].
    pub async fn handle<B>(
        &self,
        req: hyper::Request<B>,
        env: &[(String, String)],
        limits: &Limits,
    ) -> hyper::Response<ResponseBody>
    where
        B: Body<Data = Bytes> + Send + 'static,
        B::Error: Into<RequestBodyError>,
    {
        let metrics = self.inner.metrics.clone();
        metrics.request_started();
        let asked = Asked::of(&req);
        let Some(pre) = self.proxy_pre().cloned() else {
            metrics.error();
            // Not written to the log: a running job's log is its output, not anyone's
            // to write to by asking it over HTTP.
            return text_response(
                StatusCode::INTERNAL_SERVER_ERROR,
                "this workload is a job, not an HTTP service",
            );
        };
        let limits = self.effective_limits(limits);
        let wall = Duration::from_millis(limits.wall_ms);
        let waited = std::time::Instant::now();
        let instance = match self.instance(wall).await {
            Ok(permit) => permit,
            Err(reason) => {
                metrics.error();
                return self.host_answer(
                    &asked,
                    StatusCode::SERVICE_UNAVAILABLE,
                    &reason,
                    Some(crate::runtime::BUSY_RETRY_AFTER_SECS),
                );
            }
        };
        let meter = self.meter(&limits);
        let output = (self.inner.log.clone(), self.inner.log.clone());
        let (wasi, on_data) = match self.wasi_ctx(&meter, &[], env, Some(output)).await {
            Ok(ctx) => ctx,
            Err(reason) => {
                metrics.error();
                return self.host_answer(&asked, StatusCode::INTERNAL_SERVER_ERROR, &reason, None);
            }
        };
        let grants = on_data.as_ref().and_then(|d| d.grants());
        let mut store = new_store(&self.inner.runtime.engine, wasi, meter.clone(), grants);

        let (mut parts, body) = req.into_parts();
        if parts.uri.authority().is_none() && !parts.headers.contains_key(header::HOST) {
            parts
                .headers
                .insert(header::HOST, HeaderValue::from_static("localhost"));
        }
        let body = http_body_util::BodyExt::map_err(body, |e| to_wasi_http_error(e.into()));
        let req = hyper::Request::from_parts(parts, body);

        let (sender, receiver) = tokio::sync::oneshot::channel();
        let incoming = match store
            .data_mut()
            .http()
            .new_incoming_request(Scheme::Http, req)
        {
            Ok(r) => r,
            Err(e) => {
                metrics.error();
                return self.host_answer(
                    &asked,
                    StatusCode::BAD_REQUEST,
                    &format!("bad request: {}", crate::error::one_line(&e)),
                    None,
                );
            }
        };
        let outparam = match store.data_mut().http().new_response_outparam(sender) {
            Ok(o) => o,
            Err(e) => {
                metrics.error();
                return self.host_answer(
                    &asked,
                    StatusCode::INTERNAL_SERVER_ERROR,
                    &format!("cannot set up the response: {}", crate::error::one_line(&e)),
                    None,
                );
            }
        };

        // The guest runs in its own task: it goes on writing the body after the
        // response head has been handed back below.
        let waited_ms = waited.elapsed().as_millis();
        let wall = wall.saturating_sub(waited.elapsed());
        let task_metrics = metrics.clone();
        // A guest may answer and fail after: whichever of the task and this side comes
        // second writes the log line, so that a body cut short is in the log too.
        let ending = Arc::new(std::sync::Mutex::new(Ending::default()));
        let (task_ending, task_log, task_asked) =
            (ending.clone(), self.inner.log.clone(), asked.clone());
        let run = tokio::spawn(async move {
            let _instance = instance;
            let _on_data = on_data;
            let guest = Metered::new(meter.clone(), async move {
                let proxy = pre.instantiate_async(&mut store).await?;
                proxy
                    .wasi_http_incoming_handler()
                    .call_handle(&mut store, incoming, outparam)
                    .await
            });
            let res = tokio::time::timeout(wall, guest).await;
            let mut end = classify(&meter, &limits, res);
            // The wall time counts from the request: a run that waited long for an
            // instance says so, or its 504 would blame the workload alone.
            if let Err(failure) = &mut end
                && failure.limit == Some(LimitExceeded::WallTime)
                && waited_ms * 10 >= u128::from(limits.wall_ms)
            {
                failure.message = format!(
                    "{}, {waited_ms} ms of it waiting for an instance on a busy node",
                    failure.message
                );
            }
            let limit = end.as_ref().err().and_then(|f| f.limit);
            task_metrics.run_finished(&meter, end.is_err(), limit);
            if let Err(failure) = &end {
                tracing::debug!(reason = %failure.message, "http workload failed");
                let mut ending = task_ending.lock().unwrap_or_else(|e| e.into_inner());
                match ending.answered {
                    Some(status) => task_log.note(&task_asked.cut_short(status, &failure.message)),
                    None => ending.failure = Some(failure.message.clone()),
                }
            }
            end
        });

        match receiver.await {
            Ok(Ok(resp)) => {
                let mut ending = ending.lock().unwrap_or_else(|e| e.into_inner());
                ending.answered = Some(resp.status());
                if let Some(message) = ending.failure.take() {
                    self.inner
                        .log
                        .note(&asked.cut_short(resp.status(), &message));
                }
                drop(ending);
                resp.map(|body| ResponseBody {
                    kind: BodyKind::Guest { body, metrics },
                })
            }
            Ok(Err(code)) => {
                metrics.error();
                self.host_answer(
                    &asked,
                    StatusCode::INTERNAL_SERVER_ERROR,
                    &format!("the workload answered with an error: {code:?}"),
                    None,
                )
            }
            // The guest's store is gone without a response: the task says why.
            Err(_) => match run.await {
                Ok(Err(failure)) => self.host_answer(
                    &asked,
                    failure.status,
                    &failure.message,
                    failure.retry_after_secs,
                ),
                Ok(Ok(())) => {
                    metrics.error();
                    self.host_answer(
                        &asked,
                        StatusCode::INTERNAL_SERVER_ERROR,
                        "the workload returned without sending a response",
                        None,
                    )
                }
                Err(e) => {
                    metrics.error();
                    self.host_answer(
                        &asked,
                        StatusCode::INTERNAL_SERVER_ERROR,
                        &format!("the workload's task failed: {e}"),
                        None,
                    )
                }
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_logged_path_is_printable_ascii_and_bounded() {
        assert_eq!(loggable("/k/a-b_c.txt"), "/k/a-b_c.txt");
        // U+2028 (a line separator to some tools) and a C1 control arrive as raw UTF-8.
        assert_eq!(loggable("/a\u{2028}b\u{85}"), "/a%E2%80%A8b%C2%85");
        assert_eq!(loggable("/x y"), "/x%20y");
        let long = format!("/{}", "a".repeat(10_000));
        let shown = loggable(&long);
        assert!(shown.len() <= LOGGED_PATH_BYTES_MAX + '…'.len_utf8() && shown.ends_with('…'));
        let escapes = format!("/{}", "é".repeat(200));
        assert!(loggable(&escapes).len() <= LOGGED_PATH_BYTES_MAX + '…'.len_utf8());
    }
}
