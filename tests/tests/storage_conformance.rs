//! The storage conformance suite: one set of checks run against every backend of runner-core's
//! `ObjectStore` (a local directory, moto, s3s-fs), in the manner of the `object_store` crate's
//! shared integration suite. Each check is an async function over one [`Backend`] and its own
//! key prefix; every backend runs every check, and a check asserts on data, never only on `Ok`.
//!
//! Where a backend legitimately differs, the difference is a field of [`Capabilities`] with the
//! reason, and the check asserts what that backend really does instead (so a server upgrade
//! that closes the gap fails the suite until the flag is flipped): nothing is skipped silently.
//!
//! `cargo test --release -p harness --test storage_conformance` (moto_server on PATH, s3s-fs
//! installed by .ci/install-test-deps.sh).

use std::any::Any;
use std::ops::Range;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures_util::{FutureExt, StreamExt};
use harness::{S3Server, S3sServer};
use runner_core::config::{ChecksumMode, S3Config};
use runner_core::storage::{
    LocalStore, ObjectMeta, ObjectStore, RequestCounts, S3Store, Storage, WriteMode,
};
use runner_core::{Error, Secret};
use tokio::io::AsyncReadExt;

const MIB: usize = 1 << 20;
/// S3's smallest part size (every part but the last).
const PART: usize = 5 * MIB;
/// Past S3's 1,000 keys per listing page.
const MANY_KEYS: usize = 1234;
/// Writes in flight when building many objects.
const CONCURRENT_WRITES: usize = 32;
const BUCKET: &str = "conformance";
/// A bucket that does not exist on the S3 servers.
const MISSING_BUCKET: &str = "no-such-bucket-conformance";
/// moto's bucket whose policy denies every write.
const DENIED_BUCKET: &str = "writes-denied";

/// Where backends legitimately differ. A `false` is a known gap of that backend, with the reason;
/// the checks assert the gap's actual behaviour.
#[derive(Debug, Clone, Copy)]
struct Capabilities {
    /// `list_uploads` lists incomplete multipart uploads. s3s-fs 0.14 has no
    /// ListMultipartUploads (it answers NotImplemented): there the suite asserts that
    /// `list_uploads` fails loudly (an error, never an empty list that a prune or a report
    /// would trust) and sees the uploads in the server's directory instead.
    lists_uploads: bool,
    /// Aborting an upload the store no longer has (already aborted, or never there) succeeds,
    /// as the trait promises (S3: NoSuchUpload counts as aborted). s3s-fs 0.14 answers
    /// AccessDenied for an upload id it does not know, which S3Store cannot tell from a real
    /// denial: there a repeated abort is a storage error, which the suite asserts.
    abort_of_unknown_upload_succeeds: bool,
    /// `put` and `complete` with `WriteMode::Create` are atomic: of several writers racing for
    /// one key exactly one wins (S3 itself, and a directory through `renameat2(RENAME_NOREPLACE)`).
    /// Both servers here check If-None-Match and then write, without a lock: s3s-fs 0.14 with a
    /// "does the file exist" (from 1 to all 8 racing puts won in runs here), moto 5.2.5 with a
    /// lookup before it assembles the parts (2 of 3 racing completes won in 2 of 3 runs). There
    /// the suite asserts that every writer either won or got Conflict, that one winner's bytes
    /// are what is stored, and that the losers' uploads can be aborted.
    atomic_create: bool,
    /// A listing gives each object's version (the ETag). s3s-fs 0.14's ListObjectsV2 sends no
    /// ETag: there listed versions are empty (the catalog then reads the manifest instead of
    /// trusting its cache) and only `head` has one.
    lists_versions: bool,
    /// A write to a bucket that does not exist fails. s3s-fs 0.14 makes the bucket's directory
    /// on the first put: there the put succeeds (preflight, which runs first in a job, does
    /// report the missing bucket).
    missing_bucket_refuses_writes: bool,
    /// `list_uploads` gives each upload's real start time. moto 5.2.5's ListMultipartUploads
    /// answers a fixed `Initiated` of 2010-11-10T20:48:33Z for every upload, so anything that
    /// ages uploads by it (a prune of stale uploads) sees every upload as years old there.
    real_upload_initiated: bool,
    /// A key that is only a prefix of other keys (`a/b` when `a/b/c` exists) is a missing
    /// object: `head` and `get` give `None`, `open` Integrity, `delete` succeeds. s3s-fs 0.14
    /// keeps such a key as a directory and answers 500 InternalError: there all four are storage
    /// errors, which the suite asserts (never an object).
    prefix_key_is_missing: bool,
    /// A key and a key under it (`a/b` and `a/b/c`) can both be objects, as on S3. A directory
    /// cannot hold a file and a directory of one name, and s3s-fs stores keys as paths too:
    /// there the second write is a storage error that leaves the first object as it was.
    nested_keys: bool,
    /// `delete_many` sends S3's DeleteObjects, 1,000 keys per request; a directory deletes one
    /// file per request.
    batch_deletes: bool,
}

/// One backend under test, with the stores of the same kind the failure checks need.
struct Backend {
    name: &'static str,
    storage: Storage,
    caps: Capabilities,
    /// The ids of the uploads in progress, for a backend that cannot list them.
    pending_ids: Option<Box<dyn Fn() -> Vec<String> + Send + Sync>>,
    /// A store whose location does not exist and cannot be made, and the name its preflight
    /// error must give (the bucket, the directory).
    missing: (Box<dyn ObjectStore>, String),
    /// A store that may read but not write (or may do nothing at all), what its write errors
    /// must name, and the reason they must give.
    denied: (Box<dyn ObjectStore>, String, &'static str),
    /// Servers and directories that must live as long as the backend.
    _keep: Vec<Box<dyn Any + Send + Sync>>,
}

impl Backend {
    fn store(&self) -> &dyn ObjectStore {
        self.storage.store()
    }

    /// Whether the upload `id` of `key` is still in progress, by `list_uploads` or else by
    /// the backend's own view of its uploads.
    async fn upload_pending(&self, prefix: &str, key: &str, id: &str) -> bool {
        if self.caps.lists_uploads {
            let uploads = self
                .store()
                .list_uploads(prefix)
                .await
                .expect("list_uploads");
            uploads.iter().any(|u| u.key == key && u.upload_id == id)
        } else {
            self.pending_ids().iter().any(|i| i == id)
        }
    }

