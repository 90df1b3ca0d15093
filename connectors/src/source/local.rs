//! Local files and directories, listed by weightlake so that every entry that
//! is not a readable regular file fails alone, named.

use std::sync::Arc;

use object_store::path::Path as StorePath;
use object_store::{ObjectStore, ObjectStoreExt};
use url::Url;

use super::store::{list_store, listing_root, store_file};
use super::{LocalSource, RemoteFile, ResolveContext, ResolvedSource, default_revision};
use crate::paths::{PathFilter, is_export_record, is_git_path, safe_relative_path};
use crate::{ConnectorError, Result};

pub(super) async fn resolve_local(l: &LocalSource, ctx: &ResolveContext) -> Result<ResolvedSource> {
    let path = std::path::Path::new(&l.path);
    let meta = tokio::fs::metadata(path).await.map_err(|source| {
        if source.kind() == std::io::ErrorKind::NotFound {
            ConnectorError::invalid("source", &l.path, "no such file or directory")
        } else {
            ConnectorError::Io {
                path: l.path.clone(),
                source,
            }
        }
    })?;
    let abs = std::path::absolute(path).map_err(|source| ConnectorError::Io {
        path: l.path.clone(),
        source,
    })?;
    let (dir, only) = if meta.is_dir() {
        (abs.clone(), None)
    } else {
        let parent = abs
            .parent()
            .map(|p| p.to_path_buf())
            .unwrap_or_else(|| abs.clone());
        let name = abs.file_name().map(|n| n.to_string_lossy().to_string());
        (parent, name)
    };
    let url = Url::from_directory_path(&dir)
        .map_err(|_| ConnectorError::invalid("source", &l.path, "not a valid path"))?;
    let (store, prefix) = ctx.storage.object_store(&url)?;
    let filter = match &only {
        Some(name) => PathFilter::new(&[globset::escape(name)], &[])?,
        None => PathFilter::new(&l.include, &l.exclude)?,
    };
    let (mut files, unreadable) = match &only {
        Some(_) => list_store(store, &prefix, &url, &filter).await?,
        None => list_local_dir(store, &prefix, &dir, &url, &filter).await?,
    };
    if only.is_some() {
        files.retain(|f| !f.file_path.contains('/'));
    }
    refuse_links_out(&dir, &files, &l.path)?;
    let name = dir
        .file_name()
        .map(|n| n.to_string_lossy().to_string())
        .unwrap_or_else(|| "model".into());
    Ok(ResolvedSource {
        default_model_id: name,
        default_revision: default_revision(),
        files,
        root: only.is_none().then(|| listing_root(&url)),
        unreadable,
    })
}

/// List a local directory with its filter applied first, so that an entry
/// the filter drops never matters, and every other entry that is not a
/// readable regular file is named with why instead of failing the listing
/// (object_store's listing ends at the first name it cannot hold) or being
/// dropped without a word (it skips broken links and FIFOs).
async fn list_local_dir(
    store: Arc<dyn ObjectStore>,
    prefix: &StorePath,
    dir: &std::path::Path,
    url: &Url,
    filter: &PathFilter,
) -> Result<(Vec<RemoteFile>, Vec<(String, String)>)> {
    let base = url.as_str().trim_end_matches('/').to_string();
    let root = dir.to_path_buf();
    let filter_c = filter.clone();
    let walked = tokio::task::spawn_blocking(move || walk_local(&root, &filter_c))
        .await
        .map_err(|e| ConnectorError::Io {
            path: dir.display().to_string(),
            source: std::io::Error::other(e),
        })?;
    let (found, mut unreadable) = walked;
    let mut files = Vec::with_capacity(found.len());
    for (rel, abs) in found {
        let file_path = match safe_relative_path(&rel, &base) {
            Ok(p) => p,
            Err(e) => {
                unreadable.push((rel, e.to_string()));
                continue;
            }
        };
        // The key as object_store's own listing makes it: relative to the
        // store's root (the directory), under the listing's prefix.
        let key = Url::from_file_path(&abs)
            .ok()
            .and_then(|u| {
                let rel = u.path().strip_prefix(url.path())?.to_string();
                StorePath::from_url_path(rel).ok()
            })
            .and_then(|k| match prefix.as_ref() {
                "" => Some(k),
                p => StorePath::parse(format!("{p}/{k}")).ok(),
            });
        let key = match key {
            Some(k) => k,
            None => {
                unreadable.push((
                    rel,
                    "its name holds a character an object path cannot (a control character \
                     such as a tab or newline); rename it, or exclude it"
                        .into(),
                ));
                continue;
            }
        };
        match store.head(&key).await {
            Ok(meta) => {
                let source_uri = format!("{base}/{file_path}");
                files.push(store_file(store.clone(), &meta, source_uri, file_path));
            }
            Err(e) => unreadable.push((rel, e.to_string())),
        }
    }
    files.sort_by(|a, b| a.file_path.cmp(&b.file_path));
    unreadable.sort();
    Ok((files, unreadable))
}

