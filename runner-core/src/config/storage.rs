//! Where backups go: a local directory, or an S3-compatible bucket. A local directory on a
//! container's own filesystem is refused for backups: the backup would vanish with the container.

use std::ffi::OsString;
use std::os::unix::ffi::OsStringExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use super::{ChecksumMode, S3Config, StorageConfig, MAX_PART_SIZE_MB, MIN_PART_SIZE_MB};
use crate::env::EnvReader;

const S3_FLAVORS: &[&str] = &[
    "s3",
    "s3-compatible",
    "minio",
    "r2",
    "gcs",
    "spaces",
    "wasabi",
    "b2",
    "oci",
    "ceph",
    "garage",
];
const LOCAL_FLAVORS: &[&str] = &["local", "file", "filesystem"];
/// Settings that only mean something for a bucket: one of them set says the backups are meant
/// for S3-compatible storage, so a missing bucket is an error rather than a silent switch to
/// local storage.
const S3_SETTINGS: &[&str] = &[
    "STORAGE_ENDPOINT",
    "STORAGE_ACCESS_KEY_ID",
    "STORAGE_ACCESS_KEY_ID_FILE",
    "STORAGE_SECRET_ACCESS_KEY",
    "STORAGE_SECRET_ACCESS_KEY_FILE",
    "STORAGE_REGION",
];
/// `STORAGE_LOCAL_DIR`'s default.
pub const DEFAULT_LOCAL_DIR: &str = "./backups";

/// What the runner knows of the machine it runs on, for the local-storage check.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HostInfo {
    /// Running in a container: `/.dockerenv` or `/run/.containerenv` exists, or
    /// `KUBERNETES_SERVICE_HOST` is set.
    pub in_container: bool,
    /// The text of `/proc/self/mountinfo`, when readable.
    pub mountinfo: Option<String>,
}

impl HostInfo {
    /// Inspects this process's machine; `KUBERNETES_SERVICE_HOST` is read through `env`.
    pub fn detect(env: &EnvReader<'_>) -> HostInfo {
        let in_container = Path::new("/.dockerenv").exists()
            || Path::new("/run/.containerenv").exists()
            || env.is_set("KUBERNETES_SERVICE_HOST");
        let mountinfo = in_container
            .then(|| std::fs::read("/proc/self/mountinfo").ok())
            .flatten()
            .map(|bytes| String::from_utf8_lossy(&bytes).into_owned());
        HostInfo {
            in_container,
            mountinfo,
        }
    }
}

/// `path`'s nearest existing ancestor (itself included), made absolute against the working
/// directory and canonicalised: the directory whose mount decides where the backups land.
pub(super) fn resolve_dir(path: &Path) -> Option<PathBuf> {
    let absolute = if path.is_absolute() {
        path.to_path_buf()
    } else {
        std::env::current_dir().ok()?.join(path)
    };
    absolute.ancestors().find_map(|a| a.canonicalize().ok())
}

/// A mount point as `/proc/self/mountinfo` writes it, with its octal escapes (`\040` for a
/// space, `\011` tab, `\012` newline, `\134` backslash) undone.
pub(super) fn unescape_mount_path(field: &str) -> PathBuf {
    let bytes = field.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let octal = bytes.get(i + 1..i + 4).filter(|d| {
            bytes[i] == b'\\' && d.iter().all(|b| (b'0'..=b'7').contains(b)) && d[0] <= b'3'
        });
        match octal {
            Some(d) => {
                out.push((d[0] - b'0') * 64 + (d[1] - b'0') * 8 + (d[2] - b'0'));
                i += 4;
            }
            None => {
                out.push(bytes[i]);
                i += 1;
            }
        }
    }
    PathBuf::from(OsString::from_vec(out))
}

/// The mount that holds `path` (absolute, canonical) according to `mountinfo`: the longest
/// mount point that is `path` or one of its ancestors (of equal ones, the last mounted), with its
/// filesystem type.
fn mount_of(mountinfo: &str, path: &Path) -> Option<(PathBuf, String)> {
    let mut best: Option<(PathBuf, String)> = None;
    for line in mountinfo.lines() {
        let Some(field) = line.split(' ').nth(4) else {
            continue;
        };
        let fstype = line
            .split_once(" - ")
            .and_then(|(_, rest)| rest.split(' ').next())
            .unwrap_or("")
            .to_string();
        let mount_point = unescape_mount_path(field);
        if !mount_point.is_absolute() || !path.starts_with(&mount_point) {
            continue;
        }
        let longer = best
            .as_ref()
            .is_none_or(|(b, _)| mount_point.components().count() >= b.components().count());
        if longer {
            best = Some((mount_point, fstype));
        }
    }
    best
}

