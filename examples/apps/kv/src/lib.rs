//! `kv`: an in-memory key-value store behind a small JSON API (`wasi:http/proxy`).
//!
//! | request          | answer                                                     |
//! |------------------|------------------------------------------------------------|
//! | `GET /`          | 200, JSON array of the keys, sorted                        |
//! | `PUT /k/KEY`     | stores the body (≤ 64 KiB, else 413): 201 new / 200 replaced, `{"key":..,"size":..}` |
//! | `GET /k/KEY`     | 200 with the stored body and its content-type, or 404      |
//! | `DELETE /k/KEY`  | 204, or 404 if absent                                      |
//!
//! Errors are JSON objects `{"error": "..."}`.
//!
//! State lives in this instance's linear memory only: it lasts as long as the
//! instance does. A node may instantiate the component per request (wasmtime's
//! `wasi:http` serving does), in which case every request sees an empty store,
//! so the state is per instance, never shared or persisted.

use std::collections::BTreeMap;
use std::io::Write as _;
use std::sync::Mutex;

use wasip2::http::types::{
    Fields, IncomingRequest, Method, OutgoingBody, OutgoingResponse, ResponseOutparam,
};
use wasip2::io::streams::StreamError;

wasip2::http::proxy::export!(Kv);

/// Largest accepted value.
const MAX_BODY: usize = 64 * 1024;

struct Entry {
    content_type: Vec<u8>,
    value: Vec<u8>,
}

static STORE: Mutex<BTreeMap<String, Entry>> = Mutex::new(BTreeMap::new());

struct Kv;

impl wasip2::exports::http::incoming_handler::Guest for Kv {
    fn handle(request: IncomingRequest, out: ResponseOutparam) {
        let path = request.path_with_query().unwrap_or_default();
        let path = path.split('?').next().unwrap_or("").to_string();
        let method = request.method();
        let mut store = STORE.lock().unwrap_or_else(|e| e.into_inner());

        if path == "/" {
            return match method {
                Method::Get => {
                    let mut json = String::from("[");
                    for (i, k) in store.keys().enumerate() {
                        if i > 0 {
                            json.push(',');
                        }
                        push_json_str(&mut json, k);
                    }
                    json.push_str("]\n");
                    respond(out, 200, JSON, json.as_bytes())
                }
                _ => error(out, 405, "method not allowed"),
            };
        }
        let key = match path.strip_prefix("/k/") {
            Some(k) if !k.is_empty() => k.to_string(),
            _ => return error(out, 404, "not found"),
        };
        match method {
            Method::Get => match store.get(&key) {
                Some(e) => respond(out, 200, &e.content_type, &e.value),
                None => error(out, 404, "no such key"),
            },
            Method::Delete => match store.remove(&key) {
                Some(_) => respond(out, 204, JSON, b""),
                None => error(out, 404, "no such key"),
            },
            Method::Put => {
                let content_type = request
                    .headers()
                    .get("content-type")
                    .into_iter()
                    .next()
                    .unwrap_or_else(|| b"application/octet-stream".to_vec());
                let value = match read_body(request) {
                    Ok(v) => v,
                    Err(status) => return error(out, status, "body too large or unreadable"),
                };
                let size = value.len();
                let new = store.insert(key.clone(), Entry { content_type, value }).is_none();
                let mut json = String::from("{\"key\":");
                push_json_str(&mut json, &key);
                json.push_str(&format!(",\"size\":{size}}}\n"));
                respond(out, if new { 201 } else { 200 }, JSON, json.as_bytes())
            }
            _ => error(out, 405, "method not allowed"),
        }
    }
}

const JSON: &[u8] = b"application/json";

/// Reads the request body, at most `MAX_BODY` bytes; 413 beyond that, 400 on a
/// broken stream.
fn read_body(request: IncomingRequest) -> Result<Vec<u8>, u16> {
    // Refuse early when the declared length is already too large.
    if let Some(len) = request.headers().get("content-length").first() {
        let len = std::str::from_utf8(len).ok().and_then(|s| s.trim().parse::<u64>().ok());
        if len.is_some_and(|n| n > MAX_BODY as u64) {
            return Err(413);
        }
    }
    let body = request.consume().map_err(|_| 400u16)?;
    let stream = body.stream().map_err(|_| 400u16)?;
    let mut buf = Vec::new();
    loop {
        match stream.blocking_read(16 * 1024) {
            Ok(chunk) => {
                buf.extend_from_slice(&chunk);
                if buf.len() > MAX_BODY {
                    return Err(413);
                }
            }
            Err(StreamError::Closed) => break,
            Err(StreamError::LastOperationFailed(_)) => return Err(400),
        }
    }
    drop(stream);
    Ok(buf)
}

fn push_json_str(out: &mut String, s: &str) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if (c as u32) < 0x20 => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
}

fn error(out: ResponseOutparam, status: u16, msg: &str) {
    let mut json = String::from("{\"error\":");
    push_json_str(&mut json, msg);
    json.push_str("}\n");
    respond(out, status, JSON, json.as_bytes())
}

fn respond(out: ResponseOutparam, status: u16, content_type: &[u8], body: &[u8]) {
    let mut headers = vec![("content-type".to_string(), content_type.to_vec())];
    if status != 204 {
        headers.push(("content-length".to_string(), body.len().to_string().into_bytes()));
    }
    let resp = OutgoingResponse::new(Fields::from_list(&headers).unwrap());
    resp.set_status_code(status).unwrap();
    let outgoing = resp.body().unwrap();
    ResponseOutparam::set(out, Ok(resp));
    let mut stream = outgoing.write().unwrap();
    let _ = stream.write_all(body);
    let _ = stream.blocking_flush();
    drop(stream);
    let _ = OutgoingBody::finish(outgoing, None);
}
