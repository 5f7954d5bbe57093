//! Charts for reports: line, bar and scatter charts, each rendered to SVG and
//! PNG by the same drawing code, so both outputs show the same chart.
//!
//! Which crate does what, and why:
//! - `plotters` lays out the chart (plot area, axes, gridlines, tick labels,
//!   axis titles) and draws it. Its SVG backend writes the SVG. For the PNG
//!   it rasterises onto `Canvas`, a small backend here that only blends the
//!   pixels plotters reports into an RGB buffer; drawing it at twice the size
//!   and averaging down anti-aliases lines and text. (Plotters' own bitmap
//!   backend would do too, without the supersampling, and places text a few
//!   pixels high with `ab_glyph`; `Canvas` corrects that.)
//! - `ab_glyph` (plotters' `ab_glyph` feature) measures text for the layout
//!   of both outputs and rasterises it for the PNG, from DejaVu Sans embedded
//!   from `assets/fonts/`: no system fonts or font libraries are used. The SVG
//!   names the generic `sans-serif` family and the viewer's font draws it.
//! - `png` encodes the PNG.
//!
//! This module adds what plotters leaves to its user: tick positions and
//! compact tick labels (`1k`, `3e-5`; log axes at 1, 2 and 5 per decade,
//! drawn as a linear axis over log10 of the values), the legend beside the
//! plot, error bars, markers, labels placed next to scatter points, and
//! shortening text that would not fit.
//!
//! The SVG is standalone: its only URL is the `xmlns` namespace; it has no
//! links, no `href` and no external fonts (the generic `sans-serif` family).

mod canvas;
mod draw;
mod ticks;

#[cfg(test)]
mod tests;

use std::fmt;

use plotters::prelude::*;

use canvas::render_png;
use draw::{Draw, Px, clean_label, register_embedded_font};

/// Chart width in pixels (SVG user units and PNG pixels).
pub const WIDTH: u32 = 760;
/// Chart height in pixels (SVG user units and PNG pixels).
pub const HEIGHT: u32 = 440;

/// An sRGB colour.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Rgb(pub u8, pub u8, pub u8);

impl fmt::Display for Rgb {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "#{:02x}{:02x}{:02x}", self.0, self.1, self.2)
    }
}

impl From<Rgb> for RGBColor {
    fn from(c: Rgb) -> Self {
        RGBColor(c.0, c.1, c.2)
    }
}

/// Okabe-Ito colour-blind-safe palette, ordered so the colours that read best
/// on white come first (yellow last).
pub const PALETTE: [Rgb; 8] = [
    Rgb(0x00, 0x72, 0xB2), // blue
    Rgb(0xD5, 0x5E, 0x00), // vermillion
    Rgb(0x00, 0x9E, 0x73), // bluish green
    Rgb(0xE6, 0x9F, 0x00), // orange
    Rgb(0xCC, 0x79, 0xA7), // reddish purple
    Rgb(0x56, 0xB4, 0xE9), // sky blue
    Rgb(0x00, 0x00, 0x00), // black
    Rgb(0xF0, 0xE4, 0x42), // yellow
];

/// The colour of series (or bar, or scatter point) number `i`: the same index
/// always gets the same colour in every chart.
pub fn series_color(i: usize) -> Rgb {
    PALETTE[i % PALETTE.len()]
}

const TEXT: Rgb = Rgb(0x22, 0x22, 0x22);
const MUTED: Rgb = Rgb(0x77, 0x77, 0x77);
const GRID: Rgb = Rgb(0xE4, 0xE4, 0xE4);
const AXIS: Rgb = Rgb(0x55, 0x55, 0x55);
const ERR: Rgb = Rgb(0x33, 0x33, 0x33);

/// One data point; `y_err` is an optional interval given as absolute bounds
/// `(lo, hi)` (for example a 95% interval), drawn as an error bar.
#[derive(Clone, Debug, PartialEq)]
pub struct Point {
    pub x: f64,
    pub y: f64,
    pub y_err: Option<(f64, f64)>,
}

impl Point {
    pub fn new(x: f64, y: f64) -> Self {
        Point { x, y, y_err: None }
    }

    /// A point with an error bar from `lo` to `hi` (absolute values).
    pub fn with_err(x: f64, y: f64, lo: f64, hi: f64) -> Self {
        let y_err = Some((lo, hi));
        Point { x, y, y_err }
    }
}

