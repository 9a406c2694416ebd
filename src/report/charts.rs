//! Charts of the HTML report, drawn with `plotters` into SVG text (inlined in the page).

use super::data::{MemoryPoint, RunReport};
use plotters::coord::types::RangedCoordf64;
use plotters::coord::Shift;
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};

type DrawResult = Result<(), Box<dyn std::error::Error>>;
/// A labelled, coloured line of a chart.
type Line<'a> = (&'a str, RGBColor, Vec<(f64, f64)>);
/// The chart every f64-by-f64 figure here is drawn on.
type Chart<'a, 'b> = ChartContext<'a, SVGBackend<'b>, Cartesian2d<RangedCoordf64, RangedCoordf64>>;

/// Colours of runs in multi-run charts (Tableau 10).
pub const RUN_COLORS: [RGBColor; 8] = [
    RGBColor(31, 119, 180),
    RGBColor(255, 127, 14),
    RGBColor(44, 160, 44),
    RGBColor(214, 39, 40),
    RGBColor(148, 103, 189),
    RGBColor(140, 86, 75),
    RGBColor(227, 119, 194),
    RGBColor(127, 127, 127),
];

const RSS: RGBColor = RGBColor(31, 119, 180);
const RAM: RGBColor = RGBColor(44, 160, 44);
const SWAP: RGBColor = RGBColor(255, 127, 14);
const GPU: RGBColor = RGBColor(148, 103, 189);
const MARK: RGBColor = RGBColor(60, 60, 60);
const FONT: &str = "sans-serif";

/// Most points per line; longer timelines keep each bucket's maximum (peaks survive).
const MAX_POINTS: usize = 1500;

/// Draw into an SVG string of `size`; a drawing error becomes a one-line SVG saying so.
fn svg(
    size: (u32, u32),
    draw: impl FnOnce(&DrawingArea<SVGBackend, Shift>) -> DrawResult,
) -> String {
    let mut text = String::new();
    let outcome = {
        let root = SVGBackend::with_string(&mut text, size).into_drawing_area();
        root.fill(&WHITE)
            .map_err(|e| Box::new(e) as Box<dyn std::error::Error>)
            .and_then(|_| draw(&root))
            .and_then(|_| root.present().map_err(|e| e.into()))
    };
    match outcome {
        Ok(()) => text,
        Err(e) => {
            log::warn!("chart could not be drawn: {e}");
            let mut fallback = String::new();
            {
                let root = SVGBackend::with_string(&mut fallback, size).into_drawing_area();
                let _ = root.fill(&WHITE);
                let _ = root.draw(&Text::new(
                    format!("chart could not be drawn: {e}"),
                    (10, 20),
                    (FONT, 14),
                ));
                let _ = root.present();
            }
            fallback
        }
    }
}

fn placeholder(root: &DrawingArea<SVGBackend, Shift>, title: &str, message: &str) -> DrawResult {
    root.draw(&Text::new(
        title.to_string(),
        (10, 8),
        (FONT, 18).into_font(),
    ))?;
    root.draw(&Text::new(
        message.to_string(),
        (10, 40),
        (FONT, 14).into_font().color(&RGBColor(90, 90, 90)),
    ))?;
    Ok(())
}

/// Keep at most `limit` points: split into buckets and keep each bucket's largest `y`.
fn thin(points: Vec<(f64, f64)>, limit: usize) -> Vec<(f64, f64)> {
    if points.len() <= limit || limit == 0 {
        return points;
    }
    let bucket = points.len().div_ceil(limit);
    points
        .chunks(bucket)
        .filter_map(|chunk| chunk.iter().copied().max_by(|a, b| a.1.total_cmp(&b.1)))
        .collect()
}

/// A byte unit that keeps the axis readable: MiB below 4 GiB, else GiB.
fn byte_unit(max_bytes: f64) -> (f64, &'static str) {
    if max_bytes < 4.0 * 1024.0 * 1024.0 * 1024.0 {
        (1024.0 * 1024.0, "MiB")
    } else {
        (1024.0 * 1024.0 * 1024.0, "GiB")
    }
}

