//! Printing: aligned `label  value` rows for people, one JSON object for scripts.

use std::io::Write;
use std::sync::LazyLock;
use std::time::Duration;

use serde::Serialize;

use crate::Globals;

/// Every bar on the terminal, so that a log line is written above them rather than
/// through one of them.
static BARS: LazyLock<indicatif::MultiProgress> = LazyLock::new(indicatif::MultiProgress::new);

/// Where the log goes: standard error, above the bars drawn there.
pub struct AboveBars;

/// One log event, written out whole when the logger is done with it.
pub struct LogLine(Vec<u8>);

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for AboveBars {
    type Writer = LogLine;

    fn make_writer(&'a self) -> LogLine {
        LogLine(Vec::new())
    }
}

impl Write for LogLine {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Drop for LogLine {
    fn drop(&mut self) {
        if self.0.is_empty() {
            return;
        }
        // A log line that cannot be written has nowhere else to go. indicatif panics when
        // it cannot redraw (a terminal gone): the line is then written as it is.
        let line = &self.0;
        let above = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            BARS.suspend(|| {
                let _ = std::io::stderr().write_all(line);
            })
        }));
        if above.is_err() {
            let _ = std::io::stderr().write_all(line);
        }
    }
}

/// `bar` drawn with `template` on a terminal; hidden for `--json` or when stderr is not
/// a terminal.
fn drawn(
    globals: &Globals,
    bar: impl FnOnce() -> indicatif::ProgressBar,
    template: &str,
) -> indicatif::ProgressBar {
    if globals.json || !std::io::IsTerminal::is_terminal(&std::io::stderr()) {
        return indicatif::ProgressBar::hidden();
    }
    let bar = BARS.add(bar());
    bar.set_style(
        indicatif::ProgressStyle::with_template(template)
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
    );
    bar
}

/// A bar of bytes with their rate.
pub fn bytes_bar(globals: &Globals, total: u64) -> indicatif::ProgressBar {
    drawn(
        globals,
        || indicatif::ProgressBar::new(total),
        "{bar:40} {binary_bytes}/{binary_total_bytes} {binary_bytes_per_sec} eta {eta}",
    )
}

/// Bytes gone through and their rate, for a stream whose length is known only at its end.
pub fn bytes_flowing(globals: &Globals) -> indicatif::ProgressBar {
    let bar = drawn(
        globals,
        indicatif::ProgressBar::new_spinner,
        "{spinner} {elapsed} {binary_bytes} {binary_bytes_per_sec}",
    );
    if !bar.is_hidden() {
        bar.enable_steady_tick(Duration::from_millis(120));
    }
    bar
}

/// A bar of bytes over many files, naming the one under way.
pub fn files_bar(globals: &Globals, total: u64) -> indicatif::ProgressBar {
    drawn(
        globals,
        || indicatif::ProgressBar::new(total),
        "{bar:30} {binary_bytes}/{binary_total_bytes} {binary_bytes_per_sec} eta {eta} {wide_msg}",
    )
}

/// A spinner with the time so far, for work whose length is not known ahead.
pub fn busy(globals: &Globals, what: &'static str) -> indicatif::ProgressBar {
    let bar = drawn(
        globals,
        indicatif::ProgressBar::new_spinner,
        &format!("{{spinner}} {{elapsed}} {what} {{msg}}"),
    );
    if !bar.is_hidden() {
        bar.enable_steady_tick(Duration::from_millis(120));
    }
    bar
}

/// A bar counting objects gone through, named as each starts.
pub fn objects_bar(globals: &Globals, total: usize, verb: &'static str) -> indicatif::ProgressBar {
    drawn(
        globals,
        || indicatif::ProgressBar::new(total as u64),
        &format!("{{bar:40}} {{pos}}/{{len}} objects, {verb} {{msg}}"),
    )
}

/// Whether the command has printed anything on stdout.
static WROTE_OUT: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// What [`write_out`] unwinds with when stdout cannot be written: `main` exits with
/// this status once destructors ran (a devnet's stops the processes it started).
pub struct StdoutGone(pub u8);

/// Print on stdout. A reader that went away (`peergrid node list | head -3`) ends the
/// command as it ends other Unix tools, quietly with status 141, where `println!` would
/// panic; any other failure to write is said on stderr, status 1.
pub fn write_out(args: std::fmt::Arguments) {
    claim_stdout();
    if let Err(e) = std::io::stdout().lock().write_fmt(args) {
        let status = if e.kind() == std::io::ErrorKind::BrokenPipe {
            141
        } else {
            eprintln!("error: cannot write to standard output: {e}");
            1
        };
        // Not a panic: no message, and nothing for the panic hook to report.
        std::panic::resume_unwind(Box::new(StdoutGone(status)));
    }
}

