//! The `peergrid` binary as a user runs it, each test in its own temporary `PEERGRID_HOME`.

use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use serde_json::Value;

/// A fresh home for keys and a scratch directory, removed when dropped.
struct Sandbox {
    dir: tempfile::TempDir,
}

impl Sandbox {
    fn new() -> Self {
        Sandbox {
            dir: tempfile::tempdir().expect("tempdir"),
        }
    }

    fn home(&self) -> PathBuf {
        self.dir.path().join("home")
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn command(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_peergrid"));
        cmd.args(args)
            .current_dir(self.dir.path())
            .env("PEERGRID_HOME", self.home())
            .env_remove("PEERGRID_DEVNET")
            .env("HOME", self.dir.path())
            .env_remove("RUST_LOG")
            .stdin(Stdio::null());
        cmd
    }

    fn run(&self, args: &[&str]) -> Output {
        self.command(args).output().expect("run peergrid")
    }

    fn run_with_stdin(&self, args: &[&str], stdin: &str) -> Output {
        let mut child = self
            .command(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn peergrid");
        child
            .stdin
            .take()
            .expect("stdin")
            .write_all(stdin.as_bytes())
            .expect("write stdin");
        child.wait_with_output().expect("wait")
    }

    /// Run with `--json`, expect success, and parse stdout as exactly one JSON object.
    fn json(&self, args: &[&str]) -> Value {
        let mut all = vec!["--json"];
        all.extend_from_slice(args);
        let out = self.run(&all);
        assert_success(&out, args);
        parse_json(&out)
    }
}

fn parse_json(out: &Output) -> Value {
    let stdout = String::from_utf8(out.stdout.clone()).expect("utf-8 stdout");
    let value: Value = serde_json::from_str(&stdout)
        .unwrap_or_else(|e| panic!("stdout is not one JSON value ({e}): {stdout}"));
    assert!(value.is_object(), "expected a JSON object: {stdout}");
    value
}

fn assert_success(out: &Output, args: &[&str]) {
    assert!(
        out.status.success(),
        "peergrid {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Expect exit code 1 and a one-line `error: …` on stderr; returns the message.
fn expect_error(out: &Output) -> String {
    assert_eq!(out.status.code(), Some(1), "expected exit code 1");
    let stderr = String::from_utf8(out.stderr.clone()).expect("utf-8 stderr");
    assert!(stderr.starts_with("error: "), "stderr: {stderr}");
    assert!(!stderr.contains("backtrace"), "stderr: {stderr}");
    stderr
}

fn text(v: &Value, key: &str) -> String {
    v[key]
        .as_str()
        .unwrap_or_else(|| panic!("{key} missing in {v}"))
        .to_string()
}

#[test]
fn key_new_then_show_gives_the_same_account_and_a_private_file() {
    let sb = Sandbox::new();
    let new = sb.json(&["key", "new"]);
    let account = text(&new, "account");
    assert!(account.starts_with("12D3KooW"), "{account}");
    assert_eq!(text(&new, "mnemonic").split(' ').count(), 24);
    let file = PathBuf::from(text(&new, "file"));
    assert_eq!(file, sb.home().join("key.json"));

    let mode = std::fs::metadata(&file)
        .expect("key file")
        .permissions()
        .mode()
        & 0o777;
    assert_eq!(mode, 0o600, "key file must be readable by its owner only");

    let show = sb.json(&["key", "show"]);
    assert_eq!(text(&show, "account"), account);
    assert!(
        show.get("mnemonic").is_none(),
        "key show must not reveal the phrase unasked: {show}"
    );
    let revealed = sb.json(&["key", "show", "--mnemonic"]);
    assert_eq!(text(&revealed, "mnemonic"), text(&new, "mnemonic"));

    let human = sb.run(&["key", "show"]);
    assert_success(&human, &["key", "show"]);
    let human = String::from_utf8(human.stdout).expect("utf-8");
    assert!(human.contains(&account), "{human}");
    let first_word = text(&new, "mnemonic")
        .split(' ')
        .next()
        .expect("word")
        .to_string();
    assert!(
        !human.split_whitespace().any(|w| w == first_word),
        "{human}"
    );
}

#[test]
fn key_new_prints_the_phrase_with_a_warning() {
    let sb = Sandbox::new();
    let out = sb.run(&["key", "new"]);
    assert_success(&out, &["key", "new"]);
    let stdout = String::from_utf8(out.stdout).expect("utf-8");
    assert!(stdout.contains("WRITE THESE 24 WORDS DOWN"), "{stdout}");
    let show = sb.json(&["key", "show", "--mnemonic"]);
    let phrase_words: Vec<String> = text(&show, "mnemonic")
        .split(' ')
        .map(String::from)
        .collect();
    let printed: Vec<&str> = stdout.split_whitespace().collect();
    assert!(
        printed
            .windows(24)
            .any(|w| w.iter().zip(&phrase_words).all(|(a, b)| *a == b)),
        "the 24 words must be printed in order: {stdout}"
    );
}

#[test]
fn key_new_refuses_to_overwrite_unless_forced() {
    let sb = Sandbox::new();
    let first = sb.json(&["key", "new"]);
    let err = expect_error(&sb.run(&["key", "new"]));
    assert!(err.contains("already exists"), "{err}");
    assert!(err.contains("--force"), "{err}");
    assert_eq!(
        text(&sb.json(&["key", "show"]), "account"),
        text(&first, "account"),
        "a refused key new must leave the old key in place"
    );
    let second = sb.json(&["key", "new", "--force"]);
    assert_ne!(text(&second, "account"), text(&first, "account"));
    assert_eq!(
        text(&sb.json(&["key", "show"]), "account"),
        text(&second, "account")
    );
}

#[test]
fn key_show_without_a_key_says_how_to_make_one() {
    let sb = Sandbox::new();
    let err = expect_error(&sb.run(&["key", "show"]));
    assert!(err.contains("peergrid key new"), "{err}");
}

#[test]
fn import_of_the_printed_phrase_restores_the_account_on_a_fresh_home() {
    let original = Sandbox::new();
    let new = original.json(&["key", "new"]);
    let phrase = text(&new, "mnemonic");

    let restored = Sandbox::new();
    let out = restored.run_with_stdin(&["--json", "key", "import"], &format!("{phrase}\n"));
    assert_success(&out, &["key", "import"]);
    assert_eq!(text(&parse_json(&out), "account"), text(&new, "account"));
    assert_eq!(
        text(&restored.json(&["key", "show"]), "account"),
        text(&new, "account")
    );

    let scripted = Sandbox::new();
    let out = scripted.json(&["key", "import", "--mnemonic", &phrase]);
    assert_eq!(text(&out, "account"), text(&new, "account"));
    let err = expect_error(&scripted.run(&["key", "import", "--mnemonic", &phrase]));
    assert!(err.contains("already exists"), "{err}");
}

#[test]
fn a_wrong_phrase_is_refused_readably_and_writes_nothing() {
    let sb = Sandbox::new();
    let phrase = text(&Sandbox::new().json(&["key", "new"]), "mnemonic");
    let mut words: Vec<&str> = phrase.split(' ').collect();
    words[5] = "notaword";
    let err = expect_error(&sb.run_with_stdin(&["key", "import"], &words.join(" ")));
    assert!(err.contains("invalid mnemonic"), "{err}");

    let err = expect_error(&sb.run_with_stdin(&["key", "import"], "one two three"));
    assert!(err.contains("3 words given, 24 needed"), "{err}");

    let err = expect_error(&sb.run(&["key", "import"]));
    assert!(err.contains("no backup phrase"), "{err}");

    assert!(!sb.home().join("key.json").exists());
}

#[test]
fn genesis_new_then_check_agree_on_the_hash() {
    let sb = Sandbox::new();
    let new = sb.json(&["genesis", "new", "--out", "net/genesis.toml"]);
    assert_eq!(text(&new, "chain_id"), "peergrid-devnet");
    let validators = new["validators"].as_array().expect("validators");
    assert_eq!(validators.len(), 4);
    for (i, v) in validators.iter().enumerate() {
        let file = sb.path(&format!("net/keys/validator-{i}.json"));
        assert_eq!(sb.path(&text(v, "file")), file);
        let mode = std::fs::metadata(&file).expect("key").permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
    }
    assert!(sb.path("net/keys/demo.json").exists());
    assert!(sb.path("net/keys/faucet.json").exists());

    let demo = &new["demo"];
    let from_phrase =
        Sandbox::new().json(&["key", "import", "--mnemonic", &text(demo, "mnemonic")]);
    assert_eq!(text(&from_phrase, "account"), text(demo, "account"));
    let demo_key = sb.json(&["--key", "net/keys/demo.json", "key", "show"]);
    assert_eq!(text(&demo_key, "account"), text(demo, "account"));

    let check = sb.json(&["genesis", "check", "net/genesis.toml"]);
    assert_eq!(text(&check, "genesis_hash"), text(&new, "genesis_hash"));
    assert_eq!(text(&check, "chain_id"), "peergrid-devnet");
    assert_eq!(text(&check, "supply"), text(&new, "supply"));
    assert_eq!(check["validators"].as_array().map(Vec::len), Some(4));
    assert_eq!(check["council"]["members"][0], demo["account"]);

    let human = sb.run(&["genesis", "check", "net/genesis.toml"]);
    assert_success(&human, &["genesis", "check"]);
    let human = String::from_utf8(human.stdout).expect("utf-8");
    assert!(human.contains(&text(&new, "genesis_hash")), "{human}");
    assert!(
        human.contains("every 10 s"),
        "devnet uptime interval: {human}"
    );
}

#[test]
fn genesis_new_refuses_to_overwrite_and_honours_its_options() {
    let sb = Sandbox::new();
    let first = sb.json(&[
        "genesis",
        "new",
        "--validators",
        "1",
        "--chain-id",
        "test-1",
    ]);
    assert_eq!(text(&first, "chain_id"), "test-1");
    assert_eq!(first["validators"].as_array().map(Vec::len), Some(1));
    let before = std::fs::read(sb.path("genesis.toml")).expect("genesis");
    let demo_before = std::fs::read(sb.path("keys/demo.json")).expect("demo key");

    let err = expect_error(&sb.run(&["genesis", "new", "--validators", "1"]));
    assert!(err.contains("already exist"), "{err}");
    assert!(err.contains("--force"), "{err}");
    assert_eq!(
        std::fs::read(sb.path("genesis.toml")).expect("genesis"),
        before
    );
    assert_eq!(
        std::fs::read(sb.path("keys/demo.json")).expect("demo key"),
        demo_before,
        "a refused genesis new must not touch the keys either"
    );

    let forced = sb.json(&["genesis", "new", "--validators", "1", "--force"]);
    assert_ne!(text(&forced, "genesis_hash"), text(&first, "genesis_hash"));

    let other = sb.json(&[
        "genesis",
        "new",
        "--out",
        "b.toml",
        "--keys-dir",
        "elsewhere",
    ]);
    assert_eq!(
        sb.path(&text(&other["faucet"], "file")),
        sb.path("elsewhere/faucet.json")
    );

    let err = expect_error(&sb.run(&["genesis", "new", "--out", "c.toml", "--validators", "0"]));
    assert!(err.contains("validators"), "{err}");
    assert!(!sb.path("c.toml").exists());
}

#[test]
fn a_corrupted_genesis_is_refused_naming_the_rule() {
    let sb = Sandbox::new();
    sb.json(&["genesis", "new"]);
    let good = std::fs::read_to_string(sb.path("genesis.toml")).expect("genesis");

    let bad = good.replacen("threshold = 1", "threshold = 3", 1);
    assert_ne!(bad, good, "the council threshold line must be in the file");
    std::fs::write(sb.path("bad.toml"), bad).expect("write");
    let err = expect_error(&sb.run(&["genesis", "check", "bad.toml"]));
    assert!(err.contains("council threshold 3"), "{err}");

    let bad = good.replacen(
        "chain_id = \"peergrid-devnet\"",
        "chain_id = \"no spaces allowed\"",
        1,
    );
    assert_ne!(bad, good);
    std::fs::write(sb.path("bad.toml"), bad).expect("write");
    let err = expect_error(&sb.run(&["genesis", "check", "bad.toml"]));
    assert!(err.contains("chain_id"), "{err}");

    std::fs::write(sb.path("bad.toml"), "chain_id = 5\n").expect("write");
    let err = expect_error(&sb.run(&["--json", "genesis", "check", "bad.toml"]));
    assert!(err.contains("bad.toml is not valid"), "{err}");

    let err = expect_error(&sb.run(&["genesis", "check", "missing.toml"]));
    assert!(err.contains("missing.toml"), "{err}");
    assert_eq!(
        err.matches("No such file").count(),
        1,
        "the cause is said once: {err}"
    );
}

#[test]
fn a_validator_with_a_broken_config_says_what_is_wrong() {
    let sb = Sandbox::new();
    let missing = sb.path("nowhere.toml");
    let err = expect_error(&sb.run(&[
        "validator",
        "run",
        "--config",
        missing.to_str().expect("utf-8"),
    ]));
    assert!(
        err.contains("cannot read") && err.contains("nowhere.toml"),
        "{err}"
    );

    let garbage = sb.path("garbage.toml");
    std::fs::write(&garbage, "genesis = 5\n").expect("write");
    let err = expect_error(&sb.run(&[
        "validator",
        "run",
        "--config",
        garbage.to_str().expect("utf-8"),
    ]));
    assert!(err.contains("not a valid validator config"), "{err}");

    // A key that is not one of the genesis validators is refused before anything starts.
    let genesis = sb.path("genesis.toml");
    assert!(
        sb.run(&["genesis", "new", "--out", genesis.to_str().expect("utf-8")])
            .status
            .success()
    );
    assert!(sb.run(&["key", "new"]).status.success());
    let config = sb.path("validator.toml");
    std::fs::write(
        &config,
        format!(
            "genesis = \"genesis.toml\"\nkey = \"{}\"\ndata_dir = \"data\"\np2p_listen = \"127.0.0.1:1\"\napi_listen = \"127.0.0.1:2\"\n",
            sb.home().join("key.json").display()
        ),
    )
    .expect("write");
    let err = expect_error(&sb.run(&[
        "validator",
        "run",
        "--config",
        config.to_str().expect("utf-8"),
    ]));
    assert!(
        err.contains("is not a validator in") && err.contains("join = true"),
        "{err}"
    );
}

/// A validator whose block archive cannot be opened (here a file stands where its folder
/// goes) stops with what to check, not a panic.
#[test]
fn a_validator_whose_archive_cannot_open_says_what_to_check() {
    let sb = Sandbox::new();
    let key = sb.json(&["key", "new"]);
    let me = format!("{}@127.0.0.1:1", text(&key, "account"));
    let genesis = sb.path("genesis.toml");
    assert!(
        sb.run(&[
            "genesis",
            "new",
            "--out",
            genesis.to_str().expect("utf-8"),
            "--validator",
            &me
        ])
        .status
        .success()
    );
    let consensus = sb.path("data/consensus");
    std::fs::create_dir_all(&consensus).expect("dir");
    for archive in ["finalizations", "blocks"] {
        for part in ["metadata", "key", "value"] {
            std::fs::write(
                consensus.join(format!("validator-0-finalized-{archive}-{part}")),
                b"not a folder",
            )
            .expect("write");
        }
    }
    let config = sb.path("validator.toml");
    std::fs::write(
        &config,
        format!(
            "genesis = \"genesis.toml\"\nkey = \"{}\"\ndata_dir = \"data\"\np2p_listen = \"127.0.0.1:0\"\napi_listen = \"127.0.0.1:0\"\n",
            sb.home().join("key.json").display()
        ),
    )
    .expect("write");
    let out = sb.run(&[
        "validator",
        "run",
        "--config",
        config.to_str().expect("utf-8"),
    ]);
    let err = expect_error(&out);
    assert!(
        err.contains("cannot open the validator's finalizations archive")
            && err.contains("check that the disk is mounted, writable and not full"),
        "{err}"
    );
    assert!(!err.contains("panicked"), "{err}");
}

#[test]
fn ledger_commands_without_a_ledger_say_how_to_get_one() {
    let sb = Sandbox::new();
    let err = expect_error(&sb.run(&[
        "wallet",
        "balance",
        "12D3KooWRmPNRfMQCwudpSaD9LiwwbXP4EEKUCGHxnFSr435we14",
    ]));
    assert!(
        err.contains("peergrid devnet") && err.contains("--ledger"),
        "{err}"
    );
    let err = expect_error(&sb.run(&["devnet", "status"]));
    assert!(err.contains("no devnet is running"), "{err}");
    let err = expect_error(&sb.run(&["--ledger", " ", "wallet", "balance"]));
    assert!(err.contains("names no URL"), "{err}");
    // A transfer to one's own account is refused before any ledger is asked.
    let me = text(&sb.json(&["key", "new"]), "account");
    let err = expect_error(&sb.run(&[
        "--ledger",
        "http://127.0.0.1:9",
        "wallet",
        "transfer",
        "--to",
        &me,
        "--amount",
        "1",
    ]));
    assert!(err.contains("is your own account"), "{err}");
}

#[test]
fn usage_errors_exit_with_2() {
    let sb = Sandbox::new();
    assert_eq!(sb.run(&["key", "frobnicate"]).status.code(), Some(2));
    assert_eq!(
        sb.run(&["genesis", "new", "--validators", "many"])
            .status
            .code(),
        Some(2)
    );
    // With --json the same mistake is also one JSON object on stdout, as every failure.
    let out = sb.run(&["--json", "genesis", "new", "--validators", "many"]);
    assert_eq!(out.status.code(), Some(2));
    let said = parse_json(&out);
    assert!(text(&said, "error").contains("many"), "{said}");
    // Values out of their range are usage errors too, said before anything is done.
    for (args, said) in [
        (
            &["node", "run", "--farm", "1", "--latitude", "200"][..],
            "out of range (±90 degrees)",
        ),
        (
            &["node", "run", "--farm", "1", "--country", "Belgium"],
            "like BE",
        ),
        (
            &["node", "run", "--farm", "1", "--disk", "/data:ssd:0"],
            "offers nothing",
        ),
        (
            &[
                "contract", "create", "storage", "--node", "1", "--bytes", "0",
            ],
            "reserves nothing",
        ),
        (
            &["gov", "propose", "set-token-price", "--usd", "0"],
            "cannot be worth nothing",
        ),
        (
            &[
                "gov",
                "propose",
                "set-token-price",
                "--usd",
                "99999999999999999999",
            ],
            "more than the largest amount",
        ),
    ] {
        let out = sb.run(args);
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {err}");
        assert!(err.contains(said), "{args:?}: {err}");
    }
    // Help is not an error.
    let out = sb.run(&["--json", "key", "--help"]);
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).contains("Usage"));
}

#[test]
fn a_machine_without_certificate_authorities_still_talks_plain_http() {
    // A minimal container may have no CA certificates: https:// cannot be trusted there, but
    // the client must not fail to start, and a plain http:// ledger is still reached.
    let sb = Sandbox::new();
    let empty = sb.path("empty-ca");
    std::fs::create_dir_all(&empty).expect("dir");
    let none = sb.path("none.pem");
    std::fs::write(&none, "").expect("file");
    let out = sb
        .command(&["--ledger", "http://127.0.0.1:1", "farm", "list"])
        .env("SSL_CERT_FILE", &none)
        .env("SSL_CERT_DIR", &empty)
        .output()
        .expect("run");
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains("no validator answered at http://127.0.0.1:1"),
        "{err}"
    );
    assert!(
        err.contains("certificate authorities cannot be used"),
        "{err}"
    );
}

#[test]
fn key_flag_overrides_the_home() {
    let sb = Sandbox::new();
    let elsewhere: &Path = &sb.path("other/key.json");
    let new = sb.json(&["--key", elsewhere.to_str().expect("utf-8"), "key", "new"]);
    assert_eq!(PathBuf::from(text(&new, "file")), elsewhere);
    assert!(elsewhere.exists());
    assert!(!sb.home().join("key.json").exists());
}

/// Files another party hands an operator (a genesis, a key file, a validator config, a
/// council policy) that are not text at all: each is named, and the error says it is not
/// text, rather than that the file cannot be read or accessed.
#[test]
fn a_file_that_is_not_text_is_named_and_called_so() {
    let sb = Sandbox::new();
    let not_text = b"chain_id = \"x\"\n\xff\xfe";
    let cases: [(&str, Vec<&str>); 4] = [
        ("genesis.toml", vec!["genesis", "check", "genesis.toml"]),
        ("key.json", vec!["--key", "key.json", "key", "show"]),
        (
            "validator.toml",
            vec!["validator", "run", "--config", "validator.toml"],
        ),
        (
            "pricing.toml",
            vec![
                "--ledger",
                "http://127.0.0.1:1",
                "gov",
                "propose",
                "set-pricing",
                "--file",
                "pricing.toml",
            ],
        ),
    ];
    for (file, args) in cases {
        std::fs::write(sb.path(file), not_text).expect("write");
        let err = expect_error(&sb.run(&args));
        assert!(err.contains(file), "{file}: {err}");
        assert!(
            err.contains("not UTF-8 text (the byte at offset 15"),
            "{file}: {err}"
        );
        assert!(!err.contains("cannot"), "{file}: {err}");
    }
}

#[test]
fn output_into_a_closed_pipe_ends_quietly_as_unix_tools_do() {
    let sb = Sandbox::new();
    assert_success(&sb.run(&["key", "new"]), &["key", "new"]);
    // The reader is gone before the command writes: `peergrid key show | head -0`.
    let (reader, writer) = std::io::pipe().expect("pipe");
    drop(reader);
    let out = sb
        .command(&["key", "show"])
        .env("RUST_BACKTRACE", "1")
        .stdout(writer)
        .stderr(Stdio::piped())
        .output()
        .expect("run peergrid");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert!(
        stderr.is_empty(),
        "nothing to say about a reader that left: {stderr}"
    );
    assert_eq!(out.status.code(), Some(141), "the status of a SIGPIPE");
}

#[test]
fn a_failed_command_with_json_prints_its_error_as_json() {
    let sb = Sandbox::new();
    let out = sb.run(&["--json", "key", "show"]);
    assert!(!out.status.success());
    let said = parse_json(&out);
    let error = text(&said, "error");
    assert!(error.contains("no key file"), "{said}");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains(&format!("error: {error}")), "{stderr}");
}

