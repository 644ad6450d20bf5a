//! Image garbage collection under a host's disk budget
//! (`SKIFF_IMAGE_DISK_BUDGET_BYTES`): which images to remove ([`to_remove`],
//! pure, table-tested) and the loop that measures and removes
//! ([`collect`], every `SKIFF_IMAGE_GC_INTERVAL_S`).
//!
//! An image's size is its blobs in containerd's content store (manifest,
//! config, compressed layers), each blob counted once however many images
//! share it; unpacked snapshots take about as much again. Only images no
//! container on the host uses, idle for at least `SKIFF_IMAGE_MIN_IDLE_S`,
//! are removed, least recently used first, and only until the images fit.

use crate::runtime::{Runtime, StoredImage};
use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// The bytes `images` take, each blob once.
pub fn stored_bytes<'a>(images: impl IntoIterator<Item = &'a StoredImage>) -> u64 {
    let blobs: BTreeMap<&str, u64> = images
        .into_iter()
        .flat_map(|i| i.blobs.iter().map(|(d, s)| (d.as_str(), *s)))
        .collect();
    blobs.values().sum()
}

/// The images to remove so the rest fit in `budget`: unused ones idle for
/// `min_idle_ms` or more, least recently used first, no more than needed.
pub fn to_remove(
    images: &[StoredImage],
    budget: u64,
    now_ms: i64,
    min_idle_ms: i64,
) -> Vec<String> {
    let mut kept: Vec<&StoredImage> = images.iter().collect();
    let mut candidates: Vec<&StoredImage> = images
        .iter()
        .filter(|i| !i.in_use && now_ms - i.last_used_unix_ms >= min_idle_ms)
        .collect();
    candidates.sort_by_key(|i| (i.last_used_unix_ms, i.reference.clone()));
    let mut removed = Vec::new();
    for candidate in candidates {
        if stored_bytes(kept.iter().copied()) <= budget {
            break;
        }
        kept.retain(|i| i.reference != candidate.reference);
        removed.push(candidate.reference.clone());
    }
    removed
}

/// Removes images past the budget every `interval` until `cancel`.
pub async fn collect<R: Runtime>(
    runtime: Arc<R>,
    budget: u64,
    interval: Duration,
    min_idle: Duration,
    cancel: CancellationToken,
) {
    tracing::info!(
        budget,
        ?interval,
        ?min_idle,
        "image GC: keeping images under the disk budget"
    );
    loop {
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = tokio::time::sleep(interval) => {}
        }
        let images = match runtime.stored_images().await {
            Ok(images) => images,
            Err(err) => {
                tracing::warn!(error = %err, "image GC: listing images failed");
                continue;
            }
        };
        let now = chrono::Utc::now().timestamp_millis();
        let remove = to_remove(&images, budget, now, min_idle.as_millis() as i64);
        tracing::debug!(
            images = images.len(),
            bytes = stored_bytes(&images),
            budget,
            remove = remove.len(),
            "image GC pass"
        );
        if remove.is_empty() {
            continue;
        }
        let before = stored_bytes(&images);
        let gone: HashSet<&str> = remove.iter().map(String::as_str).collect();
        let after = stored_bytes(
            images
                .iter()
                .filter(|i| !gone.contains(i.reference.as_str())),
        );
        for reference in &remove {
            match runtime.remove_image(reference).await {
                Ok(()) => {
                    tracing::info!(image = %reference, budget, "image GC: removed an unused image")
                }
                Err(err) => {
                    tracing::warn!(image = %reference, error = %err, "image GC: removing failed")
                }
            }
        }
        tracing::info!(
            before,
            after,
            budget,
            removed = remove.len(),
            "image GC: back under the disk budget"
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn image(name: &str, blobs: &[(&str, u64)], in_use: bool, last_used: i64) -> StoredImage {
        StoredImage {
            reference: name.to_owned(),
            blobs: blobs.iter().map(|(d, s)| (d.to_string(), *s)).collect(),
            in_use,
            last_used_unix_ms: last_used,
        }
    }

    #[test]
    fn the_least_recently_used_idle_unused_images_go_until_the_rest_fit() {
        let base = ("base", 2);
        let a = image("a", &[base, ("a", 4)], false, 100);
        let b = image("b", &[base, ("b", 4)], false, 200);
        let c = image("c", &[base, ("c", 4)], true, 50); // in use
        let d = image("d", &[base, ("d", 4)], false, 990); // used just now
        assert_eq!(stored_bytes([&a, &b, &c]), 14, "the shared base once");
        let now = 1000;
        let idle = 100;
        // (images, budget, removed)
        let cases: Vec<(Vec<StoredImage>, u64, Vec<&str>)> = vec![
            (vec![a.clone(), b.clone(), c.clone()], 20, vec![]), // fits
            (vec![a.clone(), b.clone(), c.clone()], 12, vec!["a"]), // the older one
            (vec![a.clone(), b.clone(), c.clone()], 6, vec!["a", "b"]), // c is in use
            (vec![a.clone(), b.clone(), c.clone()], 0, vec!["a", "b"]), // never c
            (vec![d.clone(), a.clone()], 6, vec!["a"]),          // d is not idle long enough
            (vec![d.clone()], 0, vec![]),
            (vec![], 0, vec![]),
        ];
        for (images, budget, want) in cases {
            assert_eq!(
                to_remove(&images, budget, now, idle),
                want,
                "budget {budget}"
            );
        }
    }
}
