//! Datasets: readers for labelled text files, seeded splits, and the IU
//! chest x-ray reports.

pub mod image_list;
pub mod iu;
pub mod preprocess;
pub mod split;
pub mod table;
