//! Datasets: readers for labelled text files, and the IU chest x-ray reports.

pub mod iu;
pub mod table;
