//! Progress for a person: an indicatif bar on a terminal; a plain log line every few seconds
//! when stderr is not a terminal (background runs, CI).

use super::recorder::RecorderState;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use std::io::IsTerminal;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

/// Seconds between plain progress lines when not on a terminal.
const LOG_EVERY: Duration = Duration::from_secs(10);

/// Progress of one session of a run.
pub struct Progress {
    bar: Option<ProgressBar>,
    total: u64,
    done: u64,
    done_at_start: u64,
    errors: u64,
    tokens: u64,
    started: Instant,
    last_line: Instant,
}

impl Progress {
    /// `already_done` answers were committed by earlier sessions.
    pub fn new(total: u64, already_done: u64) -> Progress {
        let bar = std::io::stderr().is_terminal().then(|| {
            let bar = ProgressBar::with_draw_target(Some(total), ProgressDrawTarget::stderr());
            bar.set_style(
                ProgressStyle::with_template(
                    "{bar:30.cyan/blue} {pos}/{len} {msg} [{elapsed_precise}, ETA {eta}]",
                )
                .unwrap_or_else(|_| ProgressStyle::default_bar()),
            );
            bar.set_position(already_done);
            bar
        });
        Progress {
            bar,
            total,
            done: already_done,
            done_at_start: already_done,
            errors: 0,
            tokens: 0,
            started: Instant::now(),
            last_line: Instant::now(),
        }
    }

    /// One more question finished (`ok` false for an error row) with `tokens` generated.
    pub fn advance(&mut self, ok: bool, tokens: u64, state: &RecorderState) {
        self.done += 1;
        self.tokens += tokens;
        if !ok {
            self.errors += 1;
        }
        let elapsed = self.started.elapsed().as_secs_f64().max(1e-3);
        let session_done = (self.done - self.done_at_start) as f64;
        let per_minute = session_done / elapsed * 60.0;
        let tokens_per_second = self.tokens as f64 / elapsed;
        let rss = crate::units::gib_value(state.last_rss_bytes.load(Ordering::Relaxed));
        let gpu = state.last_gpu_used_bytes.load(Ordering::Relaxed);
        let gpu_text = if gpu > 0 {
            format!(" GPU {:.1} GiB", crate::units::gib_value(gpu))
        } else {
            String::new()
        };
        let message = format!(
            "{per_minute:.1} q/min {tokens_per_second:.1} tok/s RSS {rss:.2} GiB{gpu_text} errors {}",
            self.errors
        );
        if let Some(bar) = &self.bar {
            bar.set_message(message);
            bar.set_position(self.done);
        } else if self.last_line.elapsed() >= LOG_EVERY || self.done == self.total {
            self.last_line = Instant::now();
            let remaining = self.total.saturating_sub(self.done) as f64;
            let eta = if per_minute > 0.0 {
                remaining / per_minute * 60.0
            } else {
                f64::NAN
            };
            log::info!(
                "progress {}/{} ({:.1}%) {message} ETA {:.0}s",
                self.done,
                self.total,
                100.0 * self.done as f64 / self.total.max(1) as f64,
                eta
            );
        }
    }

    /// Remove the bar.
    pub fn finish(&mut self) {
        if let Some(bar) = self.bar.take() {
            bar.finish_and_clear();
        }
    }
}
