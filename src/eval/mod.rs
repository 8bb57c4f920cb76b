//! Evaluation: the LFW 1:1 verification protocol and its report.
//!
//! Off the streaming path. [`protocol`] holds the pure statistics (10-fold accuracy with
//! the threshold chosen on the other nine folds, TAR at a FAR, ROC points) computed the
//! same way as `shared/bench/opencv_reference.py`, so both tools' numbers compare
//! directly; [`pairs`] runs the engine over the images; [`roc`] draws the curve as SVG.

pub mod identify;
pub mod pairs;
pub mod protocol;
pub mod roc;
