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

use std::fmt;
use std::iter::once;
use std::ops::Range;
use std::sync::Once;

use plotters::coord::Shift;
use plotters::coord::ranged1d::{KeyPointHint, NoDefaultFormatting, ValueFormatter};
use plotters::prelude::*;
use plotters::style::register_font;
use plotters::style::text_anchor::{HPos, Pos, VPos};
use plotters_backend::{BackendColor, BackendCoord, BackendTextStyle, DrawingErrorKind};

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

// ---------------------------------------------------------------------------
// Ticks and number formatting
// ---------------------------------------------------------------------------

/// Widens an empty or degenerate range so that it can be drawn.
fn pad_range(lo: f64, hi: f64) -> (f64, f64) {
    if !lo.is_finite() || !hi.is_finite() {
        return (0.0, 1.0);
    }
    let (lo, hi) = (lo.min(hi), lo.max(hi));
    let mag = lo.abs().max(hi.abs());
    if hi - lo > mag * 1e-9 {
        (lo, hi)
    } else if mag == 0.0 {
        (0.0, 1.0)
    } else {
        (lo - mag * 0.1, hi + mag * 0.1)
    }
}

/// Number of decimals that shows every multiple of `step` exactly.
fn decimals_for(step: f64) -> usize {
    if !(step > 0.0 && step.is_finite()) {
        return 0;
    }
    (-step.log10() - 1e-9).ceil().clamp(0.0, 12.0) as usize
}

/// Linear ticks at multiples of 1, 2 or 5 x 10^k covering `[lo, hi]` in about
/// `target` steps; returns the step and the ticks (the first and last ticks
/// are the axis ends).
fn nice_ticks(lo: f64, hi: f64, target: usize) -> (f64, Vec<f64>) {
    let (lo, hi) = pad_range(lo, hi);
    let rough = (hi - lo) / target.max(1) as f64;
    let mag = 10f64.powf(rough.log10().floor());
    let m = [(1.5, 1.0), (3.0, 2.0), (7.0, 5.0)]
        .iter()
        .find(|(limit, _)| rough / mag < *limit)
        .map_or(10.0, |&(_, m)| m);
    let step = m * mag;
    let (i0, i1) = ((lo / step + 1e-9).floor(), (hi / step - 1e-9).ceil());
    if !(step > 0.0 && (i1 - i0).is_finite() && i1 - i0 <= 200.0) {
        return (hi - lo, vec![lo, hi]);
    }
    let p = 10f64.powi(decimals_for(step) as i32);
    // Rounded to the step's precision, so 0.1 * 3 shows as 0.3.
    let round = |v: f64| {
        let r = (v * p).round() / p;
        if v.abs() < step * 1e-6 {
            0.0
        } else if r.is_finite() {
            r
        } else {
            v
        }
    };
    let n = (i1 - i0).max(1.0) as i64;
    (
        step,
        (0..=n).map(|k| round((i0 + k as f64) * step)).collect(),
    )
}

/// Largest 1/2/5 x 10^k not above `v` (`up == false`) or smallest not below.
fn snap125(v: f64, up: bool) -> f64 {
    let base = 10f64.powf(v.log10().floor());
    let m = v / base;
    let s = if up {
        [1.0, 2.0, 5.0, 10.0]
            .into_iter()
            .find(|&s| s >= m * (1.0 - 1e-9))
    } else {
        [10.0, 5.0, 2.0, 1.0]
            .into_iter()
            .find(|&s| s <= m * (1.0 + 1e-9))
    };
    s.unwrap_or(if up { 10.0 } else { 1.0 }) * base
}

/// Log10 ticks: the axis range snapped to 1/2/5 x 10^k, ticks at decades plus
/// 2 and 5 (decades only beyond four decades, every n-th decade beyond ten).
/// Returns the axis ends and the ticks.
fn log_ticks(lo: f64, hi: f64) -> (f64, f64, Vec<f64>) {
    let (mut lo, mut hi) = (lo.min(hi), lo.max(hi));
    if !(lo > 0.0 && hi.is_finite()) {
        return (1.0, 10.0, vec![1.0, 10.0]);
    }
    if hi <= lo * (1.0 + 1e-9) {
        (lo, hi) = (lo / 2.0, hi * 2.0);
    }
    let (lo, hi) = (snap125(lo, false), snap125(hi, true));
    let span = hi.log10() - lo.log10();
    let mults: &[f64] = if span > 4.0 { &[1.0] } else { &[1.0, 2.0, 5.0] };
    let every = if span > 10.0 {
        (span / 8.0).ceil() as i32
    } else {
        1
    };
    let (e0, e1) = (lo.log10().floor() as i32, hi.log10().ceil() as i32);
    let ticks = (e0..=e1)
        .filter(|e| (e - e0) % every == 0)
        .flat_map(|e| mults.iter().map(move |m| m * 10f64.powi(e)))
        .filter(|&t| t >= lo * (1.0 - 1e-9) && t <= hi * (1.0 + 1e-9))
        .collect();
    (lo, hi, ticks)
}

fn trim_zeros(s: String) -> String {
    if s.contains('.') {
        s.trim_end_matches('0').trim_end_matches('.').to_string()
    } else {
        s
    }
}

/// Scientific notation with at most three significant digits: `3e-5`.
fn fmt_sci(v: f64) -> String {
    let mut e = v.abs().log10().floor();
    let mut m = ((v / 10f64.powf(e)) * 100.0).round() / 100.0;
    if m.abs() >= 10.0 {
        (m, e) = (m / 10.0, e + 1.0);
    }
    format!("{}e{}", trim_zeros(format!("{m:.2}")), e as i64)
}

/// Decimals that give `v` three significant digits.
fn sig_decimals(v: f64) -> usize {
    (2 - v.abs().log10().floor() as i32).clamp(0, 12) as usize
}

/// `1.2k`, `3M`: decimals from `step` if given, else three significant digits.
fn fmt_suffix(v: f64, step: Option<f64>) -> String {
    let (div, suffix) = [(1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "k")]
        .into_iter()
        .find(|(d, _)| v.abs() >= *d)
        .unwrap_or((1e3, "k"));
    let d = step.map_or(sig_decimals(v / div), |s| decimals_for(s / div));
    format!("{}{suffix}", trim_zeros(format!("{:.*}", d, v / div)))
}

/// A tick label for `v` on an axis with tick spacing `step` whose largest
/// tick magnitude is `max_abs`. The style follows the axis, so neighbouring
/// labels match: `1000` next to `800`, but `10k` next to `5k`; `3e-5` only
/// when the whole axis is that small.
fn fmt_tick(v: f64, step: f64, max_abs: f64) -> String {
    let a = v.abs();
    if a == 0.0 || a < step.abs() * 1e-6 {
        "0".to_string()
    } else if a >= 1e15 || max_abs < 1e-3 || decimals_for(step) > 6 {
        fmt_sci(v)
    } else if a >= 1e3 && max_abs >= 1e4 {
        fmt_suffix(v, Some(step))
    } else {
        format!("{:.*}", decimals_for(step), v)
    }
}

