//! `cargo xtask push` and `build-test-verify-push.sh` against a real registry: Debian's
//! `docker-registry` (`docker-registry serve <config>`, filesystem storage in a temporary
//! directory) on a free port of 127.0.0.1, which Docker talks to without TLS. One small cell is
//! pushed; the registry's API must list its three tags, all naming the one manifest whose config
//! is the local image; the image is pulled back by digest once every local reference to the
//! registry is gone, and runs.
//!
//! Needs the Docker engine, the cell's runner image (`cargo xtask build valkey-9.1`) and
//! `/usr/bin/docker-registry` (`.ci/install-test-deps.sh`); skipped loudly without them, failed
//! with `HARNESS_REQUIRE_DOCKER=1`.

use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use harness::containers::{ready_or_skip, REQUIRE_DOCKER_ENV};
use harness::matrix::Matrix;
use harness::{kill_group, start_http_server, workspace_root};

/// A small cell: its image is about 120 MB.
const CELL: &str = "valkey-9.1";
/// The cell's client tool, asked for the full version independently of `cargo xtask push`.
const CLIENT_TOOL: &str = "valkey-cli";
const REGISTRY_BIN: &str = "/usr/bin/docker-registry";
const DOCKER: &str = "/usr/bin/docker";
const MANIFEST_V2: &str = "application/vnd.docker.distribution.manifest.v2+json";

/// The registry process, stopped (with its storage removed) when dropped.
struct Registry {
    child: std::process::Child,
    port: u16,
    _dir: tempfile::TempDir,
}

impl Registry {
    async fn start() -> Registry {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let root = dir.path().to_path_buf();
        let (child, port) = start_http_server(
            "docker-registry",
            &root.join("registry.log"),
            "address already in use",
            Duration::from_secs(30),
            |port, log| {
                let config = root.join("config.yml");
                std::fs::write(
                    &config,
                    format!(
                        "version: 0.1\n\
                         log:\n  level: warn\n\
                         storage:\n  filesystem:\n    rootdirectory: {}\n  delete:\n    enabled: true\n\
                         http:\n  addr: 127.0.0.1:{port}\n",
                        root.join("storage").display()
                    ),
                )?;
                let out = std::fs::File::create(log)?;
                use std::os::unix::process::CommandExt;
                Ok(Command::new(REGISTRY_BIN)
                    .arg("serve")
                    .arg(&config)
                    .stdin(Stdio::null())
                    .stdout(out.try_clone()?)
                    .stderr(out)
                    .process_group(0)
                    .spawn()?)
            },
        )
        .await
        .expect("starting docker-registry");
        Registry {
            child,
            port,
            _dir: dir,
        }
    }

    fn host(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    fn url(&self, path: &str) -> String {
        format!("http://{}/v2/{path}", self.host())
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        kill_group(&mut self.child);
    }
}

/// Removes, when dropped, every local tag and digest reference of `image` into the registry
/// at `host`: what the pushes and the pull left behind. The image itself keeps its own tag.
struct LocalRefs {
    image_id: String,
    host: String,
}

impl LocalRefs {
    fn refs(&self) -> Vec<String> {
        let out = docker(&[
            "image",
            "inspect",
            "--format",
            "{{json .RepoTags}} {{json .RepoDigests}}",
            &self.image_id,
        ]);
        if !out.status.success() {
            return Vec::new();
        }
        String::from_utf8_lossy(&out.stdout)
            .split_whitespace()
            .flat_map(|list| serde_json::from_str::<Vec<String>>(list).unwrap_or_default())
            .filter(|r| r.starts_with(&format!("{}/", self.host)))
            .collect()
    }

