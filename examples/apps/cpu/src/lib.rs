//! `cpu`: a `wasi:cli/command` job for exercising a node's compute limits.
//!
//! ```text
//! cpu primes N   prints "primes below N: C" (trial division, CPU-bound), exit 0
//! cpu spin       loops forever (for CPU / wall-time limits)
//! cpu alloc      allocates and touches memory without bound (for memory limits)
//! cpu fill       writes /data/fill a MiB at a time without bound (for disk limits),
//!                then says how far it got and why it stopped, exit 1
//! cpu fill stream  the same through an append stream, 4 KiB per call, as a program
//!                  built on a standard library's files writes
//! cpu fill holes   grows the file by a MiB with set-size, waits 150 ms, then fills
//!                  that hole, again and again (a quota must count holes)
//! cpu fill unlinked  removes the file it writes while it holds it open, then writes
//!                  (at most 256 MiB: a quota must not lose sight of it)
//! ```
//!
//! Bad arguments print the usage to stderr and exit with code 2
//! (`wasi:cli/exit.exit-with-code`, WASI 0.2.12).
//! Arguments come from `wasi:cli/environment.get-arguments`; a leading program
//! name (as `wasmtime run` passes) is skipped.

use std::io::Write as _;

wasip2::cli::command::export!(Cpu);

const USAGE: &str =
    "usage: cpu primes N | cpu spin | cpu alloc | cpu fill [stream|holes|unlinked]\n";

struct Cpu;

impl wasip2::exports::cli::run::Guest for Cpu {
    fn run() -> Result<(), ()> {
        let mut args = wasip2::cli::environment::get_arguments();
        if !args.first().is_some_and(|a| is_mode(a)) && !args.is_empty() {
            args.remove(0); // program name
        }
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        match args.as_slice() {
            ["primes", n] => match n.parse::<u32>() {
                Ok(n) => {
                    let c = count_primes_below(n);
                    let mut out = wasip2::cli::stdout::get_stdout();
                    let _ = write!(out, "primes below {n}: {c}\n");
                    let _ = out.blocking_flush();
                    Ok(())
                }
                Err(_) => usage(),
            },
            ["spin"] => spin(),
            ["alloc"] => alloc(),
            ["fill"] => fill(Fill::Write),
            ["fill", "stream"] => fill(Fill::Stream),
            ["fill", "holes"] => fill(Fill::Holes),
            ["fill", "unlinked"] => fill(Fill::Unlinked),
            _ => usage(),
        }
    }
}

fn is_mode(a: &str) -> bool {
    matches!(a, "primes" | "spin" | "alloc" | "fill")
}

fn usage() -> ! {
    let mut err = wasip2::cli::stderr::get_stderr();
    let _ = err.write_all(USAGE.as_bytes());
    let _ = err.blocking_flush();
    wasip2::cli::exit::exit_with_code(2);
    unreachable!()
}

/// Counts the primes `p < n` by trial division with odd divisors up to √p.
fn count_primes_below(n: u32) -> u32 {
    if n <= 2 {
        return 0;
    }
    let mut count = 1; // 2
    let mut p = 3u32;
    while p < n {
        let mut d = 3u32;
        let mut prime = true;
        while d.saturating_mul(d) <= p {
            if p % d == 0 {
                prime = false;
                break;
            }
            d += 2;
        }
        if prime {
            count += 1;
        }
        p = match p.checked_add(2) {
            Some(p) => p,
            None => break,
        };
    }
    count
}

fn spin() -> ! {
    let mut err = wasip2::cli::stderr::get_stderr();
    let _ = err.write_all(b"spinning forever\n");
    let _ = err.blocking_flush();
    let mut x = 1u64;
    loop {
        x = std::hint::black_box(x.wrapping_mul(6364136223846793005).wrapping_add(1));
    }
}

fn alloc() -> ! {
    const CHUNK: usize = 1 << 20; // 1 MiB
    let mut out = wasip2::cli::stdout::get_stdout();
    let mut held: Vec<Vec<u8>> = Vec::new();
    loop {
        // Touch every page so the memory is really committed on the host.
        held.push(vec![0xa5; CHUNK]);
        if held.len() % 16 == 0 {
            let _ = write!(out, "allocated {} MiB\n", held.len());
            let _ = out.blocking_flush();
        }
    }
}

/// How `fill` writes.
#[derive(Clone, Copy, PartialEq)]
enum Fill {
    Write,
    Stream,
    Holes,
    Unlinked,
}

fn fill(how: Fill) -> ! {
    use wasip2::filesystem::types::{DescriptorFlags, OpenFlags, PathFlags};
    const CHUNK: usize = 1 << 20; // 1 MiB
    let mut out = wasip2::cli::stdout::get_stdout();
    let dirs = wasip2::filesystem::preopens::get_directories();
    let Some((data, _)) = dirs.iter().find(|(_, p)| p == "/data") else {
        let _ = out.write_all(b"no /data folder\n");
        let _ = out.blocking_flush();
        wasip2::cli::exit::exit_with_code(1);
        unreachable!()
    };
    let file = data.open_at(
        PathFlags::empty(),
        "fill",
        OpenFlags::CREATE | OpenFlags::TRUNCATE,
        DescriptorFlags::WRITE,
    );
    let chunk = vec![0x5a; CHUNK];
    let mut at = 0u64;
    let why = match file {
        Err(e) => e.message().to_string(),
        Ok(file) if how == Fill::Holes => loop {
            if let Err(e) = file.set_size(at + CHUNK as u64) {
                break e.message().to_string();
            }
            // Long enough for the node to measure the folder in between.
            wasip2::clocks::monotonic_clock::subscribe_duration(150_000_000).block();
            match file.write(&chunk, at) {
                Ok(n) => at += n,
                Err(e) => break e.message().to_string(),
            }
        },
        Ok(file) if how == Fill::Unlinked => match data.unlink_file_at("fill") {
            Err(e) => e.message().to_string(),
            Ok(()) => loop {
                if at >= 256 << 20 {
                    break "stopped at 256 MiB".to_string();
                }
                match file.write(&chunk, at) {
                    Ok(n) => at += n,
                    Err(e) => break e.message().to_string(),
                }
            },
        },
        Ok(file) if how == Fill::Stream => match file.append_via_stream() {
            Err(e) => e.message().to_string(),
            // blocking-write-and-flush takes at most 4 KiB a call.
            Ok(out) => loop {
                match out.blocking_write_and_flush(&chunk[..4096]) {
                    Ok(()) => at += 4096,
                    Err(wasip2::io::streams::StreamError::LastOperationFailed(e)) => {
                        break match wasip2::filesystem::types::filesystem_error_code(&e) {
                            Some(code) => code.message().to_string(),
                            None => e.to_debug_string(),
                        }
                    }
                    Err(wasip2::io::streams::StreamError::Closed) => break "closed".to_string(),
                }
            },
        },
        Ok(file) => loop {
            match file.write(&chunk, at) {
                Ok(n) => at += n,
                Err(e) => break e.message().to_string(),
            }
        },
    };
    let _ = write!(out, "wrote {at} bytes, then: {why}\n");
    let _ = out.blocking_flush();
    wasip2::cli::exit::exit_with_code(1);
    unreachable!()
}
