//! Multiple choice scored by log-likelihood, as lm-evaluation-harness scores it: each choice's
//! continuation gets the sum of its tokens' log-probabilities after the question's prompt.
//!
//! A question is decoded in a batch of its own, laid out as llama-perplexity lays out a task:
//! the tokens every choice starts with (the prompt, and any leading continuation tokens all
//! choices share) once, for all the choices' sequences, in a unified KV cache; then each
//! choice's remaining tokens in its own sequence. A row of logits scores the next token of every
//! choice passing through it, so letter labels (one token each) need one sequence and one row.
//!
//! Why a batch per question: llama.cpp's CPU results depend on what shares a batch. Its
//! attention takes a float32 tiled path at 64 or more query tokens and a float16-accumulating
//! one below, and a unified batch holding several questions changes a question's log-probabilities
//! (measured on SmolLM2: up to 0.1 per token against the question alone; llama.cpp #24962).
//! Alone in its batch, a question scores the same at any `--parallel`, after a resume, and as
//! llama-perplexity scores it (docs/multiple-choice.md).
//!
//! A question with more choices than a context holds sequences (llama.cpp's 256) is scored in
//! groups of consecutive choices, each in batches of its own, the shared tokens decoded again
//! for each group. The groups depend on the number of choices alone, so such a question too
//! scores the same in every run; a question that fits keeps the single layout, whose numbers a
//! regrouping would move (SmolLM2, 10 choices of 13 tokens in groups of 3: up to 0.07 per token).

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
    /// Whether every continuation is at most one token, all read from the prompt's last row.
    fn single_row(&self) -> bool {
        self.continuations.iter().all(|c| c.len() <= 1)
    }

    /// Sequences this question occupies in a context of at most `limit`: one with a single row,
    /// else one per choice of its largest group ([`ChoiceJob::groups`]).
    pub fn sequences(&self, limit: u32) -> usize {
        if self.single_row() {
            return 1;
        }
        self.groups(limit)
            .iter()
            .map(|g| g.len())
            .max()
            .unwrap_or(0)
            .max(1)
    }

    /// The choices decoded together, in order: all of them when one row serves every choice or
    /// each choice has a sequence within `limit`, else the fewest groups of at most `limit`,
    /// equal but for a smaller last one (300 choices: two of 150, not 256 and 44, so the
    /// context is no larger than it must be).
    pub fn groups(&self, limit: u32) -> Vec<std::ops::Range<usize>> {
        let choices = self.continuations.len();
        let limit = (limit as usize).max(1);
        if self.single_row() || choices <= limit {
            return std::iter::once(0..choices).collect();
        }
        let size = choices.div_ceil(choices.div_ceil(limit));
        (0..choices)
            .step_by(size)
            .map(|start| start..(start + size).min(choices))
            .collect()
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
    /// Tokens decoded for this choice alone: its continuation after the tokens all choices
    /// start with.
    pub tokens_computed: usize,
    /// Tokens it read from KV computed once for all choices: the prompt and any continuation
    /// tokens all choices start with.
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
    /// When its batch was started.
    pub started: DateTime<Utc>,
    /// When its scores were complete.
    pub finished: DateTime<Utc>,
}

/// The question in flight: its job and the scores gathered so far.
struct Pending {
    job: ChoiceJob,
    /// Tokens decoded once for all its choices ([`shared_tokens`]).
    shared: usize,
    choices: Vec<ChoiceLogprob>,
}

/// Score every job, one question per batch (one per group of its choices), in sequences
/// `0..job.sequences(limit)` (at most `sequences`), where `limit` is the most sequences the
/// decoder's contexts can hold. `control` is asked before each question.
pub fn run<D: Decoder>(
    decoder: &mut D,
    sequences: u32,
    jobs: &mut dyn Iterator<Item = ChoiceJob>,
    control: &mut dyn FnMut() -> Control,
    on_scored: &mut dyn FnMut(Scored),
) -> Result<Ended> {
    let limit = decoder.max_sequences();
    for job in jobs {
        if control() != Control::Continue {
            return Ok(Ended::Stopped);
        }
        let needs = job.sequences(limit) as u32;
        if needs > sequences {
            return Err(anyhow::anyhow!(
                "question {} needs {needs} sequences, the session has {sequences}",
                job.question_index
            ));
        }
        let started = Utc::now();
        let mut pending = start(job);
        for group in pending.job.groups(limit) {
            let layout = pushes(&pending.job, pending.shared, group);
            decode_all(decoder, &mut pending, layout)?;
            for s in 0..needs {
                decoder.forget_sequence(s);
            }
        }
        let finished = Utc::now();
        on_scored(Scored {
            question_index: pending.job.question_index,
            prompt_tokens: pending.job.prompt.len(),
            choices: pending.choices,
            continuation_tokens: pending.job.continuations,
            started,
            finished,
        });
    }
    Ok(Ended::AllDone)
}

