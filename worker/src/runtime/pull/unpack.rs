//! A pull's second half: the layers fetched from the registry into the
//! content store (a few at once, each counted into the pull's progress),
//! and each unpacked onto its parent's snapshot under its chain ID.

use super::*;

impl Puller {
    pub(super) async fn store_and_unpack(
        &self,
        client: &RegistryClient,
        parsed: &Reference,
        name: &str,
        lease: &str,
        r: &Resolved,
        private: bool,
    ) -> Result<(), PullError> {
        let total = r.manifest.layers().iter().map(Desc::size).sum();
        let tracked = Tracked::start(&self.progress, name, total);
        let progress = &*tracked.progress;
        // Layers: fetch those missing, a few at a time. The futures are
        // built up front (not in a closure passed to the stream) so the
        // whole pull future stays `Send`.
        //
        // Each layer is unpacked as soon as it and every layer below it are
        // in the content store, while later layers are still downloading:
        // a cold pull then costs about the download plus the last unpack.
        let layers = r.manifest.layers().len();
        let (fetched_tx, mut fetched_rx) = tokio::sync::mpsc::unbounded_channel::<usize>();
        let fetches: Vec<_> = r
            .manifest
            .layers()
            .iter()
            .zip(r.config.rootfs().diff_ids())
            .enumerate()
            .map(|(i, (layer, diff_id))| {
                let fetched = fetched_tx.clone();
                async move {
                    self.fetch_layer(client, parsed, lease, layer, diff_id, progress)
                        .await?;
                    let _ = fetched.send(i);
                    Ok::<(), PullError>(())
                }
            })
            .collect();
        drop(fetched_tx);
        let fetching = futures::stream::iter(fetches)
            .buffer_unordered(PARALLEL_LAYERS)
            .try_collect::<()>();
        let unpacking = async {
            let mut fetched = vec![false; layers];
            let mut next = 0;
            while next < layers {
                let Some(i) = fetched_rx.recv().await else {
                    return Err(PullError::Registry("layer download ended early".to_owned()));
                };
                fetched[i] = true;
                while next < layers && fetched[next] {
                    self.unpack_layer(lease, r, next).await?;
                    next += 1;
                }
            }
            Ok(())
        };
        futures::try_join!(fetching, unpacking)?;

        let top = r.chain_ids.last().cloned().unwrap_or_default();
        let config_labels =
            HashMap::from([(format!("containerd.io/gc.ref.snapshot.{SNAPSHOTTER}"), top)]);
        self.write_small(
            lease,
            &digest_of(r.manifest.config()),
            &r.config_bytes,
            config_labels,
        )
        .await?;

        let mut manifest_labels = HashMap::from([(
            "containerd.io/gc.ref.content.config".to_owned(),
            digest_of(r.manifest.config()),
        )]);
        for (i, layer) in r.manifest.layers().iter().enumerate() {
            manifest_labels.insert(
                format!("containerd.io/gc.ref.content.l.{i}"),
                digest_of(layer),
            );
        }
        self.write_small(
            lease,
            &r.manifest_digest,
            &r.manifest_bytes,
            manifest_labels,
        )
        .await?;

        // Pulled with credentials: later uses from the cache check the
        // caller's own (see [`auth`]).
        let labels = if private {
            HashMap::from([(auth::LABEL_AUTH.to_owned(), auth::AUTH_REQUIRED.to_owned())])
        } else {
            HashMap::new()
        };
        let image = Image {
            name: name.to_owned(),
            labels,
            target: Some(Descriptor {
                media_type: r.manifest_media_type.clone(),
                digest: r.manifest_digest.clone(),
                size: r.manifest_bytes.len() as i64,
                annotations: HashMap::new(),
            }),
            created_at: None,
            updated_at: None,
        };
        let mut images = ImagesClient::new(self.conn.channel.clone());
        match images
            .create(self.conn.leased(
                CreateImageRequest {
                    image: Some(image.clone()),
                    source_date_epoch: None,
                },
                lease,
            ))
            .await
        {
            Ok(_) => Ok(()),
            // A tag that moved: point the record at the new manifest.
            Err(s) if s.code() == Code::AlreadyExists => images
                .update(self.conn.leased(
                    UpdateImageRequest {
                        image: Some(image),
                        update_mask: Some(prost_types::FieldMask {
                            paths: if private {
                                vec!["target".to_owned(), format!("labels.{}", auth::LABEL_AUTH)]
                            } else {
                                vec!["target".to_owned()]
                            },
                        }),
                        source_date_epoch: None,
                    },
                    lease,
                ))
                .await
                .map(|_| ())
                .map_err(|s| PullError::containerd("Images.Update", s)),
            Err(s) => Err(PullError::containerd("Images.Create", s)),
        }
    }