#[test]
fn a_command_line_that_does_not_parse_says_what_is_missing_in_json_too() {
    let sb = Sandbox::new();
    // A well-formed account: a malformed one is refused first.
    let someone = "12D3KooWHFd1gyNYFqxt7ke9FY2VoVVWY2XSPhvL9vg2pB6wQGfa";
    let out = sb.run(&["--json", "wallet", "transfer", "--to", someone]);
    assert_eq!(out.status.code(), Some(2));
    let error = text(&parse_json(&out), "error");
    assert!(
        error.contains("required arguments were not provided") && error.contains("--amount"),
        "the missing argument is named: {error}"
    );
    let out = sb.run(&[
        "--json", "wallet", "transfer", "--to", someone, "--amount", "-1",
    ]);
    assert_eq!(out.status.code(), Some(2));
    let error = text(&parse_json(&out), "error");
    assert!(error.starts_with("-1 is negative"), "{error}");
    // Typed as one word, the amount reaches its parser, which says the same, as a usage
    // error; so do a malformed account and hash.
    for (args, says) in [
        (
            &["wallet", "transfer", "--to", someone, "--amount=-5"][..],
            "-5 is negative",
        ),
        (
            &["wallet", "transfer", "--to", "12D3KooWN1", "--amount", "1"][..],
            "not an account id",
        ),
        (&["tx", "status", "abc"][..], "not a hash"),
    ] {
        let out = sb.run(&[&["--json"][..], args].concat());
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        let error = text(&parse_json(&out), "error");
        assert!(error.contains(says), "{args:?}: {error}");
    }
    let out = sb.run(&["--json", "contract", "cancel", "abc"]);
    assert_eq!(out.status.code(), Some(2));
    let error = text(&parse_json(&out), "error");
    assert!(
        error.starts_with("\"abc\" for <CONTRACT> is not a whole number")
            && error.contains("`contract list`")
            && !error.contains("node show"),
        "{error}"
    );
    let out = sb.run(&["--json", "deploy", "app.wasm", "--node", "abc"]);
    let error = text(&parse_json(&out), "error");
    assert!(error.contains("`node list`"), "a node id: {error}");
    let out = sb.run(&["--json", "wallet"]);
    assert_eq!(out.status.code(), Some(2));
    let error = text(&parse_json(&out), "error");
    assert!(
        error.contains("a command is missing") && error.contains("balance, transfer"),
        "the commands are listed: {error}"
    );
}

