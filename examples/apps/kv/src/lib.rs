//! `kv`: a key-value store behind a small JSON API (`wasi:http/proxy`), kept in the
//! app's `/data` folder so that it outlives requests, restarts and updates.
//!
//! | request          | answer                                                     |
//! |------------------|------------------------------------------------------------|
//! | `GET /`          | 200, JSON array of the keys, sorted                        |
//! | `PUT /k/KEY`     | stores the body (≤ 1 MiB, else 413): 201 new / 200 replaced, `{"key":..,"size":..}`; 507 when `/data` has no room |
//! | `GET /k/KEY`     | 200 with the stored body and its content-type, or 404      |
//! | `DELETE /k/KEY`  | 204, or 404 if absent                                      |
//!
//! `KEY` is percent-decoded (`a%20b` is the key `a b`; a broken escape or a key that is
//! not UTF-8 gets 400). Keys are at most 120 bytes. Errors are JSON objects
//! `{"error": "..."}`.
//!
//! Each key is one file, `/data/kv/<hex of the key>`: two bytes of content-type length,
//! the content-type, then the value. A value is written to a temporary file and renamed
//! over the old one, so a reader never sees half a value; `GET /` removes temporary
//! files a stopped run left (older than ten minutes). A node runs one instance
//! per request, so nothing is kept in memory between requests; each replica of the
//! app has its own `/data`.

use std::collections::BTreeSet;
use std::io::Write as _;

use wasip2::filesystem::preopens::get_directories;
use wasip2::filesystem::types::{
    Descriptor, DescriptorFlags, ErrorCode, OpenFlags, PathFlags,
};
use wasip2::http::types::{
    Fields, IncomingRequest, Method, OutgoingBody, OutgoingResponse, ResponseOutparam,
};
use wasip2::io::streams::StreamError;

wasip2::http::proxy::export!(Kv);

/// Largest accepted value.
const MAX_BODY: usize = 1024 * 1024;
/// Longest key, in bytes (its hex file name stays under common 255-byte limits).
const MAX_KEY: usize = 120;
/// The folder of the keys, inside `/data`.
const DIR: &str = "kv";

struct Kv;

impl wasip2::exports::http::incoming_handler::Guest for Kv {
    fn handle(request: IncomingRequest, out: ResponseOutparam) {
        let path = request.path_with_query().unwrap_or_default();
        let path = path.split('?').next().unwrap_or("").to_string();
        let method = request.method();
        let store = match open_store() {
            Ok(dir) => dir,
            Err(msg) => return error(out, 503, &msg),
        };

        if path == "/" {
            return match method {
                Method::Get => match keys(&store) {
                    Ok(keys) => {
                        let mut json = String::from("[");
                        for (i, k) in keys.iter().enumerate() {
                            if i > 0 {
                                json.push(',');
                            }
                            push_json_str(&mut json, k);
                        }
                        json.push_str("]\n");
                        respond(out, 200, JSON, json.as_bytes())
                    }
                    Err(e) => fs_error(out, "cannot list the keys", e),
                },
                _ => error(out, 405, "method not allowed"),
            };
        }
        let key = match path.strip_prefix("/k/") {
            Some(k) if !k.is_empty() => match percent_decode(k) {
                Some(k) => k,
                None => {
                    return error(
                        out,
                        400,
                        "the key is not valid: a % must start an escape of two hex digits, \
                         and the decoded key must be UTF-8",
                    )
                }
            },
            _ => return error(out, 404, "not found"),
        };
        if key.len() > MAX_KEY {
            return error(out, 414, &format!("key longer than {MAX_KEY} bytes"));
        }
        let file = hex(key.as_bytes());
        match method {
            Method::Get => match read_entry(&store, &file) {
                Ok(Some((content_type, value))) => respond(out, 200, &content_type, &value),
                Ok(None) => error(out, 404, "no such key"),
                Err(e) => fs_error(out, "cannot read the key", e),
            },
            Method::Delete => match store.unlink_file_at(&file) {
                Ok(()) => respond(out, 204, JSON, b""),
                Err(ErrorCode::NoEntry) => error(out, 404, "no such key"),
                Err(e) => fs_error(out, "cannot delete the key", e),
            },
            Method::Put => {
                let content_type = request
                    .headers()
                    .get("content-type")
                    .into_iter()
                    .next()
                    .unwrap_or_else(|| b"application/octet-stream".to_vec());
                if content_type.len() > 1024 {
                    return error(out, 400, "content-type longer than 1024 bytes");
                }
                let value = match read_body(request) {
                    Ok(v) => v,
                    Err(status) => return error(out, status, "body too large or unreadable"),
                };
                let new = match store.stat_at(PathFlags::empty(), &file) {
                    Ok(_) => false,
                    Err(ErrorCode::NoEntry) => true,
                    Err(e) => return fs_error(out, "cannot look the key up", e),
                };
                if let Err(e) = write_entry(&store, &file, &content_type, &value) {
                    return fs_error(out, "cannot store the value", e);
                }
                let mut json = String::from("{\"key\":");
                push_json_str(&mut json, &key);
                json.push_str(&format!(",\"size\":{}}}\n", value.len()));
                respond(out, if new { 201 } else { 200 }, JSON, json.as_bytes())
            }
            _ => error(out, 405, "method not allowed"),
        }
    }
}

