//! `peergrid job run`: a `wasi:cli/command` component run once on a node of the grid.
//!
//! The job is a one-workload deployment under its own contract: the contract is created
//! on a chosen node, the node fetches the component from this peer, runs it to its end
//! and keeps its output; the output is read back with the owner's signature and the
//! contract cancelled, so the run is billed for the minutes it held the node.

use std::io::Write as _;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::{Args, Subcommand};
use peergrid_compute::WorkloadKind;
use peergrid_core::NodeId;
use peergrid_core::capacity::Size;
use peergrid_node::protocol::WorkloadLogs;
use serde_json::json;

use crate::app::{
    App, Placement, RunSpec, apps_file, candidates, check_component, default_name, load_apps,
    parse_env, replica_logs, save_apps, say,
};
use crate::{Globals, output};

/// How long past its own wall-time limit a job may take to be reported as ended.
const END_GRACE: Duration = Duration::from_secs(30);

/// `peergrid job …`.
#[derive(Subcommand)]
pub enum JobCommand {
    /// Run a `wasi:cli/command` component once on a node: prints its stdout and stderr
    /// and exits with its exit code.
    Run(RunArgs),
}

/// `peergrid job run`.
#[derive(Args)]
pub struct RunArgs {
    /// The component: a WASI 0.2 command (`cargo build --target wasm32-wasip2`).
    wasm: PathBuf,
    /// The job's name, `[a-z0-9-]{1,63}` [default: the file's name].
    #[arg(long)]
    name: Option<String>,
    /// Run it on this node [default: chosen from the ledger]; repeat to give fallbacks.
    #[arg(long = "node", value_name = "ID")]
    nodes: Vec<NodeId>,
    /// Memory of the run, e.g. 256MiB (at most 1GiB); also what its contract reserves.
    #[arg(long, default_value = "128MiB", value_parser = crate::app::instance_memory)]
    memory: Size,
    /// CPU time the run may use, ms.
    #[arg(long, default_value_t = 30_000)]
    cpu_ms: u64,
    /// Wall time the run may take, ms.
    #[arg(long, default_value_t = 60_000)]
    wall_ms: u64,
    /// Disk for the job's `/data` folder, 1MiB to 1TiB (what its contract reserves); it
    /// lasts as long as the contract (`--keep`).
    #[arg(long, default_value = "256MiB", value_parser = crate::app::app_disk)]
    disk: Size,
    /// An environment variable the job sees, K=V (repeatable).
    #[arg(long = "env", value_name = "K=V", value_parser = parse_env)]
    env: Vec<(String, String)>,
    /// Keep the contract, and the output on its node, after the run: `peergrid app
    /// logs NAME` reads it again, `peergrid app rm NAME` ends it.
    #[arg(long)]
    keep: bool,
    /// The job's arguments, after `--`.
    #[arg(last = true)]
    args: Vec<String>,
}

