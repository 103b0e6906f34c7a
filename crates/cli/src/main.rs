//! The `peergrid` command: parses arguments, calls the crates, prints the result.
//!
//! # Status: ALPHA
//!
//! Nothing here decides anything: keys come from `peergrid-core`, genesis rules from
//! `peergrid-ledger`. Every command prints aligned text for people, or exactly one
//! JSON object on stdout with `--json` (`{"error": …}` for a command that fails before
//! printing its own). Errors go to stderr as `error: <message>` with exit code 1; usage
//! errors exit with 2; output to a reader that went away ends with 141.

/// `println!` for what a command prints: see [`output::write_out`].
macro_rules! outln {
    () => {
        $crate::output::write_out(format_args!("\n"))
    };
    ($($arg:tt)*) => {
        $crate::output::write_out(format_args!("{}\n", format_args!($($arg)*)))
    };
}

/// `print!` for what a command prints: see [`output::write_out`].
macro_rules! out {
    ($($arg:tt)*) => {
        $crate::output::write_out(format_args!($($arg)*))
    };
}

mod app;
mod app_data;
mod bench_compute;
mod econ;
mod genesis;
mod grid;
mod job;
mod key;
mod ledger;
mod logline;
mod mesh;
mod output;
mod snapshot;
mod stop;
mod store;

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{ArgAction, Parser, Subcommand};
use tracing_subscriber::EnvFilter;

pub(crate) use stop::stop_requested;

/// peergrid: a peer-to-peer cloud. Peer-to-peer moves the data; the ledger records the trust.
#[derive(Parser)]
#[command(name = "peergrid", version)]
struct Cli {
    /// Print one JSON object on stdout instead of text.
    #[arg(long, global = true, help_heading = "Global options")]
    json: bool,
    /// Key file [default: $PEERGRID_HOME/key.json, PEERGRID_HOME defaults to ~/.peergrid].
    #[arg(
        long,
        global = true,
        help_heading = "Global options",
        value_name = "FILE"
    )]
    key: Option<PathBuf>,
    /// Ledger API URLs, comma-separated [default: the running devnet's validators].
    #[arg(
        long,
        global = true,
        help_heading = "Global options",
        value_name = "URL",
        env = "PEERGRID_LEDGER"
    )]
    ledger: Option<String>,
    /// Mesh bootstrap peers, comma-separated multiaddrs ending in /p2p/<id>, tried before
    /// those the genesis names (for a grid whose genesis lists none, or none reachable).
    #[arg(
        long,
        global = true,
        help_heading = "Global options",
        value_name = "MULTIADDR",
        env = "PEERGRID_MESH_BOOTSTRAP"
    )]
    mesh_bootstrap: Option<String>,
    /// Also trust the certificate authorities in this PEM file for https:// ledger URLs
    /// (a private CA or a self-signed validator), besides the system's.
    #[arg(
        long,
        global = true,
        help_heading = "Global options",
        value_name = "FILE",
        env = "PEERGRID_LEDGER_CA"
    )]
    ledger_ca: Option<PathBuf>,
    /// Log to stderr (-v info, -vv debug, -vvv trace); RUST_LOG overrides.
    #[arg(short, long, global = true, help_heading = "Global options", action = ArgAction::Count)]
    verbose: u8,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Create, restore and show your account key.
    #[command(subcommand)]
    Key(key::KeyCommand),
    /// Create and check genesis files.
    #[command(subcommand)]
    Genesis(genesis::GenesisCommand),
    /// Start a whole grid on this machine; `devnet status` checks a running one.
    Devnet(ledger::DevnetArgs),
    /// Run a mesh peer and talk to it: status, peers, ping, bulk transfers.
    #[command(subcommand)]
    Mesh(mesh::MeshCommand),
    /// Farms: create, list, show, update, invite a node, rewards and income.
    #[command(subcommand)]
    Farm(grid::FarmCommand),
    /// Nodes: run this machine as one, list them, show one.
    #[command(subcommand)]
    Node(grid::NodeCommand),
    /// Contracts: list, show, create, update, cancel.
    #[command(subcommand)]
    Contract(econ::ContractCommand),
    /// Deploy a WebAssembly app (a WASI 0.2 component) to nodes; prints its URLs.
    Deploy(app::DeployArgs),
    /// Your deployed apps: list, status, logs, update, repair, data, rm.
    #[command(subcommand)]
    App(app::AppCommand),
    /// Jobs: run a WebAssembly command once on a node and get its output.
    #[command(subcommand)]
    Job(job::JobCommand),
    /// Storage: reserve space, put and get encrypted, erasure-coded objects.
    #[command(subcommand)]
    Store(store::StoreCommand),
    /// Bills of a contract.
    #[command(subcommand)]
    Bill(econ::BillCommand),
    /// Governance: propose, vote, list, show.
    #[command(subcommand)]
    Gov(econ::GovCommand),
    /// Run a validator.
    #[command(subcommand)]
    Validator(ledger::ValidatorCommand),
    /// Balances and transfers.
    #[command(subcommand)]
    Wallet(ledger::WalletCommand),
    /// Transactions.
    #[command(subcommand)]
    Tx(ledger::TxCommand),
    /// Benchmarks that need a running grid.
    #[command(subcommand)]
    Bench(ledger::BenchCommand),
}

