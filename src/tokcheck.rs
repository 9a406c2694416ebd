//! The tokenizer check (`preflight`/`run --hf-tokenizer tokenizer.json`): does the GGUF file
//! tokenize text the way the original model does? A converted model with a wrong pre-tokenizer
//! or missing merges loads and runs, but every score it gets is silently worse (llama.cpp
//! #7476, #7724). Each question's user message is tokenized by the GGUF's vocabulary (llama.cpp,
//! through [`crate::engine::Vocabulary`]) and by the Hugging Face `tokenizers` crate, and the
//! token ids are compared.
//!
//! Only the text is compared, without special tokens: no BOS and no chat template on either
//! side (Hugging Face's `add_special_tokens` and chat templates are configured differently from
//! llama.cpp's, and they are not what a broken conversion gets wrong); the vocabulary, the merges
//! and the pre-tokenizer are.

use crate::config::GenerationSettings;
use crate::dataset::Question;
use crate::engine::Vocabulary;
use crate::error::{usage, Result};
use crate::prompt::Prompter;
use crate::record::{TokenPiece, TokenizerCheck, TokenizerDifference};
use crate::units::Lines;
use serde_json::value::RawValue;
use std::collections::BTreeMap;
use std::io::Read;
use std::path::Path;
use std::str::FromStr;
use std::sync::atomic::{AtomicBool, Ordering};
use tokenizers::{
    Model, NormalizedString, Normalizer, NormalizerWrapper, OffsetReferential, OffsetType,
    PreTokenizedString, PreTokenizer, PreTokenizerWrapper,
};

/// Differing prompts shown in full.
const EXAMPLES: usize = 3;
/// Tokens shown before the first difference.
const BEFORE: usize = 2;
/// Tokens shown from the first difference on.
const FROM: usize = 4;
/// Characters of prompt text shown on each side of the first difference.
const SNIPPET_CHARS: usize = 24;

/// The largest tokenizer.json read. Real ones are at most a few tens of MB (Gemma 3's, with
/// 262,144 tokens, is 33 MB); a larger file is refused before it is read, rather than parsed into
/// several times its size in memory.
const MAX_FILE_BYTES: u64 = 128 << 20;

/// Bytes a question's text may grow to, per byte, through the Hugging Face tokenizer's
/// normalizers and pre-tokenizers (plus [`SLACK_BYTES`] per piece). Real tokenizers stay well
/// below: Llama's `Replace(" ", "▁")` makes 3 bytes of 1, NFKC's largest expansion 33 of 3
/// (U+FDFA), ByteLevel 2 of 1. Forty normalizers that each double the text, which the crate
/// would follow until memory runs out, are stopped at the sixth.
const GROWTH: usize = 64;

/// Room for what a step adds once per piece (a `Prepend`'s "▁"), whatever the piece's length.
const SLACK_BYTES: usize = 1024;

/// A Hugging Face tokenizer read from its `tokenizer.json`.
pub struct HfTokenizer {
    tokenizer: tokenizers::Tokenizer,
    /// The longest replacement any `Precompiled` normalizer holds (bytes).
    longest_precompiled: usize,
    path: String,
    sha256: String,
}

/// Why the Hugging Face side gave no token ids for a text.
#[derive(Debug, PartialEq)]
enum NoIds {
    /// A normalizer or pre-tokenizer would grow the text past [`GROWTH`] times its length.
    Grows,
    /// The tokenizer failed on it (the prompt counts as different).
    Fails,
    /// The crate panicked on it (it unwraps some of its own errors, such as a FixedLength
    /// pre-tokenizer of length 0): the file is not usable.
    Panics,
}

impl HfTokenizer {
    /// Read `tokenizer.json`; a file that is not one, or one too large, is a usage error naming
    /// it.
    pub fn load(path: &Path) -> Result<HfTokenizer> {
        let shown = path.display().to_string();
        let unreadable = |e: &dyn std::fmt::Display| {
            usage(format!(
                "--hf-tokenizer {shown} cannot be read ({e}); give the original model's tokenizer.json"
            ))
        };
        let file = std::fs::File::open(path).map_err(|e| unreadable(&e))?;
        // The length read, not the one the metadata claims: a file may grow while it is read.
        let mut bytes = Vec::new();
        file.take(MAX_FILE_BYTES + 1)
            .read_to_end(&mut bytes)
            .map_err(|e| unreadable(&e))?;
        Self::from_bytes(&bytes, &shown)
    }