/// Note that stdout carries the command's output (an object's bytes written there by
/// other means), so that a failure adds no JSON error after it.
pub fn claim_stdout() {
    WROTE_OUT.store(true, std::sync::atomic::Ordering::Relaxed);
}

/// Whether [`write_out`] printed anything yet.
pub fn wrote_out() -> bool {
    WROTE_OUT.load(std::sync::atomic::Ordering::Relaxed)
}

/// Print `value` as one line of JSON on stdout.
pub fn json<T: Serialize>(value: &T) -> anyhow::Result<()> {
    outln!("{}", serde_json::to_string(value)?);
    Ok(())
}

/// Print rows as `  label  value` with the values aligned in one column.
pub fn rows(rows: &[(&str, String)]) {
    let width = rows
        .iter()
        .map(|(l, _)| l.chars().count())
        .max()
        .unwrap_or(0);
    for (label, value) in rows {
        outln!("  {label:<width$}  {value}");
    }
}

/// Print a table: a header row and aligned columns, two spaces apart.
pub fn table(headers: &[&str], rows: &[Vec<String>]) {
    let mut widths: Vec<usize> = headers.iter().map(|h| h.chars().count()).collect();
    for row in rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let line = |cells: Vec<&str>| {
        let text: Vec<String> = cells
            .iter()
            .zip(&widths)
            .map(|(c, w)| format!("{c:<w$}"))
            .collect();
        outln!("{}", text.join("  ").trim_end());
    };
    line(headers.to_vec());
    for row in rows {
        line(row.iter().map(String::as_str).collect());
    }
    if rows.is_empty() {
        outln!("(none)");
    }
}

/// The `proof` object of `--json` output for an answer checked against its Merkle proof,
/// whose root `confirmed_by` of `validators` validators confirmed.
pub fn proof_json(certified: &peergrid_client::Certified) -> serde_json::Value {
    serde_json::json!({
        "checked": true,
        "certified_by": certified.signatures,
        "validators": certified.validators,
        "epoch": certified.epoch,
    })
}

/// The table line saying which validators certified a proven answer's root.
pub fn certified_row(certified: &peergrid_client::Certified) -> (&'static str, String) {
    (
        "root",
        format!(
            "certified by {} of epoch {}'s {} validators",
            certified.signatures, certified.epoch, certified.validators
        ),
    )
}

/// A backup phrase as 4 lines of 6 words: readable, and still pastes into `peergrid key import`.
pub fn phrase_lines(phrase: &str) -> String {
    let words: Vec<&str> = phrase.split_whitespace().collect();
    words
        .chunks(6)
        .map(|line| format!("    {}", line.join(" ")))
        .collect::<Vec<_>>()
        .join("\n")
}

/// A duration in the largest unit that keeps it readable: `10 s`, `40 min`, `14 days`, `30.4 days`.
pub fn human_duration(duration: Duration) -> String {
    let secs = duration.as_secs();
    let (unit_secs, unit) = match secs {
        0..60 => return format!("{secs} s"),
        60..3600 => (60, "min"),
        3600..86_400 => (3600, "h"),
        _ => (86_400, "days"),
    };
    if secs == 86_400 {
        "1 day".to_string()
    } else if secs.is_multiple_of(unit_secs) {
        format!("{} {unit}", secs / unit_secs)
    } else {
        format!("{:.1} {unit}", secs as f64 / unit_secs as f64)
    }
}

/// A ledger or wall-clock time (Unix ms) relative to now: `3 min ago`, `in 10 s`.
pub fn ago(ms: u64) -> String {
    let now = peergrid_core::now_ms();
    if ms > now {
        format!("in {}", human_duration(Duration::from_millis(ms - now)))
    } else {
        format!("{} ago", human_duration(Duration::from_millis(now - ms)))
    }
}

/// Micro-USD as dollars: `$22`, `$0.05`.
pub fn usd(uusd: u64) -> String {
    peergrid_core::usd::Usd(uusd).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_pick_a_readable_unit() {
        let d = Duration::from_secs;
        assert_eq!(human_duration(d(10)), "10 s");
        assert_eq!(human_duration(d(40 * 60)), "40 min");
        assert_eq!(human_duration(d(90)), "1.5 min");
        assert_eq!(human_duration(d(3600)), "1 h");
        assert_eq!(human_duration(d(86_400)), "1 day");
        assert_eq!(human_duration(d(14 * 86_400)), "14 days");
        assert_eq!(human_duration(d(2_630_880)), "30.4 days");
    }

    #[test]
    fn micro_usd_prints_as_dollars() {
        assert_eq!(usd(22_000_000), "$22");
        assert_eq!(usd(50_000), "$0.05");
        assert_eq!(usd(500_000), "$0.50");
        assert_eq!(usd(10_000), "$0.01");
        assert_eq!(usd(1), "$0.000001");
    }
}
