//! Self-contained charts for reports: line, bar and scatter charts rendered to
//! SVG and PNG from one list of drawing primitives, laid out once, so both
//! outputs show the same chart.
//!
//! Std-only. The PNG path has its own rasteriser (2x supersampled, so edges are
//! anti-aliased), a 5x7 bitmap font covering printable ASCII, a DEFLATE encoder
//! (fixed-Huffman blocks with hash-chain LZ77, stored blocks as a fallback), the
//! zlib wrapper with Adler-32, and PNG chunks with CRC-32.
//!
//! The SVG is standalone: its only URL is the `xmlns` namespace, it has no
//! links, no `href` and no external fonts (the generic `sans-serif` family).

use std::fmt::{self, Write as _};

/// Chart width in pixels (SVG user units and PNG pixels).
pub const WIDTH: u32 = 760;
/// Chart height in pixels (SVG user units and PNG pixels).
pub const HEIGHT: u32 = 440;

const W: f64 = WIDTH as f64;
const H: f64 = HEIGHT as f64;

// ---------------------------------------------------------------------------
// Colours
// ---------------------------------------------------------------------------

/// An sRGB colour.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Rgb(pub u8, pub u8, pub u8);

impl fmt::Display for Rgb {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "#{:02x}{:02x}{:02x}", self.0, self.1, self.2)
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

const WHITE: Rgb = Rgb(0xFF, 0xFF, 0xFF);
const TEXT: Rgb = Rgb(0x22, 0x22, 0x22);
const MUTED: Rgb = Rgb(0x77, 0x77, 0x77);
const GRID: Rgb = Rgb(0xE4, 0xE4, 0xE4);
const AXIS: Rgb = Rgb(0x55, 0x55, 0x55);
const ERR: Rgb = Rgb(0x33, 0x33, 0x33);

// ---------------------------------------------------------------------------
// Public chart types
// ---------------------------------------------------------------------------

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
        Point {
            x,
            y,
            y_err: Some((lo, hi)),
        }
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
        Series {
            name: name.into(),
            points,
        }
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
        self.scene().to_svg(&self.title)
    }

    pub fn to_png(&self) -> Vec<u8> {
        self.scene().to_png()
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
        Bar {
            label: label.into(),
            value,
            err: None,
        }
    }

    pub fn with_err(label: impl Into<String>, value: f64, lo: f64, hi: f64) -> Self {
        Bar {
            label: label.into(),
            value,
            err: Some((lo, hi)),
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
        BarChart {
            title: title.into(),
            y_label: y_label.into(),
            bars: Vec::new(),
        }
    }

    pub fn to_svg(&self) -> String {
        self.scene().to_svg(&self.title)
    }

    pub fn to_png(&self) -> Vec<u8> {
        self.scene().to_png()
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
        self.scene().to_svg(&self.title)
    }

    pub fn to_png(&self) -> Vec<u8> {
        self.scene().to_png()
    }
}

// ---------------------------------------------------------------------------
// Ticks and number formatting
// ---------------------------------------------------------------------------

/// Nice linear ticks: the axis range extended to multiples of the step.
#[derive(Clone, Debug, PartialEq)]
struct Ticks {
    lo: f64,
    hi: f64,
    step: f64,
    values: Vec<f64>,
}

/// Widens an empty or degenerate range so that it can be drawn.
fn pad_range(lo: f64, hi: f64) -> (f64, f64) {
    if !lo.is_finite() || !hi.is_finite() {
        return (0.0, 1.0);
    }
    let (lo, hi) = if lo <= hi { (lo, hi) } else { (hi, lo) };
    let mag = lo.abs().max(hi.abs());
    if hi - lo > mag * 1e-9 {
        return (lo, hi);
    }
    if mag == 0.0 {
        (0.0, 1.0)
    } else {
        let d = mag * 0.1;
        (lo - d, hi + d)
    }
}

/// A step of 1, 2 or 5 times a power of ten, near `range / target`.
fn nice_step(range: f64, target: usize) -> f64 {
    let rough = range / target.max(1) as f64;
    if !(rough > 0.0 && rough.is_finite()) {
        return 1.0;
    }
    let mag = 10f64.powf(rough.log10().floor());
    let norm = rough / mag;
    let nice = if norm < 1.5 {
        1.0
    } else if norm < 3.0 {
        2.0
    } else if norm < 7.0 {
        5.0
    } else {
        10.0
    };
    nice * mag
}

/// Number of decimals that shows every multiple of `step` exactly.
fn decimals_for(step: f64) -> usize {
    if !(step > 0.0 && step.is_finite()) {
        return 0;
    }
    (-step.log10() - 1e-9).ceil().clamp(0.0, 12.0) as usize
}

/// Rounds `v` to the precision of `step`, so 0.1 * 3 prints as 0.3.
fn clean(v: f64, step: f64) -> f64 {
    if v.abs() < step * 1e-6 {
        return 0.0;
    }
    let p = 10f64.powi(decimals_for(step) as i32);
    let r = (v * p).round() / p;
    if r.is_finite() { r } else { v }
}

/// Linear ticks at 1/2/5 x 10^k covering `[lo, hi]`, about `target` intervals.
fn nice_ticks(lo: f64, hi: f64, target: usize) -> Ticks {
    let (lo, hi) = pad_range(lo, hi);
    let step = nice_step(hi - lo, target);
    let i0 = (lo / step + 1e-9).floor();
    let i1 = (hi / step - 1e-9).ceil().max(i0 + 1.0);
    let n = i1 - i0;
    if !(n.is_finite() && n <= 200.0) {
        return Ticks {
            lo,
            hi,
            step: hi - lo,
            values: vec![lo, hi],
        };
    }
    let values = (0..=n as i64)
        .map(|k| clean((i0 + k as f64) * step, step))
        .collect();
    Ticks {
        lo: clean(i0 * step, step),
        hi: clean(i1 * step, step),
        step,
        values,
    }
}

/// Largest 1/2/5 x 10^k not above `v` (`up == false`) or smallest not below.
fn snap125(v: f64, up: bool) -> f64 {
    let e = v.log10().floor();
    let base = 10f64.powf(e);
    let m = v / base;
    let steps = [1.0, 2.0, 5.0, 10.0];
    if up {
        let s = steps
            .iter()
            .find(|&&s| s >= m * (1.0 - 1e-9))
            .unwrap_or(&10.0);
        s * base
    } else {
        let s = steps
            .iter()
            .rev()
            .find(|&&s| s <= m * (1.0 + 1e-9))
            .unwrap_or(&1.0);
        s * base
    }
}

/// Log10 ticks: the axis range snapped to 1/2/5 x 10^k, ticks at decades plus
/// 2 and 5 (decades only beyond four decades, every n-th decade beyond ten).
fn log_ticks(lo: f64, hi: f64) -> (f64, f64, Vec<f64>) {
    let (mut lo, mut hi) = if lo <= hi { (lo, hi) } else { (hi, lo) };
    if !(lo > 0.0 && lo.is_finite() && hi.is_finite()) {
        return (1.0, 10.0, vec![1.0, 10.0]);
    }
    if hi <= lo * (1.0 + 1e-9) {
        lo /= 2.0;
        hi *= 2.0;
    }
    let (lo, hi) = (snap125(lo, false), snap125(hi, true));
    let (e0, e1) = (lo.log10().floor() as i32, hi.log10().ceil() as i32);
    let span = hi.log10() - lo.log10();
    let mults: &[f64] = if span > 4.0 { &[1.0] } else { &[1.0, 2.0, 5.0] };
    let every = if span > 10.0 {
        (span / 8.0).ceil() as i32
    } else {
        1
    };
    let mut ticks = Vec::new();
    for e in e0..=e1 {
        if (e - e0) % every != 0 {
            continue;
        }
        for &m in mults {
            let t = m * 10f64.powi(e);
            if t >= lo * (1.0 - 1e-9) && t <= hi * (1.0 + 1e-9) {
                ticks.push(t);
            }
        }
    }
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
        m /= 10.0;
        e += 1.0;
    }
    format!("{}e{}", trim_zeros(format!("{m:.2}")), e as i64)
}

/// `1.2k`, `3M`: decimals from `step` if given, else three significant digits.
fn fmt_suffix(v: f64, step: Option<f64>) -> String {
    let a = v.abs();
    let (div, suffix) = if a >= 1e12 {
        (1e12, "T")
    } else if a >= 1e9 {
        (1e9, "G")
    } else if a >= 1e6 {
        (1e6, "M")
    } else {
        (1e3, "k")
    };
    let d = match step {
        Some(s) => decimals_for(s / div),
        None => sig_decimals(v / div, 3),
    };
    format!("{}{suffix}", trim_zeros(format!("{:.*}", d, v / div)))
}

fn sig_decimals(v: f64, sig: i32) -> usize {
    if v == 0.0 || !v.is_finite() {
        return 0;
    }
    let e = v.abs().log10().floor() as i32;
    (sig - 1 - e).clamp(0, 12) as usize
}

/// A tick label for `v` on an axis with tick spacing `step` whose largest
/// tick magnitude is `max_abs`. The style follows the axis, so neighbouring
/// labels match: `1000` next to `800`, but `10k` next to `5k`; `3e-5` only
/// when the whole axis is that small.
fn fmt_tick(v: f64, step: f64, max_abs: f64) -> String {
    if !v.is_finite() {
        return String::new();
    }
    let a = v.abs();
    if a == 0.0 || a < step.abs() * 1e-6 {
        return "0".to_string();
    }
    if a >= 1e15 || max_abs < 1e-3 || decimals_for(step) > 6 {
        return fmt_sci(v);
    }
    if a >= 1e3 && max_abs >= 1e4 {
        return fmt_suffix(v, Some(step));
    }
    format!("{:.*}", decimals_for(step), v)
}

/// A compact label for an arbitrary value: three significant digits.
fn fmt_num(v: f64) -> String {
    if !v.is_finite() {
        return "n/a".to_string();
    }
    let a = v.abs();
    if a == 0.0 {
        return "0".to_string();
    }
    if !(1e-3..1e15).contains(&a) {
        return fmt_sci(v);
    }
    if a >= 1e3 {
        return fmt_suffix(v, None);
    }
    trim_zeros(format!("{:.*}", sig_decimals(v, 3), v))
}

// ---------------------------------------------------------------------------
// Axes
// ---------------------------------------------------------------------------

struct Axis {
    lo: f64,
    hi: f64,
    log: bool,
    ticks: Vec<(f64, String)>,
}

impl Axis {
    fn linear(range: Option<(f64, f64)>, target: usize) -> Axis {
        let (lo, hi) = range.unwrap_or((0.0, 1.0));
        let t = nice_ticks(lo, hi, target);
        let max_abs = t.lo.abs().max(t.hi.abs());
        let ticks = t
            .values
            .iter()
            .map(|&v| (v, fmt_tick(v, t.step, max_abs)))
            .collect();
        Axis {
            lo: t.lo,
            hi: t.hi,
            log: false,
            ticks,
        }
    }

    fn log10(range: Option<(f64, f64)>) -> Axis {
        let (lo, hi) = range.unwrap_or((1.0, 10.0));
        let (lo, hi, values) = log_ticks(lo, hi);
        let ticks = values.iter().map(|&v| (v, fmt_num(v))).collect();
        Axis {
            lo,
            hi,
            log: true,
            ticks,
        }
    }

    /// Position of `v` along the axis, 0 at `lo` and 1 at `hi`.
    fn frac(&self, v: f64) -> f64 {
        let f = if self.log {
            (v.log10() - self.lo.log10()) / (self.hi.log10() - self.lo.log10())
        } else {
            (v - self.lo) / (self.hi - self.lo)
        };
        if f.is_finite() { f } else { 0.0 }
    }
}

/// Smallest and largest finite value.
fn finite_range(vals: impl IntoIterator<Item = f64>) -> Option<(f64, f64)> {
    let mut r: Option<(f64, f64)> = None;
    for v in vals.into_iter().filter(|v| v.is_finite()) {
        r = Some(match r {
            None => (v, v),
            Some((a, b)) => (a.min(v), b.max(v)),
        });
    }
    r
}

/// Widens a range by `f` of its span on both sides (for scatter plots).
fn widen(r: Option<(f64, f64)>, f: f64) -> Option<(f64, f64)> {
    r.map(|(lo, hi)| {
        let d = (hi - lo) * f;
        (lo - d, hi + d)
    })
}

// ---------------------------------------------------------------------------
// Drawing primitives
// ---------------------------------------------------------------------------

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Anchor {
    Start,
    Middle,
    End,
}

/// Text; `size` is the bitmap-font scale (glyph cell 6*size wide, capitals
/// 7*size tall). `y` is the baseline. Vertical text reads bottom to top,
/// rotated -90 degrees about (x, y).
#[derive(Clone, Debug, PartialEq)]
struct TextSpec {
    x: f64,
    y: f64,
    text: String,
    size: f64,
    anchor: Anchor,
    color: Rgb,
    vertical: bool,
    bold: bool,
}

impl TextSpec {
    fn new(x: f64, y: f64, text: impl Into<String>, size: f64, anchor: Anchor) -> Self {
        TextSpec {
            x,
            y,
            text: text.into(),
            size,
            anchor,
            color: TEXT,
            vertical: false,
            bold: false,
        }
    }

    fn color(mut self, c: Rgb) -> Self {
        self.color = c;
        self
    }

    fn vertical(mut self) -> Self {
        self.vertical = true;
        self
    }

