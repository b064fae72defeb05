use super::*;

const NAMES: Names<'static> = Names {
    deployment: "fraud-model",
    subset_label: DEFAULT_SUBSET_LABEL,
    canary_subset: "canary",
};

fn view(hash: &str, images: &str, replicas: i32, ready: bool) -> DeploymentView {
    DeploymentView {
        template_hash: hash.into(),
        images: images.into(),
        replicas,
        ready,
        subset_label: Some("canary".into()),
        copied_hash: None,
    }
}

fn stable(copied: &str, images: &str, replicas: i32, ready: bool) -> DeploymentView {
    DeploymentView {
        copied_hash: Some(copied.into()),
        subset_label: Some("stable".into()),
        ..view(copied, images, replicas, ready)
    }
}

fn at(stage: LifecycleStage, stable_hash: &str, canary_hash: Option<&str>) -> CanaryPolicyStatus {
    CanaryPolicyStatus {
        lifecycle: Some(LifecycleStatus {
            stage,
            stable_hash: Some(stable_hash.into()),
            canary_hash: canary_hash.map(Into::into),
            rejected_hash: None,
        }),
        ..Default::default()
    }
}

/// A whole promotion, one reconcile after the other, each fed what the cluster would show.
#[test]
fn first_sight_then_a_commit_is_promoted_and_stable_runs_it() {
    // First sight: stable made from the template, then all traffic on it, canary to zero.
    let s0 = CanaryPolicyStatus::default();
    let p = plan(
        NAMES,
        &s0,
        &Observed {
            canary: Some(view("v1", "m:1", 3, true)),
            stable: None,
        },
    );
    assert_eq!(p.actions, [Action::CreateStable { replicas: 3 }]);
    assert!(matches!(p.gate, Gate::Hold(ref w) if w == "creating fraud-model-stable from m:1"));
    let s1 = CanaryPolicyStatus {
        lifecycle: Some(p.next),
        ..s0
    };
    let waiting = plan(
        NAMES,
        &s1,
        &Observed {
            canary: Some(view("v1", "m:1", 3, true)),
            stable: Some(stable("v1", "m:1", 3, false)),
        },
    );
    assert!(waiting.actions.is_empty() && !waiting.route_all_stable);
    let p = plan(
        NAMES,
        &s1,
        &Observed {
            canary: Some(view("v1", "m:1", 3, true)),
            stable: Some(stable("v1", "m:1", 3, true)),
        },
    );
    assert!(p.route_all_stable);
    assert_eq!(p.actions, [Action::ScaleCanary(0)]);
    assert_eq!(p.next.stage, LifecycleStage::Idle);
    assert!(p.news.unwrap().starts_with("initialized"));
    let idle = CanaryPolicyStatus {
        lifecycle: Some(p.next),
        ..Default::default()
    };
    // Nothing new: idle, no tick.
    let p = plan(
        NAMES,
        &idle,
        &Observed {
            canary: Some(view("v1", "m:1", 0, true)),
            stable: Some(stable("v1", "m:1", 3, true)),
        },
    );
    assert_eq!((p.gate, p.actions.len()), (Gate::Idle, 0));
    // Replicas a GitOps sync put back on the same template are scaled down again.
    let synced = Observed {
        canary: Some(view("v1", "m:1", 3, true)),
        stable: Some(stable("v1", "m:1", 3, true)),
    };
    let p = plan(NAMES, &idle, &synced);
    assert_eq!(
        (p.gate, p.actions),
        (Gate::Idle, vec![Action::ScaleCanary(0)])
    );
    // A commit (new template): the canary is scaled up to stable's replicas, then, once ready,
    // the rollout starts on its images.
    let committed = Observed {
        canary: Some(view("v2", "m:2", 0, true)),
        stable: Some(stable("v1", "m:1", 3, true)),
    };
    assert_eq!(
        plan(NAMES, &idle, &committed).actions,
        [Action::ScaleCanary(3)]
    );
    let mut scaled = committed.clone();
    scaled.canary = Some(view("v2", "m:2", 3, false));
    assert!(matches!(plan(NAMES, &idle, &scaled).gate, Gate::Hold(_)));
    scaled.canary = Some(view("v2", "m:2", 3, true));
    let p = plan(NAMES, &idle, &scaled);
    assert_eq!(
        p.gate,
        Gate::Rollout {
            version: "m:2".into(),
            restart: true
        }
    );
    assert_eq!(p.next.stage, LifecycleStage::Rolling);
    // Mid-rollout: ticks, no restart.
    let rolling = CanaryPolicyStatus {
        phase: Phase::Progressing,
        canary_weight_bp: 2500,
        lifecycle: Some(p.next),
        ..Default::default()
    };
    let p = plan(NAMES, &rolling, &scaled);
    assert_eq!(
        p.gate,
        Gate::Rollout {
            version: "m:2".into(),
            restart: false
        }
    );
    // Promoted by the rollout: copy to stable, wait for it, then all on stable, canary to zero.
    let promoted = CanaryPolicyStatus {
        phase: Phase::Promoted,
        canary_weight_bp: 10_000,
        ..rolling
    };
    let p = plan(NAMES, &promoted, &scaled);
    assert_eq!(p.actions, [Action::CopyToStable]);
    assert!(!p.route_all_stable, "stable does not run it yet");
    let promoting = CanaryPolicyStatus {
        lifecycle: Some(p.next),
        ..promoted
    };
    let mut copying = scaled.clone();
    copying.stable = Some(stable("v2", "m:2", 3, false));
    let p = plan(NAMES, &promoting, &copying);
    assert!(
        p.actions.is_empty() && !p.route_all_stable,
        "waits for stable to be ready"
    );
    copying.stable = Some(stable("v2", "m:2", 3, true));
    let p = plan(NAMES, &promoting, &copying);
    assert!(p.route_all_stable);
    assert_eq!(p.actions, [Action::ScaleCanary(0)]);
    assert_eq!(p.next.stage, LifecycleStage::Idle);
    assert_eq!(p.next.stable_hash.as_deref(), Some("v2"));
    assert_eq!(
        p.news.as_deref(),
        Some(
            "promoted: fraud-model-stable runs m:2, all traffic on stable, fraud-model scaled to 0"
        )
    );
}