/// A compact label for an arbitrary value: three significant digits.
fn fmt_num(v: f64) -> String {
    let a = v.abs();
    if !v.is_finite() {
        "n/a".to_string()
    } else if a == 0.0 {
        "0".to_string()
    } else if !(1e-3..1e15).contains(&a) {
        fmt_sci(v)
    } else if a >= 1e3 {
        fmt_suffix(v, None)
    } else {
        trim_zeros(format!("{:.*}", sig_decimals(v), v))
    }
}

/// An axis: its ends and ticks, in drawing units (log10 of the value on a
/// log axis, so plotters draws it as a linear axis).
#[derive(Clone)]
struct Axis {
    lo: f64,
    hi: f64,
    log: bool,
    ticks: Vec<(f64, String)>,
}

impl Axis {
    fn linear(range: Option<(f64, f64)>, target: usize) -> Axis {
        let (lo, hi) = range.unwrap_or((0.0, 1.0));
        let (step, values) = nice_ticks(lo, hi, target);
        let (lo, hi) = (values[0], values[values.len() - 1]);
        let max_abs = lo.abs().max(hi.abs());
        let ticks = values
            .iter()
            .map(|&v| (v, fmt_tick(v, step, max_abs)))
            .collect();
        Axis {
            lo,
            hi,
            log: false,
            ticks,
        }
    }

    fn log10(range: Option<(f64, f64)>) -> Axis {
        let (lo, hi) = range.unwrap_or((1.0, 10.0));
        let (lo, hi, values) = log_ticks(lo, hi);
        let ticks = values.iter().map(|&v| (v.log10(), fmt_num(v))).collect();
        Axis {
            lo: lo.log10(),
            hi: hi.log10(),
            log: true,
            ticks,
        }
    }

    /// A value in drawing units.
    fn at(&self, v: f64) -> f64 {
        if self.log { v.log10() } else { v }
    }

    /// The label of the tick nearest `v` (plotters asks at the ticks).
    fn label(&self, v: f64) -> String {
        let d = |t: &&(f64, String)| (t.0 - v).abs();
        let nearest = self.ticks.iter().min_by(|a, b| d(a).total_cmp(&d(b)));
        nearest.map(|t| t.1.clone()).unwrap_or_default()
    }
}

/// The axis as a plotters coordinate: linear from `lo` to `hi`, gridlines
/// and labels at our ticks.
impl Ranged for Axis {
    type FormatOption = NoDefaultFormatting;
    type ValueType = f64;

    fn map(&self, v: &f64, (p0, p1): (i32, i32)) -> i32 {
        let f = (v - self.lo) / (self.hi - self.lo);
        let f = if f.is_finite() {
            f.clamp(-10.0, 10.0)
        } else {
            0.0
        };
        p0 + (f * f64::from(p1 - p0)).round() as i32
    }

    fn key_points<H: KeyPointHint>(&self, hint: H) -> Vec<f64> {
        if hint.weight().allow_light_points() {
            Vec::new()
        } else {
            self.ticks.iter().map(|t| t.0).collect()
        }
    }

    fn range(&self) -> Range<f64> {
        self.lo..self.hi
    }
}

impl ValueFormatter<f64> for Axis {
    fn format(v: &f64) -> String {
        fmt_num(*v)
    }

    fn format_ext(&self, v: &f64) -> String {
        self.label(*v)
    }
}

/// Smallest and largest finite value.
fn finite_range(vals: impl IntoIterator<Item = f64>) -> Option<(f64, f64)> {
    let finite = vals.into_iter().filter(|v| v.is_finite());
    finite.fold(None, |r, v| match r {
        None => Some((v, v)),
        Some((a, b)) => Some((a.min(v), b.max(v))),
    })
}

/// Widens a range by `f` of its span on both sides (for scatter plots).
fn widen(r: Option<(f64, f64)>, f: f64) -> Option<(f64, f64)> {
    r.map(|(lo, hi)| (lo - (hi - lo) * f, hi + (hi - lo) * f))
}

/// Finite, ordered error interval.
fn err_bounds(err: Option<(f64, f64)>) -> Option<(f64, f64)> {
    let (a, b) = err?;
    (a.is_finite() && b.is_finite()).then(|| (a.min(b), a.max(b)))
}

/// The y values a point needs on the axis: itself and its error bar.
fn y_extent(y: f64, err: Option<(f64, f64)>) -> [f64; 3] {
    let (lo, hi) = err_bounds(err).unwrap_or((y, y));
    [y, lo, hi]
}

// ---------------------------------------------------------------------------
// Drawing
// ---------------------------------------------------------------------------

/// DejaVu Sans (see `assets/fonts/LICENSE-DejaVu.txt`).
const FONT: &[u8] = include_bytes!("../../assets/fonts/DejaVuSans.ttf");
const FAMILY: &str = "sans-serif";

/// Text sizes in plotters' units (the SVG font size is 1/1.24 of these).
const TITLE_SIZE: f64 = 20.0;
const LABEL_SIZE: f64 = 16.0;
const TICK_SIZE: f64 = 15.0;
const SMALL_SIZE: f64 = 13.0;

const MARGIN: f64 = 10.0;
const LINE_W: f64 = 2.0;
const MARKER_R: f64 = 3.0;
const SWATCH: f64 = 22.0;
const LEGEND_GAP: f64 = 16.0;
const LEGEND_TEXT_MAX: f64 = 170.0;
const VERTICAL_LABEL_MAX: f64 = 110.0;
/// The PNG is drawn this many times larger, then averaged down.
const SUPERSAMPLE: u32 = 2;

type Area<DB> = DrawingArea<DB, Shift>;
type Fallible<T, DB> = Result<T, DrawingAreaErrorKind<<DB as DrawingBackend>::ErrorType>>;
type Chart<'a, DB> = ChartContext<'a, DB, Cartesian2d<Axis, Axis>>;

/// Device pixels per chart pixel: 1 for SVG, `SUPERSAMPLE` for PNG.
#[derive(Clone, Copy)]
struct Px(f64);

impl Px {
    fn i(self, v: f64) -> i32 {
        (v * self.0).round() as i32
    }

    fn u(self, v: f64) -> u32 {
        (v * self.0).round().max(1.0) as u32
    }

    fn text(self, size: f64, color: Rgb) -> TextStyle<'static> {
        (FAMILY, size * self.0)
            .into_font()
            .color(&RGBColor::from(color))
    }

    fn stroke(self, color: Rgb, width: f64) -> ShapeStyle {
        RGBColor::from(color).stroke_width(self.u(width))
    }
}

/// A chart that can draw itself on any plotters backend.
trait Draw {
    fn title(&self) -> &str;
    fn draw<DB: DrawingBackend>(&self, root: &Area<DB>, k: Px) -> Fallible<(), DB>;
}