fn series(
    timeline: &[MemoryPoint],
    field: impl Fn(&MemoryPoint) -> Option<i64>,
    unit: f64,
) -> Vec<(f64, f64)> {
    thin(
        timeline
            .iter()
            .filter_map(|p| field(p).map(|v| (p.t_s, v as f64 / unit)))
            .collect(),
        MAX_POINTS,
    )
}

/// Memory over time of one run: RSS, host RAM in use, swap in use and GPU memory in use (when
/// recorded), with a mark at each answer's completion (at the RSS recorded with the answer).
pub fn memory_timeline(run: &RunReport) -> String {
    svg((960, 340), |root| {
        let title = format!("Run {} · memory over time", run.run_id);
        if run.timeline.is_empty() {
            return placeholder(root, &title, "no memory samples recorded");
        }
        let max_bytes = peak_memory_bytes(run);
        let (unit, unit_name) = byte_unit(max_bytes);
        let marks = answer_marks(run, unit);
        let x_max_s = time_axis_end_s(run, &marks);
        let y_max = max_bytes / unit * 1.1;
        let mut chart = memory_axes(root, title, x_max_s, y_max, unit_name)?;
        draw_lines(&mut chart, memory_lines(run, unit))?;
        draw_answer_marks(&mut chart, &marks)?;
        draw_legend(&mut chart, SeriesLabelPosition::LowerRight)
    })
}

/// The largest memory figure of the run (samples and answers), at least 1 so the axis has a
/// height.
fn peak_memory_bytes(run: &RunReport) -> f64 {
    run.timeline
        .iter()
        .flat_map(|p| {
            [
                p.rss_bytes,
                p.ram_used_bytes,
                p.swap_used_bytes,
                p.gpu_used_bytes,
            ]
        })
        .flatten()
        .chain(run.answers.iter().filter_map(|a| a.rss_bytes))
        .max()
        .unwrap_or(1)
        .max(1) as f64
}

/// (seconds, RSS in `unit`) of each ok answer that recorded both.
fn answer_marks(run: &RunReport, unit: f64) -> Vec<(f64, f64)> {
    run.answers
        .iter()
        .filter(|a| a.ok == Some(true))
        .filter_map(|a| Some((a.finished_s?, a.rss_bytes? as f64 / unit)))
        .collect()
}

/// The right end of the time axis: the last sample or mark (at least 1 s), with 2% room.
fn time_axis_end_s(run: &RunReport, marks: &[(f64, f64)]) -> f64 {
    run.timeline
        .iter()
        .map(|p| p.t_s)
        .chain(marks.iter().map(|m| m.0))
        .fold(1.0_f64, f64::max)
        * 1.02
}

/// Axes of the memory chart: seconds across, `unit_name` up (one decimal for GiB).
fn memory_axes<'a, 'b>(
    root: &'a DrawingArea<SVGBackend<'b>, Shift>,
    title: String,
    x_max_s: f64,
    y_max: f64,
    unit_name: &str,
) -> Result<Chart<'a, 'b>, Box<dyn std::error::Error>> {
    let mut chart = ChartBuilder::on(root)
        .caption(title, (FONT, 18))
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(70)
        .build_cartesian_2d(0.0..x_max_s, 0.0..y_max)?;
    chart
        .configure_mesh()
        .x_desc("seconds since the run started")
        .y_desc(unit_name)
        .x_label_formatter(&|v| format!("{v:.0}"))
        .y_label_formatter(&|v| {
            if unit_name == "GiB" {
                format!("{v:.1}")
            } else {
                format!("{v:.0}")
            }
        })
        .light_line_style(RGBColor(235, 235, 235))
        .draw()?;
    Ok(chart)
}

/// The memory lines in drawing order (RSS last, on top), in `unit`.
fn memory_lines(run: &RunReport, unit: f64) -> [Line<'static>; 4] {
    [
        (
            "RAM used (host)",
            RAM,
            series(&run.timeline, |p| p.ram_used_bytes, unit),
        ),
        (
            "swap used",
            SWAP,
            series(&run.timeline, |p| p.swap_used_bytes, unit),
        ),
        (
            "GPU used",
            GPU,
            series(&run.timeline, |p| p.gpu_used_bytes, unit),
        ),
        (
            "process RSS",
            RSS,
            series(&run.timeline, |p| p.rss_bytes, unit),
        ),
    ]
}

