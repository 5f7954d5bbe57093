//! Datasets: readers for labelled text files, seeded splits, and the IU
//! chest x-ray reports.

pub mod iu;
pub mod split;
pub mod table;
