//! Putting one camera's frames back in order after the parallel stages.
//!
//! The pump numbers the frames of each camera **run** (one start of the camera on this
//! node) from 0; several detect workers may finish them out of order, and the decide
//! stage tracks them in order. A camera stopped and started again (a lease handed over
//! and taken back) counts from 0 again under a newer run number: its first frame is
//! tracked at once rather than held behind the old run's count.

use std::collections::BTreeMap;

/// Frames held for reordering before a missing one is given up on.
pub(super) const MAX_HELD: usize = 32;

/// One camera's frames, released in (run, sequence) order.
pub(super) struct Sequencer<T> {
    /// The (run, sequence number) released next.
    next: (u64, u64),
    held: BTreeMap<(u64, u64), T>,
}

impl<T> Sequencer<T> {
    pub(super) fn new() -> Sequencer<T> {
        Sequencer {
            next: (0, 0),
            held: BTreeMap::new(),
        }
    }

    /// Hold frame `seq` of run `run`. A frame of a run older than the one being released
    /// (the last frames of a stopped run, arriving after the next run began) is handed
    /// back for the caller to drop.
    pub(super) fn push(&mut self, run: u64, seq: u64, item: T) -> Option<T> {
        if run < self.next.0 {
            return Some(item);
        }
        self.held.insert((run, seq), item);
        None
    }

    /// The next frame in order, if it is here: with `force`, or past [`MAX_HELD`] frames
    /// held, the earliest held whatever the gap.
    pub(super) fn pop(&mut self, force: bool) -> Option<T> {
        let (&key, _) = self.held.first_key_value()?;
        if key.0 > self.next.0 {
            // nothing of the older run is held any more: the newer one counts from 0
            self.next = (key.0, 0);
        }
        if key == self.next || force || self.held.len() > MAX_HELD {
            self.next = (key.0, key.1 + 1);
            return self.held.remove(&key);
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn drain(s: &mut Sequencer<u64>) -> Vec<u64> {
        std::iter::from_fn(|| s.pop(false)).collect()
    }

    #[test]
    fn frames_come_out_in_order() {
        let mut s = Sequencer::new();
        for seq in [2, 0, 3] {
            s.push(7, seq, seq);
        }
        assert_eq!(drain(&mut s), vec![0], "1 is missing: 2 and 3 wait");
        s.push(7, 1, 1);
        assert_eq!(drain(&mut s), vec![1, 2, 3]);
    }

    #[test]
    fn a_camera_started_again_is_not_held_behind_its_old_count() {
        let mut s = Sequencer::new();
        for seq in 0..40 {
            s.push(1, seq, seq);
            assert_eq!(s.pop(false), Some(seq));
        }
        // stopped and started again: its frames count from 0 under a newer run
        s.push(2, 1, 101);
        assert_eq!(
            s.pop(false),
            None,
            "frame 0 of the new run is still on its way"
        );
        s.push(2, 0, 100);
        assert_eq!(drain(&mut s), vec![100, 101]);
        // the old run's last frame, arriving late, is given back rather than tracked
        // after newer frames
        assert_eq!(s.push(1, 40, 40), Some(40));
        assert_eq!(s.pop(false), None);
    }

    #[test]
    fn a_lost_frame_is_given_up_after_max_held() {
        let mut s = Sequencer::new();
        for seq in 1..=(MAX_HELD as u64 + 1) {
            s.push(0, seq, seq);
        }
        assert_eq!(s.pop(false), Some(1), "frame 0 given up on");
        assert_eq!(drain(&mut s).len(), MAX_HELD);
    }
}
