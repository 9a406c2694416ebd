//! Reports end to end: two real models (SmolLM2-135M and Gemma-3 270M) answer the same questions
//! into one database through the real binary, once for the whole module; then `compare`, `report`
//! and `score` read it, every view returns rows, and the HTML report is rendered by headless
//! Chromium. Each test checks one thing; the ones that change the database work on a copy.

use crate::util::*;
use docent_eval::report::{COLUMNS, CSV_HEADER};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

const FAST: &[&str] = &["--max-tokens", "12", "--threads", "2", "--ctx", "512"];

/// Charts of the HTML comparison: accuracy per category + (memory timeline + latency) per run.
const CHARTS: usize = 1 + 2 * 2;

/// Only a guard against a hung browser, far beyond what a loaded machine needs.
const CHROMIUM_HANG_GUARD: Duration = Duration::from_secs(300);

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

/// The database both runs wrote, and each run's exit code and stderr.
struct Fixture {
    db: PathBuf,
    runs: Vec<(Option<i32>, String)>,
}

/// SmolLM2 then Gemma-3 on [`mixed_questions`] into one database, built once per test process
/// (under Cargo's target tmp dir, recreated each time).
fn fixture() -> &'static Fixture {
    static FIXTURE: OnceLock<Fixture> = OnceLock::new();
    FIXTURE.get_or_init(|| {
        let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("report-fixture");
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("fixture dir");
        let db = dir.join("results.db");
        let questions = mixed_questions(&dir);
        let runs = [smollm(), gemma()]
            .iter()
            .map(|model| {
                let output = run(model, &questions, &db, FAST);
                (output.status.code(), stderr(&output))
            })
            .collect();
        Fixture { db, runs }
    })
}

/// The shared database as a `--db` argument (for commands that only read it).
fn db_arg() -> &'static str {
    fixture().db.to_str().unwrap()
}

/// A private copy of the shared database in `dir`, for a test that changes it.
fn private_copy(dir: &Path) -> PathBuf {
    let copy = dir.join("copy.db");
    open(&fixture().db)
        .execute("VACUUM INTO ?1", [copy.to_str().unwrap()])
        .expect("copy the database");
    copy
}

/// `compare --format md` of both runs.
fn compare_markdown() -> String {
    ok_stdout(&cli(&["compare", "--db", db_arg()]))
}

/// The data rows of the Markdown comparison table.
fn markdown_rows(md: &str) -> Vec<&str> {
    md.lines()
        .skip_while(|l| !l.starts_with("| run |"))
        .skip(2)
        .take_while(|l| l.starts_with('|'))
        .collect()
}