/// Draw each line that has points, with its legend entry (an unrecorded figure gets neither).
fn draw_lines(chart: &mut Chart, lines: [Line; 4]) -> DrawResult {
    for (label, color, points) in lines {
        if points.is_empty() {
            continue;
        }
        chart
            .draw_series(LineSeries::new(points, color.stroke_width(2)))?
            .label(label)
            .legend(move |(x, y)| {
                PathElement::new(vec![(x, y), (x + 18, y)], color.stroke_width(2))
            });
    }
    Ok(())
}

fn draw_answer_marks(chart: &mut Chart, marks: &[(f64, f64)]) -> DrawResult {
    if marks.is_empty() {
        return Ok(());
    }
    chart
        .draw_series(
            marks
                .iter()
                .map(|&(x, y)| Circle::new((x, y), 3, MARK.filled())),
        )?
        .label("answer completed")
        .legend(|(x, y)| Circle::new((x + 9, y), 3, MARK.filled()));
    Ok(())
}

/// The legend box of the labelled series, at `position`.
fn draw_legend<'a, 'b: 'a>(chart: &mut Chart<'a, 'b>, position: SeriesLabelPosition) -> DrawResult {
    chart
        .configure_series_labels()
        .position(position)
        .background_style(WHITE.mix(0.85))
        .border_style(RGBColor(200, 200, 200))
        .label_font((FONT, 13))
        .draw()?;
    Ok(())
}

/// Histogram of the latencies of one run's ok answers, with the median and p95 marked.
pub fn latency_distribution(run: &RunReport, color: RGBColor) -> String {
    svg((960, 300), |root| {
        let title = format!("Run {} · latency of answers", run.run_id);
        let latencies: Vec<f64> = run
            .answers
            .iter()
            .filter(|a| a.ok == Some(true))
            .filter_map(|a| a.latency_ms)
            .filter(|l| l.is_finite())
            .map(|l| l / 1000.0)
            .collect();
        let Some(spread) = run.latency_ms else {
            return placeholder(root, &title, "no answered questions");
        };
        let max = latencies.iter().copied().fold(0.0_f64, f64::max).max(1e-3);
        let bins = ((latencies.len() as f64).sqrt().ceil() as usize).clamp(5, 30);
        let width = max / bins as f64;
        let mut counts = vec![0u32; bins];
        for &l in &latencies {
            counts[((l / width) as usize).min(bins - 1)] += 1;
        }
        let tallest = counts.iter().copied().max().unwrap_or(1);
        let y_max = tallest + tallest.div_ceil(5).max(1);
        let x_max = max * 1.02;
        let mut chart = ChartBuilder::on(root)
            .caption(title, (FONT, 18))
            .margin(12)
            .x_label_area_size(40)
            .y_label_area_size(50)
            .build_cartesian_2d(0.0..x_max, 0u32..y_max)?;
        chart
            .configure_mesh()
            .x_desc("latency (s)")
            .y_desc("answers")
            .y_labels((y_max as usize + 1).min(11))
            .light_line_style(RGBColor(235, 235, 235))
            .draw()?;
        chart.draw_series(counts.iter().enumerate().map(|(i, &count)| {
            let x0 = i as f64 * width;
            Rectangle::new([(x0, 0), (x0 + width, count)], color.mix(0.75).filled())
        }))?;
        for (name, value) in [("p50", spread.p50 / 1000.0), ("p95", spread.p95 / 1000.0)] {
            chart.draw_series(LineSeries::new(
                [(value, 0), (value, tallest)],
                BLACK.stroke_width(1),
            ))?;
            // Label beside the line, on the side with room.
            let right = value > x_max / 2.0;
            let side = if right { HPos::Right } else { HPos::Left };
            let (x, y) = chart.backend_coord(&(value, tallest));
            let x = if right { x - 4 } else { x + 4 };
            root.draw(&Text::new(
                format!("{name} {value:.2} s"),
                (x, y),
                TextStyle::from((FONT, 12).into_font()).pos(Pos::new(side, VPos::Top)),
            ))?;
        }
        Ok(())
    })
}

