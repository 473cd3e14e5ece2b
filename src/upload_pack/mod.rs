//! `git-upload-pack`: serving clones and fetches.
//!
//! Protocol v0/v1 ([`v0`]) and v2 ([`v2`]) differ in how they frame the ref
//! advertisement and the negotiation; both feed the same [`negotiate::Negotiation`]
//! and the same [`crate::pack`] pipeline.

pub mod config;
pub mod fetch;
pub mod negotiate;
pub mod refs;
pub mod shallow;
pub mod v0;
pub mod v2;

use gix::ObjectId;
use tokio::io::{AsyncRead, AsyncWrite};

use crate::connection::Connection;
use crate::pack::PackStats;
use crate::request::ProtocolVersion;
use crate::{ClientError, Result};

/// Serve one upload-pack session on `conn`. Returns the stats of the pack sent, if any.
pub async fn serve<S>(
    conn: &mut Connection<S>,
    repo: &gix::ThreadSafeRepository,
    version: ProtocolVersion,
) -> Result<Option<PackStats>>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let cfg = blocking(repo, |r| Ok(config::UploadPackConfig::from_repo(r))).await?;
    match version {
        ProtocolVersion::V0 => v0::serve(conn, repo, &cfg, false).await,
        ProtocolVersion::V1 => v0::serve(conn, repo, &cfg, true).await,
        ProtocolVersion::V2 => v2::serve(conn, repo, &cfg).await,
    }
}

/// Run gix work on a blocking thread with a thread-local handle of `repo`.
pub(crate) async fn blocking<T, F>(repo: &gix::ThreadSafeRepository, f: F) -> Result<T>
where
    T: Send + 'static,
    F: FnOnce(&gix::Repository) -> Result<T> + Send + 'static,
{
    let repo = repo.clone();
    tokio::task::spawn_blocking(move || f(&repo.to_thread_local())).await?
}

/// The repository with an object database that never rescans the pack directory on
/// a miss. For ids a client sends, where a miss is the common case (haves, shallow
/// lines, object-info): gix would otherwise list the pack directory again for every
/// unknown id, which made a flood of random haves cost ~100 µs each. The packs
/// known when the repository was opened for this request are all searched.
pub(crate) fn without_refresh(repo: &gix::Repository) -> gix::Repository {
    let mut repo = repo.clone();
    repo.objects.refresh_never();
    repo
}

/// Parse the hex object id of a `want`/`have` line.
pub(crate) fn parse_oid(hex: &[u8], line: &[u8]) -> Result<ObjectId> {
    ObjectId::from_hex(hex).map_err(|_| {
        ClientError::boxed(format!(
            "git upload-pack: protocol error, expected to get object ID, not '{}'",
            crate::escape(line)
        ))
    })
}

/// The `not our ref` refusal git sends for a want it will not serve.
pub(crate) fn not_our_ref(id: &ObjectId) -> crate::Error {
    ClientError::boxed(format!("upload-pack: not our ref {id}"))
}
