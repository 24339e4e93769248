//! CPU accounting and core pinning for the benchmarks (Linux `/proc` and `sched_setaffinity`).
//!
//! Wall-clock throughput on a 2-core machine mostly measures who won the cores: the simulator's TLS client
//! competes with the server it measures. The figure that means something is the server's CPU time per request,
//! with the server and the simulator pinned to different cores, and (on PostgreSQL) the database's CPU time
//! next to it. Everything here reads what the kernel already counts; nothing is sampled or estimated.

use std::collections::BTreeMap;
use std::time::Duration;

use crate::SimError;

/// Which processes a benchmark watches, and where it pins them.
#[derive(Debug, Clone, Default)]
pub struct CpuOptions {
    /// The server process (`orchard serve`).
    pub server_pid: Option<u32>,
    /// Every process with this command name counts as the database (e.g. `postgres`: its backends and
    /// background workers).
    pub db_process_name: Option<String>,
    /// Pin every thread of the server to this core.
    pub pin_server: Option<usize>,
    /// Pin every thread of this simulator to this core.
    pub pin_self: Option<usize>,
    /// Pin every database process to this core.
    pub pin_db: Option<usize>,
}

/// CPU time consumed so far (user + system) by the watched processes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CpuSample {
    pub server: Option<Duration>,
    pub db: Option<Duration>,
}

impl CpuOptions {
    /// Applies the pinning options. Called once the processes exist (the database may start backends later:
    /// new PostgreSQL backends are forked by the postmaster and inherit its pinning).
    pub fn pin(&self) -> Result<(), SimError> {
        if let Some(core) = self.pin_self {
            pin_process(std::process::id(), core)?;
        }
        if let (Some(core), Some(pid)) = (self.pin_server, self.server_pid) {
            pin_process(pid, core)?;
        }
        if let (Some(core), Some(name)) = (self.pin_db, &self.db_process_name) {
            for pid in pids_named(name)? {
                pin_process(pid, core)?;
            }
        }
        Ok(())
    }

    pub fn sample(&self) -> Result<CpuSample, SimError> {
        let server = self.server_pid.map(process_cpu).transpose()?;
        let db = match &self.db_process_name {
            Some(name) => {
                let mut total = Duration::ZERO;
                for pid in pids_named(name)? {
                    // A backend may exit between listing and reading: its time then counts once its parent
                    // has waited for it, as every exited child's does (an autovacuum worker, a backend whose
                    // connection closed). Without them the sum fell whenever one exited, by all it had used.
                    total += process_cpu(pid).unwrap_or_default()
                        + reaped_children_cpu(pid).unwrap_or_default();
                }
                Some(total)
            }
            None => None,
        };
        Ok(CpuSample { server, db })
    }
}

impl CpuSample {
    /// What was consumed between `earlier` and `self`.
    pub fn since(&self, earlier: &CpuSample) -> CpuSample {
        let diff = |now: Option<Duration>, then: Option<Duration>| match (now, then) {
            (Some(now), Some(then)) => Some(now.saturating_sub(then)),
            _ => None,
        };
        CpuSample {
            server: diff(self.server, earlier.server),
            db: diff(self.db, earlier.db),
        }
    }
}

fn proc_error(what: &str, e: impl std::fmt::Display) -> SimError {
    SimError::InvalidArgument(format!("{what}: {e}"))
}

/// CPU time of a whole process (all its threads, finished ones included): the kernel's nanosecond count read
/// through the process's CPU-time clock, or, where that clock cannot be read, utime + stime from
/// `/proc/PID/stat`. The ticks of the latter (10 ms here) are too coarse for a round of a few hundred
/// sessions: one tick is 0.05 ms per report over 200 reports.
pub fn process_cpu(pid: u32) -> Result<Duration, SimError> {
    if let Some(precise) = process_cpu_clock(pid) {
        return Ok(precise);
    }
    process_cpu_ticks(pid)
}

fn process_cpu_clock(pid: u32) -> Option<Duration> {
    let pid = libc::pid_t::try_from(pid).ok()?;
    let mut clock: libc::clockid_t = 0;
    let mut now = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: both calls only write the plain values passed by pointer; a process that no longer exists is
    // an error return, not undefined behaviour.
    let read = unsafe {
        libc::clock_getcpuclockid(pid, &mut clock) == 0 && libc::clock_gettime(clock, &mut now) == 0
    };
    if !read {
        return None;
    }
    Some(Duration::new(
        u64::try_from(now.tv_sec).ok()?,
        u32::try_from(now.tv_nsec).ok()?,
    ))
}

