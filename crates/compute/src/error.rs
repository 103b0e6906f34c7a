//! Errors of the runtime: each says what was wrong and what to do about it.

use crate::deployment::{DeploymentError, WorkloadKind};
use std::path::PathBuf;

/// Why a component cannot be prepared, or the runtime cannot start.
///
/// Failures while a workload runs (a trap, an exhausted limit) are not errors of the
/// runtime: they come back in the HTTP response or the [`crate::JobOutcome`].
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ComputeError {
    /// The component's bytes do not hash to the hash they were announced with.
    #[error(
        "component hash mismatch: expected {expected}, the bytes hash to {actual}; fetch the component again from its owner"
    )]
    HashMismatch {
        /// The announced BLAKE3, hex.
        expected: String,
        /// BLAKE3 of the bytes received, hex.
        actual: String,
    },
    /// The bytes are larger than this node accepts.
    #[error(
        "component is {size} bytes, more than the {max} this node accepts; strip debug info (wasm-tools strip) or build in release mode"
    )]
    TooLarge {
        /// Size of the bytes.
        size: usize,
        /// The node's limit.
        max: usize,
    },
    /// The bytes are not WebAssembly at all.
    #[error(
        "these bytes are not WebAssembly (no \\0asm header); upload the .wasm file of a WASI 0.2 component"
    )]
    NotWasm,
    /// A core module was given where a component is needed.
    #[error(
        "this is a core WebAssembly module; build a WASI 0.2 component (wasm32-wasip2), or wrap the module with `wasm-tools component new`"
    )]
    CoreModule,
    /// The component does not validate or does not compile.
    #[error("the component is invalid: {0}")]
    InvalidComponent(String),
    /// The component needs something the host does not give workloads of its kind.
    #[error(
        "the component imports `{import}`, which this host does not provide to {kind} workloads ({reason}); the host provides WASI 0.2 (wasi:cli, wasi:clocks, wasi:random, wasi:io, wasi:filesystem with the app's /data folder only, wasi:sockets without network access) and, to http workloads, wasi:http"
    )]
    UnsupportedImport {
        /// The import's name, such as `wasi:keyvalue/store@0.2.0`.
        import: String,
        /// The kind of workload it was prepared as.
        kind: WorkloadKind,
        /// Wasmtime's reason, one line.
        reason: String,
    },
    /// The component does not export what its workload kind needs.
    #[error("the component cannot run as a {kind} workload: it does not export {missing}; {hint}")]
    KindMismatch {
        /// The kind it was deployed as.
        kind: WorkloadKind,
        /// The missing export.
        missing: &'static str,
        /// What to build instead.
        hint: &'static str,
    },
    /// The compiled-component cache directory cannot be used.
    #[error(
        "cannot use the compile cache at {dir}: {reason}; check that the directory exists and is writable"
    )]
    Cache {
        /// The directory.
        dir: PathBuf,
        /// What failed.
        reason: String,
    },
    /// The runtime's configuration is invalid or the engine cannot start.
    #[error("cannot start the WebAssembly runtime: {0}")]
    Engine(String),
    /// A deployment is invalid.
    #[error(transparent)]
    Deployment(#[from] DeploymentError),
}

/// The first line of an error chain's messages, joined: short enough for one log line.
pub(crate) fn one_line(err: &wasmtime::Error) -> String {
    let mut parts: Vec<String> = Vec::new();
    for cause in err.chain() {
        let msg = cause.to_string();
        let first = msg.lines().next().unwrap_or("").trim().to_string();
        // The frames of a backtrace follow its heading on the next lines: in one line,
        // the heading alone says nothing ("wasm backtrace:: wasm trap").
        if first.starts_with("wasm backtrace") {
            continue;
        }
        if !first.is_empty() && !parts.iter().any(|p| p.contains(&first)) {
            parts.push(first);
        }
    }
    if parts.is_empty() {
        "unknown error".to_string()
    } else {
        parts.join(": ")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_line_leaves_out_a_backtrace_heading() {
        let err = wasmtime::Error::msg("wasm trap: out of bounds memory access")
            .context("wasm backtrace:\n    0:  0x1234 - hello!main")
            .context("the job failed");
        assert_eq!(
            one_line(&err),
            "the job failed: wasm trap: out of bounds memory access"
        );
    }
}
