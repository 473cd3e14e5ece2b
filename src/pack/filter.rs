//! Partial clone filters (`filter <spec>`, see `git rev-list --filter`).

use crate::upload_pack::config::UploadPackConfig;
use crate::{ClientError, Result};

/// A parsed filter spec.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Filter {
    /// `blob:none`
    BlobNone,
}

impl Filter {
    /// Parse a filter spec as sent by the client.
    pub fn parse(spec: &[u8]) -> Result<Filter> {
        match spec {
            b"blob:none" => Ok(Filter::BlobNone),
            other => Err(ClientError::boxed(format!(
                "invalid filter-spec '{}'",
                crate::escape(other)
            ))),
        }
    }

    /// Refuse filters the repository's `uploadpackfilter.*` settings do not allow.
    pub fn check_allowed(&self, cfg: &UploadPackConfig) -> Result<()> {
        let name = match self {
            Filter::BlobNone => "blob:none",
        };
        if !cfg.filter_allowed(name) {
            return Err(ClientError::boxed(format!("filter '{name}' not supported")));
        }
        Ok(())
    }
}