#[test]
fn a_mistyped_phrase_names_the_word_as_people_count() {
    let sb = Sandbox::new();
    let phrase = text(&sb.json(&["key", "new"]), "mnemonic");
    let mut words: Vec<&str> = phrase.split(' ').collect();
    words[23] = "zzzz";
    let out = sb.run(&["key", "import", "--force", "--mnemonic", &words.join(" ")]);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("word 24 is not"), "{stderr}");
    assert!(
        !stderr.contains("zzzz"),
        "the phrase's words are not echoed: {stderr}"
    );
}

#[test]
fn a_component_whose_memory_starts_above_its_limit_is_refused_before_any_contract() {
    let sb = Sandbox::new();
    let hello = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../examples/apps/hello/hello.wasm")
        .display()
        .to_string();
    // No ledger is reachable here: the refusal comes before anything is asked of one.
    let out = sb.run(&["deploy", &hello, "--memory", "64KiB"]);
    assert_eq!(out.status.code(), Some(1));
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(
        said.contains("error: ")
            && said.contains("of memory as it starts")
            && said.contains("give --memory"),
        "{said}"
    );
    // Just above what it starts with: taken, with a warning that requests need more.
    let out = sb.run(&["deploy", &hello, "--memory", "1088KiB"]);
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(
        said.contains("warning: --memory 1.1 MiB leaves") && said.contains("answer 503"),
        "{said}"
    );
}
