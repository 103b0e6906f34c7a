//! The deployment format: which components a deployment runs, and with which limits.
//!
//! A deployment is the object whose hash a deployment contract holds on the ledger; the
//! node refuses to run one whose [`Deployment::hash`] differs from the contract's.
//!
//! # Encoding (version 1)
//!
//! ```text
//! u8                       format version (1)
//! u32 LE + WorkloadSpec*   workloads, borsh: 1..=16 of them
//! WorkloadSpec  = name: string, component: [u8; 32], kind: u8 (0 http, 1 job),
//!                 limits: { memory_bytes: u64, cpu_ms: u64, wall_ms: u64 },
//!                 env: u32 + (string, string)*, args: u32 + string*
//! string        = u32 LE length + UTF-8 bytes
//! ```
//!
//! The encoding is borsh, which has exactly one encoding per value, so `encode` is
//! deterministic and `decode(encode(d)) == d`. Decoding is defensive: the total size,
//! every count and every string length is bounded, names are checked, and an error
//! says which workload and which field is wrong.

use borsh::{BorshDeserialize, BorshSerialize};
use std::collections::BTreeSet;

/// The format version this crate writes and the only one it reads.
pub const DEPLOYMENT_VERSION: u8 = 1;
/// Largest encoded deployment accepted.
pub const DEPLOYMENT_BYTES_MAX: usize = 1024 * 1024;
/// Most workloads in one deployment.
pub const WORKLOADS_MAX: usize = 16;
/// Most environment variables per workload.
pub const ENV_VARS_MAX: usize = 64;
/// Longest environment variable name, in bytes.
pub const ENV_KEY_BYTES_MAX: usize = 256;
/// Longest environment variable value, in bytes.
pub const ENV_VALUE_BYTES_MAX: usize = 4096;
/// Most arguments per workload.
pub const ARGS_MAX: usize = 64;
/// Longest argument, in bytes.
pub const ARG_BYTES_MAX: usize = 4096;
/// Bytes in the largest binary unit that keeps a number of at least one.
pub(crate) fn readable_bytes(bytes: u64) -> String {
    let units = [(1 << 30, "GiB"), (1 << 20, "MiB"), (1 << 10, "KiB")];
    match units.iter().find(|(unit, _)| bytes >= *unit) {
        Some((unit, name)) => format!("{:.1} {name}", bytes as f64 / *unit as f64),
        None => format!("{bytes} bytes"),
    }
}

/// Smallest memory limit: one WebAssembly page.
pub const MEMORY_BYTES_MIN: u64 = 64 * 1024;
/// Largest memory limit: the whole 32-bit address space of a linear memory.
pub const MEMORY_BYTES_MAX: u64 = 4 * 1024 * 1024 * 1024;
/// Largest CPU or wall-time limit: one day.
pub const TIME_MS_MAX: u64 = 24 * 60 * 60 * 1000;
/// Longest workload name.
pub const NAME_BYTES_MAX: usize = 63;

/// Why a deployment cannot be encoded or decoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum DeploymentError {
    /// The encoded deployment is over [`DEPLOYMENT_BYTES_MAX`].
    #[error("deployment is {size} bytes, more than the {max} allowed")]
    TooLarge {
        /// Size of the input.
        size: usize,
        /// The limit.
        max: usize,
    },
    /// No bytes at all.
    #[error("deployment is empty: expected a format version byte followed by workloads")]
    Empty,
    /// A format version this node does not read.
    #[error(
        "deployment format version {found} is not supported (this node reads version {supported}); upgrade the node or re-create the deployment"
    )]
    UnsupportedVersion {
        /// The version byte found.
        found: u8,
        /// The version this node reads.
        supported: u8,
    },
    /// The bytes do not follow the format.
    #[error("deployment is malformed: {0}")]
    Malformed(String),
    /// A deployment must run something.
    #[error("deployment has no workloads: add at least one")]
    NoWorkloads,
    /// Over [`WORKLOADS_MAX`] workloads.
    #[error("deployment has {count} workloads, more than the {max} allowed")]
    TooManyWorkloads {
        /// Workloads found.
        count: usize,
        /// The limit.
        max: usize,
    },
    /// A workload name is not `[a-z0-9-]{1,63}`.
    #[error("workload name {name:?} is invalid: {reason}")]
    InvalidName {
        /// The name as given.
        name: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// Two workloads share a name.
    #[error("workload name {0:?} is used twice: names must be unique within a deployment")]
    DuplicateName(String),
    /// A limit is out of range.
    #[error("workload {workload:?}: {reason}")]
    InvalidLimits {
        /// The workload's name.
        workload: String,
        /// What is wrong.
        reason: String,
    },
    /// An environment variable is invalid or there are too many.
    #[error("workload {workload:?}: environment: {reason}")]
    InvalidEnv {
        /// The workload's name.
        workload: String,
        /// What is wrong.
        reason: String,
    },
    /// An argument is invalid or there are too many.
    #[error("workload {workload:?}: arguments: {reason}")]
    InvalidArgs {
        /// The workload's name.
        workload: String,
        /// What is wrong.
        reason: String,
    },
}

