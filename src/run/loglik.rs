//! Multiple choice scored by log-likelihood, as lm-evaluation-harness scores it: each choice's
//! continuation gets the sum of its tokens' log-probabilities after the question's prompt.
//!
//! The prompt is decoded once per question. Its last logits row scores the first token of every
//! continuation, so letter labels (one token each) cost one row per question and no sequence
//! beyond the prompt's. Longer continuations each get a sequence holding a copy of the prompt's
//! KV, and only their own tokens are decoded. Several questions share each batch.

use super::scheduler::{Control, Decoder, Ended};
use crate::engine::Token;
use crate::error::Result;
use chrono::{DateTime, Utc};

/// One question to score.
pub struct ChoiceJob {
    /// Index of the question in the caller's list.
    pub question_index: usize,
    /// The prompt: not empty.
    pub prompt: Vec<Token>,
    /// One continuation per choice, in choice order (an empty one scores 0).
    pub continuations: Vec<Vec<Token>>,
}

impl ChoiceJob {
    /// Sequences this question occupies: one when every continuation is at most one token
    /// (all read from the prompt's last row), else one per choice.
    pub fn sequences(&self) -> usize {
        if self.continuations.iter().all(|c| c.len() <= 1) {
            1
        } else {
            self.continuations.len().max(1)
        }
    }
}

/// One choice's score.
#[derive(Debug, Clone, PartialEq)]
pub struct ChoiceLogprob {
    /// Sum of the natural-log probabilities of the continuation's tokens.
    pub logprob: f64,
    /// Whether every token was the most probable one.
    pub greedy: bool,
    /// Continuation tokens.
    pub tokens: usize,
    /// Tokens decoded for this choice alone (the continuation but its last token).
    pub tokens_computed: usize,
    /// Prompt tokens it read from KV computed once for all choices.
    pub tokens_reused: usize,
    /// Each continuation token's log-probability, in order.
    pub token_logprobs: Vec<f64>,
}

/// A scored question.
pub struct Scored {
    /// Index of the question in the caller's list.
    pub question_index: usize,
    /// Prompt tokens.
    pub prompt_tokens: usize,
    /// One score per choice, in choice order.
    pub choices: Vec<ChoiceLogprob>,
    /// The continuations' tokens, in choice order.
    pub continuation_tokens: Vec<Vec<Token>>,
    /// When its group entered the first batch.
    pub started: DateTime<Utc>,
    /// When its scores were complete.
    pub finished: DateTime<Utc>,
}

/// A question in flight: its job, first sequence and the scores gathered so far.
struct Pending {
    job: ChoiceJob,
    sequence: u32,
    choices: Vec<ChoiceLogprob>,
}

/// Score every job with at most `sequences` sequences, in groups of questions that fit them.
/// `control` is asked between groups (a drain and an abort both stop there: a group is short).
pub fn run<D: Decoder>(
    decoder: &mut D,
    sequences: u32,
    jobs: &mut dyn Iterator<Item = ChoiceJob>,
    control: &mut dyn FnMut() -> Control,
    on_scored: &mut dyn FnMut(Scored),
) -> Result<Ended> {
    let mut jobs = jobs.peekable();
    while jobs.peek().is_some() {
        if control() != Control::Continue {
            return Ok(Ended::Stopped);
        }
        let group = next_group(&mut jobs, sequences as usize)?;
        let started = Utc::now();
        let mut pending = place(group);
        score_prompts(decoder, &mut pending)?;
        score_continuations(decoder, &mut pending)?;
        let finished = Utc::now();
        for p in pending {
            for s in p.sequence..p.sequence + p.job.sequences() as u32 {
                decoder.forget_sequence(s);
            }
            on_scored(Scored {
                question_index: p.job.question_index,
                prompt_tokens: p.job.prompt.len(),
                choices: p.choices,
                continuation_tokens: p.job.continuations,
                started,
                finished,
            });
        }
    }
    Ok(Ended::AllDone)
}

