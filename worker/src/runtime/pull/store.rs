//! containerd's content store, snapshots and leases as the puller uses
//! them: what is there already, reading and writing blobs (streamed in
//! chunks, resumed by containerd's write refs), an image's blobs for the
//! image GC, and the lease every pull runs under.

use super::*;

impl Puller {
    pub(super) async fn remove_snapshot(&self, key: &str, lease: &str) {
        let mut snapshots = SnapshotsClient::new(self.conn.channel.clone());
        let _ = snapshots
            .remove(self.conn.leased(
                RemoveSnapshotRequest {
                    snapshotter: SNAPSHOTTER.to_owned(),
                    key: key.to_owned(),
                },
                lease,
            ))
            .await;
    }

    pub(super) async fn snapshot_exists(&self, key: &str) -> Result<bool, PullError> {
        if key.is_empty() {
            // An image without layers has nothing to unpack.
            return Ok(true);
        }
        let mut snapshots = SnapshotsClient::new(self.conn.channel.clone());
        match snapshots
            .stat(self.conn.req(StatSnapshotRequest {
                snapshotter: SNAPSHOTTER.to_owned(),
                key: key.to_owned(),
            }))
            .await
        {
            Ok(_) => Ok(true),
            Err(s) if s.code() == Code::NotFound => Ok(false),
            Err(s) => Err(PullError::containerd("Snapshots.Stat", s)),
        }
    }

    pub(super) async fn content_exists(&self, digest: &str) -> Result<bool, PullError> {
        let mut content = ContentClient::new(self.conn.channel.clone());
        match content
            .info(self.conn.req(InfoRequest {
                digest: digest.to_owned(),
            }))
            .await
        {
            Ok(_) => Ok(true),
            Err(s) if s.code() == Code::NotFound => Ok(false),
            Err(s) => Err(PullError::containerd("Content.Info", s)),
        }
    }

    /// What an image record's `target` takes on disk, as (key, bytes): its
    /// manifest (and an index above it) and config in the content store, and
    /// each of its unpacked layer snapshots (keyed by chain id, so layers
    /// shared between images are shared keys). Layer blobs are not kept
    /// once unpacked (the pull's lease ends), so snapshots are the bulk.
    pub async fn blobs_of(&self, target: &Descriptor) -> Result<Vec<(String, u64)>, PullError> {
        let mut blobs = vec![(target.digest.clone(), target.size.max(0) as u64)];
        let Some(mut bytes) = self.read_content(&target.digest).await? else {
            return Ok(blobs);
        };
        if is_index(&target.media_type, &bytes) {
            let entry = pick_platform(&bytes)?;
            let Some(manifest) = self.read_content(&digest_of(&entry)).await? else {
                return Ok(blobs);
            };
            blobs.push((digest_of(&entry), manifest.len() as u64));
            bytes = manifest;
        }
        let manifest = parse_manifest(&bytes)?;
        let Some(config_bytes) = self.read_content(&digest_of(manifest.config())).await? else {
            return Ok(blobs);
        };
        blobs.push((
            digest_of(manifest.config()).clone(),
            config_bytes.len() as u64,
        ));
        let config = parse_config(&config_bytes, &manifest)?;
        let mut snapshots = SnapshotsClient::new(self.conn.channel.clone());
        for chain_id in chain_ids(config.rootfs().diff_ids()) {
            match snapshots
                .usage(self.conn.req(SnapshotUsageRequest {
                    snapshotter: SNAPSHOTTER.to_owned(),
                    key: chain_id.clone(),
                }))
                .await
            {
                Ok(usage) => blobs.push((chain_id, usage.into_inner().size.max(0) as u64)),
                Err(s) if s.code() == Code::NotFound => {}
                Err(s) => return Err(PullError::containerd("Snapshots.Usage", s)),
            }
        }
        Ok(blobs)
    }

    /// A whole blob from the content store; `None` if it is not there.
    pub(super) async fn read_content(&self, digest: &str) -> Result<Option<Vec<u8>>, PullError> {
        let mut content = ContentClient::new(self.conn.channel.clone());
        let mut stream = match content
            .read(self.conn.req(ReadContentRequest {
                digest: digest.to_owned(),
                offset: 0,
                size: 0,
            }))
            .await
        {
            Ok(r) => r.into_inner(),
            Err(s) if s.code() == Code::NotFound => return Ok(None),
            Err(s) => return Err(PullError::containerd("Content.Read", s)),
        };
        let mut out = Vec::new();
        loop {
            match stream.message().await {
                Ok(Some(chunk)) => out.extend_from_slice(&chunk.data),
                Ok(None) => break,
                Err(s) if s.code() == Code::NotFound => return Ok(None),
                Err(s) => return Err(PullError::containerd("Content.Read", s)),
            }
        }
        Ok(Some(out))
    }

    pub(super) async fn write_small(
        &self,
        lease: &str,
        digest: &str,
        bytes: &[u8],
        labels: HashMap<String, String>,
    ) -> Result<(), PullError> {
        if self.content_exists(digest).await? {
            return Ok(());
        }
        let chunk = bytes::Bytes::copy_from_slice(bytes);
        self.write_content(
            lease,
            digest,
            bytes.len() as i64,
            labels,
            futures::stream::iter([Ok(chunk)]),
        )
        .await
    }