    /// Streams one layer from the registry into the content store, unless
    /// it is there already.
    pub(super) async fn fetch_layer(
        &self,
        client: &RegistryClient,
        parsed: &Reference,
        lease: &str,
        layer: &Desc,
        diff_id: &str,
        progress: &Progress,
    ) -> Result<(), PullError> {
        let digest = digest_of(layer);
        if self.content_exists(&digest).await? {
            progress.add(layer.size());
            return Ok(());
        }
        let started = Instant::now();
        let stream = client
            .pull_blob_stream(parsed, digest.as_str())
            .await
            .map_err(|e| {
                PullError::Registry(format!("fetching layer {digest}: {}", registry_message(&e)))
            })?;
        let labels = HashMap::from([("containerd.io/uncompressed".to_owned(), diff_id.to_owned())]);
        self.write_content(
            lease,
            &digest,
            i64::try_from(layer.size()).unwrap_or(i64::MAX),
            labels,
            stream
                .inspect_ok(|chunk| progress.add(chunk.len() as u64))
                .map_err(|e| PullError::Registry(format!("fetching {digest}: {e}"))),
        )
        .await?;
        debug!(
            layer = %digest,
            size = layer.size(),
            elapsed_ms = started.elapsed().as_millis() as u64,
            "layer stored"
        );
        Ok(())
    }

    /// Unpacks every layer whose chain ID has no committed snapshot yet.
    pub(super) async fn unpack(&self, lease: &str, r: &Resolved) -> Result<(), PullError> {
        for i in 0..r.manifest.layers().len() {
            self.unpack_layer(lease, r, i).await?;
        }
        Ok(())
    }

    /// Unpacks layer `i` onto its parent's snapshot (which must exist),
    /// unless its snapshot exists already.
    pub(super) async fn unpack_layer(
        &self,
        lease: &str,
        r: &Resolved,
        i: usize,
    ) -> Result<(), PullError> {
        let mut snapshots = SnapshotsClient::new(self.conn.channel.clone());
        let mut diff = DiffClient::new(self.conn.channel.clone());
        let layer = &r.manifest.layers()[i];
        let chain_id = &r.chain_ids[i];
        if self.snapshot_exists(chain_id).await? {
            return Ok(());
        }
        let started = Instant::now();
        let parent = if i == 0 {
            String::new()
        } else {
            r.chain_ids[i - 1].clone()
        };
        // A unique key: two pulls sharing a base layer may unpack it at once.
        let key = format!("skiff-extract-{}-{chain_id}", uuid::Uuid::new_v4());
        let mounts = snapshots
            .prepare(self.conn.leased(
                PrepareSnapshotRequest {
                    snapshotter: SNAPSHOTTER.to_owned(),
                    key: key.clone(),
                    parent,
                    labels: HashMap::new(),
                },
                lease,
            ))
            .await
            .map_err(|s| PullError::containerd("Snapshots.Prepare", s))?
            .into_inner()
            .mounts;

        let applied = diff
            .apply(self.conn.leased(
                ApplyRequest {
                    diff: Some(manifest::to_containerd(layer)),
                    mounts,
                    payloads: HashMap::new(),
                    sync_fs: false,
                },
                lease,
            ))
            .await
            .map_err(|s| PullError::containerd("Diff.Apply", s))
            .and_then(|r| {
                r.into_inner()
                    .applied
                    .ok_or_else(|| PullError::Store("Diff.Apply returned no descriptor".to_owned()))
            });
        let applied = match applied {
            Ok(a) => a,
            Err(e) => {
                self.remove_snapshot(&key, lease).await;
                return Err(e);
            }
        };
        if applied.digest != r.config.rootfs().diff_ids()[i] {
            self.remove_snapshot(&key, lease).await;
            return Err(PullError::Image(format!(
                "layer {} unpacked to {}, but the config says {}",
                digest_of(layer),
                applied.digest,
                r.config.rootfs().diff_ids()[i]
            )));
        }
        match snapshots
            .commit(self.conn.leased(
                CommitSnapshotRequest {
                    snapshotter: SNAPSHOTTER.to_owned(),
                    name: chain_id.clone(),
                    key: key.clone(),
                    labels: HashMap::new(),
                },
                lease,
            ))
            .await
        {
            Ok(_) => {}
            // Someone else committed the same layer meanwhile: theirs is as good.
            Err(s) if s.code() == Code::AlreadyExists => {
                self.remove_snapshot(&key, lease).await;
            }
            Err(s) => {
                self.remove_snapshot(&key, lease).await;
                return Err(PullError::containerd("Snapshots.Commit", s));
            }
        }
        debug!(
            %chain_id,
            elapsed_ms = started.elapsed().as_millis() as u64,
            "layer unpacked"
        );
        Ok(())
    }
}
