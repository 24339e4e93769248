//! Abuse limits each node keeps in memory: sign-in failures per source address (increasing backoff), a bound on
//! concurrent password verifications (argon2 needs ~19 MiB and a core for a while), and the rate at which one
//! enrollment link hands out profiles (each download mints a SCEP challenge and signs a profile).
//!
//! Why in memory: these counters only slow a caller down; losing them on restart costs nothing, and keeping
//! them per node spares the database a write for every refused request. What must hold across nodes (an
//! account's own backoff) is in the database (`local_accounts`).

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;

use orchard_types::{EnrollmentLinkId, UnixTime};
use tokio::sync::Semaphore;

/// Failed sign-ins a source may make before each further attempt must wait.
pub const FREE_FAILURES: i64 = 5;
/// The first wait after the free failures; it doubles with every further failure.
pub const BACKOFF_BASE_SECONDS: i64 = 60;
/// The longest wait: a throttle, never a lock that someone else can hold for ever.
pub const BACKOFF_MAX_SECONDS: i64 = 15 * 60;
/// Failures older than this (counted from the last one) are forgotten, for sources and accounts alike.
pub const FAILURE_WINDOW_SECONDS: i64 = 60 * 60;
/// While an account is in backoff, only sources with fewer recent failures than this are still heard: the
/// operator at a clean machine gets in with the right password while the guessing sources are turned away.
pub const ACCOUNT_BACKOFF_SOURCE_ALLOWANCE: i64 = 2;
/// Profile downloads one enrollment link hands out per minute by default (a department's cart rollout fits; a
/// script minting challenges is slowed to a few a second). Configurable: [`crate::Orchard::with_link_download_limit`].
pub const LINK_DOWNLOADS_PER_MINUTE: u32 = 300;
/// Sources (or links) remembered at most; beyond this the stalest are forgotten first.
const MAX_TRACKED: usize = 50_000;

/// The wait after `failures` failures in a row, or `None` while they are still free.
pub fn backoff_seconds(failures: i64) -> Option<i64> {
    if failures < FREE_FAILURES {
        return None;
    }
    let doublings = u32::try_from(failures - FREE_FAILURES)
        .unwrap_or(u32::MAX)
        .min(20);
    Some(
        BACKOFF_BASE_SECONDS
            .saturating_mul(1_i64 << doublings)
            .min(BACKOFF_MAX_SECONDS),
    )
}

/// The key a source address is counted under: IPv6 by its /64 (one host usually holds a whole /64, so
/// counting single addresses would give it 2^64 fresh starts); IPv4-mapped IPv6 as the IPv4 address.
pub fn source_key(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(_) => ip,
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => {
                let mut segments = v6.segments();
                for s in segments.iter_mut().skip(4) {
                    *s = 0;
                }
                IpAddr::V6(std::net::Ipv6Addr::from(segments))
            }
        },
    }
}

#[derive(Debug, Clone, Copy)]
struct Failures {
    count: i64,
    last: UnixTime,
}

#[derive(Debug, Clone, Copy)]
struct Window {
    started: UnixTime,
    count: u32,
}

/// Drops the entry that matters least when a map is full: the one whose `age_key` is oldest.
fn make_room<K: Clone + Eq + std::hash::Hash, V>(
    map: &mut HashMap<K, V>,
    age_key: impl Fn(&V) -> i64,
    expired: impl Fn(&V) -> bool,
) {
    if map.len() < MAX_TRACKED {
        return;
    }
    map.retain(|_, v| !expired(v));
    if map.len() >= MAX_TRACKED {
        if let Some(oldest) = map
            .iter()
            .min_by_key(|(_, v)| age_key(v))
            .map(|(k, _)| k.clone())
        {
            map.remove(&oldest);
        }
    }
}

/// The in-memory limits of one node; see the module documentation.
pub(crate) struct AbuseLimits {
    sign_in_failures: Mutex<HashMap<IpAddr, Failures>>,
    link_downloads: Mutex<HashMap<EnrollmentLinkId, Window>>,
    /// Profile downloads per link and minute (0: no limit).
    link_downloads_per_minute: u32,
    /// Password verifications running at once; more wait their turn instead of exhausting memory and the
    /// blocking thread pool.
    pub(crate) password_checks: Semaphore,
}

impl Default for AbuseLimits {
    fn default() -> Self {
        let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
        Self {
            sign_in_failures: Mutex::default(),
            link_downloads: Mutex::default(),
            link_downloads_per_minute: LINK_DOWNLOADS_PER_MINUTE,
            password_checks: Semaphore::new(cores.clamp(1, 16)),
        }
    }
}

impl AbuseLimits {
    /// Recent sign-in failures of `source` (0 when they are older than the window).
    pub(crate) fn source_failures(&self, source: IpAddr, now: UnixTime) -> i64 {
        let map = self
            .sign_in_failures
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        match map.get(&source_key(source)) {
            Some(f) if now.0 - f.last.0 < FAILURE_WINDOW_SECONDS => f.count,
            _ => 0,
        }
    }