/// The regular files under `root` that `filter` keeps (relative path with
/// `/`, absolute path), links followed, and the entries that cannot be read.
#[allow(clippy::type_complexity)]
fn walk_local(
    root: &std::path::Path,
    filter: &PathFilter,
) -> (Vec<(String, std::path::PathBuf)>, Vec<(String, String)>) {
    let rel_of = |p: &std::path::Path| {
        p.strip_prefix(root)
            .unwrap_or(p)
            .to_string_lossy()
            .replace(std::path::MAIN_SEPARATOR, "/")
    };
    let mut files = Vec::new();
    let mut unreadable = Vec::new();
    let mut walk = walkdir::WalkDir::new(root)
        .follow_links(true)
        .sort_by_file_name()
        .into_iter();
    while let Some(entry) = walk.next() {
        let entry = match entry {
            Ok(e) => e,
            Err(e) => {
                let Some(path) = e.path().map(std::path::Path::to_path_buf) else {
                    unreadable.push((String::new(), e.to_string()));
                    continue;
                };
                let rel = rel_of(&path);
                let link = std::fs::symlink_metadata(&path).is_ok_and(|m| m.is_symlink());
                let broken = link && std::fs::metadata(&path).is_err();
                if broken {
                    if filter.matches(&rel) && !is_git_path(&rel) {
                        let target = std::fs::read_link(&path)
                            .map(|t| t.display().to_string())
                            .unwrap_or_default();
                        unreadable.push((
                            rel,
                            format!("a symbolic link to {target}, which does not exist"),
                        ));
                    }
                } else if !filter.excludes_dir(&rel) && !is_git_path(&rel) {
                    let why = match e.loop_ancestor() {
                        Some(a) => format!("a link back to {} (a loop); exclude it", a.display()),
                        None => e
                            .io_error()
                            .map_or_else(|| e.to_string(), |io| format!("cannot be read: {io}")),
                    };
                    unreadable.push((rel, why));
                }
                continue;
            }
        };
        let rel = rel_of(entry.path());
        if rel.is_empty() {
            continue;
        }
        if entry.file_type().is_dir() {
            if is_git_path(&rel) || filter.excludes_dir(&rel) {
                walk.skip_current_dir();
            }
            continue;
        }
        if !filter.matches(&rel) || is_git_path(&rel) {
            continue;
        }
        if is_export_record(&rel) {
            tracing::debug!(path = rel, "skipping a completion marker");
            continue;
        }
        if !entry.file_type().is_file() {
            unreadable.push((
                rel,
                "not a regular file (a FIFO, socket or device); exclude it".into(),
            ));
            continue;
        }
        if entry.path().to_str().is_none() {
            unreadable.push((
                rel,
                "its name is not UTF-8; rename it, or exclude it".into(),
            ));
            continue;
        }
        files.push((rel, entry.path().to_path_buf()));
    }
    (files, unreadable)
}