fn register_embedded_font() {
    static FONT_ONCE: Once = Once::new();
    FONT_ONCE.call_once(|| {
        let ok = register_font(FAMILY, FontStyle::Normal, FONT).is_ok();
        assert!(ok, "the embedded font parses");
    });
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

fn render_png(chart: &impl Draw) -> Vec<u8> {
    register_embedded_font();
    let (f, w, h) = (SUPERSAMPLE as usize, WIDTH as usize, HEIGHT as usize);
    let mut canvas = Canvas {
        size: (WIDTH * SUPERSAMPLE, HEIGHT * SUPERSAMPLE),
        rgb: vec![255; w * f * h * f * 3],
    };
    {
        let root = (&mut canvas).into_drawing_area();
        let _ = chart.draw(&root, Px(SUPERSAMPLE as f64));
    }
    let big = canvas.rgb;
    let mut rgb = Vec::with_capacity(w * h * 3);
    for y in 0..h {
        for x in 0..w {
            for c in 0..3 {
                let at = |dy: usize, dx: usize| big[((y * f + dy) * w * f + x * f + dx) * 3 + c];
                let sum: usize = (0..f * f).map(|i| at(i / f, i % f) as usize).sum();
                rgb.push(((sum + f * f / 2) / (f * f)) as u8);
            }
        }
    }
    let mut out = Vec::new();
    let mut enc = png::Encoder::new(&mut out, WIDTH, HEIGHT);
    enc.set_color(png::ColorType::Rgb);
    enc.set_depth(png::BitDepth::Eight);
    enc.set_compression(png::Compression::High);
    let written = enc
        .write_header()
        .and_then(|mut wr| wr.write_image_data(&rgb).and_then(|_| wr.finish()));
    written.expect("encoding an image of the declared size into memory");
    out
}

/// An RGB image for plotters to draw on: plotters rasterises shapes, and
/// ab_glyph rasterises text, into covered pixels; this blends them in.
struct Canvas {
    size: (u32, u32),
    rgb: Vec<u8>,
}

impl DrawingBackend for &mut Canvas {
    type ErrorType = std::convert::Infallible;

    fn get_size(&self) -> (u32, u32) {
        self.size
    }

    fn ensure_prepared(&mut self) -> Result<(), DrawingErrorKind<Self::ErrorType>> {
        Ok(())
    }

    fn present(&mut self) -> Result<(), DrawingErrorKind<Self::ErrorType>> {
        Ok(())
    }

    fn draw_pixel(
        &mut self,
        (x, y): BackendCoord,
        c: BackendColor,
    ) -> Result<(), DrawingErrorKind<Self::ErrorType>> {
        let (w, h) = self.size;
        if x >= 0 && y >= 0 && (x as u32) < w && (y as u32) < h {
            let i = (y as usize * w as usize + x as usize) * 3;
            let a = c.alpha.clamp(0.0, 1.0);
            for (old, new) in self.rgb[i..i + 3]
                .iter_mut()
                .zip([c.rgb.0, c.rgb.1, c.rgb.2])
            {
                let v = f64::from(*old) + (f64::from(new) - f64::from(*old)) * a;
                *old = v.round() as u8;
            }
        }
        Ok(())
    }

    /// As plotters' default, but 0.2 x size lower: plotters' ab_glyph text
    /// sits that much above its layout box, so centred labels rose above
    /// their ticks; this centres digits on them as the SVG does.
    fn draw_text<S: BackendTextStyle>(
        &mut self,
        text: &str,
        style: &S,
        (x, y): BackendCoord,
    ) -> Result<(), DrawingErrorKind<Self::ErrorType>> {
        let font_err = |e: S::FontError| DrawingErrorKind::FontError(Box::new(e));
        let ((x0, y0), (x1, y1)) = style.layout_box(text).map_err(font_err)?;
        let (dx, dy) = anchor_offset(style.anchor(), x1 - x0, y1 - y0);
        let dy = dy + (style.size() * 0.2).round() as i32;
        let t = style.transform();
        let drawn = style.draw(text, (0, 0), |gx, gy, c| {
            let (px, py) = t.transform(gx + dx - x0, gy + dy - y0);
            self.draw_pixel((x + px, y + py), c)
        });
        drawn.map_err(font_err)?
    }
}

/// From a text's anchor to the top left of its `w` x `h` box.
fn anchor_offset(pos: Pos, w: i32, h: i32) -> (i32, i32) {
    let dx = match pos.h_pos {
        HPos::Left => 0,
        HPos::Center => -w / 2,
        HPos::Right => -w,
    };
    let dy = match pos.v_pos {
        VPos::Top => 0,
        VPos::Center => -h / 2,
        VPos::Bottom => -h,
    };
    (dx, dy)
}

/// Control characters to spaces, surrounding whitespace trimmed.
fn clean_label(s: &str) -> String {
    let s: String = s
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    s.trim().to_string()
}

fn text_width<DB: DrawingBackend>(a: &Area<DB>, s: &str, style: &TextStyle) -> i32 {
    a.estimate_text_size(s, style).map_or(0, |(w, _)| w as i32)
}

fn text_height<DB: DrawingBackend>(a: &Area<DB>, style: &TextStyle) -> i32 {
    a.estimate_text_size("0", style)
        .map_or(0, |(_, h)| h as i32)
}

/// `s` cleaned, and shortened with an ellipsis to fit in `max_w` pixels.
fn fit<DB: DrawingBackend>(a: &Area<DB>, s: &str, style: &TextStyle, max_w: i32) -> String {
    let s = clean_label(s);
    if text_width(a, &s, style) <= max_w {
        return s;
    }
    let chars: Vec<char> = s.chars().collect();
    let cut = |n: usize| {
        chars[..n]
            .iter()
            .chain(once(&'\u{2026}'))
            .collect::<String>()
    };
    let (mut lo, mut hi) = (0, chars.len());
    while lo < hi {
        let mid = (lo + hi).div_ceil(2);
        if text_width(a, &cut(mid), style) <= max_w {
            lo = mid;
        } else {
            hi = mid - 1;
        }
    }
    let t = cut(lo);
    if text_width(a, &t, style) <= max_w {
        t
    } else {
        String::new()
    }
}

/// Draws the title; returns the area below it.
fn titled<DB: DrawingBackend>(root: &Area<DB>, title: &str, k: Px) -> Fallible<Area<DB>, DB> {
    let style = k
        .text(TITLE_SIZE, TEXT)
        .pos(Pos::new(HPos::Center, VPos::Top));
    let w = root.dim_in_pixel().0 as i32;
    let title = fit(root, title, &style, w - k.i(2.0 * MARGIN));
    if title.is_empty() {
        return Ok(root.margin(k.i(MARGIN), 0, 0, 0));
    }
    root.draw_text(&title, &style, (w / 2, k.i(MARGIN)))?;
    let top = k.i(MARGIN + 12.0) + text_height(root, &style);
    Ok(root.margin(top, 0, 0, 0))
}

/// Room left of the plot for the y tick labels and the y axis title.
fn y_area_width<DB: DrawingBackend>(a: &Area<DB>, ya: &Axis, y_label: &str, k: Px) -> i32 {
    let tick = k.text(TICK_SIZE, TEXT);
    let widest = ya.ticks.iter().map(|t| text_width(a, &t.1, &tick));
    let mut w = k.i(MARGIN + 10.0) + widest.max().unwrap_or(0);
    if !clean_label(y_label).is_empty() {
        w += text_height(a, &k.text(LABEL_SIZE, TEXT)) + k.i(8.0);
    }
    w
}

/// Builds the chart on `area` and draws the axes, gridlines, ticks and axis
/// titles. `x_area` overrides the height below the plot (then the x axis
/// gets no tick labels, the caller draws its own).
fn axes<'a, DB: DrawingBackend>(
    area: &'a Area<DB>,
    k: Px,
    (xa, ya): (&Axis, &Axis),
    (x_label, y_label): (&str, &str),
    x_area: Option<i32>,
) -> Fallible<Chart<'a, DB>, DB> {
    let (tick, desc) = (k.text(TICK_SIZE, TEXT), k.text(LABEL_SIZE, TEXT));
    let tick_h = text_height(area, &tick);
    let y_w = y_area_width(area, ya, y_label, k);
    let x_label = fit(area, x_label, &desc, area.dim_in_pixel().0 as i32 - y_w);
    let mut x_h = tick_h + k.i(10.0);
    if !x_label.is_empty() {
        x_h += text_height(area, &desc) + k.i(8.0);
    }
    let last_x = xa.ticks.last().map_or(0, |t| text_width(area, &t.1, &tick));
    let mut chart = ChartBuilder::on(area)
        .margin_top(k.i(8.0))
        .margin_bottom(k.i(MARGIN))
        .margin_right(k.i(4.0).max(last_x / 2))
        .margin_left(k.i(MARGIN))
        .x_label_area_size(x_area.unwrap_or(x_h))
        .y_label_area_size(y_w - k.i(MARGIN))
        .build_cartesian_2d(xa.clone(), ya.clone())?;
    let plot_h = chart.plotting_area().get_pixel_range().1.len() as i32;
    let y_label = fit(area, y_label, &desc, plot_h);
    let mut mesh = chart.configure_mesh();
    mesh.label_style(tick)
        .axis_desc_style(desc)
        .bold_line_style(k.stroke(GRID, 1.0))
        .light_line_style(TRANSPARENT)
        .axis_style(k.stroke(AXIS, 1.0))
        .set_all_tick_mark_size(k.i(4.0));
    if x_area.is_some() {
        mesh.x_labels(0);
    }
    if !x_label.is_empty() {
        mesh.x_desc(x_label);
    }
    if !y_label.is_empty() {
        mesh.y_desc(y_label);
    }
    mesh.draw()?;
    Ok(chart)
}

