//! Kubernetes: per cell a kustomize base (ServiceAccount, ConfigMap, the backup, prune and check
//! CronJobs, the restore and verify Jobs), the optional features as kustomize components, and an
//! example overlay. Every object is a typed `k8s-openapi` value.

use std::collections::BTreeMap;

use anyhow::Result;
use harness::matrix::Cell;
use k8s_openapi::api::batch::v1::{
    CronJob, CronJobSpec, JobSpec, JobTemplateSpec, PodFailurePolicy,
    PodFailurePolicyOnExitCodesRequirement, PodFailurePolicyOnPodConditionsPattern,
    PodFailurePolicyRule,
};
use k8s_openapi::api::core::v1::{
    Capabilities, ConfigMap, ConfigMapEnvSource, Container, EmptyDirVolumeSource, EnvFromSource,
    EnvVar, KeyToPath, Namespace, PodSecurityContext, PodSpec, PodTemplateSpec,
    ResourceRequirements, SeccompProfile, SecretVolumeSource, SecurityContext, ServiceAccount,
    Volume, VolumeMount,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use serde::Serialize;

use super::plan::{
    self, Engine, Feature, Op, SecretFile, Storage, FEATURES, IMAGE_UID, K8S_SECRETS_DIR, OPS,
};
use super::{yaml, Files, GENERATED};

/// The container's name, which the `podFailurePolicy` names too.
pub const CONTAINER: &str = "backup-runner";

/// The example overlay's cell.
pub const EXAMPLE_CELL: &str = "postgres-17";

/// The IRSA and GKE workload identity annotations, with placeholder values.
pub const IRSA_ANNOTATION: &str = "eks.amazonaws.com/role-arn";
pub const GKE_ANNOTATION: &str = "iam.gke.io/gcp-service-account";

fn base_dir(cell: &Cell) -> String {
    format!("kubernetes/base/{}", cell.name)
}

fn labels(cell: &Cell, op: Option<Op>) -> BTreeMap<String, String> {
    let mut l = BTreeMap::from([
        (
            "app.kubernetes.io/name".to_string(),
            "backup-runner".to_string(),
        ),
        ("app.kubernetes.io/instance".to_string(), cell.name.clone()),
    ]);
    if let Some(op) = op {
        l.insert("app.kubernetes.io/component".into(), op.name().into());
    }
    l
}

fn meta(name: String, cell: &Cell, op: Option<Op>) -> ObjectMeta {
    ObjectMeta {
        name: Some(name),
        labels: Some(labels(cell, op)),
        ..Default::default()
    }
}

fn env(name: &str, value: &str) -> EnvVar {
    EnvVar {
        name: name.into(),
        value: Some(value.into()),
        ..Default::default()
    }
}

fn quantity(s: String) -> Quantity {
    Quantity(s)
}

fn service_account(cell: &Cell) -> ServiceAccount {
    let mut metadata = meta(plan::object_prefix(cell), cell, None);
    metadata.annotations = Some(BTreeMap::from([
        (
            IRSA_ANNOTATION.to_string(),
            "arn:aws:iam::111122223333:role/backup-runner".to_string(),
        ),
        (
            GKE_ANNOTATION.to_string(),
            "backup-runner@PROJECT_ID.iam.gserviceaccount.com".to_string(),
        ),
    ]));
    ServiceAccount {
        metadata,
        automount_service_account_token: Some(false),
        ..Default::default()
    }
}

fn config_map(cell: &Cell, engine: Engine) -> ConfigMap {
    let mut data: BTreeMap<String, String> = engine
        .settings(cell, Storage::AwsS3)
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect();
    for k in plan::OPTIONAL_SETTINGS {
        data.insert(k.into(), String::new());
    }
    ConfigMap {
        metadata: meta(plan::object_prefix(cell), cell, None),
        data: Some(data),
        ..Default::default()
    }
}

/// The `*_FILE` variables the base sets: the secrets no optional feature owns.
fn base_secret_env(op: Op) -> Vec<EnvVar> {
    op.secrets()
        .into_iter()
        .filter(|s| s.feature.is_none())
        .map(|s| env(s.var, &s.k8s_path()))
        .collect()
}

fn pod_failure_policy() -> PodFailurePolicy {
    PodFailurePolicy {
        rules: vec![
            // Bad config, refused credentials, versions, a damaged backup, a taken key, stale
            // backups: the same inputs fail the same way.
            PodFailurePolicyRule {
                action: "FailJob".into(),
                on_exit_codes: Some(PodFailurePolicyOnExitCodesRequirement {
                    container_name: Some(CONTAINER.into()),
                    operator: "In".into(),
                    values: plan::fail_job_codes(),
                }),
                ..Default::default()
            },
            // Evicted, preempted, drained: not the job's fault, and not counted.
            PodFailurePolicyRule {
                action: "Ignore".into(),
                on_pod_conditions: Some(vec![PodFailurePolicyOnPodConditionsPattern {
                    type_: "DisruptionTarget".into(),
                    status: "True".into(),
                }]),
                ..Default::default()
            },
        ],
    }
}

fn pod_spec(cell: &Cell, engine: Engine, op: Op) -> PodSpec {
    let res = op.resources(engine);
    let mut env_vars: Vec<EnvVar> = op.env().into_iter().map(|(k, v)| env(k, v)).collect();
    // The runner's private files (a 0600 passfile for the tools) go to TMPDIR: a small tmpfs,
    // since the root filesystem is read-only and the password should not reach a node's disk.
    env_vars.push(env("TMPDIR", "/tmp"));
    env_vars.extend(base_secret_env(op));
    let secrets: Vec<SecretFile> = op.secrets();
    let container = Container {
        name: CONTAINER.into(),
        image: Some(cell.image()),
        env_from: Some(vec![EnvFromSource {
            config_map_ref: Some(ConfigMapEnvSource {
                name: plan::object_prefix(cell),
                ..Default::default()
            }),
            ..Default::default()
        }]),
        env: Some(env_vars),
        resources: Some(ResourceRequirements {
            requests: Some(BTreeMap::from([
                ("cpu".to_string(), quantity(res.cpu_request())),
                (
                    "memory".to_string(),
                    quantity(format!("{}Mi", res.memory_request_mib)),
                ),
            ])),
            // No CPU limit: throttling only makes a backup slower; COMPRESSION_THREADS bounds
            // the runner's threads instead.
            limits: Some(BTreeMap::from([(
                "memory".to_string(),
                quantity(format!("{}Mi", res.memory_limit_mib)),
            )])),
            ..Default::default()
        }),
        security_context: Some(SecurityContext {
            run_as_non_root: Some(true),
            run_as_user: Some(IMAGE_UID),
            run_as_group: Some(IMAGE_UID),
            read_only_root_filesystem: Some(true),
            allow_privilege_escalation: Some(false),
            capabilities: Some(Capabilities {
                drop: Some(vec!["ALL".into()]),
                ..Default::default()
            }),
            seccomp_profile: Some(SeccompProfile {
                type_: "RuntimeDefault".into(),
                ..Default::default()
            }),
            ..Default::default()
        }),
        volume_mounts: Some(vec![
            VolumeMount {
                name: "tmp".into(),
                mount_path: "/tmp".into(),
                ..Default::default()
            },
            VolumeMount {
                name: "secrets".into(),
                mount_path: K8S_SECRETS_DIR.into(),
                read_only: Some(true),
                ..Default::default()
            },
        ]),
        ..Default::default()
    };
    PodSpec {
        service_account_name: Some(plan::object_prefix(cell)),
        automount_service_account_token: Some(false),
        restart_policy: Some("Never".into()),
        // The runner stops its child, aborts the upload and reports within 8 s of SIGTERM.
        termination_grace_period_seconds: Some(30),
        security_context: Some(PodSecurityContext {
            run_as_non_root: Some(true),
            run_as_user: Some(IMAGE_UID),
            run_as_group: Some(IMAGE_UID),
            // The secret files are group-readable by the image's group.
            fs_group: Some(IMAGE_UID),
            seccomp_profile: Some(SeccompProfile {
                type_: "RuntimeDefault".into(),
                ..Default::default()
            }),
            ..Default::default()
        }),
        containers: vec![container],
        volumes: Some(vec![
            Volume {
                name: "tmp".into(),
                empty_dir: Some(EmptyDirVolumeSource {
                    medium: Some("Memory".into()),
                    size_limit: Some(quantity("16Mi".into())),
                }),
                ..Default::default()
            },
            Volume {
                name: "secrets".into(),
                secret: Some(SecretVolumeSource {
                    secret_name: Some(plan::object_prefix(cell)),
                    items: Some(
                        secrets
                            .iter()
                            .map(|s| KeyToPath {
                                key: s.key.into(),
                                path: s.key.into(),
                                ..Default::default()
                            })
                            .collect(),
                    ),
                    // 0440: readable by the owner and fsGroup only.
                    default_mode: Some(0o440),
                    // Keys that are absent are left out: the runner names any `*_FILE` it
                    // cannot read (exit 2) instead of the pod waiting for a volume.
                    optional: Some(true),
                }),
                ..Default::default()
            },
        ]),
        ..Default::default()
    }
}

fn job_spec(cell: &Cell, engine: Engine, op: Op) -> JobSpec {
    JobSpec {
        backoff_limit: Some(op.backoff_limit()),
        active_deadline_seconds: Some(op.deadline_secs()),
        ttl_seconds_after_finished: Some(plan::TTL_AFTER_FINISHED_SECS),
        pod_failure_policy: Some(pod_failure_policy()),
        template: PodTemplateSpec {
            metadata: Some(ObjectMeta {
                labels: Some(labels(cell, Some(op))),
                ..Default::default()
            }),
            spec: Some(pod_spec(cell, engine, op)),
        },
        ..Default::default()
    }
}

/// Every job is a CronJob. Restore and verify are suspended ones: templates for the Jobs an
/// operator starts (`kubectl create job --from=cronjob/…`). A Job in the base would break
/// `kubectl apply` at the next image change (a Job's template is immutable), and re-applying
/// would suspend one that runs.
fn cron_job(cell: &Cell, engine: Engine, op: Op) -> CronJob {
    CronJob {
        metadata: meta(plan::job_name(cell, op), cell, Some(op)),
        spec: Some(CronJobSpec {
            schedule: op.schedule().into(),
            suspend: op.on_demand().then_some(true),
            time_zone: Some("Etc/UTC".into()),
            concurrency_policy: Some("Forbid".into()),
            // A run missed (the controller down, the previous one still running) still starts
            // within this window.
            starting_deadline_seconds: Some(match op {
                Op::Check => 600,
                _ => 3600,
            }),
            successful_jobs_history_limit: Some(3),
            failed_jobs_history_limit: Some(3),
            job_template: JobTemplateSpec {
                metadata: Some(ObjectMeta {
                    labels: Some(labels(cell, Some(op))),
                    ..Default::default()
                }),
                spec: Some(job_spec(cell, engine, op)),
            },
        }),
        ..Default::default()
    }
}

#[derive(Serialize, Default)]
#[serde(rename_all = "camelCase")]
struct Kustomization {
    api_version: &'static str,
    kind: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    namespace: Option<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    resources: Vec<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    components: Vec<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    images: Vec<ImageChange>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    patches: Vec<Patch>,
}

impl Kustomization {
    fn new() -> Self {
        Kustomization {
            api_version: "kustomize.config.k8s.io/v1beta1",
            kind: "Kustomization",
            ..Default::default()
        }
    }

    fn component() -> Self {
        Kustomization {
            api_version: "kustomize.config.k8s.io/v1alpha1",
            kind: "Component",
            ..Default::default()
        }
    }
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct ImageChange {
    name: String,
    new_name: String,
    new_tag: String,
}

#[derive(Serialize)]
struct Patch {
    path: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    target: Option<Target>,
}

#[derive(Serialize, Default)]
#[serde(rename_all = "camelCase")]
struct Target {
    #[serde(skip_serializing_if = "Option::is_none")]
    kind: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    name: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    label_selector: Option<String>,
}

/// One operation of a JSON patch (RFC 6902).
#[derive(Serialize)]
struct JsonPatch<T: Serialize> {
    op: &'static str,
    path: String,
    value: T,
}

/// The base of one cell.
pub fn cell(cell: &Cell, files: &mut Files) -> Result<()> {
    let engine = Engine::of(cell)?;
    let dir = base_dir(cell);
    let header = format!(
        "{GENERATED}\nThe kustomize base of {} ({}). See deploy/README.md.",
        cell.name,
        cell.image()
    );
    let mut resources = vec![
        "serviceaccount.yaml".to_string(),
        "configmap.yaml".to_string(),
    ];
    files.insert(
        format!("{dir}/serviceaccount.yaml"),
        yaml(&header, &service_account(cell))?,
    );
    files.insert(
        format!("{dir}/configmap.yaml"),
        yaml(&header, &config_map(cell, engine))?,
    );
    for op in OPS {
        let file = format!("{}-cronjob.yaml", op.name());
        files.insert(
            format!("{dir}/{file}"),
            yaml(&header, &cron_job(cell, engine, op))?,
        );
        resources.push(file);
    }
    let kustomization = Kustomization {
        resources,
        ..Kustomization::new()
    };
    files.insert(
        format!("{dir}/kustomization.yaml"),
        yaml(&header, &kustomization)?,
    );
    Ok(())
}

/// The components (one per optional feature) and the example overlay.
pub fn shared(cells: &[&Cell], files: &mut Files) -> Result<()> {
    for feature in FEATURES {
        component(feature, files)?;
    }
    let example = cells
        .iter()
        .find(|c| c.name == EXAMPLE_CELL)
        .copied()
        .or(cells.first().copied());
    if let Some(cell) = example {
        example_overlay(cell, files)?;
    }
    Ok(())
}

/// A component that sets a feature's `*_FILE` variables on the jobs that mount its secrets:
/// one JSON patch per kind of object and set of variables.
fn component(feature: Feature, files: &mut Files) -> Result<()> {
    let dir = format!("kubernetes/components/{}", feature.name());
    let header = format!(
        "{GENERATED}\nThe `{}` component: add it to an overlay's `components`. See deploy/README.md.",
        feature.name()
    );
    // The variables → the operations that get them.
    let mut groups: BTreeMap<Vec<SecretFile>, Vec<Op>> = BTreeMap::new();
    for op in OPS {
        let vars: Vec<SecretFile> = op
            .secrets()
            .into_iter()
            .filter(|s| s.feature == Some(feature))
            .collect();
        if !vars.is_empty() {
            groups.entry(vars).or_default().push(op);
        }
    }
    let mut patches = Vec::new();
    for (vars, ops) in groups {
        let names: Vec<&str> = ops.iter().map(|o| o.name()).collect();
        let every = ops.len() == OPS.len();
        let file = if every {
            "all-jobs.yaml".to_string()
        } else {
            format!("{}.yaml", names.join("-"))
        };
        let containers = "/spec/jobTemplate/spec/template/spec/containers/0";
        let ops: Vec<JsonPatch<EnvVar>> = vars
            .iter()
            .map(|s| JsonPatch {
                op: "add",
                path: format!("{containers}/env/-"),
                value: env(s.var, &s.k8s_path()),
            })
            .collect();
        files.insert(format!("{dir}/{file}"), yaml(&header, &ops)?);
        patches.push(Patch {
            path: file,
            target: Some(Target {
                kind: Some("CronJob".into()),
                label_selector: Some(if every {
                    "app.kubernetes.io/name=backup-runner".to_string()
                } else if names.len() == 1 {
                    format!(
                        "app.kubernetes.io/name=backup-runner,app.kubernetes.io/component={}",
                        names[0]
                    )
                } else {
                    format!(
                        "app.kubernetes.io/name=backup-runner,app.kubernetes.io/component in ({})",
                        names.join(",")
                    )
                }),
                ..Default::default()
            }),
        });
    }
    let kustomization = Kustomization {
        patches,
        ..Kustomization::component()
    };
    files.insert(
        format!("{dir}/kustomization.yaml"),
        yaml(&header, &kustomization)?,
    );
    Ok(())
}

/// The values the example overlay sets, checked by the tests after rendering.
pub mod example {
    pub const NAMESPACE: &str = "backups";
    pub const REGISTRY: &str = "registry.example.com/platform";
    pub const BACKUP_SCHEDULE: &str = "30 1 * * *";
    pub const BUCKET: &str = "shop-backups";
    pub const ROLE_ARN: &str = "arn:aws:iam::123456789012:role/shop-backups";
}

/// An overlay to copy: its own namespace (enforcing the restricted Pod Security Standard), the
/// image from a registry, another backup time, the database and bucket, an IRSA role, and
/// signed callbacks.
fn example_overlay(cell: &Cell, files: &mut Files) -> Result<()> {
    let dir = "kubernetes/overlays/example";
    let header = "An example overlay: copy it and change the values. See deploy/README.md.\n\
                  Generated by `cargo xtask manifests` (xtask/src/manifests/).";
    let prefix = plan::object_prefix(cell);

    let namespace = Namespace {
        metadata: ObjectMeta {
            name: Some(example::NAMESPACE.into()),
            labels: Some(
                ["enforce", "audit", "warn"]
                    .iter()
                    .map(|mode| {
                        (
                            format!("pod-security.kubernetes.io/{mode}"),
                            "restricted".to_string(),
                        )
                    })
                    .collect(),
            ),
            ..Default::default()
        },
        ..Default::default()
    };
    files.insert(format!("{dir}/namespace.yaml"), yaml(header, &namespace)?);

    // A strategic-merge patch of the ConfigMap: only the keys given change.
    let settings = ConfigMap {
        metadata: ObjectMeta {
            name: Some(prefix.clone()),
            ..Default::default()
        },
        data: Some(BTreeMap::from(
            [
                ("DB_HOST", "shop-db.databases.svc.cluster.local"),
                ("DB_NAME", "shop"),
                ("STORAGE_BUCKET", example::BUCKET),
                ("STORAGE_REGION", "eu-west-1"),
                ("STORAGE_PREFIX", "shop"),
                (
                    "CALLBACK_URL",
                    "https://control-plane.example.com/backup-callbacks",
                ),
                (
                    "METRICS_PUSHGATEWAY_URL",
                    "http://pushgateway.monitoring.svc.cluster.local:9091",
                ),
            ]
            .map(|(k, v)| (k.to_string(), v.to_string())),
        )),
        ..Default::default()
    };
    files.insert(format!("{dir}/settings.yaml"), yaml(header, &settings)?);

    let service_account = ServiceAccount {
        metadata: ObjectMeta {
            name: Some(prefix.clone()),
            annotations: Some(BTreeMap::from([(
                IRSA_ANNOTATION.to_string(),
                example::ROLE_ARN.to_string(),
            )])),
            ..Default::default()
        },
        ..Default::default()
    };
    files.insert(
        format!("{dir}/serviceaccount.yaml"),
        yaml(header, &service_account)?,
    );

    let schedule = [JsonPatch {
        op: "replace",
        path: "/spec/schedule".into(),
        value: example::BACKUP_SCHEDULE,
    }];
    files.insert(
        format!("{dir}/backup-schedule.yaml"),
        yaml(header, &schedule)?,
    );

    let image = cell.image();
    let (image_name, tag) = image.split_once(':').expect("images are name:tag");
    let kustomization = Kustomization {
        namespace: Some(example::NAMESPACE.into()),
        resources: vec!["namespace.yaml".into(), format!("../../base/{}", cell.name)],
        components: vec![format!("../../components/{}", Feature::Callbacks.name())],
        images: vec![ImageChange {
            name: image_name.into(),
            new_name: format!("{}/{image_name}", example::REGISTRY),
            new_tag: tag.into(),
        }],
        patches: vec![
            Patch {
                path: "settings.yaml".into(),
                target: None,
            },
            Patch {
                path: "serviceaccount.yaml".into(),
                target: None,
            },
            Patch {
                path: "backup-schedule.yaml".into(),
                target: Some(Target {
                    kind: Some("CronJob".into()),
                    name: Some(plan::job_name(cell, Op::Backup)),
                    ..Default::default()
                }),
            },
        ],
        ..Kustomization::new()
    };
    files.insert(
        format!("{dir}/kustomization.yaml"),
        yaml(header, &kustomization)?,
    );
    Ok(())
}
