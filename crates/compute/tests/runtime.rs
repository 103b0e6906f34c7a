//! The runtime with real wasmtime: the example applications, hostile guests written in
//! WAT, limits, refusals and the compile cache.

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use peergrid_compute::{
    ComputeError, DataDir, LimitExceeded, Limits, Prepared, Runtime, RuntimeConfig, Share,
    WorkloadKind, memory_at_start,
};
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// A job that returns success at once.
const OK_JOB: &str = r#"(component
  (core module $m (func (export "run") (result i32) (i32.const 0)))
  (core instance $i (instantiate $m))
  (func $run (result (result)) (canon lift (core func $i "run")))
  (instance $run (export "run" (func $run)))
  (export "wasi:cli/run@0.2.0" (instance $run)))"#;

/// A job that never ends and calls nothing: only the CPU limit can stop it.
const SPIN_JOB: &str = r#"(component
  (core module $m (func (export "run") (result i32) (loop $l (br $l)) (i32.const 0)))
  (core instance $i (instantiate $m))
  (func $run (result (result)) (canon lift (core func $i "run")))
  (instance $run (export "run" (func $run)))
  (export "wasi:cli/run@0.2.0" (instance $run)))"#;

/// A job that grows its memory a MiB at a time until refused, then traps.
const ALLOC_JOB: &str = r#"(component
  (core module $m
    (memory 1)
    (func (export "run") (result i32)
      (loop $l (br_if $l (i32.ne (memory.grow (i32.const 16)) (i32.const -1))))
      unreachable))
  (core instance $i (instantiate $m))
  (func $run (result (result)) (canon lift (core func $i "run")))
  (instance $run (export "run" (func $run)))
  (export "wasi:cli/run@0.2.0" (instance $run)))"#;

/// An HTTP handler that loops forever without answering.
const SPIN_HTTP: &str = r#"(component
  (import "wasi:http/types@0.2.0" (instance $types
    (export "incoming-request" (type (sub resource)))
    (export "response-outparam" (type (sub resource)))))
  (alias export $types "incoming-request" (type $req))
  (alias export $types "response-outparam" (type $out))
  (core module $m (func (export "handle") (param i32 i32) (loop $l (br $l))))
  (core instance $i (instantiate $m))
  (func $handle (param "request" (own $req)) (param "response-out" (own $out))
    (canon lift (core func $i "handle")))
  (instance $handler (export "handle" (func $handle)))
  (export "wasi:http/incoming-handler@0.2.0" (instance $handler)))"#;

/// [`SPIN_HTTP`] holding a MiB of memory (16 pages) while it loops.
const SPIN_HTTP_MIB: &str = r#"(component
  (import "wasi:http/types@0.2.0" (instance $types
    (export "incoming-request" (type (sub resource)))
    (export "response-outparam" (type (sub resource)))))
  (alias export $types "incoming-request" (type $req))
  (alias export $types "response-outparam" (type $out))
  (core module $m (memory 16) (func (export "handle") (param i32 i32) (loop $l (br $l))))
  (core instance $i (instantiate $m))
  (func $handle (param "request" (own $req)) (param "response-out" (own $out))
    (canon lift (core func $i "handle")))
  (instance $handler (export "handle" (func $handle)))
  (export "wasi:http/incoming-handler@0.2.0" (instance $handler)))"#;

/// A job that imports an interface no node provides.
const KEYVALUE_JOB: &str = r#"(component
  (import "wasi:keyvalue/store@0.2.0" (instance (export "ping" (func))))
  (core module $m (func (export "run") (result i32) (i32.const 0)))
  (core instance $i (instantiate $m))
  (func $run (result (result)) (canon lift (core func $i "run")))
  (instance $run (export "run" (func $run)))
  (export "wasi:cli/run@0.2.0" (instance $run)))"#;

fn runtime(cache_dir: &Path) -> Runtime {
    Runtime::new(RuntimeConfig {
        cache_dir: Some(cache_dir.to_path_buf()),
        max_instances: 16,
        ..RuntimeConfig::default()
    })
    .expect("runtime starts")
}

fn wat(text: &str) -> Vec<u8> {
    wat::parse_str(text).expect("test WAT parses")
}

fn hash(bytes: &[u8]) -> [u8; 32] {
    *blake3::hash(bytes).as_bytes()
}

fn prepare(rt: &Runtime, bytes: &[u8], kind: WorkloadKind) -> Prepared {
    rt.prepare(&hash(bytes), bytes, kind)
        .unwrap_or_else(|e| panic!("prepare failed: {e}"))
}

fn example_path(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../examples/apps")
        .join(name)
        .join(format!("{name}.wasm"))
}

/// The committed build of an example application (examples/apps/build.sh rebuilds them).
fn example(name: &str) -> Vec<u8> {
    let path = example_path(name);
    std::fs::read(&path).unwrap_or_else(|e| {
        panic!(
            "{}: {e}; the example components are committed, rebuild them with examples/apps/build.sh",
            path.display()
        )
    })
}

fn limits(memory_bytes: u64, cpu_ms: u64, wall_ms: u64) -> Limits {
    Limits {
        memory_bytes,
        cpu_ms,
        wall_ms,
    }
}