/// The mount point that holds `path` (absolute, canonical) according to `mountinfo`.
#[cfg(test)]
fn mount_point_of(mountinfo: &str, path: &Path) -> Option<PathBuf> {
    mount_of(mountinfo, path).map(|(m, _)| m)
}

/// Filesystems a container runtime builds a container's own root from: what is written there
/// lives in the container's writable layer and goes with it.
const CONTAINER_LAYER_FILESYSTEMS: &[&str] = &["overlay", "aufs", "fuse.fuse-overlayfs"];

/// Whether a directory at `path` (absolute, canonical) lies on a container's own filesystem (the
/// layered root at `/`) and so would vanish with the container. Outside a container, when no
/// mount can be found for it, or when `/` is a real disk (a VM-like sandbox), never.
pub(super) fn on_container_root(in_container: bool, mountinfo: &str, path: &Path) -> bool {
    in_container
        && mount_of(mountinfo, path).is_some_and(|(m, fstype)| {
            m == Path::new("/") && CONTAINER_LAYER_FILESYSTEMS.contains(&fstype.as_str())
        })
}

/// Reads the storage settings. `check_local` describes the machine when a local directory must
/// be checked for being on a container's own filesystem (a backup, unless allowed).
pub(super) fn read_storage(
    env: &mut EnvReader<'_>,
    check_local: Option<&dyn Fn(&EnvReader<'_>) -> HostInfo>,
) -> Option<StorageConfig> {
    let mut accepted: Vec<&str> = LOCAL_FLAVORS.to_vec();
    accepted.extend_from_slice(S3_FLAVORS);
    let s3_settings: Vec<&str> = S3_SETTINGS
        .iter()
        .copied()
        .filter(|v| env.is_set(v))
        .collect();
    let flavor = match env.choice("STORAGE_TYPE", &accepted) {
        Some(f) => f,
        None if env.is_set("STORAGE_TYPE") => return None,
        // The embedded default: a local directory, unless a bucket or another S3 setting says
        // otherwise.
        None if env.is_set("STORAGE_BUCKET") || !s3_settings.is_empty() => "s3".to_string(),
        None => "local".to_string(),
    };
    if LOCAL_FLAVORS.contains(&flavor.as_str()) {
        let given = env.string("STORAGE_LOCAL_DIR");
        let dir = PathBuf::from(given.as_deref().unwrap_or(DEFAULT_LOCAL_DIR));
        if let Some(host) = check_local {
            check_local_dir(env, &host(env), &dir, given.is_some());
        }
        return Some(StorageConfig::Local { dir });
    }

    let endpoint = env
        .string("STORAGE_ENDPOINT")
        .or_else(|| (flavor == "gcs").then(|| "https://storage.googleapis.com".to_string()));
    match &endpoint {
        Some(e) => match ::url::Url::parse(e) {
            Ok(u) if matches!(u.scheme(), "http" | "https") && u.host().is_some() => {}
            _ => env.problem(
                "STORAGE_ENDPOINT",
                format!("{e:?} is not an http(s) URL: expected e.g. https://s3.example.com:9000"),
            ),
        },
        None if flavor != "s3" => env.problem(
            "STORAGE_ENDPOINT",
            format!("is required for STORAGE_TYPE={flavor}: set the store's S3 API URL"),
        ),
        None => {}
    }
    let bucket = env.string("STORAGE_BUCKET");
    if bucket.is_none() {
        let state = if env.is_present("STORAGE_BUCKET") {
            "is empty"
        } else {
            "is not set"
        };
        let (reason, fix) = if env.is_set("STORAGE_TYPE") {
            (
                format!("STORAGE_TYPE={flavor} stores backups in a bucket"),
                "or set STORAGE_TYPE=local to use a local directory",
            )
        } else {
            (
                format!(
                    "{} {} set, so backups go to S3-compatible storage",
                    s3_settings.join(", "),
                    if s3_settings.len() == 1 { "is" } else { "are" }
                ),
                "or remove the S3 settings (or set STORAGE_TYPE=local) to use a local directory",
            )
        };
        env.problem(
            "STORAGE_BUCKET",
            format!("{state}, but {reason}: set STORAGE_BUCKET to the bucket's name, {fix}"),
        );
    }
    if let Some(b) = &bucket {
        if b.contains('/') || b.len() < 3 || b.len() > 63 {
            env.problem(
                "STORAGE_BUCKET",
                format!("{b:?} is not a bucket name (3–63 characters, no '/'): put path prefixes in STORAGE_PREFIX"),
            );
        }
    }
    let region = env
        .string("STORAGE_REGION")
        .unwrap_or_else(|| if flavor == "r2" { "auto" } else { "us-east-1" }.to_string());
    let key_id = env.secret("STORAGE_ACCESS_KEY_ID");
    let secret = env.secret("STORAGE_SECRET_ACCESS_KEY");
    let credentials = match (key_id, secret) {
        (Some(k), Some(s)) => Some((k, s)),
        (None, None) => None,
        (Some(_), None) => {
            env.problem(
                "STORAGE_SECRET_ACCESS_KEY",
                "is missing while STORAGE_ACCESS_KEY_ID is set: set both, or neither to use the default credential chain",
            );
            None
        }
        (None, Some(_)) => {
            env.problem(
                "STORAGE_ACCESS_KEY_ID",
                "is missing while STORAGE_SECRET_ACCESS_KEY is set: set both, or neither to use the default credential chain",
            );
            None
        }
    };
    let custom_endpoint = endpoint.is_some();
    let force_path_style = env
        .bool("STORAGE_FORCE_PATH_STYLE")
        .unwrap_or(custom_endpoint);
    let checksum = match env
        .choice(
            "STORAGE_CHECKSUM_MODE",
            &["when_required", "when_supported"],
        )
        .as_deref()
    {
        Some("when_required") => ChecksumMode::WhenRequired,
        Some(_) => ChecksumMode::WhenSupported,
        None if custom_endpoint => ChecksumMode::WhenRequired,
        None => ChecksumMode::WhenSupported,
    };
    let part_size = env
        .int_in::<u64>(
            "STORAGE_PART_SIZE_MB",
            MIN_PART_SIZE_MB,
            MAX_PART_SIZE_MB,
            "the multipart part size in MiB",
        )
        .map(|mb| mb * 1024 * 1024);
    let concurrency = env
        .int_in::<usize>(
            "STORAGE_UPLOAD_CONCURRENCY",
            1,
            16,
            "parts uploaded at once",
        )
        .unwrap_or(3);
    let request_timeout = Duration::from_secs(
        env.int_in::<u64>(
            "STORAGE_TIMEOUT_SECS",
            1,
            86400,
            "seconds one storage request may take",
        )
        .unwrap_or(300),
    );
    Some(StorageConfig::S3(S3Config {
        flavor,
        endpoint,
        bucket: bucket?,
        region,
        credentials,
        force_path_style,
        checksum,
        part_size,
        concurrency,
        request_timeout,
    }))
}

/// Refuses a backup directory on the container's own filesystem.
fn check_local_dir(env: &mut EnvReader<'_>, host: &HostInfo, dir: &Path, given: bool) {
    let (true, Some(mountinfo)) = (host.in_container, &host.mountinfo) else {
        return;
    };
    let Some(resolved) = resolve_dir(dir) else {
        return;
    };
    if !on_container_root(true, mountinfo, &resolved) {
        return;
    }
    let absolute = std::env::current_dir()
        .map(|cwd| cwd.join(dir))
        .unwrap_or_else(|_| dir.to_path_buf());
    let which = if given {
        format!("{}", dir.display())
    } else {
        format!("{} (the default)", dir.display())
    };
    env.problem(
        "STORAGE_LOCAL_DIR",
        format!(
            "{which} is on the container's own filesystem (no volume is mounted at {} or above \
             it), so the backup would be lost with the container: mount a volume at {} \
             (docker run -v <volume>:{}, or a Kubernetes volumeMount), or set \
             STORAGE_LOCAL_ALLOW_EPHEMERAL=true to write there anyway",
            absolute.display(),
            absolute.display(),
            absolute.display(),
        ),
    );
}

#[cfg(test)]
mod tests {
    use super::super::testutil::{load, load_on, Vars};
    use super::*;

    /// A Docker container: the overlay root, a named volume at /backups, the usual bind mounts,
    /// and a volume whose path holds a space.
    const DOCKER: &str = "\
812 640 0:214 / / rw,relatime master:354 - overlay overlay rw,lowerdir=/var/lib/docker/overlay2/l/A:/var/lib/docker/overlay2/l/B,upperdir=/var/lib/docker/overlay2/x/diff,workdir=/var/lib/docker/overlay2/x/work
813 812 0:217 / /proc rw,nosuid,nodev,noexec,relatime - proc proc rw
814 812 0:218 / /dev rw,nosuid - tmpfs tmpfs rw,size=65536k,mode=755
819 812 254:1 /var/lib/docker/volumes/bk/_data /backups rw,relatime - ext4 /dev/vda1 rw
820 812 254:1 /var/lib/docker/containers/c/resolv.conf /etc/resolv.conf rw,relatime - ext4 /dev/vda1 rw
821 812 254:1 /var/lib/docker/containers/c/hosts /etc/hosts rw,relatime - ext4 /dev/vda1 rw
822 812 254:1 /home/me/my\\040backups /srv/my\\040backups rw,relatime - ext4 /dev/vda1 rw
";

    /// A Kubernetes pod: a PersistentVolumeClaim under the working directory, an emptyDir.
    const KUBERNETES: &str = "\
1500 1400 0:600 / / rw,relatime - overlay overlay rw,lowerdir=/l,upperdir=/u,workdir=/w
1501 1500 259:3 /var/lib/kubelet/pods/p/volumes/kubernetes.io~csi/pvc-1/mount /var/lib/backup-runner/backups rw,relatime - ext4 /dev/nvme1n1 rw
1502 1500 259:1 /var/lib/kubelet/pods/p/volumes/kubernetes.io~empty-dir/scratch /scratch rw,relatime - ext4 /dev/nvme0n1p1 rw
1503 1500 0:601 / /var/run/secrets/kubernetes.io/serviceaccount ro,relatime - tmpfs tmpfs rw
";

    /// A sandbox that marks itself as a container but whose root is a disk.
    const VM_LIKE: &str = "\
22 27 0:21 / /proc rw,relatime - proc proc rw
27 1 254:0 / / rw,relatime - ext4 /dev/vda rw,discard
";

    #[test]
    fn mount_paths_are_unescaped() {
        for (field, path) in [
            ("/backups", "/backups"),
            ("/my\\040backups", "/my backups"),
            ("/a\\011b\\012c", "/a\tb\nc"),
            ("/back\\134slash", "/back\\slash"),
            ("/not\\08escape", "/not\\08escape"),
            ("/trailing\\04", "/trailing\\04"),
        ] {
            assert_eq!(unescape_mount_path(field), PathBuf::from(path), "{field}");
        }
    }

    #[test]
    fn the_longest_mount_point_holds_a_path() {
        // (mountinfo, path, its mount point)
        let cases: &[(&str, &str, Option<&str>)] = &[
            (DOCKER, "/backups", Some("/backups")),
            (DOCKER, "/backups/app/2026", Some("/backups")),
            (DOCKER, "/backups2", Some("/")),
            (DOCKER, "/var/lib/backup-runner/backups", Some("/")),
            (DOCKER, "/srv/my backups/x", Some("/srv/my backups")),
            (DOCKER, "/srv/my", Some("/")),
            (DOCKER, "/proc/self", Some("/proc")),
            (
                KUBERNETES,
                "/var/lib/backup-runner/backups",
                Some("/var/lib/backup-runner/backups"),
            ),
            (KUBERNETES, "/var/lib/backup-runner", Some("/")),
            (KUBERNETES, "/scratch/out", Some("/scratch")),
            ("", "/backups", None),
            ("garbage without fields\n", "/backups", None),
        ];
        for (mountinfo, path, mount) in cases {
            assert_eq!(
                mount_point_of(mountinfo, Path::new(path)),
                mount.map(PathBuf::from),
                "{path}"
            );
        }
    }

    #[test]
    fn a_directory_on_the_container_root_is_ephemeral() {
        // (in a container, mountinfo, path, ephemeral)
        let cases: &[(bool, &str, &str, bool)] = &[
            (true, DOCKER, "/backups", false),
            (true, DOCKER, "/backups/nested", false),
            (true, DOCKER, "/var/lib/backup-runner", true),
            (true, DOCKER, "/", true),
            (true, DOCKER, "/backups2", true),
            (true, DOCKER, "/srv/my backups", false),
            (true, KUBERNETES, "/var/lib/backup-runner/backups", false),
            (true, KUBERNETES, "/tmp", true),
            // Outside a container nothing is refused, whatever the mounts.
            (false, DOCKER, "/var/lib/backup-runner", false),
            (false, KUBERNETES, "/tmp", false),
            // No mount found: cannot tell, so not refused.
            (true, "", "/backups", false),
            // A root that is a disk, not a container layer (a VM-like sandbox): kept.
            (true, VM_LIKE, "/tmp", false),
            (true, VM_LIKE, "/work/backups", false),
        ];
        for (in_container, mountinfo, path, ephemeral) in cases {
            assert_eq!(
                on_container_root(*in_container, mountinfo, Path::new(path)),
                *ephemeral,
                "{in_container} {path}"
            );
        }
    }

    #[test]
    fn directories_resolve_to_their_nearest_existing_ancestor() {
        let dir = tempfile::tempdir().unwrap();
        let real = dir.path().canonicalize().unwrap();
        assert_eq!(resolve_dir(dir.path()), Some(real.clone()));
        assert_eq!(
            resolve_dir(&dir.path().join("not/yet/there")),
            Some(real.clone())
        );
        std::os::unix::fs::symlink(&real, real.join("link")).unwrap();
        assert_eq!(resolve_dir(&real.join("link/new")), Some(real));
        assert_eq!(
            resolve_dir(Path::new("relative/missing")),
            Some(std::env::current_dir().unwrap().canonicalize().unwrap())
        );
    }

    #[test]
    fn backups_to_the_container_filesystem_are_refused() {
        let volume = tempfile::tempdir().unwrap();
        let volume_path = volume.path().canonicalize().unwrap();
        let escaped = volume_path.to_str().unwrap().replace(' ', "\\040");
        let container = |extra_mount: bool| HostInfo {
            in_container: true,
            mountinfo: Some(if extra_mount {
                format!("{DOCKER}900 812 254:1 /v {escaped} rw - ext4 /dev/vda1 rw\n")
            } else {
                DOCKER.to_string()
            }),
        };
        let in_volume = volume_path.join("backups");
        let in_volume = in_volume.to_str().unwrap();
        let base = [("DB_HOST", "h"), ("DB_NAME", "d")];
        // (extra variables, host, refused)
        let cases: Vec<(Vars, HostInfo, bool)> = vec![
            (
                vec![("STORAGE_LOCAL_DIR", "/nonexistent-dir/backups")],
                container(false),
                true,
            ),
            (vec![], container(false), true),
            (
                vec![("STORAGE_LOCAL_DIR", in_volume)],
                container(false),
                true,
            ),
            (
                vec![("STORAGE_LOCAL_DIR", in_volume)],
                container(true),
                false,
            ),
            (
                vec![
                    ("STORAGE_LOCAL_DIR", "/nonexistent-dir/backups"),
                    ("STORAGE_LOCAL_ALLOW_EPHEMERAL", "true"),
                ],
                container(false),
                false,
            ),
            (
                vec![
                    ("STORAGE_LOCAL_DIR", "/nonexistent-dir/backups"),
                    ("OPERATION_TYPE", "restore"),
                    ("BACKUP_PATH", "a/b.zst"),
                ],
                container(false),
                false,
            ),
            (
                vec![
                    ("STORAGE_LOCAL_DIR", "/nonexistent-dir/backups"),
                    ("OPERATION_TYPE", "verify"),
                    ("BACKUP_PATH", "a/b.zst"),
                ],
                container(false),
                false,
            ),
            (
                vec![("STORAGE_LOCAL_DIR", "/nonexistent-dir/backups")],
                HostInfo::default(),
                false,
            ),
            (
                vec![("STORAGE_LOCAL_DIR", "/nonexistent-dir/backups")],
                HostInfo {
                    in_container: true,
                    mountinfo: None,
                },
                false,
            ),
        ];
        for (extra, host, refused) in cases {
            let mut vars = base.to_vec();
            vars.extend_from_slice(&extra);
            match (refused, load_on(&vars, host)) {
                (false, Ok(cfg)) => assert!(matches!(cfg.storage, StorageConfig::Local { .. })),
                (true, Err(err)) => {
                    assert_eq!(err.problems.len(), 1, "{err}");
                    assert_eq!(err.problems[0].var, "STORAGE_LOCAL_DIR");
                    let message = &err.problems[0].message;
                    for needle in [
                        "container's own filesystem",
                        "mount a volume at",
                        "STORAGE_LOCAL_ALLOW_EPHEMERAL=true",
                    ] {
                        assert!(message.contains(needle), "{needle}: {message}");
                    }
                    let dir = extra
                        .iter()
                        .find(|(k, _)| *k == "STORAGE_LOCAL_DIR")
                        .map_or(DEFAULT_LOCAL_DIR, |(_, v)| *v);
                    assert!(message.contains(dir), "{dir}: {message}");
                }
                (refused, got) => panic!("{extra:?}: expected refused={refused}, got {got:?}"),
            }
        }
    }

    #[test]
    fn a_missing_bucket_beside_s3_settings_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let key_file = dir.path().join("key");
        std::fs::write(&key_file, "file-secret-key\n").unwrap();
        let key_file = key_file.to_str().unwrap();
        let base = [("DB_HOST", "h"), ("DB_NAME", "d")];
        // (extra variables, the problem's message must contain this; None: local storage)
        let cases: Vec<(Vars, Option<&str>)> = vec![
            (vec![], None),
            (vec![("STORAGE_BUCKET", "")], None),
            (vec![("STORAGE_BUCKET", "  ")], None),
            (
                vec![
                    ("STORAGE_TYPE", "local"),
                    ("STORAGE_ENDPOINT", "http://m:9000"),
                ],
                None,
            ),
            (
                vec![("STORAGE_ENDPOINT", "http://minio:9000")],
                Some("is not set, but STORAGE_ENDPOINT is set"),
            ),
            (
                vec![
                    ("STORAGE_ENDPOINT", "http://minio:9000"),
                    ("STORAGE_BUCKET", " "),
                ],
                Some("is empty, but STORAGE_ENDPOINT is set"),
            ),
            (
                vec![
                    ("STORAGE_ACCESS_KEY_ID", "AKIAEXAMPLE"),
                    ("STORAGE_SECRET_ACCESS_KEY", "direct-secret-key"),
                ],
                Some("STORAGE_ACCESS_KEY_ID, STORAGE_SECRET_ACCESS_KEY are set"),
            ),
            (
                vec![
                    ("STORAGE_ACCESS_KEY_ID_FILE", key_file),
                    ("STORAGE_SECRET_ACCESS_KEY_FILE", key_file),
                ],
                Some("STORAGE_ACCESS_KEY_ID_FILE, STORAGE_SECRET_ACCESS_KEY_FILE are set"),
            ),
            (
                vec![("STORAGE_REGION", "eu-west-1")],
                Some("STORAGE_REGION is set"),
            ),
            (
                vec![("STORAGE_TYPE", "s3"), ("STORAGE_BUCKET", "")],
                Some("is empty, but STORAGE_TYPE=s3 stores backups in a bucket"),
            ),
            (
                vec![
                    ("STORAGE_TYPE", "R2"),
                    ("STORAGE_ENDPOINT", "https://r2.example"),
                ],
                Some("is not set, but STORAGE_TYPE=r2 stores backups in a bucket"),
            ),
        ];
        for (extra, problem) in cases {
            let mut vars = base.to_vec();
            vars.extend_from_slice(&extra);
            match (problem, load(&vars)) {
                (None, Ok(cfg)) => assert!(
                    matches!(cfg.storage, StorageConfig::Local { .. }),
                    "{extra:?}"
                ),
                (Some(expected), Err(err)) => {
                    assert_eq!(err.problems.len(), 1, "{extra:?}: {err}");
                    assert_eq!(err.problems[0].var, "STORAGE_BUCKET");
                    let text = err.to_string();
                    assert!(text.contains(expected), "{expected}: {text}");
                    assert!(
                        text.contains("set STORAGE_BUCKET to the bucket's name"),
                        "{text}"
                    );
                    assert!(text.contains("STORAGE_TYPE=local"), "{text}");
                    assert!(!text.contains("secret-key"), "{text}");
                }
                (expected, got) => panic!("{extra:?}: expected {expected:?}, got {got:?}"),
            }
        }
        // With the bucket, the same settings give S3 storage.
        let cfg = load(&[
            ("DB_HOST", "h"),
            ("DB_NAME", "d"),
            ("STORAGE_ENDPOINT", "http://minio:9000"),
            ("STORAGE_BUCKET", "backups"),
        ])
        .unwrap();
        let StorageConfig::S3(s3) = cfg.storage else {
            panic!("expected S3 storage")
        };
        assert_eq!((s3.flavor.as_str(), s3.bucket.as_str()), ("s3", "backups"));
        assert_eq!(s3.endpoint.as_deref(), Some("http://minio:9000"));
    }
}