    fn bold(mut self) -> Self {
        self.bold = true;
        self
    }

    /// Offset from the anchor to the start of the text, along the text.
    fn start_offset(&self) -> f64 {
        let w = text_width(&self.text, self.size);
        match self.anchor {
            Anchor::Start => 0.0,
            Anchor::Middle => -w / 2.0,
            Anchor::End => -w,
        }
    }

    /// Bounding box (x0, y0, x1, y1) of horizontal text.
    fn bbox(&self) -> (f64, f64, f64, f64) {
        let x0 = self.x + self.start_offset();
        (
            x0,
            self.y - CAP * self.size,
            x0 + text_width(&self.text, self.size),
            self.y + self.size,
        )
    }
}

#[derive(Clone, Debug, PartialEq)]
enum Prim {
    Line {
        a: (f64, f64),
        b: (f64, f64),
        color: Rgb,
        width: f64,
    },
    Polyline {
        pts: Vec<(f64, f64)>,
        color: Rgb,
        width: f64,
    },
    Rect {
        x: f64,
        y: f64,
        w: f64,
        h: f64,
        fill: Rgb,
    },
    Circle {
        c: (f64, f64),
        r: f64,
        fill: Rgb,
        stroke: Option<(Rgb, f64)>,
    },
    Text(TextSpec),
}

/// A laid-out chart: what both the SVG writer and the rasteriser draw.
struct Scene {
    w: u32,
    h: u32,
    prims: Vec<Prim>,
}

impl Scene {
    fn new() -> Self {
        Scene {
            w: WIDTH,
            h: HEIGHT,
            prims: Vec::new(),
        }
    }

    fn line(&mut self, a: (f64, f64), b: (f64, f64), color: Rgb, width: f64) {
        self.prims.push(Prim::Line { a, b, color, width });
    }

    fn polyline(&mut self, pts: Vec<(f64, f64)>, color: Rgb, width: f64) {
        self.prims.push(Prim::Polyline { pts, color, width });
    }

    fn rect(&mut self, (x, y): (f64, f64), (w, h): (f64, f64), fill: Rgb) {
        self.prims.push(Prim::Rect { x, y, w, h, fill });
    }

    fn circle(&mut self, c: (f64, f64), r: f64, fill: Rgb, stroke: Option<(Rgb, f64)>) {
        self.prims.push(Prim::Circle { c, r, fill, stroke });
    }

    fn text(&mut self, t: TextSpec) {
        if !t.text.is_empty() {
            self.prims.push(Prim::Text(t));
        }
    }

    fn to_png(&self) -> Vec<u8> {
        encode_png(self.w, self.h, &self.rasterize())
    }
}

// ---------------------------------------------------------------------------
// Text helpers
// ---------------------------------------------------------------------------

/// Capital height in font pixels.
const CAP: f64 = 7.0;
const TICK_SIZE: f64 = 1.5;
const LABEL_SIZE: f64 = 1.5;
const TITLE_SIZE: f64 = 2.0;
const SMALL_SIZE: f64 = 1.0;
const SVG_FONT_PX: f64 = 9.0;

/// Width of `s` in the bitmap font at `size` (one glyph per char).
fn text_width(s: &str, size: f64) -> f64 {
    let n = s.chars().count();
    if n == 0 {
        0.0
    } else {
        (n as f64 * 6.0 - 1.0) * size
    }
}

/// Control characters to spaces, surrounding whitespace trimmed.
fn clean_label(s: &str) -> String {
    s.chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect::<String>()
        .trim()
        .to_string()
}

/// Shortens `s` with an ellipsis so it fits in `max_w` at `size`.
fn truncate_to_width(s: &str, size: f64, max_w: f64) -> String {
    if text_width(s, size) <= max_w {
        return s.to_string();
    }
    let fit = ((max_w + size) / (6.0 * size)).floor().max(0.0) as usize;
    if fit == 0 {
        return String::new();
    }
    let mut out: String = s.chars().take(fit - 1).collect();
    out.push('\u{2026}');
    out
}

// ---------------------------------------------------------------------------
// Layout shared by the charts
// ---------------------------------------------------------------------------

const MARGIN: f64 = 10.0;
const TICK_LEN: f64 = 4.0;
const LINE_W: f64 = 2.0;
const MARKER_R: f64 = 3.0;
const LEGEND_GAP: f64 = 16.0;
const SWATCH: f64 = 22.0;
const LEGEND_TEXT_MAX: f64 = 170.0;
const VERTICAL_LABEL_MAX: f64 = 110.0;

/// Pixel position for a 1 px line: the centre of a pixel.
fn crisp(v: f64) -> f64 {
    v.floor() + 0.5
}

/// The plot area in pixels.
struct Frame {
    l: f64,
    t: f64,
    r: f64,
    b: f64,
}

impl Frame {
    fn x(&self, ax: &Axis, v: f64) -> f64 {
        self.l + ax.frac(v) * (self.r - self.l)
    }

    fn y(&self, ax: &Axis, v: f64) -> f64 {
        self.b - ax.frac(v) * (self.b - self.t)
    }

    fn no_data(&self, sc: &mut Scene) {
        let (x, y) = ((self.l + self.r) / 2.0, (self.t + self.b) / 2.0);
        sc.text(TextSpec::new(x, y, "no data", LABEL_SIZE, Anchor::Middle).color(MUTED));
    }
}

/// Draws the title; returns the top of the plot area.
fn draw_title(sc: &mut Scene, title: &str) -> f64 {
    let title = clean_label(title);
    if title.is_empty() {
        return 2.0 * MARGIN;
    }
    let t = truncate_to_width(&title, TITLE_SIZE, W - 2.0 * MARGIN);
    let baseline = MARGIN + CAP * TITLE_SIZE + 4.0;
    sc.text(TextSpec::new(W / 2.0, baseline, t, TITLE_SIZE, Anchor::Middle).bold());
    baseline + 16.0
}

/// Left edge of the plot area, leaving room for the y label and tick labels.
fn left_edge(ya: &Axis, y_label: &str) -> f64 {
    let tick_w = ya
        .ticks
        .iter()
        .map(|(_, s)| text_width(s, TICK_SIZE))
        .fold(0.0, f64::max);
    let mut l = MARGIN + tick_w + 6.0 + TICK_LEN;
    if !y_label.is_empty() {
        l += (CAP + 1.0) * LABEL_SIZE + 8.0;
    }
    l
}

/// How many ticks to step between labels so that labels `label_w` wide do
/// not collide, given tick positions in pixels.
fn label_stride(pos: &[f64], label_w: f64) -> usize {
    let gap = pos
        .windows(2)
        .map(|w| (w[1] - w[0]).abs())
        .fold(f64::INFINITY, f64::min);
    if !(gap.is_finite() && gap > 0.0) {
        return 1;
    }
    ((label_w + 8.0) / gap).ceil().max(1.0) as usize
}

fn draw_y_axis(sc: &mut Scene, f: &Frame, ya: &Axis, y_label: &str) {
    let pos: Vec<f64> = ya.ticks.iter().map(|(v, _)| f.y(ya, *v)).collect();
    let stride = label_stride(&pos, (CAP + 1.0) * TICK_SIZE);
    for (k, ((_, label), y)) in ya.ticks.iter().zip(&pos).enumerate() {
        if *y < f.t - 1.0 || *y > f.b + 1.0 {
            continue;
        }
        let y = crisp(*y);
        sc.line((f.l, y), (f.r, y), GRID, 1.0);
        sc.line((f.l - TICK_LEN, y), (f.l, y), AXIS, 1.0);
        if k % stride == 0 {
            let ty = y + CAP * TICK_SIZE / 2.0;
            let tx = f.l - TICK_LEN - 4.0;
            sc.text(TextSpec::new(tx, ty, label.clone(), TICK_SIZE, Anchor::End));
        }
    }
    if !y_label.is_empty() {
        let t = truncate_to_width(y_label, LABEL_SIZE, f.b - f.t);
        let x = MARGIN + CAP * LABEL_SIZE;
        let y = (f.t + f.b) / 2.0;
        sc.text(TextSpec::new(x, y, t, LABEL_SIZE, Anchor::Middle).vertical());
    }
}

fn draw_x_axis(sc: &mut Scene, f: &Frame, xa: &Axis, x_label: &str) {
    let pos: Vec<f64> = xa.ticks.iter().map(|(v, _)| f.x(xa, *v)).collect();
    let max_w = xa
        .ticks
        .iter()
        .map(|(_, s)| text_width(s, TICK_SIZE))
        .fold(0.0, f64::max);
    let stride = label_stride(&pos, max_w);
    for (k, ((_, label), x)) in xa.ticks.iter().zip(&pos).enumerate() {
        if *x < f.l - 1.0 || *x > f.r + 1.0 {
            continue;
        }
        let x = crisp(*x);
        sc.line((x, f.t), (x, f.b), GRID, 1.0);
        sc.line((x, f.b), (x, f.b + TICK_LEN), AXIS, 1.0);
        if k % stride == 0 {
            let ty = f.b + TICK_LEN + 5.0 + CAP * TICK_SIZE;
            sc.text(TextSpec::new(
                x,
                ty,
                label.clone(),
                TICK_SIZE,
                Anchor::Middle,
            ));
        }
    }
    if !x_label.is_empty() {
        let t = truncate_to_width(x_label, LABEL_SIZE, W - 2.0 * MARGIN);
        let x = ((f.l + f.r) / 2.0).clamp(text_width(&t, LABEL_SIZE) / 2.0 + MARGIN, W);
        sc.text(TextSpec::new(
            x,
            H - MARGIN - LABEL_SIZE,
            t,
            LABEL_SIZE,
            Anchor::Middle,
        ));
    }
}

fn draw_axis_lines(sc: &mut Scene, f: &Frame) {
    sc.line((f.l, f.t), (f.l, f.b), AXIS, 1.0);
    sc.line((f.l, f.b), (f.r, f.b), AXIS, 1.0);
}

struct Decor<'a> {
    title: &'a str,
    x_label: &'a str,
    y_label: &'a str,
    /// Room reserved right of the plot (legend), 0 for none.
    right_w: f64,
}

/// Lays out and draws title, axes, gridlines, tick and axis labels for an
/// x/y plot; returns the plot area.
fn layout_xy(sc: &mut Scene, d: &Decor<'_>, xa: &Axis, ya: &Axis) -> Frame {
    let (x_label, y_label) = (clean_label(d.x_label), clean_label(d.y_label));
    let top = draw_title(sc, d.title);
    let l = left_edge(ya, &y_label);
    let mut b = H - MARGIN - (CAP + 1.0) * TICK_SIZE - 5.0 - TICK_LEN;
    if !x_label.is_empty() {
        b -= (CAP + 1.0) * LABEL_SIZE + 8.0;
    }
    let last_half = xa
        .ticks
        .last()
        .map(|(_, s)| text_width(s, TICK_SIZE) / 2.0)
        .unwrap_or(0.0);
    let r = W - MARGIN - d.right_w.max(last_half);
    let r = r.max(l + 40.0);
    let f = Frame {
        l: l.round() + 0.5,
        t: top.round() + 0.5,
        r: r.round() + 0.5,
        b: b.round() + 0.5,
    };
    draw_y_axis(sc, &f, ya, &y_label);
    draw_x_axis(sc, &f, xa, &x_label);
    draw_axis_lines(sc, &f);
    f
}

struct LegendItem {
    name: String,
    color: Rgb,
    marker: bool,
}

fn legend_width(items: &[LegendItem]) -> f64 {
    if items.is_empty() {
        return 0.0;
    }
    let tw = items
        .iter()
        .map(|i| {
            let n = truncate_to_width(&i.name, LABEL_SIZE, LEGEND_TEXT_MAX);
            text_width(&n, LABEL_SIZE)
        })
        .fold(0.0, f64::max);
    LEGEND_GAP + SWATCH + 6.0 + tw + 2.0
}

/// Legend outside the plot area, to its right.
fn draw_legend(sc: &mut Scene, items: &[LegendItem], f: &Frame) {
    let x0 = f.r + LEGEND_GAP;
    let row_h = (CAP + 1.0) * LABEL_SIZE + 8.0;
    let fit = (((f.b - f.t) / row_h).floor() as usize).max(1);
    let shown = if items.len() > fit {
        fit - 1
    } else {
        items.len()
    };
    for (k, it) in items.iter().take(shown).enumerate() {
        let cy = f.t + row_h * (k as f64 + 0.5);
        sc.line((x0, cy), (x0 + SWATCH, cy), it.color, LINE_W);
        if it.marker {
            let c = (x0 + SWATCH / 2.0, cy);
            sc.circle(c, MARKER_R, it.color, Some((WHITE, 1.0)));
        }
        let name = truncate_to_width(&it.name, LABEL_SIZE, LEGEND_TEXT_MAX);
        let ty = cy + CAP * LABEL_SIZE / 2.0;
        sc.text(TextSpec::new(
            x0 + SWATCH + 6.0,
            ty,
            name,
            LABEL_SIZE,
            Anchor::Start,
        ));
    }
    if shown < items.len() {
        let cy = f.t + row_h * (shown as f64 + 0.5) + CAP * LABEL_SIZE / 2.0;
        let more = format!("+{} more", items.len() - shown);
        sc.text(TextSpec::new(x0, cy, more, LABEL_SIZE, Anchor::Start).color(MUTED));
    }
}