/// What every command gets besides its own arguments.
struct Globals {
    json: bool,
    key: Option<PathBuf>,
    ledger: Option<String>,
    /// Mesh bootstrap peers given with `--mesh-bootstrap`.
    mesh_bootstrap: Vec<String>,
    /// Extra certificate authorities for https:// validators (`--ledger-ca`).
    ledger_ca: Option<PathBuf>,
}

impl Globals {
    /// The key file to use: `--key`, else `$PEERGRID_HOME/key.json`, else `~/.peergrid/key.json`.
    fn key_file(&self) -> anyhow::Result<PathBuf> {
        if let Some(path) = &self.key {
            return Ok(path.clone());
        }
        self.home_key_file()
    }

    /// The key to sign with: `--key`, your own key, or, while a devnet runs and you have
    /// no key of your own, the devnet's demo account, so a newcomer needs no set-up.
    fn keypair(&self) -> anyhow::Result<peergrid_core::Keypair> {
        Ok(peergrid_core::Keypair::load(&self.signing_key_file()?)?)
    }

    /// The file [`Globals::keypair`] loads.
    fn signing_key_file(&self) -> anyhow::Result<PathBuf> {
        let own = self.key_file()?;
        if self.key.is_none()
            && !own.exists()
            && let Some(running) = peergrid_devnet::running(&peergrid_devnet::default_dir())
        {
            return Ok(running.demo_key);
        }
        Ok(own)
    }

    /// The ledger API URLs of `--ledger`, or of the running devnet.
    fn ledger_urls(&self) -> anyhow::Result<Vec<String>> {
        if let Some(urls) = &self.ledger {
            let urls: Vec<String> = urls
                .split(',')
                .map(str::trim)
                .filter(|u| !u.is_empty())
                // `--ledger 127.0.0.1:8700` means the plain HTTP API there.
                .map(|u| match u.contains("://") {
                    true => u.to_string(),
                    false => format!("http://{u}"),
                })
                .collect();
            if urls.is_empty() {
                anyhow::bail!(
                    "--ledger (or PEERGRID_LEDGER) names no URL: give a validator's API, like \
                     http://127.0.0.1:8700, or leave it out to use the running devnet"
                );
            }
            return Ok(urls);
        }
        let dir = peergrid_devnet::default_dir();
        match peergrid_devnet::running(&dir) {
            Some(r) => Ok(r.apis),
            None => anyhow::bail!(
                "no ledger to talk to: no devnet runs from {}; pass --ledger URL (a validator's \
                 API), set PEERGRID_DEVNET to the folder of a devnet running from another \
                 home, or start one with `peergrid devnet`",
                dir.display()
            ),
        }
    }

    /// A client of `--ledger`, or of the running devnet.
    fn client(&self) -> anyhow::Result<peergrid_client::Client> {
        let mut client = peergrid_client::Client::new(self.ledger_urls()?);
        // Proven reads start from the newest validator set verified on an earlier run.
        if let Some(home) = peergrid_devnet::home_dir() {
            client = client.with_trust_cache(home.join("trust"));
        }
        let client = match self.ledger_ca_pem()? {
            Some(pem) => client.with_root_certificates(&pem).context("--ledger-ca")?,
            None => client,
        };
        Ok(client.with_mesh_bootstrap(self.mesh_bootstrap.clone()))
    }