/// What a workload is: a service answering HTTP, or a job that runs to completion.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, BorshSerialize, BorshDeserialize)]
#[borsh(use_discriminant = true)]
#[repr(u8)]
pub enum WorkloadKind {
    /// A `wasi:http/proxy` component: one fresh instance per request.
    Http = 0,
    /// A `wasi:cli/command` component: run once, its exit code and output kept.
    Job = 1,
}

impl std::fmt::Display for WorkloadKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            WorkloadKind::Http => "http",
            WorkloadKind::Job => "job",
        })
    }
}

/// Resource limits of one HTTP request or one job run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, BorshSerialize, BorshDeserialize)]
pub struct Limits {
    /// Linear memory of all the component's memories together, in bytes.
    pub memory_bytes: u64,
    /// CPU time the guest may use, in milliseconds.
    pub cpu_ms: u64,
    /// Wall-clock time from start to finish (for HTTP, including the response body).
    pub wall_ms: u64,
}

impl Default for Limits {
    /// 128 MiB, 1 s of CPU, 10 s of wall time: generous for a request, small for a job.
    fn default() -> Self {
        Limits {
            memory_bytes: 128 * 1024 * 1024,
            cpu_ms: 1_000,
            wall_ms: 10_000,
        }
    }
}

impl Limits {
    /// Checks the ranges; `workload` names the workload in the error.
    pub fn validate(&self, workload: &str) -> Result<(), DeploymentError> {
        let bad = |reason: String| {
            Err(DeploymentError::InvalidLimits {
                workload: workload.to_string(),
                reason,
            })
        };
        if !(MEMORY_BYTES_MIN..=MEMORY_BYTES_MAX).contains(&self.memory_bytes) {
            return bad(format!(
                "memory limit {} is outside {} to {}",
                readable_bytes(self.memory_bytes),
                readable_bytes(MEMORY_BYTES_MIN),
                readable_bytes(MEMORY_BYTES_MAX)
            ));
        }
        if !(1..=TIME_MS_MAX).contains(&self.cpu_ms) {
            return bad(format!(
                "CPU limit {} ms is outside 1..={TIME_MS_MAX}",
                self.cpu_ms
            ));
        }
        if !(1..=TIME_MS_MAX).contains(&self.wall_ms) {
            return bad(format!(
                "wall-time limit {} ms is outside 1..={TIME_MS_MAX}",
                self.wall_ms
            ));
        }
        Ok(())
    }
}

/// One workload of a deployment.
#[derive(Debug, Clone, PartialEq, Eq, BorshSerialize, BorshDeserialize)]
pub struct WorkloadSpec {
    /// Unique within the deployment, `[a-z0-9-]{1,63}`; part of the workload's URL.
    pub name: String,
    /// BLAKE3 of the component's bytes.
    pub component: [u8; 32],
    /// Service or job.
    pub kind: WorkloadKind,
    /// Limits per request (HTTP) or per run (job).
    pub limits: Limits,
    /// Environment variables the guest sees.
    pub env: Vec<(String, String)>,
    /// Arguments after the program name (jobs; services see them too).
    pub args: Vec<String>,
}

/// A versioned list of workloads; its hash is what the ledger contract holds.
#[derive(Debug, Clone, PartialEq, Eq, BorshSerialize, BorshDeserialize)]
pub struct Deployment {
    /// Format version; always [`DEPLOYMENT_VERSION`] for deployments this crate builds.
    pub version: u8,
    /// The workloads, in the order the owner gave them.
    pub workloads: Vec<WorkloadSpec>,
}