/// Tokens every choice's prompt + continuation starts with, leaving each non-empty choice at
/// least its last token of its own (a choice that is another's prefix still gets a sequence).
/// With one row for all (letter labels) that is the prompt. Taken over all the choices, also
/// when they are decoded in groups, so a choice computes and reuses the same tokens either way.
fn shared_tokens(job: &ChoiceJob) -> usize {
    let prompt = job.prompt.len();
    if job.single_row() {
        return prompt;
    }
    let mut scored = job.continuations.iter().filter(|c| !c.is_empty());
    let Some(first) = scored.next() else {
        return prompt;
    };
    let (mut common, mut shortest) = (first.len(), first.len());
    for c in scored {
        common = common.min(super::prefix_tree::common(first, c));
        shortest = shortest.min(c.len());
    }
    prompt + common.min(shortest - 1)
}

/// An empty score per choice; what its decode will compute and reuse.
fn start(job: ChoiceJob) -> Pending {
    let shared = shared_tokens(&job);
    let prompt = job.prompt.len();
    // With one row every continuation token is read from the prompt's last row.
    let single_row = job.single_row();
    let own = |c: &Vec<Token>| match single_row {
        true => 0,
        false => (prompt + c.len()).saturating_sub(shared),
    };
    let choices = job
        .continuations
        .iter()
        .map(|c| ChoiceLogprob {
            logprob: 0.0,
            greedy: true,
            tokens: c.len(),
            tokens_computed: own(c),
            tokens_reused: shared.min(prompt + c.len()),
            token_logprobs: Vec::with_capacity(c.len()),
        })
        .collect();
    Pending {
        job,
        shared,
        choices,
    }
}

/// Which choices a row of logits scores, and which of their continuation tokens.
struct Row {
    /// Those of these choices with a token there: the group's on a token all of them share,
    /// else one choice.
    choices: std::ops::Range<usize>,
    /// Index into the continuation of the token the row scores.
    next: usize,
}

/// One token to decode: its position, the sequences it belongs to and the row it is read for.
struct Push {
    token: Token,
    position: u32,
    sequences: std::ops::Range<u32>,
    row: Option<Row>,
}

/// The question's `group` of choices as llama-perplexity lays out a task: the shared tokens once
/// for every sequence, then each choice's own tokens in its sequence (the choice's place in the
/// group), its last one included (unread, but part of the batch llama-perplexity decodes, whose
/// shape the numbers depend on).
fn pushes(job: &ChoiceJob, shared: usize, group: std::ops::Range<usize>) -> Vec<Push> {
    let prompt = job.prompt.len();
    let single_row = job.single_row();
    let sequences = if single_row { 1 } else { group.len() as u32 };
    let token_at = |choice: usize, at: usize| match at.checked_sub(prompt) {
        None => job.prompt[at],
        Some(i) => job.continuations[choice][i],
    };
    // A row at position `at` scores continuation token `at + 1 - prompt`.
    let row_after = |at: usize, choices: std::ops::Range<usize>| {
        (at + 1 >= prompt).then_some(Row {
            choices,
            next: at + 1 - prompt,
        })
    };
    // Every non-empty choice holds the shared continuation tokens; read them from the first.
    let first_scored = job.continuations.iter().position(|c| !c.is_empty());
    let group_scored = job.continuations[group.clone()]
        .iter()
        .any(|c| !c.is_empty());
    let mut pushes: Vec<Push> = (0..shared)
        .map(|at| Push {
            token: token_at(first_scored.unwrap_or(0), at),
            position: at as u32,
            sequences: 0..sequences,
            row: group_scored.then(|| row_after(at, group.clone())).flatten(),
        })
        .collect();
    if single_row {
        return pushes;
    }
    for choice in group.clone() {
        let end = prompt + job.continuations[choice].len();
        let sequence = (choice - group.start) as u32;
        for at in shared..end {
            let row = (at + 1 < end)
                .then(|| row_after(at, choice..choice + 1))
                .flatten();
            pushes.push(Push {
                token: token_at(choice, at),
                position: at as u32,
                sequences: sequence..sequence + 1,
                row,
            });
        }
    }
    pushes
}

