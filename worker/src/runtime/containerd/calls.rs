//! Thin calls into containerd's services in the worker's namespace: the
//! clients, the listings (streamed where a host may hold thousands of
//! records), and the task and label calls that the lifecycle, exec, the
//! sandboxes and image users build on. Each maps containerd's NotFound to
//! what its caller expects.

use super::*;

impl ContainerdRuntime {
    /// Every container record in the namespace, streamed one per message:
    /// a host with thousands of containers (each record carries its whole
    /// runtime spec) would pass gRPC's 4 MiB message limit in one List.
    pub(super) async fn list_containers(&self) -> Result<Vec<Container>, RuntimeError> {
        self.list_containers_where(vec![]).await
    }

    /// The container records matching any of `filters` (containerd's
    /// filter syntax; none: every record).
    pub(in crate::runtime) async fn list_containers_where(
        &self,
        filters: Vec<String>,
    ) -> Result<Vec<Container>, RuntimeError> {
        let err = containerd_err("Containers.ListStream", "*");
        let mut stream = match self
            .containers()
            .list_stream(self.conn.req(ListContainersRequest { filters }))
            .await
        {
            Ok(r) => r.into_inner(),
            Err(s) => return Err(err(s)),
        };
        let mut out = Vec::new();
        loop {
            match stream.message().await {
                Ok(Some(message)) => out.extend(message.container),
                Ok(None) => return Ok(out),
                Err(s) => return Err(containerd_err("Containers.ListStream", "*")(s)),
            }
        }
    }

    /// Every image record in the namespace.
    pub(super) async fn list_images(
        &self,
    ) -> Result<Vec<containerd_client::services::v1::Image>, RuntimeError> {
        Ok(ImagesClient::new(self.conn.channel.clone())
            .max_decoding_message_size(LIST_MAX_BYTES)
            .list(self.conn.req(ListImagesRequest { filters: vec![] }))
            .await
            .map_err(containerd_err("Images.List", "*"))?
            .into_inner()
            .images)
    }

    /// `msg` as a request in the worker's namespace.
    pub(in crate::runtime) fn conn_req<T>(&self, msg: T) -> Request<T> {
        self.conn.req(msg)
    }

    pub(in crate::runtime) fn tasks(&self) -> TasksClient<Channel> {
        // Tasks.List has no streaming form: room for many thousand tasks.
        TasksClient::new(self.conn.channel.clone()).max_decoding_message_size(LIST_MAX_BYTES)
    }

    pub(in crate::runtime) fn containers(&self) -> ContainersClient<Channel> {
        ContainersClient::new(self.conn.channel.clone())
    }

    pub(in crate::runtime) fn snapshots(&self) -> SnapshotsClient<Channel> {
        SnapshotsClient::new(self.conn.channel.clone())
    }

    /// Every task in the namespace.
    pub(super) async fn list_tasks(&self) -> Result<Vec<Process>, RuntimeError> {
        Ok(self
            .tasks()
            .list(self.conn.req(ListTasksRequest {
                filter: String::new(),
            }))
            .await
            .map_err(containerd_err("Tasks.List", "*"))?
            .into_inner()
            .tasks)
    }

    pub(super) async fn get_task(&self, id: &str) -> Result<Option<Process>, RuntimeError> {
        match self
            .tasks()
            .get(self.conn.req(GetRequest {
                container_id: id.to_owned(),
                exec_id: String::new(),
            }))
            .await
        {
            Ok(r) => Ok(r.into_inner().process),
            Err(s) if s.code() == Code::NotFound => Ok(None),
            Err(s) => Err(containerd_err("Tasks.Get", id)(s)),
        }
    }

    pub(super) async fn delete_task_inner(&self, id: &str) -> Result<(), RuntimeError> {
        match self
            .tasks()
            .delete(self.conn.req(DeleteTaskRequest {
                container_id: id.to_owned(),
            }))
            .await
        {
            Ok(_) => Ok(()),
            Err(s) if s.code() == Code::NotFound => Ok(()),
            Err(s) => Err(containerd_err("Tasks.Delete", id)(s)),
        }
    }

    /// SIGKILLs every process of the task and waits until it is reaped.
    pub(super) async fn kill_and_wait(&self, id: &str) -> Result<(), RuntimeError> {
        match self
            .tasks()
            .kill(self.conn.req(KillRequest {
                container_id: id.to_owned(),
                exec_id: String::new(),
                signal: SIGKILL,
                all: true,
            }))
            .await
        {
            Ok(_) => {}
            // No task, or its process already exited.
            Err(s) if matches!(s.code(), Code::NotFound | Code::FailedPrecondition) => {}
            Err(s) => return Err(containerd_err("Tasks.Kill", id)(s)),
        }
        let mut tasks = self.tasks();
        let wait = tasks.wait(self.conn.req(WaitRequest {
            container_id: id.to_owned(),
            exec_id: String::new(),
        }));
        match tokio::time::timeout(KILL_WAIT, wait).await {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(s)) if s.code() == Code::NotFound => Ok(()),
            Ok(Err(s)) => Err(containerd_err("Tasks.Wait", id)(s)),
            Err(_) => Err(containerd_err("Tasks.Wait", id)(Status::deadline_exceeded(
                format!("task not stopped {}s after SIGKILL", KILL_WAIT.as_secs()),
            ))),
        }
    }

    /// Sets one label on the container record, leaving the others alone.
    pub(super) async fn set_label(
        &self,
        id: &str,
        key: &str,
        value: String,
    ) -> Result<(), RuntimeError> {
        let container = Container {
            id: id.to_owned(),
            labels: HashMap::from([(key.to_owned(), value)]),
            ..Default::default()
        };
        self.containers()
            .update(self.conn.req(UpdateContainerRequest {
                container: Some(container),
                update_mask: Some(prost_types::FieldMask {
                    paths: vec![format!("labels.{key}")],
                }),
            }))
            .await
            .map(|_| ())
            .map_err(containerd_err("Containers.Update", id))
    }
}
