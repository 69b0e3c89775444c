//! The commands' output on stdout, which ends the program quietly when its reader has
//! gone (`zonecert ... | head -1`): `print!` panics on a closed pipe, and the exit
//! status was a panic's 101.

use std::io::{ErrorKind, Write};

/// Writes to stdout and flushes. A closed pipe ends the program with status 0, as the
/// reader asked for no more; any other failure (a full disk) is reported on stderr and
/// ends it with status 1, since the output is lost.
pub fn write(args: std::fmt::Arguments<'_>) {
    let mut out = std::io::stdout().lock();
    if let Err(e) = out.write_fmt(args).and_then(|()| out.flush()) {
        if e.kind() == ErrorKind::BrokenPipe {
            std::process::exit(0);
        }
        crate::log_sink::print_line(
            std::io::stderr(),
            format_args!("error: writing to stdout: {e}"),
        );
        std::process::exit(1);
    }
}