/// Vertical error bar with caps.
fn error_bar(sc: &mut Scene, x: f64, y0: f64, y1: f64, cap: f64, color: Rgb) {
    if !(x.is_finite() && y0.is_finite() && y1.is_finite()) {
        return;
    }
    let w = 1.5;
    sc.line((x, y0), (x, y1), color, w);
    sc.line((x - cap, y0), (x + cap, y0), color, w);
    sc.line((x - cap, y1), (x + cap, y1), color, w);
}

/// Finite, ordered error interval.
fn err_bounds(err: Option<(f64, f64)>) -> Option<(f64, f64)> {
    let (a, b) = err?;
    if a.is_finite() && b.is_finite() {
        Some((a.min(b), a.max(b)))
    } else {
        None
    }
}

// ---------------------------------------------------------------------------
// Charts -> scenes
// ---------------------------------------------------------------------------

impl LineChart {
    fn scene(&self) -> Scene {
        let mut sc = Scene::new();
        let log = self.x_scale == Scale::Log10;
        let ok = |p: &Point| p.x.is_finite() && p.y.is_finite() && (!log || p.x > 0.0);
        let all = || {
            self.series
                .iter()
                .flat_map(|s| s.points.iter())
                .filter(|p| ok(p))
        };
        let xr = finite_range(all().map(|p| p.x));
        let yr = finite_range(all().flat_map(|p| {
            let (lo, hi) = err_bounds(p.y_err).unwrap_or((p.y, p.y));
            [p.y, lo, hi]
        }));
        let xa = if log {
            Axis::log10(xr)
        } else {
            Axis::linear(xr, 6)
        };
        let ya = Axis::linear(yr, 5);
        let items: Vec<LegendItem> = self
            .series
            .iter()
            .enumerate()
            .map(|(i, s)| LegendItem {
                name: clean_label(&s.name),
                color: series_color(i),
                marker: self.markers,
            })
            .collect();
        let decor = Decor {
            title: &self.title,
            x_label: &self.x_label,
            y_label: &self.y_label,
            right_w: legend_width(&items),
        };
        let f = layout_xy(&mut sc, &decor, &xa, &ya);
        if xr.is_none() {
            f.no_data(&mut sc);
        }
        for (i, s) in self.series.iter().enumerate() {
            let color = series_color(i);
            let px = |p: &Point| (f.x(&xa, p.x), f.y(&ya, p.y));
            for p in s.points.iter().filter(|p| ok(p)) {
                if let Some((lo, hi)) = err_bounds(p.y_err) {
                    let x = f.x(&xa, p.x);
                    error_bar(&mut sc, x, f.y(&ya, lo), f.y(&ya, hi), 4.0, color);
                }
            }
            let mut run: Vec<(f64, f64)> = Vec::new();
            let mut runs: Vec<Vec<(f64, f64)>> = Vec::new();
            for p in &s.points {
                if ok(p) {
                    run.push(px(p));
                } else if !run.is_empty() {
                    runs.push(std::mem::take(&mut run));
                }
            }
            if !run.is_empty() {
                runs.push(run);
            }
            for r in &runs {
                if r.len() >= 2 {
                    sc.polyline(r.clone(), color, LINE_W);
                }
            }
            for r in &runs {
                if self.markers || r.len() == 1 {
                    for &c in r {
                        sc.circle(c, MARKER_R, color, Some((WHITE, 1.0)));
                    }
                }
            }
        }
        draw_legend(&mut sc, &items, &f);
        sc
    }
}

impl BarChart {
    fn scene(&self) -> Scene {
        let mut sc = Scene::new();
        let vals = self.bars.iter().flat_map(|b| {
            let (lo, hi) = err_bounds(b.err).unwrap_or((b.value, b.value));
            [b.value, lo, hi]
        });
        let (mut lo, mut hi) = finite_range(vals.chain([0.0])).unwrap_or((0.0, 1.0));
        if hi - lo <= lo.abs().max(hi.abs()) * 1e-9 {
            hi = lo + 1.0;
        }
        // A little headroom for the value labels.
        let span = hi - lo;
        if hi > 0.0 {
            hi += span * 0.03;
        }
        if lo < 0.0 {
            lo -= span * 0.03;
        }
        let ya = Axis::linear(Some((lo, hi)), 5);
        let y_label = clean_label(&self.y_label);
        let top = draw_title(&mut sc, &self.title);
        let l = left_edge(&ya, &y_label).round() + 0.5;
        let r = (W - MARGIN - 6.0).round() + 0.5;
        let n = self.bars.len().max(1);
        let slot = (r - l) / n as f64;
        let labels: Vec<String> = self.bars.iter().map(|b| clean_label(&b.label)).collect();
        let widest = labels
            .iter()
            .map(|s| text_width(s, LABEL_SIZE))
            .fold(0.0, f64::max);
        let widest_small = widest / LABEL_SIZE * SMALL_SIZE;
        // Category labels: normal size if they fit under their bar, else
        // small, else small and vertical (reading upwards) when the slots are
        // at least one text line wide.
        let (cat_size, vertical) = if widest <= slot - 6.0 {
            (LABEL_SIZE, false)
        } else if widest_small <= slot - 4.0 || slot < (CAP + 1.0) * SMALL_SIZE + 2.0 {
            (SMALL_SIZE, false)
        } else {
            (SMALL_SIZE, true)
        };
        let cat_h = if vertical {
            widest_small.min(VERTICAL_LABEL_MAX)
        } else {
            (CAP + 1.0) * cat_size
        };
        let b = (H - MARGIN - cat_h - 6.0).round() + 0.5;
        let f = Frame {
            l,
            t: top.round() + 0.5,
            r,
            b,
        };
        draw_y_axis(&mut sc, &f, &ya, &y_label);
        if self.bars.is_empty() {
            f.no_data(&mut sc);
        }
        let y0 = f.y(&ya, 0.0).clamp(f.t, f.b);
        let bw = (slot * 0.62).clamp(1.0, 90.0);
        for (i, (bar, label)) in self.bars.iter().zip(&labels).enumerate() {
            let cx = l + (i as f64 + 0.5) * slot;
            let color = series_color(i);
            if vertical {
                let t = truncate_to_width(label, cat_size, VERTICAL_LABEL_MAX);
                let lx = cx + CAP * cat_size / 2.0;
                sc.text(TextSpec::new(lx, f.b + 6.0, t, cat_size, Anchor::End).vertical());
            } else {
                let t = truncate_to_width(label, cat_size, slot - 4.0);
                let ly = f.b + 6.0 + CAP * cat_size;
                sc.text(TextSpec::new(cx, ly, t, cat_size, Anchor::Middle));
            }
            if !bar.value.is_finite() {
                let ty = y0 - 5.0;
                sc.text(TextSpec::new(cx, ty, "n/a", SMALL_SIZE, Anchor::Middle).color(MUTED));
                continue;
            }
            let y = f.y(&ya, bar.value);
            sc.rect((cx - bw / 2.0, y.min(y0)), (bw, (y - y0).abs()), color);
            let (mut top_y, mut bot_y) = (y.min(y0), y.max(y0));
            if let Some((elo, ehi)) = err_bounds(bar.err) {
                let (ya_lo, ya_hi) = (f.y(&ya, elo), f.y(&ya, ehi));
                error_bar(&mut sc, cx, ya_lo, ya_hi, (bw * 0.2).max(3.0), ERR);
                top_y = top_y.min(ya_hi);
                bot_y = bot_y.max(ya_lo);
            }
            // Value labels only where they fit without touching the next one.
            let v = fmt_num(bar.value);
            if text_width(&v, SMALL_SIZE) <= slot - 3.0 {
                let vy = if bar.value >= 0.0 {
                    top_y - 5.0
                } else {
                    bot_y + 5.0 + CAP * SMALL_SIZE
                };
                sc.text(TextSpec::new(cx, vy, v, SMALL_SIZE, Anchor::Middle));
            }
        }
        let yz = crisp(y0);
        sc.line((f.l, yz), (f.r, yz), AXIS, 1.0);
        sc.line((f.l, f.t), (f.l, f.b), AXIS, 1.0);
        sc
    }
}

impl ScatterChart {
    fn scene(&self) -> Scene {
        let mut sc = Scene::new();
        let ok = |p: &Point| p.x.is_finite() && p.y.is_finite();
        let valid = || self.points.iter().filter(|(_, p)| ok(p));
        let xr = widen(finite_range(valid().map(|(_, p)| p.x)), 0.06);
        let yr = widen(
            finite_range(valid().flat_map(|(_, p)| {
                let (lo, hi) = err_bounds(p.y_err).unwrap_or((p.y, p.y));
                [p.y, lo, hi]
            })),
            0.06,
        );
        let (xa, ya) = (Axis::linear(xr, 6), Axis::linear(yr, 5));
        let decor = Decor {
            title: &self.title,
            x_label: &self.x_label,
            y_label: &self.y_label,
            right_w: 0.0,
        };
        let f = layout_xy(&mut sc, &decor, &xa, &ya);
        if xr.is_none() {
            f.no_data(&mut sc);
        }
        let r = 5.0;
        let mut placed: Vec<(f64, f64, f64, f64)> = Vec::new();
        let mut labels = Vec::new();
        for (i, (label, p)) in self.points.iter().enumerate() {
            if !ok(p) {
                continue;
            }
            let color = series_color(i);
            let (x, y) = (f.x(&xa, p.x), f.y(&ya, p.y));
            if let Some((lo, hi)) = err_bounds(p.y_err) {
                error_bar(&mut sc, x, f.y(&ya, lo), f.y(&ya, hi), 4.0, color);
            }
            sc.circle((x, y), r, color, Some((WHITE, 1.0)));
            placed.push((x - r, y - r, x + r, y + r));
            labels.push((i, clean_label(label), x, y));
        }
        for (_, label, x, y) in labels {
            let label = truncate_to_width(&label, LABEL_SIZE, 150.0);
            let t = place_label(&label, x, y, r + 4.0, &f, &placed);
            placed.push(t.bbox());
            sc.text(t);
        }
        sc
    }
}

/// Picks a spot for a point label: right, left, above or below the point,
/// the first that stays in the plot and overlaps no earlier label or point.
fn place_label(
    label: &str,
    x: f64,
    y: f64,
    gap: f64,
    f: &Frame,
    placed: &[(f64, f64, f64, f64)],
) -> TextSpec {
    let s = LABEL_SIZE;
    let mid = y + CAP * s / 2.0;
    let candidates = [
        TextSpec::new(x + gap, mid, label, s, Anchor::Start),
        TextSpec::new(x - gap, mid, label, s, Anchor::End),
        TextSpec::new(x, y - gap - 2.0, label, s, Anchor::Middle),
        TextSpec::new(x, y + gap + 2.0 + CAP * s, label, s, Anchor::Middle),
    ];
    let inside = |b: &(f64, f64, f64, f64)| b.0 >= f.l && b.2 <= f.r && b.1 >= f.t && b.3 <= f.b;
    let clear = |b: &(f64, f64, f64, f64)| {
        placed
            .iter()
            .all(|p| b.2 <= p.0 || b.0 >= p.2 || b.3 <= p.1 || b.1 >= p.3)
    };
    for c in &candidates {
        let b = c.bbox();
        if inside(&b) && clear(&b) {
            return c.clone();
        }
    }
    for c in &candidates {
        if inside(&c.bbox()) {
            return c.clone();
        }
    }
    candidates[0].clone()
}

// ---------------------------------------------------------------------------
// SVG
// ---------------------------------------------------------------------------

/// A coordinate with at most two decimals.
struct N(f64);

impl fmt::Display for N {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let v = if self.0.is_finite() {
            (self.0 * 100.0).round() / 100.0
        } else {
            0.0
        };
        if v.fract() == 0.0 && v.abs() < 1e15 {
            write!(f, "{}", v as i64)
        } else {
            f.write_str(&trim_zeros(format!("{v:.2}")))
        }
    }
}

/// XML-escapes text; also breaks up `://` so user text cannot look like a URL
/// in the file (it still renders as `://`).
fn xml_escape(s: &str) -> String {
    let mut o = String::with_capacity(s.len());
    for ch in s.chars() {
        match ch {
            '&' => o.push_str("&amp;"),
            '<' => o.push_str("&lt;"),
            '>' => o.push_str("&gt;"),
            '"' => o.push_str("&quot;"),
            '\'' => o.push_str("&apos;"),
            c if c.is_control() => o.push(' '),
            c => o.push(c),
        }
    }
    o.replace("://", ":&#47;/")
}

impl Scene {
    fn to_svg(&self, title: &str) -> String {
        let mut s = String::with_capacity(16 * 1024);
        // Writing to a String cannot fail.
        let _ = self.write_svg(&mut s, title);
        s
    }