    /// The ids of the uploads in progress, from a backend that cannot list them.
    fn pending_ids(&self) -> Vec<String> {
        let ids = self.pending_ids.as_ref();
        ids.expect("pending_ids for a backend that cannot list uploads")()
    }
}

// ---------------------------------------------------------------------------------------------
// Backends

fn s3_config(endpoint: &str, bucket: &str, access_key: &str, secret_key: &str) -> S3Config {
    S3Config {
        flavor: "s3-compatible".into(),
        endpoint: Some(endpoint.into()),
        bucket: bucket.into(),
        region: "us-east-1".into(),
        credentials: Some((Secret::new(access_key), Secret::new(secret_key))),
        force_path_style: true,
        checksum: ChecksumMode::WhenRequired,
        part_size: None,
        concurrency: 4,
        request_timeout: Duration::from_secs(60),
    }
}

async fn local_backend() -> Backend {
    let dir = tempfile::Builder::new()
        .prefix("conformance-local-")
        .tempdir()
        .expect("tempdir");
    let root = dir.path().join("store");
    // The checks run as root, for whom mode bits deny nothing: what really fails for root is
    // a path through a regular file. `blocker` is such a file.
    let blocker = dir.path().join("blocker");
    std::fs::write(&blocker, b"a regular file, not a directory").unwrap();
    let missing = blocker.join("backups");
    let storage = Storage::with_store(Box::new(LocalStore::new(root.clone())));
    storage
        .preflight()
        .await
        .expect("preflight of the local store");
    Backend {
        name: "local",
        storage,
        caps: Capabilities {
            lists_uploads: true,
            abort_of_unknown_upload_succeeds: true,
            atomic_create: true,
            lists_versions: true,
            missing_bucket_refuses_writes: true,
            real_upload_initiated: true,
            prefix_key_is_missing: true,
            nested_keys: false,
            batch_deletes: false,
        },
        pending_ids: None,
        missing: (
            Box::new(LocalStore::new(missing.clone())),
            missing.display().to_string(),
        ),
        denied: (
            Box::new(LocalStore::new(blocker.clone())),
            blocker.display().to_string(),
            "Not a directory",
        ),
        _keep: vec![Box::new(dir)],
    }
}

async fn moto_backend() -> Backend {
    let server = S3Server::start().await.expect("start moto");
    server.create_bucket(BUCKET).await.unwrap();
    server.create_bucket(DENIED_BUCKET).await.unwrap();
    // moto accepts any credentials, so a write is denied by a bucket policy, which moto
    // enforces for every caller. It names a write to a key by the HTTP method: PUT (put,
    // upload part) is s3:PutObject, POST (create and complete a multipart upload) is
    // s3:PostObject; on AWS s3:PutObject alone covers both.
    let policy = serde_json::json!({
        "Version": "2012-10-17",
        "Statement": [{
            "Sid": "NoWrites",
            "Effect": "Deny",
            "Principal": "*",
            "Action": ["s3:PutObject", "s3:PostObject"],
            "Resource": format!("arn:aws:s3:::{DENIED_BUCKET}/*"),
        }],
    });
    server
        .client()
        .put_bucket_policy()
        .bucket(DENIED_BUCKET)
        .policy(policy.to_string())
        .send()
        .await
        .expect("put bucket policy");
    let (ak, sk, ep) = (server.access_key(), server.secret_key(), server.endpoint());
    let store = S3Store::new(&s3_config(&ep, BUCKET, ak, sk)).await;
    let missing = S3Store::new(&s3_config(&ep, MISSING_BUCKET, ak, sk)).await;
    let denied = S3Store::new(&s3_config(&ep, DENIED_BUCKET, ak, sk)).await;
    let storage = Storage::with_store(Box::new(store));
    storage
        .preflight()
        .await
        .expect("preflight of moto's bucket");
    Backend {
        name: "moto",
        storage,
        caps: Capabilities {
            lists_uploads: true,
            abort_of_unknown_upload_succeeds: true,
            atomic_create: false,
            lists_versions: true,
            missing_bucket_refuses_writes: true,
            real_upload_initiated: false,
            prefix_key_is_missing: true,
            nested_keys: true,
            batch_deletes: true,
        },
        pending_ids: None,
        missing: (Box::new(missing), MISSING_BUCKET.into()),
        // moto's refusal has an empty body: no error code, only the status.
        denied: (Box::new(denied), DENIED_BUCKET.into(), "HTTP 403"),
        _keep: vec![Box::new(server)],
    }
}

async fn s3s_backend() -> Backend {
    let server = Arc::new(S3sServer::start().await.expect("start s3s-fs"));
    server.create_bucket(BUCKET).await.unwrap();
    let (ak, sk, ep) = (server.access_key(), server.secret_key(), server.endpoint());
    let store = S3Store::new(&s3_config(&ep, BUCKET, ak, sk)).await;
    let missing = S3Store::new(&s3_config(&ep, MISSING_BUCKET, ak, sk)).await;
    // s3s-fs checks signatures: a wrong secret is refused on every request.
    let denied = S3Store::new(&s3_config(&ep, BUCKET, ak, "not-the-secret")).await;
    let storage = Storage::with_store(Box::new(store));
    storage
        .preflight()
        .await
        .expect("preflight of s3s-fs's bucket");
    let view = Arc::clone(&server);
    Backend {
        name: "s3s-fs",
        storage,
        caps: Capabilities {
            lists_uploads: false,
            abort_of_unknown_upload_succeeds: false,
            atomic_create: false,
            lists_versions: false,
            missing_bucket_refuses_writes: false,
            real_upload_initiated: true,
            prefix_key_is_missing: false,
            nested_keys: false,
            batch_deletes: true,
        },
        pending_ids: Some(Box::new(move || {
            view.pending_upload_ids().expect("read s3s-fs's directory")
        })),
        missing: (Box::new(missing), MISSING_BUCKET.into()),
        denied: (Box::new(denied), BUCKET.into(), "SignatureDoesNotMatch"),
        _keep: vec![Box::new(server)],
    }
}

// ---------------------------------------------------------------------------------------------
// Helpers

/// `len` bytes of a deterministic pseudo-random sequence: a misplaced or dropped byte shows.
fn data(len: usize, seed: u64) -> Bytes {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        out.extend_from_slice(&x.to_le_bytes());
    }
    out.truncate(len);
    Bytes::from(out)
}