fn no_data<DB: DrawingBackend>(
    chart: &mut Chart<DB>,
    xa: &Axis,
    ya: &Axis,
    k: Px,
) -> Fallible<(), DB> {
    let style = k
        .text(LABEL_SIZE, MUTED)
        .pos(Pos::new(HPos::Center, VPos::Center));
    let c = ((xa.lo + xa.hi) / 2.0, (ya.lo + ya.hi) / 2.0);
    chart.draw_series(once(Text::new("no data", c, style)))?;
    Ok(())
}

/// A filled circle with a white rim, `r` chart pixels across.
fn marker<DB: DrawingBackend>(
    chart: &mut Chart<DB>,
    c: (f64, f64),
    r: f64,
    color: Rgb,
    k: Px,
) -> Fallible<(), DB> {
    let dot = EmptyElement::at(c)
        + Circle::new((0, 0), k.u(r + 1.0), WHITE.filled())
        + Circle::new((0, 0), k.u(r), RGBColor::from(color).filled());
    chart.draw_series(once(dot))?;
    Ok(())
}

/// A vertical error bar with caps `cap` chart pixels to each side.
fn error_bar<DB: DrawingBackend>(
    chart: &mut Chart<DB>,
    x: f64,
    (lo, hi): (f64, f64),
    cap: f64,
    color: Rgb,
    k: Px,
) -> Fallible<(), DB> {
    let style = k.stroke(color, 1.5);
    chart.draw_series(once(PathElement::new(vec![(x, lo), (x, hi)], style)))?;
    for y in [lo, hi] {
        let cap = PathElement::new(vec![(-k.i(cap), 0), (k.i(cap), 0)], style);
        chart.draw_series(once(EmptyElement::at((x, y)) + cap))?;
    }
    Ok(())
}

/// The legend's width: swatch, gap and the widest (shortened) name.
fn legend_width<DB: DrawingBackend>(a: &Area<DB>, names: &[String], k: Px) -> i32 {
    let style = k.text(LABEL_SIZE, TEXT);
    let widest = names.iter().map(|n| text_width(a, n, &style)).max();
    widest.map_or(0, |w| w + k.i(LEGEND_GAP + SWATCH + 6.0 + MARGIN))
}

/// The legend, one row per series from the top of `area` down to `bottom`;
/// rows that do not fit become `+N more`.
fn legend<DB: DrawingBackend>(
    area: &Area<DB>,
    bottom: i32,
    names: &[String],
    markers: bool,
    k: Px,
) -> Fallible<(), DB> {
    let style = k
        .text(LABEL_SIZE, TEXT)
        .pos(Pos::new(HPos::Left, VPos::Center));
    let row = text_height(area, &style) + k.i(8.0);
    let fit = ((bottom - k.i(8.0)) / row.max(1)).max(1) as usize;
    let shown = if names.len() > fit {
        fit - 1
    } else {
        names.len()
    };
    let x0 = k.i(LEGEND_GAP);
    let y = |i: usize| k.i(8.0) + row * i as i32 + row / 2;
    for (i, name) in names.iter().take(shown).enumerate() {
        let color = series_color(i);
        let line = vec![(x0, y(i)), (x0 + k.i(SWATCH), y(i))];
        area.draw(&PathElement::new(line, k.stroke(color, LINE_W)))?;
        if markers {
            let c = (x0 + k.i(SWATCH / 2.0), y(i));
            area.draw(&Circle::new(c, k.u(MARKER_R + 1.0), WHITE.filled()))?;
            area.draw(&Circle::new(
                c,
                k.u(MARKER_R),
                RGBColor::from(color).filled(),
            ))?;
        }
        area.draw_text(name, &style, (x0 + k.i(SWATCH + 6.0), y(i)))?;
    }
    if shown < names.len() {
        let more = format!("+{} more", names.len() - shown);
        let muted = k
            .text(LABEL_SIZE, MUTED)
            .pos(Pos::new(HPos::Left, VPos::Center));
        area.draw_text(&more, &muted, (x0, y(shown)))?;
    }
    Ok(())
}

impl Draw for LineChart {
    fn title(&self) -> &str {
        &self.title
    }