    /// Seconds `source` must still wait before it may try again, if any.
    pub(crate) fn source_wait(&self, source: IpAddr, now: UnixTime) -> Option<i64> {
        let map = self
            .sign_in_failures
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        let f = map.get(&source_key(source))?;
        let until = f.last.0 + backoff_seconds(f.count)?;
        (until > now.0).then_some(until - now.0)
    }

    pub(crate) fn record_source_failure(&self, source: IpAddr, now: UnixTime) {
        let mut map = self
            .sign_in_failures
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        let key = source_key(source);
        if !map.contains_key(&key) {
            make_room(
                &mut map,
                |f| f.last.0,
                |f| now.0 - f.last.0 >= FAILURE_WINDOW_SECONDS,
            );
        }
        let entry = map.entry(key).or_insert(Failures {
            count: 0,
            last: now,
        });
        if now.0 - entry.last.0 >= FAILURE_WINDOW_SECONDS {
            entry.count = 0;
        }
        entry.count += 1;
        entry.last = now;
    }

    /// A source that signed in with the right password starts afresh.
    pub(crate) fn forget_source(&self, source: IpAddr) {
        self.sign_in_failures
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&source_key(source));
    }

    /// Counts one profile download of `link`; `Err(seconds to wait)` when the link has handed out its share of
    /// this minute.
    pub(crate) fn take_link_download(
        &self,
        link: EnrollmentLinkId,
        now: UnixTime,
    ) -> Result<(), i64> {
        if self.link_downloads_per_minute == 0 {
            return Ok(());
        }
        let mut map = self
            .link_downloads
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        if !map.contains_key(&link) {
            make_room(&mut map, |w| w.started.0, |w| now.0 - w.started.0 >= 60);
        }
        let window = map.entry(link).or_insert(Window {
            started: now,
            count: 0,
        });
        if now.0 - window.started.0 >= 60 {
            *window = Window {
                started: now,
                count: 0,
            };
        }
        if window.count >= self.link_downloads_per_minute {
            return Err((window.started.0 + 60 - now.0).max(1));
        }
        window.count += 1;
        Ok(())
    }
}

impl crate::Orchard {
    /// Profile downloads one enrollment link hands out per minute (0: no limit, e.g. for benchmarks that
    /// enroll thousands of simulated iPads through one link).
    pub fn with_link_download_limit(mut self, per_minute: u32) -> Self {
        self.abuse.link_downloads_per_minute = per_minute;
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_starts_after_the_free_failures_doubles_and_is_capped() {
        assert_eq!(backoff_seconds(FREE_FAILURES - 1), None);
        assert_eq!(backoff_seconds(FREE_FAILURES), Some(60));
        assert_eq!(backoff_seconds(FREE_FAILURES + 1), Some(120));
        assert_eq!(backoff_seconds(FREE_FAILURES + 3), Some(480));
        assert_eq!(backoff_seconds(FREE_FAILURES + 4), Some(900));
        assert_eq!(backoff_seconds(i64::MAX), Some(BACKOFF_MAX_SECONDS));
    }

    #[test]
    fn a_source_waits_after_its_free_failures_and_is_forgotten_after_the_window() {
        let limits = AbuseLimits::default();
        let ip: IpAddr = "192.0.2.7".parse().unwrap_or(IpAddr::from([0, 0, 0, 0]));
        let t0 = UnixTime(1_000_000);
        for _ in 0..FREE_FAILURES {
            assert_eq!(limits.source_wait(ip, t0), None);
            limits.record_source_failure(ip, t0);
        }
        assert_eq!(limits.source_wait(ip, t0), Some(60));
        assert_eq!(limits.source_wait(ip, UnixTime(t0.0 + 60)), None);
        assert_eq!(
            limits.source_failures(ip, UnixTime(t0.0 + FAILURE_WINDOW_SECONDS)),
            0
        );
        limits.forget_source(ip);
        assert_eq!(limits.source_failures(ip, t0), 0);
    }

    #[test]
    fn ipv6_sources_count_by_their_64_prefix() {
        let limits = AbuseLimits::default();
        let a: IpAddr = "2001:db8:1:2::1"
            .parse()
            .unwrap_or(IpAddr::from([0, 0, 0, 0]));
        let b: IpAddr = "2001:db8:1:2:ffff::9"
            .parse()
            .unwrap_or(IpAddr::from([0, 0, 0, 0]));
        let t0 = UnixTime(5);
        limits.record_source_failure(a, t0);
        assert_eq!(limits.source_failures(b, t0), 1);
    }

    #[test]
    fn a_link_hands_out_its_share_per_minute() {
        let limits = AbuseLimits::default();
        let link = EnrollmentLinkId::new();
        let t0 = UnixTime(100);
        for _ in 0..LINK_DOWNLOADS_PER_MINUTE {
            assert!(limits.take_link_download(link, t0).is_ok());
        }
        assert_eq!(limits.take_link_download(link, UnixTime(110)), Err(50));
        assert!(limits.take_link_download(link, UnixTime(160)).is_ok());
        let unlimited = AbuseLimits {
            link_downloads_per_minute: 0,
            ..AbuseLimits::default()
        };
        for _ in 0..=LINK_DOWNLOADS_PER_MINUTE {
            assert!(unlimited.take_link_download(link, t0).is_ok());
        }
    }
}