async fn read_all(
    store: &dyn ObjectStore,
    key: &str,
    range: Option<Range<u64>>,
) -> (Vec<u8>, Option<u64>) {
    let (mut reader, size) = store
        .open(key, range.clone())
        .await
        .unwrap_or_else(|e| panic!("open {key} {range:?}: {e}"));
    let mut buf = Vec::new();
    reader
        .read_to_end(&mut buf)
        .await
        .unwrap_or_else(|e| panic!("read {key} {range:?}: {e}"));
    (buf, size)
}

fn keys(list: &[ObjectMeta]) -> Vec<&str> {
    list.iter().map(|o| o.key.as_str()).collect()
}

/// Writes every `(key, body)` with up to [`CONCURRENT_WRITES`] in flight.
async fn put_all(store: &dyn ObjectStore, objects: Vec<(String, Bytes)>) {
    let results: Vec<_> = futures_util::stream::iter(objects)
        .map(|(k, v)| async move { (store.put(&k, v, WriteMode::Overwrite).await, k) })
        .buffer_unordered(CONCURRENT_WRITES)
        .collect()
        .await;
    for (r, k) in results {
        r.unwrap_or_else(|e| panic!("put {k}: {e}"));
    }
}

fn delta(before: RequestCounts, after: RequestCounts) -> RequestCounts {
    RequestCounts {
        list: after.list - before.list,
        get: after.get - before.get,
        head: after.head - before.head,
        put: after.put - before.put,
        delete: after.delete - before.delete,
        multipart: after.multipart - before.multipart,
    }
}

/// How many seconds ago `unix_secs` was (negative: in the future).
fn secs_ago(unix_secs: i64) -> i64 {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock after 1970")
        .as_secs();
    i64::try_from(now).expect("seconds fit") - unix_secs
}

// ---------------------------------------------------------------------------------------------
// Checks

/// put, then get returns the same bytes; missing keys are `None`; head gives the size, and a
/// version that changes when the object is rewritten, even with as many bytes.
async fn put_get_head(b: &Backend, p: &str) {
    let store = b.store();
    let key = format!("{p}dir/sub/object.bin");
    let body = data(100_000, 1);
    store
        .put(&key, body.clone(), WriteMode::Overwrite)
        .await
        .unwrap();
    assert_eq!(
        store.get(&key).await.unwrap().as_deref(),
        Some(&body[..]),
        "get after put"
    );

    assert_eq!(
        store.get(&format!("{p}missing")).await.unwrap(),
        None,
        "get of a missing key"
    );
    assert_eq!(
        store.head(&format!("{p}missing")).await.unwrap(),
        None,
        "head of a missing key"
    );
    // A "directory" of keys is not an object.
    let dir = format!("{p}dir/sub");
    if b.caps.prefix_key_is_missing {
        assert_eq!(
            store.head(&dir).await.unwrap(),
            None,
            "head of a key prefix"
        );
        assert_eq!(store.get(&dir).await.unwrap(), None, "get of a key prefix");
    } else {
        let head = store.head(&dir).await;
        assert!(
            matches!(head, Err(Error::Storage(_))),
            "head of a key prefix: {head:?}"
        );
        let get = store.get(&dir).await;
        assert!(
            matches!(get, Err(Error::Storage(_))),
            "get of a key prefix: {get:?}"
        );
    }
    match store.open(&dir, None).await {
        Err(Error::Integrity(_)) => {}
        Err(e) if !b.caps.prefix_key_is_missing => assert!(matches!(e, Error::Storage(_)), "{e:?}"),
        Err(e) => panic!("open of a key prefix: {e:?}, expected Integrity"),
        Ok(_) => panic!("open of a key prefix succeeded"),
    }
    let deleted = store.delete(&dir).await;
    if b.caps.prefix_key_is_missing {
        deleted.expect("delete of a key prefix (nothing is there)");
    } else {
        assert!(
            matches!(deleted, Err(Error::Storage(_))),
            "delete of a key prefix: {deleted:?}"
        );
    }
    assert_eq!(
        store.get(&key).await.unwrap().as_deref(),
        Some(&body[..]),
        "delete of a key prefix removed what is under it"
    );

    let first = store.head(&key).await.unwrap().expect("head after put");
    assert_eq!(first.key, key);
    assert_eq!(first.size, body.len() as u64);
    assert!(!first.version.is_empty(), "empty version");
    let age = secs_ago(first.last_modified.timestamp());
    assert!(
        (-120..600).contains(&age),
        "last_modified {} is {age} s ago",
        first.last_modified
    );

    // Rewritten at once, again and again, with other bytes of the same length: a version
    // made of a coarse timestamp and the size would repeat.
    let mut previous = first;
    for round in 2..12 {
        let other = data(100_000, round);
        store
            .put(&key, other.clone(), WriteMode::Overwrite)
            .await
            .unwrap();
        let next = store.head(&key).await.unwrap().expect("head after rewrite");
        assert_eq!(next.size, other.len() as u64);
        assert_ne!(
            previous.version, next.version,
            "the version did not change when the object was rewritten (round {round})"
        );
        assert_eq!(
            store.get(&key).await.unwrap().as_deref(),
            Some(&other[..]),
            "get after rewrite"
        );
        previous = next;
    }

    // An empty object is an object.
    let empty = format!("{p}empty");
    store
        .put(&empty, Bytes::new(), WriteMode::Create)
        .await
        .unwrap();
    assert_eq!(store.get(&empty).await.unwrap().as_deref(), Some(&b""[..]));
    assert_eq!(store.head(&empty).await.unwrap().map(|m| m.size), Some(0));
}