fn get(path: &str) -> hyper::Request<Full<Bytes>> {
    hyper::Request::builder()
        .uri(format!("http://localhost{path}"))
        .body(Full::new(Bytes::new()))
        .expect("request builds")
}

async fn call(
    app: &Prepared,
    path: &str,
    env: &[(String, String)],
    limits: &Limits,
) -> (u16, String) {
    let (status, _, body) = call_with_retry_after(app, path, env, limits).await;
    (status, body)
}

/// [`call`], with the answer's `Retry-After` seconds if it has one.
async fn call_with_retry_after(
    app: &Prepared,
    path: &str,
    env: &[(String, String)],
    limits: &Limits,
) -> (u16, Option<u64>, String) {
    let resp = app.handle(get(path), env, limits).await;
    let status = resp.status().as_u16();
    let retry_after = resp
        .headers()
        .get(hyper::header::RETRY_AFTER)
        .map(|v| v.to_str().expect("ascii").parse().expect("seconds"));
    let body = resp
        .into_body()
        .collect()
        .await
        .expect("body arrives")
        .to_bytes();
    (
        status,
        retry_after,
        String::from_utf8_lossy(&body).into_owned(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hello_answers_with_its_body_and_is_metered() {
    let dir = tempfile::tempdir().expect("tempdir");
    let rt = runtime(dir.path());
    let hello = prepare(&rt, &example("hello"), WorkloadKind::Http);
    let l = Limits::default();
    let (status, body) = call(&hello, "/", &[], &l).await;
    assert_eq!((status, body.as_str()), (200, "hello from peergrid\n"));

    let env = vec![("GREETING".to_string(), "hi there".to_string())];
    let (status, body) = call(&hello, "/env/GREETING", &env, &l).await;
    assert_eq!((status, body.as_str()), (200, "hi there\n"));
    let (status, _) = call(&hello, "/env/MISSING", &env, &l).await;
    assert_eq!(status, 404);

    let m = hello.metrics();
    assert_eq!(m.requests, 3);
    assert_eq!(m.errors, 0);
    assert_eq!(m.bytes_served, 20 + 9 + 10);
    assert!(m.memory_peak_bytes > 0, "{m:?}");

    // What the service printed is its log, one line per request, in order.
    let log = String::from_utf8(hello.logs()).expect("utf-8");
    assert_eq!(
        log,
        "GET / -> 200\nGET /env/GREETING -> 200\nGET /env/MISSING -> 404\n"
    );
}

fn request(method: &str, path: &str, body: &[u8]) -> hyper::Request<Full<Bytes>> {
    hyper::Request::builder()
        .method(method)
        .uri(format!("http://localhost{path}"))
        .header("content-type", "text/plain")
        .body(Full::new(Bytes::copy_from_slice(body)))
        .expect("request builds")
}

async fn send(app: &Prepared, req: hyper::Request<Full<Bytes>>) -> (u16, String) {
    let resp = app.handle(req, &[], &Limits::default()).await;
    let status = resp.status().as_u16();
    let body = resp.into_body().collect().await.expect("body").to_bytes();
    (status, String::from_utf8_lossy(&body).into_owned())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kv_keeps_its_keys_in_data_across_instances_and_restarts() {
    let dir = tempfile::tempdir().expect("tempdir");
    let rt = runtime(&dir.path().join("cache"));
    let folder = dir.path().join("data");

    // Without a data folder the app says what is missing.
    let bare = prepare(&rt, &example("kv"), WorkloadKind::Http);
    let (status, body) = call(&bare, "/", &[], &Limits::default()).await;
    assert_eq!(status, 503, "{body}");
    assert!(body.contains("--disk"), "{body}");

    let data = DataDir::new(&folder, 16 << 20, None).expect("data dir");
    let kv = prepare(&rt, &example("kv"), WorkloadKind::Http).with_data(data.clone());
    assert_eq!(send(&kv, request("PUT", "/k/alpha", b"one")).await.0, 201);
    assert_eq!(send(&kv, request("PUT", "/k/beta", b"two")).await.0, 201);
    assert_eq!(send(&kv, request("PUT", "/k/alpha", b"uno")).await.0, 200);
    // Every request is a fresh instance: what it reads came from the folder.
    assert_eq!(
        send(&kv, request("GET", "/k/alpha", b"")).await,
        (200, "uno".into())
    );
    assert_eq!(
        send(&kv, request("GET", "/", b"")).await,
        (200, "[\"alpha\",\"beta\"]\n".into())
    );
    assert_eq!(send(&kv, request("DELETE", "/k/beta", b"")).await.0, 204);
    // Keys come percent-decoded: `a%20b` and `a b` are one key; a broken escape is a 400.
    assert_eq!(
        send(&kv, request("PUT", "/k/a%20b", b"spaced")).await.0,
        201
    );
    assert_eq!(
        send(&kv, request("GET", "/", b"")).await,
        (200, "[\"a b\",\"alpha\"]\n".into())
    );
    let (status, body) = send(&kv, request("GET", "/k/a%2", b"")).await;
    assert_eq!(status, 400, "{body}");
    assert!(body.contains("escape"), "{body}");
    assert_eq!(send(&kv, request("DELETE", "/k/a%20b", b"")).await.0, 204);
    // A temporary file a stopped run left is removed once old; a fresh one (a PUT under
    // way) is not.
    let (stale, fresh) = (folder.join("kv/.6b.1"), folder.join("kv/.6b.2"));
    for tmp in [&stale, &fresh] {
        std::fs::write(tmp, b"half").expect("write");
    }
    let hour_ago = std::time::SystemTime::now() - std::time::Duration::from_secs(3600);
    std::fs::File::options()
        .write(true)
        .open(&stale)
        .and_then(|f| f.set_modified(hour_ago))
        .expect("age");
    assert_eq!(
        send(&kv, request("GET", "/", b"")).await,
        (200, "[\"alpha\"]\n".into())
    );
    assert!(!stale.exists() && fresh.exists());
    assert_eq!(send(&kv, request("GET", "/k/beta", b"")).await.0, 404);

    // A new runtime and a new handle on the same folder (a node restart) see the key.
    drop(kv);
    let rt = runtime(&dir.path().join("cache"));
    let data = DataDir::new(&folder, 16 << 20, None).expect("data dir");
    let kv = prepare(&rt, &example("kv"), WorkloadKind::Http).with_data(data.clone());
    assert_eq!(
        send(&kv, request("GET", "/k/alpha", b"")).await,
        (200, "uno".into())
    );
    // The measure after the runs counts the folder.
    let mut used = 0;
    for _ in 0..200 {
        used = data.used_bytes().unwrap_or(0);
        if used > 0 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    assert!(
        used >= 2 * peergrid_compute::data::ENTRY_BYTES_MIN,
        "{used}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn past_its_quota_data_turns_read_only_until_the_contract_reserves_more() {
    let dir = tempfile::tempdir().expect("tempdir");
    let rt = runtime(&dir.path().join("cache"));
    let data = DataDir::new(&dir.path().join("data"), 256 << 10, None).expect("data dir");
    let kv = prepare(&rt, &example("kv"), WorkloadKind::Http).with_data(data.clone());
    assert_eq!(send(&kv, request("PUT", "/k/a", b"kept")).await.0, 201);
    // What an earlier run left: the folder is well past its quota (10 %, at least 8 MiB).
    std::fs::write(data.path().join("bulk"), vec![1u8; 9 << 20]).expect("write");
    let used = data.measure().await;
    assert!(used > (256 << 10) + (8 << 20), "{used}");
    assert!(data.read_only());
    let (status, body) = send(&kv, request("PUT", "/k/d", b"more")).await;
    assert_eq!(status, 507, "{body}");
    assert!(body.contains("/data is full"), "{body}");
    // Reads go on.
    assert_eq!(
        send(&kv, request("GET", "/k/a", b"")).await,
        (200, "kept".into())
    );
    // The contract reserves more: writable again, and keys can be removed.
    data.set_quota_bytes(16 << 20);
    assert_eq!(send(&kv, request("PUT", "/k/d", b"more")).await.0, 201);
    assert_eq!(send(&kv, request("DELETE", "/k/a", b"")).await.0, 204);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_put_past_the_quota_is_refused_and_fits_after_a_delete() {
    let dir = tempfile::tempdir().expect("tempdir");
    let rt = runtime(&dir.path().join("cache"));
    let quota = 2u64 << 20;
    let data = DataDir::new(&dir.path().join("data"), quota, None).expect("data dir");
    let kv = prepare(&rt, &example("kv"), WorkloadKind::Http).with_data(data.clone());
    let big = vec![b'v'; 900 << 10];
    assert_eq!(send(&kv, request("PUT", "/k/a", &big)).await.0, 201);
    assert_eq!(send(&kv, request("PUT", "/k/b", &big)).await.0, 201);
    // A third would pass 2 MiB: refused before it reaches the disk, whatever the
    // measuring walk has seen so far.
    let (status, body) = send(&kv, request("PUT", "/k/c", &big)).await;
    assert_eq!(status, 507, "{body}");
    assert!(
        body.contains("/data is full") && body.contains("delete keys"),
        "{body}"
    );
    let used = peergrid_compute::data::usage(data.path()).expect("walk");
    assert!(used <= quota, "{used} on disk");
    assert!(!data.read_only());
    // What the writes are checked against never counts less than the disk holds.
    let in_use = data.in_use_bytes().expect("measured");
    assert!(in_use >= used, "{in_use} counted, {used} on disk");
    assert_eq!(send(&kv, request("GET", "/k/a", b"")).await.0, 200);
    // A removal gives its room back once the folder is measured again (the next run
    // of a folder this full measures it first).
    assert_eq!(send(&kv, request("DELETE", "/k/a", b"")).await.0, 204);
    let mut put = (0, String::new());
    for _ in 0..50 {
        put = send(&kv, request("PUT", "/k/c", &big)).await;
        if put.0 == 201 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    assert_eq!(put.0, 201, "{}", put.1);
    assert_eq!(
        send(&kv, request("GET", "/", b"")).await,
        (200, "[\"b\",\"c\"]\n".into())
    );
    // Files past a smaller quota (a contract shrunk): a PUT is refused as full, not as
    // a broken folder, and a DELETE goes through.
    data.set_quota_bytes(1 << 20);
    let (status, body) = send(&kv, request("PUT", "/k/d", b"x")).await;
    assert_eq!(status, 507, "{body}");
    assert!(body.contains("delete keys"), "{body}");
    assert_eq!(send(&kv, request("DELETE", "/k/b", b"")).await.0, 204);
}

/// `cpu fill [MODE]`: writes /data/fill without bound, in one of its ways.
async fn fill(cpu: &Prepared, mode: &str) -> peergrid_compute::JobOutcome {
    let mut args = vec!["fill".to_string()];
    if !mode.is_empty() {
        args.push(mode.to_string());
    }
    cpu.run_job(&args, &[], &limits(64 << 20, 20_000, 30_000))
        .await
}

/// How far `cpu fill` got, and why it stopped, from its last line.
fn filled(out: &peergrid_compute::JobOutcome) -> (u64, String) {
    let text = String::from_utf8_lossy(&out.stdout);
    let rest = text
        .strip_prefix("wrote ")
        .unwrap_or_else(|| panic!("cpu fill says how far it got: {out:?}"));
    let (bytes, why) = rest.split_once(" bytes, then: ").expect("cpu fill's line");
    (
        bytes.parse().expect("a byte count"),
        why.trim().to_lowercase(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_filling_its_data_folder_is_refused_at_its_quota() {
    let dir = tempfile::tempdir().expect("tempdir");
    let rt = runtime(&dir.path().join("cache"));
    let quota = 8u64 << 20;
    // Each way: how much one refused write is, and the word its error has.
    for (mode, unit, word) in [
        ("", 1u64 << 20, "quota"),
        // What a standard library's file writes go through.
        ("stream", 4096, "space"),
        // A hole made by set-size counts as written.
        ("holes", 1 << 20, "quota"),
        // A file removed while open keeps counting.
        ("unlinked", 1 << 20, "quota"),
    ] {
        let data =
            DataDir::new(&dir.path().join(format!("data-{mode}")), quota, None).expect("data dir");
        let cpu = prepare(&rt, &example("cpu"), WorkloadKind::Job).with_data(data.clone());
        let out = fill(&cpu, mode).await;
        // The write that would pass the quota fails in the app, which goes on: nothing
        // stopped it.
        assert_eq!(out.exit_code, Some(1), "{mode}: {out:?}");
        assert_eq!(out.limit_exceeded, None, "{mode}: {out:?}");
        let (wrote, why) = filled(&out);
        // Up to the quota, less at most the file's own entry and one write that did not
        // fit (both, exactly, in a CI run of stream writes).
        assert!(
            wrote <= quota && wrote + unit + 8192 >= quota,
            "{mode}: wrote {wrote} of {quota}"
        );
        assert!(why.contains(word), "{mode}: {why}");
        let used = peergrid_compute::data::usage(data.path()).expect("walk");
        assert!(used <= quota, "{mode}: {used} on disk");
        assert_eq!(cpu.metrics().disk_limit_exceeded, 0);
        if mode.is_empty() {
            // Run again, it truncates its file and writes it anew: the room its old
            // content held is measured back, not refused.
            let again = filled(&fill(&cpu, mode).await).0;
            assert_eq!(again, wrote, "the second run writes as much as the first");
        }
    }

    // The node's disk down to its reserve (a file removed while open is not seen by the
    // walk, the disk's free space is): stopped whatever the quota, then read-only.
    let dir2 = tempfile::tempdir().expect("tempdir");
    let space: peergrid_compute::data::SpaceCheck =
        Arc::new(|path: &Path| match peergrid_compute::data::usage(path) {
            Ok(used) if used > 4 << 20 => Err("4.0 MiB free, reserve 4.0 MiB".to_string()),
            _ => Ok(()),
        });
    let data = DataDir::new(&dir2.path().join("data"), 1 << 30, Some(space)).expect("data dir");
    let cpu = prepare(&rt, &example("cpu"), WorkloadKind::Job).with_data(data.clone());
    let out = fill(&cpu, "").await;
    assert_eq!(out.limit_exceeded, Some(LimitExceeded::Disk), "{out:?}");
    let error = out.error.clone().unwrap_or_default();
    assert!(error.contains("node's disk"), "{error}");
    assert_eq!(cpu.metrics().disk_limit_exceeded, 1);
    let out = fill(&cpu, "").await;
    assert_eq!(out.exit_code, Some(1), "{out:?}");
    assert!(
        String::from_utf8_lossy(&out.stdout).starts_with("wrote 0 bytes"),
        "read-only while the disk is full: {out:?}"
    );

    // Without a data folder the job has none to fill.
    let bare = prepare(&rt, &example("cpu"), WorkloadKind::Job);
    let out = bare
        .run_job(&["fill".to_string()], &[], &limits(64 << 20, 5_000, 10_000))
        .await;
    assert_eq!(out.exit_code, Some(1), "{out:?}");
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("no /data folder"),
        "{out:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn primes_job_prints_its_count() {
    let dir = tempfile::tempdir().expect("tempdir");
    let rt = runtime(dir.path());
    let cpu = prepare(&rt, &example("cpu"), WorkloadKind::Job);
    let args = ["primes".to_string(), "10000".to_string()];
    let out = cpu
        .run_job(&args, &[], &limits(64 << 20, 5_000, 30_000))
        .await;
    assert!(out.success(), "{out:?}");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("1229"), "stdout: {stdout}");

    let out = cpu
        .run_job(&["nonsense".to_string()], &[], &Limits::default())
        .await;
    assert_eq!(out.exit_code, Some(2), "{out:?}");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("usage"),
        "{out:?}"
    );
    assert_eq!(out.error, None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn job_output_is_bounded_with_a_marker() {
    let dir = tempfile::tempdir().expect("tempdir");
    let rt = Runtime::new(RuntimeConfig {
        cache_dir: Some(dir.path().to_path_buf()),
        max_instances: 4,
        output_bytes_max: 8,
        ..RuntimeConfig::default()
    })
    .expect("runtime");
    let cpu = prepare(&rt, &example("cpu"), WorkloadKind::Job);
    let args = ["primes".to_string(), "100".to_string()];
    let out = cpu.run_job(&args, &[], &Limits::default()).await;
    assert!(out.success(), "{out:?}");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.starts_with("primes b"), "{stdout}");
    assert!(stdout.contains("output truncated at 8 bytes"), "{stdout}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn runaway_job_is_stopped_by_cpu_while_hello_keeps_answering() {
    let dir = tempfile::tempdir().expect("tempdir");
    let rt = runtime(dir.path());
    let cpu = prepare(&rt, &example("cpu"), WorkloadKind::Job);
    let hello = prepare(&rt, &example("hello"), WorkloadKind::Http);

    let spinner = cpu.clone();
    let spin = tokio::spawn(async move {
        spinner
            .run_job(&["spin".to_string()], &[], &limits(64 << 20, 300, 60_000))
            .await
    });
    for _ in 0..5 {
        let (status, body) = call(&hello, "/", &[], &Limits::default()).await;
        assert_eq!((status, body.as_str()), (200, "hello from peergrid\n"));
    }
    let out = spin.await.expect("job task");
    assert_eq!(out.limit_exceeded, Some(LimitExceeded::Cpu), "{out:?}");
    assert_eq!(out.exit_code, None);
    let error = out.error.unwrap_or_default();
    assert!(error.contains("CPU limit of 300 ms"), "{error}");
    assert!(out.cpu_ms >= 300, "cpu_ms {}", out.cpu_ms);
    let m = cpu.metrics();
    assert_eq!((m.requests, m.errors, m.cpu_limit_exceeded), (1, 1, 1));
    assert_eq!(hello.metrics().errors, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn alloc_job_is_stopped_by_memory() {
    let dir = tempfile::tempdir().expect("tempdir");
    let rt = runtime(dir.path());
    let cpu = prepare(&rt, &example("cpu"), WorkloadKind::Job);
    let out = cpu
        .run_job(
            &["alloc".to_string()],
            &[],
            &limits(32 << 20, 30_000, 60_000),
        )
        .await;
    assert_eq!(out.limit_exceeded, Some(LimitExceeded::Memory), "{out:?}");
    let error = out.error.unwrap_or_default();
    assert!(error.contains("memory limit of 32.0 MiB"), "{error}");
    assert!(
        out.memory_peak_bytes <= 32 << 20,
        "{}",
        out.memory_peak_bytes
    );
    assert_eq!(cpu.metrics().memory_limit_exceeded, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_wat_guests_are_stopped_by_each_limit() {
    let dir = tempfile::tempdir().expect("tempdir");
    let rt = runtime(dir.path());
    let spin = prepare(&rt, &wat(SPIN_JOB), WorkloadKind::Job);
    let out = spin.run_job(&[], &[], &limits(1 << 20, 100, 60_000)).await;
    assert_eq!(out.limit_exceeded, Some(LimitExceeded::Cpu), "{out:?}");

    let out = spin.run_job(&[], &[], &limits(1 << 20, 60_000, 200)).await;
    assert_eq!(out.limit_exceeded, Some(LimitExceeded::WallTime), "{out:?}");
    assert!(
        out.error
            .unwrap_or_default()
            .contains("wall-time limit of 200 ms")
    );

    let alloc = prepare(&rt, &wat(ALLOC_JOB), WorkloadKind::Job);
    let out = alloc
        .run_job(&[], &[], &limits(8 << 20, 10_000, 60_000))
        .await;
    assert_eq!(out.limit_exceeded, Some(LimitExceeded::Memory), "{out:?}");
    assert!(out.memory_peak_bytes <= 8 << 20);

    let ok = prepare(&rt, &wat(OK_JOB), WorkloadKind::Job);
    let out = ok.run_job(&[], &[], &Limits::default()).await;
    assert!(out.success() && !out.refused, "{out:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn runaway_request_gets_503_while_hello_keeps_answering() {
    let dir = tempfile::tempdir().expect("tempdir");
    let rt = runtime(dir.path());
    let spin = prepare(&rt, &wat(SPIN_HTTP), WorkloadKind::Http);
    let hello = prepare(&rt, &example("hello"), WorkloadKind::Http);

    let spinner = spin.clone();
    let runaway = tokio::spawn(async move {
        call_with_retry_after(&spinner, "/", &[], &limits(1 << 20, 300, 60_000)).await
    });
    for _ in 0..5 {
        let (status, _) = call(&hello, "/", &[], &Limits::default()).await;
        assert_eq!(status, 200);
    }
    let (status, retry_after, body) = runaway.await.expect("request task");
    assert_eq!(status, 503, "{body}");
    assert!(body.contains("CPU limit of 300 ms"), "{body}");
    assert_eq!(body.lines().count(), 1, "{body}");
    assert_eq!(
        retry_after, None,
        "the same request would use its CPU limit again"
    );

    let (status, body) = call(&spin, "/slow", &[], &limits(1 << 20, 60_000, 200)).await;
    assert_eq!(status, 504, "{body}");
    assert!(body.contains("wall-time limit"), "{body}");

    let m = spin.metrics();
    assert_eq!((m.requests, m.errors), (2, 2));
    assert_eq!((m.cpu_limit_exceeded, m.wall_time_exceeded), (1, 1));
    // The builder reading the app's log sees what the node answered, and why.
    let log = String::from_utf8(spin.logs()).expect("utf-8");
    assert_eq!(
        log.lines().collect::<Vec<_>>(),
        [
            "[peergrid] 503 GET /: stopped: the workload used its CPU limit of 300 ms",
            "[peergrid] 504 GET /slow: stopped: the workload ran longer than its wall-time limit of 200 ms",
        ],
        "{log}"
    );
}

/// Whether `done` holds within 5 s: a request's task ends just after the response it sent.
async fn settles(done: impl Fn() -> bool) -> bool {
    for _ in 0..500 {
        if done() {
            return true;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    done()
}

/// Waits until `done`; fails once `task` has ended (awaited first: a test that fails
/// while a guest still runs does not end), or after 10 s.
async fn until<T: std::fmt::Debug>(
    what: &str,
    task: &mut tokio::task::JoinHandle<T>,
    done: impl Fn() -> bool,
) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while !done() {
        if task.is_finished() || std::time::Instant::now() > deadline {
            let ended = task.await;
            panic!("not {what}: the run ended with {ended:?}");
        }
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_contracts_runs_share_the_memory_it_reserved() {
    let dir = tempfile::tempdir().expect("tempdir");
    let rt = runtime(dir.path());
    let at_start = memory_at_start(&example("hello")).expect("hello's memory");
    // Room for hello alone, or for the spinner's MiB alone, not for both at once.
    let share = Share::new(at_start.max(1 << 20) + (512 << 10), 8);
    let spin = prepare(&rt, &wat(SPIN_HTTP_MIB), WorkloadKind::Http).in_share(share.clone());
    let hello = prepare(&rt, &example("hello"), WorkloadKind::Http);
    let shared_hello = hello.clone().in_share(share.clone());

    let (status, _) = call(&shared_hello, "/", &[], &Limits::default()).await;
    assert_eq!(status, 200, "hello alone fits the share");
    assert!(
        settles(|| share.memory_in_use() == 0).await,
        "a finished run gives its memory back: {} bytes held",
        share.memory_in_use()
    );

    let spinner = spin.clone();
    let mut holder =
        tokio::spawn(
            async move { call(&spinner, "/", &[], &limits(2 << 20, 60_000, 2_000)).await },
        );
    until("the spinner holds its MiB", &mut holder, || {
        share.memory_in_use() >= 1 << 20
    })
    .await;
    let (refused, retry_after, body) =
        call_with_retry_after(&shared_hello, "/", &[], &Limits::default()).await;
    // Another tenant's instance of the same component is not held back.
    let (other, _) = call(&hello, "/", &[], &Limits::default()).await;
    // Awaited before asserting: a test failing with the spinner still running would hang.
    let (held, held_body) = holder.await.expect("request task");
    assert_eq!(refused, 503, "{body}");
    assert!(
        body.contains("together hold all the memory it reserved"),
        "{body}"
    );
    assert_eq!(
        retry_after,
        Some(1),
        "others' load, not this request, refused it"
    );
    let log = String::from_utf8(hello.logs()).expect("utf-8");
    assert!(
        log.contains(
            "\n[peergrid] 503 GET /: stopped: the contract's runs on this node together hold"
        ),
        "{log}"
    );
    assert_eq!(other, 200);
    assert_eq!(held, 504, "{held_body}");
    assert_eq!(share.memory_in_use(), 0);
    let (status, _) = call(&shared_hello, "/", &[], &Limits::default()).await;
    assert_eq!(status, 200, "the spinner's memory is back in the share");
    assert_eq!(shared_hello.metrics().memory_limit_exceeded, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_contracts_runs_wait_for_its_instances_and_no_other_tenants() {
    let dir = tempfile::tempdir().expect("tempdir");
    let rt = runtime(dir.path());
    let share = Share::new(1 << 30, 1);
    let spin = prepare(&rt, &wat(SPIN_HTTP), WorkloadKind::Http).in_share(share.clone());
    let hello = prepare(&rt, &example("hello"), WorkloadKind::Http);
    let shared_hello = hello.clone().in_share(share.clone());

    let spinner = spin.clone();
    let mut holder =
        tokio::spawn(
            async move { call(&spinner, "/", &[], &limits(1 << 20, 60_000, 2_000)).await },
        );
    until("the spinner holds its instance", &mut holder, || {
        share.instances_in_use() >= 1
    })
    .await;
    let (refused, retry_after, body) =
        call_with_retry_after(&shared_hello, "/", &[], &limits(128 << 20, 1_000, 100)).await;
    let (other, _) = call(&hello, "/", &[], &Limits::default()).await;
    // A request with time to wait is served once the spinner's instance is given back.
    let (waited, _) = call(&shared_hello, "/", &[], &limits(128 << 20, 1_000, 5_000)).await;
    let (held, _) = holder.await.expect("request task");
    assert_eq!(refused, 503, "{body}");
    assert!(body.contains("held all 1 of its instances"), "{body}");
    assert_eq!(retry_after, Some(1));
    assert_eq!(other, 200, "another tenant is served at once");
    assert_eq!(waited, 200);
    assert_eq!(held, 504);
    assert!(
        settles(|| share.instances_in_use() == 0).await,
        "every instance is given back"
    );
}

#[test]
fn core_modules_and_garbage_are_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    let rt = runtime(dir.path());
    let module = wat("(module (func (export \"_start\")))");
    let err = rt
        .prepare(&hash(&module), &module, WorkloadKind::Job)
        .err()
        .expect("core module refused");
    assert!(matches!(err, ComputeError::CoreModule), "{err}");
    assert!(
        err.to_string()
            .contains("build a WASI 0.2 component (wasm32-wasip2)")
    );

    for garbage in [
        &b""[..],
        b"hello, world",
        b"\0asm\x0d\0\x01\0garbage after the header",
    ] {
        let err = rt
            .prepare(&hash(garbage), garbage, WorkloadKind::Http)
            .err()
            .expect("garbage refused");
        assert!(
            matches!(
                err,
                ComputeError::NotWasm | ComputeError::InvalidComponent(_)
            ),
            "{err}"
        );
    }
}

#[test]
fn a_wrong_hash_is_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    let rt = runtime(dir.path());
    let bytes = wat(OK_JOB);
    let err = rt
        .prepare(&[0; 32], &bytes, WorkloadKind::Job)
        .err()
        .expect("refused");
    assert!(matches!(err, ComputeError::HashMismatch { .. }), "{err}");
    assert!(
        err.to_string()
            .contains(&blake3::hash(&bytes).to_hex().to_string())
    );
}

#[test]
fn kind_mismatch_and_missing_imports_are_named() {
    let dir = tempfile::tempdir().expect("tempdir");
    let rt = runtime(dir.path());
    let job = wat(OK_JOB);
    let err = rt
        .prepare(&hash(&job), &job, WorkloadKind::Http)
        .err()
        .expect("a job is not a service");
    assert!(matches!(err, ComputeError::KindMismatch { .. }), "{err}");
    assert!(
        err.to_string().contains("wasi:http/incoming-handler"),
        "{err}"
    );
    assert!(err.to_string().contains("deploy it as a job"), "{err}");

    let service = wat(SPIN_HTTP);
    let err = rt
        .prepare(&hash(&service), &service, WorkloadKind::Job)
        .err()
        .expect("a service is not a job");
    assert!(err.to_string().contains("deploy it as http"), "{err}");

    let kv = wat(KEYVALUE_JOB);
    let err = rt
        .prepare(&hash(&kv), &kv, WorkloadKind::Job)
        .err()
        .expect("missing import refused");
    match &err {
        ComputeError::UnsupportedImport { import, .. } => {
            assert_eq!(import, "wasi:keyvalue/store@0.2.0")
        }
        other => panic!("expected UnsupportedImport, got {other}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_kind_calls_answer_errors() {
    let dir = tempfile::tempdir().expect("tempdir");
    let rt = runtime(dir.path());
    let job = prepare(&rt, &wat(OK_JOB), WorkloadKind::Job);
    let (status, body) = call(&job, "/", &[], &Limits::default()).await;
    assert_eq!(status, 500);
    assert!(body.contains("is a job"), "{body}");
    let service = prepare(&rt, &wat(SPIN_HTTP), WorkloadKind::Http);
    let out = service.run_job(&[], &[], &Limits::default()).await;
    assert!(out.error.unwrap_or_default().contains("HTTP service"));
}

fn files_under(dir: &Path) -> usize {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    entries
        .flatten()
        .map(|e| {
            let path = e.path();
            if path.is_dir() { files_under(&path) } else { 1 }
        })
        .sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_runtime_loads_compiled_components_from_its_cache() {
    let dir = tempfile::tempdir().expect("tempdir");
    let bytes = wat(OK_JOB);
    {
        let first = runtime(dir.path());
        let _job = prepare(&first, &bytes, WorkloadKind::Job);
        let stats = first.cache_stats();
        assert_eq!((stats.hits, stats.misses), (0, 1));
    }
    assert!(
        files_under(dir.path()) >= 1,
        "the cache directory gained no file"
    );

    let second = runtime(dir.path());
    let job = prepare(&second, &bytes, WorkloadKind::Job);
    let stats = second.cache_stats();
    assert_eq!(
        (stats.hits, stats.misses),
        (1, 0),
        "second prepare compiled again"
    );
    let out = job.run_job(&[], &[], &Limits::default()).await;
    assert!(out.success(), "{out:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prepare_async_and_many_concurrent_requests() {
    let dir = tempfile::tempdir().expect("tempdir");
    let rt = runtime(dir.path());
    let bytes = example("hello");
    let hello = rt
        .prepare_async(hash(&bytes), bytes, WorkloadKind::Http)
        .await
        .expect("prepares");
    let mut tasks = Vec::new();
    for _ in 0..32 {
        let hello = hello.clone();
        tasks.push(tokio::spawn(async move {
            call(&hello, "/", &[], &Limits::default()).await
        }));
    }
    for t in tasks {
        let (status, body) = t.await.expect("task");
        // The pool holds 16 instances: the others wait for one within their wall time.
        assert_eq!(status, 200, "{body}");
    }
    assert_eq!(hello.metrics().requests, 32);
    assert!(
        settles(|| rt.instances_in_use() == 0).await,
        "every instance is given back"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_pool_makes_requests_wait_for_an_instance_rather_than_fail() {
    let dir = tempfile::tempdir().expect("tempdir");
    let rt = Runtime::new(RuntimeConfig {
        cache_dir: Some(dir.path().to_path_buf()),
        max_instances: 2,
        ..RuntimeConfig::default()
    })
    .expect("runtime starts");
    let spin = prepare(&rt, &wat(SPIN_HTTP), WorkloadKind::Http);
    let hello = prepare(&rt, &example("hello"), WorkloadKind::Http);

    // Two other tenants' slow requests take the whole pool for 1.5 s.
    let spinning = || {
        let spin = spin.clone();
        tokio::spawn(async move { call(&spin, "/", &[], &limits(1 << 20, 60_000, 1_500)).await })
    };
    let (mut first, second) = (spinning(), spinning());
    until("both instances are held", &mut first, || {
        rt.instances_in_use() == 2
    })
    .await;
    // A third slow request queues first; its 504 says most of its time went waiting.
    let third = {
        let spin = spin.clone();
        tokio::spawn(async move { call(&spin, "/", &[], &limits(1 << 20, 60_000, 2_500)).await })
    };
    let (refused, retry_after, body) =
        call_with_retry_after(&hello, "/", &[], &limits(128 << 20, 1_000, 100)).await;
    // A job that finds no instance within its wall time has not run: worth running again.
    let job = prepare(&rt, &wat(OK_JOB), WorkloadKind::Job);
    let not_run = job.run_job(&[], &[], &limits(1 << 20, 1_000, 100)).await;
    assert!(not_run.refused && !not_run.success(), "{not_run:?}");
    // A request with time to wait is served once an instance is given back.
    let (waited, _) = call(&hello, "/", &[], &limits(128 << 20, 1_000, 5_000)).await;
    let ((a, _), (b, _)) = (
        first.await.expect("request task"),
        second.await.expect("request task"),
    );
    let (late, late_body) = third.await.expect("request task");
    assert_eq!(late, 504, "{late_body}");
    assert!(
        late_body.contains("of it waiting for an instance on a busy node"),
        "{late_body}"
    );
    assert_eq!(refused, 503, "{body}");
    assert!(
        body.contains(
            "as many instances as it can (2) and none was free within the wall-time limit of 100 ms"
        ),
        "{body}"
    );
    assert_eq!(retry_after, Some(1), "others' load refused it");
    assert_eq!(waited, 200);
    assert_eq!((a, b), (504, 504));
    assert!(
        settles(|| rt.instances_in_use() == 0).await,
        "every instance is given back"
    );
}

#[test]
fn the_memory_a_component_starts_with_is_read_from_its_modules() {
    let two = wat(r#"(component
        (core module (memory 2))
        (core module (memory 5 10))
    )"#);
    assert_eq!(
        memory_at_start(&two).expect("parses"),
        7 * 65_536,
        "together, as an instance's limit counts them"
    );
    let none = wat("(component (core module))");
    assert_eq!(memory_at_start(&none).expect("parses"), 0);
    // A Rust-built service starts with its stack in memory: far more than one page.
    let hello = example("hello");
    assert!(memory_at_start(&hello).expect("parses") > 64 << 10);
    assert!(
        memory_at_start(b"\0asm\x0d\0\x01\0\x05").is_err(),
        "cut short"
    );
}