    fn write_svg(&self, s: &mut String, title: &str) -> fmt::Result {
        writeln!(
            s,
            r##"<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" viewBox="0 0 {w} {h}" font-family="sans-serif">"##,
            w = self.w,
            h = self.h
        )?;
        let title = clean_label(title);
        if !title.is_empty() {
            writeln!(s, "<title>{}</title>", xml_escape(&title))?;
        }
        writeln!(
            s,
            r##"<rect width="{}" height="{}" fill="#ffffff"/>"##,
            self.w, self.h
        )?;
        for p in &self.prims {
            match p {
                Prim::Line { a, b, color, width } => writeln!(
                    s,
                    r#"<line x1="{}" y1="{}" x2="{}" y2="{}" stroke="{color}" stroke-width="{}" stroke-linecap="round"/>"#,
                    N(a.0),
                    N(a.1),
                    N(b.0),
                    N(b.1),
                    N(*width)
                )?,
                Prim::Polyline { pts, color, width } => {
                    s.push_str("<polyline points=\"");
                    for (k, (x, y)) in pts.iter().enumerate() {
                        if k > 0 {
                            s.push(' ');
                        }
                        write!(s, "{},{}", N(*x), N(*y))?;
                    }
                    writeln!(
                        s,
                        r#"" fill="none" stroke="{color}" stroke-width="{}" stroke-linejoin="round" stroke-linecap="round"/>"#,
                        N(*width)
                    )?;
                }
                Prim::Rect { x, y, w, h, fill } => writeln!(
                    s,
                    r#"<rect x="{}" y="{}" width="{}" height="{}" fill="{fill}"/>"#,
                    N(*x),
                    N(*y),
                    N(*w),
                    N(*h)
                )?,
                Prim::Circle { c, r, fill, stroke } => {
                    write!(
                        s,
                        r#"<circle cx="{}" cy="{}" r="{}" fill="{fill}""#,
                        N(c.0),
                        N(c.1),
                        N(*r)
                    )?;
                    if let Some((sc, sw)) = stroke {
                        write!(s, r#" stroke="{sc}" stroke-width="{}""#, N(*sw))?;
                    }
                    s.push_str("/>\n");
                }
                Prim::Text(t) => {
                    write!(
                        s,
                        r#"<text x="{}" y="{}" font-size="{}" fill="{}""#,
                        N(t.x),
                        N(t.y),
                        N(t.size * SVG_FONT_PX),
                        t.color
                    )?;
                    match t.anchor {
                        Anchor::Start => {}
                        Anchor::Middle => s.push_str(r#" text-anchor="middle""#),
                        Anchor::End => s.push_str(r#" text-anchor="end""#),
                    }
                    if t.bold {
                        s.push_str(r#" font-weight="bold""#);
                    }
                    if t.vertical {
                        write!(s, r#" transform="rotate(-90 {} {})""#, N(t.x), N(t.y))?;
                    }
                    writeln!(s, ">{}</text>", xml_escape(&t.text))?;
                }
            }
        }
        s.push_str("</svg>\n");
        Ok(())
    }
}

// ---------------------------------------------------------------------------
// Rasteriser
// ---------------------------------------------------------------------------

/// Supersampling factor of the raster canvas.
const SS: usize = 2;

/// An RGB8 canvas.
struct Canvas {
    w: usize,
    h: usize,
    px: Vec<u8>,
}

impl Canvas {
    fn new(w: usize, h: usize, bg: Rgb) -> Self {
        let px = [bg.0, bg.1, bg.2].repeat(w * h);
        Canvas { w, h, px }
    }

    /// Clamps a pixel-span `[a, b)` given in f64 to `[0, max]`.
    fn span(a: f64, b: f64, max: usize) -> (usize, usize) {
        let lo = a.max(0.0).min(max as f64);
        let hi = b.max(0.0).min(max as f64);
        (lo as usize, hi as usize)
    }

    fn fill_span(&mut self, y: usize, x0: usize, x1: usize, c: Rgb) {
        let row = y * self.w;
        for x in x0..x1 {
            let i = (row + x) * 3;
            self.px[i] = c.0;
            self.px[i + 1] = c.1;
            self.px[i + 2] = c.2;
        }
    }

    /// Fills pixels whose centres lie inside the rectangle.
    fn fill_rect(&mut self, x: f64, y: f64, w: f64, h: f64, c: Rgb) {
        if !(x.is_finite() && y.is_finite() && w.is_finite() && h.is_finite()) {
            return;
        }
        let (x0, x1) = Self::span((x - 0.5).ceil(), (x + w - 0.5).ceil(), self.w);
        let (y0, y1) = Self::span((y - 0.5).ceil(), (y + h - 0.5).ceil(), self.h);
        for yy in y0..y1 {
            self.fill_span(yy, x0, x1, c);
        }
    }

    /// A line segment `hw` pixels either side of its centre, round caps.
    fn capsule(&mut self, a: (f64, f64), b: (f64, f64), hw: f64, c: Rgb) {
        let (ax, ay, bx, by) = (a.0, a.1, b.0, b.1);
        if !(ax.is_finite() && ay.is_finite() && bx.is_finite() && by.is_finite()) {
            return;
        }
        let (x0, x1) = Self::span((ax.min(bx) - hw).floor(), (ax.max(bx) + hw).ceil(), self.w);
        let (y0, y1) = Self::span((ay.min(by) - hw).floor(), (ay.max(by) + hw).ceil(), self.h);
        let (dx, dy) = (bx - ax, by - ay);
        let len2 = dx * dx + dy * dy;
        let hw2 = hw * hw + 1e-9;
        for y in y0..y1 {
            let py = y as f64 + 0.5;
            let row = y * self.w;
            for x in x0..x1 {
                let px = x as f64 + 0.5;
                let t = if len2 > 0.0 {
                    (((px - ax) * dx + (py - ay) * dy) / len2).clamp(0.0, 1.0)
                } else {
                    0.0
                };
                let (qx, qy) = (ax + t * dx - px, ay + t * dy - py);
                if qx * qx + qy * qy <= hw2 {
                    let i = (row + x) * 3;
                    self.px[i] = c.0;
                    self.px[i + 1] = c.1;
                    self.px[i + 2] = c.2;
                }
            }
        }
    }

    fn disc(&mut self, c: (f64, f64), r: f64, col: Rgb) {
        if r > 0.0 {
            self.capsule(c, c, r, col);
        }
    }

    /// Bitmap text; `f` is the supersampling factor.
    fn text(&mut self, t: &TextSpec, f: usize) {
        let g = ((t.size * f as f64).round() as i64).max(1);
        let fi = f as i64;
        if !(t.x.is_finite() && t.y.is_finite()) {
            return;
        }
        let ox = (t.x.round() as i64) * fi;
        let oy = (t.y.round() as i64) * fi;
        let start = (t.start_offset().round() as i64) * fi;
        let passes = if t.bold { 2 } else { 1 };
        for (k, ch) in t.text.chars().enumerate() {
            let glyph = glyph_for(ch);
            for (row, bits) in glyph.iter().enumerate() {
                for col in 0..5i64 {
                    if bits & (0x10 >> col) == 0 {
                        continue;
                    }
                    let dy = (row as i64 - 7) * g;
                    for p in 0..passes {
                        let dx = start + (k as i64 * 6 + col) * g + p;
                        let (x0, y0) = if t.vertical {
                            (ox + dy, oy - dx - g)
                        } else {
                            (ox + dx, oy + dy)
                        };
                        self.fill_rect(x0 as f64, y0 as f64, g as f64, g as f64, t.color);
                    }
                }
            }
        }
    }

    /// Box-filter downsampling by `f` (anti-aliasing).
    fn downsample(&self, f: usize) -> Vec<u8> {
        let (w, h) = (self.w / f, self.h / f);
        let n = (f * f) as u32;
        let mut out = vec![0u8; w * h * 3];
        let mut sums = vec![0u32; w * 3];
        for y in 0..h {
            sums.fill(0);
            for sy in 0..f {
                let src = &self.px[(y * f + sy) * self.w * 3..][..w * f * 3];
                for (i, &v) in src.iter().enumerate() {
                    sums[(i / (3 * f)) * 3 + i % 3] += u32::from(v);
                }
            }
            for (o, &sum) in out[y * w * 3..(y + 1) * w * 3].iter_mut().zip(&sums) {
                *o = ((sum + n / 2) / n) as u8;
            }
        }
        out
    }
}

impl Scene {
    /// Renders to RGB8 pixels, `w * h * 3` bytes.
    fn rasterize(&self) -> Vec<u8> {
        let f = SS;
        let k = f as f64;
        let s = |p: &(f64, f64)| (p.0 * k, p.1 * k);
        let mut cv = Canvas::new(self.w as usize * f, self.h as usize * f, WHITE);
        for p in &self.prims {
            match p {
                Prim::Line { a, b, color, width } => {
                    cv.capsule(s(a), s(b), (width * k / 2.0).max(1.0), *color);
                }
                Prim::Polyline { pts, color, width } => {
                    let hw = (width * k / 2.0).max(1.0);
                    for seg in pts.windows(2) {
                        cv.capsule(s(&seg[0]), s(&seg[1]), hw, *color);
                    }
                    if pts.len() == 1 {
                        cv.disc(s(&pts[0]), hw, *color);
                    }
                }
                Prim::Rect { x, y, w, h, fill } => {
                    cv.fill_rect(x * k, y * k, w * k, h * k, *fill);
                }
                Prim::Circle { c, r, fill, stroke } => match stroke {
                    Some((sc, sw)) => {
                        cv.disc(s(c), (r + sw / 2.0) * k, *sc);
                        cv.disc(s(c), (r - sw / 2.0) * k, *fill);
                    }
                    None => cv.disc(s(c), r * k, *fill),
                },
                Prim::Text(t) => cv.text(t, f),
            }
        }
        cv.downsample(f)
    }
}

// ---------------------------------------------------------------------------
// Bitmap font: 5x7 glyphs in an 8-row cell (row 7 holds descenders), one byte
// per row, bit 4 is the leftmost column. Printable ASCII 32..=126.
// ---------------------------------------------------------------------------

#[rustfmt::skip]
const FONT: [[u8; 8]; 95] = [
    [0b00000, 0b00000, 0b00000, 0b00000, 0b00000, 0b00000, 0b00000, 0b00000], // ' '
    [0b00100, 0b00100, 0b00100, 0b00100, 0b00100, 0b00000, 0b00100, 0b00000], // !
    [0b01010, 0b01010, 0b01010, 0b00000, 0b00000, 0b00000, 0b00000, 0b00000], // "
    [0b01010, 0b01010, 0b11111, 0b01010, 0b11111, 0b01010, 0b01010, 0b00000], // #
    [0b00100, 0b01111, 0b10100, 0b01110, 0b00101, 0b11110, 0b00100, 0b00000], // $
    [0b11000, 0b11001, 0b00010, 0b00100, 0b01000, 0b10011, 0b00011, 0b00000], // %
    [0b01100, 0b10010, 0b10100, 0b01000, 0b10101, 0b10010, 0b01101, 0b00000], // &
    [0b00100, 0b00100, 0b01000, 0b00000, 0b00000, 0b00000, 0b00000, 0b00000], // '
    [0b00010, 0b00100, 0b01000, 0b01000, 0b01000, 0b00100, 0b00010, 0b00000], // (
    [0b01000, 0b00100, 0b00010, 0b00010, 0b00010, 0b00100, 0b01000, 0b00000], // )
    [0b00000, 0b00100, 0b10101, 0b01110, 0b10101, 0b00100, 0b00000, 0b00000], // *
    [0b00000, 0b00100, 0b00100, 0b11111, 0b00100, 0b00100, 0b00000, 0b00000], // +
    [0b00000, 0b00000, 0b00000, 0b00000, 0b00000, 0b01100, 0b00100, 0b01000], // ,
    [0b00000, 0b00000, 0b00000, 0b11111, 0b00000, 0b00000, 0b00000, 0b00000], // -
    [0b00000, 0b00000, 0b00000, 0b00000, 0b00000, 0b01100, 0b01100, 0b00000], // .
    [0b00000, 0b00001, 0b00010, 0b00100, 0b01000, 0b10000, 0b00000, 0b00000], // /
    [0b01110, 0b10001, 0b10011, 0b10101, 0b11001, 0b10001, 0b01110, 0b00000], // 0
    [0b00100, 0b01100, 0b00100, 0b00100, 0b00100, 0b00100, 0b01110, 0b00000], // 1
    [0b01110, 0b10001, 0b00001, 0b00010, 0b00100, 0b01000, 0b11111, 0b00000], // 2
    [0b11111, 0b00010, 0b00100, 0b00010, 0b00001, 0b10001, 0b01110, 0b00000], // 3
    [0b00010, 0b00110, 0b01010, 0b10010, 0b11111, 0b00010, 0b00010, 0b00000], // 4
    [0b11111, 0b10000, 0b11110, 0b00001, 0b00001, 0b10001, 0b01110, 0b00000], // 5
    [0b00110, 0b01000, 0b10000, 0b11110, 0b10001, 0b10001, 0b01110, 0b00000], // 6
    [0b11111, 0b00001, 0b00010, 0b00100, 0b01000, 0b01000, 0b01000, 0b00000], // 7
    [0b01110, 0b10001, 0b10001, 0b01110, 0b10001, 0b10001, 0b01110, 0b00000], // 8
    [0b01110, 0b10001, 0b10001, 0b01111, 0b00001, 0b00010, 0b01100, 0b00000], // 9
    [0b00000, 0b01100, 0b01100, 0b00000, 0b01100, 0b01100, 0b00000, 0b00000], // :
    [0b00000, 0b01100, 0b01100, 0b00000, 0b01100, 0b00100, 0b01000, 0b00000], // ;
    [0b00010, 0b00100, 0b01000, 0b10000, 0b01000, 0b00100, 0b00010, 0b00000], // <
    [0b00000, 0b00000, 0b11111, 0b00000, 0b11111, 0b00000, 0b00000, 0b00000], // =
    [0b01000, 0b00100, 0b00010, 0b00001, 0b00010, 0b00100, 0b01000, 0b00000], // >
    [0b01110, 0b10001, 0b00001, 0b00010, 0b00100, 0b00000, 0b00100, 0b00000], // ?
    [0b01110, 0b10001, 0b00001, 0b01101, 0b10101, 0b10101, 0b01110, 0b00000], // @
    [0b01110, 0b10001, 0b10001, 0b10001, 0b11111, 0b10001, 0b10001, 0b00000], // A
    [0b11110, 0b10001, 0b10001, 0b11110, 0b10001, 0b10001, 0b11110, 0b00000], // B
    [0b01110, 0b10001, 0b10000, 0b10000, 0b10000, 0b10001, 0b01110, 0b00000], // C
    [0b11100, 0b10010, 0b10001, 0b10001, 0b10001, 0b10010, 0b11100, 0b00000], // D
    [0b11111, 0b10000, 0b10000, 0b11110, 0b10000, 0b10000, 0b11111, 0b00000], // E
    [0b11111, 0b10000, 0b10000, 0b11110, 0b10000, 0b10000, 0b10000, 0b00000], // F
    [0b01110, 0b10001, 0b10000, 0b10111, 0b10001, 0b10001, 0b01111, 0b00000], // G
    [0b10001, 0b10001, 0b10001, 0b11111, 0b10001, 0b10001, 0b10001, 0b00000], // H
    [0b01110, 0b00100, 0b00100, 0b00100, 0b00100, 0b00100, 0b01110, 0b00000], // I
    [0b00111, 0b00010, 0b00010, 0b00010, 0b00010, 0b10010, 0b01100, 0b00000], // J
    [0b10001, 0b10010, 0b10100, 0b11000, 0b10100, 0b10010, 0b10001, 0b00000], // K
    [0b10000, 0b10000, 0b10000, 0b10000, 0b10000, 0b10000, 0b11111, 0b00000], // L
    [0b10001, 0b11011, 0b10101, 0b10101, 0b10001, 0b10001, 0b10001, 0b00000], // M
    [0b10001, 0b10001, 0b11001, 0b10101, 0b10011, 0b10001, 0b10001, 0b00000], // N
    [0b01110, 0b10001, 0b10001, 0b10001, 0b10001, 0b10001, 0b01110, 0b00000], // O
    [0b11110, 0b10001, 0b10001, 0b11110, 0b10000, 0b10000, 0b10000, 0b00000], // P
    [0b01110, 0b10001, 0b10001, 0b10001, 0b10101, 0b10010, 0b01101, 0b00000], // Q
    [0b11110, 0b10001, 0b10001, 0b11110, 0b10100, 0b10010, 0b10001, 0b00000], // R
    [0b01111, 0b10000, 0b10000, 0b01110, 0b00001, 0b00001, 0b11110, 0b00000], // S
    [0b11111, 0b00100, 0b00100, 0b00100, 0b00100, 0b00100, 0b00100, 0b00000], // T
    [0b10001, 0b10001, 0b10001, 0b10001, 0b10001, 0b10001, 0b01110, 0b00000], // U
    [0b10001, 0b10001, 0b10001, 0b10001, 0b10001, 0b01010, 0b00100, 0b00000], // V
    [0b10001, 0b10001, 0b10001, 0b10101, 0b10101, 0b10101, 0b01010, 0b00000], // W
    [0b10001, 0b10001, 0b01010, 0b00100, 0b01010, 0b10001, 0b10001, 0b00000], // X
    [0b10001, 0b10001, 0b10001, 0b01010, 0b00100, 0b00100, 0b00100, 0b00000], // Y
    [0b11111, 0b00001, 0b00010, 0b00100, 0b01000, 0b10000, 0b11111, 0b00000], // Z
    [0b01110, 0b01000, 0b01000, 0b01000, 0b01000, 0b01000, 0b01110, 0b00000], // [
    [0b00000, 0b10000, 0b01000, 0b00100, 0b00010, 0b00001, 0b00000, 0b00000], // backslash
    [0b01110, 0b00010, 0b00010, 0b00010, 0b00010, 0b00010, 0b01110, 0b00000], // ]
    [0b00100, 0b01010, 0b10001, 0b00000, 0b00000, 0b00000, 0b00000, 0b00000], // ^
    [0b00000, 0b00000, 0b00000, 0b00000, 0b00000, 0b00000, 0b00000, 0b11111], // _
    [0b01000, 0b00100, 0b00010, 0b00000, 0b00000, 0b00000, 0b00000, 0b00000], // `
    [0b00000, 0b00000, 0b01110, 0b00001, 0b01111, 0b10001, 0b01111, 0b00000], // a
    [0b10000, 0b10000, 0b10110, 0b11001, 0b10001, 0b10001, 0b11110, 0b00000], // b
    [0b00000, 0b00000, 0b01110, 0b10000, 0b10000, 0b10001, 0b01110, 0b00000], // c
    [0b00001, 0b00001, 0b01101, 0b10011, 0b10001, 0b10001, 0b01111, 0b00000], // d
    [0b00000, 0b00000, 0b01110, 0b10001, 0b11111, 0b10000, 0b01110, 0b00000], // e
    [0b00110, 0b01001, 0b01000, 0b11100, 0b01000, 0b01000, 0b01000, 0b00000], // f
    [0b00000, 0b00000, 0b01111, 0b10001, 0b10001, 0b01111, 0b00001, 0b01110], // g
    [0b10000, 0b10000, 0b10110, 0b11001, 0b10001, 0b10001, 0b10001, 0b00000], // h
    [0b00100, 0b00000, 0b01100, 0b00100, 0b00100, 0b00100, 0b01110, 0b00000], // i
    [0b00010, 0b00000, 0b00110, 0b00010, 0b00010, 0b00010, 0b10010, 0b01100], // j
    [0b10000, 0b10000, 0b10010, 0b10100, 0b11000, 0b10100, 0b10010, 0b00000], // k
    [0b01100, 0b00100, 0b00100, 0b00100, 0b00100, 0b00100, 0b01110, 0b00000], // l
    [0b00000, 0b00000, 0b11010, 0b10101, 0b10101, 0b10001, 0b10001, 0b00000], // m
    [0b00000, 0b00000, 0b10110, 0b11001, 0b10001, 0b10001, 0b10001, 0b00000], // n
    [0b00000, 0b00000, 0b01110, 0b10001, 0b10001, 0b10001, 0b01110, 0b00000], // o
    [0b00000, 0b00000, 0b11110, 0b10001, 0b10001, 0b11110, 0b10000, 0b10000], // p
    [0b00000, 0b00000, 0b01111, 0b10001, 0b10001, 0b01111, 0b00001, 0b00001], // q
    [0b00000, 0b00000, 0b10110, 0b11001, 0b10000, 0b10000, 0b10000, 0b00000], // r
    [0b00000, 0b00000, 0b01111, 0b10000, 0b01110, 0b00001, 0b11110, 0b00000], // s
    [0b01000, 0b01000, 0b11100, 0b01000, 0b01000, 0b01001, 0b00110, 0b00000], // t
    [0b00000, 0b00000, 0b10001, 0b10001, 0b10001, 0b10011, 0b01101, 0b00000], // u
    [0b00000, 0b00000, 0b10001, 0b10001, 0b10001, 0b01010, 0b00100, 0b00000], // v
    [0b00000, 0b00000, 0b10001, 0b10001, 0b10101, 0b10101, 0b01010, 0b00000], // w
    [0b00000, 0b00000, 0b10001, 0b01010, 0b00100, 0b01010, 0b10001, 0b00000], // x
    [0b00000, 0b00000, 0b10001, 0b10001, 0b10001, 0b01111, 0b00001, 0b01110], // y
    [0b00000, 0b00000, 0b11111, 0b00010, 0b00100, 0b01000, 0b11111, 0b00000], // z
    [0b00010, 0b00100, 0b00100, 0b01000, 0b00100, 0b00100, 0b00010, 0b00000], // {
    [0b00100, 0b00100, 0b00100, 0b00100, 0b00100, 0b00100, 0b00100, 0b00000], // |
    [0b01000, 0b00100, 0b00100, 0b00010, 0b00100, 0b00100, 0b01000, 0b00000], // }
    [0b00000, 0b00000, 0b01000, 0b10101, 0b00010, 0b00000, 0b00000, 0b00000], // ~
];

#[rustfmt::skip]
const EXTRA_GLYPHS: [(char, [u8; 8]); 6] = [
    ('\u{2026}', [0b00000, 0b00000, 0b00000, 0b00000, 0b00000, 0b00000, 0b10101, 0b00000]), // ellipsis
    ('\u{b1}',   [0b00100, 0b00100, 0b11111, 0b00100, 0b00100, 0b00000, 0b11111, 0b00000]), // plus-minus
    ('\u{b7}',   [0b00000, 0b00000, 0b00000, 0b01100, 0b01100, 0b00000, 0b00000, 0b00000]), // middle dot
    ('\u{b0}',   [0b01100, 0b10010, 0b10010, 0b01100, 0b00000, 0b00000, 0b00000, 0b00000]), // degree
    ('\u{3bc}',  [0b00000, 0b00000, 0b10001, 0b10001, 0b10001, 0b11110, 0b10000, 0b10000]), // mu
    ('\u{d7}',   [0b00000, 0b10001, 0b01010, 0b00100, 0b01010, 0b10001, 0b00000, 0b00000]), // times
];

/// The glyph for `ch`; characters without one are drawn as '?'.
fn glyph_for(ch: char) -> [u8; 8] {
    let ascii = |c: char| FONT[(c as usize) - 32];
    let c = ch as u32;
    if (32..=126).contains(&c) {
        return ascii(ch);
    }
    let ch = match ch {
        '\u{b5}' => '\u{3bc}',
        '\u{a0}' | '\u{2009}' | '\u{202f}' => ' ',
        '\u{2212}' | '\u{2010}' | '\u{2013}' | '\u{2014}' => '-',
        '\u{2022}' | '\u{2219}' => '\u{b7}',
        '\u{b2}' | '\u{2082}' => '2',
        '\u{b9}' | '\u{2081}' => '1',
        '\u{b3}' | '\u{2083}' => '3',
        '\u{2018}' | '\u{2019}' => '\'',
        '\u{201c}' | '\u{201d}' => '"',
        other => other,
    };
    if (ch as u32) < 127 && (ch as u32) >= 32 {
        return ascii(ch);
    }
    EXTRA_GLYPHS
        .iter()
        .find(|(c, _)| *c == ch)
        .map(|(_, g)| *g)
        .unwrap_or_else(|| ascii('?'))
}

// ---------------------------------------------------------------------------
// Checksums
// ---------------------------------------------------------------------------

const fn crc_table() -> [u32; 256] {
    let mut table = [0u32; 256];
    let mut i = 0;
    while i < 256 {
        let mut c = i as u32;
        let mut k = 0;
        while k < 8 {
            c = if c & 1 != 0 {
                0xEDB8_8320 ^ (c >> 1)
            } else {
                c >> 1
            };
            k += 1;
        }
        table[i] = c;
        i += 1;
    }
    table
}

static CRC_TABLE: [u32; 256] = crc_table();

/// Feeds `data` into a running CRC-32 register (start at 0xFFFF_FFFF, finish
/// by inverting).
fn crc32_update(mut c: u32, data: &[u8]) -> u32 {
    for &b in data {
        c = CRC_TABLE[((c ^ u32::from(b)) & 0xFF) as usize] ^ (c >> 8);
    }
    c
}

/// CRC-32 (ISO-HDLC, as used by PNG and zip).
fn crc32(data: &[u8]) -> u32 {
    crc32_update(0xFFFF_FFFF, data) ^ 0xFFFF_FFFF
}

/// Adler-32 (zlib trailer).
fn adler32(data: &[u8]) -> u32 {
    const MOD: u32 = 65_521;
    let (mut a, mut b) = (1u32, 0u32);
    for chunk in data.chunks(5552) {
        for &x in chunk {
            a += u32::from(x);
            b += a;
        }
        a %= MOD;
        b %= MOD;
    }
    (b << 16) | a
}

// ---------------------------------------------------------------------------
// DEFLATE (RFC 1951): fixed-Huffman blocks with LZ77, or stored blocks
// ---------------------------------------------------------------------------

const LENGTH_BASE: [u16; 29] = [
    3, 4, 5, 6, 7, 8, 9, 10, 11, 13, 15, 17, 19, 23, 27, 31, 35, 43, 51, 59, 67, 83, 99, 115, 131,
    163, 195, 227, 258,
];
const LENGTH_EXTRA: [u8; 29] = [
    0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 2, 2, 2, 2, 3, 3, 3, 3, 4, 4, 4, 4, 5, 5, 5, 5, 0,
];
const DIST_BASE: [u16; 30] = [
    1, 2, 3, 4, 5, 7, 9, 13, 17, 25, 33, 49, 65, 97, 129, 193, 257, 385, 513, 769, 1025, 1537,
    2049, 3073, 4097, 6145, 8193, 12289, 16385, 24577,
];
const DIST_EXTRA: [u8; 30] = [
    0, 0, 0, 0, 1, 1, 2, 2, 3, 3, 4, 4, 5, 5, 6, 6, 7, 7, 8, 8, 9, 9, 10, 10, 11, 11, 12, 12, 13,
    13,
];

const WINDOW: usize = 32_768;
const HASH_BITS: u32 = 15;
const MAX_CHAIN: usize = 48;
const MIN_MATCH: usize = 3;
const MAX_MATCH: usize = 258;

/// LSB-first bit packer.
struct BitWriter {
    out: Vec<u8>,
    acc: u64,
    n: u32,
}

impl BitWriter {
    fn new() -> Self {
        BitWriter {
            out: Vec::new(),
            acc: 0,
            n: 0,
        }
    }

    fn put(&mut self, value: u32, bits: u32) {
        self.acc |= u64::from(value) << self.n;
        self.n += bits;
        while self.n >= 8 {
            self.out.push(self.acc as u8);
            self.acc >>= 8;
            self.n -= 8;
        }
    }

    /// A Huffman code, which DEFLATE stores most significant bit first.
    fn put_code(&mut self, code: u32, len: u32) {
        self.put(code.reverse_bits() >> (32 - len), len);
    }

    fn finish(mut self) -> Vec<u8> {
        if self.n > 0 {
            self.out.push(self.acc as u8);
        }
        self.out
    }
}

/// Literal/length symbol in the fixed Huffman code.
fn put_fixed_sym(bw: &mut BitWriter, sym: u32) {
    let (code, len) = match sym {
        0..=143 => (0x30 + sym, 8),
        144..=255 => (0x190 + sym - 144, 9),
        256..=279 => (sym - 256, 7),
        _ => (0xC0 + sym - 280, 8),
    };
    bw.put_code(code, len);
}

/// Index of the last entry of `base` not above `v`.
fn code_index(base: &[u16], v: usize) -> usize {
    base.iter().rposition(|&b| usize::from(b) <= v).unwrap_or(0)
}

fn put_match(bw: &mut BitWriter, len: usize, dist: usize) {
    let li = code_index(&LENGTH_BASE, len);
    put_fixed_sym(bw, 257 + li as u32);
    if LENGTH_EXTRA[li] > 0 {
        let extra = (len - usize::from(LENGTH_BASE[li])) as u32;
        bw.put(extra, u32::from(LENGTH_EXTRA[li]));
    }
    let di = code_index(&DIST_BASE, dist);
    bw.put_code(di as u32, 5);
    if DIST_EXTRA[di] > 0 {
        let extra = (dist - usize::from(DIST_BASE[di])) as u32;
        bw.put(extra, u32::from(DIST_EXTRA[di]));
    }
}

fn hash3(d: &[u8]) -> usize {
    let v = (u32::from(d[0]) << 16) | (u32::from(d[1]) << 8) | u32::from(d[2]);
    (v.wrapping_mul(0x9E37_79B1) >> (32 - HASH_BITS)) as usize
}

/// One final fixed-Huffman block, greedy LZ77 over hash chains.
fn deflate_fixed(data: &[u8]) -> Vec<u8> {
    let mut bw = BitWriter::new();
    bw.put(1, 1); // BFINAL
    bw.put(1, 2); // BTYPE = 01, fixed Huffman
    let n = data.len();
    let mut head = vec![usize::MAX; 1 << HASH_BITS];
    let mut prev = vec![usize::MAX; WINDOW];
    let insert = |pos: usize, head: &mut [usize], prev: &mut [usize]| {
        if pos + MIN_MATCH <= n {
            let h = hash3(&data[pos..]);
            prev[pos % WINDOW] = head[h];
            head[h] = pos;
        }
    };
    let mut pos = 0;
    while pos < n {
        let mut best = (0usize, 0usize);
        if pos + MIN_MATCH <= n {
            let max = (n - pos).min(MAX_MATCH);
            let mut cand = head[hash3(&data[pos..])];
            let mut tries = 0;
            while cand != usize::MAX && cand < pos && pos - cand <= WINDOW && tries < MAX_CHAIN {
                if data[cand + best.0.min(max - 1)] == data[pos + best.0.min(max - 1)] {
                    let l = data[cand..cand + max]
                        .iter()
                        .zip(&data[pos..pos + max])
                        .take_while(|(a, b)| a == b)
                        .count();
                    if l > best.0 {
                        best = (l, pos - cand);
                        if l == max {
                            break;
                        }
                    }
                }
                let next = prev[cand % WINDOW];
                if next == usize::MAX || next >= cand {
                    break;
                }
                cand = next;
                tries += 1;
            }
        }
        if best.0 >= MIN_MATCH {
            put_match(&mut bw, best.0, best.1);
            for p in pos..pos + best.0 {
                insert(p, &mut head, &mut prev);
            }
            pos += best.0;
        } else {
            put_fixed_sym(&mut bw, u32::from(data[pos]));
            insert(pos, &mut head, &mut prev);
            pos += 1;
        }
    }
    put_fixed_sym(&mut bw, 256);
    bw.finish()
}

/// Uncompressed (stored) blocks of at most 65535 bytes.
fn deflate_stored(data: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(data.len() + data.len() / 65_535 * 5 + 5);
    let mut chunks = data.chunks(65_535).peekable();
    if chunks.peek().is_none() {
        return vec![0x01, 0x00, 0x00, 0xFF, 0xFF];
    }
    while let Some(c) = chunks.next() {
        let last = chunks.peek().is_none();
        out.push(u8::from(last));
        let len = c.len() as u16;
        out.extend_from_slice(&len.to_le_bytes());
        out.extend_from_slice(&(!len).to_le_bytes());
        out.extend_from_slice(c);
    }
    out
}

/// Raw DEFLATE stream: fixed Huffman, unless storing is smaller.
fn deflate(data: &[u8]) -> Vec<u8> {
    let fixed = deflate_fixed(data);
    let stored_len = data.len() + data.len().div_ceil(65_535).max(1) * 5;
    if fixed.len() <= stored_len {
        fixed
    } else {
        deflate_stored(data)
    }
}

/// zlib stream (RFC 1950) around [`deflate`].
fn zlib_compress(data: &[u8]) -> Vec<u8> {
    let mut out = vec![0x78, 0x01];
    out.extend(deflate(data));
    out.extend_from_slice(&adler32(data).to_be_bytes());
    out
}

// ---------------------------------------------------------------------------
// PNG
// ---------------------------------------------------------------------------

const PNG_SIGNATURE: [u8; 8] = [0x89, b'P', b'N', b'G', 0x0D, 0x0A, 0x1A, 0x0A];

fn png_chunk(out: &mut Vec<u8>, kind: &[u8; 4], data: &[u8]) {
    out.extend_from_slice(&(data.len() as u32).to_be_bytes());
    let start = out.len();
    out.extend_from_slice(kind);
    out.extend_from_slice(data);
    // The CRC covers the chunk type and data, not the length.
    let crc = crc32(&out[start..]);
    out.extend_from_slice(&crc.to_be_bytes());
}

fn paeth(a: u8, b: u8, c: u8) -> u8 {
    let p = i16::from(a) + i16::from(b) - i16::from(c);
    let (pa, pb, pc) = (
        (p - i16::from(a)).abs(),
        (p - i16::from(b)).abs(),
        (p - i16::from(c)).abs(),
    );
    if pa <= pb && pa <= pc {
        a
    } else if pb <= pc {
        b
    } else {
        c
    }
}

/// Applies PNG filter `kind` (0..=4) to `row` given the previous row (same
/// length as `row` and `out`); returns the sum of absolute signed residuals.
fn filter_row(kind: u8, row: &[u8], prev: &[u8], out: &mut [u8]) -> u64 {
    const BPP: usize = 3;
    let mut score = 0u64;
    for (i, (o, (&x, &b))) in out.iter_mut().zip(row.iter().zip(prev)).enumerate() {
        let (a, c) = if i >= BPP {
            (row[i - BPP], prev[i - BPP])
        } else {
            (0, 0)
        };
        let pred = match kind {
            0 => 0,
            1 => a,
            2 => b,
            3 => ((u16::from(a) + u16::from(b)) / 2) as u8,
            _ => paeth(a, b, c),
        };
        *o = x.wrapping_sub(pred);
        score += u64::from((*o as i8).unsigned_abs());
    }
    score
}

/// Encodes RGB8 pixels (`w * h * 3` bytes, rows top to bottom) as a PNG,
/// choosing each row's filter by the minimum sum of absolute differences.
fn encode_png(w: u32, h: u32, rgb: &[u8]) -> Vec<u8> {
    let stride = w as usize * 3;
    let rows = h as usize;
    let mut raw = Vec::with_capacity((stride + 1) * rows);
    let zero = vec![0u8; stride];
    let mut buf = vec![0u8; stride];
    let mut best = vec![0u8; stride];
    for y in 0..rows {
        let row = rgb.get(y * stride..(y + 1) * stride).unwrap_or(&zero);
        let prev = if y > 0 {
            rgb.get((y - 1) * stride..y * stride).unwrap_or(&zero)
        } else {
            &zero
        };
        let mut best_kind = 0u8;
        let mut best_score = u64::MAX;
        // A row equal to the one above is all zeros under Up: nothing beats it.
        let kinds: &[u8] = if y > 0 && row == prev {
            &[2]
        } else {
            &[0, 1, 2, 3, 4]
        };
        for &kind in kinds {
            let score = filter_row(kind, row, prev, &mut buf);
            if score < best_score {
                best_score = score;
                best_kind = kind;
                std::mem::swap(&mut best, &mut buf);
            }
        }
        raw.push(best_kind);
        raw.extend_from_slice(&best);
    }
    let mut ihdr = Vec::with_capacity(13);
    ihdr.extend_from_slice(&w.to_be_bytes());
    ihdr.extend_from_slice(&h.to_be_bytes());
    ihdr.extend_from_slice(&[8, 2, 0, 0, 0]); // 8-bit RGB, deflate, no interlace
    let mut out = PNG_SIGNATURE.to_vec();
    png_chunk(&mut out, b"IHDR", &ihdr);
    png_chunk(&mut out, b"IDAT", &zlib_compress(&raw));
    png_chunk(&mut out, b"IEND", &[]);
    out
}

// ---------------------------------------------------------------------------
// Tests
// ---------------------------------------------------------------------------

#[cfg(test)]
mod tests {
    use super::*;

    fn approx(a: &[f64], b: &[f64]) -> bool {
        a.len() == b.len()
            && a.iter()
                .zip(b)
                .all(|(x, y)| (x - y).abs() <= 1e-9 * x.abs().max(y.abs()).max(1e-12))
    }

    // --- a small inflate (stored and fixed-Huffman blocks) ---------------

    struct BitReader<'a> {
        data: &'a [u8],
        bit: usize,
    }

    impl BitReader<'_> {
        fn bit(&mut self) -> Result<u32, String> {
            let byte = *self.data.get(self.bit / 8).ok_or("unexpected end")?;
            let v = (byte >> (self.bit % 8)) & 1;
            self.bit += 1;
            Ok(u32::from(v))
        }

        fn bits(&mut self, n: u32) -> Result<u32, String> {
            let mut v = 0;
            for i in 0..n {
                v |= self.bit()? << i;
            }
            Ok(v)
        }

        fn fixed_sym(&mut self) -> Result<u32, String> {
            let mut code = 0;
            for _ in 0..7 {
                code = (code << 1) | self.bit()?;
            }
            if code <= 23 {
                return Ok(256 + code);
            }
            code = (code << 1) | self.bit()?;
            if (0x30..=0xBF).contains(&code) {
                return Ok(code - 0x30);
            }
            if (0xC0..=0xC7).contains(&code) {
                return Ok(280 + code - 0xC0);
            }
            code = (code << 1) | self.bit()?;
            if (0x190..=0x1FF).contains(&code) {
                return Ok(144 + code - 0x190);
            }
            Err(format!("bad code {code:#x}"))
        }
    }

    fn inflate(data: &[u8]) -> Result<Vec<u8>, String> {
        let mut br = BitReader { data, bit: 0 };
        let mut out = Vec::new();
        loop {
            let last = br.bit()? == 1;
            match br.bits(2)? {
                0 => {
                    br.bit = br.bit.div_ceil(8) * 8;
                    let len = br.bits(16)?;
                    let nlen = br.bits(16)?;
                    if len != (!nlen & 0xFFFF) {
                        return Err("stored length check".into());
                    }
                    for _ in 0..len {
                        out.push(br.bits(8)? as u8);
                    }
                }
                1 => loop {
                    let sym = br.fixed_sym()?;
                    if sym < 256 {
                        out.push(sym as u8);
                        continue;
                    }
                    if sym == 256 {
                        break;
                    }
                    let li = (sym - 257) as usize;
                    if li >= 29 {
                        return Err("bad length symbol".into());
                    }
                    let len = usize::from(LENGTH_BASE[li])
                        + br.bits(u32::from(LENGTH_EXTRA[li]))? as usize;
                    let mut di = 0;
                    for _ in 0..5 {
                        di = (di << 1) | br.bit()?;
                    }
                    let di = di as usize;
                    if di >= 30 {
                        return Err("bad distance symbol".into());
                    }
                    let dist =
                        usize::from(DIST_BASE[di]) + br.bits(u32::from(DIST_EXTRA[di]))? as usize;
                    if dist > out.len() {
                        return Err("distance too far".into());
                    }
                    for _ in 0..len {
                        out.push(out[out.len() - dist]);
                    }
                },
                t => return Err(format!("unsupported block type {t}")),
            }
            if last {
                return Ok(out);
            }
        }
    }

    fn zlib_decompress(z: &[u8]) -> Result<Vec<u8>, String> {
        if z.len() < 6 {
            return Err("short".into());
        }
        if (u32::from(z[0]) * 256 + u32::from(z[1])) % 31 != 0 || z[0] & 0x0F != 8 {
            return Err("bad zlib header".into());
        }
        let body = inflate(&z[2..z.len() - 4])?;
        let want = u32::from_be_bytes(z[z.len() - 4..].try_into().unwrap());
        if adler32(&body) != want {
            return Err("adler mismatch".into());
        }
        Ok(body)
    }

    struct Png {
        w: usize,
        h: usize,
        rgb: Vec<u8>,
    }

    /// Checks signature, chunk order and CRCs; inflates and unfilters.
    fn decode_png(png: &[u8]) -> Png {
        assert_eq!(&png[..8], &PNG_SIGNATURE);
        let mut i = 8;
        let mut kinds = Vec::new();
        let (mut w, mut h) = (0, 0);
        let mut idat = Vec::new();
        while i < png.len() {
            let len = u32::from_be_bytes(png[i..i + 4].try_into().unwrap()) as usize;
            let kind = &png[i + 4..i + 8];
            let data = &png[i + 8..i + 8 + len];
            let crc = u32::from_be_bytes(png[i + 8 + len..i + 12 + len].try_into().unwrap());
            assert_eq!(crc32(&png[i + 4..i + 8 + len]), crc, "chunk CRC");
            match kind {
                b"IHDR" => {
                    assert_eq!(len, 13);
                    w = u32::from_be_bytes(data[0..4].try_into().unwrap()) as usize;
                    h = u32::from_be_bytes(data[4..8].try_into().unwrap()) as usize;
                    assert_eq!(&data[8..13], &[8, 2, 0, 0, 0]);
                }
                b"IDAT" => idat.extend_from_slice(data),
                _ => {}
            }
            kinds.push(String::from_utf8_lossy(kind).to_string());
            i += 12 + len;
        }
        assert_eq!(i, png.len());
        assert_eq!(kinds.first().map(String::as_str), Some("IHDR"));
        assert_eq!(kinds.last().map(String::as_str), Some("IEND"));
        let raw = zlib_decompress(&idat).expect("IDAT inflates");
        let stride = w * 3;
        assert_eq!(raw.len(), h * (1 + stride));
        let mut rgb = vec![0u8; w * h * 3];
        for y in 0..h {
            let kind = raw[y * (stride + 1)];
            let src = &raw[y * (stride + 1) + 1..(y + 1) * (stride + 1)];
            for x in 0..stride {
                let a = if x >= 3 { rgb[y * stride + x - 3] } else { 0 };
                let b = if y > 0 { rgb[(y - 1) * stride + x] } else { 0 };
                let c = if x >= 3 && y > 0 {
                    rgb[(y - 1) * stride + x - 3]
                } else {
                    0
                };
                let pred = match kind {
                    0 => 0,
                    1 => a,
                    2 => b,
                    3 => ((u16::from(a) + u16::from(b)) / 2) as u8,
                    4 => paeth(a, b, c),
                    k => panic!("bad filter {k}"),
                };
                rgb[y * stride + x] = src[x].wrapping_add(pred);
            }
        }
        Png { w, h, rgb }
    }

    fn has_color(img: &Png, c: Rgb) -> bool {
        img.rgb.chunks_exact(3).any(|p| p == [c.0, c.1, c.2])
    }

    fn xorshift_bytes(n: usize, mut s: u64) -> Vec<u8> {
        (0..n)
            .map(|_| {
                s ^= s << 13;
                s ^= s >> 7;
                s ^= s << 17;
                (s >> 24) as u8
            })
            .collect()
    }

    fn strategies_chart() -> LineChart {
        let mut c = LineChart::new(
            "Validation accuracy by strategy",
            "optimizer step",
            "val accuracy",
        );
        let names = ["scratch", "head", "freeze:4", "full"];
        for (k, name) in names.iter().enumerate() {
            let ceiling = [0.78, 0.84, 0.88, 0.91][k];
            let rate = [0.004, 0.02, 0.012, 0.009][k];
            let pts = (0..=40)
                .map(|i| {
                    let step = i as f64 * 25.0;
                    let wiggle = ((i * (k + 3)) as f64).sin() * 0.006;
                    let y = 0.5 + (ceiling - 0.5) * (1.0 - (-rate * step).exp()) + wiggle;
                    Point::new(step, y)
                })
                .collect();
            c.series.push(Series::new(*name, pts));
        }
        c.markers = false;
        c
    }

    // --- ticks and formatting -------------------------------------------

    #[test]
    fn nice_ticks_hand_computed() {
        let t = nice_ticks(0.0, 1.0, 5);
        assert!(approx(&t.values, &[0.0, 0.2, 0.4, 0.6, 0.8, 1.0]));
        assert_eq!((t.lo, t.hi), (0.0, 1.0));

        let t = nice_ticks(0.0, 97.0, 5);
        assert_eq!(t.step, 20.0);
        assert!(approx(&t.values, &[0.0, 20.0, 40.0, 60.0, 80.0, 100.0]));

        let t = nice_ticks(0.83, 0.91, 5);
        assert!(approx(&t.values, &[0.82, 0.84, 0.86, 0.88, 0.90, 0.92]));

        let t = nice_ticks(-3.0, 12.0, 5);
        assert!(approx(&t.values, &[-5.0, 0.0, 5.0, 10.0, 15.0]));

        let t = nice_ticks(0.0, 1000.0, 6);
        assert!(approx(
            &t.values,
            &[0.0, 200.0, 400.0, 600.0, 800.0, 1000.0]
        ));

        // All-equal values get padded by 10%.
        let t = nice_ticks(5.0, 5.0, 5);
        assert!(t.lo < 5.0 && t.hi > 5.0);
        assert!(approx(&t.values, &[4.4, 4.6, 4.8, 5.0, 5.2, 5.4, 5.6]));
        let t = nice_ticks(0.0, 0.0, 5);
        assert_eq!((t.lo, t.hi), (0.0, 1.0));
        let t = nice_ticks(f64::NAN, 3.0, 5);
        assert_eq!((t.lo, t.hi), (0.0, 1.0));
    }

    #[test]
    fn log_ticks_hand_computed() {
        let (lo, hi, t) = log_ticks(100.0, 10_000.0);
        assert_eq!((lo, hi), (100.0, 10_000.0));
        assert!(approx(
            &t,
            &[100.0, 200.0, 500.0, 1000.0, 2000.0, 5000.0, 10_000.0]
        ));
        let (lo, hi, t) = log_ticks(3.0, 7.0);
        assert!(approx(&[lo, hi], &[2.0, 10.0]));
        assert!(approx(&t, &[2.0, 5.0, 10.0]));
        let (_, _, t) = log_ticks(1e-3, 1e3);
        assert!(approx(&t, &[1e-3, 1e-2, 1e-1, 1.0, 10.0, 100.0, 1000.0]));
        let (lo, hi, t) = log_ticks(1000.0, 1000.0);
        assert!(approx(&[lo, hi], &[500.0, 2000.0]));
        assert!(approx(&t, &[500.0, 1000.0, 2000.0]));
        let (_, _, t) = log_ticks(-1.0, 10.0);
        assert_eq!(t, vec![1.0, 10.0]);
        let (_, _, t) = log_ticks(1e-10, 1e10);
        assert!(t.len() >= 3 && t.len() <= 12, "{t:?}");
    }

    #[test]
    fn tick_labels_are_compact() {
        assert_eq!(fmt_tick(0.85, 0.05, 1.0), "0.85");
        assert_eq!(fmt_tick(0.8, 0.05, 1.0), "0.80");
        assert_eq!(fmt_tick(0.4, 0.2, 1.0), "0.4");
        assert_eq!(fmt_tick(1200.0, 200.0, 1200.0), "1200");
        assert_eq!(fmt_tick(1200.0, 200.0, 12_000.0), "1.2k");
        assert_eq!(fmt_tick(10_000.0, 2000.0, 10_000.0), "10k");
        assert_eq!(fmt_tick(500.0, 500.0, 10_000.0), "500");
        assert_eq!(fmt_tick(3e-5, 1e-5, 5e-5), "3e-5");
        assert_eq!(fmt_tick(0.0005, 0.0005, 0.002), "0.0005");
        assert_eq!(fmt_tick(-5.0, 5.0, 15.0), "-5");
        assert_eq!(fmt_tick(1e-17, 0.1, 1.0), "0");
        assert_eq!(fmt_tick(2.5e6, 5e5, 3e6), "2.5M");
        assert_eq!(fmt_num(0.8531), "0.853");
        assert_eq!(fmt_num(12.34), "12.3");
        assert_eq!(fmt_num(1234.0), "1.23k");
        assert_eq!(fmt_num(1000.0), "1k");
        assert_eq!(fmt_num(2.5e-5), "2.5e-5");
        assert_eq!(fmt_num(0.001), "0.001");
        assert_eq!(fmt_num(f64::NAN), "n/a");
        let a = Axis::linear(Some((0.0, 1.0)), 5);
        let labels: Vec<&str> = a.ticks.iter().map(|(_, s)| s.as_str()).collect();
        assert_eq!(labels, ["0", "0.2", "0.4", "0.6", "0.8", "1.0"]);
        let a = Axis::linear(Some((0.0, 1000.0)), 6);
        let labels: Vec<&str> = a.ticks.iter().map(|(_, s)| s.as_str()).collect();
        assert_eq!(labels, ["0", "200", "400", "600", "800", "1000"]);
        let a = Axis::linear(Some((0.0, 50_000.0)), 5);
        let labels: Vec<&str> = a.ticks.iter().map(|(_, s)| s.as_str()).collect();
        assert_eq!(labels, ["0", "10k", "20k", "30k", "40k", "50k"]);
    }

    #[test]
    fn truncation_and_text_width() {
        assert_eq!(text_width("", 1.0), 0.0);
        assert_eq!(text_width("ab", 1.0), 11.0);
        assert_eq!(text_width("ab", 2.0), 22.0);
        assert_eq!(truncate_to_width("short", 1.0, 100.0), "short");
        let t = truncate_to_width("a very long strategy name indeed", 1.0, 59.0);
        assert_eq!(t, "a very lo\u{2026}");
        assert!(text_width(&t, 1.0) <= 59.0);
        assert_eq!(truncate_to_width("abc", 1.0, 2.0), "");
    }

    #[test]
    fn glyphs_cover_printable_ascii() {
        let q = glyph_for('?');
        for c in 33u8..=126 {
            let g = glyph_for(c as char);
            assert!(g.iter().any(|&r| r != 0), "glyph {} is blank", c as char);
            assert!(g.iter().all(|&r| r < 32));
            if c != b'?' {
                assert_ne!(g, q, "glyph {} equals '?'", c as char);
            }
        }
        assert_eq!(glyph_for(' '), [0; 8]);
        assert_eq!(glyph_for('\u{1F600}'), q);
        assert_eq!(glyph_for('\u{2082}'), glyph_for('2'));
        assert_ne!(glyph_for('\u{2026}'), q);
    }

    // --- checksums and compression ----------------------------------------

    #[test]
    fn checksums_match_known_values() {
        assert_eq!(crc32(b"123456789"), 0xCBF4_3926);
        assert_eq!(crc32(b""), 0);
        assert_eq!(adler32(b"Wikipedia"), 0x11E6_0398);
        assert_eq!(adler32(b""), 1);
        // Long input exercises the modulo batching.
        let big = vec![0xFFu8; 100_000];
        let (mut a, mut b) = (1u64, 0u64);
        for &x in &big {
            a = (a + u64::from(x)) % 65_521;
            b = (b + a) % 65_521;
        }
        assert_eq!(adler32(&big), ((b << 16) | a) as u32);
    }

    #[test]
    fn deflate_round_trips() {
        let mut text = Vec::new();
        for i in 0..300 {
            text.extend_from_slice(
                format!("step {i} acc 0.{} loss 1.{}\n", i % 97, i % 13).as_bytes(),
            );
        }
        let mut mixed = vec![0u8; 70_000];
        mixed.extend(xorshift_bytes(3000, 7));
        mixed.extend(vec![0xAB; 40_000]);
        let inputs: Vec<Vec<u8>> = vec![
            Vec::new(),
            b"a".to_vec(),
            b"ab".to_vec(),
            b"abc".to_vec(),
            b"aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa".to_vec(),
            vec![0u8; 100_000],
            b"abcabcabcabcabcabcabcabcabcabcabcx".repeat(50),
            xorshift_bytes(10_000, 12345),
            xorshift_bytes(70_000, 99),
            text,
            mixed,
            (0..=255u8).cycle().take(5000).collect(),
        ];
        for input in &inputs {
            let d = deflate(input);
            let back = inflate(&d).expect("inflate");
            assert_eq!(&back, input, "round trip of {} bytes", input.len());
            // Both encoders must round-trip on their own too.
            assert_eq!(&inflate(&deflate_fixed(input)).unwrap(), input);
            assert_eq!(&inflate(&deflate_stored(input)).unwrap(), input);
            let z = zlib_compress(input);
            assert_eq!(&zlib_decompress(&z).unwrap(), input);
        }
        // Runs compress to ~13 bits per 258 bytes; random bytes barely grow.
        assert!(deflate(&vec![0u8; 100_000]).len() < 700);
        let r = xorshift_bytes(10_000, 12345);
        assert!(deflate(&r).len() <= r.len() + 10);
    }

    #[test]
    fn zlib_header_is_valid() {
        let z = zlib_compress(b"hello");
        assert_eq!(z[0], 0x78);
        assert_eq!((u32::from(z[0]) * 256 + u32::from(z[1])) % 31, 0);
        assert_eq!(&z[z.len() - 4..], &adler32(b"hello").to_be_bytes());
    }

    // --- PNG ------------------------------------------------------------

    #[test]
    fn png_chunks_and_pixels() {
        let rgb: Vec<u8> = (0..7 * 5)
            .flat_map(|i| [i as u8, 255 - i as u8, 7])
            .collect();
        let png = encode_png(7, 5, &rgb);
        let img = decode_png(&png);
        assert_eq!((img.w, img.h), (7, 5));
        assert_eq!(img.rgb, rgb);
        // Chunk names and lengths at fixed places.
        assert_eq!(&png[8..16], &[0, 0, 0, 13, b'I', b'H', b'D', b'R']);
        assert_eq!(&png[16..24], &[0, 0, 0, 7, 0, 0, 0, 5]);
        assert_eq!(
            &png[png.len() - 12..png.len() - 4],
            &[0, 0, 0, 0, b'I', b'E', b'N', b'D']
        );
        assert_eq!(&png[png.len() - 4..], &[0xAE, 0x42, 0x60, 0x82]);
    }

    #[test]
    fn line_chart_png_decodes_and_shows_series() {
        let chart = strategies_chart();
        let png = chart.to_png();
        let img = decode_png(&png);
        assert_eq!((img.w, img.h), (WIDTH as usize, HEIGHT as usize));
        assert_eq!(&img.rgb[..3], &[255, 255, 255]);
        for i in 0..4 {
            assert!(has_color(&img, series_color(i)), "series {i} colour drawn");
        }
        assert!(png.len() < 100_000, "png is {} bytes", png.len());
    }

    // --- SVG ------------------------------------------------------------

    #[test]
    fn svg_is_self_contained_and_names_series() {
        let mut chart = strategies_chart();
        chart.series.push(Series::new(
            "a<b & \"c\" http://x",
            vec![Point::new(1.0, 0.6)],
        ));
        let svg = chart.to_svg();
        assert!(svg.starts_with("<svg xmlns=\"http://www.w3.org/2000/svg\""));
        assert!(svg.trim_end().ends_with("</svg>"));
        for name in ["scratch", "head", "freeze:4", "full"] {
            assert!(svg.contains(&format!(">{name}</text>")), "{name} in legend");
        }
        assert!(svg.contains("a&lt;b &amp; &quot;c&quot; http:&#47;/x"));
        assert_eq!(svg.matches("http").count(), 2);
        assert_eq!(svg.matches("://").count(), 1);
        assert!(!svg.contains("href"));
        assert!(!svg.contains("url("));
        assert!(svg.contains("font-family=\"sans-serif\""));
        assert!(svg.contains("<polyline"));
        assert!(svg.contains("rotate(-90"));
    }

    #[test]
    fn bar_and_scatter_render() {
        let mut bars = BarChart::new("Test accuracy", "accuracy");
        bars.bars = vec![
            Bar::with_err("scratch", 0.78, 0.75, 0.81),
            Bar::with_err("head", 0.84, 0.82, 0.86),
            Bar::with_err("freeze:4", 0.88, 0.86, 0.9),
            Bar::new("full", 0.91),
        ];
        let svg = bars.to_svg();
        for b in &bars.bars {
            assert!(svg.contains(&b.label));
        }
        assert_eq!(svg.matches("http").count(), 1);
        assert!(svg.contains(">0.91</text>"));
        let img = decode_png(&bars.to_png());
        for i in 0..4 {
            assert!(has_color(&img, series_color(i)));
        }

        let mut sc = ScatterChart::new("Accuracy against CO2", "CO2 (g)", "test accuracy");
        for (i, name) in ["scratch", "head", "freeze:4", "full"].iter().enumerate() {
            let x = [12.0, 2.0, 6.5, 9.0][i];
            let y = [0.78, 0.84, 0.88, 0.91][i];
            sc.points
                .push((name.to_string(), Point::with_err(x, y, y - 0.02, y + 0.02)));
        }
        let svg = sc.to_svg();
        for (n, _) in &sc.points {
            assert!(svg.contains(&format!(">{n}</text>")));
        }
        let img = decode_png(&sc.to_png());
        assert!(has_color(&img, series_color(2)));
    }

    #[test]
    fn edge_cases_do_not_panic() {
        let check = |svg: String, png: Vec<u8>| {
            assert!(svg.contains("</svg>"));
            assert!(!svg.contains("NaN") && !svg.contains("inf"));
            let img = decode_png(&png);
            assert_eq!((img.w, img.h), (WIDTH as usize, HEIGHT as usize));
        };
        let mut c = LineChart::new("", "", "");
        check(c.to_svg(), c.to_png());
        c.series.push(Series::new("empty", vec![]));
        check(c.to_svg(), c.to_png());
        c.series
            .push(Series::new("one", vec![Point::new(3.0, 0.5)]));
        check(c.to_svg(), c.to_png());
        c.series.push(Series::new(
            "flat",
            vec![Point::new(1.0, 0.5), Point::new(2.0, 0.5)],
        ));
        c.markers = false;
        let svg = c.to_svg();
        assert!(svg.contains("<circle"), "single point still gets a marker");
        check(svg, c.to_png());
        c.series.push(Series::new(
            "bad values",
            vec![
                Point::new(f64::NAN, 1.0),
                Point::new(1.0, f64::INFINITY),
                Point::with_err(2.0, 0.4, f64::NAN, 0.6),
                Point::new(3.0, 0.45),
                Point::new(f64::NEG_INFINITY, 0.0),
                Point::new(4.0, 0.3),
            ],
        ));
        c.x_scale = Scale::Log10;
        c.series.push(Series::new(
            "negative x",
            vec![
                Point::new(-1.0, 0.1),
                Point::new(0.0, 0.2),
                Point::new(10.0, 0.3),
            ],
        ));
        check(c.to_svg(), c.to_png());
        let long = "x".repeat(500);
        c.title = format!("title {long}");
        c.x_label = long.clone();
        c.y_label = long.clone();
        c.series.push(Series::new(
            long.clone(),
            vec![Point::with_err(5.0, 0.2, 0.3, 0.1)],
        ));
        let svg = c.to_svg();
        let body = &svg[svg.find("</title>").unwrap()..];
        assert!(!body.contains(&long), "drawn text is truncated");
        assert!(svg.contains('\u{2026}'));
        check(svg, c.to_png());
        // Many series: legend overflows into "+N more".
        for i in 0..30 {
            c.series.push(Series::new(
                format!("s{i}"),
                vec![Point::new(i as f64 + 1.0, 1.0)],
            ));
        }
        let svg = c.to_svg();
        assert!(svg.contains(" more</text>"));
        check(svg, c.to_png());
        // Huge and tiny magnitudes.
        let mut c = LineChart::new("t", "x", "y");
        c.series.push(Series::new(
            "big",
            vec![Point::new(1e300, 1e-300), Point::new(-1e300, 1e300)],
        ));
        check(c.to_svg(), c.to_png());
        let mut c = LineChart::new("t", "x", "y");
        c.series.push(Series::new(
            "near",
            vec![Point::new(1e9, 1.0), Point::new(1e9 + 1e-6, 1.0 + 1e-12)],
        ));
        check(c.to_svg(), c.to_png());

        let mut b = BarChart::new("", "");
        check(b.to_svg(), b.to_png());
        b.bars.push(Bar::new("nan", f64::NAN));
        b.bars.push(Bar::new("neg", -2.0));
        b.bars
            .push(Bar::with_err("unbounded err", 1.0, f64::NEG_INFINITY, 2.0));
        b.bars.push(Bar::new(long.clone(), 0.0));
        check(b.to_svg(), b.to_png());
        b.bars = (0..200)
            .map(|i| Bar::new(format!("bar {i}"), i as f64))
            .collect();
        check(b.to_svg(), b.to_png());
        // Labels too wide for their slots turn vertical.
        b.bars = (0..40)
            .map(|i| Bar::new(format!("strategy {i}"), i as f64))
            .collect();
        let svg = b.to_svg();
        assert!(svg.matches("rotate(-90").count() >= 40);
        assert!(svg.contains(">strategy 39</text>"));
        check(svg, b.to_png());

        let mut s = ScatterChart::new("", "", "");
        check(s.to_svg(), s.to_png());
        s.points.push(("only".into(), Point::new(1.0, 1.0)));
        check(s.to_svg(), s.to_png());
        s.points.push(("nan".into(), Point::new(f64::NAN, 1.0)));
        s.points.push(("same".into(), Point::new(1.0, 1.0)));
        check(s.to_svg(), s.to_png());
    }

    #[test]
    fn log_axis_line_chart_with_error_bars() {
        let mut c = LineChart::new(
            "Accuracy vs training-set size",
            "train examples",
            "accuracy",
        );
        c.x_scale = Scale::Log10;
        for (k, name) in ["scratch", "head", "full"].iter().enumerate() {
            let pts = [100.0, 300.0, 1000.0, 3000.0, 10_000.0]
                .iter()
                .map(|&n: &f64| {
                    let y = 0.5 + 0.1 * (k as f64 + 1.0) * n.log10() / 4.0;
                    Point::with_err(n, y, y - 0.03, y + 0.03)
                })
                .collect();
            c.series.push(Series::new(*name, pts));
        }
        let svg = c.to_svg();
        for label in [">100<", ">1k<", ">10k<", ">200<", ">5k<"] {
            assert!(svg.contains(label), "tick {label}");
        }
        decode_png(&c.to_png());
    }

    /// Writes example files when PLOT_EXAMPLE_DIR is set.
    #[test]
    fn write_examples() {
        let Ok(dir) = std::env::var("PLOT_EXAMPLE_DIR") else {
            return;
        };
        let dir = std::path::Path::new(&dir);
        let c = strategies_chart();
        let png = c.to_png();
        let svg = c.to_svg();
        std::fs::write(dir.join("plot_example.png"), &png).unwrap();
        std::fs::write(dir.join("plot_example.svg"), &svg).unwrap();
        eprintln!(
            "line chart: png {} bytes, svg {} bytes",
            png.len(),
            svg.len()
        );

        let mut b = BarChart::new("Test accuracy by strategy (95% CI)", "test accuracy");
        b.bars = vec![
            Bar::with_err("scratch", 0.781, 0.752, 0.809),
            Bar::with_err("head", 0.842, 0.821, 0.861),
            Bar::with_err("freeze:4", 0.884, 0.866, 0.901),
            Bar::with_err("full", 0.912, 0.897, 0.926),
        ];
        let png = b.to_png();
        std::fs::write(dir.join("plot_example_bar.png"), &png).unwrap();
        std::fs::write(dir.join("plot_example_bar.svg"), b.to_svg()).unwrap();
        eprintln!("bar chart: png {} bytes", png.len());

        let mut s = ScatterChart::new(
            "Test accuracy against CO\u{2082}",
            "CO2 emitted (g)",
            "test accuracy",
        );
        for (i, name) in ["scratch", "head", "freeze:4", "full"].iter().enumerate() {
            let x = [12.4, 1.9, 6.5, 9.8][i];
            let y = [0.781, 0.842, 0.884, 0.912][i];
            s.points
                .push((name.to_string(), Point::with_err(x, y, y - 0.02, y + 0.02)));
        }
        let png = s.to_png();
        std::fs::write(dir.join("plot_example_scatter.png"), &png).unwrap();
        std::fs::write(dir.join("plot_example_scatter.svg"), s.to_svg()).unwrap();
        eprintln!("scatter chart: png {} bytes", png.len());

        let mut l = LineChart::new(
            "Accuracy vs training-set size",
            "training examples (log)",
            "test accuracy",
        );
        l.x_scale = Scale::Log10;
        for (k, name) in ["scratch", "head", "freeze:4", "full"].iter().enumerate() {
            let pts = [100.0, 300.0, 1000.0, 3000.0, 10_000.0]
                .iter()
                .map(|&n: &f64| {
                    let y = 0.55 + 0.08 * (k as f64 + 1.0) * n.log10() / 4.0;
                    Point::with_err(n, y, y - 0.025, y + 0.02)
                })
                .collect();
            l.series.push(Series::new(*name, pts));
        }
        let png = l.to_png();
        std::fs::write(dir.join("plot_example_log.png"), &png).unwrap();
        eprintln!("log chart: png {} bytes", png.len());

        // Every glyph, for eyeballing the font.
        let mut sc = Scene::new();
        let all: String = (32u8..=126).map(char::from).collect();
        for (k, chunk) in all.as_bytes().chunks(32).enumerate() {
            let line = String::from_utf8_lossy(chunk).to_string();
            let y = 40.0 + k as f64 * 40.0;
            sc.text(TextSpec::new(10.0, y, line.clone(), 1.0, Anchor::Start));
            sc.text(TextSpec::new(220.0, y, line, 2.0, Anchor::Start));
        }
        sc.text(TextSpec::new(
            10.0,
            200.0,
            "1.5x: Validation accuracy 0.85 1.2k 3e-5 \u{2026}",
            1.5,
            Anchor::Start,
        ));
        sc.text(TextSpec::new(40.0, 420.0, "vertical text", 1.5, Anchor::Start).vertical());
        std::fs::write(dir.join("plot_font.png"), sc.to_png()).unwrap();
    }
}