/// A named series of points, drawn as one line in one colour.
#[derive(Clone, Debug, PartialEq)]
pub struct Series {
    pub name: String,
    pub points: Vec<Point>,
}

impl Series {
    pub fn new(name: impl Into<String>, points: Vec<Point>) -> Self {
        let name = name.into();
        Series { name, points }
    }
}

/// Axis scale.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum Scale {
    #[default]
    Linear,
    /// Logarithmic; points with x <= 0 are skipped.
    Log10,
}

/// Several series in one plot, with a legend to the right of the plot area.
#[derive(Clone, Debug, PartialEq)]
pub struct LineChart {
    pub title: String,
    pub x_label: String,
    pub y_label: String,
    pub x_scale: Scale,
    pub series: Vec<Series>,
    /// Draw a marker at every point (single-point runs always get one).
    pub markers: bool,
}

impl LineChart {
    pub fn new(
        title: impl Into<String>,
        x_label: impl Into<String>,
        y_label: impl Into<String>,
    ) -> Self {
        LineChart {
            title: title.into(),
            x_label: x_label.into(),
            y_label: y_label.into(),
            x_scale: Scale::Linear,
            series: Vec::new(),
            markers: true,
        }
    }

    pub fn to_svg(&self) -> String {
        render_svg(self)
    }

    pub fn to_png(&self) -> Vec<u8> {
        render_png(self)
    }
}

/// One bar of a bar chart; `err` is an optional absolute interval `(lo, hi)`.
#[derive(Clone, Debug, PartialEq)]
pub struct Bar {
    pub label: String,
    pub value: f64,
    pub err: Option<(f64, f64)>,
}

impl Bar {
    pub fn new(label: impl Into<String>, value: f64) -> Self {
        let label = label.into();
        Bar {
            label,
            value,
            err: None,
        }
    }

    pub fn with_err(label: impl Into<String>, value: f64, lo: f64, hi: f64) -> Self {
        let err = Some((lo, hi));
        Bar {
            label: label.into(),
            value,
            err,
        }
    }
}

/// One bar per category, coloured by index, from a zero baseline.
#[derive(Clone, Debug, PartialEq)]
pub struct BarChart {
    pub title: String,
    pub y_label: String,
    pub bars: Vec<Bar>,
}

impl BarChart {
    pub fn new(title: impl Into<String>, y_label: impl Into<String>) -> Self {
        let (title, y_label) = (title.into(), y_label.into());
        BarChart {
            title,
            y_label,
            bars: Vec::new(),
        }
    }

    pub fn to_svg(&self) -> String {
        render_svg(self)
    }

    pub fn to_png(&self) -> Vec<u8> {
        render_png(self)
    }
}

/// Labelled points (one per category, coloured by index) with optional error
/// bars, e.g. metric against CO2 grams.
#[derive(Clone, Debug, PartialEq)]
pub struct ScatterChart {
    pub title: String,
    pub x_label: String,
    pub y_label: String,
    pub points: Vec<(String, Point)>,
}

impl ScatterChart {
    pub fn new(
        title: impl Into<String>,
        x_label: impl Into<String>,
        y_label: impl Into<String>,
    ) -> Self {
        ScatterChart {
            title: title.into(),
            x_label: x_label.into(),
            y_label: y_label.into(),
            points: Vec::new(),
        }
    }

    pub fn to_svg(&self) -> String {
        render_svg(self)
    }

    pub fn to_png(&self) -> Vec<u8> {
        render_png(self)
    }
}

/// XML-escapes text for the `<title>` element.
fn xml_escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

/// Drawing into memory fails only when text cannot be measured, which the
/// embedded font rules out; a failure would leave the chart partly drawn
/// rather than fail the report.
fn render_svg(chart: &impl Draw) -> String {
    register_embedded_font();
    let mut s = String::new();
    {
        let root = SVGBackend::with_string(&mut s, (WIDTH, HEIGHT)).into_drawing_area();
        let _ = root.fill(&WHITE);
        let _ = chart.draw(&root, Px(1.0));
        let _ = root.present();
    }
    // Add a <title>, and break up `://` in user text (it still renders as
    // `://`) so that the namespace stays the only URL in the file.
    let head = s.find('>').map_or(0, |i| i + 1);
    let title = match clean_label(chart.title()) {
        t if t.is_empty() => t,
        t => format!("\n<title>{}</title>", xml_escape(&t)),
    };
    let body = s[head..].replace("://", ":&#47;/");
    format!("{}{title}{body}", &s[..head])
}
