//! headstart: transfer learning from one binary.
//!
//! The modules follow a batch from disk to loss: `hub` finds and reads
//! checkpoints, `models` builds architectures, `tokenize` and `data` turn
//! files into batches, `embed` pools encoder outputs; `assets` fetches the real
//! models and data that the tests and the default job use.

pub mod assets;
pub mod data;
pub mod embed;
pub mod fsutil;
pub mod hub;
pub mod inspect;
pub mod models;
pub mod quickstart;
pub mod strategy;
pub mod tasks;
pub mod tokenize;
pub mod train;

use std::path::PathBuf;

use anyhow::Result;

/// Resolves `--model M`: a packaged model's short name (after `headstart data
/// fetch`), a local Hugging Face directory, or a hub id through the HF cache.
pub fn find_model(spec: &str) -> Result<PathBuf> {
    if !std::path::Path::new(spec).exists()
        && let Some(dir) = assets::packaged_model_dir(spec)?
    {
        return Ok(dir);
    }
    Ok(hub::resolve_model(spec)?.path)
}
