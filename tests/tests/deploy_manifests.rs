//! Offline validation of the deployment manifests under deploy/ (written by `cargo xtask
//! manifests`; a test in xtask keeps them up to date):
//!
//! - every Kubernetes resource, and every kustomization rendered by `kubectl kustomize` (the
//!   bases, the example overlay, and each component on every base), against the official schemas
//!   with `kubernetes-validate --strict` (unknown fields fail), for the oldest and the newest
//!   Kubernetes version the generator targets; then what the schemas cannot say: every job locked
//!   down, its `podFailurePolicy`, every `*_FILE` pointing at a mounted secret;
//! - the Cloud Run jobs: the fields the service requires, each secret mounted, parsed by gcloud's
//!   own Cloud Run message types (unknown fields fail), and `deploy.sh` stating the same jobs with
//!   flags gcloud has;
//! - the alert rules with `promtool check rules` and `promtool test rules`;
//! - and that each of these checks rejects a deliberately broken copy.
//!
//! A missing tool fails the test, naming `bash .ci/install-test-deps.sh`.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use harness::matrix::Matrix;
use harness::workspace_root;
use serde::Deserialize;
use serde_yaml_ng::Value;

const INSTALL: &str = "run `bash .ci/install-test-deps.sh` (as root)";

/// The Kubernetes versions validated against: the API version the generator is typed against
/// (k8s-openapi's `v1_33`), and the newest kubernetes-validate bundles.
const K8S_VERSIONS: [&str; 2] = ["1.33.0", "1.37.0"];

/// The exit codes a retry cannot fix (README: Exit codes).
const FAIL_JOB_CODES: [i64; 6] = [2, 3, 5, 8, 9, 10];

fn deploy() -> PathBuf {
    workspace_root().join("deploy")
}

fn on_path(cmd: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|d| d.join(cmd))
        .find(|p| p.is_file())
}

fn require(cmd: &str) -> PathBuf {
    on_path(cmd).unwrap_or_else(|| panic!("{cmd} is not installed: {INSTALL}"))
}

fn run(cmd: &mut Command) -> Output {
    cmd.output()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"))
}

fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// `kubernetes-validate`, or its module when the console script is not on PATH.
fn kubernetes_validate() -> Command {
    if let Some(cli) = on_path("kubernetes-validate") {
        return Command::new(cli);
    }
    let mut cmd = Command::new("python3");
    cmd.args(["-m", "kubernetes_validate"]);
    let probe = Command::new("python3")
        .args(["-m", "kubernetes_validate", "--version"])
        .output();
    assert!(
        probe.is_ok_and(|p| p.status.success()),
        "kubernetes-validate is not installed: {INSTALL}"
    );
    cmd
}

/// Validates `files` strictly against one Kubernetes version.
fn validate(files: &[PathBuf], version: &str, strict: bool) -> Output {
    let mut cmd = kubernetes_validate();
    if strict {
        cmd.arg("--strict");
    }
    cmd.args(["-k", version]).args(files);
    run(&mut cmd)
}

/// Asserts that every document of `files` passed, `documents` in all, with no file skipped for
/// want of a schema.
fn assert_valid(files: &[PathBuf], documents: usize) {
    for version in K8S_VERSIONS {
        let out = validate(files, version, true);
        let report = text(&out);
        assert!(
            out.status.success() && !report.contains("ERROR") && !report.contains("WARN"),
            "kubernetes-validate --strict -k {version} failed:\n{report}"
        );
        let passed = report.lines().filter(|l| l.contains(" passed ")).count();
        assert_eq!(
            passed, documents,
            "kubernetes-validate -k {version} passed {passed} documents of {documents}:\n{report}"
        );
    }
}

fn documents(text: &str) -> Vec<Value> {
    serde_yaml_ng::Deserializer::from_str(text)
        .map(|d| Value::deserialize(d).expect("YAML"))
        .filter(|v| !v.is_null())
        .collect()
}

fn read_yaml(path: &Path) -> Vec<Value> {
    let text =
        std::fs::read_to_string(path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()));
    documents(&text)
}

/// The value at a dotted path (`spec.template.spec.containers.0.image`).
fn at<'a>(v: &'a Value, path: &str) -> Option<&'a Value> {
    path.split('.')
        .try_fold(v, |v, key| match key.parse::<usize>() {
            Ok(i) => v.get(i),
            Err(_) => v.get(key),
        })
}

fn str_at<'a>(v: &'a Value, path: &str) -> &'a str {
    at(v, path)
        .and_then(Value::as_str)
        .unwrap_or_else(|| panic!("no string at {path} in {v:?}"))
}

fn int_at(v: &Value, path: &str) -> i64 {
    at(v, path)
        .and_then(Value::as_i64)
        .unwrap_or_else(|| panic!("no integer at {path} in {v:?}"))
}

fn seq_at<'a>(v: &'a Value, path: &str) -> &'a [Value] {
    at(v, path)
        .and_then(Value::as_sequence)
        .map(Vec::as_slice)
        .unwrap_or(&[])
}

fn annotation<'a>(v: &'a Value, key: &str) -> Option<&'a str> {
    at(v, "metadata.annotations")?.get(key)?.as_str()
}

fn name_of(v: &Value) -> String {
    format!("{}/{}", str_at(v, "kind"), str_at(v, "metadata.name"))
}

/// Every `kustomization.yaml` under deploy/kubernetes.
fn kustomizations() -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![deploy().join("kubernetes")];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).expect("deploy/kubernetes") {
            let path = entry.unwrap().path();
            if path.is_dir() {
                stack.push(path);
            } else if path.file_name().is_some_and(|n| n == "kustomization.yaml") {
                out.push(path);
            }
        }
    }
    out.sort();
    assert!(
        !out.is_empty(),
        "no kustomization under deploy/kubernetes: run `cargo xtask manifests`"
    );
    out
}

