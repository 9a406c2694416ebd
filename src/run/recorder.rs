//! The recorder thread: the run's only writer while it decodes. It commits each finished answer
//! in its own transaction as soon as it arrives (with a memory snapshot taken at that moment),
//! takes a memory sample every `--sample-interval-ms`, and keeps the run's heartbeat and active
//! time current. Keeping SQLite's fsync and the probes here keeps them off the decode loop.

use crate::error::Result;
use crate::monitor::Probe;
use crate::store::{AnswerRow, ChoiceScores, Holder, Store};
use anyhow::Context;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// Counters the decode side can read while the recorder runs.
#[derive(Debug, Default)]
pub struct RecorderState {
    /// Answers committed in this session.
    pub committed: AtomicU64,
    /// Of those, `error` rows.
    pub committed_errors: AtomicU64,
    /// Questions whose choice scores were committed in this session.
    pub choices_committed: AtomicU64,
    /// Last sampled RSS.
    pub last_rss_bytes: AtomicU64,
    /// Last sampled GPU memory (0 without NVML).
    pub last_gpu_used_bytes: AtomicU64,
    /// Memory samples stored in this session.
    pub samples: AtomicU64,
    /// CPU time the recorder thread used (commits, fsync, probes), in nanoseconds, set when it
    /// ends: what recording takes from a machine whose cores are all decoding.
    pub cpu_ns: AtomicU64,
    /// Set when a write failed; the run must stop.
    pub failed: AtomicBool,
    /// The first write failure.
    pub failure: Mutex<Option<anyhow::Error>>,
}

/// What the decode side hands the recorder: one question's result, committed in one transaction.
enum Record {
    /// A generated (or failed) answer.
    Answer(AnswerRow),
    /// Every choice of a question scored by log-likelihood, with its answer row when that is
    /// the question's only scoring.
    Choices(ChoiceScores),
}

/// Handle to the recorder thread.
pub struct Recorder {
    sender: Option<Sender<Record>>,
    handle: Option<JoinHandle<()>>,
    state: Arc<RecorderState>,
}

impl Recorder {
    /// Start recording run `run_id` into the database at `db` (a second connection of its own).
    pub fn start(
        db: &Path,
        run_id: i64,
        holder: Holder,
        sample_interval: Duration,
    ) -> Result<Recorder> {
        let store = Store::open(db)?.acting_for(holder);
        let state = Arc::new(RecorderState::default());
        let (sender, receiver) = mpsc::channel::<Record>();
        let writer = Writer {
            store,
            run_id,
            state: Arc::clone(&state),
            probe: Probe::new(),
            last_heartbeat: Instant::now(),
        };
        let handle = std::thread::Builder::new()
            .name("recorder".into())
            .spawn(move || writer.run(&receiver, sample_interval))
            .context("starting the recorder thread")?;
        Ok(Recorder {
            sender: Some(sender),
            handle: Some(handle),
            state,
        })
    }

    /// A recorder that writes nothing and samples nothing: answers are counted and dropped.
    /// Only for measuring what recording costs (`run --bench-discard-answers`).
    pub fn discarding() -> Recorder {
        Recorder {
            sender: None,
            handle: None,
            state: Arc::new(RecorderState::default()),
        }
    }

    /// Queue a finished answer for commit.
    pub fn record(&self, row: AnswerRow) {
        self.send(Record::Answer(row));
    }

    /// Queue one question's choice scores (and answer row, if any) for commit.
    pub fn record_choices(&self, scores: ChoiceScores) {
        self.send(Record::Choices(scores));
    }

    fn send(&self, record: Record) {
        match &self.sender {
            Some(sender) => {
                if sender.send(record).is_err() {
                    self.state.failed.store(true, Ordering::SeqCst);
                }
            }
            None => {
                self.state.committed.fetch_add(1, Ordering::SeqCst);
            }
        }
    }

    /// Shared counters.
    pub fn state(&self) -> &Arc<RecorderState> {
        &self.state
    }

    /// Commit everything queued, stop the thread, and report the first write failure, if any.
    pub fn finish(mut self) -> Result<()> {
        self.sender.take();
        if let Some(handle) = self.handle.take() {
            if handle.join().is_err() {
                return Err(anyhow::anyhow!("the recorder thread panicked"));
            }
        }
        let failure = self
            .state
            .failure
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take();
        match failure {
            Some(error) => Err(error.context("writing results failed")),
            None => Ok(()),
        }
    }
}

impl Drop for Recorder {
    fn drop(&mut self) {
        self.sender.take();
        if let Some(handle) = self.handle.take() {
            let _ = handle.join();
        }
    }
}

/// The recorder thread's side: the run's only writer while it decodes.
struct Writer {
    store: Store,
    run_id: i64,
    state: Arc<RecorderState>,
    probe: Probe,
    last_heartbeat: Instant,
}