/// Accuracy per category, one bar per run, with 95% Wilson intervals. `None` when no question
/// carries a category.
pub fn accuracy_by_category(runs: &[RunReport]) -> Option<String> {
    let categories = categories_in_order(runs);
    if categories.is_empty() {
        return None;
    }
    Some(per_category_chart(
        runs,
        &categories,
        "Accuracy per category (95% Wilson interval)",
        &|chart, run, j, slot| draw_run_bars(chart, run, j, &categories, slot),
        &|_| Ok(()),
    ))
}

/// Draws one run's bars in its slot: (chart, run, its index, slot width).
type RunBars<'f> = dyn Fn(&mut Chart, &RunReport, usize, f64) -> DrawResult + 'f;

/// A chart with a unit of width per category, a bar slot per run in each (with 10% margins
/// each side), what `extra` adds over the bars, category labels and a legend.
fn per_category_chart(
    runs: &[RunReport],
    categories: &[String],
    caption: &str,
    run_bars: &RunBars,
    extra: &dyn Fn(&mut Chart) -> DrawResult,
) -> String {
    svg((960, 380), |root| {
        let mut chart = percent_axes(root, caption, categories.len())?;
        let slot = 0.8 / runs.len().max(1) as f64;
        for (j, run) in runs.iter().enumerate() {
            run_bars(&mut chart, run, j, slot)?;
        }
        extra(&mut chart)?;
        draw_category_labels(root, &chart, categories)?;
        draw_legend(&mut chart, SeriesLabelPosition::UpperRight)
    })
}

/// Log-likelihood accuracy per category: for each run a solid `acc` bar and a pale `acc_norm`
/// bar with 95% Wilson intervals, and a dashed line at each category's chance level (the mean
/// of 1 / choices, which differs where categories have different numbers of choices). `None`
/// when no category has log-likelihood scores.
pub fn loglik_by_category(runs: &[RunReport]) -> Option<String> {
    let categories = categories_in_order(runs);
    let scored = |c: &super::data::CategoryReport| c.loglik_acc.is_some();
    if !runs.iter().any(|r| r.categories.iter().any(scored)) {
        return None;
    }
    Some(per_category_chart(
        runs,
        &categories,
        "Log-likelihood accuracy per category: acc (solid), acc_norm (pale), chance (dashed)",
        &|chart, run, j, slot| match run.categories.iter().any(scored) {
            true => draw_loglik_bars(chart, run, j, &categories, slot),
            false => Ok(()),
        },
        &|chart| draw_chance_lines(chart, runs, &categories),
    ))
}

/// Run `j`'s `acc` and `acc_norm` bars side by side in its slot of each category, with their
/// Wilson intervals.
fn draw_loglik_bars(
    chart: &mut Chart,
    run: &RunReport,
    j: usize,
    categories: &[String],
    slot: f64,
) -> DrawResult {
    let color = RUN_COLORS[j % RUN_COLORS.len()];
    let half = slot / 2.0;
    let mut bars: Vec<(f64, super::stats::Rate, f64)> = Vec::new();
    for (i, name) in categories.iter().enumerate() {
        let Some(c) = run.categories.iter().find(|c| &c.category == name) else {
            continue;
        };
        let x = i as f64 + 0.1 + j as f64 * slot;
        bars.extend(c.loglik_acc.map(|r| (x, r, 0.85)));
        bars.extend(c.loglik_acc_norm.map(|r| (x + half, r, 0.35)));
    }
    chart
        .draw_series(bars.iter().map(|&(x, rate, opacity)| {
            Rectangle::new(
                [(x + half * 0.1, 0.0), (x + half * 0.9, rate.rate * 100.0)],
                color.mix(opacity).filled(),
            )
        }))?
        .label(format!("run {} · {}", run.run_id, run.model.name))
        .legend(move |(x, y)| Rectangle::new([(x, y - 5), (x + 12, y + 5)], color.filled()));
    chart.draw_series(
        bars.iter()
            .map(|&(x, rate, _)| wilson_interval(x + half / 2.0, rate, 4)),
    )?;
    Ok(())
}