/// The next questions whose sequences fit together (at least one question).
fn next_group(
    jobs: &mut std::iter::Peekable<&mut dyn Iterator<Item = ChoiceJob>>,
    sequences: usize,
) -> Result<Vec<ChoiceJob>> {
    let mut group = Vec::new();
    let mut used = 0;
    while let Some(job) = jobs.peek() {
        let needs = job.sequences();
        if needs > sequences {
            return Err(anyhow::anyhow!(
                "question {} needs {needs} sequences, the session has {sequences}",
                job.question_index
            ));
        }
        if used + needs > sequences {
            break;
        }
        used += needs;
        group.extend(jobs.next());
    }
    Ok(group)
}

/// Give each question its first sequence and an empty score per choice.
fn place(group: Vec<ChoiceJob>) -> Vec<Pending> {
    let mut next = 0u32;
    group
        .into_iter()
        .map(|job| {
            let sequence = next;
            next += job.sequences() as u32;
            let choices = job
                .continuations
                .iter()
                .map(|c| ChoiceLogprob {
                    logprob: 0.0,
                    greedy: true,
                    tokens: c.len(),
                    tokens_computed: c.len().saturating_sub(1),
                    tokens_reused: job.prompt.len(),
                    token_logprobs: Vec::with_capacity(c.len()),
                })
                .collect();
            Pending {
                job,
                sequence,
                choices,
            }
        })
        .collect()
}

/// Where a logits row goes: question `pending`, and the continuation tokens it scores.
#[derive(Clone, Copy)]
enum Row {
    /// The prompt's last token: the first token of every continuation.
    PromptEnd { pending: usize },
    /// Token `at` of choice `choice`: scores token `at + 1`.
    Continuation {
        pending: usize,
        choice: usize,
        at: usize,
    },
}

/// Decode every prompt into its question's first sequence; the last row scores each
/// continuation's first token.
fn score_prompts<D: Decoder>(decoder: &mut D, pending: &mut [Pending]) -> Result<()> {
    let mut pushes = Vec::new();
    for (index, p) in pending.iter().enumerate() {
        let last = p.job.prompt.len() - 1;
        for (position, &token) in p.job.prompt.iter().enumerate() {
            let row = (position == last).then_some(Row::PromptEnd { pending: index });
            pushes.push((token, position as u32, p.sequence, row));
        }
    }
    decode_all(decoder, pending, pushes)
}

/// Copy each prompt's KV to the question's other sequences and decode every continuation of
/// two or more tokens in its own sequence (all but its last token, whose row nothing reads).
fn score_continuations<D: Decoder>(decoder: &mut D, pending: &mut [Pending]) -> Result<()> {
    let mut pushes = Vec::new();
    for (index, p) in pending.iter().enumerate() {
        if p.job.sequences() == 1 {
            continue;
        }
        let positions = p.job.prompt.len() as u32;
        for choice in 1..p.job.continuations.len() as u32 {
            decoder.copy_sequence(p.sequence, p.sequence + choice, positions)?;
        }
        for (choice, continuation) in p.job.continuations.iter().enumerate() {
            let scored_from = &continuation[..continuation.len().saturating_sub(1)];
            for (at, &token) in scored_from.iter().enumerate() {
                let row = Row::Continuation {
                    pending: index,
                    choice,
                    at,
                };
                pushes.push((
                    token,
                    positions + at as u32,
                    p.sequence + choice as u32,
                    Some(row),
                ));
            }
        }
    }
    decode_all(decoder, pending, pushes)
}

/// Push every token (token, position, sequence, row to read), decoding whenever the batch is
/// full and at the end.
fn decode_all<D: Decoder>(
    decoder: &mut D,
    pending: &mut [Pending],
    pushes: Vec<(Token, u32, u32, Option<Row>)>,
) -> Result<()> {
    let mut batch = Batch::new(decoder);
    for (token, position, sequence, row) in pushes {
        batch.push(decoder, pending, token, position, sequence, row)?;
    }
    batch.flush(decoder, pending)
}

/// A batch being filled, with the rows to read once it is decoded (logits last only until the
/// next decode, so rows are read right after each one).
struct Batch {
    capacity: usize,
    rows: Vec<(usize, Row)>,
    len: usize,
}

