//! Helpers the native backends share: the batch-shape check, the per-shape cache of
//! compiled models, and finding a runtime library in the set-up's Python environment.
//! Declared once in `inference/mod.rs` with `allow(dead_code)` for a build without any
//! backend feature.

use super::InferenceError;

/// The per-shape cache: built with the backends that compile per shape (OpenVINO, LiteRT,
/// tract), not with ONNX Runtime.
#[cfg(any(feature = "openvino", feature = "litert", feature = "tract"))]
pub(crate) mod shape_cache {
    /// Per-session cache of things built for one concrete input shape (compiled models,
    /// optimised plans), least recently used dropped past `capacity`. Backends that run
    /// fastest on static shapes use it so repeated image sizes and batch sizes are free.
    pub(crate) struct ShapeCache<T> {
        entries: Vec<(Vec<usize>, T, u64)>,
        capacity: usize,
        tick: u64,
    }

    impl<T> ShapeCache<T> {
        pub(crate) fn new(capacity: usize) -> Self {
            ShapeCache {
                entries: Vec::new(),
                capacity: capacity.max(1),
                tick: 0,
            }
        }

        /// The entry for `shape`, built by `make` on a miss.
        pub(crate) fn get_or_try_insert<E>(
            &mut self,
            shape: &[usize],
            make: impl FnOnce() -> Result<T, E>,
        ) -> Result<&mut T, E> {
            self.tick += 1;
            let index = match self.entries.iter().position(|(s, _, _)| s == shape) {
                Some(i) => i,
                None => {
                    let value = make()?;
                    if self.entries.len() >= self.capacity {
                        let oldest = (0..self.entries.len())
                            .min_by_key(|&i| self.entries[i].2)
                            .unwrap_or(0);
                        self.entries.swap_remove(oldest);
                    }
                    self.entries.push((shape.to_vec(), value, 0));
                    self.entries.len() - 1
                }
            };
            self.entries[index].2 = self.tick;
            Ok(&mut self.entries[index].1)
        }

        #[cfg(test)]
        pub(crate) fn len(&self) -> usize {
            self.entries.len()
        }
    }

    #[cfg(test)]
    mod tests {
        use super::*;

        #[test]
        fn shape_cache_builds_once_and_evicts_the_least_recently_used() {
            let mut cache = ShapeCache::new(2);
            let builds = std::cell::Cell::new(0);
            let get = |cache: &mut ShapeCache<usize>, shape: &[usize]| {
                *cache
                    .get_or_try_insert::<()>(shape, || {
                        builds.set(builds.get() + 1);
                        Ok(shape[0])
                    })
                    .unwrap()
            };
            assert_eq!(get(&mut cache, &[1]), 1);
            assert_eq!(get(&mut cache, &[2]), 2);
            assert_eq!(get(&mut cache, &[1]), 1); // hit; [2] is now the oldest
            assert_eq!(get(&mut cache, &[3]), 3); // evicts [2]
            assert_eq!(cache.len(), 2);
            assert_eq!(get(&mut cache, &[1]), 1); // still cached
            assert_eq!(get(&mut cache, &[2]), 2); // rebuilt
            assert_eq!(builds.get(), 4);
            let failed = cache.get_or_try_insert(&[9], || Err("no"));
            assert_eq!(failed.err(), Some("no"));
            assert_eq!(cache.len(), 2);
        }
    }
}

/// Reject anything but a non-empty `N×C×H×W` batch whose data length matches its shape.
pub(crate) fn check_batch(
    backend: &'static str,
    model: &str,
    shape: &[usize],
    data: &[f32],
) -> Result<(), InferenceError> {
    if shape.len() != 4 || shape[0] == 0 || shape.iter().product::<usize>() != data.len() {
        return Err(InferenceError::Shape {
            backend,
            model: model.to_string(),
            got: shape.to_vec(),
            expected: format!("N×C×H×W with N ≥ 1 holding the {} values given", data.len()),
        });
    }
    Ok(())
}

/// Find `<prefix>*` in `site-packages/<subdir>` of the set-up's `.cache/venv`, looked for
/// under the working directory and the executable's ancestors (so both `cargo test` and
/// `target/release/facestream` find it). The highest-sorting match wins.
#[cfg(any(feature = "openvino", feature = "onnxruntime"))]
pub(crate) fn find_in_venv(subdir: &str, prefix: &str) -> Option<std::path::PathBuf> {
    use std::path::{Path, PathBuf};
    let mut roots: Vec<PathBuf> = vec![PathBuf::from(".")];
    if let Ok(exe) = std::env::current_exe() {
        roots.extend(exe.ancestors().skip(1).take(4).map(Path::to_path_buf));
    }
    roots.iter().find_map(|root| {
        let lib = root.join(".cache/venv/lib");
        std::fs::read_dir(lib).ok()?.flatten().find_map(|python| {
            let dir = python.path().join("site-packages").join(subdir);
            let mut found: Vec<PathBuf> = std::fs::read_dir(dir)
                .ok()?
                .flatten()
                .map(|e| e.path())
                .filter(|p| {
                    p.file_name()
                        .and_then(|n| n.to_str())
                        .is_some_and(|n| n.starts_with(prefix))
                })
                .collect();
            found.sort();
            let path = found.pop()?;
            Some(std::fs::canonicalize(&path).unwrap_or(path))
        })
    })
}
