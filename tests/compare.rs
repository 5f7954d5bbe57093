//! `headstart compare` end to end on the tiny BERT fixture: every run's cost
//! record and CodeCarbon-style emissions.csv, the report in its three forms
//! (the HTML self-contained), the training-size and freeze-depth sweeps,
//! budgets, and reuse of finished runs.

mod common;

use std::path::Path;
use std::process::{Command, Output};

use common::fixtures;

fn headstart(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_headstart"))
        .args(args)
        .output()
        .expect("running headstart")
}

fn ok(out: &Output) -> (String, String) {
    assert!(
        out.status.success(),
        "failed: {}\n{}",
        String::from_utf8_lossy(&out.stderr),
        String::from_utf8_lossy(&out.stdout)
    );
    (
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn write_data(dir: &Path) -> String {
    let normal = [
        "the lungs are clear.",
        "no focal consolidation.",
        "heart size is normal.",
        "no pleural effusion or pneumothorax.",
    ];
    let abnormal = [
        "mild right base atelectasis.",
        "stable left pleural effusion.",
        "focal consolidation in the right lung.",
        "mild atelectasis with effusion.",
    ];
    let mut csv = String::from("text,label\n");
    for _ in 0..15 {
        for t in normal {
            csv.push_str(&format!("\"{t}\",normal\n"));
        }
        for t in abnormal {
            csv.push_str(&format!("\"{t}\",abnormal\n"));
        }
    }
    let path = dir.join("data.csv");
    std::fs::write(&path, csv).unwrap();
    path.to_string_lossy().into_owned()
}

fn json(path: &Path) -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

#[test]
fn compare_writes_costs_and_a_self_contained_report_and_reuses_finished_runs() {
    let tmp = tempfile::tempdir().unwrap();
    let data = write_data(tmp.path());
    let out = tmp.path().join("cmp");
    let model = fixtures().join("tiny-bert");
    let cache = tmp.path().join("cache");
    let args = [
        "compare",
        "--model",
        model.to_str().unwrap(),
        "--train",
        &data,
        "--strategies",
        "scratch,head,freeze:0..L,full",
        "--seeds",
        "2",
        "--train-sizes",
        "24,48",
        "--budget",
        "2ep",
        "--batch-size",
        "8",
        "--max-length",
        "16",
        "--lr",
        "1e-3",
        "--target",
        "0.6",
        "--country",
        "FR",
        "--cache-dir",
        cache.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
    ];
    let (stdout, stderr) = ok(&headstart(&args));
    // 2 sizes x (scratch, head, freeze:0, freeze:1, freeze:2, full) x 2 seeds
    assert!(stderr.contains("[24/24]"), "{stderr}");
    assert!(stderr.contains("held out 24 of 120 examples"), "{stderr}");
    for s in [
        "scratch", "head", "freeze:0", "freeze:1", "freeze:2", "full",
    ] {
        assert!(stdout.lines().any(|l| l.starts_with(s)), "{s}: {stdout}");
    }
    assert!(stdout.contains("report.html"));

    let report = json(&out.join("report.json"));
    let runs = report["runs"].as_array().unwrap();
    assert_eq!(runs.len(), 24);
    assert_eq!(report["summary"].as_array().unwrap().len(), 12);
    let fr = report["runs"][0]["cost"]["intensity"]["g_per_kwh"]
        .as_f64()
        .unwrap();
    for r in runs {
        let dir = Path::new(r["dir"].as_str().unwrap());
        // a tested run keeps its exported model, not its resume state
        assert!(dir.join("model").join("model.safetensors").is_file());
        assert!(
            !dir.join("checkpoints").exists() && !dir.join("best").exists(),
            "{} keeps checkpoints/ or best/ without --keep-checkpoints",
            dir.display()
        );
        let cost = json(&dir.join("cost.json"));
        assert_eq!(cost, r["cost"]);
        let kwh = cost["energy"]["kwh"].as_f64().unwrap();
        assert!(kwh > 0.0);
        // CO2 is the energy at France's intensity.
        let co2 = cost["co2_kg"].as_f64().unwrap();
        assert!((co2 - kwh * fr / 1000.0).abs() <= 1e-12 * co2.max(1.0));
        assert!(cost["flops_total"].as_f64().unwrap() > 0.0);
        let phases: f64 = cost["phases"]
            .as_object()
            .unwrap()
            .values()
            .map(|v| v.as_f64().unwrap())
            .sum();
        assert!(phases <= cost["seconds"].as_f64().unwrap() + 1e-6);
        // Energy says how it was obtained: measured, or estimated and why.
        let how = cost["energy"]["cpu_how"].as_str().unwrap();
        assert!(
            how.starts_with("measured") || (how.contains("estimated") && how.contains("RAPL")),
            "{how}"
        );
        // emissions.csv in CodeCarbon's columns, one row.
        let csv = std::fs::read_to_string(dir.join("emissions.csv")).unwrap();
        let lines: Vec<&str> = csv.lines().collect();
        assert_eq!(lines.len(), 2, "{csv}");
        assert_eq!(lines[0], headstart::cost::carbon::emissions_csv_header());
        assert!(
            lines[0].starts_with("timestamp,project_name,run_id,experiment_id,duration,emissions,")
        );
        assert_eq!(
            lines[1].matches(',').count(),
            lines[0].matches(',').count(),
            "{}",
            lines[1]
        );
        assert!(lines[1].contains(",France,FRA,"), "{}", lines[1]);
        assert!(!r["curve"].as_array().unwrap().is_empty());
    }
    // Strategies with a frozen prefix were served from the feature cache.
    let head = runs.iter().find(|r| r["strategy"] == "head").unwrap();
    assert!(head["cost"]["flops"]["feature_cache"].as_f64().unwrap() > 0.0);

    // Plots, PNG and SVG; the sweeps add theirs.
    for name in [
        "curve_step",
        "curve_time",
        "curve_energy",
        "metric_vs_co2",
        "metric_vs_size",
        "freeze_depth_metric",
        "freeze_depth_cost",
    ] {
        let png = std::fs::read(out.join("plots").join(format!("{name}.png"))).unwrap();
        assert_eq!(&png[..8], b"\x89PNG\r\n\x1a\n", "{name}");
        let svg = std::fs::read_to_string(out.join("plots").join(format!("{name}.svg"))).unwrap();
        assert!(svg.starts_with("<svg"), "{name}");
    }

    // report.html is self-contained: inline SVG and styles, no external reference.
    let html = std::fs::read_to_string(out.join("report.html")).unwrap();
    assert_eq!(html.matches("<svg").count(), 7);
    let stripped = html.replace("xmlns=\"http://www.w3.org/2000/svg\"", "");
    for needle in [
        "http:", "https:", "href", "src=", "url(", "@import", "<link", "<script",
    ] {
        assert!(!stripped.contains(needle), "report.html contains {needle}");
    }
    let md = std::fs::read_to_string(out.join("report.md")).unwrap();
    assert!(
        md.contains("| strategy | train n | test accuracy (95% CI) |"),
        "{md}"
    );
    assert!(md.contains("Data multiplier: scratch"), "{md}");
    assert!(md.contains("![Test accuracy against training-set size](plots/metric_vs_size.png)"));

    // Running it again reuses every finished run.
    let started = std::time::Instant::now();
    let (again, stderr) = ok(&headstart(&args));
    assert_eq!(
        stderr.matches("done before, reused").count(),
        24,
        "{stderr}"
    );
    assert_eq!(again, stdout);
    assert!(started.elapsed().as_secs() < 60);
}

#[test]
fn budgets_in_steps_and_energy_stop_every_run() {
    let tmp = tempfile::tempdir().unwrap();
    let data = write_data(tmp.path());
    let model = fixtures().join("tiny-bert");
    for (budget, check) in [("3steps", "steps"), ("0.000000001Wh", "energy")] {
        let out = tmp.path().join(check);
        ok(&headstart(&[
            "compare",
            "--model",
            model.to_str().unwrap(),
            "--train",
            &data,
            "--strategies",
            "head,full",
            "--seeds",
            "1",
            "--budget",
            budget,
            "--batch-size",
            "8",
            "--max-length",
            "16",
            "--feature-cache",
            "memory",
            "--out",
            out.to_str().unwrap(),
        ]));
        let report = json(&out.join("report.json"));
        for r in report["runs"].as_array().unwrap() {
            let steps = r["steps"].as_u64().unwrap();
            match check {
                "steps" => assert_eq!(steps, 3, "{budget}"),
                // The first step already uses more than a nanowatt-hour.
                _ => assert_eq!(steps, 1, "{budget}"),
            }
        }
    }
}

#[test]
fn bad_compare_options_are_clear_errors() {
    let tmp = tempfile::tempdir().unwrap();
    let data = write_data(tmp.path());
    let model = fixtures().join("tiny-bert");
    let out = tmp.path().join("x");
    for (flag, value, want) in [
        ("--budget", "3 fortnights", "unknown unit"),
        ("--seeds", "0", "--seeds must be at least 1"),
        ("--country", "XX", "unknown country"),
        ("--pue", "0.5", "--pue 0.5"),
    ] {
        let o = headstart(&[
            "compare",
            "--model",
            model.to_str().unwrap(),
            "--train",
            &data,
            "--max-length",
            "16",
            "--strategies",
            "head",
            flag,
            value,
            "--out",
            out.to_str().unwrap(),
        ]);
        assert!(!o.status.success());
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(err.contains(want), "{flag} {value}: {err}");
    }
}

#[test]
fn finished_runs_are_reused_on_the_same_data_test_set_and_weights_wherever_the_folder_moves() {
    let tmp = tempfile::tempdir().unwrap();
    let data = write_data(tmp.path());
    let test = tmp.path().join("test.csv");
    let test_rows = "text,label\n\"no effusion.\",normal\n\"left base consolidation.\",abnormal\n\
                     \"the lungs are clear.\",normal\n\"mild atelectasis.\",abnormal\n";
    std::fs::write(&test, test_rows).unwrap();
    let model = tmp.path().join("model");
    common::copy_dir(&fixtures().join("tiny-bert"), &model);
    let out = tmp.path().join("cmp");
    let cache = tmp.path().join("cache");
    let run_in = |out: &Path, limit: Option<&str>| {
        let mut args = vec![
            "compare",
            "--keep-checkpoints",
            "--model",
            model.to_str().unwrap(),
            "--train",
            &data,
            "--test",
            test.to_str().unwrap(),
            "--strategies",
            "head",
            "--seeds",
            "1",
            "--budget",
            "1ep",
            "--max-length",
            "16",
            "--cache-dir",
            cache.to_str().unwrap(),
            "--out",
            out.to_str().unwrap(),
        ];
        if let Some(k) = limit {
            args.extend(["--test-limit", k]);
        }
        let (_, stderr) = ok(&headstart(&args));
        stderr.contains("done before, reused")
    };
    let run = |limit: Option<&str>| run_in(&out, limit);
    assert!(!run(None), "the first run trains");
    let dir = out.join("runs");
    let kept = std::fs::read_dir(&dir)
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path();
    assert!(
        kept.join("checkpoints").join("LAST").is_file(),
        "--keep-checkpoints keeps {}/checkpoints",
        kept.display()
    );
    assert!(run(None), "the same comparison again is reused");
    // The test file's contents change under the same name.
    std::fs::write(
        &test,
        format!("{test_rows}\"heart size is normal.\",normal\n"),
    )
    .unwrap();
    assert!(!run(None), "a changed test file is not reused");
    assert!(run(None));
    assert!(!run(Some("2")), "a different --test-limit is not reused");
    // The training file's contents change under the same name.
    let mut rows = std::fs::read_to_string(&data).unwrap();
    rows.push_str("\"stable cardiomegaly.\",abnormal\n");
    std::fs::write(&data, rows).unwrap();
    assert!(!run(Some("2")), "changed training data is not reused");
    // The model's weights change in place.
    common::nudge_weight(
        &model.join("model.safetensors"),
        "encoder.layer.0.output.dense.bias",
        0,
        0.5,
    );
    assert!(!run(Some("2")), "changed weights are not reused");
    assert!(run(Some("2")));
    // The comparison folder moves: its run is reused from the new place,
    // and the report points there.
    let moved = tmp.path().join("moved");
    std::fs::rename(&out, &moved).unwrap();
    assert!(
        run_in(&moved, Some("2")),
        "a moved comparison keeps its runs"
    );
    let report = json(&moved.join("report.json"));
    let dir = report["runs"][0]["dir"].as_str().unwrap();
    assert!(Path::new(dir).starts_with(&moved), "{dir}");
}