impl Batch {
    fn new<D: Decoder>(decoder: &mut D) -> Batch {
        decoder.clear_batch();
        Batch {
            capacity: decoder.batch_capacity(),
            rows: Vec::new(),
            len: 0,
        }
    }

    fn push<D: Decoder>(
        &mut self,
        decoder: &mut D,
        pending: &mut [Pending],
        token: Token,
        position: u32,
        sequence: u32,
        row: Option<Row>,
    ) -> Result<()> {
        if self.len == self.capacity {
            self.flush(decoder, pending)?;
        }
        let index = decoder.push(token, position, sequence, row.is_some())?;
        self.len += 1;
        if let Some(row) = row {
            self.rows.push((index, row));
        }
        Ok(())
    }

    /// Decode what is pushed, add each row's log-probabilities to its choices, start anew.
    fn flush<D: Decoder>(&mut self, decoder: &mut D, pending: &mut [Pending]) -> Result<()> {
        if self.len == 0 {
            return Ok(());
        }
        decoder.decode()?;
        for (index, row) in self.rows.drain(..) {
            match row {
                Row::PromptEnd { pending: at } => {
                    let p = &mut pending[at];
                    let firsts: Vec<(usize, Token)> = p
                        .job
                        .continuations
                        .iter()
                        .enumerate()
                        .filter_map(|(choice, c)| c.first().map(|&t| (choice, t)))
                        .collect();
                    let tokens: Vec<Token> = firsts.iter().map(|&(_, t)| t).collect();
                    for ((choice, _), lp) in firsts.iter().zip(decoder.log_probs(index, &tokens)) {
                        add(&mut p.choices[*choice], lp);
                    }
                }
                Row::Continuation {
                    pending: at,
                    choice,
                    at: token_at,
                } => {
                    let p = &mut pending[at];
                    let next = p.job.continuations[choice][token_at + 1];
                    let lp = decoder.log_probs(index, &[next])[0];
                    add(&mut p.choices[choice], lp);
                }
            }
        }
        decoder.clear_batch();
        self.len = 0;
        Ok(())
    }
}

