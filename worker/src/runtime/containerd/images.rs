//! The image records the worker's image GC reads and removes: what is
//! stored (with its blobs, whether a container uses it and when one last
//! started from it), and what a container can start from.

use super::*;

impl ContainerdRuntime {
    pub(super) async fn stored_image_records(&self) -> Result<Vec<StoredImage>, RuntimeError> {
        let images = self.list_images().await?;
        let in_use: std::collections::HashSet<String> = self
            .list_containers()
            .await?
            .into_iter()
            .map(|c| Puller::record_name(&c.image))
            .collect();
        let last_used = self.last_used.lock().expect("last-used lock").clone();
        let mut out = Vec::new();
        for image in images {
            let Some(target) = &image.target else {
                continue;
            };
            let blobs =
                self.puller
                    .blobs_of(target)
                    .await
                    .map_err(|source| RuntimeError::Pull {
                        image: image.name.clone(),
                        source,
                    })?;
            let pulled = image
                .updated_at
                .as_ref()
                .or(image.created_at.as_ref())
                .map_or(0, ts_ms);
            out.push(StoredImage {
                in_use: in_use.contains(&image.name),
                last_used_unix_ms: last_used.get(&image.name).copied().unwrap_or(pulled),
                reference: image.name,
                blobs,
            });
        }
        Ok(out)
    }

    pub(super) async fn remove_image_record(&self, reference: &str) -> Result<(), RuntimeError> {
        match ImagesClient::new(self.conn.channel.clone())
            .delete(self.conn.req(DeleteImageRequest {
                name: reference.to_owned(),
                // Wait for containerd's GC: the space is free on return.
                sync: true,
                target: None,
            }))
            .await
        {
            Ok(_) => {}
            Err(s) if s.code() == Code::NotFound => {}
            Err(s) => return Err(containerd_err("Images.Delete", reference)(s)),
        }
        self.last_used
            .lock()
            .expect("last-used lock")
            .remove(reference);
        self.puller.forget(&Puller::record_name(reference));
        Ok(())
    }

    pub(super) async fn held_images(&self) -> Result<Vec<HeldImage>, RuntimeError> {
        let images = self.list_images().await?;
        // The puller creates an image record only once every layer is
        // unpacked, so a listed image is one a container can start from.
        Ok(images
            .into_iter()
            .filter_map(|image| {
                Some(HeldImage {
                    digest: image.target?.digest,
                    reference: image.name,
                })
            })
            .collect())
    }
}
