//! How the text logs write a span's or an event's fields: the same bytes as
//! tracing-subscriber's `DefaultFields`, for less work.
//!
//! Every request opens a span with its id (`request{request_id=...}`), and the fmt layer
//! writes the span's fields into a `String` when the span is made, whether or not a line
//! is logged in it. `DefaultFields` writes a field as three pieces (its name and `=`,
//! each through an ANSI style that is empty without colours, then the value), so the
//! span's `String` was allocated and grown twice, and the empty styles went through the
//! formatting machinery: about 2,000 of the 40,800 instructions of a GET verification
//! (callgrind, `bench/verification_instructions.sh`). Here a plain field is gathered on
//! the stack and written in one piece. Anything else goes to `DefaultFields`' own
//! visitor: colours (a terminal), the `message` and error fields (which it escapes), raw
//! identifiers (`r#name`). A test holds the output to `DefaultFields`' byte for byte.

use std::fmt::{self, Write as _};
use tracing::field::{Field, Visit};
use tracing_subscriber::field::RecordFields;
use tracing_subscriber::fmt::FormatFields;
use tracing_subscriber::fmt::format::{DefaultFields, DefaultVisitor, Writer};

/// The fields formatter of the text logs (see the module).
#[derive(Debug, Default, Clone, Copy)]
pub struct PlainFields;

impl<'writer> FormatFields<'writer> for PlainFields {
    fn format_fields<R: RecordFields>(&self, writer: Writer<'writer>, fields: R) -> fmt::Result {
        if writer.has_ansi_escapes() {
            return DefaultFields::new().format_fields(writer, fields);
        }
        let mut visitor = PlainVisitor {
            writer,
            is_empty: true,
            result: Ok(()),
        };
        fields.record(&mut visitor);
        visitor.result
    }
}

/// Writes fields as `DefaultVisitor` does without colours.
struct PlainVisitor<'a> {
    writer: Writer<'a>,
    /// Nothing written yet (no space before the first field).
    is_empty: bool,
    result: fmt::Result,
}

impl PlainVisitor<'_> {
    /// Whether `field` is written at all: `DefaultVisitor` skips the `log.` fields of
    /// events that came from the `log` crate (their metadata is shown already).
    fn skipped(&self, field: &Field) -> bool {
        self.result.is_err() || field.name().starts_with("log.")
    }

    /// Lets `DefaultVisitor` write one field, after what this one wrote.
    fn by_default(&mut self, record: impl FnOnce(&mut DefaultVisitor<'_>)) {
        let mut visitor = DefaultVisitor::new(self.writer.by_ref(), self.is_empty);
        record(&mut visitor);
        self.result = tracing_subscriber::field::VisitOutput::finish(visitor);
        self.is_empty = false;
    }
}

impl Visit for PlainVisitor<'_> {
    fn record_str(&mut self, field: &Field, value: &str) {
        if self.skipped(field) {
            return;
        }
        if field.name() == "message" {
            self.by_default(|v| v.record_str(field, value));
        } else {
            // As `DefaultVisitor`: a string field is written with `Debug` (quoted).
            self.record_debug(field, &value);
        }
    }

    fn record_error(&mut self, field: &Field, value: &(dyn std::error::Error + 'static)) {
        if self.skipped(field) {
            return;
        }
        self.by_default(|v| v.record_error(field, value));
    }

    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        if self.skipped(field) {
            return;
        }
        let name = field.name();
        if name == "message" || name.starts_with("r#") {
            self.by_default(|v| v.record_debug(field, value));
            return;
        }
        let mut out = Gathered {
            held: [0; GATHERED],
            len: 0,
            writer: &mut self.writer,
        };
        let pad = if self.is_empty { "" } else { " " };
        self.result = plain_field(&mut out, pad, name, value);
        self.is_empty = false;
    }
}

/// `name=value` (the value by `Debug`) after `pad`, as `DefaultVisitor` writes a field
/// without colours; written out at the end.
fn plain_field(
    out: &mut Gathered<'_, '_>,
    pad: &str,
    name: &str,
    value: &dyn fmt::Debug,
) -> fmt::Result {
    out.write_str(pad)?;
    out.write_str(name)?;
    out.write_str("=")?;
    write!(out, "{value:?}")?;
    out.flush()
}