    /// [`HfTokenizer::load`] on the file's bytes; `shown` names the file.
    fn from_bytes(bytes: &[u8], shown: &str) -> Result<HfTokenizer> {
        let not_a_tokenizer = |why: String| {
            usage(format!(
                "--hf-tokenizer {shown} is not a Hugging Face tokenizer.json ({why}); give the original model's tokenizer.json"
            ))
        };
        if bytes.len() as u64 > MAX_FILE_BYTES {
            return Err(not_a_tokenizer(format!(
                "it is larger than {} MiB, the most this check reads",
                MAX_FILE_BYTES >> 20
            )));
        }
        let parts: BTreeMap<String, &RawValue> =
            serde_json::from_slice(bytes).map_err(|e| not_a_tokenizer(e.to_string()))?;
        // The crate unwraps some of its own parse errors (a malformed decoder, a Precompiled
        // charsmap): a panic there is this file's fault, reported as such.
        let no_panic =
            |why: &str| not_a_tokenizer(format!("the tokenizers crate failed on its {why}"));
        let mut tokenizer =
            std::panic::catch_unwind(|| tokenizers::Tokenizer::from_str(&used_parts(&parts)))
                .map_err(|_| no_panic("contents"))?
                .map_err(|e| not_a_tokenizer(e.to_string()))?;
        let mut longest_precompiled = 0;
        if let Some(raw) = parts.get("normalizer").map(|raw| raw.get()) {
            longest_precompiled = precompiled_replacements(raw).map_err(not_a_tokenizer)?;
            let normalizer: Option<NormalizerWrapper> =
                std::panic::catch_unwind(|| serde_json::from_str(raw))
                    .map_err(|_| no_panic("normalizer"))?
                    .map_err(|e| not_a_tokenizer(format!("normalizer: {e}")))?;
            if let Some(normalizer) = normalizer {
                // The crate normalizes added tokens marked `normalized` when the normalizer is
                // set: each is held to the same bound first.
                let bounded = Bounded {
                    steps: &normalizer,
                    longest_precompiled,
                    grew: AtomicBool::new(false),
                };
                let decoder = tokenizer.get_added_vocabulary().get_added_tokens_decoder();
                for token in decoder.values().filter(|token| token.normalized) {
                    let mut piece = NormalizedString::from(token.content.as_str());
                    if !bounded.normalize_within(
                        &normalizer,
                        &mut piece,
                        budget(token.content.len()),
                    ) {
                        return Err(usage(format!(
                            "--hf-tokenizer {shown}: its normalizers grow the added token {:?} beyond {GROWTH} times its length, which no real tokenizer does; give the original model's tokenizer.json",
                            token.content
                        )));
                    }
                }
                tokenizer
                    .with_normalizer(Some(normalizer))
                    .map_err(|e| not_a_tokenizer(format!("normalizer: {e}")))?;
            }
        }
        // Special tokens (`<|im_end|>`) in a question are text, as llama.cpp reads them without
        // parse_special; added tokens that are not special are still split out on both sides
        // (llama.cpp's user-defined tokens).
        tokenizer.set_encode_special_tokens(true);
        Ok(HfTokenizer {
            tokenizer,
            longest_precompiled,
            path: shown.to_string(),
            sha256: crate::dataset::hex_sha256(bytes),
        })
    }

    /// Token ids of `text` as plain text: what `Tokenizer::encode(text, false)` gives, without
    /// truncation or padding (settings of the original pipeline, not of the vocabulary), and with
    /// every normalizer and pre-tokenizer step held to [`GROWTH`].
    fn ids(&self, text: &str) -> std::result::Result<Vec<i64>, NoIds> {
        let encode = std::panic::AssertUnwindSafe(|| self.bounded_ids(text));
        std::panic::catch_unwind(encode).unwrap_or(Err(NoIds::Panics))
    }

    /// [`HfTokenizer::ids`], where the crate may panic.
    fn bounded_ids(&self, text: &str) -> std::result::Result<Vec<i64>, NoIds> {
        let normalizer = self.tokenizer.get_normalizer().map(|steps| Bounded {
            steps,
            longest_precompiled: self.longest_precompiled,
            grew: AtomicBool::new(false),
        });
        let mut pieces = self
            .tokenizer
            .get_added_vocabulary()
            .extract_and_normalize(normalizer.as_ref(), text);
        if normalizer.is_some_and(|n| n.grew.load(Ordering::Relaxed)) {
            return Err(NoIds::Grows);
        }
        if let Some(steps) = self.tokenizer.get_pre_tokenizer() {
            let count = pieces
                .get_splits(OffsetReferential::Normalized, OffsetType::Byte)
                .len();
            let budget = budget(text.len()).saturating_add(SLACK_BYTES.saturating_mul(count));
            match pre_tokenize_within(steps, &mut pieces, budget) {
                Ok(true) => {}
                Ok(false) => return Err(NoIds::Grows),
                Err(_) => return Err(NoIds::Fails),
            }
        }
        let model = self.tokenizer.get_model();
        pieces
            .tokenize(|piece| model.tokenize(piece.get()))
            .map_err(|_| NoIds::Fails)?;
        let encoding = pieces
            .into_encoding(None, 0, OffsetType::Byte)
            .map_err(|_| NoIds::Fails)?;
        Ok(encoding.get_ids().iter().map(|&id| i64::from(id)).collect())
    }

