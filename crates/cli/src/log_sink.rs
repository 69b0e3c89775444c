//! Where the server's logs go: stderr, through a writer that never fails.
//!
//! A log line that cannot be written (stderr on a full disk, `/dev/full`, a closed pipe)
//! is dropped and counted, never an error: tracing's fallback for a failed write prints
//! to stderr with `eprintln!`, which panics when stderr fails too, and a panic in the
//! thread that logged took down whatever it was doing (the start-up, a request's
//! connection, a lifecycle thread). The next line that does get through is preceded by
//! how many were lost.

use std::io::{self, Write};
use std::sync::atomic::{AtomicU64, Ordering};

/// Log lines dropped since the start because stderr refused them.
static DROPPED: AtomicU64 = AtomicU64::new(0);
/// How many of the dropped lines have been reported on stderr.
static REPORTED: AtomicU64 = AtomicU64::new(0);

/// A writer over `W` that reports every write as done.
#[derive(Debug)]
pub struct Dropping<W>(pub W);

/// The writer for one log event: stderr, failures dropped and counted.
pub fn stderr() -> Dropping<io::Stderr> {
    Dropping(io::stderr())
}

impl<W: Write> Write for Dropping<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let dropped = DROPPED.load(Ordering::Relaxed);
        let reported = REPORTED.load(Ordering::Relaxed);
        if dropped > reported {
            let note = format!(
                "zonecert: {} log lines could not be written\n",
                dropped - reported
            );
            if self.0.write_all(note.as_bytes()).is_ok() {
                REPORTED.fetch_max(dropped, Ordering::Relaxed);
            }
        }
        if self.0.write_all(buf).is_err() {
            DROPPED.fetch_add(1, Ordering::Relaxed);
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        let _ = self.0.flush();
        Ok(())
    }
}

/// Prints a line on stdout or stderr, ignoring a failure (`println!` and `eprintln!`
/// panic when the stream is closed or full).
pub fn print_line(mut to: impl Write, line: std::fmt::Arguments<'_>) {
    let _ = to.write_fmt(line);
    let _ = to.write_all(b"\n");
    let _ = to.flush();
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Full;

    impl Write for Full {
        fn write(&mut self, _: &[u8]) -> io::Result<usize> {
            Err(io::Error::from_raw_os_error(28)) // ENOSPC, as /dev/full answers
        }
        fn flush(&mut self) -> io::Result<()> {
            Err(io::Error::from_raw_os_error(28))
        }
    }

    fn dropped() -> u64 {
        DROPPED.load(Ordering::Relaxed)
    }

    #[test]
    fn a_failing_sink_is_never_an_error_and_losses_are_counted_then_reported() {
        let before = dropped();
        let mut w = Dropping(Full);
        assert!(w.write_all(b"one\n").is_ok());
        assert!(w.flush().is_ok());
        assert!(dropped() > before);
        let mut out = Vec::new();
        Dropping(&mut out).write_all(b"two\n").unwrap();
        let text = String::from_utf8(out).unwrap();
        assert!(text.contains("log lines could not be written"), "{text}");
        assert!(text.ends_with("two\n"), "{text}");
    }
}