    fn draw<DB: DrawingBackend>(&self, root: &Area<DB>, k: Px) -> Fallible<(), DB> {
        let log = self.x_scale == Scale::Log10;
        let ok = |p: &Point| p.x.is_finite() && p.y.is_finite() && (!log || p.x > 0.0);
        let all = || self.series.iter().flat_map(|s| &s.points).filter(|p| ok(p));
        let xr = finite_range(all().map(|p| p.x));
        let yr = finite_range(all().flat_map(|p| y_extent(p.y, p.y_err)));
        let xa = if log {
            Axis::log10(xr)
        } else {
            Axis::linear(xr, 6)
        };
        let ya = Axis::linear(yr, 5);

        let body = titled(root, &self.title, k)?;
        let style = k.text(LABEL_SIZE, TEXT);
        let max_w = k.i(LEGEND_TEXT_MAX);
        let names: Vec<String> = self
            .series
            .iter()
            .map(|s| fit(root, &s.name, &style, max_w))
            .collect();
        let legend_w = legend_width(root, &names, k);
        let (plot, side) = body.split_horizontally(body.dim_in_pixel().0 as i32 - legend_w);
        let labels = (self.x_label.as_str(), self.y_label.as_str());
        let mut chart = axes(&plot, k, (&xa, &ya), labels, None)?;
        if xr.is_none() {
            no_data(&mut chart, &xa, &ya, k)?;
        }
        for (i, s) in self.series.iter().enumerate() {
            let color = series_color(i);
            for p in s.points.iter().filter(|p| ok(p)) {
                if let Some(err) = err_bounds(p.y_err) {
                    error_bar(&mut chart, xa.at(p.x), err, 4.0, color, k)?;
                }
            }
            for run in s.points.split(|p| !ok(p)).filter(|r| !r.is_empty()) {
                let pts: Vec<(f64, f64)> = run.iter().map(|p| (xa.at(p.x), p.y)).collect();
                if pts.len() > 1 {
                    let line = PathElement::new(pts.clone(), k.stroke(color, LINE_W));
                    chart.draw_series(once(line))?;
                }
                if self.markers || pts.len() == 1 {
                    for &c in &pts {
                        marker(&mut chart, c, MARKER_R, color, k)?;
                    }
                }
            }
        }
        let bottom = chart.plotting_area().get_pixel_range().1.end - side.get_base_pixel().1;
        legend(&side, bottom, &names, self.markers, k)
    }
}

impl Draw for BarChart {
    fn title(&self) -> &str {
        &self.title
    }

    fn draw<DB: DrawingBackend>(&self, root: &Area<DB>, k: Px) -> Fallible<(), DB> {
        let vals = self.bars.iter().flat_map(|b| y_extent(b.value, b.err));
        let (mut lo, mut hi) = finite_range(vals.chain([0.0])).unwrap_or((0.0, 1.0));
        if hi - lo <= lo.abs().max(hi.abs()) * 1e-9 {
            hi = lo + 1.0;
        }
        // A little headroom for the value labels.
        let span = hi - lo;
        (lo, hi) = (
            lo - span * 0.03 * f64::from(lo < 0.0),
            hi + span * 0.03 * f64::from(hi > 0.0),
        );
        let ya = Axis::linear(Some((lo, hi)), 5);
        let n = self.bars.len().max(1);
        let xa = Axis {
            lo: 0.0,
            hi: n as f64,
            log: false,
            ticks: Vec::new(),
        };

        let body = titled(root, &self.title, k)?;
        // Category labels: normal size if they fit under their bar, else
        // small; small and vertical (reading upwards) if that still does not
        // fit and the slots are at least one text line wide.
        let y_w = y_area_width(&body, &ya, &self.y_label, k);
        let slot = (body.dim_in_pixel().0 as i32 - y_w - k.i(6.0)) / n as i32;
        let widest = |s: &TextStyle| {
            let w = self
                .bars
                .iter()
                .map(|b| text_width(root, &clean_label(&b.label), s));
            w.max().unwrap_or(0)
        };
        let (label, small) = (k.text(LABEL_SIZE, TEXT), k.text(SMALL_SIZE, TEXT));
        let fits = widest(&label) <= slot - k.i(6.0);
        let vertical = !fits
            && widest(&small) > slot - k.i(4.0)
            && slot >= text_height(root, &small) + k.i(2.0);
        let cat = if fits { label } else { small };
        let cat_h = if vertical {
            widest(&cat).min(k.i(VERTICAL_LABEL_MAX))
        } else {
            text_height(root, &cat)
        };
        let x_area = cat_h + k.i(8.0);
        let mut chart = axes(&body, k, (&xa, &ya), ("", &self.y_label), Some(x_area))?;
        if self.bars.is_empty() {
            no_data(&mut chart, &xa, &ya, k)?;
        }
        let zero = 0f64.clamp(ya.lo, ya.hi);
        let slot = chart.plotting_area().get_pixel_range().0.len() as f64 / n as f64;
        let bw = 0.62f64.min(k.0 * 90.0 / slot);
        let cat_style = if vertical {
            cat.transform(FontTransform::Rotate270)
                .pos(Pos::new(HPos::Right, VPos::Center))
        } else {
            cat.pos(Pos::new(HPos::Center, VPos::Top))
        };
        let cat_w = if vertical {
            k.i(VERTICAL_LABEL_MAX)
        } else {
            slot as i32 - k.i(4.0)
        };
        let value_style = k.text(SMALL_SIZE, TEXT);
        for (i, bar) in self.bars.iter().enumerate() {
            let cx = i as f64 + 0.5;
            let (px, bottom) = chart.backend_coord(&(cx, ya.lo));
            let name = fit(root, &bar.label, &cat, cat_w);
            root.draw_text(&name, &cat_style, (px, bottom + k.i(6.0)))?;
            if !bar.value.is_finite() {
                let style = k
                    .text(SMALL_SIZE, MUTED)
                    .pos(Pos::new(HPos::Center, VPos::Bottom));
                let na = Text::new("n/a", (0, -k.i(5.0)), style);
                chart.draw_series(once(EmptyElement::at((cx, zero)) + na))?;
                continue;
            }
            let fill = RGBColor::from(series_color(i)).filled();
            let corners = [(cx - bw / 2.0, zero), (cx + bw / 2.0, bar.value)];
            chart.draw_series(once(Rectangle::new(corners, fill)))?;
            let (mut top, mut low) = (bar.value.max(zero), bar.value.min(zero));
            if let Some(err) = err_bounds(bar.err) {
                let cap = (bw * slot / k.0 * 0.2).max(3.0);
                error_bar(&mut chart, cx, err, cap, ERR, k)?;
                (top, low) = (top.max(err.1), low.min(err.0));
            }
            // Value labels only where they fit without touching the next one.
            let v = fmt_num(bar.value);
            if text_width(root, &v, &value_style) <= slot as i32 - k.i(3.0) {
                let (y, v_pos, dy) = match bar.value >= 0.0 {
                    true => (top, VPos::Bottom, -k.i(5.0)),
                    false => (low, VPos::Top, k.i(5.0)),
                };
                let style = value_style.pos(Pos::new(HPos::Center, v_pos));
                chart.draw_series(once(
                    EmptyElement::at((cx, y)) + Text::new(v, (0, dy), style),
                ))?;
            }
        }
        let axis = PathElement::new(vec![(0.0, zero), (n as f64, zero)], k.stroke(AXIS, 1.0));
        chart.draw_series(once(axis))?;
        Ok(())
    }
}

impl Draw for ScatterChart {
    fn title(&self) -> &str {
        &self.title
    }

