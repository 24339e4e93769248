//! Adaptive push pacing: the dispatcher wakes devices as fast as this node can serve them, not at a fixed rate.
//!
//! A push costs APNs nothing, but every push brings a device session (check-in, commands, reports) to the
//! nodes. Waking 10,000 iPads at a fixed 2,000/s on a 2-core server made 10,000 TLS sessions arrive at once: the
//! server held them all (349 MiB) and finished at 140 results/s, while a rate of 400/s finished in 42 s at
//! 90 MiB (docs/benchmarks.md, S1). The right rate depends on the machine, the database and the fleet, so the
//! dispatcher finds it: each node watches its own device requests (how many are in flight, how long they take)
//! and adjusts its push rate by additive-increase/multiplicative-decrease, as TCP finds a path's capacity.
//!
//! - **Congested** (more device requests in flight than `max_in_flight`, or their smoothed latency above
//!   `target_latency`): the rate is cut to 70 %, at most once per adjustment period, never below `min_rate`.
//! - **Not congested and pushes were waiting** (the budget ran out, so the rate was the limit): the rate grows by
//!   a quarter, at least `min_rate`, up to the configured fixed rate, which stays the upper bound.
//! - **Idle** (no backlog): the rate stays, so the next push-all starts where the last one ended.
//!
//! Every node decides for itself from its own requests: with N nodes behind a load balancer each sees about
//! 1/N of the sessions its pushes and the others' bring, and their rates settle together. The controller is
//! plain arithmetic over the signals handed to it, so tests drive it with a synthetic clock.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Multiplicative decrease on congestion.
const DECREASE: f64 = 0.7;
/// Multiplicative increase per period while pushes wait and the node keeps up.
const INCREASE: f64 = 1.25;
/// Weight of a new latency sample in the smoothed latency (about the last 8 requests).
const LATENCY_WEIGHT: f64 = 0.125;

/// How the adaptive pacer is set up (from the `push` settings).
#[derive(Debug, Clone, PartialEq)]
pub struct PacingSettings {
    /// The fixed rate: the upper bound (pushes per second).
    pub max_rate: f64,
    /// Never slower than this (pushes per second), so a busy node still wakes devices.
    pub min_rate: f64,
    /// The rate a node starts with.
    pub initial_rate: f64,
    /// More device requests in flight on this node than this is congestion.
    pub max_in_flight: u64,
    /// A smoothed device-request latency above this is congestion.
    pub target_latency: Duration,
    /// How often the rate may change.
    pub period: Duration,
}

impl PacingSettings {
    /// Settings for a fixed rate `max_rate`, with defaults for the rest.
    pub fn for_max_rate(max_rate: f64) -> Self {
        let max_rate = max_rate.max(1.0);
        let min_rate = (max_rate / 100.0).clamp(1.0, 20.0);
        Self {
            max_rate,
            min_rate,
            initial_rate: (max_rate / 10.0).max(min_rate),
            max_in_flight: 64,
            target_latency: Duration::from_millis(500),
            period: Duration::from_millis(250),
        }
    }
}

/// What the pacer sees of this node's device traffic when it adjusts.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ServingSignal {
    /// Device requests being served now.
    pub in_flight: u64,
    /// Smoothed latency of the device requests finished lately; None when none finished since the last look.
    pub latency: Option<Duration>,
}

/// The AIMD controller: the current rate and when it last changed.
#[derive(Debug, Clone)]
pub struct AdaptivePacer {
    settings: PacingSettings,
    rate: f64,
    last_change: Option<Instant>,
}

impl AdaptivePacer {
    pub fn new(settings: PacingSettings) -> Self {
        let rate = settings
            .initial_rate
            .clamp(settings.min_rate, settings.max_rate);
        Self {
            settings,
            rate,
            last_change: None,
        }
    }

    /// Pushes per second now.
    pub fn rate(&self) -> f64 {
        self.rate
    }

    pub fn settings(&self) -> &PacingSettings {
        &self.settings
    }

    /// Whether the signal says the node is not keeping up.
    pub fn congested(&self, signal: &ServingSignal) -> bool {
        signal.in_flight > self.settings.max_in_flight
            || signal
                .latency
                .is_some_and(|latency| latency > self.settings.target_latency)
    }

    /// Whether the rate may change at `now` (a period has passed since the last change).
    pub fn due(&self, now: Instant) -> bool {
        self.last_change
            .is_none_or(|t| now.duration_since(t) >= self.settings.period)
    }