impl Deployment {
    /// A deployment of the current format version.
    pub fn new(workloads: Vec<WorkloadSpec>) -> Self {
        Deployment {
            version: DEPLOYMENT_VERSION,
            workloads,
        }
    }

    /// Checks every rule the decoder checks, so that what is encoded always decodes.
    pub fn validate(&self) -> Result<(), DeploymentError> {
        if self.version != DEPLOYMENT_VERSION {
            return Err(DeploymentError::UnsupportedVersion {
                found: self.version,
                supported: DEPLOYMENT_VERSION,
            });
        }
        if self.workloads.is_empty() {
            return Err(DeploymentError::NoWorkloads);
        }
        if self.workloads.len() > WORKLOADS_MAX {
            return Err(DeploymentError::TooManyWorkloads {
                count: self.workloads.len(),
                max: WORKLOADS_MAX,
            });
        }
        let mut names = BTreeSet::new();
        for w in &self.workloads {
            w.validate()?;
            if !names.insert(w.name.as_str()) {
                return Err(DeploymentError::DuplicateName(w.name.clone()));
            }
        }
        Ok(())
    }

    /// The canonical bytes: a version byte, then borsh. Refuses an invalid deployment.
    pub fn encode(&self) -> Result<Vec<u8>, DeploymentError> {
        self.validate()?;
        let bytes = borsh::to_vec(self).map_err(|e| DeploymentError::Malformed(e.to_string()))?;
        if bytes.len() > DEPLOYMENT_BYTES_MAX {
            return Err(DeploymentError::TooLarge {
                size: bytes.len(),
                max: DEPLOYMENT_BYTES_MAX,
            });
        }
        Ok(bytes)
    }

    /// Decodes and validates bytes from anyone; never panics.
    pub fn decode(bytes: &[u8]) -> Result<Self, DeploymentError> {
        if bytes.len() > DEPLOYMENT_BYTES_MAX {
            return Err(DeploymentError::TooLarge {
                size: bytes.len(),
                max: DEPLOYMENT_BYTES_MAX,
            });
        }
        let Some(&version) = bytes.first() else {
            return Err(DeploymentError::Empty);
        };
        if version != DEPLOYMENT_VERSION {
            return Err(DeploymentError::UnsupportedVersion {
                found: version,
                supported: DEPLOYMENT_VERSION,
            });
        }
        let deployment: Deployment =
            borsh::from_slice(bytes).map_err(|e| DeploymentError::Malformed(e.to_string()))?;
        deployment.validate()?;
        Ok(deployment)
    }

    /// BLAKE3 of [`Deployment::encode`]: the hash a deployment contract holds.
    pub fn hash(&self) -> Result<[u8; 32], DeploymentError> {
        Ok(hash_bytes(&self.encode()?))
    }

    /// The workload called `name`, if any.
    pub fn workload(&self, name: &str) -> Option<&WorkloadSpec> {
        self.workloads.iter().find(|w| w.name == name)
    }
}

/// BLAKE3 of already-encoded deployment bytes, as [`Deployment::hash`] computes it.
pub fn hash_bytes(encoded: &[u8]) -> [u8; 32] {
    *blake3::hash(encoded).as_bytes()
}