/// A key as the URL carries it with its `%XX` escapes decoded (`a%20b` is `a b`, as a
/// client that encodes keys means it); `None` for a broken escape or a key that is not
/// UTF-8 (keys are listed as JSON strings).
fn percent_decode(raw: &str) -> Option<String> {
    let bytes = raw.as_bytes();
    let mut key = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let digits = bytes.get(i + 1..i + 3)?;
            if !digits.iter().all(u8::is_ascii_hexdigit) {
                return None;
            }
            key.push(u8::from_str_radix(std::str::from_utf8(digits).ok()?, 16).ok()?);
            i += 3;
        } else {
            key.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(key).ok()
}

/// The keys' folder, created on first use.
fn open_store() -> Result<Descriptor, String> {
    let Some((data, _)) = get_directories().into_iter().find(|(_, p)| p == "/data") else {
        return Err("this node gave the app no /data folder: deploy it with --disk".into());
    };
    match data.create_directory_at(DIR) {
        Ok(()) | Err(ErrorCode::Exist) => {}
        // A read-only /data (full) still serves reads of what is there.
        Err(ErrorCode::ReadOnly) | Err(ErrorCode::NotPermitted) => {}
        Err(e) => return Err(format!("cannot create /data/{DIR}: {}", e.message())),
    }
    data.open_at(
        PathFlags::empty(),
        DIR,
        OpenFlags::DIRECTORY,
        DescriptorFlags::READ | DescriptorFlags::MUTATE_DIRECTORY,
    )
    .or_else(|_| {
        data.open_at(PathFlags::empty(), DIR, OpenFlags::DIRECTORY, DescriptorFlags::READ)
    })
    .map_err(|e| format!("cannot open /data/{DIR}: {}", e.message()))
}

/// How old a temporary file must be to be a leftover: a run stopped between writing
/// it and renaming it (by a limit, or its node's end) leaves one.
const STALE_TMP_SECS: u64 = 600;

/// The keys, sorted; leftover temporary files are removed on the way.
fn keys(store: &Descriptor) -> Result<BTreeSet<String>, ErrorCode> {
    let entries = store.read_directory()?;
    let mut keys = BTreeSet::new();
    let now = wasip2::clocks::wall_clock::now().seconds;
    while let Some(entry) = entries.read_directory_entry()? {
        if entry.name.starts_with('.') {
            let old = store
                .stat_at(PathFlags::empty(), &entry.name)
                .ok()
                .and_then(|st| st.data_modification_timestamp)
                .is_some_and(|t| t.seconds + STALE_TMP_SECS < now);
            if old {
                let _ = store.unlink_file_at(&entry.name);
            }
            continue;
        }
        // A name that is not hex is not ours.
        if let Some(key) = unhex(&entry.name).and_then(|k| String::from_utf8(k).ok()) {
            keys.insert(key);
        }
    }
    Ok(keys)
}

