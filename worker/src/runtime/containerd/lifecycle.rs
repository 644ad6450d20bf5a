//! The lifecycle of one container on containerd: its record and snapshot
//! ([`ContainerdRuntime::create_container`]), a run's task with its network
//! and sandbox ([`ContainerdRuntime::start_task`]), and everything it leaves
//! once removed ([`ContainerdRuntime::remove_container`]).

use super::*;

impl ContainerdRuntime {
    #[instrument(skip_all, fields(container_id = %spec.id, image = %spec.image_ref))]
    pub(super) async fn create_container(&self, spec: &RunSpec) -> Result<(), RuntimeError> {
        let id = spec.id.as_str();
        sandbox::check(spec)?;
        let key = spec.sandbox_key();
        let exists = match self
            .containers()
            .get(self.conn.req(GetContainerRequest { id: id.to_owned() }))
            .await
        {
            Ok(_) => true,
            Err(s) if s.code() == Code::NotFound => false,
            Err(s) => return Err(containerd_err("Containers.Get", id)(s)),
        };
        if !exists {
            let net = match (&spec.network, &self.net) {
                (NetworkSpec::None, _) => None,
                (NetworkSpec::Private(_), Some(net)) => {
                    let (hosts, hostname) = net.hosts_files(key);
                    Some(spec::NetPaths {
                        netns: net.netns_path(key),
                        hosts,
                        hostname,
                    })
                }
                (NetworkSpec::Private(_), None) => {
                    return Err(RuntimeError::Spec {
                        id: id.to_owned(),
                        message: "a private network was asked for and this host offers none".into(),
                    })
                }
            };
            let user = self.process_user(spec).await?;
            // Holds secure env values: never logged.
            let oci = spec::build(spec, &self.spec_options, &user, net.as_ref())?;
            let value = serde_json::to_vec(&oci).map_err(|e| RuntimeError::Spec {
                id: id.to_owned(),
                message: e.to_string(),
            })?;
            let container = Container {
                id: id.to_owned(),
                // Its sandbox, for a restarted worker and the last removal.
                labels: spec
                    .sandbox
                    .iter()
                    .map(|s| (LABEL_SANDBOX.to_owned(), s.clone()))
                    .collect(),
                image: spec.image_ref.clone(),
                runtime: Some(ContainerRuntimeInfo {
                    name: RUNC_RUNTIME.to_owned(),
                    options: None,
                }),
                spec: Some(prost_types::Any {
                    type_url: SPEC_TYPE_URL.to_owned(),
                    value,
                }),
                snapshotter: SNAPSHOTTER.to_owned(),
                snapshot_key: id.to_owned(),
                ..Default::default()
            };
            match self
                .containers()
                .create(self.conn.req(CreateContainerRequest {
                    container: Some(container),
                }))
                .await
            {
                Ok(_) => {}
                Err(s) if s.code() == Code::AlreadyExists => {}
                Err(s) => return Err(containerd_err("Containers.Create", id)(s)),
            }
        }
        // After the container record: it is what keeps the snapshot from GC.
        match self
            .snapshots()
            .prepare(self.conn.req(PrepareSnapshotRequest {
                snapshotter: SNAPSHOTTER.to_owned(),
                key: id.to_owned(),
                parent: spec.image.top_chain_id.clone(),
                labels: HashMap::new(),
            }))
            .await
        {
            Ok(prepared) if !exists => {
                self.fresh
                    .lock()
                    .expect("fresh containers lock")
                    .insert(id.to_owned(), prepared.into_inner().mounts);
            }
            Ok(_) => {}
            Err(s) if s.code() == Code::AlreadyExists => {}
            Err(s) => return Err(containerd_err("Snapshots.Prepare", id)(s)),
        }
        debug!("container created");
        Ok(())
    }