/// CPU time so far of each of `pids` that still exists (one that has exited is left out: its time is no
/// longer its own to read).
pub fn cpu_by_process(pids: &[u32]) -> BTreeMap<u32, Duration> {
    pids.iter()
        .filter_map(|&pid| Some((pid, process_cpu(pid).ok()?)))
        .collect()
}

/// utime + stime of a whole process from `/proc/PID/stat`, in clock ticks.
fn process_cpu_ticks(pid: u32) -> Result<Duration, SimError> {
    let path = format!("/proc/{pid}/stat");
    let stat = std::fs::read_to_string(&path).map_err(|e| proc_error(&path, e))?;
    cpu_from_stat(&stat).ok_or_else(|| proc_error(&path, "unexpected format"))
}

/// CPU time of the children `pid` has waited for (cutime + cstime from `/proc/PID/stat`, in clock ticks): the
/// PostgreSQL postmaster's counts every backend and worker that has exited.
fn reaped_children_cpu(pid: u32) -> Result<Duration, SimError> {
    let path = format!("/proc/{pid}/stat");
    let stat = std::fs::read_to_string(&path).map_err(|e| proc_error(&path, e))?;
    children_cpu_from_stat(&stat).ok_or_else(|| proc_error(&path, "unexpected format"))
}

/// Fields 16 and 17 (cutime, cstime) in clock ticks.
fn children_cpu_from_stat(stat: &str) -> Option<Duration> {
    stat_ticks(stat, 13)
}

/// Fields 14 and 15 (utime, stime) in clock ticks. The command name (field 2) may contain spaces and
/// parentheses, so the fields are counted after its last `)`.
fn cpu_from_stat(stat: &str) -> Option<Duration> {
    stat_ticks(stat, 11)
}

/// The sum of two adjacent tick counts of a stat line, `skip` fields after field 2 (11: utime and stime).
fn stat_ticks(stat: &str, skip: usize) -> Option<Duration> {
    let after_name = &stat[stat.rfind(')')? + 1..];
    let mut fields = after_name.split_whitespace().skip(skip);
    let utime: u64 = fields.next()?.parse().ok()?;
    let stime: u64 = fields.next()?.parse().ok()?;
    // SAFETY: sysconf only reads a configuration value.
    let ticks_per_second = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    let ticks_per_second = u64::try_from(ticks_per_second).ok().filter(|t| *t > 0)?;
    Some(Duration::from_nanos(
        (utime + stime).saturating_mul(1_000_000_000) / ticks_per_second,
    ))
}

/// Processes whose command name (`/proc/PID/comm`) is `name`.
fn pids_named(name: &str) -> Result<Vec<u32>, SimError> {
    let entries = std::fs::read_dir("/proc").map_err(|e| proc_error("/proc", e))?;
    let mut pids = Vec::new();
    for entry in entries.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<u32>().ok())
        else {
            continue;
        };
        if std::fs::read_to_string(format!("/proc/{pid}/comm")).is_ok_and(|c| c.trim_end() == name)
        {
            pids.push(pid);
        }
    }
    Ok(pids)
}