/// put-if-absent: Create on an existing key is a Conflict and keeps the old bytes; Overwrite
/// replaces; of several Creates racing for one key, one wins and its bytes are kept.
async fn put_if_absent(b: &Backend, p: &str) {
    let store = b.store();
    let key = format!("{p}backup.dump");
    store
        .put(&key, Bytes::from_static(b"first"), WriteMode::Create)
        .await
        .unwrap();
    let err = store
        .put(&key, Bytes::from_static(b"second"), WriteMode::Create)
        .await
        .unwrap_err();
    assert!(
        matches!(err, Error::Conflict(_)),
        "Create on an existing key: {err:?}"
    );
    assert_eq!(
        store.get(&key).await.unwrap().as_deref(),
        Some(&b"first"[..]),
        "the old object must be kept"
    );

    store
        .put(&key, Bytes::from_static(b"third"), WriteMode::Overwrite)
        .await
        .unwrap();
    assert_eq!(
        store.get(&key).await.unwrap().as_deref(),
        Some(&b"third"[..]),
        "Overwrite replaces"
    );

    let raced = format!("{p}raced.dump");
    let results: Vec<_> = futures_util::future::join_all((0..8u8).map(|i| {
        let raced = raced.clone();
        async move {
            (
                i,
                store
                    .put(&raced, Bytes::from(vec![i; 64]), WriteMode::Create)
                    .await,
            )
        }
    }))
    .await;
    let winners: Vec<u8> = results
        .iter()
        .filter(|(_, r)| r.is_ok())
        .map(|(i, _)| *i)
        .collect();
    for (i, r) in &results {
        if let Err(e) = r {
            assert!(matches!(e, Error::Conflict(_)), "racing Create {i}: {e:?}");
        }
    }
    let stored = store.get(&raced).await.unwrap().expect("the raced key");
    if b.caps.atomic_create {
        assert_eq!(
            winners.len(),
            1,
            "racing Creates that succeeded: {winners:?}"
        );
    } else {
        assert!(!winners.is_empty(), "no racing Create succeeded");
        eprintln!(
            "    [{}] {} of 8 racing Creates succeeded (not atomic)",
            b.name,
            winners.len()
        );
    }
    assert!(
        winners.iter().any(|w| stored[..] == [*w; 64][..]),
        "the stored bytes are no winner's: {:?}",
        &stored[..4]
    );
}

/// A key and a key under it: two objects where the store allows it, else a clean refusal.
async fn nested_keys(b: &Backend, p: &str) {
    let store = b.store();
    let (outer, inner) = (format!("{p}n/a"), format!("{p}n/a/b"));
    store
        .put(&outer, Bytes::from_static(b"outer"), WriteMode::Overwrite)
        .await
        .unwrap();
    let put = store
        .put(&inner, Bytes::from_static(b"inner"), WriteMode::Overwrite)
        .await;
    if b.caps.nested_keys {
        put.expect("a key under an object's key");
        assert_eq!(
            keys(&store.list(p).await.unwrap()),
            [outer.as_str(), inner.as_str()]
        );
        assert_eq!(
            store.get(&inner).await.unwrap().as_deref(),
            Some(&b"inner"[..])
        );
    } else {
        let err = put.expect_err("a key under an object's key");
        assert!(matches!(err, Error::Storage(_)), "{err:?}");
        assert_eq!(keys(&store.list(p).await.unwrap()), [outer.as_str()]);
        // Nothing is at a key under an object's key.
        assert_eq!(
            store.get(&inner).await.unwrap(),
            None,
            "get under an object's key"
        );
        assert_eq!(
            store.head(&inner).await.unwrap(),
            None,
            "head under an object's key"
        );
        match store.open(&inner, None).await {
            Err(Error::Integrity(_)) => {}
            Err(e) => panic!("open under an object's key: {e:?}, expected Integrity"),
            Ok(_) => panic!("open under an object's key succeeded"),
        }
        store
            .delete(&inner)
            .await
            .expect("delete under an object's key");
    }
    assert_eq!(
        store.get(&outer).await.unwrap().as_deref(),
        Some(&b"outer"[..])
    );
}

/// open streams the whole object or exactly a byte range; a missing object is Integrity.
async fn open_ranges(b: &Backend, p: &str) {
    let store = b.store();
    let key = format!("{p}stream.bin");
    let body = data(3 * MIB + 17, 3);
    let len = body.len() as u64;
    store
        .put(&key, body.clone(), WriteMode::Overwrite)
        .await
        .unwrap();

    let (all, size) = read_all(store, &key, None).await;
    assert_eq!(size, Some(len), "size of a whole read");
    assert!(
        all == body,
        "whole read differs ({} bytes read, {len} stored)",
        all.len()
    );

    for r in [
        0..1,
        0..len,
        10..1000,
        MIB as u64 - 3..2 * MIB as u64 + 5,
        len - 7..len,
    ] {
        let (got, size) = read_all(store, &key, Some(r.clone())).await;
        assert_eq!(size, Some(len), "size reported for range {r:?}");
        assert!(
            got[..] == body[r.start as usize..r.end as usize],
            "range {r:?}: {} bytes read, {} expected",
            got.len(),
            r.end - r.start
        );
    }

    let missing = format!("{p}missing.bin");
    match store.open(&missing, None).await {
        Err(Error::Integrity(m)) => assert!(m.contains("missing.bin"), "{m}"),
        Err(e) => panic!("open of a missing key: {e:?}, expected Integrity"),
        Ok(_) => panic!("open of a missing key succeeded"),
    }
    match store.open(&missing, Some(0..10)).await {
        Err(Error::Integrity(_)) => {}
        Err(e) => panic!("ranged open of a missing key: {e:?}, expected Integrity"),
        Ok(_) => panic!("ranged open of a missing key succeeded"),
    }
}