    #[instrument(skip_all, fields(container_id = %run.id))]
    pub(super) async fn start_task(
        &self,
        run: &RunSpec,
        generation: u64,
    ) -> Result<TaskStarted, RuntimeError> {
        let id = run.id.as_str();
        sandbox::check(run)?;
        let fresh = self.fresh.lock().expect("fresh containers lock").remove(id);
        let old = match fresh {
            Some(_) => None,
            None => self.get_task(id).await?,
        };
        if let Some(old) = old {
            match task_info(&old).status {
                TaskStatus::Running | TaskStatus::Paused => {
                    return Err(containerd_err("start", id)(Status::failed_precondition(
                        "the previous task is still running; stop it first",
                    )));
                }
                TaskStatus::Created => {
                    // Created but never started (e.g. a crash between
                    // create and start): it has a live init, kill it first.
                    self.kill_and_wait(id).await?;
                    self.delete_task_inner(id).await?;
                }
                TaskStatus::Stopped | TaskStatus::Unknown => self.delete_task(id).await?,
            }
        }
        self.set_label(id, LABEL_GENERATION, generation.to_string())
            .await?;

        let mounts = match fresh {
            Some(mounts) => mounts,
            None => {
                self.snapshots()
                    .mounts(self.conn.req(MountsRequest {
                        snapshotter: SNAPSHOTTER.to_owned(),
                        key: id.to_owned(),
                    }))
                    .await
                    .map_err(containerd_err("Snapshots.Mounts", id))?
                    .into_inner()
                    .mounts
            }
        };

        let log = self.log_path(id);
        if let Some(dir) = log.parent() {
            std::fs::create_dir_all(dir).map_err(|source| RuntimeError::Io {
                op: "creating the log directory",
                id: id.to_owned(),
                source,
            })?;
        }
        // The shim runs skiff-logger (containerd's binary:// driver), which
        // outlives a worker restart like the shim does. Not file://: see
        // worker/src/bin/skiff-logger.rs for how that loses stderr.
        let uri = format!(
            "binary://{}?file={}&cap={}",
            self.config.logger.display(),
            log.display(),
            self.config.log_max_bytes
        );
        // Its sandbox's (or its own) network and volumes: set up by this
        // start, or, a member joining, already in place.
        let key = run.sandbox_key();
        let entry = self.enter_sandbox(run).await;
        let net = match (&run.network, &self.net) {
            (NetworkSpec::Private(req), Some(net)) if !entry.joined => Some((net, req)),
            _ => None,
        };
        if let Some((net, req)) = net {
            net.prepare(key, &run.hostname, req)
                .await
                .map_err(net_err(id))?;
        }
        if !entry.joined && !run.volumes.is_empty() {
            let user = self.process_user(run).await?;
            volumes::prepare(
                &self.spec_options.volumes_root,
                key,
                &run.volumes,
                user.uid,
                user.gid,
            )
            .await?;
        }
        let mut tasks = self.tasks();
        let create = tasks.create(self.conn.req(CreateTaskRequest {
            container_id: id.to_owned(),
            rootfs: mounts,
            stdout: uri.clone(),
            stderr: uri,
            ..Default::default()
        }));
        // The namespace exists: runc joins it while the plugins attach it
        // to the bridge (the process starts only after both).
        let (created, connected) = match net {
            Some((net, req)) => {
                let (created, connected) =
                    tokio::join!(create, net.connect(key, &run.hostname, req));
                (created, Some(connected))
            }
            None => (create.await, None),
        };
        if let Err(s) = created {
            if let Some(Ok(_)) = connected {
                // Set up by this start (a sandbox's, held: nobody is in).
                self.detach(key).await;
            }
            if entry.joined {
                self.end_network_logged(id, run.sandbox.as_deref()).await;
            }
            return Err(containerd_err("Tasks.Create", id)(s));
        }
        let ip = match connected {
            Some(Err(e)) => {
                // connect tore its part down; the task goes too.
                let _ = self.kill_and_wait(id).await;
                let _ = self.delete_task_inner(id).await;
                return Err(net_err(id)(e));
            }
            Some(Ok(ip)) => Some(ip),
            None => entry.ip,
        };
        entry.set_up(id);
        // Stamped before Start: the process begins during that call, so this
        // is never after a fast process's exit time (which containerd stamps),
        // and it over-states a run by at most the call's few milliseconds.
        let started_at_unix_ms = now_ms();
        let started = self
            .tasks()
            .start(self.conn.req(StartRequest {
                container_id: id.to_owned(),
                exec_id: String::new(),
            }))
            .await;
        let pid = match started {
            Ok(r) => r.into_inner().pid,
            Err(s) => {
                // Leave no half-started task behind: the next start retries cleanly.
                let _ = self.kill_and_wait(id).await;
                let _ = self.delete_task(id).await;
                self.end_network_logged(id, run.sandbox.as_deref()).await;
                return Err(containerd_err("Tasks.Start", id)(s));
            }
        };
        info!(pid, generation, "task started");
        Ok(TaskStarted {
            pid,
            started_at_unix_ms,
            ip,
        })
    }

    #[instrument(skip_all, fields(container_id = %id))]
    pub(super) async fn remove_container(&self, id: &str) -> Result<(), RuntimeError> {
        self.fresh.lock().expect("fresh containers lock").remove(id);
        // Read before the record goes: the sandbox's network and volumes
        // may go with it.
        let sandbox = match self.sandbox_label(id).await? {
            Some(sandbox) => Some(sandbox),
            None => self.sandboxes.sandbox_of(id),
        };
        if self.get_task(id).await?.is_some() {
            self.kill_and_wait(id).await?;
            self.delete_task_inner(id).await?;
        }
        self.end_network(id, sandbox.as_deref()).await?;
        match self
            .containers()
            .delete(self.conn.req(DeleteContainerRequest { id: id.to_owned() }))
            .await
        {
            Ok(_) => {}
            Err(s) if s.code() == Code::NotFound => {}
            Err(s) => return Err(containerd_err("Containers.Delete", id)(s)),
        }
        match self
            .snapshots()
            .remove(self.conn.req(RemoveSnapshotRequest {
                snapshotter: SNAPSHOTTER.to_owned(),
                key: id.to_owned(),
            }))
            .await
        {
            Ok(_) => {}
            // GC may already have taken it once the container record went.
            Err(s) if s.code() == Code::NotFound => {}
            Err(s) => return Err(containerd_err("Snapshots.Remove", id)(s)),
        }
        volumes::remove(&self.spec_options.volumes_root, id).await?;
        if let Some(sandbox) = &sandbox {
            self.remove_sandbox_volumes(sandbox).await?;
        }
        let log = self.log_path(id);
        for path in [crate::logcap::lock_path(&log), log] {
            match tokio::fs::remove_file(path).await {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(source) => {
                    return Err(RuntimeError::Io {
                        op: "removing the log file",
                        id: id.to_owned(),
                        source,
                    })
                }
            }
        }
        // runc removes the cgroups it created with the task; this catches
        // those left by a crashed shim. rmdir only succeeds on empty ones.
        for dir in self.cgroups.remove_leftovers(&self.cgroup_path(id)).await {
            debug!(dir = %dir.display(), "removed leftover cgroup");
        }
        info!("container removed");
        Ok(())
    }
}
