//! Evaluation: the LFW 1:1 verification protocol, open-set 1:N identification split by
//! image quality, and their reports.
//!
//! Off the streaming path. [`protocol`] holds the pure statistics (10-fold accuracy with
//! the threshold chosen on the other nine folds, TAR at a FAR, ROC points) computed the
//! same way as `shared/bench/opencv_reference.py`, so both tools' numbers compare
//! directly; [`pairs`] runs the engine over the images; [`identify`] runs the 1:N protocol
//! on the images and their low-quality copies ([`degrade`]); [`roc`] and [`det`] draw the
//! curves as SVG.

pub mod degrade;
pub mod det;
pub mod identify;
pub mod pairs;
pub mod protocol;
pub mod roc;
