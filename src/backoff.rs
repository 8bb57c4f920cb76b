//! Exponential backoff with jitter, shared by camera reconnects and event deliveries.

use std::time::Duration;

use rand::Rng;

/// The delay before the next try after `attempts` failures in a row: `initial · 2^attempts`
/// capped at `max`, times a random factor in [0.5, 1.5) so that many cameras behind one
/// switch, or many queued events, do not retry in lockstep.
pub fn jittered(initial_ms: u64, max_ms: u64, attempts: u32) -> Duration {
    let base = initial_ms
        .saturating_mul(1u64 << attempts.min(30))
        .min(max_ms);
    let factor = rand::thread_rng().gen_range(0.5..1.5);
    Duration::from_millis((base as f64 * factor) as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn doubles_per_attempt_within_the_jitter_and_stops_at_the_cap() {
        for attempts in 0..8u32 {
            let base = (100u64 << attempts).min(5_000) as f64;
            for _ in 0..200 {
                let d = jittered(100, 5_000, attempts).as_millis() as f64;
                assert!(
                    d >= 0.5 * base - 1.0 && d < 1.5 * base,
                    "attempt {attempts}: {d} ms"
                );
            }
        }
        // no overflow however many failures
        assert!(jittered(100, 5_000, u32::MAX) < Duration::from_millis(7_500));
        assert!(jittered(u64::MAX, u64::MAX, 63) > Duration::ZERO);
    }
}
