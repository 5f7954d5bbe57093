//! The comparison's report: `report.json` (every number), `report.md`
//! (tables, PNG plots beside it) and `report.html` (self-contained: styles
//! and SVG plots inline, nothing fetched, opens offline).

use std::fmt::Write as _;
use std::io::Write as _;
use std::path::Path;

use anyhow::Result;

use super::stats::MeanCi;
use super::{Comparison, CurvePoint, RunRecord, Summary, data_multiplier};
use crate::fsutil::{write_atomic, write_json_atomic};
use crate::report::plot::{LineChart, Point, Scale, ScatterChart, Series};
use crate::strategy::Strategy;
use crate::tasks::classification::MetricName;

/// One chart, in both formats.
pub struct Plot {
    pub name: String,
    pub title: String,
    pub svg: String,
    pub png: Vec<u8>,
}

/// Today's date (UTC), YYYY-MM-DD.
pub fn today() -> String {
    crate::cost::carbon::timestamp_utc(std::time::SystemTime::now())[..10].to_string()
}

fn metric_name(m: MetricName) -> &'static str {
    match m {
        MetricName::Accuracy => "accuracy",
        MetricName::MacroF1 => "macro-F1",
        MetricName::Loss => "loss",
        MetricName::Perplexity => "perplexity",
        MetricName::Bleu4 => "BLEU-4",
        MetricName::Cider => "CIDEr-D",
    }
}

/// Writes plots/, report.json, report.md and report.html under `out`.
pub fn write(c: &Comparison, out: &Path) -> Result<()> {
    let plots = plots(c);
    for p in &plots {
        let svg = out.join("plots").join(format!("{}.svg", p.name));
        write_atomic(&svg, |w| Ok(w.write_all(p.svg.as_bytes())?))?;
        let png = out.join("plots").join(format!("{}.png", p.name));
        write_atomic(&png, |w| Ok(w.write_all(&p.png)?))?;
    }
    write_json_atomic(&out.join("report.json"), c)?;
    let md = markdown(c, &plots);
    write_atomic(&out.join("report.md"), |w| Ok(w.write_all(md.as_bytes())?))?;
    let html = html(c, &plots);
    write_atomic(&out.join("report.html"), |w| {
        Ok(w.write_all(html.as_bytes())?)
    })?;
    Ok(())
}

/// The largest training-set size of the comparison (`None` without a sweep).
fn main_size(c: &Comparison) -> Option<usize> {
    c.summary.iter().filter_map(|s| s.train_size).max()
}

fn main_summary(c: &Comparison) -> Vec<&Summary> {
    let size = main_size(c);
    c.summary.iter().filter(|s| s.train_size == size).collect()
}

/// Learning curve of one strategy: the k-th validation of every seed
/// averaged (x and y), over the validations all seeds reached.
fn mean_curve(runs: &[&RunRecord], metric: MetricName) -> Vec<(CurvePoint, f64)> {
    let n = runs.iter().map(|r| r.curve.len()).min().unwrap_or(0);
    (0..n)
        .map(|k| {
            let pts: Vec<&CurvePoint> = runs.iter().map(|r| &r.curve[k]).collect();
            let m = pts.len() as f64;
            let avg = |f: &dyn Fn(&CurvePoint) -> f64| pts.iter().map(|p| f(p)).sum::<f64>() / m;
            (
                CurvePoint {
                    step: (avg(&|p| p.step as f64)).round() as usize,
                    seconds: avg(&|p| p.seconds),
                    energy_wh: avg(&|p| p.energy_wh),
                    accuracy: avg(&|p| p.accuracy),
                    macro_f1: avg(&|p| p.macro_f1),
                    perplexity: avg(&|p| p.perplexity),
                    bleu4: avg(&|p| p.bleu4),
                    cider: avg(&|p| p.cider),
                },
                avg(&|p| p.score(metric)),
            )
        })
        .collect()
}

fn err_point(x: f64, m: &MeanCi) -> Point {
    match m.ci {
        Some(_) => Point::with_err(x, m.mean, m.lo(), m.hi()),
        None => Point::new(x, m.mean),
    }
}