/// A dashed line across each category at its chance level (the first run's with scores there).
fn draw_chance_lines(chart: &mut Chart, runs: &[RunReport], categories: &[String]) -> DrawResult {
    let style = RGBColor(90, 90, 90).stroke_width(2);
    let mut labelled = false;
    for (i, name) in categories.iter().enumerate() {
        let chance = runs
            .iter()
            .flat_map(|r| &r.categories)
            .find(|c| &c.category == name && c.loglik_chance.is_some())
            .and_then(|c| c.loglik_chance);
        let Some(chance) = chance else {
            continue;
        };
        let y = chance * 100.0;
        let line = DashedLineSeries::new([(i as f64 + 0.05, y), (i as f64 + 0.95, y)], 6, 4, style);
        let drawn = chart.draw_series(line)?;
        if !labelled {
            drawn
                .label("chance")
                .legend(move |(x, y)| PathElement::new([(x, y), (x + 12, y)], style));
            labelled = true;
        }
    }
    Ok(())
}

/// Every category of any run, in order of first appearance.
fn categories_in_order(runs: &[RunReport]) -> Vec<String> {
    let mut categories: Vec<String> = Vec::new();
    for run in runs {
        for c in &run.categories {
            if !categories.contains(&c.category) {
                categories.push(c.category.clone());
            }
        }
    }
    categories
}

/// Axes of a per-category chart: one unit of width per category (labelled below, not by the
/// mesh), 0 to 100% up.
fn percent_axes<'a, 'b>(
    root: &'a DrawingArea<SVGBackend<'b>, Shift>,
    caption: &str,
    n_categories: usize,
) -> Result<Chart<'a, 'b>, Box<dyn std::error::Error>> {
    let mut chart = ChartBuilder::on(root)
        .caption(caption, (FONT, 18))
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(50)
        .build_cartesian_2d(0.0..n_categories as f64, 0.0..100.0)?;
    chart
        .configure_mesh()
        .disable_x_mesh()
        .x_labels(0)
        .x_label_formatter(&|_| String::new())
        .y_label_formatter(&|v| format!("{v:.0}"))
        .y_desc("% correct")
        .light_line_style(RGBColor(235, 235, 235))
        .draw()?;
    Ok(chart)
}

/// Run `j`'s bars (with its legend entry) and their Wilson intervals, in its slot of each
/// category it has an accuracy for.
fn draw_run_bars(
    chart: &mut Chart,
    run: &RunReport,
    j: usize,
    categories: &[String],
    slot: f64,
) -> DrawResult {
    let color = RUN_COLORS[j % RUN_COLORS.len()];
    let bars: Vec<(f64, super::stats::Rate)> = categories
        .iter()
        .enumerate()
        .filter_map(|(i, name)| {
            let rate = run
                .categories
                .iter()
                .find(|c| &c.category == name)?
                .accuracy?;
            Some((i as f64 + 0.1 + j as f64 * slot, rate))
        })
        .collect();
    chart
        .draw_series(bars.iter().map(|&(x, rate)| {
            Rectangle::new(
                [(x + slot * 0.08, 0.0), (x + slot * 0.92, rate.rate * 100.0)],
                color.mix(0.8).filled(),
            )
        }))?
        .label(format!("run {} · {}", run.run_id, run.model.name))
        .legend(move |(x, y)| Rectangle::new([(x, y - 5), (x + 12, y + 5)], color.filled()));
    chart.draw_series(
        bars.iter()
            .map(|&(x, rate)| wilson_interval(x + slot / 2.0, rate, 6)),
    )?;
    Ok(())
}

/// A rate's 95% Wilson interval as an error bar at `x`, in percent.
fn wilson_interval(
    x: f64,
    rate: super::stats::Rate,
    width_px: u32,
) -> ErrorBar<f64, f64, plotters::element::ErrorBarOrientV<f64, f64>> {
    ErrorBar::new_vertical(
        x,
        rate.low * 100.0,
        rate.rate * 100.0,
        rate.high * 100.0,
        BLACK.stroke_width(1),
        width_px,
    )
}

