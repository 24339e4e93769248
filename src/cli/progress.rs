//! Progress of long work, on stderr so stdout stays the result: when stderr is a terminal, one line redrawn in
//! place (a spinner with the time taken so far), erased at the end; otherwise plain lines (`LABEL: started`,
//! `LABEL: done in 2.1 s`) that a log keeps. With `--json` and no terminal nothing is printed: the JSON answer
//! is the record.
//!
//! Today's long commands (a bulk command, a DEP or Apps and Books sync, a group change from a CSV, an audit
//! export) are each one request that the server works through, so they show activity and time, not a fraction.
//! Work the CLI does in counted steps (backup and restore, when they come) adds a total and a bar here.

use std::io::{IsTerminal, Write};
use std::time::{Duration, Instant};

use super::Out;

/// How progress is shown.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Mode {
    /// Redrawn in place on a terminal.
    Terminal,
    /// One line at the start and one at the end, for logs and pipes.
    Lines,
    /// Nothing (`--json` into a pipe).
    Silent,
}

impl Mode {
    pub(crate) fn for_output(out: Out) -> Mode {
        if std::io::stderr().is_terminal() {
            Mode::Terminal
        } else if out.is_json() {
            Mode::Silent
        } else {
            Mode::Lines
        }
    }
}

/// How often the terminal line is redrawn.
const REDRAW_EVERY: Duration = Duration::from_millis(120);
const SPINNER: [char; 4] = ['|', '/', '-', '\\'];

pub(crate) struct Progress {
    label: String,
    started: Instant,
    mode: Mode,
    redraw: Option<tokio::task::JoinHandle<()>>,
}

impl Progress {
    pub(crate) fn start(out: Out, label: &str) -> Progress {
        Self::with_mode(Mode::for_output(out), label)
    }

    fn with_mode(mode: Mode, label: &str) -> Progress {
        let started = Instant::now();
        let redraw = match mode {
            Mode::Terminal => {
                let label = label.to_owned();
                Some(tokio::spawn(async move {
                    let mut tick = 0usize;
                    loop {
                        let line = render(&label, started.elapsed(), tick);
                        {
                            let mut err = std::io::stderr().lock();
                            let _ = write!(err, "\r\x1b[2K{line}");
                            let _ = err.flush();
                        }
                        tick = tick.wrapping_add(1);
                        tokio::time::sleep(REDRAW_EVERY).await;
                    }
                }))
            }
            Mode::Lines => {
                eprintln!("{label}: started");
                None
            }
            Mode::Silent => None,
        };
        Progress {
            label: label.to_owned(),
            started,
            mode,
            redraw,
        }
    }

    /// The work ended (`ok` says how): the terminal line is replaced by the outcome.
    pub(crate) fn finish(mut self, ok: bool) {
        if let Some(task) = self.redraw.take() {
            task.abort();
            let mut err = std::io::stderr().lock();
            let _ = write!(err, "\r\x1b[2K");
            let _ = err.flush();
        }
        let outcome = if ok { "done" } else { "failed" };
        let seconds = self.started.elapsed().as_secs_f64();
        if self.mode != Mode::Silent {
            eprintln!("{}: {outcome} in {seconds:.1} s", self.label);
        }
    }
}

impl Drop for Progress {
    fn drop(&mut self) {
        if let Some(task) = self.redraw.take() {
            task.abort();
        }
    }
}

/// Shows `label` as in progress while `work` runs (one long request).
pub(crate) async fn during<T, E>(
    out: Out,
    label: &str,
    work: impl std::future::Future<Output = Result<T, E>>,
) -> Result<T, E> {
    let progress = Progress::start(out, label);
    let result = work.await;
    progress.finish(result.is_ok());
    result
}

/// The terminal line: the label, a spinner and the time taken so far.
fn render(label: &str, elapsed: Duration, tick: usize) -> String {
    format!(
        "{label} {} {}s",
        SPINNER[tick % SPINNER.len()],
        elapsed.as_secs()
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_terminal_line_spins_and_counts_seconds() {
        assert_eq!(
            render("dep token sync", Duration::from_secs(12), 1),
            "dep token sync / 12s"
        );
        assert_eq!(
            render("dep token sync", Duration::from_millis(13_900), 6),
            "dep token sync - 13s"
        );
    }
}