/// Every chart the comparison calls for.
pub fn plots(c: &Comparison) -> Vec<Plot> {
    let metric = metric_name(c.metric);
    let size = main_size(c);
    let mut out = Vec::new();
    let mut push = |name: &str, title: String, svg: String, png: Vec<u8>| {
        out.push(Plot {
            name: name.into(),
            title,
            svg,
            png,
        })
    };

    // Learning curves against step, wall time and energy.
    type XOf = fn(&CurvePoint) -> f64;
    let axes: [(&str, &str, XOf); 3] = [
        ("curve_step", "optimizer step", |p| p.step as f64),
        ("curve_time", "wall time (s)", |p| p.seconds),
        ("curve_energy", "energy (Wh)", |p| p.energy_wh),
    ];
    for (name, x_label, x_of) in axes {
        let mut chart = LineChart::new(
            format!(
                "Validation {metric} against {}",
                x_label.split(" (").next().unwrap_or(x_label)
            ),
            x_label,
            format!("validation {metric}"),
        );
        for &s in &c.strategies {
            let runs: Vec<&RunRecord> = c
                .runs
                .iter()
                .filter(|r| r.strategy == s && r.train_size == size)
                .collect();
            let curve = mean_curve(&runs, c.metric);
            if !curve.is_empty() {
                chart.series.push(Series::new(
                    s.to_string(),
                    curve.iter().map(|(p, y)| Point::new(x_of(p), *y)).collect(),
                ));
            }
        }
        push(name, chart.title.clone(), chart.to_svg(), chart.to_png());
    }

    // Test metric against CO2.
    let mut scatter = ScatterChart::new(
        format!("Test {metric} against CO2 (mean, 95% interval over seeds)"),
        "CO2 (g)",
        format!("test {metric}"),
    );
    for s in main_summary(c) {
        scatter
            .points
            .push((s.strategy.to_string(), err_point(s.co2_g.mean, &s.score)));
    }
    push(
        "metric_vs_co2",
        scatter.title.clone(),
        scatter.to_svg(),
        scatter.to_png(),
    );

    // Data efficiency.
    if c.train_sizes.len() > 1 {
        let mut chart = LineChart::new(
            format!("Test {metric} against training-set size"),
            "training examples (log scale)",
            format!("test {metric}"),
        );
        chart.x_scale = Scale::Log10;
        for &st in &c.strategies {
            let pts: Vec<Point> = c
                .summary
                .iter()
                .filter(|s| s.strategy == st && s.train_size.is_some())
                .map(|s| err_point(s.train_examples as f64, &s.score))
                .collect();
            chart.series.push(Series::new(st.to_string(), pts));
        }
        push(
            "metric_vs_size",
            chart.title.clone(),
            chart.to_svg(),
            chart.to_png(),
        );
    }

    // Freeze depth.
    let depths: Vec<(usize, &Summary)> = main_summary(c)
        .into_iter()
        .filter_map(|s| match (s.strategy.strategy, s.strategy.decoder) {
            (Strategy::Freeze(n), None) => Some((n, s)),
            _ => None,
        })
        .collect();
    if depths.len() > 1 {
        let mut chart = LineChart::new(
            format!("Test {metric} against frozen layers"),
            "frozen encoder layers (freeze:N)",
            format!("test {metric}"),
        );
        chart.series.push(Series::new(
            format!("test {metric}"),
            depths
                .iter()
                .map(|(n, s)| err_point(*n as f64, &s.score))
                .collect(),
        ));
        push(
            "freeze_depth_metric",
            chart.title.clone(),
            chart.to_svg(),
            chart.to_png(),
        );
        let mut chart = LineChart::new(
            "Cost against frozen layers",
            "frozen encoder layers (freeze:N)",
            "wall time (s) / energy (Wh x 100)",
        );
        chart.series.push(Series::new(
            "wall time (s)",
            depths
                .iter()
                .map(|(n, s)| err_point(*n as f64, &s.seconds))
                .collect(),
        ));
        chart.series.push(Series::new(
            "energy (Wh x 100)",
            depths
                .iter()
                .map(|(n, s)| Point::new(*n as f64, 100.0 * s.energy_wh.mean))
                .collect(),
        ));
        push(
            "freeze_depth_cost",
            chart.title.clone(),
            chart.to_svg(),
            chart.to_png(),
        );
    }
    out
}

