//! An in-memory [`Runtime`] for the agent's unit tests: containers and
//! tasks in a map, every mutating call recorded, tasks that stop the moment
//! they are signalled. Pulls and removals can be held at a gate, so a test
//! can act while a start or a fence is under way; removals can be made to fail.

use super::{
    CgroupUsage, ContainerInfo, ExitRecord, HeldImage, ImageDefaults, ImageInfo, RunSpec, Runtime,
    RuntimeError, StoredImage, TaskEvent, TaskInfo, TaskStarted, TaskStatus,
};
use async_trait::async_trait;
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use tokio::sync::{mpsc, Notify, Semaphore};

/// A mutating call the fake received, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Call {
    EnsureImage(String),
    Create(String),
    Start(String, u64),
    Kill(String, u32),
    FinishTask(String),
    Remove(String),
}

#[derive(Debug, Clone, Default)]
struct FakeContainer {
    generation: u64,
    last_exit: Option<ExitRecord>,
    task: Option<TaskInfo>,
    sandbox: Option<String>,
}

#[derive(Default)]
struct State {
    containers: BTreeMap<String, FakeContainer>,
    images: Vec<HeldImage>,
    calls: Vec<Call>,
    next_pid: u32,
    failing_removals: bool,
    /// What every exec exits with.
    exec_exit: i32,
    /// What pull_progress answers.
    pull_progress: Option<(u64, u64)>,
    /// What image_known answers.
    image_known: bool,
}

#[derive(Default)]
pub struct FakeRuntime {
    state: Mutex<State>,
    events: Mutex<Vec<mpsc::Sender<TaskEvent>>>,
    /// When set, every remove() waits for a permit of it.
    removal_gate: Mutex<Option<Arc<Semaphore>>>,
    /// Notified each time a remove() begins.
    pub removal_started: Notify,
    /// When set, every ensure_image() waits for a permit of it.
    pull_gate: Mutex<Option<Arc<Semaphore>>>,
    /// Notified each time an ensure_image() begins.
    pub pull_started: Notify,
}

fn running_task(pid: u32) -> TaskInfo {
    TaskInfo {
        pid,
        status: TaskStatus::Running,
        exit_code: None,
        exited_at_unix_ms: None,
    }
}

impl FakeRuntime {
    pub fn new() -> Arc<Self> {
        Arc::new(Self::default())
    }

    /// Seeds a container whose run `generation` is running (as a worker
    /// restart would find it).
    pub fn with_running(&self, id: &str, generation: u64) -> &Self {
        let mut state = self.state.lock().unwrap();
        state.next_pid += 1;
        let pid = 100_000 + state.next_pid;
        state.containers.insert(
            id.to_owned(),
            FakeContainer {
                generation,
                last_exit: None,
                task: Some(running_task(pid)),
                sandbox: None,
            },
        );
        self
    }

    pub fn with_image(&self, reference: &str, digest: &str) -> &Self {
        self.state.lock().unwrap().images.push(HeldImage {
            reference: reference.to_owned(),
            digest: digest.to_owned(),
        });
        self
    }

    /// Makes every remove() wait for a permit of the returned gate.
    pub fn hold_removals(&self) -> Arc<Semaphore> {
        let gate = Arc::new(Semaphore::new(0));
        *self.removal_gate.lock().unwrap() = Some(gate.clone());
        gate
    }

    /// Makes every ensure_image() wait for a permit of the returned gate.
    pub fn hold_pulls(&self) -> Arc<Semaphore> {
        let gate = Arc::new(Semaphore::new(0));
        *self.pull_gate.lock().unwrap() = Some(gate.clone());
        gate
    }

    /// Makes remove() fail (as containerd would when unreachable) or succeed again.
    /// Makes pull_progress answer `progress` (for any image).
    pub fn pull_progress_is(&self, progress: Option<(u64, u64)>) -> &Self {
        self.state.lock().unwrap().pull_progress = progress;
        self
    }