/// Rows are read in the order their tokens were pushed, so each choice's log-probabilities
/// arrive in token order.
fn add(choice: &mut ChoiceLogprob, (logprob, greedy): (f64, bool)) {
    choice.logprob += logprob;
    choice.greedy &= greedy;
    choice.token_logprobs.push(logprob);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::run::scripted::{fake_log_prob, tokens, Scripted};

    fn job(question_index: usize, prompt: &[i32], continuations: &[&[i32]]) -> ChoiceJob {
        ChoiceJob {
            question_index,
            prompt: tokens(prompt),
            continuations: continuations.iter().map(|c| tokens(c)).collect(),
        }
    }

    /// What a choice must score: the fake model's log-probability of each continuation token
    /// given everything before it, summed; greedy when each was the fake's most likely token.
    fn expected(prompt: &[i32], continuation: &[i32]) -> (f64, bool) {
        let mut context = tokens(prompt);
        let mut sum = 0.0;
        let mut greedy = true;
        for &t in continuation {
            let (lp, best) = fake_log_prob(&context, Token::from_id(t));
            sum += lp;
            greedy &= best;
            context.push(Token::from_id(t));
        }
        (sum, greedy)
    }

    fn score_all(capacity: usize, sequences: u32, jobs: Vec<ChoiceJob>) -> (Vec<Scored>, Scripted) {
        let mut decoder = Scripted::new(capacity, &[]);
        let mut scored = Vec::new();
        let ended = run(
            &mut decoder,
            sequences,
            &mut jobs.into_iter(),
            &mut || Control::Continue,
            &mut |s| scored.push(s),
        )
        .unwrap();
        assert_eq!(ended, Ended::AllDone);
        (scored, decoder)
    }

    #[test]
    fn every_choice_scores_its_tokens_after_the_prompt_in_any_batch_shape() {
        let questions: Vec<(Vec<i32>, Vec<Vec<i32>>)> = vec![
            (
                vec![5, 6, 7],
                vec![vec![11, 12], vec![13], vec![14, 15, 16]],
            ),
            (vec![8, 9], vec![vec![21], vec![22], vec![23]]),
            (
                vec![5, 6, 7, 1, 2, 3, 4],
                vec![vec![31, 32, 33], vec![34, 35]],
            ),
            (vec![3], vec![vec![], vec![41, 42]]),
        ];
        // Batch capacities that split prompts and continuations, and too few sequences for
        // two questions at once.
        for (capacity, sequences) in [(64, 8), (3, 8), (2, 3), (5, 4)] {
            let jobs = questions
                .iter()
                .enumerate()
                .map(|(i, (p, cs))| job(i, p, &cs.iter().map(Vec::as_slice).collect::<Vec<_>>()))
                .collect();
            let (scored, decoder) = score_all(capacity, sequences, jobs);
            assert_eq!(scored.len(), questions.len());
            for (s, (prompt, continuations)) in scored.iter().zip(&questions) {
                assert_eq!(s.prompt_tokens, prompt.len());
                for (choice, c) in s.choices.iter().zip(continuations) {
                    let (lp, greedy) = expected(prompt, c);
                    assert!(
                        (choice.logprob - lp).abs() < 1e-12,
                        "{capacity}/{sequences}: {c:?}"
                    );
                    assert_eq!(choice.greedy, greedy);
                    assert_eq!(choice.tokens, c.len());
                    assert_eq!(choice.tokens_reused, prompt.len());
                    assert_eq!(choice.token_logprobs.len(), c.len());
                    let sum: f64 = choice.token_logprobs.iter().sum();
                    assert!((sum - choice.logprob).abs() < 1e-12);
                }
            }
            // Every prompt is decoded once, whatever the number of choices.
            let prompt_tokens: usize = questions.iter().map(|(p, _)| p.len()).sum();
            let continuation_tokens: usize = questions
                .iter()
                .filter(|(_, cs)| cs.iter().any(|c| c.len() > 1))
                .flat_map(|(_, cs)| cs.iter().map(|c| c.len().saturating_sub(1)))
                .sum();
            let decoded: usize = decoder.batches.iter().map(Vec::len).sum();
            assert_eq!(decoded, prompt_tokens + continuation_tokens);
            assert!(decoder.batches.iter().all(|b| b.len() <= capacity));
        }
    }

    #[test]
    fn single_token_labels_need_one_row_per_question_and_no_copies() {
        let jobs = (0..5)
            .map(|i| job(i, &[1, 2, 3 + i as i32], &[&[20], &[21], &[22], &[23]]))
            .collect();
        let (scored, decoder) = score_all(64, 5, jobs);
        assert_eq!(scored.len(), 5);
        assert!(decoder.copies.is_empty());
        assert_eq!(decoder.batches.len(), 1, "five questions in one batch");
        let rows = decoder.batches[0].iter().filter(|p| p.logits).count();
        assert_eq!(rows, 5);
    }

    #[test]
    fn a_stop_request_ends_between_groups_and_a_too_wide_question_is_an_error() {
        let mut decoder = Scripted::new(16, &[]);
        let jobs: Vec<ChoiceJob> = (0..4)
            .map(|i| job(i, &[1, 2], &[&[3, 4], &[5, 6]]))
            .collect();
        let mut asked = 0;
        let mut scored = 0;
        let ended = run(
            &mut decoder,
            2,
            &mut jobs.into_iter(),
            &mut || {
                asked += 1;
                if asked > 2 {
                    Control::Drain
                } else {
                    Control::Continue
                }
            },
            &mut |_| scored += 1,
        )
        .unwrap();
        assert_eq!((ended, scored), (Ended::Stopped, 2));
        let wide = vec![job(0, &[1], &[&[2, 3], &[4, 5], &[6, 7]])];
        let error = run(
            &mut Scripted::new(16, &[]),
            2,
            &mut wide.into_iter(),
            &mut || Control::Continue,
            &mut |_| {},
        );
        assert!(error.is_err());
    }
}
