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
use std::path::Path;

/// Differing prompts shown in full.
const EXAMPLES: usize = 3;
/// Tokens shown before the first difference.
const BEFORE: usize = 2;
/// Tokens shown from the first difference on.
const FROM: usize = 4;
/// Characters of prompt text shown on each side of the first difference.
const SNIPPET_CHARS: usize = 24;

/// A Hugging Face tokenizer read from its `tokenizer.json`.
pub struct HfTokenizer {
    tokenizer: tokenizers::Tokenizer,
    path: String,
    sha256: String,
}

impl HfTokenizer {
    /// Read `tokenizer.json`; a file that is not one is a usage error naming it.
    pub fn load(path: &Path) -> Result<HfTokenizer> {
        let bytes = std::fs::read(path).map_err(|e| {
            usage(format!(
                "--hf-tokenizer {} cannot be read ({e}); give the original model's tokenizer.json",
                path.display()
            ))
        })?;
        let tokenizer = tokenizers::Tokenizer::from_bytes(&bytes).map_err(|e| {
            usage(format!(
                "--hf-tokenizer {} is not a Hugging Face tokenizer.json ({e}); give the original model's tokenizer.json",
                path.display()
            ))
        })?;
        Ok(HfTokenizer {
            tokenizer,
            path: path.display().to_string(),
            sha256: crate::dataset::hex_sha256(&bytes),
        })
    }

    /// Token ids of `text`, without special tokens; `None` when the tokenizer fails on it.
    fn ids(&self, text: &str) -> Option<Vec<i64>> {
        let encoding = self.tokenizer.encode(text, false).ok()?;
        Some(encoding.get_ids().iter().map(|&id| i64::from(id)).collect())
    }

    /// A token's text as the vocabulary stores it (`Ġthe`), as the GGUF side is shown.
    fn token_text(&self, id: i64) -> String {
        u32::try_from(id)
            .ok()
            .and_then(|id| self.tokenizer.id_to_token(id))
            .unwrap_or_default()
    }
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
        compare(&mut check, &vocabulary, &hf, &question.id, &text);
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
) {
    let gguf: Vec<i64> = vocabulary
        .tokenize_text(text)
        .into_iter()
        .map(i64::from)
        .collect();
    // A text the Hugging Face tokenizer cannot encode counts as different, with no tokens.
    let theirs = hf.ids(text).unwrap_or_default();
    check.prompts_checked += 1;
    check.gguf_tokens += gguf.len();
    check.hf_tokens += theirs.len();
    if gguf == theirs {
        return;
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
    crate::units::printable(&format!("{before}{after}"), crate::units::Lines::Escape).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

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
}