    /// The PEM of `--ledger-ca`, if given.
    fn ledger_ca_pem(&self) -> anyhow::Result<Option<Vec<u8>>> {
        self.ledger_ca
            .as_ref()
            .map(|file| {
                std::fs::read(file)
                    .with_context(|| format!("cannot read --ledger-ca {}", file.display()))
            })
            .transpose()
    }

    /// Sign `payload` with your key, submit it and wait until it is final: its hash and
    /// events if it applied, else the ledger's reason.
    async fn send(
        &self,
        payload: peergrid_core::Payload,
    ) -> anyhow::Result<(peergrid_core::Hash, Vec<peergrid_ledger::Event>)> {
        let client = self.client()?;
        let key = self.keypair()?;
        let (hash, status) = client
            .send(&key, payload, std::time::Duration::from_secs(30))
            .await?;
        match status {
            peergrid_client::TxStatus::Finalized { events, .. } => Ok((hash, events)),
            peergrid_client::TxStatus::Rejected { reason, .. } => {
                anyhow::bail!("rejected: {reason}")
            }
            _ => anyhow::bail!("not final yet; check it with `peergrid tx status {hash}`"),
        }
    }

    /// `$PEERGRID_HOME/key.json`.
    fn home_key_file(&self) -> anyhow::Result<PathBuf> {
        Ok(peergrid_devnet::home_dir()
            .context("neither PEERGRID_HOME nor HOME is set; pass --key FILE")?
            .join("key.json"))
    }
}

fn run(cli: Cli) -> anyhow::Result<()> {
    let globals = Globals {
        json: cli.json,
        key: cli.key,
        ledger: cli.ledger,
        mesh_bootstrap: cli
            .mesh_bootstrap
            .iter()
            .flat_map(|list| list.split(','))
            .map(|a| a.trim().to_string())
            .filter(|a| !a.is_empty())
            .collect(),
        ledger_ca: cli.ledger_ca,
    };
    match cli.command {
        Command::Key(cmd) => key::run(&globals, cmd),
        Command::Genesis(cmd) => genesis::run(&globals, cmd),
        Command::Devnet(args) => ledger::devnet(&globals, args),
        Command::Validator(cmd) => ledger::validator(&globals, cmd),
        Command::Wallet(cmd) => ledger::wallet(&globals, cmd),
        Command::Tx(cmd) => ledger::tx(&globals, cmd),
        Command::Bench(cmd) => ledger::bench(&globals, cmd),
        Command::Mesh(cmd) => mesh::run(&globals, cmd),
        Command::Farm(cmd) => grid::farm(&globals, cmd),
        Command::Node(cmd) => grid::node(&globals, cmd),
        Command::Contract(cmd) => econ::contract(&globals, cmd),
        Command::Bill(cmd) => econ::bill(&globals, cmd),
        Command::Gov(cmd) => econ::gov(&globals, cmd),
        Command::Store(cmd) => store::run(&globals, cmd),
        Command::Deploy(args) => app::deploy(&globals, args),
        Command::App(cmd) => app::app(&globals, cmd),
        Command::Job(cmd) => job::job(&globals, cmd),
    }
}

/// The async runtime commands run on: multi-threaded, as the mesh needs (a QUIC stream
/// sharing one thread with its reader stalls); two workers are plenty for a CLI.
fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("cannot start an async runtime")
}

/// The log filter without RUST_LOG: warnings only, unless `-v`. A running node also says
/// at info level what it does (registration, each workload provisioned, paused, resumed,
/// removed or refused), one line each, so a farmer sees it without `-v`.
fn default_filter(verbose: u8, command: &Command) -> &'static str {
    match verbose {
        0 if matches!(command, Command::Node(grid::NodeCommand::Run(_))) => {
            "warn,peergrid_node=info"
        }
        // Where it listens and what it opened, once its checks passed.
        0 if matches!(
            command,
            Command::Validator(ledger::ValidatorCommand::Run { .. })
        ) =>
        {
            "warn,peergrid::validator=info"
        }
        0 => "warn",
        1 => "info",
        2 => "debug",
        _ => "trace",
    }
}

/// Whether a command runs until stopped, and so logs as a daemon: with time and origin.
fn runs_until_stopped(command: &Command) -> bool {
    matches!(
        command,
        Command::Node(grid::NodeCommand::Run(_))
            | Command::Validator(ledger::ValidatorCommand::Run { .. })
            | Command::Mesh(mesh::MeshCommand::Run(_))
            | Command::Devnet(_)
    )
}