    /// A token's text as the vocabulary stores it (`Ġthe`), as the GGUF side is shown.
    fn token_text(&self, id: i64) -> String {
        u32::try_from(id)
            .ok()
            .and_then(|id| self.tokenizer.id_to_token(id))
            .unwrap_or_default()
    }
}

/// Bytes a text of `len` bytes may grow to.
fn budget(len: usize) -> usize {
    GROWTH.saturating_mul(len).saturating_add(SLACK_BYTES)
}

/// The tokenizer's normalizer, run one step at a time within a budget.
struct Bounded<'t> {
    steps: &'t NormalizerWrapper,
    longest_precompiled: usize,
    /// Set when a step would have grown a piece past its budget; that piece and the rest are
    /// left as they are (the crate ignores a normalizer's error, so it is reported here).
    grew: AtomicBool,
}

impl Normalizer for Bounded<'_> {
    fn normalize(&self, piece: &mut NormalizedString) -> tokenizers::Result<()> {
        if !self.grew.load(Ordering::Relaxed)
            && !self.normalize_within(self.steps, piece, budget(piece.len_original()))
        {
            self.grew.store(true, Ordering::Relaxed);
        }
        Ok(())
    }
}

impl Bounded<'_> {
    /// Apply `step` (each member of a sequence in turn) while `piece` stays within `budget`
    /// bytes; `false` as soon as it would not.
    ///
    /// Why this bounds memory: a step whose growth the file sets (a `Replace`'s content, a
    /// `Prepend`, a `Precompiled` map) is checked before it runs against the most it can make of
    /// the piece; every other step grows a text by a factor fixed by Unicode or the crate (at
    /// most 18 characters of one under NFKC, 2 bytes of 1 under ByteLevel), so checking it after
    /// it ran lets one step exceed the budget by that factor at most. Sequences nest no deeper
    /// than serde_json's recursion limit (128).
    fn normalize_within(
        &self,
        step: &NormalizerWrapper,
        piece: &mut NormalizedString,
        budget: usize,
    ) -> bool {
        if let NormalizerWrapper::Sequence(steps) = step {
            return steps
                .as_ref()
                .iter()
                .all(|step| self.normalize_within(step, piece, budget));
        }
        let len = piece.len();
        let most = match step {
            // Each match, at most one per byte and one at the end, becomes the content.
            NormalizerWrapper::Replace(replace) => {
                len.saturating_add((len + 1).saturating_mul(replace.content.len()))
            }
            NormalizerWrapper::Prepend(prepend) => len.saturating_add(prepend.prepend.len()),
            // Each grapheme or character, at least a byte, becomes one replacement at most.
            NormalizerWrapper::Precompiled(_) => {
                len.saturating_mul(self.longest_precompiled.saturating_add(1))
            }
            _ => len,
        };
        if most > budget {
            return false;
        }
        // Errors are ignored as the crate ignores them (`extract_and_normalize`): the piece stays.
        let _ = step.normalize(piece);
        piece.len() <= budget
    }
}

/// Apply the pre-tokenizer `step` (each member of a sequence in turn) while the pieces stay
/// within `budget` bytes in all; `Ok(false)` as soon as they do not. Pre-tokenizers only split
/// a text, except ByteLevel (2 bytes of 1, and a space per piece) and Metaspace (a character of
/// at most 4 bytes per space and per piece): a factor the file cannot raise, so checking after
/// each step bounds it.
fn pre_tokenize_within(
    step: &PreTokenizerWrapper,
    pieces: &mut PreTokenizedString,
    budget: usize,
) -> tokenizers::Result<bool> {
    if let PreTokenizerWrapper::Sequence(steps) = step {
        for step in steps.as_ref() {
            if !pre_tokenize_within(step, pieces, budget)? {
                return Ok(false);
            }
        }
        return Ok(true);
    }
    step.pre_tokenize(pieces)?;
    let len: usize = pieces
        .get_splits(OffsetReferential::Normalized, OffsetType::Byte)
        .iter()
        .map(|(piece, ..)| piece.len())
        .sum();
    Ok(len <= budget)
}

/// A tokenizer.json of `parts` for the crate, with the normalizer left out (set after the
/// added tokens are checked against it) and the parts the check does not use set to null:
/// the decoder and post-processor (and the crate unwraps a malformed decoder's parse error),
/// truncation and padding (settings of the original pipeline, not of its vocabulary).
fn used_parts(parts: &BTreeMap<String, &RawValue>) -> String {
    let mut json = String::from("{");
    for (key, value) in parts {
        let unused = [
            "normalizer",
            "decoder",
            "post_processor",
            "truncation",
            "padding",
        ];
        if json.len() > 1 {
            json.push(',');
        }
        json.push_str(&serde_json::Value::from(key.as_str()).to_string());
        json.push(':');
        json.push_str(if unused.contains(&key.as_str()) {
            "null"
        } else {
            value.get()
        });
    }
    json.push('}');
    json
}