    /// Makes image_known answer `known` (for any image).
    pub fn image_known_is(&self, known: bool) -> &Self {
        self.state.lock().unwrap().image_known = known;
        self
    }

    /// Makes every exec (probes included) exit with `code`.
    pub fn exec_exits_with(&self, code: i32) -> &Self {
        self.state.lock().unwrap().exec_exit = code;
        self
    }

    pub fn fail_removals(&self, fail: bool) {
        self.state.lock().unwrap().failing_removals = fail;
    }

    pub fn calls(&self) -> Vec<Call> {
        self.state.lock().unwrap().calls.clone()
    }

    pub fn exists(&self, id: &str) -> bool {
        self.state.lock().unwrap().containers.contains_key(id)
    }

    /// The sandbox `id` was created in (its label, in containerd).
    pub fn sandbox_of(&self, id: &str) -> Option<String> {
        let state = self.state.lock().unwrap();
        state.containers.get(id)?.sandbox.clone()
    }

    pub fn task_status(&self, id: &str) -> Option<TaskStatus> {
        let state = self.state.lock().unwrap();
        state.containers.get(id)?.task.as_ref().map(|t| t.status)
    }

    fn emit(&self, event: TaskEvent) {
        for tx in self.events.lock().unwrap().iter() {
            let _ = tx.try_send(event.clone());
        }
    }

    fn record(&self, call: Call) {
        self.state.lock().unwrap().calls.push(call);
    }
}

fn not_found(op: &'static str, id: &str) -> RuntimeError {
    RuntimeError::Containerd {
        op,
        id: id.to_owned(),
        source: tonic::Status::not_found("no such container"),
    }
}

#[async_trait]
impl Runtime for FakeRuntime {
    fn pull_progress(&self, _reference: &str) -> Option<(u64, u64)> {
        self.state.lock().unwrap().pull_progress
    }

    fn image_known(&self, _reference: &str) -> bool {
        self.state.lock().unwrap().image_known
    }

    async fn exec(
        &self,
        _id: &str,
        _spec: &super::exec::ExecSpec,
    ) -> Result<super::exec::ExecOutput, RuntimeError> {
        Ok(super::exec::ExecOutput {
            exit_code: self.state.lock().unwrap().exec_exit,
            ..Default::default()
        })
    }

    async fn version(&self) -> Result<String, RuntimeError> {
        Ok("fake".to_owned())
    }

    async fn ensure_image(&self, reference: &str) -> Result<ImageInfo, RuntimeError> {
        self.record(Call::EnsureImage(reference.to_owned()));
        self.pull_started.notify_one();
        let gate = self.pull_gate.lock().unwrap().clone();
        if let Some(gate) = gate {
            gate.acquire().await.expect("gate open").forget();
        }
        Ok(ImageInfo {
            digest: "sha256:fake".to_owned(),
            top_chain_id: "sha256:chain".to_owned(),
            defaults: ImageDefaults::default(),
            fetched: false,
        })
    }

    async fn create(&self, spec: &RunSpec) -> Result<(), RuntimeError> {
        let mut state = self.state.lock().unwrap();
        state.calls.push(Call::Create(spec.id.clone()));
        // Like containerd's label: set when the record is made.
        state
            .containers
            .entry(spec.id.clone())
            .or_insert_with(|| FakeContainer {
                sandbox: spec.sandbox.clone(),
                ..Default::default()
            });
        Ok(())
    }

    async fn start(&self, run: &RunSpec, generation: u64) -> Result<TaskStarted, RuntimeError> {
        let id = run.id.as_str();
        let mut state = self.state.lock().unwrap();
        state.calls.push(Call::Start(id.to_owned(), generation));
        state.next_pid += 1;
        let pid = 100_000 + state.next_pid;
        let container = state
            .containers
            .get_mut(id)
            .ok_or_else(|| not_found("start", id))?;
        container.generation = generation;
        container.task = Some(running_task(pid));
        Ok(TaskStarted {
            pid,
            started_at_unix_ms: crate::agent::now_ms(),
            ip: None,
        })
    }