/// Push every token, decoding whenever the batch is full and at the end.
fn decode_all<D: Decoder>(decoder: &mut D, pending: &mut Pending, pushes: Vec<Push>) -> Result<()> {
    decoder.clear_batch();
    let capacity = decoder.batch_capacity();
    let mut rows: Vec<(usize, Row)> = Vec::new();
    let mut len = 0;
    for push in pushes {
        if len == capacity {
            decode_and_read(decoder, pending, &mut rows)?;
            len = 0;
        }
        let index = decoder.push_shared(
            push.token,
            push.position,
            push.sequences,
            push.row.is_some(),
        )?;
        len += 1;
        rows.extend(push.row.map(|row| (index, row)));
    }
    if len > 0 {
        decode_and_read(decoder, pending, &mut rows)?;
    }
    Ok(())
}

/// Decode the batch and add each row's log-probabilities to its choices (logits last only until
/// the next decode, so rows are read right after each one); then start a new batch.
fn decode_and_read<D: Decoder>(
    decoder: &mut D,
    pending: &mut Pending,
    rows: &mut Vec<(usize, Row)>,
) -> Result<()> {
    decoder.decode()?;
    for (index, row) in rows.drain(..) {
        let scored: Vec<(usize, Token)> = row
            .choices
            .clone()
            .filter_map(|choice| {
                let token = pending.job.continuations[choice].get(row.next)?;
                Some((choice, *token))
            })
            .collect();
        let tokens: Vec<Token> = scored.iter().map(|&(_, t)| t).collect();
        for ((choice, _), lp) in scored.iter().zip(decoder.log_probs(index, &tokens)) {
            add(&mut pending.choices[*choice], lp);
        }
    }
    decoder.clear_batch();
    Ok(())
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
        score_on(Scripted::new(capacity, &[]), sequences, jobs)
    }

    fn score_on(
        mut decoder: Scripted,
        sequences: u32,
        jobs: Vec<ChoiceJob>,
    ) -> (Vec<Scored>, Scripted) {
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
                    let (reused, computed) = (choice.tokens_reused, choice.tokens_computed);
                    if continuations.iter().any(|c| c.len() > 1) {
                        assert_eq!(reused + computed, prompt.len() + c.len());
                    } else {
                        assert_eq!((reused, computed), (prompt.len(), 0));
                    }
                    assert_eq!(choice.token_logprobs.len(), c.len());
                    let sum: f64 = choice.token_logprobs.iter().sum();
                    assert!((sum - choice.logprob).abs() < 1e-12);
                }
            }
            // Each question's shared tokens are decoded once for all its choices, and each
            // choice's own tokens (its last one included) once: 9 + 2 + 12 + 3.
            let decoded: usize = decoder.batches.iter().map(Vec::len).sum();
            assert_eq!(decoded, 26, "{capacity}/{sequences}");
            assert!(decoder.batches.iter().all(|b| b.len() <= capacity));
            assert!(decoder.batches.len() >= questions.len());
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
        assert_eq!(decoder.batches.len(), 5, "a batch per question");
        for batch in &decoder.batches {
            assert_eq!(batch.len(), 3, "the prompt only");
            assert_eq!(batch.iter().filter(|p| p.logits).count(), 1);
            assert!(batch.iter().all(|p| (p.sequence, p.through) == (0, 0)));
        }
        for s in &scored {
            assert!(s
                .choices
                .iter()
                .all(|c| c.tokens_computed == 0 && c.tokens_reused == 3));
        }
    }

    #[test]
    fn tokens_all_choices_start_with_are_decoded_once_in_llama_perplexitys_layout() {
        let prompt = [1, 2, 3];
        let continuations: [&[i32]; 3] = [&[7, 8, 9], &[7, 8, 10], &[7, 11]];
        let (scored, decoder) = score_all(64, 3, vec![job(0, &prompt, &continuations)]);
        for (choice, c) in scored[0].choices.iter().zip(continuations) {
            let (lp, greedy) = expected(&prompt, c);
            assert!((choice.logprob - lp).abs() < 1e-12);
            assert_eq!(choice.greedy, greedy);
            assert_eq!(choice.tokens_reused, 4, "the prompt and the shared 7");
        }
        let computed: Vec<usize> = scored[0]
            .choices
            .iter()
            .map(|c| c.tokens_computed)
            .collect();
        assert_eq!(computed, vec![2, 2, 1]);
        // The shared tokens once for the three sequences, then each choice's own tokens in
        // choice order, its last one included; a row wherever a next token is scored.
        let layout: Vec<(i32, u32, u32, u32, bool)> = decoder.batches[0]
            .iter()
            .map(|p| (p.token.id(), p.position, p.sequence, p.through, p.logits))
            .collect();
        assert_eq!(
            layout,
            vec![
                (1, 0, 0, 2, false),
                (2, 1, 0, 2, false),
                (3, 2, 0, 2, true),
                (7, 3, 0, 2, true),
                (8, 4, 0, 0, true),
                (9, 5, 0, 0, false),
                (8, 4, 1, 1, true),
                (10, 5, 1, 1, false),
                (11, 4, 2, 2, false),
            ]
        );
    }

    #[test]
    fn a_choice_that_is_another_choices_start_keeps_a_token_of_its_own() {
        let continuations: [&[i32]; 3] = [&[7, 8], &[7, 8, 9], &[7, 8]];
        let (scored, decoder) = score_all(64, 3, vec![job(0, &[1, 2], &continuations)]);
        for (choice, c) in scored[0].choices.iter().zip(continuations) {
            assert!((choice.logprob - expected(&[1, 2], c).0).abs() < 1e-12);
            assert_eq!(choice.token_logprobs.len(), c.len());
        }
        let shared = decoder.batches[0]
            .iter()
            .filter(|p| (p.sequence, p.through) == (0, 2))
            .count();
        assert_eq!(
            shared, 3,
            "the prompt and 7, not the 8 the shorter choices end with"
        );
    }

    #[test]
    fn more_choices_than_a_context_holds_are_scored_in_groups_with_the_same_scores() {
        // Ten choices that share their first token, of other lengths, one of them empty.
        let prompt = [1, 2, 3];
        let owned: Vec<Vec<i32>> = (0..10)
            .map(|i| match i {
                4 => vec![],
                _ => [7].into_iter().chain(10 * i..10 * i + 1 + i % 3).collect(),
            })
            .collect();
        let continuations: Vec<&[i32]> = owned.iter().map(Vec::as_slice).collect();
        let score = |max_sequences: u32, sequences: u32| {
            let decoder = Scripted::new(8, &[]).with_max_sequences(max_sequences);
            let (mut scored, decoder) =
                score_on(decoder, sequences, vec![job(0, &prompt, &continuations)]);
            (scored.remove(0), decoder)
        };
        let (whole, one_group) = score(256, 10);
        let (grouped, groups) = score(3, 3);
        let one = job(0, &prompt, &continuations);
        assert_eq!(one.groups(256).as_slice(), std::slice::from_ref(&(0..10)));
        assert_eq!(one.groups(3), vec![0..3, 3..6, 6..9, 9..10]);
        assert_eq!((one.sequences(256), one.sequences(3)), (10, 3));
        // The same tokens computed and reused, the same scores, the fake model's.
        assert_eq!(grouped.choices, whole.choices);
        for (choice, c) in grouped.choices.iter().zip(&continuations) {
            assert_eq!(choice.logprob, expected(&prompt, c).0);
            assert_eq!(choice.token_logprobs.len(), c.len());
        }
        // Each group decodes the shared prompt and 7 again, in sequences 0..3 only.
        let decoded = |d: &Scripted| d.batches.iter().map(Vec::len).sum::<usize>();
        assert_eq!(decoded(&groups), decoded(&one_group) + 3 * 4);
        assert!(groups.batches.iter().flatten().all(|p| p.through < 3));
        assert!(
            groups.kv.is_empty(),
            "every group's sequences are forgotten"
        );
        // The old layout, every choice a sequence of one batch, is what a context refuses.
        let mut too_many = Scripted::new(8, &[]).with_max_sequences(3);
        too_many
            .push_shared(Token::from_id(1), 0, 0..4, true)
            .unwrap();
        assert!(too_many.decode().is_err());
    }

    #[test]
    fn three_hundred_choices_fit_llama_cpps_256_sequences_in_two_groups() {
        let owned: Vec<Vec<i32>> = (0..300).map(|i| vec![100 + i, 7, i % 5]).collect();
        let continuations: Vec<&[i32]> = owned.iter().map(Vec::as_slice).collect();
        let one = job(0, &[1, 2], &continuations);
        assert_eq!(one.sequences(crate::engine::MAX_SEQUENCES), 150);
        let (scored, decoder) = score_all(512, 256, vec![one]);
        assert_eq!(scored[0].choices.len(), 300);
        for (choice, c) in scored[0].choices.iter().zip(&continuations) {
            assert_eq!(choice.logprob, expected(&[1, 2], c).0);
        }
        assert!(decoder.batches.iter().flatten().all(|p| p.through < 150));
    }

    #[test]
    fn a_stop_request_ends_between_questions_and_a_too_wide_question_is_an_error() {
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
