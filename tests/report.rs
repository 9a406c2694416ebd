//! End-to-end: two real models (SmolLM2-135M and Gemma-3 270M) answer the same questions into one
//! database through the real binary; then `compare`, `report` and `score` read it, every view
//! returns rows, and the HTML report is rendered by headless Chromium.

mod common;

use common::*;
use docent_eval::report::{COLUMNS, CSV_HEADER};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

const FAST: &[&str] = &["--max-tokens", "12", "--threads", "2", "--ctx", "512"];

/// Short-answer and multiple-choice questions of the bundled set in three categories, plus one
/// question too long for `--ctx 512` (an error row in every run).
fn mixed_questions(dir: &Path) -> PathBuf {
    let bundled = std::fs::read_to_string(bundled_questions()).unwrap();
    let wanted = ["kh-001", "kh-007", "kh-013", "kh-031", "kh-037", "kh-043"];
    let mut lines: Vec<String> = bundled
        .lines()
        .filter(|line| wanted.iter().any(|id| line.contains(&format!("\"{id}\""))))
        .map(str::to_string)
        .collect();
    assert_eq!(lines.len(), wanted.len());
    let long = "조선의 역사를 시대별로 자세히 설명하세요. ".repeat(150);
    lines.push(format!(
        "{{\"id\":\"long\",\"category\":\"조선\",\"question\":\"{long}\",\"answer\":\"조선\"}}"
    ));
    write_questions(dir, "mixed.jsonl", &(lines.join("\n") + "\n"))
}

fn cli(args: &[&str]) -> Output {
    Command::new(BIN)
        .args(args)
        .env("RUST_LOG", "warn")
        .stdin(Stdio::null())
        .output()
        .expect("spawn docent-eval")
}

fn ok_stdout(output: &Output) -> String {
    assert_eq!(code(output), 0, "stderr: {}", stderr(output));
    stdout(output)
}

/// (question_id, score, exact_match, f1, chosen_index) of every answer, in a stable order.
type ScoreRow = (
    i64,
    String,
    Option<f64>,
    Option<i64>,
    Option<f64>,
    Option<i64>,
);

fn score_rows(db: &Path) -> Vec<ScoreRow> {
    let connection = open(db);
    let mut statement = connection
        .prepare(
            "SELECT run_id, question_id, score, exact_match, f1, chosen_index
             FROM answers ORDER BY run_id, question_id",
        )
        .unwrap();
    let rows = statement
        .query_map([], |r| {
            Ok((
                r.get(0)?,
                r.get(1)?,
                r.get(2)?,
                r.get(3)?,
                r.get(4)?,
                r.get(5)?,
            ))
        })
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    rows
}

fn chromium() -> PathBuf {
    for name in ["chromium", "chromium-browser", "google-chrome"] {
        if let Ok(path) = which(name) {
            return path;
        }
    }
    panic!("headless Chromium is missing: run `make deps` (installs the Debian package chromium)");
}

fn which(name: &str) -> Result<PathBuf, ()> {
    let path = std::env::var_os("PATH").ok_or(())?;
    std::env::split_paths(&path)
        .map(|dir| dir.join(name))
        .find(|candidate| candidate.is_file())
        .ok_or(())
}