/// The longest replacement (bytes) of any `Precompiled` normalizer in the `normalizer` part of a
/// tokenizer.json (0 when it has none), read before the crate reads the part: the crate reserves
/// memory for the charsmap's trie by the size the charsmap declares (up to 8 GiB for 4 bytes of
/// base64), so a declared size beyond the data is refused here. Other problems are left to the
/// crate.
fn precompiled_replacements(normalizer: &str) -> std::result::Result<usize, String> {
    let Ok(normalizer) = serde_json::from_str::<serde_json::Value>(normalizer) else {
        return Ok(0);
    };
    let mut longest = 0;
    let mut pending = vec![&normalizer];
    while let Some(value) = pending.pop() {
        match value {
            serde_json::Value::Object(object) => {
                if let Some(serde_json::Value::String(charsmap)) =
                    object.get("precompiled_charsmap")
                {
                    longest = longest.max(longest_replacement(&base64_decode(charsmap))?);
                }
                pending.extend(object.values());
            }
            serde_json::Value::Array(items) => pending.extend(items),
            _ => {}
        }
    }
    Ok(longest)
}

/// The longest replacement in a SentencePiece charsmap: a little-endian u32 trie size in bytes,
/// the trie, then the replacements, each ending with a NUL (spm_precompiled's layout).
fn longest_replacement(charsmap: &[u8]) -> std::result::Result<usize, String> {
    let Some(declared) = charsmap.get(..4) else {
        return Ok(0);
    };
    let trie_bytes = u32::from_le_bytes([declared[0], declared[1], declared[2], declared[3]]);
    // The crate reads whole u32s of the trie.
    let trie_end = 4 + (trie_bytes as usize / 4) * 4;
    let Some(replacements) = charsmap.get(trie_end..) else {
        return Err(format!(
            "a Precompiled normalizer's charsmap declares a trie of {trie_bytes} bytes but holds {}",
            charsmap.len() - 4
        ));
    };
    Ok(replacements
        .split(|&b| b == 0)
        .map(<[u8]>::len)
        .max()
        .unwrap_or(0))
}

/// Standard base64 without checks: characters outside the alphabet (padding, white space) are
/// skipped. Lenient on purpose: whatever the crate's stricter decoder accepts decodes the same.
fn base64_decode(text: &str) -> Vec<u8> {
    let mut out = Vec::with_capacity(text.len() / 4 * 3);
    let (mut bits, mut held) = (0u32, 0u32);
    for byte in text.bytes() {
        let value = match byte {
            b'A'..=b'Z' => byte - b'A',
            b'a'..=b'z' => byte - b'a' + 26,
            b'0'..=b'9' => byte - b'0' + 52,
            b'+' => 62,
            b'/' => 63,
            _ => continue,
        };
        bits = (bits << 6) | u32::from(value);
        held += 6;
        if held >= 8 {
            held -= 8;
            out.push((bits >> held) as u8);
            bits &= (1 << held) - 1;
        }
    }
    out
}

/// `preflight --hf-tokenizer`: the check over a question file read with the mapping and
/// template of `settings` (the same input errors as `run`).
pub fn check_file(
    model: &Path,
    hf_tokenizer: &Path,
    questions: &Path,
    settings: &GenerationSettings,
) -> Result<TokenizerCheck> {
    let set = crate::dataset::load_mapped(questions, settings.mapping.as_ref())?;
    let prompter = Prompter::new(settings)?;
    prompter.check(&set.path, &set.questions)?;
    check(model, hf_tokenizer, &set.questions, &prompter)
}

/// Compare the two tokenizers on the user message of every question (as generation renders it).
pub fn check(
    model: &Path,
    hf_tokenizer: &Path,
    questions: &[Question],
    prompter: &Prompter,
) -> Result<TokenizerCheck> {
    let hf = HfTokenizer::load(hf_tokenizer)?;
    let vocabulary = Vocabulary::load(model)?;
    let mut check = TokenizerCheck {
        hf_tokenizer: hf.path.clone(),
        hf_tokenizer_sha256: hf.sha256.clone(),
        gguf_pre_tokenizer: vocabulary.pre_tokenizer(),
        ..Default::default()
    };
    for question in questions {
        // A message that cannot be rendered was refused before (Prompter::check).
        let Ok(text) = prompter.user_message(question) else {
            continue;
        };
        compare(&mut check, &vocabulary, &hf, &question.id, &text)?;
    }
    log::info!("{}", check.summary());
    Ok(check)
}