fn cells() -> Vec<String> {
    Matrix::load()
        .unwrap()
        .select(&[])
        .unwrap()
        .iter()
        .map(|c| c.name.clone())
        .collect()
}

fn components() -> Vec<String> {
    let mut c: Vec<String> = std::fs::read_dir(deploy().join("kubernetes/components"))
        .expect("deploy/kubernetes/components")
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    c.sort();
    c
}

fn kubectl() -> PathBuf {
    let kubectl = require("kubectl");
    let version = text(&run(Command::new(&kubectl).args(["version", "--client"])));
    // Components and `patches` with targets need kustomize 4 (kubectl 1.21) or later.
    let kustomize = version
        .lines()
        .find_map(|l| l.strip_prefix("Kustomize Version: v"))
        .and_then(|v| v.split('.').next()?.parse::<u32>().ok());
    assert!(
        kustomize.is_some_and(|major| major >= 4),
        "{} embeds a kustomize older than 4 (no components): the manifests need kubectl 1.21 or \
         later (the Google Cloud CLI's kubectl has one)\n{version}",
        kubectl.display()
    );
    kubectl
}

fn kustomize(kubectl: &Path, dir: &Path) -> String {
    let out = run(Command::new(kubectl).arg("kustomize").arg(dir));
    assert!(
        out.status.success(),
        "kubectl kustomize {} failed:\n{}",
        dir.display(),
        text(&out)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// A scratch directory under target/, so that a kustomization in it can name deploy/ by a
/// relative path (kustomize refuses absolute ones).
fn scratch() -> tempfile::TempDir {
    let target = workspace_root().join("target");
    std::fs::create_dir_all(&target).unwrap();
    tempfile::Builder::new()
        .prefix("deploy-manifests-")
        .tempdir_in(target)
        .unwrap()
}

/// An overlay in `dir` of one base with the given components.
fn overlay(dir: &Path, cell: &str, components: &[String]) -> PathBuf {
    let overlay = dir.join(format!("{cell}+{}", components.join("+")));
    std::fs::create_dir_all(&overlay).unwrap();
    let mut k = format!(
        "apiVersion: kustomize.config.k8s.io/v1beta1\nkind: Kustomization\nresources:\n- ../../../deploy/kubernetes/base/{cell}\n"
    );
    if !components.is_empty() {
        k.push_str("components:\n");
        for c in components {
            k.push_str(&format!("- ../../../deploy/kubernetes/components/{c}\n"));
        }
    }
    std::fs::write(overlay.join("kustomization.yaml"), k).unwrap();
    overlay
}

/// Renders every kustomization (and each base with every component), writes the output to
/// files in `dir`, and returns (name, path, documents).
fn render_all(dir: &Path) -> Vec<(String, PathBuf, Vec<Value>)> {
    let kubectl = kubectl();
    let mut targets: Vec<(String, PathBuf)> = Vec::new();
    for k in kustomizations() {
        let dir = k.parent().unwrap().to_path_buf();
        let is_component = read_yaml(&k)
            .first()
            .is_some_and(|v| at(v, "kind").and_then(Value::as_str) == Some("Component"));
        if !is_component {
            let name = dir.strip_prefix(deploy()).unwrap().display().to_string();
            targets.push((name, dir));
        }
    }
    let components = components();
    for cell in cells() {
        let o = overlay(dir, &cell, &components);
        targets.push((format!("base/{cell} + {}", components.join(" + ")), o));
    }
    targets
        .into_iter()
        .enumerate()
        .map(|(i, (name, path))| {
            let yaml = kustomize(&kubectl, &path);
            let out = dir.join(format!("rendered-{i}.yaml"));
            std::fs::write(&out, &yaml).unwrap();
            (name, out, documents(&yaml))
        })
        .collect()
}

#[test]
fn kubernetes_resources_pass_the_official_schemas() {
    // Exactly the files the kustomizations list as resources (patches are not objects).
    let mut files = Vec::new();
    let mut count = 0;
    for k in kustomizations() {
        let dir = k.parent().unwrap();
        for r in seq_at(&read_yaml(&k)[0], "resources") {
            let path = dir.join(r.as_str().unwrap());
            if path.is_file() {
                count += read_yaml(&path).len();
                files.push(path);
            }
        }
    }
    // Per cell: ServiceAccount, ConfigMap, 5 CronJobs; and the example's Namespace.
    assert_eq!(count, cells().len() * 7 + 1, "{files:?}");
    assert_valid(&files, count);
}

#[test]
fn every_kustomization_renders_and_its_output_passes_the_schemas() {
    let dir = scratch();
    let rendered = render_all(dir.path());
    let files: Vec<PathBuf> = rendered.iter().map(|(_, p, _)| p.clone()).collect();
    let count = rendered.iter().map(|(_, _, d)| d.len()).sum();
    assert_valid(&files, count);

    // The example overlay changed what it says it changes.
    let (_, _, example) = rendered
        .iter()
        .find(|(n, _, _)| n == "kubernetes/overlays/example")
        .expect("the example overlay");
    for doc in example {
        if str_at(doc, "kind") != "Namespace" {
            assert_eq!(
                str_at(doc, "metadata.namespace"),
                "backups",
                "{}",
                name_of(doc)
            );
        }
        if let Some(spec) = pod_spec(doc) {
            let image = str_at(spec, "containers.0.image");
            assert!(
                image.starts_with("registry.example.com/platform/backup-runner-postgres:17"),
                "{image}"
            );
            assert!(
                env(spec).contains_key("CALLBACK_SECRET_FILE"),
                "{}",
                name_of(doc)
            );
        }
        match (str_at(doc, "kind"), str_at(doc, "metadata.name")) {
            ("CronJob", "backup-runner-postgres-17-backup") => {
                assert_eq!(str_at(doc, "spec.schedule"), "30 1 * * *")
            }
            ("CronJob", "backup-runner-postgres-17-check") => {
                assert_eq!(str_at(doc, "spec.schedule"), "0 * * * *")
            }
            ("ConfigMap", _) => {
                assert_eq!(str_at(doc, "data.STORAGE_BUCKET"), "shop-backups");
                assert_eq!(
                    str_at(doc, "data.DB_PORT"),
                    "5432",
                    "the base's keys are kept"
                );
            }
            ("ServiceAccount", _) => assert_eq!(
                annotation(doc, "eks.amazonaws.com/role-arn"),
                Some("arn:aws:iam::123456789012:role/shop-backups")
            ),
            _ => {}
        }
    }

    // Every job of every rendering is locked down, and reads only mounted secrets.
    for (name, _, docs) in &rendered {
        let jobs: Vec<&Value> = docs.iter().filter(|d| pod_spec(d).is_some()).collect();
        assert_eq!(
            jobs.len(),
            5,
            "{name}: backup, prune, check, restore, verify"
        );
        for doc in jobs {
            check_job(name, doc, docs);
        }
    }
}

/// The pod spec of a CronJob (every job is one).
fn pod_spec(doc: &Value) -> Option<&Value> {
    match at(doc, "kind")?.as_str()? {
        "CronJob" => at(doc, "spec.jobTemplate.spec.template.spec"),
        _ => None,
    }
}

fn job_spec(doc: &Value) -> &Value {
    at(doc, "spec.jobTemplate.spec").unwrap()
}

fn env(spec: &Value) -> BTreeMap<String, String> {
    seq_at(spec, "containers.0.env")
        .iter()
        .map(|e| {
            (
                str_at(e, "name").to_string(),
                at(e, "value")
                    .and_then(Value::as_str)
                    .unwrap_or("")
                    .to_string(),
            )
        })
        .collect()
}

/// What the schemas cannot check.
fn check_job(render: &str, doc: &Value, all: &[Value]) {
    let what = format!("{render}: {}", name_of(doc));
    let job = job_spec(doc);
    let spec = pod_spec(doc).unwrap();
    let container = at(spec, "containers.0").unwrap();

    // Retries: fail at once on the codes no retry can fix, ignore disruptions.
    let rules = seq_at(job, "podFailurePolicy.rules");
    let fail: Vec<i64> = seq_at(&rules[0], "onExitCodes.values")
        .iter()
        .map(|v| v.as_i64().unwrap())
        .collect();
    assert_eq!(str_at(&rules[0], "action"), "FailJob", "{what}");
    assert_eq!(fail, FAIL_JOB_CODES, "{what}");
    assert_eq!(str_at(&rules[0], "onExitCodes.operator"), "In", "{what}");
    assert_eq!(
        str_at(&rules[0], "onExitCodes.containerName"),
        str_at(container, "name"),
        "{what}"
    );
    assert_eq!(str_at(&rules[1], "action"), "Ignore", "{what}");
    assert_eq!(
        str_at(&rules[1], "onPodConditions.0.type"),
        "DisruptionTarget",
        "{what}"
    );
    assert!(int_at(job, "backoffLimit") >= 1, "{what}");
    assert!(int_at(job, "activeDeadlineSeconds") > 0, "{what}");
    assert!(int_at(job, "ttlSecondsAfterFinished") > 0, "{what}");
    assert_eq!(str_at(spec, "restartPolicy"), "Never", "{what}");
    // Every job is a CronJob; restore and verify are suspended templates for Jobs on demand.
    assert_eq!(str_at(doc, "kind"), "CronJob", "{what}");
    assert_eq!(str_at(doc, "spec.concurrencyPolicy"), "Forbid", "{what}");
    assert_eq!(str_at(doc, "spec.timeZone"), "Etc/UTC", "{what}");
    let on_demand = ["-restore", "-verify"]
        .iter()
        .any(|s| str_at(doc, "metadata.name").ends_with(s));
    assert_eq!(
        at(doc, "spec.suspend")
            .and_then(Value::as_bool)
            .unwrap_or(false),
        on_demand,
        "{what}: suspended"
    );

    // Locked down, as the image's user.
    let sc = at(container, "securityContext").unwrap();
    assert_eq!(
        at(sc, "runAsNonRoot").and_then(Value::as_bool),
        Some(true),
        "{what}"
    );
    assert_eq!(int_at(sc, "runAsUser"), 10001, "{what}");
    assert_eq!(int_at(sc, "runAsGroup"), 10001, "{what}");
    assert_eq!(
        at(sc, "readOnlyRootFilesystem").and_then(Value::as_bool),
        Some(true),
        "{what}"
    );
    assert_eq!(
        at(sc, "allowPrivilegeEscalation").and_then(Value::as_bool),
        Some(false),
        "{what}"
    );
    assert_eq!(str_at(sc, "capabilities.drop.0"), "ALL", "{what}");
    assert_eq!(
        str_at(sc, "seccompProfile.type"),
        "RuntimeDefault",
        "{what}"
    );
    assert_eq!(int_at(spec, "securityContext.fsGroup"), 10001, "{what}");
    assert_eq!(
        at(spec, "automountServiceAccountToken").and_then(Value::as_bool),
        Some(false),
        "{what}"
    );

    // Memory requested and limited, CPU requested.
    for key in ["requests.memory", "limits.memory", "requests.cpu"] {
        assert!(
            at(container, &format!("resources.{key}")).is_some(),
            "{what}: {key}"
        );
    }

    // A writable /tmp, and TMPDIR on it.
    let mounts: BTreeMap<&str, &str> = seq_at(container, "volumeMounts")
        .iter()
        .map(|m| (str_at(m, "mountPath"), str_at(m, "name")))
        .collect();
    let volumes: BTreeMap<&str, &Value> = seq_at(spec, "volumes")
        .iter()
        .map(|v| (str_at(v, "name"), v))
        .collect();
    let tmp = volumes[mounts["/tmp"]];
    assert!(at(tmp, "emptyDir").is_some(), "{what}");
    let env = env(spec);
    assert_eq!(env["TMPDIR"], "/tmp", "{what}");

    // Every `*_FILE` names a key of a mounted Secret volume.
    for (var, path) in env.iter().filter(|(k, _)| k.ends_with("_FILE")) {
        let (dir, file) = path.rsplit_once('/').unwrap();
        let volume = volumes[mounts
            .get(dir)
            .unwrap_or_else(|| panic!("{what}: {var}={path} is not mounted"))];
        let items: Vec<&str> = seq_at(volume, "secret.items")
            .iter()
            .map(|i| str_at(i, "path"))
            .collect();
        assert!(
            items.contains(&file),
            "{what}: {var}={path} is not an item of {items:?}"
        );
    }
    // The ConfigMap and ServiceAccount it names are in the same rendering.
    let cm = str_at(container, "envFrom.0.configMapRef.name");
    let sa = str_at(spec, "serviceAccountName");
    let names: BTreeSet<String> = all.iter().map(name_of).collect();
    assert!(names.contains(&format!("ConfigMap/{cm}")), "{what}: {cm}");
    assert!(
        names.contains(&format!("ServiceAccount/{sa}")),
        "{what}: {sa}"
    );
}

#[test]
fn components_set_only_their_own_variables() {
    let dir = scratch();
    let kubectl = kubectl();
    let cell = "mysql-9.7";
    let base_env = |docs: &[Value]| -> BTreeMap<String, BTreeSet<String>> {
        docs.iter()
            .filter_map(|d| Some((str_at(d, "metadata.name").to_string(), env(pod_spec(d)?))))
            .map(|(n, e)| (n, e.into_keys().filter(|k| k.ends_with("_FILE")).collect()))
            .collect()
    };
    let plain = base_env(&documents(&kustomize(
        &kubectl,
        &overlay(dir.path(), cell, &[]),
    )));
    let job = |op: &str| format!("backup-runner-mysql-9-7-{op}");
    assert_eq!(
        plain[&job("backup")],
        BTreeSet::from(["DB_PASSWORD_FILE".into()])
    );
    assert_eq!(
        plain[&job("restore")],
        BTreeSet::from(["DB_PASSWORD_FILE".into()])
    );
    for op in ["prune", "check", "verify"] {
        assert!(
            plain[&job(op)].is_empty(),
            "{op} needs no database credentials"
        );
    }
    let expected: [(&str, &[(&str, &str)]); 3] = [
        (
            "callbacks",
            &[
                ("backup", "CALLBACK_SECRET_FILE"),
                ("prune", "CALLBACK_SECRET_FILE"),
                ("check", "CALLBACK_SECRET_FILE"),
                ("restore", "CALLBACK_SECRET_FILE"),
                ("verify", "CALLBACK_SECRET_FILE"),
            ],
        ),
        (
            "encryption",
            &[
                ("backup", "ENCRYPTION_RECIPIENTS_FILE"),
                ("restore", "ENCRYPTION_IDENTITY_FILE"),
                ("verify", "ENCRYPTION_IDENTITY_FILE"),
            ],
        ),
        (
            "storage-keys",
            &[
                ("backup", "STORAGE_ACCESS_KEY_ID_FILE"),
                ("backup", "STORAGE_SECRET_ACCESS_KEY_FILE"),
                ("prune", "STORAGE_ACCESS_KEY_ID_FILE"),
                ("prune", "STORAGE_SECRET_ACCESS_KEY_FILE"),
                ("check", "STORAGE_ACCESS_KEY_ID_FILE"),
                ("check", "STORAGE_SECRET_ACCESS_KEY_FILE"),
                ("restore", "STORAGE_ACCESS_KEY_ID_FILE"),
                ("restore", "STORAGE_SECRET_ACCESS_KEY_FILE"),
                ("verify", "STORAGE_ACCESS_KEY_ID_FILE"),
                ("verify", "STORAGE_SECRET_ACCESS_KEY_FILE"),
            ],
        ),
    ];
    assert_eq!(components(), expected.map(|(c, _)| c.to_string()));
    for (component, adds) in expected {
        let with = base_env(&documents(&kustomize(
            &kubectl,
            &overlay(dir.path(), cell, &[component.to_string()]),
        )));
        for (name, vars) in &with {
            let added: BTreeSet<String> = vars.difference(&plain[name]).cloned().collect();
            let op = name.rsplit('-').next().unwrap();
            let want: BTreeSet<String> = adds
                .iter()
                .filter(|(o, _)| *o == op)
                .map(|(_, v)| v.to_string())
                .collect();
            assert_eq!(added, want, "{component} on {name}");
        }
    }
}

#[test]
fn broken_kubernetes_manifests_are_rejected() {
    let dir = scratch();
    let original =
        std::fs::read_to_string(deploy().join("kubernetes/base/postgres-17/backup-cronjob.yaml"))
            .unwrap();
    let cases = [
        (
            "an unknown field",
            original.replace(
                "      backoffLimit: 3\n",
                "      backoffLimit: 3\n      backofLimit: 3\n",
            ),
            "backofLimit",
            // Only strict validation rejects it.
            false,
        ),
        (
            "a wrong type",
            original.replace("      backoffLimit: 3\n", "      backoffLimit: three\n"),
            "three",
            true,
        ),
        (
            "a missing required field",
            original.replace("  schedule: 0 2 * * *\n", ""),
            "schedule",
            true,
        ),
        (
            "an unknown field in the container",
            original.replace(
                "            name: backup-runner\n",
                "            imagePulPolicy: Always\n            name: backup-runner\n",
            ),
            "imagePulPolicy",
            false,
        ),
    ];
    for (what, broken, needle, lenient_too) in cases {
        assert_ne!(broken, original, "{what}: the replacement did not apply");
        let path = dir.path().join("broken.yaml");
        std::fs::write(&path, &broken).unwrap();
        for version in K8S_VERSIONS {
            let out = validate(std::slice::from_ref(&path), version, true);
            let report = text(&out);
            assert!(
                !out.status.success() && report.contains("ERROR") && report.contains(needle),
                "{what} passed kubernetes-validate --strict -k {version}:\n{report}"
            );
        }
        let lenient = validate(std::slice::from_ref(&path), K8S_VERSIONS[1], false);
        assert_eq!(
            !lenient.status.success(),
            lenient_too,
            "{what}, without --strict: {}",
            text(&lenient)
        );
    }
    // The original passes, so the failures above are the changes'.
    let path = dir.path().join("original.yaml");
    std::fs::write(&path, &original).unwrap();
    assert_valid(&[path], 1);
}

// Cloud Run.

/// Every Cloud Run job YAML, by cell.
fn cloud_run_files() -> Vec<(String, PathBuf)> {
    let mut out = Vec::new();
    for cell in cells() {
        let dir = deploy().join("cloudrun").join(&cell);
        for op in ["backup", "prune", "check", "restore", "verify"] {
            out.push((cell.clone(), dir.join(format!("{op}.yaml"))));
        }
    }
    out
}

/// The required fields and their limits (Cloud Run Admin API v1, namespaces.jobs).
fn check_cloud_run_job(cell: &str, job: &Value) -> Result<(), String> {
    let check = |ok: bool, what: &str| if ok { Ok(()) } else { Err(what.to_string()) };
    check(
        at(job, "apiVersion").and_then(Value::as_str) == Some("run.googleapis.com/v1"),
        "apiVersion",
    )?;
    check(
        at(job, "kind").and_then(Value::as_str) == Some("Job"),
        "kind",
    )?;
    let name = at(job, "metadata.name")
        .and_then(Value::as_str)
        .ok_or("metadata.name")?;
    check(
        name.len() <= 63
            && name.starts_with(|c: char| c.is_ascii_lowercase())
            && !name.ends_with('-')
            && name
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-'),
        "metadata.name: lowercase letters, digits and -, at most 63",
    )?;
    if let Some(labels) = at(job, "metadata.labels").and_then(Value::as_mapping) {
        for (k, v) in labels {
            let ok = |s: &str| {
                s.len() <= 63
                    && s.chars().all(|c| {
                        c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '_'
                    })
            };
            check(
                ok(k.as_str().unwrap_or("")) && ok(v.as_str().unwrap_or("")),
                "metadata.labels: Google Cloud labels",
            )?;
        }
    }
    // Every field these jobs use is GA: no launch-stage annotation is needed, and none is set.
    check(
        annotation(job, "run.googleapis.com/launch-stage").is_none(),
        "metadata.annotations: no launch stage",
    )?;
    let task =
        at(job, "spec.template.spec.template.spec").ok_or("spec.template.spec.template.spec")?;
    let containers = seq_at(task, "containers");
    check(containers.len() == 1, "exactly one container")?;
    let c = &containers[0];
    let image = at(c, "image").and_then(Value::as_str).unwrap_or("");
    let cell_image = format!("backup-runner-{}", cell.replacen('-', ":", 1));
    check(
        image.ends_with(&cell_image),
        "containers[0].image is the cell's image",
    )?;
    let timeout = at(task, "timeoutSeconds")
        .and_then(Value::as_i64)
        .ok_or("timeoutSeconds")?;
    check(
        (1..=7 * 24 * 3600).contains(&timeout),
        "timeoutSeconds: 1 s to 7 days",
    )?;
    let retries = at(task, "maxRetries")
        .and_then(Value::as_i64)
        .ok_or("maxRetries")?;
    check((0..=10).contains(&retries), "maxRetries: 0 to 10")?;
    check(
        at(task, "serviceAccountName")
            .and_then(Value::as_str)
            .is_some(),
        "serviceAccountName",
    )?;
    let memory = at(c, "resources.limits.memory")
        .and_then(Value::as_str)
        .ok_or("memory limit")?;
    let mib: u64 = memory
        .strip_suffix("Mi")
        .and_then(|m| m.parse().ok())
        .ok_or("memory in Mi")?;
    check(
        (512..=32 * 1024).contains(&mib),
        "memory: 512 MiB to 32 GiB",
    )?;
    let cpu: u64 = at(c, "resources.limits.cpu")
        .and_then(Value::as_str)
        .and_then(|c| c.parse().ok())
        .ok_or("cpu")?;
    check((1..=8).contains(&cpu), "cpu: 1 to 8")?;
    // Secrets: each volume a Secret Manager secret, each mounted, each `*_FILE` in one.
    let volumes: BTreeMap<&str, &Value> = seq_at(task, "volumes")
        .iter()
        .map(|v| (at(v, "name").and_then(Value::as_str).unwrap_or(""), v))
        .collect();
    let mut mounted = BTreeMap::new();
    for m in seq_at(c, "volumeMounts") {
        let name = str_at(m, "name");
        let volume = volumes
            .get(name)
            .ok_or(format!("volumeMounts: no volume {name}"))?;
        check(
            at(volume, "secret.secretName").is_some(),
            "volumes: secret.secretName",
        )?;
        for item in seq_at(volume, "secret.items") {
            check(
                at(item, "key").is_some(),
                "volumes: items[].key (the secret's version)",
            )?;
            mounted.insert(
                format!("{}/{}", str_at(m, "mountPath"), str_at(item, "path")),
                name,
            );
        }
    }
    check(
        mounted.values().collect::<BTreeSet<_>>().len() == volumes.len(),
        "every volume mounted",
    )?;
    let mut names = BTreeSet::new();
    for e in seq_at(c, "env") {
        let name = str_at(e, "name");
        check(names.insert(name), "env: names unique")?;
        if name.ends_with("_FILE") {
            check(
                mounted.contains_key(str_at(e, "value")),
                &format!("{name}: not a mounted secret"),
            )?;
        }
    }
    Ok(())
}

/// gcloud's Cloud Run message types parse each file as `gcloud run jobs replace` does, refusing
/// unknown fields and wrong types. `None` without gcloud.
fn gcloud_parse(files: &[PathBuf]) -> Option<Output> {
    let gcloud = on_path("gcloud")?;
    let bin = gcloud.canonicalize().ok()?;
    let sdk = bin.parent()?.parent()?;
    let bundled = sdk.join("platform/bundledpythonunix/bin/python3");
    let python = if bundled.is_file() {
        bundled
    } else {
        PathBuf::from("python3")
    };
    let lib = sdk.join("lib");
    let script = r#"
import sys
from googlecloudsdk.core import yaml
from googlecloudsdk.api_lib.util import apis
from googlecloudsdk.api_lib.util import messages as messages_util
from googlecloudsdk.api_lib.run import global_methods
m = apis.GetMessagesModule(global_methods.SERVERLESS_API_NAME, global_methods.SERVERLESS_API_VERSION)
failed = 0
for path in sys.argv[1:]:
    try:
        job = messages_util.DictToMessageWithErrorCheck(yaml.load_path(path), m.Job)
        assert job.spec.template.spec.template.spec.containers, "no containers"
        print("ok", path)
    except Exception as e:
        failed += 1
        print("ERROR", path, type(e).__name__, str(e).replace("\n", " "))
sys.exit(1 if failed else 0)
"#;
    let pythonpath = format!("{}:{}", lib.join("third_party").display(), lib.display());
    Some(run(Command::new(python)
        .arg("-c")
        .arg(script)
        .args(files)
        .env("PYTHONPATH", pythonpath)
        .env("CLOUDSDK_CORE_DISABLE_PROMPTS", "1")))
}

#[test]
fn cloud_run_jobs_have_what_the_service_requires() {
    let files = cloud_run_files();
    assert_eq!(files.len(), cells().len() * 5);
    for (cell, path) in &files {
        let docs = read_yaml(path);
        assert_eq!(docs.len(), 1, "{}", path.display());
        if let Err(e) = check_cloud_run_job(cell, &docs[0]) {
            panic!("{}: {e}", path.display());
        }
    }
    let paths: Vec<PathBuf> = files.iter().map(|(_, p)| p.clone()).collect();
    match gcloud_parse(&paths) {
        Some(out) => assert!(
            out.status.success()
                && text(&out).lines().filter(|l| l.starts_with("ok ")).count() == paths.len(),
            "gcloud's Cloud Run types refused a job:\n{}",
            text(&out)
        ),
        None => eprintln!(
            "SKIPPED: gcloud is not on PATH: the jobs were not parsed with its Cloud Run types"
        ),
    }
}

#[test]
fn broken_cloud_run_jobs_are_rejected() {
    let (cell, path) = cloud_run_files().remove(0);
    let original = std::fs::read_to_string(&path).unwrap();
    assert!(check_cloud_run_job(&cell, &documents(&original)[0]).is_ok());
    let dir = scratch();
    // (what, the broken copy, whether the structural checks refuse it, what gcloud names)
    let cases = [
        (
            "an unknown field",
            original.replace("          maxRetries:", "          maxRetrys: 1\n          maxRetries:"),
            false,
            Some("maxRetrys"),
        ),
        (
            "a wrong type",
            original.replace("          timeoutSeconds: 21600\n", "          timeoutSeconds: six hours\n"),
            true,
            Some("timeoutSeconds"),
        ),
        (
            "no image",
            original.replace("            image: ", "            imag: "),
            true,
            Some("imag"),
        ),
        (
            "a secret not mounted",
            original.replace(
                "            - mountPath: /run/secrets/db-password\n              name: db-password\n",
                "",
            ),
            true,
            None,
        ),
    ];
    for (i, (what, broken, structural, needle)) in cases.into_iter().enumerate() {
        assert_ne!(broken, original, "{what}: the replacement did not apply");
        assert_eq!(
            check_cloud_run_job(&cell, &documents(&broken)[0]).is_err(),
            structural,
            "{what}: the structural checks"
        );
        let Some(needle) = needle else { continue };
        let p = dir.path().join(format!("broken-{i}.yaml"));
        std::fs::write(&p, &broken).unwrap();
        match gcloud_parse(std::slice::from_ref(&p)) {
            Some(out) => assert!(
                !out.status.success() && text(&out).contains(needle),
                "{what} passed gcloud's Cloud Run types:\n{}",
                text(&out)
            ),
            None => {
                eprintln!("SKIPPED: gcloud is not on PATH: {what} was not parsed with its types")
            }
        }
    }
}

/// One `gcloud run jobs deploy NAME` command of a deploy.sh: its flags.
fn deploy_commands(script: &str) -> BTreeMap<String, BTreeMap<String, String>> {
    let mut out = BTreeMap::new();
    let mut lines = script.lines();
    while let Some(line) = lines.next() {
        let Some(rest) = line.strip_prefix("gcloud run jobs deploy ") else {
            continue;
        };
        let name = rest.trim_end_matches(" \\").to_string();
        let mut flags = BTreeMap::new();
        for flag in lines.by_ref() {
            let flag = flag.trim();
            let (flag, more) = match flag.strip_suffix(" \\") {
                Some(f) => (f, true),
                None => (flag, false),
            };
            let (k, v) = flag.split_once('=').unwrap_or((flag, ""));
            flags.insert(k.to_string(), v.trim_matches(['\'', '"']).to_string());
            if !more {
                break;
            }
        }
        out.insert(name, flags);
    }
    out
}

/// Help text without its terminal escapes (bold flags).
fn strip_ansi(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            for c in chars.by_ref() {
                if c.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

fn flags_of_help(args: &[&str]) -> Option<BTreeSet<String>> {
    let gcloud = on_path("gcloud")?;
    let config = tempfile::tempdir().unwrap();
    let out = run(Command::new(gcloud)
        .args(args)
        .arg("--help")
        .env("CLOUDSDK_CONFIG", config.path())
        .env("CLOUDSDK_CORE_DISABLE_PROMPTS", "1")
        .env("CLOUDSDK_COMPONENT_MANAGER_DISABLE_UPDATE_CHECK", "true")
        .env("CLOUDSDK_CORE_DISABLE_USAGE_REPORTING", "true"));
    assert!(
        out.status.success(),
        "gcloud {} --help: {}",
        args.join(" "),
        text(&out)
    );
    Some(
        strip_ansi(&text(&out))
            .split(|c: char| !(c.is_ascii_alphanumeric() || c == '-'))
            .filter(|w| w.starts_with("--") && w.len() > 2)
            .map(str::to_string)
            .collect(),
    )
}

#[test]
fn cloud_run_deploy_scripts_state_the_same_jobs() {
    let deploy_flags = flags_of_help(&["run", "jobs", "deploy"]);
    let scheduler_flags = flags_of_help(&["scheduler", "jobs", "create", "http"]);
    if deploy_flags.is_none() {
        eprintln!("SKIPPED: gcloud is not on PATH: the scripts' flags were not checked against it");
    }
    let k8s_schedules: BTreeMap<String, String> = {
        let mut m = BTreeMap::new();
        for cell in cells() {
            for op in ["backup", "prune", "check"] {
                let doc =
                    &read_yaml(&deploy().join(format!("kubernetes/base/{cell}/{op}-cronjob.yaml")))
                        [0];
                m.insert(
                    str_at(doc, "metadata.name").to_string(),
                    str_at(doc, "spec.schedule").to_string(),
                );
            }
        }
        m
    };
    for cell in cells() {
        let path = deploy().join(format!("cloudrun/{cell}/deploy.sh"));
        let syntax = run(Command::new("bash").arg("-n").arg(&path));
        assert!(
            syntax.status.success(),
            "bash -n {}: {}",
            path.display(),
            text(&syntax)
        );
        let script = std::fs::read_to_string(&path).unwrap();
        let commands = deploy_commands(&script);
        assert_eq!(commands.len(), 5, "{}", path.display());
        for op in ["backup", "prune", "check", "restore", "verify"] {
            let yaml = &read_yaml(&deploy().join(format!("cloudrun/{cell}/{op}.yaml")))[0];
            let name = str_at(yaml, "metadata.name");
            let flags = commands
                .get(name)
                .unwrap_or_else(|| panic!("{}: no job {name}", path.display()));
            let task = at(yaml, "spec.template.spec.template.spec").unwrap();
            let c = at(task, "containers.0").unwrap();
            let what = format!("{}: {name}", path.display());
            assert_eq!(
                flags["--tasks"],
                int_at(yaml, "spec.template.spec.taskCount").to_string(),
                "{what}"
            );
            assert_eq!(
                flags["--max-retries"],
                int_at(task, "maxRetries").to_string(),
                "{what}"
            );
            assert_eq!(
                flags["--task-timeout"],
                format!("{}s", int_at(task, "timeoutSeconds")),
                "{what}"
            );
            assert_eq!(flags["--cpu"], str_at(c, "resources.limits.cpu"), "{what}");
            assert_eq!(
                flags["--memory"],
                str_at(c, "resources.limits.memory"),
                "{what}"
            );
            let env: Vec<String> = seq_at(c, "env")
                .iter()
                .map(|e| format!("{}={}", str_at(e, "name"), str_at(e, "value")))
                .collect();
            assert_eq!(flags["--set-env-vars"], env.join(","), "{what}");
            let volumes: BTreeMap<&str, &Value> = seq_at(task, "volumes")
                .iter()
                .map(|v| (str_at(v, "name"), v))
                .collect();
            let secrets: Vec<String> = seq_at(c, "volumeMounts")
                .iter()
                .map(|m| {
                    let v = volumes[str_at(m, "name")];
                    format!(
                        "{}/{}={}:{}",
                        str_at(m, "mountPath"),
                        str_at(v, "secret.items.0.path"),
                        str_at(v, "secret.secretName"),
                        str_at(v, "secret.items.0.key")
                    )
                })
                .collect();
            assert_eq!(flags["--set-secrets"], secrets.join(","), "{what}");
            let labels: Vec<String> = at(yaml, "metadata.labels")
                .and_then(Value::as_mapping)
                .unwrap()
                .iter()
                .map(|(k, v)| format!("{}={}", k.as_str().unwrap(), v.as_str().unwrap()))
                .collect();
            assert_eq!(flags["--labels"], labels.join(","), "{what}");
            if let Some(known) = &deploy_flags {
                for flag in flags.keys() {
                    assert!(
                        known.contains(flag),
                        "{what}: gcloud run jobs deploy has no {flag}"
                    );
                }
            }
        }
        // The scheduled jobs run when the Kubernetes CronJobs do.
        let schedules: BTreeMap<String, String> = script
            .lines()
            .filter_map(|l| l.strip_prefix("schedule "))
            .map(|l| {
                let (name, cron) = l.split_once(' ').unwrap();
                (name.to_string(), cron.trim_matches('\'').to_string())
            })
            .collect();
        assert_eq!(schedules.len(), 3, "{}", path.display());
        for (name, cron) in &schedules {
            assert_eq!(Some(cron), k8s_schedules.get(name), "{name}");
        }
        if let Some(known) = &scheduler_flags {
            let body = script
                .split("schedule() {")
                .nth(1)
                .unwrap()
                .split("\n}")
                .next()
                .unwrap();
            let used: BTreeSet<&str> = body
                .split(|c: char| !(c.is_ascii_alphanumeric() || c == '-'))
                .filter(|w| w.starts_with("--"))
                .collect();
            for flag in used {
                assert!(
                    known.contains(flag),
                    "{}: gcloud scheduler jobs create http has no {flag}",
                    path.display()
                );
            }
        }
    }
}

// Prometheus.

fn promtool() -> PathBuf {
    require("promtool")
}

#[test]
fn alert_rules_pass_promtool() {
    let dir = deploy().join("prometheus");
    let check = run(Command::new(promtool())
        .args(["check", "rules"])
        .arg(dir.join("backup-runner-alerts.yml")));
    assert!(
        check.status.success(),
        "promtool check rules:\n{}",
        text(&check)
    );
    assert!(
        text(&check).contains("SUCCESS: 5 rules found"),
        "{}",
        text(&check)
    );
    let test = run(Command::new(promtool())
        .args(["test", "rules", "backup-runner-alerts.test.yml"])
        .current_dir(&dir));
    assert!(
        test.status.success(),
        "promtool test rules:\n{}",
        text(&test)
    );

    // Every alert is shown firing in the unit tests, and not firing.
    let tests = &read_yaml(&dir.join("backup-runner-alerts.test.yml"))[0];
    let rules = &read_yaml(&dir.join("backup-runner-alerts.yml"))[0];
    for rule in seq_at(rules, "groups.0.rules") {
        let alert = str_at(rule, "alert");
        let cases: Vec<&Value> = seq_at(tests, "tests")
            .iter()
            .flat_map(|t| seq_at(t, "alert_rule_test"))
            .filter(|c| str_at(c, "alertname") == alert)
            .collect();
        assert!(
            cases.iter().any(|c| !seq_at(c, "exp_alerts").is_empty()),
            "{alert} is never shown firing"
        );
        assert!(
            cases.iter().any(|c| seq_at(c, "exp_alerts").is_empty()),
            "{alert} is never shown silent"
        );
    }
}

#[test]
fn broken_alert_rules_and_wrong_expectations_are_rejected() {
    let dir = scratch();
    let src = deploy().join("prometheus");
    let rules = std::fs::read_to_string(src.join("backup-runner-alerts.yml")).unwrap();
    let tests = std::fs::read_to_string(src.join("backup-runner-alerts.test.yml")).unwrap();

    // A syntax error in an expression.
    let broken = rules.replace(
        "backup_runner_last_exit_code{operation=\"check\"} == 10\n",
        "backup_runner_last_exit_code{operation=\"check\" == 10\n",
    );
    assert_ne!(broken, rules);
    std::fs::write(dir.path().join("broken.yml"), &broken).unwrap();
    let out = run(Command::new(promtool())
        .args(["check", "rules"])
        .arg(dir.path().join("broken.yml")));
    assert!(
        !out.status.success(),
        "promtool check rules passed a broken expression:\n{}",
        text(&out)
    );

    // The real rules against tests expecting otherwise: a threshold moved by two hours makes the
    // "too old" alert fire where the tests say it must not.
    std::fs::write(
        dir.path().join("backup-runner-alerts.yml"),
        rules.replace("> 93600", "> 86400"),
    )
    .unwrap();
    std::fs::write(dir.path().join("backup-runner-alerts.test.yml"), &tests).unwrap();
    let out = run(Command::new(promtool())
        .args(["test", "rules", "backup-runner-alerts.test.yml"])
        .current_dir(dir.path()));
    assert!(
        !out.status.success(),
        "promtool test rules passed a moved threshold:\n{}",
        text(&out)
    );
    assert!(
        text(&out).contains("BackupRunnerBackupTooOld"),
        "{}",
        text(&out)
    );

    // And a stuck-job rule that ignores whether the job finished: the finished backup of the
    // first test group then counts as stuck.
    std::fs::write(
        dir.path().join("backup-runner-alerts.yml"),
        rules.replace(
            "backup_runner_job_running{operation=~\"backup|verify\"} == 1",
            "backup_runner_job_running{operation=~\"backup|verify\"} >= 0",
        ),
    )
    .unwrap();
    let out = run(Command::new(promtool())
        .args(["test", "rules", "backup-runner-alerts.test.yml"])
        .current_dir(dir.path()));
    assert!(
        !out.status.success(),
        "promtool test rules passed a stuck rule without its state:\n{}",
        text(&out)
    );
    assert!(
        text(&out).contains("BackupRunnerJobStuck"),
        "{}",
        text(&out)
    );
}