impl Writer {
    /// Commit answers as they arrive and sample memory on schedule until the sender is dropped;
    /// then take a last sample and record the thread's CPU time.
    fn run(mut self, receiver: &Receiver<Record>, sample_interval: Duration) {
        let mut next_sample = Instant::now();
        loop {
            if Instant::now() >= next_sample {
                self.sample();
                next_sample = Instant::now() + sample_interval;
            }
            match receiver.recv_timeout(next_sample.saturating_duration_since(Instant::now())) {
                Ok(Record::Answer(row)) => self.commit(row),
                Ok(Record::Choices(scores)) => self.commit_choices(scores),
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => break,
            }
        }
        self.sample();
        self.state.cpu_ns.store(thread_cpu_ns(), Ordering::Relaxed);
    }

    /// One memory sample, plus the heartbeat with the active time since the last one.
    fn sample(&mut self) {
        let sample = self.probe.sample();
        let state = &self.state;
        state
            .last_rss_bytes
            .store(sample.rss_bytes, Ordering::Relaxed);
        let gpu_used_bytes = sample.gpu_used_bytes().unwrap_or(0);
        state
            .last_gpu_used_bytes
            .store(gpu_used_bytes, Ordering::Relaxed);
        let active_ms = self.last_heartbeat.elapsed().as_millis() as i64;
        self.last_heartbeat = Instant::now();
        let written = self
            .store
            .check_still_at_path()
            .and_then(|()| self.store.insert_memory_sample(self.run_id, &sample))
            .and_then(|()| self.store.heartbeat(self.run_id, active_ms));
        if let Err(e) = written {
            self.fail(e);
        }
        self.state.samples.fetch_add(1, Ordering::Relaxed);
    }

    /// Commit one answer in its own transaction, with the memory in use at that moment.
    fn commit(&mut self, mut row: AnswerRow) {
        let snapshot = self.probe.sample();
        row.rss_bytes = Some(snapshot.rss_bytes as i64);
        row.gpu_used_bytes = snapshot.gpu_used_bytes().map(|b| b as i64);
        match self.store.insert_answer(self.run_id, &row) {
            Ok(()) => {
                self.state.committed.fetch_add(1, Ordering::SeqCst);
                if !row.ok {
                    self.state.committed_errors.fetch_add(1, Ordering::SeqCst);
                }
            }
            Err(e) => self.fail(e),
        }
    }

    /// Commit one question's choice scores (with its answer row, if any) in one transaction.
    fn commit_choices(&mut self, mut scores: ChoiceScores) {
        let ok = match &mut scores.answer {
            Some(row) => {
                let snapshot = self.probe.sample();
                row.rss_bytes = Some(snapshot.rss_bytes as i64);
                row.gpu_used_bytes = snapshot.gpu_used_bytes().map(|b| b as i64);
                Some(row.ok)
            }
            None => None,
        };
        match self.store.insert_choice_scores(self.run_id, &scores) {
            Ok(()) => {
                self.state.choices_committed.fetch_add(1, Ordering::SeqCst);
                if let Some(ok) = ok {
                    self.state.committed.fetch_add(1, Ordering::SeqCst);
                    if !ok {
                        self.state.committed_errors.fetch_add(1, Ordering::SeqCst);
                    }
                }
            }
            Err(e) => self.fail(e),
        }
    }

    /// Keep the first failure and tell the decode loop to stop: answers that cannot be stored
    /// are not worth computing.
    fn fail(&self, error: anyhow::Error) {
        log::error!("recording failed: {error:#}");
        let mut failure = self.state.failure.lock().unwrap_or_else(|p| p.into_inner());
        failure.get_or_insert(error);
        self.state.failed.store(true, Ordering::SeqCst);
    }
}

/// CPU time used so far by the calling thread, in nanoseconds (0 if the clock is unavailable).
fn thread_cpu_ns() -> u64 {
    let mut now = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime only writes the timespec it is given.
    if unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut now) } != 0 {
        return 0;
    }
    (now.tv_sec as u64) * 1_000_000_000 + now.tv_nsec as u64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn thread_cpu_time_counts_only_work_done_on_this_thread() {
        let before = thread_cpu_ns();
        std::thread::sleep(Duration::from_millis(50));
        let slept = thread_cpu_ns() - before;
        let before = thread_cpu_ns();
        let mut x = 0u64;
        let start = Instant::now();
        while start.elapsed() < Duration::from_millis(50) {
            x = std::hint::black_box(x.wrapping_mul(31).wrapping_add(7));
        }
        let busy = thread_cpu_ns() - before;
        assert!(slept < 20_000_000, "sleeping used {slept} ns of CPU");
        assert!(
            busy > 5_000_000,
            "spinning 50 ms used only {busy} ns of CPU"
        );
    }
}
