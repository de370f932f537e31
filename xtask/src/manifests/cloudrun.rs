//! Cloud Run: per cell one Job YAML per operation, for `gcloud run jobs replace`, and `deploy.sh`
//! with the same jobs as `gcloud run jobs deploy` commands plus Cloud Scheduler triggers for the
//! scheduled ones. Both are written from one [`RunJob`] value, so they cannot drift apart.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use anyhow::{ensure, Result};
use harness::matrix::Cell;
use k8s_openapi::api::core::v1::{
    Container, EnvVar, KeyToPath, ResourceRequirements, SecretVolumeSource, Volume, VolumeMount,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use serde::Serialize;

use super::plan::{self, Engine, Feature, Op, SecretFile, Storage, OPS};
use super::{yaml, Files, GENERATED};

/// The image's placeholder location (Artifact Registry); `deploy.sh` builds it from variables.
pub fn image_placeholder(cell: &Cell) -> String {
    format!(
        "REGION-docker.pkg.dev/PROJECT_ID/backup-runner/{}",
        cell.image()
    )
}

pub const SERVICE_ACCOUNT_PLACEHOLDER: &str = "backup-runner@PROJECT_ID.iam.gserviceaccount.com";

/// The Secret Manager secret holding one key of a cell.
pub fn secret_name(cell: &Cell, s: SecretFile) -> String {
    format!("{}-{}", plan::object_prefix(cell), s.key)
}

/// The secrets a Cloud Run job mounts: the database password, and the HMAC keys that GCS's S3
/// API needs (the job's Google identity does not sign S3 requests). Callbacks and encryption
/// are added by hand (deploy/README.md).
fn secrets(op: Op) -> Vec<SecretFile> {
    op.secrets()
        .into_iter()
        .filter(|s| s.feature.is_none() || s.feature == Some(Feature::StorageKeys))
        .collect()
}

/// The parts of a Cloud Run job that the YAML and the script both state.
struct RunJob {
    name: String,
    labels: BTreeMap<String, String>,
    env: Vec<(String, String)>,
    /// (mount directory, file, Secret Manager secret)
    secrets: Vec<(String, String, String)>,
    cpu: u32,
    memory_mib: u32,
    max_retries: i32,
    timeout_secs: i64,
}

fn run_job(cell: &Cell, op: Op) -> Result<RunJob> {
    let engine = Engine::of(cell)?;
    let res = op.resources(engine);
    let mut env: Vec<(String, String)> = engine
        .settings(cell, Storage::Gcs)
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect();
    env.extend(op.env().into_iter().map(|(k, v)| (k.into(), v.into())));
    let secrets: Vec<(String, String, String)> = secrets(op)
        .into_iter()
        .map(|s| {
            env.push((s.var.into(), s.cloud_run_path()));
            (s.cloud_run_dir(), "value".into(), secret_name(cell, s))
        })
        .collect();
    Ok(RunJob {
        name: plan::job_name(cell, op),
        labels: BTreeMap::from([
            ("app".to_string(), "backup-runner".to_string()),
            ("cell".to_string(), plan::dns_name(cell)),
            ("operation".to_string(), op.name().to_string()),
        ]),
        env,
        secrets,
        cpu: res.cloud_run_cpu,
        memory_mib: res.cloud_run_memory_mib(),
        max_retries: op.cloud_run_max_retries(),
        timeout_secs: op.deadline_secs(),
    })
}

// The Cloud Run Admin API v1 `Job` (namespaces.jobs), as far as these jobs use it. Containers and
// volumes have Kubernetes' shapes, so they are k8s-openapi's types.

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct JobYaml {
    api_version: &'static str,
    kind: &'static str,
    metadata: Metadata,
    spec: JobSpec,
}

#[derive(Serialize)]
struct Metadata {
    name: String,
    labels: BTreeMap<String, String>,
}

#[derive(Serialize)]
struct JobSpec {
    template: ExecutionTemplate,
}

#[derive(Serialize)]
struct ExecutionTemplate {
    spec: ExecutionSpec,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct ExecutionSpec {
    task_count: i32,
    template: TaskTemplate,
}

#[derive(Serialize)]
struct TaskTemplate {
    spec: TaskSpec,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct TaskSpec {
    containers: Vec<Container>,
    volumes: Vec<Volume>,
    max_retries: i32,
    timeout_seconds: i64,
    service_account_name: String,
}

fn job_yaml(cell: &Cell, job: &RunJob) -> JobYaml {
    let volume_name = |dir: &str| dir.rsplit('/').next().expect("a directory").to_string();
    let container = Container {
        image: Some(image_placeholder(cell)),
        env: Some(
            job.env
                .iter()
                .map(|(k, v)| EnvVar {
                    name: k.clone(),
                    value: Some(v.clone()),
                    ..Default::default()
                })
                .collect(),
        ),
        resources: Some(ResourceRequirements {
            limits: Some(BTreeMap::from([
                ("cpu".to_string(), Quantity(job.cpu.to_string())),
                (
                    "memory".to_string(),
                    Quantity(format!("{}Mi", job.memory_mib)),
                ),
            ])),
            ..Default::default()
        }),
        volume_mounts: Some(
            job.secrets
                .iter()
                .map(|(dir, _, _)| VolumeMount {
                    name: volume_name(dir),
                    mount_path: dir.clone(),
                    ..Default::default()
                })
                .collect(),
        ),
        name: "backup-runner".into(),
        ..Default::default()
    };
    JobYaml {
        api_version: "run.googleapis.com/v1",
        kind: "Job",
        metadata: Metadata {
            name: job.name.clone(),
            labels: job.labels.clone(),
        },
        spec: JobSpec {
            template: ExecutionTemplate {
                spec: ExecutionSpec {
                    task_count: 1,
                    template: TaskTemplate {
                        spec: TaskSpec {
                            containers: vec![container],
                            volumes: job
                                .secrets
                                .iter()
                                .map(|(dir, file, secret)| Volume {
                                    name: volume_name(dir),
                                    secret: Some(SecretVolumeSource {
                                        secret_name: Some(secret.clone()),
                                        items: Some(vec![KeyToPath {
                                            key: "latest".into(),
                                            path: file.clone(),
                                            ..Default::default()
                                        }]),
                                        ..Default::default()
                                    }),
                                    ..Default::default()
                                })
                                .collect(),
                            max_retries: job.max_retries,
                            timeout_seconds: job.timeout_secs,
                            service_account_name: SERVICE_ACCOUNT_PLACEHOLDER.into(),
                        },
                    },
                },
            },
        },
    }
}

fn deploy_script(cell: &Cell, jobs: &[(Op, RunJob)]) -> Result<String> {
    let mut s = String::new();
    writeln!(s, "#!/usr/bin/env bash")?;
    for line in GENERATED.lines() {
        writeln!(s, "# {line}")?;
    }
    writeln!(
        s,
        "#
# The Cloud Run jobs of {cell} as `gcloud run jobs deploy` commands: the same jobs as the YAML
# files beside this script (`gcloud run jobs replace <file> --region=…`), plus Cloud Scheduler
# triggers for the scheduled ones. Rerunning it updates everything. See deploy/README.md.
#
#   PROJECT_ID=my-project REGION=europe-west1 bash {path}
set -euo pipefail

: \"${{PROJECT_ID:?set PROJECT_ID}}\"
: \"${{REGION:?set REGION, e.g. europe-west1}}\"
IMAGE=\"${{IMAGE:-$REGION-docker.pkg.dev/$PROJECT_ID/backup-runner/{image}}}\"
# The jobs' identity: it reads the secrets (roles/secretmanager.secretAccessor).
SERVICE_ACCOUNT=\"${{SERVICE_ACCOUNT:-backup-runner@$PROJECT_ID.iam.gserviceaccount.com}}\"
# The identity Cloud Scheduler starts the jobs as (roles/run.invoker on them).
SCHEDULER_ACCOUNT=\"${{SCHEDULER_ACCOUNT:-$SERVICE_ACCOUNT}}\"
",
        cell = cell.name,
        path = format_args!("deploy/cloudrun/{}/deploy.sh", cell.name),
        image = cell.image(),
    )?;
    for (_, job) in jobs {
        let env: Vec<String> = job.env.iter().map(|(k, v)| format!("{k}={v}")).collect();
        for (k, v) in &job.env {
            ensure!(
                !v.contains([',', '\'', '=']) && !k.contains(','),
                "{k}: a value for --set-env-vars must not hold , ' or ="
            );
        }
        let secrets: Vec<String> = job
            .secrets
            .iter()
            .map(|(dir, file, secret)| format!("{dir}/{file}={secret}:latest"))
            .collect();
        let labels: Vec<String> = job.labels.iter().map(|(k, v)| format!("{k}={v}")).collect();
        writeln!(
            s,
            "gcloud run jobs deploy {name} \\
  --project=\"$PROJECT_ID\" \\
  --region=\"$REGION\" \\
  --image=\"$IMAGE\" \\
  --service-account=\"$SERVICE_ACCOUNT\" \\
  --tasks=1 \\
  --max-retries={retries} \\
  --task-timeout={timeout}s \\
  --cpu={cpu} \\
  --memory={memory}Mi \\
  --labels={labels} \\
  --set-env-vars='{env}' \\
  --set-secrets={secrets}
",
            name = job.name,
            retries = job.max_retries,
            timeout = job.timeout_secs,
            cpu = job.cpu,
            memory = job.memory_mib,
            labels = labels.join(","),
            env = env.join(","),
            secrets = secrets.join(","),
        )?;
    }
    writeln!(
        s,
        "# Cloud Scheduler starts a job through the Cloud Run Admin API: created once, updated after.
schedule() {{
  local name=$1 cron=$2 verb=create
  if gcloud scheduler jobs describe \"$name\" --project=\"$PROJECT_ID\" --location=\"$REGION\" >/dev/null 2>&1; then
    verb=update
  fi
  gcloud scheduler jobs \"$verb\" http \"$name\" \\
    --project=\"$PROJECT_ID\" \\
    --location=\"$REGION\" \\
    --schedule=\"$cron\" \\
    --time-zone=Etc/UTC \\
    --http-method=POST \\
    --uri=\"https://run.googleapis.com/v2/projects/$PROJECT_ID/locations/$REGION/jobs/$name:run\" \\
    --oauth-service-account-email=\"$SCHEDULER_ACCOUNT\"
}}
"
    )?;
    for (op, job) in jobs {
        if !op.on_demand() {
            writeln!(s, "schedule {} '{}'", job.name, op.schedule())?;
        }
    }
    writeln!(s, "\n# Run on demand:")?;
    for (op, job) in jobs {
        if op.on_demand() {
            writeln!(
                s,
                "#   gcloud run jobs execute {} --project=\"$PROJECT_ID\" --region=\"$REGION\" --wait",
                job.name
            )?;
        }
    }
    Ok(s)
}

pub fn cell(cell: &Cell, files: &mut Files) -> Result<()> {
    let dir = format!("cloudrun/{}", cell.name);
    let header = format!(
        "{GENERATED}\nA Cloud Run job of {} ({}): replace REGION and PROJECT_ID, then\n  gcloud run jobs replace <this file> --region=REGION --project=PROJECT_ID\nSee deploy/README.md.",
        cell.name,
        cell.image()
    );
    let mut jobs = Vec::new();
    for op in OPS {
        let job = run_job(cell, op)?;
        let text = yaml(&header, &job_yaml(cell, &job))?;
        files.insert(format!("{dir}/{}.yaml", op.name()), text);
        jobs.push((op, job));
    }
    files.insert(format!("{dir}/deploy.sh"), deploy_script(cell, &jobs)?);
    Ok(())
}