impl WorkloadSpec {
    /// Checks name, limits, environment and arguments.
    pub fn validate(&self) -> Result<(), DeploymentError> {
        validate_name(&self.name)?;
        self.limits.validate(&self.name)?;
        let env_err = |reason: String| DeploymentError::InvalidEnv {
            workload: self.name.clone(),
            reason,
        };
        if self.env.len() > ENV_VARS_MAX {
            return Err(env_err(format!(
                "{} variables, more than the {ENV_VARS_MAX} allowed",
                self.env.len()
            )));
        }
        let mut keys = BTreeSet::new();
        for (k, v) in &self.env {
            if k.is_empty() || k.len() > ENV_KEY_BYTES_MAX {
                return Err(env_err(format!(
                    "variable name {k:?} must be 1..={ENV_KEY_BYTES_MAX} bytes"
                )));
            }
            if k.contains('=') || k.contains('\0') {
                return Err(env_err(format!(
                    "variable name {k:?} must not contain '=' or NUL"
                )));
            }
            if v.len() > ENV_VALUE_BYTES_MAX || v.contains('\0') {
                return Err(env_err(format!(
                    "value of {k:?} must be at most {ENV_VALUE_BYTES_MAX} bytes without NUL"
                )));
            }
            if !keys.insert(k.as_str()) {
                return Err(env_err(format!("variable {k:?} is set twice")));
            }
        }
        let args_err = |reason: String| DeploymentError::InvalidArgs {
            workload: self.name.clone(),
            reason,
        };
        if self.args.len() > ARGS_MAX {
            return Err(args_err(format!(
                "{} arguments, more than the {ARGS_MAX} allowed",
                self.args.len()
            )));
        }
        for (i, a) in self.args.iter().enumerate() {
            if a.len() > ARG_BYTES_MAX || a.contains('\0') {
                return Err(args_err(format!(
                    "argument {i} must be at most {ARG_BYTES_MAX} bytes without NUL"
                )));
            }
        }
        Ok(())
    }
}