/// list(prefix): only keys under the prefix (a prefix is a string prefix, not a directory),
/// sorted, with sizes; nothing under a fresh prefix.
async fn list_prefix(b: &Backend, p: &str) {
    let store = b.store();
    let objects = [
        ("db/2026/b.dump", 20),
        ("db/2026/a.dump", 10),
        ("db/2026/a.dump.manifest.json", 3),
        ("db/2025/z.dump", 7),
        ("db/20260/x", 1),
        ("dbx/other", 5),
        ("top", 2),
    ];
    put_all(
        store,
        objects
            .iter()
            .enumerate()
            .map(|(i, (k, n))| (format!("{p}{k}"), data(*n, i as u64)))
            .collect(),
    )
    .await;

    let all = store.list(p).await.unwrap();
    let mut expected: Vec<String> = objects.iter().map(|(k, _)| format!("{p}{k}")).collect();
    expected.sort();
    assert_eq!(keys(&all), expected, "everything under {p}");
    for o in &all {
        let (_, n) = objects
            .iter()
            .find(|(k, _)| format!("{p}{k}") == o.key)
            .unwrap();
        assert_eq!(o.size, *n as u64, "size of {}", o.key);
        let head = store
            .head(&o.key)
            .await
            .unwrap()
            .expect("head of a listed key");
        assert_eq!(
            head.size, o.size,
            "head and list disagree on the size of {}",
            o.key
        );
        if b.caps.lists_versions {
            assert_eq!(
                o.version, head.version,
                "head and list disagree on the version of {}",
                o.key
            );
        } else {
            assert_eq!(o.version, "", "a listed version where none was expected");
        }
    }

    let dir = store.list(&format!("{p}db/2026/")).await.unwrap();
    assert_eq!(
        keys(&dir),
        [
            format!("{p}db/2026/a.dump"),
            format!("{p}db/2026/a.dump.manifest.json"),
            format!("{p}db/2026/b.dump")
        ],
    );
    // Not a directory: "db/2026" also matches "db/20260/x".
    let partial = store.list(&format!("{p}db/2026")).await.unwrap();
    assert_eq!(partial.len(), 4, "{:?}", keys(&partial));
    let name_prefix = store.list(&format!("{p}db/2026/a.")).await.unwrap();
    assert_eq!(
        keys(&name_prefix),
        [
            format!("{p}db/2026/a.dump"),
            format!("{p}db/2026/a.dump.manifest.json")
        ]
    );
    let db = store.list(&format!("{p}db")).await.unwrap();
    assert_eq!(db.len(), 6, "{:?}", keys(&db));

    assert!(store
        .list(&format!("{p}nothing/"))
        .await
        .unwrap()
        .is_empty());
    assert!(store.list(&format!("{p}db/2027")).await.unwrap().is_empty());
    assert!(store
        .list("no-such-prefix-anywhere/")
        .await
        .unwrap()
        .is_empty());
}

/// A listing past one page (S3: 1,000 keys) returns every key exactly once, in order.
async fn list_many_pages(b: &Backend, p: &str) {
    let store = b.store();
    let mut expected: Vec<String> = (0..MANY_KEYS).map(|i| format!("{p}k{i:05}")).collect();
    let t = Instant::now();
    put_all(
        store,
        expected
            .iter()
            .map(|k| (k.clone(), Bytes::from(k.clone())))
            .collect(),
    )
    .await;
    eprintln!(
        "    [{}] wrote {MANY_KEYS} objects in {:.1?}",
        b.name,
        t.elapsed()
    );
    let before = store.requests();
    let listed = store.list(p).await.unwrap();
    let pages = delta(before, store.requests()).list;
    expected.sort();
    assert_eq!(
        listed.len(),
        MANY_KEYS,
        "listed {} of {MANY_KEYS}",
        listed.len()
    );
    assert!(
        keys(&listed) == expected,
        "the listing is not every key once, in order"
    );
    for o in &listed {
        assert_eq!(o.size, o.key.len() as u64, "size of {}", o.key);
    }
    eprintln!(
        "    [{}] listed {MANY_KEYS} keys in {pages} request(s)",
        b.name
    );
}

/// delete removes the object; deleting a missing one succeeds.
async fn delete(b: &Backend, p: &str) {
    let store = b.store();
    let (key, keep) = (format!("{p}gone"), format!("{p}gone.not"));
    put_all(
        store,
        vec![(key.clone(), data(10, 1)), (keep.clone(), data(10, 2))],
    )
    .await;
    store.delete(&key).await.unwrap();
    assert_eq!(store.get(&key).await.unwrap(), None);
    assert_eq!(store.head(&key).await.unwrap(), None);
    assert_eq!(
        keys(&store.list(p).await.unwrap()),
        [keep.as_str()],
        "only the deleted key goes"
    );
    store.delete(&key).await.expect("deleting a deleted key");
    store
        .delete(&format!("{p}never/was"))
        .await
        .expect("deleting a key that never was");
}

/// delete_many removes exactly the keys given (1,205: more than one S3 request's 1,000), missing
/// ones included, with a result per key in their order; on S3 in one request per 1,000 keys.
async fn delete_many(b: &Backend, p: &str) {
    let store = b.store();
    let doomed: Vec<String> = (0..1205).map(|i| format!("{p}d/{i:05}")).collect();
    let kept: Vec<String> = (0..3).map(|i| format!("{p}k/{i}")).collect();
    put_all(
        store,
        doomed
            .iter()
            .chain(&kept)
            .map(|k| (k.clone(), data(8, 3)))
            .collect(),
    )
    .await;
    let mut asked = doomed.clone();
    asked.push(format!("{p}d/never-was"));
    let before = store.requests();
    let results = store.delete_many(&asked).await;
    let requests = delta(before, store.requests());
    assert_eq!(results.len(), asked.len(), "one result per key");
    for (k, r) in asked.iter().zip(&results) {
        assert!(r.is_ok(), "{k}: {:?}", r.as_ref().err());
    }
    assert_eq!(
        keys(&store.list(p).await.unwrap()),
        kept.iter().map(String::as_str).collect::<Vec<_>>(),
        "only the given keys go"
    );
    let expected = if b.caps.batch_deletes {
        2
    } else {
        asked.len() as u64
    };
    assert_eq!(requests.delete, expected, "delete requests");
    assert!(store.delete_many(&[]).await.is_empty());
}

/// Several full parts and a short last one make one object, the parts' concatenation.
async fn multipart_parts(b: &Backend, p: &str) {
    let store = b.store();
    let key = format!("{p}big.dump");
    let parts: Vec<Bytes> = (0..3).map(|i| data(PART, 10 + i)).collect();
    let last = data(123_457, 20);
    let mut expected = Vec::new();
    let mut up = store.start_upload(&key, 2, WriteMode::Create);
    let mut id = None;
    for (i, part) in parts.iter().enumerate() {
        let started = up.put_part(part.clone()).await.unwrap();
        assert_eq!(
            started.is_some(),
            i == 0,
            "put_part returns the upload id on the first part only"
        );
        id = id.or(started);
        expected.extend_from_slice(part);
    }
    expected.extend_from_slice(&last);
    let finished = up.complete(last).await.unwrap();
    assert_eq!(finished, id, "complete returns the id put_part gave");

    let meta = store
        .head(&key)
        .await
        .unwrap()
        .expect("the completed object");
    assert_eq!(meta.size, expected.len() as u64);
    let (got, _) = read_all(store, &key, None).await;
    assert!(
        got == expected,
        "the object is not the parts' concatenation"
    );
    let (mid, _) = read_all(store, &key, Some(PART as u64 - 5..PART as u64 + 5)).await;
    assert_eq!(
        mid,
        expected[PART - 5..PART + 5],
        "a range across a part boundary"
    );
    let id = id.unwrap();
    assert!(
        !b.upload_pending(p, &key, &id).await,
        "a completed upload is still listed"
    );
    assert_eq!(
        keys(&store.list(p).await.unwrap()),
        [key.as_str()],
        "only the object, no leftovers"
    );
}

