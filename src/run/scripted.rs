//! A decoder for tests that keeps llama.cpp's batch and position rules instead of running a
//! model (used by the scheduler's and the log-likelihood scorer's tests).

use super::scheduler::Decoder;
use crate::engine::Token;
use crate::error::Result;
use std::collections::HashMap;

/// The fake model's log-probability of `token` after `context`, and whether it is the most
/// likely token there: a hash of the whole context, so it changes with any earlier token.
pub fn fake_log_prob(context: &[Token], token: Token) -> (f64, bool) {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for t in context {
        hash = (hash ^ t.id() as u64).wrapping_mul(0x0100_0000_01b3);
    }
    let favourite = (hash % 50) as i32;
    let spread = ((hash >> 8) ^ (token.id() as u64).wrapping_mul(0x9e37_79b9)) % 1000;
    let log_prob = if token.id() == favourite {
        -0.01
    } else {
        -0.5 - spread as f64 / 100.0
    };
    (log_prob, token.id() == favourite)
}

pub const EOS: i32 = 0;

pub fn tokens(ids: &[i32]) -> Vec<Token> {
    ids.iter().map(|&id| Token::from_id(id)).collect()
}

/// The text a script of token ids decodes to (see [`Scripted::token_bytes`]).
pub fn text(ids: &[i32]) -> String {
    ids.iter().map(i32::to_string).collect::<Vec<_>>().join(" ")
}

/// One token of a batch, as the decoder received it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Pushed {
    pub token: Token,
    pub position: u32,
    /// The first sequence the token belongs to.
    pub sequence: u32,
    /// The last one (the same as `sequence` unless the token is shared).
    pub through: u32,
    pub logits: bool,
}

impl Pushed {
    fn sequences(&self) -> std::ops::RangeInclusive<u32> {
        self.sequence..=self.through
    }
}

pub fn pushed(token: i32, position: u32, sequence: u32, logits: bool) -> Pushed {
    Pushed {
        token: Token::from_id(token),
        position,
        sequence,
        through: sequence,
        logits,
    }
}

/// A decoder that keeps llama.cpp's rules instead of a model, so a scheduler that breaks them
/// fails here as it would in llama.cpp. A sequence's KV is the list of its tokens by position.
/// A batch holds at most `capacity` tokens, and decode rejects it unless every sequence in it
/// continues at the position after the last one it holds (stricter than llama.cpp only for an
/// empty sequence, which must start at 0 where llama.cpp would accept a gap). The next token
/// comes from the script of the job's prompt, after checking that the sequence's KV starts
/// with that prompt, so a wrong copy of the prefix cannot go unnoticed. A sequence id past the
/// most sequences a context holds (llama.cpp's 256 unless set lower) fails the decode, as
/// llama.cpp's batch validation fails it.
pub struct Scripted {
    capacity: usize,
    max_sequences: u32,
    scripts: HashMap<Vec<Token>, Vec<Token>>,
    pub kv: HashMap<u32, Vec<Token>>,
    batch: Vec<Pushed>,
    decoded: bool,
    /// Every decoded batch, in order.
    pub batches: Vec<Vec<Pushed>>,
    /// Every copy: (source, destination, positions).
    pub copies: Vec<(u32, u32, u32)>,
}

impl Scripted {
    /// `scripts`: each prompt with the tokens it generates; end-of-generation follows.
    pub fn new(capacity: usize, scripts: &[(&[i32], &[i32])]) -> Scripted {
        Scripted {
            capacity,
            max_sequences: crate::engine::MAX_SEQUENCES,
            scripts: scripts
                .iter()
                .map(|(prompt, output)| (tokens(prompt), tokens(output)))
                .collect(),
            kv: HashMap::new(),
            batch: Vec::new(),
            decoded: false,
            batches: Vec::new(),
            copies: Vec::new(),
        }
    }

    /// A decoder whose contexts hold at most `max_sequences` sequences.
    pub fn with_max_sequences(mut self, max_sequences: u32) -> Scripted {
        self.max_sequences = max_sequences;
        self
    }

    pub fn pushed_to(&self, sequence: u32) -> Vec<Pushed> {
        self.batches
            .iter()
            .flatten()
            .filter(|p| p.sequences().contains(&sequence))
            .copied()
            .collect()
    }
}