    fn remove(&self) {
        for r in self.refs() {
            let _ = docker(&["rmi", &r]);
        }
    }
}

impl Drop for LocalRefs {
    fn drop(&mut self) {
        self.remove();
    }
}

fn docker(args: &[&str]) -> Output {
    Command::new(DOCKER)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("running /usr/bin/docker")
}

fn stdout_of(out: &Output, what: &str) -> String {
    assert!(
        out.status.success(),
        "{what} failed ({}):\n{}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Runs a command in the workspace with `REGISTRY` set (and no `TAG_PREFIX`), printing and
/// returning its output.
fn run_pushing(program: &str, args: &[&str], registry: &str, env: &[(&str, &str)]) -> String {
    let started = Instant::now();
    let out = Command::new(program)
        .args(args)
        .current_dir(workspace_root())
        .env("REGISTRY", registry)
        .env_remove("TAG_PREFIX")
        .envs(env.iter().copied())
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("running {program}: {e}"));
    let what = format!("{program} {}", args.join(" "));
    let stdout = stdout_of(&out, &what);
    println!(
        "{what} ({:.1}s):\n{stdout}",
        started.elapsed().as_secs_f64()
    );
    stdout
}

/// The `<repo>@sha256:…` of the `xtask: digest` line.
fn pushed_digest(stdout: &str, repo: &str) -> String {
    let line = stdout
        .lines()
        .find_map(|l| l.strip_prefix("xtask: digest "))
        .unwrap_or_else(|| panic!("no `xtask: digest` line in:\n{stdout}"));
    let digest = line
        .strip_prefix(&format!("{repo}@"))
        .unwrap_or_else(|| panic!("the digest line names another repository: {line}"));
    assert!(
        digest.starts_with("sha256:") && digest.len() == 7 + 64,
        "{line}"
    );
    digest.to_string()
}

/// Whether the registry binary is there; otherwise a loud skip, or a failure with
/// `HARNESS_REQUIRE_DOCKER=1`.
fn registry_or_skip(test: &str) -> bool {
    if Path::new(REGISTRY_BIN).exists() {
        return true;
    }
    let problem = format!("{REGISTRY_BIN} is missing (bash .ci/install-test-deps.sh)");
    if std::env::var(REQUIRE_DOCKER_ENV).as_deref() == Ok("1") {
        panic!("{test}: {problem}, and {REQUIRE_DOCKER_ENV}=1 requires it");
    }
    eprintln!(
        "\n********\n* SKIPPED {test}: {problem}; set {REQUIRE_DOCKER_ENV}=1 to fail instead\n********\n"
    );
    false
}

/// A JSON document from the registry's API.
async fn get_json(http: &reqwest::Client, url: &str) -> serde_json::Value {
    http.get(url)
        .send()
        .await
        .unwrap()
        .error_for_status()
        .unwrap()
        .json()
        .await
        .unwrap()
}

/// The tags the registry lists for `repo`, sorted.
async fn tags(http: &reqwest::Client, registry: &Registry, repo: &str) -> Vec<String> {
    let body: serde_json::Value = get_json(http, &registry.url(&format!("{repo}/tags/list"))).await;
    let mut tags: Vec<String> = body["tags"]
        .as_array()
        .unwrap_or_else(|| panic!("no tags for {repo}: {body}"))
        .iter()
        .map(|t| t.as_str().unwrap().to_string())
        .collect();
    tags.sort();
    tags
}

/// Panics unless every tag of `repo` resolves to the manifest `digest`.
async fn assert_tags_name(
    http: &reqwest::Client,
    registry: &Registry,
    repo: &str,
    tags: &[String],
    digest: &str,
) {
    for tag in tags {
        let resp = http
            .head(registry.url(&format!("{repo}/manifests/{tag}")))
            .header("Accept", MANIFEST_V2)
            .send()
            .await
            .unwrap()
            .error_for_status()
            .unwrap();
        assert_eq!(
            resp.headers()
                .get("Docker-Content-Digest")
                .and_then(|v| v.to_str().ok()),
            Some(digest),
            "{repo}:{tag} names another manifest"
        );
    }
}

#[tokio::test]
async fn push_to_a_local_registry_then_pull_back_by_digest() {
    const TEST: &str = "push_to_a_local_registry_then_pull_back_by_digest";
    let started = Instant::now();
    let matrix = Matrix::load().unwrap();
    let cell = matrix
        .cell(CELL)
        .expect("the cell is in images/matrix.toml")
        .clone();
    let image = cell.image();
    if !ready_or_skip(TEST, std::slice::from_ref(&image)).await || !registry_or_skip(TEST) {
        return;
    }
    let registry = Registry::start().await;
    let info: serde_json::Value = serde_json::from_str(&stdout_of(
        &docker(&["image", "inspect", "--format", "{{json .}}", &image]),
        "docker image inspect",
    ))
    .unwrap();
    let image_id = info["Id"].as_str().unwrap().to_string();
    let label = |name: &str| info["Config"]["Labels"][name].as_str().unwrap().to_string();
    let local_refs = LocalRefs {
        image_id: image_id.clone(),
        host: registry.host(),
    };

    // The tags, worked out independently of `cargo xtask push`: the full version from the
    // client tool itself, the revision and the runner version from the image's labels.
    let client = stdout_of(
        &docker(&[
            "run",
            "--rm",
            "--entrypoint",
            CLIENT_TOOL,
            &image,
            "--version",
        ]),
        "the client tool's --version",
    );
    let full = client
        .split_whitespace()
        .find(|w| w.starts_with(&format!("{}.", cell.version)))
        .unwrap_or_else(|| {
            panic!(
                "{CLIENT_TOOL} --version names no {}.x: {client}",
                cell.version
            )
        })
        .to_string();
    let revision = label("org.opencontainers.image.revision");
    let mut immutable = format!(
        "{}-{}-{}",
        cell.version,
        label("org.opencontainers.image.version"),
        &revision[..7]
    );
    if revision.ends_with("-dirty") {
        immutable.push_str(&format!(
            "-dirty-{}",
            &image_id.trim_start_matches("sha256:")[..12]
        ));
    }
    let mut expected = vec![cell.version.clone(), full.clone(), immutable];
    expected.sort();
    println!("expected tags: {expected:?} (image {image_id}, revision {revision})");

    // `cargo xtask push` into namespace `xtask`.
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let stdout = run_pushing(
        &cargo,
        &["xtask", "push", CELL],
        &format!("{}/xtask", registry.host()),
        &[],
    );
    let repo = format!("xtask/backup-runner-{}", cell.product());
    let full_repo = format!("{}/{repo}", registry.host());
    let digest = pushed_digest(&stdout, &full_repo);

    let http = reqwest::Client::new();
    let catalog: serde_json::Value = http
        .get(registry.url("_catalog"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        catalog["repositories"],
        serde_json::json!([repo]),
        "the registry's catalog"
    );
    assert_eq!(
        tags(&http, &registry, &repo).await,
        expected,
        "the tags of {repo}"
    );
    assert_tags_name(&http, &registry, &repo, &expected, &digest).await;

    // The manifest's config is the local image (its id is the config's digest), with the
    // cell's labels.
    let manifest: serde_json::Value = http
        .get(registry.url(&format!("{repo}/manifests/{digest}")))
        .header("Accept", MANIFEST_V2)
        .send()
        .await
        .unwrap()
        .error_for_status()
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        manifest["config"]["digest"],
        image_id.as_str(),
        "{manifest}"
    );
    let layers = manifest["layers"].as_array().expect("layers");
    assert!(!layers.is_empty(), "{manifest}");
    let config: serde_json::Value =
        get_json(&http, &registry.url(&format!("{repo}/blobs/{image_id}"))).await;
    assert_eq!(
        config["config"]["Labels"]["io.backup-runner.engine-version"],
        cell.version.as_str()
    );
    assert_eq!(
        config["config"]["Labels"]["org.opencontainers.image.revision"],
        revision.as_str()
    );

    // Every local reference into the registry removed, the image pulled back by digest.
    let by_digest = format!("{full_repo}@{digest}");
    assert!(!local_refs.refs().is_empty(), "the push left no local tags");
    local_refs.remove();
    assert!(
        local_refs.refs().is_empty(),
        "local references left: {:?}",
        local_refs.refs()
    );
    assert!(
        !docker(&["image", "inspect", &by_digest]).status.success(),
        "{by_digest} is still known locally"
    );
    stdout_of(&docker(&["pull", &by_digest]), "docker pull by digest");
    let pulled = stdout_of(
        &docker(&["image", "inspect", "--format", "{{.Id}}", &by_digest]),
        "docker image inspect of the pulled image",
    );
    assert_eq!(pulled.trim(), image_id, "the pulled image");
    let version = stdout_of(
        &docker(&["run", "--rm", &by_digest, "--version"]),
        "--version of the pulled image",
    );
    assert!(
        version.contains(&format!(" {})", cell.version)),
        "the pulled image's --version should name {}: {version}",
        cell.version
    );
    println!("pulled {by_digest}: {}", version.trim());

    // The wrapper script's push step alone, into namespace `script`: the same tags, the same
    // manifest.
    let stdout = run_pushing(
        "bash",
        &["build-test-verify-push.sh", CELL],
        &format!("{}/script", registry.host()),
        &[("STEPS", "push")],
    );
    assert!(
        !stdout.contains("xtask: built") && !stdout.contains("test result"),
        "STEPS=push ran more than the push step:\n{stdout}"
    );
    let script_repo = format!("script/backup-runner-{}", cell.product());
    let script_digest = pushed_digest(&stdout, &format!("{}/{script_repo}", registry.host()));
    assert_eq!(script_digest, digest, "the same image, the same manifest");
    assert_eq!(tags(&http, &registry, &script_repo).await, expected);
    assert_tags_name(&http, &registry, &script_repo, &expected, &digest).await;

    drop(local_refs);
    println!("{TEST}: passed in {:.1}s", started.elapsed().as_secs_f64());
}
