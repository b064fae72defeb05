//! What both loops do after a tick or a command took effect: the status page's history and the
//! controller's own metrics learn the new status and its events. (Progress lines, `status.json`
//! and Kubernetes Events are each loop's own output; what they say of an event is
//! [`mlcanary_core::events`].)

use std::sync::Arc;

use crate::engine::TickOutput;
use crate::policy::ValidatedPolicy;
use crate::server::ControllerMetrics;
use crate::ui::Ui;

/// Feeds the history and the controller's metrics; cheap to clone.
#[derive(Debug, Clone)]
pub struct Recorder {
    pub ui: Arc<Ui>,
    pub metrics: Arc<ControllerMetrics>,
}

impl Recorder {
    /// Record `out` of `policy` in `namespace` (a tick's verdicts, or a command's `None`).
    pub fn record(&self, namespace: &str, policy: &ValidatedPolicy, out: &TickOutput) {
        self.ui.record(
            namespace,
            policy,
            &out.status,
            out.verdicts.as_deref(),
            &out.events,
            out.at,
        );
        self.metrics
            .observe_status(namespace, &policy.name, &out.status);
        self.metrics
            .observe_events(namespace, &policy.name, &out.events);
    }
}