/// Tokenize one prompt both ways and count it; keep the first few differences as examples.
fn compare(
    check: &mut TokenizerCheck,
    vocabulary: &Vocabulary,
    hf: &HfTokenizer,
    question_id: &str,
    text: &str,
) -> Result<()> {
    let gguf: Vec<i64> = vocabulary
        .tokenize_text(text)
        .into_iter()
        .map(i64::from)
        .collect();
    // A text the Hugging Face tokenizer cannot encode counts as different, with no tokens; one
    // it would grow without bound ends the check, since the file is not a usable tokenizer.
    let theirs = match hf.ids(text) {
        Ok(ids) => ids,
        Err(NoIds::Fails) => Vec::new(),
        Err(NoIds::Grows) => {
            return Err(usage(format!(
                "--hf-tokenizer {}: its normalizers or pre-tokenizers grow the prompt of question {question_id} beyond {GROWTH} times its length, which no real tokenizer does; give the original model's tokenizer.json",
                hf.path
            )))
        }
        Err(NoIds::Panics) => {
            return Err(usage(format!(
                "--hf-tokenizer {}: the tokenizers crate failed on the prompt of question {question_id} (a malformed part of the file); give the original model's tokenizer.json",
                hf.path
            )))
        }
    };
    check.prompts_checked += 1;
    check.gguf_tokens += gguf.len();
    check.hf_tokens += theirs.len();
    if gguf == theirs {
        return Ok(());
    }
    check.prompts_differ += 1;
    if check.examples.len() < EXAMPLES {
        check.examples.push(difference(
            vocabulary,
            hf,
            question_id,
            text,
            &gguf,
            &theirs,
        ));
    }
    Ok(())
}

/// The first differing token of one prompt with the text and tokens around it.
fn difference(
    vocabulary: &Vocabulary,
    hf: &HfTokenizer,
    question_id: &str,
    text: &str,
    gguf: &[i64],
    theirs: &[i64],
) -> TokenizerDifference {
    let at = gguf
        .iter()
        .zip(theirs)
        .position(|(a, b)| a != b)
        .unwrap_or(gguf.len().min(theirs.len()));
    let start = at.saturating_sub(BEFORE);
    let gguf_id = |id: i64| i32::try_from(id).unwrap_or(-1);
    // The GGUF's pieces before the difference spell the text up to it (plain text, no BOS).
    let offset: usize = gguf[..at]
        .iter()
        .map(|&id| vocabulary.piece(gguf_id(id)).len())
        .sum();
    let window = |ids: &[i64], piece: &dyn Fn(i64) -> String| -> Vec<TokenPiece> {
        ids.iter()
            .skip(start)
            .take(BEFORE + FROM)
            .map(|&id| TokenPiece {
                id,
                text: piece(id),
            })
            .collect()
    };
    TokenizerDifference {
        question_id: question_id.to_string(),
        token_index: at,
        snippet: snippet(text, offset),
        gguf: window(gguf, &|id| vocabulary.token_text(gguf_id(id))),
        hf: window(theirs, &|id| hf.token_text(id)),
    }
}

/// Up to [`SNIPPET_CHARS`] characters of `text` on each side of byte `offset`, on one line.
fn snippet(text: &str, offset: usize) -> String {
    let mut at = offset.min(text.len());
    while !text.is_char_boundary(at) {
        at -= 1;
    }
    let before: String = {
        let mut chars: Vec<char> = text[..at].chars().rev().take(SNIPPET_CHARS).collect();
        chars.reverse();
        chars.into_iter().collect()
    };
    let after: String = text[at..].chars().take(SNIPPET_CHARS).collect();
    crate::units::printable(&format!("{before}{after}"), Lines::Escape).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::alloc_probe::{largest_allocation, PARSE_ALLOCATION_LIMIT};
    use crate::error::{exit_code, exit_code_of};

    #[test]
    fn snippets_stay_on_character_boundaries_and_one_line() {
        let text = "가나다라마바사\n아자차카타파하";
        // Byte 4 is inside '나' (3 bytes each): the snippet starts from the boundary before.
        assert_eq!(snippet(text, 4), "가나다라마바사\\n아자차카타파하");
        let long = "x".repeat(100);
        assert_eq!(snippet(&long, 50).len(), 2 * SNIPPET_CHARS);
    }

    #[test]
    fn a_file_that_is_not_a_tokenizer_is_a_usage_error_naming_it() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("tokenizer.json");
        std::fs::write(&path, "{\"model\": 3}").unwrap();
        let error = HfTokenizer::load(&path).err().unwrap();
        assert_eq!(
            crate::error::exit_code_of(&error),
            crate::error::exit_code::USAGE
        );
        assert!(error.to_string().contains(&path.display().to_string()));
    }

    /// A small tokenizer.json with each kind of part the check bounds: a normalizer sequence
    /// with a Replace and a Prepend, a pre-tokenizer sequence, BPE merges, a special and a
    /// plain added token.
    const SMALL: &str = r#"{"version":"1.0","truncation":{"direction":"Right","max_length":2,"strategy":"LongestFirst","stride":0},"padding":null,
"added_tokens":[
 {"id":0,"content":"<|im_end|>","single_word":false,"lstrip":false,"rstrip":false,"normalized":false,"special":true},
 {"id":1,"content":"<tool>","single_word":false,"lstrip":false,"rstrip":false,"normalized":false,"special":false}],