/// Run headless Chromium on `page` with `extra` flags; returns stdout (through a file, so that a
/// large `--dump-dom` never fills a pipe). Killed after 120 s.
fn run_chromium(page: &Path, profile: &Path, extra: &[String]) -> String {
    let stdout_path = profile.with_extension("stdout");
    let stdout_file = std::fs::File::create(&stdout_path).unwrap();
    let mut child = Command::new(chromium())
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--hide-scrollbars",
        ])
        .arg(format!("--user-data-dir={}", profile.display()))
        .args(extra)
        .arg(format!("file://{}", page.display()))
        .stdin(Stdio::null())
        .stdout(stdout_file)
        .stderr(Stdio::null())
        .spawn()
        .expect("start chromium");
    let start = Instant::now();
    loop {
        if child.try_wait().unwrap().is_some() {
            break;
        }
        if start.elapsed() > Duration::from_secs(120) {
            child.kill().ok();
            panic!("chromium did not finish in 120 s");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    String::from_utf8_lossy(&std::fs::read(&stdout_path).unwrap()).into_owned()
}

/// (pixels, pixels that are not near-white, clearly coloured pixels) of a PNG screenshot.
fn pixel_counts(png_path: &Path) -> (usize, usize, usize) {
    let mut decoder = png::Decoder::new(std::fs::File::open(png_path).unwrap());
    decoder.set_transformations(png::Transformations::EXPAND | png::Transformations::STRIP_16);
    let mut reader = decoder.read_info().unwrap();
    let mut buffer = vec![0; reader.output_buffer_size()];
    let frame = reader.next_frame(&mut buffer).unwrap();
    let channels = match frame.color_type {
        png::ColorType::Rgba => 4,
        png::ColorType::Rgb => 3,
        png::ColorType::GrayscaleAlpha => 2,
        _ => 1,
    };
    let data = &buffer[..frame.buffer_size()];
    let (mut total, mut ink, mut colour) = (0, 0, 0);
    for pixel in data.chunks_exact(channels) {
        let rgb = if channels >= 3 {
            [pixel[0], pixel[1], pixel[2]]
        } else {
            [pixel[0]; 3]
        };
        total += 1;
        if rgb.iter().any(|&c| c < 230) {
            ink += 1;
        }
        let max = *rgb.iter().max().unwrap();
        let min = *rgb.iter().min().unwrap();
        if max - min > 60 {
            colour += 1;
        }
    }
    (total, ink, colour)
}

#[test]
fn two_models_compare_report_rescore_views_and_a_rendered_html_report() {
    let dir = tempdir();
    let db = dir.path().join("results.db");
    let questions = mixed_questions(dir.path());
    for model in [smollm(), gemma()] {
        let output = run(&model, &questions, &db, FAST);
        // The long question fails in both runs: finished with a failed question.
        assert_eq!(code(&output), 1, "{}", stderr(&output));
    }
    let db_arg = db.to_str().unwrap();

    // compare (Markdown, the default): one row per run, every column.
    let md = ok_stdout(&cli(&["compare", "--db", db_arg]));
    let header = md
        .lines()
        .find(|l| l.starts_with("| run |"))
        .unwrap_or_else(|| panic!("no table header in:\n{md}"));
    for (name, _) in COLUMNS {
        assert!(
            header.contains(&format!("| {name} |")),
            "column {name:?} missing from {header}"
        );
    }
    let rows: Vec<&str> = md
        .lines()
        .skip_while(|l| !l.starts_with("| run |"))
        .skip(2)
        .take_while(|l| l.starts_with('|'))
        .collect();
    assert_eq!(rows.len(), 2, "one row per run:\n{md}");
    assert!(rows[0].contains("SmolLM2-135M-Instruct.Q4_1") && rows[0].contains("| Q4_1 |"));
    assert!(rows[1].contains("gemma-3-270m-q4_k_m") && rows[1].contains("| Q4_K_M |"));
    for row in &rows {
        assert_eq!(row.matches(" | ").count() + 1, COLUMNS.len(), "{row}");
        assert!(row.contains("| 7/7 |"), "{row}");
        assert!(row.contains("| 85.7% |"), "6 of 7 ok: {row}");
        assert!(row.contains("×1 prompt of N tokens"), "{row}");
        assert!(row.contains(" ms |"), "{row}");
    }
    assert!(
        md.contains("### Per category") && md.contains("| 조선 |"),
        "{md}"
    );
    assert!(md.contains("### Errors by reason"), "{md}");

    // CSV and JSON parse, with the same figures.
    let csv_text = ok_stdout(&cli(&["compare", "--db", db_arg, "--format", "csv"]));
    let mut reader = csv::Reader::from_reader(csv_text.as_bytes());
    assert_eq!(reader.headers().unwrap().len(), CSV_HEADER.len());
    let records: Vec<csv::StringRecord> = reader.records().map(Result::unwrap).collect();
    assert_eq!(records.len(), 2);
    let column = |name: &str| CSV_HEADER.iter().position(|h| *h == name).unwrap();
    for record in &records {
        assert_eq!(&record[column("questions_done")], "7");
        assert_eq!(&record[column("errors")], "1");
        assert_eq!(&record[column("mc_n")], "3");
        assert_eq!(&record[column("free_text_n")], "4");
        assert!(record[column("latency_p95_ms")].parse::<f64>().unwrap() > 0.0);
        assert!(record[column("peak_rss_bytes")].parse::<i64>().unwrap() > 50 << 20);
    }
    let json_text = ok_stdout(&cli(&[
        "compare", "--db", db_arg, "1", "2", "--format", "json",
    ]));
    let json: serde_json::Value = serde_json::from_str(&json_text).unwrap();
    let runs = json["runs"].as_array().unwrap();
    assert_eq!(runs.len(), 2);
    assert_eq!(runs[0]["model"]["quantization"], "Q4_1");
    assert_eq!(runs[1]["model"]["architecture"], "gemma3");
    assert_eq!(runs[0]["categories"].as_array().unwrap().len(), 3);
    assert!(runs[0]["ttft_ms"]["p95"].as_f64().unwrap() > 0.0);
    let low = runs[0]["mc_accuracy"]["low"].as_f64().unwrap();
    let high = runs[0]["mc_accuracy"]["high"].as_f64().unwrap();
    assert!((0.0..=1.0).contains(&low) && low < high && high <= 1.0);

    // report: the latest run by default; a missing run is a usage error naming the flag.
    let report = ok_stdout(&cli(&["report", "--db", db_arg]));
    assert!(
        report.starts_with("## Run 2 · gemma-3-270m-q4_k_m"),
        "{report}"
    );
    assert!(
        report.contains("| errors | ×1 prompt of N tokens"),
        "{report}"
    );
    let report_json = ok_stdout(&cli(&[
        "report", "--db", db_arg, "--run-id", "1", "--format", "json",
    ]));
    let report_json: serde_json::Value = serde_json::from_str(&report_json).unwrap();
    assert_eq!(report_json["runs"][0]["run_id"], 1);
    let missing = cli(&["report", "--db", db_arg, "--run-id", "99"]);
    assert_eq!(code(&missing), 2);
    assert!(
        stderr(&missing).contains("--run-id 99"),
        "{}",
        stderr(&missing)
    );
    let missing = cli(&["compare", "--db", db_arg, "42"]);
    assert_eq!(code(&missing), 2);
    assert!(
        stderr(&missing).contains("RUN_ID 42"),
        "{}",
        stderr(&missing)
    );
    let bad_format = cli(&["compare", "--db", db_arg, "--format", "pdf"]);
    assert_eq!(code(&bad_format), 2, "{}", stderr(&bad_format));
    let no_db = cli(&[
        "compare",
        "--db",
        dir.path().join("none.db").to_str().unwrap(),
    ]);
    assert_eq!(code(&no_db), 2);

    // score: rescoring unchanged answers changes nothing; tampered scores are restored.
    let before = score_rows(&db);
    assert_eq!(before.len(), 14);
    let rescored = ok_stdout(&cli(&["score", "--db", db_arg]));
    assert!(
        rescored.contains("rescored 12 answers of run(s) 1, 2: 0 changed"),
        "{rescored}"
    );
    assert_eq!(score_rows(&db), before);
    open(&db)
        .execute(
            "UPDATE answers SET score = 0.5, chosen_index = 9 WHERE run_id = 1 AND status = 'ok'",
            [],
        )
        .unwrap();
    let rescored = ok_stdout(&cli(&["score", "--db", db_arg, "--run-id", "1"]));
    assert!(
        rescored.contains("rescored 6 answers of run(s) 1: 6 changed"),
        "{rescored}"
    );
    assert_eq!(score_rows(&db), before);

    // Every view returns rows on these real runs.
    let connection = open(&db);
    for (view, expected) in [
        ("run_summary", 2),
        ("answers_view", 14),
        ("category_summary", 6),
        ("errors", 2),
        ("memory_peaks", 2),
    ] {
        let rows: i64 = connection
            .query_row(&format!("SELECT COUNT(*) FROM {view}"), [], |r| r.get(0))
            .unwrap();
        assert_eq!(rows, expected, "rows of view {view}");
    }
    let (reason, model): (String, String) = connection
        .query_row(
            "SELECT error, model_name FROM errors WHERE run_id = 1",
            [],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .unwrap();
    assert!(reason.contains("exceeds the context of 512"), "{reason}");
    assert_eq!(model, "SmolLM2-135M-Instruct.Q4_1");
    let (samples, peak_rss, peak_at): (i64, i64, String) = connection
        .query_row(
            "SELECT samples, peak_rss_bytes, peak_rss_at FROM memory_peaks WHERE run_id = 2",
            [],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
        )
        .unwrap();
    assert!(samples >= 2 && peak_rss > 100 << 20 && peak_at.ends_with('Z'));
    let (done, mc_n, free_n): (i64, i64, i64) = connection
        .query_row(
            "SELECT SUM(done), SUM(mc_n), SUM(free_n) FROM category_summary WHERE run_id = 1",
            [],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
        )
        .unwrap();
    assert_eq!((done, mc_n, free_n), (7, 3, 4));

    // HTML: one file, rendered by headless Chromium with every chart.
    let page = dir.path().join("report.html");
    ok_stdout(&cli(&[
        "compare",
        "--db",
        db_arg,
        "--format",
        "html",
        "--out",
        page.to_str().unwrap(),
    ]));
    let html = std::fs::read_to_string(&page).unwrap();
    let charts = 1 + 2 * 2; // accuracy per category + (memory timeline + latency) per run
    assert_eq!(html.matches("<svg").count(), charts);
    assert!(!html.contains("<script") && !html.contains("<link"));
    let profile = dir.path().join("chromium-profile");
    let dom = run_chromium(&page, &profile, &["--dump-dom".to_string()]);
    assert_eq!(
        dom.matches("<svg").count(),
        charts,
        "SVG elements in the browser's DOM"
    );
    assert!(dom.contains("Memory over time") && dom.contains("Accuracy per category"));
    let shot = dir.path().join("report.png");
    run_chromium(
        &page,
        &profile,
        &[
            format!("--screenshot={}", shot.display()),
            "--window-size=1280,2400".to_string(),
        ],
    );
    assert!(shot.exists(), "chromium wrote no screenshot");
    let (total, ink, colour) = pixel_counts(&shot);
    assert_eq!(total, 1280 * 2400);
    assert!(
        ink > total / 50,
        "screenshot nearly blank: {ink} of {total} pixels not white"
    );
    assert!(
        colour > 5_000,
        "chart colours missing: {colour} coloured pixels"
    );
}