    /// Adjusts the rate at `now` from `signal`; `backlog` says pushes were waiting for budget since the last
    /// adjustment. Changes at most once per period. Returns the rate.
    pub fn adjust(&mut self, now: Instant, signal: ServingSignal, backlog: bool) -> f64 {
        if !self.due(now) {
            return self.rate;
        }
        let s = &self.settings;
        let next = if self.congested(&signal) {
            (self.rate * DECREASE).max(s.min_rate)
        } else if backlog {
            (self.rate * INCREASE)
                .max(self.rate + s.min_rate)
                .min(s.max_rate)
        } else {
            self.rate
        };
        self.rate = next;
        self.last_change = Some(now);
        self.rate
    }
}

/// This node's device traffic, fed by the HTTP layer (each device request holds a [`DeviceRequestGuard`])
/// and read by the dispatcher. Lock-free: the guard is on every check-in.
#[derive(Debug, Default)]
pub struct ServingLoad {
    in_flight: AtomicU64,
    /// Smoothed latency in microseconds (0: none measured yet).
    latency_micros: AtomicU64,
    /// Requests finished since the dispatcher last looked.
    finished: AtomicU64,
    /// Requests served since the node started (for `/metrics`).
    served: AtomicU64,
}

impl ServingLoad {
    /// A device request that arrived at `arrived` is counted from now on; dropping the guard ends it and
    /// records its latency since `arrived`. Only requests whose device signature verified are counted, so
    /// requests anyone can send (unsigned, badly signed) can neither push the rate to its floor nor hide
    /// congestion behind fast refusals.
    pub fn start(self: &Arc<Self>, arrived: Instant) -> DeviceRequestGuard {
        self.in_flight.fetch_add(1, Ordering::Relaxed);
        DeviceRequestGuard {
            load: self.clone(),
            started: arrived,
        }
    }

    fn finish(&self, took: Duration) {
        self.in_flight.fetch_sub(1, Ordering::Relaxed);
        self.finished.fetch_add(1, Ordering::Relaxed);
        self.served.fetch_add(1, Ordering::Relaxed);
        let sample = u64::try_from(took.as_micros()).unwrap_or(u64::MAX);
        // A lost update between two finishing requests only drops one sample from the average.
        let old = self.latency_micros.load(Ordering::Relaxed);
        let new = if old == 0 {
            sample
        } else {
            (old as f64 * (1.0 - LATENCY_WEIGHT) + sample as f64 * LATENCY_WEIGHT) as u64
        };
        self.latency_micros.store(new.max(1), Ordering::Relaxed);
    }

    /// Device requests being served now.
    pub fn in_flight(&self) -> u64 {
        self.in_flight.load(Ordering::Relaxed)
    }

    /// Device requests served (finished) since the node started.
    pub fn served(&self) -> u64 {
        self.served.load(Ordering::Relaxed)
    }

    /// The signal for the pacer; the smoothed latency only if requests finished since the last call (an old
    /// average says nothing about now).
    pub fn signal(&self) -> ServingSignal {
        let finished = self.finished.swap(0, Ordering::Relaxed);
        let micros = self.latency_micros.load(Ordering::Relaxed);
        ServingSignal {
            in_flight: self.in_flight(),
            latency: (finished > 0 && micros > 0).then(|| Duration::from_micros(micros)),
        }
    }
}

/// Held for the length of one device request (see [`ServingLoad::start`]).
#[derive(Debug)]
pub struct DeviceRequestGuard {
    load: Arc<ServingLoad>,
    started: Instant,
}

