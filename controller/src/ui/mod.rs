//! The status page and its JSON API, served by both loops on their HTTP port (`mlcanary local
//! --http`, `mlcanary controller --listen`).
//!
//! - [`history`] — pure: per policy, a bounded ring of tick samples and rollout events, which both
//!   loops feed after every tick;
//! - [`api`] — the JSON views (`/api/policies`, `/api/policies/{namespace}/{name}`), the contract
//!   the page and the CLI client read;
//! - [`assets`] — the page itself (HTML, JS, CSS) compiled into the binary: no CDN, no build step;
//!   charts are hand-written SVG in plain JS (see the README's "Status page" for why).
//!
//! Operator commands (`POST /api/policies/{namespace}/{name}/{command}`) reach the loop that owns the policy
//! through a channel ([`Ui::with_commands`]): the local loop applies them at once, as a tick would.
//! The kube loop has no channel here, so the server answers 501 (the cluster path goes through the
//! resource).

pub mod api;
pub mod assets;
pub mod history;

use std::sync::Mutex;
use std::time::SystemTime;

use tokio::sync::{mpsc, oneshot};

use crate::policy::{CanaryPolicyStatus, PolicyKey, ValidatedPolicy};
use api::{PolicyDetail, PolicyView};
use history::{HistoryStore, Lookup};
use mlcanary_core::analysis::Verdict;
use mlcanary_core::rollout::{Command, RolloutEvent};

/// Why a command was not applied.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CommandRefused {
    /// No policy by that name.
    UnknownPolicy,
    /// The command changes nothing in this phase (terminal phase, pause while paused, ...).
    NotApplicable(String),
    /// The loop could not apply it (e.g. writing the traffic split failed).
    Failed(String),
}

/// One command on its way to the loop, with where to send the answer.
#[derive(Debug)]
pub struct CommandRequest {
    pub policy: PolicyKey,
    pub command: Command,
    pub reply: oneshot::Sender<Result<(), CommandRefused>>,
}

/// How the server may submit commands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Submit {
    Accepted,
    Refused(CommandRefused),
    /// This loop takes no commands over HTTP (kube mode).
    Unsupported,
}

/// The shared state behind the page: the history store, and the way to the loop for commands.
#[derive(Debug, Default)]
pub struct Ui {
    store: Mutex<HistoryStore>,
    commands: Option<mpsc::Sender<CommandRequest>>,
}

impl Ui {
    /// A UI without commands (the kube loop).
    pub fn new() -> Self {
        Ui::default()
    }

    /// A UI whose commands arrive on the returned receiver (the local loop).
    pub fn with_commands() -> (Self, mpsc::Receiver<CommandRequest>) {
        let (tx, rx) = mpsc::channel(16);
        (
            Ui {
                store: Mutex::default(),
                commands: Some(tx),
            },
            rx,
        )
    }

    fn with_store<R>(&self, f: impl FnOnce(&mut HistoryStore) -> R) -> R {
        // A poisoned lock means a panic mid-update of plain data; the data is still usable.
        let mut s = self.store.lock().unwrap_or_else(|e| e.into_inner());
        f(&mut s)
    }

    /// List `policy` before its first tick.
    pub fn register(
        &self,
        namespace: &str,
        policy: &ValidatedPolicy,
        status: &CanaryPolicyStatus,
        now: SystemTime,
    ) {
        self.with_store(|s| s.register(namespace, policy, status, now));
    }

    /// Record one tick (or command) of `policy`; see [`HistoryStore::record`].
    pub fn record(
        &self,
        namespace: &str,
        policy: &ValidatedPolicy,
        status: &CanaryPolicyStatus,
        verdicts: Option<&[Verdict]>,
        events: &[RolloutEvent],
        now: SystemTime,
    ) {
        self.with_store(|s| s.record(namespace, policy, status, verdicts, events, now));
    }

    /// Forget a deleted policy.
    pub fn remove(&self, namespace: &str, name: &str) {
        self.with_store(|s| s.remove(namespace, name));
    }

    /// `/api/policies`.
    pub fn list(&self) -> Vec<PolicyView> {
        self.with_store(|s| s.iter().map(PolicyView::from).collect())
    }

    /// `/api/policies/{namespace}/{name}` (or `/api/policies/{name}` when the name is unique).
    pub fn detail(&self, namespace: Option<&str>, name: &str) -> Result<PolicyDetail, Lookup> {
        self.with_store(|s| s.find(namespace, name).map(PolicyDetail::from))
    }

    /// Who `namespace/name` (or the only policy called `name`) is.
    pub fn resolve(&self, namespace: Option<&str>, name: &str) -> Result<PolicyKey, Lookup> {
        self.with_store(|s| {
            s.find(namespace, name)
                .map(|r| PolicyKey::new(&r.namespace, &r.name))
        })
    }

    /// Whether commands reach a loop here (local mode) or go through the cluster (kube mode).
    pub fn takes_commands(&self) -> bool {
        self.commands.is_some()
    }

    /// Hand `command` to the loop and wait for its answer.
    pub async fn submit(&self, policy: &PolicyKey, command: Command) -> Submit {
        let Some(tx) = &self.commands else {
            return Submit::Unsupported;
        };
        let (reply, answer) = oneshot::channel();
        let req = CommandRequest {
            policy: policy.clone(),
            command,
            reply,
        };
        if tx.send(req).await.is_err() {
            return Submit::Refused(CommandRefused::Failed("the loop has stopped".into()));
        }
        match answer.await {
            Ok(Ok(())) => Submit::Accepted,
            Ok(Err(r)) => Submit::Refused(r),
            Err(_) => Submit::Refused(CommandRefused::Failed(
                "the loop stopped before answering".into(),
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commands_parse_by_name_and_round_trip() {
        for c in [
            Command::Promote,
            Command::Abort,
            Command::Pause,
            Command::Resume,
        ] {
            assert_eq!(Command::parse(c.name(), None), Some(c));
        }
        assert_eq!(Command::parse("Promote", None), None);
        assert_eq!(Command::parse("rollback", None), None);
        assert_eq!(Command::parse("", None), None);
    }

    #[tokio::test]
    async fn submit_waits_for_the_loops_answer() {
        let (ui, mut rx) = Ui::with_commands();
        let answer = tokio::spawn(async move {
            let req = rx.recv().await.expect("a request");
            assert_eq!(req.policy, PolicyKey::new("ml", "fraud-model"));
            assert_eq!(req.command, Command::Abort);
            let _ = req.reply.send(Err(CommandRefused::UnknownPolicy));
            let req = rx.recv().await.expect("a second request");
            let _ = req.reply.send(Ok(()));
        });
        assert_eq!(
            ui.submit(&PolicyKey::new("ml", "fraud-model"), Command::Abort)
                .await,
            Submit::Refused(CommandRefused::UnknownPolicy)
        );
        let x = PolicyKey::new("default", "x");
        assert_eq!(ui.submit(&x, Command::Pause).await, Submit::Accepted);
        answer.await.expect("loop task");
        assert_eq!(
            Ui::new().submit(&x, Command::Pause).await,
            Submit::Unsupported
        );
    }
}