/// An upload in progress is listed by list_uploads and is not an object; abort removes it;
/// aborting it again, or one that never was, succeeds.
async fn multipart_pending_abort(b: &Backend, p: &str) {
    let store = b.store();
    let key = format!("{p}pending.dump");
    let mut up = store.start_upload(&key, 2, WriteMode::Create);
    let id = up
        .put_part(data(PART, 30))
        .await
        .unwrap()
        .expect("the upload id");
    // The part is sent in the background: wait until the store has it.
    tokio::time::timeout(Duration::from_millis(500), up.failure())
        .await
        .expect_err("a healthy upload has no failure");

    assert!(
        store.list(p).await.unwrap().is_empty(),
        "an incomplete upload is listed as an object"
    );
    assert_eq!(
        store.head(&key).await.unwrap(),
        None,
        "an incomplete upload is visible by head"
    );
    assert_eq!(
        store.get(&key).await.unwrap(),
        None,
        "an incomplete upload is visible by get"
    );
    if b.caps.lists_uploads {
        let uploads = store.list_uploads(p).await.unwrap();
        assert_eq!(
            uploads
                .iter()
                .map(|u| (u.key.as_str(), u.upload_id.as_str()))
                .collect::<Vec<_>>(),
            [(key.as_str(), id.as_str())]
        );
        let initiated = uploads[0].initiated;
        if b.caps.real_upload_initiated {
            let age = secs_ago(initiated.timestamp());
            assert!(
                (-120..600).contains(&age),
                "initiated {initiated} is {age} s ago"
            );
        } else {
            assert_eq!(
                initiated.to_rfc3339(),
                "2010-11-10T20:48:33+00:00",
                "moto's fixed Initiated"
            );
        }
        assert!(
            store
                .list_uploads(&format!("{p}other"))
                .await
                .unwrap()
                .is_empty(),
            "list_uploads ignores its prefix"
        );
    } else {
        // The gap: an error, never an empty list.
        let err = store
            .list_uploads(p)
            .await
            .expect_err("list_uploads on a store without ListMultipartUploads");
        assert!(matches!(err, Error::Storage(_)), "{err:?}");
        assert!(
            b.upload_pending(p, &key, &id).await,
            "the server does not hold the upload"
        );
    }
    drop(up);
    assert!(
        b.upload_pending(p, &key, &id).await,
        "dropping the handle is not an abort"
    );

    store.abort_upload(&key, &id).await.unwrap();
    assert!(
        !b.upload_pending(p, &key, &id).await,
        "the upload is still there after abort"
    );
    assert!(
        store.list(p).await.unwrap().is_empty(),
        "an aborted upload left an object"
    );

    let again = store.abort_upload(&key, &id).await;
    let elsewhere = store.abort_upload(&format!("{p}never-started"), &id).await;
    if b.caps.abort_of_unknown_upload_succeeds {
        again.expect("aborting an aborted upload");
        elsewhere.expect("aborting an upload that never was");
    } else {
        for (what, r) in [
            ("an aborted upload", again),
            ("an upload that never was", elsewhere),
        ] {
            let err = r.expect_err(what);
            assert!(
                matches!(err, Error::Storage(ref m) if m.contains("AccessDenied")),
                "aborting {what}: {err:?}"
            );
        }
    }
}

/// Completing with Create where an object is: Conflict, the old object kept, the upload still
/// there to abort; with Overwrite it replaces.
async fn multipart_create_conflict(b: &Backend, p: &str) {
    let store = b.store();
    let key = format!("{p}taken.dump");
    store
        .put(&key, Bytes::from_static(b"old backup"), WriteMode::Create)
        .await
        .unwrap();

    let mut up = store.start_upload(&key, 2, WriteMode::Create);
    let id = up
        .put_part(data(PART, 40))
        .await
        .unwrap()
        .expect("the upload id");
    let err = up.complete(Bytes::from_static(b"tail")).await.unwrap_err();
    assert!(
        matches!(err, Error::Conflict(_)),
        "complete with Create on an existing key: {err:?}"
    );
    assert_eq!(
        store.get(&key).await.unwrap().as_deref(),
        Some(&b"old backup"[..]),
        "the old object must be kept"
    );
    assert!(
        b.upload_pending(p, &key, &id).await,
        "a refused upload must stay abortable"
    );
    store.abort_upload(&key, &id).await.unwrap();
    assert!(!b.upload_pending(p, &key, &id).await);

    // The one-request path (no full part) refuses too.
    let up = store.start_upload(&key, 2, WriteMode::Create);
    let err = up.complete(Bytes::from_static(b"small")).await.unwrap_err();
    assert!(
        matches!(err, Error::Conflict(_)),
        "small complete with Create: {err:?}"
    );
    assert_eq!(
        store.get(&key).await.unwrap().as_deref(),
        Some(&b"old backup"[..])
    );

    let mut up = store.start_upload(&key, 2, WriteMode::Overwrite);
    let part = data(PART, 41);
    up.put_part(part.clone()).await.unwrap();
    up.complete(Bytes::from_static(b"tail")).await.unwrap();
    let got = store.get(&key).await.unwrap().expect("the replaced object");
    assert_eq!(got.len(), PART + 4);
    assert!(
        got[..PART] == part[..] && &got[PART..] == b"tail",
        "Overwrite did not replace"
    );
    assert_eq!(keys(&store.list(p).await.unwrap()), [key.as_str()]);

    // Jobs racing to complete uploads of one fresh key with Create: one wins, the others get
    // Conflict and abort. (Each one's existence check passes before any completes, so on S3
    // this is the conditional CompleteMultipartUpload at work.)
    let raced = format!("{p}raced.dump");
    let mut uploads = Vec::new();
    for i in 0..3u64 {
        let mut up = store.start_upload(&raced, 2, WriteMode::Create);
        let id = up.put_part(data(PART, 42 + i)).await.unwrap().expect("id");
        uploads.push((i, id, up));
    }
    let results =
        futures_util::future::join_all(uploads.into_iter().map(|(i, id, up)| async move {
            (i, id, up.complete(Bytes::from(vec![i as u8; 8])).await)
        }))
        .await;
    let mut winners = Vec::new();
    let mut overtaken = 0;
    for (i, id, r) in results {
        match r {
            Ok(_) => winners.push(i),
            Err(Error::Conflict(_)) => store.abort_upload(&raced, &id).await.unwrap(),
            // Without an atomic create, another racer's object can land between a complete and
            // its check of what the store holds: the check sees other bytes, refuses the write
            // and removes what is there; or it finds nothing, removed by another racer's check.
            // Never a success with another's bytes.
            Err(Error::Storage(m))
                if !b.caps.atomic_create
                    && (m.contains("other bytes")
                        || (m.contains("cannot check the stored object")
                            && m.contains("NotFound"))) =>
            {
                overtaken += 1
            }
            Err(e) => panic!("racing complete {i}: {e:?}"),
        }
    }
    if overtaken > 0 {
        eprintln!(
            "    [{}] {overtaken} of 3 racing completes saw another's bytes and refused (not atomic)",
            b.name
        );
        return;
    }
    if b.caps.atomic_create {
        assert_eq!(
            winners.len(),
            1,
            "racing completes that succeeded: {winners:?}"
        );
    } else {
        assert!(!winners.is_empty(), "no racing complete succeeded");
        eprintln!(
            "    [{}] {} of 3 racing completes succeeded (not atomic)",
            b.name,
            winners.len()
        );
    }
    let stored = store.get(&raced).await.unwrap().expect("the raced key");
    assert!(
        winners.iter().any(
            |w| stored[PART..] == [*w as u8; 8][..] && stored[..PART] == data(PART, 42 + w)[..]
        ),
        "the stored object is no winner's"
    );
    if b.caps.lists_uploads {
        assert!(
            store.list_uploads(p).await.unwrap().is_empty(),
            "a losing upload was left behind"
        );
    }
}