impl Drop for DeviceRequestGuard {
    fn drop(&mut self) {
        self.load.finish(self.started.elapsed());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings() -> PacingSettings {
        PacingSettings {
            max_rate: 2_000.0,
            min_rate: 20.0,
            initial_rate: 200.0,
            max_in_flight: 64,
            target_latency: Duration::from_millis(500),
            period: Duration::from_millis(250),
        }
    }

    fn calm() -> ServingSignal {
        ServingSignal {
            in_flight: 3,
            latency: Some(Duration::from_millis(20)),
        }
    }

    #[test]
    fn grows_to_the_fixed_rate_while_pushes_wait_and_the_node_keeps_up() {
        let mut pacer = AdaptivePacer::new(settings());
        let t0 = Instant::now();
        let mut rates = Vec::new();
        for step in 0..40 {
            rates.push(pacer.adjust(t0 + Duration::from_millis(250 * step), calm(), true));
        }
        assert!(rates.windows(2).all(|w| w[1] >= w[0]), "{rates:?}");
        assert_eq!(pacer.rate(), 2_000.0, "capped by the fixed rate: {rates:?}");
        // From 200/s to 2,000/s in about 11 periods (under 3 s).
        let reached = rates.iter().position(|r| *r >= 2_000.0).unwrap();
        assert!(reached <= 12, "{rates:?}");
    }

    #[test]
    fn congestion_cuts_the_rate_down_to_the_floor_and_no_further() {
        let mut pacer = AdaptivePacer::new(PacingSettings {
            initial_rate: 2_000.0,
            ..settings()
        });
        let t0 = Instant::now();
        let flooded = ServingSignal {
            in_flight: 900,
            latency: Some(Duration::from_millis(80)),
        };
        let first = pacer.adjust(t0, flooded, true);
        assert_eq!(first, 1_400.0);
        for step in 1..30 {
            pacer.adjust(t0 + Duration::from_millis(250 * step), flooded, true);
        }
        assert_eq!(pacer.rate(), 20.0);
        // Slow answers are congestion too, with few requests in flight.
        let mut pacer = AdaptivePacer::new(settings());
        let slow = ServingSignal {
            in_flight: 2,
            latency: Some(Duration::from_millis(1_500)),
        };
        assert_eq!(pacer.adjust(t0, slow, true), 140.0);
    }

    #[test]
    fn changes_at_most_once_per_period_and_holds_when_idle() {
        let mut pacer = AdaptivePacer::new(settings());
        let t0 = Instant::now();
        assert_eq!(pacer.adjust(t0, calm(), true), 250.0);
        // Within the period: unchanged whatever the signal.
        let flooded = ServingSignal {
            in_flight: 900,
            latency: None,
        };
        assert_eq!(
            pacer.adjust(t0 + Duration::from_millis(100), flooded, true),
            250.0
        );
        // No backlog and no congestion: the rate is kept for the next push-all.
        assert_eq!(
            pacer.adjust(t0 + Duration::from_millis(300), calm(), false),
            250.0
        );
        // No request finished since the last look: latency unknown, in-flight alone decides.
        let quiet = ServingSignal {
            in_flight: 0,
            latency: None,
        };
        assert!(!pacer.congested(&quiet));
    }

    #[test]
    fn finds_the_rate_a_node_can_serve() {
        // A node that serves 400 sessions a second: above that, requests queue and latency grows with the queue
        // (a simple fluid model, 0.25 s per step). The pacer must settle near 400/s, not at 2,000/s.
        let capacity = 400.0;
        let mut pacer = AdaptivePacer::new(settings());
        let t0 = Instant::now();
        let mut queue: f64 = 0.0;
        let mut late_rates = Vec::new();
        for step in 0..400u64 {
            let rate = pacer.rate();
            queue = (queue + (rate - capacity) * 0.25).max(0.0);
            let signal = ServingSignal {
                in_flight: queue as u64 + 4,
                latency: Some(Duration::from_secs_f64(0.02 + queue / capacity)),
            };
            pacer.adjust(t0 + Duration::from_millis(250 * step), signal, true);
            if step >= 200 {
                late_rates.push(pacer.rate());
            }
        }
        let mean = late_rates.iter().sum::<f64>() / late_rates.len() as f64;
        assert!(
            (250.0..=560.0).contains(&mean),
            "settled around {mean:.0}/s: {late_rates:?}"
        );
        assert!(late_rates.iter().all(|r| *r < 1_000.0), "{late_rates:?}");
    }

    #[test]
    fn the_serving_load_counts_requests_and_smooths_latency() {
        let load = Arc::new(ServingLoad::default());
        assert_eq!(load.signal().latency, None);
        let arrived = Instant::now();
        let a = load.start(arrived - Duration::from_millis(40));
        let b = load.start(arrived);
        assert_eq!(load.in_flight(), 2);
        drop(a);
        let signal = load.signal();
        assert_eq!(signal.in_flight, 1);
        // Latency counts from arrival (signature verification included), not from when counting began.
        assert!(signal
            .latency
            .is_some_and(|l| l >= Duration::from_millis(40)));
        assert_eq!(load.served(), 1);
        // Nothing finished since: latency unknown.
        assert_eq!(load.signal().latency, None);
        drop(b);
        assert_eq!(load.in_flight(), 0);
        assert_eq!(load.served(), 2);
    }
}
