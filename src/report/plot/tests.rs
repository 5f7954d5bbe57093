use super::ticks::{Axis, fmt_num, fmt_tick, log_ticks, nice_ticks};
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