/// An object smaller than one part (no put_part, one short last part), and an empty one.
async fn multipart_small(b: &Backend, p: &str) {
    let store = b.store();
    let key = format!("{p}small.dump");
    let body = data(1000, 50);
    let up = store.start_upload(&key, 2, WriteMode::Create);
    up.complete(body.clone()).await.unwrap();
    assert_eq!(store.get(&key).await.unwrap().as_deref(), Some(&body[..]));

    let empty = format!("{p}empty.dump");
    let up = store.start_upload(&empty, 2, WriteMode::Create);
    up.complete(Bytes::new()).await.unwrap();
    assert_eq!(
        store.head(&empty).await.unwrap().map(|m| m.size),
        Some(0),
        "an empty upload"
    );
    assert_eq!(
        keys(&store.list(p).await.unwrap()),
        [empty.as_str(), key.as_str()]
    );
    if b.caps.lists_uploads {
        assert!(
            store.list_uploads(p).await.unwrap().is_empty(),
            "a small upload left an upload behind"
        );
    }
}

/// Storage registers the uploads it starts and aborts them on the failure path; a completed
/// upload is not aborted.
async fn storage_aborts_pending(b: &Backend, p: &str) {
    let storage = &b.storage;
    let failed = format!("{p}failed.dump");
    let mut up = storage.upload(&failed, PART as u64, 2, WriteMode::Create);
    up.part(data(PART, 60)).await.unwrap();
    assert_eq!(up.parts(), 1);
    drop(up);
    let ids: Vec<String> = if b.caps.lists_uploads {
        storage
            .list_uploads(p)
            .await
            .unwrap()
            .into_iter()
            .map(|u| u.upload_id)
            .collect()
    } else {
        b.pending_ids()
    };
    assert_eq!(ids.len(), 1, "the failed job's upload: {ids:?}");

    let done = format!("{p}done.dump");
    let mut up = storage.upload(&done, PART as u64, 2, WriteMode::Create);
    up.part(data(PART, 61)).await.unwrap();
    assert_eq!(up.complete(Bytes::from_static(b"end")).await.unwrap(), 2);

    storage.abort_pending(None).await;
    assert!(
        !b.upload_pending(p, &failed, &ids[0]).await,
        "abort_pending left the upload"
    );
    assert_eq!(
        keys(&storage.list(p).await.unwrap()),
        [done.as_str()],
        "abort_pending touched a completed upload"
    );
    assert_eq!(
        storage.head(&done).await.unwrap().map(|m| m.size),
        Some(PART as u64 + 3)
    );
    assert!(storage.exists(&done).await.unwrap() && !storage.exists(&failed).await.unwrap());
}

/// probe_write proves a write is possible and leaves nothing behind.
async fn probe_write(b: &Backend, p: &str) {
    let store = b.store();
    store.preflight().await.unwrap();
    store
        .probe_write(&format!("{p}db/next.dump"))
        .await
        .unwrap();
    assert!(
        store.list(p).await.unwrap().is_empty(),
        "probe_write left an object"
    );
    if b.caps.lists_uploads {
        assert!(
            store.list_uploads(p).await.unwrap().is_empty(),
            "probe_write left an upload"
        );
    } else {
        assert!(b.pending_ids().is_empty(), "probe_write left an upload");
    }
}

/// requests() counts each request by kind.
async fn request_counts(b: &Backend, p: &str) {
    let store = b.store();
    let key = format!("{p}counted");
    let mut last = store.requests();
    let mut step = |what: &str, expected: RequestCounts| {
        let now = store.requests();
        assert_eq!(delta(last, now), expected, "requests counted for {what}");
        last = now;
    };
    let none = RequestCounts::default();
    store
        .put(&key, data(10, 70), WriteMode::Overwrite)
        .await
        .unwrap();
    step("a put", RequestCounts { put: 1, ..none });
    store.get(&key).await.unwrap();
    step("a get", RequestCounts { get: 1, ..none });
    store.head(&key).await.unwrap();
    step("a head", RequestCounts { head: 1, ..none });
    store.list(p).await.unwrap();
    step("a one-page list", RequestCounts { list: 1, ..none });
    assert_eq!(read_all(store, &key, Some(2..5)).await.0.len(), 3);
    step("an open", RequestCounts { get: 1, ..none });
    store.delete(&key).await.unwrap();
    step("a delete", RequestCounts { delete: 1, ..none });

    // Create, one part, the last part, complete: four multipart requests (S3 then checks the
    // stored object with a HEAD).
    let mut up = store.start_upload(&key, 2, WriteMode::Overwrite);
    up.put_part(data(PART, 71)).await.unwrap();
    up.complete(data(10, 72)).await.unwrap();
    let d = delta(last, store.requests());
    assert_eq!(
        RequestCounts { head: 0, ..d },
        RequestCounts {
            multipart: 4,
            ..none
        },
        "requests counted for a multipart upload: {d:?}"
    );
    last = store.requests();
    // Create, one part, abort.
    let mut up = store.start_upload(&format!("{p}aborted"), 2, WriteMode::Overwrite);
    let id = up.put_part(data(PART, 73)).await.unwrap().unwrap();
    drop(up);
    store
        .abort_upload(&format!("{p}aborted"), &id)
        .await
        .unwrap();
    assert_eq!(
        delta(last, store.requests()),
        RequestCounts {
            multipart: 3,
            ..none
        },
        "requests counted for an aborted upload"
    );
    assert_eq!(
        b.storage.requests(),
        store.requests(),
        "Storage reports its store's counts"
    );
}