#[test]
fn a_rolled_back_version_is_scaled_to_zero_and_not_retried_until_the_next_commit() {
    let rolled_back = CanaryPolicyStatus {
        phase: Phase::RolledBack,
        ..at(LifecycleStage::Rolling, "v1", Some("v2"))
    };
    let obs = Observed {
        canary: Some(view("v2", "m:2", 3, true)),
        stable: Some(stable("v1", "m:1", 3, true)),
    };
    let p = plan(NAMES, &rolled_back, &obs);
    assert_eq!(p.actions, [Action::ScaleCanary(0)]);
    assert_eq!(p.next.stage, LifecycleStage::Idle);
    assert!(p.news.unwrap().starts_with("rolled back"));
    let idle = CanaryPolicyStatus {
        lifecycle: Some(p.next),
        ..rolled_back
    };
    let mut at_zero = obs.clone();
    at_zero.canary = Some(view("v2", "m:2", 0, true));
    assert_eq!(plan(NAMES, &idle, &at_zero).gate, Gate::Idle, "not retried");
    // A GitOps sync putting the replicas back is scaled down again.
    assert_eq!(plan(NAMES, &idle, &obs).actions, [Action::ScaleCanary(0)]);
    at_zero.canary = Some(view("v3", "m:3", 0, true));
    assert_eq!(
        plan(NAMES, &idle, &at_zero).actions,
        [Action::ScaleCanary(3)],
        "the next commit"
    );
}

/// A template change with the same images (an env or args change) is a new model too; a commit
/// mid-rollout restarts it.
#[test]
fn any_template_change_is_a_new_rollout() {
    let idle = at(LifecycleStage::Idle, "v1", None);
    let obs = Observed {
        canary: Some(view("v1-env", "m:1", 3, true)),
        stable: Some(stable("v1", "m:1", 3, true)),
    };
    assert_eq!(
        plan(NAMES, &idle, &obs).gate,
        Gate::Rollout {
            version: "m:1".into(),
            restart: true
        }
    );
    let rolling = CanaryPolicyStatus {
        phase: Phase::Progressing,
        ..at(LifecycleStage::Rolling, "v1", Some("v2"))
    };
    let p = plan(NAMES, &rolling, &obs);
    assert_eq!(
        p.gate,
        Gate::Rollout {
            version: "m:1".into(),
            restart: true
        }
    );
    assert_eq!(p.next.canary_hash.as_deref(), Some("v1-env"));
}

#[test]
fn a_missing_deployment_or_subset_label_holds_with_the_reason() {
    let s = CanaryPolicyStatus::default();
    let p = plan(NAMES, &s, &Observed::default());
    assert_eq!(
        p.gate,
        Gate::Hold("Deployment fraud-model not found".into())
    );
    let mut unlabelled = view("v1", "m:1", 3, true);
    unlabelled.subset_label = None;
    let p = plan(
        NAMES,
        &s,
        &Observed {
            canary: Some(unlabelled),
            stable: None,
        },
    );
    assert!(
        p.actions.is_empty(),
        "nothing created from a template the subsets cannot select"
    );
    assert!(matches!(p.gate, Gate::Hold(ref w) if w.contains("mlcanary.io/subset: canary")));
    // A stable deleted by hand is made again.
    let idle = at(LifecycleStage::Idle, "v1", None);
    let p = plan(
        NAMES,
        &idle,
        &Observed {
            canary: Some(view("v1", "m:1", 0, true)),
            stable: None,
        },
    );
    assert_eq!(p.actions, [Action::CreateStable { replicas: 1 }]);
}

#[test]
fn the_stable_copy_hashes_like_its_canary_and_any_other_change_does_not() {
    let canary = serde_json::json!({
        "metadata": {"labels": {"app": "fraud-model", "mlcanary.io/subset": "canary"}},
        "spec": {"containers": [{"name": "model", "image": "m:2", "env": [{"name": "A", "value": "1"}]}]}
    });
    let stable = stable_template(&canary, DEFAULT_SUBSET_LABEL, "stable");
    assert_eq!(stable["metadata"]["labels"]["mlcanary.io/subset"], "stable");
    assert_eq!(stable["metadata"]["labels"]["app"], "fraud-model");
    let h = template_hash(&canary, DEFAULT_SUBSET_LABEL);
    assert_eq!(h, template_hash(&stable, DEFAULT_SUBSET_LABEL));
    assert_eq!(h.len(), 16);
    let mut env = canary.clone();
    env["spec"]["containers"][0]["env"][0]["value"] = "2".into();
    assert_ne!(h, template_hash(&env, DEFAULT_SUBSET_LABEL));
    // Key order is not a change.
    let reordered: serde_json::Value = serde_json::from_str(
        r#"{"spec": {"containers": [{"env": [{"value": "1", "name": "A"}], "image": "m:2", "name": "model"}]},
            "metadata": {"labels": {"mlcanary.io/subset": "canary", "app": "fraud-model"}}}"#,
    )
    .unwrap();
    assert_eq!(h, template_hash(&reordered, DEFAULT_SUBSET_LABEL));
}