/// Bytes of a field gathered before they are written: a request id's field
/// (`request_id=` and up to 64 characters) fits.
const GATHERED: usize = 128;

/// A field's bytes, held on the stack and written to `writer` in one piece, or in
/// pieces once they outgrow it.
struct Gathered<'a, 'w> {
    held: [u8; GATHERED],
    len: usize,
    writer: &'a mut Writer<'w>,
}

impl Gathered<'_, '_> {
    fn flush(&mut self) -> fmt::Result {
        if self.len > 0 {
            let held = std::str::from_utf8(&self.held[..self.len]).map_err(|_| fmt::Error)?;
            self.writer.write_str(held)?;
            self.len = 0;
        }
        Ok(())
    }
}

impl fmt::Write for Gathered<'_, '_> {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        if self.len + s.len() > GATHERED {
            self.flush()?;
            if s.len() > GATHERED {
                return self.writer.write_str(s);
            }
        }
        // Whole `str`s only, so the held bytes are always UTF-8.
        self.held[self.len..self.len + s.len()].copy_from_slice(s.as_bytes());
        self.len += s.len();
        Ok(())
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // tests may unwrap: a panic is a failed test
mod tests {
    use super::*;
    use std::io;
    use std::sync::{Arc, Mutex};
    use tracing_subscriber::fmt::MakeWriter;
    use tracing_subscriber::prelude::*;

    #[derive(Clone, Default)]
    struct Captured(Arc<Mutex<Vec<u8>>>);

    impl io::Write for Captured {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    impl<'a> MakeWriter<'a> for Captured {
        type Writer = Captured;
        fn make_writer(&'a self) -> Captured {
            self.clone()
        }
    }

    #[derive(Debug)]
    struct Outer(Inner);
    #[derive(Debug)]
    struct Inner;
    impl fmt::Display for Outer {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("outer \x1b[31mfailure")
        }
    }
    impl fmt::Display for Inner {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("inner cause")
        }
    }
    impl std::error::Error for Outer {
        fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
            Some(&self.0)
        }
    }
    impl std::error::Error for Inner {}

    /// Spans and events with every kind of field the server logs, and more.
    fn log_everything() {
        let id = "0123456789abcdef0123456789abcdef";
        let long = "x".repeat(300);
        let span = tracing::info_span!("request", request_id = %id);
        let _in = span.enter();
        tracing::info!(method = %"GET", path = "/client/v4/zones/ab\"c", status = 403u16, micros = 17u64, "request refused");
        tracing::warn!(
            error = &Outer(Inner) as &(dyn std::error::Error + 'static),
            "with an error"
        );
        tracing::warn!(error = &Inner as &(dyn std::error::Error + 'static));
        tracing::info!(
            r#type = "raw",
            flag = true,
            ratio = 0.5f64,
            signed = -3i64,
            "raw name \x1b[1m"
        );
        tracing::info!(long = %long, empty = "", unicode = "é ü", "long and unicode");
        tracing::info!(bytes = ?b"ab\0".as_slice(), "no message field first");
        tracing::info!(first = 1, "{} formatted {}", "message", 2);
        let inner = tracing::info_span!("inner", a = 1, b = tracing::field::Empty, c = "s");
        inner.record("b", "later");
        let _in2 = inner.enter();
        tracing::info!(log.target = "skipped", after = 1, "nested");
        tracing::info!("only a message");
        tracing::info!(only = "fields");
    }

    fn captured<N>(fields: N, ansi: bool) -> String
    where
        N: for<'w> FormatFields<'w> + Send + Sync + 'static,
    {
        let out = Captured::default();
        let subscriber = tracing_subscriber::registry().with(
            tracing_subscriber::fmt::layer()
                .fmt_fields(fields)
                .with_writer(out.clone())
                .with_ansi(ansi)
                .without_time(),
        );
        tracing::subscriber::with_default(subscriber, log_everything);
        String::from_utf8(out.0.lock().unwrap().clone()).unwrap()
    }

    #[test]
    fn writes_what_the_default_fields_formatter_writes() {
        for ansi in [false, true] {
            let expected = captured(DefaultFields::new(), ansi);
            if !ansi {
                assert!(
                    expected.contains("request{request_id=0123456789abcdef0123456789abcdef}"),
                    "{expected}"
                );
            }
            assert_eq!(captured(PlainFields, ansi), expected, "ansi: {ansi}");
        }
    }
}
