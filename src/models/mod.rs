//! One file per architecture, plus where parameters come from.

pub mod bert;
pub mod params;