fn read_entry(store: &Descriptor, file: &str) -> Result<Option<(Vec<u8>, Vec<u8>)>, ErrorCode> {
    let f = match store.open_at(PathFlags::empty(), file, OpenFlags::empty(), DescriptorFlags::READ) {
        Ok(f) => f,
        Err(ErrorCode::NoEntry) => return Ok(None),
        Err(e) => return Err(e),
    };
    let mut bytes = Vec::new();
    loop {
        let (chunk, end) = f.read(64 * 1024, bytes.len() as u64)?;
        bytes.extend_from_slice(&chunk);
        if end || chunk.is_empty() {
            break;
        }
    }
    if bytes.len() < 2 {
        return Err(ErrorCode::Io);
    }
    let n = u16::from_be_bytes([bytes[0], bytes[1]]) as usize;
    if bytes.len() < 2 + n {
        return Err(ErrorCode::Io);
    }
    let value = bytes.split_off(2 + n);
    Ok(Some((bytes[2..].to_vec(), value)))
}

/// Writes a temporary file and renames it over the key's, so a reader sees the old
/// value or the new one, never half of one.
fn write_entry(
    store: &Descriptor,
    file: &str,
    content_type: &[u8],
    value: &[u8],
) -> Result<(), ErrorCode> {
    let tmp = format!(".{file}.{:016x}", wasip2::random::random::get_random_u64());
    let f = store.open_at(
        PathFlags::empty(),
        &tmp,
        OpenFlags::CREATE | OpenFlags::EXCLUSIVE,
        DescriptorFlags::WRITE,
    )?;
    let mut bytes = Vec::with_capacity(2 + content_type.len() + value.len());
    bytes.extend_from_slice(&(content_type.len() as u16).to_be_bytes());
    bytes.extend_from_slice(content_type);
    bytes.extend_from_slice(value);
    let written = (|| {
        let mut at = 0usize;
        while at < bytes.len() {
            let n = f.write(&bytes[at..], at as u64)?;
            if n == 0 {
                return Err(ErrorCode::InsufficientSpace);
            }
            at += n as usize;
        }
        f.sync_data()
    })();
    drop(f);
    if let Err(e) = written.and_then(|()| store.rename_at(&tmp, store, file)) {
        let _ = store.unlink_file_at(&tmp);
        return Err(e);
    }
    Ok(())
}

/// Answers a filesystem failure: 507 when `/data` has no room, else 500.
fn fs_error(out: ResponseOutparam, what: &str, e: ErrorCode) {
    match e {
        // The node mounts /data read-only once the app is well past its disk (wasmtime
        // answers a write there with not-permitted).
        ErrorCode::ReadOnly | ErrorCode::NotPermitted => error(
            out,
            507,
            &format!(
                "{what}: /data is full and read-only; its owner can give it more disk \
                 (`peergrid app update NAME --disk SIZE`)"
            ),
        ),
        // A value is written next to the old one before it replaces it: replacing a key
        // needs room for both.
        ErrorCode::Quota => error(
            out,
            507,
            &format!(
                "{what}: /data is full (the app's disk is used up); delete keys to make room, \
                 or its owner gives it more disk (`peergrid app update NAME --disk SIZE`)"
            ),
        ),
        ErrorCode::InsufficientSpace => error(
            out,
            507,
            &format!("{what}: /data is full (no space left); delete keys to make room"),
        ),
        e => error(out, 500, &format!("{what}: {}", e.message())),
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn unhex(s: &str) -> Option<Vec<u8>> {
    if s.is_empty() || s.len() % 2 != 0 {
        return None;
    }
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok())
        .collect()
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
