//! Log lines of a one-shot command in the CLI's own words: `warning: what happened (node
//! 3, error …)`, like the CLI's other messages, instead of a daemon's timestamped line with
//! its module path. Daemons (`node run`, `validator run`, `mesh run`, `devnet`) and `-v`
//! keep the full format, where time and origin matter.

use std::fmt::Write as _;

use tracing::field::{Field, Visit};
use tracing::{Event, Level, Subscriber};
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields};
use tracing_subscriber::registry::LookupSpan;

/// The plain format: level word, message, then the fields in brackets.
pub struct Plain;

/// An event's message and its other fields as `name value`.
#[derive(Default)]
struct Parts {
    message: String,
    fields: Vec<String>,
}

impl Visit for Parts {
    fn record_str(&mut self, field: &Field, value: &str) {
        match field.name() {
            "message" => self.message = value.to_string(),
            // Where a `log` crate's record came from, which the full format leaves out too.
            name if name.starts_with("log.") => {}
            name => self
                .fields
                .push(format!("{} {value}", name.replace('_', " "))),
        }
    }

    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        match field.name() {
            "message" => {
                let _ = write!(self.message, "{value:?}");
            }
            name if name.starts_with("log.") => {}
            name => self
                .fields
                .push(format!("{} {value:?}", name.replace('_', " "))),
        }
    }
}

impl<S, N> FormatEvent<S, N> for Plain
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        _ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> std::fmt::Result {
        writeln!(writer, "{}", line(*event.metadata().level(), event))
    }
}

fn line(level: Level, event: &Event<'_>) -> String {
    let mut parts = Parts::default();
    event.record(&mut parts);
    words(level, &parts)
}

fn words(level: Level, parts: &Parts) -> String {
    let word = match level {
        Level::ERROR => "error",
        Level::WARN => "warning",
        Level::INFO => "info",
        _ => "debug",
    };
    let mut text = format!("{word}: {}", parts.message);
    if !parts.fields.is_empty() {
        let _ = write!(text, " ({})", parts.fields.join(", "));
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};

    /// Everything written, shared with the test.
    #[derive(Clone, Default)]
    struct Captured(Arc<Mutex<Vec<u8>>>);

    impl std::io::Write for Captured {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().expect("lock").extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn a_logged_warning_is_one_plain_line_with_its_fields() {
        let captured = Captured::default();
        let writer = captured.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_writer(move || writer.clone())
            .with_ansi(false)
            .event_format(Plain)
            .finish();
        tracing::subscriber::with_default(subscriber, || {
            let e = std::io::Error::other("connection refused");
            tracing::warn!(node = 3, error = %e, "cannot put the shard on a node");
        });
        let text = String::from_utf8(captured.0.lock().expect("lock").clone()).expect("utf-8");
        assert_eq!(
            text,
            "warning: cannot put the shard on a node (node 3, error connection refused)\n"
        );
    }

    #[test]
    fn a_warning_reads_as_the_cli_says_things() {
        let parts = Parts {
            message: "node 3 of your storage did not connect within 3s; using the others".into(),
            fields: vec!["peer 12D3KooWabc".into()],
        };
        assert_eq!(
            words(Level::WARN, &parts),
            "warning: node 3 of your storage did not connect within 3s; using the others \
             (peer 12D3KooWabc)"
        );
    }
}