/// Checks a workload name: `[a-z0-9-]{1,63}`, not starting or ending with '-'.
pub fn validate_name(name: &str) -> Result<(), DeploymentError> {
    let bad = |reason| {
        Err(DeploymentError::InvalidName {
            name: name.chars().take(80).collect(),
            reason,
        })
    };
    if name.is_empty() {
        return bad("it is empty");
    }
    if name.len() > NAME_BYTES_MAX {
        return bad("it is longer than 63 bytes");
    }
    if !name
        .bytes()
        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
    {
        return bad("use only lowercase letters, digits and '-'");
    }
    if name.starts_with('-') || name.ends_with('-') {
        return bad("it must not start or end with '-'");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn spec(name: &str) -> WorkloadSpec {
        WorkloadSpec {
            name: name.to_string(),
            component: [7; 32],
            kind: WorkloadKind::Http,
            limits: Limits::default(),
            env: vec![("GREETING".into(), "hello".into())],
            args: vec!["--port".into(), "80".into()],
        }
    }

    #[test]
    fn round_trip_is_exact_and_versioned() {
        let d = Deployment::new(vec![spec("web"), {
            let mut j = spec("batch-1");
            j.kind = WorkloadKind::Job;
            j
        }]);
        let bytes = d.encode().expect("valid deployment encodes");
        assert_eq!(bytes[0], DEPLOYMENT_VERSION);
        let back = Deployment::decode(&bytes).expect("decodes");
        assert_eq!(back, d);
        assert_eq!(back.encode().expect("re-encodes"), bytes);
        assert_eq!(d.hash().expect("hash"), *blake3::hash(&bytes).as_bytes());
        assert_eq!(
            back.workload("batch-1").map(|w| w.kind),
            Some(WorkloadKind::Job)
        );
    }

    #[test]
    fn encoding_is_pinned() {
        // Changing the format changes every contract's hash: bump the version instead.
        let d = Deployment::new(vec![spec("web")]);
        let bytes = d.encode().expect("encodes");
        assert_eq!(
            bytes.len(),
            1 + 4 + (4 + 3) + 32 + 1 + 24 + 4 + (4 + 8 + 4 + 5) + 4 + (4 + 6) + (4 + 2)
        );
        assert_eq!(
            hex::encode(d.hash().expect("hash")),
            "13457b48ffa4dba6c67c46ff54b73a165aacb156f029d868138f563de79ca002"
        );
    }

    #[test]
    fn refuses_bad_deployments_with_reasons() {
        let err = |d: Deployment| d.encode().expect_err("must be refused").to_string();
        assert!(err(Deployment::new(vec![])).contains("no workloads"));
        assert!(err(Deployment::new(vec![spec("Web")])).contains("lowercase"));
        assert!(err(Deployment::new(vec![spec("")])).contains("empty"));
        assert!(err(Deployment::new(vec![spec(&"a".repeat(64))])).contains("63"));
        assert!(err(Deployment::new(vec![spec("-a")])).contains("start or end"));
        assert!(err(Deployment::new(vec![spec("a"), spec("a")])).contains("used twice"));
        let many = (0..17).map(|i| spec(&format!("w{i}"))).collect();
        assert!(err(Deployment::new(many)).contains("17 workloads"));
        let mut s = spec("a");
        s.limits.memory_bytes = 1;
        assert!(err(Deployment::new(vec![s])).contains("memory limit"));
        let mut s = spec("a");
        s.limits.cpu_ms = 0;
        assert!(err(Deployment::new(vec![s])).contains("CPU limit"));
        let mut s = spec("a");
        s.env.push(("A=B".into(), "x".into()));
        assert!(err(Deployment::new(vec![s])).contains("'='"));
        let mut s = spec("a");
        s.env.push(("GREETING".into(), "again".into()));
        assert!(err(Deployment::new(vec![s])).contains("twice"));
        let mut s = spec("a");
        s.args = vec![String::new(); ARGS_MAX + 1];
        assert!(err(Deployment::new(vec![s])).contains("arguments"));
    }

    #[test]
    fn decode_refuses_with_clear_errors() {
        assert_eq!(Deployment::decode(&[]), Err(DeploymentError::Empty));
        assert!(matches!(
            Deployment::decode(&[9, 0, 0, 0, 0]),
            Err(DeploymentError::UnsupportedVersion { found: 9, .. })
        ));
        let big = vec![1u8; DEPLOYMENT_BYTES_MAX + 1];
        assert!(matches!(
            Deployment::decode(&big),
            Err(DeploymentError::TooLarge { .. })
        ));
        let good = Deployment::new(vec![spec("web")])
            .encode()
            .expect("encodes");
        let mut trailing = good.clone();
        trailing.push(0);
        assert!(matches!(
            Deployment::decode(&trailing),
            Err(DeploymentError::Malformed(_))
        ));
        assert!(matches!(
            Deployment::decode(&good[..good.len() - 1]),
            Err(DeploymentError::Malformed(_))
        ));
        // A length prefix claiming four billion workloads must fail without allocating them.
        assert!(matches!(
            Deployment::decode(&[1, 0xff, 0xff, 0xff, 0xff]),
            Err(DeploymentError::Malformed(_))
        ));
    }

    fn arb_spec() -> impl Strategy<Value = WorkloadSpec> {
        (
            "[a-z0-9]{1,20}",
            any::<[u8; 32]>(),
            any::<bool>(),
            (
                MEMORY_BYTES_MIN..=MEMORY_BYTES_MAX,
                1..=TIME_MS_MAX,
                1..=TIME_MS_MAX,
            ),
            prop::collection::btree_map("[A-Z_]{1,8}", "[ -~]{0,16}", 0..4),
            prop::collection::vec("[ -~]{0,16}", 0..4),
        )
            .prop_map(
                |(name, component, job, (m, c, w), env, args)| WorkloadSpec {
                    name,
                    component,
                    kind: if job {
                        WorkloadKind::Job
                    } else {
                        WorkloadKind::Http
                    },
                    limits: Limits {
                        memory_bytes: m,
                        cpu_ms: c,
                        wall_ms: w,
                    },
                    env: env.into_iter().collect(),
                    args,
                },
            )
    }

    proptest! {
        #[test]
        fn decoding_arbitrary_bytes_never_panics(bytes in prop::collection::vec(any::<u8>(), 0..2048)) {
            let _ = Deployment::decode(&bytes);
            let mut versioned = bytes.clone();
            versioned.insert(0, DEPLOYMENT_VERSION);
            let _ = Deployment::decode(&versioned);
        }

        #[test]
        fn mutated_encodings_never_panic(
            specs in prop::collection::vec(arb_spec(), 1..4),
            flips in prop::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..8),
        ) {
            let mut names = BTreeSet::new();
            let specs: Vec<_> = specs.into_iter().filter(|s| names.insert(s.name.clone())).collect();
            let d = Deployment::new(specs);
            let mut bytes = d.encode().expect("generated deployments are valid");
            prop_assert_eq!(Deployment::decode(&bytes).expect("decodes"), d);
            for (i, b) in flips {
                let i = i.index(bytes.len());
                bytes[i] = b;
            }
            if let Ok(back) = Deployment::decode(&bytes) {
                // Whatever decodes re-encodes to the very same bytes: one encoding per value.
                prop_assert_eq!(back.encode().expect("valid"), bytes);
            }
        }
    }
}