/// The table's header and rows, as cells.
fn table(c: &Comparison) -> (Vec<String>, Vec<Vec<String>>) {
    let metric = metric_name(c.metric);
    let sweep = c.train_sizes.len() > 1;
    let mut head = vec!["strategy".to_string()];
    if sweep {
        head.push("train n".into());
    }
    head.push(format!("test {metric} (95% CI)"));
    if c.is_language_model() {
        head.push("next-token accuracy".into());
    } else if c.is_captioning() {
        head.extend(["BLEU-4".into(), "CIDEr-D".into(), "label accuracy".into()]);
    } else {
        head.extend(["accuracy".into(), "macro-F1".into()]);
    }
    head.extend([
        "time (s)".into(),
        "TFLOP".into(),
        "MFU".into(),
        "energy (Wh)".into(),
        "CO2 (g)".into(),
        "money".into(),
    ]);
    if let Some(t) = c.target {
        head.push(format!("to {metric} {t}: s / Wh"));
    }
    head.push("cache saved (s / Wh)".into());
    let currency = c
        .runs
        .first()
        .map(|r| r.cost.money.currency.clone())
        .unwrap_or_default();
    let rows = c
        .summary
        .iter()
        .map(|s| {
            let mut row = vec![s.strategy.to_string()];
            if sweep {
                row.push(s.train_examples.to_string());
            }
            row.push(s.score.show(3));
            if c.is_captioning() {
                row.push(format!("{:.3}", s.bleu4.mean));
                row.push(format!("{:.3}", s.cider.mean));
            }
            row.push(format!("{:.3}", s.accuracy.mean));
            if !c.is_language_model() && !c.is_captioning() {
                row.push(format!("{:.3}", s.macro_f1.mean));
            }
            row.push(sig(s.seconds.mean));
            row.push(sig(s.flops.mean / 1e12));
            row.push(format!("{:.1}%", 100.0 * s.mfu.mean));
            row.push(format!(
                "{}{}",
                sig(s.energy_wh.mean),
                if s.energy_measured { "" } else { " (est.)" }
            ));
            row.push(sig(s.co2_g.mean));
            row.push(format!("{} {currency}", sig(s.money.mean)));
            if c.target.is_some() {
                row.push(match (s.seconds_to_target, s.wh_to_target) {
                    (Some(t), Some(w)) => format!(
                        "{} / {} ({} of {} seeds)",
                        sig(t),
                        sig(w),
                        s.reached_target,
                        s.score.n
                    ),
                    _ => "not reached".into(),
                });
            }
            row.push(if s.cache_saved_seconds > 0.0 {
                format!("{} / {}", sig(s.cache_saved_seconds), sig(s.cache_saved_wh))
            } else {
                "-".into()
            });
            row
        })
        .collect();
    (head, rows)
}

/// Three significant digits (whole numbers from 100 up).
fn sig(x: f64) -> String {
    if x == 0.0 || !x.is_finite() {
        return format!("{x}");
    }
    let digits = (2 - x.abs().log10().floor() as i32).clamp(0, 12) as usize;
    format!("{x:.digits$}")
}

