//! Progress of long work, on stderr so stdout stays the result: when stderr is a terminal, one line redrawn in
//! place (a spinner with the time taken so far), erased at the end; otherwise plain lines (`LABEL: started`,
//! `LABEL: done in 2.1 s`) that a log keeps. With `--json` and no terminal nothing is printed: the JSON answer
//! is the record.
//!
//! Today's long commands (a bulk command, a DEP or Apps and Books sync, a group change from a CSV, an audit
//! export) are each one request that the server works through, so they show activity and time, not a fraction.
//! Work the CLI does in counted steps (`orchard backup` and `orchard restore`, byte by byte) shows a bar with
//! the fraction done on a terminal ([`Progress::counted`]), and the total in its plain lines.

use std::io::{IsTerminal, Write};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
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

    /// For the commands without `--json` (backup, restore): redrawn on a terminal, plain lines otherwise.
    pub(crate) fn for_stderr() -> Mode {
        if std::io::stderr().is_terminal() {
            Mode::Terminal
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
    /// Units done so far, of `total`, for counted work.
    done: Arc<AtomicU64>,
    total: Option<u64>,
}

impl Progress {
    pub(crate) fn start(out: Out, label: &str) -> Progress {
        Self::with_mode(Mode::for_output(out), label)
    }

    /// Work of `total` bytes, advanced with [`advance`](Progress::advance): a bar on a terminal.
    pub(crate) fn counted(mode: Mode, label: &str, total: u64) -> Progress {
        Self::with_total(mode, label, Some(total))
    }

    fn with_mode(mode: Mode, label: &str) -> Progress {
        Self::with_total(mode, label, None)
    }

    fn with_total(mode: Mode, label: &str, total: Option<u64>) -> Progress {
        let started = Instant::now();
        let done = Arc::new(AtomicU64::new(0));
        let redraw = match mode {
            Mode::Terminal => {
                let label = label.to_owned();
                let done = done.clone();
                Some(tokio::spawn(async move {
                    let mut tick = 0usize;
                    loop {
                        let line = match total {
                            Some(total) => render_bar(
                                &label,
                                done.load(Ordering::Relaxed),
                                total,
                                started.elapsed(),
                            ),
                            None => render(&label, started.elapsed(), tick),
                        };
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
                match total {
                    Some(total) => eprintln!("{label}: started ({})", size(total)),
                    None => eprintln!("{label}: started"),
                }
                None
            }
            Mode::Silent => None,
        };
        Progress {
            label: label.to_owned(),
            started,
            mode,
            redraw,
            done,
            total,
        }
    }

    /// `units` more of counted work are done.
    pub(crate) fn advance(&self, units: u64) {
        self.done.fetch_add(units, Ordering::Relaxed);
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
            match self.total {
                Some(_) => eprintln!(
                    "{}: {outcome} in {seconds:.1} s ({})",
                    self.label,
                    size(self.done.load(Ordering::Relaxed))
                ),
                None => eprintln!("{}: {outcome} in {seconds:.1} s", self.label),
            }
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

/// The terminal line of counted work: the label, a bar, the percentage and the bytes done of the total.
fn render_bar(label: &str, done: u64, total: u64, elapsed: Duration) -> String {
    const WIDTH: u64 = 30;
    let done = done.min(total);
    // Nothing to do counts as all done.
    let filled = (done * WIDTH).checked_div(total).unwrap_or(WIDTH);
    let percent = (done * 100).checked_div(total).unwrap_or(100);
    let bar: String = (0..WIDTH)
        .map(|i| if i < filled { '#' } else { '.' })
        .collect();
    format!(
        "{label} [{bar}] {percent:>3}% {} of {} {}s",
        size(done),
        size(total),
        elapsed.as_secs()
    )
}

/// Bytes for people: MiB with one decimal from 1 MiB, else KiB.
fn size(bytes: u64) -> String {
    const MIB: f64 = 1024.0 * 1024.0;
    let b = bytes as f64;
    if b >= MIB {
        format!("{:.1} MiB", b / MIB)
    } else {
        format!("{:.1} KiB", b / 1024.0)
    }
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
    fn counted_work_shows_a_bar_and_the_bytes() {
        assert_eq!(
            render_bar("backup", 3 << 20, 12 << 20, Duration::from_secs(4)),
            "backup [#######.......................]  25% 3.0 MiB of 12.0 MiB 4s"
        );
        assert_eq!(
            render_bar("restore", 10, 0, Duration::from_secs(0)),
            "restore [##############################] 100% 0.0 KiB of 0.0 KiB 0s"
        );
        assert_eq!(size(1536), "1.5 KiB");
    }

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