/// `compare --format html --out DIR/report.html`; returns the page.
fn html_report(dir: &Path) -> PathBuf {
    let page = dir.join("report.html");
    ok_stdout(&cli(&[
        "compare",
        "--db",
        db_arg(),
        "--format",
        "html",
        "--out",
        page.to_str().unwrap(),
    ]));
    page
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
/// large `--dump-dom` never fills a pipe). Killed if it hangs.
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
        if start.elapsed() > CHROMIUM_HANG_GUARD {
            child.kill().ok();
            panic!("chromium did not finish in {CHROMIUM_HANG_GUARD:?}");
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
fn each_run_finishes_with_exit_1_for_the_question_too_long_for_its_context() {
    for (model, (code, stderr)) in ["SmolLM2", "Gemma-3"].iter().zip(&fixture().runs) {
        assert_eq!(*code, Some(1), "{model}: {stderr}");
    }
}

#[test]
fn compare_markdown_header_names_every_column() {
    let md = compare_markdown();
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
}

#[test]
fn compare_markdown_has_one_row_per_run_with_its_model_and_figures() {
    let md = compare_markdown();
    let rows = markdown_rows(&md);
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
}

#[test]
fn compare_markdown_has_per_category_and_errors_by_reason_sections() {
    let md = compare_markdown();
    assert!(
        md.contains("### Per category") && md.contains("| 조선 |"),
        "{md}"
    );
    assert!(md.contains("### Errors by reason"), "{md}");
}

#[test]
fn compare_csv_has_the_documented_header_and_each_runs_figures() {
    let csv_text = ok_stdout(&cli(&["compare", "--db", db_arg(), "--format", "csv"]));
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
}

#[test]
fn compare_json_has_both_models_their_categories_and_an_accuracy_interval() {
    let json_text = ok_stdout(&cli(&[
        "compare",
        "--db",
        db_arg(),
        "1",
        "2",
        "--format",
        "json",
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
}

#[test]
fn report_shows_the_latest_run_by_default_with_its_errors() {
    let report = ok_stdout(&cli(&["report", "--db", db_arg()]));
    assert!(
        report.starts_with("## Run 2 · gemma-3-270m-q4_k_m"),
        "{report}"
    );
    assert!(
        report.contains("| errors | ×1 prompt of N tokens"),
        "{report}"
    );
}

#[test]
fn report_json_shows_the_run_chosen_by_id() {
    let report_json = ok_stdout(&cli(&[
        "report",
        "--db",
        db_arg(),
        "--run-id",
        "1",
        "--format",
        "json",
    ]));
    let report_json: serde_json::Value = serde_json::from_str(&report_json).unwrap();
    assert_eq!(report_json["runs"][0]["run_id"], 1);
}

#[test]
fn report_of_a_missing_run_exits_2_naming_the_flag() {
    let missing = cli(&["report", "--db", db_arg(), "--run-id", "99"]);
    assert_eq!(code(&missing), 2);
    assert!(
        stderr(&missing).contains("--run-id 99"),
        "{}",
        stderr(&missing)
    );
}

#[test]
fn compare_of_a_missing_run_exits_2_naming_it() {
    let missing = cli(&["compare", "--db", db_arg(), "42"]);
    assert_eq!(code(&missing), 2);
    assert!(
        stderr(&missing).contains("RUN_ID 42"),
        "{}",
        stderr(&missing)
    );
}

#[test]
fn compare_in_an_unknown_format_exits_2() {
    let bad_format = cli(&["compare", "--db", db_arg(), "--format", "pdf"]);
    assert_eq!(code(&bad_format), 2, "{}", stderr(&bad_format));
}

#[test]
fn compare_without_a_database_exits_2_and_creates_none() {
    let dir = tempdir();
    let none = dir.path().join("none.db");
    let no_db = cli(&["compare", "--db", none.to_str().unwrap()]);
    assert_eq!(code(&no_db), 2, "{}", stderr(&no_db));
    assert!(!none.exists(), "a read-only command creates no database");
}

#[test]
fn rescoring_unchanged_answers_changes_nothing() {
    let dir = tempdir();
    let db = private_copy(dir.path());
    let before = score_rows(&db);
    assert_eq!(before.len(), 14);
    let rescored = ok_stdout(&cli(&["score", "--db", db.to_str().unwrap()]));
    assert!(
        rescored.contains("rescored 12 answers of run(s) 1, 2: 0 changed"),
        "{rescored}"
    );
    assert_eq!(score_rows(&db), before);
}

#[test]
fn rescoring_restores_tampered_scores() {
    let dir = tempdir();
    let db = private_copy(dir.path());
    let before = score_rows(&db);
    assert_eq!(before.len(), 14);
    open(&db)
        .execute(
            "UPDATE answers SET score = 0.5, chosen_index = 9 WHERE run_id = 1 AND status = 'ok'",
            [],
        )
        .unwrap();
    let rescored = ok_stdout(&cli(&[
        "score",
        "--db",
        db.to_str().unwrap(),
        "--run-id",
        "1",
    ]));
    assert!(
        rescored.contains("rescored 6 answers of run(s) 1: 6 changed"),
        "{rescored}"
    );
    assert_eq!(score_rows(&db), before);
}

#[test]
fn every_view_returns_rows_for_both_runs() {
    let connection = open(&fixture().db);
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
}

#[test]
fn errors_view_names_the_reason_and_the_model() {
    let (reason, model): (String, String) = open(&fixture().db)
        .query_row(
            "SELECT error, model_name FROM errors WHERE run_id = 1",
            [],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .unwrap();
    assert!(reason.contains("exceeds the context of 512"), "{reason}");
    assert_eq!(model, "SmolLM2-135M-Instruct.Q4_1");
}

#[test]
fn memory_peaks_view_has_samples_and_a_timestamped_peak() {
    let (samples, peak_rss, peak_at): (i64, i64, String) = open(&fixture().db)
        .query_row(
            "SELECT samples, peak_rss_bytes, peak_rss_at FROM memory_peaks WHERE run_id = 2",
            [],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
        )
        .unwrap();
    assert!(samples >= 2 && peak_rss > 100 << 20 && peak_at.ends_with('Z'));
}

#[test]
fn category_summary_counts_multiple_choice_and_free_text() {
    let (done, mc_n, free_n): (i64, i64, i64) = open(&fixture().db)
        .query_row(
            "SELECT SUM(done), SUM(mc_graded), SUM(free_graded) FROM category_summary WHERE run_id = 1",
            [],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
        )
        .unwrap();
    assert_eq!((done, mc_n, free_n), (7, 3, 4));
}

#[test]
fn html_report_is_one_self_contained_file_with_every_chart() {
    let dir = tempdir();
    let html = std::fs::read_to_string(html_report(dir.path())).unwrap();
    assert_eq!(html.matches("<svg").count(), CHARTS);
    assert!(!html.contains("<script") && !html.contains("<link"));
}

#[test]
fn html_report_has_every_chart_in_headless_chromiums_dom() {
    let dir = tempdir();
    let page = html_report(dir.path());
    let profile = dir.path().join("chromium-profile");
    let dom = run_chromium(&page, &profile, &["--dump-dom".to_string()]);
    assert_eq!(
        dom.matches("<svg").count(),
        CHARTS,
        "SVG elements in the browser's DOM"
    );
    assert!(dom.contains("Memory over time") && dom.contains("Accuracy per category"));
}

#[test]
fn html_report_screenshot_is_neither_blank_nor_colourless() {
    let dir = tempdir();
    let page = html_report(dir.path());
    let profile = dir.path().join("chromium-profile");
    let shot = dir.path().join("report.png");
    run_chromium(
        &page,
        &profile,
        &[
            format!("--screenshot={}", shot.display()),
            "--window-size=1280,3200".to_string(),
        ],
    );
    assert!(shot.exists(), "chromium wrote no screenshot");
    let (total, ink, colour) = pixel_counts(&shot);
    assert_eq!(total, 1280 * 3200);
    assert!(
        ink > total / 50,
        "screenshot nearly blank: {ink} of {total} pixels not white"
    );
    assert!(
        colour > 5_000,
        "chart colours missing: {colour} coloured pixels"
    );
}
