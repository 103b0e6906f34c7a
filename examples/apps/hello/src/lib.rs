//! `hello`: a tiny `wasi:http/proxy` service for peergrid.
//!
//! * `GET /env/NAME` answers the value of the environment variable `NAME`
//!   (from `wasi:cli/environment`), or 404 if it is not set.
//! * Every other request answers 200 `hello from peergrid\n`.
//!
//! Each request is logged as one line on stderr (`GET /path -> 200`), which a node
//! keeps as the service's log (`peergrid app logs`).

use std::io::Write as _;

use wasip2::http::types::{
    Fields, IncomingRequest, OutgoingBody, OutgoingResponse, ResponseOutparam,
};

wasip2::http::proxy::export!(Hello);

struct Hello;

impl wasip2::exports::http::incoming_handler::Guest for Hello {
    fn handle(request: IncomingRequest, response_out: ResponseOutparam) {
        let path = request.path_with_query().unwrap_or_default();
        let path = path.split('?').next().unwrap_or("");
        let (status, body) = match path.strip_prefix("/env/") {
            Some(name) => match wasip2::cli::environment::get_environment()
                .into_iter()
                .find(|(k, _)| k == name)
            {
                Some((_, value)) => (200, value + "\n"),
                None => (404, "not found\n".to_string()),
            },
            None => (200, "hello from peergrid\n".to_string()),
        };
        let method = match request.method() {
            wasip2::http::types::Method::Get => "GET".to_string(),
            wasip2::http::types::Method::Post => "POST".to_string(),
            wasip2::http::types::Method::Other(m) => m,
            _ => "OTHER".to_string(),
        };
        let mut log = wasip2::cli::stderr::get_stderr();
        let _ = log.write_all(format!("{method} {path} -> {status}\n").as_bytes());
        let _ = log.blocking_flush();
        respond(response_out, status, body.as_bytes());
    }
}

fn respond(out: ResponseOutparam, status: u16, body: &[u8]) {
    let headers = Fields::from_list(&[
        ("content-type".to_string(), b"text/plain; charset=utf-8".to_vec()),
        ("content-length".to_string(), body.len().to_string().into_bytes()),
    ])
    .unwrap();
    let resp = OutgoingResponse::new(headers);
    resp.set_status_code(status).unwrap();
    let outgoing = resp.body().unwrap();
    ResponseOutparam::set(out, Ok(resp));
    let mut stream = outgoing.write().unwrap();
    let _ = stream.write_all(body);
    let _ = stream.blocking_flush();
    drop(stream);
    let _ = OutgoingBody::finish(outgoing, None);
}
