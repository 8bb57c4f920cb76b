//! The one range check of configuration validation: every section's `validate` reports
//! a value outside its range the same way, `name = value must be within [lo, hi]`.
//!
//! It imports nothing of the crate; each section calls it from its own `validate`, and
//! `config/` collects what they report.

use std::fmt::Display;
use std::ops::RangeInclusive;

/// Report `name = value must be within [lo, hi]` unless `value` is in `range`.
pub fn within<T: PartialOrd + Display>(
    problems: &mut Vec<String>,
    name: &str,
    value: T,
    range: RangeInclusive<T>,
) {
    within_note(problems, name, value, range, "");
}

/// As [`within`], with `note` after the range (what the value means, a unit).
pub fn within_note<T: PartialOrd + Display>(
    problems: &mut Vec<String>,
    name: &str,
    value: T,
    range: RangeInclusive<T>,
    note: &str,
) {
    if !range.contains(&value) {
        let (lo, hi) = range.into_inner();
        let note = if note.is_empty() {
            String::new()
        } else {
            format!(" {note}")
        };
        problems.push(format!(
            "{name} = {value} must be within [{lo}, {hi}]{note}"
        ));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_value_outside_its_range_is_named_with_the_range() {
        let mut problems = Vec::new();
        within(&mut problems, "detect.max_side", 16u32, 32..=8192);
        within(&mut problems, "detect.score_threshold", 0.5f32, 0.0..=1.0);
        within(&mut problems, "detect.score_threshold", 1.5f32, 0.0..=1.0);
        within_note(
            &mut problems,
            "x.sweep_every",
            2000u32,
            0..=1000,
            "(0: no sweep)",
        );
        within(&mut problems, "edge", 1000u32, 0..=1000);
        assert_eq!(
            problems,
            [
                "detect.max_side = 16 must be within [32, 8192]",
                "detect.score_threshold = 1.5 must be within [0, 1]",
                "x.sweep_every = 2000 must be within [0, 1000] (0: no sweep)",
            ]
        );
    }
}