/// Refuse a local source any of whose files is a symbolic link (or lies under
/// one) that leads out of `dir`: a model directory from an untrusted archive
/// or clone could otherwise pull `/etc/shadow` into the lake, and `serve`
/// would hand it out. Links inside the directory are fine, and so are links
/// of a Hugging Face cache snapshot (`…/snapshots/<commit>/`) into its
/// repository's cache folder (`…/blobs/`).
fn refuse_links_out(dir: &std::path::Path, files: &[RemoteFile], source: &str) -> Result<()> {
    let canonical = |p: &std::path::Path| std::fs::canonicalize(p).ok();
    let mut roots: Vec<std::path::PathBuf> = canonical(dir).into_iter().collect();
    if dir
        .parent()
        .and_then(|p| p.file_name())
        .is_some_and(|n| n == "snapshots")
        && let Some(repo) = dir.parent().and_then(|p| p.parent()).and_then(canonical)
    {
        roots.push(repo);
    }
    let mut outside = Vec::new();
    for f in files {
        let target = match canonical(&dir.join(&f.file_path)) {
            Some(t) => t,
            None => continue, // vanished since the listing: its read will say so
        };
        if !roots.iter().any(|r| target.starts_with(r)) {
            outside.push(format!("{} -> {}", f.file_path, target.display()));
        }
    }
    if outside.is_empty() {
        return Ok(());
    }
    let n = outside.len();
    outside.truncate(5);
    Err(ConnectorError::invalid(
        "source",
        source,
        format!(
            "{n} file(s) are symbolic links to outside the directory ({}{}); \
             copy them in, or ingest their directory as its own source",
            outside.join(", "),
            if n > 5 { ", …" } else { "" }
        ),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::http::HttpClient;
    use crate::source::SourceSpec;
    use crate::storage::StorageConfig;

    /// A resolve context for local sources (no hub, default storage).
    fn local_ctx() -> ResolveContext {
        ResolveContext {
            http: HttpClient::new(Default::default()).expect("client"),
            storage: StorageConfig::default(),
            hf_token: None,
        }
    }

    /// Every file of `dir`, unfiltered.
    fn whole_dir(dir: &std::path::Path) -> SourceSpec {
        SourceSpec::Local(LocalSource {
            path: dir.display().to_string(),
            include: vec![],
            exclude: vec![],
        })
    }

    #[tokio::test]
    async fn a_file_rewritten_after_listing_is_refused_not_read_as_a_mix() {
        let dir = tempfile::tempdir().expect("tempdir");
        let file = dir.path().join("w.bin");
        std::fs::write(&file, vec![1u8; 4096]).expect("write");
        let ctx = local_ctx();
        let r = whole_dir(dir.path()).resolve(&ctx).await.expect("resolve");
        let listed = &r.files[0];
        let mut buf = crate::http::ChunkBuffer::new(&(0..2048));
        listed
            .read_range(&ctx.http, 0..2048, &mut buf)
            .await
            .expect("first half");
        listed.check_unchanged(&ctx.http).await.expect("unchanged");
        // Rewritten in place, same size: only its modification time differs.
        std::fs::write(&file, vec![2u8; 4096]).expect("rewrite");
        let later = std::time::SystemTime::now() + std::time::Duration::from_secs(5);
        std::fs::File::options()
            .write(true)
            .open(&file)
            .and_then(|f| f.set_modified(later))
            .expect("mtime");
        let mut buf = crate::http::ChunkBuffer::new(&(2048..4096));
        let second = listed.read_range(&ctx.http, 2048..4096, &mut buf).await;
        assert!(
            matches!(second, Err(ConnectorError::Changed { .. })),
            "{second:?}"
        );
        let check = listed.check_unchanged(&ctx.http).await;
        assert!(
            matches!(check, Err(ConnectorError::Changed { .. })),
            "{check:?}"
        );
    }

    #[tokio::test]
    async fn local_dirs_refuse_links_out_and_skip_git_metadata() {
        let ctx = local_ctx();
        let resolve = |path: &std::path::Path| {
            SourceSpec::Local(LocalSource {
                path: path.display().to_string(),
                include: vec![],
                exclude: vec![],
            })
        };
        let outside = tempfile::tempdir().expect("tempdir");
        std::fs::write(outside.path().join("secret"), b"s").expect("write");
        let dir = tempfile::tempdir().expect("tempdir");
        let model = dir.path().join("model");
        std::fs::create_dir_all(model.join(".git/hooks")).expect("mkdir");
        std::fs::write(model.join("config.json"), b"{}").expect("write");
        std::fs::write(model.join(".gitattributes"), b"*").expect("write");
        std::fs::write(model.join(".git/config"), b"[core]").expect("write");
        // A link inside the directory is fine.
        std::os::unix::fs::symlink(model.join("config.json"), model.join("alias.json"))
            .expect("link");
        let r = resolve(&model).resolve(&ctx).await.expect("resolve");
        let mut paths: Vec<_> = r.files.iter().map(|f| f.file_path.as_str()).collect();
        paths.sort_unstable();
        assert_eq!(paths, [".gitattributes", "alias.json", "config.json"]);
        // A link to a file or a directory outside is refused, by name.
        std::os::unix::fs::symlink(outside.path().join("secret"), model.join("tokenizer.json"))
            .expect("link");
        std::os::unix::fs::symlink(outside.path(), model.join("extra")).expect("link");
        let e = resolve(&model).resolve(&ctx).await.expect_err("links out");
        let text = e.to_string();
        assert!(
            text.contains("2 file(s) are symbolic links to outside")
                && text.contains("tokenizer.json ->")
                && text.contains("extra/secret ->"),
            "{text}"
        );
        // A Hugging Face cache snapshot links into its repository's blobs.
        let repo = dir.path().join("models--org--m");
        let snap = repo.join("snapshots/abc");
        std::fs::create_dir_all(&snap).expect("mkdir");
        std::fs::create_dir_all(repo.join("blobs")).expect("mkdir");
        std::fs::write(repo.join("blobs/123"), b"w").expect("write");
        std::os::unix::fs::symlink("../../blobs/123", snap.join("model.safetensors"))
            .expect("link");
        let r = resolve(&snap).resolve(&ctx).await.expect("snapshot");
        assert_eq!(r.files.len(), 1);
    }

    #[tokio::test]
    async fn a_file_with_an_odd_name_is_skipped_not_the_whole_directory() {
        let dir = tempfile::tempdir().expect("tempdir");
        for name in ["config.json", "a\\b.txt", "g:h.txt"] {
            std::fs::write(dir.path().join(name), b"x").expect("write");
        }
        let ctx = local_ctx();
        let r = whole_dir(dir.path()).resolve(&ctx).await.expect("resolve");
        let paths: Vec<_> = r.files.iter().map(|f| f.file_path.as_str()).collect();
        assert_eq!(paths, ["config.json"]);
        let named: Vec<_> = r.unreadable.iter().map(|(p, _)| p.as_str()).collect();
        assert_eq!(named, ["a\\b.txt", "g:h.txt"]);
    }

    #[tokio::test]
    async fn local_dir_lists_files_with_filters() {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::create_dir(dir.path().join("sub")).expect("mkdir");
        std::fs::write(dir.path().join("a.safetensors"), b"xx").expect("write");
        std::fs::write(dir.path().join("sub/b.json"), b"{}").expect("write");
        std::fs::write(dir.path().join("c.bin"), b"zz").expect("write");
        let ctx = local_ctx();
        let spec = SourceSpec::Local(LocalSource {
            path: dir.path().display().to_string(),
            include: vec!["*.safetensors".into(), "*.json".into()],
            exclude: vec![],
        });
        let r = spec.resolve(&ctx).await.expect("resolve");
        let paths: Vec<_> = r.files.iter().map(|f| f.file_path.as_str()).collect();
        assert_eq!(paths, ["a.safetensors", "sub/b.json"]);
        let one = SourceSpec::Local(LocalSource {
            path: dir.path().join("c.bin").display().to_string(),
            include: vec![],
            exclude: vec![],
        });
        let r = one.resolve(&ctx).await.expect("resolve file");
        assert_eq!(r.files.len(), 1);
        assert_eq!(r.files[0].size, Some(2));
        let mut buf = crate::http::ChunkBuffer::new(&(0..2));
        r.files[0]
            .read_range(&ctx.http, 0..2, &mut buf)
            .await
            .expect("read");
        assert_eq!(buf.into_inner(), b"zz");
        // The same file as a file:// URL.
        let url = format!("file://{}", dir.path().join("c.bin").display());
        let r = url
            .parse::<SourceSpec>()
            .expect("spec")
            .resolve(&ctx)
            .await
            .expect("resolve file url");
        assert_eq!(r.files.len(), 1);
    }
}