/// The table as aligned text for a terminal.
pub fn table_text(c: &Comparison) -> String {
    let (head, rows) = table(c);
    let mut widths: Vec<usize> = head.iter().map(|h| h.chars().count()).collect();
    for r in &rows {
        for (w, cell) in widths.iter_mut().zip(r) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let line = |cells: &[String]| {
        cells
            .iter()
            .zip(&widths)
            .map(|(c, w)| format!("{c:<w$}"))
            .collect::<Vec<_>>()
            .join("  ")
            .trim_end()
            .to_string()
    };
    let mut out = line(&head);
    out.push('\n');
    for r in &rows {
        out.push_str(&line(r));
        out.push('\n');
    }
    out
}

/// Sentences under the table: settings, how energy was obtained, the
/// intensity and prices used, the data multiplier.
fn notes(c: &Comparison) -> Vec<String> {
    let mut notes = vec![format!(
        "Model `{}`; trained on `{}`, tested on {} held-out {} (`{}`). Budget {} per run for every strategy; {} seed(s) each; the interval is Student's t 95% over seeds{}.",
        c.model,
        c.train_file,
        c.test_examples,
        if c.is_language_model() {
            "documents"
        } else if c.is_captioning() {
            "images"
        } else {
            "examples"
        },
        c.test_file,
        c.budget,
        c.seeds,
        if c.seeds < 2 {
            " (none with one seed)"
        } else {
            ""
        }
    )];
    if let Some(r) = c.runs.first() {
        let e = &r.cost.energy;
        notes.push(format!(
            "Energy: CPU {}; RAM {}{}; PUE {:.2}. Peak for MFU: {:.1} GFLOP/s ({}).",
            e.cpu_how,
            e.ram_how,
            e.gpu_how
                .as_ref()
                .map(|g| format!("; GPU {g}"))
                .unwrap_or_default(),
            e.pue,
            r.cost.peak_flops_per_s / 1e9,
            r.cost.peak_how
        ));
        let i = &r.cost.intensity;
        notes.push(format!(
            "CO2 at {:.0} gCO2e/kWh ({}, {}, {}). Money: {} per kWh, {} per hour ({}).",
            i.g_per_kwh,
            i.name,
            i.source,
            i.year,
            r.cost.money.per_kwh,
            r.cost.money.per_hour,
            r.cost.money.currency
        ));
    }
    let (secs, wh, co2): (f64, f64, f64) = c.runs.iter().fold((0.0, 0.0, 0.0), |a, r| {
        (
            a.0 + r.cost.seconds + r.test_seconds,
            a.1 + r.cost.energy.kwh * 1000.0,
            a.2 + r.cost.co2_kg * 1000.0,
        )
    });
    notes.push(format!(
        "All {} runs together: {} s of training (and testing), {} Wh, {} g CO2.",
        c.runs.len(),
        sig(secs),
        sig(wh),
        sig(co2)
    ));
    let saved: f64 = main_summary(c)
        .iter()
        .map(|s| s.cache_saved_seconds * s.score.n as f64)
        .sum();
    if saved > 0.0 {
        notes.push(format!(
            "The feature cache (frozen layers computed once) saved about {saved:.0} s over all runs of the table's largest size; per-strategy means are in the last column."
        ));
    }
    if c.is_captioning() {
        notes.push(
            "Captions are scored as the COCO caption evaluation scores them (PTB tokenisation; corpus BLEU-4, CIDEr-D with its length penalty and clipping) against every reference caption of the image; label accuracy is the share of generated captions that name exactly the items their references name (blank where the references do not name items)."
                .to_string(),
        );
    }
    if c.is_language_model() {
        notes.push(
            "Perplexity: exp of the mean next-token cross-entropy over every held-out token, the documents tokenised and packed as in training (lower is better)."
                .to_string(),
        );
    }
    if let Some((best, smallest, result)) = data_multiplier(&c.summary, c.metric) {
        let best_score = c
            .summary
            .iter()
            .find(|s| s.strategy == best && s.train_size == Some(smallest))
            .map(|s| s.score.mean)
            .unwrap_or(f64::NAN);
        notes.push(match result {
            Ok(m) => format!(
                "Data multiplier: scratch needed {m:.1}x more data to match {best} at {smallest} examples ({:.3}).",
                best_score
            ),
            Err(s) => format!(
                "Data multiplier: scratch never matched {best} at {smallest} examples ({best_score:.3}) within the sizes tried (its best: {s:.3})."
            ),
        });
    }
    notes
}

fn markdown(c: &Comparison, plots: &[Plot]) -> String {
    let (head, rows) = table(c);
    let mut md = String::new();
    let _ = writeln!(md, "# headstart compare: tuning against scratch\n");
    let _ = writeln!(md, "{}\n", c.date);
    let _ = writeln!(md, "| {} |", head.join(" | "));
    let _ = writeln!(md, "|{}", "---|".repeat(head.len()));
    for r in &rows {
        let _ = writeln!(md, "| {} |", r.join(" | "));
    }
    md.push('\n');
    for n in notes(c) {
        let _ = writeln!(md, "{n}\n");
    }
    for p in plots {
        let _ = writeln!(
            md,
            "## {}\n\n![{}](plots/{}.png)\n",
            p.title, p.title, p.name
        );
    }
    if !c.samples.is_empty() {
        let _ = writeln!(md, "## {}\n", samples_title(c));
        for (k, s) in c.samples.iter().enumerate() {
            if c.is_captioning() {
                let _ = writeln!(
                    md,
                    "### Image {}\n\n![image {}]({})\n",
                    k + 1,
                    k + 1,
                    s.prompt
                );
                let _ = writeln!(md, "| written by | caption |\n|---|---|");
                let _ = writeln!(md, "| references | {} |", md_cell(&s.reference));
            } else {
                let _ = writeln!(md, "### Prompt {}: \"{}\"\n", k + 1, s.prompt);
                let _ = writeln!(md, "| written by | continuation |\n|---|---|");
                let _ = writeln!(md, "| held-out text | {} |", md_cell(&s.reference));
            }
            for (who, text) in &s.outputs {
                let _ = writeln!(md, "| {who} | {} |", md_cell(text));
            }
            md.push('\n');
        }
    }
    md
}

/// The title of the samples section.
fn samples_title(c: &Comparison) -> &'static str {
    if c.is_captioning() {
        "Held-out images, captioned by each pair of strategies"
    } else {
        "Held-out prompts, continued greedily by each model"
    }
}

