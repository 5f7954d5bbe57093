//! Charts for reports, drawn without dependencies as SVG and PNG.

pub mod plot;
