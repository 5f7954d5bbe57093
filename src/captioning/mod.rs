//! Image captioning: the COCO caption metrics and the tokenisation they
//! score on.

pub mod metrics;
pub mod ptb;
