//! The thin writer: applies an [`Update`] — the status through the `/status` subresource with
//! server-side apply (field manager `mlcanary`, forced: the status is ours alone), then the Events.
//! No decisions here.

use kube::api::{Api, Patch, PatchParams};
use kube::runtime::events::{Event as KubeEvent, EventType as KubeEventType, Recorder};
use kube::{Resource, ResourceExt};

use super::plan::{status_patch, Event, EventType, Update};
use crate::policy::CanaryPolicy;
use crate::traffic::istio::FIELD_MANAGER;

/// Apply `update` to `obj`. A failed status write is an error (the reconcile is retried with
/// backoff); a failed Event is only logged: Events are best-effort, and failing the reconcile for one
/// would re-run an analysis. Returns how many Events could not be published.
pub async fn write(
    api: &Api<CanaryPolicy>,
    recorder: &Recorder,
    obj: &CanaryPolicy,
    update: &Update,
) -> Result<usize, kube::Error> {
    if let Some(status) = &update.status {
        let params = PatchParams::apply(FIELD_MANAGER).force();
        api.patch_status(
            &obj.name_any(),
            &params,
            &Patch::Apply(status_patch(status)),
        )
        .await?;
    }
    let reference = obj.object_ref(&());
    let mut failed = 0;
    for e in &update.events {
        if let Err(err) = recorder.publish(&kube_event(e), &reference).await {
            tracing::warn!(policy = %obj.name_any(), reason = %e.reason, error = %err, "cannot publish event");
            failed += 1;
        }
    }
    Ok(failed)
}

/// kube's Event for ours.
pub fn kube_event(e: &Event) -> KubeEvent {
    KubeEvent {
        type_: match e.type_ {
            EventType::Normal => KubeEventType::Normal,
            EventType::Warning => KubeEventType::Warning,
        },
        reason: e.reason.to_owned(),
        note: Some(e.note.clone()),
        action: e.action.to_owned(),
        secondary: None,
    }
}