fn init_logging(level: &str, plain: bool) {
    let from_env = EnvFilter::try_from_default_env().ok();
    let plain = plain && from_env.is_none();
    let filter = from_env.unwrap_or_else(|| EnvFilter::new(level));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(output::AboveBars)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()));
    if plain {
        builder.event_format(logline::Plain).init();
    } else {
        builder.init();
    }
}

fn main() -> ExitCode {
    peergrid_mesh::memory::keep_freed_memory();
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => return argument_error(e),
    };
    init_logging(
        default_filter(cli.verbose, &cli.command),
        cli.verbose == 0 && !runs_until_stopped(&cli.command),
    );
    let json = cli.json;
    let elsewhere = cli.ledger.is_some();
    let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| run(cli)));
    let result = match outcome {
        Ok(result) => result,
        Err(unwound) => match unwound.downcast_ref::<output::StdoutGone>() {
            Some(gone) => return ExitCode::from(gone.0),
            None => std::panic::resume_unwind(unwound),
        },
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            let mut message = error_message(&e);
            if message.contains("insufficient balance") {
                message.push_str(&funding_hint(elsewhere));
            }
            eprintln!("error: {message}");
            // A script asking for JSON gets one object even from a command that failed
            // before printing its own (which already says what went wrong, then exits 1).
            // Written without unwinding: this is past the catch, and the error is said.
            if json && !output::wrote_out() {
                use std::io::Write;
                let error = serde_json::json!({ "error": message });
                let _ = writeln!(std::io::stdout().lock(), "{error}");
            }
            ExitCode::FAILURE
        }
    }
}

/// A command line that does not parse: clap's own message and status (2; 0 for --help
/// and --version), and with --json also the `{"error": …}` object every failure gives.
fn argument_error(e: clap::Error) -> ExitCode {
    let wants_json = std::env::args_os()
        .skip(1)
        .take_while(|a| a != "--")
        .any(|a| a == "--json");
    if let Some(message) = number_error(&e) {
        if wants_json {
            use std::io::Write;
            let _ = writeln!(
                std::io::stdout().lock(),
                "{}",
                serde_json::json!({ "error": message })
            );
        }
        eprintln!("error: {message}");
        return ExitCode::from(2);
    }
    if wants_json && e.use_stderr() {
        let error = serde_json::json!({ "error": argument_error_text(&e) });
        use std::io::Write;
        let _ = writeln!(std::io::stdout().lock(), "{error}");
    }
    let _ = e.print();
    ExitCode::from(e.exit_code().clamp(0, 255) as u8)
}

/// Our own words for a number clap could not take: a negative one (which clap takes for an
/// option it does not know, `--amount -1`), or an id or count that is not a whole number
/// (where clap passes on Rust's "invalid digit found in string").
fn number_error(e: &clap::Error) -> Option<String> {
    use clap::error::{ContextKind, ContextValue, ErrorKind};
    use std::num::IntErrorKind;
    let text = |kind| match e.get(kind) {
        Some(ContextValue::String(s)) => Some(s.clone()),
        _ => None,
    };
    match e.kind() {
        ErrorKind::UnknownArgument => {
            // clap names a short flag by its first character (`-1` for `-15`): the whole
            // number is the argument that starts with it.
            let arg = text(ContextKind::InvalidArg)?;
            let negative =
                |a: &str| a.len() > 1 && a.starts_with('-') && a[1..].parse::<f64>().is_ok();
            if !negative(&arg) {
                return None;
            }
            let whole = std::env::args()
                .find(|a| a.starts_with(arg.as_str()) && negative(a))
                .unwrap_or(arg);
            Some(format!(
                "{whole} is negative: amounts, sizes, counts and ids are numbers of zero or more"
            ))
        }
        ErrorKind::ValueValidation => {
            let parse = std::error::Error::source(e)?.downcast_ref::<std::num::ParseIntError>()?;
            let (arg, value) = (
                text(ContextKind::InvalidArg)?,
                text(ContextKind::InvalidValue)?,
            );
            let why = match parse.kind() {
                IntErrorKind::PosOverflow => "is too large",
                IntErrorKind::Empty => "is empty",
                _ => "is not a whole number",
            };
            // `--node <ID>`, `<FARM>`: the flag or the value's name says what it names.
            let names = |ids: &[&str]| {
                ids.iter().any(|id| {
                    arg.contains(&format!("<{id}>"))
                        || arg.starts_with(&format!("--{}", id.to_lowercase()))
                })
            };
            let hint = if names(&["FARM", "NODE"]) {
                " (`farm list` and `node list` show the ids; `farm show` and `node show` also \
                 take a name or an account)"
            } else if names(&["CONTRACT"]) {
                " (`contract list` shows the ids)"
            } else if names(&["PROPOSAL"]) {
                " (`gov list` shows the ids)"
            } else {
                ""
            };
            Some(format!(
                "{value:?} for {arg} {why}: give a whole number{hint}"
            ))
        }
        _ => None,
    }
}

