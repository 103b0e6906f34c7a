//! `peergrid key`: create, restore and show the account key.

use std::io::{IsTerminal, Read};
use std::path::Path;

use anyhow::{Context, bail};
use clap::Subcommand;
use peergrid_core::Keypair;
use serde_json::json;
use zeroize::Zeroizing;

use crate::Globals;
use crate::output;

/// Longest input read from stdin for a phrase; a 24-word phrase is under 250 bytes.
const PHRASE_INPUT_BYTES_MAX: u64 = 4096;

#[derive(Subcommand)]
pub enum KeyCommand {
    /// Generate a new key, save it, and print its 24-word backup phrase.
    New {
        /// Replace an existing key file (back it up first: its account is lost otherwise).
        #[arg(long)]
        force: bool,
    },
    /// Show the account of the key file; never the secret unless --mnemonic.
    Show {
        /// Also print the 24-word backup phrase.
        #[arg(long)]
        mnemonic: bool,
    },
    /// Restore a key from its 24-word backup phrase, read from stdin.
    Import {
        /// The phrase, for scripts (it ends up in shell history; prefer stdin).
        #[arg(long, value_name = "WORDS")]
        mnemonic: Option<String>,
        /// Replace an existing key file.
        #[arg(long)]
        force: bool,
    },
}

pub fn run(globals: &Globals, cmd: KeyCommand) -> anyhow::Result<()> {
    let file = globals.key_file()?;
    match cmd {
        KeyCommand::New { force } => new(globals, &file, force),
        // Without a key of your own, the one commands sign with: the devnet's demo key.
        KeyCommand::Show { mnemonic } => show(globals, &globals.signing_key_file()?, mnemonic),
        KeyCommand::Import { mnemonic, force } => {
            let phrase = match mnemonic {
                Some(words) => Zeroizing::new(words),
                None => read_phrase()?,
            };
            import(globals, &file, &phrase, force)
        }
    }
}

fn new(globals: &Globals, file: &Path, force: bool) -> anyhow::Result<()> {
    let key = Keypair::generate()?;
    key.save(file, force)?;
    tracing::info!(account = %key.account(), file = %file.display(), "saved new key");
    let phrase = key.mnemonic();
    if globals.json {
        return output::json(&json!({
            "account": key.account(),
            "file": file,
            "mnemonic": phrase.as_str(),
        }));
    }
    outln!("New key saved.\n");
    output::rows(&[
        ("account", key.account().to_string()),
        ("file", file.display().to_string()),
    ]);
    outln!();
    outln!("Backup phrase: WRITE THESE 24 WORDS DOWN and keep them offline.");
    outln!("They are the only way to recover this account if the key file is lost,");
    outln!("and anyone who reads them controls the account.\n");
    outln!("{}\n", output::phrase_lines(&phrase));
    outln!("Restore later with: peergrid key import");
    Ok(())
}

fn show(globals: &Globals, file: &Path, reveal: bool) -> anyhow::Result<()> {
    let key = Keypair::load(file)?;
    let phrase = reveal.then(|| key.mnemonic());
    let demo = *file != globals.key_file()?;
    if globals.json {
        let mut out = json!({ "account": key.account(), "file": file, "devnet_demo": demo });
        if let Some(phrase) = &phrase {
            out["mnemonic"] = json!(phrase.as_str());
        }
        return output::json(&out);
    }
    output::rows(&[
        ("account", key.account().to_string()),
        ("file", file.display().to_string()),
    ]);
    if demo {
        eprintln!(
            "This is the running devnet's demo account: commands sign with it until you have a key of your own (`peergrid key new`)."
        );
    }
    if let Some(phrase) = &phrase {
        outln!("\nBackup phrase (keep it secret):\n");
        outln!("{}", output::phrase_lines(phrase));
    }
    Ok(())
}

fn import(globals: &Globals, file: &Path, phrase: &str, force: bool) -> anyhow::Result<()> {
    let key = Keypair::from_mnemonic(phrase)?;
    key.save(file, force)?;
    tracing::info!(account = %key.account(), file = %file.display(), "imported key");
    if globals.json {
        return output::json(&json!({ "account": key.account(), "file": file }));
    }
    outln!("Key restored.\n");
    output::rows(&[
        ("account", key.account().to_string()),
        ("file", file.display().to_string()),
    ]);
    Ok(())
}

/// The phrase from stdin: one line from a terminal, or everything piped in.
fn read_phrase() -> anyhow::Result<Zeroizing<String>> {
    let stdin = std::io::stdin();
    let mut text = Zeroizing::new(String::new());
    if stdin.is_terminal() {
        // Without a terminal library the words echo as typed; they stay out of shell history.
        eprintln!("Type or paste your 24-word backup phrase, then press Enter:");
        stdin
            .read_line(&mut text)
            .context("cannot read the phrase from stdin")?;
    } else {
        stdin
            .lock()
            .take(PHRASE_INPUT_BYTES_MAX)
            .read_to_string(&mut text)
            .context("cannot read the phrase from stdin")?;
    }
    if text.trim().is_empty() {
        bail!("no backup phrase given: pipe the 24 words into stdin or pass --mnemonic");
    }
    Ok(text)
}