/// Text as one Markdown table cell.
fn md_cell(s: &str) -> String {
    s.split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
        .replace('|', "\\|")
}

fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

fn html(c: &Comparison, plots: &[Plot]) -> String {
    let (head, rows) = table(c);
    let mut h = String::new();
    h.push_str("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">");
    h.push_str("<title>headstart compare</title><style>");
    h.push_str(
        "body{font-family:sans-serif;max-width:1100px;margin:2em auto;padding:0 1em;color:#222}\
         table{border-collapse:collapse;font-size:14px}th,td{border:1px solid #ccc;padding:4px 8px;text-align:right}\
         th:first-child,td:first-child{text-align:left}th{background:#f4f4f4}table.samples td{text-align:left;vertical-align:top}figure{margin:2em 0}svg{max-width:100%;height:auto}",
    );
    h.push_str("</style></head><body>\n<h1>headstart compare: tuning against scratch</h1>\n");
    let _ = writeln!(h, "<p>{}</p>", escape(&c.date));
    h.push_str("<table><tr>");
    for cell in &head {
        let _ = write!(h, "<th>{}</th>", escape(cell));
    }
    h.push_str("</tr>\n");
    for r in &rows {
        h.push_str("<tr>");
        for cell in r {
            let _ = write!(h, "<td>{}</td>", escape(cell));
        }
        h.push_str("</tr>\n");
    }
    h.push_str("</table>\n");
    for n in notes(c) {
        let _ = writeln!(h, "<p>{}</p>", escape(&n.replace('`', "")));
    }
    for p in plots {
        let _ = writeln!(
            h,
            "<figure><figcaption><h2>{}</h2></figcaption>\n{}\n</figure>",
            escape(&p.title),
            p.svg
        );
    }
    if !c.samples.is_empty() {
        let _ = writeln!(h, "<h2>{}</h2>", samples_title(c));
        for (k, s) in c.samples.iter().enumerate() {
            if c.is_captioning() {
                let _ = writeln!(
                    h,
                    "<h3>Image {}</h3>\n<img src=\"{}\" width=\"192\" style=\"image-rendering:pixelated\" alt=\"held-out image {}\">\n<table class=\"samples\"><tr><th>written by</th><th>caption</th></tr>\n<tr><td>references</td><td><i>{}</i></td></tr>",
                    k + 1,
                    escape(&s.prompt),
                    k + 1,
                    escape(&s.reference)
                );
            } else {
                let _ = writeln!(
                    h,
                    "<h3>Prompt {}: &ldquo;{}&rdquo;</h3>\n<table class=\"samples\"><tr><th>written by</th><th>continuation</th></tr>",
                    k + 1,
                    escape(&s.prompt)
                );
                let _ = writeln!(
                    h,
                    "<tr><td>held-out text</td><td><i>{}</i></td></tr>",
                    escape(&s.reference)
                );
            }
            for (who, text) in &s.outputs {
                let _ = writeln!(
                    h,
                    "<tr><td>{}</td><td>{}</td></tr>",
                    escape(who),
                    escape(text)
                );
            }
            h.push_str("</table>\n");
        }
    }
    h.push_str("</body></html>\n");
    h
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn three_significant_digits() {
        assert_eq!(sig(1234.4), "1234");
        assert_eq!(sig(12.345), "12.3");
        assert_eq!(sig(0.012345), "0.0123");
        assert_eq!(sig(0.0), "0");
    }

    #[test]
    fn today_is_a_date() {
        let t = today();
        assert_eq!((t.len(), &t[4..5], &t[7..8]), (10, "-", "-"));
    }
}