/// A parse error in one line: clap's message without its usage and tips (the arguments it
/// names included), or for a command given without its subcommand, the subcommands.
fn argument_error_text(e: &clap::Error) -> String {
    let rendered = e.render().to_string();
    if e.kind() == clap::error::ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand {
        let commands: Vec<&str> = rendered
            .lines()
            .skip_while(|l| !l.starts_with("Commands:"))
            .skip(1)
            .take_while(|l| !l.trim().is_empty())
            .filter_map(|l| l.split_whitespace().next())
            .filter(|c| *c != "help")
            .collect();
        return format!(
            "a command is missing: give one of {} (--help says what each does)",
            commands.join(", ")
        );
    }
    let message: Vec<&str> = rendered
        .lines()
        .take_while(|l| !l.starts_with("Usage:") && !l.starts_with("For more information"))
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect();
    let message = message.join(" ");
    message
        .strip_prefix("error: ")
        .unwrap_or(&message)
        .to_string()
}

/// How an account without tokens gets some, added to an "insufficient balance" error;
/// the local devnet's faucet is named unless `--ledger` points at another network.
fn funding_hint(elsewhere: bool) -> String {
    let faucet = peergrid_devnet::default_dir()
        .join("keys")
        .join("faucet.json");
    let mut hint = String::from(
        "; an account gets tokens by a transfer from a funded one (`peergrid key show` prints yours)",
    );
    if !elsewhere && faucet.exists() {
        hint.push_str(&format!(
            ", on this devnet from its faucet: `peergrid --key {} wallet transfer --to ACCOUNT --amount 100`",
            faucet.display()
        ));
    }
    hint
}

/// The error chain joined with ": ", without a backtrace. Some errors already print
/// their source in their own message; a cause that the text so far ends with is skipped
/// rather than said twice.
fn error_message(error: &anyhow::Error) -> String {
    let mut text = String::new();
    for cause in error.chain() {
        let cause = cause.to_string();
        if text.ends_with(&cause) {
            continue;
        }
        if !text.is_empty() {
            text.push_str(": ");
        }
        text.push_str(&cause);
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_running_node_says_what_it_does_without_verbose() {
        let cli = |args: &[&str]| Cli::try_parse_from(args).expect("parses");
        let node = cli(&["peergrid", "node", "run", "--farm", "1", "--data-dir", "d"]);
        assert_eq!(
            default_filter(node.verbose, &node.command),
            "warn,peergrid_node=info"
        );
        let list = cli(&["peergrid", "node", "list"]);
        assert_eq!(default_filter(list.verbose, &list.command), "warn");
        let verbose = cli(&[
            "peergrid",
            "-vv",
            "node",
            "run",
            "--farm",
            "1",
            "--data-dir",
            "d",
        ]);
        assert_eq!(default_filter(verbose.verbose, &verbose.command), "debug");
    }

    #[test]
    fn error_chain_is_joined_without_repeating_a_cause() {
        /// Like `thiserror`'s `#[error("cannot read {path}: {source}")]` with a `source` field.
        #[derive(Debug)]
        struct Echoing {
            path: &'static str,
            source: std::io::Error,
        }
        impl std::fmt::Display for Echoing {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                write!(f, "cannot read {}: {}", self.path, self.source)
            }
        }
        impl std::error::Error for Echoing {
            fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
                Some(&self.source)
            }
        }
        let io = || std::io::Error::new(std::io::ErrorKind::NotFound, "not found");
        let echoing = anyhow::Error::new(Echoing {
            path: "a.toml",
            source: io(),
        });
        assert_eq!(error_message(&echoing), "cannot read a.toml: not found");
        let wrapped = anyhow::Error::new(io()).context("loading genesis");
        assert_eq!(error_message(&wrapped), "loading genesis: not found");
    }
}