/// Category names centred under their unit of width (the mesh's own labels are numeric).
fn draw_category_labels(
    root: &DrawingArea<SVGBackend, Shift>,
    chart: &Chart,
    categories: &[String],
) -> DrawResult {
    for (i, name) in categories.iter().enumerate() {
        let (x, y) = chart.backend_coord(&(i as f64 + 0.5, 0.0));
        root.draw(&Text::new(
            name.clone(),
            (x, y + 8),
            TextStyle::from((FONT, 14).into_font()).pos(Pos::new(HPos::Center, VPos::Top)),
        ))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn thinning_keeps_peaks_and_bounds_points() {
        let points: Vec<(f64, f64)> = (0..10_000)
            .map(|i| (f64::from(i), if i == 4321 { 99.0 } else { 1.0 }))
            .collect();
        let thinned = thin(points, 1500);
        assert!(thinned.len() <= 1500, "{}", thinned.len());
        assert!(thinned.iter().any(|p| p.1 == 99.0), "the peak survives");
        assert_eq!(thin(vec![(0.0, 1.0)], 10), vec![(0.0, 1.0)]);
    }

    #[test]
    fn the_loglik_chart_has_both_rules_per_category_and_a_chance_line_only_with_scores() {
        use super::super::stats::Rate;
        let mut comparison = super::super::fixture::fixture();
        assert!(loglik_by_category(&comparison.runs).is_none());
        // Four-choice questions in one category, two-choice in the other: two chance levels.
        for (c, (acc, norm, chance)) in comparison.runs[0]
            .categories
            .iter_mut()
            .zip([((3, 6), (4, 6), 0.25), ((1, 4), (2, 4), 0.5)])
        {
            c.loglik_acc = Rate::new(acc.0, acc.1);
            c.loglik_acc_norm = Rate::new(norm.0, norm.1);
            c.loglik_chance = Some(chance);
        }
        let chart = loglik_by_category(&comparison.runs).unwrap();
        assert!(chart.contains("\nchance\n"), "legend entry");
        // Bars: acc solid, acc_norm pale, heights in proportion to the rates (50% and 25% solid;
        // 66.7% and 50% pale); run 2 has no scores and no bars.
        let heights = |opacity: &str| -> Vec<f64> {
            chart
                .lines()
                .filter(|l| l.starts_with("<rect") && l.contains(&format!("opacity=\"{opacity}\"")))
                .filter(|l| {
                    l.contains(&format!(
                        "fill=\"#{:02X}{:02X}{:02X}\"",
                        RUN_COLORS[0].0, RUN_COLORS[0].1, RUN_COLORS[0].2
                    ))
                })
                .map(|l| attribute(l, "height"))
                .collect()
        };
        let solid = heights("0.85");
        let pale = heights("0.35");
        assert_eq!((solid.len(), pale.len()), (2, 2), "{solid:?} {pale:?}");
        assert!((solid[0] / solid[1] - 2.0).abs() < 0.05, "{solid:?}");
        assert!((pale[0] / pale[1] - 4.0 / 3.0).abs() < 0.05, "{pale:?}");
        assert!(
            (pale[1] - solid[0]).abs() <= 1.0,
            "both 50%: {solid:?} {pale:?}"
        );
        // The chance dashes sit at two heights: 25% (as high as the 25% bar) and 50%.
        let mut levels: Vec<f64> = chart
            .lines()
            .filter(|l| l.starts_with("<polyline") && l.contains("stroke=\"#5A5A5A\""))
            .map(|l| {
                let points = l.split(" points=\"").nth(1).unwrap();
                attribute(&format!(" y=\"{}", points.split(',').nth(1).unwrap()), "y")
            })
            .collect();
        levels.sort_by(f64::total_cmp);
        // Dashes repeat along a line; the legend's sample line is drawn once.
        let mut dashed: Vec<f64> = levels
            .iter()
            .copied()
            .filter(|y| levels.iter().filter(|&&other| other == *y).count() > 1)
            .collect();
        dashed.dedup();
        let levels = dashed;
        assert_eq!(levels.len(), 2, "{levels:?}");
        assert!(
            ((levels[1] - levels[0]) - solid[1]).abs() <= 1.5,
            "25 points apart: {levels:?} {solid:?}"
        );
    }

    /// The number at the start of an SVG attribute's value.
    fn attribute(line: &str, name: &str) -> f64 {
        let value = line.split(&format!(" {name}=\"")).nth(1).unwrap();
        let number: String = value
            .chars()
            .take_while(|c| c.is_ascii_digit() || *c == '.')
            .collect();
        number.parse().unwrap()
    }
}