/// `peergrid job …`.
pub fn job(globals: &Globals, cmd: JobCommand) -> anyhow::Result<()> {
    let JobCommand::Run(args) = cmd;
    let json = globals.json;
    let bytes = std::fs::read(&args.wasm)
        .with_context(|| format!("cannot read {}", args.wasm.display()))?;
    let name = args
        .name
        .clone()
        .unwrap_or_else(|| default_name(&args.wasm));
    let file = apps_file(globals)?;
    if args.keep {
        load_apps(&file)?.check_name_free(&name, globals)?;
    }
    let component = *blake3::hash(&bytes).as_bytes();
    let spec = RunSpec {
        memory_bytes: args.memory.bytes(),
        cpu_ms: args.cpu_ms,
        wall_ms: args.wall_ms,
        env: args.env.clone(),
        args: args.args.clone(),
        disk_bytes: args.disk.bytes(),
    };
    let deployment = spec.deployment(&name, WorkloadKind::Job, component)?;
    check_component(&component, &bytes, WorkloadKind::Job, spec.memory_bytes)
        .with_context(|| format!("{} cannot run as a job", args.wasm.display()))?;
    let client = globals.client()?;
    let key = globals.keypair()?;
    let resources = spec.resources();
    let logs = crate::runtime()?.block_on(async {
        let (_, nodes) = client.nodes(None).await?;
        let queue = candidates(nodes.clone(), &args.nodes, &resources, json);
        if queue.is_empty() {
            bail!("{}", crate::app::none_fits(&nodes, &resources, &args.nodes));
        }
        let (placement, serving) = Placement::open(
            globals,
            &name,
            deployment,
            (component, bytes),
            resources,
            queue,
        )
        .await?;
        // Ctrl-C or SIGTERM (a script's `timeout`, a CI runner) while placing: the
        // contract a job's run is paid by is not left behind.
        let placing = placement.place();
        tokio::pin!(placing);
        let placed = tokio::select! {
            placed = &mut placing => placed,
            () = crate::stop_requested() => {
                say(json, "interrupted: finishing the transaction under way, then cancelling its contract");
                placement.stop();
                let _ = placing.await;
                for contract in placement.created() {
                    placement.cancel(contract).await;
                }
                drop(serving);
                placement.mesh().close().await;
                bail!("interrupted: the job did not run");
            }
        };
        let Some(replica) = placed else {
            if let Some(reason) = placement.unpaid() {
                bail!(
                    "no node could run the job: your account cannot pay for its contract: {reason}"
                );
            }
            bail!("no node could run the job: every node tried failed (see above)");
        };
        drop(serving);
        let mesh = placement.mesh().clone();
        let deadline = Instant::now() + Duration::from_millis(args.wall_ms) + END_GRACE;
        let waiting = async {
            loop {
                let logs =
                    replica_logs(&client, &mesh, &key, replica.node, replica.contract, &name).await;
                match logs {
                    Ok(l) if l.state == "exited" || l.state == "error" => break Ok(l),
                    Ok(_) => {}
                    Err(e) => say(json, format!("{e:#}; asking again")),
                }
                if Instant::now() > deadline {
                    break Err(anyhow::anyhow!(
                        "job did not end within its {} ms wall time plus {} s; its contract {} is {}",
                        args.wall_ms,
                        END_GRACE.as_secs(),
                        replica.contract,
                        if args.keep { "kept" } else { "cancelled" }
                    ));
                }
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        };
        // Interrupted while it runs: its contract is cancelled (or kept, with --keep) as
        // when it ends.
        let logs = tokio::select! {
            logs = waiting => logs,
            () = crate::stop_requested() => Err(anyhow::anyhow!(
                "interrupted before the job ended: {}",
                if args.keep {
                    format!(
                        "its contract {} is kept and it goes on; `peergrid app logs {name}` reads \
                         its output, `peergrid app rm {name}` ends it",
                        replica.contract
                    )
                } else {
                    format!(
                        "its contract {} is cancelled, so node {} stops it",
                        replica.contract, replica.node
                    )
                }
            )),
        };
        if args.keep {
            let app = App {
                name: name.clone(),
                kind: WorkloadKind::Job.to_string(),
                component: hex::encode(component),
                deployment: placement.deployment_hash().to_string(),
                replicas: vec![replica.clone()],
                spec: Some(spec),
                owner: Some(key.account()),
            };
            let mut apps = load_apps(&file)?;
            apps.apps.insert(name.clone(), app);
            save_apps(&file, &apps)?;
        } else {
            placement.cancel(replica.contract).await;
        }
        mesh.close().await;
        let logs = logs?;
        anyhow::Ok((replica, logs))
    })?;
    let (replica, logs) = logs;
    let code = exit_code(&logs);
    if json {
        output::json(&json!({
            "contract": replica.contract,
            "node": replica.node,
            "kept": args.keep,
            "logs": logs,
        }))?;
    } else {
        // The job's own streams, byte for byte, so a script can pipe them.
        std::io::stdout().write_all(logs.stdout.as_bytes())?;
        std::io::stdout().flush()?;
        std::io::stderr().write_all(logs.stderr.as_bytes())?;
        match (&logs.error, logs.exit_code) {
            (Some(e), _) => eprintln!("job on node {}: {e}", replica.node),
            (None, Some(c)) if c != 0 => {
                eprintln!("job exited with code {c} on node {}", replica.node)
            }
            _ => {}
        }
        if args.keep {
            eprintln!(
                "its contract {} on node {} is kept (billed until it ends): `peergrid app logs \
                 {name}` reads its output again, `peergrid app rm {name}` ends it",
                replica.contract, replica.node
            );
        }
    }
    if code != 0 {
        std::process::exit(code);
    }
    Ok(())
}

/// The exit code `peergrid job run` ends with: the job's, or 1 if it did not exit
/// by itself (stopped by a limit, or failed to start).
fn exit_code(logs: &WorkloadLogs) -> i32 {
    match (logs.state.as_str(), logs.exit_code) {
        ("exited", Some(code)) => code,
        _ => 1,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use peergrid_node::protocol;

    fn logs(state: &str, exit_code: Option<i32>) -> WorkloadLogs {
        WorkloadLogs {
            contract: 1,
            workload: "cpu".into(),
            kind: "job".into(),
            state: state.into(),
            exit_code,
            error: None,
            stdout: String::new(),
            stderr: String::new(),
            cpu_ms: 0,
            wall_ms: 0,
        }
    }

    #[test]
    fn the_command_exits_as_the_job_did_and_fails_when_it_was_stopped() {
        assert_eq!(exit_code(&logs("exited", Some(0))), 0);
        assert_eq!(exit_code(&logs("exited", Some(2))), 2);
        assert_eq!(exit_code(&logs("exited", None)), 1, "stopped by a limit");
        assert_eq!(exit_code(&logs("error", None)), 1, "never started");
    }

    #[test]
    fn logs_requests_are_bound_to_their_contract_and_workload() {
        let key = peergrid_core::Keypair::generate().expect("key");
        let r = protocol::LogsRequest::sign(&key, "g/1", 7, "cpu");
        let message = protocol::logs_message("g/1", 7, "cpu", r.at_ms);
        assert!(
            r.signature
                .verify(&key.account(), protocol::LOGS_NAMESPACE, &message)
        );
        for other in [
            protocol::logs_message("g/1", 8, "cpu", r.at_ms),
            protocol::logs_message("g/2", 7, "cpu", r.at_ms),
        ] {
            assert!(
                !r.signature
                    .verify(&key.account(), protocol::LOGS_NAMESPACE, &other)
            );
        }
    }
}