"normalizer":{"type":"Sequence","normalizers":[{"type":"NFKC"},{"type":"Replace","pattern":{"String":"  "},"content":" "},{"type":"Prepend","prepend":"_"},{"type":"Lowercase"}]},
"pre_tokenizer":{"type":"Sequence","pretokenizers":[{"type":"Digits","individual_digits":true},{"type":"Whitespace"}]},
"post_processor":null,"decoder":null,
"model":{"type":"BPE","dropout":null,"unk_token":"<unk>","continuing_subword_prefix":null,"end_of_word_suffix":null,"fuse_unk":false,"byte_fallback":false,
 "vocab":{"<|im_end|>":0,"<tool>":1,"<unk>":2,"a":3,"b":4,"ab":5,"_":6,"1":7,"<":8,"|":9,">":10,"_a":11,"_ab":12},
 "merges":["_ a","_a b","a b"]}}"#;

    fn small(normalizer: &str, pre_tokenizer: &str) -> String {
        let value: serde_json::Value = serde_json::from_str(SMALL).unwrap();
        let mut value = value.as_object().unwrap().clone();
        value.insert(
            "normalizer".into(),
            serde_json::from_str(normalizer).unwrap(),
        );
        value.insert(
            "pre_tokenizer".into(),
            serde_json::from_str(pre_tokenizer).unwrap(),
        );
        serde_json::Value::Object(value).to_string()
    }

    fn doubling(steps: usize) -> String {
        vec![r#"{"type":"Replace","pattern":{"String":"a"},"content":"aa"}"#; steps].join(",")
    }

    #[test]
    fn the_small_tokenizer_encodes_without_truncation() {
        let hf = HfTokenizer::from_bytes(SMALL.as_bytes(), "t.json").unwrap();
        // Truncation at 2 tokens is the original pipeline's setting, not its vocabulary's.
        assert_eq!(hf.ids("ab ab 1"), Ok(vec![12, 5, 7]));
    }

    #[test]
    fn special_token_text_in_a_question_is_text_and_other_added_tokens_are_split_out() {
        let hf = HfTokenizer::from_bytes(SMALL.as_bytes(), "t.json").unwrap();
        let ids = hf.ids("ab<|im_end|>").unwrap();
        assert!(!ids.contains(&0), "{ids:?}");
        assert_eq!(hf.ids("ab<tool>ab"), Ok(vec![12, 1, 12]));
    }

    #[test]
    fn doubling_normalizers_are_stopped_within_the_budget() {
        let text = "a banana, ".repeat(100);
        for normalizer in [
            format!(r#"{{"type":"Sequence","normalizers":[{}]}}"#, doubling(40)),
            // Forty sequences nested, each doubling once; a Replace that inserts at every position.
            (0..39).fold(doubling(1), |inner, _| {
                format!(r#"{{"type":"Sequence","normalizers":[{},{inner}]}}"#, doubling(1))
            }),
            r#"{"type":"Replace","pattern":{"Regex":""},"content":"xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx"}"#.to_string(),
        ] {
            let json = small(&normalizer, "null");
            let hf = HfTokenizer::from_bytes(json.as_bytes(), "t.json").unwrap();
            let (ids, largest) = largest_allocation(|| hf.ids(&text));
            assert_eq!(ids, Err(NoIds::Grows));
            assert!(largest < 32 * budget(text.len()), "{largest} bytes");
        }
        // A few doublings stay within the budget: 2^5 = 32 times, 32 tokens "a".
        let json = small(
            &format!(r#"{{"type":"Sequence","normalizers":[{}]}}"#, doubling(5)),
            "null",
        );
        let hf = HfTokenizer::from_bytes(json.as_bytes(), "t.json").unwrap();
        assert_eq!(hf.ids("a"), Ok(vec![3; 32]));
    }

    #[test]
    fn doubling_pre_tokenizers_are_stopped_within_the_budget() {
        // ByteLevel maps each byte of a non-ASCII text to a character of two bytes.
        let byte_level = r#"{"type":"ByteLevel","add_prefix_space":false,"trim_offsets":true,"use_regex":false}"#;
        let steps = vec![byte_level; 40].join(",");
        let json = small(
            "null",
            &format!(r#"{{"type":"Sequence","pretokenizers":[{steps}]}}"#),
        );
        let hf = HfTokenizer::from_bytes(json.as_bytes(), "t.json").unwrap();
        let text = "세종대왕 ".repeat(100);
        let (ids, largest) = largest_allocation(|| hf.ids(&text));
        assert_eq!(ids, Err(NoIds::Grows));
        assert!(largest < 64 * budget(text.len()), "{largest} bytes");
    }

    #[test]
    fn a_precompiled_charsmap_declaring_more_trie_than_it_holds_is_refused() {
        // "/////w==" is ff ff ff ff: a trie of 4 GiB, for which the crate would reserve 8 GiB.
        let json = small(
            r#"{"type":"Precompiled","precompiled_charsmap":"/////w=="}"#,
            "null",
        );
        let (outcome, largest) =
            largest_allocation(|| HfTokenizer::from_bytes(json.as_bytes(), "dir/t.json"));
        assert!(largest <= PARSE_ALLOCATION_LIMIT, "{largest} bytes");
        let error = outcome.err().unwrap();
        assert_eq!(exit_code_of(&error), exit_code::USAGE);
        assert!(error.to_string().contains("dir/t.json"), "{error}");
        assert!(
            error.to_string().contains("trie of 4294967295 bytes"),
            "{error}"
        );
    }

    #[test]
    fn the_longest_precompiled_replacement_is_read_from_the_charsmap() {
        // Trie of 4 bytes, then "ab\0xyz\0".
        let charsmap = [4, 0, 0, 0, 9, 9, 9, 9, b'a', b'b', 0, b'x', b'y', b'z', 0];
        assert_eq!(longest_replacement(&charsmap), Ok(3));
        assert_eq!(longest_replacement(&[]), Ok(0));
        assert_eq!(base64_decode("/////w=="), vec![255; 4]);
        assert_eq!(base64_decode("aGVsbG8="), b"hello");
    }

    #[test]
    fn parts_the_crate_panics_on_are_errors_naming_the_file() {
        // A decoder is not used: the crate's panic on a malformed one is never reached.
        let mut value: serde_json::Value = serde_json::from_str(SMALL).unwrap();
        value["decoder"] = serde_json::json!(7);
        let hf = HfTokenizer::from_bytes(value.to_string().as_bytes(), "t.json").unwrap();
        assert_eq!(hf.ids("ab"), Ok(vec![12]));
        // A charsmap that is not base64 makes the crate panic while reading the normalizer.
        let json = small(
            r#"{"type":"Precompiled","precompiled_charsmap":"!!!"}"#,
            "null",
        );
        let error = HfTokenizer::from_bytes(json.as_bytes(), "dir/t.json")
            .err()
            .unwrap();
        assert_eq!(exit_code_of(&error), exit_code::USAGE);
        assert!(error.to_string().contains("dir/t.json is not"), "{error}");
        let error = HfTokenizer::from_bytes(b"[1, 2", "dir/t.json")
            .err()
            .unwrap();
        assert!(error.to_string().contains("dir/t.json is not"), "{error}");
    }

    #[test]
    fn added_tokens_the_normalizer_would_grow_past_the_budget_are_refused_at_load() {
        let mut value: serde_json::Value = serde_json::from_str(&small(
            &format!(r#"{{"type":"Sequence","normalizers":[{}]}}"#, doubling(40)),
            "null",
        ))
        .unwrap();
        value["added_tokens"][1]["content"] = "banana".into();
        value["added_tokens"][1]["normalized"] = true.into();
        let json = value.to_string();
        let (outcome, largest) =
            largest_allocation(|| HfTokenizer::from_bytes(json.as_bytes(), "dir/t.json"));
        assert!(largest <= PARSE_ALLOCATION_LIMIT, "{largest} bytes");
        let error = outcome.err().unwrap();
        assert_eq!(exit_code_of(&error), exit_code::USAGE);
        assert!(
            error
                .to_string()
                .contains("grow the added token \"banana\" beyond 64"),
            "{error}"
        );
        // Normalized added tokens within the budget are matched in normalized text ("TOOL" is
        // not in the vocabulary: the crate gives it the next id, 13; the space is unknown).
        value["normalizer"] = serde_json::json!({"type": "Lowercase"});
        value["added_tokens"][1]["content"] = "TOOL".into();
        let hf = HfTokenizer::from_bytes(value.to_string().as_bytes(), "t.json").unwrap();
        assert_eq!(hf.ids("ab tool"), Ok(vec![5, 2, 13]));
    }

    #[test]
    fn a_file_larger_than_the_limit_is_refused_naming_it() {
        let bytes = vec![b' '; MAX_FILE_BYTES as usize + 1];
        let error = HfTokenizer::from_bytes(&bytes, "big.json").err().unwrap();
        assert_eq!(exit_code_of(&error), exit_code::USAGE);
        assert!(error.to_string().contains("big.json is not"), "{error}");
        assert!(error.to_string().contains("larger than 128 MiB"), "{error}");
    }

    mod property {
        use super::*;
        use crate::alloc_probe::property_config;
        use crate::dataset::tests::property::{mutate as mutate_bytes, mutation, Mutation};
        use proptest::prelude::*;
        use proptest::sample::Index;
        use proptest::test_runner::{TestCaseError, TestRunner};

        /// Parts of tokenizer.json files: the parts the check bounds, in hostile forms, and
        /// numbers and nesting that stress the crate's parser.
        fn snippet() -> impl Strategy<Value = String> {
            prop_oneof![
                Just(format!(r#"{{"type":"Sequence","normalizers":[{}]}}"#, doubling(40))),
                Just(r#"{"type":"Replace","pattern":{"Regex":""},"content":"xxxxxxxx"}"#.into()),
                Just(r#"{"type":"Replace","pattern":{"Regex":"(a+)+$"},"content":"b"}"#.into()),
                Just(r#"{"type":"Precompiled","precompiled_charsmap":"/////w=="}"#.into()),
                Just(r#"{"type":"Precompiled","precompiled_charsmap":"BAAAAAkJCQlhYgA="}"#.into()),
                Just(r#"{"type":"Prepend","prepend":"▁▁▁▁▁▁▁▁"}"#.into()),
                Just(r#"{"type":"ByteLevel","add_prefix_space":true,"trim_offsets":true,"use_regex":true}"#.into()),
                Just(r#"{"type":"Metaspace","replacement":"▁","prepend_scheme":"always","split":true}"#.into()),
                Just(r#"{"type":"FixedLength","length":0}"#.into()),
                Just(r#"{"type":"Split","pattern":{"Regex":"(?=a)*"},"behavior":"Isolated","invert":true}"#.into()),
                Just(r#"{"type":"BertNormalizer","clean_text":true,"handle_chinese_chars":true,"strip_accents":true,"lowercase":true}"#.into()),
                Just(r#"{"type":"Unigram","unk_id":99,"vocab":[["a",-1.0],["b",1e308]],"byte_fallback":true}"#.into()),
                Just(r###"{"type":"WordPiece","unk_token":"<unk>","continuing_subword_prefix":"##","max_input_chars_per_word":18446744073709551615,"vocab":{"<unk>":0}}"###.into()),
                Just(r#""id":4294967295,"#.into()),
                Just("18446744073709551616".into()),
                Just("-1".into()),
                Just("1e999".into()),
                Just("null".into()),
                Just("[".repeat(200)),
                Just("{\"a\":".repeat(200)),
                Just("\"\\ud800\"".into()),
                "\\PC{0,32}",
            ]
        }

        /// The seed with values of its JSON tree replaced by snippets (as JSON, or as a string
        /// when a snippet is not JSON): files the crate may load, with hostile parts; then the
        /// question parsers' byte mutations. At most a few KB, so each case is quick and small.
        fn mutate(values: &[(Index, String)], mutations: &[Mutation]) -> Vec<u8> {
            let mut tree: serde_json::Value = serde_json::from_str(SMALL).unwrap();
            for (i, snippet) in values {
                let part = serde_json::from_str(snippet)
                    .unwrap_or_else(|_| serde_json::Value::from(snippet.as_str()));
                let mut at = i.index(nodes(&tree));
                replace_node(&mut tree, &mut at, &part);
            }
            mutate_bytes(tree.to_string().as_bytes(), mutations)
        }

        /// Values in a JSON tree, itself included.
        fn nodes(value: &serde_json::Value) -> usize {
            1 + match value {
                serde_json::Value::Object(o) => o.values().map(nodes).sum(),
                serde_json::Value::Array(a) => a.iter().map(nodes).sum(),
                _ => 0,
            }
        }

        /// Replace the `at`-th value of the tree in preorder by `part`.
        fn replace_node(value: &mut serde_json::Value, at: &mut usize, part: &serde_json::Value) {
            if *at == 0 {
                *value = part.clone();
                *at = usize::MAX;
                return;
            }
            *at -= 1;
            let children: Vec<&mut serde_json::Value> = match value {
                serde_json::Value::Object(o) => o.values_mut().collect(),
                serde_json::Value::Array(a) => a.iter_mut().collect(),
                _ => Vec::new(),
            };
            for child in children {
                if *at == usize::MAX {
                    return;
                }
                replace_node(child, at, part);
            }
        }

        /// Load `bytes` and tokenize a few texts: no panic, no allocation above the limit, and
        /// either ids (or a counted failure, or a refusal for growth) or a usage error naming
        /// the file.
        fn check(bytes: &[u8]) -> std::result::Result<(), TestCaseError> {
            let texts = [
                "ab ab 1",
                "세종대왕은 1443년에 <|im_end|> 무엇을?",
                "a  a\u{fdfa}\t\n",
                "",
            ];
            let (outcome, largest) = largest_allocation(|| -> Result<_> {
                let hf = HfTokenizer::from_bytes(bytes, "dir/tokenizer.json")?;
                Ok(texts.map(|text| hf.ids(text)))
            });
            prop_assert!(
                largest <= PARSE_ALLOCATION_LIMIT,
                "an allocation of {largest} bytes"
            );
            if let Err(error) = outcome {
                prop_assert_eq!(exit_code_of(&error), exit_code::USAGE);
                prop_assert!(error.to_string().contains("dir/tokenizer.json"), "{error}");
            }
            Ok(())
        }

        /// Mutated tokenizer.json files. 1,000 cases take a few seconds (`make fuzz`: more).
        #[test]
        fn property_tokenizer_json_survives_mutations() {
            check(SMALL.as_bytes()).unwrap();
            let mut runner = TestRunner::new(property_config(1000));
            runner
                .run(
                    &(
                        proptest::collection::vec((any::<Index>(), snippet()), 1..4),
                        proptest::collection::vec(mutation(), 0..2),
                    ),
                    |(values, mutations)| check(&mutate(&values, &mutations)),
                )
                .unwrap();
        }
    }
}