/// Pins every thread of `pid` to `core` (`sched_setaffinity` applies to one thread; threads started later
/// inherit the affinity of the thread that starts them).
pub fn pin_process(pid: u32, core: usize) -> Result<(), SimError> {
    let tasks = format!("/proc/{pid}/task");
    let entries = std::fs::read_dir(&tasks).map_err(|e| proc_error(&tasks, e))?;
    for entry in entries.flatten() {
        let Some(tid) = entry
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<i32>().ok())
        else {
            continue;
        };
        // SAFETY: the set is a plain bit array on the stack, initialised by CPU_ZERO before use.
        let result = unsafe {
            let mut set: libc::cpu_set_t = std::mem::zeroed();
            libc::CPU_ZERO(&mut set);
            libc::CPU_SET(core, &mut set);
            libc::sched_setaffinity(tid, std::mem::size_of::<libc::cpu_set_t>(), &set)
        };
        // A thread may have exited since the listing (ESRCH): nothing to pin.
        if result != 0 {
            let error = std::io::Error::last_os_error();
            if error.raw_os_error() != Some(libc::ESRCH) {
                return Err(proc_error(
                    &format!("pinning thread {tid} of {pid} to core {core}"),
                    error,
                ));
            }
        }
    }
    Ok(())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn stat_fields_are_counted_after_the_command_name() {
        // A command name with spaces and a parenthesis must not shift the fields.
        let stat = "4242 (a (b) c) S 1 4242 4242 0 -1 4194560 100 0 0 0 250 50 0 0 20 0 3 0 1 1 1";
        let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as u64;
        assert_eq!(
            cpu_from_stat(stat),
            Some(Duration::from_nanos(300 * 1_000_000_000 / ticks))
        );
        assert_eq!(cpu_from_stat("garbage"), None);
        // cutime and cstime follow them.
        let stat = "4242 (a (b) c) S 1 4242 4242 0 -1 4194560 100 0 0 0 250 50 7 3 20 0 3 0 1 1 1";
        assert_eq!(
            children_cpu_from_stat(stat),
            Some(Duration::from_nanos(10 * 1_000_000_000 / ticks))
        );
        assert_eq!(children_cpu_from_stat("4242 (x) S 1 2"), None);
    }

    #[test]
    fn each_process_is_read_on_its_own() {
        let me = std::process::id();
        let read = cpu_by_process(&[me, u32::MAX]);
        assert_eq!(read.len(), 1, "{read:?}");
        assert!(read[&me] > Duration::ZERO);
    }

    #[test]
    fn an_exited_child_still_counts_through_its_parent() {
        // A child that spins and exits: once waited for, its time is its parent's (this process's) cutime.
        let before = reaped_children_cpu(std::process::id()).unwrap();
        let status = std::process::Command::new("sh")
            .args(["-c", "i=0; while [ $i -lt 300000 ]; do i=$((i+1)); done"])
            .status()
            .unwrap();
        assert!(status.success());
        let after = reaped_children_cpu(std::process::id()).unwrap();
        assert!(after > before, "{before:?} then {after:?}");
    }

    #[test]
    fn this_process_has_cpu_time() {
        let pid = std::process::id();
        let before = process_cpu(pid).unwrap();
        let mut x = 0u64;
        for i in 0..20_000_000u64 {
            x = x.wrapping_mul(31).wrapping_add(i);
        }
        std::hint::black_box(x);
        assert!(process_cpu(pid).unwrap() >= before);
        assert!(pids_named("no-such-process-name-here").unwrap().is_empty());
    }

    #[test]
    fn the_precise_clock_agrees_with_the_ticks() {
        // Another process's clock too (a child spinning), as the benchmarks read the server's and PostgreSQL's.
        let mut child = std::process::Command::new("sh")
            .args(["-c", "i=0; while [ $i -lt 300000 ]; do i=$((i+1)); done"])
            .spawn()
            .unwrap();
        let pid = child.id();
        let mut last = Duration::ZERO;
        let mut agreed = false;
        while child.try_wait().unwrap().is_none() {
            let (Some(precise), Ok(ticks)) = (process_cpu_clock(pid), process_cpu_ticks(pid))
            else {
                break;
            };
            assert!(precise >= last, "the clock went back");
            last = precise;
            // /proc gives the same count in whole ticks.
            let tick = Duration::from_nanos(
                1_000_000_000 / unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as u64,
            );
            assert!(
                precise + tick * 2 >= ticks && ticks + tick * 2 >= precise,
                "{precise:?} against {ticks:?}"
            );
            agreed |= precise > Duration::ZERO;
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = child.wait();
        assert!(agreed, "the child's clock was never read");
        assert!(process_cpu_clock(u32::MAX).is_none());
    }

    #[test]
    fn a_process_is_pinned_with_all_its_threads() {
        let mut child = std::process::Command::new("sleep")
            .arg("30")
            .spawn()
            .unwrap();
        let pinned = pin_process(child.id(), 0).and_then(|()| {
            let status = std::fs::read_to_string(format!("/proc/{}/status", child.id()))
                .map_err(|e| proc_error("status", e))?;
            Ok(status
                .lines()
                .find_map(|l| l.strip_prefix("Cpus_allowed_list:"))
                .map(|v| v.trim().to_owned()))
        });
        let _ = child.kill();
        let _ = child.wait();
        assert_eq!(pinned.unwrap().as_deref(), Some("0"));
        assert!(pids_named("sleep").is_ok());
    }
}