    /// Every signal stops the task at once: exit 128 + signal.
    async fn kill(&self, id: &str, signal: u32) -> Result<(), RuntimeError> {
        let stopped = {
            let mut state = self.state.lock().unwrap();
            state.calls.push(Call::Kill(id.to_owned(), signal));
            match state.containers.get_mut(id).and_then(|c| c.task.as_mut()) {
                Some(task) if task.status.is_live() => {
                    task.status = TaskStatus::Stopped;
                    task.exit_code = Some(128 + signal as i32);
                    task.exited_at_unix_ms = Some(crate::agent::now_ms());
                    true
                }
                _ => false,
            }
        };
        if stopped {
            self.emit(TaskEvent::Exited {
                id: id.to_owned(),
                exit_code: 128 + signal as i32,
                exited_at_unix_ms: crate::agent::now_ms(),
            });
        }
        Ok(())
    }

    async fn task(&self, id: &str) -> Result<Option<TaskInfo>, RuntimeError> {
        let state = self.state.lock().unwrap();
        Ok(state.containers.get(id).and_then(|c| c.task.clone()))
    }

    async fn usage(&self, _id: &str) -> Option<CgroupUsage> {
        Some(CgroupUsage::default())
    }

    async fn oom_killed(&self, _id: &str) -> bool {
        false
    }

    async fn record_exit(&self, id: &str, exit: &ExitRecord) -> Result<(), RuntimeError> {
        let mut state = self.state.lock().unwrap();
        state.calls.push(Call::FinishTask(id.to_owned()));
        let container = state
            .containers
            .get_mut(id)
            .ok_or_else(|| not_found("record_exit", id))?;
        container.last_exit = Some(exit.clone());
        Ok(())
    }

    async fn delete_task(&self, id: &str) -> Result<(), RuntimeError> {
        if let Some(container) = self.state.lock().unwrap().containers.get_mut(id) {
            container.task = None;
        }
        Ok(())
    }

    /// Like containerd's: SIGKILL, wait for the task, delete everything.
    async fn remove(&self, id: &str) -> Result<(), RuntimeError> {
        self.removal_started.notify_one();
        let gate = self.removal_gate.lock().unwrap().clone();
        if let Some(gate) = gate {
            gate.acquire().await.expect("gate open").forget();
        }
        if self.state.lock().unwrap().failing_removals {
            return Err(RuntimeError::Containerd {
                op: "Tasks.Kill",
                id: id.to_owned(),
                source: tonic::Status::unavailable("containerd is away"),
            });
        }
        self.kill(id, 9).await?;
        let mut state = self.state.lock().unwrap();
        state.calls.push(Call::Remove(id.to_owned()));
        state.containers.remove(id);
        Ok(())
    }

    async fn list(&self) -> Result<Vec<ContainerInfo>, RuntimeError> {
        let state = self.state.lock().unwrap();
        Ok(state
            .containers
            .iter()
            .map(|(id, c)| ContainerInfo {
                id: id.clone(),
                generation: c.generation,
                last_exit: c.last_exit.clone(),
                task: c.task.clone(),
                sandbox: c.sandbox.clone(),
            })
            .collect())
    }

    async fn stored_images(&self) -> Result<Vec<StoredImage>, RuntimeError> {
        Ok(Vec::new())
    }

    async fn remove_image(&self, _reference: &str) -> Result<(), RuntimeError> {
        Ok(())
    }

    async fn images(&self) -> Result<Vec<HeldImage>, RuntimeError> {
        Ok(self.state.lock().unwrap().images.clone())
    }

    fn events(&self) -> mpsc::Receiver<TaskEvent> {
        let (tx, rx) = mpsc::channel(1024);
        self.events.lock().unwrap().push(tx);
        rx
    }

    fn log_path(&self, id: &str) -> PathBuf {
        PathBuf::from("/nonexistent/skiff-fake-logs").join(format!("{id}.log"))
    }
}