impl Decoder for Scripted {
    /// The job's prompt.
    type Sampler = Vec<Token>;

    fn batch_capacity(&self) -> usize {
        self.capacity
    }

    fn clear_batch(&mut self) {
        self.batch.clear();
        self.decoded = false;
    }

    fn push_shared(
        &mut self,
        token: Token,
        position: u32,
        sequences: std::ops::Range<u32>,
        logits: bool,
    ) -> Result<usize> {
        if self.batch.len() == self.capacity {
            return Err(anyhow::anyhow!("batch overflow"));
        }
        if sequences.is_empty() {
            return Err(anyhow::anyhow!("a token for no sequence"));
        }
        self.batch.push(Pushed {
            token,
            position,
            sequence: sequences.start,
            through: sequences.end - 1,
            logits,
        });
        Ok(self.batch.len() - 1)
    }

    fn decode(&mut self) -> Result<()> {
        if self.batch.is_empty() {
            return Err(anyhow::anyhow!("empty batch"));
        }
        if let Some(p) = self.batch.iter().find(|p| p.through >= self.max_sequences) {
            return Err(anyhow::anyhow!(
                "invalid seq_id {} >= {}",
                p.through,
                self.max_sequences
            ));
        }
        let mut next: HashMap<u32, u32> = HashMap::new();
        for p in &self.batch {
            for sequence in p.sequences() {
                let held = self.kv.get(&sequence).map_or(0, Vec::len) as u32;
                let expected = next.entry(sequence).or_insert(held);
                if p.position != *expected {
                    return Err(anyhow::anyhow!(
                        "sequence {sequence} holds positions up to {}, batch has position {}",
                        *expected as i64 - 1,
                        p.position
                    ));
                }
                *expected += 1;
            }
        }
        for p in &self.batch {
            for sequence in p.sequences() {
                self.kv.entry(sequence).or_default().push(p.token);
            }
        }
        self.batches.push(self.batch.clone());
        self.decoded = true;
        Ok(())
    }

    fn sample(&mut self, prompt: &mut Vec<Token>, batch_index: usize) -> Token {
        assert!(self.decoded, "sampled before decode");
        let p = self.batch[batch_index];
        assert!(p.logits, "sampled a token without logits: {p:?}");
        let context = &self.kv[&p.sequence][..=p.position as usize];
        assert!(
            context.starts_with(prompt),
            "sequence {} holds {context:?}, not the prompt {prompt:?}",
            p.sequence
        );
        let generated = context.len() - prompt.len();
        self.scripts[prompt.as_slice()]
            .get(generated)
            .copied()
            .unwrap_or(Token::from_id(EOS))
    }

    fn is_end_of_generation(&self, token: Token) -> bool {
        token == Token::from_id(EOS)
    }

    /// The fake model's log-probabilities ([`fake_log_prob`]) given the sequence's KV up to the
    /// row's position, so a row read for the wrong sequence or position gives other numbers.
    fn log_probs(&mut self, batch_index: usize, tokens: &[Token]) -> Vec<(f64, bool)> {
        assert!(self.decoded, "read logits before decode");
        let p = self.batch[batch_index];
        assert!(p.logits, "read a row without logits: {p:?}");
        let context = &self.kv[&p.sequence][..=p.position as usize];
        // A shared token's row stands for every sequence it belongs to: they must agree.
        for sequence in p.sequences() {
            assert_eq!(
                &self.kv[&sequence][..=p.position as usize],
                context,
                "shared row {p:?}: sequence {sequence} holds another context"
            );
        }
        tokens.iter().map(|&t| fake_log_prob(context, t)).collect()
    }

    fn token_bytes(&self, token: Token) -> Vec<u8> {
        format!("{} ", token.id()).into_bytes()
    }

    fn copy_sequence(&mut self, source: u32, destination: u32, positions: u32) -> Result<()> {
        let held = self.kv.get(&source).cloned().unwrap_or_default();
        let copied = held.into_iter().take(positions as usize).collect();
        self.kv.insert(destination, copied);
        self.copies.push((source, destination, positions));
        Ok(())
    }

    fn forget_sequence(&mut self, sequence: u32) {
        self.kv.remove(&sequence);
    }

    fn max_sequences(&self) -> u32 {
        self.max_sequences
    }
}