    fn draw<DB: DrawingBackend>(&self, root: &Area<DB>, k: Px) -> Fallible<(), DB> {
        let valid: Vec<(usize, &str, &Point)> = (self.points.iter().enumerate())
            .filter(|(_, (_, p))| p.x.is_finite() && p.y.is_finite())
            .map(|(i, (label, p))| (i, label.as_str(), p))
            .collect();
        let xr = widen(finite_range(valid.iter().map(|v| v.2.x)), 0.06);
        let yr = finite_range(valid.iter().flat_map(|v| y_extent(v.2.y, v.2.y_err)));
        let (xa, ya) = (Axis::linear(xr, 6), Axis::linear(widen(yr, 0.06), 5));

        let body = titled(root, &self.title, k)?;
        let labels = (self.x_label.as_str(), self.y_label.as_str());
        let mut chart = axes(&body, k, (&xa, &ya), labels, None)?;
        if valid.is_empty() {
            no_data(&mut chart, &xa, &ya, k)?;
        }
        let r = 5.0;
        // Boxes (x0, y0, x1, y1) in device pixels that labels must not cover.
        let mut taken: Vec<(i32, i32, i32, i32)> = Vec::new();
        for &(i, _, p) in &valid {
            if let Some(err) = err_bounds(p.y_err) {
                error_bar(&mut chart, p.x, err, 4.0, series_color(i), k)?;
            }
            marker(&mut chart, (p.x, p.y), r, series_color(i), k)?;
            let (x, y) = chart.backend_coord(&(p.x, p.y));
            taken.push((x - k.i(r), y - k.i(r), x + k.i(r), y + k.i(r)));
        }
        // Each label goes right, left, above or below its point: the first
        // place inside the plot that covers no point or earlier label.
        let (xs, ys) = chart.plotting_area().get_pixel_range();
        let style = k.text(LABEL_SIZE, TEXT);
        let h = text_height(root, &style);
        for &(_, label, p) in &valid {
            let text = fit(root, label, &style, k.i(150.0));
            let w = text_width(root, &text, &style);
            let (x, y) = chart.backend_coord(&(p.x, p.y));
            let g = k.i(r + 4.0);
            let places = [
                (HPos::Left, VPos::Center, (x + g, y)),
                (HPos::Right, VPos::Center, (x - g, y)),
                (HPos::Center, VPos::Bottom, (x, y - g)),
                (HPos::Center, VPos::Top, (x, y + g)),
            ];
            let bbox = |&(hp, vp, (x, y)): &(HPos, VPos, (i32, i32))| {
                let (dx, dy) = anchor_offset(Pos::new(hp, vp), w, h);
                (x + dx, y + dy, x + dx + w, y + dy + h)
            };
            let inside = |b: (i32, i32, i32, i32)| {
                b.0 >= xs.start && b.2 <= xs.end && b.1 >= ys.start && b.3 <= ys.end
            };
            let apart = |b: (i32, i32, i32, i32), t: &(i32, i32, i32, i32)| {
                b.2 <= t.0 || b.0 >= t.2 || b.3 <= t.1 || b.1 >= t.3
            };
            let clear = |b| taken.iter().all(|t| apart(b, t));
            let best = (places.iter().find(|c| inside(bbox(c)) && clear(bbox(c))))
                .or_else(|| places.iter().find(|c| inside(bbox(c))))
                .unwrap_or(&places[0]);
            root.draw_text(&text, &style.pos(Pos::new(best.0, best.1)), best.2)?;
            taken.push(bbox(best));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Image {
        w: usize,
        h: usize,
        rgb: Vec<u8>,
    }

    fn decode(png_bytes: &[u8]) -> Image {
        let mut reader = png::Decoder::new(std::io::Cursor::new(png_bytes))
            .read_info()
            .expect("PNG header");
        let mut rgb = vec![0; reader.output_buffer_size().expect("buffer size")];
        let info = reader.next_frame(&mut rgb).expect("PNG data");
        assert_eq!(info.color_type, png::ColorType::Rgb);
        rgb.truncate(info.buffer_size());
        let (w, h) = (info.width as usize, info.height as usize);
        Image { w, h, rgb }
    }

    impl Image {
        fn px(&self, x: usize, y: usize) -> [u8; 3] {
            let i = (y * self.w + x) * 3;
            [self.rgb[i], self.rgb[i + 1], self.rgb[i + 2]]
        }

        /// Pixels in the box `[x0, x1) x [y0, y1)` within `tol` of `c`.
        fn count(&self, (x0, y0, x1, y1): (usize, usize, usize, usize), c: Rgb, tol: u8) -> usize {
            let near = |p: [u8; 3]| {
                let d = |a: u8, b: u8| a.abs_diff(b) <= tol;
                d(p[0], c.0) && d(p[1], c.1) && d(p[2], c.2)
            };
            (y0..y1)
                .flat_map(|y| (x0..x1).map(move |x| (x, y)))
                .filter(|&(x, y)| near(self.px(x, y)))
                .count()
        }
    }

    const ALL: (usize, usize, usize, usize) = (0, 0, WIDTH as usize, HEIGHT as usize);

    fn strategies_chart() -> LineChart {
        let mut c = LineChart::new(
            "Validation accuracy by strategy",
            "optimizer step",
            "val accuracy",
        );
        for (k, name) in ["scratch", "head", "freeze:4", "full"].iter().enumerate() {
            let ceiling = [0.78, 0.84, 0.88, 0.91][k];
            let rate = [0.004, 0.02, 0.012, 0.009][k];
            let pts = (0..=40)
                .map(|i| {
                    let step = i as f64 * 25.0;
                    let wiggle = ((i * (k + 3)) as f64).sin() * 0.006;
                    Point::new(
                        step,
                        0.5 + (ceiling - 0.5) * (1.0 - (-rate * step).exp()) + wiggle,
                    )
                })
                .collect();
            c.series.push(Series::new(*name, pts));
        }
        c.markers = false;
        c
    }

    fn log_chart() -> LineChart {
        let mut c = LineChart::new(
            "Accuracy vs training-set size",
            "training examples (log)",
            "test accuracy",
        );
        c.x_scale = Scale::Log10;
        for (k, name) in ["scratch", "head", "freeze:4", "full"].iter().enumerate() {
            let pts = [100.0, 300.0, 1000.0, 3000.0, 10_000.0]
                .iter()
                .map(|&n: &f64| {
                    let y = 0.55 + 0.08 * (k as f64 + 1.0) * n.log10() / 4.0;
                    Point::with_err(n, y, y - 0.025, y + 0.02)
                })
                .collect();
            c.series.push(Series::new(*name, pts));
        }
        c
    }

    fn scatter_chart() -> ScatterChart {
        let mut s = ScatterChart::new(
            "Test accuracy against CO2",
            "CO2 emitted (g)",
            "test accuracy",
        );
        for (i, name) in ["scratch", "head", "freeze:4", "full"].iter().enumerate() {
            let (x, y) = ([12.4, 1.9, 6.5, 9.8][i], [0.781, 0.842, 0.884, 0.912][i]);
            s.points
                .push((name.to_string(), Point::with_err(x, y, y - 0.02, y + 0.02)));
        }
        s
    }

    fn bar_chart() -> BarChart {
        let mut b = BarChart::new("Test accuracy by strategy (95% CI)", "test accuracy");
        b.bars = vec![
            Bar::with_err("scratch", 0.781, 0.752, 0.809),
            Bar::with_err("head", 0.842, 0.821, 0.861),
            Bar::with_err("freeze:4", 0.884, 0.866, 0.901),
            Bar::new("full", 0.912),
        ];
        b
    }

    /// The SVG is well-formed enough for the report and standalone.
    fn assert_standalone(svg: &str) {
        assert!(svg.starts_with("<svg "), "{}", &svg[..40.min(svg.len())]);
        assert!(svg.contains(r#"xmlns="http://www.w3.org/2000/svg""#));
        assert!(svg.trim_end().ends_with("</svg>"));
        assert_eq!(svg.matches("://").count(), 1);
        for bad in ["href", "url(", "@import", "<image", "NaN", "inf"] {
            assert!(!svg.contains(bad), "{bad} in SVG");
        }
    }

    /// `text` is drawn as one text element.
    fn has_text(svg: &str, text: &str) -> bool {
        svg.contains(&format!(">\n{text}\n</text>"))
    }

    fn assert_png(png: &[u8]) -> Image {
        let img = decode(png);
        assert_eq!((img.w, img.h), (WIDTH as usize, HEIGHT as usize));
        assert_eq!(img.px(0, 0), [255, 255, 255], "white background");
        img
    }

    #[test]
    fn linear_ticks_are_round_and_cover_the_data() {
        let (step, t) = nice_ticks(0.0, 1.0, 5);
        assert_eq!(step, 0.2);
        assert_eq!(t, [0.0, 0.2, 0.4, 0.6, 0.8, 1.0]);
        let (step, t) = nice_ticks(3.0, 97.0, 5);
        assert_eq!((step, t[0], *t.last().unwrap()), (20.0, 0.0, 100.0));
        let (_, t) = nice_ticks(0.55, 0.87, 5);
        assert_eq!(t, [0.55, 0.6, 0.65, 0.7, 0.75, 0.8, 0.85, 0.9]);
        let (_, t) = nice_ticks(0.5, 0.91, 5);
        assert_eq!(t, [0.5, 0.6, 0.7, 0.8, 0.9, 1.0]);
        // Degenerate ranges are widened; equal ends never give one tick.
        assert!(nice_ticks(0.5, 0.5, 5).1.len() >= 2);
        assert_eq!(nice_ticks(0.0, 0.0, 5).1, [0.0, 0.2, 0.4, 0.6, 0.8, 1.0]);
        let ax = Axis::linear(Some((-0.3, 0.3)), 5);
        let labels: Vec<&str> = ax.ticks.iter().map(|t| t.1.as_str()).collect();
        assert_eq!(labels, ["-0.3", "-0.2", "-0.1", "0", "0.1", "0.2", "0.3"]);
    }

    #[test]
    fn log_ticks_are_1_2_5_per_decade() {
        let (lo, hi, t) = log_ticks(100.0, 10_000.0);
        assert_eq!((lo, hi), (100.0, 10_000.0));
        assert_eq!(t, [100.0, 200.0, 500.0, 1000.0, 2000.0, 5000.0, 10_000.0]);
        // The range snaps outwards to 1/2/5.
        let (lo, hi, t) = log_ticks(130.0, 4200.0);
        assert_eq!((lo, hi), (100.0, 5000.0));
        assert_eq!(t, [100.0, 200.0, 500.0, 1000.0, 2000.0, 5000.0]);
        // Beyond four decades only decades, beyond ten every n-th decade.
        assert_eq!(
            log_ticks(1.0, 1e6).2,
            [1.0, 10.0, 100.0, 1e3, 1e4, 1e5, 1e6]
        );
        let t = log_ticks(1.0, 1e12).2;
        assert_eq!(t, [1.0, 100.0, 1e4, 1e6, 1e8, 1e10, 1e12]);
        // A single value, and bad ranges.
        assert_eq!(log_ticks(5.0, 5.0), (2.0, 10.0, vec![2.0, 5.0, 10.0]));
        assert_eq!(log_ticks(0.0, 10.0).2, [1.0, 10.0]);
        // Labels, and the axis works in log10 units.
        let ax = Axis::log10(Some((100.0, 10_000.0)));
        let labels: Vec<&str> = ax.ticks.iter().map(|t| t.1.as_str()).collect();
        assert_eq!(labels, ["100", "200", "500", "1k", "2k", "5k", "10k"]);
        assert_eq!((ax.lo, ax.hi, ax.at(1000.0)), (2.0, 4.0, 3.0));
        assert_eq!(ax.label(1000f64.log10()), "1k");
    }

    #[test]
    fn tick_labels_are_compact() {
        assert_eq!(fmt_tick(1000.0, 200.0, 1000.0), "1000");
        assert_eq!(fmt_tick(10_000.0, 5000.0, 20_000.0), "10k");
        assert_eq!(fmt_tick(2500.0, 500.0, 10_000.0), "2.5k");
        assert_eq!(fmt_tick(3e-5, 1e-5, 5e-5), "3e-5");
        assert_eq!(fmt_tick(0.3, 0.1, 1.0), "0.3");
        assert_eq!(fmt_tick(1e-17, 0.1, 1.0), "0");
        assert_eq!(fmt_num(1234.0), "1.23k");
        assert_eq!(fmt_num(2_000_000.0), "2M");
        assert_eq!(fmt_num(0.12345), "0.123");
        assert_eq!(fmt_num(12.0), "12");
        assert_eq!(fmt_num(0.0002), "2e-4");
        assert_eq!(fmt_num(f64::NAN), "n/a");
    }

    #[test]
    fn line_chart_png_has_size_plot_lines_and_text() {
        let img = assert_png(&strategies_chart().to_png());
        // Every series is drawn in its colour inside the plot area.
        let plot = (80, 50, 600, 380);
        for i in 0..4 {
            let n = img.count(plot, series_color(i), 24);
            assert!(n > 100, "series {i}: {n} pixels");
        }
        // Text: the title above the plot, tick labels left of it and the
        // legend right of it are drawn in the text colour.
        assert!(img.count((200, 0, 560, 34), TEXT, 40) > 100, "title");
        assert!(
            img.count((0, 40, 70, 400), TEXT, 40) > 100,
            "y ticks and title"
        );
        assert!(
            img.count((0, 380, 600, 440), TEXT, 40) > 100,
            "x ticks and title"
        );
        assert!(img.count((620, 40, 760, 160), TEXT, 40) > 100, "legend");
    }

    #[test]
    fn bar_scatter_and_log_pngs_decode_and_show_data() {
        let img = assert_png(&bar_chart().to_png());
        for i in 0..4 {
            assert!(img.count(ALL, series_color(i), 8) > 500, "bar {i}");
        }
        let img = assert_png(&scatter_chart().to_png());
        for i in 0..4 {
            assert!(img.count(ALL, series_color(i), 24) > 30, "point {i}");
        }
        let img = assert_png(&log_chart().to_png());
        for i in 0..4 {
            assert!(img.count(ALL, series_color(i), 24) > 100, "series {i}");
        }
    }

    #[test]
    fn svg_is_standalone_and_has_titles_and_names() {
        let mut chart = strategies_chart();
        chart.series.push(Series::new(
            "a<b & \"c\" http://x",
            vec![Point::new(1.0, 0.6)],
        ));
        let svg = chart.to_svg();
        assert_standalone(&svg);
        assert!(svg.contains("<title>Validation accuracy by strategy</title>"));
        for text in [
            "Validation accuracy by strategy",
            "optimizer step",
            "val accuracy",
        ] {
            assert!(has_text(&svg, text), "{text}");
        }
        for name in ["scratch", "head", "freeze:4", "full"] {
            assert!(has_text(&svg, name), "{name} in legend");
        }
        assert!(has_text(&svg, "a&lt;b &amp; &quot;c&quot; http:&#47;/x"));
        assert_eq!(svg.matches("http").count(), 2, "the namespace and the name");
        assert!(svg.contains(r#"font-family="sans-serif""#));
        assert!(svg.contains("rotate(270"), "the y title reads upwards");

        let svg = scatter_chart().to_svg();
        assert_standalone(&svg);
        assert_eq!(svg.matches("http").count(), 1, "only the namespace");
        for text in [
            "CO2 emitted (g)",
            "test accuracy",
            "scratch",
            "head",
            "freeze:4",
            "full",
        ] {
            assert!(has_text(&svg, text), "{text}");
        }
        let svg = bar_chart().to_svg();
        assert_standalone(&svg);
        for text in ["test accuracy", "scratch", "full", "0.912"] {
            assert!(has_text(&svg, text), "{text}");
        }
    }

    #[test]
    fn log_axis_svg_has_1_2_5_ticks() {
        let svg = log_chart().to_svg();
        assert_standalone(&svg);
        for label in ["100", "200", "500", "1k", "2k", "5k", "10k"] {
            assert!(has_text(&svg, label), "tick {label}");
        }
        assert!(!has_text(&svg, "300"));
    }

    #[test]
    fn edge_cases_do_not_panic() {
        let check = |svg: String, png: Vec<u8>| {
            assert_standalone(&svg);
            assert_png(&png);
        };
        let mut c = LineChart::new("", "", "");
        check(c.to_svg(), c.to_png());
        assert!(has_text(&c.to_svg(), "no data"));
        c.series.push(Series::new("empty", vec![]));
        check(c.to_svg(), c.to_png());
        c.series
            .push(Series::new("one", vec![Point::new(3.0, 0.5)]));
        c.markers = false;
        let svg = c.to_svg();
        assert!(
            svg.contains("<circle"),
            "a single point still gets a marker"
        );
        check(svg, c.to_png());
        c.series.push(Series::new(
            "bad values",
            vec![
                Point::new(f64::NAN, 1.0),
                Point::new(1.0, f64::INFINITY),
                Point::with_err(2.0, 0.4, f64::NAN, 0.6),
                Point::new(3.0, 0.45),
                Point::new(f64::NEG_INFINITY, 0.0),
            ],
        ));
        check(c.to_svg(), c.to_png());
        c.x_scale = Scale::Log10;
        c.series.push(Series::new(
            "x <= 0",
            vec![Point::new(-1.0, 0.1), Point::new(0.0, 0.2)],
        ));
        check(c.to_svg(), c.to_png());
        let long = "x".repeat(500);
        (c.title, c.x_label, c.y_label) = (long.clone(), long.clone(), long.clone());
        c.series.push(Series::new(
            long.clone(),
            vec![Point::with_err(5.0, 0.2, 0.3, 0.1)],
        ));
        let svg = c.to_svg();
        let drawn = &svg[svg.find("</title>").unwrap()..];
        assert!(!drawn.contains(&long), "drawn text is shortened");
        assert!(drawn.contains("x\u{2026}"));
        check(svg, c.to_png());
        for i in 0..30 {
            c.series.push(Series::new(
                format!("s{i}"),
                vec![Point::new(i as f64 + 1.0, 1.0)],
            ));
        }
        let svg = c.to_svg();
        assert!(svg.contains(" more\n</text>"), "legend overflow");
        check(svg, c.to_png());
        for pts in [
            vec![Point::new(1e300, 1e-300), Point::new(-1e300, 1e300)],
            vec![Point::new(1e9, 1.0), Point::new(1e9 + 1e-6, 1.0 + 1e-12)],
        ] {
            let mut c = LineChart::new("t", "x", "y");
            c.series.push(Series::new("s", pts));
            check(c.to_svg(), c.to_png());
        }

        let mut b = BarChart::new("", "");
        check(b.to_svg(), b.to_png());
        b.bars.push(Bar::new("nan", f64::NAN));
        b.bars.push(Bar::new("neg", -2.0));
        b.bars
            .push(Bar::with_err("unbounded err", 1.0, f64::NEG_INFINITY, 2.0));
        b.bars.push(Bar::new(long.clone(), 0.0));
        let svg = b.to_svg();
        assert!(has_text(&svg, "n/a"));
        check(svg, b.to_png());
        b.bars = (0..200)
            .map(|i| Bar::new(format!("bar {i}"), i as f64))
            .collect();
        check(b.to_svg(), b.to_png());
        // Labels too wide for their slots turn vertical.
        b.bars = (0..40)
            .map(|i| Bar::new(format!("strategy {i}"), i as f64))
            .collect();
        let svg = b.to_svg();
        assert!(svg.matches("rotate(270").count() >= 40);
        assert!(has_text(&svg, "strategy 39"));
        check(svg, b.to_png());

        let mut s = ScatterChart::new("", "", "");
        check(s.to_svg(), s.to_png());
        s.points.push(("only".into(), Point::new(1.0, 1.0)));
        check(s.to_svg(), s.to_png());
        s.points.push(("nan".into(), Point::new(f64::NAN, 1.0)));
        s.points.push(("same".into(), Point::new(1.0, 1.0)));
        check(s.to_svg(), s.to_png());
    }

    /// Writes the sample charts when PLOT_EXAMPLE_DIR is set, for looking at.
    #[test]
    fn write_examples() {
        let Ok(dir) = std::env::var("PLOT_EXAMPLE_DIR") else {
            return;
        };
        let dir = std::path::Path::new(&dir);
        let mut many = LineChart::new("Many series", "x", "y");
        many.series = (0..30)
            .map(|i| Series::new(format!("freeze:{i}"), vec![Point::new(i as f64, i as f64)]))
            .collect();
        let mut bars = BarChart::new("Long labels", "value");
        bars.bars = (0..24)
            .map(|i| Bar::new(format!("strategy {i}"), (i as f64 - 4.0) * 0.1))
            .collect();
        let charts: [(&str, String, Vec<u8>); 6] = [
            ("many", many.to_svg(), many.to_png()),
            ("bars", bars.to_svg(), bars.to_png()),
            (
                "line",
                strategies_chart().to_svg(),
                strategies_chart().to_png(),
            ),
            ("log", log_chart().to_svg(), log_chart().to_png()),
            (
                "scatter",
                scatter_chart().to_svg(),
                scatter_chart().to_png(),
            ),
            ("bar", bar_chart().to_svg(), bar_chart().to_png()),
        ];
        for (name, svg, png) in charts {
            std::fs::write(dir.join(format!("plot_{name}.svg")), &svg).unwrap();
            std::fs::write(dir.join(format!("plot_{name}.png")), &png).unwrap();
            eprintln!("{name}: svg {} bytes, png {} bytes", svg.len(), png.len());
        }
    }
}