/// A location that does not exist and cannot be made: preflight says which.
async fn missing_location(b: &Backend, _p: &str) {
    let (store, name) = &b.missing;
    match store.preflight().await {
        Err(Error::Storage(m)) => {
            eprintln!("    [{}] preflight of a missing location: {m}", b.name);
            assert!(m.contains(name.as_str()), "the error must name {name}: {m}")
        }
        other => panic!("preflight of a missing location: {other:?}"),
    }
    let put = store
        .put("k", Bytes::from_static(b"x"), WriteMode::Overwrite)
        .await;
    if b.caps.missing_bucket_refuses_writes {
        let err = put.expect_err("put to a missing location");
        assert!(
            matches!(err, Error::Storage(_)),
            "put to a missing location: {err:?}"
        );
    } else {
        put.expect("s3s-fs makes a missing bucket on put");
        assert_eq!(store.get("k").await.unwrap().as_deref(), Some(&b"x"[..]));
    }
}

/// A store that may not write: every write fails with a storage error naming the location,
/// and nothing is left behind.
async fn denied_write(b: &Backend, p: &str) {
    let (store, name, reason) = &b.denied;
    let key = format!("{p}denied.dump");
    let err = store
        .put(&key, data(100, 80), WriteMode::Overwrite)
        .await
        .unwrap_err();
    match &err {
        Error::Storage(m) => {
            eprintln!("    [{}] a denied put: {m}", b.name);
            assert!(m.contains(name.as_str()), "the error must name {name}: {m}");
            assert!(m.contains(reason), "the error must say {reason:?}: {m}");
            // A sentence, not the SDK's debug dump of the response.
            assert!(
                m.len() < 300 && !m.contains('{'),
                "not a readable message: {m}"
            );
        }
        e => panic!("put where writes are denied: {e:?}"),
    }
    let err = store
        .put(&key, data(100, 80), WriteMode::Create)
        .await
        .unwrap_err();
    assert!(
        matches!(err, Error::Storage(_)),
        "put (Create) where writes are denied: {err:?}"
    );
    let err = store.probe_write(&key).await.unwrap_err();
    assert!(
        matches!(err, Error::Storage(_)),
        "probe_write where writes are denied: {err:?}"
    );

    // A multipart upload fails by its first part or at complete; whatever id it got is
    // aborted as a job would.
    let mut up = store.start_upload(&key, 2, WriteMode::Overwrite);
    let res = up.put_part(data(PART, 81)).await;
    let id = res.as_ref().ok().cloned().flatten();
    let done = match res {
        Ok(_) => up.complete(data(10, 82)).await.map(|_| ()),
        Err(e) => Err(e),
    };
    let err = done.expect_err("a multipart upload where writes are denied");
    assert!(
        matches!(err, Error::Storage(_)),
        "multipart where writes are denied: {err:?}"
    );
    if let Some(id) = id {
        store.abort_upload(&key, &id).await.unwrap();
    }
    // Reads, where allowed, show nothing was written.
    if let Ok(found) = store.head(&key).await {
        assert_eq!(found, None, "a denied write left an object");
    }
}

// ---------------------------------------------------------------------------------------------
// The runner

type CheckFn = for<'a> fn(&'a Backend, &'a str) -> futures_util::future::BoxFuture<'a, ()>;

macro_rules! checks {
    ($($f:ident),* $(,)?) => {
        [$((stringify!($f), (|b, p| Box::pin($f(b, p))) as CheckFn)),*]
    };
}

/// Runs every check against `backend` (each under its own prefix), reports each, and fails
/// listing every check that failed.
async fn run_suite(backend: Backend) {
    let all = checks![
        put_get_head,
        put_if_absent,
        nested_keys,
        open_ranges,
        list_prefix,
        list_many_pages,
        delete,
        delete_many,
        multipart_parts,
        multipart_pending_abort,
        multipart_create_conflict,
        multipart_small,
        storage_aborts_pending,
        probe_write,
        request_counts,
        missing_location,
        denied_write,
    ];
    let suite = Instant::now();
    let mut failed = Vec::new();
    for (name, check) in all {
        let prefix = format!("{name}/");
        let t = Instant::now();
        let outcome = AssertUnwindSafe(check(&backend, &prefix))
            .catch_unwind()
            .await;
        match outcome {
            Ok(()) => eprintln!("[{}] {name}: ok ({:.1?})", backend.name, t.elapsed()),
            Err(panic) => {
                let msg = panic
                    .downcast_ref::<String>()
                    .cloned()
                    .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
                    .unwrap_or_default();
                eprintln!(
                    "[{}] {name}: FAILED ({:.1?}): {msg}",
                    backend.name,
                    t.elapsed()
                );
                failed.push(format!("{name}: {msg}"));
            }
        }
    }
    eprintln!(
        "[{}] {} of {} checks passed in {:.1?}; capabilities {:?}",
        backend.name,
        all.len() - failed.len(),
        all.len(),
        suite.elapsed(),
        backend.caps
    );
    assert!(
        failed.is_empty(),
        "[{}] failed checks:\n{}",
        backend.name,
        failed.join("\n")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn local_directory() {
    run_suite(local_backend().await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn moto() {
    run_suite(moto_backend().await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s3s_fs() {
    run_suite(s3s_backend().await).await;
}