    /// Streams `data` into the content store as blob `digest` (verified by
    /// containerd on commit) with `labels`.
    pub(super) async fn write_content<S>(
        &self,
        lease: &str,
        digest: &str,
        size: i64,
        labels: HashMap<String, String>,
        data: S,
    ) -> Result<(), PullError>
    where
        S: futures::Stream<Item = Result<bytes::Bytes, PullError>> + Send,
    {
        // A unique ref per attempt: containerd locks refs, and two pulls
        // sharing a layer would otherwise fail with "ref locked".
        let write_ref = format!("skiff-{digest}-{}", uuid::Uuid::new_v4());
        let result = self
            .write_content_inner(lease, &write_ref, digest, size, labels, data)
            .await;
        match result {
            Ok(()) => Ok(()),
            Err(e) => {
                let mut content = ContentClient::new(self.conn.channel.clone());
                let _ = content
                    .abort(self.conn.leased(
                        AbortRequest {
                            r#ref: write_ref.clone(),
                        },
                        lease,
                    ))
                    .await;
                Err(e)
            }
        }
    }

    pub(super) async fn write_content_inner<S>(
        &self,
        lease: &str,
        write_ref: &str,
        digest: &str,
        size: i64,
        labels: HashMap<String, String>,
        data: S,
    ) -> Result<(), PullError>
    where
        S: futures::Stream<Item = Result<bytes::Bytes, PullError>> + Send,
    {
        let (tx, rx) = tokio::sync::mpsc::channel::<WriteContentRequest>(2);
        let message = |action: WriteAction, offset: i64, data: Vec<u8>| WriteContentRequest {
            action: action as i32,
            r#ref: write_ref.to_owned(),
            total: size,
            expected: digest.to_owned(),
            // Offset 0 on the first message truncates a stale partial
            // ingest; later ones must match containerd's running offset.
            offset,
            data,
            labels: HashMap::new(),
        };
        let already = |s: &tonic::Status| s.code() == Code::AlreadyExists;

        // containerd answers every request with one response and sends
        // headers only once it has read the first request: queue that
        // request before awaiting the call.
        tx.send(message(WriteAction::Stat, 0, Vec::new()))
            .await
            .map_err(|_| PullError::Store("content writer closed".to_owned()))?;
        let mut content = ContentClient::new(self.conn.channel.clone());
        let mut responses = match content
            .write(
                self.conn
                    .leased(tokio_stream::wrappers::ReceiverStream::new(rx), lease),
            )
            .await
        {
            Ok(r) => r.into_inner(),
            Err(s) if already(&s) => return Ok(()),
            Err(s) => return Err(PullError::containerd("Content.Write", s)),
        };
        macro_rules! exchange {
            ($msg:expr) => {{
                if tx.send($msg).await.is_err() {
                    // The server ended the stream; its status says why.
                    match responses.message().await {
                        Err(s) if already(&s) => return Ok(()),
                        Err(s) => return Err(PullError::containerd("Content.Write", s)),
                        Ok(_) => {
                            return Err(PullError::Store("content write stream closed".to_owned()))
                        }
                    }
                }
                match responses.message().await {
                    Ok(Some(r)) => r,
                    Ok(None) => {
                        return Err(PullError::Store("content write stream closed".to_owned()))
                    }
                    Err(s) if already(&s) => return Ok(()),
                    Err(s) => return Err(PullError::containerd("Content.Write", s)),
                }
            }};
        }
        // The Stat response.
        match responses.message().await {
            Ok(Some(_)) => {}
            Ok(None) => return Err(PullError::Store("content write stream closed".to_owned())),
            Err(s) if already(&s) => return Ok(()),
            Err(s) => return Err(PullError::containerd("Content.Write", s)),
        }

        let mut offset: i64 = 0;
        let mut buf: Vec<u8> = Vec::with_capacity(WRITE_CHUNK);
        let mut data = std::pin::pin!(data);
        while let Some(chunk) = data.next().await {
            let chunk = chunk?;
            buf.extend_from_slice(&chunk);
            if buf.len() >= WRITE_CHUNK {
                let len = buf.len() as i64;
                let send = std::mem::replace(&mut buf, Vec::with_capacity(WRITE_CHUNK));
                exchange!(message(WriteAction::Write, offset, send));
                offset += len;
            }
        }
        let len = buf.len() as i64;
        if len > 0 {
            exchange!(message(WriteAction::Write, offset, buf));
            offset += len;
        }
        if offset != size {
            return Err(PullError::Store(format!(
                "blob {digest}: got {offset} bytes, manifest says {size}"
            )));
        }
        let mut commit = message(WriteAction::Commit, offset, Vec::new());
        commit.labels = labels;
        let done = exchange!(commit);
        drop(tx);
        if !done.digest.is_empty() && done.digest != digest {
            return Err(PullError::Store(format!(
                "blob {digest} committed as {}",
                done.digest
            )));
        }
        Ok(())
    }

    pub(super) async fn create_lease(&self) -> Result<String, PullError> {
        let id = format!("skiff-pull-{}", uuid::Uuid::new_v4());
        // If the worker dies mid-pull, GC may reclaim the partial work after this.
        let expire = (chrono::Utc::now() + chrono::Duration::hours(1))
            .to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
        let mut leases = LeasesClient::new(self.conn.channel.clone());
        leases
            .create(self.conn.req(CreateLeaseRequest {
                id: id.clone(),
                labels: HashMap::from([("containerd.io/gc.expire".to_owned(), expire)]),
            }))
            .await
            .map_err(|s| PullError::containerd("Leases.Create", s))?;
        Ok(id)
    }

    pub(super) async fn delete_lease(&self, id: &str) {
        let mut leases = LeasesClient::new(self.conn.channel.clone());
        if let Err(s) = leases
            .delete(self.conn.req(DeleteLeaseRequest {
                id: id.to_owned(),
                sync: false,
            }))
            .await
        {
            // It expires on its own; nothing is lost but some disk for a while.
            tracing::warn!(lease = id, error = %s, "deleting pull lease");
        }
    }
}
