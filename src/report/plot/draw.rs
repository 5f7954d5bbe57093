//! Laying out and drawing the charts with plotters, on any backend: title,
//! axes, legend, markers, error bars, bars and point labels.

use std::iter::once;
use std::sync::Once;

use plotters::coord::Shift;
use plotters::prelude::*;
use plotters::style::register_font;
use plotters::style::text_anchor::{HPos, Pos, VPos};

use super::canvas::anchor_offset;
use super::ticks::{Axis, fmt_num};
use super::{
    AXIS, BarChart, ERR, GRID, LineChart, MUTED, Point, Rgb, Scale, ScatterChart, TEXT,
    series_color,
};

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

/// DejaVu Sans (see `assets/fonts/LICENSE-DejaVu.txt`).
const FONT: &[u8] = include_bytes!("../../../assets/fonts/DejaVuSans.ttf");
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

type Area<DB> = DrawingArea<DB, Shift>;
type Fallible<T, DB> = Result<T, DrawingAreaErrorKind<<DB as DrawingBackend>::ErrorType>>;
type Chart<'a, DB> = ChartContext<'a, DB, Cartesian2d<Axis, Axis>>;

/// Device pixels per chart pixel: 1 for SVG, `SUPERSAMPLE` for PNG.
#[derive(Clone, Copy)]
pub(super) struct Px(pub(super) f64);

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
pub(super) trait Draw {
    fn title(&self) -> &str;
    fn draw<DB: DrawingBackend>(&self, root: &Area<DB>, k: Px) -> Fallible<(), DB>;
}

pub(super) fn register_embedded_font() {
    static FONT_ONCE: Once = Once::new();
    FONT_ONCE.call_once(|| {
        let ok = register_font(FAMILY, FontStyle::Normal, FONT).is_ok();
        assert!(ok, "the embedded font parses");
    });
}

/// Control characters to spaces, surrounding whitespace trimmed.
pub(super) fn clean_label(s: &str) -> String {
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
