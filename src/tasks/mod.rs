//! Tasks: heads, losses, label handling and metrics.

pub mod classification;
