//! Datasets: readers for labelled text files, seeded splits, the IU chest
//! x-ray reports, and small real image sets written as image folders.

pub mod captions;
pub mod captions_demo;
pub mod corpus;
pub mod image_list;
pub mod images;
pub mod iu;
pub mod preprocess;
pub mod shakespeare;
pub mod split;
pub mod table;
